//! `history.json`: pretraining's curve, one record per epoch (loss, learning rate, gradient
//! norm and the collapse metrics), read by the report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const HISTORY_FILE: &str = "history.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm of the epoch's last optimizer step (before clipping).
    pub grad_norm: f64,
    /// Mean per-dimension std of L2-normalised embeddings of a fixed monitor set
    /// (→ 0 when the representation collapses; about 1/√d when spread out).
    pub embedding_std: f64,
    /// The same spread measured on the projector output (absent without a projector). The
    /// collapse rule watches this one when it exists: collapse shows there first.
    pub projection_std: Option<f64>,
    /// Effective rank of the monitor embeddings (1 = collapsed to a line).
    pub effective_rank: f64,
    /// Mean squared distance of two views' normalised embeddings (lower = more invariant).
    pub alignment: f64,
    /// log E exp(-2‖x−y‖²) over pairs (lower = more uniform on the sphere).
    pub uniformity: f64,
    pub reports: BTreeMap<String, f64>,
    /// Held-out measurements (masked token modelling: `mlm_accuracy`, `mlm_loss`,
    /// `mlm_perplexity` on test-split sequences with fixed masks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub validation: BTreeMap<String, f64>,
    /// The curriculum phase the epoch belongs to (1-based; absent without a curriculum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<u64>,
}

impl EpochRecord {
    /// The spread the collapse rule watches: the projector output's when there is one.
    pub fn watched_spread(&self) -> f64 {
        self.projection_std.unwrap_or(self.embedding_std)
    }
}
