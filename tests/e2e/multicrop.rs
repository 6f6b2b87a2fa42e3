//! Multi-crop end to end: DINO trains on two global and two smaller local crops through a
//! ConvNet and a ViT (whose position embeddings are interpolated for the local size), and
//! views of different sizes that a model or objective cannot take are refused by `validate`
//! as well as by `run`, naming the views and what to change.

use crate::support::{
    assert_encoder_only, entries, expect_statuses, mnist_views_pipeline, pretext, store, tempdir,
    write_pipeline as write,
};

const GLOBAL: &str = r#"[{ name = "random_resized_crop", scale = [0.4, 1.0] }, { name = "gaussian_noise", std = 0.05 }]"#;
const LOCAL: &str = r#"[{ name = "random_resized_crop", size = 14, scale = [0.1, 0.4] }]"#;
const DINO: &str = r#"{ plugin = "dino", out_dim = 64, projector_hidden = 64, projector_dim = 16, momentum_start = 0.99 }"#;

/// A pipeline: 600 MNIST images (declared 28x28), the given views, and one pretrain stage per
/// `(name, objective, model)`.
fn pipeline(views: &[&str], stages: &[(&str, &str, &str)]) -> String {
    let mut text = mnist_views_pipeline("crops", 3, views);
    for (name, objective, model) in stages {
        text.push_str(&format!(
            "\n[stages.{name}]\nkind = \"pretrain\"\ninput = \"views\"\nobjective = {objective}\nmodel = {model}\nepochs = 2\nbatch_size = 128\n"
        ));
    }
    text
}

#[test]
fn dino_trains_on_global_and_local_crops_through_a_convnet_and_a_vit() {
    let dir = tempdir();
    let p = write(
        dir.path(),
        &pipeline(
            &[GLOBAL, GLOBAL, LOCAL, LOCAL],
            &[
                (
                    "conv",
                    DINO,
                    r#"{ arch = "convnet", width = 8, embed_dim = 32 }"#,
                ),
                (
                    "vit",
                    DINO,
                    r#"{ arch = "vit", patch = 7, dim = 32, depth = 1, heads = 2, embed_dim = 32 }"#,
                ),
            ],
        ),
    );
    pretext(dir.path(), &["validate", &p]).expect_code(0);
    let run = pretext(dir.path(), &["run", &p]);
    run.expect_code(0);
    // The recipe records each view's size; the preview holds every view.
    let views = entries(&store(dir.path()), "augment");
    let recipe: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(views[0].join("views.json")).unwrap())
            .unwrap();
    assert_eq!(
        recipe["view_shapes"],
        serde_json::json!([[1, 28, 28], [1, 28, 28], [1, 14, 14], [1, 14, 14]])
    );
    for entry in entries(&store(dir.path()), "pretrain") {
        let history: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(entry.join("history.json")).unwrap())
                .unwrap();
        assert_eq!(history.len(), 2);
        for epoch in &history {
            let loss = epoch["loss"].as_f64().unwrap();
            let entropy = epoch["reports"]["teacher_entropy"].as_f64().unwrap();
            // Cross-entropy against 64 prototypes: positive, and the teacher's distribution
            // lies between one-hot and uniform.
            assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
            assert!((0.0..=(64f64).ln() + 1e-6).contains(&entropy), "{entropy}");
        }
        // The encoder is saved without the objective's prototypes: only `encoder.*` tensors.
        assert_encoder_only(&entry);
    }
    // Rerun: every stage from the store.
    let again = pretext(dir.path(), &["run", &p]);
    expect_statuses(
        &again,
        &[
            ("data", "cached"),
            ("views", "cached"),
            ("conv", "cached"),
            ("vit", "cached"),
        ],
    );
}

#[test]
fn views_a_model_or_objective_cannot_take_are_refused_before_running() {
    let conv = r#"{ arch = "convnet", width = 8, embed_dim = 32 }"#;
    let cases: Vec<(Vec<&str>, &str, String, Vec<&str>)> = vec![
        (
            vec![GLOBAL, GLOBAL, LOCAL],
            DINO,
            r#"{ arch = "mlp", hidden = [32], embed_dim = 16 }"#.to_string(),
            vec![
                "the views differ in size (view 3 is 1x14x14, view 1 is 1x28x28)",
                "an `mlp` reads a fixed number of inputs",
            ],
        ),
        (
            vec![GLOBAL, GLOBAL, LOCAL],
            DINO,
            r#"{ arch = "convnet", width = 8, pool = "flatten", embed_dim = 16 }"#.to_string(),
            vec![
                "pool = \"flatten\"",
                "use arch = \"convnet\" (pool = \"mean\")",
            ],
        ),
        (
            vec![GLOBAL, LOCAL, GLOBAL],
            DINO,
            conv.to_string(),
            vec!["shows its teacher the first 2 views", "view 2 is 1x14x14"],
        ),
        (
            vec![GLOBAL, GLOBAL, LOCAL],
            r#"{ plugin = "simclr", temperature = 0.5, projector_hidden = 32, projector_dim = 16 }"#,
            conv.to_string(),
            vec!["objective `simclr` needs 2 views per sample", "declares 3"],
        ),
        (
            vec![GLOBAL],
            DINO,
            conv.to_string(),
            vec![
                "objective `dino` needs at least 2 views per sample",
                "declares 1",
            ],
        ),
        (
            vec![GLOBAL, GLOBAL, LOCAL],
            DINO,
            r#"{ arch = "vit", patch = 4, dim = 16, depth = 1, heads = 2, embed_dim = 16 }"#
                .to_string(),
            vec!["multiple of the ViT's patch size 4", "1x14x14"],
        ),
    ];
    for (views, objective, model, needles) in cases {
        let dir = tempdir();
        let p = write(dir.path(), &pipeline(&views, &[("ssl", objective, &model)]));
        for cmd in ["validate", "run"] {
            pretext(dir.path(), &[cmd, &p])
                .expect_code(2)
                .expect_stderr_has(&needles)
                .assert_no_panic();
        }
        assert!(
            entries(&store(dir.path()), "pretrain").is_empty(),
            "nothing was trained"
        );
    }
}
