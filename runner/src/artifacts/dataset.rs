//! The dataset artifact: `dataset.parquet` (one row per sample: id, split, label, pixels or
//! features or token ids, in row groups of [`CHUNK_ROWS`]) and `skipped.json` (what ingest
//! left out), written by ingest and curate, read by every later stage.

use std::path::Path;

use serde::Serialize;

use super::{tokenizer, write_json};
use crate::data::Layout;
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

/// Read the text dataset in `dir` tokenized like the encoder's training data (the dataset in
/// `encoder_data`): when the two tokenizers differ, every passage (`meta_text`) is encoded
/// again with the encoder's tokenizer, to the encoder's `seq_len`. Image datasets and text
/// datasets with the same tokenizer are read as they are.
pub fn read_for_encoder(
    dir: &Path,
    encoder_data: &Path,
    seq_len: usize,
) -> Result<crate::data::Dataset, StageError> {
    let path = dir.join(DATASET_FILE);
    let layout = crate::data::table::DatasetReader::open(&path)?
        .info()
        .layout;
    if !matches!(layout, Layout::Tokens { .. }) {
        return Ok(crate::data::table::read_dataset(&path)?);
    }
    let (info, records) = crate::data::table::read_records(&path)?;
    let same = || -> Result<crate::data::Dataset, StageError> {
        crate::data::Dataset::from_records(records.clone())
            .ok_or_else(|| StageError::Failed("internal: a token dataset".into()))
    };
    let (Some(ours), Some(theirs)) = (tokenizer::load(encoder_data)?, tokenizer::load(dir)?) else {
        return same();
    };
    if ours.same_as(&theirs) && info.layout.sample_len() == seq_len {
        return same();
    }
    let texts = info
        .meta
        .iter()
        .position(|m| m == "text")
        .map(|i| &records.meta[i])
        .ok_or_else(|| {
            StageError::Input(format!(
                "{}: the text dataset has another tokenizer than the encoder's and no `meta_text` column to encode again",
                path.display()
            ))
        })?;
    let mut tokens = Vec::with_capacity(records.len() * seq_len);
    let mut ids = Vec::with_capacity(seq_len);
    for t in texts {
        tokenizer::encode_passage(&ours, t, seq_len, &mut ids)?;
        tokens.extend_from_slice(&ids);
    }
    tracing::info!(
        dataset = %path.display(),
        "encoded the passages again with the encoder's tokenizer"
    );
    Ok(crate::data::Dataset {
        shape: (1, 1, seq_len),
        ids: records.ids,
        splits: records.splits,
        labels: records.labels,
        pixels: Vec::new(),
        vocab: Some(ours.vocab_size()),
        tokens,
    })
}
