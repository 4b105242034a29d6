//! [`GroupManager`]: every group of one `__consumer_offsets` partition, driven by requests, timer
//! firings and the clock value the caller passes in.
//!
//! The manager lives on the shard that leads its partition and is touched by nothing else. It
//! never blocks, allocates no timers itself, and each input touches one group (plus, for
//! expiry, a bounded slice of groups): there is no scan of all groups on the request path.
//!
//! Submodules split the inputs by API family: `membership` (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup), `offsets` (OffsetCommit, OffsetFetch, OffsetDelete, expiry), `admin`
//! (ListGroups, DescribeGroups, DeleteGroups), `load` (replaying the log), and `rebalance` (the
//! state transitions they share).

mod admin;
mod load;
mod membership;
mod offsets;
mod rebalance;
mod txn_offsets;

use std::collections::BTreeMap;

pub use load::{LoadError, ReplayOutcome};
pub use txn_offsets::{TransactionalBatch, TxnOffsetCommitRequest};

use crate::api::{Effect, GroupState, JoinResult, SyncResult, TimerKey};
use crate::codes;
use crate::config::{ConfigError, GroupConfig, MAX_STRING_BYTES};
use crate::group::Group;
use crate::member_id::MemberIdGenerator;
use crate::partition::coordinator_partition;

/// The coordinator of one `__consumer_offsets` partition.
///
/// Lives on (and only on) the shard leading that partition. All methods take the current time
/// as `now_ms` and return the [`Effect`]s the glue must carry out; see [`Effect`] for the
/// ordering contract between persisting records and sending replies.
pub struct GroupManager {
    config: GroupConfig,
    member_ids: Box<dyn MemberIdGenerator>,
    groups: BTreeMap<String, Group>,
    /// Some while the partition is being replayed.
    loading: Option<Box<load::LoadState>>,
    /// False after [`GroupManager::unload`].
    active: bool,
    next_join_seq: u64,
    /// Where the last bounded expiry pass stopped.
    expire_cursor: Option<String>,
    /// Transactional offset commits waiting for their transaction's marker.
    txn_offsets: txn_offsets::PendingTxnOffsets,
}

/// The resources one input may use besides the group it touches.
pub(crate) struct Cx<'a> {
    pub now: i64,
    pub config: &'a GroupConfig,
    pub out: &'a mut Vec<Effect>,
    pub member_ids: &'a mut dyn MemberIdGenerator,
    pub next_join_seq: &'a mut u64,
}

impl Cx<'_> {
    pub(crate) fn join_reply(&mut self, token: crate::api::ReplyToken, result: JoinResult) {
        self.out.push(Effect::JoinReply(token, result));
    }

    pub(crate) fn sync_reply(&mut self, token: crate::api::ReplyToken, result: SyncResult) {
        self.out.push(Effect::SyncReply(token, result));
    }
}

/// Which API is asking, for the group-id and ownership checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    Join,
    Sync,
    Heartbeat,
    Leave,
    OffsetCommit,
    OffsetFetch,
    DescribeGroups,
    DeleteGroups,
    OffsetDelete,
}

impl GroupManager {
    /// An active manager with no groups (a new, empty partition).
    pub fn new(
        config: GroupConfig,
        member_ids: Box<dyn MemberIdGenerator>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(GroupManager {
            config,
            member_ids,
            groups: BTreeMap::new(),
            loading: None,
            active: true,
            next_join_seq: 0,
            expire_cursor: None,
            txn_offsets: BTreeMap::new(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// True between [`GroupManager::new_loading`] and [`GroupManager::finish_loading`].
    pub fn is_loading(&self) -> bool {
        self.loading.is_some()
    }

    /// Number of groups held (including Empty groups that only hold offsets).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// A group's state, `None` if unknown.
    pub fn group_state(&self, group_id: &str) -> Option<GroupState> {
        self.groups.get(group_id).map(|g| g.state)
    }

    /// A group's current generation, `None` if unknown.
    pub fn generation_id(&self, group_id: &str) -> Option<i32> {
        self.groups.get(group_id).map(|g| g.generation_id)
    }

    /// A group's leader, `None` if unknown or without members.
    pub fn leader_id(&self, group_id: &str) -> Option<&str> {
        self.groups.get(group_id)?.leader_id.as_deref()
    }

    /// Checks every group's internal consistency (used by tests and debug builds).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.groups.values().try_for_each(Group::check_invariants)
    }

    /// A timer scheduled through [`Effect::ScheduleTimer`] fired. Stale, early or repeated
    /// firings are harmless: deadlines are re-checked, and an early firing re-arms the timer.
    pub fn on_timer(&mut self, now_ms: i64, key: &TimerKey) -> Vec<Effect> {
        let mut out = Vec::new();
        if !self.active || self.loading.is_some() {
            return out;
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
        let group_id = match key {
            TimerKey::Member { group_id, .. }
            | TimerKey::Join { group_id }
            | TimerKey::Sync { group_id } => group_id,
        };
        let Some(group) = groups.get_mut(group_id) else {
            return out;
        };
        match key {
            TimerKey::Member { member_id, .. } => group.on_member_timer(&mut cx, member_id),
            TimerKey::Join { .. } => {
                if group.join_timer.fire(now_ms, || key.clone(), cx.out) {
                    group.join_deadline_reached(&mut cx);
                }
            }
            TimerKey::Sync { .. } => {
                if group.sync_timer.fire(now_ms, || key.clone(), cx.out) {
                    group.sync_deadline_reached(&mut cx);
                }
            }
        }
        remove_if_trivially_empty(groups, group_id);
        out
    }

    /// The partition moved away (or the manager must be rebuilt after a failed append): every
    /// waiting JoinGroup / SyncGroup is answered with `NOT_COORDINATOR`, all state is dropped,
    /// and later requests get `NOT_COORDINATOR`. Outstanding timers become no-ops.
    pub fn unload(&mut self) -> Vec<Effect> {
        let mut out = Vec::new();
        for group in self.groups.values_mut() {
            for m in group.members.values_mut() {
                if let Some(token) = m.join_token.take() {
                    out.push(Effect::JoinReply(
                        token,
                        JoinResult::error(codes::NOT_COORDINATOR, m.member_id.clone()),
                    ));
                }
                if let Some(token) = m.sync_token.take() {
                    out.push(Effect::SyncReply(
                        token,
                        SyncResult::error(codes::NOT_COORDINATOR),
                    ));
                }
            }
        }
        self.groups.clear();
        self.txn_offsets.clear();
        self.loading = None;
        self.active = false;
        out
    }

    /// Kafka's `validateGroupStatus`: group id shape, then load state, then ownership.
    pub(crate) fn group_status_error(&self, group_id: &str, api: Api) -> Option<i16> {
        // OffsetCommit/OffsetFetch accept "" for old clients, and DescribeGroups/DeleteGroups
        // so that such a group can be inspected and removed, as in Kafka.
        let empty_allowed = matches!(
            api,
            Api::OffsetCommit | Api::OffsetFetch | Api::DescribeGroups | Api::DeleteGroups
        );
        if (group_id.is_empty() && !empty_allowed) || group_id.len() > MAX_STRING_BYTES {
            return Some(codes::INVALID_GROUP_ID);
        }
        if !self.active {
            return Some(codes::NOT_COORDINATOR);
        }
        if self.loading.is_some() {
            return Some(codes::COORDINATOR_LOAD_IN_PROGRESS);
        }
        if coordinator_partition(group_id, self.config.partition_count)
            != self.config.partition_index
        {
            return Some(codes::NOT_COORDINATOR);
        }
        None
    }
}

/// Drops a group that exists only because a failed request created it (never persisted).
pub(crate) fn remove_if_trivially_empty(groups: &mut BTreeMap<String, Group>, group_id: &str) {
    if groups.get(group_id).is_some_and(Group::is_trivially_empty) {
        groups.remove(group_id);
    }
}
