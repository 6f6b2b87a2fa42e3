//! `pretrain`: trains an encoder with an objective plugin on augmented views of the train
//! split. Writes `encoder.safetensors` + `encoder.json` (what probes load), `history.json`
//! (loss, learning rate, embedding spread and objective reports per epoch) and metrics.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use serde::{Deserialize, Serialize};

use super::augment::{Views, ViewsRecipe, VIEWS_FILE};
use super::{
    ingest::DATASET_FILE, io_err, mix_seed, monitor, permutation, read_json, write_json, Metrics,
    StageCtx, StageError, TIMING_PREFIX,
};
use crate::data::{table, Dataset, Split};
use crate::engine::nn::{
    Encoder, EncoderSpec, Init, InputShape, MaeDecoder, Mlp, ParamEntry, ParamKind, ParamStore, Vit,
};
use crate::engine::optim::{self, GradList, OptimSpec, Optimizer, Schedule};
use crate::engine::text::{MlmHead, TextTransformer};
use crate::engine::{io, Axis2, Engine, Graph, Tensor};
use crate::pipeline::{Arch, OptimConfig, PretrainConfig};
use crate::plugins::{ObjectiveInstance, ObjectiveNeeds, Registry, StepInputs};

pub const ENCODER_FILE: &str = "encoder.safetensors";
pub const ENCODER_META: &str = "encoder.json";
pub const HISTORY_FILE: &str = "history.json";

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm of the epoch's last optimizer step (before clipping).
    pub grad_norm: f64,
    /// Mean per-dimension std of L2-normalised embeddings of a fixed monitor set
    /// (→ 0 when the representation collapses; about 1/√d when spread out).
    pub embedding_std: f64,
    /// The same spread measured on the projector output (absent without a projector). The
    /// collapse rule watches this one when it exists: collapse shows there first.
    pub projection_std: Option<f64>,
    /// Effective rank of the monitor embeddings (1 = collapsed to a line).
    pub effective_rank: f64,
    /// Mean squared distance of two views' normalised embeddings (lower = more invariant).
    pub alignment: f64,
    /// log E exp(-2‖x−y‖²) over pairs (lower = more uniform on the sphere).
    pub uniformity: f64,
    pub reports: BTreeMap<String, f64>,
    /// Held-out measurements (masked token modelling: `mlm_accuracy`, `mlm_loss`,
    /// `mlm_perplexity` on test-split sequences with fixed masks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub validation: BTreeMap<String, f64>,
}

impl EpochRecord {
    /// The spread the collapse rule watches: the projector output's when there is one.
    pub fn watched_spread(&self) -> f64 {
        self.projection_std.unwrap_or(self.embedding_std)
    }
}

/// The encoder for `cfg.model` on data of `shape` (`vocab` for token sequences).
pub fn encoder_spec(
    cfg: &PretrainConfig,
    shape: (usize, usize, usize),
    vocab: Option<usize>,
) -> Result<EncoderSpec, StageError> {
    if vocab.is_some() && !matches!(cfg.model.arch, Arch::Transformer { .. }) {
        return Err(StageError::Input(
            "the dataset holds token sequences (text): set `model = { arch = \"transformer\", ... }`".into(),
        ));
    }
    Ok(match &cfg.model.arch {
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
                embed_dim: cfg.model.embed_dim,
            }
        }
        Arch::Mlp { hidden } => EncoderSpec::Mlp {
            hidden: hidden.clone(),
            embed_dim: cfg.model.embed_dim,
            batch_norm: cfg.model.batch_norm,
        },
        Arch::Convnet { width, flatten } => EncoderSpec::ConvNet {
            width: *width,
            embed_dim: cfg.model.embed_dim,
            batch_norm: cfg.model.batch_norm,
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
            embed_dim: cfg.model.embed_dim,
        },
        Arch::Resnet { width, blocks } => EncoderSpec::ResNet {
            width: *width,
            blocks: *blocks,
            embed_dim: cfg.model.embed_dim,
            batch_norm: cfg.model.batch_norm,
        },
    })
}

fn optim_spec(o: &OptimConfig) -> OptimSpec {
    match o.optimizer {
        crate::pipeline::Optimizer::Lars { momentum, eta } => OptimSpec::Lars {
            momentum: momentum as f32,
            weight_decay: o.weight_decay as f32,
            eta: eta as f32,
        },
        crate::pipeline::Optimizer::Sgd { momentum } => OptimSpec::Sgd {
            momentum: momentum as f32,
            weight_decay: o.weight_decay as f32,
            nesterov: false,
        },
        crate::pipeline::Optimizer::AdamW { betas } => OptimSpec::AdamW {
            beta1: betas[0] as f32,
            beta2: betas[1] as f32,
            eps: 1e-8,
            weight_decay: o.weight_decay as f32,
        },
    }
}

fn objective(cfg: &PretrainConfig, registry: &Registry) -> Result<ObjectiveInstance, StageError> {
    let name = &cfg.objective.plugin;
    let found = registry
        .objectives
        .get(name)
        .ok_or_else(|| StageError::Input(registry.not_found("objective", name)))?;
    let params = cfg
        .objective
        .params
        .as_object()
        .cloned()
        .unwrap_or_default();
    ObjectiveInstance::create(found, name, &params).map_err(|e| StageError::Input(e.to_string()))
}

/// Instantiate the objective (bad parameters fail here); check it against the number of views
/// the input stage declares, when known.
pub fn validate(
    cfg: &PretrainConfig,
    registry: &Registry,
    views: Option<usize>,
) -> Result<Vec<(String, String)>, StageError> {
    let obj = objective(cfg, registry)?;
    let needs = obj.needs().map_err(|e| StageError::Input(e.to_string()))?;
    if let Some(v) = views {
        if v != needs.views {
            return Err(StageError::Input(format!(
                "objective `{}` needs {} views per sample, but its input stage declares {v}; change `views` in the augment stage",
                cfg.objective.plugin, needs.views
            )));
        }
    }
    if needs.masked_tokens && !matches!(cfg.model.arch, Arch::Transformer { .. }) {
        return Err(StageError::Input(format!(
            "objective `{}` predicts masked tokens, which needs a text transformer: set `model = {{ arch = \"transformer\", ... }}`",
            cfg.objective.plugin
        )));
    }
    if needs.needs_dropout
        && !matches!(cfg.model.arch, Arch::Transformer { dropout, .. } if dropout > 0.0)
    {
        return Err(StageError::Input(format!(
            "objective `{}` makes its views differ through dropout, but the model has none: set `model = {{ arch = \"transformer\", dropout = 0.1, ... }}`",
            cfg.objective.plugin
        )));
    }
    if needs.mask_ratio.is_some() && !matches!(cfg.model.arch, Arch::Vit { .. }) {
        return Err(StageError::Input(format!(
            "objective `{}` masks image patches, which needs a vision transformer: set `model = {{ arch = \"vit\", ... }}`",
            cfg.objective.plugin
        )));
    }
    Ok(vec![(
        cfg.objective.plugin.clone(),
        obj.library().digest.clone(),
    )])
}

/// Encoder plus the heads the objective asked for, all in one [`ParamStore`]: the encoder's
/// entries come first (`enc_len` of them), so the saved encoder is a prefix of the store.
struct Model {
    input: InputShape,
    encoder: Encoder,
    enc_len: usize,
    projector: Option<Mlp>,
    predictor: Option<Mlp>,
    decoder: Option<Mlp>,
    /// Masked patch modelling: the mask ratio and the MAE decoder.
    mae: Option<(f64, MaeDecoder)>,
    /// Masked token modelling: the prediction head over the vocabulary.
    mlm: Option<MlmHead>,
}

/// The outputs of one forward pass over all views (rows: view-major).
struct Outputs {
    emb: Tensor,
    proj: Option<Tensor>,
    pred: Option<Tensor>,
    dec: Option<Tensor>,
}

impl Model {
    fn new(
        e: &Engine,
        ps: &mut ParamStore,
        spec: &EncoderSpec,
        input: InputShape,
        needs: &ObjectiveNeeds,
        seed: u64,
    ) -> Result<Model, StageError> {
        let mut init = Init::new(seed);
        let encoder = Encoder::new(e, ps, &mut init, spec, input)?;
        let enc_len = ps.entries.len();
        let mlp = |ps: &mut ParamStore,
                   init: &mut Init,
                   name: &str,
                   inp: usize,
                   hidden: usize,
                   layers: usize,
                   out: usize| {
            let mut widths = vec![inp];
            widths.extend(std::iter::repeat(hidden).take(layers.saturating_sub(1)));
            widths.push(out);
            Mlp::new(e, ps, init, name, &widths, true)
        };
        let projector = needs
            .projector
            .map(|(h, o, l)| mlp(ps, &mut init, "projector", spec.embed_dim(), h, l, o));
        let proj_out = needs.projector.map_or(spec.embed_dim(), |p| p.1);
        let predictor = needs
            .predictor_hidden
            .map(|h| mlp(ps, &mut init, "predictor", proj_out, h, 2, proj_out));
        let decoder = needs.decoder.map(|(h, l)| {
            mlp(
                ps,
                &mut init,
                "decoder",
                spec.embed_dim(),
                h,
                l,
                input.len(),
            )
        });
        let mae = match (needs.mask_ratio, &encoder) {
            (None, _) => None,
            (Some(ratio), Encoder::Vit(vit)) => {
                Some((ratio, MaeDecoder::new(e, ps, &mut init, vit, input, 4)))
            }
            (Some(_), _) => {
                return Err(StageError::Input(
                    "masked patch modelling needs `model.arch = \"vit\"`".into(),
                ))
            }
        };
        let mlm =
            match (needs.masked_tokens, &encoder) {
                (false, _) => None,
                (true, Encoder::Text(t)) => {
                    Some(MlmHead::new(e, ps, &mut init, t.spec().dim, t.spec().vocab))
                }
                (true, _) => return Err(StageError::Input(
                    "masked token modelling needs `model.arch = \"transformer\"` on a text dataset"
                        .into(),
                )),
            };
        Ok(Model {
            input,
            encoder,
            enc_len,
            projector,
            predictor,
            decoder,
            mae,
            mlm,
        })
    }

    /// Forward through the encoder and heads. `full = false` stops after the projector (the
    /// EMA teacher needs no predictor or decoder).
    fn forward(
        &self,
        ps: &mut ParamStore,
        g: &mut Graph,
        x: &Tensor,
        train: bool,
        full: bool,
    ) -> Result<Outputs, StageError> {
        let emb = self.encoder.forward(ps, g, x, self.input, train)?;
        let proj = self
            .projector
            .as_ref()
            .map(|p| p.forward(ps, g, &emb, train))
            .transpose()?;
        let pred = match (&self.predictor, &proj, full) {
            (Some(p), Some(z), true) => Some(p.forward(ps, g, z, train)?),
            _ => None,
        };
        let dec = match (&self.decoder, full) {
            (Some(d), true) => Some(d.forward(ps, g, &emb, train)?),
            _ => None,
        };
        Ok(Outputs {
            emb,
            proj,
            pred,
            dec,
        })
    }

    fn encoder_store(&self, ps: &ParamStore) -> ParamStore {
        ParamStore {
            entries: ps.entries[..self.enc_len].to_vec(),
            ..ParamStore::default()
        }
    }
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

/// Load an encoder written by this stage.
pub fn load_encoder(
    e: &Engine,
    dir: &Path,
) -> Result<(Encoder, ParamStore, EncoderMeta), StageError> {
    let meta: EncoderMeta = read_json(&dir.join(ENCODER_META))?;
    let mut ps = ParamStore::default();
    let encoder = Encoder::new(e, &mut ps, &mut Init::new(0), &meta.spec, meta.input)?;
    if let Some((width, layers)) = &meta.adapters {
        let weights = ps.weights_matching(layers);
        ps.attach_adapters(e, &mut Init::new(0), &weights, *width);
    }
    io::load(e, &mut ps, &dir.join(ENCODER_FILE))
        .map_err(|err| StageError::Failed(err.to_string()))?;
    Ok((encoder, ps, meta))
}

/// Augment `batch` through every view, in parallel over samples; deterministic per
/// (seed, epoch, sample id, view).
fn augment_batch(
    views: &Views,
    ds: &Dataset,
    batch: &[usize],
    seed: u64,
    epoch: u64,
    marked: bool,
) -> Result<Vec<Vec<f32>>, StageError> {
    let per = views.output_shape.0 * views.output_shape.1 * views.output_shape.2;
    // Marked token views carry the targets after the ids (see `Views::apply_marked`).
    let per = if marked && views.vocab.is_some() {
        2 * per
    } else {
        per
    };
    // On the shared rayon pool: while a step trains, its idle moments produce the next views.
    let mut out: Vec<Vec<f32>> = (0..views.count())
        .map(|_| vec![0f32; batch.len() * per])
        .collect();
    for (v, buf) in out.iter_mut().enumerate() {
        buf.par_chunks_mut(per)
            .zip(batch.par_iter())
            .with_min_len(8)
            .try_for_each(|(slot, &r)| -> Result<(), StageError> {
                let img = views.apply_marked(
                    v,
                    mix_seed(seed, super::Stream::Views, epoch, ds.ids[r], v as u64),
                    ds.image_f32(r),
                    marked,
                )?;
                slot.copy_from_slice(&img);
                Ok(())
            })?;
    }
    Ok(out)
}

/// Why a loss or gradient norm became non-finite after `steps_done` optimizer steps, what to
/// change, and where the last good checkpoint is.
fn divergence_hint(
    steps_done: u64,
    base_lr: f64,
    lr_now: f64,
    checkpoint_dir: Option<&Path>,
) -> String {
    let why = if steps_done == 0 {
        format!(
            "no optimizer step has been taken yet, so the objective or the data is the likely cause, not the learning rate (optim.lr = {base_lr})"
        )
    } else {
        format!(
            "training diverged after {steps_done} finite optimizer step(s): the learning rate is likely too high (optim.lr = {base_lr}, {lr_now:.3e} at this step); lower `optim.lr`, add warmup (`optim.warmup_epochs`) or set `grad_clip`"
        )
    };
    let kept = match checkpoint_dir {
        Some(dir) if dir.join(CHECKPOINT_META).exists() => {
            let epochs = read_json::<CheckpointMeta>(&dir.join(CHECKPOINT_META))
                .map(|m| format!(" (after epoch {})", m.epochs_done))
                .unwrap_or_default();
            format!(
                "; the last good checkpoint{epochs} is kept in {}",
                dir.display()
            )
        }
        Some(_) => "; no healthy epoch has been checkpointed yet".into(),
        None => String::new(),
    };
    format!("{why}{kept}")
}

/// Per-run training state that a checkpoint must capture to resume bit-for-bit.
struct TrainState {
    ps: ParamStore,
    teacher: Option<ParamStore>,
    opt: Optimizer,
    objective_state: HashMap<String, Tensor>,
    history: Vec<EpochRecord>,
    /// Optimizer steps taken.
    step: u64,
}

const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
const CHECKPOINT_META: &str = "checkpoint.json";

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    /// Epochs completed.
    epochs_done: u64,
    step: u64,
    optimizer_steps: u64,
    state_keys: Vec<(String, (usize, usize))>,
    history: Vec<EpochRecord>,
}

/// Write a checkpoint after `epochs_done` epochs (files replaced atomically).
fn save_checkpoint(
    e: &Engine,
    dir: &Path,
    st: &TrainState,
    epochs_done: u64,
) -> Result<(), StageError> {
    let mut all = ParamStore::default();
    let mut push = |name: String, t: &Tensor| {
        all.entries.push(ParamEntry {
            name,
            value: t.clone(),
            kind: ParamKind::Buffer,
        });
    };
    for en in &st.ps.entries {
        push(format!("student/{}", en.name), &en.value);
    }
    if let Some(t) = &st.teacher {
        for en in &t.entries {
            push(format!("teacher/{}", en.name), &en.value);
        }
    }
    let (optimizer_steps, opt) = st.opt.export();
    for (name, t) in &opt {
        push(format!("optimizer/{name}"), t);
    }
    let mut keys: Vec<&String> = st.objective_state.keys().collect();
    keys.sort();
    for k in &keys {
        push(format!("state/{k}"), &st.objective_state[*k]);
    }
    let meta = CheckpointMeta {
        epochs_done,
        step: st.step,
        optimizer_steps,
        state_keys: keys
            .iter()
            .map(|k| ((*k).clone(), st.objective_state[*k].shape()))
            .collect(),
        history: st.history.clone(),
    };
    let _ = e;
    // A failed write leaves no partial `.tmp` behind: it would hold the space the next try
    // needs.
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let wrote = io::save(&all, BTreeMap::new(), &tmp)
        .map_err(super::engine_err)
        .and_then(|()| {
            std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE)).map_err(|err| io_err(dir, err))
        });
    if let Err(err) = wrote {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    let tmp = dir.join(format!("{CHECKPOINT_META}.tmp"));
    let wrote = write_json(&tmp, &meta).and_then(|()| {
        std::fs::rename(&tmp, dir.join(CHECKPOINT_META)).map_err(|err| io_err(dir, err))
    });
    if let Err(err) = wrote {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    Ok(())
}

/// Restore a checkpoint into `st`; returns the number of epochs it completed.
fn load_checkpoint(e: &Engine, dir: &Path, st: &mut TrainState) -> Result<Option<u64>, StageError> {
    let meta_path = dir.join(CHECKPOINT_META);
    if !meta_path.exists() || !dir.join(CHECKPOINT_FILE).exists() {
        return Ok(None);
    }
    let meta: CheckpointMeta = read_json(&meta_path)?;
    // A template with every tensor the checkpoint must hold, filled by name.
    let mut template = ParamStore::default();
    let mut push = |name: String, shape: (usize, usize)| {
        template.entries.push(ParamEntry {
            name,
            value: e.zeros(shape.0, shape.1),
            kind: ParamKind::Buffer,
        });
    };
    for en in &st.ps.entries {
        push(format!("student/{}", en.name), en.value.shape());
    }
    if let Some(t) = &st.teacher {
        for en in &t.entries {
            push(format!("teacher/{}", en.name), en.value.shape());
        }
    }
    for (name, t) in st.opt.export().1 {
        push(format!("optimizer/{name}"), t.shape());
    }
    for (k, shape) in &meta.state_keys {
        push(format!("state/{k}"), *shape);
    }
    io::load(e, &mut template, &dir.join(CHECKPOINT_FILE)).map_err(|err| {
        StageError::Failed(format!(
            "cannot resume from the checkpoint in {}: {err}",
            dir.display()
        ))
    })?;
    let by_name: HashMap<String, Tensor> = template
        .entries
        .into_iter()
        .map(|en| (en.name, en.value))
        .collect();
    for en in &mut st.ps.entries {
        en.value = by_name[&format!("student/{}", en.name)].clone();
    }
    if let Some(t) = &mut st.teacher {
        for en in &mut t.entries {
            en.value = by_name[&format!("teacher/{}", en.name)].clone();
        }
    }
    let opt: HashMap<String, Tensor> = by_name
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("optimizer/")
                .map(|n| (n.to_string(), v.clone()))
        })
        .collect();
    st.opt
        .import(meta.optimizer_steps, &opt)
        .map_err(StageError::Failed)?;
    st.objective_state = meta
        .state_keys
        .iter()
        .map(|(k, _)| (k.clone(), by_name[&format!("state/{k}")].clone()))
        .collect();
    st.history = meta.history;
    st.step = meta.step;
    Ok(Some(meta.epochs_done))
}

/// The collapse rule. The spread of L2-normalised d-dimensional outputs is about 1/√d when
/// they are spread out and → 0 when they collapse, so `collapse.min_std` is stated for a
/// 128-dimensional output and scaled by √(128/d) (0.01 is the same fraction of a spread-out
/// representation — about 11 % — at every width). An epoch counts toward collapse only when its
/// spread is below that threshold **and** not recovering: it grew by less than 10 % over the
/// previous epoch (the first epoch is compared with the spread before training). A randomly
/// initialised network often starts narrow and objectives with variance terms widen it epoch by
/// epoch; a collapsing one shrinks or stays flat.
struct Collapse {
    threshold: f64,
}

/// How much an epoch's spread must grow over the previous one to count as recovering.
const RECOVERING: f64 = 1.10;

/// The width `collapse.min_std` is stated for.
const REFERENCE_WIDTH: f64 = 128.0;

impl Collapse {
    fn new(min_std: f64, width: usize) -> Collapse {
        Collapse {
            threshold: min_std * (REFERENCE_WIDTH / width.max(1) as f64).sqrt().min(1.0),
        }
    }
    fn on(&self) -> bool {
        self.threshold > 0.0
    }
    /// Whether an epoch with `spread` (after one with `previous`) counts toward collapse.
    fn collapsing(&self, spread: f64, previous: Option<f64>) -> bool {
        self.on() && spread < self.threshold && previous.is_none_or(|p| spread < p * RECOVERING)
    }
    /// The current run of collapsing epochs at the end of `history` (resuming a checkpoint).
    fn streak(&self, initial: Option<f64>, history: &[EpochRecord]) -> u64 {
        let mut run = 0;
        let mut previous = initial;
        for r in history {
            let s = r.watched_spread();
            run = if self.collapsing(s, previous) {
                run + 1
            } else {
                0
            };
            previous = Some(s);
        }
        run
    }
}

/// Health of the representation on the monitor set, after an epoch.
struct Health {
    std: f64,
    /// Spread of the projector output (what the objective acts on), when there is one.
    proj_std: Option<f64>,
    rank: f64,
    alignment: f64,
    uniformity: f64,
}

impl Health {
    /// The spread the collapse rule watches (see [`EpochRecord::watched_spread`]).
    fn watched(&self) -> f64 {
        self.proj_std.unwrap_or(self.std)
    }
}

fn health(
    e: &Engine,
    model: &Model,
    ps: &mut ParamStore,
    views: &Views,
    ds: &Dataset,
    monitor: &[usize],
    seed: u64,
    d: usize,
) -> Result<Health, StageError> {
    let emb = embed(e, &model.encoder, ps, model.input, ds, monitor)?;
    let proj_std = match &model.projector {
        Some(_) => {
            let mut out = Vec::new();
            let mut width = 0;
            for chunk in monitor.chunks(512) {
                let x = e.tensor(ds.batch_f32(chunk), chunk.len(), model.input.len())?;
                let mut g = e.graph(false);
                let z = model
                    .forward(ps, &mut g, &x, false, false)?
                    .proj
                    .expect("projector exists");
                width = z.shape().1;
                out.extend(z.to_vec());
            }
            Some(monitor::normalized_std(&out, width))
        }
        None => None,
    };
    // Two views of (up to) 256 monitor samples, with randomness of their own stream.
    let few = &monitor[..monitor.len().min(256)];
    let mut per_view = |v: usize| -> Result<Vec<f32>, StageError> {
        let mut buf = Vec::with_capacity(few.len() * model.input.len());
        for &r in few {
            buf.extend(views.apply(
                v % views.count(),
                mix_seed(seed, super::Stream::MonitorViews, 0, ds.ids[r], v as u64),
                ds.image_f32(r),
            )?);
        }
        let x = e.tensor(buf, few.len(), model.input.len())?;
        let mut g = e.graph(false);
        Ok(model
            .encoder
            .forward(ps, &mut g, &x, model.input, false)?
            .to_vec())
    };
    let (a, b) = (per_view(0)?, per_view(1)?);
    Ok(Health {
        std: monitor::normalized_std(&emb, d),
        proj_std,
        rank: monitor::effective_rank(&emb, d),
        alignment: monitor::alignment(&a, &b, d),
        uniformity: monitor::uniformity(&emb[..few.len() * d], d),
    })
}

/// Everything a training loop needs, built from the stage config and its input: the views,
/// the dataset, the objective, the model with its heads, the optimiser state and the schedule.
struct Prepared {
    views: Views,
    ds: Dataset,
    obj: ObjectiveInstance,
    needs: ObjectiveNeeds,
    spec: EncoderSpec,
    model: Model,
    st: TrainState,
    recipe: ViewsRecipe,
    /// Train-split rows.
    train: Vec<usize>,
    /// Batch size (the configured one, at most the train split).
    bs: usize,
    batches_per_epoch: usize,
    total_steps: u64,
    schedule: Schedule,
}

fn prepare(cfg: &PretrainConfig, ctx: &StageCtx) -> Result<Prepared, StageError> {
    let e = ctx.engine;
    let views_dir = &ctx.input("input")?.dir;
    let recipe: ViewsRecipe = read_json(&views_dir.join(VIEWS_FILE))?;
    let ds = table::read_dataset(&ctx.entry_by_key(&recipe.dataset_key)?.join(DATASET_FILE))?;
    let steps: Vec<Vec<(String, serde_json::Value)>> = recipe
        .views
        .iter()
        .map(|v| {
            v.iter()
                .map(|s| (s.name.clone(), s.params.clone()))
                .collect()
        })
        .collect();
    let views = Views::build(&steps, ctx.registry, ds.shape, ds.vocab)?;
    let obj = objective(cfg, ctx.registry)?;
    let needs = obj.needs()?;
    if needs.views != views.count() {
        return Err(StageError::Input(format!(
            "objective `{}` needs {} views, the input declares {}",
            cfg.objective.plugin,
            needs.views,
            views.count()
        )));
    }
    let (c, h, w) = views.output_shape;
    let input = InputShape {
        channels: c,
        height: h,
        width: w,
    };
    let spec = encoder_spec(cfg, views.output_shape, ds.vocab)?;
    let mut ps = ParamStore::default();
    let model = Model::new(
        e,
        &mut ps,
        &spec,
        input,
        &needs,
        mix_seed(ctx.seed, super::Stream::ModelInit, 0, 0, 0),
    )?;
    let train = ds.rows(Split::Train);
    if train.len() < 2 {
        return Err(StageError::Input(
            "the train split has fewer than 2 samples".into(),
        ));
    }
    let bs = cfg.batch_size.min(train.len()).max(2);
    let batches_per_epoch = train.len() / bs + usize::from(train.len() % bs >= 2);
    let accumulate = (cfg.accumulate as usize).max(1);
    // The last batch of an epoch always completes an optimizer step.
    let steps_per_epoch = batches_per_epoch.div_ceil(accumulate) as u64;
    let total_steps = cfg.epochs * steps_per_epoch;
    let schedule = Schedule {
        base_lr: cfg.optim.lr,
        warmup_steps: cfg.optim.warmup_epochs * steps_per_epoch,
        total_steps,
        cosine: cfg.optim.schedule == crate::pipeline::Schedule::Cosine,
    };
    let st = TrainState {
        teacher: needs.ema_teacher.map(|_| ps.clone()),
        opt: Optimizer::new(optim_spec(&cfg.optim), &ps),
        ps,
        objective_state: HashMap::new(),
        history: Vec::new(),
        step: 0,
    };
    Ok(Prepared {
        views,
        ds,
        obj,
        needs,
        spec,
        model,
        st,
        recipe,
        train,
        bs,
        batches_per_epoch,
        total_steps,
        schedule,
    })
}

/// One optimiser step from accumulated gradients (`micro` micro-batches): average, clip or
/// measure the global norm, apply with the scheduled learning rate, move the EMA teacher.
/// Returns the gradient norm; a non-finite norm applies nothing (the caller reports it).
/// One micro-batch's loss and the objective's reports, still on the device.
type Pending = (Tensor, Vec<(String, Tensor)>);

/// A training step's result: the loss and reports (on the device) and the gradients.
type StepResult = (Tensor, GradList, Vec<(String, Tensor)>);

/// What one optimiser step read back from the device, in one transfer.
struct StepValues {
    /// One loss per micro-batch.
    losses: Vec<f64>,
    /// Every report of every micro-batch, in order.
    reports: Vec<(String, f32)>,
    grad_norm: f64,
}

/// Average the micro-batches' gradients, read the losses, the gradient norm and the reports
/// back in one device-to-host transfer, and (when all are finite) clip and apply the update.
/// A non-finite loss is the objective's error; a non-finite norm is returned for the caller
/// to report (nothing is applied).
#[allow(clippy::too_many_arguments)]
fn update(
    e: &Engine,
    st: &mut TrainState,
    needs: &ObjectiveNeeds,
    obj: &ObjectiveInstance,
    mut gs: GradList,
    pending: Vec<Pending>,
    grad_clip: Option<f64>,
    schedule: &Schedule,
    total_steps: u64,
    epoch: u64,
) -> Result<StepValues, StageError> {
    let micro = pending.len();
    if micro > 1 {
        optim::scale(&mut gs, 1.0 / micro as f32);
    }
    let norm = optim::global_norm_tensor(e, &gs);
    let mut read: Vec<&Tensor> = pending.iter().map(|(l, _)| l).collect();
    read.push(&norm);
    read.extend(pending.iter().flat_map(|(_, r)| r.iter().map(|(_, t)| t)));
    let vals = e.read_scalars(&read)?;
    let losses: Vec<f64> = vals[..micro].iter().map(|v| *v as f64).collect();
    let grad_norm = vals[micro] as f64;
    let reports = pending
        .iter()
        .flat_map(|(_, r)| r.iter().map(|(k, _)| k.clone()))
        .zip(vals[micro + 1..].iter().copied())
        .collect();
    if let Some(bad) = losses.iter().find(|v| !v.is_finite()) {
        return Err(obj.non_finite_loss(*bad, epoch as u32, st.step).into());
    }
    let out = StepValues {
        losses,
        reports,
        grad_norm,
    };
    if !grad_norm.is_finite() {
        return Ok(out);
    }
    if let Some(max) = grad_clip {
        optim::clip_to(&mut gs, grad_norm, max);
    }
    st.opt.apply(&mut st.ps, &gs, schedule.lr(st.step) as f32);
    if let (Some(t), Some((m0, m1))) = (&mut st.teacher, needs.ema_teacher) {
        let m = optim::cosine_ramp(m0, m1, st.step, total_steps);
        optim::ema_update(t, &st.ps, m as f32);
    }
    st.step += 1;
    Ok(out)
}

pub fn run(cfg: &PretrainConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let e = ctx.engine;
    let Prepared {
        views,
        ds,
        mut obj,
        needs,
        spec,
        model,
        mut st,
        recipe,
        train,
        bs,
        batches_per_epoch,
        total_steps,
        schedule,
    } = prepare(cfg, ctx)?;
    let accumulate = (cfg.accumulate as usize).max(1);
    let mut first_epoch = 0;
    if let Some(dir) = ctx.checkpoint_dir {
        if let Some(done) = load_checkpoint(e, dir, &mut st)? {
            tracing::info!(epochs_done = done, checkpoint = %dir.display(), "resuming from checkpoint");
            first_epoch = done;
        }
    }
    let monitor: Vec<usize> = permutation(
        train.len(),
        mix_seed(ctx.seed, super::Stream::MonitorSamples, 0, 0, 0),
    )
    .into_iter()
    .take(1024)
    .map(|i| train[i])
    .collect();
    let started = Instant::now();
    let d = spec.embed_dim();
    tracing::info!(
        objective = %cfg.objective.plugin, params = st.ps.trainable_count(), train = train.len(),
        batch = bs, epochs = cfg.epochs, "pretraining"
    );
    // The collapse rule (see `Collapse`): the threshold for the watched output's width, and
    // the spread before training, which the first epoch is compared with.
    let watched_width = model.projector.as_ref().map_or(d, |p| p.output_width());
    let rule = Collapse::new(cfg.collapse.min_std, watched_width);
    let initial_spread = if rule.on() && first_epoch == 0 && model.mlm.is_none() {
        Some(health(e, &model, &mut st.ps, &views, &ds, &monitor, ctx.seed, d)?.watched())
    } else {
        None
    };
    let mut unhealthy = rule.streak(initial_spread, &st.history);
    for epoch in first_epoch..cfg.epochs {
        let t0 = Instant::now();
        let order = permutation(
            train.len(),
            mix_seed(ctx.seed, super::Stream::EpochOrder, epoch, 0, 0),
        );
        ctx.progress.start(
            &format!("epoch {}/{}", epoch + 1, cfg.epochs),
            batches_per_epoch as u64,
        );
        let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);
        let mut reports: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        let mut acc: Option<GradList> = None;
        let mut micro = 0usize;
        let mut grad_norm = 0.0f64;
        // Losses and reports of the micro-batches since the last update, read at the update.
        let mut pending: Vec<Pending> = Vec::new();
        let mut loss = f64::NAN;
        // The next batch's views are produced on another thread while this one trains; every
        // draw is seeded per sample, so the views do not depend on this overlap.
        let (ahead, batches) = std::sync::mpsc::sync_channel::<Result<Batch, StageError>>(1);
        let producer = {
            let (views, ds, needs, order, train) = (&views, &ds, &needs, &order, &train);
            let seed = ctx.seed;
            move || {
                for b in 0..batches_per_epoch {
                    let rows: Vec<usize> = order[b * bs..((b + 1) * bs).min(order.len())]
                        .iter()
                        .map(|&i| train[i])
                        .collect();
                    let batch = Batch::load(views, ds, needs, &rows, seed, epoch);
                    let failed = batch.is_err();
                    if ahead.send(batch).is_err() || failed {
                        break;
                    }
                }
            }
        };
        std::thread::scope(|scope| -> Result<(), StageError> {
            // Owned here, so an early return drops it and the producer's next send fails.
            let batches = batches;
            scope.spawn(producer);
            for b in 0..batches_per_epoch {
                let batch = batches.recv().map_err(|_| {
                    StageError::Failed("the view-producing thread stopped unexpectedly".into())
                })??;
                let (loss_t, grads, reps) =
                    batch.train(e, &model, &mut st, &mut obj, total_steps, ctx.seed)?;
                match &mut acc {
                    Some(a) => optim::accumulate(a, grads),
                    None => acc = Some(grads),
                }
                micro += 1;
                pending.push((loss_t, reps));
                if micro == accumulate || b + 1 == batches_per_epoch {
                    let gs = acc.take().expect("at least one micro-batch");
                    let sv = update(
                        e,
                        &mut st,
                        &needs,
                        &obj,
                        gs,
                        std::mem::take(&mut pending),
                        cfg.grad_clip,
                        &schedule,
                        total_steps,
                        epoch,
                    )
                    .map_err(|err| match err {
                        StageError::Failed(m)
                            if m.contains(crate::plugins::host::NON_FINITE_LOSS) =>
                        {
                            StageError::Failed(format!(
                                "{m}; {}",
                                divergence_hint(
                                    st.step,
                                    cfg.optim.lr,
                                    schedule.lr(st.step),
                                    ctx.checkpoint_dir
                                )
                            ))
                        }
                        other => other,
                    })?;
                    for l in &sv.losses {
                        loss_sum += l;
                        loss_n += 1;
                        loss = *l;
                    }
                    for (k, v) in sv.reports {
                        let r = reports.entry(k).or_insert((0.0, 0));
                        r.0 += v as f64;
                        r.1 += 1;
                    }
                    grad_norm = sv.grad_norm;
                    if !grad_norm.is_finite() {
                        return Err(StageError::Failed(format!(
                            "the gradient norm is {grad_norm} at epoch {} step {}; {}",
                            epoch + 1,
                            st.step,
                            divergence_hint(
                                st.step,
                                cfg.optim.lr,
                                schedule.lr(st.step),
                                ctx.checkpoint_dir
                            )
                        )));
                    }
                    let step_loss = sv.losses.iter().sum::<f64>() / sv.losses.len() as f64;
                    let lr = schedule.lr(st.step - 1);
                    let curves = [
                        ("train/loss", step_loss),
                        ("train/lr", lr),
                        ("train/grad_norm", grad_norm),
                    ];
                    ctx.progress.scalars(st.step, &curves);
                    micro = 0;
                }
                ctx.progress.advance(1, &format!("loss {loss:.4}"));
            }
            Ok(())
        })?;
        let hl = health(e, &model, &mut st.ps, &views, &ds, &monitor, ctx.seed, d)?;
        let validation = match &model.mlm {
            Some(head) => mlm_validation(e, &model, head, &st.ps, &views, &ds, ctx.seed)?,
            None => BTreeMap::new(),
        };
        let rec = EpochRecord {
            epoch: epoch + 1,
            loss: loss_sum / loss_n.max(1) as f64,
            lr: schedule.lr(st.step.saturating_sub(1)),
            grad_norm,
            embedding_std: hl.std,
            projection_std: hl.proj_std,
            effective_rank: hl.rank,
            alignment: hl.alignment,
            uniformity: hl.uniformity,
            reports: reports
                .into_iter()
                .map(|(k, (s, n))| (k, s / n as f64))
                .collect(),
            validation,
        };
        let val = match (
            rec.validation.get("mlm_accuracy"),
            rec.validation.get("mlm_perplexity"),
        ) {
            (Some(a), Some(p)) => format!("  val-acc {a:.4}  val-ppl {p:.2}"),
            _ => String::new(),
        };
        ctx.progress.finish(&format!(
            "loss {:.4}  emb-std {:.4}  rank {:.1}{val}",
            rec.loss, rec.embedding_std, rec.effective_rank
        ));
        super::report_fields(ctx.progress, st.step, "epoch", &rec);
        tracing::info!(
            epoch = rec.epoch,
            loss = rec.loss,
            embedding_std = rec.embedding_std,
            effective_rank = rec.effective_rank,
            projection_std = rec.projection_std,
            alignment = rec.alignment,
            uniformity = rec.uniformity,
            seconds = t0.elapsed().as_secs_f64(),
            "epoch done"
        );
        let spread = rec.watched_spread();
        let previous = st
            .history
            .last()
            .map(|r| r.watched_spread())
            .or(initial_spread);
        // Predicting masked tokens cannot collapse to a constant (the targets are the data),
        // and mean-pooled MLM states are narrow by nature: the rule would only misfire.
        let collapsed_now = model.mlm.is_none() && rule.collapsing(spread, previous);
        st.history.push(rec.clone());
        if collapsed_now {
            unhealthy += 1;
            if unhealthy >= cfg.collapse.patience {
                let kept = match ctx.checkpoint_dir {
                    Some(dir) if dir.join(CHECKPOINT_META).exists() => {
                        format!("; the last good checkpoint is kept in {}", dir.display())
                    }
                    _ => String::new(),
                };
                return Err(StageError::Failed(format!(
                    "representation collapsed: the {} spread (std of L2-normalised outputs) was {:.5} at epoch {}, below collapse.min_std = {} (scaled to {:.5} for {} dimensions) and not recovering for {} epoch(s) (encoder effective rank {:.2}){kept}. Check the objective's collapse-avoidance settings (predictor, negatives, variance terms) or lower the learning rate",
                    if rec.projection_std.is_some() { "projection" } else { "embedding" },
                    spread, rec.epoch, cfg.collapse.min_std, rule.threshold, watched_width,
                    unhealthy, rec.effective_rank
                )));
            }
        } else {
            unhealthy = 0;
            if let Some(dir) = ctx.checkpoint_dir {
                save_checkpoint(e, dir, &st, epoch + 1)?;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    save(
        ctx.out_dir,
        &model,
        &st.ps,
        &spec,
        &cfg.objective.plugin,
        &recipe.dataset_key,
    )?;
    write_json(&ctx.out_dir.join(HISTORY_FILE), &st.history)?;
    let mut m = Metrics::new();
    m.insert("epochs".into(), cfg.epochs as f64);
    m.insert("steps".into(), st.step as f64);
    m.insert(format!("{TIMING_PREFIX}seconds"), seconds);
    let trained_epochs = (cfg.epochs - first_epoch).max(1) as f64;
    m.insert(
        format!("{TIMING_PREFIX}images_per_second"),
        (trained_epochs * train.len() as f64 * views.count() as f64) / seconds.max(1e-9),
    );
    m.insert(
        "parameters".into(),
        model.encoder_store(&st.ps).trainable_count() as f64,
    );
    if let Some(last) = st.history.last() {
        m.insert("loss".into(), last.loss);
        m.insert("embedding_std".into(), last.embedding_std);
        if let Some(p) = last.projection_std {
            m.insert("projection_std".into(), p);
        }
        m.insert("effective_rank".into(), last.effective_rank);
        m.insert("alignment".into(), last.alignment);
        m.insert("uniformity".into(), last.uniformity);
        for (k, v) in &last.reports {
            m.insert(format!("objective.{k}"), *v);
        }
        for (k, v) in &last.validation {
            m.insert(format!("validation.{k}"), *v);
        }
    }
    Ok(m)
}

/// Timings of [`bench`]: one entry per timed step (warm-up steps excluded), in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct BenchTimes {
    /// The encoder architecture (`mlp`, `resnet`, `vit`, ...).
    pub encoder: String,
    pub objective: String,
    pub batch: usize,
    pub views: usize,
    /// Trainable parameters of the encoder alone, and of everything trained (heads included).
    pub encoder_parameters: usize,
    pub trained_parameters: usize,
    /// The shape of one view: channels, height, width (for text: 1, 1, sequence length).
    pub input_shape: [usize; 3],
    /// Producing the views of a batch (augmentation plugins).
    pub augment_ms: Vec<f64>,
    /// Forward, loss, backward and optimiser update of a batch.
    pub step_ms: Vec<f64>,
    /// Host-to-device and device-to-host transfers of each timed step (the batch in, the
    /// loss out, and anything else that crossed: see `docs/architecture.md`).
    pub to_device: Vec<u64>,
    pub to_host: Vec<u64>,
}

/// Time `steps` training steps of a pretrain stage (after `warmup` untimed ones) on real batches
/// of its input, exactly as [`run`] trains them, without writing anything. The step time covers
/// forward, loss, backward and the optimiser update; view production is timed separately.
pub fn bench(
    cfg: &PretrainConfig,
    ctx: &StageCtx,
    steps: usize,
    warmup: usize,
) -> Result<BenchTimes, StageError> {
    let e = ctx.engine;
    let mut pr = prepare(cfg, ctx)?;
    let mut times = BenchTimes {
        encoder: cfg.model.arch.name().to_string(),
        objective: cfg.objective.plugin.clone(),
        batch: pr.bs,
        views: pr.views.count(),
        encoder_parameters: pr.model.encoder_store(&pr.st.ps).trainable_count(),
        trained_parameters: pr.st.ps.trainable_count(),
        input_shape: [
            pr.views.output_shape.0,
            pr.views.output_shape.1,
            pr.views.output_shape.2,
        ],
        augment_ms: Vec::with_capacity(steps),
        step_ms: Vec::with_capacity(steps),
        to_device: Vec::with_capacity(steps),
        to_host: Vec::with_capacity(steps),
    };
    let mut order = Vec::new();
    for i in 0..warmup + steps {
        let (epoch, b) = ((i / pr.batches_per_epoch) as u64, i % pr.batches_per_epoch);
        if b == 0 {
            order = permutation(
                pr.train.len(),
                mix_seed(ctx.seed, super::Stream::EpochOrder, epoch, 0, 0),
            );
        }
        let rows: Vec<usize> = order[b * pr.bs..((b + 1) * pr.bs).min(order.len())]
            .iter()
            .map(|&r| pr.train[r])
            .collect();
        let t0 = Instant::now();
        let batch = Batch::load(&pr.views, &pr.ds, &pr.needs, &rows, ctx.seed, epoch)?;
        let t1 = Instant::now();
        let before = crate::engine::transfers();
        let (loss, grads, reps) = batch.train(
            e,
            &pr.model,
            &mut pr.st,
            &mut pr.obj,
            pr.total_steps,
            ctx.seed,
        )?;
        let sv = update(
            e,
            &mut pr.st,
            &pr.needs,
            &pr.obj,
            grads,
            vec![(loss, reps)],
            cfg.grad_clip,
            &pr.schedule,
            pr.total_steps,
            epoch,
        )?;
        e.synchronize()?;
        let t2 = Instant::now();
        let moved = crate::engine::transfers() - before;
        let norm = sv.grad_norm;
        if !norm.is_finite() {
            return Err(StageError::Failed(format!(
                "the gradient norm is {norm} at benchmark step {}; the settings diverge",
                i + 1
            )));
        }
        ctx.progress
            .advance(1, &format!("step {}/{}", i + 1, warmup + steps));
        if i >= warmup {
            times.augment_ms.push((t1 - t0).as_secs_f64() * 1e3);
            times.step_ms.push((t2 - t1).as_secs_f64() * 1e3);
            times.to_device.push(moved.to_device);
            times.to_host.push(moved.to_host);
        }
    }
    Ok(times)
}

/// One batch of training rows, its views produced.
struct Batch {
    augmented: Vec<Vec<f32>>,
    /// The unaugmented samples, for objectives with a decoder.
    originals: Option<Vec<f32>>,
    ids: Vec<u64>,
    epoch: u64,
}

impl Batch {
    fn load(
        views: &Views,
        ds: &Dataset,
        needs: &ObjectiveNeeds,
        rows: &[usize],
        seed: u64,
        epoch: u64,
    ) -> Result<Batch, StageError> {
        Ok(Batch {
            augmented: augment_batch(views, ds, rows, seed, epoch, needs.masked_tokens)?,
            originals: needs.decoder.map(|_| ds.batch_f32(rows)),
            ids: rows.iter().map(|&r| ds.ids[r]).collect(),
            epoch,
        })
    }

    /// Forward, loss and backward on this batch at the state's current step.
    fn train(
        self,
        e: &Engine,
        model: &Model,
        st: &mut TrainState,
        obj: &mut ObjectiveInstance,
        total_steps: u64,
        seed: u64,
    ) -> Result<StepResult, StageError> {
        let n = self.ids.len();
        let sc = StepCtx {
            epoch: self.epoch,
            step: st.step,
            total_steps,
            seed,
            ids: &self.ids,
        };
        train_step(e, model, st, obj, self.augmented, self.originals, n, sc)
    }
}

#[derive(Clone, Copy)]
struct StepCtx<'a> {
    epoch: u64,
    step: u64,
    total_steps: u64,
    seed: u64,
    /// Sample ids of the batch (per-sample randomness such as MAE masks).
    ids: &'a [u64],
}

/// One forward/backward pass over a batch of `n` samples in every view; returns the loss,
/// the gradients of the student's parameters, and the objective's reports.
#[allow(clippy::too_many_arguments)]
fn train_step(
    e: &Engine,
    model: &Model,
    st: &mut TrainState,
    obj: &mut ObjectiveInstance,
    augmented: Vec<Vec<f32>>,
    originals: Option<Vec<f32>>,
    n: usize,
    sc: StepCtx,
) -> Result<StepResult, StageError> {
    if let (Some((ratio, dec)), Encoder::Vit(vit)) = (&model.mae, &model.encoder) {
        return mae_step(e, model, vit, *ratio, dec, st, obj, &augmented[0], n, sc);
    }
    if let (Some(head), Encoder::Text(text)) = (&model.mlm, &model.encoder) {
        return mlm_step(e, text, head, st, obj, &augmented[0], n, sc);
    }
    let v = augmented.len();
    let d = model.input.len();
    // One upload of every view; the per-view inputs an objective may read are slices of it
    // on the device.
    let x = e.tensor(augmented.concat(), v * n, d)?.as_input();
    let view_inputs: Vec<Tensor> = split_views(&mut e.graph(false), &x, v, n)?
        .into_iter()
        .map(Tensor::as_input)
        .collect();
    let originals = originals.map(|o| e.tensor(o, n, d)).transpose()?;
    // The EMA teacher sees the same batch without recording gradients.
    let targets = match &mut st.teacher {
        Some(t) => {
            let mut tg = e.graph(false);
            let out = model.forward(t, &mut tg, &x, true, false)?;
            let z = out.proj.unwrap_or(out.emb);
            Some(split_views(&mut tg, &z, v, n)?)
        }
        None => None,
    };
    let mut g = e.graph(true);
    g.set_seed(mix_seed(sc.seed, super::Stream::Dropout, sc.step, 0, 0));
    // All views go through the student as one batch; the heads see the same batch.
    let out = model.forward(&mut st.ps, &mut g, &x, true, true)?;
    let emb_v = split_views(&mut g, &out.emb, v, n)?;
    let proj_v = out
        .proj
        .as_ref()
        .map(|p| split_views(&mut g, p, v, n))
        .transpose()?;
    let pred_v = out
        .pred
        .as_ref()
        .map(|p| split_views(&mut g, p, v, n))
        .transpose()?;
    let dec_v = out
        .dec
        .as_ref()
        .map(|p| split_views(&mut g, p, v, n))
        .transpose()?;
    let inputs = StepInputs {
        embeddings: &emb_v,
        projections: proj_v.as_deref(),
        predictions: pred_v.as_deref(),
        targets: targets.as_deref(),
        view_inputs: Some(&view_inputs),
        originals: originals.as_ref(),
        decoded: dec_v.as_deref(),
        masked_patches: None,
        masked_tokens: None,
        epoch: sc.epoch as u32,
        step: sc.step,
        total_steps: sc.total_steps,
    };
    objective_step(e, g, obj, st, &inputs)
}

/// One masked-patch-modelling step: each sample hides a random `ratio` of its patches
/// (seeded per sample and epoch), the ViT encodes the visible ones, the decoder predicts all.
#[allow(clippy::too_many_arguments)]
fn mae_step(
    e: &Engine,
    model: &Model,
    vit: &Vit,
    ratio: f64,
    dec: &MaeDecoder,
    st: &mut TrainState,
    obj: &mut ObjectiveInstance,
    view: &[f32],
    n: usize,
    sc: StepCtx,
) -> Result<StepResult, StageError> {
    let t = vit.num_tokens();
    let keep = ((t as f64 * (1.0 - ratio)).round() as usize).clamp(1, t - 1);
    let visible: Vec<Vec<usize>> = sc
        .ids
        .iter()
        .map(|&id| {
            let mut v: Vec<usize> = permutation(
                t,
                mix_seed(sc.seed, super::Stream::MaeMask, sc.epoch, id, 0),
            )
            .into_iter()
            .take(keep)
            .collect();
            v.sort_unstable();
            v
        })
        .collect();
    let mut mask = vec![1f32; n * t];
    for (b, vis) in visible.iter().enumerate() {
        for &i in vis {
            mask[b * t + i] = 0.0;
        }
    }
    let x = e.tensor(view.to_vec(), n, model.input.len())?;
    let targets = vit.patches(&mut e.graph(false), &x, model.input)?;
    let mask = e.tensor(mask, n * t, 1)?;
    let mut g = e.graph(true);
    let tok = vit.tokens(&st.ps, &mut g, &x, model.input)?;
    let vis_idx: Vec<usize> = visible
        .iter()
        .enumerate()
        .flat_map(|(b, v)| v.iter().map(move |&i| b * t + i))
        .collect();
    let vis = g.select_rows(&tok, &vis_idx)?;
    let (h, per) = vit.run_blocks(&st.ps, &mut g, &vis, n, keep)?;
    let emb = vit.pool(&st.ps, &mut g, &h, n, per)?;
    let enc_tokens = if vit.has_cls() {
        let idx: Vec<usize> = (0..n)
            .flat_map(|b| (1..per).map(move |i| b * per + i))
            .collect();
        g.select_rows(&h, &idx)?
    } else {
        h
    };
    let pred = dec.forward(&st.ps, &mut g, &enc_tokens, &visible)?;
    let view_inputs = [x];
    let inputs = StepInputs {
        embeddings: std::slice::from_ref(&emb),
        projections: None,
        predictions: None,
        targets: None,
        view_inputs: Some(&view_inputs),
        originals: None,
        decoded: None,
        masked_patches: Some((&pred, &targets, &mask)),
        masked_tokens: None,
        epoch: sc.epoch as u32,
        step: sc.step,
        total_steps: sc.total_steps,
    };
    objective_step(e, g, obj, st, &inputs)
}

/// Split marked token views (`n` rows of `2·len`: ids, then targets or -1) into the encoder's
/// ids, the flagged rows (`b·len + position`) and their target ids.
fn unmark(view: &[f32], len: usize) -> (Vec<f32>, Vec<usize>, Vec<f32>) {
    let (mut ids, mut flagged, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    for (b, row) in view.chunks(2 * len).enumerate() {
        ids.extend_from_slice(&row[..len]);
        for (j, &t) in row[len..].iter().enumerate() {
            if t >= 0.0 {
                flagged.push(b * len + j);
                targets.push(t);
            }
        }
    }
    (ids, flagged, targets)
}

/// One masked-token-modelling step: the text transformer reads the augmented sequences
/// (view 0), the MLM head predicts the original token at every flagged position.
#[allow(clippy::too_many_arguments)]
fn mlm_step(
    e: &Engine,
    text: &TextTransformer,
    head: &MlmHead,
    st: &mut TrainState,
    obj: &mut ObjectiveInstance,
    view: &[f32],
    n: usize,
    sc: StepCtx,
) -> Result<StepResult, StageError> {
    let len = text.spec().seq_len;
    let (ids, flagged, targets) = unmark(view, len);
    if flagged.is_empty() {
        return Err(StageError::Input(
            "the objective predicts masked tokens, but the views flagged none: add a masking augmentation such as `token_mask` or `span_mask` to the augment stage's view".into(),
        ));
    }
    let x = e.tensor(ids, n, len)?;
    let targets = e.tensor(targets, flagged.len(), 1)?;
    let mut g = e.graph(true);
    g.set_seed(mix_seed(sc.seed, super::Stream::Dropout, sc.step, 0, 0));
    let states = text.token_states(&st.ps, &mut g, &x, true)?;
    let emb = text.pool(&st.ps, &mut g, &states)?;
    let logits = head.logits(&st.ps, &mut g, &states.states, &flagged)?;
    let view_inputs = [x];
    let inputs = StepInputs {
        embeddings: std::slice::from_ref(&emb),
        projections: None,
        predictions: None,
        targets: None,
        view_inputs: Some(&view_inputs),
        originals: None,
        decoded: None,
        masked_patches: None,
        masked_tokens: Some((&logits, &targets)),
        epoch: sc.epoch as u32,
        step: sc.step,
        total_steps: sc.total_steps,
    };
    objective_step(e, g, obj, st, &inputs)
}

/// Masked-token accuracy, cross-entropy and perplexity on (up to) 512 test-split sequences,
/// masked by view 0 with randomness fixed across epochs (so epochs are comparable).
fn mlm_validation(
    e: &Engine,
    model: &Model,
    head: &MlmHead,
    ps: &ParamStore,
    views: &Views,
    ds: &Dataset,
    seed: u64,
) -> Result<BTreeMap<String, f64>, StageError> {
    let Encoder::Text(text) = &model.encoder else {
        return Ok(BTreeMap::new());
    };
    let len = text.spec().seq_len;
    let rows: Vec<usize> = ds.rows(Split::Test).into_iter().take(512).collect();
    let (mut nll, mut correct, mut count) = (0f64, 0usize, 0usize);
    for chunk in rows.chunks(128) {
        let mut marked = Vec::with_capacity(chunk.len() * len);
        for &r in chunk {
            marked.extend(views.apply_marked(
                0,
                mix_seed(seed, super::Stream::MlmValidation, 0, ds.ids[r], 0),
                ds.image_f32(r),
                true,
            )?);
        }
        let (ids, flagged, targets) = unmark(&marked, len);
        if flagged.is_empty() {
            continue;
        }
        let x = e.tensor(ids, chunk.len(), len)?;
        let mut g = e.graph(false);
        let states = text.token_states(ps, &mut g, &x, false)?;
        let logits = head.logits(ps, &mut g, &states.states, &flagged)?;
        let vocab = logits.shape().1;
        let lv = logits.to_vec();
        for k in 0..flagged.len() {
            let row = &lv[k * vocab..(k + 1) * vocab];
            let target = targets[k] as usize;
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            nll += lse - row[target] as f64;
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (j, &v)| if v > b.1 { (j, v) } else { b },
                )
                .0;
            correct += usize::from(best == target);
            count += 1;
        }
    }
    let mut out = BTreeMap::new();
    if count > 0 {
        let loss = nll / count as f64;
        out.insert("mlm_loss".into(), loss);
        out.insert("mlm_perplexity".into(), loss.exp());
        out.insert("mlm_accuracy".into(), correct as f64 / count as f64);
        out.insert("mlm_targets".into(), count as f64);
    }
    Ok(out)
}

/// The objective's loss on the step's graph, its backward pass, and the student's gradients.
fn objective_step(
    e: &Engine,
    mut g: Graph,
    obj: &mut ObjectiveInstance,
    st: &mut TrainState,
    inputs: &StepInputs,
) -> Result<StepResult, StageError> {
    let res = obj.loss(e, &mut g, inputs, &mut st.objective_state)?;
    let mut grads = g.backward(&res.loss)?;
    Ok((res.loss, optim::collect(&st.ps, &mut grads), res.reports))
}

fn split_views(g: &mut Graph, t: &Tensor, v: usize, n: usize) -> Result<Vec<Tensor>, StageError> {
    (0..v)
        .map(|i| {
            g.slice(t, Axis2::Rows, i * n, (i + 1) * n)
                .map_err(StageError::from)
        })
        .collect()
}

pub(crate) fn save_encoder(
    dir: &Path,
    ps: &ParamStore,
    meta: &EncoderMeta,
) -> Result<(), StageError> {
    let header = BTreeMap::from([
        ("format".to_string(), "pretext-encoder-v1".to_string()),
        (
            "encoder".to_string(),
            serde_json::to_string(meta).map_err(|err| io_err(dir, err))?,
        ),
    ]);
    io::save(ps, header, &dir.join(ENCODER_FILE)).map_err(super::engine_err)?;
    write_json(&dir.join(ENCODER_META), meta)
}

fn save(
    dir: &Path,
    model: &Model,
    ps: &ParamStore,
    spec: &EncoderSpec,
    objective: &str,
    dataset_key: &str,
) -> Result<(), StageError> {
    let meta = EncoderMeta {
        spec: spec.clone(),
        input: model.input,
        embed_dim: spec.embed_dim(),
        objective: objective.to_string(),
        dataset_key: dataset_key.to_string(),
        adapters: None,
    };
    save_encoder(dir, &model.encoder_store(ps), &meta)
}
