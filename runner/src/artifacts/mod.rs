//! Artifacts: the files a stage writes into its store entry and later stages read. One file
//! per artifact kind owns that kind's file names and its typed read/write code; stages and
//! the executor import artifacts, never each other.

pub mod audit;
pub mod dataset;
pub mod embeddings;
pub mod encoder;
pub mod history;
pub mod init;
pub mod metrics;
pub mod ood;
pub mod report;
pub mod tokenizer;
pub mod views;

use std::path::Path;

use crate::error::{io_err, StageError};

pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), StageError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| io_err(path, e))?;
    std::fs::write(path, text + "\n").map_err(|e| io_err(path, e))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StageError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| io_err(path, e))
}
