//! `metrics.json`: a stage's scalar results, checked by `expect` gates and shown in the
//! summary table and the report.

use std::collections::BTreeMap;
use std::path::Path;

use super::read_json;
use crate::error::StageError;

pub const METRICS_FILE: &str = "metrics.json";

/// Scalar results of a stage, written to `metrics.json` and checked by `expect` gates.
pub type Metrics = BTreeMap<String, f64>;

/// Metrics under this prefix are wall-clock measurements: they vary between runs, so the
/// executor keeps them out of the store entry (whose digests must be reproducible) and records
/// them in the run log instead.
pub const TIMING_PREFIX: &str = "time.";

/// Reads a committed entry's `metrics.json` (numbers; `null` stands for a NaN).
pub fn read(dir: &Path) -> Result<Metrics, StageError> {
    let raw: BTreeMap<String, Option<f64>> = read_json(&dir.join(METRICS_FILE))?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}
