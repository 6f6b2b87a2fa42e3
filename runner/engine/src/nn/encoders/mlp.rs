//! The MLP: the flat-vector encoder, and the projector/predictor heads of the objectives.

use serde::{Deserialize, Serialize};

use crate::nn::layers::{BatchNorm, Linear};
use crate::nn::params::{Init, ParamStore};
use crate::{Engine, Graph, Result, Tensor};

/// Linear layers with batch norm and ReLU between them; the last layer is plain linear.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mlp {
    hidden: Vec<(Linear, Option<BatchNorm>)>,
    last: Linear,
}

impl Mlp {
    /// `widths` = input, hidden..., output.
    pub fn new(
        e: &Engine,
        ps: &mut ParamStore,
        init: &mut Init,
        name: &str,
        widths: &[usize],
        batch_norm: bool,
    ) -> Mlp {
        assert!(
            widths.len() >= 2,
            "an MLP needs an input and an output width"
        );
        let n = widths.len() - 1;
        let hidden = (0..n - 1)
            .map(|i| {
                let lin = Linear::new(
                    e,
                    ps,
                    init,
                    &format!("{name}.{i}"),
                    widths[i],
                    widths[i + 1],
                );
                let bn = batch_norm
                    .then(|| BatchNorm::new(e, ps, &format!("{name}.{i}.bn"), widths[i + 1]));
                (lin, bn)
            })
            .collect();
        let last = Linear::new(
            e,
            ps,
            init,
            &format!("{name}.{}", n - 1),
            widths[n - 1],
            widths[n],
        );
        Mlp { hidden, last }
    }

    pub fn forward(
        &self,
        ps: &mut ParamStore,
        g: &mut Graph,
        x: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for (lin, bn) in &self.hidden {
            h = lin.forward(ps, g, &h)?;
            h = match bn {
                Some(bn) => bn.forward_act(ps, g, &h, train, true)?,
                None => g.relu(&h)?,
            };
        }
        self.last.forward(ps, g, &h)
    }

    pub fn output_width(&self) -> usize {
        self.last.outputs
    }
}
