//! The plain convolutional encoder.

use serde::{Deserialize, Serialize};

use super::input::{Build, InputShape};
use crate::conv::ConvSpec;
use crate::nn::layers::{BatchNorm, Conv, Linear};
use crate::nn::params::ParamStore;
use crate::{Graph, Result, Tensor};

/// Three conv blocks (stride 1, 2, 2; widths w, 2w, 4w), global average pooling (or the
/// flattened last feature map), a linear head.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConvNet {
    blocks: Vec<(Conv, Option<BatchNorm>)>,
    head: Linear,
    #[serde(default)]
    flatten: bool,
}

impl ConvNet {
    /// Parameters `encoder.conv{0,1,2}` (+ `.bn`) and `encoder.head`, in that order.
    pub(crate) fn new(
        b: Build,
        width: usize,
        embed_dim: usize,
        batch_norm: bool,
        flatten: bool,
    ) -> Result<ConvNet> {
        let Build { e, ps, init, input } = b;
        input.at_least("convnet", 4)?;
        let chans = [input.channels, width, width * 2, width * 4];
        let blocks = (0..3)
            .map(|i| {
                let name = format!("encoder.conv{i}");
                let stride = if i == 0 { 1 } else { 2 };
                let conv = Conv::new(e, ps, init, &name, chans[i], chans[i + 1], 3, stride);
                let bn =
                    batch_norm.then(|| BatchNorm::new(e, ps, &format!("{name}.bn"), chans[i + 1]));
                (conv, bn)
            })
            .collect();
        // Two stride-2 blocks: the last feature map is ⌈H/4⌉ x ⌈W/4⌉.
        let down = ConvSpec {
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        let (h1, w1) = down.out_hw(input.height, input.width);
        let (h2, w2) = down.out_hw(h1, w1);
        let head_in = if flatten {
            chans[3] * h2 * w2
        } else {
            chans[3]
        };
        let head = Linear::new(e, ps, init, "encoder.head", head_in, embed_dim);
        Ok(ConvNet {
            blocks,
            head,
            flatten,
        })
    }

    /// `(B, C·H·W)` images → `(B, embed_dim)`.
    pub(crate) fn forward(
        &self,
        ps: &mut ParamStore,
        g: &mut Graph,
        x: &Tensor,
        input: InputShape,
        train: bool,
    ) -> Result<Tensor> {
        let (b, _) = x.shape();
        let mut h = g.chw_to_hwc(x, input)?;
        let mut geo = input.geometry(b);
        for (conv, bn) in &self.blocks {
            let (y, ngeo) = conv.forward(ps, g, &h, geo)?;
            geo = ngeo;
            h = match bn {
                Some(bn) => bn.forward_act(ps, g, &y, train, true)?,
                None => g.relu(&y)?,
            };
        }
        let pooled = if self.flatten {
            // Channel-last rows of one image are contiguous: (B·H·W, C) is (B, H·W·C).
            g.reshape(&h, b, geo.height * geo.width * geo.channels)?
        } else {
            g.mean_row_groups(&h, geo.height * geo.width)?
        };
        self.head.forward(ps, g, &pooled)
    }
}
