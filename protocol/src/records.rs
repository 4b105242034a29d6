//! Client-side record batches (magic v2) for tools, the bench harness and tests: building a
//! batch from records ([`BatchBuilder`]), decoding the batches of a fetched blob
//! ([`decode_batches`]) and walking batch headers cheaply ([`batches`], [`summarize`],
//! [`count_records`]).
//!
//! The broker does not decode records (see [`crate::batch`]), with one exception on its
//! request path: a produce to a compacted topic is checked for records without a key
//! ([`keyless_records`], which walks the records' lengths without decoding them). Decoding
//! treats its input as hostile: every length is checked, counts never drive allocations beyond
//! what the bytes can hold, decompression is bounded, and nothing panics.
//!
//! Record layout inside a batch body (after the 61-byte header, possibly compressed):
//! `length: varint, attributes: i8, timestamp_delta: varlong, offset_delta: varint,
//! key_length: varint (-1 = null), key, value_length: varint, value, header_count: varint,
//! headers: [key_length: varint, key (UTF-8), value_length: varint (-1 = null), value]`.
//! Varints are zig-zag encoded.

use bytes::Bytes;
use thiserror::Error;

use crate::batch::{self, BatchError, BatchHeader, Compression, BATCH_HEADER_LEN, MAGIC_V2};
use crate::compression::{self, CompressionError};

/// Bytes from the start of a batch to the first byte covered by the CRC.
const CRC_START: usize = 21;
/// The smallest possible record: length, attributes, two deltas, two null lengths, no headers.
const MIN_RECORD_LEN: usize = 7;
/// Producer fields when the producer is not idempotent.
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;
const NO_SEQUENCE: i32 = -1;
/// Producers do not know the leader epoch; the broker fills it in.
const NO_PARTITION_LEADER_EPOCH: i32 = -1;
const TRANSACTIONAL_BIT: i16 = 0x10;

/// One record with absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// One decoded batch: its header and its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    pub header: BatchHeader,
    pub records: Vec<Record>,
}

/// Why records could not be built or decoded. `at` is the batch's byte position in the blob.
#[derive(Debug, Error)]
pub enum RecordsError {
    /// The batch header or framing is invalid (length, magic, count, CRC).
    #[error("batch at byte {at}: {source}")]
    Batch { at: usize, source: BatchError },
    /// Attribute bits 0-2 name no known codec.
    #[error("batch at byte {at}: unknown compression codec in attributes {attributes:#x}")]
    UnknownCodec { at: usize, attributes: i16 },
    /// The batch body could not be (de)compressed, or decompresses beyond the limit.
    #[error("batch at byte {at}: {source}")]
    Compression { at: usize, source: CompressionError },
    /// A record inside the batch body is malformed.
    #[error("batch at byte {at}, record {index}: {reason}")]
    CorruptRecord {
        at: usize,
        index: usize,
        reason: &'static str,
    },
    /// Building: a batch needs at least one record.
    #[error("a record batch needs at least one record")]
    Empty,
    /// Building: a value does not fit its wire field (length over i32, delta out of range).
    #[error("cannot encode record: {0}")]
    Unencodable(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Building

/// Builds one v2 record batch. Offsets deltas are assigned in push order; the output passes
/// [`batch::validate`].
///
/// ```
/// use shardlog_protocol::batch::Compression;
/// use shardlog_protocol::records::BatchBuilder;
/// let mut b = BatchBuilder::new(Compression::Lz4, 1_700_000_000_000);
/// b.push(1_700_000_000_000, Some(b"k"), Some(b"v"), &[("trace", Some(b"1"))]).unwrap();
/// let bytes = b.build().unwrap();
/// assert!(shardlog_protocol::batch::validate(&bytes).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    base_offset: i64,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    count: i32,
    /// Uncompressed records, encoded.
    body: Vec<u8>,
}

impl BatchBuilder {
    /// A builder for a non-idempotent, non-transactional batch with base offset 0.
    /// Record timestamps are stored as deltas from `base_timestamp`.
    pub fn new(compression: Compression, base_timestamp: i64) -> Self {
        BatchBuilder {
            compression,
            base_offset: 0,
            base_timestamp,
            max_timestamp: base_timestamp,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
            count: 0,
            body: Vec::new(),
        }
    }

    /// Sets the idempotent producer fields (use -1, -1, -1 for none, the default).
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch transactional (attribute bit 4).
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Sets the base offset (producers send 0; the broker assigns the real one).
    pub fn base_offset(mut self, base_offset: i64) -> Self {
        self.base_offset = base_offset;
        self
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Uncompressed size of the records pushed so far (the batch is 61 bytes more, before
    /// compression), for callers that cut batches by size.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Appends a record with offset delta `len()`.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<(), RecordsError> {
        let offset_delta = self.count;
        let next_count = self
            .count
            .checked_add(1)
            .ok_or(RecordsError::Unencodable("too many records"))?;
        let ts_delta = timestamp
            .checked_sub(self.base_timestamp)
            .ok_or(RecordsError::Unencodable("timestamp delta out of range"))?;
        let header_count = len_i64(headers.len())?;

        let mut size = 1 + varint_size(ts_delta) + varint_size(i64::from(offset_delta));
        size += opt_bytes_size(key)? + opt_bytes_size(value)? + varint_size(header_count);
        for (k, v) in headers {
            size += opt_bytes_size(Some(k.as_bytes()))? + opt_bytes_size(*v)?;
        }
        let size_i64 = len_i64(size)?;
        if size_i64 > i64::from(i32::MAX) {
            return Err(RecordsError::Unencodable("record longer than i32::MAX"));
        }

        let body = &mut self.body;
        body.reserve(size + varint_size(size_i64));
        batch::put_varlong(body, size_i64);
        body.push(0); // record attributes: unused
        batch::put_varlong(body, ts_delta);
        batch::put_varlong(body, i64::from(offset_delta));
        put_opt_bytes(body, key);
        put_opt_bytes(body, value);
        batch::put_varlong(body, header_count);
        for (k, v) in headers {
            put_opt_bytes(body, Some(k.as_bytes()));
            put_opt_bytes(body, *v);
        }
        self.count = next_count;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        Ok(())
    }

    /// Appends `record`, using its timestamp, key, value and headers (its offset is ignored:
    /// offsets are assigned in push order).
    pub fn push_record(&mut self, record: &Record) -> Result<(), RecordsError> {
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        self.push(
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        )
    }

    /// Encodes the batch: header, CRC-32C, body compressed with the builder's codec.
    pub fn build(&self) -> Result<Vec<u8>, RecordsError> {
        if self.count == 0 {
            return Err(RecordsError::Empty);
        }
        let compressed;
        let body: &[u8] = if self.compression == Compression::None {
            &self.body
        } else {
            compressed = compression::compress(self.compression, &self.body)
                .map_err(|source| RecordsError::Compression { at: 0, source })?;
            &compressed
        };
        let batch_length = i32::try_from(BATCH_HEADER_LEN - batch::LOG_OVERHEAD + body.len())
            .map_err(|_| RecordsError::Unencodable("batch longer than i32::MAX"))?;
        let mut attributes = self.compression.attribute_bits();
        if self.transactional {
            attributes |= TRANSACTIONAL_BIT;
        }
        let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
        out.extend_from_slice(&self.base_offset.to_be_bytes());
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&0u32.to_be_bytes()); // CRC, patched below
        out.extend_from_slice(&attributes.to_be_bytes());
        out.extend_from_slice(&(self.count - 1).to_be_bytes()); // last offset delta
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(body);
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..CRC_START].copy_from_slice(&crc.to_be_bytes());
        Ok(out)
    }
}

/// Builds one non-idempotent batch holding `records` (their offsets are ignored).
pub fn build_batch(
    compression: Compression,
    base_timestamp: i64,
    records: &[Record],
) -> Result<Vec<u8>, RecordsError> {
    let mut b = BatchBuilder::new(compression, base_timestamp);
    for r in records {
        b.push_record(r)?;
    }
    b.build()
}

fn len_i64(len: usize) -> Result<i64, RecordsError> {
    i64::try_from(len).map_err(|_| RecordsError::Unencodable("length out of range"))
}

fn varint_size(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn opt_bytes_size(b: Option<&[u8]>) -> Result<usize, RecordsError> {
    match b {
        None => Ok(1),
        Some(b) => {
            if b.len() > i32::MAX as usize {
                return Err(RecordsError::Unencodable("field longer than i32::MAX"));
            }
            Ok(varint_size(len_i64(b.len())?) + b.len())
        }
    }
}

/// Writes a varint length (or -1) and the bytes. Lengths were checked by `opt_bytes_size`.
fn put_opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => batch::put_varlong(out, -1),
        Some(b) => {
            batch::put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Walking headers

/// Iterator over the complete batches of a blob: `(byte position, header, batch bytes)`.
/// Checks length and magic only (no CRC); stops silently at a trailing partial batch and
/// after the first error.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    blob: &'a [u8],
    pos: usize,
    done: bool,
}

/// Walks the batch headers of `blob` without decoding records; see [`Batches`].
pub fn batches(blob: &[u8]) -> Batches<'_> {
    Batches {
        blob,
        pos: 0,
        done: false,
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<(usize, BatchHeader, &'a [u8]), RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let at = self.pos;
        let rest = self.blob.get(at..).unwrap_or_default();
        let total = match batch::peek_total_len(rest) {
            None => {
                self.done = true;
                return None;
            }
            Some(Err(source)) => {
                self.done = true;
                return Some(Err(RecordsError::Batch { at, source }));
            }
            Some(Ok(total)) => total,
        };
        let Some(bytes) = rest.get(..total) else {
            // A partial batch at the end, as fetch responses may carry: not an error.
            self.done = true;
            return None;
        };
        let header = match BatchHeader::parse(bytes) {
            Ok(h) => h,
            Err(source) => {
                self.done = true;
                return Some(Err(RecordsError::Batch { at, source }));
            }
        };
        if header.magic != MAGIC_V2 {
            self.done = true;
            return Some(Err(RecordsError::Batch {
                at,
                source: BatchError::BadMagic(header.magic),
            }));
        }
        self.pos = at + total;
        Some(Ok((at, header, bytes)))
    }
}

/// What a cheap header walk learns about a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlobSummary {
    /// Complete batches.
    pub batches: usize,
    /// Sum of their `records_count`.
    pub records: u64,
    /// Bytes covered by complete batches (a trailing partial batch is not counted).
    pub complete_bytes: usize,
    /// `last_offset + 1` of the last complete batch: where the next fetch starts.
    pub next_offset: Option<i64>,
}

/// Walks the headers of `blob` (see [`batches`]) and sums them up. No CRC check, no record
/// decode: cheap enough for a bench's consume loop.
pub fn summarize(blob: &[u8]) -> Result<BlobSummary, RecordsError> {
    let mut s = BlobSummary::default();
    for item in batches(blob) {
        let (at, header, bytes) = item?;
        let count = u64::try_from(header.records_count).map_err(|_| RecordsError::Batch {
            at,
            source: BatchError::BadCount,
        })?;
        s.batches += 1;
        s.records += count;
        s.complete_bytes = at + bytes.len();
        s.next_offset = Some(header.last_offset().wrapping_add(1));
    }
    Ok(s)
}

/// Number of records in the complete batches of `blob`, from batch headers only.
pub fn count_records(blob: &[u8]) -> Result<u64, RecordsError> {
    summarize(blob).map(|s| s.records)
}

// ---------------------------------------------------------------------------------------------
// Keys

/// The indexes (from 0, within the batch, in order) of the records of `batch` that have no key:
/// what Kafka's broker refuses in a produce to a compacted topic (`LogValidator.validateKey`).
/// Empty for a control batch (transaction markers are exempt).
///
/// `batch` is one complete batch, as [`batch::split_batches`] cuts a produce request; its CRC
/// is not checked again. A compressed body is decompressed to at most `max_decompressed`
/// bytes ([`CompressionError::TooLarge`] beyond). The records are walked, not decoded: only
/// each record's length and key length are read, so an uncompressed batch costs no
/// allocation unless a record without a key is found. Records that do not fit the batch, or
/// bytes left after the last one, are [`RecordsError::CorruptRecord`].
pub fn keyless_records(batch: &[u8], max_decompressed: usize) -> Result<Vec<i32>, RecordsError> {
    let at = 0;
    let header = BatchHeader::parse(batch).map_err(|source| RecordsError::Batch { at, source })?;
    if header.magic != MAGIC_V2 {
        return Err(RecordsError::Batch {
            at,
            source: BatchError::BadMagic(header.magic),
        });
    }
    if header.batch_length < (BATCH_HEADER_LEN - batch::LOG_OVERHEAD) as i32
        || header.total_len() != batch.len()
    {
        return Err(RecordsError::Batch {
            at,
            source: BatchError::Truncated,
        });
    }
    if header.is_control() {
        return Ok(Vec::new());
    }
    let count = usize::try_from(header.records_count).map_err(|_| RecordsError::Batch {
        at,
        source: BatchError::BadCount,
    })?;
    let codec = header.compression().ok_or(RecordsError::UnknownCodec {
        at,
        attributes: header.attributes,
    })?;
    let raw = &batch[BATCH_HEADER_LEN..];
    if codec == Compression::None {
        return keyless_in_body(raw, count, at);
    }
    let body = compression::decompress(codec, raw, max_decompressed)
        .map_err(|source| RecordsError::Compression { at, source })?;
    keyless_in_body(&body, count, at)
}

/// Walks `count` records of an uncompressed body, reading each one's length and key length.
fn keyless_in_body(body: &[u8], count: usize, at: usize) -> Result<Vec<i32>, RecordsError> {
    let mut keyless = Vec::new();
    let mut pos = 0;
    for index in 0..count {
        let err = |reason| RecordsError::CorruptRecord { at, index, reason };
        let len = read_varint(body, &mut pos).ok_or(err("bad record length"))?;
        let len = usize::try_from(len).map_err(|_| err("negative record length"))?;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= body.len())
            .ok_or(err("record extends past the batch"))?;
        // Only this record's bytes: attributes, timestamp delta, offset delta, key length.
        let record = &body[..end];
        let fields = (|| {
            let _attributes = record.get(pos)?;
            pos += 1;
            read_zigzag(record, &mut pos, 10)?;
            read_varint(record, &mut pos)?;
            read_varint(record, &mut pos)
        })();
        let key_len = fields.ok_or(err("malformed record"))?;
        match key_len {
            -1 => keyless.push(i32::try_from(index).map_err(|_| err("too many records"))?),
            n if n >= 0 && pos.checked_add(n as usize).is_some_and(|e| e <= end) => {}
            _ => return Err(err("key extends past the record")),
        }
        pos = end;
    }
    if pos != body.len() {
        return Err(RecordsError::CorruptRecord {
            at,
            index: count,
            reason: "bytes left after the last record",
        });
    }
    Ok(keyless)
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes every complete batch of `blob` (for example a fetched partition's records), with
/// absolute offsets and timestamps (LogAppendTime batches give every record the batch's
/// `max_timestamp`). A trailing partial batch is ignored, as Kafka clients do. Each batch is
/// validated (length, magic, count, CRC) and its body may decompress to at most
/// `max_decompressed` bytes. Control batches are returned like any other (check
/// `header.is_control()`).
pub fn decode_batches(
    blob: &[u8],
    max_decompressed: usize,
) -> Result<Vec<DecodedBatch>, RecordsError> {
    decode_impl(blob, None, max_decompressed)
}

/// Like [`decode_batches`], but keys and values of uncompressed batches are zero-copy slices of
/// `blob`.
pub fn decode_batches_shared(
    blob: &Bytes,
    max_decompressed: usize,
) -> Result<Vec<DecodedBatch>, RecordsError> {
    decode_impl(blob, Some(blob), max_decompressed)
}

fn decode_impl(
    blob: &[u8],
    shared: Option<&Bytes>,
    max_decompressed: usize,
) -> Result<Vec<DecodedBatch>, RecordsError> {
    let mut out = Vec::new();
    for item in batches(blob) {
        let (at, _, bytes) = item?;
        let header = batch::validate(bytes).map_err(|source| RecordsError::Batch { at, source })?;
        let codec = header.compression().ok_or(RecordsError::UnknownCodec {
            at,
            attributes: header.attributes,
        })?;
        let body_range = at + BATCH_HEADER_LEN..at + bytes.len();
        let body: Bytes = match (codec, shared) {
            (Compression::None, Some(all)) => all.slice(body_range),
            (Compression::None, None) => Bytes::copy_from_slice(&bytes[BATCH_HEADER_LEN..]),
            (codec, _) => {
                compression::decompress(codec, &bytes[BATCH_HEADER_LEN..], max_decompressed)
                    .map_err(|source| RecordsError::Compression { at, source })?
                    .into()
            }
        };
        let records = decode_records(&header, &body, at)?;
        out.push(DecodedBatch { header, records });
    }
    Ok(out)
}

fn decode_records(
    header: &BatchHeader,
    body: &Bytes,
    at: usize,
) -> Result<Vec<Record>, RecordsError> {
    // `validate` guarantees records_count >= 0; never reserve more than the bytes can hold.
    let count = usize::try_from(header.records_count).unwrap_or(0);
    let mut records = Vec::with_capacity(count.min(body.len() / MIN_RECORD_LEN));
    let mut cur = Cursor { buf: body, pos: 0 };
    for index in 0..count {
        let err = |reason| RecordsError::CorruptRecord { at, index, reason };
        let len = cur.varint().ok_or(err("bad record length"))?;
        let len = usize::try_from(len).map_err(|_| err("negative record length"))?;
        let end = cur
            .pos
            .checked_add(len)
            .filter(|&e| e <= body.len())
            .ok_or(err("record extends past the batch"))?;
        let bounded = body.slice(..end);
        let mut rec = Cursor {
            buf: &bounded,
            pos: cur.pos,
        };
        let record = parse_record(&mut rec, header).ok_or(err("malformed record"))?;
        if rec.pos != end {
            return Err(err("record length does not match its fields"));
        }
        cur.pos = end;
        records.push(record);
    }
    if cur.pos != body.len() {
        return Err(RecordsError::CorruptRecord {
            at,
            index: count,
            reason: "bytes left after the last record",
        });
    }
    Ok(records)
}

/// Parses one record's fields; `None` on any malformation.
fn parse_record(cur: &mut Cursor<'_>, header: &BatchHeader) -> Option<Record> {
    let _attributes = cur.byte()?;
    let ts_delta = cur.varlong()?;
    let offset_delta = cur.varint()?;
    let key = cur.opt_bytes()?;
    let value = cur.opt_bytes()?;
    let header_count = usize::try_from(cur.varint()?).ok()?;
    // Each header needs at least two bytes.
    let mut headers = Vec::with_capacity(header_count.min(cur.remaining() / 2));
    for _ in 0..header_count {
        let k = cur.opt_bytes()??;
        let v = cur.opt_bytes()?;
        headers.push((String::from_utf8_lossy(&k).into_owned(), v));
    }
    let timestamp = if header.is_log_append_time() {
        header.max_timestamp
    } else {
        header.base_timestamp.wrapping_add(ts_delta)
    };
    Some(Record {
        offset: header.base_offset.wrapping_add(i64::from(offset_delta)),
        timestamp,
        key,
        value,
        headers,
    })
}

/// The zig-zag varint of at most `max_bytes` bytes at `buf[*pos..]`; `pos` moves past it.
fn read_zigzag(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Option<i64> {
    let mut z: u64 = 0;
    for i in 0..max_bytes {
        let b = *buf.get(*pos)?;
        *pos += 1;
        z |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// A zig-zag varint that fits an i32 (at most 5 bytes).
fn read_varint(buf: &[u8], pos: &mut usize) -> Option<i32> {
    i32::try_from(read_zigzag(buf, pos, 5)?).ok()
}

/// A checked reader over a `Bytes` whose slices share its storage.
struct Cursor<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn varlong(&mut self) -> Option<i64> {
        read_zigzag(self.buf, &mut self.pos, 10)
    }

    fn varint(&mut self) -> Option<i32> {
        read_varint(self.buf, &mut self.pos)
    }

    /// A varint length (-1 = null) and that many bytes. `None` = malformed.
    fn opt_bytes(&mut self) -> Option<Option<Bytes>> {
        let len = self.varint()?;
        if len == -1 {
            return Some(None);
        }
        let len = usize::try_from(len).ok()?;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.buf.len())?;
        let b = self.buf.slice(self.pos..end);
        self.pos = end;
        Some(Some(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                offset: 0,
                timestamp: 1_000 + (i as i64 % 7) * 3 - 5,
                key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                value: (i % 5 != 4).then(|| Bytes::from(vec![i as u8; i * 13])),
                headers: (0..i % 3)
                    .map(|h| {
                        (
                            format!("h{h}"),
                            (h % 2 == 0).then(|| Bytes::from(vec![h as u8; h])),
                        )
                    })
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn build_and_decode_round_trip_all_codecs() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let input = sample_records(40);
            let bytes = build_batch(codec, 1_000, &input).unwrap();
            let h = batch::validate(&bytes).unwrap();
            assert_eq!(h.compression(), Some(codec));
            assert_eq!(h.records_count, 40);
            assert_eq!(h.last_offset_delta, 39);
            assert_eq!(
                h.max_timestamp,
                input.iter().map(|r| r.timestamp).max().unwrap()
            );
            assert_eq!(h.producer_id, -1);
            assert_eq!(h.base_sequence, -1);

            let mut stored = bytes.clone();
            batch::assign_offset(&mut stored, 500, 3);
            let decoded = decode_batches(&stored, 1 << 20).unwrap();
            assert_eq!(decoded.len(), 1);
            let expect: Vec<Record> = input
                .iter()
                .enumerate()
                .map(|(i, r)| Record {
                    offset: 500 + i as i64,
                    ..r.clone()
                })
                .collect();
            assert_eq!(decoded[0].records, expect, "{}", codec.name());
            let shared = decode_batches_shared(&Bytes::from(stored), 1 << 20).unwrap();
            assert_eq!(shared, decoded);
        }
    }

    #[test]
    fn idempotent_transactional_fields_and_log_append_time() {
        let mut b = BatchBuilder::new(Compression::None, 10)
            .producer(77, 3, 1000)
            .transactional(true);
        b.push(10, None, Some(b"a"), &[]).unwrap();
        b.push(12, None, Some(b"b"), &[]).unwrap();
        assert_eq!(b.len(), 2);
        let mut bytes = b.build().unwrap();
        let h = batch::validate(&bytes).unwrap();
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (77, 3, 1000)
        );
        assert!(h.is_transactional());
        assert_eq!(h.partition_leader_epoch, -1);
        batch::set_log_append_time(&mut bytes, 99);
        let d = decode_batches(&bytes, 1 << 10).unwrap();
        assert!(d[0].records.iter().all(|r| r.timestamp == 99));
    }

    #[test]
    fn empty_builder_is_refused() {
        assert!(matches!(
            BatchBuilder::new(Compression::None, 0).build(),
            Err(RecordsError::Empty)
        ));
    }

    #[test]
    fn trailing_partial_batch_is_ignored_and_summary_matches() {
        let a = build_batch(Compression::None, 5, &sample_records(3)).unwrap();
        let mut b = build_batch(Compression::Lz4, 5, &sample_records(4)).unwrap();
        batch::assign_offset(&mut b, 3, 0);
        let blob = [a.clone(), b.clone(), b[..30].to_vec()].concat();
        let d = decode_batches(&blob, 1 << 20).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].records[0].offset, 3);
        let s = summarize(&blob).unwrap();
        assert_eq!(
            s,
            BlobSummary {
                batches: 2,
                records: 7,
                complete_bytes: a.len() + b.len(),
                next_offset: Some(7)
            }
        );
        assert_eq!(count_records(&blob[..a.len() + 5]).unwrap(), 3);
    }

    #[test]
    fn corruption_and_decompression_limit_are_errors() {
        let bytes = build_batch(Compression::Zstd, 0, &sample_records(20)).unwrap();
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            decode_batches(&bad, 1 << 20),
            Err(RecordsError::Batch {
                source: BatchError::BadCrc,
                ..
            })
        ));
        assert!(matches!(
            decode_batches(&bytes, 10),
            Err(RecordsError::Compression { .. })
        ));
    }

    #[test]
    fn interoperates_with_batch_build_simple_batch() {
        let b = batch::build_simple_batch(7, 123, &[(Some(b"k"), Some(b"v")), (None, None)]);
        let d = decode_batches(&b, 1 << 10).unwrap();
        assert_eq!(d[0].records.len(), 2);
        assert_eq!(
            d[0].records[1],
            Record {
                offset: 8,
                timestamp: 123,
                ..Default::default()
            }
        );
        assert_eq!(d[0].records[0].key.as_deref(), Some(&b"k"[..]));
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// Recomputes the CRC after a test edited a batch.
    fn fix_crc(b: &mut [u8]) {
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..CRC_START].copy_from_slice(&crc.to_be_bytes());
    }

    fn with_keys(keys: &[Option<&[u8]>]) -> Vec<Record> {
        keys.iter()
            .map(|k| Record {
                key: k.map(Bytes::copy_from_slice),
                value: Some(Bytes::from_static(b"value")),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn keyless_records_are_found_in_every_codec() {
        for codec in CODECS {
            let keyed =
                build_batch(codec, 0, &with_keys(&[Some(b"a"), Some(b""), Some(b"c")])).unwrap();
            assert_eq!(keyless_records(&keyed, 1 << 20).unwrap(), [0i32; 0]);
            let mixed =
                build_batch(codec, 0, &with_keys(&[Some(b"a"), None, Some(b"c"), None])).unwrap();
            assert_eq!(
                keyless_records(&mixed, 1 << 20).unwrap(),
                [1, 3],
                "{codec:?}"
            );
            let none = build_batch(codec, 0, &with_keys(&[None])).unwrap();
            assert_eq!(keyless_records(&none, 1 << 20).unwrap(), [0], "{codec:?}");
            // The same answer as a full decode, with headers, empty and null values.
            let input = sample_records(60);
            let b = build_batch(codec, 1_000, &input).unwrap();
            let want: Vec<i32> = decode_batches(&b, 1 << 20).unwrap()[0]
                .records
                .iter()
                .enumerate()
                .filter(|(_, r)| r.key.is_none())
                .map(|(i, _)| i as i32)
                .collect();
            assert_eq!(want.len(), 20);
            assert_eq!(keyless_records(&b, 1 << 20).unwrap(), want, "{codec:?}");
        }
        // A batch from the other builder.
        let simple = batch::build_simple_batch(5, 0, &[(None, Some(b"v")), (Some(b"k"), None)]);
        assert_eq!(keyless_records(&simple, 0).unwrap(), [0]);
    }

    #[test]
    fn control_batches_are_exempt() {
        let marker = batch::build_control_batch(7, 0, true, 3, 0);
        assert_eq!(keyless_records(&marker, 0).unwrap(), [0i32; 0]);
        // Even one whose record has no key: markers are not checked.
        let mut b = build_batch(Compression::None, 0, &with_keys(&[None])).unwrap();
        b[22] |= batch::CONTROL_BIT as u8;
        fix_crc(&mut b);
        assert!(batch::validate(&b).unwrap().is_control());
        assert_eq!(keyless_records(&b, 0).unwrap(), [0i32; 0]);
    }

    #[test]
    fn malformed_batches_are_errors_not_answers() {
        let keyed = with_keys(&[Some(b"k1"), Some(b"k2")]);
        let good = build_batch(Compression::None, 0, &keyed).unwrap();
        let corrupt = |b: &[u8]| {
            matches!(
                keyless_records(b, 1 << 20),
                Err(RecordsError::CorruptRecord { .. })
            )
        };
        // One byte more or less than the header says.
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(
            keyless_records(&longer, 1 << 20),
            Err(RecordsError::Batch {
                source: BatchError::Truncated,
                ..
            })
        ));
        assert!(keyless_records(&good[..good.len() - 1], 1 << 20).is_err());
        assert!(keyless_records(&good[..30], 1 << 20).is_err());
        // Bytes after the last record, inside the batch.
        let mut trailing = good.clone();
        trailing.push(0);
        let length = (trailing.len() - 12) as i32;
        trailing[8..12].copy_from_slice(&length.to_be_bytes());
        assert!(corrupt(&trailing));
        // More records claimed than there are.
        let mut count = good.clone();
        count[57..61].copy_from_slice(&3i32.to_be_bytes());
        assert!(corrupt(&count));
        // Fewer: the second record is left over.
        let mut fewer = good.clone();
        fewer[57..61].copy_from_slice(&1i32.to_be_bytes());
        assert!(corrupt(&fewer));
        // A key longer than its record: the first record is `len, attr, ts, off, key_len=2`.
        let mut key = good.clone();
        assert_eq!(key[BATCH_HEADER_LEN + 4], 4); // zig-zag 2
        key[BATCH_HEADER_LEN + 4] = 40;
        assert!(corrupt(&key));
        // A record length past the batch, and a negative one.
        let mut len = good.clone();
        len[BATCH_HEADER_LEN] = 0x7e;
        assert!(corrupt(&len));
        len[BATCH_HEADER_LEN] = 1; // -1
        assert!(corrupt(&len));
        // A negative record count.
        let mut negative = good.clone();
        negative[57..61].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(keyless_records(&negative, 1 << 20).is_err());
        // Not magic 2.
        let mut magic = good.clone();
        magic[16] = 1;
        assert!(matches!(
            keyless_records(&magic, 1 << 20),
            Err(RecordsError::Batch {
                source: BatchError::BadMagic(1),
                ..
            })
        ));
        // Codec 7 does not exist.
        let mut codec = good.clone();
        codec[22] |= 7;
        assert!(matches!(
            keyless_records(&codec, 1 << 20),
            Err(RecordsError::UnknownCodec { .. })
        ));
        // A compressed body that is not what its codec says, and one too large once inflated.
        let z = build_batch(Compression::Zstd, 0, &sample_records(30)).unwrap();
        let mut garbage = z.clone();
        for b in &mut garbage[BATCH_HEADER_LEN..] {
            *b = 0x5a;
        }
        assert!(matches!(
            keyless_records(&garbage, 1 << 20),
            Err(RecordsError::Compression {
                source: CompressionError::Corrupt { .. },
                ..
            })
        ));
        assert!(matches!(
            keyless_records(&z, 100),
            Err(RecordsError::Compression {
                source: CompressionError::TooLarge { max: 100 },
                ..
            })
        ));
    }

    #[test]
    fn keyless_records_never_panics_and_agrees_with_decoding() {
        // Deterministic mutations (xorshift) of valid batches, CRC fixed so that decoding
        // looks at the records: no panic, and when decoding succeeds both agree.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds: Vec<Vec<u8>> = [Compression::None, Compression::Lz4]
            .iter()
            .map(|&c| build_batch(c, 0, &sample_records(12)).unwrap())
            .collect();
        let mut agreed = 0;
        for round in 0..20_000 {
            let mut b = seeds[round % seeds.len()].clone();
            for _ in 0..1 + next() % 3 {
                let at = BATCH_HEADER_LEN + (next() as usize) % (b.len() - BATCH_HEADER_LEN);
                b[at] = next() as u8;
            }
            fix_crc(&mut b);
            let walked = keyless_records(&b, 1 << 16);
            if let Ok(decoded) = decode_batches(&b, 1 << 16) {
                let want: Vec<i32> = decoded[0]
                    .records
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.key.is_none())
                    .map(|(i, _)| i as i32)
                    .collect();
                assert_eq!(walked.unwrap(), want, "round {round}");
                agreed += 1;
            }
        }
        assert!(agreed > 100, "{agreed}");
    }

    #[test]
    fn varint_size_matches_encoding() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            batch::put_varlong(&mut out, v);
            assert_eq!(varint_size(v), out.len(), "{v}");
        }
    }
}
