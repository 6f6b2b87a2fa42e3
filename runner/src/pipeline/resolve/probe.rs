//! `kind = "probe"`: the probe methods and their settings, label fractions, seeds and the
//! supervised baseline. `linear` is shared with ood_eval.

use toml::Spanned;

use super::super::error::list;
use super::super::raw::{RawLinear, RawProbe};
use super::super::types::{
    KnnConfig, LinearProbeConfig, ProbeConfig, ProbeMethod, SupervisedConfig,
};
use super::cx::FloatRule;
use super::{Result, StageCx};

impl StageCx<'_, '_, '_> {
    pub(super) fn probe(&self, b: &RawProbe) -> Result<ProbeConfig> {
        let methods = match &b.methods {
            None => ProbeMethod::ALL.to_vec(),
            Some(given) => self.probe_methods(given)?,
        };
        let linear = match methods.contains(&ProbeMethod::Linear) {
            false => None,
            true => Some(self.linear_config(b.linear.as_deref())?),
        };
        let knn = match methods.contains(&ProbeMethod::Knn) {
            false => None,
            true => {
                let k = b.knn.as_ref();
                Some(KnnConfig {
                    k: self.int(k.map_or(&None, |k| &k.k), "knn.k", 1, None, 20)? as usize,
                    temperature: self.float(
                        k.map_or(&None, |k| &k.temperature),
                        "knn.temperature",
                        FloatRule::Positive,
                        0.07,
                    )?,
                })
            }
        };
        let label_fractions = match &b.label_fractions {
            None => vec![1.0],
            Some(given) => self.label_fractions(given)?,
        };
        let seeds = self.int(&b.seeds, "seeds", 1, Some(100), 3)?;
        let supervised = b
            .supervised
            .as_deref()
            .map(|s| -> Result<SupervisedConfig> {
                Ok(SupervisedConfig {
                    epochs: self.int(&s.epochs, "supervised.epochs", 1, None, 30)?,
                    lr: self.float(&s.lr, "supervised.lr", FloatRule::Positive, 1e-3)?,
                })
            })
            .transpose()?;
        let towers = [("image", false), ("text", true)];
        let text_tower = self.keyword_or(&b.tower, false, &towers, "expected one of", |w| {
            format!("unknown tower `{w}`")
        })?;
        Ok(ProbeConfig {
            text_tower,
            methods,
            linear,
            knn,
            baseline: b.baseline.unwrap_or(true),
            label_fractions,
            seeds,
            supervised,
        })
    }

    /// `methods = [..]`: at least one, each known and listed once.
    fn probe_methods(&self, given: &Spanned<Vec<Spanned<String>>>) -> Result<Vec<ProbeMethod>> {
        let choices = ProbeMethod::ALL.map(|m| (m.as_str(), m));
        if given.get_ref().is_empty() {
            return Err(self.err_at(
                given,
                format!(
                    "`{}` must list at least one probe method",
                    self.what("methods")
                ),
                Some(format!(
                    "supported methods: {}",
                    list(choices.iter().map(|(w, _)| *w))
                )),
            ));
        }
        let mut methods = Vec::new();
        for m in given.get_ref() {
            let method = self.keyword(m, &choices, "supported methods:", |w| {
                format!("unknown probe method `{w}`")
            })?;
            if methods.contains(&method) {
                return Err(self.err_at(
                    m,
                    format!("probe method `{}` is listed twice", m.get_ref()),
                    None,
                ));
            }
            methods.push(method);
        }
        Ok(methods)
    }

    /// `label_fractions = [..]`: at least one, each in (0, 1] and listed once.
    fn label_fractions(&self, given: &Spanned<Vec<Spanned<f64>>>) -> Result<Vec<f64>> {
        if given.get_ref().is_empty() {
            return Err(self.err_at(
                given,
                format!("`{}` is empty", self.what("label_fractions")),
                Some("list at least one fraction, e.g. label_fractions = [0.01, 0.1, 1.0]".into()),
            ));
        }
        let mut out = Vec::new();
        for f in given.get_ref() {
            let v = *f.get_ref();
            if !(v > 0.0 && v <= 1.0) {
                return Err(self.err_at(
                    f,
                    format!(
                        "`{}` value {v} must be in (0, 1]",
                        self.what("label_fractions")
                    ),
                    Some("fractions of the train labels, e.g. 0.01 for 1 %".into()),
                ));
            }
            if out.contains(&v) {
                return Err(self.err_at(
                    f,
                    format!("`{}` lists {v} twice", self.what("label_fractions")),
                    None,
                ));
            }
            out.push(v);
        }
        Ok(out)
    }

    /// `linear = { epochs, lr, weight_decay }` with its defaults.
    pub(super) fn linear_config(&self, l: Option<&RawLinear>) -> Result<LinearProbeConfig> {
        Ok(LinearProbeConfig {
            epochs: self.int(
                l.map_or(&None, |l| &l.epochs),
                "linear.epochs",
                1,
                None,
                100,
            )?,
            lr: self.float(
                l.map_or(&None, |l| &l.lr),
                "linear.lr",
                FloatRule::Positive,
                0.01,
            )?,
            weight_decay: self.float(
                l.map_or(&None, |l| &l.weight_decay),
                "linear.weight_decay",
                FloatRule::NonNegative,
                1e-4,
            )?,
        })
    }
}
