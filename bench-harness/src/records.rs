//! Consumer-side reading of fetched record batches, decoding only what is needed.
//!
//! Counting records and bytes needs only the 61-byte batch headers
//! (`shardlog_protocol::records::batches` walks them). End-to-end latency needs the first
//! 8 bytes of each value, so [`Decoder::visit_batch`] walks the records' varints in place (after
//! decompressing the body with `shardlog_protocol::compression`) and hands key and value
//! slices to a visitor: nothing is allocated per record.

use anyhow::{anyhow, bail, Result};
use shardlog_protocol::batch::{Compression, BATCH_HEADER_LEN};
use shardlog_protocol::compression::decompress;

/// Largest decompressed batch body accepted (a hostile or corrupt batch must not expand
/// without bound).
pub const DECOMPRESSED_MAX: usize = 256 << 20;

/// Receives each record of a batch.
pub trait RecordVisitor {
    /// `offset_delta` is the record's offset minus the batch's base offset.
    fn record(&mut self, offset_delta: i64, key: Option<&[u8]>, value: Option<&[u8]>);
}

/// Decodes record bodies; holds the last decompressed body.
#[derive(Default)]
pub struct Decoder {
    body: Vec<u8>,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<i64> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos).ok_or_else(|| anyhow!("record truncated"))?;
        *pos += 1;
        z |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            bail!("varint too long");
        }
    }
    Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
}

fn bytes_field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>> {
    let len = varint(buf, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let end = pos.checked_add(len as usize).filter(|&e| e <= buf.len());
    let end = end.ok_or_else(|| anyhow!("record field truncated"))?;
    let s = &buf[*pos..end];
    *pos = end;
    Ok(Some(s))
}

impl Decoder {
    /// Visits every record of one whole batch (as returned by [`batches`]).
    pub fn visit_batch(&mut self, batch: &[u8], v: &mut impl RecordVisitor) -> Result<()> {
        if batch.len() < BATCH_HEADER_LEN {
            bail!("record batch truncated");
        }
        let attributes = i16::from_be_bytes([batch[21], batch[22]]);
        if attributes & 0x20 != 0 {
            return Ok(()); // control batch: transaction markers, no user records
        }
        let count = i32::from_be_bytes(batch[57..61].try_into().expect("4 bytes")).max(0);
        let raw = &batch[BATCH_HEADER_LEN..];
        let codec = Compression::from_attributes(attributes)
            .ok_or_else(|| anyhow!("unknown compression codec in attributes {attributes:#x}"))?;
        let body: &[u8] = if codec == Compression::None {
            raw
        } else {
            self.body = decompress(codec, raw, DECOMPRESSED_MAX)?;
            &self.body
        };
        let mut pos = 0usize;
        for _ in 0..count {
            let len = varint(body, &mut pos)?;
            let end = pos
                .checked_add(len.max(0) as usize)
                .filter(|&e| e <= body.len());
            let end = end.ok_or_else(|| anyhow!("record truncated"))?;
            let rec = &body[..end];
            let mut p = pos + 1; // attributes
            varint(rec, &mut p)?; // timestamp delta
            let offset_delta = varint(rec, &mut p)?;
            let key = bytes_field(rec, &mut p)?;
            let value = bytes_field(rec, &mut p)?;
            v.record(offset_delta, key, value);
            pos = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use shardlog_protocol::records::batches;

    #[test]
    fn walks_whole_batches_and_stops_at_a_partial_one() {
        let a = shardlog_protocol::batch::build_simple_batch(10, 1, &[(None, Some(b"x"))]);
        let b = shardlog_protocol::batch::build_simple_batch(
            11,
            1,
            &[(Some(b"k"), Some(b"y")), (None, None)],
        );
        let mut blob = [a.clone(), b.clone()].concat();
        blob.extend_from_slice(&b[..20]);
        let got: Vec<_> = batches(&blob).map(|r| r.unwrap().1).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (
                got[0].base_offset,
                got[0].last_offset(),
                got[0].records_count
            ),
            (10, 10, 1)
        );
        assert_eq!(
            (
                got[1].base_offset,
                got[1].last_offset(),
                got[1].records_count
            ),
            (11, 12, 2)
        );
        assert_eq!(got[1].total_len(), b.len());

        struct Count(usize, usize);
        impl RecordVisitor for Count {
            fn record(&mut self, _: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
                self.0 += key.map_or(0, |k| k.len());
                self.1 += value.map_or(0, |v| v.len());
            }
        }
        let mut c = Count(0, 0);
        Decoder::default().visit_batch(&b, &mut c).unwrap();
        assert_eq!((c.0, c.1), (1, 1));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = Decoder::default();
        struct Nop;
        impl RecordVisitor for Nop {
            fn record(&mut self, _: i64, _: Option<&[u8]>, _: Option<&[u8]>) {}
        }
        let good = shardlog_protocol::batch::build_simple_batch(0, 1, &[(None, Some(b"abc"))]);
        for cut in 0..good.len() {
            let _ = batches(&good[..cut]).count();
            let mut bad = good.clone();
            bad[cut] ^= 0xff;
            for (_, _, b) in batches(&bad).flatten() {
                let _ = d.visit_batch(b, &mut Nop);
            }
        }
    }
}
