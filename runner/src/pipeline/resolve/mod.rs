//! Raw form → resolved [`Pipeline`]: checks every value, fills defaults,
//! resolves paths against the pipeline's directory and orders the graph.
//!
//! This file holds the entry points ([`check_kinds`], [`resolve`]), the `[pipeline]` table and
//! the checks that look at more than one stage; [`cx`] the helpers every stage kind shares
//! (key paths, number and keyword checks); the other files one stage kind each (`ingest` with
//! its declarative `source` in `source`, `pretrain` with `model` and `optim`), plus `expect`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;

use super::error::{list, PipelineError, Seg, Source};
use super::graph::{self, InputRef, Node};
use super::raw::{RawDoc, RawHead, RawPipeline, RawStage, RawStageBody};
use super::types::{
    ArtifactKind, Expectation, IngestSource, Pipeline, ReportSource, Stage, StageConfig, StageKind,
};

mod augment;
mod curate;
mod cx;
mod expect;
mod finetune;
mod ingest;
mod init;
mod model;
mod ood_eval;
mod optim;
mod pretrain;
mod probe;
mod report;
mod source;

use cx::{unknown_help, Resolver, StageCx};

type Result<T> = std::result::Result<T, PipelineError>;

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
        // Suggestions come from every kind, the list from the supported ones.
        let Some(k) = StageKind::from_name(kind.get_ref()) else {
            let help = unknown_help(
                kind.get_ref(),
                StageKind::ALL.iter().map(|k| k.as_str()),
                "supported kinds:",
                StageKind::SUPPORTED.iter().map(|k| k.as_str()),
            );
            return Err(src.error_at(
                &kind.span(),
                format!("unknown stage kind `{}`", kind.get_ref()),
                Some(help),
            ));
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
    let head = pipeline(&r, p)?;

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
        let cx = StageCx {
            r: &r,
            name: s.name.get_ref(),
        };
        let (stage, inputs) = stage(&cx, s, &raw.stages, &head.name)?;
        stages.push(stage);
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

/// One stage, resolved by its kind, with its input references (role, referenced stage, what
/// the role needs; `None`: any artifact but a report). A report's roles are the names of the
/// stages it reads; `all` is every stage, for a report that reads them all.
fn stage<'r>(
    cx: &StageCx<'_, '_, '_>,
    s: &'r RawStage,
    all: &'r [RawStage],
    pipeline: &str,
) -> Result<(Stage, Vec<InputRef<'r>>)> {
    use ArtifactKind::{Dataset, Encoder, Views};
    let (kind, inputs, config, expect) = match &s.body {
        RawStageBody::Ingest(b) => (
            StageKind::Ingest,
            vec![],
            StageConfig::Ingest(cx.ingest(b)?),
            &b.expect,
        ),
        RawStageBody::Curate(b) => (
            StageKind::Curate,
            vec![("input", &b.input, Dataset)],
            StageConfig::Curate(cx.curate(b)?),
            &b.expect,
        ),
        RawStageBody::Augment(b) => (
            StageKind::Augment,
            vec![("input", &b.input, Dataset)],
            StageConfig::Augment(cx.augment(b)?),
            &b.expect,
        ),
        RawStageBody::Pretrain(b) => {
            let mut inputs = vec![("input", &b.input, Views)];
            if let Some(enc) = b.init.as_ref().and_then(|i| i.encoder.as_ref()) {
                inputs.push(("init", enc, Encoder));
            }
            if let Some(t) = &b.text {
                inputs.push(("text", &t.input, Dataset));
            }
            let config = StageConfig::Pretrain(cx.pretrain(b)?);
            (StageKind::Pretrain, inputs, config, &b.expect)
        }
        RawStageBody::Probe(b) => (
            StageKind::Probe,
            vec![("encoder", &b.encoder, Encoder), ("data", &b.data, Dataset)],
            StageConfig::Probe(cx.probe(b)?),
            &b.expect,
        ),
        RawStageBody::OodEval(b) => {
            let mut inputs = vec![("encoder", &b.encoder, Encoder), ("data", &b.data, Dataset)];
            if let Some(o) = &b.ood {
                inputs.push(("ood", o, Dataset));
            }
            let config = StageConfig::OodEval(cx.ood_eval(b)?);
            (StageKind::OodEval, inputs, config, &b.expect)
        }
        RawStageBody::Finetune(b) => {
            let config = StageConfig::Finetune(cx.finetune(b)?);
            let mut inputs = Vec::new();
            if let Some(enc) = &b.encoder {
                inputs.push(("encoder", enc, Encoder));
            }
            inputs.push(("data", &b.data, Dataset));
            (StageKind::Finetune, inputs, config, &b.expect)
        }
        RawStageBody::Report(b) => (
            StageKind::Report,
            Vec::new(),
            StageConfig::Report(cx.report(b, pipeline)?),
            &b.expect,
        ),
    };
    let inputs: Vec<InputRef<'r>> = match &s.body {
        RawStageBody::Report(b) => report::inputs(cx, b, all)?
            .into_iter()
            .map(|t| (t.get_ref().as_str(), t, None))
            .collect(),
        _ => inputs
            .into_iter()
            .map(|(r, t, k)| (r, t, Some(k)))
            .collect(),
    };
    let expect = cx.expect(expect.as_ref())?;
    let stage = Stage {
        name: cx.name.to_string(),
        kind,
        inputs: inputs
            .iter()
            .map(|(role, target, _)| (role.to_string(), target.get_ref().clone()))
            .collect(),
        config,
        expect,
    };
    Ok((stage, inputs))
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
                    return Err(feature_augment_error(src, &stage.name, &s.name, ic, target));
                }
                _ => break,
            }
        }
    }
    Ok(())
}

/// The error for augment stage `stage` whose `input` (`target`) leads to `ingest`, a source of
/// feature vectors.
fn feature_augment_error(
    src: &Source<'_>,
    stage: &str,
    ingest: &str,
    ic: &super::types::IngestConfig,
    target: &Spanned<String>,
) -> PipelineError {
    let format = match &ic.source {
        IngestSource::Csv { .. } => "csv",
        _ => "parquet",
    };
    let via = if ingest == *target.get_ref() {
        String::new()
    } else {
        format!(" (through `{}`)", target.get_ref())
    };
    src.error_at(
        &target.span(),
        format!(
            "stage `{stage}` augments the data of `{ingest}`{via}, which reads feature vectors (format = \"{format}\"); augmentations work on images and text"
        ),
        Some("augment, pretrain and probe need an image source (`idx`, `image_folder`, or `parquet` with `image`) or a text source (`text`)".into()),
    )
}

/// The checked `[pipeline]` table.
struct Head {
    name: String,
    seed: u64,
    description: Option<String>,
    store: String,
    plugin_paths: Vec<String>,
}

fn pipeline(r: &Resolver<'_, '_>, p: RawPipeline) -> Result<Head> {
    let Some(name) = p.name else {
        return Err(r.src.error_at_key(
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
        return Err(r.src.error_at(
            &name.span(),
            message,
            Some("pipeline names may only use letters, digits, `_`, `.` and `-`".into()),
        ));
    }
    let seed = match &p.seed {
        Some(s) => r.int(s, "pipeline.seed", 0, None)?,
        None => 0,
    };
    let store = match &p.store {
        Some(s) => r.non_empty_path(s, "pipeline.store")?,
        None => ".pretext".to_string(),
    };
    let plugin_paths = p
        .plugin_paths
        .iter()
        .flatten()
        .map(|s| r.non_empty_path(s, "pipeline.plugin_paths"))
        .collect::<Result<_>>()?;
    Ok(Head {
        name: name.into_inner(),
        seed,
        description: p.description,
        store,
        plugin_paths,
    })
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
}
