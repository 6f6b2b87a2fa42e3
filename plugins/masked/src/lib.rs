//! Masked-modelling SSL objectives for pretext: MAE (masked autoencoder) for images and MLM
//! (masked language modelling) for text.
//!
//! MAE: the host hides a random `mask_ratio` of each image's patches from a ViT encoder, a
//! light decoder predicts every patch, and the loss is the pixel MSE on the hidden patches only
//! (He et al., 2022), optionally against per-patch normalised pixels.
//!
//! MLM: a token augmentation (`token_mask`, `span_mask`) chooses and corrupts positions of
//! each sequence and flags them; the host runs the text transformer and a prediction head over
//! the vocabulary at the flagged positions; the loss is the cross-entropy against the original
//! tokens (Devlin et al., 2019).

use pretext_plugin::{Axis, Error, Inputs, Needs, Objective, Ops, Params, Result, Tensor};

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
    objectives: [Mae, Mlm],
    augmentations: [],
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_plugin::testing::Plugin;

    #[test]
    fn every_objective_builds_through_the_abi() {
        let plugin = Plugin::new(pretext_plugin_entry);
        assert_eq!(plugin.name(), "pretext-masked");
        assert_eq!(plugin.objective_names(), ["mae", "mlm"]);
        assert!(plugin.augmentations().is_empty());
        plugin.check_objective::<Mae>();
        plugin.check_objective::<Mlm>();
    }
}
