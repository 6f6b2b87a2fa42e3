//! Devices chosen at run time: one binary holds the CPU and (with the `cuda` feature) the
//! CUDA device, and every tensor, tape and gradient store says which one it lives on.
//!
//! dfdx types the device statically (`Tensor<S, E, D, T>`). The engine keeps its public types
//! device-free by storing the dfdx value in an enum with one variant per compiled device
//! ([`Store`], [`Tapes`], [`GradStore`]) and by writing each op once, in a macro body that
//! [`on_dev!`] expands once per device with `D` naming that device's dfdx type. The [`Dv`]
//! trait maps between the enums and the typed values; a tensor of another device is an error
//! (never a panic).
//!
//! Transfers between host memory and the device are counted per thread ([`transfers`]): a
//! training step should move its batch in and its loss out, nothing else.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dfdx::prelude::*;

use super::{EngineError, Result};

pub(crate) type CpuDev = dfdx::tensor::Cpu;
#[cfg(feature = "cuda")]
pub(crate) type CudaDev = dfdx::tensor::Cuda;

/// A 2-D dfdx tensor on device `D` with tape `T`.
pub(crate) type TD<D, T = NoneTape> = dfdx::tensor::Tensor<(usize, usize), f32, D, T>;

/// The device of an engine. CUDA keeps its ordinal (dfdx does not expose it).
#[derive(Clone, Debug)]
pub(crate) enum Dev {
    Cpu(CpuDev),
    #[cfg(feature = "cuda")]
    Cuda(CudaDev, usize),
}

/// Which variant a [`Dev`] or [`Store`] is (a `Copy` tag, so dispatch borrows nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DevTag {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda,
}

impl DevTag {
    pub(crate) fn name(self) -> &'static str {
        match self {
            DevTag::Cpu => "the CPU",
            #[cfg(feature = "cuda")]
            DevTag::Cuda => "CUDA",
        }
    }
}

impl Dev {
    pub(crate) fn tag(&self) -> DevTag {
        match self {
            Dev::Cpu(_) => DevTag::Cpu,
            #[cfg(feature = "cuda")]
            Dev::Cuda(..) => DevTag::Cuda,
        }
    }
}

/// A tensor's values on its device.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    Cpu(TD<CpuDev>),
    #[cfg(feature = "cuda")]
    Cuda(TD<CudaDev>),
}

impl From<TD<CpuDev>> for Store {
    fn from(t: TD<CpuDev>) -> Store {
        Store::Cpu(t)
    }
}

#[cfg(feature = "cuda")]
impl From<TD<CudaDev>> for Store {
    fn from(t: TD<CudaDev>) -> Store {
        Store::Cuda(t)
    }
}

impl Store {
    pub(crate) fn tag(&self) -> DevTag {
        match self {
            Store::Cpu(_) => DevTag::Cpu,
            #[cfg(feature = "cuda")]
            Store::Cuda(_) => DevTag::Cuda,
        }
    }
    pub(crate) fn shape(&self) -> (usize, usize) {
        match self {
            Store::Cpu(t) => *t.shape(),
            #[cfg(feature = "cuda")]
            Store::Cuda(t) => *t.shape(),
        }
    }
    /// The values, row-major (one contiguous copy; engine tensors are always contiguous).
    pub(crate) fn read(&self) -> Vec<f32> {
        let (r, c) = self.shape();
        let mut v = vec![0f32; r * c];
        match self {
            Store::Cpu(t) => t.copy_into(&mut v),
            #[cfg(feature = "cuda")]
            Store::Cuda(t) => t.copy_into(&mut v),
        }
        v
    }
}

/// The accumulated tape of a graph.
pub(crate) enum Tapes {
    Cpu(OwnedTape<f32, CpuDev>),
    #[cfg(feature = "cuda")]
    Cuda(OwnedTape<f32, CudaDev>),
}

/// Gradients from backward.
pub(crate) enum GradStore {
    Cpu(Gradients<f32, CpuDev>),
    #[cfg(feature = "cuda")]
    Cuda(Gradients<f32, CudaDev>),
}

/// One compiled device: the typed side of the enums above.
pub(crate) trait Dv: Device<f32> + Clone + std::fmt::Debug + 'static {
    const TAG: DevTag;
    fn of(s: &Store) -> Option<&TD<Self>>;
    fn wrap(t: TD<Self>) -> Store;
    /// The typed device of `d`. Only called in a branch [`on_dev!`] chose from `d`'s tag.
    fn dev(d: &Dev) -> &Self;
    /// `acc` (a tape of this device, or none) merged with `t`.
    fn merge(acc: Option<Tapes>, t: OwnedTape<f32, Self>) -> Tapes;
    fn unwrap_tape(t: Tapes) -> Option<OwnedTape<f32, Self>>;
    fn wrap_grads(g: Gradients<f32, Self>) -> GradStore;
    fn of_idx(s: &IdxStore) -> Option<&Idx<Self>>;
    fn wrap_idx(t: Idx<Self>) -> IdxStore;
    fn grads(g: &mut GradStore) -> Option<&mut Gradients<f32, Self>>;
}

impl Dv for CpuDev {
    const TAG: DevTag = DevTag::Cpu;
    fn of(s: &Store) -> Option<&TD<Self>> {
        match s {
            Store::Cpu(t) => Some(t),
            #[cfg(feature = "cuda")]
            _ => None,
        }
    }
    fn wrap(t: TD<Self>) -> Store {
        Store::Cpu(t)
    }
    fn dev(d: &Dev) -> &Self {
        match d {
            Dev::Cpu(d) => d,
            #[cfg(feature = "cuda")]
            _ => unreachable!("on_dev! dispatched on this device's tag"),
        }
    }
    fn merge(acc: Option<Tapes>, t: OwnedTape<f32, Self>) -> Tapes {
        match acc {
            Some(Tapes::Cpu(a)) => Tapes::Cpu(a.merge(t)),
            _ => Tapes::Cpu(t),
        }
    }
    fn unwrap_tape(t: Tapes) -> Option<OwnedTape<f32, Self>> {
        match t {
            Tapes::Cpu(t) => Some(t),
            #[cfg(feature = "cuda")]
            _ => None,
        }
    }
    fn wrap_grads(g: Gradients<f32, Self>) -> GradStore {
        GradStore::Cpu(g)
    }
    fn of_idx(s: &IdxStore) -> Option<&Idx<Self>> {
        match s {
            IdxStore::Cpu(t) => Some(t),
            #[cfg(feature = "cuda")]
            _ => None,
        }
    }
    fn wrap_idx(t: Idx<Self>) -> IdxStore {
        IdxStore::Cpu(t)
    }
    fn grads(g: &mut GradStore) -> Option<&mut Gradients<f32, Self>> {
        match g {
            GradStore::Cpu(g) => Some(g),
            #[cfg(feature = "cuda")]
            _ => None,
        }
    }
}

#[cfg(feature = "cuda")]
impl Dv for CudaDev {
    const TAG: DevTag = DevTag::Cuda;
    fn of(s: &Store) -> Option<&TD<Self>> {
        match s {
            Store::Cuda(t) => Some(t),
            _ => None,
        }
    }
    fn wrap(t: TD<Self>) -> Store {
        Store::Cuda(t)
    }
    fn dev(d: &Dev) -> &Self {
        match d {
            Dev::Cuda(d, _) => d,
            _ => unreachable!("on_dev! dispatched on this device's tag"),
        }
    }
    fn merge(acc: Option<Tapes>, t: OwnedTape<f32, Self>) -> Tapes {
        match acc {
            Some(Tapes::Cuda(a)) => Tapes::Cuda(a.merge(t)),
            _ => Tapes::Cuda(t),
        }
    }
    fn unwrap_tape(t: Tapes) -> Option<OwnedTape<f32, Self>> {
        match t {
            Tapes::Cuda(t) => Some(t),
            _ => None,
        }
    }
    fn wrap_grads(g: Gradients<f32, Self>) -> GradStore {
        GradStore::Cuda(g)
    }
    fn of_idx(s: &IdxStore) -> Option<&Idx<Self>> {
        match s {
            IdxStore::Cuda(t) => Some(t),
            _ => None,
        }
    }
    fn wrap_idx(t: Idx<Self>) -> IdxStore {
        IdxStore::Cuda(t)
    }
    fn grads(g: &mut GradStore) -> Option<&mut Gradients<f32, Self>> {
        match g {
            GradStore::Cuda(g) => Some(g),
            _ => None,
        }
    }
}

/// Host values moved onto device `D` (the one path by which the generic ops upload).
pub(crate) fn upload<D: Dv>(dev: &D, v: Vec<f32>, shape: (usize, usize)) -> TD<D> {
    dev.tensor_from_vec(v, shape)
}

// ---------------------------------------------------------------------------- transfers

thread_local! {
    static COUNTS: Cell<Transfers> = const { Cell::new(Transfers { to_device: 0, to_host: 0 }) };
}

/// Host↔device transfers made on the calling thread since it started: tensors created from
/// host values (batches, parameters loaded, constants on first use) and values read back
/// (`Tensor::to_vec`, losses, metrics). The CPU fast path's own host buffers are not
/// transfers (its device memory is host memory); the generic path counts the same events a
/// GPU would make.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    pub to_device: u64,
    pub to_host: u64,
}

/// The calling thread's transfer counts so far (take two and subtract).
pub fn transfers() -> Transfers {
    COUNTS.with(|c| c.get())
}

pub(crate) fn count_to_device() {
    COUNTS.with(|c| {
        let mut t = c.get();
        t.to_device += 1;
        c.set(t)
    });
}

pub(crate) fn count_to_host() {
    COUNTS.with(|c| {
        let mut t = c.get();
        t.to_host += 1;
        c.set(t)
    });
}

impl std::ops::Sub for Transfers {
    type Output = Transfers;
    fn sub(self, o: Transfers) -> Transfers {
        Transfers {
            to_device: self.to_device - o.to_device,
            to_host: self.to_host - o.to_host,
        }
    }
}

// ---------------------------------------------------------------------------- constants

/// A 1-D index tensor on device `D` (gathers).
pub(crate) type Idx<D> = dfdx::tensor::Tensor<(usize,), usize, D>;

/// One cached constant.
#[derive(Clone, Debug)]
enum Const {
    Values(Store),
    Index(IdxStore),
    /// Host values (the fast path keeps its constants' host copies too).
    Host(Arc<Vec<f32>>),
}

#[derive(Clone, Debug)]
pub(crate) enum IdxStore {
    Cpu(Idx<CpuDev>),
    #[cfg(feature = "cuda")]
    Cuda(Idx<CudaDev>),
}

/// Per-engine constants, by a key naming what they are and their shape: index tensors and
/// identity matrices of the generic path, uploaded once (and counted once).
#[derive(Clone, Debug, Default)]
pub(crate) struct Consts(Arc<Mutex<HashMap<String, Const>>>);

impl Consts {
    /// The constant under `key` that `find` accepts, or `make`'s (stored; counted as an
    /// upload when `upload`).
    fn get_or(
        &self,
        key: String,
        find: impl Fn(&Const) -> bool,
        make: impl FnOnce() -> Const,
        upload: bool,
    ) -> Const {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = m.get(&key).filter(|v| find(v)) {
            return v.clone();
        }
        if upload {
            count_to_device();
        }
        let v = make();
        // Bounded: keys that change every step (indices drawn per batch) must not grow it.
        if m.len() >= 512 {
            m.clear();
        }
        m.insert(key, v.clone());
        v
    }

    /// The values constant under `key`, built by `make` (and counted) on first use.
    pub(crate) fn values<D: Dv>(&self, key: String, make: impl FnOnce() -> TD<D>) -> TD<D> {
        let is = |c: &Const| matches!(c, Const::Values(s) if D::of(s).is_some());
        match self.get_or(key, is, || Const::Values(D::wrap(make())), true) {
            Const::Values(s) => D::of(&s).expect("checked above").clone(),
            _ => unreachable!("checked above"),
        }
    }

    /// Host values under `key`, built by `make` on first use (not a transfer).
    pub(crate) fn host(&self, key: String, make: impl FnOnce() -> Vec<f32>) -> Arc<Vec<f32>> {
        let is = |c: &Const| matches!(c, Const::Host(_));
        match self.get_or(key, is, || Const::Host(Arc::new(make())), false) {
            Const::Host(v) => v,
            _ => unreachable!("checked above"),
        }
    }

    /// The index constant under `key`, built by `make` (and counted) on first use.
    pub(crate) fn index<D: Dv>(&self, key: String, make: impl FnOnce() -> Idx<D>) -> Idx<D> {
        let is = |c: &Const| matches!(c, Const::Index(s) if D::of_idx(s).is_some());
        match self.get_or(key, is, || Const::Index(D::wrap_idx(make())), true) {
            Const::Index(s) => D::of_idx(&s).expect("checked above").clone(),
            _ => unreachable!("checked above"),
        }
    }
}

// ---------------------------------------------------------------------------- CUDA

/// Open CUDA device `n`: probe for the driver first (cudarc panics when the library is
/// missing), check the ordinal exists, then build dfdx's device on it.
#[cfg(feature = "cuda")]
pub(crate) fn open_cuda(n: usize) -> Result<Dev> {
    let ok = std::panic::catch_unwind(|| cudarc::driver::result::init().is_ok()).unwrap_or(false);
    if !ok {
        return Err(EngineError::Device(
            "the CUDA driver did not start on this machine (no NVIDIA GPU or driver); use \
             `--device cpu`"
                .into(),
        ));
    }
    let count = std::panic::catch_unwind(cudarc::driver::result::device::get_count)
        .map_err(|_| EngineError::Device("the CUDA driver failed to count devices".into()))?
        .map_err(|e| {
            EngineError::Device(format!("the CUDA driver failed to count devices: {e:?}"))
        })?;
    if n >= count.max(0) as usize {
        return Err(EngineError::Device(format!(
            "`--device cuda:{n}` asks for CUDA device {n}, but this machine has {count} \
             (cuda:0 … cuda:{})",
            (count - 1).max(0)
        )));
    }
    let dev = std::panic::catch_unwind(|| CudaDev::try_build(n, 0))
        .map_err(|_| EngineError::Device(format!("opening CUDA device {n} panicked in cudarc")))?
        .map_err(|e| EngineError::Device(format!("opening CUDA device {n}: {e:?}")))?;
    Ok(Dev::Cuda(dev, n))
}

#[cfg(not(feature = "cuda"))]
pub(crate) fn open_cuda(_n: usize) -> Result<Dev> {
    Err(EngineError::Device(
        "this pretext was built without CUDA support (cargo feature `cuda`); use `--device cpu`"
            .into(),
    ))
}
