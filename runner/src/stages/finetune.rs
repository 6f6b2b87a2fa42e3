//! `finetune`: supervised fine-tuning of a pretrained encoder with a linear head on the
//! labelled train split — fully, partially (the last N blocks), with LoRA (low-rank updates
//! of the frozen weights, merged into a plain model at the end) or with bottleneck adapters.
//! Reports test accuracy, trainable parameter count and time; the output is the fine-tuned
//! encoder, so probes and later stages can use it like a pretrained one.

use std::time::Instant;

use super::{mix_seed, Metrics, StageCtx, StageError, TIMING_PREFIX};
use crate::artifacts::dataset::DATASET_FILE;
use crate::artifacts::encoder::{encoder_spec, load_encoder, save_encoder, EncoderMeta};
use crate::data::{Dataset, Split};
use crate::engine::nn::{Encoder, Init, InputShape, Linear, ParamKind, ParamStore};
use crate::engine::Engine;
use crate::eval::probes::balanced_rows;
use crate::pipeline::{FinetuneConfig, FinetuneMethod, InitConfig, ModelConfig};
use crate::supervised::{self, Classifier, Examples, Training};

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
    let (encoder, mut ps, mut meta, ds) = match (&cfg.init, &cfg.model) {
        (Some(init), Some(model)) => from_init(ctx, init, model)?,
        _ => {
            let (encoder, ps, meta) = load_encoder(e, &ctx.input("encoder")?.dir)?;
            // Text read with the encoder's own tokenizer.
            let ds = super::read_input_for_encoder(ctx, "data", &meta)?;
            (encoder, ps, meta, ds)
        }
    };
    let (labels, classes) = labelled(ctx, &ds, &meta)?;
    let mut init = Init::new(mix_seed(ctx.seed, super::Stream::FinetuneInit, 0, 0, 0));
    let total_before = ps.trainable_count();
    let mut trainable = trainable_mask(&cfg.method, &ps);
    attach(&cfg.method, e, &mut ps, &mut init, &mut meta)?;
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
    let rows = labelled_rows(cfg, ctx.seed, &ds, &labels, classes);
    let clf = Classifier {
        encoder: &encoder,
        head: &head,
        input: meta.input,
        classes,
    };
    let training = Training {
        label: "finetune",
        epochs: cfg.epochs,
        lr: cfg.lr,
        batch_size: cfg.batch_size,
        seed: ctx.seed,
        order: super::Stream::FinetuneOrder,
        trainable: Some(&trainable),
        // The frozen part of the network keeps its batch-norm statistics (eval mode).
        encoder_train_mode: matches!(
            cfg.method,
            FinetuneMethod::Full | FinetuneMethod::Partial { .. }
        ),
        curves: true,
    };
    let started = Instant::now();
    let on_train = Examples {
        ds: &ds,
        rows: &rows,
        labels: &labels,
    };
    supervised::train(e, &clf, &mut ps, &on_train, &training, ctx.progress)?;
    let seconds = started.elapsed().as_secs_f64();
    let test = ds.rows(Split::Test);
    let on_test = Examples {
        rows: &test,
        ..on_train
    };
    let test_acc = supervised::accuracy(e, &clf, &mut ps, &on_test)?;
    let train_acc = supervised::accuracy(e, &clf, &mut ps, &on_train)?;
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
        let folded_acc = supervised::accuracy(e, &clf, &mut folded, &on_test)?;
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

/// The encoder `model` describes for the `data` input, with the weights of the `init` file.
fn from_init(
    ctx: &StageCtx,
    init: &InitConfig,
    model: &ModelConfig,
) -> Result<(Encoder, ParamStore, EncoderMeta, Dataset), StageError> {
    let e = ctx.engine;
    let data = ctx.input("data")?;
    let ds = crate::data::table::read_dataset(&data.dir.join(DATASET_FILE))?;
    let spec = encoder_spec(model, ds.shape, ds.vocab)?;
    let input = InputShape {
        channels: ds.shape.0,
        height: ds.shape.1,
        width: ds.shape.2,
    };
    let mut ps = ParamStore::default();
    // Every value is replaced by the file's: the draws do not matter.
    let encoder = Encoder::new(e, &mut ps, &mut Init::new(0), &spec, input)?;
    let n = ps.entries.len();
    let src = super::init_source(ctx, init)?;
    let read = crate::artifacts::init::apply(e, &mut ps, n, &spec, input, src)?;
    tracing::info!(tensors = read, from = %src, "encoder initialised from a checkpoint");
    let meta = EncoderMeta {
        embed_dim: spec.embed_dim(),
        spec,
        input,
        objective: "none (init)".into(),
        dataset_key: data.key.clone(),
        adapters: None,
    };
    Ok((encoder, ps, meta, ds))
}

/// The labels and class count of the `data` input, which must fit the encoder.
fn labelled(
    ctx: &StageCtx,
    ds: &Dataset,
    meta: &EncoderMeta,
) -> Result<(Vec<u32>, usize), StageError> {
    let labels = ds.labels.clone().ok_or_else(|| {
        StageError::Input(format!(
            "stage input `{}` has no labels; fine-tuning needs labelled data",
            ctx.input("data")
                .map(|d| d.stage.as_str())
                .unwrap_or("data")
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
    Ok((labels, classes))
}

/// Which of the loaded encoder's entries train: a mask over the store (entries added later,
/// LoRA factors, adapters and the head, train).
fn trainable_mask(method: &FinetuneMethod, ps: &ParamStore) -> Vec<bool> {
    match method {
        FinetuneMethod::Full => ps
            .entries
            .iter()
            .map(|en| en.kind != ParamKind::Buffer)
            .collect(),
        FinetuneMethod::Partial { trainable_blocks } => {
            let groups = blocks(ps);
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
    }
}

/// Attach LoRA factors or bottleneck adapters to the weights the method names.
fn attach(
    method: &FinetuneMethod,
    e: &Engine,
    ps: &mut ParamStore,
    init: &mut Init,
    meta: &mut EncoderMeta,
) -> Result<(), StageError> {
    match method {
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
            ps.attach_lora(e, init, &weights, *rank, *alpha as f32);
        }
        FinetuneMethod::Adapter { bottleneck, layers } => {
            let weights = ps.weights_matching(layers);
            if weights.is_empty() {
                return Err(StageError::Input(format!(
                    "adapter.layers {layers:?} matches no weight of the encoder"
                )));
            }
            ps.attach_adapters(e, init, &weights, *bottleneck);
            meta.adapters = Some((*bottleneck, layers.clone()));
        }
        FinetuneMethod::Full | FinetuneMethod::Partial { .. } => {}
    }
    Ok(())
}

/// The train rows fine-tuning sees: all of them, or a class-balanced `label_fraction`.
fn labelled_rows(
    cfg: &FinetuneConfig,
    seed: u64,
    ds: &Dataset,
    labels: &[u32],
    classes: usize,
) -> Vec<usize> {
    let train_rows: Vec<usize> = ds.rows(Split::Train);
    if cfg.label_fraction >= 1.0 {
        return train_rows;
    }
    let y: Vec<u32> = train_rows.iter().map(|&r| labels[r]).collect();
    balanced_rows(
        &y,
        classes,
        cfg.label_fraction,
        mix_seed(seed, super::Stream::FinetuneLabels, 0, 0, 0),
    )
    .into_iter()
    .map(|i| train_rows[i])
    .collect()
}
