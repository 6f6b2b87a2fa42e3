//! Near copies between units (images: perceptual hash + thumbnail cosine; feature vectors:
//! cosine): pairs within a split form groups, of which all but the lowest id can be dropped;
//! pairs across the splits are near leakage.

use std::collections::{BTreeSet, HashMap};

use super::duplicates::{Leaks, Units};
use super::fingerprint::{Fingerprints, Row};
use super::MAX_FEATURE_SEARCH;
use crate::artifacts::audit::NearPair;
use crate::data::{hash, DatasetInfo, Layout, Split};
use crate::pipeline::NearDuplicates;

/// Near copies within a split.
pub(super) struct Near {
    /// Sorted by (lower id, higher id).
    pub pairs: Vec<NearPair>,
    /// The rows of every unit but the lowest id of its group.
    pub drop_rows: Vec<usize>,
    /// Why the search did not run, when it was on but could not.
    pub skipped: Option<String>,
}

/// Two units the search found alike: their Hamming distance (images) and cosine.
struct Candidate {
    u: usize,
    v: usize,
    distance: Option<u32>,
    cosine: f64,
}

/// Searches the units for near copies; those across the splits go into `leaks`.
pub(super) fn near_copies(
    fp: &Fingerprints,
    units: &Units,
    leaks: &mut Leaks,
    info: &DatasetInfo,
    cfg: &NearDuplicates,
) -> Near {
    let rows = &fp.rows;
    let (candidates, skipped) = search(fp, units, info, cfg);
    let mut groups = Groups::new(units.rep.len());
    let mut pairs = Vec::new();
    for c in candidates {
        if units.group[c.u] == units.group[c.v] {
            continue; // the same content in train and test: exact leakage, counted already
        }
        let (a, b) = (units.rep[c.u], units.rep[c.v]);
        if rows[a].split == rows[b].split {
            groups.join(c.u, c.v);
            pairs.push(near_pair(rows, a, b, &c));
        } else {
            let (tr, te) = if rows[a].split == Split::Train {
                (c.u, c.v)
            } else {
                (c.v, c.u)
            };
            leaks.add(rows, &units.members[tr], &units.members[te], false);
        }
    }
    pairs.sort_by_key(|x| (x.a.id, x.b.id));
    Near {
        pairs,
        drop_rows: groups.drop_rows(rows, units),
        skipped,
    }
}

/// The pair of rows `a` and `b`, lower id first, cosine to six decimals.
fn near_pair(rows: &[Row], a: usize, b: usize, c: &Candidate) -> NearPair {
    let (a, b) = if rows[a].id < rows[b].id {
        (a, b)
    } else {
        (b, a)
    };
    NearPair {
        a: rows[a].sample_ref(),
        b: rows[b].sample_ref(),
        distance: c.distance,
        cosine: (c.cosine * 1e6).round() / 1e6,
    }
}

/// The candidate pairs, or why the search does not run for this dataset.
fn search(
    fp: &Fingerprints,
    units: &Units,
    info: &DatasetInfo,
    cfg: &NearDuplicates,
) -> (Vec<Candidate>, Option<String>) {
    let n = fp.rows.len();
    // Blank samples are all alike; they are a finding of their own.
    let blank: BTreeSet<usize> = fp.quality.blank.iter().copied().collect();
    let skip: Vec<bool> = units.rep.iter().map(|r| blank.contains(r)).collect();
    if !cfg.enabled {
        (Vec::new(), None)
    } else if info.layout.is_image() {
        (image_candidates(fp, units, &skip, cfg), None)
    } else if matches!(info.layout, Layout::Tokens { .. }) {
        let why = "token sequences: the near-duplicate search compares images and feature vectors; exact duplicates and leaks are still found";
        (Vec::new(), Some(why.to_string()))
    } else if n > MAX_FEATURE_SEARCH {
        let why = format!(
            "{n} feature vectors: the all-pairs cosine search runs up to {MAX_FEATURE_SEARCH}"
        );
        (Vec::new(), Some(why))
    } else {
        let dim = info.layout.sample_len();
        (feature_candidates(fp, units, dim, &skip, cfg), None)
    }
}

/// Units whose perceptual hashes are within `max_distance` and thumbnails within
/// `min_cosine`.
fn image_candidates(
    fp: &Fingerprints,
    units: &Units,
    skip: &[bool],
    cfg: &NearDuplicates,
) -> Vec<Candidate> {
    let looks = &fp.looks;
    let hashes: Vec<u64> = units.rep.iter().map(|&r| looks.phashes[r]).collect();
    let cosine = |u: usize, v: usize| {
        let (a, b) = (units.rep[u], units.rep[v]);
        hash::thumbnail_cosine(
            looks.thumb(a),
            looks.centred[a],
            looks.thumb(b),
            looks.centred[b],
        )
    };
    let min = cfg.min_cosine;
    hash::near_pairs_where(&hashes, skip, cfg.max_distance, |u, v, _| {
        cosine(u, v) >= min
    })
    .into_iter()
    .map(|(u, v, d)| Candidate {
        u,
        v,
        distance: Some(d),
        cosine: cosine(u, v),
    })
    .collect()
}

/// Units whose feature vectors are within `min_cosine` (all pairs).
fn feature_candidates(
    fp: &Fingerprints,
    units: &Units,
    dim: usize,
    skip: &[bool],
    cfg: &NearDuplicates,
) -> Vec<Candidate> {
    let vectors = &fp.looks.vectors;
    let reps: Vec<f32> = units
        .rep
        .iter()
        .flat_map(|&r| vectors[r * dim..(r + 1) * dim].iter().copied())
        .collect();
    hash::cosine_pairs(&reps, dim, skip, cfg.min_cosine)
        .into_iter()
        .map(|(u, v, cosine)| Candidate {
            u,
            v,
            distance: None,
            cosine,
        })
        .collect()
}

/// Groups of units joined by near pairs (union-find).
struct Groups {
    parent: Vec<usize>,
    /// The units in any pair.
    joined: BTreeSet<usize>,
}

impl Groups {
    fn new(n: usize) -> Groups {
        Groups {
            parent: (0..n).collect(),
            joined: BTreeSet::new(),
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn join(&mut self, a: usize, b: usize) {
        self.joined.extend([a, b]);
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }

    /// The rows of every joined unit but the one with the lowest id of its group.
    fn drop_rows(mut self, rows: &[Row], units: &Units) -> Vec<usize> {
        let joined = std::mem::take(&mut self.joined);
        let mut best: HashMap<usize, usize> = HashMap::new();
        for &u in &joined {
            let root = self.find(u);
            let e = best.entry(root).or_insert(u);
            if rows[units.rep[u]].id < rows[units.rep[*e]].id {
                *e = u;
            }
        }
        let mut out = Vec::new();
        for &u in &joined {
            if best[&self.find(u)] != u {
                out.extend(&units.members[u]);
            }
        }
        out
    }
}
