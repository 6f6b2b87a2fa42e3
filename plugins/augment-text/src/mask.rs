//! `token_mask`: the masked-language-model corruption of BERT (Devlin et al., *BERT:
//! Pre-training of Deep Bidirectional Transformers for Language Understanding*, NAACL 2019,
//! section 3.1).
//!
//! Each eligible position (an unflagged learned token) is selected independently with
//! probability `prob`. A selected position becomes a prediction target (its id carries
//! [`TARGET`](pretext_plugin::tokens::TARGET)) and shows the encoder `[MASK]` with probability
//! `mask`, a uniformly random learned token with probability `random`, and its own token
//! otherwise (BERT's 80 / 10 / 10 split by default).
//!
//! Unlike plain Bernoulli selection, every sequence that has an eligible position gets at
//! least one target: when the draws select none, one eligible position is chosen uniformly
//! (so a short passage still contributes to the loss). For sequences of `n` eligible tokens
//! this adds a target with probability `(1 - prob)^n`, e.g. 3·10⁻⁴ for 50 tokens at 0.15.

use pretext_plugin::{Params, Result, Rng, TokenAugmentation, TokenSeq};

use crate::{check_lengths, corruption_doc, is_eligible, read_prob, Corruption};

/// BERT masking of single tokens.
#[derive(Debug, Clone)]
pub struct TokenMask {
    prob: f64,
    corruption: Corruption,
}

impl TokenAugmentation for TokenMask {
    const NAME: &'static str = "token_mask";
    const SUMMARY: &'static str =
        "BERT masking: pick tokens as targets, show [MASK] / a random token / the token 80/10/10";
    const PARAMS_DOC: &'static str = concat!(
        "\
| key | type | default | meaning |
|---|---|---|---|
| `prob` | float in (0, 1] | 0.15 | probability that a token is selected as a prediction target (at least one per sequence that has a learned token) |
",
        corruption_doc!()
    );

    fn new(params: &mut Params) -> Result<Self> {
        let prob = read_prob(
            params,
            Self::NAME,
            "prob",
            0.15,
            "the probability that a token is selected as a target",
        )?;
        let corruption = Corruption::read(params, Self::NAME)?;
        Ok(TokenMask { prob, corruption })
    }

    fn apply(&self, rng: &mut Rng, input: TokenSeq, output: &mut [u32]) -> Result<()> {
        check_lengths(Self::NAME, &input, output)?;
        self.corruption.check_vocab(Self::NAME, &input)?;
        output.copy_from_slice(input.ids);
        let mut eligible = 0usize;
        let mut selected = Vec::new();
        for (i, &x) in input.ids.iter().enumerate() {
            if is_eligible(x) {
                eligible += 1;
                if rng.chance(self.prob) {
                    selected.push(i);
                }
            }
        }
        if selected.is_empty() && eligible > 0 {
            let k = rng.below(eligible as u64) as usize;
            let i = (0..input.ids.len())
                .filter(|&i| is_eligible(input.ids[i]))
                .nth(k)
                .expect("k < number of eligible positions");
            selected.push(i);
        }
        for i in selected {
            let shown = self.corruption.decide(rng);
            output[i] = Corruption::show(shown, input.ids[i], &input, rng);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::is_fixed;
    use crate::testutil::{
        check_determinism, check_length_mismatch, check_nothing_to_do, create, f, flagged_sample,
        make, run, sample,
    };
    use pretext_plugin::tokens::{self, CLS, MASK, PAD, SEP, SPECIAL, TARGET};

    /// Checks the invariants of one masked sequence and returns (eligible, targets, shown
    /// `[MASK]`, shown unchanged).
    fn check_one(input: &[u32], out: &[u32]) -> (usize, usize, usize, usize) {
        assert_eq!(input.len(), out.len());
        let (mut eligible, mut targets, mut masked, mut kept) = (0, 0, 0, 0);
        for (&x, &o) in input.iter().zip(out) {
            if !is_eligible(x) {
                // Specials, PAD and earlier targets (with their flags) are untouched.
                assert_eq!(o, x, "{input:?}\n{out:?}");
                continue;
            }
            eligible += 1;
            if o == x {
                continue;
            }
            assert_eq!(o & TARGET, TARGET, "changed but not flagged: {x} -> {o:#x}");
            targets += 1;
            let seen = tokens::id(o);
            assert!(seen == MASK || seen >= SPECIAL, "shows special {seen}");
            masked += usize::from(seen == MASK);
            kept += usize::from(seen == x);
        }
        (eligible, targets, masked, kept)
    }

    #[test]
    fn bert_rates_over_many_sequences() {
        let aug = make::<TokenMask>(&[]);
        let (mut eligible, mut targets, mut masked, mut kept) = (0, 0, 0, 0);
        for seed in 0..2000 {
            let input = sample(seed);
            let out = run(&aug, seed, &input);
            let (e, t, m, k) = check_one(&input, &out);
            assert!(t >= 1, "seed {seed}: no target");
            eligible += e;
            targets += t;
            masked += m;
            kept += k;
        }
        let rate = targets as f64 / eligible as f64;
        assert!((rate - 0.15).abs() < 0.005, "selected {rate}");
        let (m, k) = (masked as f64 / targets as f64, kept as f64 / targets as f64);
        let r = 1.0 - m - k;
        assert!((m - 0.8).abs() < 0.015, "[MASK] {m}");
        assert!((k - 0.1).abs() < 0.012, "unchanged {k}");
        assert!((r - 0.1).abs() < 0.012, "random {r}");
    }

    #[test]
    fn custom_rates() {
        let aug = make::<TokenMask>(&[("prob", f(0.4)), ("mask", f(0.5)), ("random", f(0.0))]);
        let (mut eligible, mut targets, mut masked, mut kept) = (0, 0, 0, 0);
        for seed in 0..500 {
            let input = sample(seed);
            let (e, t, m, k) = check_one(&input, &run(&aug, seed, &input));
            eligible += e;
            targets += t;
            masked += m;
            kept += k;
        }
        let rate = targets as f64 / eligible as f64;
        assert!((rate - 0.4).abs() < 0.015, "selected {rate}");
        assert_eq!(masked + kept, targets, "random = 0 showed random tokens");
        let m = masked as f64 / targets as f64;
        assert!((m - 0.5).abs() < 0.025, "[MASK] {m}");
    }

    #[test]
    fn prob_one_selects_every_eligible_token() {
        let aug = make::<TokenMask>(&[("prob", f(1.0)), ("mask", f(1.0)), ("random", f(0.0))]);
        for seed in 0..20 {
            let input = flagged_sample(seed);
            let out = run(&aug, seed, &input);
            for (&x, &o) in input.iter().zip(&out) {
                if is_eligible(x) {
                    assert_eq!(o, MASK | TARGET);
                } else {
                    assert_eq!(o, x);
                }
            }
        }
    }

    #[test]
    fn specials_pad_and_flags_are_preserved() {
        let aug = make::<TokenMask>(&[("prob", f(0.5))]);
        for seed in 0..300 {
            let input = flagged_sample(seed);
            let out = run(&aug, seed, &input);
            check_one(&input, &out);
            for (&x, &o) in input.iter().zip(&out) {
                if is_fixed(x) || x & TARGET != 0 {
                    assert_eq!(o, x);
                }
            }
            assert_eq!(out[0], CLS);
            assert_eq!(*out.last().unwrap(), PAD);
        }
    }

    #[test]
    fn at_least_one_target_when_there_is_a_learned_token() {
        let aug = make::<TokenMask>(&[("prob", f(0.001))]);
        let mut positions = [0usize; 3];
        for seed in 0..600 {
            let input = [CLS, 10, SEP, 11, 12, SEP, PAD, PAD];
            let out = run(&aug, seed, &input);
            let targets: Vec<usize> = (0..8).filter(|&i| out[i] & TARGET != 0).collect();
            assert!(!targets.is_empty(), "seed {seed}: {out:?}");
            if targets.len() == 1 {
                let k = [1, 3, 4].iter().position(|&p| p == targets[0]).unwrap();
                positions[k] += 1;
            }
            check_one(&input, &out);
        }
        // The fallback target is uniform over the eligible positions.
        for n in positions {
            assert!((150..250).contains(&n), "{positions:?}");
        }
        // A single learned token is always the target.
        for seed in 0..50 {
            let out = run(&aug, seed, &[CLS, 42, SEP, PAD]);
            assert!(out[1] & TARGET != 0, "seed {seed}: {out:?}");
        }
        check_nothing_to_do(&aug);
    }

    #[test]
    fn deterministic_and_length_checked() {
        let aug = make::<TokenMask>(&[]);
        check_determinism(&aug);
        check_length_mismatch(&aug);
    }

    #[test]
    fn parameter_errors() {
        let err = create::<TokenMask>(&[("prob", f(0.0))]).unwrap_err();
        assert!(
            err.contains("token_mask: parameter `prob` = 0 is out of range"),
            "{err}"
        );
        let err = create::<TokenMask>(&[("prob", f(1.5))]).unwrap_err();
        assert!(err.contains("`prob` = 1.5 is out of range"), "{err}");
        let err = create::<TokenMask>(&[("prob", f(f64::NAN))]).unwrap_err();
        assert!(err.contains("`prob` = NaN"), "{err}");
        let err = create::<TokenMask>(&[("mask", f(0.9)), ("random", f(0.2))]).unwrap_err();
        assert!(
            err.contains("token_mask: parameters `mask` = 0.9 and `random` = 0.2 add up to"),
            "{err}"
        );
        let err = create::<TokenMask>(&[("random", f(-0.1))]).unwrap_err();
        assert!(err.contains("`random` = -0.1 is out of range"), "{err}");
        let err = create::<TokenMask>(&[("mask", f(1.1))]).unwrap_err();
        assert!(err.contains("`mask` = 1.1 is out of range"), "{err}");
        let err = create::<TokenMask>(&[("probb", f(0.2))]).unwrap_err();
        assert!(
            err.contains("unknown parameter `probb` (did you mean `prob`?)"),
            "{err}"
        );
        // Exactly 1 is allowed (no token is shown unchanged).
        create::<TokenMask>(&[("mask", f(0.9)), ("random", f(0.1))]).unwrap();
        create::<TokenMask>(&[("mask", f(0.0)), ("random", f(0.0))]).unwrap();
    }
}
