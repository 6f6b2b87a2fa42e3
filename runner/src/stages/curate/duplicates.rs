//! Exact copies (same content hash) within a split, and exact leakage (the same content in
//! train and test).

use std::collections::{BTreeMap, BTreeSet};

use super::fingerprint::Row;
use crate::artifacts::audit::{DuplicatePair, LeakPair};
use crate::data::hash::ContentHash;
use crate::data::Split;

/// One unit per (content, split): the rows holding it, sorted by id, the first (lowest id)
/// representing it. The near-duplicate search compares units.
#[derive(Default)]
pub(super) struct Units {
    /// The representative row of each unit (`members[u][0]`).
    pub rep: Vec<usize>,
    pub members: Vec<Vec<usize>>,
    /// The content group each unit belongs to (units of one group are the same content).
    pub group: Vec<usize>,
}

/// Copies within a split: every row but the lowest id of its content.
#[derive(Default)]
pub(super) struct Duplicates {
    /// Sorted by (kept id, copy id).
    pub pairs: Vec<DuplicatePair>,
    /// The copies (not the kept rows).
    pub rows: Vec<usize>,
}

/// Test samples with an exact or near copy in train.
#[derive(Default)]
pub(super) struct Leaks {
    pub pairs: Vec<LeakPair>,
    /// Every (train, test) row pair, which `pairs` lists once per test row.
    pub pair_count: usize,
    pub test: BTreeSet<usize>,
    pub train: BTreeSet<usize>,
}

impl Leaks {
    /// `train` and `test` (row lists, lowest id first) are copies of each other.
    pub fn add(&mut self, rows: &[Row], train: &[usize], test: &[usize], exact: bool) {
        self.pair_count += train.len() * test.len();
        for &t in test {
            self.pairs.push(LeakPair {
                train: rows[train[0]].sample_ref(),
                test: rows[t].sample_ref(),
                exact,
            });
        }
        self.test.extend(test);
        self.train.extend(train);
    }

    /// Sorts the listed pairs by (test id, train id), once every leak is in.
    pub fn sort(&mut self) {
        self.pairs.sort_by_key(|x| (x.test.id, x.train.id));
        self.pairs.dedup();
    }
}

/// What the content hashes show.
pub(super) struct Exact {
    pub duplicates: Duplicates,
    pub units: Units,
    pub leaks: Leaks,
}

/// Groups the rows by content hash, then by split.
pub(super) fn exact_copies(rows: &[Row]) -> Exact {
    let mut groups: BTreeMap<ContentHash, Vec<usize>> = BTreeMap::new();
    for (r, row) in rows.iter().enumerate() {
        groups.entry(row.hash).or_default().push(r);
    }
    let mut found = Exact {
        duplicates: Duplicates::default(),
        units: Units::default(),
        leaks: Leaks::default(),
    };
    for (g, members) in groups.values().enumerate() {
        let (train, test) = (
            in_split(rows, members, Split::Train),
            in_split(rows, members, Split::Test),
        );
        for part in [&train, &test] {
            found.add_unit(rows, g, part);
        }
        if !train.is_empty() && !test.is_empty() {
            found.leaks.add(rows, &train, &test, true);
        }
    }
    found
        .duplicates
        .pairs
        .sort_by_key(|x| (x.keep.id, x.copy.id));
    found
}

impl Exact {
    /// The rows of content group `g` in one split (lowest id first): a unit, and all but its
    /// first row copies.
    fn add_unit(&mut self, rows: &[Row], g: usize, part: &[usize]) {
        let Some((&keep, copies)) = part.split_first() else {
            return;
        };
        for &c in copies {
            self.duplicates.pairs.push(DuplicatePair {
                keep: rows[keep].sample_ref(),
                copy: rows[c].sample_ref(),
            });
            self.duplicates.rows.push(c);
        }
        self.units.rep.push(keep);
        self.units.members.push(part.to_vec());
        self.units.group.push(g);
    }
}

/// The `members` in split `s`, by id.
fn in_split(rows: &[Row], members: &[usize], s: Split) -> Vec<usize> {
    let mut v: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&r| rows[r].split == s)
        .collect();
    v.sort_by_key(|&r| rows[r].id);
    v
}
