//! One training step: a batch's views, the forward pass through the objective (or MAE's or
//! MLM's own loss), backward, gradient accumulation and the optimiser update.

use std::path::Path;

use rayon::prelude::*;

use super::checkpoint::{CheckpointMeta, TrainState, CHECKPOINT_META};
use super::model::Model;
use super::paired::{Captions, Tower};
use crate::artifacts::views::Views;
use crate::data::Dataset;
use crate::engine::nn::{Encoder, JepaPredictor, MaeDecoder, Vit};
use crate::engine::nn::{MlmHead, ParamKind, TextTransformer};
use crate::engine::optim::{self, GradList, Schedule};
use crate::engine::{Axis2, Engine, Graph, Tensor};
use crate::plugins::{LatentPrediction, ObjectiveInstance, ObjectiveNeeds, StepInputs};
use crate::stages::{mix_seed, permutation, read_json, StageError};

/// One micro-batch's loss and the objective's reports, still on the device.
pub(super) type Pending = (Tensor, Vec<(String, Tensor)>);

/// A training step's result: the loss and reports (on the device) and the gradients.
pub(super) type StepResult = (Tensor, GradList, Vec<(String, Tensor)>);

/// What one optimiser step read back from the device, in one transfer.
pub(super) struct StepValues {
    /// One loss per micro-batch.
    pub(super) losses: Vec<f64>,
    /// Every report of every micro-batch, in order.
    pub(super) reports: Vec<(String, f32)>,
    pub(super) grad_norm: f64,
}

/// Average the micro-batches' gradients, read the losses, the gradient norm and the reports
/// back in one device-to-host transfer, and (when all are finite) clip and apply the update.
/// A non-finite loss is the objective's error; a non-finite norm is returned for the caller
/// to report (nothing is applied).
#[allow(clippy::too_many_arguments)]
pub(super) fn update(
    e: &Engine,
    st: &mut TrainState,
    needs: &ObjectiveNeeds,
    obj: &ObjectiveInstance,
    mut gs: GradList,
    objective_pids: &[bool],
    pending: Vec<Pending>,
    grad_clip: Option<f64>,
    schedule: &Schedule,
    total_steps: u64,
    epoch: u64,
) -> Result<StepValues, StageError> {
    let micro = pending.len();
    if let Some(group) = e.group() {
        // Each rank holds its rows' share of the gradient: the sum over ranks is the whole
        // batch's. The objective's own tensors act on the gathered batch and already have it.
        if !group.sums_on_device() {
            crate::engine::dist::sum_grads(e, group.as_ref(), &mut gs, objective_pids)?;
        } else {
            // Summed on the device with the rest: every rank had the whole gradient of these,
            // so their mean over ranks is it (and the same on every rank).
            optim::scale_where(&mut gs, 1.0 / group.size() as f32, objective_pids);
        }
    }
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

/// One batch of training rows, its views produced.
pub(super) struct Batch {
    pub(super) augmented: Vec<Vec<f32>>,
    /// Image–text pairs: each sample's caption (token ids).
    pub(super) captions: Option<Vec<f32>>,
    /// The unaugmented samples, for objectives with a decoder.
    pub(super) originals: Option<Vec<f32>>,
    pub(super) ids: Vec<u64>,
    pub(super) epoch: u64,
}

impl Batch {
    pub(super) fn load(
        views: &Views,
        ds: &Dataset,
        needs: &ObjectiveNeeds,
        rows: &[usize],
        (seed, epoch): (u64, u64),
        captions: Option<&Captions>,
    ) -> Result<Batch, StageError> {
        let ids: Vec<u64> = rows.iter().map(|&r| ds.ids[r]).collect();
        Ok(Batch {
            captions: captions.map(|c| c.batch(&ids)).transpose()?,
            augmented: augment_batch(views, ds, rows, seed, epoch, needs.masked_tokens)?,
            originals: needs.decoder.map(|_| ds.batch_f32(rows)),
            ids,
            epoch,
        })
    }

    /// Forward, loss and backward on this batch at the state's current step.
    pub(super) fn train(
        self,
        e: &Engine,
        model: &Model,
        st: &mut TrainState,
        obj: &mut ObjectiveInstance,
        run: Run,
        seed: u64,
    ) -> Result<StepResult, StageError> {
        let n = self.ids.len();
        let sc = StepCtx {
            epoch: self.epoch,
            step: st.step,
            total_steps: run.total_steps,
            epochs: run.epochs,
            seed,
            ids: &self.ids,
        };
        let t = Trainee { e, model, st, obj };
        if let (Some(tower), Some(captions)) = (&model.text, self.captions) {
            return paired_step(t, tower, &self.augmented[0], captions, n, sc);
        }
        train_step(t, self.augmented, self.originals, n, sc)
    }
}

/// How long the whole run is: what schedules inside an objective (DINO's teacher temperature)
/// read.
#[derive(Clone, Copy)]
pub(super) struct Run {
    pub(super) total_steps: u64,
    pub(super) epochs: u64,
}

#[derive(Clone, Copy)]
pub(super) struct StepCtx<'a> {
    pub(super) epoch: u64,
    pub(super) step: u64,
    pub(super) total_steps: u64,
    pub(super) epochs: u64,
    pub(super) seed: u64,
    /// Sample ids of the batch (per-sample randomness such as MAE masks).
    pub(super) ids: &'a [u64],
}

impl StepCtx<'_> {
    /// The objective's inputs at this step: `embeddings` and the step's counters.
    fn inputs<'i>(&self, embeddings: &'i [Tensor]) -> StepInputs<'i> {
        StepInputs {
            epoch: self.epoch as u32,
            step: self.step,
            total_steps: self.total_steps,
            epochs: self.epochs as u32,
            ..StepInputs::bare(embeddings)
        }
    }
}

/// What a training step trains: the model on the engine, its state and the objective.
pub(super) struct Trainee<'t> {
    pub(super) e: &'t Engine,
    pub(super) model: &'t Model,
    pub(super) st: &'t mut TrainState,
    pub(super) obj: &'t mut ObjectiveInstance,
}

/// One forward/backward pass over a batch of `n` samples in every view; returns the loss,
/// the gradients of the student's parameters, and the objective's reports.
pub(super) fn train_step(
    t: Trainee,
    augmented: Vec<Vec<f32>>,
    originals: Option<Vec<f32>>,
    n: usize,
    sc: StepCtx,
) -> Result<StepResult, StageError> {
    let model = t.model;
    if let (Some((ratio, dec)), Encoder::Vit(vit)) = (&model.mae, &model.encoder) {
        return mae_step(t, vit, *ratio, dec, &augmented[0], n, sc);
    }
    if let (Some((spec, pred)), Encoder::Vit(vit)) = (&model.jepa, &model.encoder) {
        return jepa_step(t, vit, spec, pred, &augmented[0], n, sc);
    }
    if let (Some(head), Encoder::Text(text)) = (&model.mlm, &model.encoder) {
        return mlm_step(t, text, head, &augmented[0], n, sc);
    }
    let Trainee { e, st, obj, .. } = t;
    let v = augmented.len();
    let groups = super::crops::groups(&model.view_shapes);
    // One upload per run of equal-sized views (all of them, unless the views differ in size);
    // the per-view inputs an objective may read are slices of it on the device.
    let mut xs = Vec::with_capacity(groups.len());
    let mut view_inputs = Vec::with_capacity(v);
    for (shape, range) in &groups {
        let k = range.len();
        let x = e
            .tensor(augmented[range.clone()].concat(), k * n, shape.len())?
            .as_input();
        view_inputs.extend(
            split_views(&mut e.graph(false), &x, k, n)?
                .into_iter()
                .map(Tensor::as_input),
        );
        xs.push(x);
    }
    let originals = originals
        .map(|o| e.tensor(o, n, model.input.len()))
        .transpose()?;
    // The EMA teacher sees the same batch (or only its first views, the global crops) without
    // recording gradients.
    let targets = match &mut st.teacher {
        Some(t) => {
            let mut tg = e.graph(false);
            let mut out = Vec::new();
            for ((shape, range), x) in groups.iter().zip(&xs) {
                let k = match model.teacher_views {
                    Some(k) if range.start >= k => break,
                    Some(k) => range.len().min(k - range.start),
                    None => range.len(),
                };
                let x = match k == range.len() {
                    true => x.clone(),
                    false => tg.slice(x, Axis2::Rows, 0, k * n)?,
                };
                let o = model.forward_at(t, &mut tg, &x, *shape, true, false)?;
                let z = o.proj.unwrap_or(o.emb);
                out.extend(split_views(&mut tg, &z, k, n)?);
            }
            Some(out)
        }
        None => None,
    };
    let mut g = e.graph(true);
    g.set_seed(mix_seed(
        sc.seed,
        crate::seeds::Stream::Dropout,
        sc.step,
        0,
        0,
    ));
    // Each run of views goes through the student as one batch; the heads see the same batch.
    let (mut emb_v, mut proj_v, mut pred_v, mut dec_v) = (vec![], vec![], vec![], vec![]);
    for ((shape, range), x) in groups.iter().zip(&xs) {
        let k = range.len();
        let out = model.forward_at(&mut st.ps, &mut g, x, *shape, true, true)?;
        emb_v.extend(split_views(&mut g, &out.emb, k, n)?);
        for (all, part) in [
            (&mut proj_v, &out.proj),
            (&mut pred_v, &out.pred),
            (&mut dec_v, &out.dec),
        ] {
            if let Some(p) = part {
                all.extend(split_views(&mut g, p, k, n)?);
            }
        }
    }
    fn some(v: &[Tensor]) -> Option<&[Tensor]> {
        (!v.is_empty()).then_some(v)
    }
    let (params, teacher_params) = model.objective_params(&st.ps, st.teacher.as_ref());
    let inputs = StepInputs {
        projections: some(&proj_v),
        predictions: some(&pred_v),
        targets: targets.as_deref(),
        view_inputs: Some(&view_inputs),
        originals: originals.as_ref(),
        decoded: some(&dec_v),
        params: &params,
        teacher_params: &teacher_params,
        ..sc.inputs(&emb_v)
    };
    objective_step(e, g, obj, st, &inputs)
}

/// One image–text step (CLIP): the image view through the image encoder, each sample's
/// caption through the text tower, and both embeddings (`[image, text]`) to the objective.
fn paired_step(
    t: Trainee,
    tower: &Tower,
    view: &[f32],
    captions: Vec<f32>,
    n: usize,
    sc: StepCtx,
) -> Result<StepResult, StageError> {
    let Trainee { e, model, st, obj } = t;
    let groups = super::crops::groups(&model.view_shapes);
    let shape = groups.first().map_or(model.input, |(s, _)| *s);
    let x = e.tensor(view.to_vec(), n, shape.len())?.as_input();
    let len = captions.len() / n.max(1);
    let tokens = e.tensor(captions, n, len)?;
    let mut g = e.graph(true);
    g.set_seed(mix_seed(
        sc.seed,
        crate::seeds::Stream::Dropout,
        sc.step,
        0,
        0,
    ));
    let image = model.forward_at(&mut st.ps, &mut g, &x, shape, true, true)?;
    let text = tower
        .encoder
        .forward(&mut st.ps, &mut g, &tokens, tower.input(), true)?;
    let emb = [image.emb, text];
    let (params, teacher_params) = model.objective_params(&st.ps, None);
    let inputs = StepInputs {
        params: &params,
        teacher_params: &teacher_params,
        ..sc.inputs(&emb)
    };
    objective_step(e, g, obj, st, &inputs)
}

/// One masked-patch-modelling step: each sample hides a random `ratio` of its patches
/// (seeded per sample and epoch), the ViT encodes the visible ones, the decoder predicts all.
pub(super) fn mae_step(
    t: Trainee,
    vit: &Vit,
    ratio: f64,
    dec: &MaeDecoder,
    view: &[f32],
    n: usize,
    sc: StepCtx,
) -> Result<StepResult, StageError> {
    let Trainee { e, model, st, obj } = t;
    let t = vit.num_tokens();
    let keep = ((t as f64 * (1.0 - ratio)).round() as usize).clamp(1, t - 1);
    let visible: Vec<Vec<usize>> = sc
        .ids
        .iter()
        .map(|&id| {
            let mut v: Vec<usize> = permutation(
                t,
                mix_seed(sc.seed, crate::seeds::Stream::MaeMask, sc.epoch, id, 0),
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
    let enc_tokens = patch_states(vit, &mut g, h, n, per)?;
    let pred = dec.forward(&st.ps, &mut g, &enc_tokens, &visible)?;
    let view_inputs = [x];
    let inputs = StepInputs {
        view_inputs: Some(&view_inputs),
        masked_patches: Some((&pred, &targets, &mask)),
        ..sc.inputs(std::slice::from_ref(&emb))
    };
    objective_step(e, g, obj, st, &inputs)
}

/// The ViT's output states of the patches alone: `h` holds `per` rows per sample, the first
/// the class token when the ViT has one, which is dropped.
fn patch_states(
    vit: &Vit,
    g: &mut Graph,
    h: Tensor,
    n: usize,
    per: usize,
) -> Result<Tensor, StageError> {
    if !vit.has_cls() {
        return Ok(h);
    }
    let rows: Vec<usize> = (0..n)
        .flat_map(|b| (1..per).map(move |i| b * per + i))
        .collect();
    Ok(g.select_rows(&h, &rows)?)
}

/// I-JEPA: the EMA teacher encodes the whole image; the student encodes the context patches
/// (the context block minus every target block) and the predictor predicts the teacher's
/// output at each target block's patches from them.
#[allow(clippy::too_many_arguments)]
fn jepa_step(
    t: Trainee,
    vit: &Vit,
    spec: &LatentPrediction,
    predictor: &JepaPredictor,
    view: &[f32],
    n: usize,
    sc: StepCtx,
) -> Result<StepResult, StageError> {
    let Trainee { e, model, st, obj } = t;
    let tokens = vit.num_tokens();
    let stream = crate::seeds::Stream::JepaMask;
    let seeds: Vec<u64> = sc
        .ids
        .iter()
        .map(|&id| mix_seed(sc.seed, stream, sc.epoch, id, 0))
        .collect();
    let batch_seed = mix_seed(sc.seed, stream, sc.epoch, sc.step, 1);
    let masks = super::blocks::sample(spec, vit.patch_grid(), batch_seed, &seeds);
    let x = e.tensor(view.to_vec(), n, model.input.len())?.as_input();
    let Some(teacher) = &st.teacher else {
        return Err(StageError::Input(
            "prediction in latent space needs the objective's EMA teacher".into(),
        ));
    };
    // The teacher's outputs at every target patch, block by block, image by image.
    let mut tg = e.graph(false);
    let all = vit.tokens(teacher, &mut tg, &x, model.input)?;
    let (th, per) = vit.run_blocks(teacher, &mut tg, &all, n, tokens)?;
    let cls = per - tokens;
    let rows: Vec<usize> = masks
        .targets
        .iter()
        .flat_map(|block| {
            block
                .iter()
                .enumerate()
                .flat_map(move |(b, v)| v.iter().map(move |&p| b * per + cls + p))
        })
        .collect();
    let targets = tg.select_rows(&th, &rows)?;
    let mut g = e.graph(true);
    g.set_seed(mix_seed(
        sc.seed,
        crate::seeds::Stream::Dropout,
        sc.step,
        0,
        0,
    ));
    let tok = vit.tokens(&st.ps, &mut g, &x, model.input)?;
    let k = masks.context[0].len();
    let ctx_rows: Vec<usize> = masks
        .context
        .iter()
        .enumerate()
        .flat_map(|(b, v)| v.iter().map(move |&p| b * tokens + p))
        .collect();
    let ctx = g.select_rows(&tok, &ctx_rows)?;
    let (h, per) = vit.run_blocks(&st.ps, &mut g, &ctx, n, k)?;
    let emb = vit.pool(&st.ps, &mut g, &h, n, per)?;
    let ctx_out = patch_states(vit, &mut g, h, n, per)?;
    let mut predictions: Option<Tensor> = None;
    for block in &masks.targets {
        let p = predictor.forward(&st.ps, &mut g, &ctx_out, &masks.context, block)?;
        predictions = Some(match predictions {
            Some(all) => g.concat(&all, &p, Axis2::Rows)?,
            None => p,
        });
    }
    let Some(predictions) = predictions else {
        return Err(StageError::Input(
            "prediction in latent space needs at least one target block".into(),
        ));
    };
    let (params, teacher_params) = model.objective_params(&st.ps, st.teacher.as_ref());
    let inputs = StepInputs {
        latent: Some((&predictions, &targets)),
        params: &params,
        teacher_params: &teacher_params,
        ..sc.inputs(std::slice::from_ref(&emb))
    };
    objective_step(e, g, obj, st, &inputs)
}

/// Split marked token views (`n` rows of `2·len`: ids, then targets or -1) into the encoder's
/// ids, the flagged rows (`b·len + position`) and their target ids.
pub(super) fn unmark(view: &[f32], len: usize) -> (Vec<f32>, Vec<usize>, Vec<f32>) {
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
pub(super) fn mlm_step(
    t: Trainee,
    text: &TextTransformer,
    head: &MlmHead,
    view: &[f32],
    n: usize,
    sc: StepCtx,
) -> Result<StepResult, StageError> {
    let Trainee { e, st, obj, .. } = t;
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
    g.set_seed(mix_seed(
        sc.seed,
        crate::seeds::Stream::Dropout,
        sc.step,
        0,
        0,
    ));
    let states = text.token_states(&st.ps, &mut g, &x, true)?;
    let emb = text.pool(&st.ps, &mut g, &states)?;
    let logits = head.logits(&st.ps, &mut g, &states.states, &flagged)?;
    let view_inputs = [x];
    let inputs = StepInputs {
        view_inputs: Some(&view_inputs),
        masked_tokens: Some((&logits, &targets)),
        ..sc.inputs(std::slice::from_ref(&emb))
    };
    objective_step(e, g, obj, st, &inputs)
}

/// The objective's loss on the step's graph, its backward pass, and the student's gradients.
pub(super) fn objective_step(
    e: &Engine,
    mut g: Graph,
    obj: &mut ObjectiveInstance,
    st: &mut TrainState,
    inputs: &StepInputs,
) -> Result<StepResult, StageError> {
    let res = match e.group() {
        None => obj.loss(e, &mut g, inputs, &mut st.objective_state)?,
        Some(_) => {
            // Data-parallel: every rank computes the loss of the global batch.
            let all = Global::gather(&mut g, inputs)?;
            obj.loss(e, &mut g, &all.inputs(inputs), &mut st.objective_state)?
        }
    };
    let mut grads = g.backward(&res.loss)?;
    if let Some(group) = e.group().filter(|g| g.sums_on_device()) {
        // NCCL sums the gradients where backward wrote them (on a GPU); see `update`. The
        // parameters `optim::collect` takes, in its order.
        let params: Vec<&Tensor> = (st.ps.entries.iter())
            .filter(|en| en.kind != ParamKind::Buffer)
            .map(|en| &en.value)
            .collect();
        if let Some(summed) = group.sum_on_device(&mut grads, &params) {
            summed?;
        }
    }
    Ok((res.loss, optim::collect(&st.ps, &mut grads), res.reports))
}

/// A step's per-sample tensors over every rank's rows ([`Graph::all_gather_rows`]): what the
/// objective sees in a data-parallel run, so its loss, statistics, negatives and state are
/// the global batch's, as in one process. Only the objective's own parameters stay as they are.
struct Global {
    embeddings: Vec<Tensor>,
    projections: Option<Vec<Tensor>>,
    predictions: Option<Vec<Tensor>>,
    targets: Option<Vec<Tensor>>,
    view_inputs: Option<Vec<Tensor>>,
    originals: Option<Tensor>,
    decoded: Option<Vec<Tensor>>,
    masked_patches: Option<[Tensor; 3]>,
    masked_tokens: Option<[Tensor; 2]>,
    latent: Option<[Tensor; 2]>,
}

impl Global {
    fn gather(g: &mut Graph, i: &StepInputs) -> Result<Global, StageError> {
        fn all(g: &mut Graph, ts: &[Tensor]) -> Result<Vec<Tensor>, StageError> {
            ts.iter()
                .map(|t| g.all_gather_rows(t).map_err(StageError::from))
                .collect()
        }
        fn each<const N: usize>(
            g: &mut Graph,
            ts: [&Tensor; N],
        ) -> Result<[Tensor; N], StageError> {
            let v = all(g, &ts.map(Tensor::clone))?;
            Ok(v.try_into()
                .unwrap_or_else(|_| unreachable!("one output per input")))
        }
        Ok(Global {
            embeddings: all(g, i.embeddings)?,
            projections: i.projections.map(|t| all(g, t)).transpose()?,
            predictions: i.predictions.map(|t| all(g, t)).transpose()?,
            targets: i.targets.map(|t| all(g, t)).transpose()?,
            view_inputs: i.view_inputs.map(|t| all(g, t)).transpose()?,
            originals: i.originals.map(|t| g.all_gather_rows(t)).transpose()?,
            decoded: i.decoded.map(|t| all(g, t)).transpose()?,
            masked_patches: i
                .masked_patches
                .map(|(a, b, c)| each(g, [a, b, c]))
                .transpose()?,
            masked_tokens: i.masked_tokens.map(|(a, b)| each(g, [a, b])).transpose()?,
            latent: i.latent.map(|(a, b)| each(g, [a, b])).transpose()?,
        })
    }

    /// `base` with its per-sample tensors replaced by the global ones.
    fn inputs<'s>(&'s self, base: &StepInputs<'s>) -> StepInputs<'s> {
        StepInputs {
            embeddings: &self.embeddings,
            projections: self.projections.as_deref(),
            predictions: self.predictions.as_deref(),
            targets: self.targets.as_deref(),
            view_inputs: self.view_inputs.as_deref(),
            originals: self.originals.as_ref(),
            decoded: self.decoded.as_deref(),
            masked_patches: self.masked_patches.as_ref().map(|[a, b, c]| (a, b, c)),
            masked_tokens: self.masked_tokens.as_ref().map(|[a, b]| (a, b)),
            latent: self.latent.as_ref().map(|[a, b]| (a, b)),
            ..*base
        }
    }
}

pub(super) fn split_views(
    g: &mut Graph,
    t: &Tensor,
    v: usize,
    n: usize,
) -> Result<Vec<Tensor>, StageError> {
    (0..v)
        .map(|i| {
            g.slice(t, Axis2::Rows, i * n, (i + 1) * n)
                .map_err(StageError::from)
        })
        .collect()
}

/// Augment `batch` through every view, in parallel over samples; deterministic per
/// (seed, epoch, sample id, view).
pub(super) fn augment_batch(
    views: &Views,
    ds: &Dataset,
    batch: &[usize],
    seed: u64,
    epoch: u64,
    marked: bool,
) -> Result<Vec<Vec<f32>>, StageError> {
    // Marked token views carry the targets after the ids (see `Views::apply_marked`).
    let per = |v: usize| match marked && views.vocab.is_some() {
        true => 2 * views.view_len(v),
        false => views.view_len(v),
    };
    // On the shared rayon pool: while a step trains, its idle moments produce the next views.
    let mut out: Vec<Vec<f32>> = (0..views.count())
        .map(|v| vec![0f32; batch.len() * per(v)])
        .collect();
    for (v, buf) in out.iter_mut().enumerate() {
        let per = per(v);
        buf.par_chunks_mut(per)
            .zip(batch.par_iter())
            .with_min_len(8)
            .try_for_each(|(slot, &r)| -> Result<(), StageError> {
                let img = views.apply_marked(
                    v,
                    mix_seed(
                        seed,
                        crate::seeds::Stream::Views,
                        epoch,
                        ds.ids[r],
                        v as u64,
                    ),
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
pub(super) fn divergence_hint(
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
