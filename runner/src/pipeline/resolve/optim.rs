//! A pretrain stage's `optim = { name = .., .. }`: the optimizer and its keys, the learning
//! rate, warm-up and schedule.

use std::ops::Range;

use super::super::raw::RawOptim;
use super::super::types::{OptimConfig, Optimizer, Schedule};
use super::cx::{choose, FloatRule};
use super::{Result, StageCx};

#[derive(Clone, Copy)]
enum OptimName {
    Sgd,
    AdamW,
    Lars,
}

const NAMES: [(&str, OptimName); 3] = [
    ("sgd", OptimName::Sgd),
    ("adamw", OptimName::AdamW),
    ("lars", OptimName::Lars),
];
const SCHEDULES: [(&str, Schedule); 2] = [
    ("cosine", Schedule::Cosine),
    ("constant", Schedule::Constant),
];

impl StageCx<'_, '_, '_> {
    /// `epochs` is the stage's, which the warm-up must stay below.
    pub(super) fn optim(&self, o: Option<&RawOptim>, epochs: u64) -> Result<OptimConfig> {
        let Some(o) = o else {
            return Ok(OptimConfig {
                optimizer: Optimizer::AdamW {
                    betas: [0.9, 0.999],
                },
                lr: 1e-3,
                weight_decay: 1e-4,
                warmup_epochs: 0,
                schedule: Schedule::Cosine,
            });
        };
        let optimizer = self.optimizer(o)?;
        let lr = self.float(&o.lr, "optim.lr", FloatRule::Positive, 1e-3)?;
        let weight_decay = self.float(
            &o.weight_decay,
            "optim.weight_decay",
            FloatRule::NonNegative,
            1e-4,
        )?;
        let warmup_epochs = self.int(&o.warmup_epochs, "optim.warmup_epochs", 0, None, 0)?;
        if let Some(w) = &o.warmup_epochs {
            if warmup_epochs >= epochs {
                return Err(self.err_at(
                    w,
                    format!(
                        "`{}` ({warmup_epochs}) must be less than `epochs` ({epochs})",
                        self.what("optim.warmup_epochs")
                    ),
                    Some("lower `warmup_epochs` or raise `epochs`".into()),
                ));
            }
        }
        let schedule = self.keyword_or(
            &o.schedule,
            Schedule::Cosine,
            &SCHEDULES,
            "supported schedules:",
            |w| format!("unknown schedule `{w}`"),
        )?;
        Ok(OptimConfig {
            optimizer,
            lr,
            weight_decay,
            warmup_epochs,
            schedule,
        })
    }

    /// `name` and the keys that only some optimizers take.
    fn optimizer(&self, o: &RawOptim) -> Result<Optimizer> {
        let name = o.name.as_ref().map_or("adamw", |n| n.get_ref().as_str());
        let only_for = |key: &str, opts: &[&str], span: Range<usize>| {
            let allowed: Vec<String> = opts.iter().map(|o| format!("\"{o}\"")).collect();
            self.err_span(
                &span,
                format!(
                    "`{}` only applies to name = {}",
                    self.what(&format!("optim.{key}")),
                    allowed.join(" or ")
                ),
                Some(format!(
                    "this optimizer is \"{name}\"; remove `{key}` or change `name`"
                )),
            )
        };
        let momentum = || self.float(&o.momentum, "optim.momentum", FloatRule::HalfOpenUnit, 0.9);
        Ok(match choose(name, &NAMES, "supported optimizers:") {
            Ok(OptimName::Sgd | OptimName::Lars) if o.betas.is_some() => {
                let b = o.betas.as_ref().expect("guarded");
                return Err(only_for("betas", &["adamw"], b.span()));
            }
            Ok(OptimName::Sgd) if o.eta.is_some() => {
                let e = o.eta.as_ref().expect("guarded");
                return Err(only_for("eta", &["lars"], e.span()));
            }
            Ok(OptimName::Lars) => Optimizer::Lars {
                momentum: momentum()?,
                eta: self.float(&o.eta, "optim.eta", FloatRule::Positive, 0.001)?,
            },
            Ok(OptimName::Sgd) => Optimizer::Sgd {
                momentum: momentum()?,
            },
            Ok(OptimName::AdamW) => {
                if let Some(m) = &o.momentum {
                    return Err(only_for("momentum", &["sgd", "lars"], m.span()));
                }
                if let Some(e) = &o.eta {
                    return Err(only_for("eta", &["lars"], e.span()));
                }
                let betas = match &o.betas {
                    None => [0.9, 0.999],
                    Some(b) => {
                        let [b1, b2] = b.get_ref().as_slice() else {
                            return Err(self.err_at(
                                b,
                                format!(
                                    "`{}` must have exactly two numbers, found {}",
                                    self.what("optim.betas"),
                                    b.get_ref().len()
                                ),
                                Some("e.g. betas = [0.9, 0.999]".into()),
                            ));
                        };
                        let what = self.what("optim.betas");
                        [
                            self.r.float(b1, &what, FloatRule::HalfOpenUnit)?,
                            self.r.float(b2, &what, FloatRule::HalfOpenUnit)?,
                        ]
                    }
                };
                Optimizer::AdamW { betas }
            }
            Err(help) => {
                let n = o.name.as_ref().expect("the default optimizer is known");
                let message = format!("unknown optimizer `{name}`");
                return Err(self.err_at(n, message, Some(help)));
            }
        })
    }
}
