//! Masked-modelling SSL objectives for pretext: MAE (masked autoencoder) for images and MLM
//! (masked language modelling) for text.
//!
//! MAE: the host hides a random `mask_ratio` of each image's patches from a ViT encoder, a
//! light decoder predicts every patch, and the loss is the pixel MSE on the hidden patches only
//! (He et al., 2022), optionally against per-patch normalised pixels.
//!
//! I-JEPA: prediction in latent space (Assran et al., 2023). The host hides several target
//! blocks of a ViT's patch grid from the student (the context encoder), which sees what a
//! context block leaves of the rest; a predictor predicts the EMA teacher's outputs at every
//! target patch, and the loss is the distance between prediction and target in embedding
//! space (smooth L1, as the reference code, or squared error), against layer-normalised
//! targets. No pixels are reconstructed.
//!
//! MLM: a token augmentation (`token_mask`, `span_mask`) chooses and corrupts positions of
//! each sequence and flags them; the host runs the text transformer and a prediction head over
//! the vocabulary at the flagged positions; the loss is the cross-entropy against the original
//! tokens (Devlin et al., 2019).

use pretext_plugin::{
    Axis, Error, Inputs, LatentPrediction, Needs, Objective, Ops, Params, Result, Tensor,
};

/// MAE: reconstruct masked patches.
pub struct Mae {
    mask_ratio: f64,
    norm_pix: bool,
}

impl Objective for Mae {
    const NAME: &'static str = "mae";
    const SUMMARY: &'static str =
        "MAE: reconstruct randomly masked patches from the visible ones (ViT encoder)";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `mask_ratio` | float in (0, 1) | 0.75 | fraction of patches hidden from the encoder |
| `norm_pix` | bool | true | predict per-patch normalised pixels (mean 0, std 1 within each patch) |

Needs `model = { arch = \"vit\", ... }` and one view.
";

    fn new(params: &mut Params) -> Result<Self> {
        let mask_ratio = params.f64("mask_ratio", 0.75)?;
        if !(mask_ratio > 0.0 && mask_ratio < 1.0) {
            return Err(Error::msg(format!(
                "mae: `mask_ratio` = {mask_ratio} must be strictly between 0 and 1"
            )));
        }
        let norm_pix = params.bool("norm_pix", true)?;
        Ok(Mae {
            mask_ratio,
            norm_pix,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 1,
            mask_ratio: Some(self.mask_ratio),
            ..Needs::default()
        }
    }

    fn loss<'a>(&mut self, ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let (pred, target, mask) = inputs.masked_patches()?;
        mae_loss(ops, &pred, &target, &mask, self.norm_pix)
    }
}

/// I-JEPA: predict the teacher's embeddings of hidden blocks from the visible context.
pub struct IJepa {
    latent: LatentPrediction,
    momentum: (f64, f64),
    smooth_l1: bool,
    normalize_targets: bool,
}

/// A `[low, high]` range parameter within `lo..=hi`.
fn range(
    params: &mut Params,
    key: &str,
    default: (f64, f64),
    lo: f64,
    hi: f64,
) -> Result<(f64, f64)> {
    let v = params.f64_list(key, &[default.0, default.1])?;
    match v[..] {
        [a, b] if a >= lo && a <= b && b <= hi && a.is_finite() && b.is_finite() => Ok((a, b)),
        _ => Err(Error::msg(format!(
            "ijepa: `{key}` = {v:?} must be two numbers [low, high] with {lo} <= low <= high <= {hi}"
        ))),
    }
}

impl Objective for IJepa {
    const NAME: &'static str = "ijepa";
    const SUMMARY: &'static str =
        "I-JEPA: predict the EMA teacher's embeddings of hidden blocks from the visible context (ViT encoder)";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `blocks` | int 1–16 | 4 | target blocks per image |
| `target_scale` | [low, high] in (0, 1] | [0.15, 0.2] | a target block's area as a fraction of the patch grid |
| `target_aspect` | [low, high] > 0 | [0.75, 1.5] | a target block's height / width (log-uniform) |
| `context_scale` | [low, high] in (0, 1] | [0.85, 1.0] | the context block's area (square); the student sees its patches outside every target |
| `predictor_depth` | int 1–12 | 2 | transformer blocks of the predictor |
| `predictor_dim` | int ≥ 1 | 64 | width of the predictor (heads: 4, 2 or 1, the most that divide it) |
| `momentum_start` | float in [0, 1] | 0.996 | EMA momentum of the teacher at the start (cosine schedule) |
| `momentum_end` | float in [0, 1] | 1.0 | EMA momentum at the end |
| `loss` | \"smooth_l1\" or \"mse\" | \"smooth_l1\" | distance between prediction and target, averaged over every value |
| `normalize_targets` | bool | true | layer-normalise each target embedding (no affine) before the loss |

Needs `model = { arch = \"vit\", ... }` and one view (the image, lightly augmented or not).
Block sizes are drawn once per batch and positions per image; the student's context keeps the
batch's smallest size. The stage saves the EMA teacher's encoder (the student never sees a
whole image). Reports `pred_std` and `target_std` (the spread of predictions and of
the normalised targets across rows: a collapsed predictor shows `pred_std` near 0).
";

    fn new(params: &mut Params) -> Result<Self> {
        let blocks = params.usize("blocks", 4)?;
        if !(1..=16).contains(&blocks) {
            return Err(Error::msg(format!(
                "ijepa: `blocks` = {blocks} must be between 1 and 16"
            )));
        }
        let target_scale = range(params, "target_scale", (0.15, 0.2), 1e-6, 1.0)?;
        let target_aspect = range(params, "target_aspect", (0.75, 1.5), 1e-3, 1e3)?;
        let context_scale = range(params, "context_scale", (0.85, 1.0), 1e-6, 1.0)?;
        let predictor_depth = params.usize("predictor_depth", 2)?;
        if !(1..=12).contains(&predictor_depth) {
            return Err(Error::msg(format!(
                "ijepa: `predictor_depth` = {predictor_depth} must be between 1 and 12"
            )));
        }
        let predictor_dim = params.usize("predictor_dim", 64)?;
        if !(1..=4096).contains(&predictor_dim) {
            return Err(Error::msg(format!(
                "ijepa: `predictor_dim` = {predictor_dim} must be between 1 and 4096"
            )));
        }
        let momentum = (
            params.f64_in("momentum_start", 0.996, 0.0, 1.0)?,
            params.f64_in("momentum_end", 1.0, 0.0, 1.0)?,
        );
        let smooth_l1 = match params.string("loss", "smooth_l1")?.as_str() {
            "smooth_l1" => true,
            "mse" => false,
            other => {
                return Err(Error::msg(format!(
                    "ijepa: `loss` = \"{other}\" is not known; use \"smooth_l1\" or \"mse\""
                )))
            }
        };
        let normalize_targets = params.bool("normalize_targets", true)?;
        Ok(IJepa {
            latent: LatentPrediction {
                blocks: blocks as u32,
                target_scale,
                target_aspect,
                context_scale,
                predictor_depth: predictor_depth as u32,
                predictor_dim: predictor_dim as u32,
            },
            momentum,
            smooth_l1,
            normalize_targets,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 1,
            ema_teacher: Some(self.momentum),
            latent: Some(self.latent),
            ..Needs::default()
        }
    }

    fn loss<'a>(&mut self, ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let (pred, target) = inputs.latent_predictions()?;
        ijepa_loss(ops, &pred, &target, self.smooth_l1, self.normalize_targets)
    }
}

/// Each row normalised to mean 0 and variance 1 (a layer norm without affine, eps 1e-6).
fn layer_norm<'a>(x: &Tensor<'a>) -> Result<Tensor<'a>> {
    let centred = x.sub(&x.mean(Axis::Cols)?)?;
    let var = centred.square()?.mean(Axis::Cols)?;
    centred.div(&var.add_scalar(1e-6)?.sqrt()?)
}

/// The mean over every value of the smooth-L1 (β = 1) or squared distance between the
/// predictions and the (detached, optionally layer-normalised) targets.
pub fn ijepa_loss<'a>(
    ops: &'a Ops,
    pred: &Tensor<'a>,
    target: &Tensor<'a>,
    smooth_l1: bool,
    normalize_targets: bool,
) -> Result<Tensor<'a>> {
    if pred.shape()? != target.shape()? {
        return Err(Error::msg(format!(
            "ijepa: predictions {:?} and targets {:?} differ in shape",
            pred.shape()?,
            target.shape()?
        )));
    }
    let mut target = target.detach()?;
    if normalize_targets {
        target = layer_norm(&target)?;
    }
    let d = pred.sub(&target)?;
    let loss = if smooth_l1 {
        // 0.5·d² where |d| < 1, |d| − 0.5 elsewhere: 0.5·min(|d|,1)² + (|d| − min(|d|,1)).
        let a = d.abs()?;
        let small = a.clamp_max(1.0)?;
        small.square()?.mul_scalar(0.5)?.add(&a.sub(&small)?)?
    } else {
        d.square()?
    };
    let spread = |t: &Tensor<'a>| -> Result<Tensor<'a>> {
        let c = t.sub(&t.mean(Axis::Rows)?)?;
        c.square()?.mean(Axis::Rows)?.sqrt()?.mean(Axis::All)
    };
    ops.report("pred_std", &spread(&pred.detach()?)?)?;
    ops.report("target_std", &spread(&target)?)?;
    loss.mean(Axis::All)
}

/// Mean over masked patches of the per-patch mean squared error.
pub fn mae_loss<'a>(
    ops: &'a Ops,
    pred: &Tensor<'a>,
    target: &Tensor<'a>,
    mask: &Tensor<'a>,
    norm_pix: bool,
) -> Result<Tensor<'a>> {
    let target = if norm_pix {
        let centred = target.sub(&target.mean(Axis::Cols)?)?;
        let var = centred.square()?.mean(Axis::Cols)?;
        centred.div(&var.add_scalar(1e-6)?.sqrt()?)?
    } else {
        *target
    };
    let per_patch = pred.sub(&target.detach()?)?.square()?.mean(Axis::Cols)?;
    let masked = per_patch.mul(mask)?.sum(Axis::All)?;
    let count = mask.sum(Axis::All)?.clamp_min(1.0)?;
    let loss = masked.div(&count)?;
    ops.report("masked_fraction", &mask.mean(Axis::All)?)?;
    Ok(loss)
}

/// MLM: predict the original token at every position the views flagged.
pub struct Mlm;

impl Objective for Mlm {
    const NAME: &'static str = "mlm";
    const SUMMARY: &'static str =
        "MLM: predict the original tokens at masked positions (BERT; text transformer)";
    const PARAMS_DOC: &'static str = "\
No parameters: the masking is the view's job (`token_mask` or `span_mask` from
`pretext-augment-text`, with its own `prob`, `mask`, `random`). Needs one view and
`model = { arch = \"transformer\", ... }`. Reports `masked_accuracy` and `perplexity`
(on the training batches; the pretrain stage also measures both on held-out sequences).
";

    fn new(_params: &mut Params) -> Result<Self> {
        Ok(Mlm)
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 1,
            masked_tokens: true,
            ..Needs::default()
        }
    }

    fn loss<'a>(&mut self, ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let (logits, targets) = inputs.masked_tokens()?;
        mlm_loss(ops, &logits, &targets)
    }
}

/// Mean cross-entropy of `logits (n, vocab)` against `targets`; reports the accuracy of the
/// arg-max prediction and the perplexity.
pub fn mlm_loss<'a>(ops: &'a Ops, logits: &Tensor<'a>, targets: &[u32]) -> Result<Tensor<'a>> {
    let (n, vocab) = logits.shape()?;
    if n == 0 || n != targets.len() {
        return Err(Error::msg(format!(
            "mlm: {n} logit rows for {} targets",
            targets.len()
        )));
    }
    if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::msg(format!(
            "mlm: target token {bad} is outside the vocabulary of {vocab}"
        )));
    }
    let loss = logits.cross_entropy(targets)?;
    // On the device: nothing is read back mid-step.
    ops.report("masked_accuracy", &logits.accuracy(targets)?)?;
    ops.report("perplexity", &loss.detach()?.exp()?)?;
    Ok(loss)
}

pretext_plugin::export_plugin! {
    name: "pretext-masked",
    objectives: [Mae, IJepa, Mlm],
    augmentations: [],
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_plugin::testing::{ObjectiveInstance, Plugin};
    use pretext_plugin::Value;

    #[test]
    fn every_objective_builds_through_the_abi() {
        let plugin = Plugin::new(pretext_plugin_entry);
        assert_eq!(plugin.name(), "pretext-masked");
        assert_eq!(plugin.objective_names(), ["mae", "ijepa", "mlm"]);
        assert!(plugin.augmentations().is_empty());
        plugin.check_objective::<Mae>();
        plugin.check_objective::<IJepa>();
        plugin.check_objective::<Mlm>();
    }

    #[test]
    fn ijepa_asks_for_latent_prediction_with_a_teacher() {
        let plugin = Plugin::new(pretext_plugin_entry);
        let entry = plugin.objective("ijepa");
        let inst = ObjectiveInstance::create(entry, &[("blocks", Value::Int(3))]).unwrap();
        let needs = inst.needs().unwrap();
        assert_eq!(needs.views, 1);
        assert_eq!(needs.ema_teacher, Some((0.996, 1.0)));
        let latent = needs.latent.unwrap();
        assert_eq!(latent.blocks, 3);
        assert_eq!(latent.target_scale, (0.15, 0.2));
        assert_eq!(latent.predictor_dim, 64);
        for (key, value, says) in [
            ("blocks", Value::Int(0), "between 1 and 16"),
            (
                "target_scale",
                Value::FloatList(vec![0.3, 0.2]),
                "low <= high",
            ),
            ("context_scale", Value::FloatList(vec![0.5]), "two numbers"),
            ("loss", Value::Str("l3".into()), "smooth_l1"),
            ("predictor_depth", Value::Int(0), "between 1 and 12"),
        ] {
            let err = ObjectiveInstance::create(entry, &[(key, value)])
                .err()
                .unwrap();
            assert!(err.to_string().contains(says), "{key}: {err}");
        }
    }
}
