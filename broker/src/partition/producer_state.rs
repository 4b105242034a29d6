//! Idempotent producer state of one partition: a plain state machine, no I/O.
//!
//! For each producer id the partition remembers the epoch and the last few batches
//! (`RECENT_BATCHES_MAX`, as many as a client may have in flight), so that a retried batch is
//! recognised and acknowledged with its original offset instead of being appended twice, and a gap
//! in sequence numbers is refused with OUT_OF_ORDER_SEQUENCE_NUMBER. The state is rebuilt on start
//! from the newest producer state snapshot (`to_snapshot` / `from_snapshot`) and the batch
//! headers after it (`observe_batch`).
//!
//! A producer this partition has no state for (never seen, its state expired, or the state
//! was rebuilt from a log whose retention removed its batches) is accepted at any sequence,
//! as Kafka does since 2.5 (KIP-360); a known producer with a gap is still refused. A producer
//! whose last write is older than `producer.id.expiration.ms` and that has no open transaction
//! is forgotten (`expire`).
//!
//! Transactions (KIP-98): per producer, the first offset of its transaction open on this
//! partition (set by its first transactional batch, ended by a COMMIT or ABORT marker,
//! `complete_txn`), and the set of open transactions ordered by first offset, whose smallest
//! bounds the last stable offset. A producer with an open transaction may not write
//! non-transactional batches (INVALID_TXN_STATE).

use std::collections::{BTreeMap, HashMap, VecDeque};

use shardlog_protocol::batch::{BatchHeader, ControlRecord, ControlType};
use shardlog_storage::producer_snapshot::{SnapshotBatch, SnapshotProducer};

use crate::base::errors;
use crate::base::ids::{ProducerEpoch, ProducerId};

/// Kafka clients keep at most five requests in flight with idempotence on.
pub const RECENT_BATCHES_MAX: usize = 5;

/// How long after a partition refused a produce with a retriable error before appending (or
/// became leader) a sequence gap is answered with that error rather than
/// OUT_OF_ORDER_SEQUENCE_NUMBER.
///
/// Why: a client pipelines requests R1, R2 (sequences s, s + 1). If R1 is refused (this
/// broker did not lead yet, or the ISR was too small) and R2 arrives once it leads (or the
/// ISR grew), R2 is a gap. OUT_OF_ORDER_SEQUENCE_NUMBER makes librdkafka bump its producer
/// epoch and renumber everything unacknowledged, including records another partition did
/// append but answered with an error: those are then written twice (seen in the soak). With
/// R1's retriable error the client retries R1 then R2, in order, and nothing is renumbered.
/// A genuine gap (records lost by an unclean election) still gets OUT_OF_ORDER once the
/// grace is over.
pub const GAP_GRACE_MS: i64 = 3_000;

/// A produce refused before appending with a retriable error, or a leadership that began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub at_ms: i64,
    pub code: i16,
}

/// What to answer for a batch refused with `code`, given the partition's last `Refusal`.
pub fn gap_answer(code: i16, last_refusal: Option<Refusal>, now_ms: i64) -> i16 {
    match last_refusal {
        Some(r)
            if code == errors::OUT_OF_ORDER_SEQUENCE_NUMBER
                && (0..GAP_GRACE_MS).contains(&(now_ms - r.at_ms)) =>
        {
            r.code
        }
        _ => code,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecentBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    epoch: ProducerEpoch,
    recent: VecDeque<RecentBatch>,
    /// First offset of this producer's open transaction on this partition.
    txn_first_offset: Option<i64>,
    /// The coordinator epoch of the last marker (None: none seen since the state was built).
    coordinator_epoch: Option<i32>,
    /// Largest timestamp of the producer's last batch.
    last_timestamp: i64,
    /// Wall clock (ms) of the producer's last batch or marker here: what expiry looks at.
    last_write_ms: i64,
}

/// One producer of a partition, as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: ProducerId,
    pub epoch: ProducerEpoch,
    /// -1 when the producer has written no batch with a sequence.
    pub last_sequence: i32,
    pub last_timestamp: i64,
    /// -1 when no marker of this producer was seen.
    pub coordinator_epoch: i32,
    /// -1 without an open transaction.
    pub txn_start_offset: i64,
}

/// A transaction that a marker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: ProducerId,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
}

impl ProducerEntry {
    fn last_seq(&self) -> Option<i32> {
        self.recent.back().map(|b| b.last_seq)
    }
}

/// What to do with one incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New, in order (or not idempotent): append it.
    Append,
    /// Already appended at this base offset: acknowledge without appending.
    Duplicate { base_offset: i64 },
    /// Refuse with this Kafka error code.
    Reject(i16),
}

/// The producer id and epoch a batch header carries (integers on the wire).
pub fn producer_of(h: &BatchHeader) -> (ProducerId, ProducerEpoch) {
    (ProducerId(h.producer_id), ProducerEpoch(h.producer_epoch))
}

fn last_seq_of(h: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX back to 0, as in Kafka.
    ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Producer state of one partition. Lives on the partition's shard.
#[derive(Debug, Default, Clone)]
pub struct ProducerStateTable {
    producers: HashMap<ProducerId, ProducerEntry>,
    /// Open transactions by first offset (committed tables; a pending overlay's is unused).
    ongoing: BTreeMap<i64, ProducerId>,
}

impl ProducerStateTable {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides what to do with `h`, looking at committed state and at `pending` (batches of the
    /// same append group accepted before this one but not yet written).
    pub fn check(&self, h: &BatchHeader, pending: &ProducerStateTable) -> SequenceCheck {
        let verdict = self.check_sequence(h, pending);
        if verdict == SequenceCheck::Append && h.has_producer_id() && !h.is_transactional() {
            // Kafka: a producer with an open transaction writes transactional batches only.
            let (id, _) = producer_of(h);
            let entry = pending
                .producers
                .get(&id)
                .or_else(|| self.producers.get(&id));
            if entry.is_some_and(|e| e.txn_first_offset.is_some()) {
                return SequenceCheck::Reject(errors::INVALID_TXN_STATE);
            }
        }
        verdict
    }

    fn check_sequence(&self, h: &BatchHeader, pending: &ProducerStateTable) -> SequenceCheck {
        if !h.has_producer_id() || h.base_sequence < 0 {
            return SequenceCheck::Append;
        }
        let (id, epoch) = producer_of(h);
        let entry = pending
            .producers
            .get(&id)
            .or_else(|| self.producers.get(&id));
        let last_seq = last_seq_of(h);
        match entry {
            // A producer we know nothing about (new to this partition, expired, or its batches
            // removed by retention before the state was rebuilt) may continue at any sequence
            // (KIP-360): refusing it would make the client reset its sequences for nothing.
            None => SequenceCheck::Append,
            Some(e) if epoch < e.epoch => SequenceCheck::Reject(errors::INVALID_PRODUCER_EPOCH),
            Some(e) if epoch > e.epoch => {
                if h.base_sequence == 0 {
                    SequenceCheck::Append
                } else {
                    SequenceCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
                }
            }
            Some(e) => {
                if let Some(dup) = e
                    .recent
                    .iter()
                    .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
                {
                    return SequenceCheck::Duplicate {
                        base_offset: dup.base_offset,
                    };
                }
                match e.last_seq() {
                    Some(prev) if next_seq(prev) == h.base_sequence => SequenceCheck::Append,
                    None if h.base_sequence == 0 => SequenceCheck::Append,
                    _ => SequenceCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER),
                }
            }
        }
    }

    /// Records that `h` was (or will be, for a pending table) appended at its base offset, at
    /// wall clock `now_ms`.
    pub fn observe(&mut self, h: &BatchHeader, now_ms: i64) {
        // A group coordinator writes TxnOffsetCommit batches transactional but without a
        // sequence (as Kafka's coordinator, whose batches skip the sequence checks): they
        // open the producer's transaction here all the same.
        if !h.has_producer_id() || (h.base_sequence < 0 && !h.is_transactional()) {
            return;
        }
        let (id, epoch) = producer_of(h);
        let entry = self.producers.entry(id).or_default();
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.recent.clear();
        }
        entry.last_timestamp = h.max_timestamp;
        entry.last_write_ms = now_ms;
        if h.base_sequence >= 0 {
            if entry.recent.len() == RECENT_BATCHES_MAX {
                entry.recent.pop_front();
            }
            entry.recent.push_back(RecentBatch {
                first_seq: h.base_sequence,
                last_seq: last_seq_of(h),
                base_offset: h.base_offset,
            });
        }
        if h.is_transactional() && !h.is_control() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(h.base_offset);
            self.ongoing.insert(h.base_offset, id);
        }
    }

    /// Replays one batch of the log (start-up scan, a follower's appends): `control` is the
    /// first record of a control batch. Returns the transaction a marker ended.
    pub fn observe_batch(
        &mut self,
        h: &BatchHeader,
        control: Option<ControlRecord>,
        now_ms: i64,
    ) -> Option<CompletedTxn> {
        if !h.is_control() {
            self.observe(h, now_ms);
            return None;
        }
        let commit = match control.map(|c| c.kind) {
            Some(ControlType::Commit) => true,
            Some(ControlType::Abort) => false,
            _ => return None,
        };
        let (id, epoch) = producer_of(h);
        let coordinator_epoch = control.map_or(-1, |c| c.coordinator_epoch);
        self.complete_txn(id, epoch, coordinator_epoch, commit, h.base_offset, now_ms)
    }

    /// Whether a marker of `producer_id` at `epoch` from a coordinator at `coordinator_epoch`
    /// may be written: refused with INVALID_PRODUCER_EPOCH when the producer has a newer epoch
    /// here, TRANSACTION_COORDINATOR_FENCED when a newer coordinator wrote a marker already.
    pub fn check_marker(
        &self,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        coordinator_epoch: i32,
    ) -> Result<(), i16> {
        let Some(e) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < e.epoch {
            return Err(errors::INVALID_PRODUCER_EPOCH);
        }
        if e.coordinator_epoch.is_some_and(|c| c > coordinator_epoch) {
            return Err(errors::TRANSACTION_COORDINATOR_FENCED);
        }
        Ok(())
    }

    /// A COMMIT or ABORT marker of `producer_id` at offset `marker_offset` was appended: its
    /// open transaction (if any) ends. The marker's epoch becomes the producer's (a newer one
    /// forgets its sequences, as a data batch of a new epoch does). A marker with no open
    /// transaction completes nothing. `now_ms`: the wall clock of the marker's append.
    pub fn complete_txn(
        &mut self,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        coordinator_epoch: i32,
        commit: bool,
        marker_offset: i64,
        now_ms: i64,
    ) -> Option<CompletedTxn> {
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.recent.clear();
        }
        entry.coordinator_epoch = Some(coordinator_epoch);
        entry.last_write_ms = now_ms;
        let first = entry.txn_first_offset.take()?;
        self.ongoing.remove(&first);
        Some(CompletedTxn {
            producer_id,
            first_offset: first,
            last_offset: marker_offset,
            aborted: !commit,
        })
    }

    /// The first offset of the earliest open transaction.
    pub fn first_ongoing_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// The open transactions: (first offset, producer), by first offset.
    pub fn ongoing(&self) -> impl Iterator<Item = (i64, ProducerId)> + '_ {
        self.ongoing.iter().map(|(o, p)| (*o, *p))
    }

    /// The last stable offset as a marker left it, for its `.txnindex` entry (Kafka's rule):
    /// the first offset of the earliest transaction still open, else one past the marker.
    pub fn stable_offset_after(&self, marker_offset: i64) -> i64 {
        self.first_ongoing_offset().unwrap_or(marker_offset + 1)
    }

    /// Every producer known here, by producer id (DescribeProducers).
    pub fn describe(&self) -> Vec<ProducerView> {
        let mut out: Vec<ProducerView> = self
            .producers
            .iter()
            .map(|(id, e)| ProducerView {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.last_seq().unwrap_or(-1),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch.unwrap_or(-1),
                txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_by_key(|v| v.producer_id.0);
        out
    }

    /// Seeds a pending overlay with the committed entries `h` may touch.
    pub fn fork_entry(&self, pending: &mut ProducerStateTable, producer_id: ProducerId) {
        if let Some(e) = self.producers.get(&producer_id) {
            pending
                .producers
                .entry(producer_id)
                .or_insert_with(|| e.clone());
        }
    }

    /// Makes a pending overlay's entries committed (after the write succeeded).
    pub fn commit(&mut self, pending: ProducerStateTable) {
        for (id, e) in &pending.producers {
            let old = self.producers.get(id).and_then(|o| o.txn_first_offset);
            if old != e.txn_first_offset {
                if let Some(o) = old {
                    self.ongoing.remove(&o);
                }
                if let Some(n) = e.txn_first_offset {
                    self.ongoing.insert(n, *id);
                }
            }
        }
        self.producers.extend(pending.producers);
    }

    /// Forgets the producers with no open transaction whose last write here is at least
    /// `expiration_ms` old at `now_ms` (`producer.id.expiration.ms`). Returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_write_ms) < expiration_ms
        });
        before - self.producers.len()
    }

    /// The table as snapshot records, by producer id.
    pub fn to_snapshot(&self) -> Vec<SnapshotProducer> {
        let mut out: Vec<SnapshotProducer> = self
            .producers
            .iter()
            .map(|(id, e)| SnapshotProducer {
                producer_id: id.0,
                producer_epoch: e.epoch.0,
                coordinator_epoch: e.coordinator_epoch.unwrap_or(-1),
                txn_first_offset: e.txn_first_offset.unwrap_or(-1),
                last_timestamp: e.last_timestamp,
                last_write_ms: e.last_write_ms,
                batches: e
                    .recent
                    .iter()
                    .map(|b| SnapshotBatch {
                        first_seq: b.first_seq,
                        last_seq: b.last_seq,
                        base_offset: b.base_offset,
                    })
                    .collect(),
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    /// The table a snapshot describes (`to_snapshot`'s inverse). Only the last
    /// `RECENT_BATCHES_MAX` batches of a producer are kept. Refused (`Err` with the reason)
    /// when the records contradict each other: a producer twice, or two open transactions
    /// starting at one offset.
    pub fn from_snapshot(records: &[SnapshotProducer]) -> Result<ProducerStateTable, String> {
        let mut t = ProducerStateTable::default();
        for r in records {
            let id = ProducerId(r.producer_id);
            let skip = r.batches.len().saturating_sub(RECENT_BATCHES_MAX);
            let entry = ProducerEntry {
                epoch: ProducerEpoch(r.producer_epoch),
                recent: r.batches[skip..]
                    .iter()
                    .map(|b| RecentBatch {
                        first_seq: b.first_seq,
                        last_seq: b.last_seq,
                        base_offset: b.base_offset,
                    })
                    .collect(),
                txn_first_offset: (r.txn_first_offset >= 0).then_some(r.txn_first_offset),
                coordinator_epoch: (r.coordinator_epoch >= 0).then_some(r.coordinator_epoch),
                last_timestamp: r.last_timestamp,
                last_write_ms: r.last_write_ms,
            };
            if let Some(first) = entry.txn_first_offset {
                if t.ongoing.insert(first, id).is_some() {
                    return Err(format!("two open transactions start at offset {first}"));
                }
            }
            if t.producers.insert(id, entry).is_some() {
                return Err(format!("producer {} twice", id.0));
            }
        }
        Ok(t)
    }
}

/// What the log cleaner keeps for producer state.
impl ProducerStateTable {
    /// Producer id → the last offset of its last batch (that batch stays when the log is
    /// cleaned, so the producer's sequence survives a rebuild from the log).
    pub fn last_batch_offsets(&self) -> HashMap<i64, i64> {
        self.producers
            .iter()
            .filter_map(|(id, e)| {
                let b = e.recent.back()?;
                let span = (i64::from(b.last_seq) - i64::from(b.first_seq))
                    .rem_euclid(i64::from(i32::MAX) + 1);
                Some((id.0, b.base_offset + span))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_right_after_a_retriable_refusal_gets_that_refusal() {
        let refused = Some(Refusal {
            at_ms: 10_000,
            code: errors::NOT_LEADER_OR_FOLLOWER,
        });
        let gap = errors::OUT_OF_ORDER_SEQUENCE_NUMBER;
        assert_eq!(
            gap_answer(gap, refused, 10_500),
            errors::NOT_LEADER_OR_FOLLOWER
        );
        assert_eq!(gap_answer(gap, refused, 10_000 + GAP_GRACE_MS), gap);
        assert_eq!(gap_answer(gap, None, 10_500), gap);
        // Other refusals keep their own code.
        assert_eq!(
            gap_answer(errors::INVALID_PRODUCER_EPOCH, refused, 10_500),
            errors::INVALID_PRODUCER_EPOCH
        );
    }

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    #[test]
    fn in_order_duplicate_and_gap() {
        let mut t = ProducerStateTable::default();
        let empty = ProducerStateTable::default();
        let b0 = header(7, 0, 0, 3, 100);
        assert_eq!(t.check(&b0, &empty), SequenceCheck::Append);
        t.observe(&b0, 0);
        assert_eq!(
            t.check(&b0, &empty),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
        let b1 = header(7, 0, 3, 2, 103);
        assert_eq!(t.check(&b1, &empty), SequenceCheck::Append);
        t.observe(&b1, 0);
        let gap = header(7, 0, 9, 1, 0);
        assert_eq!(
            t.check(&gap, &empty),
            SequenceCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        let fenced = header(7, -0 - 1, 5, 1, 0);
        assert_eq!(
            t.check(&fenced, &empty),
            SequenceCheck::Reject(errors::INVALID_PRODUCER_EPOCH)
        );
        let bumped = header(7, 1, 0, 1, 0);
        assert_eq!(t.check(&bumped, &empty), SequenceCheck::Append);
        // A bumped epoch must start at 0 (the producer is known here).
        assert_eq!(
            t.check(&header(7, 1, 4, 1, 0), &empty),
            SequenceCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        // KIP-360: a producer with no state here is accepted at any sequence.
        let unknown = header(8, 0, 4, 1, 0);
        assert_eq!(t.check(&unknown, &empty), SequenceCheck::Append);
        assert_eq!(
            t.check(&header(-1, -1, -1, 1, 0), &empty),
            SequenceCheck::Append
        );
    }

    #[test]
    fn pending_overlay_sees_earlier_batches_of_the_same_group() {
        let mut t = ProducerStateTable::default();
        t.observe(&header(1, 0, 0, 1, 0), 0);
        let mut pending = ProducerStateTable::default();
        t.fork_entry(&mut pending, ProducerId(1));
        let b1 = header(1, 0, 1, 1, 1);
        assert_eq!(t.check(&b1, &pending), SequenceCheck::Append);
        pending.observe(&b1, 0);
        let b2 = header(1, 0, 2, 1, 2);
        assert_eq!(t.check(&b2, &pending), SequenceCheck::Append);
        assert_eq!(
            t.check(&b1, &pending),
            SequenceCheck::Duplicate { base_offset: 1 }
        );
        t.commit(pending);
        assert_eq!(
            t.check(&b1, &ProducerStateTable::default()),
            SequenceCheck::Duplicate { base_offset: 1 }
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.observe(&header(1, 0, i, 1, i as i64), 0);
        }
        let e = ProducerStateTable::default();
        assert_eq!(
            t.check(&header(1, 0, 6, 1, 0), &e),
            SequenceCheck::Duplicate { base_offset: 6 }
        );
        assert_eq!(
            t.check(&header(1, 0, 1, 1, 0), &e),
            SequenceCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
    }

    fn txn(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        let mut h = header(pid, epoch, seq, count, base_offset);
        h.attributes = 0x10;
        h
    }

    fn marker(pid: i64, epoch: i16, offset: i64) -> BatchHeader {
        let mut h = header(pid, epoch, -1, 1, offset);
        h.attributes = 0x30;
        h
    }

    fn control(kind: ControlType, coordinator_epoch: i32) -> Option<ControlRecord> {
        Some(ControlRecord {
            kind,
            coordinator_epoch,
        })
    }

    #[test]
    fn transactions_open_at_their_first_batch_and_end_at_a_marker() {
        let mut t = ProducerStateTable::default();
        let empty = ProducerStateTable::default();
        assert_eq!(t.first_ongoing_offset(), None);
        // Producer 1 opens at 10, producer 2 at 12; a second batch of 1 keeps 10.
        t.observe(&txn(1, 0, 0, 2, 10), 0);
        t.observe(&txn(2, 0, 0, 1, 12), 0);
        t.observe(&txn(1, 0, 2, 1, 13), 0);
        assert_eq!(t.first_ongoing_offset(), Some(10));
        assert_eq!(
            t.ongoing().collect::<Vec<_>>(),
            vec![(10, ProducerId(1)), (12, ProducerId(2))]
        );
        // A non-transactional batch from a producer inside a transaction is refused.
        assert_eq!(
            t.check(&header(1, 0, 3, 1, 0), &empty),
            SequenceCheck::Reject(errors::INVALID_TXN_STATE)
        );
        assert_eq!(t.check(&txn(1, 0, 3, 1, 0), &empty), SequenceCheck::Append);
        // Stale epoch: fenced, for data and markers.
        assert_eq!(
            t.check(&txn(1, -1, 0, 1, 0), &empty),
            SequenceCheck::Reject(errors::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            t.check_marker(ProducerId(1), ProducerEpoch(-1), 0),
            Err(errors::INVALID_PRODUCER_EPOCH)
        );
        // Producer 1 commits at 14: the LSO bound moves to producer 2's first offset.
        assert_eq!(t.check_marker(ProducerId(1), ProducerEpoch(0), 3), Ok(()));
        let done = t.observe_batch(&marker(1, 0, 14), control(ControlType::Commit, 3), 0);
        assert_eq!(
            done,
            Some(CompletedTxn {
                producer_id: ProducerId(1),
                first_offset: 10,
                last_offset: 14,
                aborted: false
            })
        );
        assert_eq!(t.first_ongoing_offset(), Some(12));
        assert_eq!(t.stable_offset_after(14), 12);
        // An older coordinator is fenced once a newer one wrote a marker.
        assert_eq!(
            t.check_marker(ProducerId(1), ProducerEpoch(0), 2),
            Err(errors::TRANSACTION_COORDINATOR_FENCED)
        );
        // Producer 1 may write non-transactional batches again.
        assert_eq!(
            t.check(&header(1, 0, 3, 1, 0), &empty),
            SequenceCheck::Append
        );
        // Producer 2 aborts at 15 with a bumped epoch: nothing open, LSO bound gone.
        let done = t.complete_txn(ProducerId(2), ProducerEpoch(1), 3, false, 15, 0);
        assert_eq!(done.map(|d| (d.first_offset, d.aborted)), Some((12, true)));
        assert_eq!(t.first_ongoing_offset(), None);
        assert_eq!(t.stable_offset_after(15), 16);
        assert_eq!(
            t.check(&txn(2, 0, 1, 1, 0), &empty),
            SequenceCheck::Reject(errors::INVALID_PRODUCER_EPOCH)
        );
        // A marker with no open transaction (or of another kind) completes nothing.
        assert_eq!(
            t.complete_txn(ProducerId(9), ProducerEpoch(0), 3, true, 16, 0),
            None
        );
        assert_eq!(
            t.observe_batch(&marker(2, 1, 17), control(ControlType::Other(2), 3), 0),
            None
        );
        assert_eq!(t.observe_batch(&marker(2, 1, 17), None, 0), None);
    }

    #[test]
    fn a_pending_overlay_opens_transactions_when_committed() {
        let mut t = ProducerStateTable::default();
        let mut pending = ProducerStateTable::default();
        t.fork_entry(&mut pending, ProducerId(4));
        let b = txn(4, 0, 0, 1, 20);
        assert_eq!(t.check(&b, &pending), SequenceCheck::Append);
        pending.observe(&b, 0);
        // Within the same group, the next non-transactional batch of 4 sees the open txn.
        assert_eq!(
            t.check(&header(4, 0, 1, 1, 21), &pending),
            SequenceCheck::Reject(errors::INVALID_TXN_STATE)
        );
        assert_eq!(t.first_ongoing_offset(), None, "not committed yet");
        t.commit(pending);
        assert_eq!(t.first_ongoing_offset(), Some(20));
    }

    #[test]
    fn an_unknown_producer_continues_at_any_sequence_then_gaps_are_refused() {
        let mut t = ProducerStateTable::default();
        let e = ProducerStateTable::default();
        // The state of producer 5 is gone (expired, or retention removed its batches).
        let resumed = header(5, 2, 1_000, 3, 40);
        assert_eq!(t.check(&resumed, &e), SequenceCheck::Append);
        t.observe(&resumed, 0);
        // From then on it is known: the retry is a duplicate, a gap is refused.
        assert_eq!(
            t.check(&resumed, &e),
            SequenceCheck::Duplicate { base_offset: 40 }
        );
        assert_eq!(
            t.check(&header(5, 2, 1_004, 1, 0), &e),
            SequenceCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(
            t.check(&header(5, 2, 1_003, 1, 0), &e),
            SequenceCheck::Append
        );
    }

    #[test]
    fn idle_producers_expire_unless_a_transaction_is_open() {
        let mut t = ProducerStateTable::default();
        t.observe(&header(1, 0, 0, 1, 0), 1_000);
        t.observe(&txn(2, 0, 0, 1, 1), 1_000);
        t.observe(&header(3, 0, 0, 1, 2), 5_000);
        // Nothing is old enough yet.
        assert_eq!(t.expire(5_999, 5_000), 0);
        // Producer 1 is; 2 has an open transaction; 3 wrote later.
        assert_eq!(t.expire(6_000, 5_000), 1);
        let ids: Vec<i64> = t.describe().iter().map(|v| v.producer_id.0).collect();
        assert_eq!(ids, vec![2, 3]);
        // Once its transaction ends (marker at 3, time 7_000), 2 expires in its turn.
        t.complete_txn(ProducerId(2), ProducerEpoch(0), 0, true, 3, 7_000);
        assert_eq!(t.expire(11_000, 5_000), 1);
        assert_eq!(t.expire(12_000, 5_000), 1);
        assert!(t.is_empty());
        // An expired producer is unknown again: any sequence goes.
        assert_eq!(
            t.check(&header(1, 0, 9, 1, 0), &ProducerStateTable::default()),
            SequenceCheck::Append
        );
    }

    #[test]
    fn snapshot_records_round_trip() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.observe(&header(1, 0, i, 1, i as i64), 100 + i as i64);
        }
        t.observe(&txn(2, 3, 0, 2, 7), 200);
        t.complete_txn(ProducerId(4), ProducerEpoch(1), 9, false, 9, 300);
        t.observe(&txn(5, 0, 0, 1, 10), 400);
        let records = t.to_snapshot();
        assert_eq!(
            records.iter().map(|r| r.producer_id).collect::<Vec<_>>(),
            vec![1, 2, 4, 5]
        );
        assert_eq!(records[0].batches.len(), RECENT_BATCHES_MAX);
        assert_eq!(records[0].last_write_ms, 106);
        let back = ProducerStateTable::from_snapshot(&records).unwrap();
        assert_eq!(back.describe(), t.describe());
        assert_eq!(
            back.ongoing().collect::<Vec<_>>(),
            t.ongoing().collect::<Vec<_>>()
        );
        assert_eq!(back.to_snapshot(), records);
        let e = ProducerStateTable::default();
        for h in [
            header(1, 0, 6, 1, 0),
            header(1, 0, 8, 1, 0),
            txn(2, 3, 2, 1, 0),
        ] {
            assert_eq!(back.check(&h, &e), t.check(&h, &e), "{h:?}");
        }
        assert_eq!(
            back.check_marker(ProducerId(4), ProducerEpoch(1), 8),
            Err(errors::TRANSACTION_COORDINATOR_FENCED)
        );
        // Contradictory records are refused.
        let mut twice = records.clone();
        twice.push(records[0].clone());
        assert!(ProducerStateTable::from_snapshot(&twice).is_err());
        let mut same_start = records.clone();
        same_start[3].txn_first_offset = 7;
        assert!(ProducerStateTable::from_snapshot(&same_start).is_err());
    }

    #[test]
    fn sequence_wraps() {
        let mut t = ProducerStateTable::default();
        t.observe(&header(1, 0, i32::MAX - 1, 2, 0), 0);
        let e = ProducerStateTable::default();
        assert_eq!(t.check(&header(1, 0, 0, 1, 2), &e), SequenceCheck::Append);
    }
}
