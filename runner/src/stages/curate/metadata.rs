//! The bias audit: how each metadata column's values spread over splits and classes.

use std::collections::BTreeMap;

use super::classes::class_name;
use super::StageError;
use crate::artifacts::audit::{MetaAudit, MetaValue};
use crate::data::{DatasetInfo, Layout, Records, Split};
use crate::pipeline::CurateConfig;

/// One metadata value's counts.
#[derive(Default, Clone)]
struct MetaCounts {
    total: usize,
    train: usize,
    test: usize,
    by_label: BTreeMap<u32, usize>,
}

/// The counts of every audited column's values, filled row by row in pass 1.
pub(super) struct MetaTally {
    names: Vec<String>,
    /// Each audited column's index in the dataset's `meta`.
    columns: Vec<usize>,
    counts: Vec<BTreeMap<String, MetaCounts>>,
}

impl MetaTally {
    /// An empty tally of the columns `cfg.metadata` names (by default every metadata column
    /// but a text dataset's passages); an unknown name is an input error.
    pub fn new(cfg: &CurateConfig, info: &DatasetInfo) -> Result<MetaTally, StageError> {
        let names = audited_columns(cfg, info)?;
        let columns = names
            .iter()
            .map(|n| info.meta.iter().position(|m| m == n).unwrap_or(0))
            .collect();
        Ok(MetaTally {
            counts: vec![BTreeMap::new(); names.len()],
            names,
            columns,
        })
    }

    /// Counts row `i` of `chunk`.
    pub fn add(&mut self, chunk: &Records, i: usize, split: Split, label: Option<u32>) {
        for (m, &col) in self.counts.iter_mut().zip(&self.columns) {
            let c = m.entry(chunk.meta[col][i].clone()).or_default();
            c.total += 1;
            match split {
                Split::Train => c.train += 1,
                Split::Test => c.test += 1,
            }
            if let Some(l) = label {
                *c.by_label.entry(l).or_default() += 1;
            }
        }
    }

    /// Each column's audit, listing at most `max` values (the most frequent first).
    pub fn audit(self, info: &DatasetInfo, max: usize) -> BTreeMap<String, MetaAudit> {
        self.names
            .into_iter()
            .zip(self.counts)
            .map(|(name, values)| (name, column_audit(values, info, max)))
            .collect()
    }
}

fn column_audit(values: BTreeMap<String, MetaCounts>, info: &DatasetInfo, max: usize) -> MetaAudit {
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
                .map(|(l, k)| (class_name(info, l), k))
                .collect(),
        })
        .collect();
    v.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.value.cmp(&b.value)));
    let truncated = v.len() > max;
    v.truncate(max);
    MetaAudit {
        distinct,
        values: v,
        truncated,
    }
}

/// The metadata columns to audit.
fn audited_columns(cfg: &CurateConfig, info: &DatasetInfo) -> Result<Vec<String>, StageError> {
    match &cfg.metadata {
        // A text dataset's `text` column is the passage itself: one value per row, nothing
        // to audit as a distribution unless asked for by name.
        None if matches!(info.layout, Layout::Tokens { .. }) => {
            Ok(info.meta.iter().filter(|m| *m != "text").cloned().collect())
        }
        None => Ok(info.meta.clone()),
        Some(names) => {
            if let Some(n) = names.iter().find(|n| !info.meta.contains(n)) {
                return Err(unknown_column(n, info));
            }
            Ok(names.clone())
        }
    }
}

/// `metadata` names column `name`, which `info` lacks: says which it has.
fn unknown_column(name: &str, info: &DatasetInfo) -> StageError {
    let help = crate::pipeline::closest_name(name, info.meta.iter().map(String::as_str))
        .map(|c| format!("did you mean `{c}`?"))
        .unwrap_or_else(|| {
            if info.meta.is_empty() {
                "the dataset has no metadata columns (image folders have `folder`; parquet and CSV sources carry the columns in their `meta`)".into()
            } else {
                format!(
                    "its metadata columns are: {}",
                    info.meta
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        });
    StageError::Input(format!(
        "`metadata` names column `{name}`, which the input dataset does not have; {help}"
    ))
}
