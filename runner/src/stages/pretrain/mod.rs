//! `pretrain`: trains an encoder with an objective plugin on augmented views of the train
//! split. Writes `encoder.safetensors` + `encoder.json` (what probes load), `history.json`
//! (loss, learning rate, embedding spread and objective reports per epoch) and metrics.

mod bench;
mod blocks;
mod checkpoint;
mod crops;
mod curriculum;
mod health;
mod model;
mod paired;
mod step;

pub use bench::{bench, BenchTimes};
use checkpoint::{load_checkpoint, save_checkpoint, TrainState, CHECKPOINT_META};
use health::{mlm_validation, Collapse, Health};
use model::{objective, optim_spec, Model};
use step::{divergence_hint, update, Batch, Pending, Run, StepValues};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use super::{
    mix_seed, permutation, read_json, write_json, Metrics, StageCtx, StageError, TIMING_PREFIX,
};
use crate::artifacts::dataset::DATASET_FILE;
use crate::artifacts::encoder::{encoder_spec, save_encoder, EncoderMeta};
use crate::artifacts::history::{EpochRecord, HISTORY_FILE};
use crate::artifacts::views::{Views, ViewsRecipe, VIEWS_FILE};
use crate::data::memory::{self, Streamed};
use crate::data::{table, Dataset, Split};
use crate::engine::nn::{EncoderSpec, ParamStore};
use crate::engine::optim::{self, GradList, Optimizer, Schedule};
use crate::pipeline::{Arch, PretrainConfig};
use crate::plugins::{ObjectiveInstance, ObjectiveNeeds, Registry};

/// What the augment stage feeding a pretrain stage declares, as far as the pipeline file says:
/// the number of views and, when the image shape is known before running, their sizes.
pub struct DeclaredViews {
    pub count: usize,
    pub shapes: Option<Vec<(usize, usize, usize)>>,
    /// The augmentation chains, one per view.
    pub steps: curriculum::Steps,
    /// The image shape the views read, when the pipeline file says.
    pub input: Option<(usize, usize, usize)>,
}

/// Instantiate the objective (bad parameters fail here); check it and the model against the
/// views the input stage declares, when known.
pub fn validate(
    cfg: &PretrainConfig,
    registry: &Registry,
    views: Option<DeclaredViews>,
) -> Result<Vec<(String, String)>, StageError> {
    let obj = objective(cfg, registry)?;
    let needs = obj.needs().map_err(|e| StageError::Input(e.to_string()))?;
    if let Some(v) = views {
        crops::check(cfg, &needs, v.shapes.as_deref(), v.count)?;
        // A curriculum's phases, when the sizes they change are known before running.
        if let (Some(input), false) = (v.input, cfg.curriculum.is_empty()) {
            let base = Views::build(&v.steps, registry, input, None)?;
            for i in 0..cfg.curriculum.len() {
                curriculum::phase_views(cfg, &needs, registry, (&v.steps, &base), i)?;
            }
        }
    }
    match (needs.paired_text, &cfg.text) {
        (true, None) => {
            return Err(StageError::Input(format!(
                "objective `{}` pairs each image with its caption: add text = {{ input = \"<the stage with the captions>\" }} to the stage",
                cfg.objective.plugin
            )))
        }
        (false, Some(_)) => {
            return Err(StageError::Input(format!(
                "`text` trains a text tower on captions, which objective `{}` does not use: remove it, or use an objective that pairs images with text (clip)",
                cfg.objective.plugin
            )))
        }
        _ => {}
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
    if needs.latent.is_some() && !matches!(cfg.model.arch, Arch::Vit { .. }) {
        return Err(StageError::Input(format!(
            "objective `{}` predicts hidden blocks of a patch grid in latent space, which needs a vision transformer: set `model = {{ arch = \"vit\", ... }}`",
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

/// Everything a training loop needs, built from the stage config and its input: the views,
/// the dataset, the objective, the model with its heads, the optimiser state and the schedule.
struct Prepared {
    views: Views,
    /// The whole dataset in memory; or, when it is streamed, the rows kept resident (the
    /// monitor's samples and the first test rows MLM validation reads).
    ds: Dataset,
    /// `Some` when the dataset is over the memory budget: epochs stream its row groups.
    streamed: Option<Streamed>,
    /// The rows of `ds` the per-epoch health monitor embeds.
    monitor: Vec<usize>,
    obj: ObjectiveInstance,
    needs: ObjectiveNeeds,
    spec: EncoderSpec,
    model: Model,
    st: TrainState,
    recipe: ViewsRecipe,
    /// Train-split rows.
    train: Vec<usize>,
    /// The phases of training (one without a curriculum): their views and batches.
    phases: Vec<curriculum::Phase>,
    total_steps: u64,
    schedule: Schedule,
    /// Per parameter-store entry: whether it is one of the objective's own tensors.
    objective_pids: Vec<bool>,
    /// Image–text pairs: the captions, by sample id.
    captions: Option<paired::Captions>,
}

fn prepare(cfg: &PretrainConfig, ctx: &StageCtx) -> Result<Prepared, StageError> {
    let e = ctx.engine;
    let views_dir = &ctx.input("input")?.dir;
    let recipe: ViewsRecipe = read_json(&views_dir.join(VIEWS_FILE))?;
    let path = ctx.entry_by_key(&recipe.dataset_key)?.join(DATASET_FILE);
    let (ds, streamed, train, monitor) = load(&path, ctx.seed)?;
    let steps: curriculum::Steps = recipe
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
    crops::check(cfg, &needs, Some(&views.view_shapes), views.count())?;
    let spec = encoder_spec(&cfg.model, views.output_shape, ds.vocab)?;
    let mut ps = ParamStore::default();
    let mut model = Model::new(
        e,
        &mut ps,
        &spec,
        &views.view_shapes,
        &needs,
        mix_seed(ctx.seed, super::Stream::ModelInit, 0, 0, 0),
    )?;
    // The encoder's starting weights; heads keep their seeded init, and the EMA teacher and
    // the optimizer below start from the imported student.
    if let Some(init) = &cfg.init {
        let src = super::init_source(ctx, init)?;
        let read =
            crate::artifacts::init::apply(e, &mut ps, model.enc_len, &spec, model.input, src)?;
        tracing::info!(tensors = read, from = %src, "encoder initialised from a checkpoint");
    }
    model
        .encoder
        .set_checkpoint_activations(cfg.model.checkpoint_activations)?;
    let captions = paired_tower(
        cfg,
        ctx,
        (&needs, spec.embed_dim()),
        (&path, &ds),
        &mut ps,
        &mut model,
    )?;
    if train.len() < 2 {
        return Err(StageError::Input(
            "the train split has fewer than 2 samples".into(),
        ));
    }
    // Data-parallel: every rank takes a share of each batch (at least one sample: a short
    // last batch with fewer samples than ranks is left out).
    let ranks = e.group().map_or(1, |g| g.size());
    let phases = curriculum::phases(
        cfg,
        &needs,
        ctx.registry,
        (&steps, &views),
        train.len(),
        ranks,
    )?;
    if let Some(group) = e.group() {
        // The same starting weights on every rank (rank 0's).
        let mut values: Vec<_> = ps.entries.iter().map(|en| en.value.clone()).collect();
        crate::engine::dist::broadcast_tensors(e, group.as_ref(), &mut values)?;
        for (en, v) in ps.entries.iter_mut().zip(values) {
            en.value = v;
        }
    }
    let mut objective_pids = vec![false; ps.entries.len()];
    for (_, pid) in &model.objective_params {
        objective_pids[*pid] = true;
    }
    // The last batch of an epoch always completes an optimizer step.
    let schedule = curriculum::schedule(cfg, &phases);
    let total_steps = schedule.total_steps;
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
        streamed,
        monitor,
        obj,
        needs,
        spec,
        model,
        st,
        recipe,
        train,
        phases,
        total_steps,
        schedule,
        objective_pids,
        captions,
    })
}

/// Image–text pairs: the captions of `text.input` and the text tower, built at the end of the
/// store (after the encoder, heads and the objective's tensors).
fn paired_tower(
    cfg: &PretrainConfig,
    ctx: &StageCtx,
    (needs, embed_dim): (&ObjectiveNeeds, usize),
    (images, ds): (&Path, &Dataset),
    ps: &mut ParamStore,
    model: &mut Model,
) -> Result<Option<paired::Captions>, StageError> {
    let Some(t) = cfg.text.as_ref().filter(|_| needs.paired_text) else {
        return Ok(None);
    };
    let caps = paired::Captions::load(ctx, t, images, &ds.ids)?;
    let spec = paired::tower_spec(t, &caps, embed_dim);
    let seed = mix_seed(ctx.seed, super::Stream::ModelInit, 1, 0, 0);
    let mut tower = paired::Tower::new(ctx.engine, ps, spec, seed)?;
    tower
        .encoder
        .set_checkpoint_activations(cfg.model.checkpoint_activations)?;
    model.text = Some(tower);
    Ok(Some(caps))
}

/// The dataset at `path`, its train rows and the monitor's rows: in memory when it fits the
/// budget (see [`memory`]), else a [`Streamed`] reader and the few rows kept resident. The
/// monitor's samples are the same rows either way.
#[allow(clippy::type_complexity)]
fn load(
    path: &Path,
    seed: u64,
) -> Result<(Dataset, Option<Streamed>, Vec<usize>, Vec<usize>), StageError> {
    let monitor_of = |train: &[usize]| -> Vec<usize> {
        permutation(
            train.len(),
            mix_seed(seed, super::Stream::MonitorSamples, 0, 0, 0),
        )
        .into_iter()
        .take(1024)
        .map(|i| train[i])
        .collect()
    };
    let reader = table::DatasetReader::open(path)?;
    let fit = memory::fit(&reader)?;
    if !matches!(fit, memory::Fit::OverBudget { .. }) {
        memory::check_fits(&reader)?;
        let ds = table::load_dataset(reader)?;
        let train = ds.rows(Split::Train);
        let monitor = monitor_of(&train);
        return Ok((ds, None, train, monitor));
    }
    drop(reader);
    let budget = memory::budget().map_err(StageError::Input)?;
    let streamed = Streamed::open(path, budget)?;
    let splits = streamed.splits();
    let train: Vec<usize> = (0..splits.len())
        .filter(|&i| splits[i] == Split::Train)
        .collect();
    let monitor = monitor_of(&train);
    // Resident: the monitor's rows and the first test rows (MLM validation reads 512).
    let mut resident: Vec<usize> = (0..splits.len())
        .filter(|&i| splits[i] == Split::Test)
        .take(512)
        .chain(monitor.iter().copied())
        .collect();
    resident.sort_unstable();
    resident.dedup();
    let ds = streamed.rows(&resident)?;
    let monitor = monitor
        .iter()
        .map(|r| resident.binary_search(r).unwrap_or(0))
        .collect();
    if let memory::Fit::OverBudget { need, budget } = fit {
        tracing::info!(
            dataset = %path.display(),
            in_memory = %memory::human(need),
            budget = %memory::human(budget),
            window_row_groups = streamed.window(),
            "the dataset is over the memory budget: streaming its row groups in a block shuffle"
        );
    }
    Ok((ds, Some(streamed), train, monitor))
}

pub fn run(cfg: &PretrainConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let e = ctx.engine;
    let mut p = prepare(cfg, ctx)?;
    let mut first_epoch = 0;
    if let Some(dir) = ctx.checkpoint_dir {
        if let Some(done) = load_checkpoint(e, dir, &mut p.st)? {
            tracing::info!(epochs_done = done, checkpoint = %dir.display(), "resuming from checkpoint");
            first_epoch = done;
        }
    }
    let monitor = std::mem::take(&mut p.monitor);
    let started = Instant::now();
    let d = p.spec.embed_dim();
    tracing::info!(
        objective = %cfg.objective.plugin, params = p.st.ps.trainable_count(), train = p.train.len(),
        batch = p.phases[0].bs, epochs = cfg.epochs, phases = p.phases.len(), "pretraining"
    );
    // The collapse rule (see `Collapse`): the threshold for the watched output's width, and
    // the spread before training, which the first epoch is compared with.
    let watched_width = p.model.projector.as_ref().map_or(d, |pr| pr.output_width());
    let rule = Collapse::new(cfg.collapse.min_std, watched_width);
    let initial_spread = if rule.on() && first_epoch == 0 && p.model.mlm.is_none() {
        Some(p.health(e, &monitor, ctx.seed)?.watched())
    } else {
        None
    };
    let mut unhealthy = rule.streak(initial_spread, &p.st.history);
    for epoch in first_epoch..cfg.epochs {
        let t0 = Instant::now();
        let sums = p.train_epoch(cfg, ctx, epoch)?;
        let hl = p.health(e, &monitor, ctx.seed)?;
        let validation = match &p.model.mlm {
            Some(head) => mlm_validation(e, &p.model, head, &p.st.ps, &p.views, &p.ds, ctx.seed)?,
            None => BTreeMap::new(),
        };
        let mut rec = sums.record(
            epoch,
            p.schedule.lr(p.st.step.saturating_sub(1)),
            hl,
            validation,
        );
        if !cfg.curriculum.is_empty() {
            rec.phase = Some(curriculum::index(&p.phases, epoch) as u64 + 1);
        }
        show_epoch(ctx, &rec, t0);
        super::report_fields(ctx.progress, p.st.step, "epoch", &rec);
        let spread = rec.watched_spread();
        let previous =
            p.st.history
                .last()
                .map(|r| r.watched_spread())
                .or(initial_spread);
        // Predicting masked tokens cannot collapse to a constant (the targets are the data),
        // and mean-pooled MLM states are narrow by nature: the rule would only misfire.
        let collapsed_now = p.model.mlm.is_none() && rule.collapsing(spread, previous);
        p.st.history.push(rec.clone());
        if collapsed_now {
            unhealthy += 1;
            if unhealthy >= cfg.collapse.patience {
                return Err(collapse_error(
                    cfg,
                    ctx,
                    &rec,
                    &rule,
                    watched_width,
                    unhealthy,
                ));
            }
        } else {
            unhealthy = 0;
            // Rank 0 alone writes; every rank resumes from what it wrote.
            if let (Some(dir), true) = (ctx.checkpoint_dir, crate::launch::leads()) {
                save_checkpoint(e, dir, &p.st, epoch + 1)?;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // I-JEPA's student only ever sees context patches; the EMA teacher sees whole images and
    // is the encoder the paper evaluates and keeps.
    let saved = match (&p.model.jepa, &p.st.teacher) {
        (Some(_), Some(teacher)) => teacher,
        _ => &p.st.ps,
    };
    save(
        ctx.out_dir,
        &p.model,
        saved,
        &p.spec,
        &cfg.objective.plugin,
        &p.recipe.dataset_key,
    )?;
    write_json(&ctx.out_dir.join(HISTORY_FILE), &p.st.history)?;
    let mut m = Metrics::new();
    if let (Some(tower), Some(caps), Some(t)) = (&p.model.text, &p.captions, &cfg.text) {
        // The text tower was trained on the captions' dataset (probes read text with its
        // tokenizer).
        let captions = ctx.input("text")?;
        tower.save(ctx.out_dir, &p.st.ps, &cfg.objective.plugin, &captions.key)?;
        // The captions' tokenizer beside the tower: the artifact encodes new text on its own.
        crate::artifacts::tokenizer::copy(&captions.dir, ctx.out_dir)?;
        m.insert("text_parameters".into(), tower.parameters(&p.st.ps) as f64);
        m.extend(paired::evaluate(
            e,
            &p.model,
            tower,
            caps,
            &t.prompt,
            &mut p.st.ps,
            &p.ds,
        )?);
    }
    m.insert("epochs".into(), cfg.epochs as f64);
    m.insert("steps".into(), p.st.step as f64);
    m.insert(format!("{TIMING_PREFIX}seconds"), seconds);
    if cfg.epochs > 0 {
        let trained_epochs = (cfg.epochs - first_epoch).max(1) as f64;
        m.insert(
            format!("{TIMING_PREFIX}images_per_second"),
            (trained_epochs * p.train.len() as f64 * p.views.count() as f64) / seconds.max(1e-9),
        );
    } else {
        // Saved as imported (epochs = 0): the collapse metrics of the imported encoder.
        let hl = p.health(e, &monitor, ctx.seed)?;
        m.insert("embedding_std".into(), hl.std);
        if let Some(ps) = hl.proj_std {
            m.insert("projection_std".into(), ps);
        }
        m.insert("effective_rank".into(), hl.rank);
        m.insert("alignment".into(), hl.alignment);
        m.insert("uniformity".into(), hl.uniformity);
    }
    m.insert(
        "parameters".into(),
        p.model.encoder_store(&p.st.ps).trainable_count() as f64,
    );
    if let Some(last) = p.st.history.last() {
        last_epoch_metrics(last, &mut m);
    }
    Ok(m)
}

/// The metrics of the last epoch: loss, collapse metrics, objective reports, validation.
fn last_epoch_metrics(last: &EpochRecord, m: &mut Metrics) {
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

/// The end of an epoch for people: the progress line and a tracing event.
fn show_epoch(ctx: &StageCtx, rec: &EpochRecord, t0: Instant) {
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
}

/// The error of a representation that collapsed for `unhealthy` epochs in a row.
fn collapse_error(
    cfg: &PretrainConfig,
    ctx: &StageCtx,
    rec: &EpochRecord,
    rule: &Collapse,
    watched_width: usize,
    unhealthy: u64,
) -> StageError {
    let kept = match ctx.checkpoint_dir {
        Some(dir) if dir.join(CHECKPOINT_META).exists() => {
            format!("; the last good checkpoint is kept in {}", dir.display())
        }
        _ => String::new(),
    };
    StageError::Failed(format!(
        "representation collapsed: the {} spread (std of L2-normalised outputs) was {:.5} at epoch {}, below collapse.min_std = {} (scaled to {:.5} for {} dimensions) and not recovering for {} epoch(s) (encoder effective rank {:.2}){kept}. Check the objective's collapse-avoidance settings (predictor, negatives, variance terms) or lower the learning rate",
        if rec.projection_std.is_some() { "projection" } else { "embedding" },
        rec.watched_spread(), rec.epoch, cfg.collapse.min_std, rule.threshold, watched_width,
        unhealthy, rec.effective_rank
    ))
}

/// What one epoch's optimiser updates add up to.
#[derive(Default)]
struct EpochSums {
    loss_sum: f64,
    loss_n: usize,
    /// The loss of the last micro-batch (for the progress line).
    last_loss: f64,
    reports: BTreeMap<String, (f64, usize)>,
    /// Global gradient norm of the last update (before clipping).
    grad_norm: f64,
}

impl EpochSums {
    fn add(&mut self, sv: StepValues) {
        for l in &sv.losses {
            self.loss_sum += l;
            self.loss_n += 1;
            self.last_loss = *l;
        }
        for (k, v) in sv.reports {
            let r = self.reports.entry(k).or_insert((0.0, 0));
            r.0 += v as f64;
            r.1 += 1;
        }
        self.grad_norm = sv.grad_norm;
    }

    fn record(
        self,
        epoch: u64,
        lr: f64,
        hl: Health,
        validation: BTreeMap<String, f64>,
    ) -> EpochRecord {
        EpochRecord {
            epoch: epoch + 1,
            loss: self.loss_sum / self.loss_n.max(1) as f64,
            lr,
            grad_norm: self.grad_norm,
            embedding_std: hl.std,
            projection_std: hl.proj_std,
            effective_rank: hl.rank,
            alignment: hl.alignment,
            uniformity: hl.uniformity,
            reports: self
                .reports
                .into_iter()
                .map(|(k, (s, n))| (k, s / n as f64))
                .collect(),
            validation,
            phase: None,
        }
    }
}

impl Prepared {
    /// One epoch of optimiser steps. The next batch's views are produced on another thread
    /// while this one trains; every draw is seeded per sample, so the views do not depend on
    /// this overlap.
    fn train_epoch(
        &mut self,
        cfg: &PretrainConfig,
        ctx: &StageCtx,
        epoch: u64,
    ) -> Result<EpochSums, StageError> {
        // In memory: a permutation of the train rows. Streamed: row groups in a seeded order,
        // the rows of each window shuffled (the order is made as the producer reads).
        let order = match self.streamed {
            None => permutation(
                self.train.len(),
                mix_seed(ctx.seed, super::Stream::EpochOrder, epoch, 0, 0),
            ),
            Some(_) => Vec::new(),
        };
        let k = curriculum::index(&self.phases, epoch);
        let phase = &self.phases[k];
        let n_batches = phase.batches_per_epoch;
        let views = phase.views.as_ref().unwrap_or(&self.views);
        // The step groups the views by their sizes in this phase.
        self.model.view_shapes.clone_from(&views.view_shapes);
        let label = epoch_label(cfg, phase, k, views.output_shape, epoch);
        ctx.progress.start(&label, n_batches as u64);
        let (ahead, batches) = std::sync::mpsc::sync_channel::<Result<Batch, StageError>>(1);
        let producer = {
            let (ds, needs, order, train) = (&self.ds, &self.needs, &order, &self.train);
            let captions = self.captions.as_ref();
            let (seed, bs) = (ctx.seed, phase.bs);
            let streamed = self.streamed.as_ref();
            // This rank's part of a batch of `n` (all of it in a single process).
            let (rank, ranks) = ctx.engine.group().map_or((0, 1), |g| (g.rank(), g.size()));
            let shard = move |n: usize| crate::engine::dist::shard(n, rank, ranks);
            move || {
                if let Some(src) = streamed {
                    let mut rows = src.epoch(Split::Train, seed, epoch);
                    for _ in 0..n_batches {
                        let batch =
                            rows.next_batch(bs)
                                .map_err(StageError::from)
                                .and_then(|part| {
                                    let mine: Vec<usize> = shard(part.len()).collect();
                                    Batch::load(views, &part, needs, &mine, (seed, epoch), captions)
                                });
                        let failed = batch.is_err();
                        if ahead.send(batch).is_err() || failed {
                            break;
                        }
                    }
                    return;
                }
                for b in 0..n_batches {
                    let batch = &order[b * bs..((b + 1) * bs).min(order.len())];
                    let rows: Vec<usize> = shard(batch.len()).map(|i| train[batch[i]]).collect();
                    let batch = Batch::load(views, ds, needs, &rows, (seed, epoch), captions);
                    let failed = batch.is_err();
                    if ahead.send(batch).is_err() || failed {
                        break;
                    }
                }
            }
        };
        let (e, model, st, obj) = (ctx.engine, &self.model, &mut self.st, &mut self.obj);
        let (needs, schedule, total_steps) = (&self.needs, &self.schedule, self.total_steps);
        let objective_pids = &self.objective_pids;
        let run = Run {
            total_steps,
            epochs: cfg.epochs,
        };
        let accumulate = (cfg.accumulate as usize).max(1);
        let mut sums = EpochSums {
            last_loss: f64::NAN,
            ..EpochSums::default()
        };
        std::thread::scope(|scope| -> Result<(), StageError> {
            // Owned here, so an early return drops it and the producer's next send fails.
            let batches = batches;
            scope.spawn(producer);
            let mut acc: Option<GradList> = None;
            // Losses and reports of the micro-batches since the last update, read at the update.
            let mut pending: Vec<Pending> = Vec::new();
            for b in 0..n_batches {
                let batch = batches.recv().map_err(|_| {
                    StageError::Failed("the view-producing thread stopped unexpectedly".into())
                })??;
                let (loss_t, grads, reps) = batch.train(e, model, st, obj, run, ctx.seed)?;
                match &mut acc {
                    Some(a) => optim::accumulate(a, grads),
                    None => acc = Some(grads),
                }
                pending.push((loss_t, reps));
                if pending.len() == accumulate || b + 1 == n_batches {
                    let gs = acc.take().expect("at least one micro-batch");
                    let batch_losses = std::mem::take(&mut pending);
                    let sv = update(
                        e,
                        st,
                        needs,
                        obj,
                        gs,
                        objective_pids,
                        batch_losses,
                        cfg.grad_clip,
                        schedule,
                        total_steps,
                        epoch,
                    )
                    .map_err(|err| with_divergence_hint(err, cfg, ctx, st.step, schedule))?;
                    let step_loss = sv.losses.iter().sum::<f64>() / sv.losses.len() as f64;
                    let curves = [
                        ("train/loss", step_loss),
                        ("train/lr", schedule.lr(st.step - 1)),
                        ("train/grad_norm", sv.grad_norm),
                    ];
                    ctx.progress.scalars(st.step, &curves);
                    sums.add(sv);
                    if !sums.grad_norm.is_finite() {
                        return Err(StageError::Failed(format!(
                            "the gradient norm is {} at epoch {} step {}; {}",
                            sums.grad_norm,
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
                }
                ctx.progress
                    .advance(1, &format!("loss {:.4}", sums.last_loss));
            }
            Ok(())
        })?;
        Ok(sums)
    }
}

/// The progress label of an epoch; with a curriculum it names the phase, and the first epoch
/// of a phase logs it.
fn epoch_label(
    cfg: &PretrainConfig,
    phase: &curriculum::Phase,
    k: usize,
    (_, h, w): (usize, usize, usize),
    epoch: u64,
) -> String {
    match cfg.curriculum.len() {
        0 => format!("epoch {}/{}", epoch + 1, cfg.epochs),
        n => {
            if phase.epochs.start == epoch {
                tracing::info!(phase = k + 1, of = n, epochs = ?(phase.epochs.start + 1..=phase.epochs.end), size = %format!("{h}x{w}"), batch = phase.bs, "curriculum phase");
            }
            format!(
                "epoch {}/{} (phase {}/{n}: {h}x{w}, batch {})",
                epoch + 1,
                cfg.epochs,
                k + 1,
                phase.bs
            )
        }
    }
}

/// A non-finite loss from the objective, with advice on what to change.
fn with_divergence_hint(
    err: StageError,
    cfg: &PretrainConfig,
    ctx: &StageCtx,
    step: u64,
    schedule: &Schedule,
) -> StageError {
    match err {
        StageError::Plugin(c) if c.message.contains(crate::plugins::host::NON_FINITE_LOSS) => {
            StageError::Failed(format!(
                "{c}; {}",
                divergence_hint(step, cfg.optim.lr, schedule.lr(step), ctx.checkpoint_dir)
            ))
        }
        other => other,
    }
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
