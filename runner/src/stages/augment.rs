//! `augment`: declares the views (chains of augmentation plugins) that pretraining draws each
//! epoch. Augmentation runs on the fly during pretraining (fresh randomness every epoch); this
//! stage validates the chains against the data's shape, records the recipe (`views.json`) and
//! renders a preview (`preview.parquet`: the first samples through every view).

use super::{mix_seed, write_json, Metrics, StageCtx, StageError};
use crate::artifacts::dataset::DATASET_FILE;
use crate::artifacts::views::{
    params_map, RecipeStep, Views, ViewsRecipe, PREVIEW_FILE, VIEWS_FILE,
};
use crate::data::{table, Dataset, Split};
use crate::pipeline::AugmentConfig;
use crate::plugins::{AugmentInstance, Registry};

pub(crate) fn steps(cfg: &AugmentConfig) -> Vec<Vec<(String, serde_json::Value)>> {
    cfg.views
        .iter()
        .map(|v| {
            v.iter()
                .map(|a| (a.name.clone(), a.params.clone()))
                .collect()
        })
        .collect()
}

/// Instantiate every augmentation (bad parameters fail here, before anything runs).
pub fn validate(
    cfg: &AugmentConfig,
    registry: &Registry,
) -> Result<Vec<(String, String)>, StageError> {
    let mut out = Vec::new();
    for (name, params) in steps(cfg).into_iter().flatten() {
        let found = registry
            .augmentations
            .get(&name)
            .ok_or_else(|| StageError::Input(registry.not_found("augmentation", &name)))?;
        AugmentInstance::create(found, &name, &params_map(&params))
            .map_err(|e| StageError::Input(e.to_string()))?;
        out.push((name, found.library.digest.clone()));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Each view's output shape from inputs of `input` shape (the check `run` makes, made early:
/// `validate` and `plan` call it when the shape is known, and pretraining checks its model
/// and objective against the sizes).
pub fn view_shapes(
    cfg: &AugmentConfig,
    registry: &Registry,
    input: (usize, usize, usize),
) -> Result<Vec<(usize, usize, usize)>, StageError> {
    Views::build(&steps(cfg), registry, input, None).map(|v| v.view_shapes)
}

pub fn run(cfg: &AugmentConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let input = ctx.input("input")?;
    // Only the preview's rows are read: the views run later, in pretraining, so a dataset of
    // any size passes through here in bounded memory.
    let ds: Dataset =
        crate::data::memory::first_rows(&input.dir.join(DATASET_FILE), Split::Train, cfg.preview)?;
    let views = Views::build(&steps(cfg), ctx.registry, ds.shape, ds.vocab)?;
    let recipe = ViewsRecipe {
        dataset_key: input.key.clone(),
        input_shape: ds.shape,
        output_shape: views.output_shape,
        view_shapes: match views.sizes_differ() {
            true => views.view_shapes.clone(),
            false => Vec::new(),
        },
        views: cfg
            .views
            .iter()
            .zip(&views.chains)
            .map(|(v, chain)| {
                v.iter()
                    .zip(chain)
                    .map(|(a, (inst, _))| RecipeStep {
                        name: a.name.clone(),
                        params: a.params.clone(),
                        library: inst.library().name.clone(),
                        digest: inst.library().digest.clone(),
                    })
                    .collect()
            })
            .collect(),
    };
    write_json(&ctx.out_dir.join(VIEWS_FILE), &recipe)?;
    // Text: the tokenizer travels with the preview, so it can be read as text.
    crate::artifacts::tokenizer::copy(&input.dir, ctx.out_dir)?;

    // Preview: the first train samples through every view (epoch 0 randomness); a view smaller
    // than the first (a local crop) sits in the top-left corner of a black canvas.
    let rows: Vec<usize> = (0..ds.len()).collect();
    let (c, h, w) = views.output_shape;
    let mut preview = Dataset {
        shape: (c, h, w),
        ids: Vec::new(),
        splits: Vec::new(),
        labels: Some(Vec::new()),
        pixels: Vec::new(),
        vocab: ds.vocab,
        tokens: Vec::new(),
    };
    for &r in &rows {
        for v in 0..views.count() {
            let img = views.apply(
                v,
                mix_seed(ctx.seed, super::Stream::Views, 0, ds.ids[r], v as u64),
                ds.image_f32(r),
            )?;
            preview.ids.push(ds.ids[r]);
            preview.splits.push(Split::Train);
            preview.labels.as_mut().expect("set above").push(v as u32);
            if ds.is_text() {
                // What the encoder sees (flags dropped).
                preview.tokens.extend(img.iter().map(|&x| x as u32));
                continue;
            }
            let img = on_canvas(img, views.view_shapes[v], (c, h, w));
            preview.pixels.extend(
                img.iter()
                    .map(|x| (x.clamp(0.0, 1.0) * 255.0).round() as u8),
            );
        }
    }
    table::write_dataset(&preview, &ctx.out_dir.join(PREVIEW_FILE))?;
    let mut m = Metrics::new();
    m.insert("views".into(), views.count() as f64);
    m.insert(
        "augmentations".into(),
        cfg.views.iter().map(|v| v.len()).sum::<usize>() as f64,
    );
    Ok(m)
}

/// `img` of `shape` in the top-left corner of a zero canvas of `canvas` (cropped if larger).
fn on_canvas(
    img: Vec<f32>,
    shape: (usize, usize, usize),
    canvas: (usize, usize, usize),
) -> Vec<f32> {
    if shape == canvas {
        return img;
    }
    let (c, h, w) = canvas;
    let mut out = vec![0f32; c * h * w];
    for ch in 0..c.min(shape.0) {
        for y in 0..h.min(shape.1) {
            for x in 0..w.min(shape.2) {
                out[(ch * h + y) * w + x] = img[(ch * shape.1 + y) * shape.2 + x];
            }
        }
    }
    out
}
