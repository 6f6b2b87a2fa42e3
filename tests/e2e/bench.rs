//! `pretext bench`: times real training steps of a pretrain stage, runs what it reads, stores
//! nothing of the benchmarked stage, and refuses bad flags with exit code 2.

use crate::support::{entries, expect_statuses, pretext, store, tempdir, Tiny};

#[test]
fn bench_times_a_pretrain_stage_and_stores_nothing_of_it() {
    let dir = tempdir();
    let p = Tiny::default().write(dir.path());
    let p = p.display().to_string();
    let json = dir.path().join("bench.json");
    let run = pretext(
        dir.path(),
        &[
            "bench",
            &p,
            "--steps",
            "3",
            "--warmup",
            "1",
            "--set",
            "stages.ssl.batch_size=64",
            "--json",
            &json.display().to_string(),
        ],
    );
    run.expect_code(0)
        .expect_stdout_has(&["step ms med", "train img/s", "ssl", "mlp", "simclr"]);
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = rows.as_array().expect("a JSON array");
    assert_eq!(rows.len(), 1, "one pretrain stage: {rows:?}");
    let r = &rows[0];
    assert_eq!(r["stage"], "ssl");
    assert_eq!(r["encoder"], "mlp");
    assert_eq!(r["objective"], "simclr");
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["batch"], 64, "--set reaches the benchmarked stage");
    assert_eq!(r["views"], 2);
    assert_eq!(r["input_shape"], serde_json::json!([1, 28, 28]));
    // 784-64 (+ batch norm) -64-32: the Tiny encoder.
    assert_eq!(
        r["encoder_parameters"],
        784 * 64 + 64 + 2 * 64 + 64 * 32 + 32
    );
    // The SimCLR projector 32-64-32 (with batch norm) is trained too.
    assert_eq!(
        r["trained_parameters"],
        784 * 64 + 64 + 2 * 64 + 64 * 32 + 32 + 32 * 64 + 64 + 2 * 64 + 64 * 32 + 32
    );
    let steps: Vec<f64> = r["step_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(steps.len(), 3, "warm-up steps are not reported");
    assert!(steps.iter().all(|&s| s > 0.0), "{steps:?}");
    let med = r["step_ms_median"].as_f64().unwrap();
    let (lo, hi) = (
        steps.iter().cloned().fold(f64::MAX, f64::min),
        steps.iter().cloned().fold(0.0, f64::max),
    );
    assert!(lo <= med && med <= hi, "median {med} outside {steps:?}");
    let ips = r["train_images_per_second"].as_f64().unwrap();
    assert!(
        (ips - 128.0 / (med / 1e3)).abs() < 1e-6 * ips,
        "images/s = batch · views / median step: {ips}"
    );
    assert_eq!(r["augment_ms"].as_array().unwrap().len(), 3);
    // The stages it reads were stored, the benchmarked one was not, and nothing was recorded
    // as a run.
    let st = store(dir.path());
    assert_eq!(entries(&st, "ingest").len(), 1);
    assert_eq!(entries(&st, "augment").len(), 1);
    assert!(entries(&st, "pretrain").is_empty());
    assert!(!st.join("runs").join("tiny.json").exists());
    assert!(!dir.path().join("pretext.lock").exists());
    // A real run reuses what bench ran and trains the stage.
    let run = pretext(dir.path(), &["run", &p]);
    expect_statuses(
        &run,
        &[
            ("data", "cached"),
            ("views", "cached"),
            ("ssl", "ran"),
            ("eval", "ran"),
        ],
    );
}

#[test]
fn bench_refuses_bad_flags_with_exit_code_2() {
    let dir = tempdir();
    let p = Tiny::default().write(dir.path());
    let p = p.display().to_string();
    pretext(dir.path(), &["bench", &p, "--stage", "eval"])
        .expect_code(2)
        .expect_stderr_has(&["--stage eval", "is a probe stage", "ssl"]);
    pretext(dir.path(), &["bench", &p, "--stage", "sll"])
        .expect_code(2)
        .expect_stderr_has(&["--stage sll", "no such stage", "ssl"]);
    pretext(dir.path(), &["bench", &p, "--steps", "0"])
        .expect_code(2)
        .expect_stderr_has(&["--steps must be at least 1"]);
    // Bad objective parameters fail before anything runs.
    pretext(
        dir.path(),
        &["bench", &p, "--set", "stages.ssl.objective.temperature=-1"],
    )
    .expect_code(2)
    .expect_stderr_has(&["stage `ssl`", "temperature"]);
    assert!(entries(&store(dir.path()), "ingest").is_empty());
}
