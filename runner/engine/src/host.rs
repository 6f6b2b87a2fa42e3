//! The CPU fast path: the engine's own kernels on host memory, recorded on dfdx's tape.
//!
//! dfdx's CPU kernels run on one thread and allocate per op, and its matmul uses `gemm` 0.15
//! (AVX2 at most on stable Rust). The hot ops of training — matmul, linear layers, fused
//! convolution, batch/layer norm (+ReLU), element-wise activations and the optimiser update —
//! run here instead: `gemm` 0.19 (AVX-512 where the CPU has it, detected at run time) and
//! rayon over both cores.
//!
//! The public path into dfdx (its tensor storage is crate-private, see docs/architecture.md):
//! inputs are read with `Tensor::copy_into` (one memcpy), outputs are moved in with
//! `tensor_from_vec` (no copy), and in backward the gradient buffers are borrowed in place
//! through `Gradients::get_or_alloc_mut` (on the CPU a `Vec<f32>`): the output gradient is
//! taken out, the inputs' gradients are accumulated into directly, and the output gradient is
//! put back. No kernel here depends on the number of threads for its result: every parallel
//! reduction splits its work into fixed chunks and adds the partial results in chunk order.

use dfdx::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Arc;

use rayon::prelude::*;

use super::device::CpuDev as Dev;
use super::{Graph, Store, Tensor, TD};

type T2 = TD<Dev>;

/// The CPU tensor of `t` (fast-path ops run only on CPU tensors: see `Graph::fast`).
pub(crate) fn cpu_t(t: &Tensor) -> &T2 {
    match &t.t {
        Store::Cpu(x) => x,
        #[cfg(feature = "cuda")]
        _ => unreachable!("the CPU fast path runs on CPU tensors only"),
    }
}

/// Rows per task of row-parallel kernels: fixed, so results never depend on the thread count.
pub(crate) const ROW_CHUNK: usize = 256;

/// Rows per partial sum of a column reduction over rows of `c` values: [`ROW_CHUNK`] times a
/// power of two, so a partial covers about 64 Ki values (fewer partials to add up) and tiles
/// (see [`tile_len`]) divide it. Depends on `c` only, never on the thread count.
pub(crate) fn sum_rows(c: usize) -> usize {
    ROW_CHUNK
        * ((1usize << 16) / (ROW_CHUNK * c.max(1)))
            .max(1)
            .next_power_of_two()
}

/// Add per-chunk tile sums (each `tl` long, in chunk order) and fold the tile's rows into one
/// sum per column (`c` columns).
pub(crate) fn fold_tiles(parts: &[Vec<f32>], tl: usize, c: usize) -> Vec<f64> {
    let mut tile = vec![0f64; tl];
    for p in parts {
        for (a, b) in tile.iter_mut().zip(p) {
            *a += *b as f64;
        }
    }
    let mut out = vec![0f64; c];
    for (k, v) in tile.into_iter().enumerate() {
        out[k % c] += v;
    }
    out
}

/// The values of `t`, row-major (engine tensors are always contiguous).
/// The values of `t` in host memory: its host copy when an op left one, else one memcpy.
pub(crate) fn vals(t: &Tensor) -> Arc<Vec<f32>> {
    match &t.host {
        Some(h) => h.clone(),
        None => Arc::new(t.t.read()),
    }
}

/// The values of `t` to modify: its host copy when nothing else holds it, else a copy.
pub(crate) fn into_vals(mut t: Tensor) -> Vec<f32> {
    take_vals(&mut t)
}

/// [`into_vals`] for a tensor about to be replaced: takes its host copy out of it.
pub(crate) fn take_vals(t: &mut Tensor) -> Vec<f32> {
    match t.host.take() {
        Some(h) => Arc::try_unwrap(h).unwrap_or_else(|h| par_copy(&h)),
        None => t.t.read(),
    }
}

/// A tensor holding `v`, which it also keeps as its host copy.
pub(crate) fn with_host(dev: &Dev, v: Vec<f32>, rows: usize, cols: usize) -> Tensor {
    let mut t = Tensor::new(tensor(dev, par_copy(&v), rows, cols));
    t.host = Some(Arc::new(v));
    t
}

/// Below this many values a copy or fill stays on the calling thread.
const PAR_MIN: usize = 1 << 16;

/// A copy of `src`, made in parallel: large buffers are copied on every core instead of the
/// training thread alone (the copy into dfdx's storage is on the critical path of each op).
pub(crate) fn par_copy(src: &[f32]) -> Vec<f32> {
    if src.len() < PAR_MIN {
        return src.to_vec();
    }
    let n = src.len();
    let mut v: Vec<f32> = Vec::with_capacity(n);
    {
        let dst = &mut v.spare_capacity_mut()[..n];
        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and any initialised `f32` is a
        // valid `MaybeUninit<f32>`; the slice borrows `src` for this block only.
        let src: &[MaybeUninit<f32>] =
            unsafe { std::slice::from_raw_parts(src.as_ptr().cast(), src.len()) };
        dst.par_chunks_mut(PAR_MIN)
            .zip(src.par_chunks(PAR_MIN))
            .for_each(|(d, s)| d.copy_from_slice(s));
    }
    // SAFETY: all `n` values were written above.
    unsafe { v.set_len(n) };
    v
}

/// `n` zeros, written in parallel for large `n`.
pub(crate) fn par_zeros(n: usize) -> Vec<f32> {
    if n < PAR_MIN {
        return vec![0f32; n];
    }
    let mut v: Vec<f32> = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(PAR_MIN)
        .for_each(|d| d.fill(MaybeUninit::new(0.0)));
    // SAFETY: all `n` values were written above.
    unsafe { v.set_len(n) };
    v
}

pub(crate) fn tensor(dev: &Dev, v: Vec<f32>, rows: usize, cols: usize) -> T2 {
    debug_assert_eq!(v.len(), rows * cols);
    dev.tensor_from_vec(v, (rows, cols))
}

/// `dst (m×n) (+)= a (m×k) · b (k×n)`. `a_t`/`b_t`: the operand is stored transposed
/// (`a` as `k×m`, `b` as `n×k`, row-major). `acc` adds to `dst` instead of overwriting it.
/// `parallel`: split the product over rayon's threads (off inside already-parallel tasks).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    k: usize,
    n: usize,
    dst: &mut [f32],
    acc: bool,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    parallel: bool,
) {
    assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = if a_t {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (b_rs, b_cs) = if b_t {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let par = if parallel && m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every index the strides describe inside the slices;
    // `dst` is exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            acc,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Column sums of a row-major `(rows, cols)` matrix added into `out`, in fixed row chunks.
pub(crate) fn add_col_sums(x: &[f32], cols: usize, out: &mut [f32]) {
    // Over tiles of whole rows (see `tile_len`), folded to columns at the end.
    let tl = tile_len(cols);
    let parts: Vec<Vec<f32>> = x
        .par_chunks(sum_rows(cols) * cols)
        .map(|chunk| {
            let mut s = vec![0f32; tl];
            for row in chunk.chunks(tl) {
                for (a, b) in s.iter_mut().zip(row) {
                    *a += b;
                }
            }
            s
        })
        .collect();
    for (o, v) in out.iter_mut().zip(fold_tiles(&parts, tl, cols)) {
        *o += v as f32;
    }
}

/// Elements per kernel tile for rows of `c` values: whole rows, about 256 values, and a power
/// of two rows (so tiles divide [`ROW_CHUNK`] rows exactly).
pub(crate) fn tile_len(c: usize) -> usize {
    let rows = (256 / c.max(1)).max(1);
    c * (1usize << rows.ilog2())
}

/// Per-column values `v` repeated to fill a tile of `len` values.
pub(crate) fn tiled(v: &[f32], len: usize) -> Vec<f32> {
    v.iter().copied().cycle().take(len).collect()
}

/// `dst += src`, in parallel.
pub(crate) fn add_assign(dst: &mut [f32], src: &[f32]) {
    dst.par_chunks_mut(1 << 14)
        .zip(src.par_chunks(1 << 14))
        .for_each(|(d, s)| {
            for (a, b) in d.iter_mut().zip(s) {
                *a += b;
            }
        });
}

/// `dst += src · s`, in parallel.
pub(crate) fn add_scaled(dst: &mut [f32], src: &[f32], s: f32) {
    dst.par_chunks_mut(1 << 14)
        .zip(src.par_chunks(1 << 14))
        .for_each(|(d, x)| {
            for (a, b) in d.iter_mut().zip(x) {
                *a += b * s;
            }
        });
}

/// The transpose of a row-major `r × c` matrix (`c × r`), in 32×32 tiles, output rows in
/// parallel.
pub(crate) fn transpose(x: &[f32], r: usize, c: usize) -> Vec<f32> {
    const T: usize = 32;
    let mut out = par_zeros(r * c);
    if r == 0 || c == 0 {
        return out;
    }
    // Each task owns `T` output rows (input columns j0..j0+T).
    out.par_chunks_mut(T * r)
        .enumerate()
        .for_each(|(jb, rows)| {
            let j0 = jb * T;
            let jn = rows.len() / r;
            for i0 in (0..r).step_by(T) {
                for i in i0..(i0 + T).min(r) {
                    let src = &x[i * c + j0..i * c + j0 + jn];
                    for (dj, v) in src.iter().enumerate() {
                        rows[dj * r + i] = *v;
                    }
                }
            }
        });
    out
}

/// One input gradient during a host op's backward: the buffer to add into, or `None` when the
/// input needs no gradient (data batches).
pub(crate) type GradSlot<'a> = Option<&'a mut [f32]>;

impl Graph {
    /// Record a host op: `out` (`rows × cols`) was computed from `inputs`; `backward` gets the
    /// output gradient and one slot per input to **add** that input's gradient into.
    pub(crate) fn host_op(
        &mut self,
        inputs: &[&Tensor],
        out: Vec<f32>,
        rows: usize,
        cols: usize,
        backward: impl FnOnce(&[f32], &mut [GradSlot]) + 'static,
    ) -> Tensor {
        let host = Arc::new(out);
        let out = tensor(self.cpu(), par_copy(&host), rows, cols);
        let mut y = self.record_host(inputs, out, backward);
        y.host = Some(host);
        y
    }

    /// [`Graph::host_op`] for an output already on the device.
    ///
    /// Gradients of host-op outputs are kept in the graph's own store ([`HostGrads`]), keyed by
    /// the output's [`GradKey`]: dfdx would allocate and zero each gradient buffer on the
    /// training thread alone when backward first touches it, and keep every one until the end
    /// of backward. Here a consumer op zeroes a fresh buffer on every core, and the producer
    /// takes it out of the store (freeing it after use). An output that a dfdx op also read
    /// (its key is marked) has a dfdx gradient too, and the two are added.
    pub(crate) fn record_host(
        &mut self,
        inputs: &[&Tensor],
        out: T2,
        backward: impl FnOnce(&[f32], &mut [GradSlot]) + 'static,
    ) -> Tensor {
        let store = self.host_grads.clone();
        let Some(acc) = self.tape_mut() else {
            return Tensor::new(out);
        };
        let key = Arc::new(GradKey::new());
        let out_ghost = out.ghost();
        let ins: Vec<_> = inputs
            .iter()
            .map(|t| (cpu_t(t).ghost(), t.len(), t.constant, t.grad_key.clone()))
            .collect();
        // dfdx's ghost type is crate-private, so the buffer moves are spelled out here, where
        // its type is inferred. `take` moves a gradient buffer out (leaving an empty one), `put`
        // moves it back.
        macro_rules! take {
            ($grads:expr, $g:expr) => {
                std::mem::take(&mut **$grads.get_or_alloc_mut($g)?)
            };
        }
        macro_rules! put {
            ($grads:expr, $g:expr, $v:expr) => {
                **$grads.get_or_alloc_mut($g)? = $v
            };
        }
        let out_key = key.clone();
        acc.add_backward_op(move |grads| {
            let own = store.lock().expect("gradient store").remove(&out_key.id);
            let g_out = match (own, out_key.read_by_dfdx()) {
                (Some(g), false) => g,
                (own, true) => {
                    let mut g: Vec<f32> = take!(grads, &out_ghost);
                    if let Some(o) = own {
                        add_assign(&mut g, &o);
                    }
                    g
                }
                // Nothing downstream reached the loss.
                (None, false) => return Ok(()),
            };
            // Where each input's gradient goes: the graph's store (host-op outputs) or dfdx's.
            // An input used twice by one op (x·x) has one buffer: the second use gets a
            // temporary that is added in afterwards.
            enum Slot {
                Skip,
                Store(u64, Vec<f32>),
                Dfdx(Vec<f32>),
                Extra(Vec<f32>),
            }
            let mut taken: Vec<u64> = Vec::new();
            let mut bufs: Vec<Slot> = Vec::with_capacity(ins.len());
            for (ghost, len, constant, key) in &ins {
                if *constant {
                    bufs.push(Slot::Skip);
                    continue;
                }
                match key {
                    Some(k) if !taken.contains(&k.id) => {
                        taken.push(k.id);
                        let v = store.lock().expect("gradient store").remove(&k.id);
                        bufs.push(Slot::Store(k.id, v.unwrap_or_else(|| par_zeros(*len))));
                    }
                    Some(_) => bufs.push(Slot::Extra(par_zeros(*len))),
                    None => {
                        let v: Vec<f32> = take!(grads, ghost);
                        if v.len() == *len {
                            bufs.push(Slot::Dfdx(v));
                        } else {
                            bufs.push(Slot::Extra(vec![0f32; *len]));
                        }
                    }
                }
            }
            {
                let mut slots: Vec<GradSlot> = bufs
                    .iter_mut()
                    .map(|b| match b {
                        Slot::Skip => None,
                        Slot::Store(_, v) | Slot::Dfdx(v) | Slot::Extra(v) => {
                            Some(v.as_mut_slice())
                        }
                    })
                    .collect();
                backward(&g_out, &mut slots);
            }
            if out_key.read_by_dfdx() {
                put!(grads, &out_ghost, g_out);
            }
            let mut extras = Vec::new();
            for (b, (ghost, _, _, key)) in bufs.into_iter().zip(&ins) {
                match b {
                    Slot::Skip => {}
                    Slot::Store(id, v) => {
                        store.lock().expect("gradient store").insert(id, v);
                    }
                    Slot::Dfdx(v) => put!(grads, ghost, v),
                    Slot::Extra(v) => extras.push((v, ghost, key)),
                }
            }
            for (v, ghost, key) in extras {
                match key {
                    Some(k) => {
                        let mut s = store.lock().expect("gradient store");
                        match s.get_mut(&k.id) {
                            Some(dst) => add_assign(dst, &v),
                            None => {
                                s.insert(k.id, v);
                            }
                        }
                    }
                    None => {
                        let mut dst: Vec<f32> = take!(grads, ghost);
                        add_assign(&mut dst, &v);
                        put!(grads, ghost, dst);
                    }
                }
            }
            Ok(())
        });
        let mut y = Tensor::new(out);
        y.grad_key = Some(key);
        y
    }
}

/// The identity of a host-op output's gradient in the graph's store, and whether a dfdx op
/// read the tensor too (then part of its gradient is in dfdx's store).
#[derive(Debug)]
pub(crate) struct GradKey {
    pub(crate) id: u64,
    dfdx: std::sync::atomic::AtomicBool,
}

impl GradKey {
    fn new() -> GradKey {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        GradKey {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            dfdx: std::sync::atomic::AtomicBool::new(false),
        }
    }
    fn read_by_dfdx(&self) -> bool {
        self.dfdx.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Note that a dfdx op (or dfdx's backward) reads `t`: its gradient then arrives in dfdx's
/// store as well.
pub(crate) fn mark_dfdx(t: &Tensor) {
    if let Some(k) = &t.grad_key {
        k.dfdx.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Gradients of host-op outputs, by [`GradKey::id`], while backward runs.
pub(crate) type HostGrads = Arc<std::sync::Mutex<std::collections::HashMap<u64, Vec<f32>>>>;

/// Apply `f` to every element in parallel (fixed chunks).
pub(crate) fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = par_zeros(x.len());
    out.par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(o, s)| {
            for (a, b) in o.iter_mut().zip(s) {
                *a = f(*b);
            }
        });
    out
}

/// `dst[i] += f(a[i], b[i])` in parallel.
pub(crate) fn zip_add(dst: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    dst.par_chunks_mut(1 << 14)
        .zip(a.par_chunks(1 << 14).zip(b.par_chunks(1 << 14)))
        .for_each(|(d, (a, b))| {
            for ((d, a), b) in d.iter_mut().zip(a).zip(b) {
                *d += f(*a, *b);
            }
        });
}

/// `e^x` in plain arithmetic (so loops over it vectorise), within 2 ulp of libm over the f32
/// range: `x = n·ln2 + r`, a degree-6 polynomial for `e^r` on |r| ≤ ln2/2, and `2^n` built in
/// the exponent bits. Exactly 0 at or below −87.3 (and for −∞); saturates above 88.7.
#[inline]
pub(crate) fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.3, 88.7);
    // Round to nearest by the 1.5·2²³ trick (no `floor` call: baseline x86-64 has no vector
    // rounding instruction, and the call would stop the loop from vectorising).
    const ROUND: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let y = p * f32::from_bits(((n as i32 + 127) as u32) << 23);
    // Exactly zero far below (masked attention scores are −∞ and must get no weight).
    if x <= -87.3 {
        0.0
    } else {
        y
    }
}

/// `tanh(x) = 1 − 2 / (e^{2x} + 1)` through [`exp`].
#[inline]
pub(crate) fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_and_tanh_match_libm() {
        let mut worst = (0f32, 0f32);
        for i in -8729..=8800 {
            let x = i as f32 * 0.01;
            let (got, want) = (super::exp(x), x.exp());
            let rel = ((got - want) / want).abs();
            if rel > worst.0 {
                worst = (rel, x);
            }
            assert!((super::tanh(x) - x.tanh()).abs() < 2e-7, "tanh({x})");
        }
        assert!(
            worst.0 < 3e-7,
            "exp: relative error {} at {}",
            worst.0,
            worst.1
        );
        assert_eq!(super::exp(-200.0), 0.0);
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
    }
}
