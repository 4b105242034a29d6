//! Hard limits that hold whatever the configuration says: every bound on sizes and queues of
//! the broker that is not a setting (ARCHITECTURE.md, "Limits").

/// Largest request frame accepted (`socket.request.max.bytes` may lower it).
pub const REQUEST_BYTES_MAX: usize = 100 * 1024 * 1024;
/// Largest frame of any request but Produce (whose records are not decoded into objects).
pub const NON_PRODUCE_REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
/// Topic name length (Kafka's limit).
pub const TOPIC_NAME_LEN_MAX: usize = 249;
/// Longest a fetch may wait.
pub const FETCH_WAIT_MS_MAX: i32 = 60_000;

// Memory bounds. Every queue in the broker is bounded by one of these or by a setting
// (`max.connections`, `queued.max.request.bytes`); see ARCHITECTURE.md, "Limits".

/// A frame's body is read in steps of at most this many bytes: the buffer grows as bytes
/// arrive, never to the announced size before they do.
pub const FRAME_READ_STEP_BYTES: usize = 256 * 1024;
/// Frames up to this size reserve from the small-frame part of a shard's request budget,
/// larger ones from the large-frame part, so that large frames waiting for memory (or a
/// slow client holding a large reservation) never hold up ordinary requests. 1 MiB is the
/// default `max.request.size` of Kafka producers.
pub const SMALL_FRAME_BYTES: usize = 1024 * 1024;
/// The share of a shard's request budget, in percent, that only frames up to
/// `SMALL_FRAME_BYTES` may use.
pub const SMALL_FRAME_BUDGET_PERCENT: usize = 25;
/// Requests of more bytes than this are read and handled in the shard's bulk task queue,
/// which gets a tenth of the CPU while small requests wait (`rt::spawn_bulk`).
pub const BULK_REQUEST_BYTES: usize = 64 * 1024;
/// Tasks waiting in one shard's inbox (cross-shard calls, snapshots, scrapes). A sender
/// finding it full waits; nothing is dropped.
pub const SHARD_INBOX_CAPACITY: usize = 1024;
/// Produce requests queued for one partition's next group commit; beyond it a produce is
/// refused before appending with REQUEST_TIMED_OUT (retriable).
pub const PARTITION_APPEND_QUEUE_MAX: usize = 1024;
/// acks=all produces waiting for one partition's high watermark; beyond it a produce is
/// refused before appending with REQUEST_TIMED_OUT (retriable).
pub const PARTITION_ACK_WAITERS_MAX: usize = 4096;
/// Fetches long-polling one partition; beyond it a fetch is answered at once with what
/// there is.
pub const PARTITION_FETCH_WAITERS_MAX: usize = 4096;
/// Response buffers a shard keeps for reuse (each at most `RESPONSE_BUFFER_KEPT_BYTES`).
pub const RESPONSE_BUFFERS_KEPT: usize = 64;
pub const RESPONSE_BUFFER_KEPT_BYTES: usize = 64 * 1024;

// Bounds of the metrics endpoint and of the broker's own log.

/// Bytes of an HTTP request head the metrics endpoint reads before answering 431.
pub const METRICS_REQUEST_HEAD_MAX: usize = 8 * 1024;
/// Connections the metrics endpoint serves at once; more wait in the listen backlog.
pub const METRICS_CONNECTIONS_MAX: usize = 16;
/// Consumer-group offset series one shard reports at most (bounds a scrape's size).
pub const GROUP_SERIES_MAX: usize = 100_000;
/// Log call sites tracked at once for flood summaries. Call sites are bounded by the code, so
/// this guards against a target built at run time, not a limit normal operation meets.
pub const LOG_SITES_MAX: usize = 10_000;

/// Partitions a shard opens at the same time when it applies metadata (at start: all of
/// them). Each open is a dozen small ring operations; overlapping them took 10,000 partitions
/// (2 shards, page cache warm) from 3.6 s to 1.15 s at 64 and 0.93 s at 256, 6.0 s to 3.4 s
/// and 3.0 s cold. 64, because each open in flight may hold its active segment's index
/// files (up to 5 MiB at 1 GiB segments): 320 MiB at most.
pub const PARTITION_OPENS_IN_FLIGHT: usize = 64;
