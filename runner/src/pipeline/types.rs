//! The resolved pipeline: validated, with every default filled in, paths
//! resolved, and stages in a topological order.
//!
//! These are the types the rest of the runner works with. They serialise
//! with serde; [`Stage::canonical_config`] gives the stable JSON form used
//! for cache keys (paths as written, not absolute).

use std::path::PathBuf;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

/// A validated pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    /// `[pipeline] name`: non-empty, `[A-Za-z0-9_.-]+`.
    pub name: String,
    /// `[pipeline] seed` (default 0).
    pub seed: u64,
    /// `[pipeline] description`, if any.
    pub description: Option<String>,
    /// The pipeline file, absolute.
    pub file: PathBuf,
    /// The directory holding the pipeline file, absolute; relative paths in
    /// the file are relative to it.
    pub dir: PathBuf,
    /// The artifact store (`[pipeline] store`, default `.pretext`), absolute.
    pub store_dir: PathBuf,
    /// Plugin libraries or folders (`[pipeline] plugin_paths`), absolute.
    pub plugin_paths: Vec<PathBuf>,
    /// The stages, in topological order (ties broken by file order).
    pub stages: Vec<Stage>,
}

impl Pipeline {
    /// Stage names in execution (topological) order; ties between
    /// independent stages are broken by the order they appear in the file.
    pub fn order(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }

    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The stages that read the output of the stage called `name`.
    pub fn consumers(&self, name: &str) -> Vec<&Stage> {
        self.stages
            .iter()
            .filter(|s| s.inputs.iter().any(|(_, i)| i == name))
            .collect()
    }
}

/// One stage of the graph.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// `[stages.<name>]`: `[A-Za-z0-9_-]+`.
    pub name: String,
    /// What the stage does.
    pub kind: StageKind,
    /// `(role, stage name)` pairs in a fixed order per kind: `("input", ..)`
    /// for augment and pretrain, `("encoder", ..)` then `("data", ..)` for probe.
    pub inputs: Vec<(String, String)>,
    /// The kind-specific settings, defaults filled.
    pub config: StageConfig,
    /// Metric expectations, sorted by metric name.
    pub expect: Vec<Expectation>,
}

impl Stage {
    /// The stage named by input `role` (`"input"`, `"encoder"`, `"data"`).
    pub fn input(&self, role: &str) -> Option<&str> {
        self.inputs
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, s)| s.as_str())
    }

    /// The artifact this stage produces.
    pub fn output(&self) -> ArtifactKind {
        self.kind.output()
    }

    /// A stable JSON form of everything that determines this stage's result:
    /// `{"kind", "inputs": {role: stage}, "config": {..}, "expect": [..]}`,
    /// with all defaults filled, paths as written in the file (never
    /// absolute) and every object's keys sorted. The stage's own name is not
    /// included. Hash it together with the upstream stages' keys.
    pub fn canonical_config(&self) -> Value {
        let inputs: Map<String, Value> = self
            .inputs
            .iter()
            .map(|(role, stage)| (role.clone(), Value::String(stage.clone())))
            .collect();
        let mut out = Map::new();
        out.insert("kind".into(), Value::String(self.kind.as_str().into()));
        out.insert("inputs".into(), Value::Object(inputs));
        out.insert(
            "config".into(),
            serde_json::to_value(&self.config).unwrap_or(Value::Null),
        );
        out.insert(
            "expect".into(),
            serde_json::to_value(&self.expect).unwrap_or(Value::Null),
        );
        sort_keys(Value::Object(out))
    }
}

/// Rebuilds every object with its keys in sorted order, so the JSON is the
/// same whether or not serde_json's `preserve_order` feature is on.
pub(crate) fn sort_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// The kinds of stage a pipeline can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Reads a dataset from disk.
    Ingest,
    /// Filters a dataset (not yet supported).
    Curate,
    /// Builds augmented views of a dataset.
    Augment,
    /// Self-supervised pretraining of an encoder.
    Pretrain,
    /// Linear / kNN probes of an encoder on a dataset.
    Probe,
    /// Supervised fine-tuning (not yet supported).
    Finetune,
    /// Out-of-distribution evaluation (not yet supported).
    OodEval,
    /// Report generation (not yet supported).
    Report,
}

impl StageKind {
    /// Every kind, in pipeline order.
    pub const ALL: [StageKind; 8] = [
        StageKind::Ingest,
        StageKind::Curate,
        StageKind::Augment,
        StageKind::Pretrain,
        StageKind::Probe,
        StageKind::Finetune,
        StageKind::OodEval,
        StageKind::Report,
    ];

    /// The kinds this version can run.
    pub const SUPPORTED: [StageKind; 4] = [
        StageKind::Ingest,
        StageKind::Augment,
        StageKind::Pretrain,
        StageKind::Probe,
    ];

    /// The name used in `kind = "..."`.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Ingest => "ingest",
            StageKind::Curate => "curate",
            StageKind::Augment => "augment",
            StageKind::Pretrain => "pretrain",
            StageKind::Probe => "probe",
            StageKind::Finetune => "finetune",
            StageKind::OodEval => "ood_eval",
            StageKind::Report => "report",
        }
    }

    /// The kind called `s`, if any.
    pub fn from_name(s: &str) -> Option<StageKind> {
        StageKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether this version can run stages of this kind.
    pub fn is_supported(self) -> bool {
        StageKind::SUPPORTED.contains(&self)
    }

    /// The artifact a stage of this kind produces.
    pub fn output(self) -> ArtifactKind {
        match self {
            StageKind::Ingest | StageKind::Curate => ArtifactKind::Dataset,
            StageKind::Augment => ArtifactKind::Views,
            StageKind::Pretrain | StageKind::Finetune => ArtifactKind::Encoder,
            StageKind::Probe | StageKind::OodEval => ArtifactKind::Metrics,
            StageKind::Report => ArtifactKind::Report,
        }
    }
}

/// What a stage produces, and what its inputs must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// Samples with labels and a train/test split.
    Dataset,
    /// Augmented views of a dataset.
    Views,
    /// A trained (or fine-tuned) encoder.
    Encoder,
    /// Evaluation metrics.
    Metrics,
    /// A rendered report.
    Report,
}

impl ArtifactKind {
    /// Lower-case name: `dataset`, `views`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Dataset => "dataset",
            ArtifactKind::Views => "views",
            ArtifactKind::Encoder => "encoder",
            ArtifactKind::Metrics => "metrics",
            ArtifactKind::Report => "report",
        }
    }

    /// The name with an article, for messages: `a dataset`, `an encoder`, `views`.
    pub fn describe(self) -> &'static str {
        match self {
            ArtifactKind::Dataset => "a dataset",
            ArtifactKind::Views => "views",
            ArtifactKind::Encoder => "an encoder",
            ArtifactKind::Metrics => "metrics",
            ArtifactKind::Report => "a report",
        }
    }

    /// The stage kinds that produce this artifact.
    pub fn producers(self) -> Vec<StageKind> {
        StageKind::ALL
            .into_iter()
            .filter(|k| k.output() == self)
            .collect()
    }
}

/// Kind-specific settings of a stage.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum StageConfig {
    /// `kind = "ingest"`.
    Ingest(IngestConfig),
    /// `kind = "augment"`.
    Augment(AugmentConfig),
    /// `kind = "pretrain"`.
    Pretrain(PretrainConfig),
    /// `kind = "probe"`.
    Probe(ProbeConfig),
}

/// A path from the pipeline file: as written (for cache keys and messages)
/// and resolved against the pipeline's directory.
///
/// Serialises as the path as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPath {
    /// Exactly as written in the file.
    pub written: String,
    /// Absolute: the pipeline directory joined with `written`, lexically normalised.
    pub resolved: PathBuf,
}

impl Serialize for ConfigPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.written)
    }
}

/// `kind = "ingest"`.
#[derive(Debug, Clone, Serialize)]
pub struct IngestConfig {
    /// Where the samples come from.
    pub source: IngestSource,
    /// Train/test fractions.
    pub split: Split,
    /// Cap on the number of samples read, if any.
    pub limit: Option<u64>,
}

impl IngestConfig {
    /// The data files (or folders) the source reads, by role: their contents go into the stage
    /// key, so replacing a data file in place reruns the stage.
    pub fn source_files(&self) -> Vec<(&'static str, &std::path::Path)> {
        match &self.source {
            IngestSource::Idx { images, labels } => {
                vec![("images", &images.resolved), ("labels", &labels.resolved)]
            }
        }
    }
}

/// `source = { format = .., .. }`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum IngestSource {
    /// IDX files (the MNIST format): an images file and a labels file.
    Idx {
        /// The images file.
        images: ConfigPath,
        /// The labels file.
        labels: ConfigPath,
    },
}

/// `split = { train, test }`: both in (0, 1), summing to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Split {
    /// Fraction of samples for training (default 0.8).
    pub train: f64,
    /// Fraction of samples for testing (default 0.2).
    pub test: f64,
}

/// `kind = "augment"`.
#[derive(Debug, Clone, Serialize)]
pub struct AugmentConfig {
    /// One list of augmentations per view (at least one view).
    pub views: Vec<Vec<Augmentation>>,
    /// How many preview samples to render (0..=64, default 8).
    pub preview: usize,
}

/// One augmentation of a view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Augmentation {
    /// The plugin augmentation's name.
    pub name: String,
    /// Its parameters (a JSON object, empty for defaults), validated by the plugin.
    pub params: Value,
}

/// `kind = "pretrain"`.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainConfig {
    /// The self-supervised objective.
    pub objective: Objective,
    /// The encoder architecture.
    pub model: ModelConfig,
    /// The optimiser and schedule.
    pub optim: OptimConfig,
    /// Training epochs (> 0, default 10).
    pub epochs: u64,
    /// Batch size (> 0, default 256).
    pub batch_size: usize,
    /// Clip the global gradient norm to this value (> 0), if set.
    pub grad_clip: Option<f64>,
    /// Accumulate gradients over this many batches per optimizer step (≥ 1, default 1).
    pub accumulate: u64,
    /// When to stop because the representation collapsed.
    pub collapse: CollapseConfig,
}

/// `collapse = { min_std, patience }`: stop the stage when the per-epoch embedding spread
/// (mean std of L2-normalised embeddings) stays below `min_std` for `patience` epochs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollapseConfig {
    /// Threshold on the embedding spread (≥ 0; 0 disables the check; default 0.01).
    pub min_std: f64,
    /// Consecutive epochs below the threshold before stopping (≥ 1, default 2).
    pub patience: u64,
}

/// `objective = { plugin = .., ..params }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Objective {
    /// The objective plugin's name (e.g. `simclr`).
    pub plugin: String,
    /// The other keys (a JSON object), validated by the plugin.
    pub params: Value,
}

/// `model = { arch, .. }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// The architecture and its own settings.
    #[serde(flatten)]
    pub arch: Arch,
    /// Embedding size (> 0, default 128).
    pub embed_dim: usize,
    /// Whether to use batch normalisation (default true).
    pub batch_norm: bool,
}

/// `model.arch` and the keys that only apply to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum Arch {
    /// A multi-layer perceptron (the default).
    Mlp {
        /// Hidden layer widths (default `[512, 512]`).
        hidden: Vec<usize>,
    },
    /// A small convolutional network.
    Convnet {
        /// Base channel count (> 0, default 16).
        width: usize,
    },
    /// A small ResNet: a stem and three stages of residual blocks (widths w, 2w, 4w).
    Resnet {
        /// Base channel count (> 0, default 16).
        width: usize,
        /// Residual blocks per stage (> 0, default 1).
        blocks: usize,
    },
}

/// `optim = { .. }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptimConfig {
    /// The optimiser and its own settings.
    #[serde(flatten)]
    pub optimizer: Optimizer,
    /// Learning rate (> 0, default 1e-3).
    pub lr: f64,
    /// Weight decay (>= 0, default 1e-4).
    pub weight_decay: f64,
    /// Warm-up epochs (< epochs, default 0).
    pub warmup_epochs: u64,
    /// Learning-rate schedule (default cosine).
    pub schedule: Schedule,
}

/// `optim.name` and the keys that only apply to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Optimizer {
    /// SGD with momentum.
    Sgd {
        /// Momentum in [0, 1) (default 0.9).
        momentum: f64,
    },
    /// LARS: momentum SGD with layer-wise trust ratios.
    Lars {
        /// Momentum in [0, 1) (default 0.9).
        momentum: f64,
        /// Trust coefficient η (> 0, default 0.001).
        eta: f64,
    },
    /// AdamW (the default).
    #[serde(rename = "adamw")]
    AdamW {
        /// Beta1, beta2, each in [0, 1) (default `[0.9, 0.999]`).
        betas: [f64; 2],
    },
}

/// `optim.schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Cosine decay after warm-up (the default).
    Cosine,
    /// Constant after warm-up.
    Constant,
}

/// `kind = "probe"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeConfig {
    /// Which probes to run, each once, in the order listed (default linear, knn).
    pub methods: Vec<ProbeMethod>,
    /// Linear probe settings; `Some` exactly when `methods` has `linear`.
    pub linear: Option<LinearProbeConfig>,
    /// kNN probe settings; `Some` exactly when `methods` has `knn`.
    pub knn: Option<KnnConfig>,
    /// Also probe a randomly initialised encoder of the same architecture (default true).
    pub baseline: bool,
}

/// A probe method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeMethod {
    /// Logistic regression on frozen embeddings.
    Linear,
    /// Weighted k-nearest-neighbours on frozen embeddings.
    Knn,
}

impl ProbeMethod {
    /// Every method, in default order.
    pub const ALL: [ProbeMethod; 2] = [ProbeMethod::Linear, ProbeMethod::Knn];

    /// The name used in `methods`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeMethod::Linear => "linear",
            ProbeMethod::Knn => "knn",
        }
    }
}

/// `linear = { epochs, lr, weight_decay }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinearProbeConfig {
    /// Epochs (> 0, default 100).
    pub epochs: u64,
    /// Learning rate (> 0, default 0.01).
    pub lr: f64,
    /// Weight decay (>= 0, default 1e-4).
    pub weight_decay: f64,
}

/// `knn = { k, temperature }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnnConfig {
    /// Neighbours (> 0, default 20).
    pub k: usize,
    /// Softmax temperature (> 0, default 0.07).
    pub temperature: f64,
}

/// `expect = { "<metric>" = { min, max } }`: a bound the run checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expectation {
    /// Metric name, e.g. `linear.accuracy`.
    pub metric: String,
    /// Inclusive lower bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Inclusive upper bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl Expectation {
    /// Whether `value` satisfies the bounds (NaN never does).
    pub fn holds(&self, value: f64) -> bool {
        !value.is_nan()
            && self.min.map_or(true, |m| value >= m)
            && self.max.map_or(true, |m| value <= m)
    }
}
