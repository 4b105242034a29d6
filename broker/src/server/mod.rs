//! Connections and request dispatch. Every shard listens on the same address (SO_REUSEPORT), so
//! the kernel spreads connections over shards; a request is decoded and handled on the shard that
//! accepted it, which reaches other shards with `Shard::invoke_on`.
//!
//! A connection handles one request at a time, in order (as Kafka does: it mutes a channel while
//! a request is in flight), so responses need no reordering. Malformed frames close that
//! connection only; nothing a client sends can panic the broker.

mod admin;
mod api_versions;
mod client_quotas;
mod cluster_admin;
mod configs;
mod elect_leaders;
mod fetch;
mod groups;
mod metadata_api;
mod offset_for_leader_epoch;
mod produce;
mod residency;
pub mod zerocopy;

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use shardlog_protocol::fetch_encode::{encode_fetch_response, FetchResponseDesc};
use shardlog_protocol::frame::{self, RequestError};

use crate::config::limits;
use crate::rt::{TcpListener, TcpStream};
use crate::shard::{Counters, Shard};

pub use admin::{create_topics_in_registry, TopicSpec};
pub use api_versions::supported_range;

/// Who sent a request (for group membership records).
pub struct RequestContext {
    pub client_id: String,
    /// The peer's address as Kafka writes it ("/127.0.0.1").
    pub client_host: String,
}

/// What a handler hands back to the connection.
pub enum Response {
    /// Nothing is sent (Produce with acks=0).
    None,
    Message(ResponseKind),
    /// A Fetch response whose record bytes stay in files (`RecordsPart::File { token }` refers
    /// to the slice at that index).
    Fetch(FetchResponseDesc, Vec<shardlog_storage::FileSlice>),
    /// Close the connection (a request this broker cannot answer).
    Close,
}

/// Accepts connections until shutdown, then waits for in-flight requests to finish.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    let in_flight = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ = shard.shutdown.recv_async().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                let shard = shard.clone();
                let in_flight = in_flight.clone();
                crate::rt::spawn_detached(async move {
                    if let Err(e) = serve_connection(&shard, stream, &in_flight).await {
                        log::debug!("connection closed: {e}");
                    }
                });
            }
            Some(Err(e)) => {
                log::warn!("accept failed: {e}");
                crate::rt::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    // Let requests already being handled complete (bounded: fetch waits are capped).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while in_flight.get() > 0 && std::time::Instant::now() < deadline {
        crate::rt::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes refused")]
    FrameTooLarge(i64),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unsupported api {api_key} version {api_version}")]
    Unsupported { api_key: i16, api_version: i16 },
}

/// Reads one frame into `buf`; returns `None` on a clean end of stream.
async fn read_frame(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Bytes>, ConnError> {
    loop {
        match frame::frame_len(buf, max) {
            Ok(Some(len)) if buf.len() >= 4 + len => {
                let mut f = buf.split_to(4 + len);
                let _ = f.split_to(4);
                return Ok(Some(f.freeze()));
            }
            Ok(need) => {
                // Read at least what the current frame still lacks, in reasonably large steps.
                let want = need
                    .map(|len| 4 + len - buf.len())
                    .unwrap_or(4)
                    .max(64 * 1024);
                let start = buf.len();
                buf.resize(start + want, 0);
                let n = stream.read(&mut buf[start..]).await?;
                buf.truncate(start + n);
                if n == 0 {
                    return if buf.is_empty() {
                        Ok(None)
                    } else {
                        Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()))
                    };
                }
            }
            Err(e) => {
                let size = buf
                    .get(..4)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64);
                log::debug!("refusing frame: {e}");
                return Err(ConnError::FrameTooLarge(size.unwrap_or(-1)));
            }
        }
    }
}

async fn serve_connection(
    shard: &Rc<Shard>,
    mut stream: TcpStream,
    in_flight: &Rc<std::cell::Cell<usize>>,
) -> Result<(), ConnError> {
    shard.metrics.connection_opened();
    struct Closed<'a>(&'a crate::metrics::ShardMetrics);
    impl Drop for Closed<'_> {
        fn drop(&mut self) {
            self.0.connection_closed();
        }
    }
    let _closed = Closed(&shard.metrics);
    stream
        .set_nodelay(true)
        .map_err(|e| ConnError::Io(std::io::Error::other(e.to_string())))?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let max = shard.config.request_bytes_max;
    loop {
        let next = futures_lite::future::or(
            async { Some(read_frame(&mut stream, &mut buf, max).await) },
            async {
                let _ = shard.shutdown.recv_async().await;
                None
            },
        )
        .await;
        let frame = match next {
            None => return Ok(()),
            Some(r) => match r? {
                None => return Ok(()),
                Some(f) => f,
            },
        };
        in_flight.set(in_flight.get() + 1);
        let mut throttle = client_quotas::Throttle::default();
        let result = handle_frame(shard, frame, &mut stream, &mut out, &mut throttle).await;
        in_flight.set(in_flight.get() - 1);
        result?;
        // Client quotas (KIP-219): muted, nothing more is read until the throttle time passed.
        if !client_quotas::stay_muted(shard, throttle).await {
            return Ok(());
        }
    }
}

async fn handle_frame(
    shard: &Rc<Shard>,
    frame: Bytes,
    stream: &mut TcpStream,
    out: &mut BytesMut,
    throttle: &mut client_quotas::Throttle,
) -> Result<(), ConnError> {
    Counters::add(&shard.counters.requests, 1);
    let frame_len = frame.len();
    // Decoding reserves memory in proportion to the frame (arrays are pre-sized from their
    // counts, bounded by the bytes left); only Produce needs frames larger than this.
    let is_produce = frame.len() >= 2 && frame[..2] == (ApiKey::Produce as i16).to_be_bytes();
    if !is_produce && frame.len() > limits::NON_PRODUCE_REQUEST_BYTES_MAX {
        return Err(ConnError::FrameTooLarge(frame.len() as i64));
    }
    let req = match frame::decode_request(frame) {
        Ok(r) => r,
        Err(RequestError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
        }) if api_key == ApiKey::ApiVersions as i16 => {
            // KIP-511: answer an unknown ApiVersions version with a v0 response listing what we
            // support, so the client can retry at a version we know.
            let body = api_versions::unsupported_version_response();
            out.clear();
            frame::encode_response(correlation_id, ApiKey::ApiVersions, 0, &body, out)
                .map_err(|e| ConnError::Malformed(e.to_string()))?;
            stream.write_all(out).await?;
            let _ = api_version;
            return Ok(());
        }
        Err(RequestError::UnsupportedVersion {
            api_key,
            api_version,
            ..
        }) => {
            return Err(ConnError::Unsupported {
                api_key,
                api_version,
            })
        }
        Err(e) => return Err(ConnError::Malformed(e.to_string())),
    };
    let api_key = req.api_key;
    let version = req.header.request_api_version;
    let correlation_id = req.header.correlation_id;
    let Some(range) = supported_range(api_key) else {
        return Err(ConnError::Unsupported {
            api_key: api_key as i16,
            api_version: version,
        });
    };
    if version < range.0 || version > range.1 {
        if api_key == ApiKey::ApiVersions {
            let body = api_versions::unsupported_version_response();
            out.clear();
            frame::encode_response(correlation_id, ApiKey::ApiVersions, 0, &body, out)
                .map_err(|e| ConnError::Malformed(e.to_string()))?;
            stream.write_all(out).await?;
            return Ok(());
        }
        return Err(ConnError::Unsupported {
            api_key: api_key as i16,
            api_version: version,
        });
    }
    let ctx = RequestContext {
        client_id: req
            .header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: stream
            .peer_addr()
            .map(|a| format!("/{}", a.ip()))
            .unwrap_or_default(),
    };
    let started = shard.metrics.enabled().then(std::time::Instant::now);
    // Client quotas: record this request, throttle the response when over a quota.
    let exempt = client_quotas::exempt(&req.body);
    let dispatched = std::pin::pin!(dispatch(shard, version, req.body, &ctx));
    let (mut response, busy) = client_quotas::Busy::new(dispatched).await;
    *throttle = client_quotas::after_request(
        shard,
        &ctx,
        api_key,
        version,
        frame_len,
        busy,
        exempt,
        &mut response,
    );
    if throttle.before_response {
        crate::rt::sleep(throttle.duration()).await;
        *throttle = client_quotas::Throttle::default();
    }
    let result = send_response(
        shard,
        response,
        correlation_id,
        api_key,
        version,
        stream,
        out,
    )
    .await;
    if let Some(t) = started {
        shard
            .metrics
            .record_request(api_key as i16, version, t.elapsed());
    }
    result
}

async fn send_response(
    shard: &Rc<Shard>,
    response: Response,
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    stream: &mut TcpStream,
    out: &mut BytesMut,
) -> Result<(), ConnError> {
    match response {
        Response::None => Ok(()),
        Response::Message(body) => {
            out.clear();
            frame::encode_response(correlation_id, api_key, version, &body, out)
                .map_err(|e| ConnError::Malformed(e.to_string()))?;
            stream.write_all(out).await?;
            if out.capacity() > 1 << 20 {
                *out = BytesMut::with_capacity(16 * 1024);
            }
            Ok(())
        }
        Response::Fetch(desc, files) => {
            let chunks = encode_fetch_response(correlation_id, version, &desc)
                .map_err(|e| ConnError::Malformed(e.to_string()))?;
            zerocopy::write_chunks(stream, &chunks, &files, &shard.counters).await?;
            Ok(())
        }
        Response::Close => Err(ConnError::Unsupported {
            api_key: api_key as i16,
            api_version: version,
        }),
    }
}

async fn dispatch(
    shard: &Rc<Shard>,
    version: i16,
    body: RequestKind,
    ctx: &RequestContext,
) -> Response {
    match body {
        RequestKind::ApiVersions(r) => api_versions::handle(version, r),
        RequestKind::Metadata(r) => metadata_api::handle(shard, version, r).await,
        RequestKind::Produce(r) => produce::handle(shard, version, r).await,
        RequestKind::Fetch(r) => fetch::handle(shard, version, r).await,
        RequestKind::OffsetForLeaderEpoch(r) => {
            offset_for_leader_epoch::handle(shard, version, r).await
        }
        RequestKind::ListOffsets(r) => admin::list_offsets(shard, version, r).await,
        RequestKind::CreateTopics(r) => admin::create_topics(shard, version, r).await,
        RequestKind::DeleteTopics(r) => admin::delete_topics(shard, version, r).await,
        RequestKind::InitProducerId(r) => admin::init_producer_id(shard, version, r).await,
        RequestKind::CreatePartitions(r) => {
            cluster_admin::create_partitions(shard, version, r).await
        }
        RequestKind::DeleteRecords(r) => cluster_admin::delete_records(shard, version, r).await,
        RequestKind::DescribeCluster(r) => cluster_admin::describe_cluster(shard, version, r).await,
        RequestKind::DescribeLogDirs(r) => {
            cluster_admin::describe_log_dirs(shard, version, r).await
        }
        RequestKind::DescribeConfigs(r) => configs::describe_configs(shard, version, r).await,
        RequestKind::AlterConfigs(r) => configs::alter_configs(shard, version, r).await,
        RequestKind::IncrementalAlterConfigs(r) => {
            configs::incremental_alter_configs(shard, version, r).await
        }
        RequestKind::FindCoordinator(r) => groups::find_coordinator(shard, version, r).await,
        RequestKind::JoinGroup(r) => groups::join_group(shard, version, r, ctx).await,
        RequestKind::SyncGroup(r) => groups::sync_group(shard, version, r).await,
        RequestKind::Heartbeat(r) => groups::heartbeat(shard, version, r).await,
        RequestKind::LeaveGroup(r) => groups::leave_group(shard, version, r).await,
        RequestKind::OffsetCommit(r) => groups::offset_commit(shard, version, r).await,
        RequestKind::OffsetFetch(r) => groups::offset_fetch(shard, version, r).await,
        RequestKind::ListGroups(r) => groups::list_groups(shard, version, r).await,
        RequestKind::DescribeGroups(r) => groups::describe_groups(shard, version, r).await,
        RequestKind::DeleteGroups(r) => groups::delete_groups(shard, version, r).await,
        RequestKind::OffsetDelete(r) => groups::offset_delete(shard, version, r).await,
        RequestKind::ElectLeaders(r) => elect_leaders::handle(shard, version, r).await,
        RequestKind::DescribeClientQuotas(r) => {
            client_quotas::describe_client_quotas(shard, version, r).await
        }
        RequestKind::AlterClientQuotas(r) => {
            client_quotas::alter_client_quotas(shard, version, r).await
        }
        // `supported_range` admitted only the APIs above.
        other => {
            log::warn!("no handler for {:?}", std::mem::discriminant(&other));
            Response::Close
        }
    }
}
