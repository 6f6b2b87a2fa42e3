//! The progress interface long steps report to (the executor draws bars or logs lines;
//! benchmarks and tests pass their own).

/// Reports progress of long steps (the executor draws bars or logs lines).
pub trait Progress: Sync {
    /// A new phase with `total` steps (e.g. one epoch).
    fn start(&self, label: &str, total: u64);
    fn advance(&self, n: u64, message: &str);
    fn finish(&self, message: &str);
}
