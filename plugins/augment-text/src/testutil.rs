//! Test helpers of this crate on top of the SDK's harness (`pretext_plugin::testing`, which
//! creates augmentations through this crate's exported C ABI, as the host does):
//! reproducible token sequences and the checks every augmentation here shares.

use pretext_plugin::testing::{self, Plugin};
use pretext_plugin::tokens::{CLS, MASK, PAD, SEP, SPECIAL, TARGET};
use pretext_plugin::{Rng, TokenAugmentation, TokenSeq, Value};

use crate::is_eligible;

/// Sequence length of the test sequences.
pub const LEN: usize = 64;
/// Vocabulary size of the test sequences (specials included).
pub const VOCAB: usize = 1000;

/// A float parameter value.
pub fn f(v: f64) -> Value {
    Value::Float(v)
}

/// An integer parameter value.
pub fn i(v: i64) -> Value {
    Value::Int(v)
}

/// This crate, seen through its entry function.
pub fn plugin() -> Plugin {
    Plugin::new(crate::pretext_plugin_entry)
}

/// Creates `T` from `entries` through the exported `create` function; `Err` holds the message
/// the plugin reported.
pub fn create<T: TokenAugmentation>(entries: &[(&str, Value)]) -> Result<T, String> {
    plugin().create_token_augmentation::<T>(entries)
}

/// Builds `T` from `entries`, panicking on an error.
pub fn make<T: TokenAugmentation>(entries: &[(&str, Value)]) -> T {
    create::<T>(entries).unwrap_or_else(|e| panic!("{}: {e}", T::NAME))
}

/// A uniformly random learned token of the test vocabulary.
pub fn learned(rng: &mut Rng) -> u32 {
    SPECIAL + rng.below((VOCAB - SPECIAL as usize) as u64) as u32
}

/// A reproducible sequence of [`LEN`] ids: `[CLS]`, 20 to 59 learned tokens split by a `[SEP]`
/// in the middle about half the time, a closing `[SEP]`, then `[PAD]` to the end.
pub fn sample(seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed ^ 0x5EED_0000);
    let n = 20 + rng.below(40) as usize;
    let mid = if rng.chance(0.5) {
        Some(5 + rng.below(n as u64 - 10) as usize)
    } else {
        None
    };
    let mut ids = vec![CLS];
    for k in 0..n {
        if Some(k) == mid {
            ids.push(SEP);
        } else {
            ids.push(learned(&mut rng));
        }
    }
    ids.push(SEP);
    ids.resize(LEN, PAD);
    ids
}

/// [`sample`] with about 15 % of its learned tokens already flagged as targets by an earlier
/// step (half of them showing `[MASK]`).
pub fn flagged_sample(seed: u64) -> Vec<u32> {
    let mut ids = sample(seed);
    let mut rng = Rng::new(seed ^ 0xF1A6);
    for x in ids.iter_mut() {
        if is_eligible(*x) && rng.chance(0.15) {
            *x = TARGET | if rng.chance(0.5) { MASK } else { *x };
        }
    }
    ids
}

/// Runs `aug` on `ids` (vocabulary [`VOCAB`]) with `seed`; panics on an error or when an
/// output position was left unwritten.
pub fn run<T: TokenAugmentation>(aug: &T, seed: u64, ids: &[u32]) -> Vec<u32> {
    testing::run_tokens(aug, seed, ids, VOCAB)
}

/// Checks that `aug` is deterministic per seed (on flagged samples) and that some seeds give
/// different outputs.
pub fn check_determinism<T: TokenAugmentation>(aug: &T) {
    let inputs: Vec<Vec<u32>> = (0..20).map(flagged_sample).collect();
    testing::check_token_determinism(aug, VOCAB, &inputs, &sample(3));
}

/// Checks that every wrong-length output is refused with an error.
pub fn check_length_mismatch<T: TokenAugmentation>(aug: &T) {
    let ids = sample(1);
    let mut out = vec![0u32; ids.len() - 1];
    let err = aug
        .apply(
            &mut Rng::new(0),
            TokenSeq {
                ids: &ids,
                vocab_size: VOCAB,
            },
            &mut out,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(T::NAME) && err.contains("63 tokens"),
        "{err}"
    );
}

/// Checks that sequences without eligible tokens (empty, all `[PAD]`, only specials) pass
/// through unchanged.
pub fn check_nothing_to_do<T: TokenAugmentation>(aug: &T) {
    for ids in [
        vec![],
        vec![PAD; 8],
        vec![CLS, SEP, PAD, PAD],
        vec![CLS, MASK | TARGET, SEP, PAD],
    ] {
        for seed in 0..5 {
            assert_eq!(run(aug, seed, &ids), ids, "{}", T::NAME);
        }
    }
}
