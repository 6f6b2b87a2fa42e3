//! Datasets: the in-memory table stages pass around, its readers (IDX) and its on-disk form
//! (parquet, so people can open it with any dataframe library).

pub mod idx;
pub mod table;

use std::path::PathBuf;

/// Which part of the data a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn as_str(&self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Bad data: names the file (and record, where there is one) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: record {record}: {message}")]
    Record {
        path: PathBuf,
        record: usize,
        message: String,
    },
}

impl DataError {
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> DataError {
        DataError::File {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// An image dataset: `u8` pixels, channel-major, one row per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `(channels, height, width)` of every image.
    pub shape: (usize, usize, usize),
    /// Stable sample ids (the record index in the source).
    pub ids: Vec<u64>,
    pub splits: Vec<Split>,
    /// Class labels, when the source has them.
    pub labels: Option<Vec<u32>>,
    /// `len * c * h * w` bytes.
    pub pixels: Vec<u8>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn sample_len(&self) -> usize {
        self.shape.0 * self.shape.1 * self.shape.2
    }
    /// Pixels of row `i` scaled to `[0, 1]`.
    pub fn image_f32(&self, i: usize) -> Vec<f32> {
        let n = self.sample_len();
        self.pixels[i * n..(i + 1) * n]
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect()
    }
    /// Row indices of one split.
    pub fn rows(&self, split: Split) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.splits[i] == split)
            .collect()
    }
    /// Number of classes (max label + 1), if labelled.
    pub fn classes(&self) -> Option<usize> {
        self.labels
            .as_ref()
            .map(|l| l.iter().copied().max().map_or(0, |m| m as usize + 1))
    }
    /// Rows (scaled to `[0, 1]`) of `idx` as one row-major `(idx.len(), c·h·w)` buffer.
    pub fn batch_f32(&self, idx: &[usize]) -> Vec<f32> {
        let n = self.sample_len();
        let mut out = Vec::with_capacity(idx.len() * n);
        for &i in idx {
            out.extend(
                self.pixels[i * n..(i + 1) * n]
                    .iter()
                    .map(|&p| p as f32 / 255.0),
            );
        }
        out
    }
}
