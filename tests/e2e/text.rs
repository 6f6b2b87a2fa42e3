//! Text end to end: the real binary on the embedded Gutenberg excerpt (prose, verse) through
//! text ingest (decoding, passages, BPE), token masking, MLM and SimCSE pretraining, the
//! author probe, a LoRA fine-tune, novels-vs-verse OOD and the report; and the errors a person
//! writing a text pipeline meets.

use std::path::Path;

use crate::support::{entries, pretext, store, tempdir, toml_path, workspace};

fn gutenberg(part: &str) -> String {
    toml_path(&workspace().join("datasets/gutenberg").join(part))
}

/// A small text pipeline: ~390 prose passages of 100 words cut to 32 tokens, a 2-block
/// transformer, 3 epochs.
fn pipeline(extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "text"
seed = 3

[stages.prose]
kind = "ingest"
source = {{ format = "text", path = {prose}, labels = "files", label_delimiter = "-", encoding = "auto", passage_words = 100 }}
tokenizer = {{ vocab_size = 400, seq_len = 32 }}

[stages.verse]
kind = "ingest"
source = {{ format = "text", path = {verse}, labels = "files", label_delimiter = "-", encoding = "auto", passage_words = 100 }}
tokenizer = {{ vocab_size = 300, seq_len = 24 }}

[stages.masked]
kind = "augment"
input = "prose"
views = [[{{ name = "token_delete", prob = 0.05 }}, {{ name = "token_mask", prob = 0.2 }}]]

[stages.mlm]
kind = "pretrain"
input = "masked"
objective = {{ plugin = "mlm" }}
model = {{ arch = "transformer", dim = 32, depth = 2, heads = 2, embed_dim = 32 }}
optim = {{ name = "adamw", lr = 3e-3, warmup_epochs = 0 }}
epochs = 3
batch_size = 32

[stages.authors]
kind = "probe"
encoder = "mlm"
data = "prose"
methods = ["linear", "knn"]
baseline = true
linear = {{ epochs = 20 }}

# Another ingest, another tokenizer and length: read with the encoder's tokenizer.
[stages.verse_authors]
kind = "probe"
encoder = "mlm"
data = "verse"
methods = ["knn"]

[stages.tune]
kind = "finetune"
encoder = "mlm"
data = "prose"
method = "lora"
lora = {{ rank = 2, alpha = 4.0 }}
epochs = 2
batch_size = 32

[stages.ood]
kind = "ood_eval"
encoder = "mlm"
data = "prose"
ood = "verse"
corruptions = []
linear = {{ epochs = 10 }}

[stages.summary]
kind = "report"
{extra}"#,
        prose = gutenberg("prose"),
        verse = gutenberg("verse"),
    )
}

fn metrics(dir: &Path, pipeline: &str) -> serde_json::Value {
    let show = pretext(dir, &["show", "--json", pipeline]);
    show.expect_code(0);
    serde_json::from_str(&show.stdout).unwrap()
}

#[test]
fn text_pipeline_runs_end_to_end_and_is_cached() {
    let dir = tempdir();
    let p = dir.path().join("text.toml");
    std::fs::write(&p, pipeline("")).unwrap();
    let ps = p.display().to_string();
    let run = pretext(dir.path(), &["run", &ps]);
    run.expect_code(0);
    let log = metrics(dir.path(), &ps);
    let m = |stage: &str, k: &str| {
        log["stages"][stage]["metrics"][k]
            .as_f64()
            .unwrap_or_else(|| panic!("{stage}.{k} missing: {}", log["stages"][stage]))
    };

    // Ingest: 4 novels, 4 authors, the limit, the vocabulary; verse has the Latin-1 file.
    assert_eq!(m("prose", "documents"), 4.0);
    assert_eq!(m("prose", "classes"), 4.0);
    let n = m("prose", "samples");
    assert!((300.0..500.0).contains(&n), "{n} passages");
    assert_eq!(m("prose", "train") + m("prose", "test"), n);
    let nv = m("verse", "samples");
    assert!((100.0..300.0).contains(&nv), "{nv} verse passages");
    assert!((0.0..=1.0).contains(&m("verse_authors", "knn.accuracy")));
    assert_eq!(m("prose", "seq_len"), 32.0);
    assert!(m("prose", "vocab_size") <= 400.0 && m("prose", "vocab_size") > 261.0);
    assert_eq!(m("prose", "latin1_files"), 0.0);
    assert_eq!(m("verse", "latin1_files"), 1.0);
    let st = store(dir.path());
    let ingest = entries(&st, "ingest");
    let tok: serde_json::Value = ingest
        .iter()
        .map(|e| e.join("tokenizer.json"))
        .find(|t| t.exists())
        .map(|t| serde_json::from_str(&std::fs::read_to_string(t).unwrap()).unwrap())
        .expect("a tokenizer.json");
    // A standard Hugging Face tokenizer.json: byte-level BPE, pretext's specials first.
    assert_eq!(tok["model"]["type"], "BPE");
    assert_eq!(
        tok["pre_tokenizer"]["pretokenizers"][1]["type"],
        "ByteLevel"
    );
    assert_eq!(tok["added_tokens"][4]["content"], "[MASK]");
    assert_eq!(tok["added_tokens"][4]["id"], 4);

    // MLM: validation accuracy and perplexity every epoch, perplexity = exp(loss), and the
    // held-out loss falls.
    let pre = entries(&st, "pretrain");
    assert_eq!(pre.len(), 1);
    let hist: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(pre[0].join("history.json")).unwrap())
            .unwrap();
    assert_eq!(hist.len(), 3);
    for r in &hist {
        let v = &r["validation"];
        let (acc, loss, ppl) = (
            v["mlm_accuracy"].as_f64().unwrap(),
            v["mlm_loss"].as_f64().unwrap(),
            v["mlm_perplexity"].as_f64().unwrap(),
        );
        assert!((0.0..=1.0).contains(&acc), "{v}");
        assert!((ppl - loss.exp()).abs() < 1e-6 * ppl, "{v}");
        assert!(v["mlm_targets"].as_f64().unwrap() > 0.0);
        assert!(r["reports"]["masked_accuracy"].as_f64().is_some(), "{r}");
    }
    let first = hist[0]["validation"]["mlm_loss"].as_f64().unwrap();
    let last = hist[2]["validation"]["mlm_loss"].as_f64().unwrap();
    assert!(
        last < first,
        "held-out MLM loss did not fall: {first} → {last}"
    );
    assert!(m("mlm", "validation.mlm_perplexity") > 1.0);

    // The probes, fine-tune and OOD ran on text and report in range.
    for k in [
        "linear.accuracy",
        "knn.accuracy",
        "baseline.linear.accuracy",
    ] {
        assert!((0.0..=1.0).contains(&m("authors", k)), "{k}");
    }
    assert!((0.0..=1.0).contains(&m("tune", "accuracy")));
    let auroc = m("ood", "ood.best_auroc");
    assert!((0.0..=1.0).contains(&auroc), "{auroc}");

    // The report shows the masked view as text.
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("report `summary`: "))
        .unwrap_or_else(|| panic!("no report line\n{}", run.describe()));
    let html_path = std::path::PathBuf::from(line.trim_start_matches("report `summary`: "));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("[MASK]"), "no masked preview in the report");
    // The masked-token curves: SVG files in plots/, inlined in the page.
    for plot in ["plots/mlm-mlm-accuracy.svg", "plots/mlm-mlm-perplexity.svg"] {
        let svg = std::fs::read_to_string(html_path.parent().unwrap().join(plot))
            .unwrap_or_else(|e| panic!("{plot}: {e}"));
        assert!(html.contains(&svg), "{plot} not in the report");
    }

    // Nothing unchanged runs twice.
    let again = pretext(dir.path(), &["run", &ps]);
    again.expect_code(0);
    assert!(
        !again.stdout.lines().any(|l| l.contains(" ran ")),
        "{}",
        again.stdout
    );
}

#[test]
fn text_mistakes_are_clear_errors() {
    let dir = tempdir();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };

    // Latin-1 bytes read as UTF-8: the file, line and column, and what to set.
    let texts = dir.path().join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    let mut bytes = b"A first line of plain words.\nCaf\xe9 au lait is written here\n".to_vec();
    bytes.extend(b"and many more words follow to make a few passages of text. ".repeat(20));
    std::fs::write(texts.join("one.txt"), &bytes).unwrap();
    let base = "[pipeline]\nname = \"t\"\n\n[stages.text]\nkind = \"ingest\"\nsource = { format = \"text\", path = \"texts\", passage_words = 8 }\ntokenizer = { vocab_size = 300, seq_len = 16 }\n".to_string();
    let p = write("utf8.toml", &base);
    pretext(dir.path(), &["run", &p])
        .expect_code(2)
        .expect_stderr_has(&[
            "one.txt",
            "invalid UTF-8 at line 2, column 4",
            "encoding = \"latin-1\"",
        ]);
    // With `auto` the same file reads (as Latin-1).
    let p = write(
        "auto.toml",
        &base.replace(
            "passage_words = 8",
            "passage_words = 8, encoding = \"auto\"",
        ),
    );
    pretext(dir.path(), &["run", &p]).expect_code(0);

    // A text source needs a tokenizer; a tokenizer needs a text source.
    let p = write(
        "notok.toml",
        &base.replace("tokenizer = { vocab_size = 300, seq_len = 16 }\n", ""),
    );
    pretext(dir.path(), &["validate", &p])
        .expect_code(2)
        .expect_stderr_has(&["a text source needs `stages.text.tokenizer`"]);

    // MLM without a masking view; SimCSE without dropout; a transformer on images; a view
    // that moves masked tokens.
    let tail = |views: &str, objective: &str, model: &str| {
        format!(
            "{base}\n[stages.views]\nkind = \"augment\"\ninput = \"text\"\nviews = {views}\n\n[stages.ssl]\nkind = \"pretrain\"\ninput = \"views\"\nobjective = {{ plugin = \"{objective}\" }}\nmodel = {model}\nepochs = 2\nbatch_size = 8\n"
        )
        .replace("passage_words = 8", "passage_words = 8, encoding = \"auto\"")
    };
    let tf = "{ arch = \"transformer\", dim = 16, depth = 1, heads = 2, embed_dim = 8 }";
    let p = write(
        "nomask.toml",
        &tail("[[{ name = \"token_delete\" }]]", "mlm", tf),
    );
    pretext(dir.path(), &["run", &p])
        .expect_code(2)
        .expect_stderr_has(&["flagged none", "token_mask"]);
    let p = write(
        "nodrop.toml",
        &tail(
            "[[{ name = \"token_swap\" }], [{ name = \"token_swap\" }]]",
            "simcse",
            tf,
        ),
    );
    pretext(dir.path(), &["validate", &p])
        .expect_code(2)
        .expect_stderr_has(&["dropout = 0.1"]);
    let p = write(
        "moved.toml",
        &tail(
            "[[{ name = \"token_mask\", prob = 0.5 }, { name = \"token_swap\", swaps = 4 }]]",
            "mlm",
            tf,
        ),
    );
    pretext(dir.path(), &["run", &p])
        .expect_code(2)
        .expect_stderr_has(&["token_swap", "before the masking one"]);
    let p = write(
        "mlp.toml",
        &tail(
            "[[{ name = \"token_mask\" }]]",
            "mlm",
            "{ arch = \"mlp\", hidden = [8] }",
        ),
    );
    pretext(dir.path(), &["validate", &p])
        .expect_code(2)
        .expect_stderr_has(&["needs a text transformer"]);
}
