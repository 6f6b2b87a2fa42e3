//! Test helpers: small hand-made images, running an augmentation with a seed, and creating
//! an augmentation from parameters.
//!
//! The SDK does not export its parameter value type, so a `Params` holding values can only
//! be built by the SDK itself; [`create`] therefore goes through this crate's exported C ABI
//! (the `create` trampoline, which also calls `Params::finish`), exactly as the host does.

use std::ffi::c_void;
use std::sync::Once;

use pretext_plugin::abi::{self, PtxAugmentEntry, PtxHost, PtxParam, PtxPluginInfo, PtxStr};
use pretext_plugin::{Augmentation, Image, ImageMut, ImageShape, Rng};

/// A parameter value for [`create`].
#[derive(Debug, Clone)]
pub enum Val {
    F(f64),
    I(i64),
    L(Vec<f64>),
    S(&'static str),
}

static RESTORE_HOOK: Once = Once::new();

/// The plugin info from this crate's entry point.
///
/// The SDK replaces the process-wide panic hook the first time the entry (or any
/// trampoline) runs, which would hide the messages of failing tests in this test binary; the
/// first call here lets it do so and then restores the default hook (the SDK installs its hook
/// only once).
pub fn entry_info() -> &'static PtxPluginInfo {
    RESTORE_HOOK.call_once(|| {
        let _ = crate::pretext_plugin_entry();
        let _ = std::panic::take_hook();
    });
    // SAFETY: the entry returns a pointer to a 'static table (null only if building it
    // panicked, which the assert catches).
    let info = crate::pretext_plugin_entry();
    assert!(!info.is_null());
    unsafe { &*info }
}

fn entry_of<T: Augmentation>() -> &'static PtxAugmentEntry {
    let info = entry_info();
    // SAFETY: the table and its names are 'static data of this crate.
    let table = unsafe { std::slice::from_raw_parts(info.augmentations, info.n_augmentations) };
    table
        .iter()
        .find(|e| unsafe { e.name.as_str() } == T::NAME)
        .unwrap_or_else(|| panic!("`{}` is not exported", T::NAME))
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

/// Creates `T` from `params` through the exported `create` function; `Err` holds the message
/// the plugin reported.
pub fn create<T: Augmentation>(params: &[(&str, Val)]) -> Result<Box<T>, String> {
    let entry = entry_of::<T>();
    let raw: Vec<PtxParam> = params
        .iter()
        .map(|(key, val)| {
            let mut p = PtxParam {
                key: PtxStr::borrowed(key),
                kind: abi::PARAM_FLOAT,
                b: 0,
                i: 0,
                f: 0.0,
                s: PtxStr::borrowed(""),
                list: std::ptr::null(),
                list_len: 0,
            };
            match val {
                Val::F(f) => p.f = *f,
                Val::I(i) => (p.kind, p.i) = (abi::PARAM_INT, *i),
                Val::L(l) => {
                    (p.kind, p.list, p.list_len) = (abi::PARAM_FLOAT_LIST, l.as_ptr(), l.len())
                }
                Val::S(s) => (p.kind, p.s) = (abi::PARAM_STR, PtxStr::borrowed(s)),
            }
            p
        })
        .collect();
    let mut err = String::new();
    let host = host(&mut err);
    let mut inst: *mut c_void = std::ptr::null_mut();
    // SAFETY: `raw` and the strings and lists it points to outlive the call; `host.ctx` is a
    // live `String`.
    let rc = unsafe { (entry.create)(&host, raw.as_ptr(), raw.len(), &mut inst) };
    if rc == abi::PTX_OK {
        // SAFETY: the entry named `T::NAME` is `augment_entry::<T>()`, whose `create` boxes a
        // `T`; ownership passes to the returned box.
        Ok(unsafe { Box::from_raw(inst as *mut T) })
    } else {
        Err(err)
    }
}

/// Creates `T` from `params`, panicking on an error.
pub fn make<T: Augmentation>(params: &[(&str, Val)]) -> Box<T> {
    create::<T>(params).unwrap_or_else(|e| panic!("{}: {e}", T::NAME))
}

pub fn shape(channels: usize, height: usize, width: usize) -> ImageShape {
    ImageShape {
        channels,
        height,
        width,
    }
}

/// A reproducible image of uniform random values.
pub fn noise_image(s: ImageShape, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..s.len()).map(|_| rng.uniform() as f32).collect()
}

/// Runs `aug` on `data` with `seed`; the output starts as NaN so unwritten values show.
pub fn run<T: Augmentation>(
    aug: &T,
    seed: u64,
    s: ImageShape,
    data: &[f32],
) -> (ImageShape, Vec<f32>) {
    let out_shape = aug.output_shape(s).unwrap();
    let mut out = vec![f32::NAN; out_shape.len()];
    aug.apply(
        &mut Rng::new(seed),
        Image { shape: s, data },
        ImageMut {
            shape: out_shape,
            data: &mut out,
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", T::NAME));
    (out_shape, out)
}

/// Checks that `aug` is deterministic per seed and (when `random`) that some seeds differ.
pub fn check_determinism<T: Augmentation>(aug: &T, s: ImageShape, data: &[f32], random: bool) {
    let a = run(aug, 11, s, data).1;
    let b = run(aug, 11, s, data).1;
    assert_eq!(a, b, "{}: same seed, different output", T::NAME);
    if random {
        let differs = (12..20).any(|seed| run(aug, seed, s, data).1 != a);
        assert!(differs, "{}: every seed gave the same output", T::NAME);
    }
}

/// Checks that `aug` with `p = 0` copies its input exactly.
pub fn check_p0_identity<T: Augmentation>(extra: &[(&str, Val)]) {
    let mut params = vec![("p", Val::F(0.0))];
    params.extend(extra.iter().cloned());
    let aug = make::<T>(&params);
    let s = shape(3, 7, 5);
    let data = noise_image(s, 5);
    for seed in 0..10 {
        let (out_shape, out) = run(&*aug, seed, s, &data);
        assert_eq!(out_shape, s);
        assert_eq!(out, data, "{}: p = 0 changed the image", T::NAME);
    }
}

/// Mean and (population) variance.
pub fn mean_var(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
    (m, var)
}
