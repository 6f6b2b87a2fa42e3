//! `pretext bench`: timed training steps of a pretrain stage, without writing an entry.

use std::time::Instant;

use serde::Serialize;

use super::prepare;
use super::step::{update, Batch};
use crate::data::memory;
use crate::pipeline::PretrainConfig;
use crate::stages::{mix_seed, permutation, StageCtx, StageError};

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
    if pr.streamed.is_some() {
        return Err(StageError::Input(format!(
            "the dataset is over the memory budget ({}), and bench reads its batches from a \
             dataset in memory: raise {} where the machine has the memory, or bench on a \
             smaller dataset (`limit` in the ingest stage)",
            memory::human(memory::budget().unwrap_or(memory::DEFAULT_BUDGET)),
            memory::BUDGET_ENV
        )));
    }
    let mut times = BenchTimes {
        encoder: cfg.model.arch.name().to_string(),
        objective: cfg.objective.plugin.clone(),
        batch: pr.phases[0].bs,
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
        let per_epoch = pr.phases[0].batches_per_epoch;
        let (epoch, b) = ((i / per_epoch) as u64, i % per_epoch);
        if b == 0 {
            order = permutation(
                pr.train.len(),
                mix_seed(ctx.seed, crate::seeds::Stream::EpochOrder, epoch, 0, 0),
            );
        }
        let rows: Vec<usize> = order
            [b * pr.phases[0].bs..((b + 1) * pr.phases[0].bs).min(order.len())]
            .iter()
            .map(|&r| pr.train[r])
            .collect();
        let t0 = Instant::now();
        let batch = Batch::load(
            &pr.views,
            &pr.ds,
            &pr.needs,
            &rows,
            (ctx.seed, epoch),
            pr.captions.as_ref(),
        )?;
        let t1 = Instant::now();
        let before = crate::engine::transfers();
        let (loss, grads, reps) = batch.train(
            e,
            &pr.model,
            &mut pr.st,
            &mut pr.obj,
            super::step::Run {
                total_steps: pr.total_steps,
                epochs: cfg.epochs,
            },
            ctx.seed,
        )?;
        let sv = update(
            e,
            &mut pr.st,
            &pr.needs,
            &pr.obj,
            grads,
            &pr.objective_pids,
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
