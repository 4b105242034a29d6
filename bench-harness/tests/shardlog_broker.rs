//! Smoke runs against the real Shardlog broker binary: produce 10,000 records, consume them
//! back from earliest, and a short end-to-end run.
//!
//! The broker is `$SHARDLOG_BIN` when set (the test suite sets it to the release build), else
//! `target/debug/shardlog` built with `cargo build -p shardlog-broker --bin shardlog` first (a
//! no-op when up to date). It is started on
//! a free port with a temporary data directory, and killed by a drop guard. If it cannot be
//! built or does not start listening, these tests fail with the reason: they never skip.

use serde_json::Value;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a started broker may take to accept connections.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn broker_binary() -> PathBuf {
    // The test suite (scripts/test.sh) builds the release broker and names it here.
    if let Some(p) = std::env::var_os("SHARDLOG_BIN") {
        return PathBuf::from(p);
    }
    let root = workspace_root();
    let bin = root.join("target/debug/shardlog");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args(["build", "-p", "shardlog-broker", "--bin", "shardlog"])
        .current_dir(&root)
        .output()
        .expect("running cargo build for the broker");
    assert!(
        out.status.success(),
        "cannot build the Shardlog broker (cargo build -p shardlog-broker --bin shardlog):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        bin.exists(),
        "cargo build succeeded but {} does not exist",
        bin.display()
    );
    bin
}

/// Kills the broker and removes its data directory when dropped.
struct Broker {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_broker(test: &str) -> Broker {
    let bin = broker_binary();
    let dir = std::env::temp_dir().join(format!(
        "shardlog-bench-broker-{}-{test}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(&bin);
    cmd.args(["--listen", &addr, "--data-dir"])
        .arg(dir.join("data"))
        .args(["--shards", "2"])
        .args(["--set", "metrics.listen="])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let spawn = |cmd: &mut Command| {
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
    };
    let child = spawn(&mut cmd);
    let mut broker = Broker { child, dir, addr };
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    // A broker whose start-up watchdog found a stalled shard exits with 3 (a known, rare
    // glommio stall; see broker/src/startup/mod.rs): start it again, at most twice, loudly.
    let mut stall_restarts = 0;
    loop {
        // A connection to ourselves (TCP self-connect on an ephemeral-range port nobody
        // listens on yet) does not count.
        if let Ok(s) = TcpStream::connect(&broker.addr) {
            if s.local_addr().ok() != s.peer_addr().ok() {
                return broker;
            }
        }
        if let Ok(Some(status)) = broker.child.try_wait() {
            if status.code() == Some(3) && stall_restarts < 2 {
                stall_restarts += 1;
                eprintln!("the broker stalled during start-up; starting it again");
                broker.child = spawn(&mut cmd);
                continue;
            }
            let mut err = String::new();
            if let Some(mut e) = broker.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!(
                "the broker exited with {status} before listening on {}:\n{err}",
                broker.addr
            );
        }
        assert!(
            Instant::now() < deadline,
            "the broker did not listen on {} within {LISTEN_TIMEOUT:?}",
            broker.addr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog-bench"))
        .args(args)
        .output()
        .expect("run shardlog-bench")
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

fn result(dir: &Path, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
        .unwrap()
}

#[test]
fn produce_ten_thousand_then_consume_them_against_shardlog() {
    let broker = start_broker("smoke");
    let out = broker.dir.join("results");
    let o = out.to_str().unwrap();
    let r = bench(&[
        "produce",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "smoke",
        "--partitions",
        "2",
        "--messages",
        "10000",
        "--out",
        o,
        "--name",
        "produce",
        "--quiet",
    ]);
    ok(&r);
    let j = result(&out, "produce");
    assert_eq!(j["status"], "ok");
    assert_eq!(j["produce"]["records"], 10_000);
    assert_eq!(j["produce"]["error_responses"], 0, "{}", j["notes"]);

    let r = bench(&[
        "consume",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "smoke",
        "--consumers",
        "2",
        "--out",
        o,
        "--name",
        "consume",
        "--quiet",
    ]);
    ok(&r);
    assert_eq!(result(&out, "consume")["consume"]["records"], 10_000);

    let r = bench(&[
        "e2e",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "smoke-e2e",
        "--rate",
        "2000",
        "--duration",
        "2s",
        "--out",
        o,
        "--name",
        "e2e",
        "--quiet",
    ]);
    ok(&r);
    let j = result(&out, "e2e");
    assert_eq!(j["consume"]["records_all"], j["produce"]["records_all"]);
    assert!(j["consume"]["e2e_latency_ms"]["count"].as_u64().unwrap() > 0);
}
