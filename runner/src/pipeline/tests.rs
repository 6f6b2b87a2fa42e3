//! End-to-end tests of the pipeline module: golden broken files, the valid
//! example pipelines, overrides, positions, ordering and canonical configs.
//!
//! Golden files live in `tests/golden/` at the workspace root. Set
//! `PRETEXT_BLESS=1` to rewrite the `.expected` files from the current output.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

/// `tests/golden` at the workspace root, from the runner crate (`../tests`)
/// or from a crate that has it beside its manifest.
fn golden_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        manifest.join("../tests/golden"),
        manifest.join("tests/golden"),
    ];
    candidates
        .iter()
        .find(|p| p.join("broken").is_dir())
        .map(|p| resolve::normalize(p))
        .unwrap_or_else(|| panic!("no tests/golden/broken folder in any of {candidates:?}"))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Parses `text` as if from `/work/p/pipeline.toml`.
fn parse(text: &str, overrides: &[&str]) -> Result<Pipeline, PipelineError> {
    parse_str(
        text,
        Path::new("/work/p/pipeline.toml"),
        &strings(overrides),
    )
}

const MINIMAL: &str = r#"[pipeline]
name = "q"

[stages.data]
kind = "ingest"
source = { format = "idx", images = "i.idx", labels = "l.idx" }

[stages.views]
kind = "augment"
input = "data"
views = [["crop"]]

[stages.ssl]
kind = "pretrain"
input = "views"
objective = { plugin = "simclr" }
epochs = 10

[stages.eval]
kind = "probe"
encoder = "ssl"
data = "data"
"#;

#[test]
fn golden_broken_pipelines() {
    let dir = golden_dir().join("broken");
    let bless = std::env::var_os("PRETEXT_BLESS").is_some_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 25,
        "expected at least 25 broken fixtures, found {}",
        files.len()
    );

    let mut failures = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for path in &files {
        let shown = match load(path, &[]) {
            Ok(_) => "<parsed without error>\n".to_string(),
            Err(e) => format!("{e}\n").replace(&path.display().to_string(), "<file>"),
        };
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &shown).unwrap();
        } else {
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
            if expected != shown {
                failures.push(format!(
                    "{}:\n--- expected\n{expected}--- actual\n{shown}",
                    path.display()
                ));
            }
        }
        if let Some(other) = seen.insert(shown.clone(), path.clone()) {
            failures.push(format!(
                "{} and {} give the same error; each fixture should cover a distinct one",
                other.display(),
                path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es) (run with PRETEXT_BLESS=1 to accept):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn valid_minimal_pipeline_gets_defaults() {
    let path = golden_dir().join("valid/minimal.toml");
    let p = load(&path, &[]).unwrap();
    let dir = path.parent().unwrap();
    assert_eq!(p.name, "minimal");
    assert_eq!(p.seed, 0);
    assert_eq!(p.description, None);
    assert_eq!(p.file, path);
    assert_eq!(p.dir, dir);
    assert_eq!(p.store_dir, dir.join(".pretext"));
    assert!(p.plugin_paths.is_empty());
    assert_eq!(p.order(), ["data", "views", "ssl", "eval"]);

    let StageConfig::Ingest(ingest) = &p.stages[0].config else {
        panic!()
    };
    let IngestSource::Idx { images, labels } = &ingest.source else {
        panic!("not an IDX source: {:?}", ingest.source)
    };
    assert_eq!(images.written, "data/images.idx");
    assert_eq!(images.resolved, dir.join("data/images.idx"));
    assert_eq!(labels.resolved, dir.join("data/labels.idx"));
    assert_eq!(
        ingest.split,
        Split {
            train: 0.8,
            test: 0.2
        }
    );
    assert_eq!(ingest.limit, None);
    assert_eq!(p.stages[0].output(), ArtifactKind::Dataset);

    let views = p.stage("views").unwrap();
    assert_eq!(views.inputs, [("input".to_string(), "data".to_string())]);
    let StageConfig::Augment(aug) = &views.config else {
        panic!()
    };
    assert_eq!(aug.preview, 8);
    assert_eq!(aug.views.len(), 2);
    assert_eq!(
        aug.views[0],
        [Augmentation {
            name: "random_crop".into(),
            params: json!({})
        }]
    );
    assert_eq!(aug.views[1][1].name, "gaussian_noise");
    assert_eq!(aug.views[1][1].params, json!({"std": 0.1}));

    let ssl = p.stage("ssl").unwrap();
    let StageConfig::Pretrain(pre) = &ssl.config else {
        panic!()
    };
    assert_eq!(
        pre.objective,
        Objective {
            plugin: "simclr".into(),
            params: json!({})
        }
    );
    assert_eq!(
        pre.model,
        ModelConfig {
            arch: Arch::Mlp {
                hidden: vec![512, 512]
            },
            embed_dim: 128,
            batch_norm: true,
            checkpoint_activations: false,
        }
    );
    assert_eq!(
        pre.optim,
        OptimConfig {
            optimizer: Optimizer::AdamW {
                betas: [0.9, 0.999]
            },
            lr: 1e-3,
            weight_decay: 1e-4,
            warmup_epochs: 0,
            schedule: Schedule::Cosine,
        }
    );
    assert_eq!((pre.epochs, pre.batch_size), (10, 256));

    let eval = p.stage("eval").unwrap();
    assert_eq!(eval.input("encoder"), Some("ssl"));
    assert_eq!(eval.input("data"), Some("data"));
    let StageConfig::Probe(probe) = &eval.config else {
        panic!()
    };
    assert_eq!(
        *probe,
        ProbeConfig {
            text_tower: false,
            methods: vec![ProbeMethod::Linear, ProbeMethod::Knn],
            linear: Some(LinearProbeConfig {
                epochs: 100,
                lr: 0.01,
                weight_decay: 1e-4
            }),
            knn: Some(KnnConfig {
                k: 20,
                temperature: 0.07
            }),
            baseline: true,
            label_fractions: vec![1.0],
            seeds: 3,
            supervised: None,
        }
    );
    assert!(p.stages.iter().all(|s| s.expect.is_empty()));
}

#[test]
fn valid_full_pipeline_keeps_every_value() {
    let path = golden_dir().join("valid/full.toml");
    let p = load(&path, &[]).unwrap();
    let dir = path.parent().unwrap();
    assert_eq!(p.name, "full-example_v1.0");
    assert_eq!(p.seed, 42);
    assert_eq!(p.description.as_deref(), Some("uses every key"));
    assert_eq!(p.store_dir, dir.parent().unwrap().join("artifacts/store"));
    assert_eq!(
        p.plugin_paths,
        [dir.join("plugins/libextra.so"), dir.join("plugins/dir")]
    );
    // The probe is first in the file but runs last.
    assert_eq!(p.order(), ["data", "views", "ssl", "eval"]);

    let StageConfig::Ingest(ingest) = &p.stage("data").unwrap().config else {
        panic!()
    };
    let IngestSource::Idx { images, labels } = &ingest.source else {
        panic!("not an IDX source: {:?}", ingest.source)
    };
    assert_eq!(images.written, "../datasets/mnist/images.idx");
    assert_eq!(
        images.resolved,
        dir.parent().unwrap().join("datasets/mnist/images.idx")
    );
    assert_eq!(labels.resolved, Path::new("/abs/labels.idx"));
    assert_eq!(
        ingest.split,
        Split {
            train: 0.9,
            test: 0.1
        }
    );
    assert_eq!(ingest.limit, Some(1000));
    assert_eq!(
        p.stage("data").unwrap().expect,
        [Expectation {
            metric: "samples".into(),
            min: None,
            max: Some(70000.0)
        }]
    );

    let StageConfig::Augment(aug) = &p.stage("views").unwrap().config else {
        panic!()
    };
    assert_eq!(aug.preview, 16);
    assert_eq!(aug.views[0][1].params, json!({"std": 0.2, "p": 0.5}));
    assert_eq!(
        aug.views[1][0],
        Augmentation {
            name: "random_erasing".into(),
            params: json!({"scale": [0.02, 0.33], "mode": {"fill": "zero"}}),
        }
    );

    let StageConfig::Pretrain(pre) = &p.stage("ssl").unwrap().config else {
        panic!()
    };
    assert_eq!(pre.objective.plugin, "byol");
    assert_eq!(
        pre.objective.params,
        json!({"tau": 0.99, "projector": [256, 128]})
    );
    assert_eq!(
        pre.model,
        ModelConfig {
            arch: Arch::Convnet {
                width: 32,
                flatten: false,
            },
            embed_dim: 64,
            batch_norm: false,
            checkpoint_activations: false,
        }
    );
    assert_eq!(
        pre.optim,
        OptimConfig {
            optimizer: Optimizer::Sgd { momentum: 0.8 },
            lr: 0.05,
            weight_decay: 5e-4,
            warmup_epochs: 2,
            schedule: Schedule::Constant,
        }
    );
    assert_eq!((pre.epochs, pre.batch_size), (20, 128));

    let eval = p.stage("eval").unwrap();
    let StageConfig::Probe(probe) = &eval.config else {
        panic!()
    };
    assert_eq!(probe.methods, [ProbeMethod::Knn, ProbeMethod::Linear]);
    assert_eq!(
        probe.linear,
        Some(LinearProbeConfig {
            epochs: 50,
            lr: 0.1,
            weight_decay: 0.0
        })
    );
    assert_eq!(
        probe.knn,
        Some(KnnConfig {
            k: 10,
            temperature: 0.1
        })
    );
    assert!(!probe.baseline);
    // Sorted by metric name.
    assert_eq!(
        eval.expect,
        [
            Expectation {
                metric: "knn.accuracy".into(),
                min: Some(0.5),
                max: Some(1.0)
            },
            Expectation {
                metric: "linear.accuracy".into(),
                min: Some(0.9),
                max: None
            },
        ]
    );
    assert!(
        eval.expect[0].holds(0.7) && !eval.expect[0].holds(0.4) && !eval.expect[0].holds(f64::NAN)
    );

    // The resolved form serialises (for `pretext show` and the like).
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["stages"][0]["name"], "data");
    assert_eq!(
        json["stages"][0]["config"]["source"]["images"],
        "../datasets/mnist/images.idx"
    );

    // Every stage's canonical config is free of absolute paths.
    for s in &p.stages {
        let text = s.canonical_config().to_string();
        assert!(!text.contains(&dir.display().to_string()), "{text}");
    }
}

#[test]
fn probe_drops_settings_of_methods_it_does_not_run() {
    let text = format!("{MINIMAL}methods = [\"linear\"]\nknn = {{ k = 5 }}\n");
    let p = parse(&text, &[]).unwrap();
    let StageConfig::Probe(probe) = &p.stage("eval").unwrap().config else {
        panic!()
    };
    assert_eq!(probe.methods, [ProbeMethod::Linear]);
    assert!(probe.knn.is_none() && probe.linear.is_some());
}

#[test]
fn overrides_number_string_bool_and_array() {
    let p = parse(
        MINIMAL,
        &[
            "stages.ssl.epochs=3",
            "pipeline.name=renamed",
            "pipeline.seed=9",
            "stages.eval.baseline=false",
            "stages.eval.methods=[\"knn\"]",
        ],
    )
    .unwrap();
    assert_eq!(p.name, "renamed");
    assert_eq!(p.seed, 9);
    let StageConfig::Pretrain(pre) = &p.stage("ssl").unwrap().config else {
        panic!()
    };
    assert_eq!(pre.epochs, 3);
    let StageConfig::Probe(probe) = &p.stage("eval").unwrap().config else {
        panic!()
    };
    assert_eq!(probe.methods, [ProbeMethod::Knn]);
    assert!(!probe.baseline);
}

#[test]
fn overrides_create_keys_and_nested_tables() {
    let p = parse(
        MINIMAL,
        &[
            "stages.ssl.optim.lr=0.5",
            "stages.ssl.objective.temperature=0.2",
            "stages.eval.expect.\"linear.accuracy\".min=0.9",
            "pipeline.description=from the command line",
        ],
    )
    .unwrap();
    assert_eq!(p.description.as_deref(), Some("from the command line"));
    let ssl = p.stage("ssl").unwrap();
    let StageConfig::Pretrain(pre) = &ssl.config else {
        panic!()
    };
    assert_eq!(pre.optim.lr, 0.5);
    assert_eq!(pre.objective.params, json!({"temperature": 0.2}));
    assert_eq!(
        p.stage("eval").unwrap().expect,
        [Expectation {
            metric: "linear.accuracy".into(),
            min: Some(0.9),
            max: None
        }]
    );
}

#[test]
fn overrides_can_add_a_whole_stage() {
    let p = parse(
        MINIMAL,
        &[
            "stages.eval2.kind=probe",
            "stages.eval2.encoder=ssl",
            "stages.eval2.data=data",
        ],
    )
    .unwrap();
    assert_eq!(p.order(), ["data", "views", "ssl", "eval", "eval2"]);
}

#[test]
fn malformed_overrides_name_the_flag() {
    for bad in ["stages.ssl.epochs", "=3", "stages..x=1"] {
        let e = parse(MINIMAL, &[bad]).unwrap_err();
        assert_eq!(e.file, Path::new("--set"), "{bad}");
        assert!(e.help.is_some());
        assert!(
            e.to_string().starts_with("error: --set: invalid override"),
            "{e}"
        );
    }
    let e = parse(MINIMAL, &["pipeline.name.first=x"]).unwrap_err();
    assert_eq!(e.file, Path::new("--set"));
}

#[test]
fn errors_in_overridden_values_keep_file_positions() {
    // A new key in [pipeline] shifts the rendered text by a line; the error
    // below it must still point at the line in the file as written.
    let text = format!("{MINIMAL}methods = [\"lin\"]\n");
    let line = text.lines().count();
    let e = parse(&text, &["pipeline.seed=3"]).unwrap_err();
    assert_eq!((e.line, e.column), (Some(line), Some(12)), "{e}");
    // An error in the overridden value itself has no line in the file.
    let e = parse(MINIMAL, &["stages.ssl.epochs=0"]).unwrap_err();
    assert_eq!(e.line, None);
    assert!(e.message.contains("(set with --set)"), "{e}");
    // A bad type from an override.
    let e = parse(MINIMAL, &["stages.ssl.epochs=ten"]).unwrap_err();
    assert!(e.message.contains("must be an integer"), "{e}");
}

#[test]
fn line_and_column_point_at_the_offending_token() {
    let text = "[pipeline]\nname = \"q\"\n\n[stages.data]\nkind = \"ingest\"\n  limit = -3\nsource = { format = \"idx\", images = \"i\", labels = \"l\" }\n";
    let e = parse(text, &[]).unwrap_err();
    assert_eq!((e.line, e.column), (Some(6), Some(11)), "{e}");
    assert_eq!(e.file, Path::new("/work/p/pipeline.toml"));

    // Unknown key inside an inline table: the key itself, with the table path.
    let text = "[pipeline]\nname = \"q\"\n[stages.data]\nkind = \"ingest\"\nsource = { format = \"idx\", images = \"i\", labels = \"l\" }\nsplit = { train = 0.5, tset = 0.5 }\n";
    let e = parse(text, &[]).unwrap_err();
    assert_eq!((e.line, e.column), (Some(6), Some(24)), "{e}");
    assert_eq!(e.message, "unknown key `tset` in [stages.data.split]");
    assert_eq!(e.help.as_deref(), Some("did you mean `test`?"));

    // Unicode before the error counts as one column per character.
    let text = "[pipeline]\nname = \"q\"\ndescription = \"é\"; seed = 1\n";
    let e = parse(text, &[]).unwrap_err();
    assert_eq!((e.line, e.column), (Some(3), Some(18)), "{e}");
}

#[test]
fn order_is_topological_with_file_order_ties() {
    let text = r#"[pipeline]
name = "order"

[stages.eval_b]
kind = "probe"
encoder = "ssl_b"
data = "data_b"

[stages.data_b]
kind = "ingest"
source = { format = "idx", images = "b", labels = "b" }

[stages.views_a]
kind = "augment"
input = "data_a"
views = [["crop"]]

[stages.data_a]
kind = "ingest"
source = { format = "idx", images = "a", labels = "a" }

[stages.ssl_b]
kind = "pretrain"
input = "views_b"
objective = { plugin = "simclr" }

[stages.views_b]
kind = "augment"
input = "data_b"
views = [["crop"]]
"#;
    let p = parse(text, &[]).unwrap();
    assert_eq!(
        p.order(),
        ["data_b", "data_a", "views_a", "views_b", "ssl_b", "eval_b"]
    );
    assert_eq!(
        p.consumers("data_b")
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["views_b", "eval_b"]
    );
}

#[test]
fn canonical_config_ignores_key_order_and_location() {
    let a = r#"[pipeline]
name = "a"
[stages.data]
kind = "ingest"
source = { format = "idx", images = "d/i.idx", labels = "d/l.idx" }
[stages.views]
kind = "augment"
input = "data"
views = [[{ name = "noise", std = 0.1, p = 0.5 }]]
[stages.ssl]
kind = "pretrain"
input = "views"
objective = { plugin = "simclr", temperature = 0.5, proj = 128 }
optim = { lr = 1e-3, name = "adamw" }
expect = { "loss" = { max = 2.0 }, "acc" = { min = 0.5 } }
"#;
    let b = r#"[pipeline]
name = "b"
seed = 3
[stages.ssl]
expect = { "acc" = { min = 0.5 }, "loss" = { max = 2.0 } }
optim = { name = "adamw", lr = 0.001 }
objective = { proj = 128, temperature = 0.5, plugin = "simclr" }
input = "views"
kind = "pretrain"
[stages.views]
views = [[{ p = 0.5, std = 0.1, name = "noise" }]]
input = "data"
kind = "augment"
[stages.data]
source = { labels = "d/l.idx", images = "d/i.idx", format = "idx" }
kind = "ingest"
"#;
    let pa = parse_str(a, Path::new("/one/place/p.toml"), &[]).unwrap();
    let pb = parse_str(b, Path::new("/another/dir/q.toml"), &[]).unwrap();
    for name in ["data", "views", "ssl"] {
        let ca = pa.stage(name).unwrap().canonical_config();
        let cb = pb.stage(name).unwrap().canonical_config();
        assert_eq!(ca, cb, "{name}");
        assert_eq!(ca.to_string(), cb.to_string(), "{name}");
        assert!(!ca.to_string().contains("/one/place"), "{ca}");
    }
    let data = pa.stage("data").unwrap().canonical_config();
    assert_eq!(
        data,
        json!({
            "kind": "ingest",
            "inputs": {},
            "config": {
                "source": {"format": "idx", "images": "d/i.idx", "labels": "d/l.idx"},
                "split": {"train": 0.8, "test": 0.2},
                "limit": null
            },
            "expect": []
        })
    );
    let ssl = pa.stage("ssl").unwrap().canonical_config();
    assert_eq!(
        ssl,
        json!({
            "kind": "pretrain",
            "inputs": {"input": "views"},
            "config": {
                "objective": {"plugin": "simclr", "params": {"proj": 128, "temperature": 0.5}},
                "model": {"arch": "mlp", "hidden": [512, 512], "embed_dim": 128, "batch_norm": true},
                "optim": {
                    "name": "adamw", "betas": [0.9, 0.999], "lr": 0.001, "weight_decay": 0.0001,
                    "warmup_epochs": 0, "schedule": "cosine"
                },
                "epochs": 10,
                "batch_size": 256,
                "grad_clip": null,
                "accumulate": 1,
                "collapse": {"min_std": 0.01, "patience": 2}
            },
            "expect": [{"metric": "acc", "min": 0.5}, {"metric": "loss", "max": 2.0}]
        })
    );
    // A changed default-affecting value changes the canonical form.
    let pc = parse(a, &["stages.ssl.epochs=11"]).unwrap();
    assert_ne!(pc.stage("ssl").unwrap().canonical_config(), ssl);
}

#[test]
fn missing_file_is_reported() {
    let e = load(Path::new("/definitely/not/here.toml"), &[]).unwrap_err();
    assert_eq!(e.file, Path::new("/definitely/not/here.toml"));
    assert!(
        e.message.starts_with("cannot read the pipeline file"),
        "{e}"
    );
}

#[test]
fn relative_files_resolve_against_the_current_directory() {
    let p = parse_str(MINIMAL, Path::new("pipelines/x.toml"), &[]).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(p.file, cwd.join("pipelines/x.toml"));
    assert_eq!(p.store_dir, cwd.join("pipelines/.pretext"));
}

#[test]
fn stage_kinds_and_artifacts() {
    for k in StageKind::ALL {
        assert_eq!(StageKind::from_name(k.as_str()), Some(k));
    }
    assert_eq!(StageKind::Finetune.output(), ArtifactKind::Encoder);
    assert_eq!(
        ArtifactKind::Encoder.producers(),
        [StageKind::Pretrain, StageKind::Finetune]
    );
    assert!(StageKind::ALL.iter().all(|k| k.is_supported()));
    assert_eq!(StageKind::Report.output(), ArtifactKind::Report);
}

#[test]
fn ingest_formats_and_curate_get_defaults() {
    let text = r#"[pipeline]
name = "data"

[stages.photos]
kind = "ingest"
source = { format = "image_folder", path = "data/photos" }
on_error = "skip"
resize = 32
color = "rgb"

[stages.pq]
kind = "ingest"
source = { format = "parquet", path = "d/x.parquet", features = ["a", "b"], label = "y", meta = ["site"] }

[stages.pqimg]
kind = "ingest"
source = { format = "parquet", path = "d/i.parquet", image = "png", shape = [1, 28, 28] }

[stages.table]
kind = "ingest"
source = { format = "csv", path = "d/t.tsv", delimiter = "\t", label = "y" }

[stages.clean]
kind = "curate"
input = "photos"

[stages.strict]
kind = "curate"
input = "clean"
near_duplicates = { enabled = false }
quality = { min_size = 0, blank_std = 3 }
metadata = ["folder"]
drop = ["leaked_test", "blank", "duplicates"]
fail_if = { leakage = 0, duplicate_fraction = 0.05 }
max_listed = 10
expect = { kept = { min = 100 } }
"#;
    let p = parse(text, &[]).unwrap();
    assert_eq!(
        p.order(),
        ["photos", "pq", "pqimg", "table", "clean", "strict"]
    );
    let StageConfig::Ingest(photos) = &p.stage("photos").unwrap().config else {
        panic!()
    };
    let IngestSource::ImageFolder { path, labels } = &photos.source else {
        panic!()
    };
    assert_eq!(path.resolved, Path::new("/work/p/data/photos"));
    assert_eq!(*labels, FolderLabels::None);
    assert_eq!(
        (photos.on_error, photos.resize, photos.color),
        (OnError::Skip, Some([32, 32]), Some(ColorMode::Rgb))
    );
    assert_eq!(
        p.stage("photos").unwrap().canonical_config()["config"],
        json!({
            "source": {"format": "image_folder", "path": "data/photos", "labels": "none"},
            "split": {"train": 0.8, "test": 0.2},
            "limit": null,
            "on_error": "skip",
            "resize": [32, 32],
            "color": "rgb"
        })
    );
    assert_eq!(
        p.stage("pq").unwrap().canonical_config()["config"]["source"],
        json!({
            "format": "parquet", "path": "d/x.parquet", "image": null,
            "features": ["a", "b"], "label": "y", "meta": ["site"], "shape": null
        })
    );
    let StageConfig::Ingest(pqimg) = &p.stage("pqimg").unwrap().config else {
        panic!()
    };
    assert!(matches!(
        &pqimg.source,
        IngestSource::Parquet { image: Some(i), shape: Some([1, 28, 28]), features: None, .. } if i == "png"
    ));
    let StageConfig::Ingest(table) = &p.stage("table").unwrap().config else {
        panic!()
    };
    assert!(matches!(
        &table.source,
        IngestSource::Csv { delimiter: '\t', features: None, label: Some(l), .. } if l == "y"
    ));
    assert_eq!(table.on_error, OnError::Fail);

    let clean = p.stage("clean").unwrap();
    assert_eq!(clean.inputs, [("input".to_string(), "photos".to_string())]);
    assert_eq!(clean.output(), ArtifactKind::Dataset);
    assert_eq!(
        clean.canonical_config()["config"],
        json!({
            "near_duplicates": {"enabled": true, "max_distance": 8, "min_cosine": 0.995},
            "quality": {"blank_std": 1.0, "min_mean": 2.0, "max_mean": 253.0, "min_size": 16},
            "metadata": null,
            "drop": ["duplicates", "leaked_train"],
            "fail_if": [],
            "max_listed": 1000
        })
    );
    let StageConfig::Curate(strict) = &p.stage("strict").unwrap().config else {
        panic!()
    };
    assert!(!strict.near_duplicates.enabled);
    assert_eq!(
        (strict.quality.min_size, strict.quality.blank_std),
        (0, 3.0)
    );
    assert_eq!(strict.metadata, Some(vec!["folder".to_string()]));
    assert_eq!(
        strict.drop,
        [DropRule::Duplicates, DropRule::Blank, DropRule::LeakedTest]
    );
    assert_eq!(
        strict.fail_if,
        [
            FailIf {
                metric: "duplicate_fraction".into(),
                max: 0.05
            },
            FailIf {
                metric: "leakage".into(),
                max: 0.0
            }
        ]
    );
    assert_eq!(strict.max_listed, 10);
    assert_eq!(p.stage("strict").unwrap().expect[0].metric, "kept");
    // An IDX pipeline's canonical config is unchanged by the new keys at their defaults.
    let q = parse(MINIMAL, &["stages.data.on_error=\"fail\""]).unwrap();
    assert_eq!(
        q.stage("data").unwrap().canonical_config(),
        parse(MINIMAL, &[])
            .unwrap()
            .stage("data")
            .unwrap()
            .canonical_config()
    );
    assert!(q.stage("data").unwrap().canonical_config()["config"]
        .get("on_error")
        .is_none());
}

#[test]
fn convnet_pool_flattens_or_averages_and_other_archs_refuse_it() {
    let model = |m: &str| parse(MINIMAL, &[&format!("stages.ssl.model={m}")]);
    let arch = |p: Pipeline| match &p.stage("ssl").unwrap().config {
        StageConfig::Pretrain(pre) => pre.model.arch.clone(),
        _ => panic!(),
    };
    let flat = model(r#"{ arch = "convnet", pool = "flatten" }"#).unwrap();
    assert_eq!(
        arch(flat),
        Arch::Convnet {
            width: 16,
            flatten: true
        }
    );
    let mean = model(r#"{ arch = "convnet", pool = "mean" }"#).unwrap();
    let plain = model(r#"{ arch = "convnet" }"#).unwrap();
    // The default is left out of the canonical config: existing stage keys do not change.
    assert_eq!(
        mean.stage("ssl").unwrap().canonical_config(),
        plain.stage("ssl").unwrap().canonical_config()
    );
    let bad = model(r#"{ arch = "convnet", pool = "flat" }"#)
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("unknown pool `flat`") && bad.contains("flatten"),
        "{bad}"
    );
    let mlp = model(r#"{ arch = "mlp", pool = "flatten" }"#)
        .unwrap_err()
        .to_string();
    assert!(mlp.contains("only applies to arch"), "{mlp}");
}
