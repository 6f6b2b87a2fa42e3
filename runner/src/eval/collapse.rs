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

/// Eigenvalues of a symmetric `d x d` matrix (row-major): Householder reduction to
/// tridiagonal form, then the implicit QL algorithm with Wilkinson shifts (the EISPACK
/// `tred2`/`tql2` pair, eigenvalues only). O(d³) with a small constant.
pub fn symmetric_eigenvalues(a: Vec<f64>, n: usize) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    let mut v = a;
    let mut diag = vec![0f64; n];
    let mut off = vec![0f64; n];
    // Householder tridiagonalisation (works on the lower triangle, last row first).
    for j in 0..n {
        diag[j] = v[(n - 1) * n + j];
    }
    for i in (1..n).rev() {
        let scale: f64 = (0..i).map(|k| diag[k].abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            off[i] = diag[i - 1];
            for j in 0..i {
                diag[j] = v[(i - 1) * n + j];
                v[i * n + j] = 0.0;
                v[j * n + i] = 0.0;
            }
        } else {
            for k in 0..i {
                diag[k] /= scale;
                h += diag[k] * diag[k];
            }
            let f = diag[i - 1];
            let g = if f > 0.0 { -h.sqrt() } else { h.sqrt() };
            off[i] = scale * g;
            h -= f * g;
            diag[i - 1] = f - g;
            for o in off.iter_mut().take(i) {
                *o = 0.0;
            }
            for j in 0..i {
                let f = diag[j];
                v[j * n + i] = f;
                let mut g = off[j] + v[j * n + j] * f;
                for k in j + 1..i {
                    g += v[k * n + j] * diag[k];
                    off[k] += v[k * n + j] * f;
                }
                off[j] = g;
            }
            let mut f = 0.0;
            for j in 0..i {
                off[j] /= h;
                f += off[j] * diag[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                off[j] -= hh * diag[j];
            }
            for j in 0..i {
                let (f, g) = (diag[j], off[j]);
                for k in j..i {
                    v[k * n + j] -= f * off[k] + g * diag[k];
                }
                diag[j] = v[(i - 1) * n + j];
                v[i * n + j] = 0.0;
            }
        }
        diag[i] = h;
    }
    // The tridiagonal matrix: diagonal v[j][j] (after the reduction), sub-diagonal `off`.
    for j in 0..n {
        diag[j] = v[j * n + j];
    }
    for i in 1..n {
        off[i - 1] = off[i];
    }
    off[n - 1] = 0.0;
    // Implicit QL with shifts.
    let eps = f64::EPSILON;
    let (mut f, mut tst1) = (0.0f64, 0.0f64);
    for l in 0..n {
        tst1 = tst1.max(diag[l].abs() + off[l].abs());
        let mut m = l;
        while m < n - 1 && off[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            for _iter in 0..100 {
                let mut g = diag[l];
                let mut p = (diag[l + 1] - g) / (2.0 * off[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                diag[l] = off[l] / (p + r);
                diag[l + 1] = off[l] * (p + r);
                let dl1 = diag[l + 1];
                let mut h = g - diag[l];
                for d in diag.iter_mut().skip(l + 2) {
                    *d -= h;
                }
                f += h;
                p = diag[m];
                let (mut c, mut c2, mut c3) = (1.0f64, 1.0f64, 1.0f64);
                let el1 = off[l + 1];
                let (mut s, mut s2) = (0.0f64, 0.0f64);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * off[i];
                    h = c * p;
                    r = p.hypot(off[i]);
                    off[i + 1] = s * r;
                    s = off[i] / r;
                    c = p / r;
                    p = c * diag[i] - s * g;
                    diag[i + 1] = h + s * (c * g + s * diag[i]);
                }
                p = -s * s2 * c3 * el1 * off[l] / dl1;
                off[l] = s * p;
                diag[l] = c * p;
                if off[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        diag[l] += f;
        off[l] = 0.0;
    }
    diag
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
    for a in 0..d {
        for b in 0..a {
            cov[a * d + b] = cov[b * d + a];
        }
    }
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
