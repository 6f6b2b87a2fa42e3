//! Errors of the library modules and their exit codes, in one place: bad input (TOML, data
//! files, plugin parameters, flags) exits with 2, a stage or check that ran and failed with 1.

use std::path::{Path, PathBuf};

/// Why a stage did not complete. Each variant knows its exit code ([`StageError::exit_code`]);
/// the message a person reads is the `Display` text.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Bad input (data files, plugin parameters): exit code 2.
    #[error("{0}")]
    Input(String),
    /// The stage ran and failed: exit code 1.
    #[error("{0}")]
    Failed(String),
    /// A data file that cannot be read as what it should be (names the file and record):
    /// exit code 2.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A file operation that failed (no space, permission, read-only, vanished), with advice:
    /// exit code 1.
    #[error("{}", describe_io(path, source))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The engine refused an operation (shapes, devices) or failed to read or write weights:
    /// exit code 1.
    #[error("{}", engine_message(.0))]
    Engine(#[from] crate::engine::EngineError),
    /// A plugin call failed (its error, a panic, a non-finite loss, a time limit): exit code 1.
    #[error(transparent)]
    Plugin(#[from] crate::plugins::CallError),
}

impl StageError {
    /// 2 for bad input, 1 for a stage that ran and failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            StageError::Input(_) | StageError::Data(_) => 2,
            StageError::Failed(_)
            | StageError::Io { .. }
            | StageError::Engine(_)
            | StageError::Plugin(_) => 1,
        }
    }

    /// The error of a command whose stage `stage` failed with `self`.
    pub fn in_stage(self, stage: &str) -> AppError {
        if self.exit_code() == 2 {
            AppError::Input(format!("stage `{stage}`: {self}"))
        } else {
            AppError::Failed(format!("stage `{stage}` failed: {self}"))
        }
    }
}

/// An error of writing or reading `path`: I/O errors keep their kind (and get advice), any
/// other error (serialisation, say) is a failure naming the file.
pub(crate) fn io_err(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> StageError {
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    match boxed.downcast::<std::io::Error>() {
        Ok(io) => StageError::Io {
            path: path.to_path_buf(),
            source: *io,
        },
        Err(other) => StageError::Failed(format!("{}: {other}", path.display())),
    }
}

/// What an I/O error a person can meet means for `path`, and what to do about it, with the
/// system's own words in brackets (the store's errors use the same advice).
pub(crate) fn describe_io(path: &Path, e: &std::io::Error) -> String {
    format!("{}: {}", path.display(), crate::store::with_advice(e))
}

/// An engine error for people: file errors get [`describe_io`]'s advice.
fn engine_message(e: &crate::engine::EngineError) -> String {
    match e {
        crate::engine::EngineError::Io { path, source, .. } => describe_io(path, source),
        other => other.to_string(),
    }
}

/// A stage error from an engine error (kept for call sites that map explicitly).
pub(crate) fn engine_err(e: crate::engine::EngineError) -> StageError {
    StageError::Engine(e)
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
