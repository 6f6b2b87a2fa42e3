//! `curate`: audits a dataset and writes a curated copy.
//!
//! Two streaming passes over the input's `dataset.parquet` (row group by row group):
//!
//! 1. Fingerprint every row: a content hash (exact copies), for images a 32×32 grayscale
//!    thumbnail and its perceptual hash (near copies) plus mean and spread (blank, dark,
//!    bright) and the size before resizing (tiny); for feature vectors the vector itself. Class
//!    and metadata counts are accumulated on the way. Memory: about 1 KiB per image (the
//!    thumbnail) or the vectors, never the images.
//! 2. Write the rows `drop` keeps, in input order, into `dataset.parquet`.
//!
//! Between the passes the findings are worked out: exact duplicates within a split (the lowest
//! id of each group is kept), near duplicates within a split (groups of near copies, lowest id
//! kept), leakage (a test sample whose exact or near copy is in train), the class histogram and
//! the metadata distributions (the bias audit). Everything goes into `audit.json` and the
//! metrics; `fail_if` bounds fail the stage (exit code 1) with the check, its bound and its
//! value, after writing the audit to the checkpoint folder so it can be read.
//!
//! One file per concern: `fingerprint` (pass 1), `duplicates` (exact copies and exact
//! leakage), `near` (near copies, their groups and near leakage), `classes`, `metadata`, and
//! `drops` (the drop rules, the metrics and the `fail_if` checks); `analyse` here runs them in
//! order and assembles the audit.

mod classes;
mod drops;
mod duplicates;
mod fingerprint;
mod metadata;
mod near;

use std::collections::BTreeSet;
use std::path::Path;

use super::{write_json, Metrics, Progress, StageCtx, StageError};
use crate::artifacts::audit::*;
use crate::artifacts::dataset::DATASET_FILE;
use crate::data::table::{DatasetReader, DatasetWriter};
use crate::data::{DatasetInfo, Records, Split};
use crate::pipeline::CurateConfig;
use classes::class_audit;
use drops::Drops;
use duplicates::{exact_copies, Duplicates, Exact, Leaks};
use fingerprint::{fingerprint, Fingerprints, QualityRows, Row};
use metadata::MetaTally;
use near::{near_copies, Near};

/// Feature datasets with more samples than this skip the (all-pairs) near-duplicate search.
pub const MAX_FEATURE_SEARCH: usize = 20_000;

/// The findings of one dataset, before anything is written.
pub struct Analysis {
    pub info: DatasetInfo,
    pub audit: Audit,
    pub metrics: Metrics,
    /// Row indices (input order) to leave out.
    pub drop: BTreeSet<usize>,
}

pub fn run(cfg: &CurateConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let input = ctx.input("input")?.dir.join(DATASET_FILE);
    let analysis = analyse(&input, cfg, ctx.progress)?;
    let failed: Vec<&Check> = analysis.audit.checks.iter().filter(|c| c.failed).collect();
    if !failed.is_empty() {
        let kept = match ctx.checkpoint_dir {
            Some(dir) => match write_json(&dir.join(AUDIT_FILE), &analysis.audit) {
                Ok(()) => format!("; the audit is in {}", dir.join(AUDIT_FILE).display()),
                Err(_) => String::new(),
            },
            None => String::new(),
        };
        let lines: Vec<String> = failed
            .iter()
            .map(|c| {
                format!(
                    "`{}` = {} is above the bound {} (fail_if)",
                    c.metric,
                    fmt_value(c.value),
                    c.max
                )
            })
            .collect();
        return Err(StageError::Failed(format!(
            "curation check failed: {}{kept}",
            lines.join("; ")
        )));
    }
    write_json(&ctx.out_dir.join(AUDIT_FILE), &analysis.audit)?;
    // A text dataset keeps its tokenizer beside it.
    crate::artifacts::tokenizer::copy(&ctx.input("input")?.dir, ctx.out_dir)?;
    write_curated(
        &input,
        &ctx.out_dir.join(DATASET_FILE),
        &analysis,
        ctx.progress,
    )?;
    Ok(analysis.metrics)
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.4}")
    }
}

/// Everything found in a dataset, which the drop rules, the metrics and the audit read.
struct Findings {
    rows: Vec<Row>,
    quality: QualityRows,
    duplicates: Duplicates,
    near: Near,
    leaks: Leaks,
    classes: Option<ClassAudit>,
    metadata: std::collections::BTreeMap<String, MetaAudit>,
}

/// Pass 1 and the findings.
pub fn analyse(
    path: &Path,
    cfg: &CurateConfig,
    progress: &dyn Progress,
) -> Result<Analysis, StageError> {
    let mut reader = DatasetReader::open(path)?;
    let info = reader.info().clone();
    let tally = MetaTally::new(cfg, &info)?;
    let fp = fingerprint(&mut reader, cfg, tally, progress)?;
    let Exact {
        duplicates,
        units,
        mut leaks,
    } = exact_copies(&fp.rows);
    let near = near_copies(&fp, &units, &mut leaks, &info, &cfg.near_duplicates);
    leaks.sort();
    let Fingerprints {
        rows,
        quality,
        meta,
        ..
    } = fp;
    let findings = Findings {
        classes: class_audit(&rows, &info),
        metadata: meta.audit(&info, cfg.max_listed),
        rows,
        quality,
        duplicates,
        near,
        leaks,
    };
    let drops = drops::apply(&cfg.drop, &findings);
    let metrics = drops::metrics(&findings, &drops);
    let checks = drops::checks(&cfg.fail_if, &metrics)?;
    log_summary(&findings, &drops);
    let audit = assemble(cfg, &info, findings, &drops, checks);
    Ok(Analysis {
        info,
        audit,
        metrics,
        drop: drops.rows,
    })
}

fn log_summary(f: &Findings, drops: &Drops) {
    tracing::info!(
        samples = f.rows.len(),
        duplicates = f.duplicates.rows.len(),
        near_duplicate_pairs = f.near.pairs.len(),
        blank = f.quality.blank.len(),
        dark = f.quality.dark.len(),
        bright = f.quality.bright.len(),
        tiny = f.quality.tiny.len(),
        leakage = f.leaks.test.len(),
        dropped = drops.rows.len(),
        "audit"
    );
}

/// The `audit.json` of the findings, listing at most `max_listed` entries per finding.
fn assemble(
    cfg: &CurateConfig,
    info: &DatasetInfo,
    f: Findings,
    drops: &Drops,
    checks: Vec<Check>,
) -> Audit {
    let max = cfg.max_listed;
    let n = f.rows.len();
    let train = f.rows.iter().filter(|r| r.split == Split::Train).count();
    let rows = &f.rows;
    let list = |v: &[usize]| listed_rows(rows, v, max);
    let nd = &cfg.near_duplicates;
    Audit {
        samples: n,
        train,
        test: n - train,
        layout: info.layout,
        duplicates: listed_all(f.duplicates.pairs, max),
        near_duplicates: NearAudit {
            enabled: nd.enabled,
            method: if info.layout.is_image() {
                "perceptual hash + thumbnail cosine".into()
            } else {
                "cosine".into()
            },
            max_distance: nd.max_distance,
            min_cosine: nd.min_cosine,
            skipped: f.near.skipped,
            pairs: listed_all(f.near.pairs, max),
        },
        quality: QualityAudit {
            blank: list(&f.quality.blank),
            dark: list(&f.quality.dark),
            bright: list(&f.quality.bright),
            tiny: list(&f.quality.tiny),
        },
        leakage: LeakAudit {
            test_samples: f.leaks.test.len(),
            train_samples: f.leaks.train.len(),
            pairs: Listed::new(f.leaks.pairs, max, f.leaks.pair_count),
        },
        classes: f.classes,
        metadata: f.metadata,
        dropped: DropAudit {
            rules: cfg.drop.iter().map(|r| r.as_str().to_string()).collect(),
            by_rule: drops.by_rule.clone(),
            samples: list(&drops.rows.iter().copied().collect::<Vec<_>>()),
        },
        checks,
    }
}

/// Rows `v` by sample (id order), at most `max` listed.
fn listed_rows(rows: &[Row], v: &[usize], max: usize) -> Listed<SampleRef> {
    let mut refs: Vec<SampleRef> = v.iter().map(|&r| rows[r].sample_ref()).collect();
    refs.sort();
    let count = refs.len();
    Listed::new(refs, max, count)
}

/// At most `max` of `items`, counting them all.
fn listed_all<T>(items: Vec<T>, max: usize) -> Listed<T> {
    let count = items.len();
    Listed::new(items, max, count)
}

/// Pass 2: copies the rows `analysis` keeps from `input` to `out`, chunk by chunk.
pub fn write_curated(
    input: &Path,
    out: &Path,
    analysis: &Analysis,
    progress: &dyn Progress,
) -> Result<(), StageError> {
    let mut reader = DatasetReader::open(input)?;
    let mut writer = DatasetWriter::create(out, &analysis.info)?;
    progress.start("writing the curated dataset", reader.len() as u64);
    let mut base = 0;
    let (mut train, mut test) = (0, 0);
    while let Some(chunk) = reader.next_chunk()? {
        let keep: Vec<usize> = (0..chunk.len())
            .filter(|i| !analysis.drop.contains(&(base + i)))
            .collect();
        base += chunk.len();
        let kept: Records = chunk.select(&keep);
        for s in &kept.splits {
            match s {
                Split::Train => train += 1,
                Split::Test => test += 1,
            }
        }
        writer.write(&kept)?;
        progress.advance(chunk.len() as u64, "");
    }
    let rows = writer.finish()?;
    progress.finish(&format!("{rows} samples kept"));
    for (count, name) in [(train, "train"), (test, "test")] {
        if count == 0 {
            return Err(StageError::Failed(format!(
                "curation dropped every {name} sample; change `drop`"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::table::write_records;
    use crate::data::{Layout, Samples};
    use crate::pipeline::{DropRule, FailIf, NearDuplicates, Quality};

    pub(crate) use crate::progress::Silent as Quiet;

    /// The resolved defaults of a curate stage.
    pub(crate) fn defaults() -> CurateConfig {
        CurateConfig {
            near_duplicates: NearDuplicates {
                enabled: true,
                max_distance: 8,
                min_cosine: 0.995,
            },
            quality: Quality {
                blank_std: 1.0,
                min_mean: 2.0,
                max_mean: 253.0,
                min_size: 16,
            },
            metadata: None,
            drop: vec![DropRule::Duplicates, DropRule::LeakedTrain],
            fail_if: Vec::new(),
            max_listed: 1000,
        }
    }

    fn ids(v: &Listed<SampleRef>) -> Vec<u64> {
        v.listed.iter().map(|s| s.id).collect()
    }

    /// The first 2000 embedded MNIST test images (1600 train, 400 test) plus known injections,
    /// written in several row groups as ingest writes them.
    struct InjectedMnist {
        _dir: tempfile::TempDir,
        input: std::path::PathBuf,
        records: Records,
    }

    fn injected_mnist() -> InjectedMnist {
        let records = mnist_with_injections();
        let info = DatasetInfo::plain(records.samples.layout(), true);
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.parquet");
        let mut w = DatasetWriter::create(&input, &info).unwrap();
        for part in (0..records.ids.len()).collect::<Vec<_>>().chunks(700) {
            w.write(&records.select(part)).unwrap();
        }
        w.finish().unwrap();
        InjectedMnist {
            _dir: dir,
            input,
            records,
        }
    }

    /// `pixels` brightened by `bright`, with noise in -8..8 from `seed`.
    fn noisy(pixels: &[u8], seed: u64, bright: u8) -> Vec<u8> {
        let mut x = seed;
        pixels
            .iter()
            .map(|&p| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let e = ((x >> 60) as i32) - 8;
                (p.saturating_add(bright) as i32 + e).clamp(0, 255) as u8
            })
            .collect()
    }

    /// The injections: exact copies within a split, blank images, test samples copied
    /// (exactly and with noise) into train, and a near copy (brightness and noise) within
    /// train.
    fn mnist_with_injections() -> Records {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/mnist");
        let img = crate::data::idx::read(&dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
        let lab = crate::data::idx::read(&dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
        let n = 2000;
        let k = 784;
        let mut pixels = img.data[..n * k].to_vec();
        let mut labels: Vec<u32> = lab.data[..n].iter().map(|&l| l as u32).collect();
        let mut splits: Vec<Split> = (0..n)
            .map(|i| if i < 1600 { Split::Train } else { Split::Test })
            .collect();
        let mut add = |p: Vec<u8>, label: u32, split: Split| {
            pixels.extend(p);
            labels.push(label);
            splits.push(split);
        };
        let orig = |i: usize| img.data[i * k..(i + 1) * k].to_vec();
        let lbl = |i: usize| lab.data[i] as u32;
        // 2000-2003: exact copies within a split (three in train, one in test).
        for i in [10, 20, 30] {
            add(orig(i), lbl(i), Split::Train);
        }
        add(orig(1700), lbl(1700), Split::Test);
        // 2004-2006: blank images (distinct values, so not copies of each other).
        for v in [0u8, 128, 255] {
            add(vec![v; k], 0, Split::Train);
        }
        // 2007-2008: test samples copied into train; 2009: a near copy of train sample 40;
        // 2010: a near copy of test sample 1950 in train.
        add(orig(1800), lbl(1800), Split::Train);
        add(orig(1900), lbl(1900), Split::Train);
        add(noisy(&orig(40), 1, 12), lbl(40), Split::Train);
        add(noisy(&orig(1950), 2, 0), lbl(1950), Split::Train);
        let total = labels.len();
        Records {
            ids: (0..total as u64).collect(),
            splits,
            labels: Some(labels),
            samples: Samples::U8 {
                shape: (1, 28, 28),
                data: pixels,
            },
            paths: None,
            source_sizes: None,
            meta: Vec::new(),
        }
    }

    /// The audit lists exactly the injections.
    fn assert_lists_the_injections(audit: &Audit) {
        let pairs: Vec<(u64, u64)> = audit
            .duplicates
            .listed
            .iter()
            .map(|p| (p.keep.id, p.copy.id))
            .collect();
        assert_eq!(pairs, [(10, 2000), (20, 2001), (30, 2002), (1700, 2003)]);
        assert_eq!(ids(&audit.quality.blank), [2004, 2005, 2006]);
        assert_eq!(audit.quality.dark.count + audit.quality.bright.count, 0);
        assert_eq!(audit.quality.tiny.count, 0);
        let near: Vec<(u64, u64)> = audit
            .near_duplicates
            .pairs
            .listed
            .iter()
            .map(|p| (p.a.id, p.b.id))
            .collect();
        assert_eq!(near, [(40, 2009)]);
        let leaks: Vec<(u64, u64, bool)> = audit
            .leakage
            .pairs
            .listed
            .iter()
            .map(|p| (p.train.id, p.test.id, p.exact))
            .collect();
        assert_eq!(
            leaks,
            [(2007, 1800, true), (2008, 1900, true), (2010, 1950, false)]
        );
    }

    /// The metrics count exactly the injections.
    fn assert_counts_the_injections(m: &Metrics, total: usize) {
        assert_eq!(m["samples"], total as f64);
        assert_eq!(m["duplicates"], 4.0);
        assert_eq!(m["duplicate_fraction"], 4.0 / total as f64);
        assert_eq!(m["near_duplicate_pairs"], 1.0);
        assert_eq!(m["blank"], 3.0);
        assert_eq!((m["dark"], m["bright"], m["tiny"]), (0.0, 0.0, 0.0));
        assert_eq!((m["leakage"], m["leaked_pairs"]), (3.0, 3.0));
        assert_eq!(m["classes"], 10.0);
    }

    /// The audit must find exactly the injections, the default drops and the `fail_if` checks
    /// must follow from them, and the curated dataset must lose exactly the dropped rows.
    #[test]
    fn finds_exactly_what_was_injected_into_mnist() {
        let mnist = injected_mnist();
        let total = mnist.records.ids.len();
        let mut cfg = defaults();
        cfg.fail_if = vec![
            FailIf {
                metric: "duplicate_fraction".into(),
                max: 0.05,
            },
            FailIf {
                metric: "leakage".into(),
                max: 0.0,
            },
        ];
        let a = analyse(&mnist.input, &cfg, &Quiet).unwrap();
        let audit = &a.audit;
        assert_lists_the_injections(audit);
        let m = &a.metrics;
        assert_counts_the_injections(m, total);
        // Default drops: the within-split copies and the leaked train copies.
        let dropped: Vec<u64> = a.drop.iter().map(|&r| r as u64).collect();
        assert_eq!(dropped, [2000, 2001, 2002, 2003, 2007, 2008, 2010]);
        assert_eq!((m["dropped"], m["kept"]), (7.0, (total - 7) as f64));
        assert_eq!(audit.dropped.by_rule["duplicates"], 4);
        assert_eq!(audit.dropped.by_rule["leaked_train"], 3);
        // fail_if: the duplicate fraction is below 5%, the leakage above 0.
        assert_eq!(
            audit
                .checks
                .iter()
                .map(|c| (c.metric.as_str(), c.value, c.failed))
                .collect::<Vec<_>>(),
            [
                ("duplicate_fraction", 4.0 / total as f64, false),
                ("leakage", 3.0, true)
            ]
        );

        // The curated copy keeps every other row, in order, with its columns.
        let out = mnist._dir.path().join("out.parquet");
        write_curated(&mnist.input, &out, &a, &Quiet).unwrap();
        let (_, kept) = crate::data::table::read_records(&out).unwrap();
        let want: Vec<usize> = (0..total).filter(|r| !a.drop.contains(r)).collect();
        assert_eq!(kept, mnist.records.select(&want));
    }

    /// Dropping everything found in the injected MNIST, blanks and near copies included.
    #[test]
    fn drops_everything_injected_into_mnist_when_asked() {
        let mnist = injected_mnist();
        let mut all = defaults();
        all.drop = vec![
            DropRule::Duplicates,
            DropRule::NearDuplicates,
            DropRule::Blank,
            DropRule::LeakedTest,
        ];
        let b = analyse(&mnist.input, &all, &Quiet).unwrap();
        let dropped: Vec<u64> = b.drop.iter().map(|&r| r as u64).collect();
        assert_eq!(
            dropped,
            [1800, 1900, 1950, 2000, 2001, 2002, 2003, 2004, 2005, 2006, 2009]
        );
    }

    fn feature_dataset(dir: &Path) -> std::path::PathBuf {
        // 0-5 distinct directions; 6 = copy of 1 (train); 7 = 0 scaled (near, cosine 1);
        // 8 = constant (blank); 9 (test) = copy of 2 (train): leakage.
        let vectors: Vec<[f32; 3]> = vec![
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [1.0, 1.0, 0.0],
            [1.0, -1.0, 0.5],
            [-1.0, 0.0, 2.0],
            [0.0, 1.0, 0.0],
            [2.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        let splits = (0..10)
            .map(|i| {
                if i >= 9 || i == 5 {
                    Split::Test
                } else {
                    Split::Train
                }
            })
            .collect();
        let info = DatasetInfo {
            layout: Layout::Features { dim: 3 },
            labelled: true,
            classes: Some(vec!["a".into(), "b".into(), "unused".into()]),
            paths: false,
            source_sizes: false,
            meta: vec!["site".into()],
        };
        let records = Records {
            ids: (0..10).collect(),
            splits,
            labels: Some(vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 0]),
            samples: Samples::F32 {
                dim: 3,
                data: vectors.concat(),
            },
            paths: None,
            source_sizes: None,
            meta: vec![(0..10)
                .map(|i| if i < 7 { "n" } else { "s" }.to_string())
                .collect()],
        };
        let p = dir.join("f.parquet");
        write_records(&p, &info, &records).unwrap();
        p
    }

    #[test]
    fn feature_vectors_class_balance_and_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let p = feature_dataset(tmp.path());
        let a = analyse(&p, &defaults(), &Quiet).unwrap();
        let m = &a.metrics;
        assert_eq!(m["duplicates"], 1.0);
        assert_eq!(m["near_duplicate_pairs"], 1.0);
        assert_eq!(a.audit.near_duplicates.pairs.listed[0].a.id, 0);
        assert_eq!(a.audit.near_duplicates.pairs.listed[0].b.id, 7);
        assert_eq!(a.audit.near_duplicates.method, "cosine");
        assert_eq!(m["blank"], 1.0);
        assert_eq!(m["leakage"], 1.0);
        assert_eq!(m["class_imbalance"], 4.0);
        let classes = a.audit.classes.as_ref().unwrap();
        assert_eq!(classes.empty, ["unused"]);
        assert_eq!(
            (classes.counts[0].name.as_deref(), classes.counts[0].total),
            (Some("a"), 8)
        );
        let site = &a.audit.metadata["site"];
        assert_eq!(site.distinct, 2);
        assert_eq!(
            (
                site.values[0].value.as_str(),
                site.values[0].total,
                site.values[0].train
            ),
            ("n", 7, 6)
        );
        assert_eq!(site.values[1].by_class["b"], 2);

        let mut cfg = defaults();
        cfg.metadata = Some(vec!["sit".into()]);
        let e = analyse(&p, &cfg, &Quiet).err().unwrap().to_string();
        assert!(
            e.contains("`sit`") && e.contains("did you mean `site`?"),
            "{e}"
        );
        let mut cfg = defaults();
        cfg.max_listed = 0;
        cfg.near_duplicates.enabled = false;
        let a = analyse(&p, &cfg, &Quiet).unwrap();
        assert_eq!(a.metrics["near_duplicate_pairs"], 0.0);
        assert!(a.audit.duplicates.truncated && a.audit.duplicates.listed.is_empty());
        assert_eq!(a.audit.duplicates.count, 1);
    }

    #[test]
    fn unlabelled_data_cannot_bound_class_imbalance() {
        let tmp = tempfile::tempdir().unwrap();
        let info = DatasetInfo::plain(Layout::Features { dim: 1 }, false);
        let records = Records {
            ids: vec![0, 1],
            splits: vec![Split::Train, Split::Test],
            labels: None,
            samples: Samples::F32 {
                dim: 1,
                data: vec![1.0, 2.0],
            },
            paths: None,
            source_sizes: None,
            meta: Vec::new(),
        };
        let p = tmp.path().join("u.parquet");
        write_records(&p, &info, &records).unwrap();
        let mut cfg = defaults();
        cfg.fail_if = vec![FailIf {
            metric: "class_imbalance".into(),
            max: 3.0,
        }];
        let e = analyse(&p, &cfg, &Quiet).err().unwrap();
        assert!(
            matches!(e, StageError::Input(ref m) if m.contains("needs a labelled dataset")),
            "{e}"
        );
        cfg.fail_if.clear();
        let a = analyse(&p, &cfg, &Quiet).unwrap();
        assert!(a.audit.classes.is_none() && !a.metrics.contains_key("class_imbalance"));
        // Every check named in `fail_if` exists for labelled data.
        let p = feature_dataset(tmp.path());
        let a = analyse(&p, &defaults(), &Quiet).unwrap();
        for metric in CurateConfig::CHECKS {
            assert!(a.metrics.contains_key(metric), "{metric}");
        }
    }

    #[test]
    fn dropping_a_whole_split_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let p = feature_dataset(tmp.path());
        let mut cfg = defaults();
        cfg.drop = vec![DropRule::LeakedTest];
        let mut a = analyse(&p, &cfg, &Quiet).unwrap();
        a.drop.extend([5, 9]);
        let e = write_curated(&p, &tmp.path().join("o.parquet"), &a, &Quiet)
            .err()
            .unwrap();
        assert!(e.to_string().contains("dropped every test sample"), "{e}");
    }
}
