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
pub mod conn;
mod elect_leaders;
mod fetch;
mod groups;
mod metadata_api;
mod offset_for_leader_epoch;
mod produce;
mod residency;
pub mod txn;
pub mod zerocopy;

use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_lite::AsyncWriteExt;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use shardlog_protocol::fetch_encode::{encode_fetch_response, FetchResponseDesc};
use shardlog_protocol::frame::{self, RequestError};

use crate::base::limits;
use crate::runtime::rt::{TcpListener, TcpStream};
use crate::shard::{Counters, Shard};
use conn::{BufferPool, ConnError, ConnectionLimiter, Refused, RequestBudget};

pub use api_versions::supported_range;

/// Who sent a request (for group membership records).
pub struct RequestContext {
    pub client_id: String,
    /// The peer's address as Kafka writes it ("/127.0.0.1").
    pub client_host: String,
    /// The request's bytes reserved from the shard's budget (`queued.max.request.bytes`).
    reservation: std::cell::RefCell<Option<conn::Reservation>>,
}

impl RequestContext {
    /// The handler no longer holds the request's bytes: returns them to the shard's budget
    /// before the response is ready (Produce with acks=all, once appended, while it waits
    /// for the ISR). Otherwise they return when the request is answered.
    pub fn release_request_bytes(&self) {
        self.reservation.borrow_mut().take();
    }
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

/// Accepts connections until shutdown, then waits for in-flight requests to finish. A
/// connection over `max.connections` or `max.connections.per.ip` is closed right after accept.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener, limiter: Arc<ConnectionLimiter>) {
    let in_flight = Rc::new(std::cell::Cell::new(0usize));
    let shared = Rc::new(ShardConnections {
        budget: RequestBudget::new(
            shard
                .config
                .request_budget_per_shard(shard.config.shards.max(1)),
        ),
        buffers: BufferPool::default(),
    });
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ = shard.shutdown.recv_async().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                let ip = stream.peer_addr().ok().map(|a| a.ip());
                let slot = match limiter.admit(ip) {
                    Ok(slot) => slot,
                    Err(reason) => {
                        let m = &shard.metrics;
                        let (counter, name) = match reason {
                            Refused::MaxConnections => {
                                (&m.connections_refused_max, "max.connections")
                            }
                            Refused::MaxConnectionsPerIp => {
                                (&m.connections_refused_per_ip, "max.connections.per.ip")
                            }
                        };
                        m.count(counter, 1);
                        log::warn!("connection from {ip:?} closed at accept: {name} reached");
                        drop(stream);
                        continue;
                    }
                };
                let shard = shard.clone();
                let in_flight = in_flight.clone();
                let shared = shared.clone();
                crate::runtime::rt::spawn_detached(async move {
                    if let Err(e) = serve_connection(shard, stream, in_flight, shared).await {
                        log::debug!("connection closed: {e}");
                    }
                    drop(slot);
                });
            }
            Some(Err(e)) => {
                log::warn!("accept failed: {e}");
                crate::runtime::rt::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    // Let requests already being handled complete (bounded: fetch waits are capped).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while in_flight.get() > 0 && std::time::Instant::now() < deadline {
        crate::runtime::rt::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// What the connections of one shard share: its request budget and response buffers.
struct ShardConnections {
    budget: RequestBudget,
    buffers: BufferPool,
}

/// Serves one connection: a request at a time, in order. Requests larger than
/// `BULK_REQUEST_BYTES` are read and handled in the shard's bulk task queue, so that a flood
/// of large produce requests leaves most of the shard to small requests.
async fn serve_connection(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    in_flight: Rc<std::cell::Cell<usize>>,
    shared: Rc<ShardConnections>,
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
    let max = shard.config.request_bytes_max;
    loop {
        let next = futures_lite::future::or(
            async { Some(conn::read_prefix(&mut stream, max).await) },
            async {
                let _ = shard.shutdown.recv_async().await;
                None
            },
        )
        .await;
        let len = match next {
            None => return Ok(()),
            Some(r) => match r? {
                None => return Ok(()),
                Some(len) => len,
            },
        };
        let served = if len > limits::BULK_REQUEST_BYTES {
            let (shard, in_flight, shared) = (shard.clone(), in_flight.clone(), shared.clone());
            let (returned, result) = crate::runtime::rt::spawn_bulk(async move {
                let r = serve_request(&shard, &mut stream, len, &in_flight, &shared).await;
                (stream, r)
            })
            .await;
            stream = returned;
            result?
        } else {
            serve_request(&shard, &mut stream, len, &in_flight, &shared).await?
        };
        let Some(throttle) = served else {
            return Ok(());
        };
        // Client quotas (KIP-219): muted, nothing more is read until the throttle time passed.
        if !client_quotas::stay_muted(&shard, throttle).await {
            return Ok(());
        }
    }
}

/// Reads the body of a request of `len` bytes (reserving them first) and answers it; returns
/// the client quota throttle that applies next, or `None` when the broker is shutting down
/// before the body arrived.
async fn serve_request(
    shard: &Rc<Shard>,
    stream: &mut TcpStream,
    len: usize,
    in_flight: &Rc<std::cell::Cell<usize>>,
    shared: &ShardConnections,
) -> Result<Option<client_quotas::Throttle>, ConnError> {
    let read = futures_lite::future::or(
        async { Some(conn::read_body(stream, len, &shared.budget, shard).await) },
        async {
            let _ = shard.shutdown.recv_async().await;
            None
        },
    )
    .await;
    // The reservation is held until the request is answered (or its handler releases it).
    let (frame, reservation) = match read {
        None => return Ok(None),
        Some(r) => r?,
    };
    in_flight.set(in_flight.get() + 1);
    let mut out = shared.buffers.take();
    let mut throttle = client_quotas::Throttle::default();
    // Boxed: the handlers' futures are large, and unboxed they would be part of every
    // connection's future, idle ones included (see "Limits" in ARCHITECTURE.md).
    let result = Box::pin(handle_frame(
        shard,
        frame,
        reservation,
        stream,
        &mut out,
        &mut throttle,
    ))
    .await;
    shared.buffers.give_back(out);
    in_flight.set(in_flight.get() - 1);
    result.map(|()| Some(throttle))
}

async fn handle_frame(
    shard: &Rc<Shard>,
    frame: Bytes,
    reservation: conn::Reservation,
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
        reservation: std::cell::RefCell::new(Some(reservation)),
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
        crate::runtime::rt::sleep(throttle.duration()).await;
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
        RequestKind::Produce(r) => produce::handle(shard, version, r, ctx).await,
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
        RequestKind::AddPartitionsToTxn(r) => txn::add_partitions_to_txn(shard, version, r).await,
        RequestKind::AddOffsetsToTxn(r) => txn::add_offsets_to_txn(shard, version, r).await,
        RequestKind::EndTxn(r) => txn::end_txn(shard, version, r).await,
        RequestKind::TxnOffsetCommit(r) => groups::txn_offset_commit(shard, version, r).await,
        RequestKind::WriteTxnMarkers(r) => txn::write_txn_markers(shard, version, r).await,
        RequestKind::DescribeTransactions(r) => txn::describe_transactions(shard, version, r).await,
        RequestKind::ListTransactions(r) => txn::list_transactions(shard, version, r).await,
        RequestKind::DescribeProducers(r) => txn::describe_producers(shard, version, r).await,
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
