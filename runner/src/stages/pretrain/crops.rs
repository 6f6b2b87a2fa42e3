//! Views of different sizes (multi-crop): which models and objectives can take them, and how
//! a step groups them. The first view sets the model's input size; views at that size (the
//! global crops) come first, smaller ones (local crops) after. Each run of equal-sized views
//! goes through the encoder as one batch at its own size.

use std::ops::Range;

use crate::engine::nn::InputShape;
use crate::pipeline::{Arch, PretrainConfig};
use crate::plugins::ObjectiveNeeds;
use crate::stages::StageError;

pub(super) type Shape = (usize, usize, usize);

fn show((c, h, w): Shape) -> String {
    format!("{c}x{h}x{w}")
}

/// Check the objective and model against the views' output shapes (`shapes[v]`), and the
/// number of views against what the objective asks. `objective` names it in messages.
pub(super) fn check(
    cfg: &PretrainConfig,
    needs: &ObjectiveNeeds,
    shapes: Option<&[Shape]>,
    count: usize,
) -> Result<(), StageError> {
    let objective = &cfg.objective.plugin;
    if !needs.accepts_views(count) {
        return Err(StageError::Input(format!(
            "objective `{objective}` needs {} per sample, but its input stage declares {count}; change `views` in the augment stage",
            needs.views_wanted()
        )));
    }
    let Some(shapes) = shapes else {
        return Ok(());
    };
    let first = shapes[0];
    if let Some(k) = needs.teacher_views {
        if let Some(v) = (0..k.min(shapes.len())).find(|&v| shapes[v] != first) {
            return Err(StageError::Input(format!(
                "objective `{objective}` shows its teacher the first {k} views (the global crops), so they must all have view 1's size {}, but view {} is {}; list the global crops first in the augment stage",
                show(first),
                v + 1,
                show(shapes[v])
            )));
        }
    }
    let Some(odd) = shapes.iter().position(|s| *s != first) else {
        return Ok(());
    };
    let sizes = format!(
        "the views differ in size (view {} is {}, view 1 is {})",
        odd + 1,
        show(shapes[odd]),
        show(first)
    );
    if let Some(late) = (odd..shapes.len()).find(|&v| shapes[v] == first) {
        return Err(StageError::Input(format!(
            "{sizes}, and view {} has view 1's size after a smaller one; list the views at the model's input size (global crops) first, then the others (local crops)",
            late + 1
        )));
    }
    match size_refusal(cfg, needs, shapes) {
        Some(why) => Err(StageError::Input(format!("{sizes}, but {why}"))),
        None => Ok(()),
    }
}

/// Why the objective or the model cannot take views at a size other than the model's input
/// (multi-crop's local crops, a curriculum phase's size), with what to change; `None` when
/// they can. `shapes` are every view's, checked against a ViT's patch size.
pub(super) fn size_refusal(
    cfg: &PretrainConfig,
    needs: &ObjectiveNeeds,
    shapes: &[Shape],
) -> Option<String> {
    let objective = &cfg.objective.plugin;
    let head = if needs.decoder.is_some() {
        Some("reconstructs its input with a decoder")
    } else if needs.mask_ratio.is_some() || needs.latent.is_some() {
        Some("masks patches of one view")
    } else if needs.masked_tokens {
        Some("predicts masked tokens")
    } else {
        None
    };
    if let Some(what) = head {
        return Some(format!(
            "objective `{objective}` {what}, which needs every view at the model's input size: give every crop the same `size`"
        ));
    }
    let model_refuses = match &cfg.model.arch {
        Arch::Mlp { .. } => "an `mlp` reads a fixed number of inputs",
        Arch::Convnet { flatten: true, .. } => {
            "a `convnet` with pool = \"flatten\" maps one feature-map size to its head"
        }
        Arch::Transformer { .. } => "a text transformer reads token sequences",
        Arch::Vit { patch, .. } => {
            let s = shapes
                .iter()
                .find(|s| s.1 % patch != 0 || s.2 % patch != 0)?;
            return Some(format!(
                "every size must be a multiple of the ViT's patch size {patch}, and one view is {}: change the crop `size` or `model.patch`",
                show(*s)
            ));
        }
        Arch::Convnet { .. } | Arch::Resnet { .. } => return None,
    };
    Some(format!(
        "the model cannot take that: {model_refuses}; use arch = \"convnet\" (pool = \"mean\"), \"resnet\" or \"vit\", or give every crop the same `size`"
    ))
}

/// The runs of consecutive equal-sized views: each one batch through the encoder.
pub(super) fn groups(shapes: &[Shape]) -> Vec<(InputShape, Range<usize>)> {
    let mut out: Vec<(InputShape, Range<usize>)> = Vec::new();
    for (v, &(c, h, w)) in shapes.iter().enumerate() {
        let shape = InputShape {
            channels: c,
            height: h,
            width: w,
        };
        match out.last_mut() {
            Some((s, r)) if *s == shape => r.end = v + 1,
            _ => out.push((shape, v..v + 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_runs_of_equal_sizes() {
        let g = groups(&[
            (1, 28, 28),
            (1, 28, 28),
            (1, 14, 14),
            (1, 14, 14),
            (1, 14, 14),
        ]);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].0.height, g[0].1.clone()), (28, 0..2));
        assert_eq!((g[1].0.height, g[1].1.clone()), (14, 2..5));
        assert_eq!(groups(&[(3, 8, 8)]).len(), 1);
    }
}
