//! `kind = "curate"`: near-duplicate and quality checks, metadata columns, what to drop and
//! the `fail_if` bounds.

use toml::Spanned;

use super::super::raw::{RawCurate, RawNear, RawQuality};
use super::super::types::{CurateConfig, DropRule, FailIf, NearDuplicates, Quality};
use super::cx::FloatRule;
use super::{Result, StageCx};

impl StageCx<'_, '_, '_> {
    pub(super) fn curate(&self, b: &RawCurate) -> Result<CurateConfig> {
        let near_duplicates = self.near_duplicates(b.near_duplicates.as_deref())?;
        let quality = self.quality(b.quality.as_deref())?;
        let metadata = match &b.metadata {
            None => None,
            Some(names) => {
                let mut out: Vec<String> = Vec::new();
                for n in names.get_ref() {
                    if n.get_ref().trim().is_empty() {
                        return Err(self.err_at(
                            n,
                            format!("`{}` has an empty column name", self.what("metadata")),
                            None,
                        ));
                    }
                    if out.contains(n.get_ref()) {
                        return Err(self.err_at(
                            n,
                            format!("`{}` lists `{}` twice", self.what("metadata"), n.get_ref()),
                            None,
                        ));
                    }
                    out.push(n.get_ref().clone());
                }
                Some(out)
            }
        };
        let drop = match &b.drop {
            None => vec![DropRule::Duplicates, DropRule::LeakedTrain],
            Some(items) => self.drop_rules(items)?,
        };
        let checks = CurateConfig::CHECKS.map(|c| (c, c));
        let mut fail_if = Vec::new();
        for (metric, bound) in b.fail_if.iter().flatten() {
            let name = metric.get_ref();
            self.keyword(metric, &checks, "`fail_if` can bound", |w| {
                format!("`{}` names unknown check `{w}`", self.what("fail_if"))
            })?;
            let max = self.r.float(
                bound,
                &format!("stages.{}.fail_if.{name}", self.name),
                FloatRule::NonNegative,
            )?;
            fail_if.push(FailIf {
                metric: name.clone(),
                max,
            });
        }
        fail_if.sort_by(|a, b| a.metric.cmp(&b.metric));
        let max_listed = self.int(&b.max_listed, "max_listed", 0, Some(1_000_000), 1000)? as usize;
        Ok(CurateConfig {
            near_duplicates,
            quality,
            metadata,
            drop,
            fail_if,
            max_listed,
        })
    }

    fn near_duplicates(&self, near: Option<&RawNear>) -> Result<NearDuplicates> {
        Ok(NearDuplicates {
            enabled: near.and_then(|n| n.enabled).unwrap_or(true),
            max_distance: self.int(
                near.map_or(&None, |n| &n.max_distance),
                "near_duplicates.max_distance",
                0,
                Some(32),
                8,
            )? as u32,
            min_cosine: match near.and_then(|n| n.min_cosine.as_ref()) {
                None => 0.995,
                Some(v) => {
                    let x = *v.get_ref();
                    if !(x > 0.0 && x <= 1.0) {
                        return Err(self.err_at(
                            v,
                            format!(
                                "`{}` must be a number in (0, 1], found {x}",
                                self.what("near_duplicates.min_cosine")
                            ),
                            None,
                        ));
                    }
                    x
                }
            },
        })
    }

    fn quality(&self, q: Option<&RawQuality>) -> Result<Quality> {
        let unit = |v: &Option<Spanned<f64>>, key: &str, default: f64| -> Result<f64> {
            match v {
                None => Ok(default),
                Some(v) => {
                    let x = *v.get_ref();
                    if !(0.0..=255.0).contains(&x) {
                        return Err(self.err_at(
                            v,
                            format!(
                                "`{}` must be a pixel value from 0 to 255, found {x}",
                                self.what(key)
                            ),
                            None,
                        ));
                    }
                    Ok(x)
                }
            }
        };
        let min_mean = unit(q.map_or(&None, |q| &q.min_mean), "quality.min_mean", 2.0)?;
        let max_mean = unit(q.map_or(&None, |q| &q.max_mean), "quality.max_mean", 253.0)?;
        if min_mean >= max_mean {
            return Err(self.err_key(
                &["quality"],
                format!(
                    "`{}` ({min_mean}) must be below `{}` ({max_mean})",
                    self.what("quality.min_mean"),
                    self.what("quality.max_mean")
                ),
                None,
            ));
        }
        Ok(Quality {
            blank_std: self.float(
                q.map_or(&None, |q| &q.blank_std),
                "quality.blank_std",
                FloatRule::NonNegative,
                1.0,
            )?,
            min_mean,
            max_mean,
            min_size: self.int(
                q.map_or(&None, |q| &q.min_size),
                "quality.min_size",
                0,
                Some(65535),
                16,
            )? as u32,
        })
    }

    /// `drop = [..]`: known rules, each once, not both copies of a leaked sample; sorted.
    fn drop_rules(&self, items: &Spanned<Vec<Spanned<String>>>) -> Result<Vec<DropRule>> {
        let rules = DropRule::ALL.map(|r| (r.as_str(), r));
        let mut out = Vec::new();
        for item in items.get_ref() {
            let rule = self.keyword(item, &rules, "expected any of", |w| {
                format!("unknown `{}` entry `{w}`", self.what("drop"))
            })?;
            if out.contains(&rule) {
                return Err(self.err_at(
                    item,
                    format!("`{}` lists `{}` twice", self.what("drop"), item.get_ref()),
                    None,
                ));
            }
            out.push(rule);
        }
        if out.contains(&DropRule::LeakedTrain) && out.contains(&DropRule::LeakedTest) {
            return Err(self.err_at(
                items,
                format!(
                    "`{}` has both `leaked_train` and `leaked_test`",
                    self.what("drop")
                ),
                Some("drop the train copy or the test copy of a leaked sample, not both".into()),
            ));
        }
        out.sort();
        Ok(out)
    }
}
