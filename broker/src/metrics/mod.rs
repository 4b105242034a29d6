//! What the broker counts and how it is read: per-shard recording without locks or atomics on
//! the request path, and a Prometheus text exposition built from per-shard reports.
//!
//! Lives on: [`ShardMetrics`] is owned by one shard (plain `Cell`s; `!Send`); a scrape sends
//! one closure to every shard (`report`), which answers with a [`ShardReport`] (plain data,
//! `Send`); the HTTP thread (`http`) merges the reports and renders them (`render`). Rare,
//! process-wide events (segment rolls, ZooKeeper session expiries) are relaxed atomics in the
//! module that sees them. Nothing here blocks a shard: a report is a walk over the shard's own
//! partitions and group coordinators, at scrape time only.

pub mod render;

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cluster::metadata::CONSUMER_OFFSETS_TOPIC;

pub use render::render;

/// Upper bounds (seconds) of the request latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Upper bounds (seconds) of the task-queue latency histogram buckets.
pub const QUEUE_BUCKETS: [f64; 12] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25,
];

/// Kafka API keys are below this (Kafka 4.1 tops out in the 80s).
const API_KEYS: usize = 96;
/// Request versions recorded per API; higher ones share the last slot.
const API_VERSIONS: usize = 20;

/// How often each shard measures its task-queue latency.
pub const QUEUE_PROBE_EVERY: Duration = Duration::from_millis(500);

/// A fixed-bucket histogram of durations, shard-local.
pub struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    /// Per bucket (not cumulative); the last slot counts values above every bound.
    counts: [Cell<u64>; N],
    over: Cell<u64>,
    sum_ns: Cell<u64>,
}

impl<const N: usize> Histogram<N> {
    pub fn new(bounds: &'static [f64; N]) -> Self {
        Histogram {
            bounds,
            counts: std::array::from_fn(|_| Cell::new(0)),
            over: Cell::new(0),
            sum_ns: Cell::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        match self.bounds.iter().position(|b| secs <= *b) {
            Some(i) => self.counts[i].set(self.counts[i].get() + 1),
            None => self.over.set(self.over.get() + 1),
        }
        self.sum_ns
            .set(self.sum_ns.get().saturating_add(d.as_nanos() as u64));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(N + 1);
        buckets.extend(self.counts.iter().map(Cell::get));
        buckets.push(self.over.get());
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            counts: buckets,
            sum_seconds: self.sum_ns.get() as f64 / 1e9,
        }
    }
}

/// A histogram's state, plain data: `counts[i]` is the number of values in bucket `i` (not
/// cumulative), with one extra slot for values above the last bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other` (same bounds) into `self`.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_seconds += other.sum_seconds;
    }
}

/// What one shard records on its request path. Owned by the shard; every method is a few
/// plain additions, and nothing when recording is off (`metrics.listen` empty).
pub struct ShardMetrics {
    enabled: bool,
    /// Requests by `[api_key][version]`.
    pub(crate) requests: Vec<[Cell<u64>; API_VERSIONS]>,
    /// Request latency by API key (decode to response written).
    pub(crate) latency: Vec<Histogram<{ LATENCY_BUCKETS.len() }>>,
    pub connections: Cell<u64>,
    pub connections_accepted: Cell<u64>,
    /// Connections closed at accept, over `max.connections` / `max.connections.per.ip`.
    pub connections_refused_max: Cell<u64>,
    pub connections_refused_per_ip: Cell<u64>,
    /// Bytes of request frames this shard's connections hold (reserved from its budget).
    pub request_bytes_held: Cell<u64>,
    /// Frames that had to wait for the shard's request budget before their body was read.
    pub request_budget_waits: Cell<u64>,
    /// Fetches answered at once because a partition had `PARTITION_FETCH_WAITERS_MAX` waiting.
    pub fetch_waiters_full: Cell<u64>,
    /// Produces refused because a partition's append queue or acks=all waiters were full.
    pub produce_queue_full: Cell<u64>,
    pub cross_shard_messages: Cell<u64>,
    pub isr_shrinks: Cell<u64>,
    pub isr_expands: Cell<u64>,
    pub retention_deleted_segments: Cell<u64>,
    /// The log cleaner: cleanings done, bytes it read and wrote, records it removed, failures.
    pub cleaner_runs: Cell<u64>,
    pub cleaner_bytes_read: Cell<u64>,
    pub cleaner_bytes_written: Cell<u64>,
    pub cleaner_records_removed: Cell<u64>,
    pub cleaner_errors: Cell<u64>,
    /// Partitions this shard applied from metadata snapshots (each one it owns and looked at).
    pub metadata_partitions_applied: Cell<u64>,
    /// Snapshots applied by walking every partition, and by applying only a delta.
    pub metadata_full_applies: Cell<u64>,
    pub metadata_delta_applies: Cell<u64>,
    pub(crate) queue_latency: Histogram<{ QUEUE_BUCKETS.len() }>,
}

impl ShardMetrics {
    pub fn new(enabled: bool) -> ShardMetrics {
        ShardMetrics {
            enabled,
            requests: (0..API_KEYS)
                .map(|_| std::array::from_fn(|_| Cell::new(0)))
                .collect(),
            latency: (0..API_KEYS)
                .map(|_| Histogram::new(&LATENCY_BUCKETS))
                .collect(),
            connections: Cell::new(0),
            connections_accepted: Cell::new(0),
            connections_refused_max: Cell::new(0),
            connections_refused_per_ip: Cell::new(0),
            request_bytes_held: Cell::new(0),
            request_budget_waits: Cell::new(0),
            fetch_waiters_full: Cell::new(0),
            produce_queue_full: Cell::new(0),
            cross_shard_messages: Cell::new(0),
            isr_shrinks: Cell::new(0),
            isr_expands: Cell::new(0),
            retention_deleted_segments: Cell::new(0),
            cleaner_runs: Cell::new(0),
            cleaner_bytes_read: Cell::new(0),
            cleaner_bytes_written: Cell::new(0),
            cleaner_records_removed: Cell::new(0),
            cleaner_errors: Cell::new(0),
            metadata_partitions_applied: Cell::new(0),
            metadata_full_applies: Cell::new(0),
            metadata_delta_applies: Cell::new(0),
            queue_latency: Histogram::new(&QUEUE_BUCKETS),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// One request of `api_key` at `version`, handled in `elapsed`.
    pub fn record_request(&self, api_key: i16, version: i16, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let (Ok(k), Ok(v)) = (usize::try_from(api_key), usize::try_from(version)) else {
            return;
        };
        if k >= API_KEYS {
            return;
        }
        let slot = &self.requests[k][v.min(API_VERSIONS - 1)];
        slot.set(slot.get() + 1);
        self.latency[k].observe(elapsed);
    }

    pub fn add(&self, c: &Cell<u64>, n: u64) {
        if self.enabled {
            c.set(c.get() + n);
        }
    }

    /// Gauges go up and down whether or not the rest is recorded, so they never drift.
    pub fn connection_opened(&self) {
        self.connections.set(self.connections.get() + 1);
        self.add(&self.connections_accepted, 1);
    }

    /// Counted whether or not metrics are enabled: limits are enforced either way, and these
    /// show up in the log summaries too.
    pub fn count(&self, c: &Cell<u64>, n: u64) {
        c.set(c.get().wrapping_add(n));
    }

    pub fn connection_closed(&self) {
        self.connections
            .set(self.connections.get().saturating_sub(1));
    }
}

/// Counts on one partition, kept by its shard (plain cells: one writer).
#[derive(Default)]
pub struct PartitionCounters {
    pub bytes_in: Cell<u64>,
    pub records_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub records_out: Cell<u64>,
}

impl PartitionCounters {
    pub fn add(c: &Cell<u64>, n: u64) {
        c.set(c.get().wrapping_add(n));
    }
}

/// One partition replica on this broker, as a scrape sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    pub leader: bool,
    pub replicas: usize,
    pub isr: usize,
    pub min_insync_replicas: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    pub bytes_in: u64,
    pub records_in: u64,
    pub bytes_out: u64,
    pub records_out: u64,
    /// `cleanup.policy` includes `compact`.
    pub compacted: bool,
    /// The log cleaner's progress: offsets below it are cleaned (the log start if never).
    pub cleaner_first_dirty_offset: i64,
    /// Bytes the cleaner may clean now (0 when the topic is not compacted).
    pub cleaner_dirty_bytes: u64,
}

/// A committed offset of a consumer group, from the coordinator that holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
}

/// Everything one shard contributes to a scrape.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    pub shard: usize,
    /// `(api_key, version, count)` for every non-zero slot.
    pub requests: Vec<(i16, i16, u64)>,
    /// `(api_key, histogram)` for every API seen.
    pub latency: Vec<(i16, HistogramSnapshot)>,
    pub connections: u64,
    pub connections_accepted: u64,
    pub connections_refused_max: u64,
    pub connections_refused_per_ip: u64,
    pub request_bytes_held: u64,
    pub request_budget_waits: u64,
    pub fetch_waiters_full: u64,
    pub produce_queue_full: u64,
    pub cross_shard_messages: u64,
    pub lost_wakeup_rechecks: u64,
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    pub retention_deleted_segments: u64,
    pub cleaner_runs: u64,
    pub cleaner_bytes_read: u64,
    pub cleaner_bytes_written: u64,
    pub cleaner_records_removed: u64,
    pub cleaner_errors: u64,
    pub metadata_partitions_applied: u64,
    pub metadata_full_applies: u64,
    pub metadata_delta_applies: u64,
    pub queue_latency: HistogramSnapshot,
    pub partitions: Vec<PartitionReport>,
    pub group_offsets: Vec<GroupOffset>,
    /// Metadata snapshot this shard has applied.
    pub metadata_version: u64,
    /// From the shard's snapshot: partitions without a leader (counted by the controller).
    pub offline_partitions: u64,
    pub is_controller: bool,
    pub registered: bool,
    pub cluster_mode: bool,
    pub serving: bool,
}

/// Process-wide state the health endpoints read.
pub struct Status {
    /// Every shard listens and serves.
    pub serving: AtomicBool,
    /// Metadata versions the control thread published (cluster mode), newest last.
    published: Mutex<VecDeque<(u64, Instant)>>,
}

pub static STATUS: Status = Status {
    serving: AtomicBool::new(false),
    published: Mutex::new(VecDeque::new()),
};

/// How long a shard may take to apply a published metadata version before readiness
/// reports it behind. Without it every publish (a broker joining, a leader moving) made
/// every broker unready for the few milliseconds its shards took to apply the snapshot.
pub const METADATA_APPLY_GRACE: Duration = Duration::from_secs(2);

/// Versions remembered; publishes come a few per ZooKeeper change, far fewer than this per
/// grace period.
const PUBLISHED_KEPT: usize = 256;

impl Status {
    /// The control thread published `version` (cluster mode).
    pub fn published(&self, version: u64) {
        let mut p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() == PUBLISHED_KEPT {
            p.pop_front();
        }
        p.push_back((version, Instant::now()));
    }

    /// The newest version published at least `grace` ago: every shard must have applied it.
    pub fn settled_version(&self, grace: Duration) -> u64 {
        let p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        p.iter()
            .rev()
            .find(|(_, at)| now.duration_since(*at) >= grace)
            .map_or(0, |(v, _)| *v)
    }
}

/// The control thread's metadata work (cluster mode; relaxed atomics, one writer, a few
/// increments per ZooKeeper round trip).
pub struct MetadataWork {
    /// Znodes read by full reads of the cluster state (first read of a session, after a
    /// reconnect, the slow safety net, controlled shutdown).
    pub znode_reads_full: AtomicU64,
    /// Znodes read because a watch event named them (or a write lost a race on them).
    pub znode_reads_incremental: AtomicU64,
    /// Full reads of the cluster state.
    pub full_reads: AtomicU64,
    /// Snapshots published to the shards.
    pub snapshots_published: AtomicU64,
}

pub static METADATA_WORK: MetadataWork = MetadataWork {
    znode_reads_full: AtomicU64::new(0),
    znode_reads_incremental: AtomicU64::new(0),
    full_reads: AtomicU64::new(0),
    snapshots_published: AtomicU64::new(0),
};

impl MetadataWork {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Scrape-wide view after merging every shard's report.
pub struct Scrape {
    pub reports: Vec<ShardReport>,
    /// Shards that did not answer in time.
    pub missing: Vec<usize>,
}

impl Scrape {
    /// Ready: every shard answered and serves; in cluster mode the broker is registered,
    /// holds a valid ZooKeeper lease and every shard applied each metadata version published
    /// more than [`METADATA_APPLY_GRACE`] ago.
    pub fn ready(&self, lease_valid: bool) -> Result<(), String> {
        if !self.missing.is_empty() {
            return Err(format!("shards {:?} did not answer", self.missing));
        }
        let Some(first) = self.reports.first() else {
            return Err("no shard answered".into());
        };
        if !self.reports.iter().all(|r| r.serving) {
            return Err("not every shard serves yet".into());
        }
        if first.cluster_mode {
            if !first.registered {
                return Err("not registered in ZooKeeper".into());
            }
            if !lease_valid {
                return Err("no valid ZooKeeper session".into());
            }
            let published = STATUS.settled_version(METADATA_APPLY_GRACE);
            if let Some(r) = self.reports.iter().find(|r| r.metadata_version < published) {
                return Err(format!(
                    "shard {} applied metadata version {} of {published}",
                    r.shard, r.metadata_version
                ));
            }
        }
        Ok(())
    }

    /// High watermark per partition, from a local replica (the leader's when there is one).
    pub fn high_watermarks(&self) -> BTreeMap<(&str, i32), i64> {
        let mut out: BTreeMap<(&str, i32), (bool, i64)> = BTreeMap::new();
        for p in self.reports.iter().flat_map(|r| &r.partitions) {
            if p.topic == CONSUMER_OFFSETS_TOPIC {
                continue;
            }
            let e = out
                .entry((p.topic.as_str(), p.partition))
                .or_insert((p.leader, p.high_watermark));
            if p.leader && !e.0 {
                *e = (true, p.high_watermark);
            }
        }
        out.into_iter().map(|(k, (_, hw))| (k, hw)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_waits_only_for_versions_published_a_grace_ago() {
        let status = Status {
            serving: AtomicBool::new(true),
            published: Mutex::new(VecDeque::new()),
        };
        assert_eq!(status.settled_version(Duration::ZERO), 0);
        status.published(3);
        status.published(4);
        assert_eq!(status.settled_version(Duration::ZERO), 4);
        assert_eq!(
            status.settled_version(Duration::from_secs(60)),
            0,
            "too fresh"
        );
        for v in 5..5 + PUBLISHED_KEPT as u64 {
            status.published(v);
        }
        assert_eq!(status.published.lock().unwrap().len(), PUBLISHED_KEPT);
        assert_eq!(
            status.settled_version(Duration::ZERO),
            4 + PUBLISHED_KEPT as u64
        );
    }

    #[test]
    fn histogram_buckets_and_merge() {
        let h = Histogram::new(&LATENCY_BUCKETS);
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let s = h.snapshot();
        assert_eq!(s.counts[0], 2, "<= 100 us");
        assert_eq!(s.counts[5], 1, "<= 5 ms");
        assert_eq!(*s.counts.last().unwrap(), 1, "above every bound");
        assert_eq!(s.count(), 4);
        assert!((s.sum_seconds - 20.00315).abs() < 1e-9);
        let mut total = HistogramSnapshot::default();
        total.merge(&s);
        total.merge(&s);
        assert_eq!(total.count(), 8);
        assert_eq!(total.counts[0], 4);
    }

    #[test]
    fn disabled_metrics_record_nothing_but_keep_gauges() {
        let m = ShardMetrics::new(false);
        m.record_request(0, 9, Duration::from_millis(1));
        m.add(&m.cross_shard_messages, 5);
        m.connection_opened();
        assert_eq!(m.requests[0][9].get(), 0);
        assert_eq!(m.cross_shard_messages.get(), 0);
        assert_eq!(m.connections.get(), 1);
        m.connection_closed();
        m.connection_closed();
        assert_eq!(m.connections.get(), 0);
    }

    #[test]
    fn request_slots_clamp_versions_and_ignore_bad_keys() {
        let m = ShardMetrics::new(true);
        m.record_request(1, 99, Duration::from_millis(1));
        m.record_request(-1, 0, Duration::from_millis(1));
        m.record_request(500, 0, Duration::from_millis(1));
        assert_eq!(m.requests[1][API_VERSIONS - 1].get(), 1);
        assert_eq!(m.latency[1].snapshot().count(), 1);
    }
}
