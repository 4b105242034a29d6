//! A stored record batch seen record by record, for the log cleaner: which records it holds
//! (offset, timestamp, key, whether the value is null) and the same batch rebuilt with only some
//! of them.
//!
//! A rebuilt batch is Kafka's (`MemoryRecords.filterTo` for magic v2): the base offset, the last
//! offset delta, the base timestamp, the producer id, epoch and base sequence, the partition
//! leader epoch and the attributes stay; each kept record keeps its bytes exactly (so its offset
//! and timestamp deltas still point at the same offset and time); the record count, the length,
//! the max timestamp (CreateTime: the largest kept record's) and the CRC are recomputed; the body
//! is compressed again with the batch's codec. A batch left with no record keeps its header (an
//! empty batch, uncompressed, max timestamp unchanged): Kafka writes those too, so that the
//! offsets it covers and its producer's last sequence stay known.

use std::ops::Range;

use crate::batch::{self, BatchHeader, Compression, BATCH_HEADER_LEN, LOG_OVERHEAD};
use crate::compression;
use crate::records::RecordsError;

/// One record of a stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Absolute offset.
    pub offset: i64,
    /// Absolute timestamp (the batch's max timestamp for LogAppendTime batches).
    pub timestamp: i64,
    /// Where the key is in `StoredBatch::body`; `None` for a null key.
    pub key: Option<Range<usize>>,
    /// The value is null (a tombstone when the record has a key).
    pub null_value: bool,
    /// The record's bytes in the body, its length prefix included.
    bytes: Range<usize>,
}

/// A stored batch: header and decompressed body, records located.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    pub header: BatchHeader,
    head: [u8; BATCH_HEADER_LEN],
    body: Vec<u8>,
    pub records: Vec<StoredRecord>,
}

impl StoredBatch {
    /// Validates `batch` (exactly one whole batch: length, magic, count, CRC), decompresses its
    /// body (at most `max_decompressed` bytes) and locates its records.
    pub fn parse(batch: &[u8], max_decompressed: usize) -> Result<StoredBatch, RecordsError> {
        let header =
            batch::validate(batch).map_err(|source| RecordsError::Batch { at: 0, source })?;
        let codec = header.compression().ok_or(RecordsError::UnknownCodec {
            at: 0,
            attributes: header.attributes,
        })?;
        let raw = &batch[BATCH_HEADER_LEN..];
        let body = match codec {
            Compression::None => raw.to_vec(),
            codec => compression::decompress(codec, raw, max_decompressed)
                .map_err(|source| RecordsError::Compression { at: 0, source })?,
        };
        let records = locate_records(&header, &body)?;
        let mut head = [0u8; BATCH_HEADER_LEN];
        head.copy_from_slice(&batch[..BATCH_HEADER_LEN]);
        Ok(StoredBatch {
            header,
            head,
            body,
            records,
        })
    }

    /// The key bytes of `record` (one of `self.records`).
    pub fn key(&self, record: &StoredRecord) -> Option<&[u8]> {
        record.key.clone().map(|r| &self.body[r])
    }

    /// The batch with only the records for which `keep[i]` is true (`keep` has one flag per
    /// record). See the module documentation for what changes.
    pub fn rebuild(&self, keep: &[bool]) -> Result<Vec<u8>, RecordsError> {
        assert_eq!(keep.len(), self.records.len(), "one flag per record");
        let kept: Vec<&StoredRecord> = self
            .records
            .iter()
            .zip(keep)
            .filter_map(|(r, k)| k.then_some(r))
            .collect();
        let mut head = self.head;
        let mut attributes = self.header.attributes;
        let body = if kept.is_empty() {
            attributes &= !0x07;
            Vec::new()
        } else {
            let mut plain = Vec::with_capacity(kept.iter().map(|r| r.bytes.len()).sum());
            for r in &kept {
                plain.extend_from_slice(&self.body[r.bytes.clone()]);
            }
            let codec = self.header.compression().expect("checked at parse");
            match codec {
                Compression::None => plain,
                codec => compression::compress(codec, &plain)
                    .map_err(|source| RecordsError::Compression { at: 0, source })?,
            }
        };
        let max_timestamp = if kept.is_empty() || self.header.is_log_append_time() {
            self.header.max_timestamp
        } else {
            kept.iter().map(|r| r.timestamp).max().expect("not empty")
        };
        let batch_length = i32::try_from(BATCH_HEADER_LEN - LOG_OVERHEAD + body.len())
            .map_err(|_| RecordsError::Unencodable("batch longer than i32::MAX"))?;
        head[8..12].copy_from_slice(&batch_length.to_be_bytes());
        head[21..23].copy_from_slice(&attributes.to_be_bytes());
        head[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
        head[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
        let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&body);
        batch::set_crc(&mut out);
        Ok(out)
    }
}

/// Walks the records of a decompressed body: length prefix, attributes, timestamp delta, offset
/// delta, key, value, headers (skipped whole through the length prefix).
fn locate_records(header: &BatchHeader, body: &[u8]) -> Result<Vec<StoredRecord>, RecordsError> {
    let count = usize::try_from(header.records_count).unwrap_or(0);
    // A record takes at least 7 bytes: never reserve more than the body can hold.
    let mut out = Vec::with_capacity(count.min(body.len() / 7));
    let mut at = 0usize;
    for index in 0..count {
        let err = |reason| RecordsError::CorruptRecord {
            at: 0,
            index,
            reason,
        };
        let start = at;
        let len = batch::get_varlong(body, &mut at).ok_or(err("bad record length"))?;
        let len = usize::try_from(len).map_err(|_| err("negative record length"))?;
        let end = at
            .checked_add(len)
            .filter(|&e| e <= body.len())
            .ok_or(err("record extends past the batch"))?;
        let rec = &body[..end];
        let mut p = at + 1; // attributes
        let ts_delta = batch::get_varlong(rec, &mut p).ok_or(err("bad timestamp delta"))?;
        let offset_delta = batch::get_varlong(rec, &mut p).ok_or(err("bad offset delta"))?;
        let key = opt_bytes(rec, &mut p).ok_or(err("bad key"))?;
        let value = opt_bytes(rec, &mut p).ok_or(err("bad value"))?;
        let timestamp = if header.is_log_append_time() {
            header.max_timestamp
        } else {
            header.base_timestamp.wrapping_add(ts_delta)
        };
        out.push(StoredRecord {
            offset: header.base_offset.wrapping_add(offset_delta),
            timestamp,
            key,
            null_value: value.is_none(),
            bytes: start..end,
        });
        at = end;
    }
    if at != body.len() {
        return Err(RecordsError::CorruptRecord {
            at: 0,
            index: count,
            reason: "bytes left after the last record",
        });
    }
    Ok(out)
}

/// A varint length (-1 = null) and that many bytes, as a range of `buf`. `None` = malformed.
fn opt_bytes(buf: &[u8], at: &mut usize) -> Option<Option<Range<usize>>> {
    let len = batch::get_varlong(buf, at)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let end = at.checked_add(len).filter(|&e| e <= buf.len())?;
    let r = *at..end;
    *at = end;
    Some(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{decode_batches, BatchBuilder};

    fn sample(codec: Compression) -> Vec<u8> {
        let mut b = BatchBuilder::new(codec, 1_000)
            .producer(7, 1, 40)
            .base_offset(100);
        b.push(1_000, Some(b"a"), Some(b"1"), &[]).unwrap();
        b.push(1_005, Some(b"b"), None, &[("h", Some(b"x"))])
            .unwrap();
        b.push(1_002, None, Some(b"3"), &[]).unwrap();
        b.push(1_009, Some(b"a"), Some(b"4"), &[]).unwrap();
        b.build().unwrap()
    }

    #[test]
    fn parse_locates_every_record() {
        for codec in [
            Compression::None,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Gzip,
        ] {
            let bytes = sample(codec);
            let s = StoredBatch::parse(&bytes, 1 << 20).unwrap();
            let offsets: Vec<i64> = s.records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, vec![100, 101, 102, 103]);
            let keys: Vec<Option<&[u8]>> = s.records.iter().map(|r| s.key(r)).collect();
            assert_eq!(keys, vec![Some(&b"a"[..]), Some(b"b"), None, Some(b"a")]);
            let nulls: Vec<bool> = s.records.iter().map(|r| r.null_value).collect();
            assert_eq!(nulls, vec![false, true, false, false]);
            assert_eq!(s.records[3].timestamp, 1_009);
        }
    }

    #[test]
    fn rebuild_keeps_offsets_codec_and_producer() {
        for codec in [
            Compression::None,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = sample(codec);
            let s = StoredBatch::parse(&bytes, 1 << 20).unwrap();
            let out = s.rebuild(&[false, true, false, true]).unwrap();
            let h = batch::validate(&out).unwrap();
            assert_eq!(h.compression(), Some(codec));
            assert_eq!((h.base_offset, h.last_offset()), (100, 103));
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (7, 1, 40)
            );
            assert_eq!((h.records_count, h.max_timestamp), (2, 1_009));
            let decoded = decode_batches(&out, 1 << 20).unwrap();
            let recs = &decoded[0].records;
            assert_eq!(recs.len(), 2);
            assert_eq!((recs[0].offset, recs[0].value.clone()), (101, None));
            assert_eq!(recs[0].headers.len(), 1);
            assert_eq!((recs[1].offset, recs[1].timestamp), (103, 1_009));
            assert_eq!(recs[1].value.as_deref(), Some(&b"4"[..]));
        }
    }

    #[test]
    fn rebuild_of_everything_is_the_original_and_of_nothing_an_empty_batch() {
        let bytes = sample(Compression::None);
        let s = StoredBatch::parse(&bytes, 1 << 20).unwrap();
        assert_eq!(s.rebuild(&[true; 4]).unwrap(), bytes);
        let lz = sample(Compression::Lz4);
        let s = StoredBatch::parse(&lz, 1 << 20).unwrap();
        let empty = s.rebuild(&[false; 4]).unwrap();
        let h = batch::validate(&empty).unwrap();
        assert_eq!(empty.len(), BATCH_HEADER_LEN);
        assert_eq!(
            (h.records_count, h.base_offset, h.last_offset()),
            (0, 100, 103)
        );
        assert_eq!(h.compression(), Some(Compression::None));
        assert_eq!(h.max_timestamp, s.header.max_timestamp);
    }

    #[test]
    fn corrupt_bodies_are_errors_not_panics() {
        let mut bytes = sample(Compression::None);
        let n = bytes.len();
        bytes[n - 3] ^= 0xff;
        assert!(StoredBatch::parse(&bytes, 1 << 20).is_err());
        // A valid CRC over garbage records.
        let mut bytes = sample(Compression::None);
        for b in &mut bytes[BATCH_HEADER_LEN..] {
            *b = 0xff;
        }
        batch::set_crc(&mut bytes);
        assert!(StoredBatch::parse(&bytes, 1 << 20).is_err());
    }
}
