//! Multi-head scaled dot-product attention as an engine op (forward and backward on the host
//! CPU), plus the small helpers a ViT needs: row tiling (position embeddings) and layer norm.
//!
//! Tokens are rows: `q`, `k`, `v` are `(B·T, H·dh)` with the tokens of one sample contiguous
//! and the heads side by side in the columns. dfdx has no batched attention for runtime
//! shapes, so the op computes `softmax(Q Kᵀ / √dh) V` per (sample, head) itself and registers
//! the exact backward: `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))`,
//! `dQ = dS K / √dh`, `dK = dSᵀ Q / √dh`.

use super::graph::Axis2;
use dfdx::prelude::*;
use rayon::prelude::*;

use super::host::{exp, gemm};
use super::{shape_err, Graph, Result, Tensor};

/// Attention geometry: `batch` samples of `tokens` tokens, `heads` heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
}

/// Samples per parallel task (samples are independent; rayon balances the tasks).
const SAMPLES_PER_TASK: usize = 2;

/// Copy head `hh` of sample `b`'s rows into a contiguous `(T, dh)` buffer.
fn gather(x: &[f32], b: usize, hh: usize, t: usize, width: usize, dh: usize, out: &mut [f32]) {
    for i in 0..t {
        let src = (b * t + i) * width + hh * dh;
        out[i * dh..(i + 1) * dh].copy_from_slice(&x[src..src + dh]);
    }
}

/// Add a contiguous `(T, dh)` buffer into head `hh` of sample-local rows `dst` (`(T, width)`).
fn scatter_add(src: &[f32], hh: usize, t: usize, width: usize, dh: usize, dst: &mut [f32]) {
    for i in 0..t {
        let d = &mut dst[i * width + hh * dh..i * width + (hh + 1) * dh];
        for (a, b) in d.iter_mut().zip(&src[i * dh..(i + 1) * dh]) {
            *a += b;
        }
    }
}

/// Per (sample, head): the attention probabilities `P` (T x T), row-major, for backward.
/// `key_valid` (one flag per row, `B·T`): keys marked `false` (padding) get probability 0.
/// Samples run in parallel; each head is gathered into contiguous buffers first.
fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
    width: usize,
    key_valid: Option<&[bool]>,
) -> (Vec<f32>, Vec<f32>) {
    let (t, h) = (s.tokens, s.heads);
    let dh = width / h;
    let scale = 1.0 / (dh as f32).sqrt();
    let mut out = vec![0f32; q.len()];
    let mut probs = vec![0f32; s.batch * h * t * t];
    let per = SAMPLES_PER_TASK;
    out.par_chunks_mut(per * t * width)
        .zip(probs.par_chunks_mut(per * h * t * t))
        .enumerate()
        .for_each(|(ci, (out_c, probs_c))| {
            {
                let (mut qh, mut kh, mut vh, mut oh) = (
                    vec![0f32; t * dh],
                    vec![0f32; t * dh],
                    vec![0f32; t * dh],
                    vec![0f32; t * dh],
                );
                for (lb, out_b) in out_c.chunks_mut(t * width).enumerate() {
                    let b = ci * per + lb;
                    for hh in 0..h {
                        gather(q, b, hh, t, width, dh, &mut qh);
                        gather(k, b, hh, t, width, dh, &mut kh);
                        gather(v, b, hh, t, width, dh, &mut vh);
                        let p = &mut probs_c[(lb * h + hh) * t * t..][..t * t];
                        // S = Q Kᵀ · scale, then a masked softmax per row, then O = P V.
                        gemm(t, dh, t, p, false, &qh, false, &kh, true, false);
                        for i in 0..t {
                            let row = &mut p[i * t..(i + 1) * t];
                            let mut m = f32::NEG_INFINITY;
                            for (j, r) in row.iter_mut().enumerate() {
                                *r = if key_valid.is_none_or(|kv| kv[b * t + j]) {
                                    *r * scale
                                } else {
                                    f32::NEG_INFINITY
                                };
                                m = m.max(*r);
                            }
                            let mut z = 0.0;
                            for r in row.iter_mut() {
                                // A row with no valid key (never built by the encoders)
                                // attends nowhere.
                                *r = if m.is_finite() { exp(*r - m) } else { 0.0 };
                                z += *r;
                            }
                            let z = if z > 0.0 { 1.0 / z } else { 1.0 };
                            row.iter_mut().for_each(|r| *r *= z);
                        }
                        gemm(t, t, dh, &mut oh, false, p, false, &vh, false, false);
                        scatter_add(&oh, hh, t, width, dh, out_b);
                    }
                }
            }
        });
    (out, probs)
}

#[allow(clippy::too_many_arguments)]
fn backward(
    g_out: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    s: AttnShape,
    width: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (t, h) = (s.tokens, s.heads);
    let dh = width / h;
    let scale = 1.0 / (dh as f32).sqrt();
    let (mut dq, mut dk, mut dv) = (
        vec![0f32; q.len()],
        vec![0f32; k.len()],
        vec![0f32; v.len()],
    );
    let per = SAMPLES_PER_TASK;
    let rows = per * t * width;
    dq.par_chunks_mut(rows)
        .zip(dk.par_chunks_mut(rows))
        .zip(dv.par_chunks_mut(rows))
        .enumerate()
        .for_each(|(ci, ((dq_c, dk_c), dv_c))| {
            {
                let buf = || vec![0f32; t * dh];
                let (mut qh, mut kh, mut vh, mut gh) = (buf(), buf(), buf(), buf());
                let (mut dqh, mut dkh, mut dvh) = (buf(), buf(), buf());
                let mut ds = vec![0f32; t * t];
                let n_local = dq_c.len() / (t * width);
                for lb in 0..n_local {
                    let b = ci * per + lb;
                    let local = lb * t * width..(lb + 1) * t * width;
                    for hh in 0..h {
                        gather(q, b, hh, t, width, dh, &mut qh);
                        gather(k, b, hh, t, width, dh, &mut kh);
                        gather(v, b, hh, t, width, dh, &mut vh);
                        gather(g_out, b, hh, t, width, dh, &mut gh);
                        let p = &probs[(b * h + hh) * t * t..][..t * t];
                        // dV = Pᵀ dO; dP = dO Vᵀ; dS = P ⊙ (dP − Σ_j dP ⊙ P) · scale;
                        // dQ = dS K; dK = dSᵀ Q.
                        gemm(t, t, dh, &mut dvh, false, p, true, &gh, false, false);
                        gemm(t, dh, t, &mut ds, false, &gh, false, &vh, true, false);
                        for i in 0..t {
                            let prow = &p[i * t..(i + 1) * t];
                            let drow = &mut ds[i * t..(i + 1) * t];
                            let sum: f32 = drow.iter().zip(prow).map(|(d, p)| d * p).sum();
                            for (d, p) in drow.iter_mut().zip(prow) {
                                *d = p * (*d - sum) * scale;
                            }
                        }
                        gemm(t, t, dh, &mut dqh, false, &ds, false, &kh, false, false);
                        gemm(t, t, dh, &mut dkh, false, &ds, true, &qh, false, false);
                        scatter_add(&dqh, hh, t, width, dh, &mut dq_c[local.clone()]);
                        scatter_add(&dkh, hh, t, width, dh, &mut dk_c[local.clone()]);
                        scatter_add(&dvh, hh, t, width, dh, &mut dv_c[local.clone()]);
                    }
                }
            }
        });
    (dq, dk, dv)
}

impl Graph {
    /// Multi-head attention of `(B·T, width)` queries, keys and values.
    pub fn attention(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        s: AttnShape,
    ) -> Result<Tensor> {
        self.attention_masked(q, k, v, s, None)
    }

    /// Multi-head attention where keys flagged `false` in `key_valid` (one flag per row,
    /// e.g. padding tokens) receive no attention.
    pub fn attention_masked(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        s: AttnShape,
        key_valid: Option<&[bool]>,
    ) -> Result<Tensor> {
        let (rows, width) = q.shape();
        if k.shape() != (rows, width) || v.shape() != (rows, width) {
            return Err(shape_err(
                "attention",
                format!(
                    "q {:?}, k {:?}, v {:?} differ",
                    q.shape(),
                    k.shape(),
                    v.shape()
                ),
            ));
        }
        if s.heads == 0 || width % s.heads != 0 || rows != s.batch * s.tokens {
            return Err(shape_err(
                "attention",
                format!("{rows}x{width} does not split into {s:?}"),
            ));
        }
        if key_valid.is_some_and(|m| m.len() != rows) {
            return Err(shape_err(
                "attention",
                format!(
                    "key mask of {} flags for {rows} rows",
                    key_valid.map_or(0, |m| m.len())
                ),
            ));
        }
        if !self.fast(&[q, k, v]) {
            return self.attention_generic(q, k, v, s, key_valid);
        }
        let (qv, kv, vv) = (
            super::host::vals(q),
            super::host::vals(k),
            super::host::vals(v),
        );
        let (out, probs) = forward(&qv, &kv, &vv, s, width, key_valid);
        let t = self.host_tensor(out, rows, width);
        Ok(self.custom(&[q, k, v], t, move |g| {
            let (dq, dk, dv) = backward(&g, &qv, &kv, &vv, &probs, s, width);
            vec![Some(dq), Some(dk), Some(dv)]
        }))
    }

    /// Repeat the rows of `x` (`(T, D)`) `times` times: `(times·T, D)` (adds a position
    /// embedding to every sample's tokens).
    pub fn tile_rows(&mut self, x: &Tensor, times: usize) -> Result<Tensor> {
        let (t, d) = x.shape();
        if times == 0 {
            return Err(shape_err("tile_rows", "times must be at least 1"));
        }
        if !self.fast(&[x]) {
            return record!(
                self,
                [x],
                x.broadcast_like::<(usize, usize, usize), Axis<0>>(&(times, t, d))
                    .reshape_like(&(times * t, d))
            );
        }
        let xv = super::host::vals(x);
        let out: Vec<f32> = (0..times).flat_map(|_| xv.iter().copied()).collect();
        let y = self.host_tensor(out, times * t, d);
        Ok(self.custom(&[x], y, move |g| {
            let mut gx = vec![0f32; t * d];
            for chunk in g.chunks(t * d) {
                for (a, b) in gx.iter_mut().zip(chunk) {
                    *a += b;
                }
            }
            vec![Some(gx)]
        }))
    }

    /// Rows `idx` of `x`, in that order (a row may repeat); the backward adds each output
    /// row's gradient into its source row. Used for CLS tokens and MAE's visible patches.
    pub fn select_rows(&mut self, x: &Tensor, idx: &[usize]) -> Result<Tensor> {
        let (r, c) = x.shape();
        if let Some(bad) = idx.iter().find(|&&i| i >= r) {
            return Err(shape_err(
                "select_rows",
                format!("row {bad} of a {r}x{c} tensor"),
            ));
        }
        if !self.fast(&[x]) {
            // Keyed by the indices: fixed selections (CLS tokens) upload once.
            let key = super::graph::content_key(&format!("rows {r} {}", idx.len()), idx);
            return self.gather_rows(x, Some(key), || idx.to_vec());
        }
        let xv = super::host::vals(x);
        let out: Vec<f32> = idx
            .iter()
            .flat_map(|&i| xv[i * c..(i + 1) * c].iter().copied())
            .collect();
        let y = self.host_tensor(out, idx.len(), c);
        let idx = idx.to_vec();
        Ok(self.custom(&[x], y, move |g| {
            let mut gx = vec![0f32; r * c];
            for (k, &i) in idx.iter().enumerate() {
                for (a, b) in gx[i * c..(i + 1) * c]
                    .iter_mut()
                    .zip(&g[k * c..(k + 1) * c])
                {
                    *a += b;
                }
            }
            vec![Some(gx)]
        }))
    }

    /// Attention composed from dfdx's device-generic ops (every device but the CPU fast path):
    /// heads split by reshape/permute, `Q Kᵀ` and `P V` as batched matmuls, softmax over keys;
    /// masked keys get a large negative score (probability 0 after the softmax).
    fn attention_generic(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        s: AttnShape,
        key_valid: Option<&[bool]>,
    ) -> Result<Tensor> {
        let (b, t, h) = (s.batch, s.tokens, s.heads);
        let width = q.shape().1;
        let dh = width / h;
        let scale = 1.0 / (dh as f32).sqrt();
        // `(B, T)` additive key bias: 0 for valid keys, -1e30 for padding (batch data).
        let bias = match key_valid {
            Some(m) => {
                // Keyed by the mask: the blocks of one forward pass share one upload.
                let key = super::graph::content_key(&format!("key bias {b}x{t}"), m);
                self.constant(key, b, t, || {
                    m.iter().map(|&ok| if ok { 0.0 } else { -1e30 }).collect()
                })
            }
            None => self.constant(format!("zeros {b}x{t}"), b, t, || vec![0.0; b * t]),
        };
        let bias = &bias;
        record!(self, [q, k, v, bias], {
            let qh = q
                .reshape_like(&(b, t, h, dh))
                .permute::<_, Axes4<0, 2, 1, 3>>()
                .reshape_like(&(b * h, t, dh));
            let kt = k
                .reshape_like(&(b, t, h, dh))
                .permute::<_, Axes4<0, 2, 3, 1>>()
                .reshape_like(&(b * h, dh, t));
            let vh = v
                .reshape_like(&(b, t, h, dh))
                .permute::<_, Axes4<0, 2, 1, 3>>()
                .reshape_like(&(b * h, t, dh));
            let scores = (qh.matmul(kt) * scale).reshape_like(&(b, h, t, t));
            let bias =
                bias.broadcast_like::<(usize, usize, usize, usize), Axes2<1, 2>>(&(b, h, t, t));
            let p = (scores + bias)
                .reshape_like(&(b * h, t, t))
                .softmax::<Axis<2>>();
            p.matmul(vh)
                .reshape_like(&(b, h, t, dh))
                .permute::<_, Axes4<0, 2, 1, 3>>()
                .reshape_like(&(b * t, width))
        })
    }

    /// Layer normalisation of each row (no affine part; multiply/add parameters after).
    pub fn layer_norm_rows(&mut self, x: &Tensor, eps: f32) -> Result<Tensor> {
        let mean = self.mean(x, Axis2::Cols)?;
        let xc = self.sub(x, &mean)?;
        let sq = self.square(&xc)?;
        let var = self.mean(&sq, Axis2::Cols)?;
        let std = self.add_scalar(&var, eps)?;
        let std = self.sqrt(&std)?;
        self.div(&xc, &std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Engine;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        // Normal draws (Box–Muller) with standard deviation 0.5.
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let (u1, u2): (f32, f32) = (r.gen_range(1e-7..1.0), r.gen());
                (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos() * 0.5
            })
            .collect()
    }

    /// One head, one sample, two tokens: hand-computed softmax attention.
    #[test]
    fn attention_forward_by_hand() {
        let e = Engine::cpu();
        let q = e.tensor(vec![1.0, 0.0, 0.0, 1.0], 2, 2).unwrap();
        let k = q.clone();
        let v = e.tensor(vec![1.0, 2.0, 3.0, 4.0], 2, 2).unwrap();
        let mut g = e.graph(false);
        let out = g
            .attention(
                &q,
                &k,
                &v,
                AttnShape {
                    batch: 1,
                    tokens: 2,
                    heads: 1,
                },
            )
            .unwrap()
            .to_vec();
        // Scores (÷√2): token 0 → [0.707, 0]; softmax → [0.6698, 0.3302].
        let p0 = 1.0 / (1.0 + (-(0.5f32).sqrt()).exp());
        let want0 = [p0 * 1.0 + (1.0 - p0) * 3.0, p0 * 2.0 + (1.0 - p0) * 4.0];
        assert!(
            (out[0] - want0[0]).abs() < 1e-5 && (out[1] - want0[1]).abs() < 1e-5,
            "{out:?}"
        );
    }

    /// The gradients of a non-linear function of the attention output with respect to q, k
    /// and v agree with central finite differences.
    #[test]
    fn attention_gradient_matches_finite_differences() {
        let e = Engine::cpu();
        let s = AttnShape {
            batch: 2,
            tokens: 3,
            heads: 2,
        };
        let (rows, width) = (6, 4);
        let base = [
            values(rows * width, 1),
            values(rows * width, 2),
            values(rows * width, 3),
        ];
        let weights = values(rows * width, 4);
        let loss_of = |xs: &[Vec<f32>; 3]| -> f64 {
            let (out, _) = forward(&xs[0], &xs[1], &xs[2], s, width, None);
            out.iter()
                .zip(&weights)
                .map(|(o, w)| (*o as f64).powi(2) * *w as f64)
                .sum()
        };
        let ts: Vec<Tensor> = base
            .iter()
            .map(|v| e.tensor(v.clone(), rows, width).unwrap())
            .collect();
        let mut g = e.graph(true);
        let out = g.attention(&ts[0], &ts[1], &ts[2], s).unwrap();
        let sq = g.square(&out).unwrap();
        let w = e.tensor(weights.clone(), rows, width).unwrap();
        let prod = g.mul(&sq, &w).unwrap();
        let loss = g.sum(&prod, Axis2::All).unwrap();
        let mut grads = g.backward(&loss).unwrap();
        let h = 1e-2f32;
        for (which, t) in ts.iter().enumerate() {
            let grad = grads.get(t).to_vec();
            for i in 0..rows * width {
                let mut plus = base.clone();
                plus[which][i] += h;
                let mut minus = base.clone();
                minus[which][i] -= h;
                let fd = (loss_of(&plus) - loss_of(&minus)) / (2.0 * h as f64);
                assert!(
                    (fd - grad[i] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
                    "input {which} element {i}: fd {fd} vs {}",
                    grad[i]
                );
            }
        }
    }

    #[test]
    fn select_rows_gathers_and_scatters() {
        let e = Engine::cpu();
        let x = e.tensor((0..6).map(|v| v as f32).collect(), 3, 2).unwrap();
        let mut g = e.graph(true);
        let y = g.select_rows(&x, &[2, 0, 2]).unwrap();
        assert_eq!(y.to_vec(), vec![4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
        let loss = g.sum(&y, Axis2::All).unwrap();
        assert_eq!(
            g.backward(&loss).unwrap().get(&x).to_vec(),
            vec![1.0, 1.0, 0.0, 0.0, 2.0, 2.0]
        );
        assert!(e.graph(false).select_rows(&x, &[3]).is_err());
    }

    #[test]
    fn tile_rows_and_layer_norm() {
        let e = Engine::cpu();
        let x = e.tensor(vec![1.0, 2.0, 3.0, 5.0], 2, 2).unwrap();
        let mut g = e.graph(true);
        let y = g.tile_rows(&x, 3).unwrap();
        assert_eq!(y.shape(), (6, 2));
        assert_eq!(y.to_vec(), [1.0, 2.0, 3.0, 5.0].repeat(3));
        let loss = g.sum(&y, Axis2::All).unwrap();
        let gx = g.backward(&loss).unwrap().get(&x).to_vec();
        assert_eq!(gx, vec![3.0; 4]);
        let mut g = e.graph(false);
        let ln = g.layer_norm_rows(&x, 0.0).unwrap().to_vec();
        assert!(
            (ln[0] + 1.0).abs() < 1e-5 && (ln[1] - 1.0).abs() < 1e-5,
            "{ln:?}"
        );
    }

    /// Masked keys get no attention: the output ignores their keys and values, their
    /// gradients are zero, and the unmasked gradients still match finite differences.
    #[test]
    fn masked_keys_are_ignored_and_gradients_hold() {
        let e = Engine::cpu();
        let s = AttnShape {
            batch: 2,
            tokens: 3,
            heads: 2,
        };
        let (rows, width) = (6, 4);
        let mask = [true, true, false, true, false, false];
        let base = [
            values(rows * width, 5),
            values(rows * width, 6),
            values(rows * width, 7),
        ];
        let run = |xs: &[Vec<f32>; 3]| forward(&xs[0], &xs[1], &xs[2], s, width, Some(&mask)).0;
        let out = run(&base);
        // Changing a masked key or value row changes nothing.
        let mut other = base.clone();
        for r in [2usize, 4, 5] {
            for c in 0..width {
                other[1][r * width + c] += 3.0;
                other[2][r * width + c] -= 2.0;
            }
        }
        assert_eq!(run(&other), out);
        let weights = values(rows * width, 8);
        let loss_of = |xs: &[Vec<f32>; 3]| -> f64 {
            run(xs)
                .iter()
                .zip(&weights)
                .map(|(o, w)| (*o as f64).powi(2) * *w as f64)
                .sum()
        };
        let ts: Vec<Tensor> = base
            .iter()
            .map(|v| e.tensor(v.clone(), rows, width).unwrap())
            .collect();
        let mut g = e.graph(true);
        let o = g
            .attention_masked(&ts[0], &ts[1], &ts[2], s, Some(&mask))
            .unwrap();
        let sq = g.square(&o).unwrap();
        let w = e.tensor(weights.clone(), rows, width).unwrap();
        let prod = g.mul(&sq, &w).unwrap();
        let loss = g.sum(&prod, Axis2::All).unwrap();
        let mut grads = g.backward(&loss).unwrap();
        let h = 1e-2f32;
        for (which, t) in ts.iter().enumerate() {
            let grad = grads.get(t).to_vec();
            for i in 0..rows * width {
                if which > 0 && !mask[i / width] {
                    assert_eq!(grad[i], 0.0, "masked row got a gradient");
                    continue;
                }
                let mut plus = base.clone();
                plus[which][i] += h;
                let mut minus = base.clone();
                minus[which][i] -= h;
                let fd = (loss_of(&plus) - loss_of(&minus)) / (2.0 * h as f64);
                assert!(
                    (fd - grad[i] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
                    "input {which} element {i}: fd {fd} vs {}",
                    grad[i]
                );
            }
        }
    }
}
