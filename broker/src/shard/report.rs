//! What a shard tells the metrics endpoint at scrape time (`report`, run on the shard through
//! its inbox), and the probe of its scheduling delay (`queue_probe_loop`).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::base::limits::GROUP_SERIES_MAX;
use crate::metrics::{GroupOffset, PartitionReport, ShardReport, QUEUE_PROBE_EVERY, STATUS};
use crate::partition::Role;
use crate::shard::Shard;

/// Builds this shard's report (runs on the shard, at scrape time).
pub fn report(shard: &Rc<Shard>) -> ShardReport {
    let m = &shard.metrics;
    let mut requests = Vec::new();
    let mut latency = Vec::new();
    for (k, versions) in m.requests.iter().enumerate() {
        let mut seen = false;
        for (v, c) in versions.iter().enumerate() {
            if c.get() > 0 {
                requests.push((k as i16, v as i16, c.get()));
                seen = true;
            }
        }
        if seen {
            latency.push((k as i16, m.latency[k].snapshot()));
        }
    }
    let snapshot = shard.metadata();
    let mut partitions = Vec::new();
    let now = crate::base::clock::now_ms();
    for p in shard.partitions() {
        let state = snapshot.partition_state(&p.topic, p.index);
        let c = p.counters();
        let (cleaner_first_dirty_offset, cleaner_dirty_bytes) = p.cleaner_progress(now);
        partitions.push(PartitionReport {
            topic: p.topic.to_string(),
            partition: p.index,
            leader: p.role() == Role::Leader,
            replicas: state.map_or(1, |s| s.replicas.len()),
            isr: p.isr().len().max(usize::from(!snapshot.cluster_mode)),
            min_insync_replicas: p.config().min_insync_replicas,
            log_start_offset: p.log_start_offset(),
            log_end_offset: p.log_end_offset(),
            high_watermark: p.high_watermark(),
            size_bytes: p.log().size_bytes(),
            bytes_in: c.bytes_in.get(),
            records_in: c.records_in.get(),
            bytes_out: c.bytes_out.get(),
            records_out: c.records_out.get(),
            compacted: p.compacted(),
            cleaner_first_dirty_offset,
            cleaner_dirty_bytes,
        });
    }
    let mut group_offsets = Vec::new();
    for gc in shard.group_coordinators() {
        if group_offsets.len() >= GROUP_SERIES_MAX {
            break;
        }
        gc.read(|manager| {
            for (group, topic, partition, committed) in manager.committed_offsets() {
                if group_offsets.len() >= GROUP_SERIES_MAX {
                    break;
                }
                group_offsets.push(GroupOffset {
                    group,
                    topic,
                    partition,
                    committed,
                });
            }
        });
    }
    let offline_partitions = if shard.id.0 == 0 {
        snapshot
            .topics
            .values()
            .flat_map(|t| (0..t.partitions).filter_map(move |i| t.state(i)))
            .filter(|s| s.leader == crate::cluster::metadata::NO_LEADER)
            .count() as u64
    } else {
        0
    };
    ShardReport {
        shard: shard.id.0,
        requests,
        latency,
        connections: m.connections.get(),
        connections_accepted: m.connections_accepted.get(),
        connections_refused_max: m.connections_refused_max.get(),
        connections_refused_per_ip: m.connections_refused_per_ip.get(),
        request_bytes_held: m.request_bytes_held.get(),
        request_budget_waits: m.request_budget_waits.get(),
        fetch_waiters_full: m.fetch_waiters_full.get(),
        produce_queue_full: m.produce_queue_full.get(),
        cross_shard_messages: m.cross_shard_messages.get(),
        lost_wakeup_rechecks: crate::runtime::rt::lost_wakeup_rechecks(),
        isr_shrinks: m.isr_shrinks.get(),
        isr_expands: m.isr_expands.get(),
        retention_deleted_segments: m.retention_deleted_segments.get(),
        cleaner_runs: m.cleaner_runs.get(),
        cleaner_bytes_read: m.cleaner_bytes_read.get(),
        cleaner_bytes_written: m.cleaner_bytes_written.get(),
        cleaner_records_removed: m.cleaner_records_removed.get(),
        cleaner_errors: m.cleaner_errors.get(),
        metadata_partitions_applied: m.metadata_partitions_applied.get(),
        metadata_full_applies: m.metadata_full_applies.get(),
        metadata_delta_applies: m.metadata_delta_applies.get(),
        queue_latency: m.queue_latency.snapshot(),
        partitions,
        group_offsets,
        metadata_version: snapshot.version,
        offline_partitions,
        is_controller: !snapshot.cluster_mode || snapshot.controller_id == snapshot.local_broker,
        registered: !snapshot.cluster_mode || snapshot.brokers.contains_key(&snapshot.local_broker),
        cluster_mode: snapshot.cluster_mode,
        serving: STATUS.serving.load(Ordering::Acquire),
    }
}

/// Measures, every `QUEUE_PROBE_EVERY`, how long a task spawned into the request queue waits
/// before it first runs: the shard's scheduling delay as requests see it.
pub async fn queue_probe_loop(shard: std::rc::Weak<Shard>) {
    loop {
        crate::runtime::rt::sleep(QUEUE_PROBE_EVERY).await;
        let Some(s) = shard.upgrade() else { return };
        if s.shutdown.is_disconnected() {
            return;
        }
        drop(s);
        let spawned = Instant::now();
        let waited = crate::runtime::rt::spawn(async move { spawned.elapsed() }).await;
        let Some(s) = shard.upgrade() else { return };
        if s.metrics.enabled() {
            s.metrics.queue_latency.observe(waited);
        }
    }
}
