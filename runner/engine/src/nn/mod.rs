//! Runtime-shaped layers and models on engine tensors.
//!
//! dfdx's modules fix shapes at compile time; pipelines choose sizes at run time, so layers
//! here hold ids into a [`ParamStore`] (names, values, kind) and build their forward pass on a
//! [`Graph`](crate::Graph). The store is what optimizers update and what safetensors files hold.
//!
//! From the bottom up: `params.rs` (the store, entry kinds, seeded [`Init`]), `lora.rs`
//! (LoRA and bottleneck adapters on the store's weights), `layers.rs` ([`Linear`], [`Conv`],
//! [`BatchNorm`], [`LayerNorm`]), `transformer.rs` ([`TransformerBlock`]), `encoders/` (one
//! file per architecture, [`EncoderSpec`] → [`Encoder`]), and `heads.rs` (the MAE decoder and
//! the MLM head, which read encoder tokens); `torch_names.rs` maps encoder entries to the
//! names and layouts of a PyTorch state dict of the same architecture.

mod encoders;
mod heads;
mod layers;
mod lora;
mod params;
pub mod torch_names;
mod transformer;

pub use encoders::{
    ConvNet, Encoder, EncoderSpec, InputShape, Mlp, ResBlock, ResNet, TextSpec, TextTransformer,
    TokenStates, Vit, PAD,
};
pub use heads::{JepaPredictor, MaeDecoder, MlmHead};
pub use layers::{BatchNorm, Conv, LayerNorm, Linear};
pub use params::{Adapter, Init, Lora, ParamEntry, ParamKind, ParamStore, Pid};
pub use transformer::TransformerBlock;
