//! Raw form → resolved [`Pipeline`]: checks every value, fills defaults,
//! resolves paths against the pipeline's directory and orders the graph.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};
use toml::Spanned;

use super::error::{did_you_mean, list, PipelineError, Seg, Source};
use super::graph::{self, InputRef, Node};
use super::raw::{
    RawAugment, RawCurate, RawDoc, RawExpect, RawFinetune, RawHead, RawIngest, RawLinear, RawModel,
    RawOodEval, RawOptim, RawPipeline, RawPretrain, RawProbe, RawReport, RawStageBody,
    RawTokenizer,
};
use super::types::{
    Arch, ArtifactKind, AugmentConfig, Augmentation, CollapseConfig, ColorMode, ConfigPath,
    CurateConfig, DropRule, Expectation, FailIf, FeatureColumns, FinetuneConfig, FinetuneMethod,
    FolderLabels, IngestConfig, IngestSource, KnnConfig, LinearProbeConfig, ModelConfig,
    NearDuplicates, Objective, OnError, OodEvalConfig, OodScore, OptimConfig, Optimizer, Pipeline,
    Pool, PretrainConfig, ProbeConfig, ProbeMethod, Quality, ReportConfig, ReportSource, Schedule,
    Split, Stage, StageConfig, StageKind, SupervisedConfig, TextEncoding, TextLabels,
    TokenizerConfig, TokenizerVocab,
};

type Result<T> = std::result::Result<T, PipelineError>;

/// Ingest formats this version reads.
const FORMATS: [&str; 5] = ["idx", "image_folder", "parquet", "csv", "text"];
/// Ingest formats that are planned but not yet readable.
const PLANNED_FORMATS: [&str; 0] = [];

const VIEWS_HELP: &str = "each view is a list of augmentations, e.g. \
    views = [[\"random_crop\"], [\"random_crop\", { name = \"gaussian_noise\", std = 0.1 }]]";
const AUG_TABLE_HELP: &str =
    "write an augmentation with parameters as { name = \"gaussian_noise\", std = 0.1 }";
const OBJECTIVE_HELP: &str =
    "name the objective plugin, e.g. objective = { plugin = \"simclr\", temperature = 0.5 }";

fn supported_kinds() -> String {
    list(StageKind::SUPPORTED.into_iter().map(StageKind::as_str))
}

fn is_name(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// Pass 1 checks: stage names and kinds. Returns each stage's kind.
pub(crate) fn check_kinds(src: &Source<'_>, head: &RawHead) -> Result<BTreeMap<String, StageKind>> {
    let mut stages: Vec<_> = head.stages.iter().flatten().collect();
    stages.sort_by_key(|(name, _)| name.span().start);
    let mut kinds = BTreeMap::new();
    for (name, stage) in stages {
        if !is_name(name.get_ref(), &['_', '-']) {
            return Err(src.error_at(
                &name.span(),
                format!("invalid stage name `{}`", name.get_ref()),
                Some("stage names may only use letters, digits, `_` and `-`".into()),
            ));
        }
        let Some(kind) = &stage.kind else {
            return Err(src.error_at(
                &name.span(),
                format!("stage `{}` has no `kind`", name.get_ref()),
                Some(format!(
                    "add `kind = \"...\"`, one of {}",
                    supported_kinds()
                )),
            ));
        };
        let k = match StageKind::from_name(kind.get_ref()) {
            Some(k) => k,
            None => {
                let help = did_you_mean(kind.get_ref(), StageKind::ALL.iter().map(|k| k.as_str()))
                    .unwrap_or_else(|| format!("supported kinds: {}", supported_kinds()));
                return Err(src.error_at(
                    &kind.span(),
                    format!("unknown stage kind `{}`", kind.get_ref()),
                    Some(help),
                ));
            }
        };
        if !k.is_supported() {
            return Err(src.error_at(
                &kind.span(),
                format!(
                    "stage kind `{}` is not yet supported by this version of pretext",
                    k.as_str()
                ),
                Some(format!("supported kinds: {}", supported_kinds())),
            ));
        }
        kinds.insert(name.get_ref().clone(), k);
    }
    Ok(kinds)
}

/// Makes `path` absolute (against the current directory) and lexically normal.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        let cwd = std::env::current_dir().unwrap_or_default();
        normalize(&cwd.join(path))
    }
}

/// Removes `.` and resolves `..` lexically (no file-system access).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out
}

/// Checks and fills in everything; `file` is the pipeline file as given.
pub(crate) fn resolve(src: &Source<'_>, raw: RawDoc, file: &Path) -> Result<Pipeline> {
    let file_abs = absolute(file);
    let dir = file_abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let r = Resolver { src, dir: &dir };

    let Some(p) = raw.pipeline else {
        return Err(src.error(
            "missing [pipeline] table",
            Some(
                "start the file with a [pipeline] table containing at least `name = \"...\"`"
                    .into(),
            ),
        ));
    };
    let head = r.pipeline(p)?;

    if raw.stages.is_empty() {
        return Err(src.error_at_key(
            &[Seg::key("stages")],
            "the pipeline has no stages",
            Some(
                "add at least one stage, e.g. a [stages.data] table with `kind = \"ingest\"`"
                    .into(),
            ),
        ));
    }

    let mut stages = Vec::new();
    let mut spans = Vec::new();
    for s in &raw.stages {
        let name = s.name.get_ref().clone();
        let cx = StageCx { r: &r, name: &name };
        let (kind, inputs, config, expect) = match &s.body {
            RawStageBody::Ingest(b) => (
                StageKind::Ingest,
                vec![],
                StageConfig::Ingest(cx.ingest(b)?),
                &b.expect,
            ),
            RawStageBody::Curate(b) => (
                StageKind::Curate,
                vec![("input", &b.input, ArtifactKind::Dataset)],
                StageConfig::Curate(cx.curate(b)?),
                &b.expect,
            ),
            RawStageBody::Augment(b) => (
                StageKind::Augment,
                vec![("input", &b.input, ArtifactKind::Dataset)],
                StageConfig::Augment(cx.augment(b)?),
                &b.expect,
            ),
            RawStageBody::Pretrain(b) => (
                StageKind::Pretrain,
                vec![("input", &b.input, ArtifactKind::Views)],
                StageConfig::Pretrain(cx.pretrain(b)?),
                &b.expect,
            ),
            RawStageBody::Probe(b) => (
                StageKind::Probe,
                vec![
                    ("encoder", &b.encoder, ArtifactKind::Encoder),
                    ("data", &b.data, ArtifactKind::Dataset),
                ],
                StageConfig::Probe(cx.probe(b)?),
                &b.expect,
            ),
            RawStageBody::OodEval(b) => {
                let mut inputs = vec![
                    ("encoder", &b.encoder, ArtifactKind::Encoder),
                    ("data", &b.data, ArtifactKind::Dataset),
                ];
                if let Some(o) = &b.ood {
                    inputs.push(("ood", o, ArtifactKind::Dataset));
                }
                (
                    StageKind::OodEval,
                    inputs,
                    StageConfig::OodEval(cx.ood_eval(b)?),
                    &b.expect,
                )
            }
            RawStageBody::Finetune(b) => (
                StageKind::Finetune,
                vec![
                    ("encoder", &b.encoder, ArtifactKind::Encoder),
                    ("data", &b.data, ArtifactKind::Dataset),
                ],
                StageConfig::Finetune(cx.finetune(b)?),
                &b.expect,
            ),
            RawStageBody::Report(b) => (
                StageKind::Report,
                Vec::new(),
                StageConfig::Report(cx.report(b, &head.name)?),
                &b.expect,
            ),
        };
        // Inputs as (role, referenced stage, what the role needs; None: any artifact but a
        // report). A report's roles are the names of the stages it reads.
        let inputs: Vec<InputRef<'_>> = match &s.body {
            RawStageBody::Report(b) => report_inputs(&cx, b, &raw.stages)?
                .into_iter()
                .map(|t| (t.get_ref().as_str(), t, None))
                .collect(),
            _ => inputs
                .into_iter()
                .map(|(r, t, k)| (r, t, Some(k)))
                .collect(),
        };
        let expect = cx.expect(expect.as_ref())?;
        stages.push(Stage {
            name,
            kind,
            inputs: inputs
                .iter()
                .map(|(role, target, _)| (role.to_string(), target.get_ref().clone()))
                .collect(),
            config,
            expect,
        });
        spans.push(inputs);
    }

    let nodes: Vec<Node<'_>> = stages
        .iter()
        .zip(&spans)
        .map(|(s, inputs)| Node {
            name: &s.name,
            kind: s.kind,
            inputs: inputs.clone(),
        })
        .collect();
    let order = graph::check_and_order(src, &nodes)?;
    drop(nodes);
    check_augment_inputs(src, &stages, &spans)?;
    fill_report_sources(&mut stages);
    let mut slots: Vec<Option<Stage>> = stages.into_iter().map(Some).collect();
    let stages = order
        .into_iter()
        .map(|i| slots[i].take().expect("each index appears once"))
        .collect();

    Ok(Pipeline {
        name: head.name,
        seed: head.seed,
        description: head.description,
        file: file_abs,
        store_dir: r.path(&head.store).resolved,
        plugin_paths: head
            .plugin_paths
            .iter()
            .map(|p| r.path(p).resolved)
            .collect(),
        dir,
        stages,
    })
}

/// The stages a report reads: `inputs` as written (checked for repeats), or every stage of
/// another kind than `report`, in file order.
fn report_inputs<'r>(
    cx: &StageCx<'_, '_, '_>,
    b: &'r RawReport,
    all: &'r [super::raw::RawStage],
) -> Result<Vec<&'r Spanned<String>>> {
    match &b.inputs {
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(cx.err_at(
                    list,
                    "`inputs` is empty",
                    Some("name the stages to report on, or leave `inputs` out to report on every stage".into()),
                ));
            }
            let mut seen: Vec<&str> = Vec::new();
            for item in list.get_ref() {
                if seen.contains(&item.get_ref().as_str()) {
                    return Err(cx.err_at(
                        item,
                        format!("`inputs` names stage `{}` twice", item.get_ref()),
                        Some("list each stage once".into()),
                    ));
                }
                seen.push(item.get_ref());
            }
            Ok(list.get_ref().iter().collect())
        }
        None => Ok(all
            .iter()
            .filter(|s| !matches!(s.body, RawStageBody::Report(_)))
            .map(|s| &s.name)
            .collect()),
    }
}

/// Copies each report source's kind and `expect` bounds from the stage it names (the graph
/// check has made sure it exists and is not a report).
fn fill_report_sources(stages: &mut [Stage]) {
    let info: BTreeMap<String, (StageKind, Vec<Expectation>)> = stages
        .iter()
        .map(|s| (s.name.clone(), (s.kind, s.expect.clone())))
        .collect();
    for s in stages.iter_mut() {
        if let StageConfig::Report(rc) = &mut s.config {
            rc.sources = s
                .inputs
                .iter()
                .filter_map(|(_, t)| {
                    let (kind, expect) = info.get(t)?;
                    Some(ReportSource {
                        stage: t.clone(),
                        kind: *kind,
                        expect: expect.clone(),
                    })
                })
                .collect();
        }
    }
}

/// Augmentations are image operations: an augment stage whose data comes (through any curate
/// stages) from an ingest of feature vectors is an error at its `input`.
fn check_augment_inputs(
    src: &Source<'_>,
    stages: &[Stage],
    spans: &[Vec<InputRef<'_>>],
) -> Result<()> {
    let by_name = |n: &str| stages.iter().find(|s| s.name == n);
    for (stage, inputs) in stages.iter().zip(spans) {
        if stage.kind != StageKind::Augment {
            continue;
        }
        let Some((_, target, _)) = inputs.iter().find(|(role, ..)| *role == "input") else {
            continue;
        };
        // Follow curate stages back to the ingest (the graph is acyclic: checked above).
        let mut current = by_name(target.get_ref());
        let mut hops = 0;
        while let Some(s) = current {
            match &s.config {
                StageConfig::Curate(_) if hops < stages.len() => {
                    hops += 1;
                    current = s.input("input").and_then(by_name);
                }
                StageConfig::Ingest(ic) if !ic.source.has_images() && !ic.source.is_text() => {
                    let format = match &ic.source {
                        IngestSource::Csv { .. } => "csv",
                        _ => "parquet",
                    };
                    let via = if s.name == *target.get_ref() {
                        String::new()
                    } else {
                        format!(" (through `{}`)", target.get_ref())
                    };
                    return Err(src.error_at(
                        &target.span(),
                        format!(
                            "stage `{}` augments the data of `{}`{via}, which reads feature vectors (format = \"{format}\"); augmentations work on images and text",
                            stage.name, s.name
                        ),
                        Some("augment, pretrain and probe need an image source (`idx`, `image_folder`, or `parquet` with `image`) or a text source (`text`)".into()),
                    ));
                }
                _ => break,
            }
        }
    }
    Ok(())
}

/// The checked `[pipeline]` table.
struct Head {
    name: String,
    seed: u64,
    description: Option<String>,
    store: String,
    plugin_paths: Vec<String>,
}

struct Resolver<'s, 'a> {
    src: &'s Source<'a>,
    dir: &'s Path,
}

impl Resolver<'_, '_> {
    fn path(&self, written: &str) -> ConfigPath {
        ConfigPath {
            written: written.to_string(),
            resolved: normalize(&self.dir.join(written)),
        }
    }

    fn non_empty_path(&self, v: &Spanned<String>, what: &str) -> Result<String> {
        if v.get_ref().trim().is_empty() {
            return Err(self
                .src
                .error_at(&v.span(), format!("`{what}` must not be empty"), None));
        }
        Ok(v.get_ref().clone())
    }

    fn pipeline(&self, p: RawPipeline) -> Result<Head> {
        let Some(name) = p.name else {
            return Err(self.src.error_at_key(
                &[Seg::key("pipeline")],
                "missing key `name` in [pipeline]",
                Some("add `name = \"my-pipeline\"` (letters, digits, `_`, `.` and `-`)".into()),
            ));
        };
        if !is_name(name.get_ref(), &['_', '.', '-']) {
            let message = if name.get_ref().is_empty() {
                "the pipeline name is empty".to_string()
            } else {
                format!("invalid pipeline name `{}`", name.get_ref())
            };
            return Err(self.src.error_at(
                &name.span(),
                message,
                Some("pipeline names may only use letters, digits, `_`, `.` and `-`".into()),
            ));
        }
        let seed = match &p.seed {
            Some(s) => self.int(s, "pipeline.seed", 0, None)?,
            None => 0,
        };
        let store = match &p.store {
            Some(s) => self.non_empty_path(s, "pipeline.store")?,
            None => ".pretext".to_string(),
        };
        let plugin_paths = p
            .plugin_paths
            .iter()
            .flatten()
            .map(|s| self.non_empty_path(s, "pipeline.plugin_paths"))
            .collect::<Result<_>>()?;
        Ok(Head {
            name: name.into_inner(),
            seed,
            description: p.description,
            store,
            plugin_paths,
        })
    }

    /// An integer in `[min, max]`.
    fn int(&self, v: &Spanned<i64>, what: &str, min: i64, max: Option<i64>) -> Result<u64> {
        let x = *v.get_ref();
        if x < min || max.is_some_and(|m| x > m) {
            let rule = match (min, max) {
                (1, None) => "a positive integer".to_string(),
                (0, None) => "a non-negative integer".to_string(),
                (lo, Some(hi)) => format!("an integer from {lo} to {hi}"),
                (lo, None) => format!("an integer of at least {lo}"),
            };
            return Err(self.src.error_at(
                &v.span(),
                format!("`{what}` must be {rule}, found {x}"),
                None,
            ));
        }
        Ok(x as u64)
    }

    fn float(&self, v: &Spanned<f64>, what: &str, rule: FloatRule) -> Result<f64> {
        let x = *v.get_ref();
        let ok = x.is_finite()
            && match rule {
                FloatRule::Finite => true,
                FloatRule::Positive => x > 0.0,
                FloatRule::NonNegative => x >= 0.0,
                FloatRule::HalfOpenUnit => (0.0..1.0).contains(&x),
                FloatRule::OpenUnit => x > 0.0 && x < 1.0,
            };
        if !ok {
            let rule = match rule {
                FloatRule::Finite => "a finite number",
                FloatRule::Positive => "a number greater than 0",
                FloatRule::NonNegative => "a number of at least 0",
                FloatRule::HalfOpenUnit => "a number in [0, 1)",
                FloatRule::OpenUnit => "a number strictly between 0 and 1",
            };
            return Err(self.src.error_at(
                &v.span(),
                format!("`{what}` must be {rule}, found {x}"),
                None,
            ));
        }
        Ok(x)
    }
}

#[derive(Clone, Copy)]
enum FloatRule {
    Finite,
    Positive,
    NonNegative,
    HalfOpenUnit,
    OpenUnit,
}

/// Converts a TOML value to JSON for plugin parameters.
fn to_json(v: &toml::Value) -> std::result::Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| {
                format!(
                    "must be a finite number, found {}",
                    f.to_string().to_lowercase()
                )
            })?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .iter()
                .map(to_json)
                .collect::<std::result::Result<_, _>>()?,
        ),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<std::result::Result<Map<_, _>, String>>()?,
        ),
    })
}

fn toml_type(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Resolution of one stage.
struct StageCx<'r, 's, 'a> {
    r: &'r Resolver<'s, 'a>,
    name: &'r str,
}

impl StageCx<'_, '_, '_> {
    fn what(&self, key: &str) -> String {
        format!("stages.{}.{key}", self.name)
    }

    fn segs(&self, keys: &[&str]) -> Vec<Seg> {
        let mut segs = vec![Seg::key("stages"), Seg::key(self.name)];
        segs.extend(keys.iter().map(|k| Seg::key(k)));
        segs
    }

    fn err_key(
        &self,
        keys: &[&str],
        message: impl Into<String>,
        help: Option<String>,
    ) -> PipelineError {
        self.r.src.error_at_key(&self.segs(keys), message, help)
    }

    fn err_at(
        &self,
        v: &Spanned<impl Sized>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> PipelineError {
        self.r.src.error_at(&v.span(), message, help)
    }

    fn int(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        min: i64,
        max: Option<i64>,
        default: u64,
    ) -> Result<u64> {
        v.as_ref()
            .map_or(Ok(default), |v| self.r.int(v, &self.what(key), min, max))
    }

    fn float(
        &self,
        v: &Option<Spanned<f64>>,
        key: &str,
        rule: FloatRule,
        default: f64,
    ) -> Result<f64> {
        v.as_ref()
            .map_or(Ok(default), |v| self.r.float(v, &self.what(key), rule))
    }

    /// `{ plugin/name = "...", ..params }` tables: the name key and the rest
    /// as JSON. `path` is the table's key path, `what` how messages name it.
    fn named_table(
        &self,
        table: &toml::Table,
        path: &[Seg],
        what: &str,
        name_key: &str,
    ) -> Result<(Option<String>, Value)> {
        let mut name = None;
        let mut params = Map::new();
        for (k, v) in table {
            let mut p = path.to_vec();
            p.push(Seg::key(k));
            let at = |m: String| self.r.src.error_at_key(&p, m, None);
            match v {
                toml::Value::String(s) if k == name_key && !s.trim().is_empty() => {
                    name = Some(s.clone())
                }
                toml::Value::String(_) if k == name_key => {
                    return Err(at(format!("`{what}.{k}` must not be empty")))
                }
                other if k == name_key => {
                    let found = toml_type(other);
                    return Err(at(format!("`{what}.{k}` must be a string, found {found}")));
                }
                _ => {
                    let json = to_json(v).map_err(|m| at(format!("`{what}.{k}` {m}")))?;
                    params.insert(k.clone(), json);
                }
            }
        }
        Ok((name, Value::Object(params)))
    }

    fn source_err(&self, key: &str, message: String, help: Option<String>) -> PipelineError {
        self.err_key(&["source", key], message, help)
    }

    /// An optional non-empty string key of `source`.
    fn source_str(&self, t: &toml::Table, key: &str) -> Result<Option<String>> {
        let what = self.what(&format!("source.{key}"));
        match t.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(toml::Value::String(_)) => {
                Err(self.source_err(key, format!("`{what}` must not be empty"), None))
            }
            Some(other) => Err(self.source_err(
                key,
                format!("`{what}` must be a string, found {}", toml_type(other)),
                None,
            )),
        }
    }

    /// A required path key of `source`.
    fn source_path(&self, t: &toml::Table, key: &str, help: &str) -> Result<ConfigPath> {
        match self.source_str(t, key)? {
            Some(s) => Ok(self.r.path(&s)),
            None => Err(self.err_key(
                &["source"],
                format!("missing key `{key}` in [{}]", self.what("source")),
                Some(help.to_string()),
            )),
        }
    }

    /// An optional list of distinct, non-empty column names.
    fn source_names(&self, t: &toml::Table, key: &str) -> Result<Option<Vec<String>>> {
        let what = self.what(&format!("source.{key}"));
        let Some(v) = t.get(key) else {
            return Ok(None);
        };
        let toml::Value::Array(items) = v else {
            return Err(self.source_err(
                key,
                format!(
                    "`{what}` must be an array of column names, found {}",
                    toml_type(v)
                ),
                Some(format!("e.g. {key} = [\"a\", \"b\"]")),
            ));
        };
        let mut out: Vec<String> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = |m: String| {
                let mut p = self.segs(&["source", key]);
                p.push(Seg::Index(i));
                self.r.src.error_at_key(&p, m, None)
            };
            match item {
                toml::Value::String(s) if !s.trim().is_empty() => {
                    if out.contains(s) {
                        return Err(at(format!("`{what}` lists column `{s}` twice")));
                    }
                    out.push(s.clone());
                }
                toml::Value::String(_) => return Err(at(format!("`{what}[{i}]` is empty"))),
                other => {
                    return Err(at(format!(
                        "`{what}[{i}]` must be a column name (a string), found {}",
                        toml_type(other)
                    )))
                }
            }
        }
        Ok(Some(out))
    }

    fn check_source_keys(&self, t: &toml::Table, format: &str, keys: &[&str]) -> Result<()> {
        for key in t.keys() {
            if !keys.contains(&key.as_str()) {
                let help = did_you_mean(key, keys.iter().copied()).unwrap_or_else(|| {
                    format!(
                        "format = \"{format}\" takes the keys {}",
                        list(keys.iter().copied())
                    )
                });
                return Err(self.source_err(
                    key,
                    format!("unknown key `{key}` in [{}]", self.what("source")),
                    Some(help),
                ));
            }
        }
        Ok(())
    }

    /// A column named in two roles (label and feature, ...) is an error.
    fn distinct_roles(&self, roles: &[(&str, Vec<String>)]) -> Result<()> {
        for (i, (a, names_a)) in roles.iter().enumerate() {
            for (b, names_b) in &roles[i + 1..] {
                if let Some(n) = names_a.iter().find(|n| names_b.contains(n)) {
                    return Err(self.source_err(
                        b,
                        format!(
                            "column `{n}` is named both in `{}` and in `{}`",
                            self.what(&format!("source.{a}")),
                            self.what(&format!("source.{b}"))
                        ),
                        Some("a column can have only one role".into()),
                    ));
                }
            }
        }
        Ok(())
    }

    fn source(&self, t: &toml::Table) -> Result<IngestSource> {
        let format = match t.get("format") {
            None => {
                return Err(self.err_key(
                    &["source"],
                    format!("missing key `format` in [{}]", self.what("source")),
                    Some(format!("supported formats: {}", list(FORMATS))),
                ))
            }
            Some(toml::Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(self.source_err(
                    "format",
                    format!(
                        "`{}` must be a string, found {}",
                        self.what("source.format"),
                        toml_type(other)
                    ),
                    None,
                ))
            }
        };
        if PLANNED_FORMATS.contains(&format) {
            return Err(self.source_err(
                "format",
                format!("ingest format `{format}` is not yet supported"),
                Some(format!("this version of pretext reads {}", list(FORMATS))),
            ));
        }
        match format {
            "idx" => {
                self.check_source_keys(t, format, &["format", "images", "labels"])?;
                Ok(IngestSource::Idx {
                    images: self.source_path(
                        t,
                        "images",
                        "`images` is the IDX images file, relative to the pipeline file",
                    )?,
                    labels: self.source_path(
                        t,
                        "labels",
                        "`labels` is the IDX labels file, relative to the pipeline file",
                    )?,
                })
            }
            "image_folder" => {
                self.check_source_keys(t, format, &["format", "path", "labels"])?;
                let path = self.source_path(
                    t,
                    "path",
                    "`path` is the folder of images, relative to the pipeline file",
                )?;
                const LABELS: [&str; 2] = ["none", "folders"];
                let labels = match self.source_str(t, "labels")?.as_deref() {
                    None | Some("none") => FolderLabels::None,
                    Some("folders") => FolderLabels::Folders,
                    Some(other) => {
                        let help = did_you_mean(other, LABELS)
                            .unwrap_or_else(|| format!("expected one of {}", list(LABELS)));
                        return Err(self.source_err(
                            "labels",
                            format!("unknown image-folder labels `{other}`"),
                            Some(help),
                        ));
                    }
                };
                Ok(IngestSource::ImageFolder { path, labels })
            }
            "parquet" => {
                const KEYS: [&str; 7] = [
                    "format", "path", "image", "features", "label", "meta", "shape",
                ];
                self.check_source_keys(t, format, &KEYS)?;
                let path = self.source_path(
                    t,
                    "path",
                    "`path` is the parquet file, relative to the pipeline file",
                )?;
                let image = self.source_str(t, "image")?;
                let features = match t.get("features") {
                    None => None,
                    Some(toml::Value::String(_)) => {
                        self.source_str(t, "features")?.map(FeatureColumns::List)
                    }
                    Some(_) => match self.source_names(t, "features")? {
                        Some(v) if v.is_empty() => {
                            return Err(self.source_err(
                                "features",
                                format!("`{}` lists no columns", self.what("source.features")),
                                None,
                            ))
                        }
                        v => v.map(FeatureColumns::Columns),
                    },
                };
                const SAMPLES_HELP: &str = "set `image = \"<column>\"` for a column of image bytes, or `features = \"<column>\"` for a list column (or `features = [\"a\", \"b\"]` for numeric columns)";
                match (&image, &features) {
                    (None, None) => {
                        return Err(self.err_key(
                            &["source"],
                            format!("[{}] names no sample column", self.what("source")),
                            Some(SAMPLES_HELP.into()),
                        ))
                    }
                    (Some(_), Some(_)) => {
                        return Err(self.source_err(
                            "features",
                            format!(
                                "`{}` and `{}` cannot both be set",
                                self.what("source.image"),
                                self.what("source.features")
                            ),
                            Some("a dataset holds either images or feature vectors".into()),
                        ))
                    }
                    _ => {}
                }
                let label = self.source_str(t, "label")?;
                let meta = self.source_names(t, "meta")?.unwrap_or_default();
                let shape = match t.get("shape") {
                    None => None,
                    Some(_) if image.is_none() => {
                        return Err(self.source_err(
                            "shape",
                            format!(
                                "`{}` only applies with `image`",
                                self.what("source.shape")
                            ),
                            Some("`shape` is the [channels, height, width] of raw pixel bytes".into()),
                        ))
                    }
                    Some(toml::Value::Array(a))
                        if a.len() == 3
                            && a.iter().all(|v| {
                                v.as_integer().is_some_and(|x| (1..=65535).contains(&x))
                            }) =>
                    {
                        let d: Vec<usize> =
                            a.iter().filter_map(|v| v.as_integer()).map(|x| x as usize).collect();
                        Some([d[0], d[1], d[2]])
                    }
                    Some(_) => {
                        return Err(self.source_err(
                            "shape",
                            format!(
                                "`{}` must be [channels, height, width], three integers from 1 to 65535",
                                self.what("source.shape")
                            ),
                            Some("e.g. shape = [1, 28, 28]".into()),
                        ))
                    }
                };
                let mut roles = vec![("label", label.iter().cloned().collect())];
                match &features {
                    Some(FeatureColumns::Columns(c)) => roles.push(("features", c.clone())),
                    Some(FeatureColumns::List(c)) => roles.push(("features", vec![c.clone()])),
                    None => {}
                }
                roles.push(("image", image.iter().cloned().collect()));
                roles.push(("meta", meta.clone()));
                self.distinct_roles(&roles)?;
                Ok(IngestSource::Parquet {
                    path,
                    image,
                    features,
                    label,
                    meta,
                    shape,
                })
            }
            "text" => {
                const KEYS: [&str; 8] = [
                    "format",
                    "path",
                    "column",
                    "labels",
                    "label_delimiter",
                    "label",
                    "encoding",
                    "passage_words",
                ];
                self.check_source_keys(t, format, &KEYS)?;
                let path = self.source_path(
                    t,
                    "path",
                    "`path` is a .txt file, a folder of .txt files, or a parquet file (with `column`), relative to the pipeline file",
                )?;
                let column = self.source_str(t, "column")?;
                let is_parquet = path.written.ends_with(".parquet");
                let parquet_only = |key: &str| {
                    self.source_err(
                        key,
                        format!("`{}` only applies to a parquet file", self.what(&format!("source.{key}"))),
                        Some("for a parquet file of documents, `path` ends in .parquet and `column` names the text column".into()),
                    )
                };
                let files_only = |key: &str| {
                    self.source_err(
                        key,
                        format!(
                            "`{}` only applies to text files and folders, not parquet",
                            self.what(&format!("source.{key}"))
                        ),
                        Some("for a parquet file, name a label column with `label`".into()),
                    )
                };
                if is_parquet && column.is_none() {
                    return Err(self.err_key(
                        &["source"],
                        format!("missing key `column` in [{}]", self.what("source")),
                        Some("`column` names the parquet column of documents (strings)".into()),
                    ));
                }
                if !is_parquet {
                    for key in ["column", "label"] {
                        if t.contains_key(key) {
                            return Err(parquet_only(key));
                        }
                    }
                } else {
                    for key in ["labels", "label_delimiter", "encoding"] {
                        if t.contains_key(key) {
                            return Err(files_only(key));
                        }
                    }
                }
                const LABELS: [&str; 3] = ["none", "files", "folders"];
                let labels = match self.source_str(t, "labels")?.as_deref() {
                    None | Some("none") => TextLabels::None,
                    Some("files") => TextLabels::Files,
                    Some("folders") => TextLabels::Folders,
                    Some(other) => {
                        let help = did_you_mean(other, LABELS)
                            .unwrap_or_else(|| format!("expected one of {}", list(LABELS)));
                        return Err(self.source_err(
                            "labels",
                            format!("unknown text labels `{other}`"),
                            Some(help),
                        ));
                    }
                };
                let label_delimiter = match t.get("label_delimiter") {
                    None => None,
                    Some(toml::Value::String(d))
                        if !d.is_empty() && labels == TextLabels::Files =>
                    {
                        Some(d.clone())
                    }
                    Some(toml::Value::String(d)) if !d.is_empty() => {
                        return Err(self.source_err(
                            "label_delimiter",
                            format!(
                                "`{}` only applies with labels = \"files\"",
                                self.what("source.label_delimiter")
                            ),
                            None,
                        ))
                    }
                    Some(other) => {
                        return Err(self.source_err(
                            "label_delimiter",
                            format!(
                                "`{}` must be a non-empty string, found {}",
                                self.what("source.label_delimiter"),
                                toml_type(other)
                            ),
                            Some("e.g. label_delimiter = \"-\"".into()),
                        ))
                    }
                };
                let label = self.source_str(t, "label")?;
                if label.is_some() && label == column {
                    return Err(self.source_err(
                        "label",
                        format!(
                            "column `{}` is named both in `{}` and in `{}`",
                            label.clone().unwrap_or_default(),
                            self.what("source.column"),
                            self.what("source.label")
                        ),
                        Some("a column can have only one role".into()),
                    ));
                }
                const ENCODINGS: [&str; 3] = ["utf-8", "latin-1", "auto"];
                let encoding = match self.source_str(t, "encoding")?.as_deref() {
                    None | Some("utf-8") | Some("utf8") => TextEncoding::Utf8,
                    Some("latin-1") | Some("latin1") | Some("iso-8859-1") => TextEncoding::Latin1,
                    Some("auto") => TextEncoding::Auto,
                    Some(other) => {
                        let help = did_you_mean(other, ENCODINGS)
                            .unwrap_or_else(|| format!("expected one of {}", list(ENCODINGS)));
                        return Err(self.source_err(
                            "encoding",
                            format!("unknown text encoding `{other}`"),
                            Some(help),
                        ));
                    }
                };
                let passage_words = match t.get("passage_words") {
                    None => 48,
                    Some(toml::Value::Integer(n)) if (4..=2048).contains(n) => *n as usize,
                    Some(other) => {
                        return Err(self.source_err(
                            "passage_words",
                            format!(
                                "`{}` must be an integer from 4 to 2048, found {}",
                                self.what("source.passage_words"),
                                match other {
                                    toml::Value::Integer(n) => n.to_string(),
                                    v => toml_type(v).to_string(),
                                }
                            ),
                            None,
                        ))
                    }
                };
                Ok(IngestSource::Text {
                    path,
                    column,
                    labels,
                    label_delimiter,
                    label,
                    encoding,
                    passage_words,
                })
            }
            "csv" => {
                const KEYS: [&str; 6] =
                    ["format", "path", "features", "label", "meta", "delimiter"];
                self.check_source_keys(t, format, &KEYS)?;
                let path = self.source_path(
                    t,
                    "path",
                    "`path` is the CSV file, relative to the pipeline file",
                )?;
                let features = self.source_names(t, "features")?;
                if features.as_ref().is_some_and(Vec::is_empty) {
                    return Err(self.source_err(
                        "features",
                        format!("`{}` lists no columns", self.what("source.features")),
                        Some("leave `features` out to use every other column".into()),
                    ));
                }
                let label = self.source_str(t, "label")?;
                let meta = self.source_names(t, "meta")?.unwrap_or_default();
                let delimiter = match t.get("delimiter") {
                    None => ',',
                    Some(toml::Value::String(d))
                        if d.chars().count() == 1
                            && d.is_ascii()
                            && !matches!(d.as_str(), "\"" | "\n" | "\r") =>
                    {
                        d.chars().next().unwrap_or(',')
                    }
                    Some(other) => {
                        let found = match other {
                            toml::Value::String(s) => format!("{s:?}"),
                            v => toml_type(v).to_string(),
                        };
                        return Err(self.source_err(
                            "delimiter",
                            format!(
                                "`{}` must be one ASCII character, found {found}",
                                self.what("source.delimiter")
                            ),
                            Some("e.g. delimiter = \";\" or delimiter = \"\\t\"".into()),
                        ));
                    }
                };
                let roles = vec![
                    ("label", label.iter().cloned().collect()),
                    ("features", features.clone().unwrap_or_default()),
                    ("meta", meta.clone()),
                ];
                self.distinct_roles(&roles)?;
                Ok(IngestSource::Csv {
                    path,
                    features,
                    label,
                    meta,
                    delimiter,
                })
            }
            _ => {
                let all = FORMATS.iter().chain(PLANNED_FORMATS.iter()).copied();
                let help = did_you_mean(format, all)
                    .unwrap_or_else(|| format!("supported formats: {}", list(FORMATS)));
                Err(self.source_err(
                    "format",
                    format!("unknown ingest format `{format}`"),
                    Some(help),
                ))
            }
        }
    }

    fn ingest(&self, b: &RawIngest) -> Result<IngestConfig> {
        let source = self.source(&b.source)?;

        let split = match &b.split {
            None => Split {
                train: 0.8,
                test: 0.2,
            },
            Some(s) => {
                let train = s
                    .train
                    .as_ref()
                    .map(|v| {
                        self.r
                            .float(v, &self.what("split.train"), FloatRule::OpenUnit)
                    })
                    .transpose()?;
                let test = s
                    .test
                    .as_ref()
                    .map(|v| {
                        self.r
                            .float(v, &self.what("split.test"), FloatRule::OpenUnit)
                    })
                    .transpose()?;
                let (train, test) = match (train, test) {
                    (Some(a), Some(b)) => (a, b),
                    (Some(a), None) => (a, 1.0 - a),
                    (None, Some(b)) => (1.0 - b, b),
                    (None, None) => (0.8, 0.2),
                };
                if ((train + test) - 1.0).abs() > 1e-9 {
                    return Err(self.err_key(
                        &["split"],
                        format!(
                            "`{}` must sum to 1, but train + test = {train} + {test} = {}",
                            self.what("split"),
                            ((train + test) * 1e12).round() / 1e12
                        ),
                        Some("e.g. split = { train = 0.8, test = 0.2 }".into()),
                    ));
                }
                Split { train, test }
            }
        };
        let limit = b
            .limit
            .as_ref()
            .map(|v| self.r.int(v, &self.what("limit"), 1, None))
            .transpose()?;
        const ON_ERROR: [&str; 2] = ["fail", "skip"];
        let on_error = match b.on_error.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "fail")) => OnError::Fail,
            Some((_, "skip")) => OnError::Skip,
            Some((v, other)) => {
                let help = did_you_mean(other, ON_ERROR)
                    .unwrap_or_else(|| format!("expected one of {}", list(ON_ERROR)));
                return Err(self.err_at(
                    v,
                    format!("unknown `{}` policy `{other}`", self.what("on_error")),
                    Some(help),
                ));
            }
        };
        let images_only = |key: &str, span: std::ops::Range<usize>| {
            self.r.src.error_at(
                &span,
                format!(
                    "`{}` only applies to image sources (`idx`, `image_folder`, or `parquet` with `image`)",
                    self.what(key)
                ),
                Some(format!("this source reads feature vectors; remove `{key}`")),
            )
        };
        let resize = match &b.resize {
            None => None,
            Some(v) if !source.has_images() => return Err(images_only("resize", v.span())),
            Some(v) => {
                let side = |x: &toml::Value| {
                    x.as_integer()
                        .filter(|n| (1..=8192).contains(n))
                        .map(|n| n as u32)
                };
                let size = match v.get_ref() {
                    toml::Value::Integer(_) => side(v.get_ref()).map(|s| [s, s]),
                    toml::Value::Array(a) if a.len() == 2 => {
                        side(&a[0]).zip(side(&a[1])).map(|(h, w)| [h, w])
                    }
                    _ => None,
                };
                let Some(size) = size else {
                    return Err(self.err_at(
                        v,
                        format!(
                            "`{}` must be [height, width] or one number, each from 1 to 8192",
                            self.what("resize")
                        ),
                        Some("e.g. resize = [64, 64] or resize = 64".into()),
                    ));
                };
                Some(size)
            }
        };
        const COLORS: [&str; 2] = ["grayscale", "rgb"];
        let color = match &b.color {
            None => None,
            Some(v) if !source.has_images() => return Err(images_only("color", v.span())),
            Some(v) => match v.get_ref().as_str() {
                "grayscale" => Some(ColorMode::Grayscale),
                "rgb" => Some(ColorMode::Rgb),
                other => {
                    let help = did_you_mean(other, COLORS)
                        .unwrap_or_else(|| format!("expected one of {}", list(COLORS)));
                    return Err(self.err_at(v, format!("unknown color `{other}`"), Some(help)));
                }
            },
        };
        let tokenizer =
            match (&b.tokenizer, source.is_text()) {
                (None, false) => None,
                (Some(_), false) => return Err(self.err_key(
                    &["tokenizer"],
                    format!(
                        "`{}` only applies to text sources (format = \"text\")",
                        self.what("tokenizer")
                    ),
                    Some(
                        "remove `tokenizer`, or read text with source = { format = \"text\", .. }"
                            .into(),
                    ),
                )),
                (None, true) => {
                    return Err(self.err_key(
                        &["source"],
                        format!(
                            "a text source needs `{}`: how to turn passages into token sequences",
                            self.what("tokenizer")
                        ),
                        Some("e.g. tokenizer = { vocab_size = 2000, seq_len = 64 }".into()),
                    ))
                }
                (Some(tk), true) => {
                    let config = self.tokenizer(tk)?;
                    Some(config)
                }
            };
        Ok(IngestConfig {
            source,
            split,
            limit,
            on_error,
            resize,
            color,
            tokenizer,
        })
    }

    /// `tokenizer = { .. }` of a text source: trained (`vocab_size`, `min_frequency`) or
    /// brought (`path`), not both.
    fn tokenizer(&self, tk: &RawTokenizer) -> Result<TokenizerConfig> {
        let vocab = match &tk.path {
            None => TokenizerVocab::Train {
                vocab_size: self.int(
                    &tk.vocab_size,
                    "tokenizer.vocab_size",
                    262,
                    Some(65536),
                    2000,
                )? as usize,
                min_frequency: self.int(
                    &tk.min_frequency,
                    "tokenizer.min_frequency",
                    1,
                    None,
                    2,
                )?,
            },
            Some(p) => {
                for (key, v) in [
                    ("vocab_size", &tk.vocab_size),
                    ("min_frequency", &tk.min_frequency),
                ] {
                    if let Some(v) = v {
                        return Err(self.err_at(
                            v,
                            format!(
                                "`{}` trains a tokenizer, but `path` brings one",
                                self.what(&format!("tokenizer.{key}"))
                            ),
                            Some(format!(
                                "remove `{key}` to use the vocabulary of the file, or `path` to \
                                 train one on the train split"
                            )),
                        ));
                    }
                }
                let written = self.r.non_empty_path(p, &self.what("tokenizer.path"))?;
                TokenizerVocab::File {
                    path: self.r.path(&written),
                }
            }
        };
        Ok(TokenizerConfig {
            vocab,
            seq_len: self.int(&tk.seq_len, "tokenizer.seq_len", 8, Some(4096), 64)? as usize,
        })
    }

    fn curate(&self, b: &RawCurate) -> Result<CurateConfig> {
        let near = b.near_duplicates.as_deref();
        let near_duplicates = NearDuplicates {
            enabled: near.and_then(|n| n.enabled).unwrap_or(true),
            max_distance: self.int(
                near.map_or(&None, |n| &n.max_distance),
                "near_duplicates.max_distance",
                0,
                Some(32),
                8,
            )? as u32,
            min_cosine: match near.and_then(|n| n.min_cosine.as_ref()) {
                None => 0.995,
                Some(v) => {
                    let x = *v.get_ref();
                    if !(x > 0.0 && x <= 1.0) {
                        return Err(self.err_at(
                            v,
                            format!(
                                "`{}` must be a number in (0, 1], found {x}",
                                self.what("near_duplicates.min_cosine")
                            ),
                            None,
                        ));
                    }
                    x
                }
            },
        };
        let q = b.quality.as_deref();
        let unit = |v: &Option<Spanned<f64>>, key: &str, default: f64| -> Result<f64> {
            match v {
                None => Ok(default),
                Some(v) => {
                    let x = *v.get_ref();
                    if !(0.0..=255.0).contains(&x) {
                        return Err(self.err_at(
                            v,
                            format!(
                                "`{}` must be a pixel value from 0 to 255, found {x}",
                                self.what(key)
                            ),
                            None,
                        ));
                    }
                    Ok(x)
                }
            }
        };
        let min_mean = unit(q.map_or(&None, |q| &q.min_mean), "quality.min_mean", 2.0)?;
        let max_mean = unit(q.map_or(&None, |q| &q.max_mean), "quality.max_mean", 253.0)?;
        if min_mean >= max_mean {
            return Err(self.err_key(
                &["quality"],
                format!(
                    "`{}` ({min_mean}) must be below `{}` ({max_mean})",
                    self.what("quality.min_mean"),
                    self.what("quality.max_mean")
                ),
                None,
            ));
        }
        let quality = Quality {
            blank_std: self.float(
                q.map_or(&None, |q| &q.blank_std),
                "quality.blank_std",
                FloatRule::NonNegative,
                1.0,
            )?,
            min_mean,
            max_mean,
            min_size: self.int(
                q.map_or(&None, |q| &q.min_size),
                "quality.min_size",
                0,
                Some(65535),
                16,
            )? as u32,
        };
        let metadata = match &b.metadata {
            None => None,
            Some(names) => {
                let mut out: Vec<String> = Vec::new();
                for n in names.get_ref() {
                    if n.get_ref().trim().is_empty() {
                        return Err(self.err_at(
                            n,
                            format!("`{}` has an empty column name", self.what("metadata")),
                            None,
                        ));
                    }
                    if out.contains(n.get_ref()) {
                        return Err(self.err_at(
                            n,
                            format!("`{}` lists `{}` twice", self.what("metadata"), n.get_ref()),
                            None,
                        ));
                    }
                    out.push(n.get_ref().clone());
                }
                Some(out)
            }
        };
        let drop = match &b.drop {
            None => vec![DropRule::Duplicates, DropRule::LeakedTrain],
            Some(items) => {
                let names = DropRule::ALL.map(DropRule::as_str);
                let mut out = Vec::new();
                for item in items.get_ref() {
                    let Some(rule) = DropRule::ALL
                        .into_iter()
                        .find(|r| r.as_str() == item.get_ref())
                    else {
                        let help = did_you_mean(item.get_ref(), names)
                            .unwrap_or_else(|| format!("expected any of {}", list(names)));
                        return Err(self.err_at(
                            item,
                            format!("unknown `{}` entry `{}`", self.what("drop"), item.get_ref()),
                            Some(help),
                        ));
                    };
                    if out.contains(&rule) {
                        return Err(self.err_at(
                            item,
                            format!("`{}` lists `{}` twice", self.what("drop"), item.get_ref()),
                            None,
                        ));
                    }
                    out.push(rule);
                }
                if out.contains(&DropRule::LeakedTrain) && out.contains(&DropRule::LeakedTest) {
                    return Err(self.err_at(
                        items,
                        format!(
                            "`{}` has both `leaked_train` and `leaked_test`",
                            self.what("drop")
                        ),
                        Some(
                            "drop the train copy or the test copy of a leaked sample, not both"
                                .into(),
                        ),
                    ));
                }
                out.sort();
                out
            }
        };
        let mut fail_if = Vec::new();
        for (metric, bound) in b.fail_if.iter().flatten() {
            let name = metric.get_ref();
            if !CurateConfig::CHECKS.contains(&name.as_str()) {
                let help = did_you_mean(name, CurateConfig::CHECKS).unwrap_or_else(|| {
                    format!("`fail_if` can bound {}", list(CurateConfig::CHECKS))
                });
                return Err(self.err_at(
                    metric,
                    format!("`{}` names unknown check `{name}`", self.what("fail_if")),
                    Some(help),
                ));
            }
            let max = self.r.float(
                bound,
                &format!("stages.{}.fail_if.{name}", self.name),
                FloatRule::NonNegative,
            )?;
            fail_if.push(FailIf {
                metric: name.clone(),
                max,
            });
        }
        fail_if.sort_by(|a, b| a.metric.cmp(&b.metric));
        let max_listed = self.int(&b.max_listed, "max_listed", 0, Some(1_000_000), 1000)? as usize;
        Ok(CurateConfig {
            near_duplicates,
            quality,
            metadata,
            drop,
            fail_if,
            max_listed,
        })
    }

    fn augment(&self, b: &RawAugment) -> Result<AugmentConfig> {
        if b.views.get_ref().is_empty() {
            return Err(self.err_at(
                &b.views,
                format!("`{}` must list at least one view", self.what("views")),
                Some(VIEWS_HELP.into()),
            ));
        }
        let mut views = Vec::new();
        for (i, view) in b.views.get_ref().iter().enumerate() {
            let mut augs = Vec::new();
            for (j, aug) in view.get_ref().iter().enumerate() {
                let what = format!("{}[{i}][{j}]", self.what("views"));
                let a = match aug.get_ref() {
                    toml::Value::String(s) if !s.trim().is_empty() => Augmentation {
                        name: s.clone(),
                        params: Value::Object(Map::new()),
                    },
                    toml::Value::String(_) => {
                        let message = format!("`{what}`: the augmentation name is empty");
                        return Err(self.err_at(aug, message, None));
                    }
                    toml::Value::Table(t) => {
                        let mut path = self.segs(&["views"]);
                        path.extend([Seg::Index(i), Seg::Index(j)]);
                        let (name, params) = self.named_table(t, &path, &what, "name")?;
                        let Some(name) = name else {
                            return Err(self.err_at(
                                aug,
                                format!("augmentation `{what}` has no `name`"),
                                Some(AUG_TABLE_HELP.into()),
                            ));
                        };
                        Augmentation { name, params }
                    }
                    other => {
                        let found = toml_type(other);
                        return Err(self.err_at(
                            aug,
                            format!("`{what}` must be an augmentation name or a table with a `name`, found {found}"),
                            None,
                        ));
                    }
                };
                augs.push(a);
            }
            views.push(augs);
        }
        let preview = self.int(&b.preview, "preview", 0, Some(64), 8)? as usize;
        Ok(AugmentConfig { views, preview })
    }

    fn pretrain(&self, b: &RawPretrain) -> Result<PretrainConfig> {
        let (plugin, params) = self.named_table(
            &b.objective,
            &self.segs(&["objective"]),
            &self.what("objective"),
            "plugin",
        )?;
        let Some(plugin) = plugin else {
            return Err(self.err_key(
                &["objective"],
                format!("missing key `plugin` in [{}]", self.what("objective")),
                Some(OBJECTIVE_HELP.into()),
            ));
        };
        let objective = Objective { plugin, params };
        let model = self.model(b.model.as_deref())?;
        let epochs = self.int(&b.epochs, "epochs", 1, None, 10)?;
        let batch_size = self.int(&b.batch_size, "batch_size", 1, None, 256)? as usize;
        let optim = self.optim(b.optim.as_deref(), epochs)?;
        let grad_clip = b
            .grad_clip
            .as_ref()
            .map(|v| {
                self.r
                    .float(v, &self.what("grad_clip"), FloatRule::Positive)
            })
            .transpose()?;
        let accumulate = self.int(&b.accumulate, "accumulate", 1, Some(1024), 1)?;
        let collapse = match b.collapse.as_deref() {
            None => CollapseConfig {
                min_std: 0.01,
                patience: 2,
            },
            Some(c) => CollapseConfig {
                min_std: self.float(
                    &c.min_std,
                    "collapse.min_std",
                    FloatRule::NonNegative,
                    0.01,
                )?,
                patience: self.int(&c.patience, "collapse.patience", 1, None, 2)?,
            },
        };
        Ok(PretrainConfig {
            objective,
            model,
            optim,
            epochs,
            batch_size,
            grad_clip,
            accumulate,
            collapse,
        })
    }

    fn model(&self, m: Option<&RawModel>) -> Result<ModelConfig> {
        let Some(m) = m else {
            return Ok(ModelConfig {
                arch: Arch::Mlp {
                    hidden: vec![512, 512],
                },
                embed_dim: 128,
                batch_norm: true,
            });
        };
        const ARCHS: [&str; 5] = ["mlp", "convnet", "resnet", "vit", "transformer"];
        let arch_name = m.arch.as_ref().map_or("mlp", |a| a.get_ref().as_str());
        let only_for = |key: &str, archs: &[&str], span: std::ops::Range<usize>| {
            let allowed: Vec<String> = archs.iter().map(|a| format!("\"{a}\"")).collect();
            self.r.src.error_at(
                &span,
                format!(
                    "`{}` only applies to arch = {}",
                    self.what(&format!("model.{key}")),
                    allowed.join(" or ")
                ),
                Some(format!(
                    "this model has arch = \"{arch_name}\"; remove `{key}` or change `arch`"
                )),
            )
        };
        if arch_name != "vit" && arch_name != "transformer" {
            for (key, span) in [
                ("dim", m.dim.as_ref().map(|v| v.span())),
                ("depth", m.depth.as_ref().map(|v| v.span())),
                ("heads", m.heads.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = span {
                    return Err(only_for(key, &["vit", "transformer"], span));
                }
            }
        }
        if !matches!(arch_name, "vit" | "transformer" | "convnet") {
            if let Some(p) = &m.pool {
                return Err(only_for(
                    "pool",
                    &["vit", "transformer", "convnet"],
                    p.span(),
                ));
            }
        }
        if arch_name != "vit" {
            if let Some(p) = &m.patch {
                return Err(only_for("patch", &["vit"], p.span()));
            }
        }
        if arch_name != "transformer" {
            if let Some(d) = &m.dropout {
                return Err(only_for("dropout", &["transformer"], d.span()));
            }
        }
        let arch = match arch_name {
            "vit" | "transformer" => {
                for (key, span) in [
                    ("hidden", m.hidden.as_ref().map(|v| v.span())),
                    ("width", m.width.as_ref().map(|v| v.span())),
                    ("blocks", m.blocks.as_ref().map(|v| v.span())),
                ] {
                    if let Some(span) = span {
                        return Err(only_for(
                            key,
                            &[if key == "hidden" {
                                "mlp"
                            } else {
                                "convnet\" or \"resnet"
                            }],
                            span,
                        ));
                    }
                }
                let dim = self.int(&m.dim, "model.dim", 1, None, 64)? as usize;
                let heads = self.int(&m.heads, "model.heads", 1, None, 4)? as usize;
                if dim % heads != 0 {
                    let span = m
                        .heads
                        .as_ref()
                        .or(m.dim.as_ref())
                        .map(|v| v.span())
                        .unwrap_or(0..0);
                    return Err(self.r.src.error_at(
                        &span,
                        format!(
                            "`{}` ({dim}) must be divisible by `heads` ({heads})",
                            self.what("model.dim")
                        ),
                        Some("choose heads that divide dim, e.g. dim = 64, heads = 4".into()),
                    ));
                }
                const POOLS: [&str; 2] = ["cls", "mean"];
                let pool = match m.pool.as_ref().map(|p| (p, p.get_ref().as_str())) {
                    None if arch_name == "transformer" => Pool::Mean,
                    None | Some((_, "cls")) => Pool::Cls,
                    Some((_, "mean")) => Pool::Mean,
                    Some((p, other)) => {
                        let help = did_you_mean(other, POOLS)
                            .unwrap_or_else(|| format!("supported: {}", list(POOLS)));
                        return Err(self.err_at(p, format!("unknown pool `{other}`"), Some(help)));
                    }
                };
                let depth = self.int(&m.depth, "model.depth", 1, Some(64), 4)? as usize;
                if arch_name == "transformer" {
                    let dropout = match &m.dropout {
                        None => 0.0,
                        Some(v) => {
                            self.r
                                .float(v, &self.what("model.dropout"), FloatRule::HalfOpenUnit)?
                        }
                    };
                    Arch::Transformer {
                        dim,
                        depth,
                        heads,
                        pool,
                        dropout,
                    }
                } else {
                    Arch::Vit {
                        patch: self.int(&m.patch, "model.patch", 1, None, 7)? as usize,
                        dim,
                        depth,
                        heads,
                        pool,
                    }
                }
            }
            "mlp" => {
                if let Some(w) = &m.width {
                    return Err(only_for("width", &["convnet", "resnet"], w.span()));
                }
                if let Some(b) = &m.blocks {
                    return Err(only_for("blocks", &["resnet"], b.span()));
                }
                let hidden = match &m.hidden {
                    None => vec![512, 512],
                    Some(h) => h
                        .get_ref()
                        .iter()
                        .map(|v| {
                            self.r
                                .int(v, &self.what("model.hidden"), 1, None)
                                .map(|x| x as usize)
                        })
                        .collect::<Result<_>>()?,
                };
                Arch::Mlp { hidden }
            }
            "convnet" => {
                if let Some(h) = &m.hidden {
                    return Err(only_for("hidden", &["mlp"], h.span()));
                }
                if let Some(b) = &m.blocks {
                    return Err(only_for("blocks", &["resnet"], b.span()));
                }
                const POOLS: [&str; 2] = ["mean", "flatten"];
                let flatten = match m.pool.as_ref().map(|p| (p, p.get_ref().as_str())) {
                    None | Some((_, "mean")) => false,
                    Some((_, "flatten")) => true,
                    Some((p, other)) => {
                        let help = did_you_mean(other, POOLS).unwrap_or_else(|| {
                            format!("supported for arch = \"convnet\": {}", list(POOLS))
                        });
                        return Err(self.err_at(p, format!("unknown pool `{other}`"), Some(help)));
                    }
                };
                Arch::Convnet {
                    width: self.int(&m.width, "model.width", 1, None, 16)? as usize,
                    flatten,
                }
            }
            "resnet" => {
                if let Some(h) = &m.hidden {
                    return Err(only_for("hidden", &["mlp"], h.span()));
                }
                Arch::Resnet {
                    width: self.int(&m.width, "model.width", 1, None, 16)? as usize,
                    blocks: self.int(&m.blocks, "model.blocks", 1, Some(8), 1)? as usize,
                }
            }
            other => {
                let help = did_you_mean(other, ARCHS)
                    .unwrap_or_else(|| format!("supported archs: {}", list(ARCHS)));
                let arch = m.arch.as_ref().expect("the default arch is known");
                return Err(self.err_at(arch, format!("unknown model arch `{other}`"), Some(help)));
            }
        };
        Ok(ModelConfig {
            arch,
            embed_dim: self.int(&m.embed_dim, "model.embed_dim", 1, None, 128)? as usize,
            batch_norm: m.batch_norm.unwrap_or(true),
        })
    }

    fn optim(&self, o: Option<&RawOptim>, epochs: u64) -> Result<OptimConfig> {
        let Some(o) = o else {
            return Ok(OptimConfig {
                optimizer: Optimizer::AdamW {
                    betas: [0.9, 0.999],
                },
                lr: 1e-3,
                weight_decay: 1e-4,
                warmup_epochs: 0,
                schedule: Schedule::Cosine,
            });
        };
        const NAMES: [&str; 3] = ["sgd", "adamw", "lars"];
        let name = o.name.as_ref().map_or("adamw", |n| n.get_ref().as_str());
        let only_for = |key: &str, opts: &[&str], span: std::ops::Range<usize>| {
            let allowed: Vec<String> = opts.iter().map(|o| format!("\"{o}\"")).collect();
            self.r.src.error_at(
                &span,
                format!(
                    "`{}` only applies to name = {}",
                    self.what(&format!("optim.{key}")),
                    allowed.join(" or ")
                ),
                Some(format!(
                    "this optimizer is \"{name}\"; remove `{key}` or change `name`"
                )),
            )
        };
        let optimizer = match name {
            "sgd" | "lars" if o.betas.is_some() => {
                let b = o.betas.as_ref().expect("guarded");
                return Err(only_for("betas", &["adamw"], b.span()));
            }
            "sgd" if o.eta.is_some() => {
                let e = o.eta.as_ref().expect("guarded");
                return Err(only_for("eta", &["lars"], e.span()));
            }
            "lars" => Optimizer::Lars {
                momentum: self.float(
                    &o.momentum,
                    "optim.momentum",
                    FloatRule::HalfOpenUnit,
                    0.9,
                )?,
                eta: self.float(&o.eta, "optim.eta", FloatRule::Positive, 0.001)?,
            },
            "sgd" => Optimizer::Sgd {
                momentum: self.float(
                    &o.momentum,
                    "optim.momentum",
                    FloatRule::HalfOpenUnit,
                    0.9,
                )?,
            },
            "adamw" => {
                if let Some(m) = &o.momentum {
                    return Err(only_for("momentum", &["sgd", "lars"], m.span()));
                }
                if let Some(e) = &o.eta {
                    return Err(only_for("eta", &["lars"], e.span()));
                }
                let betas = match &o.betas {
                    None => [0.9, 0.999],
                    Some(b) => {
                        let [b1, b2] = b.get_ref().as_slice() else {
                            return Err(self.err_at(
                                b,
                                format!(
                                    "`{}` must have exactly two numbers, found {}",
                                    self.what("optim.betas"),
                                    b.get_ref().len()
                                ),
                                Some("e.g. betas = [0.9, 0.999]".into()),
                            ));
                        };
                        let what = self.what("optim.betas");
                        [
                            self.r.float(b1, &what, FloatRule::HalfOpenUnit)?,
                            self.r.float(b2, &what, FloatRule::HalfOpenUnit)?,
                        ]
                    }
                };
                Optimizer::AdamW { betas }
            }
            other => {
                let help = did_you_mean(other, NAMES)
                    .unwrap_or_else(|| format!("supported optimizers: {}", list(NAMES)));
                let n = o.name.as_ref().expect("the default optimizer is known");
                return Err(self.err_at(n, format!("unknown optimizer `{other}`"), Some(help)));
            }
        };
        let lr = self.float(&o.lr, "optim.lr", FloatRule::Positive, 1e-3)?;
        let weight_decay = self.float(
            &o.weight_decay,
            "optim.weight_decay",
            FloatRule::NonNegative,
            1e-4,
        )?;
        let warmup_epochs = self.int(&o.warmup_epochs, "optim.warmup_epochs", 0, None, 0)?;
        if let Some(w) = &o.warmup_epochs {
            if warmup_epochs >= epochs {
                return Err(self.err_at(
                    w,
                    format!(
                        "`{}` ({warmup_epochs}) must be less than `epochs` ({epochs})",
                        self.what("optim.warmup_epochs")
                    ),
                    Some("lower `warmup_epochs` or raise `epochs`".into()),
                ));
            }
        }
        const SCHEDULES: [&str; 2] = ["cosine", "constant"];
        let schedule = match o.schedule.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "cosine")) => Schedule::Cosine,
            Some((_, "constant")) => Schedule::Constant,
            Some((s, other)) => {
                let help = did_you_mean(other, SCHEDULES)
                    .unwrap_or_else(|| format!("supported schedules: {}", list(SCHEDULES)));
                return Err(self.err_at(s, format!("unknown schedule `{other}`"), Some(help)));
            }
        };
        Ok(OptimConfig {
            optimizer,
            lr,
            weight_decay,
            warmup_epochs,
            schedule,
        })
    }

    fn probe(&self, b: &RawProbe) -> Result<ProbeConfig> {
        let methods = match &b.methods {
            None => ProbeMethod::ALL.to_vec(),
            Some(list_) => {
                if list_.get_ref().is_empty() {
                    return Err(self.err_at(
                        list_,
                        format!(
                            "`{}` must list at least one probe method",
                            self.what("methods")
                        ),
                        Some(format!(
                            "supported methods: {}",
                            list(ProbeMethod::ALL.map(ProbeMethod::as_str))
                        )),
                    ));
                }
                let mut methods = Vec::new();
                for m in list_.get_ref() {
                    let Some(method) = ProbeMethod::ALL
                        .into_iter()
                        .find(|x| x.as_str() == m.get_ref())
                    else {
                        let names = ProbeMethod::ALL.map(ProbeMethod::as_str);
                        let help = did_you_mean(m.get_ref(), names)
                            .unwrap_or_else(|| format!("supported methods: {}", list(names)));
                        return Err(self.err_at(
                            m,
                            format!("unknown probe method `{}`", m.get_ref()),
                            Some(help),
                        ));
                    };
                    if methods.contains(&method) {
                        return Err(self.err_at(
                            m,
                            format!("probe method `{}` is listed twice", m.get_ref()),
                            None,
                        ));
                    }
                    methods.push(method);
                }
                methods
            }
        };
        let linear = match methods.contains(&ProbeMethod::Linear) {
            false => None,
            true => Some(self.linear_config(b.linear.as_deref())?),
        };
        let knn = match methods.contains(&ProbeMethod::Knn) {
            false => None,
            true => {
                let k = b.knn.as_ref();
                Some(KnnConfig {
                    k: self.int(k.map_or(&None, |k| &k.k), "knn.k", 1, None, 20)? as usize,
                    temperature: self.float(
                        k.map_or(&None, |k| &k.temperature),
                        "knn.temperature",
                        FloatRule::Positive,
                        0.07,
                    )?,
                })
            }
        };
        let label_fractions = match &b.label_fractions {
            None => vec![1.0],
            Some(list_) => {
                if list_.get_ref().is_empty() {
                    return Err(self.err_at(
                        list_,
                        format!("`{}` is empty", self.what("label_fractions")),
                        Some(
                            "list at least one fraction, e.g. label_fractions = [0.01, 0.1, 1.0]"
                                .into(),
                        ),
                    ));
                }
                let mut out = Vec::new();
                for f in list_.get_ref() {
                    let v = *f.get_ref();
                    if !(v > 0.0 && v <= 1.0) {
                        return Err(self.err_at(
                            f,
                            format!(
                                "`{}` value {v} must be in (0, 1]",
                                self.what("label_fractions")
                            ),
                            Some("fractions of the train labels, e.g. 0.01 for 1 %".into()),
                        ));
                    }
                    if out.contains(&v) {
                        return Err(self.err_at(
                            f,
                            format!("`{}` lists {v} twice", self.what("label_fractions")),
                            None,
                        ));
                    }
                    out.push(v);
                }
                out
            }
        };
        let seeds = self.int(&b.seeds, "seeds", 1, Some(100), 3)?;
        let supervised = b
            .supervised
            .as_deref()
            .map(|s| -> Result<SupervisedConfig> {
                Ok(SupervisedConfig {
                    epochs: self.int(&s.epochs, "supervised.epochs", 1, None, 30)?,
                    lr: self.float(&s.lr, "supervised.lr", FloatRule::Positive, 1e-3)?,
                })
            })
            .transpose()?;
        Ok(ProbeConfig {
            methods,
            linear,
            knn,
            baseline: b.baseline.unwrap_or(true),
            label_fractions,
            seeds,
            supervised,
        })
    }

    /// `linear = { epochs, lr, weight_decay }` with its defaults.
    fn linear_config(&self, l: Option<&RawLinear>) -> Result<LinearProbeConfig> {
        Ok(LinearProbeConfig {
            epochs: self.int(
                l.map_or(&None, |l| &l.epochs),
                "linear.epochs",
                1,
                None,
                100,
            )?,
            lr: self.float(
                l.map_or(&None, |l| &l.lr),
                "linear.lr",
                FloatRule::Positive,
                0.01,
            )?,
            weight_decay: self.float(
                l.map_or(&None, |l| &l.weight_decay),
                "linear.weight_decay",
                FloatRule::NonNegative,
                1e-4,
            )?,
        })
    }

    fn report(&self, b: &RawReport, pipeline: &str) -> Result<ReportConfig> {
        let title = match &b.title {
            Some(t) if t.get_ref().trim().is_empty() => {
                return Err(self.err_at(
                    t,
                    "`title` is empty",
                    Some("leave it out to use the pipeline's name".into()),
                ))
            }
            Some(t) => t.get_ref().clone(),
            None => pipeline.to_string(),
        };
        Ok(ReportConfig {
            title,
            sources: Vec::new(),
        })
    }

    fn ood_eval(&self, b: &RawOodEval) -> Result<OodEvalConfig> {
        let names = |given: &Option<Spanned<Vec<Spanned<String>>>>,
                     key: &str,
                     known: &[&str]|
         -> Result<Option<Vec<String>>> {
            let Some(l) = given else { return Ok(None) };
            let mut out: Vec<String> = Vec::new();
            for item in l.get_ref() {
                let v = item.get_ref();
                if !known.contains(&v.as_str()) {
                    let help = did_you_mean(v, known.iter().copied())
                        .unwrap_or_else(|| format!("known: {}", list(known.iter().copied())));
                    return Err(self.err_at(
                        item,
                        format!("unknown {} `{v}`", key.trim_end_matches('s')),
                        Some(help),
                    ));
                }
                if out.contains(v) {
                    return Err(self.err_at(
                        item,
                        format!("`{}` lists `{v}` twice", self.what(key)),
                        None,
                    ));
                }
                out.push(v.clone());
            }
            Ok(Some(out))
        };
        let score_names: Vec<&str> = OodScore::ALL.iter().map(|s| s.as_str()).collect();
        let scores = match names(&b.scores, "scores", &score_names)? {
            None => OodScore::ALL.to_vec(),
            Some(v) => v
                .iter()
                .map(|n| {
                    OodScore::ALL
                        .into_iter()
                        .find(|s| s.as_str() == n)
                        .expect("validated")
                })
                .collect(),
        };
        let corruptions = names(
            &b.corruptions,
            "corruptions",
            &crate::stages::corruptions::ALL,
        )?
        .unwrap_or_else(|| {
            crate::stages::corruptions::ALL
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let severities = match &b.severities {
            None => vec![1, 2, 3, 4, 5],
            Some(l) => l
                .get_ref()
                .iter()
                .map(|v| {
                    self.r
                        .int(v, &self.what("severities"), 1, Some(5))
                        .map(|x| x as u8)
                })
                .collect::<Result<_>>()?,
        };
        if b.ood.is_none() && corruptions.is_empty() {
            return Err(self.err_key(
                &["kind"],
                format!(
                    "stage `{}` has nothing to evaluate: no `ood` data set and no corruptions",
                    self.name
                ),
                Some(
                    "add `ood = \"<a dataset stage>\"` or leave `corruptions` at its default"
                        .into(),
                ),
            ));
        }
        Ok(OodEvalConfig {
            scores,
            k: self.int(&b.k, "k", 1, None, 1)? as usize,
            corruptions,
            severities,
            linear: self.linear_config(b.linear.as_deref())?,
        })
    }

    fn finetune(&self, b: &RawFinetune) -> Result<FinetuneConfig> {
        const METHODS: [&str; 4] = ["full", "partial", "lora", "adapter"];
        let name = b.method.as_ref().map_or("full", |m| m.get_ref().as_str());
        let misplaced = |key: &str, method: &str, span: std::ops::Range<usize>| {
            self.r.src.error_at(
                &span,
                format!("`{}` only applies to method = \"{method}\"", self.what(key)),
                Some(format!(
                    "this stage has method = \"{name}\"; remove `{key}` or change `method`"
                )),
            )
        };
        if name != "partial" {
            if let Some(t) = &b.trainable_blocks {
                return Err(misplaced("trainable_blocks", "partial", t.span()));
            }
        }
        if name != "lora" && b.lora.is_some() {
            return Err(self.err_key(
                &["lora"],
                format!("`{}` only applies to method = \"lora\"", self.what("lora")),
                Some(format!("this stage has method = \"{name}\"")),
            ));
        }
        if name != "adapter" && b.adapter.is_some() {
            return Err(self.err_key(
                &["adapter"],
                format!(
                    "`{}` only applies to method = \"adapter\"",
                    self.what("adapter")
                ),
                Some(format!("this stage has method = \"{name}\"")),
            ));
        }
        let method = match name {
            "full" => FinetuneMethod::Full,
            "partial" => FinetuneMethod::Partial {
                trainable_blocks: self.int(&b.trainable_blocks, "trainable_blocks", 1, None, 1)?
                    as usize,
            },
            "lora" => {
                let l = b.lora.as_deref();
                FinetuneMethod::Lora {
                    rank: match l {
                        Some(l) => self.int(&l.rank, "lora.rank", 1, Some(1024), 4)? as usize,
                        None => 4,
                    },
                    alpha: match l {
                        Some(l) => self.float(&l.alpha, "lora.alpha", FloatRule::Positive, 8.0)?,
                        None => 8.0,
                    },
                    layers: l.and_then(|l| l.layers.clone()).unwrap_or_default(),
                }
            }
            "adapter" => {
                let a = b.adapter.as_deref();
                FinetuneMethod::Adapter {
                    bottleneck: match a {
                        Some(a) => {
                            self.int(&a.bottleneck, "adapter.bottleneck", 1, None, 16)? as usize
                        }
                        None => 16,
                    },
                    layers: a.and_then(|a| a.layers.clone()).unwrap_or_default(),
                }
            }
            other => {
                let help = did_you_mean(other, METHODS)
                    .unwrap_or_else(|| format!("supported methods: {}", list(METHODS)));
                let m = b.method.as_ref().expect("the default method is known");
                return Err(self.err_at(
                    m,
                    format!("unknown finetune method `{other}`"),
                    Some(help),
                ));
            }
        };
        let label_fraction = match &b.label_fraction {
            None => 1.0,
            Some(f) => {
                let v = *f.get_ref();
                if !(v > 0.0 && v <= 1.0) {
                    return Err(self.err_at(
                        f,
                        format!("`{}` = {v} must be in (0, 1]", self.what("label_fraction")),
                        None,
                    ));
                }
                v
            }
        };
        Ok(FinetuneConfig {
            method,
            epochs: self.int(&b.epochs, "epochs", 1, None, 10)?,
            lr: self.float(&b.lr, "lr", FloatRule::Positive, 1e-3)?,
            batch_size: self.int(&b.batch_size, "batch_size", 2, None, 128)? as usize,
            label_fraction,
        })
    }

    fn expect(&self, e: Option<&RawExpect>) -> Result<Vec<Expectation>> {
        let mut out = Vec::new();
        for (metric, bound) in e.into_iter().flatten() {
            let name = metric.get_ref();
            if name.trim().is_empty() {
                return Err(self.err_at(metric, "an expectation's metric name is empty", None));
            }
            let what = |b: &str| format!("stages.{}.expect.\"{name}\".{b}", self.name);
            let min = bound
                .min
                .as_ref()
                .map(|v| self.r.float(v, &what("min"), FloatRule::Finite))
                .transpose()?;
            let max = bound
                .max
                .as_ref()
                .map(|v| self.r.float(v, &what("max"), FloatRule::Finite))
                .transpose()?;
            match (min, max) {
                (None, None) => {
                    return Err(self.err_at(
                        metric,
                        format!(
                            "expectation for `{name}` in stage `{}` has neither `min` nor `max`",
                            self.name
                        ),
                        Some(format!("give a bound, e.g. \"{name}\" = {{ min = 0.9 }}")),
                    ))
                }
                (Some(lo), Some(hi)) if lo > hi => {
                    let min_span = bound.min.as_ref().expect("min is set").span();
                    return Err(self.r.src.error_at(
                        &min_span,
                        format!("expectation for `{name}` in stage `{}`: min ({lo}) is greater than max ({hi})", self.name),
                        None,
                    ));
                }
                _ => {}
            }
            out.push(Expectation {
                metric: name.clone(),
                min,
                max,
            });
        }
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths_lexically() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
        assert_eq!(normalize(Path::new("/../a")), Path::new("/a"));
        assert_eq!(normalize(Path::new("a/../../b")), Path::new("../b"));
    }

    #[test]
    fn json_of_toml_values() {
        let t: toml::Table = toml::from_str("a = 1\nb = [0.5, true]\nc = { d = \"x\" }\n").unwrap();
        let v = to_json(&toml::Value::Table(t)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": [0.5, true], "c": {"d": "x"}})
        );
        assert!(to_json(&toml::Value::Float(f64::NAN)).is_err());
    }
}
