//! Record batch (magic v2) header: parsing, validation and the two fields the broker rewrites.
//!
//! The broker does not decode records on the produce path (except the key lengths of batches
//! for a compacted topic, `records::keyless_records`): it reads the fixed 61-byte header,
//! checks length, magic and CRC-32C, overwrites `base_offset` and `partition_leader_epoch`
//! (both outside the CRC) and appends the bytes unchanged. Layout (big endian):
//!
//! | field                  | type | at |
//! |------------------------|------|----|
//! | base_offset            | i64  | 0  |
//! | batch_length           | i32  | 8  |  bytes after this field (total = 12 + batch_length)
//! | partition_leader_epoch | i32  | 12 |
//! | magic                  | i8   | 16 |  must be 2
//! | crc                    | u32  | 17 |  CRC-32C of bytes 21..end
//! | attributes             | i16  | 21 |  bits 0-2 compression, 3 timestamp type, 4 transactional, 5 control
//! | last_offset_delta      | i32  | 23 |
//! | base_timestamp         | i64  | 27 |
//! | max_timestamp          | i64  | 35 |
//! | producer_id            | i64  | 43 |
//! | producer_epoch         | i16  | 51 |
//! | base_sequence          | i32  | 53 |
//! | records_count          | i32  | 57 |

use thiserror::Error;

/// Size of the fixed record batch v2 header.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batch_length` counts: base_offset (8) + batch_length (4).
pub const LOG_OVERHEAD: usize = 12;
/// Offset of the first byte covered by the CRC.
const CRC_START: usize = 21;
pub const MAGIC_V2: i8 = 2;

/// Why a record batch was refused. Each maps to one Kafka error code.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header or than `batch_length` claims (CORRUPT_MESSAGE, 2).
    #[error("record batch truncated")]
    Truncated,
    /// `batch_length` smaller than the header or negative (CORRUPT_MESSAGE, 2).
    #[error("record batch length {0} invalid")]
    BadLength(i32),
    /// Only magic v2 is accepted (UNSUPPORTED_FOR_MESSAGE_FORMAT, 43).
    #[error("record batch magic {0} unsupported")]
    BadMagic(i8),
    /// CRC-32C mismatch (CORRUPT_MESSAGE, 2).
    #[error("record batch crc mismatch")]
    BadCrc,
    /// records_count < 1 or last_offset_delta inconsistent with it (INVALID_RECORD, 87).
    #[error("record batch record count invalid")]
    BadCount,
    /// Larger than `max.message.bytes` (MESSAGE_TOO_LARGE, 10).
    #[error("record batch of {0} bytes is too large")]
    TooLarge(usize),
}

impl BatchError {
    /// The Kafka error code a produce response carries for this error.
    pub fn kafka_code(self) -> i16 {
        match self {
            BatchError::Truncated | BatchError::BadLength(_) | BatchError::BadCrc => 2,
            BatchError::BadMagic(_) => 43,
            BatchError::BadCount => 87,
            BatchError::TooLarge(_) => 10,
        }
    }
}

/// Compression codec named by attribute bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn from_attributes(attributes: i16) -> Option<Compression> {
        match attributes & 0x7 {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// The decoded fixed header of one record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Parses the fixed header from the first 61 bytes of `buf`. Checks nothing but length.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated);
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic: buf[16] as i8,
            crc: u32::from_be_bytes(buf[17..21].try_into().expect("4 bytes")),
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Total bytes of this batch on the wire and on disk.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn compression(&self) -> Option<Compression> {
        Compression::from_attributes(self.attributes)
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// LogAppendTime (bit 3) rather than CreateTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & 0x08 != 0
    }

    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Reads only the length of the batch starting at `buf[0]`, for walking a blob of batches.
/// Returns `None` when fewer than 12 bytes are present.
pub fn peek_total_len(buf: &[u8]) -> Option<Result<usize, BatchError>> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let len = be_i32(buf, 8);
    if len < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Some(Err(BatchError::BadLength(len)));
    }
    Some(Ok(LOG_OVERHEAD + len as usize))
}

/// Validates one complete batch occupying exactly `buf` (length, magic, count, CRC).
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    if header.batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::BadLength(header.batch_length));
    }
    if header.total_len() != buf.len() {
        return Err(BatchError::Truncated);
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::BadMagic(header.magic));
    }
    if header.records_count < 0
        || header.last_offset_delta < 0
        || (header.records_count > 0 && header.last_offset_delta < header.records_count - 1)
    {
        return Err(BatchError::BadCount);
    }
    if crc32c::crc32c(&buf[CRC_START..]) != header.crc {
        return Err(BatchError::BadCrc);
    }
    Ok(header)
}

/// Splits a produce request's `records` blob into validated batches, in order.
/// Every byte must belong to a whole, valid batch; `max_batch_bytes` is `max.message.bytes`.
pub fn split_batches(
    records: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<(usize, BatchHeader)>, BatchError> {
    let mut out = Vec::with_capacity(1);
    let mut pos = 0;
    while pos < records.len() {
        let total = match peek_total_len(&records[pos..]) {
            None => return Err(BatchError::Truncated),
            Some(r) => r?,
        };
        if total > max_batch_bytes {
            return Err(BatchError::TooLarge(total));
        }
        let end = pos.checked_add(total).ok_or(BatchError::Truncated)?;
        if end > records.len() {
            return Err(BatchError::Truncated);
        }
        let header = validate(&records[pos..end])?;
        out.push((pos, header));
        pos = end;
    }
    Ok(out)
}

/// Rewrites the broker-owned fields of a batch in place: base offset and leader epoch.
/// Neither is covered by the CRC, so the batch stays valid.
pub fn assign_offset(buf: &mut [u8], base_offset: i64, leader_epoch: i32) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
    buf[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Rewrites the max timestamp for LogAppendTime topics. This field is covered by the CRC,
/// so the CRC is recomputed.
pub fn set_log_append_time(buf: &mut [u8], timestamp_ms: i64) {
    buf[27..35].copy_from_slice(&timestamp_ms.to_be_bytes());
    buf[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
    let attrs = be_i16(buf, 21) | 0x08;
    buf[21..23].copy_from_slice(&attrs.to_be_bytes());
    set_crc(buf);
}

/// Recomputes the CRC-32C of a whole batch after fields it covers changed.
pub fn set_crc(buf: &mut [u8]) {
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A key/value pair for `build_simple_batch`.
pub type SimpleRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds the bytes of a minimal uncompressed batch; for tests and tools that need a batch
/// without a client library. Each record: (key, value, no headers).
pub fn build_simple_batch(
    base_offset: i64,
    base_timestamp: i64,
    records: &[SimpleRecord<'_>],
) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut rec = Vec::new();
        rec.push(0u8); // attributes
        put_varlong(&mut rec, 0); // timestamp delta
        put_varlong(&mut rec, i as i64); // offset delta
        match key {
            Some(k) => {
                put_varlong(&mut rec, k.len() as i64);
                rec.extend_from_slice(k);
            }
            None => put_varlong(&mut rec, -1),
        }
        match value {
            Some(v) => {
                put_varlong(&mut rec, v.len() as i64);
                rec.extend_from_slice(v);
            }
            None => put_varlong(&mut rec, -1),
        }
        put_varlong(&mut rec, 0); // headers count
        put_varlong(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let count = records.len() as i32;
    let mut buf = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    buf.extend_from_slice(&base_offset.to_be_bytes());
    buf.extend_from_slice(&((BATCH_HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    buf.push(MAGIC_V2 as u8);
    buf.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
    buf.extend_from_slice(&0i16.to_be_bytes()); // attributes
    buf.extend_from_slice(&(count - 1).max(0).to_be_bytes());
    buf.extend_from_slice(&base_timestamp.to_be_bytes());
    buf.extend_from_slice(&base_timestamp.to_be_bytes());
    buf.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    buf.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    buf.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    buf.extend_from_slice(&count.to_be_bytes());
    buf.extend_from_slice(&body);
    set_crc(&mut buf);
    buf
}

/// Attribute bit 4: the batch belongs to a transaction.
pub const TRANSACTIONAL_BIT: i16 = 0x10;
/// Attribute bit 5: a control batch (transaction markers).
pub const CONTROL_BIT: i16 = 0x20;

/// The type of a control record (its key's second int16). Kafka's values: 0 ABORT, 1 COMMIT;
/// others (leader change, snapshot headers) exist in KRaft logs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    Other(i16),
}

impl ControlType {
    pub fn code(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
            ControlType::Other(c) => c,
        }
    }

    pub fn from_code(code: i16) -> ControlType {
        match code {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            c => ControlType::Other(c),
        }
    }
}

/// The first record of a control batch: its type (key) and, for transaction markers, the
/// coordinator epoch (value; -1 when the value is missing or too short).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRecord {
    pub kind: ControlType,
    pub coordinator_epoch: i32,
}

/// Builds a transaction marker as Kafka writes one: a control batch (attributes: control and
/// transactional bits, no compression), the producer's id and epoch, base sequence -1, one
/// record with key `[int16 version 0, int16 type]` (0 ABORT, 1 COMMIT) and value
/// `[int16 version 0, int32 coordinator_epoch]`. Base offset 0 and leader epoch -1: the broker
/// assigns them.
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Vec<u8> {
    let kind = if commit {
        ControlType::Commit
    } else {
        ControlType::Abort
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.code().to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let mut rec = Vec::new();
    rec.push(0u8); // attributes
    put_varlong(&mut rec, 0); // timestamp delta
    put_varlong(&mut rec, 0); // offset delta
    put_varlong(&mut rec, key.len() as i64);
    rec.extend_from_slice(&key);
    put_varlong(&mut rec, value.len() as i64);
    rec.extend_from_slice(&value);
    put_varlong(&mut rec, 0); // headers
    let mut body = Vec::with_capacity(rec.len() + 1);
    put_varlong(&mut body, rec.len() as i64);
    body.extend_from_slice(&rec);
    let mut buf = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    buf.extend_from_slice(&0i64.to_be_bytes()); // base offset
    buf.extend_from_slice(&((BATCH_HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    buf.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
    buf.push(MAGIC_V2 as u8);
    buf.extend_from_slice(&0u32.to_be_bytes()); // crc placeholder
    buf.extend_from_slice(&(CONTROL_BIT | TRANSACTIONAL_BIT).to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    buf.extend_from_slice(&timestamp_ms.to_be_bytes());
    buf.extend_from_slice(&timestamp_ms.to_be_bytes());
    buf.extend_from_slice(&producer_id.to_be_bytes());
    buf.extend_from_slice(&producer_epoch.to_be_bytes());
    buf.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    buf.extend_from_slice(&1i32.to_be_bytes()); // records count
    buf.extend_from_slice(&body);
    set_crc(&mut buf);
    buf
}

/// Reads a zig-zag varint at `*at`, moving `*at` past it. `None` if the bytes end first or it
/// is longer than 10 bytes.
pub(crate) fn get_varlong(buf: &[u8], at: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*at)?;
        *at += 1;
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// The first record of a control batch (`batch` starts at the batch's first byte and holds at
/// least the header and its first record). `None` when the batch is not a control batch, is
/// compressed, or its first record is malformed or has a key shorter than 4 bytes. Control
/// batches are a few dozen bytes: this reads only the bytes it needs.
pub fn control_record(batch: &[u8]) -> Option<ControlRecord> {
    let h = BatchHeader::parse(batch).ok()?;
    if !h.is_control() || h.records_count < 1 || h.attributes & 0x07 != 0 {
        return None;
    }
    let mut at = BATCH_HEADER_LEN;
    let _len = get_varlong(batch, &mut at)?;
    at += 1; // record attributes
    get_varlong(batch, &mut at)?; // timestamp delta
    get_varlong(batch, &mut at)?; // offset delta
    let key_len = get_varlong(batch, &mut at)?;
    if key_len < 4 {
        return None;
    }
    let key = batch.get(at..at + key_len as usize)?;
    let kind = ControlType::from_code(be_i16(key, 2));
    at += key_len as usize;
    let coordinator_epoch = match get_varlong(batch, &mut at) {
        Some(n) if n >= 6 => batch.get(at..at + 6).map_or(-1, |v| be_i32(v, 2)),
        _ => -1,
    };
    Some(ControlRecord {
        kind,
        coordinator_epoch,
    })
}

/// Zig-zag varint as the record format uses it.
pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_batch_validates_and_offsets_rewrite_keeps_crc() {
        let mut b = build_simple_batch(0, 1_000, &[(Some(b"k"), Some(b"v1")), (None, Some(b"v2"))]);
        let h = validate(&b).unwrap();
        assert_eq!(h.records_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.total_len(), b.len());
        assign_offset(&mut b, 42, 7);
        let h2 = validate(&b).unwrap();
        assert_eq!(h2.base_offset, 42);
        assert_eq!(h2.partition_leader_epoch, 7);
        assert_eq!(h2.last_offset(), 43);
    }

    #[test]
    fn corruption_is_detected() {
        let b = build_simple_batch(0, 1, &[(None, Some(b"hello"))]);
        let mut bad = b.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(validate(&bad), Err(BatchError::BadCrc));
        assert_eq!(validate(&b[..b.len() - 1]), Err(BatchError::Truncated));
        let mut magic = b.clone();
        magic[16] = 1;
        assert_eq!(validate(&magic), Err(BatchError::BadMagic(1)));
        let two = [b.clone(), b.clone()].concat();
        assert_eq!(split_batches(&two, 1 << 20).unwrap().len(), 2);
        assert_eq!(split_batches(&two, 10), Err(BatchError::TooLarge(b.len())));
        assert_eq!(
            split_batches(&two[..two.len() - 3], 1 << 20),
            Err(BatchError::Truncated)
        );
    }

    #[test]
    fn control_batches_round_trip() {
        for (commit, kind) in [(true, ControlType::Commit), (false, ControlType::Abort)] {
            let mut b = build_control_batch(42, 3, commit, 17, 1_000);
            let h = validate(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch), (42, 3));
            assert_eq!(
                (h.base_sequence, h.records_count, h.last_offset_delta),
                (-1, 1, 0)
            );
            assert_eq!(h.compression(), Some(Compression::None));
            assign_offset(&mut b, 99, 5);
            validate(&b).unwrap();
            assert_eq!(
                control_record(&b),
                Some(ControlRecord {
                    kind,
                    coordinator_epoch: 17
                })
            );
            // Kafka's key and value bytes: version 0, then type / coordinator epoch.
            let key_at = b.len() - 1 - 6 - 1 - 4;
            assert_eq!(&b[key_at..key_at + 4], &[0, 0, 0, kind.code() as u8]);
            assert_eq!(&b[b.len() - 7..b.len() - 1], &[0, 0, 0, 0, 0, 17]);
            // Every prefix without the whole key answers None, never panics.
            for cut in 0..key_at + 4 {
                assert_eq!(control_record(&b[..cut]), None, "cut at {cut}");
            }
        }
        let data = build_simple_batch(0, 1, &[(Some(b"\0\0\0\0"), None)]);
        assert_eq!(control_record(&data), None, "not a control batch");
        assert_eq!(ControlType::from_code(5), ControlType::Other(5));
    }

    #[test]
    fn split_never_panics_on_garbage() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let good = build_simple_batch(0, 1, &[(None, Some(b"x"))]);
        for _ in 0..20_000 {
            let mut buf = good.clone();
            let n = rng.gen_range(0..4);
            for _ in 0..n {
                let i = rng.gen_range(0..buf.len());
                buf[i] = rng.gen();
            }
            let cut = rng.gen_range(0..=buf.len());
            let _ = split_batches(&buf[..cut], 1 << 20);
        }
    }
}
