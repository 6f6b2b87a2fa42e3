//! `pretext.lock`: the record, written beside the pipeline file, of which key and output digests
//! each stage had in the last run, so `pretext run --locked` can refuse to run when anything
//! would differ.
//!
//! The file is pretty-printed JSON with a fixed key order (struct fields in declaration order,
//! maps sorted), a trailing newline, and no timestamps or absolute paths: the same pipeline run
//! writes byte-identical files on any machine, and a change shows as a small diff.
//!
//! ```json
//! {
//!   "version": 1,
//!   "pipeline": "simclr-cifar",
//!   "seed": 7,
//!   "runner": "0.1.0",
//!   "device": "cpu",
//!   "stages": {
//!     "ssl": {
//!       "kind": "ssl",
//!       "key": "<64 hex>",
//!       "outputs": { "model.safetensors": "<blake3 hex>" },
//!       "plugins": { "simclr": "<blake3 hex>" }
//!     }
//!   }
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{Result, StoreError};
use super::key::{short_hex, StageKey};
use super::Entry;

/// The lockfile format version this runner reads and writes.
pub const LOCKFILE_VERSION: u32 = 1;

/// Version of the `pretext.lock` file format that holds one section per pipeline.
pub const LOCKFILE_SET_VERSION: u32 = 2;

/// `pretext.lock`: one [`Lockfile`] section per pipeline name, so several pipelines can live in
/// one folder; a run rewrites only its own section. Deterministic pretty JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockfileSet {
    /// Format version ([`LOCKFILE_SET_VERSION`]).
    pub version: u32,
    /// Pipeline name -> its lock.
    pub pipelines: BTreeMap<String, Lockfile>,
}

impl Default for LockfileSet {
    fn default() -> Self {
        LockfileSet {
            version: LOCKFILE_SET_VERSION,
            pipelines: BTreeMap::new(),
        }
    }
}

impl LockfileSet {
    /// Reads `pretext.lock`: `Ok(None)` when it does not exist. A version-1 file (one
    /// pipeline) is read as a set with that one section.
    pub fn load(path: impl AsRef<Path>) -> Result<Option<LockfileSet>> {
        let path = path.as_ref();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("cannot read lockfile", path, e)),
        };
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let parse_err = |source| StoreError::Parse {
            what: "pretext lockfile",
            path: path.to_path_buf(),
            source,
        };
        let v: VersionOnly = serde_json::from_str(&text).map_err(parse_err)?;
        match v.version {
            LOCKFILE_SET_VERSION => serde_json::from_str(&text).map(Some).map_err(parse_err),
            LOCKFILE_VERSION => {
                let one: Lockfile = serde_json::from_str(&text).map_err(parse_err)?;
                let mut set = LockfileSet::default();
                set.pipelines.insert(one.pipeline.clone(), one);
                Ok(Some(set))
            }
            found => Err(StoreError::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
                supported: LOCKFILE_SET_VERSION,
            }),
        }
    }

    pub fn get(&self, pipeline: &str) -> Option<&Lockfile> {
        self.pipelines.get(pipeline)
    }

    /// Set (or replace) one pipeline's section.
    pub fn insert(&mut self, lock: Lockfile) {
        self.pipelines.insert(lock.pipeline.clone(), lock);
    }

    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a lockfile always serializes");
        s.push('\n');
        s
    }

    /// Write atomically (temporary file, fsync, rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_text())
    }
}

/// One pipeline's section of `pretext.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockfile {
    /// Format version ([`LOCKFILE_VERSION`]).
    pub version: u32,
    /// Pipeline name.
    pub pipeline: String,
    /// Pipeline seed.
    pub seed: u64,
    /// Runner version string.
    pub runner: String,
    /// Device class (`"cpu"`, `"cuda"`).
    pub device: String,
    /// Stage name -> what it produced.
    pub stages: BTreeMap<String, LockedStage>,
}

/// One stage in `pretext.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedStage {
    /// Stage kind.
    pub kind: String,
    /// Stage key.
    pub key: StageKey,
    /// Output file (relative path with `/`) -> blake3 hex.
    pub outputs: BTreeMap<String, String>,
    /// Plugin name -> plugin library digest.
    pub plugins: BTreeMap<String, String>,
}

impl LockedStage {
    /// The lock record of a store entry: its kind, key, output digests and plugin digests.
    pub fn from_entry(entry: &Entry) -> Self {
        let meta = &entry.meta;
        LockedStage {
            kind: meta.kind.clone(),
            key: meta.key,
            outputs: meta
                .files
                .iter()
                .map(|(rel, d)| (rel.clone(), d.blake3.clone()))
                .collect(),
            plugins: meta.parts.plugins.clone(),
        }
    }
}

impl Lockfile {
    /// An empty lockfile for a pipeline run.
    pub fn new(
        pipeline: impl Into<String>,
        seed: u64,
        runner: impl Into<String>,
        device: impl Into<String>,
    ) -> Self {
        Lockfile {
            version: LOCKFILE_VERSION,
            pipeline: pipeline.into(),
            seed,
            runner: runner.into(),
            device: device.into(),
            stages: BTreeMap::new(),
        }
    }

    /// Reads a lockfile; `Ok(None)` when the file does not exist.
    pub fn load(path: impl AsRef<Path>) -> Result<Option<Lockfile>> {
        let path = path.as_ref();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("cannot read lockfile", path, e)),
        };
        // Check the version first, so a newer format gets a version message, not a parse error.
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let parse_err = |source| StoreError::Parse {
            what: "pretext lockfile",
            path: path.to_path_buf(),
            source,
        };
        let v: VersionOnly = serde_json::from_str(&text).map_err(parse_err)?;
        if v.version != LOCKFILE_VERSION {
            return Err(StoreError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: v.version,
                supported: LOCKFILE_VERSION,
            });
        }
        serde_json::from_str(&text).map(Some).map_err(parse_err)
    }

    /// The exact text [`Lockfile::save`] writes: pretty JSON (2-space indent) and a newline.
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a lockfile always serializes");
        s.push('\n');
        s
    }

    /// Writes the lockfile atomically: to a temporary file in the same folder, flushed to disk,
    /// then renamed over `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_text())
    }
}

/// Write `text` to `path` atomically: a temporary file in the same folder, flushed to disk,
/// then renamed over `path`.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pretext.lock".to_string());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io("cannot write lockfile", &tmp, e));
        }
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io("cannot replace lockfile", path, e));
        }
        super::sync_dir(&dir);
        Ok(())
    }
}

impl Lockfile {
    /// Differences between `self` (what this run would record) and `old` (the recorded
    /// lockfile), in plain words; `pretext run --locked` fails when this is not empty.
    ///
    /// Reports, in this order: format version, pipeline name, seed, runner version, device, then
    /// per stage (sorted by name): new / removed stages, kind, key, output and plugin changes.
    pub fn compare(&self, old: &Lockfile) -> Vec<String> {
        let mut out = Vec::new();
        changed(&mut out, "lockfile version", &old.version, &self.version);
        if old.pipeline != self.pipeline {
            out.push(format!(
                "pipeline name changed `{}` → `{}`",
                old.pipeline, self.pipeline
            ));
        }
        changed(&mut out, "seed", &old.seed, &self.seed);
        changed(&mut out, "runner version", &old.runner, &self.runner);
        changed(&mut out, "device", &old.device, &self.device);

        let names: std::collections::BTreeSet<&String> =
            old.stages.keys().chain(self.stages.keys()).collect();
        for name in names {
            let (o, n) = match (old.stages.get(name), self.stages.get(name)) {
                (None, Some(_)) => {
                    out.push(format!("stage `{name}` is new"));
                    continue;
                }
                (Some(_), None) => {
                    out.push(format!("stage `{name}` was removed"));
                    continue;
                }
                (Some(o), Some(n)) => (o, n),
                (None, None) => continue,
            };
            if o.kind != n.kind {
                out.push(format!(
                    "stage `{name}`: kind changed `{}` → `{}`",
                    o.kind, n.kind
                ));
            }
            if o.key != n.key {
                out.push(format!(
                    "stage `{name}`: key changed ({} → {})",
                    o.key.short(),
                    n.key.short()
                ));
            }
            compare_maps(&mut out, name, "output", "digest ", &o.outputs, &n.outputs);
            compare_maps(&mut out, name, "plugin", "", &o.plugins, &n.plugins);
        }
        out
    }
}

fn changed<T: PartialEq + Display>(out: &mut Vec<String>, what: &str, old: &T, new: &T) {
    if old != new {
        out.push(format!("{what} changed {old} → {new}"));
    }
}

fn compare_maps(
    out: &mut Vec<String>,
    stage: &str,
    what: &str,
    digest_word: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) {
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        match (old.get(name), new.get(name)) {
            (None, Some(_)) => out.push(format!("stage `{stage}`: {what} `{name}` is new")),
            (Some(_), None) => out.push(format!("stage `{stage}`: {what} `{name}` was removed")),
            (Some(o), Some(n)) if o != n => out.push(format!(
                "stage `{stage}`: {what} `{name}` {digest_word}changed ({} → {})",
                short_hex(o),
                short_hex(n)
            )),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::KeyBuilder;
    use super::*;

    fn key(n: u64) -> StageKey {
        KeyBuilder::new("k").seed(n).finish()
    }

    fn sample() -> Lockfile {
        let mut l = Lockfile::new("demo", 7, "0.1.0", "cpu");
        l.stages.insert(
            "ssl".into(),
            LockedStage {
                kind: "ssl".into(),
                key: key(1),
                outputs: [("model.safetensors".to_string(), "aa".repeat(32))].into(),
                plugins: [("simclr".to_string(), "bb".repeat(32))].into(),
            },
        );
        l.stages.insert(
            "data".into(),
            LockedStage {
                kind: "dataset".into(),
                key: key(2),
                outputs: [("train.parquet".to_string(), "cc".repeat(32))].into(),
                plugins: BTreeMap::new(),
            },
        );
        l
    }

    #[test]
    fn round_trip_is_stable_and_sorted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pretext.lock");
        assert_eq!(Lockfile::load(&p).unwrap(), None);
        let l = sample();
        l.save(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(Lockfile::load(&p).unwrap(), Some(l.clone()));
        // Saving again gives identical bytes; no temp files are left behind.
        l.save(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        // Stable order: header fields in declaration order, stages sorted by name.
        let pos = |s: &str| text.find(s).unwrap();
        assert!(pos("\"version\": 1") < pos("\"pipeline\""));
        assert!(pos("\"pipeline\"") < pos("\"seed\": 7"));
        assert!(pos("\"device\"") < pos("\"stages\""));
        assert!(pos("\"data\": {") < pos("\"ssl\": {"));
        assert!(pos("\"kind\"") < pos("\"key\""));
        assert!(pos("\"outputs\"") < pos("\"plugins\""));
        assert!(text.ends_with("}\n"));
        assert!(!text.contains(d.path().to_str().unwrap()));
    }

    #[test]
    fn load_errors_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pretext.lock");
        std::fs::write(&p, "{ not json").unwrap();
        let msg = Lockfile::load(&p).unwrap_err().to_string();
        assert!(msg.contains(p.to_str().unwrap()), "{msg}");
        assert!(msg.contains("delete it"), "{msg}");

        std::fs::write(&p, r#"{"version": 2}"#).unwrap();
        let err = Lockfile::load(&p).unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );

        std::fs::write(&p, r#"{"version": 1, "pipeline": "x"}"#).unwrap();
        assert!(matches!(
            Lockfile::load(&p).unwrap_err(),
            StoreError::Parse { .. }
        ));
    }

    #[test]
    fn compare_reports_each_kind_of_difference() {
        let old = sample();
        assert!(old.compare(&old.clone()).is_empty());

        let mut new = sample();
        new.seed = 8;
        new.runner = "0.2.0".into();
        new.device = "cuda".into();
        new.pipeline = "demo2".into();
        new.stages.remove("data");
        new.stages.insert(
            "eval".into(),
            LockedStage {
                kind: "eval".into(),
                key: key(3),
                outputs: BTreeMap::new(),
                plugins: BTreeMap::new(),
            },
        );
        let ssl = new.stages.get_mut("ssl").unwrap();
        ssl.key = key(4);
        ssl.kind = "ssl2".into();
        ssl.outputs
            .insert("model.safetensors".into(), "dd".repeat(32));
        ssl.outputs.insert("metrics.json".into(), "ee".repeat(32));
        ssl.plugins.insert("simclr".into(), "ff".repeat(32));
        ssl.plugins.insert("byol".into(), "11".repeat(32));

        let diffs = new.compare(&old);
        let expected = [
            "pipeline name changed `demo` → `demo2`".to_string(),
            "seed changed 7 → 8".to_string(),
            "runner version changed 0.1.0 → 0.2.0".to_string(),
            "device changed cpu → cuda".to_string(),
            "stage `data` was removed".to_string(),
            "stage `eval` is new".to_string(),
            "stage `ssl`: kind changed `ssl` → `ssl2`".to_string(),
            format!(
                "stage `ssl`: key changed ({} → {})",
                key(1).short(),
                key(4).short()
            ),
            "stage `ssl`: output `metrics.json` is new".to_string(),
            "stage `ssl`: output `model.safetensors` digest changed (aaaaaaaaaaaa… → dddddddddddd…)"
                .to_string(),
            "stage `ssl`: plugin `byol` is new".to_string(),
            "stage `ssl`: plugin `simclr` changed (bbbbbbbbbbbb… → ffffffffffff…)".to_string(),
        ];
        assert_eq!(diffs, expected);

        // The reverse direction reports removals.
        let back = old.compare(&new);
        assert!(back.contains(&"stage `eval` was removed".to_string()));
        assert!(back.contains(&"stage `ssl`: output `metrics.json` was removed".to_string()));
        assert!(back.contains(&"stage `ssl`: plugin `byol` was removed".to_string()));
        assert!(back.contains(&"seed changed 8 → 7".to_string()));
    }

    #[test]
    fn lockfile_set_keeps_sections_and_reads_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pretext.lock");
        let mut one = Lockfile::new("a", 1, "r", "cpu");
        one.save(&path).unwrap();
        let set = LockfileSet::load(&path).unwrap().unwrap();
        assert_eq!(set.version, LOCKFILE_SET_VERSION);
        assert_eq!(set.get("a"), Some(&one));
        let mut set = set;
        one.seed = 2;
        set.insert(one.clone());
        set.insert(Lockfile::new("b", 3, "r", "cpu"));
        set.save(&path).unwrap();
        let back = LockfileSet::load(&path).unwrap().unwrap();
        assert_eq!(back, set);
        assert_eq!(back.get("a").unwrap().seed, 2);
        assert!(back.get("b").is_some() && back.get("c").is_none());
        assert!(LockfileSet::load(dir.path().join("missing.lock"))
            .unwrap()
            .is_none());
        std::fs::write(&path, r#"{"version": 9}"#).unwrap();
        assert!(LockfileSet::load(&path)
            .unwrap_err()
            .to_string()
            .contains("9"));
    }
}
