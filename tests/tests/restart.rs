//! Crash and restart: what was acknowledged before a kill -9 is served after the restart,
//! byte-identical and in order; a SIGTERM stop is clean and exits 0.

mod common;

use std::time::Instant;

use common::{consume_all, payload, produce_with};
use shardlog_tests::Broker;

fn count_from_env(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The acceptance run: 1,000,000 messages of 1 KiB by librdkafka with acks=1, kill -9,
/// restart, everything back. `SHARDLOG_RESTART_MESSAGES` lowers the count for quick local runs.
#[test]
fn acked_messages_survive_kill_9() {
    let n = count_from_env("SHARDLOG_RESTART_MESSAGES", 1_000_000);
    let mut broker = Broker::start_with(&[
        "--set",
        "num.partitions=2",
        "--set",
        "log.segment.bytes=67108864",
    ]);
    let topic = "crash-topic";
    let t = Instant::now();
    produce_with(
        &broker.bootstrap(),
        topic,
        &[
            ("acks", "1"),
            ("batch.size", "1000000"),
            ("queue.buffering.max.kbytes", "1048576"),
        ],
        n,
        2,
        |i| payload(i, 1024),
    );
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "produced {n} x 1 KiB in {secs:.2} s: {:.0} msg/s, {:.1} MB/s",
        n as f64 / secs,
        n as f64 * 1024.0 / secs / 1e6
    );
    broker.kill9();
    broker.restart();
    assert!(
        broker.log().contains("recovering"),
        "an unclean stop must trigger recovery"
    );
    let t = Instant::now();
    let got = consume_all(&broker.bootstrap(), topic, 2, n);
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "consumed {n} x 1 KiB in {secs:.2} s: {:.0} msg/s, {:.1} MB/s",
        n as f64 / secs,
        n as f64 * 1024.0 / secs / 1e6
    );
    for p in 0..2 {
        let msgs = &got[&p];
        assert_eq!(msgs.len(), (0..n).filter(|i| i % 2 == p as usize).count());
        for (j, (offset, key, value)) in msgs.iter().enumerate() {
            let i = j * 2 + p as usize;
            assert_eq!(*offset, j as i64);
            assert_eq!(key, format!("k{i}").as_bytes());
            assert!(*value == payload(i, 1024), "message {i} differs");
        }
    }
}

#[test]
fn sigterm_stops_cleanly_and_restart_skips_recovery() {
    let mut broker = Broker::start();
    produce_with(
        &broker.bootstrap(),
        "clean",
        &[("acks", "all")],
        1000,
        1,
        |i| payload(i, 100),
    );
    let status = broker.stop();
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        broker.log()
    );
    broker.restart();
    assert!(
        broker.log().matches("(clean start)").count() == 1,
        "log:\n{}",
        broker.log()
    );
    let got = consume_all(&broker.bootstrap(), "clean", 1, 1000);
    assert_eq!(got[&0].len(), 1000);
    // A second broker on the same data directory is refused.
    let out = std::process::Command::new(shardlog_tests::broker_bin())
        .args([
            "--listen",
            &format!("127.0.0.1:{}", shardlog_tests::free_port()),
            "--set",
            "metrics.listen=",
            "--data-dir",
        ])
        .arg(&broker.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another broker"));
}
