//! `ood_eval`: is the representation any good outside its training distribution?
//! (a) OOD detection: in-distribution test samples against an OOD data set, scored by kNN
//! similarity, Mahalanobis distance and a linear probe's max-softmax; AUROC and FPR@95%TPR per
//! score (`ood_scores.json` keeps the raw scores for histograms). (b) Corruption robustness:
//! the probe's accuracy on the in-distribution test set under each corruption and severity
//! (`corruptions.json`), and the mean corruption error.

use std::collections::BTreeMap;

use super::{mix_seed, write_json, Metrics, StageCtx, StageError};
use crate::artifacts::encoder::{embed, load_encoder};
use crate::artifacts::ood::{ScoreRecord, CORRUPTIONS_FILE, SCORES_FILE};
use crate::data::{Dataset, Split};
use crate::eval::corruptions;
use crate::eval::ood::{auroc, fpr_at_95_tpr, knn_scores, Gaussian};
use crate::eval::probes::{accuracy, fit_linear, split_features};
use crate::pipeline::{OodEvalConfig, OodScore};

fn check_shape(ds: &Dataset, input: (usize, usize, usize), stage: &str) -> Result<(), StageError> {
    if ds.shape != input {
        return Err(StageError::Input(format!(
            "`{stage}` has images of shape {:?} but the encoder takes {input:?}",
            ds.shape
        )));
    }
    Ok(())
}

pub fn run(cfg: &OodEvalConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let e = ctx.engine;
    let data = ctx.input("data")?;
    let (encoder, mut ps, meta) = load_encoder(e, &ctx.input("encoder")?.dir)?;
    // Text read with the encoder's own tokenizer.
    let ds = super::read_input_for_encoder(ctx, "data", &meta)?;
    let labels = ds
        .labels
        .clone()
        .ok_or_else(|| StageError::Input(format!("stage input `{}` has no labels", data.stage)))?;
    let input = (meta.input.channels, meta.input.height, meta.input.width);
    check_shape(&ds, input, &data.stage)?;
    let d = meta.embed_dim;
    let all: Vec<usize> = (0..ds.len()).collect();
    let emb = embed(e, &encoder, &mut ps, meta.input, &ds, &all)?;
    let feats = split_features(&ds, &labels, &emb, d)?;
    ctx.progress.start("linear probe", cfg.linear.epochs);
    let probe = fit_linear(e, &feats, &cfg.linear, ctx.seed, ctx.progress)?;
    ctx.progress.finish("");
    let clean_acc = accuracy(&probe.predict(e, &feats.test_x)?, &feats.test_y);
    let mut m = Metrics::new();
    m.insert("clean_accuracy".into(), clean_acc);

    if let Some(ood_in) = ctx.inputs.get("ood") {
        // A text OOD set is encoded with the encoder's own tokenizer.
        let ood = super::read_input_for_encoder(ctx, "ood", &meta)?;
        check_shape(&ood, input, &ood_in.stage)?;
        // The OOD set's test split when it has one, else all of it.
        let mut rows = ood.rows(Split::Test);
        if rows.is_empty() {
            rows = (0..ood.len()).collect();
        }
        let ood_emb = embed(e, &encoder, &mut ps, meta.input, &ood, &rows)?;
        let gaussian = cfg
            .scores
            .contains(&OodScore::Mahalanobis)
            .then(|| Gaussian::fit(&feats.train_x, &feats.train_y, feats.classes, d, 1e-3))
            .flatten();
        let mut records = Vec::new();
        for score in &cfg.scores {
            let (id, od): (Vec<f64>, Vec<f64>) = match score {
                OodScore::Knn => (
                    knn_scores(&feats.train_x, &feats.test_x, d, cfg.k),
                    knn_scores(&feats.train_x, &ood_emb, d, cfg.k),
                ),
                OodScore::Mahalanobis => {
                    let g = gaussian.as_ref().ok_or_else(|| {
                        StageError::Failed("the class covariance is not invertible".into())
                    })?;
                    (
                        feats.test_x.chunks(d).map(|x| g.score(x)).collect(),
                        ood_emb.chunks(d).map(|x| g.score(x)).collect(),
                    )
                }
                OodScore::MaxSoftmax => (
                    probe.max_softmax(e, &feats.test_x)?,
                    probe.max_softmax(e, &ood_emb)?,
                ),
            };
            let (a, f) = (auroc(&id, &od), fpr_at_95_tpr(&id, &od));
            m.insert(format!("ood.{}.auroc", score.as_str()), a);
            m.insert(format!("ood.{}.fpr95", score.as_str()), f);
            records.push(ScoreRecord {
                score: score.as_str().to_string(),
                in_distribution: id,
                ood: od,
                auroc: a,
                fpr95: f,
            });
        }
        if let Some(best) = records
            .iter()
            .map(|r| r.auroc)
            .fold(None, |b: Option<f64>, a| Some(b.map_or(a, |b| b.max(a))))
        {
            m.insert("ood.best_auroc".into(), best);
        }
        write_json(&ctx.out_dir.join(SCORES_FILE), &records)?;
    }

    if !cfg.corruptions.is_empty() && ds.is_text() {
        return Err(StageError::Input(format!(
            "`{}` holds text, and the corruption suite is made of image operations; set `corruptions = []` in this ood_eval stage",
            data.stage
        )));
    }
    if !cfg.corruptions.is_empty() {
        let test = ds.rows(Split::Test);
        let mut grid: BTreeMap<String, BTreeMap<u8, f64>> = BTreeMap::new();
        ctx.progress.start(
            "corruptions",
            (cfg.corruptions.len() * cfg.severities.len()) as u64,
        );
        for name in &cfg.corruptions {
            for &sev in &cfg.severities {
                let mut corrupted = ds.clone();
                for &r in &test {
                    let img = corruptions::apply(
                        name,
                        &ds.image_f32(r),
                        ds.shape,
                        sev,
                        mix_seed(
                            ctx.seed,
                            super::Stream::Corruptions,
                            ds.ids[r],
                            sev as u64,
                            0,
                        ),
                    )
                    .ok_or_else(|| StageError::Input(format!("unknown corruption `{name}`")))?;
                    let n = ds.sample_len();
                    for (dst, v) in corrupted.pixels[r * n..(r + 1) * n].iter_mut().zip(img) {
                        *dst = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                }
                let emb = embed(e, &encoder, &mut ps, meta.input, &corrupted, &test)?;
                let acc = accuracy(&probe.predict(e, &emb)?, &feats.test_y);
                m.insert(format!("corruption.{name}.{sev}.accuracy"), acc);
                grid.entry(name.clone()).or_default().insert(sev, acc);
                ctx.progress.advance(1, name);
            }
            let errs: Vec<f64> = grid[name].values().map(|a| 1.0 - a).collect();
            m.insert(
                format!("corruption.{name}.error"),
                errs.iter().sum::<f64>() / errs.len() as f64,
            );
        }
        ctx.progress.finish("");
        let all_errs: Vec<f64> = grid
            .values()
            .flat_map(|s| s.values().map(|a| 1.0 - a))
            .collect();
        m.insert(
            "corruption.mean_error".into(),
            all_errs.iter().sum::<f64>() / all_errs.len() as f64,
        );
        write_json(&ctx.out_dir.join(CORRUPTIONS_FILE), &grid)?;
    }
    Ok(m)
}
