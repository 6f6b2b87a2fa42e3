//! `ingest` of text (`source.format = "text"`): documents → passages → token sequences.
//!
//! 1. Documents: a `.txt` file, every `.txt` file under a folder (sorted, hidden files
//!    skipped, other files passed over and counted), or the rows of a parquet string column.
//!    File bytes are decoded (`encoding`: UTF-8, Latin-1, or `auto` = UTF-8 else Latin-1),
//!    normalised (line endings, NFC, control characters) and stripped of Project Gutenberg
//!    licence headers when present.
//! 2. Passages of `passage_words` consecutive words; a passage is one sample. Ids are passage
//!    indices in source order, `limit` keeps the first ones, and the split is a permutation
//!    seeded by the pipeline seed (as for images).
//! 3. The tokenizer: a byte-level BPE trained on the **train split only**, or the
//!    `tokenizer.json` the pipeline brings (`tokenizer.path`); either is stored as
//!    `tokenizer.json` (a standard Hugging Face file, see [`crate::data::tokenizer`]). Each
//!    passage becomes `[CLS]` + its tokens, cut or padded (`[PAD]`) to `seq_len`.
//!
//! `dataset.parquet` has a `tokens` list column, the source `path`, and the passage itself as
//! the metadata column `meta_text`, so a person can read what a sample is.

use std::path::{Path, PathBuf};

use super::{Metrics, StageCtx, StageError};
use crate::artifacts::dataset::{self, CHUNK_ROWS, DATASET_FILE};
use crate::artifacts::tokenizer::{self, encode_passage, TOKENIZER_FILE};
use crate::data::table::DatasetWriter;
use crate::data::text::{self, Encoding};
use crate::data::tokenizer::TextTokenizer;
use crate::data::{DatasetInfo, Layout, Records, Samples, Split};
use crate::pipeline::{
    IngestConfig, IngestSource, OnError, TextEncoding, TextLabels, TokenizerVocab,
};

/// One document: where it came from, its class name, its text.
#[derive(Debug)]
struct Document {
    path: String,
    class: Option<String>,
    text: String,
}

/// What reading the documents passed over or left out.
#[derive(Debug, Default)]
struct Reading {
    skipped: Vec<(String, String)>,
    ignored: Vec<String>,
    latin1: Vec<String>,
}

fn encoding(e: TextEncoding) -> Encoding {
    match e {
        TextEncoding::Utf8 => Encoding::Utf8,
        TextEncoding::Latin1 => Encoding::Latin1,
        TextEncoding::Auto => Encoding::Auto,
    }
}

/// The `.txt` files under `root` (or `root` itself), sorted; other files are returned apart.
fn text_files(root: &Path) -> Result<(Vec<PathBuf>, Vec<String>), StageError> {
    let meta = std::fs::metadata(root).map_err(|e| {
        StageError::Input(format!(
            "{}: cannot read the text source: {e}; `source.path` is relative to the pipeline file",
            root.display()
        ))
    })?;
    if meta.is_file() {
        return Ok((vec![root.to_path_buf()], Vec::new()));
    }
    let (mut files, mut ignored) = (Vec::new(), Vec::new());
    let walk = walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walk {
        let entry = entry.map_err(|e| {
            StageError::Input(format!("{}: cannot walk the folder: {e}", root.display()))
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let p = entry.path();
        if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("txt")) {
            files.push(p.to_path_buf());
        } else {
            ignored.push(relative(root, p));
        }
    }
    if files.is_empty() {
        return Err(StageError::Input(format!(
            "{}: the folder holds no .txt files; a text source reads a .txt file, a folder of .txt files, or a parquet file with `column`",
            root.display()
        )));
    }
    Ok((files, ignored))
}

fn relative(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Read and decode every document of a file or folder source.
fn read_files(
    root: &Path,
    labels: TextLabels,
    delimiter: Option<&str>,
    enc: TextEncoding,
    on_error: OnError,
) -> Result<(Vec<Document>, Reading), StageError> {
    let (files, ignored) = text_files(root)?;
    let mut reading = Reading {
        ignored,
        ..Reading::default()
    };
    let mut docs = Vec::new();
    let single = files.len() == 1 && files[0] == root;
    for f in files {
        let rel = if single {
            f.file_name()
                .map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into())
        } else {
            relative(root, &f)
        };
        let decoded = crate::data::read_regular(&f)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|b| text::decode(&b, encoding(enc)).map_err(|e| e.to_string()));
        let (raw, used) = match decoded {
            Ok(d) => d,
            Err(why) => match on_error {
                OnError::Fail => {
                    return Err(StageError::Input(format!(
                        "{}: {why}\n  help: set `encoding` in the source, or `on_error = \"skip\"` in the ingest stage to leave the file out",
                        f.display()
                    )))
                }
                OnError::Skip => {
                    tracing::warn!(file = %f.display(), reason = %why, "skipped an unreadable text file");
                    reading.skipped.push((f.display().to_string(), why));
                    continue;
                }
            },
        };
        if used != "utf-8" {
            tracing::info!(file = %f.display(), encoding = used, "decoded as Latin-1");
            reading.latin1.push(rel.clone());
        }
        let normal = text::normalize(&raw);
        let body = text::strip_gutenberg(&normal).to_string();
        let class = match labels {
            TextLabels::None => None,
            TextLabels::Files => {
                let stem = f
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                Some(match delimiter {
                    Some(d) => stem.split(d).next().unwrap_or(&stem).to_string(),
                    None => stem,
                })
            }
            TextLabels::Folders => {
                let parts: Vec<&str> = rel.split('/').collect();
                if parts.len() < 2 {
                    return Err(StageError::Input(format!(
                        "{}: labels = \"folders\" takes each file's class from its sub-folder, but this file is at the top of {}; move it into a class folder or use labels = \"files\"",
                        f.display(),
                        root.display()
                    )));
                }
                Some(parts[0].to_string())
            }
        };
        docs.push(Document {
            path: rel,
            class,
            text: body,
        });
    }
    Ok((docs, reading))
}

/// Read the documents of a parquet string column (and optional label column).
fn read_parquet(
    path: &Path,
    column: &str,
    label: Option<&str>,
    path_column: Option<&str>,
) -> Result<(Vec<Document>, Reading), StageError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let err = |m: String| StageError::Input(format!("{}: {m}", path.display()));
    let read = || -> Result<Vec<Document>, StageError> {
        let file = crate::data::open_regular(path).map_err(|e| err(format!("cannot open: {e}")))?;
        let reader = SerializedFileReader::new(file).map_err(|e| err(format!("parquet: {e}")))?;
        let fields = reader
            .metadata()
            .file_metadata()
            .schema()
            .get_fields()
            .to_vec();
        let find = |name: &str| {
            fields.iter().position(|f| f.name() == name).ok_or_else(|| {
                let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
                err(format!(
                    "no column `{name}`; the file has {}",
                    names.join(", ")
                ))
            })
        };
        let col = find(column)?;
        let lab = label.map(find).transpose()?;
        let named = path_column.map(find).transpose()?;
        let rows = reader
            .get_row_iter(None)
            .map_err(|e| err(format!("parquet: {e}")))?;
        let mut docs = Vec::new();
        for (i, row) in rows.enumerate() {
            let row = row.map_err(|e| err(format!("record {i}: {e}")))?;
            let t = row.get_string(col).map_err(|e| {
                err(format!(
                    "record {i}: column `{column}` is not a string ({e}); `column` names a text column"
                ))
            })?;
            let class = match lab {
                None => None,
                Some(l) => Some(match row.get_string(l) {
                    Ok(s) => s.clone(),
                    Err(_) => row
                        .get_long(l)
                        .map(|v| v.to_string())
                        .or_else(|_| row.get_int(l).map(|v| v.to_string()))
                        .map_err(|e| {
                            err(format!(
                                "record {i}: label column `{}` is neither a string nor an integer, or is null ({e})",
                                label.unwrap_or_default()
                            ))
                        })?,
                }),
            };
            let path = match named {
                None => format!("record {i}"),
                Some(c) => row
                    .get_string(c)
                    .map_err(|e| {
                        err(format!(
                            "record {i}: column `{}` is not a string or is null ({e}); `path_column` names a column of file names",
                            path_column.unwrap_or_default()
                        ))
                    })?
                    .clone(),
            };
            docs.push(Document {
                path,
                class,
                text: text::normalize(t),
            });
        }
        Ok(docs)
    };
    let docs = crate::panic_guard::catch(read)
        .unwrap_or_else(|p| Err(err(format!("the parquet file is corrupt ({p})"))))?;
    Ok((docs, Reading::default()))
}

pub fn run(cfg: &IngestConfig, ctx: &StageCtx) -> Result<Metrics, StageError> {
    let IngestSource::Text {
        path,
        column,
        labels,
        label_delimiter,
        label,
        encoding,
        passage_words,
        documents,
        path_column,
    } = &cfg.source
    else {
        return Err(StageError::Failed("internal: not a text source".into()));
    };
    let Some(tk) = &cfg.tokenizer else {
        return Err(StageError::Input(
            "a text source needs `tokenizer = { vocab_size, seq_len }` in the ingest stage".into(),
        ));
    };
    // A brought tokenizer is read first: a bad file fails before any document is read.
    let mut brought = brought_tokenizer(&tk.vocab)?;
    let (docs, reading) = match column {
        Some(c) => read_parquet(&path.resolved, c, label.as_deref(), path_column.as_deref())?,
        None => read_files(
            &path.resolved,
            *labels,
            label_delimiter.as_deref(),
            *encoding,
            cfg.on_error,
        )?,
    };
    let passages = match documents {
        true => whole_documents(&docs, cfg.limit),
        false => passages_of(&docs, *passage_words, cfg.limit),
    };
    let n = passages.len();
    if n < 2 {
        return Err(StageError::Input(format!(
            "{}: only {n} passage(s) of up to {passage_words} words; a train/test split needs at least 2 (lower `passage_words` or add text)",
            path.resolved.display()
        )));
    }
    let is_train = super::train_mask(n, cfg.split.train, ctx.seed);
    let classes = classes_of(&docs, &path.resolved)?;
    let (tokenizer, json) = match &tk.vocab {
        TokenizerVocab::Train {
            vocab_size,
            min_frequency,
        } => {
            ctx.progress.start("training the tokenizer", 1);
            let trained = TextTokenizer::train(
                passages
                    .iter()
                    .zip(&is_train)
                    .filter(|(_, &t)| t)
                    .map(|((_, p), _)| p.as_str()),
                *vocab_size,
                *min_frequency,
                tk.seq_len,
            )
            .map_err(|m| StageError::Input(format!("tokenizer: {m}")))?;
            ctx.progress
                .finish(&format!("{} tokens", trained.0.vocab_size()));
            trained
        }
        TokenizerVocab::File { .. } => brought
            .take()
            .ok_or_else(|| StageError::Failed("internal: the brought tokenizer".into()))?,
    };
    std::fs::write(ctx.out_dir.join(TOKENIZER_FILE), json)
        .map_err(|e| super::io_err(&ctx.out_dir.join(TOKENIZER_FILE), e))?;

    let len = tk.seq_len;
    let vocab = tokenizer.vocab_size();
    let written = write_tokens(
        ctx,
        &Passages {
            docs: &docs,
            passages: &passages,
            is_train: &is_train,
            classes: classes.as_deref(),
        },
        &tokenizer,
        len,
    )?;
    let Written {
        truncated,
        token_sum,
        train,
        test,
    } = written;

    let skipped: Vec<(&str, &str)> = reading
        .skipped
        .iter()
        .map(|(at, why)| (at.as_str(), why.as_str()))
        .collect();
    dataset::write_skipped(
        ctx.out_dir,
        &skipped,
        &reading.ignored,
        Some(&reading.latin1),
    )?;
    tracing::info!(
        documents = docs.len(),
        passages = n,
        vocab,
        truncated,
        "ingested text"
    );
    let mut m = Metrics::new();
    m.insert("samples".into(), n as f64);
    m.insert("train".into(), train as f64);
    m.insert("test".into(), test as f64);
    m.insert("documents".into(), docs.len() as f64);
    if let Some(c) = &classes {
        m.insert("classes".into(), c.len() as f64);
    }
    m.insert("vocab_size".into(), vocab as f64);
    m.insert("seq_len".into(), len as f64);
    m.insert("tokens_per_passage".into(), token_sum as f64 / n as f64);
    m.insert("truncated".into(), truncated as f64);
    m.insert("skipped".into(), reading.skipped.len() as f64);
    m.insert("ignored".into(), reading.ignored.len() as f64);
    m.insert("latin1_files".into(), reading.latin1.len() as f64);
    Ok(m)
}

/// A brought `tokenizer.json` (`tokenizer.path`) with the file's text, read before any
/// document; `None` when the tokenizer is trained.
fn brought_tokenizer(
    vocab: &TokenizerVocab,
) -> Result<Option<(TextTokenizer, String)>, StageError> {
    let TokenizerVocab::File { path } = vocab else {
        return Ok(None);
    };
    let (tokenizer, json) = tokenizer::read(&path.resolved)?;
    if tokenizer.is_renumbered() {
        tracing::info!(
            file = %path.resolved.display(),
            "the tokenizer's special tokens are not ids 0..5: its ids are renumbered (specials first, the rest in order)"
        );
    }
    Ok(Some((tokenizer, json)))
}

/// Passages in source order, as (document, text); the first `limit` when set.
/// `samples = "documents"`: every document is one sample (its words joined by single spaces),
/// so sample ids are document indices (an empty document is a sample of `[CLS]` alone).
fn whole_documents(docs: &[Document], limit: Option<u64>) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = docs
        .iter()
        .enumerate()
        .map(|(d, doc)| (d, doc.text.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    if let Some(l) = limit {
        out.truncate(l as usize);
    }
    out
}

fn passages_of(docs: &[Document], words: usize, limit: Option<u64>) -> Vec<(usize, String)> {
    let mut passages: Vec<(usize, String)> = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        passages.extend(text::passages(&doc.text, words).into_iter().map(|p| (d, p)));
    }
    if let Some(l) = limit {
        passages.truncate(l as usize);
    }
    passages
}

/// Classes: sorted names; documents without a class make the dataset unlabelled, and a mix
/// of both is an error naming `source`.
fn classes_of(docs: &[Document], source: &Path) -> Result<Option<Vec<String>>, StageError> {
    if !docs.is_empty() && docs.iter().all(|d| d.class.is_some()) {
        let mut c: Vec<String> = docs.iter().filter_map(|d| d.class.clone()).collect();
        c.sort();
        c.dedup();
        return Ok(Some(c));
    }
    if docs.iter().any(|d| d.class.is_some()) {
        return Err(StageError::Input(format!(
            "{}: some documents have a label and some do not; every row of `label` must be set",
            source.display()
        )));
    }
    Ok(None)
}

/// What [`write_tokens`] encodes: the passages with their documents, split and classes.
struct Passages<'a> {
    docs: &'a [Document],
    passages: &'a [(usize, String)],
    is_train: &'a [bool],
    classes: Option<&'a [String]>,
}

/// Counts of [`write_tokens`].
struct Written {
    /// Passages longer than `seq_len` (cut).
    truncated: usize,
    /// Tokens before cutting, over all passages.
    token_sum: usize,
    train: usize,
    test: usize,
}

/// Encode every passage to `len` tokens and write `dataset.parquet` in chunks.
fn write_tokens(
    ctx: &StageCtx,
    p: &Passages,
    tokenizer: &TextTokenizer,
    len: usize,
) -> Result<Written, StageError> {
    let info = DatasetInfo {
        layout: Layout::Tokens {
            len,
            vocab: tokenizer.vocab_size(),
        },
        labelled: p.classes.is_some(),
        classes: p.classes.map(<[String]>::to_vec),
        paths: true,
        source_sizes: false,
        meta: vec!["text".into()],
    };
    let mut writer = DatasetWriter::create(&ctx.out_dir.join(DATASET_FILE), &info)?;
    let mut w = Written {
        truncated: 0,
        token_sum: 0,
        train: 0,
        test: 0,
    };
    ctx.progress.start("tokenizing", p.passages.len() as u64);
    let mut chunk = Records::empty(&info);
    let mut ids = Vec::with_capacity(len);
    for (i, (d, text)) in p.passages.iter().enumerate() {
        let full = encode_passage(tokenizer, text, len, &mut ids)?;
        w.token_sum += full;
        if full > len {
            w.truncated += 1;
        }
        chunk.ids.push(i as u64);
        let split = if p.is_train[i] {
            w.train += 1;
            Split::Train
        } else {
            w.test += 1;
            Split::Test
        };
        chunk.splits.push(split);
        if let (Some(c), Some(l)) = (p.classes, chunk.labels.as_mut()) {
            let name = p.docs[*d].class.as_deref().unwrap_or_default();
            l.push(c.binary_search_by(|x| x.as_str().cmp(name)).unwrap_or(0) as u32);
        }
        if let Samples::Tokens { data, .. } = &mut chunk.samples {
            data.extend_from_slice(&ids);
        }
        if let Some(paths) = chunk.paths.as_mut() {
            paths.push(p.docs[*d].path.clone());
        }
        chunk.meta[0].push(text.clone());
        if chunk.len() == CHUNK_ROWS {
            writer.write(&chunk)?;
            ctx.progress.advance(chunk.len() as u64, "");
            chunk = Records::empty(&info);
        }
    }
    writer.write(&chunk)?;
    ctx.progress.advance(chunk.len() as u64, "");
    writer.finish()?;
    ctx.progress
        .finish(&format!("{} passages", p.passages.len()));
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    /// A parquet file of documents: a string column and an integer label column.
    fn write_docs(path: &Path, docs: &[&str], labels: &[i64]) {
        let schema = Arc::new(
            parse_message_type(
                "message docs { REQUIRED BYTE_ARRAY body (UTF8); REQUIRED INT64 author; }",
            )
            .unwrap(),
        );
        let file = std::fs::File::create(path).unwrap();
        let mut w =
            SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::default())).unwrap();
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = docs.iter().map(|d| ByteArray::from(*d)).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(labels, None, None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
        w.close().unwrap();
    }

    #[test]
    fn parquet_documents_with_labels_and_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("docs.parquet");
        write_docs(
            &p,
            &["One text\r\nwith CRLF.", "Caf\u{65}\u{301} two"],
            &[7, 3],
        );
        let (docs, _) = read_parquet(&p, "body", Some("author"), None).unwrap();
        assert_eq!(docs.len(), 2);
        // Normalised: LF line ends, NFC.
        assert_eq!(docs[0].text, "One text\nwith CRLF.");
        assert_eq!(docs[1].text, "Café two");
        assert_eq!(docs[0].class.as_deref(), Some("7"));
        assert_eq!(docs[1].path, "record 1");
        // A missing column names the columns there are.
        let e = read_parquet(&p, "text", None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no column `text`") && e.contains("body, author"),
            "{e}"
        );
        // A non-string text column names the record.
        let e = read_parquet(&p, "author", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("record 0") && e.contains("not a string"), "{e}");
        // Not parquet at all.
        std::fs::write(&p, b"plain words").unwrap();
        let e = read_parquet(&p, "body", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("docs.parquet"), "{e}");
    }

    #[test]
    fn folders_files_labels_and_encodings() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("austen")).unwrap();
        std::fs::create_dir_all(root.join("melville")).unwrap();
        std::fs::write(
            root.join("austen/austen-emma.txt"),
            "Emma Woodhouse, handsome.",
        )
        .unwrap();
        std::fs::write(
            root.join("melville/melville-moby.txt"),
            b"Call me Ishmael \xe9.",
        )
        .unwrap();
        std::fs::write(root.join("melville/notes.md"), "not text").unwrap();
        std::fs::write(root.join(".hidden.txt"), "skip me").unwrap();
        let read = |labels, delim, enc| read_files(root, labels, delim, enc, OnError::Fail);
        // UTF-8 by default: the Latin-1 byte is an error naming the file and position.
        let e = read(TextLabels::Folders, None, TextEncoding::Utf8)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("melville-moby.txt") && e.contains("line 1, column 17"),
            "{e}"
        );
        let (docs, reading) = read(TextLabels::Folders, None, TextEncoding::Auto).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].text, "Call me Ishmael é.");
        assert_eq!(
            reading.latin1,
            vec!["melville/melville-moby.txt".to_string()]
        );
        assert_eq!(reading.ignored, vec!["melville/notes.md".to_string()]);
        let classes: Vec<_> = docs.iter().map(|d| d.class.clone().unwrap()).collect();
        assert_eq!(classes, ["austen", "melville"]);
        let (docs, _) = read(TextLabels::Files, Some("-"), TextEncoding::Latin1).unwrap();
        assert_eq!(docs[1].class.as_deref(), Some("melville"));
        let (docs, _) = read(TextLabels::Files, None, TextEncoding::Latin1).unwrap();
        assert_eq!(docs[0].class.as_deref(), Some("austen-emma"));
        // `skip` leaves the unreadable file out and records why.
        let (docs, reading) = read_files(
            root,
            TextLabels::None,
            None,
            TextEncoding::Utf8,
            OnError::Skip,
        )
        .unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(reading.skipped.len(), 1);
        // A folder without .txt files.
        let empty = root.join("austen-empty");
        std::fs::create_dir_all(&empty).unwrap();
        let e = text_files(&empty).err().unwrap().to_string();
        assert!(e.contains("no .txt files"), "{e}");
    }
}
