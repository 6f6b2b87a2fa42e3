//! File and folder digests (blake3, streamed) used for store entries, plugin libraries and
//! dataset folders.
//!
//! [`digest_dir`] is deterministic across machines: it hashes the sorted list of relative paths
//! (with `/` separators) and file digests, never timestamps, permissions or the folder's own
//! location. Empty folders do not contribute.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{Result, StoreError};

/// Domain-separation prefix of [`digest_dir`].
const DIR_DOMAIN: &[u8] = b"pretext-dir-digest-v1";

/// Size and blake3 digest of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Length in bytes.
    pub bytes: u64,
    /// blake3 digest, 64 lowercase hex chars.
    pub blake3: String,
}

/// blake3 hex digest of a file's contents, read in 64 KiB chunks.
pub fn digest_file(path: impl AsRef<Path>) -> Result<String> {
    Ok(digest_file_sized(path.as_ref(), false)?.blake3)
}

/// Size and digest of a file; with `sync`, also flushes it to disk (unix only).
pub(crate) fn digest_file_sized(path: &Path, sync: bool) -> Result<FileDigest> {
    // Devices and pipes never end or block: only regular files are digested, and never past
    // the size they had when opened.
    let len =
        crate::data::check_regular(path).map_err(|e| StoreError::io("cannot read", path, e))?;
    let file = File::open(path).map_err(|e| StoreError::io("cannot open", path, e))?;
    let mut file = std::io::Read::take(file, len);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io("cannot read", path, e)),
        };
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    if sync && cfg!(unix) {
        file.get_ref()
            .sync_all()
            .map_err(|e| StoreError::io("cannot flush to disk", path, e))?;
    }
    Ok(FileDigest {
        bytes,
        blake3: hasher.finalize().to_hex().to_string(),
    })
}

/// Deterministic blake3 hex digest of a folder: of every regular file under it (recursively,
/// following symbolic links), as `u64 count` then, sorted by relative path,
/// `str(relative path with '/') str(file digest hex)` (`str` = u64 LE length + UTF-8 bytes),
/// after the prefix `b"pretext-dir-digest-v1"`.
pub fn digest_dir(path: impl AsRef<Path>) -> Result<String> {
    // File by file as listed (sorted, each relative path once): the same digest as over
    // `digest_tree`, without holding a million digests for a folder of a million images.
    let files = list_files(path.as_ref(), Symlinks::Follow)?;
    let mut h = blake3::Hasher::new();
    h.update(DIR_DOMAIN);
    h.update(&(files.len() as u64).to_le_bytes());
    for (rel, abs) in &files {
        let d = digest_file_sized(abs, false)?;
        for s in [rel.as_str(), d.blake3.as_str()] {
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Relative path (with `/`) -> size and digest of every regular file under `root`, following
/// symbolic links (a file reachable by two paths is listed under both; a link back to a folder
/// being walked is skipped).
pub fn digest_tree(root: impl AsRef<Path>) -> Result<BTreeMap<String, FileDigest>> {
    let root = root.as_ref();
    let mut out = BTreeMap::new();
    for (rel, abs) in list_files(root, Symlinks::Follow)? {
        out.insert(rel, digest_file_sized(&abs, false)?);
    }
    Ok(out)
}

/// What [`list_files`] does with symbolic links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Symlinks {
    /// Follow them (to files and folders).
    Follow,
    /// Fail with [`StoreError::Symlink`].
    Reject,
}

/// Every regular file under `root` as (relative path with `/`, absolute path), sorted by the
/// relative path.
pub(crate) fn list_files(root: &Path, symlinks: Symlinks) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut ancestors = Vec::new();
    if let Ok(c) = root.canonicalize() {
        ancestors.push(c);
    }
    walk(root, "", symlinks, &mut ancestors, &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn walk(
    dir: &Path,
    prefix: &str,
    symlinks: Symlinks,
    ancestors: &mut Vec<PathBuf>,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|it| it.collect::<std::io::Result<Vec<_>>>())
        .map_err(|e| StoreError::io("cannot list", dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| StoreError::NonUtf8Path { path: path.clone() })?;
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let mut ft = entry
            .file_type()
            .map_err(|e| StoreError::io("cannot inspect", &path, e))?;
        if ft.is_symlink() {
            if symlinks == Symlinks::Reject {
                return Err(StoreError::Symlink { path });
            }
            ft = std::fs::metadata(&path)
                .map_err(|e| StoreError::io("cannot follow symbolic link", &path, e))?
                .file_type();
        }
        if ft.is_dir() {
            let canon = path
                .canonicalize()
                .map_err(|e| StoreError::io("cannot resolve", &path, e))?;
            // A link back to a folder being walked would recurse forever: skip it.
            if !ancestors.contains(&canon) {
                ancestors.push(canon);
                walk(&path, &rel, symlinks, ancestors, out)?;
                ancestors.pop();
            }
        } else if ft.is_file() {
            out.push((rel, path));
        }
        // Sockets, fifos and devices are not content: skip them.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn file_digest_matches_blake3() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        assert_eq!(
            digest_file(&p).unwrap(),
            blake3::hash(&data).to_hex().to_string()
        );
        let sized = digest_file_sized(&p, true).unwrap();
        assert_eq!(sized.bytes, 200_000);
        let err = digest_file(d.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn dir_digest_is_deterministic_and_content_sensitive() {
        let make = |files: &[(&str, &str)]| {
            let d = tempfile::tempdir().unwrap();
            for (rel, content) in files {
                let p = d.path().join(rel);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, content).unwrap();
            }
            d
        };
        let a = make(&[("a.txt", "1"), ("sub/b.txt", "2")]);
        // Created in another order, in another place: same digest.
        let b = make(&[("sub/b.txt", "2"), ("a.txt", "1")]);
        fs::create_dir(b.path().join("empty")).unwrap();
        let da = digest_dir(a.path()).unwrap();
        assert_eq!(da, digest_dir(b.path()).unwrap());
        assert_ne!(
            da,
            digest_dir(make(&[("a.txt", "1"), ("sub/b.txt", "3")]).path()).unwrap()
        );
        assert_ne!(
            da,
            digest_dir(make(&[("a.txt", "1"), ("sub/c.txt", "2")]).path()).unwrap()
        );
        let tree = digest_tree(a.path()).unwrap();
        assert_eq!(tree.keys().collect::<Vec<_>>(), vec!["a.txt", "sub/b.txt"]);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_followed_or_rejected() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("real")).unwrap();
        fs::write(d.path().join("real/f"), "x").unwrap();
        std::os::unix::fs::symlink(d.path().join("real"), d.path().join("link")).unwrap();
        // A cycle back to the root is not followed.
        std::os::unix::fs::symlink(d.path(), d.path().join("real/up")).unwrap();
        let files = list_files(d.path(), Symlinks::Follow).unwrap();
        let rels: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(rels, vec!["link/f", "real/f"]);
        assert!(matches!(
            list_files(d.path(), Symlinks::Reject),
            Err(StoreError::Symlink { .. })
        ));
    }
}
