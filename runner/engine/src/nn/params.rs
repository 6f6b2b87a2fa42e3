//! The parameter store: every tensor of a model by name, value and kind, the LoRA and
//! adapter attachments (what they are; attaching, folding and applying them is in
//! `lora.rs`), and seeded initialisation.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{Engine, Tensor};

/// What a stored tensor is: decides weight decay and whether an optimizer touches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamKind {
    /// Matrices of linear and conv layers (weight decay applies).
    Weight,
    /// Biases and norm scales/shifts (no weight decay).
    NoDecay,
    /// Non-trained state such as batch-norm running statistics.
    Buffer,
}

#[derive(Debug, Clone)]
pub struct ParamEntry {
    pub name: String,
    pub value: Tensor,
    pub kind: ParamKind,
}

/// Index of a tensor in a [`ParamStore`].
pub type Pid = usize;

/// All tensors of a model, by name, plus the parameter-efficient additions attached to its
/// linear layers (keyed by the weight they modify).
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    pub entries: Vec<ParamEntry>,
    /// LoRA: `W x` becomes `W x + scale · B(A x)` for these weights.
    pub lora: BTreeMap<Pid, Lora>,
    /// Bottleneck adapters applied to these layers' outputs: `y + U relu(D y)`.
    pub adapters: BTreeMap<Pid, Adapter>,
}

/// A low-rank update of one weight matrix `(in, out)`: `A (in, r)`, `B (r, out)`, scale α/r.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Lora {
    pub a: Pid,
    pub b: Pid,
    pub scale: f32,
}

/// A residual bottleneck adapter after a layer with `out` outputs: down `(out, k)` + bias,
/// up `(k, out)` + bias (up starts at zero, so the adapter starts as the identity).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adapter {
    pub down: Pid,
    pub down_bias: Pid,
    pub up: Pid,
    pub up_bias: Pid,
}

impl ParamStore {
    /// Append a tensor; its index is its [`Pid`].
    pub fn add(&mut self, name: String, value: Tensor, kind: ParamKind) -> Pid {
        self.entries.push(ParamEntry { name, value, kind });
        self.entries.len() - 1
    }
    pub fn get(&self, id: Pid) -> &Tensor {
        &self.entries[id].value
    }
    /// Number of trainable scalars.
    pub fn trainable_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.kind != ParamKind::Buffer)
            .map(|e| e.value.len())
            .sum()
    }
    /// Copy values from `other` for every name both have with equal shapes.
    pub fn copy_matching(&mut self, other: &ParamStore) -> usize {
        let mut n = 0;
        for e in &mut self.entries {
            if let Some(o) = other
                .entries
                .iter()
                .find(|o| o.name == e.name && o.value.shape() == e.value.shape())
            {
                e.value = o.value.clone();
                n += 1;
            }
        }
        n
    }
}

/// Seeded initialisation (PyTorch's default for linear layers: U(±1/√fan_in)).
pub struct Init {
    rng: StdRng,
}

impl Init {
    pub fn new(seed: u64) -> Init {
        Init {
            rng: StdRng::seed_from_u64(seed),
        }
    }
    /// Uniform in `±bound`.
    pub fn uniform(&mut self, e: &Engine, rows: usize, cols: usize, bound: f32) -> Tensor {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| self.rng.gen_range(-bound..=bound))
            .collect();
        e.tensor(v, rows, cols)
            .expect("shape matches by construction")
    }

    /// Normal with mean 0 and standard deviation `std` (Box–Muller on the same stream).
    pub fn normal(&mut self, e: &Engine, rows: usize, cols: usize, std: f32) -> Tensor {
        let mut v = Vec::with_capacity(rows * cols + 1);
        while v.len() < rows * cols {
            let u1: f64 = self.rng.gen_range(f64::MIN_POSITIVE..1.0);
            let u2: f64 = self.rng.gen_range(0.0..1.0);
            let r = (-2.0 * u1.ln()).sqrt();
            let a = std::f64::consts::TAU * u2;
            v.push((r * a.cos()) as f32 * std);
            v.push((r * a.sin()) as f32 * std);
        }
        v.truncate(rows * cols);
        e.tensor(v, rows, cols)
            .expect("shape matches by construction")
    }
}
