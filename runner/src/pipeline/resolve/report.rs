//! `kind = "report"`: the title, and the stages the report reads.

use toml::Spanned;

use super::super::raw::{RawReport, RawStage, RawStageBody};
use super::super::types::ReportConfig;
use super::{Result, StageCx};

impl StageCx<'_, '_, '_> {
    /// The report's config; its sources are filled in once every stage is resolved.
    pub(super) fn report(&self, b: &RawReport, pipeline: &str) -> Result<ReportConfig> {
        let title = match &b.title {
            Some(t) if t.get_ref().trim().is_empty() => {
                return Err(self.err_at(
                    t,
                    "`title` is empty",
                    Some("leave it out to use the pipeline's name".into()),
                ))
            }
            Some(t) => t.get_ref().clone(),
            None => pipeline.to_string(),
        };
        Ok(ReportConfig {
            title,
            sources: Vec::new(),
        })
    }
}

/// The stages a report reads: `inputs` as written (checked for repeats), or every stage of
/// another kind than `report`, in file order.
pub(super) fn inputs<'r>(
    cx: &StageCx<'_, '_, '_>,
    b: &'r RawReport,
    all: &'r [RawStage],
) -> Result<Vec<&'r Spanned<String>>> {
    match &b.inputs {
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(cx.err_at(
                    list,
                    "`inputs` is empty",
                    Some("name the stages to report on, or leave `inputs` out to report on every stage".into()),
                ));
            }
            let mut seen: Vec<&str> = Vec::new();
            for item in list.get_ref() {
                if seen.contains(&item.get_ref().as_str()) {
                    return Err(cx.err_at(
                        item,
                        format!("`inputs` names stage `{}` twice", item.get_ref()),
                        Some("list each stage once".into()),
                    ));
                }
                seen.push(item.get_ref());
            }
            Ok(list.get_ref().iter().collect())
        }
        None => Ok(all
            .iter()
            .filter(|s| !matches!(s.body, RawStageBody::Report(_)))
            .map(|s| &s.name)
            .collect()),
    }
}
