//! Source values as written ([`Given`]) and the checks on them that every format shares:
//! strings, paths, keywords and lists of column names, each reported at its key.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::super::super::error::Seg;
use super::super::super::types::ConfigPath;
use super::super::super::PipelineError;
use super::super::cx::{choose, toml_type};
use super::super::{Result, StageCx};

/// A value as written: of the type its key takes, or anything else (kept for the message).
pub(super) enum Given<T> {
    Ok(T),
    Other(toml::Value),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Given<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = toml::Value::deserialize(d)?;
        Ok(match v.clone().try_into() {
            Ok(t) => Given::Ok(t),
            Err(_) => Given::Other(unmark_datetimes(v)),
        })
    }
}

/// Stands in for a datetime while the table goes through serde: `toml::Value` hands datetimes
/// to serde as strings, which would make `path = 1979-05-27` a path.
const DATETIME_MARK: &str = "$__pretext_datetime";

/// `v` with each datetime, at any depth, replaced by `{ DATETIME_MARK = "<datetime>" }`.
pub(super) fn mark_datetimes(v: toml::Value) -> toml::Value {
    match v {
        toml::Value::Datetime(d) => {
            let mut mark = toml::Table::new();
            mark.insert(DATETIME_MARK.into(), toml::Value::String(d.to_string()));
            toml::Value::Table(mark)
        }
        toml::Value::Array(a) => toml::Value::Array(a.into_iter().map(mark_datetimes).collect()),
        toml::Value::Table(t) => {
            toml::Value::Table(t.into_iter().map(|(k, v)| (k, mark_datetimes(v))).collect())
        }
        other => other,
    }
}

/// Undoes [`mark_datetimes`].
fn unmark_datetimes(v: toml::Value) -> toml::Value {
    match v {
        toml::Value::Table(t) if t.len() == 1 && t.contains_key(DATETIME_MARK) => {
            match t.get(DATETIME_MARK).and_then(|d| d.as_str()?.parse().ok()) {
                Some(d) => toml::Value::Datetime(d),
                None => toml::Value::Table(t),
            }
        }
        toml::Value::Array(a) => toml::Value::Array(a.into_iter().map(unmark_datetimes).collect()),
        toml::Value::Table(t) => toml::Value::Table(
            t.into_iter()
                .map(|(k, v)| (k, unmark_datetimes(v)))
                .collect(),
        ),
        other => other,
    }
}

/// A list of column names, each checked on its own.
pub(super) type Names = Vec<Given<String>>;

impl StageCx<'_, '_, '_> {
    /// An error at the key `source.<key>`.
    pub(super) fn source_err(
        &self,
        key: &str,
        message: String,
        help: Option<String>,
    ) -> PipelineError {
        self.err_key(&["source", key], message, help)
    }

    /// An optional non-empty string key of `source`.
    pub(super) fn source_str(
        &self,
        key: &str,
        v: &Option<Given<String>>,
    ) -> Result<Option<String>> {
        match v {
            None => Ok(None),
            Some(Given::Ok(s)) => self.non_empty(key, s).map(Some),
            Some(Given::Other(other)) => Err(self.source_err(
                key,
                format!(
                    "`{}` must be a string, found {}",
                    self.what(&format!("source.{key}")),
                    toml_type(other)
                ),
                None,
            )),
        }
    }

    /// The string `s` of `source.<key>`, unless it is blank.
    pub(super) fn non_empty(&self, key: &str, s: &str) -> Result<String> {
        if s.trim().is_empty() {
            let what = self.what(&format!("source.{key}"));
            return Err(self.source_err(key, format!("`{what}` must not be empty"), None));
        }
        Ok(s.to_string())
    }

    /// A required path key of `source`.
    pub(super) fn source_path(
        &self,
        key: &str,
        v: &Option<Given<String>>,
        help: &str,
    ) -> Result<ConfigPath> {
        match self.source_str(key, v)? {
            Some(s) => Ok(self.r.path(&s)),
            None => Err(self.err_key(
                &["source"],
                format!("missing key `{key}` in [{}]", self.what("source")),
                Some(help.to_string()),
            )),
        }
    }

    /// The keyword `word` of `source.<key>` (see [`choose`]), or `default` when it is not given.
    pub(super) fn source_keyword<T: Copy>(
        &self,
        key: &str,
        word: Option<String>,
        default: T,
        choices: &[(&str, T)],
        message: impl FnOnce(&str) -> String,
    ) -> Result<T> {
        match word {
            None => Ok(default),
            Some(word) => choose(&word, choices, "expected one of")
                .map_err(|help| self.source_err(key, message(&word), Some(help))),
        }
    }

    /// An optional list of distinct, non-empty column names.
    pub(super) fn source_names(
        &self,
        key: &str,
        v: &Option<Given<Names>>,
    ) -> Result<Option<Vec<String>>> {
        match v {
            None => Ok(None),
            Some(Given::Ok(items)) => self.column_list(key, items).map(Some),
            Some(Given::Other(v)) => Err(self.not_names(key, v)),
        }
    }

    /// `source.<key>` is not an array of column names.
    pub(super) fn not_names(&self, key: &str, v: &toml::Value) -> PipelineError {
        self.source_err(
            key,
            format!(
                "`{}` must be an array of column names, found {}",
                self.what(&format!("source.{key}")),
                toml_type(v)
            ),
            Some(format!("e.g. {key} = [\"a\", \"b\"]")),
        )
    }

    /// The column names of `source.<key>`: each a non-empty string, none twice.
    pub(super) fn column_list(&self, key: &str, items: &Names) -> Result<Vec<String>> {
        let what = self.what(&format!("source.{key}"));
        let mut out: Vec<String> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = |m: String| {
                let mut p = self.segs(&["source", key]);
                p.push(Seg::Index(i));
                self.r.src.error_at_key(&p, m, None)
            };
            match item {
                Given::Ok(s) if !s.trim().is_empty() => {
                    if out.contains(s) {
                        return Err(at(format!("`{what}` lists column `{s}` twice")));
                    }
                    out.push(s.clone());
                }
                Given::Ok(_) => return Err(at(format!("`{what}[{i}]` is empty"))),
                Given::Other(other) => {
                    return Err(at(format!(
                        "`{what}[{i}]` must be a column name (a string), found {}",
                        toml_type(other)
                    )))
                }
            }
        }
        Ok(out)
    }

    /// A column named in two roles (label and feature, ...) is an error.
    pub(super) fn distinct_roles(&self, roles: &[(&str, Vec<String>)]) -> Result<()> {
        for (i, (a, names_a)) in roles.iter().enumerate() {
            for (b, names_b) in &roles[i + 1..] {
                if let Some(n) = names_a.iter().find(|n| names_b.contains(n)) {
                    return Err(self.source_err(
                        b,
                        format!(
                            "column `{n}` is named both in `{}` and in `{}`",
                            self.what(&format!("source.{a}")),
                            self.what(&format!("source.{b}"))
                        ),
                        Some("a column can have only one role".into()),
                    ));
                }
            }
        }
        Ok(())
    }
}
