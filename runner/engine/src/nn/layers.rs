//! The basic layers: linear, convolution (im2col + matmul on channel-last activations), batch
//! norm and layer norm. Each holds ids into a [`ParamStore`] and builds its forward pass on a
//! [`Graph`].

use serde::{Deserialize, Serialize};

use super::params::{Init, ParamKind, ParamStore, Pid};
use crate::conv::{ConvSpec, Geometry};
use crate::graph::Axis2;
use crate::{shape_err, Engine, Graph, Result, Tensor};

/// `y = x W + b`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Linear {
    w: Pid,
    b: Pid,
    pub inputs: usize,
    pub outputs: usize,
}

impl Linear {
    pub fn new(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        name: &str,
        inputs: usize,
        outputs: usize,
    ) -> Linear {
        let bound = 1.0 / (inputs as f32).sqrt();
        let w = ps.add(
            format!("{name}.weight"),
            init.uniform(e, inputs, outputs, bound),
            ParamKind::Weight,
        );
        let b = ps.add(
            format!("{name}.bias"),
            init.uniform(e, 1, outputs, bound),
            ParamKind::NoDecay,
        );
        Linear {
            w,
            b,
            inputs,
            outputs,
        }
    }
    /// The trained tensors the layer reads (with what is attached to its weight).
    pub(crate) fn params(&self, ps: &ParamStore, out: &mut Vec<Pid>) {
        out.extend([self.w, self.b]);
        out.extend(ps.attachment_params(self.w));
    }

    pub fn forward(&self, ps: &ParamStore, g: &mut Graph, x: &Tensor) -> Result<Tensor> {
        let y = g.linear(x, ps.get(self.w), ps.get(self.b))?;
        ps.apply_attachments(g, self.w, x, y)
    }
}

/// Batch normalisation over rows, per column (per channel for channel-last activations).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BatchNorm {
    gamma: Pid,
    beta: Pid,
    running_mean: Pid,
    running_var: Pid,
    pub features: usize,
}

const BN_EPS: f32 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;

impl BatchNorm {
    pub fn new(e: &Engine, ps: &mut ParamStore, name: &str, features: usize) -> BatchNorm {
        BatchNorm {
            gamma: ps.add(
                format!("{name}.gamma"),
                e.full(1.0, 1, features),
                ParamKind::NoDecay,
            ),
            beta: ps.add(
                format!("{name}.beta"),
                e.zeros(1, features),
                ParamKind::NoDecay,
            ),
            running_mean: ps.add(
                format!("{name}.running_mean"),
                e.zeros(1, features),
                ParamKind::Buffer,
            ),
            running_var: ps.add(
                format!("{name}.running_var"),
                e.full(1.0, 1, features),
                ParamKind::Buffer,
            ),
            features,
        }
    }

    /// The trained tensors (the running statistics are state, not trained).
    pub(crate) fn params(&self, out: &mut Vec<Pid>) {
        out.extend([self.gamma, self.beta]);
    }

    /// Training mode normalises with batch statistics and updates the running ones.
    pub fn forward(
        &self,
        ps: &mut ParamStore,
        g: &mut Graph,
        x: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_act(ps, g, x, train, false)
    }

    /// [`BatchNorm::forward`], then ReLU when `relu` (one fused op on the CPU).
    pub fn forward_act(
        &self,
        ps: &mut ParamStore,
        g: &mut Graph,
        x: &Tensor,
        train: bool,
        relu: bool,
    ) -> Result<Tensor> {
        let (n, c) = x.shape();
        if c != self.features {
            return Err(shape_err(
                "batch_norm",
                format!("{c} columns for {} features", self.features),
            ));
        }
        // Under a process group the global batch decides (every rank must take the same
        // branch: the statistics are summed over ranks).
        let synced = g.group.is_some();
        let batch = train && (n > 1 || synced);
        if synced && batch && !g.fast(&[x]) {
            return Err(shape_err(
                "batch_norm",
                "batch norm across ranks runs on the CPU fast path only (`--device cpu`); use an encoder without batch norm (`model.batch_norm = false`) on this device",
            ));
        }
        if g.fast(&[x]) {
            let stats = (!batch).then(|| (ps.get(self.running_mean), ps.get(self.running_var)));
            let (y, mean, var, total) = g.host_batch_norm(
                x,
                ps.get(self.gamma),
                ps.get(self.beta),
                stats,
                BN_EPS,
                relu,
            );
            if batch {
                self.update_running_host(ps, &mean, &var, total);
            }
            return Ok(y);
        }
        {
            let normed = if batch {
                let mean = g.mean(x, Axis2::Rows)?;
                let xc = g.sub(x, &mean)?;
                let sq = g.square(&xc)?;
                let var = g.mean(&sq, Axis2::Rows)?;
                self.update_running_dev(ps, &mean, &var, n);
                let std = g.add_scalar(&var, BN_EPS)?;
                let std = g.sqrt(&std)?;
                g.div(&xc, &std)?
            } else {
                let xc = g.sub(x, ps.get(self.running_mean))?;
                let std = g.add_scalar(ps.get(self.running_var), BN_EPS)?;
                let std = g.sqrt(&std)?;
                g.div(&xc, &std)?
            };
            let scaled = g.mul(&normed, ps.get(self.gamma))?;
            let y = g.add(&scaled, ps.get(self.beta))?;
            if relu {
                g.relu(&y)
            } else {
                Ok(y)
            }
        }
    }

    /// Blend the batch statistics (host values, from the fast path) into the running ones.
    fn update_running_host(&self, ps: &mut ParamStore, mean: &[f32], var: &[f32], n: usize) {
        let unbias = n as f32 / (n as f32 - 1.0);
        let blend = |old: &Tensor, new: &[f32], scale: f32| -> Tensor {
            let v: Vec<f32> = crate::host::vals(old)
                .iter()
                .zip(new)
                .map(|(o, b)| (1.0 - BN_MOMENTUM) * o + BN_MOMENTUM * b * scale)
                .collect();
            let (r, c) = old.shape();
            crate::host::with_host(crate::host::cpu_t(old).device(), v, r, c)
        };
        let rm = blend(ps.get(self.running_mean), mean, 1.0);
        let rv = blend(ps.get(self.running_var), var, unbias);
        ps.entries[self.running_mean].value = rm;
        ps.entries[self.running_var].value = rv;
    }

    /// Blend the batch statistics (`(1, C)` tensors) into the running ones on the device.
    fn update_running_dev(&self, ps: &mut ParamStore, mean: &Tensor, var: &Tensor, n: usize) {
        let unbias = n as f32 / (n as f32 - 1.0);
        let (k, mean, var) = (BN_MOMENTUM, mean.detached(), var.detached());
        let rm = zip_t!(ps.get(self.running_mean), mean, |o, b| o * (1.0 - k)
            + b * k);
        let rv = zip_t!(ps.get(self.running_var), var, |o, b| o * (1.0 - k)
            + b * (k * unbias));
        ps.entries[self.running_mean].value = rm;
        ps.entries[self.running_var].value = rv;
    }
}

/// A convolution layer on channel-last activations (im2col + matmul).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Conv {
    lin: Linear,
    kernel: usize,
    stride: usize,
    padding: usize,
    pub out_channels: usize,
}

impl Conv {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        name: &str,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
    ) -> Conv {
        let lin = Linear::new(e, ps, init, name, kernel * kernel * cin, cout);
        Conv {
            lin,
            kernel,
            stride,
            padding: kernel / 2,
            out_channels: cout,
        }
    }

    /// The trained tensors the layer reads.
    pub(crate) fn params(&self, ps: &ParamStore, out: &mut Vec<Pid>) {
        self.lin.params(ps, out);
    }

    /// The layout of the output for an input of layout `geo`.
    pub(crate) fn out_geometry(&self, geo: Geometry) -> Geometry {
        let (height, width) = self.spec().out_hw(geo.height, geo.width);
        Geometry {
            batch: geo.batch,
            height,
            width,
            channels: self.out_channels,
        }
    }

    fn spec(&self) -> ConvSpec {
        ConvSpec {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        }
    }

    pub fn forward(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        x: &Tensor,
        geo: Geometry,
    ) -> Result<(Tensor, Geometry)> {
        let spec = self.spec();
        let y = if !ps.has_attachment(self.lin.w) {
            g.conv2d(x, ps.get(self.lin.w), ps.get(self.lin.b), geo, spec)?
        } else {
            // LoRA and adapters act on the unfolded patches through the linear layer.
            let cols = g.im2col(x, geo, spec)?;
            self.lin.forward(ps, g, &cols)?
        };
        Ok((y, self.out_geometry(geo)))
    }
}

/// Layer norm with a learned scale and shift.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LayerNorm {
    gamma: Pid,
    beta: Pid,
}

impl LayerNorm {
    pub fn new(e: &Engine, ps: &mut ParamStore, name: &str, features: usize) -> LayerNorm {
        LayerNorm {
            gamma: ps.add(
                format!("{name}.gamma"),
                e.full(1.0, 1, features),
                ParamKind::NoDecay,
            ),
            beta: ps.add(
                format!("{name}.beta"),
                e.zeros(1, features),
                ParamKind::NoDecay,
            ),
        }
    }
    /// The trained tensors (scale and shift).
    pub(crate) fn params(&self, out: &mut Vec<Pid>) {
        out.extend([self.gamma, self.beta]);
    }

    pub fn forward(&self, ps: &ParamStore, g: &mut Graph, x: &Tensor) -> Result<Tensor> {
        g.layer_norm(x, ps.get(self.gamma), ps.get(self.beta), 1e-6)
    }
}
