//! The command line: clap definitions and one function per subcommand. `main.rs` only parses
//! arguments, sets up logging and turns errors into exit codes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::DeviceKind;
use crate::exec::{self, progress, AppError, Options, RunLog};
use crate::pipeline::{self, Pipeline, StageKind};

#[derive(Parser, Debug)]
#[command(
    name = "pretext",
    version,
    about = "Run self-supervised-learning pipelines declared in TOML",
    long_about = "pretext runs self-supervised-learning pipelines declared in TOML: ingest → augment → \
pretrain → probe, with objectives and augmentations loaded from plugin libraries. Every stage's \
outputs are stored by a content hash of everything that determines them, so unchanged stages never \
run twice, and pretext.lock records the result so CI can check it with `run --locked`.\n\n\
Exit codes: 0 success, 1 a stage or check failed, 2 bad input (pipeline file, data, plugin, flags).",
    after_help = "Start with `pretext run pipelines/quickstart.toml`. Docs: docs/guide/README.md"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// More log detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Override a key, e.g. `--set stages.ssl.epochs=1` (repeatable; value in TOML syntax).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Another folder to load plugin libraries from (repeatable).
    #[arg(long = "plugin-dir", value_name = "DIR")]
    pub plugin_dirs: Vec<PathBuf>,
    /// Compute device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: DeviceKind,
}

fn parse_device(s: &str) -> Result<DeviceKind, String> {
    DeviceKind::parse(s)
        .ok_or_else(|| format!("unknown device `{s}`; use `cpu`, `cuda` or `cuda:N`"))
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline: every stage whose result is not already stored.
    Run {
        #[command(flatten)]
        args: PipelineArgs,
        /// Fail (exit 1) if any stage key or output digest differs from pretext.lock.
        #[arg(long)]
        locked: bool,
        /// Wait for another run holding the store instead of failing at once.
        #[arg(long)]
        wait: bool,
    },
    /// Show what `run` would do: each stage's key, whether it is cached, and why it would run.
    Plan {
        #[command(flatten)]
        args: PipelineArgs,
    },
    /// Check a pipeline file and its plugin parameters without running anything.
    Validate {
        #[command(flatten)]
        args: PipelineArgs,
    },
    /// Print the stage graph as Graphviz DOT or Mermaid.
    Graph {
        #[command(flatten)]
        args: PipelineArgs,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// List plugin libraries found, where, and what they provide.
    Plugins {
        /// Also look in this folder (repeatable).
        #[arg(long = "plugin-dir", value_name = "DIR")]
        plugin_dirs: Vec<PathBuf>,
        /// A pipeline whose `plugin_paths` to include.
        #[arg(long)]
        pipeline: Option<PathBuf>,
    },
    /// Print the metrics of a pipeline's last run.
    Show {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Print the run log as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store maintenance.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Re-digest every entry of a pipeline's store and report corrupt ones (exit 1 if any).
    Verify {
        /// The pipeline file whose store to check.
        pipeline: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
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

/// Run one command; returns the text for stdout.
pub fn dispatch(cli: &Cli) -> Result<(), AppError> {
    match &cli.command {
        Command::Run { args, locked, wait } => {
            let p = load(args)?;
            let opts = Options {
                device: args.device,
                plugin_dirs: args.plugin_dirs.clone(),
                locked: *locked,
                wait: *wait,
            };
            let bars =
                cli.log_format == LogFormat::Human && !cli.quiet && std::io::stderr().is_terminal();
            let reporter = progress::Reporter::new(bars);
            let report = exec::run(&p, &opts, &reporter)?;
            reporter.summary(&report.log);
            let ran = report
                .log
                .stages
                .values()
                .filter(|s| s.status == "ran")
                .count();
            println!(
                "\n{} stage(s) ran, {} cached. Lockfile: {}",
                ran,
                report.log.stages.len() - ran,
                exec::display_path(&report.lockfile)
            );
            Ok(())
        }
        Command::Plan { args } => {
            let p = load(args)?;
            let reg = exec::registry(Some(&p), &args.plugin_dirs)?;
            let store = exec::store_of(&p);
            let planned = exec::plan(&p, &reg, store.as_ref(), args.device)?;
            println!(
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
                println!(
                    "  {:<14} {:<9} {}  {}",
                    pl.stage.name,
                    pl.stage.kind.as_str(),
                    pl.key.short(),
                    status
                );
            }
            Ok(())
        }
        Command::Validate { args } => {
            let p = load(args)?;
            let reg = exec::registry(Some(&p), &args.plugin_dirs)?;
            for stage in &p.stages {
                crate::stages::plugins_used(stage, &p, &reg).map_err(|e| match e {
                    crate::stages::StageError::Input(m) | crate::stages::StageError::Failed(m) => {
                        AppError::Input(format!("stage `{}`: {m}", stage.name))
                    }
                })?;
            }
            println!(
                "ok: `{}` is valid ({} stages: {})",
                exec::display_path(&p.file),
                p.stages.len(),
                p.order().join(" → ")
            );
            Ok(())
        }
        Command::Graph { args, format } => {
            let p = load(args)?;
            print!("{}", graph_text(&p, *format));
            Ok(())
        }
        Command::Plugins {
            plugin_dirs,
            pipeline,
        } => {
            let p = pipeline.as_deref().map(load_plain).transpose()?;
            let reg = exec::registry(p.as_ref(), plugin_dirs)?;
            print!("{}", plugins_text(&reg));
            Ok(())
        }
        Command::Show { pipeline, json } => {
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
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&log)
                        .map_err(|e| AppError::Failed(e.to_string()))?
                );
            } else {
                print!("{}", progress::summary_table(&log));
                for name in &log.order {
                    let r = &log.stages[name];
                    if r.metrics.is_empty() {
                        continue;
                    }
                    println!("\n[{name}]");
                    for (k, v) in &r.metrics {
                        println!("  {k:<28} {v}");
                    }
                }
                for f in &log.gate_failures {
                    println!("\nFAILED GATE: {f}");
                }
            }
            Ok(())
        }
        Command::Store {
            command: StoreCommand::Verify { pipeline },
        } => {
            let p = load_plain(pipeline)?;
            let Some(store) = exec::store_of(&p) else {
                return Err(AppError::Input(format!(
                    "{} has no store yet ({} does not exist); nothing to verify",
                    pipeline.display(),
                    exec::display_path(&p.store_dir)
                )));
            };
            let report = store.verify()?;
            println!(
                "{} entries ok, {} corrupt",
                report.ok.len(),
                report.corrupt.len()
            );
            for c in &report.corrupt {
                println!(
                    "  CORRUPT {} ({}): {}",
                    c.path.display(),
                    c.kind,
                    c.problems.join("; ")
                );
            }
            if report.is_ok() {
                Ok(())
            } else {
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
        }
    }
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

fn plugins_text(reg: &crate::plugins::Registry) -> String {
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
            }
        }
        for (name, f) in &reg.augmentations {
            if std::sync::Arc::ptr_eq(&f.library, lib) {
                out.push_str(&format!("  augmentation  {name:<22} {}\n", unsafe {
                    f.entry.summary.as_str()
                }));
            }
        }
    }
    for f in &reg.failures {
        out.push_str(&format!("FAILED: {f}\n"));
    }
    out
}

/// Stage kinds that run in this version (for help texts).
pub fn supported_kinds() -> Vec<&'static str> {
    [
        StageKind::Ingest,
        StageKind::Augment,
        StageKind::Pretrain,
        StageKind::Probe,
    ]
    .iter()
    .map(|k| k.as_str())
    .collect()
}
