//! The vision transformer encoder.

use serde::{Deserialize, Serialize};

use super::input::{Build, InputShape};
use crate::conv::ConvSpec;
use crate::graph::Axis2;
use crate::nn::layers::{LayerNorm, Linear};
use crate::nn::params::{ParamKind, ParamStore, Pid};
use crate::nn::transformer::TransformerBlock;
use crate::{shape_err, Graph, Result, Tensor};

/// The vision transformer encoder (see [`EncoderSpec::Vit`](crate::nn::EncoderSpec::Vit)).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vit {
    patch: usize,
    tokens: usize,
    /// Patch rows and columns of the input size the position embeddings were built for
    /// (`(0, 0)` in encoders saved before it was recorded: a square grid of `tokens`).
    #[serde(default)]
    grid: (usize, usize),
    embed: Linear,
    pos: Pid,
    cls: Option<Pid>,
    blocks: Vec<TransformerBlock>,
    norm: LayerNorm,
    head: Linear,
    /// Recompute block activations in backward (a training setting, never saved).
    #[serde(skip)]
    pub(crate) checkpoint: bool,
}

impl Vit {
    /// Parameters `encoder.patch_embed`, `encoder.pos_embed`, `encoder.cls_token` (when
    /// `cls_token`), `encoder.block{i}`, `encoder.norm`, `encoder.head`, in that order.
    pub(crate) fn new(
        b: Build,
        patch: usize,
        dim: usize,
        depth: usize,
        heads: usize,
        cls_token: bool,
        embed_dim: usize,
    ) -> Result<Vit> {
        let Build { e, ps, init, input } = b;
        if patch == 0 || !input.height.is_multiple_of(patch) || !input.width.is_multiple_of(patch) {
            return Err(shape_err(
                "vit",
                format!(
                    "patch size {patch} does not divide the {}x{} input",
                    input.height, input.width
                ),
            ));
        }
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(shape_err(
                "vit",
                format!("dim {dim} is not divisible by {heads} heads"),
            ));
        }
        let grid = (input.height / patch, input.width / patch);
        let tokens = grid.0 * grid.1;
        let embed = Linear::new(
            e,
            ps,
            init,
            "encoder.patch_embed",
            patch * patch * input.channels,
            dim,
        );
        let pos = ps.add(
            "encoder.pos_embed".into(),
            init.uniform(e, tokens, dim, 0.02),
            ParamKind::NoDecay,
        );
        let cls = cls_token.then(|| {
            ps.add(
                "encoder.cls_token".into(),
                init.uniform(e, 1, dim, 0.02),
                ParamKind::NoDecay,
            )
        });
        let blocks = (0..depth)
            .map(|i| TransformerBlock::new(e, ps, init, &format!("encoder.block{i}"), dim, heads))
            .collect();
        let norm = LayerNorm::new(e, ps, "encoder.norm", dim);
        let head = Linear::new(e, ps, init, "encoder.head", dim, embed_dim);
        Ok(Vit {
            patch,
            tokens,
            grid,
            embed,
            pos,
            cls,
            blocks,
            norm,
            head,
            checkpoint: false,
        })
    }

    /// `(B, C·H·W)` images → `(B, embed_dim)`: every patch token through the blocks, pooled.
    pub(crate) fn forward(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        x: &Tensor,
        input: InputShape,
    ) -> Result<Tensor> {
        let tok = self.tokens(ps, g, x, input)?;
        let per_sample = tok.shape().0 / x.shape().0.max(1);
        self.encode_tokens(ps, g, &tok, x.shape().0, per_sample)
    }

    /// The built grid (older encoders recorded only the token count: a square grid).
    fn built_grid(&self) -> (usize, usize) {
        match self.grid {
            (0, 0) => {
                let side = (self.tokens as f64).sqrt().round() as usize;
                (side, self.tokens / side.max(1))
            }
            g => g,
        }
    }

    /// The position embeddings for a `rows x cols` patch grid: the learned ones at the built
    /// size, else bilinearly interpolated from them (multi-crop views of another size), as a
    /// fixed linear map so gradients reach the learned table.
    fn positions(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        rows: usize,
        cols: usize,
    ) -> Result<Tensor> {
        let (gr, gc) = self.built_grid();
        let pos = ps.get(self.pos);
        if (rows, cols) == (gr, gc) {
            return Ok(pos.clone());
        }
        let key = format!("vit-pos-interp {gr}x{gc}->{rows}x{cols}");
        let map = g.constant(key, rows * cols, gr * gc, || {
            bilinear_map((gr, gc), (rows, cols))
        });
        g.matmul(&map.as_input(), pos)
    }

    /// Patch tokens `(B·T, dim)` with position embeddings added.
    pub fn tokens(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        x: &Tensor,
        input: InputShape,
    ) -> Result<Tensor> {
        let patches = self.patches(g, x, input)?;
        let tok = self.embed.forward(ps, g, &patches)?;
        let pos = self.positions(ps, g, input.height / self.patch, input.width / self.patch)?;
        let pos = g.tile_rows(&pos, x.shape().0)?;
        g.add(&tok, &pos)
    }

    /// The raw pixel patches `(B·T, patch·patch·C)`, in token order (MAE targets).
    pub fn patches(&self, g: &mut Graph, x: &Tensor, input: InputShape) -> Result<Tensor> {
        let hwc = g.chw_to_hwc(x, input)?;
        let spec = ConvSpec {
            kernel: self.patch,
            stride: self.patch,
            padding: 0,
        };
        g.im2col(&hwc, input.geometry(x.shape().0), spec)
    }

    /// Patch side length.
    pub(crate) fn patch_size(&self) -> usize {
        self.patch
    }

    /// Token width.
    pub(crate) fn dim(&self) -> usize {
        self.embed.outputs
    }

    /// The patch grid `(rows, cols)` at the built input size; tokens are row-major in it.
    pub fn patch_grid(&self) -> (usize, usize) {
        self.built_grid()
    }

    /// Patch tokens per sample.
    pub fn num_tokens(&self) -> usize {
        self.tokens
    }

    /// Whether the encoder prepends a CLS token.
    pub fn has_cls(&self) -> bool {
        self.cls.is_some()
    }

    /// Run the blocks and the final norm on `(B·T', dim)` tokens (`per_sample` = T'), with the
    /// CLS token prepended to each sample when configured. Returns the token outputs and the
    /// tokens per sample including CLS.
    pub fn run_blocks(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        tok: &Tensor,
        batch: usize,
        per_sample: usize,
    ) -> Result<(Tensor, usize)> {
        let (mut h, t) = match self.cls {
            Some(cls) => {
                // [cls; tokens of sample 0; cls; tokens of sample 1; ...]
                let c = g.tile_rows(ps.get(cls), batch)?;
                let both = g.concat(&c, tok, Axis2::Rows)?;
                let idx: Vec<usize> = (0..batch)
                    .flat_map(|b| {
                        std::iter::once(b)
                            .chain((0..per_sample).map(move |i| batch + b * per_sample + i))
                    })
                    .collect();
                (g.select_rows(&both, &idx)?, per_sample + 1)
            }
            None => (tok.clone(), per_sample),
        };
        for block in &self.blocks {
            h = block.forward_opt(ps, g, &h, batch, t, None, 0.0, self.checkpoint)?;
        }
        Ok((self.norm.forward(ps, g, &h)?, t))
    }

    /// Pool token outputs (`t` per sample) to one vector per sample and apply the head.
    pub fn pool(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        h: &Tensor,
        batch: usize,
        t: usize,
    ) -> Result<Tensor> {
        let pooled = match self.cls {
            Some(_) => g.select_rows(h, &(0..batch).map(|b| b * t).collect::<Vec<_>>())?,
            None => g.mean_row_groups(h, t)?,
        };
        self.head.forward(ps, g, &pooled)
    }

    /// Blocks then pooling: `(B, embed_dim)`.
    pub fn encode_tokens(
        &self,
        ps: &ParamStore,
        g: &mut Graph,
        tok: &Tensor,
        batch: usize,
        per_sample: usize,
    ) -> Result<Tensor> {
        let (h, t) = self.run_blocks(ps, g, tok, batch, per_sample)?;
        self.pool(ps, g, &h, batch, t)
    }
}

/// The `(to.0·to.1, from.0·from.1)` matrix that resamples a grid of row-major cells bilinearly
/// (cell centres aligned, as image resizing with `align_corners = false` does).
fn bilinear_map(from: (usize, usize), to: (usize, usize)) -> Vec<f32> {
    // Source coordinate and the two neighbours with their weights along one axis.
    let taps = |n_from: usize, n_to: usize, i: usize| -> [(usize, f32); 2] {
        let x =
            ((i as f64 + 0.5) * n_from as f64 / n_to as f64 - 0.5).clamp(0.0, (n_from - 1) as f64);
        let lo = x.floor() as usize;
        let hi = (lo + 1).min(n_from - 1);
        let t = (x - lo as f64) as f32;
        [(lo, 1.0 - t), (hi, t)]
    };
    let mut m = vec![0f32; to.0 * to.1 * from.0 * from.1];
    for r in 0..to.0 {
        for c in 0..to.1 {
            let row = (r * to.1 + c) * from.0 * from.1;
            for (sr, wr) in taps(from.0, to.0, r) {
                for (sc, wc) in taps(from.1, to.1, c) {
                    m[row + sr * from.1 + sc] += wr * wc;
                }
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::bilinear_map;

    #[test]
    fn bilinear_map_rows_sum_to_one_and_keep_the_same_size() {
        let id = bilinear_map((3, 3), (3, 3));
        for r in 0..9 {
            for c in 0..9 {
                assert_eq!(id[r * 9 + c], f32::from(r == c));
            }
        }
        let down = bilinear_map((4, 4), (2, 2));
        for row in down.chunks(16) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        // Halving a 4x4 grid averages each 2x2 block's inner cells: cell (0,0) of the result
        // reads source cells (0,0), (0,1), (1,0), (1,1) equally.
        assert_eq!(&down[..2], &[0.25, 0.25]);
        assert_eq!(&down[4..6], &[0.25, 0.25]);
    }
}
