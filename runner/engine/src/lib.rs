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

/// Expand `$body` once per compiled device, with `$D` naming that device's dfdx type, and
/// run the branch `$tag` (a [`DevTag`]) selects. The body is type-checked for every device.
macro_rules! on_dev {
    ($tag:expr, $D:ident => $body:expr) => {
        match $tag {
            $crate::DevTag::Cpu => {
                #[allow(dead_code)]
                type $D = $crate::device::CpuDev;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::DevTag::Cuda => {
                #[allow(dead_code)]
                type $D = $crate::device::CudaDev;
                $body
            }
        }
    };
}

/// `$body` on the dfdx tensor of `$x` (bound to `$t`), wrapped back into a [`Tensor`] on the
/// same device.
macro_rules! map_t {
    ($x:expr, |$t:ident| $body:expr) => {
        match &$x.t {
            $crate::Store::Cpu($t) => $crate::Tensor::new($crate::Store::Cpu($body)),
            #[cfg(feature = "cuda")]
            $crate::Store::Cuda($t) => $crate::Tensor::new($crate::Store::Cuda($body)),
        }
    };
}

/// `$body` on the dfdx tensors of `$a` (bound to `$x`) and `$b` (bound to `$y`, moved to
/// `$a`'s device if it lives elsewhere), wrapped back into a [`Tensor`].
macro_rules! zip_t {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        on_dev!($a.t.tag(), D => {
            let $x: $crate::TD<D> = $a.get::<D>().expect("the tag names this store").clone();
            let $y: $crate::TD<D> = $b.on($x.device());
            $crate::Tensor::new(<D as $crate::Dv>::wrap($body))
        })
    };
}

/// Runs `$body` on the named tensors, re-taped when recording, and absorbs the output's tape.
/// The body is expanded once per device (`D`); tensors of another device are an error.
macro_rules! record {
    ($g:expr, [$($x:ident),*], $body:expr) => {{
        on_dev!($g.dev.tag(), D => {
            if $g.tape.is_some() {
                // dfdx's backward cannot take one tensor as two operands of an op (x·x): a
                // repeated input gets a fresh identity through a recorded `· 1`.
                #[allow(unused_mut)]
                let mut seen: Vec<u64> = Vec::new();
                $(
                    $crate::host::mark_dfdx($x);
                    let dup = seen.contains(&$x.id);
                    seen.push($x.id);
                    let $x = {
                        let t = $x.get::<D>()?.clone().retaped::<dfdx::prelude::OwnedTape<f32, D>>();
                        if dup { t * 1.0 } else { t }
                    };
                )*
                let y = $body;
                Ok($g.absorb::<D>(y))
            } else {
                $( let $x = $x.get::<D>()?.clone(); )*
                Ok($crate::Tensor::new(<D as $crate::Dv>::wrap($body)))
            }
        })
    }};
}

pub mod attention;
pub mod conv;
mod device;
pub mod dist;
pub mod graph;
pub(crate) mod host;
pub(crate) mod host_ops;
pub mod io;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod nn;
#[cfg(test)]
mod op_tests;
pub mod optim;
pub mod panic_guard;
mod recompute;

pub use device::{transfers, Transfers};
pub use graph::{Axis2, Grads, Graph};

pub(crate) use device::{Dev, DevTag, Dv, Store, TD};

use dfdx::prelude::*;

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
    /// A file could not be written or read (the caller turns `source` into advice).
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
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
    pub(crate) t: Store,
    /// The tensor's identity: clones share it, every op output gets a new one.
    pub(crate) id: u64,
    /// A value no gradient is asked of (a data batch): host ops skip computing its gradient.
    pub(crate) constant: bool,
    /// The same values in host memory, kept by the CPU fast path's ops for the ops that read
    /// this tensor next (so they need no copy out of dfdx's storage).
    pub(crate) host: Option<std::sync::Arc<Vec<f32>>>,
    /// Set on outputs of the CPU fast path's ops while recording: their gradients live in the
    /// graph's own store (see `host.rs`), not in dfdx's.
    pub(crate) grad_key: Option<std::sync::Arc<host::GradKey>>,
    /// The host values a tensor was uploaded from ([`Engine::tensor`]: batches): reading them
    /// back needs no transfer.
    pub(crate) origin: Option<std::sync::Arc<Vec<f32>>>,
}

impl Tensor {
    pub(crate) fn new(t: impl Into<Store>) -> Tensor {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Tensor {
            t: t.into(),
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            constant: false,
            host: None,
            grad_key: None,
            origin: None,
        }
    }
    /// The same tensor marked as data: ops need not compute its gradient (the first layer's
    /// input gradient is skipped). `Grads::get` of it is then zeros.
    pub fn as_input(mut self) -> Tensor {
        self.constant = true;
        self
    }
    pub fn shape(&self) -> (usize, usize) {
        self.t.shape()
    }
    pub fn len(&self) -> usize {
        let (r, c) = self.shape();
        r * c
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copy the values to host memory, row-major. Counted as a device-to-host transfer
    /// ([`transfers`]) unless the values are known on the host already (the CPU fast path's
    /// copies; the values a batch was uploaded from).
    pub fn to_vec(&self) -> Vec<f32> {
        if let Some(h) = self.host.as_ref().or(self.origin.as_ref()) {
            return host::par_copy(h);
        }
        device::count_to_host();
        self.t.read()
    }
    /// The single value of a `(1, 1)` tensor.
    pub fn scalar(&self) -> f32 {
        self.to_vec()[0]
    }
    /// A copy with a fresh identity (no gradient links to `self`).
    pub fn detached(&self) -> Tensor {
        match &self.t {
            Store::Cpu(t) => Tensor::new(t.clone() * 1.0),
            #[cfg(feature = "cuda")]
            Store::Cuda(t) => Tensor::new(t.clone() * 1.0),
        }
    }
    /// A stand-in for `self` in another graph (a checkpointed block's replay): the same
    /// values and dfdx storage (so dfdx keys its gradient the same way), a new identity, and
    /// no link to where the fast path kept its gradient in the graph that made it.
    pub(crate) fn leaf(&self) -> Tensor {
        let mut t = Tensor::new(self.t.clone());
        t.constant = self.constant;
        t.host = self.host.clone();
        t.origin = self.origin.clone();
        t
    }
    /// The dfdx tensor on device `D`, or an error naming both devices.
    pub(crate) fn get<D: Dv>(&self) -> Result<&TD<D>> {
        D::of(&self.t).ok_or_else(|| {
            EngineError::Device(format!(
                "a tensor on {} used with one on {}",
                self.t.tag().name(),
                D::TAG.name()
            ))
        })
    }
    /// The tensor on device `D`: itself, or (for a tensor from another engine) a copy moved
    /// through host memory.
    pub(crate) fn on<D: Dv>(&self, dev: &D) -> TD<D> {
        match D::of(&self.t) {
            Some(t) => t.clone(),
            None => device::upload(dev, self.to_vec(), self.shape()),
        }
    }
}

/// The compute device: creates tensors and graphs.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) dev: Dev,
    /// The CPU fast path (the engine's own multi-threaded kernels) is on: the default on the
    /// CPU. Off, the CPU runs the device-generic path every other device runs.
    pub(crate) fast: bool,
    /// Constants the generic path builds once per engine and shape (index tensors of im2col,
    /// identity matrices): uploaded on first use, reused by every later step.
    pub(crate) consts: device::Consts,
    /// The data-parallel process group a training step's collectives run over (see
    /// [`dist`]); `None` in a single process and in every stage but pretraining.
    pub(crate) group: Option<dist::Group>,
}

/// Which device a run uses; its class is part of every stage key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// The host CPU with the engine's fast path.
    Cpu,
    /// The host CPU running the device-generic path (the ops a GPU runs, composed from
    /// dfdx's device-generic ones): slow, for checking the GPU path's logic where no GPU is.
    CpuGeneric,
    /// CUDA device `N`.
    Cuda(usize),
}

impl DeviceKind {
    /// Parse `cpu`, `cpu-generic`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Option<DeviceKind> {
        match s {
            "cpu" => Some(DeviceKind::Cpu),
            "cpu-generic" => Some(DeviceKind::CpuGeneric),
            "cuda" => Some(DeviceKind::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceKind::Cuda),
        }
    }
    /// The device class recorded in stage keys and the lockfile (the two CPU paths round
    /// differently, so they are different classes).
    pub fn class(&self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::CpuGeneric => "cpu-generic",
            DeviceKind::Cuda(_) => "cuda",
        }
    }
    /// The name as `--device` spells it.
    pub fn name(&self) -> String {
        match self {
            DeviceKind::Cuda(n) => format!("cuda:{n}"),
            k => k.class().to_string(),
        }
    }
}

impl Engine {
    /// Open the device. Fails cleanly (no panic) when the build or machine lacks it.
    pub fn open(kind: DeviceKind) -> Result<Engine> {
        let dev = match kind {
            DeviceKind::Cpu | DeviceKind::CpuGeneric => Dev::Cpu(Default::default()),
            DeviceKind::Cuda(n) => device::open_cuda(n)?,
        };
        Ok(Engine {
            dev,
            fast: kind == DeviceKind::Cpu,
            consts: Default::default(),
            group: None,
        })
    }

    /// This engine with its graphs' collectives over `group`: batch norm's statistics and
    /// [`Graph::all_gather_rows`] span every rank. On a GPU of a build with NCCL, the
    /// gradients are summed in GPU memory (`nccl::NcclGroup`, joined here: every rank must
    /// call this at the same point).
    pub fn with_group(&self, group: Option<dist::Group>) -> Result<Engine> {
        #[cfg(feature = "nccl")]
        let group = match (group, &self.dev) {
            (Some(g), Dev::Cuda(..)) => {
                Some(std::sync::Arc::new(nccl::NcclGroup::join(g)?) as dist::Group)
            }
            (g, _) => g,
        };
        Ok(Engine {
            group,
            ..self.clone()
        })
    }

    /// The process group of [`Engine::with_group`].
    pub fn group(&self) -> Option<&dist::Group> {
        self.group.as_ref()
    }

    /// The CPU with the fast path.
    pub fn cpu() -> Engine {
        Engine::open(DeviceKind::Cpu).expect("the CPU device always opens")
    }

    /// Which device this engine runs on.
    pub fn kind(&self) -> DeviceKind {
        match (&self.dev, self.fast) {
            (Dev::Cpu(_), true) => DeviceKind::Cpu,
            (Dev::Cpu(_), false) => DeviceKind::CpuGeneric,
            #[cfg(feature = "cuda")]
            (Dev::Cuda(_, n), _) => DeviceKind::Cuda(*n),
        }
    }

    /// A tensor from row-major host values. Counted as a host-to-device transfer.
    pub fn tensor(&self, data: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor> {
        if data.len() != rows * cols {
            return Err(shape_err(
                "tensor",
                format!("{} values for {rows}x{cols}", data.len()),
            ));
        }
        device::count_to_device();
        // On the fast CPU path the values stay as the tensor's host copy too (the first op
        // reads them).
        if let (Dev::Cpu(d), true) = (&self.dev, self.fast) {
            return Ok(host::with_host(d, data, rows, cols));
        }
        let origin = std::sync::Arc::new(data);
        let mut t = on_dev!(self.dev.tag(), D => {
            Tensor::new(D::wrap(device::upload(D::dev(&self.dev), origin.to_vec(), (rows, cols))))
        });
        t.origin = Some(origin);
        Ok(t)
    }

    pub fn zeros(&self, rows: usize, cols: usize) -> Tensor {
        if let (Dev::Cpu(d), true) = (&self.dev, self.fast) {
            return host::with_host(d, host::par_zeros(rows * cols), rows, cols);
        }
        on_dev!(self.dev.tag(), D => {
            let t: TD<D> = D::dev(&self.dev).zeros_like(&(rows, cols));
            Tensor::new(D::wrap(t))
        })
    }

    pub fn full(&self, value: f32, rows: usize, cols: usize) -> Tensor {
        if let (Dev::Cpu(d), true) = (&self.dev, self.fast) {
            return host::with_host(d, vec![value; rows * cols], rows, cols);
        }
        on_dev!(self.dev.tag(), D => {
            let mut t: TD<D> = D::dev(&self.dev).zeros_like(&(rows, cols));
            t.fill_with_ones();
            Tensor::new(D::wrap(t * value))
        })
    }

    /// The `n × n` identity: an engine constant (built and uploaded once per size).
    pub fn eye(&self, n: usize) -> Tensor {
        let g = self.graph(false);
        let mut t = g.constant(format!("eye {n}"), n, n, || graph::eye_values(n));
        if self.fast {
            // The fast path's ops read host copies: keep one beside the constant.
            t.host = Some(
                self.consts
                    .host(format!("eye {n} host"), || graph::eye_values(n)),
            );
        }
        t
    }

    /// The values of several `(1, 1)` tensors (a step's loss, gradient norm and reports) in
    /// one device-to-host transfer: gathered on the device, copied once.
    pub fn read_scalars(&self, ts: &[&Tensor]) -> Result<Vec<f32>> {
        if let Some(t) = ts.iter().find(|t| t.shape() != (1, 1)) {
            return Err(shape_err(
                "read_scalars",
                format!("a {:?} tensor is not a scalar", t.shape()),
            ));
        }
        if ts.is_empty() {
            return Ok(Vec::new());
        }
        device::count_to_host();
        if ts.iter().all(|t| matches!(t.t, Store::Cpu(_))) {
            return Ok(ts
                .iter()
                .map(|t| t.host.as_ref().map_or_else(|| t.t.read()[0], |h| h[0]))
                .collect());
        }
        let mut g = self.graph(false);
        let mut row = ts[0].clone();
        for t in &ts[1..] {
            row = g.concat(&row, t, Axis2::Cols)?;
        }
        Ok(row.t.read())
    }

    /// Block until all queued device work is done (timings; the CPU device computes eagerly).
    pub fn synchronize(&self) -> Result<()> {
        on_dev!(self.dev.tag(), D => {
            dfdx::tensor::Synchronize::try_synchronize(D::dev(&self.dev))
                .map_err(|e| EngineError::Device(format!("{e:?}")))
        })
    }

    /// A graph that records ops for autodiff (`grad = true`) or only computes.
    pub fn graph(&self, grad: bool) -> Graph {
        Graph::new(self, grad)
    }
}
