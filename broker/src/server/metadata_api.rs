//! Metadata: brokers, topics and partition leaders, with auto topic creation.
//!
//! In standalone mode this broker is the only node, leader and only ISR member of everything.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::admin::{create_topics_in_registry, TopicSpec};
use super::Response;
use crate::config::valid_topic_name;
use crate::errors;
use crate::metadata::TopicMeta;
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

// Fields a version lacks must keep their defaults, or encoding fails: hence the version checks.
fn topic_entry(shard: &Shard, version: i16, t: &TopicMeta, ops: i32) -> MetadataResponseTopic {
    let me = BrokerId(shard.config.broker_id);
    let partitions = (0..t.partitions)
        .map(|i| {
            MetadataResponsePartition::default()
                .with_error_code(errors::NONE)
                .with_partition_index(i)
                .with_leader_id(me)
                .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                .with_replica_nodes(vec![me])
                .with_isr_nodes(vec![me])
        })
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
                topics.push(topic_entry(shard, version, t, topic_ops));
            }
        }
        Some(list) => {
            let auto =
                shard.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
            let missing: Vec<TopicSpec> = list
                .iter()
                .filter_map(|(name, _)| name.as_deref())
                .filter(|n| auto && valid_topic_name(n) && snapshot.topic(n).is_none())
                .map(|n| TopicSpec {
                    name: n.to_string(),
                    partitions: shard.config.num_partitions,
                    configs: Default::default(),
                })
                .collect();
            if !missing.is_empty() {
                let _ = create_topics_in_registry(shard, missing, false).await;
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
                        Some(t) => topic_entry(shard, version, t, topic_ops),
                        None => error_entry(
                            version,
                            Some(&n),
                            Uuid::nil(),
                            errors::UNKNOWN_TOPIC_OR_PARTITION,
                        ),
                    },
                    None if version < 10 => {
                        error_entry(version, None, Uuid::nil(), errors::INVALID_REQUEST)
                    }
                    None => match snapshot.topic_by_id(id.as_bytes()) {
                        Some(t) => topic_entry(shard, version, t, topic_ops),
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
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(shard.config.broker_id))
        .with_host(StrBytes::from_string(shard.config.advertised_host.clone()))
        .with_port(shard.config.advertised_port as i32);
    Response::Message(ResponseKind::Metadata(
        MetadataResponse::default()
            .with_brokers(vec![broker])
            .with_cluster_id(
                (version >= 2).then(|| StrBytes::from_string(snapshot.cluster_id.clone())),
            )
            .with_controller_id(BrokerId(if version >= 1 {
                shard.config.broker_id
            } else {
                -1
            }))
            .with_topics(topics)
            .with_cluster_authorized_operations(cluster_ops),
    ))
}
