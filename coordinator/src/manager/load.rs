//! Rebuilding a manager from its `__consumer_offsets` partition (Kafka's
//! `GroupMetadataManager.loadGroupsAndOffsets` followed by `GroupCoordinator.onGroupLoaded`).
//!
//! Replay keeps the latest value per key (tombstones delete). When loading finishes, each group
//! comes back as Kafka brings it back: with its generation, protocol, leader and offsets, and,
//! if its last metadata record had members, **Stable with those members and their assignments**,
//! each given a fresh session that starts at load time. Members that keep heartbeating therefore
//! continue without a rebalance after a coordinator move; members that are gone expire after
//! their session timeout. A generation that was being formed (CompletingRebalance, never
//! persisted) is lost: its members get ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID and rejoin.

use std::collections::BTreeMap;

use bytes::Bytes;
use thiserror::Error;

use crate::api::{Effect, GroupState};
use crate::config::{ConfigError, GroupConfig};
use crate::group::{CommittedOffset, Group, Member, Timer};
use crate::member_id::MemberIdGenerator;
use crate::records::{decode_key, GroupMetadataValue, OffsetCommitValue, RecordError, RecordKey};

use super::offsets::offsets_from_values;
use super::{Cx, GroupManager};

/// What [`GroupManager::replay`] did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// The record updated the state being loaded.
    Applied,
    /// A key type this coordinator does not own (another coordinator's record); ignored.
    Skipped,
}

/// Why [`GroupManager::load`] failed.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A record of a known type does not decode.
    #[error("record {index} of __consumer_offsets: {source}")]
    Record {
        /// Position of the record in the replayed sequence.
        index: u64,
        /// The decoding error.
        #[source]
        source: RecordError,
    },
}

/// The latest values seen so far during replay.
#[derive(Default)]
pub(crate) struct LoadState {
    metadata: BTreeMap<String, GroupMetadataValue>,
    offsets: BTreeMap<String, BTreeMap<(String, i32), OffsetCommitValue>>,
}

impl GroupManager {
    /// A manager that is replaying its partition: requests get COORDINATOR_LOAD_IN_PROGRESS
    /// (heartbeats NONE, SyncGroup REBALANCE_IN_PROGRESS, as Kafka answers) until
    /// [`GroupManager::finish_loading`].
    pub fn new_loading(
        config: GroupConfig,
        member_ids: Box<dyn MemberIdGenerator>,
    ) -> Result<Self, ConfigError> {
        let mut manager = GroupManager::new(config, member_ids)?;
        manager.loading = Some(Box::default());
        Ok(manager)
    }

    /// Applies one record of the partition, in log order. `value` `None` is a tombstone.
    /// Does nothing once loading has finished.
    pub fn replay(
        &mut self,
        key: &[u8],
        value: Option<Bytes>,
    ) -> Result<ReplayOutcome, RecordError> {
        let Some(state) = self.loading.as_mut() else {
            return Ok(ReplayOutcome::Skipped);
        };
        match decode_key(key)? {
            None => Ok(ReplayOutcome::Skipped),
            Some(RecordKey::OffsetCommit {
                group,
                topic,
                partition,
            }) => {
                match value {
                    Some(v) => {
                        let v = OffsetCommitValue::decode(&v)?;
                        state
                            .offsets
                            .entry(group)
                            .or_default()
                            .insert((topic, partition), v);
                    }
                    None => {
                        if let Some(g) = state.offsets.get_mut(&group) {
                            g.remove(&(topic, partition));
                            if g.is_empty() {
                                state.offsets.remove(&group);
                            }
                        }
                    }
                }
                Ok(ReplayOutcome::Applied)
            }
            Some(RecordKey::GroupMetadata { group }) => {
                match value {
                    Some(v) => {
                        state.metadata.insert(group, GroupMetadataValue::decode(v)?);
                    }
                    None => {
                        state.metadata.remove(&group);
                    }
                }
                Ok(ReplayOutcome::Applied)
            }
        }
    }

    /// Applies one record of a *transactional* batch written by `producer_id` (a
    /// TxnOffsetCommit), in log order: an offset commit stays pending until
    /// [`GroupManager::replay_marker`] for the producer. Other records are replayed as by
    /// [`GroupManager::replay`]. Does nothing once loading has finished.
    pub fn replay_txn(
        &mut self,
        producer_id: i64,
        key: &[u8],
        value: Option<Bytes>,
    ) -> Result<ReplayOutcome, RecordError> {
        if self.loading.is_none() {
            return Ok(ReplayOutcome::Skipped);
        }
        match (decode_key(key)?, &value) {
            (
                Some(RecordKey::OffsetCommit {
                    group,
                    topic,
                    partition,
                }),
                Some(v),
            ) => {
                let v = OffsetCommitValue::decode(v)?;
                let offset = CommittedOffset {
                    offset: v.offset,
                    leader_epoch: v.leader_epoch,
                    metadata: v.metadata,
                    commit_timestamp_ms: v.commit_timestamp,
                    expire_timestamp_ms: v.expire_timestamp,
                };
                self.txn_offsets
                    .entry(producer_id)
                    .or_default()
                    .entry(group)
                    .or_default()
                    .insert((topic, partition), offset);
                Ok(ReplayOutcome::Applied)
            }
            _ => self.replay(key, value),
        }
    }

    /// Applies a COMMIT (`commit`) or ABORT control record of `producer_id` found in the log:
    /// the producer's pending offsets are committed or dropped. Does nothing once loading has
    /// finished (then use [`GroupManager::complete_txn`]).
    pub fn replay_marker(&mut self, producer_id: i64, commit: bool) {
        let Some(state) = self.loading.as_mut() else {
            return;
        };
        let Some(by_group) = self.txn_offsets.remove(&producer_id) else {
            return;
        };
        if !commit {
            return;
        }
        for (group, offsets) in by_group {
            let g = state.offsets.entry(group).or_default();
            for (tp, c) in offsets {
                g.insert(
                    tp,
                    OffsetCommitValue {
                        offset: c.offset,
                        leader_epoch: c.leader_epoch,
                        metadata: c.metadata,
                        commit_timestamp: c.commit_timestamp_ms,
                        expire_timestamp: c.expire_timestamp_ms,
                    },
                );
            }
        }
    }

    /// Ends loading: builds the groups from the replayed records and starts every restored
    /// member's session at `now_ms`. A group over `group.max.size` starts a rebalance, which
    /// admits only `group.max.size` members back. Does nothing if not loading.
    pub fn finish_loading(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(state) = self.loading.take() else {
            return out;
        };
        let LoadState {
            metadata,
            mut offsets,
        } = *state;
        for (group_id, value) in metadata {
            let mut group = restore_group(group_id.clone(), value, now_ms, &mut self.next_join_seq);
            if let Some(o) = offsets.remove(&group_id) {
                group.offsets = offsets_from_values(o);
            }
            self.groups.insert(group_id, group);
        }
        for (group_id, o) in offsets {
            // Groups that only store offsets (simple consumers) have no metadata record.
            let mut group = Group::new(group_id.clone(), now_ms);
            group.state_since_ms = None;
            group.offsets = offsets_from_values(o);
            self.groups.insert(group_id, group);
        }
        let GroupManager {
            config,
            member_ids,
            groups,
            next_join_seq,
            ..
        } = self;
        let mut cx = Cx {
            now: now_ms,
            config,
            out: &mut out,
            member_ids: member_ids.as_mut(),
            next_join_seq,
        };
        for group in groups.values_mut() {
            let ids: Vec<String> = group.members.keys().cloned().collect();
            for id in ids {
                group.refresh_session(&mut cx, &id);
            }
            if group.members.len() > cx.config.group_max_size {
                group.prepare_rebalance(&mut cx);
            }
        }
        out
    }

    /// Builds a manager from the whole partition at once (see [`GroupManager::replay`]).
    pub fn load(
        config: GroupConfig,
        member_ids: Box<dyn MemberIdGenerator>,
        records: impl IntoIterator<Item = (Bytes, Option<Bytes>)>,
        now_ms: i64,
    ) -> Result<(Self, Vec<Effect>), LoadError> {
        let mut manager = GroupManager::new_loading(config, member_ids)?;
        for (index, (key, value)) in (0u64..).zip(records) {
            manager
                .replay(&key, value)
                .map_err(|source| LoadError::Record { index, source })?;
        }
        let effects = manager.finish_loading(now_ms);
        Ok((manager, effects))
    }
}

/// A group as its last metadata record describes it.
fn restore_group(
    id: String,
    value: GroupMetadataValue,
    now_ms: i64,
    next_join_seq: &mut u64,
) -> Group {
    let mut group = Group::new(id, now_ms);
    group.generation_id = value.generation.max(0);
    group.state_since_ms =
        (value.current_state_timestamp >= 0).then_some(value.current_state_timestamp);
    let protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type);
    group.protocol_type = protocol_type.clone();
    // Members only make sense with the protocol they were assigned under.
    let Some(protocol) = value.protocol.filter(|_| !value.members.is_empty()) else {
        return group;
    };
    for m in value.members {
        // A corrupt record could repeat a member or an instance id; keep the first.
        let duplicate_instance = m
            .group_instance_id
            .as_ref()
            .is_some_and(|i| group.static_members.contains_key(i));
        if group.members.contains_key(&m.member_id) || duplicate_instance {
            continue;
        }
        let member = Member {
            member_id: m.member_id,
            group_instance_id: m.group_instance_id,
            client_id: m.client_id,
            client_host: m.client_host,
            rebalance_timeout_ms: m.rebalance_timeout.max(0),
            session_timeout_ms: m.session_timeout,
            protocols: vec![(protocol.clone(), m.subscription)],
            assignment: m.assignment,
            join_token: None,
            sync_token: None,
            is_new: false,
            session: Timer::default(),
            join_seq: *next_join_seq,
        };
        *next_join_seq += 1;
        group.add_member(member, protocol_type.as_deref().unwrap_or(""));
    }
    // `add_member` made the first member leader; prefer the recorded leader.
    if let Some(leader) = value.leader.filter(|l| group.members.contains_key(l)) {
        group.leader_id = Some(leader);
    }
    group.protocol_type = protocol_type;
    group.protocol_name = Some(protocol);
    group.state = GroupState::Stable;
    group.subscribed_topics = group.compute_subscribed_topics();
    group
}
