//! What an encoder reads: the input layout, and the channel-major → channel-last reordering
//! the image encoders start with.

use serde::{Deserialize, Serialize};

use crate::conv::Geometry;
use crate::nn::params::{Init, ParamStore};
use crate::{shape_err, Engine, Graph, Result, Tensor};

/// The input layout of an encoder: flat vectors, or images `(channels, height, width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl InputShape {
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// An error naming `arch` unless the images are at least `min`×`min`.
    pub(crate) fn at_least(&self, arch: &'static str, min: usize) -> Result<()> {
        if self.height < min || self.width < min {
            return Err(shape_err(
                arch,
                format!(
                    "input {}x{} is too small (min {min}x{min})",
                    self.height, self.width
                ),
            ));
        }
        Ok(())
    }

    /// The layout of a batch of `batch` such images, channel-last.
    pub(crate) fn geometry(&self, batch: usize) -> Geometry {
        Geometry {
            batch,
            height: self.height,
            width: self.width,
            channels: self.channels,
        }
    }
}

/// What every encoder builder needs: the engine, the store its parameters go into, the
/// initialiser they are drawn from, and the input layout.
pub(crate) struct Build<'b> {
    pub(crate) e: &'b Engine,
    pub(crate) ps: &'b mut ParamStore,
    pub(crate) init: &'b mut Init,
    pub(crate) input: InputShape,
}

impl Graph {
    /// `(B, C·H·W)` channel-major → `(B·H·W, C)` channel-last, differentiable.
    pub fn chw_to_hwc(&mut self, x: &Tensor, s: InputShape) -> Result<Tensor> {
        let (b, n) = x.shape();
        if n != s.len() {
            return Err(shape_err(
                "chw_to_hwc",
                format!("rows of {n} values for input {s:?}"),
            ));
        }
        let hw = s.height * s.width;
        let perm = move |src: &[f32], inverse: bool| -> Vec<f32> {
            let mut out = vec![0f32; src.len()];
            for bi in 0..b {
                for c in 0..s.channels {
                    for p in 0..hw {
                        let chw = bi * n + c * hw + p;
                        let hwc = (bi * hw + p) * s.channels + c;
                        if inverse {
                            out[chw] = src[hwc];
                        } else {
                            out[hwc] = src[chw];
                        }
                    }
                }
            }
            out
        };
        if !self.fast(&[x]) {
            use dfdx::prelude::*;
            let c = s.channels;
            let y = record!(
                self,
                [x],
                x.reshape_like(&(b, c, hw))
                    .permute::<_, Axes3<0, 2, 1>>()
                    .reshape_like(&(b * hw, c))
            )?;
            return Ok(if x.constant { y.as_input() } else { y });
        }
        let y = self.host_tensor(perm(&crate::host::vals(x), false), b * hw, s.channels);
        if x.constant {
            return Ok(y.as_input());
        }
        Ok(self.custom(&[x], y, move |g| vec![Some(perm(&g, true))]))
    }
}
