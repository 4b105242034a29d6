//! The fake Kafka broker for tests: in process, on 127.0.0.1, one std thread per connection,
//! speaking through the project's codec. Requests are read with `shardlog_protocol::frame`
//! (`frame_len`, then `decode_request`, the broker's own decoder) and answers written with
//! `frame::encode_response`, so the fake parses requests exactly as Shardlog does and its answers
//! decode with `shardlog_protocol::request::decode_response` as any broker's must.
//!
//! Behind the cargo feature `fake-broker` (off by default; always compiled for this crate's
//! own tests). Two ways to answer, same server:
//!
//! - [`FakeBroker::start`] and [`FakeBroker::with_topics`]: a small in-memory broker, node 0
//!   and controller of a one-broker cluster `fake`. ApiVersions (ranges as in `RANGES`, each
//!   lowered by [`State::max_versions`]), Metadata (unknown topics answer
//!   UNKNOWN_TOPIC_OR_PARTITION), CreateTopics, Produce (batches validated and given offsets;
//!   acks=0 is not answered), ListOffsets, Fetch (waits up to `max_wait_ms` for data),
//!   ElectLeaders (recorded, with scripted per-partition outcomes), and a classic consumer
//!   group coordinator: FindCoordinator, JoinGroup with the MEMBER_ID_REQUIRED two-step,
//!   SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch (v7 and older) and
//!   DescribeGroups (see [`Group`]), and a transaction coordinator and producer state:
//!   InitProducerId, AddPartitionsToTxn (v0-3), EndTxn, ListTransactions, DescribeTransactions
//!   and DescribeProducers (see [`Txn`] and [`ProducerEntry`]; Produce checks the sequences
//!   and the transaction of batches that carry a producer id). Anything else closes the
//!   connection.
//! - [`FakeBroker::scripted`]: a closure answers each request with a [`Reply`]: a response,
//!   malformed bytes, or nothing. [`FakeBroker::join`] waits for the connections to end and
//!   re-raises a panic of the closure, so asserts inside it fail the test.
//!
//! Either can be made to go away mid-run ([`FakeBroker::kill`]: every socket shut down, no
//! new accepts); dropping it does the same.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
    },
    describe_producers_response as producers_response,
    describe_transactions_response as describe_txn_response,
    list_transactions_response as list_txn_response, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::messages::{
    api_versions_response::ApiVersion,
    create_topics_response::CreatableTopicResult,
    describe_groups_response::{DescribedGroup, DescribedGroupMember},
    elect_leaders_response::{PartitionResult, ReplicaElectionResult},
    fetch_response::{FetchableTopicResponse, PartitionData},
    find_coordinator_response::Coordinator,
    join_group_response::JoinGroupResponseMember,
    list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
    metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic},
    offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic},
    offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic},
    produce_response::{PartitionProduceResponse, TopicProduceResponse},
    ApiKey, ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, ElectLeadersRequest, ElectLeadersResponse,
    FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    ProduceRequest, ProduceResponse, RequestHeader, RequestKind, ResponseKind, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use shardlog_protocol::{batch, frame};

use crate::codes;

/// One request as the fake read it.
#[derive(Debug)]
pub struct Request {
    /// The fake's own port: metadata that points clients back at the fake needs it.
    pub port: u16,
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub body: RequestKind,
}

impl Request {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// What the fake does with a request.
#[derive(Debug)]
pub enum Reply {
    /// This response, encoded with `frame::encode_response` at the request's version.
    Response(ResponseKind),
    /// This response encoded at another version than the request's: how a broker answers an
    /// ApiVersions version it does not know (v0 layout, UNSUPPORTED_VERSION; KIP-511).
    ResponseAt(i16, ResponseKind),
    /// These bytes after the size prefix, as they are (correlation id, header, body): a
    /// malformed or hostile answer.
    Raw(Vec<u8>),
    /// No answer; the connection stays open (acks=0, or a broker that never answers).
    Nothing,
    /// Close the connection without answering.
    Close,
}

type Answer = dyn Fn(&Request) -> Reply + Send + Sync;

/// The versions the in-memory broker advertises (each within what the codec implements).
const RANGES: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    // v8+ batch groups in another layout, which this fake does not read.
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
];

/// How long a JoinGroup round gathers members before it completes for everyone who joined.
const JOIN_WINDOW: Duration = Duration::from_millis(500);
/// How long a SyncGroup waits for the leader's assignments before REBALANCE_IN_PROGRESS.
const SYNC_WAIT: Duration = Duration::from_secs(10);
/// The fake's node id (also the controller, every partition's leader and every coordinator).
const NODE_ID: i32 = 0;

/// What the in-memory broker holds; tests read it and set the scripted parts.
#[derive(Debug, Default)]
pub struct State {
    topics: BTreeMap<String, Vec<Log>>,
    /// Consumer groups by id.
    pub groups: BTreeMap<String, Group>,
    next_member: u64,
    /// Highest version advertised per API key, lowering `RANGES` (set before connecting).
    pub max_versions: BTreeMap<i16, i16>,
    /// Every ElectLeaders request received, with its version.
    pub elect_requests: Vec<(i16, ElectLeadersRequest)>,
    /// ElectLeaders outcome (error code, message) per partition; unlisted existing partitions
    /// are elected (0), unknown ones get UNKNOWN_TOPIC_OR_PARTITION.
    pub elect_results: BTreeMap<(String, i32), (i16, Option<String>)>,
    /// ElectLeaders top-level error code (v1+).
    pub elect_error: i16,
    /// Partitions (by index, in every topic) whose fetched batches carry a damaged last byte,
    /// so their CRC check fails, as a log with a flipped bit on disk would serve them.
    pub corrupt_partitions: BTreeSet<i32>,
    /// Transactions by transactional id: InitProducerId, AddPartitionsToTxn and EndTxn keep
    /// them; tests may add some for ListTransactions and DescribeTransactions.
    pub transactions: BTreeMap<String, Txn>,
    /// Every transaction request received (InitProducerId, AddPartitionsToTxn, EndTxn,
    /// ListTransactions, DescribeTransactions, DescribeProducers) with its version, in order.
    pub txn_requests: Vec<(i16, RequestKind)>,
    /// The transactional id of every Produce request received (`None`: not transactional).
    pub produce_transactional_ids: Vec<Option<String>>,
    /// Producer state per (topic, partition) and producer id, as DescribeProducers shows it:
    /// kept by Produce for batches with a producer id; tests may add entries.
    pub producers: BTreeMap<(String, i32), BTreeMap<i64, ProducerEntry>>,
    next_producer_id: i64,
}

/// A transaction of the fake coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub producer_id: i64,
    pub epoch: i16,
    /// Kafka's state names: `Empty`, `Ongoing`, `CompleteCommit`, `CompleteAbort`, ...
    pub state: String,
    pub timeout_ms: i32,
    /// When the open transaction began (ms since the epoch; -1 when none is open).
    pub start_ms: i64,
    /// The open transaction's partitions.
    pub partitions: BTreeSet<(String, i32)>,
    pub commits: u32,
    pub aborts: u32,
}

/// One producer's state on one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// First offset of its open transaction on the partition, -1 when none.
    pub txn_start_offset: i64,
}

impl State {
    /// The group `id`, created empty when the fake has not heard of it.
    pub fn group(&mut self, id: &str) -> &mut Group {
        self.groups.entry(id.to_string()).or_default()
    }

    fn log(&self, topic: &str, partition: i32) -> Option<&Log> {
        self.topics
            .get(topic)?
            .get(usize::try_from(partition).ok()?)
    }

    fn log_mut(&mut self, topic: &str, partition: i32) -> Option<&mut Log> {
        self.topics
            .get_mut(topic)?
            .get_mut(usize::try_from(partition).ok()?)
    }
}

/// One partition's log.
#[derive(Debug, Default)]
struct Log {
    /// Records `0..preloaded` are not stored but made up on each fetch: values
    /// `p<partition>-<offset>`, one batch starting one record before the fetch offset (as a
    /// broker's batch does when the offset falls inside it), so clients must skip records
    /// before their position.
    preloaded: i64,
    /// Produced batches back to back, with their offsets assigned.
    bytes: Vec<u8>,
    /// (base offset, last offset, start, end) of each batch in `bytes`.
    batches: Vec<(i64, i64, usize, usize)>,
    /// The next offset: the high watermark.
    next: i64,
}

/// A classic consumer group, simplified. JoinGroup requests gather for `JOIN_WINDOW`, then
/// the round completes for everyone who joined: a new generation, the member with the
/// smallest id leads. The leader's SyncGroup hands out the assignments. A heartbeat of another
/// generation, or while a round gathers, answers REBALANCE_IN_PROGRESS. Leaving removes the
/// member; commits are kept per group whatever the generation.
#[derive(Debug, Default)]
pub struct Group {
    /// JoinGroup requests received (the MEMBER_ID_REQUIRED round trip included).
    pub join_calls: usize,
    /// The current generation (0 before the first round).
    pub generation: i32,
    /// The current generation's members with their subscription metadata.
    pub members: BTreeMap<String, Bytes>,
    /// The current generation's leader.
    pub leader: String,
    /// Assignments from the leaders' SyncGroups, per (generation, member id).
    pub assignments: BTreeMap<(i32, String), Bytes>,
    /// Committed offsets per (topic, partition).
    pub committed: BTreeMap<(String, i32), i64>,
    /// Members asking to join the round being gathered.
    joining: BTreeMap<String, Bytes>,
    /// When the round being gathered completes.
    window_end: Option<Instant>,
    /// Generations whose leader has sent the assignments.
    synced: BTreeSet<i32>,
}

impl Group {
    /// Completes the round being gathered once its window has passed.
    fn complete_round(&mut self) {
        if self.window_end.is_some_and(|end| Instant::now() >= end) {
            self.generation += 1;
            self.members = std::mem::take(&mut self.joining);
            self.leader = self.members.keys().next().cloned().unwrap_or_default();
            self.window_end = None;
        }
    }
}

/// A fake broker listening on `addr`; see the module documentation.
pub struct FakeBroker {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// What the in-memory broker holds (empty for a scripted one).
    pub state: Arc<Mutex<State>>,
    killed: Arc<AtomicBool>,
    /// A clone of every accepted connection (to shut them down).
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// The accepting thread and one thread per connection.
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FakeBroker {
    /// An in-memory broker without topics (CreateTopics and Produce fill it).
    pub fn start() -> FakeBroker {
        FakeBroker::with_topics(&[], 0)
    }

    /// An in-memory broker serving `topics` (name, partition count); every partition already
    /// holds records `0..records` with values `p<partition>-<offset>`.
    pub fn with_topics(topics: &[(&str, i32)], records: i64) -> FakeBroker {
        let mut st = State::default();
        for (name, partitions) in topics {
            let logs = (0..*partitions)
                .map(|_| Log {
                    preloaded: records,
                    next: records,
                    ..Log::default()
                })
                .collect();
            st.topics.insert(name.to_string(), logs);
        }
        let state = Arc::new(Mutex::new(st));
        let shared = state.clone();
        FakeBroker::serve(state, Arc::new(move |req: &Request| answer(&shared, req)))
    }

    /// A broker whose every answer comes from `answer`; see [`Reply`].
    pub fn scripted(answer: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FakeBroker {
        FakeBroker::serve(Arc::new(Mutex::new(State::default())), Arc::new(answer))
    }

    fn serve(state: Arc<Mutex<State>>, answer: Arc<Answer>) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake broker: bind");
        listener
            .set_nonblocking(true)
            .expect("fake broker: nonblocking listener");
        let local = listener.local_addr().expect("fake broker: local address");
        let killed = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let (k, c, t) = (killed.clone(), conns.clone(), threads.clone());
        let acceptor = thread::spawn(move || {
            while !k.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream
                            .set_nonblocking(false)
                            .expect("fake broker: blocking connection");
                        let clone = stream.try_clone().expect("fake broker: clone connection");
                        lock(&c).push(clone);
                        let (answer, k) = (answer.clone(), k.clone());
                        let handle = thread::spawn(move || {
                            serve_connection(stream, local.port(), &*answer, &k)
                        });
                        lock(&t).push(handle);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        lock(&threads).push(acceptor);
        FakeBroker {
            addr: local.to_string(),
            state,
            killed,
            conns,
            threads,
        }
    }

    /// How many connections the fake has accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.conns).len()
    }

    /// Records in `topic` (all partitions).
    pub fn records(&self, topic: &str) -> i64 {
        lock(&self.state)
            .topics
            .get(topic)
            .map_or(0, |ps| ps.iter().map(|l| l.next).sum())
    }

    /// Partitions of `topic` (0 when it does not exist).
    pub fn partitions(&self, topic: &str) -> usize {
        lock(&self.state).topics.get(topic).map_or(0, Vec::len)
    }

    /// Closes every connection and stops accepting: the broker "goes away".
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        for c in lock(&self.conns).iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Stops accepting, waits until every connection has ended (the clients closed them) and
    /// re-raises the first panic of the answering code (the asserts of a script).
    pub fn join(self) {
        self.killed.store(true, Ordering::Relaxed);
        let mut panic = None;
        loop {
            // The accepting thread may add a last connection while the first ones are joined.
            let handles: Vec<JoinHandle<()>> = lock(&self.threads).drain(..).collect();
            if handles.is_empty() {
                break;
            }
            for h in handles {
                if let Err(p) = h.join() {
                    panic.get_or_insert(p);
                }
            }
        }
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads requests and writes answers until the client closes the connection, the fake is
/// killed or the answer says to close.
fn serve_connection(mut stream: TcpStream, port: u16, answer: &Answer, killed: &AtomicBool) {
    loop {
        let mut prefix = [0u8; frame::SIZE_PREFIX_LEN];
        if stream.read_exact(&mut prefix).is_err() || killed.load(Ordering::Relaxed) {
            return;
        }
        let len = match frame::frame_len(&prefix, frame::DEFAULT_MAX_REQUEST_BYTES) {
            Ok(Some(len)) => len,
            Ok(None) => return,
            Err(e) => {
                eprintln!("fake broker: closing a connection: {e}");
                return;
            }
        };
        let mut buf = vec![0u8; len];
        if stream.read_exact(&mut buf).is_err() {
            return;
        }
        let decoded = match frame::decode_request(Bytes::from(buf)) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("fake broker: closing a connection: {e}");
                return;
            }
        };
        let req = Request {
            port,
            header: decoded.header,
            api_key: decoded.api_key,
            body: decoded.body,
        };
        let (api_key, correlation_id) = (req.api_key, req.correlation_id());
        let mut out = BytesMut::new();
        let (version, body) = match answer(&req) {
            Reply::Response(body) => (req.version(), body),
            Reply::ResponseAt(version, body) => (version, body),
            Reply::Raw(bytes) => {
                out.put_i32(i32::try_from(bytes.len()).expect("raw reply fits a frame"));
                out.put_slice(&bytes);
                if stream.write_all(&out).is_err() {
                    return;
                }
                continue;
            }
            Reply::Nothing => continue,
            Reply::Close => return,
        };
        if let Err(e) = frame::encode_response(correlation_id, api_key, version, &body, &mut out) {
            // A bug in the fake or its script, not in the client under test.
            panic!("fake broker cannot encode its {api_key:?} v{version} answer: {e}");
        }
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn topic_name(text: &str) -> TopicName {
    TopicName(s(text))
}

/// The in-memory broker's answer to one request.
fn answer(state: &Mutex<State>, req: &Request) -> Reply {
    let v = req.version();
    let port = req.port;
    let response = match &req.body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions(&lock(state))),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata(&lock(state), r, port)),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics(&mut lock(state), r))
        }
        RequestKind::Produce(r) => {
            let response = produce(&mut lock(state), r);
            if r.acks == 0 {
                return Reply::Nothing;
            }
            ResponseKind::Produce(response)
        }
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets(&lock(state), r)),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch(state, r)),
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator(r, v, port))
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(join_group(state, r, v)),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(sync_group(state, r, v)),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat(&mut lock(state), r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(leave_group(&mut lock(state), r)),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offset_commit(&mut lock(state), r))
        }
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offset_fetch(&mut lock(state), r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups(&lock(state), r))
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elect_leaders(&mut lock(state), r, v))
        }
        RequestKind::InitProducerId(_)
        | RequestKind::AddPartitionsToTxn(_)
        | RequestKind::EndTxn(_)
        | RequestKind::ListTransactions(_)
        | RequestKind::DescribeTransactions(_)
        | RequestKind::DescribeProducers(_) => {
            let mut st = lock(state);
            st.txn_requests.push((v, req.body.clone()));
            match &req.body {
                RequestKind::InitProducerId(r) => {
                    ResponseKind::InitProducerId(init_producer_id(&mut st, r))
                }
                RequestKind::AddPartitionsToTxn(r) => {
                    ResponseKind::AddPartitionsToTxn(add_partitions_to_txn(&mut st, r))
                }
                RequestKind::EndTxn(r) => ResponseKind::EndTxn(end_txn(&mut st, r)),
                RequestKind::ListTransactions(r) => {
                    ResponseKind::ListTransactions(list_transactions(&st, r))
                }
                RequestKind::DescribeTransactions(r) => {
                    ResponseKind::DescribeTransactions(describe_transactions(&st, r))
                }
                RequestKind::DescribeProducers(r) => {
                    ResponseKind::DescribeProducers(describe_producers(&st, r))
                }
                _ => unreachable!("matched above"),
            }
        }
        _ => {
            eprintln!(
                "fake broker: {:?} is not implemented; closing the connection",
                req.api_key
            );
            return Reply::Close;
        }
    };
    Reply::Response(response)
}

fn api_versions(st: &State) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        RANGES
            .iter()
            .map(|&(key, min, max)| {
                let max = st.max_versions.get(&(key as i16)).copied().unwrap_or(max);
                ApiVersion::default()
                    .with_api_key(key as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect(),
    )
}

fn metadata(st: &State, req: &MetadataRequest, port: u16) -> MetadataResponse {
    let names: Vec<String> = match &req.topics {
        None => st.topics.keys().cloned().collect(),
        Some(ts) => ts
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect(),
    };
    let topics = names
        .iter()
        .map(|n| {
            let t = MetadataResponseTopic::default().with_name(Some(topic_name(n)));
            match st.topics.get(n) {
                None => t.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION),
                Some(logs) => t.with_partitions(
                    (0..logs.len() as i32)
                        .map(|p| {
                            MetadataResponsePartition::default()
                                .with_partition_index(p)
                                .with_leader_id(BrokerId(NODE_ID))
                                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                                .with_isr_nodes(vec![BrokerId(NODE_ID)])
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    MetadataResponse::default()
        .with_cluster_id(Some(s("fake")))
        .with_controller_id(BrokerId(NODE_ID))
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(s("127.0.0.1"))
            .with_port(port as i32)])
        .with_topics(topics)
}

fn create_topics(st: &mut State, req: &CreateTopicsRequest) -> CreateTopicsResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let code = match st.topics.entry(t.name.0.to_string()) {
                Entry::Occupied(_) => codes::TOPIC_ALREADY_EXISTS,
                Entry::Vacant(e) => {
                    let partitions = t.num_partitions.max(1);
                    e.insert((0..partitions).map(|_| Log::default()).collect());
                    codes::NONE
                }
            };
            CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code)
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// Appends every batch of each partition's records, validated by the broker's own check
/// (`batch::split_batches`) and given offsets as the broker does (`batch::assign_offset`).
fn produce(st: &mut State, req: &ProduceRequest) -> ProduceResponse {
    let txn_id = req.transactional_id.as_ref().map(|t| t.0.to_string());
    st.produce_transactional_ids.push(txn_id.clone());
    let responses = req
        .topic_data
        .iter()
        .map(|t| {
            let partitions = t
                .partition_data
                .iter()
                .map(|p| {
                    let r = PartitionProduceResponse::default().with_index(p.index);
                    let data = p.records.clone().unwrap_or_default();
                    let key = (t.name.0.to_string(), p.index);
                    if let Err(code) = check_producer(st, &key, txn_id.as_deref(), &data) {
                        return r.with_error_code(code);
                    }
                    let Some(log) = st.log_mut(&t.name.0, p.index) else {
                        return r.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    match append(log, &data) {
                        Ok(base) => {
                            note_producer(st, &key, base, &data);
                            r.with_base_offset(base)
                        }
                        Err(e) => r.with_error_code(e.kafka_code()),
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(partitions)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}

/// Appends the batches of `data` to `log`; returns the first one's base offset.
fn append(log: &mut Log, data: &[u8]) -> Result<i64, batch::BatchError> {
    let batches = batch::split_batches(data, usize::MAX)?;
    let first = log.next;
    for (pos, header) in batches {
        let mut bytes = data[pos..pos + header.total_len()].to_vec();
        let base = log.next;
        batch::assign_offset(&mut bytes, base, 0);
        let last = base + i64::from(header.last_offset_delta);
        let start = log.bytes.len();
        log.bytes.extend_from_slice(&bytes);
        log.batches.push((base, last, start, log.bytes.len()));
        log.next = last + 1;
    }
    Ok(first)
}

fn list_offsets(st: &State, req: &ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match st.log(&t.name.0, p.partition_index) {
                        None => r.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION),
                        Some(log) => {
                            let earliest = p.timestamp == crate::EARLIEST_TIMESTAMP;
                            r.with_offset(if earliest { 0 } else { log.next })
                                .with_timestamp(-1)
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// Answers at once when some partition has records at its fetch offset, else after
/// `max_wait_ms` (or earlier, when records arrive).
fn fetch(state: &Mutex<State>, req: &FetchRequest) -> FetchResponse {
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    loop {
        let st = lock(state);
        let mut any = false;
        let topics = req
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let r = PartitionData::default().with_partition_index(p.partition);
                        let Some(log) = st.log(&t.topic.0, p.partition) else {
                            return r.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION);
                        };
                        let corrupt = st.corrupt_partitions.contains(&p.partition);
                        let max_bytes = usize::try_from(p.partition_max_bytes).unwrap_or(0);
                        let data = read(log, p.partition, p.fetch_offset, max_bytes, corrupt);
                        any |= !data.is_empty();
                        r.with_high_watermark(log.next)
                            .with_last_stable_offset(log.next)
                            .with_log_start_offset(0)
                            .with_records(Some(Bytes::from(data)))
                    })
                    .collect();
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(partitions)
            })
            .collect();
        drop(st);
        if any || Instant::now() >= deadline {
            return FetchResponse::default().with_responses(topics);
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// The batches of `log` from the one holding `from`, while under `max_bytes` (the first is
/// always whole). `corrupt` flips a bit of each batch's last byte, which the CRC covers.
fn read(log: &Log, partition: i32, from: i64, max_bytes: usize, corrupt: bool) -> Vec<u8> {
    let mut data = Vec::new();
    let push = |data: &mut Vec<u8>, bytes: &[u8]| {
        data.extend_from_slice(bytes);
        if corrupt {
            if let Some(last) = data.last_mut() {
                *last ^= 0x01;
            }
        }
    };
    if from < log.preloaded {
        let start = (from - 1).max(0);
        let values: Vec<Vec<u8>> = (start..log.preloaded)
            .map(|o| format!("p{partition}-{o}").into_bytes())
            .collect();
        let records: Vec<batch::SimpleRecord> =
            values.iter().map(|v| (None, Some(v.as_slice()))).collect();
        push(
            &mut data,
            &batch::build_simple_batch(start, 1_000, &records),
        );
    }
    for &(_, last, start, end) in &log.batches {
        if last >= from && (data.is_empty() || data.len() < max_bytes) {
            push(&mut data, &log.bytes[start..end]);
        }
    }
    data
}

fn find_coordinator(req: &FindCoordinatorRequest, v: i16, port: u16) -> FindCoordinatorResponse {
    let mut r = FindCoordinatorResponse::default();
    if v >= 4 {
        r.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(NODE_ID))
                    .with_host(s("127.0.0.1"))
                    .with_port(port as i32)
            })
            .collect();
    } else {
        r = r
            .with_node_id(BrokerId(NODE_ID))
            .with_host(s("127.0.0.1"))
            .with_port(port as i32);
    }
    r
}

/// Joins the round being gathered and waits for it to complete (see [`Group`]).
fn join_group(state: &Mutex<State>, req: &JoinGroupRequest, v: i16) -> JoinGroupResponse {
    let key = req.group_id.0.to_string();
    let mut member = req.member_id.to_string();
    let round = {
        let mut st = lock(state);
        st.group(&key).join_calls += 1;
        if member.is_empty() {
            st.next_member += 1;
            member = format!("member-{}", st.next_member);
            if v >= 4 {
                // KIP-394: the client joins again with the id handed out here.
                return JoinGroupResponse::default()
                    .with_error_code(codes::MEMBER_ID_REQUIRED)
                    .with_member_id(s(&member));
            }
        }
        let g = st.group(&key);
        let metadata = req
            .protocols
            .first()
            .map(|p| p.metadata.clone())
            .unwrap_or_default();
        g.joining.insert(member.clone(), metadata);
        g.window_end.get_or_insert(Instant::now() + JOIN_WINDOW);
        // The next round to complete takes everyone gathered so far.
        g.generation + 1
    };
    loop {
        {
            let mut st = lock(state);
            let g = st.group(&key);
            g.complete_round();
            if g.generation > round {
                // Another round completed before this member looked: it must join again.
                return JoinGroupResponse::default()
                    .with_error_code(codes::REBALANCE_IN_PROGRESS)
                    .with_member_id(s(&member));
            }
            if g.generation == round {
                if !g.members.contains_key(&member) {
                    return JoinGroupResponse::default()
                        .with_error_code(codes::UNKNOWN_MEMBER_ID)
                        .with_member_id(s(&member));
                }
                let mut r = JoinGroupResponse::default()
                    .with_generation_id(g.generation)
                    .with_protocol_name(Some(s("range")))
                    .with_leader(s(&g.leader))
                    .with_member_id(s(&member));
                if v >= 7 {
                    r.protocol_type = Some(s("consumer"));
                }
                if g.leader == member {
                    r.members = g
                        .members
                        .iter()
                        .map(|(m, md)| {
                            JoinGroupResponseMember::default()
                                .with_member_id(s(m))
                                .with_metadata(md.clone())
                        })
                        .collect();
                }
                return r;
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Keeps the leader's assignments and answers each member its own once the leader has sent
/// them (empty when the leader gave it nothing).
fn sync_group(state: &Mutex<State>, req: &SyncGroupRequest, v: i16) -> SyncGroupResponse {
    let key = req.group_id.0.to_string();
    let member = req.member_id.to_string();
    let generation = req.generation_id;
    {
        let mut st = lock(state);
        let g = st.group(&key);
        let from_leader = g.generation == generation && g.leader == member;
        for a in &req.assignments {
            g.assignments
                .insert((generation, a.member_id.to_string()), a.assignment.clone());
        }
        if from_leader || !req.assignments.is_empty() {
            g.synced.insert(generation);
        }
    }
    let deadline = Instant::now() + SYNC_WAIT;
    let assignment = loop {
        {
            let mut st = lock(state);
            let g = st.group(&key);
            if g.synced.contains(&generation) {
                let mine = g.assignments.get(&(generation, member.clone()));
                break Some(mine.cloned().unwrap_or_default());
            }
        }
        if Instant::now() > deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let mut r = match assignment {
        Some(a) => SyncGroupResponse::default().with_assignment(a),
        None => SyncGroupResponse::default().with_error_code(codes::REBALANCE_IN_PROGRESS),
    };
    if v >= 5 {
        r.protocol_type = Some(s("consumer"));
        r.protocol_name = Some(s("range"));
    }
    r
}

fn heartbeat(st: &mut State, req: &HeartbeatRequest) -> HeartbeatResponse {
    let g = st.group(&req.group_id.0);
    g.complete_round();
    let code = if g.generation == req.generation_id && g.window_end.is_none() {
        codes::NONE
    } else {
        codes::REBALANCE_IN_PROGRESS
    };
    HeartbeatResponse::default().with_error_code(code)
}

fn leave_group(st: &mut State, req: &LeaveGroupRequest) -> LeaveGroupResponse {
    let g = st.group(&req.group_id.0);
    if req.members.is_empty() {
        g.members.remove(&*req.member_id);
    }
    for m in &req.members {
        g.members.remove(&*m.member_id);
    }
    LeaveGroupResponse::default()
}

fn offset_commit(st: &mut State, req: &OffsetCommitRequest) -> OffsetCommitResponse {
    let g = st.group(&req.group_id.0);
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    g.committed.insert(
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                    OffsetCommitResponsePartition::default().with_partition_index(p.partition_index)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// The committed offsets asked for (-1 where there is none), or all of the group's.
fn offset_fetch(st: &mut State, req: &OffsetFetchRequest) -> OffsetFetchResponse {
    let g = st.group(&req.group_id.0);
    let mut by_topic: BTreeMap<String, Vec<OffsetFetchResponsePartition>> = BTreeMap::new();
    let mut add = |topic: &str, partition: i32, offset: i64| {
        by_topic.entry(topic.to_string()).or_default().push(
            OffsetFetchResponsePartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset),
        );
    };
    match &req.topics {
        Some(ts) => {
            for t in ts {
                for &p in &t.partition_indexes {
                    let key = (t.name.0.to_string(), p);
                    add(&t.name.0, p, g.committed.get(&key).copied().unwrap_or(-1));
                }
            }
        }
        None => {
            for ((t, p), o) in &g.committed {
                add(t, *p, *o);
            }
        }
    }
    OffsetFetchResponse::default().with_topics(
        by_topic
            .into_iter()
            .map(|(t, ps)| {
                OffsetFetchResponseTopic::default()
                    .with_name(topic_name(&t))
                    .with_partitions(ps)
            })
            .collect(),
    )
}

/// A group the fake has not heard of is `Dead`, as Kafka answers; one without members
/// `Empty`, else `Stable`.
fn describe_groups(st: &State, req: &DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            let Some(g) = st.groups.get(&*id.0) else {
                return described.with_group_state(s("Dead"));
            };
            let state = if g.members.is_empty() {
                "Empty"
            } else {
                "Stable"
            };
            let members = g
                .members
                .keys()
                .map(|m| {
                    let assignment = g.assignments.get(&(g.generation, m.clone()));
                    DescribedGroupMember::default()
                        .with_member_id(s(m))
                        .with_client_id(s("test"))
                        .with_client_host(s("/127.0.0.1"))
                        .with_member_assignment(assignment.cloned().unwrap_or_default())
                })
                .collect();
            described
                .with_group_state(s(state))
                .with_protocol_type(s("consumer"))
                .with_protocol_data(s("range"))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// Records the request and answers each partition asked for (every partition when the request
/// names none) with its scripted outcome.
fn elect_leaders(st: &mut State, req: &ElectLeadersRequest, v: i16) -> ElectLeadersResponse {
    let asked: Vec<(String, Vec<i32>)> = match &req.topic_partitions {
        Some(tps) => tps
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect(),
        None => st
            .topics
            .iter()
            .map(|(t, logs)| (t.clone(), (0..logs.len() as i32).collect()))
            .collect(),
    };
    st.elect_requests.push((v, req.clone()));
    let results = asked
        .iter()
        .map(|(t, ps)| {
            let partitions = ps
                .iter()
                .map(|&p| {
                    let (code, message) = if st.log(t, p).is_some() {
                        let outcome = st.elect_results.get(&(t.clone(), p)).cloned();
                        outcome.unwrap_or((codes::NONE, None))
                    } else {
                        let message = Some("no such partition".to_string());
                        (codes::UNKNOWN_TOPIC_OR_PARTITION, message)
                    };
                    PartitionResult::default()
                        .with_partition_id(p)
                        .with_error_code(code)
                        .with_error_message(message.as_deref().map(s))
                })
                .collect();
            ReplicaElectionResult::default()
                .with_topic(topic_name(t))
                .with_partition_result(partitions)
        })
        .collect();
    let mut r = ElectLeadersResponse::default().with_replica_election_results(results);
    if v >= 1 {
        r.error_code = st.elect_error;
    }
    r
}

/// Kafka's next sequence after `sequence` + `count` records (wrapping past `i32::MAX` to 0).
fn next_sequence(sequence: i32, count: i32) -> i32 {
    ((i64::from(sequence) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The checks of a partition leader on batches with a producer id: the first batch of an
/// epoch starts at sequence 0, each next one where the last ended (OUT_OF_ORDER_SEQUENCE_NUMBER
/// otherwise); a transactional batch needs the request's transactional id, whose open
/// transaction holds the partition under the same producer id and epoch (INVALID_TXN_STATE).
fn check_producer(
    st: &State,
    key: &(String, i32),
    txn_id: Option<&str>,
    data: &[u8],
) -> Result<(), i16> {
    let Ok(batches) = batch::split_batches(data, usize::MAX) else {
        return Ok(()); // append reports it
    };
    let mut expected: BTreeMap<i64, (i16, i32)> = BTreeMap::new();
    for (_, h) in batches {
        if h.producer_id < 0 {
            continue;
        }
        let last = expected.get(&h.producer_id).copied().or_else(|| {
            let e = st.producers.get(key)?.get(&h.producer_id)?;
            Some((e.epoch, e.last_sequence))
        });
        let want = match last {
            Some((epoch, last_sequence)) if epoch == h.producer_epoch => {
                next_sequence(last_sequence, 1)
            }
            _ => 0,
        };
        if h.base_sequence != want {
            return Err(codes::OUT_OF_ORDER_SEQUENCE_NUMBER);
        }
        if h.is_transactional() {
            let txn = txn_id.and_then(|id| st.transactions.get(id));
            let in_txn = txn.is_some_and(|t| {
                t.state == "Ongoing"
                    && t.producer_id == h.producer_id
                    && t.epoch == h.producer_epoch
                    && t.partitions.contains(key)
            });
            if !in_txn {
                return Err(ResponseError::InvalidTxnState.code());
            }
        }
        let last_sequence = next_sequence(h.base_sequence, h.records_count) - 1;
        let last_sequence = if last_sequence < 0 {
            i32::MAX
        } else {
            last_sequence
        };
        expected.insert(h.producer_id, (h.producer_epoch, last_sequence));
    }
    Ok(())
}

/// Keeps the producer state of the batches just appended at `base`.
fn note_producer(st: &mut State, key: &(String, i32), base: i64, data: &[u8]) {
    let Ok(batches) = batch::split_batches(data, usize::MAX) else {
        return;
    };
    let mut offset = base;
    for (_, h) in batches {
        let first = offset;
        offset += i64::from(h.last_offset_delta) + 1;
        if h.producer_id < 0 {
            continue;
        }
        let e = st
            .producers
            .entry(key.clone())
            .or_default()
            .entry(h.producer_id)
            .or_insert(ProducerEntry {
                txn_start_offset: -1,
                ..ProducerEntry::default()
            });
        if e.epoch != h.producer_epoch {
            e.txn_start_offset = -1;
        }
        e.epoch = h.producer_epoch;
        let last = next_sequence(h.base_sequence, h.records_count) - 1;
        e.last_sequence = if last < 0 { i32::MAX } else { last };
        e.last_timestamp = h.max_timestamp;
        if h.is_transactional() && e.txn_start_offset < 0 {
            e.txn_start_offset = first;
        }
    }
}

/// A new producer id for an unknown transactional id (or none), the same id with the next
/// epoch for a known one, whose open transaction is aborted.
fn init_producer_id(st: &mut State, req: &InitProducerIdRequest) -> InitProducerIdResponse {
    st.next_producer_id += 1;
    let fresh = 1000 + st.next_producer_id;
    let (producer_id, epoch) = match &req.transactional_id {
        None => (fresh, 0),
        Some(id) => {
            let t = st.transactions.entry(id.0.to_string()).or_insert(Txn {
                producer_id: fresh,
                epoch: -1,
                ..Txn::default()
            });
            t.epoch += 1;
            t.state = "Empty".to_string();
            t.timeout_ms = req.transaction_timeout_ms;
            t.start_ms = -1;
            t.partitions.clear();
            (t.producer_id, t.epoch)
        }
    };
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
}

/// The code for a transaction request of `producer_id`/`epoch` on transaction `id`.
fn txn_check(st: &State, id: &str, producer_id: i64, epoch: i16) -> i16 {
    match st.transactions.get(id) {
        None => ResponseError::InvalidProducerIdMapping.code(),
        Some(t) if t.producer_id != producer_id => ResponseError::InvalidProducerIdMapping.code(),
        Some(t) if t.epoch != epoch => ResponseError::InvalidProducerEpoch.code(),
        Some(_) => codes::NONE,
    }
}

fn add_partitions_to_txn(
    st: &mut State,
    req: &AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let id = req.v3_and_below_transactional_id.0.to_string();
    let mut code = txn_check(
        st,
        &id,
        req.v3_and_below_producer_id.0,
        req.v3_and_below_producer_epoch,
    );
    let unknown: BTreeSet<(String, i32)> = req
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .filter(|(t, p)| st.log(t, *p).is_none())
        .collect();
    if code == codes::NONE && unknown.is_empty() {
        let t = st.transactions.get_mut(&id).expect("checked");
        if t.state != "Ongoing" {
            t.state = "Ongoing".to_string();
            t.start_ms = now_ms();
        }
        for topic in &req.v3_and_below_topics {
            for p in &topic.partitions {
                t.partitions.insert((topic.name.0.to_string(), *p));
            }
        }
    } else if code == codes::NONE {
        code = ResponseError::OperationNotAttempted.code();
    }
    let results = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let c = if unknown.contains(&(t.name.0.to_string(), *p)) {
                        codes::UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        code
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(c)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(partitions)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

fn end_txn(st: &mut State, req: &EndTxnRequest) -> EndTxnResponse {
    let id = req.transactional_id.0.to_string();
    let code = txn_check(st, &id, req.producer_id.0, req.producer_epoch);
    if code != codes::NONE {
        return EndTxnResponse::default().with_error_code(code);
    }
    let t = st.transactions.get_mut(&id).expect("checked");
    if t.state != "Ongoing" {
        return EndTxnResponse::default().with_error_code(ResponseError::InvalidTxnState.code());
    }
    if req.committed {
        t.state = "CompleteCommit".to_string();
        t.commits += 1;
    } else {
        t.state = "CompleteAbort".to_string();
        t.aborts += 1;
    }
    t.start_ms = -1;
    let (producer_id, partitions) = (t.producer_id, std::mem::take(&mut t.partitions));
    for key in partitions {
        if let Some(e) = st
            .producers
            .get_mut(&key)
            .and_then(|ps| ps.get_mut(&producer_id))
        {
            e.txn_start_offset = -1;
        }
    }
    EndTxnResponse::default()
}

/// Kafka's transaction state names.
const TXN_STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

fn list_transactions(st: &State, req: &ListTransactionsRequest) -> ListTransactionsResponse {
    let now = now_ms();
    let states = st
        .transactions
        .iter()
        .filter(|(_, t)| {
            (req.state_filters.is_empty() || req.state_filters.iter().any(|s| **s == *t.state))
                && (req.producer_id_filters.is_empty()
                    || req.producer_id_filters.iter().any(|p| p.0 == t.producer_id))
                && (req.duration_filter < 0
                    || (t.start_ms >= 0 && now - t.start_ms >= req.duration_filter))
        })
        .map(|(id, t)| {
            list_txn_response::TransactionState::default()
                .with_transactional_id(TransactionalId(s(id)))
                .with_producer_id(ProducerId(t.producer_id))
                .with_transaction_state(s(&t.state))
        })
        .collect();
    let unknown = req
        .state_filters
        .iter()
        .filter(|f| !TXN_STATES.contains(&&***f))
        .cloned()
        .collect();
    ListTransactionsResponse::default()
        .with_transaction_states(states)
        .with_unknown_state_filters(unknown)
}

fn describe_transactions(
    st: &State,
    req: &DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .iter()
        .map(|id| {
            let r = describe_txn_response::TransactionState::default()
                .with_transactional_id(id.clone());
            let Some(t) = st.transactions.get(&*id.0) else {
                return r.with_error_code(ResponseError::TransactionalIdNotFound.code());
            };
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (topic, p) in &t.partitions {
                topics.entry(topic).or_default().push(*p);
            }
            r.with_transaction_state(s(&t.state))
                .with_transaction_timeout_ms(t.timeout_ms)
                .with_transaction_start_time_ms(t.start_ms)
                .with_producer_id(ProducerId(t.producer_id))
                .with_producer_epoch(t.epoch)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(topic, ps)| {
                            describe_txn_response::TopicData::default()
                                .with_topic(topic_name(topic))
                                .with_partitions(ps)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

fn describe_producers(st: &State, req: &DescribeProducersRequest) -> DescribeProducersResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&p| {
                    let r =
                        producers_response::PartitionResponse::default().with_partition_index(p);
                    if st.log(&t.name.0, p).is_none() {
                        return r.with_error_code(codes::UNKNOWN_TOPIC_OR_PARTITION);
                    }
                    let key = (t.name.0.to_string(), p);
                    let active = st
                        .producers
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .map(|(id, e)| {
                            producers_response::ProducerState::default()
                                .with_producer_id(ProducerId(*id))
                                .with_producer_epoch(i32::from(e.epoch))
                                .with_last_sequence(e.last_sequence)
                                .with_last_timestamp(e.last_timestamp)
                                .with_coordinator_epoch(e.coordinator_epoch)
                                .with_current_txn_start_offset(e.txn_start_offset)
                        })
                        .collect();
                    r.with_active_producers(active)
                })
                .collect();
            producers_response::TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
