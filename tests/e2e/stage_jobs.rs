//! `pretext run --stage NAME`: one stage as one job of a scheduler. Its inputs must already be
//! in the store (else exit code 2 naming them); it writes neither `pretext.lock` nor the run
//! log; two such jobs started at once on one store (`--wait`) both commit, and a whole run
//! afterwards finds every entry they wrote.

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
    // (cached). The writer lock serialises their commits; both succeed.
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
