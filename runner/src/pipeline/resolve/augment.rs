//! `kind = "augment"`: the views, each a list of augmentations (a name, or a table with a
//! `name` and free-form parameters).

use serde_json::{Map, Value};

use super::super::error::Seg;
use super::super::raw::RawAugment;
use super::super::types::{AugmentConfig, Augmentation};
use super::cx::toml_type;
use super::{Result, StageCx};

const VIEWS_HELP: &str = "each view is a list of augmentations, e.g. \
    views = [[\"random_crop\"], [\"random_crop\", { name = \"gaussian_noise\", std = 0.1 }]]";
const AUG_TABLE_HELP: &str =
    "write an augmentation with parameters as { name = \"gaussian_noise\", std = 0.1 }";

impl StageCx<'_, '_, '_> {
    pub(super) fn augment(&self, b: &RawAugment) -> Result<AugmentConfig> {
        if b.views.get_ref().is_empty() {
            return Err(self.err_at(
                &b.views,
                format!("`{}` must list at least one view", self.what("views")),
                Some(VIEWS_HELP.into()),
            ));
        }
        let mut views = Vec::new();
        for (i, view) in b.views.get_ref().iter().enumerate() {
            let mut augs = Vec::new();
            for (j, aug) in view.get_ref().iter().enumerate() {
                augs.push(self.augmentation(aug, i, j)?);
            }
            views.push(augs);
        }
        let preview = self.int(&b.preview, "preview", 0, Some(64), 8)? as usize;
        Ok(AugmentConfig { views, preview })
    }

    /// `views[i][j]`.
    fn augmentation(
        &self,
        aug: &toml::Spanned<toml::Value>,
        i: usize,
        j: usize,
    ) -> Result<Augmentation> {
        let what = format!("{}[{i}][{j}]", self.what("views"));
        Ok(match aug.get_ref() {
            toml::Value::String(s) if !s.trim().is_empty() => Augmentation {
                name: s.clone(),
                params: Value::Object(Map::new()),
            },
            toml::Value::String(_) => {
                let message = format!("`{what}`: the augmentation name is empty");
                return Err(self.err_at(aug, message, None));
            }
            toml::Value::Table(t) => {
                let mut path = self.segs(&["views"]);
                path.extend([Seg::Index(i), Seg::Index(j)]);
                let (name, params) = self.named_table(t, &path, &what, "name")?;
                let Some(name) = name else {
                    return Err(self.err_at(
                        aug,
                        format!("augmentation `{what}` has no `name`"),
                        Some(AUG_TABLE_HELP.into()),
                    ));
                };
                Augmentation { name, params }
            }
            other => {
                let found = toml_type(other);
                return Err(self.err_at(
                    aug,
                    format!("`{what}` must be an augmentation name or a table with a `name`, found {found}"),
                    None,
                ));
            }
        })
    }
}
