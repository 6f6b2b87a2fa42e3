//! `token_swap`: random swap, one of the four operations of EDA (Wei & Zou, *EDA: Easy Data
//! Augmentation Techniques for Boosting Performance on Text Classification Tasks*, EMNLP
//! 2019), applied to tokens instead of words.
//!
//! `swaps` times in a row, two distinct movable positions (a learned token or an earlier
//! target; never a special token or `[PAD]`) are drawn uniformly and their ids exchanged, a
//! [`TARGET`](pretext_plugin::tokens::TARGET) flag travelling with its token. Swaps may cross
//! a `[SEP]` (tokens move between segments; the specials stay in place). With fewer than two
//! movable positions the sequence is copied unchanged.

use pretext_plugin::{Params, Result, Rng, TokenAugmentation, TokenSeq};

use crate::{check_lengths, is_fixed};

/// EDA random swap over tokens.
#[derive(Debug, Clone)]
pub struct TokenSwap {
    swaps: usize,
}

impl TokenAugmentation for TokenSwap {
    const NAME: &'static str = "token_swap";
    const SUMMARY: &'static str =
        "EDA random swap: exchange the tokens at two random positions, `swaps` times";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `swaps` | integer ≥ 0 | 1 | number of swaps, each of two distinct random text positions (0 leaves the sequence unchanged) |
";

    fn new(params: &mut Params) -> Result<Self> {
        let swaps = params.usize("swaps", 1)?;
        Ok(TokenSwap { swaps })
    }

    fn apply(&self, rng: &mut Rng, input: TokenSeq, output: &mut [u32]) -> Result<()> {
        check_lengths(Self::NAME, &input, output)?;
        output.copy_from_slice(input.ids);
        let movable: Vec<usize> = (0..input.ids.len())
            .filter(|&i| !is_fixed(input.ids[i]))
            .collect();
        let m = movable.len() as u64;
        if m < 2 {
            return Ok(());
        }
        for _ in 0..self.swaps {
            let a = rng.below(m);
            let b = rng.below(m - 1);
            let b = if b >= a { b + 1 } else { b };
            output.swap(movable[a as usize], movable[b as usize]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        check_determinism, check_length_mismatch, check_nothing_to_do, create, flagged_sample, i,
        make, run, sample,
    };
    use pretext_plugin::tokens::{CLS, PAD, SEP};

    fn sorted(v: &[u32]) -> Vec<u32> {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    }

    #[test]
    fn swaps_preserve_the_multiset_and_touch_few_positions() {
        for swaps in [1usize, 2, 5] {
            let aug = make::<TokenSwap>(&[("swaps", i(swaps as i64))]);
            let mut changed_once = 0;
            for seed in 0..500 {
                let input = flagged_sample(seed);
                let out = run(&aug, seed, &input);
                // Same ids with the same flags, in another order.
                assert_eq!(sorted(&input), sorted(&out), "seed {seed}");
                let changed = input.iter().zip(&out).filter(|(x, o)| x != o).count();
                assert!(changed <= 2 * swaps, "{swaps} swaps changed {changed}");
                for (&x, &o) in input.iter().zip(&out) {
                    if is_fixed(x) {
                        assert_eq!(o, x, "seed {seed}: moved a special token");
                    }
                }
                changed_once += usize::from(changed > 0);
            }
            // Distinct positions of (almost always) distinct tokens: a swap shows.
            assert!(changed_once > 490, "{changed_once}");
        }
    }

    #[test]
    fn one_swap_picks_positions_uniformly() {
        let aug = make::<TokenSwap>(&[]);
        let input = [CLS, 10, 11, 12, SEP, 13, PAD, PAD];
        let mut hits = [0usize; 8];
        for seed in 0..4000 {
            let out = run(&aug, seed, &input);
            let changed: Vec<usize> = (0..8).filter(|&k| out[k] != input[k]).collect();
            assert_eq!(changed.len(), 2, "{out:?}");
            let (a, b) = (changed[0], changed[1]);
            assert_eq!((out[a], out[b]), (input[b], input[a]));
            hits[a] += 1;
            hits[b] += 1;
        }
        // Each of the 4 movable positions is in half of the swaps.
        for k in [1, 2, 3, 5] {
            assert!((1800..2200).contains(&hits[k]), "{hits:?}");
        }
        assert_eq!(hits[0] + hits[4] + hits[6] + hits[7], 0);
    }

    #[test]
    fn zero_swaps_or_one_token_is_identity() {
        let none = make::<TokenSwap>(&[("swaps", i(0))]);
        for seed in 0..20 {
            let input = sample(seed);
            assert_eq!(run(&none, seed, &input), input);
        }
        let aug = make::<TokenSwap>(&[("swaps", i(3))]);
        let single = [CLS, 42, SEP, PAD];
        assert_eq!(run(&aug, 0, &single), single);
        check_nothing_to_do(&aug);
    }

    #[test]
    fn deterministic_and_length_checked() {
        let aug = make::<TokenSwap>(&[("swaps", i(2))]);
        check_determinism(&aug);
        check_length_mismatch(&aug);
    }

    #[test]
    fn parameter_errors() {
        let err = create::<TokenSwap>(&[("swaps", i(-1))]).unwrap_err();
        assert!(
            err.contains("token_swap: parameter `swaps` = -1 must not be negative"),
            "{err}"
        );
        let err = create::<TokenSwap>(&[("swaps", crate::testutil::f(1.5))]).unwrap_err();
        assert!(err.contains("`swaps` must be an integer"), "{err}");
        let err = create::<TokenSwap>(&[("swap", i(2))]).unwrap_err();
        assert!(
            err.contains("unknown parameter `swap` (did you mean `swaps`?)"),
            "{err}"
        );
    }
}
