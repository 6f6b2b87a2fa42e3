//! `expect = { "metric" = { min = .., max = .. } }`, which every stage kind takes.

use super::super::raw::RawExpect;
use super::super::types::Expectation;
use super::cx::FloatRule;
use super::{Result, StageCx};

impl StageCx<'_, '_, '_> {
    /// The stage's expectations, sorted by metric.
    pub(super) fn expect(&self, e: Option<&RawExpect>) -> Result<Vec<Expectation>> {
        let mut out = Vec::new();
        for (metric, bound) in e.into_iter().flatten() {
            let name = metric.get_ref();
            if name.trim().is_empty() {
                return Err(self.err_at(metric, "an expectation's metric name is empty", None));
            }
            let what = |b: &str| format!("stages.{}.expect.\"{name}\".{b}", self.name);
            let min = bound
                .min
                .as_ref()
                .map(|v| self.r.float(v, &what("min"), FloatRule::Finite))
                .transpose()?;
            let max = bound
                .max
                .as_ref()
                .map(|v| self.r.float(v, &what("max"), FloatRule::Finite))
                .transpose()?;
            match (min, max) {
                (None, None) => {
                    return Err(self.err_at(
                        metric,
                        format!(
                            "expectation for `{name}` in stage `{}` has neither `min` nor `max`",
                            self.name
                        ),
                        Some(format!("give a bound, e.g. \"{name}\" = {{ min = 0.9 }}")),
                    ))
                }
                (Some(lo), Some(hi)) if lo > hi => {
                    let min_span = bound.min.as_ref().expect("min is set").span();
                    return Err(self.err_span(
                        &min_span,
                        format!("expectation for `{name}` in stage `{}`: min ({lo}) is greater than max ({hi})", self.name),
                        None,
                    ));
                }
                _ => {}
            }
            out.push(Expectation {
                metric: name.clone(),
                min,
                max,
            });
        }
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok(out)
    }
}
