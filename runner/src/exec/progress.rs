//! What a run shows while it works: stage lines and progress bars (indicatif, on a terminal),
//! structured `tracing` events (always; `--log-format json` makes them machine-readable),
//! TensorBoard event files of the stages that run (`pretext run` only), and the summary table
//! at the end.

use std::path::PathBuf;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use super::RunLog;
use crate::stages::{Metrics, Progress};
use crate::tensorboard::EventWriter;

/// Reports a run's progress. Bars only when `bars` is set (stderr is a terminal and the log
/// format is human); otherwise the tracing events carry the same information.
pub struct Reporter {
    bars: bool,
    bar: Mutex<Option<ProgressBar>>,
    events: Mutex<Events>,
}

/// TensorBoard event files: one folder per stage that runs (one TensorBoard "run" each).
/// Writing them never fails a run: the first error is logged as a warning and ends the
/// writing for the rest of the run.
#[derive(Default)]
struct Events {
    /// `<store>/runs/<pipeline>/tensorboard`, once [`Reporter::write_events`] is called.
    root: Option<PathBuf>,
    /// The running stage's folder, and its file once something was written.
    stage: Option<PathBuf>,
    writer: Option<EventWriter>,
    /// The last step the running stage reported (its results are shown at that step).
    last_step: u64,
}

impl Events {
    fn write(&mut self, step: u64, values: &[(&str, f64)]) {
        let Some(dir) = self.stage.as_ref().filter(|_| !values.is_empty()) else {
            return;
        };
        let result = match &mut self.writer {
            Some(w) => w.scalars(step, values),
            None => EventWriter::create(dir).and_then(|mut w| {
                let r = w.scalars(step, values);
                self.writer = Some(w);
                r
            }),
        };
        self.last_step = self.last_step.max(step);
        if let Err(e) = result {
            let at = self
                .writer
                .as_ref()
                .map_or(dir.as_path(), |w| w.path())
                .display()
                .to_string();
            tracing::warn!(
                file = %at,
                error = %e,
                "cannot write TensorBoard events; the run goes on without them"
            );
            *self = Events::default();
        }
    }
}

impl Reporter {
    pub fn new(bars: bool) -> Reporter {
        Reporter {
            bars,
            bar: Mutex::new(None),
            events: Mutex::new(Events::default()),
        }
    }

    /// Write TensorBoard event files of the stages that run under `root`, one folder per
    /// stage.
    pub fn write_events(&self, root: PathBuf) {
        if let Ok(mut ev) = self.events.lock() {
            *ev = Events {
                root: Some(root),
                ..Events::default()
            };
        }
    }

    pub fn stage_start(&self, name: &str, kind: &str, reasons: &[String]) {
        tracing::info!(stage = name, kind, reason = %reasons.join("; "), "running stage");
        if let Ok(mut ev) = self.events.lock() {
            ev.writer = None;
            ev.last_step = 0;
            ev.stage = ev.root.as_ref().map(|r| r.join(name));
        }
    }

    pub fn stage_cached(&self, name: &str, kind: &str) {
        tracing::info!(stage = name, kind, "cached: reusing the stored result");
    }

    pub fn stage_done(&self, name: &str, status: &str, seconds: f64, metrics: &Metrics) {
        let shown = headline(metrics);
        tracing::info!(stage = name, status, seconds, metrics = %shown, "stage done");
        // A stage that ran shows its results (`metrics/<name>`) at its last step.
        if let Ok(mut ev) = self.events.lock() {
            if ev.stage.is_some() {
                let named: Vec<String> = metrics.keys().map(|k| format!("metrics/{k}")).collect();
                let values: Vec<(&str, f64)> = named
                    .iter()
                    .zip(metrics.values())
                    .map(|(k, v)| (k.as_str(), *v))
                    .collect();
                let step = ev.last_step;
                ev.write(step, &values);
            }
            ev.stage = None;
            ev.writer = None;
        }
    }

    /// The table printed at the end of `run` and by `show`.
    pub fn summary(&self, log: &RunLog) {
        crate::say!("{}", summary_table(log));
    }
}

/// The most telling metrics of a stage, for one table cell.
pub fn headline(m: &Metrics) -> String {
    const PREFERRED: [&str; 14] = [
        "linear.accuracy",
        "knn.accuracy",
        "baseline.linear.accuracy",
        "baseline.knn.accuracy",
        "accuracy",
        "trainable_parameters",
        "ood.best_auroc",
        "clean_accuracy",
        "corruption.mean_error",
        "loss",
        "embedding_std",
        "samples",
        "kept",
        "views",
    ];
    let mut parts: Vec<String> = PREFERRED
        .iter()
        .filter_map(|k| m.get(*k).map(|v| format!("{k}={}", fmt_num(*v))))
        .collect();
    if parts.is_empty() {
        parts = m
            .iter()
            .take(3)
            .map(|(k, v)| format!("{k}={}", fmt_num(*v)))
            .collect();
    }
    parts.join("  ")
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{}", v as i64)
    } else {
        format!("{v:.4}")
    }
}

pub fn summary_table(log: &RunLog) -> String {
    let mut rows = vec![[
        "stage".to_string(),
        "kind".into(),
        "status".into(),
        "time".into(),
        "key".into(),
        "metrics".into(),
    ]];
    for name in &log.order {
        let r = &log.stages[name];
        rows.push([
            name.clone(),
            r.kind.clone(),
            r.status.clone(),
            format!("{:.1}s", r.seconds),
            r.key.short(),
            headline(&r.metrics),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(
                &widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  "),
            );
            out.push('\n');
        }
    }
    for name in &log.order {
        let r = &log.stages[name];
        if r.kind == "report" {
            out.push_str(&format!(
                "report `{name}`: {}\n",
                r.entry.join(crate::artifacts::report::HTML_FILE).display()
            ));
        }
    }
    out
}

impl Progress for Reporter {
    fn start(&self, label: &str, total: u64) {
        if !self.bars {
            return;
        }
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(
                "  {prefix:<22} [{bar:30}] {pos}/{len} {elapsed:>4} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_prefix(label.to_string());
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(pb);
        }
    }

    fn advance(&self, n: u64, message: &str) {
        if let Ok(b) = self.bar.lock() {
            if let Some(pb) = b.as_ref() {
                pb.inc(n);
                if !message.is_empty() {
                    pb.set_message(message.to_string());
                }
            }
        }
    }

    fn finish(&self, message: &str) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(pb) = b.take() {
                pb.finish_with_message(message.to_string());
            }
        }
    }

    fn scalars(&self, step: u64, values: &[(&str, f64)]) {
        if let Ok(mut ev) = self.events.lock() {
            ev.write(step, values);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |rd| rd.count())
    }

    #[test]
    fn events_go_to_one_folder_per_stage_that_ran() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tensorboard");
        let r = Reporter::new(false);
        r.write_events(root.clone());
        r.stage_start("ssl", "pretrain", &[]);
        r.scalars(1, &[("train/loss", 1.0)]);
        r.scalars(2, &[("train/loss", 0.5)]);
        let metrics = Metrics::from([("loss".to_string(), 0.5)]);
        r.stage_done("ssl", "ran", 1.0, &metrics);
        // Reported after the stage is done: nowhere to go.
        r.scalars(3, &[("train/loss", 0.1)]);
        r.stage_cached("data", "ingest");
        r.stage_done("data", "cached", 0.0, &metrics);
        assert_eq!(files(&root.join("ssl")), 1);
        assert!(!root.join("data").exists(), "a cached stage writes nothing");
    }

    #[test]
    fn an_unwritable_folder_stops_the_events_not_the_run() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-folder");
        std::fs::write(&file, "").unwrap();
        let r = Reporter::new(false);
        r.write_events(file.join("tensorboard"));
        r.stage_start("ssl", "pretrain", &[]);
        r.scalars(1, &[("train/loss", 1.0)]);
        assert!(r.events.lock().unwrap().root.is_none(), "writing is off");
        r.scalars(2, &[("train/loss", 1.0)]);
        r.stage_done("ssl", "ran", 1.0, &Metrics::new());
        r.stage_start("eval", "probe", &[]);
        assert!(
            r.events.lock().unwrap().stage.is_none(),
            "for the rest of the run"
        );
    }
}
