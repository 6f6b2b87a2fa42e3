//! IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.
//!
//! Format: magic `0x00 0x00 <type> <ndims>` (type 0x08 = unsigned byte), then `ndims`
//! big-endian u32 sizes, then the data. Images have 3 dims `(n, h, w)`, labels 1 dim `(n)`.

use std::io::Read;
use std::path::Path;

use super::DataError;

/// The decoded contents of one IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Read a file, transparently gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw =
        std::fs::read(path).map_err(|e| DataError::file(path, format!("cannot read: {e}")))?;
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

/// Parse IDX bytes (already decompressed). `path` is for messages only.
pub fn parse(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
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
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let Some(expected) = expected else {
        return Err(DataError::file(
            path,
            format!("IDX dimensions {dims:?} overflow"),
        ));
    };
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
}
