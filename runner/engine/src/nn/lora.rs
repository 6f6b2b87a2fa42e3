//! Parameter-efficient fine-tuning on a [`ParamStore`]: LoRA (a low-rank update of a weight
//! matrix) and bottleneck adapters (a residual MLP after a layer's output). Choosing the
//! weights they attach to, attaching them, folding LoRA into the weights, and applying both in
//! a linear layer's forward pass all live here; the attachment records themselves
//! ([`Lora`], [`Adapter`]) are part of the store.

use super::params::{Adapter, Init, Lora, ParamKind, ParamStore, Pid};
use crate::{Engine, Graph, Result, Tensor};

impl ParamStore {
    /// Weight matrices (`ParamKind::Weight` entries) whose name contains any of `patterns`
    /// (every weight when `patterns` is empty).
    pub fn weights_matching(&self, patterns: &[String]) -> Vec<Pid> {
        (0..self.entries.len())
            .filter(|&i| self.entries[i].kind == ParamKind::Weight)
            .filter(|&i| {
                patterns.is_empty()
                    || patterns
                        .iter()
                        .any(|p| self.entries[i].name.contains(p.as_str()))
            })
            .collect()
    }

    /// Attach LoRA of `rank` (scale `alpha / rank`) to each weight in `weights`. `A` starts
    /// small and random, `B` at zero, so the model's output is unchanged at first. Returns the
    /// new trainable entries.
    pub fn attach_lora(
        &mut self,
        e: &Engine,
        init: &mut Init,
        weights: &[Pid],
        rank: usize,
        alpha: f32,
    ) -> Vec<Pid> {
        let mut added = Vec::new();
        for &w in weights {
            let (inp, out) = self.entries[w].value.shape();
            let name = self.entries[w].name.clone();
            let a = self.add(
                format!("{name}.lora_a"),
                init.uniform(e, inp, rank, 1.0 / (inp as f32).sqrt()),
                ParamKind::NoDecay,
            );
            let b = self.add(
                format!("{name}.lora_b"),
                e.zeros(rank, out),
                ParamKind::NoDecay,
            );
            self.lora.insert(
                w,
                Lora {
                    a,
                    b,
                    scale: alpha / rank as f32,
                },
            );
            added.extend([a, b]);
        }
        added
    }

    /// Fold every LoRA update into its weight (`W += scale · A B`) and forget the LoRA
    /// attachments; the LoRA tensors stay in the store (ids are unchanged).
    pub fn fold_lora(&mut self, e: &Engine) -> Result<Vec<Pid>> {
        let lora = std::mem::take(&mut self.lora);
        let mut folded = Vec::new();
        for (w, l) in lora {
            let mut g = e.graph(false);
            let ab = g.matmul(self.get(l.a), self.get(l.b))?;
            let ab = g.mul_scalar(&ab, l.scale)?;
            self.entries[w].value = g.add(self.get(w), &ab)?;
            folded.extend([l.a, l.b]);
        }
        Ok(folded)
    }

    /// Fold every LoRA update into its weight and drop the LoRA tensors: the result is a plain
    /// model with the same outputs. Entries after the removed ones get new ids.
    pub fn merge_lora(&mut self, e: &Engine) -> Result<()> {
        let folded = self.fold_lora(e)?;
        self.remove(&folded);
        Ok(())
    }

    /// Attach a bottleneck adapter of width `bottleneck` after each layer in `weights`.
    pub fn attach_adapters(
        &mut self,
        e: &Engine,
        init: &mut Init,
        weights: &[Pid],
        bottleneck: usize,
    ) -> Vec<Pid> {
        let mut added = Vec::new();
        for &w in weights {
            let out = self.entries[w].value.shape().1;
            let name = self.entries[w].name.clone();
            let bound = 1.0 / (out as f32).sqrt();
            let down = self.add(
                format!("{name}.adapter_down"),
                init.uniform(e, out, bottleneck, bound),
                ParamKind::Weight,
            );
            let down_bias = self.add(
                format!("{name}.adapter_down_bias"),
                e.zeros(1, bottleneck),
                ParamKind::NoDecay,
            );
            let up = self.add(
                format!("{name}.adapter_up"),
                e.zeros(bottleneck, out),
                ParamKind::Weight,
            );
            let up_bias = self.add(
                format!("{name}.adapter_up_bias"),
                e.zeros(1, out),
                ParamKind::NoDecay,
            );
            self.adapters.insert(
                w,
                Adapter {
                    down,
                    down_bias,
                    up,
                    up_bias,
                },
            );
            added.extend([down, down_bias, up, up_bias]);
        }
        added
    }

    /// Remove entries (only ones no layer refers to: LoRA tensors after a merge), renumbering
    /// the remaining LoRA/adapter references.
    fn remove(&mut self, ids: &[Pid]) {
        let keep: Vec<bool> = (0..self.entries.len()).map(|i| !ids.contains(&i)).collect();
        let new_index: Vec<usize> = keep
            .iter()
            .scan(0, |n, &k| {
                let i = *n;
                if k {
                    *n += 1;
                }
                Some(i)
            })
            .collect();
        let mut i = 0;
        self.entries.retain(|_| {
            let k = keep[i];
            i += 1;
            k
        });
        let map = |p: Pid| new_index[p];
        self.lora = self
            .lora
            .iter()
            .map(|(&w, l)| {
                (
                    map(w),
                    Lora {
                        a: map(l.a),
                        b: map(l.b),
                        scale: l.scale,
                    },
                )
            })
            .collect();
        self.adapters = self
            .adapters
            .iter()
            .map(|(&w, a)| {
                (
                    map(w),
                    Adapter {
                        down: map(a.down),
                        down_bias: map(a.down_bias),
                        up: map(a.up),
                        up_bias: map(a.up_bias),
                    },
                )
            })
            .collect();
    }

    /// Whether LoRA or an adapter is attached to weight `w`.
    /// The tensors LoRA and an adapter attached to weight `w` add to its layer.
    pub(crate) fn attachment_params(&self, w: Pid) -> Vec<Pid> {
        let mut out = Vec::new();
        if let Some(l) = self.lora.get(&w) {
            out.extend([l.a, l.b]);
        }
        if let Some(a) = self.adapters.get(&w) {
            out.extend([a.down, a.down_bias, a.up, a.up_bias]);
        }
        out
    }

    pub(crate) fn has_attachment(&self, w: Pid) -> bool {
        self.lora.contains_key(&w) || self.adapters.contains_key(&w)
    }

    /// `y = x W + b` of the layer with weight `w`, with the LoRA update (`+ scale · (x A) B`)
    /// and then the adapter (`y + U relu(D y)`) attached to `w`, if any.
    pub(crate) fn apply_attachments(
        &self,
        g: &mut Graph,
        w: Pid,
        x: &Tensor,
        mut y: Tensor,
    ) -> Result<Tensor> {
        if let Some(l) = self.lora.get(&w) {
            let low = g.matmul(x, self.get(l.a))?;
            let low = g.matmul(&low, self.get(l.b))?;
            let low = g.mul_scalar(&low, l.scale)?;
            y = g.add(&y, &low)?;
        }
        if let Some(a) = self.adapters.get(&w) {
            let h = g.matmul(&y, self.get(a.down))?;
            let h = g.add(&h, self.get(a.down_bias))?;
            let h = g.relu(&h)?;
            let h = g.matmul(&h, self.get(a.up))?;
            let h = g.add(&h, self.get(a.up_bias))?;
            y = g.add(&y, &h)?;
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Encoder, EncoderSpec, InputShape};

    /// LoRA starts as a no-op, trains only its own tensors, and merging it into the weights
    /// gives the same outputs as the unmerged model (to float precision).
    #[test]
    fn lora_merge_equals_unmerged_forward_and_adapters_start_as_identity() {
        let e = Engine::cpu();
        let input = InputShape {
            channels: 1,
            height: 4,
            width: 4,
        };
        let spec = EncoderSpec::Mlp {
            hidden: vec![8],
            embed_dim: 3,
            batch_norm: false,
        };
        let mut ps = ParamStore::default();
        let enc = Encoder::new(&e, &mut ps, &mut Init::new(3), &spec, input).unwrap();
        let x = e
            .tensor(
                (0..5 * 16).map(|i| ((i * 7) % 11) as f32 / 11.0).collect(),
                5,
                16,
            )
            .unwrap();
        let run = |ps: &mut ParamStore| {
            enc.forward(ps, &mut e.graph(false), &x, input, false)
                .unwrap()
                .to_vec()
        };
        let before = run(&mut ps);
        let weights = ps.weights_matching(&[]);
        assert_eq!(weights.len(), 2);
        let added = ps.attach_lora(&e, &mut Init::new(4), &weights, 2, 4.0);
        assert_eq!(run(&mut ps), before, "LoRA with B = 0 changes nothing");
        // Give B values (as training would) and compare merged with unmerged.
        for &p in &added {
            if ps.entries[p].name.ends_with("lora_b") {
                let (r, c) = ps.entries[p].value.shape();
                ps.entries[p].value = e
                    .tensor((0..r * c).map(|i| (i as f32 - 3.0) * 0.05).collect(), r, c)
                    .unwrap();
            }
        }
        let unmerged = run(&mut ps);
        assert_ne!(unmerged, before);
        let names_before: Vec<String> = ps.entries.iter().map(|en| en.name.clone()).collect();
        ps.merge_lora(&e).unwrap();
        assert!(ps.lora.is_empty() && ps.entries.len() == names_before.len() - 4);
        let merged = run(&mut ps);
        for (a, b) in merged.iter().zip(&unmerged) {
            assert!((a - b).abs() < 1e-5, "{merged:?} vs {unmerged:?}");
        }
        // Adapters start as the identity (up-projection at zero).
        let mut ps2 = ParamStore::default();
        let enc2 = Encoder::new(&e, &mut ps2, &mut Init::new(3), &spec, input).unwrap();
        let w = ps2.weights_matching(&["encoder.0".to_string()]);
        assert_eq!(w.len(), 1);
        ps2.attach_adapters(&e, &mut Init::new(5), &w, 4);
        assert_eq!(
            enc2.forward(&mut ps2, &mut e.graph(false), &x, input, false)
                .unwrap()
                .to_vec(),
            before
        );
    }
}
