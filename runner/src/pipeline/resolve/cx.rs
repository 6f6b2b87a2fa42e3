//! What every stage's resolution shares: the [`Resolver`] (the file being resolved and its
//! directory), the per-stage [`StageCx`] (key paths and messages under `stages.<name>`),
//! number and keyword checks, and TOML-to-JSON for plugin parameters.

use std::ops::Range;
use std::path::Path;

use serde_json::{Map, Value};
use toml::Spanned;

use super::super::error::{did_you_mean, list, PipelineError, Seg, Source};
use super::super::types::ConfigPath;
use super::{normalize, Result};

/// The help line for an unknown word: a did-you-mean among `candidates`, or else `intro`
/// followed by the list of `listed` (usually the same words).
pub(super) fn unknown_help<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    intro: &str,
    listed: impl IntoIterator<Item = &'a str>,
) -> String {
    did_you_mean(word, candidates).unwrap_or_else(|| format!("{intro} {}", list(listed)))
}

/// "Choose a keyword or suggest one": the value `word` names among `choices`, or, when it names
/// none, the help line for the error (a did-you-mean among the choices, or `intro` followed by
/// the list of them, e.g. "expected one of `fail`, `skip`").
pub(super) fn choose<T: Copy>(
    word: &str,
    choices: &[(&str, T)],
    intro: &str,
) -> std::result::Result<T, String> {
    match choices.iter().find(|(w, _)| *w == word) {
        Some((_, value)) => Ok(*value),
        None => {
            let words = || choices.iter().map(|(w, _)| *w);
            Err(unknown_help(word, words(), intro, words()))
        }
    }
}

pub(super) struct Resolver<'s, 'a> {
    pub src: &'s Source<'a>,
    pub dir: &'s Path,
}

impl Resolver<'_, '_> {
    pub fn path(&self, written: &str) -> ConfigPath {
        ConfigPath {
            written: written.to_string(),
            resolved: normalize(&self.dir.join(written)),
        }
    }

    pub fn non_empty_path(&self, v: &Spanned<String>, what: &str) -> Result<String> {
        if v.get_ref().trim().is_empty() {
            return Err(self
                .src
                .error_at(&v.span(), format!("`{what}` must not be empty"), None));
        }
        Ok(v.get_ref().clone())
    }

    /// An integer in `[min, max]`.
    pub fn int(&self, v: &Spanned<i64>, what: &str, min: i64, max: Option<i64>) -> Result<u64> {
        let x = *v.get_ref();
        if x < min || max.is_some_and(|m| x > m) {
            let rule = match (min, max) {
                (1, None) => "a positive integer".to_string(),
                (0, None) => "a non-negative integer".to_string(),
                (lo, Some(hi)) => format!("an integer from {lo} to {hi}"),
                (lo, None) => format!("an integer of at least {lo}"),
            };
            return Err(self.src.error_at(
                &v.span(),
                format!("`{what}` must be {rule}, found {x}"),
                None,
            ));
        }
        Ok(x as u64)
    }

    pub fn float(&self, v: &Spanned<f64>, what: &str, rule: FloatRule) -> Result<f64> {
        let x = *v.get_ref();
        let ok = x.is_finite()
            && match rule {
                FloatRule::Finite => true,
                FloatRule::Positive => x > 0.0,
                FloatRule::NonNegative => x >= 0.0,
                FloatRule::HalfOpenUnit => (0.0..1.0).contains(&x),
                FloatRule::OpenUnit => x > 0.0 && x < 1.0,
            };
        if !ok {
            let rule = match rule {
                FloatRule::Finite => "a finite number",
                FloatRule::Positive => "a number greater than 0",
                FloatRule::NonNegative => "a number of at least 0",
                FloatRule::HalfOpenUnit => "a number in [0, 1)",
                FloatRule::OpenUnit => "a number strictly between 0 and 1",
            };
            return Err(self.src.error_at(
                &v.span(),
                format!("`{what}` must be {rule}, found {x}"),
                None,
            ));
        }
        Ok(x)
    }
}

#[derive(Clone, Copy)]
pub(super) enum FloatRule {
    Finite,
    Positive,
    NonNegative,
    HalfOpenUnit,
    OpenUnit,
}

/// Converts a TOML value to JSON for plugin parameters.
pub(super) fn to_json(v: &toml::Value) -> std::result::Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| {
                format!(
                    "must be a finite number, found {}",
                    f.to_string().to_lowercase()
                )
            })?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .iter()
                .map(to_json)
                .collect::<std::result::Result<_, _>>()?,
        ),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<std::result::Result<Map<_, _>, String>>()?,
        ),
    })
}

/// A TOML value's type, in words: "an integer", "a table", ...
pub(super) fn toml_type(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Resolution of one stage.
pub(super) struct StageCx<'r, 's, 'a> {
    pub r: &'r Resolver<'s, 'a>,
    pub name: &'r str,
}

impl StageCx<'_, '_, '_> {
    /// `stages.<name>.<key>`, as messages name a key.
    pub fn what(&self, key: &str) -> String {
        format!("stages.{}.{key}", self.name)
    }

    pub fn segs(&self, keys: &[&str]) -> Vec<Seg> {
        let mut segs = vec![Seg::key("stages"), Seg::key(self.name)];
        segs.extend(keys.iter().map(|k| Seg::key(k)));
        segs
    }

    /// An error at the key `stages.<name>.<keys..>`.
    pub fn err_key(
        &self,
        keys: &[&str],
        message: impl Into<String>,
        help: Option<String>,
    ) -> PipelineError {
        self.r.src.error_at_key(&self.segs(keys), message, help)
    }

    /// An error at a value.
    pub fn err_at(
        &self,
        v: &Spanned<impl Sized>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> PipelineError {
        self.r.src.error_at(&v.span(), message, help)
    }

    /// An error at a byte span.
    pub fn err_span(
        &self,
        span: &Range<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> PipelineError {
        self.r.src.error_at(span, message, help)
    }

    /// An optional integer key in `[min, max]`, or `default`.
    pub fn int(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        min: i64,
        max: Option<i64>,
        default: u64,
    ) -> Result<u64> {
        v.as_ref()
            .map_or(Ok(default), |v| self.r.int(v, &self.what(key), min, max))
    }

    /// An optional number key that follows `rule`, or `default`.
    pub fn float(
        &self,
        v: &Option<Spanned<f64>>,
        key: &str,
        rule: FloatRule,
        default: f64,
    ) -> Result<f64> {
        v.as_ref()
            .map_or(Ok(default), |v| self.r.float(v, &self.what(key), rule))
    }

    /// The keyword `v` among `choices`, or an error at `v`: `message(word)`, with a did-you-mean
    /// or `intro` and the list of choices as help (see [`choose`]).
    pub fn keyword<T: Copy>(
        &self,
        v: &Spanned<String>,
        choices: &[(&str, T)],
        intro: &str,
        message: impl FnOnce(&str) -> String,
    ) -> Result<T> {
        choose(v.get_ref(), choices, intro)
            .map_err(|help| self.err_at(v, message(v.get_ref()), Some(help)))
    }

    /// An optional keyword key: [`StageCx::keyword`], or `default` when the key is left out.
    pub fn keyword_or<T: Copy>(
        &self,
        v: &Option<Spanned<String>>,
        default: T,
        choices: &[(&str, T)],
        intro: &str,
        message: impl FnOnce(&str) -> String,
    ) -> Result<T> {
        v.as_ref()
            .map_or(Ok(default), |v| self.keyword(v, choices, intro, message))
    }

    /// `{ plugin/name = "...", ..params }` tables: the name key and the rest
    /// as JSON. `path` is the table's key path, `what` how messages name it.
    pub fn named_table(
        &self,
        table: &toml::Table,
        path: &[Seg],
        what: &str,
        name_key: &str,
    ) -> Result<(Option<String>, Value)> {
        let mut name = None;
        let mut params = Map::new();
        for (k, v) in table {
            let mut p = path.to_vec();
            p.push(Seg::key(k));
            let at = |m: String| self.r.src.error_at_key(&p, m, None);
            match v {
                toml::Value::String(s) if k == name_key && !s.trim().is_empty() => {
                    name = Some(s.clone())
                }
                toml::Value::String(_) if k == name_key => {
                    return Err(at(format!("`{what}.{k}` must not be empty")))
                }
                other if k == name_key => {
                    let found = toml_type(other);
                    return Err(at(format!("`{what}.{k}` must be a string, found {found}")));
                }
                _ => {
                    let json = to_json(v).map_err(|m| at(format!("`{what}.{k}` {m}")))?;
                    params.insert(k.clone(), json);
                }
            }
        }
        Ok((name, Value::Object(params)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_of_toml_values() {
        let t: toml::Table = toml::from_str("a = 1\nb = [0.5, true]\nc = { d = \"x\" }\n").unwrap();
        let v = to_json(&toml::Value::Table(t)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": [0.5, true], "c": {"d": "x"}})
        );
        assert!(to_json(&toml::Value::Float(f64::NAN)).is_err());
    }

    #[test]
    fn keywords_are_chosen_or_suggested() {
        const CHOICES: [(&str, u8); 2] = [("fail", 1), ("skip", 2)];
        assert_eq!(choose("skip", &CHOICES, "expected one of"), Ok(2));
        assert_eq!(
            choose("skp", &CHOICES, "expected one of"),
            Err("did you mean `skip`?".to_string())
        );
        assert_eq!(
            choose("zzz", &CHOICES, "expected one of"),
            Err("expected one of `fail`, `skip`".to_string())
        );
    }
}
