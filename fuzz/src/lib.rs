//! The harnesses behind the fuzz targets: each feeds arbitrary bytes to one input parser of
//! pretext. A harness may return errors (that is the point); it must never panic.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

use pretext::data::image::ImageOptions;
use pretext::data::parquet_source::{FeatureColumns, ParquetSource, ParquetSpec};
use pretext::data::source::Source;

/// Runs a harness so that only panics escaping pretext count as crashes. libFuzzer's panic
/// hook aborts on every panic, including the ones pretext catches on purpose
/// (`pretext::panic_guard`, e.g. around the parquet crate, which panics on some corrupt
/// files); this replaces it with a quiet hook and aborts only when a panic reaches here.
pub fn guarded(f: impl FnOnce()) {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("panic escaped pretext: {msg}");
        std::process::abort();
    }
}

/// `pretext::pipeline::parse_str` on the bytes as UTF-8 (the loader reads text), plain and
/// with a `--set` override applied.
pub fn pipeline_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/nonexistent-fuzz/pipeline.toml");
    let _ = pretext::pipeline::parse_str(text, file, &[]);
    let _ = pretext::pipeline::parse_str(text, file, &["stages.ssl.epochs=2".to_string()]);
}

/// `pretext::data::idx::parse`.
pub fn idx_parse(data: &[u8]) {
    let _ = pretext::data::idx::parse(data, Path::new("fuzz.idx"));
}

/// The column selections the parquet fixtures are read with.
pub fn parquet_specs() -> Vec<ParquetSpec> {
    vec![
        ParquetSpec {
            features: Some(FeatureColumns::List("embedding".into())),
            label: Some("label".into()),
            meta: vec!["site".into()],
            ..ParquetSpec::default()
        },
        ParquetSpec {
            image: Some("image_struct".into()),
            label: Some("species".into()),
            meta: vec!["camera".into()],
            ..ParquetSpec::default()
        },
        ParquetSpec {
            image: Some("image".into()),
            label: Some("species".into()),
            ..ParquetSpec::default()
        },
        ParquetSpec {
            features: Some(FeatureColumns::Columns(vec![
                "a".into(),
                "b".into(),
                "c".into(),
            ])),
            label: Some("kind".into()),
            ..ParquetSpec::default()
        },
    ]
}

/// The parquet ingest path on a file holding `data`: open with each spec and read every
/// record; then the store's own dataset reader on the same file.
pub fn parquet_ingest(data: &[u8], scratch: &Path) {
    let path: PathBuf = scratch.to_path_buf();
    if std::fs::write(&path, data).is_err() {
        return;
    }
    for spec in parquet_specs() {
        if let Ok(mut src) = ParquetSource::open(&path, spec, ImageOptions::default()) {
            let _ = src.len();
            // Bounded: a corrupt length field must not make the harness loop forever.
            for _ in 0..1000 {
                match src.next_batch(64) {
                    Ok(batch) if !batch.is_empty() => {}
                    _ => break,
                }
            }
        }
    }
    let _ = pretext::data::table::read_records(&path);
    stream(&path);
}

/// The streaming readers of a dataset over the memory budget (pretrain's block shuffle,
/// augment's preview rows) on the file at `path`: errors are fine, panics and unbounded
/// loops are not.
pub fn stream(path: &Path) {
    use pretext::data::{memory, Split};
    let _ = memory::first_rows(path, Split::Train, 8);
    if let Ok(s) = memory::Streamed::open(path, 1 << 20) {
        let mut epoch = s.epoch(Split::Train, 1, 0);
        for _ in 0..1000 {
            match epoch.next_batch(64) {
                Ok(batch) if !batch.is_empty() => {}
                _ => break,
            }
        }
        let _ = s.rows(&[0, 1, 4096]);
    }
}

/// Plugin parameter conversion: the bytes as JSON; an object goes through
/// `RawParams::from_json` (pipeline values → C ABI parameters).
pub fn plugin_params(data: &[u8]) {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = pretext::plugins::host::RawParams::from_json(&map);
    }
}
