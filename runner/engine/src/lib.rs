//! pretext's training engine: the only crate that names dfdx (or cudarc); its public API
//! names neither.
//!
//! Everything above it sees dfdx-free types: [`Tensor`] (a 2-D `(rows, cols)` f32 tensor on the
//! engine device), [`Graph`] (records ops for autodiff), [`Grads`], the runtime-shaped layers
//! in [`nn`], optimizers and schedules in [`optim`], and safetensors I/O in [`io`].
//!
//! Autodiff: dfdx keeps backward closures on a tape carried by tensors. Pipelines and plugins
//! use a tensor any number of times (or not at all), so the engine keeps ONE accumulator tape
//! per [`Graph`]: each op runs on inputs re-taped with an empty tape, and the op's tape is
//! split off its output and merged into the accumulator. dfdx sorts backward ops by creation
//! order and keys gradients by tensor id, so fan-out, dead branches and parameters used in
//! several places all get correct gradients.

pub mod attention;
pub mod conv;
pub mod graph;
pub(crate) mod host;
#[cfg(not(feature = "cuda"))]
pub(crate) mod host_ops;
pub mod io;
pub mod nn;
#[cfg(test)]
mod op_tests;
pub mod optim;
pub mod panic_guard;
pub mod text;

pub use graph::{Axis2, Grads, Graph};

use dfdx::prelude::*;

/// The device type of this build. The `cuda` feature switches it; stages never name it.
#[cfg(not(feature = "cuda"))]
pub(crate) type Dev = Cpu;
#[cfg(feature = "cuda")]
pub(crate) type Dev = Cuda;

pub(crate) type T2 = dfdx::tensor::Tensor<(usize, usize), f32, Dev, NoneTape>;
pub(crate) type OT = OwnedTape<f32, Dev>;

/// Errors from engine operations (shape mismatches are checked before dfdx sees them, since
/// dfdx panics on them).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("shape mismatch in `{op}`: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("device error: {0}")]
    Device(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

pub(crate) fn shape_err(op: &'static str, detail: impl Into<String>) -> EngineError {
    EngineError::Shape {
        op,
        detail: detail.into(),
    }
}

/// A 2-D f32 tensor on the engine device. Cloning is cheap (shared storage, same identity:
/// a clone receives the same gradient).
#[derive(Clone, Debug)]
pub struct Tensor {
    pub(crate) t: T2,
    /// A value no gradient is asked of (a data batch): host ops skip computing its gradient.
    pub(crate) constant: bool,
    /// The same values in host memory, kept by the CPU fast path's ops for the ops that read
    /// this tensor next (so they need no copy out of dfdx's storage).
    pub(crate) host: Option<std::sync::Arc<Vec<f32>>>,
    /// Set on outputs of the CPU fast path's ops while recording: their gradients live in the
    /// graph's own store (see `host.rs`), not in dfdx's.
    pub(crate) grad_key: Option<std::sync::Arc<host::GradKey>>,
}

impl Tensor {
    pub(crate) fn new(t: T2) -> Tensor {
        Tensor {
            t,
            constant: false,
            host: None,
            grad_key: None,
        }
    }
    /// The same tensor marked as data: ops need not compute its gradient (the first layer's
    /// input gradient is skipped). `Grads::get` of it is then zeros.
    pub fn as_input(mut self) -> Tensor {
        self.constant = true;
        self
    }
    pub fn shape(&self) -> (usize, usize) {
        *self.t.shape()
    }
    pub fn len(&self) -> usize {
        let (r, c) = self.shape();
        r * c
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copy the values to host memory, row-major.
    pub fn to_vec(&self) -> Vec<f32> {
        if let Some(h) = &self.host {
            return host::par_copy(h);
        }
        // One contiguous copy (engine tensors are always contiguous); `as_vec` walks strides
        // element by element.
        host::read(&self.t)
    }
    /// The single value of a `(1, 1)` tensor.
    pub fn scalar(&self) -> f32 {
        self.to_vec()[0]
    }
    /// A copy with a fresh identity (no gradient links to `self`).
    pub fn detached(&self) -> Tensor {
        Tensor::new(self.t.clone() * 1.0)
    }
}

/// The compute device: creates tensors and graphs.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) dev: Dev,
}

/// Which device class a run uses; part of every stage key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda(usize),
}

impl DeviceKind {
    /// Parse `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Option<DeviceKind> {
        match s {
            "cpu" => Some(DeviceKind::Cpu),
            "cuda" => Some(DeviceKind::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceKind::Cuda),
        }
    }
    /// The device class recorded in stage keys and the lockfile.
    pub fn class(&self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda(_) => "cuda",
        }
    }
}

impl Engine {
    /// Open the device. Fails cleanly (no panic) when the build or machine lacks it.
    pub fn open(kind: DeviceKind) -> Result<Engine> {
        match kind {
            #[cfg(not(feature = "cuda"))]
            DeviceKind::Cpu => Ok(Engine {
                dev: Dev::default(),
            }),
            #[cfg(not(feature = "cuda"))]
            DeviceKind::Cuda(_) => Err(EngineError::Device(
                "this pretext was built without CUDA support (cargo feature `cuda`); \
                 use `--device cpu`"
                    .into(),
            )),
            #[cfg(feature = "cuda")]
            DeviceKind::Cpu => Err(EngineError::Device(
                "this build runs on CUDA only for now; use `--device cuda`".into(),
            )),
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda(n) => cuda_open(n),
        }
    }

    pub fn cpu() -> Engine {
        Engine::open(DeviceKind::Cpu).expect("the CPU device always opens")
    }

    /// A tensor from row-major host values.
    pub fn tensor(&self, data: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor> {
        if data.len() != rows * cols {
            return Err(shape_err(
                "tensor",
                format!("{} values for {rows}x{cols}", data.len()),
            ));
        }
        // On the CPU the values stay as the tensor's host copy too (the first op reads them).
        #[cfg(not(feature = "cuda"))]
        return Ok(host::with_host(&self.dev, data, rows, cols));
        #[cfg(feature = "cuda")]
        Ok(Tensor::new(self.dev.tensor_from_vec(data, (rows, cols))))
    }

    pub fn zeros(&self, rows: usize, cols: usize) -> Tensor {
        Tensor::new(self.dev.zeros_like(&(rows, cols)))
    }

    pub fn full(&self, value: f32, rows: usize, cols: usize) -> Tensor {
        let mut t = self.dev.zeros_like(&(rows, cols));
        t.fill_with_ones();
        Tensor::new(t * value)
    }

    pub fn eye(&self, n: usize) -> Tensor {
        let mut v = vec![0f32; n * n];
        for i in 0..n {
            v[i * n + i] = 1.0;
        }
        Tensor::new(self.dev.tensor_from_vec(v, (n, n)))
    }

    /// Block until all queued device work is done (timings; the CPU device computes eagerly).
    pub fn synchronize(&self) -> Result<()> {
        dfdx::tensor::Synchronize::try_synchronize(&self.dev)
            .map_err(|e| EngineError::Device(format!("{e:?}")))
    }

    /// A graph that records ops for autodiff (`grad = true`) or only computes.
    pub fn graph(&self, grad: bool) -> Graph {
        Graph::new(self.dev.clone(), grad)
    }
}

#[cfg(feature = "cuda")]
fn cuda_open(n: usize) -> Result<Engine> {
    // cudarc panics when the driver library is missing: probe for it first.
    let ok = std::panic::catch_unwind(|| cudarc::driver::result::init().is_ok()).unwrap_or(false);
    if !ok {
        return Err(EngineError::Device(
            "no CUDA driver found on this machine".into(),
        ));
    }
    let dev =
        Cuda::try_seed_from_u64(n as u64).map_err(|e| EngineError::Device(format!("{e:?}")))?;
    Ok(Engine { dev })
}
