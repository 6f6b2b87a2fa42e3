//! The progress interface long steps report to (the executor draws bars or logs lines;
//! benchmarks and tests pass their own).

/// Reports progress of long steps (the executor draws bars or logs lines).
pub trait Progress: Sync {
    /// A new phase with `total` steps (e.g. one epoch).
    fn start(&self, label: &str, total: u64);
    fn advance(&self, n: u64, message: &str);
    fn finish(&self, message: &str);
    /// Named values at a training step, for curves (`train/loss`, `epoch/embedding_std`):
    /// the executor writes them to TensorBoard event files. Steps count optimiser updates
    /// from 1; values at one step are reported together.
    fn scalars(&self, _step: u64, _values: &[(&str, f64)]) {}
}

/// Progress that goes nowhere: for tests and callers with nothing to show.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64, _: &str) {}
    fn finish(&self, _: &str) {}
}

/// Reports every numeric field of `record` (a serialisable struct) as `<prefix>/<field>`,
/// nested maps as `<prefix>/<field>.<key>`; fields that are not numbers are left out.
pub fn report_fields(
    progress: &dyn Progress,
    step: u64,
    prefix: &str,
    record: &impl serde::Serialize,
) {
    fn walk(v: &serde_json::Value, name: String, out: &mut Vec<(String, f64)>) {
        match v {
            serde_json::Value::Number(n) => out.extend(n.as_f64().map(|x| (name, x))),
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    walk(v, format!("{name}.{k}"), out);
                }
            }
            _ => {}
        }
    }
    let mut values = Vec::new();
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(record) {
        for (k, v) in &fields {
            walk(v, format!("{prefix}/{k}"), &mut values);
        }
    }
    let refs: Vec<(&str, f64)> = values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    progress.scalars(step, &refs);
}
