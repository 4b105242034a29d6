//! Process-wide counts of rare storage events, for the broker's metrics. Relaxed atomics: they
//! are statistics, bumped at most once per roll or recovery, never on the append path.

use std::sync::atomic::AtomicU64;

/// Segments rolled (by size, age or an explicit roll).
pub static SEGMENT_ROLLS: AtomicU64 = AtomicU64::new(0);
/// Logs cut during recovery at a damaged batch or a gap between segments.
pub static RECOVERY_TRUNCATIONS: AtomicU64 = AtomicU64::new(0);

/// Cleaned segments swapped in by the log cleaner.
pub static CLEANER_SWAPS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}
