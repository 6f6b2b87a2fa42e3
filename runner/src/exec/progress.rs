//! What a run shows while it works: stage lines and progress bars (indicatif, on a terminal),
//! structured `tracing` events (always; `--log-format json` makes them machine-readable), and
//! the summary table at the end.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use super::RunLog;
use crate::stages::{Metrics, Progress};

/// Reports a run's progress. Bars only when `bars` is set (stderr is a terminal and the log
/// format is human); otherwise the tracing events carry the same information.
pub struct Reporter {
    bars: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Reporter {
    pub fn new(bars: bool) -> Reporter {
        Reporter {
            bars,
            bar: Mutex::new(None),
        }
    }

    pub fn stage_start(&self, name: &str, kind: &str, reasons: &[String]) {
        tracing::info!(stage = name, kind, reason = %reasons.join("; "), "running stage");
    }

    pub fn stage_cached(&self, name: &str, kind: &str) {
        tracing::info!(stage = name, kind, "cached: reusing the stored result");
    }

    pub fn stage_done(&self, name: &str, status: &str, seconds: f64, metrics: &Metrics) {
        let shown = headline(metrics);
        tracing::info!(stage = name, status, seconds, metrics = %shown, "stage done");
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
}
