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

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shardlog_protocol::batch::{self, BatchHeader};
use shardlog_storage::{BatchMeta, FileSlice, PartitionLog, ReadSlice, StorageError};

use crate::config::{limits, TopicConfig};
use crate::control::Lease;
use crate::errors;
use crate::metadata::{PartitionState, NO_LEADER};
use crate::metrics::PartitionCounters;
use crate::producer_state::{ProducerStateTable, Refusal, SequenceCheck};
use crate::replication::{self, EpochCache, FollowerState, LeaderView};

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

/// Producer state and the leader epoch cache, rebuilt from every batch header in the log.
async fn scan_state(log: &PartitionLog) -> Result<(ProducerStateTable, EpochCache), StorageError> {
    let mut producers = ProducerStateTable::default();
    let mut epochs = EpochCache::default();
    log.scan_headers(log.log_start_offset(), &mut |h| {
        producers.observe(h);
        epochs.assign(h.partition_leader_epoch, h.base_offset);
    })
    .await?;
    Ok((producers, epochs))
}

struct PendingAppend {
    batches: Vec<IncomingBatch>,
    reply: flume::Sender<AppendOutcome>,
}

/// What a fetch of one partition found.
#[derive(Debug)]
pub struct PartitionRead {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub slice: Option<FileSlice>,
}

/// What this broker is for a partition, per its latest snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower {
        leader: i32,
    },
    /// No leader (`NO_LEADER`), or this broker is not among the replicas any more.
    Offline,
}

/// What `apply_state` changed, for the shard to act on (group coordinator, replica fetcher).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    BecameLeader,
    BecameFollower {
        leader: i32,
    },
    WentOffline,
    /// Same role and epoch; the ISR, replicas or znode version may have changed.
    Unchanged,
}

/// Who is fetching: a consumer (`replica_id` -1) or a follower broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchFrom {
    pub replica_id: i32,
    /// -1 when the fetcher does not know the epoch (no check).
    pub current_leader_epoch: i32,
    /// A follower's own log start offset (-1 from consumers).
    pub log_start_offset: i64,
}

impl FetchFrom {
    pub const CONSUMER: FetchFrom = FetchFrom {
        replica_id: -1,
        current_leader_epoch: -1,
        log_start_offset: -1,
    };
}

/// A leader's request to change the ISR, handed to the control thread by the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub isr: Vec<i32>,
    pub leader_epoch: i32,
    pub zk_version: i32,
}

/// Replication state from the latest applied snapshot plus the leader's follower tracking.
struct ReplicaState {
    local: i32,
    role: Role,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    zk_version: i32,
    /// Leader only: the followers' fetch progress in the current epoch.
    followers: HashMap<i32, FollowerState>,
    /// Leader only: the log end offset when this epoch's leadership began.
    epoch_start_offset: i64,
    /// The znode version an ISR change was asked against, while one is in flight.
    isr_change_pending: Option<i32>,
    /// After a refused ISR change: no new one before this time (ms since the epoch), unless a
    /// snapshot brings a new ISR version, epoch or role first.
    isr_change_not_before_ms: i64,
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
    write_gate: crate::rt::Semaphore,
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
    hw_store_gate: crate::rt::Semaphore,
    epoch_cache: RefCell<EpochCache>,
    ack_waiters: RefCell<Vec<AckWaiter>>,
    /// The last produce refused before appending with a retriable error, or the start of
    /// this broker's leadership: a sequence gap soon after gets that error (`gap_answer`).
    last_refusal: Cell<Option<Refusal>>,
    follower_sync: Cell<FollowerSync>,
    counters: crate::metrics::PartitionCounters,
}

/// Suffix of partition directories being deleted.
pub const DELETED_SUFFIX: &str = "-delete";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Partition {
    /// Opens the log (recovering it after an unclean stop) and rebuilds producer state and the
    /// leader epoch cache from the batch headers. The partition starts offline, with the high
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
        log::debug!("{topic}-{index}: scanning batch headers");
        let (producers, epochs) = scan_state(&log).await?;
        log::debug!("{topic}-{index}: open");
        let hw = stored_hw.map_or(log.log_start_offset(), |h| {
            h.min(log.log_end_offset()).max(log.log_start_offset())
        });
        Ok(Partition {
            topic,
            index,
            log,
            config: RefCell::new(config),
            producers: RefCell::new(producers),
            pending: RefCell::new(VecDeque::new()),
            writing: Cell::new(false),
            write_gate: crate::rt::Semaphore::new(1),
            waiters: RefCell::new(Vec::new()),
            lease,
            replica: RefCell::new(ReplicaState {
                local: -1,
                role: Role::Offline,
                leader_epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
                zk_version: -1,
                followers: HashMap::new(),
                epoch_start_offset: 0,
                isr_change_pending: None,
                isr_change_not_before_ms: 0,
            }),
            high_watermark: Cell::new(hw),
            stored_high_watermark: Cell::new(stored_hw.unwrap_or(-1)),
            hw_store_gate: crate::rt::Semaphore::new(1),
            epoch_cache: RefCell::new(epochs),
            last_refusal: Cell::new(None),
            ack_waiters: RefCell::new(Vec::new()),
            follower_sync: Cell::new(FollowerSync::default()),
            counters: Default::default(),
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

    pub fn role(&self) -> Role {
        self.replica.borrow().role
    }

    pub fn leader_epoch(&self) -> i32 {
        self.replica.borrow().leader_epoch
    }

    pub fn isr(&self) -> Vec<i32> {
        self.replica.borrow().isr.clone()
    }

    /// True when this broker leads the partition and may write (its lease is valid).
    pub fn can_write(&self) -> bool {
        self.role() == Role::Leader && self.lease.valid()
    }

    /// Remembers a retriable refusal of a produce (nothing appended), see `gap_answer`.
    fn note_refusal(&self, code: i16) {
        self.last_refusal.set(Some(Refusal {
            at_ms: now_ms(),
            code,
        }));
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
    pub fn apply_state(&self, local: i32, state: &PartitionState) -> Transition {
        let now = now_ms();
        let leo = self.log.log_end_offset();
        let role = if !state.replicas.contains(&local) || state.leader == NO_LEADER {
            Role::Offline
        } else if state.leader == local {
            Role::Leader
        } else {
            Role::Follower {
                leader: state.leader,
            }
        };
        let transition = {
            let mut r = self.replica.borrow_mut();
            let changed = r.role != role || r.leader_epoch != state.leader_epoch;
            if r.isr_change_pending.is_some_and(|v| v != state.zk_version) || changed {
                r.isr_change_pending = None;
            }
            if r.zk_version != state.zk_version || changed {
                // New state to decide from: a refused change's back-off no longer applies.
                r.isr_change_not_before_ms = 0;
            }
            r.local = local;
            r.replicas = state.replicas.clone();
            r.isr = state.isr.clone();
            r.zk_version = state.zk_version;
            r.leader_epoch = state.leader_epoch;
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
                            .assign(state.leader_epoch, leo);
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

    /// Leader: moves the high watermark to what the ISR allows (never backwards), then
    /// completes the acks=all waits it passed and wakes fetches (data became visible).
    fn maybe_advance_hw(&self) {
        let candidate = {
            let r = self.replica.borrow();
            if r.role != Role::Leader {
                return;
            }
            replication::isr_high_watermark(
                r.local,
                self.log.log_end_offset(),
                &r.isr,
                &r.followers,
            )
        };
        let old = self.high_watermark.get();
        let hw = replication::advance_high_watermark(old, candidate);
        if hw <= old {
            return;
        }
        debug_assert!(hw <= self.log.log_end_offset());
        self.high_watermark.set(hw);
        {
            let mut waiters = self.ack_waiters.borrow_mut();
            let mut i = 0;
            while i < waiters.len() {
                if waiters[i].last_offset < hw {
                    let w = waiters.swap_remove(i);
                    let _ = w.reply.try_send(errors::NONE);
                } else {
                    i += 1;
                }
            }
        }
        self.wake_waiters();
    }

    fn fail_ack_waiters(&self, code: i16) {
        for w in self.ack_waiters.borrow_mut().drain(..) {
            let _ = w.reply.try_send(code);
        }
    }

    /// acks=all, before appending: refuses when the ISR is smaller than `min.insync.replicas`.
    pub fn check_min_isr(&self) -> i16 {
        let min = self.config.borrow().min_insync_replicas.max(1) as usize;
        if self.replica.borrow().isr.len() < min {
            errors::NOT_ENOUGH_REPLICAS
        } else {
            errors::NONE
        }
    }

    /// acks=all, after appending: waits until the high watermark passes `last_offset`, at most
    /// `timeout` (REQUEST_TIMED_OUT); NOT_LEADER_OR_FOLLOWER if leadership is lost meanwhile,
    /// including when the leadership lease ends (cut off from ZooKeeper, another broker may be
    /// elected: the client must move to it now, not after its request timeout).
    pub async fn wait_committed(&self, last_offset: i64, timeout: Duration) -> i16 {
        if self.high_watermark.get() > last_offset {
            return errors::NONE;
        }
        if self.role() != Role::Leader {
            return errors::NOT_LEADER_OR_FOLLOWER;
        }
        let (tx, rx) = flume::bounded(1);
        {
            let mut waiters = self.ack_waiters.borrow_mut();
            waiters.retain(|w| !w.reply.is_disconnected());
            waiters.push(AckWaiter {
                last_offset,
                reply: tx,
            });
        }
        futures_lite::future::or(
            async {
                rx.recv_async()
                    .await
                    .unwrap_or(errors::NOT_LEADER_OR_FOLLOWER)
            },
            futures_lite::future::or(
                async {
                    crate::rt::sleep(timeout).await;
                    errors::REQUEST_TIMED_OUT
                },
                async {
                    self.lease.ended().await;
                    errors::NOT_LEADER_OR_FOLLOWER
                },
            ),
        )
        .await
    }

    /// Produce: acks=all checks the ISR size first and waits for the ISR after appending;
    /// acks=0/1 answer once the batches are in the log.
    pub async fn produce(
        self: &Rc<Self>,
        batches: Vec<IncomingBatch>,
        acks: i16,
        timeout: Duration,
        on_appended: impl FnOnce(),
    ) -> AppendOutcome {
        if acks == -1 {
            let code = self.check_min_isr();
            if code != errors::NONE {
                self.note_refusal(code);
                return AppendOutcome::failed(code, self.log.log_start_offset());
            }
            // Bounded waiters: refused before appending (retriable, nothing written). Requests
            // already appending may still add theirs, so the list holds at most the bound plus
            // the append queue's.
            let full = {
                let mut waiters = self.ack_waiters.borrow_mut();
                if waiters.len() >= limits::PARTITION_ACK_WAITERS_MAX {
                    waiters.retain(|w| !w.reply.is_disconnected());
                }
                waiters.len() >= limits::PARTITION_ACK_WAITERS_MAX
            };
            if full {
                self.note_refusal(errors::REQUEST_TIMED_OUT);
                return AppendOutcome::queue_full(self.log.log_start_offset());
            }
        }
        let mut outcome = self.append(batches).await;
        on_appended();
        if acks == -1 && outcome.error_code == errors::NONE {
            let code = self.wait_committed(outcome.last_offset, timeout).await;
            if code != errors::NONE {
                outcome = AppendOutcome::failed(code, outcome.log_start_offset);
            }
        }
        outcome
    }

    /// Leader: a follower fetched at `fetch_offset`, so it holds everything below, and its log
    /// starts at `log_start_offset` (-1 unknown). Updates its progress and the high watermark.
    /// Unknown replicas are ignored.
    pub fn on_follower_fetch(&self, replica_id: i32, fetch_offset: i64, log_start_offset: i64) {
        {
            let mut r = self.replica.borrow_mut();
            if r.role != Role::Leader {
                return;
            }
            let leo = self.log.log_end_offset();
            let Some(f) = r.followers.get_mut(&replica_id) else {
                return;
            };
            f.on_fetch(fetch_offset, leo, now_ms());
            if log_start_offset >= 0 {
                f.log_start_offset = Some(log_start_offset);
            }
        }
        self.maybe_advance_hw();
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

    /// Leader: the low watermark DeleteRecords reports, the smallest log start offset over this
    /// log and the in-sync followers that reported theirs. Records below it are gone from
    /// every replica that could lead next.
    pub fn low_watermark(&self) -> i64 {
        let r = self.replica.borrow();
        r.isr
            .iter()
            .filter_map(|b| r.followers.get(b)?.log_start_offset)
            .fold(self.log.log_start_offset(), i64::min)
    }

    /// Leader: the ISR change to ask the control thread for now, if any (at most one in
    /// flight; it takes effect when the control thread's next snapshot is applied). Marks it
    /// in flight. Only brokers for which `is_alive` holds are proposed to join.
    pub fn isr_change_due(
        &self,
        lag_time_max_ms: i64,
        is_alive: impl Fn(i32) -> bool,
    ) -> Option<IsrChange> {
        let now = now_ms();
        let mut r = self.replica.borrow_mut();
        if r.role != Role::Leader
            || r.isr_change_pending.is_some()
            || now < r.isr_change_not_before_ms
        {
            return None;
        }
        let isr = replication::isr_change(
            &LeaderView {
                local: r.local,
                replicas: &r.replicas,
                isr: &r.isr,
                followers: &r.followers,
                log_end_offset: self.log.log_end_offset(),
                high_watermark: self.high_watermark.get(),
                epoch_start_offset: r.epoch_start_offset,
            },
            now,
            lag_time_max_ms,
            is_alive,
        )?;
        r.isr_change_pending = Some(r.zk_version);
        Some(IsrChange {
            isr,
            leader_epoch: r.leader_epoch,
            zk_version: r.zk_version,
        })
    }

    /// The control thread refused (or could not make) the ISR change asked at `zk_version`:
    /// allow another attempt, not before `retry_after` unless a new snapshot changes the
    /// partition's state first (then the next check decides afresh).
    pub fn isr_change_failed(&self, zk_version: i32, retry_after: Duration) {
        let mut r = self.replica.borrow_mut();
        if r.isr_change_pending == Some(zk_version) {
            r.isr_change_pending = None;
            r.isr_change_not_before_ms =
                now_ms().saturating_add(retry_after.as_millis().min(i64::MAX as u128) as i64);
        }
    }

    /// OffsetForLeaderEpoch on the leader: `(error, epoch, end offset)` for `leader_epoch`.
    pub fn end_offset_for_epoch(
        &self,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> (i16, i32, i64) {
        let (role, ours) = {
            let r = self.replica.borrow();
            (r.role, r.leader_epoch)
        };
        let code = replication::check_leader_epoch(ours, current_leader_epoch);
        if code != errors::NONE {
            return (code, -1, -1);
        }
        if role != Role::Leader {
            return (errors::NOT_LEADER_OR_FOLLOWER, -1, -1);
        }
        let (epoch, end) = self
            .epoch_cache
            .borrow()
            .end_offset_for(leader_epoch, self.log.log_end_offset());
        (errors::NONE, epoch, end)
    }

    /// Follower: the latest epoch in the local epoch cache.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epoch_cache.borrow().latest_epoch()
    }

    /// Follower: one step of truncation by leader epoch, given the leader's answer for our
    /// `asked` epoch. Returns true when the log now agrees with the leader's (as far as epochs
    /// tell). When the leader has none of our epochs the log is emptied down to its own log
    /// start; the next fetch then finds where the leader's log starts (OFFSET_OUT_OF_RANGE
    /// carries it) and the replica fetcher restarts the log there.
    pub async fn truncate_by_epoch(
        &self,
        asked: i32,
        leader_epoch: i32,
        leader_end: i64,
    ) -> Result<bool, StorageError> {
        let step = {
            let cache = self.epoch_cache.borrow();
            replication::truncation_step(
                &cache,
                asked,
                self.log.log_end_offset(),
                leader_epoch,
                leader_end,
            )
        };
        match step {
            replication::TruncationStep::Done(offset) => {
                self.truncate_to(offset).await?;
                self.forget_epochs_from(offset);
                Ok(true)
            }
            replication::TruncationStep::Again(offset) => {
                self.truncate_to(offset).await?;
                // Whether or not a batch was cut, the epochs starting at `offset` or later are
                // gone, so the next question is about an older epoch: the steps always end.
                self.forget_epochs_from(offset);
                Ok(false)
            }
            replication::TruncationStep::Restart => {
                self.truncate_to(self.log.log_start_offset()).await?;
                Ok(true)
            }
        }
    }

    /// After truncating to `offset`: drops epoch cache entries that start at or after it.
    /// `truncate_to` rebuilds the cache only when it cut a batch; an epoch this broker led
    /// without writing sits in the cache at the log end with no batch behind it, and must go
    /// when the truncation point is the log end itself.
    fn forget_epochs_from(&self, offset: i64) {
        // The log now ends at or below `offset`; nothing of ours starts at or after its end.
        let end = offset.min(self.log.log_end_offset());
        self.epoch_cache.borrow_mut().truncate_from_end(end);
    }

    /// Removes every batch at or after `offset` (whole batches) and forgets what they carried:
    /// epochs in the epoch cache, producer state (rebuilt from the log).
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, StorageError> {
        let _gate = self.write_gate.acquire_permit(1).await;
        if offset >= self.log.log_end_offset() {
            return Ok(self.log.log_end_offset());
        }
        let leo = self.log.log_end_offset();
        let end = self.log.truncate_to(offset).await?;
        log::info!(
            "{}-{}: truncated from {leo} to {end}",
            self.topic,
            self.index
        );
        self.after_truncation().await?;
        Ok(end)
    }

    /// Discards the whole log and restarts it empty at `offset` (a follower that shares nothing
    /// with its leader starts at the leader's log start).
    pub async fn restart_at(&self, offset: i64) -> Result<(), StorageError> {
        let _gate = self.write_gate.acquire_permit(1).await;
        log::info!(
            "{}-{}: discarding the log (end {}) and restarting at {offset}",
            self.topic,
            self.index,
            self.log.log_end_offset()
        );
        self.log.restart_at(offset).await?;
        self.after_truncation().await?;
        Ok(())
    }

    async fn after_truncation(&self) -> Result<(), StorageError> {
        let (producers, epochs) = scan_state(&self.log).await?;
        *self.producers.borrow_mut() = producers;
        *self.epoch_cache.borrow_mut() = epochs;
        let end = self.log.log_end_offset();
        if self.high_watermark.get() > end {
            self.high_watermark.set(end);
        }
        if self.high_watermark.get() < self.log.log_start_offset() {
            self.high_watermark.set(self.log.log_start_offset());
        }
        Ok(())
    }

    /// Follower: moves the log start offset up to the leader's (which DeleteRecords or the
    /// leader's retention moved), never past what is committed here, so that records deleted
    /// on the leader do not come back when this replica leads. Errors are logged: the next
    /// fetch tries again.
    pub async fn follow_log_start(&self, leader_log_start: i64) {
        let target = leader_log_start
            .min(self.high_watermark.get())
            .min(self.log.log_end_offset());
        if target <= self.log.log_start_offset() {
            return;
        }
        let _gate = self.write_gate.acquire_permit(1).await;
        if !matches!(self.role(), Role::Follower { .. }) {
            return;
        }
        if let Err(e) = self.log.delete_records_before(target).await {
            log::warn!(
                "{}-{}: moving the log start to the leader's {target}: {e}",
                self.topic,
                self.index
            );
        }
    }

    /// Follower: appends the leader's batches as they are (offsets and epochs preserved, CRC
    /// checked), which must start at the log end; a partial batch at the end of `records` (a
    /// fetch cut at its byte limit) is left for the next fetch. Then takes the leader's high
    /// watermark, bounded by the local log end.
    pub async fn append_as_follower(
        &self,
        records: &[u8],
        leader_hw: i64,
    ) -> Result<(), FollowerAppendError> {
        let _gate = self.write_gate.acquire_permit(1).await;
        if !matches!(self.role(), Role::Follower { .. }) {
            return Err(FollowerAppendError::NotFollower);
        }
        let mut metas = Vec::new();
        let mut headers = Vec::new();
        let mut pos = 0;
        while pos < records.len() {
            let total = match batch::peek_total_len(&records[pos..]) {
                None => break,
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(FollowerAppendError::Corrupt(e.to_string())),
            };
            if pos + total > records.len() {
                break;
            }
            let h = batch::validate(&records[pos..pos + total])
                .map_err(|e| FollowerAppendError::Corrupt(e.to_string()))?;
            metas.push(BatchMeta::from_header(pos, &h));
            headers.push(h);
            pos += total;
        }
        if !metas.is_empty() {
            let leo = self.log.log_end_offset();
            if metas[0].base_offset != leo {
                return Err(FollowerAppendError::OffsetMismatch {
                    expected: leo,
                    got: metas[0].base_offset,
                });
            }
            self.log
                .append(records[..pos].to_vec(), &metas)
                .await
                .map_err(FollowerAppendError::Storage)?;
            let mut producers = self.producers.borrow_mut();
            let mut epochs = self.epoch_cache.borrow_mut();
            for h in &headers {
                producers.observe(h);
                epochs.assign(h.partition_leader_epoch, h.base_offset);
            }
        }
        let hw = leader_hw.min(self.log.log_end_offset());
        if hw >= self.log.log_start_offset() {
            self.high_watermark.set(hw);
        }
        if !metas.is_empty() {
            self.wake_waiters();
        }
        Ok(())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    /// Appends the batches of one produce request and waits until they are in the page cache
    /// (or were recognised as duplicates). Safe to call concurrently: appends are queued.
    /// Refused with NOT_LEADER_OR_FOLLOWER unless this broker leads and its lease is valid.
    pub async fn append(self: &Rc<Self>, batches: Vec<IncomingBatch>) -> AppendOutcome {
        if !self.can_write() {
            self.note_refusal(errors::NOT_LEADER_OR_FOLLOWER);
            return AppendOutcome::failed(
                errors::NOT_LEADER_OR_FOLLOWER,
                self.log.log_start_offset(),
            );
        }
        let bytes: usize = batches.iter().map(|b| b.bytes.len()).sum();
        let records: i64 = batches
            .iter()
            .map(|b| i64::from(b.header.records_count))
            .sum();
        if self.pending.borrow().len() >= limits::PARTITION_APPEND_QUEUE_MAX {
            // Bounded queue: refused before appending (retriable, nothing written).
            self.note_refusal(errors::REQUEST_TIMED_OUT);
            return AppendOutcome::queue_full(self.log.log_start_offset());
        }
        let (tx, rx) = flume::bounded(1);
        self.pending
            .borrow_mut()
            .push_back(PendingAppend { batches, reply: tx });
        if !self.writing.get() {
            self.writing.set(true);
            // The writer is a detached task so that a producer disconnecting mid-request cannot
            // cancel a write that other requests' batches share.
            let this = self.clone();
            crate::rt::spawn_detached(async move {
                while let Some(group) = this.take_pending() {
                    this.write_group(group).await;
                }
                this.writing.set(false);
            });
        }
        let outcome = rx
            .recv_async()
            .await
            .unwrap_or(AppendOutcome::failed(errors::KAFKA_STORAGE_ERROR, -1));
        if outcome.error_code == errors::NONE {
            let c = &self.counters;
            PartitionCounters::add(&c.bytes_in, bytes as u64);
            PartitionCounters::add(&c.records_in, records.max(0) as u64);
        }
        outcome
    }

    fn take_pending(&self) -> Option<Vec<PendingAppend>> {
        let mut q = self.pending.borrow_mut();
        if q.is_empty() {
            None
        } else {
            Some(q.drain(..).collect())
        }
    }

    async fn write_group(&self, group: Vec<PendingAppend>) {
        let _gate = self.write_gate.acquire_permit(1).await;
        // Leadership may have moved since these requests were queued: check where offsets are
        // assigned, and stamp the batches with the epoch checked here.
        if !self.can_write() {
            self.note_refusal(errors::NOT_LEADER_OR_FOLLOWER);
            let log_start = self.log.log_start_offset();
            for p in group {
                let _ = p.reply.send(AppendOutcome::failed(
                    errors::NOT_LEADER_OR_FOLLOWER,
                    log_start,
                ));
            }
            return;
        }
        let config = self.config();
        let append_time = if config.log_append_time { now_ms() } else { -1 };
        let epoch = self.leader_epoch();
        let mut next_offset = self.log.log_end_offset();
        let total: usize = group
            .iter()
            .flat_map(|p| &p.batches)
            .map(|b| b.bytes.len())
            .sum();
        let mut buf = Vec::with_capacity(total);
        let mut metas = Vec::new();
        let mut pending_state = ProducerStateTable::default();
        // Per request: Ok((base, last) offsets to report) or Err(code).
        let mut outcomes: Vec<Result<(i64, i64), i16>> = Vec::with_capacity(group.len());
        {
            let producers = self.producers.borrow();
            for p in &group {
                let mut first: Option<i64> = None;
                let mut last: i64 = -1;
                let mut error = None;
                // A request's batches are all-or-nothing; check them all before taking any.
                let mark = (buf.len(), metas.len(), next_offset, pending_state.clone());
                for b in &p.batches {
                    producers.fork_entry(&mut pending_state, b.header.producer_id);
                    match producers.check(&b.header, &pending_state) {
                        SequenceCheck::Reject(code) => {
                            error = Some(crate::producer_state::gap_answer(
                                code,
                                self.last_refusal.get(),
                                now_ms(),
                            ));
                            break;
                        }
                        SequenceCheck::Duplicate { base_offset } => {
                            first.get_or_insert(base_offset);
                            last = last.max(base_offset);
                        }
                        SequenceCheck::Append => {
                            let start = buf.len();
                            buf.extend_from_slice(&b.bytes);
                            let bytes = &mut buf[start..];
                            batch::assign_offset(bytes, next_offset, epoch);
                            if append_time >= 0 {
                                batch::set_log_append_time(bytes, append_time);
                            }
                            let mut h = b.header;
                            h.base_offset = next_offset;
                            pending_state.observe(&h);
                            metas.push(BatchMeta {
                                position: start,
                                base_offset: next_offset,
                                last_offset: h.last_offset(),
                                max_timestamp: if append_time >= 0 {
                                    append_time
                                } else {
                                    h.max_timestamp
                                },
                            });
                            first.get_or_insert(next_offset);
                            last = last.max(h.last_offset());
                            next_offset = h.last_offset() + 1;
                        }
                    }
                }
                match error {
                    Some(code) => {
                        let (len, n, off, state) = mark;
                        buf.truncate(len);
                        metas.truncate(n);
                        next_offset = off;
                        pending_state = state;
                        outcomes.push(Err(code));
                    }
                    None => outcomes.push(Ok((first.unwrap_or(next_offset), last))),
                }
            }
        }
        let write_result = if metas.is_empty() {
            Ok(())
        } else {
            self.log.append(buf, &metas).await.map(|_| ())
        };
        let log_start = self.log.log_start_offset();
        match write_result {
            Ok(()) => {
                self.producers.borrow_mut().commit(pending_state);
                if !metas.is_empty() {
                    // Followers read to the log end: wake their fetches. Consumers are woken
                    // when the high watermark moves (at once when the ISR is just us).
                    self.wake_waiters();
                    self.maybe_advance_hw();
                }
                for (p, outcome) in group.into_iter().zip(outcomes) {
                    let o = match outcome {
                        Ok((base, last)) => AppendOutcome {
                            error_code: errors::NONE,
                            base_offset: base,
                            last_offset: last,
                            log_append_time_ms: append_time,
                            log_start_offset: log_start,
                            queue_full: false,
                        },
                        Err(code) => AppendOutcome::failed(code, log_start),
                    };
                    let _ = p.reply.send(o);
                }
            }
            Err(e) => {
                log::error!("append to {}-{} failed: {e}", self.topic, self.index);
                for p in group {
                    let _ = p.reply.send(AppendOutcome::failed(
                        errors::KAFKA_STORAGE_ERROR,
                        log_start,
                    ));
                }
            }
        }
    }

    fn wake_waiters(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            let _ = w.try_send(FetchWake::Data);
        }
    }

    /// Reads for a fetch. When `waiter` is given it is registered so the next append or high
    /// watermark move wakes it (read and registration are one step on this shard, so nothing
    /// can slip between them unnoticed); the fetch handler passes one only when it may have to
    /// wait for more data.
    ///
    /// Only the leader serves fetches. A consumer reads below the high watermark; a follower
    /// (`from.replica_id >= 0`) reads to the log end, and its fetch offset is its log end
    /// offset, which may move the high watermark.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        waiter: Option<&flume::Sender<FetchWake>>,
        from: FetchFrom,
    ) -> PartitionRead {
        let (role, epoch) = {
            let r = self.replica.borrow();
            (r.role, r.leader_epoch)
        };
        let refuse = |code| PartitionRead {
            error_code: code,
            high_watermark: -1,
            log_start_offset: -1,
            slice: None,
        };
        let code = replication::check_leader_epoch(epoch, from.current_leader_epoch);
        if code != errors::NONE {
            return refuse(code);
        }
        if role != Role::Leader {
            return refuse(errors::NOT_LEADER_OR_FOLLOWER);
        }
        let leo = self.log.log_end_offset();
        let log_start = self.log_start_offset();
        let is_follower = from.replica_id >= 0;
        if is_follower && offset <= leo && offset >= log_start {
            self.on_follower_fetch(from.replica_id, offset, from.log_start_offset);
        }
        let hw = self.high_watermark();
        let limit = if is_follower { leo } else { hw };
        if let Some(w) = waiter {
            let mut ws = self.waiters.borrow_mut();
            ws.retain(|w| !w.is_disconnected());
            if ws.len() < limits::PARTITION_FETCH_WAITERS_MAX {
                ws.push(w.clone());
            } else {
                let _ = w.try_send(FetchWake::Full);
            }
        }
        if offset == limit && offset >= log_start {
            return PartitionRead {
                error_code: errors::NONE,
                high_watermark: hw,
                log_start_offset: log_start,
                slice: None,
            };
        }
        if offset > leo {
            return PartitionRead {
                error_code: errors::OFFSET_OUT_OF_RANGE,
                high_watermark: hw,
                log_start_offset: log_start,
                slice: None,
            };
        }
        match self.log.read(offset, max_bytes, limit).await {
            Ok(slice) => {
                if let (ReadSlice::File(f), false) = (&slice, is_follower) {
                    let c = &self.counters;
                    PartitionCounters::add(&c.bytes_out, f.len);
                    let from = offset.max(f.first_batch_offset);
                    PartitionCounters::add(
                        &c.records_out,
                        (f.last_offset + 1 - from).max(0) as u64,
                    );
                }
                PartitionRead {
                    error_code: errors::NONE,
                    high_watermark: hw,
                    log_start_offset: self.log_start_offset(),
                    slice: match slice {
                        ReadSlice::File(f) if f.len > 0 => Some(f),
                        _ => None,
                    },
                }
            }
            Err(StorageError::OffsetOutOfRange { .. }) => PartitionRead {
                error_code: errors::OFFSET_OUT_OF_RANGE,
                high_watermark: hw,
                log_start_offset: log_start,
                slice: None,
            },
            Err(e) => {
                log::error!(
                    "read of {}-{} at {offset} failed: {e}",
                    self.topic,
                    self.index
                );
                PartitionRead {
                    error_code: errors::KAFKA_STORAGE_ERROR,
                    high_watermark: hw,
                    log_start_offset: log_start,
                    slice: None,
                }
            }
        }
    }

    /// Wakes every waiting fetch and fails acks=all waits, e.g. before the partition is closed.
    pub fn release_waiters(&self) {
        self.fail_ack_waiters(errors::NOT_LEADER_OR_FOLLOWER);
        self.wake_waiters();
    }

    /// Waits (bounded) until no other task holds this partition, then hands it over.
    async fn into_unique(self: Rc<Self>) -> Result<Partition, Rc<Partition>> {
        let mut this = self;
        for _ in 0..500 {
            match Rc::try_unwrap(this) {
                Ok(p) => return Ok(p),
                Err(rc) => this = rc,
            }
            crate::rt::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(this)
    }

    /// Flushes and closes the log (clean shutdown).
    pub async fn close(self: Rc<Self>) -> Result<(), StorageError> {
        self.release_waiters();
        match self.into_unique().await {
            Ok(p) => p.log.close().await,
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
        crate::rt::remove_dir_all(doomed)
            .await
            .map_err(StorageError::from)
    }
}
