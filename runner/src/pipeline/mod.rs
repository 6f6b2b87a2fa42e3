//! Pipeline files: TOML text → validated, resolved [`Pipeline`].
//!
//! Loading happens in two steps, like ripgrep's argument handling:
//!
//! 1. **Raw** ([`raw`]): serde structs mirroring the file, every table
//!    `deny_unknown_fields`, with [`toml::Spanned`] on the values checked
//!    later. `--set` overrides ([`overrides`]) are applied to the document
//!    before this step.
//! 2. **Resolved** ([`resolve`], [`types`]): every value checked, defaults
//!    filled, paths resolved against the pipeline file's directory, stage
//!    references checked and the stages put in topological order.
//!
//! Every failure is a [`PipelineError`] pointing at the offending key or
//! value (`error: <file>:<line>:<col>: <message>` plus an optional
//! `  help: ...` line).
//!
//! ```toml
//! [pipeline]
//! name = "quickstart"
//!
//! [stages.data]
//! kind = "ingest"
//! source = { format = "idx", images = "data/images.idx", labels = "data/labels.idx" }
//!
//! [stages.views]
//! kind = "augment"
//! input = "data"
//! views = [["random_crop"], ["random_crop", { name = "gaussian_noise", std = 0.1 }]]
//!
//! [stages.ssl]
//! kind = "pretrain"
//! input = "views"
//! objective = { plugin = "simclr", temperature = 0.5 }
//!
//! [stages.eval]
//! kind = "probe"
//! encoder = "ssl"
//! data = "data"
//! expect = { "linear.accuracy" = { min = 0.9 } }
//! ```

use std::path::Path;

use serde::de::DeserializeSeed;

mod error;
mod graph;
mod overrides;
mod raw;
mod resolve;
mod types;

#[cfg(test)]
mod reference_test;
#[cfg(test)]
mod tests;

/// The candidate closest to a misspelt name (Jaro-Winkler ≥ 0.8), for did-you-mean help.
pub(crate) use error::closest as closest_name;
pub(crate) use error::did_you_mean;
pub use error::PipelineError;
pub use types::{
    Arch, ArtifactKind, AugmentConfig, Augmentation, CollapseConfig, ColorMode, ConfigPath,
    CurateConfig, CurriculumPhase, DropRule, Expectation, FailIf, FeatureColumns, FinetuneConfig,
    FinetuneMethod, FolderLabels, IngestConfig, IngestSource, InitConfig, InitNames, KnnConfig,
    LinearProbeConfig, ModelConfig, NearDuplicates, Objective, OnError, OodEvalConfig, OodScore,
    OptimConfig, Optimizer, Pipeline, Pool, PretrainConfig, ProbeConfig, ProbeMethod, Quality,
    ReportConfig, ReportSource, Schedule, Split, Stage, StageConfig, StageKind, SupervisedConfig,
    TextEncoding, TextLabels, TextTower, TokenizerConfig, TokenizerVocab, CORRUPTIONS,
};

/// Reads the pipeline file at `path`, applies `--set` overrides
/// (`path.to.key=value`), then parses and resolves it.
pub fn load(path: &Path, overrides: &[String]) -> Result<Pipeline, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        PipelineError::new(path, format!("cannot read the pipeline file: {e}")).with_help(
            (e.kind() == std::io::ErrorKind::NotFound)
                .then(|| "check the path; pipeline files are usually in `pipelines/`".to_string()),
        )
    })?;
    parse_str(&text, path, overrides)
}

/// Parses and resolves pipeline `text` as if read from `file` (used for
/// error messages and to resolve relative paths), after applying `--set`
/// overrides.
pub fn parse_str(text: &str, file: &Path, overrides: &[String]) -> Result<Pipeline, PipelineError> {
    let rendered = overrides::apply(text, overrides)?;
    let original = (!overrides.is_empty()).then_some(text);
    let src = error::Source::new(file, &rendered, original);

    // Pass 1: stage names and kinds (also reports TOML syntax errors).
    let head: raw::RawHead = toml::from_str(&rendered).map_err(|e| src.toml_error(&e))?;
    let kinds = resolve::check_kinds(&src, &head)?;

    // Pass 2: everything, each stage by its kind's schema.
    let doc = raw::DocSeed { kinds: &kinds }
        .deserialize(toml::Deserializer::new(&rendered))
        .map_err(|e| src.toml_error(&e))?;
    debug_assert_eq!(src.file(), file);
    resolve::resolve(&src, doc, file)
}
