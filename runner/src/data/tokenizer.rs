//! Text tokenizers: standard Hugging Face `tokenizer.json` files, read and written with the
//! `tokenizers` crate (pure-Rust features only).
//!
//! **Trained by pretext** ([`TextTokenizer::train`]): a byte-level BPE (GPT-2's byte-to-
//! character table and pre-tokenising pattern without its look-ahead, [`SPLIT_PATTERN`]; no
//! normaliser) whose ids are
//!
//! - `0..5`: the special tokens `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`, the ids the
//!   plugin SDK reserves ([`PAD`]..[`SPECIAL`]);
//! - `5..261`: the 256 byte symbols (sorted by their character in GPT-2's table), so any text
//!   has an encoding and `[UNK]` never occurs;
//! - then one id per learned merge, most frequent pair first (ties: the smallest pair of ids).
//!
//! The file also carries how pretext makes a sample of a passage: the post-processor
//! `[CLS] $A`, truncation to `seq_len` and fixed padding with `[PAD]`, so any program loading
//! it (`Tokenizer.from_file` in Python) turns a passage into exactly the row pretext stored.
//!
//! **Brought by the user** ([`TextTokenizer::from_json`]): any `tokenizer.json`, as long as it
//! has the five special tokens, found by name ([`SPECIAL_NAMES`]). When they are ids 0..5 in
//! pretext's order the file's ids are used as they are; otherwise pretext numbers the
//! vocabulary its own way: the five specials take 0..5, every other id keeps its order after
//! them (see [`TextTokenizer::is_renumbered`]). pretext encodes with the file's normaliser,
//! pre-tokeniser and model only; the file's post-processor, truncation and padding are not
//! used (pretext adds `[CLS]`, cuts and pads itself), and special-token text inside a passage
//! is encoded as ordinary text.

use std::collections::HashMap;
use std::sync::Mutex;

use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, Model, ModelWrapper, PaddingDirection, PaddingParams, PaddingStrategy,
    PostProcessorWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer, Trainer,
    TruncationDirection, TruncationParams, TruncationStrategy,
};

/// Padding.
pub const PAD: u32 = 0;
/// Unknown token (byte-level tokenizers never emit it; brought ones may).
pub const UNK: u32 = 1;
/// Start-of-sequence / classification token.
pub const CLS: u32 = 2;
/// Separator.
pub const SEP: u32 = 3;
/// Mask token for masked-language-model objectives.
pub const MASK: u32 = 4;
/// Number of special tokens; learned tokens start here.
pub const SPECIAL: u32 = 5;
/// First id after the 256 byte tokens of a trained tokenizer.
pub const FIRST_MERGE: u32 = SPECIAL + 256;
/// Smallest accepted `vocab_size` for training: specials, bytes and one merge.
pub const MIN_VOCAB_SIZE: usize = FIRST_MERGE as usize + 1;
/// Largest vocabulary a pipeline may train (as `tokenizer.vocab_size` allows).
pub const MAX_VOCAB_SIZE: usize = 65536;
/// Largest id a brought tokenizer may use, plus one (real vocabularies are well under a
/// million; this bounds the id tables pretext builds).
pub const MAX_FILE_VOCAB: usize = 1 << 24;

/// The names pretext writes for the special tokens, indexed by id.
pub const NAMES: [&str; SPECIAL as usize] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// For each special id, the token names a brought `tokenizer.json` may use for it (the first
/// one present wins): BERT's `[PAD]`-style and RoBERTa's `<pad>`-style names.
pub const SPECIAL_NAMES: [&[&str]; SPECIAL as usize] = [
    &["[PAD]", "<pad>"],
    &["[UNK]", "<unk>"],
    &["[CLS]", "<cls>", "<s>"],
    &["[SEP]", "<sep>", "</s>"],
    &["[MASK]", "<mask>"],
];

/// How a trained tokenizer cuts text into words before BPE: GPT-2's pattern without its
/// look-ahead `\s+(?!\S)` (so a run of spaces before a word stays one word instead of
/// leaving its last space to the word; passages never have such runs). Without look-around
/// the pattern runs on the `regex` crate's automata, here and inside `tokenizers` alike.
pub const SPLIT_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// The pre-tokeniser of a trained tokenizer: [`SPLIT_PATTERN`], then GPT-2's byte-to-
/// character mapping of each word.
fn pre_tokenizer() -> Result<PreTokenizerWrapper, String> {
    let split = Split::new(
        SplitPattern::Regex(SPLIT_PATTERN.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| format!("internal: the split pattern: {e}"))?;
    Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
    ])))
}

/// GPT-2's byte-to-character table: the printable Latin-1 bytes stand for themselves, the
/// other 68 bytes for U+0100 onwards, in byte order.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = matches!(b, 33..=126 | 161..=172 | 174..=255);
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).unwrap_or('\0');
    }
    table
}

/// What a file made like pretext's trained ones is encoded with: the same words and model as
/// the library's pipeline, without its per-call bookkeeping (offsets, alignments, token
/// strings), and with a cache of the ids of every word seen.
#[derive(Debug)]
struct Fast {
    re: regex::Regex,
    chars: [char; 256],
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl Clone for Fast {
    fn clone(&self) -> Fast {
        Fast {
            re: self.re.clone(),
            chars: self.chars,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl Fast {
    /// Words above this many in the cache clear it.
    const MAX_CACHE: usize = 1 << 20;

    fn new() -> Result<Fast, String> {
        Ok(Fast {
            re: regex::Regex::new(SPLIT_PATTERN)
                .map_err(|e| format!("internal: the split pattern: {e}"))?,
            chars: byte_chars(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// `tk`'s words can be cut by [`Fast`]: no normaliser, pretext's pre-tokeniser, a BPE
    /// without dropout, and only special added tokens (they are not split out of the text).
    fn applies(tk: &Tokenizer) -> bool {
        let ours = pre_tokenizer()
            .ok()
            .and_then(|p| serde_json::to_value(p).ok());
        let theirs = tk
            .get_pre_tokenizer()
            .and_then(|p| serde_json::to_value(p).ok());
        tk.get_normalizer().is_none()
            && ours.is_some()
            && ours == theirs
            && matches!(tk.get_model(), ModelWrapper::BPE(b) if b.dropout.is_none())
            && tk.get_added_tokens_decoder().values().all(|t| t.special)
    }

    /// The words of `text`, each as GPT-2 characters.
    fn words<'a>(&'a self, text: &'a str) -> impl Iterator<Item = (&'a str, String)> + 'a {
        self.re.find_iter(text).map(|m| {
            let w = m.as_str();
            (w, w.bytes().map(|b| self.chars[b as usize]).collect())
        })
    }

    fn encode_into(
        &self,
        model: &ModelWrapper,
        text: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), String> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for m in self.re.find_iter(text) {
            let w = m.as_str();
            if let Some(ids) = cache.get(w) {
                out.extend_from_slice(ids);
                continue;
            }
            let mapped: String = w.bytes().map(|b| self.chars[b as usize]).collect();
            let ids: Vec<u32> = model
                .tokenize(&mapped)
                .map_err(|e| format!("the tokenizer cannot encode a passage: {e}"))?
                .into_iter()
                .map(|t| t.id)
                .collect();
            out.extend_from_slice(&ids);
            if cache.len() >= Self::MAX_CACHE {
                cache.clear();
            }
            cache.insert(w.to_string(), ids);
        }
        Ok(())
    }
}

/// The trainer of [`TextTokenizer::train`]: the five specials first, then the 256 byte
/// symbols whether seen or not.
fn bpe_trainer(vocab_size: usize, min_frequency: u64) -> BpeTrainer {
    let specials: Vec<AddedToken> = NAMES.iter().map(|n| AddedToken::from(*n, true)).collect();
    BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(min_frequency.max(1))
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
}

/// The untrained model of [`TextTokenizer::train`].
fn bare_model() -> Result<BPE, String> {
    BPE::builder()
        .unk_token(NAMES[UNK as usize].to_string())
        .build()
        .map_err(|e| format!("internal: the BPE model: {e}"))
}

/// The role of each special id, for messages.
const ROLES: [&str; SPECIAL as usize] = ["padding", "unknown", "start", "separator", "mask"];

/// A text tokenizer: a `tokenizer.json` and, for a brought one whose special tokens are not
/// ids 0..5, the renumbering between its ids and pretext's.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    /// The file's tokenizer without post-processor, truncation and padding, special-token text
    /// encoded as text: what pretext encodes with.
    tk: Tokenizer,
    /// `None`: the file's ids are pretext's.
    map: Option<IdMap>,
    /// Set when the file is made like pretext's trained ones.
    fast: Option<Fast>,
    /// Ids `0..vocab_size` may occur.
    vocab_size: usize,
    /// `tk` serialised: two tokenizers with the same fingerprint encode alike.
    fingerprint: String,
}

/// Renumbering of a brought tokenizer.
#[derive(Debug, Clone)]
struct IdMap {
    /// File id → pretext id.
    ours: Vec<u32>,
    /// Pretext id → file id.
    file: Vec<u32>,
}

impl TextTokenizer {
    /// Trains a byte-level BPE on `texts` and returns it with its `tokenizer.json` (which
    /// makes samples of `seq_len` tokens, see the module docs).
    ///
    /// The vocabulary grows to `vocab_size` tokens or until no pair occurs at least
    /// `min_frequency` times. Deterministic: the trainer counts words and pairs with integer
    /// sums and breaks ties between equally frequent pairs by their ids, so the file does not
    /// depend on the order of the texts, the number of threads or hash-map seeds (the tests
    /// train repeatedly, reversed and on one thread; the e2e tests across processes).
    pub fn train<'a>(
        texts: impl Iterator<Item = &'a str> + Send,
        vocab_size: usize,
        min_frequency: u64,
        seq_len: usize,
    ) -> Result<(TextTokenizer, String), String> {
        if vocab_size < MIN_VOCAB_SIZE {
            return Err(format!(
                "vocab_size = {vocab_size} is too small: it must be at least {MIN_VOCAB_SIZE} \
                 ({SPECIAL} special tokens + 256 byte tokens + at least 1 merge)"
            ));
        }
        if vocab_size > MAX_VOCAB_SIZE {
            return Err(format!(
                "vocab_size = {vocab_size} is too large: the maximum is {MAX_VOCAB_SIZE}"
            ));
        }
        if seq_len < 2 {
            return Err(format!("seq_len = {seq_len} leaves no room after [CLS]"));
        }
        let mut any_text = false;
        let texts = texts.inspect(|t| any_text |= !t.is_empty());
        // The words are cut here as the file's pre-tokeniser cuts them (the library's own
        // `Tokenizer::train` gives the same file, more slowly: see the tests).
        let fast = Fast::new()?;
        let mut trainer = bpe_trainer(vocab_size, min_frequency);
        trainer
            .feed(texts, |t| {
                Ok(fast.words(t).map(|(_, mapped)| mapped).collect())
            })
            .map_err(|e| format!("training the tokenizer failed: {e}"))?;
        if !any_text {
            return Err("cannot train the tokenizer: the training texts are empty".to_string());
        }
        let mut model = bare_model()?;
        let specials = trainer
            .train(&mut model)
            .map_err(|e| format!("training the tokenizer failed: {e}"))?;
        let mut tk = Tokenizer::new(model);
        tk.with_pre_tokenizer(Some(pre_tokenizer()?))
            .with_decoder(Some(ByteLevel::new(false, true, false)));
        tk.add_special_tokens(&specials);
        let template = TemplateProcessing::builder()
            .try_single("[CLS] $A")
            .and_then(|b| b.try_pair("[CLS] $A [SEP] $B:1 [SEP]:1"))
            .map_err(|e| format!("internal: the post-processor template: {e}"))?
            .special_tokens(vec![(NAMES[CLS as usize], CLS), (NAMES[SEP as usize], SEP)])
            .build()
            .map_err(|e| format!("internal: the post-processor: {e}"))?;
        tk.with_post_processor(Some(template));
        tk.with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: seq_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| format!("internal: truncation: {e}"))?;
        tk.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(seq_len),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: PAD,
            pad_type_id: 0,
            pad_token: NAMES[PAD as usize].to_string(),
        }));
        let json = tk
            .to_string(true)
            .map_err(|e| format!("internal: writing tokenizer.json: {e}"))?;
        let ours = TextTokenizer::from_json(&json)?;
        if ours.map.is_some() {
            return Err("internal: the trained special tokens are not ids 0..5".into());
        }
        Ok((ours, json))
    }

    /// Reads a `tokenizer.json`: any file the `tokenizers` library reads that has the five
    /// special tokens (see the module docs). Errors say what is wrong and what to do; the
    /// caller adds the file's path.
    pub fn from_json(s: &str) -> Result<TextTokenizer, String> {
        let parsed =
            crate::panic_guard::catch(|| s.parse::<Tokenizer>()).unwrap_or_else(|p| Err(p.into()));
        let mut tk = match parsed {
            Ok(tk) => tk,
            Err(e) => {
                let old = serde_json::from_str::<serde_json::Value>(s)
                    .is_ok_and(|v| v["kind"] == "byte-bpe");
                return Err(if old {
                    "this is a tokenizer written by an older pretext (`\"kind\": \"byte-bpe\"`), \
                     which this version no longer reads; run the ingest stage that made it again"
                        .to_string()
                } else {
                    format!(
                        "not a tokenizer.json the Hugging Face `tokenizers` library can read \
                         ({e}); a tokenizer file is the `tokenizer.json` saved by \
                         `Tokenizer.save` (Python) or by a pretext text ingest stage"
                    )
                });
            }
        };
        let vocab = tk.get_vocab(true);
        let size = vocab.values().max().map_or(0, |&m| m as usize + 1);
        if size > MAX_FILE_VOCAB {
            return Err(format!(
                "the tokenizer uses ids up to {}; pretext reads vocabularies of at most \
                 {MAX_FILE_VOCAB} ids",
                size - 1
            ));
        }
        let specials = find_specials(&vocab)?;
        let map = (specials != [PAD, UNK, CLS, SEP, MASK]).then(|| IdMap::new(&specials, size));
        tk.with_post_processor(None::<PostProcessorWrapper>);
        tk.with_padding(None);
        tk.with_truncation(None)
            .map_err(|e| format!("internal: truncation: {e}"))?;
        tk.set_encode_special_tokens(true);
        let fast = if Fast::applies(&tk) {
            Some(Fast::new()?)
        } else {
            None
        };
        let fingerprint = tk
            .to_string(false)
            .map_err(|e| format!("internal: serialising the tokenizer: {e}"))?;
        Ok(TextTokenizer {
            tk,
            map,
            fast,
            vocab_size: size,
            fingerprint,
        })
    }

    /// The number of ids (specials included): every id pretext produces is below it.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Whether pretext renumbers the file's ids (a brought tokenizer whose special tokens are
    /// not ids 0..5 in pretext's order).
    pub fn is_renumbered(&self) -> bool {
        self.map.is_some()
    }

    /// Whether the two encode every text to the same ids.
    pub fn same_as(&self, other: &TextTokenizer) -> bool {
        self.fingerprint == other.fingerprint
    }

    /// The pretext id of a token of the file, if the file has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tk.token_to_id(token).map(|id| self.ours(id))
    }

    fn ours(&self, file_id: u32) -> u32 {
        match &self.map {
            Some(m) => m.ours.get(file_id as usize).copied().unwrap_or(UNK),
            None => file_id,
        }
    }

    /// Encodes `text` (no special tokens added), appending pretext ids to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) -> Result<(), String> {
        if let Some(fast) = &self.fast {
            let start = out.len();
            fast.encode_into(self.tk.get_model(), text, out)?;
            for id in &mut out[start..] {
                *id = self.ours(*id);
            }
            return Ok(());
        }
        let enc = self
            .tk
            .encode_fast(text, false)
            .map_err(|e| format!("the tokenizer cannot encode a passage: {e}"))?;
        out.extend(enc.get_ids().iter().map(|&id| self.ours(id)));
        Ok(())
    }

    /// Encodes `text` into pretext ids (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out)?;
        Ok(out)
    }

    /// Decodes pretext ids into text with the file's decoder; special tokens and ids outside
    /// the vocabulary are skipped, invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let file: Vec<u32> = ids
            .iter()
            .filter(|&&id| id >= SPECIAL && (id as usize) < self.vocab_size)
            .map(|&id| match &self.map {
                Some(m) => m.file[id as usize],
                None => id,
            })
            .collect();
        self.tk.decode(&file, true).unwrap_or_default()
    }
}

/// The file ids of the five special tokens, by pretext id; or which are missing.
fn find_specials(vocab: &HashMap<String, u32>) -> Result<[u32; SPECIAL as usize], String> {
    let mut found = [0u32; SPECIAL as usize];
    let mut missing = Vec::new();
    for (i, names) in SPECIAL_NAMES.iter().enumerate() {
        match names.iter().find_map(|n| vocab.get(*n)) {
            Some(&id) => found[i] = id,
            None => missing.push(format!(
                "{} ({})",
                ROLES[i],
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "the tokenizer lacks special tokens pretext needs: {}. pretext finds the five \
             special tokens by name; add the missing ones to the file, e.g. in Python: \
             `tok.add_special_tokens([\"[PAD]\", \"[UNK]\", \"[CLS]\", \"[SEP]\", \"[MASK]\"]); \
             tok.save(\"tokenizer.json\")`",
            missing.join(", ")
        ));
    }
    for i in 0..found.len() {
        for j in 0..i {
            if found[i] == found[j] {
                return Err(format!(
                    "the tokenizer gives the {} and {} tokens the same id {}; pretext needs \
                     five distinct special tokens",
                    ROLES[j], ROLES[i], found[i]
                ));
            }
        }
    }
    Ok(found)
}

impl IdMap {
    /// The specials (file ids, by pretext id) take pretext ids 0..5; every other file id `f`
    /// becomes `5 + f - (the number of special file ids below f)`.
    fn new(specials: &[u32; SPECIAL as usize], size: usize) -> IdMap {
        let mut ours = vec![0u32; size];
        let mut next = SPECIAL;
        for (f, slot) in ours.iter_mut().enumerate() {
            if let Some(p) = specials.iter().position(|&s| s as usize == f) {
                *slot = p as u32;
            } else {
                *slot = next;
                next += 1;
            }
        }
        let mut file = vec![0u32; size];
        for (f, &o) in ours.iter().enumerate() {
            file[o as usize] = f as u32;
        }
        IdMap { ours, file }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORPUS: &str = "The quick brown fox jumps over the lazy dog. \
                          Le cœur a ses raisons — 中文 文本 🙂🙂 naïve café.\n\n\tThe end.   ";

    fn sample() -> (TextTokenizer, String) {
        TextTokenizer::train(std::iter::repeat_n(CORPUS, 3), 400, 2, 16).unwrap()
    }

    #[test]
    fn constants_match_the_sdk() {
        use pretext_plugin::tokens;
        assert_eq!(
            (PAD, UNK, CLS, SEP, MASK, SPECIAL),
            (
                tokens::PAD,
                tokens::UNK,
                tokens::CLS,
                tokens::SEP,
                tokens::MASK,
                tokens::SPECIAL
            )
        );
        assert_eq!(FIRST_MERGE, 261);
        assert_eq!(MIN_VOCAB_SIZE, 262);
    }

    #[test]
    fn trained_ids_and_round_trip() {
        let (tk, json) = sample();
        assert!(!tk.is_renumbered());
        assert!(tk.vocab_size() > MIN_VOCAB_SIZE && tk.vocab_size() <= 400);
        for (id, name) in NAMES.iter().enumerate() {
            assert_eq!(tk.token_to_id(name), Some(id as u32), "{name}");
        }
        // The 256 byte symbols follow the specials.
        assert_eq!(tk.token_to_id("!"), Some(SPECIAL));
        assert!(json.contains("\"type\": \"ByteLevel\"") && json.contains("\"BPE\""));
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
            // Special-token text is ordinary text.
            "a [MASK] and [PAD] here",
        ];
        for s in cases {
            let ids = tk.encode(s).unwrap();
            assert_eq!(tk.decode(&ids), s, "{s:?}");
            assert!(ids
                .iter()
                .all(|&i| i >= SPECIAL && (i as usize) < tk.vocab_size()));
        }
        assert!(tk.encode("").unwrap().is_empty());
        // Learned words are one token.
        assert_eq!(tk.encode(" quick").unwrap().len(), 1);
    }

    #[test]
    fn decode_skips_specials_and_unknown_ids() {
        let (tk, _) = sample();
        let mut ids = vec![CLS];
        ids.extend(tk.encode("hi there").unwrap());
        ids.extend([SEP, PAD, MASK, UNK, u32::MAX, 1_000_000]);
        assert_eq!(tk.decode(&ids), "hi there");
        // A lone UTF-8 continuation byte decodes lossily.
        let cont = tk.encode("ж").unwrap();
        assert_eq!(cont.len(), 2);
        assert_eq!(tk.decode(&cont[1..]), "\u{FFFD}");
    }

    #[test]
    fn deterministic_whatever_the_order_threads_and_hashing() {
        let texts = [
            "the cat sat on the mat",
            "the dog sat on the log",
            "a cat, a dog! aaaa abab ababab bababa",
            "It is a truth universally acknowledged, that a single man in possession of a good \
             fortune, must be in want of a wife.",
        ];
        let train = |order: &[&str]| {
            TextTokenizer::train(order.iter().copied(), 600, 1, 32)
                .unwrap()
                .1
        };
        let a = train(&texts);
        // Every training hashes with fresh random hash-map seeds.
        for _ in 0..4 {
            assert_eq!(train(&texts), a);
        }
        let reversed: Vec<&str> = texts.iter().rev().copied().collect();
        assert_eq!(train(&reversed), a);
        // One thread or many: the trainer's counts are integer sums.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(pool.install(|| train(&texts)), a);
    }

    /// Random strings over an alphabet with every kind of character the pattern tells apart.
    fn random_texts(n: usize) -> Vec<String> {
        let alphabet: Vec<char> = "ab zé中🙂 \n\t\r.,!-'0٣\u{301}\u{0}\u{a0}\u{3000}sStTdmlrv"
            .chars()
            .collect();
        let mut state: u64 = 12345;
        (0..n)
            .map(|_| {
                let len = (state % 40) as usize;
                let mut s = String::new();
                for _ in 0..len {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    s.push(alphabet[(state % alphabet.len() as u64) as usize]);
                }
                state = state.wrapping_add(1);
                s
            })
            .collect()
    }

    #[test]
    fn the_fast_path_is_the_library_pipeline() {
        // GPT-2's table: the same 256 characters as the library's.
        let table: std::collections::HashSet<char> = byte_chars().into_iter().collect();
        let theirs: std::collections::HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        assert_eq!(table, theirs);
        let mut texts = random_texts(300);
        texts.push(CORPUS.repeat(4));
        texts.push("It's   they're we've I'm you'll he'd 12,345.67 --- ?!".into());
        // Training: the library's `Tokenizer::train` (its own pre-tokeniser) gives the same
        // model as ours.
        let (ours, _) = TextTokenizer::train(texts.iter().map(String::as_str), 700, 1, 32).unwrap();
        let mut lib = Tokenizer::new(bare_model().unwrap());
        lib.with_pre_tokenizer(Some(pre_tokenizer().unwrap()));
        lib.train(
            &mut tokenizers::models::TrainerWrapper::from(bpe_trainer(700, 1)),
            texts.iter(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(lib.get_model()).unwrap(),
            serde_json::to_string(ours.tk.get_model()).unwrap()
        );
        // Encoding: the cached fast path gives the library's ids.
        assert!(ours.fast.is_some());
        for t in texts.iter().chain(random_texts(200).iter()) {
            let want = ours
                .tk
                .encode_fast(t.as_str(), false)
                .unwrap()
                .get_ids()
                .to_vec();
            assert_eq!(ours.encode(t).unwrap(), want, "{t:?}");
            assert_eq!(ours.decode(&want), *t, "{t:?}");
        }
        // A file with another pre-tokeniser takes the library's path.
        let mut json: serde_json::Value = serde_json::from_str(
            &TextTokenizer::train(texts.iter().map(String::as_str), 300, 1, 8)
                .unwrap()
                .1,
        )
        .unwrap();
        json["pre_tokenizer"] = serde_json::json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
        });
        let other = TextTokenizer::from_json(&json.to_string()).unwrap();
        assert!(other.fast.is_none());
        assert_eq!(other.decode(&other.encode(CORPUS).unwrap()), CORPUS);
    }

    #[test]
    fn vocab_size_and_min_frequency_limit_training() {
        let err = TextTokenizer::train(std::iter::once("some text"), 261, 1, 8).unwrap_err();
        assert!(err.contains("vocab_size") && err.contains("262"), "{err}");
        let err = TextTokenizer::train(std::iter::once("x"), 70_000, 1, 8).unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = TextTokenizer::train(std::iter::empty(), 1000, 1, 8).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        // Every pair occurs once: with min_frequency 2 nothing is merged.
        let (tk, _) = TextTokenizer::train(std::iter::once("abcdef"), 1000, 2, 8).unwrap();
        assert_eq!(tk.vocab_size(), 261);
        assert_eq!(tk.encode("abcdef").unwrap().len(), 6);
        // The vocabulary stops at vocab_size.
        let (tk, _) = TextTokenizer::train(std::iter::repeat_n(CORPUS, 5), 270, 1, 8).unwrap();
        assert_eq!(tk.vocab_size(), 270);
    }

    #[test]
    fn json_round_trip_and_fingerprint() {
        let (tk, json) = sample();
        let back = TextTokenizer::from_json(&json).unwrap();
        assert!(back.same_as(&tk));
        assert_eq!(back.encode(CORPUS).unwrap(), tk.encode(CORPUS).unwrap());
        // The same vocabulary at another seq_len encodes alike; another vocabulary does not.
        let (other_len, _) =
            TextTokenizer::train(std::iter::repeat_n(CORPUS, 3), 400, 2, 64).unwrap();
        assert!(other_len.same_as(&tk));
        let (other, _) = TextTokenizer::train(std::iter::repeat_n(CORPUS, 3), 300, 2, 16).unwrap();
        assert!(!other.same_as(&tk));
    }

    /// A WordLevel tokenizer.json with the given vocabulary (BERT-like names and ids).
    fn word_level(vocab: &[(&str, u32)]) -> String {
        let v: serde_json::Map<String, serde_json::Value> = vocab
            .iter()
            .map(|(k, id)| (k.to_string(), serde_json::json!(id)))
            .collect();
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": { "type": "WhitespaceSplit" },
            "post_processor": null,
            "decoder": null,
            "model": { "type": "WordLevel", "vocab": v, "unk_token": "[UNK]" }
        })
        .to_string()
    }

    #[test]
    fn brought_tokenizers_are_renumbered_around_their_specials() {
        // BERT-like: [PAD] 0, words 1..3, [UNK] 4, [CLS] 5, [SEP] 6, [MASK] 7, a word 8.
        let json = word_level(&[
            ("[PAD]", 0),
            ("hello", 1),
            ("world", 2),
            ("again", 3),
            ("[UNK]", 4),
            ("[CLS]", 5),
            ("[SEP]", 6),
            ("[MASK]", 7),
            ("bye", 8),
        ]);
        let tk = TextTokenizer::from_json(&json).unwrap();
        assert!(tk.is_renumbered());
        assert_eq!(tk.vocab_size(), 9);
        assert_eq!(tk.token_to_id("[MASK]"), Some(MASK));
        assert_eq!(tk.token_to_id("[CLS]"), Some(CLS));
        // Non-special ids keep their order after the five specials.
        assert_eq!(
            tk.encode("hello world again bye").unwrap(),
            vec![5, 6, 7, 8]
        );
        // Unknown words are [UNK].
        assert_eq!(tk.encode("hello nope").unwrap(), vec![5, UNK]);
        assert_eq!(tk.decode(&[CLS, 5, MASK, 8, PAD]), "hello bye");

        // RoBERTa-style names at other ids.
        let json = word_level(&[
            ("<s>", 0),
            ("<pad>", 1),
            ("</s>", 2),
            ("<unk>", 3),
            ("word", 4),
            ("<mask>", 5),
        ]);
        let tk = TextTokenizer::from_json(&json).unwrap();
        assert_eq!(tk.token_to_id("<s>"), Some(CLS));
        assert_eq!(tk.token_to_id("</s>"), Some(SEP));
        assert_eq!(tk.token_to_id("word"), Some(SPECIAL));

        // Specials already at 0..5 in pretext's order: the file's ids as they are.
        let json = word_level(&[
            ("[PAD]", 0),
            ("[UNK]", 1),
            ("[CLS]", 2),
            ("[SEP]", 3),
            ("[MASK]", 4),
            ("w", 5),
        ]);
        let tk = TextTokenizer::from_json(&json).unwrap();
        assert!(!tk.is_renumbered());
        assert_eq!(tk.encode("w").unwrap(), vec![5]);
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let missing = word_level(&[("[PAD]", 0), ("[UNK]", 1), ("w", 2)]);
        let e = TextTokenizer::from_json(&missing).unwrap_err();
        assert!(
            e.contains("lacks special tokens")
                && e.contains("`[CLS]` or `<cls>` or `<s>`")
                && e.contains("`[MASK]` or `<mask>`")
                && !e.contains("`[PAD]` or")
                && e.contains("add_special_tokens"),
            "{e}"
        );
        for junk in ["not json", "{}", r#"{"model": 3}"#, "[1, 2]"] {
            let e = TextTokenizer::from_json(junk).unwrap_err();
            assert!(e.contains("not a tokenizer.json"), "{junk}: {e}");
        }
        let old = r#"{"kind":"byte-bpe","version":1,"vocab_size":261,"merges":[]}"#;
        let e = TextTokenizer::from_json(old).unwrap_err();
        assert!(e.contains("older pretext"), "{e}");
    }
}
