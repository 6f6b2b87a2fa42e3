//! `pretext-augment-image`: the standard image augmentations of self-supervised learning
//! (SimCLR / BYOL style views) as a pretext plugin.
//!
//! Every augmentation works on `f32` CHW images with values in `[0, 1]`, draws all of its
//! randomness from the per-sample [`Rng`](pretext_plugin::Rng) the host hands it (so results
//! are reproducible and independent of thread scheduling), and has a `p` parameter: the
//! probability of applying it. When it is not applied the input is copied to the output
//! unchanged (for `random_resized_crop` with a `size` that differs from the input, the whole
//! image is resized instead, so the output shape stays fixed).
//!
//! | name | what it does |
//! |---|---|
//! | `random_resized_crop` | crop a random area / aspect ratio, resize it (bilinear) |
//! | `horizontal_flip` | mirror left to right |
//! | `rotate` | rotate by a uniform random angle about the centre (bilinear) |
//! | `gaussian_noise` | add N(0, std²) per value |
//! | `gaussian_blur` | separable Gaussian blur with a random sigma, reflected edges |
//! | `color_jitter` | random brightness and contrast, in random order |
//! | `cutout` | fill a square at a random centre |

use pretext_plugin::{Error, Image, ImageMut, ImageShape, Params, Result};

mod blur;
mod crop;
mod cutout;
mod flip;
mod jitter;
mod noise;
mod rotate;
#[cfg(test)]
mod testutil;

pub use blur::GaussianBlur;
pub use crop::RandomResizedCrop;
pub use cutout::Cutout;
pub use flip::HorizontalFlip;
pub use jitter::ColorJitter;
pub use noise::GaussianNoise;
pub use rotate::Rotate;

pretext_plugin::export_plugin! {
    name: "pretext-augment-image",
    objectives: [],
    augmentations: [
        RandomResizedCrop,
        HorizontalFlip,
        Rotate,
        GaussianNoise,
        GaussianBlur,
        ColorJitter,
        Cutout,
    ],
}

/// Reads the probability parameter `p` (in `[0, 1]`).
pub(crate) fn read_p(params: &mut Params, default: f64) -> Result<f64> {
    params.f64_in("p", default, 0.0, 1.0)
}

/// How a `[lo, hi]` range parameter is read and validated by [`read_range`].
pub(crate) struct RangeSpec {
    /// The augmentation's name, for error messages.
    pub owner: &'static str,
    pub key: &'static str,
    pub default: [f64; 2],
    /// Smallest allowed value of `lo`.
    pub min: f64,
    /// Whether `lo` must be strictly greater than `min`.
    pub min_exclusive: bool,
    /// Largest allowed value of `hi`.
    pub max: f64,
}

/// Reads a `[lo, hi]` parameter: exactly two finite numbers with `lo <= hi`, inside the
/// bounds of `spec`.
pub(crate) fn read_range(params: &mut Params, spec: &RangeSpec) -> Result<(f64, f64)> {
    let RangeSpec {
        owner,
        key,
        min,
        max,
        ..
    } = *spec;
    let v = params.f64_list(key, &spec.default)?;
    if v.len() != 2 {
        return Err(Error::msg(format!(
            "{owner}: parameter `{key}` must be a list of two numbers [lo, hi], \
             but it has {} value(s)",
            v.len()
        )));
    }
    let (lo, hi) = (v[0], v[1]);
    if !lo.is_finite() || !hi.is_finite() {
        return Err(Error::msg(format!(
            "{owner}: parameter `{key}` = [{lo}, {hi}] must hold finite numbers"
        )));
    }
    if lo > hi {
        return Err(Error::msg(format!(
            "{owner}: parameter `{key}` = [{lo}, {hi}] must have lo <= hi"
        )));
    }
    let lo_ok = if spec.min_exclusive {
        lo > min
    } else {
        lo >= min
    };
    if !lo_ok || hi > max {
        let open = if spec.min_exclusive { "(" } else { "[" };
        let close = if max.is_finite() {
            format!("{max}]")
        } else {
            "∞)".to_string()
        };
        return Err(Error::msg(format!(
            "{owner}: parameter `{key}` = [{lo}, {hi}] is out of range: both ends must lie in \
             {open}{min}, {close}"
        )));
    }
    Ok((lo, hi))
}

/// Checks that the buffers match their shapes and that `output` has the `expected` shape.
pub(crate) fn check_shapes(
    owner: &str,
    input: &Image,
    output: &ImageMut,
    expected: ImageShape,
) -> Result<()> {
    if input.data.len() != input.shape.len() {
        return Err(Error::msg(format!(
            "{owner}: input buffer holds {} values but its shape {:?} needs {}",
            input.data.len(),
            input.shape,
            input.shape.len()
        )));
    }
    if output.shape != expected || output.data.len() != expected.len() {
        return Err(Error::msg(format!(
            "{owner}: output has shape {:?} ({} values) but {:?} was expected for input {:?}",
            output.shape,
            output.data.len(),
            expected,
            input.shape
        )));
    }
    Ok(())
}

/// Copies `input` to `output` (same shape), the "not applied" case.
pub(crate) fn copy(input: &Image, output: &mut ImageMut) {
    output.data.copy_from_slice(input.data);
}

/// Sine and cosine of `radians`, with values within rounding of 0 or ±1 snapped to them, so
/// rotations by multiples of 90° map pixel centres exactly onto pixel centres.
pub(crate) fn sin_cos_snapped(radians: f64) -> (f64, f64) {
    let snap = |v: f64| {
        let r = v.round();
        if (v - r).abs() < 1e-12 {
            r
        } else {
            v
        }
    };
    let (s, c) = radians.sin_cos();
    (snap(s), snap(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{create, plugin, shape, Value};
    use pretext_plugin::abi;
    use pretext_plugin::testing::{AugmentationInstance, Buffer};
    use pretext_plugin::Augmentation;

    const NAMES: [&str; 7] = [
        "random_resized_crop",
        "horizontal_flip",
        "rotate",
        "gaussian_noise",
        "gaussian_blur",
        "color_jitter",
        "cutout",
    ];

    #[test]
    fn entry_reports_abi_version_and_all_augmentations() {
        let plugin = plugin();
        let info = plugin.info();
        // The entry is built once: a second call returns the same table.
        assert_eq!(pretext_plugin_entry(), info as *const _);
        assert_eq!(info.abi_version, abi::ABI_VERSION);
        assert_eq!(
            info.struct_size as usize,
            std::mem::size_of::<abi::PtxPluginInfo>()
        );
        assert_eq!(plugin.name(), "pretext-augment-image");
        assert_eq!(plugin.version(), env!("CARGO_PKG_VERSION"));
        assert_eq!(plugin.sdk_version(), pretext_plugin::SDK_VERSION);
        assert_eq!(info.n_objectives, 0);
        assert_eq!(info.n_augmentations, 7);
        assert_eq!(plugin.augmentation_names(), NAMES);
        // SAFETY: the strings point to 'static data of this crate.
        unsafe {
            for a in plugin.augmentations() {
                assert_eq!(a.modality, abi::MODALITY_IMAGE);
                assert!(!a.summary.as_str().is_empty(), "{}", a.name.as_str());
                let doc = a.params_doc.as_str();
                assert!(
                    doc.starts_with("| key | type | default | meaning |"),
                    "{doc}"
                );
                assert!(doc.contains("| `p` |"), "{}: no `p` row", a.name.as_str());
            }
        }
    }

    #[test]
    fn abi_output_shape_apply_and_destroy() {
        let crop = plugin().augmentation("random_resized_crop");
        let inst = AugmentationInstance::create(crop, &[("size", Value::Int(4))])
            .unwrap_or_else(|f| panic!("{f}"));
        let mut input = vec![0.5f32; 3 * 8 * 6];
        let ib = Buffer::image(shape(3, 8, 6), &mut input);
        let ob = inst.output_shape(&ib).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!((ob.rank, ob.shape), (3, [3, 4, 4, 0]));
        let mut output = vec![f32::NAN; 3 * 4 * 4];
        inst.apply(7, &ib, &mut Buffer::image(shape(3, 4, 4), &mut output))
            .unwrap_or_else(|f| panic!("{f}"));
        assert!(output.iter().all(|&v| (v - 0.5).abs() < 1e-6), "{output:?}");
        // A wrongly sized output is an error, not a panic or an out-of-bounds write.
        let mut big = vec![0.0f32; 3 * 5 * 4];
        let err = inst
            .apply(7, &ib, &mut Buffer::image(shape(3, 5, 4), &mut big))
            .unwrap_err();
        assert_eq!(err.code, abi::PTX_ERROR);
        assert!(err.message.contains("output has shape"), "{err}");
        // Dropping the instance calls the exported `destroy`.
        drop(inst);
    }

    #[test]
    fn unknown_keys_are_rejected_with_a_suggestion() {
        let err = create::<Rotate>(&[("degres", Value::Float(10.0))])
            .err()
            .unwrap();
        assert!(
            err.contains("unknown parameter `degres` (did you mean `degrees`?)"),
            "{err}"
        );
        // The same check done by hand, as the trampoline does after `new`.
        let mut params = Params::new(Cutout::NAME, Vec::new());
        Cutout::new(&mut params).unwrap();
        params.finish().unwrap();
    }

    #[test]
    fn every_augmentation_builds_from_defaults() {
        fn defaults<T: Augmentation>() {
            let mut params = Params::new(T::NAME, Vec::new());
            T::new(&mut params).unwrap_or_else(|e| panic!("{}: {e}", T::NAME));
            params.finish().unwrap();
        }
        defaults::<RandomResizedCrop>();
        defaults::<HorizontalFlip>();
        defaults::<Rotate>();
        defaults::<GaussianNoise>();
        defaults::<GaussianBlur>();
        defaults::<ColorJitter>();
        defaults::<Cutout>();
    }

    #[test]
    fn p_out_of_range_is_rejected_everywhere() {
        fn bad_p<T: Augmentation>() {
            let err = create::<T>(&[("p", Value::Float(1.5))]).err().unwrap();
            assert!(
                err.contains("`p` = 1.5 is out of range"),
                "{}: {err}",
                T::NAME
            );
        }
        bad_p::<RandomResizedCrop>();
        bad_p::<HorizontalFlip>();
        bad_p::<Rotate>();
        bad_p::<GaussianNoise>();
        bad_p::<GaussianBlur>();
        bad_p::<ColorJitter>();
        bad_p::<Cutout>();
    }

    #[test]
    fn range_parameters_are_validated() {
        let err = create::<RandomResizedCrop>(&[("scale", Value::FloatList(vec![0.5]))])
            .err()
            .unwrap();
        assert!(err.contains("must be a list of two numbers"), "{err}");
        let err = create::<RandomResizedCrop>(&[("scale", Value::FloatList(vec![0.8, 0.5]))])
            .err()
            .unwrap();
        assert!(err.contains("lo <= hi"), "{err}");
        let err = create::<RandomResizedCrop>(&[("scale", Value::FloatList(vec![0.0, 0.5]))])
            .err()
            .unwrap();
        assert!(
            err.contains("out of range") && err.contains("(0, 1]"),
            "{err}"
        );
        let err = create::<RandomResizedCrop>(&[("scale", Value::Str("big".into()))])
            .err()
            .unwrap();
        assert!(err.contains("must be a list of numbers"), "{err}");
        create::<RandomResizedCrop>(&[("scale", Value::FloatList(vec![0.08, 1.0]))]).unwrap();
    }

    #[test]
    fn snapped_sin_cos_is_exact_at_right_angles() {
        use std::f64::consts::{FRAC_PI_2, PI};
        assert_eq!(sin_cos_snapped(FRAC_PI_2), (1.0, 0.0));
        assert_eq!(sin_cos_snapped(PI), (0.0, -1.0));
        assert_eq!(sin_cos_snapped(-FRAC_PI_2), (-1.0, 0.0));
        let (s, c) = sin_cos_snapped(0.3);
        assert_eq!((s, c), 0.3f64.sin_cos());
    }
}
