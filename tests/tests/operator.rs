//! Day one for an operator, as one runs it: a relative data directory, a port already taken, a
//! partition that cannot be opened, the metrics and health endpoints, and Prometheus scraping
//! them. Every broker runs as a real process on free loopback ports.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shardlog_tests::{broker_bin, cli, free_port, http_get, wait_until, Broker};

/// Runs the broker with `args` from `cwd` until it exits (at most `within`); returns
/// `(exit code, stderr)`. Panics if it is still running then.
fn run_to_exit(cwd: &Path, args: &[&str], within: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(broker_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("broker starts");
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "broker did not exit within {within:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn relative_data_dir_from_any_working_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics = free_port();
    let log = std::fs::File::create(cwd.path().join("broker.log")).unwrap();
    let mut child = Command::new(broker_bin())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            "data",
            "--set",
            &format!("metrics.listen=127.0.0.1:{metrics}"),
        ])
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let ready = wait_until(Duration::from_secs(30), || {
        http_get(metrics, "/v1/status/ready").is_ok_and(|(s, _)| s == 200)
    });
    let log_text = || std::fs::read_to_string(cwd.path().join("broker.log")).unwrap();
    assert!(ready, "not ready; log:\n{}", log_text());
    let bootstrap = format!("127.0.0.1:{port}");
    cli(&[
        "--bootstrap",
        &bootstrap,
        "topic",
        "create",
        "rel",
        "-p",
        "2",
    ]);
    let listed = cli(&["--bootstrap", &bootstrap, "topic", "list"]);
    assert!(listed.contains("rel"), "{listed}");
    assert!(cwd.path().join("data/rel-0").is_dir());
    assert!(cwd.path().join("data/__consumer_offsets-0").is_dir());
    // SAFETY: plain signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}; log:\n{}", log_text());
    let text = log_text();
    assert!(text.contains("(fresh start)"), "{text}");
    assert!(text.contains("ready on"), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
}

#[test]
fn a_second_broker_on_a_used_port_is_refused() {
    let first = Broker::start();
    let other_dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_to_exit(
        other_dir.path(),
        &[
            "--listen",
            &first.bootstrap(),
            "--data-dir",
            "data",
            "--set",
            "metrics.listen=",
        ],
        Duration::from_secs(20),
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("address already in use"), "{stderr}");
    assert!(!stderr.contains("ready on"), "{stderr}");
    // The same holds for the metrics listener.
    let (code, stderr) = run_to_exit(
        other_dir.path(),
        &[
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            "data2",
            "--set",
            &format!("metrics.listen=127.0.0.1:{}", first.metrics_port),
        ],
        Duration::from_secs(20),
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("metrics.listen"), "{stderr}");
    // The first broker still answers.
    assert_eq!(first.http_get("/v1/status/ready").unwrap().0, 200);
}

#[test]
fn a_partition_that_cannot_be_opened_stops_the_start() {
    let mut broker = Broker::start();
    cli(&[
        "--bootstrap",
        &broker.bootstrap(),
        "topic",
        "create",
        "broken",
        "-p",
        "2",
    ]);
    assert!(broker.stop().success());
    // Replace a partition directory by a plain file: the open must fail (root ignores modes).
    let dir = broker.data_dir.join("broken-1");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let (code, stderr) = run_to_exit(
        broker.data_dir.parent().unwrap(),
        &[
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            broker.data_dir.to_str().unwrap(),
            "--set",
            "metrics.listen=",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("shardlog:"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(&dir.display().to_string()), "{stderr}");
    assert!(lines[0].contains("os error"), "{stderr}");
    assert!(!stderr.contains("ready on"), "{stderr}");
}

/// Finds the value of the sample line `series` (exact name and labels) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_and_health_show_live_values() {
    let broker = Broker::start_with(&["--set", "group.initial.rebalance.delay.ms=0"]);
    assert_eq!(broker.http_get("/v1/status/live").unwrap().0, 200);
    let (status, body) = broker.http_get("/v1/status/ready").unwrap();
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert_eq!(broker.http_get("/nope").unwrap().0, 404);
    let b = broker.bootstrap();
    cli(&["--bootstrap", &b, "topic", "create", "ops", "-p", "2"]);
    let input = broker.data_dir.with_extension("input");
    std::fs::write(&input, "a\nb\nc\nd\ne\n").unwrap();
    cli(&[
        "--bootstrap",
        &b,
        "produce",
        "ops",
        "--file",
        input.to_str().unwrap(),
    ]);
    cli(&[
        "--bootstrap",
        &b,
        "consume",
        "ops",
        "--group",
        "ops-readers",
        "--count",
        "3",
    ]);
    let (status, text) = broker.http_get("/metrics").unwrap();
    assert_eq!(status, 200);
    let get = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("shardlog_requests_total{api=\"Produce\"")),
        "{text}"
    );
    assert_eq!(get("shardlog_topic_records_in_total{topic=\"ops\"}"), 5.0);
    assert!(get("shardlog_topic_bytes_in_total{topic=\"ops\"}") > 0.0);
    assert!(get("shardlog_topic_bytes_out_total{topic=\"ops\"}") > 0.0);
    let end: f64 = (0..2)
        .map(|p| {
            get(&format!(
                "shardlog_log_end_offset{{topic=\"ops\",partition=\"{p}\"}}"
            ))
        })
        .sum();
    assert_eq!(end, 5.0);
    assert!(
        get("shardlog_partitions") >= 52.0,
        "2 + 50 offsets partitions"
    );
    assert_eq!(get("shardlog_under_replicated_partitions"), 0.0);
    assert_eq!(get("shardlog_offline_partitions"), 0.0);
    assert_eq!(get("shardlog_ready"), 1.0);
    assert_eq!(get("shardlog_controller"), 1.0);
    assert!(text.contains("shardlog_request_duration_seconds_bucket{api=\"Fetch\""));
    assert!(text.contains("shardlog_task_queue_latency_seconds_count{shard=\"0\"}"));
    assert!(text.contains("shardlog_fetch_bytes_total{path=\"sendfile\"}"));
    // The group committed what it consumed: its lag over both partitions is what is left.
    let lag: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("shardlog_consumer_group_lag{group=\"ops-readers\",topic=\"ops\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    let committed = text
        .lines()
        .filter(|l| l.starts_with("shardlog_consumer_group_committed_offset{group=\"ops-readers\""))
        .count();
    assert!(committed >= 1, "{text}");
    assert!(lag <= 2.0, "lag {lag}\n{text}");
}

#[test]
fn prometheus_scrapes_the_broker() {
    let prometheus = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("prometheus is installed by scripts/install-deps.sh");
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: shardlog\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            broker.metrics_port
        ),
    )
    .unwrap();
    let web = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("prometheus runs");
    let query = "/api/v1/query?query=shardlog_ready%7Bjob%3D%22shardlog%22%7D";
    let seen = wait_until(Duration::from_secs(60), || {
        http_get(web, query).is_ok_and(|(s, body)| {
            s == 200 && body.contains("\"shardlog_ready\"") && body.contains("\"1\"]")
        })
    });
    let targets = http_get(web, "/api/v1/targets")
        .map(|r| r.1)
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen,
        "Prometheus never stored shardlog_ready = 1; targets: {targets}\nlog:\n{}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );
    assert!(targets.contains("\"health\":\"up\""), "{targets}");
}

#[test]
fn kafkas_stock_server_properties_start_a_broker() {
    let zk = shardlog_tests::ZooKeeper::start();
    let dir = tempfile::tempdir().unwrap();
    let stock = std::fs::read_to_string(
        shardlog_tests::workspace_root().join("tests/fixtures/kafka-server.properties"),
    )
    .unwrap();
    // Only the two lines an operator changes: where the logs go and where ZooKeeper is.
    let data = dir.path().join("kafka-logs");
    let props: String = stock
        .lines()
        .map(|l| {
            if l.starts_with("log.dirs=") {
                format!("log.dirs={}", data.display())
            } else if l.starts_with("zookeeper.connect=") {
                format!("zookeeper.connect={}", zk.connect_string())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let file = dir.path().join("server.properties");
    std::fs::write(&file, props).unwrap();
    // The port moves (the stock file listens on 9092); everything else is the file's.
    let broker = Broker::start_with(&["--config", file.to_str().unwrap()]);
    let ready = wait_until(Duration::from_secs(30), || {
        broker
            .http_get("/v1/status/ready")
            .is_ok_and(|(s, _)| s == 200)
    });
    assert!(ready, "log:\n{}", broker.log());
    let b = broker.bootstrap();
    cli(&["--bootstrap", &b, "topic", "create", "stock", "-p", "1"]);
    let input = dir.path().join("input");
    std::fs::write(&input, "x\ny\n").unwrap();
    cli(&[
        "--bootstrap",
        &b,
        "produce",
        "stock",
        "--file",
        input.to_str().unwrap(),
    ]);
    let offsets = cli(&["--bootstrap", &b, "--json", "offsets", "stock"]);
    assert!(offsets.contains('2'), "{offsets}");
    // The harness passes --data-dir (a flag beats the file), so the data is there.
    assert!(broker.data_dir.join("stock-0").is_dir());
    let log = broker.log();
    let warn: Vec<_> = log
        .lines()
        .filter(|l| l.contains("accepted but not used by Shardlog"))
        .collect();
    assert_eq!(warn.len(), 1, "{log}");
    for key in [
        "num.network.threads",
        "socket.send.buffer.bytes",
        "num.recovery.threads.per.data.dir",
    ] {
        assert!(warn[0].contains(key), "{key} not in {}", warn[0]);
    }
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut broker = Broker::start_with(&["--set", "log.format=json"]);
    cli(&[
        "--bootstrap",
        &broker.bootstrap(),
        "topic",
        "create",
        "j",
        "-p",
        "1",
    ]);
    assert!(broker.stop().success());
    let log = broker.log();
    let mut levels = std::collections::BTreeSet::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}\n{log}"));
        for field in ["ts", "level", "target", "msg"] {
            assert!(v.get(field).is_some(), "no {field} in {line}");
        }
        levels.insert(v["level"].as_str().unwrap().to_string());
    }
    assert!(levels.contains("INFO"), "{log}");
    assert!(log.contains("ready on"), "{log}");
}

#[test]
fn cluster_brokers_report_ready_one_controller_and_their_session() {
    let zk = shardlog_tests::ZooKeeper::start();
    let cluster = shardlog_tests::Cluster::start(&zk, 3, &[]);
    let mut controllers = 0.0;
    for id in cluster.ids() {
        let b = cluster.broker(id);
        let ready = wait_until(Duration::from_secs(20), || {
            b.http_get("/v1/status/ready").is_ok_and(|(s, _)| s == 200)
        });
        assert!(ready, "broker {id}: {:?}", b.http_get("/v1/status/ready"));
        let (_, text) = b.http_get("/metrics").unwrap();
        assert_eq!(
            sample(&text, "shardlog_zookeeper_session_state"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(sample(&text, "shardlog_ready"), Some(1.0), "{text}");
        controllers += sample(&text, "shardlog_controller").unwrap();
    }
    assert_eq!(controllers, 1.0, "exactly one controller");
}
