//! Measurements: latency histograms, counters, and the time series the sampler builds.
//!
//! Latencies are recorded in microseconds in HdrHistogram (3 significant digits, up to one
//! hour; larger values saturate rather than fail). Each connection owns a [`Recorder`] behind a
//! mutex that only its reader thread and, once per interval, the sampler take, so recording
//! never contends in practice. Counters are atomics read by the sampler.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Highest trackable latency: one hour in µs.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
/// The percentiles every report shows.
pub const PERCENTILES: [f64; 6] = [50.0, 90.0, 99.0, 99.9, 99.99, 100.0];

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// Latency histograms of one connection: the whole measured run and the current interval.
pub struct Latencies {
    pub total: Histogram<u64>,
    pub interval: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            total: new_histogram(),
            interval: new_histogram(),
        }
    }
}

impl Latencies {
    /// Records `count` samples of `latency_ns` (rounded up to whole µs). `measured` is false
    /// during warm-up: the interval view (progress line) still sees it, the totals do not.
    pub fn record(&mut self, latency_ns: u64, count: u64, measured: bool) {
        let us = latency_ns.div_ceil(1000).max(1);
        self.interval.saturating_record_n(us, count);
        if measured {
            self.total.saturating_record_n(us, count);
        }
    }
}

/// Counters and latencies of one producer or consumer connection.
#[derive(Default)]
pub struct Recorder {
    pub records: AtomicU64,
    /// Record batch bytes as sent or fetched (what crosses the wire and lands on disk).
    pub bytes: AtomicU64,
    /// Records and batch bytes counted after warm-up only.
    pub measured_records: AtomicU64,
    pub measured_bytes: AtomicU64,
    /// Requests answered with an error code, and records in them.
    pub errors: AtomicU64,
    pub error_records: AtomicU64,
    /// Kafka error code of the last error, for the report.
    pub last_error_code: AtomicU64,
    /// Time of the last counted record (ns since the Unix epoch).
    pub last_ns: AtomicU64,
    pub latency: Mutex<Latencies>,
    /// `--transactional`: transactions committed and aborted, and EndTxn(commit) round trips.
    pub txn_commits: AtomicU64,
    pub txn_aborts: AtomicU64,
    pub commit_latency: Mutex<Latencies>,
}

impl Recorder {
    pub fn count(&self, records: u64, bytes: u64, measured: bool, now_ns: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if measured {
            self.measured_records.fetch_add(records, Ordering::Relaxed);
            self.measured_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        self.last_ns.fetch_max(now_ns, Ordering::Relaxed);
    }

    pub fn error(&self, code: i16, records: u64) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.error_records.fetch_add(records, Ordering::Relaxed);
        self.last_error_code
            .store(code as u16 as u64, Ordering::Relaxed);
    }
}

/// Sums of several recorders at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub records: u64,
    pub bytes: u64,
    pub measured_records: u64,
    pub measured_bytes: u64,
    pub errors: u64,
    pub error_records: u64,
    pub last_ns: u64,
}

pub fn totals(recorders: &[std::sync::Arc<Recorder>]) -> Totals {
    let mut t = Totals::default();
    for r in recorders {
        t.records += r.records.load(Ordering::Relaxed);
        t.bytes += r.bytes.load(Ordering::Relaxed);
        t.measured_records += r.measured_records.load(Ordering::Relaxed);
        t.measured_bytes += r.measured_bytes.load(Ordering::Relaxed);
        t.errors += r.errors.load(Ordering::Relaxed);
        t.error_records += r.error_records.load(Ordering::Relaxed);
        t.last_ns = t.last_ns.max(r.last_ns.load(Ordering::Relaxed));
    }
    t
}

/// Merges and resets the interval histograms; returns the merged interval view.
pub fn take_interval(recorders: &[std::sync::Arc<Recorder>]) -> Histogram<u64> {
    let mut h = new_histogram();
    for r in recorders {
        let mut l = r.latency.lock().expect("latency lock");
        h.add(&l.interval).expect("same bounds");
        l.interval.reset();
    }
    h
}

pub fn merge_total(recorders: &[std::sync::Arc<Recorder>]) -> Histogram<u64> {
    let mut h = new_histogram();
    for r in recorders {
        let l = r.latency.lock().expect("latency lock");
        h.add(&l.total).expect("same bounds");
    }
    h
}

/// A latency distribution summarised for reports (all values in milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    /// (percentile, latency ms) for each of [`PERCENTILES`].
    pub percentiles: Vec<(f64, f64)>,
    /// The full distribution for the plot: (percentile, latency ms), dense at the tail.
    pub curve: Vec<(f64, f64)>,
}

pub fn summarize(h: &Histogram<u64>) -> Option<LatencySummary> {
    if h.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    let percentiles = PERCENTILES
        .iter()
        .map(|&p| {
            let v = if p >= 100.0 {
                h.max()
            } else {
                h.value_at_quantile(p / 100.0)
            };
            (p, ms(v))
        })
        .collect();
    // HdrHistogram's percentile iterator halves the distance to 100 % at each step, which
    // gives the evenly spaced points a log-scaled "1 / (1 - p)" axis needs.
    let mut curve: Vec<(f64, f64)> = h
        .iter_quantiles(4)
        .map(|v| (v.quantile_iterated_to() * 100.0, ms(v.value_iterated_to())))
        .filter(|(p, _)| *p < 100.0)
        .collect();
    curve.dedup_by(|a, b| a.0 == b.0);
    curve.push((100.0, ms(h.max())));
    Some(LatencySummary {
        count: h.len(),
        mean_ms: h.mean() / 1000.0,
        percentiles,
        curve,
    })
}

/// One point of the throughput time series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeriesPoint {
    /// Seconds since the run started (end of the interval).
    pub t_s: f64,
    pub produce_rps: f64,
    pub produce_mbps: f64,
    pub consume_rps: f64,
    pub consume_mbps: f64,
    /// p99 of the interval, ms (NaN when nothing was recorded).
    pub produce_p99_ms: f64,
    pub e2e_p99_ms: f64,
}

/// MB/s (10^6 bytes per second) as every report uses it.
pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        0.0
    } else {
        bytes as f64 / 1e6 / seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latencies::default();
        // 1..=10_000 µs, once each.
        for us in 1..=10_000u64 {
            l.record(us * 1000, 1, true);
        }
        let s = summarize(&l.total).unwrap();
        assert_eq!(s.count, 10_000);
        let get = |p: f64| s.percentiles.iter().find(|x| x.0 == p).unwrap().1;
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.01;
        assert!(close(get(50.0), 5.0), "{}", get(50.0));
        assert!(close(get(90.0), 9.0));
        assert!(close(get(99.0), 9.9));
        assert!(close(get(99.9), 9.99));
        assert!(close(get(100.0), 10.0));
        assert!(close(s.mean_ms, 5.0));
        // The curve rises monotonically and ends at the max.
        assert!(s
            .curve
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(s.curve.last().unwrap().0, 100.0);
    }

    #[test]
    fn warmup_samples_stay_out_of_totals() {
        let mut l = Latencies::default();
        l.record(5_000_000, 3, false);
        l.record(1_000_000, 2, true);
        assert_eq!(l.total.len(), 2);
        assert_eq!(l.interval.len(), 5);
        assert!(summarize(&new_histogram()).is_none());
    }

    #[test]
    fn sub_microsecond_and_huge_values_are_kept() {
        let mut l = Latencies::default();
        l.record(10, 1, true);
        l.record(u64::MAX / 2, 1, true);
        assert_eq!(l.total.len(), 2);
        assert_eq!(l.total.min(), 1);
    }

    #[test]
    fn recorder_totals() {
        let a = std::sync::Arc::new(Recorder::default());
        let b = std::sync::Arc::new(Recorder::default());
        a.count(10, 1000, false, 5);
        b.count(5, 500, true, 9);
        b.error(6, 3);
        let t = totals(&[a, b]);
        assert_eq!(
            (t.records, t.bytes, t.measured_records, t.measured_bytes),
            (15, 1500, 5, 500)
        );
        assert_eq!((t.errors, t.error_records, t.last_ns), (1, 3, 9));
        assert_eq!(mb_per_s(2_000_000, 2.0), 1.0);
    }
}
