//! What a plugin call cannot be allowed to do silently: never return, or end the process.
//!
//! A plugin is a shared library running in pretext's own threads, so neither can be
//! prevented; both can be made clear. Every plugin call registers itself here while it runs:
//!
//! - a watchdog thread ends the process (exit code 1) with a message naming the plugin and
//!   the call when one runs longer than the limit (`PRETEXT_PLUGIN_TIMEOUT` seconds, default
//!   600; a step's calls normally take milliseconds);
//! - an `atexit` handler turns a plugin's `exit()` during a call into a message naming it and
//!   exit code 1 (otherwise the run would end with the plugin's code and no word).
//!
//! In both cases the store stays consistent: entries are committed by an atomic rename, and
//! the next run clears the unfinished stage's temporary folder (and resumes from its last
//! checkpoint).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// What is being called: kept as pointers to the caller's strings (no allocation per call:
/// augmentations are called once per sample).
struct Site {
    what: &'static str,
    name: *const str,
    lib: *const std::path::Path,
    since: Instant,
}

// SAFETY: the pointers are only dereferenced while the entry is in the map, and the entry is
// removed (under the map's lock) before the call that owns the strings returns.
unsafe impl Send for Site {}

impl Site {
    fn describe(&self) -> String {
        // SAFETY: see the `Send` impl: the caller's strings outlive the entry.
        let (name, lib) = unsafe { (&*self.name, &*self.lib) };
        format!("{} `{name}` (`{}`)", self.what, lib.display())
    }
}

/// The calls in flight, by id.
fn calls() -> &'static Mutex<HashMap<u64, Site>> {
    static CALLS: OnceLock<Mutex<HashMap<u64, Site>>> = OnceLock::new();
    CALLS.get_or_init(Default::default)
}

/// The time limit of one plugin call.
pub fn limit() -> Duration {
    let secs = std::env::var("PRETEXT_PLUGIN_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(600.0);
    Duration::from_secs_f64(secs)
}

thread_local! {
    /// The call this thread is in (0: none). No destructor, so it is still readable while
    /// `exit()` runs the process's exit handlers.
    static CURRENT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A plugin call in flight; dropping it ends the call.
pub struct InCall {
    id: u64,
    outer: u64,
}

impl Drop for InCall {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.outer));
        calls()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Register a call of plugin `name` (an objective or augmentation, `what`) from `lib`; the
/// returned guard must be dropped before `name` and `lib` are.
pub fn enter(what: &'static str, name: &str, lib: &std::path::Path) -> InCall {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static START: Once = Once::new();
    START.call_once(|| {
        let limit = limit();
        // SAFETY: registering a plain `extern "C"` function with the C runtime.
        unsafe {
            libc::atexit(on_exit);
        }
        let _ = std::thread::Builder::new()
            .name("plugin-watchdog".into())
            .spawn(move || watchdog(limit));
    });
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    calls().lock().unwrap_or_else(|p| p.into_inner()).insert(
        id,
        Site {
            what,
            name,
            lib,
            since: Instant::now(),
        },
    );
    let outer = CURRENT.with(|c| c.replace(id));
    InCall { id, outer }
}

fn watchdog(limit: Duration) {
    let tick = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        std::thread::sleep(tick);
        let late = calls()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|site| site.since.elapsed() > limit)
            .map(Site::describe);
        if let Some(what) = late {
            eprintln!(
                "error: {what} did not return within {:.0} s; pretext stops here (the store is \
                 consistent; a rerun resumes). Fix the plugin, or raise the limit with \
                 PRETEXT_PLUGIN_TIMEOUT=<seconds> if the call is just slow",
                limit.as_secs_f64()
            );
            // SAFETY: ends the process at once; the hung call cannot be unwound.
            unsafe { libc::_exit(1) };
        }
    }
}

extern "C" fn on_exit() {
    // Only a call on the thread that is exiting ended the process (others may be in flight).
    let id = CURRENT.try_with(|c| c.get()).unwrap_or(0);
    if id == 0 {
        return;
    }
    let Ok(calls) = calls().try_lock() else {
        return;
    };
    if let Some(site) = calls.get(&id) {
        let what = site.describe();
        eprintln!(
            "error: {what} ended the process (it called exit) instead of returning an error; \
             pretext stops here (the store is consistent; a rerun resumes). A plugin reports \
             failure by returning an error from the call"
        );
        // SAFETY: ends the process from inside exit(); the plugin's status code is replaced.
        unsafe { libc::_exit(1) };
    }
}
