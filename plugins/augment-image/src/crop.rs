//! `random_resized_crop`: crop a random area and aspect ratio of the image and resize it to a
//! fixed size, as torchvision's `RandomResizedCrop` (without antialiasing).

use pretext_plugin::{Augmentation, Error, Image, ImageMut, ImageShape, Params, Result, Rng};

use crate::{check_shapes, read_p, read_range, RangeSpec};

/// How many times to sample an area and aspect ratio that fit before using the centre crop.
const ATTEMPTS: usize = 10;

/// Crop a random area fraction (`scale`) with a random aspect ratio (`ratio`, sampled
/// log-uniformly), then resize it bilinearly to `size × size`.
#[derive(Debug, Clone)]
pub struct RandomResizedCrop {
    size: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    p: f64,
}

/// A crop window in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

impl RandomResizedCrop {
    /// Samples the crop window for an `h × w` image (torchvision's `get_params`): up to
    /// [`ATTEMPTS`] tries of area `scale · h · w` and log-uniform aspect ratio `w / h`, else
    /// the centre crop with the aspect ratio clamped into `ratio`.
    pub(crate) fn sample_window(&self, rng: &mut Rng, h: usize, w: usize) -> Window {
        let area = (h * w) as f64;
        let (log_lo, log_hi) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..ATTEMPTS {
            let target = area * rng.range(self.scale.0, self.scale.1);
            let aspect = rng.range(log_lo, log_hi).exp();
            let cw = (target * aspect).sqrt().round() as usize;
            let ch = (target / aspect).sqrt().round() as usize;
            if cw >= 1 && ch >= 1 && cw <= w && ch <= h {
                let top = rng.below((h - ch + 1) as u64) as usize;
                let left = rng.below((w - cw + 1) as u64) as usize;
                return Window {
                    top,
                    left,
                    height: ch,
                    width: cw,
                };
            }
        }
        self.centre_window(h, w)
    }

    /// The fallback: the largest centred window whose aspect ratio lies in `ratio`.
    fn centre_window(&self, h: usize, w: usize) -> Window {
        let in_ratio = w as f64 / h as f64;
        let (ch, cw) = if in_ratio < self.ratio.0 {
            (((w as f64 / self.ratio.0).round() as usize).clamp(1, h), w)
        } else if in_ratio > self.ratio.1 {
            (h, ((h as f64 * self.ratio.1).round() as usize).clamp(1, w))
        } else {
            (h, w)
        };
        Window {
            top: (h - ch) / 2,
            left: (w - cw) / 2,
            height: ch,
            width: cw,
        }
    }
}

/// Resizes `window` of `input` to the whole of `output` with bilinear sampling.
///
/// Output pixel centres map to `src = (dst + 0.5) · (crop / out) − 0.5 + offset` (half-pixel
/// alignment, `align_corners = False`), clamped to the window so edge pixels are repeated
/// rather than mixed with pixels outside the crop. A window of the output's size is copied
/// exactly.
pub(crate) fn resize_window(input: &Image, window: Window, output: &mut ImageMut) {
    let ImageShape {
        channels,
        height: oh,
        width: ow,
    } = output.shape;
    let map = |dst: usize, crop: usize, out: usize, offset: usize| -> f64 {
        let src = (dst as f64 + 0.5) * (crop as f64 / out as f64) - 0.5;
        src.clamp(0.0, (crop - 1) as f64) + offset as f64
    };
    let xs: Vec<f64> = (0..ow)
        .map(|x| map(x, window.width, ow, window.left))
        .collect();
    for y in 0..oh {
        let sy = map(y, window.height, oh, window.top);
        for c in 0..channels {
            for (x, &sx) in xs.iter().enumerate() {
                output.set(c, y, x, input.bilinear(c, sy, sx, 0.0).clamp(0.0, 1.0));
            }
        }
    }
}

impl Augmentation for RandomResizedCrop {
    const NAME: &'static str = "random_resized_crop";
    const SUMMARY: &'static str =
        "crop a random area and aspect ratio, resize it bilinearly (torchvision RandomResizedCrop)";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `size` | int ≥ 0 | 0 | side of the square output; 0 keeps the input's height and width |
| `scale` | [lo, hi] in (0, 1] | [0.2, 1.0] | range of the crop's area as a fraction of the image's |
| `ratio` | [lo, hi], lo > 0 | [0.75, 1.3333] | range of the crop's aspect ratio (width / height), sampled log-uniformly |
| `p` | float in [0, 1] | 1.0 | probability of cropping; otherwise the whole image is resized to the output size |
";

    fn new(params: &mut Params) -> Result<Self> {
        let size = params.usize("size", 0)?;
        let scale = read_range(
            params,
            &RangeSpec {
                owner: Self::NAME,
                key: "scale",
                default: [0.2, 1.0],
                min: 0.0,
                min_exclusive: true,
                max: 1.0,
            },
        )?;
        let ratio = read_range(
            params,
            &RangeSpec {
                owner: Self::NAME,
                key: "ratio",
                default: [0.75, 1.3333],
                min: 0.0,
                min_exclusive: true,
                max: f64::INFINITY,
            },
        )?;
        let p = read_p(params, 1.0)?;
        Ok(RandomResizedCrop {
            size,
            scale,
            ratio,
            p,
        })
    }

    fn output_shape(&self, input: ImageShape) -> Result<ImageShape> {
        if input.height == 0 || input.width == 0 {
            return Err(Error::msg(format!(
                "{}: cannot crop an empty image {input:?}",
                Self::NAME
            )));
        }
        if self.size == 0 {
            Ok(input)
        } else {
            Ok(ImageShape {
                channels: input.channels,
                height: self.size,
                width: self.size,
            })
        }
    }

    fn apply(&self, rng: &mut Rng, input: Image, mut output: ImageMut) -> Result<()> {
        check_shapes(Self::NAME, &input, &output, self.output_shape(input.shape)?)?;
        let (h, w) = (input.shape.height, input.shape.width);
        let window = if rng.chance(self.p) {
            self.sample_window(rng, h, w)
        } else {
            Window {
                top: 0,
                left: 0,
                height: h,
                width: w,
            }
        };
        resize_window(&input, window, &mut output);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        check_determinism, check_p0_identity, create, make, noise_image, run, shape, Value,
    };

    #[test]
    fn output_shape_and_value_range() {
        let aug = make::<RandomResizedCrop>(&[("size", Value::Int(5))]);
        let s = shape(3, 9, 12);
        let data = noise_image(s, 1);
        for seed in 0..50 {
            let (os, out) = run(&aug, seed, s, &data);
            assert_eq!(os, shape(3, 5, 5));
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)), "{out:?}");
        }
        // size = 0 keeps the input's shape.
        let aug = make::<RandomResizedCrop>(&[]);
        assert_eq!(aug.output_shape(s).unwrap(), s);
        assert!(aug.output_shape(shape(3, 0, 4)).is_err());
    }

    #[test]
    fn deterministic_per_seed() {
        let aug = make::<RandomResizedCrop>(&[("size", Value::Int(6))]);
        let s = shape(2, 10, 10);
        check_determinism(&aug, s, &noise_image(s, 2), true);
    }

    #[test]
    fn p_zero_is_identity() {
        check_p0_identity::<RandomResizedCrop>(&[]);
    }

    #[test]
    fn full_scale_square_crop_is_identity() {
        let aug = make::<RandomResizedCrop>(&[
            ("scale", Value::FloatList(vec![1.0, 1.0])),
            ("ratio", Value::FloatList(vec![1.0, 1.0])),
        ]);
        let s = shape(3, 8, 8);
        let data = noise_image(s, 3);
        for seed in 0..5 {
            assert_eq!(run(&aug, seed, s, &data).1, data);
        }
        // The same with an explicit size equal to the input's.
        let aug = make::<RandomResizedCrop>(&[
            ("size", Value::Int(8)),
            ("scale", Value::FloatList(vec![1.0, 1.0])),
            ("ratio", Value::FloatList(vec![1.0, 1.0])),
        ]);
        assert_eq!(run(&aug, 0, s, &data).1, data);
    }

    #[test]
    fn windows_fit_and_follow_scale_and_ratio() {
        let aug = make::<RandomResizedCrop>(&[("scale", Value::FloatList(vec![0.25, 0.5]))]);
        let (h, w) = (40, 60);
        let mut rng = Rng::new(9);
        for _ in 0..200 {
            let win = aug.sample_window(&mut rng, h, w);
            assert!(
                win.top + win.height <= h && win.left + win.width <= w,
                "{win:?}"
            );
            let frac = (win.height * win.width) as f64 / (h * w) as f64;
            assert!((0.2..=0.56).contains(&frac), "{win:?} {frac}");
            let aspect = win.width as f64 / win.height as f64;
            assert!((0.65..=1.5).contains(&aspect), "{win:?} {aspect}");
        }
    }

    #[test]
    fn impossible_ratio_falls_back_to_the_centre_crop() {
        // At full area no aspect ratio far from the image's fits: the fallback clamps the
        // aspect ratio into `ratio` and centres the crop.
        let wide = make::<RandomResizedCrop>(&[
            ("scale", Value::FloatList(vec![1.0, 1.0])),
            ("ratio", Value::FloatList(vec![4.0, 4.0])),
        ]);
        let win = wide.sample_window(&mut Rng::new(1), 12, 12);
        assert_eq!(
            win,
            Window {
                top: 4,
                left: 0,
                height: 3,
                width: 12
            }
        );
        let win = wide.sample_window(&mut Rng::new(1), 10, 4);
        assert_eq!(
            win,
            Window {
                top: 4,
                left: 0,
                height: 1,
                width: 4
            }
        );
        let tall = make::<RandomResizedCrop>(&[
            ("scale", Value::FloatList(vec![1.0, 1.0])),
            ("ratio", Value::FloatList(vec![0.5, 0.5])),
        ]);
        let win = tall.sample_window(&mut Rng::new(1), 4, 12);
        assert_eq!(
            win,
            Window {
                top: 0,
                left: 5,
                height: 4,
                width: 2
            }
        );
    }

    #[test]
    fn resize_of_a_known_window() {
        // Downscaling a 1 x 4 x 4 window to 2 x 2 samples at the centres of 2 x 2 blocks:
        // src = (dst + 0.5) * 2 - 0.5 = 0.5, 2.5 → the average of each block.
        let s = shape(1, 4, 4);
        let data: Vec<f32> = (0..16).map(|i| i as f32 / 16.0).collect();
        let mut out = vec![0.0; 4];
        let win = Window {
            top: 0,
            left: 0,
            height: 4,
            width: 4,
        };
        resize_window(
            &Image {
                shape: s,
                data: &data,
            },
            win,
            &mut ImageMut {
                shape: shape(1, 2, 2),
                data: &mut out,
            },
        );
        let block = |y: usize, x: usize| {
            let i = |yy: usize, xx: usize| data[yy * 4 + xx];
            (i(y, x) + i(y, x + 1) + i(y + 1, x) + i(y + 1, x + 1)) / 4.0
        };
        let want = [block(0, 0), block(0, 2), block(2, 0), block(2, 2)];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?} vs {want:?}");
        }
    }

    #[test]
    fn parameter_errors() {
        let err = create::<RandomResizedCrop>(&[("ratio", Value::FloatList(vec![0.0, 1.0]))])
            .err()
            .unwrap();
        assert!(
            err.contains("random_resized_crop: parameter `ratio`"),
            "{err}"
        );
        let err = create::<RandomResizedCrop>(&[("scale", Value::FloatList(vec![0.5, 1.5]))])
            .err()
            .unwrap();
        assert!(err.contains("out of range"), "{err}");
        let err = create::<RandomResizedCrop>(&[("size", Value::Int(-3))])
            .err()
            .unwrap();
        assert!(err.contains("must not be negative"), "{err}");
    }
}
