//! A scripted, in-process Kafka broker for unit tests of the group protocol client: Metadata
//! for a fixed set of topics, and a one-generation-at-a-time consumer group coordinator
//! (FindCoordinator, JoinGroup with MEMBER_ID_REQUIRED, SyncGroup, Heartbeat, OffsetCommit,
//! OffsetFetch, LeaveGroup, DescribeGroups, ListOffsets) and Fetch: every partition holds
//! records `0..high_watermark` with values `p<partition>-<offset>` (with a failing CRC in the
//! partitions listed in `State::corrupt_partitions`). ElectLeaders records each
//! request and answers with scripted per-partition outcomes. Test-only; thread per
//! connection.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    api_versions_response::ApiVersion,
    describe_groups_response::{DescribedGroup, DescribedGroupMember},
    elect_leaders_response::{PartitionResult, ReplicaElectionResult},
    fetch_response::{FetchableTopicResponse, PartitionData},
    find_coordinator_response::Coordinator,
    join_group_response::JoinGroupResponseMember,
    list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
    metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic},
    offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic},
    offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic},
    ApiKey, ApiVersionsResponse, BrokerId, DescribeGroupsRequest, DescribeGroupsResponse,
    ElectLeadersRequest, ElectLeadersResponse, FetchRequest, FetchResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    RequestHeader, ResponseHeader, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

/// What the fake coordinator remembers.
#[derive(Debug, Default)]
pub struct State {
    pub join_calls: usize,
    pub generation: i32,
    /// member id -> subscription metadata
    pub members: BTreeMap<String, Bytes>,
    /// member id -> assignment bytes from the leader's SyncGroup
    pub assignments: BTreeMap<String, Bytes>,
    pub committed: BTreeMap<(String, i32), i64>,
    next_member: usize,
    /// Highest version advertised per API key, overriding `RANGES` (set before connecting).
    pub max_versions: BTreeMap<i16, i16>,
    /// Every ElectLeaders request received, with its version.
    pub elect_requests: Vec<(i16, ElectLeadersRequest)>,
    /// ElectLeaders outcome (error code, message) per partition; unlisted existing partitions
    /// are elected (0), unknown ones get UNKNOWN_TOPIC_OR_PARTITION.
    pub elect_results: BTreeMap<(String, i32), (i16, Option<String>)>,
    /// ElectLeaders top-level error code (v1+).
    pub elect_error: i16,
    /// Partitions whose fetched batches carry a damaged byte (their CRC check fails), as a log
    /// with a flipped bit on disk would serve them.
    pub corrupt_partitions: BTreeSet<i32>,
}

pub struct FakeBroker {
    pub addr: String,
    pub state: Arc<Mutex<State>>,
}

const RANGES: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ElectLeaders, 0, 2),
];

impl FakeBroker {
    /// Serves `topics` (name, partition count); every partition has `high_watermark` records.
    pub fn start(topics: &[(&str, i32)], high_watermark: i64) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let topics: Vec<(String, i32)> = topics.iter().map(|(t, n)| (t.to_string(), *n)).collect();
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (state, topics) = (shared.clone(), topics.clone());
                std::thread::spawn(move || {
                    serve(stream, addr.port(), &topics, high_watermark, &state)
                });
            }
        });
        FakeBroker {
            addr: addr.to_string(),
            state,
        }
    }
}

fn frame<R: Encodable + HeaderVersion>(corr: i32, r: &R, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(&mut buf, R::header_version(version))
        .expect("response header");
    r.encode(&mut buf, version).expect("response body");
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn serve(
    mut stream: TcpStream,
    port: u16,
    topics: &[(String, i32)],
    hw: i64,
    state: &Mutex<State>,
) {
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        if stream.read_exact(&mut buf).is_err() {
            return;
        }
        let mut b = Bytes::from(buf);
        let key = (&b[0..2]).get_i16();
        let v = (&b[2..4]).get_i16();
        let Ok(api) = ApiKey::try_from(key) else {
            return;
        };
        let Ok(header) = RequestHeader::decode(&mut b, api.request_header_version(v)) else {
            return;
        };
        let corr = header.correlation_id;
        let mut st = state.lock().expect("state lock");
        let out = match api {
            ApiKey::ApiVersions => frame(
                corr,
                &ApiVersionsResponse::default().with_api_keys(
                    RANGES
                        .iter()
                        .map(|(k, min, max)| {
                            ApiVersion::default()
                                .with_api_key(*k as i16)
                                .with_min_version(*min)
                                .with_max_version(
                                    st.max_versions.get(&(*k as i16)).copied().unwrap_or(*max),
                                )
                        })
                        .collect(),
                ),
                v,
            ),
            ApiKey::Metadata => {
                let req = MetadataRequest::decode(&mut b, v).expect("metadata request");
                let wanted: Option<Vec<String>> = req.topics.map(|ts| {
                    ts.iter()
                        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                        .collect()
                });
                let r = MetadataResponse::default()
                    .with_controller_id(BrokerId(0))
                    .with_cluster_id(Some(s("fake")))
                    .with_brokers(vec![MetadataResponseBroker::default()
                        .with_node_id(BrokerId(0))
                        .with_host(s("127.0.0.1"))
                        .with_port(port as i32)])
                    .with_topics(
                        topics
                            .iter()
                            .filter(|(t, _)| wanted.as_ref().is_none_or(|w| w.contains(t)))
                            .map(|(t, n)| {
                                MetadataResponseTopic::default()
                                    .with_name(Some(TopicName(s(t))))
                                    .with_partitions(
                                        (0..*n)
                                            .map(|p| {
                                                MetadataResponsePartition::default()
                                                    .with_partition_index(p)
                                                    .with_leader_id(BrokerId(0))
                                                    .with_replica_nodes(vec![BrokerId(0)])
                                                    .with_isr_nodes(vec![BrokerId(0)])
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    );
                frame(corr, &r, v)
            }
            ApiKey::ListOffsets => {
                let req = ListOffsetsRequest::decode(&mut b, v).expect("list offsets request");
                let r = ListOffsetsResponse::default().with_topics(
                    req.topics
                        .iter()
                        .map(|t| {
                            ListOffsetsTopicResponse::default()
                                .with_name(t.name.clone())
                                .with_partitions(
                                    t.partitions
                                        .iter()
                                        .map(|p| {
                                            ListOffsetsPartitionResponse::default()
                                                .with_partition_index(p.partition_index)
                                                .with_offset(if p.timestamp == -2 { 0 } else { hw })
                                                .with_timestamp(-1)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
                frame(corr, &r, v)
            }
            ApiKey::FindCoordinator => {
                let req = FindCoordinatorRequest::decode(&mut b, v).expect("find coordinator");
                let mut r = FindCoordinatorResponse::default();
                if v >= 4 {
                    r.coordinators = req
                        .coordinator_keys
                        .iter()
                        .map(|k| {
                            Coordinator::default()
                                .with_key(k.clone())
                                .with_node_id(BrokerId(0))
                                .with_host(s("127.0.0.1"))
                                .with_port(port as i32)
                        })
                        .collect();
                } else {
                    r = r
                        .with_node_id(BrokerId(0))
                        .with_host(s("127.0.0.1"))
                        .with_port(port as i32);
                }
                frame(corr, &r, v)
            }
            ApiKey::JoinGroup => {
                let req = JoinGroupRequest::decode(&mut b, v).expect("join group");
                st.join_calls += 1;
                let mut r = JoinGroupResponse::default();
                if req.member_id.is_empty() && v >= 4 {
                    st.next_member += 1;
                    r = r
                        .with_error_code(79)
                        .with_member_id(s(&format!("member-{}", st.next_member)));
                } else {
                    let id = req.member_id.to_string();
                    let metadata = req
                        .protocols
                        .first()
                        .map(|p| p.metadata.clone())
                        .unwrap_or_default();
                    st.members.insert(id.clone(), metadata);
                    st.generation += 1;
                    let leader = st.members.keys().next().cloned().unwrap_or_default();
                    r = r
                        .with_generation_id(st.generation)
                        .with_protocol_name(Some(s("range")))
                        .with_leader(s(&leader))
                        .with_member_id(s(&id));
                    if v >= 7 {
                        r.protocol_type = Some(s("consumer"));
                    }
                    if id == leader {
                        r.members = st
                            .members
                            .iter()
                            .map(|(m, md)| {
                                JoinGroupResponseMember::default()
                                    .with_member_id(s(m))
                                    .with_metadata(md.clone())
                            })
                            .collect();
                    }
                }
                frame(corr, &r, v)
            }
            ApiKey::SyncGroup => {
                let req = SyncGroupRequest::decode(&mut b, v).expect("sync group");
                for a in &req.assignments {
                    st.assignments
                        .insert(a.member_id.to_string(), a.assignment.clone());
                }
                let mine = st
                    .assignments
                    .get(&*req.member_id)
                    .cloned()
                    .unwrap_or_default();
                let mut r = SyncGroupResponse::default().with_assignment(mine);
                if v >= 5 {
                    r.protocol_type = Some(s("consumer"));
                    r.protocol_name = Some(s("range"));
                }
                frame(corr, &r, v)
            }
            ApiKey::Heartbeat => frame(corr, &HeartbeatResponse::default(), v),
            ApiKey::LeaveGroup => {
                st.members.clear();
                st.assignments.clear();
                frame(corr, &LeaveGroupResponse::default(), v)
            }
            ApiKey::OffsetCommit => {
                let req = OffsetCommitRequest::decode(&mut b, v).expect("offset commit");
                let mut topics = Vec::new();
                for t in &req.topics {
                    let mut ps = Vec::new();
                    for p in &t.partitions {
                        st.committed.insert(
                            (t.name.0.to_string(), p.partition_index),
                            p.committed_offset,
                        );
                        ps.push(
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index),
                        );
                    }
                    topics.push(
                        OffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(ps),
                    );
                }
                frame(
                    corr,
                    &OffsetCommitResponse::default().with_topics(topics),
                    v,
                )
            }
            ApiKey::OffsetFetch => {
                let req =
                    OffsetFetchRequest::decode(&mut b, v).expect("offset fetch (v7 or older)");
                let mut by_topic: BTreeMap<String, Vec<OffsetFetchResponsePartition>> =
                    BTreeMap::new();
                match &req.topics {
                    Some(ts) => {
                        for t in ts {
                            for p in &t.partition_indexes {
                                let o = st
                                    .committed
                                    .get(&(t.name.0.to_string(), *p))
                                    .copied()
                                    .unwrap_or(-1);
                                by_topic.entry(t.name.0.to_string()).or_default().push(
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(*p)
                                        .with_committed_offset(o),
                                );
                            }
                        }
                    }
                    None => {
                        for ((t, p), o) in &st.committed {
                            by_topic.entry(t.clone()).or_default().push(
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(*p)
                                    .with_committed_offset(*o),
                            );
                        }
                    }
                }
                let r = OffsetFetchResponse::default().with_topics(
                    by_topic
                        .into_iter()
                        .map(|(t, ps)| {
                            OffsetFetchResponseTopic::default()
                                .with_name(TopicName(s(&t)))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
                frame(corr, &r, v)
            }
            ApiKey::DescribeGroups => {
                let req = DescribeGroupsRequest::decode(&mut b, v).expect("describe groups");
                let r = DescribeGroupsResponse::default().with_groups(
                    req.groups
                        .iter()
                        .map(|g| {
                            DescribedGroup::default()
                                .with_group_id(g.clone())
                                .with_group_state(s(if st.members.is_empty() {
                                    "Empty"
                                } else {
                                    "Stable"
                                }))
                                .with_protocol_type(s("consumer"))
                                .with_protocol_data(s("range"))
                                .with_members(
                                    st.members
                                        .keys()
                                        .map(|m| {
                                            DescribedGroupMember::default()
                                                .with_member_id(s(m))
                                                .with_client_id(s("test"))
                                                .with_client_host(s("/127.0.0.1"))
                                                .with_member_assignment(
                                                    st.assignments
                                                        .get(m)
                                                        .cloned()
                                                        .unwrap_or_default(),
                                                )
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
                frame(corr, &r, v)
            }
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut b, v).expect("fetch request");
                let r = FetchResponse::default().with_responses(
                    req.topics
                        .iter()
                        .map(|t| {
                            FetchableTopicResponse::default()
                                .with_topic(t.topic.clone())
                                .with_partitions(
                                    t.partitions
                                        .iter()
                                        .map(|p| {
                                            PartitionData::default()
                                                .with_partition_index(p.partition)
                                                .with_high_watermark(hw)
                                                .with_last_stable_offset(hw)
                                                .with_log_start_offset(0)
                                                .with_records(Some(records_from(
                                                    p.partition,
                                                    p.fetch_offset,
                                                    hw,
                                                    st.corrupt_partitions.contains(&p.partition),
                                                )))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
                frame(corr, &r, v)
            }
            ApiKey::ElectLeaders => {
                let req = ElectLeadersRequest::decode(&mut b, v).expect("elect leaders");
                let asked: Vec<(String, Vec<i32>)> = match &req.topic_partitions {
                    Some(tps) => tps
                        .iter()
                        .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
                        .collect(),
                    None => topics
                        .iter()
                        .map(|(t, n)| (t.clone(), (0..*n).collect()))
                        .collect(),
                };
                st.elect_requests.push((v, req));
                let known = |t: &str, p: i32| topics.iter().any(|(name, n)| name == t && p < *n);
                let results = asked
                    .iter()
                    .map(|(t, ps)| {
                        ReplicaElectionResult::default()
                            .with_topic(TopicName(s(t)))
                            .with_partition_result(
                                ps.iter()
                                    .map(|p| {
                                        let (code, message) = if known(t, *p) {
                                            st.elect_results
                                                .get(&(t.clone(), *p))
                                                .cloned()
                                                .unwrap_or((0, None))
                                        } else {
                                            (3, Some("no such partition".to_string()))
                                        };
                                        PartitionResult::default()
                                            .with_partition_id(*p)
                                            .with_error_code(code)
                                            .with_error_message(message.as_deref().map(s))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                let mut r = ElectLeadersResponse::default().with_replica_election_results(results);
                if v >= 1 {
                    r.error_code = st.elect_error;
                }
                frame(corr, &r, v)
            }
            _ => return,
        };
        drop(st);
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

/// One batch holding records `from..hw` of a partition (empty when there are none). The batch
/// starts one record early when it can, as a broker's does when the fetch offset falls inside
/// a batch, so clients must skip records before their position. `corrupt` flips a bit of the
/// batch's last byte, which the CRC covers.
fn records_from(partition: i32, from: i64, hw: i64, corrupt: bool) -> Bytes {
    let start = (from - 1).max(0);
    if start >= hw || from >= hw {
        return Bytes::new();
    }
    let values: Vec<Vec<u8>> = (start..hw)
        .map(|o| format!("p{partition}-{o}").into_bytes())
        .collect();
    let records: Vec<shardlog_protocol::batch::SimpleRecord> =
        values.iter().map(|v| (None, Some(v.as_slice()))).collect();
    let mut batch = shardlog_protocol::batch::build_simple_batch(start, 1_000, &records);
    if corrupt {
        if let Some(last) = batch.last_mut() {
            *last ^= 0x01;
        }
    }
    Bytes::from(batch)
}
