//! [`TxnManager`]: every transactional id of one `__transaction_state` partition (Kafka's
//! `TransactionCoordinator` with its `TransactionStateManager` and `TransactionMetadata`).

use std::collections::{BTreeMap, BTreeSet};

use super::records::{decode_txn_key, txn_key, TxnLogValue, TxnState};
use super::{
    transaction_partition, DescribedTxn, InitProducerIdResult, ListTxnsResult, ListedTxn,
    TxnConfig, TxnEffect, TxnReply, WriteId, WriteMarkers, CONSUMER_OFFSETS_TOPIC,
};
use crate::api::{Record, ReplyToken, TopicPartitionErrors};
use crate::codes;
use crate::config::{ConfigError, MAX_STRING_BYTES};
use crate::partition::coordinator_partition;
use crate::records::RecordError;

/// Kafka's `RecordBatch.NO_PRODUCER_EPOCH` / `NO_PRODUCER_ID`.
const NO_EPOCH: i16 = -1;
const NO_PRODUCER_ID: i64 = -1;

/// An epoch at or past this cannot be bumped by InitProducerId: a new producer id is taken
/// (Kafka's `isEpochExhausted`: one value is kept in reserve for the fencing bump).
const EXHAUSTED_EPOCH: i16 = i16::MAX - 1;

fn exhausted(epoch: i16) -> bool {
    epoch >= EXHAUSTED_EPOCH
}

/// The durable part of a transactional id's metadata (what its log record says, plus the last
/// producer id and epoch, which Kafka keeps in memory only).
#[derive(Clone, Debug, PartialEq, Eq)]
struct TxnData {
    producer_id: i64,
    last_producer_id: i64,
    producer_epoch: i16,
    last_producer_epoch: i16,
    timeout_ms: i32,
    state: TxnState,
    partitions: BTreeSet<(String, i32)>,
    txn_start_ms: i64,
    last_update_ms: i64,
}

impl TxnData {
    fn to_value(&self) -> TxnLogValue {
        let mut by_topic: Vec<(String, Vec<i32>)> = Vec::new();
        for (topic, p) in &self.partitions {
            match by_topic.last_mut() {
                Some((t, ps)) if t == topic => ps.push(*p),
                _ => by_topic.push((topic.clone(), vec![*p])),
            }
        }
        TxnLogValue {
            producer_id: self.producer_id,
            previous_producer_id: NO_PRODUCER_ID,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: self.producer_epoch,
            transaction_timeout_ms: self.timeout_ms,
            state: self.state,
            partitions: by_topic,
            last_update_timestamp_ms: self.last_update_ms,
            start_timestamp_ms: self.txn_start_ms,
            client_transaction_version: 0,
        }
    }

    fn from_value(v: TxnLogValue) -> Self {
        // PrepareEpochFence is never written by Kafka; if found, finish what it started.
        let state = match v.state {
            TxnState::PrepareEpochFence => TxnState::PrepareAbort,
            s => s,
        };
        let partitions = if matches!(state, TxnState::Empty) {
            BTreeSet::new()
        } else {
            v.partitions
                .into_iter()
                .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                .collect()
        };
        TxnData {
            producer_id: v.producer_id,
            last_producer_id: v.previous_producer_id,
            producer_epoch: v.producer_epoch,
            last_producer_epoch: NO_EPOCH,
            timeout_ms: v.transaction_timeout_ms,
            state,
            partitions,
            txn_start_ms: v.start_timestamp_ms,
            last_update_ms: v.last_update_timestamp_ms,
        }
    }

    fn markers(&self, transactional_id: &str, coordinator_epoch: i32) -> Option<WriteMarkers> {
        let commit = match self.state {
            TxnState::PrepareCommit => true,
            TxnState::PrepareAbort => false,
            _ => return None,
        };
        Some(WriteMarkers {
            transactional_id: transactional_id.to_string(),
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            commit,
            coordinator_epoch,
            partitions: self.partitions.iter().cloned().collect(),
        })
    }
}

/// What to answer once a pending transition is durable (or failed).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reply {
    Init,
    /// InitProducerId that found an open transaction: it is aborted and the client retries.
    Fence,
    AddPartitions(Vec<(String, Vec<i32>)>),
    AddOffsets,
    EndTxn,
}

/// Kafka's `pendingState`: a transition whose record is written but not yet durable.
#[derive(Clone, Debug)]
struct Pending {
    write: WriteId,
    /// `None`: the id is being removed (tombstone).
    target: Option<TxnData>,
    reply: Option<(ReplyToken, Reply)>,
}

#[derive(Clone, Debug)]
struct TxnMeta {
    data: TxnData,
    /// False until the first record of this id is durable (a new id waiting for its write).
    persisted: bool,
    pending: Option<Pending>,
}

/// The transaction coordinator of one `__transaction_state` partition.
///
/// Lives on the shard leading the partition. Request methods take a caller-chosen
/// [`ReplyToken`] and return [`TxnEffect`]s; see [`TxnEffect`] for the contract.
pub struct TxnManager {
    config: TxnConfig,
    txns: BTreeMap<String, TxnMeta>,
    /// Appends in flight, with the ids whose pending transitions they carry.
    writes: BTreeMap<WriteId, Vec<String>>,
    next_write: u64,
    /// Some while replaying: the latest value per id.
    loading: Option<BTreeMap<String, TxnLogValue>>,
    active: bool,
}

impl TxnManager {
    /// An active manager with no transactional ids (a new, empty partition).
    pub fn new(config: TxnConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(TxnManager {
            config,
            txns: BTreeMap::new(),
            writes: BTreeMap::new(),
            next_write: 0,
            loading: None,
            active: true,
        })
    }

    /// A manager replaying its partition: requests get COORDINATOR_LOAD_IN_PROGRESS until
    /// [`TxnManager::finish_loading`].
    pub fn new_loading(config: TxnConfig) -> Result<Self, ConfigError> {
        let mut m = TxnManager::new(config)?;
        m.loading = Some(BTreeMap::new());
        Ok(m)
    }

    /// The configuration in force.
    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// True while replaying.
    pub fn is_loading(&self) -> bool {
        self.loading.is_some()
    }

    /// Number of transactional ids held (including new ids whose first write is in flight).
    pub fn txn_count(&self) -> usize {
        self.txns.len()
    }

    /// A transactional id's durable state, `None` if unknown or not yet persisted.
    pub fn state(&self, transactional_id: &str) -> Option<TxnState> {
        self.txns
            .get(transactional_id)
            .filter(|m| m.persisted)
            .map(|m| m.data.state)
    }

    /// A transactional id's producer id and epoch, `None` if unknown or not yet persisted.
    pub fn producer(&self, transactional_id: &str) -> Option<(i64, i16)> {
        self.txns
            .get(transactional_id)
            .filter(|m| m.persisted)
            .map(|m| (m.data.producer_id, m.data.producer_epoch))
    }

    /// Whether a state change of this id is being written.
    pub fn has_pending_transition(&self, transactional_id: &str) -> bool {
        self.txns
            .get(transactional_id)
            .is_some_and(|m| m.pending.is_some())
    }

    /// Applies one record of the partition, in log order; `value` `None` is a tombstone.
    /// Returns false for a key version this coordinator does not own (skipped). Does nothing
    /// once loading has finished.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<bool, RecordError> {
        let Some(state) = self.loading.as_mut() else {
            return Ok(false);
        };
        let Some(id) = decode_txn_key(key)? else {
            return Ok(false);
        };
        match value {
            Some(v) => {
                let v = TxnLogValue::decode(v)?;
                if v.state == TxnState::Dead {
                    state.remove(&id);
                } else {
                    state.insert(id, v);
                }
            }
            None => {
                state.remove(&id);
            }
        }
        Ok(true)
    }

    /// Ends loading and returns the markers to (re)write for transactions that were decided
    /// but not completed ([`TxnManager::pending_markers`]). Does nothing if not loading.
    pub fn finish_loading(&mut self) -> Vec<TxnEffect> {
        let Some(values) = self.loading.take() else {
            return Vec::new();
        };
        for (id, v) in values {
            self.txns.insert(
                id,
                TxnMeta {
                    data: TxnData::from_value(v),
                    persisted: true,
                    pending: None,
                },
            );
        }
        self.pending_markers()
    }

    /// Builds a manager from the whole partition at once; also returns the markers to redo.
    pub fn load<'a>(
        config: TxnConfig,
        records: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Result<(Self, Vec<TxnEffect>), crate::LoadError> {
        let mut m = TxnManager::new_loading(config)?;
        for (index, (key, value)) in (0u64..).zip(records) {
            m.replay(key, value)
                .map_err(|source| crate::LoadError::Record { index, source })?;
        }
        let effects = m.finish_loading();
        Ok((m, effects))
    }

    /// The markers of every transaction in PrepareCommit / PrepareAbort (after a load, or to
    /// retry markers the glue could not deliver).
    pub fn pending_markers(&self) -> Vec<TxnEffect> {
        self.txns
            .iter()
            .filter(|(_, m)| m.persisted)
            .filter_map(|(id, m)| m.data.markers(id, self.config.coordinator_epoch))
            .map(TxnEffect::WriteMarkers)
            .collect()
    }

    /// The partition moved away: every request waiting on a write is answered NOT_COORDINATOR,
    /// all state is dropped, later requests get NOT_COORDINATOR and later
    /// [`on_persisted`](TxnManager::on_persisted) calls are ignored.
    pub fn unload(&mut self) -> Vec<TxnEffect> {
        let mut out = Vec::new();
        for m in self.txns.values_mut() {
            if let Some((token, reply)) = m.pending.take().and_then(|p| p.reply) {
                out.push(reply_with(token, &reply, codes::NOT_COORDINATOR));
            }
        }
        self.txns.clear();
        self.writes.clear();
        self.loading = None;
        self.active = false;
        out
    }

    /// Kafka's checks before looking a transactional id up: shape, then ownership and load.
    fn status_error(&self, transactional_id: &str) -> Option<i16> {
        if transactional_id.is_empty() || transactional_id.len() > MAX_STRING_BYTES {
            return Some(codes::INVALID_REQUEST);
        }
        self.coordinator_error(transactional_id)
    }

    fn coordinator_error(&self, transactional_id: &str) -> Option<i16> {
        if !self.active {
            return Some(codes::NOT_COORDINATOR);
        }
        if self.loading.is_some() {
            return Some(codes::COORDINATOR_LOAD_IN_PROGRESS);
        }
        if transaction_partition(transactional_id, self.config.partition_count)
            != self.config.partition_index
        {
            return Some(codes::NOT_COORDINATOR);
        }
        None
    }

    /// InitProducerId with a transactional id (KIP-98, KIP-360).
    ///
    /// - A new id needs a producer id: [`TxnEffect::NeedsProducerId`] when `fresh_producer_id`
    ///   is `None`; with one, the id is created with epoch 0 in the Empty state.
    /// - Empty / CompleteCommit / CompleteAbort: the epoch is bumped (a new producer id with
    ///   epoch 0 once the epoch is exhausted, again through `NeedsProducerId`).
    /// - Ongoing: the open transaction is aborted under a bumped epoch (fencing the old
    ///   producer) and the client gets CONCURRENT_TRANSACTIONS, so it retries.
    /// - PrepareCommit / PrepareAbort, or any write in flight: CONCURRENT_TRANSACTIONS.
    /// - `expected` (KIP-360, the producer's current id and epoch): PRODUCER_FENCED unless it is
    ///   the current pair, or the previous pair whose bump was already done (then the current
    ///   epoch is returned without a second bump).
    ///
    /// A `fresh_producer_id` the manager turns out not to need is dropped.
    pub fn init_producer_id(
        &mut self,
        token: ReplyToken,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: Option<i64>,
        now_ms: i64,
    ) -> Vec<TxnEffect> {
        let fail = |code| vec![init_error(token, code)];
        if transactional_id.is_empty() || transactional_id.len() > MAX_STRING_BYTES {
            return fail(codes::INVALID_REQUEST);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.transaction_max_timeout_ms {
            return fail(codes::INVALID_TRANSACTION_TIMEOUT);
        }
        if let Some(code) = self.coordinator_error(transactional_id) {
            return fail(code);
        }
        let needs_id = || {
            vec![TxnEffect::NeedsProducerId {
                token,
                transactional_id: transactional_id.to_string(),
            }]
        };
        let Some(meta) = self.txns.get(transactional_id) else {
            let Some(producer_id) = fresh_producer_id else {
                return needs_id();
            };
            let target = TxnData {
                producer_id,
                last_producer_id: NO_PRODUCER_ID,
                producer_epoch: 0,
                last_producer_epoch: NO_EPOCH,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                txn_start_ms: -1,
                last_update_ms: now_ms,
            };
            let placeholder = TxnData {
                producer_epoch: NO_EPOCH,
                ..target.clone()
            };
            self.txns.insert(
                transactional_id.to_string(),
                TxnMeta {
                    data: placeholder,
                    persisted: false,
                    pending: None,
                },
            );
            return self.begin(transactional_id, Some(target), Some((token, Reply::Init)));
        };
        if meta.pending.is_some() {
            return fail(codes::CONCURRENT_TRANSACTIONS);
        }
        let cur = &meta.data;
        if let Some((pid, epoch)) = expected {
            let valid = cur.producer_epoch == NO_EPOCH
                || pid == cur.producer_id
                || (pid == cur.last_producer_id && exhausted(epoch));
            if !valid {
                return fail(codes::PRODUCER_FENCED);
            }
        }
        let target = match cur.state {
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let fresh = TxnData {
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    txn_start_ms: -1,
                    last_update_ms: now_ms,
                    ..cur.clone()
                };
                let at_current = expected.is_none_or(|(_, e)| e == cur.producer_epoch);
                if exhausted(cur.producer_epoch) && at_current {
                    let Some(producer_id) = fresh_producer_id else {
                        return needs_id();
                    };
                    TxnData {
                        producer_id,
                        last_producer_id: cur.producer_id,
                        producer_epoch: 0,
                        last_producer_epoch: if expected.is_some() {
                            cur.producer_epoch
                        } else {
                            NO_EPOCH
                        },
                        ..fresh
                    }
                } else {
                    let bumped = cur.producer_epoch.saturating_add(1);
                    match expected {
                        None => TxnData {
                            producer_epoch: bumped,
                            last_producer_epoch: NO_EPOCH,
                            ..fresh
                        },
                        Some((_, e))
                            if cur.producer_epoch == NO_EPOCH || e == cur.producer_epoch =>
                        {
                            TxnData {
                                producer_epoch: bumped,
                                last_producer_epoch: cur.producer_epoch,
                                ..fresh
                            }
                        }
                        // A retry of a bump whose response was lost: no second bump.
                        Some((_, e)) if e == cur.last_producer_epoch => fresh,
                        Some(_) => return fail(codes::PRODUCER_FENCED),
                    }
                }
            }
            TxnState::Ongoing => {
                let target = TxnData {
                    producer_epoch: cur.producer_epoch.saturating_add(1),
                    last_producer_epoch: NO_EPOCH,
                    state: TxnState::PrepareAbort,
                    last_update_ms: now_ms,
                    ..cur.clone()
                };
                return self.begin(transactional_id, Some(target), Some((token, Reply::Fence)));
            }
            TxnState::PrepareCommit
            | TxnState::PrepareAbort
            | TxnState::Dead
            | TxnState::PrepareEpochFence => return fail(codes::CONCURRENT_TRANSACTIONS),
        };
        self.begin(transactional_id, Some(target), Some((token, Reply::Init)))
    }

    /// AddPartitionsToTxn. Old clients expect INVALID_PRODUCER_EPOCH where this answers
    /// PRODUCER_FENCED: the caller downgrades by request version.
    pub fn add_partitions(
        &mut self,
        token: ReplyToken,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, Vec<i32>)>,
        now_ms: i64,
    ) -> Vec<TxnEffect> {
        let bad_topic = partitions
            .iter()
            .any(|(t, _)| t.is_empty() || t.len() > MAX_STRING_BYTES);
        let code = self
            .status_error(transactional_id)
            .or_else(|| bad_topic.then_some(codes::INVALID_REQUEST));
        let reply = Reply::AddPartitions(partitions.clone());
        if let Some(code) = code {
            return vec![reply_with(token, &reply, code)];
        }
        self.add(
            token,
            transactional_id,
            (producer_id, producer_epoch),
            partitions,
            reply,
            now_ms,
        )
    }

    /// AddOffsetsToTxn: adds the group's `__consumer_offsets` partition to the transaction,
    /// with the rules of [`TxnManager::add_partitions`].
    pub fn add_offsets(
        &mut self,
        token: ReplyToken,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
        now_ms: i64,
    ) -> Vec<TxnEffect> {
        let code = self
            .status_error(transactional_id)
            .or_else(|| (group_id.len() > MAX_STRING_BYTES).then_some(codes::INVALID_REQUEST));
        if let Some(code) = code {
            return vec![reply_with(token, &Reply::AddOffsets, code)];
        }
        let partition = coordinator_partition(group_id, self.config.offsets_partition_count);
        self.add(
            token,
            transactional_id,
            (producer_id, producer_epoch),
            vec![(CONSUMER_OFFSETS_TOPIC.to_string(), vec![partition])],
            Reply::AddOffsets,
            now_ms,
        )
    }

    /// Kafka's `handleAddPartitionsToTransaction`, shared by both APIs.
    fn add(
        &mut self,
        token: ReplyToken,
        transactional_id: &str,
        (producer_id, producer_epoch): (i64, i16),
        requested: Vec<(String, Vec<i32>)>,
        reply: Reply,
        now_ms: i64,
    ) -> Vec<TxnEffect> {
        let answer = |code| vec![reply_with(token, &reply, code)];
        let Some(meta) = self.txns.get(transactional_id).filter(|m| m.persisted) else {
            return answer(codes::INVALID_PRODUCER_ID_MAPPING);
        };
        let cur = &meta.data;
        if cur.producer_id != producer_id {
            return answer(codes::INVALID_PRODUCER_ID_MAPPING);
        }
        if cur.producer_epoch != producer_epoch {
            return answer(codes::PRODUCER_FENCED);
        }
        if meta.pending.is_some() {
            return answer(codes::CONCURRENT_TRANSACTIONS);
        }
        let start = match cur.state {
            TxnState::Ongoing => cur.txn_start_ms,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => now_ms,
            TxnState::PrepareCommit
            | TxnState::PrepareAbort
            | TxnState::Dead
            | TxnState::PrepareEpochFence => return answer(codes::CONCURRENT_TRANSACTIONS),
        };
        let wanted: Vec<(String, i32)> = requested
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
            .collect();
        // Nothing new to add to an open transaction (or nothing at all): no write.
        if wanted.iter().all(|tp| cur.partitions.contains(tp))
            && (cur.state == TxnState::Ongoing || wanted.is_empty())
        {
            return answer(codes::NONE);
        }
        let mut partitions = cur.partitions.clone();
        partitions.extend(wanted);
        let target = TxnData {
            state: TxnState::Ongoing,
            partitions,
            txn_start_ms: start,
            last_update_ms: now_ms,
            ..cur.clone()
        };
        self.begin(transactional_id, Some(target), Some((token, reply)))
    }

    /// EndTxn. From Ongoing, PrepareCommit / PrepareAbort is written; once durable the reply is
    /// NONE and [`TxnEffect::WriteMarkers`] asks for the markers. A retry after the decision:
    /// the same outcome already complete answers NONE, still being completed
    /// CONCURRENT_TRANSACTIONS (the client retries), the other outcome INVALID_TXN_STATE. There
    /// is no transaction to end in Empty: INVALID_TXN_STATE (the Java producer ends a
    /// transaction without partitions locally and never sends it).
    pub fn end_txn(
        &mut self,
        token: ReplyToken,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Vec<TxnEffect> {
        let answer = |code| vec![TxnEffect::Reply(token, TxnReply::EndTxn(code))];
        if let Some(code) = self.status_error(transactional_id) {
            return answer(code);
        }
        let Some(meta) = self.txns.get(transactional_id).filter(|m| m.persisted) else {
            return answer(codes::INVALID_PRODUCER_ID_MAPPING);
        };
        let cur = &meta.data;
        if cur.producer_id != producer_id {
            return answer(codes::INVALID_PRODUCER_ID_MAPPING);
        }
        if cur.producer_epoch != producer_epoch {
            return answer(codes::PRODUCER_FENCED);
        }
        if meta.pending.is_some() {
            return answer(codes::CONCURRENT_TRANSACTIONS);
        }
        let code = match (cur.state, commit) {
            (TxnState::Ongoing, _) => {
                let target = TxnData {
                    state: if commit {
                        TxnState::PrepareCommit
                    } else {
                        TxnState::PrepareAbort
                    },
                    last_update_ms: now_ms,
                    ..cur.clone()
                };
                return self.begin(transactional_id, Some(target), Some((token, Reply::EndTxn)));
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => codes::NONE,
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                codes::CONCURRENT_TRANSACTIONS
            }
            _ => codes::INVALID_TXN_STATE,
        };
        answer(code)
    }

    /// The glue wrote the markers of a [`TxnEffect::WriteMarkers`]: the transaction becomes
    /// CompleteCommit / CompleteAbort with no partitions. Ignored unless the id is in
    /// PrepareCommit / PrepareAbort with this producer id and epoch and no write in flight
    /// (a stale or repeated report). If the completion write fails, the transaction stays
    /// decided: call again (its markers are in [`TxnManager::pending_markers`]).
    pub fn markers_written(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        now_ms: i64,
    ) -> Vec<TxnEffect> {
        if !self.active || self.loading.is_some() {
            return Vec::new();
        }
        let Some(meta) = self.txns.get(transactional_id).filter(|m| m.persisted) else {
            return Vec::new();
        };
        let cur = &meta.data;
        let done = match cur.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return Vec::new(),
        };
        if meta.pending.is_some()
            || cur.producer_id != producer_id
            || cur.producer_epoch != producer_epoch
        {
            return Vec::new();
        }
        let target = TxnData {
            state: done,
            partitions: BTreeSet::new(),
            last_update_ms: now_ms,
            ..cur.clone()
        };
        self.begin(transactional_id, Some(target), None)
    }

    /// The append of `write` finished. On success the pending transitions it carried take
    /// effect, with their replies and markers; on failure they are dropped (the state stays
    /// as it was, a new id that was never written is forgotten) and waiting requests get
    /// NOT_COORDINATOR. Unknown or repeated writes are ignored.
    pub fn on_persisted(&mut self, write: WriteId, ok: bool) -> Vec<TxnEffect> {
        let mut out = Vec::new();
        let Some(ids) = self.writes.remove(&write) else {
            return out;
        };
        for id in ids {
            let Some(meta) = self.txns.get_mut(&id) else {
                continue;
            };
            if meta.pending.as_ref().is_none_or(|p| p.write != write) {
                continue;
            }
            let Some(pending) = meta.pending.take() else {
                continue;
            };
            if !ok {
                if !meta.persisted {
                    self.txns.remove(&id);
                }
                if let Some((token, reply)) = pending.reply {
                    out.push(reply_with(token, &reply, codes::NOT_COORDINATOR));
                }
                continue;
            }
            let Some(target) = pending.target else {
                self.txns.remove(&id);
                continue;
            };
            meta.data = target;
            meta.persisted = true;
            let data = &meta.data;
            if let Some((token, reply)) = pending.reply {
                let r = match reply {
                    Reply::Init => TxnReply::InitProducerId(InitProducerIdResult {
                        error_code: codes::NONE,
                        producer_id: data.producer_id,
                        producer_epoch: data.producer_epoch,
                    }),
                    Reply::Fence => TxnReply::InitProducerId(InitProducerIdResult::error(
                        codes::CONCURRENT_TRANSACTIONS,
                    )),
                    Reply::AddPartitions(p) => {
                        TxnReply::AddPartitions(all_partitions(&p, codes::NONE))
                    }
                    Reply::AddOffsets => TxnReply::AddOffsets(codes::NONE),
                    Reply::EndTxn => TxnReply::EndTxn(codes::NONE),
                };
                out.push(TxnEffect::Reply(token, r));
            }
            if let Some(m) = data.markers(&id, self.config.coordinator_epoch) {
                out.push(TxnEffect::WriteMarkers(m));
            }
        }
        out
    }

    /// Aborts every Ongoing transaction older than its timeout (start + timeout < now) and not
    /// being written: the epoch is bumped, fencing the producer, and PrepareAbort is written
    /// (one batch); markers follow once it is durable. Kafka runs this every
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub fn expire_timed_out(&mut self, now_ms: i64) -> Vec<TxnEffect> {
        if !self.active || self.loading.is_some() {
            return Vec::new();
        }
        let targets: Vec<(String, TxnData)> = self
            .txns
            .iter()
            .filter(|(_, m)| m.persisted && m.pending.is_none())
            .filter(|(_, m)| {
                m.data.state == TxnState::Ongoing
                    && m.data
                        .txn_start_ms
                        .saturating_add(i64::from(m.data.timeout_ms))
                        < now_ms
            })
            .map(|(id, m)| {
                let target = TxnData {
                    producer_epoch: m.data.producer_epoch.saturating_add(1),
                    last_producer_epoch: NO_EPOCH,
                    state: TxnState::PrepareAbort,
                    last_update_ms: now_ms,
                    ..m.data.clone()
                };
                (id.clone(), target)
            })
            .collect();
        self.begin_batch(targets.into_iter().map(|(id, t)| (id, Some(t))))
    }

    /// Removes transactional ids idle (Empty / CompleteCommit / CompleteAbort, nothing in
    /// flight) since `transactional.id.expiration.ms`: a tombstone each, in one batch; they are
    /// dropped once it is durable.
    pub fn expire_transactional_ids(&mut self, now_ms: i64) -> Vec<TxnEffect> {
        if !self.active || self.loading.is_some() {
            return Vec::new();
        }
        let cutoff = now_ms.saturating_sub(self.config.transactional_id_expiration_ms);
        let ids: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, m)| m.persisted && m.pending.is_none())
            .filter(|(_, m)| {
                matches!(
                    m.data.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && m.data.last_update_ms <= cutoff
            })
            .map(|(id, _)| id.clone())
            .collect();
        self.begin_batch(ids.into_iter().map(|id| (id, None)))
    }

    /// Several transitions without replies, in one write.
    fn begin_batch(
        &mut self,
        targets: impl Iterator<Item = (String, Option<TxnData>)>,
    ) -> Vec<TxnEffect> {
        let write = self.alloc_write();
        let mut records = Vec::new();
        let mut ids = Vec::new();
        for (id, target) in targets {
            self.stage(&id, write, target, None, &mut records);
            ids.push(id);
        }
        if ids.is_empty() {
            return Vec::new();
        }
        self.writes.insert(write, ids);
        vec![TxnEffect::Persist { write, records }]
    }

    /// DescribeTransactions, in request order.
    pub fn describe(&self, transactional_ids: &[String]) -> Vec<DescribedTxn> {
        transactional_ids
            .iter()
            .map(|id| {
                let error = |code| DescribedTxn {
                    transactional_id: id.clone(),
                    error_code: code,
                    state: "",
                    timeout_ms: 0,
                    start_timestamp_ms: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    topics: Vec::new(),
                };
                if let Some(code) = self.status_error(id) {
                    return error(code);
                }
                let Some(m) = self.txns.get(id).filter(|m| m.persisted) else {
                    return error(codes::TRANSACTIONAL_ID_NOT_FOUND);
                };
                let d = &m.data;
                DescribedTxn {
                    transactional_id: id.clone(),
                    error_code: codes::NONE,
                    state: d.state.as_str(),
                    timeout_ms: d.timeout_ms,
                    start_timestamp_ms: d.txn_start_ms,
                    producer_id: d.producer_id,
                    producer_epoch: d.producer_epoch,
                    topics: d.to_value().partitions,
                }
            })
            .collect()
    }

    /// ListTransactions for this partition: ids whose state name is in `state_filters` and
    /// whose producer id is in `producer_id_filters` (an empty filter matches everything).
    pub fn list(&self, state_filters: &[String], producer_id_filters: &[i64]) -> ListTxnsResult {
        let error_code = if !self.active {
            codes::NOT_COORDINATOR
        } else if self.loading.is_some() {
            codes::COORDINATOR_LOAD_IN_PROGRESS
        } else {
            codes::NONE
        };
        let unknown_state_filters: Vec<String> = state_filters
            .iter()
            .filter(|s| TxnState::from_name(s).is_none())
            .cloned()
            .collect();
        if error_code != codes::NONE {
            return ListTxnsResult {
                error_code,
                unknown_state_filters,
                transactions: Vec::new(),
            };
        }
        let transactions = self
            .txns
            .iter()
            .filter(|(_, m)| m.persisted && m.data.state != TxnState::Dead)
            .filter(|(_, m)| {
                state_filters.is_empty() || state_filters.iter().any(|s| s == m.data.state.as_str())
            })
            .filter(|(_, m)| {
                producer_id_filters.is_empty() || producer_id_filters.contains(&m.data.producer_id)
            })
            .map(|(id, m)| ListedTxn {
                transactional_id: id.clone(),
                producer_id: m.data.producer_id,
                state: m.data.state.as_str(),
            })
            .collect();
        ListTxnsResult {
            error_code,
            unknown_state_filters,
            transactions,
        }
    }

    /// Starts a pending transition of one id in its own write.
    fn begin(
        &mut self,
        transactional_id: &str,
        target: Option<TxnData>,
        reply: Option<(ReplyToken, Reply)>,
    ) -> Vec<TxnEffect> {
        let write = self.alloc_write();
        let mut records = Vec::with_capacity(1);
        self.stage(transactional_id, write, target, reply, &mut records);
        self.writes
            .insert(write, vec![transactional_id.to_string()]);
        vec![TxnEffect::Persist { write, records }]
    }

    fn alloc_write(&mut self) -> WriteId {
        let w = WriteId(self.next_write);
        self.next_write += 1;
        w
    }

    /// Records the pending transition and its record (the caller registers the write).
    fn stage(
        &mut self,
        transactional_id: &str,
        write: WriteId,
        target: Option<TxnData>,
        reply: Option<(ReplyToken, Reply)>,
        records: &mut Vec<Record>,
    ) {
        records.push(Record {
            key: txn_key(transactional_id),
            value: target.as_ref().map(|t| t.to_value().encode()),
        });
        if let Some(m) = self.txns.get_mut(transactional_id) {
            m.pending = Some(Pending {
                write,
                target,
                reply,
            });
        }
    }
}

fn init_error(token: ReplyToken, code: i16) -> TxnEffect {
    TxnEffect::Reply(
        token,
        TxnReply::InitProducerId(InitProducerIdResult::error(code)),
    )
}

fn all_partitions(partitions: &[(String, Vec<i32>)], code: i16) -> TopicPartitionErrors {
    partitions
        .iter()
        .map(|(t, ps)| (t.clone(), ps.iter().map(|&p| (p, code)).collect()))
        .collect()
}

/// The reply to a request of this shape with this code (for an InitProducerId, only errors).
fn reply_with(token: ReplyToken, reply: &Reply, code: i16) -> TxnEffect {
    let r = match reply {
        Reply::Init | Reply::Fence => TxnReply::InitProducerId(InitProducerIdResult::error(code)),
        Reply::AddPartitions(p) => TxnReply::AddPartitions(all_partitions(p, code)),
        Reply::AddOffsets => TxnReply::AddOffsets(code),
        Reply::EndTxn => TxnReply::EndTxn(code),
    };
    TxnEffect::Reply(token, r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const T: ReplyToken = ReplyToken(7);

    fn cfg() -> TxnConfig {
        TxnConfig {
            partition_count: 1,
            coordinator_epoch: 3,
            ..TxnConfig::default()
        }
    }

    /// Records the manager asked to persist and that were acknowledged, in log order.
    #[derive(Default)]
    struct Log(Vec<(Bytes, Option<Bytes>)>);

    fn write_of(effects: &[TxnEffect]) -> WriteId {
        let ws: Vec<WriteId> = effects
            .iter()
            .filter_map(|e| match e {
                TxnEffect::Persist { write, .. } => Some(*write),
                _ => None,
            })
            .collect();
        assert_eq!(ws.len(), 1, "one batch per call: {effects:?}");
        ws[0]
    }

    fn no_reply(effects: &[TxnEffect]) {
        assert!(
            !effects.iter().any(|e| matches!(e, TxnEffect::Reply(..))),
            "reply before the write is durable: {effects:?}"
        );
    }

    /// Acknowledges the single write of `effects` and returns what that produced.
    fn ack(m: &mut TxnManager, log: &mut Log, effects: Vec<TxnEffect>) -> Vec<TxnEffect> {
        no_reply(&effects);
        let w = write_of(&effects);
        for e in effects {
            if let TxnEffect::Persist { records, .. } = e {
                log.0.extend(records.into_iter().map(|r| (r.key, r.value)));
            }
        }
        m.on_persisted(w, true)
    }

    fn replies(effects: &[TxnEffect]) -> Vec<TxnReply> {
        effects
            .iter()
            .filter_map(|e| match e {
                TxnEffect::Reply(t, r) if *t == T => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn markers(effects: &[TxnEffect]) -> Vec<WriteMarkers> {
        effects
            .iter()
            .filter_map(|e| match e {
                TxnEffect::WriteMarkers(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    fn init_reply(effects: &[TxnEffect]) -> InitProducerIdResult {
        match replies(effects).as_slice() {
            [TxnReply::InitProducerId(r)] => *r,
            other => panic!("expected one InitProducerId reply, got {other:?}"),
        }
    }

    fn end_reply(effects: &[TxnEffect]) -> i16 {
        match replies(effects).as_slice() {
            [TxnReply::EndTxn(c)] => *c,
            other => panic!("expected one EndTxn reply, got {other:?}"),
        }
    }

    fn add_reply(effects: &[TxnEffect]) -> i16 {
        match replies(effects).as_slice() {
            [TxnReply::AddPartitions(p)] => {
                let codes: BTreeSet<i16> = p
                    .iter()
                    .flat_map(|(_, ps)| ps.iter().map(|&(_, c)| c))
                    .collect();
                assert_eq!(codes.len(), 1, "one code for every partition: {p:?}");
                codes.into_iter().next().unwrap_or(-1)
            }
            other => panic!("expected one AddPartitions reply, got {other:?}"),
        }
    }

    /// InitProducerId for a new id, through NeedsProducerId.
    fn init_new(m: &mut TxnManager, log: &mut Log, id: &str, pid: i64, now: i64) {
        let e = m.init_producer_id(T, id, 60_000, None, None, now);
        assert_eq!(
            e,
            vec![TxnEffect::NeedsProducerId {
                token: T,
                transactional_id: id.into()
            }]
        );
        let e = m.init_producer_id(T, id, 60_000, None, Some(pid), now);
        let done = ack(m, log, e);
        assert_eq!(
            init_reply(&done),
            InitProducerIdResult {
                error_code: codes::NONE,
                producer_id: pid,
                producer_epoch: 0
            }
        );
    }

    fn parts(list: &[(&str, i32)]) -> Vec<(String, Vec<i32>)> {
        list.iter()
            .map(|(t, p)| (t.to_string(), vec![*p]))
            .collect()
    }

    fn add(
        m: &mut TxnManager,
        id: &str,
        pid: i64,
        epoch: i16,
        p: &[(&str, i32)],
        now: i64,
    ) -> Vec<TxnEffect> {
        m.add_partitions(T, id, pid, epoch, parts(p), now)
    }

    fn ongoing(m: &mut TxnManager, log: &mut Log, id: &str, pid: i64, epoch: i16, now: i64) {
        let e = add(m, id, pid, epoch, &[("t", 0), ("t", 1), ("u", 0)], now);
        assert_eq!(add_reply(&ack(m, log, e)), codes::NONE);
        assert_eq!(m.state(id), Some(TxnState::Ongoing));
    }

    #[test]
    fn commit_happy_path() {
        let mut m = TxnManager::new(cfg()).unwrap();
        let mut log = Log::default();
        init_new(&mut m, &mut log, "tx", 1000, 10);
        assert_eq!(m.state("tx"), Some(TxnState::Empty));
        ongoing(&mut m, &mut log, "tx", 1000, 0, 20);
        // Partitions already present: NONE at once, no write.
        let e = add(&mut m, "tx", 1000, 0, &[("t", 1)], 25);
        assert_eq!(e.len(), 1);
        assert_eq!(add_reply(&e), codes::NONE);

        let e = m.end_txn(T, "tx", 1000, 0, true, 30);
        assert!(m.has_pending_transition("tx"));
        assert_eq!(m.state("tx"), Some(TxnState::Ongoing));
        let done = ack(&mut m, &mut log, e);
        assert_eq!(end_reply(&done), codes::NONE);
        assert_eq!(
            markers(&done),
            vec![WriteMarkers {
                transactional_id: "tx".into(),
                producer_id: 1000,
                producer_epoch: 0,
                commit: true,
                coordinator_epoch: 3,
                partitions: vec![("t".into(), 0), ("t".into(), 1), ("u".into(), 0)],
            }]
        );
        assert_eq!(m.state("tx"), Some(TxnState::PrepareCommit));
        // Retries while markers are written.
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1000, 0, true, 31)),
            codes::CONCURRENT_TRANSACTIONS
        );
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1000, 0, false, 31)),
            codes::INVALID_TXN_STATE
        );
        assert_eq!(
            add_reply(&add(&mut m, "tx", 1000, 0, &[("v", 0)], 31)),
            codes::CONCURRENT_TRANSACTIONS
        );
        // Stale marker reports are ignored.
        assert!(m.markers_written("tx", 1000, 1, 32).is_empty());
        assert!(m.markers_written("tx", 999, 0, 32).is_empty());
        let e = m.markers_written("tx", 1000, 0, 40);
        let done = ack(&mut m, &mut log, e);
        assert!(done.is_empty());
        assert_eq!(m.state("tx"), Some(TxnState::CompleteCommit));
        assert!(m.describe(&["tx".into()])[0].topics.is_empty());
        assert!(m.markers_written("tx", 1000, 0, 41).is_empty());
        // Retried EndTxn after completion.
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1000, 0, true, 50)),
            codes::NONE
        );
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1000, 0, false, 50)),
            codes::INVALID_TXN_STATE
        );
        // The next transaction starts afresh.
        let e = add(&mut m, "tx", 1000, 0, &[("w", 2)], 60);
        assert_eq!(add_reply(&ack(&mut m, &mut log, e)), codes::NONE);
        let d = &m.describe(&["tx".into()])[0];
        assert_eq!(d.topics, vec![("w".to_string(), vec![2])]);
        assert_eq!(d.start_timestamp_ms, 60);
    }

    #[test]
    fn abort_and_add_offsets() {
        let mut m = TxnManager::new(cfg()).unwrap();
        let mut log = Log::default();
        init_new(&mut m, &mut log, "tx", 1000, 10);
        let e = m.add_offsets(T, "tx", 1000, 0, "my-group", 20);
        let done = ack(&mut m, &mut log, e);
        assert_eq!(replies(&done), vec![TxnReply::AddOffsets(codes::NONE)]);
        let d = &m.describe(&["tx".into()])[0];
        // coordinator_partition("my-group", 50) == 12.
        assert_eq!(
            d.topics,
            vec![(CONSUMER_OFFSETS_TOPIC.to_string(), vec![12])]
        );
        assert_eq!(d.state, "Ongoing");
        let e = m.end_txn(T, "tx", 1000, 0, false, 30);
        let done = ack(&mut m, &mut log, e);
        assert_eq!(end_reply(&done), codes::NONE);
        let mk = markers(&done);
        assert_eq!(mk.len(), 1);
        assert!(!mk[0].commit);
        assert_eq!(
            mk[0].partitions,
            vec![(CONSUMER_OFFSETS_TOPIC.to_string(), 12)]
        );
        let e = m.markers_written("tx", 1000, 0, 40);
        ack(&mut m, &mut log, e);
        assert_eq!(m.state("tx"), Some(TxnState::CompleteAbort));
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1000, 0, false, 50)),
            codes::NONE
        );
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1000, 0, true, 50)),
            codes::INVALID_TXN_STATE
        );
        assert_eq!(
            replies(&m.add_offsets(T, "tx", 1000, 1, "g", 50)),
            vec![TxnReply::AddOffsets(codes::PRODUCER_FENCED)]
        );
    }

    #[test]
    fn request_validation() {
        let mut m = TxnManager::new(cfg()).unwrap();
        let mut log = Log::default();
        let init = |m: &mut TxnManager, timeout| {
            init_reply(&m.init_producer_id(T, "tx", timeout, None, Some(1), 0)).error_code
        };
        assert_eq!(init(&mut m, 0), codes::INVALID_TRANSACTION_TIMEOUT);
        assert_eq!(init(&mut m, -5), codes::INVALID_TRANSACTION_TIMEOUT);
        assert_eq!(init(&mut m, 900_001), codes::INVALID_TRANSACTION_TIMEOUT);
        assert_eq!(
            init_reply(&m.init_producer_id(T, "", 1000, None, Some(1), 0)).error_code,
            codes::INVALID_REQUEST
        );
        // Unknown id.
        assert_eq!(
            add_reply(&add(&mut m, "tx", 1, 0, &[("t", 0)], 0)),
            codes::INVALID_PRODUCER_ID_MAPPING
        );
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1, 0, true, 0)),
            codes::INVALID_PRODUCER_ID_MAPPING
        );
        init_new(&mut m, &mut log, "tx", 1000, 10);
        assert_eq!(
            add_reply(&add(&mut m, "tx", 1001, 0, &[("t", 0)], 0)),
            codes::INVALID_PRODUCER_ID_MAPPING
        );
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1001, 0, true, 0)),
            codes::INVALID_PRODUCER_ID_MAPPING
        );
        // No transaction to end.
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1000, 0, true, 0)),
            codes::INVALID_TXN_STATE
        );
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1000, 0, false, 0)),
            codes::INVALID_TXN_STATE
        );
        // A newer epoch than the coordinator's is fenced too (strict equality, as Kafka).
        assert_eq!(
            add_reply(&add(&mut m, "tx", 1000, 1, &[("t", 0)], 0)),
            codes::PRODUCER_FENCED
        );
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1000, 1, true, 0)),
            codes::PRODUCER_FENCED
        );

        // Ownership: a manager of another partition answers NOT_COORDINATOR.
        let owner = transaction_partition("tx", 50);
        let other = TxnManager::new(TxnConfig {
            partition_index: (owner + 1) % 50,
            ..TxnConfig::default()
        })
        .unwrap();
        assert_eq!(
            other.describe(&["tx".into()])[0].error_code,
            codes::NOT_COORDINATOR
        );
        let mut loading = TxnManager::new_loading(cfg()).unwrap();
        assert_eq!(
            init_reply(&loading.init_producer_id(T, "tx", 1000, None, Some(1), 0)).error_code,
            codes::COORDINATOR_LOAD_IN_PROGRESS
        );
        assert_eq!(
            loading.list(&[], &[]).error_code,
            codes::COORDINATOR_LOAD_IN_PROGRESS
        );
    }

    #[test]
    fn transaction_partition_is_kafkas_rule() {
        assert_eq!(transaction_partition("my-group", 50), 12);
        assert_eq!(transaction_partition("a", 50), 47);
        assert_eq!(transaction_partition("polygenelubricants", 50), 0);
        assert_eq!(transaction_partition("x", 0), 0);
    }

    #[test]
    fn new_init_fences_the_zombie() {
        let mut m = TxnManager::new(cfg()).unwrap();
        let mut log = Log::default();
        init_new(&mut m, &mut log, "tx", 1000, 10);
        // A second producer with the same id: epoch bump.
        let e = m.init_producer_id(T, "tx", 30_000, None, None, 20);
        let r = init_reply(&ack(&mut m, &mut log, e));
        assert_eq!(
            (r.error_code, r.producer_id, r.producer_epoch),
            (codes::NONE, 1000, 1)
        );
        assert_eq!(m.describe(&["tx".into()])[0].timeout_ms, 30_000);
        // The zombie (epoch 0) is fenced everywhere.
        assert_eq!(
            add_reply(&add(&mut m, "tx", 1000, 0, &[("t", 0)], 30)),
            codes::PRODUCER_FENCED
        );
        ongoing(&mut m, &mut log, "tx", 1000, 1, 30);
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1000, 0, true, 40)),
            codes::PRODUCER_FENCED
        );
    }

    #[test]
    fn init_while_ongoing_aborts_with_a_bumped_epoch() {
        let mut m = TxnManager::new(cfg()).unwrap();
        let mut log = Log::default();
        init_new(&mut m, &mut log, "tx", 1000, 10);
        ongoing(&mut m, &mut log, "tx", 1000, 0, 20);
        let e = m.init_producer_id(T, "tx", 60_000, None, None, 30);
        // In flight: everything else waits.
        let again = m.init_producer_id(T, "tx", 60_000, None, None, 31);
        assert_eq!(
            init_reply(&again).error_code,
            codes::CONCURRENT_TRANSACTIONS
        );
        assert_eq!(
            add_reply(&add(&mut m, "tx", 1000, 0, &[("z", 0)], 31)),
            codes::CONCURRENT_TRANSACTIONS
        );
        let done = ack(&mut m, &mut log, e);
        assert_eq!(init_reply(&done).error_code, codes::CONCURRENT_TRANSACTIONS);
        let mk = markers(&done);
        assert_eq!(mk.len(), 1);
        assert_eq!(
            (mk[0].commit, mk[0].producer_epoch, mk[0].partitions.len()),
            (false, 1, 3)
        );
        assert_eq!(m.state("tx"), Some(TxnState::PrepareAbort));
        assert_eq!(m.producer("tx"), Some((1000, 1)));
        // The client retries while markers are written.
        assert_eq!(
            init_reply(&m.init_producer_id(T, "tx", 60_000, None, None, 32)).error_code,
            codes::CONCURRENT_TRANSACTIONS
        );
        // The old producer is fenced.
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1000, 0, true, 33)),
            codes::PRODUCER_FENCED
        );
        let e = m.markers_written("tx", 1000, 1, 40);
        ack(&mut m, &mut log, e);
        assert_eq!(m.state("tx"), Some(TxnState::CompleteAbort));
        let e = m.init_producer_id(T, "tx", 60_000, None, None, 50);
        let r = init_reply(&ack(&mut m, &mut log, e));
        assert_eq!((r.producer_id, r.producer_epoch), (1000, 2));
        assert_eq!(m.state("tx"), Some(TxnState::Empty));
    }

    #[test]
    fn timed_out_transactions_are_aborted_and_fenced() {
        let mut m = TxnManager::new(cfg()).unwrap();
        let mut log = Log::default();
        init_new(&mut m, &mut log, "tx", 1000, 0);
        init_new(&mut m, &mut log, "idle", 2000, 0);
        ongoing(&mut m, &mut log, "tx", 1000, 0, 1_000);
        // start 1000 + timeout 60000: not before 61001.
        assert!(m.expire_timed_out(61_000).is_empty());
        let e = m.expire_timed_out(61_001);
        let done = ack(&mut m, &mut log, e);
        assert!(replies(&done).is_empty());
        let mk = markers(&done);
        assert_eq!(mk.len(), 1);
        assert_eq!(
            (
                mk[0].transactional_id.as_str(),
                mk[0].commit,
                mk[0].producer_epoch
            ),
            ("tx", false, 1)
        );
        assert_eq!(m.state("idle"), Some(TxnState::Empty));
        assert!(m.expire_timed_out(70_000).is_empty());
        assert_eq!(
            end_reply(&m.end_txn(T, "tx", 1000, 0, true, 70_000)),
            codes::PRODUCER_FENCED
        );
        let e = m.markers_written("tx", 1000, 1, 70_001);
        ack(&mut m, &mut log, e);
        assert_eq!(m.state("tx"), Some(TxnState::CompleteAbort));
        // KIP-360 with the old epoch: fenced (the timeout abort cleared the last epoch).
        assert_eq!(
            init_reply(&m.init_producer_id(T, "tx", 60_000, Some((1000, 0)), None, 70_002))
                .error_code,
            codes::PRODUCER_FENCED
        );
    }

    #[test]
    fn kip_360_bump_and_retry() {
        let mut m = TxnManager::new(cfg()).unwrap();
        let mut log = Log::default();
        init_new(&mut m, &mut log, "tx", 1000, 0);
        let e = m.init_producer_id(T, "tx", 60_000, Some((1000, 0)), None, 10);
        let r = init_reply(&ack(&mut m, &mut log, e));
        assert_eq!((r.producer_id, r.producer_epoch), (1000, 1));
        // The response was lost: the retry names the previous epoch and gets the same answer.
        let e = m.init_producer_id(T, "tx", 60_000, Some((1000, 0)), None, 20);
        let r = init_reply(&ack(&mut m, &mut log, e));
        assert_eq!(
            (r.error_code, r.producer_id, r.producer_epoch),
            (codes::NONE, 1000, 1)
        );
        // Neither current nor previous.
        for expected in [(1000, 5), (4242, 1)] {
            assert_eq!(
                init_reply(&m.init_producer_id(T, "tx", 60_000, Some(expected), None, 30))
                    .error_code,
                codes::PRODUCER_FENCED,
                "{expected:?}"
            );
        }
        // Current pair: bumped again.
        let e = m.init_producer_id(T, "tx", 60_000, Some((1000, 1)), None, 40);
        assert_eq!(init_reply(&ack(&mut m, &mut log, e)).producer_epoch, 2);
    }

    fn exhausted_manager(log: &mut Log) -> TxnManager {
        let value = TxnLogValue {
            producer_id: 1000,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: EXHAUSTED_EPOCH,
            transaction_timeout_ms: 60_000,
            state: TxnState::CompleteCommit,
            partitions: vec![],
            last_update_timestamp_ms: 0,
            start_timestamp_ms: 0,
            client_transaction_version: 0,
        };
        log.0.push((txn_key("tx"), Some(value.encode())));
        let (m, effects) =
            TxnManager::load(cfg(), log.0.iter().map(|(k, v)| (&k[..], v.as_deref()))).unwrap();
        assert!(effects.is_empty());
        m
    }

    #[test]
    fn exhausted_epoch_takes_a_new_producer_id() {
        let mut log = Log::default();
        let mut m = exhausted_manager(&mut log);
        let e = m.init_producer_id(T, "tx", 60_000, None, None, 10);
        assert!(matches!(e.as_slice(), [TxnEffect::NeedsProducerId { .. }]));
        let e = m.init_producer_id(T, "tx", 60_000, None, Some(2000), 10);
        let r = init_reply(&ack(&mut m, &mut log, e));
        assert_eq!((r.producer_id, r.producer_epoch), (2000, 0));

        // With KIP-360: the rotation records the old pair, so its retry is answered again.
        let mut log = Log::default();
        let mut m = exhausted_manager(&mut log);
        let e = m.init_producer_id(
            T,
            "tx",
            60_000,
            Some((1000, EXHAUSTED_EPOCH)),
            Some(3000),
            10,
        );
        let r = init_reply(&ack(&mut m, &mut log, e));
        assert_eq!((r.producer_id, r.producer_epoch), (3000, 0));
        let e = m.init_producer_id(T, "tx", 60_000, Some((1000, EXHAUSTED_EPOCH)), None, 20);
        let r = init_reply(&ack(&mut m, &mut log, e));
        assert_eq!(
            (r.error_code, r.producer_id, r.producer_epoch),
            (codes::NONE, 3000, 0)
        );
    }

    #[test]
    fn fencing_at_the_last_epoch_does_not_overflow() {
        let mut log = Log::default();
        let mut m = exhausted_manager(&mut log);
        // epoch i16::MAX - 1 in CompleteCommit: a transaction can still run at that epoch.
        let e = add(&mut m, "tx", 1000, EXHAUSTED_EPOCH, &[("t", 0)], 10);
        ack(&mut m, &mut log, e);
        let e = m.expire_timed_out(100_000);
        let done = ack(&mut m, &mut log, e);
        assert_eq!(markers(&done)[0].producer_epoch, i16::MAX);
        let e = m.markers_written("tx", 1000, i16::MAX, 100_001);
        ack(&mut m, &mut log, e);
        let e = m.init_producer_id(T, "tx", 60_000, None, Some(5000), 100_002);
        let r = init_reply(&ack(&mut m, &mut log, e));
        assert_eq!((r.producer_id, r.producer_epoch), (5000, 0));
    }

    #[test]
    fn failed_writes_roll_back() {
        let mut m = TxnManager::new(cfg()).unwrap();
        let mut log = Log::default();
        // A new id whose first write fails is forgotten.
        let e = m.init_producer_id(T, "tx", 60_000, None, Some(1000), 0);
        let w = write_of(&e);
        assert_eq!(m.txn_count(), 1);
        assert_eq!(m.state("tx"), None);
        let done = m.on_persisted(w, false);
        assert_eq!(init_reply(&done).error_code, codes::NOT_COORDINATOR);
        assert_eq!(m.txn_count(), 0);
        assert!(matches!(
            m.init_producer_id(T, "tx", 60_000, None, None, 1)
                .as_slice(),
            [TxnEffect::NeedsProducerId { .. }]
        ));
        init_new(&mut m, &mut log, "tx", 1000, 2);
        // AddPartitions fails: still Empty, nothing pending.
        let e = add(&mut m, "tx", 1000, 0, &[("t", 0)], 10);
        let w = write_of(&e);
        let done = m.on_persisted(w, false);
        assert_eq!(add_reply(&done), codes::NOT_COORDINATOR);
        assert_eq!(m.state("tx"), Some(TxnState::Empty));
        assert!(!m.has_pending_transition("tx"));
        // A repeated report of the same write is ignored.
        assert!(m.on_persisted(w, true).is_empty());
        assert_eq!(m.state("tx"), Some(TxnState::Empty));
        // The fencing abort fails: the epoch is not bumped, the transaction stays open.
        ongoing(&mut m, &mut log, "tx", 1000, 0, 20);
        let e = m.init_producer_id(T, "tx", 60_000, None, None, 30);
        let done = m.on_persisted(write_of(&e), false);
        assert_eq!(init_reply(&done).error_code, codes::NOT_COORDINATOR);
        assert!(markers(&done).is_empty());
        assert_eq!(m.producer("tx"), Some((1000, 0)));
        assert_eq!(m.state("tx"), Some(TxnState::Ongoing));
        // EndTxn fails: no markers, still Ongoing, and the client may retry.
        let e = m.end_txn(T, "tx", 1000, 0, true, 40);
        let done = m.on_persisted(write_of(&e), false);
        assert_eq!(end_reply(&done), codes::NOT_COORDINATOR);
        assert!(markers(&done).is_empty());
        assert_eq!(m.state("tx"), Some(TxnState::Ongoing));
        let e = m.end_txn(T, "tx", 1000, 0, true, 41);
        assert_eq!(end_reply(&ack(&mut m, &mut log, e)), codes::NONE);
        // The completion write fails: still decided, markers still owed.
        let e = m.markers_written("tx", 1000, 0, 50);
        assert!(m.on_persisted(write_of(&e), false).is_empty());
        assert_eq!(m.state("tx"), Some(TxnState::PrepareCommit));
        assert_eq!(markers(&m.pending_markers()).len(), 1);
    }

    #[test]
    fn unload_answers_waiting_requests() {
        let mut m = TxnManager::new(cfg()).unwrap();
        let mut log = Log::default();
        init_new(&mut m, &mut log, "tx", 1000, 0);
        let e = m.end_txn(T, "tx", 1000, 0, true, 1);
        assert_eq!(end_reply(&e), codes::INVALID_TXN_STATE);
        let e = add(&mut m, "tx", 1000, 0, &[("t", 0)], 2);
        let w = write_of(&e);
        let out = m.unload();
        assert_eq!(add_reply(&out), codes::NOT_COORDINATOR);
        assert!(m.on_persisted(w, true).is_empty());
        assert_eq!(m.txn_count(), 0);
        assert_eq!(
            m.describe(&["tx".into()])[0].error_code,
            codes::NOT_COORDINATOR
        );
    }

    #[test]
    fn expired_ids_get_tombstones() {
        let mut c = cfg();
        c.transactional_id_expiration_ms = 1_000;
        let mut m = TxnManager::new(c.clone()).unwrap();
        let mut log = Log::default();
        init_new(&mut m, &mut log, "old", 1, 0);
        init_new(&mut m, &mut log, "open", 2, 0);
        ongoing(&mut m, &mut log, "open", 2, 0, 0);
        init_new(&mut m, &mut log, "young", 3, 500);
        assert!(m.expire_transactional_ids(999).is_empty());
        let e = m.expire_transactional_ids(1_000);
        let records: Vec<Record> = e
            .iter()
            .flat_map(|e| match e {
                TxnEffect::Persist { records, .. } => records.clone(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(
            records,
            vec![Record {
                key: txn_key("old"),
                value: None
            }]
        );
        // Until durable, the id is still there and busy.
        assert!(m.has_pending_transition("old"));
        assert_eq!(
            init_reply(&m.init_producer_id(T, "old", 1000, None, None, 1_000)).error_code,
            codes::CONCURRENT_TRANSACTIONS
        );
        ack(&mut m, &mut log, e);
        assert_eq!(m.state("old"), None);
        assert_eq!(
            m.describe(&["old".into()])[0].error_code,
            codes::TRANSACTIONAL_ID_NOT_FOUND
        );
        assert_eq!(m.state("open"), Some(TxnState::Ongoing));
        assert_eq!(m.state("young"), Some(TxnState::Empty));
        // The tombstone deletes the id on replay too.
        let (r, _) =
            TxnManager::load(c, log.0.iter().map(|(k, v)| (&k[..], v.as_deref()))).unwrap();
        assert_eq!(r.state("old"), None);
        assert_eq!(r.txn_count(), 2);
    }

    #[test]
    fn replay_rebuilds_the_live_state() {
        let mut m = TxnManager::new(cfg()).unwrap();
        let mut log = Log::default();
        init_new(&mut m, &mut log, "a", 1, 0);
        init_new(&mut m, &mut log, "b", 2, 0);
        init_new(&mut m, &mut log, "c", 3, 0);
        ongoing(&mut m, &mut log, "a", 1, 0, 10);
        ongoing(&mut m, &mut log, "b", 2, 0, 10);
        let e = m.end_txn(T, "b", 2, 0, true, 20);
        ack(&mut m, &mut log, e);
        ongoing(&mut m, &mut log, "c", 3, 0, 10);
        let e = m.end_txn(T, "c", 3, 0, false, 20);
        ack(&mut m, &mut log, e);
        let e = m.markers_written("c", 3, 0, 30);
        ack(&mut m, &mut log, e);
        // A write in flight is not in the log: the loaded manager does not see it.
        let _in_flight = add(&mut m, "c", 3, 0, &[("x", 9)], 40);

        let (r, redo) =
            TxnManager::load(cfg(), log.0.iter().map(|(k, v)| (&k[..], v.as_deref()))).unwrap();
        let ids: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(r.describe(&ids), m.describe(&ids));
        assert_eq!(r.list(&[], &[]), m.list(&[], &[]));
        assert_eq!(r.state("c"), Some(TxnState::CompleteAbort));
        // b was decided but not completed: its markers are redone.
        assert_eq!(redo, m.pending_markers());
        let mk = markers(&redo);
        assert_eq!(mk.len(), 1);
        assert_eq!((mk[0].transactional_id.as_str(), mk[0].commit), ("b", true));
        assert_eq!(mk[0].coordinator_epoch, 3);
    }

    #[test]
    fn describe_and_list() {
        let mut m = TxnManager::new(cfg()).unwrap();
        let mut log = Log::default();
        init_new(&mut m, &mut log, "a", 1, 0);
        init_new(&mut m, &mut log, "b", 2, 0);
        ongoing(&mut m, &mut log, "b", 2, 0, 10);
        let d = m.describe(&["b".into(), "zz".into()]);
        assert_eq!(
            d[0],
            DescribedTxn {
                transactional_id: "b".into(),
                error_code: codes::NONE,
                state: "Ongoing",
                timeout_ms: 60_000,
                start_timestamp_ms: 10,
                producer_id: 2,
                producer_epoch: 0,
                topics: vec![("t".into(), vec![0, 1]), ("u".into(), vec![0])],
            }
        );
        assert_eq!(d[1].error_code, codes::TRANSACTIONAL_ID_NOT_FOUND);
        let names = |r: ListTxnsResult| -> Vec<String> {
            r.transactions
                .into_iter()
                .map(|t| t.transactional_id)
                .collect()
        };
        assert_eq!(names(m.list(&[], &[])), vec!["a", "b"]);
        assert_eq!(names(m.list(&["Ongoing".into()], &[])), vec!["b"]);
        assert_eq!(names(m.list(&[], &[1])), vec!["a"]);
        assert!(names(m.list(&["Empty".into()], &[2])).is_empty());
        let r = m.list(&["Bogus".into(), "Empty".into()], &[]);
        assert_eq!(r.unknown_state_filters, vec!["Bogus".to_string()]);
        assert_eq!(r.transactions[0].state, "Empty");
    }
}
