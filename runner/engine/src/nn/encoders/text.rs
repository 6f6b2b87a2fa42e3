//! The text transformer encoder.
//!
//! Inputs are rows of token ids (as exact `f32`s, one row per sequence, `[CLS]` first, `[PAD]`
//! = 0 after the end). The encoder looks the ids up in a learned embedding table
//! ([`Graph::select_rows`] on the parameter, so only the rows used get gradients), adds
//! learned position embeddings, and runs pre-norm transformer blocks in which padding keys
//! are masked out of attention. Pooling is the mean over non-padding tokens (a constant
//! averaging matrix times the token states) or the `[CLS]` token's state.

use serde::{Deserialize, Serialize};

use super::input::InputShape;
use crate::nn::layers::{LayerNorm, Linear};
use crate::nn::params::{Init, ParamKind, ParamStore, Pid};
use crate::nn::transformer::TransformerBlock;
use crate::{shape_err, Engine, Graph, Result, Tensor};

/// The padding id (matches the tokenizer and the plugin SDK).
pub const PAD: u32 = 0;

/// Sizes of a [`TextTransformer`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TextSpec {
    pub vocab: usize,
    pub seq_len: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub cls_pool: bool,
    pub dropout: f32,
    pub embed_dim: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextTransformer {
    spec: TextSpec,
    tok_embed: Pid,
    pos_embed: Pid,
    blocks: Vec<TransformerBlock>,
    norm: LayerNorm,
    head: Linear,
    /// Recompute block activations in backward (a training setting, never saved).
    #[serde(skip)]
    pub(crate) checkpoint: bool,
}

/// Token states of a batch: `(B·L, dim)` after the final norm, and which rows are real
/// tokens (not padding).
pub struct TokenStates {
    pub states: Tensor,
    pub valid: Vec<bool>,
    pub batch: usize,
}

impl TextTransformer {
    pub fn new(e: &Engine, ps: &mut ParamStore, init: &mut Init, s: TextSpec) -> Result<Self> {
        if s.vocab < 6 || s.seq_len == 0 || s.dim == 0 || s.depth == 0 {
            return Err(shape_err(
                "transformer",
                format!(
                    "vocabulary {}, length {}, dim {}, depth {} must all be positive (vocabulary > 5)",
                    s.vocab, s.seq_len, s.dim, s.depth
                ),
            ));
        }
        if s.heads == 0 || !s.dim.is_multiple_of(s.heads) {
            return Err(shape_err(
                "transformer",
                format!("dim {} is not divisible by {} heads", s.dim, s.heads),
            ));
        }
        if !(0.0..1.0).contains(&s.dropout) {
            return Err(shape_err(
                "transformer",
                format!("dropout {} must be in [0, 1)", s.dropout),
            ));
        }
        let tok_embed = ps.add(
            "encoder.token_embed".into(),
            init.uniform(e, s.vocab, s.dim, 0.02),
            ParamKind::NoDecay,
        );
        let pos_embed = ps.add(
            "encoder.pos_embed".into(),
            init.uniform(e, s.seq_len, s.dim, 0.02),
            ParamKind::NoDecay,
        );
        let blocks = (0..s.depth)
            .map(|i| {
                TransformerBlock::new(e, ps, init, &format!("encoder.block{i}"), s.dim, s.heads)
            })
            .collect();
        let norm = LayerNorm::new(e, ps, "encoder.norm", s.dim);
        let head = Linear::new(e, ps, init, "encoder.head", s.dim, s.embed_dim);
        Ok(TextTransformer {
            spec: s,
            tok_embed,
            pos_embed,
            blocks,
            norm,
            head,
            checkpoint: false,
        })
    }

    /// [`TextTransformer::new`] for an encoder reading `input` (one row of `seq_len` ids).
    pub(crate) fn for_input(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        s: TextSpec,
        input: InputShape,
    ) -> Result<Self> {
        if input.len() != s.seq_len {
            return Err(shape_err(
                "transformer",
                format!(
                    "the encoder reads sequences of {} tokens but the input has {} values per sample",
                    s.seq_len,
                    input.len()
                ),
            ));
        }
        Self::new(e, ps, init, s)
    }

    pub fn spec(&self) -> &TextSpec {
        &self.spec
    }

    /// Token ids of `x` (`(B, L)` exact floats), checked against the vocabulary.
    pub fn ids(&self, x: &Tensor) -> Result<Vec<usize>> {
        let (b, l) = x.shape();
        if l != self.spec.seq_len {
            return Err(shape_err(
                "transformer",
                format!("rows of {l} tokens, expected {}", self.spec.seq_len),
            ));
        }
        x.to_vec()
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                if v >= 0.0 && v.fract() == 0.0 && (v as usize) < self.spec.vocab {
                    Ok(v as usize)
                } else {
                    Err(shape_err(
                        "transformer",
                        format!(
                            "sequence {} position {}: {v} is not a token id of the vocabulary of {} (of {b} sequences)",
                            i / l,
                            i % l,
                            self.spec.vocab
                        ),
                    ))
                }
            })
            .collect()
    }

    /// Run embeddings and blocks: the token states of every position.
    pub fn token_states(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        x: &Tensor,
        train: bool,
    ) -> Result<TokenStates> {
        let ids = self.ids(x)?;
        let (b, l) = x.shape();
        let mut valid: Vec<bool> = ids.iter().map(|&t| t != PAD as usize).collect();
        // A sequence of padding only still attends to its first position.
        for s in 0..b {
            if !valid[s * l..(s + 1) * l].iter().any(|&v| v) {
                valid[s * l] = true;
            }
        }
        let tok = g.select_rows(ps.get(self.tok_embed), &ids)?;
        let pos = g.tile_rows(ps.get(self.pos_embed), b)?;
        let mut h = g.add(&tok, &pos)?;
        let p = if train { self.spec.dropout } else { 0.0 };
        h = g.dropout(&h, p)?;
        for block in &self.blocks {
            h = block.forward_opt(ps, g, &h, b, l, Some(&valid), p, self.checkpoint)?;
        }
        Ok(TokenStates {
            states: self.norm.forward(ps, g, &h)?,
            valid,
            batch: b,
        })
    }

    /// Pool token states to one vector per sequence and apply the head: `(B, embed_dim)`.
    pub fn pool(&self, ps: &ParamStore, g: &mut Graph, st: &TokenStates) -> Result<Tensor> {
        let (b, l) = (st.batch, self.spec.seq_len);
        let pooled = if self.spec.cls_pool {
            g.select_rows(&st.states, &(0..b).map(|s| s * l).collect::<Vec<_>>())?
        } else {
            let mut avg = vec![0f32; b * b * l];
            for s in 0..b {
                let row = &st.valid[s * l..(s + 1) * l];
                let n = row.iter().filter(|&&v| v).count().max(1) as f32;
                for (j, &v) in row.iter().enumerate() {
                    if v {
                        avg[s * b * l + s * l + j] = 1.0 / n;
                    }
                }
            }
            let avg = g.host_tensor(avg, b, b * l);
            g.matmul(&avg, &st.states)?
        };
        self.head.forward(ps, g, &pooled)
    }

    /// Sequence embeddings `(B, embed_dim)`.
    pub fn forward(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        x: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let st = self.token_states(ps, g, x, train)?;
        self.pool(ps, g, &st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Axis2;

    fn spec(cls_pool: bool) -> TextSpec {
        TextSpec {
            vocab: 20,
            seq_len: 6,
            dim: 8,
            depth: 2,
            heads: 2,
            cls_pool,
            dropout: 0.0,
            embed_dim: 4,
        }
    }

    fn run(t: &TextTransformer, ps: &ParamStore, e: &Engine, rows: &[[f32; 6]]) -> Vec<f32> {
        let x = e
            .tensor(rows.iter().flatten().copied().collect(), rows.len(), 6)
            .unwrap();
        t.forward(ps, &mut e.graph(false), &x, false)
            .unwrap()
            .to_vec()
    }

    /// Padding changes nothing: a sequence embeds the same whatever its padding positions
    /// hold in the other rows, and whether it is batched with others.
    #[test]
    fn padding_is_masked_and_pooling_ignores_it() {
        let e = Engine::cpu();
        for cls in [false, true] {
            let mut ps = ParamStore::default();
            let t = TextTransformer::new(&e, &mut ps, &mut Init::new(3), spec(cls)).unwrap();
            let a = [2.0, 7.0, 9.0, 11.0, 0.0, 0.0];
            let b = [2.0, 5.0, 5.0, 6.0, 7.0, 8.0];
            let alone = run(&t, &ps, &e, &[a]);
            let batched = run(&t, &ps, &e, &[b, a]);
            for (x, y) in alone.iter().zip(&batched[4..]) {
                assert!((x - y).abs() < 1e-5, "{alone:?} vs {batched:?}");
            }
            // The same tokens with one more real token differ (the mask is not all-true).
            let longer = run(&t, &ps, &e, &[[2.0, 7.0, 9.0, 11.0, 3.0, 0.0]]);
            assert!(alone.iter().zip(&longer).any(|(x, y)| (x - y).abs() > 1e-4));
        }
    }

    #[test]
    fn bad_ids_are_errors_not_panics() {
        let e = Engine::cpu();
        let mut ps = ParamStore::default();
        let t = TextTransformer::new(&e, &mut ps, &mut Init::new(3), spec(false)).unwrap();
        for bad in [20.0, -1.0, 2.5] {
            let x = e.tensor(vec![2.0, 3.0, bad, 0.0, 0.0, 0.0], 1, 6).unwrap();
            let err = t.forward(&ps, &mut e.graph(false), &x, false).unwrap_err();
            assert!(err.to_string().contains("not a token id"), "{err}");
        }
    }

    /// Gradients reach the embedding rows that were used, and only those.
    #[test]
    fn only_used_embedding_rows_get_gradients() {
        let e = Engine::cpu();
        let mut ps = ParamStore::default();
        let t = TextTransformer::new(&e, &mut ps, &mut Init::new(3), spec(false)).unwrap();
        let x = e.tensor(vec![2.0, 7.0, 9.0, 0.0, 0.0, 0.0], 1, 6).unwrap();
        let mut g = e.graph(true);
        let y = t.forward(&ps, &mut g, &x, true).unwrap();
        let y2 = g.square(&y).unwrap();
        let loss = g.sum(&y2, Axis2::All).unwrap();
        let mut grads = g.backward(&loss).unwrap();
        let ge = grads.get(ps.get(t.tok_embed)).to_vec();
        let row_norm = |r: usize| ge[r * 8..(r + 1) * 8].iter().map(|v| v.abs()).sum::<f32>();
        for r in [2, 7, 9] {
            assert!(row_norm(r) > 0.0, "row {r} has no gradient");
        }
        for r in [0, 1, 3, 4, 5, 6, 8, 10, 19] {
            assert_eq!(row_norm(r), 0.0, "row {r} got a gradient");
        }
    }

    /// Dropout is active only in training and is reproducible from the graph seed.
    #[test]
    fn dropout_is_seeded_and_off_in_eval() {
        let e = Engine::cpu();
        let mut ps = ParamStore::default();
        let mut s = spec(false);
        s.dropout = 0.3;
        let t = TextTransformer::new(&e, &mut ps, &mut Init::new(3), s).unwrap();
        let x = e
            .tensor(vec![2.0, 7.0, 9.0, 11.0, 12.0, 0.0], 1, 6)
            .unwrap();
        let train = |seed: u64| {
            let mut g = e.graph(false);
            g.set_seed(seed);
            t.forward(&ps, &mut g, &x, true).unwrap().to_vec()
        };
        assert_eq!(train(1), train(1));
        assert_ne!(train(1), train(2));
        let eval = |seed: u64| {
            let mut g = e.graph(false);
            g.set_seed(seed);
            t.forward(&ps, &mut g, &x, false).unwrap().to_vec()
        };
        assert_eq!(eval(1), eval(2));
    }
}
