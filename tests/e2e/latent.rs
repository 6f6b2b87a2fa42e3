//! Prediction in latent space end to end: I-JEPA trains a ViT through the real binary (the
//! host masks target blocks, the predictor predicts the EMA teacher's embeddings of them),
//! saves only the encoder and reruns from the store; models, views and parameters it cannot
//! take are refused by `validate` and `run` alike.

use crate::support::{
    assert_encoder_only, entries, expect_statuses, mnist_views_pipeline, pretext, store, tempdir,
    write_pipeline as write,
};

const VIEW: &str = r#"[{ name = "random_resized_crop", scale = [0.8, 1.0] }]"#;
const VIT: &str = r#"{ arch = "vit", patch = 4, dim = 32, depth = 1, heads = 2, embed_dim = 32 }"#;

/// 600 MNIST images, the given views, one pretrain stage with `objective` and `model`.
fn pipeline(views: &[&str], objective: &str, model: &str, epochs: u32) -> String {
    let head = mnist_views_pipeline("latent", 5, views);
    format!(
        r#"{head}
[stages.ssl]
kind = "pretrain"
input = "views"
objective = {objective}
model = {model}
optim = {{ name = "adamw", lr = 2e-3, weight_decay = 0.05 }}
epochs = {epochs}
batch_size = 64
"#
    )
}

#[test]
fn ijepa_trains_a_vit_predicting_teacher_embeddings_of_hidden_blocks() {
    let dir = tempdir();
    let objective = r#"{ plugin = "ijepa", predictor_dim = 16, momentum_start = 0.99 }"#;
    let p = write(dir.path(), &pipeline(&[VIEW], objective, VIT, 3));
    pretext(dir.path(), &["validate", &p]).expect_code(0);
    pretext(dir.path(), &["run", &p]).expect_code(0);
    let entry = &entries(&store(dir.path()), "pretrain")[0];
    let history: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(entry.join("history.json")).unwrap())
            .unwrap();
    assert_eq!(history.len(), 3);
    let losses: Vec<f64> = history
        .iter()
        .map(|e| e["loss"].as_f64().unwrap())
        .collect();
    for epoch in &history {
        let pred = epoch["reports"]["pred_std"].as_f64().unwrap();
        let target = epoch["reports"]["target_std"].as_f64().unwrap();
        // Layer-normalised targets spread across patches; the predictor has not collapsed.
        assert!(
            target > 0.05 && pred > 0.0,
            "pred_std {pred}, target_std {target}"
        );
    }
    assert!(
        losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "{losses:?}"
    );
    assert!(
        losses[2] < losses[0],
        "the predictor learns to predict the teacher: {losses:?}"
    );
    // The saved encoder holds the ViT only: no predictor, no teacher.
    assert_encoder_only(entry);
    let again = pretext(dir.path(), &["run", &p]);
    expect_statuses(
        &again,
        &[("data", "cached"), ("views", "cached"), ("ssl", "cached")],
    );
}

#[test]
fn what_ijepa_cannot_take_is_refused_before_running() {
    let ijepa = r#"{ plugin = "ijepa" }"#;
    let cases: Vec<(Vec<&str>, &str, &str, Vec<&str>)> = vec![
        (
            vec![VIEW],
            ijepa,
            r#"{ arch = "convnet", width = 8, embed_dim = 16 }"#,
            vec![
                "objective `ijepa`",
                "needs a vision transformer",
                "arch = \"vit\"",
            ],
        ),
        (
            vec![VIEW, VIEW],
            ijepa,
            VIT,
            vec!["objective `ijepa` needs 1 view per sample", "declares 2"],
        ),
        (
            vec![VIEW],
            r#"{ plugin = "ijepa", blocks = 0 }"#,
            VIT,
            vec!["`blocks` = 0", "between 1 and 16"],
        ),
        (
            vec![VIEW],
            r#"{ plugin = "ijepa", target_scale = [0.5, 0.2] }"#,
            VIT,
            vec!["`target_scale`", "low <= high"],
        ),
        (
            vec![VIEW],
            r#"{ plugin = "ijepa", predictor_dims = 32 }"#,
            VIT,
            vec!["predictor_dims", "predictor_dim"],
        ),
    ];
    for (views, objective, model, needles) in cases {
        let dir = tempdir();
        let p = write(dir.path(), &pipeline(&views, objective, model, 1));
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
