//! The consumer group coordinator's I/O: one `shardlog_coordinator::GroupManager` per
//! `__consumer_offsets` partition, living on the shard that owns that partition.
//!
//! The manager is a pure state machine; this module carries out what it asks for, in order:
//! `Persist` records are appended to the partition as one batch per call, replies are sent only
//! once those records are committed (on every ISR member), and `ScheduleTimer` becomes one
//! glommio timer per key. On start the manager is rebuilt by replaying the partition. Nothing
//! here blocks the shard, and no `RefCell` borrow is held across an await.
//!
//! The manager's memory runs ahead of the committed log: it has applied every call, while the
//! batches of the last few may still be on their way to the followers, and a new leader replays
//! its whole log, the uncommitted tail included. A reply that shows that memory must wait until
//! it is committed, even when its own call wrote nothing: a SyncGroup follower that arrives after
//! the leader's assignment is in memory gets that assignment, and if it was not committed a
//! coordinator elsewhere may never have heard of it and hand the same generation out again
//! (found by the simulator, `sim/src/group.rs`). So JoinGroup / SyncGroup answers and OffsetFetch
//! wait for `unsettled`, the last offset memory may reflect; heartbeats do not (as in Kafka).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use shardlog_coordinator::{
    Effect, GroupConfig, GroupManager, JoinResult, MemberIdGenerator, ReplyToken, SyncResult,
    TimerKey,
};
use shardlog_protocol::batch::{self, Compression};
use shardlog_protocol::records::{BatchBuilder, Record};

use crate::base::clock::now_ms;
use crate::base::errors;
use crate::config::BrokerConfig;
use crate::partition::{IncomingBatch, Partition};

/// How long a group write waits for the ISR (Kafka's `offsets.commit.timeout.ms` default).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What became of one call's batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persisted {
    /// On every ISR member.
    Committed,
    /// In this leader's log, not on the ISR within the commit timeout.
    NotCommitted,
    /// Not in the log (not leader, lease ended, ISR below `min.insync.replicas`, I/O error).
    Refused,
}

/// The key of a transaction marker's record: int16 version, int16 type (0 ABORT, 1 COMMIT).
/// Whether it commits; `None` for any other control record.
fn marker_commits(key: &[u8]) -> Option<bool> {
    match key.get(2..4)? {
        [0, 0] => Some(false),
        [0, 1] => Some(true),
        _ => None,
    }
}

/// Member id suffixes from the kernel's random source.
struct RandomMemberIds;

impl MemberIdGenerator for RandomMemberIds {
    fn next_suffix(&mut self) -> String {
        let b = crate::base::random::random_bytes::<16>();
        format!(
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
        )
    }
}

/// The group settings of the broker, for one partition.
pub fn group_config(broker: &BrokerConfig, partition_index: i32) -> GroupConfig {
    GroupConfig {
        partition_index,
        partition_count: broker.offsets_topic_num_partitions,
        group_min_session_timeout_ms: broker.group_min_session_timeout_ms,
        group_max_session_timeout_ms: broker.group_max_session_timeout_ms,
        group_initial_rebalance_delay_ms: broker.group_initial_rebalance_delay_ms,
        ..GroupConfig::default()
    }
}

/// Coordinator of the groups of one `__consumer_offsets` partition. Lives on its shard.
pub struct GroupCoordinator {
    pub partition: Rc<Partition>,
    manager: RefCell<GroupManager>,
    next_token: Cell<u64>,
    pending_join: RefCell<HashMap<ReplyToken, flume::Sender<JoinResult>>>,
    pending_sync: RefCell<HashMap<ReplyToken, flume::Sender<SyncResult>>>,
    timers: RefCell<HashMap<TimerKey, crate::runtime::rt::Task<()>>>,
    offsets_retention_ms: i64,
    closed: Cell<bool>,
    /// The last offset of the partition the manager's memory may reflect (the log end when it
    /// loaded, then each batch appended): answers showing that memory wait for its commit.
    unsettled: Cell<i64>,
    /// A reload after a failed write is under way.
    reloading: Cell<bool>,
}

impl GroupCoordinator {
    /// Creates the coordinator in its loading state and replays the partition in the
    /// background; until that finishes, requests get COORDINATOR_LOAD_IN_PROGRESS.
    pub fn start(partition: Rc<Partition>, broker: &BrokerConfig) -> Option<Rc<GroupCoordinator>> {
        let config = group_config(broker, partition.index);
        let manager = match GroupManager::new_loading(config, Box::new(RandomMemberIds)) {
            Ok(m) => m,
            Err(e) => {
                log::error!(
                    "group coordinator config for partition {}: {e}",
                    partition.index
                );
                return None;
            }
        };
        let gc = Rc::new(GroupCoordinator {
            partition,
            manager: RefCell::new(manager),
            next_token: Cell::new(1),
            pending_join: RefCell::new(HashMap::new()),
            pending_sync: RefCell::new(HashMap::new()),
            timers: RefCell::new(HashMap::new()),
            offsets_retention_ms: broker.offsets_retention_ms,
            closed: Cell::new(false),
            unsettled: Cell::new(-1),
            reloading: Cell::new(false),
        });
        let this = gc.clone();
        let check_every = Duration::from_millis(broker.offsets_retention_check_interval_ms);
        crate::runtime::rt::spawn_detached(async move {
            this.load().await;
            // Hold the coordinator weakly while idle, so closing the partition is not held up.
            let weak = Rc::downgrade(&this);
            drop(this);
            loop {
                crate::runtime::rt::sleep(check_every).await;
                let Some(gc) = weak.upgrade() else { return };
                if gc.closed.get() {
                    return;
                }
                let effects = gc
                    .manager
                    .borrow_mut()
                    .expire_offsets(now_ms(), gc.offsets_retention_ms);
                gc.apply(effects).await;
            }
        });
        Some(gc)
    }

    async fn load(self: &Rc<Self>) {
        let started = std::time::Instant::now();
        let start_offset = self.partition.log_start_offset();
        let mut records = 0u64;
        let mut batches = 0u64;
        // Records not yet on every ISR member are replayed too (their requests may still be
        // waiting).
        let end = super::replay_log(&self.partition, |b, offset| {
            batches += 1;
            let mut manager = self.manager.borrow_mut();
            let producer = b.header.producer_id;
            if b.header.is_control() {
                // A transaction marker settles that producer's pending offsets.
                if b.header.last_offset() >= offset {
                    if let Some(commit) = b
                        .records
                        .first()
                        .and_then(|r| r.key.as_deref())
                        .and_then(marker_commits)
                    {
                        manager.replay_marker(producer, commit);
                    }
                }
                return;
            }
            for r in b.records {
                if r.offset < offset {
                    continue;
                }
                if let Some(key) = &r.key {
                    let replayed = if b.header.is_transactional() {
                        manager.replay_txn(producer, key, r.value.clone())
                    } else {
                        manager.replay(key, r.value.clone())
                    };
                    if let Err(e) = replayed {
                        log::warn!(
                            "skipping a bad __consumer_offsets record at {}: {e}",
                            r.offset
                        );
                    }
                    records += 1;
                }
            }
        })
        .await;
        self.unsettled.set(end - 1);
        let effects = self.manager.borrow_mut().finish_loading(now_ms());
        if records > 0 {
            // The load time covers reading and replaying the log and finishing the load, not
            // carrying out the effects that follow (perf/coordinator-load.sh reads this line).
            log::info!(
                "loaded {records} group record(s) of __consumer_offsets-{} in {:.1} ms \
                 ({batches} batch(es), offsets {start_offset}..{end})",
                self.partition.index,
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        self.apply(effects).await;
    }

    fn token(&self) -> ReplyToken {
        let t = self.next_token.get();
        self.next_token.set(t + 1);
        ReplyToken(t)
    }

    /// Runs one call of the manager (which must not await) and carries out its effects.
    /// Returns the call's own result and whether its records reached the log.
    pub async fn call<T>(
        self: &Rc<Self>,
        f: impl FnOnce(&mut GroupManager, i64) -> (T, Vec<Effect>),
    ) -> (T, bool) {
        let (result, effects) = {
            let mut m = self.manager.borrow_mut();
            f(&mut m, now_ms())
        };
        let durable = self.apply(effects).await;
        (result, durable)
    }

    /// Reads the manager without changing it.
    pub fn read<T>(&self, f: impl FnOnce(&GroupManager) -> T) -> T {
        f(&self.manager.borrow())
    }

    /// Reads the manager, then waits until what it read is committed; `None` if it could not
    /// be (the caller answers NOT_COORDINATOR).
    pub async fn read_committed<T>(&self, f: impl FnOnce(&GroupManager) -> T) -> Option<T> {
        let value = self.read(f);
        self.settled().await.then_some(value)
    }

    /// Waits until everything the manager's memory may reflect is committed. False if that did
    /// not happen within the commit timeout (or this broker stopped leading).
    async fn settled(&self) -> bool {
        let last = self.unsettled.get();
        if last < 0 || self.partition.high_watermark() > last {
            return true;
        }
        let code = self.partition.wait_committed(last, COMMIT_TIMEOUT).await;
        if code != errors::NONE {
            log::warn!(
                "group state of __consumer_offsets-{} not committed: error {code}",
                self.partition.index
            );
        }
        code == errors::NONE
    }

    /// JoinGroup: registers a reply slot, runs the call, and waits for the (often delayed) reply.
    pub async fn join(self: &Rc<Self>, req: shardlog_coordinator::JoinRequest) -> JoinResult {
        let token = self.token();
        let member = req.member_id.clone();
        let (tx, rx) = flume::bounded(1);
        self.pending_join.borrow_mut().insert(token, tx);
        self.call(|m, now| ((), m.join(now, token, req))).await;
        rx.recv_async()
            .await
            .unwrap_or_else(|_| JoinResult::error(errors::NOT_COORDINATOR, member))
    }

    pub async fn sync(self: &Rc<Self>, req: shardlog_coordinator::SyncRequest) -> SyncResult {
        let token = self.token();
        let (tx, rx) = flume::bounded(1);
        self.pending_sync.borrow_mut().insert(token, tx);
        self.call(|m, now| ((), m.sync(now, token, req))).await;
        rx.recv_async()
            .await
            .unwrap_or_else(|_| SyncResult::error(errors::NOT_COORDINATOR))
    }

    /// Carries out effects: append records (one batch), then replies, then timers. Returns
    /// whether the records are in the log (true when there were none).
    async fn apply(self: &Rc<Self>, effects: Vec<Effect>) -> bool {
        let mut records = Vec::new();
        let mut joins = Vec::new();
        let mut syncs = Vec::new();
        let mut timers = Vec::new();
        for e in effects {
            match e {
                Effect::Persist(r) => records.push(r),
                Effect::JoinReply(t, r) => joins.push((t, r)),
                Effect::SyncReply(t, r) => syncs.push((t, r)),
                Effect::ScheduleTimer { key, deadline_ms } => timers.push((key, deadline_ms)),
            }
        }
        let durable = if !records.is_empty() {
            let persisted = self.persist(records).await;
            // Refused: memory holds what the log does not. (Appended but not committed in
            // time: the log has it, and `unsettled` keeps answers waiting for it.)
            if persisted == Persisted::Refused {
                let this = self.clone();
                crate::runtime::rt::spawn_detached(async move { this.reload().await });
            }
            persisted == Persisted::Committed
        } else if !joins.is_empty() || !syncs.is_empty() {
            self.settled().await
        } else {
            true
        };
        for (t, mut r) in joins {
            if !durable {
                r = JoinResult::error(errors::NOT_COORDINATOR, r.member_id);
            }
            if let Some(tx) = self.pending_join.borrow_mut().remove(&t) {
                let _ = tx.try_send(r);
            }
        }
        for (t, mut r) in syncs {
            if !durable {
                r = SyncResult::error(errors::NOT_COORDINATOR);
            }
            if let Some(tx) = self.pending_sync.borrow_mut().remove(&t) {
                let _ = tx.try_send(r);
            }
        }
        for (key, deadline) in timers {
            self.schedule(key, deadline);
        }
        durable
    }

    /// Appends one call's records and waits for the ISR.
    async fn persist(&self, records: Vec<shardlog_coordinator::Record>) -> Persisted {
        self.persist_as(records, None).await
    }

    /// `persist`, as a transactional batch of `producer` (id, epoch) when given
    /// (TxnOffsetCommit: the transaction's marker settles it).
    async fn persist_as(
        &self,
        records: Vec<shardlog_coordinator::Record>,
        producer: Option<(i64, i16)>,
    ) -> Persisted {
        let now = now_ms();
        let mut builder = BatchBuilder::new(Compression::None, now);
        if let Some((id, epoch)) = producer {
            builder = builder.producer(id, epoch, -1).transactional(true);
        }
        let built = records.into_iter().try_for_each(|r| {
            builder.push_record(&Record {
                offset: 0,
                timestamp: now,
                key: Some(r.key),
                value: r.value,
                headers: Vec::new(),
            })
        });
        let bytes = match built.and_then(|()| builder.build()) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                log::error!("cannot encode group records: {e}");
                return Persisted::Refused;
            }
        };
        let header = match batch::validate(&bytes) {
            Ok(h) => h,
            Err(e) => {
                log::error!("group record batch invalid: {e}");
                return Persisted::Refused;
            }
        };
        let outcome = self
            .partition
            .append(vec![IncomingBatch { bytes, header }])
            .await;
        if outcome.error_code != errors::NONE {
            log::warn!(
                "cannot append group records to __consumer_offsets-{}: error {}",
                self.partition.index,
                outcome.error_code
            );
            return Persisted::Refused;
        }
        self.unsettled
            .set(self.unsettled.get().max(outcome.last_offset));
        // acks=all: a commit is answered only once every ISR member has it, so it survives a
        // move of the coordinator to another replica.
        let code = self
            .partition
            .wait_committed(outcome.last_offset, COMMIT_TIMEOUT)
            .await;
        if code != errors::NONE {
            log::warn!(
                "group records of __consumer_offsets-{} not replicated: error {code}",
                self.partition.index
            );
        }
        if code == errors::NONE {
            Persisted::Committed
        } else {
            Persisted::NotCommitted
        }
    }

    /// TxnOffsetCommit: the offsets go to the log in a transactional batch of the producer
    /// and stay pending in memory until its transaction's marker lands here. A batch that
    /// cannot be made durable drops the producer's pending offsets (the client's transaction
    /// then fails and aborts).
    pub async fn txn_offset_commit(
        self: &Rc<Self>,
        req: shardlog_coordinator::TxnOffsetCommitRequest,
    ) -> shardlog_coordinator::TopicPartitionErrors {
        let all = |errs: &shardlog_coordinator::TopicPartitionErrors, code: i16| {
            errs.iter()
                .map(|(t, ps)| (t.clone(), ps.iter().map(|(p, _)| (*p, code)).collect()))
                .collect()
        };
        let (errs, batch) = self.manager.borrow_mut().txn_offset_commit(now_ms(), req);
        let Some(batch) = batch else { return errs };
        let (id, epoch) = (batch.producer_id, batch.producer_epoch);
        let persisted = self.persist_as(batch.records, Some((id, epoch))).await;
        if persisted == Persisted::Committed {
            errs
        } else {
            self.manager.borrow_mut().complete_txn(now_ms(), id, false);
            all(&errs, errors::NOT_COORDINATOR)
        }
    }

    /// A transaction marker of `producer_id` was written to this partition: its pending
    /// offsets become committed offsets (COMMIT) or are dropped (ABORT).
    pub fn complete_txn(&self, producer_id: i64, commit: bool) {
        self.manager
            .borrow_mut()
            .complete_txn(now_ms(), producer_id, commit);
    }

    /// One timer per key: scheduling a key again replaces (cancels) the previous timer.
    fn schedule(self: &Rc<Self>, key: TimerKey, deadline_ms: i64) {
        let this = self.clone();
        let k = key.clone();
        let delay = Duration::from_millis((deadline_ms - now_ms()).max(0) as u64);
        let task = crate::runtime::rt::spawn(async move {
            crate::runtime::rt::sleep(delay).await;
            // Detach our own handle first: the effects may schedule this key again, and
            // dropping a running task's handle would cancel it.
            if let Some(own) = this.timers.borrow_mut().remove(&k) {
                own.detach();
            }
            this.call(|m, now| ((), m.on_timer(now, &k))).await;
        });
        self.timers.borrow_mut().insert(key, task);
    }

    /// After a batch the partition refused: the manager's memory holds what the log does not
    /// have, so it is rebuilt from the log, as the `Effect` contract asks. Waiting JoinGroup / SyncGroup get NOT_COORDINATOR; until the replay ends,
    /// requests get COORDINATOR_LOAD_IN_PROGRESS. The found-by-simulation case: a leader cut off
    /// from its followers stores a new generation in memory, cannot append it, and then hands
    /// that generation's assignment to the members that sync after the leader.
    async fn reload(self: &Rc<Self>) {
        if self.closed.get() || self.reloading.replace(true) {
            return;
        }
        let config = self.manager.borrow().config().clone();
        self.answer_waiting();
        match GroupManager::new_loading(config, Box::new(RandomMemberIds)) {
            Ok(m) => *self.manager.borrow_mut() = m,
            Err(e) => log::error!("group coordinator config: {e}"),
        }
        log::warn!(
            "reloading the groups of __consumer_offsets-{} after a failed write",
            self.partition.index
        );
        self.load().await;
        self.reloading.set(false);
    }

    /// Answers every waiting request with NOT_COORDINATOR and stops timers (partition closing).
    pub fn shutdown(&self) {
        self.closed.set(true);
        self.answer_waiting();
    }

    /// Unloads the manager, answering its waiting JoinGroup / SyncGroup with NOT_COORDINATOR.
    fn answer_waiting(&self) {
        let effects = self.manager.borrow_mut().unload();
        for e in effects {
            match e {
                Effect::JoinReply(t, r) => {
                    if let Some(tx) = self.pending_join.borrow_mut().remove(&t) {
                        let _ = tx.try_send(r);
                    }
                }
                Effect::SyncReply(t, r) => {
                    if let Some(tx) = self.pending_sync.borrow_mut().remove(&t) {
                        let _ = tx.try_send(r);
                    }
                }
                _ => {}
            }
        }
        self.timers.borrow_mut().clear();
    }
}
