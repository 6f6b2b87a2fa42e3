//! Typed access to a plugin's parameters (`key = value` pairs from the pipeline file), with
//! unknown keys reported as errors once the plugin has read the keys it knows.

use crate::abi::{self, PtxParam};
use crate::{Error, Result};

/// One parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    FloatList(Vec<f64>),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::FloatList(_) => "a list of numbers",
        }
    }
}

/// The parameters given to a plugin. Read each known key with a typed getter (with its
/// default), then call [`Params::finish`] to reject keys the plugin does not know.
#[derive(Debug, Clone, Default)]
pub struct Params {
    owner: String,
    entries: Vec<(String, Value)>,
    read: Vec<String>,
}

impl Params {
    /// Parameters for a plugin named `owner` (used in error messages).
    pub fn new(owner: &str, entries: Vec<(String, Value)>) -> Self {
        Params {
            owner: owner.to_string(),
            entries,
            read: Vec::new(),
        }
    }

    /// # Safety
    /// `ptr` must point to `n` valid [`PtxParam`]s whose strings and lists are valid.
    pub(crate) unsafe fn from_raw(owner: &str, ptr: *const PtxParam, n: usize) -> Result<Self> {
        let raw = if n == 0 || ptr.is_null() {
            &[][..]
        } else {
            std::slice::from_raw_parts(ptr, n)
        };
        let mut entries = Vec::with_capacity(n);
        for p in raw {
            let key = p.key.as_str().to_string();
            let value = match p.kind {
                abi::PARAM_BOOL => Value::Bool(p.b != 0),
                abi::PARAM_INT => Value::Int(p.i),
                abi::PARAM_FLOAT => Value::Float(p.f),
                abi::PARAM_STR => Value::Str(p.s.as_str().to_string()),
                abi::PARAM_FLOAT_LIST => {
                    let list = if p.list.is_null() || p.list_len == 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(p.list, p.list_len).to_vec()
                    };
                    Value::FloatList(list)
                }
                other => {
                    return Err(Error::msg(format!(
                        "parameter `{key}` has unknown value kind {other} (host/SDK mismatch)"
                    )))
                }
            };
            entries.push((key, value));
        }
        Ok(Params::new(owner, entries))
    }

    fn take(&mut self, key: &str) -> Option<&Value> {
        self.read.push(key.to_string());
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn wrong_type(&self, key: &str, want: &str, got: &Value) -> Error {
        Error::msg(format!(
            "{}: parameter `{key}` must be {want}, but it is {}",
            self.owner,
            got.type_name()
        ))
    }

    /// A number (integers are accepted).
    pub fn f64(&mut self, key: &str, default: f64) -> Result<f64> {
        match self.take(key).cloned() {
            None => Ok(default),
            Some(Value::Float(f)) => Ok(f),
            Some(Value::Int(i)) => Ok(i as f64),
            Some(v) => Err(self.wrong_type(key, "a number", &v)),
        }
    }

    /// A number that must lie in `lo..=hi`.
    pub fn f64_in(&mut self, key: &str, default: f64, lo: f64, hi: f64) -> Result<f64> {
        let v = self.f64(key, default)?;
        if !(v >= lo && v <= hi) {
            return Err(Error::msg(format!(
                "{}: parameter `{key}` = {v} is out of range: it must be between {lo} and {hi}",
                self.owner
            )));
        }
        Ok(v)
    }

    /// A non-negative integer.
    pub fn usize(&mut self, key: &str, default: usize) -> Result<usize> {
        match self.take(key).cloned() {
            None => Ok(default),
            Some(Value::Int(i)) if i >= 0 => Ok(i as usize),
            Some(Value::Int(i)) => Err(Error::msg(format!(
                "{}: parameter `{key}` = {i} must not be negative",
                self.owner
            ))),
            Some(v) => Err(self.wrong_type(key, "an integer", &v)),
        }
    }

    pub fn bool(&mut self, key: &str, default: bool) -> Result<bool> {
        match self.take(key).cloned() {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(b),
            Some(v) => Err(self.wrong_type(key, "a boolean", &v)),
        }
    }

    pub fn string(&mut self, key: &str, default: &str) -> Result<String> {
        match self.take(key).cloned() {
            None => Ok(default.to_string()),
            Some(Value::Str(s)) => Ok(s),
            Some(v) => Err(self.wrong_type(key, "a string", &v)),
        }
    }

    /// A list of numbers; a single number is accepted as a list of one.
    pub fn f64_list(&mut self, key: &str, default: &[f64]) -> Result<Vec<f64>> {
        match self.take(key).cloned() {
            None => Ok(default.to_vec()),
            Some(Value::FloatList(l)) => Ok(l),
            Some(Value::Float(f)) => Ok(vec![f]),
            Some(Value::Int(i)) => Ok(vec![i as f64]),
            Some(v) => Err(self.wrong_type(key, "a list of numbers", &v)),
        }
    }

    /// Fails on the first key that was never read, suggesting the closest known key.
    pub fn finish(&self) -> Result<()> {
        for (key, _) in &self.entries {
            if !self.read.iter().any(|r| r == key) {
                let mut known: Vec<&str> = self.read.iter().map(|s| s.as_str()).collect();
                known.sort_unstable();
                known.dedup();
                let hint = closest(key, &known)
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                let list = if known.is_empty() {
                    "it takes no parameters".to_string()
                } else {
                    format!("known parameters: {}", known.join(", "))
                };
                return Err(Error::msg(format!(
                    "{}: unknown parameter `{key}`{hint}; {list}",
                    self.owner
                )));
            }
        }
        Ok(())
    }
}

/// The known key with the smallest edit distance to `key`, if it is close enough to be a typo.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= (k.len().max(key.len()) / 3).max(1))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(entries: &[(&str, Value)]) -> Params {
        Params::new(
            "test",
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn typed_getters_and_defaults() {
        let mut p = params(&[("t", Value::Float(0.5)), ("k", Value::Int(3))]);
        assert_eq!(p.f64("t", 1.0).unwrap(), 0.5);
        assert_eq!(p.usize("k", 1).unwrap(), 3);
        assert_eq!(p.f64("k", 0.0).unwrap(), 3.0);
        assert_eq!(p.f64("missing", 2.5).unwrap(), 2.5);
        p.finish().unwrap();
    }

    #[test]
    fn unknown_key_suggests_closest() {
        let mut p = params(&[("temprature", Value::Float(0.5))]);
        p.f64("temperature", 0.1).unwrap();
        let err = p.finish().unwrap_err().to_string();
        assert!(
            err.contains("unknown parameter `temprature` (did you mean `temperature`?)"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_and_range() {
        let mut p = params(&[("t", Value::Str("x".into())), ("r", Value::Float(3.0))]);
        let err = p.f64("t", 0.1).unwrap_err().to_string();
        assert_eq!(
            err,
            "test: parameter `t` must be a number, but it is a string"
        );
        let err = p.f64_in("r", 0.5, 0.0, 1.0).unwrap_err().to_string();
        assert!(err.contains("out of range"), "{err}");
    }
}
