//! The `pretext` binary: parse arguments, set up logging, dispatch, and map errors to exit
//! codes (0 ok, 1 a stage or check failed, 2 bad input). All logic lives in the library.

use clap::Parser;
use pretext::cli::{dispatch, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() {
    // Behave like other Unix tools when stdout is closed early (`pretext show … | head`):
    // die quietly from SIGPIPE instead of failing on a write.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Training frees and re-allocates the same large buffers every step. glibc would hand
    // each one back to the kernel (munmap or trim) and fault fresh zeroed pages in on the next
    // step, which cost about as much as the arithmetic: keep freed memory for reuse instead.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
    // A panic is a bug in pretext, never the user's fault: report it as such, without Rust's
    // default "panicked at" noise, and exit with a distinct code.
    std::panic::set_hook(Box::new(|info| {
        if pretext::panic_guard::is_catching() {
            return;
        }
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error{}: internal error: {msg}{at}\n  this is a bug in pretext; please report it with the command you ran", pretext::launch::rank_label());
        // One rank's panic must end every rank, not leave them waiting in a collective.
        if let Some(g) = pretext::launch::group() {
            g.abort(101);
        }
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    // Under `mpirun`/`srun`: join the other ranks (or say why this process cannot).
    if let Err(e) = pretext::launch::join(cli.command.name()) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let level = if cli.quiet || !pretext::launch::leads() {
        "warn"
    } else {
        match cli.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_env("PRETEXT_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder
            .with_target(false)
            .without_time()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    // From here on, plugins may be loaded: whatever they print goes to stderr, not into the
    // output scripts parse.
    pretext::output::guard_stdout();
    if let Err(e) = dispatch(&cli) {
        eprintln!("error{}: {e}", pretext::launch::rank_label());
        pretext::launch::exit(e.exit_code());
    }
    pretext::launch::exit(0);
}
