//! Supervised training of an encoder with a linear classification head: the loop that the
//! probe stage's from-scratch baseline and the finetune stage share, and the accuracy of
//! such a classifier.

use crate::data::Dataset;
use crate::engine::nn::{Encoder, InputShape, Linear, ParamStore};
use crate::engine::optim::{self, OptimSpec, Optimizer, Schedule};
use crate::engine::Engine;
use crate::error::StageError;
use crate::progress::Progress;
use crate::seeds::{mix_seed, permutation, Stream};

/// An encoder with a linear head; both read their weights from one parameter store.
pub struct Classifier<'a> {
    pub encoder: &'a Encoder,
    pub head: &'a Linear,
    pub input: InputShape,
    pub classes: usize,
}

/// Labelled samples: dataset rows and the labels (indexed by row).
pub struct Examples<'a> {
    pub ds: &'a Dataset,
    pub rows: &'a [usize],
    pub labels: &'a [u32],
}

/// How to train: AdamW (β = 0.9/0.999, weight decay 1e-4) with a cosine schedule and no
/// warm-up, over shuffled mini-batches (batches of fewer than 2 samples are skipped).
pub struct Training<'a> {
    /// Progress label, e.g. `finetune` (shown as `finetune 3/10`).
    pub label: &'a str,
    pub epochs: u64,
    pub lr: f64,
    pub batch_size: usize,
    /// The seed and the stream of the per-epoch batch order.
    pub seed: u64,
    pub order: Stream,
    /// Which store entries train (`None`: every parameter); the others keep their values.
    pub trainable: Option<&'a [bool]>,
    /// Whether the encoder runs in train mode (batch-norm statistics, dropout); a frozen
    /// encoder keeps its statistics.
    pub encoder_train_mode: bool,
    /// Report the loss and learning rate per step and the loss per epoch as curves
    /// ([`Progress::scalars`]): on for the stage's own model, off for repeated baselines.
    pub curves: bool,
}

/// Train `clf` on `data`; returns the mean loss of each epoch.
pub fn train(
    e: &Engine,
    clf: &Classifier,
    ps: &mut ParamStore,
    data: &Examples,
    t: &Training,
    progress: &dyn Progress,
) -> Result<Vec<f64>, StageError> {
    let Examples { ds, rows, labels } = *data;
    let bs = t.batch_size.min(rows.len()).max(2);
    let per_epoch = rows.len().div_ceil(bs) as u64;
    let sched = Schedule {
        base_lr: t.lr,
        warmup_steps: 0,
        total_steps: t.epochs * per_epoch,
        cosine: true,
    };
    let mut opt = Optimizer::new(
        OptimSpec::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
        },
        ps,
    );
    let mut step = 0;
    let mut losses = Vec::with_capacity(t.epochs as usize);
    for epoch in 0..t.epochs {
        let order = permutation(rows.len(), mix_seed(t.seed, t.order, epoch, 0, 0));
        progress.start(
            &format!("{} {}/{}", t.label, epoch + 1, t.epochs),
            per_epoch,
        );
        let mut loss_sum = 0.0;
        for chunk in order.chunks(bs) {
            if chunk.len() < 2 {
                continue;
            }
            let batch: Vec<usize> = chunk.iter().map(|&i| rows[i]).collect();
            let x = e.tensor(ds.batch_f32(&batch), batch.len(), clf.input.len())?;
            let y: Vec<u32> = batch.iter().map(|&r| labels[r]).collect();
            let mut g = e.graph(true);
            let emb = clf
                .encoder
                .forward(ps, &mut g, &x, clf.input, t.encoder_train_mode)?;
            let logits = clf.head.forward(ps, &mut g, &emb)?;
            let loss = g.cross_entropy(&logits, &y)?;
            let step_loss = loss.scalar() as f64;
            loss_sum += step_loss;
            let mut grads = g.backward(&loss)?;
            let mut gs = optim::collect(ps, &mut grads);
            if let Some(mask) = t.trainable {
                for (gi, on) in gs.iter_mut().zip(mask) {
                    if !on {
                        *gi = None;
                    }
                }
            }
            opt.apply(ps, &gs, sched.lr(step) as f32);
            step += 1;
            if t.curves {
                let curves = [("train/loss", step_loss), ("train/lr", sched.lr(step - 1))];
                progress.scalars(step, &curves);
            }
            progress.advance(1, "");
        }
        let mean = loss_sum / per_epoch.max(1) as f64;
        if t.curves {
            progress.scalars(step, &[("epoch/loss", mean)]);
        }
        progress.finish(&format!("loss {mean:.4}"));
        losses.push(mean);
    }
    Ok(losses)
}

/// Top-1 accuracy of `clf` on `data` (eval mode), in batches of 512.
pub fn accuracy(
    e: &Engine,
    clf: &Classifier,
    ps: &mut ParamStore,
    data: &Examples,
) -> Result<f64, StageError> {
    let Examples { ds, rows, labels } = *data;
    let mut correct = 0usize;
    for chunk in rows.chunks(512) {
        let x = e.tensor(ds.batch_f32(chunk), chunk.len(), clf.input.len())?;
        let mut g = e.graph(false);
        let emb = clf.encoder.forward(ps, &mut g, &x, clf.input, false)?;
        let logits = clf.head.forward(ps, &mut g, &emb)?.to_vec();
        correct += logits
            .chunks(clf.classes)
            .zip(chunk)
            .filter(|(l, &r)| crate::eval::probes::argmax(l) == labels[r])
            .count();
    }
    Ok(correct as f64 / rows.len().max(1) as f64)
}
