//! End-to-end tests of the data stages through the binary: ingesting an image folder, parquet
//! and CSV files (unreadable records failing with exit code 2, or skipped and counted), the
//! curate stage's audit, drops and `fail_if` (exit code 1), a curated dataset feeding the
//! training stages, and a feature-vector dataset refused by augment with a clear message.
//! The inputs are the committed fixtures under `tests/fixtures/data/` and the embedded MNIST.

use std::path::{Path, PathBuf};

use crate::support::{
    entries, mnist, pretext, read_json, store, tempdir, toml_path, workspace, Tiny,
};

fn fixture(name: &str) -> PathBuf {
    workspace().join("tests/fixtures/data").join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a folder");
    for entry in std::fs::read_dir(from).expect("list a fixture folder") {
        let entry = entry.expect("a fixture entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a fixture file");
        }
    }
}

/// The only entry of a stage kind in the store of `dir`.
fn entry(dir: &Path, kind: &str) -> PathBuf {
    let found = entries(&store(dir), kind);
    assert_eq!(found.len(), 1, "one {kind} entry expected, found {found:?}");
    found[0].clone()
}

fn metric(m: &serde_json::Value, name: &str) -> f64 {
    m[name]
        .as_f64()
        .unwrap_or_else(|| panic!("no metric `{name}` in {m}"))
}

/// The fixture photos plus two exact copies (`cats/c1_copy.png`, `dogs/outdoor/d2_again.jpg`).
fn photos_with_copies(dir: &Path) -> PathBuf {
    let root = dir.join("photos");
    copy_dir(&fixture("photos"), &root);
    std::fs::copy(root.join("cats/c1.png"), root.join("cats/c1_copy.png")).unwrap();
    std::fs::copy(
        root.join("dogs/d2.jpg"),
        root.join("dogs/outdoor/d2_again.jpg"),
    )
    .unwrap();
    root
}

fn folder_pipeline(root: &Path, ingest_extra: &str, curate_extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "photos"
seed = 7

[stages.data]
kind = "ingest"
source = {{ format = "image_folder", path = {root}, labels = "folders" }}
resize = [16, 16]
color = "rgb"
{ingest_extra}

[stages.clean]
kind = "curate"
input = "data"
{curate_extra}
"#,
        root = toml_path(root)
    )
}

#[test]
fn image_folder_ingest_and_curate_audit() {
    let dir = tempdir();
    let root = photos_with_copies(dir.path());
    let file = dir.path().join("pipeline.toml");
    std::fs::write(&file, folder_pipeline(&root, "on_error = \"skip\"", "")).unwrap();
    let run = pretext(dir.path(), &["run", &file.display().to_string()]);
    run.expect_code(0)
        .expect_stderr_has(&["skipped an unreadable record", "corrupt.png"]);

    let ingest = entry(dir.path(), "ingest");
    let m = read_json(&ingest.join("metrics.json"));
    // 8 readable fixture images + 2 copies; the corrupt PNG skipped, README.txt ignored.
    assert_eq!(metric(&m, "samples"), 10.0, "{m}");
    assert_eq!(metric(&m, "skipped"), 1.0);
    assert_eq!(metric(&m, "ignored"), 1.0);
    assert_eq!(metric(&m, "classes"), 2.0);
    assert_eq!(metric(&m, "train") + metric(&m, "test"), 10.0);
    let skipped = read_json(&ingest.join("skipped.json"));
    let at = skipped["skipped"][0]["at"].as_str().unwrap();
    assert!(at.ends_with("dogs/corrupt.png"), "{skipped}");
    assert!(skipped["skipped"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("corrupt or truncated PNG"));
    assert_eq!(skipped["ignored"], serde_json::json!(["README.txt"]));

    let curate = entry(dir.path(), "curate");
    let m = read_json(&curate.join("metrics.json"));
    assert_eq!(metric(&m, "samples"), 10.0);
    assert_eq!(metric(&m, "blank"), 1.0, "{m}");
    assert_eq!(metric(&m, "tiny"), 1.0, "{m}");
    assert_eq!(metric(&m, "near_duplicate_pairs"), 0.0, "{m}");
    // Each copy is a duplicate within its split or a train/test leak, by the seeded split.
    assert_eq!(
        metric(&m, "duplicates") + metric(&m, "leaked_pairs"),
        2.0,
        "{m}"
    );
    // Default drops: one row per copy (the copy, or the train side of a leak).
    assert_eq!((metric(&m, "dropped"), metric(&m, "kept")), (2.0, 8.0));
    assert_eq!(metric(&m, "class_imbalance"), 1.0);

    let audit = read_json(&curate.join("audit.json"));
    assert_eq!(
        audit["quality"]["blank"]["listed"][0]["path"],
        "cats/blank.png"
    );
    assert_eq!(
        audit["quality"]["tiny"]["listed"][0]["path"],
        "dogs/outdoor/tiny.png"
    );
    let mut copies: Vec<(String, String)> = Vec::new();
    for p in audit["duplicates"]["listed"].as_array().unwrap() {
        copies.push((
            p["keep"]["path"].as_str().unwrap().into(),
            p["copy"]["path"].as_str().unwrap().into(),
        ));
    }
    for p in audit["leakage"]["pairs"]["listed"].as_array().unwrap() {
        let (a, b) = (
            p["train"]["path"].as_str().unwrap().to_string(),
            p["test"]["path"].as_str().unwrap().to_string(),
        );
        copies.push(if a < b { (a, b) } else { (b, a) });
    }
    copies.sort();
    assert_eq!(
        copies,
        [
            ("cats/c1.png".to_string(), "cats/c1_copy.png".to_string()),
            (
                "dogs/d2.jpg".to_string(),
                "dogs/outdoor/d2_again.jpg".to_string()
            )
        ],
        "{audit}"
    );
    let folders: Vec<&str> = audit["metadata"]["folder"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_str().unwrap())
        .collect();
    let mut sorted = folders.clone();
    sorted.sort();
    assert_eq!(sorted, ["cats", "cats/indoor", "dogs", "dogs/outdoor"]);
    let classes = audit["classes"]["counts"].as_array().unwrap();
    assert_eq!(
        (classes[0]["name"].as_str(), classes[0]["total"].as_u64()),
        (Some("cats"), Some(5))
    );
    assert_eq!(
        (classes[1]["name"].as_str(), classes[1]["total"].as_u64()),
        (Some("dogs"), Some(5))
    );
    assert!(curate.join("dataset.parquet").is_file());

    // Cached on a second run.
    let again = pretext(dir.path(), &["run", &file.display().to_string()]);
    again.expect_code(0).expect_stdout_has(&["cached"]);
}

#[test]
fn unreadable_records_fail_ingest_with_exit_2_by_default() {
    let dir = tempdir();
    let root = dir.path().join("photos");
    copy_dir(&fixture("photos"), &root);
    let file = dir.path().join("pipeline.toml");
    std::fs::write(&file, folder_pipeline(&root, "", "")).unwrap();
    pretext(dir.path(), &["run", &file.display().to_string()])
        .expect_code(2)
        .expect_stderr_has(&[
            "stage `data`",
            &root.join("dogs/corrupt.png").display().to_string(),
            "corrupt or truncated PNG",
            "on_error = \"skip\"",
        ]);
    assert!(entries(&store(dir.path()), "ingest").is_empty());
}

#[test]
fn curate_fail_if_exits_1_naming_the_check_bound_and_value() {
    let dir = tempdir();
    let root = photos_with_copies(dir.path());
    let file = dir.path().join("pipeline.toml");
    std::fs::write(
        &file,
        folder_pipeline(
            &root,
            "on_error = \"skip\"",
            "fail_if = { blank = 0, tiny = 1 }",
        ),
    )
    .unwrap();
    let run = pretext(dir.path(), &["run", &file.display().to_string()]);
    run.expect_code(1).expect_stderr_has(&[
        "stage `clean` failed: curation check failed: `blank` = 1 is above the bound 0 (fail_if)",
        "the audit is in ",
    ]);
    assert!(
        !run.stderr.contains("`tiny`"),
        "tiny = 1 is within its bound\n{}",
        run.describe()
    );
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("the audit is in "))
        .unwrap();
    let path = line.split("the audit is in ").nth(1).unwrap().trim();
    let audit = read_json(Path::new(path));
    assert_eq!(audit["checks"][0]["metric"], "blank");
    assert_eq!(audit["checks"][0]["failed"], true);
    assert!(entries(&store(dir.path()), "curate").is_empty());
    assert_eq!(entries(&store(dir.path()), "ingest").len(), 1);
}

#[test]
fn parquet_and_csv_sources_through_the_binary() {
    let dir = tempdir();
    let file = dir.path().join("pipeline.toml");
    std::fs::write(
        &file,
        format!(
            r#"[pipeline]
name = "tables"
seed = 7

[stages.images]
kind = "ingest"
source = {{ format = "parquet", path = {images}, image = "image_struct", label = "species", meta = ["camera"] }}
on_error = "skip"
resize = [6, 6]

[stages.vectors]
kind = "ingest"
source = {{ format = "parquet", path = {vectors}, features = "embedding", label = "label", meta = ["site"] }}
on_error = "skip"
split = {{ train = 0.5 }}

[stages.table]
kind = "ingest"
source = {{ format = "csv", path = {csv}, label = "species", meta = ["site"] }}
on_error = "skip"
split = {{ train = 0.5 }}

[stages.audit]
kind = "curate"
input = "vectors"
metadata = ["site"]
drop = []
"#,
            images = toml_path(&fixture("images_snappy.parquet")),
            vectors = toml_path(&fixture("features_zstd.parquet")),
            csv = toml_path(&fixture("tabular.csv")),
        ),
    )
    .unwrap();
    let run = pretext(dir.path(), &["run", &file.display().to_string()]);
    run.expect_code(0);
    let mut skipped: Vec<(f64, f64)> = entries(&store(dir.path()), "ingest")
        .iter()
        .map(|e| {
            let m = read_json(&e.join("metrics.json"));
            (metric(&m, "samples"), metric(&m, "skipped"))
        })
        .collect();
    skipped.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // CSV 4 + 3 skipped, vectors 4 + 3 skipped, images 5 + 1 skipped.
    assert_eq!(skipped, [(4.0, 3.0), (4.0, 3.0), (5.0, 1.0)]);
    let curate = entry(dir.path(), "curate");
    let m = read_json(&curate.join("metrics.json"));
    assert_eq!((metric(&m, "samples"), metric(&m, "kept")), (4.0, 4.0));
    assert_eq!(metric(&m, "classes"), 3.0);
    let audit = read_json(&curate.join("audit.json"));
    assert_eq!(
        audit["layout"],
        serde_json::json!({"kind": "features", "dim": 3})
    );
    assert_eq!(audit["metadata"]["site"]["distinct"], 3);
}

#[test]
fn feature_vectors_into_augment_are_a_clear_input_error() {
    let dir = tempdir();
    let file = dir.path().join("pipeline.toml");
    std::fs::write(
        &file,
        format!(
            r#"[pipeline]
name = "tabular"
seed = 7

[stages.data]
kind = "ingest"
source = {{ format = "parquet", path = {path}, features = ["a", "b", "c"], label = "kind" }}

[stages.views]
kind = "augment"
input = "data"
views = [["random_resized_crop"], ["random_resized_crop"]]
"#,
            path = toml_path(&fixture("tabular_pandas.parquet")),
        ),
    )
    .unwrap();
    // Refused when the pipeline is checked, before anything runs.
    for command in ["validate", "run"] {
        pretext(dir.path(), &[command, &file.display().to_string()])
            .expect_code(2)
            .expect_stderr_has(&[
                "stage `views` augments the data of `data`, which reads feature vectors (format = \"parquet\")",
                "augmentations work on images and text",
            ]);
    }
    assert!(entries(&store(dir.path()), "ingest").is_empty());
}

/// The tiny training pipeline with a curate stage between ingest and the stages that read
/// the data: the curated dataset feeds augment, pretraining and the probes.
#[test]
fn curated_mnist_feeds_the_training_stages() {
    let dir = tempdir();
    let tiny = Tiny {
        name: "curated".into(),
        ..Tiny::default()
    };
    let text = tiny
        .toml()
        .replace("input = \"data\"", "input = \"clean\"")
        .replace("data = \"data\"", "data = \"clean\"")
        .replace(
            "[stages.views]",
            "[stages.clean]\nkind = \"curate\"\ninput = \"data\"\nexpect = { kept = { min = 590 } }\n\n[stages.views]",
        );
    let file = dir.path().join("pipeline.toml");
    std::fs::write(&file, text).unwrap();
    pretext(dir.path(), &["run", &file.display().to_string()]).expect_code(0);
    let m = read_json(&entry(dir.path(), "curate").join("metrics.json"));
    // 600 distinct MNIST digits: nothing to report, nothing dropped.
    for name in [
        "duplicates",
        "near_duplicate_pairs",
        "blank",
        "dark",
        "bright",
        "leakage",
        "dropped",
    ] {
        assert_eq!(metric(&m, name), 0.0, "{name}: {m}");
    }
    let probe = read_json(&entry(dir.path(), "probe").join("metrics.json"));
    assert!(metric(&probe, "knn.accuracy") > 0.5, "{probe}");
}

/// The whole embedded MNIST test split (10,000 digits) has no duplicates, near duplicates,
/// quality problems or leakage at the default settings: no false positives on real data.
#[test]
fn curate_finds_nothing_in_clean_mnist() {
    let dir = tempdir();
    let (images, labels) = mnist();
    let file = dir.path().join("pipeline.toml");
    std::fs::write(
        &file,
        format!(
            r#"[pipeline]
name = "mnist"

[stages.data]
kind = "ingest"
source = {{ format = "idx", images = {images}, labels = {labels} }}

[stages.clean]
kind = "curate"
input = "data"
fail_if = {{ duplicates = 0, near_duplicate_pairs = 0, blank = 0, dark = 0, bright = 0, leakage = 0 }}
"#,
            images = toml_path(&images),
            labels = toml_path(&labels),
        ),
    )
    .unwrap();
    pretext(dir.path(), &["run", &file.display().to_string()]).expect_code(0);
    let m = read_json(&entry(dir.path(), "curate").join("metrics.json"));
    assert_eq!(
        (metric(&m, "samples"), metric(&m, "kept")),
        (10000.0, 10000.0)
    );
    assert!(metric(&m, "class_imbalance") < 1.3, "{m}");
}

/// The report's curate section: the findings table names the flagged files, and the class
/// balance is drawn.
#[test]
fn report_shows_the_curate_audit() {
    let dir = tempdir();
    let root = photos_with_copies(dir.path());
    let file = dir.path().join("pipeline.toml");
    let text = folder_pipeline(&root, "on_error = \"skip\"", "")
        + "\n[stages.summary]\nkind = \"report\"\ninputs = [\"clean\"]\n";
    std::fs::write(&file, text).unwrap();
    pretext(dir.path(), &["run", &file.display().to_string()]).expect_code(0);
    let report = entry(dir.path(), "report");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("| blank images | 1 | #") && md.contains("(cats/blank.png) |"),
        "{md}"
    );
    assert!(md.contains("| tiny images | 1 |") && md.contains("(dogs/outdoor/tiny.png)"));
    assert!(
        md.contains("| dropped from the curated dataset | 2 |"),
        "{md}"
    );
    assert!(md.contains("](plots/clean-classes.svg)"));
    assert!(report.join("plots/clean-classes.svg").is_file());
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("<th>finding</th>"));
}
