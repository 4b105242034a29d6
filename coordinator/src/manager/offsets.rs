//! OffsetCommit, OffsetFetch, OffsetDelete and offset expiry (Kafka's `handleCommitOffsets`,
//! `handleFetchOffsets`, `handleDeleteOffsets`, and `GroupMetadata.removeExpiredOffsets` with
//! `GroupMetadataManager.cleanupGroupMetadata`).

use std::collections::BTreeMap;

use crate::api::{
    Effect, FetchedPartition, GroupState, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetDeleteResult, OffsetFetchGroup, OffsetFetchGroupResult, Record, TopicPartitionErrors,
};
use crate::codes;
use crate::config::MAX_STRING_BYTES;
use crate::group::{CommittedOffset, Group};
use crate::records::{group_metadata_key, offset_commit_key, OffsetCommitValue};

use super::membership::validate_current_member;
use super::{remove_if_trivially_empty, Api, Cx, GroupManager};

impl GroupManager {
    /// OffsetCommit. Returns the per-partition error codes in request order.
    ///
    /// A simple consumer (generation -1, empty member id, no instance id) may commit to an Empty
    /// or unknown group; members commit with their generation. Commits are allowed while the
    /// group is PreparingRebalance (the member learns of the rebalance from its next heartbeat)
    /// but not while CompletingRebalance, exactly as Kafka.
    pub fn commit_offsets(
        &mut self,
        now_ms: i64,
        req: OffsetCommitRequest,
    ) -> (TopicPartitionErrors, Vec<Effect>) {
        let mut out = Vec::new();
        let all = |code: i16| -> TopicPartitionErrors {
            req.topics
                .iter()
                .map(|(topic, parts)| {
                    (
                        topic.clone(),
                        parts.iter().map(|p| (p.partition, code)).collect(),
                    )
                })
                .collect()
        };
        if let Some(code) = self.group_status_error(&req.group_id, Api::OffsetCommit) {
            return (all(code), out);
        }
        let metadata_max = self.config.offset_metadata_max_bytes;
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
        if !groups.contains_key(&req.group_id) {
            if req.generation_id >= 0 {
                // A member of a generation the coordinator does not know (e.g. lost with a
                // failover before it was persisted).
                return (all(codes::ILLEGAL_GENERATION), out);
            }
            groups.insert(
                req.group_id.clone(),
                Group::new(req.group_id.clone(), now_ms),
            );
        }
        let Some(group) = groups.get_mut(&req.group_id) else {
            return (all(codes::UNKNOWN_SERVER_ERROR), out);
        };
        let verdict = validate_offset_commit(group, &req).or(match group.state {
            GroupState::CompletingRebalance => Some(codes::REBALANCE_IN_PROGRESS),
            _ => None,
        });
        if let Some(code) = verdict {
            remove_if_trivially_empty(groups, &req.group_id);
            return (all(code), out);
        }
        if matches!(
            group.state,
            GroupState::Stable | GroupState::PreparingRebalance
        ) {
            group.refresh_session(&mut cx, &req.member_id);
        }
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
                    cx.out.push(Effect::Persist(Record {
                        key: offset_commit_key(&group.id, &topic, p.partition),
                        value: Some(encode_offset(&value)),
                    }));
                    group
                        .offsets
                        .entry(topic.clone())
                        .or_default()
                        .insert(p.partition, value);
                    codes::NONE
                };
                codes_out.push((p.partition, code));
            }
            results.push((topic, codes_out));
        }
        remove_if_trivially_empty(groups, &req.group_id);
        (results, out)
    }

    /// Every committed offset as `(group, topic, partition, offset)`, for metrics. A walk over
    /// all groups: for scrapes, never for the request path.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let mut out = Vec::new();
        for (group, g) in &self.groups {
            for (topic, parts) in &g.offsets {
                for (partition, c) in parts {
                    out.push((group.clone(), topic.clone(), *partition, c.offset));
                }
            }
        }
        out
    }

    /// OffsetFetch for one or more groups. Offsets are returned whatever the group's state (a
    /// group may use Kafka for offsets only); partitions without a commit get offset -1.
    ///
    /// Pending transactional offsets are not visible here; OffsetFetch v7+ with
    /// `require_stable` goes through [`GroupManager::fetch_offsets_stable`].
    pub fn fetch_offsets(&self, groups: &[OffsetFetchGroup]) -> Vec<OffsetFetchGroupResult> {
        groups.iter().map(|g| self.fetch_group_offsets(g)).collect()
    }

    fn fetch_group_offsets(&self, req: &OffsetFetchGroup) -> OffsetFetchGroupResult {
        if let Some(code) = self.group_status_error(&req.group_id, Api::OffsetFetch) {
            return OffsetFetchGroupResult {
                group_id: req.group_id.clone(),
                error_code: code,
                topics: Vec::new(),
            };
        }
        let offsets = self.groups.get(&req.group_id).map(|g| &g.offsets);
        let fetched = |topic: &str, partition: i32| match offsets
            .and_then(|o| o.get(topic))
            .and_then(|t| t.get(&partition))
        {
            Some(c) => FetchedPartition {
                partition,
                committed_offset: c.offset,
                committed_leader_epoch: c.leader_epoch,
                metadata: c.metadata.clone(),
                error_code: codes::NONE,
            },
            None => FetchedPartition {
                partition,
                committed_offset: -1,
                committed_leader_epoch: -1,
                metadata: String::new(),
                error_code: codes::NONE,
            },
        };
        let topics = match &req.topics {
            Some(topics) => topics
                .iter()
                .map(|(topic, parts)| {
                    (
                        topic.clone(),
                        parts.iter().map(|&p| fetched(topic, p)).collect(),
                    )
                })
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|(topic, parts)| {
                    (
                        topic.clone(),
                        parts.keys().map(|&p| fetched(topic, p)).collect(),
                    )
                })
                .collect(),
        };
        OffsetFetchGroupResult {
            group_id: req.group_id.clone(),
            error_code: codes::NONE,
            topics,
        }
    }

    /// OffsetDelete. An Empty group loses the offsets; a consumer group with members only loses
    /// those of topics it no longer subscribes to (GROUP_SUBSCRIBED_TO_TOPIC otherwise); other
    /// groups with members refuse (NON_EMPTY_GROUP).
    pub fn delete_offsets(
        &mut self,
        now_ms: i64,
        req: OffsetDeleteRequest,
    ) -> (OffsetDeleteResult, Vec<Effect>) {
        let mut out = Vec::new();
        let group_error = |code| OffsetDeleteResult {
            error_code: code,
            topics: Vec::new(),
        };
        if let Some(code) = self.group_status_error(&req.group_id, Api::OffsetDelete) {
            return (group_error(code), out);
        }
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return (group_error(codes::GROUP_ID_NOT_FOUND), out);
        };
        let is_consumer_group =
            group.protocol_type.as_deref() == Some(crate::subscription::CONSUMER_PROTOCOL_TYPE);
        if group.state != GroupState::Empty && !is_consumer_group {
            return (group_error(codes::NON_EMPTY_GROUP), out);
        }
        let mut removed = Vec::new();
        let mut topics = Vec::with_capacity(req.topics.len());
        for (topic, parts) in req.topics {
            let subscribed = group.state != GroupState::Empty && group.is_subscribed_to(&topic);
            let mut codes_out = Vec::with_capacity(parts.len());
            for p in parts {
                if subscribed {
                    codes_out.push((p, codes::GROUP_SUBSCRIBED_TO_TOPIC));
                    continue;
                }
                if let Some(t) = group.offsets.get_mut(&topic) {
                    if t.remove(&p).is_some() {
                        removed.push((topic.clone(), p));
                    }
                    if t.is_empty() {
                        group.offsets.remove(&topic);
                    }
                }
                codes_out.push((p, codes::NONE));
            }
            topics.push((topic, codes_out));
        }
        if cleanup_group(group, &removed, now_ms, &mut out) {
            self.groups.remove(&req.group_id);
        }
        let result = OffsetDeleteResult {
            error_code: codes::NONE,
            topics,
        };
        (result, out)
    }

    /// Expires offsets older than `retention_ms` (`offsets.retention.minutes`) in every group,
    /// and removes Empty groups left without offsets. Touches every group: the broker should
    /// prefer [`GroupManager::expire_offsets_step`] on a shard that also serves requests.
    pub fn expire_offsets(&mut self, now_ms: i64, retention_ms: i64) -> Vec<Effect> {
        self.expire_cursor = None;
        let mut out = Vec::new();
        loop {
            let (effects, done) = self.expire_offsets_step(now_ms, retention_ms, 1024);
            out.extend(effects);
            if done {
                return out;
            }
        }
    }

    /// One bounded slice of [`GroupManager::expire_offsets`]: examines at most `max_groups`
    /// groups after where the previous step stopped. Returns the effects and whether the pass
    /// reached the last group (the next step then starts a new pass). The broker calls it
    /// every `offsets.retention.check.interval.ms` and keeps calling, yielding in between,
    /// until it returns true.
    pub fn expire_offsets_step(
        &mut self,
        now_ms: i64,
        retention_ms: i64,
        max_groups: usize,
    ) -> (Vec<Effect>, bool) {
        let mut out = Vec::new();
        if !self.active || self.loading.is_some() {
            return (out, true);
        }
        let ids: Vec<String> = match &self.expire_cursor {
            None => self
                .groups
                .keys()
                .take(max_groups.max(1))
                .cloned()
                .collect(),
            Some(after) => self
                .groups
                .range::<String, _>((
                    std::ops::Bound::Excluded(after.clone()),
                    std::ops::Bound::Unbounded,
                ))
                .take(max_groups.max(1))
                .map(|(k, _)| k.clone())
                .collect(),
        };
        let done = ids.len() < max_groups.max(1);
        self.expire_cursor = if done { None } else { ids.last().cloned() };
        for id in ids {
            let Some(group) = self.groups.get_mut(&id) else {
                continue;
            };
            let removed = expired_offsets(group, now_ms, retention_ms);
            for (topic, partition) in &removed {
                if let Some(t) = group.offsets.get_mut(topic) {
                    t.remove(partition);
                    if t.is_empty() {
                        group.offsets.remove(topic);
                    }
                }
            }
            if cleanup_group(group, &removed, now_ms, &mut out) {
                self.groups.remove(&id);
            }
        }
        (out, done)
    }
}

fn encode_offset(c: &CommittedOffset) -> bytes::Bytes {
    OffsetCommitValue {
        offset: c.offset,
        leader_epoch: c.leader_epoch,
        metadata: c.metadata.clone(),
        commit_timestamp: c.commit_timestamp_ms,
        expire_timestamp: c.expire_timestamp_ms,
    }
    .encode()
}

/// Kafka's `validateOffsetCommit` (the Dead case cannot occur: dead groups are dropped).
fn validate_offset_commit(group: &Group, req: &OffsetCommitRequest) -> Option<i16> {
    if req.generation_id >= 0 || !req.member_id.is_empty() || req.group_instance_id.is_some() {
        validate_current_member(group, &req.member_id, req.group_instance_id.as_deref())
            .or((req.generation_id != group.generation_id).then_some(codes::ILLEGAL_GENERATION))
    } else if group.state != GroupState::Empty {
        // Once the group has members, only members may commit.
        Some(codes::UNKNOWN_MEMBER_ID)
    } else {
        None
    }
}

/// Kafka's `removeExpiredOffsets`: which offsets of this group have expired.
fn expired_offsets(group: &Group, now_ms: i64, retention_ms: i64) -> Vec<(String, i32)> {
    let expired = |c: &CommittedOffset, base: i64| match c.expire_timestamp_ms {
        Some(expire) => now_ms >= expire,
        None => now_ms.saturating_sub(base) >= retention_ms,
    };
    let mut out = Vec::new();
    let mut collect = |skip_topic: &dyn Fn(&str) -> bool,
                       base: &dyn Fn(&CommittedOffset) -> i64| {
        for (topic, parts) in &group.offsets {
            if skip_topic(topic) {
                continue;
            }
            for (&p, c) in parts {
                if expired(c, base(c)) {
                    out.push((topic.clone(), p));
                }
            }
        }
    };
    match (&group.protocol_type, group.state) {
        // A group without members: everything expires `retention_ms` after it became Empty
        // (or after the commit, for groups loaded from records without a state timestamp).
        (Some(_), GroupState::Empty) => {
            let since = group.state_since_ms;
            collect(&|_| false, &|c| since.unwrap_or(c.commit_timestamp_ms));
        }
        // A stable consumer group: offsets of topics it no longer subscribes to expire
        // `retention_ms` after their commit.
        (Some(t), GroupState::Stable)
            if t == crate::subscription::CONSUMER_PROTOCOL_TYPE
                && group.subscribed_topics.is_some() =>
        {
            collect(&|topic| group.is_subscribed_to(topic), &|c| {
                c.commit_timestamp_ms
            });
        }
        // Offsets-only (simple consumer) groups: each offset `retention_ms` after its commit.
        (None, _) => collect(&|_| false, &|c| c.commit_timestamp_ms),
        _ => {}
    }
    out
}

/// Kafka's `cleanupGroupMetadata`: tombstones for removed offsets; an Empty group left without
/// offsets dies (with a metadata tombstone if it was ever written, i.e. generation > 0).
/// Returns true if the caller must drop the group.
pub(crate) fn cleanup_group(
    group: &mut Group,
    removed: &[(String, i32)],
    now_ms: i64,
    out: &mut Vec<Effect>,
) -> bool {
    for (topic, partition) in removed {
        out.push(Effect::Persist(Record {
            key: offset_commit_key(&group.id, topic, *partition),
            value: None,
        }));
    }
    if group.state == GroupState::Empty && !group.has_offsets() {
        if group.generation_id > 0 {
            out.push(Effect::Persist(Record {
                key: group_metadata_key(&group.id),
                value: None,
            }));
        }
        group.transition_to(GroupState::Dead, now_ms);
        return true;
    }
    false
}

/// Offsets of a group as a map, for loading.
pub(crate) fn offsets_from_values(
    values: BTreeMap<(String, i32), OffsetCommitValue>,
) -> BTreeMap<String, BTreeMap<i32, CommittedOffset>> {
    let mut out: BTreeMap<String, BTreeMap<i32, CommittedOffset>> = BTreeMap::new();
    for ((topic, partition), v) in values {
        out.entry(topic).or_default().insert(
            partition,
            CommittedOffset {
                offset: v.offset,
                leader_epoch: v.leader_epoch,
                metadata: v.metadata,
                commit_timestamp_ms: v.commit_timestamp,
                expire_timestamp_ms: v.expire_timestamp,
            },
        );
    }
    out
}
