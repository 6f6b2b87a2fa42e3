//! The pre-norm transformer block shared by the vision and text encoders and the MAE decoder.

use serde::{Deserialize, Serialize};

use super::layers::{LayerNorm, Linear};
use super::params::{Init, ParamStore, Pid};
use crate::attention::AttnShape;
use crate::{Engine, Graph, Result, Tensor};

/// A pre-norm transformer block: `x + Attn(LN(x))`, then `x + MLP(LN(x))` (GELU, 2x width).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransformerBlock {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl TransformerBlock {
    pub fn new(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        name: &str,
        dim: usize,
        heads: usize,
    ) -> TransformerBlock {
        let mut lin =
            |n: &str, i: usize, o: usize| Linear::new(e, ps, init, &format!("{name}.{n}"), i, o);
        let (q, k, v, o) = (
            lin("q", dim, dim),
            lin("k", dim, dim),
            lin("v", dim, dim),
            lin("o", dim, dim),
        );
        let (fc1, fc2) = (lin("fc1", dim, 2 * dim), lin("fc2", 2 * dim, dim));
        let ln1 = LayerNorm::new(e, ps, &format!("{name}.ln1"), dim);
        let ln2 = LayerNorm::new(e, ps, &format!("{name}.ln2"), dim);
        TransformerBlock {
            ln1,
            q,
            k,
            v,
            o,
            ln2,
            fc1,
            fc2,
            heads,
        }
    }

    /// The trained tensors the block reads, in a fixed order.
    pub(crate) fn params(&self, ps: &ParamStore) -> Vec<Pid> {
        let mut out = Vec::new();
        self.ln1.params(&mut out);
        for l in [&self.q, &self.k, &self.v, &self.o] {
            l.params(ps, &mut out);
        }
        self.ln2.params(&mut out);
        self.fc1.params(ps, &mut out);
        self.fc2.params(ps, &mut out);
        out
    }

    /// [`Self::forward_with`], under activation checkpointing when `checkpoint` (see
    /// [`Graph::checkpoint`]): the block's activations are recomputed in backward instead of
    /// kept, dropout drawing the same masks again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_opt(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        x: &Tensor,
        batch: usize,
        tokens: usize,
        key_valid: Option<&[bool]>,
        dropout: f32,
        checkpoint: bool,
    ) -> Result<Tensor> {
        if !checkpoint || !g.records() {
            return self.forward_with(ps, g, x, batch, tokens, key_valid, dropout);
        }
        let block = self.clone();
        let mask: Option<Vec<bool>> = key_valid.map(<[bool]>::to_vec);
        crate::recompute::checkpoint_block(
            g,
            ps.clone(),
            &self.params(ps),
            x,
            |g| self.forward_with(ps, g, x, batch, tokens, key_valid, dropout),
            move |ps, g, x| block.forward_with(ps, g, x, batch, tokens, mask.as_deref(), dropout),
        )
    }

    /// `x`: `(batch · tokens, dim)`.
    pub fn forward(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        x: &Tensor,
        batch: usize,
        tokens: usize,
    ) -> Result<Tensor> {
        self.forward_with(ps, g, x, batch, tokens, None, 0.0)
    }

    /// [`Self::forward`] with a key mask (`false` = padding, never attended to) and dropout
    /// (probability `dropout`) on the attention and MLP outputs before each residual add.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        x: &Tensor,
        batch: usize,
        tokens: usize,
        key_valid: Option<&[bool]>,
        dropout: f32,
    ) -> Result<Tensor> {
        let a = self.ln1.forward(ps, g, x)?;
        let (q, k, v) = (
            self.q.forward(ps, g, &a)?,
            self.k.forward(ps, g, &a)?,
            self.v.forward(ps, g, &a)?,
        );
        let att = g.attention_masked(
            &q,
            &k,
            &v,
            AttnShape {
                batch,
                tokens,
                heads: self.heads,
            },
            key_valid,
        )?;
        let att = self.o.forward(ps, g, &att)?;
        let att = g.dropout(&att, dropout)?;
        let x = g.add(x, &att)?;
        let m = self.ln2.forward(ps, g, &x)?;
        let m = self.fc1.forward(ps, g, &m)?;
        let m = g.gelu(&m)?;
        let m = self.fc2.forward(ps, g, &m)?;
        let m = g.dropout(&m, dropout)?;
        g.add(&x, &m)
    }
}
