//! The report stage, end to end: every stage kind it draws from, the files and figures it
//! writes, a failed gate shown on the page, and caching (gates re-render only the report).

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

    // Every figure the page links exists and is a real PNG; the expected ones are there.
    let mut linked = Vec::new();
    for part in html.split("<img src=\"").skip(1) {
        linked.push(part.split('"').next().unwrap().to_string());
    }
    for want in [
        "plots/ssl-loss.png",
        "plots/ssl-spread.png",
        "plots/ssl-rank.png",
        "plots/ssl-align-uniform.png",
        "plots/ssl-lr.png",
        "plots/eval-label-efficiency.png",
        "plots/ood-ood-knn.png",
        "plots/ood-ood-mahalanobis.png",
        "plots/ood-ood-max_softmax.png",
        "plots/ood-corruptions.png",
        "plots/views-preview.png",
    ] {
        assert!(
            linked.iter().any(|l| l == want),
            "{want} not linked: {linked:?}"
        );
        assert!(md.contains(&format!("]({want})")), "{want} not in markdown");
    }
    for l in &linked {
        let (w, h) = png_size(&entry.join(l));
        assert!(w >= 100 && h >= 40, "{l}: {w}x{h}");
    }
    assert_eq!(png_size(&entry.join("plots/ssl-loss.png")), (640, 400));
    // The heat map has one row per corruption and a column per severity.
    let (hw, _) = png_size(&entry.join("plots/ood-corruptions.png"));
    assert!(hw >= 3 * 64, "{hw}");

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
