//! Pass 1: one streaming read that keeps, per row, what the findings need — never the
//! samples themselves.

use super::metadata::MetaTally;
use super::{Progress, StageError, MAX_FEATURE_SEARCH};
use crate::artifacts::audit::SampleRef;
use crate::data::hash::{self, Centred, ContentHash, THUMB_LEN};
use crate::data::table::DatasetReader;
use crate::data::{Records, Samples, Split};
use crate::pipeline::{CurateConfig, Quality};

/// What pass 1 keeps of each row.
pub(super) struct Row {
    pub id: u64,
    pub split: Split,
    pub label: Option<u32>,
    pub hash: ContentHash,
    pub path: Option<String>,
}

impl Row {
    /// How the audit names this row.
    pub fn sample_ref(&self) -> SampleRef {
        SampleRef {
            id: self.id,
            path: self.path.clone(),
        }
    }
}

/// Rows (input indices, ascending) that fail a quality rule.
#[derive(Default)]
pub(super) struct QualityRows {
    pub blank: Vec<usize>,
    pub dark: Vec<usize>,
    pub bright: Vec<usize>,
    pub tiny: Vec<usize>,
}

/// What the near-duplicate search compares, indexed by row: for images a thumbnail, its
/// perceptual hash and centring; for feature vectors the vector (kept only when the search
/// will run).
#[derive(Default)]
pub(super) struct Looks {
    pub phashes: Vec<u64>,
    pub thumbs: Vec<u8>,
    pub centred: Vec<Centred>,
    pub vectors: Vec<f32>,
}

impl Looks {
    /// Row `r`'s thumbnail.
    pub fn thumb(&self, r: usize) -> &[u8] {
        &self.thumbs[r * THUMB_LEN..(r + 1) * THUMB_LEN]
    }
}

/// Everything pass 1 found.
pub(super) struct Fingerprints {
    pub rows: Vec<Row>,
    pub quality: QualityRows,
    pub looks: Looks,
    pub meta: MetaTally,
}

/// Which of the near-search inputs pass 1 records.
#[derive(Clone, Copy)]
struct Keep {
    thumbs: bool,
    vectors: bool,
}

/// Reads every row of `reader` once, counting metadata values into `meta`.
pub(super) fn fingerprint(
    reader: &mut DatasetReader,
    cfg: &CurateConfig,
    meta: MetaTally,
    progress: &dyn Progress,
) -> Result<Fingerprints, StageError> {
    let near_on = cfg.near_duplicates.enabled;
    let keep = Keep {
        thumbs: near_on,
        vectors: near_on && reader.len() <= MAX_FEATURE_SEARCH,
    };
    let mut fp = Fingerprints {
        rows: Vec::with_capacity(reader.len()),
        quality: QualityRows::default(),
        looks: Looks::default(),
        meta,
    };
    progress.start("auditing", reader.len() as u64);
    while let Some(chunk) = reader.next_chunk()? {
        for i in 0..chunk.len() {
            fp.add_row(&chunk, i, &cfg.quality, keep);
        }
        progress.advance(chunk.len() as u64, "");
    }
    progress.finish(&format!("{} samples audited", fp.rows.len()));
    Ok(fp)
}

impl Fingerprints {
    fn add_row(&mut self, chunk: &Records, i: usize, q: &Quality, keep: Keep) {
        let r = self.rows.len();
        let bytes = chunk.samples.row_bytes(i);
        let row = Row {
            id: chunk.ids[i],
            split: chunk.splits[i],
            label: chunk.labels.as_ref().map(|l| l[i]),
            hash: hash::content_hash(&bytes),
            path: chunk.paths.as_ref().map(|p| p[i].clone()),
        };
        match &chunk.samples {
            Samples::U8 { shape, .. } => {
                self.quality.add_image(r, &bytes, q);
                if keep.thumbs {
                    self.looks.add_image(*shape, &bytes);
                }
            }
            Samples::Tokens { len, data, .. } => {
                // An empty passage: nothing but [CLS] and padding.
                if data[i * len..(i + 1) * len].iter().skip(1).all(|&t| t == 0) {
                    self.quality.blank.push(r);
                }
            }
            Samples::F32 { dim, data } => {
                let v = &data[i * dim..(i + 1) * dim];
                if v.iter().all(|&x| x == v[0]) {
                    self.quality.blank.push(r);
                }
                if keep.vectors {
                    self.looks.vectors.extend_from_slice(v);
                }
            }
        }
        if let Some(sizes) = &chunk.source_sizes {
            let (h, w) = sizes[i];
            if q.min_size > 0 && (h < q.min_size || w < q.min_size) {
                self.quality.tiny.push(r);
            }
        }
        self.meta.add(chunk, i, row.split, row.label);
        self.rows.push(row);
    }
}

impl QualityRows {
    /// Flags image row `r` as blank (no spread), else dark or bright (by its mean).
    fn add_image(&mut self, r: usize, bytes: &[u8], q: &Quality) {
        let n = bytes.len().max(1) as f64;
        let mean = bytes.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = bytes
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        if var.sqrt() <= q.blank_std {
            self.blank.push(r);
        } else if mean < q.min_mean {
            self.dark.push(r);
        } else if mean > q.max_mean {
            self.bright.push(r);
        }
    }
}

impl Looks {
    /// Records the next image's thumbnail (black when it cannot be made), hash and centring.
    fn add_image(&mut self, shape: (usize, usize, usize), bytes: &[u8]) {
        let t = hash::thumbnail(shape, bytes).unwrap_or_else(|| vec![0; THUMB_LEN]);
        self.phashes.push(hash::phash_thumbnail(&t));
        self.centred.push(hash::centred(&t));
        self.thumbs.extend_from_slice(&t);
    }
}
