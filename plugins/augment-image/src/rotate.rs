//! `rotate`: rotate the image about its centre by a uniform random angle, with bilinear
//! sampling; pixels that come from outside the image get `fill`.

use pretext_plugin::{Augmentation, Image, ImageMut, Params, Result, Rng};

use crate::{check_shapes, copy, read_p, sin_cos_snapped};

/// Rotate by an angle uniform in `[-degrees, degrees]` (positive = counter-clockwise).
#[derive(Debug, Clone)]
pub struct Rotate {
    degrees: f64,
    fill: f32,
    p: f64,
}

/// Writes `input` rotated counter-clockwise by `degrees` about the image centre into
/// `output` (same shape). Each output pixel centre is rotated back into the input and
/// sampled bilinearly; samples outside the input read `fill`.
pub(crate) fn rotate_by(input: &Image, output: &mut ImageMut, degrees: f64, fill: f32) {
    let s = input.shape;
    let (cy, cx) = ((s.height as f64 - 1.0) / 2.0, (s.width as f64 - 1.0) / 2.0);
    let (sin, cos) = sin_cos_snapped(degrees.to_radians());
    for y in 0..s.height {
        let dy = y as f64 - cy;
        for x in 0..s.width {
            let dx = x as f64 - cx;
            // Inverse of a counter-clockwise rotation on screen (y pointing down).
            let sx = cx + dx * cos - dy * sin;
            let sy = cy + dx * sin + dy * cos;
            for c in 0..s.channels {
                output.set(c, y, x, input.bilinear(c, sy, sx, fill).clamp(0.0, 1.0));
            }
        }
    }
}

impl Augmentation for Rotate {
    const NAME: &'static str = "rotate";
    const SUMMARY: &'static str =
        "rotate about the centre by a uniform random angle (bilinear, corners filled)";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `degrees` | float in [0, 180] | 15 | largest rotation; the angle is uniform in [-degrees, degrees], positive = counter-clockwise |
| `fill` | float in [0, 1] | 0.0 | value of pixels rotated in from outside the image |
| `p` | float in [0, 1] | 1.0 | probability of rotating |
";

    fn new(params: &mut Params) -> Result<Self> {
        let degrees = params.f64_in("degrees", 15.0, 0.0, 180.0)?;
        let fill = params.f64_in("fill", 0.0, 0.0, 1.0)? as f32;
        let p = read_p(params, 1.0)?;
        Ok(Rotate { degrees, fill, p })
    }

    fn apply(&self, rng: &mut Rng, input: Image, mut output: ImageMut) -> Result<()> {
        check_shapes(Self::NAME, &input, &output, input.shape)?;
        if rng.chance(self.p) {
            let angle = rng.range(-self.degrees, self.degrees);
            rotate_by(&input, &mut output, angle, self.fill);
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

    fn rotated(s: ImageShape, data: &[f32], degrees: f64, fill: f32) -> Vec<f32> {
        let mut out = vec![f32::NAN; s.len()];
        rotate_by(
            &Image { shape: s, data },
            &mut ImageMut {
                shape: s,
                data: &mut out,
            },
            degrees,
            fill,
        );
        out
    }

    #[test]
    fn zero_degrees_is_identity() {
        let aug = make::<Rotate>(&[("degrees", Value::Float(0.0))]);
        let s = shape(3, 6, 9);
        let data = noise_image(s, 6);
        for seed in 0..5 {
            assert_eq!(run(&aug, seed, s, &data).1, data);
        }
    }

    #[test]
    fn quarter_turn_of_a_known_image() {
        // 3 x 3, values 1..9 / 10 row by row:      a counter-clockwise quarter turn:
        //   1 2 3                                   3 6 9
        //   4 5 6                                   2 5 8
        //   7 8 9                                   1 4 7
        let s = shape(1, 3, 3);
        let data: Vec<f32> = (1..=9).map(|v| v as f32 / 10.0).collect();
        let want: Vec<f32> = [3, 6, 9, 2, 5, 8, 1, 4, 7]
            .iter()
            .map(|&v| v as f32 / 10.0)
            .collect();
        assert_eq!(rotated(s, &data, 90.0, 0.0), want);
        // Clockwise is the inverse; a half turn reverses the pixel order.
        assert_eq!(rotated(s, &want, -90.0, 0.0), data);
        let half: Vec<f32> = data.iter().rev().copied().collect();
        assert_eq!(rotated(s, &data, 180.0, 0.0), half);
    }

    #[test]
    fn quarter_turn_of_a_non_square_image_interior() {
        // 4 x 6 (h x w): centre (1.5, 2.5). Output (y, x) reads input (y', x') =
        // (1.5 + (x - 2.5), 2.5 - (y - 1.5)) = (x - 1, 4 - y); out-of-image reads are `fill`.
        let s = shape(2, 4, 6);
        let data = noise_image(s, 7);
        let out = rotated(s, &data, 90.0, 0.25);
        for c in 0..2 {
            for y in 0..4 {
                for x in 0..6 {
                    let got = out[(c * 4 + y) * 6 + x];
                    let (sy, sx) = (x as isize - 1, 4 - y as isize);
                    let want = if (0..4).contains(&sy) && (0..6).contains(&sx) {
                        data[(c * 4 + sy as usize) * 6 + sx as usize]
                    } else {
                        0.25
                    };
                    assert_eq!(got, want, "c {c} y {y} x {x}");
                }
            }
        }
    }

    #[test]
    fn small_angle_fills_corners_and_keeps_the_centre() {
        let s = shape(1, 9, 9);
        let data = vec![0.5; s.len()];
        let out = rotated(s, &data, 30.0, 1.0);
        assert_eq!(out[4 * 9 + 4], 0.5);
        assert!(out[0] > 0.9, "corner {}", out[0]);
    }

    #[test]
    fn deterministic_and_p_zero() {
        let aug = make::<Rotate>(&[("degrees", Value::Float(45.0))]);
        let s = shape(3, 8, 8);
        check_determinism(&aug, s, &noise_image(s, 8), true);
        check_p0_identity::<Rotate>(&[("degrees", Value::Float(90.0))]);
    }

    #[test]
    fn parameter_errors() {
        let err = create::<Rotate>(&[("degrees", Value::Float(200.0))])
            .err()
            .unwrap();
        assert!(
            err.contains("rotate: parameter `degrees` = 200 is out of range"),
            "{err}"
        );
        let err = create::<Rotate>(&[("fill", Value::Float(-0.5))])
            .err()
            .unwrap();
        assert!(err.contains("`fill` = -0.5 is out of range"), "{err}");
        let err = create::<Rotate>(&[("degrees", Value::Str("ten".into()))])
            .err()
            .unwrap();
        assert!(err.contains("must be a number"), "{err}");
    }
}
