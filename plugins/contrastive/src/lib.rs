//! Contrastive SSL objectives for pretext: SimCLR's NT-Xent loss, MoCo (momentum encoder
//! with a queue of negatives), SimCSE (sentence embeddings contrasted across two dropout
//! masks) and CLIP (images contrasted with their captions, a learnable temperature).
//!
//! Depends only on `pretext-plugin`: the loss is built from host tensor ops, so the same code
//! runs on every engine device.

use pretext_plugin::{
    Axis, Error, Inputs, Needs, Objective, Ops, ParamInit, ParamSpec, Params, Result, Rng, Tensor,
};

/// SimCLR (Chen et al., 2020): normalised-temperature cross-entropy over 2N views.
pub struct SimClr {
    temperature: f64,
    projector_hidden: u32,
    projector_dim: u32,
    projector_layers: u32,
}

impl Objective for SimClr {
    const NAME: &'static str = "simclr";
    const SUMMARY: &'static str = "SimCLR: NT-Xent contrastive loss between two augmented views";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `temperature` | float in (0, 10] | 0.5 | softmax temperature τ of the cosine similarities |
| `projector_hidden` | int ≥ 1 | 512 | hidden width of the projector MLP |
| `projector_dim` | int ≥ 1 | 128 | output width of the projector (the loss is computed there) |
| `projector_layers` | int 1..=4 | 2 | linear layers in the projector |
";

    fn new(params: &mut Params) -> Result<Self> {
        let temperature = params.f64_in("temperature", 0.5, 1e-4, 10.0)?;
        let projector_hidden = params.usize("projector_hidden", 512)?;
        let projector_dim = params.usize("projector_dim", 128)?;
        let projector_layers = params.usize("projector_layers", 2)?;
        if projector_hidden == 0 || projector_dim == 0 {
            return Err(pretext_plugin::Error::msg(
                "simclr: `projector_hidden` and `projector_dim` must be at least 1",
            ));
        }
        if !(1..=4).contains(&projector_layers) {
            return Err(pretext_plugin::Error::msg(format!(
                "simclr: `projector_layers` = {projector_layers} must be between 1 and 4"
            )));
        }
        Ok(SimClr {
            temperature,
            projector_hidden: projector_hidden as u32,
            projector_dim: projector_dim as u32,
            projector_layers: projector_layers as u32,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 2,
            projector: Some((
                self.projector_hidden,
                self.projector_dim,
                self.projector_layers,
            )),
            ..Needs::default()
        }
    }

    fn loss<'a>(&mut self, ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let z = inputs.projections()?;
        let loss = nt_xent(ops, &z[0], &z[1], self.temperature)?;
        Ok(loss)
    }
}

/// NT-Xent over the 2N rows of `[a; b]`: row i's positive is its other view, every other row
/// (2N - 2 of them) is a negative; the self-similarity is masked out.
pub fn nt_xent<'a>(
    ops: &'a Ops,
    a: &Tensor<'a>,
    b: &Tensor<'a>,
    temperature: f64,
) -> Result<Tensor<'a>> {
    let (n, _) = a.shape()?;
    let z = a.concat(b, Axis::Rows)?.l2_normalize(Axis::Cols, 1e-8)?;
    let sim = z.matmul(&z.t()?)?.mul_scalar(1.0 / temperature)?;
    // Remove self-pairs: subtracting a large constant on the diagonal makes exp() vanish.
    let logits = sim.sub(&ops.eye(2 * n)?.mul_scalar(1e9)?)?;
    let labels: Vec<u32> = (0..2 * n as u32)
        .map(|i| (i + n as u32) % (2 * n as u32))
        .collect();
    let loss = logits.cross_entropy(&labels)?;
    // Mean cosine similarity of positive pairs: a cheap health signal for the run.
    let pos = a
        .l2_normalize(Axis::Cols, 1e-8)?
        .mul(&b.l2_normalize(Axis::Cols, 1e-8)?)?
        .sum(Axis::Cols)?
        .mean(Axis::All)?
        .detach()?;
    ops.report("positive_cosine", &pos)?;
    Ok(loss)
}

/// MoCo v2 (He et al., 2020; Chen et al., 2020), symmetrised: queries from the online
/// projector, keys from the EMA (momentum) encoder of the other view; negatives are the keys of
/// earlier batches, kept in a queue as persistent state.
pub struct MoCo {
    temperature: f64,
    queue_size: usize,
    momentum: (f64, f64),
    projector_hidden: u32,
    projector_dim: u32,
    seed: u64,
}

impl Objective for MoCo {
    const NAME: &'static str = "moco";
    const SUMMARY: &'static str =
        "MoCo v2: InfoNCE against a momentum encoder's keys and a queue of negatives";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `temperature` | float in (0, 10] | 0.2 | softmax temperature |
| `queue_size` | int ≥ 1 | 4096 | number of negative keys kept from earlier batches |
| `momentum_start` | float in [0, 1] | 0.99 | EMA momentum of the key encoder at the start (cosine schedule) |
| `momentum_end` | float in [0, 1] | 0.999 | EMA momentum at the end |
| `projector_hidden` | int ≥ 1 | 512 | hidden width of the projector |
| `projector_dim` | int ≥ 1 | 128 | output width of the projector |
| `queue_seed` | int | 0 | seed of the random unit vectors the queue starts with |
";

    fn new(params: &mut Params) -> Result<Self> {
        let temperature = params.f64_in("temperature", 0.2, 1e-4, 10.0)?;
        let queue_size = params.usize("queue_size", 4096)?;
        let momentum = (
            params.f64_in("momentum_start", 0.99, 0.0, 1.0)?,
            params.f64_in("momentum_end", 0.999, 0.0, 1.0)?,
        );
        let projector_hidden = params.usize("projector_hidden", 512)?;
        let projector_dim = params.usize("projector_dim", 128)?;
        let seed = params.usize("queue_seed", 0)? as u64;
        if queue_size == 0 || projector_hidden == 0 || projector_dim == 0 {
            return Err(Error::msg(
                "moco: `queue_size`, `projector_hidden` and `projector_dim` must be at least 1",
            ));
        }
        Ok(MoCo {
            temperature,
            queue_size,
            momentum,
            projector_hidden: projector_hidden as u32,
            projector_dim: projector_dim as u32,
            seed,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 2,
            projector: Some((self.projector_hidden, self.projector_dim, 2)),
            ema_teacher: Some(self.momentum),
            uses_state: true,
            ..Needs::default()
        }
    }

    fn loss<'a>(&mut self, ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let q = inputs.projections()?;
        let k = inputs.targets()?;
        let d = self.projector_dim as usize;
        let queue = match ops.state("queue") {
            Some(t) => t,
            None => {
                let mut rng = Rng::new(self.seed);
                let v: Vec<f32> = (0..self.queue_size * d)
                    .map(|_| rng.normal() as f32)
                    .collect();
                ops.constant(&v, self.queue_size, d)?
                    .l2_normalize(Axis::Cols, 1e-8)?
            }
        };
        let keys: Vec<Tensor<'a>> = k
            .iter()
            .map(|t| t.detach()?.l2_normalize(Axis::Cols, 1e-8))
            .collect::<Result<_>>()?;
        let info_nce = |q: &Tensor<'a>, key: &Tensor<'a>| -> Result<Tensor<'a>> {
            let qn = q.l2_normalize(Axis::Cols, 1e-8)?;
            let pos = qn.mul(key)?.sum(Axis::Cols)?;
            let neg = qn.matmul(&queue.t()?)?;
            let logits = pos
                .concat(&neg, Axis::Cols)?
                .mul_scalar(1.0 / self.temperature)?;
            let (n, _) = logits.shape()?;
            logits.cross_entropy(&vec![0u32; n])
        };
        let loss = info_nce(&q[0], &keys[1])?
            .add(&info_nce(&q[1], &keys[0])?)?
            .mul_scalar(0.5)?;
        // Newest keys first; the oldest fall off the end.
        let grown = keys[0]
            .concat(&keys[1], Axis::Rows)?
            .concat(&queue, Axis::Rows)?;
        ops.set_state("queue", &grown.slice(Axis::Rows, 0, self.queue_size)?)?;
        Ok(loss)
    }
}

/// SimCSE, unsupervised (Gao et al., 2021): the same sentence encoded twice with different
/// dropout masks is the positive pair; the other sentences of the batch are the negatives.
/// `L = mean_i −log softmax_j(cos(z₁ᵢ, z₂ⱼ) / τ)[i]`.
pub struct SimCse {
    temperature: f64,
}

impl Objective for SimCse {
    const NAME: &'static str = "simcse";
    const SUMMARY: &'static str =
        "SimCSE: contrast two dropout-noised encodings of the same sentence (text transformer)";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `temperature` | float in (0, 10] | 0.05 | softmax temperature τ of the cosine similarities |

Needs two views and `model = { arch = \"transformer\", dropout = 0.1, ... }`: the views may
be identical (no augmentation) — dropout makes the two encodings differ.
";

    fn new(params: &mut Params) -> Result<Self> {
        Ok(SimCse {
            temperature: params.f64_in("temperature", 0.05, 1e-4, 10.0)?,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 2,
            needs_dropout: true,
            ..Needs::default()
        }
    }

    fn loss<'a>(&mut self, _ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let z = inputs.embeddings()?;
        simcse_loss(&z[0], &z[1], self.temperature)
    }
}

/// One-directional InfoNCE over cosine similarities: row i of `a` against every row of `b`,
/// the positive on the diagonal.
pub fn simcse_loss<'a>(a: &Tensor<'a>, b: &Tensor<'a>, temperature: f64) -> Result<Tensor<'a>> {
    let (cos, labels) = paired_cosines(a, b)?;
    cos.mul_scalar(1.0 / temperature)?.cross_entropy(&labels)
}

/// The `(n, n)` cosine similarities of the rows of `a` with the rows of `b`, and the labels
/// that put each row's pair on the diagonal (`0..n`).
fn paired_cosines<'a>(a: &Tensor<'a>, b: &Tensor<'a>) -> Result<(Tensor<'a>, Vec<u32>)> {
    let (n, _) = a.shape()?;
    let a = a.l2_normalize(Axis::Cols, 1e-8)?;
    let b = b.l2_normalize(Axis::Cols, 1e-8)?;
    Ok((a.matmul(&b.t()?)?, (0..n as u32).collect()))
}

/// The name of CLIP's trainable log inverse temperature.
const LOGIT_SCALE: &str = "logit_scale";

/// CLIP (Radford et al., 2021): an image encoder and a text transformer trained so that each
/// image's embedding is closest to its own caption's among the batch, and each caption's to
/// its own image: the mean of the two cross-entropies over the `n × n` cosine similarities,
/// scaled by `exp(logit_scale)`, a trainable scalar (the inverse temperature, in log space)
/// capped at `max_scale`.
pub struct Clip {
    temperature: f64,
    max_scale: f64,
}

impl Objective for Clip {
    const NAME: &'static str = "clip";
    const SUMMARY: &'static str =
        "CLIP: symmetric InfoNCE between images and their captions, learnable temperature";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `temperature` | float in [0.001, 1] | 0.07 | the temperature the trainable one starts from (`logit_scale` = ln(1/τ)) |
| `max_scale` | float in [1, 1000] | 100 | the largest inverse temperature `exp(logit_scale)` may reach |

Needs one image view and the stage's `text = { input = \"<captions stage>\", .. }`: the host
adds a text transformer over each sample's caption (paired by sample id) and passes its
embeddings after the image's. Both towers end in a linear head to the model's `embed_dim`
(the shared space).
";

    fn new(params: &mut Params) -> Result<Self> {
        let temperature = params.f64_in("temperature", 0.07, 1e-3, 1.0)?;
        let max_scale = params.f64_in("max_scale", 100.0, 1.0, 1000.0)?;
        if 1.0 / temperature > max_scale {
            return Err(Error::msg(format!(
                "clip: `temperature` = {temperature} starts above `max_scale` = {max_scale} (1/τ = {:.1}); raise max_scale or the temperature",
                1.0 / temperature
            )));
        }
        Ok(Clip {
            temperature,
            max_scale,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 1,
            paired_text: true,
            ..Needs::default()
        }
    }

    fn parameters(&self) -> Vec<ParamSpec> {
        vec![ParamSpec {
            name: LOGIT_SCALE,
            rows: 1,
            cols: 1,
            init: ParamInit::Constant((1.0 / self.temperature).ln()),
            weight_decay: false,
        }]
    }

    fn loss<'a>(&mut self, ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let z = inputs.embeddings()?;
        let [image, text] = z.as_slice() else {
            return Err(Error::msg(format!(
                "clip: expected an image view and its caption's embedding, got {} inputs",
                z.len()
            )));
        };
        let scale = ops
            .param(LOGIT_SCALE)?
            .clamp_max(self.max_scale.ln())?
            .exp()?;
        let (loss, i2t) = clip_loss(image, text, &scale)?;
        ops.report("temperature", &scale.powf(-1.0)?.detach()?)?;
        ops.report("image_to_text_accuracy", &i2t)?;
        Ok(loss)
    }
}

/// The symmetric InfoNCE of CLIP over `n` pairs (row i of `image` belongs with row i of
/// `text`), with the cosine similarities multiplied by `scale` (`(1, 1)`); also the batch's
/// image-to-text top-1 accuracy (no gradient).
pub fn clip_loss<'a>(
    image: &Tensor<'a>,
    text: &Tensor<'a>,
    scale: &Tensor<'a>,
) -> Result<(Tensor<'a>, Tensor<'a>)> {
    let (cos, labels) = paired_cosines(image, text)?;
    let logits = cos.mul(scale)?;
    let loss = logits
        .cross_entropy(&labels)?
        .add(&logits.t()?.cross_entropy(&labels)?)?
        .mul_scalar(0.5)?;
    Ok((loss, logits.detach()?.accuracy(&labels)?))
}

pretext_plugin::export_plugin! {
    name: "pretext-contrastive",
    objectives: [SimClr, MoCo, SimCse, Clip],
    augmentations: [],
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_plugin::testing::Plugin;

    #[test]
    fn every_objective_builds_through_the_abi() {
        let plugin = Plugin::new(pretext_plugin_entry);
        assert_eq!(plugin.name(), "pretext-contrastive");
        assert_eq!(
            plugin.objective_names(),
            ["simclr", "moco", "simcse", "clip"]
        );
        assert!(plugin.augmentations().is_empty());
        plugin.check_objective::<SimClr>();
        plugin.check_objective::<MoCo>();
        plugin.check_objective::<SimCse>();
        plugin.check_objective::<Clip>();
    }
}
