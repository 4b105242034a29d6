//! Idempotent producer state of one partition: a plain state machine, no I/O.
//!
//! For each producer id the partition remembers the epoch and the last few batches
//! (`RECENT_BATCHES_MAX`, as many as a client may have in flight), so that a retried batch is
//! recognised and acknowledged with its original offset instead of being appended twice, and a gap
//! in sequence numbers is refused with OUT_OF_ORDER_SEQUENCE_NUMBER. The state is rebuilt on start
//! by replaying batch headers from the log (`observe`).

use std::collections::{HashMap, VecDeque};

use shardlog_protocol::batch::BatchHeader;

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
            None => {
                if h.base_sequence == 0 {
                    SequenceCheck::Append
                } else {
                    // A producer we know nothing about (new to this partition, or its state
                    // expired with retention) must start at sequence 0.
                    SequenceCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
                }
            }
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

    /// Records that `h` was (or will be, for a pending table) appended at its base offset.
    pub fn observe(&mut self, h: &BatchHeader) {
        if !h.has_producer_id() || h.base_sequence < 0 {
            return;
        }
        let (id, epoch) = producer_of(h);
        let entry = self.producers.entry(id).or_default();
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.recent.clear();
        }
        if entry.recent.len() == RECENT_BATCHES_MAX {
            entry.recent.pop_front();
        }
        entry.recent.push_back(RecentBatch {
            first_seq: h.base_sequence,
            last_seq: last_seq_of(h),
            base_offset: h.base_offset,
        });
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
        self.producers.extend(pending.producers);
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
        t.observe(&b0);
        assert_eq!(
            t.check(&b0, &empty),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
        let b1 = header(7, 0, 3, 2, 103);
        assert_eq!(t.check(&b1, &empty), SequenceCheck::Append);
        t.observe(&b1);
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
        let unknown = header(8, 0, 4, 1, 0);
        assert_eq!(
            t.check(&unknown, &empty),
            SequenceCheck::Reject(errors::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(
            t.check(&header(-1, -1, -1, 1, 0), &empty),
            SequenceCheck::Append
        );
    }

    #[test]
    fn pending_overlay_sees_earlier_batches_of_the_same_group() {
        let mut t = ProducerStateTable::default();
        t.observe(&header(1, 0, 0, 1, 0));
        let mut pending = ProducerStateTable::default();
        t.fork_entry(&mut pending, ProducerId(1));
        let b1 = header(1, 0, 1, 1, 1);
        assert_eq!(t.check(&b1, &pending), SequenceCheck::Append);
        pending.observe(&b1);
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
            t.observe(&header(1, 0, i, 1, i as i64));
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

    #[test]
    fn sequence_wraps() {
        let mut t = ProducerStateTable::default();
        t.observe(&header(1, 0, i32::MAX - 1, 2, 0));
        let e = ProducerStateTable::default();
        assert_eq!(t.check(&header(1, 0, 0, 1, 2), &e), SequenceCheck::Append);
    }
}
