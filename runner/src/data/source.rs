//! The interface between source readers (IDX, image folders, parquet, CSV) and the ingest
//! stage: a [`Source`] yields records in source order, in batches whose size the caller
//! chooses, so a data set larger than memory streams through. A record the source cannot read
//! (a corrupt image, a malformed CSV row) comes back as a [`BadRecord`] naming where it is and
//! why, and the caller decides whether that fails the stage or is skipped.

use super::{DataError, Sample};

/// One record read from a source, before it gets an id and a split.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub label: Option<u32>,
    pub sample: Sample,
    /// Where the record came from, relative to the source (folder sources).
    pub path: Option<String>,
    /// `(height, width)` of a decoded image before any resize.
    pub source_size: Option<(u32, u32)>,
    /// One value per [`SourceColumns::meta`] name.
    pub meta: Vec<String>,
}

/// A record the source could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Where: a file path, or `<file>: record N` / `<file>: line N`.
    pub at: String,
    /// Why, in words.
    pub reason: String,
}

impl BadRecord {
    pub fn new(at: impl Into<String>, reason: impl Into<String>) -> BadRecord {
        BadRecord {
            at: at.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.reason)
    }
}

/// The columns a source provides besides samples.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SourceColumns {
    /// Every record has a label.
    pub labelled: bool,
    /// Class names by label, when the source names its classes.
    pub classes: Option<Vec<String>>,
    /// Records carry a path.
    pub paths: bool,
    /// Records carry their decoded size.
    pub source_sizes: bool,
    /// Metadata column names.
    pub meta: Vec<String>,
    /// Files the source passed over without reading them (non-image files in a folder).
    pub ignored: Vec<String>,
}

/// A record, or why it could not be read.
pub type Item = Result<SourceRecord, BadRecord>;

/// A reader of one source format.
pub trait Source {
    /// Records the source holds (unreadable ones included).
    fn len(&self) -> usize;
    /// Whether the source holds no records.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The columns besides samples.
    fn columns(&self) -> &SourceColumns;
    /// The next `max` records (fewer at the end; none after it), in source order. An `Err` is
    /// a problem with the source as a whole (unreadable file, I/O error), never one record.
    fn next_batch(&mut self, max: usize) -> Result<Vec<Item>, DataError>;
}
