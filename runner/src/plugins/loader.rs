//! Finding and loading plugin libraries: the ABI-version handshake, digests for cache keys and
//! the lockfile, and the registry of objectives and augmentations by name.
//!
//! Libraries are loaded only from explicit paths or plugin folders, checked for the entry
//! symbol and ABI version before anything else is read, and never unloaded (unloading Rust
//! libraries with thread-locals is unsound; see docs/plugins/abi.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pretext_plugin::abi::{self, PtxAugmentEntry, PtxObjectiveEntry, PtxPluginInfo};

/// Why a library could not be used as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {path}: cannot be loaded: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("plugin {path}: not a pretext plugin (it exports no `pretext_plugin_entry` symbol); build it with `pretext_plugin::export_plugin!`")]
    NoEntry { path: PathBuf },
    #[error("plugin {path}: its entry function failed (returned no plugin description)")]
    NullInfo { path: PathBuf },
    #[error("plugin {path}: built for plugin ABI v{found}, but this pretext speaks ABI v{expected}; rebuild the plugin against pretext-plugin {sdk}")]
    AbiMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
        sdk: &'static str,
    },
    #[error("{kind} `{name}` is provided by two plugin libraries: {first} and {second}; remove one of them from the plugin folders")]
    Duplicate {
        kind: &'static str,
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("cannot read plugin folder {path}: {reason}")]
    Folder { path: PathBuf, reason: String },
}

/// One loaded library.
#[derive(Debug)]
pub struct Library {
    pub path: PathBuf,
    /// blake3 of the library file (goes into stage keys and the lockfile).
    pub digest: String,
    pub name: String,
    pub version: String,
    pub sdk_version: String,
    info: *const PtxPluginInfo,
}

// SAFETY: the info table is immutable 'static data of a library that is never unloaded.
unsafe impl Send for Library {}
unsafe impl Sync for Library {}

impl Library {
    pub fn objectives(&self) -> &'static [PtxObjectiveEntry] {
        // SAFETY: checked non-null and ABI-matched at load; the library is never unloaded.
        unsafe {
            let i = &*self.info;
            if i.n_objectives == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(i.objectives, i.n_objectives)
            }
        }
    }
    pub fn augmentations(&self) -> &'static [PtxAugmentEntry] {
        // SAFETY: as above.
        unsafe {
            let i = &*self.info;
            if i.n_augmentations == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(i.augmentations, i.n_augmentations)
            }
        }
    }
}

/// Load one library file and check its ABI version.
/// For a 64-bit little-endian ELF file (what Linux loads): every loadable segment and the
/// section header table must lie inside the file. Other formats pass unchecked (the platform
/// loader reports them).
fn check_elf_extent(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if !bytes.starts_with(b"\x7fELF") || bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Ok(());
    }
    let len = bytes.len() as u64;
    let truncated = |what: &str| {
        format!("the file is truncated or corrupt ({what} lies past its end, at {len} bytes); rebuild or re-copy the library")
    };
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as u64)
    };
    let u32_at = |o: u64| {
        let o = usize::try_from(o).ok()?;
        bytes
            .get(o..o.checked_add(4)?)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    };
    let u64_at = |o: u64| {
        let o = usize::try_from(o).ok()?;
        bytes
            .get(o..o.checked_add(8)?)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let (Some(phoff), Some(shoff), Some(phentsize), Some(phnum), Some(shentsize), Some(shnum)) = (
        u64_at(0x20),
        u64_at(0x28),
        u16_at(0x36),
        u16_at(0x38),
        u16_at(0x3a),
        u16_at(0x3c),
    ) else {
        return Err(truncated("the ELF header"));
    };
    let fits = |off: u64, size: u64| off.checked_add(size).is_some_and(|end| end <= len);
    if !fits(phoff, phentsize.saturating_mul(phnum)) {
        return Err(truncated("the program header table"));
    }
    if shnum > 0 && !fits(shoff, shentsize.saturating_mul(shnum)) {
        return Err(truncated("the section header table"));
    }
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        const PT_LOAD: u32 = 1;
        if u32_at(ph) != Some(PT_LOAD) {
            continue;
        }
        match (u64_at(ph + 8), u64_at(ph + 0x20)) {
            (Some(off), Some(filesz)) if fits(off, filesz) => {}
            _ => return Err(truncated("a loadable segment")),
        }
    }
    Ok(())
}

pub fn load_library(path: &Path) -> Result<Library, PluginError> {
    let digest = std::fs::File::open(path)
        .and_then(|f| {
            blake3::Hasher::new()
                .update_reader(f)
                .map(|h| h.finalize().to_hex().to_string())
        })
        .map_err(|e| PluginError::Load {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    // A truncated ELF library crashes the dynamic loader (SIGBUS when it maps a segment past
    // the end of the file), so check the segments fit before `dlopen` sees it.
    check_elf_extent(path).map_err(|reason| PluginError::Load {
        path: path.to_path_buf(),
        reason,
    })?;
    // SAFETY: loading runs the library's initialisers; only files from explicit plugin paths
    // and plugin folders reach this point.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::Load {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let info = {
        // SAFETY: the symbol's type is fixed by the ABI.
        let entry: libloading::Symbol<abi::EntryFn> = unsafe { lib.get(abi::ENTRY_SYMBOL) }
            .map_err(|_| PluginError::NoEntry {
                path: path.to_path_buf(),
            })?;
        unsafe { entry() }
    };
    if info.is_null() {
        return Err(PluginError::NullInfo {
            path: path.to_path_buf(),
        });
    }
    // Only the first field may be read before the version is known.
    let found = unsafe { std::ptr::read(info as *const u32) };
    if found != abi::ABI_VERSION {
        return Err(PluginError::AbiMismatch {
            path: path.to_path_buf(),
            found,
            expected: abi::ABI_VERSION,
            sdk: pretext_plugin::SDK_VERSION,
        });
    }
    let (name, version, sdk_version) = unsafe {
        let i = &*info;
        (
            i.name.as_str().to_string(),
            i.version.as_str().to_string(),
            i.sdk_version.as_str().to_string(),
        )
    };
    // Never unload: leak the handle.
    std::mem::forget(lib);
    Ok(Library {
        path: path.to_path_buf(),
        digest,
        name,
        version,
        sdk_version,
        info,
    })
}

fn is_shared_library(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("so" | "dylib" | "dll")
    )
}

/// Where plugins are looked for, in order.
#[derive(Debug, Clone, Default)]
pub struct SearchPath {
    /// Explicit library files (from the pipeline's `plugin_paths`).
    pub files: Vec<PathBuf>,
    /// Plugin folders: every shared library directly inside is loaded.
    pub dirs: Vec<PathBuf>,
    /// Folders where only `libpretext_*` libraries are loaded (the build's target folder).
    pub builtin_dirs: Vec<PathBuf>,
}

impl SearchPath {
    /// The default: the folder of the running executable (where cargo puts the workspace's
    /// plugin libraries) plus `PRETEXT_PLUGIN_PATH` folders.
    pub fn with_defaults(mut self) -> Self {
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                self.builtin_dirs.push(dir.to_path_buf());
                // Test binaries live in target/<profile>/deps.
                if dir.ends_with("deps") {
                    if let Some(up) = dir.parent() {
                        self.builtin_dirs.push(up.to_path_buf());
                    }
                }
            }
        }
        if let Some(p) = std::env::var_os("PRETEXT_PLUGIN_PATH") {
            self.dirs.extend(std::env::split_paths(&p));
        }
        self
    }

    /// Every candidate library file, deduplicated by canonical path, in search order.
    pub fn candidates(&self) -> Result<Vec<PathBuf>, PluginError> {
        let mut out: Vec<PathBuf> = Vec::new();
        let mut push = |p: PathBuf| {
            let c = p.canonicalize().unwrap_or(p);
            if !out.contains(&c) {
                out.push(c);
            }
        };
        for f in &self.files {
            if f.is_dir() {
                for p in list_dir(f)? {
                    push(p);
                }
            } else {
                push(f.clone());
            }
        }
        for d in &self.dirs {
            if !d.exists() {
                continue;
            }
            for p in list_dir(d)? {
                push(p);
            }
        }
        for d in &self.builtin_dirs {
            if !d.exists() {
                continue;
            }
            for p in list_dir(d)? {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with("libpretext_") || name.starts_with("pretext_") {
                    push(p);
                }
            }
        }
        Ok(out)
    }
}

fn list_dir(d: &Path) -> Result<Vec<PathBuf>, PluginError> {
    let rd = std::fs::read_dir(d).map_err(|e| PluginError::Folder {
        path: d.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_shared_library(p))
        .collect();
    v.sort();
    Ok(v)
}

/// An objective or augmentation found in a library.
pub struct Found<E: 'static> {
    pub entry: &'static E,
    pub library: Arc<Library>,
}

impl<E> Clone for Found<E> {
    fn clone(&self) -> Self {
        Found {
            entry: self.entry,
            library: self.library.clone(),
        }
    }
}

/// Everything found on a [`SearchPath`].
#[derive(Default)]
pub struct Registry {
    pub libraries: Vec<Arc<Library>>,
    pub objectives: BTreeMap<String, Found<PtxObjectiveEntry>>,
    pub augmentations: BTreeMap<String, Found<PtxAugmentEntry>>,
    /// Libraries that failed to load, with the reason (reported by `pretext plugins`; a
    /// pipeline that needs a name from one of them gets the reason in its error).
    pub failures: Vec<PluginError>,
}

impl Registry {
    /// Load every candidate. Explicit files that fail are errors; libraries in folders that
    /// fail are recorded in `failures`.
    pub fn discover(search: &SearchPath) -> Result<Registry, PluginError> {
        let mut reg = Registry::default();
        let explicit: Vec<PathBuf> = search
            .files
            .iter()
            .map(|p| p.canonicalize().unwrap_or(p.clone()))
            .collect();
        for path in search.candidates()? {
            match load_library(&path) {
                Ok(lib) => reg.add(Arc::new(lib))?,
                Err(e) if explicit.contains(&path) => return Err(e),
                Err(e) => reg.failures.push(e),
            }
        }
        Ok(reg)
    }

    fn add(&mut self, lib: Arc<Library>) -> Result<(), PluginError> {
        for entry in lib.objectives() {
            let name = unsafe { entry.name.as_str() }.to_string();
            if let Some(prev) = self.objectives.get(&name) {
                return Err(PluginError::Duplicate {
                    kind: "objective",
                    name,
                    first: prev.library.path.clone(),
                    second: lib.path.clone(),
                });
            }
            self.objectives.insert(
                name,
                Found {
                    entry,
                    library: lib.clone(),
                },
            );
        }
        for entry in lib.augmentations() {
            let name = unsafe { entry.name.as_str() }.to_string();
            if let Some(prev) = self.augmentations.get(&name) {
                return Err(PluginError::Duplicate {
                    kind: "augmentation",
                    name,
                    first: prev.library.path.clone(),
                    second: lib.path.clone(),
                });
            }
            self.augmentations.insert(
                name,
                Found {
                    entry,
                    library: lib.clone(),
                },
            );
        }
        self.libraries.push(lib);
        Ok(())
    }

    /// A "not found" message with a did-you-mean and where to look.
    pub fn not_found(&self, kind: &str, name: &str) -> String {
        let known: Vec<&String> = if kind == "objective" {
            self.objectives.keys().collect()
        } else {
            self.augmentations.keys().collect()
        };
        let hint = known
            .iter()
            .map(|k| (strsim::levenshtein(k, name), k))
            .filter(|(d, k)| *d <= (k.len().max(name.len()) / 3).max(1))
            .min()
            .map(|(_, k)| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        let list = known
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut msg = format!(
            "no plugin provides {kind} `{name}`{hint}; available: {}",
            if list.is_empty() { "none".into() } else { list }
        );
        if !self.failures.is_empty() {
            msg.push_str(&format!(
                "; {} plugin librar{} failed to load (see `pretext plugins`)",
                self.failures.len(),
                if self.failures.len() == 1 { "y" } else { "ies" }
            ));
        }
        msg.push_str(". Run `pretext plugins` to see what is found and where.");
        msg
    }
}
