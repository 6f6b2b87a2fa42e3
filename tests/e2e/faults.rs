//! Faults: SIGKILL at random points of runs followed by reruns; a second run waiting for the
//! store lock; a full disk (RLIMIT_FSIZE); store paths that are not usable folders; a plugin
//! library swapped under `--locked`; plugin objectives that return NaN or a non-scalar loss;
//! an exploding learning rate.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// Upper bound of every wait in this file.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// SplitMix64, for seeded kill delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The tiny pipeline (400 samples) with a given seed (every seed has its own stage keys) and 2
/// epochs, so a checkpoint is written between them.
fn seeded_pipeline(dir: &Path, seed: u64) -> PathBuf {
    let text = Tiny {
        limit: 400,
        epochs: 2,
        ..Tiny::default()
    }
    .toml()
    .replace("seed = 7", &format!("seed = {seed}"));
    let p = dir.join(format!("pipeline-{seed}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// The stages `plan` reports as cached.
fn cached_in_plan(dir: &Path, p: &str) -> Vec<String> {
    let plan = pretext(dir, &["plan", p]);
    plan.expect_code(0);
    plan.stdout
        .lines()
        .skip(1)
        .filter(|l| l.trim_end().ends_with("cached"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn sigkill_at_random_points_then_rerun_reuses_finished_stages_and_verifies() {
    let dir = tempdir();
    let st = store(dir.path());
    // An uninterrupted run gives the time scale of the kill delays (not an assertion).
    let base = seeded_pipeline(dir.path(), 1000);
    let t0 = Instant::now();
    pretext(dir.path(), &["run", &base.display().to_string()]).expect_code(0);
    // The scale shrinks whenever a run finishes before its kill (the machine got faster).
    let mut scale = t0.elapsed().max(Duration::from_millis(100));

    let mut rng = Rng(0x6b11_1e55);
    let (mut kills, mut rounds, mut reused_total) = (0usize, 0u64, 0usize);
    // Kills by how many stages had been committed (0 to 4), and reruns that resumed pretraining
    // from a checkpoint.
    let (mut phases, mut resumed) = ([0usize; 5], 0usize);
    let mut points = Vec::new();
    while kills < 22 && rounds < 60 {
        rounds += 1;
        let p = seeded_pipeline(dir.path(), rounds).display().to_string();
        // Uniform in [0, 1.1 × a full run): ingest, augment, every epoch of pretraining, the
        // commits and checkpoint writes in between, the probe and the lockfile. Every fourth
        // round aims at the first 5 % (start-up, the lock, ingest and its commit), which a
        // uniform delay would rarely hit.
        let span = if rounds % 4 == 0 { 5 } else { 110 };
        let delay =
            Duration::from_micros(rng.next() % (scale.as_micros() as u64 * span / 100).max(1));
        let log_path = dir.path().join("killed.log");
        let log = File::create(&log_path).unwrap();
        let mut child = command(dir.path(), &["run", &p])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pretext run");
        std::thread::sleep(delay);
        let finished_first = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let status = child.wait().expect("reap the killed run");
        let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(
            !log_text.contains("panicked at") && !log_text.contains("internal error"),
            "round {rounds}: {log_text}"
        );
        if finished_first {
            assert!(status.success(), "round {rounds}: {status}\n{log_text}");
            scale = (scale * 7 / 10).max(Duration::from_millis(50));
        } else {
            kills += 1;
            points.push(delay.as_millis());
        }

        // Whatever was committed before the kill is reused; the rest runs; nothing is lost.
        let cached = cached_in_plan(dir.path(), &p);
        reused_total += cached.len();
        if !finished_first {
            phases[cached.len()] += 1;
        }
        let rerun = pretext(dir.path(), &["run", &p]);
        rerun.expect_code(0);
        resumed += usize::from(rerun.stderr.contains("resuming from checkpoint"));
        assert!(
            !rerun.stderr.contains("internal error"),
            "{}",
            rerun.describe()
        );
        let statuses = statuses(&rerun.stdout);
        assert_eq!(statuses.len(), 4, "{}", rerun.describe());
        for (stage, status) in &statuses {
            let want = if cached.contains(stage) {
                "cached"
            } else {
                "ran"
            };
            assert_eq!(
                status,
                want,
                "round {rounds} (killed after {delay:?}): stage `{stage}`\n{}",
                rerun.describe()
            );
        }
        assert_eq!(pending(&st), Vec::<String>::new(), "round {rounds}");
        let verify = pretext(dir.path(), &["store", "verify", &p]);
        verify
            .expect_code(0)
            .expect_stdout_has(&[&format!("{} entries ok, 0 corrupt", 4 * (rounds + 1))]);
    }
    eprintln!(
        "{kills} kills in {rounds} rounds; by stages committed before the kill: {phases:?}; \
         {resumed} rerun(s) resumed from a checkpoint; delays (ms): {points:?}"
    );
    assert!(
        kills >= 20,
        "only {kills} of {rounds} runs were still running when killed (delays {points:?} ms, \
         last time scale {scale:?})"
    );
    // Over all rounds, kills landed both before and after some stage committed.
    assert!(
        reused_total > 0,
        "no kill landed after a commit: {points:?}"
    );
}

#[test]
fn a_second_run_with_wait_waits_for_the_lock_then_reuses_everything() {
    let dir = tempdir();
    let tiny = Tiny {
        epochs: 6,
        ..Tiny::default()
    };
    let p = tiny.write(dir.path()).display().to_string();
    let st = store(dir.path());
    let ssl_key = plan_keys(&pretext(dir.path(), &["plan", &p]).stdout)["ssl"].clone();
    let mut first = command(dir.path(), &["run", &p])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !pending(&st).iter().any(|n| n.starts_with(&ssl_key)) {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended before pretraining was seen"
        );
        assert!(start.elapsed() < WAIT_LIMIT, "pretraining never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = pretext(dir.path(), &["run", "--wait", &p]);
    let first_status = first.wait().unwrap();
    assert!(first_status.success(), "{first_status}");
    second
        .expect_code(0)
        .expect_stderr_has(&["waiting for another pretext run to finish this stage"]);
    expect_statuses(
        &second,
        &[
            ("data", "cached"),
            ("views", "cached"),
            ("ssl", "cached"),
            ("eval", "cached"),
        ],
    );
    pretext(dir.path(), &["store", "verify", &p])
        .expect_code(0)
        .expect_stdout_has(&["4 entries ok, 0 corrupt"]);
}

/// `pretext run` with RLIMIT_FSIZE (`ulimit -f`, 512-byte blocks in sh) and SIGXFSZ ignored:
/// writes past the limit fail with EFBIG, as on a full disk.
fn run_with_file_size_limit(dir: &Path, p: &str, blocks: u32) -> Run {
    let script = format!(
        "trap '' XFSZ; ulimit -f {blocks}; exec '{}' run '{}'",
        pretext_bin().display(),
        p
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .env_remove("PRETEXT_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = Run {
        args: vec![script],
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    run.assert_no_panic();
    assert!(!run.stderr.contains("internal error"), "{}", run.describe());
    run
}

#[test]
fn a_full_disk_fails_clearly_and_leaves_the_store_consistent() {
    let dir = tempdir();
    let tiny = Tiny {
        epochs: 2,
        ..Tiny::default()
    };
    let p = tiny.write(dir.path()).display().to_string();
    let st = store(dir.path());
    // 30 KB: the ingested dataset does not fit; 200 KB: it does, the pretraining checkpoint
    // does not.
    for (blocks, stage) in [(60, "data"), (400, "ssl")] {
        let run = run_with_file_size_limit(dir.path(), &p, blocks);
        assert!(
            run.code == 1 || run.code == 2,
            "exit code 1 or 2\n{}",
            run.describe()
        );
        run.expect_stderr_has(&[
            &format!("stage `{stage}`"),
            "File too large",
            &st.display().to_string(),
        ]);
        assert!(
            !dir.path().join("pretext.lock").exists(),
            "{}",
            run.describe()
        );
        pretext(dir.path(), &["store", "verify", &p]).expect_code(0);
    }
    // With space again, the run completes and reuses what was committed.
    let run = pretext(dir.path(), &["run", &p]);
    run.expect_code(0);
    expect_statuses(
        &run,
        &[
            ("data", "cached"),
            ("views", "cached"),
            ("ssl", "ran"),
            ("eval", "ran"),
        ],
    );
    assert_eq!(pending(&st), Vec::<String>::new());
    pretext(dir.path(), &["store", "verify", &p])
        .expect_code(0)
        .expect_stdout_has(&["4 entries ok, 0 corrupt"]);
}

/// The tiny pipeline with `store = <store>` in [pipeline].
fn with_store(dir: &Path, store: &str) -> String {
    let text = Tiny::default()
        .toml()
        .replace("seed = 7\n", &format!("seed = 7\nstore = {store}\n"));
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn unusable_store_paths_are_clear_errors_and_nothing_is_written_elsewhere() {
    let dir = tempdir();
    // Below a regular file: cannot be created.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let p = with_store(dir.path(), &toml_path(&file.join("store")));
    pretext(dir.path(), &["run", &p])
        .expect_code(1)
        .expect_stderr_has(&[
            &file.join("store").display().to_string(),
            "cannot create or write the pretext store",
        ]);
    // A regular file itself.
    let p = with_store(dir.path(), &toml_path(&file));
    pretext(dir.path(), &["run", &p])
        .expect_code(1)
        .expect_stderr_has(&[&file.display().to_string()]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");

    // The filesystem root: refused before anything is written there.
    let before: Vec<bool> = ["/objects", "/runs", "/store.lock"]
        .iter()
        .map(|p| Path::new(p).exists())
        .collect();
    let p = with_store(dir.path(), "\"/\"");
    pretext(dir.path(), &["run", &p])
        .expect_code(1)
        .expect_stderr_has(&[
            "refusing to use / as the pretext store",
            "root of the filesystem",
        ]);
    let after: Vec<bool> = ["/objects", "/runs", "/store.lock"]
        .iter()
        .map(|p| Path::new(p).exists())
        .collect();
    assert_eq!(before, after, "pretext wrote into /");

    // A folder with other contents (here: the pipeline's own folder).
    let p = with_store(dir.path(), "\".\"");
    pretext(dir.path(), &["run", &p])
        .expect_code(1)
        .expect_stderr_has(&["refusing to use", "already holds other files"]);
    assert!(!dir.path().join("objects").exists());
    assert!(!dir.path().join("store.lock").exists());
    assert!(!dir.path().join("pretext.lock").exists());

    // A new folder, and then the same store again, are fine.
    let p = with_store(dir.path(), "\"out/store\"");
    pretext(dir.path(), &["run", &p]).expect_code(0);
    let again = pretext(dir.path(), &["run", &p]);
    again.expect_code(0);
    assert!(dir.path().join("out/store/objects").is_dir());
}

#[test]
fn locked_run_detects_a_plugin_library_replaced_at_the_same_path() {
    let dir = tempdir();
    let lib = dir.path().join(dylib_name("swapped"));
    std::fs::copy(&fixtures().external_objective, &lib).unwrap();
    let tiny = Tiny {
        objective: simclr_objective("external_simclr"),
        plugin_paths: vec![lib.clone()],
        ..Tiny::default()
    };
    let p = tiny.write(dir.path()).display().to_string();
    pretext(dir.path(), &["run", &p]).expect_code(0);
    pretext(dir.path(), &["run", "--locked", &p]).expect_code(0);
    // A different build of the library at the same path (its bytes differ; it still loads).
    let mut bytes = std::fs::read(&lib).unwrap();
    bytes.extend_from_slice(b"a different build");
    std::fs::write(&lib, bytes).unwrap();
    let run = pretext(dir.path(), &["run", "--locked", &p]);
    run.expect_code(1).expect_stderr_has(&[
        "--locked",
        "stage `ssl`",
        "plugin `external_simclr` changed",
    ]);
    assert_eq!(
        entries(&store(dir.path()), "pretrain").len(),
        1,
        "--locked runs nothing when keys differ"
    );
}

/// The tiny pipeline with an objective of the `panicky` fixture library and 3 epochs.
fn fault_pipeline(dir: &Path, objective: &str, extra: &str) -> String {
    let tiny = Tiny {
        epochs: 3,
        objective: objective.into(),
        plugin_paths: vec![fixtures().panicky.clone()],
        ..Tiny::default()
    };
    let text = tiny
        .toml()
        .replace("batch_size = 128\n", &format!("batch_size = 128\n{extra}"));
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn nan_loss_stops_the_stage_at_its_step_and_keeps_the_last_good_checkpoint() {
    let dir = tempdir();
    // 480 training samples, batch 128: 4 steps per epoch; NaN from step 6 (epoch 2).
    let p = fault_pipeline(
        dir.path(),
        "{ plugin = \"nan_loss\", finite_steps = 6 }",
        "",
    );
    let ssl_key = plan_keys(&pretext(dir.path(), &["plan", &p]).stdout)["ssl"].clone();
    let run = pretext(dir.path(), &["run", &p]);
    run.expect_code(1).expect_stderr_has(&[
        "stage `ssl` failed",
        "objective `nan_loss`",
        &fixtures().panicky.display().to_string(),
        "returned a non-finite loss (NaN) at epoch 2 step 6",
        "the learning rate is likely too high",
        "the last good checkpoint (after epoch 1) is kept in",
    ]);
    let ckpt_root = store(dir.path()).join("checkpoints/pretrain");
    let kept: Vec<PathBuf> = std::fs::read_dir(&ckpt_root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| {
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&ssl_key)
        })
        .collect();
    assert_eq!(kept.len(), 1, "{}", run.describe());
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kept[0].join("checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(meta["epochs_done"], 1, "{meta}");
    assert!(run.stderr.contains(&kept[0].display().to_string()));
    assert!(entries(&store(dir.path()), "pretrain").is_empty());
    assert_eq!(pending(&store(dir.path())), Vec::<String>::new());

    // NaN from the very first step: the data or the objective, not the learning rate.
    let p = fault_pipeline(dir.path(), "{ plugin = \"nan_loss\" }", "");
    pretext(dir.path(), &["run", &p])
        .expect_code(1)
        .expect_stderr_has(&[
            "objective `nan_loss`",
            "returned a non-finite loss (NaN) at epoch 1 step 0",
            "not the learning rate",
        ]);
}

#[test]
fn a_non_scalar_loss_is_a_stage_error_naming_the_plugin() {
    let dir = tempdir();
    for (objective, shape) in [
        ("{ plugin = \"wrong_shape\" }", "(1, 8)"),
        (
            "{ plugin = \"wrong_shape\", shape = \"projection\" }",
            "(128, 8)",
        ),
        // After many good steps (4 per epoch: in the third epoch).
        ("{ plugin = \"wrong_shape\", good_steps = 9 }", "(1, 8)"),
    ] {
        let p = fault_pipeline(dir.path(), objective, "");
        pretext(dir.path(), &["run", &p])
            .expect_code(1)
            .expect_stderr_has(&[
                "stage `ssl` failed",
                "objective `wrong_shape`",
                &fixtures().panicky.display().to_string(),
                &format!("returned a loss of shape {shape}"),
                "a loss must be a scalar",
            ]);
    }
}

#[test]
fn an_exploding_learning_rate_is_reported_as_such() {
    let dir = tempdir();
    let tiny = Tiny {
        epochs: 3,
        ..Tiny::default()
    };
    let text = tiny.toml().replace(
        "batch_size = 128\n",
        "batch_size = 128\noptim = { name = \"sgd\", lr = 1e6 }\n",
    );
    let p = dir.path().join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    let run = pretext(dir.path(), &["run", &p.display().to_string()]);
    run.expect_code(1).expect_stderr_has(&[
        "stage `ssl` failed",
        "training diverged",
        "the learning rate is likely too high (optim.lr = 1000000",
        "lower `optim.lr`",
    ]);
    assert!(!run.stderr.contains("internal error"), "{}", run.describe());
}

/// Every file under `root` (relative paths), with its blake3 digest.
fn tree(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, pretext::store::digest_file(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn a_run_writes_only_into_its_store_and_its_lockfile() {
    let root = tempdir();
    let r = root.path();
    // Data and plugin reached through `..`, the store in a sibling folder.
    for d in ["proj", "data", "plugins"] {
        std::fs::create_dir(r.join(d)).unwrap();
    }
    let (images, labels) = mnist();
    std::fs::copy(&images, r.join("data/images.gz")).unwrap();
    std::fs::copy(&labels, r.join("data/labels.gz")).unwrap();
    let lib = r.join("plugins").join(dylib_name("ext"));
    std::fs::copy(&fixtures().external_objective, &lib).unwrap();
    let text = Tiny {
        objective: simclr_objective("external_simclr"),
        ..Tiny::default()
    }
    .toml()
    .replace(&toml_path(&images), "\"../data/images.gz\"")
    .replace(&toml_path(&labels), "\"../data/labels.gz\"")
    .replace(
        "seed = 7\n",
        "seed = 7\nstore = \"../out/store\"\nplugin_paths = [\"../plugins/libext.so\"]\n",
    )
    .replace("libext.so", &dylib_name("ext"));
    std::fs::write(r.join("proj/pipeline.toml"), text).unwrap();
    let before = tree(r);
    // Run from yet another folder: nothing may land in the working directory either.
    let cwd = tempdir();
    let p = r.join("proj/pipeline.toml").display().to_string();
    pretext(cwd.path(), &["run", &p]).expect_code(0);
    assert!(tree(cwd.path()).is_empty(), "{:?}", tree(cwd.path()));
    let after = tree(r);
    for (file, digest) in &before {
        assert_eq!(after.get(file), Some(digest), "{file} changed or vanished");
    }
    let new: Vec<&String> = after
        .keys()
        .filter(|f| !before.contains_key(*f))
        .filter(|f| !f.starts_with("out/store/"))
        .collect();
    assert_eq!(
        new,
        vec!["proj/pretext.lock"],
        "files written outside the store"
    );
}

#[test]
fn plugins_load_only_from_explicit_paths_and_plugin_folders() {
    let dir = tempdir();
    // The library sits beside the pipeline and in the working directory, but is not named.
    let cwd = tempdir();
    for d in [dir.path(), cwd.path()] {
        std::fs::copy(
            &fixtures().external_objective,
            d.join(dylib_name("external_objective")),
        )
        .unwrap();
    }
    let tiny = Tiny {
        objective: simclr_objective("external_simclr"),
        ..Tiny::default()
    };
    let p = tiny.write(dir.path()).display().to_string();
    pretext(cwd.path(), &["run", &p])
        .expect_code(2)
        .expect_stderr_has(&["no plugin provides objective `external_simclr`"]);
    // Named through a plugin folder, it loads.
    let run = pretext(
        cwd.path(),
        &["run", "--plugin-dir", &dir.path().display().to_string(), &p],
    );
    run.expect_code(0);
}

/// Every `.tmp` file below `dir`.
fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(tmp_files(&p));
            } else if p.extension().is_some_and(|x| x == "tmp") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_full_disk_mid_pretrain_says_so_and_leaves_no_partial_checkpoint() {
    let dir = tempdir();
    let tiny = Tiny {
        epochs: 2,
        ..Tiny::default()
    };
    let p = tiny.write(dir.path()).display().to_string();
    let st = store(dir.path());
    // A file-size limit that the dataset fits and the checkpoint does not: the failed write
    // must not leave its partial `.tmp` behind.
    let run = run_with_file_size_limit(dir.path(), &p, 400);
    run.expect_stderr_has(&["stage `ssl`", "File too large", "ulimit -f"]);
    let ckpts = st.join("checkpoints").join("pretrain");
    let keys: Vec<PathBuf> = std::fs::read_dir(&ckpts)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(keys.len(), 1, "one pretrain checkpoint folder: {keys:?}");
    assert_eq!(tmp_files(&st.join("checkpoints")), Vec::<PathBuf>::new());
    // A real "no space left on device" (ENOSPC): the checkpoint's temporary file is a link to
    // /dev/full, so the kernel refuses the write exactly as a full disk does.
    if Path::new("/dev/full").exists() {
        let tmp = keys[0].join("checkpoint.safetensors.tmp");
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let run = pretext(dir.path(), &["run", &p]);
        run.expect_code(1).expect_stderr_has(&[
            "stage `ssl`",
            "the disk is full: free some space and run again",
            "No space left on device",
            &keys[0].display().to_string(),
        ]);
        for debug in ["IoError", "Os {", "kind:"] {
            assert!(
                !run.stderr.contains(debug),
                "a debug dump: {}",
                run.describe()
            );
        }
        assert!(
            std::fs::symlink_metadata(&tmp).is_err(),
            "the failed checkpoint's temporary file is removed"
        );
        pretext(dir.path(), &["store", "verify", &p]).expect_code(0);
    }
    // With space again the run finishes.
    pretext(dir.path(), &["run", &p]).expect_code(0);
    assert_eq!(tmp_files(&st), Vec::<PathBuf>::new());
}

#[test]
fn a_plugin_that_prints_to_stdout_does_not_mix_into_the_summary_table() {
    let dir = tempdir();
    let p = fault_pipeline(dir.path(), "{ plugin = \"chatty\" }", "");
    let message = "chatty objective says hello on stdout";
    for args in [vec!["validate", &p], vec!["run", &p], vec!["show", &p]] {
        let run = pretext(dir.path(), &args);
        run.expect_code(0);
        assert!(
            !run.stdout.contains(message),
            "`{}`: the plugin's text is in stdout\n{}",
            args[0],
            run.describe()
        );
        if args[0] != "show" {
            // `show` loads no plugin.
            run.expect_stderr_has(&[message]);
        }
    }
    let run = pretext(dir.path(), &["run", &p]);
    expect_statuses(
        &run,
        &[
            ("data", "cached"),
            ("views", "cached"),
            ("ssl", "cached"),
            ("eval", "cached"),
        ],
    );
}

/// `pretext run` with `PRETEXT_PLUGIN_TIMEOUT` set; fails the test after `WAIT_LIMIT`.
fn run_with_plugin_timeout(dir: &Path, p: &str, seconds: &str) -> (i32, String) {
    let child = command(dir, &["run", p])
        .env("PRETEXT_PLUGIN_TIMEOUT", seconds)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish_within(child, WAIT_LIMIT, "pretext run with a hanging plugin")
}

#[test]
fn a_plugin_that_never_returns_or_exits_the_process_stops_the_run_with_its_name() {
    for (how, needle) in [
        ("hang", "did not return within 2 s"),
        ("quit", "ended the process (it called exit)"),
    ] {
        let dir = tempdir();
        let objective = format!("{{ plugin = \"misbehaves\", how = \"{how}\" }}");
        let p = fault_pipeline(dir.path(), &objective, "");
        let (code, err) = run_with_plugin_timeout(dir.path(), &p, "2");
        assert_eq!(code, 1, "{how}: exit code\n{err}");
        for n in ["objective `misbehaves`", needle, "the store is consistent"] {
            assert!(err.contains(n), "{how}: stderr lacks {n:?}\n{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        // The store is usable: verify passes and the stages before pretraining are reused.
        pretext(dir.path(), &["store", "verify", &p]).expect_code(0);
        let plan = pretext(dir.path(), &["plan", &p]);
        plan.expect_code(0);
        assert!(plan.stdout.contains("cached"), "{}", plan.describe());
    }
}
