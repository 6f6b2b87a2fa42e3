//! Representation-health metrics for the collapse monitor: spread of L2-normalised
//! embeddings, effective rank (Roy & Vetterli, 2007), and alignment/uniformity (Wang & Isola,
//! 2020). All work on host copies of small monitor sets (≤ 1024 × d).

/// L2-normalise each row of a row-major `(n, d)` matrix.
pub fn normalize_rows(emb: &[f32], d: usize) -> Vec<f64> {
    let mut out: Vec<f64> = emb.iter().map(|&v| v as f64).collect();
    for row in out.chunks_mut(d) {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    out
}

/// Mean over dimensions of the std of L2-normalised embeddings (→ 0 when every sample maps
/// to the same direction; about 1/√d when spread uniformly).
pub fn normalized_std(emb: &[f32], d: usize) -> f64 {
    let n = emb.len() / d;
    if n < 2 {
        return 0.0;
    }
    let x = normalize_rows(emb, d);
    (0..d)
        .map(|j| {
            let mean = (0..n).map(|i| x[i * d + j]).sum::<f64>() / n as f64;
            let var = (0..n).map(|i| (x[i * d + j] - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            var.sqrt()
        })
        .sum::<f64>()
        / d as f64
}

/// Eigenvalues of a symmetric `n x n` matrix, in no particular order: `a` holds it row-major
/// and only its upper triangle is read. nalgebra's Householder reduction to tridiagonal form
/// and implicit QR with Wilkinson shifts, eigenvalues only. A matrix with a non-finite entry
/// has NaN eigenvalues (the iteration is only run on finite values).
pub fn symmetric_eigenvalues(a: Vec<f64>, n: usize) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    if a.iter().any(|v| !v.is_finite()) {
        return vec![f64::NAN; n];
    }
    // Read column-major, `a` is the transpose, whose lower triangle (the part nalgebra reads)
    // is the upper triangle of `a`.
    let m = nalgebra::DMatrix::from_vec(n, n, a);
    m.symmetric_eigenvalues().iter().copied().collect()
}

/// Effective rank of the (centred) embeddings: `exp(H(p))` with `p` the normalised singular
/// values. Between 1 (collapsed to a line) and `min(n, d)`.
pub fn effective_rank(emb: &[f32], d: usize) -> f64 {
    let n = emb.len() / d;
    if n < 2 {
        return 0.0;
    }
    let mean: Vec<f64> = (0..d)
        .map(|j| (0..n).map(|i| emb[i * d + j] as f64).sum::<f64>() / n as f64)
        .collect();
    // Each row of the upper triangle on its own task, summed over samples in order.
    use rayon::prelude::*;
    let centred: Vec<f64> = (0..n * d).map(|k| emb[k] as f64 - mean[k % d]).collect();
    let mut cov = vec![0f64; d * d];
    cov.par_chunks_mut(d).enumerate().for_each(|(a, out)| {
        for row in centred.chunks(d) {
            let ra = row[a];
            for b in a..d {
                out[b] += ra * row[b];
            }
        }
    });
    // Only the upper triangle is filled: all that `symmetric_eigenvalues` reads.
    let sv: Vec<f64> = symmetric_eigenvalues(cov, d)
        .into_iter()
        .map(|l| l.max(0.0).sqrt())
        .collect();
    let total: f64 = sv.iter().sum();
    if total <= 0.0 {
        return 1.0;
    }
    let h: f64 = sv
        .iter()
        .filter(|&&s| s > 0.0)
        .map(|s| s / total)
        .map(|p| -p * p.ln())
        .sum();
    h.exp()
}

/// Alignment: mean squared distance between the normalised embeddings of two views of the
/// same samples (lower is better).
pub fn alignment(a: &[f32], b: &[f32], d: usize) -> f64 {
    let (x, y) = (normalize_rows(a, d), normalize_rows(b, d));
    let n = x.len() / d;
    (0..n)
        .map(|i| {
            (0..d)
                .map(|j| (x[i * d + j] - y[i * d + j]).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n.max(1) as f64
}

/// Uniformity: `log mean exp(-2 ‖xᵢ - xⱼ‖²)` over pairs of normalised embeddings (lower is
/// more uniform; 0 when collapsed).
pub fn uniformity(emb: &[f32], d: usize) -> f64 {
    let x = normalize_rows(emb, d);
    let n = x.len() / d;
    if n < 2 {
        return 0.0;
    }
    // Rows in parallel, each row's pairs in order, rows concatenated in order: the same
    // terms (and sum) on any number of threads.
    use rayon::prelude::*;
    let terms: Vec<f64> = (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let x = &x;
            (i + 1..n).map(move |j| {
                let dist: f64 = (0..d).map(|k| (x[i * d + k] - x[j * d + k]).powi(2)).sum();
                -2.0 * dist
            })
        })
        .collect();
    let m = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + (terms.iter().map(|t| (t - m).exp()).sum::<f64>() / terms.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eigenvalues of a random symmetric matrix keep its trace and Frobenius norm, and match
    /// a matrix built from known eigenvalues (Q diag(λ) Qᵀ with a Householder Q).
    #[test]
    fn eigenvalues_of_random_and_constructed_matrices() {
        let n = 12;
        let mut rng = pretext_plugin::Rng::new(5);
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                let x = rng.normal();
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
        }
        let ev = symmetric_eigenvalues(a.clone(), n);
        let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
        let frob: f64 = a.iter().map(|x| x * x).sum();
        assert!((ev.iter().sum::<f64>() - trace).abs() < 1e-9);
        assert!((ev.iter().map(|x| x * x).sum::<f64>() - frob).abs() < 1e-8);
        // Q = I - 2 u uᵀ / (uᵀu) is orthogonal; Q diag(λ) Qᵀ has eigenvalues λ.
        let lambda: Vec<f64> = (0..n).map(|i| i as f64 * 1.5 - 4.0).collect();
        let u: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let uu: f64 = u.iter().map(|x| x * x).sum();
        let q = |i: usize, j: usize| f64::from(u8::from(i == j)) - 2.0 * u[i] * u[j] / uu;
        let mut m = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                m[i * n + j] = (0..n).map(|k| q(i, k) * lambda[k] * q(j, k)).sum();
            }
        }
        let mut got = symmetric_eigenvalues(m, n);
        got.sort_by(f64::total_cmp);
        for (g, w) in got.iter().zip(&lambda) {
            assert!((g - w).abs() < 1e-9, "{got:?} vs {lambda:?}");
        }
    }

    #[test]
    fn eigenvalues_of_a_known_matrix() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let mut ev = symmetric_eigenvalues(vec![2.0, 1.0, 1.0, 2.0], 2);
        ev.sort_by(f64::total_cmp);
        assert!(
            (ev[0] - 1.0).abs() < 1e-9 && (ev[1] - 3.0).abs() < 1e-9,
            "{ev:?}"
        );
        let mut ev = symmetric_eigenvalues(vec![4.0, 1.0, 0.0, 1.0, 3.0, 1.0, 0.0, 1.0, 2.0], 3);
        ev.sort_by(f64::total_cmp);
        // Trace 9 and determinant 18 are preserved by the eigenvalues.
        assert!((ev.iter().sum::<f64>() - 9.0).abs() < 1e-9);
        assert!((ev.iter().product::<f64>() - 18.0).abs() < 1e-9);
    }

    /// Sorted eigenvalues of `a`, checked against `want` (sorted) within `rel` of the largest.
    fn assert_eigenvalues(a: Vec<f64>, n: usize, want: &[f64], rel: f64) {
        let mut got = symmetric_eigenvalues(a, n);
        got.sort_by(f64::total_cmp);
        let mut want = want.to_vec();
        want.sort_by(f64::total_cmp);
        let scale = want.iter().fold(0f64, |m, w| m.max(w.abs()));
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= rel * scale, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn eigenvalues_of_diagonal_and_rotated_matrices() {
        // A diagonal matrix: its diagonal, exactly.
        let diag = [3.0, -1.0, 0.0, 2.5, 1e-3];
        let n = diag.len();
        let mut a = vec![0f64; n * n];
        for (i, v) in diag.iter().enumerate() {
            a[i * n + i] = *v;
        }
        assert_eigenvalues(a, n, &diag, 0.0);
        // R diag(λ) Rᵀ with R a product of plane rotations has eigenvalues λ.
        let lambda = [4.0, 3.0, 2.0, 1.0, -0.5];
        let mut r = vec![0f64; n * n];
        for i in 0..n {
            r[i * n + i] = 1.0;
        }
        for (p, q, angle) in [(0, 1, 0.3f64), (1, 3, -1.1), (2, 4, 0.7), (0, 4, 2.0)] {
            let (sin, cos) = angle.sin_cos();
            for row in r.chunks_mut(n) {
                let (x, y) = (row[p], row[q]);
                (row[p], row[q]) = (cos * x - sin * y, sin * x + cos * y);
            }
        }
        let mut m = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                m[i * n + j] = (0..n)
                    .map(|k| r[i * n + k] * lambda[k] * r[j * n + k])
                    .sum();
            }
        }
        assert_eigenvalues(m, n, &lambda, 1e-12);
        // Non-finite entries give NaN, not a hang or a panic.
        let ev = symmetric_eigenvalues(vec![1.0, f64::NAN, f64::NAN, 1.0], 2);
        assert!(ev.len() == 2 && ev.iter().all(|v| v.is_nan()), "{ev:?}");
        assert!(symmetric_eigenvalues(Vec::new(), 0).is_empty());
    }

    #[test]
    fn effective_rank_of_a_rank_k_embedding() {
        // Samples ±c_i·h_i along k rows h_i of an 8 x 8 Hadamard matrix (orthogonal, entries
        // ±1, so every value is exact in f32): centred, with singular values proportional to
        // c_i, so the effective rank is exp(H(c / Σc)). The d - k zero eigenvalues come out at
        // the solver's rounding level (~ε·λ_max), and their square roots still weigh ~1e-7
        // in H: hence the tolerance.
        let d = 8;
        let hadamard = |i: usize, j: usize| {
            if (i & j).count_ones().is_multiple_of(2) {
                1.0f32
            } else {
                -1.0
            }
        };
        let embed = |c: &[f32]| -> Vec<f32> {
            let mut emb = Vec::new();
            for _rep in 0..3 {
                for (i, &ci) in c.iter().enumerate() {
                    for sign in [1.0f32, -1.0] {
                        emb.extend((0..d).map(|j| sign * ci * hadamard(i + 1, j)));
                    }
                }
            }
            emb
        };
        for k in 1..=5 {
            let got = effective_rank(&embed(&vec![2.0; k]), d);
            assert!((got - k as f64).abs() < 1e-5 * k as f64, "k = {k}: {got}");
        }
        let c = [1.0f32, 2.0, 3.0, 5.0];
        let total: f64 = c.iter().map(|&x| x as f64).sum();
        let want = c
            .iter()
            .map(|&x| x as f64 / total)
            .map(|p| -p * p.ln())
            .sum::<f64>()
            .exp();
        let got = effective_rank(&embed(&c), d);
        assert!((got - want).abs() < 1e-5 * want, "{got} vs {want}");
    }

    /// A full-rank embedding keeps the effective rank the hand-written EISPACK solver (tred2 +
    /// tql2) gave before nalgebra replaced it.
    #[test]
    fn effective_rank_matches_the_previous_solver() {
        let mut rng = pretext_plugin::Rng::new(7);
        let (n, d) = (64, 8);
        let emb: Vec<f32> = (0..n * d)
            .map(|k| (rng.normal() * (1.0 + (k % d) as f64)) as f32)
            .collect();
        let got = effective_rank(&emb, d);
        let before = 6.801696932879186;
        assert!((got - before).abs() < 1e-9 * before, "{got} vs {before}");
    }

    #[test]
    fn collapsed_and_spread_embeddings() {
        let d = 4;
        // Every sample identical: no spread, rank 1 (degenerate), uniformity 0.
        let same: Vec<f32> = (0..40).map(|i| [1.0, 2.0, 3.0, 4.0][i % 4]).collect();
        assert!(normalized_std(&same, d) < 1e-9);
        assert!((uniformity(&same, d)).abs() < 1e-12);
        // Samples along ±each of the 4 axes (centred): full effective rank 4, positive spread.
        let axes: Vec<f32> = (0..16 * d)
            .map(|i| {
                let (sample, dim) = (i / d, i % d);
                let sign = if (sample / d) % 2 == 0 { 1.0 } else { -1.0 };
                if dim == sample % d {
                    sign
                } else {
                    0.0
                }
            })
            .collect();
        assert!(
            (effective_rank(&axes, d) - 4.0).abs() < 0.2,
            "{}",
            effective_rank(&axes, d)
        );
        assert!(normalized_std(&axes, d) > 0.3);
        assert!(uniformity(&axes, d) < -1.0);
        // Samples on one line through the origin (±v): effective rank 1.
        let line: Vec<f32> = (0..40)
            .map(|i| if (i / 4) % 2 == 0 { 1.0 } else { -1.0 } * (i % 4 + 1) as f32)
            .collect();
        assert!((effective_rank(&line, d) - 1.0).abs() < 1e-6);
        // Alignment of identical views is 0; of opposite views 4.
        assert!(alignment(&axes, &axes, d).abs() < 1e-12);
        let neg: Vec<f32> = axes.iter().map(|v| -v).collect();
        assert!((alignment(&axes, &neg, d) - 4.0).abs() < 1e-9);
    }
}
