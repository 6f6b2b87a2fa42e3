//! Optimizers (SGD with momentum, AdamW) over a [`ParamStore`], and learning-rate schedules.
//!
//! dfdx's optimizers walk compile-time module trees; the engine's layers are runtime-shaped,
//! so updates are written here with dfdx tensor arithmetic (device-generic). Weight decay
//! applies to [`ParamKind::Weight`] tensors only (not biases or norm parameters).

use serde::{Deserialize, Serialize};

use super::nn::{ParamKind, ParamStore};
use super::{Grads, Tensor};

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

    /// Apply one update with learning rate `lr`.
    pub fn step(&mut self, ps: &mut ParamStore, grads: &mut Grads, lr: f32) {
        self.steps += 1;
        let t = self.steps as i32;
        for (i, e) in ps.entries.iter_mut().enumerate() {
            if e.kind == ParamKind::Buffer {
                continue;
            }
            let g = grads.get(&e.value);
            let decay = e.kind == ParamKind::Weight;
            let w = e.value.t.clone();
            let m = self.m[i]
                .take()
                .expect("state exists for trainable entries")
                .t;
            let new_w = match self.spec {
                OptimSpec::Sgd {
                    momentum,
                    weight_decay,
                    nesterov,
                } => {
                    let g = if decay && weight_decay > 0.0 {
                        g.t + w.clone() * weight_decay
                    } else {
                        g.t
                    };
                    let m = m * momentum + g.clone();
                    let upd = if nesterov {
                        g + m.clone() * momentum
                    } else {
                        m.clone()
                    };
                    self.m[i] = Some(Tensor { t: m });
                    w - upd * lr
                }
                OptimSpec::AdamW {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let v = self.v[i]
                        .take()
                        .expect("state exists for trainable entries")
                        .t;
                    let m = m * beta1 + g.t.clone() * (1.0 - beta1);
                    let v = v * beta2 + g.t.square() * (1.0 - beta2);
                    let mhat = m.clone() / (1.0 - beta1.powi(t));
                    let vhat = v.clone() / (1.0 - beta2.powi(t));
                    self.m[i] = Some(Tensor { t: m });
                    self.v[i] = Some(Tensor { t: v });
                    let w = if decay && weight_decay > 0.0 {
                        w.clone() - w * (lr * weight_decay)
                    } else {
                        w
                    };
                    w - mhat / (vhat.sqrt() + eps) * lr
                }
            };
            // A fresh identity each step: gradients of the next step are keyed to it.
            e.value = Tensor { t: new_w };
        }
    }
}

impl std::ops::Mul<f32> for Tensor {
    type Output = Tensor;
    fn mul(self, s: f32) -> Tensor {
        Tensor { t: self.t * s }
    }
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
    use crate::engine::nn::{Init, Linear};
    use crate::engine::{graph::Axis2, Engine};

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
}
