//! Client quotas on the request path: DescribeClientQuotas (48), AlterClientQuotas (49), and
//! the hook the connection calls after each request (`after_request`): it records the
//! request's bytes and shard time against the client's quotas, puts the throttle time into
//! the response and tells the connection how long to stay muted (KIP-219).
//!
//! Changes: standalone, shard 0 (the metadata writer) applies them to its table, writes
//! `<data>/__meta/quotas.json` on a blocking thread and installs the new table on every shard
//! before answering. In cluster mode the control thread writes Kafka's znodes and installs
//! what it reads back from ZooKeeper on every shard (`ControlRequest::AlterClientQuotas`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    alter_client_quotas_response, describe_client_quotas_response, AlterClientQuotasRequest,
    AlterClientQuotasResponse, ApiKey, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
    RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use super::{RequestContext, Response};
use crate::base::errors;
use crate::cluster::control_api::ControlRequest;
use crate::cluster::quota::{self, QuotaEntity, QuotaError, QuotaKind, QuotaOp};
use crate::runtime::shard_table::ShardId;
use crate::shard::Shard;

/// Longest wait for the control thread to write ZooKeeper and install the result.
const CONTROL_WAIT_MAX: Duration = Duration::from_secs(30);

pub async fn describe_client_quotas(
    shard: &Rc<Shard>,
    _version: i16,
    req: DescribeClientQuotasRequest,
) -> Response {
    let components: Vec<(&str, i8, Option<&str>)> = req
        .components
        .iter()
        .map(|c| (c.entity_type.as_str(), c.match_type, c._match.as_deref()))
        .collect();
    let response = match quota::filter_from_wire(&components) {
        Err((code, message)) => DescribeClientQuotasResponse::default()
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(message)))
            .with_entries(None),
        Ok(filter) => {
            let table = shard.quotas.table();
            let entries = quota::describe(&table, &filter, req.strict)
                .into_iter()
                .map(|(entity, values)| {
                    describe_client_quotas_response::EntryData::default()
                        .with_entity(
                            entity
                                .parts()
                                .into_iter()
                                .map(|(t, n)| {
                                    describe_client_quotas_response::EntityData::default()
                                        .with_entity_type(StrBytes::from_static_str(t))
                                        .with_entity_name(
                                            n.map(|n| StrBytes::from_string(n.to_string())),
                                        )
                                })
                                .collect(),
                        )
                        .with_values(
                            values
                                .iter()
                                .map(|(k, v)| {
                                    describe_client_quotas_response::ValueData::default()
                                        .with_key(StrBytes::from_static_str(k.key()))
                                        .with_value(*v)
                                })
                                .collect(),
                        )
                })
                .collect();
            DescribeClientQuotasResponse::default()
                .with_error_code(errors::NONE)
                .with_entries(Some(entries))
        }
    };
    Response::Message(ResponseKind::DescribeClientQuotas(response))
}

/// An entity as the request named it: (entity type, name or `None` for the default).
type EntityEcho = Vec<(String, Option<String>)>;

pub async fn alter_client_quotas(
    shard: &Rc<Shard>,
    _version: i16,
    req: AlterClientQuotasRequest,
) -> Response {
    // Per entry: its echo for the response, and the validated change or the error.
    let mut results: Vec<(EntityEcho, Result<(), QuotaError>)> = Vec::new();
    let mut changes: Vec<(QuotaEntity, Vec<QuotaOp>)> = Vec::new();
    let mut change_of_entry: Vec<Option<usize>> = Vec::new();
    for entry in &req.entries {
        let echo: EntityEcho = entry
            .entity
            .iter()
            .map(|e| {
                (
                    e.entity_type.to_string(),
                    e.entity_name.as_ref().map(|n| n.to_string()),
                )
            })
            .collect();
        let parts: Vec<(&str, Option<&str>)> = entry
            .entity
            .iter()
            .map(|e| (e.entity_type.as_str(), e.entity_name.as_deref()))
            .collect();
        let ops: Vec<(&str, f64, bool)> = entry
            .ops
            .iter()
            .map(|o| (o.key.as_str(), o.value, o.remove))
            .collect();
        let checked = quota::entity_from_wire(&parts).and_then(|entity| {
            if changes.iter().any(|(e, _)| *e == entity) {
                return Err((
                    errors::INVALID_REQUEST,
                    format!("Duplicate quota entity {entity} in the request"),
                ));
            }
            Ok((entity, quota::ops_from_wire(&ops)?))
        });
        match checked {
            Ok(change) => {
                change_of_entry.push(Some(changes.len()));
                changes.push(change);
                results.push((echo, Ok(())));
            }
            Err(e) => {
                change_of_entry.push(None);
                results.push((echo, Err(e)));
            }
        }
    }
    if !req.validate_only && !changes.is_empty() {
        if let Err(e) = apply(shard, changes).await {
            for (r, c) in results.iter_mut().zip(&change_of_entry) {
                if c.is_some() {
                    r.1 = Err(e.clone());
                }
            }
        }
    }
    let entries = results
        .into_iter()
        .map(|(echo, result)| {
            let (code, message) = match result {
                Ok(()) => (errors::NONE, None),
                Err((code, m)) => (code, Some(StrBytes::from_string(m))),
            };
            alter_client_quotas_response::EntryData::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_entity(
                    echo.into_iter()
                        .map(|(t, n)| {
                            alter_client_quotas_response::EntityData::default()
                                .with_entity_type(StrBytes::from_string(t))
                                .with_entity_name(n.map(StrBytes::from_string))
                        })
                        .collect(),
                )
        })
        .collect();
    Response::Message(ResponseKind::AlterClientQuotas(
        AlterClientQuotasResponse::default().with_entries(entries),
    ))
}

/// Applies validated changes: through the control thread in cluster mode, else on shard 0.
async fn apply(
    shard: &Rc<Shard>,
    changes: Vec<(QuotaEntity, Vec<QuotaOp>)>,
) -> Result<(), QuotaError> {
    if let Some(control) = shard.control.clone() {
        let (reply, rx) = flume::bounded(1);
        if control
            .tx
            .send_async(ControlRequest::AlterClientQuotas { changes, reply })
            .await
            .is_err()
        {
            return Err((errors::REQUEST_TIMED_OUT, "the broker is stopping".into()));
        }
        return futures_lite::future::or(
            async {
                crate::runtime::rt::recv_cross(&rx)
                    .await
                    .unwrap_or_else(|_| {
                        Err((errors::REQUEST_TIMED_OUT, "the broker is stopping".into()))
                    })
            },
            async {
                crate::runtime::rt::sleep(CONTROL_WAIT_MAX).await;
                Err((
                    errors::REQUEST_TIMED_OUT,
                    "ZooKeeper did not answer in time; the change may still be applied".into(),
                ))
            },
        )
        .await;
    }
    let applied = shard
        .invoke_on(ShardId(0), move |s0| async move {
            // Quota changes are rare: they share the topic registry's gate, so two changes
            // are written and installed in the order they were made.
            let _permit = s0.registry_gate.acquire_permit(1).await;
            let next = Arc::new(s0.quotas.table().with_changes(&changes));
            let dir = s0.config.data_dir.clone();
            let to_save = next.clone();
            crate::runtime::rt::blocking(move || quota::store_save(&dir, &to_save))
                .await
                .map_err(|e| {
                    log::error!("cannot store client quotas: {e}");
                    (errors::KAFKA_STORAGE_ERROR, e)
                })?;
            s0.invoke_on_all(move |s| {
                let t = next.clone();
                async move { s.quotas.set_table(t) }
            })
            .await;
            Ok(())
        })
        .await;
    applied.unwrap_or_else(|| Err((errors::REQUEST_TIMED_OUT, "the broker is stopping".into())))
}

/// Requests no client quota applies to: a follower's Fetch (replication is not a client).
pub fn exempt(body: &RequestKind) -> bool {
    match body {
        RequestKind::Fetch(r) => r.replica_id.0 >= 0 || r.replica_state.replica_id.0 >= 0,
        _ => false,
    }
}

/// What the connection does after a request over quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Throttle {
    /// How long the connection stays muted (0: not throttled).
    pub ms: u64,
    /// The client's version predates KIP-219, so it will not back off by itself: the response
    /// is held back for `ms` instead of being sent at once.
    pub before_response: bool,
}

impl Throttle {
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.ms)
    }
}

/// Records the request against the client's quotas (bytes produced for Produce, record bytes
/// returned for Fetch, shard time for every request) and, when over a quota, sets the larger
/// throttle time into the response. `busy` is the time the shard spent handling the request
/// (polls of its future, not waits).
#[allow(clippy::too_many_arguments)]
pub fn after_request(
    shard: &Shard,
    ctx: &RequestContext,
    api_key: ApiKey,
    version: i16,
    request_bytes: usize,
    busy: Duration,
    exempt: bool,
    response: &mut Response,
) -> Throttle {
    if exempt || shard.quotas.is_empty() {
        return Throttle::default();
    }
    let now = Instant::now();
    let q = &shard.quotas;
    let user = quota::ANONYMOUS;
    let client = ctx.client_id.as_str();
    let mut ms = 0;
    match (api_key, &*response) {
        (ApiKey::Produce, _) => {
            ms = ms.max(q.record(
                QuotaKind::ProducerByteRate,
                user,
                client,
                request_bytes as f64,
                now,
            ));
        }
        (ApiKey::Fetch, Response::Fetch(desc, _)) => {
            let bytes: usize = desc
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .map(|p| p.records.len())
                .sum();
            ms = ms.max(q.record(QuotaKind::ConsumerByteRate, user, client, bytes as f64, now));
        }
        _ => {}
    }
    // Kafka's unit: percent of one thread's second, per second.
    let percent_seconds = busy.as_secs_f64() * 100.0;
    ms = ms.max(q.record(
        QuotaKind::RequestPercentage,
        user,
        client,
        percent_seconds,
        now,
    ));
    if ms == 0 {
        return Throttle::default();
    }
    let reported = i32::try_from(ms).unwrap_or(i32::MAX);
    set_throttle_time(response, reported);
    Throttle {
        ms,
        before_response: !quota::client_throttles(api_key, version),
    }
}

/// Sets `throttle_time_ms` (the larger of what is there and `ms`); versions of a response
/// without the field leave it out when encoding.
fn set_throttle_time(response: &mut Response, ms: i32) {
    macro_rules! with_throttle {
        ($body:expr, $($kind:ident),*) => {
            match $body {
                $(ResponseKind::$kind(r) => r.throttle_time_ms = r.throttle_time_ms.max(ms),)*
                _ => {}
            }
        };
    }
    match response {
        Response::Fetch(desc, _) => desc.throttle_time_ms = desc.throttle_time_ms.max(ms),
        Response::Message(body) => with_throttle!(
            body,
            Produce,
            Fetch,
            ListOffsets,
            Metadata,
            OffsetCommit,
            OffsetFetch,
            FindCoordinator,
            JoinGroup,
            Heartbeat,
            LeaveGroup,
            SyncGroup,
            DescribeGroups,
            ListGroups,
            ApiVersions,
            CreateTopics,
            DeleteTopics,
            DeleteRecords,
            InitProducerId,
            OffsetForLeaderEpoch,
            DescribeConfigs,
            AlterConfigs,
            DescribeLogDirs,
            CreatePartitions,
            DeleteGroups,
            ElectLeaders,
            IncrementalAlterConfigs,
            OffsetDelete,
            DescribeClientQuotas,
            AlterClientQuotas,
            DescribeCluster
        ),
        Response::None | Response::Close => {}
    }
}

/// Keeps the connection muted for `throttle` (returns at once when not throttled). False
/// when the shard is shutting down meanwhile: then the connection closes.
pub async fn stay_muted(shard: &Shard, throttle: Throttle) -> bool {
    if throttle.ms == 0 {
        return true;
    }
    futures_lite::future::or(
        async {
            crate::runtime::rt::sleep(throttle.duration()).await;
            true
        },
        async {
            let _ = shard.shutdown.recv_async().await;
            false
        },
    )
    .await
}

/// Measures the time a future spends being polled: the shard time a request costs, without
/// its waits (disk, other shards, long polls).
pub struct Busy<F> {
    inner: F,
    spent: Duration,
}

impl<F: std::future::Future + Unpin> Busy<F> {
    pub fn new(inner: F) -> Busy<F> {
        Busy {
            inner,
            spent: Duration::ZERO,
        }
    }
}

impl<F: std::future::Future + Unpin> std::future::Future for Busy<F> {
    type Output = (F::Output, Duration);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let started = Instant::now();
        let polled = std::pin::Pin::new(&mut self.inner).poll(cx);
        self.spent += started.elapsed();
        match polled {
            std::task::Poll::Ready(v) => std::task::Poll::Ready((v, self.spent)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}
