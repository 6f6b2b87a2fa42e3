//! `pretext-augment-text`: token-level augmentations of text for self-supervised learning,
//! as a pretext plugin.
//!
//! Every augmentation here is a [`TokenAugmentation`](pretext_plugin::TokenAugmentation):
//! it reads one fixed-length sequence of token ids (and the vocabulary size) and writes a
//! sequence of the same length, drawing all of its randomness from the per-sample [`Rng`]
//! the host hands it, so results are reproducible and independent of thread scheduling.
//!
//! | name | what it does | reference |
//! |---|---|---|
//! | `token_mask` | BERT masking: pick ~15 % of the tokens as prediction targets; show `[MASK]` at 80 % of them, a random token at 10 %, the token itself at 10 % | Devlin et al., *BERT*, NAACL 2019 |
//! | `span_mask` | SpanBERT masking: the same, but over contiguous spans whose lengths follow a truncated geometric distribution; one decision per span | Joshi et al., *SpanBERT*, TACL 2020 |
//! | `token_delete` | delete each token with a probability; the rest shift left, `[PAD]` fills the tail | Wei & Zou, *EDA*, EMNLP 2019 (random deletion) |
//! | `token_swap` | swap the tokens of two random positions, a fixed number of times | Wei & Zou, *EDA*, EMNLP 2019 (random swap) |
//!
//! # Special tokens and prediction targets
//!
//! The reserved ids `0..SPECIAL` ([`tokens::PAD`], [`tokens::UNK`], [`tokens::CLS`],
//! [`tokens::SEP`], [`tokens::MASK`]) mark structure, not text: no augmentation here changes
//! one, selects one, or moves one past another token. (`token_delete` is the one augmentation
//! that shifts tokens: a special token after a deleted one moves left with the rest of the
//! sequence, keeping its order; a `[CLS]` at the start never moves.)
//!
//! An id with the [`tokens::TARGET`] bit set is a prediction target that an earlier step of
//! the same view chose (its visible token may be `[MASK]`). Such a position counts as text,
//! not as a special token, but it is never selected again, never corrupted, and never deleted:
//! the flag stays with its token. `token_swap` may move it, flag and all. The masking
//! augmentations set the flag on every position they select.
//!
//! In the terms used below, a position is
//! - *fixed* when it holds an unflagged special id (left where it is, never selected);
//! - *eligible* when it holds an unflagged learned token (`id >= SPECIAL`): the positions
//!   that masking and deletion may select;
//! - *movable* when it is not fixed (eligible or flagged): the positions `token_swap` picks.

use pretext_plugin::tokens::{self, TokenSeq, MASK, SPECIAL, TARGET};
use pretext_plugin::{Error, Params, Result, Rng};

mod delete;
mod mask;
mod span;
mod swap;
#[cfg(test)]
mod testutil;

pub use delete::TokenDelete;
pub use mask::TokenMask;
pub use span::SpanMask;
pub use swap::TokenSwap;

pretext_plugin::export_plugin! {
    name: "pretext-augment-text",
    objectives: [],
    augmentations: [],
    token_augmentations: [TokenMask, SpanMask, TokenDelete, TokenSwap],
}

/// `true` for a position no augmentation may change or select: an unflagged special id.
#[inline]
pub(crate) fn is_fixed(x: u32) -> bool {
    x & TARGET == 0 && tokens::is_special(x)
}

/// `true` for a position masking and deletion may select: an unflagged learned token.
#[inline]
pub(crate) fn is_eligible(x: u32) -> bool {
    x & TARGET == 0 && !tokens::is_special(x)
}

/// Reads a selection probability `key` that must lie in `(0, 1]`.
pub(crate) fn read_prob(
    params: &mut Params,
    owner: &str,
    key: &str,
    default: f64,
    what: &str,
) -> Result<f64> {
    let v = params.f64(key, default)?;
    if !(v > 0.0 && v <= 1.0) {
        return Err(Error::msg(format!(
            "{owner}: parameter `{key}` = {v} is out of range: it must be greater than 0 and at \
             most 1 ({what})"
        )));
    }
    Ok(v)
}

/// Checks that `output` has the length of `input`.
pub(crate) fn check_lengths(owner: &str, input: &TokenSeq, output: &[u32]) -> Result<()> {
    if input.ids.len() != output.len() {
        return Err(Error::msg(format!(
            "{owner}: output holds {} tokens but the input holds {} (they must be equal)",
            output.len(),
            input.ids.len()
        )));
    }
    Ok(())
}

/// What a selected position (or span) shows the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    /// `[MASK]`.
    Mask,
    /// A uniformly random learned token.
    Random,
    /// The original token.
    Keep,
}

/// BERT's corruption of selected positions: `[MASK]` with probability `mask`, a random token
/// with probability `random`, the original token otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Corruption {
    pub mask: f64,
    pub random: f64,
}

/// Rows of `PARAMS_DOC` for the keys read by [`Corruption::read`].
macro_rules! corruption_doc {
    () => {
        "| `mask` | float in [0, 1] | 0.8 | probability that a selected position shows `[MASK]` |
| `random` | float in [0, 1] | 0.1 | probability that a selected position shows a uniformly random learned token; `mask + random` must be at most 1, and the rest of the time the original token is shown |
"
    };
}
pub(crate) use corruption_doc;

impl Corruption {
    /// Reads `mask` and `random` (each in `[0, 1]`, their sum at most 1).
    pub(crate) fn read(params: &mut Params, owner: &str) -> Result<Self> {
        let mask = params.f64_in("mask", 0.8, 0.0, 1.0)?;
        let random = params.f64_in("random", 0.1, 0.0, 1.0)?;
        if mask + random > 1.0 + 1e-12 {
            return Err(Error::msg(format!(
                "{owner}: parameters `mask` = {mask} and `random` = {random} add up to {}, \
                 more than 1 (they are probabilities of exclusive outcomes; the rest, \
                 1 - mask - random, is the probability of keeping the original token)",
                mask + random
            )));
        }
        Ok(Corruption { mask, random })
    }

    /// Fails when random tokens may be needed but the vocabulary has no learned token.
    pub(crate) fn check_vocab(&self, owner: &str, input: &TokenSeq) -> Result<()> {
        if self.random > 0.0 && input.vocab_size <= SPECIAL as usize {
            return Err(Error::msg(format!(
                "{owner}: the vocabulary has {} ids, all of them reserved (ids below {SPECIAL}), \
                 so there is no learned token to draw for `random` = {}; set `random = 0`",
                input.vocab_size, self.random
            )));
        }
        Ok(())
    }

    /// Draws one decision.
    pub(crate) fn decide(&self, rng: &mut Rng) -> Shown {
        let u = rng.uniform();
        if u < self.mask {
            Shown::Mask
        } else if u < self.mask + self.random {
            Shown::Random
        } else {
            Shown::Keep
        }
    }

    /// The flagged id shown at a selected position holding `original` (unflagged).
    pub(crate) fn show(shown: Shown, original: u32, input: &TokenSeq, rng: &mut Rng) -> u32 {
        TARGET
            | match shown {
                Shown::Mask => MASK,
                Shown::Random => input.random_token(rng),
                Shown::Keep => original,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::plugin;
    use pretext_plugin::abi;
    use pretext_plugin::testing::{AugmentationInstance, Buffer};
    use pretext_plugin::tokens::{CLS, PAD, SEP, UNK};
    use pretext_plugin::{ImageShape, Value};

    const NAMES: [&str; 4] = ["token_mask", "span_mask", "token_delete", "token_swap"];

    #[test]
    fn entry_lists_four_token_augmentations() {
        let plugin = plugin();
        let info = plugin.info();
        assert_eq!(pretext_plugin_entry(), info as *const _);
        assert_eq!(info.abi_version, abi::ABI_VERSION);
        assert_eq!(plugin.name(), "pretext-augment-text");
        assert_eq!(plugin.version(), env!("CARGO_PKG_VERSION"));
        assert_eq!(plugin.sdk_version(), pretext_plugin::SDK_VERSION);
        assert_eq!(info.n_objectives, 0);
        assert_eq!(info.n_augmentations, 4);
        assert_eq!(plugin.augmentation_names(), NAMES);
        // SAFETY: the strings point to 'static data of this crate.
        unsafe {
            for a in plugin.augmentations() {
                assert_eq!(a.modality, abi::MODALITY_TOKENS, "{}", a.name.as_str());
                assert!(!a.summary.as_str().is_empty(), "{}", a.name.as_str());
                let doc = a.params_doc.as_str();
                assert!(
                    doc.starts_with("| key | type | default | meaning |\n|---|---|---|---|\n"),
                    "{doc}"
                );
            }
        }
    }

    #[test]
    fn abi_create_output_shape_apply_destroy() {
        let mask = plugin().augmentation("token_mask");
        let create = |prob: (&str, f64)| {
            AugmentationInstance::create(mask, &[(prob.0, Value::Float(prob.1))])
        };

        // A bad parameter is reported through `set_error`.
        let err = create(("prob", 0.0)).err().unwrap();
        assert_eq!(err.code, abi::PTX_ERROR);
        assert!(
            err.message.contains("token_mask: parameter `prob` = 0"),
            "{err}"
        );
        // So is an unknown key (the trampoline calls `Params::finish`).
        let err = create(("probability", 0.5)).err().unwrap();
        assert_eq!(err.code, abi::PTX_ERROR);
        assert!(
            err.message.contains("unknown parameter `probability`"),
            "{err}"
        );

        let inst = create(("prob", 1.0)).unwrap_or_else(|f| panic!("{f}"));
        let mut input: Vec<u32> = vec![CLS, 10, 11, 12, SEP, PAD, PAD, PAD];
        let ib = Buffer::tokens(&mut input, 1000);
        let ob = inst.output_shape(&ib).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(
            (ob.dtype, ob.rank, ob.shape),
            (abi::DTYPE_U32, 2, [8, 1000, 0, 0])
        );
        let mut output = vec![u32::MAX; 8];
        inst.apply(5, &ib, &mut Buffer::tokens(&mut output, 1000))
            .unwrap_or_else(|f| panic!("{f}"));
        // prob = 1: every learned token is a target; the specials are untouched.
        assert_eq!(output[0], CLS);
        assert_eq!(&output[4..], &[SEP, PAD, PAD, PAD]);
        for (i, &o) in output[1..4].iter().enumerate() {
            assert!(o & TARGET != 0, "position {}: {o:#x}", i + 1);
            let seen = tokens::id(o);
            assert!(seen == MASK || seen >= SPECIAL, "{seen}");
        }
        // An image buffer is refused, not misread.
        let mut pixels = vec![0.0f32; 8];
        let one_row = ImageShape {
            channels: 1,
            height: 1,
            width: 8,
        };
        let err = inst
            .apply(
                5,
                &Buffer::image(one_row, &mut pixels),
                &mut Buffer::tokens(&mut output, 1000),
            )
            .unwrap_err();
        assert_eq!(err.code, abi::PTX_ERROR);
        assert!(
            err.message.contains("expected a u32 token sequence"),
            "{err}"
        );
        // Dropping the instance calls the exported `destroy`.
        drop(inst);
    }

    #[test]
    fn fixed_eligible_and_movable() {
        for s in [PAD, UNK, CLS, SEP, MASK] {
            assert!(is_fixed(s) && !is_eligible(s), "{s}");
            assert!(!is_fixed(s | TARGET) && !is_eligible(s | TARGET), "{s}");
        }
        assert!(is_eligible(SPECIAL) && !is_fixed(SPECIAL));
        assert!(!is_eligible(SPECIAL | TARGET) && !is_fixed(SPECIAL | TARGET));
    }

    #[test]
    fn corruption_needs_learned_tokens_for_random() {
        let c = Corruption {
            mask: 0.8,
            random: 0.1,
        };
        let ids = [CLS, 7];
        let tiny = TokenSeq {
            ids: &ids,
            vocab_size: 5,
        };
        let err = c.check_vocab("token_mask", &tiny).unwrap_err().to_string();
        assert!(
            err.contains("`random` = 0.1") && err.contains("5 ids"),
            "{err}"
        );
        let no_random = Corruption {
            mask: 0.9,
            random: 0.0,
        };
        no_random.check_vocab("token_mask", &tiny).unwrap();
        let ok = TokenSeq {
            ids: &ids,
            vocab_size: 6,
        };
        c.check_vocab("token_mask", &ok).unwrap();
    }
}
