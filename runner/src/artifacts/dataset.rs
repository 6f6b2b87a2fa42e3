//! The dataset artifact: `dataset.parquet` (one row per sample: id, split, label, pixels or
//! features or token ids, in row groups of [`CHUNK_ROWS`]) and `skipped.json` (what ingest
//! left out), written by ingest and curate, read by every later stage.

use std::path::Path;

use serde::Serialize;

use super::write_json;
use crate::error::StageError;

pub const DATASET_FILE: &str = "dataset.parquet";
/// The records `on_error = "skip"` left out, and the files an image folder passed over.
pub const SKIPPED_FILE: &str = "skipped.json";
/// Records per chunk: one parquet row group, and the unit of memory while ingesting.
pub const CHUNK_ROWS: usize = 4096;

/// `skipped.json`.
#[derive(Serialize)]
struct Skipped<'a> {
    skipped: Vec<SkippedEntry<'a>>,
    ignored: &'a [String],
    /// Text sources: the files read as Latin-1 because they were not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    decoded_as_latin1: Option<&'a [String]>,
}

#[derive(Serialize)]
struct SkippedEntry<'a> {
    at: &'a str,
    reason: &'a str,
}

/// Write `skipped.json` into `dir`: the records left out as `(where, why)`, the files passed
/// over, and for text the files decoded as Latin-1.
pub fn write_skipped(
    dir: &Path,
    skipped: &[(&str, &str)],
    ignored: &[String],
    decoded_as_latin1: Option<&[String]>,
) -> Result<(), StageError> {
    let skipped = skipped
        .iter()
        .map(|&(at, reason)| SkippedEntry { at, reason })
        .collect();
    write_json(
        &dir.join(SKIPPED_FILE),
        &Skipped {
            skipped,
            ignored,
            decoded_as_latin1,
        },
    )
}
