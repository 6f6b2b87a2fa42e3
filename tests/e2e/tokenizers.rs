//! Text tokenizers are standard `tokenizer.json` files: the one a text ingest stage trains
//! loads in the Python `tokenizers` package and encodes passages to exactly the rows pretext
//! stored (and training it is deterministic across processes and thread counts), and a
//! pipeline can bring a `tokenizer.json` made elsewhere (`tokenizer = { path = .. }`), with
//! clear errors for files that are not tokenizers or lack the special tokens.
//!
//! Needs Python 3 with `tokenizers` (`python3 -m pip install tokenizers==0.22.2`); the tests
//! fail, saying so, when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use pretext::data::{table, Samples};

use crate::support::{command, entries, pretext, statuses, store, tempdir, toml_path, workspace};

/// The pip line that installs what these tests need (the version the tests were written
/// against; the Rust crate is the same release).
const PIP: &str = "python3 -m pip install tokenizers==0.22.2";

/// Runs a Python script with `args`; returns its stdout. Panics, naming the pip command,
/// when Python or its `tokenizers` package is missing.
fn python(script: &str, args: &[&str]) -> String {
    let probe = Command::new("python3")
        .args(["-c", "import tokenizers"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the Python package `tokenizers` is missing: run `{PIP}`\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run python3 ({e}); install Python 3, then `{PIP}`"),
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the Python script failed:\n{script}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 from Python")
}

/// Python: encode every text of the JSON list in `argv[2]` with `Tokenizer.from_file(argv[1])`
/// (`add_special_tokens` as `argv[3]` says), print the id lists as JSON.
const ENCODE: &str = r#"
import json, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
texts = json.load(open(sys.argv[2], encoding="utf-8"))
special = sys.argv[3] == "yes"
print(json.dumps([tok.encode(t, add_special_tokens=special).ids for t in texts]))
"#;

fn python_encode(tokenizer: &Path, texts: &[String], special: bool) -> Vec<Vec<u32>> {
    let dir = tempdir();
    let file = dir.path().join("texts.json");
    std::fs::write(&file, serde_json::to_string(texts).unwrap()).unwrap();
    let out = python(
        ENCODE,
        &[
            &tokenizer.display().to_string(),
            &file.display().to_string(),
            if special { "yes" } else { "no" },
        ],
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The passages (`meta_text`) and token rows of the dataset in an ingest entry.
fn rows(entry: &Path) -> (Vec<String>, Vec<Vec<u32>>) {
    let (info, records) = table::read_records(&entry.join("dataset.parquet")).unwrap();
    let text = info
        .meta
        .iter()
        .position(|m| m == "text")
        .expect("meta_text");
    let Samples::Tokens { data, len, .. } = &records.samples else {
        panic!("not a token dataset");
    };
    let rows = data.chunks(*len).map(<[u32]>::to_vec).collect();
    (records.meta[text].clone(), rows)
}

/// The one ingest entry of the store in `dir`.
fn ingest_entry(dir: &Path) -> PathBuf {
    let e = entries(&store(dir), "ingest");
    assert_eq!(e.len(), 1, "{e:?}");
    e[0].clone()
}

fn write_pipeline(dir: &Path, tokenizer: &str, extra: &str) -> String {
    let p = dir.join("text.toml");
    std::fs::write(
        &p,
        format!(
            "[pipeline]\nname = \"tok\"\nseed = 5\n\n[stages.prose]\nkind = \"ingest\"\n\
             source = {{ format = \"text\", path = {}, passage_words = 30, encoding = \"auto\" }}\n\
             tokenizer = {tokenizer}\n{extra}",
            toml_path(&workspace().join("datasets/gutenberg/prose/carroll-alice.txt"))
        ),
    )
    .unwrap();
    p.display().to_string()
}

#[test]
fn the_trained_tokenizer_loads_in_python_and_encodes_like_pretext() {
    let dir = tempdir();
    let p = write_pipeline(dir.path(), "{ vocab_size = 500, seq_len = 24 }", "");
    pretext(dir.path(), &["run", &p]).expect_code(0);
    let entry = ingest_entry(dir.path());
    let tok = entry.join("tokenizer.json");
    let (texts, stored) = rows(&entry);
    assert!(texts.len() > 50, "{} passages", texts.len());

    // The file carries [CLS], truncation and padding: Python's encoding of each passage is
    // the stored row, id for id.
    let from_python = python_encode(&tok, &texts, true);
    assert_eq!(from_python.len(), stored.len());
    for (i, (py, ours)) in from_python.iter().zip(&stored).enumerate() {
        assert_eq!(py, ours, "passage {i}: {:?}", texts[i]);
    }
    // The ids pretext's plugins rely on, and a round trip through Python's decoder.
    let check = python(
        r#"
import sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
names = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
assert [tok.token_to_id(n) for n in names] == [0, 1, 2, 3, 4], [tok.token_to_id(n) for n in names]
text = "Alice was beginning to get very tired — of sitting by her sister, naïve 🙂"
tok.no_padding(); tok.no_truncation()
ids = tok.encode(text, add_special_tokens=False).ids
assert tok.decode(ids) == text, tok.decode(ids)
print(tok.get_vocab_size())
"#,
        &[&tok.display().to_string()],
    );
    let vocab: f64 = check.trim().parse().unwrap();
    let show = pretext(dir.path(), &["show", "--json", &p]);
    let log: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(log["stages"]["prose"]["metrics"]["vocab_size"], vocab);
    assert!(vocab > 261.0 && vocab <= 500.0, "{vocab}");

    // Deterministic: another process, one thread, another folder: the same bytes.
    let other = tempdir();
    let p2 = write_pipeline(other.path(), "{ vocab_size = 500, seq_len = 24 }", "");
    let out = command(other.path(), &["run", &p2])
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = std::fs::read(ingest_entry(other.path()).join("tokenizer.json")).unwrap();
    assert!(
        again == std::fs::read(&tok).unwrap(),
        "training the tokenizer twice gave different files"
    );

    // A previous run's tokenizer.json brought by another pipeline: the same rows.
    let brought = tempdir();
    std::fs::copy(&tok, brought.path().join("tokenizer.json")).unwrap();
    let p3 = write_pipeline(
        brought.path(),
        "{ path = \"tokenizer.json\", seq_len = 24 }",
        "",
    );
    pretext(brought.path(), &["run", &p3]).expect_code(0);
    let (_, rows3) = rows(&ingest_entry(brought.path()));
    assert_eq!(rows3, stored);
}

/// Python: train a lower-casing WordPiece tokenizer (BERT's pre-tokeniser, specials in
/// another order than pretext's) on the text file `argv[1]`, save it to `argv[2]`.
const WORDPIECE: &str = r#"
import sys
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
tok.normalizer = normalizers.BertNormalizer(lowercase=True)
tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
tok.decoder = decoders.WordPiece()
trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=["[UNK]", "[SEP]", "[CLS]", "[MASK]", "[PAD]"], show_progress=False)
tok.train([sys.argv[1]], trainer)
tok.save(sys.argv[2])
"#;

#[test]
fn a_pipeline_brings_its_own_tokenizer_json() {
    let dir = tempdir();
    let tok = dir.path().join("wordpiece.json");
    let alice = workspace().join("datasets/gutenberg/prose/carroll-alice.txt");
    python(
        WORDPIECE,
        &[&alice.display().to_string(), &tok.display().to_string()],
    );
    let extra = "\n[stages.masked]\nkind = \"augment\"\ninput = \"prose\"\n\
                 views = [[{ name = \"token_mask\", prob = 0.2 }]]\n\n\
                 [stages.report]\nkind = \"report\"\n";
    let p = write_pipeline(
        dir.path(),
        "{ path = \"wordpiece.json\", seq_len = 20 }",
        extra,
    );
    let run = pretext(dir.path(), &["run", &p]);
    run.expect_code(0);
    let entry = ingest_entry(dir.path());
    // The file is stored as it was brought.
    assert_eq!(
        std::fs::read(entry.join("tokenizer.json")).unwrap(),
        std::fs::read(&tok).unwrap()
    );

    // The specials were ids 0..5 in another order ([UNK] [SEP] [CLS] [MASK] [PAD]): pretext
    // gives them its own ids and keeps every other id (all >= 5) as it is.
    let to_ours = |f: u32| match f {
        0 => 1,
        1 => 3,
        2 => 2,
        3 => 4,
        4 => 0,
        f => f,
    };
    let (texts, stored) = rows(&entry);
    let from_python = python_encode(&tok, &texts, false);
    assert_eq!(from_python.len(), stored.len());
    for (i, (py, ours)) in from_python.iter().zip(&stored).enumerate() {
        let mut want = vec![2];
        want.extend(py.iter().map(|&f| to_ours(f)));
        want.truncate(20);
        want.resize(20, 0);
        assert_eq!(&want, ours, "passage {i}: {:?}", texts[i]);
    }

    // The report shows the masked preview decoded with the file's WordPiece decoder.
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("report `report`: "))
        .unwrap_or_else(|| panic!("no report line\n{}", run.describe()));
    let html = std::fs::read_to_string(line.trim_start_matches("report `report`: ")).unwrap();
    assert!(html.contains("[MASK]"), "no masked preview in the report");
    assert!(
        [" the ", " and ", " she ", " to ", " of ", " it "]
            .iter()
            .any(|w| html.contains(w)),
        "no decoded text in the report"
    );
    assert!(!html.contains(" ##"), "WordPiece pieces shown undecoded");

    // The file's contents are part of the stage key: changing it reruns the ingest stage.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok).unwrap()).unwrap();
    json["normalizer"]["lowercase"] = serde_json::Value::Bool(false);
    std::fs::write(&tok, json.to_string()).unwrap();
    let again = pretext(dir.path(), &["run", &p]);
    again.expect_code(0);
    assert_eq!(
        statuses(&again.stdout).get("prose").map(String::as_str),
        Some("ran"),
        "the ingest stage did not rerun after its tokenizer changed\n{}",
        again.describe()
    );
}

#[test]
fn a_brought_file_that_is_not_a_usable_tokenizer_is_a_clear_error() {
    let dir = tempdir();
    let run_with = |name: &str, contents: &[u8]| {
        std::fs::write(dir.path().join(name), contents).unwrap();
        let p = write_pipeline(
            dir.path(),
            &format!("{{ path = \"{name}\", seq_len = 16 }}"),
            "",
        );
        pretext(dir.path(), &["run", &p])
    };
    run_with("notes.json", br#"{"hello": "world"}"#)
        .expect_code(2)
        .expect_stderr_has(&["notes.json", "not a tokenizer.json"]);
    run_with("binary.json", b"\xff\xfe\x00t")
        .expect_code(2)
        .expect_stderr_has(&["binary.json", "not a tokenizer.json"]);

    // A real tokenizer without pretext's special tokens (a WordLevel model made in Python).
    let bare = dir.path().join("bare.json");
    python(
        r#"
import sys
from tokenizers import Tokenizer, models, pre_tokenizers
tok = Tokenizer(models.WordLevel({"alice": 0, "<unk>": 1, "rabbit": 2}, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tok.save(sys.argv[1])
"#,
        &[&bare.display().to_string()],
    );
    let contents = std::fs::read(&bare).unwrap();
    run_with("bare.json", &contents)
        .expect_code(2)
        .expect_stderr_has(&[
            "bare.json",
            "lacks special tokens",
            "`[PAD]` or `<pad>`",
            "`[MASK]` or `<mask>`",
            "add_special_tokens",
        ]);

    // A missing file, and `path` with `vocab_size`: `validate` already says so.
    let p = write_pipeline(dir.path(), "{ path = \"nowhere.json\", seq_len = 16 }", "");
    pretext(dir.path(), &["validate", &p])
        .expect_code(2)
        .expect_stderr_has(&["tokenizer", "nowhere.json", "no such file"]);
    let p = write_pipeline(
        dir.path(),
        "{ path = \"bare.json\", vocab_size = 300, seq_len = 16 }",
        "",
    );
    pretext(dir.path(), &["validate", &p])
        .expect_code(2)
        .expect_stderr_has(&["stages.prose.tokenizer.vocab_size", "`path` brings one"]);
}
