//! ElectLeaders (KIP-460): preferred-replica election, or unclean election for partitions
//! without a live leader, asked for by an operator (`shardlog-cli cluster elect-leaders`,
//! Kafka's `kafka-leader-election.sh`). Cluster mode: the control thread decides from
//! ZooKeeper's current state and writes with version checks (`control::election`). Standalone:
//! every partition is led by its only replica, so no election is ever needed.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    ElectLeadersRequest, ElectLeadersResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Response;
use crate::base::errors;
use crate::base::ids::PartitionId;
use crate::cluster::control_api::ControlRequest;
use crate::cluster::metadata::MetadataSnapshot;
use crate::control::election;
use crate::shard::Shard;

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// Longest wait for the control thread, whatever the request's timeout says.
const WAIT_MAX: Duration = Duration::from_secs(60);

type Results = Vec<(Arc<str>, i32, i16)>;

pub async fn handle(shard: &Rc<Shard>, version: i16, req: ElectLeadersRequest) -> Response {
    // v0 has no election type: preferred.
    let election_type = if version >= 1 {
        req.election_type
    } else {
        PREFERRED
    };
    let asked: Option<Vec<(Arc<str>, i32)>> = req.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                let name: Arc<str> = Arc::from(t.topic.0.as_str());
                t.partitions.iter().map(move |&p| (name.clone(), p))
            })
            .collect()
    });
    if election_type != PREFERRED && election_type != UNCLEAN {
        let message = format!("unknown election type {election_type}");
        let all = asked.unwrap_or_default();
        return respond(
            version,
            errors::INVALID_REQUEST,
            all.into_iter()
                .map(|(t, p)| (t, p, errors::INVALID_REQUEST))
                .collect(),
            Some(&message),
        );
    }
    let unclean = election_type == UNCLEAN;
    let results = match shard.control.clone() {
        Some(control) => {
            let timeout =
                Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0)).min(WAIT_MAX);
            let (reply, rx) = flume::bounded(1);
            let request = ControlRequest::ElectLeaders {
                unclean,
                partitions: asked
                    .clone()
                    .map(|a| a.into_iter().map(|(t, p)| (t, PartitionId(p))).collect()),
                reply,
            };
            let answer = if control.tx.send_async(request).await.is_err() {
                None
            } else {
                futures_lite::future::or(
                    async { crate::runtime::rt::recv_cross(&rx).await.ok() },
                    async {
                        crate::runtime::rt::sleep(timeout.max(Duration::from_millis(1))).await;
                        None
                    },
                )
                .await
            };
            match answer {
                Some(results) => results
                    .into_iter()
                    .map(|(t, p, code)| (t, p.0, code))
                    .collect(),
                // Shutting down, or slower than the client wants to wait: the election may
                // still happen; the client learns it from Metadata.
                None => asked
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(t, p)| (t, p, errors::REQUEST_TIMED_OUT))
                    .collect(),
            }
        }
        None => decide_locally(&shard.metadata(), unclean, asked),
    };
    respond(version, errors::NONE, results, None)
}

/// Standalone: decided from the snapshot (this broker is the only replica of everything).
fn decide_locally(
    snapshot: &MetadataSnapshot,
    unclean: bool,
    asked: Option<Vec<(Arc<str>, i32)>>,
) -> Results {
    let alive = snapshot.brokers.keys().copied().collect();
    let all = asked.is_none();
    let wanted: Vec<(Arc<str>, i32)> = asked.unwrap_or_else(|| {
        snapshot
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).map(move |p| (t.name.clone(), p)))
            .collect()
    });
    wanted
        .into_iter()
        .map(|(t, p)| {
            let code = match snapshot.partition_state(&t, p) {
                None => errors::UNKNOWN_TOPIC_OR_PARTITION,
                Some(s) => {
                    let decided = if unclean {
                        election::unclean(s, &alive)
                    } else {
                        election::preferred(s, &alive)
                    };
                    // Standalone has nobody to hand leadership to.
                    decided.err().unwrap_or(errors::ELECTION_NOT_NEEDED)
                }
            };
            (t, p, code)
        })
        .filter(|(_, _, code)| !(all && *code == errors::ELECTION_NOT_NEEDED))
        .collect()
}

fn error_message(code: i16) -> Option<&'static str> {
    Some(match code {
        errors::NONE => return None,
        errors::ELECTION_NOT_NEEDED => "Leader election not needed for topic partition.",
        errors::PREFERRED_LEADER_NOT_AVAILABLE => {
            "The preferred leader is not alive or not in the ISR."
        }
        errors::ELIGIBLE_LEADERS_NOT_AVAILABLE => "No replica of the partition is alive.",
        errors::UNKNOWN_TOPIC_OR_PARTITION => "This server does not host this topic-partition.",
        errors::REQUEST_TIMED_OUT => "The election did not complete in time.",
        _ => return None,
    })
}

fn respond(version: i16, top: i16, results: Results, message: Option<&str>) -> Response {
    let mut by_topic: BTreeMap<Arc<str>, Vec<PartitionResult>> = BTreeMap::new();
    for (t, p, code) in results {
        let text = message.or(error_message(code));
        by_topic.entry(t).or_default().push(
            PartitionResult::default()
                .with_partition_id(p)
                .with_error_code(code)
                .with_error_message(text.map(|m| StrBytes::from_string(m.to_string()))),
        );
    }
    let topics = by_topic
        .into_iter()
        .map(|(t, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                .with_partition_result(partitions)
        })
        .collect();
    let mut response = ElectLeadersResponse::default().with_replica_election_results(topics);
    if version >= 1 {
        response = response.with_error_code(top);
    }
    Response::Message(ResponseKind::ElectLeaders(response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::ids::BrokerId;
    use crate::cluster::metadata::{BrokerInfo, PartitionState, TopicMeta};

    fn standalone_with(topic: &str, partitions: i32) -> MetadataSnapshot {
        let mut s = MetadataSnapshot {
            local_broker: BrokerId(0),
            controller_id: BrokerId(0),
            ..Default::default()
        };
        s.brokers.insert(
            BrokerId(0),
            BrokerInfo {
                id: BrokerId(0),
                host: "127.0.0.1".into(),
                port: 9092,
            },
        );
        let name: Arc<str> = Arc::from(topic);
        s.topics.insert(
            name.clone(),
            Arc::new(TopicMeta {
                name,
                id: [1; 16],
                partitions,
                replication_factor: 1,
                overrides: BTreeMap::new(),
                config: Default::default(),
                states: (0..partitions)
                    .map(|_| PartitionState::standalone(BrokerId(0)))
                    .collect(),
            }),
        );
        s
    }

    #[test]
    fn standalone_never_needs_an_election() {
        let snap = standalone_with("t", 2);
        let asked = vec![
            (Arc::from("t"), 0),
            (Arc::from("t"), 5),
            (Arc::from("x"), 0),
        ];
        for unclean in [false, true] {
            let r = decide_locally(&snap, unclean, Some(asked.clone()));
            let codes: Vec<i16> = r.iter().map(|(_, _, c)| *c).collect();
            assert_eq!(
                codes,
                vec![
                    errors::ELECTION_NOT_NEEDED,
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    errors::UNKNOWN_TOPIC_OR_PARTITION
                ]
            );
        }
        // Every partition: nothing needed, nothing reported.
        assert!(decide_locally(&snap, false, None).is_empty());
    }

    #[test]
    fn response_groups_partitions_by_topic_and_v0_has_no_top_level_code() {
        let results = vec![
            (Arc::from("b"), 1, errors::NONE),
            (Arc::from("a"), 0, errors::PREFERRED_LEADER_NOT_AVAILABLE),
            (Arc::from("b"), 0, errors::ELECTION_NOT_NEEDED),
        ];
        let Response::Message(ResponseKind::ElectLeaders(r)) =
            respond(0, errors::INVALID_REQUEST, results, None)
        else {
            panic!("not an ElectLeaders response");
        };
        assert_eq!(r.error_code, errors::NONE);
        let names: Vec<&str> = r
            .replica_election_results
            .iter()
            .map(|t| t.topic.0.as_str())
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        let b = &r.replica_election_results[1].partition_result;
        assert_eq!(
            b.iter()
                .map(|p| (p.partition_id, p.error_code))
                .collect::<Vec<_>>(),
            vec![(1, errors::NONE), (0, errors::ELECTION_NOT_NEEDED)]
        );
        assert!(b[0].error_message.is_none());
        assert!(b[1].error_message.is_some());
    }
}
