//! CreateTopics, DeleteTopics, ListOffsets and InitProducerId.
//!
//! Topic changes go through shard 0 (the registry standalone, the control thread in cluster
//! mode); leadership decisions read the owning shard's snapshot.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
    ProducerId, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::metadata_api::topic_uuid;
use super::Response;
use crate::base::errors;
// `ids::ProducerId` is the broker's; `ProducerId` in this file is the wire's.
use crate::base::ids;
use crate::runtime::shard_table::ShardId;
use crate::shard::scatter::scatter_each;
use crate::shard::topics::{create_topics_replicated, publish, TopicSpec};
use crate::shard::Shard;

pub async fn create_topics(shard: &Rc<Shard>, version: i16, req: CreateTopicsRequest) -> Response {
    let mut early: Vec<Option<CreatableTopicResult>> = Vec::new();
    let mut specs = Vec::new();
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(v) = &c.value {
                configs.insert(c.name.as_str().to_string(), v.as_str().to_string());
            }
        }
        let partitions = if t.num_partitions == -1 {
            shard.config.num_partitions
        } else {
            t.num_partitions
        };
        // Replicas are always placed by the metadata writer (Kafka's placement rule).
        if !t.assignments.is_empty() {
            early.push(Some(
                CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(errors::INVALID_REQUEST)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "explicit replica assignments are not supported: give a partition \
                         count and a replication factor instead",
                    ))),
            ));
            continue;
        }
        early.push(None);
        // -1 (v4+) means the broker default; checked against the live brokers on shard 0.
        specs.push((
            TopicSpec {
                name,
                partitions,
                configs,
            },
            t.replication_factor,
        ));
    }
    let mut results = create_topics_replicated(shard, specs, req.validate_only)
        .await
        .into_iter();
    let topics = early
        .into_iter()
        .map(|e| match e {
            Some(r) => r,
            None => {
                let (name, r) = results.next().expect("one result per spec");
                let base = CreatableTopicResult::default()
                    .with_name(TopicName(StrBytes::from_string(name)));
                match r {
                    Ok(t) if version >= 5 => base
                        .with_topic_id(if version >= 7 {
                            topic_uuid(&t)
                        } else {
                            uuid::Uuid::nil()
                        })
                        .with_error_code(errors::NONE)
                        .with_num_partitions(t.partitions)
                        .with_replication_factor(t.replication_factor),
                    Ok(_) => base.with_error_code(errors::NONE),
                    Err((code, msg)) => base
                        .with_error_code(code)
                        .with_error_message(Some(StrBytes::from_string(msg))),
                }
            }
        })
        .collect();
    Response::Message(ResponseKind::CreateTopics(
        CreateTopicsResponse::default().with_topics(topics),
    ))
}

pub async fn delete_topics(shard: &Rc<Shard>, version: i16, req: DeleteTopicsRequest) -> Response {
    let mut names: Vec<String> = req
        .topic_names
        .iter()
        .map(|n| n.0.as_str().to_string())
        .collect();
    let snapshot = shard.metadata();
    for t in &req.topics {
        match &t.name {
            Some(n) => names.push(n.0.as_str().to_string()),
            None => {
                if let Some(m) = snapshot.topic_by_id(t.topic_id.as_bytes()) {
                    names.push(m.name.to_string());
                }
            }
        }
    }
    let answer = shard
        .invoke_on(ShardId(0), move |s0| async move {
            registry_delete(s0, names).await
        })
        .await
        .unwrap_or_default();
    let responses = answer
        .into_iter()
        .map(|(name, id, code)| {
            DeletableTopicResult::default()
                .with_name(Some(TopicName(StrBytes::from_string(name))))
                .with_topic_id(if version >= 6 {
                    uuid::Uuid::from_bytes(id)
                } else {
                    uuid::Uuid::nil()
                })
                .with_error_code(code)
        })
        .collect();
    Response::Message(ResponseKind::DeleteTopics(
        DeleteTopicsResponse::default().with_responses(responses),
    ))
}

async fn registry_delete(s0: Rc<Shard>, names: Vec<String>) -> Vec<(String, [u8; 16], i16)> {
    if !s0.is_metadata_writer() {
        return names
            .into_iter()
            .map(|n| (n, [0; 16], errors::NOT_COORDINATOR))
            .collect();
    }
    let _permit = s0.registry_gate.acquire_permit(1).await;
    let snapshot = s0.metadata();
    let mut out = Vec::new();
    let mut doomed = Vec::new();
    for n in names {
        match snapshot.topic(&n) {
            Some(t) if t.is_internal() => out.push((n, t.id, errors::INVALID_REQUEST)),
            Some(t) => {
                doomed.push(t.name.clone());
                out.push((n, t.id, errors::NONE));
            }
            None => out.push((n, [0; 16], errors::UNKNOWN_TOPIC_OR_PARTITION)),
        }
    }
    if doomed.is_empty() {
        return out;
    }
    let removed = publish(&s0, |topics| {
        for d in &doomed {
            topics.remove(d);
        }
    })
    .await;
    if removed.is_err() {
        for o in &mut out {
            if o.2 == errors::NONE {
                o.2 = errors::KAFKA_STORAGE_ERROR;
            }
        }
    }
    out
}

#[derive(Clone)]
struct OffsetAnswer {
    error_code: i16,
    timestamp: i64,
    offset: i64,
    leader_epoch: i32,
}

impl OffsetAnswer {
    fn error(error_code: i16) -> OffsetAnswer {
        OffsetAnswer {
            error_code,
            timestamp: -1,
            offset: -1,
            leader_epoch: -1,
        }
    }
}

/// ListOffsets `replica_id` of a debugging tool, the only caller Kafka lets read a follower.
const DEBUGGING_REPLICA_ID: i32 = -2;

/// One ListOffsets partition, as its owning shard needs it.
struct OffsetQuery {
    topic: String,
    index: i32,
    timestamp: i64,
    current_leader_epoch: i32,
    leader_only: bool,
    /// READ_COMMITTED (1): latest is the last stable offset.
    read_committed: bool,
}

pub async fn list_offsets(shard: &Rc<Shard>, version: i16, req: ListOffsetsRequest) -> Response {
    let snapshot = shard.metadata();
    let leader_only = req.replica_id.0 != DEBUGGING_REPLICA_ID;
    let mut items = Vec::new();
    let mut shape = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str();
        let known = snapshot.topic(name).cloned();
        let mut parts = Vec::new();
        for p in &t.partitions {
            let exists = known
                .as_ref()
                .is_some_and(|k| p.partition_index >= 0 && p.partition_index < k.partitions);
            parts.push((p.partition_index, exists));
            if exists {
                let owner = shard.owner(name, p.partition_index);
                items.push((
                    owner,
                    OffsetQuery {
                        topic: name.to_string(),
                        index: p.partition_index,
                        timestamp: p.timestamp,
                        // v4+; the codec leaves -1 (unknown) for older versions.
                        current_leader_epoch: p.current_leader_epoch,
                        leader_only,
                        // v2+; older requests decode as 0.
                        read_committed: req.isolation_level == 1,
                    },
                ));
            }
        }
        shape.push((t.name.clone(), parts));
    }
    let lost = OffsetAnswer::error(errors::UNKNOWN_TOPIC_OR_PARTITION);
    let answers = scatter_each(
        shard,
        items,
        lost,
        |s: Rc<Shard>, q: OffsetQuery| async move { offset_lookup(&s, q).await },
    )
    .await;
    let mut answers = answers.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, exists)| {
                    let a = if exists {
                        answers.next().expect("one answer per item")
                    } else {
                        OffsetAnswer::error(errors::UNKNOWN_TOPIC_OR_PARTITION)
                    };
                    // Fields a version lacks must keep their defaults, or encoding fails.
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(index)
                        .with_error_code(a.error_code)
                        .with_timestamp(a.timestamp)
                        .with_offset(a.offset)
                        .with_leader_epoch(if version >= 4 { a.leader_epoch } else { -1 })
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    Response::Message(ResponseKind::ListOffsets(
        ListOffsetsResponse::default().with_topics(topics),
    ))
}

/// On the owning shard: answers one ListOffsets partition. Only the leader in this shard's
/// snapshot answers (a follower's log may be behind or about to be truncated), unless a
/// debugging tool asked; a client that knows a different leader epoch is told so.
async fn offset_lookup(s: &Shard, q: OffsetQuery) -> OffsetAnswer {
    let OffsetQuery {
        topic,
        index,
        timestamp,
        current_leader_epoch,
        leader_only,
        read_committed,
    } = q;
    let snapshot = s.metadata();
    let Some(state) = snapshot.partition_state(&topic, index) else {
        // Known to the caller's snapshot, not yet placed in this one.
        return OffsetAnswer::error(errors::NOT_LEADER_OR_FOLLOWER);
    };
    let here = if leader_only {
        state.leader == snapshot.local_broker
    } else {
        state.replicas.contains(&snapshot.local_broker)
    };
    if !here {
        return OffsetAnswer::error(errors::NOT_LEADER_OR_FOLLOWER);
    }
    if let Err(code) = state.check_leader_epoch(current_leader_epoch) {
        return OffsetAnswer::error(code);
    }
    let leader_epoch = state.leader_epoch;
    let Some(p) = s.partition(&topic, index) else {
        return OffsetAnswer::error(errors::UNKNOWN_TOPIC_OR_PARTITION);
    };
    let found = |offset: i64, timestamp: i64| OffsetAnswer {
        error_code: errors::NONE,
        timestamp,
        offset,
        leader_epoch,
    };
    match timestamp {
        -2 => found(p.log_start_offset(), -1),
        -1 if read_committed => found(p.last_stable_offset(), -1),
        -1 => found(p.high_watermark(), -1),
        ts if ts < 0 => OffsetAnswer::error(errors::UNSUPPORTED_VERSION),
        ts => match p.log().offset_for_timestamp(ts).await {
            Ok(Some((offset, timestamp))) => found(offset, timestamp),
            // Nothing at or after the timestamp: Kafka leaves the epoch unknown too.
            Ok(None) => OffsetAnswer::error(errors::NONE),
            Err(e) => {
                log::error!("timestamp lookup in {topic}-{index}: {e}");
                OffsetAnswer::error(errors::KAFKA_STORAGE_ERROR)
            }
        },
    }
}

pub async fn init_producer_id(
    shard: &Rc<Shard>,
    version: i16,
    req: InitProducerIdRequest,
) -> Response {
    let base = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = req.transactional_id.as_ref().map(|t| t.0.to_string()) {
        return super::txn::init_producer_id(shard, version, req, id).await;
    }
    // A client re-initialising an existing idempotent producer (KIP-360) gets its epoch bumped.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 {
        let epoch = req.producer_epoch.checked_add(1);
        if let Some(epoch) = epoch {
            return Response::Message(ResponseKind::InitProducerId(
                base.with_error_code(errors::NONE)
                    .with_producer_id(req.producer_id)
                    .with_producer_epoch(epoch),
            ));
        }
    }
    let id = shard
        .invoke_on(
            ShardId(0),
            |s0| async move { allocate_producer_id(&s0).await },
        )
        .await
        .unwrap_or(Err(errors::COORDINATOR_NOT_AVAILABLE));
    let resp = match id {
        Ok(id) => base
            .with_error_code(errors::NONE)
            .with_producer_id(id.into())
            .with_producer_epoch(0),
        Err(code) => base.with_error_code(code),
    };
    Response::Message(ResponseKind::InitProducerId(resp))
}

/// Producer ids shard 0 asks the control thread for at a time (cluster mode).
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Cluster mode, on shard 0: the producer id block obtained from the control thread.
#[derive(Clone, Copy, Default)]
struct ProducerIdBlock {
    next: i64,
    end: i64,
}

impl ProducerIdBlock {
    fn take(&mut self) -> Option<ids::ProducerId> {
        (self.next < self.end).then(|| {
            self.next += 1;
            ids::ProducerId(self.next - 1)
        })
    }
}

thread_local! {
    static PRODUCER_IDS: std::cell::Cell<ProducerIdBlock> =
        std::cell::Cell::new(ProducerIdBlock::default());
    /// One block request in flight at a time: the others wait and take from the new block.
    static PRODUCER_ID_GATE: Rc<crate::runtime::rt::Semaphore> = Rc::new(crate::runtime::rt::Semaphore::new(1));
}

fn take_producer_id() -> Option<ids::ProducerId> {
    PRODUCER_IDS.with(|c| {
        let mut b = c.get();
        let id = b.take();
        c.set(b);
        id
    })
}

/// On shard 0: a producer id never handed out before, from the registry (standalone) or from
/// cluster-wide blocks reserved in ZooKeeper by the control thread (cluster mode).
pub(super) async fn allocate_producer_id(s0: &Shard) -> Result<ids::ProducerId, i16> {
    if let Some(registry) = s0.registry.as_ref() {
        if let Some(id) = registry.borrow_mut().take_producer_id() {
            return Ok(id);
        }
        let gate = PRODUCER_ID_GATE.with(Rc::clone);
        let _permit = gate.acquire_permit(1).await;
        // Whoever held the gate before may have reserved a block meanwhile.
        if let Some(id) = registry.borrow_mut().take_producer_id() {
            return Ok(id);
        }
        let write = registry.borrow().producer_id_reservation();
        let stored = {
            let write = write.clone();
            crate::runtime::rt::blocking(move || write.store()).await
        };
        if let Err(e) = stored {
            log::error!("cannot allocate a producer id: {e}");
            return Err(errors::KAFKA_STORAGE_ERROR);
        }
        let mut r = registry.borrow_mut();
        r.producer_ids_reserved(&write);
        return r.take_producer_id().ok_or(errors::KAFKA_STORAGE_ERROR);
    }
    let Some(control) = s0.control.as_ref() else {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    };
    if let Some(id) = take_producer_id() {
        return Ok(id);
    }
    let gate = PRODUCER_ID_GATE.with(Rc::clone);
    let _permit = gate.acquire_permit(1).await;
    // Whoever held the gate before may have refilled the block.
    if let Some(id) = take_producer_id() {
        return Ok(id);
    }
    let (reply, rx) = flume::bounded(1);
    let req = crate::cluster::control_api::ControlRequest::ProducerIdBlock {
        count: PRODUCER_ID_BLOCK,
        reply,
    };
    if control.tx.send_async(req).await.is_err() {
        return Err(errors::COORDINATOR_NOT_AVAILABLE);
    }
    match crate::runtime::rt::recv_cross(&rx).await {
        Ok(Ok(first)) => {
            let mut block = ProducerIdBlock {
                next: first.0,
                end: first.0.saturating_add(PRODUCER_ID_BLOCK),
            };
            let id = block.take();
            PRODUCER_IDS.with(|c| c.set(block));
            id.ok_or(errors::COORDINATOR_NOT_AVAILABLE)
        }
        Ok(Err(e)) => {
            // Retriable for the client: it asks again, and so do we.
            log::warn!("cannot reserve producer ids: {e}");
            Err(errors::COORDINATOR_NOT_AVAILABLE)
        }
        Err(_) => Err(errors::COORDINATOR_NOT_AVAILABLE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_id_block_hands_out_each_id_once() {
        let mut b = ProducerIdBlock::default();
        assert_eq!(b.take(), None);
        b = ProducerIdBlock {
            next: 5000,
            end: 5002,
        };
        assert_eq!(b.take(), Some(ids::ProducerId(5000)));
        assert_eq!(b.take(), Some(ids::ProducerId(5001)));
        assert_eq!(b.take(), None);
        assert_eq!(b.take(), None);
    }
}
