//! Topic changes through the metadata writer: creating topics and publishing a changed topic
//! map. Standalone, shard 0 holds the registry (the file is written off the shard); in cluster
//! mode the control thread writes ZooKeeper and publishes the snapshot. Either way the answer
//! comes once every shard has applied the new snapshot, so a request right after it finds the
//! topic's partitions open.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::base::errors;
use crate::base::limits;
use crate::cluster::metadata::{new_topic, TopicMeta};
use crate::config::valid_topic_name;
use crate::runtime::shard_table::ShardId;
use crate::shard::Shard;

/// Persists `change` through the registry and waits until every shard has applied the new
/// snapshot (opening partitions it now owns, applying changed topic configs). Runs on shard 0;
/// the caller holds `registry_gate`, so snapshots reach shards in order.
pub async fn publish(
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
        let req = crate::cluster::control_api::ControlRequest::ApplyTopics {
            before,
            after,
            reply,
        };
        if control.tx.send_async(req).await.is_err() {
            return Err((errors::NOT_CONTROLLER, "control thread stopped".into()));
        }
        return crate::runtime::rt::recv_cross(&rx)
            .await
            .unwrap_or_else(|_| Err((errors::NOT_CONTROLLER, "control thread stopped".into())));
    }
    let Some(registry) = s0.registry.as_ref() else {
        return Err((errors::NOT_CONTROLLER, "not the metadata writer".into()));
    };
    // The registry borrow ends before any await; the file is made durable off the shard.
    let update = registry.borrow().prepare(change);
    let write = update.write.clone();
    let stored = crate::runtime::rt::blocking(move || write.store()).await;
    match stored {
        Ok(()) => {
            let snap = registry.borrow_mut().commit(update);
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
pub async fn publish_topics<T>(
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
/// its partitions, so that a produce right after the answer finds them. Each topic gets the
/// broker's default replication factor (see `MetadataSnapshot::default_replication_factor`).
pub async fn create_topics_in_registry(
    shard: &Rc<Shard>,
    specs: Vec<TopicSpec>,
    validate_only: bool,
) -> Vec<(String, CreateResult)> {
    let specs = specs.into_iter().map(|s| (s, -1)).collect();
    create_topics_replicated(shard, specs, validate_only).await
}

/// `create_topics_in_registry` with a replication factor per topic (-1: the broker default).
pub async fn create_topics_replicated(
    shard: &Rc<Shard>,
    specs: Vec<(TopicSpec, i16)>,
    validate_only: bool,
) -> Vec<(String, CreateResult)> {
    let names: Vec<String> = specs.iter().map(|(s, _)| s.name.clone()).collect();
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
    specs: Vec<(TopicSpec, i16)>,
    validate_only: bool,
) -> Vec<(String, CreateResult)> {
    if !s0.is_metadata_writer() {
        return specs
            .into_iter()
            .map(|(s, _)| {
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
    for (spec, requested_rf) in specs {
        let replication_factor = if requested_rf == -1 {
            snapshot.default_replication_factor(&s0.config, &spec.name)
        } else {
            requested_rf
        };
        let result = if let Err(msg) = snapshot.check_replication_factor(replication_factor) {
            Err((errors::INVALID_REPLICATION_FACTOR, msg))
        } else if !valid_topic_name(&spec.name) {
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
                    let t = Arc::new(TopicMeta {
                        replication_factor,
                        ..t
                    });
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
