//! Inputs and outputs of the coordinator, in plain Rust types.
//!
//! Nothing here depends on a wire version: the broker's handlers copy fields from whichever
//! JoinGroup / SyncGroup / ... version arrived and copy results back. Error codes are Kafka's
//! numbers ([`crate::codes`]).
//!
//! Replies that Kafka delays (JoinGroup and SyncGroup wait for the rebalance) come back as
//! [`Effect::JoinReply`] / [`Effect::SyncReply`] carrying the [`ReplyToken`] the caller chose;
//! every token passed to [`join`](crate::GroupManager::join) or
//! [`sync`](crate::GroupManager::sync) is answered exactly once, possibly by a later call.

use bytes::Bytes;

/// Caller-chosen handle for a deferred JoinGroup / SyncGroup reply (e.g. connection id and
/// correlation id packed together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyToken(pub u64);

/// The classic group states, Kafka's names ([`GroupState::as_str`] is what DescribeGroups and
/// ListGroups report).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members; the group may still hold offsets.
    Empty,
    /// Waiting for members to (re)join before the next generation.
    PreparingRebalance,
    /// Generation chosen; waiting for the leader's SyncGroup with the assignment.
    CompletingRebalance,
    /// Every member has (or can fetch) its assignment.
    Stable,
    /// Removed (deleted, expired, or unloaded). Dead groups are dropped at once, so this state is
    /// only observable as the state DescribeGroups reports for an unknown group.
    Dead,
}

impl GroupState {
    /// Kafka's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// Whether Kafka allows the transition `from -> self` (`GroupMetadata.validPreviousStates`).
    pub fn can_follow(self, from: GroupState) -> bool {
        use GroupState::*;
        match self {
            Empty => from == PreparingRebalance,
            PreparingRebalance => matches!(from, Empty | Stable | CompletingRebalance),
            CompletingRebalance => from == PreparingRebalance,
            Stable => from == CompletingRebalance,
            Dead => true,
        }
    }
}

/// JoinGroup, any version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    /// Group to join; must not be empty.
    pub group_id: String,
    /// Empty for a member that has no id yet.
    pub member_id: String,
    /// `group.instance.id` of a static member (JoinGroup v5+).
    pub group_instance_id: Option<String>,
    /// Client id from the request header; prefix of generated member ids.
    pub client_id: String,
    /// Client address as the broker sees it (reported by DescribeGroups).
    pub client_host: String,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `max.poll.interval.ms` for the Java consumer; JoinGroup v0 has none: pass the session
    /// timeout, as Kafka does.
    pub rebalance_timeout_ms: i32,
    /// `"consumer"` for consumers, `"connect"` for Connect workers, ...
    pub protocol_type: String,
    /// Assignor names with their opaque metadata, in the member's preference order.
    pub protocols: Vec<(String, Bytes)>,
    /// True for JoinGroup v4+: a new dynamic member first gets `MEMBER_ID_REQUIRED`.
    pub require_known_member_id: bool,
    /// True for JoinGroup v9+: a restarted static leader is told it leads but may skip the
    /// assignment (KIP-814).
    pub supports_skip_assignment: bool,
}

/// One member as the leader sees it in its JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id, if any.
    pub group_instance_id: Option<String>,
    /// The member's metadata for the selected protocol.
    pub metadata: Bytes,
}

/// JoinGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResult {
    /// Kafka error code.
    pub error_code: i16,
    /// The new generation, -1 on error.
    pub generation_id: i32,
    /// Group protocol type (JoinGroup v7+).
    pub protocol_type: Option<String>,
    /// Selected assignor.
    pub protocol_name: Option<String>,
    /// Leader's member id ("" on error).
    pub leader: String,
    /// KIP-814: the leader should not compute a new assignment.
    pub skip_assignment: bool,
    /// The member's id (newly generated for new members; "" for some errors).
    pub member_id: String,
    /// All members with their metadata, for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    /// An error response, shaped as Kafka shapes them.
    pub fn error(error_code: i16, member_id: impl Into<String>) -> Self {
        JoinResult {
            error_code,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.into(),
            members: Vec::new(),
        }
    }
}

/// SyncGroup, any version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    /// Group id.
    pub group_id: String,
    /// Generation the member got from JoinGroup.
    pub generation_id: i32,
    /// Member id.
    pub member_id: String,
    /// Static instance id, if any.
    pub group_instance_id: Option<String>,
    /// SyncGroup v5+; checked against the group's when present.
    pub protocol_type: Option<String>,
    /// SyncGroup v5+; checked against the group's when present.
    pub protocol_name: Option<String>,
    /// The leader's assignment per member id; empty for followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// SyncGroup response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResult {
    /// Kafka error code.
    pub error_code: i16,
    /// Group protocol type (SyncGroup v5+).
    pub protocol_type: Option<String>,
    /// Selected assignor (SyncGroup v5+).
    pub protocol_name: Option<String>,
    /// This member's assignment (empty on error).
    pub assignment: Bytes,
}

impl SyncResult {
    /// An error response.
    pub fn error(error_code: i16) -> Self {
        SyncResult {
            error_code,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// Heartbeat, any version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// Group id.
    pub group_id: String,
    /// Generation the member believes current.
    pub generation_id: i32,
    /// Member id.
    pub member_id: String,
    /// Static instance id, if any.
    pub group_instance_id: Option<String>,
}

/// One member named in a LeaveGroup request (v3+ batches several; v0-2 carry one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeavingMember {
    /// Member id; may be empty when an admin removes a static member by instance id.
    pub member_id: String,
    /// Static instance id, if any.
    pub group_instance_id: Option<String>,
}

/// LeaveGroup response. For v0-2 the broker reports the single member's error at top level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveResult {
    /// Group-level error.
    pub error_code: i16,
    /// Per-member errors, in request order (empty when the group-level error is set).
    pub members: Vec<(LeavingMember, i16)>,
}

/// One partition of an OffsetCommit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitPartition {
    /// Partition index.
    pub partition: i32,
    /// Next offset to consume.
    pub offset: i64,
    /// Leader epoch of the last consumed record, -1 if unknown (OffsetCommit v6+).
    pub leader_epoch: i32,
    /// Client metadata; null is stored as "".
    pub metadata: Option<String>,
}

/// OffsetCommit, any version (v1's per-partition commit timestamp and v2-4's retention time are
/// not honoured: commits are stamped with `now_ms` and expire by `offsets.retention.minutes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommitRequest {
    /// Group id; "" is allowed, as in Kafka.
    pub group_id: String,
    /// -1 for a simple consumer (no group management).
    pub generation_id: i32,
    /// "" for a simple consumer.
    pub member_id: String,
    /// Static instance id, if any.
    pub group_instance_id: Option<String>,
    /// Topic name with its partitions.
    pub topics: Vec<(String, Vec<CommitPartition>)>,
}

/// Per-partition errors, grouped by topic, in request order.
pub type TopicPartitionErrors = Vec<(String, Vec<(i32, i16)>)>;

/// One group of an OffsetFetch (v8+ carry several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetFetchGroup {
    /// Group id; "" is allowed, as in Kafka.
    pub group_id: String,
    /// Topics and partitions to fetch; `None` fetches every committed offset of the group.
    pub topics: Option<Vec<(String, Vec<i32>)>>,
}

/// One partition of an OffsetFetch response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedPartition {
    /// Partition index.
    pub partition: i32,
    /// Committed offset, -1 if none.
    pub committed_offset: i64,
    /// Committed leader epoch, -1 if none.
    pub committed_leader_epoch: i32,
    /// Committed metadata, "" if none.
    pub metadata: String,
    /// Partition-level error.
    pub error_code: i16,
}

/// One group of an OffsetFetch response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetFetchGroupResult {
    /// Group id.
    pub group_id: String,
    /// Group-level error (v2+ carry it at group level; v0-1 copy it to every partition).
    pub error_code: i16,
    /// Topics with their partitions.
    pub topics: Vec<(String, Vec<FetchedPartition>)>,
}

/// One row of ListGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedGroup {
    /// Group id.
    pub group_id: String,
    /// Protocol type, "" if none.
    pub protocol_type: String,
    /// Current state (ListGroups v4+).
    pub state: GroupState,
    /// Always `"classic"` (ListGroups v5+).
    pub group_type: &'static str,
}

/// ListGroups response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListGroupsResult {
    /// `COORDINATOR_LOAD_IN_PROGRESS` while loading, else `NONE`.
    pub error_code: i16,
    /// Groups matching the filters, ordered by group id.
    pub groups: Vec<ListedGroup>,
}

/// One member in DescribeGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id, if any.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the selected protocol (empty unless the group is Stable).
    pub metadata: Bytes,
    /// Current assignment (empty unless the group is Stable).
    pub assignment: Bytes,
}

/// One group in DescribeGroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedGroup {
    /// Group id.
    pub group_id: String,
    /// Group-level error.
    pub error_code: i16,
    /// Kafka's state name; `"Dead"` for unknown groups, `""` on error.
    pub state: &'static str,
    /// Protocol type, "" if none.
    pub protocol_type: String,
    /// Selected protocol while Stable, else "".
    pub protocol_data: String,
    /// Members in join order.
    pub members: Vec<DescribedMember>,
}

/// OffsetDelete request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetDeleteRequest {
    /// Group id.
    pub group_id: String,
    /// Topics with the partitions whose offsets to delete.
    pub topics: Vec<(String, Vec<i32>)>,
}

/// OffsetDelete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetDeleteResult {
    /// Group-level error (when set, `topics` is empty).
    pub error_code: i16,
    /// Per-partition errors.
    pub topics: TopicPartitionErrors,
}

/// A record to append to this manager's `__consumer_offsets` partition (see
/// [`crate::records`] for the layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Record key.
    pub key: Bytes,
    /// Record value; `None` is a tombstone.
    pub value: Option<Bytes>,
}

/// A timer the glue keeps for the manager. Each key names one timer: scheduling a key again
/// replaces its earlier deadline.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKey {
    /// Session expiry of a member, or expiry of a pending (MEMBER_ID_REQUIRED) member.
    Member {
        /// Group id.
        group_id: String,
        /// Member id.
        member_id: String,
    },
    /// End of the join phase (initial delay or rebalance timeout) of a rebalancing group.
    Join {
        /// Group id.
        group_id: String,
    },
    /// Deadline for every member of a new generation to send SyncGroup.
    Sync {
        /// Group id.
        group_id: String,
    },
}

/// Something the glue must do on the manager's behalf.
///
/// Ordering contract: every reply produced by a call (the `JoinReply` / `SyncReply` effects and
/// the call's direct return value) may only be sent once all `Persist` effects of the same call
/// are durable in the log, and the `Persist` records of one call should be appended as one batch.
/// If an append fails, the manager's memory is ahead of its log: the glue must not send those
/// replies (answer with `NOT_COORDINATOR` instead), call
/// [`unload`](crate::GroupManager::unload) and reload the partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Append this record to the manager's `__consumer_offsets` partition.
    Persist(Record),
    /// Call [`on_timer`](crate::GroupManager::on_timer) with `key` once `deadline_ms` has passed.
    /// Replaces any earlier timer with the same key. Firing early, late, or for a key the
    /// manager no longer cares about is harmless.
    ScheduleTimer {
        /// Which timer.
        key: TimerKey,
        /// When, in the same clock as `now_ms`.
        deadline_ms: i64,
    },
    /// Answer the JoinGroup request that was given this token.
    JoinReply(ReplyToken, JoinResult),
    /// Answer the SyncGroup request that was given this token.
    SyncReply(ReplyToken, SyncResult),
}
