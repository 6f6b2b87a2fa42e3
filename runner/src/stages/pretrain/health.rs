//! Per-epoch health: the collapse metrics of a fixed monitor set, the collapse rule, and the
//! held-out masked-token validation of MLM.

use std::collections::BTreeMap;

use super::model::Model;
use super::step::unmark;
use super::Prepared;
use crate::artifacts::encoder::embed;
use crate::artifacts::history::EpochRecord;
use crate::artifacts::views::Views;
use crate::data::{Dataset, Split};
use crate::engine::nn::MlmHead;
use crate::engine::nn::{Encoder, ParamStore};
use crate::engine::Engine;
use crate::eval::collapse as monitor;
use crate::stages::{mix_seed, StageError};

/// The collapse rule. The spread of L2-normalised d-dimensional outputs is about 1/√d when
/// they are spread out and → 0 when they collapse, so `collapse.min_std` is stated for a
/// 128-dimensional output and scaled by √(128/d) (0.01 is the same fraction of a spread-out
/// representation — about 11 % — at every width). An epoch counts toward collapse only when its
/// spread is below that threshold **and** not recovering: it grew by less than 10 % over the
/// previous epoch (the first epoch is compared with the spread before training). A randomly
/// initialised network often starts narrow and objectives with variance terms widen it epoch by
/// epoch; a collapsing one shrinks or stays flat.
pub(super) struct Collapse {
    pub(super) threshold: f64,
}

/// How much an epoch's spread must grow over the previous one to count as recovering.
pub(super) const RECOVERING: f64 = 1.10;

/// The width `collapse.min_std` is stated for.
pub(super) const REFERENCE_WIDTH: f64 = 128.0;

impl Collapse {
    pub(super) fn new(min_std: f64, width: usize) -> Collapse {
        Collapse {
            threshold: min_std * (REFERENCE_WIDTH / width.max(1) as f64).sqrt().min(1.0),
        }
    }
    pub(super) fn on(&self) -> bool {
        self.threshold > 0.0
    }
    /// Whether an epoch with `spread` (after one with `previous`) counts toward collapse.
    pub(super) fn collapsing(&self, spread: f64, previous: Option<f64>) -> bool {
        self.on() && spread < self.threshold && previous.is_none_or(|p| spread < p * RECOVERING)
    }
    /// The current run of collapsing epochs at the end of `history` (resuming a checkpoint).
    pub(super) fn streak(&self, initial: Option<f64>, history: &[EpochRecord]) -> u64 {
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
pub(super) struct Health {
    pub(super) std: f64,
    /// Spread of the projector output (what the objective acts on), when there is one.
    pub(super) proj_std: Option<f64>,
    pub(super) rank: f64,
    pub(super) alignment: f64,
    pub(super) uniformity: f64,
}

impl Health {
    /// The spread the collapse rule watches (see [`EpochRecord::watched_spread`]).
    pub(super) fn watched(&self) -> f64 {
        self.proj_std.unwrap_or(self.std)
    }
}

impl Prepared {
    /// The collapse metrics of the `monitor` rows (embeddings, projector outputs, and two
    /// augmented views of up to 256 of them).
    pub(super) fn health(
        &mut self,
        e: &Engine,
        monitor: &[usize],
        seed: u64,
    ) -> Result<Health, StageError> {
        // The encoder the stage will save: the EMA teacher's for I-JEPA (see `run`).
        let ps = match (&self.model.jepa, &mut self.st.teacher) {
            (Some(_), Some(teacher)) => teacher,
            _ => &mut self.st.ps,
        };
        let (model, views, ds) = (&self.model, &self.views, &self.ds);
        let d = self.spec.embed_dim();
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
        // Two views of (up to) 256 monitor samples, with randomness of their own stream: views
        // at the model's input size (the global crops, listed first, under multi-crop).
        let few = &monitor[..monitor.len().min(256)];
        let full_size = views
            .view_shapes
            .iter()
            .take_while(|s| **s == views.output_shape)
            .count()
            .max(1);
        let mut per_view = |v: usize| -> Result<Vec<f32>, StageError> {
            let mut buf = Vec::with_capacity(few.len() * model.input.len());
            for &r in few {
                buf.extend(views.apply(
                    v % full_size,
                    mix_seed(
                        seed,
                        crate::seeds::Stream::MonitorViews,
                        0,
                        ds.ids[r],
                        v as u64,
                    ),
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
}

/// Masked-token accuracy, cross-entropy and perplexity on (up to) 512 test-split sequences,
/// masked by view 0 with randomness fixed across epochs (so epochs are comparable).
pub(super) fn mlm_validation(
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
                mix_seed(seed, crate::seeds::Stream::MlmValidation, 0, ds.ids[r], 0),
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
