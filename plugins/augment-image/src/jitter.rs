//! `color_jitter`: random brightness and contrast changes, applied in random order, as the
//! brightness / contrast part of torchvision's `ColorJitter`.
//!
//! - brightness: every value is multiplied by a factor uniform in `[1 − b, 1 + b]`;
//! - contrast: every value is blended with the image's mean grey level,
//!   `f · v + (1 − f) · mean`, with `f` uniform in `[1 − c, 1 + c]`. The mean is that of the
//!   grayscale image (`0.299 R + 0.587 G + 0.114 B`, ITU-R BT.601; torchvision uses 0.2989
//!   for red, whose weights then sum to 0.9999 and darken a grey image slightly) for 3
//!   channels, of the single channel for 1, and of all values for any other channel count.
//!
//! The result is clamped to `[0, 1]` after each of the two steps.

use pretext_plugin::{Augmentation, Image, ImageMut, Params, Result, Rng};

use crate::{check_shapes, copy, read_p};

/// BT.601 luma weights (they sum to 1, so a grey image is its own grey level).
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// Random brightness and contrast, in random order.
#[derive(Debug, Clone)]
pub struct ColorJitter {
    brightness: f64,
    contrast: f64,
    p: f64,
}

/// The random choices of one application.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Jitter {
    pub brightness_first: bool,
    pub brightness: f32,
    pub contrast: f32,
}

impl ColorJitter {
    /// Draws the order and the two factors (always all three draws, so the stream does not
    /// depend on the parameters).
    pub(crate) fn sample(&self, rng: &mut Rng) -> Jitter {
        let brightness_first = rng.chance(0.5);
        let brightness = rng.range(1.0 - self.brightness, 1.0 + self.brightness) as f32;
        let contrast = rng.range(1.0 - self.contrast, 1.0 + self.contrast) as f32;
        Jitter {
            brightness_first,
            brightness,
            contrast,
        }
    }
}

/// The mean grey level of a CHW image (see the module docs).
fn grey_mean(data: &[f32], channels: usize) -> f32 {
    if data.is_empty() {
        return 0.0;
    }
    let plane = data.len() / channels;
    let sum: f64 = if channels == 3 {
        (0..plane)
            .map(|i| (0..3).map(|c| LUMA[c] * data[c * plane + i]).sum::<f32>() as f64)
            .sum()
    } else {
        data.iter().map(|&v| v as f64).sum()
    };
    let n = if channels == 3 { plane } else { data.len() };
    (sum / n as f64) as f32
}

/// Multiplies every value by `factor`, clamped.
fn adjust_brightness(data: &mut [f32], factor: f32) {
    for v in data {
        *v = (*v * factor).clamp(0.0, 1.0);
    }
}

/// Blends every value with the mean grey level: `factor · v + (1 − factor) · mean`, clamped.
fn adjust_contrast(data: &mut [f32], channels: usize, factor: f32) {
    let mean = grey_mean(data, channels);
    for v in data {
        *v = (factor * *v + (1.0 - factor) * mean).clamp(0.0, 1.0);
    }
}

/// Writes `input` jittered by `j` into `output` (same shape).
pub(crate) fn jitter_with(input: &Image, output: &mut ImageMut, j: Jitter) {
    copy(input, output);
    let channels = input.shape.channels;
    if j.brightness_first {
        adjust_brightness(output.data, j.brightness);
        adjust_contrast(output.data, channels, j.contrast);
    } else {
        adjust_contrast(output.data, channels, j.contrast);
        adjust_brightness(output.data, j.brightness);
    }
}

impl Augmentation for ColorJitter {
    const NAME: &'static str = "color_jitter";
    const SUMMARY: &'static str =
        "random brightness and contrast, in random order (torchvision ColorJitter)";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `brightness` | float in [0, 1] | 0.4 | values are multiplied by a factor uniform in [1 - brightness, 1 + brightness] |
| `contrast` | float in [0, 1] | 0.4 | values are blended with the mean grey level by a factor uniform in [1 - contrast, 1 + contrast] |
| `p` | float in [0, 1] | 0.8 | probability of jittering |
";

    fn new(params: &mut Params) -> Result<Self> {
        let brightness = params.f64_in("brightness", 0.4, 0.0, 1.0)?;
        let contrast = params.f64_in("contrast", 0.4, 0.0, 1.0)?;
        let p = read_p(params, 0.8)?;
        Ok(ColorJitter {
            brightness,
            contrast,
            p,
        })
    }

    fn apply(&self, rng: &mut Rng, input: Image, mut output: ImageMut) -> Result<()> {
        check_shapes(Self::NAME, &input, &output, input.shape)?;
        if rng.chance(self.p) {
            let j = self.sample(rng);
            jitter_with(&input, &mut output, j);
        } else {
            copy(&input, &mut output);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        check_determinism, check_p0_identity, create, make, noise_image, run, shape, Value,
    };
    use pretext_plugin::ImageShape;

    fn jittered(s: ImageShape, data: &[f32], j: Jitter) -> Vec<f32> {
        let mut out = vec![f32::NAN; s.len()];
        jitter_with(
            &Image { shape: s, data },
            &mut ImageMut {
                shape: s,
                data: &mut out,
            },
            j,
        );
        out
    }

    #[test]
    fn brightness_on_a_constant_image() {
        let aug = make::<ColorJitter>(&[("p", Value::Float(1.0)), ("contrast", Value::Float(0.0))]);
        let s = shape(3, 4, 5);
        let data = vec![0.5f32; s.len()];
        for seed in 0..20 {
            // Replay the draws: `p`, then order and factors.
            let mut rng = Rng::new(seed);
            assert!(rng.chance(1.0));
            let j = aug.sample(&mut rng);
            assert_eq!(j.contrast, 1.0);
            assert!((0.6..=1.4).contains(&j.brightness), "{j:?}");
            let (_, out) = run(&aug, seed, s, &data);
            let want = (0.5 * j.brightness).clamp(0.0, 1.0);
            assert!(
                out.iter().all(|&v| v == want),
                "seed {seed}: {:?} vs {want}",
                &out[..3]
            );
        }
        // Clamping: 0.8 * 1.4 > 1.
        let j = Jitter {
            brightness_first: true,
            brightness: 1.4,
            contrast: 1.0,
        };
        assert!(jittered(s, &vec![0.8; s.len()], j)
            .iter()
            .all(|&v| v == 1.0));
    }

    #[test]
    fn contrast_blends_with_the_grey_mean() {
        // A constant image is its own mean: contrast leaves it unchanged.
        let s = shape(3, 2, 2);
        let j = Jitter {
            brightness_first: false,
            brightness: 1.0,
            contrast: 0.3,
        };
        let out = jittered(s, &[0.4; 12], j);
        assert!(out.iter().all(|&v| (v - 0.4).abs() < 1e-6), "{out:?}");
        // RGB: red plane 1, green and blue 0 → grey mean 0.299; factor 0.5 halves the
        // distance of every value to it.
        let mut data = vec![0.0f32; 12];
        data[..4].fill(1.0);
        let j = Jitter {
            brightness_first: true,
            brightness: 1.0,
            contrast: 0.5,
        };
        let out = jittered(s, &data, j);
        let m = 0.299f32;
        let want_r = 0.5 + 0.5 * m;
        let want_gb = 0.5 * m;
        assert!(
            out[..4].iter().all(|&v| (v - want_r).abs() < 1e-6),
            "{out:?}"
        );
        assert!(
            out[4..].iter().all(|&v| (v - want_gb).abs() < 1e-6),
            "{out:?}"
        );
        // Grayscale: the channel's own mean.
        let g = shape(1, 1, 4);
        let out = jittered(g, &[0.0, 0.2, 0.4, 0.6], Jitter { contrast: 0.0, ..j });
        assert!(out.iter().all(|&v| (v - 0.3).abs() < 1e-6), "{out:?}");
    }

    #[test]
    fn order_matters_when_clamping() {
        // Contrast 2 pushes 0.9 (mean 0.5) to 1.3 → clamped 1; brightness 0.5 then gives 0.5.
        // The other order: 0.45 (mean 0.25) → 0.65.
        let s = shape(1, 1, 2);
        let data = [0.1, 0.9];
        let b_first = Jitter {
            brightness_first: true,
            brightness: 0.5,
            contrast: 2.0,
        };
        let c_first = Jitter {
            brightness_first: false,
            ..b_first
        };
        let a = jittered(s, &data, b_first);
        let b = jittered(s, &data, c_first);
        assert!((a[1] - 0.65).abs() < 1e-6, "{a:?}");
        assert!((b[1] - 0.5).abs() < 1e-6, "{b:?}");
    }

    #[test]
    fn deterministic_and_p_zero() {
        let aug = make::<ColorJitter>(&[("p", Value::Float(1.0))]);
        let s = shape(3, 6, 6);
        check_determinism(&aug, s, &noise_image(s, 13), true);
        check_p0_identity::<ColorJitter>(&[]);
    }

    #[test]
    fn parameter_errors() {
        let err = create::<ColorJitter>(&[("brightness", Value::Float(1.5))])
            .err()
            .unwrap();
        assert!(
            err.contains("color_jitter: parameter `brightness` = 1.5 is out of range"),
            "{err}"
        );
        let err = create::<ColorJitter>(&[("contrast", Value::Float(-0.1))])
            .err()
            .unwrap();
        assert!(err.contains("`contrast` = -0.1 is out of range"), "{err}");
        let err = create::<ColorJitter>(&[("contrats", Value::Float(0.1))])
            .err()
            .unwrap();
        assert!(err.contains("did you mean `contrast`"), "{err}");
    }
}
