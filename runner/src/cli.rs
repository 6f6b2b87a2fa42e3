//! The command line: clap definitions and one function per subcommand. `main.rs` only parses
//! arguments, sets up logging and turns errors into exit codes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::DeviceKind;
use crate::exec::{self, progress, AppError, Options, RunLog};
use crate::pipeline::{self, Pipeline};

#[derive(Parser, Debug)]
#[command(
    name = "pretext",
    version,
    about = "Run self-supervised-learning pipelines declared in TOML",
    long_about = "pretext runs self-supervised-learning pipelines declared in TOML: ingest → curate → \
augment → pretrain → probe (and finetune, ood_eval), with objectives and augmentations loaded from \
plugin libraries. Every stage's outputs are stored by a content hash of everything that determines \
them, so unchanged stages never run twice, and pretext.lock records the result so CI can check it \
with `run --locked`.\n\n\
Exit codes: 0 success; 1 a stage, an `expect` gate or a --locked check failed; 2 bad input \
(pipeline file, data file, plugin, flags), always with a message saying what to fix.",
    after_help = "Start with `pretext run pipelines/quickstart.toml`. \
Docs: docs/SUMMARY.md (getting started, every TOML key, plugins, CI).",
    after_long_help = "Examples:\n  \
pretext run pipelines/quickstart.toml            run every stage not already stored\n  \
pretext run p.toml --set stages.ssl.epochs=1     override a key for one run\n  \
pretext plan p.toml                              what would run, and why\n  \
pretext validate p.toml                          check the file and plugin parameters\n  \
pretext show p.toml                              metrics of the last run\n  \
pretext bench pipelines/bench.toml               ms per training step of each encoder\n  \
pretext run p.toml --locked --log-format json    CI: fail on any difference from pretext.lock\n\n\
Environment:\n  \
PRETEXT_LOG          log filter instead of -v/-q, e.g. `debug` or `pretext=trace`\n  \
PRETEXT_PLUGIN_PATH  more folders to load plugin libraries from (separated like PATH)\n  \
PRETEXT_PLUGIN_TIMEOUT  seconds a plugin call may take before the run stops (default 600)\n  \
PRETEXT_MEMORY_BUDGET  bytes a dataset may take in memory, e.g. 8G (default 4G); pretrain streams\n  \
                       bigger datasets, stages that hold every sample stop with a clear error\n\n\
Docs: docs/SUMMARY.md. Getting started: docs/getting-started.md. Every pipeline key: \
docs/reference/README.md. Writing plugins: docs/plugins.md. CI: docs/ci.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr: `human`, or `json` (one JSON object per line, for CI).
    ///
    /// Only the log changes: the summary table still goes to stdout, and a final error is
    /// still printed as plain `error: ...` text on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// More log detail: `-v` debug, `-vv` trace (PRETEXT_LOG, when set, takes precedence).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors on stderr (no progress, no per-stage log lines).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Readable lines (and progress bars on a terminal).
    Human,
    /// One JSON object per line: timestamp, level, fields (stage, status, metrics, ...).
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// The pipeline file (TOML). Relative paths inside it are relative to its folder.
    pub pipeline: PathBuf,
    /// Override a key, e.g. `--set stages.ssl.epochs=1` (repeatable).
    ///
    /// KEY is the key's path as in the TOML reference (quote parts with dots:
    /// `stages.eval.expect."linear.accuracy".min=0.9`). VALUE is a TOML value (`1`, `0.5`,
    /// `true`, `"text"`, `[1, 2]`, `{ a = 1 }`); anything else is taken as a string. Overridden
    /// values count like values in the file: they are validated and part of stage keys.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Also load every plugin library in this folder (repeatable).
    ///
    /// Plugins are also found in `pipeline.plugin_paths`, in PRETEXT_PLUGIN_PATH folders and,
    /// for the built-in `libpretext_*` libraries, next to the pretext binary.
    #[arg(long = "plugin-dir", value_name = "DIR")]
    pub plugin_dirs: Vec<PathBuf>,
    /// Compute device: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with the `cuda` feature;
    /// under mpirun/srun, `cuda` is the GPU of the rank's index on its machine);
    /// `cpu-generic` runs the device-generic ops a GPU runs on the CPU (slow; for checking).
    ///
    /// The device class (cpu or cuda) is part of every stage key and of pretext.lock.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceKind,
}

fn parse_device(s: &str) -> Result<DeviceKind, String> {
    // One GPU per rank: plain `cuda` in a data-parallel run is the rank's local index.
    if let (true, Some(local)) = (s == "cuda", crate::launch::local_rank()) {
        return Ok(DeviceKind::Cuda(local));
    }
    DeviceKind::parse(s).ok_or_else(|| {
        format!("unknown device `{s}`; use `cpu`, `cuda`, `cuda:N` or `cpu-generic`")
    })
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline: every stage whose result is not already stored.
    ///
    /// Stages run in dependency order. A stage whose key (a hash of its settings, its inputs'
    /// keys, its plugins, the seed and the device class) is already in the store is reused, not
    /// rerun. Afterwards `expect` gates are checked, pretext.lock (beside the pipeline file) and
    /// the run log (`<store>/runs/<name>.json`, what `show` prints) are written, and a summary
    /// table goes to stdout. Exit code 1 when a stage or a gate failed, 2 for bad input.
    #[command(after_help = "Examples:\n  \
pretext run pipelines/quickstart.toml\n  \
pretext run p.toml --set stages.ssl.epochs=1 --set pipeline.seed=3\n  \
pretext run p.toml --locked --log-format json    (CI)")]
    Run {
        #[command(flatten)]
        args: PipelineArgs,
        /// Check the run against pretext.lock instead of updating it (for CI).
        ///
        /// Fails with exit code 1 before running anything if a stage's key differs from the
        /// lockfile (saying why: which setting, input or plugin changed), and after running if
        /// any output file's digest differs. Fails with exit code 2 if there is no pretext.lock.
        #[arg(long)]
        locked: bool,
        /// If another pretext process is computing a stage this run needs (the same entry of
        /// the same store), wait for it and reuse its result instead of failing at once.
        /// Independent stages never wait for each other.
        #[arg(long)]
        wait: bool,
        /// Run only this stage (repeatable), as one job of a scheduler: its inputs must already
        /// be in the store under their current keys, or be selected too (exit code 2 naming
        /// the missing ones otherwise). pretext.lock and the run log are left to whole runs;
        /// with --locked the selected stages' keys are checked against pretext.lock.
        #[arg(long = "stage", value_name = "NAME")]
        stages: Vec<String>,
    },
    /// Show what `run` would do: each stage's key, whether it is cached, and why it would run.
    ///
    /// Nothing runs and nothing is written. Validates the pipeline and plugin parameters like
    /// `validate`. A stage that would run gets a reason: "never run", "config changed
    /// (`epochs`: 15 → 30)", "input `input` changed", "plugin `simclr` changed", ...
    #[command(
        after_help = "Example: pretext plan pipelines/quickstart.toml --set stages.ssl.epochs=60"
    )]
    Plan {
        #[command(flatten)]
        args: PipelineArgs,
    },
    /// Check a pipeline file and its plugin parameters without running anything.
    ///
    /// Reports the first problem as `error: <file>:<line>:<col>: <message>`, with a `help:` line
    /// saying what to do and a `see:` line naming the section of the TOML reference
    /// (docs/reference/) that documents the key; exit code 2. Prints `ok: ...` and the stage
    /// order when the pipeline is valid. Data files are not read.
    #[command(after_help = "Example: pretext validate pipelines/quickstart.toml")]
    Validate {
        #[command(flatten)]
        args: PipelineArgs,
    },
    /// Print the stage graph as Graphviz DOT or Mermaid.
    ///
    /// Only reads the pipeline file (`--plugin-dir` and `--device` are accepted and unused).
    #[command(after_help = "Examples:\n  \
pretext graph pipelines/quickstart.toml | dot -Tsvg > graph.svg\n  \
pretext graph pipelines/quickstart.toml --format mermaid")]
    Graph {
        #[command(flatten)]
        args: PipelineArgs,
        /// `dot` (Graphviz) or `mermaid` (renders in Markdown on GitHub and in mdBook).
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// List plugin libraries found, where, and what they provide.
    ///
    /// Searches, in order: the pipeline's `plugin_paths` (with --pipeline), --plugin-dir
    /// folders, PRETEXT_PLUGIN_PATH folders, and the built-in `libpretext_*` libraries next to
    /// the pretext binary. Each library is listed with its version, the pretext-plugin SDK it
    /// was built with, its digest, and its objectives and augmentations; libraries that cannot
    /// be loaded are listed with the reason.
    #[command(after_help = "Example: pretext plugins --plugin-dir ../my-plugin/target/release")]
    Plugins {
        /// One objective or augmentation to describe, with its parameter table.
        name: Option<String>,
        /// Print every plugin's parameter table too.
        #[arg(long)]
        params: bool,
        /// Also load every plugin library in this folder (repeatable).
        #[arg(long = "plugin-dir", value_name = "DIR")]
        plugin_dirs: Vec<PathBuf>,
        /// Also load the libraries in this pipeline file's `plugin_paths`.
        #[arg(long)]
        pipeline: Option<PathBuf>,
    },
    /// Print the metrics of a pipeline's last run.
    ///
    /// Reads the run log the last `run` wrote (`<store>/runs/<name>.json`): the summary table,
    /// then every stage's metrics, then any failed `expect` gates. Runs nothing.
    #[command(
        after_help = "Example: pretext show pipelines/quickstart.toml --json | jq '.stages.eval.metrics'"
    )]
    Show {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Print the whole run log as JSON instead: per stage its kind, key, status (ran or
        /// cached), seconds, metrics, timings and store entry, plus the failed gates.
        #[arg(long)]
        json: bool,
    },
    /// Time training steps of a pipeline's pretrain stages (ms per step, images per second).
    ///
    /// The stages the benchmarked ones read run first, or are reused from the store, as in
    /// `run` (no run log, lockfile or gates are written). Each benchmarked pretrain stage then
    /// trains `--warmup` untimed and `--steps` timed batches of its real input, exactly as
    /// `run` trains them (same model, objective, optimiser, batch size), and keeps nothing.
    /// A step is forward, loss, backward and optimiser update; producing the views
    /// (augmentation) is timed on its own. Change shapes with `--set`, e.g.
    /// `--set stages.vit.batch_size=128`.
    #[command(after_help = "Examples:\n  \
pretext bench pipelines/bench.toml\n  \
pretext bench pipelines/bench.toml --stage mlp --steps 50 --json mlp.json\n  \
pretext bench pipelines/quickstart.toml --set stages.ssl.batch_size=512")]
    Bench {
        #[command(flatten)]
        args: PipelineArgs,
        /// Benchmark this pretrain stage (repeatable; default: every pretrain stage).
        #[arg(long = "stage", value_name = "NAME")]
        stages: Vec<String>,
        /// Timed steps per stage (at least 1).
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Untimed steps before them (allocation, caches, kernel compilation).
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Also write the results as JSON: per stage its settings, every step time and the
        /// summary.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// If another pretext process is computing a stage this run needs, wait for it.
        #[arg(long)]
        wait: bool,
    },
    /// Store maintenance: `pretext store verify <pipeline>`.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Re-digest every entry of a pipeline's store and report corrupt ones (exit 1 if any).
    ///
    /// Checks every file of every entry against the digests recorded in its entry.json. A
    /// corrupt entry can be deleted (`<store>/objects/<kind>/<key>/`); the next run rebuilds it.
    Verify {
        /// The pipeline file whose store to check.
        pipeline: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

fn load(args: &PipelineArgs) -> Result<Pipeline, AppError> {
    pipeline::load(&args.pipeline, &args.set)
        .map_err(|e| AppError::Input(e.to_string().trim_start_matches("error: ").to_string()))
}

fn load_plain(path: &Path) -> Result<Pipeline, AppError> {
    pipeline::load(path, &[])
        .map_err(|e| AppError::Input(e.to_string().trim_start_matches("error: ").to_string()))
}

/// Run one command (each writes its own output to stdout).
impl Command {
    /// The subcommand as typed (`run`, `plan`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run { .. } => "run",
            Command::Plan { .. } => "plan",
            Command::Validate { .. } => "validate",
            Command::Graph { .. } => "graph",
            Command::Plugins { .. } => "plugins",
            Command::Show { .. } => "show",
            Command::Bench { .. } => "bench",
            Command::Store { .. } => "store",
        }
    }
}

pub fn dispatch(cli: &Cli) -> Result<(), AppError> {
    match &cli.command {
        Command::Run {
            args,
            locked,
            wait,
            stages,
        } => cmd_run(cli, args, *locked, *wait, stages),
        Command::Bench {
            args,
            stages,
            steps,
            warmup,
            json,
            wait,
        } => cmd_bench(cli, args, stages, (*steps, *warmup), json.as_deref(), *wait),
        Command::Plan { args } => cmd_plan(args),
        Command::Validate { args } => cmd_validate(args),
        Command::Graph { args, format } => {
            let p = load(args)?;
            crate::say!("{}", graph_text(&p, *format));
            Ok(())
        }
        Command::Plugins {
            name,
            params,
            plugin_dirs,
            pipeline,
        } => cmd_plugins(name.as_deref(), *params, plugin_dirs, pipeline.as_deref()),
        Command::Show { pipeline, json } => cmd_show(pipeline, *json),
        Command::Store {
            command: StoreCommand::Verify { pipeline },
        } => cmd_store_verify(pipeline),
    }
}

/// Progress bars only for people: a terminal, the human log format, and not `--quiet`.
fn reporter(cli: &Cli) -> progress::Reporter {
    let bars = cli.log_format == LogFormat::Human && !cli.quiet && std::io::stderr().is_terminal();
    progress::Reporter::new(bars)
}

/// `pretext run`.
fn cmd_run(
    cli: &Cli,
    args: &PipelineArgs,
    locked: bool,
    wait: bool,
    stages: &[String],
) -> Result<(), AppError> {
    let p = load(args)?;
    let opts = Options {
        device: args.device,
        plugin_dirs: args.plugin_dirs.clone(),
        locked,
        wait,
        only: stages.to_vec(),
    };
    if !crate::launch::leads() {
        // A rank other than 0 of a data-parallel run: it trains alongside rank 0 and says
        // nothing (rank 0 prints the run).
        return exec::follow(&p, &opts);
    }
    let reporter = reporter(cli);
    let report = exec::run(&p, &opts, &reporter)?;
    reporter.summary(&report.log);
    let ran = report
        .log
        .stages
        .values()
        .filter(|s| s.status == "ran")
        .count();
    let lockfile = match stages.is_empty() {
        true => format!("Lockfile: {}", exec::display_path(&report.lockfile)),
        false => "Lockfile not updated (--stage).".to_string(),
    };
    crate::sayln!(
        "\n{} stage(s) ran, {} cached. {lockfile}",
        ran,
        report.log.stages.len() - ran,
    );
    Ok(())
}

/// `pretext bench`: `(steps, warmup)` timed and untimed steps per stage.
fn cmd_bench(
    cli: &Cli,
    args: &PipelineArgs,
    stages: &[String],
    (steps, warmup): (usize, usize),
    json: Option<&Path>,
    wait: bool,
) -> Result<(), AppError> {
    let p = load(args)?;
    let opts = Options {
        device: args.device,
        plugin_dirs: args.plugin_dirs.clone(),
        locked: false,
        only: Vec::new(),
        wait,
    };
    let rows = exec::bench::bench(&p, &opts, &reporter(cli), stages, steps, warmup)?;
    if let Some(path) = json {
        let text =
            serde_json::to_string_pretty(&rows).map_err(|e| AppError::Failed(e.to_string()))?;
        std::fs::write(path, text + "\n").map_err(|e| {
            AppError::Input(format!(
                "cannot write {}: {e}; check that its folder exists",
                path.display()
            ))
        })?;
    }
    crate::say!("{}", exec::bench::table(&rows));
    Ok(())
}

/// `pretext plan`: each stage's key and whether it is cached or why it will run.
fn cmd_plan(args: &PipelineArgs) -> Result<(), AppError> {
    let p = load(args)?;
    let reg = exec::registry(Some(&p), &args.plugin_dirs)?;
    let store = exec::store_of(&p);
    let planned = exec::plan(&p, &reg, store.as_ref(), args.device)?;
    crate::sayln!(
        "pipeline `{}` ({} stages), store {}",
        p.name,
        planned.len(),
        exec::display_path(&p.store_dir)
    );
    for pl in &planned {
        let status = if pl.cached.is_some() {
            "cached".to_string()
        } else {
            format!("will run: {}", pl.reasons.join("; "))
        };
        crate::sayln!(
            "  {:<14} {:<9} {}  {}",
            pl.stage.name,
            pl.stage.kind.as_str(),
            pl.key.short(),
            status
        );
    }
    Ok(())
}

/// `pretext validate`: the file, its sources and every plugin's parameters, nothing run.
fn cmd_validate(args: &PipelineArgs) -> Result<(), AppError> {
    let p = load(args)?;
    let reg = exec::registry(Some(&p), &args.plugin_dirs)?;
    for stage in &p.stages {
        exec::check_sources(stage)?;
        // Everything `plugins_used` finds is in the pipeline file or its plugins: bad input.
        crate::stages::plugins_used(stage, &p, &reg)
            .map_err(|e| AppError::Input(format!("stage `{}`: {e}", stage.name)))?;
    }
    crate::sayln!(
        "ok: `{}` is valid ({} stages: {})",
        exec::display_path(&p.file),
        p.stages.len(),
        p.order().join(" → ")
    );
    Ok(())
}

/// `pretext plugins [NAME] [--params]`.
fn cmd_plugins(
    name: Option<&str>,
    params: bool,
    plugin_dirs: &[PathBuf],
    pipeline: Option<&Path>,
) -> Result<(), AppError> {
    let p = pipeline.map(load_plain).transpose()?;
    let reg = exec::registry(p.as_ref(), plugin_dirs)?;
    match name {
        Some(n) => crate::say!("{}", plugin_text(&reg, n)?),
        None => crate::say!("{}", plugins_text(&reg, params)),
    }
    Ok(())
}

/// `pretext show`: the last run's summary table and metrics (or the whole log as JSON).
fn cmd_show(pipeline: &Path, json: bool) -> Result<(), AppError> {
    let p = load_plain(pipeline)?;
    let log = exec::store_of(&p).and_then(|store| RunLog::load(&store, &p.name));
    let Some(log) = log else {
        return Err(AppError::Input(format!(
            "pipeline `{}` has not been run yet (no run log in {}); run `pretext run {}`",
            p.name,
            exec::display_path(&p.store_dir),
            pipeline.display()
        )));
    };
    if json {
        crate::sayln!(
            "{}",
            serde_json::to_string_pretty(&log).map_err(|e| AppError::Failed(e.to_string()))?
        );
        return Ok(());
    }
    crate::say!("{}", progress::summary_table(&log));
    for name in &log.order {
        let r = &log.stages[name];
        if r.metrics.is_empty() {
            continue;
        }
        crate::sayln!("\n[{name}]");
        for (k, v) in &r.metrics {
            crate::sayln!("  {k:<28} {v}");
        }
    }
    for f in &log.gate_failures {
        crate::sayln!("\nFAILED GATE: {f}");
    }
    Ok(())
}

/// `pretext store verify`: re-digest every entry; exit 1 when any is corrupt.
fn cmd_store_verify(pipeline: &Path) -> Result<(), AppError> {
    let p = load_plain(pipeline)?;
    let Some(store) = exec::store_of(&p) else {
        return Err(AppError::Input(format!(
            "{} has no store yet ({} does not exist); nothing to verify",
            pipeline.display(),
            exec::display_path(&p.store_dir)
        )));
    };
    let report = store.verify()?;
    crate::sayln!(
        "{} entries ok, {} corrupt",
        report.ok.len(),
        report.corrupt.len()
    );
    for c in &report.corrupt {
        crate::sayln!(
            "  CORRUPT {} ({}): {}",
            c.path.display(),
            c.kind,
            c.problems.join("; ")
        );
    }
    if report.is_ok() {
        return Ok(());
    }
    Err(AppError::Failed(format!(
        "{} corrupt store entr{}",
        report.corrupt.len(),
        if report.corrupt.len() == 1 {
            "y"
        } else {
            "ies"
        }
    )))
}

/// The stage graph as DOT or Mermaid.
pub fn graph_text(p: &Pipeline, format: GraphFormat) -> String {
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            out.push_str(&format!(
                "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n",
                p.name
            ));
            for s in &p.stages {
                out.push_str(&format!(
                    "  \"{}\" [label=\"{}\\n({})\"];\n",
                    s.name,
                    s.name,
                    s.kind.as_str()
                ));
            }
            for s in &p.stages {
                for (role, src) in &s.inputs {
                    out.push_str(&format!(
                        "  \"{src}\" -> \"{}\" [label=\"{role}\"];\n",
                        s.name
                    ));
                }
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for s in &p.stages {
                out.push_str(&format!(
                    "  {}[\"{}<br/>({})\"]\n",
                    mermaid_id(&s.name),
                    s.name,
                    s.kind.as_str()
                ));
            }
            for s in &p.stages {
                for (role, src) in &s.inputs {
                    out.push_str(&format!(
                        "  {} -->|{role}| {}\n",
                        mermaid_id(src),
                        mermaid_id(&s.name)
                    ));
                }
            }
        }
    }
    out
}

fn mermaid_id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// One plugin's kind, summary, library and parameter table (`pretext plugins NAME`).
fn plugin_text(reg: &crate::plugins::Registry, name: &str) -> Result<String, AppError> {
    // SAFETY: entry strings are static in a loaded library (ABI contract), and the registry
    // keeps the libraries loaded.
    let describe = |kind: &str,
                    summary: &pretext_plugin::abi::PtxStr,
                    doc: &pretext_plugin::abi::PtxStr,
                    lib: &Path| unsafe {
        let doc = doc.as_str().trim();
        format!(
            "{kind} {name}: {}\n  library: {}\n\n{}\n",
            summary.as_str(),
            lib.display(),
            if doc.is_empty() {
                "(no parameters)"
            } else {
                doc
            }
        )
    };
    if let Some(f) = reg.objectives.get(name) {
        return Ok(describe(
            "objective",
            &f.entry.summary,
            &f.entry.params_doc,
            &f.library.path,
        ));
    }
    if let Some(f) = reg.augmentations.get(name) {
        return Ok(describe(
            "augmentation",
            &f.entry.summary,
            &f.entry.params_doc,
            &f.library.path,
        ));
    }
    let names = reg
        .objectives
        .keys()
        .chain(reg.augmentations.keys())
        .map(|s| s.as_str());
    let hint = crate::pipeline::did_you_mean(name, names)
        .map(|h| format!("; {h}"))
        .unwrap_or_default();
    Err(AppError::Input(format!(
        "no objective or augmentation named `{name}` among the plugins found{hint} (`pretext plugins` lists them)"
    )))
}

/// A parameter table indented under its plugin's line (or a note that it takes none).
fn indent_doc(doc: &str) -> String {
    let doc = doc.trim();
    if doc.is_empty() {
        return "      (no parameters)\n".into();
    }
    doc.lines()
        .map(|l| format!("      {l}\n"))
        .collect::<String>()
        + "\n"
}

fn plugins_text(reg: &crate::plugins::Registry, params: bool) -> String {
    let mut out = String::new();
    if reg.libraries.is_empty() {
        out.push_str("no plugin libraries found. Build the workspace (`cargo build --release`) or pass --plugin-dir.\n");
    }
    for lib in &reg.libraries {
        out.push_str(&format!(
            "{} {} (sdk {})\n  path:   {}\n  digest: {}\n",
            lib.name,
            lib.version,
            lib.sdk_version,
            lib.path.display(),
            lib.digest
        ));
        for (name, f) in &reg.objectives {
            if std::sync::Arc::ptr_eq(&f.library, lib) {
                out.push_str(&format!("  objective     {name:<22} {}\n", unsafe {
                    f.entry.summary.as_str()
                }));
                if params {
                    out.push_str(&indent_doc(unsafe { f.entry.params_doc.as_str() }));
                }
            }
        }
        for (name, f) in &reg.augmentations {
            if std::sync::Arc::ptr_eq(&f.library, lib) {
                out.push_str(&format!("  augmentation  {name:<22} {}\n", unsafe {
                    f.entry.summary.as_str()
                }));
                if params {
                    out.push_str(&indent_doc(unsafe { f.entry.params_doc.as_str() }));
                }
            }
        }
    }
    for f in &reg.failures {
        out.push_str(&format!("FAILED: {f}\n"));
    }
    out
}
