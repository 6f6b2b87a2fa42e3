//! Datasets and embeddings as parquet files (snappy-compressed), readable by pandas/pyarrow.
//!
//! `dataset.parquet` columns, in this order (the optional ones only when the dataset has them):
//!
//! | column | type | what |
//! |---|---|---|
//! | `id` | `INT64` | stable sample id (the record index in the source) |
//! | `split` | `UTF8` | `train` or `test` |
//! | `label` | `INT32`, nullable | class index |
//! | `image` *or* `features` *or* `tokens` | `BYTE_ARRAY` *or* `LIST<FLOAT>` *or* `LIST<INT32>` | raw `u8` pixels, channel-major; or a feature vector; or token ids |
//! | `path` | `UTF8` | where the sample came from, relative to the source folder |
//! | `source_height`, `source_width` | `INT32` | the image size before any resize |
//! | `meta_<name>` | `UTF8` | metadata columns carried from the source (missing values are empty) |
//!
//! Key-value metadata: `pretext.shape = "c,h,w"` (images), `pretext.features = "dim"` or
//! `pretext.tokens = "length,vocabulary"` (text; the tokenizer is `tokenizer.json` beside it),
//! `pretext.labelled = "true"|"false"`, and `pretext.classes` (a JSON list of class names) when
//! the labels have names. Each written chunk of rows is one row group, and readers go row group
//! by row group, so ingest and curate never hold a whole dataset in memory.
//!
//! `embeddings.parquet`: `id, split, label, embedding LIST<FLOAT>`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, ConvertedType, Repetition, Type as PhysicalType};
use parquet::column::writer::ColumnWriter;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::{ListAccessor, RowAccessor};
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::Type;

use super::{DataError, Dataset, DatasetInfo, Layout, Records, Samples, Split};

const SHAPE_KEY: &str = "pretext.shape";
const FEATURES_KEY: &str = "pretext.features";
const TOKENS_KEY: &str = "pretext.tokens";
const LABELLED_KEY: &str = "pretext.labelled";
const CLASSES_KEY: &str = "pretext.classes";
/// Prefix of metadata columns in `dataset.parquet`.
pub const META_PREFIX: &str = "meta_";

fn perr(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::file(path, format!("parquet: {e}"))
}

fn props(meta: Vec<KeyValue>) -> Arc<WriterProperties> {
    Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("pretext {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(meta))
            .build(),
    )
}

/// The optional label column: definition levels (1 = present) and present values.
fn label_levels(labels: Option<&[u32]>, n: usize) -> (Vec<i32>, Vec<i16>) {
    match labels {
        Some(l) => (l.iter().map(|&x| x as i32).collect(), vec![1; n]),
        None => (Vec::new(), vec![0; n]),
    }
}

/// Write one row group of `id, split, label` columns followed by one last column written by
/// `last` (embeddings), with the schema and key-value metadata given.
fn write_table(
    path: &Path,
    schema: &str,
    meta: Vec<KeyValue>,
    ids: &[u64],
    splits: &[Split],
    labels: Option<&[u32]>,
    last: impl FnOnce(&mut ColumnWriter) -> parquet::errors::Result<usize>,
) -> Result<(), DataError> {
    let schema = parse_message_type(schema).map_err(|e| perr(path, e))?;
    let file =
        File::create(path).map_err(|e| DataError::file(path, format!("cannot create: {e}")))?;
    let mut writer = SerializedFileWriter::new(file, Arc::new(schema), props(meta))
        .map_err(|e| perr(path, e))?;
    let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let sp: Vec<ByteArray> = splits.iter().map(|s| ByteArray::from(s.as_str())).collect();
    let (lab, lab_def) = label_levels(labels, ids.len());
    let mut rg = writer.next_row_group().map_err(|e| perr(path, e))?;
    let mut last = Some(last);
    let mut col = 0;
    while let Some(mut cw) = rg.next_column().map_err(|e| perr(path, e))? {
        let r = match col {
            0 => cw.typed::<Int64Type>().write_batch(&ids64, None, None),
            1 => cw.typed::<ByteArrayType>().write_batch(&sp, None, None),
            2 => cw
                .typed::<Int32Type>()
                .write_batch(&lab, Some(&lab_def), None),
            _ => match last.take() {
                Some(f) => f(cw.untyped()),
                None => Err(parquet::errors::ParquetError::General(
                    "unexpected extra column".into(),
                )),
            },
        };
        r.map_err(|e| perr(path, e))?;
        cw.close().map_err(|e| perr(path, e))?;
        col += 1;
    }
    rg.close().map_err(|e| perr(path, e))?;
    writer.close().map_err(|e| perr(path, e))?;
    Ok(())
}

type PResult<T> = parquet::errors::Result<T>;

fn prim(name: &str, t: PhysicalType, rep: Repetition, utf8: bool) -> PResult<Arc<Type>> {
    let b = Type::primitive_type_builder(name, t).with_repetition(rep);
    let b = if utf8 {
        b.with_converted_type(ConvertedType::UTF8)
    } else {
        b
    };
    Ok(Arc::new(b.build()?))
}

/// `REQUIRED GROUP name (LIST) { REPEATED GROUP list { REQUIRED FLOAT element; } }`.
fn float_list(name: &str) -> PResult<Arc<Type>> {
    value_list(name, PhysicalType::FLOAT)
}

/// `REQUIRED GROUP name (LIST) { REPEATED GROUP list { REQUIRED <t> element; } }`.
fn value_list(name: &str, t: PhysicalType) -> PResult<Arc<Type>> {
    let element = prim("element", t, Repetition::REQUIRED, false)?;
    let list = Type::group_type_builder("list")
        .with_repetition(Repetition::REPEATED)
        .with_fields(vec![element])
        .build()?;
    Ok(Arc::new(
        Type::group_type_builder(name)
            .with_repetition(Repetition::REQUIRED)
            .with_converted_type(ConvertedType::LIST)
            .with_fields(vec![Arc::new(list)])
            .build()?,
    ))
}

/// The parquet schema of a dataset with `info`'s columns.
fn dataset_schema(info: &DatasetInfo) -> PResult<Type> {
    use parquet::basic::FieldRepetitionType::{OPTIONAL, REQUIRED};
    use PhysicalType::{BYTE_ARRAY, INT32, INT64};
    let mut fields = vec![
        prim("id", INT64, REQUIRED, false)?,
        prim("split", BYTE_ARRAY, REQUIRED, true)?,
        prim("label", INT32, OPTIONAL, false)?,
        match info.layout {
            Layout::Image { .. } => prim("image", BYTE_ARRAY, REQUIRED, false)?,
            Layout::Features { .. } => float_list("features")?,
            Layout::Tokens { .. } => value_list("tokens", INT32)?,
        },
    ];
    if info.paths {
        fields.push(prim("path", BYTE_ARRAY, REQUIRED, true)?);
    }
    if info.source_sizes {
        fields.push(prim("source_height", INT32, REQUIRED, false)?);
        fields.push(prim("source_width", INT32, REQUIRED, false)?);
    }
    for m in &info.meta {
        fields.push(prim(
            &format!("{META_PREFIX}{m}"),
            BYTE_ARRAY,
            REQUIRED,
            true,
        )?);
    }
    Type::group_type_builder("dataset")
        .with_fields(fields)
        .build()
}

fn info_metadata(info: &DatasetInfo) -> Vec<KeyValue> {
    let mut kv = vec![match info.layout {
        Layout::Image {
            channels,
            height,
            width,
        } => KeyValue::new(SHAPE_KEY.into(), format!("{channels},{height},{width}")),
        Layout::Features { dim } => KeyValue::new(FEATURES_KEY.into(), dim.to_string()),
        Layout::Tokens { len, vocab } => KeyValue::new(TOKENS_KEY.into(), format!("{len},{vocab}")),
    }];
    kv.push(KeyValue::new(
        LABELLED_KEY.into(),
        info.labelled.to_string(),
    ));
    if let Some(c) = &info.classes {
        kv.push(KeyValue::new(
            CLASSES_KEY.into(),
            serde_json::to_string(c).unwrap_or_default(),
        ));
    }
    kv
}

/// The values of one leaf column of a row group.
enum Column {
    I64(Vec<i64>),
    I32(Vec<i32>, Option<Vec<i16>>),
    Bytes(Vec<ByteArray>),
    FloatList(Vec<f32>, Vec<i16>, Vec<i16>),
    IntList(Vec<i32>, Vec<i16>, Vec<i16>),
}

impl Column {
    fn strings(v: &[String]) -> Column {
        Column::Bytes(v.iter().map(|s| ByteArray::from(s.as_str())).collect())
    }

    fn write(&self, cw: &mut ColumnWriter) -> PResult<usize> {
        let wrong = || {
            Err(parquet::errors::ParquetError::General(
                "column has the wrong type".into(),
            ))
        };
        match (self, cw) {
            (Column::I64(v), ColumnWriter::Int64ColumnWriter(w)) => w.write_batch(v, None, None),
            (Column::I32(v, def), ColumnWriter::Int32ColumnWriter(w)) => {
                w.write_batch(v, def.as_deref(), None)
            }
            (Column::Bytes(v), ColumnWriter::ByteArrayColumnWriter(w)) => {
                w.write_batch(v, None, None)
            }
            (Column::FloatList(v, def, rep), ColumnWriter::FloatColumnWriter(w)) => {
                w.write_batch(v, Some(def), Some(rep))
            }
            (Column::IntList(v, def, rep), ColumnWriter::Int32ColumnWriter(w)) => {
                w.write_batch(v, Some(def), Some(rep))
            }
            _ => wrong(),
        }
    }
}

/// Writes a dataset file chunk by chunk: each [`DatasetWriter::write`] is one row group, so
/// memory stays bounded by the chunk size.
pub struct DatasetWriter {
    path: PathBuf,
    info: DatasetInfo,
    writer: SerializedFileWriter<File>,
    rows: usize,
}

impl DatasetWriter {
    /// Creates (or truncates) `path` for a dataset with `info`'s columns.
    pub fn create(path: &Path, info: &DatasetInfo) -> Result<DatasetWriter, DataError> {
        let schema = dataset_schema(info).map_err(|e| perr(path, e))?;
        let file =
            File::create(path).map_err(|e| DataError::file(path, format!("cannot create: {e}")))?;
        let writer = SerializedFileWriter::new(file, Arc::new(schema), props(info_metadata(info)))
            .map_err(|e| perr(path, e))?;
        Ok(DatasetWriter {
            path: path.to_path_buf(),
            info: info.clone(),
            writer,
            rows: 0,
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes `r` as one row group (nothing for an empty batch).
    pub fn write(&mut self, r: &Records) -> Result<(), DataError> {
        let path = self.path.clone();
        let n = r.len();
        if n == 0 {
            return Ok(());
        }
        let bad = |m: &str| DataError::file(&path, format!("internal: {m}"));
        if r.samples.layout() != self.info.layout || r.samples.len() != n || r.splits.len() != n {
            return Err(bad("rows do not match the dataset's columns"));
        }
        let mut cols = vec![
            Column::I64(r.ids.iter().map(|&i| i as i64).collect()),
            Column::Bytes(
                r.splits
                    .iter()
                    .map(|s| ByteArray::from(s.as_str()))
                    .collect(),
            ),
        ];
        let (lab, def) = label_levels(r.labels.as_deref(), n);
        cols.push(Column::I32(lab, Some(def)));
        match &r.samples {
            Samples::U8 { shape, data } => {
                let k = shape.0 * shape.1 * shape.2;
                cols.push(Column::Bytes(
                    data.chunks(k.max(1))
                        .map(|c| ByteArray::from(c.to_vec()))
                        .collect(),
                ));
            }
            Samples::F32 { dim, data } => {
                let rep = (0..data.len())
                    .map(|i| if i % dim == 0 { 0 } else { 1 })
                    .collect();
                cols.push(Column::FloatList(data.clone(), vec![1; data.len()], rep));
            }
            Samples::Tokens { len, data, .. } => {
                let rep = (0..data.len())
                    .map(|i| if i % len == 0 { 0 } else { 1 })
                    .collect();
                let ids = data.iter().map(|&t| t as i32).collect();
                cols.push(Column::IntList(ids, vec![1; data.len()], rep));
            }
        }
        if self.info.paths {
            let p = r.paths.as_ref().ok_or_else(|| bad("missing paths"))?;
            cols.push(Column::strings(p));
        }
        if self.info.source_sizes {
            let s = r
                .source_sizes
                .as_ref()
                .ok_or_else(|| bad("missing sizes"))?;
            cols.push(Column::I32(s.iter().map(|x| x.0 as i32).collect(), None));
            cols.push(Column::I32(s.iter().map(|x| x.1 as i32).collect(), None));
        }
        if r.meta.len() != self.info.meta.len() || r.meta.iter().any(|m| m.len() != n) {
            return Err(bad("metadata columns do not match"));
        }
        cols.extend(r.meta.iter().map(|m| Column::strings(m)));

        let mut rg = self.writer.next_row_group().map_err(|e| perr(&path, e))?;
        let mut it = cols.iter();
        while let Some(mut cw) = rg.next_column().map_err(|e| perr(&path, e))? {
            let col = it.next().ok_or_else(|| bad("too few columns"))?;
            col.write(cw.untyped()).map_err(|e| perr(&path, e))?;
            cw.close().map_err(|e| perr(&path, e))?;
        }
        rg.close().map_err(|e| perr(&path, e))?;
        self.rows += n;
        Ok(())
    }

    /// Finishes the file; returns the number of rows written.
    pub fn finish(self) -> Result<usize, DataError> {
        self.writer.close().map_err(|e| perr(&self.path, e))?;
        Ok(self.rows)
    }
}

/// Column positions of a dataset file.
struct Positions {
    id: usize,
    split: usize,
    label: Option<usize>,
    sample: usize,
    path: Option<usize>,
    sizes: Option<(usize, usize)>,
    meta: Vec<usize>,
}

/// Reads a dataset file one row group at a time, in order ([`DatasetReader::next_chunk`]) or
/// any group at will ([`DatasetReader::read_group`]).
pub struct DatasetReader {
    path: PathBuf,
    info: DatasetInfo,
    reader: SerializedFileReader<File>,
    pos: Positions,
    /// The columns rows are read with (`None`: all of them).
    projection: Option<Type>,
    next_group: usize,
}

impl DatasetReader {
    /// Opens a dataset written by [`DatasetWriter`] (or an older pretext). A corrupt file is an
    /// error, never a panic (the parquet crate panics on some malformed footers).
    pub fn open(path: &Path) -> Result<DatasetReader, DataError> {
        crate::panic_guard::catch(|| Self::open_unguarded(path))
            .unwrap_or_else(|p| Err(perr(path, format!("the file is corrupt ({p})"))))
    }

    fn open_unguarded(path: &Path) -> Result<DatasetReader, DataError> {
        let file =
            File::open(path).map_err(|e| DataError::file(path, format!("cannot open: {e}")))?;
        let reader = SerializedFileReader::new(file).map_err(|e| perr(path, e))?;
        let meta = reader.metadata();
        let kv = |key: &str| {
            meta.file_metadata()
                .key_value_metadata()
                .and_then(|kv| kv.iter().find(|k| k.key == key))
                .and_then(|k| k.value.clone())
        };
        let not_ours = |m: String| DataError::file(path, format!("{m}; not a pretext dataset"));
        let layout = match (kv(SHAPE_KEY), kv(FEATURES_KEY)) {
            (None, None) if kv(TOKENS_KEY).is_some() => {
                let t = kv(TOKENS_KEY).unwrap_or_default();
                let dims: Vec<usize> = t.split(',').filter_map(|s| s.parse().ok()).collect();
                match dims[..] {
                    [len, vocab] if len > 0 && vocab > 0 => Layout::Tokens { len, vocab },
                    _ => {
                        return Err(DataError::file(
                            path,
                            format!("bad `{TOKENS_KEY}` metadata `{t}`"),
                        ))
                    }
                }
            }
            (Some(shape), _) => {
                let dims: Vec<usize> = shape.split(',').filter_map(|s| s.parse().ok()).collect();
                let [c, h, w] = dims[..] else {
                    return Err(DataError::file(
                        path,
                        format!("bad `{SHAPE_KEY}` metadata `{shape}`"),
                    ));
                };
                Layout::Image {
                    channels: c,
                    height: h,
                    width: w,
                }
            }
            (None, Some(dim)) => match dim.parse::<usize>() {
                Ok(d) if d > 0 => Layout::Features { dim: d },
                _ => {
                    return Err(DataError::file(
                        path,
                        format!("bad `{FEATURES_KEY}` metadata `{dim}`"),
                    ))
                }
            },
            (None, None) => {
                return Err(not_ours(format!(
                    "missing `{SHAPE_KEY}` (or `{FEATURES_KEY}`) metadata"
                )))
            }
        };
        let fields = meta.file_metadata().schema().get_fields();
        let find = |name: &str| fields.iter().position(|f| f.name() == name);
        let need = |name: &str| find(name).ok_or_else(|| not_ours(format!("no `{name}` column")));
        let sample_col = match layout {
            Layout::Image { .. } => "image",
            Layout::Features { .. } => "features",
            Layout::Tokens { .. } => "tokens",
        };
        let mut meta_names = Vec::new();
        let mut meta_pos = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            if let Some(m) = f.name().strip_prefix(META_PREFIX) {
                meta_names.push(m.to_string());
                meta_pos.push(i);
            }
        }
        let pos = Positions {
            id: need("id")?,
            split: need("split")?,
            label: find("label"),
            sample: need(sample_col)?,
            path: find("path"),
            sizes: find("source_height").zip(find("source_width")),
            meta: meta_pos,
        };
        let labelled = pos.label.is_some()
            && match kv(LABELLED_KEY).as_deref() {
                Some(v) => v == "true",
                // Older files: labelled unless a row group has nulls in the label column.
                None => meta.row_groups().iter().all(|rg| {
                    let nulls = pos
                        .label
                        .and_then(|l| rg.column(l).statistics())
                        .and_then(|s| s.null_count_opt());
                    !matches!(nulls, Some(n) if n > 0)
                }),
            };
        let classes = kv(CLASSES_KEY).and_then(|c| serde_json::from_str(&c).ok());
        let info = DatasetInfo {
            layout,
            labelled,
            classes,
            paths: pos.path.is_some(),
            source_sizes: pos.sizes.is_some(),
            meta: meta_names,
        };
        Ok(DatasetReader {
            path: path.to_path_buf(),
            info,
            reader,
            pos,
            projection: None,
            next_group: 0,
        })
    }

    /// Reads only what the in-memory [`Dataset`] keeps (id, split, label and the sample):
    /// the provenance columns (path, source size, metadata) are neither decoded nor held.
    pub fn samples_only(mut self) -> Result<DatasetReader, DataError> {
        let fields = self.reader.metadata().file_metadata().schema().get_fields();
        let mut keep = vec![self.pos.id, self.pos.split];
        keep.extend(self.pos.label);
        keep.push(self.pos.sample);
        let at = |col: usize| keep.iter().position(|&k| k == col).unwrap_or(0);
        self.pos = Positions {
            id: at(self.pos.id),
            split: at(self.pos.split),
            label: self.pos.label.map(at),
            sample: at(self.pos.sample),
            path: None,
            sizes: None,
            meta: Vec::new(),
        };
        let projection = Type::group_type_builder("dataset")
            .with_fields(keep.iter().map(|&k| fields[k].clone()).collect())
            .build()
            .map_err(|e| perr(&self.path, e))?;
        self.projection = Some(projection);
        self.info.paths = false;
        self.info.source_sizes = false;
        self.info.meta.clear();
        Ok(self)
    }

    /// The file this reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Row groups in the file.
    pub fn groups(&self) -> usize {
        self.reader.num_row_groups()
    }

    /// Rows of row group `g`.
    pub fn group_rows(&self, g: usize) -> usize {
        self.reader.metadata().row_group(g).num_rows().max(0) as usize
    }

    /// The split of every row, in file order (reads only the `split` column).
    pub fn splits(&self) -> Result<Vec<Split>, DataError> {
        let path = self.path.clone();
        crate::panic_guard::catch(|| self.splits_unguarded())
            .unwrap_or_else(|p| Err(perr(&path, format!("the file is corrupt ({p})"))))
    }

    fn splits_unguarded(&self) -> Result<Vec<Split>, DataError> {
        let path = &self.path;
        let fields = self.reader.metadata().file_metadata().schema().get_fields();
        let projection = Type::group_type_builder("dataset")
            .with_fields(vec![fields[self.pos_split_in_file()].clone()])
            .build()
            .map_err(|e| perr(path, e))?;
        // The row count is the footer's claim: a corrupt file must not reserve on its word.
        let mut out = Vec::with_capacity(self.len().min(1 << 20));
        for g in 0..self.groups() {
            let group = self.reader.get_row_group(g).map_err(|e| perr(path, e))?;
            for row in group
                .get_row_iter(Some(projection.clone()))
                .map_err(|e| perr(path, e))?
            {
                let row = row.map_err(|e| perr(path, e))?;
                out.push(
                    match row.get_string(0).map_err(|e| perr(path, e))?.as_str() {
                        "train" => Split::Train,
                        "test" => Split::Test,
                        other => {
                            return Err(DataError::Record {
                                path: path.clone(),
                                record: out.len(),
                                message: format!("unknown split `{other}`"),
                            })
                        }
                    },
                );
            }
        }
        Ok(out)
    }

    /// The `split` column's position in the file's schema.
    fn pos_split_in_file(&self) -> usize {
        let fields = self.reader.metadata().file_metadata().schema().get_fields();
        fields.iter().position(|f| f.name() == "split").unwrap_or(0)
    }

    pub fn info(&self) -> &DatasetInfo {
        &self.info
    }

    /// Rows in the file.
    pub fn len(&self) -> usize {
        self.reader.metadata().file_metadata().num_rows().max(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next row group's rows; `None` after the last. Corrupt data is an error, never a
    /// panic.
    pub fn next_chunk(&mut self) -> Result<Option<Records>, DataError> {
        let path = self.path.clone();
        crate::panic_guard::catch(|| self.next_chunk_unguarded())
            .unwrap_or_else(|p| Err(perr(&path, format!("the file is corrupt ({p})"))))
    }

    fn next_chunk_unguarded(&mut self) -> Result<Option<Records>, DataError> {
        if self.next_group >= self.reader.num_row_groups() {
            return Ok(None);
        }
        self.next_group += 1;
        self.read_group_unguarded(self.next_group - 1).map(Some)
    }

    /// The rows of row group `g` (`g < groups()`). Corrupt data is an error, never a panic.
    pub fn read_group(&self, g: usize) -> Result<Records, DataError> {
        let path = self.path.clone();
        crate::panic_guard::catch(|| self.read_group_unguarded(g))
            .unwrap_or_else(|p| Err(perr(&path, format!("the file is corrupt ({p})"))))
    }

    fn read_group_unguarded(&self, g: usize) -> Result<Records, DataError> {
        let path = self.path.clone();
        let first_record = (0..g).map(|g| self.group_rows(g)).sum::<usize>();
        let group = self.reader.get_row_group(g).map_err(|e| perr(&path, e))?;
        let rows = group
            .get_row_iter(self.projection.clone())
            .map_err(|e| perr(&path, e))?;
        let mut out = Records::empty(&self.info);
        let mut labels = Some(Vec::new());
        let p = &self.pos;
        let layout = self.info.layout;
        let k = layout.sample_len();
        for (i, row) in rows.enumerate() {
            let record = first_record + i;
            let bad = |m: String| DataError::Record {
                path: path.clone(),
                record,
                message: m,
            };
            let row = row.map_err(|e| perr(&path, e))?;
            out.ids
                .push(row.get_long(p.id).map_err(|e| bad(e.to_string()))? as u64);
            out.splits.push(
                match row
                    .get_string(p.split)
                    .map_err(|e| bad(e.to_string()))?
                    .as_str()
                {
                    "train" => Split::Train,
                    "test" => Split::Test,
                    other => return Err(bad(format!("unknown split `{other}`"))),
                },
            );
            match p.label.map(|l| row.get_int(l)) {
                Some(Ok(l)) if l >= 0 => labels.as_mut().map(|v| v.push(l as u32)),
                _ => labels.take().map(|_| ()),
            };
            match &mut out.samples {
                Samples::U8 { data, .. } => {
                    let img = row.get_bytes(p.sample).map_err(|e| bad(e.to_string()))?;
                    if img.len() != k {
                        return Err(bad(format!(
                            "image has {} bytes, expected {k} ({})",
                            img.len(),
                            layout.describe()
                        )));
                    }
                    data.extend_from_slice(img.data());
                }
                Samples::F32 { data, .. } => {
                    let list = row.get_list(p.sample).map_err(|e| bad(e.to_string()))?;
                    if list.len() != k {
                        return Err(bad(format!(
                            "feature vector has {} values, expected {k}",
                            list.len()
                        )));
                    }
                    for j in 0..k {
                        data.push(list.get_float(j).map_err(|e| bad(e.to_string()))?);
                    }
                }
                Samples::Tokens { data, vocab, .. } => {
                    let list = row.get_list(p.sample).map_err(|e| bad(e.to_string()))?;
                    if list.len() != k {
                        return Err(bad(format!(
                            "token sequence has {} ids, expected {k}",
                            list.len()
                        )));
                    }
                    for j in 0..k {
                        let t = list.get_int(j).map_err(|e| bad(e.to_string()))?;
                        if t < 0 || t as usize >= *vocab {
                            return Err(bad(format!(
                                "token id {t} at position {j} is outside the vocabulary of {vocab}"
                            )));
                        }
                        data.push(t as u32);
                    }
                }
            }
            if let (Some(v), Some(c)) = (&mut out.paths, p.path) {
                v.push(row.get_string(c).map_err(|e| bad(e.to_string()))?.clone());
            }
            if let (Some(v), Some((h, w))) = (&mut out.source_sizes, p.sizes) {
                let h = row.get_int(h).map_err(|e| bad(e.to_string()))?;
                let w = row.get_int(w).map_err(|e| bad(e.to_string()))?;
                v.push((h.max(0) as u32, w.max(0) as u32));
            }
            for (col, &c) in out.meta.iter_mut().zip(&p.meta) {
                col.push(row.get_string(c).map_err(|e| bad(e.to_string()))?.clone());
            }
        }
        out.labels = if self.info.labelled { labels } else { None };
        Ok(out)
    }
}

/// The `(id, path)` of every row of the dataset at `path`, read row group by row group (bounded
/// memory); `None` when its rows record no paths.
pub fn ids_and_paths(path: &Path) -> Result<Option<Vec<(u64, String)>>, DataError> {
    let mut reader = DatasetReader::open(path)?;
    if !reader.info().paths {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(reader.len());
    while let Some(chunk) = reader.next_chunk()? {
        let paths = chunk.paths.unwrap_or_default();
        out.extend(chunk.ids.into_iter().zip(paths));
    }
    Ok(Some(out))
}

/// Reads a whole dataset file (any layout, every column). A dataset that does not fit in
/// memory is a clear error before anything is read (see [`super::memory::check_fits`]).
pub fn read_records(path: &Path) -> Result<(DatasetInfo, Records), DataError> {
    let reader = DatasetReader::open(path)?;
    super::memory::check_fits(&reader)?;
    read_all(reader)
}

fn read_all(mut reader: DatasetReader) -> Result<(DatasetInfo, Records), DataError> {
    let info = reader.info().clone();
    let mut all = Records::empty(&info);
    let n = reader.len();
    all.ids.reserve(n);
    all.splits.reserve(n);
    match &mut all.samples {
        Samples::U8 { data, .. } => data.reserve(n * info.layout.sample_len()),
        Samples::F32 { data, .. } => data.reserve(n * info.layout.sample_len()),
        Samples::Tokens { data, .. } => data.reserve(n * info.layout.sample_len()),
    }
    while let Some(chunk) = reader.next_chunk()? {
        all.append(chunk)
            .map_err(|m| DataError::file(&reader.path, m))?;
    }
    Ok((info, all))
}

/// Writes a whole dataset as one row group.
pub fn write_records(path: &Path, info: &DatasetInfo, records: &Records) -> Result<(), DataError> {
    let mut w = DatasetWriter::create(path, info)?;
    w.write(records)?;
    w.finish().map(|_| ())
}

/// Write an image dataset to `path`.
pub fn write_dataset(ds: &Dataset, path: &Path) -> Result<(), DataError> {
    let (info, records) = ds.clone().into_records();
    write_records(path, &info, &records)
}

/// Read an image or text dataset (written by [`write_dataset`] or by the ingest/curate stages).
/// A dataset of feature vectors is a clear error: the stages that read this form (augment,
/// pretrain, probe) work on images and token sequences. So is one that does not fit in memory
/// (see [`super::memory::check_fits`]), before anything is read.
pub fn read_dataset(path: &Path) -> Result<Dataset, DataError> {
    let reader = DatasetReader::open(path)?;
    super::memory::check_fits(&reader)?;
    load_dataset(reader)
}

/// The whole dataset `reader` opened, in memory (no check against the budget: the caller
/// made it). Only the columns a [`Dataset`] keeps are read.
pub fn load_dataset(reader: DatasetReader) -> Result<Dataset, DataError> {
    let path = reader.path.clone();
    let (info, records) = read_all(reader.samples_only()?)?;
    Dataset::from_records(records).ok_or_else(|| not_images(&path, info.layout))
}

/// The error for a dataset of feature vectors where images or token sequences are needed.
pub fn not_images(path: &Path, layout: Layout) -> DataError {
    DataError::file(
        path,
        format!(
            "the dataset holds {} (tabular data), not images; image augmentations cannot \
             apply to it, and augment, pretrain and probe read image datasets only",
            layout.describe()
        ),
    )
}

/// Write per-row embeddings `(n, d)` with ids, splits and labels.
pub fn write_embeddings(
    path: &Path,
    ids: &[u64],
    splits: &[Split],
    labels: Option<&[u32]>,
    emb: &[f32],
    dim: usize,
) -> Result<(), DataError> {
    let n = ids.len();
    // One list per row: repetition level 0 starts a row, 1 continues it.
    let rep: Vec<i16> = (0..n * dim)
        .map(|i| if i % dim == 0 { 0 } else { 1 })
        .collect();
    let def = vec![1i16; n * dim];
    let meta = vec![KeyValue::new(
        "pretext.embedding_dim".to_string(),
        dim.to_string(),
    )];
    write_table(
        path,
        "message embeddings { REQUIRED INT64 id; REQUIRED BYTE_ARRAY split (UTF8); OPTIONAL INT32 label; \
         REQUIRED GROUP embedding (LIST) { REPEATED GROUP list { REQUIRED FLOAT element; } } }",
        meta,
        ids,
        splits,
        labels,
        |cw| match cw {
            ColumnWriter::FloatColumnWriter(w) => w.write_batch(emb, Some(&def), Some(&rep)),
            _ => Err(parquet::errors::ParquetError::General("embedding column has the wrong type".into())),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_round_trip_with_and_without_labels() {
        let dir = tempfile::tempdir().unwrap();
        let mut ds = Dataset {
            shape: (1, 2, 2),
            ids: vec![5, 9, 11],
            splits: vec![Split::Train, Split::Test, Split::Train],
            labels: Some(vec![3, 0, 7]),
            pixels: (0..12).collect(),
            vocab: None,
            tokens: Vec::new(),
        };
        let p = dir.path().join("d.parquet");
        write_dataset(&ds, &p).unwrap();
        assert_eq!(read_dataset(&p).unwrap(), ds);
        ds.labels = None;
        write_dataset(&ds, &p).unwrap();
        assert_eq!(read_dataset(&p).unwrap(), ds);
    }

    #[test]
    fn token_dataset_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset {
            shape: (1, 1, 4),
            ids: vec![0, 1],
            splits: vec![Split::Train, Split::Test],
            labels: Some(vec![1, 0]),
            pixels: Vec::new(),
            vocab: Some(300),
            tokens: vec![2, 17, 299, 0, 2, 5, 6, 7],
        };
        let p = dir.path().join("t.parquet");
        write_dataset(&ds, &p).unwrap();
        let back = read_dataset(&p).unwrap();
        assert_eq!(back, ds);
        assert_eq!(back.batch_f32(&[1]), vec![2.0, 5.0, 6.0, 7.0]);
        // An id outside the vocabulary is a clear error naming the record.
        let mut bad = ds.clone();
        bad.tokens[5] = 300;
        bad.vocab = Some(300);
        write_dataset(&bad, &p).unwrap();
        let e = read_dataset(&p).unwrap_err().to_string();
        assert!(
            e.contains("record 1") && e.contains("outside the vocabulary"),
            "{e}"
        );
    }

    fn feature_records() -> (DatasetInfo, Records) {
        let info = DatasetInfo {
            layout: Layout::Features { dim: 3 },
            labelled: true,
            classes: Some(vec!["cat".into(), "dog".into()]),
            paths: true,
            source_sizes: true,
            meta: vec!["camera".into(), "site id".into()],
        };
        let records = Records {
            ids: vec![0, 1],
            splits: vec![Split::Test, Split::Train],
            labels: Some(vec![1, 0]),
            samples: Samples::F32 {
                dim: 3,
                data: vec![0.5, -1.0, 2.0, 3.0, 4.0, 5.5],
            },
            paths: Some(vec!["a/x.png".into(), "b/y.png".into()]),
            source_sizes: Some(vec![(10, 20), (30, 40)]),
            meta: vec![
                vec!["nikon".into(), "".into()],
                vec!["s1".into(), "s2".into()],
            ],
        };
        (info, records)
    }

    #[test]
    fn records_round_trip_in_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.parquet");
        let (info, records) = feature_records();
        let mut w = DatasetWriter::create(&p, &info).unwrap();
        w.write(&records.select(&[0])).unwrap();
        w.write(&Records::empty(&info)).unwrap();
        w.write(&records.select(&[1])).unwrap();
        assert_eq!(w.finish().unwrap(), 2);
        let mut r = DatasetReader::open(&p).unwrap();
        assert_eq!(r.info(), &info);
        assert_eq!(r.len(), 2);
        assert_eq!(r.next_chunk().unwrap().unwrap(), records.select(&[0]));
        assert_eq!(r.next_chunk().unwrap().unwrap(), records.select(&[1]));
        assert!(r.next_chunk().unwrap().is_none());
        assert_eq!(read_records(&p).unwrap(), (info, records));
    }

    #[test]
    fn samples_only_reads_the_same_dataset_as_every_column() {
        // An image dataset with every provenance column, in three row groups.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.parquet");
        let info = DatasetInfo {
            layout: Layout::Image {
                channels: 1,
                height: 2,
                width: 3,
            },
            labelled: true,
            classes: Some(vec!["a".into(), "b".into()]),
            paths: true,
            source_sizes: true,
            meta: vec!["folder".into()],
        };
        let n = 10;
        let records = Records {
            ids: (100..100 + n as u64).collect(),
            splits: (0..n)
                .map(|i| {
                    if i % 4 == 1 {
                        Split::Test
                    } else {
                        Split::Train
                    }
                })
                .collect(),
            labels: Some((0..n as u32).map(|i| i % 2).collect()),
            samples: Samples::U8 {
                shape: (1, 2, 3),
                data: (0..n * 6).map(|i| (i * 7 % 256) as u8).collect(),
            },
            paths: Some((0..n).map(|i| format!("a/{i}.png")).collect()),
            source_sizes: Some((0..n as u32).map(|i| (i, 2 * i)).collect()),
            meta: vec![(0..n).map(|i| format!("f{i}")).collect()],
        };
        let mut w = DatasetWriter::create(&p, &info).unwrap();
        for rows in [&[0, 1, 2, 3][..], &[4, 5, 6], &[7, 8, 9]] {
            w.write(&records.select(rows)).unwrap();
        }
        w.finish().unwrap();
        let (_, all) = read_records(&p).unwrap();
        assert_eq!(all, records);
        let whole = Dataset::from_records(all).unwrap();
        assert_eq!(read_dataset(&p).unwrap(), whole);
        // Row groups at will, with only the sample columns.
        let r = DatasetReader::open(&p).unwrap().samples_only().unwrap();
        assert_eq!((r.groups(), r.group_rows(1)), (3, 3));
        let g = r.read_group(1).unwrap();
        assert_eq!(
            (g.ids.clone(), g.paths.clone()),
            (vec![104, 105, 106], None)
        );
        assert_eq!(g.samples, records.select(&[4, 5, 6]).samples);
        assert_eq!(r.splits().unwrap(), records.splits);
    }

    #[test]
    fn feature_datasets_are_not_image_datasets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.parquet");
        let (info, records) = feature_records();
        write_records(&p, &info, &records).unwrap();
        let e = read_dataset(&p).unwrap_err().to_string();
        assert!(
            e.contains("feature vectors of dimension 3") && e.contains("not images"),
            "{e}"
        );
    }

    #[test]
    fn embeddings_are_readable_lists() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.parquet");
        write_embeddings(
            &p,
            &[1, 2],
            &[Split::Train, Split::Test],
            Some(&[4, 5]),
            &[0.5, 1.5, 2.5, 3.5, 4.5, 5.5],
            3,
        )
        .unwrap();
        let reader = SerializedFileReader::new(File::open(&p).unwrap()).unwrap();
        let rows: Vec<_> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        let l = rows[1].get_list(3).unwrap();
        assert_eq!(
            (l.len(), l.get_float(0).unwrap(), l.get_float(2).unwrap()),
            (3, 3.5, 5.5)
        );
        assert_eq!(rows[1].get_int(2).unwrap(), 5);
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        std::fs::write(&p, b"not parquet at all").unwrap();
        let e = read_dataset(&p).unwrap_err().to_string();
        assert!(e.contains("x.parquet: parquet:"), "{e}");
    }
}
