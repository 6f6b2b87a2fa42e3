//! `kind = "ood_eval"`: the out-of-distribution scores, the corruptions and their severities,
//! and the linear probe on corrupted data.

use toml::Spanned;

use super::super::raw::RawOodEval;
use super::super::types::{OodEvalConfig, OodScore};
use super::{Result, StageCx};

impl StageCx<'_, '_, '_> {
    pub(super) fn ood_eval(&self, b: &RawOodEval) -> Result<OodEvalConfig> {
        let score_choices = OodScore::ALL.map(|s| (s.as_str(), s));
        let scores = self
            .distinct_keywords(&b.scores, "scores", &score_choices)?
            .unwrap_or_else(|| OodScore::ALL.to_vec());
        // The corruptions this version applies (the stages module owns the list).
        let corruption_choices = super::super::types::CORRUPTIONS.map(|c| (c, c));
        let corruptions: Vec<String> = self
            .distinct_keywords(&b.corruptions, "corruptions", &corruption_choices)?
            .unwrap_or_else(|| corruption_choices.map(|(c, _)| c).to_vec())
            .into_iter()
            .map(str::to_string)
            .collect();
        let severities = match &b.severities {
            None => vec![1, 2, 3, 4, 5],
            Some(l) => l
                .get_ref()
                .iter()
                .map(|v| {
                    self.r
                        .int(v, &self.what("severities"), 1, Some(5))
                        .map(|x| x as u8)
                })
                .collect::<Result<_>>()?,
        };
        if b.ood.is_none() && corruptions.is_empty() {
            return Err(self.err_key(
                &["kind"],
                format!(
                    "stage `{}` has nothing to evaluate: no `ood` data set and no corruptions",
                    self.name
                ),
                Some(
                    "add `ood = \"<a dataset stage>\"` or leave `corruptions` at its default"
                        .into(),
                ),
            ));
        }
        Ok(OodEvalConfig {
            scores,
            k: self.int(&b.k, "k", 1, None, 1)? as usize,
            corruptions,
            severities,
            linear: self.linear_config(b.linear.as_deref())?,
        })
    }

    /// A list of keywords (`scores`, `corruptions`), each known and listed once.
    fn distinct_keywords<T: Copy + PartialEq>(
        &self,
        given: &Option<Spanned<Vec<Spanned<String>>>>,
        key: &str,
        choices: &[(&str, T)],
    ) -> Result<Option<Vec<T>>> {
        let Some(l) = given else { return Ok(None) };
        let mut out = Vec::new();
        for item in l.get_ref() {
            let v = self.keyword(item, choices, "known:", |w| {
                format!("unknown {} `{w}`", key.trim_end_matches('s'))
            })?;
            if out.contains(&v) {
                return Err(self.err_at(
                    item,
                    format!("`{}` lists `{}` twice", self.what(key), item.get_ref()),
                    None,
                ));
            }
            out.push(v);
        }
        Ok(Some(out))
    }
}
