//! pretext: self-supervised-learning pipelines declared in TOML.
//!
//! Map of the crate (see docs/architecture.md): `pipeline` (TOML → validated graph),
//! `store` (content-addressed stage outputs, lockfile), `engine` (the `pretext-engine` crate,
//! the only one naming dfdx), `plugins` (loading and hosting plugin libraries), `data` (datasets and formats),
//! `stages` (one file per stage kind), `exec` (planning and running), `tensorboard` (event files
//! of training curves), `cli` (commands).

pub mod artifacts;
pub mod cli;
pub mod data;
pub mod error;
pub mod eval;
pub mod exec;
pub mod launch;
pub mod output;
pub mod pipeline;
pub mod plot;
pub mod plugins;
pub mod progress;
pub mod seeds;
pub mod stages;
pub mod store;
pub mod supervised;
pub mod tensorboard;

/// The training engine (its own crate, so that only it can name dfdx or cudarc).
pub use pretext_engine as engine;
pub use pretext_engine::panic_guard;
