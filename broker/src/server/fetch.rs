//! Fetch: read file ranges from the owning shards, long-poll until `min_bytes` or `max_wait_ms`,
//! and answer with record bytes sent from the page cache by `sendfile`.
//!
//! Waiting: every read carries a waiter channel that the partition registers together with the
//! read, so an append or a high watermark move after the read wakes this fetch. Each wake
//! re-reads.
//!
//! Isolation level READ_COMMITTED (1): reads stop at the last stable offset (a fetch there
//! waits, and is woken when a marker moves it), the answer's `last_stable_offset` is the
//! partition's LSO and `aborted_transactions` lists the aborted transactions overlapping the
//! returned range; the records still go out by `sendfile`. READ_UNCOMMITTED is bounded by the
//! high watermark with a null list.
//!
//! Followers (`replica_id >= 0`) fetch with the same API: the leader serves them up to its log
//! end, and their fetch offsets drive the high watermark (see `Partition::read`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{FetchRequest, TopicName};
use shardlog_protocol::fetch_encode::{
    FetchPartitionDesc, FetchResponseDesc, FetchTopicDesc, RecordsPart,
};
use shardlog_storage::FileSlice;

use super::Response;
use crate::base::errors;
use crate::base::ids::BrokerId;
use crate::base::limits;
use crate::partition::{FetchFrom, FetchWake, PartitionRead};
use crate::shard::scatter::scatter_each;
use crate::shard::Shard;

/// A requested partition and, if it exists, the index of its read in the read list.
type PartitionSlot = (i32, Option<usize>);

#[derive(Clone)]
struct ReadItem {
    topic: Arc<str>,
    index: i32,
    offset: i64,
    max_bytes: usize,
    from: FetchFrom,
    waiter: Option<flume::Sender<FetchWake>>,
}

fn not_found() -> PartitionRead {
    PartitionRead {
        error_code: errors::UNKNOWN_TOPIC_OR_PARTITION,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        slice: None,
        aborted_transactions: None,
    }
}

impl Clone for PartitionRead {
    fn clone(&self) -> Self {
        PartitionRead {
            error_code: self.error_code,
            high_watermark: self.high_watermark,
            last_stable_offset: self.last_stable_offset,
            log_start_offset: self.log_start_offset,
            slice: self.slice.clone(),
            aborted_transactions: self.aborted_transactions.clone(),
        }
    }
}

pub async fn handle(shard: &Rc<Shard>, version: i16, req: FetchRequest) -> Response {
    // Fetch sessions (KIP-227) are not kept: session id 0 in the answer tells the client to keep
    // sending full requests. An incremental request for a session we never gave out is refused.
    if req.session_id != 0 {
        let desc = FetchResponseDesc {
            throttle_time_ms: 0,
            error_code: errors::FETCH_SESSION_ID_NOT_FOUND,
            session_id: 0,
            topics: Vec::new(),
        };
        return Response::Fetch(desc, Vec::new());
    }
    let snapshot = shard.metadata();
    // The replica id moved into `replica_state` in v15; this broker serves up to v12.
    let replica_id = if version < 15 {
        req.replica_id.0
    } else {
        req.replica_state.replica_id.0
    };
    let started = Instant::now();
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, limits::FETCH_WAIT_MS_MAX) as u64);
    let deadline = started + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };

    // Request shape, in order: (topic name, [(partition, Some(item index) | None = unknown)]).
    let mut shape: Vec<(TopicName, Vec<PartitionSlot>)> = Vec::new();
    let mut items: Vec<ReadItem> = Vec::new();
    for t in &req.topics {
        let meta = snapshot.topic(t.topic.0.as_str()).cloned();
        let mut parts = Vec::new();
        for p in &t.partitions {
            match &meta {
                Some(m) if p.partition >= 0 && p.partition < m.partitions => {
                    parts.push((p.partition, Some(items.len())));
                    items.push(ReadItem {
                        topic: m.name.clone(),
                        index: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes.max(0) as usize,
                        from: FetchFrom {
                            replica_id: BrokerId(replica_id.max(-1)),
                            current_leader_epoch: p.current_leader_epoch,
                            log_start_offset: if version >= 5 { p.log_start_offset } else { -1 },
                            // v4+; older requests decode as 0 (read uncommitted).
                            read_committed: req.isolation_level == 1 && replica_id < 0,
                        },
                        waiter: None,
                    });
                }
                _ => parts.push((p.partition, None)),
            }
        }
        shape.push((t.topic.clone(), parts));
    }

    let may_wait = !wait.is_zero() && min_bytes > 0;
    let reads = loop {
        // Each partition sends at most one wake per round (its waiter list drops the sender
        // when it wakes it, or it refuses to keep it), so this many slots always suffice.
        let (tx, rx) = flume::bounded::<FetchWake>(items.len().max(1));
        let batch: Vec<_> = items
            .iter()
            .map(|it| {
                let mut it = it.clone();
                if may_wait {
                    it.waiter = Some(tx.clone());
                }
                (shard.owner(&it.topic, it.index), it)
            })
            .collect();
        drop(tx);
        let reads = scatter_each(
            shard,
            batch,
            not_found(),
            |s: Rc<Shard>, it: ReadItem| async move {
                match s.partition(&it.topic, it.index) {
                    Some(p) => {
                        p.read(it.offset, it.max_bytes, it.waiter.as_ref(), it.from)
                            .await
                    }
                    // Not replicated here (cluster mode): another broker leads it.
                    None if s.metadata().topic(&it.topic).is_some() => PartitionRead {
                        error_code: errors::NOT_LEADER_OR_FOLLOWER,
                        ..not_found()
                    },
                    None => not_found(),
                }
            },
        )
        .await;
        let available: usize = reads
            .iter()
            .filter_map(|r| r.slice.as_ref())
            .map(|s| s.len as usize)
            .sum();
        let any_error = reads.iter().any(|r| r.error_code != errors::NONE);
        let now = Instant::now();
        if !may_wait || available >= min_bytes || any_error || now >= deadline || items.is_empty() {
            break reads;
        }
        let woke = futures_lite::future::or(
            async {
                match rx.recv_async().await {
                    Ok(FetchWake::Data) => true,
                    // A partition has as many fetches waiting as it keeps: answer now.
                    Ok(FetchWake::Full) => {
                        shard.metrics.count(&shard.metrics.fetch_waiters_full, 1);
                        false
                    }
                    Err(_) => false,
                }
            },
            futures_lite::future::or(
                async {
                    crate::runtime::rt::sleep(deadline - now).await;
                    false
                },
                async {
                    let _ = shard.shutdown.recv_async().await;
                    false
                },
            ),
        )
        .await;
        if !woke && Instant::now() < deadline {
            // Shutting down, or a partition keeps no more waiters: answer with what there is.
            break reads;
        }
    };

    // Apply the response-wide byte budget in request order; the first partition with data is
    // always served whole (KIP-74), later ones are left empty once the budget is spent.
    let mut used = 0usize;
    let mut files: Vec<FileSlice> = Vec::new();
    let mut reads = reads.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, parts)| FetchTopicDesc {
            name: name.0,
            partitions: parts
                .into_iter()
                .map(|(index, item)| {
                    let r = match item {
                        Some(_) => reads.next().expect("one read per item"),
                        None => not_found(),
                    };
                    let records = match r.slice {
                        Some(slice) if used == 0 || used + slice.len as usize <= max_bytes => {
                            used += slice.len as usize;
                            let len = slice.len as u32;
                            files.push(slice);
                            RecordsPart::File {
                                len,
                                token: files.len() - 1,
                            }
                        }
                        _ => RecordsPart::Bytes(bytes::Bytes::new()),
                    };
                    let sent = matches!(records, RecordsPart::File { .. });
                    let mut d = FetchPartitionDesc::new(index, r.high_watermark, records);
                    d.error_code = r.error_code;
                    d.last_stable_offset = r.last_stable_offset;
                    d.log_start_offset = r.log_start_offset;
                    // Read committed: the partition's list for the range it returned (dropped
                    // by the byte budget: none); read uncommitted: null, as in Kafka.
                    d.aborted_transactions = match (sent, req.isolation_level == 1) {
                        (_, false) => None,
                        (true, true) => Some(r.aborted_transactions.unwrap_or_default()),
                        (false, true) => Some(Vec::new()),
                    };
                    d
                })
                .collect(),
        })
        .collect();
    let _ = version;
    Response::Fetch(
        FetchResponseDesc {
            throttle_time_ms: 0,
            error_code: errors::NONE,
            session_id: 0,
            topics,
        },
        files,
    )
}
