//! TensorBoard event files beside the run log: `pretext run` writes one folder per stage that
//! ran under `<store>/runs/<pipeline>/tensorboard/`, and TensorBoard's own reader (the
//! `tensorboard` Python package) reads back the per-step loss and learning rate, every
//! per-epoch field of `history.json`, a fine-tune's loss per step and epoch, and every metric of
//! `metrics.json`, at the right steps. A cached stage writes nothing; a rerun's file replaces
//! the earlier curves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{expect_statuses, pretext, read_json, store, tempdir, Tiny};

/// The stages of the test pipeline: the tiny one and a fine-tune of its encoder.
const STAGES: [&str; 5] = ["data", "views", "ssl", "eval", "tune"];

/// The TensorBoard version the test is checked with (`.ci/run` installs it).
const TENSORBOARD: &str = "tensorboard==2.21.0";

/// Prints `{run folder: {tag: [[step, value], ...]}}` as TensorBoard loads the folders.
const READER: &str = r#"
import json, sys
try:
    from tensorboard.backend.event_processing import event_accumulator as ea
except ImportError as e:
    print("cannot import tensorboard:", e, file=sys.stderr)
    sys.exit(3)
out = {}
for d in sys.argv[1:]:
    acc = ea.EventAccumulator(d, size_guidance={ea.SCALARS: 0})
    acc.Reload()
    out[d] = {t: [[s.step, s.value] for s in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
print(json.dumps(out))
"#;

type Curves = BTreeMap<String, Vec<(u64, f64)>>;

/// The scalars of each stage folder, read with TensorBoard's `EventAccumulator`.
fn read_curves(root: &Path, stages: &[&str]) -> BTreeMap<String, Curves> {
    let dirs: Vec<String> = stages
        .iter()
        .map(|s| root.join(s).display().to_string())
        .collect();
    let out = Command::new("python3")
        .arg("-c")
        .arg(READER)
        .args(&dirs)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot start python3 ({e}); this test reads event files with the `tensorboard` package: install python3, then `python3 -m pip install {TENSORBOARD}`")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(3),
        "the `tensorboard` Python package is missing: run `python3 -m pip install {TENSORBOARD}`\n{stderr}"
    );
    assert!(
        out.status.success(),
        "the TensorBoard reader failed\n{stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("reader output is not JSON: {e}\n{stderr}"));
    stages
        .iter()
        .zip(&dirs)
        .map(|(stage, d)| {
            let tags = v[d].as_object().expect("one object per folder");
            let curves = tags
                .iter()
                .map(|(tag, points)| {
                    let pts = points
                        .as_array()
                        .expect("points")
                        .iter()
                        .map(|p| (p[0].as_u64().expect("step"), p[1].as_f64().expect("value")))
                        .collect();
                    (tag.clone(), pts)
                })
                .collect();
            (stage.to_string(), curves)
        })
        .collect()
}

/// Equal up to the f32 rounding of TensorBoard's `simple_value`.
#[track_caller]
fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        got == want || (got - want).abs() <= 1e-6 * want.abs(),
        "{what}: TensorBoard has {got}, the stage wrote {want}"
    );
}

/// The entry folder of each stage in the run log.
fn entry_dirs(dir: &Path, pipeline: &Path) -> BTreeMap<String, PathBuf> {
    let show = pretext(dir, &["show", "--json", &pipeline.display().to_string()]);
    show.expect_code(0);
    let log: serde_json::Value = serde_json::from_str(&show.stdout).expect("show --json");
    log["stages"]
        .as_object()
        .expect("stages")
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                PathBuf::from(s["entry"].as_str().expect("entry")),
            )
        })
        .collect()
}

/// Event files in a stage's folder.
fn event_files(root: &Path, stage: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root.join(stage)) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents."))
        })
        .collect();
    v.sort();
    v
}

/// Every numeric field of a JSON object, nested objects as `field.key`.
fn numeric_fields(v: &serde_json::Value, name: &str, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => out.push((name.to_string(), n.as_f64().unwrap())),
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let sub = if name.is_empty() {
                    k.clone()
                } else {
                    format!("{name}.{k}")
                };
                numeric_fields(v, &sub, out);
            }
        }
        _ => {}
    }
}

/// The curves TensorBoard shows equal what the pretrain and probe entries hold.
fn check_curves(dir: &Path, pipeline: &Path, epochs: u64) {
    let root = store(dir).join("runs").join("tiny").join("tensorboard");
    let curves = read_curves(&root, &STAGES);
    let entries = entry_dirs(dir, pipeline);

    // Pretraining: one point per optimiser step of loss, learning rate and gradient norm.
    let ssl = &curves["ssl"];
    let metrics = read_json(&entries["ssl"].join("metrics.json"));
    let steps = metrics["steps"].as_f64().expect("steps") as u64;
    assert!(steps >= epochs * 2, "{steps} steps in {epochs} epochs");
    for tag in ["train/loss", "train/lr", "train/grad_norm"] {
        let at: Vec<u64> = ssl[tag].iter().map(|p| p.0).collect();
        assert_eq!(at, (1..=steps).collect::<Vec<_>>(), "steps of {tag}");
        assert!(
            ssl[tag].iter().all(|p| p.1.is_finite()),
            "{tag}: {:?}",
            ssl[tag]
        );
    }
    assert!(ssl["train/lr"].iter().all(|p| p.1 > 0.0));

    // Per epoch, at the epoch's last step: every numeric field of history.json.
    let history = read_json(&entries["ssl"].join("history.json"));
    let history = history.as_array().expect("history.json is a list");
    assert_eq!(history.len() as u64, epochs);
    let per_epoch = steps / epochs;
    for (i, rec) in history.iter().enumerate() {
        let step = (i as u64 + 1) * per_epoch;
        let mut fields = Vec::new();
        numeric_fields(rec, "", &mut fields);
        for f in [
            "loss",
            "lr",
            "embedding_std",
            "effective_rank",
            "uniformity",
        ] {
            assert!(fields.iter().any(|(k, _)| k == f), "history has {f}: {rec}");
        }
        for (field, want) in fields {
            let tag = format!("epoch/{field}");
            let points = ssl
                .get(&tag)
                .unwrap_or_else(|| panic!("no `{tag}` in {:?}", ssl.keys()));
            assert_eq!(points.len() as u64, epochs, "{tag}: {points:?}");
            assert_eq!(points[i].0, step, "{tag} of epoch {}", i + 1);
            assert_close(points[i].1, want, &format!("{tag} of epoch {}", i + 1));
        }
        // The epoch's loss is the mean of its steps' losses; its rate that of its last step.
        let losses: Vec<f64> = ssl["train/loss"]
            .iter()
            .filter(|p| p.0 > step - per_epoch && p.0 <= step)
            .map(|p| p.1)
            .collect();
        let mean = losses.iter().sum::<f64>() / losses.len() as f64;
        let want = rec["loss"].as_f64().unwrap();
        assert!((mean - want).abs() <= 1e-5 * want.abs(), "{mean} vs {want}");
        let lr = ssl["train/lr"][step as usize - 1].1;
        assert_close(lr, rec["lr"].as_f64().unwrap(), "lr");
    }

    // Fine-tuning: loss and learning rate per step, the mean loss per epoch at its last step.
    let tune = &curves["tune"];
    let epoch_loss = &tune["epoch/loss"];
    assert_eq!(epoch_loss.len(), 2, "{epoch_loss:?}");
    let tune_steps = epoch_loss[1].0;
    assert_eq!(epoch_loss[0].0 * 2, tune_steps, "{epoch_loss:?}");
    for tag in ["train/loss", "train/lr"] {
        let at: Vec<u64> = tune[tag].iter().map(|p| p.0).collect();
        assert_eq!(
            at,
            (1..=tune_steps).collect::<Vec<_>>(),
            "tune: steps of {tag}"
        );
    }
    for (i, (end, want)) in epoch_loss.iter().enumerate() {
        let start = i as u64 * epoch_loss[0].0;
        let losses: Vec<f64> = tune["train/loss"]
            .iter()
            .filter(|p| p.0 > start && p.0 <= *end)
            .map(|p| p.1)
            .collect();
        let mean = losses.iter().sum::<f64>() / losses.len() as f64;
        assert!(
            (mean - want).abs() <= 1e-5 * want.abs(),
            "tune: {mean} vs {want}"
        );
    }

    // Results: every metric of each stage's metrics.json, at its last step (0 without steps).
    let last_steps = [
        ("data", 0),
        ("views", 0),
        ("ssl", steps),
        ("eval", 0),
        ("tune", tune_steps),
    ];
    for (stage, last) in last_steps {
        let m = read_json(&entries[stage].join("metrics.json"));
        let m = m.as_object().expect("metrics.json is an object");
        assert!(!m.is_empty(), "{stage} has metrics");
        for (k, want) in m {
            let tag = format!("metrics/{k}");
            let points = curves[stage]
                .get(&tag)
                .unwrap_or_else(|| panic!("{stage}: no `{tag}` in {:?}", curves[stage].keys()));
            assert_eq!(points.len(), 1, "{stage} {tag}: {points:?}");
            assert_eq!(points[0].0, last, "{stage} {tag}");
            assert_close(
                points[0].1,
                want.as_f64().unwrap(),
                &format!("{stage} {tag}"),
            );
        }
    }
    assert!(curves["eval"].contains_key("metrics/linear.accuracy"));
    assert!(curves["eval"].contains_key("metrics/knn.accuracy"));
}

#[test]
fn tensorboard_reads_the_curves_of_the_stages_that_ran() {
    let dir = tempdir();
    let tiny = Tiny {
        epochs: 2,
        ..Tiny::default()
    };
    let tune =
        "\n[stages.tune]\nkind = \"finetune\"\nencoder = \"ssl\"\ndata = \"data\"\nepochs = 2\n";
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, tiny.toml() + tune).expect("write the pipeline");
    let p = pipeline.display().to_string();
    let root = store(dir.path())
        .join("runs")
        .join("tiny")
        .join("tensorboard");

    pretext(dir.path(), &["run", &p]).expect_code(0);
    for stage in STAGES {
        assert_eq!(
            event_files(&root, stage).len(),
            1,
            "{stage} in {}",
            root.display()
        );
    }
    check_curves(dir.path(), &pipeline, 2);

    // Everything cached: nothing new is written.
    let again = pretext(dir.path(), &["run", &p]);
    again.expect_code(0);
    expect_statuses(
        &again,
        &[
            ("data", "cached"),
            ("views", "cached"),
            ("ssl", "cached"),
            ("eval", "cached"),
            ("tune", "cached"),
        ],
    );
    for stage in STAGES {
        assert_eq!(
            event_files(&root, stage).len(),
            1,
            "{stage} after a cached run"
        );
    }

    // A rerun with fewer epochs adds a file to the stages that ran; TensorBoard shows only
    // the new curves (the earlier file's points are replaced, not mixed in).
    let shorter = pretext(dir.path(), &["run", "--set", "stages.ssl.epochs=1", &p]);
    shorter.expect_code(0);
    let files = [
        ("data", 1),
        ("views", 1),
        ("ssl", 2),
        ("eval", 2),
        ("tune", 2),
    ];
    for (stage, files) in files {
        assert_eq!(
            event_files(&root, stage).len(),
            files,
            "{stage} after the rerun"
        );
    }
    check_curves(dir.path(), &pipeline, 1);
}
