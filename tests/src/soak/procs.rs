//! The soak's broker processes: each runs in its own network namespace
//! (`ip netns exec NS shardlog ...`; exec keeps the pid, so signals reach the broker itself),
//! listens on its namespace's address, and is sampled from `/proc` (CPU ticks, RSS) and from its
//! metrics endpoint. Every broker is killed when its value is dropped.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{answers_api_versions_at, http_get_at};

/// The Kafka port every soak broker listens on (each has its own address).
pub const KAFKA_PORT: u16 = 9092;
/// The metrics port every soak broker listens on.
pub const METRICS_PORT: u16 = 9644;

/// One broker of the soak cluster.
pub struct SoakBroker {
    pub id: i32,
    pub addr: String,
    pub netns: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
    /// Cut off by a network partition: the soak does not try to reach it.
    unreachable: bool,
    /// When the running process started; RSS samples are per process lifetime.
    pub started: Instant,
    /// `(seconds since start of this process, RSS in KiB)` for the current process.
    pub rss_kib: Vec<(f64, u64)>,
    /// RSS series of earlier lifetimes of this broker (restarted processes start afresh).
    pub past_rss: Vec<Vec<(f64, u64)>>,
    /// Processes started for this broker (start-up stall restarts included).
    pub starts: u32,
}

impl SoakBroker {
    pub fn new(
        id: i32,
        addr: String,
        netns: String,
        data_dir: PathBuf,
        log_path: PathBuf,
        args: Vec<String>,
    ) -> SoakBroker {
        SoakBroker {
            id,
            addr,
            netns,
            data_dir,
            log_path,
            args,
            child: None,
            paused: false,
            unreachable: false,
            started: Instant::now(),
            rss_kib: Vec::new(),
            past_rss: Vec::new(),
            starts: 0,
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("{}:{KAFKA_PORT}", self.addr)
    }

    /// Starts the process (not waiting for it to answer).
    pub fn spawn(&mut self, bin: &std::path::Path) {
        assert!(self.child.is_none(), "broker {} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("broker log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(bin)
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--metrics-listen")
            .arg(format!("{}:{METRICS_PORT}", self.addr))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            // SOAK_BROKER_LOG: the brokers' RUST_LOG (e.g. info,shardlog_broker::control=debug).
            .env(
                "RUST_LOG",
                std::env::var("SOAK_BROKER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. The broker is killed when the soak dies, even by
        // kill -9 (the death signal survives `ip netns exec`'s exec). Brokers are spawned from
        // the soak's main thread, which lives as long as the soak.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("ip netns exec runs");
        if !self.rss_kib.is_empty() {
            self.past_rss.push(std::mem::take(&mut self.rss_kib));
        }
        self.child = Some(child);
        self.paused = false;
        self.started = Instant::now();
        self.starts += 1;
    }

    /// Waits until the broker answers ApiVersions; restarts it (at most twice) when its
    /// start-up watchdog exits with [`crate::STARTUP_STALL_EXIT`]. `Err` with the reason otherwise.
    pub fn wait_ready(&mut self, bin: &std::path::Path, within: Duration) -> Result<(), String> {
        let label = format!("broker {}", self.id);
        crate::wait_started(
            self,
            within,
            &label,
            |b| &mut b.child,
            |b| b.spawn(bin),
            |b| answers_api_versions_at(&b.addr, KAFKA_PORT),
        )
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Whether the process exists, is not paused and can be reached.
    pub fn is_running(&self) -> bool {
        self.child.is_some() && !self.paused && !self.unreachable
    }

    pub fn set_unreachable(&mut self, unreachable: bool) {
        self.unreachable = unreachable;
    }

    /// Whether the process exited on its own (it was not stopped by the soak); reaps it.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(pid, sig) };
        }
    }

    pub fn sigstop(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    pub fn sigcont(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGTERM and wait (at most `within`, then kill -9). `Err` when it did not exit in time or
    /// exited with a failure status.
    pub fn stop(&mut self, within: Duration) -> Result<(), String> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: signals to our own child; SIGCONT in case it was stopped.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
            libc::kill(c.id() as i32, libc::SIGCONT);
        }
        self.paused = false;
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = c.try_wait().ok().flatten() {
                return if s.success() {
                    Ok(())
                } else {
                    Err(format!("broker {} exited with {s} after SIGTERM", self.id))
                };
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return Err(format!(
                    "broker {} did not stop within {within:?} after SIGTERM",
                    self.id
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// utime + stime of the process in clock ticks.
    pub fn cpu_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the command name: state is field 3, utime 14, stime 15 (1-based in proc(5)).
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }

    /// VmRSS in KiB.
    pub fn rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// Records an RSS sample of the current process.
    pub fn sample_rss(&mut self) {
        if let Some(kib) = self.rss() {
            let t = self.started.elapsed().as_secs_f64();
            self.rss_kib.push((t, kib));
        }
    }

    /// The broker's Prometheus text, if it answers.
    pub fn metrics(&self) -> Option<String> {
        if !self.is_running() {
            return None;
        }
        match http_get_at(&self.addr, METRICS_PORT, "/metrics") {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }
}

impl Drop for SoakBroker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sum of the samples of `family` whose labels contain every `(key, value)` of `labels`.
pub fn metric_sum(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, label_text) = match name_labels.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (name_labels, ""),
            };
            if name != family {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Per-partition values of a gauge with `topic` and `partition` labels: `(topic, p) -> value`.
pub fn partition_gauge(text: &str, family: &str) -> Vec<(String, i32, i64)> {
    let prefix = format!("{family}{{");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (labels, value) = rest.split_once("} ")?;
            let mut topic = None;
            let mut partition = None;
            for kv in labels.split(',') {
                let (k, v) = kv.split_once('=')?;
                let v = v.trim_matches('"');
                match k {
                    "topic" => topic = Some(v.to_string()),
                    "partition" => partition = v.parse().ok(),
                    _ => {}
                }
            }
            Some((topic?, partition?, value.trim().parse::<f64>().ok()? as i64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_is_read() {
        let text = "# HELP x\n\
                    shardlog_requests_total{api=\"Fetch\",version=\"11\"} 5\n\
                    shardlog_requests_total{api=\"Fetch\",version=\"12\"} 7\n\
                    shardlog_requests_total{api=\"Produce\",version=\"9\"} 100\n\
                    shardlog_log_end_offset{topic=\"soak\",partition=\"3\"} 42\n";
        assert_eq!(
            metric_sum(text, "shardlog_requests_total", &[("api", "Fetch")]),
            12.0
        );
        assert_eq!(
            partition_gauge(text, "shardlog_log_end_offset"),
            vec![("soak".to_string(), 3, 42)]
        );
    }
}
