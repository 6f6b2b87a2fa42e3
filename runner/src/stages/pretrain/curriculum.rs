//! Curriculum pretraining ("start small, then scale"): the phases of one pretrain stage, each
//! a run of epochs with its own view size, crop scale and batch size. A phase's views are the
//! augment stage's recipe with the `size` (and `scale`) of each view's `random_resized_crop`
//! changed: the global crops (the views at the model's input size) get the phase's size, the
//! smaller local crops the same fraction of it. The encoder is the same throughout (the
//! ConvNet and ResNet pool any size, the ViT interpolates its position embeddings); the
//! learning-rate schedule runs over the optimiser steps of all phases together, and the phase
//! of an epoch follows from its number, so a resumed run picks up the phase it was in.

use std::ops::Range;

use serde_json::Value;

use super::crops::{self, Shape};
use crate::artifacts::views::Views;
use crate::engine::optim::Schedule;
use crate::pipeline::{CurriculumPhase, PretrainConfig};
use crate::plugins::{ObjectiveNeeds, Registry};
use crate::stages::StageError;

/// Augmentation chains, one per view: (plugin augmentation, parameters).
pub(super) type Steps = Vec<Vec<(String, Value)>>;

/// The augmentation whose output size and area range a phase sets.
const CROP: &str = "random_resized_crop";

/// One phase as training runs it.
pub(super) struct Phase {
    /// Its epochs (0-based, end exclusive).
    pub(super) epochs: Range<u64>,
    /// Its views, when it changes them; `None`: the augment stage's.
    pub(super) views: Option<Views>,
    /// Batch size (the configured one, at most the train split).
    pub(super) bs: usize,
    pub(super) batches_per_epoch: usize,
}

/// The batch size of `want` on `train` rows over `ranks` ranks, and the batches of an epoch
/// (a short last batch counts when every rank gets a sample of it and there are 2).
pub(super) fn batching(
    want: usize,
    train: usize,
    ranks: usize,
    what: &str,
) -> Result<(usize, usize), StageError> {
    let bs = want.min(train).max(2);
    if bs < 2 * ranks {
        return Err(StageError::Input(format!(
            "{what} {bs} across {ranks} ranks: each rank needs at least 2 samples of every batch; set it to at least {} (the global batch: each rank takes a share) or start fewer ranks",
            2 * ranks
        )));
    }
    Ok((bs, train / bs + usize::from(train % bs >= ranks.max(2))))
}

/// The phases of `cfg` (one covering every epoch when it has no curriculum), their views built
/// and checked against the objective and the model.
pub(super) fn phases(
    cfg: &PretrainConfig,
    needs: &ObjectiveNeeds,
    registry: &Registry,
    base: (&Steps, &Views),
    train: usize,
    ranks: usize,
) -> Result<Vec<Phase>, StageError> {
    if cfg.curriculum.is_empty() {
        let (bs, batches_per_epoch) = batching(cfg.batch_size, train, ranks, "batch_size")?;
        return Ok(vec![Phase {
            epochs: 0..cfg.epochs,
            views: None,
            bs,
            batches_per_epoch,
        }]);
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(cfg.curriculum.len());
    for (i, ph) in cfg.curriculum.iter().enumerate() {
        let views = phase_views(cfg, needs, registry, base, i)?;
        let what = format!("curriculum phase {}: batch_size", i + 1);
        let (bs, batches_per_epoch) = batching(ph.batch_size, train, ranks, &what)?;
        out.push(Phase {
            epochs: start..start + ph.epochs,
            views,
            bs,
            batches_per_epoch,
        });
        start += ph.epochs;
    }
    Ok(out)
}

/// The views of phase `i` (`None` when it keeps the augment stage's), checked.
pub(super) fn phase_views(
    cfg: &PretrainConfig,
    needs: &ObjectiveNeeds,
    registry: &Registry,
    (steps, base): (&Steps, &Views),
    i: usize,
) -> Result<Option<Views>, StageError> {
    let ph = &cfg.curriculum[i];
    if ph.size.is_none() && ph.scale.is_none() {
        return Ok(None);
    }
    let label = format!("curriculum phase {}", i + 1);
    let prefixed = |e: StageError| match e {
        StageError::Input(m) => StageError::Input(format!("{label}: {m}")),
        other => other,
    };
    let changed = phase_steps(steps, &base.view_shapes, ph).map_err(prefixed)?;
    let views = Views::build(&changed, registry, base.input_shape, base.vocab).map_err(prefixed)?;
    crops::check(cfg, needs, Some(&views.view_shapes), views.count()).map_err(prefixed)?;
    if views.output_shape != base.output_shape {
        if let Some(why) = crops::size_refusal(cfg, needs, &views.view_shapes) {
            return Err(StageError::Input(format!(
                "{label} trains at size {} (the model's input is {}x{}), but {why}; or leave `size` out of the phase",
                ph.size.unwrap_or(base.output_shape.1),
                base.output_shape.1,
                base.output_shape.2
            )));
        }
    }
    Ok(Some(views))
}

/// The augment stage's chains with phase `ph`'s size and crop scale applied to each view's
/// (last) `random_resized_crop`; `shapes` are the views' output shapes as declared.
fn phase_steps(steps: &Steps, shapes: &[Shape], ph: &CurriculumPhase) -> Result<Steps, StageError> {
    let global = shapes[0];
    let mut out = steps.clone();
    for (v, chain) in out.iter_mut().enumerate() {
        let is_global = shapes[v] == global;
        let wants_size = ph.size.is_some();
        let wants_scale = ph.scale.is_some() && is_global;
        if !wants_size && !wants_scale {
            continue;
        }
        let what = match (wants_size, wants_scale) {
            (true, true) => "`size` and `scale`",
            (true, false) => "`size`",
            _ => "`scale`",
        };
        let Some(crop) = chain.iter_mut().rev().find(|(name, _)| name == CROP) else {
            return Err(StageError::Input(format!(
                "it sets {what}, which sets the `{CROP}` of each view, but view {} has none; add one to that view in the augment stage (`{{ name = \"{CROP}\", scale = [1.0, 1.0], ratio = [1.0, 1.0] }}` only resizes)",
                v + 1
            )));
        };
        let params = crop.1.as_object_mut().ok_or_else(|| {
            StageError::Input(format!(
                "view {}: the parameters of `{CROP}` are not a table",
                v + 1
            ))
        })?;
        if let Some(size) = ph.size {
            let (_, h, w) = shapes[v];
            if h != w {
                return Err(StageError::Input(format!(
                    "it sets `size`, the side of square views, but view {} is {h}x{w}; make the augment stage's views square (`size` of `{CROP}`)",
                    v + 1
                )));
            }
            // Local crops keep their fraction of the global crops' side.
            let side = ((h * size) as f64 / global.1 as f64).round().max(1.0) as usize;
            params.insert("size".into(), Value::from(side));
        }
        if let (Some([lo, hi]), true) = (ph.scale, is_global) {
            params.insert("scale".into(), serde_json::json!([lo, hi]));
        }
    }
    Ok(out)
}

/// The learning-rate schedule over every phase's optimiser steps: warm-up over the first
/// `warmup_epochs` epochs (whatever their phases), then constant or cosine to the last step.
pub(super) fn schedule(cfg: &PretrainConfig, phases: &[Phase]) -> Schedule {
    let accumulate = (cfg.accumulate as usize).max(1);
    let steps_of = |e: u64| -> u64 {
        phases
            .iter()
            .find(|p| p.epochs.contains(&e))
            .map_or(0, |p| p.batches_per_epoch.div_ceil(accumulate) as u64)
    };
    Schedule {
        base_lr: cfg.optim.lr,
        warmup_steps: (0..cfg.optim.warmup_epochs.min(cfg.epochs))
            .map(steps_of)
            .sum(),
        total_steps: (0..cfg.epochs).map(steps_of).sum(),
        cosine: cfg.optim.schedule == crate::pipeline::Schedule::Cosine,
    }
}

/// The index of the phase epoch `epoch` belongs to.
pub(super) fn index(phases: &[Phase], epoch: u64) -> usize {
    phases
        .iter()
        .position(|p| p.epochs.contains(&epoch))
        .unwrap_or(phases.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps() -> Steps {
        let crop = |size: usize| (CROP.to_string(), serde_json::json!({ "size": size }));
        vec![
            vec![crop(28), ("horizontal_flip".into(), serde_json::json!({}))],
            vec![crop(28)],
            vec![crop(14)],
        ]
    }

    fn phase(size: Option<usize>, scale: Option<[f64; 2]>) -> CurriculumPhase {
        CurriculumPhase {
            epochs: 1,
            size,
            scale,
            batch_size: 64,
        }
    }

    #[test]
    fn a_phase_sets_the_size_of_every_crop_and_the_scale_of_the_global_ones() {
        let shapes = [(1, 28, 28), (1, 28, 28), (1, 14, 14)];
        let out = phase_steps(&steps(), &shapes, &phase(Some(16), Some([0.5, 1.0]))).unwrap();
        assert_eq!(out[0][0].1["size"], 16);
        assert_eq!(out[0][0].1["scale"], serde_json::json!([0.5, 1.0]));
        assert_eq!(out[0][1].0, "horizontal_flip");
        assert_eq!(out[1][0].1["size"], 16);
        // The local crop keeps half the global side and its own scale.
        assert_eq!(out[2][0].1["size"], 8);
        assert!(out[2][0].1.get("scale").is_none());
    }

    #[test]
    fn a_view_without_a_crop_is_refused_by_name() {
        let mut s = steps();
        s[1] = vec![("horizontal_flip".into(), serde_json::json!({}))];
        let shapes = [(1, 28, 28), (1, 28, 28), (1, 14, 14)];
        let err = phase_steps(&s, &shapes, &phase(Some(16), None)).unwrap_err();
        assert!(err.to_string().contains("view 2 has none"), "{err}");
        // A scale alone only touches the global crops: view 3 (local) needs none.
        s[2] = vec![("horizontal_flip".into(), serde_json::json!({}))];
        s[1] = steps()[1].clone();
        assert!(phase_steps(&s, &shapes, &phase(None, Some([0.3, 1.0]))).is_ok());
    }
}
