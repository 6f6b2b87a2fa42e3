//! Malformed command lines: unknown flags and subcommands, bad `--device` values, missing
//! pipeline files, malformed `--set` overrides and missing plugin folders all exit with code 2
//! and a message that names the problem, never with a panic.

use crate::support::{pretext, tempdir, Tiny};

#[test]
fn malformed_invocations_exit_2_with_a_clear_message() {
    let dir = tempdir();
    let pipeline = Tiny::default().write(dir.path());
    let p = pipeline.display().to_string();
    let missing = dir
        .path()
        .join("no-such-pipeline.toml")
        .display()
        .to_string();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["run", "--bogus", &p],
            vec!["unexpected argument '--bogus'"],
        ),
        (
            vec!["frobnicate"],
            vec!["unrecognized subcommand 'frobnicate'"],
        ),
        (vec![], vec!["Usage: pretext"]),
        (vec!["run"], vec!["<PIPELINE>"]),
        (
            vec!["run", "--device", "tpu", &p],
            vec![
                "invalid value 'tpu' for '--device",
                "use `cpu`, `cuda`, `cuda:N` or `cpu-generic`",
            ],
        ),
        (
            vec!["plan", "--device", "cuda:x", &p],
            vec!["unknown device `cuda:x`"],
        ),
        (
            vec!["run", &missing],
            vec!["no-such-pipeline.toml", "cannot read the pipeline file"],
        ),
        (
            vec!["validate", &missing],
            vec!["cannot read the pipeline file"],
        ),
        (
            vec!["show", &missing],
            vec!["cannot read the pipeline file"],
        ),
        (
            vec!["store", "verify", &missing],
            vec!["cannot read the pipeline file"],
        ),
        (
            vec!["run", "--set", "stages.ssl.epochs", &p],
            vec![
                "--set",
                "`stages.ssl.epochs`",
                "expected `path.to.key=value`",
            ],
        ),
        (
            vec!["validate", "--set", "=3", &p],
            vec!["--set", "the key path before `=` is empty"],
        ),
        (
            vec!["validate", "--set", "stages.ssl.epochs=abc", &p],
            vec!["`stages.ssl.epochs` must be an integer", "(set with --set)"],
        ),
        (
            vec!["validate", "--plugin-dir", "/no/such/plugin/dir", &p],
            vec!["--plugin-dir /no/such/plugin/dir: not a folder"],
        ),
        (
            vec!["plugins", "--plugin-dir", "/no/such/plugin/dir"],
            vec!["not a folder"],
        ),
    ];
    for (args, needles) in &cases {
        let run = pretext(dir.path(), args);
        run.expect_code(2);
        assert!(
            run.stderr.trim_start().starts_with("error:") || args.is_empty(),
            "the message should start with `error:`\n{}",
            run.describe()
        );
        run.expect_stderr_has(needles);
    }
    // None of these may have created a store or a lockfile next to the pipeline.
    assert!(!dir.path().join("pretext.lock").exists());
}

#[test]
fn shows_before_any_run_and_cuda_without_support_are_input_errors() {
    let dir = tempdir();
    let pipeline = Tiny::default().write(dir.path());
    let p = pipeline.display().to_string();
    pretext(dir.path(), &["show", &p])
        .expect_code(2)
        .expect_stderr_has(&["has not been run yet", "pretext run"]);
    // This build has no CUDA: a clean input error, not a crash (and nothing runs).
    let cuda = pretext(dir.path(), &["run", "--device", "cuda", &p]);
    cuda.expect_code(2).expect_stderr_has(&["cuda"]);
    assert!(
        !dir.path().join("pretext.lock").exists(),
        "{}",
        cuda.describe()
    );
}

/// Views may differ in size (multi-crop), but not for a model that reads a fixed input size:
/// refused by validate, plan and run alike, before anything runs.
#[test]
fn views_of_different_shapes_are_refused_before_anything_runs() {
    let dir = tempdir();
    let (images, labels) = crate::support::mnist();
    let p = dir.path().join("pipeline.toml");
    std::fs::write(
        &p,
        format!(
            r#"[pipeline]
name = "shapes"

[stages.data]
kind = "ingest"
source = {{ format = "idx", images = {}, labels = {} }}
resize = [32, 32]
limit = 100

[stages.views]
kind = "augment"
input = "data"
views = [
  [{{ name = "random_resized_crop", size = 24 }}],
  [{{ name = "random_resized_crop", size = 28 }}],
]

[stages.ssl]
kind = "pretrain"
input = "views"
objective = {{ plugin = "simclr" }}
model = {{ arch = "mlp", hidden = [32], embed_dim = 16 }}
"#,
            crate::support::toml_path(&images),
            crate::support::toml_path(&labels)
        ),
    )
    .unwrap();
    let p = p.display().to_string();
    for cmd in ["validate", "plan", "run"] {
        pretext(dir.path(), &[cmd, &p])
            .expect_code(2)
            .expect_stderr_has(&[
                "stage `ssl`",
                "the views differ in size (view 2 is 1x28x28, view 1 is 1x24x24)",
                "an `mlp` reads a fixed number of inputs",
            ]);
    }
    // Nothing ran: no store entry was made.
    let ingest = dir.path().join(".pretext").join("objects").join("ingest");
    assert!(!ingest.exists(), "the ingest ran: {}", ingest.display());
}
