//! Errors of the content-addressed store, the key builder's digests and `pretext.lock`.
//!
//! Every variant names the file or folder involved and, where there is one, says what the user
//! can do about it.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout [`crate::store`](super).
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Errors from the store, digests and lockfile.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store folder (or one of its sub-folders / its lock file) could not be created or
    /// written.
    #[error(
        "cannot create or write the pretext store at {}: {source}; make that folder writable, \
         or point pretext at another store folder",
        .path.display()
    )]
    NotWritable { path: PathBuf, source: io::Error },

    /// The store folder is a filesystem root, or an existing folder with other contents that
    /// pretext did not create: pretext refuses to scatter its files there.
    #[error(
        "refusing to use {} as the pretext store: {reason}; point `store` in [pipeline] at a \
         new or empty folder (the default is `.pretext` beside the pipeline)",
        .path.display()
    )]
    NotAStore { path: PathBuf, reason: String },

    /// Another process is computing the same entry and the caller asked not to wait.
    #[error(
        "stage `{stage}` is being computed by another pretext run ({}) on this store (its lock: \
         {}); pass --wait to wait for it and reuse its result, or retry once it has finished",
        fmt_pid(.pid),
        .path.display()
    )]
    Busy {
        stage: String,
        path: PathBuf,
        pid: Option<u32>,
    },

    /// A plain I/O failure on a given path (with what to do about it, where that is known).
    #[error("{action} {}: {}", .path.display(), with_advice(.source))]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    /// A file under a digested or committed tree has a name that is not valid UTF-8.
    #[error(
        "file name {} is not valid UTF-8; pretext records output paths as UTF-8, rename the file",
        .path.display()
    )]
    NonUtf8Path { path: PathBuf },

    /// A stage wrote a symbolic link into its output folder.
    #[error(
        "stage output {} is a symbolic link; stages must write regular files into their output \
         folder (copy the target instead)",
        .path.display()
    )]
    Symlink { path: PathBuf },

    /// A stage wrote a file whose name the store reserves for itself.
    #[error(
        "stage output {} uses a name reserved by the store (`entry.json` at the top of the \
         output folder); rename that output",
        .path.display()
    )]
    ReservedName { path: PathBuf },

    /// A stage kind that cannot be used as a folder name.
    #[error(
        "stage kind `{kind}` cannot be stored under {}: kinds must be non-empty and use only \
         ASCII letters, digits, `-`, `_` and `.` (and not be `.` or `..`)",
        .path.display()
    )]
    InvalidKind { kind: String, path: PathBuf },

    /// The key passed to [`Store::begin`](super::Store::begin) is not the key its
    /// [`KeyParts`](super::KeyParts) hash to.
    #[error(
        "internal error: stage key {key} does not match its key parts (they hash to {expected}) \
         while writing into {}",
        .path.display()
    )]
    KeyMismatch {
        key: String,
        expected: String,
        path: PathBuf,
    },

    /// A [`StoreLock`](super::StoreLock) of one store was used to write into another.
    #[error(
        "internal error: the store lock for {} was used to write into the store at {}",
        .lock_root.display(),
        .path.display()
    )]
    WrongLock { lock_root: PathBuf, path: PathBuf },

    /// `pretext.lock` (or another JSON file of the store) could not be parsed.
    #[error(
        "{} is not a valid {what}: {source}; fix it by hand, or delete it to have pretext \
         write a fresh one",
        .path.display()
    )]
    Parse {
        what: &'static str,
        path: PathBuf,
        source: serde_json::Error,
    },

    /// A file was written by a newer pretext in a format this one does not read.
    #[error(
        "{} has format version {found}, but this pretext reads version {supported}; \
         upgrade pretext, or delete the file to have it rewritten",
        .path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

fn fmt_pid(pid: &Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_string(),
    }
}

/// What an I/O error a person can meet means and what to do about it, for the kinds where
/// that is clear (full disk, quota, file-size limit, permissions, read-only file system, a
/// file that is gone).
pub(crate) fn io_advice(e: &io::Error) -> Option<&'static str> {
    use io::ErrorKind as K;
    Some(match e.kind() {
        K::StorageFull => {
            "the disk is full: free some space and run again (finished stages are kept, and \
             pretraining resumes from its last checkpoint)"
        }
        K::QuotaExceeded => "the disk quota is used up: free some space and run again",
        K::FileTooLarge => {
            "the file would be larger than this process may write (a file-size limit such as \
             `ulimit -f`): raise the limit and run again"
        }
        K::PermissionDenied => {
            "permission denied: make the folder writable for this user, or keep the store in \
             a folder you own"
        }
        K::ReadOnlyFilesystem => "the file system is read-only: keep the store on a writable disk",
        K::NotFound => "it does not exist (or disappeared while pretext used it)",
        _ => return None,
    })
}

/// `e` with its advice in front ([`io_advice`]), the system's own words in brackets.
pub(crate) fn with_advice(e: &io::Error) -> String {
    match io_advice(e) {
        Some(a) => format!("{a} ({e})"),
        None => e.to_string(),
    }
}

impl StoreError {
    /// Shorthand for [`StoreError::Io`].
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// The path this error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            StoreError::NotWritable { path, .. }
            | StoreError::NotAStore { path, .. }
            | StoreError::Busy { path, .. }
            | StoreError::Io { path, .. }
            | StoreError::NonUtf8Path { path }
            | StoreError::Symlink { path }
            | StoreError::ReservedName { path }
            | StoreError::InvalidKind { path, .. }
            | StoreError::KeyMismatch { path, .. }
            | StoreError::WrongLock { path, .. }
            | StoreError::Parse { path, .. }
            | StoreError::UnsupportedVersion { path, .. } => path,
        }
    }
}
