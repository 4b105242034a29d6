//! Per-partition log settings, named after the Kafka topic configs they implement.
//!
//! The broker's config module owns parsing and the Kafka names; this struct is what the log
//! needs at run time. `PartitionLog::set_config` swaps it; the log reads it at the next append,
//! roll check or retention check, never in the middle of one.

use crate::error::StorageError;
use crate::policy::{MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};

/// Settings of one partition log. `Default` gives Kafka's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment is older than this (by record time, as Kafka).
    pub segment_ms: u64,
    /// `retention.ms`: delete segments whose largest timestamp is older than this; -1 = never.
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments while the log stays at least this big; -1 = never.
    pub retention_bytes: i64,
    /// `index.interval.bytes`: bytes of log between two sparse index entries.
    pub index_interval_bytes: u32,
    /// `flush.messages`: fdatasync after this many records; `u64::MAX` = leave it to the OS.
    pub flush_messages: u64,
    /// `flush.ms`: fdatasync when the last flush is older than this; `u64::MAX` = never.
    pub flush_ms: u64,
    /// Bytes of disk the active segment's `.log` keeps reserved ahead of its write position
    /// (`fallocate` with `FALLOC_FL_KEEP_SIZE`, so the file size stays that of its data); 0 = off.
    /// On a filesystem with non-blocking buffered writes (XFS), an append into reserved space
    /// completes in io_uring's submission instead of on a kernel worker thread.
    pub preallocate_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        const DAY_MS: u64 = 24 * 60 * 60 * 1000;
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            retention_ms: 7 * DAY_MS as i64,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            flush_messages: u64::MAX,
            flush_ms: u64::MAX,
            preallocate_bytes: 0,
        }
    }
}

impl LogConfig {
    /// Checks the ranges Kafka enforces (plus the int32 positions of the index format).
    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |what: String| Err(StorageError::InvalidConfig(what));
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad(format!(
                "segment.bytes {} not in [{MIN_SEGMENT_BYTES}, {MAX_SEGMENT_BYTES}]",
                self.segment_bytes
            ));
        }
        if self.segment_ms == 0 {
            return bad("segment.ms must be at least 1".into());
        }
        if self.retention_ms < -1 {
            return bad(format!("retention.ms {} < -1", self.retention_ms));
        }
        if self.retention_bytes < -1 {
            return bad(format!("retention.bytes {} < -1", self.retention_bytes));
        }
        if self.flush_messages == 0 {
            return bad("flush.messages must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kafkas_and_valid() {
        let c = LogConfig::default();
        assert_eq!(c.segment_bytes, 1_073_741_824);
        assert_eq!(c.segment_ms, 604_800_000);
        assert_eq!(c.retention_ms, 604_800_000);
        assert_eq!(c.retention_bytes, -1);
        assert_eq!(c.index_interval_bytes, 4096);
        c.validate().unwrap();
        assert!(LogConfig {
            segment_bytes: 13,
            ..c
        }
        .validate()
        .is_err());
        assert!(LogConfig {
            segment_bytes: 1 << 31,
            ..c
        }
        .validate()
        .is_err());
        assert!(LogConfig {
            retention_ms: -2,
            ..c
        }
        .validate()
        .is_err());
        assert!(LogConfig {
            flush_messages: 0,
            ..c
        }
        .validate()
        .is_err());
    }
}
