//! pretext's standard output, kept apart from what plugins print.
//!
//! Scripts parse stdout (the summary table, `show`, `bench`, `plan`). A plugin is a shared
//! library in this process: if it prints, its text would land in the middle of that table. So
//! once the command line is parsed, [`guard_stdout`] keeps a duplicate of the real stdout for
//! pretext's own output ([`say!`], [`sayln!`]) and points file descriptor 1 at stderr, where
//! anything else that writes to "stdout" — a plugin's `println!`, `printf` from C — goes
//! instead.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

static OUT: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// Move fd 1 aside (see the module docs). Safe to call once; later calls do nothing.
pub fn guard_stdout() {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if OUT.get().is_some() {
            return;
        }
        let _ = std::io::stdout().flush();
        let Ok(real) = std::io::stdout().as_fd().try_clone_to_owned() else {
            return;
        };
        // SAFETY: dup2 on the process's own standard descriptors; fd 2 is open (stderr).
        if unsafe { libc::dup2(2, 1) } < 0 {
            return;
        }
        let _ = OUT.set(Mutex::new(std::fs::File::from(real)));
    }
}

/// Write `s` to pretext's stdout (the guarded duplicate, or plain stdout before the guard).
pub fn write_str(s: &str) {
    match OUT.get() {
        Some(out) => {
            let mut f = out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = f.write_all(s.as_bytes());
        }
        None => {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        }
    }
}

/// `print!` to pretext's own stdout.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::output::write_str(&format!($($t)*)) };
}

/// `println!` to pretext's own stdout.
#[macro_export]
macro_rules! sayln {
    () => { $crate::output::write_str("\n") };
    ($($t:tt)*) => { $crate::output::write_str(&(format!($($t)*) + "\n")) };
}
