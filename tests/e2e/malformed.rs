//! One table of malformed inputs — every broken golden pipeline (through `run`, not only
//! `validate`), corrupt IDX and parquet data files, and broken plugin libraries and objectives
//! — each with its expected exit code and message. No case may print a panic ("panicked at",
//! checked by `support::pretext`) or an "internal error".

use std::path::{Path, PathBuf};

use crate::minifuzz::{mutate, Rng, PARQUET_TOKENS};
use crate::support::*;

/// One malformed input: a pipeline file (and whatever files it names) written by `setup`.
struct Case {
    name: String,
    /// Writes the case's files into the folder and returns the pipeline file.
    setup: Box<dyn Fn(&Path) -> PathBuf>,
    code: i32,
    /// Substrings of stderr (`<dir>` stands for the case's folder).
    needles: Vec<String>,
}

fn case(
    name: &str,
    code: i32,
    needles: &[&str],
    setup: impl Fn(&Path) -> PathBuf + 'static,
) -> Case {
    Case {
        name: name.into(),
        setup: Box::new(setup),
        code,
        needles: needles.iter().map(|s| s.to_string()).collect(),
    }
}

/// A pipeline with one ingest stage reading `source` (an inline table).
fn ingest_only(dir: &Path, source: &str) -> PathBuf {
    let p = dir.join("pipeline.toml");
    std::fs::write(
        &p,
        format!(
            "[pipeline]\nname = \"m\"\n\n[stages.data]\nkind = \"ingest\"\nsource = {source}\n"
        ),
    )
    .unwrap();
    p
}

/// 5 MNIST images and labels, raw IDX with headers that say 5.
fn idx5() -> (Vec<u8>, Vec<u8>) {
    let (images, labels) = mnist();
    let mut img = pretext::data::idx::read_maybe_gzip(&images).unwrap();
    let mut lab = pretext::data::idx::read_maybe_gzip(&labels).unwrap();
    img.truncate(16 + 5 * 784);
    img[4..8].copy_from_slice(&5u32.to_be_bytes());
    lab.truncate(8 + 5);
    lab[4..8].copy_from_slice(&5u32.to_be_bytes());
    (img, lab)
}

/// An IDX case: the images and labels files are `f(images, labels)`.
fn idx_case(
    name: &str,
    needles: &[&str],
    f: impl Fn(Vec<u8>, Vec<u8>) -> (Vec<u8>, Vec<u8>) + 'static,
) -> Case {
    case(name, 2, needles, move |dir| {
        let (img, lab) = idx5();
        let (img, lab) = f(img, lab);
        std::fs::write(dir.join("images"), img).unwrap();
        std::fs::write(dir.join("labels"), lab).unwrap();
        ingest_only(
            dir,
            &format!(
                "{{ format = \"idx\", images = {}, labels = {} }}",
                toml_path(&dir.join("images")),
                toml_path(&dir.join("labels"))
            ),
        )
    })
}

fn fixture_data(name: &str) -> Vec<u8> {
    std::fs::read(workspace().join("tests/fixtures/data").join(name)).unwrap()
}

/// A parquet case: `data.parquet` holds `bytes(features_zstd.parquet)`, read with `columns`.
fn parquet_case(
    name: &str,
    needles: &[&str],
    columns: &'static str,
    f: impl Fn(Vec<u8>) -> Vec<u8> + 'static,
) -> Case {
    case(name, 2, needles, move |dir| {
        let bytes = f(fixture_data("features_zstd.parquet"));
        let path = dir.join("data.parquet");
        std::fs::write(&path, bytes).unwrap();
        ingest_only(
            dir,
            &format!(
                "{{ format = \"parquet\", path = {}, {columns} }}",
                toml_path(&path)
            ),
        )
    })
}

/// A plugin case: the tiny pipeline with `plugin_paths = [<lib>]` and `objective`.
fn plugin_case(
    name: &str,
    code: i32,
    needles: &[&str],
    objective: &'static str,
    lib: impl Fn(&Path) -> PathBuf + 'static,
) -> Case {
    case(name, code, needles, move |dir| {
        let tiny = Tiny {
            objective: objective.into(),
            plugin_paths: vec![lib(dir)],
            ..Tiny::default()
        };
        tiny.write(dir)
    })
}

fn file_in(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn data_and_plugin_cases() -> Vec<Case> {
    let set = |mut v: Vec<u8>, at: usize, bytes: &[u8]| {
        v[at..at + bytes.len()].copy_from_slice(bytes);
        v
    };
    let mut cases = vec![
        // IDX files.
        idx_case(
            "idx: empty images file",
            &["<dir>/images", "too short to be an IDX file"],
            |_, l| (Vec::new(), l),
        ),
        idx_case(
            "idx: 2-byte file",
            &["too short to be an IDX file"],
            |_, l| (vec![0, 0], l),
        ),
        idx_case(
            "idx: wrong magic",
            &["not an IDX file", "0x1f"],
            move |i, l| (set(i, 0, &[0x1f]), l),
        ),
        idx_case(
            "idx: element type int32",
            &["IDX element type 0x0d is not supported"],
            move |i, l| (set(i, 2, &[0x0d]), l),
        ),
        idx_case(
            "idx: zero dimensions",
            &["declares 0 dimensions"],
            move |i, l| (set(i, 3, &[0]), l),
        ),
        idx_case(
            "idx: five dimensions",
            &["declares 5 dimensions"],
            move |i, l| (set(i, 3, &[5]), l),
        ),
        idx_case(
            "idx: truncated header",
            &["truncated IDX header"],
            |mut i, l| {
                i.truncate(10);
                (i, l)
            },
        ),
        idx_case(
            "idx: truncated data",
            &["<dir>/images", "truncated", "promises 5 images"],
            |mut i, l| {
                i.truncate(i.len() - 100);
                (i, l)
            },
        ),
        idx_case(
            "idx: overflowing dimensions",
            &["IDX dimensions", "overflow"],
            move |i, l| (set(i, 4, &[0xff; 12]), l),
        ),
        idx_case(
            "idx: fewer labels than images",
            &["<dir>/labels", "has 4 labels", "5 images"],
            move |i, l| {
                let mut l = set(l, 4, &4u32.to_be_bytes());
                l.pop();
                (i, l)
            },
        ),
        idx_case(
            "idx: images file as labels",
            &["expected a labels file with 1 dimension"],
            |i, _| (i.clone(), i),
        ),
        idx_case(
            "idx: corrupt gzip",
            &["<dir>/images", "cannot read"],
            |_, l| (b"\x1f\x8b\x08\x00garbage".to_vec(), l),
        ),
        case(
            "idx: images path is a folder",
            2,
            &["<dir>/images"],
            |dir| {
                std::fs::create_dir(dir.join("images")).unwrap();
                let (_, lab) = idx5();
                std::fs::write(dir.join("labels"), lab).unwrap();
                ingest_only(
                    dir,
                    &format!(
                        "{{ format = \"idx\", images = {}, labels = {} }}",
                        toml_path(&dir.join("images")),
                        toml_path(&dir.join("labels"))
                    ),
                )
            },
        ),
        // Parquet files.
        parquet_case(
            "parquet: not parquet at all",
            &["<dir>/data.parquet", "Corrupt footer"],
            "features = \"embedding\"",
            |_| b"hello, not parquet".to_vec(),
        ),
        parquet_case(
            "parquet: truncated",
            &["<dir>/data.parquet", "Corrupt footer"],
            "features = \"embedding\"",
            |b| b[..b.len() / 2].to_vec(),
        ),
        parquet_case(
            "parquet: footer length past the start",
            &["<dir>/data.parquet", "Parquet file too small"],
            "features = \"embedding\"",
            |mut b| {
                let n = b.len();
                b[n - 8..n - 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
                b
            },
        ),
        parquet_case(
            "parquet: zero-length footer",
            &[
                "<dir>/data.parquet",
                "cannot read the file's metadata",
                "truncated",
            ],
            "features = \"embedding\"",
            |mut b| {
                let n = b.len();
                b[n - 8..n - 4].copy_from_slice(&[0; 4]);
                b
            },
        ),
        // Found by `cargo fuzz run parquet_ingest`: a 2.5 kB footer whose key-value list
        // header claims ~75 million entries made parquet 53 reserve 3.5 GB before decoding
        // (an abort where the allocation fails); parquet 60 bounds lists by the bytes left.
        parquet_case(
            "parquet: footer list claiming millions of entries (fuzz finding)",
            &["<dir>/data.parquet", "cannot read the file's metadata"],
            "features = \"embedding\"",
            |_| fixture_data("fuzz-huge-list-footer.parquet"),
        ),
        parquet_case(
            "parquet: garbage metadata",
            &["<dir>/data.parquet", "parquet"],
            "features = \"embedding\"",
            |mut b| {
                let n = b.len();
                for x in &mut b[n - 208..n - 8] {
                    *x = 0x19;
                }
                b
            },
        ),
        parquet_case(
            "parquet: missing features column",
            &["has no column `nope`", "its columns are"],
            "features = \"nope\"",
            |b| b,
        ),
        parquet_case(
            "parquet: missing label column",
            &["has no column `nolabel`"],
            "features = \"embedding\", label = \"nolabel\"",
            |b| b,
        ),
        case(
            "parquet: gzip codec",
            2,
            &["compressed with GZIP", "snappy or zstd"],
            |dir| {
                let path = file_in(dir, "data.parquet", &fixture_data("features_gzip.parquet"));
                ingest_only(dir, &format!("{{ format = \"parquet\", path = {}, features = \"embedding\", label = \"label\" }}", toml_path(&path)))
            },
        ),
        // Plugins.
        plugin_case(
            "plugin: wrong ABI version",
            2,
            &["ABI v999", "rebuild the plugin"],
            "{ plugin = \"simclr\" }",
            |_| fixtures().abi_mismatch.clone(),
        ),
        plugin_case(
            "plugin: missing entry symbol",
            2,
            &["not a pretext plugin", "pretext_plugin_entry"],
            "{ plugin = \"simclr\" }",
            |_| fixtures().no_entry.clone(),
        ),
        plugin_case(
            "plugin: a text file",
            2,
            &["<dir>/libtext.so"],
            "{ plugin = \"simclr\" }",
            |dir| file_in(dir, "libtext.so", b"this is not a shared library\n"),
        ),
        plugin_case(
            "plugin: an empty file",
            2,
            &["<dir>/libempty.so"],
            "{ plugin = \"simclr\" }",
            |dir| file_in(dir, "libempty.so", b""),
        ),
        plugin_case(
            "plugin: a truncated library",
            2,
            &["<dir>/libcut.so"],
            "{ plugin = \"simclr\" }",
            |dir| {
                let bytes = std::fs::read(&fixtures().external_objective).unwrap();
                file_in(dir, "libcut.so", &bytes[..4096])
            },
        ),
        plugin_case(
            "plugin: path does not exist",
            2,
            &["<dir>/libnothere.so", "does not exist"],
            "{ plugin = \"simclr\" }",
            |dir| dir.join("libnothere.so"),
        ),
        plugin_case(
            "plugin: objective panics",
            1,
            &[
                "stage `ssl` failed",
                "objective `panicky`",
                "deliberate failure 4711",
            ],
            "{ plugin = \"panicky\" }",
            |_| fixtures().panicky.clone(),
        ),
        plugin_case(
            "plugin: NaN loss",
            1,
            &["objective `nan_loss`", "returned a non-finite loss (NaN)"],
            "{ plugin = \"nan_loss\" }",
            |_| fixtures().panicky.clone(),
        ),
        plugin_case(
            "plugin: infinite loss",
            1,
            &[
                "objective `nan_loss`",
                "returned a non-finite loss (inf) at epoch 1 step 2",
                "the learning rate is likely too high",
            ],
            "{ plugin = \"nan_loss\", finite_steps = 2, value = \"inf\" }",
            |_| fixtures().panicky.clone(),
        ),
        plugin_case(
            "plugin: 1×d loss",
            1,
            &[
                "objective `wrong_shape`",
                "returned a loss of shape (1, 8)",
                "a loss must be a scalar",
            ],
            "{ plugin = \"wrong_shape\" }",
            |_| fixtures().panicky.clone(),
        ),
        plugin_case(
            "plugin: projection-shaped loss",
            1,
            &[
                "objective `wrong_shape`",
                "returned a loss of shape (128, 8)",
            ],
            "{ plugin = \"wrong_shape\", shape = \"projection\" }",
            |_| fixtures().panicky.clone(),
        ),
        plugin_case(
            "plugin: bad parameter type",
            2,
            &["stage `ssl`", "`finite_steps`"],
            "{ plugin = \"nan_loss\", finite_steps = \"many\" }",
            |_| fixtures().panicky.clone(),
        ),
        plugin_case(
            "plugin: negative integer parameter",
            2,
            &["stage `ssl`", "`finite_steps`", "must not be negative"],
            "{ plugin = \"nan_loss\", finite_steps = -3 }",
            |_| fixtures().panicky.clone(),
        ),
        plugin_case(
            "plugin: unknown objective in a loaded library",
            2,
            &["no plugin provides objective `nope`"],
            "{ plugin = \"nope\" }",
            |_| fixtures().panicky.clone(),
        ),
    ];
    // Parquet files that made the parquet crate panic inside pretext before the reader was
    // guarded (mutants found by `minifuzz_parquet_ingest_never_panics`).
    for seed in [
        0xcfe8_3aa4_cd7e_f2e5u64,
        0xbca7_5b99_688f_74da,
        0x4d9c_34f2_458e_3d1f,
        0x7927_92d6_6eca_bcc0,
    ] {
        cases.push(case(&format!("parquet: fuzz mutant {seed:#x}"), 2, &["<dir>/data.parquet"], move |dir| {
            let bytes = mutate(&mut Rng(seed), &fixture_data("tabular_pandas.parquet"), PARQUET_TOKENS, 512);
            let path = file_in(dir, "data.parquet", &bytes);
            ingest_only(dir, &format!("{{ format = \"parquet\", path = {}, features = [\"a\", \"b\", \"c\"], label = \"kind\" }}", toml_path(&path)))
        }));
    }
    cases
}

#[test]
fn malformed_inputs_fail_with_their_exit_code_and_message() {
    let mut cases = data_and_plugin_cases();
    let extra = cases.len();
    // Every broken golden pipeline, through `run` (which validates before anything runs).
    let golden = workspace().join("tests/golden/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&golden)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for file in files {
        let expected = std::fs::read_to_string(file.with_extension("expected")).unwrap();
        let first = expected.lines().next().unwrap_or_default().to_string();
        let name = format!("golden: {}", file.file_name().unwrap().to_string_lossy());
        let shown = file.display().to_string();
        let needle = first.replace("<file>", &shown);
        cases.push(Case {
            name,
            setup: Box::new(move |_| file.clone()),
            code: 2,
            needles: vec![needle],
        });
    }
    assert!(cases.len() >= 50, "{} cases", cases.len());
    assert!(extra >= 30, "{extra} data and plugin cases");

    let mut failures = Vec::new();
    for c in &cases {
        let dir = tempdir();
        let p = (c.setup)(dir.path());
        let run = pretext(dir.path(), &["run", &p.display().to_string()]);
        let mut problems = Vec::new();
        if run.code != c.code {
            problems.push(format!("exit code {} (expected {})", run.code, c.code));
        }
        for n in &c.needles {
            let n = n.replace("<dir>", &dir.path().display().to_string());
            if !run.stderr.contains(&n) {
                problems.push(format!("stderr lacks {n:?}"));
            }
        }
        if run.stderr.contains("internal error") {
            problems.push("internal error".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n{}",
                c.name,
                problems.join("; "),
                run.describe()
            ));
        }
        // A failed run commits nothing past the failure and leaves no debris.
        assert_eq!(
            pending(&store(dir.path())),
            Vec::<String>::new(),
            "{}",
            c.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed inputs misbehaved:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
