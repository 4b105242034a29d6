//! Test harness: starts real `shardlog` processes on free loopback ports with their own data
//! directories, and stops them (SIGTERM, or kill -9 to simulate a crash). Every broker started
//! here is killed when its `Broker` value is dropped, also when a test panics.
//!
//! For cluster mode it also starts a throwaway ZooKeeper ([`ZooKeeper`]) and a set of brokers
//! registered in it ([`Cluster`]), with helpers to crash, pause and restart single brokers and to
//! read each broker's view of the cluster through Metadata.

pub mod soak;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shardlog_client::{Client, ClusterMetadata, NewTopic, PartitionMeta};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where cargo puts what it builds: `$CARGO_TARGET_DIR` (relative to the workspace when
/// relative) or the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root.join(t) })
        .unwrap_or_else(|| root.join("target"))
}

/// The broker binary: `$SHARDLOG_BIN`, else `release/shardlog`, else `debug/shardlog` in
/// `$CARGO_TARGET_DIR` or the workspace's `target/`, building the release binary first if
/// neither exists.
pub fn broker_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SHARDLOG_BIN") {
        return PathBuf::from(p);
    }
    let root = workspace_root();
    let target = target_dir();
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("shardlog");
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
    target.join("release/shardlog")
}

/// A free TCP port on 127.0.0.1 (the OS picks it; a race with another process is possible but
/// unlikely, and the broker then fails loudly).
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` distinct free TCP ports on 127.0.0.1, never handed out before in this process. A probe
/// releases its port before the broker binds it, so two brokers started one after the other
/// could otherwise both get the same port (and both listen on it: once seen with two cluster
/// brokers, earlier with a broker's Kafka and metrics ports).
pub fn free_ports<const N: usize>() -> [u16; N] {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut held: Vec<TcpListener> = Vec::with_capacity(N);
    // Probes of ports given before stay bound until the end, so they are not offered again.
    let mut refused: Vec<TcpListener> = Vec::new();
    while held.len() < N {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = probe.local_addr().expect("addr").port();
        if given.insert(port) {
            held.push(probe);
        } else {
            refused.push(probe);
        }
    }
    std::array::from_fn(|i| held[i].local_addr().expect("addr").port())
}

/// Whether a Kafka broker answers an ApiVersions request on `port`. A plain TCP connect is not
/// enough: right after a kill -9 the dead broker's listening socket can live on for a moment
/// (its io_uring is torn down asynchronously) and still complete handshakes, and a connect to an
/// ephemeral-range port nobody listens on can connect to itself.
pub fn answers_api_versions(port: u16) -> bool {
    answers_api_versions_at("127.0.0.1", port)
}

/// [`answers_api_versions`] for a broker listening on `host` (the soak's brokers listen on
/// their network namespace's address). Connecting gives up after a second: a host behind a
/// blackhole route never answers.
pub fn answers_api_versions_at(host: &str, port: u16) -> bool {
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return false;
    };
    let addr = std::net::SocketAddr::new(ip, port);
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    // ApiVersions v0: size, api key 18, version 0, correlation id 1, null client id.
    let req: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    let mut size = [0u8; 4];
    s.write_all(&req).is_ok() && s.read_exact(&mut size).is_ok() && i32::from_be_bytes(size) > 0
}

/// A minimal HTTP/1.1 GET against 127.0.0.1:`port`: `(status, body)`.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_get_at("127.0.0.1", port, path)
}

/// [`http_get`] against `host:port` (an IP address), giving up on a connect after 2 s.
pub fn http_get_at(host: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut s =
        TcpStream::connect_timeout(&std::net::SocketAddr::new(ip, port), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Exit status of a broker whose start-up watchdog found a stalled shard.
pub const STARTUP_STALL_EXIT: i32 = 3;

/// Waits until broker `b` (its process in `child(b)`) `answers`. A broker whose start-up
/// watchdog exited with [`STARTUP_STALL_EXIT`] (a known, rare glommio stall, see
/// broker/src/startup/mod.rs) is started again with `respawn`, as a supervisor would, at most
/// twice; loudly, so the rate stays visible. `Err` with the reason when it exits otherwise or
/// does not answer `within`.
pub fn wait_started<B>(
    b: &mut B,
    within: Duration,
    label: &str,
    child: fn(&mut B) -> &mut Option<Child>,
    respawn: impl Fn(&mut B),
    answers: impl Fn(&B) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut stall_restarts = 0;
    while Instant::now() < deadline {
        if let Some(status) = child(b).as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            *child(b) = None;
            if status.code() == Some(STARTUP_STALL_EXIT) && stall_restarts < 2 {
                stall_restarts += 1;
                eprintln!(
                    "{label} stalled during start-up and exited; starting it again ({stall_restarts})"
                );
                respawn(b);
                continue;
            }
            return Err(format!("{label} exited during start ({status})"));
        }
        if answers(b) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{label} not ready within {within:?}"))
}

/// A running (or stopped) broker process with its own data directory.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    /// The broker's HTTP port for metrics and health (`metrics.listen`).
    pub metrics_port: u16,
    pub data_dir: PathBuf,
    args: Vec<String>,
    /// Set between [`Broker::sigstop`] and [`Broker::sigcont`]: the process exists but answers
    /// nothing, so helpers must not wait on it.
    paused: bool,
    /// Names the broker in the log excerpt printed when a test fails.
    label: String,
    /// How many lines of the log a failing test prints.
    log_tail_lines: usize,
    _tmp: Option<tempfile::TempDir>,
}

impl Broker {
    /// Starts a broker with default settings plus `args` (e.g. `["--set", "k=v"]`) and waits
    /// until it answers ApiVersions.
    pub fn start_with(args: &[&str]) -> Broker {
        let mut b = Broker::spawn_with(args);
        b.wait_ready(Duration::from_secs(30));
        b
    }

    /// Starts a broker like [`Broker::start_with`] without waiting for it to answer; call
    /// [`Broker::wait_ready`] before using it. Lets several brokers start at the same time.
    pub fn spawn_with(args: &[&str]) -> Broker {
        let tmp = tempfile::tempdir().expect("tempdir");
        let [port, metrics_port] = free_ports();
        let mut b = Broker {
            child: None,
            port,
            metrics_port,
            data_dir: tmp.path().join("data"),
            args: args.iter().map(|s| s.to_string()).collect(),
            paused: false,
            label: "broker".to_string(),
            log_tail_lines: 60,
            _tmp: Some(tmp),
        };
        b.spawn();
        b
    }

    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// GETs `path` from the broker's metrics/health listener: `(status, body)`.
    pub fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.metrics_port, path)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        self.spawn();
        self.wait_ready(Duration::from_secs(30));
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.paused = false;
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
            .arg("--set")
            .arg(format!("metrics.listen=127.0.0.1:{}", self.metrics_port))
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
    }

    /// Waits until the broker answers ApiVersions; panics with its log if it exits first or
    /// does not answer `within`.
    pub fn wait_ready(&mut self, within: Duration) {
        let label = self.label.clone();
        let started = wait_started(
            self,
            within,
            &label,
            |b| &mut b.child,
            Broker::spawn,
            |b| answers_api_versions(b.port),
        );
        if let Err(e) = started {
            panic!("{e}; log:\n{}", self.log());
        }
    }

    /// The file the broker's stdout and stderr go to (kept across restarts, appended to).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    /// The broker's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the process exists and is not paused by [`Broker::sigstop`].
    pub fn is_running(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    pub fn is_paused(&self) -> bool {
        self.child.is_some() && self.paused
    }

    /// SIGSTOP: the process freezes (no I/O, no ZooKeeper heartbeats) but keeps its sockets,
    /// like a long GC pause or a VM stall.
    pub fn sigstop(&mut self) {
        let pid = self.pid().expect("broker running") as i32;
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
        assert_eq!(rc, 0, "SIGSTOP failed");
        wait_stopped(pid);
        self.paused = true;
    }

    /// SIGCONT after [`Broker::sigstop`].
    pub fn sigcont(&mut self) {
        let pid = self.pid().expect("broker running") as i32;
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(pid, libc::SIGCONT) };
        assert_eq!(rc, 0, "SIGCONT failed");
        self.paused = false;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// kill -9: the process dies at once, page cache contents stay.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL also ends a stopped process.
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGTERM and wait for exit; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("broker running");
        // SAFETY: sending signals to our own child process. SIGCONT first: a stopped process
        // would not act on SIGTERM.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
            if self.paused {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
        }
        self.paused = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not stop within 60 s after SIGTERM", self.label);
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
            eprintln!(
                "--- last lines of the {} log ({}) ---\n{}",
                self.label,
                self.log_path().display(),
                self.log_tail(self.log_tail_lines)
            );
        }
    }
}

/// Runs `shardlog-cli` (building it first if needed) and returns its stdout; fails the test
/// if it fails.
pub fn cli(args: &[&str]) -> String {
    let bin = target_dir().join("debug/shardlog-cli");
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

/// Polls `f` every 50 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || f().then_some(())).is_some()
}

/// Polls `f` every 50 ms until it returns a value or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The classpath ZooKeeper runs with unless `SHARDLOG_ZK_CLASSPATH` says otherwise: Debian's
/// `zookeeper` package (scripts/install-deps.sh). The jar's manifest pulls in its dependencies.
const ZK_CLASSPATH_DEBIAN: &str = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar";
/// An SLF4J binding, appended when present: without one ZooKeeper logs nothing at all, and its
/// log is what explains a failed start.
const ZK_SLF4J_BINDING: &str = "/usr/share/java/slf4j-simple.jar";
/// ZooKeeper's tick: sessions may last 2 to 20 ticks, so 1 s to 10 s, which covers the short
/// session timeouts the cluster tests use to make failovers quick.
const ZK_TICK_MS: u64 = 500;

/// A standalone ZooKeeper server on a free loopback port with its own temporary data directory,
/// killed when dropped. Its output goes to a log file printed when a test fails.
pub struct ZooKeeper {
    child: Option<Child>,
    /// The address it listens on (127.0.0.1 unless started with [`ZooKeeper::start_on`]).
    pub host: String,
    pub port: u16,
    paused: bool,
    dir: tempfile::TempDir,
}

impl ZooKeeper {
    /// Starts ZooKeeper and waits until it answers `ruok` with `imok` and serves. Retries with another
    /// port if the chosen one was taken between probing and binding.
    pub fn start() -> ZooKeeper {
        ZooKeeper::start_on("127.0.0.1")
    }

    /// Like [`ZooKeeper::start`], listening on `host` (an IPv4 address of this machine) instead
    /// of loopback, for brokers in other network namespaces.
    pub fn start_on(host: &str) -> ZooKeeper {
        ZooKeeper::start_with(host, ZK_TICK_MS)
    }

    /// Like [`ZooKeeper::start_on`] with a tick of `tick_ms`: sessions may last 2 to 20 ticks,
    /// so Kafka's default session timeout (18 s) needs a tick of at least 900 ms.
    pub fn start_with(host: &str, tick_ms: u64) -> ZooKeeper {
        let mut last_log = String::new();
        for _ in 0..3 {
            let mut zk = ZooKeeper::spawn(host, tick_ms);
            if zk.wait_ready(Duration::from_secs(30)) {
                return zk;
            }
            last_log = zk.log();
            // The Drop of `zk` kills it.
        }
        panic!(
            "ZooKeeper did not start (is it installed? see scripts/install-deps.sh, or set \
             SHARDLOG_ZK_CLASSPATH); log of the last attempt:\n{last_log}"
        );
    }

    fn spawn(host: &str, tick_ms: u64) -> ZooKeeper {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("conf");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&conf).expect("conf dir");
        std::fs::create_dir_all(&data).expect("data dir");
        let cfg = format!(
            "tickTime={tick_ms}\n\
             dataDir={}\n\
             clientPort={port}\n\
             clientPortAddress={host}\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=*\n\
             maxClientCnxns=0\n",
            data.display()
        );
        std::fs::write(conf.join("zoo.cfg"), cfg).expect("zoo.cfg");
        ZooKeeper {
            child: Some(ZooKeeper::launch(dir.path())),
            host: host.to_string(),
            port,
            paused: false,
            dir,
        }
    }

    /// Runs the server of the configuration and data in `dir` (its log appended to).
    fn launch(dir: &Path) -> Child {
        let conf = dir.join("conf");
        let classpath = match std::env::var("SHARDLOG_ZK_CLASSPATH") {
            Ok(cp) => format!("{}:{cp}", conf.display()),
            Err(_) => {
                let mut cp = format!("{}:{ZK_CLASSPATH_DEBIAN}", conf.display());
                if Path::new(ZK_SLF4J_BINDING).exists() {
                    cp.push(':');
                    cp.push_str(ZK_SLF4J_BINDING);
                }
                cp
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("zookeeper.log"))
            .expect("zookeeper log");
        Command::new(std::env::var("JAVA").unwrap_or_else(|_| "java".into()))
            // A small heap and the client compiler: a test ZooKeeper holds a few hundred
            // znodes, and this machine's two cores are needed by the brokers.
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-cp")
            .arg(classpath)
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(conf.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run java for ZooKeeper: {e}"))
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and data. Sessions are
    /// in its data, so clients that reconnect within their session timeout keep their session
    /// (and ZooKeeper forgets every watch: they live with connections).
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
        self.child = Some(ZooKeeper::launch(self.dir.path()));
        assert!(
            self.wait_ready(Duration::from_secs(30)),
            "ZooKeeper did not come back after a restart; log:\n{}",
            self.log()
        );
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            // `ruok` answers `imok` as soon as the port is open, before the server serves
            // requests; `srvr` tells the two apart.
            if self.four_letter_word("ruok").as_deref() == Some("imok")
                && self
                    .four_letter_word("srvr")
                    .is_some_and(|s| s.contains("Mode: "))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// `host:port` for `--zookeeper`.
    pub fn connect_string(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Sends a four-letter command (`ruok`, `srvr`, `cons`, `dump`...) and returns the answer,
    /// or `None` if ZooKeeper does not answer within a second.
    pub fn four_letter_word(&self, cmd: &str) -> Option<String> {
        let ip: std::net::IpAddr = self.host.parse().ok()?;
        let addr = std::net::SocketAddr::new(ip, self.port);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(cmd.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGSTOP ZooKeeper itself: every session stalls, and expires once it resumes.
    pub fn sigstop(&mut self) {
        if let Some(c) = &self.child {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(c.id() as i32, libc::SIGSTOP) };
            wait_stopped(c.id() as i32);
            self.paused = true;
        }
    }

    pub fn sigcont(&mut self) {
        if let Some(c) = &self.child {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            self.paused = false;
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let dir = failed_test_log_dir();
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(self.log_path(), dir.join("zookeeper.log"));
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- last lines of the ZooKeeper log ({}) ---\n{}",
                self.log_path().display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The brokers' temporary directories go away with them: keep the whole logs of a
        // failed test where a person (or CI's artifact upload) can find them.
        if std::thread::panicking() {
            let dir = failed_test_log_dir();
            self.save_logs(&dir);
            eprintln!("--- full broker logs saved in {} ---", dir.display());
        }
    }
}

/// `target/cluster-test-logs/<test name>/`: where the logs of a failed cluster test are kept.
/// The test harness names each test's thread after the test.
pub fn failed_test_log_dir() -> PathBuf {
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .replace("::", "-");
    workspace_root()
        .join("target")
        .join("cluster-test-logs")
        .join(test)
}

/// Settings every cluster-test broker gets, before the test's own: short session and lag
/// timeouts so failovers take seconds, no group rebalance delay, and an offsets topic
/// replicated to every broker of a 3-broker cluster.
pub const CLUSTER_BROKER_SETTINGS: &[&str] = &[
    "zookeeper.session.timeout.ms=4000",
    "replica.lag.time.max.ms=2000",
    "group.initial.rebalance.delay.ms=0",
    "offsets.topic.num.partitions=6",
    "offsets.topic.replication.factor=3",
];
/// Shards per cluster-test broker: more than one so cross-shard paths run, few enough for
/// three brokers on a 2-core machine.
pub const CLUSTER_BROKER_SHARDS: usize = 2;
/// Timeout of the metadata connections the harness opens.
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);

/// Brokers with ids 1..=n registered in one ZooKeeper. Broker ids are the keys of `brokers`.
/// Every broker is killed when the cluster is dropped; when a test fails, each one's log tail
/// is printed.
pub struct Cluster {
    pub brokers: BTreeMap<i32, Broker>,
    zookeeper: String,
}

impl Cluster {
    /// Starts brokers 1..=n with [`CLUSTER_BROKER_SETTINGS`] plus `extra` (more command-line
    /// arguments, e.g. `["--set", "k=v"]`, which override the defaults), all at once, and waits
    /// until each answers ApiVersions and each one's Metadata lists all n brokers.
    pub fn start(zk: &ZooKeeper, n: usize, extra: &[&str]) -> Cluster {
        assert!(n >= 1, "a cluster needs a broker");
        let zookeeper = zk.connect_string();
        let mut brokers = BTreeMap::new();
        for id in 1..=n as i32 {
            let id_arg = id.to_string();
            let shards = CLUSTER_BROKER_SHARDS.to_string();
            let mut args: Vec<&str> = vec![
                "--broker-id",
                &id_arg,
                "--zookeeper",
                &zookeeper,
                "--shards",
                &shards,
            ];
            for s in CLUSTER_BROKER_SETTINGS {
                args.extend(["--set", s]);
            }
            args.extend(extra);
            let mut b = Broker::spawn_with(&args);
            b.label = format!("broker {id}");
            b.log_tail_lines = 150;
            brokers.insert(id, b);
        }
        let mut cluster = Cluster { brokers, zookeeper };
        for b in cluster.brokers.values_mut() {
            b.wait_ready(Duration::from_secs(60));
        }
        cluster.wait_registered(Duration::from_secs(60));
        cluster
    }

    /// The ZooKeeper connect string the brokers use.
    pub fn zookeeper(&self) -> &str {
        &self.zookeeper
    }

    /// Waits until every running broker's Metadata lists every running broker.
    pub fn wait_registered(&self, within: Duration) {
        let running = self.running_ids();
        let ok = wait_until(within, || {
            running.iter().all(|id| {
                self.metadata_from(*id, Some(&[])).is_ok_and(|m| {
                    running.iter().all(|r| {
                        m.brokers
                            .get(r)
                            .is_some_and(|b| b.port == i32::from(self.brokers[r].port))
                    })
                })
            })
        });
        if !ok {
            let views: Vec<String> = running
                .iter()
                .map(|id| match self.metadata_from(*id, Some(&[])) {
                    Ok(m) => format!("broker {id} lists {:?}", m.brokers.keys()),
                    Err(e) => format!("broker {id}: {e}"),
                })
                .collect();
            panic!(
                "brokers {running:?} did not all see each other within {within:?}: {}",
                views.join("; ")
            );
        }
    }

    pub fn ids(&self) -> Vec<i32> {
        self.brokers.keys().copied().collect()
    }

    /// Brokers whose process runs and is not paused.
    pub fn running_ids(&self) -> Vec<i32> {
        self.brokers
            .iter()
            .filter(|(_, b)| b.is_running())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn broker(&self, id: i32) -> &Broker {
        self.brokers
            .get(&id)
            .unwrap_or_else(|| panic!("no broker {id}"))
    }

    pub fn broker_mut(&mut self, id: i32) -> &mut Broker {
        self.brokers
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no broker {id}"))
    }

    /// kill -9 of one broker.
    pub fn kill9(&mut self, id: i32) {
        self.broker_mut(id).kill9();
    }

    pub fn sigstop(&mut self, id: i32) {
        self.broker_mut(id).sigstop();
    }

    pub fn sigcont(&mut self, id: i32) {
        self.broker_mut(id).sigcont();
    }

    /// SIGTERM (a controlled shutdown) and wait for the exit; returns the exit status.
    pub fn stop(&mut self, id: i32) -> ExitStatus {
        self.broker_mut(id).stop()
    }

    /// Starts a stopped or killed broker again with the same id, port and data directory, and
    /// waits until every running broker sees it.
    pub fn restart(&mut self, id: i32) {
        let b = self.broker_mut(id);
        b.spawn();
        b.wait_ready(Duration::from_secs(60));
        self.wait_registered(Duration::from_secs(60));
    }

    pub fn log_path(&self, id: i32) -> PathBuf {
        self.broker(id).log_path()
    }

    /// Every broker's address, dead or alive (clients skip the dead ones), in id order.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .values()
            .map(|b| b.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The addresses of the running brokers only.
    pub fn bootstrap_running(&self) -> String {
        self.running_ids()
            .iter()
            .map(|id| self.brokers[id].bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Broker `id`'s view of the cluster: brokers, controller and `topics` (`None` = all).
    pub fn metadata_from(
        &self,
        id: i32,
        topics: Option<&[&str]>,
    ) -> Result<ClusterMetadata, String> {
        let b = self.broker(id);
        if !b.is_running() {
            return Err(format!("broker {id} is not running"));
        }
        let mut client =
            Client::connect(&b.bootstrap(), "shardlog-cluster-harness", METADATA_TIMEOUT)
                .map_err(|e| format!("broker {id}: {e}"))?;
        client
            .refresh_metadata(topics)
            .cloned()
            .map_err(|e| format!("broker {id}: {e}"))
    }

    /// The view of the first running broker that answers, with that broker's id.
    pub fn metadata(&self, topics: Option<&[&str]>) -> Result<(i32, ClusterMetadata), String> {
        let mut errors = Vec::new();
        for id in self.running_ids() {
            match self.metadata_from(id, topics) {
                Ok(m) => return Ok((id, m)),
                Err(e) => errors.push(e),
            }
        }
        Err(format!("no running broker answered Metadata: {errors:?}"))
    }

    /// One partition as broker `id` reports it.
    pub fn partition_from(&self, id: i32, topic: &str, partition: i32) -> Option<PartitionMeta> {
        let m = self.metadata_from(id, Some(&[topic])).ok()?;
        m.topics.get(topic)?.partitions.get(&partition).cloned()
    }

    /// One partition as the first answering running broker reports it.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<PartitionMeta> {
        let (_, m) = self.metadata(Some(&[topic])).ok()?;
        m.topics.get(topic)?.partitions.get(&partition).cloned()
    }

    /// The partition's leader (None when unknown or offline).
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<i32> {
        self.partition(topic, partition)
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
    }

    pub fn replicas_of(&self, topic: &str, partition: i32) -> Option<Vec<i32>> {
        self.partition(topic, partition).map(|p| p.replicas)
    }

    pub fn isr_of(&self, topic: &str, partition: i32) -> Option<Vec<i32>> {
        self.partition(topic, partition).map(|p| p.isr)
    }

    /// The controller as the first answering running broker reports it.
    pub fn controller_id(&self) -> Option<i32> {
        let (_, m) = self.metadata(Some(&[])).ok()?;
        (m.controller_id >= 0).then_some(m.controller_id)
    }

    /// Creates a topic (CreateTopics to the controller) and waits until every running broker
    /// reports all its partitions with a leader and a full ISR.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) {
        let topic = NewTopic {
            name: name.to_string(),
            partitions,
            replication_factor,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let mut client = Client::connect(
            &self.bootstrap_running(),
            "shardlog-cluster-harness",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("connecting to create {name:?}: {e}"));
        let results = client
            .create_topics(&[topic], false)
            .unwrap_or_else(|e| panic!("creating {name:?}: {e}"));
        for (t, r) in results {
            if let Err(e) = r {
                panic!("creating {t:?}: {e}");
            }
        }
        self.wait_topic_ready(
            name,
            partitions,
            replication_factor,
            Duration::from_secs(30),
        );
    }

    /// Waits until every running broker reports `partitions` partitions of `topic`, each with a
    /// leader, `replication_factor` replicas and all of them in the ISR.
    pub fn wait_topic_ready(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        within: Duration,
    ) {
        let ready = |m: &ClusterMetadata| {
            m.topics.get(topic).is_some_and(|t| {
                t.error_code == 0
                    && t.partitions.len() == partitions as usize
                    && t.partitions.values().all(|p| {
                        p.leader >= 0
                            && p.replicas.len() == replication_factor as usize
                            && p.isr.len() == p.replicas.len()
                    })
            })
        };
        let running = self.running_ids();
        let ok = wait_until(within, || {
            running.iter().all(|id| {
                self.metadata_from(*id, Some(&[topic]))
                    .is_ok_and(|m| ready(&m))
            })
        });
        if !ok {
            let views: Vec<String> = running
                .iter()
                .map(|id| match self.metadata_from(*id, Some(&[topic])) {
                    Ok(m) => format!("broker {id}: {:?}", m.topics.get(topic)),
                    Err(e) => e,
                })
                .collect();
            panic!(
                "topic {topic:?} not ready ({partitions} partitions, RF {replication_factor}) \
                 on every broker within {within:?}:\n{}",
                views.join("\n")
            );
        }
    }

    /// Copies every broker's whole log to `dir` as `broker-<id>.log`.
    pub fn save_logs(&self, dir: &Path) {
        let _ = std::fs::create_dir_all(dir);
        for (id, b) in &self.brokers {
            let _ = std::fs::copy(b.log_path(), dir.join(format!("broker-{id}.log")));
        }
    }

    /// Prints the last `lines` lines of every broker's log.
    pub fn print_logs(&self, lines: usize) {
        for (id, b) in &self.brokers {
            eprintln!(
                "--- last lines of the broker {id} log ({}) ---\n{}",
                b.log_path().display(),
                b.log_tail(lines)
            );
        }
    }
}

/// Waits (up to 5 s) until `pid` is actually stopped: `kill` returns before a loaded machine
/// has delivered the signal, and a test asserting silence right after could still get answers.
fn wait_stopped(pid: i32) {
    let stopped = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // The state follows the parenthesised command name, which may contain spaces.
                let rest = stat.rsplit_once(')')?.1;
                rest.split_whitespace().next().map(|st| st == "T")
            })
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stopped() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}
