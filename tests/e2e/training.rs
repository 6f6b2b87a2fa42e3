//! Training machinery end to end: the collapse monitor stops a collapsing objective, and a run
//! killed after a checkpoint resumes to exactly the weights of an uninterrupted run.

use std::path::Path;

use crate::support::{
    checkpoint_epochs, expect_statuses, kill_after_checkpoint, pretext, store, tempdir, Tiny,
};

/// SimSiam without its predictor collapses: the monitor stops the stage with a clear error.
#[test]
fn collapsing_objective_is_stopped_by_the_monitor() {
    let dir = tempdir();
    let tiny = Tiny {
        objective:
            "{ plugin = \"simsiam\", predictor = false, projector_hidden = 64, projector_dim = 32 }"
                .into(),
        epochs: 12,
        ..Tiny::default()
    };
    let text = tiny.toml().replace(
        "batch_size = 128",
        "batch_size = 128\noptim = { lr = 0.05 }",
    );
    let p = dir.path().join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    let run = pretext(dir.path(), &["run", &p.display().to_string()]);
    run.expect_code(1).expect_stderr_has(&[
        "stage `ssl` failed",
        "representation collapsed",
        "collapse.min_std = 0.01",
    ]);
    // The same objective with its predictor trains to the end.
    let healthy = tiny.objective.replace("predictor = false, ", "");
    let text = Tiny {
        objective: healthy,
        ..tiny
    }
    .toml()
    .replace(
        "batch_size = 128",
        "batch_size = 128\noptim = { lr = 0.05 }",
    );
    std::fs::write(&p, text).unwrap();
    pretext(dir.path(), &["run", &p.display().to_string()]).expect_code(0);
}

fn encoder_digest(lock: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lock).unwrap()).unwrap();
    v["pipelines"]["tiny"]["stages"]["ssl"]["outputs"]["encoder.safetensors"]
        .as_str()
        .expect("encoder digest in the lockfile")
        .to_string()
}

/// Kill after the second epoch's checkpoint; the rerun resumes there and ends with the very
/// same encoder bytes as a run that was never interrupted (BYOL: EMA teacher and optimizer
/// state are in the checkpoint too).
#[test]
fn killed_pretraining_resumes_to_identical_weights() {
    let tiny = Tiny {
        limit: 2000,
        epochs: 8,
        objective: "{ plugin = \"byol\", projector_hidden = 64, projector_dim = 32, predictor_hidden = 64 }".into(),
        ..Tiny::default()
    };
    let whole = tempdir();
    let p = tiny.write(whole.path()).display().to_string();
    pretext(whole.path(), &["run", &p]).expect_code(0);
    let want = encoder_digest(&whole.path().join("pretext.lock"));

    let dir = tempdir();
    let p = tiny.write(dir.path()).display().to_string();
    let st = store(dir.path());
    let done = kill_after_checkpoint(dir.path(), &p, 2);
    assert!((2..8).contains(&done), "killed after {done} epochs");

    let rerun = pretext(dir.path(), &["run", &p]);
    rerun
        .expect_code(0)
        .expect_stderr_has(&["resuming from checkpoint"]);
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
        encoder_digest(&dir.path().join("pretext.lock")),
        want,
        "resumed weights differ from an uninterrupted run"
    );
    assert!(
        checkpoint_epochs(&st).is_none(),
        "the checkpoint is removed once the stage is committed"
    );
}

/// MAE pretrains a ViT (patches masked per sample, light decoder) and the probe reads the
/// trained ViT; a non-ViT model is refused at validation.
#[test]
fn mae_pretrains_a_vit_end_to_end() {
    let dir = tempdir();
    let tiny = Tiny {
        objective: "{ plugin = \"mae\", mask_ratio = 0.75 }".into(),
        epochs: 2,
        ..Tiny::default()
    };
    let one_view = "views = [[{ name = \"random_resized_crop\", scale = [0.8, 1.0] }]]";
    let text = tiny.toml();
    let start = text.find("views = [").unwrap();
    let end = start + text[start..].find("\n]\n").unwrap() + 3;
    let text = format!("{}{one_view}\n{}", &text[..start], &text[end..]);
    let vit = text.replace(
        "model = { arch = \"mlp\", hidden = [64], embed_dim = 32 }",
        "model = { arch = \"vit\", patch = 7, dim = 16, depth = 1, heads = 2, embed_dim = 32 }",
    );
    let p = dir.path().join("pipeline.toml");
    std::fs::write(&p, &vit).unwrap();
    let ps = p.display().to_string();
    let run = pretext(dir.path(), &["run", &ps]);
    run.expect_code(0);
    let show = pretext(dir.path(), &["show", &ps]);
    show.expect_code(0)
        .expect_stdout_has(&["objective.masked_fraction", "linear.accuracy"]);
    std::fs::write(&p, text).unwrap();
    pretext(dir.path(), &["validate", &ps])
        .expect_code(2)
        .expect_stderr_has(&["needs a vision transformer"]);
}

/// Label-efficiency probes: class-balanced fractions with mean ± std over seeds, the
/// supervised-from-scratch baseline on the same labels, and `expect` gates on those metrics.
#[test]
fn label_fractions_and_the_supervised_baseline_are_reported_and_gated() {
    let dir = tempdir();
    let text = Tiny::default().toml().replace(
        "linear = { epochs = 5 }",
        "linear = { epochs = 5 }\nlabel_fractions = [0.1, 1.0]\nseeds = 2\nsupervised = { epochs = 2 }\nexpect = { \"linear@10%.accuracy\" = { min = 0.12 }, \"supervised@10%.accuracy\" = { max = 1.0 } }",
    );
    let p = dir.path().join("pipeline.toml");
    std::fs::write(&p, &text).unwrap();
    let ps = p.display().to_string();
    pretext(dir.path(), &["run", &ps]).expect_code(0);
    let show = pretext(dir.path(), &["show", "--json", &ps]);
    let log: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let m = &log["stages"]["eval"]["metrics"];
    for key in [
        "linear@10%.accuracy",
        "linear@10%.accuracy_std",
        "knn@10%.accuracy",
        "baseline.linear@10%.accuracy",
        "supervised@10%.accuracy",
        "supervised.accuracy",
        "linear.accuracy",
    ] {
        let v = m[key]
            .as_f64()
            .unwrap_or_else(|| panic!("metric {key} missing: {m}"));
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    // A gate on a fraction metric fails the run with the metric, bound and value.
    std::fs::write(&p, text.replace("{ min = 0.12 }", "{ min = 1.01 }")).unwrap();
    pretext(dir.path(), &["run", &ps])
        .expect_code(1)
        .expect_stderr_has(&["expected `linear@10%.accuracy` >= 1.01, got"]);
}

/// Fine-tuning: full, partial, LoRA (merged into a plain model) and adapters each run,
/// report their trainable parameter counts, and produce an encoder later stages can probe.
#[test]
fn finetune_methods_train_and_their_encoders_can_be_probed() {
    let dir = tempdir();
    let mut text = Tiny::default().toml();
    for (name, extra) in [
        ("full", ""),
        ("partial", "method = \"partial\"\ntrainable_blocks = 1\n"),
        (
            "lora",
            "method = \"lora\"\nlora = { rank = 2, alpha = 4.0 }\n",
        ),
        (
            "adapter",
            "method = \"adapter\"\nadapter = { bottleneck = 4 }\n",
        ),
    ] {
        text.push_str(&format!("\n[stages.tune_{name}]\nkind = \"finetune\"\nencoder = \"ssl\"\ndata = \"data\"\nepochs = 2\n{extra}"));
        text.push_str(&format!("\n[stages.probe_{name}]\nkind = \"probe\"\nencoder = \"tune_{name}\"\ndata = \"data\"\nmethods = [\"knn\"]\nbaseline = false\n"));
    }
    let p = dir.path().join("pipeline.toml");
    std::fs::write(&p, &text).unwrap();
    let ps = p.display().to_string();
    pretext(dir.path(), &["run", &ps]).expect_code(0);
    let show = pretext(dir.path(), &["show", "--json", &ps]);
    let log: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let trainable = |name: &str| {
        log["stages"][format!("tune_{name}")]["metrics"]["trainable_parameters"]
            .as_f64()
            .unwrap()
    };
    let full = trainable("full");
    for name in ["partial", "lora", "adapter"] {
        assert!(
            trainable(name) < full / 2.0,
            "{name}: {} trainable vs {full} for full fine-tuning",
            trainable(name)
        );
        let acc = log["stages"][format!("probe_{name}")]["metrics"]["knn.accuracy"]
            .as_f64()
            .unwrap();
        assert!((0.0..=1.0).contains(&acc));
    }
    // The LoRA-tuned encoder was merged: its file holds no LoRA tensors.
    let entry = log["stages"]["tune_lora"]["entry"].as_str().unwrap();
    let bytes = std::fs::read(std::path::Path::new(entry).join("encoder.safetensors")).unwrap();
    assert!(
        !String::from_utf8_lossy(&bytes[..4096.min(bytes.len())]).contains("lora"),
        "LoRA tensors were saved"
    );
}

/// OOD evaluation: MNIST against Fashion-MNIST with all three scores, and the corruption
/// suite; metrics in range, the raw scores and the corruption grid written.
#[test]
fn ood_eval_scores_a_far_ood_set_and_runs_the_corruption_suite() {
    let dir = tempdir();
    let ws = crate::support::workspace();
    let fashion = (
        ws.join("datasets/fashion-mnist/t10k-2000-images-idx3-ubyte.gz"),
        ws.join("datasets/fashion-mnist/t10k-2000-labels-idx1-ubyte.gz"),
    );
    let mut text = Tiny::default().toml();
    text.push_str(&format!(
        "\n[stages.fashion]\nkind = \"ingest\"\nsource = {{ format = \"idx\", images = {}, labels = {} }}\nlimit = 300\n\n[stages.ood]\nkind = \"ood_eval\"\nencoder = \"ssl\"\ndata = \"data\"\nood = \"fashion\"\ncorruptions = [\"gaussian_noise\", \"rotation\"]\nseverities = [1, 5]\nlinear = {{ epochs = 5 }}\n",
        crate::support::toml_path(&fashion.0),
        crate::support::toml_path(&fashion.1)
    ));
    let p = dir.path().join("pipeline.toml");
    std::fs::write(&p, &text).unwrap();
    let ps = p.display().to_string();
    pretext(dir.path(), &["run", &ps]).expect_code(0);
    let show = pretext(dir.path(), &["show", "--json", &ps]);
    let log: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let m = &log["stages"]["ood"]["metrics"];
    for key in [
        "ood.knn.auroc",
        "ood.mahalanobis.auroc",
        "ood.max_softmax.auroc",
        "ood.knn.fpr95",
        "clean_accuracy",
        "corruption.gaussian_noise.5.accuracy",
        "corruption.rotation.error",
        "corruption.mean_error",
    ] {
        let v = m[key]
            .as_f64()
            .unwrap_or_else(|| panic!("metric {key} missing: {m}"));
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    let entry = std::path::PathBuf::from(log["stages"]["ood"]["entry"].as_str().unwrap());
    let scores: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(entry.join("ood_scores.json")).unwrap())
            .unwrap();
    assert_eq!(scores.as_array().unwrap().len(), 3);
    assert!(entry.join("corruptions.json").is_file());
    // An unknown corruption is a validation error with a suggestion.
    std::fs::write(&p, text.replace("\"rotation\"]", "\"rotaton\"]")).unwrap();
    pretext(dir.path(), &["validate", &ps])
        .expect_code(2)
        .expect_stderr_has(&["unknown corruption `rotaton`", "rotation"]);
}

/// Digits, 32×32, as an image folder of ten class folders: `per_class` MNIST images each,
/// padded by 2 pixels (the classic LeNet layout), written as PNG.
fn digit_folder(root: &Path, per_class: usize) {
    let (images, labels) = crate::support::mnist();
    let images = pretext::data::idx::read(&images).expect("MNIST images");
    let labels = pretext::data::idx::read(&labels).expect("MNIST labels");
    let mut written = [0usize; 10];
    for (i, &label) in labels.data.iter().enumerate() {
        let l = label as usize;
        if written[l] == per_class {
            continue;
        }
        let dir = root.join(format!("digit{l}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = pretext::plot::Canvas::new(32, 32);
        c.pixels.iter_mut().for_each(|p| *p = 0);
        for y in 0..28 {
            for x in 0..28 {
                let v = images.data[i * 784 + y * 28 + x];
                let at = ((y + 2) * 32 + x + 2) * 3;
                c.pixels[at..at + 3].copy_from_slice(&[v, v, v]);
            }
        }
        c.save(&dir.join(format!("{i}.png"))).unwrap();
        written[l] += 1;
        if written.iter().all(|&n| n == per_class) {
            break;
        }
    }
}

/// Issue #19: a newcomer's first VICReg (its defaults: a 2048-wide projector) on a ResNet
/// starts narrower than the old fixed threshold and widens every epoch; the collapse rule must
/// let it train to the end with the default `collapse` settings.
#[test]
fn vicreg_on_a_resnet_is_not_stopped_while_its_spread_rises() {
    let dir = tempdir();
    let root = dir.path().join("digits");
    digit_folder(&root, 100);
    let text = format!(
        r#"[pipeline]
name = "newcomer"
seed = 7

[stages.data]
kind = "ingest"
source = {{ format = "image_folder", path = {root}, labels = "folders" }}
color = "grayscale"

[stages.views]
kind = "augment"
input = "data"
views = [
  [{{ name = "random_resized_crop", scale = [0.5, 1.0] }}, {{ name = "rotate", degrees = 10 }}],
  [{{ name = "random_resized_crop", scale = [0.5, 1.0] }}, {{ name = "gaussian_noise", std = 0.05 }}],
]

[stages.ssl]
kind = "pretrain"
input = "views"
objective = {{ plugin = "vicreg" }}
model = {{ arch = "resnet", width = 16 }}
epochs = 4
batch_size = 128
"#,
        root = crate::support::toml_path(&root)
    );
    let p = dir.path().join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    let run = pretext(dir.path(), &["run", &p.display().to_string()]);
    run.expect_code(0);
    let entry = crate::support::entries(&store(dir.path()), "pretrain")
        .pop()
        .expect("the pretrain entry");
    let history: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(entry.join("history.json")).unwrap())
            .unwrap();
    let spreads: Vec<f64> = history
        .as_array()
        .expect("one record per epoch")
        .iter()
        .map(|r| r["projection_std"].as_f64().expect("a projector spread"))
        .collect();
    eprintln!("projection spread per epoch: {spreads:?}");
    assert_eq!(spreads.len(), 4, "{spreads:?}");
    // It starts below the old fixed threshold (0.01), which would have stopped it...
    assert!(spreads[0] < 0.01, "{spreads:?}");
    // ...and widens: the last epoch is clearly wider than the first.
    assert!(spreads[3] > 1.5 * spreads[0], "{spreads:?}");
}
