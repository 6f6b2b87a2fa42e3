//! `gaussian_noise`: add independent N(0, std²) noise to every value and clamp to `[0, 1]`.

use pretext_plugin::{Augmentation, Image, ImageMut, Params, Result, Rng};

use crate::{check_shapes, copy, read_p};

/// Add Gaussian noise of standard deviation `std` to each value (each channel of each pixel).
#[derive(Debug, Clone)]
pub struct GaussianNoise {
    std: f64,
    p: f64,
}

impl Augmentation for GaussianNoise {
    const NAME: &'static str = "gaussian_noise";
    const SUMMARY: &'static str = "add N(0, std²) noise to every value, clamped to [0, 1]";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `std` | float in [0, 1] | 0.1 | standard deviation of the noise (image values are in [0, 1]) |
| `p` | float in [0, 1] | 1.0 | probability of adding noise |
";

    fn new(params: &mut Params) -> Result<Self> {
        let std = params.f64_in("std", 0.1, 0.0, 1.0)?;
        let p = read_p(params, 1.0)?;
        Ok(GaussianNoise { std, p })
    }

    fn apply(&self, rng: &mut Rng, input: Image, mut output: ImageMut) -> Result<()> {
        check_shapes(Self::NAME, &input, &output, input.shape)?;
        if !rng.chance(self.p) || self.std == 0.0 {
            copy(&input, &mut output);
            return Ok(());
        }
        for (o, &v) in output.data.iter_mut().zip(input.data) {
            *o = (v as f64 + self.std * rng.normal()).clamp(0.0, 1.0) as f32;
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

    #[test]
    fn zero_std_is_identity() {
        let aug = make::<GaussianNoise>(&[("std", Value::Float(0.0))]);
        let s = shape(3, 5, 6);
        let data = noise_image(s, 9);
        assert_eq!(run(&aug, 3, s, &data).1, data);
    }

    #[test]
    fn mean_square_change_is_the_variance() {
        let aug = make::<GaussianNoise>(&[("std", Value::Float(0.1))]);
        let s = shape(1, 64, 64);
        let data = vec![0.5f32; s.len()];
        for seed in 0..3 {
            let (_, out) = run(&aug, seed, s, &data);
            let n = out.len() as f64;
            let msd = out.iter().map(|&v| (v as f64 - 0.5).powi(2)).sum::<f64>() / n;
            let mean = out.iter().map(|&v| v as f64 - 0.5).sum::<f64>() / n;
            assert!(
                (msd - 0.01).abs() < 0.001,
                "mean square difference {msd}, want 0.01"
            );
            assert!(mean.abs() < 0.006, "mean shift {mean}");
        }
    }

    #[test]
    fn clamps_to_the_unit_interval() {
        let aug = make::<GaussianNoise>(&[("std", Value::Float(1.0))]);
        let s = shape(2, 8, 8);
        let (_, out) = run(&aug, 1, s, &noise_image(s, 10));
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(out.contains(&0.0) && out.contains(&1.0));
    }

    #[test]
    fn deterministic_and_p_zero() {
        let aug = make::<GaussianNoise>(&[]);
        let s = shape(3, 4, 4);
        check_determinism(&aug, s, &noise_image(s, 11), true);
        check_p0_identity::<GaussianNoise>(&[("std", Value::Float(0.5))]);
    }

    #[test]
    fn negative_std_is_rejected() {
        let err = create::<GaussianNoise>(&[("std", Value::Float(-0.1))])
            .err()
            .unwrap();
        assert!(
            err.contains("gaussian_noise: parameter `std` = -0.1 is out of range"),
            "{err}"
        );
    }
}
