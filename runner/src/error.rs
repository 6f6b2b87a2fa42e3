//! Errors of the library modules and their exit codes, in one place: bad input (TOML, data
//! files, plugin parameters, flags) exits with 2, a stage or check that ran and failed with 1.

use std::path::Path;

/// Why a stage did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Bad input (data files, plugin parameters): exit code 2.
    #[error("{0}")]
    Input(String),
    /// The stage ran and failed: exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl From<crate::data::DataError> for StageError {
    fn from(e: crate::data::DataError) -> Self {
        StageError::Input(e.to_string())
    }
}

impl From<crate::engine::EngineError> for StageError {
    fn from(e: crate::engine::EngineError) -> Self {
        engine_err(e)
    }
}

impl From<crate::plugins::CallError> for StageError {
    fn from(e: crate::plugins::CallError) -> Self {
        StageError::Failed(e.to_string())
    }
}

pub(crate) fn io_err(path: &Path, e: impl std::error::Error + 'static) -> StageError {
    let e: &(dyn std::error::Error + 'static) = &e;
    match e.downcast_ref::<std::io::Error>() {
        Some(io) => StageError::Failed(describe_io(path, io)),
        None => StageError::Failed(format!("{}: {e}", path.display())),
    }
}

/// What an I/O error a person can meet means for `path`, and what to do about it, with the
/// system's own words in brackets (the store's errors use the same advice).
pub(crate) fn describe_io(path: &Path, e: &std::io::Error) -> String {
    format!("{}: {}", path.display(), crate::store::with_advice(e))
}

/// A stage error from an engine error: file errors get [`describe_io`]'s advice.
pub(crate) fn engine_err(e: crate::engine::EngineError) -> StageError {
    match e {
        crate::engine::EngineError::Io { path, source, .. } => {
            StageError::Failed(describe_io(&path, &source))
        }
        other => StageError::Failed(other.to_string()),
    }
}

/// An error with its exit code: 2 for bad input, 1 for a failed stage or check.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Failed(String),
}

impl AppError {
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Input(_) => 2,
            AppError::Failed(_) => 1,
        }
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        AppError::Failed(e.to_string())
    }
}

impl StageError {
    /// The error of a command whose stage `stage` failed with `self`.
    pub fn in_stage(self, stage: &str) -> AppError {
        match self {
            StageError::Input(m) => AppError::Input(format!("stage `{stage}`: {m}")),
            StageError::Failed(m) => AppError::Failed(format!("stage `{stage}` failed: {m}")),
        }
    }
}
