//! [`Graph`]: records tensor ops on one accumulator tape and runs backward.
//!
//! Every op checks shapes first (dfdx asserts on mismatches) and returns an [`EngineError`].
//! Tensors are 2-D; binary ops broadcast a size-1 dimension (numpy rules on two axes);
//! reductions keep the reduced axis with size 1.

use dfdx::prelude::*;

use super::device::{Consts, GradStore, Tapes};
use super::{shape_err, Dev, Dv, EngineError, Result, Store, Tensor, TD};

/// Below this many output values an element-wise op stays with dfdx on the calling thread:
/// handing it to the thread pool would cost more than it saves.
const HOST_MIN: usize = 1 << 14;

/// Records ops for autodiff (or only computes, when built without gradients).
pub struct Graph {
    pub(crate) dev: Dev,
    /// The CPU fast path is on (see [`Graph::fast`]).
    pub(crate) fast: bool,
    /// The engine's constants (shared by every graph of one engine).
    pub(crate) consts: Consts,
    pub(crate) tape: Option<Tapes>,
    /// Randomness of ops such as dropout: `(seed, draws so far)`; deterministic given the seed
    /// and the order of ops.
    pub(crate) rng: (u64, u64),
    /// Gradients of the CPU fast path's outputs (see `host::Graph::record_host`).
    pub(crate) host_grads: super::host::HostGrads,
    /// The engine's process group (batch-norm statistics, [`Graph::all_gather_rows`]).
    pub(crate) group: Option<super::dist::Group>,
}

/// Gradients from [`Graph::backward`].
pub struct Grads {
    pub(crate) grads: GradStore,
    pub(crate) dev: Dev,
    fast: bool,
}

impl Grads {
    /// The gradient of `t`, moved out of the gradient store (zeros when `t` did not influence
    /// the loss). A second `take` or `get` of the same tensor sees zeros.
    pub fn take(&mut self, t: &Tensor) -> Tensor {
        if let (true, GradStore::Cpu(grads), Store::Cpu(tt)) = (self.fast, &mut self.grads, &t.t) {
            let (r, c) = t.shape();
            let dev = tt.device().clone();
            if let Ok(buf) = grads.get_or_alloc_mut(tt) {
                let v = std::mem::take(&mut **buf);
                if v.len() == r * c {
                    // With its host copy: the norm and the optimiser read it next.
                    return super::host::with_host(&dev, v, r, c);
                }
            }
            return Tensor::new(dev.zeros_like(&(r, c)));
        }
        self.get(t)
    }

    /// The gradient of `t` (zeros when `t` did not influence the loss, or lives on another
    /// device than the loss).
    pub fn get(&mut self, t: &Tensor) -> Tensor {
        on_dev!(self.dev.tag(), D => {
            let grads = D::grads(&mut self.grads).expect("the tag names this store");
            match t.get::<D>() {
                Ok(tt) => {
                    // Allocates zeros for tensors the loss does not depend on.
                    let _ = grads.get_or_alloc_mut(tt);
                    Tensor::new(D::wrap(grads.get(tt)))
                }
                Err(_) => {
                    let z: TD<D> = D::dev(&self.dev).zeros_like(&t.shape());
                    Tensor::new(D::wrap(z))
                }
            }
        })
    }
}

fn bcast<D: Dv, T: Tape<f32, D>>(x: TD<D, T>, to: (usize, usize)) -> TD<D, T> {
    let (r, c) = *x.shape();
    if (r, c) == to {
        x
    } else if r == 1 && c == 1 {
        x.reshape_like(&()).broadcast_like::<_, Axes2<0, 1>>(&to)
    } else if r == 1 {
        x.reshape_like(&(c,)).broadcast_like::<_, Axis<0>>(&to)
    } else {
        x.reshape_like(&(r,)).broadcast_like::<_, Axis<1>>(&to)
    }
}

fn broadcast_shape(
    op: &'static str,
    a: (usize, usize),
    b: (usize, usize),
) -> Result<(usize, usize)> {
    let dim = |x: usize, y: usize| -> Option<usize> {
        if x == y || y == 1 {
            Some(x)
        } else if x == 1 {
            Some(y)
        } else {
            None
        }
    };
    match (dim(a.0, b.0), dim(a.1, b.1)) {
        (Some(r), Some(c)) => Ok((r, c)),
        _ => Err(shape_err(
            op,
            format!("cannot broadcast {}x{} with {}x{}", a.0, a.1, b.0, b.1),
        )),
    }
}

/// Which axis a reduction or normalisation runs along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis2 {
    /// Over rows (result has one row).
    Rows,
    /// Over columns (result has one column).
    Cols,
    /// Over everything (result is `(1, 1)`).
    All,
}

impl Axis2 {
    pub fn from_raw(axis: i32) -> Option<Axis2> {
        match axis {
            0 => Some(Axis2::Rows),
            1 => Some(Axis2::Cols),
            -1 => Some(Axis2::All),
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
enum Red {
    Sum,
    Mean,
    Max,
    LogSumExp,
}

fn reduce<D: Dv, T: Tape<f32, D>>(x: TD<D, T>, how: Red, axis: Axis2) -> TD<D, T> {
    let (r, c) = *x.shape();
    match axis {
        Axis2::Rows => {
            let y: dfdx::tensor::Tensor<(usize,), f32, D, T> = match how {
                Red::Sum => x.sum::<_, Axis<0>>(),
                Red::Mean => x.mean::<_, Axis<0>>(),
                Red::Max => x.max::<_, Axis<0>>(),
                Red::LogSumExp => x.logsumexp::<_, Axis<0>>(),
            };
            y.reshape_like(&(1, c))
        }
        Axis2::Cols => {
            let y: dfdx::tensor::Tensor<(usize,), f32, D, T> = match how {
                Red::Sum => x.sum::<_, Axis<1>>(),
                Red::Mean => x.mean::<_, Axis<1>>(),
                Red::Max => x.max::<_, Axis<1>>(),
                Red::LogSumExp => x.logsumexp::<_, Axis<1>>(),
            };
            y.reshape_like(&(r, 1))
        }
        Axis2::All => {
            let y: dfdx::tensor::Tensor<(), f32, D, T> = match how {
                Red::Sum => x.sum::<(), Axes2<0, 1>>(),
                Red::Mean => x.mean::<(), Axes2<0, 1>>(),
                Red::Max => x.max::<(), Axes2<0, 1>>(),
                Red::LogSumExp => x.logsumexp::<(), Axes2<0, 1>>(),
            };
            y.reshape_like(&(1, 1))
        }
    }
}

impl Graph {
    pub(crate) fn new(e: &super::Engine, grad: bool) -> Graph {
        let tape =
            grad.then(|| on_dev!(e.dev.tag(), D => D::merge(None, OwnedTape::<f32, D>::default())));
        Graph {
            dev: e.dev.clone(),
            fast: e.fast,
            consts: e.consts.clone(),
            tape,
            rng: (0, 0),
            host_grads: Default::default(),
            group: e.group.clone(),
        }
    }

    /// Whether the CPU fast path runs an op on `inputs`: the engine has it on and every input
    /// is on the CPU (a tensor of another device goes to the generic path, which reports it).
    pub(crate) fn fast(&self, inputs: &[&Tensor]) -> bool {
        self.fast && inputs.iter().all(|t| matches!(t.t, Store::Cpu(_)))
    }

    /// The CPU device (the fast path's ops only run where [`Graph::fast`] said yes).
    pub(crate) fn cpu(&self) -> &super::device::CpuDev {
        match &self.dev {
            Dev::Cpu(d) => d,
            #[cfg(feature = "cuda")]
            _ => unreachable!("the CPU fast path runs on CPU engines only"),
        }
    }

    /// Seed the randomness of this graph's random ops (dropout).
    pub fn set_seed(&mut self, seed: u64) {
        self.rng = (seed, 0);
    }

    /// Inverted dropout: each element is zeroed with probability `p` and the others scaled
    /// by `1 / (1 - p)`; the mask comes from the graph's seed and the op's position.
    pub fn dropout(&mut self, x: &Tensor, p: f32) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        if p >= 1.0 {
            return Err(shape_err(
                "dropout",
                format!("probability {p} must be below 1"),
            ));
        }
        let (r, c) = x.shape();
        self.rng.1 += 1;
        let mut state = self.rng.0 ^ self.rng.1.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f32> = (0..r * c)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let u = (z >> 40) as f32 / (1u64 << 24) as f32;
                if u < p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        let m = self.host_tensor(mask, r, c);
        self.mul(x, &m)
    }

    /// A tensor on the graph's device from row-major host values (shape checked by callers).
    /// Off the fast path this is an upload, and counted.
    pub(crate) fn host_tensor(&self, v: Vec<f32>, rows: usize, cols: usize) -> Tensor {
        if !self.fast {
            super::device::count_to_device();
        }
        on_dev!(self.dev.tag(), D => {
            Tensor::new(D::wrap(super::device::upload(D::dev(&self.dev), v, (rows, cols))))
        })
    }

    /// An engine constant (built by `make` from host values once per engine and `key`).
    pub(crate) fn constant(
        &self,
        key: String,
        rows: usize,
        cols: usize,
        make: impl FnOnce() -> Vec<f32>,
    ) -> Tensor {
        on_dev!(self.dev.tag(), D => {
            let dev = D::dev(&self.dev);
            let t: TD<D> = self.consts.values(key, || {
                super::device::upload(dev, make(), (rows, cols))
            });
            Tensor::new(D::wrap(t))
        })
    }

    pub(crate) fn tape_mut(&mut self) -> Option<&mut OwnedTape<f32, super::device::CpuDev>> {
        match self.tape.as_mut() {
            Some(Tapes::Cpu(t)) => Some(t),
            #[cfg(feature = "cuda")]
            _ => None,
            #[cfg(not(feature = "cuda"))]
            None => None,
        }
    }

    /// Whether ops are being recorded for backward.
    pub fn records(&self) -> bool {
        self.tape.is_some()
    }

    pub(crate) fn absorb<D: Dv>(&mut self, y: TD<D, OwnedTape<f32, D>>) -> Tensor {
        let (t, tape) = y.split_tape();
        self.tape = Some(D::merge(self.tape.take(), tape));
        Tensor::new(D::wrap(t))
    }

    /// Record a custom op of the CPU fast path: `out` was computed from the inputs on the
    /// host; `backward` gets the output gradient (row-major) and returns one gradient per
    /// input (or `None`). Only for ops that [`Graph::fast`] sent to the fast path.
    pub(crate) fn custom(
        &mut self,
        inputs: &[&Tensor],
        out: Tensor,
        backward: impl FnOnce(Vec<f32>) -> Vec<Option<Vec<f32>>> + 'static,
    ) -> Tensor {
        #[allow(clippy::infallible_destructuring_match)]
        let out = match out.t {
            Store::Cpu(t) => t,
            #[cfg(feature = "cuda")]
            _ => unreachable!("custom ops run on the CPU fast path only"),
        };
        // The gradient buffers are borrowed in place (see `host.rs`).
        self.record_host(inputs, out, move |g_out, slots| {
            for (slot, g) in slots.iter_mut().zip(backward(g_out.to_vec())) {
                if let (Some(dst), Some(g)) = (slot.as_deref_mut(), g) {
                    super::host::add_assign(dst, &g);
                }
            }
        })
    }

    /// Rows of `x` at `idx()` (a row may repeat), as one device gather; the backward adds
    /// each output row's gradient into its source row. With a `key` the index tensor is an
    /// engine constant (uploaded once); without, it is uploaded (and counted) each call.
    pub(crate) fn gather_rows(
        &mut self,
        x: &Tensor,
        key: Option<String>,
        idx: impl FnOnce() -> Vec<usize>,
    ) -> Result<Tensor> {
        let c = x.shape().1;
        on_dev!(self.dev.tag(), D => {
            let dev = D::dev(&self.dev).clone();
            let upload = |v: Vec<usize>| -> dfdx::tensor::Tensor<(usize,), usize, D> {
                let n = v.len();
                dev.tensor_from_vec(v, (n,))
            };
            let idx = match key {
                Some(k) => self.consts.index(k, || upload(idx())),
                None => {
                    super::device::count_to_device();
                    upload(idx())
                }
            };
            let n = idx.shape().0;
            if self.tape.is_some() {
                super::host::mark_dfdx(x);
                let xt = x.get::<D>()?.clone().retaped::<OwnedTape<f32, D>>();
                let y: TD<D, OwnedTape<f32, D>> = xt.gather(idx).reshape_like(&(n, c));
                Ok(self.absorb::<D>(y))
            } else {
                let y: TD<D> = x.get::<D>()?.clone().gather(idx).reshape_like(&(n, c));
                Ok(Tensor::new(D::wrap(y)))
            }
        })
    }

    /// `(B, G·C)` → `(B, C)`: the mean over each row's `G` groups of `C` values.
    pub(crate) fn mean_groups_generic(
        &mut self,
        x: &Tensor,
        b: usize,
        groups: usize,
        c: usize,
    ) -> Result<Tensor> {
        record!(
            self,
            [x],
            x.reshape_like(&(b, groups, c))
                .mean::<(usize, usize), Axis<1>>()
                .reshape_like(&(b, c))
        )
    }

    // ------------------------------------------------------------------ elementwise

    pub fn add(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let s = broadcast_shape("add", a.shape(), b.shape())?;
        if self.fast(&[a, b]) && a.shape() == b.shape() {
            return Ok(self.host_add(a, b));
        }
        if self.fast(&[a, b]) && s.0 * s.1 >= HOST_MIN {
            return Ok(self.host_binary(a, b, super::host_ops::BinOp::Add, s));
        }
        record!(self, [a, b], bcast(a, s) + bcast(b, s))
    }
    pub fn sub(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let s = broadcast_shape("sub", a.shape(), b.shape())?;
        if self.fast(&[a, b]) && s.0 * s.1 >= HOST_MIN {
            return Ok(self.host_binary(a, b, super::host_ops::BinOp::Sub, s));
        }
        record!(self, [a, b], bcast(a, s) - bcast(b, s))
    }
    pub fn mul(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let s = broadcast_shape("mul", a.shape(), b.shape())?;
        if self.fast(&[a, b]) && s.0 * s.1 >= HOST_MIN {
            return Ok(self.host_binary(a, b, super::host_ops::BinOp::Mul, s));
        }
        record!(self, [a, b], bcast(a, s) * bcast(b, s))
    }
    pub fn div(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let s = broadcast_shape("div", a.shape(), b.shape())?;
        if self.fast(&[a, b]) && s.0 * s.1 >= HOST_MIN {
            return Ok(self.host_binary(a, b, super::host_ops::BinOp::Div, s));
        }
        record!(self, [a, b], bcast(a, s) / bcast(b, s))
    }
    pub fn add_scalar(&mut self, a: &Tensor, s: f32) -> Result<Tensor> {
        if self.fast(&[a]) && a.len() >= HOST_MIN {
            return Ok(self.host_affine(a, 1.0, s));
        }
        record!(self, [a], a + s)
    }
    pub fn mul_scalar(&mut self, a: &Tensor, s: f32) -> Result<Tensor> {
        if self.fast(&[a]) && a.len() >= HOST_MIN {
            return Ok(self.host_affine(a, s, 0.0));
        }
        record!(self, [a], a * s)
    }
    pub fn powf(&mut self, a: &Tensor, p: f32) -> Result<Tensor> {
        record!(self, [a], a.powf(p))
    }
    pub fn clamp(&mut self, a: &Tensor, lo: f32, hi: f32) -> Result<Tensor> {
        record!(self, [a], a.clamp(lo, hi))
    }
    pub fn neg(&mut self, a: &Tensor) -> Result<Tensor> {
        if self.fast(&[a]) && a.len() >= HOST_MIN {
            return Ok(self.host_affine(a, -1.0, 0.0));
        }
        record!(self, [a], -a)
    }
    pub fn exp(&mut self, a: &Tensor) -> Result<Tensor> {
        record!(self, [a], a.exp())
    }
    pub fn ln(&mut self, a: &Tensor) -> Result<Tensor> {
        record!(self, [a], a.ln())
    }
    pub fn sqrt(&mut self, a: &Tensor) -> Result<Tensor> {
        record!(self, [a], a.sqrt())
    }
    pub fn abs(&mut self, a: &Tensor) -> Result<Tensor> {
        record!(self, [a], a.abs())
    }
    pub fn relu(&mut self, a: &Tensor) -> Result<Tensor> {
        if self.fast(&[a]) {
            return Ok(self.host_relu(a));
        }
        record!(self, [a], a.relu())
    }
    /// GELU (tanh approximation).
    pub fn gelu(&mut self, a: &Tensor) -> Result<Tensor> {
        if self.fast(&[a]) {
            return Ok(self.host_gelu(a));
        }
        record!(self, [a], a.fast_gelu())
    }
    pub fn square(&mut self, a: &Tensor) -> Result<Tensor> {
        record!(self, [a], a.square())
    }
    /// Stop-gradient: same values, a new identity, nothing recorded.
    pub fn detach(&mut self, a: &Tensor) -> Result<Tensor> {
        Ok(a.detached())
    }

    // ------------------------------------------------------------------ matrices

    pub fn matmul(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let ((m, k), (k2, n)) = (a.shape(), b.shape());
        if k != k2 {
            return Err(shape_err("matmul", format!("{m}x{k} times {k2}x{n}")));
        }
        if self.fast(&[a, b]) {
            return Ok(self.host_matmul(a, b));
        }
        record!(self, [a, b], a.matmul(b))
    }

    /// `x W + b` (`b` is `(1, n)`): one fused op on the CPU.
    pub fn linear(&mut self, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let ((m, k), (k2, n)) = (x.shape(), w.shape());
        if k != k2 || b.shape() != (1, n) {
            return Err(shape_err(
                "linear",
                format!("{m}x{k} times {k2}x{n} plus bias {:?}", b.shape()),
            ));
        }
        if self.fast(&[x, w, b]) {
            return Ok(self.host_linear(x, w, b));
        }
        let y = self.matmul(x, w)?;
        self.add(&y, b)
    }

    /// Layer norm of each row followed by the affine `· gamma + beta` (`(1, D)` each).
    pub fn layer_norm(
        &mut self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f32,
    ) -> Result<Tensor> {
        let (_, d) = x.shape();
        if gamma.shape() != (1, d) || beta.shape() != (1, d) {
            return Err(shape_err(
                "layer_norm",
                format!(
                    "rows of {d} with scale {:?} and shift {:?}",
                    gamma.shape(),
                    beta.shape()
                ),
            ));
        }
        if self.fast(&[x, gamma, beta]) {
            return Ok(self.host_layer_norm(x, gamma, beta, eps));
        }
        let n = self.layer_norm_rows(x, eps)?;
        let n = self.mul(&n, gamma)?;
        self.add(&n, beta)
    }

    /// The same values, row-major, as a `rows × cols` tensor.
    pub fn reshape(&mut self, a: &Tensor, rows: usize, cols: usize) -> Result<Tensor> {
        if rows * cols != a.len() {
            return Err(shape_err(
                "reshape",
                format!("{:?} into {rows}x{cols}", a.shape()),
            ));
        }
        let mut y = record!(self, [a], a.reshape_like(&(rows, cols)))?;
        // Same values, same row-major order: the host copy stays valid.
        y.host = a.host.clone();
        Ok(y)
    }

    pub fn transpose(&mut self, a: &Tensor) -> Result<Tensor> {
        let (r, c) = a.shape();
        if self.fast(&[a]) && a.len() >= HOST_MIN {
            return Ok(self.host_transpose(a));
        }
        // Materialise the transpose so later ops see contiguous memory.
        record!(
            self,
            [a],
            a.permute::<_, Axes2<1, 0>>().reshape_like(&(c, r))
        )
    }

    /// Rows (`Axis2::Rows`) or columns `start..end`.
    pub fn slice(&mut self, a: &Tensor, axis: Axis2, start: usize, end: usize) -> Result<Tensor> {
        let (r, c) = a.shape();
        let limit = if axis == Axis2::Rows { r } else { c };
        if start >= end || end > limit || axis == Axis2::All {
            return Err(shape_err(
                "slice",
                format!("range {start}..{end} of {r}x{c} along {axis:?}"),
            ));
        }
        match axis {
            Axis2::Rows => record!(
                self,
                [a],
                a.slice((start..end, ..)).reshape_like(&(end - start, c))
            ),
            _ => record!(
                self,
                [a],
                a.slice((.., start..end)).reshape_like(&(r, end - start))
            ),
        }
    }

    /// Stack along rows (`Axis2::Rows`) or columns.
    pub fn concat(&mut self, a: &Tensor, b: &Tensor, axis: Axis2) -> Result<Tensor> {
        let ((ra, ca), (rb, cb)) = (a.shape(), b.shape());
        match axis {
            Axis2::Rows if ca == cb => {
                record!(
                    self,
                    [a, b],
                    (a, b).concat_along(Axis::<0>).reshape_like(&(ra + rb, ca))
                )
            }
            Axis2::Cols if ra == rb => {
                record!(
                    self,
                    [a, b],
                    (a, b).concat_along(Axis::<1>).reshape_like(&(ra, ca + cb))
                )
            }
            _ => Err(shape_err(
                "concat",
                format!("{ra}x{ca} with {rb}x{cb} along {axis:?}"),
            )),
        }
    }

    // ------------------------------------------------------------------ reductions

    pub fn sum(&mut self, a: &Tensor, axis: Axis2) -> Result<Tensor> {
        record!(self, [a], reduce(a, Red::Sum, axis))
    }
    pub fn mean(&mut self, a: &Tensor, axis: Axis2) -> Result<Tensor> {
        record!(self, [a], reduce(a, Red::Mean, axis))
    }
    pub fn max(&mut self, a: &Tensor, axis: Axis2) -> Result<Tensor> {
        record!(self, [a], reduce(a, Red::Max, axis))
    }
    pub fn logsumexp(&mut self, a: &Tensor, axis: Axis2) -> Result<Tensor> {
        record!(self, [a], reduce(a, Red::LogSumExp, axis))
    }

    /// `x - logsumexp(x)` along `axis`.
    pub fn log_softmax(&mut self, a: &Tensor, axis: Axis2) -> Result<Tensor> {
        let lse = self.logsumexp(a, axis)?;
        self.sub(a, &lse)
    }

    pub fn softmax(&mut self, a: &Tensor, axis: Axis2) -> Result<Tensor> {
        let ls = self.log_softmax(a, axis)?;
        self.exp(&ls)
    }

    /// `x / max(||x||, eps)` along `axis`.
    pub fn l2_normalize(&mut self, a: &Tensor, axis: Axis2, eps: f32) -> Result<Tensor> {
        if self.fast(&[a]) && axis == Axis2::Cols {
            return Ok(self.host_l2_normalize_rows(a, eps));
        }
        let sq = self.square(a)?;
        let ss = self.sum(&sq, axis)?;
        let norm = self.sqrt(&ss)?;
        let norm = self.clamp(&norm, eps, f32::MAX)?;
        self.div(a, &norm)
    }

    /// Diagonal of a square matrix as an `(n, 1)` column.
    pub fn diag(&mut self, a: &Tensor) -> Result<Tensor> {
        let (r, c) = a.shape();
        if r != c {
            return Err(shape_err("diag", format!("{r}x{c} is not square")));
        }
        let eye = self.constant(format!("eye {r}"), r, r, || eye_values(r));
        let masked = self.mul(a, &eye)?;
        self.sum(&masked, Axis2::Cols)
    }

    /// Mean cross-entropy of `logits (n, c)` against class indices.
    pub fn cross_entropy(&mut self, logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
        let (n, c) = logits.shape();
        check_labels("cross_entropy", n, c, labels)?;
        if self.fast(&[logits]) {
            return Ok(self.host_cross_entropy(logits, labels));
        }
        let target = self.ce_target(n, c, labels);
        let logp = self.log_softmax(logits, Axis2::Cols)?;
        let weighted = self.mul(&logp, &target)?;
        self.sum(&weighted, Axis2::All)
    }

    /// The one-hot target of [`Graph::cross_entropy`], weighted `-1/n`: objectives ask with
    /// the same labels every step (the positives of a batch), so it is an engine constant
    /// keyed by the labels themselves (and shared with [`Graph::accuracy`]).
    fn ce_target(&self, n: usize, c: usize, labels: &[u32]) -> Tensor {
        let key = content_key(&format!("onehot {n}x{c}"), labels);
        self.constant(key, n, c, || {
            let mut onehot = vec![0f32; n * c];
            for (i, &l) in labels.iter().enumerate() {
                onehot[i * c + l as usize] = -1.0 / n as f32;
            }
            onehot
        })
    }

    /// Top-1 accuracy of `logits (n, c)` against class indices, as a `(1, 1)` tensor with no
    /// gradient (a metric), computed where the logits are: a row counts as correct when its
    /// label's logit is the row's maximum.
    pub fn accuracy(&mut self, logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
        let (n, c) = logits.shape();
        check_labels("accuracy", n, c, labels)?;
        if n == 0 {
            return Err(shape_err("accuracy", "no rows to score"));
        }
        if self.fast(&[logits]) {
            let v = super::host::vals(logits);
            let correct = v
                .chunks(c)
                .zip(labels)
                .filter(|(row, &l)| {
                    let best = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    row[l as usize] >= best
                })
                .count();
            let acc = correct as f32 / n as f32;
            return Ok(super::host::with_host(self.cpu(), vec![acc], 1, 1).as_input());
        }
        // The label's logit through the cross-entropy's one-hot constant (weighted -1/n, so
        // scaled back by -n): compared with the row maximum, with room for that rounding.
        let w = self.ce_target(n, c, labels);
        let x = logits.detached();
        on_dev!(self.dev.tag(), D => {
            let xt: TD<D> = x.get::<D>()?.clone();
            let wt: TD<D> = w.get::<D>()?.clone();
            let picked = (xt.clone() * wt).sum::<(usize,), Axis<1>>() * (-(n as f32));
            let best = xt.max::<(usize,), Axis<1>>();
            let tol = best.clone().abs() * 1e-5 + 1e-6;
            let ok = picked.ge(&(best - tol));
            let ones = picked_ones::<D>(D::dev(&self.dev), n);
            let zeros = ones.clone() * 0.0;
            let acc = ok.choose(ones, zeros).mean::<(), _>().reshape_like(&(1, 1));
            Ok(Tensor::new(D::wrap(acc)).as_input())
        })
    }

    // ------------------------------------------------------------------ backward

    /// Gradients of the scalar `loss` with respect to every tensor recorded on this graph.
    pub fn backward(self, loss: &Tensor) -> Result<Grads> {
        if loss.shape() != (1, 1) {
            return Err(shape_err(
                "backward",
                format!("loss must be 1x1, got {:?}", loss.shape()),
            ));
        }
        let Some(tape) = self.tape else {
            return Err(EngineError::Other(
                "backward on a graph built without gradients".into(),
            ));
        };
        // dfdx's backward starts at the loss: its gradient is in dfdx's store.
        super::host::mark_dfdx(loss);
        let dev = self.dev.clone();
        let fast = self.fast;
        on_dev!(dev.tag(), D => {
            let tape = D::unwrap_tape(tape).ok_or_else(|| {
                EngineError::Device("the loss is on another device than its graph".into())
            })?;
            let loss = loss.get::<D>()?.clone().put_tape(tape).sum::<(), _>();
            // dfdx asserts on internal invariants; never let that take the process down.
            let grads = crate::panic_guard::catch(|| loss.backward()).map_err(|m| {
                EngineError::Other(format!("internal engine error during backward: {m}"))
            })?;
            Ok(Grads {
                grads: D::wrap_grads(grads),
                dev,
                fast,
            })
        })
    }
}

/// One label per row, each a class index below `c`.
fn check_labels(op: &'static str, n: usize, c: usize, labels: &[u32]) -> Result<()> {
    if labels.len() != n {
        return Err(shape_err(
            op,
            format!("{} labels for {n} rows", labels.len()),
        ));
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= c) {
        return Err(shape_err(
            op,
            format!("label {bad} out of range for {c} classes"),
        ));
    }
    Ok(())
}

/// An engine-constant key for values derived from `content` (labels, indices, masks): `what`
/// and a hash of the content.
pub(crate) fn content_key<T: std::hash::Hash + ?Sized>(what: &str, content: &T) -> String {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut h);
    format!("{what} {:016x}", h.finish())
}

/// `n` ones on device `D`.
fn picked_ones<D: Dv>(dev: &D, n: usize) -> dfdx::tensor::Tensor<(usize,), f32, D> {
    dev.ones_like(&(n,))
}

/// The row-major values of the `n × n` identity.
pub(crate) fn eye_values(n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    v
}
