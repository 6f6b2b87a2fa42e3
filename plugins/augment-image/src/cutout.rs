//! `cutout`: fill a square at a uniformly random centre (DeVries & Taylor, 2017); the square
//! is clipped at the image borders, so near an edge less than its full area is filled.

use pretext_plugin::{Augmentation, Error, Image, ImageMut, Params, Result, Rng};

use crate::{check_shapes, copy, read_p};

/// Fill a square of side `size · min(height, width)` (at least one pixel) with `fill`, in
/// every channel.
#[derive(Debug, Clone)]
pub struct Cutout {
    size: f64,
    fill: f32,
    p: f64,
}

impl Cutout {
    /// The square's side in pixels for an `h × w` image.
    pub(crate) fn side(&self, h: usize, w: usize) -> usize {
        ((self.size * h.min(w) as f64).round() as usize).max(1)
    }
}

/// Copies `input` to `output` and fills the square of `side` pixels centred on pixel
/// `(cy, cx)` (rows `cy − side/2 ..` and columns likewise, clipped to the image).
pub(crate) fn cutout_at(
    input: &Image,
    output: &mut ImageMut,
    (cy, cx): (usize, usize),
    side: usize,
    fill: f32,
) {
    copy(input, output);
    let s = input.shape;
    let span = |centre: usize, n: usize| {
        let start = centre.saturating_sub(side / 2);
        let end = (centre + side - side / 2).min(n);
        start..end
    };
    let (rows, cols) = (span(cy, s.height), span(cx, s.width));
    for c in 0..s.channels {
        for y in rows.clone() {
            let row = (c * s.height + y) * s.width;
            output.data[row + cols.start..row + cols.end].fill(fill);
        }
    }
}

impl Augmentation for Cutout {
    const NAME: &'static str = "cutout";
    const SUMMARY: &'static str = "fill a square at a random centre (clipped at the borders)";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `size` | float in (0, 1] | 0.25 | side of the square as a fraction of the image's shorter side (at least 1 pixel) |
| `fill` | float in [0, 1] | 0.0 | value written into the square, in every channel |
| `p` | float in [0, 1] | 0.5 | probability of cutting out |
";

    fn new(params: &mut Params) -> Result<Self> {
        let size = params.f64_in("size", 0.25, 0.0, 1.0)?;
        if size == 0.0 {
            return Err(Error::msg(format!(
                "{}: parameter `size` must be greater than 0 \
                 (it is a fraction of the image's shorter side, in (0, 1])",
                Self::NAME
            )));
        }
        let fill = params.f64_in("fill", 0.0, 0.0, 1.0)? as f32;
        let p = read_p(params, 0.5)?;
        Ok(Cutout { size, fill, p })
    }

    fn apply(&self, rng: &mut Rng, input: Image, mut output: ImageMut) -> Result<()> {
        check_shapes(Self::NAME, &input, &output, input.shape)?;
        let (h, w) = (input.shape.height, input.shape.width);
        if !rng.chance(self.p) || h == 0 || w == 0 {
            copy(&input, &mut output);
            return Ok(());
        }
        let centre = (rng.below(h as u64) as usize, rng.below(w as u64) as usize);
        cutout_at(&input, &mut output, centre, self.side(h, w), self.fill);
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

    /// Rows and columns (per channel) of the values equal to `fill`, and their count.
    fn filled(s: ImageShape, out: &[f32], fill: f32) -> (usize, Vec<(usize, usize)>) {
        let mut cells = Vec::new();
        for y in 0..s.height {
            for x in 0..s.width {
                let in_all = (0..s.channels).all(|c| out[(c * s.height + y) * s.width + x] == fill);
                let in_any = (0..s.channels).any(|c| out[(c * s.height + y) * s.width + x] == fill);
                assert_eq!(in_all, in_any, "channels disagree at ({y}, {x})");
                if in_all {
                    cells.push((y, x));
                }
            }
        }
        (out.iter().filter(|&&v| v == fill).count(), cells)
    }

    #[test]
    fn fills_exactly_one_square_when_it_fits() {
        let s = shape(3, 12, 12);
        let data = vec![0.5f32; s.len()];
        let mut out = vec![f32::NAN; s.len()];
        for (centre, side) in [((5, 6), 3), ((6, 6), 4), ((2, 9), 5)] {
            cutout_at(
                &Image {
                    shape: s,
                    data: &data,
                },
                &mut ImageMut {
                    shape: s,
                    data: &mut out,
                },
                centre,
                side,
                0.0,
            );
            let (count, cells) = filled(s, &out, 0.0);
            assert_eq!(count, 3 * side * side);
            let (y0, x0) = (centre.0 - side / 2, centre.1 - side / 2);
            for (y, x) in cells {
                assert!(
                    (y0..y0 + side).contains(&y) && (x0..x0 + side).contains(&x),
                    "({y}, {x})"
                );
            }
        }
    }

    #[test]
    fn random_squares_are_clipped_rectangles() {
        let aug = make::<Cutout>(&[
            ("p", Value::Float(1.0)),
            ("size", Value::Float(0.25)),
            ("fill", Value::Float(0.0)),
        ]);
        let s = shape(2, 16, 20);
        let side = aug.side(16, 20);
        assert_eq!(side, 4);
        let data = vec![0.5f32; s.len()];
        let mut full = 0;
        for seed in 0..200 {
            let (_, out) = run(&aug, seed, s, &data);
            let (count, cells) = filled(s, &out, 0.0);
            assert!(
                count > 0 && count <= 2 * side * side,
                "seed {seed}: {count}"
            );
            // The filled cells form one rectangle.
            let ys = cells.iter().map(|c| c.0);
            let xs = cells.iter().map(|c| c.1);
            let (ylo, yhi) = (ys.clone().min().unwrap(), ys.max().unwrap());
            let (xlo, xhi) = (xs.clone().min().unwrap(), xs.max().unwrap());
            assert_eq!(
                cells.len(),
                (yhi - ylo + 1) * (xhi - xlo + 1),
                "seed {seed}"
            );
            full += usize::from(count == 2 * side * side);
        }
        // The square fits whole for most centres (13 x 17 of 16 x 20).
        assert!(full > 100, "{full} of 200 whole squares");
    }

    #[test]
    fn fill_value_and_determinism() {
        let aug = make::<Cutout>(&[
            ("p", Value::Float(1.0)),
            ("size", Value::Float(1.0)),
            ("fill", Value::Float(0.75)),
        ]);
        let s = shape(1, 5, 5);
        // A full-size square centred on the middle pixel covers everything.
        let mut out = vec![0.0f32; 25];
        cutout_at(
            &Image {
                shape: s,
                data: &[0.5; 25],
            },
            &mut ImageMut {
                shape: s,
                data: &mut out,
            },
            (2, 2),
            5,
            0.75,
        );
        assert!(out.iter().all(|&v| v == 0.75));
        let aug_small = make::<Cutout>(&[("p", Value::Float(1.0))]);
        let s = shape(3, 10, 10);
        check_determinism(&aug_small, s, &noise_image(s, 14), true);
        assert_eq!(aug.side(5, 5), 5);
        check_p0_identity::<Cutout>(&[]);
    }

    #[test]
    fn parameter_errors() {
        let err = create::<Cutout>(&[("size", Value::Float(0.0))])
            .err()
            .unwrap();
        assert!(
            err.contains("cutout: parameter `size` must be greater than 0"),
            "{err}"
        );
        let err = create::<Cutout>(&[("size", Value::Float(1.5))])
            .err()
            .unwrap();
        assert!(err.contains("`size` = 1.5 is out of range"), "{err}");
        let err = create::<Cutout>(&[("fill", Value::Float(2.0))])
            .err()
            .unwrap();
        assert!(err.contains("`fill` = 2 is out of range"), "{err}");
    }
}
