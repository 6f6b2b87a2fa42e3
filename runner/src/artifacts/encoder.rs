//! The encoder artifact: `encoder.safetensors` (weights) and `encoder.json` (what rebuilds the
//! architecture), written by pretrain and finetune, read by probe, finetune and ood_eval.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{read_json, write_json};
use crate::data::Dataset;
use crate::engine::nn::{Encoder, EncoderSpec, Init, InputShape, ParamStore};
use crate::engine::{io, Engine};
use crate::error::{engine_err, io_err, StageError};
use crate::pipeline::{Arch, ModelConfig};

pub const ENCODER_FILE: &str = "encoder.safetensors";
pub const ENCODER_META: &str = "encoder.json";
/// An image–text (CLIP) pretrain stage's text tower, beside its image encoder, in the same
/// format.
pub const TEXT_ENCODER_FILE: &str = "text_encoder.safetensors";
pub const TEXT_ENCODER_META: &str = "text_encoder.json";

/// What a probe needs to rebuild the encoder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncoderMeta {
    pub spec: EncoderSpec,
    pub input: InputShape,
    pub embed_dim: usize,
    pub objective: String,
    /// Key of the dataset the encoder was trained on.
    pub dataset_key: String,
    /// Bottleneck adapters attached by a finetune stage: `(width, layer name filters)`; the
    /// loader re-attaches them before reading the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapters: Option<(usize, Vec<String>)>,
}

/// Embeddings `(n, d)` of dataset rows (eval mode, no augmentation), row-major.
pub fn embed(
    e: &Engine,
    encoder: &Encoder,
    ps: &mut ParamStore,
    input: InputShape,
    ds: &Dataset,
    rows: &[usize],
) -> Result<Vec<f32>, StageError> {
    let mut out = Vec::new();
    for chunk in rows.chunks(512) {
        let x = e.tensor(ds.batch_f32(chunk), chunk.len(), input.len())?;
        let mut g = e.graph(false);
        out.extend(encoder.forward(ps, &mut g, &x, input, false)?.to_vec());
    }
    Ok(out)
}

/// The encoder a stage's `model` table describes, on data of `shape` (`vocab` for token
/// sequences).
pub fn encoder_spec(
    model: &ModelConfig,
    shape: (usize, usize, usize),
    vocab: Option<usize>,
) -> Result<EncoderSpec, StageError> {
    if vocab.is_some() && !matches!(model.arch, Arch::Transformer { .. }) {
        return Err(StageError::Input(
            "the dataset holds token sequences (text): set `model = { arch = \"transformer\", ... }`".into(),
        ));
    }
    Ok(match &model.arch {
        Arch::Transformer {
            dim,
            depth,
            heads,
            pool,
            dropout,
        } => {
            let Some(vocab) = vocab else {
                return Err(StageError::Input(
                    "`model.arch = \"transformer\"` reads token sequences, but the dataset holds images; use arch = \"vit\" for images, or ingest text with format = \"text\"".into(),
                ));
            };
            EncoderSpec::Text {
                vocab,
                seq_len: shape.2,
                dim: *dim,
                depth: *depth,
                heads: *heads,
                cls_pool: *pool == crate::pipeline::Pool::Cls,
                dropout: *dropout as f32,
                embed_dim: model.embed_dim,
            }
        }
        Arch::Mlp { hidden } => EncoderSpec::Mlp {
            hidden: hidden.clone(),
            embed_dim: model.embed_dim,
            batch_norm: model.batch_norm,
        },
        Arch::Convnet { width, flatten } => EncoderSpec::ConvNet {
            width: *width,
            embed_dim: model.embed_dim,
            batch_norm: model.batch_norm,
            flatten: *flatten,
        },
        Arch::Vit {
            patch,
            dim,
            depth,
            heads,
            pool,
        } => EncoderSpec::Vit {
            patch: *patch,
            dim: *dim,
            depth: *depth,
            heads: *heads,
            cls_token: *pool == crate::pipeline::Pool::Cls,
            embed_dim: model.embed_dim,
        },
        Arch::Resnet { width, blocks } => EncoderSpec::ResNet {
            width: *width,
            blocks: *blocks,
            embed_dim: model.embed_dim,
            batch_norm: model.batch_norm,
        },
    })
}

/// Load an encoder written by this stage.
pub fn load_encoder(
    e: &Engine,
    dir: &Path,
) -> Result<(Encoder, ParamStore, EncoderMeta), StageError> {
    load_encoder_as(e, dir, (ENCODER_FILE, ENCODER_META))
}

/// Load the encoder saved in `dir` under `(weights, meta)` file names (a CLIP stage's text
/// tower is `text_encoder.*` beside `encoder.*`).
pub fn load_encoder_as(
    e: &Engine,
    dir: &Path,
    (weights, meta_file): (&str, &str),
) -> Result<(Encoder, ParamStore, EncoderMeta), StageError> {
    let meta_path = dir.join(meta_file);
    if !meta_path.is_file() {
        return Err(StageError::Input(format!(
            "{} does not exist: the stage saved no such encoder (a text tower is saved by a pretrain stage with `text = {{ .. }}`)",
            meta_path.display()
        )));
    }
    let meta: EncoderMeta = read_json(&meta_path)?;
    let mut ps = ParamStore::default();
    let encoder = Encoder::new(e, &mut ps, &mut Init::new(0), &meta.spec, meta.input)?;
    if let Some((width, layers)) = &meta.adapters {
        let weights = ps.weights_matching(layers);
        ps.attach_adapters(e, &mut Init::new(0), &weights, *width);
    }
    io::load(e, &mut ps, &dir.join(weights)).map_err(|err| StageError::Failed(err.to_string()))?;
    Ok((encoder, ps, meta))
}

/// Write an encoder artifact: the weights (with the metadata in the safetensors header, so
/// the file stands alone) and `encoder.json`.
pub fn save_encoder(dir: &Path, ps: &ParamStore, meta: &EncoderMeta) -> Result<(), StageError> {
    save_encoder_as(dir, ps, meta, (ENCODER_FILE, ENCODER_META))
}

/// [`save_encoder`] under `(weights, meta)` file names.
pub fn save_encoder_as(
    dir: &Path,
    ps: &ParamStore,
    meta: &EncoderMeta,
    (weights, meta_file): (&str, &str),
) -> Result<(), StageError> {
    let header = BTreeMap::from([
        ("format".to_string(), "pretext-encoder-v1".to_string()),
        (
            "encoder".to_string(),
            serde_json::to_string(meta).map_err(|err| io_err(dir, err))?,
        ),
    ]);
    io::save(ps, header, &dir.join(weights)).map_err(engine_err)?;
    write_json(&dir.join(meta_file), meta)
}
