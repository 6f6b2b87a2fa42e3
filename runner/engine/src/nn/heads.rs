//! The pretraining heads that read encoder token states: MAE's pixel decoder and BERT's
//! masked-token head.

use serde::{Deserialize, Serialize};

use super::encoders::{InputShape, Vit};
use super::layers::{LayerNorm, Linear};
use super::params::{Init, ParamKind, ParamStore, Pid};
use super::transformer::TransformerBlock;
use crate::graph::Axis2;
use crate::{shape_err, Engine, Graph, Result, Tensor};

/// MAE's light decoder: encoder tokens of the visible patches plus a learned mask token at
/// every hidden position, position embeddings, one transformer block, and a linear map to
/// the pixels of each patch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaeDecoder {
    embed: Linear,
    mask_token: Pid,
    pos: Pid,
    block: TransformerBlock,
    norm: LayerNorm,
    pred: Linear,
    tokens: usize,
}

impl MaeDecoder {
    pub fn new(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        vit: &Vit,
        input: InputShape,
        heads: usize,
    ) -> MaeDecoder {
        let dim = vit.dim();
        let pixels = vit.patch_size() * vit.patch_size() * input.channels;
        MaeDecoder {
            embed: Linear::new(e, ps, init, "mae_decoder.embed", dim, dim),
            mask_token: ps.add(
                "mae_decoder.mask_token".into(),
                init.uniform(e, 1, dim, 0.02),
                ParamKind::NoDecay,
            ),
            pos: ps.add(
                "mae_decoder.pos_embed".into(),
                init.uniform(e, vit.num_tokens(), dim, 0.02),
                ParamKind::NoDecay,
            ),
            block: TransformerBlock::new(e, ps, init, "mae_decoder.block", dim, heads),
            norm: LayerNorm::new(e, ps, "mae_decoder.norm", dim),
            pred: Linear::new(e, ps, init, "mae_decoder.pred", dim, pixels),
            tokens: vit.num_tokens(),
        }
    }

    /// Predict every patch `(B·T, pixels)` from the encoder outputs of the visible patches
    /// `(B·keep, dim)`; `visible[b]` lists sample b's visible patch positions, ascending.
    pub fn forward(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        enc: &Tensor,
        visible: &[Vec<usize>],
    ) -> Result<Tensor> {
        let batch = visible.len();
        let t = self.tokens;
        let keep = visible.first().map_or(0, |v| v.len());
        if keep == 0
            || keep >= t
            || visible.iter().any(|v| v.len() != keep)
            || enc.shape().0 != batch * keep
        {
            return Err(shape_err(
                "mae_decoder",
                format!("{} visible of {t} patches for {batch} samples", keep),
            ));
        }
        let d = self.embed.forward(ps, g, enc)?;
        let masked = t - keep;
        let fill = g.tile_rows(ps.get(self.mask_token), batch * masked)?;
        let all = g.concat(&d, &fill, Axis2::Rows)?;
        // Back to token order: visible tokens from `d`, hidden ones from the mask tokens.
        let mut order = Vec::with_capacity(batch * t);
        for (b, vis) in visible.iter().enumerate() {
            let (mut r, mut m) = (0, 0);
            for i in 0..t {
                if r < keep && vis[r] == i {
                    order.push(b * keep + r);
                    r += 1;
                } else {
                    order.push(batch * keep + b * masked + m);
                    m += 1;
                }
            }
        }
        let full = g.select_rows(&all, &order)?;
        let pos = g.tile_rows(ps.get(self.pos), batch)?;
        let h = g.add(&full, &pos)?;
        let h = self.block.forward(ps, g, &h, batch, t)?;
        let h = self.norm.forward(ps, g, &h)?;
        self.pred.forward(ps, g, &h)
    }
}

/// BERT's prediction head: dense + GELU + layer norm, then a linear map to the vocabulary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlmHead {
    dense: Linear,
    norm: LayerNorm,
    out: Linear,
}

impl MlmHead {
    pub fn new(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        dim: usize,
        vocab: usize,
    ) -> MlmHead {
        MlmHead {
            dense: Linear::new(e, ps, init, "mlm_head.dense", dim, dim),
            norm: LayerNorm::new(e, ps, "mlm_head.norm", dim),
            out: Linear::new(e, ps, init, "mlm_head.out", dim, vocab),
        }
    }

    /// Logits `(n, vocab)` for the token states at `rows`.
    pub fn logits(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        states: &Tensor,
        rows: &[usize],
    ) -> Result<Tensor> {
        let h = g.select_rows(states, rows)?;
        let h = self.dense.forward(ps, g, &h)?;
        let h = g.gelu(&h)?;
        let h = self.norm.forward(ps, g, &h)?;
        self.out.forward(ps, g, &h)
    }
}
