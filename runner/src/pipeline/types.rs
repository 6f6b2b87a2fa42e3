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
    /// Audits a dataset (duplicates, quality, balance, leakage) and writes a curated copy.
    Curate,
    /// Builds augmented views of a dataset.
    Augment,
    /// Self-supervised pretraining of an encoder.
    Pretrain,
    /// Linear / kNN probes of an encoder on a dataset.
    Probe,
    /// Supervised fine-tuning of an encoder (full, partial, LoRA or adapters).
    Finetune,
    /// Out-of-distribution detection and corruption robustness of an encoder.
    OodEval,
    /// An HTML + Markdown report with plots of other stages' results.
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
    pub const SUPPORTED: [StageKind; 8] = StageKind::ALL;

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
    /// `kind = "curate"`.
    Curate(CurateConfig),
    /// `kind = "augment"`.
    Augment(AugmentConfig),
    /// `kind = "pretrain"`.
    Pretrain(PretrainConfig),
    /// `kind = "probe"`.
    Probe(ProbeConfig),
    /// `kind = "finetune"`.
    Finetune(FinetuneConfig),
    /// `kind = "ood_eval"`.
    OodEval(OodEvalConfig),
    /// `kind = "report"`.
    Report(ReportConfig),
}

impl StageConfig {
    /// The files (or folders) a stage reads from outside the store, by role: an ingest
    /// stage's data files, a pretrain or finetune stage's `init` file. Their contents go into
    /// the stage key (`source_digests`), so replacing one in place reruns the stage.
    pub fn source_files(&self) -> Vec<(&'static str, &std::path::Path)> {
        match self {
            StageConfig::Ingest(ic) => ic.source_files(),
            StageConfig::Pretrain(PretrainConfig { init: Some(i), .. })
            | StageConfig::Finetune(FinetuneConfig { init: Some(i), .. }) => {
                i.file().map(|f| ("init", f)).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }
}

/// `kind = "report"`: renders other stages' results as `report.html` and `report.md` with PNG
/// plots.
#[derive(Debug, Clone, Serialize)]
pub struct ReportConfig {
    /// `title` (default: the pipeline's name).
    pub title: String,
    /// The stages reported on, in the order given (`inputs`, default: every other
    /// non-report stage in file order), each with its kind and `expect` bounds so the report
    /// can show every gate's verdict.
    pub sources: Vec<ReportSource>,
}

/// One stage a report reads.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSource {
    pub stage: String,
    pub kind: StageKind,
    pub expect: Vec<Expectation>,
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

/// `kind = "ingest"`: reads a source into `dataset.parquet` with a seeded train/test split.
///
/// The keys `on_error`, `resize` and `color` are left out of the canonical config (and so of
/// the stage key) while at their defaults, so pipelines written before they existed keep
/// their keys.
#[derive(Debug, Clone, Serialize)]
pub struct IngestConfig {
    /// `source = { format = "...", .. }`: where the samples come from.
    pub source: IngestSource,
    /// `split = { train, test }`: train/test fractions.
    pub split: Split,
    /// `limit`: read at most this many records, the first ones in source order (> 0; default:
    /// all). Records skipped by `on_error = "skip"` count towards the limit.
    pub limit: Option<u64>,
    /// `on_error = "fail" | "skip"`: what a record that cannot be read (a corrupt image, a
    /// malformed CSV row, a null value) does. `fail` (the default) stops the stage with an
    /// error naming the file or record (exit code 2); `skip` leaves it out, logs its path and
    /// the reason, and counts it in the `skipped` metric (`skipped.json` lists them).
    #[serde(skip_serializing_if = "OnError::is_fail")]
    pub on_error: OnError,
    /// `resize = [height, width]` (or one number for a square): resize every image to this
    /// size (bilinear, the aspect ratio is not kept), each side 1 to 8192. Image sources only
    /// (`idx`, `image_folder`, `parquet` with `image`). Without it all images must share one
    /// size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize: Option<[u32; 2]>,
    /// `color = "grayscale" | "rgb"`: convert every image to 1 or 3 channels (alpha is
    /// dropped). Image sources only. Without it gray images stay 1 channel and colour images
    /// become 3, and all images must agree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<ColorMode>,
    /// `tokenizer = { vocab_size, seq_len, min_frequency }` or `{ path, seq_len }`: text
    /// sources only (and required there): the byte-level BPE vocabulary trained on the train
    /// split, or an existing `tokenizer.json`, and the length of every token sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerConfig>,
}

/// `tokenizer` of a text ingest stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenizerConfig {
    /// Where the vocabulary comes from.
    #[serde(flatten)]
    pub vocab: TokenizerVocab,
    /// `seq_len`: tokens per sample, `[CLS]` included; longer passages are cut, shorter ones
    /// padded with `[PAD]`; 8 to 4096 (default 64).
    pub seq_len: usize,
}

/// Where a text ingest stage's tokenizer comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TokenizerVocab {
    /// A byte-level BPE trained on the train split.
    Train {
        /// `vocab_size`: the vocabulary size to learn, specials (5) and bytes (256)
        /// included; 262 to 65536 (default 2000). Training stops earlier when no pair
        /// reaches `min_frequency`.
        vocab_size: usize,
        /// `min_frequency`: a merge needs a pair seen at least this often (default 2).
        min_frequency: u64,
    },
    /// `path`: an existing `tokenizer.json` (its contents go into the stage key).
    File {
        /// The file, relative to the pipeline file.
        path: ConfigPath,
    },
}

impl IngestConfig {
    /// The data files (or folders) the source reads, by role: their contents go into the stage
    /// key, so replacing a data file in place reruns the stage.
    pub fn source_files(&self) -> Vec<(&'static str, &std::path::Path)> {
        match &self.source {
            IngestSource::Idx { images, labels } => {
                vec![("images", &images.resolved), ("labels", &labels.resolved)]
            }
            IngestSource::ImageFolder { path, .. }
            | IngestSource::Parquet { path, .. }
            | IngestSource::Csv { path, .. }
            | IngestSource::Text { path, .. } => {
                let mut files = vec![("path", path.resolved.as_path())];
                if let Some(TokenizerConfig {
                    vocab: TokenizerVocab::File { path },
                    ..
                }) = &self.tokenizer
                {
                    files.push(("tokenizer", path.resolved.as_path()));
                }
                files
            }
        }
    }
}

/// `on_error` of an ingest stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop at the first unreadable record (the default).
    #[default]
    Fail,
    /// Leave unreadable records out, logging and counting them.
    Skip,
}

impl OnError {
    /// Whether this is the default, `fail`.
    pub fn is_fail(&self) -> bool {
        *self == OnError::Fail
    }
}

/// `color` of an ingest stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorMode {
    /// One channel.
    Grayscale,
    /// Three channels.
    Rgb,
}

/// `source = { format = .., .. }`. Paths are relative to the pipeline file.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum IngestSource {
    /// `format = "idx"`: IDX files (the MNIST format), raw or gzipped.
    Idx {
        /// `images`: the images file (3 dimensions: n, height, width).
        images: ConfigPath,
        /// `labels`: the labels file (1 dimension: n).
        labels: ConfigPath,
    },
    /// `format = "image_folder"`: every PNG/JPEG file under a folder, walked in sorted order
    /// (hidden files and other files are ignored and counted). Records carry their path,
    /// their size before resizing and their folder (the metadata column `folder`).
    ImageFolder {
        /// `path`: the folder.
        path: ConfigPath,
        /// `labels = "none" | "folders"` (default `none`: unlabelled data is the normal case).
        /// `folders` takes each image's class from its first-level sub-folder
        /// (`path/<class>/**/x.png`), classes numbered in sorted order.
        labels: FolderLabels,
    },
    /// `format = "parquet"`: a parquet file (pyarrow/pandas; snappy, zstd or uncompressed),
    /// read row group by row group. Exactly one of `image` and `features`.
    Parquet {
        /// `path`: the file.
        path: ConfigPath,
        /// `image`: a binary column of encoded PNG/JPEG bytes or raw pixels (or a struct
        /// column with a `bytes` field).
        image: Option<String>,
        /// `features`: a `list<number>` column (a string), or several numeric columns (an
        /// array of strings), as the feature vector.
        features: Option<FeatureColumns>,
        /// `label`: an integer column (values ≥ 0) or a string column (class names, numbered
        /// in sorted order).
        label: Option<String>,
        /// `meta = ["col", ..]`: columns carried into the dataset as metadata (strings), e.g.
        /// for curate's distribution audit.
        meta: Vec<String>,
        /// `shape = [channels, height, width]`: the shape of raw pixel bytes (channel-major);
        /// only with `image`, and only needed for raw bytes without pretext metadata.
        shape: Option<[usize; 3]>,
    },
    /// `format = "csv"`: a CSV file whose first row names the columns; tabular features.
    Csv {
        /// `path`: the file.
        path: ConfigPath,
        /// `features = ["col", ..]`: the numeric feature columns, in order (default: every
        /// column that is neither `label` nor in `meta`).
        features: Option<Vec<String>>,
        /// `label`: the label column: integers ≥ 0, or class names (numbered in sorted order).
        label: Option<String>,
        /// `meta = ["col", ..]`: columns carried into the dataset as metadata.
        meta: Vec<String>,
        /// `delimiter`: one ASCII character (default `","`).
        delimiter: char,
    },
    /// `format = "text"`: plain-text documents cut into passages of `passage_words` words,
    /// tokenised by the stage's `tokenizer`: a `.txt` file, a folder of `.txt` files (walked in
    /// sorted order), or a parquet file with one document per row of a string `column`.
    Text {
        /// `path`: the file or folder.
        path: ConfigPath,
        /// `column`: parquet only: the string column of documents.
        #[serde(skip_serializing_if = "Option::is_none")]
        column: Option<String>,
        /// `labels = "none" | "files" | "folders"`: files and folders only: each passage's
        /// class is its file's name (without `.txt`) or its first-level sub-folder.
        labels: TextLabels,
        /// `label_delimiter`: with `labels = "files"`, keep only the part of the file name
        /// before the first occurrence of this string (`austen-emma.txt` → `austen` with
        /// `"-"`).
        #[serde(skip_serializing_if = "Option::is_none")]
        label_delimiter: Option<String>,
        /// `label`: parquet only: a string or integer column of class names.
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        /// `encoding = "utf-8" | "latin-1" | "auto"` (default `utf-8`): how file bytes are
        /// decoded; invalid UTF-8 is an error naming the line, unless `auto` falls back to
        /// Latin-1 for that file.
        encoding: TextEncoding,
        /// `passage_words`: words per passage (default 48; 4 to 2048).
        passage_words: usize,
        /// `samples = "documents"`: each document (a row of `column`, a file) is one sample,
        /// whole (cut to the tokenizer's `seq_len`), its id the document's index: captions
        /// paired with the rows of an image source. Left out of the canonical form when
        /// `false` (`samples = "passages"`, the default).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        documents: bool,
        /// `path_column`: parquet only: a string column of file names stored as each
        /// document's `path` (what `text.pair_by = "path"` pairs captions with images by).
        #[serde(skip_serializing_if = "Option::is_none")]
        path_column: Option<String>,
    },
}

/// `labels` of a text source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextLabels {
    None,
    Files,
    Folders,
}

/// `encoding` of a text source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TextEncoding {
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "latin-1")]
    Latin1,
    #[serde(rename = "auto")]
    Auto,
}

impl IngestSource {
    /// Whether the source yields images (so `resize` and `color` apply).
    pub fn has_images(&self) -> bool {
        match self {
            IngestSource::Idx { .. } | IngestSource::ImageFolder { .. } => true,
            IngestSource::Parquet { image, .. } => image.is_some(),
            IngestSource::Csv { .. } | IngestSource::Text { .. } => false,
        }
    }

    /// Whether the source yields text (so a `tokenizer` is needed).
    pub fn is_text(&self) -> bool {
        matches!(self, IngestSource::Text { .. })
    }
}

/// `labels` of an image-folder source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FolderLabels {
    /// No labels.
    None,
    /// The first-level sub-folder names.
    Folders,
}

/// `features` of a parquet source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FeatureColumns {
    /// One list column.
    List(String),
    /// Several numeric columns, in order.
    Columns(Vec<String>),
}

/// `split = { train, test }`: both in (0, 1), summing to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Split {
    /// Fraction of samples for training (default 0.8).
    pub train: f64,
    /// Fraction of samples for testing (default 0.2).
    pub test: f64,
}

/// `kind = "curate"`: audits a dataset stage's output and writes a curated copy.
///
/// `input` names a stage that produces a dataset (ingest or another curate). The stage finds
/// exact duplicates (same content hash) and near duplicates (perceptual hash for images,
/// cosine similarity for feature vectors), blank, too dark, too bright and tiny images, the
/// class histogram and the distribution of metadata columns (the bias audit), and leakage (the
/// same sample, exactly or nearly, in both train and test). It writes `dataset.parquet` (the
/// rows `drop` keeps), `audit.json` (every finding, pairs listed by id) and metrics:
/// `samples`, `kept`, `dropped`, `dropped_fraction`, `duplicates`, `duplicate_fraction`,
/// `near_duplicate_pairs`, `blank`, `dark`, `bright`, `tiny`, `leakage`, `leaked_pairs`,
/// `classes` and `class_imbalance` (the last two for labelled data).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurateConfig {
    /// `near_duplicates = { .. }`: the near-duplicate search.
    pub near_duplicates: NearDuplicates,
    /// `quality = { .. }`: the image quality checks.
    pub quality: Quality,
    /// `metadata = ["col", ..]`: metadata columns whose distribution to audit (per split and
    /// per class); default: every metadata column of the dataset (`folder` for image folders,
    /// the `meta` columns of parquet and CSV sources).
    pub metadata: Option<Vec<String>>,
    /// `drop = [..]`: which findings to remove from the curated dataset, any of
    /// `duplicates` (exact copies within a split; the lowest id is kept), `near_duplicates`
    /// (near copies within a split; the lowest id of each group is kept), `blank`, `dark`,
    /// `bright`, `tiny`, `leaked_train` (the train copies of samples also in test) and
    /// `leaked_test` (the test copies); default `["duplicates", "leaked_train"]`; `[]` only
    /// audits. Everything is reported whether dropped or not.
    pub drop: Vec<DropRule>,
    /// `fail_if = { metric = bound, .. }`: fail the stage (exit code 1) when a metric is above
    /// its bound, e.g. `fail_if = { duplicate_fraction = 0.05, leakage = 0 }`. Metrics:
    /// those in [`CurateConfig::CHECKS`]; bounds are finite and ≥ 0. Checked on the findings
    /// in the input (before dropping). The audit is still written, to the stage's checkpoint
    /// folder, which the error names.
    pub fail_if: Vec<FailIf>,
    /// `max_listed`: list at most this many pairs (or ids) per finding in `audit.json`
    /// (0 to 1000000, default 1000); counts are always complete.
    pub max_listed: usize,
}

impl CurateConfig {
    /// The metrics `fail_if` can bound.
    pub const CHECKS: [&'static str; 12] = [
        "duplicates",
        "duplicate_fraction",
        "near_duplicate_pairs",
        "blank",
        "dark",
        "bright",
        "tiny",
        "leakage",
        "leaked_pairs",
        "class_imbalance",
        "dropped",
        "dropped_fraction",
    ];

    /// Whether `rule` is in `drop`.
    pub fn drops(&self, rule: DropRule) -> bool {
        self.drop.contains(&rule)
    }
}

/// `near_duplicates = { enabled, max_distance, min_cosine }`.
///
/// Images: pairs whose 64-bit perceptual hashes (DCT of a 32×32 grayscale thumbnail) differ in
/// at most `max_distance` bits are candidates, confirmed when their mean-centred thumbnails
/// have a cosine similarity of at least `min_cosine` (the hash alone matches many distinct
/// but similar small images, e.g. MNIST digits). Feature vectors: pairs with a cosine
/// similarity of at least `min_cosine` (all pairs are compared, so the search is skipped,
/// and reported as skipped, above 20000 samples). Blank samples are left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NearDuplicates {
    /// `enabled`: search for near duplicates (default true).
    pub enabled: bool,
    /// `max_distance`: the perceptual-hash distance of image candidates, in bits (0 to 32,
    /// default 8).
    pub max_distance: u32,
    /// `min_cosine`: the similarity that confirms a near duplicate (in (0, 1], default 0.995).
    pub min_cosine: f64,
}

/// `quality = { blank_std, min_mean, max_mean, min_size }` (pixel values on the 0–255 scale).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quality {
    /// `blank_std`: an image whose pixel standard deviation is at most this is blank
    /// (constant); for feature vectors, a vector with all values equal is (≥ 0, default 1).
    pub blank_std: f64,
    /// `min_mean`: a non-blank image whose mean pixel value is below this is dark (0 to 255,
    /// default 2; 0 disables).
    pub min_mean: f64,
    /// `max_mean`: a non-blank image whose mean is above this is bright (0 to 255, default
    /// 253; 255 disables); must be above `min_mean`.
    pub max_mean: f64,
    /// `min_size`: an image whose height or width before resizing was below this many pixels
    /// is tiny (0 to 65535, default 16; 0 disables). Only for sources that record the size
    /// (image folders, encoded parquet images).
    pub min_size: u32,
}

/// One entry of a curate stage's `drop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropRule {
    /// Exact copies within a split, all but the lowest id.
    Duplicates,
    /// Near copies within a split, all but the lowest id of each group.
    NearDuplicates,
    /// Blank (constant) samples.
    Blank,
    /// Too dark images.
    Dark,
    /// Too bright images.
    Bright,
    /// Images below `quality.min_size`.
    Tiny,
    /// The train copies of samples that are also (exactly or nearly) in test.
    LeakedTrain,
    /// The test copies of samples that are also in train.
    LeakedTest,
}

impl DropRule {
    /// Every rule, in canonical order.
    pub const ALL: [DropRule; 8] = [
        DropRule::Duplicates,
        DropRule::NearDuplicates,
        DropRule::Blank,
        DropRule::Dark,
        DropRule::Bright,
        DropRule::Tiny,
        DropRule::LeakedTrain,
        DropRule::LeakedTest,
    ];

    /// The name used in `drop`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropRule::Duplicates => "duplicates",
            DropRule::NearDuplicates => "near_duplicates",
            DropRule::Blank => "blank",
            DropRule::Dark => "dark",
            DropRule::Bright => "bright",
            DropRule::Tiny => "tiny",
            DropRule::LeakedTrain => "leaked_train",
            DropRule::LeakedTest => "leaked_test",
        }
    }
}

/// One `fail_if` entry: fail when `metric` is above `max`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailIf {
    /// One of [`CurateConfig::CHECKS`].
    pub metric: String,
    /// The largest allowed value.
    pub max: f64,
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
    /// Where the encoder's starting weights come from (`None`: seeded random init). Left out
    /// of the canonical form when not set, so stage keys without it are unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<InitConfig>,
    /// Phases of training (`curriculum = [..]`), in order; their epochs add up to `epochs`.
    /// Empty: one flat schedule. Left out of the canonical form when empty, so stage keys
    /// without it are unchanged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub curriculum: Vec<CurriculumPhase>,
    /// Image–text pairs (`text = { .. }`): the captions and the text tower an objective with
    /// `paired_text` (CLIP) trains beside the image encoder. Left out of the canonical form
    /// when not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<TextTower>,
}

/// `text = { input, dim, depth, heads, dropout, prompt }` of a pretrain stage: each sample's
/// caption is the row of the `input` stage's token dataset with the same sample id; the text
/// transformer over it ends in a linear head to the image encoder's `embed_dim`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextTower {
    /// The stage whose token dataset holds the captions (its name is an input of the stage;
    /// its content key, not its name, is in the stage key).
    #[serde(skip)]
    pub input: String,
    /// Token width (> 0, divisible by `heads`, default 64).
    pub dim: usize,
    /// Transformer blocks (1 to 64, default 2).
    pub depth: usize,
    /// Attention heads (> 0, default 4).
    pub heads: usize,
    /// Dropout in the text tower while training, in `[0, 1)` (default 0).
    pub dropout: f64,
    /// Zero-shot classification: each class's prompt, `{}` standing for the class name
    /// (default `"{}"`).
    pub prompt: String,
    /// `pair_by = "path"`: an image and its caption share their path without the extension
    /// (`cat/001.png` and `cat/001.txt`) instead of their sample id. Left out of the canonical
    /// form when `false` (`"id"`, the default).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub by_path: bool,
}

/// One phase of a curriculum: a run of epochs with its own view size, crop scale and batch.
/// What a phase leaves out is the stage's own setting (the augment stage's views, the stage's
/// `batch_size`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurriculumPhase {
    /// Epochs of this phase (> 0).
    pub epochs: u64,
    /// Side of the views at the model's input size (the global crops) in this phase: the
    /// `size` of their `random_resized_crop`; smaller (local) crops are scaled alike.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// The crop area range of the global views' `random_resized_crop` in this phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<[f64; 2]>,
    /// The batch size of this phase.
    pub batch_size: usize,
}

/// `init = { .. }` of a pretrain or finetune stage: the weights the encoder starts from
/// instead of its seeded random initialisation (heads and projectors are initialised as
/// usual, the optimizer state starts fresh).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum InitConfig {
    /// `init = { encoder = "<stage>" }`: the encoder artifact of an earlier pretrain or
    /// finetune stage, the stage's input of role `init` (so its key is part of this one).
    Encoder,
    /// `init = { path = "..", names = ".." }`: a safetensors file (its contents' digest goes
    /// into the stage key, under `source_digests.init`).
    File {
        /// The file, relative to the pipeline file.
        path: ConfigPath,
        /// Whose tensor names (and layouts) the file uses.
        names: InitNames,
    },
}

/// `init.names`: the tensor names of an `init` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InitNames {
    /// pretext's own names (`encoder.…`), as in an `encoder.safetensors` (the default).
    Pretext,
    /// A PyTorch state dict of the same architecture (the mapping is documented in
    /// `docs/reference/pretrain.md#init`).
    Torch,
}

impl InitConfig {
    /// The file an `init` reads from outside the store, if it reads one.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            InitConfig::File { path, .. } => Some(&path.resolved),
            InitConfig::Encoder => None,
        }
    }
}

/// `collapse = { min_std, patience }`: stop the stage when the per-epoch spread (mean std of
/// L2-normalised outputs) stays below `min_std` (scaled by √(128/d) for outputs wider than 128)
/// without recovering for `patience` epochs (see `stages::pretrain::Collapse`).
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
    /// Recompute the encoder's block activations in backward instead of keeping them
    /// (gradient checkpointing; resnet, vit and transformer; default false). Not part of the
    /// canonical form, so not of the stage key: it trades memory for time and changes no
    /// result (the gradients are bit for bit the same; `docs/performance.md`).
    #[serde(skip)]
    pub checkpoint_activations: bool,
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
        /// `pool = "flatten"`: the last feature map flattened into the head instead of its
        /// average (`"mean"`, the default). Left out of the canonical form when false, so
        /// stage keys of pipelines that do not set it are unchanged.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        flatten: bool,
    },
    /// A small ResNet: a stem and three stages of residual blocks (widths w, 2w, 4w).
    Resnet {
        /// Base channel count (> 0, default 16).
        width: usize,
        /// Residual blocks per stage (> 0, default 1).
        blocks: usize,
    },
    /// A vision transformer: patch embedding, pre-norm transformer blocks, pooling.
    Vit {
        /// Patch side in pixels; must divide the image height and width (default 7).
        patch: usize,
        /// Token width (> 0, divisible by `heads`, default 64).
        dim: usize,
        /// Transformer blocks (> 0, default 4).
        depth: usize,
        /// Attention heads (> 0, default 4).
        heads: usize,
        /// `"cls"` (a learned CLS token, the default) or `"mean"` (mean of the patch tokens).
        pool: Pool,
    },
    /// A text transformer over token sequences: token and position embeddings, pre-norm
    /// blocks, pooling. Needs a text dataset (the vocabulary and length come from it).
    Transformer {
        /// Token width (> 0, divisible by `heads`, default 64).
        dim: usize,
        /// Transformer blocks (1 to 64, default 4).
        depth: usize,
        /// Attention heads (> 0, default 4).
        heads: usize,
        /// `"mean"` (mean over non-padding tokens, the default) or `"cls"` (the `[CLS]`
        /// token's output).
        pool: Pool,
        /// Dropout after attention and MLP blocks while training, in `[0, 1)` (default 0;
        /// SimCSE needs it, e.g. 0.1).
        dropout: f64,
    },
}

impl Arch {
    /// The `arch` value that selects this architecture in TOML.
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Mlp { .. } => "mlp",
            Arch::Convnet { .. } => "convnet",
            Arch::Resnet { .. } => "resnet",
            Arch::Vit { .. } => "vit",
            Arch::Transformer { .. } => "transformer",
        }
    }
}

/// How a ViT turns its tokens into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    /// A learned CLS token's output.
    Cls,
    /// The mean of the patch tokens' outputs.
    Mean,
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
    /// `tower = "text"`: probe the text tower of an image–text (CLIP) pretrain stage instead
    /// of its image encoder. Left out of the canonical form when `false` (`"image"`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub text_tower: bool,
    /// Which probes to run, each once, in the order listed (default linear, knn).
    pub methods: Vec<ProbeMethod>,
    /// Linear probe settings; `Some` exactly when `methods` has `linear`.
    pub linear: Option<LinearProbeConfig>,
    /// kNN probe settings; `Some` exactly when `methods` has `knn`.
    pub knn: Option<KnnConfig>,
    /// Also probe a randomly initialised encoder of the same architecture (default true).
    pub baseline: bool,
    /// Fractions of the train labels the probes may use, each in (0, 1], class-balanced and
    /// seeded (default `[1.0]`). Metrics are named `linear@10%.accuracy` etc. for fractions
    /// below 1, and `linear.accuracy` for 1.
    pub label_fractions: Vec<f64>,
    /// Repeats (different label subsets) for each fraction below 1; metrics report the mean
    /// and `…_std` (≥ 1, default 3).
    pub seeds: u64,
    /// Also train the encoder architecture from scratch, supervised, on the same labels (the
    /// label-efficiency baseline); `None` = off.
    pub supervised: Option<SupervisedConfig>,
}

/// `kind = "finetune"`: supervised fine-tuning of a pretrained encoder with a linear head on
/// the labelled train split; the output is the fine-tuned encoder (LoRA merged into it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinetuneConfig {
    /// What is trained (default `full`).
    pub method: FinetuneMethod,
    /// Epochs over the labelled data (> 0, default 10).
    pub epochs: u64,
    /// AdamW learning rate (> 0, default 1e-3).
    pub lr: f64,
    /// Batch size (> 0, default 128).
    pub batch_size: usize,
    /// Class-balanced fraction of the train labels used, in (0, 1] (default 1.0).
    pub label_fraction: f64,
    /// Fine-tune from a safetensors file (always [`InitConfig::File`]) instead of an `encoder`
    /// input; `model` then says the architecture. Both left out of the canonical form when
    /// not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<InitConfig>,
    /// The encoder architecture of an `init` file (`Some` exactly when `init` is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelConfig>,
}

/// `method = ".."` of a finetune stage, with its own settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum FinetuneMethod {
    /// Every encoder parameter and the head.
    Full,
    /// Only the last `trainable_blocks` blocks of the encoder (and the head).
    Partial {
        /// Encoder blocks left trainable, counted from the output (> 0, default 1).
        trainable_blocks: usize,
    },
    /// Low-rank updates of the encoder's weight matrices; the encoder itself is frozen.
    Lora {
        /// Rank r (> 0, default 4).
        rank: usize,
        /// Scale α (the update is multiplied by α / r; > 0, default 8.0).
        alpha: f64,
        /// Only weights whose name contains one of these (default: every weight).
        layers: Vec<String>,
    },
    /// Residual bottleneck adapters after the encoder's layers; the encoder is frozen.
    Adapter {
        /// Bottleneck width (> 0, default 16).
        bottleneck: usize,
        /// Only layers whose weight name contains one of these (default: every layer).
        layers: Vec<String>,
    },
}

/// `kind = "ood_eval"`: how well the encoder's embeddings tell in-distribution test samples
/// from an OOD data set (`ood`), and how a linear probe's accuracy degrades under corruptions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OodEvalConfig {
    /// OOD scores to compute when `ood` is given (default all three).
    pub scores: Vec<OodScore>,
    /// k of the kNN score: cosine similarity to the k-th nearest train embedding (> 0, default 1).
    pub k: usize,
    /// Corruptions of the in-distribution test set (default all; `[]` for none). One of
    /// `gaussian_noise`, `gaussian_blur`, `contrast`, `brightness`, `rotation`,
    /// `translation`, `elastic`, `pixelate`.
    pub corruptions: Vec<String>,
    /// Severities 1..=5 of each corruption (default all five).
    pub severities: Vec<u8>,
    /// The linear probe used for the max-softmax score and the corruption accuracies.
    pub linear: LinearProbeConfig,
}

/// An OOD score (higher = more in-distribution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OodScore {
    /// Cosine similarity to the k-th nearest in-distribution train embedding.
    Knn,
    /// Negative class-conditional Mahalanobis distance (shared covariance).
    Mahalanobis,
    /// The largest softmax probability of a linear probe.
    MaxSoftmax,
}

impl OodScore {
    pub const ALL: [OodScore; 3] = [OodScore::Knn, OodScore::Mahalanobis, OodScore::MaxSoftmax];
    pub fn as_str(self) -> &'static str {
        match self {
            OodScore::Knn => "knn",
            OodScore::Mahalanobis => "mahalanobis",
            OodScore::MaxSoftmax => "max_softmax",
        }
    }
}

/// `supervised = { epochs, lr }`: the from-scratch supervised baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SupervisedConfig {
    /// Training epochs over the labelled subset (> 0, default 30).
    pub epochs: u64,
    /// AdamW learning rate (> 0, default 1e-3).
    pub lr: f64,
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
            && self.min.is_none_or(|m| value >= m)
            && self.max.is_none_or(|m| value <= m)
    }
}

/// The corruptions of `ood_eval`'s robustness suite, in report order.
pub const CORRUPTIONS: [&str; 8] = [
    "gaussian_noise",
    "gaussian_blur",
    "contrast",
    "brightness",
    "rotation",
    "translation",
    "elastic",
    "pixelate",
];
