//! A byte-level BPE tokenizer trained from scratch (in the style of GPT-2's byte-level BPE).
//!
//! Ids:
//!
//! - `0..5` are the special tokens [`PAD`], [`UNK`], [`CLS`], [`SEP`], [`MASK`] (they match
//!   the plugin SDK); they are never produced by [`Bpe::encode`] and are skipped by
//!   [`Bpe::decode`];
//! - `5..261` are the 256 single bytes (`id = 5 + byte`), so any text can be encoded and
//!   there is no unknown token in practice;
//! - merge `k` (0-based, in the order learned) creates id `261 + k`.
//!
//! Text is first cut into words by [`pre_tokenize`]; merges never cross word boundaries.
//! Training ([`Bpe::train`]) repeatedly merges the most frequent adjacent pair of tokens
//! (ties broken by the smallest `(a, b)` ids), with incremental pair counts so that only the
//! words containing the merged pair are revisited. Encoding applies the merges by rank,
//! lowest first (standard BPE).
//!
//! The artifact is `tokenizer.json`:
//! `{"kind":"byte-bpe","version":1,"vocab_size":N,"merges":[[a,b],...]}`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};

/// Padding.
pub const PAD: u32 = 0;
/// Unknown token (unused by the byte-level encoder, reserved for the SDK).
pub const UNK: u32 = 1;
/// Start-of-sequence / classification token.
pub const CLS: u32 = 2;
/// Separator.
pub const SEP: u32 = 3;
/// Mask token for masked-language-model objectives.
pub const MASK: u32 = 4;
/// Number of special tokens; the byte tokens start here.
pub const SPECIAL: u32 = 5;
/// First id after the 256 byte tokens: the id of merge 0.
pub const FIRST_MERGE: u32 = SPECIAL + 256;
/// Smallest accepted `vocab_size` for training: specials, bytes and one merge.
pub const MIN_VOCAB_SIZE: usize = FIRST_MERGE as usize + 1;

/// Largest vocabulary: ids stay below 2^31 (the plugin SDK uses the top bit as a flag).
pub const MAX_VOCAB_SIZE: usize = 1 << 31;

/// Limit on the bytes of all tokens together (a merge list where merge k joins merge k-1
/// with itself doubles the token length each time; refuse such files instead of running out
/// of memory). Real vocabularies hold well under 1 MiB.
const MAX_TOTAL_TOKEN_BYTES: usize = 256 << 20;

/// The artifact `kind`.
const KIND: &str = "byte-bpe";
/// The artifact `version`.
const VERSION: u32 = 1;

/// Names of the special tokens, indexed by id.
const SPECIAL_NAMES: [&str; SPECIAL as usize] = ["<pad>", "<unk>", "<cls>", "<sep>", "<mask>"];

/// The name of a special token (`"<pad>"`, `"<unk>"`, `"<cls>"`, `"<sep>"`, `"<mask>"`), or
/// `None` for any other id.
pub fn special_name(id: u32) -> Option<&'static str> {
    SPECIAL_NAMES.get(id as usize).copied()
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenisation
// ---------------------------------------------------------------------------------------------

/// Character classes for pre-tokenisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Unicode alphanumeric (letters and digits).
    Alnum,
    /// Whitespace.
    Space,
    /// Anything else (punctuation, symbols, combining marks, ...).
    Other,
}

fn class(c: char) -> Class {
    if c.is_alphanumeric() {
        Class::Alnum
    } else if c.is_whitespace() {
        Class::Space
    } else {
        Class::Other
    }
}

/// Cuts `text` into words; concatenating them gives back `text` exactly. A word is one of:
///
/// 1. an optional single leading space (U+0020) followed by a run of alphanumeric characters
///    (`" hello"`, `"42"`);
/// 2. an optional single leading space followed by a run of other non-whitespace characters,
///    i.e. punctuation and symbols (`" --"`, `"."`);
/// 3. a run of whitespace. When such a run is followed by a non-whitespace character and
///    ends with a space, that last space is left to lead the next word, as in GPT-2
///    (`"a   b"` → `"a"`, `"  "`, `" b"`); otherwise (it ends with a newline or tab, or the
///    text ends) the whole run is one word (`"a\n\nb"` → `"a"`, `"\n\n"`, `"b"`).
pub fn pre_tokenize(text: &str) -> Words<'_> {
    Words { text, pos: 0 }
}

/// The iterator returned by [`pre_tokenize`].
#[derive(Debug, Clone)]
pub struct Words<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.text.get(self.pos..)?;
        let first = rest.chars().next()?;
        let len = match class(first) {
            Class::Space => {
                // The whitespace run.
                let run_end = rest
                    .char_indices()
                    .find(|&(_, c)| !c.is_whitespace())
                    .map_or(rest.len(), |(i, _)| i);
                if run_end == rest.len() {
                    run_end
                } else if rest.as_bytes()[run_end - 1] == b' ' {
                    if run_end == 1 {
                        // A single space: it leads the following word.
                        1 + run_len(&rest[1..])
                    } else {
                        // Leave the last space for the following word.
                        run_end - 1
                    }
                } else {
                    run_end
                }
            }
            _ => run_len(rest),
        };
        // `len >= 1` always, so the iterator advances.
        let len = len.max(first.len_utf8());
        self.pos += len;
        rest.get(..len)
    }
}

/// Byte length of the run of same-class (alphanumeric or other) characters at the start of
/// `s`, which starts with a non-whitespace character.
fn run_len(s: &str) -> usize {
    let Some(first) = s.chars().next() else {
        return 0;
    };
    let cls = class(first);
    s.char_indices()
        .find(|&(_, c)| class(c) != cls)
        .map_or(s.len(), |(i, _)| i)
}

// ---------------------------------------------------------------------------------------------
// The tokenizer
// ---------------------------------------------------------------------------------------------

/// The on-disk form of [`Bpe`] (`tokenizer.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BpeFile {
    kind: String,
    version: u32,
    vocab_size: usize,
    merges: Vec<(u32, u32)>,
}

/// A trained byte-level BPE tokenizer.
///
/// Serialises (serde) as the `tokenizer.json` artifact; deserialising validates it like
/// [`Bpe::from_json`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "BpeFile", into = "BpeFile")]
pub struct Bpe {
    /// Merge `k` joins the pair `merges[k]` into id `261 + k`.
    merges: Vec<(u32, u32)>,
    /// Pair → merge rank (derived from `merges`).
    ranks: HashMap<(u32, u32), u32>,
    /// The bytes of every id (empty for the specials; derived from `merges`).
    bytes: Vec<Vec<u8>>,
}

impl From<Bpe> for BpeFile {
    fn from(b: Bpe) -> BpeFile {
        BpeFile {
            kind: KIND.to_string(),
            version: VERSION,
            vocab_size: b.vocab_size(),
            merges: b.merges,
        }
    }
}

impl TryFrom<BpeFile> for Bpe {
    type Error = String;

    fn try_from(f: BpeFile) -> Result<Bpe, String> {
        if f.kind != KIND {
            return Err(format!(
                "tokenizer: kind is \"{}\", expected \"{KIND}\" (this is not a byte-level BPE \
                 tokenizer written by this program)",
                f.kind
            ));
        }
        if f.version != VERSION {
            return Err(format!(
                "tokenizer: version {} is not supported (this program reads version {VERSION})",
                f.version
            ));
        }
        let expected = FIRST_MERGE as usize + f.merges.len();
        if f.vocab_size != expected {
            return Err(format!(
                "tokenizer: vocab_size is {} but {} merges give {expected} tokens \
                 ({SPECIAL} specials + 256 bytes + merges); the file is inconsistent",
                f.vocab_size,
                f.merges.len()
            ));
        }
        Bpe::from_merges(f.merges)
    }
}

impl Bpe {
    /// Builds a tokenizer from its merge list, checking that merge `k` only uses byte ids and
    /// ids created by earlier merges (`5 <= id < 261 + k`), and that no pair repeats.
    pub fn from_merges(merges: Vec<(u32, u32)>) -> Result<Bpe, String> {
        if merges.len() > MAX_VOCAB_SIZE - FIRST_MERGE as usize {
            return Err(format!(
                "tokenizer: too many merges ({}); the vocabulary may hold at most \
                 {MAX_VOCAB_SIZE} tokens",
                merges.len()
            ));
        }
        let mut ranks = HashMap::with_capacity(merges.len());
        let mut total_bytes = 0usize;
        let mut bytes: Vec<Vec<u8>> = Vec::with_capacity(FIRST_MERGE as usize + merges.len());
        bytes.extend((0..SPECIAL).map(|_| Vec::new()));
        bytes.extend((0..=255u8).map(|b| vec![b]));
        for (k, &(a, b)) in merges.iter().enumerate() {
            let new_id = FIRST_MERGE as usize + k;
            for id in [a, b] {
                if id < SPECIAL {
                    return Err(format!(
                        "tokenizer: merge {k} ([{a}, {b}]) uses the special token {id} ({}); \
                         merges may only join byte tokens (5..261) and earlier merges",
                        special_name(id).unwrap_or("?")
                    ));
                }
                if id as usize >= new_id {
                    return Err(format!(
                        "tokenizer: merge {k} ([{a}, {b}]) refers to id {id}, which is not \
                         defined before it (merge {k} creates id {new_id}, so it may only use \
                         ids 5..{new_id})"
                    ));
                }
            }
            if let Some(prev) = ranks.insert((a, b), k as u32) {
                return Err(format!(
                    "tokenizer: merge {k} ([{a}, {b}]) repeats merge {prev}; each pair may be \
                     merged only once"
                ));
            }
            let len = bytes[a as usize].len() + bytes[b as usize].len();
            total_bytes += len;
            if total_bytes > MAX_TOTAL_TOKEN_BYTES {
                return Err(format!(
                    "tokenizer: the tokens up to merge {k} ([{a}, {b}]) hold more than {} MiB \
                     of bytes in all; the merge list is corrupt or absurd",
                    MAX_TOTAL_TOKEN_BYTES >> 20
                ));
            }
            let mut joined = Vec::with_capacity(len);
            joined.extend_from_slice(&bytes[a as usize]);
            joined.extend_from_slice(&bytes[b as usize]);
            bytes.push(joined);
        }
        Ok(Bpe {
            merges,
            ranks,
            bytes,
        })
    }

    /// A tokenizer without merges: one token per byte.
    pub fn bytes_only() -> Bpe {
        Bpe {
            merges: Vec::new(),
            ranks: HashMap::new(),
            bytes: (0..SPECIAL)
                .map(|_| Vec::new())
                .chain((0..=255u8).map(|b| vec![b]))
                .collect(),
        }
    }

    /// Trains a tokenizer on `texts`.
    ///
    /// Words (see [`pre_tokenize`]) are counted, then the most frequent adjacent pair of
    /// tokens is merged repeatedly (ties: smallest `(a, b)`), until the vocabulary has
    /// `vocab_size` tokens or no pair occurs at least `min_frequency` times; in the latter
    /// case the vocabulary is smaller (see [`Bpe::vocab_size`]). Deterministic: the same texts
    /// give the same merges.
    ///
    /// Errors: `vocab_size` below [`MIN_VOCAB_SIZE`] (262) or above [`MAX_VOCAB_SIZE`], or no
    /// text at all.
    pub fn train<'a>(
        texts: impl Iterator<Item = &'a str>,
        vocab_size: usize,
        min_frequency: u64,
    ) -> Result<Bpe, String> {
        if vocab_size < MIN_VOCAB_SIZE {
            return Err(format!(
                "vocab_size = {vocab_size} is too small: it must be at least {MIN_VOCAB_SIZE} \
                 ({SPECIAL} special tokens + 256 byte tokens + at least 1 merge)"
            ));
        }
        if vocab_size > MAX_VOCAB_SIZE {
            return Err(format!(
                "vocab_size = {vocab_size} is too large: the maximum is {MAX_VOCAB_SIZE} \
                 (token ids must stay below 2^31; the top bit flags MLM targets)"
            ));
        }
        let min_frequency = min_frequency.max(1);

        // Count the words.
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut any_text = false;
        for text in texts {
            for w in pre_tokenize(text) {
                any_text = true;
                if let Some(c) = counts.get_mut(w) {
                    *c += 1;
                } else {
                    counts.insert(w.to_string(), 1);
                }
            }
        }
        if !any_text {
            return Err("cannot train the tokenizer: the training texts are empty".to_string());
        }
        let mut sorted: Vec<(String, u64)> = counts.into_iter().collect();
        sorted.sort_unstable();
        let freqs: Vec<i64> = sorted
            .iter()
            .map(|(_, c)| i64::try_from(*c).unwrap_or(i64::MAX))
            .collect();
        let mut words: Vec<Vec<u32>> = sorted
            .iter()
            .map(|(w, _)| w.bytes().map(|b| SPECIAL + u32::from(b)).collect())
            .collect();
        drop(sorted);

        // Initial pair counts and pair → words index (each word index listed once per pair,
        // in increasing order).
        let mut pair_counts: HashMap<(u32, u32), i64> = HashMap::new();
        let mut where_: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
        for (wi, (w, &f)) in words.iter().zip(&freqs).enumerate() {
            for p in w.windows(2) {
                let pair = (p[0], p[1]);
                *pair_counts.entry(pair).or_insert(0) += f;
                let list = where_.entry(pair).or_default();
                if list.last() != Some(&(wi as u32)) {
                    list.push(wi as u32);
                }
            }
        }

        // Max-heap on (count, smallest pair); entries may be stale (counts only go down for
        // existing pairs, so a stale entry overestimates and is re-pushed when popped).
        let mut heap: BinaryHeap<(i64, Reverse<(u32, u32)>)> =
            pair_counts.iter().map(|(&p, &c)| (c, Reverse(p))).collect();

        let max_merges = vocab_size - FIRST_MERGE as usize;
        let mut merges: Vec<(u32, u32)> = Vec::new();
        let mut delta: HashMap<(u32, u32), i64> = HashMap::new();
        let mut old_pairs: Vec<(u32, u32)> = Vec::new();
        while merges.len() < max_merges {
            let Some((count, Reverse(pair))) = heap.pop() else {
                break;
            };
            let actual = pair_counts.get(&pair).copied().unwrap_or(0);
            if actual != count {
                if actual > 0 {
                    heap.push((actual, Reverse(pair)));
                }
                continue;
            }
            if actual < 1 || (actual as u64) < min_frequency {
                break;
            }
            let new_id = FIRST_MERGE + merges.len() as u32;
            merges.push(pair);
            pair_counts.remove(&pair);
            let affected = where_.remove(&pair).unwrap_or_default();

            delta.clear();
            for &wi in &affected {
                let w = &mut words[wi as usize];
                let f = freqs[wi as usize];
                if !w.windows(2).any(|p| (p[0], p[1]) == pair) {
                    continue;
                }
                old_pairs.clear();
                old_pairs.extend(w.windows(2).map(|p| (p[0], p[1])));
                merge_in_place(w, pair, new_id);
                for &p in &old_pairs {
                    if p != pair {
                        *delta.entry(p).or_insert(0) -= f;
                    }
                }
                for p in w.windows(2) {
                    let p = (p[0], p[1]);
                    *delta.entry(p).or_insert(0) += f;
                    if p.0 == new_id || p.1 == new_id {
                        let list = where_.entry(p).or_default();
                        if list.last() != Some(&wi) {
                            list.push(wi);
                        }
                    }
                }
            }
            for (&p, &d) in &delta {
                if d == 0 {
                    continue;
                }
                let c = pair_counts.entry(p).or_insert(0);
                *c += d;
                let c = *c;
                if c <= 0 {
                    pair_counts.remove(&p);
                    if p.0 == new_id || p.1 == new_id {
                        where_.remove(&p);
                    }
                } else if d > 0 {
                    heap.push((c, Reverse(p)));
                }
            }
        }
        Bpe::from_merges(merges)
    }

    /// The number of tokens: 5 specials + 256 bytes + the merges.
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// The learned merges, in order: merge `k` creates id `261 + k`.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    /// The bytes of token `id` (empty for the special tokens and for unknown ids).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.bytes.get(id as usize).cloned().unwrap_or_default()
    }

    /// Encodes `text` into token ids (no special tokens added). Builds a cache of the words
    /// of this call; to encode many texts, [`Bpe::encoder`] keeps one across calls.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut cache: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        for w in pre_tokenize(text) {
            if let Some(ids) = cache.get(w) {
                out.extend_from_slice(ids);
            } else {
                let ids = self.encode_word(w.as_bytes());
                out.extend_from_slice(&ids);
                cache.insert(w, ids);
            }
        }
        out
    }

    /// An encoder with a word cache kept across calls, for encoding many texts.
    pub fn encoder(&self) -> Encoder<'_> {
        Encoder {
            bpe: self,
            cache: HashMap::new(),
        }
    }

    /// Decodes ids back into text: the bytes of each id concatenated, special tokens and
    /// unknown ids skipped, invalid UTF-8 replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if let Some(b) = self.bytes.get(id as usize) {
                out.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The `tokenizer.json` artifact: `{"kind":"byte-bpe","version":1,"vocab_size":N,
    /// "merges":[[a,b],...]}`.
    pub fn to_json(&self) -> String {
        let file = BpeFile {
            kind: KIND.to_string(),
            version: VERSION,
            vocab_size: self.vocab_size(),
            merges: self.merges.clone(),
        };
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// Reads a `tokenizer.json` artifact, validating it (kind, version, vocab_size, every
    /// merge referring to earlier ids).
    pub fn from_json(s: &str) -> Result<Bpe, String> {
        let file: BpeFile = serde_json::from_str(s)
            .map_err(|e| format!("tokenizer: cannot read tokenizer.json: {e}"))?;
        Bpe::try_from(file)
    }

    /// Applies the merges to one word, lowest rank first (standard BPE, left to right among
    /// equal ranks), in O(n log n) with a linked list of symbols and a heap of candidate
    /// pairs.
    fn encode_word(&self, word: &[u8]) -> Vec<u32> {
        let mut ids: Vec<u32> = word.iter().map(|&b| SPECIAL + u32::from(b)).collect();
        if ids.len() < 2 || self.ranks.is_empty() {
            return ids;
        }
        let n = ids.len();
        // prev/next links; usize::MAX is "none"; a merged-away symbol has ids[i] == u32::MAX.
        const NONE: usize = usize::MAX;
        let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.checked_sub(1).unwrap_or(NONE)).collect();
        let mut heap: BinaryHeap<Reverse<(u32, usize)>> = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some(&r) = self.ranks.get(&(ids[i], ids[i + 1])) {
                heap.push(Reverse((r, i)));
            }
        }
        while let Some(Reverse((rank, i))) = heap.pop() {
            if ids[i] == u32::MAX {
                continue;
            }
            let j = next[i];
            if j == NONE {
                continue;
            }
            // Still the same pair?
            if self.ranks.get(&(ids[i], ids[j])) != Some(&rank) {
                continue;
            }
            ids[i] = FIRST_MERGE + rank;
            ids[j] = u32::MAX;
            let k = next[j];
            next[i] = k;
            if k != NONE {
                prev[k] = i;
                if let Some(&r) = self.ranks.get(&(ids[i], ids[k])) {
                    heap.push(Reverse((r, i)));
                }
            }
            let p = prev[i];
            if p != NONE {
                if let Some(&r) = self.ranks.get(&(ids[p], ids[i])) {
                    heap.push(Reverse((r, p)));
                }
            }
        }
        ids.retain(|&id| id != u32::MAX);
        ids
    }
}

/// Replaces every occurrence of `pair` in `w`, left to right without overlaps, by `new_id`.
fn merge_in_place(w: &mut Vec<u32>, pair: (u32, u32), new_id: u32) {
    let mut read = 0;
    let mut write = 0;
    while read < w.len() {
        if read + 1 < w.len() && w[read] == pair.0 && w[read + 1] == pair.1 {
            w[write] = new_id;
            read += 2;
        } else {
            w[write] = w[read];
            read += 1;
        }
        write += 1;
    }
    w.truncate(write);
}

/// Trains a tokenizer; see [`Bpe::train`].
pub fn train<'a>(
    texts: impl Iterator<Item = &'a str>,
    vocab_size: usize,
    min_frequency: u64,
) -> Result<Bpe, String> {
    Bpe::train(texts, vocab_size, min_frequency)
}

/// An encoder that caches the ids of every word it has seen (from [`Bpe::encoder`]). The
/// cache is cleared when it grows past about a million words.
#[derive(Debug)]
pub struct Encoder<'a> {
    bpe: &'a Bpe,
    cache: HashMap<String, Vec<u32>>,
}

impl Encoder<'_> {
    const MAX_CACHE: usize = 1 << 20;

    /// Encodes `text`; same result as [`Bpe::encode`].
    pub fn encode(&mut self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, &mut out);
        out
    }

    /// Encodes `text`, appending the ids to `out`.
    pub fn encode_into(&mut self, text: &str, out: &mut Vec<u32>) {
        for w in pre_tokenize(text) {
            if let Some(ids) = self.cache.get(w) {
                out.extend_from_slice(ids);
            } else {
                let ids = self.bpe.encode_word(w.as_bytes());
                out.extend_from_slice(&ids);
                if self.cache.len() >= Self::MAX_CACHE {
                    self.cache.clear();
                }
                self.cache.insert(w.to_string(), ids);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<&str> {
        pre_tokenize(s).collect()
    }

    fn id(b: u8) -> u32 {
        SPECIAL + u32::from(b)
    }

    #[test]
    fn constants_match_the_sdk() {
        assert_eq!((PAD, UNK, CLS, SEP, MASK, SPECIAL), (0, 1, 2, 3, 4, 5));
        assert_eq!(FIRST_MERGE, 261);
        assert_eq!(MIN_VOCAB_SIZE, 262);
        assert_eq!(special_name(MASK), Some("<mask>"));
        assert_eq!(special_name(SPECIAL), None);
    }

    #[test]
    fn pre_tokenize_words() {
        assert_eq!(words("Hello, world!"), vec!["Hello", ",", " world", "!"]);
        assert_eq!(words("a   b"), vec!["a", "  ", " b"]);
        assert_eq!(words("a\n\nb"), vec!["a", "\n\n", "b"]);
        assert_eq!(words("a \n b"), vec!["a", " \n", " b"]);
        assert_eq!(words("end.  "), vec!["end", ".", "  "]);
        assert_eq!(words(" x"), vec![" x"]);
        assert_eq!(words(" "), vec![" "]);
        assert_eq!(words("it's 42nd --"), vec!["it", "'", "s", " 42nd", " --"]);
        assert_eq!(words("café 中文🙂"), vec!["café", " 中文", "🙂"]);
        assert_eq!(words("\tx"), vec!["\t", "x"]);
        assert!(words("").is_empty());
        for s in [
            "a  b\n\n c\t\td ",
            "  lead",
            "x \u{3000}y",
            "ÿ é\u{301}",
            "!!  ??\r\n",
        ] {
            assert_eq!(words(s).concat(), s, "{s:?}");
        }
    }

    fn sample_bpe() -> Bpe {
        let corpus = "The quick brown fox jumps over the lazy dog. \
                      Le cœur a ses raisons — 中文 文本 🙂🙂 naïve café.\n\n\tThe end.   ";
        Bpe::train(std::iter::repeat_n(corpus, 3), 400, 2).unwrap()
    }

    #[test]
    fn round_trip() {
        let bpe = sample_bpe();
        assert!(bpe.vocab_size() > MIN_VOCAB_SIZE);
        let cases = [
            "",
            "plain ASCII text, with punctuation!?",
            "The quick brown fox",
            "é à ü ñ — café naïve",
            "中文 文本 日本語",
            "emoji 🙂👍🏽 👨‍👩‍👧",
            "   many    spaces   ",
            "line\nbreaks\n\n\nand\r\nCRLF\ttabs\t\t",
            "\n",
            " ",
            "\u{0}\u{7f}\u{ffff}",
        ];
        for s in cases {
            let ids = bpe.encode(s);
            assert_eq!(bpe.decode(&ids), s, "{s:?}");
            assert!(ids
                .iter()
                .all(|&i| i >= SPECIAL && (i as usize) < bpe.vocab_size()));
            let mut enc = bpe.encoder();
            assert_eq!(enc.encode(s), ids);
            assert_eq!(enc.encode(s), ids);
        }
        assert!(bpe.encode("").is_empty());
        // The bytes-only tokenizer round-trips too, one token per byte.
        let b = Bpe::bytes_only();
        assert_eq!(b.encode("é"), vec![id(0xC3), id(0xA9)]);
        assert_eq!(b.decode(&b.encode("中文 🙂")), "中文 🙂");
    }

    #[test]
    fn decode_skips_specials_and_unknown_ids() {
        let bpe = sample_bpe();
        let mut ids = vec![CLS];
        ids.extend(bpe.encode("hi there"));
        ids.extend([SEP, PAD, MASK, UNK, u32::MAX, 1_000_000]);
        assert_eq!(bpe.decode(&ids), "hi there");
        // A lone continuation byte decodes lossily.
        assert_eq!(bpe.decode(&[id(0xA9)]), "\u{FFFD}");
        assert!(bpe.token_bytes(PAD).is_empty());
        assert_eq!(bpe.token_bytes(id(b'a')), b"a".to_vec());
        assert!(bpe.token_bytes(u32::MAX).is_empty());
    }

    #[test]
    fn hand_computed_merges() {
        // Words: "low" x1, " low" x2, " lower" x1, " newest" x2.
        // Pair counts: (l,o)=4 (o,w)=4 ( ,l)=3 (w,e)=3 ( ,n)=2 (n,e)=2 (e,w)=2 (e,s)=2
        // (s,t)=2 (e,r)=1.
        let corpus = "low low low lower newest newest";
        let bpe = Bpe::train(std::iter::once(corpus), 1000, 2).unwrap();
        let (sp, l, o, w, e, n, s, t) = (
            id(b' '),
            id(b'l'),
            id(b'o'),
            id(b'w'),
            id(b'e'),
            id(b'n'),
            id(b's'),
            id(b't'),
        );
        let expected = vec![
            // 261: (l,o)=4 ties with (o,w)=4; (l,o) has the smaller ids.
            (l, o),
            // 262 "low": (lo,w)=4.
            (261, w),
            // 263 " low": ( ,low)=3 (" low" x2 + " lower" x1); (w,e) is down to 2 since
            // the w of " lower" is now inside "low", so ( ,low) wins outright.
            (sp, 262),
            // Now everything left in " newest" is 2: ( ,n) has the smallest ids → 264.
            (sp, n),
            // " newest" = [264 e w e s t]: (264,e)=2 (e,w)=2 (w,e)=2 (e,s)=2 (s,t)=2;
            // smallest is (e,s) = (106,120) → 265.
            (e, s),
            // [264 e w 265 t]: (e,w)=(106,124) smallest → 266.
            (e, w),
            // [264 266 265 t]: (264,266) → 267.
            (264, 266),
            // [267 265 t]: (265,t)=(265,121) < (267,265) → 268.
            (265, t),
            // [267 268] → 269 " newest".
            (267, 268),
            // Left: " lower" = [263 e r]: (263,e)=1, (e,r)=1 < min_frequency 2: stop.
        ];
        assert_eq!(bpe.merges(), expected.as_slice());
        assert_eq!(bpe.vocab_size(), 270);
        assert_eq!(bpe.token_bytes(263), b" low".to_vec());
        assert_eq!(bpe.token_bytes(269), b" newest".to_vec());
        // Seen words with all their merges learned are single tokens.
        assert_eq!(bpe.encode(" newest"), vec![269]);
        assert_eq!(bpe.encode("low low"), vec![262, 263]);
        assert_eq!(bpe.encode(" lower"), vec![263, e, id(b'r')]);
        // The vocab_size limit stops training early.
        let small = Bpe::train(std::iter::once(corpus), 263, 1).unwrap();
        assert_eq!(small.merges(), &expected[..2]);
        assert_eq!(small.vocab_size(), 263);
    }

    #[test]
    fn overlapping_pairs() {
        // "aaaa" x3: (a,a) → 261 gives [261 261]; then (261,261) → 262.
        let bpe = Bpe::train(std::iter::repeat_n("aaaa", 3), 1000, 1).unwrap();
        let a = id(b'a');
        assert_eq!(bpe.merges(), &[(a, a), (261, 261)]);
        assert_eq!(bpe.encode("aaaa"), vec![262]);
        assert_eq!(bpe.encode("aaa"), vec![261, a]);
        assert_eq!(bpe.encode("aaaaa"), vec![262, a]);
        assert_eq!(bpe.decode(&bpe.encode("aaaaaaa")), "aaaaaaa");
    }

    #[test]
    fn trained_word_is_one_token() {
        let text = "tokenization tokenization tokenization is fun";
        let bpe = Bpe::train(std::iter::repeat_n(text, 10), 2000, 1).unwrap();
        assert_eq!(bpe.encode(" tokenization").len(), 1);
        assert_eq!(bpe.encode("tokenization").len(), 1);
        assert_eq!(bpe.decode(&bpe.encode(text)), text);
    }

    #[test]
    fn deterministic() {
        let texts = [
            "the cat sat on the mat",
            "the dog sat on the log",
            "a cat, a dog!",
        ];
        let a = Bpe::train(texts.iter().copied(), 300, 1).unwrap().to_json();
        let b = Bpe::train(texts.iter().copied(), 300, 1).unwrap().to_json();
        assert_eq!(a, b);
        // Order of the texts does not matter either (words are counted, then sorted).
        let c = Bpe::train(texts.iter().rev().copied(), 300, 1)
            .unwrap()
            .to_json();
        assert_eq!(a, c);
    }

    #[test]
    fn json_round_trip_and_format() {
        let bpe = Bpe::train(std::iter::once("low low low lower newest newest"), 1000, 2).unwrap();
        let json = bpe.to_json();
        assert!(
            json.starts_with(
                r#"{"kind":"byte-bpe","version":1,"vocab_size":270,"merges":[[113,116],[261,124],"#
            ),
            "{json}"
        );
        let back = Bpe::from_json(&json).unwrap();
        assert_eq!(back.merges(), bpe.merges());
        assert_eq!(back.to_json(), json);
        // serde (de)serialisation gives the same artifact.
        assert_eq!(serde_json::to_string(&bpe).unwrap(), json);
        let via_serde: Bpe = serde_json::from_str(&json).unwrap();
        assert_eq!(via_serde.merges(), bpe.merges());
        assert!(serde_json::from_str::<Bpe>(
            r#"{"kind":"x","version":1,"vocab_size":261,"merges":[]}"#
        )
        .is_err());
    }

    #[test]
    fn vocab_size_too_small() {
        let err = Bpe::train(std::iter::once("some text"), 261, 1).unwrap_err();
        assert!(err.contains("vocab_size") && err.contains("262"), "{err}");
        assert!(train(std::iter::once("some text"), 262, 1).is_ok());
        let err = Bpe::train(std::iter::empty(), 1000, 1).unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn min_frequency_limits_vocab() {
        // Every pair occurs once: with min_frequency 2 nothing is merged.
        let bpe = Bpe::train(std::iter::once("abcdef"), 1000, 2).unwrap();
        assert_eq!(bpe.vocab_size(), 261);
        assert_eq!(bpe.encode("abcdef").len(), 6);
    }

    #[test]
    fn from_json_validates() {
        let ok =
            r#"{"kind":"byte-bpe","version":1,"vocab_size":263,"merges":[[113,116],[261,124]]}"#;
        assert_eq!(Bpe::from_json(ok).unwrap().vocab_size(), 263);

        let forward =
            r#"{"kind":"byte-bpe","version":1,"vocab_size":263,"merges":[[113,116],[262,124]]}"#;
        let err = Bpe::from_json(forward).unwrap_err();
        assert!(
            err.contains("merge 1") && err.contains("262") && err.contains("not defined before"),
            "{err}"
        );

        let special = r#"{"kind":"byte-bpe","version":1,"vocab_size":262,"merges":[[4,116]]}"#;
        assert!(Bpe::from_json(special).unwrap_err().contains("special"));

        let dup =
            r#"{"kind":"byte-bpe","version":1,"vocab_size":263,"merges":[[113,116],[113,116]]}"#;
        assert!(Bpe::from_json(dup).unwrap_err().contains("repeats merge 0"));

        let kind = r#"{"kind":"wordpiece","version":1,"vocab_size":261,"merges":[]}"#;
        assert!(Bpe::from_json(kind).unwrap_err().contains("kind"));

        let version = r#"{"kind":"byte-bpe","version":2,"vocab_size":261,"merges":[]}"#;
        assert!(Bpe::from_json(version).unwrap_err().contains("version 2"));

        let size = r#"{"kind":"byte-bpe","version":1,"vocab_size":300,"merges":[[113,116]]}"#;
        assert!(Bpe::from_json(size)
            .unwrap_err()
            .contains("vocab_size is 300"));

        // Merge k joins merge k-1 with itself: token lengths double; refused, not OOM.
        let mut merges = vec![(id(b'a'), id(b'a'))];
        for k in 0..40u32 {
            merges.push((FIRST_MERGE + k, FIRST_MERGE + k));
        }
        let err = Bpe::from_merges(merges).unwrap_err();
        assert!(err.contains("MiB"), "{err}");

        let garbage = Bpe::from_json("not json").unwrap_err();
        assert!(garbage.contains("tokenizer.json"), "{garbage}");
        assert!(Bpe::from_json(r#"{"kind":"byte-bpe"}"#).is_err());
    }

    /// Reference trainer: recounts every pair at every step.
    fn naive_train(texts: &[&str], vocab_size: usize, min_frequency: i64) -> Vec<(u32, u32)> {
        let mut counts: HashMap<String, i64> = HashMap::new();
        for t in texts {
            for w in pre_tokenize(t) {
                *counts.entry(w.to_string()).or_insert(0) += 1;
            }
        }
        let mut words: Vec<(Vec<u32>, i64)> = counts
            .into_iter()
            .map(|(w, c)| (w.bytes().map(id).collect(), c))
            .collect();
        let mut merges = Vec::new();
        while FIRST_MERGE as usize + merges.len() < vocab_size {
            let mut pc: HashMap<(u32, u32), i64> = HashMap::new();
            for (w, c) in &words {
                for p in w.windows(2) {
                    *pc.entry((p[0], p[1])).or_insert(0) += c;
                }
            }
            let Some((&pair, &c)) = pc.iter().max_by_key(|(p, c)| (**c, Reverse(**p))) else {
                break;
            };
            if c < min_frequency {
                break;
            }
            let new_id = FIRST_MERGE + merges.len() as u32;
            for (w, _) in &mut words {
                merge_in_place(w, pair, new_id);
            }
            merges.push(pair);
        }
        merges
    }

    #[test]
    fn incremental_training_matches_naive() {
        let texts = [
            "It is a truth universally acknowledged, that a single man in possession of a good \
             fortune, must be in want of a wife.",
            "However little known the feelings or views of such a man may be on his first \
             entering a neighbourhood, this truth is so well fixed in the minds of the \
             surrounding families...",
            "aaaa aaaaaaa abab ababab bababa   ---- !!!! \n\n\t\t  mañana mañana 中文中文 🙂🙂🙂",
            "\"My dear Mr. Bennet,\" said his lady to him one day, \"have you heard that \
             Netherfield Park is let at last?\"",
        ];
        for (vocab, min_f) in [(300, 1), (700, 1), (500, 2), (400, 3)] {
            let fast = Bpe::train(texts.iter().copied(), vocab, min_f as u64).unwrap();
            assert_eq!(
                fast.merges(),
                naive_train(&texts, vocab, min_f).as_slice(),
                "{vocab} {min_f}"
            );
        }
    }

    #[test]
    fn random_text_round_trips() {
        let bpe = sample_bpe();
        let alphabet: Vec<char> = "ab é中🙂 \n\t\r.,!-'0\u{301}\u{0}\u{a0}".chars().collect();
        let mut state: u64 = 12345;
        for _ in 0..300 {
            let mut s = String::new();
            let len = (state % 40) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            assert_eq!(pre_tokenize(&s).collect::<String>(), s);
            assert_eq!(bpe.decode(&bpe.encode(&s)), s, "{s:?}");
            state = state.wrapping_add(1);
        }
    }

    #[test]
    fn vocab_size_too_large() {
        let err = Bpe::train(std::iter::once("x"), MAX_VOCAB_SIZE + 1, 1).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn long_words_encode() {
        // A long run of one punctuation character: the heap-based merge is fast and exact.
        let bpe = Bpe::train(std::iter::once("==== ==== ===="), 300, 1).unwrap();
        let s = "=".repeat(100_000);
        let ids = bpe.encode(&s);
        assert_eq!(bpe.decode(&ids), s);
        assert!(ids.len() <= 100_000 / 4 + 1);
    }
}
