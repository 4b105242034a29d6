//! CreateTopics, DeleteTopics, ListOffsets and InitProducerId, plus the fan-out helper the data
//! path handlers share (`scatter`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

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
use crate::config::{limits, valid_topic_name};
use crate::errors;
use crate::metadata::{new_topic, TopicMeta};
use crate::shard::Shard;
use crate::shard_table::ShardId;

/// Sends each shard its share of `items` in one call and returns the answers in item order.
/// `f` runs on the owning shard with that shard's items (in order) and returns one answer each.
/// If a shard cannot be reached, its items get `lost`.
pub async fn scatter<T, R, F, Fut>(
    shard: &Rc<Shard>,
    items: Vec<(ShardId, T)>,
    lost: R,
    f: F,
) -> Vec<R>
where
    T: Send + 'static,
    R: Send + Clone + 'static,
    F: Fn(Rc<Shard>, Vec<T>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Vec<R>> + 'static,
{
    let n = items.len();
    let mut by_shard: HashMap<ShardId, (Vec<usize>, Vec<T>)> = HashMap::new();
    for (i, (owner, item)) in items.into_iter().enumerate() {
        let e = by_shard.entry(owner).or_default();
        e.0.push(i);
        e.1.push(item);
    }
    let mut calls = Vec::with_capacity(by_shard.len());
    let mut local = None;
    for (owner, (idx, part)) in by_shard {
        if owner == shard.id {
            local = Some((idx, part));
            continue;
        }
        let me = shard.clone();
        let f = f.clone();
        calls.push((
            idx,
            crate::rt::spawn(async move { me.invoke_on(owner, move |s| f(s, part)).await }),
        ));
    }
    let mut out: Vec<Option<R>> = vec![None; n];
    if let Some((idx, part)) = local {
        let answers = f(shard.clone(), part).await;
        for (i, a) in idx.into_iter().zip(answers) {
            out[i] = Some(a);
        }
    }
    for (idx, call) in calls {
        if let Some(answers) = call.await {
            for (i, a) in idx.into_iter().zip(answers) {
                out[i] = Some(a);
            }
        }
    }
    out.into_iter()
        .map(|a| a.unwrap_or_else(|| lost.clone()))
        .collect()
}

/// `scatter` for work done one item at a time: `f` runs on each item's owning shard, in order.
pub async fn scatter_each<T, R, F, Fut>(
    shard: &Rc<Shard>,
    items: Vec<(ShardId, T)>,
    lost: R,
    f: F,
) -> Vec<R>
where
    T: Send + 'static,
    R: Send + Clone + 'static,
    F: Fn(Rc<Shard>, T) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = R> + 'static,
{
    scatter(shard, items, lost, move |s: Rc<Shard>, parts: Vec<T>| {
        let f = f.clone();
        async move {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                out.push(f(s.clone(), p).await);
            }
            out
        }
    })
    .await
}

/// Persists `change` through the registry and waits until every shard has applied the new
/// snapshot (opening partitions it now owns, applying changed topic configs). Runs on shard 0;
/// the caller holds `registry_gate`, so snapshots reach shards in order.
pub(super) async fn publish(
    s0: &Rc<Shard>,
    change: impl FnOnce(&mut BTreeMap<Arc<str>, Arc<TopicMeta>>),
) -> Result<(), (i16, String)> {
    if let Some(control) = s0.control.as_ref() {
        // Cluster mode: ZooKeeper is the source of truth. The control thread writes the
        // difference and publishes the resulting snapshot to every shard before replying.
        let before = s0.metadata().topics.clone();
        let mut after = before.clone();
        change(&mut after);
        let (reply, rx) = flume::bounded(1);
        let req = crate::control::ControlRequest::ApplyTopics {
            before,
            after,
            reply,
        };
        if control.tx.send_async(req).await.is_err() {
            return Err((errors::NOT_CONTROLLER, "control thread stopped".into()));
        }
        return crate::rt::recv_cross(&rx)
            .await
            .unwrap_or_else(|_| Err((errors::NOT_CONTROLLER, "control thread stopped".into())));
    }
    let Some(registry) = s0.registry.as_ref() else {
        return Err((errors::NOT_CONTROLLER, "not the metadata writer".into()));
    };
    // Bind first: the registry borrow must end before the broadcast awaits.
    let update = registry.borrow_mut().update(change);
    match update {
        Ok(snap) => {
            s0.invoke_on_all(move |s| {
                let snap = snap.clone();
                async move { s.apply_metadata(snap).await }
            })
            .await;
            Ok(())
        }
        Err(e) => {
            log::error!("cannot persist topic metadata: {e}");
            Err((errors::KAFKA_STORAGE_ERROR, e.to_string()))
        }
    }
}

/// Stores `topics` (new or changed) through the registry and publishes them; if that fails,
/// every result that had succeeded becomes the failure.
pub(super) async fn publish_topics<T>(
    s0: &Rc<Shard>,
    topics: &[Arc<TopicMeta>],
    results: Vec<Result<T, (i16, String)>>,
) -> Vec<Result<T, (i16, String)>> {
    match publish(s0, |map| {
        for t in topics {
            map.insert(t.name.clone(), t.clone());
        }
    })
    .await
    {
        Ok(()) => results,
        Err(f) => results
            .into_iter()
            .map(|r| r.and_then(|_| Err(f.clone())))
            .collect(),
    }
}

/// A topic to create, as requested.
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

pub type CreateResult = Result<Arc<TopicMeta>, (i16, String)>;

/// Creates topics through the metadata writer (shard 0) and waits until every shard has opened
/// its partitions, so that a produce right after the answer finds them.
pub async fn create_topics_in_registry(
    shard: &Rc<Shard>,
    specs: Vec<TopicSpec>,
    validate_only: bool,
) -> Vec<(String, CreateResult)> {
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let answer = shard
        .invoke_on(ShardId(0), move |s0| async move {
            registry_create(s0, specs, validate_only).await
        })
        .await;
    answer.unwrap_or_else(|| {
        names
            .into_iter()
            .map(|n| {
                (
                    n,
                    Err((errors::UNKNOWN_SERVER_ERROR, "shard 0 is gone".into())),
                )
            })
            .collect()
    })
}

async fn registry_create(
    s0: Rc<Shard>,
    specs: Vec<TopicSpec>,
    validate_only: bool,
) -> Vec<(String, CreateResult)> {
    if !s0.is_metadata_writer() {
        return specs
            .into_iter()
            .map(|s| {
                (
                    s.name,
                    Err((errors::NOT_COORDINATOR, "not the metadata writer".into())),
                )
            })
            .collect();
    }
    let _permit = s0.registry_gate.acquire_permit(1).await;
    let snapshot = s0.metadata();
    let mut results = Vec::with_capacity(specs.len());
    let mut created: Vec<Arc<TopicMeta>> = Vec::new();
    for spec in specs {
        let result = if !valid_topic_name(&spec.name) {
            Err((
                errors::INVALID_TOPIC_EXCEPTION,
                format!("invalid topic name {:?}", spec.name),
            ))
        } else if snapshot.topic(&spec.name).is_some()
            || created.iter().any(|t| *t.name == *spec.name)
        {
            Err((
                errors::TOPIC_ALREADY_EXISTS,
                format!("topic {} already exists", spec.name),
            ))
        } else if spec.partitions < 1 || spec.partitions > limits::PARTITIONS_PER_TOPIC_MAX {
            Err((
                errors::INVALID_PARTITIONS,
                format!(
                    "partitions must be 1..={}",
                    limits::PARTITIONS_PER_TOPIC_MAX
                ),
            ))
        } else {
            match new_topic(&s0.config, &spec.name, spec.partitions, spec.configs) {
                Ok(t) => {
                    let t = Arc::new(t);
                    created.push(t.clone());
                    Ok(t)
                }
                Err(e) => Err((errors::INVALID_CONFIG, e.to_string())),
            }
        };
        results.push((spec.name, result));
    }
    if validate_only || created.is_empty() {
        return results;
    }
    let names: Vec<String> = results.iter().map(|(n, _)| n.clone()).collect();
    let outcomes = results.into_iter().map(|(_, r)| r).collect();
    names
        .into_iter()
        .zip(publish_topics(&s0, &created, outcomes).await)
        .collect()
}

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
        // Standalone: one replica. -1 means "the broker default" (v4+).
        let rf_ok = t.replication_factor == -1 || t.replication_factor == 1;
        let partitions = if t.num_partitions == -1 {
            shard.config.num_partitions
        } else {
            t.num_partitions
        };
        if !t.assignments.is_empty() || !rf_ok {
            early.push(Some(
                CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(errors::INVALID_REPLICATION_FACTOR)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "a standalone broker has one replica per partition",
                    ))),
            ));
            continue;
        }
        early.push(None);
        specs.push(TopicSpec {
            name,
            partitions,
            configs,
        });
    }
    let mut results = create_topics_in_registry(shard, specs, req.validate_only)
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
                        .with_replication_factor(1),
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
}

pub async fn list_offsets(shard: &Rc<Shard>, version: i16, req: ListOffsetsRequest) -> Response {
    let snapshot = shard.metadata();
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
                items.push((owner, (name.to_string(), p.partition_index, p.timestamp)));
            }
        }
        shape.push((t.name.clone(), parts));
    }
    let lost = OffsetAnswer {
        error_code: errors::UNKNOWN_TOPIC_OR_PARTITION,
        timestamp: -1,
        offset: -1,
    };
    let answers = scatter_each(
        shard,
        items,
        lost,
        |s: Rc<Shard>, (topic, index, ts): (String, i32, i64)| async move {
            offset_lookup(&s, &topic, index, ts).await
        },
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
                        OffsetAnswer {
                            error_code: errors::UNKNOWN_TOPIC_OR_PARTITION,
                            timestamp: -1,
                            offset: -1,
                        }
                    };
                    // Fields a version lacks must keep their defaults, or encoding fails.
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(index)
                        .with_error_code(a.error_code)
                        .with_timestamp(a.timestamp)
                        .with_offset(a.offset)
                        .with_leader_epoch(if version >= 4 { 0 } else { -1 })
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

async fn offset_lookup(s: &Shard, topic: &str, index: i32, ts: i64) -> OffsetAnswer {
    let Some(p) = s.partition(topic, index) else {
        return OffsetAnswer {
            error_code: errors::UNKNOWN_TOPIC_OR_PARTITION,
            timestamp: -1,
            offset: -1,
        };
    };
    match ts {
        -2 => OffsetAnswer {
            error_code: errors::NONE,
            timestamp: -1,
            offset: p.log_start_offset(),
        },
        -1 => OffsetAnswer {
            error_code: errors::NONE,
            timestamp: -1,
            offset: p.high_watermark(),
        },
        ts if ts < 0 => OffsetAnswer {
            error_code: errors::UNSUPPORTED_VERSION,
            timestamp: -1,
            offset: -1,
        },
        ts => match p.log().offset_for_timestamp(ts).await {
            Ok(Some((offset, timestamp))) => OffsetAnswer {
                error_code: errors::NONE,
                timestamp,
                offset,
            },
            Ok(None) => OffsetAnswer {
                error_code: errors::NONE,
                timestamp: -1,
                offset: -1,
            },
            Err(e) => {
                log::error!("timestamp lookup in {topic}-{index}: {e}");
                OffsetAnswer {
                    error_code: errors::KAFKA_STORAGE_ERROR,
                    timestamp: -1,
                    offset: -1,
                }
            }
        },
    }
}

pub async fn init_producer_id(
    shard: &Rc<Shard>,
    version: i16,
    req: InitProducerIdRequest,
) -> Response {
    let _ = version;
    let base = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        // Transactions are not implemented; refuse rather than pretend.
        return Response::Message(ResponseKind::InitProducerId(
            base.with_error_code(errors::INVALID_TXN_STATE),
        ));
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
        .invoke_on(ShardId(0), |s0| async move {
            s0.registry
                .as_ref()
                .map(|r| r.borrow_mut().next_producer_id())
        })
        .await
        .flatten();
    let resp = match id {
        Some(Ok(id)) => base
            .with_error_code(errors::NONE)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Some(Err(e)) => {
            log::error!("cannot allocate a producer id: {e}");
            base.with_error_code(errors::KAFKA_STORAGE_ERROR)
        }
        None => base.with_error_code(errors::COORDINATOR_NOT_AVAILABLE),
    };
    Response::Message(ResponseKind::InitProducerId(resp))
}
