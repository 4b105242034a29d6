//! Producer state snapshots: `<offset>.snapshot` files in a partition directory (Kafka's
//! idea), so that opening a partition reads only the batches after the newest snapshot instead
//! of every batch from the log start. Layout byte by byte in `FORMAT.md`.
//!
//! The storage crate does not know what the records mean: they are plain integers that the
//! broker's partition layer fills in (idempotent producer state, open transactions, the leader
//! epoch cache) and reads back. This module holds the pure codec (`encode`, `decode`), the file
//! names, and the file operations, all on the shard's ring or its blocking-work threads:
//! `write` (temporary file, fdatasync, rename, directory sync), `read`, `list`, `remove`.
//!
//! A snapshot named `N` describes the state after every batch below offset `N` (the log end
//! offset when it was taken). The caller decides which snapshots to keep; this module never
//! deletes one on its own, except the temporary files of unfinished writes (`list`).

use std::io;
use std::path::{Path, PathBuf};

use shardlog_runtime::fs::{Directory, OpenOptions};

use crate::error::StorageError;
use crate::segment;

/// `00000000000000000042.snapshot`: the snapshot of the state below offset 42.
pub const SNAPSHOT_SUFFIX: &str = "snapshot";
/// A snapshot being written; renamed to `.snapshot` once synced, removed by `list`.
pub const SNAPSHOT_TMP_SUFFIX: &str = "snapshot.tmp";
/// The layout version this code writes and the only one it reads.
pub const SNAPSHOT_VERSION: i16 = 1;
/// The first four bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"SLPS";
/// Magic, version and CRC-32C.
pub const HEADER_LEN: usize = 10;
/// A producer record without its batches.
const PRODUCER_FIXED_LEN: usize = 42;
const BATCH_LEN: usize = 16;
const EPOCH_LEN: usize = 12;

/// The content of one snapshot file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerSnapshot {
    /// The state is the one after every batch below this offset (the log end offset it was
    /// taken at); also the number in the file name.
    pub offset: i64,
    pub producers: Vec<SnapshotProducer>,
    pub epochs: Vec<SnapshotEpoch>,
}

/// One producer's record. -1 stands for "none" in the optional fields, as on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// -1: no marker seen.
    pub coordinator_epoch: i32,
    /// -1: no open transaction.
    pub txn_first_offset: i64,
    pub last_timestamp: i64,
    /// Wall clock (ms) of the producer's last write, for expiry.
    pub last_write_ms: i64,
    /// The producer's most recent batches, oldest first.
    pub batches: Vec<SnapshotBatch>,
}

/// One recent batch of a producer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
}

/// One leader epoch cache entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotEpoch {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Why bytes are not a snapshot this code can use. The file is then ignored (the caller falls
/// back to an older snapshot, or to the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotDecodeError {
    #[error("{0} bytes, shorter than the header")]
    TooShort(usize),
    #[error("not a producer snapshot (bad magic)")]
    BadMagic,
    #[error("unsupported version {0}")]
    UnsupportedVersion(i16),
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("malformed: {0}")]
    Malformed(String),
}

/// Why `read` returned no snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotReadError {
    /// The file could not be read (it may be fine).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The file was read and is not a valid snapshot.
    #[error("producer snapshot {}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        reason: SnapshotDecodeError,
    },
}

/// The name of the snapshot of the state below `offset`.
pub fn file_name(offset: i64) -> String {
    format!("{offset:020}.{SNAPSHOT_SUFFIX}")
}

pub fn path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(file_name(offset))
}

fn tmp_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_TMP_SUFFIX}"))
}

/// The offset of a snapshot file name (`.snapshot` only), if it is one.
pub fn parse_file_name(name: &str) -> Option<i64> {
    parse_with_suffix(name, SNAPSHOT_SUFFIX)
}

fn parse_with_suffix(name: &str, suffix: &str) -> Option<i64> {
    let (stem, rest) = name.split_once('.')?;
    if rest != suffix || stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Whether `name` is a snapshot or the temporary file of one (the log's own directory listing
/// leaves both to this module).
pub fn is_snapshot_file(name: &str) -> bool {
    parse_with_suffix(name, SNAPSHOT_SUFFIX).is_some()
        || parse_with_suffix(name, SNAPSHOT_TMP_SUFFIX).is_some()
}

/// The file's bytes: header (magic, version, CRC-32C of everything after the header), then
/// the body. See `FORMAT.md`.
pub fn encode(s: &ProducerSnapshot) -> Vec<u8> {
    let batches: usize = s.producers.iter().map(|p| p.batches.len()).sum();
    let mut out = Vec::with_capacity(
        HEADER_LEN
            + 16
            + s.producers.len() * PRODUCER_FIXED_LEN
            + batches * BATCH_LEN
            + s.epochs.len() * EPOCH_LEN,
    );
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&s.offset.to_be_bytes());
    out.extend_from_slice(&count(s.producers.len()).to_be_bytes());
    for p in &s.producers {
        out.extend_from_slice(&p.producer_id.to_be_bytes());
        out.extend_from_slice(&p.producer_epoch.to_be_bytes());
        out.extend_from_slice(&p.coordinator_epoch.to_be_bytes());
        out.extend_from_slice(&p.txn_first_offset.to_be_bytes());
        out.extend_from_slice(&p.last_timestamp.to_be_bytes());
        out.extend_from_slice(&p.last_write_ms.to_be_bytes());
        out.extend_from_slice(&count(p.batches.len()).to_be_bytes());
        for b in &p.batches {
            out.extend_from_slice(&b.first_seq.to_be_bytes());
            out.extend_from_slice(&b.last_seq.to_be_bytes());
            out.extend_from_slice(&b.base_offset.to_be_bytes());
        }
    }
    out.extend_from_slice(&count(s.epochs.len()).to_be_bytes());
    for e in &s.epochs {
        out.extend_from_slice(&e.epoch.to_be_bytes());
        out.extend_from_slice(&e.start_offset.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out[HEADER_LEN..]);
    out[6..10].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A count field (i32 on disk). More than 2^31 - 1 entries cannot be held in memory anyway.
fn count(n: usize) -> i32 {
    i32::try_from(n).expect("fewer than 2^31 snapshot entries")
}

/// Parses the exact layout `encode` writes. Checks, in order: the length of the header, the
/// magic, the version, the CRC, then the structure (counts that fit the bytes left, a
/// non-negative offset, no trailing bytes). The meaning of the records is the caller's to check.
pub fn decode(bytes: &[u8]) -> Result<ProducerSnapshot, SnapshotDecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotDecodeError::TooShort(bytes.len()));
    }
    if bytes[..4] != SNAPSHOT_MAGIC {
        return Err(SnapshotDecodeError::BadMagic);
    }
    let version = i16::from_be_bytes([bytes[4], bytes[5]]);
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotDecodeError::UnsupportedVersion(version));
    }
    let stored = u32::from_be_bytes(bytes[6..10].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&bytes[HEADER_LEN..]);
    if stored != computed {
        return Err(SnapshotDecodeError::CrcMismatch { stored, computed });
    }
    let mut r = Reader {
        bytes,
        at: HEADER_LEN,
    };
    let offset = r.i64()?;
    if offset < 0 {
        return Err(malformed(format!("negative offset {offset}")));
    }
    let n = r.count(PRODUCER_FIXED_LEN, "producers")?;
    let mut producers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut p = SnapshotProducer {
            producer_id: r.i64()?,
            producer_epoch: r.i16()?,
            coordinator_epoch: r.i32()?,
            txn_first_offset: r.i64()?,
            last_timestamp: r.i64()?,
            last_write_ms: r.i64()?,
            batches: Vec::new(),
        };
        let b = r.count(BATCH_LEN, "batches")?;
        p.batches.reserve_exact(b);
        for _ in 0..b {
            p.batches.push(SnapshotBatch {
                first_seq: r.i32()?,
                last_seq: r.i32()?,
                base_offset: r.i64()?,
            });
        }
        producers.push(p);
    }
    let n = r.count(EPOCH_LEN, "epochs")?;
    let mut epochs = Vec::with_capacity(n);
    for _ in 0..n {
        epochs.push(SnapshotEpoch {
            epoch: r.i32()?,
            start_offset: r.i64()?,
        });
    }
    if r.at != bytes.len() {
        return Err(malformed(format!(
            "{} bytes after the last record",
            bytes.len() - r.at
        )));
    }
    Ok(ProducerSnapshot {
        offset,
        producers,
        epochs,
    })
}

fn malformed(why: String) -> SnapshotDecodeError {
    SnapshotDecodeError::Malformed(why)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotDecodeError> {
        let end = self.at + N;
        let Some(b) = self.bytes.get(self.at..end) else {
            return Err(malformed(format!(
                "ends inside a field at byte {}",
                self.at
            )));
        };
        self.at = end;
        Ok(b.try_into().expect("N bytes"))
    }

    fn i16(&mut self) -> Result<i16, SnapshotDecodeError> {
        self.take().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, SnapshotDecodeError> {
        self.take().map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, SnapshotDecodeError> {
        self.take().map(i64::from_be_bytes)
    }

    /// A count of entries of at least `entry_len` bytes each: never more than the bytes left
    /// can hold, so a damaged count cannot make the decoder reserve memory it will not fill.
    fn count(&mut self, entry_len: usize, what: &str) -> Result<usize, SnapshotDecodeError> {
        let at = self.at;
        let n = self.i32()?;
        let left = self.bytes.len() - self.at;
        match usize::try_from(n) {
            Ok(n) if n <= left / entry_len => Ok(n),
            _ => Err(malformed(format!(
                "count of {what} {n} at byte {at} does not fit the {left} bytes left"
            ))),
        }
    }
}

/// The offsets of the snapshots in `dir`, ascending. Temporary files of unfinished writes are
/// removed. The directory is listed on a blocking-work thread.
pub async fn list(dir: &Path) -> Result<Vec<i64>, StorageError> {
    let d = dir.to_path_buf();
    let names = shardlog_runtime::blocking(move || -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&d)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    })
    .await?;
    let mut offsets = Vec::new();
    for name in names {
        if let Some(offset) = parse_file_name(&name) {
            offsets.push(offset);
        } else if parse_with_suffix(&name, SNAPSHOT_TMP_SUFFIX).is_some() {
            log::info!("{}: removing unfinished snapshot {name}", dir.display());
            segment::remove_if_exists(&dir.join(&name)).await?;
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Reads and decodes the snapshot at `offset` (through the ring). A file whose content names
/// another offset is invalid.
pub async fn read(dir: &Path, offset: i64) -> Result<ProducerSnapshot, SnapshotReadError> {
    let path = path(dir, offset);
    let bytes = read_file(&path).await?;
    let invalid = |reason| SnapshotReadError::Invalid {
        path: path.clone(),
        reason,
    };
    let snapshot = decode(&bytes).map_err(invalid)?;
    if snapshot.offset != offset {
        return Err(invalid(malformed(format!(
            "holds offset {} in a file named for {offset}",
            snapshot.offset
        ))));
    }
    Ok(snapshot)
}

async fn read_file(path: &Path) -> Result<Vec<u8>, StorageError> {
    let file = OpenOptions::new().read(true).buffered_open(path).await?;
    let size = file.file_size().await;
    let mut out = Vec::new();
    let read = async {
        let size = size?;
        out.reserve(usize::try_from(size).unwrap_or(0));
        while (out.len() as u64) < size {
            let chunk = file
                .read_at(out.len() as u64, (size - out.len() as u64) as usize)
                .await?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        Ok::<(), shardlog_runtime::Error>(())
    }
    .await;
    file.close().await?;
    read?;
    Ok(out)
}

/// Writes `snapshot` durably as `<offset>.snapshot`: a temporary file, fdatasync, rename over
/// any file of that name, directory sync. Everything through the ring; a crash at any point
/// leaves either no file of that name, or the complete new one (or an old one of the same name).
pub async fn write(dir: &Path, snapshot: &ProducerSnapshot) -> Result<(), StorageError> {
    let bytes = encode(snapshot);
    let tmp = tmp_path(dir, snapshot.offset);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(&tmp)
        .await?;
    let written = segment::write_all(&file, bytes, 0).await;
    let synced = match written {
        Ok(()) => file
            .fdatasync()
            .await
            .map_err(|e| segment::write_error("syncing", Some(&tmp), e).into()),
        Err(e) => Err(e),
    };
    let closed = file.close().await;
    if let Err(e) = synced.and(closed.map_err(StorageError::from)) {
        let _ = segment::remove_if_exists(&tmp).await;
        return Err(e);
    }
    shardlog_runtime::fs::rename(&tmp, path(dir, snapshot.offset)).await?;
    sync_dir(dir).await
}

/// fdatasync of each file in `paths` (through the ring): for files a snapshot stands in for,
/// which must be durable before it is written.
pub async fn sync_files(paths: &[PathBuf]) -> Result<(), StorageError> {
    for p in paths {
        let file = OpenOptions::new().read(true).buffered_open(p).await?;
        let synced = file.fdatasync().await;
        file.close().await?;
        synced.map_err(|e| segment::write_error("syncing", Some(p), e))?;
    }
    Ok(())
}

/// Removes the snapshot at `offset` (nothing if there is none). The directory is not synced:
/// callers that must not see it again after a crash call `sync_dir`.
pub async fn remove(dir: &Path, offset: i64) -> Result<(), StorageError> {
    segment::remove_if_exists(&path(dir, offset)).await
}

/// fsync of the directory, so that renames and removals in it are durable.
pub async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let handle = Directory::open(dir).await?;
    let synced = handle.sync().await;
    handle.close().await?;
    synced?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProducerSnapshot {
        ProducerSnapshot {
            offset: 4711,
            producers: vec![
                SnapshotProducer {
                    producer_id: 7,
                    producer_epoch: 3,
                    coordinator_epoch: -1,
                    txn_first_offset: -1,
                    last_timestamp: 1_700_000_000_000,
                    last_write_ms: 1_700_000_000_123,
                    batches: vec![
                        SnapshotBatch {
                            first_seq: 0,
                            last_seq: 4,
                            base_offset: 100,
                        },
                        SnapshotBatch {
                            first_seq: 5,
                            last_seq: 5,
                            base_offset: 120,
                        },
                    ],
                },
                SnapshotProducer {
                    producer_id: i64::MAX,
                    producer_epoch: i16::MAX,
                    coordinator_epoch: 12,
                    txn_first_offset: 4000,
                    last_timestamp: -1,
                    last_write_ms: 0,
                    batches: Vec::new(),
                },
            ],
            epochs: vec![
                SnapshotEpoch {
                    epoch: 0,
                    start_offset: 0,
                },
                SnapshotEpoch {
                    epoch: 4,
                    start_offset: 3000,
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let s = sample();
        let bytes = encode(&s);
        // Header 10, offset 8, count 4, producers 42 + 2 x 16 and 42, count 4, epochs 2 x 12.
        assert_eq!(bytes.len(), 10 + 8 + 4 + (42 + 32) + 42 + 4 + 24);
        assert_eq!(&bytes[..4], b"SLPS");
        assert_eq!(&bytes[4..6], &[0, 1]);
        assert_eq!(&bytes[10..18], &4711i64.to_be_bytes());
        assert_eq!(decode(&bytes), Ok(s));
        let empty = ProducerSnapshot::default();
        assert_eq!(encode(&empty).len(), 10 + 8 + 4 + 4);
        assert_eq!(decode(&encode(&empty)), Ok(empty));
    }

    #[test]
    fn any_damaged_byte_is_detected() {
        let bytes = encode(&sample());
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            let err = decode(&bad).expect_err("a flipped bit is caught");
            let expected_kind = match at {
                0..=3 => matches!(err, SnapshotDecodeError::BadMagic),
                4..=5 => matches!(err, SnapshotDecodeError::UnsupportedVersion(_)),
                _ => matches!(err, SnapshotDecodeError::CrcMismatch { .. }),
            };
            assert!(expected_kind, "byte {at}: {err:?}");
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    /// Re-seals a body with a valid CRC, to reach the structure checks behind it.
    fn sealed(mut bytes: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&bytes[HEADER_LEN..]);
        bytes[6..10].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn structure_is_checked_behind_a_valid_crc() {
        let bytes = encode(&sample());
        // A trailing byte.
        let mut b = bytes.clone();
        b.push(0);
        assert!(matches!(
            decode(&sealed(b)),
            Err(SnapshotDecodeError::Malformed(_))
        ));
        // A producer count far beyond the bytes left: refused before reserving anything.
        let mut b = bytes.clone();
        b[18..22].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            decode(&sealed(b)),
            Err(SnapshotDecodeError::Malformed(_))
        ));
        let mut b = bytes.clone();
        b[18..22].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(matches!(
            decode(&sealed(b)),
            Err(SnapshotDecodeError::Malformed(_))
        ));
        // A negative offset.
        let mut b = bytes;
        b[10..18].copy_from_slice(&(-5i64).to_be_bytes());
        assert!(matches!(
            decode(&sealed(b)),
            Err(SnapshotDecodeError::Malformed(_))
        ));
    }

    #[test]
    fn versions_other_than_1_are_refused() {
        let mut bytes = encode(&sample());
        bytes[4..6].copy_from_slice(&2i16.to_be_bytes());
        assert_eq!(
            decode(&sealed(bytes)),
            Err(SnapshotDecodeError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name(42), "00000000000000000042.snapshot");
        assert_eq!(parse_file_name("00000000000000000042.snapshot"), Some(42));
        assert_eq!(parse_file_name("00000000000000000042.snapshot.tmp"), None);
        assert_eq!(parse_file_name("00000000000000000042.log"), None);
        assert_eq!(parse_file_name("42.snapshot"), None);
        assert!(is_snapshot_file("00000000000000000042.snapshot"));
        assert!(is_snapshot_file("00000000000000000042.snapshot.tmp"));
        assert!(!is_snapshot_file("00000000000000000042.txnindex"));
        assert!(!is_snapshot_file("checkpoint"));
    }

    #[test]
    fn write_list_read_and_remove_on_the_ring() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        // Leftovers of an unfinished write and a damaged file.
        std::fs::write(dir.join("00000000000000000009.snapshot.tmp"), b"half").unwrap();
        std::fs::write(dir.join(file_name(3)), b"SLPS\0\x01garbage").unwrap();
        shardlog_runtime::start_executor(move || async move {
            let mut s = sample();
            write(&dir, &s).await.unwrap();
            s.offset = 5000;
            write(&dir, &s).await.unwrap();
            assert_eq!(list(&dir).await.unwrap(), vec![3, 4711, 5000]);
            assert!(!dir.join("00000000000000000009.snapshot.tmp").exists());
            assert_eq!(read(&dir, 5000).await.unwrap(), s);
            assert!(matches!(
                read(&dir, 3).await,
                Err(SnapshotReadError::Invalid { .. })
            ));
            assert!(matches!(
                read(&dir, 77).await,
                Err(SnapshotReadError::Storage(_))
            ));
            // A file renamed to another offset is refused.
            std::fs::copy(path(&dir, 5000), path(&dir, 6000)).unwrap();
            assert!(matches!(
                read(&dir, 6000).await,
                Err(SnapshotReadError::Invalid { .. })
            ));
            for offset in [3, 4711, 6000, 123] {
                remove(&dir, offset).await.unwrap();
            }
            sync_dir(&dir).await.unwrap();
            assert_eq!(list(&dir).await.unwrap(), vec![5000]);
        })
        .unwrap()
        .join()
        .unwrap();
    }
}
