//! The record codec as the tool uses it: a thin layer over `shardlog_protocol::records` (the
//! project's shared batch building and decoding) with the tool's limits.

use shardlog_protocol::batch::Compression;
use shardlog_protocol::records::{self, Record, RecordsError};

use crate::cli::CompressionArg;

/// Largest decompressed batch body accepted when decoding (a hostile or damaged batch must not
/// expand into gigabytes).
pub const DECOMPRESSED_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The records of the whole batches in `blob` (one batch, or a fetched partition's records).
/// Validates every batch (length, magic, count, CRC) and ignores a trailing partial batch.
pub fn decode_batch_records(blob: &[u8]) -> Result<Vec<Record>, RecordsError> {
    Ok(records::decode_batches(blob, DECOMPRESSED_BYTES_MAX)?
        .into_iter()
        .filter(|b| !b.header.is_control())
        .flat_map(|b| b.records)
        .collect())
}

pub fn compression(arg: CompressionArg) -> Compression {
    match arg {
        CompressionArg::None => Compression::None,
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Snappy => Compression::Snappy,
        CompressionArg::Lz4 => Compression::Lz4,
        CompressionArg::Zstd => Compression::Zstd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog_protocol::records::BatchBuilder;

    #[test]
    fn every_codec_round_trips_through_the_shared_codec() {
        for arg in [
            CompressionArg::None,
            CompressionArg::Gzip,
            CompressionArg::Snappy,
            CompressionArg::Lz4,
            CompressionArg::Zstd,
        ] {
            let mut b = BatchBuilder::new(compression(arg), 1_000);
            b.push(1_000, Some(b"k"), Some(b"hello"), &[("h", Some(b"1"))])
                .unwrap();
            b.push(1_005, None, None, &[]).unwrap();
            let bytes = b.build().unwrap();
            let records = decode_batch_records(&bytes).unwrap();
            assert_eq!(records.len(), 2, "{arg:?}");
            assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));
            assert_eq!(records[0].headers[0].0, "h");
            assert_eq!(records[1].offset, 1);
            assert_eq!(records[1].timestamp, 1_005);
            assert_eq!(records[1].key, None);
        }
    }
}
