//! `format = "text"`: documents from `.txt` files, a folder of them, or a parquet column.

use super::super::super::types::{IngestSource, TextEncoding, TextLabels};
use super::super::cx::toml_type;
use super::super::{Result, StageCx};
use super::given::Given;
use super::TextSource;

const TEXT_LABELS: [(&str, TextLabels); 3] = [
    ("none", TextLabels::None),
    ("files", TextLabels::Files),
    ("folders", TextLabels::Folders),
];
const SAMPLES: [(&str, bool); 2] = [("passages", false), ("documents", true)];
const ENCODINGS: [(&str, TextEncoding); 3] = [
    ("utf-8", TextEncoding::Utf8),
    ("latin-1", TextEncoding::Latin1),
    ("auto", TextEncoding::Auto),
];

impl StageCx<'_, '_, '_> {
    pub(super) fn text(&self, s: TextSource) -> Result<IngestSource> {
        let path = self.source_path(
            "path",
            &s.path,
            "`path` is a .txt file, a folder of .txt files, or a parquet file (with `column`), relative to the pipeline file",
        )?;
        let column = self.source_str("column", &s.column)?;
        let is_parquet = path.written.ends_with(".parquet");
        if is_parquet && column.is_none() {
            return Err(self.err_key(
                &["source"],
                format!("missing key `column` in [{}]", self.what("source")),
                Some("`column` names the parquet column of documents (strings)".into()),
            ));
        }
        if !is_parquet {
            for (key, given) in [
                ("column", s.column.is_some()),
                ("label", s.label.is_some()),
                ("path_column", s.path_column.is_some()),
            ] {
                if given {
                    return Err(self.source_err(
                        key,
                        format!("`{}` only applies to a parquet file", self.what(&format!("source.{key}"))),
                        Some("for a parquet file of documents, `path` ends in .parquet and `column` names the text column".into()),
                    ));
                }
            }
        } else {
            for (key, given) in [
                ("labels", s.labels.is_some()),
                ("label_delimiter", s.label_delimiter.is_some()),
                ("encoding", s.encoding.is_some()),
            ] {
                if given {
                    return Err(self.source_err(
                        key,
                        format!(
                            "`{}` only applies to text files and folders, not parquet",
                            self.what(&format!("source.{key}"))
                        ),
                        Some("for a parquet file, name a label column with `label`".into()),
                    ));
                }
            }
        }
        let labels = self.source_str("labels", &s.labels)?;
        let labels =
            self.source_keyword("labels", labels, TextLabels::None, &TEXT_LABELS, |w| {
                format!("unknown text labels `{w}`")
            })?;
        let label_delimiter = match &s.label_delimiter {
            None => None,
            Some(Given::Ok(d)) if !d.is_empty() && labels == TextLabels::Files => Some(d.clone()),
            Some(Given::Ok(d)) if !d.is_empty() => {
                return Err(self.source_err(
                    "label_delimiter",
                    format!(
                        "`{}` only applies with labels = \"files\"",
                        self.what("source.label_delimiter")
                    ),
                    None,
                ))
            }
            Some(other) => {
                let found = match other {
                    Given::Ok(_) => "a string",
                    Given::Other(v) => toml_type(v),
                };
                return Err(self.source_err(
                    "label_delimiter",
                    format!(
                        "`{}` must be a non-empty string, found {found}",
                        self.what("source.label_delimiter"),
                    ),
                    Some("e.g. label_delimiter = \"-\"".into()),
                ));
            }
        };
        let label = self.source_str("label", &s.label)?;
        if label.is_some() && label == column {
            return Err(self.source_err(
                "label",
                format!(
                    "column `{}` is named both in `{}` and in `{}`",
                    label.clone().unwrap_or_default(),
                    self.what("source.column"),
                    self.what("source.label")
                ),
                Some("a column can have only one role".into()),
            ));
        }
        // `utf8`, `latin1` and `iso-8859-1` are accepted too, never suggested.
        let encoding = self
            .source_str("encoding", &s.encoding)?
            .map(|w| match w.as_str() {
                "utf8" => "utf-8".to_string(),
                "latin1" | "iso-8859-1" => "latin-1".to_string(),
                _ => w,
            });
        let encoding =
            self.source_keyword("encoding", encoding, TextEncoding::Utf8, &ENCODINGS, |w| {
                format!("unknown text encoding `{w}`")
            })?;
        let samples = self.source_str("samples", &s.samples)?;
        let documents = self.source_keyword("samples", samples, false, &SAMPLES, |w| {
            format!("unknown text samples `{w}`")
        })?;
        if documents && s.passage_words.is_some() {
            return Err(self.source_err(
                "passage_words",
                format!(
                    "`{}` cuts documents into passages, but samples = \"documents\" keeps each document whole",
                    self.what("source.passage_words")
                ),
                Some("remove one of the two".into()),
            ));
        }
        let passage_words = match &s.passage_words {
            None => 48,
            Some(Given::Ok(n)) if (4..=2048).contains(n) => *n as usize,
            Some(other) => {
                let found = match other {
                    Given::Ok(n) => n.to_string(),
                    Given::Other(v) => toml_type(v).to_string(),
                };
                return Err(self.source_err(
                    "passage_words",
                    format!(
                        "`{}` must be an integer from 4 to 2048, found {found}",
                        self.what("source.passage_words"),
                    ),
                    None,
                ));
            }
        };
        Ok(IngestSource::Text {
            path,
            column,
            labels,
            label_delimiter,
            label,
            encoding,
            passage_words,
            documents,
            path_column: self.source_str("path_column", &s.path_column)?,
        })
    }
}
