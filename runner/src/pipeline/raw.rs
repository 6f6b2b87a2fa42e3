//! The raw, serde-level form of a pipeline file: exactly what the TOML says,
//! with spans kept on every value that is validated later.
//!
//! Parsing happens in two passes over the same text:
//!
//! 1. [`RawHead`] reads only the stage names and their `kind`, ignoring
//!    everything else, so that each stage's kind is known up front.
//! 2. [`DocSeed`] reads the whole document, deserialising each stage into the
//!    struct for its kind. Every struct is `deny_unknown_fields`, so a typo
//!    is reported at the offending key with the list of keys that table takes.
//!
//! Tables are never wrapped in [`Spanned`]: TOML's implicit and dotted tables
//! carry no span. Their positions are recovered from key paths instead.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::types::StageKind;

/// A struct that must be written as a TOML table. serde-derived structs
/// also accept arrays (fields by position), which would turn `[[stages.a]]`
/// or `model = [..]` into confusing messages; this wrapper only takes tables.
#[derive(Debug)]
pub(crate) struct Tbl<T>(pub T);

impl<T> Deref for Tbl<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Tbl<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableOnly<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for TableOnly<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(TableOnly(PhantomData))
            .map(Tbl)
    }
}

/// Pass 1: stage names and kinds only.
#[derive(Debug, Deserialize)]
pub(crate) struct RawHead {
    /// `[stages.<name>]` tables, keyed by name (with the name's span).
    pub stages: Option<BTreeMap<Spanned<String>, Tbl<RawStageHead>>>,
}

/// Pass 1: one stage, only its `kind`.
#[derive(Debug, Deserialize)]
pub(crate) struct RawStageHead {
    pub kind: Option<Spanned<String>>,
}

/// Pass 2: the whole document.
#[derive(Debug, Default)]
pub(crate) struct RawDoc {
    pub pipeline: Option<RawPipeline>,
    /// `true` when a `stages` key exists at all.
    pub has_stages: bool,
    /// Stages in the order their tables appear in the text.
    pub stages: Vec<RawStage>,
}

/// `[pipeline]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPipeline {
    pub name: Option<Spanned<String>>,
    pub seed: Option<Spanned<i64>>,
    pub description: Option<String>,
    pub store: Option<Spanned<String>>,
    pub plugin_paths: Option<Vec<Spanned<String>>>,
}

/// One `[stages.<name>]` table.
#[derive(Debug)]
pub(crate) struct RawStage {
    pub name: Spanned<String>,
    pub body: RawStageBody,
}

/// A stage's keys, by kind.
#[derive(Debug)]
pub(crate) enum RawStageBody {
    Ingest(RawIngest),
    Curate(RawCurate),
    Augment(RawAugment),
    Pretrain(Box<RawPretrain>),
    Probe(RawProbe),
    Finetune(RawFinetune),
    OodEval(RawOodEval),
    Report(RawReport),
}

/// `expect = { "metric" = { min = .., max = .. } }`.
pub(crate) type RawExpect = BTreeMap<Spanned<String>, Tbl<RawBound>>;

/// One expectation's bounds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBound {
    pub min: Option<Spanned<f64>>,
    pub max: Option<Spanned<f64>>,
}

/// `kind = "ingest"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngest {
    #[allow(dead_code)]
    pub kind: IgnoredAny,
    /// Checked by hand: the accepted keys depend on `format`.
    pub source: toml::Table,
    pub split: Option<Tbl<RawSplit>>,
    pub limit: Option<Spanned<i64>>,
    pub on_error: Option<Spanned<String>>,
    /// A number or `[height, width]`; checked by hand.
    pub resize: Option<Spanned<toml::Value>>,
    pub color: Option<Spanned<String>>,
    pub tokenizer: Option<Tbl<RawTokenizer>>,
    pub expect: Option<RawExpect>,
}

/// `tokenizer = { .. }` of a text ingest stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTokenizer {
    pub path: Option<Spanned<String>>,
    pub vocab_size: Option<Spanned<i64>>,
    pub seq_len: Option<Spanned<i64>>,
    pub min_frequency: Option<Spanned<i64>>,
}

/// `kind = "curate"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCurate {
    #[allow(dead_code)]
    pub kind: IgnoredAny,
    pub input: Spanned<String>,
    pub near_duplicates: Option<Tbl<RawNear>>,
    pub quality: Option<Tbl<RawQuality>>,
    pub metadata: Option<Spanned<Vec<Spanned<String>>>>,
    pub drop: Option<Spanned<Vec<Spanned<String>>>>,
    pub fail_if: Option<BTreeMap<Spanned<String>, Spanned<f64>>>,
    pub max_listed: Option<Spanned<i64>>,
    pub expect: Option<RawExpect>,
}

/// `near_duplicates = { .. }` in a curate stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNear {
    pub enabled: Option<bool>,
    pub max_distance: Option<Spanned<i64>>,
    pub min_cosine: Option<Spanned<f64>>,
}

/// `quality = { .. }` in a curate stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQuality {
    pub blank_std: Option<Spanned<f64>>,
    pub min_mean: Option<Spanned<f64>>,
    pub max_mean: Option<Spanned<f64>>,
    pub min_size: Option<Spanned<i64>>,
}

/// `split = { train = .., test = .. }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSplit {
    pub train: Option<Spanned<f64>>,
    pub test: Option<Spanned<f64>>,
}

/// `kind = "augment"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAugment {
    #[allow(dead_code)]
    pub kind: IgnoredAny,
    pub input: Spanned<String>,
    /// Each augmentation is a name or an inline table; checked by hand.
    pub views: Spanned<Vec<Spanned<Vec<Spanned<toml::Value>>>>>,
    pub preview: Option<Spanned<i64>>,
    pub expect: Option<RawExpect>,
}

/// `kind = "pretrain"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPretrain {
    #[allow(dead_code)]
    pub kind: IgnoredAny,
    pub input: Spanned<String>,
    /// `plugin` plus free-form plugin parameters; checked by hand.
    pub objective: toml::Table,
    pub model: Option<Tbl<RawModel>>,
    pub optim: Option<Tbl<RawOptim>>,
    pub epochs: Option<Spanned<i64>>,
    pub batch_size: Option<Spanned<i64>>,
    pub grad_clip: Option<Spanned<f64>>,
    pub accumulate: Option<Spanned<i64>>,
    pub collapse: Option<Tbl<RawCollapse>>,
    pub init: Option<Tbl<RawInit>>,
    pub curriculum: Option<Spanned<Vec<Spanned<Tbl<RawPhase>>>>>,
    pub text: Option<Tbl<RawTextTower>>,
    pub expect: Option<RawExpect>,
}

/// `text = { input, .. }` in a pretrain stage: captions and the text tower (CLIP).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTextTower {
    pub input: Spanned<String>,
    pub dim: Option<Spanned<i64>>,
    pub depth: Option<Spanned<i64>>,
    pub heads: Option<Spanned<i64>>,
    pub dropout: Option<Spanned<f64>>,
    pub prompt: Option<Spanned<String>>,
    pub pair_by: Option<Spanned<String>>,
}

/// One phase of `curriculum = [{ .. }, ..]` in a pretrain stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPhase {
    pub epochs: Option<Spanned<i64>>,
    pub size: Option<Spanned<i64>>,
    pub batch_size: Option<Spanned<i64>>,
    pub scale: Option<Spanned<Vec<Spanned<f64>>>>,
}

/// `init = { .. }` in a finetune stage: always a file (a finetune stage names an encoder
/// stage with its own `encoder` key).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFileInit {
    pub path: Spanned<String>,
    pub names: Option<Spanned<String>>,
}

/// `init = { .. }` in a pretrain stage: `encoder`, or `path` with `names`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInit {
    pub encoder: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub names: Option<Spanned<String>>,
}

/// `collapse = { .. }` in a pretrain stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCollapse {
    pub min_std: Option<Spanned<f64>>,
    pub patience: Option<Spanned<i64>>,
}

/// `model = { .. }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModel {
    pub arch: Option<Spanned<String>>,
    pub hidden: Option<Spanned<Vec<Spanned<i64>>>>,
    pub width: Option<Spanned<i64>>,
    pub blocks: Option<Spanned<i64>>,
    pub patch: Option<Spanned<i64>>,
    pub dim: Option<Spanned<i64>>,
    pub depth: Option<Spanned<i64>>,
    pub heads: Option<Spanned<i64>>,
    pub pool: Option<Spanned<String>>,
    pub dropout: Option<Spanned<f64>>,
    pub embed_dim: Option<Spanned<i64>>,
    pub batch_norm: Option<bool>,
    pub checkpoint_activations: Option<Spanned<bool>>,
}

/// `optim = { .. }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOptim {
    pub name: Option<Spanned<String>>,
    pub lr: Option<Spanned<f64>>,
    pub momentum: Option<Spanned<f64>>,
    pub weight_decay: Option<Spanned<f64>>,
    pub betas: Option<Spanned<Vec<Spanned<f64>>>>,
    pub eta: Option<Spanned<f64>>,
    pub warmup_epochs: Option<Spanned<i64>>,
    pub schedule: Option<Spanned<String>>,
}

/// `kind = "probe"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbe {
    #[allow(dead_code)]
    pub kind: IgnoredAny,
    pub encoder: Spanned<String>,
    pub data: Spanned<String>,
    pub tower: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub linear: Option<Tbl<RawLinear>>,
    pub knn: Option<Tbl<RawKnn>>,
    pub baseline: Option<bool>,
    pub label_fractions: Option<Spanned<Vec<Spanned<f64>>>>,
    pub seeds: Option<Spanned<i64>>,
    pub supervised: Option<Tbl<RawSupervised>>,
    pub expect: Option<RawExpect>,
}

/// `kind = "finetune"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFinetune {
    #[allow(dead_code)]
    pub kind: IgnoredAny,
    pub encoder: Option<Spanned<String>>,
    pub data: Spanned<String>,
    pub init: Option<Tbl<RawFileInit>>,
    pub model: Option<Tbl<RawModel>>,
    pub method: Option<Spanned<String>>,
    pub trainable_blocks: Option<Spanned<i64>>,
    pub lora: Option<Tbl<RawLora>>,
    pub adapter: Option<Tbl<RawAdapter>>,
    pub epochs: Option<Spanned<i64>>,
    pub lr: Option<Spanned<f64>>,
    pub batch_size: Option<Spanned<i64>>,
    pub label_fraction: Option<Spanned<f64>>,
    pub expect: Option<RawExpect>,
}

/// `kind = "ood_eval"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOodEval {
    #[allow(dead_code)]
    pub kind: IgnoredAny,
    pub encoder: Spanned<String>,
    pub data: Spanned<String>,
    pub ood: Option<Spanned<String>>,
    pub scores: Option<Spanned<Vec<Spanned<String>>>>,
    pub k: Option<Spanned<i64>>,
    pub corruptions: Option<Spanned<Vec<Spanned<String>>>>,
    pub severities: Option<Spanned<Vec<Spanned<i64>>>>,
    pub linear: Option<Tbl<RawLinear>>,
    pub expect: Option<RawExpect>,
}

/// `kind = "report"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReport {
    #[allow(dead_code)]
    pub kind: IgnoredAny,
    pub inputs: Option<Spanned<Vec<Spanned<String>>>>,
    pub title: Option<Spanned<String>>,
    pub expect: Option<RawExpect>,
}

/// `lora = { .. }` in a finetune stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLora {
    pub rank: Option<Spanned<i64>>,
    pub alpha: Option<Spanned<f64>>,
    pub layers: Option<Vec<String>>,
}

/// `adapter = { .. }` in a finetune stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdapter {
    pub bottleneck: Option<Spanned<i64>>,
    pub layers: Option<Vec<String>>,
}

/// `supervised = { .. }` in a probe stage: a from-scratch baseline on the same labels.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSupervised {
    pub epochs: Option<Spanned<i64>>,
    pub lr: Option<Spanned<f64>>,
}

/// `linear = { .. }` in a probe stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLinear {
    pub epochs: Option<Spanned<i64>>,
    pub lr: Option<Spanned<f64>>,
    pub weight_decay: Option<Spanned<f64>>,
}

/// `knn = { .. }` in a probe stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKnn {
    pub k: Option<Spanned<i64>>,
    pub temperature: Option<Spanned<f64>>,
}

/// Pass 2 entry point: deserialises the document given each stage's kind
/// (from pass 1; only supported kinds).
pub(crate) struct DocSeed<'a> {
    pub kinds: &'a BTreeMap<String, StageKind>,
}

/// The top-level keys. An identifier enum, so that an unknown key is
/// reported by serde at the key's span.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum TopKey {
    Pipeline,
    Stages,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_> {
    type Value = RawDoc;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<RawDoc, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_> {
    type Value = RawDoc;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pipeline document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDoc, A::Error> {
        let mut doc = RawDoc::default();
        while let Some(key) = map.next_key::<TopKey>()? {
            match key {
                TopKey::Pipeline => doc.pipeline = Some(map.next_value::<Tbl<_>>()?.0),
                TopKey::Stages => {
                    doc.has_stages = true;
                    doc.stages = map.next_value_seed(StagesSeed { kinds: self.kinds })?;
                }
            }
        }
        Ok(doc)
    }
}

struct StagesSeed<'a> {
    kinds: &'a BTreeMap<String, StageKind>,
}

impl<'de> DeserializeSeed<'de> for StagesSeed<'_> {
    type Value = Vec<RawStage>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for StagesSeed<'_> {
    type Value = Vec<RawStage>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of stages")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut stages = Vec::new();
        while let Some(name) = map.next_key::<Spanned<String>>()? {
            let kind = self.kinds.get(name.get_ref()).copied().ok_or_else(|| {
                de::Error::custom(format!("stage `{}` has no supported kind", name.get_ref()))
            })?;
            let body = map.next_value_seed(StageSeed { kind })?;
            stages.push(RawStage { name, body });
        }
        stages.sort_by_key(|s| s.name.span().start);
        Ok(stages)
    }
}

struct StageSeed {
    kind: StageKind,
}

impl<'de> DeserializeSeed<'de> for StageSeed {
    type Value = RawStageBody;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawStageBody, D::Error> {
        Ok(match self.kind {
            StageKind::Ingest => RawStageBody::Ingest(Tbl::<RawIngest>::deserialize(d)?.0),
            StageKind::Curate => RawStageBody::Curate(Tbl::<RawCurate>::deserialize(d)?.0),
            StageKind::Augment => RawStageBody::Augment(Tbl::<RawAugment>::deserialize(d)?.0),
            StageKind::Pretrain => {
                RawStageBody::Pretrain(Box::new(Tbl::<RawPretrain>::deserialize(d)?.0))
            }
            StageKind::Probe => RawStageBody::Probe(Tbl::<RawProbe>::deserialize(d)?.0),
            StageKind::Finetune => RawStageBody::Finetune(Tbl::<RawFinetune>::deserialize(d)?.0),
            StageKind::OodEval => RawStageBody::OodEval(Tbl::<RawOodEval>::deserialize(d)?.0),
            StageKind::Report => RawStageBody::Report(Tbl::<RawReport>::deserialize(d)?.0),
        })
    }
}
