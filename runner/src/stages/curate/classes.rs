//! The class audit: samples per class and split, the imbalance, classes without samples.

use std::collections::BTreeMap;

use super::fingerprint::Row;
use crate::artifacts::audit::{ClassAudit, ClassCount};
use crate::data::{DatasetInfo, Split};

/// The class histogram of a labelled dataset; `None` for unlabelled data.
pub(super) fn class_audit(rows: &[Row], info: &DatasetInfo) -> Option<ClassAudit> {
    if !info.labelled {
        return None;
    }
    let counts: Vec<ClassCount> = per_split(rows)
        .into_iter()
        .map(|(label, (train, test))| ClassCount {
            label,
            name: info
                .classes
                .as_ref()
                .and_then(|c| c.get(label as usize).cloned()),
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
    Some(ClassAudit {
        imbalance: if counts.is_empty() {
            1.0
        } else {
            hi as f64 / lo as f64
        },
        counts,
        empty,
    })
}

/// `(train, test)` samples of each label.
fn per_split(rows: &[Row]) -> BTreeMap<u32, (usize, usize)> {
    let mut counts: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for row in rows {
        if let Some(l) = row.label {
            let c = counts.entry(l).or_default();
            match row.split {
                Split::Train => c.0 += 1,
                Split::Test => c.1 += 1,
            }
        }
    }
    counts
}

/// Label `l`'s class name, or the label itself where the dataset names no classes.
pub(super) fn class_name(info: &DatasetInfo, l: u32) -> String {
    info.classes
        .as_ref()
        .and_then(|c| c.get(l as usize).cloned())
        .unwrap_or_else(|| l.to_string())
}
