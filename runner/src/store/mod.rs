//! The content-addressed stage store: a folder (by default `.pretext/` beside the pipeline)
//! holding one complete output folder per stage key, plus the writer lock and `pretext.lock`.
//!
//! # Layout
//!
//! ```text
//! <root>/store.lock                     runs' lock (flock): shared by running processes
//! <root>/locks/<kind>-<key-hex>.lock    entry lock (flock) while one process computes it
//! <root>/objects/<kind>/<key-hex>/      one complete entry: the stage's files + entry.json
//! <root>/tmp/                           in-progress writes (debris of killed runs lands here)
//! <root>/runs/                          run records
//! ```
//!
//! # Invariants
//!
//! * An entry folder only ever appears under `objects/` by an atomic rename of a fully written,
//!   flushed temp folder from `tmp/`. An entry is **complete** iff its folder exists under
//!   `objects/` and its `entry.json` parses (and names the same kind and key, and every listed
//!   file exists with its recorded size). Anything else is treated as absent by
//!   [`Store::lookup`], never as an error or a panic.
//! * Writing needs the run lock: [`Store::begin`] takes a [`StoreLock`], and a [`PendingEntry`]
//!   borrows it, so it cannot be released while an entry is being written. Any number of runs
//!   hold it at once (shared), so independent stages — a scheduler's jobs — compute and commit
//!   concurrently. Reading ([`Store::lookup`], [`Store::verify`]) needs no lock.
//! * One entry is computed by one process at a time: [`Store::claim`] takes the entry's own
//!   exclusive lock (or reports the entry done, or busy), and the executor holds it from
//!   before [`Store::begin`] until after [`PendingEntry::commit`]. A second run wanting the same
//!   entry waits for it (`--wait`) and then finds it committed.
//! * A killed run leaves debris only in `tmp/`. A run that finds itself alone on the store
//!   (the exclusive `store.lock`, held only for that moment) removes all of `tmp/`; a claim
//!   removes the debris of its own key, which no live process can be writing.
//! * The locks are `flock`s, released by the kernel when their holder exits, even when
//!   killed. On NFS, Linux turns them into NFS byte-range locks, which hold across machines
//!   with NFSv4 (or NFSv3 with the lock manager running); a mount with `nolock` or `local_lock`
//!   keeps them on one machine only (docs/scaling.md).
//!
//! Keys are built with [`KeyBuilder`] (see [`key`] for the encoding); `pretext.lock` is
//! [`Lockfile`].

mod digest;
mod error;
pub mod key;
mod lockfile;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

pub use digest::{digest_dir, digest_file, digest_tree, FileDigest};
pub(crate) use error::with_advice;
pub use error::{Result, StoreError};
pub use key::{canonical_json, config_digest, KeyBuilder, KeyParts, ParseKeyError, StageKey};
pub use lockfile::{LockedStage, Lockfile, LockfileSet, LOCKFILE_SET_VERSION, LOCKFILE_VERSION};

use digest::{digest_file_sized, list_files, Symlinks};

/// Version of the `entry.json` format this runner reads and writes.
pub const ENTRY_FORMAT: u32 = 1;

/// Name of the metadata file at the top of every entry folder.
pub const ENTRY_FILE: &str = "entry.json";

/// Contents of an entry's `entry.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// Format version ([`ENTRY_FORMAT`]).
    pub format: u32,
    /// Name of the stage (in the pipeline that produced it).
    pub stage: String,
    /// Stage kind (also the `objects/` sub-folder).
    pub kind: String,
    /// Stage key (also the entry's folder name).
    pub key: StageKey,
    /// What the key was computed from.
    pub parts: KeyParts,
    /// When the entry was committed, in seconds since the Unix epoch.
    pub created: u64,
    /// Version of the runner that wrote it.
    pub runner_version: String,
    /// Every output file (relative path with `/`, `entry.json` excluded) -> size and digest.
    pub files: BTreeMap<String, FileDigest>,
}

/// A complete store entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The entry folder, `<root>/objects/<kind>/<key-hex>`.
    pub path: PathBuf,
    /// Its `entry.json`.
    pub meta: EntryMeta,
}

impl Entry {
    /// Path of one of the entry's files, from its relative path (with `/`).
    pub fn file(&self, rel: &str) -> PathBuf {
        rel.split('/').fold(self.path.clone(), |p, c| p.join(c))
    }
}

/// A store folder. Cheap to clone (it is a path).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A run's hold on the store (shared with other runs); released when dropped (or when the
/// process exits, even when killed).
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    path: PathBuf,
    root: PathBuf,
    cleaned: usize,
}

impl StoreLock {
    /// The lock file, `<root>/store.lock`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many items of killed runs' debris taking the lock removed from `tmp/` (only a run
    /// alone on the store cleans it).
    pub fn cleaned(&self) -> usize {
        self.cleaned
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

/// One process's exclusive right to compute an entry ([`Store::claim`]); released when
/// dropped. Its file holds the holder's pid, for the messages of those who wait.
#[derive(Debug)]
pub struct EntryLock<'l> {
    _run: &'l StoreLock,
    file: File,
    path: PathBuf,
    committed: bool,
}

impl EntryLock<'_> {
    /// Call once the entry is committed: its lock file is then removed on release. (An
    /// uncommitted entry's lock file stays: removing it would let a waiter that opened it and
    /// a newcomer that creates a fresh one both compute the entry at once.)
    pub fn committed(&mut self) {
        self.committed = true;
    }
}

impl Drop for EntryLock<'_> {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        if self.committed {
            // Anyone who still opens this file finds the entry committed once they lock it.
            let _ = fs::remove_file(&self.path);
        }
        let _ = FileExt::unlock(&self.file);
    }
}

/// What [`Store::claim`] found.
#[derive(Debug)]
pub enum Claim<'l> {
    /// Ours to compute: hold the lock until the entry is committed.
    Mine(EntryLock<'l>),
    /// Another run committed it (maybe while this one waited).
    Done(Entry),
}

/// An entry being written: the stage writes its files into [`PendingEntry::dir`], then
/// [`PendingEntry::commit`] publishes them. Dropped without commit, its folder is removed.
#[derive(Debug)]
pub struct PendingEntry<'l> {
    _lock: &'l StoreLock,
    tmp_root: PathBuf,
    dir: PathBuf,
    kind_dir: PathBuf,
    dest: PathBuf,
    stage: String,
    kind: String,
    key: StageKey,
    parts: KeyParts,
    done: bool,
}

/// Result of [`Store::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Entries whose files all match their `entry.json`.
    pub ok: Vec<EntryCheck>,
    /// Entries with at least one problem.
    pub corrupt: Vec<EntryCheck>,
}

impl VerifyReport {
    /// True when no entry is corrupt.
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty()
    }
}

/// One verified entry folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryCheck {
    /// The entry folder.
    pub path: PathBuf,
    /// Its kind (the `objects/` sub-folder name).
    pub kind: String,
    /// Its key as found in the folder name.
    pub key: String,
    /// Stage name from `entry.json`, when it could be read.
    pub stage: Option<String>,
    /// What is wrong; empty for a sound entry.
    pub problems: Vec<String>,
}

impl Store {
    /// Opens (creating as needed) the store at `root` and checks that it is writable.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref();
        let not_writable = |path: &Path, source| StoreError::NotWritable {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(root).map_err(|e| not_writable(root, e))?;
        let root = root.canonicalize().map_err(|e| not_writable(root, e))?;
        check_store_folder(&root)?;
        let store = Store { root };
        for dir in [store.objects_dir(), store.tmp_dir(), store.runs_dir()] {
            fs::create_dir_all(&dir).map_err(|e| not_writable(&dir, e))?;
        }
        open_lock_file(&store.lock_path())?;
        // Existing folders can still be read-only: probe where entries are written.
        let probe = store
            .tmp_dir()
            .join(format!(".probe-{}-{}", std::process::id(), now_nanos()));
        fs::create_dir(&probe).map_err(|e| not_writable(&store.tmp_dir(), e))?;
        let _ = fs::remove_dir(&probe);
        Ok(store)
    }

    /// A read-only handle on an existing store, creating nothing: `None` when the folder does
    /// not exist. For commands that only look (`show`, `plan`, `store verify`).
    pub fn existing(root: impl AsRef<Path>) -> Option<Store> {
        let root = root.as_ref().canonicalize().ok()?;
        root.is_dir().then_some(Store { root })
    }

    /// The store folder (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/objects`.
    pub fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }

    /// `<root>/tmp`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `<root>/runs` (reserved).
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// `<root>/store.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("store.lock")
    }

    /// Where the entry for `kind` and `key` lives (whether or not it exists).
    pub fn entry_dir(&self, kind: &str, key: &StageKey) -> PathBuf {
        self.objects_dir().join(kind).join(key.to_hex())
    }

    /// Joins the store for a run: takes `store.lock` shared (other runs may hold it too). A
    /// run that finds no other there — it gets the lock exclusively for a moment — first
    /// removes the debris of killed runs from `tmp/` ([`StoreLock::cleaned`]).
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.lock_path();
        let file = open_lock_file(&path)?;
        let cleaned = match FileExt::try_lock_exclusive(&file) {
            Ok(()) => self.clean_tmp()?,
            // Only ever held exclusively for the moment of a cleanup: wait for it below.
            Err(e) if is_contended(&e) => 0,
            Err(e) => return Err(StoreError::io("cannot lock", &path, e)),
        };
        // flock converts an exclusive lock in place; at worst another run cleans an empty tmp/.
        FileExt::lock_shared(&file).map_err(|e| StoreError::io("cannot lock", &path, e))?;
        Ok(StoreLock {
            file,
            path,
            root: self.root.clone(),
            cleaned,
        })
    }

    /// Blocks until this process holds `<root>/locks/<name>.lock` exclusively; released when
    /// the returned file is dropped. For a short read-modify-write of a file concurrent runs
    /// share (`pretext.lock`).
    pub fn guard(&self, name: &str) -> Result<File> {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        let file = open_in_locks(&path)?;
        FileExt::lock_exclusive(&file).map_err(|e| StoreError::io("cannot lock", &path, e))?;
        Ok(file)
    }

    /// `<root>/locks/<kind>-<key>.lock`, the lock of one entry while it is computed.
    pub fn entry_lock_path(&self, kind: &str, key: &StageKey) -> PathBuf {
        self.root
            .join("locks")
            .join(format!("{kind}-{}.lock", key.to_hex()))
    }

    /// The right to compute the entry for `kind` and `key`: [`Claim::Done`] when it is in the
    /// store (already, or once the run computing it committed it), else [`Claim::Mine`]. When
    /// another process is computing it: [`StoreError::Busy`] naming `stage` and the holder's
    /// pid, or with `wait`, block until that process is done.
    pub fn claim<'l>(
        &self,
        run: &'l StoreLock,
        stage: &str,
        kind: &str,
        key: &StageKey,
        wait: bool,
    ) -> Result<Claim<'l>> {
        self.check_lock(run)?;
        if !valid_kind(kind) {
            return Err(StoreError::InvalidKind {
                kind: kind.to_string(),
                path: self.objects_dir().join(kind),
            });
        }
        if let Some(done) = self.lookup(kind, key) {
            return Ok(Claim::Done(done));
        }
        let path = self.entry_lock_path(kind, key);
        let mut file = open_in_locks(&path)?;
        match FileExt::try_lock_exclusive(&file) {
            Ok(()) => {}
            Err(e) if is_contended(&e) => {
                let pid = read_pid(&path);
                if !wait {
                    return Err(StoreError::Busy {
                        stage: stage.to_string(),
                        path,
                        pid,
                    });
                }
                tracing::info!(
                    stage,
                    holder = ?pid,
                    lock = %path.display(),
                    "waiting for another pretext run to finish this stage"
                );
                FileExt::lock_exclusive(&file)
                    .map_err(|e| StoreError::io("cannot lock", &path, e))?;
            }
            Err(e) => return Err(StoreError::io("cannot lock", &path, e)),
        }
        if let Some(done) = self.lookup(kind, key) {
            let _ = FileExt::unlock(&file);
            return Ok(Claim::Done(done));
        }
        // A holder of this lock that left no entry was killed: what it wrote is debris.
        self.remove_debris_of(key);
        let record = (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.flush()
        })();
        record.map_err(|e| StoreError::io("cannot write the lock holder's pid to", &path, e))?;
        Ok(Claim::Mine(EntryLock {
            _run: run,
            file,
            path,
            committed: false,
        }))
    }

    /// Removes `tmp/` items of `key` (pending folders `<key>-<pid>-<nanos>` and what their
    /// commit put beside them). Only under that key's entry lock.
    fn remove_debris_of(&self, key: &StageKey) {
        let prefix = format!("{key}-");
        // Unlistable tmp/: the commit reports it, with its path, when it writes there.
        if let Ok(removed) = self.remove_tmp_items(|name| name.starts_with(&prefix)) {
            if removed > 0 {
                tracing::info!(removed, key = %key, "removed a killed run's leftovers of this entry");
            }
        }
    }

    /// The complete entry for `kind` and `key`, if there is one. An incomplete or corrupt entry
    /// (unparseable `entry.json`, wrong kind or key, a listed file missing, of the wrong size or
    /// with other contents than were committed) is treated as absent, with a warning naming the
    /// file: the stage runs again and its new entry replaces the bad one.
    pub fn lookup(&self, kind: &str, key: &StageKey) -> Option<Entry> {
        if !valid_kind(kind) {
            return None;
        }
        let dir = self.entry_dir(kind, key);
        if !dir.is_dir() {
            return None;
        }
        match load_complete(&dir, kind, key) {
            Ok(entry) => Some(entry),
            Err(why) => {
                tracing::warn!(
                    entry = %dir.display(),
                    "ignoring a damaged store entry ({why}); the stage will run again"
                );
                None
            }
        }
    }

    /// Starts writing the entry for `key` in a fresh folder under `tmp/`.
    ///
    /// `kind` must be the kind the key was built for, and `key` must be `parts.key()`.
    pub fn begin<'l>(
        &self,
        lock: &'l StoreLock,
        stage_name: &str,
        kind: &str,
        key: &StageKey,
        parts: &KeyParts,
    ) -> Result<PendingEntry<'l>> {
        self.check_lock(lock)?;
        let kind_dir = self.objects_dir().join(kind);
        if !valid_kind(kind) {
            return Err(StoreError::InvalidKind {
                kind: kind.to_string(),
                path: kind_dir,
            });
        }
        let dest = kind_dir.join(key.to_hex());
        let expected = parts.key();
        if expected != *key || parts.kind != kind {
            return Err(StoreError::KeyMismatch {
                key: format!("{key} (kind `{kind}`)"),
                expected: format!("{expected} (kind `{}`)", parts.kind),
                path: dest,
            });
        }
        let tmp_root = self.tmp_dir();
        let pid = std::process::id();
        let mut nanos = now_nanos();
        let dir = loop {
            let dir = tmp_root.join(format!("{key}-{pid}-{nanos}"));
            match fs::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => nanos += 1,
                Err(e) => return Err(StoreError::io("cannot create", &dir, e)),
            }
        };
        Ok(PendingEntry {
            _lock: lock,
            tmp_root,
            dir,
            kind_dir,
            dest,
            stage: stage_name.to_string(),
            kind: kind.to_string(),
            key: *key,
            parts: parts.clone(),
            done: false,
        })
    }

    /// Removes everything in `tmp/` (debris of killed runs); returns how many items were
    /// removed. Only with `store.lock` held exclusively: no run is writing.
    fn clean_tmp(&self) -> Result<usize> {
        let removed = self.remove_tmp_items(|_| true)?;
        if removed > 0 {
            let tmp = self.tmp_dir();
            tracing::info!(removed, tmp = %tmp.display(), "removed leftovers of interrupted runs");
        }
        Ok(removed)
    }

    /// Removes the items of `tmp/` whose names `pick` selects; returns how many went.
    fn remove_tmp_items(&self, pick: impl Fn(&str) -> bool) -> Result<usize> {
        let tmp = self.tmp_dir();
        let entries = fs::read_dir(&tmp).map_err(|e| StoreError::io("cannot list", &tmp, e))?;
        let mut removed = 0;
        for entry in entries.flatten() {
            if !pick(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let path = entry.path();
            let res = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            match res {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "cannot remove leftover temporary store data: {e}"
                ),
            }
        }
        Ok(removed)
    }

    /// Re-digests every entry's files against its `entry.json`. Fails only when `objects/`
    /// itself cannot be listed; every per-entry problem (missing file, digest mismatch, extra
    /// file, unreadable `entry.json`, …) is reported in [`VerifyReport::corrupt`].
    pub fn verify(&self) -> Result<VerifyReport> {
        let objects = self.objects_dir();
        let mut report = VerifyReport::default();
        for (kind, kind_path, kind_is_dir) in sorted_children(&objects)? {
            if !kind_is_dir {
                report.corrupt.push(EntryCheck {
                    path: kind_path,
                    kind: kind.clone(),
                    key: String::new(),
                    stage: None,
                    problems: vec!["unexpected file in the store (not a kind folder)".into()],
                });
                continue;
            }
            let children = match sorted_children(&kind_path) {
                Ok(c) => c,
                Err(e) => {
                    report.corrupt.push(EntryCheck {
                        path: kind_path,
                        kind,
                        key: String::new(),
                        stage: None,
                        problems: vec![e.to_string()],
                    });
                    continue;
                }
            };
            for (key, path, is_dir) in children {
                let mut check = EntryCheck {
                    path,
                    kind: kind.clone(),
                    key,
                    stage: None,
                    problems: Vec::new(),
                };
                if is_dir {
                    verify_entry(&mut check);
                } else {
                    check
                        .problems
                        .push("unexpected file in the store (not an entry folder)".into());
                }
                if check.problems.is_empty() {
                    report.ok.push(check);
                } else {
                    report.corrupt.push(check);
                }
            }
        }
        Ok(report)
    }

    fn check_lock(&self, lock: &StoreLock) -> Result<()> {
        if lock.root != self.root {
            return Err(StoreError::WrongLock {
                lock_root: lock.root.clone(),
                path: self.root.clone(),
            });
        }
        Ok(())
    }
}

impl PendingEntry<'_> {
    /// The folder the stage writes its output files into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key being written.
    pub fn key(&self) -> &StageKey {
        &self.key
    }

    /// Publishes the entry: digests and flushes every file, writes `entry.json`, then renames
    /// the folder to `objects/<kind>/<key>/`. If a complete entry is already there, it is kept
    /// (and returned) and this one is discarded; an incomplete one is replaced.
    ///
    /// On error the temporary folder is removed.
    pub fn commit(mut self) -> Result<Entry> {
        let mut files = BTreeMap::new();
        let mut dirs = BTreeSet::new();
        dirs.insert(self.dir.clone());
        for (rel, abs) in list_files(&self.dir, Symlinks::Reject)? {
            if rel == ENTRY_FILE {
                return Err(StoreError::ReservedName { path: abs });
            }
            if let Some(parent) = abs.parent() {
                dirs.insert(parent.to_path_buf());
            }
            files.insert(rel, digest_file_sized(&abs, true)?);
        }
        let meta = EntryMeta {
            format: ENTRY_FORMAT,
            stage: self.stage.clone(),
            kind: self.kind.clone(),
            key: self.key,
            parts: self.parts.clone(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            runner_version: self.parts.runner_version.clone(),
            files,
        };

        // entry.json: written beside the temp folder (so it cannot clash with a stage file),
        // flushed, then renamed in.
        let dir_name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let meta_tmp = self.tmp_root.join(format!("{dir_name}.{ENTRY_FILE}"));
        let text = serde_json::to_vec_pretty(&meta).expect("entry metadata always serializes");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&meta_tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&meta_tmp);
            return Err(StoreError::io("cannot write", &meta_tmp, e));
        }
        let meta_path = self.dir.join(ENTRY_FILE);
        if let Err(e) = fs::rename(&meta_tmp, &meta_path) {
            let _ = fs::remove_file(&meta_tmp);
            return Err(StoreError::io("cannot write", &meta_path, e));
        }
        for d in &dirs {
            sync_dir(d);
        }

        fs::create_dir_all(&self.kind_dir)
            .map_err(|e| StoreError::io("cannot create", &self.kind_dir, e))?;
        if self.dest.exists() {
            match load_complete(&self.dest, &self.kind, &self.key) {
                Ok(existing) => {
                    tracing::debug!(
                        entry = %self.dest.display(),
                        "entry already in the store; keeping the existing one"
                    );
                    return Ok(existing); // Drop removes our temp folder.
                }
                Err(why) => {
                    tracing::warn!(
                        entry = %self.dest.display(),
                        "replacing incomplete store entry ({why})"
                    );
                    // Move it out of objects/ atomically first, so a kill mid-delete leaves
                    // debris only in tmp/.
                    let stale = self.tmp_root.join(format!("{dir_name}-stale"));
                    fs::rename(&self.dest, &stale)
                        .map_err(|e| StoreError::io("cannot move aside", &self.dest, e))?;
                    let _ = fs::remove_dir_all(&stale);
                }
            }
        }
        if let Err(e) = fs::rename(&self.dir, &self.dest) {
            // Only possible without the lock discipline (e.g. a hand copy): prefer what is there.
            if let Ok(existing) = load_complete(&self.dest, &self.kind, &self.key) {
                return Ok(existing);
            }
            return Err(StoreError::io(
                "cannot move the new entry into",
                &self.dest,
                e,
            ));
        }
        self.done = true;
        sync_dir(&self.kind_dir);
        sync_dir(&self.tmp_root);
        Ok(Entry {
            path: self.dest.clone(),
            meta,
        })
    }
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::debug!(
                        dir = %self.dir.display(),
                        "cannot remove uncommitted store entry: {e}"
                    );
                }
            }
        }
    }
}

/// Flushes a folder's entries (renames, new files) to disk. Best effort, unix only.
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|f| f.sync_all()) {
        tracing::debug!(dir = %dir.display(), "cannot flush folder to disk: {e}");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// A store is written into a folder pretext owns: a new or empty one, or one holding a store
/// already (`store.lock` or `objects/`). A filesystem root or a folder with other contents
/// (`store = "/"`, `store = "."`, a home folder) is refused before anything is written there.
fn check_store_folder(root: &Path) -> Result<()> {
    let refuse = |reason: &str| StoreError::NotAStore {
        path: root.to_path_buf(),
        reason: reason.to_string(),
    };
    if root.parent().is_none() {
        return Err(refuse("it is the root of the filesystem"));
    }
    if root.join("store.lock").is_file() || root.join("objects").is_dir() {
        return Ok(());
    }
    let mut children = fs::read_dir(root).map_err(|e| StoreError::NotWritable {
        path: root.to_path_buf(),
        source: e,
    })?;
    if children.next().is_some() {
        return Err(refuse(
            "the folder already holds other files and is not a pretext store",
        ));
    }
    Ok(())
}

/// A lock file under `<root>/locks/`, the folder made on first use.
fn open_in_locks(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| StoreError::io("cannot create", dir, e))?;
    }
    open_lock_file(path)
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| StoreError::NotWritable {
            path: path.to_path_buf(),
            source,
        })
}

fn is_contended(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        || (e.raw_os_error().is_some()
            && e.raw_os_error() == fs2::lock_contended_error().raw_os_error())
}

fn read_pid(path: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Kinds become folder names: ASCII letters, digits, `-`, `_`, `.`; not `.` or `..`.
fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind != "."
        && kind != ".."
        && kind
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn read_meta(dir: &Path) -> std::result::Result<EntryMeta, String> {
    let path = dir.join(ENTRY_FILE);
    let bytes = fs::read(&path).map_err(|e| format!("cannot read {ENTRY_FILE}: {e}"))?;
    // Check the format version before the full parse, for a clearer reason.
    #[derive(Deserialize)]
    struct FormatOnly {
        format: u32,
    }
    let f: FormatOnly =
        serde_json::from_slice(&bytes).map_err(|e| format!("{ENTRY_FILE} does not parse: {e}"))?;
    if f.format != ENTRY_FORMAT {
        return Err(format!(
            "{ENTRY_FILE} has format version {}, this pretext reads {ENTRY_FORMAT}",
            f.format
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("{ENTRY_FILE} does not parse: {e}"))
}

/// Problems with an entry's identity: `entry.json` must name the folder's kind and key, and
/// its key parts must hash to that key.
fn identity_problems(meta: &EntryMeta, kind: &str, key: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if meta.kind != kind {
        problems.push(format!(
            "{ENTRY_FILE} names kind `{}`, but the entry is under `{kind}`",
            meta.kind
        ));
    }
    if meta.key.to_hex() != key {
        problems.push(format!(
            "{ENTRY_FILE} names key {}, but the folder is {key}",
            meta.key
        ));
    }
    let recomputed = meta.parts.key();
    if recomputed != meta.key {
        problems.push(format!(
            "the key parts in {ENTRY_FILE} hash to {}, not {}",
            recomputed.short(),
            meta.key.short()
        ));
    }
    problems
}

/// Loads a complete entry, or says why it is not one. Cheap: stats files, digests nothing.
fn load_complete(dir: &Path, kind: &str, key: &StageKey) -> std::result::Result<Entry, String> {
    let meta = read_meta(dir)?;
    if let Some(p) = identity_problems(&meta, kind, &key.to_hex())
        .into_iter()
        .next()
    {
        return Err(p);
    }
    let entry = Entry {
        path: dir.to_path_buf(),
        meta,
    };
    for (rel, d) in &entry.meta.files {
        match fs::metadata(entry.file(rel)) {
            Ok(m) if m.is_file() && m.len() == d.bytes => {}
            Ok(m) if m.is_file() => {
                return Err(format!(
                    "file `{rel}` has {} bytes, expected {}",
                    m.len(),
                    d.bytes
                ))
            }
            _ => return Err(format!("file `{rel}` is missing")),
        }
    }
    // Contents too: an entry changed after it was committed (a flipped byte, a file edited in
    // place) must not be used as if it were good. blake3 reads at memory speed; the cost on
    // the quickstart is in docs/hardening.md.
    for (rel, d) in &entry.meta.files {
        match digest_file_sized(&entry.file(rel), false) {
            Ok(found) if found.blake3 == d.blake3 => {}
            Ok(_) => {
                return Err(format!(
                    "file `{rel}` changed after it was stored (its blake3 digest differs)"
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(entry)
}

/// Full check of one entry folder, filling `check.problems`.
fn verify_entry(check: &mut EntryCheck) {
    if check.key.parse::<StageKey>().is_err() {
        check
            .problems
            .push("folder name is not a stage key".to_string());
    }
    let meta = match read_meta(&check.path) {
        Ok(m) => m,
        Err(why) => {
            check.problems.push(why);
            return;
        }
    };
    check.stage = Some(meta.stage.clone());
    check
        .problems
        .extend(identity_problems(&meta, &check.kind, &check.key));
    let actual = match list_files(&check.path, Symlinks::Reject) {
        Ok(files) => files,
        Err(e) => {
            check.problems.push(e.to_string());
            return;
        }
    };
    let actual: BTreeMap<String, PathBuf> = actual
        .into_iter()
        .filter(|(rel, _)| rel != ENTRY_FILE)
        .collect();
    for (rel, expected) in &meta.files {
        let Some(abs) = actual.get(rel) else {
            check.problems.push(format!("missing file `{rel}`"));
            continue;
        };
        match digest_file_sized(abs, false) {
            Ok(found) if found == *expected => {}
            Ok(found) => check.problems.push(format!(
                "file `{rel}` digest mismatch: expected {} bytes blake3 {}, found {} bytes \
                 blake3 {}",
                expected.bytes,
                key::short_hex(&expected.blake3),
                found.bytes,
                key::short_hex(&found.blake3)
            )),
            Err(e) => check.problems.push(e.to_string()),
        }
    }
    for rel in actual.keys() {
        if !meta.files.contains_key(rel) {
            check.problems.push(format!("extra file `{rel}`"));
        }
    }
}

/// (name, path, is_dir) of a folder's children, sorted by name; non-UTF-8 names are shown
/// lossily.
fn sorted_children(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let entries = fs::read_dir(dir).map_err(|e| StoreError::io("cannot list", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("cannot list", dir, e))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
            is_dir,
        ));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parts(seed: u64) -> (StageKey, KeyParts) {
        KeyBuilder::new("ssl")
            .config(&json!({ "lr": 0.1 }))
            .plugin("simclr", "ab".repeat(32))
            .runner_version("0.1.0")
            .seed(seed)
            .device("cpu")
            .finish_with_parts()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().join(".pretext")).unwrap();
        (d, s)
    }

    fn write_entry(store: &Store, lock: &StoreLock, seed: u64) -> Entry {
        let (key, parts) = parts(seed);
        let pending = store.begin(lock, "train", "ssl", &key, &parts).unwrap();
        fs::write(pending.dir().join("model.safetensors"), b"weights").unwrap();
        fs::create_dir_all(pending.dir().join("logs/deep")).unwrap();
        fs::write(pending.dir().join("logs/deep/metrics.json"), b"{}").unwrap();
        pending.commit().unwrap()
    }

    fn tmp_items(store: &Store) -> usize {
        fs::read_dir(store.tmp_dir()).unwrap().count()
    }

    #[test]
    fn open_creates_layout() {
        let (_d, s) = store();
        for p in [s.objects_dir(), s.tmp_dir(), s.runs_dir()] {
            assert!(p.is_dir(), "{}", p.display());
        }
        assert!(s.lock_path().is_file());
        assert!(s.root().is_absolute());
        assert_eq!(tmp_items(&s), 0);
        // Opening again is fine.
        Store::open(s.root()).unwrap();
    }

    #[test]
    fn open_unwritable_root_names_path() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("not-a-folder");
        fs::write(&file, "x").unwrap();
        let err = Store::open(&file).unwrap_err();
        assert!(matches!(err, StoreError::NotWritable { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(file.to_str().unwrap()), "{msg}");
        assert!(msg.contains("writable"), "{msg}");
    }

    #[test]
    fn begin_commit_lookup_round_trip() {
        let (_d, s) = store();
        let lock = s.lock().unwrap();
        let (key, p) = parts(1);
        assert!(s.lookup("ssl", &key).is_none());
        let entry = write_entry(&s, &lock, 1);
        assert_eq!(entry.path, s.entry_dir("ssl", &key));
        assert_eq!(entry.meta.format, ENTRY_FORMAT);
        assert_eq!(entry.meta.stage, "train");
        assert_eq!(entry.meta.kind, "ssl");
        assert_eq!(entry.meta.key, key);
        assert_eq!(entry.meta.parts, p);
        assert_eq!(entry.meta.runner_version, "0.1.0");
        assert!(entry.meta.created > 1_600_000_000);
        assert_eq!(
            entry.meta.files.keys().collect::<Vec<_>>(),
            vec!["logs/deep/metrics.json", "model.safetensors"]
        );
        let model = &entry.meta.files["model.safetensors"];
        assert_eq!(model.bytes, 7);
        assert_eq!(model.blake3, blake3::hash(b"weights").to_hex().to_string());
        assert_eq!(
            fs::read(entry.file("logs/deep/metrics.json")).unwrap(),
            b"{}"
        );

        let found = s.lookup("ssl", &key).unwrap();
        assert_eq!(found, entry);
        // Another handle sees it too; other kinds and keys do not.
        assert!(Store::open(s.root()).unwrap().lookup("ssl", &key).is_some());
        assert!(s.lookup("other", &key).is_none());
        assert!(s.lookup("ssl", &parts(2).0).is_none());
        assert!(s.lookup("../ssl", &key).is_none());
        assert_eq!(tmp_items(&s), 0, "commit left temp data behind");
        assert!(s.verify().unwrap().is_ok());
    }

    #[test]
    fn dropped_pending_entry_is_invisible_and_removed() {
        let (_d, s) = store();
        let lock = s.lock().unwrap();
        let (key, p) = parts(1);
        let pending = s.begin(&lock, "train", "ssl", &key, &p).unwrap();
        let dir = pending.dir().to_path_buf();
        assert!(dir.starts_with(s.tmp_dir()));
        assert!(dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&format!("{key}-{}-", std::process::id())));
        fs::write(dir.join("model.safetensors"), b"half").unwrap();
        assert!(s.lookup("ssl", &key).is_none());
        drop(pending);
        assert!(!dir.exists());
        assert!(s.lookup("ssl", &key).is_none());
        assert_eq!(tmp_items(&s), 0);
    }

    #[test]
    fn killed_run_debris_is_invisible_and_cleaned() {
        let (_d, s) = store();
        let (key, p) = parts(1);
        // Another run on the store throughout.
        let other = s.lock().unwrap();
        {
            let lock = s.lock().unwrap();
            let pending = s.begin(&lock, "train", "ssl", &key, &p).unwrap();
            fs::write(pending.dir().join("model.safetensors"), b"half").unwrap();
            std::mem::forget(pending); // as if the process was killed mid-write
        }
        assert_eq!(tmp_items(&s), 1);
        assert!(s.lookup("ssl", &key).is_none());
        assert!(s.verify().unwrap().ok.is_empty());
        // With another run on the store, nobody cleans what may be its pending entries.
        let lock = s.lock().unwrap();
        assert_eq!(lock.cleaned(), 0);
        assert_eq!(tmp_items(&s), 1);
        drop((other, lock));
        // Alone on the store, a run removes every leftover.
        let lock = s.lock().unwrap();
        assert_eq!(lock.cleaned(), 1);
        assert_eq!(tmp_items(&s), 0);
        assert!(s.lookup("ssl", &key).is_none());
    }

    #[test]
    fn a_claim_removes_the_debris_of_its_own_key_only() {
        let (_d, s) = store();
        let (key, p) = parts(1);
        let (key2, p2) = parts(2);
        let run = s.lock().unwrap();
        for (k, pp) in [(&key, &p), (&key2, &p2)] {
            let pending = s.begin(&run, "train", "ssl", k, pp).unwrap();
            std::mem::forget(pending); // a killed holder's leftovers
        }
        assert_eq!(tmp_items(&s), 2);
        let Claim::Mine(_held) = s.claim(&run, "train", "ssl", &key, false).unwrap() else {
            panic!("nothing committed yet");
        };
        assert_eq!(
            tmp_items(&s),
            1,
            "key 2's pending folder is not this claim's"
        );
    }

    #[test]
    fn corrupt_or_partial_entries_are_absent() {
        let (_d, s) = store();
        let lock = s.lock().unwrap();
        let entry = write_entry(&s, &lock, 1);
        let key = entry.meta.key;
        let meta_path = entry.path.join(ENTRY_FILE);
        let good = fs::read_to_string(&meta_path).unwrap();

        fs::write(&meta_path, &good[..good.len() / 2]).unwrap();
        assert!(s.lookup("ssl", &key).is_none(), "truncated entry.json");
        fs::write(&meta_path, "garbage").unwrap();
        assert!(s.lookup("ssl", &key).is_none(), "garbage entry.json");
        fs::write(&meta_path, good.replace("\"format\": 1", "\"format\": 9")).unwrap();
        assert!(s.lookup("ssl", &key).is_none(), "future format");
        fs::write(
            &meta_path,
            good.replace("\"stage\": \"train\"", "\"stage\": 5"),
        )
        .unwrap();
        assert!(s.lookup("ssl", &key).is_none(), "wrong field type");
        fs::remove_file(&meta_path).unwrap();
        assert!(s.lookup("ssl", &key).is_none(), "missing entry.json");

        fs::write(&meta_path, &good).unwrap();
        assert!(s.lookup("ssl", &key).is_some());
        fs::write(entry.file("model.safetensors"), b"short").unwrap();
        assert!(s.lookup("ssl", &key).is_none(), "file of wrong size");
        fs::remove_file(entry.file("model.safetensors")).unwrap();
        assert!(s.lookup("ssl", &key).is_none(), "missing file");

        // An entry copied under another key is not accepted for that key.
        let other = s.entry_dir("ssl", &parts(2).0);
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join(ENTRY_FILE), &good).unwrap();
        fs::write(other.join("model.safetensors"), b"weights").unwrap();
        fs::create_dir_all(other.join("logs/deep")).unwrap();
        fs::write(other.join("logs/deep/metrics.json"), b"{}").unwrap();
        assert!(s.lookup("ssl", &parts(2).0).is_none());
    }

    #[test]
    fn commit_keeps_complete_and_replaces_incomplete_destination() {
        let (_d, s) = store();
        let lock = s.lock().unwrap();
        let first = write_entry(&s, &lock, 1);

        // Same key again: the existing complete entry wins, the new temp folder goes away.
        let (key, p) = parts(1);
        let pending = s.begin(&lock, "again", "ssl", &key, &p).unwrap();
        fs::write(pending.dir().join("other.bin"), b"x").unwrap();
        let kept = pending.commit().unwrap();
        assert_eq!(kept, first);
        assert_eq!(kept.meta.stage, "train");
        assert_eq!(tmp_items(&s), 0);

        // An incomplete destination (no entry.json) is replaced.
        let (key2, p2) = parts(2);
        let dest = s.entry_dir("ssl", &key2);
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join("junk"), b"junk").unwrap();
        let pending = s.begin(&lock, "train", "ssl", &key2, &p2).unwrap();
        fs::write(pending.dir().join("model.safetensors"), b"new").unwrap();
        let entry = pending.commit().unwrap();
        assert!(!dest.join("junk").exists());
        assert_eq!(s.lookup("ssl", &key2).unwrap(), entry);
        assert_eq!(tmp_items(&s), 0);
        assert!(s.verify().unwrap().is_ok());
    }

    #[test]
    fn begin_and_commit_reject_bad_requests() {
        let (_d, s) = store();
        let lock = s.lock().unwrap();
        let (key, p) = parts(1);
        let (other_key, _) = parts(2);
        assert!(matches!(
            s.begin(&lock, "t", "ssl", &other_key, &p),
            Err(StoreError::KeyMismatch { .. })
        ));
        assert!(matches!(
            s.begin(&lock, "t", "dataset", &key, &p),
            Err(StoreError::KeyMismatch { .. })
        ));
        for bad in ["", ".", "..", "a/b", "a b"] {
            let (k, pp) = KeyBuilder::new(bad).finish_with_parts();
            assert!(
                matches!(
                    s.begin(&lock, "t", bad, &k, &pp),
                    Err(StoreError::InvalidKind { .. })
                ),
                "kind {bad:?}"
            );
        }

        // A lock of another store is refused.
        let (_d2, s2) = store();
        let lock2 = s2.lock().unwrap();
        assert!(matches!(
            s.begin(&lock2, "t", "ssl", &key, &p),
            Err(StoreError::WrongLock { .. })
        ));
        assert!(matches!(
            s.claim(&lock2, "t", "ssl", &key, false),
            Err(StoreError::WrongLock { .. })
        ));

        // A stage may not write entry.json at the top of its folder.
        let pending = s.begin(&lock, "t", "ssl", &key, &p).unwrap();
        fs::write(pending.dir().join(ENTRY_FILE), b"{}").unwrap();
        assert!(matches!(
            pending.commit(),
            Err(StoreError::ReservedName { .. })
        ));
        assert!(s.lookup("ssl", &key).is_none());
        assert_eq!(tmp_items(&s), 0);
    }

    #[test]
    fn verify_detects_each_problem() {
        let (_d, s) = store();
        let lock = s.lock().unwrap();
        let modified = write_entry(&s, &lock, 1);
        let missing = write_entry(&s, &lock, 2);
        let extra = write_entry(&s, &lock, 3);
        let unreadable = write_entry(&s, &lock, 4);
        let sound = write_entry(&s, &lock, 5);

        fs::write(modified.file("model.safetensors"), b"WEIGHTS").unwrap();
        fs::remove_file(missing.file("logs/deep/metrics.json")).unwrap();
        fs::write(extra.path.join("logs/stray.txt"), b"?").unwrap();
        fs::write(unreadable.path.join(ENTRY_FILE), b"{").unwrap();

        let report = s.verify().unwrap();
        assert!(!report.is_ok());
        assert_eq!(report.ok.len(), 1);
        assert_eq!(report.ok[0].path, sound.path);
        assert_eq!(report.ok[0].stage.as_deref(), Some("train"));
        let problems = |e: &Entry| -> Vec<String> {
            report
                .corrupt
                .iter()
                .find(|c| c.path == e.path)
                .unwrap_or_else(|| panic!("{} not reported", e.path.display()))
                .problems
                .clone()
        };
        let p = problems(&modified);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("file `model.safetensors` digest mismatch"),
            "{p:?}"
        );
        assert_eq!(
            problems(&missing),
            vec!["missing file `logs/deep/metrics.json`"]
        );
        assert_eq!(problems(&extra), vec!["extra file `logs/stray.txt`"]);
        let p = problems(&unreadable);
        assert!(p[0].contains("entry.json does not parse"), "{p:?}");
        assert_eq!(report.corrupt.len(), 4);
        // The report serializes for `--json` output.
        serde_json::to_string(&report).unwrap();
    }

    #[test]
    fn runs_share_the_store_and_one_entry_has_one_writer() {
        let (_d, s) = store();
        let other = Store::open(s.root()).unwrap();
        let (key, p) = parts(1);
        // Two runs hold the store at once.
        let (run, run2) = (s.lock().unwrap(), other.lock().unwrap());
        let Claim::Mine(mut held) = s.claim(&run, "train", "ssl", &key, false).unwrap() else {
            panic!("nothing committed yet");
        };
        let lock_file = s.entry_lock_path("ssl", &key);
        assert_eq!(
            fs::read_to_string(&lock_file).unwrap().trim(),
            std::process::id().to_string()
        );
        // An independent entry is free for the other run meanwhile.
        let (key2, _) = parts(2);
        assert!(matches!(
            other.claim(&run2, "other", "ssl", &key2, false).unwrap(),
            Claim::Mine(_)
        ));
        // The same entry is busy: the message names the stage, the holder and --wait.
        let err = other.claim(&run2, "train", "ssl", &key, false).unwrap_err();
        match &err {
            StoreError::Busy { stage, pid, path } => {
                assert_eq!(stage, "train");
                assert_eq!(*pid, Some(std::process::id()));
                assert_eq!(path, &lock_file);
            }
            e => panic!("unexpected error {e}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("stage `train`")
                && msg.contains(&format!("pid {}", std::process::id()))
                && msg.contains("--wait"),
            "{msg}"
        );

        // A waiting claim blocks until the holder commits, then finds the entry done.
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let s = other.clone();
            std::thread::spawn(move || {
                let run = s.lock().unwrap();
                let claim = s.claim(&run, "train", "ssl", &parts(1).0, true).unwrap();
                tx.send(matches!(claim, Claim::Done(_))).unwrap();
            })
        };
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        let pending = s.begin(&run, "train", "ssl", &key, &p).unwrap();
        fs::write(pending.dir().join("model.safetensors"), b"weights").unwrap();
        pending.commit().unwrap();
        held.committed();
        drop(held);
        let done = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the waiting claim was never granted");
        assert!(done, "the waiter finds the committed entry");
        waiter.join().unwrap();
        assert!(
            !lock_file.exists(),
            "a committed entry's lock file is removed"
        );
        assert!(matches!(
            s.claim(&run, "train", "ssl", &key, false).unwrap(),
            Claim::Done(_)
        ));
    }

    #[test]
    fn lockfile_from_entry() {
        let (_d, s) = store();
        let lock = s.lock().unwrap();
        let entry = write_entry(&s, &lock, 1);
        let locked = LockedStage::from_entry(&entry);
        assert_eq!(locked.kind, "ssl");
        assert_eq!(locked.key, entry.meta.key);
        assert_eq!(
            locked.outputs["model.safetensors"],
            entry.meta.files["model.safetensors"].blake3
        );
        assert_eq!(locked.plugins["simclr"], "ab".repeat(32));
    }
}
