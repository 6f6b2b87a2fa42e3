//! The OOD artifacts of ood_eval: `ood_scores.json` (per score, the in-distribution and OOD
//! values with their AUROC and FPR@95%TPR) and `corruptions.json` (accuracy per corruption
//! and severity), read by the report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const SCORES_FILE: &str = "ood_scores.json";
pub const CORRUPTIONS_FILE: &str = "corruptions.json";

/// One OOD score of `ood_scores.json` (the file is a list of them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreRecord {
    pub score: String,
    pub in_distribution: Vec<f64>,
    pub ood: Vec<f64>,
    pub auroc: f64,
    pub fpr95: f64,
}

/// `corruptions.json`: accuracy by corruption name, then by severity.
pub type CorruptionGrid = BTreeMap<String, BTreeMap<u8, f64>>;
