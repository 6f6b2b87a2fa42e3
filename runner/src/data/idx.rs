//! IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.
//!
//! Format: magic `0x00 0x00 <type> <ndims>` (type 0x08 = unsigned byte), then `ndims`
//! big-endian u32 sizes, then the data. Images have 3 dims `(n, h, w)`, labels 1 dim `(n)`.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::image::{self, ImageOptions};
use super::source::{BadRecord, Item, Source, SourceColumns, SourceRecord};
use super::{DataError, Sample};

/// The decoded contents of one IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Read a file, transparently gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = super::read_regular(path)
        .map_err(|e| DataError::file(path, format!("cannot read: {e}")))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                DataError::file(
                    path,
                    format!("corrupt gzip data: {e}; re-fetch the file (datasets/fetch)"),
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Checks the header at the start of `bytes` (magic and sizes); returns the dimensions and
/// the header's length. `path` is for messages only.
fn parse_header(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, usize), DataError> {
    if bytes.len() < 4 {
        return Err(DataError::file(
            path,
            "too short to be an IDX file (no 4-byte magic number)",
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::file(
            path,
            format!(
                "not an IDX file: magic number starts with {:#04x} {:#04x}, expected 0x00 0x00",
                bytes[0], bytes[1]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(DataError::file(
            path,
            format!(
                "IDX element type {:#04x} is not supported; only unsigned bytes (0x08) are",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 || ndims > 4 {
        return Err(DataError::file(
            path,
            format!("IDX file declares {ndims} dimensions; expected 1 to 4"),
        ));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(DataError::file(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            u32::from_be_bytes([
                bytes[4 + 4 * i],
                bytes[5 + 4 * i],
                bytes[6 + 4 * i],
                bytes[7 + 4 * i],
            ]) as usize
        })
        .collect();
    if dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .is_none()
    {
        return Err(DataError::file(
            path,
            format!("IDX dimensions {dims:?} overflow"),
        ));
    }
    Ok((dims, header))
}

/// Parse IDX bytes (already decompressed). `path` is for messages only.
pub fn parse(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    let (dims, header) = parse_header(bytes, path)?;
    let expected: usize = dims.iter().product();
    let have = bytes.len() - header;
    if have != expected {
        return Err(DataError::file(
            path,
            format!("IDX header promises {expected} bytes of data for dimensions {dims:?}, but the file has {have}; the file is truncated or corrupt"),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Read an IDX file from disk (raw or gzip).
pub fn read(path: &Path) -> Result<IdxArray, DataError> {
    parse(&read_maybe_gzip(path)?, path)
}

/// Opens `path` for streaming, gunzipping it when it starts with the gzip magic.
fn open_stream(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let mut file = std::io::BufReader::new(
        super::open_regular(path)
            .map_err(|e| DataError::file(path, format!("cannot read: {e}")))?,
    );
    let gz = std::io::BufRead::fill_buf(&mut file)
        .map_err(|e| DataError::file(path, format!("cannot read: {e}")))?
        .starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            file,
        )))
    } else {
        Box::new(file)
    })
}

fn read_err(path: &Path, e: std::io::Error) -> DataError {
    if e.kind() == std::io::ErrorKind::InvalidInput || e.kind() == std::io::ErrorKind::InvalidData {
        DataError::file(
            path,
            format!("corrupt gzip data: {e}; re-fetch the file (datasets/fetch)"),
        )
    } else {
        DataError::file(path, format!("cannot read: {e}"))
    }
}

/// Reads and checks an IDX header (magic and sizes) from a stream.
fn read_header(r: &mut dyn Read, path: &Path) -> Result<Vec<usize>, DataError> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => return Err(read_err(path, e)),
        }
    }
    // The same checks (and messages) as `parse`, on the header alone.
    let mut head = magic[..got].to_vec();
    if got == 4 {
        let ndims = magic[3] as usize;
        if magic[0] == 0 && magic[1] == 0 && magic[2] == 0x08 && (1..=4).contains(&ndims) {
            let mut sizes = vec![0u8; 4 * ndims];
            r.read_exact(&mut sizes).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => DataError::file(path, "truncated IDX header"),
                _ => read_err(path, e),
            })?;
            head.extend(sizes);
        }
    }
    parse_header(&head, path).map(|(dims, _)| dims)
}

/// IDX images + labels as a streaming [`Source`]: the labels file is read whole (one byte per
/// sample); images are read one record at a time from the (gzip) stream.
pub struct IdxSource {
    images: PathBuf,
    stream: Box<dyn Read>,
    shape: (usize, usize),
    labels: Vec<u8>,
    next: usize,
    columns: SourceColumns,
    opts: ImageOptions,
}

impl IdxSource {
    /// Opens an images file (3 dimensions) and its labels file (1 dimension).
    pub fn open(images: &Path, labels: &Path, opts: ImageOptions) -> Result<IdxSource, DataError> {
        let lab = read(labels)?;
        if lab.dims.len() != 1 {
            return Err(DataError::file(
                labels,
                format!(
                    "expected a labels file with 1 dimension (n), found {:?}",
                    lab.dims
                ),
            ));
        }
        let mut stream = open_stream(images)?;
        let dims = read_header(&mut stream, images)?;
        if dims.len() != 3 {
            return Err(DataError::file(
                images,
                format!(
                    "expected an images file with 3 dimensions (n, height, width), found {dims:?}"
                ),
            ));
        }
        let n = dims[0];
        if dims[1] == 0 || dims[2] == 0 {
            return Err(DataError::file(
                images,
                format!("declares images of {}×{} pixels", dims[1], dims[2]),
            ));
        }
        if lab.dims[0] != n {
            return Err(DataError::file(
                labels,
                format!(
                    "has {} labels but {} has {n} images; they must pair up",
                    lab.dims[0],
                    images.display()
                ),
            ));
        }
        Ok(IdxSource {
            images: images.to_path_buf(),
            stream,
            shape: (dims[1], dims[2]),
            labels: lab.data,
            next: 0,
            columns: SourceColumns {
                labelled: true,
                ..Default::default()
            },
            opts,
        })
    }
}

impl Source for IdxSource {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn columns(&self) -> &SourceColumns {
        &self.columns
    }

    fn next_batch(&mut self, max: usize) -> Result<Vec<Item>, DataError> {
        let (h, w) = self.shape;
        let n = self.labels.len();
        let mut out = Vec::new();
        while out.len() < max && self.next < n {
            let mut pixels = vec![0u8; h * w];
            self.stream
                .read_exact(&mut pixels)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => DataError::file(
                        &self.images,
                        format!(
                            "truncated: the header promises {n} images but the data ends after {}; re-fetch the file",
                            self.next
                        ),
                    ),
                    _ => read_err(&self.images, e),
                })?;
            let label = self.labels[self.next] as u32;
            self.next += 1;
            if self.next == n {
                let mut extra = [0u8; 1];
                if matches!(self.stream.read(&mut extra), Ok(k) if k > 0) {
                    return Err(DataError::file(
                        &self.images,
                        format!("has data after the {n} images its header promises; the file is corrupt"),
                    ));
                }
            }
            let sample = Sample::Image {
                shape: (1, h, w),
                pixels,
            };
            let at = || format!("{}: record {}", self.images.display(), self.next - 1);
            out.push(
                image::transform(sample, &self.opts)
                    .map(|sample| SourceRecord {
                        label: Some(label),
                        sample,
                        path: None,
                        source_size: None,
                        meta: Vec::new(),
                    })
                    .map_err(|m| BadRecord::new(at(), m)),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend(data);
        v
    }

    #[test]
    fn parses_images_and_labels() {
        let p = Path::new("x.idx");
        let a = parse(&idx(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]), p).unwrap();
        assert_eq!(a.dims, vec![2, 2, 2]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        let l = parse(&idx(&[3], &[7, 2, 1]), p).unwrap();
        assert_eq!(l.data, vec![7, 2, 1]);
    }

    #[test]
    fn errors_name_the_problem() {
        let p = Path::new("bad.idx");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0, 0], "too short"),
            (vec![1, 0, 8, 1, 0, 0, 0, 0], "not an IDX file"),
            (vec![0, 0, 0x0d, 1, 0, 0, 0, 0], "element type"),
            (vec![0, 0, 8, 9], "9 dimensions"),
            (vec![0, 0, 8, 2, 0, 0], "truncated IDX header"),
            (idx(&[2, 2], &[1, 2, 3]), "promises 4 bytes"),
        ];
        for (bytes, want) in cases {
            let e = parse(&bytes, p).unwrap_err().to_string();
            assert!(e.starts_with("bad.idx: ") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn reads_gzip_and_raw_files() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.idx");
        std::fs::write(&raw, idx(&[1, 2], &[9, 8])).unwrap();
        let gz = dir.path().join("a.idx.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&idx(&[1, 2], &[9, 8])).unwrap();
        enc.finish().unwrap();
        assert_eq!(read(&raw).unwrap(), read(&gz).unwrap());
        let broken = dir.path().join("b.gz");
        std::fs::write(&broken, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        assert!(read(&broken)
            .unwrap_err()
            .to_string()
            .contains("corrupt gzip"));
    }

    fn gz(path: &Path, bytes: &[u8]) {
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap();
    }

    #[test]
    fn streams_records_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (i, l) = (dir.path().join("i.gz"), dir.path().join("l"));
        gz(&i, &idx(&[3, 1, 2], &[1, 2, 3, 4, 5, 6]));
        std::fs::write(&l, idx(&[3], &[7, 8, 9])).unwrap();
        let mut s = IdxSource::open(&i, &l, ImageOptions::default()).unwrap();
        assert_eq!(s.len(), 3);
        let a = s.next_batch(2).unwrap();
        let b = s.next_batch(2).unwrap();
        assert!(s.next_batch(2).unwrap().is_empty());
        assert_eq!((a.len(), b.len()), (2, 1));
        let last = b[0].as_ref().unwrap();
        assert_eq!(last.label, Some(9));
        assert_eq!(
            last.sample,
            Sample::Image {
                shape: (1, 1, 2),
                pixels: vec![5, 6]
            }
        );
    }

    #[test]
    fn streaming_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (i, l) = (dir.path().join("i.idx"), dir.path().join("l.idx"));
        std::fs::write(&l, idx(&[2], &[0, 1])).unwrap();
        let open = |img: Vec<u8>| {
            std::fs::write(&i, img).unwrap();
            IdxSource::open(&i, &l, ImageOptions::default())
                .and_then(|mut s| s.next_batch(10))
                .unwrap_err()
                .to_string()
        };
        assert!(open(idx(&[2, 1, 1], &[1])).contains("data ends after 1"));
        assert!(open(idx(&[2, 1, 1], &[1, 2, 3])).contains("has data after the 2 images"));
        assert!(open(idx(&[2, 2], &[1, 2, 3, 4])).contains("3 dimensions"));
        assert!(open(idx(&[3, 1, 1], &[1, 2, 3])).contains("they must pair up"));
        assert!(open(vec![0, 0, 8]).contains("too short"));
        assert!(open(vec![0, 0, 8, 3, 0]).contains("truncated IDX header"));
        assert!(open(vec![1, 2, 3, 4]).contains("not an IDX file"));
        assert!(open(idx(&[2, 0, 3], &[])).contains("images of 0×3 pixels"));
        // A gzip stream that breaks after the header.
        let mut raw = Vec::new();
        let mut enc = flate2::write::GzEncoder::new(&mut raw, flate2::Compression::default());
        enc.write_all(&idx(&[2, 4, 4], &[7; 32])).unwrap();
        enc.finish().unwrap();
        let len = raw.len();
        raw[len / 2..].iter_mut().for_each(|b| *b ^= 0x5a);
        let e = open(raw);
        assert!(e.contains("i.idx"), "{e}");
    }
}
