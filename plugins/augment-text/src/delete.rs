//! `token_delete`: random deletion, one of the four operations of EDA (Wei & Zou, *EDA: Easy
//! Data Augmentation Techniques for Boosting Performance on Text Classification Tasks*,
//! EMNLP 2019), applied to tokens instead of words.
//!
//! Each eligible position (an unflagged learned token) is deleted independently with
//! probability `prob`. The remaining tokens (special tokens and earlier targets included, with
//! their flags) shift left in their original order and `[PAD]` fills the freed positions at
//! the end, so the length stays the same. Special tokens and targets are never deleted, but a
//! special token after a deleted one moves left with the rest (a `[SEP]` keeps closing its
//! segment); a `[CLS]` at the start stays where it is. At least one text token survives: when
//! every one would be deleted (and no earlier target remains), the first eligible token is
//! kept.

use pretext_plugin::tokens::PAD;
use pretext_plugin::{Params, Result, Rng, TokenAugmentation, TokenSeq};

use crate::{check_lengths, is_eligible, is_fixed, read_prob};

/// EDA random deletion over tokens.
#[derive(Debug, Clone)]
pub struct TokenDelete {
    prob: f64,
}

impl TokenAugmentation for TokenDelete {
    const NAME: &'static str = "token_delete";
    const SUMMARY: &'static str =
        "EDA random deletion: drop tokens with a probability, shift the rest left, pad the tail";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `prob` | float in (0, 1] | 0.1 | probability that a learned token is deleted (at least one text token is always kept) |
";

    fn new(params: &mut Params) -> Result<Self> {
        let prob = read_prob(
            params,
            Self::NAME,
            "prob",
            0.1,
            "the probability that a token is deleted",
        )?;
        Ok(TokenDelete { prob })
    }

    fn apply(&self, rng: &mut Rng, input: TokenSeq, output: &mut [u32]) -> Result<()> {
        check_lengths(Self::NAME, &input, output)?;
        let ids = input.ids;
        let mut deleted: Vec<bool> = ids
            .iter()
            .map(|&x| is_eligible(x) && rng.chance(self.prob))
            .collect();
        let text_left = ids.iter().zip(&deleted).any(|(&x, &d)| !d && !is_fixed(x));
        if !text_left {
            if let Some(first) = ids.iter().position(|&x| is_eligible(x)) {
                deleted[first] = false;
            }
        }
        let mut n = 0;
        for (&x, &d) in ids.iter().zip(&deleted) {
            if !d {
                output[n] = x;
                n += 1;
            }
        }
        output[n..].fill(PAD);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        check_determinism, check_length_mismatch, check_nothing_to_do, create, f, flagged_sample,
        make, run, sample,
    };
    use pretext_plugin::tokens::{CLS, MASK, SEP, TARGET};

    /// Checks that `out` is `input` with some eligible tokens removed (order kept) and `[PAD]`
    /// appended; returns the number removed.
    fn removed(input: &[u32], out: &[u32]) -> usize {
        assert_eq!(input.len(), out.len());
        let mut j = 0;
        let mut gone = 0;
        for &x in input {
            if j < out.len() && out[j] == x {
                j += 1;
            } else {
                assert!(
                    is_eligible(x),
                    "deleted a non-eligible {x:#x}:\n{input:?}\n{out:?}"
                );
                gone += 1;
            }
        }
        assert!(out[j..].iter().all(|&o| o == PAD), "tail not PAD: {out:?}");
        assert_eq!(out.len() - j, gone);
        gone
    }

    #[test]
    fn deletes_at_the_rate_keeping_order_and_specials() {
        let aug = make::<TokenDelete>(&[]);
        let (mut eligible, mut gone) = (0, 0);
        for seed in 0..2000 {
            let input = flagged_sample(seed);
            let out = run(&aug, seed, &input);
            gone += removed(&input, &out);
            eligible += input.iter().filter(|&&x| is_eligible(x)).count();
            assert_eq!(out[0], CLS);
            // Every special token and earlier target (flag included) survives, in order.
            let kept = |v: &[u32]| -> Vec<u32> {
                v.iter()
                    .copied()
                    .filter(|&x| !is_eligible(x) && x != PAD)
                    .collect()
            };
            assert_eq!(kept(&input), kept(&out), "seed {seed}");
        }
        let rate = gone as f64 / eligible as f64;
        assert!((rate - 0.1).abs() < 0.005, "deleted {rate}");
    }

    #[test]
    fn keeps_one_text_token() {
        let aug = make::<TokenDelete>(&[("prob", f(1.0))]);
        for seed in 0..20 {
            let input = sample(seed);
            let out = run(&aug, seed, &input);
            removed(&input, &out);
            let first = input.iter().copied().find(|&x| is_eligible(x)).unwrap();
            assert_eq!(out[0], CLS);
            assert_eq!(out[1], first, "{out:?}");
            assert_eq!(out.iter().filter(|&&x| is_eligible(x)).count(), 1);
        }
        // An earlier target counts as text: then every learned token may go.
        let input = [CLS, 10, MASK | TARGET, 11, SEP, PAD];
        assert_eq!(
            run(&aug, 1, &input),
            [CLS, MASK | TARGET, SEP, PAD, PAD, PAD]
        );
        check_nothing_to_do(&aug);
    }

    #[test]
    fn deterministic_and_length_checked() {
        let aug = make::<TokenDelete>(&[("prob", f(0.3))]);
        check_determinism(&aug);
        check_length_mismatch(&aug);
    }

    #[test]
    fn parameter_errors() {
        let err = create::<TokenDelete>(&[("prob", f(0.0))]).unwrap_err();
        assert!(
            err.contains("token_delete: parameter `prob` = 0 is out of range"),
            "{err}"
        );
        let err = create::<TokenDelete>(&[("prob", f(1.5))]).unwrap_err();
        assert!(err.contains("`prob` = 1.5 is out of range"), "{err}");
        let err = create::<TokenDelete>(&[("p", f(0.5))]).unwrap_err();
        assert!(err.contains("unknown parameter `p`"), "{err}");
    }
}
