//! `gaussian_blur`: separable Gaussian blur with a sigma drawn uniformly from a range.
//!
//! Edges are handled by reflection without repeating the edge pixel (`reflect` padding, as
//! torchvision's `gaussian_blur`: index −1 reads 1, index `n` reads `n − 2`). The kernel is
//! truncated to its size and renormalised to sum to 1, so a constant image stays constant.

use pretext_plugin::{Augmentation, Error, Image, ImageMut, Params, Result, Rng};

use crate::{check_shapes, copy, read_p, read_range, RangeSpec};

/// Blur with a Gaussian of standard deviation uniform in `sigma = [lo, hi]` (in pixels).
#[derive(Debug, Clone)]
pub struct GaussianBlur {
    sigma: (f64, f64),
    /// Kernel side (odd), or 0 for `2·ceil(3σ) + 1`.
    kernel: usize,
    p: f64,
}

/// The largest odd number `<= n` (1 for `n <= 1`).
fn odd_at_most(n: usize) -> usize {
    if n <= 1 {
        1
    } else if n % 2 == 1 {
        n
    } else {
        n - 1
    }
}

/// The kernel side for `sigma` along an axis of length `n`: `kernel`, or `2·ceil(3σ) + 1`
/// when it is 0, capped to the largest odd number `<= n`.
pub(crate) fn kernel_side(sigma: f64, kernel: usize, n: usize) -> usize {
    let k = if kernel == 0 {
        2 * (3.0 * sigma).ceil() as usize + 1
    } else {
        kernel
    };
    k.min(odd_at_most(n))
}

/// A normalised 1-D Gaussian of odd side `k`.
pub(crate) fn gaussian_kernel(sigma: f64, k: usize) -> Vec<f32> {
    let r = (k / 2) as isize;
    let w: Vec<f64> = (-r..=r)
        .map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|v| (v / sum) as f32).collect()
}

/// Reflects index `i` into `0..n` (`|i| < n`, which the kernel cap guarantees).
#[inline]
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let j = if i < 0 {
        -i
    } else if i >= n {
        2 * (n - 1) - i
    } else {
        i
    };
    j as usize
}

/// Convolves lines of `len` values `step` apart, each starting at one of `starts` (rows:
/// `step` 1; columns: `step` = width), from `src` into `dst` with reflected edges.
fn convolve_1d(
    src: &[f32],
    dst: &mut [f32],
    len: usize,
    step: usize,
    starts: &[usize],
    kernel: &[f32],
) {
    let r = (kernel.len() / 2) as isize;
    for &start in starts {
        for i in 0..len {
            let mut acc = 0.0f32;
            for (t, &kw) in kernel.iter().enumerate() {
                let j = reflect(i as isize + t as isize - r, len);
                acc += kw * src[start + j * step];
            }
            dst[start + i * step] = acc;
        }
    }
}

/// Blurs `input` into `output` (same shape) with a Gaussian of `sigma`; `kernel` as in
/// [`kernel_side`].
pub(crate) fn blur_with(input: &Image, output: &mut ImageMut, sigma: f64, kernel: usize) {
    let s = input.shape;
    let (h, w) = (s.height, s.width);
    if s.is_empty() {
        return;
    }
    let kx = gaussian_kernel(sigma, kernel_side(sigma, kernel, w));
    let ky = gaussian_kernel(sigma, kernel_side(sigma, kernel, h));
    let mut tmp = vec![0.0f32; s.len()];
    let rows: Vec<usize> = (0..s.channels * h).map(|row| row * w).collect();
    convolve_1d(input.data, &mut tmp, w, 1, &rows, &kx);
    let cols: Vec<usize> = (0..s.channels)
        .flat_map(|c| (0..w).map(move |x| c * h * w + x))
        .collect();
    convolve_1d(&tmp, output.data, h, w, &cols, &ky);
    for v in output.data.iter_mut() {
        *v = v.clamp(0.0, 1.0);
    }
}

impl Augmentation for GaussianBlur {
    const NAME: &'static str = "gaussian_blur";
    const SUMMARY: &'static str = "separable Gaussian blur with a random sigma (reflected edges)";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `sigma` | [lo, hi], 0 < lo <= hi <= 100 | [0.1, 2.0] | range of the Gaussian's standard deviation in pixels, sampled uniformly |
| `kernel` | odd int ≥ 1, or 0 | 0 | kernel side; 0 = 2·ceil(3·sigma) + 1. Capped per axis to the largest odd number <= the image side |
| `p` | float in [0, 1] | 0.5 | probability of blurring |
";

    fn new(params: &mut Params) -> Result<Self> {
        let sigma = read_range(
            params,
            &RangeSpec {
                owner: Self::NAME,
                key: "sigma",
                default: [0.1, 2.0],
                min: 0.0,
                min_exclusive: true,
                max: 100.0,
            },
        )?;
        let kernel = params.usize("kernel", 0)?;
        if kernel != 0 && kernel % 2 == 0 {
            return Err(Error::msg(format!(
                "{}: parameter `kernel` = {kernel} must be odd (or 0 for 2·ceil(3·sigma) + 1)",
                Self::NAME
            )));
        }
        let p = read_p(params, 0.5)?;
        Ok(GaussianBlur { sigma, kernel, p })
    }

    fn apply(&self, rng: &mut Rng, input: Image, mut output: ImageMut) -> Result<()> {
        check_shapes(Self::NAME, &input, &output, input.shape)?;
        if rng.chance(self.p) {
            let sigma = rng.range(self.sigma.0, self.sigma.1);
            blur_with(&input, &mut output, sigma, self.kernel);
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
        check_determinism, check_p0_identity, create, make, mean_var, noise_image, run, shape,
        Value,
    };

    #[test]
    fn kernel_sides() {
        assert_eq!(kernel_side(1.0, 0, 100), 7);
        assert_eq!(kernel_side(0.1, 0, 100), 3);
        assert_eq!(kernel_side(2.0, 0, 100), 13);
        assert_eq!(kernel_side(2.0, 0, 8), 7);
        assert_eq!(kernel_side(2.0, 5, 100), 5);
        assert_eq!(kernel_side(2.0, 0, 1), 1);
        let k = gaussian_kernel(1.0, 7);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(k[0], k[6]);
        assert!(k[3] > k[2] && k[2] > k[1]);
    }

    #[test]
    fn reflect_does_not_repeat_the_edge() {
        assert_eq!(
            [-2, -1, 0, 5, 6, 7].map(|i| reflect(i, 6)),
            [2, 1, 0, 5, 4, 3]
        );
    }

    #[test]
    fn constant_image_is_preserved() {
        let aug = make::<GaussianBlur>(&[("p", Value::Float(1.0))]);
        let s = shape(3, 9, 13);
        let data = vec![0.7f32; s.len()];
        for seed in 0..5 {
            let (_, out) = run(&aug, seed, s, &data);
            assert!(out.iter().all(|v| (v - 0.7).abs() < 1e-6), "{out:?}");
        }
    }

    #[test]
    fn checkerboard_variance_drops() {
        let aug = make::<GaussianBlur>(&[
            ("p", Value::Float(1.0)),
            ("sigma", Value::FloatList(vec![1.0, 1.0])),
        ]);
        let s = shape(1, 16, 16);
        let data: Vec<f32> = (0..256).map(|i| ((i / 16 + i % 16) % 2) as f32).collect();
        let (_, out) = run(&aug, 0, s, &data);
        let (m0, v0) = mean_var(&data);
        let (m1, v1) = mean_var(&out);
        assert!((v0 - 0.25).abs() < 1e-9);
        assert!(v1 < 0.01 * v0, "variance {v0} -> {v1}");
        assert!((m1 - m0).abs() < 0.01, "mean {m0} -> {m1}");
    }

    #[test]
    fn impulse_spreads_as_the_kernel() {
        // One bright pixel in the middle of a 1 x 9 x 9 image becomes the outer product of
        // the 1-D kernel.
        let s = shape(1, 9, 9);
        let mut data = vec![0.0f32; 81];
        data[4 * 9 + 4] = 1.0;
        let mut out = vec![0.0f32; 81];
        blur_with(
            &Image {
                shape: s,
                data: &data,
            },
            &mut ImageMut {
                shape: s,
                data: &mut out,
            },
            1.0,
            5,
        );
        let k = gaussian_kernel(1.0, 5);
        for y in 0..9 {
            for x in 0..9 {
                let (dy, dx) = (y as isize - 4, x as isize - 4);
                let want = if dy.abs() <= 2 && dx.abs() <= 2 {
                    k[(dy + 2) as usize] * k[(dx + 2) as usize]
                } else {
                    0.0
                };
                assert!((out[y * 9 + x] - want).abs() < 1e-7, "({y}, {x})");
            }
        }
    }

    #[test]
    fn deterministic_and_p_zero() {
        let aug = make::<GaussianBlur>(&[("p", Value::Float(1.0))]);
        let s = shape(3, 8, 8);
        check_determinism(&aug, s, &noise_image(s, 12), true);
        check_p0_identity::<GaussianBlur>(&[]);
    }

    #[test]
    fn parameter_errors() {
        let err = create::<GaussianBlur>(&[("kernel", Value::Int(4))])
            .err()
            .unwrap();
        assert!(err.contains("`kernel` = 4 must be odd"), "{err}");
        let err = create::<GaussianBlur>(&[("sigma", Value::FloatList(vec![0.0, 1.0]))])
            .err()
            .unwrap();
        assert!(
            err.contains("gaussian_blur: parameter `sigma`") && err.contains("out of range"),
            "{err}"
        );
        let err = create::<GaussianBlur>(&[("sigma", Value::FloatList(vec![2.0, 1.0]))])
            .err()
            .unwrap();
        assert!(err.contains("lo <= hi"), "{err}");
        // A single number is a list of one, which is not a range.
        let err = create::<GaussianBlur>(&[("sigma", Value::Float(1.0))])
            .err()
            .unwrap();
        assert!(err.contains("two numbers"), "{err}");
        create::<GaussianBlur>(&[
            ("kernel", Value::Int(5)),
            ("sigma", Value::FloatList(vec![0.5, 0.5])),
        ])
        .unwrap();
    }
}
