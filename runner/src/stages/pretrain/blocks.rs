//! I-JEPA's masks on a ViT's patch grid: target blocks the student must not see and whose
//! teacher embeddings the predictor predicts, and the context the student sees.
//!
//! As in the paper's collator, each block's size (area and aspect) is drawn once per batch so
//! every image has the same number of patches in block i, and positions are drawn per image
//! (from the image's own seed, so an image gets the same masks whatever else is in its batch
//! once the sizes are fixed). The context is a square block minus every target patch; images
//! keep the batch's smallest context size (a seeded subset of the rest), so the student runs
//! one batch of equal-length sequences.

use rand::{seq::SliceRandom, Rng, SeedableRng};

use crate::plugins::LatentPrediction;

type StdRng = rand::rngs::StdRng;

/// One batch's masks: patch indices (row-major in the grid, ascending).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct BlockMasks {
    /// Per image, the `k` context patches (the same `k` for every image).
    pub(super) context: Vec<Vec<usize>>,
    /// Per target block, per image, its patches (the same count for every image).
    pub(super) targets: Vec<Vec<Vec<usize>>>,
}

/// Draws before giving up on a context that avoids every target.
const TRIES: usize = 20;

/// The `(height, width)` of a block of `scale` of the grid's area and height/width `aspect`.
fn block_size(grid: (usize, usize), scale: f64, aspect: f64) -> (usize, usize) {
    let area = scale * (grid.0 * grid.1) as f64;
    let h = (area * aspect).sqrt().round() as usize;
    let w = (area / aspect).sqrt().round() as usize;
    (h.clamp(1, grid.0), w.clamp(1, grid.1))
}

fn uniform(rng: &mut StdRng, (lo, hi): (f64, f64)) -> f64 {
    match hi > lo {
        true => rng.gen_range(lo..hi),
        false => lo,
    }
}

/// The patches of an `h x w` block at a random position.
fn place(rng: &mut StdRng, grid: (usize, usize), (h, w): (usize, usize)) -> Vec<usize> {
    let top = rng.gen_range(0..=grid.0 - h);
    let left = rng.gen_range(0..=grid.1 - w);
    (top..top + h)
        .flat_map(|r| (left..left + w).map(move |c| r * grid.1 + c))
        .collect()
}

/// The masks of one batch: block sizes from `batch_seed`, positions from each image's seed.
pub(super) fn sample(
    spec: &LatentPrediction,
    grid: (usize, usize),
    batch_seed: u64,
    image_seeds: &[u64],
) -> BlockMasks {
    let tokens = grid.0 * grid.1;
    let mut rng = StdRng::seed_from_u64(batch_seed);
    let log = |(lo, hi): (f64, f64)| (lo.ln(), hi.ln());
    let sizes: Vec<(usize, usize)> = (0..spec.blocks)
        .map(|_| {
            let scale = uniform(&mut rng, spec.target_scale);
            let aspect = uniform(&mut rng, log(spec.target_aspect)).exp();
            block_size(grid, scale, aspect)
        })
        .collect();
    let ctx_size = block_size(grid, uniform(&mut rng, spec.context_scale), 1.0);
    let mut targets = vec![Vec::with_capacity(image_seeds.len()); sizes.len()];
    let mut contexts = Vec::with_capacity(image_seeds.len());
    let mut rngs = Vec::with_capacity(image_seeds.len());
    for &seed in image_seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut hidden = vec![false; tokens];
        let mut drawn = (Vec::new(), Vec::new());
        for _ in 0..TRIES {
            hidden.iter_mut().for_each(|h| *h = false);
            let blocks: Vec<Vec<usize>> = sizes.iter().map(|&s| place(&mut rng, grid, s)).collect();
            blocks.iter().flatten().for_each(|&p| hidden[p] = true);
            let ctx: Vec<usize> = place(&mut rng, grid, ctx_size)
                .into_iter()
                .filter(|&p| !hidden[p])
                .collect();
            let found = !ctx.is_empty();
            drawn = (blocks, ctx);
            if found {
                break;
            }
        }
        let (blocks, mut ctx) = drawn;
        if ctx.is_empty() {
            // The targets cover the context block every time: take what they leave of the
            // grid, or (on a grid they cover entirely) one patch they hide.
            ctx = (0..tokens).filter(|&p| !hidden[p]).collect();
            if ctx.is_empty() {
                ctx.push(blocks[0][0]);
            }
        }
        for (all, b) in targets.iter_mut().zip(blocks) {
            all.push(b);
        }
        contexts.push(ctx);
        rngs.push(rng);
    }
    let keep = contexts.iter().map(Vec::len).min().unwrap_or(0);
    for (ctx, rng) in contexts.iter_mut().zip(&mut rngs) {
        if ctx.len() > keep {
            ctx.shuffle(rng);
            ctx.truncate(keep);
            ctx.sort_unstable();
        }
    }
    BlockMasks {
        context: contexts,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LatentPrediction {
        LatentPrediction::default()
    }

    #[test]
    fn blocks_have_one_size_per_batch_and_the_context_avoids_them() {
        let grid = (7, 7);
        let seeds: Vec<u64> = (0..32).collect();
        let m = sample(&spec(), grid, 99, &seeds);
        assert_eq!(m.targets.len(), 4);
        assert_eq!(m.context.len(), 32);
        let k = m.context[0].len();
        assert!(k >= 1);
        for (b, ctx) in m.context.iter().enumerate() {
            assert_eq!(ctx.len(), k, "every image keeps the batch's context size");
            assert!(ctx.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");
            for block in &m.targets {
                assert_eq!(block[b].len(), block[0].len());
                assert!(ctx.iter().all(|p| !block[b].contains(p)));
            }
        }
        // 15-20 % of 49 patches: 7 to 10 each, allowing for rounding of the sides.
        for block in &m.targets {
            let n = block[0].len();
            assert!((4..=12).contains(&n), "block of {n} patches");
            assert!(block.iter().all(|p| p.iter().all(|&i| i < 49)));
        }
    }

    #[test]
    fn masks_follow_the_seeds() {
        let grid = (4, 4);
        let seeds = [5, 6, 7];
        let a = sample(&spec(), grid, 1, &seeds);
        assert_eq!(a, sample(&spec(), grid, 1, &seeds));
        let others: Vec<BlockMasks> = (2..10).map(|s| sample(&spec(), grid, s, &seeds)).collect();
        assert!(others.iter().any(|o| o != &a));
        // With the sizes fixed, an image's target positions depend on its own seed only.
        let b = sample(&spec(), grid, 1, &[5, 8, 9]);
        assert_eq!(a.targets[0][0], b.targets[0][0]);
    }

    #[test]
    fn a_grid_the_targets_cover_still_leaves_a_context() {
        let wide = LatentPrediction {
            blocks: 4,
            target_scale: (1.0, 1.0),
            ..spec()
        };
        let m = sample(&wide, (2, 2), 3, &[1, 2]);
        assert!(m.context.iter().all(|c| c.len() == 1));
    }
}
