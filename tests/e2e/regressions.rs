//! Regression tests, each named after the bug it pins.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::*;

/// A plugin may use one tensor on both sides of an op; dfdx's backward once asserted on that
/// and the run died with exit 101.
#[test]
fn regression_same_tensor_on_both_sides_of_an_op_trains() {
    let dir = tempdir();
    let tiny = Tiny {
        objective: "{ plugin = \"self_product\" }".into(),
        plugin_paths: vec![fixtures().panicky.clone()],
        ..Tiny::default()
    };
    let p = tiny.write(dir.path()).display().to_string();
    pretext(dir.path(), &["run", &p]).expect_code(0);
}

/// Writes the raw (uncompressed) MNIST images with pixel `flip` of the first image changed.
fn write_images(path: &Path, flip: Option<usize>) {
    let (images, _) = mnist();
    let mut bytes = pretext::data::idx::read_maybe_gzip(&images).expect("read the embedded MNIST");
    if let Some(i) = flip {
        bytes[16 + i] = 255 - bytes[16 + i];
    }
    std::fs::write(path, bytes).expect("write the images file");
}

/// The ingest key once covered only the data paths as written: a data file replaced in place
/// was silently served from the cache.
#[test]
fn regression_replacing_a_data_file_in_place_reruns_ingest() {
    let dir = tempdir();
    let images = dir.path().join("images.idx");
    write_images(&images, None);
    let (orig_images, _) = mnist();
    let text = Tiny::default()
        .toml()
        .replace(&toml_path(&orig_images), &toml_path(&images));
    let p = dir.path().join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    let p = p.display().to_string();
    pretext(dir.path(), &["run", &p]).expect_code(0);
    write_images(&images, Some(300));
    let plan = pretext(dir.path(), &["plan", &p]);
    plan.expect_code(0);
    assert!(
        plan_line(&plan, "data").contains("source_digests.images"),
        "{}",
        plan.describe()
    );
    let run = pretext(dir.path(), &["run", &p]);
    run.expect_code(0);
    expect_statuses(
        &run,
        &[
            ("data", "ran"),
            ("views", "ran"),
            ("ssl", "ran"),
            ("eval", "ran"),
        ],
    );
}

/// `pretext show … | head` once panicked with "failed printing to stdout: Broken pipe".
#[test]
fn regression_closed_stdout_is_not_a_panic() {
    let dir = tempdir();
    let p = Tiny::default().write(dir.path()).display().to_string();
    pretext(dir.path(), &["run", &p]).expect_code(0);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' show --json '{}' | head -c 1",
            pretext_bin().display(),
            p
        ))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked")
            && !stderr.contains("internal error")
            && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{");
}

/// `show` and `plan` once created `.pretext/` (and failed on a read-only folder).
#[test]
fn regression_looking_commands_create_no_store() {
    let dir = tempdir();
    let p = Tiny::default().write(dir.path()).display().to_string();
    pretext(dir.path(), &["show", &p])
        .expect_code(2)
        .expect_stderr_has(&["has not been run yet"]);
    pretext(dir.path(), &["plan", &p])
        .expect_code(0)
        .expect_stdout_has(&["never run"]);
    pretext(dir.path(), &["store", "verify", &p]).expect_code(2);
    assert!(
        !store(dir.path()).exists(),
        "a store was created by a read-only command"
    );
}

/// Two pipelines in one folder once overwrote each other's `pretext.lock`: each now owns a
/// section, and `--locked` checks its own.
#[test]
fn regression_two_pipelines_in_one_folder_keep_both_lock_sections() {
    let dir = tempdir();
    let a = Tiny::default().write(dir.path());
    let b = dir.path().join("other.toml");
    std::fs::write(
        &b,
        Tiny {
            name: "other".into(),
            ..Tiny::default()
        }
        .toml(),
    )
    .unwrap();
    let (a, b) = (a.display().to_string(), b.display().to_string());
    pretext(dir.path(), &["run", &a]).expect_code(0);
    pretext(dir.path(), &["run", &b]).expect_code(0);
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("pretext.lock")).unwrap())
            .unwrap();
    assert!(
        lock["pipelines"]["tiny"]["stages"]["ssl"].is_object()
            && lock["pipelines"]["other"]["stages"]["ssl"].is_object(),
        "{lock}"
    );
    pretext(dir.path(), &["run", "--locked", &a]).expect_code(0);
    pretext(dir.path(), &["run", "--locked", &b]).expect_code(0);
    let c = dir.path().join("third.toml");
    std::fs::write(
        &c,
        Tiny {
            name: "third".into(),
            ..Tiny::default()
        }
        .toml(),
    )
    .unwrap();
    pretext(dir.path(), &["run", "--locked", &c.display().to_string()])
        .expect_code(2)
        .expect_stderr_has(&["no section for pipeline `third`"]);
}
