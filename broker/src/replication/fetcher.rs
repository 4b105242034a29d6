//! The follower side of replication: one task per (shard, leader broker), on the shard that owns
//! the partitions, with one TCP connection to the leader.
//!
//! Each round the task takes the partitions of its shard that follow its leader (per the latest
//! snapshot; it stops when there are none). A partition that became follower in a new epoch is
//! first truncated by leader epoch (KIP-279): the task asks the leader (OffsetForLeaderEpoch)
//! where our latest epoch ends there and cuts our log at that point, repeating with older
//! epochs while the leader never had ours. In the same round it fetches the partitions that
//! need no truncation (Fetch with `replica_id` = this broker, from our log end), so a partition
//! whose truncation is held up never starves the others, and appends the leader's batches as
//! they are.
//!
//! Quiet when idle: the fetch asks the leader to wait up to `replica.fetch.wait.max.ms` for
//! `replica.fetch.min.bytes` (long polling, as Kafka's followers do), so a follower with
//! nothing to fetch sends about two requests a second per leader and shard. Errors back off:
//! a lost connection, a leadership/epoch mismatch or an answer the follower cannot use makes
//! that partition (or the connection) wait `replica.fetch.backoff.ms`, then retry with the
//! address and epochs of the latest snapshot. No path re-sends at once without progress.
//! Everything is async; the shard never blocks.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::base::errors;
use crate::base::ids::{BrokerId, LeaderEpoch, Offset};
use crate::partition::replication::LeaderAnswer;
use crate::partition::{FollowerAppendError, FollowerSync, Partition, Role};
use crate::shard::{PartitionKey, Shard};

/// Retry after UNKNOWN_LEADER_EPOCH (the leader's metadata is behind ours): see
/// `back_off_after_error`.
const UNKNOWN_EPOCH_BACKOFF: Duration = Duration::from_millis(100);
/// The shortest wait after an error, whatever `replica.fetch.backoff.ms` says.
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// The client id of the follower's requests.
const CLIENT_ID: &str = "shardlog-replica-fetcher";
/// Fetch v12: the last version with `replica_id` in the body and topic names (not ids).
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch v4 (flexible; `replica_id` since v3).
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Bound on connecting to the leader.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The Fetch request's response-wide byte limit (Kafka's `replica.fetch.response.max.bytes`).
const FETCH_RESPONSE_BYTES: i32 = 10 * 1024 * 1024;

use super::broker_call::{BrokerConnection as LeaderConnection, CallError as FetcherError};

/// Partitions of this shard that currently follow `leader`.
fn following(shard: &Shard, leader: BrokerId) -> Vec<Rc<Partition>> {
    let mut parts: Vec<_> = shard
        .partitions()
        .into_iter()
        .filter(|p| p.role() == Role::Follower { leader })
        .collect();
    parts.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    parts
}

/// How long an answer to a request that may wait `wait` at the leader may take:
/// `replica.socket.timeout.ms` beyond that wait. A partition that healed leaves the follower
/// with a connection whose packets were lost; it must notice soon to rejoin the ISR.
fn response_timeout(shard: &Shard, wait: Duration) -> Duration {
    wait + Duration::from_millis(shard.config.replica_socket_timeout_ms)
}

/// `replica.fetch.backoff.ms`: the wait after an error before trying again, at least
/// `MIN_BACKOFF` so that even `0` cannot make a busy loop of a leader that keeps refusing.
fn backoff(shard: &Shard) -> Duration {
    Duration::from_millis(shard.config.replica_fetch_backoff_ms).max(MIN_BACKOFF)
}

/// Holds `p` out of the fetch and truncation rounds for `replica.fetch.backoff.ms`.
fn back_off(shard: &Shard, p: &Partition) {
    back_off_for(p, backoff(shard));
}

fn back_off_for(p: &Partition, wait: Duration) {
    let mut s = p.follower_sync();
    s.retry_at = Some(Instant::now() + wait);
    p.set_follower_sync(s);
}

/// After the leader refused `p` with `code`. UNKNOWN_LEADER_EPOCH means the leader has not
/// applied the snapshot that made it leader yet (we saw it first); that takes milliseconds, so
/// the retry comes sooner than after other errors, or every leader change would cost a
/// follower a whole back-off before the new leader hears from it.
fn back_off_after_error(shard: &Shard, p: &Partition, code: i16) {
    let wait = if code == errors::UNKNOWN_LEADER_EPOCH {
        backoff(shard).min(UNKNOWN_EPOCH_BACKOFF)
    } else {
        backoff(shard)
    };
    back_off_for(p, wait);
}

fn still_follows(p: &Partition, leader: BrokerId, epoch: i32) -> bool {
    p.role() == Role::Follower { leader } && p.leader_epoch() == epoch
}

/// The fetcher of `shard` for partitions led by broker `leader`. Started by the shard when a
/// partition starts following `leader` and none runs; returns when no partition follows it.
pub async fn run(shard: Rc<Shard>, leader: BrokerId) {
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
        let (ready, waiting): (Vec<Rc<Partition>>, Vec<Rc<Partition>>) = parts
            .into_iter()
            .partition(|p| !matches!(p.follower_sync().retry_at, Some(t) if t > now));
        if ready.is_empty() {
            // Everything is backing off: sleep until the first may go again.
            let first = waiting
                .iter()
                .filter_map(|p| p.follower_sync().retry_at)
                .min()
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
            crate::runtime::rt::sleep(first.clamp(MIN_BACKOFF, backoff(&shard))).await;
            continue;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(&shard, leader).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    log::debug!("replica fetcher: cannot reach broker {leader}: {e}");
                    crate::runtime::rt::sleep(backoff(&shard)).await;
                    continue;
                }
            },
        };
        match round(&shard, c, leader, ready).await {
            Ok(()) => {}
            Err(FetcherError::Shutdown) => break,
            Err(e) => {
                log::info!("replica fetcher for broker {leader}: {e}; reconnecting");
                conn = None;
                crate::runtime::rt::sleep(backoff(&shard)).await;
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

/// One round for the partitions in `ready`: truncation by leader epoch for those that need it,
/// then, unless one of them needs another step, one fetch for every partition that (still or
/// by now) needs none.
async fn round(
    shard: &Rc<Shard>,
    conn: &mut LeaderConnection,
    leader: BrokerId,
    ready: Vec<Rc<Partition>>,
) -> Result<(), FetcherError> {
    let truncating: Vec<_> = ready
        .iter()
        .filter(|p| p.follower_sync().needs_truncation)
        .cloned()
        .collect();
    if !truncating.is_empty() {
        truncate(shard, conn, leader, truncating).await?;
    }
    // Truncation may have finished (fetch now), need another step or have backed off; the
    // role may have changed while it waited for the leader.
    let now = Instant::now();
    let (fetching, again): (Vec<_>, Vec<_>) = ready
        .into_iter()
        .filter(|p| {
            p.role() == Role::Follower { leader }
                && !matches!(p.follower_sync().retry_at, Some(t) if t > now)
        })
        .partition(|p| !p.follower_sync().needs_truncation);
    // Another truncation step goes first: a fetch may wait at the leader for
    // `replica.fetch.wait.max.ms`. Each step drops an epoch of ours (or backs off), so this
    // ends after a few round trips and cannot starve the fetch.
    if !again.is_empty() || fetching.is_empty() {
        return Ok(());
    }
    fetch(shard, conn, leader, fetching).await
}

async fn connect(shard: &Shard, leader: BrokerId) -> Result<LeaderConnection, FetcherError> {
    let broker = shard
        .metadata()
        .brokers
        .get(&leader)
        .cloned()
        .ok_or_else(|| FetcherError::Protocol(format!("broker {leader} is not alive")))?;
    LeaderConnection::connect(&broker, CONNECT_TIMEOUT).await
}

fn topic_name(name: &Arc<str>) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// One round of truncation by leader epoch for `parts`.
async fn truncate(
    shard: &Rc<Shard>,
    conn: &mut LeaderConnection,
    leader: BrokerId,
    parts: Vec<Rc<Partition>>,
) -> Result<(), FetcherError> {
    // Value: (partition, epoch followed, our latest epoch asked about).
    let mut asked: HashMap<PartitionKey, (Rc<Partition>, i32, LeaderEpoch)> = HashMap::new();
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
            .with_leader_epoch(latest.0);
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
        .with_replica_id(shard.metadata().local_broker.into())
        .with_topics(topics);
    let resp = conn
        .call(
            shard,
            &req,
            OFFSET_FOR_LEADER_EPOCH_VERSION,
            response_timeout(shard, Duration::ZERO),
            CLIENT_ID,
        )
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
                back_off_after_error(shard, &p, r.error_code);
                continue;
            }
            match p
                .truncate_by_epoch(
                    latest,
                    LeaderAnswer {
                        epoch: LeaderEpoch(r.leader_epoch),
                        end_offset: Offset(r.end_offset),
                    },
                )
                .await
            {
                Ok(true) => {
                    log::info!(
                        "{}-{}: truncated by leader epoch; fetching from {} (epoch {epoch})",
                        p.topic,
                        p.index,
                        p.log_end_offset()
                    );
                    p.set_follower_sync(FollowerSync::default());
                }
                // Another step, about an older epoch of ours, in the next round.
                Ok(false) if p.latest_epoch().is_none_or(|e| e < latest) => {}
                Ok(false) => {
                    // The step left our latest epoch in place, so asking again now would get
                    // the same answer. Steps always drop it; should one not, retry slowly
                    // rather than spin.
                    log::warn!(
                        "{}-{}: truncation by leader epoch made no progress (epoch {latest}; \
                         the leader answered epoch {} ending at {}); retrying later",
                        p.topic,
                        p.index,
                        r.leader_epoch,
                        r.end_offset
                    );
                    back_off(shard, &p);
                }
                Err(e) => {
                    log::error!("{}-{}: truncation failed: {e}", p.topic, p.index);
                    back_off(shard, &p);
                }
            }
        }
    }
    // Partitions the leader did not answer for: ask again later.
    for (_, (p, _, _)) in asked {
        back_off(shard, &p);
    }
    Ok(())
}

/// One Fetch round for `parts` (already truncated in their current epoch).
async fn fetch(
    shard: &Rc<Shard>,
    conn: &mut LeaderConnection,
    leader: BrokerId,
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
        .with_replica_id(shard.metadata().local_broker.into())
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(config.replica_fetch_min_bytes.max(1))
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
            response_timeout(shard, Duration::from_millis(wait_ms as u64)),
            CLIENT_ID,
        )
        .await?;
    if resp.error_code != errors::NONE {
        log::debug!("fetch from broker {leader}: error {}", resp.error_code);
        for (p, _, _) in sent.values() {
            back_off(shard, p);
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
            // Only a new snapshot (which sets up truncation for the new epoch) or a truncation
            // moves them, so the next round has new work rather than the same question.
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
                            // Not at once: if truncation ends where we are, the leader would
                            // send the same thing again.
                            p.set_follower_sync(FollowerSync {
                                needs_truncation: true,
                                retry_at: Some(Instant::now() + backoff(shard)),
                            });
                        }
                        Err(e) => {
                            log::error!("{}-{}: follower append: {e}", p.topic, p.index);
                            back_off(shard, &p);
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
                    match result {
                        Err(e) => {
                            log::error!("{}-{}: out-of-range reset: {e}", p.topic, p.index);
                            back_off(shard, &p);
                        }
                        // Nothing moved: the same fetch would fail the same way at once.
                        Ok(()) if p.log_end_offset() == offset => back_off(shard, &p),
                        Ok(()) => {}
                    }
                }
                code => {
                    log::debug!(
                        "{}-{}: fetch from broker {leader}: error {code}",
                        p.topic,
                        p.index
                    );
                    back_off_after_error(shard, &p, code);
                }
            }
        }
    }
    for (p, _, _) in sent.values() {
        back_off(shard, p);
    }
    Ok(())
}
