//! The CPU fast path's ops: matmul, linear (+bias), fused convolution, batch norm (+ReLU),
//! layer norm (+affine) and element-wise activations, each with its exact backward.
//!
//! Each op reads its inputs once, computes on host buffers with rayon and `gemm`, and records
//! its backward with [`Graph::host_op`]. Shapes are checked by the public ops that call these.

use rayon::prelude::*;

use super::conv::{ConvSpec, Geometry};
use super::host::{
    add_col_sums, fold_tiles, gemm, map, par_zeros, sum_rows, tile_len, tiled, vals, zip_add,
    GradSlot, ROW_CHUNK,
};
use super::{Graph, Tensor};

/// Fixed partitions of the batch for convolution weight gradients (independent of threads).
const CONV_PARTS: usize = 8;
/// Target size (floats) of one im2col block: about 1 MiB, so it stays in L2.
const IM2COL_BLOCK: usize = 1 << 18;

fn slot<'a>(slots: &'a mut [GradSlot], i: usize) -> Option<&'a mut [f32]> {
    slots[i].as_deref_mut()
}

impl Graph {
    pub(crate) fn host_matmul(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        let ((m, k), (_, n)) = (a.shape(), b.shape());
        let (av, bv) = (vals(a), vals(b));
        let mut out = par_zeros(m * n);
        gemm(m, k, n, &mut out, false, &av, false, &bv, false, true);
        self.host_op(&[a, b], out, m, n, move |gy, slots| {
            if let Some(ga) = slot(slots, 0) {
                gemm(m, n, k, ga, true, gy, false, &bv, true, true);
            }
            if let Some(gb) = slot(slots, 1) {
                gemm(k, m, n, gb, true, &av, true, gy, false, true);
            }
        })
    }

    /// `x W + b` in one op (`b` is `(1, n)`).
    pub(crate) fn host_linear(&mut self, x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        let ((m, k), (_, n)) = (x.shape(), w.shape());
        let (xv, wv, bv) = (vals(x), vals(w), vals(b));
        let mut out = par_zeros(m * n);
        out.par_chunks_mut(n * ROW_CHUNK).for_each(|rows| {
            for r in rows.chunks_exact_mut(n) {
                r.copy_from_slice(&bv);
            }
        });
        gemm(m, k, n, &mut out, true, &xv, false, &wv, false, true);
        self.host_op(&[x, w, b], out, m, n, move |gy, slots| {
            if let Some(gx) = slot(slots, 0) {
                gemm(m, n, k, gx, true, gy, false, &wv, true, true);
            }
            if let Some(gw) = slot(slots, 1) {
                gemm(k, m, n, gw, true, &xv, true, gy, false, true);
            }
            if let Some(gb) = slot(slots, 2) {
                add_col_sums(gy, n, gb);
            }
        })
    }

    pub(crate) fn host_relu(&mut self, x: &Tensor) -> Tensor {
        let (r, c) = x.shape();
        let xv = vals(x);
        let out = map(&xv, |v| v.max(0.0));
        self.host_op(&[x], out, r, c, move |gy, slots| {
            if let Some(gx) = slot(slots, 0) {
                zip_add(gx, gy, &xv, |g, x| if x > 0.0 { g } else { 0.0 });
            }
        })
    }

    /// `x · s + c` element-wise (scalar multiply, add, negate).
    pub(crate) fn host_affine(&mut self, x: &Tensor, s: f32, c: f32) -> Tensor {
        let (r, cols) = x.shape();
        let xv = vals(x);
        let out = map(&xv, |v| v * s + c);
        self.host_op(&[x], out, r, cols, move |gy, slots| {
            if let Some(gx) = slot(slots, 0) {
                super::host::add_scaled(gx, gy, s);
            }
        })
    }

    /// The transpose, materialised: blocks of rows in parallel.
    pub(crate) fn host_transpose(&mut self, x: &Tensor) -> Tensor {
        let (r, c) = x.shape();
        let xv = vals(x);
        let out = super::host::transpose(&xv, r, c);
        self.host_op(&[x], out, c, r, move |gy, slots| {
            if let Some(gx) = slot(slots, 0) {
                let back = super::host::transpose(gy, c, r);
                super::host::add_assign(gx, &back);
            }
        })
    }

    /// GELU, tanh approximation (dfdx's `fast_gelu`).
    pub(crate) fn host_gelu(&mut self, x: &Tensor) -> Tensor {
        const K: f32 = 0.797_884_6; // sqrt(2 / pi)
        let (r, c) = x.shape();
        let xv = vals(x);
        let out = map(&xv, |x| {
            let u = K * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + super::host::tanh(u))
        });
        self.host_op(&[x], out, r, c, move |gy, slots| {
            if let Some(gx) = slot(slots, 0) {
                zip_add(gx, gy, &xv, |g, x| {
                    let u = K * (x + 0.044715 * x * x * x);
                    let t = super::host::tanh(u);
                    let du = K * (1.0 + 3.0 * 0.044715 * x * x);
                    g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
                });
            }
        })
    }

    /// Mean cross-entropy of `logits (n, c)` against class indices (checked by the caller), as
    /// one op: a log-softmax per row, and `(softmax − onehot) / n` as the gradient.
    pub(crate) fn host_cross_entropy(&mut self, logits: &Tensor, labels: &[u32]) -> Tensor {
        let (n, c) = logits.shape();
        let xv = vals(logits);
        // Per row: its log-sum-exp and the loss term, in parallel; summed in row order.
        let rows: Vec<(f32, f32)> = xv
            .par_chunks(c)
            .zip(labels.par_iter())
            .with_min_len(16)
            .map(|(row, &l)| {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let z: f32 = row.iter().map(|v| super::host::exp(v - m)).sum();
                let lse = m + z.ln();
                (lse, lse - row[l as usize])
            })
            .collect();
        let loss = (rows.iter().map(|r| r.1 as f64).sum::<f64>() / n as f64) as f32;
        let labels = labels.to_vec();
        self.host_op(&[logits], vec![loss], 1, 1, move |gy, slots| {
            let Some(gx) = slot(slots, 0) else {
                return;
            };
            let scale = gy[0] / n as f32;
            gx.par_chunks_mut(c)
                .zip(xv.par_chunks(c))
                .zip(rows.par_iter().zip(labels.par_iter()))
                .with_min_len(16)
                .for_each(|((g, row), (&(lse, _), &l))| {
                    for (g, v) in g.iter_mut().zip(row) {
                        *g += super::host::exp(v - lse) * scale;
                    }
                    g[l as usize] -= scale;
                });
        })
    }

    /// `a ∘ b` for `∘` in + − × ÷, broadcasting a size-1 dimension of either operand to
    /// `shape` (checked by the caller); the gradients are summed back over broadcast axes.
    pub(crate) fn host_binary(
        &mut self,
        a: &Tensor,
        b: &Tensor,
        op: BinOp,
        shape: (usize, usize),
    ) -> Tensor {
        let (r, c) = shape;
        let (sa, sb) = (a.shape(), b.shape());
        let (av, bv) = (vals(a), vals(b));
        let at = move |v: &[f32], s: (usize, usize), i: usize, j: usize| {
            v[if s.0 == 1 { 0 } else { i } * s.1 + if s.1 == 1 { 0 } else { j }]
        };
        let mut out = par_zeros(r * c);
        out.par_chunks_mut(c.max(1))
            .enumerate()
            .with_min_len(16)
            .for_each(|(i, row)| {
                for (j, o) in row.iter_mut().enumerate() {
                    let (x, y) = (at(&av, sa, i, j), at(&bv, sb, i, j));
                    *o = match op {
                        BinOp::Add => x + y,
                        BinOp::Sub => x - y,
                        BinOp::Mul => x * y,
                        BinOp::Div => x / y,
                    };
                }
            });
        self.host_op(&[a, b], out, r, c, move |gy, slots| {
            for k in 0..2 {
                let Some(dst) = slot(slots, k) else {
                    continue;
                };
                // ∂out/∂operand at every output element, times the output gradient.
                let mut d = par_zeros(r * c);
                d.par_chunks_mut(c.max(1))
                    .enumerate()
                    .with_min_len(16)
                    .for_each(|(i, row)| {
                        for (j, o) in row.iter_mut().enumerate() {
                            let (x, y, g) = (at(&av, sa, i, j), at(&bv, sb, i, j), gy[i * c + j]);
                            *o = match (op, k) {
                                (BinOp::Add, _) => g,
                                (BinOp::Sub, 0) => g,
                                (BinOp::Sub, _) => -g,
                                (BinOp::Mul, 0) => g * y,
                                (BinOp::Mul, _) => g * x,
                                (BinOp::Div, 0) => g / y,
                                (BinOp::Div, _) => -g * x / (y * y),
                            };
                        }
                    });
                reduce_into(&d, r, c, if k == 0 { sa } else { sb }, dst);
            }
        })
    }

    /// Each row divided by `max(‖row‖, eps)`.
    pub(crate) fn host_l2_normalize_rows(&mut self, x: &Tensor, eps: f32) -> Tensor {
        let (r, c) = x.shape();
        let xv = vals(x);
        let norms: Vec<(f32, bool)> = xv
            .par_chunks(c.max(1))
            .with_min_len(16)
            .map(|row| {
                let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                (n.max(eps), n > eps)
            })
            .collect();
        let mut out = par_zeros(r * c);
        out.par_chunks_mut(c.max(1))
            .zip(xv.par_chunks(c.max(1)))
            .zip(norms.par_iter())
            .with_min_len(16)
            .for_each(|((o, x), &(n, _))| {
                for (o, x) in o.iter_mut().zip(x) {
                    *o = x / n;
                }
            });
        self.host_op(&[x], out, r, c, move |gy, slots| {
            let Some(gx) = slot(slots, 0) else {
                return;
            };
            gx.par_chunks_mut(c.max(1))
                .zip(xv.par_chunks(c.max(1)).zip(gy.par_chunks(c.max(1))))
                .zip(norms.par_iter())
                .with_min_len(16)
                .for_each(|((gx, (x, g)), &(n, unclamped))| {
                    // y = x / n: dx = (g − y (g·y)) / n, or g / eps where the norm was clamped.
                    let gy_dot: f32 = if unclamped {
                        g.iter().zip(x).map(|(g, x)| g * x / n).sum()
                    } else {
                        0.0
                    };
                    for ((d, g), x) in gx.iter_mut().zip(g).zip(x) {
                        *d += (g - x / n * gy_dot) / n;
                    }
                });
        })
    }

    /// `a + b` for two tensors of the same shape.
    pub(crate) fn host_add(&mut self, a: &Tensor, b: &Tensor) -> Tensor {
        let (r, c) = a.shape();
        let (av, bv) = (vals(a), vals(b));
        let out: Vec<f32> = av
            .par_iter()
            .with_min_len(1 << 14)
            .zip(bv.par_iter())
            .map(|(a, b)| a + b)
            .collect();
        self.host_op(&[a, b], out, r, c, move |gy, slots| {
            for i in 0..2 {
                if let Some(g) = slot(slots, i) {
                    super::host::add_assign(g, gy);
                }
            }
        })
    }

    /// Batch norm over rows per column with scale `gamma` and shift `beta` (`(1, C)` each),
    /// optionally followed by ReLU. `stats`: normalise with these (mean, variance) instead of
    /// the batch's (evaluation). Returns the output and the batch mean and (biased) variance.
    pub(crate) fn host_batch_norm(
        &mut self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        stats: Option<(&Tensor, &Tensor)>,
        eps: f32,
        relu: bool,
    ) -> (Tensor, Vec<f32>, Vec<f32>, usize) {
        let (n, c) = x.shape();
        let xv = vals(x);
        let (gv, bv) = (vals(gamma), vals(beta));
        let batch_stats = stats.is_none();
        // Under a process group the batch statistics (and their gradient terms below) are
        // the global batch's: synchronised batch norm.
        let group = self.group.clone().filter(|_| batch_stats);
        let (mean, var, total) = match stats {
            Some((m, v)) => (vals(m).to_vec(), vals(v).to_vec(), n),
            None => column_mean_var(&xv, n, c, group.as_deref()),
        };
        let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        // y = x·scale + shift per column (then ReLU): x̂·γ + β with x̂ = (x − μ)·inv.
        let scale: Vec<f32> = inv.iter().zip(gv.iter()).map(|(i, g)| i * g).collect();
        let shift: Vec<f32> = (0..c).map(|j| bv[j] - mean[j] * scale[j]).collect();
        // The kernels run over tiles of several rows (per-column terms repeated), so narrow
        // activations (16 channels) still make long vectorisable loops.
        let tl = tile_len(c);
        let (scale_t, shift_t) = (tiled(&scale, tl), tiled(&shift, tl));
        let (mean_t, inv_t) = (tiled(&mean, tl), tiled(&inv, tl));
        let mut out = par_zeros(n * c);
        out.par_chunks_mut(c * ROW_CHUNK)
            .zip(xv.par_chunks(c * ROW_CHUNK))
            .for_each(|(o, x)| {
                for (orow, xrow) in o.chunks_mut(tl).zip(x.chunks(tl)) {
                    affine_row(xrow, &scale_t, &shift_t, relu, orow);
                }
            });
        let (mean_out, var_out) = (mean.clone(), var.clone());
        let y = self.host_op(&[x, gamma, beta], out, n, c, move |gy, slots| {
            // Per column: Σ dz and Σ dz·x̂ over fixed row chunks, where dz is the gradient
            // before the ReLU.
            let rows = sum_rows(c);
            let parts: Vec<Vec<f32>> = gy
                .par_chunks(c * rows)
                .zip(xv.par_chunks(c * rows))
                .map(|(g, x)| {
                    let mut s = vec![0f32; 2 * tl];
                    let mut dz = vec![0f32; tl];
                    let (s1, s2) = s.split_at_mut(tl);
                    for (grow, xrow) in g.chunks(tl).zip(x.chunks(tl)) {
                        let dz = &mut dz[..grow.len()];
                        dz_row(grow, xrow, &scale_t, &shift_t, relu, dz);
                        accumulate_sums(dz, xrow, &mean_t, &inv_t, s1, s2);
                    }
                    s
                })
                .collect();
            // Fold the chunks (in order), then the tile's rows, to one sum per column.
            let (p1, p2): (Vec<Vec<f32>>, Vec<Vec<f32>>) = parts
                .into_iter()
                .map(|mut p| {
                    let s2 = p.split_off(tl);
                    (p, s2)
                })
                .unzip();
            let sums: Vec<f32> = fold_tiles(&p1, tl, c)
                .into_iter()
                .chain(fold_tiles(&p2, tl, c))
                .map(|v| v as f32)
                .collect();
            let (sum_dz, sum_dzx) = sums.split_at(c);
            // The input's gradient reads the sums over the global batch; γ and β keep this
            // rank's share (the step sums parameter gradients over ranks).
            let global = group.as_ref().map(|gr| {
                let mut all = sums.clone();
                gr.sum_f32(&mut all);
                all
            });
            let (g_dz, g_dzx) = global.as_deref().unwrap_or(&sums).split_at(c);
            if let Some(gx) = slot(slots, 0) {
                // gx += scale·(dz − (Σdz + x̂·Σdz·x̂)/n) with batch statistics, scale·dz without.
                let nf = total as f32;
                let (a, b): (Vec<f32>, Vec<f32>) = if batch_stats {
                    (0..c)
                        .map(|j| (scale[j] * g_dz[j] / nf, scale[j] * g_dzx[j] / nf * inv[j]))
                        .unzip()
                } else {
                    (vec![0.0; c], vec![0.0; c])
                };
                gx.par_chunks_mut(c * ROW_CHUNK)
                    .zip(
                        gy.par_chunks(c * ROW_CHUNK)
                            .zip(xv.par_chunks(c * ROW_CHUNK)),
                    )
                    .for_each(|(gx, (g, x))| {
                        let mut dz = vec![0f32; tl];
                        let (a_t, b_t) = (tiled(&a, tl), tiled(&b, tl));
                        for ((gxr, grow), xrow) in
                            gx.chunks_mut(tl).zip(g.chunks(tl)).zip(x.chunks(tl))
                        {
                            let dz = &mut dz[..grow.len()];
                            dz_row(grow, xrow, &scale_t, &shift_t, relu, dz);
                            input_grad_row(gxr, dz, xrow, &scale_t, &mean_t, &a_t, &b_t);
                        }
                    });
            }
            if let Some(gg) = slot(slots, 1) {
                for (g, s) in gg.iter_mut().zip(sum_dzx) {
                    *g += *s;
                }
            }
            if let Some(gb) = slot(slots, 2) {
                for (g, s) in gb.iter_mut().zip(sum_dz) {
                    *g += *s;
                }
            }
        });
        (y, mean_out, var_out, total)
    }

    /// Layer norm of each row with scale and shift (`(1, D)` each).
    pub(crate) fn host_layer_norm(
        &mut self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f32,
    ) -> Tensor {
        let (n, d) = x.shape();
        let xv = vals(x);
        let (gv, bv) = (vals(gamma), vals(beta));
        // Per row: mean and 1/std.
        let stats: Vec<(f32, f32)> = xv
            .par_chunks(d)
            .map(|row| {
                let mean = row.iter().sum::<f32>() / d as f32;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                (mean, 1.0 / (var + eps).sqrt())
            })
            .collect();
        let mut out = par_zeros(n * d);
        out.par_chunks_mut(d)
            .zip(xv.par_chunks(d))
            .zip(&stats)
            .for_each(|((o, x), &(mean, inv))| {
                for j in 0..d {
                    o[j] = (x[j] - mean) * inv * gv[j] + bv[j];
                }
            });
        self.host_op(&[x, gamma, beta], out, n, d, move |gy, slots| {
            if let Some(gx) = slot(slots, 0) {
                gx.par_chunks_mut(d)
                    .zip(xv.par_chunks(d))
                    .zip(gy.par_chunks(d))
                    .zip(&stats)
                    .for_each(|(((gx, x), gy), &(mean, inv))| {
                        let (mut s1, mut s2) = (0f32, 0f32);
                        for j in 0..d {
                            let dxh = gy[j] * gv[j];
                            s1 += dxh;
                            s2 += dxh * (x[j] - mean) * inv;
                        }
                        let df = d as f32;
                        for j in 0..d {
                            let xh = (x[j] - mean) * inv;
                            gx[j] += inv / df * (df * gy[j] * gv[j] - s1 - xh * s2);
                        }
                    });
            }
            let need_affine = slots[1].is_some() || slots[2].is_some();
            if need_affine {
                let parts: Vec<Vec<f32>> = (0..n.div_ceil(ROW_CHUNK))
                    .into_par_iter()
                    .map(|ch| {
                        let mut s = vec![0f32; 2 * d];
                        for i in ch * ROW_CHUNK..((ch + 1) * ROW_CHUNK).min(n) {
                            let (mean, inv) = stats[i];
                            for j in 0..d {
                                let g = gy[i * d + j];
                                s[j] += g * (xv[i * d + j] - mean) * inv;
                                s[d + j] += g;
                            }
                        }
                        s
                    })
                    .collect();
                let mut sums = vec![0f32; 2 * d];
                for p in parts {
                    for (a, b) in sums.iter_mut().zip(p) {
                        *a += b;
                    }
                }
                if let Some(gg) = slot(slots, 1) {
                    for (g, s) in gg.iter_mut().zip(&sums[..d]) {
                        *g += s;
                    }
                }
                if let Some(gb) = slot(slots, 2) {
                    for (g, s) in gb.iter_mut().zip(&sums[d..]) {
                        *g += s;
                    }
                }
            }
        })
    }

    /// Convolution of a channel-last `(B·H·W, C)` activation with a `(K·K·C, C_out)` weight and
    /// a `(1, C_out)` bias, without materialising the whole im2col matrix: each task unfolds a
    /// few images into an L2-sized block and multiplies it (forward and backward alike).
    pub(crate) fn host_conv2d(
        &mut self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        geo: Geometry,
        s: ConvSpec,
    ) -> Tensor {
        let (oh, ow) = s.out_hw(geo.height, geo.width);
        let kk = s.kernel * s.kernel * geo.channels;
        let co = w.shape().1;
        let (per_in, per_out) = (geo.height * geo.width, oh * ow);
        let imgs = (IM2COL_BLOCK / (per_out * kk).max(1)).clamp(1, geo.batch.max(1));
        let xv = vals(x);
        let (wv, bv) = (vals(w), vals(b));
        let rows = geo.batch * per_out;
        let mut out = par_zeros(rows * co);
        out.par_chunks_mut(imgs * per_out * co)
            .enumerate()
            .for_each_init(Vec::new, |cols, (ci, y)| {
                let b0 = ci * imgs;
                let nb = y.len() / (per_out * co);
                unfold(&xv, geo, s, b0, nb, cols);
                for r in y.chunks_exact_mut(co) {
                    r.copy_from_slice(&bv);
                }
                gemm(
                    nb * per_out,
                    kk,
                    co,
                    y,
                    true,
                    cols,
                    false,
                    &wv,
                    false,
                    false,
                );
            });
        self.host_op(&[x, w, b], out, rows, co, move |gy, slots| {
            let chunks = geo.batch.div_ceil(imgs);
            let per_part = chunks.div_ceil(CONV_PARTS);
            let parts = chunks.div_ceil(per_part);
            let need_w = slots[1].is_some();
            let gx = slots[0].take();
            // One weight-gradient partial per fixed partition, added in partition order.
            let run = |p: usize, gx: Option<&mut [f32]>| -> Vec<f32> {
                let mut gw = if need_w {
                    vec![0f32; kk * co]
                } else {
                    Vec::new()
                };
                let mut cols = Vec::new();
                let mut dcols = Vec::new();
                let mut gx = gx;
                for ci in p * per_part..((p + 1) * per_part).min(chunks) {
                    let b0 = ci * imgs;
                    let nb = imgs.min(geo.batch - b0);
                    let m = nb * per_out;
                    let gyc = &gy[b0 * per_out * co..][..m * co];
                    if need_w {
                        unfold(&xv, geo, s, b0, nb, &mut cols);
                        gemm(kk, m, co, &mut gw, true, &cols, true, gyc, false, false);
                    }
                    if let Some(gx) = gx.as_deref_mut() {
                        dcols.clear();
                        dcols.resize(m * kk, 0.0);
                        gemm(m, co, kk, &mut dcols, false, gyc, false, &wv, true, false);
                        let local = (b0 - p * per_part * imgs) * per_in * geo.channels;
                        fold(&dcols, geo, s, nb, &mut gx[local..]);
                    }
                }
                gw
            };
            let partials: Vec<Vec<f32>> = match gx {
                Some(gx) => gx
                    .par_chunks_mut(per_part * imgs * per_in * geo.channels)
                    .enumerate()
                    .map(|(p, gxp)| run(p, Some(gxp)))
                    .collect(),
                None => (0..parts).into_par_iter().map(|p| run(p, None)).collect(),
            };
            if let Some(gw) = slot(slots, 1) {
                for p in &partials {
                    super::host::add_assign(gw, p);
                }
            }
            if let Some(gb) = slot(slots, 2) {
                add_col_sums(gy, co, gb);
            }
        })
    }
}

/// `out = x·scale + shift` (then ReLU) for one row (or tile of rows).
#[inline]
fn affine_row(x: &[f32], scale: &[f32], shift: &[f32], relu: bool, out: &mut [f32]) {
    let c = out.len();
    let (x, scale, shift) = (&x[..c], &scale[..c], &shift[..c]);
    if relu {
        for j in 0..c {
            out[j] = (x[j] * scale[j] + shift[j]).max(0.0);
        }
    } else {
        for j in 0..c {
            out[j] = x[j] * scale[j] + shift[j];
        }
    }
}

/// The gradient before the ReLU for one row: `g`, zeroed where the pre-activation was ≤ 0.
#[inline]
fn dz_row(g: &[f32], x: &[f32], scale: &[f32], shift: &[f32], relu: bool, dz: &mut [f32]) {
    let c = dz.len();
    let (g, x, scale, shift) = (&g[..c], &x[..c], &scale[..c], &shift[..c]);
    if relu {
        for j in 0..c {
            dz[j] = if x[j] * scale[j] + shift[j] > 0.0 {
                g[j]
            } else {
                0.0
            };
        }
    } else {
        dz.copy_from_slice(g);
    }
}

/// `s1 += dz`, `s2 += dz·x̂` for one row.
#[inline]
fn accumulate_sums(
    dz: &[f32],
    x: &[f32],
    mean: &[f32],
    inv: &[f32],
    s1: &mut [f32],
    s2: &mut [f32],
) {
    let c = dz.len();
    let (x, mean, inv, s1, s2) = (&x[..c], &mean[..c], &inv[..c], &mut s1[..c], &mut s2[..c]);
    for j in 0..c {
        s1[j] += dz[j];
        s2[j] += dz[j] * (x[j] - mean[j]) * inv[j];
    }
}

/// `gx += scale·dz − a − b·(x − μ)` for one row (`b` already holds the `inv` of x̂).
#[inline]
fn input_grad_row(
    gx: &mut [f32],
    dz: &[f32],
    x: &[f32],
    scale: &[f32],
    mean: &[f32],
    a: &[f32],
    b: &[f32],
) {
    let c = gx.len();
    let (dz, x, scale, mean, a, b) = (&dz[..c], &x[..c], &scale[..c], &mean[..c], &a[..c], &b[..c]);
    for j in 0..c {
        gx[j] += scale[j] * dz[j] - a[j] - b[j] * (x[j] - mean[j]);
    }
}

/// The element-wise binary ops of [`Graph::host_binary`].
#[derive(Clone, Copy)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// Add `d` (`r × c`) into `dst`, summed over the axes where `shape` is 1 (a broadcast operand's
/// gradient). Fixed-order sums.
fn reduce_into(d: &[f32], r: usize, c: usize, shape: (usize, usize), dst: &mut [f32]) {
    match shape {
        s if s == (r, c) => super::host::add_assign(dst, d),
        (1, cc) if cc == c => add_col_sums(d, c, dst),
        (rr, 1) if rr == r => {
            dst.par_iter_mut()
                .zip(d.par_chunks(c.max(1)))
                .with_min_len(16)
                .for_each(|(o, row)| *o += row.iter().sum::<f32>());
        }
        _ => {
            let parts: Vec<f64> = d
                .par_chunks(1 << 14)
                .map(|p| p.iter().map(|v| *v as f64).sum())
                .collect();
            dst[0] += parts.iter().sum::<f64>() as f32;
        }
    }
}

/// Per-column mean and biased variance of a row-major `(n, c)` matrix (two passes over fixed
/// row chunks; chunk sums added in order).
/// Per-column mean and (biased) variance of `n` rows, and the row count they cover: over
/// every rank's rows under a process group (the global mean first, then the squares about it).
fn column_mean_var(
    x: &[f32],
    n: usize,
    c: usize,
    group: Option<&dyn crate::dist::Collectives>,
) -> (Vec<f32>, Vec<f32>, usize) {
    let total = match group {
        None => n,
        Some(gr) => {
            let mut t = [n as f64];
            gr.sum(&mut t);
            t[0] as usize
        }
    };
    let tl = tile_len(c);
    let sum_rows = |centre: Option<&[f32]>| -> Vec<f32> {
        let centre = centre.map(|m| tiled(m, tl));
        let parts: Vec<Vec<f32>> = x
            .par_chunks(c * sum_rows(c))
            .map(|rows| {
                let mut s = vec![0f32; tl];
                for row in rows.chunks(tl) {
                    let s = &mut s[..row.len()];
                    match &centre {
                        None => {
                            for (a, v) in s.iter_mut().zip(row) {
                                *a += v;
                            }
                        }
                        Some(m) => {
                            for ((a, v), m) in s.iter_mut().zip(row).zip(m) {
                                *a += (v - m) * (v - m);
                            }
                        }
                    }
                }
                s
            })
            .collect();
        let mut sums: Vec<f64> = fold_tiles(&parts, tl, c).into_iter().collect();
        if let Some(gr) = group {
            gr.sum(&mut sums);
        }
        sums.into_iter()
            .map(|s| (s / total as f64) as f32)
            .collect()
    };
    let mean = sum_rows(None);
    let var = sum_rows(Some(&mean));
    (mean, var, total)
}

/// The taps `kx0..kx1` of a kernel row that fall inside an input row of `width` pixels, for
/// output column `ox`, and the input column of the first.
#[inline]
fn valid_taps(ox: usize, s: ConvSpec, width: usize) -> (usize, usize, usize) {
    let left = (ox * s.stride) as isize - s.padding as isize;
    let kx0 = (-left).clamp(0, s.kernel as isize) as usize;
    let kx1 = (width as isize - left).clamp(0, s.kernel as isize) as usize;
    (kx0, kx1.max(kx0), (left + kx0 as isize).max(0) as usize)
}

/// Visit the contiguous spans of `nb` images' im2col matrix: for each output pixel and kernel
/// row, the in-bounds taps are one span of the (channel-last) input row. `f(patch, input,
/// len)` gets the span's offset in the patch matrix, its offset in the images' input and its
/// length.
fn for_each_span(g: Geometry, s: ConvSpec, nb: usize, mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = s.out_hw(g.height, g.width);
    let kk = s.kernel * s.kernel * g.channels;
    let c = g.channels;
    for bi in 0..nb {
        let img = bi * g.height * g.width * c;
        for oy in 0..oh {
            for ox in 0..ow {
                let row = ((bi * oh + oy) * ow + ox) * kk;
                let (kx0, kx1, ix0) = valid_taps(ox, s, g.width);
                let span = (kx1 - kx0) * c;
                for ky in 0..s.kernel {
                    let iy = (oy * s.stride + ky) as isize - s.padding as isize;
                    if iy < 0 || iy >= g.height as isize || span == 0 {
                        continue;
                    }
                    let input = img + (iy as usize * g.width + ix0) * c;
                    f(row + (ky * s.kernel + kx0) * c, input, span);
                }
            }
        }
    }
}

/// im2col of images `b0..b0+nb` into `cols` (resized to `nb·OH·OW × K·K·C`, zeros at padding).
fn unfold(x: &[f32], g: Geometry, s: ConvSpec, b0: usize, nb: usize, cols: &mut Vec<f32>) {
    let (oh, ow) = s.out_hw(g.height, g.width);
    cols.clear();
    cols.resize(nb * oh * ow * s.kernel * s.kernel * g.channels, 0.0);
    let x = &x[b0 * g.height * g.width * g.channels..];
    for_each_span(g, s, nb, |patch, input, len| {
        cols[patch..patch + len].copy_from_slice(&x[input..input + len]);
    });
}

/// col2im: add the patch gradients `cols` of `nb` images into their input gradient `dx`
/// (which starts at the first of those images).
fn fold(cols: &[f32], g: Geometry, s: ConvSpec, nb: usize, dx: &mut [f32]) {
    for_each_span(g, s, nb, |patch, input, len| {
        for (d, v) in dx[input..input + len]
            .iter_mut()
            .zip(&cols[patch..patch + len])
        {
            *d += v;
        }
    });
}
