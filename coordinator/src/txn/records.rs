//! The `__transaction_state` record format: Kafka's own `TransactionLogKey` and
//! `TransactionLogValue` schemas, so Kafka tools (`kafka-dump-log --transaction-log-decoder`)
//! read what Shardlog writes and a dump of a Kafka cluster's `__transaction_state` can be replayed.
//!
//! Written by hand from the schema definitions, big-endian, like [`crate::records`].
//!
//! ```text
//! TransactionLogKey, version 0 (the only one)
//!     version:i16  transactional_id:STRING
//!
//! TransactionLogValue                               (written: 0; read: 0-1)
//!   v0: version:i16 producer_id:i64 producer_epoch:i16 transaction_timeout_ms:i32
//!       transaction_status:i8
//!       transaction_partitions: nullable ARRAY (i32 count, -1 = null) of
//!           topic:STRING  partition_ids:ARRAY of i32
//!       transaction_last_update_timestamp_ms:i64  transaction_start_timestamp_ms:i64
//!   v1 (flexible): the same fields, with COMPACT_STRING / COMPACT_ARRAY (unsigned varint
//!       length + 1, 0 = null) and a tagged-field section closing every struct; the value's tags:
//!           0: previous_producer_id:i64 (default -1)
//!           1: next_producer_id:i64 (default -1)
//!           2: client_transaction_version:i16 (default 0)
//! ```
//!
//! The partition list is null in the Empty state and an array otherwise, as Kafka writes it; a
//! null list decodes as empty. A tombstone (null value) removes the transactional id.

use bytes::{BufMut, Bytes, BytesMut};

use crate::records::{put_string, Reader, RecordError};

/// Key schema version (the only one Kafka defines).
pub const TXN_KEY_VERSION: i16 = 0;
/// Value schema version written (what Kafka 3.x writes).
pub const TXN_VALUE_VERSION: i16 = 0;
/// Highest value schema version decoded.
pub const TXN_VALUE_MAX_VERSION: i16 = 1;

/// Kafka's transaction states, with their status codes in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnState {
    /// No transaction open (after InitProducerId).
    Empty,
    /// Partitions have been added; the transaction is open.
    Ongoing,
    /// Commit decided; markers being written.
    PrepareCommit,
    /// Abort decided; markers being written.
    PrepareAbort,
    /// Commit markers written.
    CompleteCommit,
    /// Abort markers written.
    CompleteAbort,
    /// Being removed (expired transactional id).
    Dead,
    /// In-memory only in Kafka: the epoch is being bumped to fence a producer before an abort.
    PrepareEpochFence,
}

impl TxnState {
    /// Every state, in status-code order.
    pub const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    /// The `transaction_status` byte.
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    /// The state with this status byte, `None` if unknown.
    pub fn from_code(code: i8) -> Option<Self> {
        usize::try_from(code)
            .ok()
            .and_then(|i| TxnState::ALL.get(i).copied())
    }

    /// Kafka's spelling (DescribeTransactions, ListTransactions).
    pub fn as_str(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// The state with this name, `None` if unknown.
    pub fn from_name(name: &str) -> Option<Self> {
        TxnState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One `__transaction_state` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnLogValue {
    /// Producer id in use by the transactional id.
    pub producer_id: i64,
    /// v1 tag 0: producer id used by the last committed transaction, -1 if none.
    pub previous_producer_id: i64,
    /// v1 tag 1: latest producer id sent to the producer, -1 if none.
    pub next_producer_id: i64,
    /// Epoch of the producer id.
    pub producer_epoch: i16,
    /// Transaction timeout.
    pub transaction_timeout_ms: i32,
    /// Transaction state.
    pub state: TxnState,
    /// Partitions of the transaction by topic (null in the log when Empty).
    pub partitions: Vec<(String, Vec<i32>)>,
    /// Time of the last update.
    pub last_update_timestamp_ms: i64,
    /// Time the transaction started, -1 if none.
    pub start_timestamp_ms: i64,
    /// v1 tag 2: transaction version used by the client (KIP-890), 0 by default.
    pub client_transaction_version: i16,
}

/// Encodes the key of a transactional id.
pub fn txn_key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + transactional_id.len());
    b.put_i16(TXN_KEY_VERSION);
    put_string(&mut b, transactional_id);
    b.freeze()
}

/// Decodes a key into its transactional id. `Ok(None)` is a key version Kafka has not defined
/// (skipped on load, as unknown group-coordinator keys are).
pub fn decode_txn_key(key: &[u8]) -> Result<Option<String>, RecordError> {
    let mut r = Reader::new(Bytes::copy_from_slice(key), "TransactionLogKey");
    match r.i16()? {
        TXN_KEY_VERSION => Ok(Some(r.string()?)),
        _ => Ok(None),
    }
}

impl TxnLogValue {
    /// Encodes as the version Kafka 3.x writes ([`TXN_VALUE_VERSION`]).
    pub fn encode(&self) -> Bytes {
        self.encode_version(TXN_VALUE_VERSION)
    }

    /// Encodes as version 0 or (any other value) version 1. Version 0 cannot carry the tagged
    /// fields; version 1 writes those that differ from their defaults.
    pub fn encode_version(&self, version: i16) -> Bytes {
        let flexible = version >= 1;
        let mut b = BytesMut::with_capacity(64);
        b.put_i16(if flexible { 1 } else { 0 });
        b.put_i64(self.producer_id);
        b.put_i16(self.producer_epoch);
        b.put_i32(self.transaction_timeout_ms);
        b.put_i8(self.state.code());
        let null = self.state == TxnState::Empty && self.partitions.is_empty();
        if flexible {
            if null {
                put_uvarint(&mut b, 0);
            } else {
                put_uvarint(&mut b, len_u32(self.partitions.len()).saturating_add(1));
                for (topic, parts) in &self.partitions {
                    put_compact_string(&mut b, topic);
                    put_uvarint(&mut b, len_u32(parts.len()).saturating_add(1));
                    parts.iter().for_each(|&p| b.put_i32(p));
                    put_uvarint(&mut b, 0); // no tagged fields in the partition struct
                }
            }
        } else if null {
            b.put_i32(-1);
        } else {
            b.put_i32(len_i32(self.partitions.len()));
            for (topic, parts) in &self.partitions {
                put_string(&mut b, topic);
                b.put_i32(len_i32(parts.len()));
                parts.iter().for_each(|&p| b.put_i32(p));
            }
        }
        b.put_i64(self.last_update_timestamp_ms);
        b.put_i64(self.start_timestamp_ms);
        if flexible {
            let mut tags: Vec<(u32, Vec<u8>)> = Vec::new();
            if self.previous_producer_id != -1 {
                tags.push((0, self.previous_producer_id.to_be_bytes().to_vec()));
            }
            if self.next_producer_id != -1 {
                tags.push((1, self.next_producer_id.to_be_bytes().to_vec()));
            }
            if self.client_transaction_version != 0 {
                tags.push((2, self.client_transaction_version.to_be_bytes().to_vec()));
            }
            put_uvarint(&mut b, len_u32(tags.len()));
            for (tag, data) in tags {
                put_uvarint(&mut b, tag);
                put_uvarint(&mut b, len_u32(data.len()));
                b.put_slice(&data);
            }
        }
        b.freeze()
    }

    /// Decodes versions 0 and 1. Unknown tagged fields are skipped.
    pub fn decode(value: &[u8]) -> Result<Self, RecordError> {
        let what = "TransactionLogValue";
        let mut r = Reader::new(Bytes::copy_from_slice(value), what);
        let version = r.i16()?;
        if !(0..=TXN_VALUE_MAX_VERSION).contains(&version) {
            return Err(RecordError::UnsupportedVersion { what, version });
        }
        let flexible = version >= 1;
        let producer_id = r.i64()?;
        let producer_epoch = r.i16()?;
        let transaction_timeout_ms = r.i32()?;
        let status = i8::from_be_bytes(r.fixed::<1>()?);
        let state = TxnState::from_code(status).ok_or(RecordError::InvalidField {
            what,
            field: "transaction_status",
            value: i64::from(status),
        })?;
        let count = if flexible {
            r.compact_len()?
        } else {
            r.nullable_array_len()?
        };
        let mut partitions = Vec::new();
        for _ in 0..count.unwrap_or(0) {
            let (topic, n) = if flexible {
                let topic = r.compact_string()?;
                (topic, r.compact_len()?.unwrap_or(0))
            } else {
                (r.string()?, r.array_len()?)
            };
            // Each id takes 4 bytes: a hostile count cannot reserve much.
            let mut ids = Vec::with_capacity(n.min(r.remaining() / 4));
            for _ in 0..n {
                ids.push(r.i32()?);
            }
            if flexible {
                r.skip_tagged_fields()?;
            }
            partitions.push((topic, ids));
        }
        let last_update_timestamp_ms = r.i64()?;
        let start_timestamp_ms = r.i64()?;
        let mut out = TxnLogValue {
            producer_id,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch,
            transaction_timeout_ms,
            state,
            partitions,
            last_update_timestamp_ms,
            start_timestamp_ms,
            client_transaction_version: 0,
        };
        if flexible {
            let n = r.uvarint()?;
            for _ in 0..n {
                let tag = r.uvarint()?;
                let size = r.uvarint()? as usize;
                let data = r.take(size)?;
                let bad = |field| RecordError::InvalidField {
                    what,
                    field,
                    value: i64::try_from(size).unwrap_or(i64::MAX),
                };
                match tag {
                    0 => {
                        out.previous_producer_id =
                            i64_of(&data).ok_or(bad("previous_producer_id size"))?
                    }
                    1 => {
                        out.next_producer_id = i64_of(&data).ok_or(bad("next_producer_id size"))?
                    }
                    2 => {
                        let d: [u8; 2] = data[..]
                            .try_into()
                            .map_err(|_| bad("client_transaction_version size"))?;
                        out.client_transaction_version = i16::from_be_bytes(d);
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}

fn i64_of(data: &[u8]) -> Option<i64> {
    data.try_into().ok().map(i64::from_be_bytes)
}

fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX - 1)
}

fn put_uvarint(b: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        b.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn put_compact_string(b: &mut BytesMut, s: &str) {
    put_uvarint(b, len_u32(s.len()).saturating_add(1));
    b.put_slice(s.as_bytes());
}

/// The flexible-version primitives, on the shared reader.
impl Reader {
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let b = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&b);
        Ok(out)
    }

    /// An `i32` array count where -1 means null.
    fn nullable_array_len(&mut self) -> Result<Option<usize>, RecordError> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        usize::try_from(len)
            .map(Some)
            .map_err(|_| RecordError::InvalidLength {
                what: self.what(),
                length: len,
            })
    }

    /// An unsigned varint of at most 32 bits.
    fn uvarint(&mut self) -> Result<u32, RecordError> {
        let mut out: u32 = 0;
        for i in 0..5 {
            let byte = self.fixed::<1>()?[0];
            out |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(RecordError::InvalidLength {
            what: self.what(),
            length: -1,
        })
    }

    /// A compact length (`n + 1`, 0 = null).
    fn compact_len(&mut self) -> Result<Option<usize>, RecordError> {
        Ok(match self.uvarint()? {
            0 => None,
            n => Some((n - 1) as usize),
        })
    }

    fn compact_string(&mut self) -> Result<String, RecordError> {
        let what = self.what();
        let len = self
            .compact_len()?
            .ok_or(RecordError::InvalidLength { what, length: -1 })?;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| RecordError::InvalidUtf8 { what })
    }

    fn skip_tagged_fields(&mut self) -> Result<(), RecordError> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ongoing() -> TxnLogValue {
        TxnLogValue {
            producer_id: 1000,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: 3,
            transaction_timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: vec![("orders".into(), vec![0, 2]), ("t".into(), vec![7])],
            last_update_timestamp_ms: 5_000,
            start_timestamp_ms: 4_000,
            client_transaction_version: 0,
        }
    }

    #[test]
    fn status_codes_and_names() {
        for (i, s) in TxnState::ALL.into_iter().enumerate() {
            assert_eq!(s.code() as usize, i);
            assert_eq!(TxnState::from_code(s.code()), Some(s));
            assert_eq!(TxnState::from_name(s.as_str()), Some(s));
        }
        assert_eq!(TxnState::PrepareEpochFence.code(), 7);
        assert_eq!(TxnState::CompleteAbort.as_str(), "CompleteAbort");
        assert_eq!(TxnState::from_code(8), None);
        assert_eq!(TxnState::from_code(-1), None);
        assert_eq!(TxnState::from_name("ongoing"), None);
    }

    #[test]
    fn key_bytes() {
        let k = txn_key("tx");
        assert_eq!(&k[..], &[0, 0, 0, 2, b't', b'x']);
        assert_eq!(decode_txn_key(&k).unwrap(), Some("tx".to_string()));
        assert_eq!(decode_txn_key(&[0, 1, 0, 0]).unwrap(), None);
        assert!(decode_txn_key(&[0, 0, 0, 3, b'a']).is_err());
    }

    #[test]
    fn v0_hand_written_bytes() {
        let mut b = vec![0, 0];
        b.extend_from_slice(&1000i64.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(&60_000i32.to_be_bytes());
        b.push(1); // Ongoing
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&[0, 6]);
        b.extend_from_slice(b"orders");
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&[0, 1, b't']);
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes());
        b.extend_from_slice(&5_000i64.to_be_bytes());
        b.extend_from_slice(&4_000i64.to_be_bytes());
        assert_eq!(TxnLogValue::decode(&b).unwrap(), ongoing());
        assert_eq!(&ongoing().encode()[..], &b[..]);
    }

    #[test]
    fn v0_empty_writes_null_partitions() {
        let v = TxnLogValue {
            state: TxnState::Empty,
            partitions: vec![],
            start_timestamp_ms: -1,
            ..ongoing()
        };
        let b = v.encode();
        assert_eq!(&b[17..21], &[255, 255, 255, 255]);
        assert_eq!(b.len(), 2 + 8 + 2 + 4 + 1 + 4 + 8 + 8);
        assert_eq!(TxnLogValue::decode(&b).unwrap(), v);
        // Another state with no partitions writes an empty (not null) array.
        let done = TxnLogValue {
            state: TxnState::CompleteCommit,
            ..v
        };
        assert_eq!(&done.encode()[17..21], &[0, 0, 0, 0]);
    }

    #[test]
    fn v1_hand_written_bytes() {
        let mut b = vec![0, 1];
        b.extend_from_slice(&1000i64.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(&60_000i32.to_be_bytes());
        b.push(1);
        b.push(3); // two partitions entries, compact
        b.push(7); // "orders"
        b.extend_from_slice(b"orders");
        b.push(3);
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.push(0); // struct tags
        b.push(2);
        b.push(b't');
        b.push(2);
        b.extend_from_slice(&7i32.to_be_bytes());
        b.push(0);
        b.extend_from_slice(&5_000i64.to_be_bytes());
        b.extend_from_slice(&4_000i64.to_be_bytes());
        b.push(3); // three tagged fields, one unknown
        b.extend_from_slice(&[0, 8]);
        b.extend_from_slice(&999i64.to_be_bytes());
        b.extend_from_slice(&[2, 2, 0, 2]);
        b.extend_from_slice(&[9, 1, 0xAA]);
        let v = TxnLogValue::decode(&b).unwrap();
        assert_eq!(
            v,
            TxnLogValue {
                previous_producer_id: 999,
                client_transaction_version: 2,
                ..ongoing()
            }
        );
        // Re-encoding drops only the unknown tag.
        let mut expected = b[..b.len() - 3].to_vec();
        let count_at = expected.len() - 4 - 10 - 1;
        expected[count_at] = 2;
        let re = v.encode_version(1);
        assert_eq!(&re[..], &expected[..]);
        assert_eq!(TxnLogValue::decode(&re).unwrap(), v);
    }

    #[test]
    fn round_trips_every_state_and_version() {
        for state in TxnState::ALL {
            for version in [0, 1] {
                let v = TxnLogValue {
                    state,
                    next_producer_id: if version == 1 { 77 } else { -1 },
                    ..ongoing()
                };
                assert_eq!(TxnLogValue::decode(&v.encode_version(version)).unwrap(), v);
            }
        }
        // Many partitions: multi-byte varints.
        let big = TxnLogValue {
            partitions: vec![("x".repeat(200), (0..300).collect())],
            ..ongoing()
        };
        assert_eq!(TxnLogValue::decode(&big.encode_version(1)).unwrap(), big);
        assert_eq!(TxnLogValue::decode(&big.encode()).unwrap(), big);
    }

    #[test]
    fn hostile_values_are_errors() {
        for version in [0, 1] {
            let full = ongoing().encode_version(version);
            for cut in 0..full.len() {
                assert!(
                    TxnLogValue::decode(&full[..cut]).is_err(),
                    "v{version} cut {cut}"
                );
            }
        }
        let mut bad_status = ongoing().encode().to_vec();
        bad_status[16] = 42;
        assert!(matches!(
            TxnLogValue::decode(&bad_status),
            Err(RecordError::InvalidField { value: 42, .. })
        ));
        assert!(matches!(
            TxnLogValue::decode(&[0, 2]),
            Err(RecordError::UnsupportedVersion { version: 2, .. })
        ));
        // A partition count of two billion with nothing behind it.
        let mut huge = ongoing().encode()[..17].to_vec();
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(TxnLogValue::decode(&huge).is_err());
        // A varint that never ends.
        let mut endless = ongoing().encode_version(1)[..17].to_vec();
        endless.extend_from_slice(&[0xFF; 6]);
        assert!(TxnLogValue::decode(&endless).is_err());
    }
}
