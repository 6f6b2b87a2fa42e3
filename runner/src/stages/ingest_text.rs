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

use super::ingest::{CHUNK_ROWS, DATASET_FILE, SKIPPED_FILE};
use super::{write_json, Metrics, StageCtx, StageError};
use crate::data::table::DatasetWriter;
use crate::data::text::{self, Encoding};
use crate::data::tokenizer::{TextTokenizer, CLS, PAD};
use crate::data::{DatasetInfo, Layout, Records, Samples, Split};
use crate::pipeline::{
    IngestConfig, IngestSource, OnError, TextEncoding, TextLabels, TokenizerVocab,
};

/// The tokenizer of a text dataset, beside `dataset.parquet`.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

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
            docs.push(Document {
                path: format!("record {i}"),
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
    let mut brought = match &tk.vocab {
        TokenizerVocab::File { path } => {
            let (tokenizer, json) = read_tokenizer(&path.resolved)?;
            if tokenizer.is_renumbered() {
                tracing::info!(
                    file = %path.resolved.display(),
                    "the tokenizer's special tokens are not ids 0..5: its ids are renumbered (specials first, the rest in order)"
                );
            }
            Some((tokenizer, json))
        }
        TokenizerVocab::Train { .. } => None,
    };
    let (docs, reading) = match column {
        Some(c) => read_parquet(&path.resolved, c, label.as_deref())?,
        None => read_files(
            &path.resolved,
            *labels,
            label_delimiter.as_deref(),
            *encoding,
            cfg.on_error,
        )?,
    };
    // Passages in source order: (document, text).
    let mut passages: Vec<(usize, String)> = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        passages.extend(
            text::passages(&doc.text, *passage_words)
                .into_iter()
                .map(|p| (d, p)),
        );
    }
    if let Some(l) = cfg.limit {
        passages.truncate(l as usize);
    }
    let n = passages.len();
    if n < 2 {
        return Err(StageError::Input(format!(
            "{}: only {n} passage(s) of up to {passage_words} words; a train/test split needs at least 2 (lower `passage_words` or add text)",
            path.resolved.display()
        )));
    }
    let n_train = ((n as f64 * cfg.split.train).round() as usize).clamp(1, n - 1);
    let perm = super::permutation(n, super::mix_seed(ctx.seed, super::Stream::Split, 0, 0, 0));
    let mut is_train = vec![false; n];
    for &i in &perm[..n_train] {
        is_train[i] = true;
    }
    // Classes: sorted names; documents without a class make the dataset unlabelled.
    let classes: Option<Vec<String>> = if docs.iter().all(|d| d.class.is_some()) && !docs.is_empty()
    {
        let mut c: Vec<String> = docs.iter().filter_map(|d| d.class.clone()).collect();
        c.sort();
        c.dedup();
        Some(c)
    } else {
        if docs.iter().any(|d| d.class.is_some()) {
            return Err(StageError::Input(format!(
                "{}: some documents have a label and some do not; every row of `label` must be set",
                path.resolved.display()
            )));
        }
        None
    };
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
    let info = DatasetInfo {
        layout: Layout::Tokens { len, vocab },
        labelled: classes.is_some(),
        classes: classes.clone(),
        paths: true,
        source_sizes: false,
        meta: vec!["text".into()],
    };
    let out = ctx.out_dir.join(DATASET_FILE);
    let mut writer = DatasetWriter::create(&out, &info)?;
    let (mut truncated, mut token_sum, mut train, mut test) = (0usize, 0usize, 0usize, 0usize);
    ctx.progress.start("tokenizing", n as u64);
    let mut chunk = Records::empty(&info);
    let mut ids = Vec::with_capacity(len);
    for (i, (d, p)) in passages.iter().enumerate() {
        let full = encode_passage(&tokenizer, p, len, &mut ids)?;
        token_sum += full;
        if full > len {
            truncated += 1;
        }
        chunk.ids.push(i as u64);
        let split = if is_train[i] {
            train += 1;
            Split::Train
        } else {
            test += 1;
            Split::Test
        };
        chunk.splits.push(split);
        if let (Some(c), Some(l)) = (&classes, chunk.labels.as_mut()) {
            let name = docs[*d].class.as_deref().unwrap_or_default();
            l.push(c.binary_search_by(|x| x.as_str().cmp(name)).unwrap_or(0) as u32);
        }
        if let Samples::Tokens { data, .. } = &mut chunk.samples {
            data.extend_from_slice(&ids);
        }
        if let Some(paths) = chunk.paths.as_mut() {
            paths.push(docs[*d].path.clone());
        }
        chunk.meta[0].push(p.clone());
        if chunk.len() == CHUNK_ROWS {
            writer.write(&chunk)?;
            ctx.progress.advance(chunk.len() as u64, "");
            chunk = Records::empty(&info);
        }
    }
    writer.write(&chunk)?;
    ctx.progress.advance(chunk.len() as u64, "");
    writer.finish()?;
    ctx.progress.finish(&format!("{n} passages"));

    #[derive(serde::Serialize)]
    struct Skipped<'a> {
        skipped: Vec<serde_json::Value>,
        ignored: &'a [String],
        decoded_as_latin1: &'a [String],
    }
    write_json(
        &ctx.out_dir.join(SKIPPED_FILE),
        &Skipped {
            skipped: reading
                .skipped
                .iter()
                .map(|(at, why)| serde_json::json!({ "at": at, "reason": why }))
                .collect(),
            ignored: &reading.ignored,
            decoded_as_latin1: &reading.latin1,
        },
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

/// Copy a text dataset's tokenizer from `from` into `to` (nothing for image datasets): stages
/// whose output stands for the dataset (curate) or is read as text (augment's preview) keep it.
pub fn copy_tokenizer(from: &Path, to: &Path) -> Result<(), StageError> {
    let src = from.join(TOKENIZER_FILE);
    if src.exists() {
        let dst = to.join(TOKENIZER_FILE);
        std::fs::copy(&src, &dst).map_err(|e| super::io_err(&dst, e))?;
    }
    Ok(())
}

/// `[CLS]` + the tokens of `text`, cut or padded (`[PAD]`) to `len`, into `ids` (cleared
/// first). Returns the length before cutting or padding.
fn encode_passage(
    tk: &TextTokenizer,
    text: &str,
    len: usize,
    ids: &mut Vec<u32>,
) -> Result<usize, StageError> {
    ids.clear();
    ids.push(CLS);
    tk.encode_into(text, ids).map_err(StageError::Input)?;
    let full = ids.len();
    ids.resize(len, PAD);
    Ok(full)
}

/// Reads a `tokenizer.json` and returns it with the file's text; errors name the file.
fn read_tokenizer(p: &Path) -> Result<(TextTokenizer, String), StageError> {
    let bytes = crate::data::read_regular(p).map_err(|e| super::io_err(p, e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        StageError::Input(format!(
            "{}: not a tokenizer.json (the file is not UTF-8 text)",
            p.display()
        ))
    })?;
    let tk = TextTokenizer::from_json(&text)
        .map_err(|m| StageError::Input(format!("{}: {m}", p.display())))?;
    Ok((tk, text))
}

/// The tokenizer stored beside a text dataset, if any.
pub fn load_tokenizer(dir: &Path) -> Result<Option<TextTokenizer>, StageError> {
    let p = dir.join(TOKENIZER_FILE);
    if !p.exists() {
        return Ok(None);
    }
    read_tokenizer(&p).map(|(tk, _)| Some(tk))
}

/// Read the text dataset in `dir` tokenized like the encoder's training data (the dataset in
/// `encoder_data`): when the two tokenizers differ, every passage (`meta_text`) is encoded
/// again with the encoder's tokenizer, to the encoder's `seq_len`. Image datasets and text
/// datasets with the same tokenizer are read as they are.
pub fn read_for_encoder(
    dir: &Path,
    encoder_data: &Path,
    seq_len: usize,
) -> Result<crate::data::Dataset, StageError> {
    let path = dir.join(DATASET_FILE);
    let layout = crate::data::table::DatasetReader::open(&path)?
        .info()
        .layout;
    if !matches!(layout, Layout::Tokens { .. }) {
        return Ok(crate::data::table::read_dataset(&path)?);
    }
    let (info, records) = crate::data::table::read_records(&path)?;
    let same = || -> Result<crate::data::Dataset, StageError> {
        Ok(crate::data::Dataset::from_records(records.clone())
            .ok_or_else(|| StageError::Failed("internal: a token dataset".into()))?)
    };
    let (Some(ours), Some(theirs)) = (load_tokenizer(encoder_data)?, load_tokenizer(dir)?) else {
        return same();
    };
    if ours.same_as(&theirs) && info.layout.sample_len() == seq_len {
        return same();
    }
    let texts = info
        .meta
        .iter()
        .position(|m| m == "text")
        .map(|i| &records.meta[i])
        .ok_or_else(|| {
            StageError::Input(format!(
                "{}: the text dataset has another tokenizer than the encoder's and no `meta_text` column to encode again",
                path.display()
            ))
        })?;
    let mut tokens = Vec::with_capacity(records.len() * seq_len);
    let mut ids = Vec::with_capacity(seq_len);
    for t in texts {
        encode_passage(&ours, t, seq_len, &mut ids)?;
        tokens.extend_from_slice(&ids);
    }
    tracing::info!(
        dataset = %path.display(),
        "encoded the passages again with the encoder's tokenizer"
    );
    Ok(crate::data::Dataset {
        shape: (1, 1, seq_len),
        ids: records.ids,
        splits: records.splits,
        labels: records.labels,
        pixels: Vec::new(),
        vocab: Some(ours.vocab_size()),
        tokens,
    })
}

/// The dataset of input `role`, tokenized like the data `meta`'s encoder was trained on (see
/// [`read_for_encoder`]); image datasets are read as they are.
pub fn read_input_for_encoder(
    ctx: &StageCtx,
    role: &str,
    meta: &super::pretrain::EncoderMeta,
) -> Result<crate::data::Dataset, StageError> {
    let dir = &ctx.input(role)?.dir;
    match ctx.entries.get(&meta.dataset_key) {
        Some(trained_on) => read_for_encoder(dir, trained_on, meta.input.width),
        None => Ok(crate::data::table::read_dataset(&dir.join(DATASET_FILE))?),
    }
}

/// A token sequence as text for people: learned tokens decoded, `[MASK]` and `[UNK]` shown,
/// `[CLS]` and padding left out.
pub fn render(tk: &TextTokenizer, ids: &[u32]) -> String {
    use crate::data::tokenizer::{MASK, UNK};
    let mut out = String::new();
    let mut run: Vec<u32> = Vec::new();
    let flush = |run: &mut Vec<u32>, out: &mut String| {
        out.push_str(&tk.decode(run));
        run.clear();
    };
    for &t in ids {
        match t {
            MASK => {
                flush(&mut run, &mut out);
                out.push_str("[MASK]");
            }
            UNK => {
                flush(&mut run, &mut out);
                out.push_str("[UNK]");
            }
            t if t < crate::data::tokenizer::SPECIAL => {}
            t => run.push(t),
        }
    }
    flush(&mut run, &mut out);
    out.trim().to_string()
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
        let (docs, _) = read_parquet(&p, "body", Some("author")).unwrap();
        assert_eq!(docs.len(), 2);
        // Normalised: LF line ends, NFC.
        assert_eq!(docs[0].text, "One text\nwith CRLF.");
        assert_eq!(docs[1].text, "Café two");
        assert_eq!(docs[0].class.as_deref(), Some("7"));
        assert_eq!(docs[1].path, "record 1");
        // A missing column names the columns there are.
        let e = read_parquet(&p, "text", None).unwrap_err().to_string();
        assert!(
            e.contains("no column `text`") && e.contains("body, author"),
            "{e}"
        );
        // A non-string text column names the record.
        let e = read_parquet(&p, "author", None).unwrap_err().to_string();
        assert!(e.contains("record 0") && e.contains("not a string"), "{e}");
        // Not parquet at all.
        std::fs::write(&p, b"plain words").unwrap();
        let e = read_parquet(&p, "body", None).unwrap_err().to_string();
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

    #[test]
    fn render_shows_masks_and_drops_padding() {
        use crate::data::tokenizer::{MASK, UNK};
        let (tk, _) = TextTokenizer::train(std::iter::once("a b c"), 300, 5, 8).unwrap();
        let mut ids = vec![CLS];
        ids.extend(tk.encode(" a").unwrap());
        ids.push(MASK);
        ids.extend(tk.encode("c ").unwrap());
        ids.extend([UNK, PAD, PAD]);
        assert_eq!(render(&tk, &ids), "a[MASK]c [UNK]");
    }
}
