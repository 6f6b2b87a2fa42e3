//! Image–text pairs (CLIP): the `clip` objective's loss against its formula through the host
//! library; a pipeline on the embedded captioned set that trains both towers, saves the text
//! tower beside the image encoder, reports zero-shot accuracy and retrieval, probes each
//! tower and resumes a killed run to the same weights; and the mistakes a pipeline author
//! makes with pairs, refused with exit code 2.

use std::collections::HashMap;
use std::path::Path;

use pretext::engine::{Engine, Tensor};
use pretext::plugins::{ObjectiveInstance, Registry, SearchPath, StepInputs};

use crate::support::{
    dylib_name, entries, kill_after_checkpoint, pretext, profile_dir, read_json, store, tempdir,
    toml_path, workspace, write_pipeline as write,
};

fn captioned() -> String {
    toml_path(&workspace().join("datasets/captions/mnist-captioned.parquet"))
}

/// Images and captions of the first `limit` rows of the captioned set (`captions` keeps
/// `caption_limit` rows), one crop view, and a CLIP stage with the extra lines `clip_extra`.
fn pipeline(limit: usize, caption_limit: usize, clip_extra: &str) -> String {
    let file = captioned();
    format!(
        r#"[pipeline]
name = "clip-test"
seed = 3

[stages.images]
kind = "ingest"
source = {{ format = "parquet", path = {file}, image = "image", label = "digit", shape = [1, 28, 28] }}
limit = {limit}

[stages.captions]
kind = "ingest"
source = {{ format = "text", path = {file}, column = "caption", label = "digit", samples = "documents" }}
tokenizer = {{ vocab_size = 300, seq_len = 12 }}
limit = {caption_limit}

[stages.views]
kind = "augment"
input = "images"
views = [[{{ name = "random_resized_crop", scale = [0.8, 1.0] }}]]

[stages.clip]
kind = "pretrain"
input = "views"
objective = {{ plugin = "clip", temperature = 0.1 }}
model = {{ arch = "convnet", width = 8, embed_dim = 32 }}
optim = {{ lr = 3e-3, warmup_epochs = 1 }}
batch_size = 100
{clip_extra}
"#
    )
}

const TEXT: &str =
    r#"text = { input = "captions", dim = 32, depth = 1, heads = 2, prompt = "a handwritten {}" }"#;

#[test]
fn clip_trains_both_towers_reports_zero_shot_and_retrieval_and_probes_each() {
    let dir = tempdir();
    let probes = r#"
[stages.probe_image]
kind = "probe"
encoder = "clip"
data = "images"
methods = ["knn"]
baseline = false

[stages.probe_text]
kind = "probe"
encoder = "clip"
tower = "text"
data = "captions"
methods = ["knn"]
baseline = false
"#;
    let text = pipeline(1000, 1000, &format!("{TEXT}\nepochs = 6\n{probes}"));
    let p = write(dir.path(), &text);
    pretext(dir.path(), &["run", &p]).expect_code(0);
    let st = store(dir.path());
    let entry = &entries(&st, "pretrain")[0];
    for f in [
        "encoder.safetensors",
        "encoder.json",
        "text_encoder.safetensors",
        "text_encoder.json",
        "tokenizer.json",
    ] {
        assert!(entry.join(f).is_file(), "{f} is missing");
    }
    // The text tower's own artifact: a transformer over the captions' tokens, its head to
    // the image encoder's width, trained on the captions' dataset.
    let meta = read_json(&entry.join("text_encoder.json"));
    let spec = &meta["spec"]["Text"];
    assert_eq!(spec["seq_len"], 12);
    assert_eq!(spec["embed_dim"], 32);
    assert_eq!(meta["objective"], "clip");

    let m = read_json(&entry.join("metrics.json"));
    let get = |k: &str| {
        m[k].as_f64()
            .unwrap_or_else(|| panic!("metric {k} is missing: {m}"))
    };
    // The text tower is counted on its own (token embeddings alone are vocabulary x 32).
    assert!(get("text_parameters") > 1000.0, "{m}");
    // 1000 rows, 80/20: 200 test pairs.
    assert_eq!(get("clip.retrieval_pairs"), 200.0);
    // Chance: zero-shot 1/10; recall@5 5/200. Trained, both towers agree far above that.
    let zero_shot = get("clip.zero_shot_accuracy");
    assert!(zero_shot > 0.3, "zero-shot accuracy {zero_shot}");
    for dir in ["image_to_text", "text_to_image"] {
        let r1 = get(&format!("clip.recall_at_1_{dir}"));
        let r5 = get(&format!("clip.recall_at_5_{dir}"));
        assert!((0.0..=1.0).contains(&r1) && r1 <= r5, "{dir}: {r1} {r5}");
        assert!(r5 > 0.1, "{dir}: recall@5 {r5} (chance 0.025)");
    }
    // The temperature is trained: it moved from where it started (48 small steps).
    let t = get("objective.temperature");
    assert!((t - 0.1).abs() > 2e-4, "temperature stayed at {t}");
    let history = read_json(&entry.join("history.json"));
    let losses: Vec<f64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["loss"].as_f64().unwrap())
        .collect();
    assert!(
        losses.last().unwrap() < &(0.9 * losses[0]),
        "loss {losses:?}"
    );

    // Each probe read its own tower: the text probe embedded captions (its embeddings are
    // the captions' ids), the image probe images.
    let probes = entries(&st, "probe");
    assert_eq!(probes.len(), 2);
    let accuracies: Vec<f64> = probes
        .iter()
        .map(|e| {
            read_json(&e.join("metrics.json"))["knn.accuracy"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(accuracies.iter().all(|a| *a > 0.3), "{accuracies:?}");
}

/// Killed after two epochs, a CLIP run resumes (both towers, the logit scale and the optimiser
/// state are in the checkpoint) to the very weights of a run never interrupted.
#[test]
fn a_killed_clip_run_resumes_to_the_same_weights() {
    let digest = |dir: &Path| -> (String, String) {
        let v = read_json(&dir.join("pretext.lock"));
        let outs = &v["pipelines"]["clip-test"]["stages"]["clip"]["outputs"];
        (
            outs["encoder.safetensors"].as_str().unwrap().to_string(),
            outs["text_encoder.safetensors"]
                .as_str()
                .expect("the text tower is a locked output")
                .to_string(),
        )
    };
    let text = pipeline(500, 500, &format!("{TEXT}\nepochs = 8\n"));
    let whole = tempdir();
    let p = write(whole.path(), &text);
    pretext(whole.path(), &["run", &p]).expect_code(0);
    let want = digest(whole.path());

    // Killed after its second checkpoint, the run is started again.
    let resumed = tempdir();
    let p = write(resumed.path(), &text);
    let done = kill_after_checkpoint(resumed.path(), &p, 2);
    assert!((2..8).contains(&done), "killed after {done} epochs");
    pretext(resumed.path(), &["run", &p])
        .expect_code(0)
        .expect_stderr_has(&["resuming from checkpoint"]);
    assert_eq!(digest(resumed.path()), want);
}

#[test]
fn mistakes_with_pairs_are_refused_with_a_clear_error() {
    let dir = tempdir();
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "clip without captions",
            pipeline(200, 200, ""),
            &["objective `clip` pairs each image with its caption", "text = {"],
        ),
        (
            "text with an objective that does not pair",
            pipeline(200, 200, TEXT).replace(
                r#"{ plugin = "clip", temperature = 0.1 }"#,
                r#"{ plugin = "autoencoder" }"#,
            ),
            &["`text` trains a text tower on captions", "clip"],
        ),
        (
            "a prompt without the class",
            pipeline(200, 200, &TEXT.replace("a handwritten {}", "a digit")),
            &["`stages.clip.text.prompt` must hold `{}` exactly once"],
        ),
        (
            "dim not divisible by heads",
            pipeline(200, 200, &TEXT.replace("heads = 2", "heads = 5")),
            &["`stages.clip.text.dim` = 32 is not divisible by `stages.clip.text.heads` = 5"],
        ),
        (
            "an unknown text stage",
            pipeline(200, 200, &TEXT.replace(r#"input = "captions""#, r#"input = "capitons""#)),
            &["refers to unknown stage `capitons`"],
        ),
        (
            "passages and documents at once",
            pipeline(200, 200, TEXT).replace(
                r#"samples = "documents""#,
                r#"samples = "documents", passage_words = 8"#,
            ),
            &["samples = \"documents\" keeps each document whole"],
        ),
        (
            "an unknown tower",
            format!(
                "{}\n[stages.probe]\nkind = \"probe\"\nencoder = \"clip\"\ndata = \"captions\"\ntower = \"txt\"\n",
                pipeline(200, 200, TEXT)
            ),
            &["unknown tower `txt`"],
        ),
    ];
    for (what, text, needles) in cases {
        let p = write(dir.path(), &text);
        let run = pretext(dir.path(), &["validate", &p]);
        run.assert_no_panic();
        assert_eq!(run.code, 2, "{what}: {}", run.describe());
        run.expect_stderr_has(needles);
    }

    // Found when the stage runs: captions for fewer rows than there are images; captions
    // that are images; a text probe of an encoder without a text tower.
    let runtime: Vec<(&str, String, &[&str])> = vec![
        (
            "missing captions",
            pipeline(200, 150, &format!("{TEXT}\nepochs = 1")).replace("warmup_epochs = 1", "warmup_epochs = 0"),
            &["of the 200 images have no caption in stage `captions`", "paired by sample id"],
        ),
        (
            "captions that are images",
            pipeline(200, 200, &format!("{TEXT}\nepochs = 1"))
                .replace(r#"input = "captions""#, r#"input = "images""#)
                .replace("warmup_epochs = 1", "warmup_epochs = 0"),
            &["whose dataset holds images, not token sequences"],
        ),
        (
            "a text probe of an image-only encoder",
            format!(
                "{}\n[stages.ssl]\nkind = \"pretrain\"\ninput = \"views\"\nobjective = {{ plugin = \"autoencoder\" }}\nmodel = {{ arch = \"convnet\", width = 4, embed_dim = 8 }}\nepochs = 1\noptim = {{ warmup_epochs = 0 }}\n\n[stages.probe]\nkind = \"probe\"\nencoder = \"ssl\"\ndata = \"captions\"\ntower = \"text\"\n",
                pipeline(200, 200, &format!("{TEXT}\nepochs = 1")).replace("warmup_epochs = 1", "warmup_epochs = 0")
            ),
            &["text_encoder.json does not exist: the stage saved no such encoder"],
        ),
    ];
    for (what, text, needles) in runtime {
        let d = tempdir();
        let p = write(d.path(), &text);
        let run = pretext(d.path(), &["run", &p]);
        run.assert_no_panic();
        assert_eq!(run.code, 2, "{what}: {}", run.describe());
        run.expect_stderr_has(needles);
    }
}

/// CLIP's loss through the host library: `(CE(s·A·Bᵀ, diag) + CE(s·B·Aᵀ, diag)) / 2` over
/// row-normalised `A`, `B` and `s = exp(logit_scale)`, and its gradient with respect to the
/// trainable `logit_scale` (`d loss / d ln s` by finite differences of the formula).
#[test]
fn clip_loss_matches_the_formula_and_trains_its_temperature() {
    const N: usize = 3;
    const D: usize = 2;
    let a = [1.0, 2.0, -0.5, 1.5, 2.0, -1.0];
    let b = [0.8, 2.2, -1.0, 1.0, 1.5, -0.5];
    let formula = |ln_s: f64| -> f64 {
        let norm = |v: &[f64]| -> Vec<Vec<f64>> {
            v.chunks(D)
                .map(|r| {
                    let n = r.iter().map(|x| x * x).sum::<f64>().sqrt();
                    r.iter().map(|x| x / n).collect()
                })
                .collect()
        };
        let (na, nb) = (norm(&a), norm(&b));
        let s = ln_s.exp();
        let logit =
            |i: usize, j: usize| s * na[i].iter().zip(&nb[j]).map(|(x, y)| x * y).sum::<f64>();
        let ce = |by_row: bool| -> f64 {
            (0..N)
                .map(|i| {
                    let l = |j: usize| if by_row { logit(i, j) } else { logit(j, i) };
                    let lse = (0..N).map(|j| l(j).exp()).sum::<f64>().ln();
                    lse - l(i)
                })
                .sum::<f64>()
                / N as f64
        };
        (ce(true) + ce(false)) / 2.0
    };
    let lib = profile_dir().join(dylib_name("pretext_contrastive"));
    let reg = Registry::discover(&SearchPath {
        files: vec![lib],
        ..SearchPath::default()
    })
    .expect("load libpretext_contrastive");
    let found = reg
        .objectives
        .get("clip")
        .expect("the library provides `clip`");
    let params = serde_json::json!({ "temperature": 0.5 });
    let mut obj =
        ObjectiveInstance::create(found, "clip", params.as_object().unwrap()).expect("create clip");
    let needs = obj.needs().expect("clip needs");
    assert!(needs.paired_text && needs.views == 1);
    assert_eq!(
        needs.params.len(),
        1,
        "one trainable tensor: the logit scale"
    );
    let e = Engine::cpu();
    let t = |v: &[f64]| -> Tensor {
        e.tensor(v.iter().map(|&x| x as f32).collect(), N, D)
            .unwrap()
    };
    let ln_s = (1.0f64 / 0.5).ln();
    let scale = e.tensor(vec![ln_s as f32], 1, 1).unwrap();
    let (ta, tb) = (t(&a), t(&b));
    let embeddings = [ta.clone(), tb.clone()];
    let params = [("logit_scale".to_string(), scale.clone())];
    let inputs = StepInputs {
        params: &params,
        ..StepInputs::bare(&embeddings)
    };
    let mut g = e.graph(true);
    let out = obj
        .loss(&e, &mut g, &inputs, &mut HashMap::new())
        .expect("clip loss");
    let got = out.loss.scalar() as f64;
    assert!(
        (got - formula(ln_s)).abs() < 1e-4,
        "loss {got}, formula {}",
        formula(ln_s)
    );
    let reports: HashMap<String, f32> = out
        .reports
        .iter()
        .map(|(k, v)| (k.clone(), v.scalar()))
        .collect();
    assert!(
        (reports["temperature"] as f64 - 0.5).abs() < 1e-5,
        "{reports:?}"
    );
    let mut grads = g.backward(&out.loss).expect("backward");
    let analytic = grads.get(&scale).to_vec()[0] as f64;
    let h = 1e-5;
    let fd = (formula(ln_s + h) - formula(ln_s - h)) / (2.0 * h);
    assert!(
        (analytic - fd).abs() < 1e-3 && fd.abs() > 1e-3,
        "d loss / d logit_scale: backward {analytic}, finite differences {fd}"
    );
    assert!(grads.get(&ta).to_vec().iter().any(|v| v.abs() > 1e-4));
}

/// A folder of 16x16 PNGs in three class folders (`bars`, `cross`, `dots`), each image with
/// its caption beside it (`bars/007.png` and `bars/007.txt`), plus a folder of notes without
/// images that sorts first: the two walks' sample ids are `per_class` apart, so pairing by id
/// would give every image a caption of another class.
fn captioned_folder(root: &Path, per_class: usize) {
    let notes = root.join("aaa-notes");
    std::fs::create_dir_all(&notes).unwrap();
    for i in 0..per_class {
        std::fs::write(notes.join(format!("{i:03}.txt")), "a note, not a caption").unwrap();
    }
    let draw = |class: usize, i: usize| {
        let shift = (i % 5) as u32 + 2;
        image::GrayImage::from_fn(16, 16, |x, y| {
            let on = match class {
                0 => (y + shift) % 4 == 0,
                1 => x == shift + 4 || y == shift + 4,
                _ => (x + shift) % 4 == 0 && (y + shift) % 4 == 0,
            };
            image::Luma([if on { 255 } else { 0 }])
        })
    };
    for (c, name) in ["bars", "cross", "dots"].iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            draw(c, i).save(dir.join(format!("{i:03}.png"))).unwrap();
            let caption = format!("{name} shifted by {}", i % 5 + 2);
            std::fs::write(dir.join(format!("{i:03}.txt")), caption).unwrap();
        }
    }
}

fn folder_pipeline(root: &Path, pair_by: &str) -> String {
    let root = toml_path(root);
    format!(
        r#"[pipeline]
name = "clip-folder"
seed = 5

[stages.images]
kind = "ingest"
source = {{ format = "image_folder", path = {root}, labels = "folders" }}

[stages.captions]
kind = "ingest"
source = {{ format = "text", path = {root}, labels = "folders", samples = "documents" }}
tokenizer = {{ vocab_size = 280, seq_len = 8 }}

[stages.views]
kind = "augment"
input = "images"
views = [[]]

[stages.clip]
kind = "pretrain"
input = "views"
objective = {{ plugin = "clip", temperature = 0.1 }}
model = {{ arch = "convnet", width = 4, embed_dim = 16 }}
text = {{ input = "captions", dim = 16, depth = 1, heads = 2, prompt = "{{}} shifted by 4"{pair_by} }}
optim = {{ lr = 5e-3, warmup_epochs = 0 }}
epochs = 40
batch_size = 32
"#
    )
}

/// An image folder with a caption file beside each image: `pair_by = "path"` pairs them by
/// name although the text walk holds an extra file (ids do not line up), and the towers learn
/// the classes from the captions; an image without a caption, or images without paths, are
/// clear errors.
#[test]
fn an_image_folder_pairs_with_caption_files_by_path() {
    let dir = tempdir();
    let root = dir.path().join("shapes");
    captioned_folder(&root, 30);
    let p = write(dir.path(), &folder_pipeline(&root, r#", pair_by = "path""#));
    pretext(dir.path(), &["run", &p]).expect_code(0);
    let entry = &entries(&store(dir.path()), "pretrain")[0];
    let m = read_json(&entry.join("metrics.json"));
    // 90 pairs, 18 of them test; three classes told apart by their prompts alone.
    assert_eq!(m["clip.retrieval_pairs"].as_f64(), Some(18.0), "{m}");
    let zero_shot = m["clip.zero_shot_accuracy"].as_f64().unwrap();
    assert!(zero_shot >= 0.75, "zero-shot accuracy {zero_shot}: {m}");

    // One image loses its caption file: named, with what to do.
    std::fs::remove_file(root.join("cross/004.txt")).unwrap();
    let run = pretext(dir.path(), &["run", &p]);
    assert_eq!(run.code, 2, "{}", run.describe());
    run.expect_stderr_has(&[
        "1 of the 90 images have no caption in stage `captions`",
        "give every image a caption file",
    ]);

    // Images from a source without paths cannot pair by path.
    let parquet = pipeline(
        100,
        100,
        &format!(
            "{}\nepochs = 1",
            TEXT.replace(" }", r#", pair_by = "path" }"#)
        ),
    )
    .replace("warmup_epochs = 1", "warmup_epochs = 0");
    let d = tempdir();
    let p = write(d.path(), &parquet);
    let run = pretext(d.path(), &["run", &p]);
    assert_eq!(run.code, 2, "{}", run.describe());
    run.expect_stderr_has(&["the images record no paths", "image_folder"]);
}

/// Images over the memory budget are streamed; each batch still finds its captions by id,
/// and the towers are measured on the test rows kept in memory.
#[test]
fn streamed_images_find_their_captions() {
    let dir = tempdir();
    let p = write(
        dir.path(),
        &pipeline(1000, 1000, &format!("{TEXT}\nepochs = 2\n")),
    );
    crate::support::pretext_with(
        dir.path(),
        &["run", &p],
        &[("PRETEXT_MEMORY_BUDGET", "300K")],
    )
    .expect_code(0)
    .expect_stderr_has(&["streaming its row groups"]);
    let entry = &entries(&store(dir.path()), "pretrain")[0];
    let m = read_json(&entry.join("metrics.json"));
    assert_eq!(m["clip.retrieval_pairs"].as_f64(), Some(200.0), "{m}");
    assert!(m["clip.zero_shot_accuracy"].as_f64().is_some(), "{m}");
}
