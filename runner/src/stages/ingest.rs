//! `ingest`: read a source (IDX, an image folder, parquet or CSV) into `dataset.parquet` with a
//! seeded train/test split.
//!
//! The source streams: records are read, decoded and written in chunks of [`CHUNK_ROWS`] (one
//! parquet row group each), so memory stays bounded whatever the data set's size. The split is
//! a seeded permutation of the first `n = min(records, limit)` record indices (the record index
//! is the sample id), so it does not depend on which records turn out to be unreadable.
//!
//! Unreadable records follow `on_error`: `fail` stops with an error naming the file or record
//! (exit code 2); `skip` logs each one with its path and reason, counts them in the `skipped`
//! metric and lists them in `skipped.json`.

use std::path::Path;

use super::{write_json, Metrics, Progress, StageCtx, StageError};
use crate::data::csv_source::{CsvSource, CsvSpec};
use crate::data::folder::FolderSource;
use crate::data::idx::IdxSource;
use crate::data::image::{Color, ImageOptions};
use crate::data::parquet_source::{self, ParquetSource, ParquetSpec};
use crate::data::source::{BadRecord, Source, SourceRecord};
use crate::data::table::DatasetWriter;
use crate::data::{DatasetInfo, Layout, Records, Split};
use crate::pipeline::{
    ColorMode, FeatureColumns, FolderLabels, IngestConfig, IngestSource, OnError,
};

pub const DATASET_FILE: &str = "dataset.parquet";
/// The records `on_error = "skip"` left out, and the files an image folder passed over.
pub const SKIPPED_FILE: &str = "skipped.json";
/// Records per chunk: one parquet row group, and the unit of memory while ingesting.
pub const CHUNK_ROWS: usize = 4096;

/// What ingesting produced.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestReport {
    pub info: DatasetInfo,
    pub samples: usize,
    pub train: usize,
    pub test: usize,
    /// Number of classes (named classes, or max label + 1), for labelled data.
    pub classes: Option<usize>,
    /// Records left out by `on_error = "skip"`, in source order.
    pub skipped: Vec<BadRecord>,
    /// Files the source passed over (non-image files in an image folder).
    pub ignored: Vec<String>,
}

/// `skipped.json`.
#[derive(serde::Serialize)]
struct SkippedFile<'a> {
    skipped: Vec<SkippedEntry<'a>>,
    ignored: &'a [String],
}

#[derive(serde::Serialize)]
struct SkippedEntry<'a> {
    at: &'a str,
    reason: &'a str,
}

pub fn run(cfg: &IngestConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let mut source = open_source(cfg)?;
    let report = ingest(
        source.as_mut(),
        cfg,
        ctx.seed,
        &ctx.out_dir.join(DATASET_FILE),
        ctx.progress,
    )?;
    let entries = report
        .skipped
        .iter()
        .map(|b| SkippedEntry {
            at: &b.at,
            reason: &b.reason,
        })
        .collect();
    write_json(
        &ctx.out_dir.join(SKIPPED_FILE),
        &SkippedFile {
            skipped: entries,
            ignored: &report.ignored,
        },
    )?;
    let mut m = Metrics::new();
    m.insert("samples".into(), report.samples as f64);
    m.insert("train".into(), report.train as f64);
    m.insert("test".into(), report.test as f64);
    if let Some(c) = report.classes {
        m.insert("classes".into(), c as f64);
    }
    m.insert("skipped".into(), report.skipped.len() as f64);
    if let IngestSource::ImageFolder { .. } = cfg.source {
        m.insert("ignored".into(), report.ignored.len() as f64);
    }
    if let Layout::Features { dim } = report.info.layout {
        m.insert("features".into(), dim as f64);
    }
    Ok(m)
}

/// The image options of an ingest stage.
pub fn image_options(cfg: &IngestConfig) -> ImageOptions {
    ImageOptions {
        color: cfg.color.map(|c| match c {
            ColorMode::Grayscale => Color::Grayscale,
            ColorMode::Rgb => Color::Rgb,
        }),
        resize: cfg.resize.map(|[h, w]| (h, w)),
    }
}

/// Opens the source an ingest stage reads.
pub fn open_source(cfg: &IngestConfig) -> Result<Box<dyn Source>, StageError> {
    let opts = image_options(cfg);
    Ok(match &cfg.source {
        IngestSource::Idx { images, labels } => {
            Box::new(IdxSource::open(&images.resolved, &labels.resolved, opts)?)
        }
        IngestSource::ImageFolder { path, labels } => Box::new(FolderSource::open(
            &path.resolved,
            *labels == FolderLabels::Folders,
            opts,
        )?),
        IngestSource::Parquet {
            path,
            image,
            features,
            label,
            meta,
            shape,
        } => {
            let spec = ParquetSpec {
                image: image.clone(),
                features: features.as_ref().map(|f| match f {
                    FeatureColumns::List(c) => parquet_source::FeatureColumns::List(c.clone()),
                    FeatureColumns::Columns(c) => {
                        parquet_source::FeatureColumns::Columns(c.clone())
                    }
                }),
                label: label.clone(),
                meta: meta.clone(),
                shape: shape.map(|[c, h, w]| (c, h, w)),
            };
            Box::new(ParquetSource::open(&path.resolved, spec, opts)?)
        }
        IngestSource::Csv {
            path,
            features,
            label,
            meta,
            delimiter,
        } => {
            let spec = CsvSpec {
                features: features.clone(),
                label: label.clone(),
                meta: meta.clone(),
                delimiter: u8::try_from(*delimiter).unwrap_or(b','),
            };
            Box::new(CsvSource::open(&path.resolved, &spec)?)
        }
    })
}

/// The file (or folder) a source reads, for messages.
fn source_path(cfg: &IngestConfig) -> &Path {
    match &cfg.source {
        IngestSource::Idx { images, .. } => &images.resolved,
        IngestSource::ImageFolder { path, .. }
        | IngestSource::Parquet { path, .. }
        | IngestSource::Csv { path, .. } => &path.resolved,
    }
}

/// Where record `id` is, for messages.
fn record_at(cfg: &IngestConfig, id: usize, rec: &SourceRecord) -> String {
    match &rec.path {
        Some(p) => source_path(cfg).join(p).display().to_string(),
        None => format!("{}: record {id}", source_path(cfg).display()),
    }
}

fn layout_mismatch(at: &str, got: Layout, want: Layout) -> StageError {
    let hint = match (got, want) {
        (
            Layout::Image {
                channels: a,
                height: h1,
                width: w1,
            },
            Layout::Image {
                channels: b,
                height: h2,
                width: w2,
            },
        ) => {
            let mut h = Vec::new();
            if (h1, w1) != (h2, w2) {
                h.push("`resize = [height, width]`");
            }
            if a != b {
                h.push("`color = \"grayscale\"` or `color = \"rgb\"`");
            }
            format!(
                "set {} in the ingest stage so every image gets the same shape",
                h.join(" and ")
            )
        }
        _ => "every sample of a dataset must have the same shape".into(),
    };
    StageError::Input(format!(
        "{at}: {} but earlier records are {}; {hint}",
        got.describe(),
        want.describe()
    ))
}

/// Reads `source` into a dataset file at `out`: the first `limit` records, split with a
/// permutation seeded by `seed`, unreadable records handled by `on_error`.
pub fn ingest(
    source: &mut dyn Source,
    cfg: &IngestConfig,
    seed: u64,
    out: &Path,
    progress: &dyn Progress,
) -> Result<IngestReport, StageError> {
    let total = source.len();
    let n = cfg.limit.map_or(total, |l| total.min(l as usize));
    if n < 2 {
        return Err(StageError::Input(format!(
            "{}: only {n} record(s); a train/test split needs at least 2",
            source_path(cfg).display()
        )));
    }
    let n_train = ((n as f64 * cfg.split.train).round() as usize).clamp(1, n - 1);
    let perm = super::permutation(n, super::mix_seed(seed, 1, 0, 0, 0));
    let mut is_train = vec![false; n];
    for &i in &perm[..n_train] {
        is_train[i] = true;
    }
    let cols = source.columns().clone();
    if !cols.ignored.is_empty() {
        tracing::info!(
            ignored = cols.ignored.len(),
            first = %cols.ignored[0],
            "passed over files that are not PNG or JPEG images"
        );
    }

    progress.start("reading records", n as u64);
    let mut writer: Option<(DatasetWriter, DatasetInfo)> = None;
    let mut chunk: Option<Records> = None;
    let mut skipped = Vec::new();
    let (mut train, mut test, mut max_label) = (0usize, 0usize, None::<u32>);
    let mut pos = 0;
    while pos < n {
        let items = source.next_batch(CHUNK_ROWS.min(n - pos))?;
        if items.is_empty() {
            tracing::warn!(
                read = pos,
                promised = n,
                "the source ended before the records it announced"
            );
            break;
        }
        let got = items.len();
        for item in items {
            let id = pos;
            pos += 1;
            let rec = match item {
                Ok(rec) if cols.labelled && rec.label.is_none() => {
                    Err(BadRecord::new(record_at(cfg, id, &rec), "has no label"))
                }
                other => other,
            };
            let rec = match rec {
                Ok(rec) => rec,
                Err(bad) => match cfg.on_error {
                    OnError::Fail => {
                        return Err(StageError::Input(format!(
                            "{bad}\n  help: set `on_error = \"skip\"` in the ingest stage to leave unreadable records out"
                        )))
                    }
                    OnError::Skip => {
                        tracing::warn!(record = %bad.at, reason = %bad.reason, "skipped an unreadable record");
                        skipped.push(bad);
                        continue;
                    }
                },
            };
            let layout = rec.sample.layout();
            let (_, info) = match &mut writer {
                Some(w) => w,
                None => {
                    let info = DatasetInfo {
                        layout,
                        labelled: cols.labelled,
                        classes: cols.classes.clone(),
                        paths: cols.paths,
                        source_sizes: cols.source_sizes,
                        meta: cols.meta.clone(),
                    };
                    chunk = Some(Records::empty(&info));
                    writer.insert((DatasetWriter::create(out, &info)?, info))
                }
            };
            if layout != info.layout {
                return Err(layout_mismatch(
                    &record_at(cfg, id, &rec),
                    layout,
                    info.layout,
                ));
            }
            let c = chunk.as_mut().expect("created with the writer");
            c.ids.push(id as u64);
            let split = if is_train[id] {
                train += 1;
                Split::Train
            } else {
                test += 1;
                Split::Test
            };
            c.splits.push(split);
            if let (Some(l), Some(v)) = (rec.label, c.labels.as_mut()) {
                v.push(l);
                max_label = max_label.max(Some(l));
            }
            c.samples
                .push(&rec.sample)
                .map_err(|m| StageError::Input(format!("{}: {m}", record_at(cfg, id, &rec))))?;
            if let Some(v) = c.paths.as_mut() {
                v.push(rec.path.clone().unwrap_or_default());
            }
            if let Some(v) = c.source_sizes.as_mut() {
                v.push(rec.source_size.unwrap_or_default());
            }
            for (col, value) in c.meta.iter_mut().zip(rec.meta) {
                col.push(value);
            }
        }
        if let (Some((w, info)), Some(c)) = (&mut writer, &mut chunk) {
            w.write(c)?;
            *c = Records::empty(info);
        }
        progress.advance(got as u64, "");
    }
    let Some((w, info)) = writer else {
        let first = skipped
            .first()
            .map_or(String::new(), |b| format!("; the first: {b}"));
        return Err(StageError::Input(format!(
            "{}: no readable records ({} skipped{first})",
            source_path(cfg).display(),
            skipped.len()
        )));
    };
    let samples = w.finish()?;
    progress.finish(&format!("{samples} samples"));
    for (count, name) in [(train, "train"), (test, "test")] {
        if count == 0 {
            return Err(StageError::Input(format!(
                "{}: the {name} split is empty after leaving out {} unreadable record(s); \
                 fix the records or change `split`",
                source_path(cfg).display(),
                skipped.len()
            )));
        }
    }
    let classes = info.labelled.then(|| match &info.classes {
        Some(c) => c.len(),
        None => max_label.map_or(0, |m| m as usize + 1),
    });
    Ok(IngestReport {
        info,
        samples,
        train,
        test,
        classes,
        skipped,
        ignored: cols.ignored,
    })
}
