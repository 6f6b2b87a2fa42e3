//! Parquet files as an ingest [`Source`]: files written by pyarrow/pandas (snappy, zstd or
//! uncompressed), read row group by row group through a projection of the named columns only.
//!
//! - Images: a binary column of encoded PNG/JPEG bytes, or of raw `u8` pixels (channel-major,
//!   with `shape` given, or taken from a pretext dataset's `pretext.shape` metadata); a struct
//!   column with a `bytes` field (the Hugging Face `datasets` image layout) works too.
//! - Features: one `list<float|double|int>` column, or several numeric columns.
//! - Labels: an integer column (values ≥ 0) or a string column (classes numbered in sorted
//!   order, which takes one extra pass over that column).
//! - Metadata: any scalar columns, carried as strings (nulls become empty strings).
//!
//! Each bad row (undecodable image, null or non-finite value, wrong vector length, negative
//! label) is a [`BadRecord`] naming the file and the record index.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::basic::{Compression, ConvertedType, Type as PhysicalType};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::{Field, Row};
use parquet::schema::types::{Type, TypePtr};

use super::image::{self, ImageOptions};
use super::source::{BadRecord, Item, Source, SourceColumns, SourceRecord};
use super::{DataError, Sample};

/// Where the feature vector of a row is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureColumns {
    /// One list column.
    List(String),
    /// Several numeric columns, in this order.
    Columns(Vec<String>),
}

/// Which columns to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParquetSpec {
    /// Image bytes column (exactly one of `image` and `features`).
    pub image: Option<String>,
    /// Feature vector column(s).
    pub features: Option<FeatureColumns>,
    /// Label column.
    pub label: Option<String>,
    /// Metadata columns.
    pub meta: Vec<String>,
    /// `(channels, height, width)` of raw pixel bytes.
    pub shape: Option<(usize, usize, usize)>,
}

fn perr(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::file(path, format!("parquet: {e}"))
}

/// `did you mean` help (or the available names) for a missing column.
fn missing_column(path: &Path, name: &str, role: &str, available: &[String]) -> DataError {
    super::missing_column(path, name, role, available, "its columns are")
}

/// Whether the row reader can convert this leaf without hitting one of its unimplemented
/// (panicking) conversions.
fn readable(physical: PhysicalType, converted: ConvertedType) -> bool {
    use ConvertedType as C;
    match physical {
        PhysicalType::INT32 => matches!(
            converted,
            C::NONE
                | C::INT_8
                | C::INT_16
                | C::INT_32
                | C::UINT_8
                | C::UINT_16
                | C::UINT_32
                | C::DATE
                | C::DECIMAL
        ),
        PhysicalType::INT64 => matches!(
            converted,
            C::NONE
                | C::INT_64
                | C::UINT_64
                | C::TIMESTAMP_MILLIS
                | C::TIMESTAMP_MICROS
                | C::DECIMAL
        ),
        PhysicalType::BYTE_ARRAY => matches!(
            converted,
            C::NONE | C::UTF8 | C::ENUM | C::JSON | C::BSON | C::DECIMAL
        ),
        PhysicalType::FIXED_LEN_BYTE_ARRAY => matches!(converted, C::NONE | C::DECIMAL),
        _ => true,
    }
}

/// A scalar field as a number.
fn number(f: &Field) -> Option<f64> {
    Some(match f {
        Field::Bool(b) => *b as u8 as f64,
        Field::Byte(v) => *v as f64,
        Field::Short(v) => *v as f64,
        Field::Int(v) => *v as f64,
        Field::Long(v) => *v as f64,
        Field::UByte(v) => *v as f64,
        Field::UShort(v) => *v as f64,
        Field::UInt(v) => *v as f64,
        Field::ULong(v) => *v as f64,
        Field::Float16(v) => f32::from(*v) as f64,
        Field::Float(v) => *v as f64,
        Field::Double(v) => *v,
        _ => return None,
    })
}

/// A scalar field as a string (`None` for null; nested values in their debug form).
fn text(f: &Field) -> Option<String> {
    match f {
        Field::Null => None,
        Field::Str(s) => Some(s.clone()),
        Field::Bytes(b) => Some(String::from_utf8_lossy(b.data()).into_owned()),
        other => Some(match number(other) {
            Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
            Some(x) => x.to_string(),
            None => other.to_string(),
        }),
    }
}

/// A parquet file as a [`Source`].
pub struct ParquetSource {
    path: PathBuf,
    spec: ParquetSpec,
    rows: RowIter<'static>,
    len: usize,
    next: usize,
    /// String labels → class index, when the label column holds strings.
    class_index: Option<Vec<String>>,
    /// Feature dimension, once known.
    dim: Option<usize>,
    columns: SourceColumns,
    opts: ImageOptions,
}

impl ParquetSource {
    /// Opens `path` and checks the named columns. A corrupt file is an error, never a panic
    /// (the parquet crate panics on some malformed footers and pages).
    pub fn open(
        path: &Path,
        spec: ParquetSpec,
        opts: ImageOptions,
    ) -> Result<ParquetSource, DataError> {
        crate::panic_guard::catch(|| Self::open_unguarded(path, spec, opts))
            .unwrap_or_else(|p| Err(perr(path, format!("the file is corrupt ({p})"))))
    }

    fn open_unguarded(
        path: &Path,
        spec: ParquetSpec,
        opts: ImageOptions,
    ) -> Result<ParquetSource, DataError> {
        let open = || -> Result<SerializedFileReader<File>, DataError> {
            let file = super::open_regular(path)
                .map_err(|e| DataError::file(path, format!("cannot open: {e}")))?;
            SerializedFileReader::new(file).map_err(|e| {
                perr(
                    path,
                    format!(
                        "cannot read the file's metadata ({e}): it is corrupt, truncated or not \
                         a parquet file; write it again (e.g. pyarrow.parquet.write_table)"
                    ),
                )
            })
        };
        let reader = open()?;
        let meta = reader.metadata();
        let root = meta.file_metadata().schema();
        let fields = root.get_fields();
        let available: Vec<String> = fields.iter().map(|f| f.name().to_string()).collect();

        let wanted = wanted_columns(path, &spec)?;
        let mut proj_fields = Vec::new();
        for f in fields {
            if wanted.iter().any(|(_, n)| n == f.name()) {
                proj_fields.push(f.clone());
            }
        }
        for (role, name) in &wanted {
            if !available.contains(name) {
                return Err(missing_column(path, name, role, &available));
            }
        }

        check_readable(path, meta, &wanted)?;

        let class_index = match &spec.label {
            Some(l) => {
                let t = fields
                    .iter()
                    .find(|f| f.name() == l.as_str())
                    .expect("checked above");
                string_classes(path, l, t, open)?
            }
            None => None,
        };

        let shape = spec.shape.or_else(|| stored_shape(meta));
        let dim = match &spec.features {
            Some(FeatureColumns::Columns(cs)) => Some(cs.len()),
            _ => None,
        };
        let len = meta.file_metadata().num_rows().max(0) as usize;
        let proj = Type::group_type_builder("schema")
            .with_fields(proj_fields)
            .build()
            .map_err(|e| perr(path, e))?;
        let rows = RowIter::from_file_into(Box::new(reader))
            .project(Some(proj))
            .map_err(|e| perr(path, e))?;
        let columns = SourceColumns {
            labelled: spec.label.is_some(),
            classes: class_index.clone(),
            paths: false,
            source_sizes: spec.image.is_some(),
            meta: spec.meta.clone(),
            ignored: Vec::new(),
        };
        Ok(ParquetSource {
            path: path.to_path_buf(),
            spec: ParquetSpec { shape, ..spec },
            rows,
            len,
            next: 0,
            class_index,
            dim,
            columns,
            opts,
        })
    }

    fn record(&mut self, row: &Row, index: usize) -> Item {
        let at = format!("{}: record {index}", self.path.display());
        let bad = |m: String| BadRecord::new(&at, m);
        let (sample, source_size) = match (&self.spec.image, &self.spec.features) {
            (Some(col), _) => {
                let (sample, size) = self.image_sample(col, row).map_err(bad)?;
                (sample, Some(size))
            }
            (None, Some(FeatureColumns::List(col))) => {
                (list_features(col, row).map_err(bad)?, None)
            }
            (None, Some(FeatureColumns::Columns(cols))) => {
                (column_features(cols, row).map_err(bad)?, None)
            }
            (None, None) => return Err(bad("no sample column".into())),
        };
        if let Sample::Features(v) = &sample {
            self.check_dim(v.len()).map_err(bad)?;
        }
        let label = match &self.spec.label {
            None => None,
            Some(col) => Some(self.label(col, row).map_err(bad)?),
        };
        let meta = self
            .spec
            .meta
            .iter()
            .map(|m| column(row, m).and_then(text).unwrap_or_default())
            .collect();
        Ok(SourceRecord {
            label,
            sample,
            path: None,
            source_size,
            meta,
        })
    }

    /// The image of column `col`: encoded PNG/JPEG, or raw pixels of the source's `shape`;
    /// with its size before resizing.
    fn image_sample(&self, col: &str, row: &Row) -> Result<(Sample, (u32, u32)), String> {
        let bytes = match column(row, col) {
            Some(Field::Bytes(b)) => b.data(),
            Some(Field::Group(g)) => match g
                .get_column_iter()
                .find(|(n, _)| n.as_str() == "bytes")
                .map(|(_, f)| f)
            {
                Some(Field::Bytes(b)) => b.data(),
                _ => return Err(format!("image column `{col}` has no `bytes` value")),
            },
            Some(Field::Null) | None => return Err(format!("image column `{col}` is null")),
            Some(_) => {
                return Err(format!(
                    "image column `{col}` must hold binary values (encoded PNG/JPEG or raw pixels)"
                ))
            }
        };
        if image::looks_encoded(bytes) {
            let img = image::decode(bytes)?;
            let size = (img.height(), img.width());
            return Ok((image::finish(img, &self.opts), size));
        }
        let Some((c, h, w)) = self.spec.shape else {
            return Err(format!(
                "image column `{col}` holds neither PNG nor JPEG bytes; for raw pixels set `shape = [channels, height, width]` in the source"
            ));
        };
        if bytes.len() != c * h * w {
            return Err(format!(
                "raw image has {} bytes, but shape [{c}, {h}, {w}] needs {}",
                bytes.len(),
                c * h * w
            ));
        }
        let sample = image::transform(
            Sample::Image {
                shape: (c, h, w),
                pixels: bytes.to_vec(),
            },
            &self.opts,
        )?;
        Ok((sample, (h as u32, w as u32)))
    }

    /// Every feature vector has the length of the first.
    fn check_dim(&mut self, len: usize) -> Result<(), String> {
        if len == 0 {
            return Err("the feature vector is empty".into());
        }
        match self.dim {
            None => self.dim = Some(len),
            Some(d) if d != len => {
                return Err(format!(
                    "the feature vector has {len} values, but earlier records have {d}"
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// The label of column `col`: a class index for string labels, else a non-negative integer.
    fn label(&self, col: &str, row: &Row) -> Result<u32, String> {
        let f = column(row, col).unwrap_or(&Field::Null);
        match (&self.class_index, f) {
            (_, Field::Null) => Err(format!("label column `{col}` is null")),
            (Some(classes), f) => {
                let s = text(f).unwrap_or_default();
                classes
                    .binary_search(&s)
                    .map(|i| i as u32)
                    .map_err(|_| format!("label `{s}` is not a known class"))
            }
            (None, f) => match number(f) {
                Some(x) if x >= 0.0 && x.fract() == 0.0 && x <= u32::MAX as f64 / 2.0 => {
                    Ok(x as u32)
                }
                _ => Err(format!(
                    "label column `{col}` must hold non-negative integers, found {f}"
                )),
            },
        }
    }
}

/// The columns a spec reads, with their role (`image`, `features`, `label`, `metadata`).
fn wanted_columns(
    path: &Path,
    spec: &ParquetSpec,
) -> Result<Vec<(&'static str, String)>, DataError> {
    let mut wanted: Vec<(&'static str, String)> = Vec::new();
    match (&spec.image, &spec.features) {
        (Some(i), None) => wanted.push(("image", i.clone())),
        (None, Some(FeatureColumns::List(c))) => wanted.push(("features", c.clone())),
        (None, Some(FeatureColumns::Columns(cs))) => {
            wanted.extend(cs.iter().map(|c| ("features", c.clone())))
        }
        _ => {
            return Err(DataError::file(
                path,
                "name exactly one of an image column and feature columns",
            ))
        }
    }
    if let Some(l) = &spec.label {
        wanted.push(("label", l.clone()));
    }
    wanted.extend(spec.meta.iter().map(|m| ("metadata", m.clone())));
    Ok(wanted)
}

/// The leaves of the wanted columns have types and compression codecs pretext reads.
fn check_readable(
    path: &Path,
    meta: &ParquetMetaData,
    wanted: &[(&str, String)],
) -> Result<(), DataError> {
    let descr = meta.file_metadata().schema_descr();
    for (i, col) in descr.columns().iter().enumerate() {
        let top = col.path().parts()[0].as_str();
        if !wanted.iter().any(|(_, n)| n == top) {
            continue;
        }
        if !readable(col.physical_type(), col.converted_type()) {
            return Err(DataError::file(
                path,
                format!(
                    "column `{top}` has type {} ({}), which pretext cannot read",
                    col.physical_type(),
                    col.converted_type()
                ),
            ));
        }
        for rg in meta.row_groups() {
            let c = rg.column(i).compression();
            if !matches!(
                c,
                Compression::UNCOMPRESSED | Compression::SNAPPY | Compression::ZSTD(_)
            ) {
                return Err(DataError::file(
                    path,
                    format!(
                        "column `{top}` is compressed with {c}, which this build of pretext cannot read; \
                         write the file with snappy or zstd (pyarrow: pq.write_table(t, path, compression=\"zstd\"))"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// For a string label column `l` (of type `t`), the sorted class names, read in a first pass
/// over that column only; `None` for integer labels.
fn string_classes(
    path: &Path,
    l: &str,
    t: &TypePtr,
    open: impl Fn() -> Result<SerializedFileReader<File>, DataError>,
) -> Result<Option<Vec<String>>, DataError> {
    if !t.is_primitive() {
        return Err(DataError::file(
            path,
            format!("label column `{l}` must hold integers or strings, not nested values"),
        ));
    }
    if t.get_physical_type() != PhysicalType::BYTE_ARRAY {
        return Ok(None);
    }
    let proj = Type::group_type_builder("schema")
        .with_fields(vec![t.clone()])
        .build()
        .map_err(|e| perr(path, e))?;
    let iter = RowIter::from_file_into(Box::new(open()?))
        .project(Some(proj))
        .map_err(|e| perr(path, e))?;
    let mut names = BTreeSet::new();
    for row in iter {
        let row = row.map_err(|e| perr(path, e))?;
        if let Some((_, f)) = row.get_column_iter().next() {
            if let Some(s) = text(f) {
                names.insert(s);
            }
        }
    }
    Ok(Some(names.into_iter().collect()))
}

/// The `pretext.shape` ("c,h,w") a file written by pretext records for raw pixels.
fn stored_shape(meta: &ParquetMetaData) -> Option<(usize, usize, usize)> {
    meta.file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == "pretext.shape"))
        .and_then(|k| k.value.as_ref())
        .and_then(|v| {
            let d: Vec<usize> = v.split(',').filter_map(|x| x.parse().ok()).collect();
            (d.len() == 3).then(|| (d[0], d[1], d[2]))
        })
}

/// The value of column `name` in `row`.
fn column<'r>(row: &'r Row, name: &str) -> Option<&'r Field> {
    row.get_column_iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, f)| f)
}

/// A feature vector from list column `col`: finite numbers only.
fn list_features(col: &str, row: &Row) -> Result<Sample, String> {
    let list = match column(row, col) {
        Some(Field::ListInternal(l)) => l,
        Some(Field::Null) | None => return Err(format!("feature column `{col}` is null")),
        Some(_) => return Err(format!("feature column `{col}` must be a list of numbers")),
    };
    let mut v = Vec::with_capacity(list.elements().len());
    for (j, f) in list.elements().iter().enumerate() {
        match number(f) {
            Some(x) if x.is_finite() => v.push(x as f32),
            Some(x) => {
                return Err(format!(
                    "feature column `{col}` has a non-finite value ({x}) at position {j}"
                ))
            }
            None => {
                return Err(format!(
                    "feature column `{col}` has a {} at position {j}, not a number",
                    if matches!(f, Field::Null) {
                        "null"
                    } else {
                        "non-numeric value"
                    }
                ))
            }
        }
    }
    Ok(Sample::Features(v))
}

/// A feature vector from one numeric column per feature.
fn column_features(cols: &[String], row: &Row) -> Result<Sample, String> {
    let mut v = Vec::with_capacity(cols.len());
    for col in cols {
        match column(row, col).and_then(number) {
            Some(x) if x.is_finite() => v.push(x as f32),
            Some(x) => return Err(format!("column `{col}` has a non-finite value ({x})")),
            None => return Err(format!("column `{col}` is null or not a number")),
        }
    }
    Ok(Sample::Features(v))
}

impl Source for ParquetSource {
    fn len(&self) -> usize {
        self.len
    }

    fn columns(&self) -> &SourceColumns {
        &self.columns
    }

    fn next_batch(&mut self, max: usize) -> Result<Vec<Item>, DataError> {
        let mut out = Vec::new();
        while out.len() < max {
            let index = self.next;
            let rows = &mut self.rows;
            let next =
                crate::panic_guard::catch(|| rows.next()).map_err(|p| DataError::Record {
                    path: self.path.clone(),
                    record: index,
                    message: format!("the parquet reader failed: {p}"),
                })?;
            let Some(row) = next else { break };
            let row = row.map_err(|e| DataError::Record {
                path: self.path.clone(),
                record: index,
                message: format!("parquet: {e}"),
            })?;
            self.next += 1;
            let item = self.record(&row, index);
            out.push(item);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image::Color;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/data")
            .join(name)
    }

    fn all(s: &mut dyn Source) -> Vec<Item> {
        let mut out = Vec::new();
        loop {
            let b = s.next_batch(4).unwrap();
            if b.is_empty() {
                return out;
            }
            out.extend(b);
        }
    }

    fn shape(r: &SourceRecord) -> (usize, usize, usize) {
        r.sample.layout().input_shape()
    }

    #[test]
    fn images_written_by_pyarrow_with_snappy() {
        for column in ["image", "image_struct"] {
            let spec = ParquetSpec {
                image: Some(column.into()),
                label: Some("species".into()),
                meta: vec!["camera".into()],
                ..Default::default()
            };
            let path = fixture("images_snappy.parquet");
            let mut s = ParquetSource::open(&path, spec, ImageOptions::default()).unwrap();
            assert_eq!(s.len(), 6);
            let cols = s.columns().clone();
            assert_eq!(cols.classes, Some(vec!["cat".into(), "dog".into()]));
            assert!(cols.labelled && !cols.paths && cols.source_sizes && cols.meta == ["camera"]);
            let items = all(&mut s);
            assert_eq!(items.len(), 6);
            let ok = |i: usize| items[i].as_ref().unwrap();
            // 0, 1: PNG; 2: JPEG; 4: PNG with a null camera; 5: an 8x8 PNG.
            for (i, label, camera) in [(0, 0, "a"), (1, 1, "b"), (2, 0, "a"), (4, 1, "")] {
                assert_eq!(shape(ok(i)), (1, 6, 6), "{i}");
                assert_eq!(ok(i).label, Some(label), "{i}");
                assert_eq!(ok(i).meta, [camera], "{i}");
                assert_eq!(ok(i).source_size, Some((6, 6)), "{i}");
            }
            assert_eq!(shape(ok(5)), (1, 8, 8));
            let bad = items[3].as_ref().unwrap_err();
            assert!(bad.at.ends_with("images_snappy.parquet: record 3"), "{bad}");
            assert!(bad.reason.contains("corrupt or truncated PNG"), "{bad}");
            // The first PNG: (seed * 37 + x * 23 + y * 41) % 256 with seed 1.
            let crate::data::Sample::Image { pixels, .. } = &ok(0).sample else {
                panic!()
            };
            assert_eq!(&pixels[..3], &[37, 60, 83]);
        }
    }

    #[test]
    fn image_options_apply_to_parquet_images() {
        let spec = ParquetSpec {
            image: Some("image".into()),
            ..Default::default()
        };
        let opts = ImageOptions {
            color: Some(Color::Rgb),
            resize: Some((4, 4)),
        };
        let mut s = ParquetSource::open(&fixture("images_snappy.parquet"), spec, opts).unwrap();
        let items = all(&mut s);
        let shapes: Vec<_> = items.iter().flatten().map(shape).collect();
        assert_eq!(shapes, vec![(3, 4, 4); 5]);
        assert_eq!(items[5].as_ref().unwrap().source_size, Some((8, 8)));
        assert!(!s.columns().labelled);
    }

    #[test]
    fn features_written_by_pyarrow_with_zstd() {
        let spec = ParquetSpec {
            features: Some(FeatureColumns::List("embedding".into())),
            label: Some("label".into()),
            meta: vec!["site".into()],
            ..Default::default()
        };
        let path = fixture("features_zstd.parquet");
        let mut s = ParquetSource::open(&path, spec, ImageOptions::default()).unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(s.columns().classes, None);
        let items = all(&mut s);
        assert_eq!(items.len(), 7);
        let ok = |i: usize| items[i].as_ref().unwrap();
        let bad = |i: usize| items[i].as_ref().unwrap_err().to_string();
        assert_eq!(ok(0).sample, Sample::Features(vec![0.5, 0.25, 1.0]));
        assert_eq!(
            (ok(0).label, ok(0).meta.clone()),
            (Some(0), vec!["s1".into()])
        );
        assert_eq!(ok(1).sample, Sample::Features(vec![1.0, 2.0, 3.0]));
        assert!(
            bad(2).contains("record 2") && bad(2).contains("non-finite value (NaN) at position 0"),
            "{}",
            bad(2)
        );
        assert_eq!(
            (ok(3).label, ok(3).meta.clone()),
            (Some(0), vec!["s2".into()])
        );
        assert!(
            bad(4).contains("has 2 values, but earlier records have 3"),
            "{}",
            bad(4)
        );
        assert!(
            bad(5).contains("label column `label` is null"),
            "{}",
            bad(5)
        );
        assert_eq!(ok(6).sample, Sample::Features(vec![7.0, 8.0, 9.5]));
        assert_eq!(
            (ok(6).label, ok(6).meta.clone()),
            (Some(2), vec![String::new()])
        );

        // Scalar columns as features.
        let spec = ParquetSpec {
            features: Some(FeatureColumns::Columns(vec!["x2".into(), "x1".into()])),
            ..Default::default()
        };
        let mut s = ParquetSource::open(&path, spec, ImageOptions::default()).unwrap();
        let items = all(&mut s);
        assert_eq!(items.len(), 7);
        assert_eq!(
            items[6].as_ref().unwrap().sample,
            Sample::Features(vec![0.5, 7.0])
        );
    }

    #[test]
    fn pandas_columns_and_string_labels() {
        let spec = ParquetSpec {
            features: Some(FeatureColumns::Columns(vec![
                "a".into(),
                "b".into(),
                "c".into(),
            ])),
            label: Some("kind".into()),
            ..Default::default()
        };
        let mut s = ParquetSource::open(
            &fixture("tabular_pandas.parquet"),
            spec,
            ImageOptions::default(),
        )
        .unwrap();
        assert_eq!(
            s.columns().classes,
            Some(vec!["x".into(), "y".into(), "z".into()])
        );
        let items = all(&mut s);
        let labels: Vec<_> = items
            .iter()
            .map(|i| i.as_ref().unwrap().label.unwrap())
            .collect();
        assert_eq!(labels, [0, 1, 0, 2, 1]);
        assert_eq!(
            items[3].as_ref().unwrap().sample,
            Sample::Features(vec![4.0, 40.0, 0.4])
        );
    }

    #[test]
    fn file_level_errors() {
        let open = |file: &str, spec: ParquetSpec| {
            ParquetSource::open(&fixture(file), spec, ImageOptions::default())
                .err()
                .unwrap()
                .to_string()
        };
        let list = |c: &str| ParquetSpec {
            features: Some(FeatureColumns::List(c.into())),
            ..Default::default()
        };
        let e = open("features_gzip.parquet", list("embedding"));
        assert!(
            e.contains("compressed with GZIP") && e.contains("snappy or zstd"),
            "{e}"
        );
        let e = open("features_zstd.parquet", list("embeding"));
        assert!(
            e.contains("no column `embeding`") && e.contains("did you mean `embedding`?"),
            "{e}"
        );
        let e = open(
            "features_zstd.parquet",
            ParquetSpec {
                image: Some("site".into()),
                label: Some("embedding".into()),
                ..Default::default()
            },
        );
        assert!(
            e.contains("label column `embedding` must hold integers or strings"),
            "{e}"
        );
        let e = ParquetSource::open(
            Path::new("/no/such.parquet"),
            list("x"),
            ImageOptions::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("cannot open"), "{e}");
        // An image column that holds strings: every record is bad, with the reason.
        let spec = ParquetSpec {
            image: Some("site".into()),
            ..Default::default()
        };
        let mut s = ParquetSource::open(
            &fixture("features_zstd.parquet"),
            spec,
            ImageOptions::default(),
        )
        .unwrap();
        let b = s.next_batch(1).unwrap();
        assert!(b[0]
            .as_ref()
            .unwrap_err()
            .reason
            .contains("must hold binary values"));
    }
}
