//! Kafka's classic consumer group coordinator as a deterministic state machine.
//!
//! This crate owns the *logic* of JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//! OffsetFetch, OffsetDelete, ListGroups, DescribeGroups and DeleteGroups, and the
//! `__consumer_offsets` record format. It must not do I/O, read a clock, spawn, or depend on
//! glommio or the broker: time is an input (`now_ms`), timers and log appends are outputs
//! ([`Effect`]), and replies that Kafka delays are outputs too, keyed by a caller-chosen
//! [`ReplyToken`].
//!
//! A tour:
//!
//! - [`GroupManager`] (`manager/`) holds every group of one `__consumer_offsets` partition. The
//!   broker runs one per partition, on the shard that leads it; nothing else touches it.
//! - `group` is one group's data and the bookkeeping that keeps it consistent; `manager::rebalance`
//!   the state transitions (Empty → PreparingRebalance → CompletingRebalance → Stable, and back).
//! - [`api`] are the plain-Rust request and response types, independent of wire versions;
//!   [`codes`] the Kafka error codes they carry.
//! - [`records`] encodes and decodes Kafka's own `__consumer_offsets` key/value schemas, so the
//!   log is readable by Kafka tools; [`GroupManager::load`] rebuilds a manager from it.
//! - [`coordinator_partition`] is Kafka's group → partition rule behind FindCoordinator.
//! - [`GroupConfig`] has every limit and timing, with Kafka's names and defaults.
//! - [`txn`] is the transaction coordinator (InitProducerId, AddPartitionsToTxn,
//!   AddOffsetsToTxn, EndTxn, DescribeTransactions, ListTransactions) over
//!   `__transaction_state`, built the same way: [`txn::TxnManager`], one per partition.
//!
//! What the glue does around it: decode a request, call the manager with `now_ms`, then carry
//! out the effects in order — append `Persist` records (one batch per call), keep one timer per
//! [`TimerKey`] and call [`GroupManager::on_timer`] when it fires, and send each reply once the
//! call's records are durable. FindCoordinator needs no manager: the broker answers with the
//! leader of [`coordinator_partition`]. A partition with no manager on this broker answers
//! NOT_COORDINATOR; a manager still replaying answers COORDINATOR_LOAD_IN_PROGRESS.

#![warn(missing_docs)]

pub mod api;
pub mod codes;
pub mod config;
mod group;
mod manager;
pub mod member_id;
pub mod partition;
pub mod records;
pub mod subscription;
pub mod txn;

pub use api::{
    CommitPartition, DescribedGroup, DescribedMember, Effect, FetchedPartition, GroupState,
    HeartbeatRequest, JoinRequest, JoinResult, JoinedMember, LeaveResult, LeavingMember,
    ListGroupsResult, ListedGroup, OffsetCommitRequest, OffsetDeleteRequest, OffsetDeleteResult,
    OffsetFetchGroup, OffsetFetchGroupResult, Record, ReplyToken, SyncRequest, SyncResult,
    TimerKey, TopicPartitionErrors,
};
pub use config::{ConfigError, GroupConfig};
pub use manager::{
    GroupManager, LoadError, ReplayOutcome, TransactionalBatch, TxnOffsetCommitRequest,
};
pub use member_id::{MemberIdGenerator, SeededMemberIds};
pub use partition::coordinator_partition;
pub use records::RecordError;
