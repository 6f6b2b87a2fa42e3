//! DINO (Caron et al., 2021): self-distillation with no labels. A student sees every crop —
//! two global views at the input size and any number of smaller local views — and matches,
//! for each global view, the sharpened and centred output of an EMA teacher that sees only the
//! global views. The head is the projector MLP to an L2-normalised bottleneck, then a
//! weight-normalised layer onto `out_dim` prototypes (a trainable tensor this objective owns).

use pretext_plugin::{Axis, Error, Inputs, Needs, Objective, Ops, Params, Result, Tensor};
use pretext_plugin::{ParamInit, ParamSpec};

use super::Projector;

/// The name of the prototype matrix `(bottleneck, out_dim)`: one column per prototype.
const PROTOTYPES: &str = "prototypes";
/// The running centre of the teacher's logits `(1, out_dim)`.
const CENTRE: &str = "centre";

pub struct Dino {
    proj: Projector,
    out_dim: usize,
    student_temp: f64,
    /// Teacher temperature after the warm-up, at its start, and the warm-up length in epochs.
    teacher_temp: f64,
    warmup_teacher_temp: f64,
    warmup_teacher_temp_epochs: u32,
    centre_momentum: f64,
    momentum: (f64, f64),
}

impl Dino {
    /// The teacher temperature in `epoch` (0-based): linear from the warm-up value to the
    /// final one over the warm-up epochs, then constant.
    pub fn teacher_temp_at(&self, epoch: u32) -> f64 {
        let w = self.warmup_teacher_temp_epochs;
        if epoch >= w || w == 0 {
            return self.teacher_temp;
        }
        let t = epoch as f64 / w as f64;
        self.warmup_teacher_temp + t * (self.teacher_temp - self.warmup_teacher_temp)
    }

    /// The prototypes with each column (one prototype) L2-normalised: the weight-normalised
    /// last layer, computed once per step and shared by every view.
    fn unit_columns<'a>(prototypes: &Tensor<'a>) -> Result<Tensor<'a>> {
        prototypes.l2_normalize(Axis::Rows, 1e-12)
    }

    /// `x` L2-normalised per row, times unit-column prototypes: cosine logits.
    fn logits<'a>(x: &Tensor<'a>, unit_prototypes: &Tensor<'a>) -> Result<Tensor<'a>> {
        x.l2_normalize(Axis::Cols, 1e-12)?.matmul(unit_prototypes)
    }
}

impl Objective for Dino {
    const NAME: &'static str = "dino";
    const SUMMARY: &'static str =
        "DINO: self-distillation onto an EMA teacher's centred, sharpened prototypes (multi-crop)";
    const PARAMS_DOC: &'static str = "\
Needs at least two views; the first two are the global crops (the teacher sees only these), any
further views are local crops and may be smaller (multi-crop: `size` of `random_resized_crop`).

| key | type | default | meaning |
|---|---|---|---|
| `out_dim` | int ≥ 2 | 1024 | number of prototypes (the width of the distribution the student matches) |
| `student_temp` | float > 0 | 0.1 | student softmax temperature |
| `teacher_temp` | float > 0 | 0.04 | teacher softmax temperature after the warm-up (sharpening) |
| `warmup_teacher_temp` | float > 0 | 0.04 | teacher temperature at the start |
| `warmup_teacher_temp_epochs` | int ≥ 0 | 0 | epochs of linear warm-up between the two |
| `centre_momentum` | float in [0, 1) | 0.9 | EMA momentum of the centre subtracted from teacher logits |
| `momentum_start` / `momentum_end` | float in [0, 1] | 0.996 / 1.0 | EMA momentum of the teacher (cosine schedule) |
| `projector_hidden` / `projector_dim` / `projector_layers` | | 512 / 128 / 3 | head MLP to the bottleneck |

Reports `teacher_entropy` and `student_entropy` (mean entropy of the softmax outputs, in nats:
`ln out_dim` is uniform, 0 is one-hot; a teacher stuck at either end has collapsed) and
`teacher_temp`.
";

    fn new(params: &mut Params) -> Result<Self> {
        let positive = |params: &mut Params, key: &str, default: f64| -> Result<f64> {
            let v = params.f64(key, default)?;
            if v > 0.0 && v.is_finite() {
                Ok(v)
            } else {
                Err(Error::msg(format!(
                    "dino: parameter `{key}` = {v} must be a positive number"
                )))
            }
        };
        let out_dim = params.usize("out_dim", 1024)?;
        if !(2..=1 << 16).contains(&out_dim) {
            return Err(Error::msg(format!(
                "dino: parameter `out_dim` = {out_dim} must be between 2 and 65536"
            )));
        }
        Ok(Dino {
            out_dim,
            student_temp: positive(params, "student_temp", 0.1)?,
            teacher_temp: positive(params, "teacher_temp", 0.04)?,
            warmup_teacher_temp: positive(params, "warmup_teacher_temp", 0.04)?,
            warmup_teacher_temp_epochs: params.usize("warmup_teacher_temp_epochs", 0)? as u32,
            centre_momentum: params.f64_in("centre_momentum", 0.9, 0.0, 0.999_999)?,
            momentum: (
                params.f64_in("momentum_start", 0.996, 0.0, 1.0)?,
                params.f64_in("momentum_end", 1.0, 0.0, 1.0)?,
            ),
            proj: Projector::read(params, Self::NAME, 512, 128, 3)?,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            views: 2,
            more_views: true,
            teacher_views: Some(2),
            projector: self.proj.needs(),
            ema_teacher: Some(self.momentum),
            uses_state: true,
            ..Needs::default()
        }
    }

    fn parameters(&self) -> Vec<ParamSpec> {
        // PyTorch's default for the last linear layer: U(±1/√fan_in) (the direction is what
        // counts: each prototype is normalised before use).
        let bound = 1.0 / (self.proj.dim as f64).sqrt();
        vec![ParamSpec {
            name: PROTOTYPES,
            rows: self.proj.dim as usize,
            cols: self.out_dim,
            init: ParamInit::Uniform(bound),
            weight_decay: true,
        }]
    }

    fn loss<'a>(&mut self, ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>> {
        let student = inputs.projections()?;
        let teacher = inputs.targets()?;
        if teacher.len() < 2 || student.len() < teacher.len() {
            return Err(Error::msg(format!(
                "dino: needs two global views for the teacher, got {} teacher and {} student views",
                teacher.len(),
                student.len()
            )));
        }
        let temp = self.teacher_temp_at(inputs.epoch());
        let w_s = Self::unit_columns(&ops.param(PROTOTYPES)?)?;
        let w_t = Self::unit_columns(&ops.teacher_param(PROTOTYPES)?)?;
        let centre = match ops.state(CENTRE) {
            Some(c) => c,
            None => ops.full(0.0, 1, self.out_dim)?,
        };
        // Teacher: centred, sharpened distributions of the global views (no gradient).
        let mut t_logits = Vec::with_capacity(teacher.len());
        let mut t_probs = Vec::with_capacity(teacher.len());
        for t in &teacher {
            let l = Self::logits(&t.detach()?, &w_t)?.detach()?;
            t_probs.push(
                l.sub(&centre)?
                    .mul_scalar(1.0 / temp)?
                    .softmax(Axis::Cols)?,
            );
            t_logits.push(l);
        }
        // Student: log-probabilities of every view.
        let s_logp = student
            .iter()
            .map(|s| {
                Self::logits(s, &w_s)?
                    .mul_scalar(1.0 / self.student_temp)?
                    .log_softmax(Axis::Cols)
            })
            .collect::<Result<Vec<_>>>()?;
        // Cross-entropy of each teacher view against every other student view.
        let mut total: Option<Tensor<'a>> = None;
        let mut pairs = 0usize;
        for (g, p) in t_probs.iter().enumerate() {
            for (v, lp) in s_logp.iter().enumerate() {
                if v == g {
                    continue;
                }
                let ce = p.mul(lp)?.sum(Axis::Cols)?.mean(Axis::All)?.neg()?;
                total = Some(match total {
                    Some(acc) => acc.add(&ce)?,
                    None => ce,
                });
                pairs += 1;
            }
        }
        let loss = total
            .ok_or_else(|| Error::msg("dino: no pair of views to compare"))?
            .mul_scalar(1.0 / pairs as f64)?;
        // Centre: EMA of the mean teacher logit over the global views of this batch.
        let mut batch = t_logits[0];
        for l in &t_logits[1..] {
            batch = batch.concat(l, Axis::Rows)?;
        }
        let m = self.centre_momentum;
        let next = centre
            .mul_scalar(m)?
            .add(&batch.mean(Axis::Rows)?.mul_scalar(1.0 - m)?)?;
        ops.set_state(CENTRE, &next)?;
        let entropy = |p: &Tensor<'a>| -> Result<Tensor<'a>> {
            p.mul(&p.clamp_min(1e-12)?.ln()?)?
                .sum(Axis::Cols)?
                .mean(Axis::All)?
                .neg()
        };
        ops.report("teacher_entropy", &entropy(&t_probs[0])?)?;
        ops.report("student_entropy", &entropy(&s_logp[0].exp()?)?)?;
        ops.report("teacher_temp", &ops.full(temp, 1, 1)?)?;
        Ok(loss)
    }
}
