//! The tiny pipeline end to end: a first run executes every stage, writes `pretext.lock` and
//! one complete store entry per stage; `show` prints the stored metrics; `plan` then reports
//! every stage cached, and a second run executes nothing and leaves the lockfile unchanged.

use crate::support::{entries, expect_statuses, pending, pretext, show_statuses, store, tempdir};
use crate::support::{expected, Tiny};

#[test]
fn tiny_pipeline_runs_then_everything_is_cached() {
    let dir = tempdir();
    let pipeline = Tiny::default().write(dir.path());
    let p = pipeline.display().to_string();

    let first = pretext(dir.path(), &["run", &p]);
    first
        .expect_code(0)
        .expect_stdout_has(&["4 stage(s) ran, 0 cached", "pretext.lock"]);
    expect_statuses(
        &first,
        &[
            ("data", "ran"),
            ("views", "ran"),
            ("ssl", "ran"),
            ("eval", "ran"),
        ],
    );

    // The lockfile: beside the pipeline, one record per stage with its kind and outputs.
    let lock_path = dir.path().join("pretext.lock");
    let lock_text = std::fs::read_to_string(&lock_path).expect("run writes pretext.lock");
    let lock: serde_json::Value = serde_json::from_str(&lock_text).expect("pretext.lock is JSON");
    let lock = &lock["pipelines"]["tiny"];
    assert_eq!(lock["pipeline"], "tiny");
    let stages = lock["stages"]
        .as_object()
        .expect("`stages` in pretext.lock");
    let kinds: Vec<(&str, &str)> = stages
        .iter()
        .map(|(n, s)| (n.as_str(), s["kind"].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(
        kinds,
        [
            ("data", "ingest"),
            ("eval", "probe"),
            ("ssl", "pretrain"),
            ("views", "augment")
        ]
    );
    for (name, s) in stages {
        assert_eq!(
            s["key"].as_str().map(str::len),
            Some(64),
            "key of {name}: {s}"
        );
        assert!(
            s["outputs"]
                .as_object()
                .is_some_and(|o| o.contains_key("metrics.json")),
            "outputs of {name}: {s}"
        );
    }
    assert!(
        stages["ssl"]["plugins"].get("simclr").is_some(),
        "{lock_text}"
    );

    // The store: exactly one complete entry per stage kind, nothing left pending.
    let st = store(dir.path());
    for kind in ["ingest", "augment", "pretrain", "probe"] {
        assert_eq!(
            entries(&st, kind).len(),
            1,
            "entries of kind {kind} in {}",
            st.display()
        );
    }
    assert!(entries(&st, "pretrain")[0]
        .join("encoder.safetensors")
        .is_file());
    assert_eq!(pending(&st), Vec::<String>::new());

    // `show` prints the metrics the stages stored.
    let show = pretext(dir.path(), &["show", &p]);
    show.expect_code(0).expect_stdout_has(&[
        "[data]",
        "samples",
        "[ssl]",
        "loss",
        "[eval]",
        "linear.accuracy",
        "knn.accuracy",
        "baseline.linear.accuracy",
    ]);
    let probe_metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(entries(&st, "probe")[0].join("metrics.json")).unwrap(),
    )
    .unwrap();
    let accuracy = probe_metrics["linear.accuracy"]
        .as_f64()
        .expect("linear.accuracy");
    assert!((0.0..=1.0).contains(&accuracy), "{probe_metrics}");
    let line = show
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("linear.accuracy"))
        .expect("a linear.accuracy line in show");
    let shown: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(shown, accuracy, "show prints the stored metric");
    let samples = show
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("samples"))
        .expect("a samples line in show");
    assert!(samples.trim_end().ends_with(" 600"), "{samples}");

    // After a run, `plan` says every stage is cached.
    let plan = pretext(dir.path(), &["plan", &p]);
    plan.expect_code(0);
    let lines: Vec<&str> = plan.stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 4, "{}", plan.describe());
    for l in lines {
        assert!(l.trim_end().ends_with("cached"), "{l}\n{}", plan.describe());
    }

    // A second run executes nothing and keeps the lockfile as it was.
    let second = pretext(dir.path(), &["run", &p]);
    second
        .expect_code(0)
        .expect_stdout_has(&["0 stage(s) ran, 4 cached"]);
    expect_statuses(
        &second,
        &[
            ("data", "cached"),
            ("views", "cached"),
            ("ssl", "cached"),
            ("eval", "cached"),
        ],
    );
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), lock_text);
    assert_eq!(
        show_statuses(dir.path(), &pipeline),
        expected(&[
            ("data", "cached"),
            ("views", "cached"),
            ("ssl", "cached"),
            ("eval", "cached")
        ])
    );
    for kind in ["ingest", "augment", "pretrain", "probe"] {
        assert_eq!(
            entries(&st, kind).len(),
            1,
            "a cached run adds no entries ({kind})"
        );
    }

    // Every entry digests as recorded.
    pretext(dir.path(), &["store", "verify", &p])
        .expect_code(0)
        .expect_stdout_has(&["4 entries ok, 0 corrupt"]);
}
