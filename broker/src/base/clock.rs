//! The broker's two clocks, and the only places that read them.
//!
//! - `now_ms`: wall-clock milliseconds since the Unix epoch, for what Kafka stores or shows
//!   (record and log-append timestamps, expiry of committed offsets, controller epochs' times).
//! - `mono_ms` / `mono_instant`: a monotonic clock counted from the first use in the process,
//!   for deadlines that must not move when the wall clock is stepped (leadership leases).

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Monotonic milliseconds since this process first read the monotonic clock.
pub fn mono_ms() -> u64 {
    origin().elapsed().as_millis() as u64
}

/// The `Instant` that a `mono_ms` value stands for.
pub fn mono_instant(ms: u64) -> Instant {
    origin() + Duration::from_millis(ms)
}

/// How far `at` lies after the monotonic origin, in milliseconds (0 if before it).
pub fn mono_ms_of(at: Instant) -> u64 {
    at.saturating_duration_since(origin()).as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_never_goes_back_and_maps_to_instants() {
        let a = mono_ms();
        let b = mono_ms();
        assert!(b >= a);
        let at = mono_instant(a);
        assert_eq!(mono_ms_of(at), a);
        assert!(
            now_ms() > 1_600_000_000_000,
            "wall clock is in this century"
        );
    }
}
