//! pretext: self-supervised-learning pipelines declared in TOML.
//!
//! Map of the crate (see docs/architecture.md): `pipeline` (TOML → validated graph),
//! `store` (content-addressed stage outputs, lockfile), `engine` (the only module naming
//! dfdx), `plugins` (loading and hosting plugin libraries), `data` (datasets and formats),
//! `stages` (one file per stage kind), `exec` (planning and running), `cli` (commands).

pub mod cli;
pub mod data;
pub mod engine;
pub mod exec;
pub mod panic_guard;
pub mod pipeline;
pub mod plot;
pub mod plugins;
pub mod stages;
pub mod store;
