//! Record-batch body compression: gzip, snappy, lz4 and zstd as Kafka clients write them.
//!
//! The body of a v2 record batch (everything after the 61-byte header) is compressed as one
//! unit with the codec named by attribute bits 0-2. This module owns the codecs' wire
//! variants:
//!
//! - gzip: an RFC 1952 stream (flate2). Decoding accepts concatenated members, as Java's
//!   `GZIPInputStream` does.
//! - snappy: the Java client writes snappy-java's "xerial" framing (`\x82SNAPPY\0`, version,
//!   compatible version, then blocks of `[u32 BE length][raw snappy block]`); librdkafka and
//!   others may write a bare raw snappy block. [`decompress`] reads both (and concatenated xerial
//!   streams, as snappy-java does); [`compress`] writes xerial with 32 KiB blocks, like the Java
//!   client and `kafka-protocol`.
//! - lz4: the LZ4 *frame* format with independent blocks (Kafka's reader refuses linked blocks),
//!   64 KiB blocks, no content checksum, as Kafka's `KafkaLZ4BlockOutputStream` writes.
//! - zstd: one zstd frame, level 3 (the zstd default Kafka uses).
//!
//! [`decompress`] takes `max_out` and stops with [`CompressionError::TooLarge`] as soon as the
//! output would exceed it, so a small hostile body cannot expand into gigabytes. Nothing here
//! panics on bad input.

use std::io::{Read, Write};

use thiserror::Error;

use crate::batch::Compression;

/// The 8-byte magic at the start of a snappy-java ("xerial") stream.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
/// Full xerial header: magic, version 1, compatible version 1 (both i32 BE).
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\0\0\0\0\x01\0\0\0\x01";
/// snappy-java's default block size.
const XERIAL_BLOCK: usize = 32 * 1024;
/// zstd level used by Kafka clients by default.
const ZSTD_LEVEL: i32 = 3;

/// Why a body could not be compressed or decompressed.
#[derive(Debug, Error)]
pub enum CompressionError {
    /// The decompressed output would exceed the caller's limit.
    #[error("decompressed data exceeds the limit of {max} bytes")]
    TooLarge { max: usize },
    /// The compressed bytes are not valid for the codec.
    #[error("invalid {codec} data: {detail}")]
    Corrupt { codec: &'static str, detail: String },
    /// The codec failed while compressing.
    #[error("{codec} compression failed: {detail}")]
    Compress { codec: &'static str, detail: String },
}

fn corrupt(codec: &'static str, detail: impl ToString) -> CompressionError {
    CompressionError::Corrupt {
        codec,
        detail: detail.to_string(),
    }
}

fn compress_failed(codec: &'static str, detail: impl ToString) -> CompressionError {
    CompressionError::Compress {
        codec,
        detail: detail.to_string(),
    }
}

/// Compresses `data` with `codec` (`None` returns a copy).
pub fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2 + 64),
                flate2::Compression::default(),
            );
            enc.write_all(data)
                .map_err(|e| compress_failed("gzip", e))?;
            enc.finish().map_err(|e| compress_failed("gzip", e))
        }
        Compression::Snappy => snappy_xerial_compress(data),
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .block_size(lz4_flex::frame::BlockSize::Max64KB);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(
                info,
                Vec::with_capacity(data.len() / 2 + 64),
            );
            enc.write_all(data).map_err(|e| compress_failed("lz4", e))?;
            enc.finish().map_err(|e| compress_failed("lz4", e))
        }
        Compression::Zstd => {
            zstd::bulk::compress(data, ZSTD_LEVEL).map_err(|e| compress_failed("zstd", e))
        }
    }
}

/// Decompresses `data` with `codec`, refusing output larger than `max_out` bytes.
pub fn decompress(
    codec: Compression,
    data: &[u8],
    max_out: usize,
) -> Result<Vec<u8>, CompressionError> {
    match codec {
        Compression::None => {
            if data.len() > max_out {
                return Err(CompressionError::TooLarge { max: max_out });
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => read_bounded(
            "gzip",
            flate2::read::MultiGzDecoder::new(data),
            data.len(),
            max_out,
        ),
        Compression::Snappy => snappy_decompress(data, max_out),
        Compression::Lz4 => read_bounded(
            "lz4",
            lz4_flex::frame::FrameDecoder::new(data),
            data.len(),
            max_out,
        ),
        Compression::Zstd => {
            let mut dec =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|e| corrupt("zstd", e))?;
            // The window is allocated from the frame header, before any output: cap it near
            // `max_out` (but allow the 2-8 MiB windows streaming compressors use by default).
            dec.window_log_max(zstd_window_log_max(max_out))
                .map_err(|e| corrupt("zstd", e))?;
            read_bounded("zstd", dec, data.len(), max_out)
        }
    }
}

/// log2 of the largest zstd window accepted when at most `max_out` bytes may come out:
/// between 2^23 (8 MiB) and 2^27 (zstd's own default limit).
fn zstd_window_log_max(max_out: usize) -> u32 {
    let needed = usize::BITS - max_out.saturating_sub(1).leading_zeros();
    needed.clamp(23, 27)
}

/// Reads a decoder to the end, at most `max_out` bytes.
fn read_bounded(
    codec: &'static str,
    reader: impl Read,
    input_len: usize,
    max_out: usize,
) -> Result<Vec<u8>, CompressionError> {
    let limit = u64::try_from(max_out).unwrap_or(u64::MAX).saturating_add(1);
    // A guess at the ratio; the Vec grows as needed but never beyond `max_out + 1`.
    let mut out = Vec::with_capacity(input_len.saturating_mul(4).min(max_out).min(1 << 20));
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, e))?;
    if out.len() > max_out {
        return Err(CompressionError::TooLarge { max: max_out });
    }
    Ok(out)
}

fn snappy_xerial_compress(data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let blocks = data.len().div_ceil(XERIAL_BLOCK);
    let mut out = Vec::with_capacity(
        XERIAL_HEADER.len() + blocks * 4 + snap::raw::max_compress_len(data.len()),
    );
    out.extend_from_slice(XERIAL_HEADER);
    let mut enc = snap::raw::Encoder::new();
    for block in data.chunks(XERIAL_BLOCK) {
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        out.resize(start + snap::raw::max_compress_len(block.len()), 0);
        let n = enc
            .compress(block, &mut out[start..])
            .map_err(|e| compress_failed("snappy", e))?;
        out.truncate(start + n);
        let n32 = u32::try_from(n).map_err(|e| compress_failed("snappy", e))?;
        out[len_at..start].copy_from_slice(&n32.to_be_bytes());
    }
    Ok(out)
}

fn snappy_decompress(data: &[u8], max_out: usize) -> Result<Vec<u8>, CompressionError> {
    if !data.starts_with(XERIAL_MAGIC) {
        // A bare raw block, as snappy-java also falls back to.
        let mut out = Vec::new();
        snappy_raw_into(data, max_out, &mut out)?;
        return Ok(out);
    }
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        // A (possibly repeated, for concatenated streams) header. A block length can never
        // start with 0x82 (that would be over 2 GiB), so the magic is unambiguous.
        if rest.starts_with(XERIAL_MAGIC) {
            if rest.len() < XERIAL_HEADER.len() {
                return Err(corrupt("snappy", "truncated xerial header"));
            }
            rest = &rest[XERIAL_HEADER.len()..];
            continue;
        }
        if rest.is_empty() {
            return Ok(out);
        }
        let Some(len_bytes) = rest.get(..4) else {
            return Err(corrupt("snappy", "truncated xerial block length"));
        };
        let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let len = usize::try_from(len).map_err(|e| corrupt("snappy", e))?;
        let Some(block) = rest.get(4..4usize.saturating_add(len)) else {
            return Err(corrupt("snappy", "truncated xerial block"));
        };
        snappy_raw_into(block, max_out, &mut out)?;
        rest = &rest[4 + len..];
    }
}

/// Appends one raw snappy block to `out`, checking the declared length against `max_out` before
/// allocating.
fn snappy_raw_into(
    block: &[u8],
    max_out: usize,
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    let n = snap::raw::decompress_len(block).map_err(|e| corrupt("snappy", e))?;
    if n > max_out.saturating_sub(out.len()) {
        return Err(CompressionError::TooLarge { max: max_out });
    }
    let start = out.len();
    out.resize(start + n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt("snappy", e))?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial.
        (0..len)
            .map(|i| ((i * 7) % 251) as u8 ^ ((i / 1000) as u8))
            .collect()
    }

    #[test]
    fn round_trip_every_codec_and_size() {
        for codec in ALL {
            for len in [
                0,
                1,
                100,
                XERIAL_BLOCK - 1,
                XERIAL_BLOCK,
                XERIAL_BLOCK + 1,
                300_000,
            ] {
                let data = sample(len);
                let packed = compress(codec, &data).unwrap();
                let unpacked = decompress(codec, &packed, data.len()).unwrap();
                assert_eq!(unpacked, data, "{} len {len}", codec.name());
            }
        }
    }

    #[test]
    fn output_limit_is_enforced() {
        let data = vec![0u8; 1 << 20];
        for codec in ALL {
            let packed = compress(codec, &data).unwrap();
            match decompress(codec, &packed, (1 << 20) - 1) {
                Err(CompressionError::TooLarge { max }) => assert_eq!(max, (1 << 20) - 1),
                other => panic!("{}: expected TooLarge, got {other:?}", codec.name()),
            }
        }
    }

    #[test]
    fn snappy_writes_xerial_and_reads_raw_and_concatenated() {
        let data = sample(70_000);
        let packed = compress(Compression::Snappy, &data).unwrap();
        assert_eq!(&packed[..16], XERIAL_HEADER);
        // Three blocks: 32 KiB, 32 KiB, rest; each a valid raw block behind its length.
        let first_len = u32::from_be_bytes(packed[16..20].try_into().unwrap()) as usize;
        let first = snap::raw::Decoder::new()
            .decompress_vec(&packed[20..20 + first_len])
            .unwrap();
        assert_eq!(first, &data[..XERIAL_BLOCK]);

        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, data.len()).unwrap(),
            data
        );

        let twice = [packed.clone(), packed].concat();
        let both = decompress(Compression::Snappy, &twice, 2 * data.len()).unwrap();
        assert_eq!(both, [data.clone(), data].concat());
    }

    #[test]
    fn lz4_frame_has_independent_blocks() {
        let packed = compress(Compression::Lz4, &sample(1000)).unwrap();
        assert_eq!(&packed[..4], &[0x04, 0x22, 0x4d, 0x18], "LZ4 frame magic");
        let flg = packed[4];
        assert_eq!(flg >> 6, 1, "frame version 01");
        assert_ne!(flg & 0x20, 0, "block independence flag");
        assert_eq!(flg & 0x04, 0, "no content checksum");
    }

    #[test]
    fn gzip_reads_concatenated_members() {
        let a = compress(Compression::Gzip, b"hello ").unwrap();
        let b = compress(Compression::Gzip, b"world").unwrap();
        let out = decompress(Compression::Gzip, &[a, b].concat(), 100).unwrap();
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let valid: Vec<(Compression, Vec<u8>)> = ALL
            .iter()
            .map(|&c| (c, compress(c, &sample(5000)).unwrap()))
            .collect();
        for i in 0..4000 {
            let (codec, good) = &valid[i % valid.len()];
            let mut buf = good.clone();
            for _ in 0..rng.gen_range(1..4) {
                if buf.is_empty() {
                    break;
                }
                let at = rng.gen_range(0..buf.len());
                buf[at] = rng.gen();
            }
            let cut = rng.gen_range(0..=buf.len());
            if let Ok(out) = decompress(*codec, &buf[..cut], 10_000) {
                assert!(out.len() <= 10_000);
            }
        }
        let junk = b"\x82SNAPPY\0\0\0\0\x01\0\0\0\x01\xff\xff\xff\xff";
        for codec in ALL {
            assert!(decompress(codec, junk, 10).is_err(), "{}", codec.name());
        }
    }
}
