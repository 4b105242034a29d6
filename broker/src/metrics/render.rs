//! Prometheus text exposition (format 0.0.4) of a merged scrape. Pure: data in, text out.
//!
//! Names follow Prometheus conventions: `shardlog_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_total` on counters. Per-partition log gauges carry `topic` and
//! `partition` labels up to `metrics.partition.labels.max` partitions on the broker; above
//! that they are summed per topic (no `partition` label) to bound the series count.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{HistogramSnapshot, Scrape};

/// Reads one figure of a partition's or a shard's report.
type PartitionValue = fn(&super::PartitionReport) -> u64;
type ShardValue = fn(&super::ShardReport) -> u64;

/// Process-wide values that do not come from a shard report.
pub struct RenderContext {
    pub fetch_bytes_sendfile: u64,
    pub fetch_bytes_copied: u64,
    pub fetch_bytes_cold: u64,
    pub partition_labels_max: usize,
    /// `Some((session_alive, expiries))` in cluster mode.
    pub zookeeper: Option<(bool, u64)>,
    pub ready: bool,
    pub segment_rolls: u64,
    pub recovery_truncations: u64,
    /// The control thread's metadata work, in cluster mode.
    pub metadata: Option<MetadataWorkCounts>,
}

/// Values of `super::MetadataWork` at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetadataWorkCounts {
    pub znode_reads_full: u64,
    pub znode_reads_incremental: u64,
    pub full_reads: u64,
    pub snapshots_published: u64,
}

/// Appends a metric family: HELP and TYPE lines, then its samples.
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(k);
                self.text.push_str("=\"");
                escape_label(&mut self.text, v);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, bound) in h.bounds.iter().enumerate() {
            cumulative += h.counts.get(i).copied().unwrap_or(0);
            let le = bound.to_string();
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count());
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds);
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

/// Label values escape backslash, double quote and newline (the exposition format's rule).
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn api_name(key: i16) -> String {
    match kafka_protocol::messages::ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => key.to_string(),
    }
}

/// Renders the whole scrape.
pub fn render(scrape: &Scrape, ctx: &RenderContext) -> String {
    let mut o = Out {
        text: String::with_capacity(64 * 1024),
    };
    let reports = &scrape.reports;

    o.family(
        "shardlog_ready",
        "gauge",
        "1 when every shard serves (and, in cluster mode, the broker is registered with current metadata).",
    );
    o.sample("shardlog_ready", &[], u8::from(ctx.ready));
    o.family("shardlog_build_info", "gauge", "Version of this broker.");
    o.sample(
        "shardlog_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );

    // Requests by API and version, summed over shards.
    let mut requests: BTreeMap<(String, i16), u64> = BTreeMap::new();
    let mut latency: BTreeMap<String, HistogramSnapshot> = BTreeMap::new();
    for r in reports {
        for &(k, v, n) in &r.requests {
            *requests.entry((api_name(k), v)).or_default() += n;
        }
        for (k, h) in &r.latency {
            latency.entry(api_name(*k)).or_default().merge(h);
        }
    }
    o.family(
        "shardlog_requests_total",
        "counter",
        "Kafka requests handled, by API and version.",
    );
    for ((api, v), n) in &requests {
        o.sample(
            "shardlog_requests_total",
            &[("api", api), ("version", &v.to_string())],
            n,
        );
    }
    o.family(
        "shardlog_request_duration_seconds",
        "histogram",
        "Time from a decoded request to its response handed to the socket, by API.",
    );
    for (api, h) in &latency {
        o.histogram("shardlog_request_duration_seconds", &[("api", api)], h);
    }

    // Per-topic traffic (consumers only for the bytes out; replication is not counted).
    let mut topics: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
    for p in reports.iter().flat_map(|r| &r.partitions) {
        let t = topics.entry(p.topic.as_str()).or_default();
        t[0] += p.bytes_in;
        t[1] += p.records_in;
        t[2] += p.bytes_out;
        t[3] += p.records_out;
    }
    for (i, (name, help)) in [
        (
            "shardlog_topic_bytes_in_total",
            "Record batch bytes appended by producers, by topic.",
        ),
        (
            "shardlog_topic_records_in_total",
            "Records appended by producers, by topic.",
        ),
        (
            "shardlog_topic_bytes_out_total",
            "Record batch bytes sent to consumers, by topic.",
        ),
        (
            "shardlog_topic_records_out_total",
            "Records sent to consumers (whole batches counted from the fetch offset), by topic.",
        ),
    ]
    .iter()
    .enumerate()
    {
        o.family(name, "counter", help);
        for (topic, v) in &topics {
            o.sample(name, &[("topic", topic)], v[i]);
        }
    }

    // Partition health on this broker.
    let all: Vec<_> = reports.iter().flat_map(|r| &r.partitions).collect();
    let led: Vec<_> = all.iter().filter(|p| p.leader).collect();
    let gauges = [
        (
            "shardlog_partitions",
            "Partition replicas hosted by this broker.",
            all.len(),
        ),
        (
            "shardlog_partition_leaders",
            "Partitions this broker leads.",
            led.len(),
        ),
        (
            "shardlog_under_replicated_partitions",
            "Partitions led here whose ISR is smaller than their replica set.",
            led.iter().filter(|p| p.isr < p.replicas).count(),
        ),
        (
            "shardlog_under_min_isr_partitions",
            "Partitions led here whose ISR is below min.insync.replicas.",
            led.iter()
                .filter(|p| (p.isr as i64) < i64::from(p.min_insync_replicas))
                .count(),
        ),
        (
            "shardlog_offline_partitions",
            "Partitions without a leader (reported by the controller only, as Kafka does).",
            reports
                .iter()
                .filter(|r| r.is_controller)
                .map(|r| r.offline_partitions as usize)
                .sum(),
        ),
    ];
    for (name, help, v) in gauges {
        o.family(name, "gauge", help);
        o.sample(name, &[], v);
    }
    let sum = |f: fn(&super::ShardReport) -> u64| reports.iter().map(f).sum::<u64>();
    o.family(
        "shardlog_isr_shrinks_total",
        "counter",
        "ISR shrinks this broker made as leader.",
    );
    o.sample("shardlog_isr_shrinks_total", &[], sum(|r| r.isr_shrinks));
    o.family(
        "shardlog_isr_expands_total",
        "counter",
        "ISR expansions this broker made as leader.",
    );
    o.sample("shardlog_isr_expands_total", &[], sum(|r| r.isr_expands));

    // Log gauges, per partition or (above the limit) per topic.
    let per_partition = all.len() <= ctx.partition_labels_max;
    let log_gauges: [(&str, &str, PartitionValue); 6] = [
        (
            "shardlog_log_start_offset",
            "First offset of the log.",
            |p| p.log_start_offset.max(0) as u64,
        ),
        (
            "shardlog_log_end_offset",
            "Offset the next appended record gets.",
            |p| p.log_end_offset.max(0) as u64,
        ),
        (
            "shardlog_high_watermark",
            "Offsets below it are committed and readable by consumers.",
            |p| p.high_watermark.max(0) as u64,
        ),
        (
            "shardlog_log_size_bytes",
            "Bytes of the log's segments.",
            |p| p.size_bytes,
        ),
        (
            "shardlog_log_cleaner_first_dirty_offset",
            "The log cleaner's progress: offsets below it are compacted.",
            |p| p.cleaner_first_dirty_offset.max(0) as u64,
        ),
        (
            "shardlog_log_cleaner_dirty_bytes",
            "Bytes of a compacted log's closed segments not yet cleaned (0 for other topics).",
            |p| p.cleaner_dirty_bytes,
        ),
    ];
    for (name, help, get) in log_gauges {
        o.family(
            name,
            "gauge",
            &format!(
                "{help} Per partition up to metrics.partition.labels.max partitions, else summed per topic."
            ),
        );
        if per_partition {
            let mut sorted: Vec<_> = all.iter().collect();
            sorted.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            for p in sorted {
                o.sample(
                    name,
                    &[("topic", &p.topic), ("partition", &p.partition.to_string())],
                    get(p),
                );
            }
        } else {
            let mut by_topic: BTreeMap<&str, u64> = BTreeMap::new();
            for p in &all {
                *by_topic.entry(p.topic.as_str()).or_default() += get(p);
            }
            for (topic, v) in by_topic {
                o.sample(name, &[("topic", topic)], v);
            }
        }
    }

    // Consumer group lag: high watermark minus committed offset, where this broker holds a
    // replica of the partition and coordinates the group.
    let hws = scrape.high_watermarks();
    o.family(
        "shardlog_consumer_group_committed_offset",
        "gauge",
        "Committed offset of a consumer group, by group, topic and partition.",
    );
    let mut lags = Vec::new();
    for g in reports.iter().flat_map(|r| &r.group_offsets) {
        let p = g.partition.to_string();
        let labels = [
            ("group", g.group.as_str()),
            ("topic", g.topic.as_str()),
            ("partition", p.as_str()),
        ];
        o.sample(
            "shardlog_consumer_group_committed_offset",
            &labels,
            g.committed,
        );
        if let Some(hw) = hws.get(&(g.topic.as_str(), g.partition)) {
            lags.push((g, (hw - g.committed).max(0)));
        }
    }
    o.family(
        "shardlog_consumer_group_lag",
        "gauge",
        "High watermark minus the committed offset, for partitions with a replica on this broker.",
    );
    for (g, lag) in lags {
        let p = g.partition.to_string();
        o.sample(
            "shardlog_consumer_group_lag",
            &[
                ("group", g.group.as_str()),
                ("topic", g.topic.as_str()),
                ("partition", p.as_str()),
            ],
            lag,
        );
    }

    // Per-shard runtime figures.
    o.family(
        "shardlog_connections_refused_total",
        "counter",
        "Connections closed right after accept because a limit was reached.",
    );
    for r in reports {
        let shard = r.shard.to_string();
        o.sample(
            "shardlog_connections_refused_total",
            &[("shard", shard.as_str()), ("reason", "max.connections")],
            r.connections_refused_max,
        );
        o.sample(
            "shardlog_connections_refused_total",
            &[
                ("shard", shard.as_str()),
                ("reason", "max.connections.per.ip"),
            ],
            r.connections_refused_per_ip,
        );
    }
    let per_shard: [(&str, &str, &str, ShardValue); 17] = [
        (
            "shardlog_request_bytes_held",
            "gauge",
            "Bytes of request frames held, reserved from the shard's share of queued.max.request.bytes.",
            |r| r.request_bytes_held,
        ),
        (
            "shardlog_request_budget_waits_total",
            "counter",
            "Request frames whose body waited for the shard's request budget.",
            |r| r.request_budget_waits,
        ),
        (
            "shardlog_fetch_waiters_full_total",
            "counter",
            "Fetches answered at once because a partition had the most long-polling fetches it keeps.",
            |r| r.fetch_waiters_full,
        ),
        (
            "shardlog_produce_queue_full_total",
            "counter",
            "Produce requests refused (REQUEST_TIMED_OUT) because a partition's append queue or acks=all waiters were full.",
            |r| r.produce_queue_full,
        ),
        (
            "shardlog_connections",
            "gauge",
            "Open client connections.",
            |r| r.connections,
        ),
        (
            "shardlog_connections_accepted_total",
            "counter",
            "Client connections accepted.",
            |r| r.connections_accepted,
        ),
        (
            "shardlog_cross_shard_messages_total",
            "counter",
            "Calls sent to another shard.",
            |r| r.cross_shard_messages,
        ),
        (
            "shardlog_lost_wakeup_rechecks_total",
            "counter",
            "Cross-thread receives completed by the periodic re-check instead of their wake-up.",
            |r| r.lost_wakeup_rechecks,
        ),
        (
            "shardlog_retention_deleted_segments_total",
            "counter",
            "Segments deleted by time or size retention.",
            |r| r.retention_deleted_segments,
        ),
        (
            "shardlog_log_cleaner_runs_total",
            "counter",
            "Cleanings (compactions) of a partition's log done by the log cleaner.",
            |r| r.cleaner_runs,
        ),
        (
            "shardlog_log_cleaner_read_bytes_total",
            "counter",
            "Bytes of segments the log cleaner read.",
            |r| r.cleaner_bytes_read,
        ),
        (
            "shardlog_log_cleaner_written_bytes_total",
            "counter",
            "Bytes of cleaned segments the log cleaner wrote.",
            |r| r.cleaner_bytes_written,
        ),
        (
            "shardlog_log_cleaner_removed_records_total",
            "counter",
            "Records the log cleaner removed (older versions of a key, expired tombstones, aborted data, markers).",
            |r| r.cleaner_records_removed,
        ),
        (
            "shardlog_log_cleaner_errors_total",
            "counter",
            "Cleanings that failed (the log is left as it was; see the broker's log).",
            |r| r.cleaner_errors,
        ),
        (
            "shardlog_metadata_partitions_applied_total",
            "counter",
            "Partitions a shard applied from metadata snapshots (all it owns for a full apply, the changed ones for a delta).",
            |r| r.metadata_partitions_applied,
        ),
        (
            "shardlog_metadata_full_applies_total",
            "counter",
            "Metadata snapshots a shard applied by walking every partition.",
            |r| r.metadata_full_applies,
        ),
        (
            "shardlog_metadata_delta_applies_total",
            "counter",
            "Metadata snapshots a shard applied from the changes since the version it held.",
            |r| r.metadata_delta_applies,
        ),
    ];
    for (name, kind, help, get) in per_shard {
        o.family(name, kind, help);
        for r in reports {
            o.sample(name, &[("shard", &r.shard.to_string())], get(r));
        }
    }
    o.family(
        "shardlog_task_queue_latency_seconds",
        "histogram",
        "Delay between spawning a task into a shard's request queue and its first run.",
    );
    for r in reports {
        o.histogram(
            "shardlog_task_queue_latency_seconds",
            &[("shard", &r.shard.to_string())],
            &r.queue_latency,
        );
    }

    o.family(
        "shardlog_fetch_bytes_total",
        "counter",
        "Fetch record bytes written to sockets, by path: sendfile from the page cache, copy (read \
         through io_uring while the socket was full), disk (not in the page cache: read through \
         io_uring, off the shard's thread).",
    );
    o.sample(
        "shardlog_fetch_bytes_total",
        &[("path", "sendfile")],
        ctx.fetch_bytes_sendfile,
    );
    o.sample(
        "shardlog_fetch_bytes_total",
        &[("path", "copy")],
        ctx.fetch_bytes_copied,
    );
    o.sample(
        "shardlog_fetch_bytes_total",
        &[("path", "disk")],
        ctx.fetch_bytes_cold,
    );
    o.family(
        "shardlog_segment_rolls_total",
        "counter",
        "Segments rolled (by size or age).",
    );
    o.sample("shardlog_segment_rolls_total", &[], ctx.segment_rolls);
    o.family(
        "shardlog_recovery_truncations_total",
        "counter",
        "Logs cut at a damaged batch while recovering at start.",
    );
    o.sample(
        "shardlog_recovery_truncations_total",
        &[],
        ctx.recovery_truncations,
    );

    o.family(
        "shardlog_controller",
        "gauge",
        "1 when this broker is the controller (always 1 standalone).",
    );
    o.sample(
        "shardlog_controller",
        &[],
        u8::from(reports.first().is_some_and(|r| r.is_controller)),
    );
    if let Some((alive, expiries)) = ctx.zookeeper {
        o.family(
            "shardlog_zookeeper_session_state",
            "gauge",
            "1 while the ZooKeeper session is known to be alive (the leadership lease is valid).",
        );
        o.sample("shardlog_zookeeper_session_state", &[], u8::from(alive));
        o.family(
            "shardlog_zookeeper_session_expiries_total",
            "counter",
            "ZooKeeper sessions that ended (expired or closed) while the broker ran.",
        );
        o.sample("shardlog_zookeeper_session_expiries_total", &[], expiries);
    }
    if let Some(m) = ctx.metadata {
        o.family(
            "shardlog_metadata_znode_reads_total",
            "counter",
            "Znodes the control thread read, by kind of read (full: the whole cluster state; incremental: what watch events named).",
        );
        o.sample(
            "shardlog_metadata_znode_reads_total",
            &[("read", "full")],
            m.znode_reads_full,
        );
        o.sample(
            "shardlog_metadata_znode_reads_total",
            &[("read", "incremental")],
            m.znode_reads_incremental,
        );
        o.family(
            "shardlog_metadata_full_reads_total",
            "counter",
            "Full reads of the cluster state (session start, reconnect, safety net).",
        );
        o.sample("shardlog_metadata_full_reads_total", &[], m.full_reads);
        o.family(
            "shardlog_metadata_snapshots_published_total",
            "counter",
            "Metadata snapshots the control thread published to the shards.",
        );
        o.sample(
            "shardlog_metadata_snapshots_published_total",
            &[],
            m.snapshots_published,
        );
    }
    o.text
}

#[cfg(test)]
mod tests {
    use super::super::{GroupOffset, PartitionReport, ShardReport};
    use super::*;

    fn partition(topic: &str, i: i32, leader: bool, isr: usize) -> PartitionReport {
        PartitionReport {
            topic: topic.into(),
            partition: i,
            leader,
            replicas: 3,
            isr,
            min_insync_replicas: 2,
            log_start_offset: 0,
            log_end_offset: 100,
            high_watermark: 90,
            size_bytes: 1000,
            bytes_in: 10,
            records_in: 2,
            bytes_out: 5,
            records_out: 1,
            cleaner_first_dirty_offset: 0,
            compacted: false,
            cleaner_dirty_bytes: 0,
        }
    }

    fn ctx(max: usize) -> RenderContext {
        RenderContext {
            fetch_bytes_sendfile: 7,
            fetch_bytes_copied: 1,
            fetch_bytes_cold: 2,
            partition_labels_max: max,
            zookeeper: Some((true, 2)),
            ready: true,
            segment_rolls: 3,
            recovery_truncations: 0,
            metadata: Some(MetadataWorkCounts {
                znode_reads_full: 40,
                znode_reads_incremental: 3,
                full_reads: 1,
                snapshots_published: 5,
            }),
        }
    }

    fn scrape() -> Scrape {
        let mut r0 = ShardReport {
            shard: 0,
            is_controller: true,
            serving: true,
            ..Default::default()
        };
        r0.requests = vec![(0, 9, 4), (3, 12, 1)];
        r0.latency = vec![(0, {
            let h = super::super::Histogram::new(&super::super::LATENCY_BUCKETS);
            h.observe(std::time::Duration::from_millis(2));
            h.snapshot()
        })];
        r0.partitions = vec![
            partition("orders", 0, true, 1),
            partition("orders", 1, false, 3),
        ];
        r0.group_offsets = vec![GroupOffset {
            group: "billing \"eu\"".into(),
            topic: "orders".into(),
            partition: 0,
            committed: 40,
        }];
        let mut r1 = ShardReport {
            shard: 1,
            serving: true,
            ..Default::default()
        };
        r1.requests = vec![(0, 9, 1)];
        r1.partitions = vec![partition("orders", 2, true, 3)];
        Scrape {
            reports: vec![r0, r1],
            missing: vec![],
        }
    }

    #[test]
    fn renders_families_and_values() {
        let text = render(&scrape(), &ctx(1000));
        for line in [
            "shardlog_requests_total{api=\"Produce\",version=\"9\"} 5",
            "shardlog_requests_total{api=\"Metadata\",version=\"12\"} 1",
            "shardlog_request_duration_seconds_bucket{api=\"Produce\",le=\"0.0025\"} 1",
            "shardlog_request_duration_seconds_count{api=\"Produce\"} 1",
            "shardlog_topic_bytes_in_total{topic=\"orders\"} 30",
            "shardlog_partitions 3",
            "shardlog_partition_leaders 2",
            "shardlog_under_replicated_partitions 1",
            "shardlog_under_min_isr_partitions 1",
            "shardlog_log_end_offset{topic=\"orders\",partition=\"2\"} 100",
            "shardlog_consumer_group_lag{group=\"billing \\\"eu\\\"\",topic=\"orders\",partition=\"0\"} 50",
            "shardlog_fetch_bytes_total{path=\"sendfile\"} 7",
            "shardlog_zookeeper_session_expiries_total 2",
            "shardlog_controller 1",
            "shardlog_ready 1",
            "# TYPE shardlog_isr_shrinks_total counter",
            "shardlog_metadata_znode_reads_total{read=\"incremental\"} 3",
            "shardlog_metadata_full_reads_total 1",
            "shardlog_metadata_snapshots_published_total 5",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn many_partitions_aggregate_per_topic() {
        let text = render(&scrape(), &ctx(2));
        assert!(text
            .lines()
            .any(|l| l == "shardlog_log_size_bytes{topic=\"orders\"} 3000"));
        assert!(!text.contains("shardlog_log_size_bytes{topic=\"orders\",partition"));
    }

    #[test]
    fn every_sample_belongs_to_a_declared_family() {
        let text = render(&scrape(), &ctx(1000));
        let mut declared = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| declared.contains(*b)))
                    .unwrap_or(name);
                assert!(declared.contains(base), "{name} has no TYPE line");
            }
        }
    }
}
