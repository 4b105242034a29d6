//! The harness binary end to end against the in-memory fake broker
//! (`shardlog_client::fake_broker`): every mode, compression, consumer splitting, exit codes,
//! result files, and a broker that goes away. No timing assertions: only counts, statuses and
//! files.

use serde_json::Value;
use shardlog_client::fake_broker::FakeBroker;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn out_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shardlog-bench-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Keeps the result files for a look when `SHARDLOG_BENCH_TEST_KEEP` is set.
fn cleanup(dir: &Path) {
    if std::env::var_os("SHARDLOG_BENCH_TEST_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        eprintln!("kept {}", dir.display());
    }
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog-bench"))
        .args(args)
        .output()
        .expect("run shardlog-bench")
}

fn result(dir: &Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(format!("{name}.json")))
        .unwrap_or_else(|e| panic!("{name}.json: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn produce_a_fixed_count_then_consume_it_all() {
    let broker = FakeBroker::start();
    let dir = out_dir("count");
    let d = dir.to_str().unwrap();
    let o = bench(&[
        "produce",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "t-count",
        "--partitions",
        "3",
        "--messages",
        "10000",
        "--record-size",
        "100",
        "--out",
        d,
        "--name",
        "p",
        "--quiet",
    ]);
    ok(&o);
    assert_eq!(broker.partitions("t-count"), 3);
    assert_eq!(broker.records("t-count"), 10_000);
    let j = result(&dir, "p");
    assert_eq!(j["status"], "ok");
    assert_eq!(j["produce"]["records"], 10_000);
    assert_eq!(j["produce"]["error_responses"], 0);
    assert!(j["produce"]["ack_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(dir.join("p-latency.svg").exists() && dir.join("p-throughput.svg").exists());
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("p99.99") && table.contains("records/s"),
        "{table}"
    );

    let o = bench(&[
        "consume",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "t-count",
        "--consumers",
        "2",
        "--out",
        d,
        "--name",
        "c",
        "--quiet",
    ]);
    ok(&o);
    let j = result(&dir, "c");
    assert_eq!(
        j["consume"]["records"], 10_000,
        "reads to the end offsets and stops"
    );
    assert!(
        !dir.join("c-latency.svg").exists(),
        "consume alone has no latency to plot"
    );
    cleanup(&dir);
}

#[test]
fn end_to_end_at_a_fixed_rate_with_compression_and_keys() {
    let broker = FakeBroker::start();
    for codec in ["none", "lz4", "zstd"] {
        let dir = out_dir(&format!("e2e-{codec}"));
        let topic = format!("t-e2e-{codec}");
        let o = bench(&[
            "e2e",
            "--bootstrap",
            &broker.addr,
            "--topic",
            &topic,
            "--partitions",
            "2",
            "--consumers",
            "2",
            "--rate",
            "2000",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--compression",
            codec,
            "--keys",
            "zipf:100",
            "--payload",
            "text",
            "--out",
            dir.to_str().unwrap(),
            "--name",
            "e",
            "--quiet",
        ]);
        ok(&o);
        let j = result(&dir, "e");
        let produced = j["produce"]["records_all"].as_u64().unwrap();
        let consumed = j["consume"]["records_all"].as_u64().unwrap();
        // 2000/s for 2 s, give or take the last batch.
        assert!(
            (3500..=4100).contains(&produced),
            "{codec}: produced {produced}"
        );
        assert_eq!(
            consumed, produced,
            "{codec}: consumers catch up before stopping"
        );
        let e2e = j["consume"]["e2e_latency_ms"]["count"].as_u64().unwrap();
        assert!(
            e2e > 2000 && e2e < produced,
            "{codec}: warm-up excluded, rest measured: {e2e}"
        );
        assert_eq!(j["params"]["compression"], codec);
        let svg = std::fs::read_to_string(dir.join("e-latency.svg")).unwrap();
        assert!(svg.contains("end-to-end") && svg.contains("produce acknowledgement"));
        cleanup(&dir);
    }
}

#[test]
fn consumer_group_members_share_the_partitions() {
    let broker = FakeBroker::start();
    let dir = out_dir("group");
    let o = bench(&[
        "e2e",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "t-group",
        "--partitions",
        "4",
        "--consumers",
        "2",
        "--group",
        "bench-group",
        "--rate",
        "2000",
        "--duration",
        "2s",
        "--out",
        dir.to_str().unwrap(),
        "--name",
        "g",
        "--quiet",
    ]);
    ok(&o);
    let j = result(&dir, "g");
    let produced = j["produce"]["records_all"].as_u64().unwrap();
    assert!(produced > 3000);
    assert_eq!(
        j["consume"]["records_all"].as_u64().unwrap(),
        produced,
        "every partition assigned once"
    );
    assert_eq!(j["params"]["group"], "bench-group");
    cleanup(&dir);
}

#[test]
fn acks_zero_counts_what_was_sent() {
    let broker = FakeBroker::start();
    let dir = out_dir("acks0");
    // acks=0: the fake broker answers nothing, the harness counts what it sent.
    let o = bench(&[
        "produce",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "t-acks0",
        "--acks",
        "0",
        "--messages",
        "5000",
        "--out",
        dir.to_str().unwrap(),
        "--name",
        "a",
        "--quiet",
    ]);
    ok(&o);
    let j = result(&dir, "a");
    assert_eq!(j["produce"]["records"], 5000);
    assert!(j["produce"]["ack_latency_ms"].is_null());
    // The fake broker stores acks=0 batches too (give it a moment to read the socket).
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(broker.records("t-acks0"), 5000);
    cleanup(&dir);
}

#[test]
fn a_broker_that_goes_away_is_reported_with_partial_results() {
    let broker = FakeBroker::start();
    let dir = out_dir("lost");
    let child = Command::new(env!("CARGO_BIN_EXE_shardlog-bench"))
        .args([
            "produce",
            "--bootstrap",
            &broker.addr,
            "--topic",
            "t-lost",
            "--duration",
            "30s",
            "--rate",
            "5000",
            "--request-timeout",
            "5s",
            "--out",
            dir.to_str().unwrap(),
            "--name",
            "l",
            "--quiet",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    broker.kill();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("went away"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("INTERRUPTED"));
    let j = result(&dir, "l");
    assert_eq!(j["status"], "broker_lost");
    assert!(j["failure"].as_str().unwrap().contains(&broker.addr));
    assert!(
        j["produce"]["records"].as_u64().unwrap() > 1000,
        "results gathered so far are kept"
    );
    cleanup(&dir);
}

#[test]
fn bad_parameters_and_unreachable_brokers_exit_non_zero() {
    let o = bench(&["produce", "--acks", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--acks 2: expected 0, 1 or all"));
    let o = bench(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let o = bench(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("EXIT STATUS"));
    // Nothing listens on port 1.
    let o = bench(&[
        "produce",
        "--bootstrap",
        "127.0.0.1:1",
        "--messages",
        "1",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach a broker at 127.0.0.1:1"));
    // Consume never creates topics.
    let broker = FakeBroker::start();
    let o = bench(&[
        "consume",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "nope",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
}
