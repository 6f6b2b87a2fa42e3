//! The views artifact: `views.json` (the recipe: chains of augmentation plugins with their
//! parameters and library digests) and `preview.parquet` (the first samples through every
//! view), written by augment; [`Views`] rebuilds the chains for pretraining.

use serde::{Deserialize, Serialize};

use crate::error::StageError;
use crate::plugins::{AugmentInstance, Registry};
use crate::seeds::{mix_seed, Stream};

pub const VIEWS_FILE: &str = "views.json";
pub const PREVIEW_FILE: &str = "preview.parquet";

/// The recorded recipe: what pretraining needs to rebuild the views.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewsRecipe {
    /// Key of the dataset entry the views apply to.
    pub dataset_key: String,
    pub input_shape: (usize, usize, usize),
    pub output_shape: (usize, usize, usize),
    pub views: Vec<Vec<RecipeStep>>,
    /// Each view's output shape, written only when they differ (multi-crop); otherwise every
    /// view has `output_shape`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub view_shapes: Vec<(usize, usize, usize)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipeStep {
    pub name: String,
    pub params: serde_json::Value,
    pub library: String,
    pub digest: String,
}

/// One view: augmentation instances in order, each with its output shape.
pub(crate) type Chain = Vec<(AugmentInstance, (usize, usize, usize))>;

/// Instantiated views: a chain of augmentation instances per view.
pub struct Views {
    pub(crate) chains: Vec<Chain>,
    pub input_shape: (usize, usize, usize),
    /// The first view's output shape: what the model is built for.
    pub output_shape: (usize, usize, usize),
    /// Every view's output shape (views may differ in size: multi-crop).
    pub view_shapes: Vec<(usize, usize, usize)>,
    /// Token sequences: the vocabulary size (`None` for images).
    pub vocab: Option<usize>,
}

pub(crate) fn params_map(v: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap_or_default()
}

impl Views {
    /// Instantiate every augmentation and check that every view keeps the channels of the
    /// first (views may differ in height and width: multi-crop, whose use pretraining checks).
    pub fn build(
        steps: &[Vec<(String, serde_json::Value)>],
        registry: &Registry,
        input: (usize, usize, usize),
        vocab: Option<usize>,
    ) -> Result<Views, StageError> {
        let mut chains = Vec::new();
        let mut shapes: Vec<(usize, usize, usize)> = Vec::new();
        for (vi, view) in steps.iter().enumerate() {
            let mut shape = input;
            let mut chain = Vec::new();
            for (name, params) in view {
                let found = registry
                    .augmentations
                    .get(name)
                    .ok_or_else(|| StageError::Input(registry.not_found("augmentation", name)))?;
                let inst = AugmentInstance::create(found, name, &params_map(params))
                    .map_err(|e| StageError::Input(e.to_string()))?;
                match (inst.is_tokens(), vocab.is_some()) {
                    (true, false) => return Err(StageError::Input(format!(
                        "augmentation `{name}` works on token sequences (text), but the dataset holds images; use image augmentations here"
                    ))),
                    (false, true) => return Err(StageError::Input(format!(
                        "augmentation `{name}` works on images, but the dataset holds token sequences (text); use token augmentations such as `token_mask`, `span_mask`, `token_delete`, `token_swap`"
                    ))),
                    _ => {}
                }
                let out = if inst.is_tokens() {
                    shape
                } else {
                    inst.output_shape(shape)
                        .map_err(|e| StageError::Input(e.to_string()))?
                };
                chain.push((inst, shape));
                shape = out;
            }
            if let Some(first) = shapes.first() {
                if first.0 != shape.0 {
                    return Err(StageError::Input(format!(
                        "view {} produces images with {} channel(s) but view 1 produces {}; every view must keep the channels (views may differ only in height and width)",
                        vi + 1,
                        shape.0,
                        first.0
                    )));
                }
            }
            shapes.push(shape);
            chains.push(chain);
        }
        Ok(Views {
            chains,
            input_shape: input,
            output_shape: shapes.first().copied().unwrap_or(input),
            view_shapes: shapes,
            vocab,
        })
    }

    /// Whether some view differs in size from the first (multi-crop).
    pub fn sizes_differ(&self) -> bool {
        self.view_shapes.iter().any(|s| *s != self.output_shape)
    }

    /// Values per sample of view `v`.
    pub fn view_len(&self, v: usize) -> usize {
        let (c, h, w) = self.view_shapes[v];
        c * h * w
    }

    pub fn count(&self) -> usize {
        self.chains.len()
    }

    /// Apply view `v` to one image with a seed per step derived from `base_seed`.
    pub fn apply(&self, v: usize, base_seed: u64, image: Vec<f32>) -> Result<Vec<f32>, StageError> {
        self.apply_marked(v, base_seed, image, false)
    }

    /// [`Self::apply`]; with `marked`, a token view comes back as `2·L` values: the `L` ids
    /// the encoder sees, then per position the id to predict there (the token the flagging
    /// augmentation saw at that position) or `-1`. Without `marked`, flags are dropped.
    pub fn apply_marked(
        &self,
        v: usize,
        base_seed: u64,
        image: Vec<f32>,
        marked: bool,
    ) -> Result<Vec<f32>, StageError> {
        if let Some(vocab) = self.vocab {
            use pretext_plugin::tokens::TARGET;
            let mut cur: Vec<u32> = image.iter().map(|&x| x.max(0.0) as u32).collect();
            let mut targets: Vec<f32> = vec![-1.0; cur.len()];
            for (pos, (inst, _)) in self.chains[v].iter().enumerate() {
                let mut out = vec![0u32; cur.len()];
                inst.apply_tokens(
                    mix_seed(base_seed, Stream::AugmentStage, pos as u64, 0, 0),
                    &cur,
                    vocab,
                    &mut out,
                )?;
                for (i, (&a, &b)) in cur.iter().zip(&out).enumerate() {
                    match (a & TARGET != 0, b & TARGET != 0) {
                        (false, true) => targets[i] = (a & !TARGET) as f32,
                        // A chosen target must pass through later steps untouched.
                        (true, _) if a != b => {
                            return Err(StageError::Input(format!(
                                "augmentation `{}` changed, moved or unflagged a position an earlier step chose as a prediction target (position {i}); put augmentations that move tokens (`token_delete`, `token_swap`) before the masking one in the view",
                                inst.name
                            )))
                        }
                        _ => {}
                    }
                }
                cur = out;
            }
            let mut out: Vec<f32> = cur.into_iter().map(|t| (t & !TARGET) as f32).collect();
            if marked {
                out.extend(targets);
            }
            return Ok(out);
        }
        let mut cur = image;
        for (pos, (inst, in_shape)) in self.chains[v].iter().enumerate() {
            let out_shape = inst.output_shape(*in_shape)?;
            let mut out = vec![0f32; out_shape.0 * out_shape.1 * out_shape.2];
            inst.apply(
                mix_seed(base_seed, Stream::AugmentStage, pos as u64, 0, 0),
                &cur,
                *in_shape,
                &mut out,
                out_shape,
            )?;
            cur = out;
        }
        Ok(cur)
    }

    /// Libraries used, as (augmentation name, digest).
    pub fn plugins(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .chains
            .iter()
            .flatten()
            .map(|(i, _)| (i.name.clone(), i.library().digest.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}
