//! `ingest`: read a source (IDX images + labels) into `dataset.parquet` with a seeded
//! train/test split.

use super::{Metrics, StageCtx, StageError};
use crate::data::{idx, table, DataError, Dataset, Split};
use crate::pipeline::{IngestConfig, IngestSource};

pub const DATASET_FILE: &str = "dataset.parquet";

pub fn run(cfg: &IngestConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let IngestSource::Idx { images, labels } = &cfg.source;
    ctx.progress.start("reading IDX files", 2);
    let img = idx::read(&images.resolved)?;
    ctx.progress.advance(1, "images");
    let lab = idx::read(&labels.resolved)?;
    ctx.progress.advance(1, "labels");
    let ds = build(
        &img,
        &lab,
        &images.resolved,
        &labels.resolved,
        cfg,
        ctx.seed,
    )?;
    let out = ctx.out_dir.join(DATASET_FILE);
    table::write_dataset(&ds, &out)?;
    ctx.progress.finish(&format!("{} samples", ds.len()));
    let train = ds.rows(Split::Train).len();
    let mut m = Metrics::new();
    m.insert("samples".into(), ds.len() as f64);
    m.insert("train".into(), train as f64);
    m.insert("test".into(), (ds.len() - train) as f64);
    if let Some(c) = ds.classes() {
        m.insert("classes".into(), c as f64);
    }
    Ok(m)
}

/// Pair images with labels, cap at `limit`, and split with a permutation seeded by `seed`.
pub fn build(
    img: &idx::IdxArray,
    lab: &idx::IdxArray,
    img_path: &std::path::Path,
    lab_path: &std::path::Path,
    cfg: &IngestConfig,
    seed: u64,
) -> Result<Dataset, DataError> {
    if img.dims.len() != 3 {
        return Err(DataError::file(
            img_path,
            format!(
                "expected an images file with 3 dimensions (n, height, width), found {:?}",
                img.dims
            ),
        ));
    }
    if lab.dims.len() != 1 {
        return Err(DataError::file(
            lab_path,
            format!(
                "expected a labels file with 1 dimension (n), found {:?}",
                lab.dims
            ),
        ));
    }
    let (n, h, w) = (img.dims[0], img.dims[1], img.dims[2]);
    if lab.dims[0] != n {
        return Err(DataError::file(
            lab_path,
            format!(
                "has {} labels but {} has {n} images; they must pair up",
                lab.dims[0],
                img_path.display()
            ),
        ));
    }
    let n = cfg.limit.map_or(n, |l| n.min(l as usize));
    if n < 2 {
        return Err(DataError::file(
            img_path,
            format!("only {n} sample(s); a train/test split needs at least 2"),
        ));
    }
    let n_train = ((n as f64 * cfg.split.train).round() as usize).clamp(1, n - 1);
    let perm = super::permutation(n, super::mix_seed(seed, 1, 0, 0, 0));
    let mut splits = vec![Split::Test; n];
    for &i in &perm[..n_train] {
        splits[i] = Split::Train;
    }
    Ok(Dataset {
        shape: (1, h, w),
        ids: (0..n as u64).collect(),
        splits,
        labels: Some(lab.data[..n].iter().map(|&l| l as u32).collect()),
        pixels: img.data[..n * h * w].to_vec(),
    })
}
