//! Reproducibility: the same pipeline run from scratch in two folders writes byte-identical
//! `pretext.lock` files (no absolute paths, no timestamps), and a `run --locked` from scratch
//! reproduces them; `run --locked` accepts the store that wrote the lockfile and refuses
//! (exit 1, naming the stage, before running anything) a changed key.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::{expect_statuses, pretext, tempdir, Tiny};

#[test]
fn fresh_runs_write_identical_lockfiles_that_a_fresh_locked_run_reproduces() {
    let (a, b) = (tempdir(), tempdir());
    let mut locks = Vec::new();
    for dir in [&a, &b] {
        let pipeline = Tiny::default().write(dir.path());
        pretext(dir.path(), &["run", &pipeline.display().to_string()]).expect_code(0);
        locks.push(std::fs::read(dir.path().join("pretext.lock")).expect("pretext.lock"));
    }
    assert!(
        locks[0] == locks[1],
        "two fresh runs wrote different lockfiles; differing entries:\n  {}\n\n{}",
        lock_diff(&locks[0], &locks[1]).join("\n  "),
        String::from_utf8_lossy(&locks[0]),
    );
    let text = String::from_utf8(locks[0].clone()).expect("UTF-8 lockfile");
    for dir in [&a, &b] {
        let shown = dir.path().display().to_string();
        assert!(
            !text.contains(&shown),
            "the lockfile names {shown}:\n{text}"
        );
    }
    assert!(
        !text.contains("/tmp") && !text.contains("datasets/"),
        "{text}"
    );

    // --locked in a fresh folder with only the pipeline and the lockfile: every stage runs
    // and must reproduce the recorded output digests.
    let c = tempdir();
    let pc = Tiny::default().write(c.path()).display().to_string();
    std::fs::write(c.path().join("pretext.lock"), &locks[0]).unwrap();
    let fresh = pretext(c.path(), &["run", "--locked", &pc]);
    fresh
        .expect_code(0)
        .expect_stdout_has(&["4 stage(s) ran, 0 cached"]);
    expect_statuses(
        &fresh,
        &[
            ("data", "ran"),
            ("views", "ran"),
            ("ssl", "ran"),
            ("eval", "ran"),
        ],
    );
}

#[test]
fn locked_runs_accept_the_lockfile_and_refuse_changed_keys() {
    let a = tempdir();
    let pa = Tiny::default().write(a.path()).display().to_string();
    pretext(a.path(), &["run", &pa]).expect_code(0);
    let lock = std::fs::read(a.path().join("pretext.lock")).expect("pretext.lock");

    // --locked against the store that produced the lockfile: all cached, lockfile unchanged.
    let locked = pretext(a.path(), &["run", "--locked", &pa]);
    locked
        .expect_code(0)
        .expect_stdout_has(&["0 stage(s) ran, 4 cached"]);
    assert_eq!(std::fs::read(a.path().join("pretext.lock")).unwrap(), lock);

    // A changed key under --locked: exit 1 before running anything, naming the stage.
    let changed = pretext(
        a.path(),
        &["run", "--locked", "--set", "stages.ssl.epochs=2", &pa],
    );
    changed.expect_code(1).expect_stderr_has(&[
        "--locked",
        "pretext.lock",
        "stage `ssl`: key changed",
        "epochs",
    ]);
    assert!(
        !changed.stdout.contains("stage(s) ran"),
        "nothing may run\n{}",
        changed.describe()
    );
    assert_eq!(std::fs::read(a.path().join("pretext.lock")).unwrap(), lock);

    // --locked without a lockfile is an input error.
    let d = tempdir();
    let pd = Tiny::default().write(d.path()).display().to_string();
    pretext(d.path(), &["run", "--locked", &pd])
        .expect_code(2)
        .expect_stderr_has(&["pretext.lock does not exist"]);
}

/// The leaves (`stages.ssl.outputs.encoder.safetensors: "…" → "…"`) in which two lockfiles
/// differ.
fn lock_diff(a: &[u8], b: &[u8]) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        &p,
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{path}: {a} → {b}")),
            _ => {}
        }
    }
    let parse = |t: &[u8]| serde_json::from_slice::<Value>(t).unwrap_or(Value::Null);
    let mut out = Vec::new();
    walk("", &parse(a), &parse(b), &mut out);
    out
}
