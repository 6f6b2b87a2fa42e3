//! Convolution as the project's own op: im2col (forward) / col2im (backward), then matmul.
//!
//! dfdx's `Conv2D` needs nightly Rust and no longer builds, so the engine owns convolution.
//! Activations are kept channel-last: an `(B·H·W, C)` tensor with its [`Geometry`]. im2col
//! turns it into `(B·OH·OW, K·K·C)` patches (column order: ky, kx, c) so a convolution is one
//! matmul with a `(K·K·C, C_out)` weight, and batch norm over rows is per-channel batch norm.
//!
//! On the CPU fast path the convolution is one fused op (`host_ops.rs`); on every other
//! device im2col is a row gather with an index tensor built once per geometry (padding taps
//! read an appended zero row), so the patches never leave the device.

use super::graph::Axis2;
use super::{shape_err, Graph, Result, Tensor};

/// Spatial layout of a channel-last activation tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

/// Kernel size, stride and zero padding of a square convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvSpec {
    /// Output height and width for an input of `h x w`.
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let oh = (h + 2 * self.padding - self.kernel) / self.stride + 1;
        let ow = (w + 2 * self.padding - self.kernel) / self.stride + 1;
        (oh, ow)
    }
}

/// Visit every (patch row, patch column, input index) triple of the im2col matrix.
fn for_each_tap(g: Geometry, s: ConvSpec, mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = s.out_hw(g.height, g.width);
    let cols = s.kernel * s.kernel * g.channels;
    for b in 0..g.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                let row = (b * oh + oy) * ow + ox;
                for ky in 0..s.kernel {
                    let iy = (oy * s.stride + ky) as isize - s.padding as isize;
                    if iy < 0 || iy >= g.height as isize {
                        continue;
                    }
                    for kx in 0..s.kernel {
                        let ix = (ox * s.stride + kx) as isize - s.padding as isize;
                        if ix < 0 || ix >= g.width as isize {
                            continue;
                        }
                        let src =
                            ((b * g.height + iy as usize) * g.width + ix as usize) * g.channels;
                        let dst = row * cols + (ky * s.kernel + kx) * g.channels;
                        for c in 0..g.channels {
                            f(dst + c, src + c, row);
                        }
                    }
                }
            }
        }
    }
}

/// For every im2col row-block (output position × tap, in im2col order) the input row it reads,
/// or `B·H·W` (one past the last row: the zero row) for taps in the padding.
pub fn im2col_rows(g: Geometry, s: ConvSpec) -> Vec<usize> {
    let (oh, ow) = s.out_hw(g.height, g.width);
    let pad = g.batch * g.height * g.width;
    let mut idx = Vec::with_capacity(g.batch * oh * ow * s.kernel * s.kernel);
    for b in 0..g.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..s.kernel {
                    for kx in 0..s.kernel {
                        let iy = (oy * s.stride + ky) as isize - s.padding as isize;
                        let ix = (ox * s.stride + kx) as isize - s.padding as isize;
                        let inside = iy >= 0
                            && ix >= 0
                            && (iy as usize) < g.height
                            && (ix as usize) < g.width;
                        idx.push(if inside {
                            (b * g.height + iy as usize) * g.width + ix as usize
                        } else {
                            pad
                        });
                    }
                }
            }
        }
    }
    idx
}

/// im2col on host memory: `(B·H·W·C)` → `(B·OH·OW) x (K·K·C)`, zeros where padding.
pub fn im2col_host(x: &[f32], g: Geometry, s: ConvSpec) -> Vec<f32> {
    let (oh, ow) = s.out_hw(g.height, g.width);
    let mut out = vec![0f32; g.batch * oh * ow * s.kernel * s.kernel * g.channels];
    for_each_tap(g, s, |dst, src, _| out[dst] = x[src]);
    out
}

/// col2im on host memory: the adjoint of [`im2col_host`] (sums overlapping patches).
pub fn col2im_host(cols: &[f32], g: Geometry, s: ConvSpec) -> Vec<f32> {
    let mut out = vec![0f32; g.batch * g.height * g.width * g.channels];
    for_each_tap(g, s, |dst, src, _| out[src] += cols[dst]);
    out
}

/// The input matches its geometry and the kernel fits it.
fn check(x: &Tensor, g: Geometry, s: ConvSpec) -> Result<()> {
    if x.shape() != (g.batch * g.height * g.width, g.channels) {
        return Err(shape_err(
            "im2col",
            format!("tensor {:?} does not match {g:?}", x.shape()),
        ));
    }
    if s.kernel == 0
        || s.stride == 0
        || g.height + 2 * s.padding < s.kernel
        || g.width + 2 * s.padding < s.kernel
    {
        return Err(shape_err(
            "im2col",
            format!("{s:?} does not fit a {}x{} input", g.height, g.width),
        ));
    }
    Ok(())
}

impl Graph {
    /// im2col as a differentiable op. `x` is `(B·H·W, C)`.
    pub fn im2col(&mut self, x: &Tensor, g: Geometry, s: ConvSpec) -> Result<Tensor> {
        check(x, g, s)?;
        let (oh, ow) = s.out_hw(g.height, g.width);
        let kk = s.kernel * s.kernel * g.channels;
        if !self.fast(&[x]) {
            // Gather rows of `x` with a zero row appended, then fold taps into columns.
            let c = g.channels;
            let zero = self.constant(format!("zeros 1x{c}"), 1, c, || vec![0.0; c]);
            let padded = self.concat(x, &zero, Axis2::Rows)?;
            let key = format!("im2col {g:?} {s:?}");
            let taps = self.gather_rows(&padded, Some(key), || im2col_rows(g, s))?;
            return self.reshape(&taps, g.batch * oh * ow, kk);
        }
        let cols = im2col_host(&super::host::vals(x), g, s);
        let out = self.host_tensor(cols, g.batch * oh * ow, kk);
        Ok(self.custom(&[x], out, move |g_out| {
            vec![Some(col2im_host(&g_out, g, s))]
        }))
    }

    /// Convolution of a channel-last `(B·H·W, C)` activation with a `(K·K·C, C_out)` weight
    /// (rows in im2col order: ky, kx, c) plus a `(1, C_out)` bias: `(B·OH·OW, C_out)`.
    pub fn conv2d(
        &mut self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        g: Geometry,
        s: ConvSpec,
    ) -> Result<Tensor> {
        let kk = s.kernel * s.kernel * g.channels;
        let (wk, co) = w.shape();
        if wk != kk || b.shape() != (1, co) {
            return Err(shape_err(
                "conv2d",
                format!(
                    "weight {wk}x{co} and bias {:?} for {kk} patch values",
                    b.shape()
                ),
            ));
        }
        check(x, g, s)?;
        if self.fast(&[x, w, b]) {
            return Ok(self.host_conv2d(x, w, b, g, s));
        }
        let cols = self.im2col(x, g, s)?;
        self.linear(&cols, w, b)
    }

    /// Mean over each consecutive group of `group` rows: `(B·P, C)` → `(B, C)` (global average
    /// pooling of a channel-last activation).
    pub fn mean_row_groups(&mut self, x: &Tensor, group: usize) -> Result<Tensor> {
        let (r, c) = x.shape();
        if group == 0 || r % group != 0 {
            return Err(shape_err(
                "mean_row_groups",
                format!("{r} rows in groups of {group}"),
            ));
        }
        let b = r / group;
        if !self.fast(&[x]) {
            let m = self.reshape(x, b, group * c)?;
            return self.mean_groups_generic(&m, b, group, c);
        }
        let v = super::host::vals(x);
        let mut out = vec![0f32; b * c];
        for (i, row) in v.chunks(c).enumerate() {
            for (o, x) in out[(i / group) * c..][..c].iter_mut().zip(row) {
                *o += x / group as f32;
            }
        }
        let t = self.host_tensor(out, b, c);
        Ok(self.custom(&[x], t, move |g_out| {
            let mut g_in = vec![0f32; r * c];
            for (i, row) in g_in.chunks_mut(c).enumerate() {
                for (gi, go) in row.iter_mut().zip(&g_out[(i / group) * c..][..c]) {
                    *gi = go / group as f32;
                }
            }
            vec![Some(g_in)]
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Engine;

    fn geometry() -> (Geometry, ConvSpec) {
        (
            Geometry {
                batch: 2,
                height: 5,
                width: 4,
                channels: 3,
            },
            ConvSpec {
                kernel: 3,
                stride: 2,
                padding: 1,
            },
        )
    }

    #[test]
    fn im2col_matches_direct_convolution() {
        let (g, s) = geometry();
        let n = g.batch * g.height * g.width * g.channels;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let cout = 2;
        let kk = s.kernel * s.kernel * g.channels;
        let w: Vec<f32> = (0..kk * cout)
            .map(|i| ((i * 5) % 7) as f32 * 0.5 - 1.5)
            .collect();
        let cols = im2col_host(&x, g, s);
        let (oh, ow) = s.out_hw(g.height, g.width);
        for b in 0..g.batch {
            for oy in 0..oh {
                for ox in 0..ow {
                    for co in 0..cout {
                        // Direct convolution with zero padding.
                        let mut direct = 0.0;
                        for ky in 0..s.kernel {
                            for kx in 0..s.kernel {
                                let iy = (oy * s.stride + ky) as isize - s.padding as isize;
                                let ix = (ox * s.stride + kx) as isize - s.padding as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= g.height as isize
                                    || ix >= g.width as isize
                                {
                                    continue;
                                }
                                for c in 0..g.channels {
                                    let xv = x[((b * g.height + iy as usize) * g.width
                                        + ix as usize)
                                        * g.channels
                                        + c];
                                    direct +=
                                        xv * w[((ky * s.kernel + kx) * g.channels + c) * cout + co];
                                }
                            }
                        }
                        let row = (b * oh + oy) * ow + ox;
                        let via: f32 = (0..kk).map(|k| cols[row * kk + k] * w[k * cout + co]).sum();
                        assert!((direct - via).abs() < 1e-4, "{direct} vs {via}");
                    }
                }
            }
        }
    }

    /// The gradient of sum(im2col(x) * r) with respect to x, against central finite differences.
    #[test]
    fn im2col_gradient_matches_finite_differences() {
        let (g, s) = geometry();
        let e = Engine::cpu();
        let n = g.batch * g.height * g.width * g.channels;
        let xv: Vec<f32> = (0..n)
            .map(|i| ((i * 13) % 17) as f32 / 17.0 - 0.5)
            .collect();
        let (oh, ow) = s.out_hw(g.height, g.width);
        let (rows, cols) = (g.batch * oh * ow, s.kernel * s.kernel * g.channels);
        let rv: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 3) % 5) as f32 - 2.0)
            .collect();
        let f = |xv: &[f32]| -> f64 {
            let c = im2col_host(xv, g, s);
            // A non-linear function so the test is not trivially linear: sum(r * c^2).
            c.iter()
                .zip(&rv)
                .map(|(c, r)| (*r as f64) * (*c as f64).powi(2))
                .sum()
        };
        let x = e
            .tensor(xv.clone(), g.batch * g.height * g.width, g.channels)
            .unwrap();
        let r = e.tensor(rv.clone(), rows, cols).unwrap();
        let mut gr = e.graph(true);
        let c = gr.im2col(&x, g, s).unwrap();
        let c2 = gr.square(&c).unwrap();
        let prod = gr.mul(&c2, &r).unwrap();
        let loss = gr.sum(&prod, crate::graph::Axis2::All).unwrap();
        let grad = gr.backward(&loss).unwrap().get(&x).to_vec();
        let h = 1e-2f32;
        for i in 0..n {
            let mut xp = xv.clone();
            xp[i] += h;
            let mut xm = xv.clone();
            xm[i] -= h;
            let fd = (f(&xp) - f(&xm)) / (2.0 * h as f64);
            assert!(
                (fd - grad[i] as f64).abs() < 1e-2 * (1.0 + fd.abs()),
                "x[{i}]: fd {fd} vs grad {}",
                grad[i]
            );
        }
    }

    #[test]
    fn mean_row_groups_forward_and_gradient() {
        let e = Engine::cpu();
        let x = e.tensor((0..12).map(|i| i as f32).collect(), 6, 2).unwrap();
        let mut g = e.graph(true);
        let y = g.mean_row_groups(&x, 3).unwrap();
        assert_eq!(y.to_vec(), vec![2.0, 3.0, 8.0, 9.0]);
        let loss = g.sum(&y, crate::graph::Axis2::All).unwrap();
        let grad = g.backward(&loss).unwrap().get(&x).to_vec();
        assert!(grad.iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn bad_geometry_is_an_error_not_a_panic() {
        let e = Engine::cpu();
        let x = e.zeros(4, 1);
        let mut g = e.graph(false);
        let bad = Geometry {
            batch: 1,
            height: 3,
            width: 3,
            channels: 1,
        };
        assert!(g
            .im2col(
                &x,
                bad,
                ConvSpec {
                    kernel: 3,
                    stride: 1,
                    padding: 0
                }
            )
            .is_err());
        let ok = Geometry {
            batch: 1,
            height: 2,
            width: 2,
            channels: 1,
        };
        assert!(g
            .im2col(
                &x,
                ok,
                ConvSpec {
                    kernel: 5,
                    stride: 1,
                    padding: 0
                }
            )
            .is_err());
    }
}
