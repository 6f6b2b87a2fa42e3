//! What `drop` leaves out, the stage's metrics and the `fail_if` checks on them.

use std::collections::{BTreeMap, BTreeSet};

use super::{Findings, Metrics, StageError};
use crate::artifacts::audit::Check;
use crate::pipeline::{DropRule, FailIf};

/// The rows the drop rules leave out.
pub(super) struct Drops {
    /// How many rows each rule names (rows may be named by several).
    pub by_rule: BTreeMap<String, usize>,
    pub rows: BTreeSet<usize>,
}

/// Applies `rules` to the findings.
pub(super) fn apply(rules: &[DropRule], f: &Findings) -> Drops {
    let leaked_train: Vec<usize> = f.leaks.train.iter().copied().collect();
    let leaked_test: Vec<usize> = f.leaks.test.iter().copied().collect();
    let mut drops = Drops {
        by_rule: BTreeMap::new(),
        rows: BTreeSet::new(),
    };
    for rule in rules {
        let rows: &[usize] = match rule {
            DropRule::Duplicates => &f.duplicates.rows,
            DropRule::NearDuplicates => &f.near.drop_rows,
            DropRule::Blank => &f.quality.blank,
            DropRule::Dark => &f.quality.dark,
            DropRule::Bright => &f.quality.bright,
            DropRule::Tiny => &f.quality.tiny,
            DropRule::LeakedTrain => &leaked_train,
            DropRule::LeakedTest => &leaked_test,
        };
        drops.by_rule.insert(rule.as_str().into(), rows.len());
        drops.rows.extend(rows);
    }
    drops
}

/// The stage's metrics: counts of every finding (class ones for labelled data) and of the
/// drops.
pub(super) fn metrics(f: &Findings, drops: &Drops) -> Metrics {
    let n = f.rows.len();
    let dropped = drops.rows.len();
    let frac = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    let mut metrics = Metrics::new();
    let mut put = |name: &str, value: f64| {
        metrics.insert(name.into(), value);
    };
    put("samples", n as f64);
    put("kept", (n - dropped) as f64);
    put("dropped", dropped as f64);
    put("dropped_fraction", frac(dropped));
    put("duplicates", f.duplicates.rows.len() as f64);
    put("duplicate_fraction", frac(f.duplicates.rows.len()));
    put("near_duplicate_pairs", f.near.pairs.len() as f64);
    put("blank", f.quality.blank.len() as f64);
    put("dark", f.quality.dark.len() as f64);
    put("bright", f.quality.bright.len() as f64);
    put("tiny", f.quality.tiny.len() as f64);
    put("leakage", f.leaks.test.len() as f64);
    put("leaked_pairs", f.leaks.pair_count as f64);
    if let Some(c) = &f.classes {
        put("classes", c.counts.len() as f64);
        put("class_imbalance", c.imbalance);
    }
    metrics
}

/// One check per `fail_if` bound; a bound on a metric the data lacks (the class ones on
/// unlabelled data) is an input error.
pub(super) fn checks(fail_if: &[FailIf], metrics: &Metrics) -> Result<Vec<Check>, StageError> {
    fail_if
        .iter()
        .map(|f| {
            let Some(&value) = metrics.get(&f.metric) else {
                return Err(StageError::Input(format!(
                    "`fail_if` bounds `{}`, which needs a labelled dataset; the input has no labels",
                    f.metric
                )));
            };
            Ok(Check {
                metric: f.metric.clone(),
                max: f.max,
                value,
                failed: value > f.max,
            })
        })
        .collect()
}
