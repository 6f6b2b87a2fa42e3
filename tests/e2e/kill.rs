//! A run killed (SIGKILL) in the middle of pretraining leaves no complete-looking entry for
//! that stage, only debris under `<store>/tmp/`; while it runs, a second run of the pipeline
//! is refused at that stage; the next run reuses the finished stages, runs pretraining again, cleans the
//! debris, and the store verifies.

use std::fs::File;
use std::time::{Duration, Instant};

use crate::support::{command, entries, expect_statuses, pending, plan_keys, pretext, store};
use crate::support::{tempdir, Tiny};

/// Upper bound of every wait in this test.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn killed_run_leaves_no_partial_entry_and_the_rerun_recovers() {
    let dir = tempdir();
    // Long enough that pretraining is still running when the test kills it (about 10 s in a
    // debug build on 2 cores); the rerun pays for one full pretraining.
    let tiny = Tiny {
        limit: 2000,
        epochs: 10,
        ..Tiny::default()
    };
    let pipeline = tiny.write(dir.path());
    let p = pipeline.display().to_string();
    let st = store(dir.path());

    let plan = pretext(dir.path(), &["plan", &p]);
    plan.expect_code(0);
    let ssl_key = plan_keys(&plan.stdout)
        .get("ssl")
        .cloned()
        .expect("plan names `ssl`");
    assert_eq!(ssl_key.len(), 12, "{}", plan.describe());

    let log_path = dir.path().join("killed-run.log");
    let log = File::create(&log_path).unwrap();
    let mut child = command(dir.path(), &["run", &p])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start pretext run");
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Wait until ingest and augment are committed and pretraining writes its pending entry.
    let start = Instant::now();
    loop {
        let pretraining = pending(&st).iter().any(|n| n.starts_with(&ssl_key));
        if pretraining && !entries(&st, "ingest").is_empty() && !entries(&st, "augment").is_empty()
        {
            break;
        }
        if let Some(status) = child.try_wait().expect("poll the child") {
            panic!(
                "pretext run finished ({status}) before the test could kill it during \
                 pretraining\n{}",
                log_text()
            );
        }
        if start.elapsed() > WAIT_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "timed out after {WAIT_LIMIT:?} waiting for pretraining to start; tmp/: {:?}\n{}",
                pending(&st),
                log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Meanwhile a second run of the same pipeline reuses the committed stages and is refused
    // (exit 1) at the one being computed, naming it and the holder.
    let second = pretext(dir.path(), &["run", &p]);
    second.expect_code(1).expect_stderr_has(&[
        "stage `ssl` is being computed by another pretext run",
        &format!("pid {}", child.id()),
        "--wait",
    ]);

    child.kill().expect("SIGKILL pretext run");
    let status = child.wait().expect("reap the killed run");
    assert!(
        !status.success(),
        "the killed run must not report success: {status}"
    );
    assert!(!log_text().contains("panicked at"), "{}", log_text());

    // No complete-looking pretrain (or later) entry; the half-written one sits in tmp/.
    assert_eq!(entries(&st, "pretrain"), Vec::<std::path::PathBuf>::new());
    assert_eq!(entries(&st, "probe"), Vec::<std::path::PathBuf>::new());
    assert!(
        pending(&st).iter().any(|n| n.starts_with(&ssl_key)),
        "the killed run's pending entry stays in tmp/ until the next run: {:?}",
        pending(&st)
    );
    assert!(
        !dir.path().join("pretext.lock").exists(),
        "a killed run writes no lockfile"
    );

    // `plan` after the kill: the finished stages are cached, pretraining will run.
    let plan = pretext(dir.path(), &["plan", &p]);
    plan.expect_code(0);
    assert!(crate::support::plan_line(&plan, "views")
        .trim_end()
        .ends_with("cached"));
    assert!(crate::support::plan_line(&plan, "ssl").contains("will run"));

    // The same pipeline again: the lock of the dead process is gone, debris is cleaned.
    let rerun = pretext(dir.path(), &["run", &p]);
    rerun
        .expect_code(0)
        .expect_stdout_has(&["2 stage(s) ran, 2 cached"]);
    expect_statuses(
        &rerun,
        &[
            ("data", "cached"),
            ("views", "cached"),
            ("ssl", "ran"),
            ("eval", "ran"),
        ],
    );
    assert_eq!(
        pending(&st),
        Vec::<String>::new(),
        "the rerun removes the debris"
    );
    assert_eq!(entries(&st, "pretrain").len(), 1);
    assert!(dir.path().join("pretext.lock").is_file());

    pretext(dir.path(), &["store", "verify", &p])
        .expect_code(0)
        .expect_stdout_has(&["4 entries ok, 0 corrupt"]);
}
