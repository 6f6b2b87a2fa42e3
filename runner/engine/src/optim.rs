//! Optimizers (SGD with momentum, AdamW, LARS) over a [`ParamStore`], gradient clipping and
//! accumulation, EMA (teacher) updates, and learning-rate / momentum schedules.
//!
//! dfdx's optimizers walk compile-time module trees; the engine's layers are runtime-shaped,
//! so updates are written here with dfdx tensor arithmetic (device-generic). Weight decay
//! applies to [`ParamKind::Weight`] tensors only (not biases or norm parameters), and LARS
//! adapts only those (biases and norms get plain momentum SGD, as in the LARS paper's use in
//! SimCLR/BYOL).

use serde::{Deserialize, Serialize};

use super::nn::{ParamKind, ParamStore};
use super::{Dv, Grads, Tensor, TD};

/// Which optimizer, with its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OptimSpec {
    Sgd {
        momentum: f32,
        weight_decay: f32,
        nesterov: bool,
    },
    AdamW {
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    },
    /// Layer-wise adaptive rate scaling (You et al., 2017): each weight matrix's step is scaled
    /// by `eta · ‖w‖ / (‖g‖ + wd · ‖w‖)`.
    Lars {
        momentum: f32,
        weight_decay: f32,
        eta: f32,
    },
}

/// One gradient per [`ParamStore`] entry (`None` for buffers).
pub type GradList = Vec<Option<Tensor>>;

/// Read the gradients of every trainable entry of `ps`.
pub fn collect(ps: &ParamStore, grads: &mut Grads) -> GradList {
    ps.entries
        .iter()
        .map(|e| (e.kind != ParamKind::Buffer).then(|| grads.take(&e.value)))
        .collect()
}

/// Add `more` into `acc` (gradient accumulation).
pub fn accumulate(acc: &mut GradList, more: GradList) {
    for (a, m) in acc.iter_mut().zip(more) {
        *a = match (a.take(), m) {
            (Some(x), Some(y)) => Some(zip_t!(x, y, |a, b| a + b)),
            (x, y) => x.or(y),
        };
    }
}

/// The sum of squares of host values in f64: fixed chunks on the pool, added in order (the
/// same value on any number of threads).
fn host_sq_sum(v: &[f32]) -> f64 {
    use rayon::prelude::*;
    let parts: Vec<f64> = v
        .par_chunks(1 << 14)
        .map(|c| c.iter().map(|x| (*x as f64) * (*x as f64)).sum())
        .collect();
    parts.iter().sum()
}

/// The sum of squares of `t` on its device, as a `(1, 1)` tensor.
fn sq_sum(t: &Tensor) -> Tensor {
    map_t!(t, |x| {
        use dfdx::prelude::*;
        x.clone().square().sum::<(), _>().reshape_like(&(1, 1))
    })
}

/// The squared norms of all gradients, summed where they are: host gradients in f64 on the
/// host, device ones on the device (a `(1, 1)` tensor, if any).
fn sq_sums(gs: &GradList) -> (f64, Option<Tensor>) {
    let mut host = 0f64;
    let mut dev: Option<Tensor> = None;
    for g in gs.iter().flatten() {
        if g.host.is_some() {
            host += host_sq_sum(&super::host::vals(g));
        } else {
            let s = sq_sum(g);
            dev = Some(match dev {
                None => s,
                Some(d) => zip_t!(d, s, |a, b| a + b),
            });
        }
    }
    (host, dev)
}

/// The global L2 norm of all gradients (one value read back from the device).
pub fn global_norm(gs: &GradList) -> f64 {
    let (host, dev) = sq_sums(gs);
    let on_dev = dev.map_or(0.0, |d| d.scalar() as f64);
    (host + on_dev).sqrt()
}

/// The global L2 norm of all gradients as a `(1, 1)` tensor, computed where the gradients
/// are (host gradients of the CPU fast path in f64 on the host; device ones on the device), so
/// reading it can share one transfer with the loss ([`crate::Engine::read_scalars`]).
pub fn global_norm_tensor(e: &crate::Engine, gs: &GradList) -> Tensor {
    let (host, dev) = sq_sums(gs);
    match dev {
        None => {
            let n = host.sqrt() as f32;
            match &e.dev {
                crate::Dev::Cpu(d) => super::host::with_host(d, vec![n], 1, 1),
                #[cfg(feature = "cuda")]
                _ => e.full(n, 1, 1),
            }
        }
        Some(d) => {
            let d = map_t!(d, |x| x.clone() + host as f32);
            map_t!(d, |x| x.clone().sqrt())
        }
    }
}

/// Scale all gradients by `s` (for averaging accumulated gradients or clipping).
pub fn scale(gs: &mut GradList, s: f32) {
    for g in gs.iter_mut().flatten() {
        *g = map_t!(g, |x| x.clone() * s);
    }
}

/// Scale the gradients `which` selects by `s`.
pub fn scale_where(gs: &mut GradList, s: f32, which: &[bool]) {
    for (g, _) in gs.iter_mut().zip(which).filter(|(_, &w)| w) {
        if let Some(g) = g {
            *g = map_t!(g, |x| x.clone() * s);
        }
    }
}

/// Clip to a global norm of at most `max_norm`; returns the norm before clipping.
pub fn clip_global_norm(gs: &mut GradList, max_norm: f64) -> f64 {
    let norm = global_norm(gs);
    clip_to(gs, norm, max_norm);
    norm
}

/// Scale gradients whose global norm is `norm` (already known) down to `max_norm`.
pub fn clip_to(gs: &mut GradList, norm: f64, max_norm: f64) {
    if norm > max_norm && norm > 0.0 {
        scale(gs, (max_norm / norm) as f32);
    }
}

/// `target ← m · target + (1 - m) · source` for every entry (the EMA teacher update; buffers
/// such as batch-norm statistics are averaged the same way).
pub fn ema_update(target: &mut ParamStore, source: &ParamStore, m: f32) {
    use rayon::prelude::*;
    for (t, s) in target.entries.iter_mut().zip(&source.entries) {
        if let (Some(_), crate::Store::Cpu(x)) = (&s.value.host, &t.value.t) {
            let (rows, cols) = t.value.shape();
            let dev = x.device().clone();
            let src = super::host::vals(&s.value);
            let mut dst = super::host::take_vals(&mut t.value);
            dst.par_chunks_mut(1 << 14)
                .zip(src.par_chunks(1 << 14))
                .for_each(|(d, s)| {
                    for (d, s) in d.iter_mut().zip(s) {
                        *d = *d * m + *s * (1.0 - m);
                    }
                });
            t.value = super::host::with_host(&dev, dst, rows, cols);
        } else {
            t.value = zip_t!(t.value, s.value, |a, b| a * m + b * (1.0 - m));
        }
    }
}

/// Optimizer state for one [`ParamStore`].
pub struct Optimizer {
    spec: OptimSpec,
    /// First moment / momentum buffer per entry (None for buffers).
    m: Vec<Option<Tensor>>,
    /// Second moment (AdamW only).
    v: Vec<Option<Tensor>>,
    steps: u64,
}

impl Optimizer {
    pub fn new(spec: OptimSpec, ps: &ParamStore) -> Optimizer {
        let zeros = |ps: &ParamStore| -> Vec<Option<Tensor>> {
            ps.entries
                .iter()
                .map(|e| (e.kind != ParamKind::Buffer).then(|| e.value.detached() * 0.0))
                .collect()
        };
        Optimizer {
            m: zeros(ps),
            v: zeros(ps),
            spec,
            steps: 0,
        }
    }

    /// The optimizer's state as named tensors (`m/<i>`, `v/<i>`) plus its step count, for
    /// checkpoints.
    pub fn export(&self) -> (u64, Vec<(String, Tensor)>) {
        let mut out = Vec::new();
        for (prefix, list) in [("m", &self.m), ("v", &self.v)] {
            for (i, t) in list.iter().enumerate() {
                if let Some(t) = t {
                    out.push((format!("{prefix}/{i}"), t.clone()));
                }
            }
        }
        (self.steps, out)
    }

    /// Restore state written by [`Optimizer::export`] (for the same parameter layout).
    pub fn import(
        &mut self,
        steps: u64,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> Result<(), String> {
        for (prefix, list) in [("m", &mut self.m), ("v", &mut self.v)] {
            for (i, t) in list.iter_mut().enumerate() {
                if let Some(t) = t {
                    let name = format!("{prefix}/{i}");
                    let saved = tensors
                        .get(&name)
                        .ok_or_else(|| format!("optimizer state `{name}` is missing"))?;
                    if saved.shape() != t.shape() {
                        return Err(format!(
                            "optimizer state `{name}` has shape {:?}, expected {:?}",
                            saved.shape(),
                            t.shape()
                        ));
                    }
                    *t = saved.clone();
                }
            }
        }
        self.steps = steps;
        Ok(())
    }

    /// Apply one update with learning rate `lr`, reading gradients from `grads`.
    pub fn step(&mut self, ps: &mut ParamStore, grads: &mut Grads, lr: f32) {
        let gs = collect(ps, grads);
        self.apply(ps, &gs, lr);
    }

    /// Apply one update with explicit gradients (after accumulation or clipping).
    pub fn apply(&mut self, ps: &mut ParamStore, gs: &GradList, lr: f32) {
        self.steps += 1;
        // The fused host update where parameters live on the host (the CPU fast path keeps a
        // host copy of each), dfdx arithmetic on the device otherwise.
        let host = ps
            .entries
            .iter()
            .filter(|e| e.kind != ParamKind::Buffer)
            .all(|e| e.value.host.is_some() && matches!(e.value.t, crate::Store::Cpu(_)));
        if host {
            self.apply_host(ps, gs, lr);
        } else {
            self.apply_dfdx(ps, gs, lr);
        }
    }

    /// The update as one fused pass per tensor over host memory (the CPU fast path).
    fn apply_host(&mut self, ps: &mut ParamStore, gs: &GradList, lr: f32) {
        use super::host::{into_vals, take_vals, with_host};
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 14;
        let t = self.steps as i32;
        let spec = self.spec.clone();
        // The host values of every trainable tensor, taken out first (plain buffers may move
        // between threads; engine tensors, which may live on a GPU, may not).
        struct Slot {
            w: Vec<f32>,
            g: std::sync::Arc<Vec<f32>>,
            m: Vec<f32>,
            v: Option<Vec<f32>>,
            decay: bool,
        }
        let mut dev = None;
        let mut slots: Vec<Option<Slot>> = Vec::with_capacity(ps.entries.len());
        for (i, e) in ps.entries.iter_mut().enumerate() {
            let Some(Some(g)) = gs.get(i) else {
                slots.push(None);
                continue;
            };
            dev.get_or_insert_with(|| super::host::cpu_t(&e.value).device().clone());
            // The parameter's and the moments' host copies are updated in place when nothing
            // else holds them (the usual case between steps).
            slots.push(Some(Slot {
                w: take_vals(&mut e.value),
                g: super::host::vals(g),
                m: into_vals(
                    self.m[i]
                        .take()
                        .expect("state exists for trainable entries"),
                ),
                v: self.v[i].take().map(into_vals),
                decay: e.kind == ParamKind::Weight,
            }));
        }
        // Tensors are independent: small ones (biases, norms) update side by side instead of
        // each waking the pool for a few hundred values.
        slots.par_iter_mut().for_each(|slot| {
            let Some(Slot { w, g, m, v, decay }) = slot else {
                return;
            };
            let decay = *decay;
            match spec {
                OptimSpec::Sgd {
                    momentum,
                    weight_decay,
                    nesterov,
                } => {
                    let wd = if decay { weight_decay } else { 0.0 };
                    w.par_chunks_mut(CHUNK)
                        .zip(m.par_chunks_mut(CHUNK))
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|((w, m), g)| {
                            for ((w, m), g) in w.iter_mut().zip(m).zip(g) {
                                let g = if wd > 0.0 { g + *w * wd } else { *g };
                                *m = *m * momentum + g;
                                let upd = if nesterov { g + *m * momentum } else { *m };
                                *w -= upd * lr;
                            }
                        });
                }
                OptimSpec::Lars {
                    momentum,
                    weight_decay,
                    eta,
                } => {
                    let (wd, rate) = if decay {
                        let sq = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
                        let (wn, gn) = (sq(w).sqrt() as f32, sq(g).sqrt() as f32);
                        let trust = if wn > 0.0 && gn > 0.0 {
                            eta * wn / (gn + weight_decay * wn)
                        } else {
                            1.0
                        };
                        (weight_decay, lr * trust)
                    } else {
                        (0.0, lr)
                    };
                    w.par_chunks_mut(CHUNK)
                        .zip(m.par_chunks_mut(CHUNK))
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|((w, m), g)| {
                            for ((w, m), g) in w.iter_mut().zip(m).zip(g) {
                                *m = *m * momentum + (g + *w * wd) * rate;
                                *w -= *m;
                            }
                        });
                }
                OptimSpec::AdamW {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let v = v.as_mut().expect("state exists for trainable entries");
                    let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                    let shrink = if decay && weight_decay > 0.0 {
                        lr * weight_decay
                    } else {
                        0.0
                    };
                    w.par_chunks_mut(CHUNK)
                        .zip(m.par_chunks_mut(CHUNK))
                        .zip(v.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)))
                        .for_each(|((w, m), (v, g))| {
                            for (((w, m), v), g) in w.iter_mut().zip(m).zip(v).zip(g) {
                                *m = *m * beta1 + g * (1.0 - beta1);
                                *v = *v * beta2 + g * g * (1.0 - beta2);
                                let (mhat, vhat) = (*m / c1, *v / c2);
                                *w -= *w * shrink;
                                *w -= mhat / (vhat.sqrt() + eps) * lr;
                            }
                        });
                }
            }
        });
        let Some(dev) = dev else { return };
        for (i, (e, slot)) in ps.entries.iter_mut().zip(slots).enumerate() {
            let Some(Slot { w, m, v, .. }) = slot else {
                continue;
            };
            let (rows, cols) = e.value.shape();
            self.m[i] = Some(with_host(&dev, m, rows, cols));
            self.v[i] = v.map(|v| with_host(&dev, v, rows, cols));
            // A fresh identity each step: gradients of the next step are keyed to it.
            e.value = with_host(&dev, w, rows, cols);
        }
    }

    /// The update in dfdx tensor arithmetic (device-generic), on the parameter's device.
    fn apply_dfdx(&mut self, ps: &mut ParamStore, gs: &GradList, lr: f32) {
        let t = self.steps as i32;
        for (i, e) in ps.entries.iter_mut().enumerate() {
            let Some(g) = gs.get(i).cloned().flatten() else {
                continue;
            };
            let decay = e.kind == ParamKind::Weight;
            let m = self.m[i]
                .take()
                .expect("state exists for trainable entries");
            let v = self.v[i].take();
            let spec = self.spec.clone();
            let (w, m, v) = on_dev!(e.value.t.tag(), D => {
                let w: TD<D> = e.value.get::<D>().expect("the tag names this store").clone();
                let dev = w.device().clone();
                let (w, m, v) = update::<D>(&spec, decay, t, lr, w, g.on(&dev), m.on(&dev),
                    v.map(|v| v.on(&dev)));
                (Tensor::new(D::wrap(w)), Tensor::new(D::wrap(m)), v.map(|v| Tensor::new(D::wrap(v))))
            });
            // A fresh identity each step: gradients of the next step are keyed to it.
            e.value = w;
            self.m[i] = Some(m);
            self.v[i] = v;
        }
    }
}

/// One optimiser step of one tensor in dfdx arithmetic: the new weight, first moment and
/// (AdamW) second moment. Nothing leaves the device (LARS's trust ratio included).
#[allow(clippy::too_many_arguments)]
fn update<D: Dv>(
    spec: &OptimSpec,
    decay: bool,
    t: i32,
    lr: f32,
    w: TD<D>,
    g: TD<D>,
    m: TD<D>,
    v: Option<TD<D>>,
) -> (TD<D>, TD<D>, Option<TD<D>>) {
    use dfdx::prelude::*;
    match *spec {
        OptimSpec::Sgd {
            momentum,
            weight_decay,
            nesterov,
        } => {
            let g = if decay && weight_decay > 0.0 {
                g + w.clone() * weight_decay
            } else {
                g
            };
            let m = m * momentum + g.clone();
            let upd = if nesterov {
                g + m.clone() * momentum
            } else {
                m.clone()
            };
            (w - upd * lr, m, v)
        }
        OptimSpec::Lars {
            momentum,
            weight_decay,
            eta,
        } => {
            let shape = *w.shape();
            let (g, rate) = if decay {
                // trust = η‖w‖ / (‖g‖ + wd‖w‖), or 1 where either norm is zero.
                let wn = w.clone().square().sum::<(), _>().sqrt();
                let gn = g.clone().square().sum::<(), _>().sqrt();
                let trust = wn.clone() * eta / (gn.clone() + wn.clone() * weight_decay);
                let ok = wn.gt(0.0) & gn.gt(0.0);
                let ones = trust.device().ones_like(&());
                let trust = ok.choose(trust, ones) * lr;
                let rate: TD<D> = trust.broadcast_like(&shape);
                (g + w.clone() * weight_decay, rate)
            } else {
                let ones: TD<D> = w.device().ones_like(&shape);
                (g, ones * lr)
            };
            let m = m * momentum + g * rate;
            (w - m.clone(), m, v)
        }
        OptimSpec::AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
        } => {
            let v = v.expect("state exists for trainable entries");
            let m = m * beta1 + g.clone() * (1.0 - beta1);
            let v = v * beta2 + g.square() * (1.0 - beta2);
            let mhat = m.clone() / (1.0 - beta1.powi(t));
            let vhat = v.clone() / (1.0 - beta2.powi(t));
            let w = if decay && weight_decay > 0.0 {
                w.clone() - w * (lr * weight_decay)
            } else {
                w
            };
            (w - mhat / (vhat.sqrt() + eps) * lr, m, Some(v))
        }
    }
}

impl std::ops::Mul<f32> for Tensor {
    type Output = Tensor;
    fn mul(self, s: f32) -> Tensor {
        map_t!(self, |x| x.clone() * s)
    }
}

/// Cosine ramp from `start` to `end` over `total` steps (BYOL's EMA momentum schedule).
pub fn cosine_ramp(start: f64, end: f64, step: u64, total: u64) -> f64 {
    if total == 0 {
        return end;
    }
    let p = (step as f64 / total as f64).min(1.0);
    end - (end - start) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

/// Learning-rate schedule: linear warmup, then cosine decay to zero or constant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub cosine: bool,
}

impl Schedule {
    /// The learning rate at `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        if !self.cosine || self.total_steps <= self.warmup_steps {
            return self.base_lr;
        }
        let progress =
            (step - self.warmup_steps) as f64 / (self.total_steps - self.warmup_steps) as f64;
        self.base_lr * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Init, Linear};
    use crate::{graph::Axis2, Engine};

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = Schedule {
            base_lr: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            cosine: true,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.5).abs() < 1e-12);
        assert!(s.lr(110).abs() < 1e-12);
        let c = Schedule { cosine: false, ..s };
        assert_eq!(c.lr(100), 1.0);
    }

    /// Both optimizers fit a linear regression (y = 3x - 1) to small loss.
    #[test]
    fn optimizers_fit_linear_regression() {
        let e = Engine::cpu();
        for spec in [
            OptimSpec::Sgd {
                momentum: 0.9,
                weight_decay: 0.0,
                nesterov: false,
            },
            OptimSpec::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
        ] {
            let mut ps = ParamStore::default();
            let lin = Linear::new(&e, &mut ps, &mut Init::new(1), "l", 1, 1);
            let xs: Vec<f32> = (0..32).map(|i| i as f32 / 16.0 - 1.0).collect();
            let ys: Vec<f32> = xs.iter().map(|x| 3.0 * x - 1.0).collect();
            let x = e.tensor(xs, 32, 1).unwrap();
            let y = e.tensor(ys, 32, 1).unwrap();
            let mut opt = Optimizer::new(spec.clone(), &ps);
            let mut last = f32::MAX;
            for _ in 0..300 {
                let mut g = e.graph(true);
                let p = lin.forward(&ps, &mut g, &x).unwrap();
                let d = g.sub(&p, &y).unwrap();
                let sq = g.square(&d).unwrap();
                let loss = g.mean(&sq, Axis2::All).unwrap();
                last = loss.scalar();
                let mut grads = g.backward(&loss).unwrap();
                opt.step(&mut ps, &mut grads, 0.05);
            }
            assert!(last < 1e-3, "{spec:?}: final loss {last}");
        }
    }

    /// The fused host update (fast path) and the dfdx update (every other device) agree, and
    /// each engine takes its own: buffers (batch-norm statistics) in the store do not send
    /// the fast path to the slow update.
    #[test]
    fn fused_and_device_updates_agree_and_each_engine_takes_its_own() {
        use crate::nn::BatchNorm;
        use crate::DeviceKind;
        let specs = [
            OptimSpec::Sgd {
                momentum: 0.9,
                weight_decay: 0.01,
                nesterov: true,
            },
            OptimSpec::AdamW {
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-8,
                weight_decay: 0.05,
            },
            OptimSpec::Lars {
                momentum: 0.9,
                weight_decay: 1e-4,
                eta: 0.02,
            },
        ];
        for spec in specs {
            let mut results = Vec::new();
            for kind in [DeviceKind::Cpu, DeviceKind::CpuGeneric] {
                let e = Engine::open(kind).unwrap();
                let mut ps = ParamStore::default();
                let lin = Linear::new(&e, &mut ps, &mut Init::new(3), "l", 4, 3);
                let bn = BatchNorm::new(&e, &mut ps, "bn", 4);
                let x = e
                    .tensor((0..24).map(|i| (i as f32 * 0.37).sin()).collect(), 6, 4)
                    .unwrap();
                let mut opt = Optimizer::new(spec.clone(), &ps);
                for _ in 0..3 {
                    let mut g = e.graph(true);
                    // Batch norm first: after it, a bias would have no gradient but noise,
                    // which AdamW scales up to whole steps.
                    let h = bn.forward(&mut ps, &mut g, &x, true).unwrap();
                    let h = lin.forward(&ps, &mut g, &h).unwrap();
                    let sq = g.square(&h).unwrap();
                    let s = g.mul(&sq, &h).unwrap();
                    let loss = g.mean(&s, Axis2::All).unwrap();
                    let mut grads = g.backward(&loss).unwrap();
                    opt.step(&mut ps, &mut grads, 0.1);
                }
                let fused = ps
                    .entries
                    .iter()
                    .filter(|p| p.kind != ParamKind::Buffer)
                    .all(|p| p.value.host.is_some());
                assert_eq!(
                    fused,
                    kind == DeviceKind::Cpu,
                    "{spec:?} on {kind:?}: the fused host update runs on the fast path only"
                );
                results.push(
                    ps.entries
                        .iter()
                        .map(|p| p.value.to_vec())
                        .collect::<Vec<_>>(),
                );
            }
            for (a, b) in results[0].iter().zip(&results[1]) {
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                        "{spec:?}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn clip_accumulate_ema_and_ramp() {
        let e = Engine::cpu();
        let t = |v: Vec<f32>| Some(e.tensor(v, 1, 2).unwrap());
        let mut gs: GradList = vec![t(vec![3.0, 0.0]), None, t(vec![0.0, 4.0])];
        assert!((global_norm(&gs) - 5.0).abs() < 1e-9);
        let before = clip_global_norm(&mut gs, 1.0);
        assert!((before - 5.0).abs() < 1e-9 && (global_norm(&gs) - 1.0).abs() < 1e-6);
        assert_eq!(gs[0].as_ref().unwrap().to_vec(), vec![0.6, 0.0]);
        // A norm already below the bound is untouched.
        assert!((clip_global_norm(&mut gs, 10.0) - 1.0).abs() < 1e-6);
        accumulate(&mut gs, vec![t(vec![1.0, 1.0]), None, None]);
        assert_eq!(gs[0].as_ref().unwrap().to_vec(), vec![1.6, 1.0]);
        let mut target = ParamStore::default();
        Linear::new(&e, &mut target, &mut Init::new(1), "l", 1, 1);
        let mut source = target.clone();
        for en in &mut source.entries {
            en.value = e.full(1.0, 1, 1);
        }
        let old: Vec<f32> = target.entries.iter().map(|x| x.value.scalar()).collect();
        ema_update(&mut target, &source, 0.9);
        for (o, n) in old.iter().zip(&target.entries) {
            assert!((n.value.scalar() - (0.9 * o + 0.1)).abs() < 1e-6);
        }
        assert!((cosine_ramp(0.99, 1.0, 0, 100) - 0.99).abs() < 1e-12);
        assert!((cosine_ramp(0.99, 1.0, 50, 100) - 0.995).abs() < 1e-12);
        assert!((cosine_ramp(0.99, 1.0, 100, 100) - 1.0).abs() < 1e-12);
    }
}
