//! Datasets and embeddings as parquet files (snappy-compressed), readable by pandas/pyarrow.
//!
//! `dataset.parquet`: `id INT64, split UTF8, label INT32 (optional), image BYTE_ARRAY` (raw
//! `u8` pixels, channel-major) with the image shape in the key-value metadata
//! `pretext.shape = "c,h,w"`. `embeddings.parquet`: `id, split, label, embedding LIST<FLOAT>`.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::format::KeyValue;
use parquet::record::RowAccessor;
use parquet::schema::parser::parse_message_type;

use super::{DataError, Dataset, Split};

const SHAPE_KEY: &str = "pretext.shape";

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
/// `last` (images or embeddings), with the schema and key-value metadata given.
fn write_table(
    path: &Path,
    schema: &str,
    meta: Vec<KeyValue>,
    ids: &[u64],
    splits: &[Split],
    labels: Option<&[u32]>,
    last: impl FnOnce(&mut parquet::column::writer::ColumnWriter) -> parquet::errors::Result<usize>,
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

/// Write `ds` to `path`.
pub fn write_dataset(ds: &Dataset, path: &Path) -> Result<(), DataError> {
    let (c, h, w) = ds.shape;
    let meta = vec![KeyValue::new(SHAPE_KEY.to_string(), format!("{c},{h},{w}"))];
    let k = ds.sample_len();
    let images: Vec<ByteArray> = (0..ds.len())
        .map(|i| ByteArray::from(ds.pixels[i * k..(i + 1) * k].to_vec()))
        .collect();
    write_table(
        path,
        "message dataset { REQUIRED INT64 id; REQUIRED BYTE_ARRAY split (UTF8); OPTIONAL INT32 label; REQUIRED BYTE_ARRAY image; }",
        meta,
        &ds.ids,
        &ds.splits,
        ds.labels.as_deref(),
        |cw| match cw {
            parquet::column::writer::ColumnWriter::ByteArrayColumnWriter(w) => w.write_batch(&images, None, None),
            _ => Err(parquet::errors::ParquetError::General("image column has the wrong type".into())),
        },
    )
}

/// Read a dataset written by [`write_dataset`].
pub fn read_dataset(path: &Path) -> Result<Dataset, DataError> {
    let file = File::open(path).map_err(|e| DataError::file(path, format!("cannot open: {e}")))?;
    let reader = SerializedFileReader::new(file).map_err(|e| perr(path, e))?;
    let shape = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == SHAPE_KEY))
        .and_then(|k| k.value.clone())
        .ok_or_else(|| {
            DataError::file(
                path,
                format!("missing `{SHAPE_KEY}` metadata; not a pretext dataset"),
            )
        })?;
    let dims: Vec<usize> = shape.split(',').filter_map(|s| s.parse().ok()).collect();
    let [c, h, w] = dims[..] else {
        return Err(DataError::file(
            path,
            format!("bad `{SHAPE_KEY}` metadata `{shape}`"),
        ));
    };
    let mut ds = Dataset {
        shape: (c, h, w),
        ids: Vec::new(),
        splits: Vec::new(),
        labels: Some(Vec::new()),
        pixels: Vec::new(),
    };
    let rows = reader.get_row_iter(None).map_err(|e| perr(path, e))?;
    for (record, row) in rows.enumerate() {
        let row = row.map_err(|e| perr(path, e))?;
        let bad = |m: String| DataError::Record {
            path: path.to_path_buf(),
            record,
            message: m,
        };
        ds.ids
            .push(row.get_long(0).map_err(|e| bad(e.to_string()))? as u64);
        ds.splits.push(
            match row.get_string(1).map_err(|e| bad(e.to_string()))?.as_str() {
                "train" => Split::Train,
                "test" => Split::Test,
                other => return Err(bad(format!("unknown split `{other}`"))),
            },
        );
        match row.get_int(2) {
            Ok(l) if l >= 0 => ds.labels.as_mut().map(|v| v.push(l as u32)),
            _ => ds.labels.take().map(|_| ()),
        };
        let img = row.get_bytes(3).map_err(|e| bad(e.to_string()))?;
        if img.len() != c * h * w {
            return Err(bad(format!(
                "image has {} bytes, expected {}",
                img.len(),
                c * h * w
            )));
        }
        ds.pixels.extend_from_slice(img.data());
    }
    if ds.labels.as_ref().is_some_and(|l| l.len() != ds.ids.len()) {
        ds.labels = None;
    }
    Ok(ds)
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
            parquet::column::writer::ColumnWriter::FloatColumnWriter(w) => w.write_batch(emb, Some(&def), Some(&rep)),
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
        };
        let p = dir.path().join("d.parquet");
        write_dataset(&ds, &p).unwrap();
        assert_eq!(read_dataset(&p).unwrap(), ds);
        ds.labels = None;
        write_dataset(&ds, &p).unwrap();
        assert_eq!(read_dataset(&p).unwrap(), ds);
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
        use parquet::record::ListAccessor;
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
