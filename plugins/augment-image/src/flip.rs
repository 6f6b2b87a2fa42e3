//! `horizontal_flip`: mirror the image left to right.

use pretext_plugin::{Augmentation, Image, ImageMut, Params, Result, Rng};

use crate::{check_shapes, copy, read_p};

/// Mirror the image left to right with probability `p`.
#[derive(Debug, Clone)]
pub struct HorizontalFlip {
    p: f64,
}

/// Writes `input` mirrored left to right into `output` (same shape).
pub(crate) fn flip(input: &Image, output: &mut ImageMut) {
    let w = input.shape.width;
    if w == 0 {
        return;
    }
    for (src, dst) in input
        .data
        .chunks_exact(w)
        .zip(output.data.chunks_exact_mut(w))
    {
        for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
            *d = *s;
        }
    }
}

impl Augmentation for HorizontalFlip {
    const NAME: &'static str = "horizontal_flip";
    const SUMMARY: &'static str = "mirror the image left to right";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `p` | float in [0, 1] | 0.5 | probability of flipping |
";

    fn new(params: &mut Params) -> Result<Self> {
        Ok(HorizontalFlip {
            p: read_p(params, 0.5)?,
        })
    }

    fn apply(&self, rng: &mut Rng, input: Image, mut output: ImageMut) -> Result<()> {
        check_shapes(Self::NAME, &input, &output, input.shape)?;
        if rng.chance(self.p) {
            flip(&input, &mut output);
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
        check_determinism, check_p0_identity, make, noise_image, run, shape, Value,
    };

    #[test]
    fn flips_a_known_image() {
        let aug = make::<HorizontalFlip>(&[("p", Value::Float(1.0))]);
        let s = shape(2, 2, 3);
        let data = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.0, 0.25];
        let want = [0.3, 0.2, 0.1, 0.6, 0.5, 0.4, 0.9, 0.8, 0.7, 0.25, 0.0, 1.0];
        assert_eq!(run(&aug, 0, s, &data).1, want);
    }

    #[test]
    fn flipping_twice_is_identity() {
        let aug = make::<HorizontalFlip>(&[("p", Value::Float(1.0))]);
        let s = shape(3, 5, 7);
        let data = noise_image(s, 4);
        let (_, once) = run(&aug, 1, s, &data);
        assert_ne!(once, data);
        assert_eq!(run(&aug, 2, s, &once).1, data);
    }

    #[test]
    fn p_zero_is_identity() {
        check_p0_identity::<HorizontalFlip>(&[]);
    }

    #[test]
    fn deterministic_and_both_outcomes_occur() {
        let aug = make::<HorizontalFlip>(&[]);
        let s = shape(1, 3, 4);
        let data = noise_image(s, 5);
        check_determinism(&aug, s, &data, true);
        let flipped = (0..100)
            .filter(|&seed| run(&aug, seed, s, &data).1 != data)
            .count();
        assert!(
            (30..=70).contains(&flipped),
            "{flipped} of 100 flipped at p = 0.5"
        );
    }
}
