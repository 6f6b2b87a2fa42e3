//! `finetune`: supervised fine-tuning of a pretrained encoder with a linear head on the
//! labelled train split — fully, partially (the last N blocks), with LoRA (low-rank updates
//! of the frozen weights, merged into a plain model at the end) or with bottleneck adapters.
//! Reports test accuracy, trainable parameter count and time; the output is the fine-tuned
//! encoder, so probes and later stages can use it like a pretrained one.

use std::time::Instant;

use super::pretrain::{load_encoder, save_encoder};
use super::probe::{balanced_rows, head_accuracy};
use super::{mix_seed, permutation, Metrics, StageCtx, StageError, TIMING_PREFIX};
use crate::data::Split;
use crate::engine::nn::{Init, Linear, ParamKind, ParamStore};
use crate::engine::optim::{self, OptimSpec, Optimizer, Schedule};
use crate::pipeline::{FinetuneConfig, FinetuneMethod};

/// Encoder blocks in order: the first two dot-separated parts of parameter names
/// (`encoder.0`, `encoder.conv1`, `encoder.block3`, `encoder.head`, …).
pub fn blocks(ps: &ParamStore) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in &ps.entries {
        let group: String = e.name.splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
        if !out.contains(&group) {
            out.push(group);
        }
    }
    out
}

pub fn run(cfg: &FinetuneConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let e = ctx.engine;
    let data = ctx.input("data")?;
    let (encoder, mut ps, mut meta) = load_encoder(e, &ctx.input("encoder")?.dir)?;
    // Text read with the encoder's own tokenizer.
    let ds = super::ingest_text::read_input_for_encoder(ctx, "data", &meta)?;
    let labels = ds.labels.clone().ok_or_else(|| {
        StageError::Input(format!(
            "stage input `{}` has no labels; fine-tuning needs labelled data",
            data.stage
        ))
    })?;
    let classes = ds.classes().unwrap_or(0);
    if classes < 2 {
        return Err(StageError::Input(
            "fine-tuning needs at least 2 classes".into(),
        ));
    }
    if (ds.shape.0, ds.shape.1, ds.shape.2)
        != (meta.input.channels, meta.input.height, meta.input.width)
    {
        return Err(StageError::Input(format!(
            "the encoder takes images of shape {:?} but `data` has {:?}",
            (meta.input.channels, meta.input.height, meta.input.width),
            ds.shape
        )));
    }
    let mut init = Init::new(mix_seed(ctx.seed, super::Stream::FinetuneInit, 0, 0, 0));
    let total_before = ps.trainable_count();
    // Which entries train: a mask over the store, extended as entries are added.
    let mut trainable: Vec<bool> = match &cfg.method {
        FinetuneMethod::Full => ps
            .entries
            .iter()
            .map(|en| en.kind != ParamKind::Buffer)
            .collect(),
        FinetuneMethod::Partial { trainable_blocks } => {
            let groups = blocks(&ps);
            let keep: Vec<&String> = groups.iter().rev().take(*trainable_blocks).collect();
            ps.entries
                .iter()
                .map(|en| {
                    en.kind != ParamKind::Buffer
                        && keep
                            .iter()
                            .any(|g| en.name == **g || en.name.starts_with(&format!("{g}.")))
                })
                .collect()
        }
        FinetuneMethod::Lora { .. } | FinetuneMethod::Adapter { .. } => {
            vec![false; ps.entries.len()]
        }
    };
    match &cfg.method {
        FinetuneMethod::Lora {
            rank,
            alpha,
            layers,
        } => {
            let weights = ps.weights_matching(layers);
            if weights.is_empty() {
                return Err(StageError::Input(format!(
                    "lora.layers {layers:?} matches no weight of the encoder"
                )));
            }
            ps.attach_lora(e, &mut init, &weights, *rank, *alpha as f32);
        }
        FinetuneMethod::Adapter { bottleneck, layers } => {
            let weights = ps.weights_matching(layers);
            if weights.is_empty() {
                return Err(StageError::Input(format!(
                    "adapter.layers {layers:?} matches no weight of the encoder"
                )));
            }
            ps.attach_adapters(e, &mut init, &weights, *bottleneck);
            meta.adapters = Some((*bottleneck, layers.clone()));
        }
        _ => {}
    }
    trainable.resize(ps.entries.len(), true);
    let head_start = ps.entries.len();
    let head = Linear::new(
        e,
        &mut ps,
        &mut init,
        "finetune_head",
        meta.embed_dim,
        classes,
    );
    trainable.resize(ps.entries.len(), true);
    let trainable_params: usize = ps
        .entries
        .iter()
        .zip(&trainable)
        .filter(|(_, t)| **t)
        .map(|(en, _)| en.value.len())
        .sum();
    // The frozen part of the network keeps its batch-norm statistics (eval mode).
    let encoder_train_mode = matches!(
        cfg.method,
        FinetuneMethod::Full | FinetuneMethod::Partial { .. }
    );

    let train_rows: Vec<usize> = ds.rows(Split::Train);
    let rows = if cfg.label_fraction >= 1.0 {
        train_rows
    } else {
        let y: Vec<u32> = train_rows.iter().map(|&r| labels[r]).collect();
        balanced_rows(
            &y,
            classes,
            cfg.label_fraction,
            mix_seed(ctx.seed, super::Stream::FinetuneLabels, 0, 0, 0),
        )
        .into_iter()
        .map(|i| train_rows[i])
        .collect()
    };
    let bs = cfg.batch_size.min(rows.len()).max(2);
    let per_epoch = rows.len().div_ceil(bs) as u64;
    let sched = Schedule {
        base_lr: cfg.lr,
        warmup_steps: 0,
        total_steps: cfg.epochs * per_epoch,
        cosine: true,
    };
    let mut opt = Optimizer::new(
        OptimSpec::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
        },
        &ps,
    );
    let started = Instant::now();
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        let order = permutation(
            rows.len(),
            mix_seed(ctx.seed, super::Stream::FinetuneOrder, epoch, 0, 0),
        );
        ctx.progress
            .start(&format!("finetune {}/{}", epoch + 1, cfg.epochs), per_epoch);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(bs) {
            if chunk.len() < 2 {
                continue;
            }
            let batch: Vec<usize> = chunk.iter().map(|&i| rows[i]).collect();
            let x = e.tensor(ds.batch_f32(&batch), batch.len(), meta.input.len())?;
            let y: Vec<u32> = batch.iter().map(|&r| labels[r]).collect();
            let mut g = e.graph(true);
            let emb = encoder.forward(&mut ps, &mut g, &x, meta.input, encoder_train_mode)?;
            let logits = head.forward(&ps, &mut g, &emb)?;
            let loss = g.cross_entropy(&logits, &y)?;
            let step_loss = loss.scalar() as f64;
            loss_sum += step_loss;
            let mut grads = g.backward(&loss)?;
            let mut gs = optim::collect(&ps, &mut grads);
            for (gi, t) in gs.iter_mut().zip(&trainable) {
                if !t {
                    *gi = None;
                }
            }
            opt.apply(&mut ps, &gs, sched.lr(step) as f32);
            step += 1;
            let curves = [("train/loss", step_loss), ("train/lr", sched.lr(step - 1))];
            ctx.progress.scalars(step, &curves);
            ctx.progress.advance(1, "");
        }
        let epoch_loss = loss_sum / per_epoch.max(1) as f64;
        ctx.progress.scalars(step, &[("epoch/loss", epoch_loss)]);
        ctx.progress.finish(&format!("loss {epoch_loss:.4}"));
    }
    let seconds = started.elapsed().as_secs_f64();
    let accuracy = |ps: &mut ParamStore, rows: &[usize]| -> Result<f64, StageError> {
        head_accuracy(e, &encoder, ps, &head, &meta, &ds, rows, &labels, classes)
    };
    let test = ds.rows(Split::Test);
    let test_acc = accuracy(&mut ps, &test)?;
    let train_acc = accuracy(&mut ps, &rows)?;
    // LoRA is folded into the weights: the saved encoder is a plain model. Check on the whole
    // network (ids unchanged) that folding keeps the predictions.
    let mut encoder_only = ParamStore {
        entries: ps.entries[..head_start].to_vec(),
        lora: ps.lora.clone(),
        adapters: ps.adapters.clone(),
    };
    if !ps.lora.is_empty() {
        let mut folded = ps.clone();
        folded.fold_lora(e)?;
        let folded_acc = accuracy(&mut folded, &test)?;
        if (folded_acc - test_acc).abs() > 0.005 {
            return Err(StageError::Failed(format!(
                "merging LoRA changed the test accuracy from {test_acc:.4} to {folded_acc:.4}"
            )));
        }
        encoder_only.merge_lora(e)?;
    }
    save_encoder(ctx.out_dir, &encoder_only, &meta)?;
    let mut m = Metrics::new();
    m.insert("accuracy".into(), test_acc);
    m.insert("train_accuracy".into(), train_acc);
    m.insert("trainable_parameters".into(), trainable_params as f64);
    m.insert("encoder_parameters".into(), total_before as f64);
    m.insert("labelled_samples".into(), rows.len() as f64);
    m.insert(format!("{TIMING_PREFIX}seconds"), seconds);
    Ok(m)
}
