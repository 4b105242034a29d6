//! Roll, retention, flush and truncation decisions as plain functions of state and input.
//! No I/O and no clock: `PartitionLog` gathers the inputs, calls these, and acts on the answer.

use crate::config::LogConfig;

/// Index positions are int32 in Kafka's format, so a segment never grows past 2 GiB - 1.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;
/// Kafka's lower bound for `segment.bytes` (one record batch log overhead).
pub const MIN_SEGMENT_BYTES: u64 = 14;
/// Relative offsets are int32 in Kafka's format.
pub const MAX_RELATIVE_OFFSET: i64 = i32::MAX as i64;

/// Why the active segment must be rolled before an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollReason {
    /// The append would take the segment past `segment.bytes`.
    SegmentBytes,
    /// The segment is older than `segment.ms`.
    SegmentMs,
    /// The append's last offset would not fit a relative offset.
    RelativeOffsetOverflow,
    /// The append would not fit an index position.
    PositionOverflow,
}

/// What the roll decision needs to know about the active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveSegmentStats {
    pub base_offset: i64,
    pub size_bytes: u64,
    /// `max_timestamp` of the segment's first batch (Kafka's rolling-based timestamp).
    pub first_batch_timestamp: Option<i64>,
    /// Wall clock when this process created or opened the segment.
    pub created_ms: i64,
}

/// What the roll decision needs to know about an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingAppend {
    pub size_bytes: u64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// Kafka's roll rule (`LocalLog.shouldRoll`). An empty segment is never rolled.
pub fn roll_reason(
    active: &ActiveSegmentStats,
    incoming: &IncomingAppend,
    cfg: &LogConfig,
    now_ms: i64,
) -> Option<RollReason> {
    if active.size_bytes == 0 {
        return None;
    }
    let new_size = active.size_bytes.saturating_add(incoming.size_bytes);
    if new_size > cfg.segment_bytes {
        return Some(RollReason::SegmentBytes);
    }
    if new_size > MAX_SEGMENT_BYTES {
        return Some(RollReason::PositionOverflow);
    }
    if incoming.last_offset - active.base_offset > MAX_RELATIVE_OFFSET {
        return Some(RollReason::RelativeOffsetOverflow);
    }
    if time_roll_due(active, incoming.max_timestamp, now_ms, cfg.segment_ms) {
        return Some(RollReason::SegmentMs);
    }
    None
}

/// Kafka's `timeWaitedForRoll`: record time elapsed since the segment's first batch when it has
/// a timestamp, wall time since the segment was created otherwise. `reference_ms` is the
/// incoming batch's max timestamp on append, or the wall clock for a timer-driven check.
pub fn time_roll_due(
    active: &ActiveSegmentStats,
    reference_ms: i64,
    now_ms: i64,
    segment_ms: u64,
) -> bool {
    if active.size_bytes == 0 {
        return false;
    }
    let waited = match active.first_batch_timestamp {
        Some(first) if first >= 0 => reference_ms.saturating_sub(first),
        _ => now_ms.saturating_sub(active.created_ms),
    };
    waited > i64::try_from(segment_ms).unwrap_or(i64::MAX)
}

/// What retention needs to know about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_offset: i64,
    /// One past the last offset in the segment (`base_offset` when empty).
    pub next_offset: i64,
    pub size_bytes: u64,
    /// Largest batch `max_timestamp`, or the file's last-modified time when no batch has one
    /// (Kafka's `LogSegment.largestTimestamp`).
    pub largest_timestamp: i64,
}

/// How many of the oldest segments to delete: the longest prefix, never including the active
/// (last) segment, in which each segment is wholly below the log start offset, older than
/// `retention.ms`, or removable while keeping at least `retention.bytes` of log (Kafka's three
/// retention checks).
pub fn retention_plan(
    segments: &[SegmentSummary],
    cfg: &LogConfig,
    log_start_offset: i64,
    now_ms: i64,
) -> usize {
    let mut remaining: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let mut deletable = 0;
    for s in segments.iter().take(segments.len().saturating_sub(1)) {
        let below_start = s.next_offset <= log_start_offset;
        let too_old =
            cfg.retention_ms >= 0 && now_ms.saturating_sub(s.largest_timestamp) > cfg.retention_ms;
        let too_big =
            cfg.retention_bytes >= 0 && remaining - s.size_bytes >= cfg.retention_bytes as u64;
        if !(below_start || too_old || too_big) {
            break;
        }
        remaining -= s.size_bytes;
        deletable += 1;
    }
    deletable
}

/// Kafka's `flush.messages` / `flush.ms` rule.
pub fn flush_due(
    unflushed_messages: u64,
    last_flush_ms: i64,
    now_ms: i64,
    cfg: &LogConfig,
) -> bool {
    if unflushed_messages == 0 {
        return false;
    }
    if cfg.flush_messages != u64::MAX && unflushed_messages >= cfg.flush_messages {
        return true;
    }
    cfg.flush_ms != u64::MAX
        && now_ms.saturating_sub(last_flush_ms) >= i64::try_from(cfg.flush_ms).unwrap_or(i64::MAX)
}

/// `truncate_to(offset)` removes whole batches: the batch containing `offset` and all after it.
/// When that reaches below the log start offset nothing visible is left, and the log restarts
/// empty: at `offset` if it is below the log start (as Kafka's `truncateFullyAndStartAt`), else
/// at the log start offset. `None` = an ordinary truncation to `containing_batch_base`.
pub fn full_truncation_start(
    offset: i64,
    log_start_offset: i64,
    containing_batch_base: Option<i64>,
) -> Option<i64> {
    if offset < log_start_offset {
        return Some(offset);
    }
    match containing_batch_base {
        Some(base) if base < log_start_offset => Some(log_start_offset),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(size: u64, first_ts: Option<i64>) -> ActiveSegmentStats {
        ActiveSegmentStats {
            base_offset: 100,
            size_bytes: size,
            first_batch_timestamp: first_ts,
            created_ms: 1_000,
        }
    }
    fn incoming(size: u64, last: i64, ts: i64) -> IncomingAppend {
        IncomingAppend {
            size_bytes: size,
            last_offset: last,
            max_timestamp: ts,
        }
    }

    #[test]
    fn roll_rules() {
        let cfg = LogConfig {
            segment_bytes: 1_000,
            segment_ms: 500,
            ..LogConfig::default()
        };
        // Empty segments never roll, whatever comes.
        assert_eq!(
            roll_reason(
                &active(0, None),
                &incoming(5_000, i64::MAX, 1 << 40),
                &cfg,
                1 << 40
            ),
            None
        );
        assert_eq!(
            roll_reason(&active(900, Some(0)), &incoming(100, 101, 0), &cfg, 0),
            None
        );
        assert_eq!(
            roll_reason(&active(900, Some(0)), &incoming(101, 101, 0), &cfg, 0),
            Some(RollReason::SegmentBytes)
        );
        assert_eq!(
            roll_reason(
                &active(10, Some(0)),
                &incoming(10, 100 + MAX_RELATIVE_OFFSET + 1, 0),
                &cfg,
                0
            ),
            Some(RollReason::RelativeOffsetOverflow)
        );
        assert_eq!(
            roll_reason(
                &active(10, Some(0)),
                &incoming(10, 100 + MAX_RELATIVE_OFFSET, 0),
                &cfg,
                0
            ),
            None
        );
        let big = LogConfig {
            segment_bytes: MAX_SEGMENT_BYTES,
            ..cfg
        };
        assert_eq!(
            roll_reason(
                &active(MAX_SEGMENT_BYTES - 5, Some(0)),
                &incoming(6, 101, 0),
                &big,
                0
            ),
            Some(RollReason::SegmentBytes)
        );
        // By record time since the first batch...
        assert_eq!(
            roll_reason(&active(10, Some(1_000)), &incoming(1, 101, 1_500), &cfg, 0),
            None
        );
        assert_eq!(
            roll_reason(&active(10, Some(1_000)), &incoming(1, 101, 1_501), &cfg, 0),
            Some(RollReason::SegmentMs)
        );
        // ...or by wall time since creation when the first batch has no timestamp.
        assert_eq!(
            roll_reason(
                &active(10, Some(-1)),
                &incoming(1, 101, 1 << 40),
                &cfg,
                1_500
            ),
            None
        );
        assert_eq!(
            roll_reason(&active(10, None), &incoming(1, 101, -1), &cfg, 1_501),
            Some(RollReason::SegmentMs)
        );
        let never = LogConfig {
            segment_ms: u64::MAX,
            ..cfg
        };
        assert!(!time_roll_due(
            &active(10, Some(0)),
            i64::MAX,
            i64::MAX,
            never.segment_ms
        ));
    }

    fn seg(base: i64, next: i64, size: u64, ts: i64) -> SegmentSummary {
        SegmentSummary {
            base_offset: base,
            next_offset: next,
            size_bytes: size,
            largest_timestamp: ts,
        }
    }

    #[test]
    fn retention_by_time_keeps_active_and_stops_at_first_young_segment() {
        let segs = [
            seg(0, 10, 100, 1_000),
            seg(10, 20, 100, 5_000),
            seg(20, 30, 100, 2_000),
            seg(30, 35, 50, 0),
        ];
        let cfg = LogConfig {
            retention_ms: 1_000,
            ..LogConfig::default()
        };
        assert_eq!(retention_plan(&segs, &cfg, 0, 2_000), 0);
        assert_eq!(retention_plan(&segs, &cfg, 0, 2_001), 1);
        // The third one is old enough but the second is not: oldest first, contiguous.
        assert_eq!(retention_plan(&segs, &cfg, 0, 3_500), 1);
        assert_eq!(retention_plan(&segs, &cfg, 0, 10_000), 3);
        let infinite = LogConfig {
            retention_ms: -1,
            ..cfg
        };
        assert_eq!(retention_plan(&segs, &infinite, 0, i64::MAX), 0);
    }

    #[test]
    fn retention_by_size_and_by_log_start() {
        let segs = [
            seg(0, 10, 100, 0),
            seg(10, 20, 100, 0),
            seg(20, 30, 100, 0),
            seg(30, 35, 50, 0),
        ];
        let cfg = LogConfig {
            retention_ms: -1,
            retention_bytes: 150,
            ..LogConfig::default()
        };
        // 350 bytes, keep >= 150: deleting 100 + 100 leaves 150.
        assert_eq!(retention_plan(&segs, &cfg, 0, 0), 2);
        let cfg = LogConfig {
            retention_bytes: 151,
            ..cfg
        };
        assert_eq!(retention_plan(&segs, &cfg, 0, 0), 1);
        let cfg = LogConfig {
            retention_bytes: 0,
            ..cfg
        };
        assert_eq!(retention_plan(&segs, &cfg, 0, 0), 3);
        let cfg = LogConfig {
            retention_bytes: -1,
            ..cfg
        };
        assert_eq!(retention_plan(&segs, &cfg, 0, 0), 0);
        assert_eq!(retention_plan(&segs, &cfg, 19, 0), 1);
        assert_eq!(retention_plan(&segs, &cfg, 20, 0), 2);
        assert_eq!(retention_plan(&segs, &cfg, 35, 0), 3);
        assert_eq!(retention_plan(&segs[..1], &cfg, 35, 0), 0);
        assert_eq!(retention_plan(&[], &cfg, 35, 0), 0);
    }

    #[test]
    fn flush_rules() {
        let never = LogConfig::default();
        assert!(!flush_due(1 << 40, 0, i64::MAX, &never));
        let by_count = LogConfig {
            flush_messages: 3,
            ..never
        };
        assert!(!flush_due(2, 0, 0, &by_count));
        assert!(flush_due(3, 0, 0, &by_count));
        assert!(!flush_due(0, 0, 0, &by_count));
        let by_time = LogConfig {
            flush_ms: 100,
            ..never
        };
        assert!(!flush_due(1, 1_000, 1_099, &by_time));
        assert!(flush_due(1, 1_000, 1_100, &by_time));
        assert!(!flush_due(0, 1_000, 5_000, &by_time));
    }

    #[test]
    fn truncation_rules() {
        assert_eq!(full_truncation_start(50, 40, Some(45)), None);
        assert_eq!(full_truncation_start(50, 40, Some(40)), None);
        assert_eq!(full_truncation_start(50, 40, Some(38)), Some(40));
        assert_eq!(full_truncation_start(30, 40, None), Some(30));
    }
}
