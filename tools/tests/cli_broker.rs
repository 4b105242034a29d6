//! End-to-end tests of `shardlog-cli` against the real broker binary: every subcommand, run as
//! a user would (a separate process, stdin/stdout, exit status), with its output checked.
//!
//! The broker is `target/<profile>/shardlog`, built with `cargo build -p shardlog-broker --bin
//! shardlog` before the first test (a no-op when fresh), or the binary named by `SHARDLOG_BIN`.
//! If it cannot be built or does not start, the tests fail: they are never skipped.
//!
//! Each test starts its own broker on a free port with a fresh data directory, and the
//! [`Broker`] guard kills it when the test ends, also when it panics. Brokers run one at a
//! time: a thread-per-core broker keeps its cores busy, and ten of them on a small machine
//! would turn the tests into a test of timeouts.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

const CLI: &str = env!("CARGO_BIN_EXE_shardlog-cli");
/// How long a broker may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker binary, built once per test run.
fn broker_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SHARDLOG_BIN") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "SHARDLOG_BIN={} is not a file", p.display());
            return p;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tools/ lives in the workspace root");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "shardlog-broker", "--bin", "shardlog"])
            .current_dir(root)
            .status()
            .expect("running cargo to build the broker");
        assert!(
            status.success(),
            "`cargo build -p shardlog-broker --bin shardlog` failed ({status}); the CLI tests need the broker"
        );
        let bin = target.join("debug").join("shardlog");
        assert!(bin.is_file(), "the broker build produced no {}", bin.display());
        bin
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Held by the test whose broker is running.
static ONE_BROKER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A running broker; killed on drop.
struct Broker {
    child: Child,
    addr: String,
    data_dir: tempfile::TempDir,
    /// Released after the broker is killed (fields drop after `Drop::drop`).
    _turn: MutexGuard<'static, ()>,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts a broker with extra `--set KEY=VALUE` settings.
    fn start_with(settings: &[&str]) -> Broker {
        let bin = broker_binary();
        // A test that panicked while holding the lock leaves nothing behind to protect.
        let turn = ONE_BROKER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let data_dir = tempfile::tempdir().expect("a temporary data directory");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(&addr)
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--shards")
            .arg("2")
            .arg("--set")
            .arg(format!("metrics.listen=127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for s in settings {
            cmd.arg("--set").arg(s);
        }
        let child = cmd.spawn().expect("starting the broker");
        let mut broker = Broker {
            child,
            addr,
            data_dir,
            _turn: turn,
        };
        broker.wait_until_listening(&mut cmd);
        broker
    }

    /// Waits for the broker to accept connections. A broker whose start-up watchdog found a
    /// stalled shard exits with 3 (a known, rare glommio stall; see broker/src/startup/mod.rs):
    /// it is started again, as a supervisor would, at most twice and loudly.
    fn wait_until_listening(&mut self, cmd: &mut Command) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut stall_restarts = 0;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                if status.code() == Some(3) && stall_restarts < 2 {
                    stall_restarts += 1;
                    eprintln!("the broker stalled during start-up; starting it again");
                    self.child = cmd.spawn().expect("starting the broker");
                    continue;
                }
                panic!("the broker exited during startup with {status}");
            }
            // A connection to ourselves (TCP self-connect on an ephemeral-range port nobody
            // listens on yet) does not count.
            if let Ok(s) = TcpStream::connect(&self.addr) {
                if s.local_addr().ok() != s.peer_addr().ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not accept connections on {} within {STARTUP_TIMEOUT:?}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the CLI against this broker.
    fn cli(&self, args: &[&str]) -> Run {
        self.cli_with_input(args, None)
    }

    fn cli_with_input(&self, args: &[&str], stdin: Option<&str>) -> Run {
        run_cli(args, Some(&self.addr), stdin)
    }

    fn data(&self) -> &Path {
        self.data_dir.path()
    }

    /// Kills the broker but keeps its data directory (for offline checks).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The result of one CLI run.
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.status, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn status(self, expected: i32) -> Run {
        assert_eq!(
            self.status, expected,
            "expected exit status {expected}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

fn run_cli(args: &[&str], bootstrap: Option<&str>, stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(CLI);
    // Generous: the machine running the tests may be busy building; a stall is reported
    // with its own message when it happens.
    if !args.contains(&"--timeout-ms") {
        cmd.args(["--timeout-ms", "30000"]);
    }
    cmd.args(args)
        .env_remove("SHARDLOG_BOOTSTRAP")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(b) = bootstrap {
        cmd.env("SHARDLOG_BOOTSTRAP", b);
    }
    let mut child = cmd.spawn().expect("starting shardlog-cli");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes()).expect("writing stdin");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("waiting for shardlog-cli");
    Run {
        status: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn create_topic(b: &Broker, topic: &str, partitions: u32) {
    b.cli(&[
        "topic",
        "create",
        topic,
        "--partitions",
        &partitions.to_string(),
    ])
    .ok();
}

#[test]
fn cluster_info_names_the_broker() {
    let b = Broker::start();
    let run = b.cli(&["cluster", "info"]).ok();
    let port = b.addr.rsplit(':').next().unwrap_or_default();
    assert!(run.stdout.contains("cluster id: "), "{}", run.stdout);
    assert!(run.stdout.contains("BROKER  HOST"), "{}", run.stdout);
    assert!(run.stdout.contains(port), "{}", run.stdout);
    let v = b.cli(&["cluster", "info", "--json"]).ok().json();
    let brokers = v["brokers"].as_array().expect("a broker list");
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0]["port"].as_u64(), port.parse::<u64>().ok());
    assert_eq!(brokers[0]["id"], v["controller_id"]);
}

#[test]
fn topic_create_list_describe_delete() {
    let b = Broker::start();
    b.cli(&["topic", "create", "orders", "-p", "3"]).ok();
    // Creating it again fails with a broker error, unless --if-not-exists.
    let again = b.cli(&["topic", "create", "orders"]).status(4);
    assert!(
        again.stderr.contains("TOPIC_ALREADY_EXISTS"),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("--if-not-exists"), "{}", again.stderr);
    let v = b
        .cli(&["topic", "create", "orders", "--if-not-exists", "--json"])
        .ok()
        .json();
    assert_eq!(v["already_existed"], true);

    let list = b.cli(&["topic", "list"]).ok();
    let row = |l: &&str| l.split_whitespace().collect::<Vec<_>>() == ["orders", "3", "1"];
    assert!(list.lines().iter().any(row), "{}", list.stdout);
    let v = b.cli(&["topic", "list", "--json"]).ok().json();
    let listed = v.as_array().expect("a JSON array");
    assert!(listed
        .iter()
        .any(|t| t["topic"] == "orders" && t["partitions"] == 3));

    let d = b.cli(&["topic", "describe", "orders"]).ok();
    assert!(
        d.stdout
            .contains("topic: orders  partitions: 3  replication: 1"),
        "{}",
        d.stdout
    );
    assert!(
        d.stdout.contains("PARTITION  LEADER  EPOCH  REPLICAS  ISR"),
        "{}",
        d.stdout
    );
    let v = b
        .cli(&["topic", "describe", "orders", "--json"])
        .ok()
        .json();
    let partitions = v[0]["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 3);
    assert!(
        partitions.iter().all(|p| p["leader"].as_i64() >= Some(0)),
        "{v}"
    );

    b.cli(&["topic", "delete", "orders"]).ok();
    let missing = b.cli(&["topic", "describe", "orders"]).status(4);
    assert!(
        missing.stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{}",
        missing.stderr
    );
    assert!(missing.stderr.contains("hint: "), "{}", missing.stderr);
    b.cli(&["topic", "delete", "orders"]).status(4);
    b.cli(&["topic", "delete", "orders", "--if-exists"]).ok();
}

/// Needs DescribeConfigs and IncrementalAlterConfigs (or AlterConfigs) in the broker.
#[test]
fn topic_configs_describe_and_alter() {
    let b = Broker::start();
    b.cli(&[
        "topic",
        "create",
        "conf",
        "--config",
        "retention.ms=3600000",
    ])
    .ok();
    let d = b.cli(&["topic", "describe", "conf"]).ok();
    assert!(
        d.stdout.contains("retention.ms  3600000  topic"),
        "{}",
        d.stdout
    );

    let config = |b: &Broker, name: &str| -> Option<Value> {
        let v = b.cli(&["topic", "describe", "conf", "--json"]).ok().json();
        let configs = v[0]["configs"].as_array().cloned().unwrap_or_default();
        configs.into_iter().find(|c| c["name"] == name)
    };
    b.cli(&[
        "topic",
        "alter-config",
        "conf",
        "--set",
        "retention.ms=60000",
    ])
    .ok();
    assert_eq!(
        config(&b, "retention.ms").expect("an override")["value"],
        "60000"
    );
    b.cli(&["topic", "alter-config", "conf", "--delete", "retention.ms"])
        .ok();
    assert_eq!(config(&b, "retention.ms"), None);
    // An unknown key is the broker's to refuse.
    b.cli(&["topic", "alter-config", "conf", "--set", "no.such.key=1"])
        .status(4);
    let all = b.cli(&["topic", "describe", "conf", "--all-configs"]).ok();
    assert!(all.stdout.contains("segment.bytes"), "{}", all.stdout);
}

/// Needs CreatePartitions in the broker.
#[test]
fn topic_add_partitions() {
    let b = Broker::start();
    create_topic(&b, "grow", 2);
    // Shrinking is a usage error, caught before asking the broker.
    b.cli(&["topic", "add-partitions", "grow", "--total", "2"])
        .status(2);
    b.cli(&["topic", "add-partitions", "grow", "--total", "5"])
        .ok();
    let v = b.cli(&["offsets", "grow", "--json"]).ok().json();
    assert_eq!(v.as_array().map(Vec::len), Some(5));
    b.cli_with_input(&["produce", "grow", "-p", "4"], Some("new\n"))
        .ok();
    assert_eq!(
        b.cli(&["consume", "grow", "-p", "4"]).ok().lines(),
        vec!["new"]
    );
}

#[test]
fn produce_then_consume_with_keys_headers_and_templates() {
    let b = Broker::start();
    create_topic(&b, "events", 2);
    let input = "a:one\nb:two\na:three\nc:four\n";
    let p = b
        .cli_with_input(
            &["produce", "events", "-k", ":", "-H", "src=test", "--json"],
            Some(input),
        )
        .ok()
        .json();
    assert_eq!(p["records"], 4);

    let c = b
        .cli(&[
            "consume",
            "events",
            "--format",
            "{key}={value} [{headers}] p{partition}@{offset}",
        ])
        .ok();
    let mut lines: Vec<&str> = c.lines();
    assert_eq!(lines.len(), 4, "{}", c.stdout);
    lines.sort();
    assert!(lines[0].starts_with("a=one [src=test] p"), "{lines:?}");
    // Same key, same partition, in order.
    let part = |l: &str| {
        l.rsplit(" p")
            .next()
            .and_then(|s| s.split('@').next())
            .map(str::to_string)
    };
    let a_lines: Vec<&&str> = lines.iter().filter(|l| l.starts_with("a=")).collect();
    assert_eq!(part(a_lines[0]), part(a_lines[1]));

    // JSON lines from one partition; a count.
    let json_lines = b.cli(&["consume", "events", "-p", "0", "--json"]).ok();
    for l in json_lines.lines() {
        let v: Value = serde_json::from_str(l).expect("one JSON object per line");
        assert_eq!(v["partition"], 0);
        assert_eq!(v["headers"][0]["key"], "src");
    }
    let counted = b
        .cli(&["consume", "events", "-n", "2", "--format", "{value}"])
        .ok();
    assert_eq!(counted.lines().len(), 2, "{}", counted.stdout);
    // A bad template is a usage error.
    let bad = b
        .cli(&["consume", "events", "--format", "{nope}"])
        .status(2);
    assert!(
        bad.stderr.contains("unknown field {nope}"),
        "{}",
        bad.stderr
    );
}

#[test]
fn produce_every_compression_and_acks() {
    let b = Broker::start();
    create_topic(&b, "z", 1);
    for (codec, acks) in [
        ("none", "1"),
        ("gzip", "all"),
        ("snappy", "1"),
        ("lz4", "all"),
        ("zstd", "1"),
    ] {
        let input = format!("{codec}-1\n{codec}-2\n");
        b.cli_with_input(&["produce", "z", "-z", codec, "--acks", acks], Some(&input))
            .ok();
    }
    b.cli_with_input(&["produce", "z", "--acks", "0"], Some("fire-and-forget\n"))
        .ok();
    // acks=0 has no answer to wait for: give the broker a moment before reading.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = b.cli(&["consume", "z"]).ok();
        if c.lines().len() == 11 || Instant::now() > deadline {
            assert_eq!(
                c.lines(),
                vec![
                    "none-1",
                    "none-2",
                    "gzip-1",
                    "gzip-2",
                    "snappy-1",
                    "snappy-2",
                    "lz4-1",
                    "lz4-2",
                    "zstd-1",
                    "zstd-2",
                    "fire-and-forget"
                ]
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn consume_start_positions() {
    let b = Broker::start();
    create_topic(&b, "s", 1);
    let lines: String = (0..10).map(|i| format!("m{i}\n")).collect();
    b.cli_with_input(&["produce", "s"], Some(&lines)).ok();
    let from = b.cli(&["consume", "s", "--offset", "7"]).ok();
    assert_eq!(from.lines(), vec!["m7", "m8", "m9"]);
    let end = b.cli(&["consume", "s", "--from-end"]).ok();
    assert!(end.stdout.is_empty(), "{}", end.stdout);
    let far_future = b
        .cli(&["consume", "s", "--timestamp", "32503680000000"])
        .ok();
    assert!(far_future.stdout.is_empty(), "{}", far_future.stdout);
    let long_ago = b.cli(&["consume", "s", "--timestamp", "0", "-n", "1"]).ok();
    assert_eq!(long_ago.lines(), vec!["m0"]);
    // --follow with an idle timeout returns once nothing more arrives.
    let followed = b
        .cli(&[
            "consume",
            "s",
            "-F",
            "--idle-timeout-ms",
            "1500",
            "--offset",
            "9",
        ])
        .ok();
    assert_eq!(followed.lines(), vec!["m9"]);
}

#[test]
fn offsets_show_earliest_and_latest() {
    let b = Broker::start();
    create_topic(&b, "o", 2);
    b.cli_with_input(&["produce", "o", "-p", "1"], Some("x\ny\nz\n"))
        .ok();
    let t = b.cli(&["offsets", "o"]).ok();
    assert_eq!(
        t.lines()[0].split_whitespace().collect::<Vec<_>>(),
        ["TOPIC", "PARTITION", "EARLIEST", "LATEST", "RECORDS"]
    );
    assert_eq!(
        t.lines()[1].split_whitespace().collect::<Vec<_>>(),
        ["o", "0", "0", "0", "0"]
    );
    assert_eq!(
        t.lines()[2].split_whitespace().collect::<Vec<_>>(),
        ["o", "1", "0", "3", "3"]
    );
    let v = b.cli(&["offsets", "o", "-p", "1", "--json"]).ok().json();
    assert_eq!(v[0]["latest"], 3);
    b.cli(&["offsets", "o", "-p", "9"]).status(4);
}

#[test]
fn group_consume_commit_describe_reset_delete() {
    let b = Broker::start();
    create_topic(&b, "g", 2);
    let lines: String = (0..6).map(|i| format!("k{i}:v{i}\n")).collect();
    b.cli_with_input(&["produce", "g", "-k", ":"], Some(&lines))
        .ok();

    // A group member reads everything and commits.
    let first = b.cli(&["consume", "g", "--group", "readers"]).ok();
    assert_eq!(first.lines().len(), 6, "{}\n{}", first.stdout, first.stderr);
    // The committed offsets mean a second run reads nothing.
    let second = b.cli(&["consume", "g", "--group", "readers"]).ok();
    assert!(second.stdout.is_empty(), "{}", second.stdout);

    let list = b.cli(&["group", "list"]).ok();
    assert!(list.stdout.contains("readers"), "{}", list.stdout);
    let v = b.cli(&["group", "list", "--json"]).ok().json();
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["group"] == "readers"));

    b.cli_with_input(&["produce", "g", "-p", "0"], Some("late\n"))
        .ok();
    let d = b
        .cli(&["group", "describe", "readers", "--json"])
        .ok()
        .json();
    assert_eq!(d[0]["total_lag"], 1, "{d}");
    let text = b.cli(&["group", "describe", "readers"]).ok();
    assert!(text.stdout.contains("total lag: 1"), "{}", text.stdout);

    // Reset: a dry run changes nothing, --execute does.
    let dry = b
        .cli(&[
            "group",
            "reset-offsets",
            "readers",
            "--topic",
            "g",
            "--to-earliest",
        ])
        .ok();
    assert!(dry.stdout.contains("dry run"), "{}", dry.stdout);
    let d = b
        .cli(&["group", "describe", "readers", "--json"])
        .ok()
        .json();
    assert_eq!(d[0]["total_lag"], 1);
    b.cli(&[
        "group",
        "reset-offsets",
        "readers",
        "--topic",
        "g",
        "--to-earliest",
        "--execute",
    ])
    .ok();
    let d = b
        .cli(&["group", "describe", "readers", "--json"])
        .ok()
        .json();
    assert_eq!(d[0]["total_lag"], 7);
    let again = b
        .cli(&["consume", "g", "--group", "readers", "-n", "3"])
        .ok();
    assert_eq!(again.lines().len(), 3);
    // Exactly what was printed was committed.
    let d = b
        .cli(&["group", "describe", "readers", "--json"])
        .ok()
        .json();
    assert_eq!(d[0]["total_lag"], 4);
    b.cli(&[
        "group",
        "reset-offsets",
        "readers",
        "--topic",
        "g",
        "-p",
        "0",
        "--shift-by",
        "-1",
        "--execute",
    ])
    .ok();

    b.cli(&["group", "delete", "readers"]).ok();
    b.cli(&["group", "describe", "readers"]).status(4);
}

#[test]
fn two_group_members_split_the_partitions() {
    let b = Broker::start();
    create_topic(&b, "split", 4);
    let lines: String = (0..40).map(|i| format!("k{i}:v{i}\n")).collect();
    b.cli_with_input(&["produce", "split", "-k", ":"], Some(&lines))
        .ok();
    let args = [
        "consume",
        "split",
        "--group",
        "pair",
        "-F",
        "--idle-timeout-ms",
        "6000",
        "--format",
        "{partition}",
    ];
    let addr = b.addr.clone();
    let other = std::thread::spawn(move || run_cli(&args, Some(&addr), None));
    let mine = b.cli(&args).ok();
    let theirs = other.join().expect("second member").ok();
    let all = mine.lines().len() + theirs.lines().len();
    // Every record at least once (a rebalance may repeat records whose commit it overtook),
    // and everything committed at the end.
    assert!(
        all >= 40,
        "mine:\n{}\ntheirs:\n{}",
        mine.stdout,
        theirs.stdout
    );
    let d = b.cli(&["group", "describe", "pair", "--json"]).ok().json();
    assert_eq!(d[0]["total_lag"], 0, "{d}");
}

#[test]
fn segment_dump_and_verify_on_the_brokers_files() {
    let mut b = Broker::start_with(&["log.segment.bytes=1024"]);
    create_topic(&b, "seg", 1);
    for i in 0..5 {
        let lines: String = (0..20).map(|j| format!("record-{i}-{j}\n")).collect();
        b.cli_with_input(&["produce", "seg"], Some(&lines)).ok();
    }
    let dir = b.data().join("seg-0");
    assert!(dir.is_dir(), "no partition directory {}", dir.display());
    let v = run_cli(
        &["segment", "verify", "--json", dir.to_str().unwrap()],
        None,
        None,
    )
    .ok()
    .json();
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        v["segments"].as_array().unwrap().len() >= 2,
        "expected rolled segments: {v}"
    );
    let first_log = dir.join("00000000000000000000.log");
    let dump = run_cli(
        &["segment", "dump", "--records", first_log.to_str().unwrap()],
        None,
        None,
    )
    .ok();
    assert!(dump.stdout.contains("base_offset: 0"), "{}", dump.stdout);
    assert!(dump.stdout.contains("value: record-0-0"), "{}", dump.stdout);
    assert!(dump.stdout.contains("(ok)"), "{}", dump.stdout);
    // The whole data directory verifies too.
    run_cli(
        &["segment", "verify", b.data().to_str().unwrap()],
        None,
        None,
    )
    .ok();

    // Stop the broker, flip a byte: verify reports damage with status 5.
    b.kill();
    let mut bytes = std::fs::read(&first_log).unwrap();
    let i = bytes.len() - 3;
    bytes[i] ^= 0xff;
    std::fs::write(&first_log, &bytes).unwrap();
    let damaged = run_cli(&["segment", "verify", dir.to_str().unwrap()], None, None).status(5);
    assert!(
        damaged.stdout.contains("CRC mismatch"),
        "{}",
        damaged.stdout
    );
}

#[test]
fn unreachable_broker_and_usage_errors_have_their_exit_codes() {
    let port = free_port();
    let r = run_cli(
        &["topic", "list", "--timeout-ms", "2000"],
        Some(&format!("127.0.0.1:{port}")),
        None,
    )
    .status(3);
    assert!(r.stderr.contains("--bootstrap"), "{}", r.stderr);
    run_cli(&["topic", "create"], None, None).status(2);
    run_cli(&["no-such-command"], None, None).status(2);
    run_cli(&["segment", "verify", "/nonexistent/path"], None, None).status(2);
}

/// The blocking client library itself (what the bench harness and other tests use), against
/// the real broker: metadata, topic creation, produce, fetch, list offsets, deletion.
#[test]
fn client_library_round_trip() {
    use shardlog_client::{codes, Client, NewTopic, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
    use shardlog_protocol::batch::build_simple_batch;
    let b = Broker::start();
    let mut client = Client::connect(&b.addr, "client-test", Duration::from_secs(10))
        .expect("connecting to the broker");
    assert_eq!(client.metadata().brokers.len(), 1);
    let topic = NewTopic {
        name: "lib".into(),
        partitions: 2,
        replication_factor: 1,
        configs: vec![],
    };
    let results = client
        .create_topics(std::slice::from_ref(&topic), false)
        .expect("CreateTopics");
    assert!(results[0].1.is_ok(), "{results:?}");
    let again = client.create_topics(&[topic], false).expect("CreateTopics");
    assert_eq!(
        again[0].1.as_ref().err().and_then(|e| e.code()),
        Some(codes::TOPIC_ALREADY_EXISTS)
    );
    assert_eq!(client.partitions_of("lib").expect("partitions"), vec![0, 1]);

    let batch = build_simple_batch(0, 1_000, &[(Some(b"k"), Some(b"v0")), (None, Some(b"v1"))]);
    let first = client
        .produce("lib", 1, batch.clone().into(), 1)
        .expect("produce");
    assert_eq!(first, Some(0));
    let second = client.produce("lib", 1, batch.into(), -1).expect("produce");
    assert_eq!(second, Some(2));

    let fetched = client
        .fetch("lib", 1, 1, 1 << 20, Duration::from_millis(100))
        .expect("fetch");
    assert_eq!(fetched.high_watermark, 4);
    let summary = shardlog_protocol::records::summarize(&fetched.records).expect("batches");
    // Whole batches, starting with the one that holds offset 1.
    assert_eq!(summary.next_offset, Some(4));
    assert_eq!(summary.batches, 2);
    assert_eq!(
        client
            .list_offset("lib", 1, EARLIEST_TIMESTAMP)
            .expect("earliest")
            .offset,
        0
    );
    assert_eq!(
        client
            .list_offset("lib", 1, LATEST_TIMESTAMP)
            .expect("latest")
            .offset,
        4
    );
    let missing = client.produce("nope", 0, Bytes::new(), 1).unwrap_err();
    assert_eq!(
        missing.code(),
        Some(codes::UNKNOWN_TOPIC_OR_PARTITION),
        "{missing}"
    );

    let deleted = client.delete_topics(&["lib"]).expect("DeleteTopics");
    assert!(deleted[0].1.is_ok(), "{deleted:?}");
}
