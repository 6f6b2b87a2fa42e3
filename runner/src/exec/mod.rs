//! Planning and running a pipeline: stage keys, cache lookups, running stages into pending
//! store entries, `expect` gates, `pretext.lock` and the run log.
//!
//! Invariants: a stage's files become visible only by an atomic commit of a complete folder;
//! stages never touch the store themselves; timing metrics stay out of store entries (their
//! digests must be reproducible) and go to the run log (`<store>/runs/<pipeline>.json`), as
//! do the TensorBoard event files of the stages that ran (`<store>/runs/<pipeline>/tensorboard/`).

pub mod bench;
mod follow;
pub use follow::follow;
pub mod progress;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::artifacts::metrics::{Metrics, METRICS_FILE, TIMING_PREFIX};
use crate::engine::{DeviceKind, Engine};
pub use crate::error::AppError;
use crate::error::StageError;
use crate::pipeline::{Pipeline, Stage, StageKind};
use crate::plugins::{Registry, SearchPath};
use crate::stages::{self, InputArtifact, StageCtx};
use crate::store::{
    Claim, Entry, KeyBuilder, KeyParts, LockedStage, Lockfile, LockfileSet, StageKey, Store,
};

/// The version recorded in stage keys: a new runner version invalidates caches. Two revisions
/// count changes that keep the crate version, so entries are never reused for different
/// results: `engine-N`, what the engine computes (kernels, summation order), and `outputs-N`,
/// what stages write for the same inputs. outputs-2: the report's charts are SVG (plotters),
/// text tokenizers are Hugging Face `tokenizer.json` files (other token ids), datasets over the
/// memory budget pretrain streamed with a block shuffle.
pub const RUNNER_VERSION: &str =
    concat!("pretext ", env!("CARGO_PKG_VERSION"), "+engine-3.outputs-2");
pub const LOCKFILE_NAME: &str = "pretext.lock";

/// Options shared by `run`, `plan` and `validate`.
#[derive(Debug, Clone)]
pub struct Options {
    pub device: DeviceKind,
    pub plugin_dirs: Vec<PathBuf>,
    /// Fail if anything differs from `pretext.lock` (CI reproducibility check).
    pub locked: bool,
    /// Wait for the store lock instead of failing when another run holds it.
    pub wait: bool,
    /// `run --stage`: run only these stages, whose inputs must already be in the store (or be
    /// among them); `pretext.lock` and the run log are left to whole-pipeline runs. Empty: all.
    pub only: Vec<String>,
}

/// One stage of a plan.
pub struct Planned<'p> {
    pub stage: &'p Stage,
    pub key: StageKey,
    pub parts: KeyParts,
    pub plugins: Vec<(String, String)>,
    pub cached: Option<Entry>,
    /// Why the stage will run (empty when cached).
    pub reasons: Vec<String>,
}

/// Find plugins for a pipeline: its `plugin_paths`, `--plugin-dir`s and the defaults.
pub fn registry(p: Option<&Pipeline>, plugin_dirs: &[PathBuf]) -> Result<Registry, AppError> {
    let mut sp = SearchPath::default();
    if let Some(p) = p {
        for path in &p.plugin_paths {
            if !path.exists() {
                return Err(AppError::Input(format!(
                    "{}: plugin path {} does not exist; fix `plugin_paths` in [pipeline]",
                    p.file.display(),
                    path.display()
                )));
            }
            sp.files.push(path.clone());
        }
    }
    sp.dirs.extend(plugin_dirs.iter().cloned());
    for d in plugin_dirs {
        if !d.is_dir() {
            return Err(AppError::Input(format!(
                "--plugin-dir {}: not a folder",
                d.display()
            )));
        }
    }
    Registry::discover(&sp.with_defaults()).map_err(|e| AppError::Input(e.to_string()))
}

fn stage_input_error(stage: &Stage, e: StageError) -> AppError {
    e.in_stage(&stage.name)
}

/// A stage's source files (an ingest stage's data, a pretrain or finetune stage's `init`
/// file) exist and are regular files or, for ingest, folders: a device (`/dev/zero`), a named
/// pipe or a socket would never end or would block (`plan`, `validate` and `run` all check
/// before reading anything).
pub fn check_sources(stage: &Stage) -> Result<(), AppError> {
    let folders_allowed = matches!(stage.config, crate::pipeline::StageConfig::Ingest(_));
    for (role, path) in stage.config.source_files() {
        if path.is_dir() && folders_allowed {
            continue;
        }
        let checked = if path.is_dir() {
            Err(std::io::Error::other(
                "a folder, not a safetensors file".to_string(),
            ))
        } else {
            crate::data::check_regular(path)
        };
        checked.map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "no such file (relative paths are read from the pipeline file's folder)".into()
            } else {
                e.to_string()
            };
            AppError::Input(format!(
                "stage `{}`: {role} `{}`: {why}",
                stage.name,
                path.display()
            ))
        })?;
    }
    Ok(())
}

/// The config that goes into a stage's key: its canonical config plus, for stages that read
/// files outside the store, the blake3 digests of those files' contents (so a data file
/// replaced in place invalidates the stage, and `plan` names it).
fn keyed_config(stage: &Stage) -> Result<serde_json::Value, AppError> {
    let mut config = stage.canonical_config();
    // `expect` gates are checked after a stage runs or is reused; they do not change what it
    // produces, so tightening a gate must not retrain anything. (A report stage does show the
    // gates: its own config carries its sources' bounds, so it re-renders.)
    if let Some(obj) = config.as_object_mut() {
        obj.remove("expect");
    }
    // Pretraining streams a dataset over the memory budget (a block shuffle, not a full
    // one), so a budget other than the default is part of its key: the default keeps the
    // keys pipelines always had, and a run with another budget never reuses an entry
    // trained the other way.
    if let crate::pipeline::StageConfig::Pretrain(_) = &stage.config {
        let budget = crate::data::memory::budget()
            .map_err(|m| AppError::Input(format!("stage `{}`: {m}", stage.name)))?;
        if let (true, Some(obj)) = (
            budget != crate::data::memory::DEFAULT_BUDGET,
            config.as_object_mut(),
        ) {
            obj.insert("memory_budget".into(), serde_json::Value::from(budget));
        }
    }
    let sources = stage.config.source_files();
    if !sources.is_empty() {
        check_sources(stage)?;
        let mut digests = serde_json::Map::new();
        for (role, path) in sources {
            let digest = if path.is_dir() {
                crate::store::digest_dir(path)
            } else {
                crate::store::digest_file(path)
            };
            let digest = digest.map_err(|e| {
                AppError::Input(format!(
                    "stage `{}`: cannot read {} `{}`: {e}",
                    stage.name,
                    role,
                    path.display()
                ))
            })?;
            digests.insert(role.to_string(), serde_json::Value::String(digest));
        }
        if let Some(obj) = config.as_object_mut() {
            obj.insert("source_digests".into(), serde_json::Value::Object(digests));
        }
    }
    Ok(config)
}

/// Compute every stage's key and whether a complete entry exists, without running anything.
/// Plugin parameters are validated here.
pub fn plan<'p>(
    p: &'p Pipeline,
    reg: &Registry,
    store: Option<&Store>,
    device: DeviceKind,
) -> Result<Vec<Planned<'p>>, AppError> {
    let previous = store.and_then(|s| RunLog::load(s, &p.name));
    let mut keys: HashMap<&str, StageKey> = HashMap::new();
    let mut out = Vec::new();
    for stage in &p.stages {
        let plugins =
            stages::plugins_used(stage, p, reg).map_err(|e| stage_input_error(stage, e))?;
        let mut kb = KeyBuilder::new(stage.kind.as_str())
            .config(&keyed_config(stage)?)
            .runner_version(RUNNER_VERSION)
            .seed(p.seed)
            .device(device.class());
        for (role, src) in &stage.inputs {
            kb = kb.input(role.clone(), &keys[src.as_str()]);
        }
        for (name, digest) in &plugins {
            kb = kb.plugin(name.clone(), digest.clone());
        }
        let (key, parts) = kb.finish_with_parts();
        keys.insert(stage.name.as_str(), key);
        let cached = store.and_then(|s| s.lookup(stage.kind.as_str(), &key));
        let reasons = if cached.is_some() {
            Vec::new()
        } else {
            match previous.as_ref().and_then(|l| l.stages.get(&stage.name)) {
                Some(old) if old.key != key => {
                    let d = parts.diff(&old.parts);
                    if d.is_empty() {
                        vec!["key changed".into()]
                    } else {
                        d
                    }
                }
                Some(_) => vec!["its store entry is missing or incomplete".into()],
                None => vec!["never run".into()],
            }
        };
        out.push(Planned {
            stage,
            key,
            parts,
            plugins,
            cached,
            reasons,
        });
    }
    Ok(out)
}

/// What happened to one stage in a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub kind: String,
    pub key: StageKey,
    pub parts: KeyParts,
    pub status: String,
    pub seconds: f64,
    pub metrics: Metrics,
    pub timings: Metrics,
    pub entry: PathBuf,
}

/// The last run of a pipeline (`<store>/runs/<name>.json`): what `show` prints and what
/// `plan` compares keys against.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunLog {
    pub pipeline: String,
    pub file: PathBuf,
    pub device: String,
    pub stages: BTreeMap<String, StageRecord>,
    pub order: Vec<String>,
    pub gate_failures: Vec<String>,
}

impl RunLog {
    pub fn path(store: &Store, name: &str) -> PathBuf {
        store.runs_dir().join(format!("{name}.json"))
    }
    /// The TensorBoard log folder beside the run log: one subfolder per stage that ran.
    pub fn events_dir(store: &Store, name: &str) -> PathBuf {
        store.runs_dir().join(name).join("tensorboard")
    }
    pub fn load(store: &Store, name: &str) -> Option<RunLog> {
        let text = std::fs::read_to_string(Self::path(store, name)).ok()?;
        serde_json::from_str(&text).ok()
    }
    fn save(&self, store: &Store) -> Result<(), AppError> {
        let path = Self::path(store, &self.pipeline);
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let text =
            serde_json::to_string_pretty(self).map_err(|e| AppError::Failed(e.to_string()))?;
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| AppError::Failed(format!("{}: {e}", path.display())))
    }
}

/// Check `expect` bounds. Returns failure messages; unknown metrics are input errors.
pub fn check_gates(stage: &Stage, metrics: &Metrics) -> Result<Vec<String>, AppError> {
    let mut failures = Vec::new();
    for exp in &stage.expect {
        let Some(&value) = metrics.get(&exp.metric) else {
            let known: Vec<&str> = metrics.keys().map(|k| k.as_str()).collect();
            return Err(AppError::Input(format!(
                "stage `{}`: `expect` names metric `{}`, which this stage does not produce; its metrics are: {}",
                stage.name,
                exp.metric,
                known.join(", ")
            )));
        };
        if !exp.holds(value) {
            let bound = match (exp.min, exp.max) {
                (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
                (Some(lo), None) => format!(">= {lo}"),
                (None, Some(hi)) => format!("<= {hi}"),
                (None, None) => "a bound".into(),
            };
            failures.push(format!(
                "stage `{}`: expected `{}` {bound}, got {value:.4}",
                stage.name, exp.metric
            ));
        }
    }
    Ok(failures)
}

/// Split wall-clock metrics off.
fn split_timings(mut m: Metrics) -> (Metrics, Metrics) {
    let timings: Metrics = m
        .iter()
        .filter(|(k, _)| k.starts_with(TIMING_PREFIX))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    m.retain(|k, _| !k.starts_with(TIMING_PREFIX));
    (m, timings)
}

fn read_metrics(entry: &Entry) -> Metrics {
    std::fs::read_to_string(entry.file(METRICS_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Path of the pipeline's lockfile.
pub fn lockfile_path(p: &Pipeline) -> PathBuf {
    p.dir.join(LOCKFILE_NAME)
}

/// The result of a run.
pub struct RunReport {
    pub log: RunLog,
    pub lockfile: PathBuf,
}

/// Run a pipeline: every stage not already in the store, in order.
pub fn run(
    p: &Pipeline,
    opts: &Options,
    reporter: &progress::Reporter,
) -> Result<RunReport, AppError> {
    let engine = Engine::open(opts.device).map_err(|e| AppError::Input(e.to_string()))?;
    let reg = registry(Some(p), &opts.plugin_dirs)?;
    execute(p, opts, reporter, &engine, &reg, true)
}

/// [`run`] on an open device and plugin registry; with `record = false` (a partial run, for
/// `bench`) `pretext.lock` is neither read nor written, no run log is saved, `--locked` is not
/// checked and `expect` gates are not evaluated.
fn execute(
    p: &Pipeline,
    opts: &Options,
    reporter: &progress::Reporter,
    engine: &Engine,
    reg: &Registry,
    record: bool,
) -> Result<RunReport, AppError> {
    let store = Store::open(&p.store_dir)?;
    let lock = store.lock()?;
    let cleaned = lock.cleaned();
    if cleaned > 0 {
        tracing::info!(
            cleaned,
            "removed leftovers of an interrupted run from the store's tmp folder"
        );
    }
    let planned = plan(p, reg, Some(&store), opts.device)?;
    let only = selected(p, &opts.only, &planned)?;
    // Data-parallel: the other ranks plan once this one has joined the store, and before it
    // commits anything (see `follow`).
    sync_ranks();
    sync_ranks();
    let whole = record && only.is_none();
    let lock_path = lockfile_path(p);
    // One file per folder, one section per pipeline: other pipelines' sections are kept.
    let lock_set = if record {
        LockfileSet::load(&lock_path).map_err(|e| AppError::Input(e.to_string()))?
    } else {
        None
    };
    let old_lock = lock_set.as_ref().and_then(|s| s.get(&p.name)).cloned();
    if opts.locked && record {
        check_locked_keys(
            p,
            &planned,
            only.as_ref(),
            lock_set.is_some(),
            old_lock.as_ref(),
            &lock_path,
        )?;
    }
    if whole {
        reporter.write_events(RunLog::events_dir(&store, &p.name));
    }
    let mut log = RunLog {
        pipeline: p.name.clone(),
        file: p.file.clone(),
        device: opts.device.class().into(),
        ..Default::default()
    };
    let mut entries: HashMap<String, PathBuf> = HashMap::new();
    let mut by_stage: HashMap<String, Entry> = HashMap::new();
    let mut gate_failures = Vec::new();
    for pl in &planned {
        let stage = pl.stage;
        if let Some(only) = &only {
            if !only.contains(stage.name.as_str()) {
                // Not run here: a cached entry still serves the selected stages as input.
                if let Some(e) = &pl.cached {
                    entries.insert(e.meta.key.to_hex(), e.path.clone());
                    by_stage.insert(stage.name.clone(), e.clone());
                }
                continue;
            }
        }
        let t0 = Instant::now();
        let (entry, status, timings) = match &pl.cached {
            Some(e) => {
                reporter.stage_cached(&stage.name, stage.kind.as_str());
                (e.clone(), "cached", Metrics::new())
            }
            None => {
                let r = Running {
                    store: &store,
                    lock: &lock,
                    engine,
                    reg,
                    reporter,
                };
                claim_and_run(p, pl, &r, opts.wait, &by_stage, &entries)?
            }
        };
        let metrics = read_metrics(&entry);
        let seconds = t0.elapsed().as_secs_f64();
        reporter.stage_done(&stage.name, status, seconds, &metrics);
        if record {
            gate_failures.extend(check_gates(stage, &metrics)?);
        }
        entries.insert(entry.meta.key.to_hex(), entry.path.clone());
        log.order.push(stage.name.clone());
        log.stages.insert(
            stage.name.clone(),
            StageRecord {
                kind: stage.kind.as_str().into(),
                key: pl.key,
                parts: pl.parts.clone(),
                status: status.into(),
                seconds,
                metrics,
                timings,
                entry: entry.path.clone(),
            },
        );
        by_stage.insert(stage.name.clone(), entry);
    }
    log.gate_failures = gate_failures.clone();
    if !whole {
        if !gate_failures.is_empty() {
            return Err(gates_failed(reporter, &log, &gate_failures));
        }
        return Ok(RunReport {
            log,
            lockfile: lock_path,
        });
    }
    log.save(&store)?;
    write_lockfile(
        p,
        opts,
        &planned,
        &by_stage,
        (&store, lock_set),
        old_lock.as_ref(),
        &lock_path,
    )?;
    if !gate_failures.is_empty() {
        return Err(gates_failed(reporter, &log, &gate_failures));
    }
    Ok(RunReport {
        log,
        lockfile: lock_path,
    })
}

/// The error of a run whose `expect` gates failed, after the summary table.
fn gates_failed(reporter: &progress::Reporter, log: &RunLog, failures: &[String]) -> AppError {
    reporter.summary(log);
    AppError::Failed(format!(
        "{} expect gate(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    ))
}

/// `run --stage`: the selected stage names (`None`: the whole pipeline). Unknown names and
/// inputs that are neither in the store nor selected are errors, before anything runs.
fn selected<'a>(
    p: &Pipeline,
    names: &'a [String],
    planned: &[Planned],
) -> Result<Option<HashSet<&'a str>>, AppError> {
    if names.is_empty() {
        return Ok(None);
    }
    let set: HashSet<&str> = names.iter().map(String::as_str).collect();
    for n in &set {
        if p.stage(n).is_none() {
            let all: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
            return Err(AppError::Input(format!(
                "--stage {n}: {} has no stage `{n}`; its stages are {}",
                p.file.display(),
                all.join(", ")
            )));
        }
    }
    let cached: HashSet<&str> = planned
        .iter()
        .filter(|pl| pl.cached.is_some())
        .map(|pl| pl.stage.name.as_str())
        .collect();
    for pl in planned
        .iter()
        .filter(|pl| set.contains(pl.stage.name.as_str()))
    {
        let missing: Vec<String> = pl
            .stage
            .inputs
            .iter()
            .filter(|(_, src)| !set.contains(src.as_str()) && !cached.contains(src.as_str()))
            .map(|(role, src)| format!("`{src}` ({role})"))
            .collect();
        if !missing.is_empty() {
            return Err(AppError::Input(format!(
                "--stage {}: its input(s) {} are not in the store {} under their current keys; \
                 run them first (`pretext run {} --stage <name>`, or the whole pipeline) or \
                 select them too",
                pl.stage.name,
                missing.join(", "),
                p.store_dir.display(),
                p.file.display()
            )));
        }
    }
    Ok(Some(set))
}

/// `--locked`, before anything runs: every stage's key (of the `--stage` ones when `only`) must be
/// the one in `pretext.lock`.
fn check_locked_keys(
    p: &Pipeline,
    planned: &[Planned],
    only: Option<&HashSet<&str>>,
    lockfile_exists: bool,
    old_lock: Option<&Lockfile>,
    lock_path: &Path,
) -> Result<(), AppError> {
    if !lockfile_exists {
        return Err(AppError::Input(format!(
            "--locked: {} does not exist; run once without --locked to create it",
            lock_path.display()
        )));
    }
    let Some(old) = old_lock else {
        return Err(AppError::Input(format!(
            "--locked: {} has no section for pipeline `{}`; run once without --locked to add it",
            lock_path.display(),
            p.name
        )));
    };
    let diffs: Vec<String> = planned
        .iter()
        .filter(|pl| only.is_none_or(|o| o.contains(pl.stage.name.as_str())))
        .filter_map(|pl| match old.stages.get(&pl.stage.name) {
            Some(ls) if ls.key == pl.key => None,
            Some(ls) => Some(format!(
                "stage `{}`: key changed ({} → {}): {}",
                pl.stage.name,
                ls.key.short(),
                pl.key.short(),
                pl.parts_reason()
            )),
            None => Some(format!(
                "stage `{}` is not in {}",
                pl.stage.name, LOCKFILE_NAME
            )),
        })
        .collect();
    if !diffs.is_empty() {
        return Err(AppError::Failed(format!(
            "--locked: the pipeline no longer matches {}:\n  {}",
            lock_path.display(),
            diffs.join("\n  ")
        )));
    }
    Ok(())
}

/// What running a stage needs from the run: the locked store, the device, the plugins and
/// the progress reporter.
struct Running<'r> {
    store: &'r Store,
    lock: &'r crate::store::StoreLock,
    engine: &'r Engine,
    reg: &'r Registry,
    reporter: &'r progress::Reporter,
}

/// Take the entry lock of a stage the plan did not find in the store and run it, unless
/// another run committed it meanwhile; returns the entry, `ran` or `cached`, and the stage's
/// wall-clock metrics. The entry lock is held until the entry is committed.
fn claim_and_run(
    p: &Pipeline,
    pl: &Planned,
    r: &Running,
    wait: bool,
    by_stage: &HashMap<String, Entry>,
    entries: &HashMap<String, PathBuf>,
) -> Result<(Entry, &'static str, Metrics), AppError> {
    let stage = pl.stage;
    let claim = r
        .store
        .claim(r.lock, &stage.name, stage.kind.as_str(), &pl.key, wait);
    // The other ranks learn whether this one trains (another run may have committed the
    // entry since they planned); on an error they are ended with it.
    let mut held = match claim? {
        Claim::Done(entry) => {
            agree_ranks(false);
            r.reporter.stage_cached(&stage.name, stage.kind.as_str());
            return Ok((entry, "cached", Metrics::new()));
        }
        Claim::Mine(held) => held,
    };
    agree_ranks(true);
    r.reporter
        .stage_start(&stage.name, stage.kind.as_str(), &pl.reasons);
    let (entry, timings) = run_stage(p, pl, r, by_stage, entries)?;
    held.committed();
    drop(held);
    // The entry is committed: the other ranks may read it.
    sync_ranks();
    Ok((entry, "ran", timings))
}

/// Run one planned stage into a pending entry and commit it; returns the entry and the
/// stage's wall-clock metrics (kept out of the entry).
fn run_stage(
    p: &Pipeline,
    pl: &Planned,
    r: &Running,
    by_stage: &HashMap<String, Entry>,
    entries: &HashMap<String, PathBuf>,
) -> Result<(Entry, Metrics), AppError> {
    let stage = pl.stage;
    let pending = r
        .store
        .begin(r.lock, &stage.name, stage.kind.as_str(), &pl.key, &pl.parts)?;
    let inputs = stage_inputs(stage, by_stage);
    let ckpt = checkpoint_dir(r.store, pl);
    std::fs::create_dir_all(&ckpt)
        .map_err(|e| AppError::Failed(format!("{}: {e}", ckpt.display())))?;
    let grouped = group_engine(stage, r.engine)?;
    let ctx = StageCtx {
        checkpoint_dir: Some(&ckpt),
        engine: grouped.as_ref().unwrap_or(r.engine),
        registry: r.reg,
        seed: p.seed,
        out_dir: pending.dir(),
        inputs,
        entries,
        progress: r.reporter,
    };
    let metrics = stages::run(stage, &ctx).map_err(|e| stage_input_error(stage, e))?;
    let (metrics, timings) = split_timings(metrics);
    stages::write_json(&pending.dir().join(METRICS_FILE), &metrics)
        .map_err(|e| stage_input_error(stage, e))?;
    let entry = pending.commit()?;
    let _ = std::fs::remove_dir_all(&ckpt);
    Ok((entry, timings))
}

/// A stage's inputs by role, from the entries of the stages it reads.
fn stage_inputs(
    stage: &Stage,
    by_stage: &HashMap<String, Entry>,
) -> BTreeMap<String, InputArtifact> {
    stage
        .inputs
        .iter()
        .map(|(role, src)| {
            let e = &by_stage[src];
            (
                role.clone(),
                InputArtifact {
                    stage: src.clone(),
                    key: e.meta.key.to_hex(),
                    dir: e.path.clone(),
                },
            )
        })
        .collect()
}

/// Where a stage key's checkpoints live: outside its entry, so they outlive a failed or
/// killed attempt at this exact key and a rerun resumes; removed once the entry is committed.
fn checkpoint_dir(store: &Store, pl: &Planned) -> PathBuf {
    store
        .root()
        .join("checkpoints")
        .join(pl.stage.kind.as_str())
        .join(pl.key.to_hex())
}

/// In a data-parallel run, the engine a pretrain stage trains on: `engine` with the process
/// group (every rank takes part in its steps; the other stage kinds run on rank 0 alone).
fn group_engine(stage: &Stage, engine: &Engine) -> Result<Option<Engine>, AppError> {
    let Some(group) = crate::launch::group() else {
        return Ok(None);
    };
    if stage.kind != StageKind::Pretrain {
        return Ok(None);
    }
    let grouped = engine
        .with_group(Some(group.clone()))
        .map_err(|e| AppError::Failed(format!("stage `{}`: {e}", stage.name)))?;
    Ok(Some(grouped))
}

/// A barrier of every rank, in a data-parallel run (a no-op in a single process).
fn sync_ranks() {
    if let Some(g) = crate::launch::group() {
        g.barrier();
    }
}

/// Rank 0's `yes` on every rank of a data-parallel run (`yes` itself outside one).
fn agree_ranks(yes: bool) -> bool {
    let Some(g) = crate::launch::group() else {
        return yes;
    };
    let mut flag = [u8::from(yes)];
    g.broadcast_bytes(&mut flag, 0);
    flag[0] != 0
}

/// After a recorded run: compare with `pretext.lock` under `--locked`, otherwise update the
/// pipeline's section when it changed (other pipelines' sections are kept).
fn write_lockfile(
    p: &Pipeline,
    opts: &Options,
    planned: &[Planned],
    by_stage: &HashMap<String, Entry>,
    (store, lock_set): (&Store, Option<LockfileSet>),
    old_lock: Option<&Lockfile>,
    lock_path: &Path,
) -> Result<(), AppError> {
    let mut lockfile = Lockfile::new(&p.name, p.seed, RUNNER_VERSION, opts.device.class());
    for pl in planned {
        lockfile.stages.insert(
            pl.stage.name.clone(),
            LockedStage::from_entry(&by_stage[&pl.stage.name]),
        );
    }
    if opts.locked {
        let old = old_lock.expect("checked before the run");
        let diffs = lockfile.compare(old);
        if !diffs.is_empty() {
            return Err(AppError::Failed(format!(
                "--locked: the run's outputs differ from {}:\n  {}",
                lock_path.display(),
                diffs.join("\n  ")
            )));
        }
    } else if old_lock != Some(&lockfile)
        || lock_set
            .as_ref()
            .is_some_and(|s| s.version != crate::store::LOCKFILE_SET_VERSION)
    {
        // Another run (another pipeline in this folder) may have rewritten the file since this
        // one read it: re-read it under the guard and change only this pipeline's section.
        let _guard = store.guard("pretext-lock")?;
        let latest = LockfileSet::load(lock_path).map_err(|e| AppError::Input(e.to_string()))?;
        let mut set = latest.or(lock_set).unwrap_or_default();
        set.version = crate::store::LOCKFILE_SET_VERSION;
        set.insert(lockfile);
        set.save(lock_path)
            .map_err(|e| AppError::Failed(e.to_string()))?;
    }
    Ok(())
}

impl Planned<'_> {
    fn parts_reason(&self) -> String {
        if self.reasons.is_empty() {
            "inputs changed".into()
        } else {
            self.reasons.join("; ")
        }
    }
}

/// The existing store of a pipeline, opened read-only (creates nothing); `None` before the
/// first run.
pub fn store_of(p: &Pipeline) -> Option<Store> {
    Store::existing(&p.store_dir)
}

/// Where a path sits relative to the current directory, for messages.
pub fn display_path(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(|r| r.display().to_string()))
        .unwrap_or_else(|| p.display().to_string())
}
