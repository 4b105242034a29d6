//! The HTTP listener (`metrics.listen`) for Prometheus and health probes, on its own thread:
//!
//! - `GET /metrics`: Prometheus text exposition of every shard's report.
//! - `GET /v1/status/live`: 200 while the process is alive and every shard answers within
//!   `SHARD_ANSWER_MAX` (during start-up, 200 as long as the process runs: the start-up
//!   watchdog stops a stalled start), 503 otherwise.
//! - `GET /v1/status/ready`: 200 once every shard serves and, in cluster mode, the broker is
//!   registered, holds a valid ZooKeeper session and every shard applied the newest metadata.
//! - `GET /v1/partitions/<topic>`: JSON, the partitions of `<topic>` this broker holds with
//!   their offsets, size and the log cleaner's progress (what `shardlog-cli topic describe`
//!   shows for a compacted topic); 404 when it holds none.
//!
//! Bounded: requests larger than `METRICS_REQUEST_HEAD_MAX` or slower than `IO_TIMEOUT` are
//! dropped, and at most `METRICS_CONNECTIONS_MAX` are served at once. A shard is reached only by a message in
//! its inbox; this thread never touches shard state.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::base::limits::{METRICS_CONNECTIONS_MAX, METRICS_REQUEST_HEAD_MAX};
use crate::cluster::control_api::Lease;
use crate::config::BrokerConfig;
use crate::metrics::render::RenderContext;
use crate::metrics::{Scrape, ShardReport, STATUS};
use crate::shard::{Counters, ShardTask};

const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a scrape or probe waits for the shards' answers.
const SHARD_ANSWER_MAX: Duration = Duration::from_secs(5);

/// What the HTTP thread needs to reach the shards and the process-wide counters.
pub struct Endpoint {
    pub inboxes: Vec<flume::Sender<ShardTask>>,
    pub counters: Arc<Counters>,
    pub lease: Arc<Lease>,
    pub config: Arc<BrokerConfig>,
}

/// Binds the listener (before the shards start, so a port in use fails the start).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr} (metrics.listen): {e}"))
}

/// Serves `listener` on a thread of its own for the life of the process.
pub fn start(listener: TcpListener, endpoint: Endpoint) -> Result<(), String> {
    let endpoint = Arc::new(endpoint);
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if active.fetch_add(1, Ordering::AcqRel) >= METRICS_CONNECTIONS_MAX {
                    active.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                let endpoint = endpoint.clone();
                let active = active.clone();
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        let _ = serve(stream, &endpoint);
                        active.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    log::warn!("metrics: cannot start a connection thread");
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the metrics thread: {e}"))
}

fn serve(mut stream: TcpStream, endpoint: &Endpoint) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > METRICS_REQUEST_HEAD_MAX {
            return respond(
                &mut stream,
                431,
                "text/plain",
                "request header too large\n",
                false,
            );
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut stream, 405, "text/plain", "only GET and HEAD\n", false);
    }
    let path = target.split('?').next().unwrap_or("");
    let (status, kind, body) = route(path, endpoint);
    respond(&mut stream, status, kind, &body, head_only)
}

/// Answers one path: `(status, content type, body)`.
fn route(path: &str, endpoint: &Endpoint) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/metrics" => {
            let scrape = collect(&endpoint.inboxes);
            let ready = scrape.ready(endpoint.lease.valid()).is_ok();
            let c = &endpoint.counters;
            let ctx = RenderContext {
                fetch_bytes_sendfile: c.fetch_bytes_sendfile.load(Ordering::Relaxed),
                fetch_bytes_copied: c.fetch_bytes_copied.load(Ordering::Relaxed),
                fetch_bytes_cold: c.fetch_bytes_cold.load(Ordering::Relaxed),
                partition_labels_max: endpoint.config.metrics_partition_labels_max,
                zookeeper: endpoint.config.zookeeper_connect.as_ref().map(|_| {
                    (
                        endpoint.lease.valid(),
                        crate::cluster::control_api::SESSION_ENDS.load(Ordering::Relaxed),
                    )
                }),
                ready,
                segment_rolls: shardlog_storage::stats::SEGMENT_ROLLS.load(Ordering::Relaxed),
                recovery_truncations: shardlog_storage::stats::RECOVERY_TRUNCATIONS
                    .load(Ordering::Relaxed),
                metadata: endpoint.config.zookeeper_connect.as_ref().map(|_| {
                    let w = &crate::metrics::METADATA_WORK;
                    crate::metrics::render::MetadataWorkCounts {
                        znode_reads_full: w.znode_reads_full.load(Ordering::Relaxed),
                        znode_reads_incremental: w.znode_reads_incremental.load(Ordering::Relaxed),
                        full_reads: w.full_reads.load(Ordering::Relaxed),
                        snapshots_published: w.snapshots_published.load(Ordering::Relaxed),
                    }
                }),
            };
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                crate::metrics::render(&scrape, &ctx),
            )
        }
        "/v1/status/live" => {
            if !STATUS.serving.load(Ordering::Acquire) {
                return (200, TEXT, "starting\n".into());
            }
            let scrape = collect(&endpoint.inboxes);
            if scrape.missing.is_empty() {
                (200, TEXT, "live\n".into())
            } else {
                (
                    503,
                    TEXT,
                    format!("shards {:?} did not answer\n", scrape.missing),
                )
            }
        }
        "/v1/status/ready" => {
            if !STATUS.serving.load(Ordering::Acquire) {
                return (503, TEXT, "starting\n".into());
            }
            match collect(&endpoint.inboxes).ready(endpoint.lease.valid()) {
                Ok(()) => (200, TEXT, "ready\n".into()),
                Err(why) => (503, TEXT, format!("{why}\n")),
            }
        }
        _ if path.starts_with(PARTITIONS_PATH) => {
            let topic = &path[PARTITIONS_PATH.len()..];
            let scrape = collect(&endpoint.inboxes);
            let mut held: Vec<&crate::metrics::PartitionReport> = scrape
                .reports
                .iter()
                .flat_map(|r| &r.partitions)
                .filter(|p| p.topic == topic)
                .collect();
            if held.is_empty() {
                return (
                    404,
                    TEXT,
                    format!("this broker holds no partition of topic {topic:?}\n"),
                );
            }
            held.sort_by_key(|p| p.partition);
            (200, "application/json", partitions_json(topic, &held))
        }
        _ => (
            404,
            TEXT,
            "not found; try /metrics, /v1/status/live, /v1/status/ready, /v1/partitions/<topic>\n"
                .into(),
        ),
    }
}

const PARTITIONS_PATH: &str = "/v1/partitions/";

/// The body of `/v1/partitions/<topic>`.
fn partitions_json(topic: &str, held: &[&crate::metrics::PartitionReport]) -> String {
    let partitions: Vec<serde_json::Value> = held
        .iter()
        .map(|p| {
            serde_json::json!({
                "partition": p.partition,
                "leader": p.leader,
                "log_start_offset": p.log_start_offset,
                "log_end_offset": p.log_end_offset,
                "high_watermark": p.high_watermark,
                "size_bytes": p.size_bytes,
                "compacted": p.compacted,
                "cleaner": {
                    "first_dirty_offset": p.cleaner_first_dirty_offset,
                    "dirty_bytes": p.cleaner_dirty_bytes,
                },
            })
        })
        .collect();
    let mut body = serde_json::json!({ "topic": topic, "partitions": partitions }).to_string();
    body.push('\n');
    body
}

/// Asks every shard for its report; shards that do not answer in time are listed as missing.
pub fn collect(inboxes: &[flume::Sender<ShardTask>]) -> Scrape {
    let deadline = Instant::now() + SHARD_ANSWER_MAX;
    let waiting: Vec<_> = inboxes
        .iter()
        .map(|inbox| {
            let (tx, rx) = flume::bounded::<ShardReport>(1);
            let task: ShardTask = Box::new(move |shard| {
                Box::pin(async move {
                    let _ = tx.send(crate::shard::report::report(&shard));
                })
            });
            // Inboxes are bounded: a shard whose inbox stays full is reported missing.
            inbox.send_deadline(task, deadline).ok().map(|_| rx)
        })
        .collect();
    let mut scrape = Scrape {
        reports: Vec::with_capacity(inboxes.len()),
        missing: Vec::new(),
    };
    for (i, rx) in waiting.into_iter().enumerate() {
        match rx.map(|rx| rx.recv_deadline(deadline)) {
            Some(Ok(r)) => scrape.reports.push(r),
            _ => scrape.missing.push(i),
        }
    }
    scrape
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    kind: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}
