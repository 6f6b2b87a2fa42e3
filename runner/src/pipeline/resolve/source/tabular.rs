//! `format = "parquet"` and `format = "csv"`: samples and labels from columns.

use super::super::super::types::{FeatureColumns, IngestSource};
use super::super::cx::toml_type;
use super::super::{Result, StageCx};
use super::given::Given;
use super::{Columns, CsvSource, ParquetSource};

impl StageCx<'_, '_, '_> {
    pub(super) fn parquet(&self, s: ParquetSource) -> Result<IngestSource> {
        let path = self.source_path(
            "path",
            &s.path,
            "`path` is the parquet file, relative to the pipeline file",
        )?;
        let image = self.source_str("image", &s.image)?;
        let features = match &s.features {
            None => None,
            Some(Given::Ok(Columns::One(c))) => {
                Some(FeatureColumns::List(self.non_empty("features", c)?))
            }
            Some(Given::Ok(Columns::Many(names))) => {
                let names = self.column_list("features", names)?;
                if names.is_empty() {
                    return Err(self.source_err(
                        "features",
                        format!("`{}` lists no columns", self.what("source.features")),
                        None,
                    ));
                }
                Some(FeatureColumns::Columns(names))
            }
            Some(Given::Other(v)) => return Err(self.not_names("features", v)),
        };
        const SAMPLES_HELP: &str = "set `image = \"<column>\"` for a column of image bytes, or `features = \"<column>\"` for a list column (or `features = [\"a\", \"b\"]` for numeric columns)";
        match (&image, &features) {
            (None, None) => {
                return Err(self.err_key(
                    &["source"],
                    format!("[{}] names no sample column", self.what("source")),
                    Some(SAMPLES_HELP.into()),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(self.source_err(
                    "features",
                    format!(
                        "`{}` and `{}` cannot both be set",
                        self.what("source.image"),
                        self.what("source.features")
                    ),
                    Some("a dataset holds either images or feature vectors".into()),
                ))
            }
            _ => {}
        }
        let label = self.source_str("label", &s.label)?;
        let meta = self.source_names("meta", &s.meta)?;
        let meta = meta.unwrap_or_default();
        let shape = match &s.shape {
            None => None,
            Some(_) if image.is_none() => {
                return Err(self.source_err(
                    "shape",
                    format!("`{}` only applies with `image`", self.what("source.shape")),
                    Some("`shape` is the [channels, height, width] of raw pixel bytes".into()),
                ))
            }
            Some(Given::Ok(d)) if d.len() == 3 && d.iter().all(|x| (1..=65535).contains(x)) => {
                Some([d[0] as usize, d[1] as usize, d[2] as usize])
            }
            Some(_) => {
                return Err(self.source_err(
                    "shape",
                    format!(
                        "`{}` must be [channels, height, width], three integers from 1 to 65535",
                        self.what("source.shape")
                    ),
                    Some("e.g. shape = [1, 28, 28]".into()),
                ))
            }
        };
        let mut roles = vec![("label", label.iter().cloned().collect())];
        match &features {
            Some(FeatureColumns::Columns(c)) => roles.push(("features", c.clone())),
            Some(FeatureColumns::List(c)) => roles.push(("features", vec![c.clone()])),
            None => {}
        }
        roles.push(("image", image.iter().cloned().collect()));
        roles.push(("meta", meta.clone()));
        self.distinct_roles(&roles)?;
        Ok(IngestSource::Parquet {
            path,
            image,
            features,
            label,
            meta,
            shape,
        })
    }

    pub(super) fn csv(&self, s: CsvSource) -> Result<IngestSource> {
        let path = self.source_path(
            "path",
            &s.path,
            "`path` is the CSV file, relative to the pipeline file",
        )?;
        let features = self.source_names("features", &s.features)?;
        if features.as_ref().is_some_and(Vec::is_empty) {
            return Err(self.source_err(
                "features",
                format!("`{}` lists no columns", self.what("source.features")),
                Some("leave `features` out to use every other column".into()),
            ));
        }
        let label = self.source_str("label", &s.label)?;
        let meta = self.source_names("meta", &s.meta)?;
        let meta = meta.unwrap_or_default();
        let delimiter = match &s.delimiter {
            None => ',',
            Some(Given::Ok(d))
                if d.chars().count() == 1
                    && d.is_ascii()
                    && !matches!(d.as_str(), "\"" | "\n" | "\r") =>
            {
                d.chars().next().unwrap_or(',')
            }
            Some(other) => {
                let found = match other {
                    Given::Ok(s) => format!("{s:?}"),
                    Given::Other(v) => toml_type(v).to_string(),
                };
                return Err(self.source_err(
                    "delimiter",
                    format!(
                        "`{}` must be one ASCII character, found {found}",
                        self.what("source.delimiter")
                    ),
                    Some("e.g. delimiter = \";\" or delimiter = \"\\t\"".into()),
                ));
            }
        };
        let roles = vec![
            ("label", label.iter().cloned().collect()),
            ("features", features.clone().unwrap_or_default()),
            ("meta", meta.clone()),
        ];
        self.distinct_roles(&roles)?;
        Ok(IngestSource::Csv {
            path,
            features,
            label,
            meta,
            delimiter,
        })
    }
}
