//! Time: the shared epoch clock and the open-loop send schedule.
//!
//! Every timestamp the harness writes or compares is nanoseconds since the Unix epoch, read as
//! one wall-clock sample at start plus a monotonic `Instant` since, so values stay monotonic
//! within a process and comparable between producer and consumer processes on one host.
//!
//! With a target rate, record `i` of a connection has an *intended* send time fixed in advance
//! (`start + i / rate`). Latency is measured from that intended time, so a stalled broker that
//! delays sending shows up in the percentiles instead of silently lowering the offered load
//! (coordinated omission). Batching follows the schedule too: a batch closes when it is full or
//! when `linger` has passed since its first record's intended time, like a Kafka producer.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, monotonic within the process.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_unix_ns: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let origin = Instant::now();
        let origin_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Clock {
            origin,
            origin_unix_ns,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.origin_unix_ns + self.origin.elapsed().as_nanos() as u64
    }

    /// Sleeps until `deadline_ns`; spins for the last 50 µs because `sleep` overshoots by tens
    /// of microseconds, which would bunch sends at high rates.
    pub fn sleep_until(&self, deadline_ns: u64) {
        loop {
            let now = self.now_ns();
            if now >= deadline_ns {
                return;
            }
            let left = deadline_ns - now;
            if left > 200_000 {
                std::thread::sleep(Duration::from_nanos(left - 100_000));
            } else if left > 50_000 {
                std::thread::sleep(Duration::from_micros(20));
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// The next batch a connection should send: records `first..first + count`, not before `send_at_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextBatch {
    pub first: u64,
    pub count: usize,
    pub send_at_ns: u64,
}

/// Intended send times of one connection's records.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start_ns: u64,
    /// Records per second on this connection; `None` is closed loop (send when a slot frees).
    rate: Option<f64>,
    linger_ns: u64,
    batch_records: usize,
}

impl Schedule {
    pub fn new(
        start_ns: u64,
        rate: Option<f64>,
        linger: Duration,
        batch_records: usize,
    ) -> Schedule {
        assert!(batch_records >= 1);
        if let Some(r) = rate {
            assert!(r > 0.0 && r.is_finite());
        }
        Schedule {
            start_ns,
            rate,
            linger_ns: linger.as_nanos() as u64,
            batch_records,
        }
    }

    pub fn is_open_loop(&self) -> bool {
        self.rate.is_some()
    }

    /// Intended send time of record `i`. Closed loop has no schedule: `None`.
    pub fn intended_ns(&self, i: u64) -> Option<u64> {
        let r = self.rate?;
        // f64 keeps 53 bits: exact to the nanosecond for runs far longer than any benchmark.
        Some(self.start_ns + (i as f64 * 1e9 / r) as u64)
    }

    /// Records whose intended time is at or before `t_ns` (the first is record 0).
    fn due_by(&self, t_ns: u64) -> u64 {
        let r = self.rate.expect("open loop");
        if t_ns < self.start_ns {
            return 0;
        }
        let elapsed = (t_ns - self.start_ns) as f64;
        let mut n = (elapsed * r / 1e9).floor() as u64 + 1;
        // Float rounding may be off by one at an exact boundary; settle it with intended_ns.
        while n > 0 && self.intended_ns(n - 1).is_some_and(|t| t > t_ns) {
            n -= 1;
        }
        while self.intended_ns(n).is_some_and(|t| t <= t_ns) {
            n += 1;
        }
        n
    }

    /// Records intended strictly before `t_ns` (open loop; `None` for closed loop).
    pub fn records_before(&self, t_ns: u64) -> Option<u64> {
        self.rate?;
        Some(if t_ns == 0 { 0 } else { self.due_by(t_ns - 1) })
    }

    /// The batch starting at record `first`, given the time now and how many records remain
    /// (`remaining >= 1`). Closed loop: a full batch, now. Open loop: records accumulate from
    /// the first's intended time until the batch is full or linger expires; when the sender is
    /// behind, every record already due goes into the batch (up to full) and it is sent at once.
    pub fn next_batch(&self, first: u64, now_ns: u64, remaining: u64) -> NextBatch {
        let cap = (self.batch_records as u64).min(remaining.max(1));
        let Some(t_first) = self.intended_ns(first) else {
            return NextBatch {
                first,
                count: cap as usize,
                send_at_ns: now_ns,
            };
        };
        let deadline = t_first + self.linger_ns;
        let horizon = now_ns.max(deadline);
        let due = self.due_by(horizon).saturating_sub(first).max(1);
        let count = due.min(cap);
        let send_at_ns = if count == cap {
            // Full: goes when its last record is due (or now if that has passed).
            self.intended_ns(first + count - 1)
                .expect("open loop")
                .min(deadline)
        } else {
            deadline
        };
        NextBatch {
            first,
            count: count as usize,
            send_at_ns: send_at_ns.max(t_first),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn intended_times_follow_the_rate() {
        let s = Schedule::new(1_000, Some(1000.0), Duration::ZERO, 1);
        assert_eq!(s.intended_ns(0), Some(1_000));
        assert_eq!(s.intended_ns(1), Some(1_000 + MS));
        assert_eq!(s.intended_ns(1000), Some(1_000 + 1000 * MS));
        let fractional = Schedule::new(0, Some(3.0), Duration::ZERO, 1);
        assert_eq!(fractional.intended_ns(1), Some(333_333_333));
        assert_eq!(fractional.intended_ns(3), Some(1_000_000_000));
        let closed = Schedule::new(0, None, Duration::ZERO, 4);
        assert_eq!(closed.intended_ns(5), None);
    }

    #[test]
    fn closed_loop_sends_full_batches_now() {
        let s = Schedule::new(0, None, Duration::from_millis(5), 100);
        let b = s.next_batch(300, 42, 1_000);
        assert_eq!(
            b,
            NextBatch {
                first: 300,
                count: 100,
                send_at_ns: 42
            }
        );
        assert_eq!(
            s.next_batch(0, 42, 7).count,
            7,
            "the last batch holds what remains"
        );
    }

    #[test]
    fn slow_rate_batches_close_on_linger() {
        // 1000 rec/s = one per ms; linger 5 ms; batches of up to 100 records.
        let s = Schedule::new(0, Some(1000.0), Duration::from_millis(5), 100);
        let b = s.next_batch(0, 0, u64::MAX);
        // Records 0..=5 are due by 5 ms (inclusive), so six go when linger expires.
        assert_eq!(
            b,
            NextBatch {
                first: 0,
                count: 6,
                send_at_ns: 5 * MS
            }
        );
        let b2 = s.next_batch(6, 5 * MS, u64::MAX);
        assert_eq!(
            b2,
            NextBatch {
                first: 6,
                count: 6,
                send_at_ns: 11 * MS
            }
        );
    }

    #[test]
    fn fast_rate_batches_close_when_full() {
        // 1M rec/s = one per µs; a 100-record batch fills in 99 µs, long before linger.
        let s = Schedule::new(0, Some(1e6), Duration::from_millis(5), 100);
        let b = s.next_batch(0, 0, u64::MAX);
        assert_eq!(
            b,
            NextBatch {
                first: 0,
                count: 100,
                send_at_ns: 99_000
            }
        );
    }

    #[test]
    fn a_late_sender_catches_up_without_hiding_the_delay() {
        let s = Schedule::new(0, Some(1000.0), Duration::from_millis(1), 10);
        // 50 ms behind: record 0 was due at 0; 51 records are due; the batch takes 10, now.
        let now = 50 * MS;
        let b = s.next_batch(0, now, u64::MAX);
        assert_eq!(b.count, 10);
        assert!(b.send_at_ns <= now);
        // The latency of record 0 is measured from its intended time, not from now.
        assert_eq!(s.intended_ns(b.first), Some(0));
    }

    #[test]
    fn zero_linger_sends_each_record_on_time() {
        let s = Schedule::new(0, Some(100.0), Duration::ZERO, 50);
        let b = s.next_batch(3, 0, u64::MAX);
        assert_eq!(
            b,
            NextBatch {
                first: 3,
                count: 1,
                send_at_ns: 30 * MS
            }
        );
    }

    #[test]
    fn records_before_the_end() {
        let s = Schedule::new(0, Some(1000.0), Duration::from_millis(5), 100);
        assert_eq!(s.records_before(0), Some(0));
        assert_eq!(s.records_before(1), Some(1));
        assert_eq!(
            s.records_before(1_000 * MS),
            Some(1000),
            "a 1 s run at 1000/s has 1000"
        );
        assert_eq!(
            Schedule::new(0, None, Duration::ZERO, 1).records_before(5),
            None
        );
    }

    #[test]
    fn remaining_caps_the_batch() {
        let s = Schedule::new(0, Some(1e6), Duration::from_millis(5), 100);
        let b = s.next_batch(0, 0, 3);
        assert_eq!(b.count, 3);
        assert_eq!(b.send_at_ns, 2_000);
    }
}
