//! CSV files as an ingest [`Source`]: tabular features (numbers), an optional label column
//! and metadata columns. The first row is the header. One pass counts the records and finds
//! the classes (integer labels are used as they are; any other labels are class names,
//! numbered in sorted order); the second pass streams the records.
//!
//! A record with the wrong number of fields, an empty or non-numeric feature, or an empty label
//! is a [`BadRecord`] naming the file, the record index and its line.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::source::{BadRecord, Item, Source, SourceColumns, SourceRecord};
use super::{DataError, Sample};

/// Which columns to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvSpec {
    /// Feature columns, in this order; `None` takes every column that is not the label or
    /// metadata.
    pub features: Option<Vec<String>>,
    pub label: Option<String>,
    pub meta: Vec<String>,
    /// Field delimiter (one ASCII character).
    pub delimiter: u8,
}

impl Default for CsvSpec {
    fn default() -> Self {
        CsvSpec {
            features: None,
            label: None,
            meta: Vec::new(),
            delimiter: b',',
        }
    }
}

/// A CSV file as a [`Source`].
pub struct CsvSource {
    path: PathBuf,
    reader: csv::Reader<File>,
    width: usize,
    names: Vec<String>,
    features: Vec<usize>,
    label: Option<usize>,
    meta: Vec<usize>,
    /// Class names, when labels are not all integers.
    classes: Option<Vec<String>>,
    len: usize,
    next: usize,
    columns: SourceColumns,
}

fn open_reader(path: &Path, delimiter: u8) -> Result<csv::Reader<File>, DataError> {
    let file = super::open_regular(path)
        .map_err(|e| DataError::file(path, format!("cannot open: {e}")))?;
    Ok(csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(file))
}

fn csv_err(path: &Path, e: csv::Error) -> DataError {
    DataError::file(path, format!("CSV: {e}"))
}

fn find(path: &Path, names: &[String], name: &str, role: &str) -> Result<usize, DataError> {
    names
        .iter()
        .position(|n| n == name)
        .ok_or_else(|| super::missing_column(path, name, role, names, "its header has"))
}

impl CsvSource {
    /// Opens `path`, checks the header against `spec` and makes the counting pass.
    pub fn open(path: &Path, spec: &CsvSpec) -> Result<CsvSource, DataError> {
        let mut reader = open_reader(path, spec.delimiter)?;
        let names: Vec<String> = reader
            .headers()
            .map_err(|e| csv_err(path, e))?
            .iter()
            .map(|s| s.trim().to_string())
            .collect();
        if names.is_empty() || names.iter().all(String::is_empty) {
            return Err(DataError::file(
                path,
                "has no header row; the first line must name the columns",
            ));
        }
        let label = spec
            .label
            .as_ref()
            .map(|l| find(path, &names, l, "label"))
            .transpose()?;
        let meta = spec
            .meta
            .iter()
            .map(|m| find(path, &names, m, "metadata"))
            .collect::<Result<Vec<_>, _>>()?;
        let features: Vec<usize> = match &spec.features {
            Some(cols) => cols
                .iter()
                .map(|c| find(path, &names, c, "feature"))
                .collect::<Result<_, _>>()?,
            None => (0..names.len())
                .filter(|i| Some(*i) != label && !meta.contains(i))
                .collect(),
        };
        if features.is_empty() {
            return Err(DataError::file(
                path,
                "has no feature columns besides the label and metadata columns",
            ));
        }

        // Pass 1: count records and collect the labels.
        let mut len = 0;
        let mut values = BTreeSet::new();
        for rec in reader.records() {
            len += 1;
            match rec {
                Ok(r) => {
                    if let Some(v) = label.and_then(|l| r.get(l)).map(str::trim) {
                        if !v.is_empty() {
                            values.insert(v.to_string());
                        }
                    }
                }
                Err(e) if e.is_io_error() => return Err(csv_err(path, e)),
                Err(_) => {}
            }
        }
        let numeric = values.iter().all(|v| v.parse::<u32>().is_ok());
        let classes = (label.is_some() && !numeric).then(|| values.into_iter().collect::<Vec<_>>());

        let width = names.len();
        let mut reader = open_reader(path, spec.delimiter)?;
        reader.headers().map_err(|e| csv_err(path, e))?;
        Ok(CsvSource {
            path: path.to_path_buf(),
            reader,
            width,
            columns: SourceColumns {
                labelled: label.is_some(),
                classes: classes.clone(),
                paths: false,
                source_sizes: false,
                meta: spec.meta.clone(),
                ignored: Vec::new(),
            },
            names,
            features,
            label,
            meta,
            classes,
            len,
            next: 0,
        })
    }

    fn record(&self, rec: &csv::StringRecord, at: &str) -> Item {
        let bad = |m: String| BadRecord::new(at, m);
        if rec.len() != self.width {
            return Err(bad(format!(
                "has {} fields, but the header has {}",
                rec.len(),
                self.width
            )));
        }
        let mut v = Vec::with_capacity(self.features.len());
        for &i in &self.features {
            let name = &self.names[i];
            let raw = rec.get(i).unwrap_or("").trim();
            if raw.is_empty() {
                return Err(bad(format!("empty value in feature column `{name}`")));
            }
            match raw.parse::<f32>() {
                Ok(x) if x.is_finite() => v.push(x),
                Ok(_) => {
                    return Err(bad(format!(
                        "value `{raw}` in feature column `{name}` is not finite"
                    )))
                }
                Err(_) => {
                    return Err(bad(format!(
                        "value `{raw}` in feature column `{name}` is not a number"
                    )))
                }
            }
        }
        let label = match self.label {
            None => None,
            Some(l) => {
                let raw = rec.get(l).unwrap_or("").trim();
                if raw.is_empty() {
                    return Err(bad(format!("empty label in column `{}`", self.names[l])));
                }
                Some(match &self.classes {
                    Some(c) => c
                        .binary_search(&raw.to_string())
                        .map_err(|_| bad(format!("label `{raw}` is not a known class")))?
                        as u32,
                    None => raw
                        .parse::<u32>()
                        .map_err(|_| bad(format!("label `{raw}` is not an integer")))?,
                })
            }
        };
        Ok(SourceRecord {
            label,
            sample: Sample::Features(v),
            path: None,
            source_size: None,
            meta: self
                .meta
                .iter()
                .map(|&i| rec.get(i).unwrap_or("").trim().to_string())
                .collect(),
        })
    }
}

impl Source for CsvSource {
    fn len(&self) -> usize {
        self.len
    }

    fn columns(&self) -> &SourceColumns {
        &self.columns
    }

    fn next_batch(&mut self, max: usize) -> Result<Vec<Item>, DataError> {
        let mut out = Vec::new();
        let mut rec = csv::StringRecord::new();
        while out.len() < max {
            let index = self.next;
            let read = self.reader.read_record(&mut rec);
            let line = rec
                .position()
                .map_or(String::new(), |p| format!(" (line {})", p.line()));
            let at = format!("{}: record {index}{line}", self.path.display());
            match read {
                Ok(false) => break,
                Ok(true) => out.push(self.record(&rec, &at)),
                Err(e) if e.is_io_error() => return Err(csv_err(&self.path, e)),
                Err(e) => out.push(Err(BadRecord::new(at, format!("CSV: {e}")))),
            }
            self.next += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/data")
            .join(name)
    }

    fn all(s: &mut dyn Source) -> Vec<Item> {
        let mut out = Vec::new();
        loop {
            let b = s.next_batch(2).unwrap();
            if b.is_empty() {
                return out;
            }
            out.extend(b);
        }
    }

    #[test]
    fn reads_every_row_of_the_fixture() {
        let path = fixture("tabular.csv");
        let spec = CsvSpec {
            label: Some("species".into()),
            meta: vec!["site".into()],
            ..Default::default()
        };
        let mut s = CsvSource::open(&path, &spec).unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(
            s.columns().classes,
            Some(vec![
                "setosa".into(),
                "versicolor".into(),
                "virginica".into()
            ])
        );
        let items = all(&mut s);
        assert_eq!(items.len(), 7);
        let ok = |i: usize| items[i].as_ref().unwrap();
        let bad = |i: usize| items[i].as_ref().unwrap_err().to_string();
        assert_eq!(ok(0).sample, Sample::Features(vec![5.1, 3.5]));
        assert_eq!(
            (ok(0).label, ok(0).meta.clone()),
            (Some(0), vec!["north".into()])
        );
        assert_eq!(
            (ok(1).label, ok(1).meta.clone()),
            (Some(0), vec!["south".into()])
        );
        assert!(
            bad(2).contains("record 2 (line 4)")
                && bad(2).contains("`abc` in feature column `sepal_width` is not a number"),
            "{}",
            bad(2)
        );
        assert_eq!(ok(3).label, Some(1));
        assert!(
            bad(4).contains("has 2 fields, but the header has 4"),
            "{}",
            bad(4)
        );
        assert!(
            bad(5).contains("empty value in feature column `sepal_width`"),
            "{}",
            bad(5)
        );
        assert_eq!(
            (ok(6).label, ok(6).meta.clone()),
            (Some(2), vec![String::new()])
        );
        assert!(items[0].as_ref().unwrap().path.is_none());
    }

    #[test]
    fn default_features_and_numeric_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tsv");
        std::fs::write(&p, "a\tb\ty\n1\t2\t3\n4\t5\t0\n").unwrap();
        let spec = CsvSpec {
            label: Some("y".into()),
            delimiter: b'\t',
            ..Default::default()
        };
        let mut s = CsvSource::open(&p, &spec).unwrap();
        assert_eq!(s.columns().classes, None);
        let items = all(&mut s);
        let r = items[0].as_ref().unwrap();
        assert_eq!(
            (r.sample.clone(), r.label),
            (Sample::Features(vec![1.0, 2.0]), Some(3))
        );
    }

    #[test]
    fn header_errors_name_the_column() {
        let path = fixture("tabular.csv");
        let open = |spec: CsvSpec| CsvSource::open(&path, &spec).err().unwrap().to_string();
        let e = open(CsvSpec {
            label: Some("specis".into()),
            ..Default::default()
        });
        assert!(
            e.contains("no column `specis`") && e.contains("did you mean `species`?"),
            "{e}"
        );
        let e = open(CsvSpec {
            features: Some(vec!["zzz".into()]),
            ..Default::default()
        });
        assert!(e.contains("its header has: `sepal_length`"), "{e}");
        let e = open(CsvSpec {
            features: None,
            label: Some("sepal_length".into()),
            meta: vec!["sepal_width".into(), "species".into(), "site".into()],
            ..Default::default()
        });
        assert!(e.contains("no feature columns"), "{e}");
        let e = CsvSource::open(Path::new("/no/such.csv"), &CsvSpec::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/no/such.csv: cannot open"), "{e}");
    }
}
