//! Shardlog's blocking Kafka client over `std::net::TcpStream`, for `shardlog-cli`, the bench
//! harness's set-up (metadata, topic creation) and tests. It is not on any hot path: one request
//! at a time per connection (with optional pipelining), no background threads, no buffering of
//! produced records.
//!
//! The broker must not use this crate: a blocking socket on a shard would stall every partition
//! the shard owns. The broker's replica fetcher uses only the codec underneath,
//! `shardlog_protocol::request` ([`encode_request`], [`decode_response`]), over its own
//! io_uring sockets.
//!
//! Two layers:
//!
//! - [`Connection`]: one TCP connection to one broker. It performs the ApiVersions handshake
//!   (v3, falling back as Kafka prescribes when the broker answers UNSUPPORTED_VERSION), keeps the
//!   broker's version ranges, frames requests with increasing correlation ids and matches
//!   responses to them. Responses larger than [`Connection::max_response_bytes`] are refused
//!   before anything is allocated; every read and write is bounded by a timeout.
//! - [`Client`]: a bootstrap list, one [`Connection`] per broker id and a metadata cache. It
//!   routes partition requests to the partition leader and group requests to the group
//!   coordinator (FindCoordinator), and refreshes its metadata and retries once when a broker
//!   answers NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, NOT_COORDINATOR or
//!   COORDINATOR_NOT_AVAILABLE, or when a connection fails before the request was written.
//!   A request that timed out after it was sent is never retried: the broker may have carried
//!   it out, and creating a topic or appending records twice is worse than an error.
//!
//! Nothing received from a broker is trusted: every decode failure, unexpected correlation id or
//! oversized frame becomes [`ClientError::Protocol`], never a panic.
//!
//! With the cargo feature `fake-broker`, the module `fake_broker` is the one fake Kafka broker
//! of the workspace: an in-memory or scripted broker on std threads, built on the project's
//! codec, for the tests of this crate, `shardlog-cli` and `shardlog-bench`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    create_topics_request::{CreatableTopic, CreatableTopicConfig},
    delete_topics_request::DeleteTopicState,
    fetch_request::{FetchPartition, FetchTopic},
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
    produce_request::{PartitionProduceData, TopicProduceData},
    ApiKey, ApiVersionsRequest, BrokerId, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest,
    FindCoordinatorRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse, ProduceRequest,
    TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes, VersionRange};
pub use shardlog_protocol::request::api_name;
use shardlog_protocol::request::{decode_response, encode_request};

#[cfg(any(test, feature = "fake-broker"))]
pub mod fake_broker;
pub mod txn;

/// Largest response frame accepted by default (Kafka's `socket.request.max.bytes` default).
pub const MAX_RESPONSE_BYTES_DEFAULT: usize = 100 * 1024 * 1024;
/// Timeout for connecting, and for each read or write, unless the caller gives another.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// The ApiVersions version tried first; v3 is the first flexible one and what current clients use.
pub const API_VERSIONS_PREFERRED: i16 = 3;
/// `client_software_name` sent in ApiVersions v3+ (Kafka checks it against `[a-zA-Z0-9.-]+`).
pub const CLIENT_SOFTWARE_NAME: &str = "shardlog-client";

/// Kafka error codes, by name (the project's one table, `shardlog_protocol::errors`).
pub use shardlog_protocol::errors as codes;

/// ListOffsets timestamp asking for the log end offset (high watermark for consumers).
pub const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets timestamp asking for the log start offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;

/// Why a client operation failed. The three kinds need different reactions from a caller:
/// retry elsewhere or later (`Unreachable`), report a bug in one side (`Protocol`,
/// `UnsupportedApi`), or report what the broker refused (`Broker`).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, writing or reading failed or timed out; the connection is unusable.
    /// (The I/O error is the `source()`, not repeated in the message.)
    #[error("broker {addr} unreachable ({context})")]
    Unreachable {
        addr: String,
        context: String,
        /// Whether the request had been written when it failed: then the broker may have
        /// carried it out, and retrying could do it twice (create a topic, append records).
        request_sent: bool,
        #[source]
        source: std::io::Error,
    },
    /// The broker sent something this client cannot accept (malformed or oversized frame,
    /// unknown correlation id, undecodable body), or a request could not be encoded.
    #[error("protocol error with broker {addr}: {detail}")]
    Protocol { addr: String, detail: String },
    /// The broker does not support any version of this API that the client speaks.
    #[error("broker {addr} does not support {api} (broker versions: {broker_versions}, client versions: {client_versions})")]
    UnsupportedApi {
        addr: String,
        api: String,
        broker_versions: String,
        client_versions: String,
    },
    /// The broker answered with a Kafka error code.
    #[error("{name} ({code}) {context}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        code: i16,
        /// Kafka's name for the code, e.g. `UNKNOWN_TOPIC_OR_PARTITION`.
        name: String,
        /// What was being done, e.g. `creating topic "orders"`.
        context: String,
        /// The broker's error message, when the response carries one.
        message: Option<String>,
    },
}

impl ClientError {
    /// A broker error for `code` (which must not be 0) with Kafka's name for it.
    pub fn broker(code: i16, context: impl Into<String>, message: Option<String>) -> ClientError {
        ClientError::Broker {
            code,
            name: error_name(code),
            context: context.into(),
            message,
        }
    }

    /// Converts a response error code into `Ok(())` or a [`ClientError::Broker`].
    pub fn check(code: i16, context: impl FnOnce() -> String) -> Result<(), ClientError> {
        check_code(code, None, context)
    }

    /// The Kafka error code, for broker errors.
    pub fn code(&self) -> Option<i16> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when a metadata refresh may fix it: the leader moved or the topic is new.
    pub fn is_stale_metadata(&self) -> bool {
        matches!(
            self.code(),
            Some(
                codes::NOT_LEADER_OR_FOLLOWER
                    | codes::UNKNOWN_TOPIC_OR_PARTITION
                    | codes::LEADER_NOT_AVAILABLE
                    | codes::FENCED_LEADER_EPOCH
                    | codes::UNKNOWN_LEADER_EPOCH
            )
        )
    }

    /// True when the group coordinator must be looked up again.
    pub fn is_stale_coordinator(&self) -> bool {
        matches!(
            self.code(),
            Some(codes::NOT_COORDINATOR | codes::COORDINATOR_NOT_AVAILABLE)
        )
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }

    /// True when the request never reached the broker (connection refused, reset before or
    /// while writing): retrying elsewhere cannot do it twice.
    pub fn is_unsent(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable {
                request_sent: false,
                ..
            }
        )
    }

    /// Whether Kafka defines the error as retriable (always true for unreachable brokers).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Broker { code, .. } => {
                ResponseError::try_from_code(*code).is_some_and(|e| e.is_retriable())
            }
            ClientError::Protocol { .. } | ClientError::UnsupportedApi { .. } => false,
        }
    }
}

/// `Ok(())` for code 0, otherwise a broker error with the given message and context.
pub fn check_code(
    code: i16,
    message: Option<&StrBytes>,
    context: impl FnOnce() -> String,
) -> Result<(), ClientError> {
    if code == codes::NONE {
        return Ok(());
    }
    Err(ClientError::broker(
        code,
        context(),
        message.map(|m| m.to_string()).filter(|m| !m.is_empty()),
    ))
}

/// Kafka's upper-case name for an error code (`UNKNOWN_TOPIC_OR_PARTITION`); unknown codes are
/// named `UNKNOWN_ERROR_CODE_<n>`.
pub fn error_name(code: i16) -> String {
    shardlog_protocol::errors::name(code)
}

/// Highest version this client uses for an API, below what `kafka_protocol` can encode, when a
/// newer version would change semantics the client does not implement.
fn client_max_version(api_key: i16) -> i16 {
    match ApiKey::try_from(api_key) {
        // 13+ name topics by id only; this client works with names.
        Ok(ApiKey::Produce) | Ok(ApiKey::Fetch) => 12,
        // 8+ batch several groups per request in a different layout.
        Ok(ApiKey::OffsetFetch) => 7,
        // 4+ is the broker-to-broker form (several transactions, verify_only).
        Ok(ApiKey::AddPartitionsToTxn) => 3,
        // 5 is transaction version 2 (KIP-890): the epoch is bumped at every EndTxn.
        Ok(ApiKey::EndTxn) => 4,
        _ => i16::MAX,
    }
}

/// The versions this client speaks for `R`.
pub fn client_versions<R: Request>() -> VersionRange {
    VersionRange {
        min: R::VERSIONS.min,
        max: R::VERSIONS.max.min(client_max_version(R::KEY)),
    }
}

/// One TCP connection to one broker. Lives on the thread that created it; blocking.
pub struct Connection {
    addr: String,
    stream: TcpStream,
    client_id: StrBytes,
    next_correlation_id: i32,
    /// Requests sent whose responses have not been received yet.
    in_flight: HashSet<i32>,
    /// Responses that arrived while another one was awaited (pipelining out of order).
    early: HashMap<i32, Bytes>,
    /// The broker's supported versions per API key, from ApiVersions.
    api_versions: BTreeMap<i16, VersionRange>,
    max_response_bytes: usize,
    timeout: Duration,
    /// Set after an I/O or framing error: the byte stream is out of sync and must be dropped.
    broken: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("in_flight", &self.in_flight.len())
            .field("broken", &self.broken)
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`), then sends ApiVersions and keeps the broker's ranges.
    /// `timeout` bounds the connect and every later read and write.
    pub fn connect(
        addr: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Connection, ClientError> {
        let unreachable = |context: &str, source| ClientError::Unreachable {
            addr: addr.to_string(),
            context: context.to_string(),
            request_sent: false,
            source,
        };
        let resolved: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| unreachable("resolving address", e))?
            .collect();
        let mut last_err =
            std::io::Error::new(std::io::ErrorKind::NotFound, "address resolved to nothing");
        let mut stream = None;
        for sa in resolved {
            match TcpStream::connect_timeout(&sa, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let stream = stream.ok_or_else(|| unreachable("connecting", last_err))?;
        let setup = |s: &TcpStream| -> std::io::Result<()> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))
        };
        setup(&stream).map_err(|e| unreachable("configuring socket", e))?;
        let mut conn = Connection {
            addr: addr.to_string(),
            stream,
            client_id: StrBytes::from_string(client_id.to_string()),
            next_correlation_id: 1,
            in_flight: HashSet::new(),
            early: HashMap::new(),
            api_versions: BTreeMap::new(),
            max_response_bytes: MAX_RESPONSE_BYTES_DEFAULT,
            timeout,
            broken: None,
        };
        conn.handshake()?;
        Ok(conn)
    }

    /// ApiVersions at v3; on UNSUPPORTED_VERSION, again at the broker's highest ApiVersions
    /// version (or v0 when it did not say), as Kafka's clients do.
    fn handshake(&mut self) -> Result<(), ClientError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_SOFTWARE_NAME))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response = self.call_at(&request, API_VERSIONS_PREFERRED)?;
        if response.error_code == codes::UNSUPPORTED_VERSION {
            let fallback = response
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiVersionsRequest::KEY)
                .map(|k| k.max_version.min(API_VERSIONS_PREFERRED))
                .filter(|v| *v >= 0 && *v < API_VERSIONS_PREFERRED)
                .unwrap_or(0);
            response = self.call_at(&request.clone(), fallback)?;
        }
        check_code(response.error_code, None, || "in ApiVersions".to_string())?;
        self.api_versions = response
            .api_keys
            .iter()
            .map(|k| {
                (
                    k.api_key,
                    VersionRange {
                        min: k.min_version,
                        max: k.max_version,
                    },
                )
            })
            .collect();
        Ok(())
    }

    /// The `host:port` this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The address of the peer socket.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }

    /// The broker's supported version range per API key, as ApiVersions reported it.
    pub fn api_versions(&self) -> &BTreeMap<i16, VersionRange> {
        &self.api_versions
    }

    /// Whether the broker supports `R` at some version this client speaks.
    pub fn supports<R: Request>(&self) -> bool {
        self.version_for::<R>().is_ok()
    }

    /// The highest version of `R` that both the broker and this client support.
    pub fn version_for<R: Request>(&self) -> Result<i16, ClientError> {
        let ours = client_versions::<R>();
        let unsupported = |broker_versions: String| ClientError::UnsupportedApi {
            addr: self.addr.clone(),
            api: api_name(R::KEY),
            broker_versions,
            client_versions: ours.to_string(),
        };
        let theirs = self
            .api_versions
            .get(&R::KEY)
            .ok_or_else(|| unsupported("none".to_string()))?;
        let both = ours.intersect(theirs);
        if both.is_empty() {
            return Err(unsupported(theirs.to_string()));
        }
        Ok(both.max)
    }

    /// Read/write timeout for later requests (e.g. longer than a Fetch's `max_wait_ms`).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.timeout = timeout;
        let r = self
            .stream
            .set_read_timeout(Some(timeout))
            .and_then(|_| self.stream.set_write_timeout(Some(timeout)));
        r.map_err(|e| self.unreachable("setting timeout", e))
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Limit on a response frame's size, checked before allocating.
    pub fn set_max_response_bytes(&mut self, max: usize) {
        self.max_response_bytes = max;
    }

    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// Why the connection is unusable, if it is (an earlier I/O or framing error).
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Sends `req` at the highest common version and waits for its response.
    pub fn call<R: Request>(&mut self, req: &R) -> Result<R::Response, ClientError> {
        let version = self.version_for::<R>()?;
        self.call_at(req, version)
    }

    /// Sends `req` at `version` and waits for its response.
    pub fn call_at<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let correlation_id = self.send(req, version)?;
        self.receive::<R>(correlation_id, version)
    }

    /// Sends `req` at `version` without waiting; returns the correlation id to pass to
    /// [`Connection::receive`]. Several requests may be in flight (the broker answers in order).
    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> Result<i32, ClientError> {
        let correlation_id = self.write_request(req, version)?;
        self.in_flight.insert(correlation_id);
        Ok(correlation_id)
    }

    /// Sends a request the broker will not answer (Produce with acks=0).
    pub fn send_no_response<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<(), ClientError> {
        self.write_request(req, version).map(|_| ())
    }

    /// Waits for the response to the request sent with `correlation_id` at `version`.
    /// Responses to other in-flight requests that arrive first are kept for later.
    pub fn receive<R: Request>(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        if !self.in_flight.contains(&correlation_id) {
            return Err(self.protocol(format!(
                "no request with correlation id {correlation_id} is waiting for a response"
            )));
        }
        let frame = loop {
            if let Some(frame) = self.early.remove(&correlation_id) {
                break frame;
            }
            let frame = self.read_frame()?;
            let got = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            if got == correlation_id {
                break frame;
            }
            if self.in_flight.contains(&got) && !self.early.contains_key(&got) {
                self.early.insert(got, frame);
                continue;
            }
            return Err(self.fail(format!(
                "response with correlation id {got} while waiting for {correlation_id}"
            )));
        };
        self.in_flight.remove(&correlation_id);
        decode_response::<R>(frame, version).map_err(|detail| self.protocol(detail))
    }

    fn write_request<R: Request>(&mut self, req: &R, version: i16) -> Result<i32, ClientError> {
        if let Some(reason) = &self.broken {
            let reason = reason.clone();
            return Err(self.unreachable(
                "connection already failed",
                std::io::Error::new(std::io::ErrorKind::NotConnected, reason),
            ));
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        let frame = encode_request(req, version, correlation_id, Some(self.client_id.clone()))
            .map_err(|detail| self.protocol(detail))?;
        if let Err(e) = self.stream.write_all(&frame) {
            return Err(self.unreachable(&format!("sending {}", api_name(R::KEY)), e));
        }
        Ok(correlation_id)
    }

    /// Reads one whole response frame (without its length prefix); at least 4 bytes long.
    fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        if let Some(reason) = &self.broken {
            let reason = reason.clone();
            return Err(self.unreachable_at(
                "connection already failed",
                std::io::Error::new(std::io::ErrorKind::NotConnected, reason),
                true,
            ));
        }
        let mut len = [0u8; 4];
        if let Err(e) = self.stream.read_exact(&mut len) {
            return Err(self.unreachable_at("waiting for a response", e, true));
        }
        let len = i32::from_be_bytes(len);
        if len < 4 {
            return Err(self.fail(format!("response frame length {len} is too small")));
        }
        if len as usize > self.max_response_bytes {
            return Err(self.fail(format!(
                "response frame of {len} bytes exceeds the limit of {} bytes",
                self.max_response_bytes
            )));
        }
        let mut buf = vec![0u8; len as usize];
        if let Err(e) = self.stream.read_exact(&mut buf) {
            return Err(self.unreachable_at("reading a response", e, true));
        }
        Ok(Bytes::from(buf))
    }

    /// An I/O failure before the request was (completely) written.
    fn unreachable(&mut self, context: &str, source: std::io::Error) -> ClientError {
        self.unreachable_at(context, source, false)
    }

    fn unreachable_at(
        &mut self,
        context: &str,
        source: std::io::Error,
        request_sent: bool,
    ) -> ClientError {
        // A socket timeout surfaces as EAGAIN ("Resource temporarily unavailable"); say what
        // it means.
        let source = match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no progress within the {:?} timeout", self.timeout),
            ),
            _ => source,
        };
        self.broken = Some(format!("{context}: {source}"));
        ClientError::Unreachable {
            addr: self.addr.clone(),
            context: context.to_string(),
            request_sent,
            source,
        }
    }

    /// A protocol error that leaves the byte stream out of sync: the connection is unusable.
    fn fail(&mut self, detail: String) -> ClientError {
        self.broken = Some(detail.clone());
        self.protocol(detail)
    }

    fn protocol(&self, detail: String) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            detail,
        }
    }
}

/// A broker from metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMeta {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerMeta {
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition from metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMeta {
    pub partition: i32,
    pub error_code: i16,
    /// -1 when there is no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
}

/// One topic from metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub error_code: i16,
    pub topic_id: String,
    pub is_internal: bool,
    pub partitions: BTreeMap<i32, PartitionMeta>,
}

/// The cluster as last seen through Metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    /// -1 when unknown.
    pub controller_id: i32,
    pub brokers: BTreeMap<i32, BrokerMeta>,
    pub topics: BTreeMap<String, TopicMeta>,
}

impl ClusterMetadata {
    /// Converts a Metadata response; when `all_topics` the topic list replaces the cache,
    /// otherwise the returned topics are merged into `self`.
    fn apply(&mut self, response: &MetadataResponse, all_topics: bool) {
        self.cluster_id = response.cluster_id.as_ref().map(|s| s.to_string());
        self.controller_id = response.controller_id.0;
        self.brokers = response
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id.0,
                    BrokerMeta {
                        node_id: b.node_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                    },
                )
            })
            .collect();
        if all_topics {
            self.topics.clear();
        }
        for t in &response.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            if t.error_code == codes::UNKNOWN_TOPIC_OR_PARTITION {
                self.topics.remove(&name);
                continue;
            }
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    (
                        p.partition_index,
                        PartitionMeta {
                            partition: p.partition_index,
                            error_code: p.error_code,
                            leader: p.leader_id.0,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                            offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                        },
                    )
                })
                .collect();
            self.topics.insert(
                name.clone(),
                TopicMeta {
                    name,
                    error_code: t.error_code,
                    topic_id: t.topic_id.to_string(),
                    is_internal: t.is_internal,
                    partitions,
                },
            );
        }
    }
}

/// One result per topic of a topic administration request, in request order.
pub type TopicResults = Vec<(String, Result<(), ClientError>)>;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// -1 for the broker's default.
    pub partitions: i32,
    /// -1 for the broker's default.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

/// What ListOffsets answered for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: i64,
    pub timestamp: i64,
}

/// What Fetch answered for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Whole record batches; the first may start before the fetch offset.
    pub records: Bytes,
}

/// A routing client over several brokers. Lives on the thread that created it; blocking.
#[derive(Debug)]
pub struct Client {
    bootstrap: Vec<String>,
    client_id: String,
    timeout: Duration,
    /// The bootstrap connection until metadata tells which broker it is.
    unrouted: Option<Connection>,
    connections: HashMap<i32, Connection>,
    metadata: ClusterMetadata,
    /// (key type, group or transactional id) -> coordinator broker id, from FindCoordinator.
    coordinators: HashMap<(CoordinatorType, String), i32>,
}

impl Client {
    /// Connects to the first reachable address of `bootstrap` (comma-separated `host:port`)
    /// and loads cluster metadata (brokers, controller, cluster id; no topics).
    pub fn connect(
        bootstrap: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let bootstrap: Vec<String> = bootstrap
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let mut client = Client {
            bootstrap,
            client_id: client_id.to_string(),
            timeout,
            unrouted: None,
            connections: HashMap::new(),
            metadata: ClusterMetadata {
                controller_id: -1,
                ..ClusterMetadata::default()
            },
            coordinators: HashMap::new(),
        };
        client.unrouted = Some(client.connect_bootstrap()?);
        client.refresh_metadata(Some(&[]))?;
        Ok(client)
    }

    fn connect_bootstrap(&self) -> Result<Connection, ClientError> {
        let mut last = None;
        for addr in &self.bootstrap {
            match Connection::connect(addr, &self.client_id, self.timeout) {
                Ok(c) => return Ok(c),
                Err(e @ ClientError::Unreachable { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unreachable {
            addr: String::new(),
            context: "bootstrap".to_string(),
            request_sent: false,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty bootstrap server list",
            ),
        }))
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The metadata cache as of the last refresh.
    pub fn metadata(&self) -> &ClusterMetadata {
        &self.metadata
    }

    /// Reloads metadata: brokers, controller and `topics` (`None` = every topic, `Some(&[])` =
    /// none). Requested topics the broker does not know are removed from the cache.
    pub fn refresh_metadata(
        &mut self,
        topics: Option<&[&str]>,
    ) -> Result<&ClusterMetadata, ClientError> {
        let response = self.with_any(|conn| {
            let version = conn.version_for::<MetadataRequest>()?;
            let mut req = MetadataRequest::default();
            req.allow_auto_topic_creation = version < 4;
            req.topics = match topics {
                // v0 has no way to say "all" other than an empty list.
                None if version == 0 => Some(Vec::new()),
                None => None,
                Some(names) => Some(
                    names
                        .iter()
                        .map(|n| {
                            MetadataRequestTopic::default()
                                .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
                        })
                        .collect(),
                ),
            };
            conn.call_at(&req, version)
        })?;
        check_code(response.error_code, None, || {
            "fetching metadata".to_string()
        })?;
        self.metadata.apply(&response, topics.is_none());
        self.adopt_unrouted();
        Ok(&self.metadata)
    }

    /// Files the bootstrap connection under its broker id once metadata names that broker.
    fn adopt_unrouted(&mut self) {
        let Some(peer) = self.unrouted.as_ref().and_then(|c| c.peer_addr()) else {
            return;
        };
        let found = self.metadata.brokers.values().find(|b| {
            b.addr()
                .to_socket_addrs()
                .map(|mut addrs| addrs.any(|a| a == peer))
                .unwrap_or(false)
        });
        if let Some(b) = found {
            let id = b.node_id;
            if let Some(conn) = self.unrouted.take() {
                self.connections.entry(id).or_insert(conn);
            }
        }
    }

    /// Runs `f` on some live connection (bootstrap or any broker), reconnecting once if the
    /// connection it picked turns out to be broken before the request went out.
    pub fn with_any<T>(
        &mut self,
        mut f: impl FnMut(&mut Connection) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = self.any_connection()?;
            match f(conn) {
                Err(e) if e.is_unsent() && attempt < 2 => {
                    self.drop_broken();
                    continue;
                }
                other => return other,
            }
        }
    }

    /// A live connection: an existing one if any, else the bootstrap list, else known brokers.
    pub fn any_connection(&mut self) -> Result<&mut Connection, ClientError> {
        self.drop_broken();
        if self.unrouted.is_none() && self.connections.is_empty() {
            match self.connect_bootstrap() {
                Ok(c) => self.unrouted = Some(c),
                Err(bootstrap_err) => {
                    // The bootstrap list may be stale while brokers from metadata still live.
                    let ids: Vec<i32> = self.metadata.brokers.keys().copied().collect();
                    for id in ids {
                        if self.connection_to(id).is_ok() {
                            break;
                        }
                    }
                    if self.connections.is_empty() {
                        return Err(bootstrap_err);
                    }
                }
            }
        }
        if let Some(conn) = self.unrouted.as_mut() {
            return Ok(conn);
        }
        let id = self.connections.keys().min().copied();
        match id.and_then(|id| self.connections.get_mut(&id)) {
            Some(conn) => Ok(conn),
            None => Err(ClientError::Unreachable {
                addr: self.bootstrap.join(","),
                context: "choosing a broker".to_string(),
                request_sent: false,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "no broker connection",
                ),
            }),
        }
    }

    fn drop_broken(&mut self) {
        if self.unrouted.as_ref().is_some_and(|c| c.broken().is_some()) {
            self.unrouted = None;
        }
        self.connections.retain(|_, c| c.broken().is_none());
    }

    /// The connection to broker `node_id`, opened on first use from the metadata's address.
    pub fn connection_to(&mut self, node_id: i32) -> Result<&mut Connection, ClientError> {
        if self
            .connections
            .get(&node_id)
            .is_some_and(|c| c.broken().is_some())
        {
            self.connections.remove(&node_id);
        }
        if !self.connections.contains_key(&node_id) {
            let broker = self
                .metadata
                .brokers
                .get(&node_id)
                .ok_or_else(|| {
                    ClientError::broker(
                        ResponseError::BrokerNotAvailable.code(),
                        format!("broker {node_id} is not in the cluster metadata"),
                        None,
                    )
                })?
                .addr();
            let conn = Connection::connect(&broker, &self.client_id, self.timeout)?;
            self.connections.insert(node_id, conn);
        }
        self.connections
            .get_mut(&node_id)
            .ok_or_else(|| ClientError::Protocol {
                addr: String::new(),
                detail: format!("connection to broker {node_id} vanished"),
            })
    }

    /// The connection to the controller (topic administration), or any broker when the
    /// metadata names no controller.
    pub fn controller_connection(&mut self) -> Result<&mut Connection, ClientError> {
        let controller = self.metadata.controller_id;
        if controller >= 0 && self.metadata.brokers.contains_key(&controller) {
            self.connection_to(controller)
        } else {
            self.any_connection()
        }
    }

    /// Runs `f` on the controller's connection, refreshing metadata and retrying once on
    /// NOT_CONTROLLER or when the request could not be sent.
    pub fn with_controller<T>(
        &mut self,
        mut f: impl FnMut(&mut Connection) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let first = f(self.controller_connection()?);
        match first {
            Err(e) if e.code() == Some(codes::NOT_CONTROLLER) || e.is_unsent() => {
                self.drop_broken();
                self.refresh_metadata(Some(&[]))?;
                f(self.controller_connection()?)
            }
            other => other,
        }
    }

    /// The leader's broker id for a partition, refreshing metadata once if the cache lacks it.
    pub fn leader_of(&mut self, topic: &str, partition: i32) -> Result<i32, ClientError> {
        if self.cached_partition(topic, partition).is_none() {
            self.refresh_metadata(Some(&[topic]))?;
        }
        let p = self.cached_partition(topic, partition).ok_or_else(|| {
            ClientError::broker(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!("for {topic}-{partition}"),
                None,
            )
        })?;
        if p.leader < 0 {
            let code = if p.error_code != 0 {
                p.error_code
            } else {
                codes::LEADER_NOT_AVAILABLE
            };
            return Err(ClientError::broker(
                code,
                format!("for {topic}-{partition}"),
                None,
            ));
        }
        Ok(p.leader)
    }

    fn cached_partition(&self, topic: &str, partition: i32) -> Option<&PartitionMeta> {
        self.metadata.topics.get(topic)?.partitions.get(&partition)
    }

    /// The partitions of `topic`, refreshing metadata if the topic is not cached.
    pub fn partitions_of(&mut self, topic: &str) -> Result<Vec<i32>, ClientError> {
        if !self.metadata.topics.contains_key(topic) {
            self.refresh_metadata(Some(&[topic]))?;
        }
        match self.metadata.topics.get(topic) {
            Some(t) if t.error_code == 0 => Ok(t.partitions.keys().copied().collect()),
            Some(t) => Err(ClientError::broker(
                t.error_code,
                format!("for topic {topic:?}"),
                None,
            )),
            None => Err(ClientError::broker(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {topic:?} does not exist"),
                None,
            )),
        }
    }

    /// Runs `f` on the partition leader's connection. When `f` fails with a stale-metadata
    /// error (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, ...) or the request could
    /// not be sent, refreshes the topic's metadata and tries once more. `f` must turn the
    /// partition's error code into [`ClientError::Broker`] for this to work.
    pub fn with_leader<T>(
        &mut self,
        topic: &str,
        partition: i32,
        mut f: impl FnMut(&mut Connection) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let leader = self.leader_of(topic, partition)?;
        match f(self.connection_to(leader)?) {
            Err(e) if e.is_stale_metadata() || e.is_unsent() => {
                self.drop_broken();
                self.refresh_metadata(Some(&[topic]))?;
                let leader = self.leader_of(topic, partition)?;
                f(self.connection_to(leader)?)
            }
            other => other,
        }
    }

    /// The coordinator's broker id for `key` (cached; FindCoordinator on first use): a group id
    /// (`&str`, or [`CoordinatorKey::group`]) or a transactional id
    /// ([`CoordinatorKey::transaction`]).
    pub fn coordinator_of<'k>(
        &mut self,
        key: impl Into<CoordinatorKey<'k>>,
    ) -> Result<i32, ClientError> {
        let key = key.into();
        let cache_key = (key.kind, key.id.to_string());
        if let Some(id) = self.coordinators.get(&cache_key) {
            return Ok(*id);
        }
        let (node_id, host, port) = self.with_any(|conn| find_coordinator(conn, key))?;
        self.metadata
            .brokers
            .entry(node_id)
            .or_insert_with(|| BrokerMeta {
                node_id,
                host,
                port,
                rack: None,
            });
        self.coordinators.insert(cache_key, node_id);
        Ok(node_id)
    }

    /// Runs `f` on the coordinator of `key` (a group id or a [`CoordinatorKey`]), looking it up
    /// again and retrying once on NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE or when the
    /// request could not be sent.
    pub fn with_coordinator<'k, T>(
        &mut self,
        key: impl Into<CoordinatorKey<'k>>,
        mut f: impl FnMut(&mut Connection) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let key = key.into();
        let id = self.coordinator_of(key)?;
        match f(self.connection_to(id)?) {
            Err(e) if e.is_stale_coordinator() || e.is_unsent() => {
                self.drop_broken();
                self.coordinators.remove(&(key.kind, key.id.to_string()));
                let id = self.coordinator_of(key)?;
                f(self.connection_to(id)?)
            }
            other => other,
        }
    }

    /// Ids of every broker in the metadata.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.metadata.brokers.keys().copied().collect()
    }

    /// Creates topics (sent to the controller). Returns one result per requested topic, in
    /// request order; the call itself fails only when the request could not be made.
    pub fn create_topics(
        &mut self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<TopicResults, ClientError> {
        let timeout_ms = duration_ms(self.timeout);
        let response = self.with_controller(|conn| {
            let req = CreateTopicsRequest::default()
                .with_timeout_ms(timeout_ms)
                .with_validate_only(validate_only)
                .with_topics(
                    topics
                        .iter()
                        .map(|t| {
                            CreatableTopic::default()
                                .with_name(TopicName(StrBytes::from_string(t.name.clone())))
                                .with_num_partitions(t.partitions)
                                .with_replication_factor(t.replication_factor)
                                .with_configs(
                                    t.configs
                                        .iter()
                                        .map(|(k, v)| {
                                            CreatableTopicConfig::default()
                                                .with_name(StrBytes::from_string(k.clone()))
                                                .with_value(Some(StrBytes::from_string(v.clone())))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
            let response = conn.call(&req)?;
            // NOT_CONTROLLER for any topic means the whole request went to the wrong broker.
            if let Some(t) = response
                .topics
                .iter()
                .find(|t| t.error_code == codes::NOT_CONTROLLER)
            {
                check_code(t.error_code, t.error_message.as_ref(), || {
                    "creating topics".into()
                })?;
            }
            Ok(response)
        })?;
        let results = topics
            .iter()
            .map(|t| {
                let result = match response.topics.iter().find(|r| *r.name.0 == *t.name) {
                    None => Err(ClientError::Protocol {
                        addr: String::new(),
                        detail: format!("CreateTopics response has no result for {:?}", t.name),
                    }),
                    Some(r) => check_code(r.error_code, r.error_message.as_ref(), || {
                        format!("creating topic {:?}", t.name)
                    }),
                };
                (t.name.clone(), result)
            })
            .collect();
        Ok(results)
    }

    /// Deletes topics by name (sent to the controller); one result per topic, in order.
    pub fn delete_topics(&mut self, names: &[&str]) -> Result<TopicResults, ClientError> {
        let timeout_ms = duration_ms(self.timeout);
        let response = self.with_controller(|conn| {
            let version = conn.version_for::<DeleteTopicsRequest>()?;
            let mut req = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
            let topic_name = |n: &&str| TopicName(StrBytes::from_string(n.to_string()));
            if version >= 6 {
                req.topics = names
                    .iter()
                    .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
                    .collect();
            } else {
                req.topic_names = names.iter().map(topic_name).collect();
            }
            let response = conn.call_at(&req, version)?;
            if let Some(t) = response
                .responses
                .iter()
                .find(|t| t.error_code == codes::NOT_CONTROLLER)
            {
                check_code(t.error_code, t.error_message.as_ref(), || {
                    "deleting topics".into()
                })?;
            }
            Ok(response)
        })?;
        let results = names
            .iter()
            .map(|name| {
                let found = response
                    .responses
                    .iter()
                    .find(|r| r.name.as_ref().is_some_and(|n| *n.0 == **name));
                let result = match found {
                    None => Err(ClientError::Protocol {
                        addr: String::new(),
                        detail: format!("DeleteTopics response has no result for {name:?}"),
                    }),
                    Some(r) => check_code(r.error_code, r.error_message.as_ref(), || {
                        format!("deleting topic {name:?}")
                    }),
                };
                (name.to_string(), result)
            })
            .collect();
        for name in names {
            self.metadata.topics.remove(*name);
        }
        Ok(results)
    }

    /// ListOffsets for one partition: `timestamp` is [`EARLIEST_TIMESTAMP`],
    /// [`LATEST_TIMESTAMP`] or a time in ms (first offset whose timestamp is >= it; offset -1
    /// when there is none).
    pub fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<ListedOffset, ClientError> {
        self.with_leader(topic, partition, |conn| {
            list_offset(conn, topic, partition, timestamp)
        })
    }

    /// Produces a blob of record batches to one partition. Returns the base offset assigned
    /// to the first batch, or `None` with `acks == 0` (the broker does not answer).
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
    ) -> Result<Option<i64>, ClientError> {
        let timeout_ms = duration_ms(self.timeout);
        self.with_leader(topic, partition, |conn| {
            produce(conn, topic, partition, records.clone(), acks, timeout_ms)
        })
    }

    /// Fetches from one partition starting at `offset`, waiting up to `max_wait` for data.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<FetchedPartition, ClientError> {
        self.with_leader(topic, partition, |conn| {
            fetch(conn, topic, partition, offset, max_bytes, max_wait)
        })
    }
}

fn duration_ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// What a coordinator is looked up for: FindCoordinator's `key_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CoordinatorType {
    /// A consumer group (key type 0).
    Group,
    /// A transactional id (key type 1; FindCoordinator v1+).
    Transaction,
}

impl CoordinatorType {
    /// The wire value of `key_type`.
    pub fn key_type(self) -> i8 {
        match self {
            CoordinatorType::Group => 0,
            CoordinatorType::Transaction => 1,
        }
    }
}

/// A coordinator key: a group id or a transactional id. `&str` and `&String` convert to a
/// group key, so `client.coordinator_of("g")` looks up a group's coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CoordinatorKey<'a> {
    pub kind: CoordinatorType,
    pub id: &'a str,
}

impl<'a> CoordinatorKey<'a> {
    pub fn group(id: &'a str) -> CoordinatorKey<'a> {
        CoordinatorKey {
            kind: CoordinatorType::Group,
            id,
        }
    }

    pub fn transaction(transactional_id: &'a str) -> CoordinatorKey<'a> {
        CoordinatorKey {
            kind: CoordinatorType::Transaction,
            id: transactional_id,
        }
    }
}

impl<'a> From<&'a str> for CoordinatorKey<'a> {
    fn from(group: &'a str) -> CoordinatorKey<'a> {
        CoordinatorKey::group(group)
    }
}

impl<'a> From<&'a String> for CoordinatorKey<'a> {
    fn from(group: &'a String) -> CoordinatorKey<'a> {
        CoordinatorKey::group(group)
    }
}

impl std::fmt::Display for CoordinatorKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            CoordinatorType::Group => write!(f, "group {:?}", self.id),
            CoordinatorType::Transaction => write!(f, "transactional id {:?}", self.id),
        }
    }
}

/// FindCoordinator for a group or transactional id on `conn`: (node id, host, port).
/// Transactional ids need FindCoordinator v1 or later (v0 has no key type).
pub fn find_coordinator<'k>(
    conn: &mut Connection,
    key: impl Into<CoordinatorKey<'k>>,
) -> Result<(i32, String, i32), ClientError> {
    let key = key.into();
    let version = conn.version_for::<FindCoordinatorRequest>()?;
    if version < 1 && key.kind != CoordinatorType::Group {
        return Err(ClientError::UnsupportedApi {
            addr: conn.addr().to_string(),
            api: "FindCoordinator with a transactional id (key type 1)".to_string(),
            broker_versions: "0".to_string(),
            client_versions: format!("1-{}", client_versions::<FindCoordinatorRequest>().max),
        });
    }
    let mut req = FindCoordinatorRequest::default();
    if version >= 1 {
        req.key_type = key.kind.key_type();
    }
    let id = StrBytes::from_string(key.id.to_string());
    if version >= 4 {
        req.coordinator_keys = vec![id];
    } else {
        req.key = id;
    }
    let response = conn.call_at(&req, version)?;
    let context = || format!("finding the coordinator of {key}");
    if version >= 4 {
        let c = response
            .coordinators
            .first()
            .ok_or_else(|| ClientError::Protocol {
                addr: conn.addr().to_string(),
                detail: "FindCoordinator response lists no coordinator".to_string(),
            })?;
        check_code(c.error_code, c.error_message.as_ref(), context)?;
        Ok((c.node_id.0, c.host.to_string(), c.port))
    } else {
        check_code(
            response.error_code,
            response.error_message.as_ref(),
            context,
        )?;
        Ok((response.node_id.0, response.host.to_string(), response.port))
    }
}

/// ListOffsets for one partition on `conn` (which should be the leader).
pub fn list_offset(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<ListedOffset, ClientError> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    let response = conn.call(&req)?;
    let p = response
        .topics
        .iter()
        .filter(|t| *t.name.0 == *topic)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| ClientError::Protocol {
            addr: conn.addr().to_string(),
            detail: format!("ListOffsets response has no result for {topic}-{partition}"),
        })?;
    check_code(p.error_code, None, || {
        format!("listing offsets of {topic}-{partition}")
    })?;
    Ok(ListedOffset {
        offset: p.offset,
        timestamp: p.timestamp,
    })
}

/// Produce to one partition on `conn` (which should be the leader).
pub fn produce(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
    timeout_ms: i32,
) -> Result<Option<i64>, ClientError> {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let version = conn.version_for::<ProduceRequest>()?;
    if acks == 0 {
        conn.send_no_response(&req, version)?;
        return Ok(None);
    }
    let response = conn.call_at(&req, version)?;
    let p = response
        .responses
        .iter()
        .filter(|t| *t.name.0 == *topic)
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition)
        .ok_or_else(|| ClientError::Protocol {
            addr: conn.addr().to_string(),
            detail: format!("Produce response has no result for {topic}-{partition}"),
        })?;
    check_code(p.error_code, p.error_message.as_ref(), || {
        format!("producing to {topic}-{partition}")
    })?;
    Ok(Some(p.base_offset))
}

/// Fetch from one partition on `conn` (which should be the leader). Raises the connection's
/// timeout for the call if `max_wait` would not fit in it.
pub fn fetch(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    max_wait: Duration,
) -> Result<FetchedPartition, ClientError> {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(duration_ms(max_wait))
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(max_bytes)])]);
    let saved = conn.timeout();
    let needed = max_wait + Duration::from_secs(5);
    if needed > saved {
        conn.set_timeout(needed)?;
    }
    let response = conn.call(&req);
    if needed > saved && conn.broken().is_none() {
        conn.set_timeout(saved)?;
    }
    let response = response?;
    check_code(response.error_code, None, || {
        format!("fetching {topic}-{partition}")
    })?;
    let p = response
        .responses
        .iter()
        .filter(|t| *t.topic.0 == *topic)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| ClientError::Protocol {
            addr: conn.addr().to_string(),
            detail: format!("Fetch response has no result for {topic}-{partition}"),
        })?;
    check_code(p.error_code, None, || {
        format!("fetching {topic}-{partition} at offset {offset}")
    })?;
    Ok(FetchedPartition {
        high_watermark: p.high_watermark,
        last_stable_offset: p.last_stable_offset,
        log_start_offset: p.log_start_offset,
        records: p.records.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_broker::{self, FakeBroker, Reply};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{ApiVersionsResponse, RequestKind, ResponseKind};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn api_versions(ranges: &[(i16, i16, i16)]) -> ApiVersionsResponse {
        ApiVersionsResponse::default().with_api_keys(
            ranges
                .iter()
                .map(|&(k, min, max)| {
                    ApiVersion::default()
                        .with_api_key(k)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        )
    }

    fn standard_ranges() -> Vec<(i16, i16, i16)> {
        vec![
            (18, 0, 3),
            (3, 0, 12),
            (0, 3, 9),
            (1, 4, 12),
            (2, 1, 7),
            (19, 2, 7),
        ]
    }

    /// The answer to ApiVersions with `standard_ranges`.
    fn standard_versions() -> Reply {
        Reply::Response(ResponseKind::ApiVersions(api_versions(&standard_ranges())))
    }

    /// Metadata naming the fake as broker `node_id` (and controller) at its own port.
    fn this_broker(req: &fake_broker::Request, node_id: i32) -> MetadataResponse {
        MetadataResponse::default()
            .with_controller_id(BrokerId(node_id))
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(node_id))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(req.port as i32)])
    }

    #[test]
    fn handshake_keeps_ranges_and_picks_common_version() {
        let fake = FakeBroker::scripted(|req| {
            assert_eq!(req.api_key, ApiKey::ApiVersions);
            standard_versions()
        });
        let conn = Connection::connect(&fake.addr, "t", Duration::from_secs(5)).unwrap();
        assert_eq!(conn.version_for::<MetadataRequest>().unwrap(), 12);
        assert_eq!(conn.version_for::<ProduceRequest>().unwrap(), 9);
        assert_eq!(conn.version_for::<FetchRequest>().unwrap(), 12);
        assert!(matches!(
            conn.version_for::<FindCoordinatorRequest>(),
            Err(ClientError::UnsupportedApi { .. })
        ));
        drop(conn);
        fake.join();
    }

    #[test]
    fn handshake_falls_back_to_v0_on_unsupported_version() {
        let fake = FakeBroker::scripted(|req| {
            assert_eq!(req.api_key, ApiKey::ApiVersions);
            if req.version() == 3 {
                // Kafka's answer to an unknown ApiVersions version: v0 layout, error 35.
                let r = api_versions(&[(18, 0, 0)]).with_error_code(35);
                Reply::ResponseAt(0, ResponseKind::ApiVersions(r))
            } else {
                assert_eq!(req.version(), 0);
                let r = api_versions(&[(18, 0, 0), (3, 0, 1)]);
                Reply::Response(ResponseKind::ApiVersions(r))
            }
        });
        let conn = Connection::connect(&fake.addr, "t", Duration::from_secs(5)).unwrap();
        assert_eq!(conn.version_for::<MetadataRequest>().unwrap(), 1);
        drop(conn);
        fake.join();
    }

    #[test]
    fn oversized_and_garbage_frames_are_protocol_errors() {
        let fake = FakeBroker::scripted(|req| {
            if req.api_key == ApiKey::ApiVersions {
                return standard_versions();
            }
            // A Metadata "response" of random bytes.
            Reply::Raw([req.correlation_id().to_be_bytes().to_vec(), vec![0xff; 40]].concat())
        });
        let mut conn = Connection::connect(&fake.addr, "t", Duration::from_secs(5)).unwrap();
        let err = conn.call(&MetadataRequest::default()).unwrap_err();
        assert!(matches!(err, ClientError::Protocol { .. }), "{err}");
        drop(conn);
        fake.join();

        let fake = FakeBroker::scripted(|_| Reply::Raw(vec![0u8; 64]));
        let listener_addr = fake.addr.clone();
        // Frame limit smaller than the ApiVersions answer: refused before allocating.
        let err = {
            let stream = TcpStream::connect(&listener_addr).unwrap();
            let mut conn = Connection {
                addr: listener_addr,
                stream,
                client_id: StrBytes::from_static_str("t"),
                next_correlation_id: 1,
                in_flight: HashSet::new(),
                early: HashMap::new(),
                api_versions: BTreeMap::new(),
                max_response_bytes: 16,
                timeout: Duration::from_secs(5),
                broken: None,
            };
            let e = conn.call_at(&ApiVersionsRequest::default(), 0).unwrap_err();
            assert!(conn.broken().is_some());
            e
        };
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        fake.join();

        // A Metadata v1 response claiming 2^31-1 brokers in a few bytes: refused, not an
        // attempt to reserve hundreds of gigabytes (which would abort the process).
        let fake = FakeBroker::scripted(|req| {
            if req.api_key == ApiKey::ApiVersions {
                return standard_versions();
            }
            Reply::Raw(
                [
                    req.correlation_id().to_be_bytes().to_vec(),
                    vec![0x7f, 0xff, 0xff, 0xff, 0, 0],
                ]
                .concat(),
            )
        });
        let mut conn = Connection::connect(&fake.addr, "t", Duration::from_secs(5)).unwrap();
        let err = conn.call_at(&MetadataRequest::default(), 1).unwrap_err();
        assert!(matches!(err, ClientError::Protocol { .. }), "{err}");
        drop(conn);
        fake.join();
    }

    #[test]
    fn pipelined_responses_are_matched_by_correlation_id() {
        let fake = FakeBroker::scripted(|req| {
            if req.api_key == ApiKey::ApiVersions {
                return standard_versions();
            }
            let r = MetadataResponse::default().with_controller_id(BrokerId(req.correlation_id()));
            Reply::Response(ResponseKind::Metadata(r))
        });
        let mut conn = Connection::connect(&fake.addr, "t", Duration::from_secs(5)).unwrap();
        let v = conn.version_for::<MetadataRequest>().unwrap();
        let a = conn.send(&MetadataRequest::default(), v).unwrap();
        let b = conn.send(&MetadataRequest::default(), v).unwrap();
        // Received out of order: b first, a was stashed.
        let rb = conn.receive::<MetadataRequest>(b, v).unwrap();
        let ra = conn.receive::<MetadataRequest>(a, v).unwrap();
        assert_eq!(rb.controller_id.0, b);
        assert_eq!(ra.controller_id.0, a);
        assert!(conn.receive::<MetadataRequest>(a, v).is_err());
        drop(conn);
        fake.join();
    }

    #[test]
    fn unreachable_broker_is_reported_as_such() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = Connection::connect(&format!("127.0.0.1:{port}"), "t", Duration::from_secs(2))
            .unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        let err = Client::connect("", "t", Duration::from_secs(1)).unwrap_err();
        assert!(err.is_unreachable(), "{err}");
    }

    #[test]
    fn broker_error_names_are_kafkas() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(9999), "UNKNOWN_ERROR_CODE_9999");
        let e = ClientError::broker(36, "creating topic \"a\"", Some("exists".into()));
        assert_eq!(
            e.to_string(),
            "TOPIC_ALREADY_EXISTS (36) creating topic \"a\": exists"
        );
        assert!(ClientError::broker(6, "", None).is_stale_metadata());
        assert!(ClientError::broker(16, "", None).is_stale_coordinator());
        assert!(!ClientError::broker(36, "", None).is_retriable());
    }

    #[test]
    fn client_routes_to_leader_and_refreshes_once_on_not_leader() {
        let produce_calls = Arc::new(AtomicUsize::new(0));
        let metadata_calls = Arc::new(AtomicUsize::new(0));
        let (pc, mc) = (produce_calls.clone(), metadata_calls.clone());
        let fake = FakeBroker::scripted(move |req| {
            let response = match &req.body {
                RequestKind::ApiVersions(_) => return standard_versions(),
                RequestKind::Metadata(m) => {
                    mc.fetch_add(1, Ordering::SeqCst);
                    let topics = m
                        .topics
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| {
                            MetadataResponseTopic::default()
                                .with_name(t.name)
                                .with_partitions(vec![MetadataResponsePartition::default()
                                    .with_partition_index(0)
                                    .with_leader_id(BrokerId(7))
                                    .with_replica_nodes(vec![BrokerId(7)])
                                    .with_isr_nodes(vec![BrokerId(7)])])
                        })
                        .collect();
                    let r = this_broker(req, 7)
                        .with_cluster_id(Some(StrBytes::from_static_str("c1")))
                        .with_topics(topics);
                    ResponseKind::Metadata(r)
                }
                RequestKind::Produce(_) => {
                    use kafka_protocol::messages::produce_response::{
                        PartitionProduceResponse, TopicProduceResponse,
                    };
                    use kafka_protocol::messages::ProduceResponse;
                    let n = pc.fetch_add(1, Ordering::SeqCst);
                    let code = if n == 0 {
                        codes::NOT_LEADER_OR_FOLLOWER
                    } else {
                        0
                    };
                    let r = ProduceResponse::default().with_responses(vec![
                        TopicProduceResponse::default()
                            .with_name(TopicName(StrBytes::from_static_str("t")))
                            .with_partition_responses(vec![PartitionProduceResponse::default()
                                .with_index(0)
                                .with_error_code(code)
                                .with_base_offset(42)]),
                    ]);
                    ResponseKind::Produce(r)
                }
                _ => return Reply::Nothing,
            };
            Reply::Response(response)
        });
        let mut client = Client::connect(&fake.addr, "t", Duration::from_secs(5)).unwrap();
        assert_eq!(client.metadata().cluster_id.as_deref(), Some("c1"));
        assert_eq!(client.metadata().controller_id, 7);
        let batch = Bytes::from(shardlog_protocol::batch::build_simple_batch(
            0,
            1,
            &[(None, Some(b"v"))],
        ));
        let offset = client.produce("t", 0, batch, 1).unwrap();
        assert_eq!(offset, Some(42));
        assert_eq!(produce_calls.load(Ordering::SeqCst), 2);
        // connect (no topics), first leader lookup, refresh after NOT_LEADER_OR_FOLLOWER.
        assert_eq!(metadata_calls.load(Ordering::SeqCst), 3);
        // The bootstrap connection was recognised as broker 7: no second connection.
        assert_eq!(fake.connections(), 1);
        drop(client);
        fake.join();
    }

    #[test]
    fn a_request_that_timed_out_after_sending_is_not_retried() {
        let creates = Arc::new(AtomicUsize::new(0));
        let seen = creates.clone();
        // Swallows CreateTopics without answering.
        let fake = FakeBroker::scripted(move |req| match req.api_key {
            ApiKey::ApiVersions => standard_versions(),
            ApiKey::Metadata => Reply::Response(ResponseKind::Metadata(this_broker(req, 0))),
            _ => {
                seen.fetch_add(1, Ordering::SeqCst);
                Reply::Nothing
            }
        });
        let mut client = Client::connect(&fake.addr, "t", Duration::from_millis(500)).unwrap();
        let topic = NewTopic {
            name: "once".into(),
            partitions: 1,
            replication_factor: 1,
            configs: vec![],
        };
        let err = client.create_topics(&[topic], false).unwrap_err();
        assert!(err.is_unreachable() && !err.is_unsent(), "{err}");
        assert_eq!(creates.load(Ordering::SeqCst), 1);
        let cause = std::error::Error::source(&err).map(|c| c.to_string());
        assert_eq!(
            cause.as_deref(),
            Some("no progress within the 500ms timeout"),
            "{err}"
        );
    }
}
