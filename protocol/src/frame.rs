//! Request/response framing for the Kafka wire protocol, with no I/O.
//!
//! Every Kafka message travels as `[size: i32 BE][header][body]`. This module owns:
//!
//! - [`frame_len`]: reading the size prefix and refusing a frame before anything is allocated
//!   for it (`socket.request.max.bytes`).
//! - [`decode_request`]: request header + body, for the broker. It never panics and never lets
//!   hostile lengths reach an allocation (see "Allocation guard" below).
//! - [`encode_response`]: size prefix + response header + body, for the broker.
//! - [`encode_request`] / [`decode_response`]: the same for clients (tools, bench, tests).
//!
//! # Allocation guard
//!
//! `kafka-protocol`'s generated decoders are memory safe and bounds checked (every read goes
//! through `Buf::try_get_*` or `ByteBuf::try_get_bytes`), but its array decoders call
//! `Vec::with_capacity(n)` with the element count read off the wire *before* decoding any
//! element: `Array` takes an `i32` (up to 2^31-1), `CompactArray` an unsigned varint (up to
//! 2^32-1). With elements of 50-150 bytes a 20-byte request could ask the allocator for hundreds
//! of gigabytes, and a failed allocation aborts the process (it is not a panic, so
//! `catch_unwind` cannot help). Strings and byte fields are safe: they are zero-copy slices taken
//! with a length check.
//!
//! The guard is `GuardedBuf`, a `ByteBuf` wrapper through which the generated decoders read
//! (they are generic over the buffer type). It applies Apache Kafka's own rule, "a collection
//! cannot have more elements than there are bytes left", to the two ways a count is read:
//!
//! - Unsigned varints are only ever lengths, counts or tag numbers in Kafka messages (no message
//!   field has a varint type). Before each `try_get_u8` the wrapper looks at the varint that
//!   starts there; a multi-byte one whose value exceeds the bytes remaining after it (+1 for the
//!   compact "length + 1" encoding) is refused with a read error. Checking at every byte (not
//!   only where a varint might start) means a hostile boolean byte cannot shift our idea of where
//!   varints begin. Booleans are read with `try_get_u8` too, but valid ones (0/1) are single
//!   bytes below 0x80 and are never refused.
//! - An `i32` may be an array count or an ordinary field (timeouts, `max_bytes`...), and the
//!   wrapper cannot tell which. The body is therefore decoded first in *probe* mode, where an
//!   `i32` larger than the bytes remaining is replaced by -2: as an array or bytes length that is
//!   an immediate decode error ("length is negative"), as an ordinary field it changes nothing
//!   about the message's structure. If the probe fails, the request is malformed (a count that
//!   large could not have been satisfied anyway). If it succeeds without replacing anything its
//!   result is exact; if it replaced something, every replaced value was an ordinary field, so
//!   the body is decoded again unmodified, now knowing that every count it will read is bounded
//!   by the bytes remaining. (Requests with a large `i32` field, such as Fetch's `max_bytes`,
//!   pay for two decodes; bodies are small and their record payloads are zero-copy slices.)
//!
//! Residual bound: one `with_capacity` can still reserve `remaining bytes x size_of::<element>`
//! (elements are roughly 50-150 bytes), i.e. up to ~150x the frame size in address space, most
//! of it never touched (a 1 MiB frame: at most ~150 MB; a 100 MiB Produce frame: ~15 GB). The
//! frame size limit is the only cap on that; only Produce needs large frames.
//!
//! Trailing bytes after a well-formed body are ignored, as Apache Kafka does
//! (`AbstractRequest.parseRequest` never checks that the buffer was consumed).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::buf::ByteBuf;
use kafka_protocol::protocol::{Decodable, Encodable, Message, VersionRange};
use thiserror::Error;

/// Apache Kafka's default `socket.request.max.bytes`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// Bytes of the size prefix in front of every request and response.
pub const SIZE_PREFIX_LEN: usize = 4;

/// Bytes every request header starts with: api key (i16), api version (i16), correlation id (i32).
const MIN_REQUEST_HEADER_LEN: usize = 8;

/// Why a size prefix was refused. Either way the connection must be closed.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The size prefix is negative.
    #[error("negative frame size {0}")]
    NegativeSize(i32),
    /// The size prefix is larger than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
}

/// Reads the 4-byte big-endian size prefix at the start of `buf`.
///
/// Returns `Ok(None)` while fewer than 4 bytes are available and `Ok(Some(n))` once they are,
/// where `n` is the number of bytes that *follow* the prefix (the whole frame is `4 + n`
/// bytes). Refuses negative sizes and sizes above `max` so that the caller never allocates for
/// them.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..SIZE_PREFIX_LEN) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let Ok(size_usize) = usize::try_from(size) else {
        return Err(FrameError::NegativeSize(size));
    };
    if size_usize > max {
        return Err(FrameError::TooLarge {
            size: size_usize,
            max,
        });
    }
    Ok(Some(size_usize))
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRequest {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub body: RequestKind,
}

/// Why a request could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The API is known but not at this version (outside what `kafka-protocol` implements).
    /// The broker answers ApiVersions with a v0 UNSUPPORTED_VERSION response (KIP-511) and
    /// closes the connection for anything else.
    #[error("api key {api_key} version {api_version} is not supported")]
    UnsupportedVersion {
        api_key: i16,
        api_version: i16,
        correlation_id: i32,
    },
    /// The API key is not one `kafka-protocol` knows.
    #[error("unknown api key {api_key}")]
    UnknownApi { api_key: i16, correlation_id: i32 },
    /// The bytes are not a valid request: close the connection.
    #[error("malformed request: {0}")]
    Malformed(String),
}

impl RequestError {
    /// The request's correlation id, when enough of the header was readable.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            RequestError::UnsupportedVersion { correlation_id, .. }
            | RequestError::UnknownApi { correlation_id, .. } => Some(*correlation_id),
            RequestError::Malformed(_) => None,
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// `kafka-protocol` does not implement this API at this version.
    #[error("api key {api_key} version {api_version} is not supported")]
    UnsupportedVersion { api_key: i16, api_version: i16 },
    /// The API key in a request header is not one `kafka-protocol` knows.
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    /// The body is a different API than the one named.
    #[error("body is not a {0:?} message")]
    KindMismatch(ApiKey),
    /// The encoded message would not fit the i32 size prefix.
    #[error("message of {0} bytes is too large to frame")]
    TooLarge(usize),
    /// The message holds a value its version cannot carry (`kafka-protocol`'s error text).
    #[error("encode failed: {0}")]
    Encode(String),
}

/// Why a response could not be decoded (client side).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// `kafka-protocol` does not implement this API at this version.
    #[error("api key {api_key} version {api_version} is not supported")]
    UnsupportedVersion { api_key: i16, api_version: i16 },
    /// The bytes are not a valid response.
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// Decodes one request: `frame` holds the bytes after the size prefix.
///
/// The header version comes from [`ApiKey::request_header_version`]. Byte fields (Produce
/// records) are zero-copy slices of `frame`. Trailing bytes after the body are ignored, as
/// Apache Kafka does.
pub fn decode_request(frame: Bytes) -> Result<DecodedRequest, RequestError> {
    let Some(fixed) = frame.get(..MIN_REQUEST_HEADER_LEN) else {
        return Err(RequestError::Malformed(format!(
            "request of {} bytes is shorter than a request header",
            frame.len()
        )));
    };
    let raw_key = i16::from_be_bytes([fixed[0], fixed[1]]);
    let api_version = i16::from_be_bytes([fixed[2], fixed[3]]);
    let correlation_id = i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|()| RequestError::UnknownApi {
        api_key: raw_key,
        correlation_id,
    })?;
    let versions = supported_versions(api_key);
    if api_version < versions.min || api_version > versions.max {
        return Err(RequestError::UnsupportedVersion {
            api_key: raw_key,
            api_version,
            correlation_id,
        });
    }
    let header_version = api_key.request_header_version(api_version);
    // The header has no arrays and no i32 lengths (client_id has an i16 length), so it needs
    // only the varint check, not the probe.
    let mut buf = GuardedBuf::new(frame, false);
    let header = RequestHeader::decode(&mut buf, header_version)
        .map_err(|e| RequestError::Malformed(format!("request header: {e:#}")))?;
    let body = guarded_decode(buf.into_inner(), |b| {
        decode_request_body(api_key, b, api_version)
    })
    .map_err(RequestError::Malformed)?;
    Ok(DecodedRequest {
        header,
        api_key,
        body,
    })
}

/// Appends one framed response to `out`: size prefix, response header (version from
/// [`ApiKey::response_header_version`]; ApiVersions always uses v0) and body. Tagged fields
/// that hold their default values are left out by `kafka-protocol`'s encoders. On error `out`
/// is left as it was.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if response_api_key(body) != Some(api_key) {
        return Err(EncodeError::KindMismatch(api_key));
    }
    check_version(api_key, api_version, response_versions(api_key))?;
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(api_version);
    framed(out, |out| {
        header.encode(out, header_version)?;
        body.encode(out, api_version)
    })
}

/// Appends one framed request to `out`: size prefix, request header (version from
/// [`ApiKey::request_header_version`]) and body, at `header.request_api_version`.
pub fn encode_request(
    header: &RequestHeader,
    body: &RequestKind,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let api_key = ApiKey::try_from(header.request_api_key)
        .map_err(|()| EncodeError::UnknownApi(header.request_api_key))?;
    if request_api_key(body) != Some(api_key) {
        return Err(EncodeError::KindMismatch(api_key));
    }
    let api_version = header.request_api_version;
    check_version(api_key, api_version, request_versions(api_key))?;
    let header_version = api_key.request_header_version(api_version);
    framed(out, |out| {
        header.encode(out, header_version)?;
        body.encode(out, api_version)
    })
}

/// Decodes one response to a request of `api_key` at `api_version`; `frame` holds the bytes
/// after the size prefix. Guarded like [`decode_request`]: hostile bytes give an error, never a
/// panic or a huge allocation.
pub fn decode_response(
    api_key: ApiKey,
    api_version: i16,
    frame: Bytes,
) -> Result<(ResponseHeader, ResponseKind), ResponseError> {
    let versions = response_versions(api_key);
    if api_version < versions.min || api_version > versions.max {
        return Err(ResponseError::UnsupportedVersion {
            api_key: api_key as i16,
            api_version,
        });
    }
    let header_version = api_key.response_header_version(api_version);
    let mut buf = GuardedBuf::new(frame, false);
    let header = ResponseHeader::decode(&mut buf, header_version)
        .map_err(|e| ResponseError::Malformed(format!("response header: {e:#}")))?;
    let body = guarded_decode(buf.into_inner(), |b| {
        decode_response_body(api_key, b, api_version)
    })
    .map_err(ResponseError::Malformed)?;
    Ok((header, body))
}

/// The API a request body belongs to (`None` only for variants newer than this crate knows).
pub fn request_api_key(body: &RequestKind) -> Option<ApiKey> {
    request_kind_key(body)
}

/// The API a response body belongs to (`None` only for variants newer than this crate knows).
pub fn response_api_key(body: &ResponseKind) -> Option<ApiKey> {
    response_kind_key(body)
}

/// The versions of `api_key` that `kafka-protocol` can both decode (request) and encode
/// (response): the most the broker may advertise, and what [`decode_request`] accepts.
///
/// These are the message types' own ranges, narrower than `ApiKey::valid_versions()` for a
/// few APIs in kafka-protocol 0.18 (OffsetCommit and OffsetFetch v10 and InitProducerId v6 are
/// listed there but not implemented).
pub fn supported_versions(api_key: ApiKey) -> VersionRange {
    request_versions(api_key).intersect(&response_versions(api_key))
}

fn check_version(
    api_key: ApiKey,
    api_version: i16,
    versions: VersionRange,
) -> Result<(), EncodeError> {
    if api_version < versions.min || api_version > versions.max {
        return Err(EncodeError::UnsupportedVersion {
            api_key: api_key as i16,
            api_version,
        });
    }
    Ok(())
}

/// Writes a size prefix, runs `write` and patches the prefix; restores `out` on error.
fn framed(
    out: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut) -> anyhow::Result<()>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.put_i32(0);
    if let Err(e) = write(out) {
        out.truncate(start);
        return Err(EncodeError::Encode(format!("{e:#}")));
    }
    let size = out.len() - start - SIZE_PREFIX_LEN;
    let Ok(size_i32) = i32::try_from(size) else {
        out.truncate(start);
        return Err(EncodeError::TooLarge(size));
    };
    out[start..start + SIZE_PREFIX_LEN].copy_from_slice(&size_i32.to_be_bytes());
    Ok(())
}

/// Runs `decode` over `body` with the probe-then-exact scheme described in the module docs.
fn guarded_decode<T>(
    body: Bytes,
    decode: impl Fn(&mut GuardedBuf) -> anyhow::Result<T>,
) -> Result<T, String> {
    let mut probe = GuardedBuf::new(body.clone(), true);
    let value = decode(&mut probe).map_err(|e| format!("{e:#}"))?;
    if !probe.clamped {
        return Ok(value);
    }
    drop(value);
    let mut exact = GuardedBuf::new(body, false);
    decode(&mut exact).map_err(|e| format!("{e:#}"))
}

/// The `ByteBuf` the generated decoders read through; see "Allocation guard" in the module docs.
struct GuardedBuf {
    inner: Bytes,
    /// Probe mode: replace i32 values larger than the bytes remaining by -2.
    clamp_i32: bool,
    /// Set when a value was replaced (the probe's result is then not exact).
    clamped: bool,
}

/// The value an impossible i32 count becomes in probe mode: as an `Array` or `Bytes` length it
/// is rejected ("length is negative"), unlike -1 which would read as null.
const CLAMPED_I32: i32 = -2;

impl GuardedBuf {
    fn new(inner: Bytes, clamp_i32: bool) -> Self {
        GuardedBuf {
            inner,
            clamp_i32,
            clamped: false,
        }
    }

    fn into_inner(self) -> Bytes {
        self.inner
    }

    /// Whether the unsigned varint starting at the cursor is a count that cannot be satisfied.
    /// Only multi-byte varints are judged (a count below 128 cannot reserve much), with the
    /// same 5-byte limit as the decoder.
    fn varint_too_large(&self) -> bool {
        let bytes = &self.inner[..];
        match bytes.first() {
            Some(&b) if b >= 0x80 => {}
            _ => return false,
        }
        // Same arithmetic as `kafka_protocol::protocol::types::UnsignedVarInt` (a u32; bits of
        // a fifth byte beyond 32 are dropped), so we judge the value the decoder will see.
        let mut value: u32 = 0;
        for (i, &b) in bytes.iter().take(5).enumerate() {
            value |= u32::from(b & 0x7f) << (7 * i);
            if b < 0x80 || i == 4 {
                let after = bytes.len() - (i + 1);
                return value as usize > after.saturating_add(1);
            }
        }
        // Truncated varint: the decoder itself will fail with "not enough bytes".
        false
    }
}

impl Buf for GuardedBuf {
    fn remaining(&self) -> usize {
        self.inner.len()
    }

    fn chunk(&self) -> &[u8] {
        &self.inner
    }

    fn advance(&mut self, cnt: usize) {
        // `bytes`' provided methods only advance after checking `remaining`; clamp anyway so
        // that a caller's mistake cannot become a panic.
        let cnt = cnt.min(self.inner.len());
        self.inner.advance(cnt);
    }

    fn try_get_u8(&mut self) -> Result<u8, bytes::TryGetError> {
        if self.varint_too_large() {
            return Err(bytes::TryGetError {
                requested: usize::MAX,
                available: self.inner.len(),
            });
        }
        self.inner.try_get_u8()
    }

    fn try_get_i32(&mut self) -> Result<i32, bytes::TryGetError> {
        let value = self.inner.try_get_i32()?;
        if self.clamp_i32 && usize::try_from(value).is_ok_and(|v| v > self.inner.len()) {
            self.clamped = true;
            return Ok(CLAMPED_I32);
        }
        Ok(value)
    }
}

impl ByteBuf for GuardedBuf {
    fn peek_bytes(&mut self, r: std::ops::Range<usize>) -> Bytes {
        if r.start <= r.end && r.end <= self.inner.len() {
            self.inner.slice(r)
        } else {
            Bytes::new()
        }
    }

    fn get_bytes(&mut self, size: usize) -> Bytes {
        let size = size.min(self.inner.len());
        self.inner.split_to(size)
    }
}

/// Generates the per-API dispatch: `kafka-protocol`'s `RequestKind::decode` takes a concrete
/// `Bytes`, so the guarded decode calls each message type's generic `Decodable::decode`.
/// The `ApiKey` matches are exhaustive: a crate upgrade that adds an API fails to compile here.
macro_rules! api_table {
    ($($key:ident => $req:ident, $resp:ident;)*) => {
        fn decode_request_body(
            api_key: ApiKey,
            buf: &mut GuardedBuf,
            version: i16,
        ) -> anyhow::Result<RequestKind> {
            Ok(match api_key {
                $(ApiKey::$key => RequestKind::$key(<$req as Decodable>::decode(buf, version)?),)*
            })
        }

        fn decode_response_body(
            api_key: ApiKey,
            buf: &mut GuardedBuf,
            version: i16,
        ) -> anyhow::Result<ResponseKind> {
            Ok(match api_key {
                $(ApiKey::$key => ResponseKind::$key(<$resp as Decodable>::decode(buf, version)?),)*
            })
        }

        /// The versions the request type implements.
        pub fn request_versions(api_key: ApiKey) -> VersionRange {
            match api_key {
                $(ApiKey::$key => <$req as Message>::VERSIONS,)*
            }
        }

        /// The versions the response type implements.
        pub fn response_versions(api_key: ApiKey) -> VersionRange {
            match api_key {
                $(ApiKey::$key => <$resp as Message>::VERSIONS,)*
            }
        }

        fn request_kind_key(body: &RequestKind) -> Option<ApiKey> {
            match body {
                $(RequestKind::$key(_) => Some(ApiKey::$key),)*
                #[allow(unreachable_patterns)]
                _ => None,
            }
        }

        fn response_kind_key(body: &ResponseKind) -> Option<ApiKey> {
            match body {
                $(ResponseKind::$key(_) => Some(ApiKey::$key),)*
                #[allow(unreachable_patterns)]
                _ => None,
            }
        }
    };
}

api_table! {
    Produce => ProduceRequest, ProduceResponse;
    Fetch => FetchRequest, FetchResponse;
    ListOffsets => ListOffsetsRequest, ListOffsetsResponse;
    Metadata => MetadataRequest, MetadataResponse;
    OffsetCommit => OffsetCommitRequest, OffsetCommitResponse;
    OffsetFetch => OffsetFetchRequest, OffsetFetchResponse;
    FindCoordinator => FindCoordinatorRequest, FindCoordinatorResponse;
    JoinGroup => JoinGroupRequest, JoinGroupResponse;
    Heartbeat => HeartbeatRequest, HeartbeatResponse;
    LeaveGroup => LeaveGroupRequest, LeaveGroupResponse;
    SyncGroup => SyncGroupRequest, SyncGroupResponse;
    DescribeGroups => DescribeGroupsRequest, DescribeGroupsResponse;
    ListGroups => ListGroupsRequest, ListGroupsResponse;
    SaslHandshake => SaslHandshakeRequest, SaslHandshakeResponse;
    ApiVersions => ApiVersionsRequest, ApiVersionsResponse;
    CreateTopics => CreateTopicsRequest, CreateTopicsResponse;
    DeleteTopics => DeleteTopicsRequest, DeleteTopicsResponse;
    DeleteRecords => DeleteRecordsRequest, DeleteRecordsResponse;
    InitProducerId => InitProducerIdRequest, InitProducerIdResponse;
    OffsetForLeaderEpoch => OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse;
    AddPartitionsToTxn => AddPartitionsToTxnRequest, AddPartitionsToTxnResponse;
    AddOffsetsToTxn => AddOffsetsToTxnRequest, AddOffsetsToTxnResponse;
    EndTxn => EndTxnRequest, EndTxnResponse;
    WriteTxnMarkers => WriteTxnMarkersRequest, WriteTxnMarkersResponse;
    TxnOffsetCommit => TxnOffsetCommitRequest, TxnOffsetCommitResponse;
    DescribeAcls => DescribeAclsRequest, DescribeAclsResponse;
    CreateAcls => CreateAclsRequest, CreateAclsResponse;
    DeleteAcls => DeleteAclsRequest, DeleteAclsResponse;
    DescribeConfigs => DescribeConfigsRequest, DescribeConfigsResponse;
    AlterConfigs => AlterConfigsRequest, AlterConfigsResponse;
    AlterReplicaLogDirs => AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse;
    DescribeLogDirs => DescribeLogDirsRequest, DescribeLogDirsResponse;
    SaslAuthenticate => SaslAuthenticateRequest, SaslAuthenticateResponse;
    CreatePartitions => CreatePartitionsRequest, CreatePartitionsResponse;
    CreateDelegationToken => CreateDelegationTokenRequest, CreateDelegationTokenResponse;
    RenewDelegationToken => RenewDelegationTokenRequest, RenewDelegationTokenResponse;
    ExpireDelegationToken => ExpireDelegationTokenRequest, ExpireDelegationTokenResponse;
    DescribeDelegationToken => DescribeDelegationTokenRequest, DescribeDelegationTokenResponse;
    DeleteGroups => DeleteGroupsRequest, DeleteGroupsResponse;
    ElectLeaders => ElectLeadersRequest, ElectLeadersResponse;
    IncrementalAlterConfigs => IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse;
    AlterPartitionReassignments => AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse;
    ListPartitionReassignments => ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse;
    OffsetDelete => OffsetDeleteRequest, OffsetDeleteResponse;
    DescribeClientQuotas => DescribeClientQuotasRequest, DescribeClientQuotasResponse;
    AlterClientQuotas => AlterClientQuotasRequest, AlterClientQuotasResponse;
    DescribeUserScramCredentials => DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse;
    AlterUserScramCredentials => AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse;
    Vote => VoteRequest, VoteResponse;
    BeginQuorumEpoch => BeginQuorumEpochRequest, BeginQuorumEpochResponse;
    EndQuorumEpoch => EndQuorumEpochRequest, EndQuorumEpochResponse;
    DescribeQuorum => DescribeQuorumRequest, DescribeQuorumResponse;
    AlterPartition => AlterPartitionRequest, AlterPartitionResponse;
    UpdateFeatures => UpdateFeaturesRequest, UpdateFeaturesResponse;
    Envelope => EnvelopeRequest, EnvelopeResponse;
    FetchSnapshot => FetchSnapshotRequest, FetchSnapshotResponse;
    DescribeCluster => DescribeClusterRequest, DescribeClusterResponse;
    DescribeProducers => DescribeProducersRequest, DescribeProducersResponse;
    BrokerRegistration => BrokerRegistrationRequest, BrokerRegistrationResponse;
    BrokerHeartbeat => BrokerHeartbeatRequest, BrokerHeartbeatResponse;
    UnregisterBroker => UnregisterBrokerRequest, UnregisterBrokerResponse;
    DescribeTransactions => DescribeTransactionsRequest, DescribeTransactionsResponse;
    ListTransactions => ListTransactionsRequest, ListTransactionsResponse;
    AllocateProducerIds => AllocateProducerIdsRequest, AllocateProducerIdsResponse;
    ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse;
    ConsumerGroupDescribe => ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse;
    ControllerRegistration => ControllerRegistrationRequest, ControllerRegistrationResponse;
    GetTelemetrySubscriptions => GetTelemetrySubscriptionsRequest, GetTelemetrySubscriptionsResponse;
    PushTelemetry => PushTelemetryRequest, PushTelemetryResponse;
    AssignReplicasToDirs => AssignReplicasToDirsRequest, AssignReplicasToDirsResponse;
    ListConfigResources => ListConfigResourcesRequest, ListConfigResourcesResponse;
    DescribeTopicPartitions => DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse;
    ShareGroupHeartbeat => ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse;
    ShareGroupDescribe => ShareGroupDescribeRequest, ShareGroupDescribeResponse;
    ShareFetch => ShareFetchRequest, ShareFetchResponse;
    ShareAcknowledge => ShareAcknowledgeRequest, ShareAcknowledgeResponse;
    AddRaftVoter => AddRaftVoterRequest, AddRaftVoterResponse;
    RemoveRaftVoter => RemoveRaftVoterRequest, RemoveRaftVoterResponse;
    UpdateRaftVoter => UpdateRaftVoterRequest, UpdateRaftVoterResponse;
    InitializeShareGroupState => InitializeShareGroupStateRequest, InitializeShareGroupStateResponse;
    ReadShareGroupState => ReadShareGroupStateRequest, ReadShareGroupStateResponse;
    WriteShareGroupState => WriteShareGroupStateRequest, WriteShareGroupStateResponse;
    DeleteShareGroupState => DeleteShareGroupStateRequest, DeleteShareGroupStateResponse;
    ReadShareGroupStateSummary => ReadShareGroupStateSummaryRequest, ReadShareGroupStateSummaryResponse;
    DescribeShareGroupOffsets => DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse;
    AlterShareGroupOffsets => AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse;
    DeleteShareGroupOffsets => DeleteShareGroupOffsetsRequest, DeleteShareGroupOffsetsResponse;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::protocol::StrBytes;

    fn request_frame(
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        body: RequestKind,
    ) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        let mut out = BytesMut::new();
        encode_request(&header, &body, &mut out).unwrap();
        let len = frame_len(&out, DEFAULT_MAX_REQUEST_BYTES).unwrap().unwrap();
        assert_eq!(len + 4, out.len());
        out.freeze().slice(4..)
    }

    fn metadata(topics: &[&'static str]) -> RequestKind {
        RequestKind::Metadata(
            MetadataRequest::default().with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_static_str(t))))
                    })
                    .collect(),
            )),
        )
    }

    #[test]
    fn frame_len_limits() {
        assert_eq!(frame_len(&[0, 0, 1], 10), Ok(None));
        assert_eq!(frame_len(&[0, 0, 0, 10, 9], 10), Ok(Some(10)));
        assert_eq!(
            frame_len(&[0, 0, 0, 11], 10),
            Err(FrameError::TooLarge { size: 11, max: 10 })
        );
        assert_eq!(frame_len(&[0xff; 4], 10), Err(FrameError::NegativeSize(-1)));
    }

    #[test]
    fn request_round_trip_and_trailing_bytes() {
        for version in [1, 4, 9, 12, 13] {
            let frame = request_frame(ApiKey::Metadata, version, 42, metadata(&["a", "bb"]));
            let req = decode_request(frame.clone()).unwrap();
            assert_eq!(req.api_key, ApiKey::Metadata);
            assert_eq!(req.header.correlation_id, 42);
            assert_eq!(req.header.client_id.as_deref(), Some("test"));
            assert_eq!(req.body, metadata(&["a", "bb"]));
            // Apache Kafka ignores bytes after the body; so do we.
            let padded = Bytes::from([&frame[..], b"junk"].concat());
            assert_eq!(decode_request(padded).unwrap().body, req.body);
        }
    }

    #[test]
    fn large_i32_fields_survive_the_probe() {
        // max_bytes and partition_max_bytes exceed the bytes left: the probe replaces them, the
        // second decode must return them unchanged.
        let body = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_max_bytes(52_428_800)
            .with_min_bytes(1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(3)
                    .with_fetch_offset(1 << 40)
                    .with_partition_max_bytes(1_048_576)])]);
        for version in [4, 11, 12] {
            let frame = request_frame(
                ApiKey::Fetch,
                version,
                i32::MAX,
                RequestKind::Fetch(body.clone()),
            );
            let req = decode_request(frame).unwrap();
            assert_eq!(req.header.correlation_id, i32::MAX);
            assert_eq!(req.body, RequestKind::Fetch(body.clone()));
        }
    }

    #[test]
    fn unknown_api_and_versions() {
        let mut raw = vec![0u8; 8];
        raw[0..2].copy_from_slice(&999i16.to_be_bytes());
        raw[4..8].copy_from_slice(&77i32.to_be_bytes());
        assert_eq!(
            decode_request(Bytes::from(raw.clone())),
            Err(RequestError::UnknownApi {
                api_key: 999,
                correlation_id: 77
            })
        );
        raw[0..2].copy_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
        raw[2..4].copy_from_slice(&99i16.to_be_bytes());
        let err = decode_request(Bytes::from(raw)).unwrap_err();
        assert_eq!(
            err,
            RequestError::UnsupportedVersion {
                api_key: 18,
                api_version: 99,
                correlation_id: 77
            }
        );
        assert_eq!(err.correlation_id(), Some(77));
        for short in [&[][..], &[0, 3, 0, 1, 0, 0, 0][..]] {
            assert!(matches!(
                decode_request(Bytes::copy_from_slice(short)),
                Err(RequestError::Malformed(_))
            ));
        }
    }

    #[test]
    fn versions_listed_but_not_implemented_are_unsupported() {
        // kafka-protocol 0.18 lists OffsetCommit v10 in ApiKey::valid_versions() but its
        // message types stop at v9: such a request must be UnsupportedVersion, not Malformed.
        assert_eq!(ApiKey::OffsetCommit.valid_versions().max, 10);
        assert_eq!(supported_versions(ApiKey::OffsetCommit).max, 9);
        assert_eq!(
            supported_versions(ApiKey::Fetch),
            VersionRange { min: 4, max: 18 }
        );
        let mut raw = vec![0u8; 16];
        raw[0..2].copy_from_slice(&(ApiKey::OffsetCommit as i16).to_be_bytes());
        raw[2..4].copy_from_slice(&10i16.to_be_bytes());
        raw[4..8].copy_from_slice(&5i32.to_be_bytes());
        assert_eq!(
            decode_request(Bytes::from(raw)),
            Err(RequestError::UnsupportedVersion {
                api_key: 8,
                api_version: 10,
                correlation_id: 5
            })
        );
    }

    #[test]
    fn hostile_counts_are_refused_without_allocating() {
        // Metadata v1 (i32 array count) claiming 2^31-1 topics.
        let frame = request_frame(ApiKey::Metadata, 1, 1, metadata(&["x"]));
        let count_at = frame.len() - 2 - 1 - 4; // topics: [count][i16 len]["x"]
        let mut m = frame.to_vec();
        m[count_at..count_at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            decode_request(Bytes::from(m)),
            Err(RequestError::Malformed(_))
        ));

        // Metadata v9 (compact array count) claiming 2^32-2 topics.
        let frame = request_frame(
            ApiKey::Metadata,
            9,
            1,
            RequestKind::Metadata(MetadataRequest::default()),
        );
        let mut m = frame.to_vec();
        // Body v9: [topics: compact count][auto][cluster ops][topic ops][tags=0].
        let body_at = m.len() - 5;
        assert_eq!(m[body_at], 1, "empty compact array");
        m.splice(body_at..body_at + 1, [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            decode_request(Bytes::from(m)),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn responses_frame_with_the_right_header() {
        let body = ResponseKind::ApiVersions(ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default().with_api_key(0).with_min_version(3).with_max_version(9),
        ]));
        for version in [0, 3] {
            let mut out = BytesMut::new();
            encode_response(9, ApiKey::ApiVersions, version, &body, &mut out).unwrap();
            assert_eq!(frame_len(&out, 1 << 20).unwrap(), Some(out.len() - 4));
            // Header v0: just the correlation id, even for flexible ApiVersions v3.
            assert_eq!(&out[4..8], &9i32.to_be_bytes());
            assert_eq!(
                &out[8..10],
                &0i16.to_be_bytes(),
                "error code follows directly"
            );
            if version == 3 {
                // Default-valued tagged fields (SupportedFeatures, FinalizedFeaturesEpoch,
                // FinalizedFeatures, ZkMigrationReady) are left out: empty tag section last.
                assert_eq!(out.last(), Some(&0));
            }
            let (header, decoded) =
                decode_response(ApiKey::ApiVersions, version, out.freeze().slice(4..)).unwrap();
            assert_eq!(header.correlation_id, 9);
            assert_eq!(decoded, body);
        }
        // Fetch v12 uses response header v1 (a tag byte after the correlation id).
        let fetch = ResponseKind::Fetch(FetchResponse::default());
        let mut out = BytesMut::new();
        encode_response(5, ApiKey::Fetch, 12, &fetch, &mut out).unwrap();
        assert_eq!(out[8], 0);
        assert_eq!(out.len(), 4 + 4 + 1 + 4 + 2 + 4 + 1 + 1);
    }

    #[test]
    fn encode_errors_leave_the_buffer_alone() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let body = ResponseKind::Fetch(FetchResponse::default());
        assert_eq!(
            encode_response(1, ApiKey::Produce, 9, &body, &mut out),
            Err(EncodeError::KindMismatch(ApiKey::Produce))
        );
        assert!(matches!(
            encode_response(1, ApiKey::Fetch, 99, &body, &mut out),
            Err(EncodeError::UnsupportedVersion { .. })
        ));
        // session_id is not available before v7: the crate refuses, we roll back.
        let bad = ResponseKind::Fetch(FetchResponse::default().with_session_id(3));
        assert!(matches!(
            encode_response(1, ApiKey::Fetch, 4, &bad, &mut out),
            Err(EncodeError::Encode(_))
        ));
        assert_eq!(&out[..], b"keep");
    }
}
