//! Stage kinds: one file each. A stage reads its inputs' artifacts (folders of committed
//! store entries) and writes its own files into a fresh output folder; it never touches the
//! store itself (the executor commits the folder atomically).

pub mod augment;
pub mod corruptions;
pub mod curate;
pub mod finetune;
pub mod ingest;
pub mod ingest_text;
pub mod monitor;
pub mod ood_eval;
pub mod ood_metrics;
pub mod pretrain;
pub mod probe;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::engine::Engine;
use crate::pipeline::{Pipeline, Stage, StageConfig};
use crate::plugins::Registry;

/// Scalar results of a stage, written to `metrics.json` and checked by `expect` gates.
pub type Metrics = BTreeMap<String, f64>;

/// Metrics under this prefix are wall-clock measurements: they vary between runs, so the
/// executor keeps them out of the store entry (whose digests must be reproducible) and records
/// them in the run log instead.
pub const TIMING_PREFIX: &str = "time.";

/// Why a stage did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Bad input (data files, plugin parameters): exit code 2.
    #[error("{0}")]
    Input(String),
    /// The stage ran and failed: exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl From<crate::data::DataError> for StageError {
    fn from(e: crate::data::DataError) -> Self {
        StageError::Input(e.to_string())
    }
}

impl From<crate::engine::EngineError> for StageError {
    fn from(e: crate::engine::EngineError) -> Self {
        engine_err(e)
    }
}

impl From<crate::plugins::CallError> for StageError {
    fn from(e: crate::plugins::CallError) -> Self {
        StageError::Failed(e.to_string())
    }
}

pub(crate) fn io_err(path: &Path, e: impl std::error::Error + 'static) -> StageError {
    let e: &(dyn std::error::Error + 'static) = &e;
    match e.downcast_ref::<std::io::Error>() {
        Some(io) => StageError::Failed(describe_io(path, io)),
        None => StageError::Failed(format!("{}: {e}", path.display())),
    }
}

/// What an I/O error a person can meet means for `path`, and what to do about it, with the
/// system's own words in brackets (the store's errors use the same advice).
pub(crate) fn describe_io(path: &Path, e: &std::io::Error) -> String {
    format!("{}: {}", path.display(), crate::store::with_advice(e))
}

/// A stage error from an engine error: file errors get [`describe_io`]'s advice.
pub(crate) fn engine_err(e: crate::engine::EngineError) -> StageError {
    match e {
        crate::engine::EngineError::Io { path, source, .. } => {
            StageError::Failed(describe_io(&path, &source))
        }
        other => StageError::Failed(other.to_string()),
    }
}

/// A committed input artifact.
#[derive(Debug, Clone)]
pub struct InputArtifact {
    pub stage: String,
    pub key: String,
    pub dir: PathBuf,
}

/// Reports progress of long steps (the executor draws bars or logs lines).
pub trait Progress: Sync {
    /// A new phase with `total` steps (e.g. one epoch).
    fn start(&self, label: &str, total: u64);
    fn advance(&self, n: u64, message: &str);
    fn finish(&self, message: &str);
    /// Named values at a training step, for curves (`train/loss`, `epoch/embedding_std`):
    /// the executor writes them to TensorBoard event files. Steps count optimiser updates
    /// from 1; values at one step are reported together.
    fn scalars(&self, _step: u64, _values: &[(&str, f64)]) {}
}

/// Reports every numeric field of `record` (a serialisable struct) as `<prefix>/<field>`,
/// nested maps as `<prefix>/<field>.<key>`; fields that are not numbers are left out.
pub fn report_fields(
    progress: &dyn Progress,
    step: u64,
    prefix: &str,
    record: &impl serde::Serialize,
) {
    fn walk(v: &serde_json::Value, name: String, out: &mut Vec<(String, f64)>) {
        match v {
            serde_json::Value::Number(n) => out.extend(n.as_f64().map(|x| (name, x))),
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    walk(v, format!("{name}.{k}"), out);
                }
            }
            _ => {}
        }
    }
    let mut values = Vec::new();
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(record) {
        for (k, v) in &fields {
            walk(v, format!("{prefix}/{k}"), &mut values);
        }
    }
    let refs: Vec<(&str, f64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    progress.scalars(step, &refs);
}

/// Everything a stage may use.
pub struct StageCtx<'a> {
    pub engine: &'a Engine,
    pub registry: &'a Registry,
    pub seed: u64,
    /// Where to write outputs (an uncommitted temp folder).
    pub out_dir: &'a Path,
    /// Direct inputs by role (`input`, `encoder`, `data`).
    pub inputs: BTreeMap<String, InputArtifact>,
    /// Every entry completed in this run so far, by key (to follow references in artifacts).
    pub entries: &'a HashMap<String, PathBuf>,
    pub progress: &'a dyn Progress,
    /// A folder that survives a failed or killed run of this stage key (checkpoints), if the
    /// executor provides one.
    pub checkpoint_dir: Option<&'a Path>,
}

impl StageCtx<'_> {
    pub fn input(&self, role: &str) -> Result<&InputArtifact, StageError> {
        self.inputs
            .get(role)
            .ok_or_else(|| StageError::Failed(format!("internal: missing input `{role}`")))
    }
    pub fn entry_by_key(&self, key: &str) -> Result<&PathBuf, StageError> {
        self.entries
            .get(key)
            .ok_or_else(|| StageError::Failed(format!("internal: entry {key} is not available")))
    }
}

/// Run one stage.
pub fn run(stage: &Stage, ctx: &StageCtx) -> Result<Metrics, StageError> {
    match &stage.config {
        StageConfig::Ingest(c) => ingest::run(c, ctx),
        StageConfig::Curate(c) => curate::run(c, ctx),
        StageConfig::Augment(c) => augment::run(c, ctx),
        StageConfig::Pretrain(c) => pretrain::run(c, ctx),
        StageConfig::Probe(c) => probe::run(c, ctx),
        StageConfig::Finetune(c) => finetune::run(c, ctx),
        StageConfig::OodEval(c) => ood_eval::run(c, ctx),
        StageConfig::Report(c) => report::run(c, ctx),
    }
}

/// Plugin libraries a stage uses directly, as (plugin name, library digest); instantiates each
/// plugin with its parameters so bad parameters are reported before anything runs.
pub fn plugins_used(
    stage: &Stage,
    pipeline: &Pipeline,
    registry: &Registry,
) -> Result<Vec<(String, String)>, StageError> {
    match &stage.config {
        StageConfig::Augment(c) => {
            let used = augment::validate(c, registry)?;
            // Views of different shapes fail the stage; say so before anything runs when the
            // input's image shape follows from the pipeline file.
            if let Some(shape) = stage
                .input("input")
                .and_then(|i| pipeline.stage(i))
                .and_then(declared_image_shape)
            {
                augment::check_view_shapes(c, registry, shape)?;
            }
            Ok(used)
        }
        StageConfig::Pretrain(c) => {
            let views = stage
                .input("input")
                .and_then(|i| pipeline.stage(i))
                .and_then(|s| match &s.config {
                    StageConfig::Augment(a) => Some(a.views.len()),
                    _ => None,
                });
            pretrain::validate(c, registry, views)
        }
        _ => Ok(Vec::new()),
    }
}

/// The `(channels, height, width)` every image of an ingest stage has, when its file says:
/// a `resize`, and the channels from `color` (or the IDX format, always one channel).
fn declared_image_shape(stage: &Stage) -> Option<(usize, usize, usize)> {
    let StageConfig::Ingest(ic) = &stage.config else {
        return None;
    };
    let [h, w] = ic.resize?;
    let channels = match (&ic.color, &ic.source) {
        (Some(crate::pipeline::ColorMode::Grayscale), _) => 1,
        (Some(crate::pipeline::ColorMode::Rgb), _) => 3,
        (None, crate::pipeline::IngestSource::Idx { .. }) => 1,
        _ => return None,
    };
    Some((channels, h as usize, w as usize))
}

/// Seed of one random draw, from (pipeline seed, stream, a, b, c): independent of thread
/// scheduling and batch composition.
pub fn mix_seed(seed: u64, stream: Stream, a: u64, b: u64, c: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    for v in [seed, stream as u64, a, b, c] {
        h.update(&v.to_le_bytes());
    }
    let out = h.finalize();
    u64::from_le_bytes(out.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The independent random streams of a run: each draw mixes the pipeline seed with its
/// stream and its coordinates ([`mix_seed`]), so no two purposes ever share numbers. The
/// values are part of every result: never renumber one (add new streams at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// The train/test split of an ingest stage.
    Split = 1,
    /// The augmentation of one sample's view (coordinates: epoch, sample id, view).
    Views = 2,
    /// The augment stage's per-position draws.
    AugmentStage = 3,
    /// A model's initial weights (the probe's random-init baseline reuses them on purpose:
    /// it is the pretrained encoder's starting point).
    ModelInit = 4,
    /// The samples the per-epoch health monitor embeds.
    MonitorSamples = 5,
    /// Pretraining's batch order per epoch.
    EpochOrder = 6,
    /// A linear probe's initial weights.
    ProbeInit = 7,
    /// A linear probe's batch order per epoch.
    ProbeOrder = 8,
    /// The views the health monitor embeds.
    MonitorViews = 9,
    /// MAE's hidden patches per sample and epoch.
    MaeMask = 10,
    /// The samples kept per class in a label-fraction subset.
    ClassSubset = 11,
    /// Dropout masks per training step.
    Dropout = 12,
    /// The masks of MLM validation.
    MlmValidation = 13,
    /// The supervised baseline's batch order per epoch.
    SupervisedOrder = 14,
    /// One supervised-baseline repetition.
    SupervisedRun = 15,
    /// A fine-tune's new head.
    FinetuneInit = 16,
    /// The labelled subset a fine-tune trains on.
    FinetuneLabels = 17,
    /// A fine-tune's batch order per epoch.
    FinetuneOrder = 18,
    /// The corruptions of an OOD robustness suite.
    Corruptions = 19,
    /// The label-fraction subsets of probes, per repetition and fraction (was 12, shared
    /// with dropout, before engine-3).
    LabelSubset = 20,
    /// The supervised baseline's initial weights (was 13, shared with MLM validation).
    SupervisedInit = 21,
}

/// A deterministic permutation of `0..n` (Fisher–Yates with a seeded generator).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    use rand::{seq::SliceRandom, SeedableRng};
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    v
}

pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), StageError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| io_err(path, e))?;
    std::fs::write(path, text + "\n").map_err(|e| io_err(path, e))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StageError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| io_err(path, e))
}
