//! Curriculum pretraining (`curriculum = [..]` in a pretrain stage): phases train at their own
//! view size, crop scale and batch size, in order; the schedule is part of the stage key; a
//! run killed in a later phase resumes there to exactly the weights of an uninterrupted run;
//! phases a model or objective cannot take are refused before anything runs.

use std::path::Path;

use crate::support::{
    entries, kill_after_checkpoint, mnist_views_pipeline, plan_keys, pretext, read_json, store,
    tempdir, write_pipeline as write,
};

/// 600 MNIST digits at 28x28, two crops (`views`), and a SimCLR stage on a mean-pooled ConvNet
/// with `curriculum` (its TOML array) and the stage key lines in `extra`.
fn pipeline(curriculum: &str, extra: &str) -> String {
    let views = [
        r#"[{ name = "random_resized_crop", scale = [0.5, 1.0] }]"#,
        r#"[{ name = "random_resized_crop", scale = [0.5, 1.0] }, { name = "gaussian_noise", std = 0.05 }]"#,
    ];
    format!(
        r#"{}
[stages.ssl]
kind = "pretrain"
input = "views"
objective = {{ plugin = "simclr", temperature = 0.5, projector_hidden = 32, projector_dim = 16 }}
model = {{ arch = "convnet", width = 4, embed_dim = 16 }}
optim = {{ lr = 2e-3, warmup_epochs = 1 }}
batch_size = 128
curriculum = {curriculum}
{extra}
"#,
        mnist_views_pipeline("curriculum", 5, &views)
    )
}

const PHASES: &str =
    "[{ epochs = 2, size = 16, scale = [0.6, 1.0], batch_size = 64 }, { epochs = 2 }]";

#[test]
fn phases_train_at_their_sizes_and_batches_and_key_the_stage() {
    let dir = tempdir();
    let p = write(dir.path(), &pipeline(PHASES, ""));
    let run = pretext(dir.path(), &["run", &p]);
    run.expect_code(0).expect_stderr_has(&[
        "curriculum phase phase=1 of=2 epochs=1..=2 size=16x16 batch=64",
        "curriculum phase phase=2 of=2 epochs=3..=4 size=28x28 batch=128",
    ]);
    let entry = &entries(&store(dir.path()), "pretrain")[0];
    let history = read_json(&entry.join("history.json"));
    let phases: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["phase"].as_u64().expect("every epoch names its phase"))
        .collect();
    assert_eq!(phases, [1, 1, 2, 2]);
    // 480 train rows: 8 batches of 64 (the last one 32) per epoch of phase 1, 4 of 128
    // (the last 96) per epoch of phase 2.
    let m = read_json(&entry.join("metrics.json"));
    assert_eq!(m["epochs"].as_f64(), Some(4.0));
    assert_eq!(m["steps"].as_f64(), Some((2 * 8 + 2 * 4) as f64));
    // The learning rate warms up over epoch 1 and decays to the end of phase 2.
    let lr: Vec<f64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["lr"].as_f64().unwrap())
        .collect();
    assert!(
        lr.windows(2).all(|w| w[1] <= w[0]),
        "lr after warm-up: {lr:?}"
    );

    // The schedule is part of the key: another size, scale or batch is another stage;
    // written `epochs` equal to the phases' sum changes nothing.
    let keys = |text: String| {
        let d = tempdir();
        let p = write(d.path(), &text);
        let plan = pretext(d.path(), &["plan", &p]);
        plan.expect_code(0);
        plan_keys(&plan.stdout)["ssl"].clone()
    };
    let base = keys(pipeline(PHASES, ""));
    assert_eq!(base, keys(pipeline(PHASES, "epochs = 4")));
    for other in [
        PHASES.replace("size = 16", "size = 20"),
        PHASES.replace("[0.6, 1.0]", "[0.5, 1.0]"),
        PHASES.replace("batch_size = 64", "batch_size = 32"),
        "[{ epochs = 4 }]".to_string(),
    ] {
        assert_ne!(base, keys(pipeline(&other, "")), "{other}");
    }
    let flat = pipeline(PHASES, "").replace(&format!("curriculum = {PHASES}"), "epochs = 4");
    assert_ne!(base, keys(flat));
}

fn encoder_digest(lock: &Path) -> String {
    read_json(lock)["pipelines"]["curriculum"]["stages"]["ssl"]["outputs"]["encoder.safetensors"]
        .as_str()
        .expect("encoder digest in the lockfile")
        .to_string()
}

/// Killed after the first phase's checkpoint (in the second phase, or at its start), the
/// rerun resumes in phase 2 — its size, batch and place in the schedule — and ends with the
/// very encoder of a run that was never interrupted.
#[test]
fn a_run_killed_in_a_later_phase_resumes_there_to_identical_weights() {
    // Phase 1 is quick (small images); phase 2 at full size is slower, so the kill lands in it.
    let phases = "[{ epochs = 2, size = 12, batch_size = 64 }, { epochs = 4, batch_size = 32 }]";
    let whole = tempdir();
    let p = write(whole.path(), &pipeline(phases, ""));
    pretext(whole.path(), &["run", &p]).expect_code(0);
    let want = encoder_digest(&whole.path().join("pretext.lock"));

    let dir = tempdir();
    let p = write(dir.path(), &pipeline(phases, ""));
    let st = store(dir.path());
    let done = kill_after_checkpoint(dir.path(), &p, 2);
    assert!((2..6).contains(&done), "killed after {done} epochs");

    let rerun = pretext(dir.path(), &["run", &p]);
    rerun
        .expect_code(0)
        .expect_stderr_has(&["resuming from checkpoint"]);
    assert_eq!(
        encoder_digest(&dir.path().join("pretext.lock")),
        want,
        "resumed weights differ from an uninterrupted run (killed after {done} epochs)"
    );
    let entry = &entries(&st, "pretrain")[0];
    let history = read_json(&entry.join("history.json"));
    let phases: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["phase"].as_u64().unwrap())
        .collect();
    assert_eq!(phases, [1, 1, 2, 2, 2, 2]);
}

/// Every mistake in a curriculum is an error naming the place and what to do, exit code 2,
/// from `validate` (so before anything runs).
#[test]
fn bad_curricula_are_refused_before_running() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            pipeline(PHASES, "epochs = 5"),
            vec![
                ":28:10:",
                "`stages.ssl.epochs` is 5 but the phases of `stages.ssl.curriculum` add up to 4 epochs",
                "set epochs = 4",
            ],
        ),
        (
            pipeline("[]", ""),
            vec!["`stages.ssl.curriculum` has no phases"],
        ),
        (
            pipeline("[{ size = 16 }]", ""),
            vec!["phase 1 of `stages.ssl.curriculum` has no `epochs`"],
        ),
        (
            pipeline("[{ epochs = 1, resolution = 16 }]", ""),
            vec!["unknown key `resolution` in [stages.ssl.curriculum[0]]"],
        ),
        (
            pipeline("[{ epochs = 1 }, { epochs = 1, scale = [0.9, 0.5] }]", ""),
            vec!["`stages.ssl.curriculum[1].scale` must be [lo, hi] with 0 < lo <= hi <= 1"],
        ),
        (
            pipeline("[{ epochs = 1, batch_size = 0 }]", ""),
            vec!["`stages.ssl.curriculum[0].batch_size` must be a positive integer"],
        ),
        (
            pipeline(PHASES, "").replace(
                "arch = \"convnet\", width = 4",
                "arch = \"mlp\", hidden = [32]",
            ),
            vec![
                "curriculum phase 1 trains at size 16 (the model's input is 28x28)",
                "an `mlp` reads a fixed number of inputs",
            ],
        ),
        (
            pipeline(PHASES, "").replace(
                "arch = \"convnet\", width = 4",
                "arch = \"vit\", patch = 7, dim = 16, depth = 1, heads = 2",
            ),
            vec!["curriculum phase 1", "multiple of the ViT's patch size 7", "1x16x16"],
        ),
        (
            pipeline(PHASES, "").replace(
                r#"[{ name = "random_resized_crop", scale = [0.5, 1.0] }, { name = "gaussian_noise""#,
                r#"[{ name = "gaussian_noise""#,
            ),
            vec![
                "curriculum phase 1",
                "view 2 has none",
                "random_resized_crop",
            ],
        ),
    ];
    for (text, needles) in cases {
        let dir = tempdir();
        let p = write(dir.path(), &text);
        pretext(dir.path(), &["validate", &p])
            .expect_code(2)
            .expect_stderr_has(&needles);
    }
}
