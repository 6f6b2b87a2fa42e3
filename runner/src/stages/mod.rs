//! Stage kinds: one file each. A stage reads its inputs' artifacts (folders of committed
//! store entries) and writes its own files into a fresh output folder; it never touches the
//! store itself (the executor commits the folder atomically).

pub mod augment;
pub mod curate;
pub mod finetune;
pub mod ingest;
pub mod ingest_text;
pub mod ood_eval;
pub mod pretrain;
pub mod probe;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::engine::Engine;
use crate::pipeline::{Pipeline, Stage, StageConfig};
use crate::plugins::Registry;

pub use crate::artifacts::metrics::{Metrics, TIMING_PREFIX};
pub(crate) use crate::artifacts::{read_json, write_json};
pub(crate) use crate::error::io_err;
pub use crate::error::StageError;
pub use crate::progress::{report_fields, Progress};
pub use crate::seeds::{mix_seed, permutation, Stream};

/// A committed input artifact.
#[derive(Debug, Clone)]
pub struct InputArtifact {
    pub stage: String,
    pub key: String,
    pub dir: PathBuf,
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
        StageConfig::Ingest(c) if c.source.is_text() => ingest_text::run(c, ctx),
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

/// Where a stage's `init` weights are: its `init` input's encoder, or its file.
pub fn init_source<'a>(
    ctx: &'a StageCtx,
    init: &'a crate::pipeline::InitConfig,
) -> Result<crate::artifacts::init::InitSource<'a>, StageError> {
    use crate::artifacts::init::InitSource;
    Ok(match init {
        crate::pipeline::InitConfig::Encoder => {
            let a = ctx.input("init")?;
            InitSource::Stage {
                stage: &a.stage,
                dir: &a.dir,
            }
        }
        crate::pipeline::InitConfig::File { path, names } => InitSource::File {
            path: &path.resolved,
            written: &path.written,
            names: *names,
        },
    })
}

/// The dataset of input `role`, tokenized like the data `meta`'s encoder was trained on (see
/// [`crate::artifacts::dataset::read_for_encoder`]); image datasets are read as they are.
pub fn read_input_for_encoder(
    ctx: &StageCtx,
    role: &str,
    meta: &crate::artifacts::encoder::EncoderMeta,
) -> Result<crate::data::Dataset, StageError> {
    let dir = &ctx.input(role)?.dir;
    match ctx.entries.get(&meta.dataset_key) {
        Some(trained_on) => {
            crate::artifacts::dataset::read_for_encoder(dir, trained_on, meta.input.width)
        }
        None => Ok(crate::data::table::read_dataset(
            &dir.join(crate::artifacts::dataset::DATASET_FILE),
        )?),
    }
}

/// Which of the first `n` samples go to the train split: `round(n · train)` of them (at least
/// one per split), chosen by a permutation seeded from `seed`.
pub fn train_mask(n: usize, train: f64, seed: u64) -> Vec<bool> {
    let n_train = ((n as f64 * train).round() as usize).clamp(1, n - 1);
    let perm = permutation(n, mix_seed(seed, Stream::Split, 0, 0, 0));
    let mut is_train = vec![false; n];
    for &i in &perm[..n_train] {
        is_train[i] = true;
    }
    is_train
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
            // Views that break each other (channels) fail the stage; say so before anything
            // runs when the input's image shape follows from the pipeline file.
            if let Some(shape) = declared_input_shape(stage, pipeline) {
                augment::view_shapes(c, registry, shape)?;
            }
            Ok(used)
        }
        StageConfig::Pretrain(c) => {
            let augment = stage.input("input").and_then(|i| pipeline.stage(i));
            let views = augment.and_then(|s| match &s.config {
                StageConfig::Augment(a) => {
                    // The sizes, when the augment stage's input declares its image shape.
                    let shapes = declared_input_shape(s, pipeline)
                        .map(|shape| augment::view_shapes(a, registry, shape))
                        .transpose();
                    Some(shapes.map(|shapes| pretrain::DeclaredViews {
                        count: a.views.len(),
                        shapes,
                        steps: augment::steps(a),
                        input: declared_input_shape(s, pipeline),
                    }))
                }
                _ => None,
            });
            pretrain::validate(c, registry, views.transpose()?)
        }
        _ => Ok(Vec::new()),
    }
}

/// The image shape of what `stage`'s `input` reads, when the pipeline file says (see
/// [`declared_image_shape`]).
fn declared_input_shape(stage: &Stage, pipeline: &Pipeline) -> Option<(usize, usize, usize)> {
    stage
        .input("input")
        .and_then(|i| pipeline.stage(i))
        .and_then(declared_image_shape)
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
