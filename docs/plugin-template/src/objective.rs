//! `align_uniform`: alignment + uniformity on the unit sphere (Wang & Isola, 2020).
//!
//! With `a`, `b` the L2-normalised projections of two views of a batch of `n` samples:
//!
//! ```text
//! align(a, b) = mean_i |a_i - b_i|²
//! uniform(z)  = log( mean_{i != j} exp(-t |z_i - z_j|²) ),  |z_i - z_j|² = 2 - 2 z_i·z_j
//! loss        = align(a, b) + weight · (uniform(a) + uniform(b)) / 2
//! ```
//!
//! Alignment pulls the two views of a sample together; uniformity spreads the samples over the
//! sphere, which is what keeps the representation from collapsing.
//!
//! Two capabilities of the SDK beyond a fixed loss are shown here too:
//! - **More views than two** (`Needs::more_views`): with multi-crop augment stages (local crops,
//!   possibly smaller), every further view is aligned with view 0 as well.
//! - **A trainable tensor the objective owns** (`Objective::parameters`): with `learn_t = true`
//!   the uniformity temperature is learned, stored as `log t` so it stays positive; the host
//!   creates, optimises and checkpoints it, and `ops.param` reads it in `loss`.

use pretext_plugin::{Axis, Error, Inputs, Needs, Objective, Ops, Params, Result, Tensor};
use pretext_plugin::{ParamInit, ParamSpec};

/// The name of the learned `log t` (a 1x1 trainable tensor).
const LOG_T: &str = "log_t";

pub struct AlignUniform {
    /// `t` in the uniformity term.
    t: f64,
    /// Weight of the uniformity term.
    weight: f64,
    /// Learn `t` (starting from the value above) instead of keeping it fixed.
    learn_t: bool,
    projector_hidden: u32,
    projector_dim: u32,
}

impl Objective for AlignUniform {
    /// The name pipelines use: `objective = { plugin = "align_uniform" }`.
    const NAME: &'static str = "align_uniform";
    /// One line, shown by `pretext plugins`.
    const SUMMARY: &'static str =
        "alignment + uniformity of L2-normalised projections (Wang & Isola, 2020)";
    /// The parameters, as a Markdown table.
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `t` | float in (0, 100] | 2.0 | temperature of the uniformity term |
| `weight` | float in [0, 100] | 1.0 | weight of the uniformity term |
| `learn_t` | bool | false | learn `t` (from the value above) as a trainable tensor of the objective |
| `projector_hidden` | int ≥ 1 | 512 | hidden width of the projector MLP |
| `projector_dim` | int ≥ 1 | 128 | output width of the projector (the loss is computed there) |
";

    /// Reads and checks the parameters (`objective = { plugin = "align_uniform", t = 2.0 }`).
    /// Runs when the pipeline is validated, before any training. Keys not read here are
    /// rejected afterwards with a did-you-mean, so typos never go unnoticed.
    fn new(params: &mut Params) -> Result<Self> {
        let t = params.f64_in("t", 2.0, 1e-6, 100.0)?;
        let weight = params.f64_in("weight", 1.0, 0.0, 100.0)?;
        let learn_t = params.bool("learn_t", false)?;
        let projector_hidden = params.usize("projector_hidden", 512)?;
        let projector_dim = params.usize("projector_dim", 128)?;
        if projector_hidden == 0 || projector_dim == 0 {
            return Err(Error::msg(
                "align_uniform: `projector_hidden` and `projector_dim` must be at least 1",
            ));
        }
        Ok(AlignUniform {
            t,
            weight,
            learn_t,
            projector_hidden: projector_hidden as u32,
            projector_dim: projector_dim as u32,
        })
    }

    /// What the engine must build and feed to `loss`: at least two views per sample (more
    /// are welcome: `more_views`), and a 2-layer projector MLP after the encoder.
    fn needs(&self) -> Needs {
        Needs {
            views: 2,
            more_views: true,
            projector: Some((self.projector_hidden, self.projector_dim, 2)),
            ..Needs::default()
        }
    }

    /// Trainable tensors this objective owns: `log t` when it is learned.
    fn parameters(&self) -> Vec<ParamSpec> {
        match self.learn_t {
            false => Vec::new(),
            true => vec![ParamSpec {
                name: LOG_T,
                rows: 1,
                cols: 1,
                init: ParamInit::Constant(self.t.ln()),
                // A temperature is not a weight: no decay towards 0.
                weight_decay: false,
            }],
        }
    }

    /// The loss of one batch, built from host tensor ops (the host differentiates it).
    fn loss<'a>(&mut self, ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let z = inputs.projections()?; // one (batch, projector_dim) tensor per view
        let a = z[0].l2_normalize(Axis::Cols, 1e-8)?;
        let b = z[1].l2_normalize(Axis::Cols, 1e-8)?;

        // mean over samples of |a_i - b_i|²: sum over columns, then mean over everything;
        // further views (multi-crop) are aligned with view 0 too, and the mean taken.
        let mut align = a.sub(&b)?.square()?.sum(Axis::Cols)?.mean(Axis::All)?;
        for extra in &z[2..] {
            let c = extra.l2_normalize(Axis::Cols, 1e-8)?;
            align = align.add(&a.sub(&c)?.square()?.sum(Axis::Cols)?.mean(Axis::All)?)?;
        }
        let align = align.mul_scalar(1.0 / (z.len() - 1) as f64)?;
        // The temperature: a constant, or exp of the learned log t (gradients flow into it).
        let t = match self.learn_t {
            true => ops.param(LOG_T)?.exp()?,
            false => ops.full(self.t, 1, 1)?,
        };
        let uniform = self
            .uniformity(ops, &a, &t)?
            .add(&self.uniformity(ops, &b, &t)?)?
            .mul_scalar(0.5)?;

        // Per-epoch means of these show up as metrics `objective.align` / `objective.uniform`.
        ops.report("align", &align.detach()?)?;
        ops.report("uniform", &uniform.detach()?)?;
        ops.report("t", &t.detach()?)?;
        align.add(&uniform.mul_scalar(self.weight)?)
    }
}

impl AlignUniform {
    /// log of the mean over pairs i != j of exp(-t |z_i - z_j|²), for unit rows z and a
    /// `(1, 1)` temperature `t`.
    fn uniformity<'a>(&self, ops: &'a Ops, z: &Tensor<'a>, t: &Tensor<'a>) -> Result<Tensor<'a>> {
        let (n, _) = z.shape()?;
        if n < 2 {
            return Err(Error::msg(
                "align_uniform: a batch needs at least 2 samples",
            ));
        }
        // -t |z_i - z_j|² = 2t (z_i·z_j - 1)
        let logits = z
            .matmul(&z.t()?)?
            .add_scalar(-1.0)?
            .mul(t)?
            .mul_scalar(2.0)?;
        // Push the diagonal (i == j) far down so exp() ignores it.
        let logits = logits.sub(&ops.eye(n)?.mul_scalar(1e9)?)?;
        let pairs = (n * (n - 1)) as f64;
        logits.logsumexp(Axis::All)?.add_scalar(-pairs.ln())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_plugin::Value;

    fn align_uniform(params: Vec<(String, Value)>) -> AlignUniform {
        let mut p = Params::new("align_uniform", params);
        let o = AlignUniform::new(&mut p).expect("valid parameters");
        p.finish().expect("no unknown parameters");
        o
    }

    #[test]
    fn accepts_more_views_and_declares_log_t_only_when_learned() {
        let fixed = align_uniform(Vec::new());
        assert!(fixed.needs().more_views);
        assert!(fixed.parameters().is_empty());
        let learned = align_uniform(vec![
            ("learn_t".into(), Value::Bool(true)),
            ("t".into(), Value::Float(2.0)),
        ]);
        let params = learned.parameters();
        assert_eq!(params.len(), 1);
        assert_eq!(
            (params[0].name, params[0].rows, params[0].cols),
            ("log_t", 1, 1)
        );
        assert_eq!(params[0].init, ParamInit::Constant(2f64.ln()));
        assert!(!params[0].weight_decay);
    }
}
