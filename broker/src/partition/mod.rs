//! A partition on its owning shard: the log, idempotent producer state, the append queue, the
//! fetch waiters, and its replication state (role, leader epoch, ISR, high watermark, the
//! leader's view of its followers, the leader epoch cache). Never touched from another shard:
//! other shards send closures (`Shard::invoke_on`).
//!
//! Standalone is the case "leader of epoch 0, ISR = {self}": the high watermark moves to the log
//! end right after each append, so one code path serves both modes. Replication decisions are
//! pure functions in `replication`; this module holds the state and applies them.
//!
//! Appends are group-committed: a produce handler pushes its batches on `pending` and, if no
//! append is running, becomes the writer and drains the queue (every batch waiting at that moment
//! goes into one `write_at`). This keeps appends to one partition serial, in arrival order,
//! without a lock, and lets concurrent producers share one I/O.
//!
//! Transactions (KIP-98): producer state tracks each producer's open transaction and the set of
//! open transactions by first offset; the last stable offset (LSO) is the smallest first offset
//! of an open transaction, bounded by the high watermark. The transaction coordinator ends a
//! transaction with `write_marker` (a control batch through the same append queue as produce).
//! An ABORT records an entry in the storage's aborted transaction index (`.txnindex`, per
//! segment, also in memory), which read-committed fetches report. Leader appends, follower
//! appends and the start-up scan all apply the same state changes; after a truncation the
//! state is rebuilt the same way as at open.
//!
//! Producer state snapshots (`snapshots`): at each roll and at clean close the producer state
//! and the leader epoch cache are written to `<log end offset>.snapshot`; opening (and a
//! truncation) loads the newest usable one and scans only the batches after it.
//!
//! `mod.rs` holds the state, opening, closing and the leadership transitions (`apply_state`);
//! the methods are split by role: `leader` (produce, group commit), `isr` (followers'
//! positions, high watermark, ISR changes, acks=all waiters), `follower` (the leader's batches,
//! truncation), `fetch` (reads and fetch waiters), `snapshots` (producer state snapshots,
//! loading the state, producer expiry).

mod clean;
mod fetch;
mod follower;
mod isr;
mod leader;
pub mod producer_state;
pub mod replication;
#[cfg(test)]
mod snapshot_tests;
mod snapshots;
#[cfg(test)]
mod txn_tests;

pub use snapshots::StateLoad;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shardlog_protocol::batch::{self, BatchHeader};
use shardlog_storage::{AbortedTxn, BatchMeta, FileSlice, PartitionLog, ReadSlice, StorageError};

use crate::base::clock::now_ms;
use crate::base::errors;
use crate::base::ids::{BrokerId, LeaderEpoch, Offset};
use crate::base::limits;
use crate::cluster::control_api::Lease;
use crate::cluster::metadata::check_leader_epoch;
use crate::cluster::metadata::{PartitionState, NO_LEADER};
use crate::config::TopicConfig;
use crate::metrics::PartitionCounters;
use producer_state::{CompletedTxn, ProducerStateTable, Refusal, SequenceCheck};
use replication::{EpochCache, FollowerState, LeaderAnswer, LeaderView};

/// One batch of a produce request, validated, with its bytes still in the request frame.
pub struct IncomingBatch {
    pub bytes: Bytes,
    pub header: BatchHeader,
}

/// Result of appending the batches of one produce request to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub error_code: i16,
    pub base_offset: i64,
    /// Last offset of the request's batches (for acks=all); -1 on error.
    pub last_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// Refused because the partition's append queue or acks=all waiters were full.
    pub queue_full: bool,
}

impl AppendOutcome {
    pub fn failed(error_code: i16, log_start_offset: i64) -> AppendOutcome {
        AppendOutcome {
            error_code,
            base_offset: -1,
            last_offset: -1,
            log_append_time_ms: -1,
            log_start_offset,
            queue_full: false,
        }
    }

    /// A refusal before appending because a bounded queue of the partition is full:
    /// REQUEST_TIMED_OUT, which clients retry.
    fn queue_full(log_start_offset: i64) -> AppendOutcome {
        AppendOutcome {
            queue_full: true,
            ..AppendOutcome::failed(errors::REQUEST_TIMED_OUT, log_start_offset)
        }
    }
}

/// Why a follower could not append what its leader sent.
#[derive(Debug, thiserror::Error)]
pub enum FollowerAppendError {
    #[error("not a follower any more")]
    NotFollower,
    /// The leader's data does not start at our log end: truncate again.
    #[error("batch at offset {got} where the log ends at {expected}")]
    OffsetMismatch { expected: i64, got: i64 },
    #[error("corrupt batch from the leader: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Storage(StorageError),
}

/// The `.txnindex` entry of a transaction that an ABORT ended, `producers` being the state
/// right after the marker.
fn aborted_entry(producers: &ProducerStateTable, done: &CompletedTxn) -> AbortedTxn {
    AbortedTxn {
        producer_id: done.producer_id.0,
        first_offset: done.first_offset,
        last_offset: done.last_offset,
        last_stable_offset: producers.stable_offset_after(done.last_offset),
    }
}

/// A transaction marker the coordinator asked for (`Partition::write_marker`).
#[derive(Debug, Clone, Copy)]
struct MarkerRequest {
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
}

struct PendingAppend {
    batches: Vec<IncomingBatch>,
    /// A transaction marker instead of `batches`: written alone, in queue order.
    marker: Option<MarkerRequest>,
    reply: flume::Sender<AppendOutcome>,
}

/// What a fetch of one partition found.
#[derive(Debug)]
pub struct PartitionRead {
    pub error_code: i16,
    pub high_watermark: i64,
    /// The last stable offset when read (-1 with an error).
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub slice: Option<FileSlice>,
    /// Read committed (`FetchFrom::read_committed`): the aborted transactions overlapping the
    /// returned range (empty when nothing is returned). None for read uncommitted and followers.
    pub aborted_transactions: Option<Vec<shardlog_protocol::fetch_encode::AbortedTxn>>,
}

/// What this broker is for a partition, per its latest snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower {
        leader: BrokerId,
    },
    /// No leader (`NO_LEADER`), or this broker is not among the replicas any more.
    Offline,
}

impl Role {
    /// This broker's role for a partition in `state`.
    pub fn in_state(local: BrokerId, state: &PartitionState) -> Role {
        if !state.replicas.contains(&local) || state.leader == NO_LEADER {
            Role::Offline
        } else if state.leader == local {
            Role::Leader
        } else {
            Role::Follower {
                leader: state.leader,
            }
        }
    }
}

/// What `apply_state` changed, for the shard to act on (group coordinator, replica fetcher).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    BecameLeader,
    BecameFollower {
        leader: BrokerId,
    },
    WentOffline,
    /// Same role and epoch; the ISR, replicas or znode version may have changed.
    Unchanged,
}

/// Who is fetching: a consumer (`replica_id` -1) or a follower broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchFrom {
    pub replica_id: BrokerId,
    /// -1 when the fetcher does not know the epoch (no check).
    pub current_leader_epoch: i32,
    /// A follower's own log start offset (-1 from consumers).
    pub log_start_offset: i64,
    /// A consumer with isolation level READ_COMMITTED: reads below the last stable offset and
    /// is told the aborted transactions. Ignored for followers.
    pub read_committed: bool,
}

impl FetchFrom {
    pub const CONSUMER: FetchFrom = FetchFrom {
        replica_id: BrokerId::NONE,
        current_leader_epoch: -1,
        log_start_offset: -1,
        read_committed: false,
    };
}

/// A leader's request to change the ISR, handed to the control thread by the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub isr: Vec<BrokerId>,
    pub leader_epoch: i32,
    pub zk_version: i32,
}

/// Replication state from the latest applied snapshot plus the leader's follower tracking.
struct ReplicaState {
    local: BrokerId,
    role: Role,
    leader_epoch: i32,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    zk_version: i32,
    /// Leader only: the followers' fetch progress in the current epoch.
    followers: HashMap<BrokerId, FollowerState>,
    /// Leader only: the log end offset when this epoch's leadership began.
    epoch_start_offset: i64,
    /// Leader only: the ISR change in flight, the brokers proposed to join (they count for the
    /// high watermark at once), the back-off after a refusal.
    isr_changes: replication::IsrChanges,
}

/// What a waiting fetch is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchWake {
    /// The partition moved (append, high watermark): read again.
    Data,
    /// The partition already has `PARTITION_FETCH_WAITERS_MAX` fetches waiting: answer now
    /// with what there is instead of waiting.
    Full,
}

/// A produce with acks=all waiting for the high watermark to pass `last_offset`.
struct AckWaiter {
    last_offset: i64,
    reply: flume::Sender<i16>,
}

/// Follower side bookkeeping for the replica fetcher.
#[derive(Debug, Clone, Copy, Default)]
pub struct FollowerSync {
    /// True from becoming a follower until truncation by leader epoch is done.
    pub needs_truncation: bool,
    /// Do not fetch before this instant (after an error).
    pub retry_at: Option<std::time::Instant>,
}

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    log: PartitionLog,
    config: RefCell<TopicConfig>,
    producers: RefCell<ProducerStateTable>,
    pending: RefCell<VecDeque<PendingAppend>>,
    writing: Cell<bool>,
    /// Serialises every write to the log (leader appends, follower appends, truncation), so a
    /// change of role while a write is in flight never runs two writers at once.
    write_gate: crate::runtime::rt::Semaphore,
    /// Fetches waiting for data past what they have read. Each is woken once, then drops out.
    /// At most `PARTITION_FETCH_WAITERS_MAX`; a fetch beyond is told `FetchWake::Full`.
    waiters: RefCell<Vec<flume::Sender<FetchWake>>>,
    lease: Arc<Lease>,
    replica: RefCell<ReplicaState>,
    /// Everything below it is committed (on every ISR member); consumers read below it.
    high_watermark: Cell<i64>,
    /// The high watermark in the partition's `high-watermark` file (-1: none written).
    stored_high_watermark: Cell<i64>,
    /// One writer of the `high-watermark` file at a time: the periodic store and the one at
    /// close both write `high-watermark.tmp` and rename it; interleaved, a shorter value
    /// written over a longer one left a malformed file (and a stray temporary file).
    hw_store_gate: crate::runtime::rt::Semaphore,
    epoch_cache: RefCell<EpochCache>,
    ack_waiters: RefCell<Vec<AckWaiter>>,
    /// The last produce refused before appending with a retriable error, or the start of
    /// this broker's leadership: a sequence gap soon after gets that error (`gap_answer`).
    last_refusal: Cell<Option<Refusal>>,
    follower_sync: Cell<FollowerSync>,
    counters: crate::metrics::PartitionCounters,
    /// The producer state snapshot files (shared with their background writes).
    snapshots: Rc<snapshots::SnapshotStore>,
    /// The active segment's base offset when last looked at: a change after an append is a
    /// roll, which takes a snapshot.
    active_base: Cell<i64>,
    /// A producer expired since the last snapshot was taken (the close snapshot is then
    /// written even at an unchanged log end).
    snapshot_dirty: Cell<bool>,
    /// Where the producer state came from at open or at the last truncation.
    state_load: Cell<StateLoad>,
}

/// Suffix of partition directories being deleted.
pub const DELETED_SUFFIX: &str = "-delete";

impl Partition {
    /// Opens the log (recovering it after an unclean stop) and rebuilds producer state and the
    /// leader epoch cache from the newest usable producer state snapshot and the batch headers
    /// after it (`snapshots::load_state`; from the log start when there is none). Snapshots
    /// above the log end (a recovery cut) or below the log start are removed. The partition
    /// starts offline, with the high
    /// watermark where it was last stored (cluster mode, bounded by the log) or at the log
    /// start: nothing more is known to be committed until `apply_state` says what this broker
    /// is (a leader alone in its ISR moves it to the log end at once).
    pub async fn open(
        topic: Arc<str>,
        index: i32,
        dir: std::path::PathBuf,
        config: TopicConfig,
        clean_shutdown: bool,
        lease: Arc<Lease>,
    ) -> Result<Partition, StorageError> {
        log::debug!("{topic}-{index}: opening the log");
        let stored_hw = shardlog_storage::checkpoint::read_high_watermark(&dir);
        let log = PartitionLog::open(dir, config.log_config(), clean_shutdown).await?;
        let snapshots = snapshots::SnapshotStore::open(log.dir().to_path_buf()).await?;
        let (lso, leo) = (log.log_start_offset(), log.log_end_offset());
        snapshots.remove_where(|o| o > leo || o < lso, true).await?;
        log::debug!("{topic}-{index}: loading producer state");
        let name = format!("{topic}-{index}");
        let loaded = snapshots::load_state(&log, &snapshots, &name).await?;
        log::debug!("{topic}-{index}: open ({:?})", loaded.report);
        let active_base = log.active_base_offset();
        let hw = stored_hw.map_or(log.log_start_offset(), |h| {
            h.min(log.log_end_offset()).max(log.log_start_offset())
        });
        Ok(Partition {
            topic,
            index,
            log,
            config: RefCell::new(config),
            producers: RefCell::new(loaded.producers),
            pending: RefCell::new(VecDeque::new()),
            writing: Cell::new(false),
            write_gate: crate::runtime::rt::Semaphore::new(1),
            waiters: RefCell::new(Vec::new()),
            lease,
            replica: RefCell::new(ReplicaState {
                local: BrokerId::NONE,
                role: Role::Offline,
                leader_epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
                zk_version: -1,
                followers: HashMap::new(),
                epoch_start_offset: 0,
                isr_changes: replication::IsrChanges::default(),
            }),
            high_watermark: Cell::new(hw),
            stored_high_watermark: Cell::new(stored_hw.unwrap_or(-1)),
            hw_store_gate: crate::runtime::rt::Semaphore::new(1),
            epoch_cache: RefCell::new(loaded.epochs),
            last_refusal: Cell::new(None),
            ack_waiters: RefCell::new(Vec::new()),
            follower_sync: Cell::new(FollowerSync::default()),
            counters: Default::default(),
            snapshots,
            active_base: Cell::new(active_base),
            snapshot_dirty: Cell::new(false),
            state_load: Cell::new(loaded.report),
        })
    }

    /// Traffic counters (bytes and records in from producers, out to consumers).
    pub fn counters(&self) -> &crate::metrics::PartitionCounters {
        &self.counters
    }

    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    pub fn config(&self) -> TopicConfig {
        self.config.borrow().clone()
    }

    pub fn set_config(&self, config: TopicConfig) {
        if let Err(e) = self.log.set_config(config.log_config()) {
            // Topic configs are validated before they are stored; this would be a bug.
            log::error!("{}-{}: storage refused config: {e}", self.topic, self.index);
            return;
        }
        *self.config.borrow_mut() = config;
    }

    /// Offsets below it are committed: on every ISR member (leader), or as the leader last
    /// said (follower). Standalone it follows the log end offset at once.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.get()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// The last stable offset: the first offset of the earliest open transaction, or the high
    /// watermark if it is lower (or no transaction is open). Read-committed consumers read
    /// below it.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark.get();
        self.producers
            .borrow()
            .first_ongoing_offset()
            .map_or(hw, |first| first.min(hw))
    }

    /// The producers this partition has state for (DescribeProducers).
    pub fn producers(&self) -> Vec<producer_state::ProducerView> {
        self.producers.borrow().describe()
    }

    /// The open transactions of this partition: (first offset, producer id), by first offset.
    pub fn ongoing_transactions(&self) -> Vec<(i64, i64)> {
        self.producers
            .borrow()
            .ongoing()
            .map(|(o, p)| (o, p.0))
            .collect()
    }

    pub fn role(&self) -> Role {
        self.replica.borrow().role
    }

    pub fn leader_epoch(&self) -> i32 {
        self.replica.borrow().leader_epoch
    }

    pub fn isr(&self) -> Vec<BrokerId> {
        self.replica.borrow().isr.clone()
    }

    /// True when this broker leads the partition and may write (its lease is valid).
    pub fn can_write(&self) -> bool {
        self.role() == Role::Leader && self.lease.valid()
    }

    pub fn follower_sync(&self) -> FollowerSync {
        self.follower_sync.get()
    }

    pub fn set_follower_sync(&self, s: FollowerSync) {
        self.follower_sync.set(s);
    }

    /// Applies this partition's state from a new snapshot (`local` = this broker's id) and says
    /// what changed. Becoming leader (new epoch, or was not leader) records the epoch's start in
    /// the epoch cache and starts follower tracking afresh; becoming follower or going offline
    /// fails the acks=all waits. A new ISR in the same epoch moves the high watermark.
    /// Every move of the high watermark goes through here. It never passes the log end
    /// offset: checked in release builds too, since a violation would answer consumers with
    /// offsets that are not in the log and count uncommitted records as committed.
    fn set_high_watermark(&self, hw: i64) {
        let leo = self.log.log_end_offset();
        assert!(
            hw <= leo,
            "{}-{}: high watermark {hw} past the log end offset {leo}",
            self.topic,
            self.index
        );
        self.high_watermark.set(hw);
    }

    pub fn apply_state(&self, local: BrokerId, state: &PartitionState) -> Transition {
        let now = now_ms();
        let leo = self.log.log_end_offset();
        let role = Role::in_state(local, state);
        let transition = {
            let mut r = self.replica.borrow_mut();
            let changed = r.role != role || r.leader_epoch != state.leader_epoch;
            let old_version = r.zk_version;
            r.isr_changes
                .on_state(old_version, state.zk_version, changed);
            // Leader epochs only grow: snapshots are applied in version order and every leader
            // change bumps the epoch, so a leader named in an older epoch means two leaders
            // could share one: stop rather than follow it. A state without a leader may carry
            // epoch 0 (its znode is not known, e.g. while the topic is deleted): the partition
            // goes offline and keeps the epoch it had.
            assert!(
                state.leader_epoch >= r.leader_epoch || state.leader == NO_LEADER,
                "{}-{}: leader epoch would go back from {} to {} (leader {})",
                self.topic,
                self.index,
                r.leader_epoch,
                state.leader_epoch,
                state.leader
            );
            r.local = local;
            r.replicas = state.replicas.clone();
            r.isr = state.isr.clone();
            r.zk_version = state.zk_version;
            r.leader_epoch = r.leader_epoch.max(state.leader_epoch);
            r.role = role;
            if !changed {
                if role == Role::Leader {
                    // Reassigned replicas in the same epoch: track exactly the new ones.
                    let replicas = r.replicas.clone();
                    r.followers.retain(|id, _| replicas.contains(id));
                    for id in replicas {
                        if id != local {
                            r.followers
                                .entry(id)
                                .or_insert_with(|| FollowerState::new(now));
                        }
                    }
                }
                Transition::Unchanged
            } else {
                r.followers.clear();
                match role {
                    Role::Leader => {
                        for id in r.replicas.clone() {
                            if id != local {
                                r.followers.insert(id, FollowerState::new(now));
                            }
                        }
                        r.epoch_start_offset = leo;
                        self.epoch_cache
                            .borrow_mut()
                            .assign(LeaderEpoch(state.leader_epoch), Offset(leo));
                        // Requests sent before the client knew may have been refused.
                        self.note_refusal(errors::NOT_LEADER_OR_FOLLOWER);
                        Transition::BecameLeader
                    }
                    Role::Follower { leader } => Transition::BecameFollower { leader },
                    Role::Offline => Transition::WentOffline,
                }
            }
        };
        match transition {
            Transition::BecameFollower { .. } | Transition::WentOffline => {
                self.fail_ack_waiters(errors::NOT_LEADER_OR_FOLLOWER);
                self.follower_sync.set(FollowerSync {
                    needs_truncation: true,
                    retry_at: None,
                });
                // Consumers waiting here must learn that this broker no longer leads.
                self.wake_waiters();
            }
            Transition::BecameLeader | Transition::Unchanged => self.maybe_advance_hw(),
        }
        transition
    }

    /// Cluster mode: writes the high watermark to the partition directory if it moved since
    /// the last time (every few seconds, and at close), so that a restarted leader serves what
    /// was committed before without waiting for its followers. Errors are logged.
    pub async fn store_high_watermark(&self) {
        let _permit = self.hw_store_gate.acquire_permit(1).await;
        let hw = self.high_watermark.get();
        if hw == self.stored_high_watermark.get() || hw < 0 {
            return;
        }
        match shardlog_storage::checkpoint::write_high_watermark(self.log.dir(), hw).await {
            Ok(()) => self.stored_high_watermark.set(hw),
            Err(e) => log::warn!(
                "{}-{}: storing the high watermark {hw}: {e}",
                self.topic,
                self.index
            ),
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    /// Waits (bounded) until no other task holds this partition, then hands it over.
    async fn into_unique(self: Rc<Self>) -> Result<Partition, Rc<Partition>> {
        let mut this = self;
        for _ in 0..500 {
            match Rc::try_unwrap(this) {
                Ok(p) => return Ok(p),
                Err(rc) => this = rc,
            }
            crate::runtime::rt::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(this)
    }

    /// Writes a producer state snapshot, flushes and closes the log (clean shutdown).
    pub async fn close(self: Rc<Self>) -> Result<(), StorageError> {
        self.release_waiters();
        match self.into_unique().await {
            Ok(p) => {
                p.snapshot_at_close().await;
                p.log.close().await
            }
            // Still referenced by a stuck task: flush at least, and let recovery check the tail.
            Err(p) => p.log.flush().await,
        }
    }

    /// Deletes the partition's data (DeleteTopics). The directory is first renamed out of the
    /// way, so a topic re-created under the same name starts empty whatever happens next; the
    /// renamed directory is removed once the files are closed (or on the next start).
    pub async fn delete(self: Rc<Self>) -> Result<(), StorageError> {
        self.release_waiters();
        let dir = self.log.dir().to_path_buf();
        let doomed = dir.with_file_name(format!(
            "{}.{}{DELETED_SUFFIX}",
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("partition"),
            now_ms()
        ));
        std::fs::rename(&dir, &doomed).map_err(StorageError::from)?;
        if let Ok(p) = self.into_unique().await {
            drop(p);
        }
        crate::runtime::rt::remove_dir_all(doomed)
            .await
            .map_err(StorageError::from)
    }
}
