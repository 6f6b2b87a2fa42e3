//! Datasets bigger than memory: the memory budget, the check every whole-dataset load makes,
//! and the block-shuffled stream pretraining reads instead when a dataset is over the budget.
//!
//! The rule (see `docs/performance.md#datasets-bigger-than-memory`):
//!
//! - A dataset is *in memory* size `rows × (sample bytes + 13)` (pixels as `u8`, token ids as
//!   `u32`, plus id, split and label). The budget is `PRETEXT_MEMORY_BUDGET` (bytes, or a number
//!   with `K`, `M`, `G`, `T`), 4 GiB when unset: a fixed number, not a share of this machine's
//!   memory, so the same pipeline takes the same path (and gives the same results) everywhere.
//! - Under the budget every stage loads the dataset as before. Over it, `pretrain` streams its
//!   row groups ([`Streamed`]), `augment` reads only its preview rows, and the stages that hold
//!   every sample (probe, fine-tune, OOD evaluation) stop before loading with a clear error
//!   ([`check_fits`]). A load that is under the budget but over the memory the machine has
//!   available stops the same way instead of meeting the out-of-memory killer.

use std::path::Path;

use super::table::DatasetReader;
use super::{DataError, Dataset, Layout, Split};
use crate::seeds::{mix_seed, permutation, Stream};

/// The environment variable that sets the memory budget.
pub const BUDGET_ENV: &str = "PRETEXT_MEMORY_BUDGET";
/// The budget when [`BUDGET_ENV`] is unset: 4 GiB.
pub const DEFAULT_BUDGET: u64 = 4 << 30;
/// A streaming window holds at most this many row groups, and at most a quarter of the
/// budget or 256 MiB of samples, whichever is less (but always at least one row group).
pub const WINDOW_GROUPS: usize = 16;
/// See [`WINDOW_GROUPS`].
pub const WINDOW_BYTES: u64 = 256 << 20;

/// Bytes per row besides the sample in the in-memory form: id (8), split (1), label (4).
const ROW_OVERHEAD: u64 = 13;

/// `1.5 GiB`, `640 MiB`, `12 kB`-style sizes for messages.
pub fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            return format!("{:.1} {unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} bytes")
}

/// A size as written in [`BUDGET_ENV`]: bytes, or a number with `K`, `M`, `G` or `T`
/// (binary multiples; an optional `B` or `iB` after the letter).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = lower[digits.len()..]
        .trim_end_matches("ib")
        .trim_end_matches('b');
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    let value: f64 = digits.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| (value * (1u64 << shift) as f64) as u64)
}

/// The memory budget: [`BUDGET_ENV`], or [`DEFAULT_BUDGET`]. A value that is not a size is an
/// error saying how to write one.
pub fn budget() -> Result<u64, String> {
    budget_from(std::env::var(BUDGET_ENV).ok().as_deref())
}

/// The budget [`BUDGET_ENV`] set to `value` (`None`: unset) means.
fn budget_from(value: Option<&str>) -> Result<u64, String> {
    match value {
        None => Ok(DEFAULT_BUDGET),
        Some(v) => parse_size(v).filter(|&b| b > 0).ok_or_else(|| {
            format!(
                "{BUDGET_ENV}=`{v}` is not a memory size; write bytes or a number with K, M, G \
                 or T (for example {BUDGET_ENV}=8G), or unset it for the default of 4G"
            )
        }),
    }
}

/// Memory the machine has available now (`MemAvailable` in `/proc/meminfo`); `None` where
/// that is not known.
pub fn available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes of one sample in the in-memory form (saturating: a corrupt file may declare any
/// shape).
pub fn sample_bytes(layout: Layout) -> u64 {
    let (per, k) = match layout {
        Layout::Image {
            channels,
            height,
            width,
        } => (1, [channels, height, width]),
        Layout::Features { dim } => (4, [dim, 1, 1]),
        Layout::Tokens { len, .. } => (4, [len, 1, 1]),
    };
    k.iter()
        .fold(per, |acc: u64, &d| acc.saturating_mul(d as u64))
}

/// Bytes `rows` rows of `layout` take in memory.
pub fn in_memory_bytes(layout: Layout, rows: usize) -> u64 {
    (rows as u64).saturating_mul(sample_bytes(layout).saturating_add(ROW_OVERHEAD))
}

/// Whether a dataset may be loaded whole.
#[derive(Debug, Clone, PartialEq)]
pub enum Fit {
    /// Under the budget and (where known) under the memory available.
    Fits,
    /// Over the budget: stream it, or stop.
    OverBudget { need: u64, budget: u64 },
    /// Under the budget but over what the machine has available now.
    OverAvailable { need: u64, available: u64 },
}

/// How the dataset `reader` opened fits in memory.
pub fn fit(reader: &DatasetReader) -> Result<Fit, DataError> {
    let budget = budget().map_err(|m| DataError::file(reader.path(), m))?;
    Ok(fit_within(reader, budget))
}

fn fit_within(reader: &DatasetReader, budget: u64) -> Fit {
    let need = in_memory_bytes(reader.info().layout, reader.len());
    if need > budget {
        Fit::OverBudget { need, budget }
    } else {
        match available() {
            Some(available) if need > available => Fit::OverAvailable { need, available },
            _ => Fit::Fits,
        }
    }
}

/// The dataset in words, for messages: `1000000 samples (32×32 images with 1 channel), 1.0 GiB
/// in memory`.
fn describe(reader: &DatasetReader, need: u64) -> String {
    format!(
        "{} samples ({}), {} in memory",
        reader.len(),
        reader.info().layout.describe(),
        human(need)
    )
}

/// The error of a stage that holds every sample in memory, for a dataset that does not fit;
/// `Ok` when it does.
pub fn check_fits(reader: &DatasetReader) -> Result<(), DataError> {
    fit_error(reader, fit(reader)?)
}

fn fit_error(reader: &DatasetReader, fit: Fit) -> Result<(), DataError> {
    let message = match fit {
        Fit::Fits => return Ok(()),
        Fit::OverBudget { need, budget } => format!(
            "the dataset holds {}, over the memory budget of {} ({BUDGET_ENV}); this stage \
             holds every sample in memory, so it stops here rather than risk the out-of-memory \
             killer. Make the dataset smaller (`limit` in its ingest stage, or a curate stage), \
             or raise the budget where the machine has the memory (for example \
             {BUDGET_ENV}={}); pretrain and augment stream datasets over the budget",
            describe(reader, need),
            human(budget),
            suggest(need)
        ),
        Fit::OverAvailable { need, available } => format!(
            "the dataset holds {}, more than the {} of memory available on this machine \
             (MemAvailable in /proc/meminfo); this stage holds every sample in memory, so it \
             stops here rather than meet the out-of-memory killer. Free memory, make the \
             dataset smaller (`limit` in its ingest stage, or a curate stage), or, for \
             pretrain, set {BUDGET_ENV} below {} so it streams the dataset",
            describe(reader, need),
            human(available),
            human(need)
        ),
    };
    Err(DataError::file(reader.path(), message))
}

/// A budget that would hold `need` bytes, rounded up to whole GiB.
fn suggest(need: u64) -> String {
    format!("{}G", need.div_ceil(1 << 30).max(1))
}

/// The first `n` rows of `split` in file order (with the dataset's shape and vocabulary),
/// reading row groups only until they are found: what augment's preview needs, at any size.
pub fn first_rows(path: &Path, split: Split, n: usize) -> Result<Dataset, DataError> {
    let mut reader = DatasetReader::open(path)?.samples_only()?;
    let layout = reader.info().layout;
    let mut out = Dataset::from_records(super::Records::empty(reader.info()))
        .ok_or_else(|| super::table::not_images(path, layout))?;
    while out.len() < n {
        let Some(chunk) = reader.next_chunk()? else {
            break;
        };
        let part =
            Dataset::from_records(chunk).ok_or_else(|| super::table::not_images(path, layout))?;
        let keep: Vec<usize> = (0..part.len())
            .filter(|&i| part.splits[i] == split)
            .take(n - out.len())
            .collect();
        append_rows(&mut out, &part, &keep);
    }
    Ok(out)
}

/// A dataset file read row group by row group in a seeded block shuffle: each epoch visits the
/// row groups in a seeded order, [`Streamed::window`] at a time; the rows of one split in a
/// window are shuffled (seeded per epoch and window) and handed out in batches. Memory: one
/// window of samples plus the batch being built, and one byte per row for the split column.
pub struct Streamed {
    reader: DatasetReader,
    splits: Vec<Split>,
    /// First row of every row group, and one past the last at the end.
    starts: Vec<usize>,
    window: usize,
}

impl Streamed {
    /// Opens `path` for streaming under the memory budget `budget` (reads its split column).
    pub fn open(path: &Path, budget: u64) -> Result<Streamed, DataError> {
        let reader = DatasetReader::open(path)?.samples_only()?;
        if matches!(reader.info().layout, Layout::Features { .. }) {
            return Err(super::table::not_images(path, reader.info().layout));
        }
        let splits = reader.splits()?;
        let mut starts: Vec<usize> = vec![0];
        for g in 0..reader.groups() {
            starts.push(starts[g].saturating_add(reader.group_rows(g)));
        }
        if starts.last() != Some(&splits.len()) {
            return Err(DataError::file(
                path,
                "the row groups do not add up to the file's rows; the file is corrupt",
            ));
        }
        let largest = (0..reader.groups())
            .map(|g| reader.group_rows(g))
            .max()
            .unwrap_or(0);
        let group_bytes = (largest as u64)
            .saturating_mul(sample_bytes(reader.info().layout))
            .max(1);
        let window_bytes = WINDOW_BYTES.min(budget / 4);
        let window = ((window_bytes / group_bytes) as usize).clamp(1, WINDOW_GROUPS);
        Ok(Streamed {
            reader,
            splits,
            starts,
            window,
        })
    }

    /// The split of every row, in file order.
    pub fn splits(&self) -> &[Split] {
        &self.splits
    }

    /// Row groups per window.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The rows `rows` (file-order indices, ascending), reading each row group they touch once.
    pub fn rows(&self, rows: &[usize]) -> Result<Dataset, DataError> {
        let mut out = self.empty();
        let total = self.splits.len();
        if let Some(&r) = rows.iter().find(|&&r| r >= total) {
            return Err(DataError::file(
                self.reader.path(),
                format!("internal: row {r} asked for, the dataset has {total}"),
            ));
        }
        let mut i = 0;
        while i < rows.len() {
            let g = self.starts.partition_point(|&s| s <= rows[i]) - 1;
            let (start, end) = (self.starts[g], self.starts[g + 1]);
            let mut local = Vec::new();
            while i < rows.len() && rows[i] < end {
                local.push(rows[i] - start);
                i += 1;
            }
            append_rows(&mut out, &self.group(g)?, &local);
        }
        Ok(out)
    }

    fn group_rows(&self, g: usize) -> usize {
        self.starts[g + 1] - self.starts[g]
    }

    /// An empty dataset with this one's shape.
    fn empty(&self) -> Dataset {
        let info = self.reader.info();
        Dataset::from_records(super::Records::empty(info)).unwrap_or(Dataset {
            shape: (0, 0, 0),
            ids: Vec::new(),
            splits: Vec::new(),
            labels: None,
            pixels: Vec::new(),
            vocab: None,
            tokens: Vec::new(),
        })
    }

    fn group(&self, g: usize) -> Result<Dataset, DataError> {
        let records = self.reader.read_group(g)?;
        if records.len() != self.group_rows(g) {
            return Err(DataError::file(
                self.reader.path(),
                format!(
                    "row group {g} holds {} rows, but the file's footer says {}; the file is \
                     corrupt",
                    records.len(),
                    self.group_rows(g)
                ),
            ));
        }
        Dataset::from_records(records)
            .ok_or_else(|| super::table::not_images(self.reader.path(), self.reader.info().layout))
    }

    /// Epoch `epoch`'s rows of `split` in the block-shuffled order seeded by `seed`.
    pub fn epoch(&self, split: Split, seed: u64, epoch: u64) -> EpochStream<'_> {
        EpochStream {
            src: self,
            split,
            seed,
            epoch,
            groups: permutation(
                self.starts.len() - 1,
                mix_seed(seed, Stream::EpochOrder, epoch, 0, 1),
            ),
            next_window: 0,
            current: None,
            order: Vec::new(),
            pos: 0,
        }
    }
}

/// One epoch of a [`Streamed`] dataset, batch by batch.
pub struct EpochStream<'a> {
    src: &'a Streamed,
    split: Split,
    seed: u64,
    epoch: u64,
    /// Row groups in this epoch's order.
    groups: Vec<usize>,
    next_window: usize,
    /// The window being handed out, its shuffled row order and the next position in it.
    current: Option<Dataset>,
    order: Vec<usize>,
    pos: usize,
}

impl EpochStream<'_> {
    /// The next (up to) `n` rows; an empty dataset once the epoch has none left.
    pub fn next_batch(&mut self, n: usize) -> Result<Dataset, DataError> {
        let mut out = self.src.empty();
        while out.len() < n {
            if self.pos >= self.order.len() && !self.load_window()? {
                break;
            }
            let take = (n - out.len()).min(self.order.len() - self.pos);
            let rows = &self.order[self.pos..self.pos + take];
            if let Some(w) = &self.current {
                append_rows(&mut out, w, rows);
            }
            self.pos += take;
        }
        Ok(out)
    }

    /// Reads the next window (dropping the last one first); `false` after the last.
    fn load_window(&mut self) -> Result<bool, DataError> {
        self.current = None;
        let w = self.src.window;
        let first = self.next_window * w;
        if first >= self.groups.len() {
            return Ok(false);
        }
        let mut groups: Vec<usize> =
            self.groups[first..(first + w).min(self.groups.len())].to_vec();
        // File order inside a window: the shuffle below decides the order of its rows.
        groups.sort_unstable();
        let mut window = self.src.empty();
        for g in groups {
            let part = self.src.group(g)?;
            let keep: Vec<usize> = (0..part.len())
                .filter(|&i| part.splits[i] == self.split)
                .collect();
            append_rows(&mut window, &part, &keep);
        }
        self.order = permutation(
            window.len(),
            mix_seed(
                self.seed,
                Stream::EpochOrder,
                self.epoch,
                1 + self.next_window as u64,
                1,
            ),
        );
        self.pos = 0;
        self.next_window += 1;
        self.current = Some(window);
        Ok(true)
    }
}

/// Appends rows `rows` of `b` to `a` (same shape), in that order.
fn append_rows(a: &mut Dataset, b: &Dataset, rows: &[usize]) {
    let k = b.sample_len();
    for &r in rows {
        a.ids.push(b.ids[r]);
        a.splits.push(b.splits[r]);
        if b.is_text() {
            a.tokens.extend_from_slice(&b.tokens[r * k..(r + 1) * k]);
        } else {
            a.pixels.extend_from_slice(&b.pixels[r * k..(r + 1) * k]);
        }
    }
    match (&mut a.labels, &b.labels) {
        (Some(x), Some(y)) => x.extend(rows.iter().map(|&r| y[r])),
        (x, _) => *x = None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::table::DatasetWriter;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size(" 1.5k "), Some(1536));
        assert_eq!(parse_size("12mb"), Some(12 << 20));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("4X"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(100), "100 bytes");
    }

    /// `n` 1×2×2 images in row groups of `group` rows, every third one in the test split.
    fn dataset(dir: &Path, n: usize, group: usize) -> std::path::PathBuf {
        let ds = Dataset {
            shape: (1, 2, 2),
            ids: (0..n as u64).collect(),
            splits: (0..n)
                .map(|i| {
                    if i % 3 == 2 {
                        Split::Test
                    } else {
                        Split::Train
                    }
                })
                .collect(),
            labels: Some((0..n as u32).map(|i| i % 5).collect()),
            pixels: (0..n * 4).map(|i| (i % 251) as u8).collect(),
            vocab: None,
            tokens: Vec::new(),
        };
        let (info, records) = ds.into_records();
        let p = dir.join("d.parquet");
        let mut w = DatasetWriter::create(&p, &info).unwrap();
        let all: Vec<usize> = (0..n).collect();
        for chunk in all.chunks(group) {
            w.write(&records.select(chunk)).unwrap();
        }
        w.finish().unwrap();
        p
    }

    #[test]
    fn an_epoch_streams_every_row_of_the_split_once_in_a_seeded_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dataset(dir.path(), 1000, 64);
        let full = crate::data::table::read_dataset(&p).unwrap();
        // 64 rows of 4 bytes a row group, so a window of 3 row groups under 3 kB / 4.
        let s = Streamed::open(&p, 3 * 1024).unwrap();
        assert_eq!(s.window(), 3);
        let mut seen = Vec::new();
        let mut epoch = s.epoch(Split::Train, 7, 0);
        loop {
            let b = epoch.next_batch(50).unwrap();
            if b.is_empty() {
                break;
            }
            assert!(b.len() == 50 || seen.len() + b.len() == full.rows(Split::Train).len());
            for i in 0..b.len() {
                // Every row carries its own pixels and label.
                let id = b.ids[i] as usize;
                assert_eq!(b.pixels[i * 4..i * 4 + 4], full.pixels[id * 4..id * 4 + 4]);
                assert_eq!(
                    b.labels.as_ref().unwrap()[i],
                    full.labels.as_ref().unwrap()[id]
                );
                assert_eq!(b.splits[i], Split::Train);
            }
            seen.extend(b.ids.iter().copied());
        }
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        let train: Vec<u64> = full.rows(Split::Train).iter().map(|&r| r as u64).collect();
        assert_eq!(sorted, train);
        // Seeded: the same order again; another epoch or seed, another order.
        let order = |seed, e| {
            let mut st = s.epoch(Split::Train, seed, e);
            st.next_batch(10_000).unwrap().ids
        };
        assert_eq!(order(7, 0), seen);
        assert_ne!(order(7, 1), seen);
        assert_ne!(order(8, 0), seen);
        // Shuffled across row groups, not in file order.
        assert_ne!(seen, train);
        // Random access by row.
        let picked = s.rows(&[0, 5, 64, 999]).unwrap();
        assert_eq!(picked.ids, vec![0, 5, 64, 999]);
        assert_eq!(picked.pixels[8..12], full.pixels[256..260]);
    }

    #[test]
    fn over_the_budget_is_a_clear_error_before_loading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dataset(dir.path(), 100, 100);
        let reader = DatasetReader::open(&p).unwrap();
        // 100 rows × (4 + 13) bytes.
        assert_eq!(in_memory_bytes(reader.info().layout, reader.len()), 1700);
        let budget = budget_from(Some("1K")).unwrap();
        let fit = fit_within(&reader, budget);
        assert_eq!(
            fit,
            Fit::OverBudget {
                need: 1700,
                budget: 1024
            }
        );
        let e = fit_error(&reader, fit).unwrap_err().to_string();
        let bad = budget_from(Some("a lot")).unwrap_err();
        assert_eq!(budget_from(None), Ok(DEFAULT_BUDGET));
        assert!(
            e.contains("d.parquet")
                && e.contains("100 samples (2×2 images with 1 channel), 1.7 KiB in memory")
                && e.contains("over the memory budget of 1.0 KiB (PRETEXT_MEMORY_BUDGET)")
                && e.contains("PRETEXT_MEMORY_BUDGET=1G"),
            "{e}"
        );
        assert!(bad.contains("`a lot` is not a memory size"), "{bad}");
    }
}
