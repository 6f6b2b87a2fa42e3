//! Cache invalidation: a changed key reruns exactly the stages downstream of it. A probe
//! setting reruns only the probe; a pretraining setting reruns pretraining and the probe; `plan`
//! names the changed key; entries of earlier configurations stay usable.

use crate::support::{entries, expect_statuses, expected, plan_line, pretext, show_statuses};
use crate::support::{store, tempdir, Tiny};

#[test]
fn changed_keys_rerun_exactly_the_downstream_stages() {
    let dir = tempdir();
    let pipeline = Tiny::default().write(dir.path());
    let p = pipeline.display().to_string();
    pretext(dir.path(), &["run", &p]).expect_code(0);

    // Probe setting: only the probe runs.
    let plan = pretext(dir.path(), &["plan", "--set", "stages.eval.knn.k=5", &p]);
    plan.expect_code(0);
    for stage in ["data", "views", "ssl"] {
        assert!(
            plan_line(&plan, stage).trim_end().ends_with("cached"),
            "{}",
            plan.describe()
        );
    }
    let eval = plan_line(&plan, "eval");
    assert!(
        eval.contains("will run: config changed"),
        "{}",
        plan.describe()
    );
    assert!(
        eval.contains("knn.k"),
        "the reason names the key\n{}",
        plan.describe()
    );

    let k5 = pretext(dir.path(), &["run", "--set", "stages.eval.knn.k=5", &p]);
    k5.expect_code(0)
        .expect_stdout_has(&["1 stage(s) ran, 3 cached"]);
    let only_probe = [
        ("data", "cached"),
        ("views", "cached"),
        ("ssl", "cached"),
        ("eval", "ran"),
    ];
    expect_statuses(&k5, &only_probe);
    assert_eq!(show_statuses(dir.path(), &pipeline), expected(&only_probe));

    // Pretraining setting: pretraining and the probe run, ingest and augment are reused.
    let plan = pretext(dir.path(), &["plan", "--set", "stages.ssl.epochs=2", &p]);
    plan.expect_code(0);
    for stage in ["data", "views"] {
        assert!(
            plan_line(&plan, stage).trim_end().ends_with("cached"),
            "{}",
            plan.describe()
        );
    }
    let ssl = plan_line(&plan, "ssl");
    assert!(
        ssl.contains("will run: config changed"),
        "{}",
        plan.describe()
    );
    assert!(
        ssl.contains("epochs") && ssl.contains("1 → 2"),
        "{}",
        plan.describe()
    );
    let eval = plan_line(&plan, "eval");
    assert!(
        eval.contains("will run") && eval.contains("input `encoder` changed"),
        "{}",
        plan.describe()
    );

    let e2 = pretext(dir.path(), &["run", "--set", "stages.ssl.epochs=2", &p]);
    e2.expect_code(0)
        .expect_stdout_has(&["2 stage(s) ran, 2 cached"]);
    expect_statuses(
        &e2,
        &[
            ("data", "cached"),
            ("views", "cached"),
            ("ssl", "ran"),
            ("eval", "ran"),
        ],
    );

    // Three probe results and two encoders now live side by side in the store.
    let st = store(dir.path());
    assert_eq!(entries(&st, "ingest").len(), 1);
    assert_eq!(entries(&st, "augment").len(), 1);
    assert_eq!(entries(&st, "pretrain").len(), 2);
    assert_eq!(entries(&st, "probe").len(), 3);

    // Back to the file as written: everything comes from the store.
    let again = pretext(dir.path(), &["run", &p]);
    again
        .expect_code(0)
        .expect_stdout_has(&["0 stage(s) ran, 4 cached"]);
}

#[test]
fn changing_the_seed_reruns_every_stage() {
    let dir = tempdir();
    let pipeline = Tiny::default().write(dir.path());
    let p = pipeline.display().to_string();
    pretext(dir.path(), &["run", &p]).expect_code(0);
    let plan = pretext(dir.path(), &["plan", "--set", "pipeline.seed=8", &p]);
    plan.expect_code(0);
    for stage in ["data", "views", "ssl", "eval"] {
        assert!(
            plan_line(&plan, stage).contains("will run"),
            "{}",
            plan.describe()
        );
    }
    assert!(
        plan_line(&plan, "data").contains("seed"),
        "{}",
        plan.describe()
    );
}

#[test]
fn a_store_entry_changed_after_commit_is_rerun_not_used() {
    let dir = tempdir();
    let p = Tiny::default().write(dir.path()).display().to_string();
    pretext(dir.path(), &["run", &p]).expect_code(0);
    let st = store(dir.path());
    let ingest = entries(&st, "ingest");
    assert_eq!(ingest.len(), 1);
    // Flip one byte in the middle of the stored dataset (same size: only its digest tells).
    let file = ingest[0].join("dataset.parquet");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    for args in [vec!["run", "--locked", &p], vec!["run", &p]] {
        let run = pretext(dir.path(), &args);
        run.expect_code(0).expect_stderr_has(&[
            "ignoring a damaged store entry",
            "file `dataset.parquet` changed after it was stored",
            "the stage will run again",
        ]);
        // The rerun makes the same bytes as before, so nothing downstream changes key and
        // the lockfile still holds.
        expect_statuses(
            &run,
            &[
                ("data", "ran"),
                ("views", "cached"),
                ("ssl", "cached"),
                ("eval", "cached"),
            ],
        );
        pretext(dir.path(), &["store", "verify", &p])
            .expect_code(0)
            .expect_stdout_has(&["0 corrupt"]);
        // Damage it again for the second round.
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[mid] ^= 0x40;
        std::fs::write(&file, &bytes).unwrap();
    }
}
