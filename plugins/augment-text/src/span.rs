//! `span_mask`: the span masking of SpanBERT (Joshi et al., *SpanBERT: Improving
//! Pre-training by Representing and Predicting Spans*, TACL 2020, section 3.1).
//!
//! Spans of contiguous eligible positions (unflagged learned tokens) are selected until
//! `budget = max(1, round(prob · n))` of the `n` eligible positions are: each span's length is
//! drawn from a geometric distribution `P(ℓ) = p (1 - p)^(ℓ - 1)` *truncated* at `max_span`
//! (lengths above it are impossible and the rest renormalised, as in the paper's code; with
//! the defaults `p = 0.2`, `max_span = 10` the mean is 3.8, the paper's figure), and its start
//! is a uniformly random eligible position not yet selected. A span then runs right from its
//! start and stops early at a special token, at an earlier target, at an already selected
//! position or when the budget is reached, so spans never cross a special token, never
//! overlap, and exactly `budget` positions are selected. Unlike the paper, lengths count
//! tokens, not whole words.
//!
//! Each span gets one decision, shared by all its positions (as in the paper): `[MASK]`
//! everywhere with probability `mask`, a random learned token at each position with
//! probability `random`, the original tokens otherwise. Every position of the span becomes a
//! prediction target.

use std::ops::Range;

use pretext_plugin::{Error, Params, Result, Rng, TokenAugmentation, TokenSeq};

use crate::{check_lengths, corruption_doc, is_eligible, read_prob, Corruption};

/// SpanBERT masking of contiguous spans.
#[derive(Debug, Clone)]
pub struct SpanMask {
    prob: f64,
    p: f64,
    max_span: usize,
    corruption: Corruption,
}

impl SpanMask {
    /// One span length from the geometric distribution with parameter `p` truncated to
    /// `1..=max_span` (inverse-CDF sampling: one uniform draw, none when the length is fixed).
    pub(crate) fn span_len(&self, rng: &mut Rng) -> usize {
        if self.p >= 1.0 || self.max_span == 1 {
            return 1;
        }
        // P(ℓ ≤ l) = (1 - q^l) / (1 - q^max): the smallest l with q^l < 1 - u (1 - q^max).
        let ln_q = (-self.p).ln_1p();
        let mass = -(self.max_span as f64 * ln_q).exp_m1();
        let u = rng.uniform();
        let x = (-u * mass).ln_1p() / ln_q;
        (x.floor() as usize)
            .saturating_add(1)
            .clamp(1, self.max_span)
    }

    /// The selected spans of `ids`, in the order they were drawn.
    pub(crate) fn spans(&self, rng: &mut Rng, ids: &[u32]) -> Vec<Range<usize>> {
        let eligible = ids.iter().filter(|&&x| is_eligible(x)).count();
        if eligible == 0 {
            return Vec::new();
        }
        let budget = ((self.prob * eligible as f64).round() as usize).clamp(1, eligible);
        let mut taken = vec![false; ids.len()];
        let mut free = eligible;
        let mut spans = Vec::new();
        let mut selected = 0;
        while selected < budget {
            let len = self.span_len(rng).min(budget - selected);
            let k = rng.below(free as u64) as usize;
            let start = (0..ids.len())
                .filter(|&i| is_eligible(ids[i]) && !taken[i])
                .nth(k)
                .expect("k < number of free eligible positions");
            let mut end = start;
            while end < ids.len() && end - start < len && is_eligible(ids[end]) && !taken[end] {
                taken[end] = true;
                end += 1;
            }
            selected += end - start;
            free -= end - start;
            spans.push(start..end);
        }
        spans
    }
}

impl TokenAugmentation for SpanMask {
    const NAME: &'static str = "span_mask";
    const SUMMARY: &'static str =
        "SpanBERT masking: contiguous spans of geometric length as targets, one 80/10/10 decision per span";
    const PARAMS_DOC: &'static str = concat!(
        "\
| key | type | default | meaning |
|---|---|---|---|
| `prob` | float in (0, 1] | 0.15 | fraction of the learned tokens selected: round(prob · n) of n, at least 1 |
| `p` | float in (0, 1] | 0.2 | parameter of the geometric span-length distribution P(l) = p (1 - p)^(l - 1) (mean 1/p before truncation) |
| `max_span` | integer ≥ 1 | 10 | longest span; longer lengths are never drawn (truncation, renormalised) |
",
        corruption_doc!()
    );

    fn new(params: &mut Params) -> Result<Self> {
        let prob = read_prob(
            params,
            Self::NAME,
            "prob",
            0.15,
            "the fraction of tokens selected as targets",
        )?;
        let p = read_prob(
            params,
            Self::NAME,
            "p",
            0.2,
            "the parameter of the geometric span-length distribution",
        )?;
        let max_span = params.usize("max_span", 10)?;
        if max_span == 0 {
            return Err(Error::msg(format!(
                "{}: parameter `max_span` = 0 is out of range: the longest span must be at \
                 least 1 token",
                Self::NAME
            )));
        }
        let corruption = Corruption::read(params, Self::NAME)?;
        Ok(SpanMask {
            prob,
            p,
            max_span,
            corruption,
        })
    }

    fn apply(&self, rng: &mut Rng, input: TokenSeq, output: &mut [u32]) -> Result<()> {
        check_lengths(Self::NAME, &input, output)?;
        self.corruption.check_vocab(Self::NAME, &input)?;
        output.copy_from_slice(input.ids);
        for span in self.spans(rng, input.ids) {
            let shown = self.corruption.decide(rng);
            for i in span {
                output[i] = Corruption::show(shown, input.ids[i], &input, rng);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        check_determinism, check_length_mismatch, check_nothing_to_do, create, f, flagged_sample,
        i, learned, make, run, sample,
    };
    use pretext_plugin::tokens::{self, CLS, MASK, PAD, SEP, TARGET};

    /// Mean of the geometric distribution with parameter `p` truncated to `1..=max`, by
    /// summation.
    fn truncated_mean(p: f64, max: usize) -> f64 {
        let w = |l: usize| p * (1.0 - p).powi(l as i32 - 1);
        let total: f64 = (1..=max).map(w).sum();
        (1..=max).map(|l| l as f64 * w(l)).sum::<f64>() / total
    }

    #[test]
    fn span_lengths_follow_the_truncated_geometric() {
        // The paper's figure for its defaults.
        assert!((truncated_mean(0.2, 10) - 3.8).abs() < 0.01);
        for (p, max) in [(0.2, 10), (0.5, 4), (0.05, 30), (0.2, 1), (1.0, 10)] {
            let aug = make::<SpanMask>(&[("p", f(p)), ("max_span", i(max as i64))]);
            let mut rng = Rng::new(17);
            let n = 200_000;
            let mut hist = vec![0usize; max + 1];
            for _ in 0..n {
                let l = aug.span_len(&mut rng);
                assert!((1..=max).contains(&l), "{l}");
                hist[l] += 1;
            }
            let mean = hist
                .iter()
                .enumerate()
                .map(|(l, &c)| (l * c) as f64)
                .sum::<f64>()
                / n as f64;
            let want = truncated_mean(p, max);
            assert!(
                (mean - want).abs() < 0.01 * want.max(1.0),
                "p {p} max {max}: mean {mean}, want {want}"
            );
            // P(ℓ = 1) = p / (1 - (1 - p)^max).
            let p1 = hist[1] as f64 / n as f64;
            let want1 = p / (1.0 - (1.0 - p).powi(max as i32));
            assert!(
                (p1 - want1).abs() < 0.005,
                "p {p} max {max}: P(1) {p1}, want {want1}"
            );
        }
    }

    #[test]
    fn spans_are_contiguous_disjoint_within_segments_and_meet_the_budget() {
        let aug = make::<SpanMask>(&[]);
        let mut lengths = Vec::new();
        for seed in 0..2000 {
            let ids = flagged_sample(seed);
            let spans = aug.spans(&mut Rng::new(seed), &ids);
            let eligible = ids.iter().filter(|&&x| is_eligible(x)).count();
            let budget = ((0.15 * eligible as f64).round() as usize).max(1);
            let mut covered = vec![false; ids.len()];
            for s in &spans {
                assert!(!s.is_empty() && s.len() <= 10, "{s:?}");
                for i in s.clone() {
                    // No special token, PAD or earlier target inside a span: spans never
                    // cross a special token.
                    assert!(is_eligible(ids[i]), "seed {seed}: {s:?} in {ids:?}");
                    assert!(!covered[i], "seed {seed}: spans overlap at {i}");
                    covered[i] = true;
                }
            }
            assert_eq!(
                covered.iter().filter(|&&c| c).count(),
                budget,
                "seed {seed}"
            );
            lengths.extend(spans.iter().map(|s| s.len()));
        }
        // Spans are cut short by segment ends, earlier targets, other spans and the budget
        // (about 5 tokens in these short sequences), so they are much shorter on average than
        // the sampled lengths, never longer.
        let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
        assert!(
            mean > 1.0 && mean < truncated_mean(0.2, 10),
            "mean span {mean}"
        );
    }

    #[test]
    fn long_text_span_lengths_are_close_to_the_sampled_mean() {
        // One long segment and a small budget: few spans are cut short.
        let aug = make::<SpanMask>(&[("prob", f(0.05))]);
        let mut lengths = Vec::new();
        for seed in 0..300 {
            let mut rng = Rng::new(seed);
            let mut ids = vec![CLS];
            ids.extend((0..1022).map(|_| learned(&mut rng)));
            ids.push(SEP);
            let spans = aug.spans(&mut Rng::new(seed), &ids);
            let total: usize = spans.iter().map(|s| s.len()).sum();
            assert_eq!(total, 51);
            lengths.extend(spans.iter().map(|s| s.len()));
        }
        let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
        let want = truncated_mean(0.2, 10);
        assert!(
            (mean - want).abs() < 0.1 * want,
            "mean span {mean}, want ≈ {want}"
        );
    }

    #[test]
    fn one_decision_per_span_and_targets_flagged() {
        let aug = make::<SpanMask>(&[]);
        let (mut all_mask, mut all_kept, mut random, mut n_spans) = (0, 0, 0, 0);
        for seed in 0..3000 {
            let ids = sample(seed);
            let out = run(&aug, seed, &ids);
            let spans = aug.spans(&mut Rng::new(seed), &ids);
            let mut in_span = vec![false; ids.len()];
            for s in &spans {
                n_spans += 1;
                let shown: Vec<u32> = s.clone().map(|i| out[i]).collect();
                assert!(shown.iter().all(|&o| o & TARGET != 0), "{shown:?}");
                let masks = shown.iter().filter(|&&o| tokens::id(o) == MASK).count();
                let kept = s.clone().filter(|&i| tokens::id(out[i]) == ids[i]).count();
                if masks == s.len() {
                    all_mask += 1;
                } else if kept == s.len() {
                    all_kept += 1;
                } else {
                    // Random tokens: never [MASK], never another special.
                    assert_eq!(masks, 0, "mixed span {shown:?}");
                    assert!(shown.iter().all(|&o| tokens::id(o) >= 5));
                    random += 1;
                }
                s.clone().for_each(|i| in_span[i] = true);
            }
            for (k, (&x, &o)) in ids.iter().zip(&out).enumerate() {
                if !in_span[k] {
                    assert_eq!(o, x, "seed {seed}: changed outside the spans");
                }
            }
        }
        let frac = |c: usize| c as f64 / n_spans as f64;
        assert!((frac(all_mask) - 0.8).abs() < 0.025, "{}", frac(all_mask));
        assert!((frac(all_kept) - 0.1).abs() < 0.018, "{}", frac(all_kept));
        assert!((frac(random) - 0.1).abs() < 0.018, "{}", frac(random));
    }

    #[test]
    fn specials_pad_and_flags_are_preserved() {
        let aug = make::<SpanMask>(&[("prob", f(0.5)), ("p", f(0.1))]);
        for seed in 0..300 {
            let ids = flagged_sample(seed);
            let out = run(&aug, seed, &ids);
            for (&x, &o) in ids.iter().zip(&out) {
                if !is_eligible(x) {
                    assert_eq!(o, x);
                } else if o != x {
                    assert_eq!(o & TARGET, TARGET);
                }
            }
            assert!(out.iter().zip(&ids).any(|(&o, &x)| o != x));
        }
        // The minimal budget is one token, even for a single learned token.
        let tiny = [CLS, 42, SEP, PAD];
        for seed in 0..20 {
            let out = run(&aug, seed, &tiny);
            assert!(out[1] & TARGET != 0);
            assert_eq!((out[0], out[2], out[3]), (CLS, SEP, PAD));
        }
        check_nothing_to_do(&aug);
    }

    #[test]
    fn prob_one_selects_everything_eligible() {
        let aug = make::<SpanMask>(&[("prob", f(1.0)), ("mask", f(1.0)), ("random", f(0.0))]);
        for seed in 0..50 {
            let ids = flagged_sample(seed);
            let out = run(&aug, seed, &ids);
            for (&x, &o) in ids.iter().zip(&out) {
                assert_eq!(o, if is_eligible(x) { MASK | TARGET } else { x });
            }
        }
    }

    #[test]
    fn deterministic_and_length_checked() {
        let aug = make::<SpanMask>(&[]);
        check_determinism(&aug);
        check_length_mismatch(&aug);
    }

    #[test]
    fn parameter_errors() {
        let err = create::<SpanMask>(&[("max_span", i(0))]).unwrap_err();
        assert!(
            err.contains("span_mask: parameter `max_span` = 0 is out of range"),
            "{err}"
        );
        let err = create::<SpanMask>(&[("max_span", i(-3))]).unwrap_err();
        assert!(
            err.contains("`max_span` = -3 must not be negative"),
            "{err}"
        );
        let err = create::<SpanMask>(&[("max_span", f(2.5))]).unwrap_err();
        assert!(err.contains("`max_span` must be an integer"), "{err}");
        let err = create::<SpanMask>(&[("p", f(0.0))]).unwrap_err();
        assert!(
            err.contains("span_mask: parameter `p` = 0 is out of range"),
            "{err}"
        );
        let err = create::<SpanMask>(&[("prob", f(1.5))]).unwrap_err();
        assert!(
            err.contains("parameter `prob` = 1.5 is out of range"),
            "{err}"
        );
        let err = create::<SpanMask>(&[("prob", f(0.0))]).unwrap_err();
        assert!(
            err.contains("parameter `prob` = 0 is out of range"),
            "{err}"
        );
        let err = create::<SpanMask>(&[("mask", f(0.5)), ("random", f(0.6))]).unwrap_err();
        assert!(err.contains("`mask` = 0.5 and `random` = 0.6"), "{err}");
        let err = create::<SpanMask>(&[("max_len", i(3))]).unwrap_err();
        assert!(err.contains("unknown parameter `max_len`"), "{err}");
        create::<SpanMask>(&[("p", f(1.0)), ("max_span", i(1))]).unwrap();
    }
}
