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

use super::{Metrics, Progress, StageCtx, StageError};
use crate::artifacts::dataset::{self, CHUNK_ROWS, DATASET_FILE};
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

/// Ingest an image, feature or CSV source (text sources go to `ingest_text`).
pub fn run(cfg: &IngestConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let mut source = open_source(cfg)?;
    let report = ingest(
        source.as_mut(),
        cfg,
        ctx.seed,
        &ctx.out_dir.join(DATASET_FILE),
        ctx.progress,
    )?;
    let skipped: Vec<(&str, &str)> = report
        .skipped
        .iter()
        .map(|b| (b.at.as_str(), b.reason.as_str()))
        .collect();
    dataset::write_skipped(ctx.out_dir, &skipped, &report.ignored, None)?;
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
        IngestSource::Text { .. } => {
            return Err(StageError::Failed(
                "internal: text sources are read by ingest_text".into(),
            ))
        }
    })
}

/// The file (or folder) a source reads, for messages.
fn source_path(cfg: &IngestConfig) -> &Path {
    match &cfg.source {
        IngestSource::Idx { images, .. } => &images.resolved,
        IngestSource::ImageFolder { path, .. }
        | IngestSource::Parquet { path, .. }
        | IngestSource::Csv { path, .. }
        | IngestSource::Text { path, .. } => &path.resolved,
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

/// A record as read, or `None` when `on_error = "skip"` leaves it out (recorded in `skipped`);
/// a record without a label in a labelled source is unreadable too.
fn accept(
    item: Result<SourceRecord, BadRecord>,
    labelled: bool,
    cfg: &IngestConfig,
    id: usize,
    skipped: &mut Vec<BadRecord>,
) -> Result<Option<SourceRecord>, StageError> {
    let rec = match item {
        Ok(rec) if labelled && rec.label.is_none() => {
            Err(BadRecord::new(record_at(cfg, id, &rec), "has no label"))
        }
        other => other,
    };
    match rec {
        Ok(rec) => Ok(Some(rec)),
        Err(bad) => match cfg.on_error {
            OnError::Fail => Err(StageError::Input(format!(
                "{bad}\n  help: set `on_error = \"skip\"` in the ingest stage to leave unreadable records out"
            ))),
            OnError::Skip => {
                tracing::warn!(record = %bad.at, reason = %bad.reason, "skipped an unreadable record");
                skipped.push(bad);
                Ok(None)
            }
        },
    }
}

/// Append record `id` to the chunk `c`: sample, id, split, label, path, size, metadata.
fn push_record(
    c: &mut Records,
    cfg: &IngestConfig,
    id: usize,
    split: Split,
    rec: SourceRecord,
) -> Result<(), StageError> {
    if let Err(m) = c.samples.push(&rec.sample) {
        return Err(StageError::Input(format!(
            "{}: {m}",
            record_at(cfg, id, &rec)
        )));
    }
    c.ids.push(id as u64);
    c.splits.push(split);
    if let (Some(l), Some(v)) = (rec.label, c.labels.as_mut()) {
        v.push(l);
    }
    if let Some(v) = c.paths.as_mut() {
        v.push(rec.path.unwrap_or_default());
    }
    if let Some(v) = c.source_sizes.as_mut() {
        v.push(rec.source_size.unwrap_or_default());
    }
    for (col, value) in c.meta.iter_mut().zip(rec.meta) {
        col.push(value);
    }
    Ok(())
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
    let is_train = super::train_mask(n, cfg.split.train, seed);
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
            if id >= n {
                break; // a source that returned more than asked for
            }
            pos += 1;
            let Some(rec) = accept(item, cols.labelled, cfg, id, &mut skipped)? else {
                continue;
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
            let split = if is_train[id] {
                train += 1;
                Split::Train
            } else {
                test += 1;
                Split::Test
            };
            if let (Some(l), true) = (rec.label, c.labels.is_some()) {
                max_label = max_label.max(Some(l));
            }
            push_record(c, cfg, id, split, rec)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::table::read_records;
    use crate::data::Samples;
    use crate::pipeline::StageConfig;
    use ::image::{DynamicImage, GrayImage, ImageFormat, RgbImage};

    use crate::progress::Silent as Quiet;

    /// The ingest config of a one-stage pipeline with `body` (absolute paths).
    fn config(body: &str) -> IngestConfig {
        let text = format!("[pipeline]\nname = \"t\"\n[stages.data]\nkind = \"ingest\"\n{body}\n");
        let p = crate::pipeline::parse_str(&text, Path::new("/p/pipeline.toml"), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        match &p.stages[0].config {
            StageConfig::Ingest(c) => c.clone(),
            _ => unreachable!(),
        }
    }

    fn fixture(name: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/data")
            .join(name)
            .display()
            .to_string()
    }

    /// Ingests with `body`; the report and the dataset written.
    fn run_ingest(body: &str) -> Result<(IngestReport, DatasetInfo, Records), StageError> {
        let cfg = config(body);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join(DATASET_FILE);
        let mut source = open_source(&cfg)?;
        let report = ingest(source.as_mut(), &cfg, 7, &out, &Quiet)?;
        let (info, records) = read_records(&out).unwrap();
        assert_eq!(info, report.info);
        assert_eq!(records.len(), report.samples);
        Ok((report, info, records))
    }

    fn input_err(r: Result<(IngestReport, DatasetInfo, Records), StageError>) -> String {
        match r {
            Err(e) if e.exit_code() == 2 => e.to_string(),
            Err(e) => panic!("expected an input error (exit 2), got a failure: {e}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn idx_streams_in_chunks_with_the_seeded_split() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/mnist");
        let (i, l) = (
            dir.join("t10k-images-idx3-ubyte.gz"),
            dir.join("t10k-labels-idx1-ubyte.gz"),
        );
        let body = format!(
            "source = {{ format = \"idx\", images = \"{}\", labels = \"{}\" }}\nlimit = 5000",
            i.display(),
            l.display()
        );
        let (report, info, rec) = run_ingest(&body).unwrap();
        assert_eq!(
            info,
            DatasetInfo::plain(
                Layout::Image {
                    channels: 1,
                    height: 28,
                    width: 28
                },
                true
            )
        );
        assert_eq!((report.samples, report.classes), (5000, Some(10)));
        assert_eq!((report.train, report.test), (4000, 1000));
        assert_eq!(rec.ids, (0..5000).collect::<Vec<u64>>());
        let img = crate::data::idx::read(&i).unwrap();
        let lab = crate::data::idx::read(&l).unwrap();
        assert_eq!(
            rec.samples,
            Samples::U8 {
                shape: (1, 28, 28),
                data: img.data[..5000 * 784].to_vec()
            }
        );
        assert_eq!(
            rec.labels.unwrap(),
            lab.data[..5000]
                .iter()
                .map(|&x| x as u32)
                .collect::<Vec<_>>()
        );
        // The split: the first 4000 of a permutation seeded by (seed, stream 1).
        let perm = super::super::permutation(
            5000,
            super::super::mix_seed(7, super::super::Stream::Split, 0, 0, 0),
        );
        let mut want = vec![Split::Test; 5000];
        for &p in &perm[..4000] {
            want[p] = Split::Train;
        }
        assert_eq!(rec.splits, want);
        // Written in chunks: two row groups (4096 + 904).
        let cfg = config(&body);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join(DATASET_FILE);
        ingest(open_source(&cfg).unwrap().as_mut(), &cfg, 7, &out, &Quiet).unwrap();
        let mut reader = crate::data::table::DatasetReader::open(&out).unwrap();
        let mut sizes = Vec::new();
        while let Some(c) = reader.next_chunk().unwrap() {
            sizes.push(c.len());
        }
        assert_eq!(sizes, [CHUNK_ROWS, 5000 - CHUNK_ROWS]);
    }

    fn write_image(path: &Path, format: ImageFormat, w: u32, h: u32, rgb: bool, seed: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let img = if rgb {
            DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
                ::image::Rgb([(x * 30 + seed) as u8, (y * 30) as u8, (seed * 50) as u8])
            }))
        } else {
            DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| {
                ::image::Luma([((x + y) * 20 + seed * 7) as u8])
            }))
        };
        img.save_with_format(path, format).unwrap();
    }

    /// `root/`: cats/a.png, cats/indoor/b.jpg, cats/indoor/c.png, dogs/d.jpg, dogs/e.png,
    /// dogs/old/f.jpg (all 8×6 RGB), dogs/broken.png (corrupt), notes.txt (not an image).
    fn image_folder(root: &Path) {
        let files = [
            ("cats/a.png", ImageFormat::Png),
            ("cats/indoor/b.jpg", ImageFormat::Jpeg),
            ("cats/indoor/c.png", ImageFormat::Png),
            ("dogs/d.jpg", ImageFormat::Jpeg),
            ("dogs/e.png", ImageFormat::Png),
            ("dogs/old/f.jpg", ImageFormat::Jpeg),
        ];
        for (i, (rel, format)) in files.iter().enumerate() {
            write_image(&root.join(rel), *format, 8, 6, true, i as u32);
        }
        std::fs::write(
            root.join("dogs/broken.png"),
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR trunc",
        )
        .unwrap();
        std::fs::write(root.join("notes.txt"), "not an image").unwrap();
    }

    #[test]
    fn image_folder_every_row_and_the_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("photos");
        image_folder(&root);
        let src = format!(
            "source = {{ format = \"image_folder\", path = \"{}\", labels = \"folders\" }}",
            root.display()
        );
        // fail (the default): exit 2, naming the file.
        let e = input_err(run_ingest(&src));
        assert!(
            e.contains(&format!("{}", root.join("dogs/broken.png").display()))
                && e.contains("corrupt or truncated PNG")
                && e.contains("on_error = \"skip\""),
            "{e}"
        );
        // skip: the other six, each checked.
        let (report, info, rec) = run_ingest(&format!("{src}\non_error = \"skip\"")).unwrap();
        assert_eq!(
            info.layout,
            Layout::Image {
                channels: 3,
                height: 6,
                width: 8
            }
        );
        assert_eq!(info.classes, Some(vec!["cats".into(), "dogs".into()]));
        assert!(info.paths && info.source_sizes && info.meta == ["folder"]);
        assert_eq!(
            rec.paths.as_ref().unwrap(),
            &[
                "cats/a.png",
                "cats/indoor/b.jpg",
                "cats/indoor/c.png",
                "dogs/d.jpg",
                "dogs/e.png",
                "dogs/old/f.jpg"
            ]
        );
        // Ids are positions in the walk: dogs/broken.png (4) sorts before dogs/d.jpg.
        assert_eq!(rec.ids, [0, 1, 2, 4, 5, 6]);
        assert_eq!(rec.labels.as_deref(), Some(&[0, 0, 0, 1, 1, 1][..]));
        assert_eq!(
            rec.meta[0],
            [
                "cats",
                "cats/indoor",
                "cats/indoor",
                "dogs",
                "dogs",
                "dogs/old"
            ]
        );
        assert_eq!(rec.source_sizes.as_deref(), Some(&[(6, 8); 6][..]));
        assert_eq!(report.skipped.len(), 1);
        assert!(report.skipped[0].at.ends_with("dogs/broken.png"));
        assert_eq!(report.ignored, ["notes.txt"]);
        assert_eq!((report.samples, report.classes), (6, Some(2)));
        assert_eq!(report.train + report.test, 6);
        // The PNG pixels come through exactly (channel-major): a.png is image 0.
        let Samples::U8 { data, .. } = &rec.samples else {
            panic!()
        };
        assert_eq!(&data[..3], &[0, 30, 60]); // red plane, first row: x * 30
        assert_eq!(data[48], 0); // green plane starts with y * 30 = 0

        // Unlabelled, grayscale and resized.
        let (report, info, rec) = run_ingest(&format!(
            "source = {{ format = \"image_folder\", path = \"{}\" }}\non_error = \"skip\"\ncolor = \"grayscale\"\nresize = [4, 5]",
            root.display()
        ))
        .unwrap();
        assert!(!info.labelled && rec.labels.is_none() && report.classes.is_none());
        assert_eq!(
            info.layout,
            Layout::Image {
                channels: 1,
                height: 4,
                width: 5
            }
        );
        assert_eq!(rec.source_sizes.as_deref(), Some(&[(6, 8); 6][..]));
    }

    #[test]
    fn mixed_image_shapes_need_resize_or_color() {
        let dir = tempfile::tempdir().unwrap();
        write_image(&dir.path().join("a.png"), ImageFormat::Png, 4, 4, false, 1);
        write_image(&dir.path().join("b.png"), ImageFormat::Png, 4, 4, true, 2);
        write_image(&dir.path().join("c.png"), ImageFormat::Png, 5, 4, false, 3);
        let src = format!(
            "source = {{ format = \"image_folder\", path = \"{}\" }}",
            dir.path().display()
        );
        let e = input_err(run_ingest(&src));
        assert!(
            e.contains("b.png: 4×4 images with 3 channels but earlier records are 4×4 images with 1 channel")
                && e.contains("set `color = \"grayscale\"` or `color = \"rgb\"` in the ingest stage"),
            "{e}"
        );
        let e = input_err(run_ingest(&format!("{src}\ncolor = \"rgb\"")));
        assert!(
            e.contains("c.png")
                && e.contains("4×5 images")
                && e.contains("resize = [height, width]"),
            "{e}"
        );
        let (_, info, _) = run_ingest(&format!("{src}\ncolor = \"rgb\"\nresize = 4")).unwrap();
        assert_eq!(
            info.layout,
            Layout::Image {
                channels: 3,
                height: 4,
                width: 4
            }
        );
    }

    #[test]
    fn parquet_images_snappy_every_row() {
        let src = format!(
            "source = {{ format = \"parquet\", path = \"{}\", image = \"image\", label = \"species\", meta = [\"camera\"] }}",
            fixture("images_snappy.parquet")
        );
        let e = input_err(run_ingest(&src));
        assert!(
            e.contains("images_snappy.parquet: record 3") && e.contains("corrupt"),
            "{e}"
        );
        let e = input_err(run_ingest(&format!("{src}\non_error = \"skip\"")));
        assert!(
            e.contains("record 5") && e.contains("8×8 images") && e.contains("resize"),
            "{e}"
        );
        let (report, info, rec) =
            run_ingest(&format!("{src}\non_error = \"skip\"\nresize = [6, 6]")).unwrap();
        assert_eq!(rec.ids, [0, 1, 2, 4, 5]);
        assert_eq!(rec.labels.as_deref(), Some(&[0, 1, 0, 1, 0][..]));
        assert_eq!(rec.meta[0], ["a", "b", "a", "", "a"]);
        assert_eq!(info.classes, Some(vec!["cat".into(), "dog".into()]));
        assert_eq!(
            rec.source_sizes.as_deref(),
            Some(&[(6, 6), (6, 6), (6, 6), (6, 6), (8, 8)][..])
        );
        assert_eq!(report.skipped.len(), 1);
        assert!(report.skipped[0].at.ends_with("record 3"));
        assert!(!info.paths);
    }

    #[test]
    fn parquet_features_zstd_every_row() {
        let src = format!(
            "source = {{ format = \"parquet\", path = \"{}\", features = \"embedding\", label = \"label\", meta = [\"site\"] }}",
            fixture("features_zstd.parquet")
        );
        let e = input_err(run_ingest(&src));
        assert!(
            e.contains("features_zstd.parquet: record 2") && e.contains("non-finite"),
            "{e}"
        );
        let (report, info, rec) = run_ingest(&format!(
            "{src}\non_error = \"skip\"\nsplit = {{ train = 0.5 }}"
        ))
        .unwrap();
        assert_eq!(info.layout, Layout::Features { dim: 3 });
        assert_eq!(rec.ids, [0, 1, 3, 6]);
        assert_eq!(
            rec.samples,
            Samples::F32 {
                dim: 3,
                data: vec![0.5, 0.25, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.5]
            }
        );
        assert_eq!(rec.labels.as_deref(), Some(&[0, 1, 0, 2][..]));
        assert_eq!(rec.meta[0], ["s1", "s2", "s2", ""]);
        assert_eq!(report.classes, Some(3));
        let reasons: Vec<&str> = report.skipped.iter().map(|b| b.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3);
        assert!(
            reasons[1].contains("has 2 values") && reasons[2].contains("null"),
            "{reasons:?}"
        );
        // The features of a dataset are not images.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.parquet");
        crate::data::table::write_records(&p, &info, &rec).unwrap();
        let e = crate::data::table::read_dataset(&p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("image augmentations cannot apply"), "{e}");
    }

    #[test]
    fn pandas_parquet_and_csv() {
        let (report, info, rec) = run_ingest(&format!(
            "source = {{ format = \"parquet\", path = \"{}\", features = [\"a\", \"b\", \"c\"], label = \"kind\" }}",
            fixture("tabular_pandas.parquet")
        ))
        .unwrap();
        assert_eq!(info.layout, Layout::Features { dim: 3 });
        assert_eq!(rec.labels.as_deref(), Some(&[0, 1, 0, 2, 1][..]));
        assert_eq!(report.samples, 5);

        let src = format!(
            "source = {{ format = \"csv\", path = \"{}\", label = \"species\", meta = [\"site\"] }}",
            fixture("tabular.csv")
        );
        let e = input_err(run_ingest(&src));
        assert!(
            e.contains("tabular.csv: record 2 (line 4)") && e.contains("`abc`"),
            "{e}"
        );
        let (report, info, rec) = run_ingest(&format!(
            "{src}\non_error = \"skip\"\nsplit = {{ train = 0.5 }}"
        ))
        .unwrap();
        assert_eq!(info.layout, Layout::Features { dim: 2 });
        assert_eq!(rec.ids, [0, 1, 3, 6]);
        assert_eq!(
            rec.samples,
            Samples::F32 {
                dim: 2,
                data: vec![5.1, 3.5, 4.9, 3.0, 6.4, 3.2, 6.5, 3.0]
            }
        );
        assert_eq!(rec.labels.as_deref(), Some(&[0, 0, 1, 2][..]));
        assert_eq!(rec.meta[0], ["north", "south", "south", ""]);
        assert_eq!(report.skipped.len(), 3);
        assert!(report.skipped[1].reason.contains("has 2 fields"));
        assert!(report.skipped[2].reason.contains("empty value"));
    }

    #[test]
    fn limit_and_small_or_empty_results() {
        let csv = fixture("tabular.csv");
        let (report, _, rec) = run_ingest(&format!(
            "source = {{ format = \"csv\", path = \"{csv}\", label = \"species\", meta = [\"site\"] }}\nlimit = 2"
        ))
        .unwrap();
        assert_eq!((report.samples, rec.ids.clone()), (2, vec![0, 1]));
        assert_eq!((report.train, report.test), (1, 1));
        let e = input_err(run_ingest(&format!(
            "source = {{ format = \"csv\", path = \"{csv}\" }}\nlimit = 1"
        )));
        assert!(e.contains("only 1 record(s)"), "{e}");
        // Every record unreadable.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.csv");
        std::fs::write(&p, "x,y\na,1\nb,2\n").unwrap();
        let e = input_err(run_ingest(&format!(
            "source = {{ format = \"csv\", path = \"{}\" }}\non_error = \"skip\"",
            p.display()
        )));
        assert!(
            e.contains("no readable records (2 skipped; the first:") && e.contains("`a`"),
            "{e}"
        );
        // One split left empty by skipping.
        std::fs::write(&p, "x\n1\nbad\n").unwrap();
        let r = run_ingest(&format!(
            "source = {{ format = \"csv\", path = \"{}\" }}\non_error = \"skip\"\nsplit = {{ train = 0.5 }}",
            p.display()
        ));
        let e = input_err(r);
        assert!(
            e.contains("split is empty after leaving out 1 unreadable record"),
            "{e}"
        );
        // A missing folder or file is an input error naming it.
        let e = input_err(run_ingest(
            "source = { format = \"image_folder\", path = \"/no/photos\" }",
        ));
        assert!(
            e.contains("/no/photos") && e.contains("does not exist"),
            "{e}"
        );
        let e = input_err(run_ingest(
            "source = { format = \"parquet\", path = \"/no/x.parquet\", image = \"png\" }",
        ));
        assert!(e.contains("/no/x.parquet: cannot open"), "{e}");
    }
}
