//! The report stage, end to end: every stage kind it draws from, the files and figures it
//! writes, a failed gate shown on the page, and caching (gates re-render only the report).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::{pretext, tempdir, toml_path, workspace, Tiny};

/// Width and height from a PNG's IHDR chunk (after checking the signature).
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        b.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&b[12..16], b"IHDR");
    let be = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
    (be(&b[16..20]), be(&b[20..24]))
}

/// Width and height from an SVG's root `<svg width=".." height="..">` tag.
fn svg_size(path: &Path) -> (u32, u32) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.starts_with("<svg "),
        "{} is not an SVG",
        path.display()
    );
    assert!(
        text.trim_end().ends_with("</svg>"),
        "{} is cut short",
        path.display()
    );
    let root = &text[..text.find('>').unwrap()];
    let attr = |k: &str| -> u32 {
        let at = root.find(&format!(" {k}=\"")).unwrap() + k.len() + 3;
        root[at..].split('"').next().unwrap().parse().unwrap()
    };
    (attr("width"), attr("height"))
}

/// Every file the report stage wrote into its store entry, by path inside it (not the store's
/// own `entry.json`, which records when the entry was made).
fn entry_files(entry: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir(entry)
        .into_iter()
        .filter(|p| !p.ends_with("entry.json"))
        .map(|p| {
            let rel = p.strip_prefix(entry).unwrap().display().to_string();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn pipeline(gate: &str) -> String {
    let ws = workspace();
    let mut text = Tiny::default()
        .toml()
        .replace(
            "linear = { epochs = 5 }\n",
            "linear = { epochs = 5 }\nlabel_fractions = [0.1, 1.0]\nseeds = 2\nsupervised = { epochs = 2 }\n",
        );
    text.push_str(&format!(
        r#"expect = {{ "knn.accuracy" = {gate} }}

[stages.fashion]
kind = "ingest"
source = {{ format = "idx", images = {}, labels = {} }}
limit = 300

[stages.ood]
kind = "ood_eval"
encoder = "ssl"
data = "data"
ood = "fashion"
corruptions = ["gaussian_noise", "contrast"]
severities = [1, 3, 5]
linear = {{ epochs = 5 }}

[stages.summary]
kind = "report"
title = "Tiny <SimCLR> & friends"
"#,
        toml_path(&ws.join("datasets/fashion-mnist/t10k-2000-images-idx3-ubyte.gz")),
        toml_path(&ws.join("datasets/fashion-mnist/t10k-2000-labels-idx1-ubyte.gz")),
    ));
    text
}

#[test]
fn report_renders_every_stage_with_figures_and_gate_verdicts() {
    let dir = tempdir();
    let p = dir.path().join("pipeline.toml");
    // A gate that cannot hold: the run exits 1, and the report still shows it.
    std::fs::write(&p, pipeline("{ min = 1.5 }")).unwrap();
    let ps = p.display().to_string();
    let run = pretext(dir.path(), &["run", &ps]);
    run.expect_code(1)
        .expect_stderr_has(&["expected `knn.accuracy` >= 1.5"]);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("report `summary`: "))
        .unwrap_or_else(|| panic!("no report line\n{}", run.describe()));
    let html_path = PathBuf::from(line.trim_start_matches("report `summary`: "));
    assert!(html_path.ends_with("report.html"), "{line}");
    let entry = html_path.parent().unwrap().to_path_buf();
    let html = std::fs::read_to_string(&html_path).unwrap();
    let md = std::fs::read_to_string(entry.join("report.md")).unwrap();

    // Title escaped; one section per non-report stage, in file order.
    assert!(html.contains("<h1>Tiny &lt;SimCLR&gt; &amp; friends</h1>"));
    let mut at = 0;
    for stage in ["data", "views", "ssl", "eval", "fashion", "ood"] {
        let anchor = format!("<h2 id=\"stage-{stage}\">");
        let pos = html
            .find(&anchor)
            .unwrap_or_else(|| panic!("no section for {stage}"));
        assert!(pos > at, "section {stage} out of order");
        at = pos;
        assert!(
            md.contains(&format!("## {stage} (")),
            "markdown lacks {stage}"
        );
    }
    assert!(!html.contains("id=\"stage-summary\""));

    // The failed gate: in the banner and in its table row, in both formats.
    assert!(
        html.contains("1 of 1 <code>expect</code> gate(s) failed"),
        "{html}"
    );
    assert!(html.contains("<code>eval</code> · <code>knn.accuracy</code>: expected ≥ 1.5"));
    assert!(html.contains("<td class=\"fail\">FAIL</td>"));
    assert!(md.contains("**1 of 1 `expect` gate(s) failed:**"));
    assert!(md.contains("| `knn.accuracy` |") && md.contains("| ≥ 1.5 | FAIL |"));

    // Every chart is an SVG in plots/, inlined in the page (its text is text there) and
    // linked from the markdown; the augmentation preview is a PNG both link.
    for want in [
        "plots/ssl-loss.svg",
        "plots/ssl-spread.svg",
        "plots/ssl-rank.svg",
        "plots/ssl-align-uniform.svg",
        "plots/ssl-lr.svg",
        "plots/eval-label-efficiency.svg",
        "plots/ood-ood-knn.svg",
        "plots/ood-ood-mahalanobis.svg",
        "plots/ood-ood-max_softmax.svg",
        "plots/ood-corruptions.svg",
    ] {
        let (w, h) = svg_size(&entry.join(want));
        assert!(w >= 100 && h >= 40, "{want}: {w}x{h}");
        let svg = std::fs::read_to_string(entry.join(want)).unwrap();
        assert!(html.contains(&svg), "{want} is not inlined in the page");
        assert!(md.contains(&format!("]({want})")), "{want} not in markdown");
    }
    let preview = "plots/views-preview.png";
    assert!(
        html.contains(&format!("<img src=\"{preview}\"")),
        "{preview} not linked"
    );
    assert!(
        md.contains(&format!("]({preview})")),
        "{preview} not in markdown"
    );
    let (w, h) = png_size(&entry.join(preview));
    assert!(w >= 100 && h >= 40, "{preview}: {w}x{h}");
    assert_eq!(svg_size(&entry.join("plots/ssl-loss.svg")), (640, 400));
    for title in ["Pretraining loss", "Label efficiency", "OOD score: knn"] {
        assert!(
            html.contains(&format!("\n{title}\n</text>")),
            "no title text {title:?}"
        );
    }
    // The heat map has one row per corruption and a column per severity, each cell labelled.
    let (hw, _) = svg_size(&entry.join("plots/ood-corruptions.svg"));
    assert!(hw >= 3 * 64, "{hw}");
    let heat = std::fs::read_to_string(entry.join("plots/ood-corruptions.svg")).unwrap();
    for label in ["gaussian_noise", "contrast", "severity"] {
        assert!(
            heat.contains(&format!("\n{label}\n</text>")),
            "no {label:?} in the heat map"
        );
    }
    let cells = heat
        .lines()
        .filter(|l| l.len() == 5 && l.starts_with("0.") || *l == "1.000")
        .count();
    assert_eq!(cells, 2 * 3, "{heat}");

    // Rendered again from the same inputs (a fresh process), the report is byte-identical.
    let first = entry_files(&entry);
    assert!(first.contains_key("report.html") && first.contains_key("plots/ssl-loss.svg"));
    std::fs::remove_dir_all(&entry).unwrap();
    pretext(dir.path(), &["run", &ps]).expect_code(1);
    assert_eq!(
        entry_files(&entry),
        first,
        "the re-rendered report differs from the first"
    );

    // Every metric of the probe is in its table, with its value as metrics.json has it.
    let show = pretext(dir.path(), &["show", "--json", &ps]);
    let log: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let eval = log["stages"]["eval"]["metrics"].as_object().unwrap();
    for (k, v) in eval {
        assert!(
            html.contains(&format!("<td><code>{k}</code></td>")),
            "metric {k} not in the report"
        );
        let v = v.as_f64().unwrap();
        if v.fract() != 0.0 && v.abs() < 1e4 && v.abs() >= 1e-3 {
            assert!(
                html.contains(&format!(">{v:.4}<")),
                "{k} = {v:.4} not shown"
            );
        }
    }
    let summary = &log["stages"]["summary"]["metrics"];
    assert_eq!(summary["report.stages"], 6.0);
    assert_eq!(summary["report.expectations"], 1.0);
    assert_eq!(summary["report.expectations_failed"], 1.0);
    assert_eq!(summary["report.figures"], 11.0);

    // Loosening the gate re-renders only the report: every other stage is reused.
    std::fs::write(&p, pipeline("{ min = 0.1 }")).unwrap();
    let plan = pretext(dir.path(), &["plan", &ps]);
    plan.expect_code(0);
    let will_run: Vec<&str> = plan
        .stdout
        .lines()
        .filter(|l| l.contains("will run"))
        .collect();
    assert_eq!(will_run.len(), 1, "{}", plan.stdout);
    assert!(will_run[0].contains("summary"), "{}", plan.stdout);
    let rerun = pretext(dir.path(), &["run", &ps]);
    rerun.expect_code(0);
    let html2 = std::fs::read_to_string(PathBuf::from(
        rerun
            .stdout
            .lines()
            .find(|l| l.starts_with("report `summary`: "))
            .unwrap()
            .trim_start_matches("report `summary`: "),
    ))
    .unwrap();
    assert!(html2.contains("All 1 <code>expect</code> gate(s) passed."));
    assert!(html2.contains("<td class=\"pass\">pass</td>"));
}

#[test]
fn report_inputs_choose_and_order_the_sections() {
    let dir = tempdir();
    let mut text = Tiny::default().toml();
    text.push_str("\n[stages.summary]\nkind = \"report\"\ninputs = [\"eval\", \"data\"]\n");
    let p = dir.path().join("pipeline.toml");
    std::fs::write(&p, &text).unwrap();
    let ps = p.display().to_string();
    let run = pretext(dir.path(), &["run", &ps]);
    run.expect_code(0);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("report `summary`: "))
        .unwrap();
    let html = std::fs::read_to_string(line.trim_start_matches("report `summary`: ")).unwrap();
    let (e, d) = (
        html.find("id=\"stage-eval\"").unwrap(),
        html.find("id=\"stage-data\"").unwrap(),
    );
    assert!(e < d);
    assert!(!html.contains("id=\"stage-ssl\""));
    assert!(html.contains("No <code>expect</code> gates are declared"));
    // The default title is the pipeline's name.
    assert!(html.contains("<h1>tiny</h1>"));

    // A repeated input and an unknown one are validation errors at the value.
    std::fs::write(
        &p,
        text.replace("[\"eval\", \"data\"]", "[\"eval\", \"eval\"]"),
    )
    .unwrap();
    pretext(dir.path(), &["validate", &ps])
        .expect_code(2)
        .expect_stderr_has(&["`inputs` names stage `eval` twice"]);
    std::fs::write(&p, text.replace("[\"eval\", \"data\"]", "[\"evl\"]")).unwrap();
    pretext(dir.path(), &["validate", &ps])
        .expect_code(2)
        .expect_stderr_has(&["refers to unknown stage `evl`", "eval"]);
}
