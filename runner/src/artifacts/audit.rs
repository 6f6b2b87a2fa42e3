//! The audit artifact: `audit.json`, what curate found in a dataset (exact and near
//! duplicates, quality, leakage, class balance, metadata, what was dropped and the `fail_if`
//! checks), read by the report.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::data::Layout;

pub const AUDIT_FILE: &str = "audit.json";
/// A sample in the audit: its id, and its path when the dataset records paths.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SampleRef {
    pub id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// An exact copy within a split: `copy` duplicates `keep` (the lowest id of its group).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicatePair {
    pub keep: SampleRef,
    pub copy: SampleRef,
}

/// A near-duplicate pair (`a.id < b.id`); for images `distance` is the perceptual-hash
/// distance in bits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NearPair {
    pub a: SampleRef,
    pub b: SampleRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance: Option<u32>,
    pub cosine: f64,
}

/// A sample in train whose exact or near copy is in test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakPair {
    pub train: SampleRef,
    pub test: SampleRef,
    pub exact: bool,
}

/// A list that may be cut at `max_listed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listed<T> {
    /// How many there are.
    pub count: usize,
    /// The first `max_listed` of them, by id.
    pub listed: Vec<T>,
    /// Whether `listed` is incomplete.
    pub truncated: bool,
}

impl<T> Listed<T> {
    pub(crate) fn new(mut items: Vec<T>, max: usize, count: usize) -> Listed<T> {
        let truncated = items.len() > max;
        items.truncate(max);
        Listed {
            count,
            listed: items,
            truncated,
        }
    }
}

/// The near-duplicate search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NearAudit {
    pub enabled: bool,
    /// `perceptual hash + thumbnail cosine` or `cosine`.
    pub method: String,
    pub max_distance: u32,
    pub min_cosine: f64,
    /// Why the search did not run, if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Pairs within a split.
    pub pairs: Listed<NearPair>,
}

/// Quality findings (sample lists).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityAudit {
    pub blank: Listed<SampleRef>,
    pub dark: Listed<SampleRef>,
    pub bright: Listed<SampleRef>,
    pub tiny: Listed<SampleRef>,
}

/// Train/test leakage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakAudit {
    /// Test samples with an exact or near copy in train.
    pub test_samples: usize,
    /// Train samples with an exact or near copy in test.
    pub train_samples: usize,
    /// (train, test) pairs; exact pairs list the lowest train id of each test sample's copies.
    pub pairs: Listed<LeakPair>,
}

/// Counts of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassCount {
    pub label: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub total: usize,
    pub train: usize,
    pub test: usize,
}

/// The class histogram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassAudit {
    pub counts: Vec<ClassCount>,
    /// Largest class count / smallest (non-empty) class count.
    pub imbalance: f64,
    /// Named classes without samples.
    pub empty: Vec<String>,
}

/// Counts of one metadata value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetaValue {
    pub value: String,
    pub total: usize,
    pub train: usize,
    pub test: usize,
    /// Counts per class (by name, or label number), for labelled data.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_class: BTreeMap<String, usize>,
}

/// The distribution of one metadata column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetaAudit {
    pub distinct: usize,
    /// Values by count (largest first), at most `max_listed`.
    pub values: Vec<MetaValue>,
    pub truncated: bool,
}

/// One `fail_if` check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub metric: String,
    pub max: f64,
    pub value: f64,
    pub failed: bool,
}

/// What was dropped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DropAudit {
    pub rules: Vec<String>,
    /// Rows dropped by each rule (a row can match several).
    pub by_rule: BTreeMap<String, usize>,
    pub samples: Listed<SampleRef>,
}

/// `audit.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Audit {
    pub samples: usize,
    pub train: usize,
    pub test: usize,
    pub layout: Layout,
    /// Exact copies within a split.
    pub duplicates: Listed<DuplicatePair>,
    pub near_duplicates: NearAudit,
    pub quality: QualityAudit,
    pub leakage: LeakAudit,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<ClassAudit>,
    pub metadata: BTreeMap<String, MetaAudit>,
    pub dropped: DropAudit,
    pub checks: Vec<Check>,
}
