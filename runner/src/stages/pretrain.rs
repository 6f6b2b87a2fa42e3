//! `pretrain`: trains an encoder with an objective plugin on augmented views of the train
//! split. Writes `encoder.safetensors` + `encoder.json` (what probes load), `history.json`
//! (loss, learning rate, embedding spread and objective reports per epoch) and metrics.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::augment::{Views, ViewsRecipe, VIEWS_FILE};
use super::{
    ingest::DATASET_FILE, io_err, mix_seed, permutation, read_json, write_json, Metrics, StageCtx,
    StageError, TIMING_PREFIX,
};
use crate::data::{table, Dataset, Split};
use crate::engine::nn::{Encoder, EncoderSpec, Init, InputShape, Mlp, ParamStore};
use crate::engine::optim::{OptimSpec, Optimizer, Schedule};
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    /// Mean per-dimension std of L2-normalised embeddings of a fixed monitor set
    /// (→ 0 when the representation collapses; about 1/√d when spread out).
    pub embedding_std: f64,
    pub reports: BTreeMap<String, f64>,
}

pub fn encoder_spec(cfg: &PretrainConfig) -> EncoderSpec {
    match &cfg.model.arch {
        Arch::Mlp { hidden } => EncoderSpec::Mlp {
            hidden: hidden.clone(),
            embed_dim: cfg.model.embed_dim,
            batch_norm: cfg.model.batch_norm,
        },
        Arch::Convnet { width } => EncoderSpec::ConvNet {
            width: *width,
            embed_dim: cfg.model.embed_dim,
            batch_norm: cfg.model.batch_norm,
        },
        Arch::Resnet { width, blocks } => EncoderSpec::ResNet {
            width: *width,
            blocks: *blocks,
            embed_dim: cfg.model.embed_dim,
            batch_norm: cfg.model.batch_norm,
        },
    }
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
    Ok(vec![(
        cfg.objective.plugin.clone(),
        obj.library().digest.clone(),
    )])
}

/// Encoder plus the heads the objective asked for.
struct Model {
    input: InputShape,
    encoder: Encoder,
    enc: ParamStore,
    projector: Option<Mlp>,
    heads: ParamStore,
}

impl Model {
    fn new(
        e: &Engine,
        spec: &EncoderSpec,
        input: InputShape,
        needs: &ObjectiveNeeds,
        seed: u64,
    ) -> Result<Model, StageError> {
        let mut init = Init::new(seed);
        let mut enc = ParamStore::default();
        let encoder = Encoder::new(e, &mut enc, &mut init, spec, input)?;
        let mut heads = ParamStore::default();
        let projector = needs.projector.map(|(hidden, out, layers)| {
            let mut widths = vec![spec.embed_dim()];
            widths.extend(std::iter::repeat(hidden).take(layers - 1));
            widths.push(out);
            Mlp::new(e, &mut heads, &mut init, "projector", &widths, true)
        });
        Ok(Model {
            input,
            encoder,
            enc,
            projector,
            heads,
        })
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
    io::load(e, &mut ps, &dir.join(ENCODER_FILE))
        .map_err(|err| StageError::Failed(err.to_string()))?;
    Ok((encoder, ps, meta))
}

/// Mean over dimensions of the std of L2-normalised embeddings.
pub fn normalized_std(emb: &[f32], d: usize) -> f64 {
    let n = emb.len() / d;
    if n < 2 {
        return 0.0;
    }
    let mut normed = emb.to_vec();
    for row in normed.chunks_mut(d) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let mut total = 0.0;
    for j in 0..d {
        let mean = (0..n).map(|i| normed[i * d + j] as f64).sum::<f64>() / n as f64;
        let var = (0..n)
            .map(|i| (normed[i * d + j] as f64 - mean).powi(2))
            .sum::<f64>()
            / (n - 1) as f64;
        total += var.sqrt();
    }
    total / d as f64
}

/// Augment `batch` through every view, in parallel over samples; deterministic per
/// (seed, epoch, sample id, view).
fn augment_batch(
    views: &Views,
    ds: &Dataset,
    batch: &[usize],
    seed: u64,
    epoch: u64,
) -> Result<Vec<Vec<f32>>, StageError> {
    let per = views.output_shape.0 * views.output_shape.1 * views.output_shape.2;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(batch.len().max(1));
    let chunk = batch.len().div_ceil(threads);
    let mut out: Vec<Vec<f32>> = (0..views.count())
        .map(|_| vec![0f32; batch.len() * per])
        .collect();
    for v in 0..views.count() {
        let buf = &mut out[v];
        std::thread::scope(|s| -> Result<(), StageError> {
            let handles: Vec<_> = buf
                .chunks_mut(chunk * per)
                .zip(batch.chunks(chunk))
                .map(|(dst, rows)| {
                    s.spawn(move || -> Result<(), StageError> {
                        for (slot, &r) in dst.chunks_mut(per).zip(rows) {
                            let img = views.apply(
                                v,
                                mix_seed(seed, 2, epoch, ds.ids[r], v as u64),
                                ds.image_f32(r),
                            )?;
                            slot.copy_from_slice(&img);
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| {
                    StageError::Failed("an augmentation worker thread panicked".into())
                })??;
            }
            Ok(())
        })?;
    }
    Ok(out)
}

pub fn run(cfg: &PretrainConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
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
    let views = Views::build(&steps, ctx.registry, ds.shape)?;
    let mut obj = objective(cfg, ctx.registry)?;
    let needs = obj.needs()?;
    if needs.views != views.count() {
        return Err(StageError::Input(format!(
            "objective `{}` needs {} views, the input declares {}",
            cfg.objective.plugin,
            needs.views,
            views.count()
        )));
    }
    if needs.predictor_hidden.is_some() || needs.ema_teacher.is_some() {
        return Err(StageError::Input(format!(
            "objective `{}` asks for a predictor head or an EMA teacher, which this version of pretext does not provide yet",
            cfg.objective.plugin
        )));
    }
    let (c, h, w) = views.output_shape;
    let input = InputShape {
        channels: c,
        height: h,
        width: w,
    };
    let spec = encoder_spec(cfg);
    let mut model = Model::new(e, &spec, input, &needs, mix_seed(ctx.seed, 4, 0, 0, 0))?;
    let train = ds.rows(Split::Train);
    if train.len() < 2 {
        return Err(StageError::Input(
            "the train split has fewer than 2 samples".into(),
        ));
    }
    let bs = cfg.batch_size.min(train.len()).max(2);
    let batches_per_epoch = train.len() / bs + usize::from(train.len() % bs >= 2);
    let total_steps = cfg.epochs * batches_per_epoch as u64;
    let schedule = Schedule {
        base_lr: cfg.optim.lr,
        warmup_steps: cfg.optim.warmup_epochs * batches_per_epoch as u64,
        total_steps,
        cosine: cfg.optim.schedule == crate::pipeline::Schedule::Cosine,
    };
    let ospec = optim_spec(&cfg.optim);
    let mut opt_enc = Optimizer::new(ospec.clone(), &model.enc);
    let mut opt_heads = Optimizer::new(ospec, &model.heads);
    let monitor: Vec<usize> = permutation(train.len(), mix_seed(ctx.seed, 5, 0, 0, 0))
        .into_iter()
        .take(1024)
        .map(|i| train[i])
        .collect();
    let mut state: HashMap<String, Tensor> = HashMap::new();
    let mut history: Vec<EpochRecord> = Vec::new();
    let started = Instant::now();
    let mut step: u64 = 0;
    tracing::info!(
        objective = %cfg.objective.plugin, params = model.enc.trainable_count() + model.heads.trainable_count(),
        train = train.len(), batch = bs, epochs = cfg.epochs, "pretraining"
    );
    for epoch in 0..cfg.epochs {
        let t0 = Instant::now();
        let order = permutation(train.len(), mix_seed(ctx.seed, 6, epoch, 0, 0));
        ctx.progress.start(
            &format!("epoch {}/{}", epoch + 1, cfg.epochs),
            batches_per_epoch as u64,
        );
        let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);
        let mut reports: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for b in 0..batches_per_epoch {
            let rows: Vec<usize> = order[b * bs..((b + 1) * bs).min(order.len())]
                .iter()
                .map(|&i| train[i])
                .collect();
            let augmented = augment_batch(&views, &ds, &rows, ctx.seed, epoch)?;
            let n = rows.len();
            let lr = schedule.lr(step);
            let mut g = e.graph(true);
            let out = train_step(
                e,
                &mut g,
                &mut model,
                &mut obj,
                augmented,
                n,
                epoch,
                step,
                total_steps,
                &mut state,
            )?;
            let loss = out.0;
            let mut grads = g.backward(&out.1)?;
            opt_enc.step(&mut model.enc, &mut grads, lr as f32);
            opt_heads.step(&mut model.heads, &mut grads, lr as f32);
            loss_sum += loss;
            loss_n += 1;
            for (k, v) in out.2 {
                let r = reports.entry(k).or_insert((0.0, 0));
                r.0 += v as f64;
                r.1 += 1;
            }
            step += 1;
            ctx.progress.advance(1, &format!("loss {loss:.4}"));
        }
        let emb = embed(e, &model.encoder, &mut model.enc, input, &ds, &monitor)?;
        let rec = EpochRecord {
            epoch: epoch + 1,
            loss: loss_sum / loss_n.max(1) as f64,
            lr: schedule.lr(step.saturating_sub(1)),
            embedding_std: normalized_std(&emb, spec.embed_dim()),
            reports: reports
                .into_iter()
                .map(|(k, (s, n))| (k, s / n as f64))
                .collect(),
        };
        ctx.progress.finish(&format!(
            "loss {:.4}  emb-std {:.4}",
            rec.loss, rec.embedding_std
        ));
        tracing::info!(
            epoch = rec.epoch,
            loss = rec.loss,
            embedding_std = rec.embedding_std,
            seconds = t0.elapsed().as_secs_f64(),
            "epoch done"
        );
        history.push(rec);
    }
    let seconds = started.elapsed().as_secs_f64();
    save(
        ctx.out_dir,
        &model,
        &spec,
        &cfg.objective.plugin,
        &recipe.dataset_key,
    )?;
    write_json(&ctx.out_dir.join(HISTORY_FILE), &history)?;
    let last = history.last().cloned();
    let mut m = Metrics::new();
    m.insert("epochs".into(), cfg.epochs as f64);
    m.insert("steps".into(), step as f64);
    m.insert(format!("{TIMING_PREFIX}seconds"), seconds);
    m.insert(
        format!("{TIMING_PREFIX}images_per_second"),
        (step as f64 * bs as f64 * views.count() as f64) / seconds.max(1e-9),
    );
    m.insert("parameters".into(), model.enc.trainable_count() as f64);
    if let Some(last) = last {
        m.insert("loss".into(), last.loss);
        m.insert("embedding_std".into(), last.embedding_std);
        for (k, v) in last.reports {
            m.insert(format!("objective.{k}"), v);
        }
    }
    Ok(m)
}

type StepResult = (f64, Tensor, Vec<(String, f32)>);

#[allow(clippy::too_many_arguments)]
fn train_step(
    e: &Engine,
    g: &mut Graph,
    model: &mut Model,
    obj: &mut ObjectiveInstance,
    augmented: Vec<Vec<f32>>,
    n: usize,
    epoch: u64,
    step: u64,
    total_steps: u64,
    state: &mut HashMap<String, Tensor>,
) -> Result<StepResult, StageError> {
    let v = augmented.len();
    let d = model.input.len();
    let x = e.tensor(augmented.concat(), v * n, d)?;
    // All views go through the encoder as one batch; heads see the same batch.
    let emb = model
        .encoder
        .forward(&mut model.enc, g, &x, model.input, true)?;
    let proj = match &model.projector {
        Some(p) => Some(p.forward(&mut model.heads, g, &emb, true)?),
        None => None,
    };
    let split = |g: &mut Graph, t: &Tensor| -> Result<Vec<Tensor>, StageError> {
        (0..v)
            .map(|i| {
                g.slice(t, Axis2::Rows, i * n, (i + 1) * n)
                    .map_err(StageError::from)
            })
            .collect()
    };
    let emb_v = split(g, &emb)?;
    let proj_v = proj.as_ref().map(|p| split(g, p)).transpose()?;
    let inputs = StepInputs {
        embeddings: &emb_v,
        projections: proj_v.as_deref(),
        predictions: None,
        targets: None,
        view_inputs: None,
        originals: None,
        decoded: None,
        epoch: epoch as u32,
        step,
        total_steps,
    };
    let out = obj.loss(e, g, &inputs, state)?;
    Ok((out.loss.scalar() as f64, out.loss, out.reports))
}

fn save(
    dir: &Path,
    model: &Model,
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
    };
    let header = BTreeMap::from([
        ("format".to_string(), "pretext-encoder-v1".to_string()),
        (
            "encoder".to_string(),
            serde_json::to_string(&meta).map_err(|err| io_err(dir, err))?,
        ),
    ]);
    io::save(&model.enc, header, &dir.join(ENCODER_FILE))
        .map_err(|err| StageError::Failed(err.to_string()))?;
    write_json(&dir.join(ENCODER_META), &meta)
}
