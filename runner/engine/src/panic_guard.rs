//! Panics caught on purpose: [`catch`] runs a closure, turning a panic into an `Err` with its
//! message, and marks the thread so the binary's panic hook stays quiet (the caller reports
//! the error in its own words). Used at the plugin boundary and around dfdx calls, which
//! assert on internal invariants.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether the current thread is inside [`catch`] (the panic hook checks this).
pub fn is_catching() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Run `f`; a panic becomes `Err(message)`.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    DEPTH.with(|d| d.set(d.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    r.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}
