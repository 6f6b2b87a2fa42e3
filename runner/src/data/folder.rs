//! Image folders: every PNG/JPEG file under a folder (walked with walkdir, in sorted order,
//! following symbolic links), decoded in bounded batches on all cores. Labels, when asked
//! for, are the names of the first-level sub-folders (`root/<class>/.../x.png`), numbered in
//! sorted order; every record also carries its path relative to the root and its folder (the
//! `folder` metadata column, the folder bias audits look at) and its decoded size.
//!
//! Hidden files and folders (names starting with `.`) and files without a `.png`, `.jpg` or
//! `.jpeg` extension are passed over and reported as ignored; a file with an image extension
//! that does not decode is a bad record.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::image::{self, ImageOptions};
use super::source::{BadRecord, Item, Source, SourceColumns, SourceRecord};
use super::DataError;

/// Extensions (lower case) of the files read as images.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The metadata column every folder record carries: its folder relative to the root.
pub const FOLDER_COLUMN: &str = "folder";

/// One image file found by the walk, kept small (a folder of a million images holds a
/// million of these while it is read): the path relative to the root, and indices into the
/// source's folder and class names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageFile {
    /// Relative to the root.
    rel: Box<Path>,
    /// Index of its folder (relative to the root, `.` for the root itself) in `folders`.
    folder: u32,
    /// Label index, when labelling by folder and the file is inside a class folder.
    class: Option<u32>,
}

/// An image folder as a [`Source`].
pub struct FolderSource {
    root: PathBuf,
    files: Vec<ImageFile>,
    folders: Vec<String>,
    next: usize,
    columns: SourceColumns,
    opts: ImageOptions,
    threads: usize,
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// `rel`'s components, lossily as text.
fn parts(rel: &Path) -> Vec<String> {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect()
}

/// The index of `name` in `names`, added when new.
fn intern(
    names: &mut Vec<String>,
    index: &mut std::collections::HashMap<String, u32>,
    name: String,
) -> u32 {
    if let Some(&i) = index.get(&name) {
        return i;
    }
    let i = names.len() as u32;
    index.insert(name.clone(), i);
    names.push(name);
    i
}

impl FolderSource {
    /// Walks `root`. With `labels`, the first-level sub-folder names are the classes.
    pub fn open(root: &Path, labels: bool, opts: ImageOptions) -> Result<FolderSource, DataError> {
        if !root.is_dir() {
            let why = if root.exists() {
                "is not a folder"
            } else {
                "does not exist"
            };
            return Err(DataError::file(
                root,
                format!("the image folder {why}; `source.path` must name a folder of images"),
            ));
        }
        let mut found = Vec::new();
        let mut ignored = Vec::new();
        let (mut folders, mut folder_index) = (Vec::new(), Default::default());
        // First-level folder names (candidate classes); `u32::MAX` for files at the root.
        let (mut tops, mut top_index) = (Vec::new(), Default::default());
        let walk = walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !is_hidden(e.file_name()));
        for entry in walk {
            let entry = entry.map_err(|e| {
                let at = e.path().unwrap_or(root).to_path_buf();
                DataError::file(at, format!("cannot walk the image folder: {e}"))
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel_path = entry.path().strip_prefix(root).unwrap_or(entry.path());
            let rel = parts(rel_path);
            let is_image = entry
                .path()
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()));
            if !is_image {
                ignored.push(rel.join("/"));
                continue;
            }
            let folder = if rel.len() > 1 {
                rel[..rel.len() - 1].join("/")
            } else {
                ".".to_string()
            };
            let folder = intern(&mut folders, &mut folder_index, folder);
            let top = if rel.len() > 1 {
                intern(&mut tops, &mut top_index, rel[0].clone())
            } else {
                u32::MAX
            };
            found.push((
                ImageFile {
                    rel: rel_path.into(),
                    folder,
                    class: None,
                },
                top,
            ));
        }
        let classes: Option<Vec<String>> = labels.then(|| {
            tops.iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        });
        // Class of each first-level folder, by its index in `tops`.
        let class_of: Vec<Option<u32>> = tops
            .iter()
            .map(|t| {
                classes
                    .as_ref()
                    .and_then(|c| c.binary_search(t).ok().map(|i| i as u32))
            })
            .collect();
        let files = found
            .into_iter()
            .map(|(mut f, top)| {
                f.class = class_of.get(top as usize).copied().flatten();
                f
            })
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        Ok(FolderSource {
            root: root.to_path_buf(),
            files,
            folders,
            next: 0,
            columns: SourceColumns {
                labelled: labels,
                classes,
                paths: true,
                source_sizes: true,
                meta: vec![FOLDER_COLUMN.to_string()],
                ignored,
            },
            opts,
            threads,
        })
    }

    fn read_one(&self, f: &ImageFile) -> Item {
        let path = self.root.join(&f.rel);
        let at = path.display().to_string();
        if self.columns.labelled && f.class.is_none() {
            return Err(BadRecord::new(
                at,
                "is not inside a class folder (with labels = \"folders\", each image's class is \
                 the name of its first-level sub-folder)",
            ));
        }
        let bytes = super::read_regular(&path)
            .map_err(|e| BadRecord::new(&at, format!("cannot read: {e}")))?;
        let img = image::decode(&bytes).map_err(|m| BadRecord::new(&at, m))?;
        let size = (img.height(), img.width());
        Ok(SourceRecord {
            label: f.class,
            sample: image::finish(img, &self.opts),
            path: Some(parts(&f.rel).join("/")),
            source_size: Some(size),
            meta: vec![self.folders[f.folder as usize].clone()],
        })
    }
}

impl Source for FolderSource {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn columns(&self) -> &SourceColumns {
        &self.columns
    }

    fn next_batch(&mut self, max: usize) -> Result<Vec<Item>, DataError> {
        let end = (self.next + max).min(self.files.len());
        let batch = &self.files[self.next..end];
        self.next = end;
        if batch.len() < 2 * self.threads || self.threads == 1 {
            return Ok(batch.iter().map(|f| self.read_one(f)).collect());
        }
        // Decode on every core; results keep the walk's order.
        let per = batch.len().div_ceil(self.threads);
        let me = &*self;
        let parts: Vec<Vec<Item>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .chunks(per)
                .map(|chunk| s.spawn(move || chunk.iter().map(|f| me.read_one(f)).collect()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(BadRecord::new(
                            "image folder",
                            "a decoder thread failed",
                        ))]
                    })
                })
                .collect()
        });
        Ok(parts.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::image::tests::encoded;
    use super::*;
    use ::image::ImageFormat;

    #[test]
    fn walks_sorted_with_folder_labels() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (rel, bytes) in [
            ("dogs/b.png", encoded(ImageFormat::Png, 4, 4, false)),
            ("cats/indoor/a.jpg", encoded(ImageFormat::Jpeg, 4, 4, false)),
            ("cats/z.PNG", encoded(ImageFormat::Png, 5, 3, false)),
            ("cats/readme.txt", b"hello".to_vec()),
            (".hidden/x.png", encoded(ImageFormat::Png, 4, 4, false)),
            ("top.png", encoded(ImageFormat::Png, 4, 4, false)),
        ] {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        let mut s = FolderSource::open(root, true, ImageOptions::default()).unwrap();
        assert_eq!(s.len(), 4);
        let cols = s.columns().clone();
        assert_eq!(cols.classes, Some(vec!["cats".into(), "dogs".into()]));
        assert_eq!(cols.ignored, ["cats/readme.txt"]);
        let items = s.next_batch(10).unwrap();
        let ok: Vec<_> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
        let paths: Vec<_> = ok.iter().map(|r| r.path.clone().unwrap()).collect();
        assert_eq!(paths, ["cats/indoor/a.jpg", "cats/z.PNG", "dogs/b.png"]);
        assert_eq!(
            ok.iter().map(|r| r.label.unwrap()).collect::<Vec<_>>(),
            [0, 0, 1]
        );
        assert_eq!(ok[0].meta, ["cats/indoor"]);
        assert_eq!(ok[1].source_size, Some((3, 5)));
        let bad = items[3].as_ref().unwrap_err();
        assert!(
            bad.at.ends_with("top.png") && bad.reason.contains("class folder"),
            "{bad}"
        );

        // Unlabelled: the root-level image is fine.
        let mut s = FolderSource::open(root, false, ImageOptions::default()).unwrap();
        let items = s.next_batch(10).unwrap();
        assert!(items
            .iter()
            .all(|i| i.as_ref().is_ok_and(|r| r.label.is_none())));
        assert_eq!(items[3].as_ref().unwrap().meta, ["."]);
    }

    #[test]
    fn parallel_batches_keep_order_and_report_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..40 {
            let bytes = if i == 17 {
                encoded(ImageFormat::Png, 8, 8, true)[..30].to_vec()
            } else {
                encoded(ImageFormat::Png, 2 + i % 3, 2, true)
            };
            std::fs::write(dir.path().join(format!("{i:03}.png")), bytes).unwrap();
        }
        let opts = ImageOptions {
            color: Some(image::Color::Grayscale),
            resize: Some((2, 2)),
        };
        let mut s = FolderSource::open(dir.path(), false, opts).unwrap();
        s.threads = 3;
        let mut all = Vec::new();
        loop {
            let b = s.next_batch(16).unwrap();
            if b.is_empty() {
                break;
            }
            all.extend(b);
        }
        assert_eq!(all.len(), 40);
        for (i, item) in all.iter().enumerate() {
            match item {
                Ok(r) => assert_eq!(r.path.as_deref(), Some(format!("{i:03}.png").as_str())),
                Err(b) => {
                    assert_eq!(i, 17);
                    assert!(b.reason.contains("corrupt or truncated PNG"), "{b}");
                }
            }
        }
    }

    #[test]
    fn missing_folder_is_an_error() {
        let e = FolderSource::open(Path::new("/no/such/dir"), false, ImageOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/no/such/dir") && e.contains("does not exist"),
            "{e}"
        );
    }
}
