//! Token augmentations: deterministic per-sample transforms of token-id sequences (text).
//!
//! A text dataset holds fixed-length sequences of token ids from the tokenizer the ingest stage
//! trained. Every pretext tokenizer reserves the ids in [`PAD`]..[`SPECIAL`]; learned tokens
//! follow. The host passes a sequence together with the vocabulary size, so an augmentation
//! can draw random tokens from the vocabulary (BERT's 10 % random replacement).
//!
//! Marking prediction targets: an output id with the [`TARGET`] bit set tells the host "the
//! model must predict the *original* token at this position" (the MLM objective's targets). The
//! low 31 bits are the token the encoder sees there. Flags set by an earlier step of the same
//! view arrive in `input`; keep a flag with its token when moving tokens around.

use crate::{Params, Result, Rng};

/// Padding (after the end of a short passage, or after deletions).
pub const PAD: u32 = 0;
/// A character sequence the tokenizer cannot encode (byte-level tokenizers never emit it).
pub const UNK: u32 = 1;
/// First token of every sequence (the encoder may pool on it).
pub const CLS: u32 = 2;
/// Separator.
pub const SEP: u32 = 3;
/// The mask token of masked language modelling.
pub const MASK: u32 = 4;
/// Number of reserved ids: learned tokens are `SPECIAL..vocab_size`.
pub const SPECIAL: u32 = 5;
/// Flag bit on an output id: predict the original token here.
pub const TARGET: u32 = 1 << 31;

/// The token id without the [`TARGET`] flag.
#[inline]
pub fn id(x: u32) -> u32 {
    x & !TARGET
}

/// `true` when `x` is one of the reserved ids (ignoring the flag).
#[inline]
pub fn is_special(x: u32) -> bool {
    id(x) < SPECIAL
}

/// A borrowed token sequence and the size of its vocabulary.
#[derive(Debug, Clone, Copy)]
pub struct TokenSeq<'a> {
    /// Token ids, possibly with [`TARGET`] flags from an earlier step.
    pub ids: &'a [u32],
    /// Number of ids in the vocabulary (specials included).
    pub vocab_size: usize,
}

impl TokenSeq<'_> {
    /// Whether the vocabulary has any learned (non-special) token.
    pub fn has_learned_tokens(&self) -> bool {
        self.vocab_size > SPECIAL as usize
    }

    /// A uniformly random learned (non-special) token. With no learned tokens in the
    /// vocabulary (`vocab_size <= SPECIAL`) it returns `SPECIAL`, which the host rejects as
    /// outside the vocabulary: check [`TokenSeq::has_learned_tokens`] first.
    pub fn random_token(&self, rng: &mut Rng) -> u32 {
        let learned = (self.vocab_size as u32).saturating_sub(SPECIAL).max(1);
        SPECIAL + rng.below(learned as u64) as u32
    }
}

/// A per-sample token augmentation. Implement it, then list the type under
/// `token_augmentations` in [`crate::export_plugin!`]. The output has the input's length.
pub trait TokenAugmentation: Sized + Send + Sync + 'static {
    /// The name used in `views = [["<NAME>", ...]]`.
    const NAME: &'static str;
    const SUMMARY: &'static str;
    const PARAMS_DOC: &'static str = "";

    /// Read and validate parameters (at validation time, before any training).
    fn new(params: &mut Params) -> Result<Self>;

    /// Write the augmented `input` into `output` (same length), drawing randomness only
    /// from `rng`.
    fn apply(&self, rng: &mut Rng, input: TokenSeq, output: &mut [u32]) -> Result<()>;
}
