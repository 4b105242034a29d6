//! The shard's log cleaner: one background task per shard that compacts the partitions it
//! owns whose `cleanup.policy` includes `compact`: every `log.cleaner.backoff.ms`, each due one
//! once, dirtiest first, one at a time.
//!
//! It runs on the shard in the background queue and yields between chunks; its file reads and
//! writes go through the shard's ring (see `shardlog_storage::partition_log::cleaner`), so the
//! shard keeps serving while it works. Its memory is its offset map: the shard's share of
//! `log.cleaner.dedupe.buffer.size` at `MAP_BYTES_PER_KEY` per key.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use super::Shard;
use crate::base::clock::now_ms;

/// Bytes of offset map per key: a 16-byte key hash and an 8-byte offset in a hash table kept
/// at most 7/8 full.
pub const MAP_BYTES_PER_KEY: u64 = 32;

/// Cleans this shard's compacted partitions every `log.cleaner.backoff.ms` until shutdown.
pub async fn cleaner_loop(shard: Rc<Shard>) {
    let cfg = &shard.config;
    if !cfg.log_cleaner_enable {
        return;
    }
    let every = Duration::from_millis(cfg.log_cleaner_backoff_ms);
    let per_shard = cfg.log_cleaner_dedupe_buffer_per_shard(shard.shard_count());
    let max_map_entries = (per_shard / MAP_BYTES_PER_KEY).max(1) as usize;
    let stop = Rc::new(Cell::new(false));
    {
        let (stop, shutdown) = (stop.clone(), shard.shutdown.clone());
        crate::runtime::rt::spawn_detached(async move {
            let _ = shutdown.recv_async().await;
            stop.set(true);
        });
    }
    while !stop.get() {
        if shard.sleep_unless_shutdown(every).await || stop.get() {
            return;
        }
        // Clean each due partition once, dirtiest first, then sleep again.
        let now = now_ms();
        let mut due: Vec<_> = shard
            .partitions()
            .into_iter()
            .filter(|p| p.compacted())
            .filter_map(|p| {
                let c = p.cleanable(&p.clean_params(now, max_map_entries));
                c.due.then_some((c.dirty_ratio, p))
            })
            .collect();
        due.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (ratio, p) in due {
            let mut params = p.clean_params(now_ms(), max_map_entries);
            params.stop = stop.clone();
            let m = &shard.metrics;
            let started = std::time::Instant::now();
            match p.clean(&params).await {
                Ok(Some(s)) => {
                    m.add(&m.cleaner_runs, 1);
                    m.add(&m.cleaner_bytes_read, s.bytes_read);
                    m.add(&m.cleaner_bytes_written, s.bytes_written);
                    m.add(&m.cleaner_records_removed, s.records_removed);
                    log::info!(
                        "cleaned {}-{} (dirty ratio {ratio:.2}) up to offset {} in {} ms: read {} B, wrote {} B, removed {} record(s), segments {} -> {}",
                        p.topic,
                        p.index,
                        s.cleaned_to,
                        started.elapsed().as_millis(),
                        s.bytes_read,
                        s.bytes_written,
                        s.records_removed,
                        s.segments_before,
                        s.segments_after
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    m.add(&m.cleaner_errors, 1);
                    log::error!("cleaning {}-{}: {e}", p.topic, p.index);
                }
            }
            if stop.get() {
                return;
            }
            crate::runtime::rt::yield_if_needed().await;
        }
    }
}
