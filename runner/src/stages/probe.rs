//! `probe`: how good are frozen embeddings? A linear probe (logistic regression on
//! standardised embeddings) and a weighted kNN probe (cosine similarity, votes weighted by
//! exp(sim / T)), trained on the train split and scored on the held-out test split. With
//! `baseline = true` the same probes run on the same architecture at random initialisation,
//! so the gain from pretraining is visible. Writes `embeddings.parquet` of the encoder.

use super::{mix_seed, Metrics, StageCtx, StageError};
use crate::artifacts::embeddings::EMBEDDINGS_FILE;
use crate::artifacts::encoder::{embed, load_encoder_as, EncoderMeta};
use crate::artifacts::encoder::{ENCODER_FILE, ENCODER_META, TEXT_ENCODER_FILE, TEXT_ENCODER_META};
use crate::data::{table, Split};
use crate::engine::nn::{Encoder, Init, Linear, ParamStore};
use crate::engine::Engine;
use crate::eval::probes::{
    fraction_tag, knn_probe, linear_probe, split_features, tagged, Features,
};
use crate::pipeline::{ProbeConfig, SupervisedConfig};
use crate::supervised::{self, Classifier, Examples, Training};

/// Run the probes at every label fraction: all labels under the plain names, smaller
/// fractions as the mean (and `_std`) over `cfg.seeds` class-balanced subsets.
fn probe_fractions(
    e: &Engine,
    cfg: &ProbeConfig,
    ctx: &StageCtx,
    f: &Features,
    prefix: &str,
    m: &mut Metrics,
) -> Result<(), StageError> {
    for &frac in &cfg.label_fractions {
        if frac >= 1.0 {
            probe_all(e, cfg, ctx, f, prefix, m)?;
            continue;
        }
        let tag = fraction_tag(frac);
        let mut runs: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        for s in 0..cfg.seeds {
            let sub = f.with_train(&f.balanced_subset(
                frac,
                mix_seed(ctx.seed, super::Stream::LabelSubset, s, frac.to_bits(), 0),
            ));
            let mut one = Metrics::new();
            probe_all(e, cfg, ctx, &sub, "", &mut one)?;
            for (k, v) in one {
                runs.entry(k).or_default().push(v);
            }
        }
        insert_mean_std(m, prefix, &tag, runs);
    }
    Ok(())
}

fn insert_mean_std(
    m: &mut Metrics,
    prefix: &str,
    tag: &str,
    runs: std::collections::BTreeMap<String, Vec<f64>>,
) {
    for (k, vs) in runs {
        let n = vs.len() as f64;
        let mean = vs.iter().sum::<f64>() / n;
        let std = if vs.len() > 1 {
            (vs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let name = tagged(&k, tag);
        m.insert(format!("{prefix}{name}"), mean);
        m.insert(format!("{prefix}{name}_std"), std);
    }
}

/// Test accuracy of the encoder's architecture trained from scratch with a linear head on
/// dataset `rows` (the supervised baseline the label-efficiency curve is compared with).
fn supervised_from_scratch(
    e: &Engine,
    sc: &SupervisedConfig,
    meta: &EncoderMeta,
    data: &Examples,
    classes: usize,
    seed: u64,
    progress: &dyn super::Progress,
) -> Result<f64, StageError> {
    let mut ps = ParamStore::default();
    let mut init = Init::new(mix_seed(seed, super::Stream::SupervisedInit, 0, 0, 0));
    let encoder = Encoder::new(e, &mut ps, &mut init, &meta.spec, meta.input)?;
    let head = Linear::new(
        e,
        &mut ps,
        &mut init,
        "supervised_head",
        meta.embed_dim,
        classes,
    );
    let clf = Classifier {
        encoder: &encoder,
        head: &head,
        input: meta.input,
        classes,
    };
    let training = Training {
        label: "supervised baseline",
        epochs: sc.epochs,
        lr: sc.lr,
        batch_size: 128,
        seed,
        order: super::Stream::SupervisedOrder,
        trainable: None,
        encoder_train_mode: true,
        curves: false,
    };
    supervised::train(e, &clf, &mut ps, data, &training, progress)?;
    let test = data.ds.rows(Split::Test);
    let on_test = Examples {
        rows: &test,
        ..*data
    };
    supervised::accuracy(e, &clf, &mut ps, &on_test)
}

pub fn run(cfg: &ProbeConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let e = ctx.engine;
    let files = match cfg.text_tower {
        false => (ENCODER_FILE, ENCODER_META),
        true => (TEXT_ENCODER_FILE, TEXT_ENCODER_META),
    };
    let (encoder, mut ps, meta) = load_encoder_as(e, &ctx.input("encoder")?.dir, files)?;
    // Text read with the encoder's own tokenizer.
    let ds = super::read_input_for_encoder(ctx, "data", &meta)?;
    let data_stage = ctx.input("data")?.stage.clone();
    let labels = ds.labels.clone().ok_or_else(|| {
        StageError::Input(format!(
            "stage input `{data_stage}` has no labels; probes need labelled data"
        ))
    })?;
    if (ds.shape.0, ds.shape.1, ds.shape.2)
        != (meta.input.channels, meta.input.height, meta.input.width)
    {
        return Err(StageError::Input(format!(
            "the encoder takes images of shape {:?} but `data` has {:?}",
            (meta.input.channels, meta.input.height, meta.input.width),
            ds.shape
        )));
    }
    let mut metrics = Metrics::new();
    let all: Vec<usize> = (0..ds.len()).collect();
    ctx.progress.start("embedding", 1);
    let emb = embed(e, &encoder, &mut ps, meta.input, &ds, &all)?;
    ctx.progress.finish("embedded");
    table::write_embeddings(
        &ctx.out_dir.join(EMBEDDINGS_FILE),
        &ds.ids,
        &ds.splits,
        Some(&labels),
        &emb,
        meta.embed_dim,
    )?;
    let feats = split_features(&ds, &labels, &emb, meta.embed_dim)?;
    probe_fractions(e, cfg, ctx, &feats, "", &mut metrics)?;
    if cfg.baseline {
        let mut rps = ParamStore::default();
        let random = Encoder::new(
            e,
            &mut rps,
            &mut Init::new(mix_seed(ctx.seed, super::Stream::ModelInit, 0, 0, 0)),
            &meta.spec,
            meta.input,
        )?;
        let remb = embed(e, &random, &mut rps, meta.input, &ds, &all)?;
        let rf = split_features(&ds, &labels, &remb, meta.embed_dim)?;
        probe_fractions(e, cfg, ctx, &rf, "baseline.", &mut metrics)?;
    }
    if let Some(sc) = &cfg.supervised {
        for &frac in &cfg.label_fractions {
            let seeds = if frac >= 1.0 { 1 } else { cfg.seeds };
            let mut accs = Vec::new();
            for s in 0..seeds {
                let positions = if frac >= 1.0 {
                    (0..feats.train_y.len()).collect()
                } else {
                    feats.balanced_subset(
                        frac,
                        mix_seed(ctx.seed, super::Stream::LabelSubset, s, frac.to_bits(), 0),
                    )
                };
                let rows: Vec<usize> = positions.iter().map(|&i| feats.train_rows[i]).collect();
                let data = Examples {
                    ds: &ds,
                    rows: &rows,
                    labels: &labels,
                };
                accs.push(supervised_from_scratch(
                    e,
                    sc,
                    &meta,
                    &data,
                    feats.classes,
                    mix_seed(ctx.seed, super::Stream::SupervisedRun, s, 0, 0),
                    ctx.progress,
                )?);
            }
            if frac >= 1.0 {
                metrics.insert("supervised.accuracy".into(), accs[0]);
            } else {
                insert_mean_std(
                    &mut metrics,
                    "",
                    &fraction_tag(frac),
                    [("supervised.accuracy".to_string(), accs)]
                        .into_iter()
                        .collect(),
                );
            }
        }
    }
    Ok(metrics)
}

fn probe_all(
    e: &Engine,
    cfg: &ProbeConfig,
    ctx: &StageCtx,
    f: &Features,
    prefix: &str,
    m: &mut Metrics,
) -> Result<(), StageError> {
    if let Some(lc) = &cfg.linear {
        ctx.progress
            .start(&format!("{prefix}linear probe"), lc.epochs);
        let (train_acc, test_acc) = linear_probe(e, f, lc, ctx.seed, ctx.progress)?;
        ctx.progress.finish(&format!("accuracy {test_acc:.4}"));
        m.insert(format!("{prefix}linear.accuracy"), test_acc);
        m.insert(format!("{prefix}linear.train_accuracy"), train_acc);
    }
    if let Some(kc) = &cfg.knn {
        ctx.progress.start(&format!("{prefix}knn probe"), 1);
        let acc = knn_probe(e, f, kc)?;
        ctx.progress.finish(&format!("accuracy {acc:.4}"));
        m.insert(format!("{prefix}knn.accuracy"), acc);
    }
    Ok(())
}
