//! CreatePartitions, DeleteRecords, DescribeCluster and DescribeLogDirs. Topic changes go
//! through `admin::publish_topics` (the "persist a topic change, then wait until every shard
//! has applied it" step shared with `configs`).
//!
//! Brokers, the controller and replica placement come from the shard's snapshot (standalone:
//! this broker is the controller and the only broker, every partition has one replica here).
//! All of a broker's data lives in one log directory (`log.dirs`).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, DeleteRecordsRequest,
    DeleteRecordsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Response;
use crate::base::errors;
use crate::base::errors::NOT_CONTROLLER;
use crate::base::limits;
use crate::cluster::metadata::TopicMeta;
use crate::runtime::shard_table::ShardId;
use crate::shard::scatter::{scatter, scatter_each};
use crate::shard::topics::publish_topics;
use crate::shard::Shard;

/// Longest wait of DeleteRecords for the followers, whatever the request's timeout says.
const DELETE_RECORDS_WAIT_MAX: Duration = Duration::from_secs(60);
/// How often DeleteRecords looks at the followers' log start offsets.
const LOW_WATERMARK_POLL: Duration = Duration::from_millis(10);

/// DescribeCluster `endpoint_type` of a broker listener.
const ENDPOINT_BROKER: i8 = 1;

/// What a DescribeCluster caller may do (no ACLs): Kafka's AclOperation bits CREATE 5, ALTER 7,
/// DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12,
/// as `metadata_api` reports them for Metadata.
const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// A failure as a response carries it.
pub(super) type Failure = (i16, String);

fn name_of(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One topic of a CreatePartitions request, as shard 0 needs it.
struct GrowSpec {
    name: String,
    count: i32,
    /// Replica lists of the new partitions, if the client chose them.
    assignments: Option<Vec<Vec<i32>>>,
}

pub async fn create_partitions(
    shard: &Rc<Shard>,
    _version: i16,
    req: CreatePartitionsRequest,
) -> Response {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for t in &req.topics {
        *seen.entry(t.name.0.as_str()).or_default() += 1;
    }
    // Per topic in request order: an answer decided here, or None (asked of shard 0).
    let mut early: Vec<(TopicName, Option<Failure>)> = Vec::new();
    let mut specs = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str();
        if seen.get(name).copied().unwrap_or(0) > 1 {
            early.push((
                t.name.clone(),
                Some((
                    errors::INVALID_REQUEST,
                    "Duplicate topic in request.".into(),
                )),
            ));
            continue;
        }
        early.push((t.name.clone(), None));
        specs.push(GrowSpec {
            name: name.to_string(),
            count: t.count,
            assignments: t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            }),
        });
    }
    let n = specs.len();
    let validate_only = req.validate_only;
    let answers = shard
        .invoke_on(ShardId(0), move |s0| async move {
            registry_grow(s0, specs, validate_only).await
        })
        .await
        .unwrap_or_else(|| vec![Err((errors::UNKNOWN_SERVER_ERROR, "shard 0 is gone".into())); n]);
    let mut answers = answers.into_iter();
    let results = early
        .into_iter()
        .map(|(name, decided)| {
            let r = match decided {
                Some(f) => Err(f),
                None => answers.next().unwrap_or(Err((
                    errors::UNKNOWN_SERVER_ERROR,
                    "no answer for this topic".into(),
                ))),
            };
            let base = CreatePartitionsTopicResult::default().with_name(name);
            match r {
                Ok(()) => base.with_error_code(errors::NONE),
                Err((code, msg)) => base
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(msg))),
            }
        })
        .collect();
    Response::Message(ResponseKind::CreatePartitions(
        CreatePartitionsResponse::default().with_results(results),
    ))
}

/// Checks client-chosen replica lists for `added` new partitions: standalone, each must be
/// exactly this broker. Kafka answers INVALID_REPLICA_ASSIGNMENT for all of these.
fn check_assignments(assignments: &[Vec<i32>], added: i32, me: i32) -> Result<(), Failure> {
    let bad = |m: String| Err((errors::INVALID_REPLICA_ASSIGNMENT, m));
    if assignments.len() as i64 != added as i64 {
        return bad(format!(
            "Increasing the number of partitions by {added} but {} assignments provided.",
            assignments.len()
        ));
    }
    for replicas in assignments {
        if replicas.is_empty() {
            return bad("The manual partition assignment includes an empty replica list.".into());
        }
        let unknown: Vec<String> = replicas
            .iter()
            .filter(|b| **b != me)
            .map(|b| b.to_string())
            .collect();
        if !unknown.is_empty() {
            return bad(format!(
                "Unknown broker(s) in replica assignment: {} (this standalone broker is {me})",
                unknown.join(", ")
            ));
        }
        if replicas.len() > 1 {
            return bad(format!(
                "Duplicate brokers not allowed in replica assignment: {replicas:?}"
            ));
        }
    }
    Ok(())
}

async fn registry_grow(
    s0: Rc<Shard>,
    specs: Vec<GrowSpec>,
    validate_only: bool,
) -> Vec<Result<(), Failure>> {
    if !s0.is_metadata_writer() {
        return vec![Err((NOT_CONTROLLER, "not the metadata writer".into())); specs.len()];
    }
    let _permit = s0.registry_gate.acquire_permit(1).await;
    let snapshot = s0.metadata();
    let me = s0.config.broker_id;
    let mut grown: Vec<Arc<TopicMeta>> = Vec::new();
    let mut results = Vec::with_capacity(specs.len());
    for spec in specs {
        let current = snapshot.topic(&spec.name);
        let r = match current {
            None => Err((
                errors::UNKNOWN_TOPIC_OR_PARTITION,
                format!("The topic '{}' does not exist.", spec.name),
            )),
            // Groups are mapped to offsets partitions by the partition count: growing the
            // topic would lose every group's committed offsets.
            Some(t) if t.is_internal() => Err((
                errors::INVALID_REQUEST,
                format!(
                    "cannot add partitions to internal topic {}: groups are mapped to its \
                     partitions by their number (offsets.topic.num.partitions)",
                    t.name
                ),
            )),
            Some(t) if spec.count < t.partitions => Err((
                errors::INVALID_PARTITIONS,
                format!(
                    "Topic currently has {} partitions, which is higher than the requested {}.",
                    t.partitions, spec.count
                ),
            )),
            Some(t) if spec.count == t.partitions => Err((
                errors::INVALID_PARTITIONS,
                format!("Topic already has {} partitions.", t.partitions),
            )),
            Some(_) if spec.count > limits::PARTITIONS_PER_TOPIC_MAX => Err((
                errors::INVALID_PARTITIONS,
                format!(
                    "A topic may have at most {} partitions; {} requested.",
                    limits::PARTITIONS_PER_TOPIC_MAX,
                    spec.count
                ),
            )),
            // Cluster mode: the metadata writer places new partitions (keeping the topic's
            // replication factor), so it needs that many live brokers and no manual lists.
            Some(_) if snapshot.cluster_mode && spec.assignments.is_some() => Err((
                errors::INVALID_REQUEST,
                "explicit replica assignments are not supported: new partitions are placed \
                 on the live brokers"
                    .into(),
            )),
            Some(t)
                if snapshot.cluster_mode
                    && t.replication_factor as usize > snapshot.brokers.len() =>
            {
                Err((
                    errors::INVALID_REPLICATION_FACTOR,
                    format!(
                        "Replication factor: {} larger than available brokers: {}.",
                        t.replication_factor,
                        snapshot.brokers.len()
                    ),
                ))
            }
            Some(t) => spec
                .assignments
                .as_deref()
                .map_or(Ok(()), |a| {
                    check_assignments(a, spec.count - t.partitions, me)
                })
                .map(|()| {
                    grown.push(Arc::new(TopicMeta {
                        partitions: spec.count,
                        ..(**t).clone()
                    }));
                }),
        };
        results.push(r);
    }
    if validate_only || grown.is_empty() {
        return results;
    }
    publish_topics(&s0, &grown, results).await
}

pub async fn delete_records(
    shard: &Rc<Shard>,
    _version: i16,
    req: DeleteRecordsRequest,
) -> Response {
    let snapshot = shard.metadata();
    let mut items = Vec::new();
    // Per topic: its partitions, each with an error decided here or None (asked of the owner).
    type Partitions = Vec<(i32, Option<i16>)>;
    let mut shape: Vec<(TopicName, Partitions)> = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str();
        let meta = snapshot.topic(name);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let decided = match meta {
                Some(m) if p.partition_index >= 0 && p.partition_index < m.partitions => {
                    if m.is_internal() {
                        // As Kafka: records of internal topics are not for clients to delete.
                        Some(errors::INVALID_TOPIC_EXCEPTION)
                    } else {
                        let owner = shard.owner(name, p.partition_index);
                        items.push((owner, (name.to_string(), p.partition_index, p.offset)));
                        None
                    }
                }
                _ => Some(errors::UNKNOWN_TOPIC_OR_PARTITION),
            };
            parts.push((p.partition_index, decided));
        }
        shape.push((t.name.clone(), parts));
    }
    let timeout = Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0))
        .min(DELETE_RECORDS_WAIT_MAX);
    let answers = scatter_each(
        shard,
        items,
        (errors::NOT_LEADER_OR_FOLLOWER, -1i64),
        move |s: Rc<Shard>, (topic, index, offset): (String, i32, i64)| async move {
            delete_before(&s, &topic, index, offset, timeout).await
        },
    )
    .await;
    let mut answers = answers.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, decided)| {
                    let (code, low) = match decided {
                        Some(code) => (code, -1),
                        None => answers.next().unwrap_or((errors::UNKNOWN_SERVER_ERROR, -1)),
                    };
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(code)
                        .with_low_watermark(low)
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    Response::Message(ResponseKind::DeleteRecords(
        DeleteRecordsResponse::default().with_topics(topics),
    ))
}

/// On the owning shard: moves the log start offset to `offset` (-1 = the high watermark).
/// Only the leader (in this shard's snapshot, holding a valid lease) does; followers learn the
/// new log start offset from its fetch responses and report theirs in their next fetch. As in
/// Kafka, the answer waits (at most `timeout`, then REQUEST_TIMED_OUT) until the low watermark
/// (smallest log start over the leader and its in-sync followers) reaches `offset`, so a
/// failover cannot bring deleted records back. Returns (error code, low watermark).
async fn delete_before(
    s: &Shard,
    topic: &str,
    index: i32,
    offset: i64,
    timeout: Duration,
) -> (i16, i64) {
    if !s.metadata().leads(topic, index) || !s.lease.valid() {
        return (errors::NOT_LEADER_OR_FOLLOWER, -1);
    }
    let Some(p) = s.partition(topic, index) else {
        return (errors::UNKNOWN_TOPIC_OR_PARTITION, -1);
    };
    let hw = p.high_watermark();
    let offset = if offset == -1 { hw } else { offset };
    if offset < 0 || offset > hw {
        return (errors::OFFSET_OUT_OF_RANGE, -1);
    }
    if let Err(e) = p.log().delete_records_before(offset).await {
        log::error!("DeleteRecords of {topic}-{index} before {offset}: {e}");
        return (e.kafka_code(), -1);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let low = p.low_watermark();
        if low >= offset {
            return (errors::NONE, low);
        }
        if !s.metadata().leads(topic, index) {
            return (errors::NOT_LEADER_OR_FOLLOWER, -1);
        }
        if Instant::now() >= deadline {
            return (errors::REQUEST_TIMED_OUT, low);
        }
        crate::runtime::rt::sleep(LOW_WATERMARK_POLL).await;
    }
}

pub async fn describe_cluster(
    shard: &Rc<Shard>,
    version: i16,
    req: DescribeClusterRequest,
) -> Response {
    let snapshot = shard.metadata();
    let base = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(snapshot.cluster_id.clone()))
        .with_controller_id(snapshot.controller_id.into());
    // v1+: a client looking for controller endpoints has the wrong address.
    if version >= 1 && req.endpoint_type != ENDPOINT_BROKER {
        return Response::Message(ResponseKind::DescribeCluster(
            base.with_controller_id(BrokerId(-1))
                .with_error_code(errors::MISMATCHED_ENDPOINT_TYPE)
                .with_error_message(Some(StrBytes::from_string(format!(
                    "The request was sent to an endpoint of type BROKER, but endpoint type {} \
                     was asked for.",
                    req.endpoint_type
                )))),
        ));
    }
    let brokers = snapshot
        .brokers
        .values()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(b.id.into())
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port))
                .with_rack(None)
        })
        .collect();
    Response::Message(ResponseKind::DescribeCluster(
        base.with_error_code(errors::NONE)
            .with_brokers(brokers)
            .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
                CLUSTER_OPERATIONS
            } else {
                i32::MIN
            }),
    ))
}

pub async fn describe_log_dirs(
    shard: &Rc<Shard>,
    version: i16,
    req: DescribeLogDirsRequest,
) -> Response {
    let snapshot = shard.metadata();
    // The partitions to describe: all (null), or those requested that exist (as Kafka, unknown
    // ones are left out); either way only replicas stored on this broker.
    let mut wanted: Vec<(String, i32)> = Vec::new();
    match &req.topics {
        None => {
            for t in snapshot.topics.values() {
                wanted.extend(
                    (0..t.partitions)
                        .filter(|i| snapshot.hosts_replica(&t.name, *i))
                        .map(|i| (t.name.to_string(), i)),
                );
            }
        }
        Some(list) => {
            for t in list {
                let Some(meta) = snapshot.topic(t.topic.0.as_str()) else {
                    continue;
                };
                for &i in &t.partitions {
                    let pair = (meta.name.to_string(), i);
                    if (0..meta.partitions).contains(&i)
                        && snapshot.hosts_replica(&meta.name, i)
                        && !wanted.contains(&pair)
                    {
                        wanted.push(pair);
                    }
                }
            }
        }
    }
    let items = wanted
        .iter()
        .map(|(t, i)| (shard.owner(t, *i), (t.clone(), *i)))
        .collect();
    let sizes = scatter(
        shard,
        items,
        None,
        |s: Rc<Shard>, parts: Vec<(String, i32)>| async move {
            parts
                .into_iter()
                .map(|(t, i)| {
                    s.partition(&t, i)
                        .map(|p| i64::try_from(p.log().size_bytes()).unwrap_or(i64::MAX))
                })
                .collect()
        },
    )
    .await;
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for ((topic, index), size) in wanted.into_iter().zip(sizes) {
        // A partition that is not open (it failed to open) has no size to report.
        let Some(size) = size else { continue };
        by_topic.entry(topic).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(index)
                .with_partition_size(size)
                .with_offset_lag(0)
                .with_is_future_key(false),
        );
    }
    let topics = by_topic
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_by_key(|p| p.partition_index);
            DescribeLogDirsTopic::default()
                .with_name(name_of(&name))
                .with_partitions(partitions)
        })
        .collect();
    let dir = std::path::absolute(&shard.config.data_dir)
        .unwrap_or_else(|_| shard.config.data_dir.clone());
    let mut result = DescribeLogDirsResult::default()
        .with_error_code(errors::NONE)
        .with_log_dir(StrBytes::from_string(dir.display().to_string()))
        .with_topics(topics);
    // Fields a version lacks must keep their defaults (-1), or encoding fails.
    if version >= 4 {
        if let Some((total, usable)) = disk_space(&dir) {
            result = result.with_total_bytes(total).with_usable_bytes(usable);
        }
    }
    Response::Message(ResponseKind::DescribeLogDirs(
        DescribeLogDirsResponse::default()
            .with_error_code(errors::NONE)
            .with_results(vec![result]),
    ))
}

/// (total, usable) bytes of the file system holding `path`. statvfs(2) reads file system
/// counters without touching the disk, so it is called on the shard directly.
fn disk_space(path: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs for the call's duration.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    let bytes = |blocks: u64| i64::try_from(blocks.saturating_mul(frsize)).unwrap_or(i64::MAX);
    Some((bytes(st.f_blocks as u64), bytes(st.f_bavail as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_must_name_only_this_broker() {
        assert!(check_assignments(&[vec![0], vec![0]], 2, 0).is_ok());
        let code = |r: Result<(), Failure>| r.err().map(|e| e.0);
        assert_eq!(
            code(check_assignments(&[vec![0]], 2, 0)),
            Some(errors::INVALID_REPLICA_ASSIGNMENT)
        );
        assert_eq!(
            code(check_assignments(&[vec![1]], 1, 0)),
            Some(errors::INVALID_REPLICA_ASSIGNMENT)
        );
        assert_eq!(
            code(check_assignments(&[vec![0, 0]], 1, 0)),
            Some(errors::INVALID_REPLICA_ASSIGNMENT)
        );
        assert_eq!(
            code(check_assignments(&[vec![]], 1, 0)),
            Some(errors::INVALID_REPLICA_ASSIGNMENT)
        );
    }

    #[test]
    fn disk_space_of_an_existing_directory() {
        let (total, usable) = disk_space(std::path::Path::new("/")).expect("statvfs of /");
        assert!(total > 0 && usable >= 0 && usable <= total);
        assert!(disk_space(std::path::Path::new("/no/such/dir")).is_none());
    }
}
