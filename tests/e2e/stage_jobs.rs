//! `pretext run --stage NAME`: one stage as one job of a scheduler. Its inputs must already be
//! in the store (else exit code 2 naming them); it writes neither `pretext.lock` nor the run
//! log; two such jobs started at once on one store (`--wait`) both commit, and a whole run
//! afterwards finds every entry they wrote; two jobs computing independent stages at once
//! neither wait for nor refuse each other, and leave a consistent store.

use crate::support::{entries, expect_statuses, pending, pretext, store, tempdir, Tiny};

#[test]
fn a_stage_runs_alone_once_its_inputs_are_in_the_store() {
    let dir = tempdir();
    let p = Tiny::default().write(dir.path()).display().to_string();
    let lock = dir.path().join("pretext.lock");

    // Nothing in the store yet: `ssl` needs `views`, which needs `data`.
    pretext(dir.path(), &["run", &p, "--stage", "ssl"])
        .expect_code(2)
        .expect_stderr_has(&[
            "--stage ssl",
            "`views` (input)",
            "not in the store",
            "run them first",
        ]);
    pretext(dir.path(), &["run", &p, "--stage", "nope"])
        .expect_code(2)
        .expect_stderr_has(&["no stage `nope`", "data, views, ssl, eval"]);
    assert!(!lock.exists(), "a refused --stage run writes no lockfile");

    // Selected together, a stage may read another selected one.
    let first = pretext(
        dir.path(),
        &["run", &p, "--stage", "data", "--stage", "views"],
    );
    first
        .expect_code(0)
        .expect_stdout_has(&["Lockfile not updated (--stage)"]);
    expect_statuses(&first, &[("data", "ran"), ("views", "ran")]);
    assert!(!lock.exists(), "--stage leaves pretext.lock to whole runs");

    // Two jobs at once on one store: the pretraining and, independently, a re-run of `data`
    // (cached). Both succeed.
    let jobs: Vec<_> = [["--stage", "ssl"], ["--stage", "data"]]
        .into_iter()
        .map(|sel| {
            let (d, p) = (dir.path().to_path_buf(), p.clone());
            std::thread::spawn(move || pretext(&d, &["run", &p, sel[0], sel[1], "--wait"]))
        })
        .collect();
    let runs: Vec<_> = jobs.into_iter().map(|j| j.join().unwrap()).collect();
    runs[0].expect_code(0);
    expect_statuses(&runs[0], &[("ssl", "ran")]);
    runs[1].expect_code(0);
    expect_statuses(&runs[1], &[("data", "cached")]);
    let st = store(dir.path());
    assert_eq!(entries(&st, "pretrain").len(), 1);
    assert!(
        pending(&st).is_empty(),
        "no half-written entry: {:?}",
        pending(&st)
    );

    // A whole run reuses every entry the jobs wrote and runs only what is left.
    let whole = pretext(dir.path(), &["run", &p]);
    whole.expect_code(0);
    expect_statuses(
        &whole,
        &[
            ("data", "cached"),
            ("views", "cached"),
            ("ssl", "cached"),
            ("eval", "ran"),
        ],
    );
    assert!(lock.exists());
    // With the lockfile, --locked checks the selected stage's key.
    let locked = pretext(dir.path(), &["run", &p, "--stage", "eval", "--locked"]);
    locked.expect_code(0);
    expect_statuses(&locked, &[("eval", "cached")]);
    pretext(
        dir.path(),
        &[
            "run",
            &p,
            "--stage",
            "ssl",
            "--locked",
            "--set",
            "stages.ssl.epochs=2",
        ],
    )
    .expect_code(1)
    .expect_stderr_has(&["ssl"]);
}

#[test]
fn jobs_computing_independent_stages_run_at_once_on_one_store() {
    let dir = tempdir();
    let tiny = Tiny {
        limit: 2000,
        epochs: 3,
        ..Tiny::default()
    };
    // A second pretraining of the same views, independent of `ssl` (a sweep's other point).
    let mut toml = tiny.toml();
    toml.push_str(
        r#"
[stages.ssl_wide]
kind = "pretrain"
input = "views"
objective = { plugin = "simclr", temperature = 0.5, projector_hidden = 64, projector_dim = 32 }
model = { arch = "mlp", hidden = [96], embed_dim = 32 }
epochs = 3
batch_size = 128
"#,
    );
    let p = dir.path().join("pipeline.toml");
    std::fs::write(&p, toml).unwrap();
    let p = p.display().to_string();
    pretext(
        dir.path(),
        &["run", &p, "--stage", "data", "--stage", "views"],
    )
    .expect_code(0);

    // Started together, without --wait: with one writer per store the second would be refused.
    let jobs: Vec<_> = ["ssl", "ssl_wide"]
        .into_iter()
        .map(|stage| {
            let (d, p) = (dir.path().to_path_buf(), p.clone());
            std::thread::spawn(move || pretext(&d, &["run", &p, "--stage", stage]))
        })
        .collect();
    let runs: Vec<_> = jobs.into_iter().map(|j| j.join().unwrap()).collect();
    for (run, stage) in runs.iter().zip(["ssl", "ssl_wide"]) {
        run.expect_code(0);
        expect_statuses(run, &[(stage, "ran")]);
        assert!(!run.stderr.contains("waiting"), "{}", run.describe());
    }
    let st = store(dir.path());
    assert_eq!(entries(&st, "pretrain").len(), 2);
    assert!(pending(&st).is_empty(), "{:?}", pending(&st));
    assert!(
        std::fs::read_dir(st.join("locks"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "committed entries leave no lock files behind"
    );
    pretext(dir.path(), &["store", "verify", &p])
        .expect_code(0)
        .expect_stdout_has(&["4 entries ok, 0 corrupt"]);
    // The whole pipeline afterwards reuses both.
    let whole = pretext(dir.path(), &["run", &p]);
    whole.expect_code(0);
    expect_statuses(
        &whole,
        &[
            ("data", "cached"),
            ("views", "cached"),
            ("ssl", "cached"),
            ("ssl_wide", "cached"),
            ("eval", "ran"),
        ],
    );
}
