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

use pretext_plugin::{Axis, Error, Inputs, Needs, Objective, Ops, Params, Result, Tensor};

pub struct AlignUniform {
    /// `t` in the uniformity term.
    t: f64,
    /// Weight of the uniformity term.
    weight: f64,
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
| `projector_hidden` | int ≥ 1 | 512 | hidden width of the projector MLP |
| `projector_dim` | int ≥ 1 | 128 | output width of the projector (the loss is computed there) |
";

    /// Reads and checks the parameters (`objective = { plugin = "align_uniform", t = 2.0 }`).
    /// Runs when the pipeline is validated, before any training. Keys not read here are
    /// rejected afterwards with a did-you-mean, so typos never go unnoticed.
    fn new(params: &mut Params) -> Result<Self> {
        let t = params.f64_in("t", 2.0, 1e-6, 100.0)?;
        let weight = params.f64_in("weight", 1.0, 0.0, 100.0)?;
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
            projector_hidden: projector_hidden as u32,
            projector_dim: projector_dim as u32,
        })
    }

    /// What the engine must build and feed to `loss`: two views per sample, and a 2-layer
    /// projector MLP after the encoder.
    fn needs(&self) -> Needs {
        Needs {
            views: 2,
            projector: Some((self.projector_hidden, self.projector_dim, 2)),
            ..Needs::default()
        }
    }

    /// The loss of one batch, built from host tensor ops (the host differentiates it).
    fn loss<'a>(&mut self, ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let z = inputs.projections()?; // one (batch, projector_dim) tensor per view
        let a = z[0].l2_normalize(Axis::Cols, 1e-8)?;
        let b = z[1].l2_normalize(Axis::Cols, 1e-8)?;

        // mean over samples of |a_i - b_i|²: sum over columns, then mean over everything.
        let align = a.sub(&b)?.square()?.sum(Axis::Cols)?.mean(Axis::All)?;
        let uniform = self
            .uniformity(ops, &a)?
            .add(&self.uniformity(ops, &b)?)?
            .mul_scalar(0.5)?;

        // Per-epoch means of these show up as metrics `objective.align` / `objective.uniform`.
        ops.report("align", &align.detach()?)?;
        ops.report("uniform", &uniform.detach()?)?;
        align.add(&uniform.mul_scalar(self.weight)?)
    }
}

impl AlignUniform {
    /// log of the mean over pairs i != j of exp(-t |z_i - z_j|²), for unit rows z.
    fn uniformity<'a>(&self, ops: &'a Ops, z: &Tensor<'a>) -> Result<Tensor<'a>> {
        let (n, _) = z.shape()?;
        if n < 2 {
            return Err(Error::msg(
                "align_uniform: a batch needs at least 2 samples",
            ));
        }
        // -t |z_i - z_j|² = 2t (z_i·z_j) - 2t
        let logits = z
            .matmul(&z.t()?)?
            .mul_scalar(2.0 * self.t)?
            .add_scalar(-2.0 * self.t)?;
        // Push the diagonal (i == j) far down so exp() ignores it.
        let logits = logits.sub(&ops.eye(n)?.mul_scalar(1e9)?)?;
        let pairs = (n * (n - 1)) as f64;
        logits.logsumexp(Axis::All)?.add_scalar(-pairs.ln())
    }
}
