//! Image–text pairs (CLIP): each image's caption is the row of the stage's `text` dataset with
//! the same sample id (or, with `pair_by = "path"`, the same path without its extension); the
//! captions are held in memory (token ids are small). A text transformer (the text tower) is trained beside the image
//! encoder, saved as `text_encoder.safetensors` + `text_encoder.json`, and the pair of towers
//! is evaluated on the test split: zero-shot classification from class-name prompts and
//! retrieval (recall@1 and @5, image → text and text → image).

use std::collections::HashMap;
use std::path::Path;

use super::model::Model;
use super::{Metrics, StageCtx, StageError};
use crate::artifacts::dataset::DATASET_FILE;
use crate::artifacts::encoder::{embed, EncoderMeta, TEXT_ENCODER_FILE, TEXT_ENCODER_META};
use crate::artifacts::tokenizer::{self, encode_passage};
use crate::data::{table, Dataset, Split};
use crate::engine::nn::{Encoder, EncoderSpec, Init, InputShape, ParamStore};
use crate::engine::Engine;
use crate::pipeline::TextTower;

/// The captions of a pretrain stage: the `text` input's token dataset, and for each image's
/// sample id the row of its caption.
pub(super) struct Captions {
    ds: Dataset,
    by_id: HashMap<u64, usize>,
    /// The text dataset's class names (zero-shot prompts), when its rows are labelled.
    classes: Option<Vec<String>>,
    /// The image dataset's class names, when it has them (zero-shot prefers them).
    image_classes: Option<Vec<String>>,
    tokenizer: Option<crate::data::tokenizer::TextTokenizer>,
    /// The stage that holds them, for messages.
    stage: String,
}

impl Captions {
    /// Read the captions of `tower` and pair them with the images of the dataset at
    /// `images_file` (whose rows in memory have the sample ids `images`): every image needs
    /// one.
    pub(super) fn load(
        ctx: &StageCtx,
        tower: &TextTower,
        images_file: &Path,
        images: &[u64],
    ) -> Result<Captions, StageError> {
        let dir = &ctx.input("text")?.dir;
        let reader = table::DatasetReader::open(&dir.join(DATASET_FILE))?;
        let classes = reader.info().classes.clone();
        crate::data::memory::check_fits(&reader)?;
        let ds = table::load_dataset(reader)?;
        if ds.vocab.is_none() {
            return Err(StageError::Input(format!(
                "`text.input` names stage `{}`, whose dataset holds images, not token sequences: the captions must be ingested with format = \"text\" (e.g. a parquet column with samples = \"documents\")",
                tower.input
            )));
        }
        // Each caption's row by its own sample id: the pairing itself by id, the captions'
        // rows by path.
        let row_of: HashMap<u64, usize> =
            ds.ids.iter().enumerate().map(|(r, &id)| (id, r)).collect();
        let by_id = match tower.by_path {
            false => row_of,
            true => {
                let captions = table::ids_and_paths(&dir.join(DATASET_FILE))?;
                let images = table::ids_and_paths(images_file)?;
                pair_by_path(tower, &row_of, images, captions)?
            }
        };
        let missing: Vec<u64> = images
            .iter()
            .copied()
            .filter(|id| !by_id.contains_key(id))
            .collect();
        if let Some(first) = missing.first() {
            let how = match tower.by_path {
                true => "by their paths without the extension (pair_by = \"path\"): give every image a caption file",
                false => "by sample id (the record index in each source): ingest both from the same rows, in the same order, or pair them by file name with text.pair_by = \"path\"",
            };
            return Err(StageError::Input(format!(
                "{} of the {} images have no caption in stage `{}` (the first: sample id {first}); images and captions are paired {how}",
                missing.len(),
                images.len(),
                tower.input
            )));
        }
        let image_classes = table::DatasetReader::open(images_file)?
            .info()
            .classes
            .clone();
        Ok(Captions {
            ds,
            by_id,
            classes,
            image_classes,
            tokenizer: tokenizer::load(dir)?,
            stage: tower.input.clone(),
        })
    }

    /// Tokens per caption and the vocabulary.
    pub(super) fn shape(&self) -> (usize, usize) {
        (self.ds.sample_len(), self.ds.vocab.unwrap_or(0))
    }

    /// The captions of samples `ids`, row-major token ids as floats (what the text
    /// transformer reads).
    pub(super) fn batch(&self, ids: &[u64]) -> Result<Vec<f32>, StageError> {
        let rows = ids
            .iter()
            .map(|id| {
                self.by_id.get(id).copied().ok_or_else(|| {
                    StageError::Input(format!(
                        "sample id {id} has no caption in stage `{}`",
                        self.stage
                    ))
                })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        Ok(self.ds.batch_f32(&rows))
    }
}

/// `pair_by = "path"`: image id → caption row, where the caption's path without its
/// extension is the image's (`cat/001.png` ↔ `cat/001.txt`). Two captions for one image, or
/// either side without paths, is an error.
fn pair_by_path(
    tower: &TextTower,
    row_of: &HashMap<u64, usize>,
    images: Option<Vec<(u64, String)>>,
    captions: Option<Vec<(u64, String)>>,
) -> Result<HashMap<u64, usize>, StageError> {
    let stem = |p: &str| -> String {
        Path::new(p)
            .with_extension("")
            .to_string_lossy()
            .into_owned()
    };
    let Some(images) = images else {
        return Err(StageError::Input(
            "text.pair_by = \"path\" pairs images with captions by file name, but the images record no paths: ingest them with format = \"image_folder\" (or pair by sample id)".into(),
        ));
    };
    let Some(captions) = captions else {
        return Err(StageError::Input(format!(
            "text.pair_by = \"path\" pairs images with captions by file name, but the captions of stage `{}` record no file names: read them from a folder of .txt files with samples = \"documents\", or from a parquet file with `path_column`",
            tower.input
        )));
    };
    let mut by_stem: HashMap<String, (usize, &str)> = HashMap::new();
    for (id, path) in &captions {
        let Some(&row) = row_of.get(id) else { continue };
        if let Some((_, other)) = by_stem.insert(stem(path), (row, path)) {
            return Err(StageError::Input(format!(
                "stage `{}` has two captions for one image: `{other}` and `{path}` (pair_by = \"path\" matches paths without their extension); keep one",
                tower.input
            )));
        }
    }
    Ok(images
        .iter()
        .filter_map(|(id, path)| by_stem.get(&stem(path)).map(|&(row, _)| (*id, row)))
        .collect())
}

/// The text tower's encoder spec: the `text` table's sizes over the captions' tokens, its
/// head to the image encoder's `embed_dim` (the shared space).
pub(super) fn tower_spec(t: &TextTower, caps: &Captions, embed_dim: usize) -> EncoderSpec {
    let (seq_len, vocab) = caps.shape();
    EncoderSpec::Text {
        vocab,
        seq_len,
        dim: t.dim,
        depth: t.depth,
        heads: t.heads,
        cls_pool: false,
        dropout: t.dropout as f32,
        embed_dim,
    }
}

/// The text tower inside the training store: its encoder and where its entries are.
pub(super) struct Tower {
    pub(super) encoder: Encoder,
    pub(super) spec: EncoderSpec,
    /// The tower's entries are `ps.entries[start..end]`, named `text.<name>`.
    pub(super) start: usize,
    pub(super) end: usize,
}

/// Prefix of the text tower's names in the training store (and its checkpoints), so they
/// never meet the image encoder's.
const PREFIX: &str = "text.";

impl Tower {
    /// Build the tower at the end of `ps` (after the image encoder, heads and objective
    /// tensors: the saved image encoder stays a prefix of the store).
    pub(super) fn new(
        e: &Engine,
        ps: &mut ParamStore,
        spec: EncoderSpec,
        seed: u64,
    ) -> Result<Tower, StageError> {
        let start = ps.entries.len();
        let encoder = Encoder::new(e, ps, &mut Init::new(seed), &spec, text_input(&spec))?;
        for en in &mut ps.entries[start..] {
            en.name = format!("{PREFIX}{}", en.name);
        }
        Ok(Tower {
            encoder,
            spec,
            start,
            end: ps.entries.len(),
        })
    }

    /// What the tower reads: one row of `seq_len` tokens per caption.
    pub(super) fn input(&self) -> InputShape {
        text_input(&self.spec)
    }

    /// Its trainable parameters in the training store `ps`.
    pub(super) fn parameters(&self, ps: &ParamStore) -> usize {
        (ps.entries[self.start..self.end].iter())
            .filter(|en| en.kind != crate::engine::nn::ParamKind::Buffer)
            .map(|en| en.value.len())
            .sum()
    }

    /// The tower's entries under their own names: what a freshly built text encoder holds.
    fn store(&self, ps: &ParamStore) -> ParamStore {
        let mut entries = ps.entries[self.start..self.end].to_vec();
        for en in &mut entries {
            en.name = en.name.trim_start_matches(PREFIX).to_string();
        }
        ParamStore {
            entries,
            ..ParamStore::default()
        }
    }

    /// Write `text_encoder.safetensors` + `text_encoder.json` (the same format as the image
    /// encoder's, so a probe can load it).
    pub(super) fn save(
        &self,
        dir: &Path,
        ps: &ParamStore,
        objective: &str,
        dataset_key: &str,
    ) -> Result<(), StageError> {
        let meta = EncoderMeta {
            spec: self.spec.clone(),
            input: self.input(),
            embed_dim: self.spec.embed_dim(),
            objective: objective.to_string(),
            dataset_key: dataset_key.to_string(),
            adapters: None,
        };
        crate::artifacts::encoder::save_encoder_as(
            dir,
            &self.store(ps),
            &meta,
            (TEXT_ENCODER_FILE, TEXT_ENCODER_META),
        )
    }
}

/// A text encoder's input shape: one row of `seq_len` tokens.
fn text_input(spec: &EncoderSpec) -> InputShape {
    let len = match spec {
        EncoderSpec::Text { seq_len, .. } => *seq_len,
        _ => 0,
    };
    InputShape {
        channels: 1,
        height: 1,
        width: len,
    }
}

/// Row-normalised `(n, d)` embeddings.
fn normalised(mut v: Vec<f32>, d: usize) -> Vec<f32> {
    for row in v.chunks_mut(d) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// The `(n, m)` similarities of the rows of `a` (`(n, d)`) with the rows of `b` (`(m, d)`),
/// computed by the engine, row-major.
fn similarities(e: &Engine, a: &[f32], b: &[f32], d: usize) -> Result<Vec<f32>, StageError> {
    let (n, m) = (a.len() / d, b.len() / d);
    let mut g = e.graph(false);
    let ta = e.tensor(a.to_vec(), n, d)?;
    let tb = e.tensor(b.to_vec(), m, d)?;
    let bt = g.transpose(&tb)?;
    Ok(g.matmul(&ta, &bt)?.to_vec())
}

/// For each row `i` of the `(n, m)` similarities `sim`, where column `i` (its pair) stands
/// among the row's other columns: how many are more similar, and how many exactly as similar
/// (identical captions embed identically; a collapsed model ties everything).
fn ranks(sim: &[f32], m: usize) -> Vec<(usize, usize)> {
    sim.chunks(m)
        .enumerate()
        .map(|(i, row)| {
            let target = row[i];
            let others = row.iter().enumerate().filter(|&(j, _)| j != i);
            others.fold((0, 0), |(above, tied), (_, &s)| match s {
                s if s > target => (above + 1, tied),
                s if s == target => (above, tied + 1),
                _ => (above, tied),
            })
        })
        .collect()
}

/// The transpose of the `(n, m)` row-major matrix `v`.
fn transposed(v: &[f32], n: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * m];
    for i in 0..n {
        for j in 0..m {
            out[j * n + i] = v[i * m + j];
        }
    }
    out
}

/// Recall@k: the fraction of queries whose pair is among the `k` most similar, ties broken
/// at random (the expected value: with `above` more similar and `tied` as similar, the pair's
/// place is uniform over `above ..= above + tied`).
fn recall(ranks: &[(usize, usize)], k: usize) -> f64 {
    let hit = |&(above, tied): &(usize, usize)| {
        (k.saturating_sub(above)).min(tied + 1) as f64 / (tied + 1) as f64
    };
    ranks.iter().map(hit).sum::<f64>() / ranks.len().max(1) as f64
}

/// The text tower's embeddings of each class's prompt (`prompt` with the class name for `{}`),
/// tokenised as the captions were.
fn prompt_embeddings(
    e: &Engine,
    tower: &Tower,
    caps: &Captions,
    tk: &crate::data::tokenizer::TextTokenizer,
    prompt: &str,
    classes: &[String],
    ps: &mut ParamStore,
) -> Result<Vec<f32>, StageError> {
    let (len, _) = caps.shape();
    let mut prompts = Vec::with_capacity(classes.len() * len);
    let mut ids = Vec::new();
    for c in classes {
        encode_passage(tk, &prompt.replace("{}", c), len, &mut ids)?;
        prompts.extend(ids.iter().map(|&t| t as f32));
    }
    let x = e.tensor(prompts, classes.len(), len)?;
    let mut g = e.graph(false);
    Ok(tower
        .encoder
        .forward(ps, &mut g, &x, tower.input(), false)?
        .to_vec())
}

/// Zero-shot classification and retrieval on the test split: `clip.recall_at_{1,5}_*` over
/// the test pairs (at most 2,000), and, when the images (or else the captions) are labelled
/// with class names, `clip.zero_shot_accuracy` (each image's class is the prompt its
/// embedding is closest to).
pub(super) fn evaluate(
    e: &Engine,
    model: &Model,
    tower: &Tower,
    caps: &Captions,
    prompt: &str,
    ps: &mut ParamStore,
    images: &Dataset,
) -> Result<Metrics, StageError> {
    let d = tower.spec.embed_dim();
    let test: Vec<usize> = images.rows(Split::Test).into_iter().take(2000).collect();
    let mut m = Metrics::new();
    if test.is_empty() {
        return Ok(m);
    }
    let img = normalised(embed(e, &model.encoder, ps, model.input, images, &test)?, d);
    let ids: Vec<u64> = test.iter().map(|&r| images.ids[r]).collect();
    let text_rows: Vec<usize> = ids.iter().map(|id| caps.by_id[id]).collect();
    let input = tower.input();
    let txt = normalised(
        embed(e, &tower.encoder, ps, input, &caps.ds, &text_rows)?,
        d,
    );
    let n = test.len();
    let sim = similarities(e, &img, &txt, d)?;
    let i2t = ranks(&sim, n);
    let t2i = ranks(&transposed(&sim, n, n), n);
    for k in [1, 5] {
        m.insert(format!("clip.recall_at_{k}_image_to_text"), recall(&i2t, k));
        m.insert(format!("clip.recall_at_{k}_text_to_image"), recall(&t2i, k));
    }
    m.insert("clip.retrieval_pairs".into(), test.len() as f64);
    // The images' own class names and labels when they have them, else the captions'.
    let truth: Option<(&[String], Vec<usize>)> = match (&caps.image_classes, &images.labels) {
        (Some(c), Some(l)) => Some((c, test.iter().map(|&r| l[r] as usize).collect())),
        _ => match (&caps.classes, &caps.ds.labels) {
            (Some(c), Some(l)) => Some((c, text_rows.iter().map(|&r| l[r] as usize).collect())),
            _ => None,
        },
    };
    if let (Some((classes, truth)), Some(tk)) = (truth, &caps.tokenizer) {
        let pe = prompt_embeddings(e, tower, caps, tk, prompt, classes, ps)?;
        let scores = similarities(e, &img, &normalised(pe, d), d)?;
        let correct = scores
            .chunks(classes.len())
            .zip(&truth)
            .filter(|(row, &t)| {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(c, _)| c);
                best == Some(t)
            })
            .count();
        m.insert(
            "clip.zero_shot_accuracy".into(),
            correct as f64 / test.len() as f64,
        );
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_recall_count_what_beats_the_truth() {
        // Three unit rows; queries equal to b's rows 1, 0, 2 with the truth on the diagonal.
        let b = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
        let a = [0.0, 1.0, 1.0, 0.0, 0.6, 0.8];
        let sim = similarities(&Engine::cpu(), &a, &b, 2).unwrap();
        let r = ranks(&sim, 3);
        // Query 0 = (0,1): truth (1,0) has dot 0; (0,1) 1 and (0.6,0.8) 0.8 beat it.
        // Query 1 = (1,0): truth (0,1) has dot 0; (1,0) 1 and (0.6,0.8) 0.6 beat it.
        // Query 2 is its own truth: nothing beats it.
        assert_eq!(r, [(2, 0), (2, 0), (0, 0)]);
        assert!((recall(&r, 1) - 1.0 / 3.0).abs() < 1e-12);
        assert!((recall(&r, 5) - 1.0).abs() < 1e-12);
        // Ties: a pair tied with 3 others is first with probability 1/4, in the top 2 with 1/2;
        // a collapsed model (everything tied) is at chance.
        assert!((recall(&[(0, 3)], 1) - 0.25).abs() < 1e-12);
        assert!((recall(&[(0, 3)], 2) - 0.5).abs() < 1e-12);
        assert!((recall(&[(1, 3)], 2) - 0.25).abs() < 1e-12);
        assert!((recall(&[(2, 3)], 2)).abs() < 1e-12);
        let flat = similarities(&Engine::cpu(), &[1.0; 8], &[1.0; 8], 2).unwrap();
        assert!((recall(&ranks(&flat, 4), 1) - 0.25).abs() < 1e-6);
        let n = normalised(vec![3.0, 4.0, 0.0, 0.0], 2);
        assert_eq!(n, [0.6, 0.8, 0.0, 0.0]);
        assert_eq!(
            transposed(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
