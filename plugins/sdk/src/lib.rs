//! `pretext-plugin`: the plugin ABI of pretext and a safe SDK over it.
//!
//! A plugin is a `cdylib` crate that depends only on this crate. It implements [`Objective`]
//! (an SSL loss built from host tensor ops), [`Augmentation`] (a seeded per-sample image
//! transform) and/or [`TokenAugmentation`] (the same for token sequences: see [`tokens`]) and
//! exports them with [`export_plugin!`]:
//!
//! ```text
//! pretext_plugin::export_plugin! {
//!     name: "my-plugin",
//!     objectives: [MyObjective],
//!     augmentations: [MyAugmentation],
//!     token_augmentations: [MyTokenNoise], // optional
//! }
//! ```
//!
//! The raw C ABI lives in [`abi`]; everything else is safe wrappers and the trampolines that
//! catch panics at the boundary.

pub mod abi;
mod augment;
mod export;
mod objective;
mod params;
mod rng;
pub mod tokens;

/// The raw-ABI test harness for plugin crates (cargo feature `testing`).
#[cfg(feature = "testing")]
pub mod testing;

pub use augment::{Augmentation, Image, ImageMut, ImageShape};
pub use objective::{
    Axis, Inputs, LatentPrediction, Needs, Objective, Ops, ParamInit, ParamSpec, Tensor,
};
pub use params::{Params, Value};
pub use rng::Rng;
pub use tokens::{TokenAugmentation, TokenSeq};

#[doc(hidden)]
pub mod __private {
    pub use crate::export::*;
}

/// Version of this SDK crate, recorded by the host for each loaded library.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error returned by plugin code. Its message reaches the user as the stage error.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A message written by the plugin.
    Msg(String),
    /// A host tensor op failed; the host already holds the message.
    Host,
}

impl Error {
    pub fn msg(m: impl Into<String>) -> Self {
        Error::Msg(m.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Msg(m) => f.write_str(m),
            Error::Host => f.write_str("a host tensor operation failed"),
        }
    }
}

impl std::error::Error for Error {}

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Log levels for [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Write a log line through the host's logger. Outside a plugin call it does nothing.
pub fn log(level: Level, msg: &str) {
    export::log_through_host(level, msg);
}
