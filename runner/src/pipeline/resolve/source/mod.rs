//! An ingest stage's `source` table, declared per format by [`RawSource`]: a serde enum tagged
//! by `format`, each format's keys the fields of a `deny_unknown_fields` struct.
//!
//! The table is deserialised here rather than in `raw.rs` because serde reads an internally
//! tagged enum through a buffer, which loses toml's spans; so it is read from the already
//! parsed [`toml::Table`], and its messages point at key paths (`stages.<name>.source.<key>`)
//! instead. Every field is a `Given`: whatever is written is accepted by serde and then checked
//! here, so a key of the wrong type gets the same message (at the key) as any other bad value,
//! and the checks run in a fixed order. serde thus only reports a missing or unknown `format`
//! and unknown keys; [`StageCx::source_error`] turns those into the loader's own messages.

use serde::Deserialize;

use super::super::error::{did_you_mean, list};
use super::super::types::{FolderLabels, IngestSource};
use super::super::PipelineError;
use super::cx::{toml_type, unknown_help};
use super::{Result, StageCx};

mod given;
mod tabular;
mod text;

use given::{mark_datetimes, Given, Names};

/// Ingest formats this version reads.
const FORMATS: [&str; 5] = ["idx", "image_folder", "parquet", "csv", "text"];
/// Ingest formats that are planned but not yet readable.
const PLANNED_FORMATS: [&str; 0] = [];

/// `source = { format = "...", .. }`. The variants are [`FORMATS`]; the per-format checks
/// are in `tabular.rs` (parquet, csv) and `text.rs`, the checks on single values in `given.rs`.
#[derive(Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
enum RawSource {
    Idx(IdxSource),
    ImageFolder(FolderSource),
    Parquet(ParquetSource),
    Csv(CsvSource),
    Text(TextSource),
}

// The fields are in the order the help line for an unknown key lists them.

/// `format = "idx"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdxSource {
    images: Option<Given<String>>,
    labels: Option<Given<String>>,
}

/// `format = "image_folder"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FolderSource {
    path: Option<Given<String>>,
    labels: Option<Given<String>>,
}

/// `format = "parquet"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParquetSource {
    path: Option<Given<String>>,
    image: Option<Given<String>>,
    features: Option<Given<Columns>>,
    label: Option<Given<String>>,
    meta: Option<Given<Names>>,
    shape: Option<Given<Vec<i64>>>,
}

/// `format = "csv"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvSource {
    path: Option<Given<String>>,
    features: Option<Given<Names>>,
    label: Option<Given<String>>,
    meta: Option<Given<Names>>,
    delimiter: Option<Given<String>>,
}

/// `format = "text"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextSource {
    path: Option<Given<String>>,
    column: Option<Given<String>>,
    labels: Option<Given<String>>,
    label_delimiter: Option<Given<String>>,
    label: Option<Given<String>>,
    encoding: Option<Given<String>>,
    passage_words: Option<Given<i64>>,
    samples: Option<Given<String>>,
    path_column: Option<Given<String>>,
}

/// Parquet's `features`: one list column, or several numeric columns.
#[derive(Deserialize)]
#[serde(untagged)]
enum Columns {
    One(String),
    Many(Names),
}

const FOLDER_LABELS: [(&str, FolderLabels); 2] = [
    ("none", FolderLabels::None),
    ("folders", FolderLabels::Folders),
];

impl StageCx<'_, '_, '_> {
    /// The checked `source` table.
    pub(super) fn source(&self, t: &toml::Table) -> Result<IngestSource> {
        let raw: RawSource = mark_datetimes(toml::Value::Table(t.clone()))
            .try_into()
            .map_err(|e| self.source_error(t, &e))?;
        match raw {
            RawSource::Idx(s) => Ok(IngestSource::Idx {
                images: self.source_path(
                    "images",
                    &s.images,
                    "`images` is the IDX images file, relative to the pipeline file",
                )?,
                labels: self.source_path(
                    "labels",
                    &s.labels,
                    "`labels` is the IDX labels file, relative to the pipeline file",
                )?,
            }),
            RawSource::ImageFolder(s) => {
                let path = self.source_path(
                    "path",
                    &s.path,
                    "`path` is the folder of images, relative to the pipeline file",
                )?;
                let labels = self.source_str("labels", &s.labels)?;
                let labels = self.source_keyword(
                    "labels",
                    labels,
                    FolderLabels::None,
                    &FOLDER_LABELS,
                    |w| format!("unknown image-folder labels `{w}`"),
                )?;
                Ok(IngestSource::ImageFolder { path, labels })
            }
            RawSource::Parquet(s) => self.parquet(s),
            RawSource::Csv(s) => self.csv(s),
            RawSource::Text(s) => self.text(s),
        }
    }

    /// The loader's message for what serde rejected: a missing, mistyped, unknown or planned
    /// `format`, or a key the format does not take (the first one, in key order).
    fn source_error(&self, t: &toml::Table, e: &toml::de::Error) -> PipelineError {
        let format = match t.get("format") {
            None => {
                return self.err_key(
                    &["source"],
                    format!("missing key `format` in [{}]", self.what("source")),
                    Some(format!("supported formats: {}", list(FORMATS))),
                )
            }
            Some(toml::Value::String(s)) => s.as_str(),
            Some(other) => {
                return self.source_err(
                    "format",
                    format!(
                        "`{}` must be a string, found {}",
                        self.what("source.format"),
                        toml_type(other)
                    ),
                    None,
                )
            }
        };
        if PLANNED_FORMATS.contains(&format) {
            return self.source_err(
                "format",
                format!("ingest format `{format}` is not yet supported"),
                Some(format!("this version of pretext reads {}", list(FORMATS))),
            );
        }
        if !FORMATS.contains(&format) {
            let all = FORMATS.iter().chain(PLANNED_FORMATS.iter()).copied();
            let help = unknown_help(format, all, "supported formats:", FORMATS);
            return self.source_err(
                "format",
                format!("unknown ingest format `{format}`"),
                Some(help),
            );
        }
        // serde: "unknown field `key`, expected one of `a`, `b`" (or "expected `a` or `b`").
        let message = e.message();
        let unknown = t.keys().find_map(|k| {
            let rest = message.strip_prefix(&format!("unknown field `{k}`, "))?;
            Some((k.as_str(), rest))
        });
        let Some((key, expected)) = unknown else {
            let what = self.what("source");
            return self.err_key(&["source"], format!("invalid [{what}]: {message}"), None);
        };
        let keys: Vec<&str> = std::iter::once("format")
            .chain(expected.split('`').skip(1).step_by(2))
            .collect();
        let help = did_you_mean(key, keys.iter().copied()).unwrap_or_else(|| {
            format!(
                "format = \"{format}\" takes the keys {}",
                list(keys.iter().copied())
            )
        });
        self.source_err(
            key,
            format!("unknown key `{key}` in [{}]", self.what("source")),
            Some(help),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::{parse_str, PipelineError};

    /// The error for an ingest stage with `source = { <source> }`, as `line:col: message`
    /// plus the help line.
    fn error(source: &str) -> String {
        let text = format!(
            "[pipeline]\nname = \"p\"\n\n[stages.data]\nkind = \"ingest\"\nsource = {{ {source} }}\n"
        );
        let e: PipelineError = parse_str(&text, Path::new("/p/pipeline.toml"), &[])
            .expect_err("the source is invalid");
        format!(
            "{}:{}: {} | {}",
            e.line.unwrap_or(0),
            e.column.unwrap_or(0),
            e.message,
            e.help.unwrap_or_default()
        )
    }

    #[test]
    fn format_is_required_known_and_a_string() {
        assert_eq!(
            error("path = \"x\""),
            "6:1: missing key `format` in [stages.data.source] | supported formats: `idx`, \
             `image_folder`, `parquet`, `csv`, `text`"
        );
        assert_eq!(
            error("format = 3"),
            "6:12: `stages.data.source.format` must be a string, found an integer | "
        );
        assert_eq!(
            error("format = \"parqet\", path = \"x\""),
            "6:12: unknown ingest format `parqet` | did you mean `parquet`?"
        );
    }

    #[test]
    fn unknown_keys_name_the_format_and_its_keys() {
        assert_eq!(
            error("format = \"csv\", path = \"a.csv\", zzz = 1"),
            "6:44: unknown key `zzz` in [stages.data.source] | format = \"csv\" takes the keys \
             `format`, `path`, `features`, `label`, `meta`, `delimiter`"
        );
        assert_eq!(
            error("format = \"csv\", path = \"a.csv\", delimter = \";\""),
            "6:44: unknown key `delimter` in [stages.data.source] | did you mean `delimiter`?"
        );
    }

    #[test]
    fn values_of_the_wrong_type_are_reported_at_their_key_in_key_order() {
        assert_eq!(
            error("format = \"idx\", labels = 2, images = 1"),
            "6:40: `stages.data.source.images` must be a string, found an integer | "
        );
        // Datetimes stay datetimes (serde would hand them over as strings).
        assert_eq!(
            error("format = \"csv\", path = 1979-05-27"),
            "6:28: `stages.data.source.path` must be a string, found a datetime | "
        );
        assert_eq!(
            error("format = \"csv\", path = \"a.csv\", meta = [\"a\", 1979-05-27]"),
            "6:57: `stages.data.source.meta[1]` must be a column name (a string), found a \
             datetime | "
        );
    }
}
