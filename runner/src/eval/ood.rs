//! Out-of-distribution scoring and its metrics, on host copies of embeddings: AUROC, false
//! positive rate at 95 % true positive rate, class-conditional Mahalanobis scores and
//! k-nearest-neighbour cosine scores. Higher score = more in-distribution throughout.

use super::unit_rows;

/// Area under the ROC curve for separating `pos` (in-distribution) from `neg` (OOD) by
/// score; ties count half (the Mann–Whitney statistic).
pub fn auroc(pos: &[f64], neg: &[f64]) -> f64 {
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> = pos
        .iter()
        .map(|&s| (s, true))
        .chain(neg.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Average ranks (1-based) with ties sharing their mean rank.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += all[i..=j].iter().filter(|x| x.1).count() as f64 * avg;
        i = j + 1;
    }
    let (np, nn) = (pos.len() as f64, neg.len() as f64);
    (rank_sum_pos - np * (np + 1.0) / 2.0) / (np * nn)
}

/// The fraction of OOD samples accepted when the threshold keeps 95 % of in-distribution
/// samples (lower is better).
pub fn fpr_at_95_tpr(pos: &[f64], neg: &[f64]) -> f64 {
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut sorted = pos.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    // The threshold: the score of the in-distribution sample at the 95 % position.
    let k = ((0.95 * pos.len() as f64).ceil() as usize).clamp(1, pos.len());
    let threshold = sorted[k - 1];
    neg.iter().filter(|&&s| s >= threshold).count() as f64 / neg.len() as f64
}

/// Class means and the shared (pooled) covariance of `(n, d)` features, for Mahalanobis
/// scores; the covariance gets `ridge` added on its diagonal before inversion.
pub struct Gaussian {
    d: usize,
    means: Vec<Vec<f64>>,
    precision: Vec<f64>,
}

impl Gaussian {
    pub fn fit(x: &[f32], y: &[u32], classes: usize, d: usize, ridge: f64) -> Option<Gaussian> {
        let n = y.len();
        let mut means = vec![vec![0f64; d]; classes];
        let mut counts = vec![0usize; classes];
        for (row, &c) in x.chunks(d).zip(y) {
            counts[c as usize] += 1;
            for j in 0..d {
                means[c as usize][j] += row[j] as f64;
            }
        }
        for (m, &c) in means.iter_mut().zip(&counts) {
            m.iter_mut().for_each(|v| *v /= c.max(1) as f64);
        }
        let mut cov = vec![0f64; d * d];
        for (row, &c) in x.chunks(d).zip(y) {
            let diff: Vec<f64> = (0..d)
                .map(|j| row[j] as f64 - means[c as usize][j])
                .collect();
            for a in 0..d {
                for b in a..d {
                    cov[a * d + b] += diff[a] * diff[b];
                }
            }
        }
        for a in 0..d {
            for b in a..d {
                cov[a * d + b] /= n.max(1) as f64;
                cov[b * d + a] = cov[a * d + b];
            }
            cov[a * d + a] += ridge;
        }
        let precision = invert_spd(cov, d)?;
        Some(Gaussian {
            d,
            means,
            precision,
        })
    }

    /// `-min_c (x - μ_c)ᵀ Σ⁻¹ (x - μ_c)`: higher = closer to some class.
    pub fn score(&self, x: &[f32]) -> f64 {
        let d = self.d;
        -self
            .means
            .iter()
            .map(|m| {
                let diff: Vec<f64> = (0..d).map(|j| x[j] as f64 - m[j]).collect();
                let mut s = 0.0;
                for a in 0..d {
                    let row: f64 = (0..d).map(|b| self.precision[a * d + b] * diff[b]).sum();
                    s += diff[a] * row;
                }
                s
            })
            .fold(f64::INFINITY, f64::min)
    }
}

/// Inverse of a symmetric positive-definite matrix by Cholesky factorisation; `None` if it is
/// not positive definite.
pub fn invert_spd(a: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = a[i * n + j] - (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum::<f64>();
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    // inv = L⁻ᵀ L⁻¹: solve L Y = I, then Lᵀ X = Y.
    let mut inv = vec![0f64; n * n];
    for col in 0..n {
        let mut y = vec![0f64; n];
        for i in 0..n {
            let rhs = if i == col { 1.0 } else { 0.0 };
            y[i] = (rhs - (0..i).map(|k| l[i * n + k] * y[k]).sum::<f64>()) / l[i * n + i];
        }
        for i in (0..n).rev() {
            let v = (y[i]
                - (i + 1..n)
                    .map(|k| l[k * n + i] * inv[k * n + col])
                    .sum::<f64>())
                / l[i * n + i];
            inv[i * n + col] = v;
        }
    }
    Some(inv)
}

/// Cosine similarity to the `k`-th nearest reference row (both L2-normalised), per query:
/// higher = closer to the reference distribution.
pub fn knn_scores(reference: &[f32], queries: &[f32], d: usize, k: usize) -> Vec<f64> {
    let (r, q) = (unit_rows(reference, d), unit_rows(queries, d));
    let nr = r.len() / d;
    let k = k.clamp(1, nr.max(1));
    q.chunks(d)
        .map(|qi| {
            let mut sims: Vec<f32> = r
                .chunks(d)
                .map(|ri| ri.iter().zip(qi).map(|(a, b)| a * b).sum())
                .collect();
            sims.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            sims[k - 1] as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_by_hand() {
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(auroc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        // One inversion out of four pairs.
        assert_eq!(auroc(&[2.0, 4.0], &[1.0, 3.0]), 0.75);
        // Ties count half.
        assert_eq!(auroc(&[1.0], &[1.0]), 0.5);
        assert_eq!(auroc(&[1.0, 1.0], &[1.0, 0.0]), 0.75);
    }

    #[test]
    fn fpr95_by_hand() {
        // 20 ID scores 1..=20: the threshold keeping 95 % (19 of them) is 2.
        let pos: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(fpr_at_95_tpr(&pos, &[0.0, 1.5, 2.0, 30.0]), 0.5);
        assert_eq!(fpr_at_95_tpr(&pos, &[-1.0]), 0.0);
    }

    #[test]
    fn cholesky_inverse_and_mahalanobis() {
        let a = vec![4.0, 2.0, 2.0, 3.0];
        let inv = invert_spd(a.clone(), 2).unwrap();
        // A · A⁻¹ = I.
        for i in 0..2 {
            for j in 0..2 {
                let v: f64 = (0..2).map(|k| a[i * 2 + k] * inv[k * 2 + j]).sum();
                assert!((v - f64::from(u8::from(i == j))).abs() < 1e-12);
            }
        }
        assert!(invert_spd(vec![1.0, 2.0, 2.0, 1.0], 2).is_none());
        // Two classes at (0,0) and (10,0), unit spread on each axis.
        let x: Vec<f32> = vec![
            -1.0, 0.0, 1.0, 0.0, 0.0, -1.0, 0.0, 1.0, 9.0, 0.0, 11.0, 0.0, 10.0, -1.0, 10.0, 1.0,
        ];
        let y = vec![0, 0, 0, 0, 1, 1, 1, 1];
        let g = Gaussian::fit(&x, &y, 2, 2, 0.0).unwrap();
        // Pooled variance is 0.5 per axis: a point 1 away from a mean has distance 2.
        assert!((g.score(&[1.0, 0.0]) + 2.0).abs() < 1e-9);
        assert!((g.score(&[10.0, 0.0])).abs() < 1e-9);
        assert!(g.score(&[5.0, 5.0]) < g.score(&[1.0, 1.0]));
    }

    #[test]
    fn knn_scores_prefer_the_reference_direction() {
        let reference = vec![1.0, 0.0, 0.9, 0.1];
        let s = knn_scores(&reference, &[2.0, 0.0, 0.0, 1.0], 2, 1);
        assert!((s[0] - 1.0).abs() < 1e-6 && s[1] < 0.2, "{s:?}");
    }
}
