//! Metadata: brokers, topics and partition leaders, with auto topic creation.
//!
//! Everything comes from this shard's snapshot: live brokers, the controller, and each
//! partition's replicas, leader, epoch and ISR. A standalone snapshot names this broker as the
//! only node, leader and only ISR member of everything, so both modes share this code.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::Response;
use crate::base::errors;
// The broker's id type; `BrokerId` in this file is the wire's.
use crate::base::ids::BrokerId as Broker;
use crate::cluster::metadata::{MetadataSnapshot, TopicMeta, CONSUMER_OFFSETS_TOPIC, NO_LEADER};
use crate::config::valid_topic_name;
use crate::shard::topics::{create_topics_in_registry, TopicSpec};
use crate::shard::Shard;

/// No ACLs here: when asked, report every operation Kafka defines for the resource as allowed.
/// Bits are Kafka's AclOperation codes (READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7,
/// DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12).
/// `i32::MIN` is Kafka's "not requested".
const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
const CLUSTER_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

pub fn topic_uuid(t: &TopicMeta) -> Uuid {
    Uuid::from_bytes(t.id)
}

/// One partition as Metadata reports it. Kafka answers a partition without a live leader with
/// LEADER_NOT_AVAILABLE and leader -1, keeping its epoch, replicas and ISR; a topic whose
/// states the metadata writer has not filled in yet (just created) is answered the same way.
fn partition_entry(
    snapshot: &MetadataSnapshot,
    version: i16,
    t: &TopicMeta,
    index: i32,
) -> MetadataResponsePartition {
    let ids = |v: &[Broker]| v.iter().copied().map(BrokerId::from).collect::<Vec<_>>();
    let base = MetadataResponsePartition::default().with_partition_index(index);
    let Some(state) = t.state(index) else {
        return base
            .with_error_code(errors::LEADER_NOT_AVAILABLE)
            .with_leader_id(NO_LEADER.into())
            .with_leader_epoch(-1);
    };
    let leader = if state.leader != NO_LEADER && snapshot.is_live(state.leader) {
        state.leader
    } else {
        NO_LEADER
    };
    let (replicas, isr) = if version == 0 {
        // v0 clients expect only brokers they can reach (Kafka filters them for v0 only).
        let live = |v: &[Broker]| -> Vec<Broker> {
            v.iter().copied().filter(|b| snapshot.is_live(*b)).collect()
        };
        (live(&state.replicas), live(&state.isr))
    } else {
        (state.replicas.clone(), state.isr.clone())
    };
    // Fields a version lacks must keep their defaults, or encoding fails.
    base.with_error_code(if leader == NO_LEADER {
        errors::LEADER_NOT_AVAILABLE
    } else {
        errors::NONE
    })
    .with_leader_id(leader.into())
    .with_leader_epoch(if version >= 7 { state.leader_epoch } else { -1 })
    .with_replica_nodes(ids(&replicas))
    .with_isr_nodes(ids(&isr))
    .with_offline_replicas(if version >= 5 {
        ids(&snapshot.offline_replicas(state))
    } else {
        Vec::new()
    })
}

// Fields a version lacks must keep their defaults, or encoding fails: hence the version checks.
fn topic_entry(
    snapshot: &MetadataSnapshot,
    version: i16,
    t: &TopicMeta,
    ops: i32,
) -> MetadataResponseTopic {
    let partitions = (0..t.partitions)
        .map(|i| partition_entry(snapshot, version, t, i))
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(errors::NONE)
        .with_name(Some(TopicName(StrBytes::from_string(t.name.to_string()))))
        .with_topic_id(if version >= 10 {
            topic_uuid(t)
        } else {
            Uuid::nil()
        })
        .with_is_internal(version >= 1 && t.is_internal())
        .with_partitions(partitions)
        .with_topic_authorized_operations(ops)
}

fn error_entry(version: i16, name: Option<&str>, id: Uuid, code: i16) -> MetadataResponseTopic {
    // The name is nullable only from v12.
    let name = match name {
        Some(n) => Some(n),
        None if version < 12 => Some(""),
        None => None,
    };
    MetadataResponseTopic::default()
        .with_error_code(code)
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
        .with_topic_id(id)
        .with_topic_authorized_operations(i32::MIN)
}

pub async fn handle(shard: &Rc<Shard>, version: i16, req: MetadataRequest) -> Response {
    let mut snapshot = shard.metadata();
    let topic_ops = if version >= 8 && req.include_topic_authorized_operations {
        TOPIC_OPERATIONS
    } else {
        i32::MIN
    };
    let cluster_ops = if (8..=10).contains(&version) && req.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS
    } else {
        i32::MIN
    };
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested: Option<Vec<(Option<String>, Uuid)>> = match req.topics {
        None => None,
        Some(ts) if ts.is_empty() && version == 0 => None,
        Some(ts) => Some(
            ts.into_iter()
                .map(|t| (t.name.map(|n| n.0.as_str().to_string()), t.topic_id))
                .collect::<Vec<(Option<String>, Uuid)>>(),
        ),
    };
    let mut topics = Vec::new();
    match requested {
        None => {
            for t in snapshot.topics.values() {
                topics.push(topic_entry(&snapshot, version, t, topic_ops));
            }
        }
        Some(list) => {
            let auto =
                shard.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
            let missing: Vec<TopicSpec> = list
                .iter()
                .filter_map(|(name, _)| name.as_deref())
                // The offsets topic is created with its own configs (at startup, or by the
                // controller once enough brokers are alive), never as a side effect here.
                .filter(|n| {
                    auto && valid_topic_name(n)
                        && *n != CONSUMER_OFFSETS_TOPIC
                        && snapshot.topic(n).is_none()
                })
                .map(|n| TopicSpec {
                    name: n.to_string(),
                    partitions: shard.config.num_partitions,
                    configs: Default::default(),
                })
                .collect();
            // Why an auto-creation failed (e.g. fewer live brokers than
            // default.replication.factor), reported instead of UNKNOWN_TOPIC_OR_PARTITION.
            let mut failed: HashMap<String, i16> = HashMap::new();
            if !missing.is_empty() {
                for (name, r) in create_topics_in_registry(shard, missing, false).await {
                    match r {
                        Err((code, msg)) if code != errors::TOPIC_ALREADY_EXISTS => {
                            log::warn!("auto-creating topic {name:?}: error {code}: {msg}");
                            failed.insert(name, code);
                        }
                        _ => {}
                    }
                }
                snapshot = shard.metadata();
            }
            for (name, id) in list {
                let entry = match name {
                    Some(n) if !valid_topic_name(&n) => error_entry(
                        version,
                        Some(&n),
                        Uuid::nil(),
                        errors::INVALID_TOPIC_EXCEPTION,
                    ),
                    Some(n) => match snapshot.topic(&n) {
                        Some(t) => topic_entry(&snapshot, version, t, topic_ops),
                        None => error_entry(
                            version,
                            Some(&n),
                            Uuid::nil(),
                            failed
                                .get(&n)
                                .copied()
                                .unwrap_or(errors::UNKNOWN_TOPIC_OR_PARTITION),
                        ),
                    },
                    None if version < 10 => {
                        error_entry(version, None, Uuid::nil(), errors::INVALID_REQUEST)
                    }
                    None => match snapshot.topic_by_id(id.as_bytes()) {
                        Some(t) => topic_entry(&snapshot, version, t, topic_ops),
                        None => error_entry(
                            version,
                            None,
                            if version >= 10 { id } else { Uuid::nil() },
                            errors::UNKNOWN_TOPIC_ID,
                        ),
                    },
                };
                topics.push(entry);
            }
        }
    }
    let brokers = snapshot
        .brokers
        .values()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(b.id.into())
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port))
        })
        .collect();
    Response::Message(ResponseKind::Metadata(
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(
                (version >= 2).then(|| StrBytes::from_string(snapshot.cluster_id.clone())),
            )
            .with_controller_id(if version >= 1 {
                snapshot.controller_id.into()
            } else {
                BrokerId(-1)
            })
            .with_topics(topics)
            .with_cluster_authorized_operations(cluster_ops),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::metadata::{new_topic, PartitionState};
    use crate::config::BrokerConfig;

    fn cluster() -> (MetadataSnapshot, TopicMeta) {
        let s = crate::cluster::metadata::cluster_view(&[1, 2]);
        let mut t = new_topic(&BrokerConfig::default(), "t", 3, BTreeMap::new()).unwrap();
        // Partition 2 has no state yet (just created).
        t.states = vec![
            PartitionState {
                replicas: Broker::list(&[2, 3, 1]),
                leader: Broker(2),
                leader_epoch: 4,
                isr: Broker::list(&[2, 1]),
                zk_version: 9,
            },
            PartitionState {
                replicas: Broker::list(&[3, 1]),
                leader: Broker(3),
                leader_epoch: 6,
                isr: vec![Broker(3)],
                zk_version: 2,
            },
        ];
        (s, t)
    }

    #[test]
    fn partitions_report_replication_state() {
        let (s, t) = cluster();
        let p = partition_entry(&s, 12, &t, 0);
        assert_eq!(p.error_code, errors::NONE);
        assert_eq!(p.leader_id, BrokerId(2));
        assert_eq!(p.leader_epoch, 4);
        assert_eq!(p.replica_nodes, vec![BrokerId(2), BrokerId(3), BrokerId(1)]);
        assert_eq!(p.isr_nodes, vec![BrokerId(2), BrokerId(1)]);
        assert_eq!(p.offline_replicas, vec![BrokerId(3)]);
        // Versions without the fields keep their defaults; v0 lists only live brokers.
        let p = partition_entry(&s, 0, &t, 0);
        assert_eq!(p.leader_epoch, -1);
        assert!(p.offline_replicas.is_empty());
        assert_eq!(p.replica_nodes, vec![BrokerId(2), BrokerId(1)]);
    }

    #[test]
    fn partitions_without_a_live_leader_are_not_available() {
        let (s, t) = cluster();
        // The leader (3) is not alive.
        let p = partition_entry(&s, 9, &t, 1);
        assert_eq!(p.error_code, errors::LEADER_NOT_AVAILABLE);
        assert_eq!(p.leader_id, BrokerId::from(NO_LEADER));
        assert_eq!(p.leader_epoch, 6);
        assert_eq!(p.isr_nodes, vec![BrokerId(3)]);
        // No state yet.
        let p = partition_entry(&s, 9, &t, 2);
        assert_eq!(p.error_code, errors::LEADER_NOT_AVAILABLE);
        assert_eq!(p.leader_id, BrokerId::from(NO_LEADER));
        assert!(p.replica_nodes.is_empty());
    }
}
