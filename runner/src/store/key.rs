//! Stage keys: the content hash that names a stage's cached output in the store.
//!
//! A [`StageKey`] is a 32-byte blake3 digest, shown as 64 lowercase hex characters. It is built
//! by [`KeyBuilder`] from everything that can change a stage's output, and comes with
//! [`KeyParts`], the per-component record that lets `pretext plan` say *which* component
//! changed ([`KeyParts::diff`]).
//!
//! # Encoding (version 1)
//!
//! The key is a pure function of the [`KeyParts`] ([`KeyParts::key`]). With
//!
//! * `u64(n)`: `n` as 8 bytes little-endian,
//! * `str(s)`: `u64(byte length of s)` followed by the UTF-8 bytes of `s`,
//! * `digest(d)`: the 32 raw bytes of a blake3 digest,
//!
//! the key is `blake3` of the concatenation of
//!
//! 1. the 20 bytes `b"pretext-stage-key-v1"` (domain separation and encoding version),
//! 2. `str(kind)`,
//! 3. `digest(blake3(canonical_json(config)))` (see [`canonical_json`]),
//! 4. `u64(number of inputs)`, then for each input **sorted by name**:
//!    `str(name) digest(input key)`,
//! 5. `u64(number of plugins)`, then for each plugin **sorted by name**:
//!    `str(name) str(plugin library digest, as given)`,
//! 6. `str(runner version)`,
//! 7. `u64(seed)`,
//! 8. `str(device class)`.
//!
//! Every variable-length item is length-prefixed and every list count-prefixed, so two different
//! sets of parts can never produce the same byte string. Changing any of this is a new encoding
//! (`-v2`): the golden-key test in this file exists to catch accidental drift.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Domain-separation prefix (and encoding version) of every stage key.
pub const KEY_DOMAIN: &[u8] = b"pretext-stage-key-v1";

/// The key encoding version written into [`KeyParts::encoding`].
pub const KEY_ENCODING: u32 = 1;

/// A stage key: a 32-byte blake3 digest. Displays (and serializes) as 64 lowercase hex chars.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StageKey([u8; 32]);

impl StageKey {
    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        StageKey(bytes)
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-char lowercase hex form (same as `to_string()`).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The first 12 hex chars followed by `…`, for messages.
    pub fn short(&self) -> String {
        short_hex(&self.to_hex())
    }
}

impl fmt::Display for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageKey({})", self.to_hex())
    }
}

/// Error parsing a [`StageKey`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a stage key (expected 64 hex characters)")]
pub struct ParseKeyError(pub String);

impl FromStr for StageKey {
    type Err = ParseKeyError;

    /// Parses 64 hex characters (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseKeyError(s.to_string());
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or_else(err)?;
            let lo = hex_val(pair[1]).ok_or_else(err)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(StageKey(out))
    }
}

impl Serialize for StageKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for StageKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// The first 12 chars of a hex digest followed by `…` (the whole string if it is short).
pub(crate) fn short_hex(h: &str) -> String {
    match h.get(..12) {
        Some(p) if h.len() > 12 => format!("{p}…"),
        _ => h.to_string(),
    }
}

/// Canonical JSON text of a value: object keys sorted (by their UTF-8 bytes) at every depth, no
/// whitespace, strings escaped and numbers printed exactly as `serde_json` prints them (so `1`
/// and `1.0` differ, as they do in TOML).
///
/// This does not depend on whether `serde_json`'s `preserve_order` feature is enabled.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_json_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(k, out);
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
    }
}

fn write_json_str(s: &str, out: &mut String) {
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(s).expect("serializing a string to JSON cannot fail"));
}

/// blake3 hex digest of the canonical JSON of a config value.
pub fn config_digest(config: &Value) -> String {
    blake3::hash(canonical_json(config).as_bytes())
        .to_hex()
        .to_string()
}

/// Every component of a stage key, each with its own value or digest. Stored in each store
/// entry's `entry.json`, so a later run can explain why a stage's key changed.
///
/// The key is a pure function of these parts: see [`KeyParts::key`] and the module docs for the
/// encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyParts {
    /// Key encoding version ([`KEY_ENCODING`]).
    pub encoding: u32,
    /// Stage kind.
    pub kind: String,
    /// blake3 hex of the canonical JSON of the resolved config.
    pub config: String,
    /// The resolved config itself, kept so diffs can name the changed settings. It does not
    /// enter the key except through [`KeyParts::config`].
    #[serde(default)]
    pub config_value: Value,
    /// Input name -> upstream stage key.
    pub inputs: BTreeMap<String, StageKey>,
    /// Plugin name -> plugin library digest (blake3 hex).
    pub plugins: BTreeMap<String, String>,
    /// Runner version string.
    pub runner_version: String,
    /// Pipeline seed.
    pub seed: u64,
    /// Device class (`"cpu"`, `"cuda"`).
    pub device: String,
}

impl KeyParts {
    /// Recomputes the stage key from these parts (encoding version 1, see the module docs).
    ///
    /// Note this hashes [`KeyParts::config`], the config digest, not `config_value`.
    pub fn key(&self) -> StageKey {
        let mut h = blake3::Hasher::new();
        h.update(KEY_DOMAIN);
        put_str(&mut h, &self.kind);
        h.update(&config_digest_bytes(&self.config));
        put_u64(&mut h, self.inputs.len() as u64);
        for (name, key) in &self.inputs {
            put_str(&mut h, name);
            h.update(key.as_bytes());
        }
        put_u64(&mut h, self.plugins.len() as u64);
        for (name, digest) in &self.plugins {
            put_str(&mut h, name);
            put_str(&mut h, digest);
        }
        put_str(&mut h, &self.runner_version);
        put_u64(&mut h, self.seed);
        put_str(&mut h, &self.device);
        StageKey(*h.finalize().as_bytes())
    }

    /// Human-readable reasons why `self` (the new parts) differs from `old`, one per changed
    /// component, e.g. `"config changed (`lr`: 0.1 → 0.2)"`, `"input `data` changed (…)"`,
    /// `"plugin `simclr` changed"`, `"seed changed (7 → 8)"`. Empty when the parts are equal.
    pub fn diff(&self, old: &KeyParts) -> Vec<String> {
        let mut out = Vec::new();
        if self.encoding != old.encoding {
            out.push(format!(
                "key encoding changed (v{} → v{})",
                old.encoding, self.encoding
            ));
        }
        if self.kind != old.kind {
            out.push(format!(
                "stage kind changed (`{}` → `{}`)",
                old.kind, self.kind
            ));
        }
        if self.config != old.config {
            let mut changes = Vec::new();
            diff_values(&old.config_value, &self.config_value, "", &mut changes);
            if changes.is_empty() {
                out.push("config changed".to_string());
            } else {
                const MAX: usize = 5;
                let more = changes.len().saturating_sub(MAX);
                changes.truncate(MAX);
                let mut detail = changes.join(", ");
                if more > 0 {
                    detail.push_str(&format!(", and {more} more"));
                }
                out.push(format!("config changed ({detail})"));
            }
        }
        diff_maps("input", &old.inputs, &self.inputs, |k| k.short(), &mut out);
        diff_maps(
            "plugin",
            &old.plugins,
            &self.plugins,
            |d| short_hex(d),
            &mut out,
        );
        if self.runner_version != old.runner_version {
            out.push(format!(
                "runner version changed ({} → {})",
                old.runner_version, self.runner_version
            ));
        }
        if self.seed != old.seed {
            out.push(format!("seed changed ({} → {})", old.seed, self.seed));
        }
        if self.device != old.device {
            out.push(format!("device changed ({} → {})", old.device, self.device));
        }
        out
    }
}

fn diff_maps<V: PartialEq>(
    what: &str,
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    show: impl Fn(&V) -> String,
    out: &mut Vec<String>,
) {
    for (name, v) in new {
        match old.get(name) {
            None => out.push(format!("{what} `{name}` added")),
            Some(o) if o != v => out.push(format!(
                "{what} `{name}` changed ({} → {})",
                show(o),
                show(v)
            )),
            Some(_) => {}
        }
    }
    for name in old.keys() {
        if !new.contains_key(name) {
            out.push(format!("{what} `{name}` removed"));
        }
    }
}

/// Collects leaf-level differences between two config values as `"`path`: old → new"`.
fn diff_values(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    let show = |v: &Value| {
        let s = canonical_json(v);
        if s.chars().count() > 40 {
            format!("{}…", s.chars().take(39).collect::<String>())
        } else {
            s
        }
    };
    let shown_path = if path.is_empty() { "(root)" } else { path };
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (o.get(k), n.get(k)) {
                    (Some(a), Some(b)) => diff_values(a, b, &p, out),
                    (None, Some(b)) => out.push(format!("`{p}` added: {}", show(b))),
                    (Some(_), None) => out.push(format!("`{p}` removed")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
            for (i, (a, b)) in o.iter().zip(n).enumerate() {
                diff_values(a, b, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) => {
            if canonical_json(a) != canonical_json(b) {
                out.push(format!("`{shown_path}`: {} → {}", show(a), show(b)));
            }
        }
    }
}

fn put_u64(h: &mut blake3::Hasher, n: u64) {
    h.update(&n.to_le_bytes());
}

fn put_str(h: &mut blake3::Hasher, s: &str) {
    put_u64(h, s.len() as u64);
    h.update(s.as_bytes());
}

/// The raw bytes of a config digest. A digest that is not 64 hex chars (only possible with a
/// hand-edited `entry.json`) is hashed instead, so the result is still well-defined.
fn config_digest_bytes(hex_digest: &str) -> [u8; 32] {
    match hex_digest.parse::<StageKey>() {
        Ok(k) => *k.as_bytes(),
        Err(_) => *blake3::hash(hex_digest.as_bytes()).as_bytes(),
    }
}

/// Builds a [`StageKey`] (and its [`KeyParts`]) from every component that can change a stage's
/// output.
///
/// Set every component: unset ones take fixed defaults (`null` config, no inputs or plugins,
/// empty runner version, seed 0, empty device class) and do not raise an error, so a forgotten
/// `.device(..)` would make CPU and CUDA runs share cache entries.
///
/// Inputs and plugins are kept in maps: their order does not matter, and naming the same input
/// (or plugin) twice keeps the last value.
#[derive(Debug, Clone)]
pub struct KeyBuilder {
    parts: KeyParts,
}

impl KeyBuilder {
    /// Starts a key for a stage of the given kind.
    pub fn new(kind: impl Into<String>) -> Self {
        KeyBuilder {
            parts: KeyParts {
                encoding: KEY_ENCODING,
                kind: kind.into(),
                config: config_digest(&Value::Null),
                config_value: Value::Null,
                inputs: BTreeMap::new(),
                plugins: BTreeMap::new(),
                runner_version: String::new(),
                seed: 0,
                device: String::new(),
            },
        }
    }

    /// The stage's resolved config (hashed as canonical JSON).
    pub fn config(mut self, config: &Value) -> Self {
        self.parts.config = config_digest(config);
        self.parts.config_value = config.clone();
        self
    }

    /// An input slot and the key of the stage output feeding it.
    pub fn input(mut self, name: impl Into<String>, key: &StageKey) -> Self {
        self.parts.inputs.insert(name.into(), *key);
        self
    }

    /// A plugin the stage uses and the blake3 hex digest of its library file.
    pub fn plugin(mut self, name: impl Into<String>, digest: impl Into<String>) -> Self {
        self.parts.plugins.insert(name.into(), digest.into());
        self
    }

    /// The runner version string.
    pub fn runner_version(mut self, version: impl Into<String>) -> Self {
        self.parts.runner_version = version.into();
        self
    }

    /// The pipeline seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.parts.seed = seed;
        self
    }

    /// The device class (`"cpu"`, `"cuda"`).
    pub fn device(mut self, device: impl Into<String>) -> Self {
        self.parts.device = device.into();
        self
    }

    /// The stage key.
    pub fn finish(self) -> StageKey {
        self.parts.key()
    }

    /// The stage key and the parts it was computed from.
    pub fn finish_with_parts(self) -> (StageKey, KeyParts) {
        (self.parts.key(), self.parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upstream(name: &str) -> StageKey {
        KeyBuilder::new("source")
            .config(&json!({ "name": name }))
            .runner_version("0.1.0")
            .device("cpu")
            .finish()
    }

    fn example() -> KeyBuilder {
        KeyBuilder::new("ssl")
            .config(&json!({
                "optim": { "lr": 0.1, "kind": "adam" },
                "epochs": 3,
                "augment": ["crop", "flip"],
                "temperature": 0.5
            }))
            .input("data", &upstream("data"))
            .input("val", &upstream("val"))
            .plugin("simclr", "ab".repeat(32))
            .runner_version("0.1.0")
            .seed(7)
            .device("cpu")
    }

    #[test]
    fn golden_key() {
        // If this fails, the key encoding changed: every cached entry would be invalidated.
        // Only update it together with a new KEY_DOMAIN / KEY_ENCODING.
        assert_eq!(
            example().finish().to_hex(),
            "dbdcc1ba9d5feaeb40cb8179668ac5100372b12775df2bf2aa01482fd39ce48e",
            "stage key encoding drifted"
        );
    }

    #[test]
    fn encoding_matches_documentation() {
        // Rebuild the byte string by hand, exactly as the module docs describe it.
        let data = StageKey::from_bytes([7; 32]);
        let img = StageKey::from_bytes([9; 32]);
        let key = KeyBuilder::new("ssl")
            .config(&json!({ "b": 1, "a": [true, null] }))
            .input("img", &img)
            .input("data", &data)
            .plugin("simclr", "ff00")
            .runner_version("0.1.0")
            .seed(42)
            .device("cuda")
            .finish();

        fn s(out: &mut Vec<u8>, v: &str) {
            out.extend((v.len() as u64).to_le_bytes());
            out.extend(v.as_bytes());
        }
        let mut bytes = b"pretext-stage-key-v1".to_vec();
        s(&mut bytes, "ssl");
        bytes.extend(blake3::hash(br#"{"a":[true,null],"b":1}"#).as_bytes());
        bytes.extend(2u64.to_le_bytes());
        s(&mut bytes, "data");
        bytes.extend([7; 32]);
        s(&mut bytes, "img");
        bytes.extend([9; 32]);
        bytes.extend(1u64.to_le_bytes());
        s(&mut bytes, "simclr");
        s(&mut bytes, "ff00");
        s(&mut bytes, "0.1.0");
        bytes.extend(42u64.to_le_bytes());
        s(&mut bytes, "cuda");
        assert_eq!(key.as_bytes(), blake3::hash(&bytes).as_bytes());
    }

    #[test]
    fn same_inputs_same_key() {
        assert_eq!(example().finish(), example().finish());
        let (k, parts) = example().finish_with_parts();
        assert_eq!(k, parts.key());
        assert_eq!(k.to_hex().len(), 64);
        assert!(k
            .to_hex()
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    }

    #[test]
    fn key_changes_with_each_component() {
        let base = example().finish();
        let variants = [
            (
                "kind",
                KeyBuilder {
                    parts: KeyParts {
                        kind: "other".into(),
                        ..example().parts
                    },
                },
            ),
            ("config", example().config(&json!({ "epochs": 4 }))),
            ("input changed", example().input("data", &upstream("x"))),
            ("input added", example().input("extra", &upstream("data"))),
            (
                "plugin changed",
                example().plugin("simclr", "cd".repeat(32)),
            ),
            ("plugin added", example().plugin("byol", "ab".repeat(32))),
            ("runner", example().runner_version("0.2.0")),
            ("seed", example().seed(8)),
            ("device", example().device("cuda")),
        ];
        for (what, b) in variants {
            assert_ne!(b.finish(), base, "key did not change with {what}");
        }
    }

    #[test]
    fn input_and_plugin_order_does_not_matter() {
        let a = KeyBuilder::new("k")
            .input("a", &upstream("1"))
            .input("b", &upstream("2"))
            .plugin("p", "1")
            .plugin("q", "2")
            .finish();
        let b = KeyBuilder::new("k")
            .plugin("q", "2")
            .input("b", &upstream("2"))
            .plugin("p", "1")
            .input("a", &upstream("1"))
            .finish();
        assert_eq!(a, b);
        // Swapping which key feeds which input does matter.
        let c = KeyBuilder::new("k")
            .input("a", &upstream("2"))
            .input("b", &upstream("1"))
            .plugin("p", "1")
            .plugin("q", "2")
            .finish();
        assert_ne!(a, c);
    }

    #[test]
    fn length_prefixing_separates_fields() {
        // "ab" + "c" must not collide with "a" + "bc".
        let a = KeyBuilder::new("k").plugin("ab", "c").finish();
        let b = KeyBuilder::new("k").plugin("a", "bc").finish();
        assert_ne!(a, b);
        let a = KeyBuilder::new("k")
            .runner_version("1")
            .device("2")
            .finish();
        let b = KeyBuilder::new("k")
            .runner_version("12")
            .device("")
            .finish();
        assert_ne!(a, b);
    }

    #[test]
    fn canonical_json_ignores_object_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2.5, "x"], "x": null}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a": {"x": null, "y": [1, 2.5, "x"]}, "b": 1}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[1,2.5,"x"]},"b":1}"#
        );
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            KeyBuilder::new("k").config(&a).finish(),
            KeyBuilder::new("k").config(&b).finish()
        );
        // Integers and floats differ, as in TOML.
        assert_ne!(
            canonical_json(&json!({ "lr": 1 })),
            canonical_json(&json!({ "lr": 1.0 }))
        );
        assert_eq!(canonical_json(&json!("a\"b\n")), r#""a\"b\n""#);
    }

    #[test]
    fn key_hex_round_trip_and_serde() {
        let k = example().finish();
        assert_eq!(k.to_string().parse::<StageKey>().unwrap(), k);
        assert_eq!(k.to_hex().to_uppercase().parse::<StageKey>().unwrap(), k);
        assert!("xyz".parse::<StageKey>().is_err());
        assert!("g".repeat(64).parse::<StageKey>().is_err());
        let j = serde_json::to_string(&k).unwrap();
        assert_eq!(j, format!("\"{k}\""));
        assert_eq!(serde_json::from_str::<StageKey>(&j).unwrap(), k);
        assert_eq!(k.short().chars().count(), 13);
    }

    #[test]
    fn parts_serde_round_trip_keeps_key() {
        let (k, parts) = example().finish_with_parts();
        let text = serde_json::to_string(&parts).unwrap();
        let back: KeyParts = serde_json::from_str(&text).unwrap();
        assert_eq!(back, parts);
        assert_eq!(back.key(), k);
    }

    #[test]
    fn diff_names_each_changed_component() {
        let (_, old) = example().finish_with_parts();
        assert!(example().finish_with_parts().1.diff(&old).is_empty());

        let (_, new) = example()
            .config(&json!({
                "optim": { "lr": 0.2, "kind": "adam" },
                "epochs": 3,
                "augment": ["crop", "flip"],
                "warmup": 1
            }))
            .input("data", &upstream("other"))
            .input("extra", &upstream("extra"))
            .plugin("simclr", "cd".repeat(32))
            .runner_version("0.2.0")
            .seed(8)
            .device("cuda")
            .finish_with_parts();
        let reasons = new.diff(&old);
        let has = |needle: &str| {
            assert!(
                reasons.iter().any(|r| r.contains(needle)),
                "no reason containing {needle:?} in {reasons:#?}"
            )
        };
        has("config changed (");
        has("`optim.lr`: 0.1 → 0.2");
        has("`temperature` removed");
        has("`warmup` added: 1");
        has("input `data` changed (");
        has("input `extra` added");
        has("plugin `simclr` changed (abababababab… → cdcdcdcdcdcd…)");
        has("runner version changed (0.1.0 → 0.2.0)");
        has("seed changed (7 → 8)");
        has("device changed (cpu → cuda)");
        assert_eq!(reasons.len(), 7, "{reasons:#?}");

        let (_, fewer) = KeyBuilder::new("ssl2")
            .config(&json!({}))
            .runner_version("0.1.0")
            .seed(7)
            .device("cpu")
            .finish_with_parts();
        let reasons = fewer.diff(&old);
        assert!(reasons.contains(&"stage kind changed (`ssl` → `ssl2`)".to_string()));
        assert!(reasons.contains(&"input `data` removed".to_string()));
        assert!(reasons.contains(&"input `val` removed".to_string()));
        assert!(reasons.contains(&"plugin `simclr` removed".to_string()));

        // Without the config values (e.g. hand-trimmed entry.json) the reason is still given.
        let mut a = old.clone();
        a.config_value = Value::Null;
        let mut b = new.clone();
        b.config_value = Value::Null;
        assert!(b.diff(&a).contains(&"config changed".to_string()));
    }
}
