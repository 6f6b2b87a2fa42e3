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

/// Eigenvalues of a symmetric `d x d` matrix (cyclic Jacobi rotations).
pub fn symmetric_eigenvalues(mut a: Vec<f64>, d: usize) -> Vec<f64> {
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let akp = a[k * d + p];
                    let akq = a[k * d + q];
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let apk = a[p * d + k];
                    let aqk = a[q * d + k];
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..d).map(|i| a[i * d + i]).collect()
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
    let mut cov = vec![0f64; d * d];
    for i in 0..n {
        let row: Vec<f64> = (0..d).map(|j| emb[i * d + j] as f64 - mean[j]).collect();
        for a in 0..d {
            for b in a..d {
                cov[a * d + b] += row[a] * row[b];
            }
        }
    }
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
    let mut terms = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let dist: f64 = (0..d).map(|k| (x[i * d + k] - x[j * d + k]).powi(2)).sum();
            terms.push(-2.0 * dist);
        }
    }
    let m = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + (terms.iter().map(|t| (t - m).exp()).sum::<f64>() / terms.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

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
