//! The payload pool: record batches built once before the run and patched per send.
//!
//! The hot loop never builds a record. Each partition owns a few pre-encoded batch templates of
//! `records_per_batch` records (random or text values, keys from the configured distribution
//! that hash to that partition). Sending `n` records copies the first `n` records of a template
//! (records are back to back, so any prefix is a valid batch body), writes each value's first
//! 8 bytes (the intended send time, ns since the Unix epoch), patches the header fields that
//! depend on `n` and the time, and recomputes the CRC. Compressed batches compress the patched
//! body with `shardlog_protocol::compression` (one output buffer per batch, nothing per record),
//! as a real producer compresses each batch it sends.
//!
//! Partition choice follows the keys: Kafka's default partitioner maps a key to
//! `murmur2(key) & 0x7fffffff % partitions`, so a skewed key distribution loads partitions
//! unevenly. [`PartitionCycle`] turns the resulting partition weights into a fixed, smooth
//! sequence; null keys give round robin (Kafka's sticky partitioner, one batch per partition).

use crate::cli::{Codec, KeyDist, PayloadKind, KEY_LEN};
use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
pub use shardlog_client::txn::TRANSACTIONAL_BIT;
use shardlog_protocol::batch::Compression;
use shardlog_protocol::compression::compress;

/// Fixed record batch v2 header size.
pub const BATCH_HEADER_LEN: usize = 61;
const CRC_START: usize = 21;
/// Bytes of the value that carry the intended send time.
pub const TIMESTAMP_LEN: usize = 8;
/// The pool aims at this many bytes of templates in all...
const POOL_BYTES_TARGET: usize = 64 << 20;
/// ...and refuses configurations that would need more than this with one template each.
const POOL_BYTES_MAX: usize = 512 << 20;
const TEMPLATES_PER_PARTITION_MAX: usize = 8;

pub use shardlog_protocol::partitioner::murmur2;

/// Kafka's default partition for a keyed record.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// The fixed-width key for key number `k`.
pub fn key_bytes(k: u64) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    let s = format!("key-{:012}", k % 1_000_000_000_000);
    out.copy_from_slice(s.as_bytes());
    out
}

/// Draws key numbers from a distribution. Zipf uses the continuous inverse-CDF approximation,
/// which needs no table and keeps the skew of the discrete law closely enough for load shaping.
pub struct KeySampler {
    dist: KeyDist,
}

impl KeySampler {
    pub fn new(dist: KeyDist) -> KeySampler {
        KeySampler { dist }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> Option<u64> {
        match self.dist {
            KeyDist::None => None,
            KeyDist::Uniform { n } => Some(rng.gen_range(0..n)),
            KeyDist::Zipf { n, s } => {
                let u: f64 = rng.gen();
                let top = (n + 1) as f64;
                let x = if (s - 1.0).abs() < 1e-9 {
                    top.powf(u)
                } else {
                    let e = 1.0 - s;
                    (1.0 + u * (top.powf(e) - 1.0)).powf(1.0 / e)
                };
                Some((x.floor() as u64).saturating_sub(1).min(n - 1))
            }
        }
    }
}

/// A fixed cyclic sequence of partitions whose frequencies follow given weights, spread
/// evenly (stride scheduling): each step picks the partition with the most accumulated credit.
#[derive(Debug, Clone)]
pub struct PartitionCycle {
    seq: Vec<i32>,
}

impl PartitionCycle {
    pub fn from_weights(weights: &[f64]) -> PartitionCycle {
        let p = weights.len();
        assert!(p > 0);
        let total: f64 = weights.iter().sum();
        if total <= 0.0 || weights.iter().all(|w| (w - weights[0]).abs() < 1e-12) {
            return PartitionCycle {
                seq: (0..p as i32).collect(),
            };
        }
        let len = (p * 32).clamp(64, 65_536);
        let share: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let mut credit = vec![0.0f64; p];
        let mut seq = Vec::with_capacity(len);
        for _ in 0..len {
            for (c, s) in credit.iter_mut().zip(&share) {
                *c += s;
            }
            let (best, _) = credit
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.partial_cmp(b.1).expect("finite"))
                .expect("non-empty");
            credit[best] -= 1.0;
            seq.push(best as i32);
        }
        PartitionCycle { seq }
    }

    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn at(&self, i: usize) -> i32 {
        self.seq[i % self.seq.len()]
    }
}

/// One pre-encoded batch of `record_ends.len()` records for one partition.
#[derive(Debug, Clone)]
pub struct Template {
    pub partition: i32,
    /// A complete uncompressed batch (header with placeholders, then the records).
    bytes: Vec<u8>,
    /// End of record `i` within `bytes`.
    record_ends: Vec<u32>,
    /// Start of record `i`'s value within `bytes`.
    value_starts: Vec<u32>,
}

impl Template {
    pub fn records(&self) -> usize {
        self.record_ends.len()
    }
}

/// Everything a producer connection needs to send: templates per partition and the cycle.
pub struct PayloadPool {
    pub records_per_batch: usize,
    templates: Vec<Vec<Template>>,
    pub cycle: PartitionCycle,
}

/// Parameters of the pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSpec {
    pub partitions: i32,
    pub record_size: usize,
    pub records_per_batch: usize,
    pub keys: KeyDist,
    pub payload: PayloadKind,
    pub codec: Codec,
    pub seed: u64,
}

const WORDS: &[&str] = &[
    "broker",
    "partition",
    "offset",
    "segment",
    "leader",
    "replica",
    "fetch",
    "produce",
    "batch",
    "record",
    "shard",
    "core",
    "latency",
    "index",
    "consumer",
    "group",
    "epoch",
    "commit",
    "log",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "on",
    "at",
    "ok",
    "error",
    "info",
    "warn",
    "debug",
    "request",
    "response",
    "user",
    "id",
    "time",
    "value",
    "key",
    "topic",
    "event",
    "order",
];

fn fill_value(buf: &mut [u8], kind: PayloadKind, rng: &mut impl Rng) {
    match kind {
        PayloadKind::Random => rng.fill(buf),
        PayloadKind::Text => {
            let mut i = 0;
            while i < buf.len() {
                let w = WORDS[rng.gen_range(0..WORDS.len())].as_bytes();
                for &b in w.iter().chain(b" ") {
                    if i == buf.len() {
                        break;
                    }
                    buf[i] = b;
                    i += 1;
                }
            }
        }
    }
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn build_template(
    partition: i32,
    keys: &[Option<u64>],
    spec: &PoolSpec,
    rng: &mut impl Rng,
) -> Template {
    let mut bytes = vec![0u8; BATCH_HEADER_LEN];
    let mut record_ends = Vec::with_capacity(keys.len());
    let mut value_starts = Vec::with_capacity(keys.len());
    let mut value = vec![0u8; spec.record_size];
    for (i, key) in keys.iter().enumerate() {
        let key = key.map(key_bytes);
        let key_len = key.as_ref().map_or(0, |k| k.len());
        // attributes, timestamp delta 0, offset delta, key, value, header count 0.
        let body_len = 1
            + 1
            + varint_len(i as i64)
            + varint_len(if key.is_some() { key_len as i64 } else { -1 })
            + key_len
            + varint_len(spec.record_size as i64)
            + spec.record_size
            + 1;
        put_varint(&mut bytes, body_len as i64);
        bytes.push(0);
        put_varint(&mut bytes, 0);
        put_varint(&mut bytes, i as i64);
        match &key {
            Some(k) => {
                put_varint(&mut bytes, k.len() as i64);
                bytes.extend_from_slice(k);
            }
            None => put_varint(&mut bytes, -1),
        }
        put_varint(&mut bytes, spec.record_size as i64);
        value_starts.push(bytes.len() as u32);
        fill_value(&mut value, spec.payload, rng);
        bytes.extend_from_slice(&value);
        put_varint(&mut bytes, 0);
        record_ends.push(bytes.len() as u32);
    }
    // Header fields that never change; the rest is patched per send.
    bytes[16] = 2; // magic
    bytes[21..23].copy_from_slice(&spec.codec.attribute_bits().to_be_bytes());
    bytes[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producer id
    bytes[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    bytes[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // base sequence
    Template {
        partition,
        bytes,
        record_ends,
        value_starts,
    }
}

impl PayloadPool {
    pub fn build(spec: PoolSpec) -> Result<PayloadPool> {
        let p = spec.partitions as usize;
        let key_len = if matches!(spec.keys, KeyDist::None) {
            0
        } else {
            KEY_LEN
        };
        let batch_bytes =
            BATCH_HEADER_LEN + spec.records_per_batch * (spec.record_size + key_len + 16);
        if p.saturating_mul(batch_bytes) > POOL_BYTES_MAX {
            bail!(
                "{} partitions x {} byte batches need more than {} MiB of pre-built payloads; \
                 lower --batch-bytes",
                p,
                batch_bytes,
                POOL_BYTES_MAX >> 20
            );
        }
        let per_partition =
            (POOL_BYTES_TARGET / (p * batch_bytes).max(1)).clamp(1, TEMPLATES_PER_PARTITION_MAX);
        let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
        let sampler = KeySampler::new(spec.keys);
        let need = per_partition * spec.records_per_batch;
        let mut keys: Vec<Vec<Option<u64>>> = vec![Vec::with_capacity(need); p];
        let mut weights = vec![0.0f64; p];
        if matches!(spec.keys, KeyDist::None) {
            for k in &mut keys {
                k.resize(need, None);
            }
            weights.iter_mut().for_each(|w| *w = 1.0);
        } else {
            // Draw from the global law and bucket by partition; the counts are the weights.
            let draws_min = 200_000usize.max(need * p);
            let draws_max = draws_min.saturating_mul(50);
            let mut draws = 0usize;
            while draws < draws_min || keys.iter().any(|k| k.len() < need) {
                if draws >= draws_max {
                    break;
                }
                let k = sampler.sample(&mut rng).expect("keyed distribution");
                let part = partition_for_key(&key_bytes(k), spec.partitions) as usize;
                weights[part] += 1.0;
                if keys[part].len() < need {
                    keys[part].push(Some(k));
                }
                draws += 1;
            }
            // A partition no key maps to (few keys, many partitions) receives nothing.
        }
        let templates: Vec<Vec<Template>> = keys
            .iter()
            .enumerate()
            .map(|(part, ks)| {
                ks.chunks(spec.records_per_batch)
                    .filter(|c| c.len() == spec.records_per_batch)
                    .map(|c| build_template(part as i32, c, &spec, &mut rng))
                    .collect()
            })
            .collect();
        for (part, ts) in templates.iter().enumerate() {
            if ts.is_empty() {
                weights[part] = 0.0;
            }
        }
        if weights.iter().all(|w| *w == 0.0) {
            bail!("no key of the distribution maps to any partition");
        }
        Ok(PayloadPool {
            records_per_batch: spec.records_per_batch,
            templates,
            cycle: PartitionCycle::from_weights(&weights),
        })
    }

    /// Template number `i` (any number; it wraps) of `partition`.
    pub fn template(&self, partition: i32, i: usize) -> &Template {
        let ts = &self.templates[partition as usize];
        &ts[i % ts.len()]
    }

    pub fn bytes_held(&self) -> usize {
        self.templates
            .iter()
            .flatten()
            .map(|t| t.bytes.capacity())
            .sum()
    }
}

/// The producer fields of a batch from an idempotent or transactional producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    /// Sets the transactional attribute bit (bit 4, 0x10).
    pub transactional: bool,
}

/// Reused buffers of one sender, so encoding an uncompressed batch allocates nothing.
#[derive(Default)]
pub struct BatchWriter {
    scratch: Vec<u8>,
}

impl BatchWriter {
    pub fn new() -> BatchWriter {
        BatchWriter::default()
    }

    /// Appends to `out` a batch of the first `n` records of `tpl`, record `i` carrying
    /// `timestamps_ns(i)` in its value's first 8 bytes; the batch timestamps are in ms.
    /// Compressed batches go through `shardlog_protocol::compression` (the wire variants Kafka
    /// clients write), one output buffer per batch. Returns the number of bytes appended.
    #[cfg(test)]
    pub fn write(
        &mut self,
        tpl: &Template,
        n: usize,
        codec: Codec,
        timestamps_ns: impl Fn(usize) -> u64,
        out: &mut Vec<u8>,
    ) -> Result<usize> {
        self.write_as(tpl, n, codec, timestamps_ns, None, out)
    }

    /// [`BatchWriter::write`] for a producer with an id: `producer` sets the producer id,
    /// epoch, base sequence and the transactional bit before the CRC is computed.
    pub fn write_as(
        &mut self,
        tpl: &Template,
        n: usize,
        codec: Codec,
        timestamps_ns: impl Fn(usize) -> u64,
        producer: Option<ProducerStamp>,
        out: &mut Vec<u8>,
    ) -> Result<usize> {
        assert!(n >= 1 && n <= tpl.records());
        let end = tpl.record_ends[n - 1] as usize;
        let start = out.len();
        let first_ts_ms = (timestamps_ns(0) / 1_000_000) as i64;
        let last_ts_ms = (timestamps_ns(n - 1) / 1_000_000) as i64;
        match codec {
            Codec::None => {
                out.extend_from_slice(&tpl.bytes[..end]);
                let batch = &mut out[start..];
                for i in 0..n {
                    let at = tpl.value_starts[i] as usize;
                    batch[at..at + TIMESTAMP_LEN].copy_from_slice(&timestamps_ns(i).to_be_bytes());
                }
            }
            Codec::Lz4 | Codec::Zstd => {
                self.scratch.clear();
                self.scratch
                    .extend_from_slice(&tpl.bytes[BATCH_HEADER_LEN..end]);
                for i in 0..n {
                    let at = tpl.value_starts[i] as usize - BATCH_HEADER_LEN;
                    self.scratch[at..at + TIMESTAMP_LEN]
                        .copy_from_slice(&timestamps_ns(i).to_be_bytes());
                }
                let wire = if codec == Codec::Lz4 {
                    Compression::Lz4
                } else {
                    Compression::Zstd
                };
                let compressed = compress(wire, &self.scratch)?;
                out.extend_from_slice(&tpl.bytes[..BATCH_HEADER_LEN]);
                out.extend_from_slice(&compressed);
            }
        }
        let batch = &mut out[start..];
        let len = batch.len();
        batch[0..8].copy_from_slice(&0i64.to_be_bytes());
        batch[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
        batch[23..27].copy_from_slice(&((n - 1) as i32).to_be_bytes());
        batch[27..35].copy_from_slice(&first_ts_ms.to_be_bytes());
        batch[35..43].copy_from_slice(&last_ts_ms.max(first_ts_ms).to_be_bytes());
        batch[57..61].copy_from_slice(&(n as i32).to_be_bytes());
        if let Some(p) = producer {
            if p.transactional {
                let attributes = i16::from_be_bytes([batch[21], batch[22]]) | TRANSACTIONAL_BIT;
                batch[21..23].copy_from_slice(&attributes.to_be_bytes());
            }
            batch[43..51].copy_from_slice(&p.producer_id.to_be_bytes());
            batch[51..53].copy_from_slice(&p.epoch.to_be_bytes());
            batch[53..57].copy_from_slice(&p.base_sequence.to_be_bytes());
        }
        let crc = crc32c::crc32c(&batch[CRC_START..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{self, RecordVisitor};

    fn spec(keys: KeyDist, codec: Codec) -> PoolSpec {
        PoolSpec {
            partitions: 4,
            record_size: 100,
            records_per_batch: 10,
            keys,
            payload: PayloadKind::Random,
            codec,
            seed: 1,
        }
    }

    #[test]
    fn producer_stamp_sets_the_transactional_bit_ids_and_sequence() {
        for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
            let pool = PayloadPool::build(spec(KeyDist::None, codec)).unwrap();
            let mut w = BatchWriter::new();
            let stamp = ProducerStamp {
                producer_id: 4242,
                epoch: 3,
                base_sequence: 17,
                transactional: true,
            };
            let mut out = Vec::new();
            let tpl = pool.template(1, 0);
            w.write_as(tpl, 4, codec, |_| 1, Some(stamp), &mut out)
                .unwrap();
            let h = shardlog_protocol::batch::validate(&out).unwrap();
            assert!(h.is_transactional(), "{codec:?}");
            assert_eq!(h.attributes & TRANSACTIONAL_BIT, 0x10);
            assert_eq!(h.compression(), Some(codec_wire(codec)), "{codec:?}");
            assert_eq!(h.producer_id, 4242);
            assert_eq!(h.producer_epoch, 3);
            assert_eq!(h.base_sequence, 17);
            assert_eq!(h.records_count, 4);
            // Without a stamp the batch stays non-idempotent.
            let mut out = Vec::new();
            w.write_as(tpl, 4, codec, |_| 1, None, &mut out).unwrap();
            let h = shardlog_protocol::batch::validate(&out).unwrap();
            assert!(!h.is_transactional());
            assert_eq!((h.producer_id, h.base_sequence), (-1, -1));
        }
    }

    fn codec_wire(codec: Codec) -> Compression {
        match codec {
            Codec::None => Compression::None,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }

    #[test]
    fn batches_are_valid_for_every_prefix_and_codec() {
        for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
            let pool = PayloadPool::build(spec(KeyDist::Uniform { n: 1000 }, codec)).unwrap();
            let mut w = BatchWriter::new();
            for part in 0..4 {
                let tpl = pool.template(part, 0);
                assert_eq!(tpl.partition, part);
                for n in [1, 3, 10] {
                    let mut out = vec![0xAA; 5]; // bytes before the batch must stay
                    let len = w
                        .write(
                            tpl,
                            n,
                            codec,
                            |i| 1_700_000_000_000_000_000 + i as u64,
                            &mut out,
                        )
                        .unwrap();
                    assert_eq!(&out[..5], &[0xAA; 5]);
                    let batch = &out[5..];
                    assert_eq!(batch.len(), len);
                    let h = shardlog_protocol::batch::validate(batch).expect("valid batch");
                    assert_eq!(h.records_count, n as i32);
                    assert_eq!(h.last_offset_delta, n as i32 - 1);
                    assert_eq!(h.base_timestamp, 1_700_000_000_000);
                    // Read back each record: key hashes to the partition, value has the stamp.
                    struct V(Vec<(Option<Vec<u8>>, u64, usize)>);
                    impl RecordVisitor for V {
                        fn record(&mut self, _: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
                            let v = value.unwrap();
                            let ts = u64::from_be_bytes(v[..8].try_into().unwrap());
                            self.0.push((key.map(|k| k.to_vec()), ts, v.len()));
                        }
                    }
                    let mut v = V(Vec::new());
                    let mut dec = records::Decoder::default();
                    dec.visit_batch(batch, &mut v).unwrap();
                    assert_eq!(v.0.len(), n);
                    for (i, (k, ts, vlen)) in v.0.iter().enumerate() {
                        assert_eq!(*ts, 1_700_000_000_000_000_000 + i as u64);
                        assert_eq!(*vlen, 100);
                        assert_eq!(partition_for_key(k.as_ref().unwrap(), 4), part);
                    }
                }
            }
        }
    }

    #[test]
    fn null_keys_round_robin() {
        let pool = PayloadPool::build(spec(KeyDist::None, Codec::None)).unwrap();
        let seq: Vec<i32> = (0..8).map(|i| pool.cycle.at(i)).collect();
        assert_eq!(seq, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn skewed_keys_skew_the_cycle() {
        let c = PartitionCycle::from_weights(&[3.0, 1.0]);
        let zeros = (0..c.len()).filter(|&i| c.at(i) == 0).count();
        assert_eq!(zeros * 4, c.len() * 3);
        // Never more than three of the heavy partition in a row: the sequence is smooth.
        let mut run = 0;
        for i in 0..c.len() * 2 {
            run = if c.at(i) == 0 { run + 1 } else { 0 };
            assert!(run <= 3);
        }
    }

    #[test]
    fn zipf_favours_small_keys() {
        let s = KeySampler::new(KeyDist::Zipf { n: 1000, s: 1.0 });
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut low = 0;
        for _ in 0..10_000 {
            let k = s.sample(&mut rng).unwrap();
            assert!(k < 1000);
            if k < 10 {
                low += 1;
            }
        }
        // ln(11)/ln(1001) ~ 35 % of draws fall on the ten most popular keys.
        assert!((2500..4500).contains(&low), "{low}");
    }

    #[test]
    fn text_payload_is_compressible() {
        let mut sp = spec(KeyDist::None, Codec::Zstd);
        sp.payload = PayloadKind::Text;
        sp.record_size = 1000;
        let pool = PayloadPool::build(sp).unwrap();
        let mut out = Vec::new();
        let len = BatchWriter::new()
            .write(pool.template(0, 0), 10, Codec::Zstd, |_| 0, &mut out)
            .unwrap();
        assert!(len < 10 * 1000 / 2, "{len}");
    }

    #[test]
    fn oversized_pool_is_refused() {
        let mut sp = spec(KeyDist::None, Codec::None);
        sp.partitions = 10_000;
        sp.records_per_batch = 1000;
        sp.record_size = 1000;
        assert!(PayloadPool::build(sp).is_err());
    }
}
