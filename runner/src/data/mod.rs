//! Datasets: the in-memory tables stages pass around, the readers of source formats (IDX,
//! image folders, parquet, CSV) and the on-disk form (parquet, so people can open it with any
//! dataframe library).
//!
//! Two in-memory forms:
//!
//! - [`Records`]: any dataset, a batch of rows whose samples are [`Samples`] (`u8` images with
//!   a shape, or `f32` feature vectors with a dimension) plus the optional provenance columns
//!   (source path, source image size, metadata columns). Ingest and curate stream these in
//!   bounded chunks (one parquet row group each); [`DatasetInfo`] describes the columns.
//! - [`Dataset`]: a whole image dataset in memory, what augment, pretrain and probe use.
//!   [`table::read_dataset`] loads one and refuses feature-vector datasets with a clear error.

pub mod csv_source;
pub mod folder;
pub mod hash;
pub mod idx;
pub mod image;
pub mod memory;
pub mod parquet_source;
pub mod source;
pub mod table;
pub mod text;
pub mod tokenizer;

use std::path::{Path, PathBuf};

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

/// A dataset in memory, one row per sample: images (`u8` pixels, channel-major) or token
/// sequences (text, `u32` ids of a fixed length). Stages see both through the same `f32` rows:
/// pixels scaled to `[0, 1]`, or token ids as exact floats.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `(channels, height, width)` of every image; `(1, 1, length)` for token sequences.
    pub shape: (usize, usize, usize),
    /// Stable sample ids (the record index in the source).
    pub ids: Vec<u64>,
    pub splits: Vec<Split>,
    /// Class labels, when the source has them.
    pub labels: Option<Vec<u32>>,
    /// `len * c * h * w` bytes (images; empty for token sequences).
    pub pixels: Vec<u8>,
    /// Token sequences: the vocabulary size; `None` for images.
    pub vocab: Option<usize>,
    /// `len * length` token ids (token sequences; empty for images).
    pub tokens: Vec<u32>,
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
    /// `true` for token sequences (text).
    pub fn is_text(&self) -> bool {
        self.vocab.is_some()
    }
    /// Row `i` as `f32`s: pixels scaled to `[0, 1]`, or token ids.
    pub fn image_f32(&self, i: usize) -> Vec<f32> {
        let n = self.sample_len();
        if self.is_text() {
            return self.tokens[i * n..(i + 1) * n]
                .iter()
                .map(|&t| t as f32)
                .collect();
        }
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
    /// Rows (scaled to `[0, 1]`, or token ids) of `idx` as one row-major
    /// `(idx.len(), c·h·w)` buffer.
    pub fn batch_f32(&self, idx: &[usize]) -> Vec<f32> {
        let n = self.sample_len();
        let mut out = Vec::with_capacity(idx.len() * n);
        if self.is_text() {
            for &i in idx {
                out.extend(self.tokens[i * n..(i + 1) * n].iter().map(|&t| t as f32));
            }
            return out;
        }
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

/// The kind and size of every sample of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Layout {
    /// `u8` images, channel-major.
    Image {
        channels: usize,
        height: usize,
        width: usize,
    },
    /// `f32` feature vectors (tabular data).
    Features { dim: usize },
    /// Token sequences (text): `len` ids each, from a vocabulary of `vocab` ids.
    Tokens { len: usize, vocab: usize },
}

impl Layout {
    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        match *self {
            Layout::Image {
                channels,
                height,
                width,
            } => channels * height * width,
            Layout::Features { dim } => dim,
            Layout::Tokens { len, .. } => len,
        }
    }

    /// The shape an encoder sees: `(c, h, w)` for images, `(1, 1, dim)` for features.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        match *self {
            Layout::Image {
                channels,
                height,
                width,
            } => (channels, height, width),
            Layout::Features { dim } => (1, 1, dim),
            Layout::Tokens { len, .. } => (1, 1, len),
        }
    }

    /// For messages: `28×28 images with 1 channel`, `feature vectors of dimension 4`.
    pub fn describe(&self) -> String {
        match *self {
            Layout::Image {
                channels,
                height,
                width,
            } => format!(
                "{height}×{width} images with {channels} channel{}",
                if channels == 1 { "" } else { "s" }
            ),
            Layout::Features { dim } => format!("feature vectors of dimension {dim}"),
            Layout::Tokens { len, vocab } => {
                format!("token sequences of length {len} (vocabulary of {vocab})")
            }
        }
    }

    pub fn is_image(&self) -> bool {
        matches!(self, Layout::Image { .. })
    }
}

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// An image: `u8` pixels, channel-major, `(channels, height, width)`.
    Image {
        shape: (usize, usize, usize),
        pixels: Vec<u8>,
    },
    /// A feature vector.
    Features(Vec<f32>),
    /// A token sequence from a vocabulary of `vocab` ids.
    Tokens { vocab: usize, ids: Vec<u32> },
}

impl Sample {
    pub fn layout(&self) -> Layout {
        match self {
            Sample::Image { shape, .. } => Layout::Image {
                channels: shape.0,
                height: shape.1,
                width: shape.2,
            },
            Sample::Features(v) => Layout::Features { dim: v.len() },
            Sample::Tokens { vocab, ids } => Layout::Tokens {
                len: ids.len(),
                vocab: *vocab,
            },
        }
    }
}

/// The samples of a batch of rows, stored by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    /// Images: `shape.0 * shape.1 * shape.2` bytes per sample, channel-major.
    U8 {
        shape: (usize, usize, usize),
        data: Vec<u8>,
    },
    /// Feature vectors: `dim` values per sample.
    F32 { dim: usize, data: Vec<f32> },
    /// Token sequences: `len` ids per sample from a vocabulary of `vocab`.
    Tokens {
        len: usize,
        vocab: usize,
        data: Vec<u32>,
    },
}

impl Samples {
    /// No samples of `layout`.
    pub fn empty(layout: Layout) -> Samples {
        match layout {
            Layout::Image {
                channels,
                height,
                width,
            } => Samples::U8 {
                shape: (channels, height, width),
                data: Vec::new(),
            },
            Layout::Features { dim } => Samples::F32 {
                dim,
                data: Vec::new(),
            },
            Layout::Tokens { len, vocab } => Samples::Tokens {
                len,
                vocab,
                data: Vec::new(),
            },
        }
    }

    pub fn layout(&self) -> Layout {
        match self {
            Samples::U8 { shape, .. } => Layout::Image {
                channels: shape.0,
                height: shape.1,
                width: shape.2,
            },
            Samples::F32 { dim, .. } => Layout::Features { dim: *dim },
            Samples::Tokens { len, vocab, .. } => Layout::Tokens {
                len: *len,
                vocab: *vocab,
            },
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        let k = self.layout().sample_len();
        let n = match self {
            Samples::U8 { data, .. } => data.len(),
            Samples::F32 { data, .. } => data.len(),
            Samples::Tokens { data, .. } => data.len(),
        };
        n.checked_div(k).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends one sample; it must have this layout.
    pub fn push(&mut self, sample: &Sample) -> Result<(), String> {
        match (self, sample) {
            (Samples::U8 { shape, data }, Sample::Image { shape: s, pixels })
                if shape == s && pixels.len() == s.0 * s.1 * s.2 =>
            {
                data.extend_from_slice(pixels);
                Ok(())
            }
            (Samples::F32 { dim, data }, Sample::Features(v)) if v.len() == *dim => {
                data.extend_from_slice(v);
                Ok(())
            }
            (Samples::Tokens { len, vocab, data }, Sample::Tokens { vocab: sv, ids })
                if ids.len() == *len && sv == vocab =>
            {
                data.extend_from_slice(ids);
                Ok(())
            }
            (me, s) => Err(format!(
                "{} do not match the dataset's {}",
                s.layout().describe(),
                me.layout().describe()
            )),
        }
    }

    /// Sample `i` as `f32`s (image pixels scaled to `[0, 1]`).
    pub fn row_f32(&self, i: usize) -> Vec<f32> {
        let k = self.layout().sample_len();
        match self {
            Samples::U8 { data, .. } => data[i * k..(i + 1) * k]
                .iter()
                .map(|&p| p as f32 / 255.0)
                .collect(),
            Samples::F32 { data, .. } => data[i * k..(i + 1) * k].to_vec(),
            Samples::Tokens { data, .. } => {
                data[i * k..(i + 1) * k].iter().map(|&t| t as f32).collect()
            }
        }
    }

    /// Rows `idx` as one row-major `(idx.len(), sample_len)` buffer of `f32`s.
    pub fn batch_f32(&self, idx: &[usize]) -> Vec<f32> {
        let k = self.layout().sample_len();
        let mut out = Vec::with_capacity(idx.len() * k);
        for &i in idx {
            match self {
                Samples::U8 { data, .. } => {
                    out.extend(data[i * k..(i + 1) * k].iter().map(|&p| p as f32 / 255.0))
                }
                Samples::F32 { data, .. } => out.extend_from_slice(&data[i * k..(i + 1) * k]),
                Samples::Tokens { data, .. } => {
                    out.extend(data[i * k..(i + 1) * k].iter().map(|&t| t as f32))
                }
            }
        }
        out
    }

    /// The raw bytes of sample `i` (little-endian for features), for content hashing.
    pub fn row_bytes(&self, i: usize) -> std::borrow::Cow<'_, [u8]> {
        let k = self.layout().sample_len();
        match self {
            Samples::U8 { data, .. } => std::borrow::Cow::Borrowed(&data[i * k..(i + 1) * k]),
            Samples::F32 { data, .. } => std::borrow::Cow::Owned(
                data[i * k..(i + 1) * k]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            Samples::Tokens { data, .. } => std::borrow::Cow::Owned(
                data[i * k..(i + 1) * k]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
        }
    }

    /// The samples at `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Samples {
        let k = self.layout().sample_len();
        match self {
            Samples::U8 { shape, data } => Samples::U8 {
                shape: *shape,
                data: rows
                    .iter()
                    .flat_map(|&i| data[i * k..(i + 1) * k].iter().copied())
                    .collect(),
            },
            Samples::Tokens { len, vocab, data } => Samples::Tokens {
                len: *len,
                vocab: *vocab,
                data: rows
                    .iter()
                    .flat_map(|&i| data[i * k..(i + 1) * k].iter().copied())
                    .collect(),
            },
            Samples::F32 { dim, data } => Samples::F32 {
                dim: *dim,
                data: rows
                    .iter()
                    .flat_map(|&i| data[i * k..(i + 1) * k].iter().copied())
                    .collect(),
            },
        }
    }
}

/// What a dataset file holds besides ids and splits: the sample layout, whether rows have
/// labels (and the class names, when the source named them), and which provenance columns
/// exist.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DatasetInfo {
    pub layout: Layout,
    /// Whether every row has a label.
    pub labelled: bool,
    /// Class names by label (from folder names or string label columns), when known.
    pub classes: Option<Vec<String>>,
    /// Rows record where they came from (a path relative to the source folder).
    pub paths: bool,
    /// Rows record the image size before any resize, `(height, width)`.
    pub source_sizes: bool,
    /// Names of the metadata columns (string values), in order.
    pub meta: Vec<String>,
}

impl DatasetInfo {
    /// A dataset with only ids, splits, samples and (optionally) labels.
    pub fn plain(layout: Layout, labelled: bool) -> DatasetInfo {
        DatasetInfo {
            layout,
            labelled,
            classes: None,
            paths: false,
            source_sizes: false,
            meta: Vec::new(),
        }
    }
}

/// A batch of rows of any dataset: every column has one entry per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Records {
    /// Stable sample ids (the record index in the source).
    pub ids: Vec<u64>,
    pub splits: Vec<Split>,
    /// Labels, when every row has one.
    pub labels: Option<Vec<u32>>,
    pub samples: Samples,
    /// Source paths, when [`DatasetInfo::paths`].
    pub paths: Option<Vec<String>>,
    /// `(height, width)` before resizing, when [`DatasetInfo::source_sizes`].
    pub source_sizes: Option<Vec<(u32, u32)>>,
    /// One column of values per [`DatasetInfo::meta`] name.
    pub meta: Vec<Vec<String>>,
}

impl Records {
    /// No rows, with the columns `info` describes.
    pub fn empty(info: &DatasetInfo) -> Records {
        Records {
            ids: Vec::new(),
            splits: Vec::new(),
            labels: info.labelled.then(Vec::new),
            samples: Samples::empty(info.layout),
            paths: info.paths.then(Vec::new),
            source_sizes: info.source_sizes.then(Vec::new),
            meta: vec![Vec::new(); info.meta.len()],
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The rows at `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Records {
        let pick = |v: &Vec<String>| rows.iter().map(|&i| v[i].clone()).collect();
        Records {
            ids: rows.iter().map(|&i| self.ids[i]).collect(),
            splits: rows.iter().map(|&i| self.splits[i]).collect(),
            labels: self
                .labels
                .as_ref()
                .map(|l| rows.iter().map(|&i| l[i]).collect()),
            samples: self.samples.select(rows),
            paths: self.paths.as_ref().map(pick),
            source_sizes: self
                .source_sizes
                .as_ref()
                .map(|s| rows.iter().map(|&i| s[i]).collect()),
            meta: self.meta.iter().map(pick).collect(),
        }
    }

    /// Appends `other`'s rows (same columns).
    pub fn append(&mut self, other: Records) -> Result<(), String> {
        if self.samples.layout() != other.samples.layout() {
            return Err(format!(
                "{} do not match the dataset's {}",
                other.samples.layout().describe(),
                self.samples.layout().describe()
            ));
        }
        self.ids.extend(other.ids);
        self.splits.extend(other.splits);
        match (&mut self.labels, other.labels) {
            (Some(a), Some(b)) => a.extend(b),
            (a, _) => *a = None,
        }
        match (&mut self.samples, other.samples) {
            (Samples::U8 { data: a, .. }, Samples::U8 { data: b, .. }) => a.extend(b),
            (Samples::F32 { data: a, .. }, Samples::F32 { data: b, .. }) => a.extend(b),
            (Samples::Tokens { data: a, .. }, Samples::Tokens { data: b, .. }) => a.extend(b),
            _ => unreachable!("layouts were compared above"),
        }
        if let (Some(a), Some(b)) = (&mut self.paths, other.paths) {
            a.extend(b);
        }
        if let (Some(a), Some(b)) = (&mut self.source_sizes, other.source_sizes) {
            a.extend(b);
        }
        for (a, b) in self.meta.iter_mut().zip(other.meta) {
            a.extend(b);
        }
        Ok(())
    }
}

impl Dataset {
    /// The layout of this dataset.
    pub fn layout(&self) -> Layout {
        if let Some(vocab) = self.vocab {
            return Layout::Tokens {
                len: self.shape.2,
                vocab,
            };
        }
        Layout::Image {
            channels: self.shape.0,
            height: self.shape.1,
            width: self.shape.2,
        }
    }

    /// As [`Records`] with no provenance columns.
    pub fn into_records(self) -> (DatasetInfo, Records) {
        let info = DatasetInfo::plain(self.layout(), self.labels.is_some());
        let records = Records {
            ids: self.ids,
            splits: self.splits,
            labels: self.labels,
            samples: match self.vocab {
                Some(vocab) => Samples::Tokens {
                    len: self.shape.2,
                    vocab,
                    data: self.tokens,
                },
                None => Samples::U8 {
                    shape: self.shape,
                    data: self.pixels,
                },
            },
            paths: None,
            source_sizes: None,
            meta: Vec::new(),
        };
        (info, records)
    }

    /// The image or token dataset in `records`; `None` for feature vectors.
    pub fn from_records(records: Records) -> Option<Dataset> {
        match records.samples {
            Samples::U8 { shape, data } => Some(Dataset {
                shape,
                ids: records.ids,
                splits: records.splits,
                labels: records.labels,
                pixels: data,
                vocab: None,
                tokens: Vec::new(),
            }),
            Samples::Tokens { len, vocab, data } => Some(Dataset {
                shape: (1, 1, len),
                ids: records.ids,
                splits: records.splits,
                labels: records.labels,
                pixels: Vec::new(),
                vocab: Some(vocab),
                tokens: data,
            }),
            Samples::F32 { .. } => None,
        }
    }
}

/// Data is read from regular files only: a device such as `/dev/zero` never ends, and a named
/// pipe or socket blocks until someone writes. `Err` says what `path` is instead (checked
/// before opening: opening a pipe for reading would already block).
pub fn check_regular(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let what = if meta.is_dir() {
        "a folder"
    } else {
        special_kind(&meta)
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "it is {what}, not a regular file (pretext reads data from regular files or \
             folders of them; point the key at one)"
        ),
    ))
}

#[cfg(unix)]
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(not(unix))]
fn special_kind(_meta: &std::fs::Metadata) -> &'static str {
    "not a file"
}

/// Open a regular file for reading ([`check_regular`] first).
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    check_regular(path)?;
    std::fs::File::open(path)
}

/// The whole contents of a regular file, never more than its size when checked (a file that
/// grows while it is read is cut there).
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let len = check_regular(path)?;
    let mut out = Vec::with_capacity(len as usize);
    std::fs::File::open(path)?.take(len).read_to_end(&mut out)?;
    Ok(out)
}

/// The error for a column `name` (the source's `role` column) that `path` lacks: a `did you
/// mean` for a close name, else the names there are (`listed_as` introduces them).
pub(crate) fn missing_column(
    path: &Path,
    name: &str,
    role: &str,
    available: &[String],
    listed_as: &str,
) -> DataError {
    let hint = crate::pipeline::closest_name(name, available.iter().map(String::as_str))
        .map(|c| format!("did you mean `{c}`?"))
        .unwrap_or_else(|| {
            let names: Vec<String> = available.iter().map(|c| format!("`{c}`")).collect();
            format!("{listed_as}: {}", names.join(", "))
        });
    DataError::file(
        path,
        format!("has no column `{name}` (named as the {role} column); {hint}"),
    )
}
