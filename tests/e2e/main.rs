//! End-to-end tests of the `pretext` binary: each test runs the real binary (built by
//! `cargo build --workspace`) on pipelines in temporary folders and checks exit codes, messages,
//! the store, `pretext.lock` and caching. Plugin tests build the fixture crates under
//! `tests/fixtures/plugins/`; the NT-Xent test calls the SimCLR plugin through the library.

mod support;

mod bench;
mod caching;
mod checkpointing;
mod cli_errors;
mod clip;
mod curriculum;
mod data;
#[cfg(feature = "mpi")]
mod distributed;
mod docs_template;
mod end_to_end;
mod faults;
mod golden;
mod init;
mod kill;
mod latent;
mod malformed;
mod memory;
mod minifuzz;
mod multicrop;
mod nonregular;
mod ntxent;
mod objectives;
mod plugins;
mod regressions;
mod report;
mod reproducibility;
mod stage_jobs;
mod tensorboard;
mod text;
mod tokenizers;
mod training;
mod transfers;
