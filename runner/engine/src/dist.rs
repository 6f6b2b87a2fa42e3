//! Collectives across the processes of a data-parallel run: one small interface
//! ([`Collectives`]) the training step calls, and its MPI implementation (feature `mpi`,
//! the system's MPI through the `mpi` crate).
//!
//! Every rank keeps the same parameters bit for bit: reductions go to rank 0 and the result
//! is broadcast (an all-reduce may round differently on different ranks), and everything a
//! step computes after a gather runs on the same values everywhere. Calls come from one
//! thread (the training loop's); MPI is initialised with `MPI_THREAD_FUNNELED`.

use std::sync::Arc;

use crate::graph::{Grads, Graph};
use crate::{shape_err, Axis2, Result, Tensor};

/// The collectives a data-parallel step needs. Every rank must make the same calls in the
/// same order with matching sizes; a rank that cannot ([`Collectives::abort`]) ends them all.
pub trait Collectives: Send + Sync + std::fmt::Debug {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// The element-wise sum over ranks, the same on every rank, in place.
    fn sum(&self, buf: &mut [f64]);
    /// The element-wise sum of `f32` values over ranks (accumulated in `f64`), in place.
    fn sum_f32(&self, buf: &mut [f32]) {
        let mut wide: Vec<f64> = buf.iter().map(|&v| v as f64).collect();
        self.sum(&mut wide);
        for (b, w) in buf.iter_mut().zip(wide) {
            *b = w as f32;
        }
    }
    /// Every rank's `local` values, in rank order; `counts[r]` is rank `r`'s length.
    fn gather(&self, local: &[f32], counts: &[usize]) -> Vec<f32>;
    /// `buf` as rank `root` has it, on every rank.
    fn broadcast(&self, buf: &mut [f32], root: usize);
    /// Bytes as rank `root` has them, on every rank (an id, a flag).
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize);
    fn barrier(&self);
    /// End every rank's process with exit `code` (`MPI_Abort`); never returns.
    fn abort(&self, code: i32) -> !;
    /// Leave the group at a normal exit (`MPI_Finalize`); no call may follow.
    fn finish(&self);
    /// Whether [`Collectives::sum_on_device`] sums the gradients (NCCL): the caller then
    /// leaves [`sum_grads`] out.
    fn sums_on_device(&self) -> bool {
        false
    }
    /// Sum the gradients of `params` in `grads` over the ranks where they are (GPU memory),
    /// in place; `None` when this group has no device collectives for them.
    fn sum_on_device(&self, _grads: &mut Grads, _params: &[&Tensor]) -> Option<Result<()>> {
        None
    }
}

/// A shared handle to the process group.
pub type Group = Arc<dyn Collectives>;

/// The share of `n` items that rank `rank` of `size` takes: contiguous ranges in rank order,
/// the first `n % size` ranks one item more. Concatenated in rank order they are `0..n`.
pub fn shard(n: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let (base, extra) = (n / size, n % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

impl Graph {
    /// The rows every rank holds of a per-sample tensor, stacked in rank order: the global
    /// batch. The other ranks' rows enter as constants, so the gradient flows only into this
    /// rank's rows (each rank computes the same loss on the same global rows, so the gradient
    /// of its own rows is the exact one; summing the parameter gradients over ranks completes
    /// it). Without a group, `t` itself.
    pub fn all_gather_rows(&mut self, t: &Tensor) -> Result<Tensor> {
        let Some(group) = self.group.clone() else {
            return Ok(t.clone());
        };
        let (rows, cols) = t.shape();
        let mut counts = vec![0f64; group.size()];
        counts[group.rank()] = rows as f64;
        group.sum(&mut counts);
        let counts: Vec<usize> = counts.iter().map(|&c| c as usize * cols).collect();
        let all = group.gather(&t.to_vec(), &counts);
        let me = group.rank();
        let before: usize = counts[..me].iter().sum();
        let after = before + counts[me];
        let mut out = t.clone();
        if before > 0 {
            let b = self.upload(all[..before].to_vec(), before / cols, cols)?;
            out = self.concat(&b, &out, Axis2::Rows)?;
        }
        if after < all.len() {
            let a = self.upload(all[after..].to_vec(), (all.len() - after) / cols, cols)?;
            out = self.concat(&out, &a, Axis2::Rows)?;
        }
        Ok(out)
    }

    /// A constant of row-major host values on this graph's device.
    pub(crate) fn upload(&self, data: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor> {
        if data.len() != rows * cols {
            return Err(shape_err(
                "upload",
                format!("{} values for {rows}x{cols}", data.len()),
            ));
        }
        let e = crate::Engine {
            dev: self.dev.clone(),
            fast: self.fast,
            consts: self.consts.clone(),
            group: None,
        };
        Ok(e.tensor(data, rows, cols)?.as_input())
    }
}

/// Sum `grads` over the ranks of `group` (in place): one flat buffer, reduced and broadcast,
/// so every rank applies the same update. `skip[i]` entries are left as they are (their
/// gradient is already the whole batch's on every rank: tensors used only after the gather).
pub fn sum_grads(
    e: &crate::Engine,
    group: &dyn Collectives,
    grads: &mut [Option<Tensor>],
    skip: &[bool],
) -> Result<()> {
    let chosen: Vec<usize> = (0..grads.len())
        .filter(|&i| grads[i].is_some() && !skip.get(i).copied().unwrap_or(false))
        .collect();
    let mut flat = Vec::new();
    for &i in &chosen {
        flat.extend(grads[i].as_ref().map(Tensor::to_vec).unwrap_or_default());
    }
    group.sum_f32(&mut flat);
    let mut at = 0;
    for &i in &chosen {
        let (r, c) = grads[i].as_ref().map_or((0, 0), Tensor::shape);
        grads[i] = Some(e.tensor(flat[at..at + r * c].to_vec(), r, c)?);
        at += r * c;
    }
    Ok(())
}

/// Rank 0's values of every tensor in `ts`, on every rank (initial weights).
pub fn broadcast_tensors(
    e: &crate::Engine,
    group: &dyn Collectives,
    ts: &mut [Tensor],
) -> Result<()> {
    let mut flat: Vec<f32> = ts.iter().flat_map(|t| t.to_vec()).collect();
    group.broadcast(&mut flat, 0);
    let mut at = 0;
    for t in ts.iter_mut() {
        let (r, c) = t.shape();
        *t = e.tensor(flat[at..at + r * c].to_vec(), r, c)?;
        at += r * c;
    }
    Ok(())
}

#[cfg(feature = "mpi")]
pub use self::mpi_group::MpiGroup;

#[cfg(feature = "mpi")]
mod mpi_group {
    use std::sync::Mutex;

    use mpi::collective::SystemOperation;
    use mpi::datatype::PartitionMut;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    use super::Collectives;

    /// The world communicator of `MPI_COMM_WORLD`.
    pub struct MpiGroup {
        /// Dropped by [`Collectives::finish`] (which finalises MPI).
        universe: Mutex<Option<mpi::environment::Universe>>,
        world: SimpleCommunicator,
        rank: usize,
        size: usize,
    }

    // The communicator is a handle MPI owns; pretext calls it from one thread at a time (the
    // training loop), which `MPI_THREAD_FUNNELED` allows.
    unsafe impl Send for MpiGroup {}
    unsafe impl Sync for MpiGroup {}

    impl std::fmt::Debug for MpiGroup {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "MPI rank {} of {}", self.rank, self.size)
        }
    }

    impl MpiGroup {
        /// Join the launcher's MPI job; `None` when MPI was initialised already.
        pub fn init() -> Option<MpiGroup> {
            let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)?;
            let world = universe.world();
            let (rank, size) = (world.rank() as usize, world.size() as usize);
            Some(MpiGroup {
                universe: Mutex::new(Some(universe)),
                world,
                rank,
                size,
            })
        }
    }

    impl Collectives for MpiGroup {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn sum(&self, buf: &mut [f64]) {
            let root = self.world.process_at_rank(0);
            if self.rank == 0 {
                let mut out = vec![0f64; buf.len()];
                root.reduce_into_root(&buf[..], &mut out[..], SystemOperation::sum());
                buf.copy_from_slice(&out);
            } else {
                root.reduce_into(&buf[..], SystemOperation::sum());
            }
            root.broadcast_into(buf);
        }
        fn gather(&self, local: &[f32], counts: &[usize]) -> Vec<f32> {
            let total: usize = counts.iter().sum();
            let mut out = vec![0f32; total];
            let counts_i: Vec<i32> = counts.iter().map(|&c| c as i32).collect();
            let displs: Vec<i32> = counts_i
                .iter()
                .scan(0, |at, &c| {
                    let d = *at;
                    *at += c;
                    Some(d)
                })
                .collect();
            let mut part = PartitionMut::new(&mut out[..], &counts_i[..], &displs[..]);
            self.world.all_gather_varcount_into(local, &mut part);
            out
        }
        fn broadcast(&self, buf: &mut [f32], root: usize) {
            self.world.process_at_rank(root as i32).broadcast_into(buf);
        }
        fn broadcast_bytes(&self, buf: &mut [u8], root: usize) {
            self.world.process_at_rank(root as i32).broadcast_into(buf);
        }
        fn barrier(&self) {
            // Polled with short sleeps: a rank waiting here (while rank 0 runs a stage alone)
            // must not spin on a core the working rank needs.
            let req = self.world.immediate_barrier();
            let mut req = Some(req);
            while let Some(r) = req.take() {
                match r.test() {
                    Ok(_) => break,
                    Err(r) => {
                        req = Some(r);
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
            }
        }
        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
        fn finish(&self) {
            if let Ok(mut u) = self.universe.lock() {
                u.take();
            }
        }
    }
}
