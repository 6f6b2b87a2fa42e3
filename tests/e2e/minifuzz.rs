//! Bounded, deterministic mutation fuzzing on stable Rust (the cargo-fuzz targets under
//! `fuzz/` need nightly flags; these run the same parsers in CI). Each target mutates real seed
//! inputs — the golden and example pipelines, the embedded MNIST IDX headers, the parquet
//! fixtures, plugin parameter tables — with a seeded RNG (byte flips, random bytes, insertions,
//! deletions, truncations, duplicated chunks, interesting tokens) and asserts that no input
//! makes the parser panic: each call runs under `catch_unwind`, and any escaping panic fails
//! the test with the target, seed file and mutation seed needed to reproduce it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use pretext::data::image::ImageOptions;
use pretext::data::parquet_source::{FeatureColumns, ParquetSource, ParquetSpec};
use pretext::data::source::Source;
use pretext::data::{memory, Split};

use crate::support::{entries, mnist, pretext, store, tempdir, toml_path, workspace};

/// Mutated inputs per target.
const MUTATIONS: usize = 2000;

/// SplitMix64: small, seeded, good enough to drive mutations.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One to four random edits of `input`. `tokens` are spliced in whole (format keywords,
/// delimiters, extreme numbers); `tail_bias` aims half of the edits at the last bytes (where
/// parquet keeps its footer).
pub(crate) fn mutate(rng: &mut Rng, input: &[u8], tokens: &[&[u8]], tail_bias: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        let at = if tail_bias > 0 && len > 0 && rng.below(2) == 0 {
            len - 1 - rng.below(tail_bias.min(len))
        } else {
            rng.below(len + 1)
        };
        match rng.below(8) {
            0 if at < len => v[at] ^= 1 << rng.below(8),
            1 if at < len => v[at] = rng.next() as u8,
            2 if at < len => v[at] = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, b'"', b'\n']),
            3 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
            4 if at < len => {
                let end = (at + 1 + rng.below(32)).min(len);
                v.drain(at..end);
            }
            5 => v.truncate(at),
            6 if at < len => {
                let end = (at + 1 + rng.below(64)).min(len);
                let chunk = v[at..end].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, chunk);
            }
            _ if !tokens.is_empty() => {
                let tok = rng.pick(tokens).to_vec();
                if at < len && rng.below(2) == 0 {
                    let end = (at + tok.len()).min(len);
                    v.splice(at..end, tok);
                } else {
                    v.splice(at..at, tok);
                }
            }
            _ => {}
        }
    }
    v
}

/// Runs `f` on `MUTATIONS` mutants of the seeds (round-robin), collecting escaped panics.
fn fuzz(
    target: &str,
    seed: u64,
    seeds: &[(String, Vec<u8>)],
    tokens: &[&[u8]],
    tail_bias: usize,
    mut f: impl FnMut(&[u8]),
) {
    assert!(!seeds.is_empty(), "{target}: no seed inputs");
    let mut failures = Vec::new();
    // The unmutated seeds first: they must not panic either.
    for (name, bytes) in seeds {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(bytes))) {
            failures.push(format!("{target}: seed {name} unmutated: {}", message(&p)));
        }
    }
    let mut rng = Rng(seed);
    for i in 0..MUTATIONS {
        let (name, bytes) = &seeds[i % seeds.len()];
        let mutation_seed = rng.next();
        let mutant = mutate(&mut Rng(mutation_seed), bytes, tokens, tail_bias);
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&mutant))) {
            failures.push(format!(
                "{target}: seed {name}, mutation {i} (Rng({mutation_seed:#x})): {}",
                message(&p)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} input(s) made {target} panic:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

fn files_in(dir: &Path, ext: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.display().to_string(), bytes)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn minifuzz_pipeline_loader_never_panics() {
    let ws = workspace();
    let mut seeds = files_in(&ws.join("tests/golden/broken"), "toml");
    seeds.extend(files_in(&ws.join("tests/golden/valid"), "toml"));
    seeds.extend(files_in(&ws.join("pipelines"), "toml"));
    let tokens: &[&[u8]] = &[
        b"\"",
        b"'''",
        b"[",
        b"]]",
        b"{",
        b"}",
        b" = ",
        b"\n[stages.x]\n",
        b"kind = \"pretrain\"",
        b"input = \"ssl\"",
        b"inf",
        b"-nan",
        b"-1",
        b"0",
        b"1e999",
        b"18446744073709551616",
        b"-9223372036854775808",
        b"1979-05-27T07:32:00Z",
        b"\"../../..\"",
        b"\"/\"",
        b"\\u0000",
        b"[]",
        b"{}",
        b"true",
    ];
    let file = Path::new("/nonexistent-minifuzz/pipeline.toml");
    let overrides = [
        String::from("stages.ssl.epochs=2"),
        String::from("pipeline.seed=-1"),
        String::from("stages.\"a.b\".x=[1, {y = 2}]"),
        String::from("stages.ssl.objective.temperature=inf"),
    ];
    let mut n = 0usize;
    fuzz(
        "pipeline::parse_str",
        0x5eed_0001,
        &seeds,
        tokens,
        0,
        |bytes| {
            let text = String::from_utf8_lossy(bytes);
            let _ = pretext::pipeline::parse_str(&text, file, &[]);
            n += 1;
            let o = &overrides[n % overrides.len()];
            let _ = pretext::pipeline::parse_str(&text, file, std::slice::from_ref(o));
        },
    );
}

/// Real IDX headers: the embedded MNIST images (16-byte header + 3 images) and labels.
fn idx_seeds() -> Vec<(String, Vec<u8>)> {
    let (images, labels) = mnist();
    let mut img = pretext::data::idx::read_maybe_gzip(&images).unwrap();
    let mut lab = pretext::data::idx::read_maybe_gzip(&labels).unwrap();
    // Keep 3 records, with headers that say so.
    img.truncate(16 + 3 * 784);
    img[4..8].copy_from_slice(&3u32.to_be_bytes());
    lab.truncate(8 + 3);
    lab[4..8].copy_from_slice(&3u32.to_be_bytes());
    vec![("images".into(), img), ("labels".into(), lab)]
}

#[test]
fn minifuzz_idx_reader_never_panics() {
    let seeds = idx_seeds();
    let tokens: &[&[u8]] = &[
        &[0, 0, 8, 3],
        &[0, 0, 8, 1],
        &[0, 0, 8, 4],
        &[0, 0, 8, 0],
        &[0, 0, 0x0d, 3],
        &[0xff, 0xff, 0xff, 0xff],
        &[0, 0, 0, 0],
        &[0x80, 0, 0, 0],
        &[0, 0, 0, 28],
    ];
    let dir = tempdir();
    let (img_path, lab_path) = (dir.path().join("images"), dir.path().join("labels"));
    std::fs::write(&img_path, &seeds[0].1).unwrap();
    std::fs::write(&lab_path, &seeds[1].1).unwrap();
    let mut n = 0usize;
    fuzz("data::idx", 0x5eed_0002, &seeds, tokens, 0, |bytes| {
        let _ = pretext::data::idx::parse(bytes, Path::new("fuzz.idx"));
        // Every 8th input also goes through the streaming source (images or labels file
        // replaced by the mutant, the other one intact).
        n += 1;
        if n.is_multiple_of(8) {
            let (target, other, good) = if bytes.len() > 64 {
                (&img_path, &lab_path, &seeds[1].1)
            } else {
                (&lab_path, &img_path, &seeds[0].1)
            };
            std::fs::write(target, bytes).unwrap();
            std::fs::write(other, good).unwrap();
            let opened =
                pretext::data::idx::IdxSource::open(&img_path, &lab_path, ImageOptions::default());
            if let Ok(mut src) = opened {
                drain(&mut src);
            }
        }
    });
}

/// Reads every record of a source, bounded (a corrupt length must not loop forever).
fn drain(src: &mut dyn Source) {
    let _ = src.len();
    let _ = src.columns();
    for _ in 0..1000 {
        match src.next_batch(64) {
            Ok(batch) if !batch.is_empty() => {}
            _ => break,
        }
    }
}

/// The column selections the parquet fixtures are read with (as in `data.rs`), plus a raw
/// image column.
fn parquet_specs() -> Vec<ParquetSpec> {
    vec![
        ParquetSpec {
            features: Some(FeatureColumns::List("embedding".into())),
            label: Some("label".into()),
            meta: vec!["site".into()],
            ..ParquetSpec::default()
        },
        ParquetSpec {
            image: Some("image_struct".into()),
            label: Some("species".into()),
            meta: vec!["camera".into()],
            ..ParquetSpec::default()
        },
        ParquetSpec {
            image: Some("image".into()),
            label: Some("species".into()),
            ..ParquetSpec::default()
        },
        ParquetSpec {
            features: Some(FeatureColumns::Columns(vec![
                "a".into(),
                "b".into(),
                "c".into(),
            ])),
            label: Some("kind".into()),
            ..ParquetSpec::default()
        },
    ]
}

#[test]
fn minifuzz_parquet_ingest_never_panics() {
    let ws = workspace();
    let mut seeds = files_in(&ws.join("tests/fixtures/data"), "parquet");
    // A dataset as pretext itself writes it (what later stages read back from the store).
    let ingest_dir = tempdir();
    seeds.extend(ingested_parquet(ingest_dir.path()));
    let tokens = PARQUET_TOKENS;
    let dir = tempdir();
    let path = dir.path().join("fuzz.parquet");
    let specs = parquet_specs();
    let mut n = 0usize;
    fuzz(
        "parquet ingest",
        0x5eed_0003,
        &seeds,
        tokens,
        512,
        |bytes| {
            std::fs::write(&path, bytes).unwrap();
            n += 1;
            // Two specs per input, rotating, keeps the test short.
            for k in 0..2 {
                let spec = specs[(n + k) % specs.len()].clone();
                if let Ok(mut src) = ParquetSource::open(&path, spec, ImageOptions::default()) {
                    drain(&mut src);
                }
            }
            let _ = pretext::data::table::read_records(&path);
            // The streaming readers of a dataset over the memory budget (pretrain's block
            // shuffle of row groups, augment's preview rows).
            let _ = memory::first_rows(&path, Split::Train, 8);
            if let Ok(s) = memory::Streamed::open(&path, 1 << 20) {
                let mut epoch = s.epoch(Split::Train, n as u64, 0);
                for _ in 0..1000 {
                    match epoch.next_batch(64) {
                        Ok(batch) if !batch.is_empty() => {}
                        _ => break,
                    }
                }
                let _ = s.rows(&[0, 1, 4096]);
            }
        },
    );
}

/// Tokens spliced into parquet mutants.
pub(crate) const PARQUET_TOKENS: &[&[u8]] = &[
    b"PAR1",
    &[0xff, 0xff, 0xff, 0x7f],
    &[0, 0, 0, 0],
    &[0x80, 0x80, 0x80, 0x80, 0x01],
    &[0x19, 0x1c],
    &[0x15, 0x00],
];

/// The parquet files of an ingest entry (20 MNIST samples), written by the binary.
fn ingested_parquet(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let (images, labels) = mnist();
    let text = format!(
        "[pipeline]\nname = \"seed\"\n\n[stages.data]\nkind = \"ingest\"\n\
         source = {{ format = \"idx\", images = {}, labels = {} }}\nlimit = 20\n",
        toml_path(&images),
        toml_path(&labels)
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    pretext(dir, &["run", &p.display().to_string()]).expect_code(0);
    let entry = entries(&store(dir), "ingest");
    assert_eq!(entry.len(), 1);
    let found = files_in(&entry[0], "parquet");
    assert!(
        !found.is_empty(),
        "no parquet file in {}",
        entry[0].display()
    );
    found
}

/// A random JSON value: scalars at the edges of their ranges, strings with odd characters,
/// lists (of numbers or mixed), nested tables.
fn random_json(rng: &mut Rng, depth: usize) -> serde_json::Value {
    use serde_json::{json, Value};
    match rng.below(if depth > 2 { 6 } else { 9 }) {
        0 => Value::Bool(rng.below(2) == 0),
        1 => json!(rng.next() as i64),
        2 => json!(rng.next()),
        3 => json!(*rng.pick(&[
            0.0,
            -0.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            1e-320,
            0.5,
            -1.0
        ])),
        4 => Value::String(
            rng.pick(&["", "simclr", "\0", "é✓", "a\"b", "projection"])
                .to_string(),
        ),
        5 => Value::Null,
        6 => Value::Array(
            (0..rng.below(6))
                .map(|_| json!(rng.next() as f64 / 3.0))
                .collect(),
        ),
        7 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.below(4))
                .map(|i| (format!("k{i}"), random_json(rng, depth + 1)))
                .collect(),
        ),
    }
}

#[test]
fn minifuzz_plugin_parameters_never_panic() {
    // Structured: random parameter tables straight into the conversion.
    let mut rng = Rng(0x5eed_0004);
    let mut failures = Vec::new();
    for i in 0..MUTATIONS {
        let map: serde_json::Map<String, serde_json::Value> = (0..rng.below(6))
            .map(|k| {
                let key = match rng.below(4) {
                    0 => String::new(),
                    1 => format!("k\0{k}"),
                    _ => format!("p{k}"),
                };
                (key, random_json(&mut rng, 0))
            })
            .collect();
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _ = pretext::plugins::host::RawParams::from_json(&map);
        }));
        if let Err(p) = r {
            failures.push(format!("table {i}: {map:?}: {}", message(&p)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Textual: mutated parameter tables as a pipeline would spell them.
    let seeds = vec![(
        "params".to_string(),
        br#"{"temperature": 0.5, "name": "x", "flag": true, "scale": [0.4, 1.0], "n": 3}"#.to_vec(),
    )];
    let tokens: &[&[u8]] = &[
        b"18446744073709551616",
        b"-9223372036854775809",
        b"1e308",
        b"[[]]",
        b"{\"a\": {}}",
        b"null",
        b"\"\\u0000\"",
    ];
    fuzz(
        "plugin parameters",
        0x5eed_0005,
        &seeds,
        tokens,
        0,
        |bytes| {
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(bytes) {
                let _ = pretext::plugins::host::RawParams::from_json(&map);
            }
        },
    );
}
