//! Probes of frozen embeddings: the train/test features of a dataset, a linear probe
//! (logistic regression on standardised features) and a weighted kNN probe; used by the
//! probe, finetune and ood_eval stages.

use super::unit_rows;
use crate::data::{Dataset, Split};
use crate::engine::nn::{Init, Linear, ParamStore};
use crate::engine::optim::{OptimSpec, Optimizer, Schedule};
use crate::engine::Engine;
use crate::error::StageError;
use crate::pipeline::{KnnConfig, LinearProbeConfig};
use crate::progress::Progress;
use crate::seeds::{mix_seed, permutation, Stream};
/// Embeddings and labels of the two splits.
pub struct Features {
    pub dim: usize,
    pub train_x: Vec<f32>,
    pub train_y: Vec<u32>,
    pub test_x: Vec<f32>,
    pub test_y: Vec<u32>,
    pub classes: usize,
    /// Dataset rows of the train features, in order.
    pub train_rows: Vec<usize>,
}

impl Features {
    /// Positions (into the train features) of a class-balanced `fraction` of the labels: each
    /// class keeps `round(fraction · count)` samples (at least one), chosen by `seed`.
    pub fn balanced_subset(&self, fraction: f64, seed: u64) -> Vec<usize> {
        balanced_rows(&self.train_y, self.classes, fraction, seed)
    }

    /// The same features with only the train samples at `positions`.
    pub fn with_train(&self, positions: &[usize]) -> Features {
        let d = self.dim;
        Features {
            dim: d,
            train_x: positions
                .iter()
                .flat_map(|&i| self.train_x[i * d..(i + 1) * d].iter().copied())
                .collect(),
            train_y: positions.iter().map(|&i| self.train_y[i]).collect(),
            test_x: self.test_x.clone(),
            test_y: self.test_y.clone(),
            classes: self.classes,
            train_rows: positions.iter().map(|&i| self.train_rows[i]).collect(),
        }
    }
}

/// Positions of a class-balanced `fraction` of `labels`: each class keeps
/// `round(fraction · count)` of its samples (at least one), chosen by `seed`; ascending.
pub fn balanced_rows(labels: &[u32], classes: usize, fraction: f64, seed: u64) -> Vec<usize> {
    let mut picked = Vec::new();
    for c in 0..classes as u32 {
        let of_class: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        if of_class.is_empty() {
            continue;
        }
        let take = ((of_class.len() as f64 * fraction).round() as usize).clamp(1, of_class.len());
        let perm = permutation(
            of_class.len(),
            mix_seed(seed, Stream::ClassSubset, c as u64, 0, 0),
        );
        picked.extend(perm[..take].iter().map(|&k| of_class[k]));
    }
    picked.sort_unstable();
    picked
}

/// `@10%`-style tag of a label fraction.
pub fn fraction_tag(f: f64) -> String {
    let pct = f * 100.0;
    if (pct - pct.round()).abs() < 1e-9 {
        format!("@{}%", pct.round() as i64)
    } else {
        format!("@{pct}%")
    }
}
/// `linear.accuracy` → `linear@10%.accuracy`.
pub fn tagged(metric: &str, tag: &str) -> String {
    match metric.split_once('.') {
        Some((method, rest)) => format!("{method}{tag}.{rest}"),
        None => format!("{metric}{tag}"),
    }
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
        train_rows: Vec::new(),
    };
    for i in 0..ds.len() {
        let row = &emb[i * dim..(i + 1) * dim];
        match ds.splits[i] {
            Split::Train => {
                f.train_x.extend_from_slice(row);
                f.train_y.push(labels[i]);
                f.train_rows.push(i);
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

pub(crate) fn accuracy(pred: &[u32], truth: &[u32]) -> f64 {
    pred.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / truth.len().max(1) as f64
}

/// A fitted linear probe: standardisation statistics of the train features plus a logistic
/// regression layer.
pub struct LinearModel {
    mean: Vec<f64>,
    std: Vec<f64>,
    lin: Linear,
    ps: ParamStore,
    classes: usize,
}

impl LinearModel {
    fn standardise(&self, x: &[f32]) -> Vec<f32> {
        let d = self.mean.len();
        x.chunks(d)
            .flat_map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(j, v)| ((*v as f64 - self.mean[j]) / self.std[j]) as f32)
            })
            .collect()
    }

    /// Logits `(n, classes)` of raw (unstandardised) features, row-major.
    pub fn logits(&self, e: &Engine, x: &[f32]) -> Result<Vec<f32>, StageError> {
        let d = self.mean.len();
        let t = e.tensor(self.standardise(x), x.len() / d, d)?;
        let mut g = e.graph(false);
        Ok(self.lin.forward(&self.ps, &mut g, &t)?.to_vec())
    }

    pub fn predict(&self, e: &Engine, x: &[f32]) -> Result<Vec<u32>, StageError> {
        Ok(self
            .logits(e, x)?
            .chunks(self.classes)
            .map(argmax)
            .collect())
    }

    /// The largest softmax probability per row (the max-softmax OOD score).
    pub fn max_softmax(&self, e: &Engine, x: &[f32]) -> Result<Vec<f64>, StageError> {
        Ok(self
            .logits(e, x)?
            .chunks(self.classes)
            .map(|l| {
                let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let z: f64 = l.iter().map(|v| ((v - m) as f64).exp()).sum();
                1.0 / z
            })
            .collect())
    }
}

/// Fit logistic regression on standardised train features with AdamW (cosine LR),
/// mini-batches of 256.
pub fn fit_linear(
    e: &Engine,
    f: &Features,
    cfg: &LinearProbeConfig,
    seed: u64,
    progress: &dyn Progress,
) -> Result<LinearModel, StageError> {
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
    let mut ps = ParamStore::default();
    let lin = Linear::new(
        e,
        &mut ps,
        &mut Init::new(mix_seed(seed, Stream::ProbeInit, 0, 0, 0)),
        "probe",
        d,
        f.classes,
    );
    let mut model = LinearModel {
        mean,
        std,
        lin,
        ps,
        classes: f.classes,
    };
    let xtr = model.standardise(&f.train_x);
    let mut opt = Optimizer::new(
        OptimSpec::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: cfg.weight_decay as f32,
        },
        &model.ps,
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
        let order = permutation(n, mix_seed(seed, Stream::ProbeOrder, epoch, 0, 0));
        for chunk in order.chunks(bs) {
            // Row copies (memcpy), not an element iterator: this gather is the probe's only
            // serial work per step.
            let mut xb: Vec<f32> = Vec::with_capacity(chunk.len() * d);
            for &i in chunk {
                xb.extend_from_slice(&xtr[i * d..(i + 1) * d]);
            }
            let yb: Vec<u32> = chunk.iter().map(|&i| f.train_y[i]).collect();
            // Features are data: no gradient is asked of them.
            let x = e.tensor(xb, chunk.len(), d)?.as_input();
            let mut g = e.graph(true);
            let logits = model.lin.forward(&model.ps, &mut g, &x)?;
            let loss = g.cross_entropy(&logits, &yb)?;
            let mut grads = g.backward(&loss)?;
            opt.step(&mut model.ps, &mut grads, sched.lr(step) as f32);
            step += 1;
        }
        progress.advance(1, "");
    }
    Ok(model)
}

/// Linear probe: fit on the train features, return (train accuracy, test accuracy).
pub fn linear_probe(
    e: &Engine,
    f: &Features,
    cfg: &LinearProbeConfig,
    seed: u64,
    progress: &dyn Progress,
) -> Result<(f64, f64), StageError> {
    let model = fit_linear(e, f, cfg, seed, progress)?;
    Ok((
        accuracy(&model.predict(e, &f.train_x)?, &f.train_y),
        accuracy(&model.predict(e, &f.test_x)?, &f.test_y),
    ))
}

pub fn argmax(v: &[f32]) -> u32 {
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
    let train = e.tensor(unit_rows(&f.train_x, d), ntr, d)?;
    let mut g = e.graph(false);
    let train_t = g.transpose(&train)?;
    let test = unit_rows(&f.test_x, d);
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

    use crate::progress::Silent as Quiet;

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
            train_rows: (0..400).collect(),
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
            train_rows: (0..400).collect(),
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

    #[test]
    fn balanced_subsets_and_tags() {
        // 3 classes with 10, 20 and 30 samples.
        let train_y: Vec<u32> = (0..60)
            .map(|i| {
                if i < 10 {
                    0
                } else if i < 30 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let f = Features {
            dim: 1,
            train_x: (0..60).map(|i| i as f32).collect(),
            train_y,
            test_x: vec![0.0],
            test_y: vec![0],
            classes: 3,
            train_rows: (100..160).collect(),
        };
        let sub = f.balanced_subset(0.1, 1);
        let count = |c: u32| sub.iter().filter(|&&i| f.train_y[i] == c).count();
        assert_eq!((count(0), count(1), count(2)), (1, 2, 3));
        assert_eq!(sub, f.balanced_subset(0.1, 1), "seeded");
        assert_ne!(
            sub,
            f.balanced_subset(0.1, 2),
            "another seed, another subset"
        );
        // A tiny fraction still keeps one sample per class.
        assert_eq!(f.balanced_subset(0.001, 1).len(), 3);
        let w = f.with_train(&sub);
        assert_eq!(
            w.train_rows,
            sub.iter().map(|&i| 100 + i).collect::<Vec<_>>()
        );
        assert_eq!(w.train_x, sub.iter().map(|&i| i as f32).collect::<Vec<_>>());
        assert_eq!(
            (fraction_tag(0.01), fraction_tag(0.1), fraction_tag(0.005)),
            ("@1%".into(), "@10%".into(), "@0.5%".into())
        );
        assert_eq!(tagged("linear.accuracy", "@1%"), "linear@1%.accuracy");
    }
}
