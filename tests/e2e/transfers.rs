//! A steady-state training step moves its batch in and one read out, nothing else: every
//! encoder (mlp, convnet, resnet, vit, transformer) with objectives of every family
//! (contrastive, non-contrastive, masked, generative), on the CPU fast path and on the
//! device-generic path (`--device cpu-generic`: the ops a GPU runs), counted by the engine
//! and reported per step by `pretext bench --json`.
//!
//! "In" is what the step builds from host data of the batch: the views (one upload for all
//! of them), the originals an autoencoder reconstructs, MAE's patch mask, and on the generic
//! path the per-batch index lists (MAE's visible patches and token order; text's token ids,
//! padding bias, pooling weights, masked positions and label one-hot) and dropout masks. The
//! fast path reads those from host memory. "Out" is one read: the loss, the gradient norm
//! and the objective's reports together. No parameter, gradient, activation or optimiser
//! state crosses in either direction.

use std::collections::BTreeMap;

use crate::support::{pretext, tempdir, tiny_mnist_pipeline, toml_path, workspace};

fn image_pipeline() -> String {
    let stage = |name: &str, input: &str, objective: &str, model: &str| {
        format!(
            "[stages.{name}]\nkind = \"pretrain\"\ninput = \"{input}\"\nobjective = {objective}\n\
             model = {model}\nbatch_size = 32\n\n"
        )
    };
    let mut p = tiny_mnist_pipeline("transfers", 5);
    let mlp = r#"{ arch = "mlp", hidden = [32], embed_dim = 16 }"#;
    let convnet = r#"{ arch = "convnet", width = 4, embed_dim = 16 }"#;
    let resnet = r#"{ arch = "resnet", width = 4, embed_dim = 16 }"#;
    let vit = r#"{ arch = "vit", patch = 7, dim = 16, depth = 2, heads = 2, embed_dim = 16 }"#;
    let simclr = r#"{ plugin = "simclr", projector_hidden = 32, projector_dim = 16 }"#;
    let moco = r#"{ plugin = "moco", queue_size = 64, projector_hidden = 32, projector_dim = 16 }"#;
    let byol =
        r#"{ plugin = "byol", projector_hidden = 32, projector_dim = 16, predictor_hidden = 32 }"#;
    let vicreg =
        r#"{ plugin = "vicreg", projector_hidden = 32, projector_dim = 32, projector_layers = 2 }"#;
    let barlow = r#"{ plugin = "barlow_twins", projector_hidden = 32, projector_dim = 32, projector_layers = 2 }"#;
    let simsiam = r#"{ plugin = "simsiam", projector_hidden = 32, projector_dim = 16, projector_layers = 2, predictor_hidden = 8 }"#;
    let mae = r#"{ plugin = "mae", mask_ratio = 0.75 }"#;
    let ae = r#"{ plugin = "autoencoder", decoder_hidden = 32 }"#;
    let dae = r#"{ plugin = "denoising_autoencoder", decoder_hidden = 32 }"#;
    for (name, input, objective, model) in [
        ("mlp_simclr", "two", simclr, mlp),
        ("mlp_vicreg", "two", vicreg, mlp),
        ("mlp_dae", "one", dae, mlp),
        ("convnet_moco", "two", moco, convnet),
        ("convnet_byol", "two", byol, convnet),
        ("convnet_ae", "one", ae, convnet),
        ("resnet_simclr", "two", simclr, resnet),
        ("resnet_barlow", "two", barlow, resnet),
        ("resnet_ae", "one", ae, resnet),
        ("vit_simclr", "two", simclr, vit),
        ("vit_simsiam", "two", simsiam, vit),
        ("vit_mae", "one", mae, vit),
        ("vit_ae", "one", ae, vit),
    ] {
        p.push_str(&stage(name, input, objective, model));
    }
    p
}

fn text_pipeline() -> String {
    let prose = toml_path(&workspace().join("datasets/gutenberg/prose"));
    format!(
        r#"[pipeline]
name = "transfers_text"
seed = 3

[stages.prose]
kind = "ingest"
source = {{ format = "text", path = {prose}, labels = "files", label_delimiter = "-", encoding = "auto", passage_words = 100 }}
tokenizer = {{ vocab_size = 300, seq_len = 24 }}

[stages.masked]
kind = "augment"
input = "prose"
views = [[{{ name = "token_delete", prob = 0.05 }}, {{ name = "token_mask", prob = 0.2 }}]]

[stages.two]
kind = "augment"
input = "prose"
views = [[{{ name = "token_delete", prob = 0.1 }}], [{{ name = "token_delete", prob = 0.1 }}]]

[stages.tf_mlm]
kind = "pretrain"
input = "masked"
objective = {{ plugin = "mlm" }}
model = {{ arch = "transformer", dim = 16, depth = 2, heads = 2, embed_dim = 16 }}
batch_size = 16

[stages.tf_simcse]
kind = "pretrain"
input = "two"
objective = {{ plugin = "simcse", temperature = 0.05 }}
model = {{ arch = "transformer", dim = 16, depth = 2, heads = 2, embed_dim = 16, dropout = 0.1 }}
batch_size = 16
"#
    )
}

/// Per stage: the transfers in and out of every timed step on `device`.
fn bench(pipeline: &str, device: &str) -> BTreeMap<String, (Vec<u64>, Vec<u64>)> {
    let dir = tempdir();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, pipeline).unwrap();
    let json = dir.path().join("bench.json");
    let p = path.display().to_string();
    let j = json.display().to_string();
    let args = [
        "bench", &p, "--steps", "3", "--warmup", "2", "--device", device, "--json", &j,
    ];
    pretext(dir.path(), &args).expect_code(0);
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let counts = |v: &serde_json::Value| -> Vec<u64> {
        v.as_array()
            .expect("an array of per-step counts")
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["stage"].as_str().unwrap().to_string(),
                (counts(&r["to_device"]), counts(&r["to_host"])),
            )
        })
        .collect()
}

fn check(rows: &BTreeMap<String, (Vec<u64>, Vec<u64>)>, device: &str, expect_in: &[(&str, u64)]) {
    assert_eq!(
        rows.len(),
        expect_in.len(),
        "every pretrain stage is benchmarked: {rows:?}"
    );
    for (stage, want) in expect_in {
        let (inn, out) = rows
            .get(*stage)
            .unwrap_or_else(|| panic!("no bench row for {stage}: {rows:?}"));
        assert_eq!(inn.len(), 3, "{stage}: one count per timed step");
        assert!(
            inn.iter().all(|n| n == want),
            "{stage} on {device}: {inn:?} uploads per step, expected {want} (the batch only)"
        );
        assert!(
            out.iter().all(|&n| n == 1),
            "{stage} on {device}: {out:?} reads per step, expected 1 (loss, norm, reports)"
        );
    }
}

#[test]
fn a_training_step_moves_the_batch_in_and_one_read_out_on_every_path() {
    let images = image_pipeline();
    // The views; autoencoders also upload the originals, MAE its patch mask.
    let fast = [
        ("mlp_simclr", 1),
        ("mlp_vicreg", 1),
        ("mlp_dae", 2),
        ("convnet_moco", 1),
        ("convnet_byol", 1),
        ("convnet_ae", 2),
        ("resnet_simclr", 1),
        ("resnet_barlow", 1),
        ("resnet_ae", 2),
        ("vit_simclr", 1),
        ("vit_simsiam", 1),
        ("vit_mae", 2),
        ("vit_ae", 2),
    ];
    check(&bench(&images, "cpu"), "cpu", &fast);
    // The generic path also uploads MAE's visible-patch indices and token order.
    let generic: Vec<(&str, u64)> = fast
        .iter()
        .map(|&(s, n)| (s, if s == "vit_mae" { n + 2 } else { n }))
        .collect();
    check(&bench(&images, "cpu-generic"), "cpu-generic", &generic);

    let text = text_pipeline();
    // The token ids; MLM also its targets.
    check(
        &bench(&text, "cpu"),
        "cpu",
        &[("tf_mlm", 2), ("tf_simcse", 1)],
    );
    // Generic: token ids as a gather index, the padding bias (shared by the blocks), the
    // pooling weights; MLM: masked positions and the label one-hot; SimCSE: one dropout mask
    // after the embedding and two per block.
    check(
        &bench(&text, "cpu-generic"),
        "cpu-generic",
        &[("tf_mlm", 7), ("tf_simcse", 9)],
    );
}
