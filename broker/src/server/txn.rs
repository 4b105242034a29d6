//! Transaction APIs: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn, WriteTxnMarkers, DescribeTransactions, ListTransactions; the
//! `__transaction_state` topic (created at the first FindCoordinator for a transactional id, as
//! Kafka does); and the markers a coordinator sends to the partitions of a transaction.
//!
//! A transactional id belongs to one `__transaction_state` partition (Kafka's hash rule); the
//! coordinator of that partition (`groups::txn::TxnCoordinator`) runs on the shard that owns
//! it, on the broker that leads it. Each handler here runs the call there, like the group
//! handlers; any other broker answers NOT_COORDINATOR.
//!
//! Markers: once a transaction is prepared, the coordinator hands its partitions to
//! `write_markers`, which writes a COMMIT or ABORT control batch on each partition's leader:
//! through the owning shard when this broker leads it, with a WriteTxnMarkers request to the
//! leader otherwise. A partition whose write fails is retried until it succeeds, its topic is
//! gone, or the coordinator stops (it then redoes the markers wherever it loads next).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use shardlog_coordinator as gc;

use super::Response;
use crate::base::errors;
use crate::cluster::metadata::{BrokerInfo, MetadataSnapshot, TRANSACTION_STATE_TOPIC};
use crate::groups::txn::{InitAnswer, MarkerJob, TxnCoordinator};
use crate::runtime::shard_table::ShardId;
use crate::shard::Shard;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// How long a marker write waits for the partition's ISR (Kafka's request timeout for them).
const MARKER_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before retrying the partitions whose marker could not be written.
const MARKER_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Bound on connecting to another broker and on its answer to WriteTxnMarkers.
const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The `__transaction_state` partition of `transactional_id`: Kafka's rule over the topic's
/// own partition count, so every broker agrees.
fn state_partition(snapshot: &MetadataSnapshot, transactional_id: &str) -> Option<i32> {
    let t = snapshot.topic(TRANSACTION_STATE_TOPIC)?;
    Some(gc::coordinator_partition(transactional_id, t.partitions))
}

/// Where the coordinator of a transactional id runs: the live leader of its state partition.
pub fn find_one(snapshot: &MetadataSnapshot, transactional_id: &str) -> Option<BrokerInfo> {
    let p = state_partition(snapshot, transactional_id)?;
    snapshot.leader_broker(TRANSACTION_STATE_TOPIC, p).cloned()
}

/// Creates `__transaction_state` if it does not exist (compacted, as in Kafka; with
/// `transaction.state.log.*` partitions, replicas and min ISR). Errors are logged: the
/// FindCoordinator that asked answers COORDINATOR_NOT_AVAILABLE and the client retries.
pub async fn ensure_state_topic(shard: &Rc<Shard>) {
    if shard.metadata().topic(TRANSACTION_STATE_TOPIC).is_some() {
        return;
    }
    let config = &shard.config;
    let cluster = shard.metadata().cluster_mode;
    let rf = if cluster {
        config.transaction_state_log_replication_factor
    } else {
        1
    };
    let min_isr = if cluster {
        config.transaction_state_log_min_isr.min(i32::from(rf))
    } else {
        1
    };
    let mut configs = std::collections::BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert(
        "segment.bytes".to_string(),
        config.transaction_state_log_segment_bytes.to_string(),
    );
    configs.insert("min.insync.replicas".to_string(), min_isr.to_string());
    configs.insert(
        "unclean.leader.election.enable".to_string(),
        "false".to_string(),
    );
    let spec = crate::shard::topics::TopicSpec {
        name: TRANSACTION_STATE_TOPIC.to_string(),
        partitions: config.transaction_state_log_num_partitions,
        configs,
    };
    for (name, result) in
        crate::shard::topics::create_topics_replicated(shard, vec![(spec, rf)], false).await
    {
        match result {
            Ok(_) => log::info!("created {name}"),
            // Another request (or broker) created it first.
            Err((code, _)) if code == errors::TOPIC_ALREADY_EXISTS => {}
            Err((code, msg)) => log::warn!("cannot create {name} yet: error {code}: {msg}"),
        }
    }
}

/// Whether this broker coordinates state partition `p` by `snapshot`.
fn coordinates(snapshot: &MetadataSnapshot, p: i32) -> Result<(), i16> {
    if snapshot.topic(TRANSACTION_STATE_TOPIC).is_none() {
        Err(errors::COORDINATOR_NOT_AVAILABLE)
    } else if snapshot.leads(TRANSACTION_STATE_TOPIC, p) {
        Ok(())
    } else {
        Err(errors::NOT_COORDINATOR)
    }
}

/// Runs `f` with the coordinator of `transactional_id` on its shard, or says why it cannot.
async fn on_coordinator<R, F, Fut>(
    shard: &Rc<Shard>,
    transactional_id: &str,
    f: F,
) -> Result<R, i16>
where
    R: Send + 'static,
    F: FnOnce(Rc<Shard>, Rc<TxnCoordinator>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let Some(p) = state_partition(&shard.metadata(), transactional_id) else {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    };
    let owner = shard.owner(TRANSACTION_STATE_TOPIC, p);
    shard
        .invoke_on(owner, move |s| async move {
            coordinates(&s.metadata(), p)?;
            match s.txn_coordinator(p) {
                Some(c) => Ok(f(s.clone(), c).await),
                None => Err(errors::COORDINATOR_NOT_AVAILABLE),
            }
        })
        .await
        .unwrap_or(Err(errors::COORDINATOR_NOT_AVAILABLE))
}

/// Clients before KIP-588 (InitProducerId < 4, EndTxn/AddPartitions/AddOffsets < 2 in Kafka's
/// rule, TxnOffsetCommit < 3) know INVALID_PRODUCER_EPOCH, not PRODUCER_FENCED.
fn fenced_for(code: i16, knows_producer_fenced: bool) -> i16 {
    if code == errors::PRODUCER_FENCED && !knows_producer_fenced {
        errors::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

/// InitProducerId with a transactional id (the plain idempotent case is in `admin`).
pub async fn init_producer_id(
    shard: &Rc<Shard>,
    version: i16,
    req: InitProducerIdRequest,
    transactional_id: String,
) -> Response {
    let base = InitProducerIdResponse::default()
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    let timeout = req.transaction_timeout_ms;
    let expected = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
    let id = transactional_id.clone();
    let answer = on_coordinator(shard, &transactional_id, move |s, c| async move {
        let mut fresh = None;
        loop {
            match c.init_producer_id(&id, timeout, expected, fresh).await {
                InitAnswer::NeedsProducerId if fresh.is_none() => {
                    let id = s
                        .invoke_on(ShardId(0), |s0| async move {
                            super::admin::allocate_producer_id(&s0).await
                        })
                        .await
                        .unwrap_or(Err(errors::COORDINATOR_NOT_AVAILABLE));
                    match id {
                        Ok(id) => fresh = Some(id.0),
                        Err(code) => return Err(code),
                    }
                }
                InitAnswer::NeedsProducerId => return Err(errors::COORDINATOR_NOT_AVAILABLE),
                InitAnswer::Done(pid, epoch) => return Ok((pid, epoch)),
                InitAnswer::Error(code) => return Err(code),
            }
        }
    })
    .await
    .and_then(|r| r);
    let resp = match answer {
        Ok((pid, epoch)) => base
            .with_error_code(errors::NONE)
            .with_producer_id(pid.into())
            .with_producer_epoch(epoch),
        Err(code) => base.with_error_code(fenced_for(code, version >= 4)),
    };
    Response::Message(ResponseKind::InitProducerId(resp))
}

/// One transaction's part of an AddPartitionsToTxn request.
struct AddPartitions {
    transactional_id: TransactionalId,
    producer_id: i64,
    producer_epoch: i16,
    verify_only: bool,
    topics: Vec<(TopicName, Vec<i32>)>,
}

async fn add_partitions_one(
    shard: &Rc<Shard>,
    a: &AddPartitions,
    knows_fenced: bool,
) -> AddPartitionsToTxnResult {
    let snapshot = shard.metadata();
    // Partitions of topics that do not exist are refused before the coordinator sees them;
    // the others then get OPERATION_NOT_ATTEMPTED, as in Kafka.
    let unknown: Vec<(TopicName, i32)> = a
        .topics
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .filter(|(t, p)| {
            snapshot
                .topic(t.0.as_str())
                .is_none_or(|m| *p < 0 || *p >= m.partitions)
        })
        .collect();
    let code_for = |t: &TopicName, p: i32, code: i16| -> i16 {
        if unknown.is_empty() {
            code
        } else if unknown.iter().any(|(ut, up)| ut == t && *up == p) {
            errors::UNKNOWN_TOPIC_OR_PARTITION
        } else {
            errors::OPERATION_NOT_ATTEMPTED
        }
    };
    let code = if !unknown.is_empty() {
        errors::NONE
    } else {
        let partitions: Vec<(String, i32)> = a
            .topics
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.0.to_string(), *p)))
            .collect();
        let (pid, epoch, verify) = (a.producer_id, a.producer_epoch, a.verify_only);
        let id = a.transactional_id.0.to_string();
        on_coordinator(shard, &a.transactional_id.0, move |_, c| async move {
            if verify {
                c.verify_partitions(&id, pid, epoch, &partitions)
            } else {
                c.add_partitions(&id, pid, epoch, partitions).await
            }
        })
        .await
        .unwrap_or_else(|code| code)
    };
    let code = fenced_for(code, knows_fenced);
    let topic_results = a
        .topics
        .iter()
        .map(|(t, ps)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.clone())
                .with_results_by_partition(
                    ps.iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(code_for(t, *p, code))
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResult::default()
        .with_transactional_id(a.transactional_id.clone())
        .with_topic_results(topic_results)
}

pub async fn add_partitions_to_txn(
    shard: &Rc<Shard>,
    version: i16,
    req: AddPartitionsToTxnRequest,
) -> Response {
    let topics = |ts: &[add_partitions_to_txn_request::AddPartitionsToTxnTopic]| {
        ts.iter()
            .map(|t| (t.name.clone(), t.partitions.clone()))
            .collect::<Vec<_>>()
    };
    if version <= 3 {
        let a = AddPartitions {
            transactional_id: req.v3_and_below_transactional_id.clone(),
            producer_id: req.v3_and_below_producer_id.0,
            producer_epoch: req.v3_and_below_producer_epoch,
            verify_only: false,
            topics: topics(&req.v3_and_below_topics),
        };
        let r = add_partitions_one(shard, &a, version >= 2).await;
        return Response::Message(ResponseKind::AddPartitionsToTxn(
            AddPartitionsToTxnResponse::default()
                .with_results_by_topic_v3_and_below(r.topic_results),
        ));
    }
    // v4+: sent by brokers (KIP-890 verification); each transaction answered on its own.
    let mut results = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let a = AddPartitions {
            transactional_id: t.transactional_id.clone(),
            producer_id: t.producer_id.0,
            producer_epoch: t.producer_epoch,
            verify_only: t.verify_only,
            topics: topics(&t.topics),
        };
        results.push(add_partitions_one(shard, &a, true).await);
    }
    Response::Message(ResponseKind::AddPartitionsToTxn(
        AddPartitionsToTxnResponse::default().with_results_by_transaction(results),
    ))
}

pub async fn add_offsets_to_txn(
    shard: &Rc<Shard>,
    version: i16,
    req: AddOffsetsToTxnRequest,
) -> Response {
    let id = req.transactional_id.0.to_string();
    let group = req.group_id.0.to_string();
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let code = on_coordinator(shard, &req.transactional_id.0, move |_, c| async move {
        c.add_offsets(&id, pid, epoch, group).await
    })
    .await
    .unwrap_or_else(|code| code);
    Response::Message(ResponseKind::AddOffsetsToTxn(
        AddOffsetsToTxnResponse::default().with_error_code(fenced_for(code, version >= 2)),
    ))
}

pub async fn end_txn(shard: &Rc<Shard>, version: i16, req: EndTxnRequest) -> Response {
    let id = req.transactional_id.0.to_string();
    let (pid, epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
    let code = on_coordinator(shard, &req.transactional_id.0, move |_, c| async move {
        c.end_txn(&id, pid, epoch, commit).await
    })
    .await
    .unwrap_or_else(|code| code);
    Response::Message(ResponseKind::EndTxn(
        EndTxnResponse::default().with_error_code(fenced_for(code, version >= 2)),
    ))
}

pub async fn describe_transactions(
    shard: &Rc<Shard>,
    _version: i16,
    req: DescribeTransactionsRequest,
) -> Response {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in &req.transactional_ids {
        let key = id.0.to_string();
        let found = on_coordinator(shard, &id.0, move |_, c| async move { c.describe(&key) })
            .await
            .unwrap_or_else(Err);
        let st = TransactionState::default().with_transactional_id(id.clone());
        states.push(match found {
            Ok(d) => st
                .with_error_code(errors::NONE)
                .with_transaction_state(s(d.state))
                .with_transaction_timeout_ms(d.timeout_ms)
                .with_transaction_start_time_ms(d.start_timestamp_ms)
                .with_producer_id(d.producer_id.into())
                .with_producer_epoch(d.producer_epoch)
                .with_topics(
                    d.topics
                        .into_iter()
                        .map(|(t, ps)| {
                            TopicData::default()
                                .with_topic(TopicName(s(&t)))
                                .with_partitions(ps)
                        })
                        .collect(),
                ),
            Err(code) => st
                .with_error_code(code)
                .with_transaction_state(s(""))
                .with_producer_id((-1).into())
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1),
        });
    }
    Response::Message(ResponseKind::DescribeTransactions(
        DescribeTransactionsResponse::default().with_transaction_states(states),
    ))
}

pub async fn list_transactions(
    shard: &Rc<Shard>,
    _version: i16,
    req: ListTransactionsRequest,
) -> Response {
    let states: Vec<String> = req.state_filters.iter().map(|s| s.to_string()).collect();
    let pids: Vec<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    let min_duration = req.duration_filter;
    let per_shard = shard
        .invoke_on_all(move |s| {
            let states = states.clone();
            let pids = pids.clone();
            async move {
                let snapshot = s.metadata();
                let mut unknown = Vec::new();
                let mut out = Vec::new();
                for c in s.txn_coordinators() {
                    if snapshot.leads(TRANSACTION_STATE_TOPIC, c.partition.index) {
                        let r = c.list(&states, &pids, min_duration);
                        if r.error_code == errors::NONE {
                            out.extend(r.transactions);
                        }
                        unknown = r.unknown_state_filters;
                    }
                }
                (out, unknown)
            }
        })
        .await;
    let mut unknown: Vec<String> = Vec::new();
    let mut listed = Vec::new();
    for (txns, u) in per_shard.into_iter().flatten() {
        listed.extend(txns.into_iter().map(|l| {
            ListedState::default()
                .with_transactional_id(TransactionalId(s(&l.transactional_id)))
                .with_producer_id(l.producer_id.into())
                .with_transaction_state(s(l.state))
        }));
        for f in u {
            if !unknown.contains(&f) {
                unknown.push(f);
            }
        }
    }
    // Unknown state filters match nothing and are reported back, as Kafka does.
    for f in req.state_filters.iter().map(|f| f.to_string()) {
        if txn_state_known(&f) || unknown.contains(&f) {
            continue;
        }
        unknown.push(f);
    }
    Response::Message(ResponseKind::ListTransactions(
        ListTransactionsResponse::default()
            .with_error_code(errors::NONE)
            .with_unknown_state_filters(unknown.into_iter().map(|f| s(&f)).collect())
            .with_transaction_states(listed),
    ))
}

fn txn_state_known(name: &str) -> bool {
    gc::txn::TxnState::from_name(name).is_some()
}

/// DescribeProducers: the producers each partition's leader has state for.
pub async fn describe_producers(
    shard: &Rc<Shard>,
    _version: i16,
    req: DescribeProducersRequest,
) -> Response {
    use kafka_protocol::messages::describe_producers_response::{
        PartitionResponse, ProducerState, TopicResponse,
    };
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for &index in &t.partition_indexes {
            let topic = t.name.0.to_string();
            let owner = shard.owner(&topic, index);
            let found = shard
                .invoke_on(owner, move |s| async move {
                    let p = s
                        .partition(&topic, index)
                        .ok_or(errors::UNKNOWN_TOPIC_OR_PARTITION)?;
                    if p.role() != crate::partition::Role::Leader {
                        return Err(errors::NOT_LEADER_OR_FOLLOWER);
                    }
                    Ok(p.producers())
                })
                .await
                .unwrap_or(Err(errors::NOT_LEADER_OR_FOLLOWER));
            let r = PartitionResponse::default().with_partition_index(index);
            partitions.push(match found {
                Ok(views) => r.with_error_code(errors::NONE).with_active_producers(
                    views
                        .into_iter()
                        .map(|v| {
                            ProducerState::default()
                                .with_producer_id(v.producer_id.0.into())
                                .with_producer_epoch(i32::from(v.epoch.0))
                                .with_last_sequence(v.last_sequence)
                                .with_last_timestamp(v.last_timestamp)
                                .with_coordinator_epoch(v.coordinator_epoch)
                                .with_current_txn_start_offset(v.txn_start_offset)
                        })
                        .collect(),
                ),
                Err(code) => r.with_error_code(code),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    Response::Message(ResponseKind::DescribeProducers(
        DescribeProducersResponse::default().with_topics(topics),
    ))
}

/// KIP-890 verification before an append: a transactional batch of a producer with no open
/// transaction on `p` is appended only if the coordinator of `transactional_id` has the
/// partition in that producer's ongoing transaction. Refusals: INVALID_TXN_STATE (not in the
/// transaction), INVALID_PRODUCER_EPOCH (fenced); NOT_ENOUGH_REPLICAS, which producers retry,
/// when the coordinator cannot answer now.
pub async fn verify_transactional_append(
    shard: &Rc<Shard>,
    p: &crate::partition::Partition,
    transactional_id: Option<&str>,
    batches: &[crate::partition::IncomingBatch],
) -> Result<(), i16> {
    if !shard.config.transaction_partition_verification_enable {
        return Ok(());
    }
    let Some(h) = batches
        .iter()
        .map(|b| &b.header)
        .find(|h| h.is_transactional())
    else {
        return Ok(());
    };
    if p.ongoing_transactions()
        .iter()
        .any(|(_, id)| *id == h.producer_id)
    {
        return Ok(());
    }
    let Some(id) = transactional_id else {
        return Err(errors::INVALID_TXN_STATE);
    };
    let partition = vec![(p.topic.to_string(), p.index)];
    let (pid, epoch) = (h.producer_id, h.producer_epoch);
    let snapshot = shard.metadata();
    let code = match find_one(&snapshot, id) {
        None => errors::COORDINATOR_NOT_AVAILABLE,
        Some(b) if b.id == snapshot.local_broker => {
            let key = id.to_string();
            on_coordinator(shard, id, move |_, c| async move {
                c.verify_partitions(&key, pid, epoch, &partition)
            })
            .await
            .unwrap_or_else(|code| code)
        }
        Some(b) => verify_remote(shard, &b, id, pid, epoch, &partition).await,
    };
    match code {
        errors::NONE => Ok(()),
        errors::INVALID_TXN_STATE | errors::INVALID_PRODUCER_ID_MAPPING => {
            Err(errors::INVALID_TXN_STATE)
        }
        errors::PRODUCER_FENCED | errors::INVALID_PRODUCER_EPOCH => {
            Err(errors::INVALID_PRODUCER_EPOCH)
        }
        _ => Err(errors::NOT_ENOUGH_REPLICAS),
    }
}

/// AddPartitionsToTxn v4 with `verify_only`, to the coordinator on broker `b`.
async fn verify_remote(
    shard: &Rc<Shard>,
    b: &BrokerInfo,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partition: &[(String, i32)],
) -> i16 {
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    let topics = partition
        .iter()
        .map(|(t, p)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s(t)))
                .with_partitions(vec![*p])
        })
        .collect();
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(s(transactional_id)))
            .with_producer_id(producer_id.into())
            .with_producer_epoch(producer_epoch)
            .with_verify_only(true)
            .with_topics(topics),
    ]);
    match crate::replication::broker_call::call_once(
        shard,
        b,
        &req,
        4,
        BROKER_CALL_TIMEOUT,
        "shardlog-txn-verify",
    )
    .await
    {
        Ok(resp) if resp.error_code != errors::NONE => resp.error_code,
        Ok(resp) => resp
            .results_by_transaction
            .iter()
            .flat_map(|t| t.topic_results.iter())
            .flat_map(|t| t.results_by_partition.iter())
            .map(|p| p.partition_error_code)
            .find(|c| *c != errors::NONE)
            .unwrap_or(errors::NONE),
        Err(e) => {
            log::warn!("verifying a transactional append with broker {}: {e}", b.id);
            errors::COORDINATOR_NOT_AVAILABLE
        }
    }
}

/// Writes one marker on a partition this broker leads, on its shard, and waits for its ISR.
async fn write_marker_here(
    shard: &Rc<Shard>,
    topic: String,
    partition: i32,
    marker: (i64, i16, bool, i32),
) -> i16 {
    let owner = shard.owner(&topic, partition);
    shard
        .invoke_on(owner, move |s| async move {
            let Some(p) = s.partition(&topic, partition) else {
                return errors::UNKNOWN_TOPIC_OR_PARTITION;
            };
            let (pid, epoch, commit, coordinator_epoch) = marker;
            let outcome = p.write_marker(pid, epoch, commit, coordinator_epoch).await;
            if outcome.error_code != errors::NONE {
                return outcome.error_code;
            }
            let code = p
                .wait_committed(outcome.last_offset, MARKER_COMMIT_TIMEOUT)
                .await;
            if code == errors::NONE && topic == crate::cluster::metadata::CONSUMER_OFFSETS_TOPIC {
                // Transactional offsets of this producer become visible (or are dropped).
                if let Some(g) = s.group_coordinator(partition) {
                    g.complete_txn(pid, commit);
                }
            }
            code
        })
        .await
        .unwrap_or(errors::NOT_LEADER_OR_FOLLOWER)
}

/// WriteTxnMarkers, from another broker's transaction coordinator.
pub async fn write_txn_markers(
    shard: &Rc<Shard>,
    _version: i16,
    req: WriteTxnMarkersRequest,
) -> Response {
    let mut markers = Vec::with_capacity(req.markers.len());
    for m in &req.markers {
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in &m.topics {
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for &p in &t.partition_indexes {
                let code = write_marker_here(
                    shard,
                    t.name.0.to_string(),
                    p,
                    (
                        m.producer_id.0,
                        m.producer_epoch,
                        m.transaction_result,
                        m.coordinator_epoch,
                    ),
                )
                .await;
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(code),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    Response::Message(ResponseKind::WriteTxnMarkers(
        WriteTxnMarkersResponse::default().with_markers(markers),
    ))
}

/// Sends one WriteTxnMarkers request to broker `leader` for `partitions`; returns the
/// partitions whose marker is written.
async fn write_markers_remote(
    shard: &Rc<Shard>,
    leader: &BrokerInfo,
    job: &MarkerJob,
    partitions: &[(String, i32)],
) -> Vec<(String, i32)> {
    let mut topics: Vec<WritableTxnMarkerTopic> = Vec::new();
    for (t, p) in partitions {
        match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
            Some(x) => x.partition_indexes.push(*p),
            None => topics.push(
                WritableTxnMarkerTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partition_indexes(vec![*p]),
            ),
        }
    }
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(job.producer_id.into())
        .with_producer_epoch(job.producer_epoch)
        .with_transaction_result(job.commit)
        .with_coordinator_epoch(job.coordinator_epoch)
        .with_topics(topics)]);
    let answer = crate::replication::broker_call::call_once(
        shard,
        leader,
        &req,
        1,
        BROKER_CALL_TIMEOUT,
        "shardlog-txn-markers",
    )
    .await;
    match answer {
        Ok(resp) => resp
            .markers
            .iter()
            .flat_map(|m| m.topics.iter())
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.error_code == errors::NONE)
                    .map(move |p| (t.name.0.to_string(), p.partition_index))
            })
            .collect(),
        Err(e) => {
            log::warn!(
                "WriteTxnMarkers to broker {} for producer {}: {e}",
                leader.id,
                job.producer_id
            );
            Vec::new()
        }
    }
}

/// Writes a transaction's markers on every partition (see the module comment). True once all
/// are written (or their topics are gone); false if `job.active` turned false first.
pub fn write_markers(shard: Rc<Shard>, job: MarkerJob) -> Pin<Box<dyn Future<Output = bool>>> {
    Box::pin(async move {
        let mut remaining = job.partitions.clone();
        let mut attempts = 0u64;
        loop {
            if !(job.active)() {
                return false;
            }
            let snapshot = shard.metadata();
            // Topics deleted since the transaction began need no marker.
            remaining.retain(|(t, p)| {
                snapshot
                    .topic(t)
                    .is_some_and(|m| *p >= 0 && *p < m.partitions)
            });
            if remaining.is_empty() {
                return true;
            }
            let mut by_leader: std::collections::BTreeMap<i32, Vec<(String, i32)>> =
                Default::default();
            let mut leaderless = Vec::new();
            for tp in remaining.drain(..) {
                match snapshot.partition_state(&tp.0, tp.1) {
                    Some(st) if st.leader != crate::cluster::metadata::NO_LEADER => {
                        by_leader.entry(st.leader.0).or_default().push(tp)
                    }
                    _ => leaderless.push(tp),
                }
            }
            remaining = leaderless;
            let marker = (
                job.producer_id,
                job.producer_epoch,
                job.commit,
                job.coordinator_epoch,
            );
            for (leader, tps) in by_leader {
                if leader == snapshot.local_broker.0 {
                    for (t, p) in tps {
                        let code = write_marker_here(&shard, t.clone(), p, marker).await;
                        if code != errors::NONE {
                            if attempts.is_multiple_of(50) {
                                log::warn!(
                                    "marker for producer {} on {t}-{p}: error {code}; retrying",
                                    job.producer_id
                                );
                            }
                            remaining.push((t, p));
                        }
                    }
                } else {
                    let Some(info) = snapshot
                        .brokers
                        .get(&crate::base::ids::BrokerId(leader))
                        .cloned()
                    else {
                        remaining.extend(tps);
                        continue;
                    };
                    let done = write_markers_remote(&shard, &info, &job, &tps).await;
                    remaining.extend(tps.into_iter().filter(|tp| !done.contains(tp)));
                }
            }
            if remaining.is_empty() {
                return true;
            }
            attempts += 1;
            crate::runtime::rt::sleep(MARKER_RETRY_BACKOFF).await;
        }
    })
}
