//! Seeds: every random draw of a run comes from (pipeline seed, stream, coordinates), so no
//! two purposes share numbers and results do not depend on thread scheduling.

/// Seed of one random draw, from (pipeline seed, stream, a, b, c): independent of thread
/// scheduling and batch composition.
pub fn mix_seed(seed: u64, stream: Stream, a: u64, b: u64, c: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    for v in [seed, stream as u64, a, b, c] {
        h.update(&v.to_le_bytes());
    }
    let out = h.finalize();
    u64::from_le_bytes(out.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The independent random streams of a run: each draw mixes the pipeline seed with its
/// stream and its coordinates ([`mix_seed`]), so no two purposes ever share numbers. The
/// values are part of every result: never renumber one (add new streams at the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// The train/test split of an ingest stage.
    Split = 1,
    /// The augmentation of one sample's view (coordinates: epoch, sample id, view).
    Views = 2,
    /// The augment stage's per-position draws.
    AugmentStage = 3,
    /// A model's initial weights (the probe's random-init baseline reuses them on purpose:
    /// it is the pretrained encoder's starting point).
    ModelInit = 4,
    /// The samples the per-epoch health monitor embeds.
    MonitorSamples = 5,
    /// Pretraining's batch order per epoch.
    EpochOrder = 6,
    /// A linear probe's initial weights.
    ProbeInit = 7,
    /// A linear probe's batch order per epoch.
    ProbeOrder = 8,
    /// The views the health monitor embeds.
    MonitorViews = 9,
    /// MAE's hidden patches per sample and epoch.
    MaeMask = 10,
    /// The samples kept per class in a label-fraction subset.
    ClassSubset = 11,
    /// Dropout masks per training step.
    Dropout = 12,
    /// The masks of MLM validation.
    MlmValidation = 13,
    /// The supervised baseline's batch order per epoch.
    SupervisedOrder = 14,
    /// One supervised-baseline repetition.
    SupervisedRun = 15,
    /// A fine-tune's new head.
    FinetuneInit = 16,
    /// The labelled subset a fine-tune trains on.
    FinetuneLabels = 17,
    /// A fine-tune's batch order per epoch.
    FinetuneOrder = 18,
    /// The corruptions of an OOD robustness suite.
    Corruptions = 19,
    /// The label-fraction subsets of probes, per repetition and fraction (was 12, shared
    /// with dropout, before engine-3).
    LabelSubset = 20,
    /// The supervised baseline's initial weights (was 13, shared with MLM validation).
    SupervisedInit = 21,
    /// I-JEPA's block masks: the blocks' sizes per step, their positions per sample.
    JepaMask = 22,
}

/// A deterministic permutation of `0..n` (Fisher–Yates with a seeded generator).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    use rand::{seq::SliceRandom, SeedableRng};
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    v
}
