//! TensorBoard event files: training curves where practitioners already look.
//!
//! An event file is a sequence of TFRecords, each holding one `tensorflow.Event` protobuf. The
//! first record says `file_version = "brain.Event:2"`; later ones carry a `Summary` of scalar
//! values (`simple_value`) at a step. The few protobuf fields needed are encoded by hand here
//! (field numbers from TensorBoard's `event.proto` and `summary.proto`, noted at each use), so
//! no protobuf toolchain is involved.
//!
//! TFRecord framing, per record: the data length as a little-endian `u64`, the masked CRC-32C
//! of those 8 bytes (`u32` LE), the data, the masked CRC-32C of the data (`u32` LE). A masked
//! CRC is `((crc >> 15) | (crc << 17)) + 0xa282ead8` (wrapping).
//!
//! Every write is flushed, so `tensorboard --logdir` shows points while a stage trains. The
//! files are like the run log: they carry wall-clock times, so they stay out of store entries.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// CRC-32C (Castagnoli), the checksum TFRecords use.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// The version record every event file starts with.
pub const FILE_VERSION: &str = "brain.Event:2";

/// The masked CRC-32C TFRecords store (masking keeps a CRC of data holding CRCs well mixed).
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = CRC32C.checksum(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn key(out: &mut Vec<u8>, field: u8, wire: u8) {
    // Every field used here has a number below 16: the key is one byte.
    out.push((field << 3) | wire);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u8, data: &[u8]) {
    key(out, field, LEN);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// What an `Event` carries besides its time and step (the `what` oneof of `event.proto`).
pub enum What<'a> {
    /// `string file_version = 3`.
    FileVersion(&'a str),
    /// `Summary summary = 5`, holding one `Summary.Value` per scalar.
    Scalars(&'a [(&'a str, f64)]),
    /// `SessionLog session_log = 7` with `status = START`: readers drop the points of earlier
    /// files at this step and later (a rerun or a resumed run replaces them).
    SessionStart,
}

/// The bytes of one `tensorflow.Event`: `double wall_time = 1`, `int64 step = 2`, then `what`.
pub fn event(wall_time: f64, step: u64, what: What) -> Vec<u8> {
    let mut out = Vec::new();
    key(&mut out, 1, FIXED64);
    out.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        key(&mut out, 2, VARINT);
        varint(&mut out, step);
    }
    match what {
        What::FileVersion(v) => bytes_field(&mut out, 3, v.as_bytes()),
        What::Scalars(values) => {
            let mut summary = Vec::new();
            for (tag, v) in values {
                // Summary.Value: `string tag = 1`, `float simple_value = 2`.
                let mut value = Vec::new();
                bytes_field(&mut value, 1, tag.as_bytes());
                key(&mut value, 2, FIXED32);
                value.extend_from_slice(&(*v as f32).to_le_bytes());
                // Summary: `repeated Value value = 1`.
                bytes_field(&mut summary, 1, &value);
            }
            bytes_field(&mut out, 5, &summary);
        }
        What::SessionStart => {
            // SessionLog: `SessionStatus status = 1`, START = 1.
            bytes_field(&mut out, 7, &[(1 << 3) | VARINT, 1]);
        }
    }
    out
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// This machine's name for event file names (TensorBoard's convention), letters, digits,
/// `-` and `_` only; `localhost` when it cannot be read.
fn host_name() -> String {
    #[cfg(unix)]
    let name = {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for `len` bytes; gethostname writes at most that many.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            String::new()
        }
    };
    #[cfg(not(unix))]
    let name = std::env::var("COMPUTERNAME").unwrap_or_default();
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

/// One event file, appended to as a stage reports.
pub struct EventWriter {
    file: BufWriter<File>,
    path: PathBuf,
    /// Whether the session-start marker is written (before the first scalars).
    started: bool,
}

impl EventWriter {
    /// A new file `events.out.tfevents.<seconds>.<host>.<pid>.pretext` in `dir` (created if
    /// missing), holding the version record. Earlier files in `dir` are left alone: readers
    /// load a folder's files in name order, and the session-start marker makes a new file's
    /// points replace theirs from its first step on.
    pub fn create(dir: &Path) -> io::Result<EventWriter> {
        std::fs::create_dir_all(dir)?;
        let t = now();
        let name = format!(
            "events.out.tfevents.{}.{}.{}.pretext",
            t as u64,
            host_name(),
            std::process::id()
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut w = EventWriter {
            file: BufWriter::new(file),
            path,
            started: false,
        };
        w.record(&event(t, 0, What::FileVersion(FILE_VERSION)))?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scalars at `step`, all in one event; flushed.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> io::Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let t = now();
        if !self.started {
            self.started = true;
            self.record(&event(t, step, What::SessionStart))?;
        }
        self.record(&event(t, step, What::Scalars(values)))
    }

    fn record(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(&frame(data))?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads TFRecords back, checking both CRCs of each.
    fn records(mut b: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(b[8..12].try_into().unwrap());
            assert_eq!(len_crc, masked_crc(&b[..8]), "length CRC");
            let data = &b[12..12 + len];
            let crc = u32::from_le_bytes(b[12 + len..16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(data), "data CRC");
            out.push(data.to_vec());
            b = &b[16 + len..];
        }
        out
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        // The CRC-32C check value, and RFC 3720 (iSCSI) B.4: 32 zero bytes, 32 0xff bytes.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
        assert_eq!(CRC32C.checksum(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(CRC32C.checksum(&[0xffu8; 32]), 0x62a8_ab43);
        // Masking: rotate right by 15, add the constant.
        assert_eq!(masked_crc(b""), 0xa282_ead8);
        assert_eq!(
            masked_crc(b"123456789"),
            0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8)
        );
    }

    /// Bytes TensorBoard's own writer produces for the same events (its `event_pb2` and
    /// `RecordWriter`, tensorboard 2.21): the version record, and two scalars at step 300.
    #[test]
    fn records_match_tensorboards_own_writer() {
        let version = frame(&event(1.5, 0, What::FileVersion(FILE_VERSION)));
        assert_eq!(
            hex(&version),
            "1800000000000000a37f4b2209000000000000f83f1a0d627261696e2e4576656e743a322a28646c"
        );
        let scalars = frame(&event(
            1.5,
            300,
            What::Scalars(&[("train/loss", 0.25), ("epoch/lr", 3.0)]),
        ));
        assert_eq!(
            hex(&scalars),
            "3200000000000000241956ec09000000000000f83f10ac022a240a110a0a747261696e2f6c6f7373150000803e0a0f0a0865706f63682f6c721500004040f1847854"
        );
        let start = frame(&event(1.5, 300, What::SessionStart));
        assert_eq!(
            hex(&start),
            "100000000000000095fbfe1809000000000000f83f10ac023a020801713b788a"
        );
    }

    #[test]
    fn a_file_holds_the_version_then_a_start_marker_then_scalars() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(&dir.path().join("stage")).unwrap();
        w.scalars(1, &[("train/loss", 2.0)]).unwrap();
        w.scalars(2, &[("train/loss", 1.0)]).unwrap();
        w.scalars(3, &[]).unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        assert!(name.ends_with(".pretext"), "{name}");
        // Flushed: readable while the writer is still open.
        let recs = records(&std::fs::read(w.path()).unwrap());
        assert_eq!(recs.len(), 4, "version, start, two scalar events");
        assert!(recs[0].ends_with(b"\x1a\x0dbrain.Event:2"));
        assert!(
            recs[1].ends_with(&[0x10, 1, 0x3a, 2, 0x08, 1]),
            "{:?}",
            recs[1]
        );
        assert!(recs[2].windows(10).any(|w| w == b"train/loss"));
        assert!(recs[3].ends_with(&1.0f32.to_le_bytes()));
    }

    #[test]
    fn varints_use_seven_bits_a_byte() {
        let mut b = Vec::new();
        varint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
        b.clear();
        varint(&mut b, u64::MAX);
        assert_eq!(b.len(), 10);
        assert_eq!(b[9], 0x01);
    }
}
