//! Zero-copy Fetch responses, versions 4 to 12 (13+ name topics by id and are not advertised).
//!
//! The broker describes a response in which each partition's records are absent, in memory,
//! or a *file range* it will send with `sendfile(2)` ([`RecordsPart`]). [`encode_fetch_response`]
//! turns that into the exact bytes `kafka-protocol`'s `FetchResponse` encoder would produce —
//! size prefix and response header included — as an ordered list of [`Chunk`]s: encoded bytes
//! alternating with file ranges. The broker writes the chunks in order.
//!
//! Wire differences handled here:
//!
//! - v4-11 (not flexible): header v0; strings with i16 length; arrays with i32 count (-1 =
//!   null); records as `bytes` (i32 length, -1 = null). `log_start_offset` from v5,
//!   `error_code` and `session_id` from v7, `preferred_read_replica` from v11.
//! - v12 (flexible): header v1 (correlation id + empty tagged fields); compact strings, arrays
//!   and bytes (unsigned varint of length + 1, 0 = null); every struct ends with its tagged
//!   fields. Tagged fields holding their default value are left out, exactly as
//!   `kafka-protocol` (and Apache Kafka) do; the partition's `diverging_epoch` (tag 0),
//!   `current_leader` (tag 1) and `snapshot_id` (tag 2) are written only when set to something
//!   other than their all-`-1` default.
//!
//! Values a version cannot carry follow `kafka-protocol`'s rules: `session_id != 0` before v7
//! and `preferred_read_replica != -1` before v11 are errors; fields a version lacks otherwise
//! (error_code before v7, log_start_offset before v5, tagged fields before v12) are dropped.
//!
//! All small pieces go into one `BytesMut`, frozen once and sliced into the `Bytes` chunks.
//! The equivalence with `kafka-protocol` is tested byte for byte for every version in
//! `protocol/tests/fetch_encode_equiv.rs`.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use thiserror::Error;

/// Lowest Fetch version encoded here.
pub const MIN_VERSION: i16 = 4;
/// Highest Fetch version encoded here (13+ use topic ids).
pub const MAX_VERSION: i16 = 12;
/// First flexible Fetch version.
const FLEXIBLE_VERSION: i16 = 12;
/// In-memory records up to this size are copied next to the encoded fields rather than given
/// a chunk of their own.
const INLINE_RECORDS_MAX: usize = 4096;

/// One partition's records in a Fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordsPart {
    /// Null records (encoded as length -1, or compact 0).
    None,
    /// Records already in memory.
    Bytes(Bytes),
    /// `len` bytes of a file range the broker identifies by `token`; sent with `sendfile`.
    File { len: u32, token: usize },
}

impl RecordsPart {
    /// Bytes of records (0 for null).
    pub fn len(&self) -> usize {
        match self {
            RecordsPart::None => 0,
            RecordsPart::Bytes(b) => b.len(),
            RecordsPart::File { len, .. } => *len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An aborted transaction (for read_committed consumers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// Tag 0 of a v12 partition: where the follower's log diverges (KIP-320/595).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DivergingEpoch {
    pub epoch: i32,
    pub end_offset: i64,
}

/// Tag 1 of a v12 partition: the current leader, sent with NOT_LEADER_OR_FOLLOWER (KIP-951).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentLeader {
    pub leader_id: i32,
    pub leader_epoch: i32,
}

/// Tag 2 of a v12 partition: the snapshot a KRaft follower must fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotId {
    pub end_offset: i64,
    pub epoch: i32,
}

/// One partition of a Fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionDesc {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// v5+.
    pub log_start_offset: i64,
    /// `None` encodes a null array.
    pub aborted_transactions: Option<Vec<AbortedTxn>>,
    /// v11+; must be -1 before.
    pub preferred_read_replica: i32,
    /// v12+ tagged fields; `None` or the all-`-1` value leaves them out.
    pub diverging_epoch: Option<DivergingEpoch>,
    pub current_leader: Option<CurrentLeader>,
    pub snapshot_id: Option<SnapshotId>,
    pub records: RecordsPart,
}

impl FetchPartitionDesc {
    /// A partition with no error, Kafka's defaults for the optional fields (`last_stable_offset`
    /// and `log_start_offset` -1, no preferred replica, empty aborted transactions, no tagged
    /// fields) and the given records.
    pub fn new(partition_index: i32, high_watermark: i64, records: RecordsPart) -> Self {
        FetchPartitionDesc {
            partition_index,
            error_code: 0,
            high_watermark,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted_transactions: Some(Vec::new()),
            preferred_read_replica: -1,
            diverging_epoch: None,
            current_leader: None,
            snapshot_id: None,
            records,
        }
    }
}

/// One topic of a Fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopicDesc {
    pub name: StrBytes,
    pub partitions: Vec<FetchPartitionDesc>,
}

/// A Fetch response whose record bytes may stay in files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchResponseDesc {
    pub throttle_time_ms: i32,
    /// v7+.
    pub error_code: i16,
    /// v7+; must be 0 before.
    pub session_id: i32,
    pub topics: Vec<FetchTopicDesc>,
}

/// A piece of an encoded response, to be written in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Bytes(Bytes),
    /// The file range the broker registered as `token`, `len` bytes.
    File {
        token: usize,
        len: u32,
    },
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::File { len, .. } => *len as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a response could not be encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FetchEncodeError {
    #[error("fetch version {0} is not encoded here ({MIN_VERSION}..={MAX_VERSION})")]
    UnsupportedVersion(i16),
    #[error("session_id {0} cannot be sent before fetch v7")]
    SessionIdNeedsV7(i32),
    #[error("preferred_read_replica {0} cannot be sent before fetch v11")]
    PreferredReadReplicaNeedsV11(i32),
    #[error("topic name of {0} bytes is too long")]
    NameTooLong(usize),
    #[error("records of {0} bytes are too large")]
    RecordsTooLarge(usize),
    #[error("response of {0} bytes does not fit the size prefix")]
    TooLarge(usize),
}

/// Total bytes of `chunks` (size prefix included).
pub fn chunks_len(chunks: &[Chunk]) -> usize {
    chunks.iter().map(Chunk::len).sum()
}

/// Encodes a complete framed Fetch response (size prefix, header, body) at `version`.
pub fn encode_fetch_response(
    correlation_id: i32,
    version: i16,
    resp: &FetchResponseDesc,
) -> Result<Vec<Chunk>, FetchEncodeError> {
    if !(MIN_VERSION..=MAX_VERSION).contains(&version) {
        return Err(FetchEncodeError::UnsupportedVersion(version));
    }
    if version < 7 && resp.session_id != 0 {
        return Err(FetchEncodeError::SessionIdNeedsV7(resp.session_id));
    }
    let mut w = Writer::new(version, estimate(resp));
    w.buf.put_i32(0); // size prefix, patched at the end
    w.buf.put_i32(correlation_id);
    if w.flexible {
        w.tag_count(0); // response header v1
    }

    w.buf.put_i32(resp.throttle_time_ms);
    if version >= 7 {
        w.buf.put_i16(resp.error_code);
        w.buf.put_i32(resp.session_id);
    }
    w.array_len(Some(resp.topics.len()))?;
    for topic in &resp.topics {
        w.string(&topic.name)?;
        w.array_len(Some(topic.partitions.len()))?;
        for p in &topic.partitions {
            w.partition(p)?;
        }
        if w.flexible {
            w.tag_count(0);
        }
    }
    if w.flexible {
        w.tag_count(0); // node_endpoints is v16+
    }
    w.finish()
}

/// A rough size for the in-memory part, so that the buffer rarely grows.
fn estimate(resp: &FetchResponseDesc) -> usize {
    let mut n = 32;
    for t in &resp.topics {
        n += 8 + t.name.len();
        for p in &t.partitions {
            n += 96 + 17 * p.aborted_transactions.as_ref().map_or(0, Vec::len);
            if let RecordsPart::Bytes(b) = &p.records {
                if b.len() <= INLINE_RECORDS_MAX {
                    n += b.len();
                }
            }
        }
    }
    n
}

struct Writer {
    version: i16,
    flexible: bool,
    buf: BytesMut,
    /// Chunks that are not in `buf`, each after the `buf` position where it belongs.
    external: Vec<(usize, Chunk)>,
    external_len: usize,
}

impl Writer {
    fn new(version: i16, capacity: usize) -> Self {
        Writer {
            version,
            flexible: version >= FLEXIBLE_VERSION,
            buf: BytesMut::with_capacity(capacity),
            external: Vec::new(),
            external_len: 0,
        }
    }

    fn uvarint(&mut self, mut v: u32) {
        while v >= 0x80 {
            self.buf.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
    }

    fn tag_count(&mut self, n: u32) {
        self.uvarint(n);
    }

    /// Array count: i32 (-1 = null) or compact (count + 1, 0 = null).
    fn array_len(&mut self, len: Option<usize>) -> Result<(), FetchEncodeError> {
        match (len, self.flexible) {
            (None, false) => self.buf.put_i32(-1),
            (None, true) => self.uvarint(0),
            (Some(n), false) => {
                let n = i32::try_from(n).map_err(|_| FetchEncodeError::TooLarge(n))?;
                self.buf.put_i32(n);
            }
            (Some(n), true) => {
                let n1 = u32::try_from(n)
                    .ok()
                    .and_then(|n| n.checked_add(1))
                    .ok_or(FetchEncodeError::TooLarge(n))?;
                self.uvarint(n1);
            }
        }
        Ok(())
    }

    fn string(&mut self, s: &str) -> Result<(), FetchEncodeError> {
        let len = s.len();
        if self.flexible {
            let l1 = u32::try_from(len)
                .ok()
                .and_then(|n| n.checked_add(1))
                .ok_or(FetchEncodeError::NameTooLong(len))?;
            self.uvarint(l1);
        } else {
            let l = i16::try_from(len).map_err(|_| FetchEncodeError::NameTooLong(len))?;
            self.buf.put_i16(l);
        }
        self.buf.put_slice(s.as_bytes());
        Ok(())
    }

    fn partition(&mut self, p: &FetchPartitionDesc) -> Result<(), FetchEncodeError> {
        let v = self.version;
        if v < 11 && p.preferred_read_replica != -1 {
            return Err(FetchEncodeError::PreferredReadReplicaNeedsV11(
                p.preferred_read_replica,
            ));
        }
        self.buf.put_i32(p.partition_index);
        self.buf.put_i16(p.error_code);
        self.buf.put_i64(p.high_watermark);
        self.buf.put_i64(p.last_stable_offset);
        if v >= 5 {
            self.buf.put_i64(p.log_start_offset);
        }
        self.array_len(p.aborted_transactions.as_ref().map(Vec::len))?;
        for txn in p.aborted_transactions.iter().flatten() {
            self.buf.put_i64(txn.producer_id);
            self.buf.put_i64(txn.first_offset);
            if self.flexible {
                self.tag_count(0);
            }
        }
        if v >= 11 {
            self.buf.put_i32(p.preferred_read_replica);
        }
        self.records(&p.records)?;
        if self.flexible {
            self.partition_tags(p);
        }
        Ok(())
    }

    fn records(&mut self, records: &RecordsPart) -> Result<(), FetchEncodeError> {
        let len = match records {
            RecordsPart::None => {
                if self.flexible {
                    self.uvarint(0);
                } else {
                    self.buf.put_i32(-1);
                }
                return Ok(());
            }
            other => other.len(),
        };
        if self.flexible {
            let l1 = u32::try_from(len)
                .ok()
                .and_then(|n| n.checked_add(1))
                .ok_or(FetchEncodeError::RecordsTooLarge(len))?;
            self.uvarint(l1);
        } else {
            let l = i32::try_from(len).map_err(|_| FetchEncodeError::RecordsTooLarge(len))?;
            self.buf.put_i32(l);
        }
        match records {
            RecordsPart::None => {}
            RecordsPart::Bytes(b) if b.len() <= INLINE_RECORDS_MAX => self.buf.put_slice(b),
            RecordsPart::Bytes(b) => self.push_external(Chunk::Bytes(b.clone())),
            RecordsPart::File { len, token } => {
                if *len > 0 {
                    self.push_external(Chunk::File {
                        token: *token,
                        len: *len,
                    });
                }
            }
        }
        Ok(())
    }

    fn push_external(&mut self, chunk: Chunk) {
        self.external_len += chunk.len();
        self.external.push((self.buf.len(), chunk));
    }

    /// The v12 partition's tagged fields, in tag order, each only when not its default.
    fn partition_tags(&mut self, p: &FetchPartitionDesc) {
        let diverging = p.diverging_epoch.filter(|d| {
            *d != DivergingEpoch {
                epoch: -1,
                end_offset: -1,
            }
        });
        let leader = p.current_leader.filter(|l| {
            *l != CurrentLeader {
                leader_id: -1,
                leader_epoch: -1,
            }
        });
        let snapshot = p.snapshot_id.filter(|s| {
            *s != SnapshotId {
                end_offset: -1,
                epoch: -1,
            }
        });
        let count = u32::from(diverging.is_some())
            + u32::from(leader.is_some())
            + u32::from(snapshot.is_some());
        self.tag_count(count);
        // Each tagged value is a flexible struct: its fields plus an empty tagged-field count.
        if let Some(d) = diverging {
            self.uvarint(0); // tag
            self.uvarint(4 + 8 + 1); // size
            self.buf.put_i32(d.epoch);
            self.buf.put_i64(d.end_offset);
            self.tag_count(0);
        }
        if let Some(l) = leader {
            self.uvarint(1);
            self.uvarint(4 + 4 + 1);
            self.buf.put_i32(l.leader_id);
            self.buf.put_i32(l.leader_epoch);
            self.tag_count(0);
        }
        if let Some(s) = snapshot {
            self.uvarint(2);
            self.uvarint(8 + 4 + 1);
            self.buf.put_i64(s.end_offset);
            self.buf.put_i32(s.epoch);
            self.tag_count(0);
        }
    }

    /// Patches the size prefix and splits the buffer around the external chunks.
    fn finish(mut self) -> Result<Vec<Chunk>, FetchEncodeError> {
        let total = self.buf.len() + self.external_len;
        let size = i32::try_from(total - 4).map_err(|_| FetchEncodeError::TooLarge(total))?;
        self.buf[..4].copy_from_slice(&size.to_be_bytes());
        let all = self.buf.freeze();
        let mut chunks = Vec::with_capacity(2 * self.external.len() + 1);
        let mut from = 0;
        for (at, chunk) in self.external {
            if at > from {
                chunks.push(Chunk::Bytes(all.slice(from..at)));
            }
            chunks.push(chunk);
            from = at;
        }
        if all.len() > from {
            chunks.push(Chunk::Bytes(all.slice(from..)));
        }
        Ok(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_interleave_bytes_and_files() {
        let resp = FetchResponseDesc {
            topics: vec![FetchTopicDesc {
                name: StrBytes::from_static_str("t"),
                partitions: vec![
                    FetchPartitionDesc::new(0, 10, RecordsPart::File { len: 100, token: 7 }),
                    FetchPartitionDesc::new(
                        1,
                        10,
                        RecordsPart::Bytes(Bytes::from(vec![1; 10_000])),
                    ),
                    FetchPartitionDesc::new(2, 10, RecordsPart::File { len: 0, token: 8 }),
                ],
            }],
            ..Default::default()
        };
        let chunks = encode_fetch_response(1, 11, &resp).unwrap();
        assert!(matches!(chunks[0], Chunk::Bytes(_)));
        assert_eq!(chunks[1], Chunk::File { token: 7, len: 100 });
        assert!(matches!(&chunks[3], Chunk::Bytes(b) if b.len() == 10_000));
        // An empty file range needs no chunk.
        assert!(!chunks
            .iter()
            .any(|c| matches!(c, Chunk::File { token: 8, .. })));
        let total = chunks_len(&chunks);
        let Chunk::Bytes(first) = &chunks[0] else {
            unreachable!()
        };
        assert_eq!(
            i32::from_be_bytes(first[..4].try_into().unwrap()) as usize,
            total - 4
        );
    }

    #[test]
    fn version_rules() {
        let mut resp = FetchResponseDesc {
            session_id: 5,
            ..Default::default()
        };
        assert_eq!(
            encode_fetch_response(0, 6, &resp),
            Err(FetchEncodeError::SessionIdNeedsV7(5))
        );
        assert!(encode_fetch_response(0, 7, &resp).is_ok());
        assert_eq!(
            encode_fetch_response(0, 13, &resp),
            Err(FetchEncodeError::UnsupportedVersion(13))
        );
        assert_eq!(
            encode_fetch_response(0, 3, &resp),
            Err(FetchEncodeError::UnsupportedVersion(3))
        );
        resp.session_id = 0;
        let mut p = FetchPartitionDesc::new(0, 0, RecordsPart::None);
        p.preferred_read_replica = 2;
        resp.topics.push(FetchTopicDesc {
            name: StrBytes::from_static_str("t"),
            partitions: vec![p],
        });
        assert_eq!(
            encode_fetch_response(0, 10, &resp),
            Err(FetchEncodeError::PreferredReadReplicaNeedsV11(2))
        );
        assert!(encode_fetch_response(0, 11, &resp).is_ok());
    }
}
