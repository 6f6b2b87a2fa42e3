//! `probe`: how good are frozen embeddings? A linear probe (logistic regression on
//! standardised embeddings) and a weighted kNN probe (cosine similarity, votes weighted by
//! exp(sim / T)), trained on the train split and scored on the held-out test split. With
//! `baseline = true` the same probes run on the same architecture at random initialisation,
//! so the gain from pretraining is visible. Writes `embeddings.parquet` of the encoder.

use super::pretrain::{embed, load_encoder};
use super::{ingest::DATASET_FILE, mix_seed, permutation, Metrics, StageCtx, StageError};
use crate::data::{table, Dataset, Split};
use crate::engine::nn::{Encoder, Init, Linear, ParamStore};
use crate::engine::optim::{OptimSpec, Optimizer, Schedule};
use crate::engine::Engine;
use crate::pipeline::{KnnConfig, LinearProbeConfig, ProbeConfig};

pub const EMBEDDINGS_FILE: &str = "embeddings.parquet";

/// Embeddings and labels of the two splits.
pub struct Features {
    pub dim: usize,
    pub train_x: Vec<f32>,
    pub train_y: Vec<u32>,
    pub test_x: Vec<f32>,
    pub test_y: Vec<u32>,
    pub classes: usize,
}

pub fn run(cfg: &ProbeConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let e = ctx.engine;
    let ds = table::read_dataset(&ctx.input("data")?.dir.join(DATASET_FILE))?;
    let data_stage = ctx.input("data")?.stage.clone();
    let labels = ds.labels.clone().ok_or_else(|| {
        StageError::Input(format!(
            "stage input `{data_stage}` has no labels; probes need labelled data"
        ))
    })?;
    let (encoder, mut ps, meta) = load_encoder(e, &ctx.input("encoder")?.dir)?;
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
    probe_all(e, cfg, ctx, &feats, "", &mut metrics)?;
    if cfg.baseline {
        let mut rps = ParamStore::default();
        let random = Encoder::new(
            e,
            &mut rps,
            &mut Init::new(mix_seed(ctx.seed, 4, 0, 0, 0)),
            &meta.spec,
            meta.input,
        )?;
        let remb = embed(e, &random, &mut rps, meta.input, &ds, &all)?;
        let rf = split_features(&ds, &labels, &remb, meta.embed_dim)?;
        probe_all(e, cfg, ctx, &rf, "baseline.", &mut metrics)?;
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

/// Split row-major embeddings into train/test features.
pub fn split_features(
    ds: &Dataset,
    labels: &[u32],
    emb: &[f32],
    dim: usize,
) -> Result<Features, StageError> {
    let mut f = Features {
        dim,
        train_x: Vec::new(),
        train_y: Vec::new(),
        test_x: Vec::new(),
        test_y: Vec::new(),
        classes: ds.classes().unwrap_or(0),
    };
    for i in 0..ds.len() {
        let row = &emb[i * dim..(i + 1) * dim];
        match ds.splits[i] {
            Split::Train => {
                f.train_x.extend_from_slice(row);
                f.train_y.push(labels[i]);
            }
            Split::Test => {
                f.test_x.extend_from_slice(row);
                f.test_y.push(labels[i]);
            }
        }
    }
    if f.train_y.is_empty() || f.test_y.is_empty() {
        return Err(StageError::Input(
            "probes need samples in both the train and the test split".into(),
        ));
    }
    if f.classes < 2 {
        return Err(StageError::Input("probes need at least 2 classes".into()));
    }
    Ok(f)
}

fn accuracy(pred: &[u32], truth: &[u32]) -> f64 {
    pred.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / truth.len().max(1) as f64
}

/// Standardise with train statistics, then fit logistic regression with AdamW (cosine LR),
/// mini-batches of 256. Returns (train accuracy, test accuracy).
pub fn linear_probe(
    e: &Engine,
    f: &Features,
    cfg: &LinearProbeConfig,
    seed: u64,
    progress: &dyn super::Progress,
) -> Result<(f64, f64), StageError> {
    let d = f.dim;
    let n = f.train_y.len();
    let mut mean = vec![0f64; d];
    let mut var = vec![0f64; d];
    for row in f.train_x.chunks(d) {
        for j in 0..d {
            mean[j] += row[j] as f64 / n as f64;
        }
    }
    for row in f.train_x.chunks(d) {
        for j in 0..d {
            var[j] += (row[j] as f64 - mean[j]).powi(2) / n as f64;
        }
    }
    let std: Vec<f64> = var.iter().map(|v| v.sqrt().max(1e-6)).collect();
    let standardise = |x: &[f32]| -> Vec<f32> {
        x.chunks(d)
            .flat_map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(j, v)| ((*v as f64 - mean[j]) / std[j]) as f32)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let xtr = standardise(&f.train_x);
    let xte = standardise(&f.test_x);
    let mut ps = ParamStore::default();
    let lin = Linear::new(
        e,
        &mut ps,
        &mut Init::new(mix_seed(seed, 7, 0, 0, 0)),
        "probe",
        d,
        f.classes,
    );
    let mut opt = Optimizer::new(
        OptimSpec::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: cfg.weight_decay as f32,
        },
        &ps,
    );
    let bs = 256.min(n);
    let per_epoch = n.div_ceil(bs);
    let sched = Schedule {
        base_lr: cfg.lr,
        warmup_steps: 0,
        total_steps: cfg.epochs * per_epoch as u64,
        cosine: true,
    };
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        let order = permutation(n, mix_seed(seed, 8, epoch, 0, 0));
        for chunk in order.chunks(bs) {
            let xb: Vec<f32> = chunk
                .iter()
                .flat_map(|&i| xtr[i * d..(i + 1) * d].iter().copied())
                .collect();
            let yb: Vec<u32> = chunk.iter().map(|&i| f.train_y[i]).collect();
            let x = e.tensor(xb, chunk.len(), d)?;
            let mut g = e.graph(true);
            let logits = lin.forward(&ps, &mut g, &x)?;
            let loss = g.cross_entropy(&logits, &yb)?;
            let mut grads = g.backward(&loss)?;
            opt.step(&mut ps, &mut grads, sched.lr(step) as f32);
            step += 1;
        }
        progress.advance(1, "");
    }
    let predict = |x: &[f32]| -> Result<Vec<u32>, StageError> {
        let rows = x.len() / d;
        let t = e.tensor(x.to_vec(), rows, d)?;
        let mut g = e.graph(false);
        let logits = lin.forward(&ps, &mut g, &t)?.to_vec();
        Ok(logits.chunks(f.classes).map(argmax).collect())
    };
    Ok((
        accuracy(&predict(&xtr)?, &f.train_y),
        accuracy(&predict(&xte)?, &f.test_y),
    ))
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Weighted kNN on cosine similarity: each of the k nearest train samples votes for its
/// label with weight exp(sim / T). Ties in similarity are broken by lower train index.
pub fn knn_probe(e: &Engine, f: &Features, cfg: &KnnConfig) -> Result<f64, StageError> {
    let d = f.dim;
    let ntr = f.train_y.len();
    let k = cfg.k.min(ntr).max(1);
    let norm = |x: &[f32]| -> Vec<f32> {
        x.chunks(d)
            .flat_map(|r| {
                let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                r.iter().map(move |v| v / n)
            })
            .collect()
    };
    let train = e.tensor(norm(&f.train_x), ntr, d)?;
    let mut g = e.graph(false);
    let train_t = g.transpose(&train)?;
    let test = norm(&f.test_x);
    let mut pred = Vec::with_capacity(f.test_y.len());
    for chunk in test.chunks(256 * d) {
        let rows = chunk.len() / d;
        let q = e.tensor(chunk.to_vec(), rows, d)?;
        let sims = g.matmul(&q, &train_t)?.to_vec();
        for row in sims.chunks(ntr) {
            let mut idx: Vec<usize> = (0..ntr).collect();
            idx.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let mut votes = vec![0f64; f.classes];
            for &i in &idx[..k] {
                votes[f.train_y[i] as usize] += ((row[i] as f64) / cfg.temperature).exp();
            }
            let best = votes
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > votes[b] { i } else { b });
            pred.push(best as u32);
        }
    }
    Ok(accuracy(&pred, &f.test_y))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl super::super::Progress for Quiet {
        fn start(&self, _: &str, _: u64) {}
        fn advance(&self, _: u64, _: &str) {}
        fn finish(&self, _: &str) {}
    }

    /// Two Gaussian blobs are linearly separable: both probes must be near perfect, and a
    /// feature carrying no class information must give chance-level kNN accuracy.
    #[test]
    fn probes_separate_blobs_and_not_noise() {
        let e = Engine::cpu();
        let mut rng = pretext_plugin::Rng::new(3);
        let mut make = |n: usize, informative: bool| -> (Vec<f32>, Vec<u32>) {
            let mut x = Vec::new();
            let mut y = Vec::new();
            for i in 0..n {
                let c = (i % 2) as u32;
                // Centres at ±4 on the first axis: the kNN probe is cosine-based, so classes must differ in direction.
                let shift = if informative {
                    8.0 * c as f64 - 4.0
                } else {
                    0.0
                };
                x.push((rng.normal() + shift) as f32);
                x.push(rng.normal() as f32);
                y.push(c);
            }
            (x, y)
        };
        let (trx, try_) = make(400, true);
        let (tex, tey) = make(200, true);
        let f = Features {
            dim: 2,
            train_x: trx,
            train_y: try_,
            test_x: tex,
            test_y: tey,
            classes: 2,
        };
        let (_, lin) = linear_probe(
            &e,
            &f,
            &LinearProbeConfig {
                epochs: 30,
                lr: 0.05,
                weight_decay: 0.0,
            },
            1,
            &Quiet,
        )
        .unwrap();
        let knn = knn_probe(
            &e,
            &f,
            &KnnConfig {
                k: 20,
                temperature: 0.07,
            },
        )
        .unwrap();
        assert!(lin > 0.95 && knn > 0.95, "linear {lin} knn {knn}");
        let (trx, try_) = make(400, false);
        let (tex, tey) = make(400, false);
        let noise = Features {
            dim: 2,
            train_x: trx,
            train_y: try_,
            test_x: tex,
            test_y: tey,
            classes: 2,
        };
        let knn = knn_probe(
            &e,
            &noise,
            &KnnConfig {
                k: 20,
                temperature: 0.07,
            },
        )
        .unwrap();
        assert!((knn - 0.5).abs() < 0.1, "noise knn {knn}");
    }
}
