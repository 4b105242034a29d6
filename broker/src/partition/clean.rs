//! A partition as the log cleaner sees it: the topic's compaction settings, and what may be
//! cleaned (below the last stable offset, each producer's last batch kept).

use shardlog_storage::{CleanParams, CleanStats, Cleanable, StorageError};

use super::Partition;

impl Partition {
    /// `cleanup.policy` includes `compact`.
    pub fn compacted(&self) -> bool {
        self.config.borrow().cleanup_policy_compact
    }

    /// The cleaning this partition allows now; `max_map_entries` bounds the offset map.
    pub fn clean_params(&self, now_ms: i64, max_map_entries: usize) -> CleanParams {
        let mut p = self.clean_bounds(now_ms, max_map_entries);
        p.retain_last_batch_of = self.producers.borrow().last_batch_offsets();
        p
    }

    /// The cleaner's progress: the first dirty offset and the dirty bytes cleanable now (0
    /// when the topic is not compacted).
    pub fn cleaner_progress(&self, now_ms: i64) -> (i64, u64) {
        if !self.compacted() {
            return (self.log.first_dirty_offset(), 0);
        }
        let c = self.log.cleanable(&self.clean_bounds(now_ms, 0));
        (c.first_dirty_offset, c.dirty_bytes)
    }

    fn clean_bounds(&self, now_ms: i64, max_map_entries: usize) -> CleanParams {
        let c = self.config.borrow();
        CleanParams {
            now_ms,
            delete_retention_ms: c.delete_retention_ms,
            min_cleanable_dirty_ratio: c.min_cleanable_dirty_ratio,
            min_compaction_lag_ms: c.min_compaction_lag_ms,
            max_compaction_lag_ms: c.max_compaction_lag_ms,
            // Undecided transactions and data not yet committed by the ISR are never cleaned.
            first_unstable_offset: self.last_stable_offset(),
            max_map_entries,
            ..CleanParams::default()
        }
    }

    pub fn cleanable(&self, p: &CleanParams) -> Cleanable {
        self.log.cleanable(p)
    }

    /// Cleans the log if a cleaning is due (see `shardlog_storage::partition_log::cleaner`).
    pub async fn clean(&self, p: &CleanParams) -> Result<Option<CleanStats>, StorageError> {
        self.log.clean(p).await
    }
}
