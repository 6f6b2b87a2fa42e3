//! Plugins: an objective from an out-of-tree crate trains; a panicking objective fails its
//! stage cleanly (exit 1, no default panic output, no store entry); libraries with the wrong
//! ABI version or without the entry symbol are refused (exit 2); bad objective parameters and
//! unknown objective names are caught by `validate`.

use std::path::{Path, PathBuf};

use crate::support::{entries, expect_statuses, fixtures, pending, pretext, simclr_objective};
use crate::support::{store, tempdir, Tiny};

/// A folder holding a copy of `lib` only, for `--plugin-dir` (the fixture target folder also
/// holds the other fixtures, some of which are not loadable on purpose).
fn plugin_dir_with(dir: &Path, lib: &Path) -> PathBuf {
    let pd = dir.join("plugins");
    std::fs::create_dir_all(&pd).unwrap();
    std::fs::copy(lib, pd.join(lib.file_name().unwrap())).unwrap();
    pd
}

fn ssl_loss(dir: &Path) -> f64 {
    let entry = entries(&store(dir), "pretrain");
    assert_eq!(entry.len(), 1, "one pretrain entry in {}", dir.display());
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(entry[0].join("metrics.json")).unwrap())
            .unwrap();
    metrics["loss"].as_f64().expect("a `loss` metric")
}

#[test]
fn external_objective_plugin_trains_and_is_listed() {
    let lib = &fixtures().external_objective;
    let dir = tempdir();
    let tiny = Tiny {
        objective: simclr_objective("external_simclr"),
        plugin_paths: vec![lib.clone()],
        ..Tiny::default()
    };
    let p = tiny.write(dir.path()).display().to_string();
    pretext(dir.path(), &["validate", &p])
        .expect_code(0)
        .expect_stdout_has(&["ok:"]);
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
    let lock = std::fs::read_to_string(dir.path().join("pretext.lock")).unwrap();
    assert!(
        lock.contains("\"external_simclr\""),
        "the lockfile records the plugin:\n{lock}"
    );

    // The same NT-Xent as the built-in `simclr` (same seed, data, model and a 2-layer
    // projector of the same widths): the loss must agree.
    let builtin = tempdir();
    let tiny = Tiny {
        objective: "{ plugin = \"simclr\", temperature = 0.5, projector_hidden = 64, \
                    projector_dim = 32, projector_layers = 2 }"
            .into(),
        ..Tiny::default()
    };
    let pb = tiny.write(builtin.path()).display().to_string();
    pretext(builtin.path(), &["run", &pb]).expect_code(0);
    let (ours, theirs) = (ssl_loss(dir.path()), ssl_loss(builtin.path()));
    assert!(
        (ours - theirs).abs() < 1e-3,
        "external_simclr loss {ours} differs from simclr loss {theirs}"
    );

    // `pretext plugins --plugin-dir` lists it with its objective.
    let pd = plugin_dir_with(dir.path(), lib);
    let list = pretext(
        dir.path(),
        &["plugins", "--plugin-dir", &pd.display().to_string()],
    );
    list.expect_code(0).expect_stdout_has(&[
        "external-objective 0.1.0",
        "external_simclr",
        "simclr",
        "random_resized_crop",
    ]);
    assert!(!list.stdout.contains("FAILED"), "{}", list.describe());
}

#[test]
fn panicking_objective_fails_the_stage_cleanly() {
    let lib = &fixtures().panicky;
    let dir = tempdir();
    let tiny = Tiny {
        objective: "{ plugin = \"panicky\" }".into(),
        plugin_paths: vec![lib.clone()],
        ..Tiny::default()
    };
    let p = tiny.write(dir.path()).display().to_string();
    // `pretext()` already asserts that "panicked at" appears nowhere.
    let run = pretext(dir.path(), &["run", &p]);
    run.expect_code(1).expect_stderr_has(&[
        "stage `ssl` failed",
        "objective `panicky`",
        "panicked",
        "panicky objective: deliberate failure 4711",
    ]);
    let st = store(dir.path());
    assert_eq!(
        entries(&st, "pretrain"),
        Vec::<PathBuf>::new(),
        "{}",
        run.describe()
    );
    assert_eq!(entries(&st, "probe"), Vec::<PathBuf>::new());
    assert_eq!(
        entries(&st, "ingest").len(),
        1,
        "stages before the failure are kept"
    );
    assert_eq!(
        pending(&st),
        Vec::<String>::new(),
        "the failed entry is removed from tmp/"
    );
    assert!(
        !dir.path().join("pretext.lock").exists(),
        "a failed run writes no lockfile"
    );
}

#[test]
fn libraries_with_a_wrong_abi_or_no_entry_are_refused() {
    let f = fixtures();
    let cases = [
        (
            &f.abi_mismatch,
            vec!["ABI v999", "speaks ABI v3", "rebuild the plugin"],
        ),
        (
            &f.abi_v1,
            vec![
                "built for plugin ABI v1",
                "this pretext speaks ABI v3",
                "rebuild the plugin against pretext-plugin 0.3.0",
            ],
        ),
        (
            &f.no_entry,
            vec!["not a pretext plugin", "pretext_plugin_entry"],
        ),
    ];
    for (lib, needles) in cases {
        let dir = tempdir();
        let tiny = Tiny {
            plugin_paths: vec![lib.clone()],
            ..Tiny::default()
        };
        let p = tiny.write(dir.path()).display().to_string();
        for cmd in ["run", "validate"] {
            let run = pretext(dir.path(), &[cmd, &p]);
            run.expect_code(2).expect_stderr_has(&needles);
            run.expect_stderr_has(&[&lib.display().to_string()]);
        }
        assert!(
            entries(&store(dir.path()), "ingest").is_empty(),
            "nothing may run"
        );

        // In a plugin folder the same library is reported, not fatal.
        let pd = plugin_dir_with(dir.path(), lib);
        let list = pretext(
            dir.path(),
            &["plugins", "--plugin-dir", &pd.display().to_string()],
        );
        list.expect_code(0)
            .expect_stdout_has(&["FAILED"])
            .expect_stdout_has(&needles);
    }
}

#[test]
fn bad_objective_parameters_and_unknown_names_fail_validation() {
    let dir = tempdir();
    let write = |objective: &str| {
        let tiny = Tiny {
            objective: objective.into(),
            ..Tiny::default()
        };
        tiny.write(dir.path()).display().to_string()
    };

    let p = write("{ plugin = \"simclr\", temperature = -1 }");
    pretext(dir.path(), &["validate", &p])
        .expect_code(2)
        .expect_stderr_has(&[
            "stage `ssl`",
            "simclr",
            "`temperature`",
            "-1",
            "out of range",
        ]);

    let p = write("{ plugin = \"simclr\", temprature = 0.5 }");
    pretext(dir.path(), &["validate", &p])
        .expect_code(2)
        .expect_stderr_has(&["stage `ssl`", "`temprature`"]);

    let p = write("{ plugin = \"simclar\" }");
    pretext(dir.path(), &["validate", &p])
        .expect_code(2)
        .expect_stderr_has(&[
            "no plugin provides objective `simclar`",
            "did you mean `simclr`?",
            "available: ",
            "`simclr`",
        ]);

    // No close match: no suggestion, but the list of what is available.
    let p = write("{ plugin = \"no_such_objective_here\" }");
    let run = pretext(dir.path(), &["run", &p]);
    run.expect_code(2).expect_stderr_has(&[
        "no plugin provides objective `no_such_objective_here`",
        "available: ",
        "`simclr`",
        "pretext plugins",
    ]);
    assert!(!run.stderr.contains("did you mean"), "{}", run.describe());
    assert!(
        entries(&store(dir.path()), "ingest").is_empty(),
        "validation precedes running"
    );
}

#[test]
fn plugins_prints_parameter_tables_by_name_or_all() {
    let dir = tempdir();
    let one = pretext(dir.path(), &["plugins", "simclr"]);
    one.expect_code(0).expect_stdout_has(&[
        "objective simclr: SimCLR",
        "libpretext_contrastive",
        "| key | type | default | meaning |",
        "| `temperature` |",
        "| `projector_dim` |",
    ]);
    let aug = pretext(dir.path(), &["plugins", "random_resized_crop"]);
    aug.expect_code(0)
        .expect_stdout_has(&["augmentation random_resized_crop", "| `scale` |"]);
    let all = pretext(dir.path(), &["plugins", "--params"]);
    all.expect_code(0).expect_stdout_has(&[
        "objective     simclr",
        "| `temperature` |",
        "augmentation  rotate",
        "| `degrees` |",
    ]);
    // Without --params the listing stays one line per plugin.
    let plain = pretext(dir.path(), &["plugins"]);
    plain.expect_code(0);
    assert!(
        !plain.stdout.contains("| `temperature` |"),
        "{}",
        plain.describe()
    );
    pretext(dir.path(), &["plugins", "simclrr"])
        .expect_code(2)
        .expect_stderr_has(&[
            "no objective or augmentation named `simclrr`",
            "did you mean `simclr`?",
        ]);
}
