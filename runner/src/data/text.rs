//! Decoding and normalising raw text files.
//!
//! The pipeline for a text corpus file is:
//!
//! 1. [`decode`] the raw bytes (UTF-8, Latin-1 or auto-detected), stripping a UTF-8 byte-order
//!    mark and refusing files that look binary (they contain a NUL byte);
//! 2. [`normalize`] the text (line endings, Unicode NFC, control characters, odd spaces);
//! 3. [`strip_gutenberg`] the Project Gutenberg licence header and footer, when present;
//! 4. cut the text into fixed-size [`passages`] of whitespace-separated words.
//!
//! Nothing here panics, whatever the input.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// The UTF-8 byte-order mark.
const UTF8_BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

/// The character encoding of a text file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8; invalid bytes are an error.
    Utf8,
    /// ISO-8859-1 (Latin-1): every byte is the character with that code point.
    Latin1,
    /// UTF-8 if the file is valid UTF-8, Latin-1 otherwise.
    Auto,
}

impl Encoding {
    /// The names accepted by [`Encoding::parse`], for error messages.
    pub const NAMES: &'static str = "\"utf-8\", \"latin-1\" or \"auto\"";

    /// Parses an encoding name: `utf-8`/`utf8`, `latin-1`/`latin1`/`iso-8859-1`, `auto`
    /// (case-insensitive, surrounding whitespace ignored).
    pub fn parse(s: &str) -> Option<Encoding> {
        match s.trim().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Some(Encoding::Utf8),
            "latin-1" | "latin1" | "iso-8859-1" | "iso8859-1" => Some(Encoding::Latin1),
            "auto" => Some(Encoding::Auto),
            _ => None,
        }
    }

    /// The canonical name (`"utf-8"`, `"latin-1"`, `"auto"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Latin1 => "latin-1",
            Encoding::Auto => "auto",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong in [`decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The bytes are not valid UTF-8 (only with [`Encoding::Utf8`]).
    InvalidUtf8,
    /// The file contains a NUL byte, so it is most likely binary (or UTF-16).
    Binary,
}

/// A decoding error with its position in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub kind: DecodeErrorKind,
    /// Offset of the offending byte from the start of the input (a BOM included).
    pub byte_offset: usize,
    /// 1-based line number (lines end with `\n`).
    pub line: usize,
    /// 1-based column, counted in bytes from the start of the line (after a BOM on line 1).
    pub column: usize,
    /// What it means and what to do about it.
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            DecodeErrorKind::InvalidUtf8 => "invalid UTF-8",
            DecodeErrorKind::Binary => "NUL byte",
        };
        write!(
            f,
            "{what} at line {}, column {} (byte {}): {}",
            self.line, self.column, self.byte_offset, self.message
        )
    }
}

impl std::error::Error for DecodeError {}

/// 1-based (line, column in bytes) of `offset` within `content`.
fn line_column(content: &[u8], offset: usize) -> (usize, usize) {
    let before = &content[..offset.min(content.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    (line, offset - line_start + 1)
}

/// Decodes the bytes of a text file.
///
/// A leading UTF-8 byte-order mark is stripped (whatever `enc` says). Returns the text and the
/// encoding actually used (`"utf-8"` or `"latin-1"`; with [`Encoding::Auto`], UTF-8 when the
/// bytes are valid UTF-8, Latin-1 otherwise).
///
/// Errors: a NUL byte anywhere ([`DecodeErrorKind::Binary`]), and with [`Encoding::Utf8`],
/// invalid UTF-8 ([`DecodeErrorKind::InvalidUtf8`]). Positions are reported as the byte
/// offset in `bytes` plus a 1-based line and byte column.
pub fn decode(bytes: &[u8], enc: Encoding) -> Result<(String, &'static str), DecodeError> {
    let bom = if bytes.starts_with(UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    let content = &bytes[bom..];

    if let Some(pos) = content.iter().position(|&b| b == 0) {
        let (line, column) = line_column(content, pos);
        return Err(DecodeError {
            kind: DecodeErrorKind::Binary,
            byte_offset: bom + pos,
            line,
            column,
            message: "the file looks binary, not text (text files contain no NUL bytes; \
                      if it is UTF-16, convert it to UTF-8 first)"
                .to_string(),
        });
    }

    match enc {
        Encoding::Latin1 => Ok((latin1(content), "latin-1")),
        Encoding::Utf8 => match std::str::from_utf8(content) {
            Ok(s) => Ok((s.to_string(), "utf-8")),
            Err(e) => {
                let pos = e.valid_up_to();
                let (line, column) = line_column(content, pos);
                let truncated = if e.error_len().is_none() {
                    " (a multi-byte sequence is cut off at the end of the file)"
                } else {
                    ""
                };
                Err(DecodeError {
                    kind: DecodeErrorKind::InvalidUtf8,
                    byte_offset: bom + pos,
                    line,
                    column,
                    message: format!(
                        "the file is not UTF-8{truncated}; if it is ISO-8859-1 / Latin-1 set \
                         encoding = \"latin-1\", or encoding = \"auto\" to detect it"
                    ),
                })
            }
        },
        Encoding::Auto => match std::str::from_utf8(content) {
            Ok(s) => Ok((s.to_string(), "utf-8")),
            Err(_) => Ok((latin1(content), "latin-1")),
        },
    }
}

/// ISO-8859-1: byte `b` is the character U+00`b`.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Normalises decoded text:
///
/// - CRLF and lone CR become LF;
/// - tabs become spaces; no-break spaces (U+00A0, U+2007, U+202F) become spaces;
/// - other control characters (Unicode category Cc, C1 controls included) are removed,
///   except `\n`;
/// - the result is put in Unicode NFC (e + U+0301 → é).
///
/// Everything else is kept as is.
pub fn normalize(s: &str) -> String {
    let mut cleaned = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                cleaned.push('\n');
            }
            '\n' => cleaned.push('\n'),
            '\t' | '\u{00A0}' | '\u{2007}' | '\u{202F}' => cleaned.push(' '),
            c if c.is_control() => {}
            c => cleaned.push(c),
        }
    }
    cleaned.nfc().collect()
}

/// Is `line` a Project Gutenberg marker line starting with `*** <word> OF` (e.g.
/// `*** START OF THE PROJECT GUTENBERG EBOOK EMMA ***`), case-insensitively?
fn is_marker(line: &str, word: &str) -> bool {
    let t = line.trim_start();
    if !t.starts_with("***") {
        return false;
    }
    let rest = t.trim_start_matches('*').trim_start();
    let Some(head) = rest.get(..word.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(word) {
        return false;
    }
    let after = &rest[word.len()..];
    let after_trim = after.trim_start();
    after.len() != after_trim.len()
        && after_trim
            .get(..2)
            .is_some_and(|of| of.eq_ignore_ascii_case("of"))
}

/// Returns the body of a Project Gutenberg text: the part between the `*** START OF ...` and
/// `*** END OF ...` marker lines (surrounding whitespace trimmed). With only a start marker,
/// everything after it; with only an end marker, everything before it; with neither, the
/// whole text unchanged (as for NLTK's Gutenberg selection, whose files have no markers).
pub fn strip_gutenberg(s: &str) -> &str {
    let mut start: Option<usize> = None;
    let mut end: Option<usize> = None;
    let mut offset = 0;
    for line in s.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        if start.is_none() && is_marker(line, "START") {
            start = Some(offset);
        } else if is_marker(line, "END") {
            end = Some(line_start);
            break;
        }
    }
    if start.is_none() && end.is_none() {
        return s;
    }
    let from = start.unwrap_or(0);
    let to = end.unwrap_or(s.len()).max(from);
    s.get(from..to).map_or(s, str::trim)
}

/// Splits `s` into whitespace-separated words and groups consecutive words into passages of
/// exactly `words` words, joined by single spaces. The last passage may be shorter; it is
/// dropped when it has fewer than `words / 2` words (exact half: with `words = 5`, a last
/// passage of 2 words is dropped and one of 3 kept). `words = 0` gives no passages.
pub fn passages(s: &str, words: usize) -> Vec<String> {
    if words == 0 {
        return Vec::new();
    }
    let all: Vec<&str> = s.split_whitespace().collect();
    all.chunks(words)
        .filter(|chunk| chunk.len() == words || chunk.len() * 2 >= words)
        .map(|chunk| chunk.join(" "))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_encoding_names() {
        assert_eq!(Encoding::parse("utf-8"), Some(Encoding::Utf8));
        assert_eq!(Encoding::parse("UTF8"), Some(Encoding::Utf8));
        assert_eq!(Encoding::parse("latin-1"), Some(Encoding::Latin1));
        assert_eq!(Encoding::parse("latin1"), Some(Encoding::Latin1));
        assert_eq!(Encoding::parse("ISO-8859-1"), Some(Encoding::Latin1));
        assert_eq!(Encoding::parse(" auto "), Some(Encoding::Auto));
        assert_eq!(Encoding::parse("utf-16"), None);
        assert_eq!(Encoding::parse(""), None);
        assert_eq!(Encoding::Latin1.to_string(), "latin-1");
    }

    #[test]
    fn decode_utf8_and_bom() {
        let (s, used) = decode("héllo\n".as_bytes(), Encoding::Utf8).unwrap();
        assert_eq!((s.as_str(), used), ("héllo\n", "utf-8"));
        let mut b = UTF8_BOM.to_vec();
        b.extend_from_slice(b"abc");
        assert_eq!(decode(&b, Encoding::Utf8).unwrap().0, "abc");
        assert_eq!(decode(&b, Encoding::Latin1).unwrap().0, "abc");
        assert_eq!(
            decode(&b, Encoding::Auto).unwrap(),
            ("abc".to_string(), "utf-8")
        );
        assert_eq!(decode(b"", Encoding::Utf8).unwrap().0, "");
        assert_eq!(decode(UTF8_BOM, Encoding::Auto).unwrap().0, "");
    }

    #[test]
    fn invalid_utf8_position() {
        // line 1: "ab\n" (bytes 0..3), line 2: "cd\n" (3..6), line 3: "xyz" then 0xE9 at byte 9.
        let bytes = b"ab\ncd\nxyz\xE9 caf\n";
        let err = decode(bytes, Encoding::Utf8).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::InvalidUtf8);
        assert_eq!((err.line, err.column, err.byte_offset), (3, 4, 9));
        let msg = err.to_string();
        assert!(
            msg.starts_with("invalid UTF-8 at line 3, column 4 (byte 9): the file is not UTF-8"),
            "{msg}"
        );
        assert!(msg.contains("encoding = \"latin-1\""), "{msg}");
        assert!(msg.contains("encoding = \"auto\""), "{msg}");

        // First byte of the file.
        let err = decode(b"\xFFabc", Encoding::Utf8).unwrap_err();
        assert_eq!((err.line, err.column, err.byte_offset), (1, 1, 0));

        // After a BOM: the offset counts the BOM, the column does not.
        let err = decode(b"\xEF\xBB\xBFab\x80", Encoding::Utf8).unwrap_err();
        assert_eq!((err.line, err.column, err.byte_offset), (1, 3, 5));

        // A multi-byte sequence cut off at the end; valid multi-byte chars before it count
        // as bytes in the column.
        let mut b = "é\néx".as_bytes().to_vec();
        b.push(0xC3);
        let err = decode(&b, Encoding::Utf8).unwrap_err();
        assert_eq!((err.line, err.column, err.byte_offset), (2, 4, 6));
        assert!(err.message.contains("cut off"), "{}", err.message);
    }

    #[test]
    fn latin1_decode() {
        let (s, used) = decode(b"caf\xE9 \xA3 5 \xFF\xC0", Encoding::Latin1).unwrap();
        assert_eq!(used, "latin-1");
        assert_eq!(s, "café £ 5 ÿÀ");
        // Valid UTF-8 bytes are still read byte by byte when Latin-1 is asked for.
        let (s, _) = decode("é".as_bytes(), Encoding::Latin1).unwrap();
        assert_eq!(s, "\u{C3}\u{A9}");
    }

    #[test]
    fn auto_picks_each() {
        assert_eq!(
            decode("café".as_bytes(), Encoding::Auto).unwrap(),
            ("café".to_string(), "utf-8")
        );
        assert_eq!(
            decode(b"caf\xE9", Encoding::Auto).unwrap(),
            ("café".to_string(), "latin-1")
        );
        assert_eq!(
            decode(b"plain ascii", Encoding::Auto).unwrap(),
            ("plain ascii".to_string(), "utf-8")
        );
    }

    #[test]
    fn nul_is_rejected() {
        for enc in [Encoding::Utf8, Encoding::Latin1, Encoding::Auto] {
            let err = decode(b"line one\nab\x00cd", enc).unwrap_err();
            assert_eq!(err.kind, DecodeErrorKind::Binary);
            assert_eq!((err.line, err.column, err.byte_offset), (2, 3, 11));
            let msg = err.to_string();
            assert!(
                msg.starts_with("NUL byte at line 2, column 3 (byte 11)"),
                "{msg}"
            );
            assert!(msg.contains("binary"), "{msg}");
        }
        // UTF-16 with a BOM: NUL at byte 3.
        let err = decode(b"\xFF\xFEa\x00", Encoding::Auto).unwrap_err();
        assert_eq!(err.byte_offset, 3);
    }

    #[test]
    fn normalize_line_endings() {
        assert_eq!(normalize("a\r\nb\r\n"), "a\nb\n");
        assert_eq!(normalize("a\rb\rc"), "a\nb\nc");
        assert_eq!(normalize("a\r\r\nb"), "a\n\nb");
        assert_eq!(normalize("\r"), "\n");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn normalize_nfc() {
        let decomposed = "e\u{0301}t\u{0065}\u{0301}";
        assert_eq!(normalize(decomposed), "été");
        assert_eq!(normalize("A\u{030A}"), "\u{00C5}");
        // Already-composed text is unchanged.
        assert_eq!(normalize("中文 🙂 naïve"), "中文 🙂 naïve");
    }

    #[test]
    fn normalize_controls_and_spaces() {
        assert_eq!(normalize("a\tb"), "a b");
        assert_eq!(normalize("a\u{00A0}b\u{202F}c"), "a b c");
        assert_eq!(
            normalize("a\u{0007}b\u{001B}c\u{007F}d\u{0085}e\u{000C}f"),
            "abcdef"
        );
        assert_eq!(normalize("keep\nnewlines\n"), "keep\nnewlines\n");
        // A control character between e and the combining accent goes, then NFC composes.
        assert_eq!(normalize("e\u{0001}\u{0301}"), "é");
        // Format characters (not Cc) are kept.
        assert_eq!(normalize("a\u{200D}b"), "a\u{200D}b");
    }

    #[test]
    fn gutenberg_markers() {
        let text = "The Project Gutenberg EBook of Emma\r\nlicence...\n\
                    *** START OF THIS PROJECT GUTENBERG EBOOK EMMA ***\n\n\
                    EMMA\n\nChapter 1\n\n\
                    *** END OF THIS PROJECT GUTENBERG EBOOK EMMA ***\nmore licence\n";
        assert_eq!(strip_gutenberg(text), "EMMA\n\nChapter 1");

        let lower = "head\n***start of the project gutenberg ebook x***\nbody\n";
        assert_eq!(strip_gutenberg(lower), "body");
        let spaced = "head\n*** Start of the Project Gutenberg EBook X ***\nbody\n";
        assert_eq!(strip_gutenberg(spaced), "body");
        let only_end = "body\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\ntail";
        assert_eq!(strip_gutenberg(only_end), "body");

        // NLTK-style file: no markers, unchanged.
        let nltk = "[Emma by Jane Austen 1816]\n\nVOLUME I\n";
        assert_eq!(strip_gutenberg(nltk), nltk);
        // Stars in the text that are not markers.
        let stars = "***\n*** STARTLING OF news\nbody";
        assert_eq!(strip_gutenberg(stars), stars);
        assert_eq!(strip_gutenberg(""), "");
        assert_eq!(strip_gutenberg("*** START OF"), "");
        assert_eq!(strip_gutenberg("*** START OF é"), "");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state: u64 = 987654321;
        for round in 0..500 {
            let len = round % 64;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Mostly text-like bytes, some high bytes, rare NULs.
                let b = (state % 256) as u8;
                bytes.push(if b < 8 && round % 3 != 0 { b'\n' } else { b });
            }
            for enc in [Encoding::Utf8, Encoding::Latin1, Encoding::Auto] {
                match decode(&bytes, enc) {
                    Ok((s, _)) => {
                        let n = normalize(&s);
                        assert!(!n.contains('\r'));
                        let body = strip_gutenberg(&n);
                        let _ = passages(body, 1 + round % 5);
                    }
                    Err(e) => {
                        assert!(e.byte_offset < bytes.len());
                        assert!(e.line >= 1 && e.column >= 1);
                    }
                }
            }
        }
    }

    #[test]
    fn passages_grouping() {
        assert!(passages("", 3).is_empty());
        assert!(passages("   \n\t ", 3).is_empty());
        assert!(passages("a b c", 0).is_empty());
        assert_eq!(passages("a  b\nc", 1), vec!["a", "b", "c"]);
        assert_eq!(passages("a b c d e f", 3), vec!["a b c", "d e f"]);
        // Remainder of 2 with words = 4: 2 >= 4/2, kept.
        assert_eq!(passages("a b c d e f", 4), vec!["a b c d", "e f"]);
        // Remainder of 1 with words = 4: dropped.
        assert_eq!(passages("a b c d e", 4), vec!["a b c d"]);
        // Remainder of 2 with words = 5: 2 < 2.5, dropped; 3 kept.
        assert_eq!(passages("1 2 3 4 5 6 7", 5), vec!["1 2 3 4 5"]);
        assert_eq!(passages("1 2 3 4 5 6 7 8", 5), vec!["1 2 3 4 5", "6 7 8"]);
        // A text shorter than half a passage gives nothing; at least half gives one.
        assert!(passages("a", 4).is_empty());
        assert_eq!(passages("a b", 4), vec!["a b"]);
        // Newlines and runs of whitespace become single spaces.
        assert_eq!(passages("x\n\n  y\tz", 3), vec!["x y z"]);
    }
}
