//! `kind = "pretrain"`: the objective plugin, training length and batch, gradient clipping and
//! accumulation, and the collapse check. `model` and `optim` have files of their own.

use super::super::raw::RawPretrain;
use super::super::types::{CollapseConfig, Objective, PretrainConfig};

use super::cx::FloatRule;
use super::{Result, StageCx};

const OBJECTIVE_HELP: &str =
    "name the objective plugin, e.g. objective = { plugin = \"simclr\", temperature = 0.5 }";

impl StageCx<'_, '_, '_> {
    pub(super) fn pretrain(&self, b: &RawPretrain) -> Result<PretrainConfig> {
        let (plugin, params) = self.named_table(
            &b.objective,
            &self.segs(&["objective"]),
            &self.what("objective"),
            "plugin",
        )?;
        let Some(plugin) = plugin else {
            return Err(self.err_key(
                &["objective"],
                format!("missing key `plugin` in [{}]", self.what("objective")),
                Some(OBJECTIVE_HELP.into()),
            ));
        };
        let objective = Objective { plugin, params };
        let model = self.model(b.model.as_deref())?;
        let init = b.init.as_deref().map(|i| self.init(i)).transpose()?;
        // An imported encoder may be saved as it is (epochs = 0), e.g. for a probe.
        let min_epochs = if init.is_some() { 0 } else { 1 };
        let epochs = match &b.epochs {
            Some(v) if *v.get_ref() == 0 && init.is_none() => {
                return Err(self.err_at(
                    v,
                    format!("`{}` = 0 trains nothing", self.what("epochs")),
                    Some("epochs = 0 only applies with `init` (to save an imported encoder as it is); set epochs >= 1".into()),
                ))
            }
            _ => self.int(&b.epochs, "epochs", min_epochs, None, 10)?,
        };
        let batch_size = self.int(&b.batch_size, "batch_size", 1, None, 256)? as usize;
        let optim = self.optim(b.optim.as_deref(), epochs.max(1))?;
        let grad_clip = b
            .grad_clip
            .as_ref()
            .map(|v| {
                self.r
                    .float(v, &self.what("grad_clip"), FloatRule::Positive)
            })
            .transpose()?;
        let accumulate = self.int(&b.accumulate, "accumulate", 1, Some(1024), 1)?;
        let collapse = match b.collapse.as_deref() {
            None => CollapseConfig {
                min_std: 0.01,
                patience: 2,
            },
            Some(c) => CollapseConfig {
                min_std: self.float(
                    &c.min_std,
                    "collapse.min_std",
                    FloatRule::NonNegative,
                    0.01,
                )?,
                patience: self.int(&c.patience, "collapse.patience", 1, None, 2)?,
            },
        };
        Ok(PretrainConfig {
            objective,
            model,
            optim,
            epochs,
            batch_size,
            grad_clip,
            accumulate,
            collapse,
            init,
        })
    }
}
