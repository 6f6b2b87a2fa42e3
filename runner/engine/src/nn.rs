//! Runtime-shaped layers on engine tensors: Linear, BatchNorm, ReLU, the MLP and small conv
//! encoders, and projector/predictor heads.
//!
//! dfdx's modules fix shapes at compile time; pipelines choose sizes at run time, so layers
//! here hold ids into a [`ParamStore`] (names, values, kind) and build their forward pass on a
//! [`Graph`]. The store is what optimizers update and what safetensors files hold.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::attention::AttnShape;
use super::conv::{ConvSpec, Geometry};
use super::graph::Axis2;
use super::{shape_err, Engine, Graph, Result, Tensor};

/// What a stored tensor is: decides weight decay and whether an optimizer touches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamKind {
    /// Matrices of linear and conv layers (weight decay applies).
    Weight,
    /// Biases and norm scales/shifts (no weight decay).
    NoDecay,
    /// Non-trained state such as batch-norm running statistics.
    Buffer,
}

#[derive(Debug, Clone)]
pub struct ParamEntry {
    pub name: String,
    pub value: Tensor,
    pub kind: ParamKind,
}

/// Index of a tensor in a [`ParamStore`].
pub type Pid = usize;

/// All tensors of a model, by name, plus the parameter-efficient additions attached to its
/// linear layers (keyed by the weight they modify).
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    pub entries: Vec<ParamEntry>,
    /// LoRA: `W x` becomes `W x + scale · B(A x)` for these weights.
    pub lora: BTreeMap<Pid, Lora>,
    /// Bottleneck adapters applied to these layers' outputs: `y + U relu(D y)`.
    pub adapters: BTreeMap<Pid, Adapter>,
}

/// A low-rank update of one weight matrix `(in, out)`: `A (in, r)`, `B (r, out)`, scale α/r.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Lora {
    pub a: Pid,
    pub b: Pid,
    pub scale: f32,
}

/// A residual bottleneck adapter after a layer with `out` outputs: down `(out, k)` + bias,
/// up `(k, out)` + bias (up starts at zero, so the adapter starts as the identity).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adapter {
    pub down: Pid,
    pub down_bias: Pid,
    pub up: Pid,
    pub up_bias: Pid,
}

impl ParamStore {
    /// Weight matrices (`ParamKind::Weight` entries) whose name contains any of `patterns`
    /// (every weight when `patterns` is empty).
    pub fn weights_matching(&self, patterns: &[String]) -> Vec<Pid> {
        (0..self.entries.len())
            .filter(|&i| self.entries[i].kind == ParamKind::Weight)
            .filter(|&i| {
                patterns.is_empty()
                    || patterns
                        .iter()
                        .any(|p| self.entries[i].name.contains(p.as_str()))
            })
            .collect()
    }

    /// Attach LoRA of `rank` (scale `alpha / rank`) to each weight in `weights`. `A` starts
    /// small and random, `B` at zero, so the model's output is unchanged at first. Returns the
    /// new trainable entries.
    pub fn attach_lora(
        &mut self,
        e: &Engine,
        init: &mut Init,
        weights: &[Pid],
        rank: usize,
        alpha: f32,
    ) -> Vec<Pid> {
        let mut added = Vec::new();
        for &w in weights {
            let (inp, out) = self.entries[w].value.shape();
            let name = self.entries[w].name.clone();
            let a = self.add(
                format!("{name}.lora_a"),
                init.uniform(e, inp, rank, 1.0 / (inp as f32).sqrt()),
                ParamKind::NoDecay,
            );
            let b = self.add(
                format!("{name}.lora_b"),
                e.zeros(rank, out),
                ParamKind::NoDecay,
            );
            self.lora.insert(
                w,
                Lora {
                    a,
                    b,
                    scale: alpha / rank as f32,
                },
            );
            added.extend([a, b]);
        }
        added
    }

    /// Fold every LoRA update into its weight (`W += scale · A B`) and forget the LoRA
    /// attachments; the LoRA tensors stay in the store (ids are unchanged).
    pub fn fold_lora(&mut self, e: &Engine) -> Result<Vec<Pid>> {
        let lora = std::mem::take(&mut self.lora);
        let mut folded = Vec::new();
        for (w, l) in lora {
            let mut g = e.graph(false);
            let ab = g.matmul(self.get(l.a), self.get(l.b))?;
            let ab = g.mul_scalar(&ab, l.scale)?;
            self.entries[w].value = g.add(self.get(w), &ab)?;
            folded.extend([l.a, l.b]);
        }
        Ok(folded)
    }

    /// Fold every LoRA update into its weight and drop the LoRA tensors: the result is a plain
    /// model with the same outputs. Entries after the removed ones get new ids.
    pub fn merge_lora(&mut self, e: &Engine) -> Result<()> {
        let folded = self.fold_lora(e)?;
        self.remove(&folded);
        Ok(())
    }

    /// Attach a bottleneck adapter of width `bottleneck` after each layer in `weights`.
    pub fn attach_adapters(
        &mut self,
        e: &Engine,
        init: &mut Init,
        weights: &[Pid],
        bottleneck: usize,
    ) -> Vec<Pid> {
        let mut added = Vec::new();
        for &w in weights {
            let out = self.entries[w].value.shape().1;
            let name = self.entries[w].name.clone();
            let bound = 1.0 / (out as f32).sqrt();
            let down = self.add(
                format!("{name}.adapter_down"),
                init.uniform(e, out, bottleneck, bound),
                ParamKind::Weight,
            );
            let down_bias = self.add(
                format!("{name}.adapter_down_bias"),
                e.zeros(1, bottleneck),
                ParamKind::NoDecay,
            );
            let up = self.add(
                format!("{name}.adapter_up"),
                e.zeros(bottleneck, out),
                ParamKind::Weight,
            );
            let up_bias = self.add(
                format!("{name}.adapter_up_bias"),
                e.zeros(1, out),
                ParamKind::NoDecay,
            );
            self.adapters.insert(
                w,
                Adapter {
                    down,
                    down_bias,
                    up,
                    up_bias,
                },
            );
            added.extend([down, down_bias, up, up_bias]);
        }
        added
    }

    /// Remove entries (only ones no layer refers to: LoRA tensors after a merge), renumbering
    /// the remaining LoRA/adapter references.
    fn remove(&mut self, ids: &[Pid]) {
        let keep: Vec<bool> = (0..self.entries.len()).map(|i| !ids.contains(&i)).collect();
        let new_index: Vec<usize> = keep
            .iter()
            .scan(0, |n, &k| {
                let i = *n;
                if k {
                    *n += 1;
                }
                Some(i)
            })
            .collect();
        let mut i = 0;
        self.entries.retain(|_| {
            let k = keep[i];
            i += 1;
            k
        });
        let map = |p: Pid| new_index[p];
        self.lora = self
            .lora
            .iter()
            .map(|(&w, l)| {
                (
                    map(w),
                    Lora {
                        a: map(l.a),
                        b: map(l.b),
                        scale: l.scale,
                    },
                )
            })
            .collect();
        self.adapters = self
            .adapters
            .iter()
            .map(|(&w, a)| {
                (
                    map(w),
                    Adapter {
                        down: map(a.down),
                        down_bias: map(a.down_bias),
                        up: map(a.up),
                        up_bias: map(a.up_bias),
                    },
                )
            })
            .collect();
    }

    pub(crate) fn add(&mut self, name: String, value: Tensor, kind: ParamKind) -> Pid {
        self.entries.push(ParamEntry { name, value, kind });
        self.entries.len() - 1
    }
    pub fn get(&self, id: Pid) -> &Tensor {
        &self.entries[id].value
    }
    /// Number of trainable scalars.
    pub fn trainable_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.kind != ParamKind::Buffer)
            .map(|e| e.value.len())
            .sum()
    }
    /// Copy values from `other` for every name both have with equal shapes.
    pub fn copy_matching(&mut self, other: &ParamStore) -> usize {
        let mut n = 0;
        for e in &mut self.entries {
            if let Some(o) = other
                .entries
                .iter()
                .find(|o| o.name == e.name && o.value.shape() == e.value.shape())
            {
                e.value = o.value.clone();
                n += 1;
            }
        }
        n
    }
}

/// Seeded initialisation (PyTorch's default for linear layers: U(±1/√fan_in)).
pub struct Init {
    rng: StdRng,
}

impl Init {
    pub fn new(seed: u64) -> Init {
        Init {
            rng: StdRng::seed_from_u64(seed),
        }
    }
    pub(crate) fn uniform(&mut self, e: &Engine, rows: usize, cols: usize, bound: f32) -> Tensor {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| self.rng.gen_range(-bound..=bound))
            .collect();
        e.tensor(v, rows, cols)
            .expect("shape matches by construction")
    }
}

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
    pub fn forward(&self, ps: &ParamStore, g: &mut Graph, x: &Tensor) -> Result<Tensor> {
        let mut y = g.linear(x, ps.get(self.w), ps.get(self.b))?;
        if let Some(l) = ps.lora.get(&self.w) {
            let low = g.matmul(x, ps.get(l.a))?;
            let low = g.matmul(&low, ps.get(l.b))?;
            let low = g.mul_scalar(&low, l.scale)?;
            y = g.add(&y, &low)?;
        }
        if let Some(a) = ps.adapters.get(&self.w) {
            let h = g.matmul(&y, ps.get(a.down))?;
            let h = g.add(&h, ps.get(a.down_bias))?;
            let h = g.relu(&h)?;
            let h = g.matmul(&h, ps.get(a.up))?;
            let h = g.add(&h, ps.get(a.up_bias))?;
            y = g.add(&y, &h)?;
        }
        Ok(y)
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
        let batch = train && n > 1;
        if g.fast(&[x]) {
            let stats = (!batch).then(|| (ps.get(self.running_mean), ps.get(self.running_var)));
            let (y, mean, var) = g.host_batch_norm(
                x,
                ps.get(self.gamma),
                ps.get(self.beta),
                stats,
                BN_EPS,
                relu,
            );
            if batch {
                self.update_running_host(ps, &mean, &var, n);
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
            let v: Vec<f32> = super::host::vals(old)
                .iter()
                .zip(new)
                .map(|(o, b)| (1.0 - BN_MOMENTUM) * o + BN_MOMENTUM * b * scale)
                .collect();
            let (r, c) = old.shape();
            super::host::with_host(super::host::cpu_t(old).device(), v, r, c)
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

/// Linear layers with batch norm and ReLU between them; the last layer is plain linear.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mlp {
    hidden: Vec<(Linear, Option<BatchNorm>)>,
    last: Linear,
}

impl Mlp {
    /// `widths` = input, hidden..., output.
    pub fn new(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        name: &str,
        widths: &[usize],
        batch_norm: bool,
    ) -> Mlp {
        assert!(
            widths.len() >= 2,
            "an MLP needs an input and an output width"
        );
        let n = widths.len() - 1;
        let hidden = (0..n - 1)
            .map(|i| {
                let lin = Linear::new(
                    e,
                    ps,
                    init,
                    &format!("{name}.{i}"),
                    widths[i],
                    widths[i + 1],
                );
                let bn = batch_norm
                    .then(|| BatchNorm::new(e, ps, &format!("{name}.{i}.bn"), widths[i + 1]));
                (lin, bn)
            })
            .collect();
        let last = Linear::new(
            e,
            ps,
            init,
            &format!("{name}.{}", n - 1),
            widths[n - 1],
            widths[n],
        );
        Mlp { hidden, last }
    }

    pub fn forward(
        &self,
        ps: &mut ParamStore,
        g: &mut Graph,
        x: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for (lin, bn) in &self.hidden {
            h = lin.forward(ps, g, &h)?;
            h = match bn {
                Some(bn) => bn.forward_act(ps, g, &h, train, true)?,
                None => g.relu(&h)?,
            };
        }
        self.last.forward(ps, g, &h)
    }

    pub fn output_width(&self) -> usize {
        self.last.outputs
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

    pub fn forward(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        x: &Tensor,
        geo: Geometry,
    ) -> Result<(Tensor, Geometry)> {
        let spec = ConvSpec {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        };
        let plain = !ps.lora.contains_key(&self.lin.w) && !ps.adapters.contains_key(&self.lin.w);
        let y = if plain {
            g.conv2d(x, ps.get(self.lin.w), ps.get(self.lin.b), geo, spec)?
        } else {
            // LoRA and adapters act on the unfolded patches through the linear layer.
            let cols = g.im2col(x, geo, spec)?;
            self.lin.forward(ps, g, &cols)?
        };
        let (oh, ow) = spec.out_hw(geo.height, geo.width);
        Ok((
            y,
            Geometry {
                batch: geo.batch,
                height: oh,
                width: ow,
                channels: self.out_channels,
            },
        ))
    }
}

/// The input layout of an encoder: flat vectors, or images `(channels, height, width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl InputShape {
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encoder architecture and sizes, as chosen in the pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EncoderSpec {
    Mlp {
        hidden: Vec<usize>,
        embed_dim: usize,
        batch_norm: bool,
    },
    ConvNet {
        width: usize,
        embed_dim: usize,
        batch_norm: bool,
        /// Flatten the last feature map into the head instead of averaging it (keeps where
        /// things are: digits, characters, small images).
        #[serde(default)]
        flatten: bool,
    },
    ResNet {
        width: usize,
        blocks: usize,
        embed_dim: usize,
        batch_norm: bool,
    },
    /// Vision transformer: `patch x patch` patches embedded to `dim`, `depth` pre-norm blocks
    /// with `heads` attention heads, CLS-token or mean pooling, a linear head to `embed_dim`.
    Vit {
        patch: usize,
        dim: usize,
        depth: usize,
        heads: usize,
        cls_token: bool,
        embed_dim: usize,
    },
    /// Text transformer over token sequences of `seq_len` ids from a vocabulary of `vocab`:
    /// token + position embeddings, `depth` pre-norm blocks (padding keys masked), mean over
    /// non-padding tokens or the `[CLS]` token, a linear head to `embed_dim`.
    Text {
        vocab: usize,
        seq_len: usize,
        dim: usize,
        depth: usize,
        heads: usize,
        cls_pool: bool,
        dropout: f32,
        embed_dim: usize,
    },
}

impl EncoderSpec {
    pub fn embed_dim(&self) -> usize {
        match self {
            EncoderSpec::Mlp { embed_dim, .. }
            | EncoderSpec::ConvNet { embed_dim, .. }
            | EncoderSpec::ResNet { embed_dim, .. }
            | EncoderSpec::Vit { embed_dim, .. }
            | EncoderSpec::Text { embed_dim, .. } => *embed_dim,
        }
    }
}

/// Three conv blocks (stride 1, 2, 2; widths w, 2w, 4w), global average pooling (or the
/// flattened last feature map), a linear head.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConvNet {
    blocks: Vec<(Conv, Option<BatchNorm>)>,
    head: Linear,
    #[serde(default)]
    flatten: bool,
}

/// A basic residual block: conv-BN-ReLU-conv-BN plus a shortcut (a strided 1x1 conv + BN
/// when the shape changes), then ReLU.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResBlock {
    conv1: (Conv, Option<BatchNorm>),
    conv2: (Conv, Option<BatchNorm>),
    shortcut: Option<(Conv, Option<BatchNorm>)>,
}

/// A stem conv, three stages of residual blocks (widths w, 2w, 4w; stride 2 at the start of
/// stages 2 and 3), global average pooling and a linear head.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResNet {
    stem: (Conv, Option<BatchNorm>),
    blocks: Vec<ResBlock>,
    head: Linear,
}

/// Conv then optional batch norm (no activation).
fn conv_bn(
    layer: &(Conv, Option<BatchNorm>),
    ps: &mut ParamStore,
    g: &mut Graph,
    x: &Tensor,
    geo: Geometry,
    train: bool,
    relu: bool,
) -> Result<(Tensor, Geometry)> {
    let (y, geo) = layer.0.forward(ps, g, x, geo)?;
    let y = match &layer.1 {
        Some(bn) => bn.forward_act(ps, g, &y, train, relu)?,
        None if relu => g.relu(&y)?,
        None => y,
    };
    Ok((y, geo))
}

impl ResBlock {
    fn forward(
        &self,
        ps: &mut ParamStore,
        g: &mut Graph,
        x: &Tensor,
        geo: Geometry,
        train: bool,
    ) -> Result<(Tensor, Geometry)> {
        let (h, hgeo) = conv_bn(&self.conv1, ps, g, x, geo, train, true)?;
        let (h, hgeo) = conv_bn(&self.conv2, ps, g, &h, hgeo, train, false)?;
        let sc = match &self.shortcut {
            Some(s) => conv_bn(s, ps, g, x, geo, train, false)?.0,
            None => x.clone(),
        };
        let y = g.add(&h, &sc)?;
        Ok((g.relu(&y)?, hgeo))
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
    pub fn forward(&self, ps: &ParamStore, g: &mut Graph, x: &Tensor) -> Result<Tensor> {
        g.layer_norm(x, ps.get(self.gamma), ps.get(self.beta), 1e-6)
    }
}

/// A pre-norm transformer block: `x + Attn(LN(x))`, then `x + MLP(LN(x))` (GELU, 2x width).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransformerBlock {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl TransformerBlock {
    pub fn new(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        name: &str,
        dim: usize,
        heads: usize,
    ) -> TransformerBlock {
        let mut lin =
            |n: &str, i: usize, o: usize| Linear::new(e, ps, init, &format!("{name}.{n}"), i, o);
        let (q, k, v, o) = (
            lin("q", dim, dim),
            lin("k", dim, dim),
            lin("v", dim, dim),
            lin("o", dim, dim),
        );
        let (fc1, fc2) = (lin("fc1", dim, 2 * dim), lin("fc2", 2 * dim, dim));
        let ln1 = LayerNorm::new(e, ps, &format!("{name}.ln1"), dim);
        let ln2 = LayerNorm::new(e, ps, &format!("{name}.ln2"), dim);
        TransformerBlock {
            ln1,
            q,
            k,
            v,
            o,
            ln2,
            fc1,
            fc2,
            heads,
        }
    }

    /// `x`: `(batch · tokens, dim)`.
    pub fn forward(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        x: &Tensor,
        batch: usize,
        tokens: usize,
    ) -> Result<Tensor> {
        self.forward_with(ps, g, x, batch, tokens, None, 0.0)
    }

    /// [`Self::forward`] with a key mask (`false` = padding, never attended to) and dropout
    /// (probability `dropout`) on the attention and MLP outputs before each residual add.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        x: &Tensor,
        batch: usize,
        tokens: usize,
        key_valid: Option<&[bool]>,
        dropout: f32,
    ) -> Result<Tensor> {
        let a = self.ln1.forward(ps, g, x)?;
        let (q, k, v) = (
            self.q.forward(ps, g, &a)?,
            self.k.forward(ps, g, &a)?,
            self.v.forward(ps, g, &a)?,
        );
        let att = g.attention_masked(
            &q,
            &k,
            &v,
            AttnShape {
                batch,
                tokens,
                heads: self.heads,
            },
            key_valid,
        )?;
        let att = self.o.forward(ps, g, &att)?;
        let att = g.dropout(&att, dropout)?;
        let x = g.add(x, &att)?;
        let m = self.ln2.forward(ps, g, &x)?;
        let m = self.fc1.forward(ps, g, &m)?;
        let m = g.gelu(&m)?;
        let m = self.fc2.forward(ps, g, &m)?;
        let m = g.dropout(&m, dropout)?;
        g.add(&x, &m)
    }
}

/// The vision transformer encoder (see [`EncoderSpec::Vit`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vit {
    patch: usize,
    tokens: usize,
    embed: Linear,
    pos: Pid,
    cls: Option<Pid>,
    blocks: Vec<TransformerBlock>,
    norm: LayerNorm,
    head: Linear,
}

impl Vit {
    /// Patch tokens `(B·T, dim)` with position embeddings added.
    pub fn tokens(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        x: &Tensor,
        input: InputShape,
    ) -> Result<Tensor> {
        let (b, _) = x.shape();
        let hwc = g.chw_to_hwc(x, input)?;
        let geo = Geometry {
            batch: b,
            height: input.height,
            width: input.width,
            channels: input.channels,
        };
        let patches = g.im2col(
            &hwc,
            geo,
            ConvSpec {
                kernel: self.patch,
                stride: self.patch,
                padding: 0,
            },
        )?;
        let tok = self.embed.forward(ps, g, &patches)?;
        let pos = g.tile_rows(ps.get(self.pos), b)?;
        g.add(&tok, &pos)
    }

    /// The raw pixel patches `(B·T, patch·patch·C)`, in token order (MAE targets).
    pub fn patches(&self, g: &mut Graph, x: &Tensor, input: InputShape) -> Result<Tensor> {
        let (b, _) = x.shape();
        let hwc = g.chw_to_hwc(x, input)?;
        let geo = Geometry {
            batch: b,
            height: input.height,
            width: input.width,
            channels: input.channels,
        };
        g.im2col(
            &hwc,
            geo,
            ConvSpec {
                kernel: self.patch,
                stride: self.patch,
                padding: 0,
            },
        )
    }

    /// Patch tokens per sample.
    pub fn num_tokens(&self) -> usize {
        self.tokens
    }

    /// Whether the encoder prepends a CLS token.
    pub fn has_cls(&self) -> bool {
        self.cls.is_some()
    }

    /// Run the blocks and the final norm on `(B·T', dim)` tokens (`per_sample` = T'), with the
    /// CLS token prepended to each sample when configured. Returns the token outputs and the
    /// tokens per sample including CLS.
    pub fn run_blocks(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        tok: &Tensor,
        batch: usize,
        per_sample: usize,
    ) -> Result<(Tensor, usize)> {
        let (mut h, t) = match self.cls {
            Some(cls) => {
                // [cls; tokens of sample 0; cls; tokens of sample 1; ...]
                let c = g.tile_rows(ps.get(cls), batch)?;
                let both = g.concat(&c, tok, Axis2::Rows)?;
                let idx: Vec<usize> = (0..batch)
                    .flat_map(|b| {
                        std::iter::once(b)
                            .chain((0..per_sample).map(move |i| batch + b * per_sample + i))
                    })
                    .collect();
                (g.select_rows(&both, &idx)?, per_sample + 1)
            }
            None => (tok.clone(), per_sample),
        };
        for block in &self.blocks {
            h = block.forward(ps, g, &h, batch, t)?;
        }
        Ok((self.norm.forward(ps, g, &h)?, t))
    }

    /// Pool token outputs (`t` per sample) to one vector per sample and apply the head.
    pub fn pool(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        h: &Tensor,
        batch: usize,
        t: usize,
    ) -> Result<Tensor> {
        let pooled = match self.cls {
            Some(_) => g.select_rows(h, &(0..batch).map(|b| b * t).collect::<Vec<_>>())?,
            None => g.mean_row_groups(h, t)?,
        };
        self.head.forward(ps, g, &pooled)
    }

    /// Blocks then pooling: `(B, embed_dim)`.
    pub fn encode_tokens(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        tok: &Tensor,
        batch: usize,
        per_sample: usize,
    ) -> Result<Tensor> {
        let (h, t) = self.run_blocks(ps, g, tok, batch, per_sample)?;
        self.pool(ps, g, &h, batch, t)
    }
}

/// MAE's light decoder: encoder tokens of the visible patches plus a learned mask token at
/// every hidden position, position embeddings, one transformer block, and a linear map to
/// the pixels of each patch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaeDecoder {
    embed: Linear,
    mask_token: Pid,
    pos: Pid,
    block: TransformerBlock,
    norm: LayerNorm,
    pred: Linear,
    tokens: usize,
}

impl MaeDecoder {
    pub fn new(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        vit: &Vit,
        input: InputShape,
        heads: usize,
    ) -> MaeDecoder {
        let dim = vit.embed.outputs;
        let pixels = vit.patch * vit.patch * input.channels;
        MaeDecoder {
            embed: Linear::new(e, ps, init, "mae_decoder.embed", dim, dim),
            mask_token: ps.add(
                "mae_decoder.mask_token".into(),
                init.uniform(e, 1, dim, 0.02),
                ParamKind::NoDecay,
            ),
            pos: ps.add(
                "mae_decoder.pos_embed".into(),
                init.uniform(e, vit.tokens, dim, 0.02),
                ParamKind::NoDecay,
            ),
            block: TransformerBlock::new(e, ps, init, "mae_decoder.block", dim, heads),
            norm: LayerNorm::new(e, ps, "mae_decoder.norm", dim),
            pred: Linear::new(e, ps, init, "mae_decoder.pred", dim, pixels),
            tokens: vit.tokens,
        }
    }

    /// Predict every patch `(B·T, pixels)` from the encoder outputs of the visible patches
    /// `(B·keep, dim)`; `visible[b]` lists sample b's visible patch positions, ascending.
    pub fn forward(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        enc: &Tensor,
        visible: &[Vec<usize>],
    ) -> Result<Tensor> {
        let batch = visible.len();
        let t = self.tokens;
        let keep = visible.first().map_or(0, |v| v.len());
        if keep == 0
            || keep >= t
            || visible.iter().any(|v| v.len() != keep)
            || enc.shape().0 != batch * keep
        {
            return Err(shape_err(
                "mae_decoder",
                format!("{} visible of {t} patches for {batch} samples", keep),
            ));
        }
        let d = self.embed.forward(ps, g, enc)?;
        let masked = t - keep;
        let fill = g.tile_rows(ps.get(self.mask_token), batch * masked)?;
        let all = g.concat(&d, &fill, Axis2::Rows)?;
        // Back to token order: visible tokens from `d`, hidden ones from the mask tokens.
        let mut order = Vec::with_capacity(batch * t);
        for (b, vis) in visible.iter().enumerate() {
            let (mut r, mut m) = (0, 0);
            for i in 0..t {
                if r < keep && vis[r] == i {
                    order.push(b * keep + r);
                    r += 1;
                } else {
                    order.push(batch * keep + b * masked + m);
                    m += 1;
                }
            }
        }
        let full = g.select_rows(&all, &order)?;
        let pos = g.tile_rows(ps.get(self.pos), batch)?;
        let h = g.add(&full, &pos)?;
        let h = self.block.forward(ps, g, &h, batch, t)?;
        let h = self.norm.forward(ps, g, &h)?;
        self.pred.forward(ps, g, &h)
    }
}

/// An encoder: maps `(batch, C·H·W)` inputs (channel-major images) to `(batch, embed_dim)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Encoder {
    Mlp(Mlp),
    ConvNet(ConvNet),
    ResNet(ResNet),
    Vit(Vit),
    Text(super::text::TextTransformer),
}

impl Encoder {
    pub fn new(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        spec: &EncoderSpec,
        input: InputShape,
    ) -> Result<Encoder> {
        match spec {
            EncoderSpec::Mlp {
                hidden,
                embed_dim,
                batch_norm,
            } => {
                let mut widths = vec![input.len()];
                widths.extend(hidden);
                widths.push(*embed_dim);
                Ok(Encoder::Mlp(Mlp::new(
                    e,
                    ps,
                    init,
                    "encoder",
                    &widths,
                    *batch_norm,
                )))
            }
            EncoderSpec::ConvNet {
                width,
                embed_dim,
                flatten,
                batch_norm,
            } => {
                if input.height < 4 || input.width < 4 {
                    return Err(shape_err(
                        "convnet",
                        format!(
                            "input {}x{} is too small (min 4x4)",
                            input.height, input.width
                        ),
                    ));
                }
                let chans = [input.channels, *width, width * 2, width * 4];
                let blocks = (0..3)
                    .map(|i| {
                        let name = format!("encoder.conv{i}");
                        let stride = if i == 0 { 1 } else { 2 };
                        let conv = Conv::new(e, ps, init, &name, chans[i], chans[i + 1], 3, stride);
                        let bn = batch_norm
                            .then(|| BatchNorm::new(e, ps, &format!("{name}.bn"), chans[i + 1]));
                        (conv, bn)
                    })
                    .collect();
                // Two stride-2 blocks: the last feature map is ⌈H/4⌉ x ⌈W/4⌉.
                let down = ConvSpec {
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                };
                let (h1, w1) = down.out_hw(input.height, input.width);
                let (h2, w2) = down.out_hw(h1, w1);
                let head_in = if *flatten {
                    chans[3] * h2 * w2
                } else {
                    chans[3]
                };
                let head = Linear::new(e, ps, init, "encoder.head", head_in, *embed_dim);
                Ok(Encoder::ConvNet(ConvNet {
                    blocks,
                    head,
                    flatten: *flatten,
                }))
            }
            EncoderSpec::ResNet {
                width,
                blocks,
                embed_dim,
                batch_norm,
            } => {
                if input.height < 4 || input.width < 4 {
                    return Err(shape_err(
                        "resnet",
                        format!(
                            "input {}x{} is too small (min 4x4)",
                            input.height, input.width
                        ),
                    ));
                }
                let mut layer =
                    |name: String, cin: usize, cout: usize, kernel: usize, stride: usize| {
                        let conv = Conv::new(e, ps, init, &name, cin, cout, kernel, stride);
                        let bn =
                            batch_norm.then(|| BatchNorm::new(e, ps, &format!("{name}.bn"), cout));
                        (conv, bn)
                    };
                let stem = layer("encoder.stem".into(), input.channels, *width, 3, 1);
                let mut res = Vec::new();
                let mut cin = *width;
                for stage in 0..3 {
                    let cout = width << stage;
                    for b in 0..*blocks {
                        let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                        let name = format!("encoder.stage{stage}.block{b}");
                        let conv1 = layer(format!("{name}.conv1"), cin, cout, 3, stride);
                        let conv2 = layer(format!("{name}.conv2"), cout, cout, 3, 1);
                        let shortcut = (stride != 1 || cin != cout)
                            .then(|| layer(format!("{name}.shortcut"), cin, cout, 1, stride));
                        res.push(ResBlock {
                            conv1,
                            conv2,
                            shortcut,
                        });
                        cin = cout;
                    }
                }
                let head = Linear::new(e, ps, init, "encoder.head", cin, *embed_dim);
                Ok(Encoder::ResNet(ResNet {
                    stem,
                    blocks: res,
                    head,
                }))
            }
            EncoderSpec::Vit {
                patch,
                dim,
                depth,
                heads,
                cls_token,
                embed_dim,
            } => {
                if *patch == 0 || input.height % patch != 0 || input.width % patch != 0 {
                    return Err(shape_err(
                        "vit",
                        format!(
                            "patch size {patch} does not divide the {}x{} input",
                            input.height, input.width
                        ),
                    ));
                }
                if *heads == 0 || dim % heads != 0 {
                    return Err(shape_err(
                        "vit",
                        format!("dim {dim} is not divisible by {heads} heads"),
                    ));
                }
                let tokens = (input.height / patch) * (input.width / patch);
                let embed = Linear::new(
                    e,
                    ps,
                    init,
                    "encoder.patch_embed",
                    patch * patch * input.channels,
                    *dim,
                );
                let pos = ps.add(
                    "encoder.pos_embed".into(),
                    init.uniform(e, tokens, *dim, 0.02),
                    ParamKind::NoDecay,
                );
                let cls = cls_token.then(|| {
                    ps.add(
                        "encoder.cls_token".into(),
                        init.uniform(e, 1, *dim, 0.02),
                        ParamKind::NoDecay,
                    )
                });
                let blocks = (0..*depth)
                    .map(|i| {
                        TransformerBlock::new(
                            e,
                            ps,
                            init,
                            &format!("encoder.block{i}"),
                            *dim,
                            *heads,
                        )
                    })
                    .collect();
                let norm = LayerNorm::new(e, ps, "encoder.norm", *dim);
                let head = Linear::new(e, ps, init, "encoder.head", *dim, *embed_dim);
                Ok(Encoder::Vit(Vit {
                    patch: *patch,
                    tokens,
                    embed,
                    pos,
                    cls,
                    blocks,
                    norm,
                    head,
                }))
            }
            EncoderSpec::Text {
                vocab,
                seq_len,
                dim,
                depth,
                heads,
                cls_pool,
                dropout,
                embed_dim,
            } => {
                if input.len() != *seq_len {
                    return Err(shape_err(
                        "transformer",
                        format!(
                            "the encoder reads sequences of {seq_len} tokens but the input has {} values per sample",
                            input.len()
                        ),
                    ));
                }
                Ok(Encoder::Text(super::text::TextTransformer::new(
                    e,
                    ps,
                    init,
                    super::text::TextSpec {
                        vocab: *vocab,
                        seq_len: *seq_len,
                        dim: *dim,
                        depth: *depth,
                        heads: *heads,
                        cls_pool: *cls_pool,
                        dropout: *dropout,
                        embed_dim: *embed_dim,
                    },
                )?))
            }
        }
    }

    pub fn forward(
        &self,
        ps: &mut ParamStore,
        g: &mut Graph,
        x: &Tensor,
        input: InputShape,
        train: bool,
    ) -> Result<Tensor> {
        match self {
            Encoder::Mlp(mlp) => mlp.forward(ps, g, x, train),
            Encoder::ConvNet(net) => {
                let (b, _) = x.shape();
                let mut h = g.chw_to_hwc(x, input)?;
                let mut geo = Geometry {
                    batch: b,
                    height: input.height,
                    width: input.width,
                    channels: input.channels,
                };
                for (conv, bn) in &net.blocks {
                    let (y, ngeo) = conv.forward(ps, g, &h, geo)?;
                    geo = ngeo;
                    h = match bn {
                        Some(bn) => bn.forward_act(ps, g, &y, train, true)?,
                        None => g.relu(&y)?,
                    };
                }
                let pooled = if net.flatten {
                    // Channel-last rows of one image are contiguous: (B·H·W, C) is (B, H·W·C).
                    g.reshape(&h, b, geo.height * geo.width * geo.channels)?
                } else {
                    g.mean_row_groups(&h, geo.height * geo.width)?
                };
                net.head.forward(ps, g, &pooled)
            }
            Encoder::ResNet(net) => {
                let (b, _) = x.shape();
                let h = g.chw_to_hwc(x, input)?;
                let geo = Geometry {
                    batch: b,
                    height: input.height,
                    width: input.width,
                    channels: input.channels,
                };
                let (mut h, mut geo) = conv_bn(&net.stem, ps, g, &h, geo, train, true)?;
                for block in &net.blocks {
                    let (y, ngeo) = block.forward(ps, g, &h, geo, train)?;
                    h = y;
                    geo = ngeo;
                }
                let pooled = g.mean_row_groups(&h, geo.height * geo.width)?;
                net.head.forward(ps, g, &pooled)
            }
            Encoder::Vit(vit) => {
                let (b, _) = x.shape();
                let tok = vit.tokens(ps, g, x, input)?;
                vit.encode_tokens(ps, g, &tok, b, vit.tokens)
            }
            Encoder::Text(t) => t.forward(ps, g, x, train),
        }
    }
}

impl Graph {
    /// `(B, C·H·W)` channel-major → `(B·H·W, C)` channel-last, differentiable.
    pub fn chw_to_hwc(&mut self, x: &Tensor, s: InputShape) -> Result<Tensor> {
        let (b, n) = x.shape();
        if n != s.len() {
            return Err(shape_err(
                "chw_to_hwc",
                format!("rows of {n} values for input {s:?}"),
            ));
        }
        let hw = s.height * s.width;
        let perm = move |src: &[f32], inverse: bool| -> Vec<f32> {
            let mut out = vec![0f32; src.len()];
            for bi in 0..b {
                for c in 0..s.channels {
                    for p in 0..hw {
                        let chw = bi * n + c * hw + p;
                        let hwc = (bi * hw + p) * s.channels + c;
                        if inverse {
                            out[chw] = src[hwc];
                        } else {
                            out[hwc] = src[chw];
                        }
                    }
                }
            }
            out
        };
        if !self.fast(&[x]) {
            use dfdx::prelude::*;
            let c = s.channels;
            let y = record!(
                self,
                [x],
                x.reshape_like(&(b, c, hw))
                    .permute::<_, Axes3<0, 2, 1>>()
                    .reshape_like(&(b * hw, c))
            )?;
            return Ok(if x.constant { y.as_input() } else { y });
        }
        let y = self.host_tensor(perm(&super::host::vals(x), false), b * hw, s.channels);
        if x.constant {
            return Ok(y.as_input());
        }
        Ok(self.custom(&[x], y, move |g| vec![Some(perm(&g, true))]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{OptimSpec, Optimizer};

    /// LoRA starts as a no-op, trains only its own tensors, and merging it into the weights
    /// gives the same outputs as the unmerged model (to float precision).
    #[test]
    fn lora_merge_equals_unmerged_forward_and_adapters_start_as_identity() {
        let e = Engine::cpu();
        let input = InputShape {
            channels: 1,
            height: 4,
            width: 4,
        };
        let spec = EncoderSpec::Mlp {
            hidden: vec![8],
            embed_dim: 3,
            batch_norm: false,
        };
        let mut ps = ParamStore::default();
        let enc = Encoder::new(&e, &mut ps, &mut Init::new(3), &spec, input).unwrap();
        let x = e
            .tensor(
                (0..5 * 16).map(|i| ((i * 7) % 11) as f32 / 11.0).collect(),
                5,
                16,
            )
            .unwrap();
        let run = |ps: &mut ParamStore| {
            enc.forward(ps, &mut e.graph(false), &x, input, false)
                .unwrap()
                .to_vec()
        };
        let before = run(&mut ps);
        let weights = ps.weights_matching(&[]);
        assert_eq!(weights.len(), 2);
        let added = ps.attach_lora(&e, &mut Init::new(4), &weights, 2, 4.0);
        assert_eq!(run(&mut ps), before, "LoRA with B = 0 changes nothing");
        // Give B values (as training would) and compare merged with unmerged.
        for &p in &added {
            if ps.entries[p].name.ends_with("lora_b") {
                let (r, c) = ps.entries[p].value.shape();
                ps.entries[p].value = e
                    .tensor((0..r * c).map(|i| (i as f32 - 3.0) * 0.05).collect(), r, c)
                    .unwrap();
            }
        }
        let unmerged = run(&mut ps);
        assert_ne!(unmerged, before);
        let names_before: Vec<String> = ps.entries.iter().map(|en| en.name.clone()).collect();
        ps.merge_lora(&e).unwrap();
        assert!(ps.lora.is_empty() && ps.entries.len() == names_before.len() - 4);
        let merged = run(&mut ps);
        for (a, b) in merged.iter().zip(&unmerged) {
            assert!((a - b).abs() < 1e-5, "{merged:?} vs {unmerged:?}");
        }
        // Adapters start as the identity (up-projection at zero).
        let mut ps2 = ParamStore::default();
        let enc2 = Encoder::new(&e, &mut ps2, &mut Init::new(3), &spec, input).unwrap();
        let w = ps2.weights_matching(&["encoder.0".to_string()]);
        assert_eq!(w.len(), 1);
        ps2.attach_adapters(&e, &mut Init::new(5), &w, 4);
        assert_eq!(
            enc2.forward(&mut ps2, &mut e.graph(false), &x, input, false)
                .unwrap()
                .to_vec(),
            before
        );
    }

    /// Both encoders produce `(batch, embed_dim)`, are deterministic per seed, and a few AdamW
    /// steps on a regression target reduce the loss (gradients reach every layer, including
    /// the im2col convolutions, batch norm and pooling).
    #[test]
    fn encoders_forward_backward_and_learn() {
        let e = Engine::cpu();
        let input = InputShape {
            channels: 2,
            height: 8,
            width: 8,
        };
        let specs = [
            EncoderSpec::Mlp {
                hidden: vec![16],
                embed_dim: 4,
                batch_norm: true,
            },
            EncoderSpec::ConvNet {
                width: 4,
                embed_dim: 4,
                batch_norm: true,
                flatten: false,
            },
            EncoderSpec::ConvNet {
                width: 4,
                embed_dim: 4,
                batch_norm: true,
                flatten: true,
            },
            EncoderSpec::ResNet {
                width: 4,
                blocks: 1,
                embed_dim: 4,
                batch_norm: true,
            },
            EncoderSpec::Vit {
                patch: 4,
                dim: 8,
                depth: 2,
                heads: 2,
                cls_token: true,
                embed_dim: 4,
            },
            EncoderSpec::Vit {
                patch: 4,
                dim: 8,
                depth: 2,
                heads: 4,
                cls_token: false,
                embed_dim: 4,
            },
        ];
        let batch = 6;
        let xs: Vec<f32> = (0..batch * input.len())
            .map(|i| ((i * 37) % 101) as f32 / 101.0)
            .collect();
        let target: Vec<f32> = (0..batch * 4).map(|i| (i % 3) as f32 - 1.0).collect();
        for spec in specs {
            let build = || {
                let mut ps = ParamStore::default();
                let enc = Encoder::new(&e, &mut ps, &mut Init::new(9), &spec, input).unwrap();
                (enc, ps)
            };
            let (enc, mut ps) = build();
            let (_, ps2) = build();
            for (a, b) in ps.entries.iter().zip(&ps2.entries) {
                assert_eq!(
                    a.value.to_vec(),
                    b.value.to_vec(),
                    "seeded init differs for {}",
                    a.name
                );
            }
            let x = e.tensor(xs.clone(), batch, input.len()).unwrap();
            let y = e.tensor(target.clone(), batch, 4).unwrap();
            let mut opt = Optimizer::new(
                OptimSpec::AdamW {
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 0.0,
                },
                &ps,
            );
            let mut losses = Vec::new();
            for _ in 0..60 {
                let mut g = e.graph(true);
                let out = enc.forward(&mut ps, &mut g, &x, input, true).unwrap();
                assert_eq!(out.shape(), (batch, 4));
                let d = g.sub(&out, &y).unwrap();
                let sq = g.square(&d).unwrap();
                let loss = g.mean(&sq, Axis2::All).unwrap();
                losses.push(loss.scalar());
                let mut grads = g.backward(&loss).unwrap();
                opt.step(&mut ps, &mut grads, 0.01);
            }
            assert!(
                losses[59] < 0.5 * losses[0],
                "{spec:?}: loss {} -> {}",
                losses[0],
                losses[59]
            );
            // Eval mode uses running statistics and still gives the right shape.
            let mut g = e.graph(false);
            assert_eq!(
                enc.forward(&mut ps, &mut g, &x, input, false)
                    .unwrap()
                    .shape(),
                (batch, 4)
            );
        }
    }
}
