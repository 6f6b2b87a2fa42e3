//! Gradient sums in GPU memory through NCCL (feature `nccl`, with `cuda` and `mpi`): the
//! [`Collectives`] of a data-parallel run whose ranks train on GPUs.
//!
//! MPI stays the process group: it starts the ranks, carries NCCL's unique id from rank 0 to
//! the others, and does every host-side collective (the gathered embeddings, batch-norm
//! statistics, initial weights, barriers). NCCL takes the one large collective of each step,
//! the sum of the parameter gradients, on the gradient buffers dfdx's backward wrote, without
//! a copy through the host: one `ncclAllReduce` per parameter inside one NCCL group call.
//! NCCL's ring and tree all-reduces give every rank the same result, so the parameters stay
//! identical on every rank.
//!
//! Streams: dfdx's stream is synchronised before the all-reduce (the gradients are written),
//! the all-reduce runs on the legacy default stream, and the context is synchronised after it
//! (dfdx reads the sums next, on its own stream).

use std::ffi::c_void;
use std::mem::MaybeUninit;

use cudarc::driver::DevicePtr;
use cudarc::nccl::{result as nccl, sys};
use dfdx::prelude::*;

use crate::device::{GradStore, Store};
use crate::dist::{Collectives, Group};
use crate::graph::Grads;
use crate::{EngineError, Result, Tensor};

fn nccl_err(what: &str, e: impl std::fmt::Debug) -> EngineError {
    EngineError::Device(format!(
        "NCCL {what} failed: {e:?} (NCCL_DEBUG=WARN in the environment makes NCCL say why)"
    ))
}

/// MPI for the host collectives, NCCL for the gradients.
pub struct NcclGroup {
    host: Group,
    comm: sys::ncclComm_t,
}

// The communicator is used from the training thread only, like the MPI group.
unsafe impl Send for NcclGroup {}
unsafe impl Sync for NcclGroup {}

impl std::fmt::Debug for NcclGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NCCL over {:?}", self.host)
    }
}

impl NcclGroup {
    /// Every rank calls this at the same point, with its GPU's context current (the engine's
    /// device is open): rank 0 makes the unique id, MPI broadcasts it, and each rank joins
    /// the NCCL communicator as its MPI rank.
    pub fn join(host: Group) -> Result<NcclGroup> {
        let mut id = [0u8; 128];
        if host.rank() == 0 {
            let uid = nccl::get_uniqueid().map_err(|e| nccl_err("ncclGetUniqueId", e))?;
            for (b, c) in id.iter_mut().zip(uid.internal) {
                *b = c as u8;
            }
        }
        host.broadcast_bytes(&mut id, 0);
        let uid = sys::ncclUniqueId {
            internal: id.map(|b| b as std::ffi::c_char),
        };
        let (size, rank) = (host.size() as i32, host.rank() as i32);
        let mut comm = MaybeUninit::uninit();
        // SAFETY: `comm` is written by NCCL on success and read only then.
        let comm = unsafe {
            nccl::comm_init_rank(comm.as_mut_ptr(), size, uid, rank)
                .map_err(|e| nccl_err("ncclCommInitRank", e))?;
            comm.assume_init()
        };
        Ok(NcclGroup { host, comm })
    }
}

impl Drop for NcclGroup {
    fn drop(&mut self) {
        // SAFETY: the communicator was initialised in `join` and is not used after this.
        unsafe {
            let _ = nccl::comm_destroy(self.comm);
        }
    }
}

/// `cuCtxSynchronize`: every stream of the current context has finished.
fn sync_context() -> Result<()> {
    // SAFETY: a plain driver call on the current context.
    unsafe { cudarc::driver::sys::cuCtxSynchronize() }
        .result()
        .map_err(|e| EngineError::Device(format!("cuCtxSynchronize: {e:?}")))
}

impl Collectives for NcclGroup {
    fn rank(&self) -> usize {
        self.host.rank()
    }
    fn size(&self) -> usize {
        self.host.size()
    }
    fn sum(&self, buf: &mut [f64]) {
        self.host.sum(buf)
    }
    fn gather(&self, local: &[f32], counts: &[usize]) -> Vec<f32> {
        self.host.gather(local, counts)
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) {
        self.host.broadcast(buf, root)
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) {
        self.host.broadcast_bytes(buf, root)
    }
    fn barrier(&self) {
        self.host.barrier()
    }
    fn abort(&self, code: i32) -> ! {
        // SAFETY: ends the communicator's pending work; the process exits next.
        unsafe {
            let _ = nccl::comm_abort(self.comm);
        }
        self.host.abort(code)
    }
    fn finish(&self) {
        self.host.finish()
    }
    fn sums_on_device(&self) -> bool {
        true
    }
    fn sum_on_device(&self, grads: &mut Grads, params: &[&Tensor]) -> Option<Result<()>> {
        let GradStore::Cuda(g) = &mut grads.grads else {
            return None;
        };
        let dev = match &grads.dev {
            crate::device::Dev::Cuda(d, _) => d.clone(),
            crate::device::Dev::Cpu(_) => return None,
        };
        let mut run = || -> Result<()> {
            dev.try_synchronize()
                .map_err(|e| EngineError::Device(format!("{e:?}")))?;
            nccl::group_start().map_err(|e| nccl_err("ncclGroupStart", e))?;
            for p in params {
                let Store::Cuda(t) = &p.t else {
                    return Err(EngineError::Device(
                        "a parameter is not on the GPU the gradients are on".into(),
                    ));
                };
                let buf = g
                    .get_or_alloc_mut(t)
                    .map_err(|e| EngineError::Device(format!("{e:?}")))?;
                let ptr = *buf.device_ptr() as *mut c_void;
                let len = cudarc::driver::DeviceSlice::len(buf);
                // SAFETY: an in-place sum of `len` floats in a live device buffer; the
                // buffer outlives the call (synchronised below, before it can be freed).
                unsafe {
                    nccl::all_reduce(
                        ptr,
                        ptr,
                        len,
                        sys::ncclDataType_t::ncclFloat32,
                        sys::ncclRedOp_t::ncclSum,
                        self.comm,
                        std::ptr::null_mut(),
                    )
                }
                .map_err(|e| nccl_err("ncclAllReduce", e))?;
            }
            nccl::group_end().map_err(|e| nccl_err("ncclGroupEnd", e))?;
            sync_context()
        };
        Some(run())
    }
}
