//! `pretext bench`: time training steps of a pipeline's pretrain stages on their real inputs.
//!
//! The stages upstream of the benchmarked ones run (or are reused from the store) as in `run`,
//! without a run log, lockfile or gates; each benchmarked stage then trains `warmup + steps`
//! batches exactly as `pretext run` would and throws the weights away. Nothing of the
//! benchmarked stages is stored.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use serde::Serialize;

use super::{execute, progress, registry, stage_input_error, AppError, Options};
use crate::engine::Engine;
use crate::pipeline::{Pipeline, Stage, StageConfig, StageKind};
use crate::stages::{pretrain, InputArtifact, Progress, StageCtx};

/// One benchmarked stage: its timings and their summary.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub stage: String,
    pub device: String,
    pub warmup: usize,
    #[serde(flatten)]
    pub times: pretrain::BenchTimes,
    /// Median, 10th and 90th percentile of `step_ms`.
    pub step_ms_median: f64,
    pub step_ms_p10: f64,
    pub step_ms_p90: f64,
    pub augment_ms_median: f64,
    /// Views per second through forward, loss, backward and update (`batch · views` over the
    /// median step time).
    pub train_images_per_second: f64,
    /// The same including view production (augmentation).
    pub images_per_second: f64,
    /// The process's peak resident memory while this stage was prepared and benchmarked, in
    /// bytes (Linux: `VmHWM` of `/proc/self/status`, reset just before the stage); absent
    /// where the system does not tell.
    pub peak_rss_bytes: Option<u64>,
}

/// Start measuring the process's peak resident memory afresh (Linux: writing `5` to
/// `/proc/self/clear_refs` resets `VmHWM`). False where that is not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The process's peak resident memory since the last reset, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The `q` quantile (0..=1) of `v` by nearest rank; 0 for an empty slice.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    s[i]
}

/// The pretrain stages to benchmark: the named ones, or every pretrain stage, in pipeline order.
fn targets<'p>(p: &'p Pipeline, names: &[String]) -> Result<Vec<&'p Stage>, AppError> {
    let pretrain: Vec<&Stage> = p
        .stages
        .iter()
        .filter(|s| s.kind == StageKind::Pretrain)
        .collect();
    if pretrain.is_empty() {
        return Err(AppError::Input(format!(
            "{} has no pretrain stage to benchmark",
            super::display_path(&p.file)
        )));
    }
    let listed = || {
        pretrain
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for n in names {
        match p.stage(n) {
            None => {
                return Err(AppError::Input(format!(
                    "--stage {n}: no such stage in {}; its pretrain stages are: {}",
                    super::display_path(&p.file),
                    listed()
                )))
            }
            Some(s) if s.kind != StageKind::Pretrain => {
                return Err(AppError::Input(format!(
                    "--stage {n}: `{n}` is a {} stage; bench times pretrain stages ({})",
                    s.kind.as_str(),
                    listed()
                )))
            }
            Some(_) => {}
        }
    }
    // Pipeline order, each once.
    Ok(pretrain
        .into_iter()
        .filter(|s| names.is_empty() || names.contains(&s.name))
        .collect())
}

/// Time `steps` training steps (after `warmup` untimed ones) of each target pretrain stage.
pub fn bench(
    p: &Pipeline,
    opts: &Options,
    reporter: &progress::Reporter,
    names: &[String],
    steps: usize,
    warmup: usize,
) -> Result<Vec<BenchRow>, AppError> {
    if steps == 0 {
        return Err(AppError::Input(
            "--steps must be at least 1 (the number of timed steps)".into(),
        ));
    }
    let targets = targets(p, names)?;
    let engine = Engine::open(opts.device).map_err(|e| AppError::Input(e.to_string()))?;
    let reg = registry(Some(p), &opts.plugin_dirs)?;
    // Bad objective parameters fail before anything runs.
    for stage in &targets {
        crate::stages::plugins_used(stage, p, &reg).map_err(|e| stage_input_error(stage, e))?;
    }
    // Everything the targets read, transitively; the targets themselves never run here.
    let mut upstream: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&Stage> = targets.clone();
    while let Some(stage) = todo.pop() {
        for (_, src) in &stage.inputs {
            if upstream.insert(src) {
                todo.push(p.stage(src).expect("validated graph"));
            }
        }
    }
    let mut partial = p.clone();
    partial.stages.retain(|s| {
        upstream.contains(s.name.as_str()) && !targets.iter().any(|t| t.name == s.name)
    });
    let report = execute(&partial, opts, reporter, &engine, &reg, false)?;
    let entries: HashMap<String, PathBuf> = report
        .log
        .stages
        .values()
        .map(|r| (r.key.to_hex(), r.entry.clone()))
        .collect();
    // Never written: a benchmarked stage stores nothing.
    let scratch = std::env::temp_dir();
    let mut rows = Vec::new();
    for stage in targets {
        let name = &stage.name;
        let StageConfig::Pretrain(cfg) = &stage.config else {
            unreachable!("targets are pretrain stages")
        };
        let inputs = stage
            .inputs
            .iter()
            .map(|(role, src)| {
                let r = &report.log.stages[src];
                (
                    role.clone(),
                    InputArtifact {
                        stage: src.clone(),
                        key: r.key.to_hex(),
                        dir: r.entry.clone(),
                    },
                )
            })
            .collect();
        let ctx = StageCtx {
            engine: &engine,
            registry: &reg,
            seed: p.seed,
            out_dir: &scratch,
            inputs,
            entries: &entries,
            progress: reporter,
            checkpoint_dir: None,
        };
        tracing::info!(stage = %name, steps, warmup, "benchmarking");
        reporter.start(&format!("bench {name}"), (warmup + steps) as u64);
        let measured = reset_peak_rss();
        let times =
            pretrain::bench(cfg, &ctx, steps, warmup).map_err(|e| stage_input_error(stage, e))?;
        let peak_rss_bytes = measured.then(peak_rss).flatten();
        let median = quantile(&times.step_ms, 0.5);
        let aug = quantile(&times.augment_ms, 0.5);
        let per_batch = (times.batch * times.views) as f64;
        reporter.finish(&format!("{median:.1} ms/step"));
        rows.push(BenchRow {
            stage: name.clone(),
            device: opts.device.name(),
            warmup,
            step_ms_median: median,
            step_ms_p10: quantile(&times.step_ms, 0.1),
            step_ms_p90: quantile(&times.step_ms, 0.9),
            augment_ms_median: aug,
            train_images_per_second: per_batch / (median / 1e3).max(1e-12),
            images_per_second: per_batch / ((median + aug) / 1e3).max(1e-12),
            peak_rss_bytes,
            times,
        });
    }
    Ok(rows)
}

/// The table `pretext bench` prints.
pub fn table(rows: &[BenchRow]) -> String {
    let mut out = format!(
        "{:<12} {:<8} {:<10} {:>5} {:>5} {:>11} {:>22} {:>10} {:>12} {:>12} {:>12}\n",
        "stage",
        "encoder",
        "objective",
        "batch",
        "views",
        "params",
        "step ms med [p10-p90]",
        "augment ms",
        "train img/s",
        "img/s",
        "peak RSS MB"
    );
    for r in rows {
        let t = &r.times;
        out.push_str(&format!(
            "{:<12} {:<8} {:<10} {:>5} {:>5} {:>11} {:>22} {:>10.2} {:>12.0} {:>12.0} {:>12}\n",
            r.stage,
            t.encoder,
            t.objective,
            t.batch,
            t.views,
            t.encoder_parameters,
            format!(
                "{:.2} [{:.2}-{:.2}]",
                r.step_ms_median, r.step_ms_p10, r.step_ms_p90
            ),
            r.augment_ms_median,
            r.train_images_per_second,
            r.images_per_second,
            r.peak_rss_bytes
                .map_or_else(|| "-".to_string(), |b| format!("{:.1}", b as f64 / 1e6))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 5.0);
        assert_eq!(quantile(&v, 0.1), 1.0);
        assert_eq!(quantile(&v, 0.9), 5.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
