//! Test helpers of this crate on top of the SDK's harness (`pretext_plugin::testing`, which
//! creates augmentations through this crate's exported C ABI, as the host does): small
//! hand-made images, statistics and the `p = 0` check that every augmentation here shares.

pub use pretext_plugin::testing::run_image as run;
use pretext_plugin::testing::Plugin;
pub use pretext_plugin::testing::{check_image_determinism as check_determinism, noise_image};
pub use pretext_plugin::Value;
use pretext_plugin::{Augmentation, ImageShape};

/// This crate, seen through its entry function.
pub fn plugin() -> Plugin {
    Plugin::new(crate::pretext_plugin_entry)
}

/// Creates `T` from `params` through the exported `create` function; `Err` holds the message
/// the plugin reported.
pub fn create<T: Augmentation>(params: &[(&str, Value)]) -> Result<T, String> {
    plugin().create_augmentation::<T>(params)
}

/// Creates `T` from `params`, panicking on an error.
pub fn make<T: Augmentation>(params: &[(&str, Value)]) -> T {
    create::<T>(params).unwrap_or_else(|e| panic!("{}: {e}", T::NAME))
}

pub fn shape(channels: usize, height: usize, width: usize) -> ImageShape {
    ImageShape {
        channels,
        height,
        width,
    }
}

/// Checks that `aug` with `p = 0` copies its input exactly.
pub fn check_p0_identity<T: Augmentation>(extra: &[(&str, Value)]) {
    let mut params = vec![("p", Value::Float(0.0))];
    params.extend(extra.iter().cloned());
    let aug = make::<T>(&params);
    let s = shape(3, 7, 5);
    let data = noise_image(s, 5);
    for seed in 0..10 {
        let (out_shape, out) = run(&aug, seed, s, &data);
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
