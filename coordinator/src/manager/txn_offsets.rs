//! TxnOffsetCommit (KIP-98) and its completion by transaction markers, and KIP-447's
//! `require_stable` for OffsetFetch.
//!
//! Offsets committed inside a transaction are written to `__consumer_offsets` in a transactional
//! batch (the producer id and epoch of the transaction) and stay *pending*, invisible to
//! OffsetFetch, until the transaction's marker lands on this partition: COMMIT makes them the
//! group's committed offsets, ABORT drops them.

use std::collections::BTreeMap;

use crate::api::{
    CommitPartition, OffsetFetchGroup, OffsetFetchGroupResult, Record, TopicPartitionErrors,
};
use crate::codes;
use crate::config::MAX_STRING_BYTES;
use crate::group::{CommittedOffset, Group};
use crate::records::{offset_commit_key, OffsetCommitValue};

use super::membership::validate_current_member;
use super::{Api, GroupManager};

/// Pending transactional offsets: producer id → group → (topic, partition) → offset.
pub(crate) type PendingTxnOffsets =
    BTreeMap<i64, BTreeMap<String, BTreeMap<(String, i32), CommittedOffset>>>;

/// TxnOffsetCommit, any version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOffsetCommitRequest {
    /// Transactional id of the producer (informational: the transaction coordinator checked it).
    pub transactional_id: String,
    /// Group id.
    pub group_id: String,
    /// Producer id of the transaction.
    pub producer_id: i64,
    /// Producer epoch of the transaction.
    pub producer_epoch: i16,
    /// Generation of the committing member (v3+), -1 if not given.
    pub generation_id: i32,
    /// Member id (v3+), "" if not given.
    pub member_id: String,
    /// Static instance id (v3+), if any.
    pub group_instance_id: Option<String>,
    /// Topic name with its partitions.
    pub topics: Vec<(String, Vec<CommitPartition>)>,
}

/// Records to append to `__consumer_offsets` as one *transactional* batch, written with the
/// transaction's producer id and epoch (so the COMMIT or ABORT marker settles them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionalBatch {
    /// Producer id to write the batch with.
    pub producer_id: i64,
    /// Producer epoch to write the batch with.
    pub producer_epoch: i16,
    /// Offset commit records.
    pub records: Vec<Record>,
}

impl GroupManager {
    /// TxnOffsetCommit: per-partition errors in request order, and the batch to append
    /// (transactionally) when any partition was accepted; the reply is sent once it is durable.
    /// The offsets stay pending until [`GroupManager::complete_txn`].
    ///
    /// Validation as Kafka's: a member id, when given, must be a member (UNKNOWN_MEMBER_ID,
    /// FENCED_INSTANCE_ID for a replaced static member); a generation, when given, must be the
    /// group's (ILLEGAL_GENERATION). Commits are accepted in any group state. If the append
    /// fails, call [`GroupManager::complete_txn`] with `commit = false` for this producer id (or
    /// reload), so the pending offsets do not linger.
    pub fn txn_offset_commit(
        &mut self,
        now_ms: i64,
        req: TxnOffsetCommitRequest,
    ) -> (TopicPartitionErrors, Option<TransactionalBatch>) {
        let all = |code: i16| -> TopicPartitionErrors {
            req.topics
                .iter()
                .map(|(t, ps)| (t.clone(), ps.iter().map(|p| (p.partition, code)).collect()))
                .collect()
        };
        if let Some(code) = self.group_status_error(&req.group_id, Api::OffsetCommit) {
            return (all(code), None);
        }
        let verdict = match self.groups.get(&req.group_id) {
            Some(group) => validate_txn_commit(group, &req),
            // An unknown group can only take commits from outside group management.
            None if req.generation_id >= 0 => Some(codes::ILLEGAL_GENERATION),
            None if !req.member_id.is_empty() => Some(codes::UNKNOWN_MEMBER_ID),
            None => None,
        };
        if let Some(code) = verdict {
            return (all(code), None);
        }
        let metadata_max = self.config.offset_metadata_max_bytes;
        let pending = self
            .txn_offsets
            .entry(req.producer_id)
            .or_default()
            .entry(req.group_id.clone())
            .or_default();
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(req.topics.len());
        for (topic, parts) in req.topics {
            let mut codes_out = Vec::with_capacity(parts.len());
            for p in parts {
                let metadata = p.metadata.unwrap_or_default();
                let code = if topic.len() > MAX_STRING_BYTES {
                    codes::INVALID_TOPIC_EXCEPTION
                } else if metadata.len() > metadata_max {
                    codes::OFFSET_METADATA_TOO_LARGE
                } else {
                    let value = CommittedOffset {
                        offset: p.offset,
                        leader_epoch: p.leader_epoch,
                        metadata,
                        commit_timestamp_ms: now_ms,
                        expire_timestamp_ms: None,
                    };
                    records.push(Record {
                        key: offset_commit_key(&req.group_id, &topic, p.partition),
                        value: Some(encode(&value)),
                    });
                    pending.insert((topic.clone(), p.partition), value);
                    codes::NONE
                };
                codes_out.push((p.partition, code));
            }
            results.push((topic, codes_out));
        }
        self.drop_empty_pending(req.producer_id);
        let batch = (!records.is_empty()).then_some(TransactionalBatch {
            producer_id: req.producer_id,
            producer_epoch: req.producer_epoch,
            records,
        });
        (results, batch)
    }

    /// The COMMIT (`commit`) or ABORT marker of `producer_id` was written to this partition:
    /// its pending offsets become committed offsets, or are dropped. Nothing is persisted: the
    /// records are already in the log and the marker settles them.
    pub fn complete_txn(&mut self, now_ms: i64, producer_id: i64, commit: bool) {
        let Some(by_group) = self.txn_offsets.remove(&producer_id) else {
            return;
        };
        if !commit || !self.active {
            return;
        }
        for (group_id, offsets) in by_group {
            let group = self
                .groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(group_id, now_ms));
            for ((topic, partition), value) in offsets {
                group
                    .offsets
                    .entry(topic)
                    .or_default()
                    .insert(partition, value);
            }
        }
    }

    /// Whether any transaction has offsets pending for this group.
    pub fn has_pending_txn_offsets(&self, group_id: &str) -> bool {
        self.txn_offsets.values().any(|g| g.contains_key(group_id))
    }

    /// OffsetFetch with KIP-447's `require_stable` (v7+): a partition with transactional
    /// offsets still pending answers UNSTABLE_OFFSET_COMMIT (offset -1), so the consumer
    /// retries once the transaction is settled. Without it, the committed offsets are returned
    /// and pending ones are ignored.
    pub fn fetch_offsets_stable(
        &self,
        groups: &[OffsetFetchGroup],
        require_stable: bool,
    ) -> Vec<OffsetFetchGroupResult> {
        let mut out = self.fetch_offsets(groups);
        if !require_stable {
            return out;
        }
        for result in &mut out {
            if result.error_code != codes::NONE {
                continue;
            }
            for (topic, parts) in &mut result.topics {
                for p in parts {
                    let pending = self.txn_offsets.values().any(|g| {
                        g.get(&result.group_id)
                            .is_some_and(|o| o.contains_key(&(topic.clone(), p.partition)))
                    });
                    if pending {
                        p.committed_offset = -1;
                        p.committed_leader_epoch = -1;
                        p.metadata = String::new();
                        p.error_code = codes::UNSTABLE_OFFSET_COMMIT;
                    }
                }
            }
        }
        out
    }

    pub(crate) fn drop_empty_pending(&mut self, producer_id: i64) {
        if let Some(g) = self.txn_offsets.get_mut(&producer_id) {
            g.retain(|_, o| !o.is_empty());
            if g.is_empty() {
                self.txn_offsets.remove(&producer_id);
            }
        }
    }
}

/// Kafka's checks for TxnOffsetCommit (looser than OffsetCommit's: any state, optional ids).
fn validate_txn_commit(group: &Group, req: &TxnOffsetCommitRequest) -> Option<i16> {
    if !req.member_id.is_empty() || req.group_instance_id.is_some() {
        if let Some(code) =
            validate_current_member(group, &req.member_id, req.group_instance_id.as_deref())
        {
            return Some(code);
        }
    }
    (req.generation_id >= 0 && req.generation_id != group.generation_id)
        .then_some(codes::ILLEGAL_GENERATION)
}

pub(crate) fn encode(c: &CommittedOffset) -> bytes::Bytes {
    OffsetCommitValue {
        offset: c.offset,
        leader_epoch: c.leader_epoch,
        metadata: c.metadata.clone(),
        commit_timestamp: c.commit_timestamp_ms,
        expire_timestamp: c.expire_timestamp_ms,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FetchedPartition, OffsetCommitRequest};
    use crate::{GroupConfig, SeededMemberIds};

    fn mgr() -> GroupManager {
        GroupManager::new(GroupConfig::default(), Box::new(SeededMemberIds::new(1))).unwrap()
    }

    fn part(partition: i32, offset: i64) -> CommitPartition {
        CommitPartition {
            partition,
            offset,
            leader_epoch: 4,
            metadata: Some("m".into()),
        }
    }

    fn req(pid: i64, offset: i64) -> TxnOffsetCommitRequest {
        TxnOffsetCommitRequest {
            transactional_id: "tx".into(),
            group_id: "g".into(),
            producer_id: pid,
            producer_epoch: 2,
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            topics: vec![("t".into(), vec![part(0, offset), part(1, offset + 1)])],
        }
    }

    fn fetch(m: &GroupManager, stable: bool) -> Vec<FetchedPartition> {
        let g = OffsetFetchGroup {
            group_id: "g".into(),
            topics: Some(vec![("t".into(), vec![0, 1])]),
        };
        let mut r = m.fetch_offsets_stable(&[g], stable);
        assert_eq!(r[0].error_code, codes::NONE);
        r.remove(0).topics.remove(0).1
    }

    fn offsets(m: &GroupManager, stable: bool) -> Vec<(i64, i16)> {
        fetch(m, stable)
            .into_iter()
            .map(|p| (p.committed_offset, p.error_code))
            .collect()
    }

    #[test]
    fn commit_marker_makes_offsets_visible() {
        let mut m = mgr();
        let (errors, batch) = m.txn_offset_commit(100, req(7, 10));
        assert_eq!(errors, vec![("t".to_string(), vec![(0, 0), (1, 0)])]);
        let batch = batch.unwrap();
        assert_eq!((batch.producer_id, batch.producer_epoch), (7, 2));
        assert_eq!(batch.records.len(), 2);
        assert_eq!(batch.records[0].key, offset_commit_key("g", "t", 0));
        let v = OffsetCommitValue::decode(batch.records[0].value.as_ref().unwrap()).unwrap();
        assert_eq!((v.offset, v.leader_epoch, v.commit_timestamp), (10, 4, 100));
        // Pending: invisible, and unstable for require_stable.
        assert!(m.has_pending_txn_offsets("g"));
        assert_eq!(offsets(&m, false), vec![(-1, 0), (-1, 0)]);
        assert_eq!(
            offsets(&m, true),
            vec![
                (-1, codes::UNSTABLE_OFFSET_COMMIT),
                (-1, codes::UNSTABLE_OFFSET_COMMIT)
            ]
        );
        // Another producer's marker changes nothing.
        m.complete_txn(150, 8, true);
        assert!(m.has_pending_txn_offsets("g"));
        m.complete_txn(200, 7, true);
        assert!(!m.has_pending_txn_offsets("g"));
        assert_eq!(offsets(&m, true), vec![(10, 0), (11, 0)]);
        let p = &fetch(&m, true)[0];
        assert_eq!((p.committed_leader_epoch, p.metadata.as_str()), (4, "m"));
    }

    #[test]
    fn abort_marker_drops_offsets() {
        let mut m = mgr();
        let simple = OffsetCommitRequest {
            group_id: "g".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            topics: vec![("t".into(), vec![part(0, 5)])],
        };
        let _ = m.commit_offsets(50, simple);
        let _ = m.txn_offset_commit(100, req(7, 10));
        // Only partition 0 has a committed offset; both are unstable.
        assert_eq!(offsets(&m, false), vec![(5, 0), (-1, 0)]);
        assert_eq!(offsets(&m, true)[0], (-1, codes::UNSTABLE_OFFSET_COMMIT));
        m.complete_txn(200, 7, false);
        assert!(!m.has_pending_txn_offsets("g"));
        assert_eq!(offsets(&m, true), vec![(5, 0), (-1, 0)]);
    }

    #[test]
    fn validation() {
        let mut m = mgr();
        // An unknown group: no generation or member can be right.
        let (e, b) = m.txn_offset_commit(
            0,
            TxnOffsetCommitRequest {
                generation_id: 1,
                ..req(7, 1)
            },
        );
        assert_eq!(e[0].1[0].1, codes::ILLEGAL_GENERATION);
        assert!(b.is_none());
        let (e, _) = m.txn_offset_commit(
            0,
            TxnOffsetCommitRequest {
                member_id: "ghost".into(),
                ..req(7, 1)
            },
        );
        assert_eq!(e[0].1[0].1, codes::UNKNOWN_MEMBER_ID);
        assert!(!m.has_pending_txn_offsets("g"));
        // An existing group (generation 0, no members).
        let _ = m.commit_offsets(
            0,
            OffsetCommitRequest {
                group_id: "g".into(),
                generation_id: -1,
                member_id: String::new(),
                group_instance_id: None,
                topics: vec![("t".into(), vec![part(0, 1)])],
            },
        );
        let (e, _) = m.txn_offset_commit(
            0,
            TxnOffsetCommitRequest {
                member_id: "ghost".into(),
                ..req(7, 1)
            },
        );
        assert_eq!(e[0].1[0].1, codes::UNKNOWN_MEMBER_ID);
        let (e, _) = m.txn_offset_commit(
            0,
            TxnOffsetCommitRequest {
                generation_id: 3,
                ..req(7, 1)
            },
        );
        assert_eq!(e[0].1[0].1, codes::ILLEGAL_GENERATION);
        // Metadata too large: that partition only.
        let mut big = req(7, 1);
        big.topics[0].1[1].metadata = Some("x".repeat(5000));
        let (e, b) = m.txn_offset_commit(0, big);
        assert_eq!(
            e[0].1,
            vec![(0, codes::NONE), (1, codes::OFFSET_METADATA_TOO_LARGE)]
        );
        assert_eq!(b.unwrap().records.len(), 1);
        // Not this partition's group.
        let mut other = GroupManager::new(
            GroupConfig {
                partition_count: 50,
                partition_index: (crate::coordinator_partition("g", 50) + 1) % 50,
                ..GroupConfig::default()
            },
            Box::new(SeededMemberIds::new(1)),
        )
        .unwrap();
        let (e, b) = other.txn_offset_commit(0, req(7, 1));
        assert_eq!(e[0].1[0].1, codes::NOT_COORDINATOR);
        assert!(b.is_none());
    }

    #[test]
    fn replay_settles_by_markers() {
        let mut live = mgr();
        let (_, b7) = live.txn_offset_commit(100, req(7, 10));
        let (_, b8) = live.txn_offset_commit(100, req(8, 20));
        let (_, b9) = live.txn_offset_commit(100, req(9, 30));
        let mut m =
            GroupManager::new_loading(GroupConfig::default(), Box::new(SeededMemberIds::new(1)))
                .unwrap();
        for (pid, b) in [(7, b7), (8, b8), (9, b9)] {
            for r in b.unwrap().records {
                m.replay_txn(pid, &r.key, r.value).unwrap();
            }
        }
        m.replay_marker(7, true);
        m.replay_marker(8, false);
        let _ = m.finish_loading(200);
        // 7 committed (then 9 is still open, so the partitions are unstable).
        assert_eq!(offsets(&m, false), vec![(10, 0), (11, 0)]);
        assert_eq!(offsets(&m, true)[0].1, codes::UNSTABLE_OFFSET_COMMIT);
        // 9's marker arrives after the load.
        m.complete_txn(300, 9, true);
        assert_eq!(offsets(&m, true), vec![(30, 0), (31, 0)]);
        // Markers after loading are not replay.
        m.replay_marker(7, true);
        assert!(m
            .replay_txn(1, &offset_commit_key("g", "t", 0), None)
            .is_ok());
    }
}
