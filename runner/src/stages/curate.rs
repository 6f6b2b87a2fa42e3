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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use super::{write_json, Metrics, Progress, StageCtx, StageError};
use crate::artifacts::audit::*;
use crate::artifacts::dataset::DATASET_FILE;
use crate::data::hash::{self, Centred, ContentHash, THUMB_LEN};
use crate::data::table::{DatasetReader, DatasetWriter};
use crate::data::{DatasetInfo, Layout, Records, Samples, Split};
use crate::pipeline::{CurateConfig, DropRule};

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
    super::ingest_text::copy_tokenizer(&ctx.input("input")?.dir, ctx.out_dir)?;
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

/// Union-find over `n` items.
struct Sets(Vec<usize>);

impl Sets {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

/// What pass 1 keeps of each row.
struct Row {
    id: u64,
    split: Split,
    label: Option<u32>,
    hash: ContentHash,
    path: Option<String>,
}

#[derive(Default, Clone)]
struct MetaCounts {
    total: usize,
    train: usize,
    test: usize,
    by_label: BTreeMap<u32, usize>,
}

/// Pass 1 and the findings.
pub fn analyse(
    path: &Path,
    cfg: &CurateConfig,
    progress: &dyn Progress,
) -> Result<Analysis, StageError> {
    let mut reader = DatasetReader::open(path)?;
    let info = reader.info().clone();
    let meta_names: Vec<String> = match &cfg.metadata {
        // A text dataset's `text` column is the passage itself: one value per row, nothing
        // to audit as a distribution unless asked for by name.
        None if matches!(info.layout, Layout::Tokens { .. }) => {
            info.meta.iter().filter(|m| *m != "text").cloned().collect()
        }
        None => info.meta.clone(),
        Some(names) => {
            for n in names {
                if !info.meta.contains(n) {
                    let help = crate::pipeline::closest_name(n, info.meta.iter().map(String::as_str))
                        .map(|c| format!("did you mean `{c}`?"))
                        .unwrap_or_else(|| {
                            if info.meta.is_empty() {
                                "the dataset has no metadata columns (image folders have `folder`; parquet and CSV sources carry the columns in their `meta`)".into()
                            } else {
                                format!(
                                    "its metadata columns are: {}",
                                    info.meta.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
                                )
                            }
                        });
                    return Err(StageError::Input(format!(
                        "`metadata` names column `{n}`, which the input dataset does not have; {help}"
                    )));
                }
            }
            names.clone()
        }
    };
    let meta_index: Vec<usize> = meta_names
        .iter()
        .map(|n| info.meta.iter().position(|m| m == n).unwrap_or(0))
        .collect();
    let is_image = info.layout.is_image();
    let near_on = cfg.near_duplicates.enabled;
    let q = &cfg.quality;

    let mut rows: Vec<Row> = Vec::with_capacity(reader.len());
    let mut phashes: Vec<u64> = Vec::new();
    let mut thumbs: Vec<u8> = Vec::new();
    let mut centred: Vec<Centred> = Vec::new();
    let mut vectors: Vec<f32> = Vec::new();
    let (mut blank, mut dark, mut bright, mut tiny) = (vec![], vec![], vec![], vec![]);
    let mut meta: Vec<BTreeMap<String, MetaCounts>> = vec![BTreeMap::new(); meta_names.len()];
    progress.start("auditing", reader.len() as u64);
    while let Some(chunk) = reader.next_chunk()? {
        for i in 0..chunk.len() {
            let r = rows.len();
            let bytes = chunk.samples.row_bytes(i);
            let row = Row {
                id: chunk.ids[i],
                split: chunk.splits[i],
                label: chunk.labels.as_ref().map(|l| l[i]),
                hash: hash::content_hash(&bytes),
                path: chunk.paths.as_ref().map(|p| p[i].clone()),
            };
            match &chunk.samples {
                Samples::U8 { shape, .. } => {
                    let n = bytes.len().max(1) as f64;
                    let mean = bytes.iter().map(|&x| x as f64).sum::<f64>() / n;
                    let var = bytes
                        .iter()
                        .map(|&x| (x as f64 - mean).powi(2))
                        .sum::<f64>()
                        / n;
                    if var.sqrt() <= q.blank_std {
                        blank.push(r);
                    } else if mean < q.min_mean {
                        dark.push(r);
                    } else if mean > q.max_mean {
                        bright.push(r);
                    }
                    if near_on {
                        let t =
                            hash::thumbnail(*shape, &bytes).unwrap_or_else(|| vec![0; THUMB_LEN]);
                        phashes.push(hash::phash_thumbnail(&t));
                        centred.push(hash::centred(&t));
                        thumbs.extend_from_slice(&t);
                    }
                }
                Samples::Tokens { len, data, .. } => {
                    // An empty passage: nothing but [CLS] and padding.
                    if data[i * len..(i + 1) * len].iter().skip(1).all(|&t| t == 0) {
                        blank.push(r);
                    }
                }
                Samples::F32 { dim, data } => {
                    let v = &data[i * dim..(i + 1) * dim];
                    if v.iter().all(|&x| x == v[0]) {
                        blank.push(r);
                    }
                    if near_on && reader.len() <= MAX_FEATURE_SEARCH {
                        vectors.extend_from_slice(v);
                    }
                }
            }
            if let Some(sizes) = &chunk.source_sizes {
                let (h, w) = sizes[i];
                if q.min_size > 0 && (h < q.min_size || w < q.min_size) {
                    tiny.push(r);
                }
            }
            for (m, &col) in meta.iter_mut().zip(&meta_index) {
                let c = m.entry(chunk.meta[col][i].clone()).or_default();
                c.total += 1;
                match row.split {
                    Split::Train => c.train += 1,
                    Split::Test => c.test += 1,
                }
                if let Some(l) = row.label {
                    *c.by_label.entry(l).or_default() += 1;
                }
            }
            rows.push(row);
        }
        progress.advance(chunk.len() as u64, "");
    }
    progress.finish(&format!("{} samples audited", rows.len()));
    let n = rows.len();
    let sref = |r: usize| SampleRef {
        id: rows[r].id,
        path: rows[r].path.clone(),
    };
    let max = cfg.max_listed;

    // Exact copies: groups by content hash, then by split.
    let mut groups: BTreeMap<ContentHash, Vec<usize>> = BTreeMap::new();
    for (r, row) in rows.iter().enumerate() {
        groups.entry(row.hash).or_default().push(r);
    }
    let mut duplicate_pairs = Vec::new();
    let mut duplicate_rows = Vec::new();
    let mut leak_pairs = Vec::new();
    let mut leaked_pairs_count = 0usize;
    let mut leaked_test: BTreeSet<usize> = BTreeSet::new();
    let mut leaked_train: BTreeSet<usize> = BTreeSet::new();
    // Units: one per (content, split), represented by its lowest id.
    let mut unit_rep: Vec<usize> = Vec::new();
    let mut unit_members: Vec<Vec<usize>> = Vec::new();
    let mut unit_group: Vec<usize> = Vec::new();
    for (g, members) in groups.values().enumerate() {
        let by_split = |s: Split| {
            let mut v: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&r| rows[r].split == s)
                .collect();
            v.sort_by_key(|&r| rows[r].id);
            v
        };
        let (train, test) = (by_split(Split::Train), by_split(Split::Test));
        for part in [&train, &test] {
            if let Some((&keep, copies)) = part.split_first() {
                for &c in copies {
                    duplicate_pairs.push(DuplicatePair {
                        keep: sref(keep),
                        copy: sref(c),
                    });
                    duplicate_rows.push(c);
                }
                unit_rep.push(keep);
                unit_members.push(part.clone());
                unit_group.push(g);
            }
        }
        if !train.is_empty() && !test.is_empty() {
            leaked_pairs_count += train.len() * test.len();
            for &t in &test {
                leak_pairs.push(LeakPair {
                    train: sref(train[0]),
                    test: sref(t),
                    exact: true,
                });
            }
            leaked_test.extend(&test);
            leaked_train.extend(&train);
        }
    }

    // Near copies between units.
    let blank_set: BTreeSet<usize> = blank.iter().copied().collect();
    let skip: Vec<bool> = unit_rep.iter().map(|r| blank_set.contains(r)).collect();
    let mut near_skipped = None;
    let near: Vec<(usize, usize, Option<u32>, f64)> = if !near_on {
        Vec::new()
    } else if is_image {
        let hashes: Vec<u64> = unit_rep.iter().map(|&r| phashes[r]).collect();
        let thumb = |r: usize| &thumbs[r * THUMB_LEN..(r + 1) * THUMB_LEN];
        let cosine = |u: usize, v: usize| {
            let (a, b) = (unit_rep[u], unit_rep[v]);
            hash::thumbnail_cosine(thumb(a), centred[a], thumb(b), centred[b])
        };
        let min = cfg.near_duplicates.min_cosine;
        hash::near_pairs_where(
            &hashes,
            &skip,
            cfg.near_duplicates.max_distance,
            |u, v, _| cosine(u, v) >= min,
        )
        .into_iter()
        .map(|(u, v, d)| (u, v, Some(d), cosine(u, v)))
        .collect()
    } else if matches!(info.layout, Layout::Tokens { .. }) {
        near_skipped = Some(
            "token sequences: the near-duplicate search compares images and feature vectors; exact duplicates and leaks are still found".to_string(),
        );
        Vec::new()
    } else if n > MAX_FEATURE_SEARCH {
        near_skipped = Some(format!(
            "{n} feature vectors: the all-pairs cosine search runs up to {MAX_FEATURE_SEARCH}"
        ));
        Vec::new()
    } else {
        let dim = info.layout.sample_len();
        let reps: Vec<f32> = unit_rep
            .iter()
            .flat_map(|&r| vectors[r * dim..(r + 1) * dim].iter().copied())
            .collect();
        hash::cosine_pairs(&reps, dim, &skip, cfg.near_duplicates.min_cosine)
            .into_iter()
            .map(|(u, v, c)| (u, v, None, c))
            .collect()
    };
    let mut near_pairs = Vec::new();
    let mut sets = Sets((0..unit_rep.len()).collect());
    let mut in_pairs: BTreeSet<usize> = BTreeSet::new();
    for (u, v, d, c) in near {
        if unit_group[u] == unit_group[v] {
            continue; // the same content in train and test: exact leakage, counted above
        }
        let (a, b) = (unit_rep[u], unit_rep[v]);
        if rows[a].split == rows[b].split {
            sets.union(u, v);
            in_pairs.extend([u, v]);
            let (a, b) = if rows[a].id < rows[b].id {
                (a, b)
            } else {
                (b, a)
            };
            near_pairs.push(NearPair {
                a: sref(a),
                b: sref(b),
                distance: d,
                cosine: (c * 1e6).round() / 1e6,
            });
        } else {
            let (tr, te) = if rows[a].split == Split::Train {
                (u, v)
            } else {
                (v, u)
            };
            leaked_pairs_count += unit_members[tr].len() * unit_members[te].len();
            for &t in &unit_members[te] {
                leak_pairs.push(LeakPair {
                    train: sref(unit_rep[tr]),
                    test: sref(t),
                    exact: false,
                });
            }
            leaked_test.extend(&unit_members[te]);
            leaked_train.extend(&unit_members[tr]);
        }
    }
    near_pairs.sort_by_key(|x| (x.a.id, x.b.id));
    leak_pairs.sort_by_key(|x| (x.test.id, x.train.id));
    leak_pairs.dedup();
    duplicate_pairs.sort_by_key(|x| (x.keep.id, x.copy.id));
    // Near-duplicate groups: keep the unit with the lowest id of each.
    let mut near_drop_rows = Vec::new();
    let mut best: HashMap<usize, usize> = HashMap::new();
    for &u in &in_pairs {
        let root = sets.find(u);
        let e = best.entry(root).or_insert(u);
        if rows[unit_rep[u]].id < rows[unit_rep[*e]].id {
            *e = u;
        }
    }
    for &u in &in_pairs {
        if best[&sets.find(u)] != u {
            near_drop_rows.extend(&unit_members[u]);
        }
    }

    // Classes.
    let classes = info.labelled.then(|| {
        let mut counts: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        for row in &rows {
            if let Some(l) = row.label {
                let c = counts.entry(l).or_default();
                match row.split {
                    Split::Train => c.0 += 1,
                    Split::Test => c.1 += 1,
                }
            }
        }
        let name = |l: u32| {
            info.classes
                .as_ref()
                .and_then(|c| c.get(l as usize).cloned())
        };
        let counts: Vec<ClassCount> = counts
            .into_iter()
            .map(|(label, (train, test))| ClassCount {
                label,
                name: name(label),
                total: train + test,
                train,
                test,
            })
            .collect();
        let (lo, hi) = counts.iter().fold((usize::MAX, 0), |(lo, hi), c| {
            (lo.min(c.total), hi.max(c.total))
        });
        let empty = info
            .classes
            .iter()
            .flatten()
            .enumerate()
            .filter(|(l, _)| !counts.iter().any(|c| c.label as usize == *l))
            .map(|(_, n)| n.clone())
            .collect();
        ClassAudit {
            imbalance: if counts.is_empty() {
                1.0
            } else {
                hi as f64 / lo as f64
            },
            counts,
            empty,
        }
    });
    let class_name = |l: u32| {
        info.classes
            .as_ref()
            .and_then(|c| c.get(l as usize).cloned())
            .unwrap_or_else(|| l.to_string())
    };
    let metadata: BTreeMap<String, MetaAudit> = meta_names
        .iter()
        .zip(meta)
        .map(|(name, values)| {
            let distinct = values.len();
            let mut v: Vec<MetaValue> = values
                .into_iter()
                .map(|(value, c)| MetaValue {
                    value,
                    total: c.total,
                    train: c.train,
                    test: c.test,
                    by_class: c
                        .by_label
                        .into_iter()
                        .map(|(l, k)| (class_name(l), k))
                        .collect(),
                })
                .collect();
            v.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.value.cmp(&b.value)));
            let truncated = v.len() > max;
            v.truncate(max);
            (
                name.clone(),
                MetaAudit {
                    distinct,
                    values: v,
                    truncated,
                },
            )
        })
        .collect();

    // Drops.
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    let mut drop: BTreeSet<usize> = BTreeSet::new();
    let leaked_train_rows: Vec<usize> = leaked_train.iter().copied().collect();
    let leaked_test_rows: Vec<usize> = leaked_test.iter().copied().collect();
    for rule in &cfg.drop {
        let rows_of: &[usize] = match rule {
            DropRule::Duplicates => &duplicate_rows,
            DropRule::NearDuplicates => &near_drop_rows,
            DropRule::Blank => &blank,
            DropRule::Dark => &dark,
            DropRule::Bright => &bright,
            DropRule::Tiny => &tiny,
            DropRule::LeakedTrain => &leaked_train_rows,
            DropRule::LeakedTest => &leaked_test_rows,
        };
        by_rule.insert(rule.as_str().into(), rows_of.len());
        drop.extend(rows_of);
    }
    let train = rows.iter().filter(|r| r.split == Split::Train).count();

    let mut metrics = Metrics::new();
    let frac = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    metrics.insert("samples".into(), n as f64);
    metrics.insert("kept".into(), (n - drop.len()) as f64);
    metrics.insert("dropped".into(), drop.len() as f64);
    metrics.insert("dropped_fraction".into(), frac(drop.len()));
    metrics.insert("duplicates".into(), duplicate_rows.len() as f64);
    metrics.insert("duplicate_fraction".into(), frac(duplicate_rows.len()));
    metrics.insert("near_duplicate_pairs".into(), near_pairs.len() as f64);
    metrics.insert("blank".into(), blank.len() as f64);
    metrics.insert("dark".into(), dark.len() as f64);
    metrics.insert("bright".into(), bright.len() as f64);
    metrics.insert("tiny".into(), tiny.len() as f64);
    metrics.insert("leakage".into(), leaked_test.len() as f64);
    metrics.insert("leaked_pairs".into(), leaked_pairs_count as f64);
    if let Some(c) = &classes {
        metrics.insert("classes".into(), c.counts.len() as f64);
        metrics.insert("class_imbalance".into(), c.imbalance);
    }
    let mut checks = Vec::new();
    for f in &cfg.fail_if {
        let Some(&value) = metrics.get(&f.metric) else {
            return Err(StageError::Input(format!(
                "`fail_if` bounds `{}`, which needs a labelled dataset; the input has no labels",
                f.metric
            )));
        };
        checks.push(Check {
            metric: f.metric.clone(),
            max: f.max,
            value,
            failed: value > f.max,
        });
    }
    tracing::info!(
        samples = n,
        duplicates = duplicate_rows.len(),
        near_duplicate_pairs = near_pairs.len(),
        blank = blank.len(),
        dark = dark.len(),
        bright = bright.len(),
        tiny = tiny.len(),
        leakage = leaked_test.len(),
        dropped = drop.len(),
        "audit"
    );

    let list = |v: &[usize]| {
        let mut refs: Vec<SampleRef> = v.iter().map(|&r| sref(r)).collect();
        refs.sort();
        let count = refs.len();
        Listed::new(refs, max, count)
    };
    let audit = Audit {
        samples: n,
        train,
        test: n - train,
        layout: info.layout,
        duplicates: {
            let c = duplicate_pairs.len();
            Listed::new(duplicate_pairs, max, c)
        },
        near_duplicates: NearAudit {
            enabled: near_on,
            method: if is_image {
                "perceptual hash + thumbnail cosine".into()
            } else {
                "cosine".into()
            },
            max_distance: cfg.near_duplicates.max_distance,
            min_cosine: cfg.near_duplicates.min_cosine,
            skipped: near_skipped,
            pairs: {
                let c = near_pairs.len();
                Listed::new(near_pairs, max, c)
            },
        },
        quality: QualityAudit {
            blank: list(&blank),
            dark: list(&dark),
            bright: list(&bright),
            tiny: list(&tiny),
        },
        leakage: LeakAudit {
            test_samples: leaked_test.len(),
            train_samples: leaked_train.len(),
            pairs: Listed::new(leak_pairs, max, leaked_pairs_count),
        },
        classes,
        metadata,
        dropped: DropAudit {
            rules: cfg.drop.iter().map(|r| r.as_str().to_string()).collect(),
            by_rule,
            samples: list(&drop.iter().copied().collect::<Vec<_>>()),
        },
        checks,
    };
    Ok(Analysis {
        info,
        audit,
        metrics,
        drop,
    })
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
    use crate::pipeline::{FailIf, NearDuplicates, Quality};

    pub(crate) struct Quiet;
    impl Progress for Quiet {
        fn start(&self, _: &str, _: u64) {}
        fn advance(&self, _: u64, _: &str) {}
        fn finish(&self, _: &str) {}
    }

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

    /// The first 2000 embedded MNIST test images (1600 train, 400 test) plus known injections:
    /// exact copies within a split, blank images, test samples copied (exactly and with noise)
    /// into train, and a near copy (brightness and noise) within train. The audit must find
    /// exactly the injections, and the curated dataset must lose exactly the dropped ones.
    #[test]
    fn finds_exactly_what_was_injected_into_mnist() {
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
        let noisy = |i: usize, seed: u64, bright: u8| -> Vec<u8> {
            let mut x = seed;
            orig(i)
                .into_iter()
                .map(|p| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let e = ((x >> 60) as i32) - 8;
                    (p.saturating_add(bright) as i32 + e).clamp(0, 255) as u8
                })
                .collect()
        };
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
        add(noisy(40, 1, 12), lbl(40), Split::Train);
        add(noisy(1950, 2, 0), lbl(1950), Split::Train);
        let total = labels.len();
        let records = Records {
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
        };
        let info = DatasetInfo::plain(records.samples.layout(), true);
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in.parquet");
        // Several row groups, as ingest writes them.
        let mut w = DatasetWriter::create(&input, &info).unwrap();
        for part in (0..total).collect::<Vec<_>>().chunks(700) {
            w.write(&records.select(part)).unwrap();
        }
        w.finish().unwrap();

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
        let a = analyse(&input, &cfg, &Quiet).unwrap();
        let audit = &a.audit;
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
        let m = &a.metrics;
        assert_eq!(m["samples"], total as f64);
        assert_eq!(m["duplicates"], 4.0);
        assert_eq!(m["duplicate_fraction"], 4.0 / total as f64);
        assert_eq!(m["near_duplicate_pairs"], 1.0);
        assert_eq!(m["blank"], 3.0);
        assert_eq!((m["dark"], m["bright"], m["tiny"]), (0.0, 0.0, 0.0));
        assert_eq!((m["leakage"], m["leaked_pairs"]), (3.0, 3.0));
        assert_eq!(m["classes"], 10.0);
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
        let out = tmp.path().join("out.parquet");
        write_curated(&input, &out, &a, &Quiet).unwrap();
        let (_, kept) = crate::data::table::read_records(&out).unwrap();
        let want: Vec<usize> = (0..total).filter(|r| !a.drop.contains(r)).collect();
        assert_eq!(kept, records.select(&want));

        // Dropping everything found, blanks and near copies included.
        let mut all = defaults();
        all.drop = vec![
            DropRule::Duplicates,
            DropRule::NearDuplicates,
            DropRule::Blank,
            DropRule::LeakedTest,
        ];
        let b = analyse(&input, &all, &Quiet).unwrap();
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
