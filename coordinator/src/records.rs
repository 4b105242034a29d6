//! The `__consumer_offsets` record format: Kafka's own key and value schemas, so Kafka tools
//! (`kafka-console-consumer --formatter ...GroupMetadataManager$OffsetsMessageFormatter`,
//! `kafka-dump-log --offsets-decoder`) read what Shardlog writes, and a dump of a Kafka cluster's
//! `__consumer_offsets` can be replayed here.
//!
//! kafka-protocol 0.18 does not ship these internal schemas, so they are written by hand.
//! Everything is big-endian. `STRING` is an `i16` byte length followed by UTF-8; `NSTRING` is the
//! same with length -1 meaning null; `BYTES` is an `i32` length followed by the bytes; `ARRAY` is
//! an `i32` count (-1 = null, read as empty) followed by the elements. Every key and value starts
//! with its own `i16` schema version.
//!
//! ```text
//! key version 0 or 1: OffsetCommitKey            (written: 1)
//!     version:i16  group:STRING  topic:STRING  partition:i32
//! key version 2: GroupMetadataKey
//!     version:i16  group:STRING
//! key version 3+: other coordinators' records (share groups, KIP-848): skipped on load
//!
//! OffsetCommitValue                               (written: 3; read: 0-3)
//!     v0, v2: version offset:i64 metadata:STRING commit_timestamp:i64
//!     v1:     version offset:i64 metadata:STRING commit_timestamp:i64 expire_timestamp:i64
//!     v3:     version offset:i64 leader_epoch:i32 metadata:STRING commit_timestamp:i64
//!
//! GroupMetadataValue                              (written: 3; read: 0-3)
//!     version:i16 protocol_type:STRING generation:i32 protocol:NSTRING leader:NSTRING
//!     [v2+] current_state_timestamp:i64 (-1 = unknown)
//!     members:ARRAY of
//!         member_id:STRING [v3+] group_instance_id:NSTRING client_id:STRING client_host:STRING
//!         [v1+] rebalance_timeout:i32 session_timeout:i32 subscription:BYTES assignment:BYTES
//! ```
//!
//! A tombstone (null value) deletes the key: an offset, or the whole group's metadata. The log is
//! compacted, so only the latest value per key matters.
//!
//! Versions 4+ of the values are Kafka's flexible (tagged-field) encodings, which Kafka itself
//! only writes from 4.0; decoding them reports [`RecordError::UnsupportedVersion`].

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::config::MAX_STRING_BYTES;

/// Key schema version written for offset commits.
pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key schema version of group metadata.
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// Value schema version written for offset commits.
pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
/// Value schema version written for group metadata.
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// A record that cannot be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes end before the schema does.
    #[error("{what} is truncated")]
    Truncated {
        /// The record being decoded.
        what: &'static str,
    },
    /// A string is not UTF-8.
    #[error("{what} holds a string that is not UTF-8")]
    InvalidUtf8 {
        /// The record being decoded.
        what: &'static str,
    },
    /// A length other than -1 below zero, or -1 where null is not allowed.
    #[error("{what} holds an invalid length {length}")]
    InvalidLength {
        /// The record being decoded.
        what: &'static str,
        /// The length read.
        length: i32,
    },
    /// A field holds a value its schema does not allow (e.g. an unknown transaction status).
    #[error("{what} field {field} holds the invalid value {value}")]
    InvalidField {
        /// The record being decoded.
        what: &'static str,
        /// The field's name in Kafka's schema.
        field: &'static str,
        /// The value read.
        value: i64,
    },
    /// A value version this decoder does not know.
    #[error("{what} version {version} is not supported")]
    UnsupportedVersion {
        /// The record being decoded.
        what: &'static str,
        /// The version read.
        version: i16,
    },
}

/// A decoded `__consumer_offsets` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKey {
    /// The committed offset of one partition for one group.
    OffsetCommit {
        /// Group id.
        group: String,
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
    },
    /// The membership and generation of one group.
    GroupMetadata {
        /// Group id.
        group: String,
    },
}

/// The value of an offset commit record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommitValue {
    /// Committed offset.
    pub offset: i64,
    /// Leader epoch, -1 if unknown.
    pub leader_epoch: i32,
    /// Client metadata.
    pub metadata: String,
    /// When the commit was made (coordinator clock).
    pub commit_timestamp: i64,
    /// Explicit expiry from OffsetCommit v1-4 clients (value v1 only).
    pub expire_timestamp: Option<i64>,
}

/// One member inside a [`GroupMetadataValue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberMetadataValue {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Rebalance timeout (v0 records: the session timeout).
    pub rebalance_timeout: i32,
    /// Session timeout.
    pub session_timeout: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Bytes,
    /// The member's assignment.
    pub assignment: Bytes,
}

/// The value of a group metadata record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadataValue {
    /// Protocol type ("" when none).
    pub protocol_type: String,
    /// Generation id.
    pub generation: i32,
    /// Selected protocol (null when Empty).
    pub protocol: Option<String>,
    /// Leader member id (null when Empty).
    pub leader: Option<String>,
    /// When the group entered its state, -1 if unknown.
    pub current_state_timestamp: i64,
    /// Members with their assignments.
    pub members: Vec<MemberMetadataValue>,
}

/// Encodes the key of an offset commit.
pub fn offset_commit_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + 2 + group.len() + 2 + topic.len() + 4);
    b.put_i16(OFFSET_COMMIT_KEY_VERSION);
    put_string(&mut b, group);
    put_string(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

/// Encodes the key of a group's metadata.
pub fn group_metadata_key(group: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + 2 + group.len());
    b.put_i16(GROUP_METADATA_KEY_VERSION);
    put_string(&mut b, group);
    b.freeze()
}

/// Decodes a key. `Ok(None)` means a key version this coordinator does not own (Kafka's newer
/// coordinators write versions 3+); such records are skipped, as Kafka skips unknown types.
pub fn decode_key(key: &[u8]) -> Result<Option<RecordKey>, RecordError> {
    let what = "__consumer_offsets key";
    let mut r = Reader::new(Bytes::copy_from_slice(key), what);
    match r.i16()? {
        0 | 1 => Ok(Some(RecordKey::OffsetCommit {
            group: r.string()?,
            topic: r.string()?,
            partition: r.i32()?,
        })),
        2 => Ok(Some(RecordKey::GroupMetadata { group: r.string()? })),
        _ => Ok(None),
    }
}

impl OffsetCommitValue {
    /// Encodes as version 3.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(2 + 8 + 4 + 2 + self.metadata.len() + 8);
        b.put_i16(OFFSET_COMMIT_VALUE_VERSION);
        b.put_i64(self.offset);
        b.put_i32(self.leader_epoch);
        put_string(&mut b, &self.metadata);
        b.put_i64(self.commit_timestamp);
        b.freeze()
    }

    /// Decodes versions 0-3.
    pub fn decode(value: &[u8]) -> Result<Self, RecordError> {
        let what = "OffsetCommitValue";
        let mut r = Reader::new(Bytes::copy_from_slice(value), what);
        let version = r.i16()?;
        if !(0..=3).contains(&version) {
            return Err(RecordError::UnsupportedVersion { what, version });
        }
        let offset = r.i64()?;
        let (leader_epoch, metadata, commit_timestamp, expire_timestamp) = match version {
            0 | 2 => (-1, r.string()?, r.i64()?, None),
            1 => (-1, r.string()?, r.i64()?, Some(r.i64()?)),
            3 => (r.i32()?, r.string()?, r.i64()?, None),
            _ => return Err(RecordError::UnsupportedVersion { what, version }),
        };
        Ok(OffsetCommitValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
            expire_timestamp: expire_timestamp.filter(|&t| t >= 0),
        })
    }
}

impl GroupMetadataValue {
    /// Encodes as version 3.
    pub fn encode(&self) -> Bytes {
        let members_len: usize = self
            .members
            .iter()
            .map(|m| {
                2 + m.member_id.len()
                    + 2
                    + m.group_instance_id.as_ref().map_or(0, String::len)
                    + 2
                    + m.client_id.len()
                    + 2
                    + m.client_host.len()
                    + 8
                    + 4
                    + m.subscription.len()
                    + 4
                    + m.assignment.len()
            })
            .sum();
        let mut b = BytesMut::with_capacity(
            2 + 2
                + self.protocol_type.len()
                + 4
                + 2
                + self.protocol.as_ref().map_or(0, String::len)
                + 2
                + self.leader.as_ref().map_or(0, String::len)
                + 8
                + 4
                + members_len,
        );
        b.put_i16(GROUP_METADATA_VALUE_VERSION);
        put_string(&mut b, &self.protocol_type);
        b.put_i32(self.generation);
        put_nullable_string(&mut b, self.protocol.as_deref());
        put_nullable_string(&mut b, self.leader.as_deref());
        b.put_i64(self.current_state_timestamp);
        b.put_i32(i32::try_from(self.members.len()).unwrap_or(i32::MAX));
        for m in &self.members {
            put_string(&mut b, &m.member_id);
            put_nullable_string(&mut b, m.group_instance_id.as_deref());
            put_string(&mut b, &m.client_id);
            put_string(&mut b, &m.client_host);
            b.put_i32(m.rebalance_timeout);
            b.put_i32(m.session_timeout);
            put_bytes(&mut b, &m.subscription);
            put_bytes(&mut b, &m.assignment);
        }
        b.freeze()
    }

    /// Decodes versions 0-3. Subscription and assignment bytes share `value`'s buffer.
    pub fn decode(value: Bytes) -> Result<Self, RecordError> {
        let what = "GroupMetadataValue";
        let mut r = Reader::new(value, what);
        let version = r.i16()?;
        if !(0..=3).contains(&version) {
            return Err(RecordError::UnsupportedVersion { what, version });
        }
        let protocol_type = r.string()?;
        let generation = r.i32()?;
        let protocol = r.nullable_string()?;
        let leader = r.nullable_string()?;
        let current_state_timestamp = if version >= 2 { r.i64()? } else { -1 };
        let count = r.array_len()?;
        // Each member takes at least 26 bytes, so a hostile count cannot reserve much.
        let mut members = Vec::with_capacity(count.min(r.remaining() / 26));
        for _ in 0..count {
            let member_id = r.string()?;
            let group_instance_id = if version >= 3 {
                r.nullable_string()?
            } else {
                None
            };
            let client_id = r.string()?;
            let client_host = r.string()?;
            let rebalance_timeout = if version >= 1 { Some(r.i32()?) } else { None };
            let session_timeout = r.i32()?;
            let subscription = r.bytes()?;
            let assignment = r.bytes()?;
            members.push(MemberMetadataValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout: rebalance_timeout.unwrap_or(session_timeout),
                session_timeout,
                subscription,
                assignment,
            });
        }
        Ok(GroupMetadataValue {
            protocol_type,
            generation,
            protocol,
            leader,
            current_state_timestamp,
            members,
        })
    }
}

/// Writes a STRING. Callers validate lengths on input; an overlong string is cut at a character
/// boundary rather than written with a wrong length (it cannot occur through the manager).
pub(crate) fn put_string(b: &mut BytesMut, s: &str) {
    let s = truncate_to(s, MAX_STRING_BYTES);
    debug_assert!(s.len() <= MAX_STRING_BYTES);
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, bytes: &[u8]) {
    let len = bytes.len().min(i32::MAX as usize);
    b.put_i32(len as i32);
    b.put_slice(&bytes[..len]);
}

/// The longest prefix of `s` with at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A bounds-checked big-endian reader; never panics.
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
    what: &'static str,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    /// The name of the record being decoded, for errors.
    pub(crate) fn what(&self) -> &'static str {
        self.what
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, RecordError> {
        if self.remaining() < n {
            return Err(RecordError::Truncated { what: self.what });
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let b = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&b);
        Ok(out)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        let len = self.i16()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| RecordError::InvalidLength {
            what: self.what,
            length: i32::from(len),
        })?;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| RecordError::InvalidUtf8 { what: self.what })
    }

    pub(crate) fn string(&mut self) -> Result<String, RecordError> {
        self.nullable_string()?.ok_or(RecordError::InvalidLength {
            what: self.what,
            length: -1,
        })
    }

    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(Bytes::new());
        }
        let n = usize::try_from(len).map_err(|_| RecordError::InvalidLength {
            what: self.what,
            length: len,
        })?;
        self.take(n)
    }

    pub(crate) fn array_len(&mut self) -> Result<usize, RecordError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(0);
        }
        usize::try_from(len).map_err(|_| RecordError::InvalidLength {
            what: self.what,
            length: len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_commit_key_bytes() {
        let k = offset_commit_key("g", "t", 7);
        assert_eq!(&k[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]);
        assert_eq!(
            decode_key(&k).unwrap(),
            Some(RecordKey::OffsetCommit {
                group: "g".into(),
                topic: "t".into(),
                partition: 7
            })
        );
    }

    #[test]
    fn group_metadata_key_bytes() {
        let k = group_metadata_key("grp");
        assert_eq!(&k[..], &[0, 2, 0, 3, b'g', b'r', b'p']);
        assert_eq!(
            decode_key(&k).unwrap(),
            Some(RecordKey::GroupMetadata {
                group: "grp".into()
            })
        );
    }

    #[test]
    fn unknown_key_versions_are_skipped() {
        assert_eq!(decode_key(&[0, 11, 0, 1, b'g']).unwrap(), None);
        assert!(decode_key(&[0]).is_err());
    }

    #[test]
    fn offset_commit_value_v3_bytes_and_round_trip() {
        let v = OffsetCommitValue {
            offset: 42,
            leader_epoch: 5,
            metadata: "m".into(),
            commit_timestamp: 1000,
            expire_timestamp: None,
        };
        let b = v.encode();
        let mut expected = vec![0, 3];
        expected.extend_from_slice(&42i64.to_be_bytes());
        expected.extend_from_slice(&5i32.to_be_bytes());
        expected.extend_from_slice(&[0, 1, b'm']);
        expected.extend_from_slice(&1000i64.to_be_bytes());
        assert_eq!(&b[..], &expected[..]);
        assert_eq!(OffsetCommitValue::decode(&b).unwrap(), v);
    }

    #[test]
    fn offset_commit_value_old_versions() {
        let mut v1 = vec![0, 1];
        v1.extend_from_slice(&9i64.to_be_bytes());
        v1.extend_from_slice(&[0, 0]);
        v1.extend_from_slice(&100i64.to_be_bytes());
        v1.extend_from_slice(&200i64.to_be_bytes());
        let d = OffsetCommitValue::decode(&v1).unwrap();
        assert_eq!(
            (d.offset, d.leader_epoch, d.expire_timestamp),
            (9, -1, Some(200))
        );
        let mut v0 = vec![0, 0];
        v0.extend_from_slice(&9i64.to_be_bytes());
        v0.extend_from_slice(&[0, 0]);
        v0.extend_from_slice(&100i64.to_be_bytes());
        assert_eq!(
            OffsetCommitValue::decode(&v0).unwrap().commit_timestamp,
            100
        );
        assert!(matches!(
            OffsetCommitValue::decode(&[0, 4]),
            Err(RecordError::UnsupportedVersion { version: 4, .. })
        ));
    }

    fn sample_group() -> GroupMetadataValue {
        GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("c-1".into()),
            current_state_timestamp: 77,
            members: vec![
                MemberMetadataValue {
                    member_id: "c-1".into(),
                    group_instance_id: Some("i1".into()),
                    client_id: "c".into(),
                    client_host: "/10.0.0.1".into(),
                    rebalance_timeout: 300_000,
                    session_timeout: 45_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"asg"),
                },
                MemberMetadataValue {
                    member_id: "c-2".into(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "/10.0.0.2".into(),
                    rebalance_timeout: 1,
                    session_timeout: 2,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        }
    }

    #[test]
    fn group_metadata_value_round_trip_and_layout() {
        let v = sample_group();
        let b = v.encode();
        assert_eq!(&b[..2], &[0, 3]);
        assert_eq!(&b[2..4], &[0, 8]);
        assert_eq!(&b[4..12], b"consumer");
        assert_eq!(&b[12..16], &3i32.to_be_bytes());
        assert_eq!(GroupMetadataValue::decode(b).unwrap(), v);
        let empty = GroupMetadataValue {
            protocol_type: String::new(),
            generation: 4,
            protocol: None,
            leader: None,
            current_state_timestamp: -1,
            members: vec![],
        };
        let b = empty.encode();
        assert_eq!(
            &b[..],
            &[
                0, 3, 0, 0, 0, 0, 0, 4, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
                0, 0, 0, 0
            ]
        );
        assert_eq!(GroupMetadataValue::decode(b).unwrap(), empty);
    }

    #[test]
    fn group_metadata_value_v0_defaults() {
        let mut b = vec![
            0, 0, 0, 1, b'x', 0, 0, 0, 1, 255, 255, 0, 1, b'm', 0, 0, 0, 1,
        ];
        b.extend_from_slice(&[0, 1, b'm', 0, 1, b'c', 0, 1, b'h']);
        b.extend_from_slice(&10_000i32.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        let d = GroupMetadataValue::decode(Bytes::from(b)).unwrap();
        assert_eq!(d.current_state_timestamp, -1);
        assert_eq!(d.members[0].rebalance_timeout, 10_000);
        assert_eq!(d.members[0].group_instance_id, None);
    }

    #[test]
    fn truncated_and_hostile_values_are_errors() {
        let full = sample_group().encode();
        for cut in 0..full.len() {
            assert!(
                GroupMetadataValue::decode(full.slice(..cut)).is_err(),
                "cut {cut}"
            );
        }
        // A member count of two billion with no bytes behind it.
        let mut b = vec![
            0, 3, 0, 0, 0, 0, 0, 1, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        b.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(GroupMetadataValue::decode(Bytes::from(b)).is_err());
        // Negative string length.
        assert!(decode_key(&[0, 2, 0x80, 0]).is_err());
        // Invalid UTF-8.
        assert!(matches!(
            decode_key(&[0, 2, 0, 1, 0xFF]),
            Err(RecordError::InvalidUtf8 { .. })
        ));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate_to("héllo", 2), "h");
        assert_eq!(truncate_to("héllo", 3), "hé");
        assert_eq!(truncate_to("abc", 10), "abc");
    }
}
