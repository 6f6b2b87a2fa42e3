//! Plugins: finding and loading libraries ([`loader`]) and calling them ([`host`]).
//!
//! This module never names dfdx: objectives reach the engine only through the tensor-op table
//! in `host`, which calls the engine's dfdx-free [`crate::engine::Graph`] API.

pub mod host;
pub mod loader;
pub mod watch;

pub use host::{
    AugmentInstance, CallError, LatentPrediction, ObjectiveInstance, ObjectiveNeeds,
    ObjectiveParam, ParamInit, StepInputs, StepOutput,
};
pub use loader::{load_library, Library, PluginError, Registry, SearchPath};
