//! The pretraining heads that read encoder token states: MAE's pixel decoder, I-JEPA's
//! latent predictor and BERT's masked-token head.

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

/// I-JEPA's predictor: the context encoder's patch outputs, mapped to a narrower width, plus
/// a learned mask token at each target patch, fixed 2-D sine-cosine position embeddings for
/// both (as the paper's: a learned table starts too small to tell the target positions apart,
/// and the predictor then settles on the mean target), `depth` transformer blocks, and a map
/// back to the encoder's width at the target patches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JepaPredictor {
    embed: Linear,
    mask_token: Pid,
    blocks: Vec<TransformerBlock>,
    norm: LayerNorm,
    proj: Linear,
    grid: (usize, usize),
    width: usize,
}

/// The `(rows·cols, width)` 2-D sine-cosine position table of a row-major patch grid: the
/// first `width / 2` columns encode the patch's row, the rest its column, each part as `n/2`
/// sines then `n/2` cosines of the position at frequencies `10000^(-i / (n/2))` (an odd
/// part's last column stays 0).
pub fn sincos_2d(grid: (usize, usize), width: usize) -> Vec<f32> {
    let parts = [(0, width / 2), (width / 2, width - width / 2)];
    let mut out = vec![0f32; grid.0 * grid.1 * width];
    for (cell, row) in out.chunks_mut(width.max(1)).enumerate() {
        let at = [cell / grid.1, cell % grid.1];
        for ((start, n), pos) in parts.into_iter().zip(at) {
            let freqs = n / 2;
            for i in 0..freqs {
                let angle = pos as f64 / 10000f64.powf(i as f64 / freqs as f64);
                row[start + i] = angle.sin() as f32;
                row[start + freqs + i] = angle.cos() as f32;
            }
        }
    }
    out
}

impl JepaPredictor {
    /// A predictor of `depth` blocks of width `width` for `vit`'s patch grid; the heads are
    /// 4, 2 or 1, the most that divide `width`.
    pub fn new(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        vit: &Vit,
        depth: usize,
        width: usize,
    ) -> JepaPredictor {
        let heads = [4, 2, 1].into_iter().find(|h| width % h == 0).unwrap_or(1);
        let dim = vit.dim();
        JepaPredictor {
            embed: Linear::new(e, ps, init, "jepa_predictor.embed", dim, width),
            mask_token: ps.add(
                "jepa_predictor.mask_token".into(),
                init.uniform(e, 1, width, 0.02),
                ParamKind::NoDecay,
            ),
            blocks: (0..depth)
                .map(|i| {
                    let name = format!("jepa_predictor.block{i}");
                    TransformerBlock::new(e, ps, init, &name, width, heads)
                })
                .collect(),
            norm: LayerNorm::new(e, ps, "jepa_predictor.norm", width),
            proj: Linear::new(e, ps, init, "jepa_predictor.proj", width, dim),
            grid: vit.patch_grid(),
            width,
        }
    }

    /// Predict the encoder's output `(B·m, dim)` at each image's target patches `targets[b]`
    /// (m each) from the context outputs `(B·k, dim)` at patches `context[b]` (k each).
    pub fn forward(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        ctx: &Tensor,
        context: &[Vec<usize>],
        targets: &[Vec<usize>],
    ) -> Result<Tensor> {
        let batch = context.len();
        let k = context.first().map_or(0, Vec::len);
        let m = targets.first().map_or(0, Vec::len);
        let tokens = self.grid.0 * self.grid.1;
        let in_grid = |v: &Vec<usize>| v.iter().all(|&p| p < tokens);
        if k == 0
            || m == 0
            || targets.len() != batch
            || context.iter().any(|v| v.len() != k || !in_grid(v))
            || targets.iter().any(|v| v.len() != m || !in_grid(v))
            || ctx.shape().0 != batch * k
        {
            return Err(shape_err(
                "jepa_predictor",
                format!("{k} context and {m} target patches of {tokens} for {batch} samples"),
            ));
        }
        let flat = |v: &[Vec<usize>]| v.iter().flatten().copied().collect::<Vec<_>>();
        let (grid, width) = (self.grid, self.width);
        let key = format!("jepa-sincos {}x{} {width}", grid.0, grid.1);
        let pos = g
            .constant(key, tokens, width, || sincos_2d(grid, width))
            .as_input();
        let d = self.embed.forward(ps, g, ctx)?;
        let ctx_pos = g.select_rows(&pos, &flat(context))?;
        let d = g.add(&d, &ctx_pos)?;
        let fill = g.tile_rows(ps.get(self.mask_token), batch * m)?;
        let tgt_pos = g.select_rows(&pos, &flat(targets))?;
        let fill = g.add(&fill, &tgt_pos)?;
        // Each sample's sequence: its k context tokens, then its m mask tokens.
        let both = g.concat(&d, &fill, Axis2::Rows)?;
        let order: Vec<usize> = (0..batch)
            .flat_map(|b| (b * k..(b + 1) * k).chain(batch * k + b * m..batch * k + (b + 1) * m))
            .collect();
        let mut h = g.select_rows(&both, &order)?;
        for block in &self.blocks {
            h = block.forward(ps, g, &h, batch, k + m)?;
        }
        let out: Vec<usize> = (0..batch)
            .flat_map(|b| b * (k + m) + k..(b + 1) * (k + m))
            .collect();
        let h = g.select_rows(&h, &out)?;
        let h = self.norm.forward(ps, g, &h)?;
        self.proj.forward(ps, g, &h)
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

#[cfg(test)]
mod tests {
    use super::sincos_2d;

    #[test]
    fn sincos_positions_are_distinct_and_bounded() {
        let (grid, width) = ((3, 4), 8);
        let t = sincos_2d(grid, width);
        assert_eq!(t.len(), 12 * 8);
        // Patch (0, 0): every sine 0, every cosine 1.
        assert_eq!(&t[..8], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        // Patch (1, 2): the row part at position 1, the column part at position 2.
        let p = &t[6 * 8..7 * 8];
        assert!((p[0] - 1f32.sin()).abs() < 1e-6 && (p[4] - 2f32.sin()).abs() < 1e-6);
        assert!((p[2] - 1f32.cos()).abs() < 1e-6 && (p[6] - 2f32.cos()).abs() < 1e-6);
        let rows: Vec<&[f32]> = t.chunks(8).collect();
        for i in 0..rows.len() {
            for j in i + 1..rows.len() {
                assert_ne!(rows[i], rows[j], "patches {i} and {j}");
            }
        }
        assert!(t.iter().all(|v| v.abs() <= 1.0));
    }
}
