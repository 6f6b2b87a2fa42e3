//! Non-contrastive SSL objectives for pretext: BYOL, SimSiam, VICReg, Barlow Twins and DINO.
//!
//! Each avoids collapse without negatives: BYOL with a predictor and an EMA target,
//! SimSiam with a predictor and stop-gradient, VICReg with variance and covariance terms,
//! Barlow Twins by driving the cross-correlation of the two views to the identity, DINO by
//! centring and sharpening an EMA teacher's prototype distributions (see [`dino`]).

use pretext_plugin::{Axis, Error, Inputs, Needs, Objective, Ops, Params, Result, Tensor};

pub mod dino;
pub use dino::Dino;

/// Projector settings shared by all four objectives.
struct Projector {
    hidden: u32,
    dim: u32,
    layers: u32,
}

impl Projector {
    fn read(
        params: &mut Params,
        owner: &str,
        hidden: usize,
        dim: usize,
        layers: usize,
    ) -> Result<Projector> {
        let hidden = params.usize("projector_hidden", hidden)?;
        let dim = params.usize("projector_dim", dim)?;
        let layers = params.usize("projector_layers", layers)?;
        if hidden == 0 || dim == 0 || !(1..=4).contains(&layers) {
            return Err(Error::msg(format!(
                "{owner}: `projector_hidden` and `projector_dim` must be at least 1 and `projector_layers` between 1 and 4"
            )));
        }
        Ok(Projector {
            hidden: hidden as u32,
            dim: dim as u32,
            layers: layers as u32,
        })
    }
    fn needs(&self) -> Option<(u32, u32, u32)> {
        Some((self.hidden, self.dim, self.layers))
    }
}

/// `2 - 2·cos(p, z)` averaged over rows (BYOL's normalised MSE).
fn normalized_mse<'a>(p: &Tensor<'a>, z: &Tensor<'a>) -> Result<Tensor<'a>> {
    let pn = p.l2_normalize(Axis::Cols, 1e-8)?;
    let zn = z.l2_normalize(Axis::Cols, 1e-8)?;
    let cos = pn.mul(&zn)?.sum(Axis::Cols)?;
    cos.mul_scalar(-2.0)?.add_scalar(2.0)?.mean(Axis::All)
}

/// BYOL (Grill et al., 2020): the online predictor regresses the EMA target's projection of
/// the other view.
pub struct Byol {
    proj: Projector,
    predictor_hidden: u32,
    momentum: (f64, f64),
}

impl Objective for Byol {
    const NAME: &'static str = "byol";
    const SUMMARY: &'static str =
        "BYOL: predictor + EMA target network, normalised MSE between views";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `momentum_start` | float in [0, 1] | 0.99 | EMA momentum of the target at the start (cosine schedule) |
| `momentum_end` | float in [0, 1] | 1.0 | EMA momentum at the end |
| `predictor_hidden` | int ≥ 1 | 512 | hidden width of the predictor MLP |
| `projector_hidden` / `projector_dim` / `projector_layers` | | 512 / 128 / 2 | projector |
";

    fn new(params: &mut Params) -> Result<Self> {
        let momentum = (
            params.f64_in("momentum_start", 0.99, 0.0, 1.0)?,
            params.f64_in("momentum_end", 1.0, 0.0, 1.0)?,
        );
        let predictor_hidden = params.usize("predictor_hidden", 512)?.max(1) as u32;
        let proj = Projector::read(params, Self::NAME, 512, 128, 2)?;
        Ok(Byol {
            proj,
            predictor_hidden,
            momentum,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 2,
            projector: self.proj.needs(),
            predictor_hidden: Some(self.predictor_hidden),
            ema_teacher: Some(self.momentum),
            ..Needs::default()
        }
    }

    fn loss<'a>(&mut self, _ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let p = inputs.predictions()?;
        let t = inputs.targets()?;
        normalized_mse(&p[0], &t[1].detach()?)?.add(&normalized_mse(&p[1], &t[0].detach()?)?)
    }
}

/// SimSiam (Chen & He, 2021): like BYOL without the EMA: the target is the other view's own
/// projection behind a stop-gradient.
pub struct SimSiam {
    proj: Projector,
    predictor_hidden: u32,
    use_predictor: bool,
}

impl Objective for SimSiam {
    const NAME: &'static str = "simsiam";
    const SUMMARY: &'static str =
        "SimSiam: predictor + stop-gradient, negative cosine between views";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `predictor_hidden` | int ≥ 1 | 512 | hidden width of the predictor MLP |
| `predictor` | bool | true | use the predictor (false collapses: a test of the collapse monitor) |
| `projector_hidden` / `projector_dim` / `projector_layers` | | 2048 / 2048 / 3 | projector |
";

    fn new(params: &mut Params) -> Result<Self> {
        let predictor_hidden = params.usize("predictor_hidden", 512)?.max(1) as u32;
        let use_predictor = params.bool("predictor", true)?;
        let proj = Projector::read(params, Self::NAME, 2048, 2048, 3)?;
        Ok(SimSiam {
            proj,
            predictor_hidden,
            use_predictor,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 2,
            projector: self.proj.needs(),
            predictor_hidden: self.use_predictor.then_some(self.predictor_hidden),
            ..Needs::default()
        }
    }

    fn loss<'a>(&mut self, _ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let z = inputs.projections()?;
        let p = if self.use_predictor {
            inputs.predictions()?
        } else {
            z.clone()
        };
        let d = |p: &Tensor<'a>, z: &Tensor<'a>| -> Result<Tensor<'a>> {
            let cos = p
                .l2_normalize(Axis::Cols, 1e-8)?
                .mul(&z.detach()?.l2_normalize(Axis::Cols, 1e-8)?)?
                .sum(Axis::Cols)?;
            cos.mean(Axis::All)?.neg()
        };
        d(&p[0], &z[1])?.add(&d(&p[1], &z[0])?)?.mul_scalar(0.5)
    }
}

/// VICReg (Bardes et al., 2022): invariance (MSE between views) + variance (hinge on each
/// dimension's std) + covariance (off-diagonal covariance squared).
pub struct VicReg {
    proj: Projector,
    sim_weight: f64,
    var_weight: f64,
    cov_weight: f64,
}

/// Mean hinge `max(0, 1 - std)` over dimensions, with std = sqrt(var + 1e-4) over the batch.
pub fn variance_term<'a>(z: &Tensor<'a>) -> Result<Tensor<'a>> {
    let (n, _) = z.shape()?;
    let centered = z.sub(&z.mean(Axis::Rows)?)?;
    let var = centered
        .square()?
        .sum(Axis::Rows)?
        .mul_scalar(1.0 / (n as f64 - 1.0))?;
    let std = var.add_scalar(1e-4)?.sqrt()?;
    std.neg()?.add_scalar(1.0)?.relu()?.mean(Axis::All)
}

/// Sum of squared off-diagonal covariance entries, divided by the dimension.
pub fn covariance_term<'a>(ops: &'a Ops, z: &Tensor<'a>) -> Result<Tensor<'a>> {
    let (_, d) = z.shape()?;
    let cov = z.covariance()?;
    let off = cov.mul(&ops.eye(d)?.neg()?.add_scalar(1.0)?)?;
    off.square()?.sum(Axis::All)?.mul_scalar(1.0 / d as f64)
}

impl Objective for VicReg {
    const NAME: &'static str = "vicreg";
    const SUMMARY: &'static str = "VICReg: variance-invariance-covariance regularisation";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `sim_weight` | float ≥ 0 | 25.0 | weight λ of the invariance (MSE) term |
| `var_weight` | float ≥ 0 | 25.0 | weight μ of the variance term |
| `cov_weight` | float ≥ 0 | 1.0 | weight ν of the covariance term |
| `projector_hidden` / `projector_dim` / `projector_layers` | | 2048 / 2048 / 3 | projector |
";

    fn new(params: &mut Params) -> Result<Self> {
        let sim_weight = params.f64_in("sim_weight", 25.0, 0.0, 1e6)?;
        let var_weight = params.f64_in("var_weight", 25.0, 0.0, 1e6)?;
        let cov_weight = params.f64_in("cov_weight", 1.0, 0.0, 1e6)?;
        let proj = Projector::read(params, Self::NAME, 2048, 2048, 3)?;
        Ok(VicReg {
            proj,
            sim_weight,
            var_weight,
            cov_weight,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 2,
            projector: self.proj.needs(),
            ..Needs::default()
        }
    }

    fn loss<'a>(&mut self, ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let z = inputs.projections()?;
        let inv = z[0].mse(&z[1])?;
        let var = variance_term(&z[0])?.add(&variance_term(&z[1])?)?;
        let cov = covariance_term(ops, &z[0])?.add(&covariance_term(ops, &z[1])?)?;
        ops.report("invariance", &inv.detach()?)?;
        ops.report("variance", &var.detach()?)?;
        ops.report("covariance", &cov.detach()?)?;
        inv.mul_scalar(self.sim_weight)?
            .add(&var.mul_scalar(self.var_weight)?)?
            .add(&cov.mul_scalar(self.cov_weight)?)
    }
}

/// Barlow Twins (Zbontar et al., 2021): the cross-correlation of the batch-standardised
/// projections of two views is pushed to the identity.
pub struct BarlowTwins {
    proj: Projector,
    lambda: f64,
}

/// Per-dimension standardisation over the batch (biased std, as in the paper's BatchNorm).
fn standardize<'a>(z: &Tensor<'a>) -> Result<Tensor<'a>> {
    let centered = z.sub(&z.mean(Axis::Rows)?)?;
    let std = centered
        .square()?
        .mean(Axis::Rows)?
        .add_scalar(1e-5)?
        .sqrt()?;
    centered.div(&std)
}

/// `Σ (1 - c_ii)² + λ Σ_{i≠j} c_ij²` for `c = a_stdᵀ b_std / n`.
pub fn barlow_loss<'a>(
    ops: &'a Ops,
    a: &Tensor<'a>,
    b: &Tensor<'a>,
    lambda: f64,
) -> Result<Tensor<'a>> {
    let (n, d) = a.shape()?;
    let c = standardize(a)?
        .t()?
        .matmul(&standardize(b)?)?
        .mul_scalar(1.0 / n as f64)?;
    let eye = ops.eye(d)?;
    let on = c.diag()?.neg()?.add_scalar(1.0)?.square()?.sum(Axis::All)?;
    let off = c
        .mul(&eye.neg()?.add_scalar(1.0)?)?
        .square()?
        .sum(Axis::All)?;
    ops.report("on_diagonal", &on.detach()?)?;
    ops.report("off_diagonal", &off.detach()?)?;
    on.add(&off.mul_scalar(lambda)?)
}

impl Objective for BarlowTwins {
    const NAME: &'static str = "barlow_twins";
    const SUMMARY: &'static str =
        "Barlow Twins: cross-correlation of the two views' projections towards identity";
    const PARAMS_DOC: &'static str = "\
| key | type | default | meaning |
|---|---|---|---|
| `lambda` | float ≥ 0 | 0.005 | weight of the off-diagonal (redundancy) term |
| `projector_hidden` / `projector_dim` / `projector_layers` | | 2048 / 2048 / 3 | projector |
";

    fn new(params: &mut Params) -> Result<Self> {
        let lambda = params.f64_in("lambda", 0.005, 0.0, 1e3)?;
        let proj = Projector::read(params, Self::NAME, 2048, 2048, 3)?;
        Ok(BarlowTwins { proj, lambda })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 2,
            projector: self.proj.needs(),
            ..Needs::default()
        }
    }

    fn loss<'a>(&mut self, ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let z = inputs.projections()?;
        barlow_loss(ops, &z[0], &z[1], self.lambda)
    }
}

pretext_plugin::export_plugin! {
    name: "pretext-noncontrastive",
    objectives: [Byol, SimSiam, VicReg, BarlowTwins, Dino],
    augmentations: [],
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretext_plugin::testing::Plugin;

    #[test]
    fn every_objective_builds_through_the_abi() {
        let plugin = Plugin::new(pretext_plugin_entry);
        assert_eq!(plugin.name(), "pretext-noncontrastive");
        assert_eq!(
            plugin.objective_names(),
            ["byol", "simsiam", "vicreg", "barlow_twins", "dino"]
        );
        assert!(plugin.augmentations().is_empty());
        plugin.check_objective::<Byol>();
        plugin.check_objective::<SimSiam>();
        plugin.check_objective::<VicReg>();
        plugin.check_objective::<BarlowTwins>();
        plugin.check_objective::<Dino>();
    }

    #[test]
    fn dino_declares_multi_crop_and_its_prototypes_through_the_abi() {
        let plugin = Plugin::new(pretext_plugin_entry);
        let entry = plugin.objective("dino");
        let inst = pretext_plugin::testing::ObjectiveInstance::create(
            entry,
            &[
                ("out_dim", pretext_plugin::Value::Int(64)),
                ("projector_dim", pretext_plugin::Value::Int(16)),
            ],
        )
        .expect("create");
        let needs = inst.needs().expect("needs");
        assert_eq!((needs.views, needs.more_views), (2, true));
        assert_eq!(needs.teacher_views, Some(2));
        assert!(needs.ema_teacher.is_some() && needs.uses_state);
        let params = inst.parameters().expect("declarations");
        assert_eq!(params.len(), 1);
        assert_eq!(
            (params[0].name, params[0].rows, params[0].cols),
            ("prototypes", 16, 64)
        );
        assert_eq!(params[0].init, pretext_plugin::ParamInit::Uniform(0.25));
    }

    #[test]
    fn dino_teacher_temperature_warms_up_linearly_then_stays() {
        let mut p = Params::new(
            "dino",
            vec![
                ("teacher_temp".into(), pretext_plugin::Value::Float(0.07)),
                (
                    "warmup_teacher_temp".into(),
                    pretext_plugin::Value::Float(0.04),
                ),
                (
                    "warmup_teacher_temp_epochs".into(),
                    pretext_plugin::Value::Int(3),
                ),
            ],
        );
        let d = Dino::new(&mut p).unwrap();
        let at: Vec<f64> = (0..5).map(|e| d.teacher_temp_at(e)).collect();
        assert!((at[0] - 0.04).abs() < 1e-12 && (at[3] - 0.07).abs() < 1e-12);
        assert!((at[1] - 0.05).abs() < 1e-12 && (at[2] - 0.06).abs() < 1e-12);
        assert_eq!(at[4], at[3]);
    }
}
