//! What a run shows a person: the live progress line, the result table, the JSON result file
//! and the two SVG plots, all from one [`Outcome`].

use crate::cli::{human_count, KeyDist, Mode, Options};
use crate::stats::{LatencySummary, SeriesPoint, Totals};
use crate::svg;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// One direction (produce or consume) of a finished run.
#[derive(Debug, Clone)]
pub struct Side {
    pub totals: Totals,
    /// Length of the measured window (after warm-up, up to the last counted record).
    pub seconds: f64,
    pub latency: Option<LatencySummary>,
}

impl Side {
    pub fn records_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.totals.measured_records as f64 / self.seconds
        } else {
            0.0
        }
    }
    pub fn mb_per_s(&self) -> f64 {
        crate::stats::mb_per_s(self.totals.measured_bytes, self.seconds)
    }
}

/// `--transactional`: committed and aborted transactions and the EndTxn(commit) round trips
/// (of the measured window).
#[derive(Debug, Clone)]
pub struct Transactions {
    pub committed: u64,
    pub aborted: u64,
    pub commit_latency: Option<LatencySummary>,
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub options: Options,
    pub started_unix_s: u64,
    pub partitions: i32,
    /// API versions used, by name.
    pub versions: BTreeMap<String, i16>,
    pub pool_bytes: usize,
    pub elapsed_s: f64,
    pub produce: Option<Side>,
    pub transactions: Option<Transactions>,
    pub consume: Option<Side>,
    pub series: Vec<SeriesPoint>,
    /// Set when the broker went away mid-run; the numbers are what was gathered until then.
    pub failure: Option<String>,
    pub notes: BTreeMap<String, u64>,
}

pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2024-05-01T12:34:56Z` from Unix seconds (proleptic Gregorian, UTC).
pub fn iso8601(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The live progress line on stderr: rewritten in place on a terminal, one line per interval
/// otherwise (so logs stay readable).
pub struct ProgressLine {
    quiet: bool,
    tty: bool,
    shown: bool,
}

impl ProgressLine {
    pub fn new(quiet: bool) -> ProgressLine {
        ProgressLine {
            quiet,
            tty: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    pub fn show(&mut self, o: &Options, p: &SeriesPoint, errors: u64, warming_up: bool) {
        if self.quiet {
            return;
        }
        let line = progress_text(o, p, errors, warming_up);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.shown = true;
    }

    pub fn finish(&mut self) {
        if self.tty && self.shown && !self.quiet {
            eprintln!();
        }
    }
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn progress_text(o: &Options, p: &SeriesPoint, errors: u64, warming_up: bool) -> String {
    let mut s = format!(
        "[{:>6.1}s]{}",
        p.t_s,
        if warming_up { " warm-up" } else { "" }
    );
    if o.mode.produces() {
        s.push_str(&format!(
            " produce {:>7} rec/s {:>7.1} MB/s p99 {} ms",
            human_count(p.produce_rps),
            p.produce_mbps,
            ms(p.produce_p99_ms)
        ));
    }
    if o.mode.consumes() {
        s.push_str(&format!(
            " | consume {:>7} rec/s {:>7.1} MB/s",
            human_count(p.consume_rps),
            p.consume_mbps
        ));
        if o.mode == Mode::EndToEnd {
            s.push_str(&format!(" e2e p99 {} ms", ms(p.e2e_p99_ms)));
        }
    }
    if errors > 0 {
        s.push_str(&format!(" | errors {errors}"));
    }
    s
}

fn latency_json(l: &Option<LatencySummary>) -> Value {
    match l {
        None => Value::Null,
        Some(l) => {
            let mut m = serde_json::Map::new();
            m.insert("count".into(), json!(l.count));
            m.insert("mean".into(), json!(round3(l.mean_ms)));
            for (p, v) in &l.percentiles {
                m.insert(percentile_key(*p), json!(round3(*v)));
            }
            Value::Object(m)
        }
    }
}

fn percentile_key(p: f64) -> String {
    if p >= 100.0 {
        "max".into()
    } else {
        format!("p{p}")
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(round3(v))
    } else {
        Value::Null
    }
}

fn side_json(s: &Option<Side>, latency_name: &str) -> Value {
    match s {
        None => Value::Null,
        Some(s) => json!({
            "records": s.totals.measured_records,
            "bytes": s.totals.measured_bytes,
            "records_all": s.totals.records,
            "bytes_all": s.totals.bytes,
            "seconds": round3(s.seconds),
            "records_per_s": round3(s.records_per_s()),
            "mb_per_s": round3(s.mb_per_s()),
            "error_responses": s.totals.errors,
            "error_records": s.totals.error_records,
            latency_name: latency_json(&s.latency),
        }),
    }
}

impl Outcome {
    pub fn status(&self) -> &'static str {
        if self.failure.is_some() {
            "broker_lost"
        } else {
            "ok"
        }
    }

    pub fn to_json(&self) -> Value {
        let o = &self.options;
        let keys = match o.keys {
            KeyDist::None => json!("none"),
            KeyDist::Uniform { n } => json!({"uniform": n}),
            KeyDist::Zipf { n, s } => json!({"zipf": n, "exponent": s}),
        };
        json!({
            "tool": "shardlog-bench",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "started_at": iso8601(self.started_unix_s),
            "label": o.label(),
            "workload": o.describe(),
            "status": self.status(),
            "failure": self.failure,
            "notes": self.notes,
            "params": {
                "mode": o.mode.name(),
                "bootstrap": o.bootstrap,
                "topic": o.topic,
                "partitions": self.partitions,
                "replication_factor": o.replication_factor,
                "record_size": o.record_size,
                "key_bytes": o.key_len(),
                "keys": keys,
                "payload": format!("{:?}", o.payload).to_lowercase(),
                "batch_bytes": o.batch_bytes,
                "records_per_batch": o.records_per_batch(),
                "linger_ms": o.linger.as_secs_f64() * 1e3,
                "acks": o.acks.name(),
                "compression": o.compression.name(),
                "producers": o.producers,
                "connections": o.connections,
                "max_in_flight": o.max_in_flight,
                "consumers": o.consumers,
                "group": o.group,
                "from": if o.from == crate::cli::StartFrom::Earliest { "earliest" } else { "latest" },
                "rate": o.rate,
                "duration_s": o.duration.map(|d| d.as_secs_f64()),
                "messages": o.messages,
                "warmup_s": o.warmup.as_secs_f64(),
                "interval_s": o.interval.as_secs_f64(),
                "fetch_max_bytes": o.fetch_max_bytes,
                "partition_max_bytes": o.partition_max_bytes,
                "fetch_max_wait_ms": o.fetch_max_wait.as_secs_f64() * 1e3,
            },
            "api_versions": self.versions,
            "payload_pool_bytes": self.pool_bytes,
            "elapsed_s": round3(self.elapsed_s),
            "units": {
                "latency": "ms",
                "mb_per_s": "10^6 bytes of record batches per second (as sent or fetched)",
                "latency_origin": if o.rate.is_some() {
                    "intended send time (open loop, corrected for coordinated omission)"
                } else {
                    "batch build time (closed loop)"
                },
            },
            "produce": side_json(&self.produce, "ack_latency_ms"),
            "transactions": self.transactions.as_ref().map(|t| json!({
                "committed": t.committed,
                "aborted": t.aborted,
                "interval_ms": o.transaction_interval.as_secs_f64() * 1e3,
                "commit_latency_ms": latency_json(&t.commit_latency),
            })),
            "consume": side_json(&self.consume, "e2e_latency_ms"),
            "series": self.series.iter().map(|p| json!({
                "t_s": round3(p.t_s),
                "produce_records_per_s": round3(p.produce_rps),
                "produce_mb_per_s": round3(p.produce_mbps),
                "consume_records_per_s": round3(p.consume_rps),
                "consume_mb_per_s": round3(p.consume_mbps),
                "produce_p99_ms": finite(p.produce_p99_ms),
                "e2e_p99_ms": finite(p.e2e_p99_ms),
            })).collect::<Vec<_>>(),
            "latency_curves_ms": {
                "produce_ack": self.produce.as_ref().and_then(|s| s.latency.as_ref()).map(|l| &l.curve),
                "end_to_end": self.consume.as_ref().and_then(|s| s.latency.as_ref()).map(|l| &l.curve),
            },
        })
    }

    /// The result table for stdout.
    pub fn table(&self) -> String {
        let o = &self.options;
        let mut s = String::new();
        s.push_str(&format!(
            "\nshardlog-bench {} against {}\n",
            o.describe(),
            o.bootstrap.join(",")
        ));
        if let Some(f) = &self.failure {
            s.push_str(&format!(
                "INTERRUPTED: {f}\n  (results below are what was gathered before that)\n"
            ));
        }
        let window = self
            .produce
            .as_ref()
            .or(self.consume.as_ref())
            .map(|x| x.seconds)
            .unwrap_or(0.0);
        s.push_str(&format!(
            "measured {:.1} s{}\n\n",
            window,
            if o.warmup.is_zero() {
                String::new()
            } else {
                format!(" after {:.1} s warm-up", o.warmup.as_secs_f64())
            }
        ));
        s.push_str(&format!(
            "{:<10} {:>14} {:>12} {:>10} {:>8}\n",
            "", "records", "records/s", "MB/s", "errors"
        ));
        for (name, side) in [("produce", &self.produce), ("consume", &self.consume)] {
            if let Some(x) = side {
                s.push_str(&format!(
                    "{:<10} {:>14} {:>12} {:>10.1} {:>8}\n",
                    name,
                    x.totals.measured_records,
                    human_count(x.records_per_s()),
                    x.mb_per_s(),
                    x.totals.errors
                ));
            }
        }
        if let Some(t) = &self.transactions {
            s.push_str(&format!(
                "{:<10} {:>14} committed, {} aborted (every {} ms)\n",
                "txns",
                t.committed,
                t.aborted,
                o.transaction_interval.as_millis()
            ));
        }
        let lat: Vec<(&str, &LatencySummary)> = [
            (
                "produce ack",
                self.produce.as_ref().and_then(|x| x.latency.as_ref()),
            ),
            (
                "commit",
                self.transactions
                    .as_ref()
                    .and_then(|t| t.commit_latency.as_ref()),
            ),
            (
                "end-to-end",
                self.consume.as_ref().and_then(|x| x.latency.as_ref()),
            ),
        ]
        .into_iter()
        .filter_map(|(n, l)| l.map(|l| (n, l)))
        .collect();
        if !lat.is_empty() {
            s.push_str(&format!(
                "\n{:<14} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                "latency (ms)", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"
            ));
            for (name, l) in lat {
                s.push_str(&format!("{name:<14}"));
                for (_, v) in &l.percentiles {
                    s.push_str(&format!(" {:>8}", ms(*v)));
                }
                s.push_str(&format!(" {:>8}\n", ms(l.mean_ms)));
            }
            if o.rate.is_some() {
                s.push_str("(latency from each record's intended send time: open loop)\n");
            }
        }
        if !self.notes.is_empty() {
            s.push_str("\nbroker errors and events:\n");
            for (k, v) in &self.notes {
                s.push_str(&format!("  {v:>8} x {k}\n"));
            }
        }
        s
    }

    fn caption(&self) -> Vec<String> {
        let o = &self.options;
        let mut lines = vec![o.describe()];
        let mut l2 = format!(
            "broker {} | topic {} | {} UTC | shardlog-bench {}",
            o.bootstrap.join(","),
            o.topic,
            iso8601(self.started_unix_s)
                .replace('T', " ")
                .trim_end_matches('Z'),
            env!("CARGO_PKG_VERSION")
        );
        if let Some(f) = &self.failure {
            l2.push_str(&format!(" | INTERRUPTED: {f}"));
        }
        lines.push(l2);
        let mut l3 = String::new();
        if let Some(p) = &self.produce {
            l3.push_str(&format!(
                "produce {} rec/s, {:.1} MB/s",
                human_count(p.records_per_s()),
                p.mb_per_s()
            ));
        }
        if let Some(c) = &self.consume {
            if !l3.is_empty() {
                l3.push_str(" | ");
            }
            l3.push_str(&format!(
                "consume {} rec/s, {:.1} MB/s",
                human_count(c.records_per_s()),
                c.mb_per_s()
            ));
        }
        if o.rate.is_some() {
            l3.push_str(" | latency from intended send time (open loop)");
        }
        lines.push(l3);
        lines
    }

    pub fn latency_svg(&self) -> Option<String> {
        let mut curves = Vec::new();
        let mut samples = 0;
        if let Some(l) = self.produce.as_ref().and_then(|x| x.latency.as_ref()) {
            curves.push(svg::LatencyCurve {
                name: "produce acknowledgement".into(),
                curve: &l.curve,
            });
            samples = samples.max(l.count);
        }
        if let Some(l) = self.consume.as_ref().and_then(|x| x.latency.as_ref()) {
            curves.push(svg::LatencyCurve {
                name: "end-to-end".into(),
                curve: &l.curve,
            });
            samples = samples.max(l.count);
        }
        if curves.is_empty() {
            return None;
        }
        Some(svg::latency_plot(
            "Latency by percentile",
            &self.caption(),
            &curves,
            samples,
        ))
    }

    pub fn throughput_svg(&self) -> String {
        let prod: Vec<(f64, f64)> = self
            .series
            .iter()
            .map(|p| (p.t_s, p.produce_mbps))
            .collect();
        let cons: Vec<(f64, f64)> = self
            .series
            .iter()
            .map(|p| (p.t_s, p.consume_mbps))
            .collect();
        let mut series = Vec::new();
        if self.produce.is_some() {
            series.push(svg::RateSeries {
                name: "produce (acknowledged)".into(),
                points: &prod,
            });
        }
        if self.consume.is_some() {
            series.push(svg::RateSeries {
                name: "consume".into(),
                points: &cons,
            });
        }
        let side = self.produce.as_ref().or(self.consume.as_ref());
        let bytes_per_record = side
            .filter(|s| s.totals.records > 0)
            .map(|s| s.totals.bytes as f64 / s.totals.records as f64)
            .unwrap_or(0.0);
        svg::throughput_plot(
            "Throughput over time",
            &self.caption(),
            &series,
            self.options.warmup.as_secs_f64(),
            bytes_per_record,
        )
    }

    /// Writes JSON and SVG files; returns their paths.
    pub fn write_files(&self) -> Result<Vec<PathBuf>> {
        let dir = PathBuf::from(&self.options.out_dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let label = self.options.label();
        let mut out = Vec::new();
        let json_path = dir.join(format!("{label}.json"));
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(&json_path, text + "\n")
            .with_context(|| format!("writing {}", json_path.display()))?;
        out.push(json_path);
        if let Some(svg) = self.latency_svg() {
            svg::check_well_formed(&svg).map_err(|e| anyhow::anyhow!("latency plot: {e}"))?;
            let p = dir.join(format!("{label}-latency.svg"));
            std::fs::write(&p, svg).with_context(|| format!("writing {}", p.display()))?;
            out.push(p);
        }
        let svg = self.throughput_svg();
        svg::check_well_formed(&svg).map_err(|e| anyhow::anyhow!("throughput plot: {e}"))?;
        let p = dir.join(format!("{label}-throughput.svg"));
        std::fs::write(&p, svg).with_context(|| format!("writing {}", p.display()))?;
        out.push(p);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Options;
    use crate::stats::{new_histogram, summarize};

    fn outcome() -> Outcome {
        let mut o = Options::defaults(Mode::EndToEnd);
        o.rate = Some(1000.0);
        o.out_dir = std::env::temp_dir()
            .join(format!("shardlog-bench-report-{}", std::process::id()))
            .display()
            .to_string();
        let mut h = new_histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let lat = summarize(&h);
        let totals = Totals {
            records: 10_000,
            bytes: 10_240_000,
            measured_records: 9_000,
            measured_bytes: 9_216_000,
            ..Totals::default()
        };
        Outcome {
            options: o,
            started_unix_s: 1_700_000_000,
            partitions: 1,
            versions: BTreeMap::from([("produce".to_string(), 9)]),
            pool_bytes: 0,
            elapsed_s: 10.0,
            produce: Some(Side {
                totals,
                seconds: 9.0,
                latency: lat.clone(),
            }),
            transactions: None,
            consume: Some(Side {
                totals,
                seconds: 9.0,
                latency: lat,
            }),
            series: (1..=10)
                .map(|t| SeriesPoint {
                    t_s: t as f64,
                    produce_rps: 1000.0,
                    produce_mbps: 1.0,
                    consume_rps: 1000.0,
                    consume_mbps: 1.0,
                    produce_p99_ms: 0.99,
                    e2e_p99_ms: f64::NAN,
                })
                .collect(),
            failure: Some("broker 127.0.0.1:1 closed the connection".into()),
            notes: BTreeMap::from([("produce: NOT_LEADER_OR_FOLLOWER (6)".to_string(), 2)]),
        }
    }

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn json_table_and_files() {
        let out = outcome();
        let j = out.to_json();
        assert_eq!(j["status"], "broker_lost");
        assert_eq!(j["produce"]["records"], 9000);
        assert_eq!(j["produce"]["records_per_s"], 1000.0);
        assert_eq!(j["produce"]["mb_per_s"], 1.024);
        let lat = &j["consume"]["e2e_latency_ms"];
        for k in [
            "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "count",
        ] {
            assert!(!lat[k].is_null(), "missing {k}");
        }
        assert_eq!(j["series"].as_array().unwrap().len(), 10);
        assert!(j["series"][0]["e2e_p99_ms"].is_null(), "NaN becomes null");
        let t = out.table();
        assert!(t.contains("INTERRUPTED"));
        assert!(t.contains("p99.99"));
        assert!(t.contains("end-to-end"));
        assert!(t.contains("NOT_LEADER_OR_FOLLOWER"));
        let files = out.write_files().unwrap();
        assert_eq!(files.len(), 3);
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            if f.extension().unwrap() == "svg" {
                svg::check_well_formed(&text).unwrap();
                assert!(text.contains("INTERRUPTED"));
            } else {
                serde_json::from_str::<Value>(&text).unwrap();
            }
        }
        std::fs::remove_dir_all(&out.options.out_dir).unwrap();
    }

    #[test]
    fn progress_line_mentions_what_runs() {
        let o = Options::defaults(Mode::EndToEnd);
        let p = SeriesPoint {
            t_s: 3.0,
            produce_rps: 150_000.0,
            produce_mbps: 153.6,
            consume_rps: 149_000.0,
            consume_mbps: 152.0,
            produce_p99_ms: 2.5,
            e2e_p99_ms: 4.0,
        };
        let s = progress_text(&o, &p, 0, true);
        assert!(
            s.contains("warm-up") && s.contains("150.0k") && s.contains("e2e p99 4.00 ms"),
            "{s}"
        );
    }

    #[test]
    fn transactions_are_reported_next_to_produce() {
        let mut out = outcome();
        out.options.transactional = true;
        let mut h = new_histogram();
        h.record(2_000).unwrap();
        out.transactions = Some(Transactions {
            committed: 42,
            aborted: 1,
            commit_latency: summarize(&h),
        });
        let table = out.table();
        assert!(
            table.contains("txns                   42 committed, 1 aborted (every 100 ms)"),
            "{table}"
        );
        assert!(table.contains("\ncommit         "), "{table}");
        let v = out.to_json();
        assert_eq!(v["transactions"]["committed"], 42);
        assert_eq!(v["transactions"]["aborted"], 1);
        assert_eq!(v["transactions"]["commit_latency_ms"]["count"], 1);
        assert_eq!(outcome().to_json()["transactions"], Value::Null);
    }
}
