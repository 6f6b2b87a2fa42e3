//! Gradient checkpointing (`model.checkpoint_activations = true`): the blocks of a ResNet, a
//! ViT (contrastive, MAE and I-JEPA) and a text transformer (with dropout) recompute their
//! activations in backward. It changes no result — a pipeline trained with it writes the same
//! entries as one without, byte for byte, under the same stage keys (it is not part of them) —
//! and `pretext bench` reports the peak memory each way. An encoder without blocks refuses it.

use crate::support::{
    entries, expect_statuses, pretext, store, tempdir, tiny_mnist_pipeline, toml_path, workspace,
    Tiny,
};

/// ResNet + SimCLR, ViT + SimCLR, ViT + MAE, ViT + I-JEPA and a text transformer + SimCSE (dropout 0.1),
/// each 1 epoch on small data; `ckpt` adds `checkpoint_activations = true` to every model.
fn pipeline(ckpt: bool) -> String {
    let extra = if ckpt {
        ", checkpoint_activations = true"
    } else {
        ""
    };
    let prose = toml_path(&workspace().join("datasets/gutenberg/prose"));
    let head = tiny_mnist_pipeline("ckpt", 11);
    format!(
        r#"{head}[stages.resnet]
kind = "pretrain"
input = "two"
objective = {{ plugin = "simclr", projector_hidden = 32, projector_dim = 16 }}
model = {{ arch = "resnet", width = 4, blocks = 2, embed_dim = 16{extra} }}
epochs = 1
batch_size = 32

[stages.vit]
kind = "pretrain"
input = "two"
objective = {{ plugin = "simclr", projector_hidden = 32, projector_dim = 16 }}
model = {{ arch = "vit", patch = 7, dim = 16, depth = 2, heads = 2, embed_dim = 16{extra} }}
epochs = 1
batch_size = 32

[stages.mae]
kind = "pretrain"
input = "one"
objective = {{ plugin = "mae", mask_ratio = 0.75 }}
model = {{ arch = "vit", patch = 7, dim = 16, depth = 2, heads = 2, embed_dim = 16{extra} }}
epochs = 1
batch_size = 32

[stages.ijepa]
kind = "pretrain"
input = "one"
objective = {{ plugin = "ijepa", predictor_dim = 16, momentum_start = 0.99 }}
model = {{ arch = "vit", patch = 7, dim = 16, depth = 2, heads = 2, embed_dim = 16{extra} }}
epochs = 1
batch_size = 32

[stages.prose]
kind = "ingest"
source = {{ format = "text", path = {prose}, labels = "files", label_delimiter = "-", encoding = "auto", passage_words = 100 }}
tokenizer = {{ vocab_size = 300, seq_len = 24 }}

[stages.pairs]
kind = "augment"
input = "prose"
views = [[{{ name = "token_delete", prob = 0.1 }}], [{{ name = "token_delete", prob = 0.1 }}]]

[stages.simcse]
kind = "pretrain"
input = "pairs"
objective = {{ plugin = "simcse", temperature = 0.05 }}
model = {{ arch = "transformer", dim = 16, depth = 2, heads = 2, embed_dim = 16, dropout = 0.1{extra} }}
epochs = 1
batch_size = 16
"#,
    )
}

const PRETRAIN: [&str; 5] = ["resnet", "vit", "mae", "ijepa", "simcse"];

#[test]
fn checkpointed_training_writes_the_same_entries_under_the_same_keys() {
    let (plain, ckpt) = (tempdir(), tempdir());
    let mut locks = Vec::new();
    for (dir, on) in [(&plain, false), (&ckpt, true)] {
        let p = dir.path().join("pipeline.toml");
        std::fs::write(&p, pipeline(on)).unwrap();
        pretext(dir.path(), &["run", &p.display().to_string()]).expect_code(0);
        assert_eq!(
            entries(&store(dir.path()), "pretrain").len(),
            PRETRAIN.len()
        );
        locks.push(std::fs::read_to_string(dir.path().join("pretext.lock")).unwrap());
    }
    // Same keys (the setting is not part of them) and the same output digests (weights,
    // history with every loss, metrics): bit for bit the same training.
    assert_eq!(
        locks[0], locks[1],
        "checkpointing changed a key or an output"
    );
    // Turning it on for a stored stage reuses the entry.
    let p = plain.path().join("pipeline.toml").display().to_string();
    let sets: Vec<String> = PRETRAIN
        .iter()
        .map(|s| format!("stages.{s}.model.checkpoint_activations=true"))
        .collect();
    let mut args = vec!["run", p.as_str()];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    let again = pretext(plain.path(), &args);
    again.expect_code(0);
    expect_statuses(
        &again,
        &[
            ("data", "cached"),
            ("two", "cached"),
            ("one", "cached"),
            ("resnet", "cached"),
            ("vit", "cached"),
            ("mae", "cached"),
            ("ijepa", "cached"),
            ("prose", "cached"),
            ("pairs", "cached"),
            ("simcse", "cached"),
        ],
    );
}

/// At a size where activations matter (a 4-block ViT on 49 tokens + CLS, 2 × 128 images a
/// step), `pretext bench` shows the memory checkpointing saves: measured 181 MB without and
/// 109 MB with it (debug build); the test asks for a fifth less.
#[test]
fn bench_reports_peak_memory_and_checkpointing_lowers_it() {
    let dir = tempdir();
    let p = dir.path().join("pipeline.toml");
    std::fs::write(&p, pipeline(false)).unwrap();
    let p = p.display().to_string();
    let mut peaks = Vec::new();
    for on in ["false", "true"] {
        let json = dir.path().join(format!("bench-{on}.json"));
        let ckpt = format!("stages.vit.model.checkpoint_activations={on}");
        let j = json.display().to_string();
        let mut args = vec![
            "bench", &p, "--stage", "vit", "--steps", "2", "--warmup", "1",
        ];
        let sets = [
            "stages.data.limit=200",
            "stages.vit.batch_size=128",
            "stages.vit.model.dim=32",
            "stages.vit.model.depth=4",
            "stages.vit.model.patch=4",
            &ckpt,
        ];
        for s in &sets {
            args.extend(["--set", s]);
        }
        args.extend(["--json", &j]);
        let run = pretext(dir.path(), &args);
        run.expect_code(0)
            .expect_stdout_has(&["peak RSS MB", "vit"]);
        let rows: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let peak = rows[0]["peak_rss_bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("no peak_rss_bytes on Linux: {rows}"));
        // More than the binary alone, less than this machine could ever hold.
        assert!(peak > 10_000_000 && peak < 1 << 40, "{peak}");
        peaks.push(peak as f64);
    }
    assert!(
        peaks[1] < 0.8 * peaks[0],
        "peak RSS with checkpointing {:.1} MB, without {:.1} MB",
        peaks[1] / 1e6,
        peaks[0] / 1e6
    );
}

#[test]
fn an_encoder_without_blocks_refuses_checkpointing_with_exit_code_2() {
    let dir = tempdir();
    let p = Tiny::default().write(dir.path()).display().to_string();
    let run = pretext(
        dir.path(),
        &[
            "validate",
            &p,
            "--set",
            "stages.ssl.model.checkpoint_activations=true",
        ],
    );
    run.expect_code(2).expect_stderr_has(&[
        "stages.ssl.model.checkpoint_activations",
        "arch = \"mlp\"",
        "resnet",
    ]);
    // Off is the default and allowed anywhere.
    pretext(
        dir.path(),
        &[
            "validate",
            &p,
            "--set",
            "stages.ssl.model.checkpoint_activations=false",
        ],
    )
    .expect_code(0);
}
