//! Starting from a checkpoint (`init`): a pretrain stage continues from an earlier stage's
//! encoder or imports a safetensors file — pretext's names or a PyTorch state dict
//! (tests/fixtures/init, written by tests/reference/export_torch_init.py) — and a finetune
//! stage fine-tunes such a file. Mismatches and unreadable files are exit-2 errors naming the
//! differences and the file, and the file's contents are part of the stage key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::{mnist_head, plan_line, pretext, tempdir, Run, TWO_CROPS};

const RESNET: &str = r#"{ arch = "resnet", width = 4, blocks = 1, embed_dim = 16 }"#;
const MLP: &str = r#"{ arch = "mlp", hidden = [32], embed_dim = 16 }"#;
const SIMCLR: &str =
    r#"{ plugin = "simclr", temperature = 0.5, projector_hidden = 32, projector_dim = 16 }"#;

fn fixture(name: &str) -> PathBuf {
    crate::support::workspace()
        .join("tests/fixtures/init")
        .join(name)
}

/// `[pipeline]`, 300 MNIST images and two augmented views (stages `data`, `views`), then
/// `stages` as written.
fn pipeline(name: &str, stages: &str) -> String {
    format!(
        r#"{}
[stages.views]
kind = "augment"
input = "data"
views = {TWO_CROPS}
{stages}"#,
        mnist_head(name, 5, 300),
    )
}

/// A pretrain stage `name` on `views`.
fn pretrain(name: &str, model: &str, epochs: u64, init: Option<&str>) -> String {
    let init = init.map(|i| format!("init = {i}\n")).unwrap_or_default();
    format!(
        "\n[stages.{name}]\nkind = \"pretrain\"\ninput = \"views\"\nobjective = {SIMCLR}\nmodel = {model}\nepochs = {epochs}\nbatch_size = 64\n{init}"
    )
}

fn write(dir: &Path, file: &str, text: &str) -> String {
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Every tensor of a safetensors file: name → (shape, f32 values; empty for other dtypes).
fn tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = match view.dtype() {
                safetensors::Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                _ => Vec::new(),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// The run log of the last run of `pipeline` (`show --json`).
fn show(dir: &Path, pipeline: &str) -> serde_json::Value {
    let run = pretext(dir, &["show", "--json", pipeline]);
    run.expect_code(0);
    serde_json::from_str(&run.stdout).unwrap()
}

/// The encoder weights stage `stage` saved.
fn encoder_of(log: &serde_json::Value, stage: &str) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let entry = log["stages"][stage]["entry"].as_str().unwrap();
    tensors(&Path::new(entry).join("encoder.safetensors"))
}

#[test]
fn a_pretrain_stage_continues_from_an_earlier_stages_encoder() {
    let dir = tempdir();
    let stages = [
        pretrain("ssl", MLP, 1, None),
        pretrain("copy", MLP, 0, Some(r#"{ encoder = "ssl" }"#)),
        pretrain("more", MLP, 1, Some(r#"{ encoder = "ssl" }"#)),
        "\n[stages.eval]\nkind = \"probe\"\nencoder = \"copy\"\ndata = \"data\"\nmethods = [\"knn\"]\nbaseline = false\n".into(),
    ]
    .concat();
    let p = write(dir.path(), "p.toml", &pipeline("continue", &stages));
    pretext(dir.path(), &["validate", &p]).expect_code(0);
    pretext(dir.path(), &["run", &p]).expect_code(0);
    let log = show(dir.path(), &p);
    // epochs = 0 saves the imported encoder as it is; continuing trains it further.
    let (ssl, copy, more) = (
        encoder_of(&log, "ssl"),
        encoder_of(&log, "copy"),
        encoder_of(&log, "more"),
    );
    assert_eq!(ssl, copy);
    assert_eq!(
        ssl.keys().collect::<Vec<_>>(),
        more.keys().collect::<Vec<_>>()
    );
    assert_ne!(ssl["encoder.0.weight"], more["encoder.0.weight"]);
    let metrics = &log["stages"]["copy"]["metrics"];
    assert_eq!(metrics["epochs"], 0.0);
    assert!(
        metrics["embedding_std"].as_f64().unwrap() > 0.0,
        "{metrics}"
    );
    assert!(
        log["stages"]["eval"]["metrics"]["knn.accuracy"]
            .as_f64()
            .unwrap()
            > 0.3
    );
    // The earlier stage's key is part of the continuing stages' keys.
    let plan = pretext(dir.path(), &["plan", &p, "--set", "stages.ssl.epochs=2"]);
    plan.expect_code(0);
    for stage in ["copy", "more"] {
        let line = plan_line(&plan, stage);
        assert!(
            line.contains("input `init` changed"),
            "{line}\n{}",
            plan.describe()
        );
    }
    // An earlier stage of another architecture: exit 2, the architecture named first.
    let other = [
        pretrain("ssl", MLP, 1, None),
        pretrain("wrong", RESNET, 1, Some(r#"{ encoder = "ssl" }"#)),
    ]
    .concat();
    let q = write(dir.path(), "q.toml", &pipeline("continue", &other));
    pretext(dir.path(), &["run", &q])
        .expect_code(2)
        .expect_stderr_has(&[
        "stage `wrong`: `init` the encoder of stage `ssl` does not fit this stage's resnet encoder",
        "architecture: `mlp` in the checkpoint, `resnet` here",
        "missing `encoder.stage0.block0.conv1.bias` (expected shape [1, 4])",
        "give this stage the same `model` as stage `ssl`",
    ]);
}

#[test]
fn a_pytorch_state_dict_is_imported_under_the_documented_names() {
    let dir = tempdir();
    std::fs::copy(
        fixture("resnet.safetensors"),
        dir.path().join("resnet.safetensors"),
    )
    .unwrap();
    let stages = [
        pretrain(
            "imported",
            RESNET,
            0,
            Some(r#"{ path = "resnet.safetensors", names = "torch" }"#),
        ),
        pretrain(
            "tuned",
            RESNET,
            1,
            Some(r#"{ path = "resnet.safetensors", names = "torch" }"#),
        ),
    ]
    .concat();
    let p = write(dir.path(), "p.toml", &pipeline("torch", &stages));
    pretext(dir.path(), &["run", &p]).expect_code(0);
    let log = show(dir.path(), &p);
    let got = encoder_of(&log, "imported");
    let torch = tensors(&fixture("resnet.safetensors"));
    // A linear head: pretext (in, out) is PyTorch's [out, in] transposed.
    let (fc_shape, fc) = &torch["fc.weight"];
    let (head_shape, head) = &got["encoder.head.weight"];
    assert_eq!(
        (fc_shape.clone(), head_shape.clone()),
        (vec![16, 16], vec![16, 16])
    );
    for o in 0..16 {
        for i in 0..16 {
            assert_eq!(head[i * 16 + o], fc[o * 16 + i]);
        }
    }
    // A convolution: pretext rows (ky, kx, c), PyTorch [out, in, ky, kx].
    let (w_shape, w) = &torch["layer2.0.conv1.weight"];
    assert_eq!(w_shape, &vec![8, 4, 3, 3]);
    let (p_shape, pw) = &got["encoder.stage1.block0.conv1.weight"];
    assert_eq!(p_shape, &vec![36, 8]);
    for o in 0..8 {
        for c in 0..4 {
            for ky in 0..3 {
                for kx in 0..3 {
                    assert_eq!(
                        pw[((ky * 3 + kx) * 4 + c) * 8 + o],
                        w[((o * 4 + c) * 3 + ky) * 3 + kx]
                    );
                }
            }
        }
    }
    // Vectors and batch-norm statistics keep their values.
    assert_eq!(
        got["encoder.stem.bn.running_var"].1,
        torch["bn1.running_var"].1
    );
    assert_eq!(
        got["encoder.stage2.block0.shortcut.bn.gamma"].1,
        torch["layer3.0.downsample.1.weight"].1
    );
    assert_eq!(
        got.len(),
        torch.len() - 9,
        "every tensor but the 9 num_batches_tracked"
    );
    // The stage that trains on from the import moved away from it.
    let tuned = encoder_of(&log, "tuned");
    assert_ne!(tuned["encoder.head.weight"], got["encoder.head.weight"]);
}

#[test]
fn fitting_errors_list_the_differences_and_bad_files_are_named() {
    let dir = tempdir();
    std::fs::copy(
        fixture("resnet.safetensors"),
        dir.path().join("resnet.safetensors"),
    )
    .unwrap();
    let run_with = |file: &str, model: &str, init: &str| -> Run {
        let p = write(
            dir.path(),
            file,
            &pipeline("errors", &pretrain("ssl", model, 1, Some(init))),
        );
        pretext(dir.path(), &["run", &p])
    };
    let torch = r#"{ path = "resnet.safetensors", names = "torch" }"#;
    run_with("wide.toml", r#"{ arch = "resnet", width = 8, blocks = 1, embed_dim = 16 }"#, torch)
        .expect_code(2)
        .expect_stderr_has(&[
            "stage `ssl`: `init` file `resnet.safetensors` (PyTorch names) does not fit this stage's resnet encoder",
            "differences, the first 6:",
            "`conv1.weight`: expected shape [8, 1, 3, 3], found [4, 1, 3, 3]",
            "docs/reference/pretrain.md#init",
        ]);
    run_with("names.toml", RESNET, r#"{ path = "resnet.safetensors" }"#)
        .expect_code(2)
        .expect_stderr_has(&[
            "missing `encoder.head.bias` (expected shape [1, 16])",
            "set `names = \"torch\"`",
        ]);
    // A ViT has no mapping for ResNet names: every tensor is unexpected or missing.
    run_with(
        "vit.toml",
        r#"{ arch = "vit", patch = 7, dim = 16, depth = 1, heads = 2, embed_dim = 16 }"#,
        torch,
    )
    .expect_code(2)
    .expect_stderr_has(&[
        "this stage's vit encoder",
        "missing `blocks.0.attn.qkv.weight` (expected shape [48, 16])",
    ]);
    // Not a safetensors file, and no file at all.
    std::fs::write(
        dir.path().join("broken.safetensors"),
        b"\x08\0\0\0\0\0\0\0garbage",
    )
    .unwrap();
    run_with(
        "broken.toml",
        RESNET,
        r#"{ path = "broken.safetensors", names = "torch" }"#,
    )
    .expect_code(2)
    .expect_stderr_has(&["broken.safetensors: not a readable safetensors file"]);
    let p = write(
        dir.path(),
        "missing.toml",
        &pipeline(
            "errors",
            &pretrain(
                "ssl",
                RESNET,
                1,
                Some(r#"{ path = "nowhere.safetensors" }"#),
            ),
        ),
    );
    for cmd in ["validate", "plan", "run"] {
        pretext(dir.path(), &[cmd, &p])
            .expect_code(2)
            .expect_stderr_has(&["stage `ssl`: init `", "nowhere.safetensors`: no such file"]);
    }
    // The table itself: epochs = 0 without init, unknown names, both sources.
    let bad = |file: &str, extra: &str| -> Run {
        let text = pipeline(
            "errors",
            &format!("{}{extra}", pretrain("ssl", RESNET, 1, None)),
        );
        let text = text.replace("epochs = 1\n", "");
        pretext(dir.path(), &["validate", &write(dir.path(), file, &text)])
    };
    bad("zero.toml", "epochs = 0\n")
        .expect_code(2)
        .expect_stderr_has(&[
            "`stages.ssl.epochs` = 0 trains nothing",
            "only applies with `init`",
        ]);
    bad(
        "kw.toml",
        "epochs = 1\ninit = { path = \"resnet.safetensors\", names = \"pytorch\" }\n",
    )
    .expect_code(2)
    .expect_stderr_has(&["unknown `stages.ssl.init.names` `pytorch`"]);
    bad(
        "both.toml",
        "epochs = 1\ninit = { path = \"resnet.safetensors\", encoder = \"views\" }\n",
    )
    .expect_code(2)
    .expect_stderr_has(&["takes `encoder` or `path`, not both"]);
    bad("kind.toml", "epochs = 1\ninit = { encoder = \"views\" }\n").expect_code(2);
}

#[test]
fn the_init_files_contents_are_part_of_the_stage_key() {
    let dir = tempdir();
    let weights = dir.path().join("w.safetensors");
    std::fs::copy(fixture("resnet.safetensors"), &weights).unwrap();
    let p = write(
        dir.path(),
        "p.toml",
        &pipeline(
            "key",
            &pretrain(
                "ssl",
                RESNET,
                0,
                Some(r#"{ path = "w.safetensors", names = "torch" }"#),
            ),
        ),
    );
    pretext(dir.path(), &["run", &p]).expect_code(0);
    let plan = pretext(dir.path(), &["plan", &p]);
    assert!(
        plan_line(&plan, "ssl").contains("cached"),
        "{}",
        plan.describe()
    );
    // Same name, other contents (the same architecture, other values): the stage reruns.
    let mut t = tensors(&weights);
    let first = log_key(dir.path(), &p);
    t.get_mut("fc.bias").unwrap().1[0] += 1.0;
    write_f32(&weights, &t);
    let plan = pretext(dir.path(), &["plan", &p]);
    let line = plan_line(&plan, "ssl");
    assert!(
        !line.contains("cached") && line.contains("source_digests"),
        "{line}\n{}",
        plan.describe()
    );
    pretext(dir.path(), &["run", &p]).expect_code(0);
    assert_ne!(log_key(dir.path(), &p), first);
    let log = show(dir.path(), &p);
    assert_eq!(
        encoder_of(&log, "ssl")["encoder.head.bias"].1[0],
        t["fc.bias"].1[0]
    );
}

fn log_key(dir: &Path, p: &str) -> String {
    show(dir, p)["stages"]["ssl"]["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Writes F32 tensors (others, such as `num_batches_tracked`, are left out).
fn write_f32(path: &Path, t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .iter()
        .filter(|(_, (s, v))| v.len() == s.iter().product::<usize>() && !v.is_empty())
        .map(|(n, (s, v))| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

#[test]
fn a_finetune_stage_starts_from_a_pytorch_state_dict() {
    let dir = tempdir();
    std::fs::copy(
        fixture("vit.safetensors"),
        dir.path().join("vit.safetensors"),
    )
    .unwrap();
    let stages = r#"
[stages.tune]
kind = "finetune"
data = "data"
init = { path = "vit.safetensors", names = "torch" }
model = { arch = "vit", patch = 7, dim = 16, depth = 2, heads = 2, embed_dim = 16 }
epochs = 2
batch_size = 64

[stages.eval]
kind = "probe"
encoder = "tune"
data = "data"
methods = ["knn"]
baseline = false
"#;
    let p = write(dir.path(), "p.toml", &pipeline("finetune", stages));
    pretext(dir.path(), &["validate", &p]).expect_code(0);
    pretext(dir.path(), &["run", &p]).expect_code(0);
    let log = show(dir.path(), &p);
    let accuracy = log["stages"]["tune"]["metrics"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{accuracy}");
    assert!(log["stages"]["eval"]["metrics"]["knn.accuracy"].is_number());
    // The saved encoder is the imported one, trained on: same entries, other values.
    let tuned = encoder_of(&log, "tune");
    let torch = tensors(&fixture("vit.safetensors"));
    assert_eq!(tuned["encoder.pos_embed"].0, vec![16, 16]);
    assert_eq!(
        tuned.len(),
        4 + 2 * 16 + 4,
        "patch embed, pos, cls, 2 blocks, norm, head"
    );
    let (imported, trained) = (&torch["cls_token"].1, &tuned["encoder.cls_token"].1);
    assert_eq!(imported.len(), trained.len());
    assert_ne!(imported, trained);
    let moved = imported
        .iter()
        .zip(trained)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        moved < 0.1,
        "fine-tuning started from the imported values (moved {moved})"
    );
    // `init` needs `model`; `model` needs `init`; one source of the encoder, not two.
    let bad = |file: &str, body: &str| -> Run {
        let text = pipeline(
            "finetune",
            &format!("\n[stages.tune]\nkind = \"finetune\"\ndata = \"data\"\n{body}"),
        );
        pretext(dir.path(), &["validate", &write(dir.path(), file, &text)])
    };
    bad(
        "a.toml",
        "init = { path = \"vit.safetensors\", names = \"torch\" }\n",
    )
    .expect_code(2)
    .expect_stderr_has(&["`stages.tune.init` needs `model`"]);
    bad("b.toml", "")
        .expect_code(2)
        .expect_stderr_has(&["stage `tune` has no encoder to fine-tune"]);
    bad(
        "c.toml",
        "encoder = \"x\"\ninit = { path = \"vit.safetensors\" }\nmodel = { arch = \"mlp\" }\n",
    )
    .expect_code(2)
    .expect_stderr_has(&["both say where the encoder comes from"]);
    bad(
        "d.toml",
        "init = { encoder = \"x\" }\nmodel = { arch = \"mlp\" }\n",
    )
    .expect_code(2)
    .expect_stderr_has(&["unknown key `encoder` in [stages.tune.init]"]);
}
