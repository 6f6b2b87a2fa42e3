//! The process group of a data-parallel run, joined from the launcher's environment:
//! `mpirun`/`mpiexec` (Open MPI, MPICH) and Slurm's `srun` start one `pretext run` per rank
//! and tell each its rank and the world size. One group per process, joined once, before the
//! command runs ([`join`]); [`group`] is how the executor and pretraining find it.
//!
//! Rank 0 runs the pipeline as a single process would, and alone writes to the store; every
//! other rank follows it through the same plan, takes part in each pretrain stage's steps and
//! writes nothing (see `exec::follow` and docs/scaling.md).

use std::sync::OnceLock;

use crate::engine::dist::Group;

static GROUP: OnceLock<Option<Group>> = OnceLock::new();

/// The variables launchers set to the world size: Open MPI, MPICH/Hydra and PMIx, Slurm.
const SIZE_VARS: [&str; 4] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "PMIX_SIZE",
    "SLURM_STEP_NUM_TASKS",
];

/// The world size a launcher announced, and the variable that said so; `None` outside one.
pub fn announced_size() -> Option<(usize, &'static str)> {
    first_number(&SIZE_VARS)
}

/// The first of `vars` set to a number, with its value.
fn first_number(vars: &[&'static str]) -> Option<(usize, &'static str)> {
    vars.iter().find_map(|v| {
        std::env::var(v)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .map(|n| (n, *v))
    })
}

/// Join the launcher's group when it started more than one rank (or one rank, for `run` in
/// a build with MPI); `command` is the subcommand (only `run` runs across ranks). A process
/// outside a launcher gets no group and runs as always.
pub fn join(command: &str) -> Result<(), String> {
    // A world of one joins only as `run` of an MPI build (`mpirun -np 1`: the data-parallel
    // path on one rank, e.g. NCCL on one GPU); otherwise it is a plain process.
    let least = if cfg!(feature = "mpi") && command == "run" {
        1
    } else {
        2
    };
    let Some((size, var)) = announced_size().filter(|(n, _)| *n >= least) else {
        let _ = GROUP.set(None);
        return Ok(());
    };
    if command != "run" {
        return Err(format!(
            "`pretext {command}` was started as one of {size} ranks ({var}={size}); only `pretext run` runs across ranks: start `{command}` as a single process"
        ));
    }
    share_cores();
    let group = open(size, var)?;
    let _ = GROUP.set(Some(group));
    Ok(())
}

/// The variables launchers set to a rank's index among the ranks on its node.
const LOCAL_RANK_VARS: [&str; 3] = [
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "SLURM_LOCALID",
];

/// This process's index among the ranks on its machine, when a launcher started several
/// ranks: `--device cuda` then means the GPU of that index (one GPU per rank).
pub fn local_rank() -> Option<usize> {
    announced_size().filter(|(n, _)| *n > 1)?;
    first_number(&LOCAL_RANK_VARS).map(|(n, _)| n)
}

/// The variables launchers set to the number of ranks on this node.
const LOCAL_SIZE_VARS: [&str; 3] = [
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "MPI_LOCALNRANKS",
    "SLURM_NTASKS_PER_NODE",
];

/// Ranks on one machine share its cores: unless the user chose (`RAYON_NUM_THREADS`), each
/// rank's compute pool gets its share of them rather than all of them, so that two ranks on
/// two cores run two threads, not four that preempt each other between collectives.
fn share_cores() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let local = first_number(&LOCAL_SIZE_VARS).map(|(n, _)| n);
    let (Some(local), Ok(cores)) = (local, std::thread::available_parallelism()) else {
        return;
    };
    let threads = (cores.get() / local.max(1)).max(1);
    // Called from `main` before any thread exists; rayon reads it when its pool starts.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
}

#[cfg(feature = "mpi")]
fn open(size: usize, var: &str) -> Result<Group, String> {
    let g = crate::engine::dist::MpiGroup::init()
        .ok_or_else(|| "MPI was initialised twice in one process".to_string())?;
    use crate::engine::dist::Collectives;
    if g.size() != size {
        return Err(format!(
            "the launcher announced {size} ranks ({var}) but MPI's world has {}: this pretext is linked against another MPI than the one that launched it; rebuild it against the launcher's MPI",
            g.size()
        ));
    }
    Ok(std::sync::Arc::new(g))
}

#[cfg(not(feature = "mpi"))]
fn open(size: usize, var: &str) -> Result<Group, String> {
    Err(format!(
        "started as one of {size} ranks ({var}={size}), but this pretext was built without MPI: rebuild with `cargo build --release --features mpi` (needs an MPI such as Open MPI and libclang: on Debian `apt install libopenmpi-dev openmpi-bin libclang-dev`), or run it as a single process"
    ))
}

/// The group this process joined, when it is one of several ranks.
pub fn group() -> Option<&'static Group> {
    GROUP.get().and_then(Option::as_ref)
}

/// This process's rank (0 outside a group).
pub fn rank() -> usize {
    group().map_or(0, |g| g.rank())
}

/// ` (rank R of N)` for messages of a process in a group, else nothing.
pub fn rank_label() -> String {
    group().map_or(String::new(), |g| {
        format!(" (rank {} of {})", g.rank(), g.size())
    })
}

/// Whether this process writes: rank 0, or a process outside a group.
pub fn leads() -> bool {
    rank() == 0
}

/// At exit: leave the group normally (`code` 0) or end every rank with `code` (a failure on
/// one rank must not leave the others waiting in a collective).
pub fn exit(code: i32) -> ! {
    if let Some(g) = group() {
        // Alone in the group there is nobody to end: leave it as on success.
        if code != 0 && g.size() > 1 {
            g.abort(code);
        }
        g.finish();
    }
    std::process::exit(code)
}
