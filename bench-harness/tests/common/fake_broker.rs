//! A minimal in-memory Kafka broker for testing the harness end to end without Shardlog:
//! ApiVersions, Metadata, CreateTopics, ListOffsets, Produce and Fetch on 127.0.0.1, one
//! thread per connection. It can be killed mid-run (every socket shut down, no new accepts)
//! to test how the harness reports a broker that goes away.

#![allow(dead_code)]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Log {
    bytes: Vec<u8>,
    /// (base offset, last offset, start, end) of each batch.
    batches: Vec<(i64, i64, usize, usize)>,
    next: i64,
}

#[derive(Default)]
struct State {
    topics: BTreeMap<String, Vec<Log>>,
    groups: BTreeMap<String, Group>,
    next_member: u64,
}

/// A classic consumer group, simplified: joins gather for a short window, then the round
/// completes for everyone who joined; the leader's SyncGroup assignments are handed out.
#[derive(Default)]
struct Group {
    generation: i32,
    joining: BTreeMap<String, Bytes>,
    window_end: Option<Instant>,
    /// Last completed round: generation, leader, members with their metadata.
    round: Option<Round>,
    assignments: BTreeMap<(i32, String), Bytes>,
}

/// Generation, leader, and the members with their subscription metadata.
type Round = (i32, String, Vec<(String, Bytes)>);

const JOIN_WINDOW: Duration = Duration::from_millis(500);

pub struct FakeBroker {
    pub addr: String,
    state: Arc<Mutex<State>>,
    killed: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl FakeBroker {
    pub fn start() -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let killed = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (s, k, c) = (state.clone(), killed.clone(), conns.clone());
        thread::spawn(move || {
            while !k.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        c.lock().unwrap().push(stream.try_clone().unwrap());
                        let (s, k) = (s.clone(), k.clone());
                        thread::spawn(move || serve(stream, port, s, k));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeBroker {
            addr,
            state,
            killed,
            conns,
        }
    }

    /// Records stored in `topic` (all partitions).
    pub fn records(&self, topic: &str) -> i64 {
        let st = self.state.lock().unwrap();
        st.topics
            .get(topic)
            .map_or(0, |ps| ps.iter().map(|l| l.next).sum())
    }

    pub fn partitions(&self, topic: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .topics
            .get(topic)
            .map_or(0, |p| p.len())
    }

    /// Closes every connection and stops accepting: the broker "goes away".
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn serve(mut s: TcpStream, port: u16, state: Arc<Mutex<State>>, killed: Arc<AtomicBool>) {
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() || killed.load(Ordering::Relaxed) {
            return;
        }
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        if s.read_exact(&mut buf).is_err() {
            return;
        }
        let mut b = Bytes::from(buf);
        let key = (&b[0..2]).get_i16();
        let version = (&b[2..4]).get_i16();
        let api = ApiKey::try_from(key).unwrap();
        let header = RequestHeader::decode(&mut b, api.request_header_version(version)).unwrap();
        let mut out = BytesMut::new();
        out.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(header.correlation_id)
            .encode(&mut out, api.response_header_version(version))
            .unwrap();
        let answered = match api {
            ApiKey::ApiVersions => {
                let keys = [
                    (0, 3, 9),
                    (1, 4, 12),
                    (2, 1, 7),
                    (3, 0, 12),
                    (10, 0, 3),
                    (11, 0, 7),
                    (12, 0, 4),
                    (13, 0, 4),
                    (14, 0, 5),
                    (18, 0, 3),
                    (19, 2, 7),
                ];
                ApiVersionsResponse::default()
                    .with_api_keys(
                        keys.iter()
                            .map(|(k, lo, hi)| {
                                ApiVersion::default()
                                    .with_api_key(*k)
                                    .with_min_version(*lo)
                                    .with_max_version(*hi)
                            })
                            .collect(),
                    )
                    .encode(&mut out, version)
                    .map(|_| true)
            }
            ApiKey::Metadata => {
                let req = MetadataRequest::decode(&mut b, version).unwrap();
                let st = state.lock().unwrap();
                let names: Vec<String> = match &req.topics {
                    None => st.topics.keys().cloned().collect(),
                    Some(ts) => ts
                        .iter()
                        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                        .collect(),
                };
                let topics = names
                    .iter()
                    .map(|n| match st.topics.get(n) {
                        None => MetadataResponseTopic::default()
                            .with_name(Some(name(n)))
                            .with_error_code(3),
                        Some(ps) => MetadataResponseTopic::default()
                            .with_name(Some(name(n)))
                            .with_partitions(
                                (0..ps.len() as i32)
                                    .map(|p| {
                                        MetadataResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_leader_id(BrokerId(0))
                                            .with_replica_nodes(vec![BrokerId(0)])
                                            .with_isr_nodes(vec![BrokerId(0)])
                                    })
                                    .collect(),
                            ),
                    })
                    .collect();
                MetadataResponse::default()
                    .with_brokers(vec![MetadataResponseBroker::default()
                        .with_node_id(BrokerId(0))
                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                        .with_port(port as i32)])
                    .with_controller_id(BrokerId(0))
                    .with_topics(topics)
                    .encode(&mut out, version)
                    .map(|_| true)
            }
            ApiKey::CreateTopics => {
                let req = CreateTopicsRequest::decode(&mut b, version).unwrap();
                let mut st = state.lock().unwrap();
                let topics = req
                    .topics
                    .iter()
                    .map(|t| {
                        let n = t.name.0.to_string();
                        let code = if st.topics.contains_key(&n) { 36 } else { 0 };
                        st.topics.entry(n).or_insert_with(|| {
                            (0..t.num_partitions.max(1))
                                .map(|_| Log::default())
                                .collect()
                        });
                        CreatableTopicResult::default()
                            .with_name(t.name.clone())
                            .with_error_code(code)
                    })
                    .collect();
                CreateTopicsResponse::default()
                    .with_topics(topics)
                    .encode(&mut out, version)
                    .map(|_| true)
            }
            ApiKey::ListOffsets => {
                let req = ListOffsetsRequest::decode(&mut b, version).unwrap();
                let st = state.lock().unwrap();
                let topics = req
                    .topics
                    .iter()
                    .map(|t| {
                        let logs = st.topics.get(&*t.name.0);
                        ListOffsetsTopicResponse::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let next = logs
                                            .and_then(|l| l.get(p.partition_index as usize))
                                            .map(|l| l.next);
                                        let r = ListOffsetsPartitionResponse::default()
                                            .with_partition_index(p.partition_index);
                                        match next {
                                            None => r.with_error_code(3),
                                            Some(n) => r
                                                .with_offset(if p.timestamp == -2 { 0 } else { n })
                                                .with_timestamp(-1),
                                        }
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                ListOffsetsResponse::default()
                    .with_topics(topics)
                    .encode(&mut out, version)
                    .map(|_| true)
            }
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut b, version).unwrap();
                let mut st = state.lock().unwrap();
                let responses = req
                    .topic_data
                    .iter()
                    .map(|t| {
                        let logs = st.topics.get_mut(&*t.name.0);
                        let mut logs = logs;
                        TopicProduceResponse::default()
                            .with_name(t.name.clone())
                            .with_partition_responses(
                                t.partition_data
                                    .iter()
                                    .map(|p| {
                                        let r =
                                            PartitionProduceResponse::default().with_index(p.index);
                                        let Some(log) =
                                            logs.as_mut().and_then(|l| l.get_mut(p.index as usize))
                                        else {
                                            return r.with_error_code(3);
                                        };
                                        let mut data =
                                            p.records.clone().unwrap_or_default().to_vec();
                                        let h = shardlog_protocol::batch::validate(&data);
                                        let Ok(h) = h else {
                                            return r.with_error_code(2);
                                        };
                                        let base = log.next;
                                        data[0..8].copy_from_slice(&base.to_be_bytes());
                                        let start = log.bytes.len();
                                        log.bytes.extend_from_slice(&data);
                                        log.batches.push((
                                            base,
                                            base + h.last_offset_delta as i64,
                                            start,
                                            log.bytes.len(),
                                        ));
                                        log.next = base + h.last_offset_delta as i64 + 1;
                                        r.with_base_offset(base)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                drop(st);
                if req.acks == 0 {
                    Ok(false)
                } else {
                    ProduceResponse::default()
                        .with_responses(responses)
                        .encode(&mut out, version)
                        .map(|_| true)
                }
            }
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut b, version).unwrap();
                let deadline =
                    Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
                loop {
                    let st = state.lock().unwrap();
                    let mut any = false;
                    let topics: Vec<FetchableTopicResponse> = req
                        .topics
                        .iter()
                        .map(|t| {
                            let logs = st.topics.get(&*t.topic.0);
                            FetchableTopicResponse::default()
                                .with_topic(t.topic.clone())
                                .with_partitions(
                                    t.partitions
                                        .iter()
                                        .map(|p| {
                                            let r = PartitionData::default()
                                                .with_partition_index(p.partition);
                                            let Some(log) =
                                                logs.and_then(|l| l.get(p.partition as usize))
                                            else {
                                                return r.with_error_code(3);
                                            };
                                            let mut data = Vec::new();
                                            for (_, last, s, e) in &log.batches {
                                                if *last >= p.fetch_offset
                                                    && data.len() < p.partition_max_bytes as usize
                                                {
                                                    data.extend_from_slice(&log.bytes[*s..*e]);
                                                }
                                            }
                                            any |= !data.is_empty();
                                            r.with_high_watermark(log.next)
                                                .with_records(Some(Bytes::from(data)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                    drop(st);
                    if any || Instant::now() >= deadline {
                        break FetchResponse::default()
                            .with_responses(topics)
                            .encode(&mut out, version)
                            .map(|_| true);
                    }
                    thread::sleep(Duration::from_millis(2));
                }
            }
            ApiKey::FindCoordinator => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(0))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(port as i32)
                .encode(&mut out, version)
                .map(|_| true),
            ApiKey::JoinGroup => {
                let req = JoinGroupRequest::decode(&mut b, version).unwrap();
                join_group(&state, &req, version)
                    .encode(&mut out, version)
                    .map(|_| true)
            }
            ApiKey::SyncGroup => {
                let req = SyncGroupRequest::decode(&mut b, version).unwrap();
                let key = req.group_id.0.to_string();
                let member = req.member_id.to_string();
                let gen = req.generation_id;
                {
                    let mut st = state.lock().unwrap();
                    let g = st.groups.entry(key.clone()).or_default();
                    for a in &req.assignments {
                        g.assignments
                            .insert((gen, a.member_id.to_string()), a.assignment.clone());
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(10);
                let assignment = loop {
                    let st = state.lock().unwrap();
                    if let Some(a) = st
                        .groups
                        .get(&key)
                        .and_then(|g| g.assignments.get(&(gen, member.clone())))
                    {
                        break Some(a.clone());
                    }
                    drop(st);
                    if Instant::now() > deadline {
                        break None;
                    }
                    thread::sleep(Duration::from_millis(5));
                };
                let r = match assignment {
                    Some(a) => SyncGroupResponse::default().with_assignment(a),
                    None => SyncGroupResponse::default().with_error_code(27),
                };
                r.with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                    .with_protocol_name(Some(StrBytes::from_static_str("range")))
                    .encode(&mut out, version)
                    .map(|_| true)
            }
            ApiKey::Heartbeat => {
                let req = HeartbeatRequest::decode(&mut b, version).unwrap();
                let st = state.lock().unwrap();
                let current = st.groups.get(&*req.group_id.0).map_or(-1, |g| g.generation);
                let code = if current == req.generation_id { 0 } else { 27 };
                HeartbeatResponse::default()
                    .with_error_code(code)
                    .encode(&mut out, version)
                    .map(|_| true)
            }
            ApiKey::LeaveGroup => LeaveGroupResponse::default()
                .encode(&mut out, version)
                .map(|_| true),
            other => panic!("fake broker does not handle {other:?}"),
        };
        if !answered.unwrap() {
            continue;
        }
        let n = (out.len() - 4) as i32;
        out[0..4].copy_from_slice(&n.to_be_bytes());
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

fn join_group(state: &Mutex<State>, req: &JoinGroupRequest, version: i16) -> JoinGroupResponse {
    let key = req.group_id.0.to_string();
    let mut member = req.member_id.to_string();
    {
        let mut st = state.lock().unwrap();
        if member.is_empty() {
            st.next_member += 1;
            member = format!("member-{}", st.next_member);
            if version >= 4 {
                return JoinGroupResponse::default()
                    .with_error_code(79)
                    .with_member_id(StrBytes::from_string(member));
            }
        }
        let g = st.groups.entry(key.clone()).or_default();
        let metadata = req
            .protocols
            .first()
            .map(|p| p.metadata.clone())
            .unwrap_or_default();
        g.joining.insert(member.clone(), metadata);
        g.window_end.get_or_insert(Instant::now() + JOIN_WINDOW);
    }
    loop {
        let mut st = state.lock().unwrap();
        let g = st.groups.get_mut(&key).unwrap();
        if let Some(end) = g.window_end {
            if Instant::now() >= end {
                g.generation += 1;
                let members: Vec<(String, Bytes)> =
                    std::mem::take(&mut g.joining).into_iter().collect();
                let leader = members[0].0.clone();
                g.round = Some((g.generation, leader, members));
                g.window_end = None;
            }
        }
        if g.window_end.is_none() {
            if let Some((gen, leader, members)) = &g.round {
                if members.iter().any(|(m, _)| *m == member) {
                    let mut r = JoinGroupResponse::default()
                        .with_generation_id(*gen)
                        .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                        .with_protocol_name(Some(StrBytes::from_static_str("range")))
                        .with_leader(StrBytes::from_string(leader.clone()))
                        .with_member_id(StrBytes::from_string(member.clone()));
                    if *leader == member {
                        r.members = members
                            .iter()
                            .map(|(m, md)| {
                                kafka_protocol::messages::join_group_response::JoinGroupResponseMember::default()
                                    .with_member_id(StrBytes::from_string(m.clone()))
                                    .with_metadata(md.clone())
                            })
                            .collect();
                    }
                    return r;
                }
            }
        }
        drop(st);
        thread::sleep(Duration::from_millis(5));
    }
}
