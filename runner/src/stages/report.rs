//! `kind = "report"`: one page per run, as `report.html` and `report.md` side by side, with the
//! charts as SVG files in `plots/` (inlined in the HTML, so their text is crisp and selectable)
//! and the augmentation preview as a PNG, built only from the committed artifacts of the stages
//! it reads:
//!
//! - every metric of every stage, with its `expect` bound and verdict, and a summary of the
//!   gates at the top;
//! - pretrain: loss, learning rate and the collapse metrics per epoch (`history.json`);
//! - probe: the label-efficiency curve (accuracy against label fraction, ± std over seeds) for
//!   each probe, the random-init baseline and the supervised-from-scratch baseline;
//! - ood_eval: histograms of each OOD score for in-distribution and OOD samples, and the
//!   corruption heat map (accuracy per corruption and severity);
//! - augment: the preview grid (the first samples through every view).
//!
//! The report is an artifact like any other: it has a key, lands in the store atomically and
//! is reproducible byte for byte (no dates, no timings: those live in the run log).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::{io_err, read_json, Metrics, StageCtx, StageError};
use crate::artifacts::audit::AUDIT_FILE;
use crate::artifacts::history::{EpochRecord, HISTORY_FILE};
use crate::artifacts::metrics;
use crate::artifacts::ood::{CorruptionGrid, ScoreRecord, CORRUPTIONS_FILE, SCORES_FILE};
use crate::artifacts::report::{HTML_FILE, MARKDOWN_FILE, PLOTS_DIR};
use crate::artifacts::views::PREVIEW_FILE;
use crate::data::{table, Dataset};
use crate::pipeline::{Expectation, ReportConfig, ReportSource, StageKind};
use crate::plot::{self, Canvas, Series, Svg, XAxis};

/// What a figure is drawn as: a chart, or an image of real pixels.
enum Drawing {
    Svg(Svg),
    Png(Canvas),
}

/// One figure: a file in `plots/` and its caption.
struct Figure {
    file: String,
    /// Short text for `alt` (`ssl: loss`).
    alt: String,
    caption: String,
    /// The SVG document, inlined in the HTML page (`None`: a PNG, linked).
    inline: Option<String>,
}

/// One row of a stage's metric table.
struct Row {
    metric: String,
    value: Option<f64>,
    bound: Option<String>,
    /// `Some(true)` passed, `Some(false)` failed, `None` no gate.
    verdict: Option<bool>,
}

/// Everything shown for one stage.
struct Section {
    stage: String,
    kind: StageKind,
    rows: Vec<Row>,
    figures: Vec<Figure>,
    notes: Vec<String>,
    /// Curate audits: (finding, count, the first examples).
    findings: Vec<(String, usize, String)>,
}

pub fn run(cfg: &ReportConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let plots = ctx.out_dir.join(PLOTS_DIR);
    std::fs::create_dir_all(&plots).map_err(|e| io_err(&plots, e))?;
    let mut sections = Vec::new();
    ctx.progress.start("report", cfg.sources.len() as u64);
    for src in &cfg.sources {
        let input = ctx.input(&src.stage)?;
        sections.push(section(src, &input.dir, &plots)?);
        ctx.progress.advance(1, &src.stage);
    }
    ctx.progress.finish("");

    let html = render_html(cfg, &sections);
    let md = render_markdown(cfg, &sections);
    for (file, text) in [(HTML_FILE, html), (MARKDOWN_FILE, md)] {
        let p = ctx.out_dir.join(file);
        std::fs::write(&p, text).map_err(|e| io_err(&p, e))?;
    }
    let rows = sections.iter().flat_map(|s| &s.rows);
    let gates = rows.clone().filter(|r| r.verdict.is_some()).count();
    let failed = rows.clone().filter(|r| r.verdict == Some(false)).count();
    let mut m = Metrics::new();
    m.insert("report.stages".into(), sections.len() as f64);
    m.insert("report.metrics".into(), rows.count() as f64);
    m.insert(
        "report.figures".into(),
        sections.iter().map(|s| s.figures.len()).sum::<usize>() as f64,
    );
    m.insert("report.expectations".into(), gates as f64);
    m.insert("report.expectations_failed".into(), failed as f64);
    Ok(m)
}

fn bound_text(e: &Expectation) -> String {
    match (e.min, e.max) {
        (Some(a), Some(b)) => format!("{a} ≤ x ≤ {b}"),
        (Some(a), None) => format!("≥ {a}"),
        (None, Some(b)) => format!("≤ {b}"),
        (None, None) => "any".into(),
    }
}

fn section(src: &ReportSource, dir: &Path, plots: &Path) -> Result<Section, StageError> {
    let metrics = metrics::read(dir)?;
    let mut rows: Vec<Row> = metrics
        .iter()
        .map(|(k, v)| {
            let exp = src.expect.iter().find(|e| &e.metric == k);
            Row {
                metric: k.clone(),
                value: Some(*v),
                bound: exp.map(bound_text),
                verdict: exp.map(|e| e.holds(*v)),
            }
        })
        .collect();
    // A gate on a metric the stage did not produce fails (the executor reports it too).
    for e in &src.expect {
        if !metrics.contains_key(&e.metric) {
            rows.push(Row {
                metric: e.metric.clone(),
                value: None,
                bound: Some(bound_text(e)),
                verdict: Some(false),
            });
        }
    }
    let mut s = Section {
        stage: src.stage.clone(),
        kind: src.kind,
        rows,
        figures: Vec::new(),
        notes: Vec::new(),
        findings: Vec::new(),
    };
    let save = |s: &mut Section, name: &str, drawing: Drawing, caption: String| {
        let (file, inline) = match drawing {
            Drawing::Svg(svg) => {
                let file = format!("{}-{name}.svg", src.stage);
                svg.save(&plots.join(&file)).map_err(StageError::Failed)?;
                (file, Some(svg.text))
            }
            Drawing::Png(canvas) => {
                let file = format!("{}-{name}.png", src.stage);
                canvas
                    .save(&plots.join(&file))
                    .map_err(StageError::Failed)?;
                (file, None)
            }
        };
        s.figures.push(Figure {
            file: format!("{PLOTS_DIR}/{file}"),
            alt: format!("{}: {name}", src.stage),
            caption,
            inline,
        });
        Ok::<(), StageError>(())
    };
    let chart = |r: Result<Svg, String>| r.map(Drawing::Svg).map_err(StageError::Failed);
    match src.kind {
        StageKind::Pretrain => {
            let history: Vec<EpochRecord> = read_json(&dir.join(HISTORY_FILE))?;
            for (name, svg, caption) in pretrain_figures(&history)? {
                save(&mut s, name, Drawing::Svg(svg), caption)?;
            }
        }
        StageKind::Probe => {
            if let Some((svg, caption)) = label_efficiency(&metrics) {
                save(&mut s, "label-efficiency", chart(svg)?, caption)?;
            }
        }
        StageKind::OodEval => {
            let scores = dir.join(SCORES_FILE);
            if scores.exists() {
                let records: Vec<ScoreRecord> = read_json(&scores)?;
                for r in &records {
                    let svg = plot::histograms(
                        &format!("OOD score: {}", r.score),
                        "score (higher = more in-distribution)",
                        &[("in-distribution", &r.in_distribution), ("OOD", &r.ood)],
                        40,
                    );
                    let caption = format!(
                        "`{}` scores of the in-distribution test samples ({}) and the OOD samples ({}): AUROC {:.4}, FPR@95%TPR {:.4}.",
                        r.score,
                        r.in_distribution.len(),
                        r.ood.len(),
                        r.auroc,
                        r.fpr95
                    );
                    save(&mut s, &format!("ood-{}", r.score), chart(svg)?, caption)?;
                }
            }
            let corr = dir.join(CORRUPTIONS_FILE);
            if corr.exists() {
                let grid: CorruptionGrid = read_json(&corr)?;
                let mut sev: Vec<u8> = grid.values().flat_map(|m| m.keys().copied()).collect();
                sev.sort_unstable();
                sev.dedup();
                let rows: Vec<String> = grid.keys().cloned().collect();
                let cols: Vec<String> = sev.iter().map(|v| v.to_string()).collect();
                let values: Vec<Vec<f64>> = grid
                    .values()
                    .map(|m| {
                        sev.iter()
                            .map(|v| m.get(v).copied().unwrap_or(f64::NAN))
                            .collect()
                    })
                    .collect();
                let svg = plot::heat_map(
                    "Accuracy under corruption",
                    "severity",
                    &rows,
                    &cols,
                    &values,
                );
                let caption = "Linear-probe test accuracy per corruption (rows) and severity (columns, 1 = mildest); darker is better.".to_string();
                save(&mut s, "corruptions", chart(svg)?, caption)?;
            }
        }
        StageKind::Augment => {
            let ds = table::read_dataset(&dir.join(PREVIEW_FILE))?;
            if ds.is_text() {
                text_preview(&mut s, dir, &ds)?;
            } else if let Some((canvas, caption)) = image_preview(&ds) {
                save(&mut s, "preview", Drawing::Png(canvas), caption)?;
            }
        }
        StageKind::Ingest | StageKind::Curate | StageKind::Finetune | StageKind::Report => {}
    }
    if src.kind == StageKind::Curate {
        let audit: serde_json::Value = read_json(&dir.join(AUDIT_FILE))?;
        s.findings = curate_findings(&audit);
        if let Some((svg, caption)) = class_balance(&audit) {
            save(&mut s, "classes", chart(svg)?, caption)?;
        }
        if let Some(why) = audit["near_duplicates"]["skipped"].as_str() {
            s.notes
                .push(format!("The near-duplicate search was skipped: {why}."));
        }
        s.notes.push(
            "Every pair and flagged id (up to `max_listed` of each) and the metadata distributions are in this stage's `audit.json`."
                .into(),
        );
    }
    Ok(s)
}

/// The preview of a text augment stage: the first passages of each view as text (`[MASK]` where
/// masked), as notes.
fn text_preview(s: &mut Section, dir: &Path, ds: &Dataset) -> Result<(), StageError> {
    let bpe = crate::artifacts::tokenizer::load(dir)?;
    let n = ds.sample_len();
    for r in 0..ds.len().min(6) {
        let view = ds.labels.as_ref().map_or(0, |l| l[r]) + 1;
        let shown = match &bpe {
            Some(b) => crate::artifacts::tokenizer::render(b, &ds.tokens[r * n..(r + 1) * n]),
            None => format!("{:?}", &ds.tokens[r * n..(r + 1) * n]),
        };
        s.notes
            .push(format!("Sample #{}, view {view}: “{shown}”", ds.ids[r]));
    }
    Ok(())
}

/// The preview grid of an image augment stage: the first train samples through every view.
fn image_preview(ds: &Dataset) -> Option<(Canvas, String)> {
    let labels = ds.labels.clone().unwrap_or_default();
    let views = labels.iter().map(|v| *v as usize + 1).max().unwrap_or(1);
    let shown = ds.len().min(8 * views);
    let n = ds.sample_len();
    let images: Vec<&[u8]> = (0..shown).map(|r| &ds.pixels[r * n..(r + 1) * n]).collect();
    let samples: Vec<String> = (0..shown)
        .step_by(views.max(1))
        .map(|r| format!("#{}", ds.ids[r]))
        .collect();
    if images.is_empty() {
        return None;
    }
    let (_, h, w) = ds.shape;
    let scale = (96 / h.max(w)).clamp(1, 4);
    // One row per sample: its views side by side, twice over (two samples a row).
    let per_row = views * 2;
    let canvas = plot::image_grid(&images, ds.shape, per_row, scale);
    let rows: Vec<String> = samples.chunks(2).map(|c| c.join(" and ")).collect();
    let caption = format!(
        "The first {} train samples through each of the {views} views (epoch-0 randomness), two samples per row, views left to right; rows top to bottom: {}.",
        shown / views.max(1),
        rows.join("; ")
    );
    Some((canvas, caption))
}

/// `#12` or `#12 (path)`.
fn sample_ref(v: &serde_json::Value) -> String {
    let id = v["id"].as_u64().map_or("?".into(), |i| format!("#{i}"));
    match v["path"].as_str() {
        Some(p) => format!("{id} ({p})"),
        None => id,
    }
}

/// The first five entries of a `Listed` list, each written by `one`, with "…" when there are
/// more.
fn examples(listed: &serde_json::Value, one: impl Fn(&serde_json::Value) -> String) -> String {
    let items = listed["listed"].as_array().cloned().unwrap_or_default();
    let mut out: Vec<String> = items.iter().take(5).map(one).collect();
    if items.len() > 5 || listed["truncated"].as_bool() == Some(true) {
        out.push("…".into());
    }
    out.join(", ")
}

/// The curate audit as (finding, count, examples) rows.
fn curate_findings(a: &serde_json::Value) -> Vec<(String, usize, String)> {
    let count = |v: &serde_json::Value| v["count"].as_u64().unwrap_or(0) as usize;
    let mut out = vec![(
        "exact duplicates within a split (copy = kept)".to_string(),
        count(&a["duplicates"]),
        examples(&a["duplicates"], |p| {
            format!("{} = {}", sample_ref(&p["copy"]), sample_ref(&p["keep"]))
        }),
    )];
    if a["near_duplicates"]["enabled"].as_bool() == Some(true) {
        out.push((
            "near-duplicate pairs within a split".into(),
            count(&a["near_duplicates"]["pairs"]),
            examples(&a["near_duplicates"]["pairs"], |p| {
                let d = p["distance"]
                    .as_u64()
                    .map_or(String::new(), |d| format!(" ({d} bits)"));
                format!("{} ~ {}{d}", sample_ref(&p["a"]), sample_ref(&p["b"]))
            }),
        ));
    }
    for q in ["blank", "dark", "bright", "tiny"] {
        out.push((
            format!("{q} images"),
            count(&a["quality"][q]),
            examples(&a["quality"][q], sample_ref),
        ));
    }
    let leak = &a["leakage"];
    out.push((
        format!(
            "train/test leakage ({} test and {} train samples)",
            leak["test_samples"].as_u64().unwrap_or(0),
            leak["train_samples"].as_u64().unwrap_or(0)
        ),
        count(&leak["pairs"]),
        examples(&leak["pairs"], |p| {
            let how = if p["exact"].as_bool() == Some(true) {
                "="
            } else {
                "~"
            };
            format!(
                "train {} {how} test {}",
                sample_ref(&p["train"]),
                sample_ref(&p["test"])
            )
        }),
    ));
    out.push((
        "dropped from the curated dataset".into(),
        count(&a["dropped"]["samples"]),
        a["dropped"]["by_rule"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
    ));
    out
}

/// Train and test samples per class, when the data is labelled.
fn class_balance(a: &serde_json::Value) -> Option<(Result<Svg, String>, String)> {
    let counts = a["classes"]["counts"].as_array()?;
    if counts.is_empty() {
        return None;
    }
    let names: Vec<String> = counts
        .iter()
        .map(|c| {
            c["name"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| c["label"].as_u64().unwrap_or(0).to_string())
        })
        .collect();
    let col = |k: &str| -> Vec<f64> {
        counts
            .iter()
            .map(|c| c[k].as_u64().unwrap_or(0) as f64)
            .collect()
    };
    let svg = plot::bar_chart(
        "Class balance",
        "class",
        "samples",
        &names,
        &[("train", col("train")), ("test", col("test"))],
    );
    let caption = format!(
        "Samples per class in each split, before dropping; largest / smallest class: {:.2}.",
        a["classes"]["imbalance"].as_f64().unwrap_or(f64::NAN)
    );
    Some((svg, caption))
}

fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.into(),
        points,
        errors: None,
    }
}

type Figures = Vec<(&'static str, Svg, String)>;

fn pretrain_figures(h: &[EpochRecord]) -> Result<Figures, StageError> {
    if h.is_empty() {
        return Ok(Vec::new());
    }
    let at = |f: &dyn Fn(&EpochRecord) -> f64| -> Vec<(f64, f64)> {
        h.iter().map(|r| (r.epoch as f64, f(r))).collect()
    };
    let mut out = Vec::new();
    out.push((
        "loss",
        plot::line_chart(
            "Pretraining loss",
            "epoch",
            "loss",
            &[series("loss", at(&|r| r.loss))],
            XAxis::Linear,
        )
        .map_err(StageError::Failed)?,
        format!(
            "Mean training loss per epoch: {:.4} after epoch 1, {:.4} after epoch {}.",
            h[0].loss,
            h[h.len() - 1].loss,
            h[h.len() - 1].epoch
        ),
    ));
    let val = |k: &str| -> Option<Vec<(f64, f64)>> {
        h.iter()
            .map(|r| r.validation.get(k).map(|v| (r.epoch as f64, *v)))
            .collect()
    };
    if let (Some(acc), Some(ppl)) = (val("mlm_accuracy"), val("mlm_perplexity")) {
        let last = h.len() - 1;
        let caption = format!(
            "Held-out masked-token accuracy (arg-max prediction of the original token at the masked positions of {} test-split tokens, masks fixed across epochs): {:.4} after epoch 1, {:.4} after epoch {}. Perplexity exp(cross-entropy) there: {:.1}, then {:.1}.",
            h[last].validation.get("mlm_targets").copied().unwrap_or(0.0),
            acc[0].1,
            acc[last].1,
            h[last].epoch,
            ppl[0].1,
            ppl[last].1
        );
        out.push((
            "mlm-accuracy",
            plot::line_chart(
                "Masked tokens: held-out accuracy",
                "epoch",
                "accuracy",
                &[series("masked accuracy", acc)],
                XAxis::Linear,
            )
            .map_err(StageError::Failed)?,
            caption,
        ));
        out.push((
            "mlm-perplexity",
            plot::line_chart(
                "Masked tokens: held-out perplexity",
                "epoch",
                "perplexity",
                &[series("perplexity", ppl)],
                XAxis::Linear,
            )
            .map_err(StageError::Failed)?,
            "Perplexity of the masked tokens of the held-out sequences (lower is better; a model that knows only token frequencies sits near the unigram perplexity).".into(),
        ));
    }
    let mut spread = vec![series("embedding std", at(&|r| r.embedding_std))];
    if h.iter().all(|r| r.projection_std.is_some()) {
        spread.push(series(
            "projection std",
            at(&|r| r.projection_std.unwrap_or(f64::NAN)),
        ));
    }
    out.push((
        "spread",
        plot::line_chart(
            "Embedding spread (collapse monitor)",
            "epoch",
            "std of L2-normalised outputs",
            &spread,
            XAxis::Linear,
        )
        .map_err(StageError::Failed)?,
        "Per-dimension std of the L2-normalised embeddings (and projections) of a fixed monitor set; it falls towards 0 when the representation collapses, and is about 1/sqrt(d) when spread out.".into(),
    ));
    out.push((
        "rank",
        plot::line_chart(
            "Effective rank",
            "epoch",
            "effective rank",
            &[series("effective rank", at(&|r| r.effective_rank))],
            XAxis::Linear,
        )
        .map_err(StageError::Failed)?,
        "Effective rank of the monitor embeddings (exp of the entropy of the normalised singular values); 1 means the embeddings lie on a line.".into(),
    ));
    out.push((
        "align-uniform",
        plot::line_chart(
            "Alignment and uniformity",
            "epoch",
            "lower is better",
            &[
                series("alignment", at(&|r| r.alignment)),
                series("uniformity", at(&|r| r.uniformity)),
            ],
            XAxis::Linear,
        )
        .map_err(StageError::Failed)?,
        "Alignment: mean squared distance between two views' normalised embeddings. Uniformity: log E exp(-2|x-y|^2) over pairs of samples.".into(),
    ));
    out.push((
        "lr",
        plot::line_chart(
            "Learning rate",
            "epoch",
            "learning rate",
            &[series("lr", at(&|r| r.lr))],
            XAxis::Linear,
        )
        .map_err(StageError::Failed)?,
        "Learning rate at the end of each epoch (warmup and schedule).".into(),
    ));
    Ok(out)
}

/// Parses `<prefix><method>[@<p>%].accuracy` names into (series, percent) → value; the
/// untagged name is the 100 % point.
fn parse_fraction_metric(name: &str) -> Option<(String, f64)> {
    let head = name.strip_suffix(".accuracy")?;
    let (series, pct) = match head.rsplit_once('@') {
        Some((s, p)) => (s, p.strip_suffix('%')?.parse::<f64>().ok()?),
        None => (head, 100.0),
    };
    let method = series.rsplit('.').next()?;
    matches!(method, "linear" | "knn" | "supervised").then(|| (series.to_string(), pct))
}

fn series_title(s: &str) -> String {
    match s {
        "linear" => "linear probe".into(),
        "knn" => "kNN probe".into(),
        "baseline.linear" => "linear, random init".into(),
        "baseline.knn" => "kNN, random init".into(),
        "supervised" => "supervised from scratch".into(),
        other => other.into(),
    }
}

fn label_efficiency(m: &BTreeMap<String, f64>) -> Option<(Result<Svg, String>, String)> {
    let mut by: BTreeMap<String, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for (k, v) in m {
        if let Some((s, pct)) = parse_fraction_metric(k) {
            let std_key = format!("{k}_std");
            let std = m.get(&std_key).copied().unwrap_or(0.0);
            by.entry(s)
                .or_default()
                .insert((pct * 1000.0).round() as u64, (*v, std));
        }
    }
    let fractions: std::collections::BTreeSet<u64> =
        by.values().flat_map(|p| p.keys().copied()).collect();
    if fractions.len() < 2 {
        return None;
    }
    let order = [
        "linear",
        "knn",
        "baseline.linear",
        "baseline.knn",
        "supervised",
    ];
    let mut names: Vec<&String> = by.keys().collect();
    names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(order.len()));
    let series: Vec<Series> = names
        .iter()
        .map(|n| {
            let pts = &by[*n];
            Series {
                name: series_title(n),
                points: pts.iter().map(|(p, v)| (*p as f64 / 1000.0, v.0)).collect(),
                errors: Some(pts.values().map(|v| v.1).collect()),
            }
        })
        .collect();
    let ticks: Vec<(f64, String)> = fractions
        .iter()
        .map(|p| {
            let pct = *p as f64 / 1000.0;
            (pct, format!("{}%", trim_number(pct)))
        })
        .collect();
    let svg = plot::line_chart(
        "Label efficiency",
        "labelled training samples used (log scale)",
        "test accuracy",
        &series,
        XAxis::Log(ticks),
    );
    let caption = "Test accuracy against the fraction of train labels used (class-balanced subsets; mean ± std over the seeds below 100 %).".to_string();
    Some((svg, caption))
}

fn trim_number(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

fn value_text(v: Option<f64>) -> String {
    match v {
        None => "missing".into(),
        Some(v) if v.is_nan() => "NaN".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1e4 || (v != 0.0 && v.abs() < 1e-3) => format!("{v:.4e}"),
        Some(v) => format!("{v:.4}"),
    }
}

fn verdict_text(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "pass",
        Some(false) => "FAIL",
        None => "",
    }
}

/// The HTML id of the figure drawn into `file` (`plots/ssl-loss.svg` → `fig-ssl-loss`).
fn figure_id(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    format!("fig-{stem}")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Markdown table cell: pipes escaped.
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// `code` spans in captions become <code> in HTML.
fn html_caption(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in html_escape(s).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn gate_summary(sections: &[Section]) -> (usize, Vec<(String, String, String, String)>) {
    let mut total = 0;
    let mut failed = Vec::new();
    for s in sections {
        for r in &s.rows {
            if let Some(ok) = r.verdict {
                total += 1;
                if !ok {
                    failed.push((
                        s.stage.clone(),
                        r.metric.clone(),
                        r.bound.clone().unwrap_or_default(),
                        value_text(r.value),
                    ));
                }
            }
        }
    }
    (total, failed)
}

const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}\
.kind{font-size:.7em;color:#666;font-weight:normal;background:#f0f0f0;border-radius:4px;padding:.1em .4em;margin-left:.4em}\
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}\
th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.pass{color:#0a7d32;font-weight:600}.fail{color:#b00020;font-weight:700}\
.banner{padding:.6em 1em;border-radius:6px;margin:1em 0}.banner.ok{background:#e7f6ec}.banner.bad{background:#fdecee}\
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top;max-width:100%}figure img,figure svg{display:block;max-width:100%;height:auto;border:1px solid #eee}figcaption{max-width:640px}\
figcaption{font-size:.9em;color:#444}nav a{margin-right:1em}code{background:#f4f4f4;padding:0 .2em;border-radius:3px}";

fn render_html(cfg: &ReportConfig, sections: &[Section]) -> String {
    let mut h = String::new();
    let title = html_escape(&cfg.title);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title} — pretext report</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n<p>pretext {} report of {} stage(s). Every number below comes from the stages' committed artifacts; timings are in the run log (<code>pretext show</code>).</p>\n",
        env!("CARGO_PKG_VERSION"),
        sections.len()
    );
    let (total, failed) = gate_summary(sections);
    if total == 0 {
        h.push_str("<div class=\"banner ok\">No <code>expect</code> gates are declared on these stages.</div>\n");
    } else if failed.is_empty() {
        let _ = writeln!(
            h,
            "<div class=\"banner ok\"><span class=\"pass\">All {total} <code>expect</code> gate(s) passed.</span></div>"
        );
    } else {
        let _ = write!(
            h,
            "<div class=\"banner bad\"><span class=\"fail\">{} of {total} <code>expect</code> gate(s) failed:</span><ul>",
            failed.len()
        );
        for (stage, metric, bound, value) in &failed {
            let _ = write!(
                h,
                "<li><code>{}</code> · <code>{}</code>: expected {}, got {}</li>",
                html_escape(stage),
                html_escape(metric),
                html_escape(bound),
                html_escape(value)
            );
        }
        h.push_str("</ul></div>\n");
    }
    h.push_str("<nav>");
    for s in sections {
        let _ = write!(h, "<a href=\"#stage-{0}\">{0}</a>", html_escape(&s.stage));
    }
    h.push_str("</nav>\n");
    for s in sections {
        let _ = writeln!(
            h,
            "<h2 id=\"stage-{0}\">{0}<span class=\"kind\">{1}</span></h2>",
            html_escape(&s.stage),
            s.kind.as_str()
        );
        for f in &s.figures {
            match &f.inline {
                Some(svg) => {
                    let _ = writeln!(
                        h,
                        "<figure id=\"{}\">\n{}<figcaption>{}</figcaption></figure>",
                        html_escape(&figure_id(&f.file)),
                        svg,
                        html_caption(&f.caption)
                    );
                }
                None => {
                    let _ = writeln!(
                        h,
                        "<figure id=\"{}\"><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
                        html_escape(&figure_id(&f.file)),
                        html_escape(&f.file),
                        html_escape(&f.alt),
                        html_caption(&f.caption)
                    );
                }
            }
        }
        if !s.findings.is_empty() {
            h.push_str("<table>\n<tr><th>finding</th><th>count</th><th>first examples</th></tr>\n");
            for (what, n, ex) in &s.findings {
                let class = if *n > 0 { " class=\"fail\"" } else { "" };
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td class=\"num\"><span{class}>{n}</span></td><td>{}</td></tr>",
                    html_escape(what),
                    html_escape(ex)
                );
            }
            h.push_str("</table>\n");
        }
        for n in &s.notes {
            let _ = writeln!(h, "<p>{}</p>", html_caption(n));
        }
        if s.rows.is_empty() {
            h.push_str("<p>This stage reports no metrics.</p>\n");
            continue;
        }
        h.push_str(
            "<table>\n<tr><th>metric</th><th>value</th><th>expect</th><th>verdict</th></tr>\n",
        );
        for r in &s.rows {
            let class = match r.verdict {
                Some(true) => " class=\"pass\"",
                Some(false) => " class=\"fail\"",
                None => "",
            };
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td><td{class}>{}</td></tr>",
                html_escape(&r.metric),
                value_text(r.value),
                html_escape(r.bound.as_deref().unwrap_or("")),
                verdict_text(r.verdict)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn render_markdown(cfg: &ReportConfig, sections: &[Section]) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# {}\n", cfg.title);
    let _ = writeln!(
        m,
        "pretext {} report of {} stage(s). Timings are in the run log (`pretext show`).\n",
        env!("CARGO_PKG_VERSION"),
        sections.len()
    );
    let (total, failed) = gate_summary(sections);
    if total == 0 {
        m.push_str("No `expect` gates are declared on these stages.\n\n");
    } else if failed.is_empty() {
        let _ = writeln!(m, "**All {total} `expect` gate(s) passed.**\n");
    } else {
        let _ = writeln!(
            m,
            "**{} of {total} `expect` gate(s) failed:**\n",
            failed.len()
        );
        for (stage, metric, bound, value) in &failed {
            let _ = writeln!(m, "- `{stage}` · `{metric}`: expected {bound}, got {value}");
        }
        m.push('\n');
    }
    for s in sections {
        let _ = writeln!(m, "## {} ({})\n", s.stage, s.kind.as_str());
        for f in &s.figures {
            let _ = writeln!(m, "![{}]({})\n\n{}\n", f.alt, f.file, f.caption);
        }
        if !s.findings.is_empty() {
            m.push_str("| finding | count | first examples |\n|---|---:|---|\n");
            for (what, n, ex) in &s.findings {
                let _ = writeln!(m, "| {} | {n} | {} |", md_cell(what), md_cell(ex));
            }
            m.push('\n');
        }
        for n in &s.notes {
            let _ = writeln!(m, "{n}\n");
        }
        if s.rows.is_empty() {
            m.push_str("This stage reports no metrics.\n\n");
            continue;
        }
        m.push_str("| metric | value | expect | verdict |\n|---|---:|---|---|\n");
        for r in &s.rows {
            let _ = writeln!(
                m,
                "| `{}` | {} | {} | {} |",
                md_cell(&r.metric),
                value_text(r.value),
                md_cell(r.bound.as_deref().unwrap_or("")),
                verdict_text(r.verdict)
            );
        }
        m.push('\n');
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_metrics_parse_into_series_and_percentages() {
        assert_eq!(
            parse_fraction_metric("linear@1%.accuracy"),
            Some(("linear".into(), 1.0))
        );
        assert_eq!(
            parse_fraction_metric("baseline.knn@10%.accuracy"),
            Some(("baseline.knn".into(), 10.0))
        );
        assert_eq!(
            parse_fraction_metric("linear.accuracy"),
            Some(("linear".into(), 100.0))
        );
        assert_eq!(
            parse_fraction_metric("supervised@0.5%.accuracy"),
            Some(("supervised".into(), 0.5))
        );
        assert_eq!(parse_fraction_metric("linear.train_accuracy"), None);
        assert_eq!(parse_fraction_metric("linear@1%.accuracy_std"), None);
        assert_eq!(parse_fraction_metric("ood.knn.auroc"), None);
    }

    #[test]
    fn the_curve_needs_two_fractions_and_carries_the_std_as_error_bars() {
        let mut m = BTreeMap::new();
        m.insert("linear.accuracy".to_string(), 0.9);
        assert!(label_efficiency(&m).is_none());
        m.insert("linear@1%.accuracy".to_string(), 0.6);
        m.insert("linear@1%.accuracy_std".to_string(), 0.05);
        let (svg, _) = label_efficiency(&m).unwrap();
        let svg = svg.unwrap();
        // The two fractions as the x ticks, one curve through both points.
        for tick in [
            "\n1%\n</text>",
            "\n100%\n</text>",
            "\nLabel efficiency\n</text>",
        ] {
            assert!(svg.text.contains(tick), "no {tick:?} in\n{}", svg.text);
        }
        let curve = |width: &str| {
            svg.text
                .lines()
                .filter(|l| l.starts_with("<polyline") && l.contains("stroke=\"#0072B2\""))
                .filter(|l| l.contains(&format!("stroke-width=\"{width}\"")))
                .count()
        };
        assert_eq!(curve("2"), 1);
        // The 1 % point's ± 0.05 is drawn as an error bar (a vertical line and two caps).
        assert_eq!(curve("1"), 3);
    }

    #[test]
    fn values_and_text_are_formatted_for_reading() {
        assert_eq!(value_text(Some(3.0)), "3");
        assert_eq!(value_text(Some(0.96875)), "0.9688");
        assert_eq!(value_text(Some(1.5e-5)), "1.5000e-5");
        assert_eq!(value_text(Some(f64::NAN)), "NaN");
        assert_eq!(value_text(None), "missing");
        assert_eq!(html_caption("a `b` <c>"), "a <code>b</code> &lt;c&gt;");
        assert_eq!(md_cell("a|b"), "a\\|b");
        assert_eq!(trim_number(10.0), "10");
        assert_eq!(trim_number(0.5), "0.5");
        assert_eq!(figure_id("plots/ssl-loss.svg"), "fig-ssl-loss");
        assert_eq!(figure_id("plots/views-preview.png"), "fig-views-preview");
    }
}
