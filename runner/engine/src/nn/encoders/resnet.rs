//! The residual convolutional encoder.

use serde::{Deserialize, Serialize};

use super::input::{Build, InputShape};
use crate::conv::Geometry;
use crate::nn::layers::{BatchNorm, Conv, Linear};
use crate::nn::params::{ParamStore, Pid};
use crate::{Graph, Result, Tensor};

/// A basic residual block: conv-BN-ReLU-conv-BN plus a shortcut (a strided 1x1 conv + BN
/// when the shape changes), then ReLU.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResBlock {
    conv1: (Conv, Option<BatchNorm>),
    conv2: (Conv, Option<BatchNorm>),
    shortcut: Option<(Conv, Option<BatchNorm>)>,
}

/// A stem conv, three stages of residual blocks (widths w, 2w, 4w; stride 2 at the start of
/// stages 2 and 3), global average pooling and a linear head.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResNet {
    stem: (Conv, Option<BatchNorm>),
    blocks: Vec<ResBlock>,
    head: Linear,
    /// Recompute each residual block's activations in backward (a training setting, never
    /// saved).
    #[serde(skip)]
    pub(crate) checkpoint: bool,
}

impl ResNet {
    /// Parameters `encoder.stem`, then `encoder.stage{s}.block{b}.{conv1,conv2,shortcut}`
    /// (each with `.bn`), then `encoder.head`, in that order.
    pub(crate) fn new(
        b: Build,
        width: usize,
        blocks: usize,
        embed_dim: usize,
        batch_norm: bool,
    ) -> Result<ResNet> {
        let Build { e, ps, init, input } = b;
        input.at_least("resnet", 4)?;
        let mut layer = |name: String, cin: usize, cout: usize, kernel: usize, stride: usize| {
            let conv = Conv::new(e, ps, init, &name, cin, cout, kernel, stride);
            let bn = batch_norm.then(|| BatchNorm::new(e, ps, &format!("{name}.bn"), cout));
            (conv, bn)
        };
        let stem = layer("encoder.stem".into(), input.channels, width, 3, 1);
        let mut res = Vec::new();
        let mut cin = width;
        for stage in 0..3 {
            let cout = width << stage;
            for b in 0..blocks {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let name = format!("encoder.stage{stage}.block{b}");
                let conv1 = layer(format!("{name}.conv1"), cin, cout, 3, stride);
                let conv2 = layer(format!("{name}.conv2"), cout, cout, 3, 1);
                let shortcut = (stride != 1 || cin != cout)
                    .then(|| layer(format!("{name}.shortcut"), cin, cout, 1, stride));
                res.push(ResBlock {
                    conv1,
                    conv2,
                    shortcut,
                });
                cin = cout;
            }
        }
        let head = Linear::new(e, ps, init, "encoder.head", cin, embed_dim);
        Ok(ResNet {
            stem,
            blocks: res,
            head,
            checkpoint: false,
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
        let h = g.chw_to_hwc(x, input)?;
        let (mut h, mut geo) = conv_bn(&self.stem, ps, g, &h, input.geometry(b), train, true)?;
        for block in &self.blocks {
            let (y, ngeo) = if self.checkpoint {
                block.forward_checkpointed(ps, g, &h, geo, train)?
            } else {
                block.forward(ps, g, &h, geo, train)?
            };
            h = y;
            geo = ngeo;
        }
        let pooled = g.mean_row_groups(&h, geo.height * geo.width)?;
        self.head.forward(ps, g, &pooled)
    }
}

/// Conv, then batch norm (when the layer has one), then ReLU when `relu`.
fn conv_bn(
    layer: &(Conv, Option<BatchNorm>),
    ps: &mut ParamStore,
    g: &mut Graph,
    x: &Tensor,
    geo: Geometry,
    train: bool,
    relu: bool,
) -> Result<(Tensor, Geometry)> {
    let (y, geo) = layer.0.forward(ps, g, x, geo)?;
    let y = match &layer.1 {
        Some(bn) => bn.forward_act(ps, g, &y, train, relu)?,
        None if relu => g.relu(&y)?,
        None => y,
    };
    Ok((y, geo))
}

impl ResBlock {
    /// The trained tensors the block reads.
    fn params(&self, ps: &ParamStore) -> Vec<Pid> {
        let mut out = Vec::new();
        for (conv, bn) in [Some(&self.conv1), Some(&self.conv2), self.shortcut.as_ref()]
            .into_iter()
            .flatten()
        {
            conv.params(ps, &mut out);
            if let Some(bn) = bn {
                bn.params(&mut out);
            }
        }
        out
    }

    /// [`Self::forward`] under activation checkpointing (see [`Graph::checkpoint`]). Batch
    /// norm updates its running statistics once, in the forward pass; the replay normalises
    /// with the same batch statistics (the same input) and its updates go to a snapshot of
    /// the store that is dropped.
    fn forward_checkpointed(
        &self,
        ps: &mut ParamStore,
        g: &mut Graph,
        x: &Tensor,
        geo: Geometry,
        train: bool,
    ) -> Result<(Tensor, Geometry)> {
        if !g.records() {
            return self.forward(ps, g, x, geo, train);
        }
        let out_geo = self.conv1.0.out_geometry(geo);
        let block = self.clone();
        let pids = self.params(ps);
        let y = crate::recompute::checkpoint_block(
            g,
            ps.clone(),
            &pids,
            x,
            |g| Ok(self.forward(ps, g, x, geo, train)?.0),
            move |ps, g, x| Ok(block.forward(ps, g, x, geo, train)?.0),
        )?;
        Ok((y, out_geo))
    }

    fn forward(
        &self,
        ps: &mut ParamStore,
        g: &mut Graph,
        x: &Tensor,
        geo: Geometry,
        train: bool,
    ) -> Result<(Tensor, Geometry)> {
        let (h, hgeo) = conv_bn(&self.conv1, ps, g, x, geo, train, true)?;
        let (h, hgeo) = conv_bn(&self.conv2, ps, g, &h, hgeo, train, false)?;
        let sc = match &self.shortcut {
            Some(s) => conv_bn(s, ps, g, x, geo, train, false)?.0,
            None => x.clone(),
        };
        let y = g.add(&h, &sc)?;
        Ok((g.relu(&y)?, hgeo))
    }
}
