//! Test helpers: reproducible token sequences, creating an augmentation from parameters,
//! running it with a seed, and the crate's C ABI entry with a minimal host.

use std::ffi::c_void;
use std::sync::Once;

use pretext_plugin::abi::{PtxHost, PtxPluginInfo, PtxStr};
use pretext_plugin::tokens::{CLS, MASK, PAD, SEP, SPECIAL, TARGET};
use pretext_plugin::{Params, Rng, TokenAugmentation, TokenSeq, Value};

use crate::is_eligible;

/// Sequence length of the test sequences.
pub const LEN: usize = 64;
/// Vocabulary size of the test sequences (specials included).
pub const VOCAB: usize = 1000;
/// What the output buffer holds before `apply`; no valid output id equals it.
pub const UNWRITTEN: u32 = 0x7FFF_FFFF;

/// A float parameter value.
pub fn f(v: f64) -> Value {
    Value::Float(v)
}

/// An integer parameter value.
pub fn i(v: i64) -> Value {
    Value::Int(v)
}

/// Builds `T` from `entries` the way the host's `create` does (`new`, then `finish`); `Err`
/// holds the message.
pub fn create<T: TokenAugmentation>(entries: &[(&str, Value)]) -> Result<T, String> {
    let mut params = Params::new(
        T::NAME,
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    );
    let aug = T::new(&mut params).map_err(|e| e.to_string())?;
    params.finish().map_err(|e| e.to_string())?;
    Ok(aug)
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
    let mut out = vec![UNWRITTEN; ids.len()];
    aug.apply(
        &mut Rng::new(seed),
        TokenSeq {
            ids,
            vocab_size: VOCAB,
        },
        &mut out,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", T::NAME));
    assert!(
        !out.contains(&UNWRITTEN),
        "{}: output left unwritten: {out:?}",
        T::NAME
    );
    out
}

/// Checks that `aug` is deterministic per seed and that some seeds give different outputs.
pub fn check_determinism<T: TokenAugmentation>(aug: &T) {
    for s in 0..20 {
        let ids = flagged_sample(s);
        assert_eq!(
            run(aug, s, &ids),
            run(aug, s, &ids),
            "{}: same seed, different output",
            T::NAME
        );
    }
    let ids = sample(3);
    let first = run(aug, 100, &ids);
    assert!(
        (101..120).any(|s| run(aug, s, &ids) != first),
        "{}: every seed gave the same output",
        T::NAME
    );
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

static RESTORE_HOOK: Once = Once::new();

/// The plugin info from this crate's entry point.
///
/// The SDK replaces the process-wide panic hook the first time the entry (or any trampoline)
/// runs, which would hide the messages of failing tests in this test binary; the first call
/// here lets it do so and then restores the default hook (the SDK installs its hook once).
pub fn entry_info() -> &'static PtxPluginInfo {
    RESTORE_HOOK.call_once(|| {
        let _ = crate::pretext_plugin_entry();
        let _ = std::panic::take_hook();
    });
    let info = crate::pretext_plugin_entry();
    assert!(!info.is_null());
    // SAFETY: the entry returns a pointer to a 'static table.
    unsafe { &*info }
}

unsafe extern "C" fn ignore_log(_ctx: *mut c_void, _level: u32, _msg: PtxStr) {}

unsafe extern "C" fn store_error(ctx: *mut c_void, msg: PtxStr) {
    *(ctx as *mut String) = msg.as_str().to_string();
}

/// A host whose `set_error` stores the message in `err` (which must outlive every call made
/// with it) and which drops log lines.
pub fn host(err: &mut String) -> PtxHost {
    PtxHost {
        struct_size: std::mem::size_of::<PtxHost>() as u32,
        ctx: err as *mut String as *mut c_void,
        log: ignore_log,
        set_error: store_error,
    }
}
