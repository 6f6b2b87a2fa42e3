//! The encoders: [`EncoderSpec`] (architecture and sizes, as the pipeline chose them) builds an
//! [`Encoder`], which maps a batch of inputs to embeddings. One file per architecture; each
//! builds its parameters in a fixed order (names and init draws are part of the artifacts).

use serde::{Deserialize, Serialize};

use super::params::{Init, ParamStore};
use crate::{Engine, Graph, Result, Tensor};

mod convnet;
mod input;
mod mlp;
mod resnet;
mod text;
mod vit;

pub use convnet::ConvNet;
use input::Build;
pub use input::InputShape;
pub use mlp::Mlp;
pub use resnet::{ResBlock, ResNet};
pub use text::{TextSpec, TextTransformer, TokenStates, PAD};
pub use vit::Vit;

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

/// An encoder: maps `(batch, C·H·W)` inputs (channel-major images) to `(batch, embed_dim)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Encoder {
    Mlp(Mlp),
    ConvNet(ConvNet),
    ResNet(ResNet),
    Vit(Vit),
    Text(TextTransformer),
}

impl Encoder {
    /// Build the encoder `spec` describes for `input`, adding its parameters to `ps` (names
    /// start with `encoder.`) and drawing their initial values from `init`.
    pub fn new(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        spec: &EncoderSpec,
        input: InputShape,
    ) -> Result<Encoder> {
        Ok(match *spec {
            EncoderSpec::Mlp {
                ref hidden,
                embed_dim,
                batch_norm,
            } => {
                let mut widths = vec![input.len()];
                widths.extend(hidden);
                widths.push(embed_dim);
                Encoder::Mlp(Mlp::new(e, ps, init, "encoder", &widths, batch_norm))
            }
            EncoderSpec::ConvNet {
                width,
                embed_dim,
                batch_norm,
                flatten,
            } => Encoder::ConvNet(ConvNet::new(
                Build { e, ps, init, input },
                width,
                embed_dim,
                batch_norm,
                flatten,
            )?),
            EncoderSpec::ResNet {
                width,
                blocks,
                embed_dim,
                batch_norm,
            } => Encoder::ResNet(ResNet::new(
                Build { e, ps, init, input },
                width,
                blocks,
                embed_dim,
                batch_norm,
            )?),
            EncoderSpec::Vit {
                patch,
                dim,
                depth,
                heads,
                cls_token,
                embed_dim,
            } => Encoder::Vit(Vit::new(
                Build { e, ps, init, input },
                patch,
                dim,
                depth,
                heads,
                cls_token,
                embed_dim,
            )?),
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
                let s = TextSpec {
                    vocab,
                    seq_len,
                    dim,
                    depth,
                    heads,
                    cls_pool,
                    dropout,
                    embed_dim,
                };
                Encoder::Text(TextTransformer::for_input(e, ps, init, s, input)?)
            }
        })
    }

    /// Activation checkpointing (gradient checkpointing) of the encoder's blocks — the
    /// residual blocks of a ResNet, the transformer blocks of a ViT or text transformer: in a
    /// recording graph each block keeps only its input, and its activations are recomputed
    /// when backward reaches it ([`Graph::checkpoint`]). The same gradients (bit for bit on
    /// the CPU) for less memory, at the cost of running the blocks forward twice. An MLP or
    /// ConvNet has no blocks to checkpoint: asking for it is an error.
    pub fn set_checkpoint_activations(&mut self, on: bool) -> Result<()> {
        match self {
            Encoder::ResNet(net) => net.checkpoint = on,
            Encoder::Vit(vit) => vit.checkpoint = on,
            Encoder::Text(t) => t.checkpoint = on,
            Encoder::Mlp(_) | Encoder::ConvNet(_) if !on => {}
            Encoder::Mlp(_) | Encoder::ConvNet(_) => {
                return Err(crate::EngineError::Other(format!(
                    "activation checkpointing needs an encoder made of blocks (resnet, vit, \
                     transformer); the {} encoder has none",
                    self.arch()
                )))
            }
        }
        Ok(())
    }

    /// The architecture's name as pipelines write it (`mlp`, `convnet`, `resnet`, `vit`,
    /// `transformer`).
    pub fn arch(&self) -> &'static str {
        match self {
            Encoder::Mlp(_) => "mlp",
            Encoder::ConvNet(_) => "convnet",
            Encoder::ResNet(_) => "resnet",
            Encoder::Vit(_) => "vit",
            Encoder::Text(_) => "transformer",
        }
    }

    /// `(batch, C·H·W)` inputs → `(batch, embed_dim)`; `train` selects batch statistics (and
    /// updates the running ones) in batch norm, and dropout in the text encoder.
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
            Encoder::ConvNet(net) => net.forward(ps, g, x, input, train),
            Encoder::ResNet(net) => net.forward(ps, g, x, input, train),
            Encoder::Vit(vit) => vit.forward(ps, g, x, input),
            Encoder::Text(t) => t.forward(ps, g, x, train),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Axis2;
    use crate::optim::{OptimSpec, Optimizer};

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
