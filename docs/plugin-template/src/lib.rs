//! A pretext plugin with one objective and one augmentation, as a starting point for your own.
//!
//! - [`AlignUniform`] (`align_uniform`): the alignment + uniformity loss of Wang & Isola
//!   (2020), built from the host's tensor operations.
//! - [`Solarize`] (`solarize`): inverts the pixels above a threshold, with probability `p`
//!   (the solarization of BYOL's augmentations).
//!
//! `export_plugin!` generates the one symbol pretext looks for (`pretext_plugin_entry`) and
//! the C-ABI tables behind it. Every name listed here must be unique among the plugins pretext
//! loads.

mod augmentation;
mod objective;

pub use augmentation::Solarize;
pub use objective::AlignUniform;

pretext_plugin::export_plugin! {
    name: "my-ssl-plugin",
    objectives: [AlignUniform],
    augmentations: [Solarize],
}
