//! The transaction coordinator's I/O: one `shardlog_coordinator::txn::TxnManager` per
//! `__transaction_state` partition, living on the shard that leads that partition.
//!
//! The manager is a pure state machine; this module carries out what it asks for, as the group
//! coordinator does (`coordinator.rs`): a call's records are appended to the partition as one
//! batch and waited for on the ISR before the call is answered; a write that fails is reported
//! back so the manager drops the transition it had prepared. Markers the manager asks for are
//! handed to the shard's marker writer (`server::txn::write_markers`) in a task of their own;
//! when they are all written the manager is told, and it completes the transaction. On start the
//! manager is rebuilt by replaying the partition, and the transactions found prepared get their
//! markers written again. Timers: one loop aborts transactions past their timeout, one forgets
//! expired transactional ids. Nothing here blocks the shard, and no `RefCell` borrow is held
//! across an await.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use shardlog_coordinator::txn::{self as txn, TxnConfig, TxnEffect, TxnManager, TxnReply};
use shardlog_coordinator::ReplyToken;
use shardlog_protocol::batch::{self, Compression};
use shardlog_protocol::records::{build_batch, Record};

use crate::base::clock::now_ms;
use crate::base::errors;
use crate::config::BrokerConfig;
use crate::partition::{IncomingBatch, Partition};

/// How long a transaction state write waits for the ISR.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A transaction's markers to write: one control batch per partition.
pub struct MarkerJob {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    /// The leader epoch of the coordinator's `__transaction_state` partition.
    pub coordinator_epoch: i32,
    pub partitions: Vec<(String, i32)>,
    /// False once the coordinator stopped: the writer gives up (the next one redoes it).
    pub active: Rc<dyn Fn() -> bool>,
}

/// Writes a job's markers; true once every partition has its marker.
pub type MarkerWriter = Rc<dyn Fn(MarkerJob) -> Pin<Box<dyn Future<Output = bool>>>>;

/// What InitProducerId gets from the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitAnswer {
    Done(i64, i16),
    Error(i16),
    /// A new producer id is needed: allocate one and call again with it.
    NeedsProducerId,
}

/// What a waiting request is told.
enum Answer {
    Reply(TxnReply),
    NeedsProducerId,
}

/// The coordinator settings of the broker, for one partition led in `coordinator_epoch`.
pub fn txn_config(
    broker: &BrokerConfig,
    partition_index: i32,
    partition_count: i32,
    coordinator_epoch: i32,
) -> TxnConfig {
    TxnConfig {
        partition_index,
        partition_count,
        transaction_max_timeout_ms: broker.transaction_max_timeout_ms,
        transactional_id_expiration_ms: broker.transactional_id_expiration_ms,
        offsets_partition_count: broker.offsets_topic_num_partitions,
        coordinator_epoch,
    }
}

/// Coordinator of the transactional ids of one `__transaction_state` partition.
pub struct TxnCoordinator {
    pub partition: Rc<Partition>,
    manager: RefCell<TxnManager>,
    writer: MarkerWriter,
    next_token: Cell<u64>,
    waiting: RefCell<HashMap<ReplyToken, flume::Sender<Answer>>>,
    closed: Cell<bool>,
}

impl TxnCoordinator {
    /// Creates the coordinator and replays the partition in the background; until that
    /// finishes, requests get COORDINATOR_LOAD_IN_PROGRESS. `None` if the settings are invalid.
    pub fn start(
        partition: Rc<Partition>,
        broker: &BrokerConfig,
        partition_count: i32,
        writer: MarkerWriter,
    ) -> Option<Rc<TxnCoordinator>> {
        let config = txn_config(
            broker,
            partition.index,
            partition_count,
            partition.leader_epoch(),
        );
        let manager = match TxnManager::new_loading(config) {
            Ok(m) => m,
            Err(e) => {
                log::error!(
                    "transaction coordinator config for partition {}: {e}",
                    partition.index
                );
                return None;
            }
        };
        let tc = Rc::new(TxnCoordinator {
            partition,
            manager: RefCell::new(manager),
            writer,
            next_token: Cell::new(1),
            waiting: RefCell::new(HashMap::new()),
            closed: Cell::new(false),
        });
        let this = tc.clone();
        let abort_every = Duration::from_millis(
            broker.transaction_abort_timed_out_transaction_cleanup_interval_ms,
        );
        let expire_every = Duration::from_millis(
            broker.transaction_remove_expired_transaction_cleanup_interval_ms,
        );
        crate::runtime::rt::spawn_detached(async move {
            this.load().await;
            // Held weakly while idle, so closing the partition is not held up.
            let weak = Rc::downgrade(&this);
            drop(this);
            let mut next_expiry = now_ms() + expire_every.as_millis() as i64;
            loop {
                crate::runtime::rt::sleep(abort_every).await;
                let Some(tc) = weak.upgrade() else { return };
                if tc.closed.get() {
                    return;
                }
                let now = now_ms();
                let mut effects = tc.manager.borrow_mut().expire_timed_out(now);
                if now >= next_expiry {
                    next_expiry = now + expire_every.as_millis() as i64;
                    effects.extend(tc.manager.borrow_mut().expire_transactional_ids(now));
                }
                tc.run(effects).await;
            }
        });
        Some(tc)
    }

    fn name(&self) -> String {
        format!("__transaction_state-{}", self.partition.index)
    }

    async fn load(self: &Rc<Self>) {
        let mut records = 0u64;
        let end = super::replay_log(&self.partition, |b, offset| {
            let mut manager = self.manager.borrow_mut();
            for r in b.records {
                if r.offset < offset {
                    continue;
                }
                if let Some(key) = &r.key {
                    if let Err(e) = manager.replay(key, r.value.as_deref()) {
                        log::warn!("skipping a bad {} record at {}: {e}", self.name(), r.offset);
                    }
                    records += 1;
                }
            }
        })
        .await;
        if records > 0 {
            log::info!("loaded {records} transaction record(s) of {}", self.name());
        }
        // What was loaded may not all be on the ISR yet: markers wait until it is.
        if end > self.partition.log_start_offset() {
            let code = self.partition.wait_committed(end - 1, COMMIT_TIMEOUT).await;
            if code != errors::NONE {
                log::warn!("{} state not committed at load: error {code}", self.name());
            }
        }
        let effects = self.manager.borrow_mut().finish_loading();
        self.run(effects).await;
    }

    fn token(&self) -> ReplyToken {
        let t = self.next_token.get();
        self.next_token.set(t + 1);
        ReplyToken(t)
    }

    /// Runs one request of the manager with a fresh reply token, carries out the effects and
    /// waits for the request's answer (NOT_COORDINATOR, as `None`, if the coordinator stopped).
    async fn request(
        self: &Rc<Self>,
        f: impl FnOnce(&mut TxnManager, ReplyToken, i64) -> Vec<TxnEffect>,
    ) -> Option<Answer> {
        let token = self.token();
        let (tx, rx) = flume::bounded(1);
        self.waiting.borrow_mut().insert(token, tx);
        let effects = {
            let mut m = self.manager.borrow_mut();
            f(&mut m, token, now_ms())
        };
        self.run(effects).await;
        rx.recv_async().await.ok()
    }

    pub async fn init_producer_id(
        self: &Rc<Self>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: Option<i64>,
    ) -> InitAnswer {
        let answer = self
            .request(|m, token, now| {
                m.init_producer_id(
                    token,
                    transactional_id,
                    timeout_ms,
                    expected,
                    fresh_producer_id,
                    now,
                )
            })
            .await;
        match answer {
            Some(Answer::NeedsProducerId) => InitAnswer::NeedsProducerId,
            Some(Answer::Reply(TxnReply::InitProducerId(r))) if r.error_code == errors::NONE => {
                InitAnswer::Done(r.producer_id, r.producer_epoch)
            }
            Some(Answer::Reply(TxnReply::InitProducerId(r))) => InitAnswer::Error(r.error_code),
            _ => InitAnswer::Error(errors::NOT_COORDINATOR),
        }
    }

    /// AddPartitionsToTxn: one code for the request (the manager answers all partitions
    /// alike).
    pub async fn add_partitions(
        self: &Rc<Self>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
    ) -> i16 {
        let mut by_topic: Vec<(String, Vec<i32>)> = Vec::new();
        for (t, p) in partitions {
            match by_topic.iter_mut().find(|(n, _)| *n == t) {
                Some((_, ps)) => ps.push(p),
                None => by_topic.push((t, vec![p])),
            }
        }
        let answer = self
            .request(|m, token, now| {
                m.add_partitions(
                    token,
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    by_topic,
                    now,
                )
            })
            .await;
        match answer {
            Some(Answer::Reply(TxnReply::AddPartitions(errs))) => errs
                .iter()
                .flat_map(|(_, ps)| ps.iter().map(|(_, c)| *c))
                .find(|c| *c != errors::NONE)
                .unwrap_or(errors::NONE),
            _ => errors::NOT_COORDINATOR,
        }
    }

    /// KIP-890 verification (AddPartitionsToTxn v4 with `verify_only`): NONE when every
    /// partition is in the producer's ongoing transaction; writes nothing.
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> i16 {
        let d = self
            .manager
            .borrow()
            .describe(&[transactional_id.to_string()]);
        let Some(d) = d.into_iter().next() else {
            return errors::NOT_COORDINATOR;
        };
        if d.error_code == errors::TRANSACTIONAL_ID_NOT_FOUND {
            return errors::INVALID_PRODUCER_ID_MAPPING;
        }
        if d.error_code != errors::NONE {
            return d.error_code;
        }
        if d.producer_id != producer_id {
            return errors::INVALID_PRODUCER_ID_MAPPING;
        }
        if d.producer_epoch != producer_epoch {
            return errors::PRODUCER_FENCED;
        }
        let all_in = partitions.iter().all(|(t, p)| {
            d.state == "Ongoing" && d.topics.iter().any(|(dt, ps)| dt == t && ps.contains(p))
        });
        if all_in {
            errors::NONE
        } else {
            errors::INVALID_TXN_STATE
        }
    }

    pub async fn add_offsets(
        self: &Rc<Self>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: String,
    ) -> i16 {
        let answer = self
            .request(|m, token, now| {
                m.add_offsets(
                    token,
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    &group,
                    now,
                )
            })
            .await;
        match answer {
            Some(Answer::Reply(TxnReply::AddOffsets(code))) => code,
            _ => errors::NOT_COORDINATOR,
        }
    }

    pub async fn end_txn(
        self: &Rc<Self>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> i16 {
        let answer = self
            .request(|m, token, now| {
                m.end_txn(
                    token,
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    commit,
                    now,
                )
            })
            .await;
        match answer {
            Some(Answer::Reply(TxnReply::EndTxn(code))) => code,
            _ => errors::NOT_COORDINATOR,
        }
    }

    pub fn describe(&self, transactional_id: &str) -> Result<txn::DescribedTxn, i16> {
        let d = self
            .manager
            .borrow()
            .describe(&[transactional_id.to_string()]);
        match d.into_iter().next() {
            Some(d) if d.error_code == errors::NONE => Ok(d),
            Some(d) => Err(d.error_code),
            None => Err(errors::NOT_COORDINATOR),
        }
    }

    /// ListTransactions on this partition; `min_duration_ms` >= 0 keeps only transactions
    /// open at least that long (ListTransactions v1).
    pub fn list(
        &self,
        states: &[String],
        producer_ids: &[i64],
        min_duration_ms: i64,
    ) -> txn::ListTxnsResult {
        let m = self.manager.borrow();
        let mut r = m.list(states, producer_ids);
        if min_duration_ms >= 0 {
            let now = now_ms();
            let ids: Vec<String> = r
                .transactions
                .iter()
                .map(|t| t.transactional_id.clone())
                .collect();
            let started: HashMap<String, i64> = m
                .describe(&ids)
                .into_iter()
                .map(|d| (d.transactional_id, d.start_timestamp_ms))
                .collect();
            r.transactions.retain(|t| {
                started
                    .get(&t.transactional_id)
                    .is_some_and(|&s| s >= 0 && now - s >= min_duration_ms)
            });
        }
        r
    }

    /// Carries out effects in order: a `Persist` is appended, waited for on the ISR and its
    /// outcome reported to the manager (whose answer joins the queue); markers go to a task
    /// of their own; replies go to their waiting request.
    async fn run(self: &Rc<Self>, effects: Vec<TxnEffect>) {
        let mut queue: VecDeque<TxnEffect> = effects.into();
        while let Some(e) = queue.pop_front() {
            match e {
                TxnEffect::Persist { write, records } => {
                    let ok = self.persist(records).await;
                    let more = self.manager.borrow_mut().on_persisted(write, ok);
                    queue.extend(more);
                }
                TxnEffect::WriteMarkers(m) => self.spawn_markers(m),
                TxnEffect::Reply(token, reply) => self.answer(token, Answer::Reply(reply)),
                TxnEffect::NeedsProducerId { token, .. } => {
                    self.answer(token, Answer::NeedsProducerId)
                }
            }
        }
    }

    fn answer(&self, token: ReplyToken, answer: Answer) {
        if let Some(tx) = self.waiting.borrow_mut().remove(&token) {
            let _ = tx.try_send(answer);
        }
    }

    /// Writes a decided transaction's markers in a task of its own, then completes it.
    fn spawn_markers(self: &Rc<Self>, m: txn::WriteMarkers) {
        let weak = Rc::downgrade(self);
        let active: Rc<dyn Fn() -> bool> = Rc::new(move || {
            weak.upgrade()
                .is_some_and(|tc| !tc.closed.get() && tc.partition.can_write())
        });
        let job = MarkerJob {
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            commit: m.commit,
            coordinator_epoch: m.coordinator_epoch,
            partitions: m.partitions.clone(),
            active,
        };
        let write = (self.writer)(job);
        let this = self.clone();
        crate::runtime::rt::spawn_detached(async move {
            if !write.await || this.closed.get() {
                // The coordinator stopped: whoever loads the partition next redoes them.
                return;
            }
            let effects = this.manager.borrow_mut().markers_written(
                &m.transactional_id,
                m.producer_id,
                m.producer_epoch,
                now_ms(),
            );
            this.run(effects).await;
        });
    }

    /// Appends one batch of records and waits for the ISR; true once committed.
    async fn persist(&self, records: Vec<shardlog_coordinator::Record>) -> bool {
        let now = now_ms();
        let recs: Vec<Record> = records
            .into_iter()
            .enumerate()
            .map(|(i, r)| Record {
                offset: i as i64,
                timestamp: now,
                key: Some(r.key),
                value: r.value,
                headers: Vec::new(),
            })
            .collect();
        let bytes = match build_batch(Compression::None, now, &recs) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                log::error!("cannot encode transaction records: {e}");
                return false;
            }
        };
        let header = match batch::validate(&bytes) {
            Ok(h) => h,
            Err(e) => {
                log::error!("transaction record batch invalid: {e}");
                return false;
            }
        };
        let outcome = self
            .partition
            .append(vec![IncomingBatch { bytes, header }])
            .await;
        if outcome.error_code != errors::NONE {
            log::warn!(
                "cannot append transaction records to {}: error {}",
                self.name(),
                outcome.error_code
            );
            return false;
        }
        let code = self
            .partition
            .wait_committed(outcome.last_offset, COMMIT_TIMEOUT)
            .await;
        if code != errors::NONE {
            log::warn!(
                "transaction records of {} not replicated: error {code}",
                self.name()
            );
        }
        code == errors::NONE
    }

    /// Stops serving (the partition is closing or led elsewhere): waiting requests get
    /// NOT_COORDINATOR and marker tasks give up.
    pub fn shutdown(&self) {
        self.closed.set(true);
        let effects = self.manager.borrow_mut().unload();
        for e in effects {
            if let TxnEffect::Reply(token, reply) = e {
                self.answer(token, Answer::Reply(reply));
            }
        }
        self.waiting.borrow_mut().clear();
    }
}
