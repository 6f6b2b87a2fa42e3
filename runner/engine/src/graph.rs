//! [`Graph`]: records tensor ops on one accumulator tape and runs backward.
//!
//! Every op checks shapes first (dfdx asserts on mismatches) and returns an [`EngineError`].
//! Tensors are 2-D; binary ops broadcast a size-1 dimension (numpy rules on two axes);
//! reductions keep the reduced axis with size 1.

use dfdx::prelude::*;

use super::{shape_err, Dev, EngineError, Result, Tensor, OT, T2};

type TT<T> = dfdx::tensor::Tensor<(usize, usize), f32, Dev, T>;

/// Below this many output values an element-wise op stays with dfdx on the calling thread:
/// handing it to the thread pool would cost more than it saves.
#[cfg(not(feature = "cuda"))]
const HOST_MIN: usize = 1 << 14;

/// Records ops for autodiff (or only computes, when built without gradients).
pub struct Graph {
    pub(crate) dev: Dev,
    tape: Option<OT>,
    /// Randomness of ops such as dropout: `(seed, draws so far)`; deterministic given the seed
    /// and the order of ops.
    rng: (u64, u64),
    /// Gradients of the CPU fast path's outputs (see `host::Graph::record_host`).
    #[cfg_attr(feature = "cuda", allow(dead_code))]
    pub(crate) host_grads: super::host::HostGrads,
}

/// Gradients from [`Graph::backward`].
pub struct Grads {
    grads: dfdx::tensor::Gradients<f32, Dev>,
    #[cfg_attr(feature = "cuda", allow(dead_code))]
    dev: Dev,
}

impl Grads {
    /// The gradient of `t`, moved out of the gradient store (zeros when `t` did not influence
    /// the loss). A second `take` or `get` of the same tensor sees zeros.
    pub fn take(&mut self, t: &Tensor) -> Tensor {
        #[cfg(not(feature = "cuda"))]
        {
            let (r, c) = t.shape();
            match self.grads.get_or_alloc_mut(&t.t) {
                Ok(buf) => {
                    let v = std::mem::take(&mut **buf);
                    if v.len() == r * c {
                        // With its host copy: the norm and the optimiser read it next.
                        return super::host::with_host(&self.dev, v, r, c);
                    }
                    return Tensor::new(self.dev.zeros_like(&(r, c)));
                }
                Err(_) => return Tensor::new(self.dev.zeros_like(&(r, c))),
            }
        }
        #[allow(unreachable_code)]
        self.get(t)
    }

    /// The gradient of `t` (zeros when `t` did not influence the loss).
    pub fn get(&mut self, t: &Tensor) -> Tensor {
        // Allocates zeros for tensors the loss does not depend on.
        let _ = self.grads.get_or_alloc_mut(&t.t);
        Tensor::new(self.grads.get(&t.t))
    }
}

/// Runs `$body` on the named tensors, re-taped when recording, and absorbs the output's tape.
macro_rules! record {
    ($g:expr, [$($x:ident),*], $body:expr) => {{
        if $g.tape.is_some() {
            $( super::host::mark_dfdx($x); let $x = $x.t.retaped::<OT>(); )*
            let y = $body;
            Ok($g.absorb(y))
        } else {
            $( let $x = $x.t.clone(); )*
            Ok(Tensor::new($body))
        }
    }};
}

fn bcast<T: Tape<f32, Dev>>(x: TT<T>, to: (usize, usize)) -> TT<T> {
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

fn reduce<T: Tape<f32, Dev>>(x: TT<T>, how: Red, axis: Axis2) -> TT<T> {
    let (r, c) = *x.shape();
    match axis {
        Axis2::Rows => {
            let y: dfdx::tensor::Tensor<(usize,), f32, Dev, T> = match how {
                Red::Sum => x.sum::<_, Axis<0>>(),
                Red::Mean => x.mean::<_, Axis<0>>(),
                Red::Max => x.max::<_, Axis<0>>(),
                Red::LogSumExp => x.logsumexp::<_, Axis<0>>(),
            };
            y.reshape_like(&(1, c))
        }
        Axis2::Cols => {
            let y: dfdx::tensor::Tensor<(usize,), f32, Dev, T> = match how {
                Red::Sum => x.sum::<_, Axis<1>>(),
                Red::Mean => x.mean::<_, Axis<1>>(),
                Red::Max => x.max::<_, Axis<1>>(),
                Red::LogSumExp => x.logsumexp::<_, Axis<1>>(),
            };
            y.reshape_like(&(r, 1))
        }
        Axis2::All => {
            let y: dfdx::tensor::Tensor<(), f32, Dev, T> = match how {
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
    pub(crate) fn new(dev: Dev, grad: bool) -> Graph {
        Graph {
            dev,
            tape: if grad { Some(OT::default()) } else { None },
            rng: (0, 0),
            host_grads: Default::default(),
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
        let m = Tensor::new(self.host_tensor(mask, r, c));
        self.mul(x, &m)
    }

    /// A tensor on the graph's device from row-major host values (shape checked by callers).
    pub(crate) fn host_tensor(&self, v: Vec<f32>, rows: usize, cols: usize) -> T2 {
        self.dev.tensor_from_vec(v, (rows, cols))
    }

    #[cfg_attr(feature = "cuda", allow(dead_code))]
    pub(crate) fn tape_mut(&mut self) -> Option<&mut OT> {
        self.tape.as_mut()
    }

    /// Whether ops are being recorded for backward.
    pub fn records(&self) -> bool {
        self.tape.is_some()
    }

    fn absorb(&mut self, y: TT<OT>) -> Tensor {
        let (t, tape) = y.split_tape();
        let acc = self.tape.take().unwrap_or_default();
        self.tape = Some(acc.merge(tape));
        Tensor::new(t)
    }

    /// Record a custom op: `out` was computed from the inputs outside dfdx; `backward` gets the
    /// output gradient (row-major, host) and must return one gradient per input (or `None`).
    pub(crate) fn custom(
        &mut self,
        inputs: &[&Tensor],
        out: T2,
        backward: impl FnOnce(Vec<f32>) -> Vec<Option<Vec<f32>>> + 'static,
    ) -> Tensor {
        // On the CPU the gradient buffers are borrowed in place (see `host.rs`).
        #[cfg(not(feature = "cuda"))]
        {
            return self.record_host(inputs, out, move |g_out, slots| {
                for (slot, g) in slots.iter_mut().zip(backward(g_out.to_vec())) {
                    if let (Some(dst), Some(g)) = (slot.as_deref_mut(), g) {
                        super::host::add_assign(dst, &g);
                    }
                }
            });
        }
        #[allow(unreachable_code)]
        let Some(acc) = self.tape.as_mut() else {
            return Tensor::new(out);
        };
        let out_ghost = out.ghost();
        let in_ghosts: Vec<_> = inputs.iter().map(|t| t.t.ghost()).collect();
        acc.add_backward_op(move |grads| {
            grads.try_alloc_for(&out_ghost)?;
            let g_out = grads.get(&out_ghost).as_vec();
            for (ghost, g) in in_ghosts.iter().zip(backward(g_out)) {
                if let Some(g) = g {
                    let gi = grads.get_or_alloc_mut(ghost)?;
                    add_into(gi, &g)?;
                }
            }
            Ok(())
        });
        Tensor::new(out)
    }

    // ------------------------------------------------------------------ elementwise

    pub fn add(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let s = broadcast_shape("add", a.shape(), b.shape())?;
        #[cfg(not(feature = "cuda"))]
        if a.shape() == b.shape() {
            return Ok(self.host_add(a, b));
        }
        #[cfg(not(feature = "cuda"))]
        if s.0 * s.1 >= HOST_MIN {
            return Ok(self.host_binary(a, b, super::host_ops::BinOp::Add, s));
        }
        record!(self, [a, b], bcast(a, s) + bcast(b, s))
    }
    pub fn sub(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let s = broadcast_shape("sub", a.shape(), b.shape())?;
        #[cfg(not(feature = "cuda"))]
        if s.0 * s.1 >= HOST_MIN {
            return Ok(self.host_binary(a, b, super::host_ops::BinOp::Sub, s));
        }
        record!(self, [a, b], bcast(a, s) - bcast(b, s))
    }
    pub fn mul(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let s = broadcast_shape("mul", a.shape(), b.shape())?;
        #[cfg(not(feature = "cuda"))]
        if s.0 * s.1 >= HOST_MIN {
            return Ok(self.host_binary(a, b, super::host_ops::BinOp::Mul, s));
        }
        record!(self, [a, b], bcast(a, s) * bcast(b, s))
    }
    pub fn div(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let s = broadcast_shape("div", a.shape(), b.shape())?;
        #[cfg(not(feature = "cuda"))]
        if s.0 * s.1 >= HOST_MIN {
            return Ok(self.host_binary(a, b, super::host_ops::BinOp::Div, s));
        }
        record!(self, [a, b], bcast(a, s) / bcast(b, s))
    }
    pub fn add_scalar(&mut self, a: &Tensor, s: f32) -> Result<Tensor> {
        record!(self, [a], a + s)
    }
    pub fn mul_scalar(&mut self, a: &Tensor, s: f32) -> Result<Tensor> {
        record!(self, [a], a * s)
    }
    pub fn powf(&mut self, a: &Tensor, p: f32) -> Result<Tensor> {
        record!(self, [a], a.powf(p))
    }
    pub fn clamp(&mut self, a: &Tensor, lo: f32, hi: f32) -> Result<Tensor> {
        record!(self, [a], a.clamp(lo, hi))
    }
    pub fn neg(&mut self, a: &Tensor) -> Result<Tensor> {
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
        #[cfg(not(feature = "cuda"))]
        return Ok(self.host_relu(a));
        #[cfg(feature = "cuda")]
        record!(self, [a], a.relu())
    }
    /// GELU (tanh approximation).
    pub fn gelu(&mut self, a: &Tensor) -> Result<Tensor> {
        #[cfg(not(feature = "cuda"))]
        return Ok(self.host_gelu(a));
        #[cfg(feature = "cuda")]
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
        #[cfg(not(feature = "cuda"))]
        return Ok(self.host_matmul(a, b));
        #[cfg(feature = "cuda")]
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
        #[cfg(not(feature = "cuda"))]
        return Ok(self.host_linear(x, w, b));
        #[cfg(feature = "cuda")]
        {
            let y = self.matmul(x, w)?;
            self.add(&y, b)
        }
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
        #[cfg(not(feature = "cuda"))]
        return Ok(self.host_layer_norm(x, gamma, beta, eps));
        #[cfg(feature = "cuda")]
        {
            let n = self.layer_norm_rows(x, eps)?;
            let n = self.mul(&n, gamma)?;
            self.add(&n, beta)
        }
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
        #[cfg(not(feature = "cuda"))]
        if axis == Axis2::Cols {
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
        let eye = Tensor::new(eye_t(&self.dev, r));
        let masked = self.mul(a, &eye)?;
        self.sum(&masked, Axis2::Cols)
    }

    /// Mean cross-entropy of `logits (n, c)` against class indices.
    pub fn cross_entropy(&mut self, logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
        let (n, c) = logits.shape();
        if labels.len() != n {
            return Err(shape_err(
                "cross_entropy",
                format!("{} labels for {n} rows", labels.len()),
            ));
        }
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= c) {
            return Err(shape_err(
                "cross_entropy",
                format!("label {bad} out of range for {c} classes"),
            ));
        }
        #[cfg(not(feature = "cuda"))]
        return Ok(self.host_cross_entropy(logits, labels));
        #[allow(unreachable_code)]
        let mut onehot = vec![0f32; n * c];
        for (i, &l) in labels.iter().enumerate() {
            onehot[i * c + l as usize] = -1.0 / n as f32;
        }
        let target = Tensor::new(self.dev.tensor_from_vec(onehot, (n, c)));
        let logp = self.log_softmax(logits, Axis2::Cols)?;
        let weighted = self.mul(&logp, &target)?;
        self.sum(&weighted, Axis2::All)
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
        let loss = loss.t.clone().put_tape(tape).sum::<(), _>();
        // dfdx asserts on internal invariants; never let that take the process down.
        let dev = loss.device().clone();
        let grads = crate::panic_guard::catch(|| loss.backward()).map_err(|m| {
            EngineError::Other(format!("internal engine error during backward: {m}"))
        })?;
        Ok(Grads { grads, dev })
    }
}

pub(crate) fn eye_t(dev: &Dev, n: usize) -> T2 {
    let mut v = vec![0f32; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    dev.tensor_from_vec(v, (n, n))
}

/// Add host values into a CUDA gradient buffer (the host-op path of the CUDA build: a copy to
/// the host and back, through cudarc's public copies on dfdx's own context).
#[cfg(feature = "cuda")]
fn add_into(
    dst: &mut <Dev as dfdx::tensor::Storage<f32>>::Vec,
    src: &[f32],
) -> Result<(), dfdx::tensor::CudaError> {
    let slice: &mut cudarc::driver::CudaSlice<f32> = dst;
    let dev = slice.device();
    let mut host = dev.dtoh_sync_copy(slice)?;
    for (d, s) in host.iter_mut().zip(src) {
        *d += *s;
    }
    dev.htod_sync_copy_into(&host, slice)?;
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn add_into(
    dst: &mut <Dev as dfdx::tensor::Storage<f32>>::Vec,
    src: &[f32],
) -> Result<(), dfdx::tensor::CpuError> {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
    Ok(())
}
