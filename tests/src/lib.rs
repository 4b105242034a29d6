//! Test harness: starts real `shardlog` processes on free loopback ports with their own data
//! directories, and stops them (SIGTERM, or kill -9 to simulate a crash). Every broker started
//! here is killed when its `Broker` value is dropped, also when a test panics.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The broker binary: `$SHARDLOG_BIN`, else `target/release/shardlog`, else
/// `target/debug/shardlog`, building the release binary first if neither exists.
pub fn broker_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SHARDLOG_BIN") {
        return PathBuf::from(p);
    }
    let root = workspace_root();
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("shardlog");
        if p.exists() {
            return p;
        }
    }
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "shardlog-broker",
            "--bin",
            "shardlog",
        ])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the broker failed");
    root.join("target/release/shardlog")
}

/// A free TCP port on 127.0.0.1 (the OS picks it; a race with another process is possible but
/// unlikely, and the broker then fails loudly).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Whether a Kafka broker answers an ApiVersions request on `port`. A plain TCP connect is not
/// enough: right after a kill -9 the dead broker's listening socket can live on for a moment
/// (its io_uring is torn down asynchronously) and still complete handshakes, and a connect to an
/// ephemeral-range port nobody listens on can connect to itself.
pub fn answers_api_versions(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    // ApiVersions v0: size, api key 18, version 0, correlation id 1, null client id.
    let req: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    let mut size = [0u8; 4];
    s.write_all(&req).is_ok() && s.read_exact(&mut size).is_ok() && i32::from_be_bytes(size) > 0
}

/// A running (or stopped) broker process with its own data directory.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    args: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts a broker with default settings plus `args` (e.g. `["--set", "k=v"]`).
    pub fn start_with(args: &[&str]) -> Broker {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut b = Broker {
            child: None,
            port: free_port(),
            data_dir: tmp.path().join("data"),
            args: args.iter().map(|s| s.to_string()).collect(),
            _tmp: Some(tmp),
        };
        b.launch();
        b
    }

    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))
            .expect("log file");
        let mut cmd = Command::new(broker_bin());
        cmd.arg("--listen")
            .arg(self.bootstrap())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        let child = cmd.spawn().expect("broker starts");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30));
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "broker exited during start ({status}); log:\n{}",
                    self.log()
                );
            }
            if answers_api_versions(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("broker not ready within {within:?}; log:\n{}", self.log());
    }

    /// The broker's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// kill -9: the process dies at once, page cache contents stay.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("broker running");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("broker did not stop within 60 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same port and data directory.
    pub fn restart(&mut self) {
        self.launch();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of the broker log ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Runs `shardlog-cli` (building it first if needed) and returns its stdout; fails the test
/// if it fails.
pub fn cli(args: &[&str]) -> String {
    let bin = workspace_root().join("target/debug/shardlog-cli");
    if !bin.exists() {
        run_ok(
            Command::new(env!("CARGO"))
                .args(["build", "-p", "shardlog-tools"])
                .current_dir(workspace_root()),
        );
    }
    run_ok(Command::new(bin).args(args))
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
