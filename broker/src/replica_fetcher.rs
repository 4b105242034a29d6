//! The follower side of replication: one task per (shard, leader broker), on the shard that owns
//! the partitions, with one TCP connection to the leader.
//!
//! Each round the task takes the partitions of its shard that follow its leader (per the latest
//! snapshot; it stops when there are none). A partition that became follower in a new epoch is
//! first truncated by leader epoch (KIP-279): the task asks the leader (OffsetForLeaderEpoch)
//! where our latest epoch ends there and cuts our log at that point, repeating with older
//! epochs while the leader never had ours. Then it fetches (Fetch with `replica_id` = this
//! broker, from our log end) and appends the leader's batches as they are. Errors back off:
//! a lost connection or a leadership/epoch mismatch retries after `RETRY_BACKOFF`, with the
//! address and epochs of the latest snapshot. Everything is async; the shard never blocks.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};
use shardlog_protocol::client;

use crate::errors;
use crate::partition::{FollowerAppendError, FollowerSync, Partition, Role};
use crate::rt::TcpStream;
use crate::shard::{PartitionKey, Shard};

/// Wait after an error before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Fetch v12: the last version with `replica_id` in the body and topic names (not ids).
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch v4 (flexible; `replica_id` since v3).
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Bound on connecting to the leader.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a response, beyond the fetch's own wait.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response accepted from a leader (the Fetch response's `max_bytes` is below it).
const RESPONSE_BYTES_MAX: usize = 128 * 1024 * 1024;
/// The Fetch request's response-wide byte limit (Kafka's `replica.fetch.response.max.bytes`).
const FETCH_RESPONSE_BYTES: i32 = 10 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
enum FetcherError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("shutting down")]
    Shutdown,
}

/// One connection to the leader, used for one request at a time.
struct LeaderConnection {
    stream: TcpStream,
    correlation_id: i32,
    buf: BytesMut,
}

impl LeaderConnection {
    async fn call<R: Request>(
        &mut self,
        shard: &Shard,
        req: &R,
        version: i16,
        wait: Duration,
    ) -> Result<R::Response, FetcherError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let frame = client::encode_request(
            req,
            version,
            self.correlation_id,
            Some(StrBytes::from_static_str("shardlog-replica-fetcher")),
        )
        .map_err(FetcherError::Protocol)?;
        let io = async {
            self.stream.write_all(&frame).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = i32::from_be_bytes(len);
            if len < 0 || len as usize > RESPONSE_BYTES_MAX {
                return Err(FetcherError::Protocol(format!(
                    "response of {len} bytes refused"
                )));
            }
            self.buf.clear();
            self.buf.resize(len as usize, 0);
            self.stream.read_exact(&mut self.buf[..]).await?;
            Ok(self.buf.split().freeze())
        };
        let body: Bytes = futures_lite::future::or(io, async {
            futures_lite::future::or(
                async {
                    crate::rt::sleep(wait + RESPONSE_TIMEOUT).await;
                    Err(FetcherError::Io(std::io::ErrorKind::TimedOut.into()))
                },
                async {
                    let _ = shard.shutdown.recv_async().await;
                    Err(FetcherError::Shutdown)
                },
            )
            .await
        })
        .await?;
        client::decode_response::<R>(body, version).map_err(FetcherError::Protocol)
    }
}

/// Partitions of this shard that currently follow `leader`.
fn following(shard: &Shard, leader: i32) -> Vec<Rc<Partition>> {
    let mut parts: Vec<_> = shard
        .partitions()
        .into_iter()
        .filter(|p| p.role() == Role::Follower { leader })
        .collect();
    parts.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    parts
}

fn back_off(p: &Partition) {
    let mut s = p.follower_sync();
    s.retry_at = Some(Instant::now() + RETRY_BACKOFF);
    p.set_follower_sync(s);
}

fn still_follows(p: &Partition, leader: i32, epoch: i32) -> bool {
    p.role() == Role::Follower { leader } && p.leader_epoch() == epoch
}

/// The fetcher of `shard` for partitions led by broker `leader`. Started by the shard when a
/// partition starts following `leader` and none runs; returns when no partition follows it.
pub async fn run(shard: Rc<Shard>, leader: i32) {
    let mut conn: Option<LeaderConnection> = None;
    log::info!(
        "shard {}: replica fetcher for broker {leader} started",
        shard.id.0
    );
    loop {
        if shard.shutdown.is_disconnected() {
            break;
        }
        let parts = following(&shard, leader);
        if parts.is_empty() {
            break;
        }
        let now = Instant::now();
        let ready: Vec<Rc<Partition>> = parts
            .into_iter()
            .filter(|p| !matches!(p.follower_sync().retry_at, Some(t) if t > now))
            .collect();
        if ready.is_empty() {
            crate::rt::sleep(RETRY_BACKOFF).await;
            continue;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(&shard, leader).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    log::debug!("replica fetcher: cannot reach broker {leader}: {e}");
                    crate::rt::sleep(RETRY_BACKOFF).await;
                    continue;
                }
            },
        };
        let (truncating, fetching): (Vec<_>, Vec<_>) = ready
            .into_iter()
            .partition(|p| p.follower_sync().needs_truncation);
        let result = if !truncating.is_empty() {
            truncate(&shard, c, leader, truncating).await
        } else {
            fetch(&shard, c, leader, fetching).await
        };
        match result {
            Ok(()) => {}
            Err(FetcherError::Shutdown) => break,
            Err(e) => {
                log::info!("replica fetcher for broker {leader}: {e}; reconnecting");
                conn = None;
                crate::rt::sleep(RETRY_BACKOFF).await;
            }
        }
    }
    // No await between the last check and this: a partition that starts following `leader`
    // from now on finds no fetcher registered and starts a new one.
    shard.fetcher_stopped(leader);
    log::info!(
        "shard {}: replica fetcher for broker {leader} stopped",
        shard.id.0
    );
}

async fn connect(shard: &Shard, leader: i32) -> Result<LeaderConnection, FetcherError> {
    let broker = shard
        .metadata()
        .brokers
        .get(&leader)
        .cloned()
        .ok_or_else(|| FetcherError::Protocol(format!("broker {leader} is not alive")))?;
    let stream = crate::rt::connect(&broker.host, broker.port, CONNECT_TIMEOUT).await?;
    Ok(LeaderConnection {
        stream,
        correlation_id: 0,
        buf: BytesMut::new(),
    })
}

fn topic_name(name: &Arc<str>) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// One round of truncation by leader epoch for `parts`.
async fn truncate(
    shard: &Rc<Shard>,
    conn: &mut LeaderConnection,
    leader: i32,
    parts: Vec<Rc<Partition>>,
) -> Result<(), FetcherError> {
    // Value: (partition, epoch followed, our latest epoch asked about).
    let mut asked: HashMap<PartitionKey, (Rc<Partition>, i32, i32)> = HashMap::new();
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for p in parts {
        let Some(latest) = p.latest_epoch() else {
            // Nothing stamped with an epoch here: nothing to compare, fetch from the log end
            // (an offset the leader does not have comes back as OFFSET_OUT_OF_RANGE).
            p.set_follower_sync(FollowerSync::default());
            continue;
        };
        let part = OffsetForLeaderPartition::default()
            .with_partition(p.index)
            .with_current_leader_epoch(p.leader_epoch())
            .with_leader_epoch(latest);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == &*p.topic) {
            Some(t) => t.partitions.push(part),
            None => topics.push(
                OffsetForLeaderTopic::default()
                    .with_topic(topic_name(&p.topic))
                    .with_partitions(vec![part]),
            ),
        }
        asked.insert(
            (p.topic.clone(), p.index),
            (p.clone(), p.leader_epoch(), latest),
        );
    }
    if topics.is_empty() {
        return Ok(());
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(shard.metadata().local_broker))
        .with_topics(topics);
    let resp = conn
        .call(shard, &req, OFFSET_FOR_LEADER_EPOCH_VERSION, Duration::ZERO)
        .await?;
    for t in resp.topics {
        for r in t.partitions {
            let key: PartitionKey = (t.topic.0.as_str().into(), r.partition);
            let Some((p, epoch, latest)) = asked.remove(&key) else {
                continue;
            };
            if !still_follows(&p, leader, epoch) {
                continue;
            }
            if r.error_code != errors::NONE {
                log::debug!(
                    "{}-{}: OffsetForLeaderEpoch at broker {leader}: error {}",
                    p.topic,
                    p.index,
                    r.error_code
                );
                back_off(&p);
                continue;
            }
            match p
                .truncate_by_epoch(latest, r.leader_epoch, r.end_offset)
                .await
            {
                Ok(done) => {
                    if done {
                        log::info!(
                            "{}-{}: truncated by leader epoch; fetching from {} (epoch {epoch})",
                            p.topic,
                            p.index,
                            p.log_end_offset()
                        );
                        p.set_follower_sync(FollowerSync::default());
                    }
                }
                Err(e) => {
                    log::error!("{}-{}: truncation failed: {e}", p.topic, p.index);
                    back_off(&p);
                }
            }
        }
    }
    // Partitions the leader did not answer for: ask again later.
    for (_, (p, _, _)) in asked {
        back_off(&p);
    }
    Ok(())
}

/// One Fetch round for `parts` (already truncated in their current epoch).
async fn fetch(
    shard: &Rc<Shard>,
    conn: &mut LeaderConnection,
    leader: i32,
    parts: Vec<Rc<Partition>>,
) -> Result<(), FetcherError> {
    let config = shard.config.clone();
    // Value: (partition, epoch followed, fetch offset).
    let mut sent: HashMap<PartitionKey, (Rc<Partition>, i32, i64)> = HashMap::new();
    let mut topics: Vec<FetchTopic> = Vec::new();
    for p in parts {
        let epoch = p.leader_epoch();
        let offset = p.log_end_offset();
        let part = FetchPartition::default()
            .with_partition(p.index)
            .with_current_leader_epoch(epoch)
            .with_fetch_offset(offset)
            .with_log_start_offset(p.log_start_offset())
            .with_partition_max_bytes(config.replica_fetch_max_bytes);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == &*p.topic) {
            Some(t) => t.partitions.push(part),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(topic_name(&p.topic))
                    .with_partitions(vec![part]),
            ),
        }
        sent.insert((p.topic.clone(), p.index), (p.clone(), epoch, offset));
    }
    let wait_ms = config.replica_fetch_wait_max_ms.max(0);
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(shard.metadata().local_broker))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_RESPONSE_BYTES.max(config.replica_fetch_max_bytes))
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let resp = conn
        .call(
            shard,
            &req,
            FETCH_VERSION,
            Duration::from_millis(wait_ms as u64),
        )
        .await?;
    if resp.error_code != errors::NONE {
        log::debug!("fetch from broker {leader}: error {}", resp.error_code);
        for (p, _, _) in sent.values() {
            back_off(p);
        }
        return Ok(());
    }
    for t in resp.responses {
        for d in t.partitions {
            let key: PartitionKey = (t.topic.0.as_str().into(), d.partition_index);
            let Some((p, epoch, offset)) = sent.remove(&key) else {
                continue;
            };
            // The answer is for the epoch and offset asked: skip it if either moved meanwhile.
            if !still_follows(&p, leader, epoch) || p.log_end_offset() != offset {
                continue;
            }
            match d.error_code {
                errors::NONE => {
                    let records = d.records.unwrap_or_default();
                    match p.append_as_follower(&records, d.high_watermark).await {
                        Ok(()) => p.follow_log_start(d.log_start_offset).await,
                        Err(FollowerAppendError::NotFollower) => {}
                        Err(FollowerAppendError::OffsetMismatch { expected, got }) => {
                            log::warn!(
                                "{}-{}: leader sent offset {got}, log ends at {expected}; \
                                 truncating again",
                                p.topic,
                                p.index
                            );
                            p.set_follower_sync(FollowerSync {
                                needs_truncation: true,
                                retry_at: None,
                            });
                        }
                        Err(e) => {
                            log::error!("{}-{}: follower append: {e}", p.topic, p.index);
                            back_off(&p);
                        }
                    }
                }
                errors::OFFSET_OUT_OF_RANGE => {
                    let result = if offset < d.log_start_offset {
                        // The leader's log starts after ours ends: nothing of ours is needed.
                        p.restart_at(d.log_start_offset).await
                    } else {
                        // Our log ends past the leader's: keep only what it has committed.
                        p.truncate_to(d.high_watermark.max(0)).await.map(|_| ())
                    };
                    if let Err(e) = result {
                        log::error!("{}-{}: out-of-range reset: {e}", p.topic, p.index);
                        back_off(&p);
                    }
                }
                code => {
                    log::debug!(
                        "{}-{}: fetch from broker {leader}: error {code}",
                        p.topic,
                        p.index
                    );
                    back_off(&p);
                }
            }
        }
    }
    for (p, _, _) in sent.values() {
        back_off(p);
    }
    Ok(())
}
