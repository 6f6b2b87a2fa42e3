//! Augmentations: deterministic per-sample transforms over plain image buffers.
//!
//! The host hands each call a seed derived from (pipeline seed, epoch, sample, view, position
//! in the view) and parallelises over samples; an augmentation draws all its randomness from
//! the [`Rng`] built from that seed, so results do not depend on thread scheduling.

use crate::{Params, Result, Rng};

/// `(channels, height, width)` of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A borrowed image: `f32` values in `[0, 1]`, channel-major (`c, h, w`).
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    pub shape: ImageShape,
    pub data: &'a [f32],
}

impl Image<'_> {
    /// Value at `(c, y, x)`.
    #[inline]
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.shape.height + y) * self.shape.width + x]
    }

    /// Bilinear sample at real coordinates (pixel centres at integers); outside → `fill`.
    pub fn bilinear(&self, c: usize, y: f64, x: f64, fill: f32) -> f32 {
        let (h, w) = (self.shape.height as isize, self.shape.width as isize);
        let (y0, x0) = (y.floor() as isize, x.floor() as isize);
        let (fy, fx) = ((y - y0 as f64) as f32, (x - x0 as f64) as f32);
        let px = |yy: isize, xx: isize| -> f32 {
            if yy < 0 || xx < 0 || yy >= h || xx >= w {
                fill
            } else {
                self.at(c, yy as usize, xx as usize)
            }
        };
        let top = px(y0, x0) * (1.0 - fx) + px(y0, x0 + 1) * fx;
        let bottom = px(y0 + 1, x0) * (1.0 - fx) + px(y0 + 1, x0 + 1) * fx;
        top * (1.0 - fy) + bottom * fy
    }
}

/// A mutable image to write the result into (allocated by the host).
#[derive(Debug)]
pub struct ImageMut<'a> {
    pub shape: ImageShape,
    pub data: &'a mut [f32],
}

impl ImageMut<'_> {
    #[inline]
    pub fn set(&mut self, c: usize, y: usize, x: usize, v: f32) {
        let i = (c * self.shape.height + y) * self.shape.width + x;
        self.data[i] = v;
    }
}

/// A per-sample image augmentation. Implement it, then list the type in
/// [`crate::export_plugin!`].
pub trait Augmentation: Sized + Send + Sync + 'static {
    /// The name used in `views = [["<NAME>", ...]]`.
    const NAME: &'static str;
    const SUMMARY: &'static str;
    const PARAMS_DOC: &'static str = "";

    /// Read and validate parameters (at validation time, before any training).
    fn new(params: &mut Params) -> Result<Self>;

    /// The output shape for an input shape (default: unchanged).
    fn output_shape(&self, input: ImageShape) -> Result<ImageShape> {
        Ok(input)
    }

    /// Write the augmented `input` into `output`, drawing randomness only from `rng`.
    fn apply(&self, rng: &mut Rng, input: Image, output: ImageMut) -> Result<()>;
}
