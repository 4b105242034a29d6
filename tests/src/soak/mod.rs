//! The cluster soak (`cargo soak -- --duration 60m`): ZooKeeper and three brokers, each broker
//! in its own network namespace, a topic of (by default) 300 partitions with RF 3 and
//! min.insync.replicas=2, idempotent acks=all producers and a consumer group running
//! throughout, and rounds of faults, each followed by a recovery check:
//!
//! | event | what | measured |
//! |---|---|---|
//! | `idle` | no client traffic for a while | each broker's CPU (< 5 % of a core), Fetch requests/s (long polling) |
//! | `kill9` | kill -9 of a broker, restarted once its partitions are acknowledged again | kill -> first ack / every partition acked |
//! | `sigterm` | controlled shutdown of a broker, restarted likewise | SIGTERM -> first ack / every partition acked |
//! | `leader-sigstop` | SIGSTOP of a leader past its session timeout, then SIGCONT | stop -> first ack from the new leaders |
//! | `zk-pause` | SIGSTOP of ZooKeeper past the session timeout, then SIGCONT | resume -> first ack / every partition acked |
//! | `leader-partition` | a leader cut off by blackhole routes past its session, then healed | cut -> first ack from the new leaders |
//! | `rebalance` | after each restart or heal, leadership returns to the preferred replicas (`leader.imbalance.check.interval.seconds=10`) | back -> all preferred |
//! | `isr` | after each event, the ISRs are full again | back -> ISR full; fails when not full 10 s after caught up |
//!
//! Brokers 1 and 2 take the kill -9 and SIGTERM restarts; broker 3 is never restarted, so its RSS
//! is watched over the whole run. Failures are collected, never stop the run; the run ends with
//! the end checks in [`checks`], a summary on stdout and in `--out`, and a non-zero exit when
//! anything failed.

pub mod checks;
pub mod load;
pub mod net;
pub mod procs;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardlog_client::{Client, ClusterMetadata, NewTopic};

use crate::ZooKeeper;
use load::{LoadControl, Tracker, TOPIC};
use net::Net;
use procs::SoakBroker;

/// The internal offsets topic, replicated like the soak topic.
const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Broker ids.
const BROKERS: [i32; 3] = [1, 2, 3];
/// Brokers that take kill -9 and SIGTERM restarts (broker 3 lives the whole run).
const RESTARTED: [i32; 2] = [1, 2];
/// Shards per broker (3 brokers on a 2-core machine).
const SHARDS: usize = 2;
/// How long an ISR may stay short after its broker is back and caught up.
const ISR_GRACE: Duration = Duration::from_secs(10);
/// `leader.imbalance.check.interval.seconds` of the soak's brokers.
const REBALANCE_INTERVAL_S: u64 = 10;
/// `replica.fetch.wait.max.ms`: a follower connection long-polls at most 1000 / 500 = 2 times
/// a second when idle; the idle check allows 2.5 per connection plus 1.
const FETCH_WAIT_MS: u64 = 500;
const IDLE_FETCHES_PER_CONNECTION: f64 = 2.5;
/// An idle broker may use at most this share of one core.
const IDLE_CPU_MAX: f64 = 0.05;
/// Shortest process lifetime the RSS rule is applied to.
const RSS_MIN_LIFETIME_S: f64 = 120.0;

/// Set by SIGINT/SIGTERM: the run stops at the next wait and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The soak's settings (`cargo soak -- --help`).
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub session_timeout_ms: u64,
    pub partitions: i32,
    pub offsets_partitions: i32,
    /// Records per second over all producers.
    pub rate: u32,
    /// Length of each idle window's measurement.
    pub idle: Duration,
    pub out: PathBuf,
}

pub const USAGE: &str = "\
usage: cargo soak -- [--duration 60m] [--session-timeout-ms 18000] [--partitions 300]
                     [--offsets-partitions 50] [--rate 1000] [--idle 20s] [--out DIR]
Runs ZooKeeper and 3 brokers (each in its own network namespace; needs root) under
idempotent acks=all load and a consumer group, with recurring faults; exits non-zero when a
check failed. Durations: 90s, 5m, 1h. The broker binary is $SHARDLOG_BIN, else the
workspace's target/release/shardlog (built if missing).";

impl Default for Options {
    fn default() -> Options {
        Options {
            duration: Duration::from_secs(600),
            session_timeout_ms: 18_000,
            partitions: 300,
            offsets_partitions: 50,
            rate: 1000,
            idle: Duration::from_secs(20),
            out: crate::workspace_root()
                .join("target/soak")
                .join(format!("{}", unix_secs())),
        }
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `90s`, `5m`, `1h`, `1500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("bad duration unit in {s:?}")),
    })
}

impl Options {
    /// Parses the command line (without the program name).
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            // `cargo soak -- ...`: the alias ends with `--` already, so one more arrives here.
            if a == "--" {
                continue;
            }
            let (key, inline) = match a.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (a.as_str(), None),
            };
            if key == "--help" || key == "-h" {
                return Err(USAGE.to_string());
            }
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{key} needs a value\n{USAGE}"))
            };
            let num = |v: String| {
                v.parse::<u64>()
                    .map_err(|_| format!("{key}: bad number {v:?}"))
            };
            match key {
                "--duration" => o.duration = parse_duration(&value()?)?,
                "--session-timeout-ms" | "--zookeeper.session.timeout.ms" => {
                    o.session_timeout_ms = num(value()?)?
                }
                "--partitions" => o.partitions = num(value()?)? as i32,
                "--offsets-partitions" => o.offsets_partitions = num(value()?)? as i32,
                "--rate" => o.rate = num(value()?)? as u32,
                "--idle" => o.idle = parse_duration(&value()?)?,
                "--out" => o.out = PathBuf::from(value()?),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        if !(2000..=40_000).contains(&o.session_timeout_ms) {
            return Err("--session-timeout-ms must be within 2000..=40000".into());
        }
        if o.partitions < 1 || o.rate < 10 {
            return Err("--partitions must be >= 1 and --rate >= 10".into());
        }
        Ok(o)
    }
}

/// One injected event and what was measured around it. Times in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct EventRecord {
    pub kind: &'static str,
    pub victim: Option<i32>,
    /// Seconds since the soak started.
    pub at_s: f64,
    /// Event -> first acknowledgement on the affected partitions.
    pub first_ack_ms: Option<f64>,
    /// Event -> every affected partition acknowledged again.
    pub all_ack_ms: Option<f64>,
    /// Partitions the event affected.
    pub partitions: usize,
    pub note: String,
}

/// One idle window's measurement per broker.
#[derive(Debug, Clone)]
pub struct IdleSample {
    pub at_s: f64,
    pub broker: i32,
    pub cpu_share: f64,
    pub fetches_per_s: f64,
    pub fetch_limit_per_s: f64,
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub failures: Vec<String>,
    pub summary: String,
    pub out_dir: PathBuf,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Why the run was cut short (interrupted, or the cluster could not be set up).
type Abort = String;

/// The running soak. Field order is drop order: the load stops first, then brokers are killed,
/// then ZooKeeper, then the network goes.
struct Soak {
    opts: Options,
    control: Arc<LoadControl>,
    threads: Vec<std::thread::JoinHandle<()>>,
    consumer: Option<std::thread::JoinHandle<()>>,
    brokers: BTreeMap<i32, SoakBroker>,
    zk: ZooKeeper,
    net: Net,
    bin: PathBuf,
    tracker: Arc<Mutex<Tracker>>,
    failures: Vec<String>,
    events: Vec<EventRecord>,
    isr_restore_ms: Vec<(f64, &'static str, f64)>,
    idle_samples: Vec<IdleSample>,
    start: Instant,
    last_rss_sample: Instant,
    _data: tempfile::TempDir,
}

impl Drop for Soak {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
    }
}

/// Runs the soak; never panics on a failed check (those are collected in the outcome).
pub fn run(opts: &Options) -> Outcome {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let _ = std::fs::create_dir_all(&opts.out);
    let swept = net::sweep_leftovers();
    if !swept.is_empty() {
        println!("removed leftovers of dead soak runs: {}", swept.join(", "));
    }
    let mut soak = match Soak::setup(opts) {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                failures: vec![format!("setup: {e}")],
                summary: format!("soak setup failed: {e}\n"),
                out_dir: opts.out.clone(),
            }
        }
    };
    if let Err(e) = soak.rounds() {
        soak.fail(format!("run cut short: {e}"));
    }
    soak.finish()
}

impl Soak {
    fn setup(opts: &Options) -> Result<Soak, Abort> {
        let bin = crate::broker_bin();
        let net = Net::create(&BROKERS)
            .map_err(|e| format!("cannot create network namespaces (the soak needs root): {e}"))?;
        // Sessions may last up to 20 ticks.
        let tick_ms = (opts.session_timeout_ms / 10).clamp(200, 2000);
        let zk = ZooKeeper::start_with(&net.host_addr(), tick_ms);
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut brokers = BTreeMap::new();
        for id in BROKERS {
            let settings = [
                format!("zookeeper.session.timeout.ms={}", opts.session_timeout_ms),
                "min.insync.replicas=2".to_string(),
                "default.replication.factor=3".to_string(),
                "offsets.topic.replication.factor=3".to_string(),
                format!("offsets.topic.num.partitions={}", opts.offsets_partitions),
                format!("leader.imbalance.check.interval.seconds={REBALANCE_INTERVAL_S}"),
                // Any partition led elsewhere counts (Kafka's default of 10 % lets a few
                // partitions stay away from their preferred replica for good, and the soak
                // checks that every one goes back).
                "leader.imbalance.per.broker.percentage=0".to_string(),
                format!("replica.fetch.wait.max.ms={FETCH_WAIT_MS}"),
                "replica.lag.time.max.ms=10000".to_string(),
                "group.initial.rebalance.delay.ms=0".to_string(),
                "metrics.partition.labels.max=100000".to_string(),
            ];
            let mut args = vec![
                "--broker-id".to_string(),
                id.to_string(),
                "--zookeeper".to_string(),
                zk.connect_string(),
                "--shards".to_string(),
                SHARDS.to_string(),
            ];
            for s in settings {
                args.push("--set".into());
                args.push(s);
            }
            let b = SoakBroker::new(
                id,
                net.broker_addr(id),
                net.netns(id).to_string(),
                data.path().join(format!("broker-{id}")),
                data.path().join(format!("broker-{id}.log")),
                args,
            );
            brokers.insert(id, b);
        }
        for b in brokers.values_mut() {
            b.spawn(&bin);
        }
        for b in brokers.values_mut() {
            b.wait_ready(&bin, Duration::from_secs(90))?;
        }
        let control = Arc::new(LoadControl {
            idle: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            stop_producers: AtomicBool::new(false),
            producers_quiet: AtomicU64::new(0),
            consumer_quiet: AtomicBool::new(false),
        });
        let mut soak = Soak {
            opts: opts.clone(),
            control,
            threads: Vec::new(),
            consumer: None,
            brokers,
            zk,
            net,
            bin,
            tracker: Arc::new(Mutex::new(Tracker::new(opts.partitions as usize))),
            failures: Vec::new(),
            events: Vec::new(),
            isr_restore_ms: Vec::new(),
            idle_samples: Vec::new(),
            start: Instant::now(),
            last_rss_sample: Instant::now(),
            _data: data,
        };
        if !soak.wait(Duration::from_secs(60), |s| s.all_registered())? {
            return Err("the brokers did not all register within 60 s".into());
        }
        soak.create_topic()?;
        soak.say(&format!(
            "cluster up: ZooKeeper {}, brokers {}, topic {TOPIC} with {} partitions",
            soak.zk.connect_string(),
            soak.bootstrap(),
            opts.partitions
        ));
        let bootstrap = soak.bootstrap();
        soak.threads = load::start_producers(
            &bootstrap,
            PRODUCERS,
            opts.rate,
            opts.partitions,
            soak.tracker.clone(),
            soak.control.clone(),
            soak.start,
        );
        soak.consumer = Some(load::start_consumer(
            &bootstrap,
            soak.tracker.clone(),
            soak.control.clone(),
            soak.start,
        ));
        // The offsets topic exists once the group's coordinator was looked up.
        let offsets = opts.offsets_partitions as usize;
        let ok = soak.wait(Duration::from_secs(60), |s| {
            s.metadata(None).is_some_and(|m| {
                m.topics
                    .get(OFFSETS_TOPIC)
                    .is_some_and(|t| t.partitions.len() == offsets)
            })
        })?;
        if !ok {
            soak.fail(format!("{OFFSETS_TOPIC} was not created within 60 s"));
        }
        Ok(soak)
    }

    fn bootstrap(&self) -> String {
        self.brokers
            .values()
            .map(|b| b.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn say(&self, msg: &str) {
        println!("[soak {:7.1}s] {msg}", self.elapsed_s());
    }

    fn fail(&mut self, msg: String) {
        let line = format!("{:.1}s: {msg}", self.elapsed_s());
        println!("[soak {:7.1}s] FAILED: {msg}", self.elapsed_s());
        self.failures.push(line);
    }

    fn create_topic(&mut self) -> Result<(), Abort> {
        let topic = NewTopic {
            name: TOPIC.to_string(),
            partitions: self.opts.partitions,
            replication_factor: 3,
            configs: vec![
                ("min.insync.replicas".into(), "2".into()),
                // Small segments, so rolls happen during the run and replicas' segment
                // boundaries differ.
                ("segment.bytes".into(), "1048576".into()),
            ],
        };
        let mut client = Client::connect(&self.bootstrap(), "soak-admin", Duration::from_secs(30))
            .map_err(|e| format!("connecting to create {TOPIC}: {e}"))?;
        for (t, r) in client
            .create_topics(&[topic], false)
            .map_err(|e| format!("creating {TOPIC}: {e}"))?
        {
            r.map_err(|e| format!("creating {t}: {e}"))?;
        }
        let p = self.opts.partitions as usize;
        let ok = self.wait(Duration::from_secs(120), |s| {
            s.metadata(Some(&[TOPIC])).is_some_and(|m| {
                m.topics.get(TOPIC).is_some_and(|t| {
                    t.partitions.len() == p
                        && t.partitions
                            .values()
                            .all(|p| p.leader >= 0 && p.isr.len() == 3)
                })
            })
        })?;
        if ok {
            Ok(())
        } else {
            Err(format!("{TOPIC} not ready within 120 s"))
        }
    }

    /// Called by every wait: stops on Ctrl-C, samples RSS, notices brokers that died on their
    /// own (a failure; they are started again so the run goes on).
    fn tick(&mut self) -> Result<(), Abort> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
        if self.last_rss_sample.elapsed() >= Duration::from_secs(2) {
            self.last_rss_sample = Instant::now();
            for b in self.brokers.values_mut() {
                b.sample_rss();
            }
        }
        let mut died = Vec::new();
        for b in self.brokers.values_mut() {
            if let Some(status) = b.exited() {
                died.push((b.id, status));
            }
        }
        for (id, status) in died {
            self.fail(format!("broker {id} exited on its own ({status})"));
            let bin = self.bin.clone();
            let b = self.brokers.get_mut(&id).expect("broker");
            b.spawn(&bin);
            if let Err(e) = b.wait_ready(&bin, Duration::from_secs(90)) {
                return Err(format!("restarting broker {id}: {e}"));
            }
        }
        Ok(())
    }

    fn sleep(&mut self, d: Duration) -> Result<(), Abort> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.tick()?;
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(200)));
        }
        Ok(())
    }

    /// Polls `f` (every 200 ms) until true or `within` passed.
    fn wait(
        &mut self,
        within: Duration,
        mut f: impl FnMut(&mut Soak) -> bool,
    ) -> Result<bool, Abort> {
        let deadline = Instant::now() + within;
        loop {
            self.tick()?;
            if f(self) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Broker `id`'s view (`topics` None = all).
    fn view(&self, id: i32, topics: Option<&[&str]>) -> Option<ClusterMetadata> {
        let b = self.brokers.get(&id)?;
        if !b.is_running() {
            return None;
        }
        let mut c = Client::connect(&b.bootstrap(), "soak-monitor", Duration::from_secs(2)).ok()?;
        c.refresh_metadata(topics).ok().cloned()
    }

    fn running(&self) -> Vec<i32> {
        self.brokers
            .values()
            .filter(|b| b.is_running())
            .map(|b| b.id)
            .collect()
    }

    /// The first running broker's view.
    fn metadata(&self, topics: Option<&[&str]>) -> Option<ClusterMetadata> {
        self.running().iter().find_map(|id| self.view(*id, topics))
    }

    /// Every running broker lists every running broker.
    fn all_registered(&self) -> bool {
        let running = self.running();
        running.iter().all(|id| {
            self.view(*id, Some(&[]))
                .is_some_and(|m| running.iter().all(|r| m.brokers.contains_key(r)))
        })
    }

    /// Partitions of the soak topic `id` leads, by the first answering broker's view.
    fn led_by(&self, id: i32) -> Vec<usize> {
        self.metadata(Some(&[TOPIC]))
            .and_then(|m| m.topics.get(TOPIC).cloned())
            .map(|t| {
                t.partitions
                    .values()
                    .filter(|p| p.leader == id)
                    .map(|p| p.partition as usize)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Partitions (soak and offsets topics) whose ISR or leadership is not as it should be in
    /// broker `id`'s view: `(short ISR, not led by the preferred replica)`.
    fn health(m: &ClusterMetadata) -> (usize, usize) {
        let mut short = 0;
        let mut unpreferred = 0;
        for t in [TOPIC, OFFSETS_TOPIC] {
            if let Some(t) = m.topics.get(t) {
                for p in t.partitions.values() {
                    if p.leader < 0 || p.isr.len() < p.replicas.len() {
                        short += 1;
                    }
                    if p.replicas.first() != Some(&p.leader) {
                        unpreferred += 1;
                    }
                }
            }
        }
        (short, unpreferred)
    }

    /// Which partitions each running broker sees with a short ISR or no leader (the first few,
    /// with leader and ISR as that broker sees them), for a failure message.
    fn short_isrs(&self) -> String {
        let mut out = Vec::new();
        for id in self.running() {
            let Some(m) = self.view(id, Some(&[TOPIC, OFFSETS_TOPIC])) else {
                out.push(format!("broker {id}: no answer"));
                continue;
            };
            let short: Vec<String> = m
                .topics
                .values()
                .flat_map(|t| t.partitions.values().map(move |p| (t, p)))
                .filter(|(_, p)| p.leader < 0 || p.isr.len() < p.replicas.len())
                .map(|(t, p)| {
                    format!(
                        "{}-{} leader {} isr {:?}",
                        t.name, p.partition, p.leader, p.isr
                    )
                })
                .collect();
            if !short.is_empty() {
                let n = short.len();
                let first = short.into_iter().take(5).collect::<Vec<_>>().join(", ");
                out.push(format!("broker {id} sees {n} ({first})"));
            }
        }
        out.join("; ")
    }

    /// Counts over every running broker's view: the largest numbers of short ISRs and of
    /// partitions not led by their preferred replica; None if a broker did not answer.
    fn cluster_health(&self) -> Option<(usize, usize)> {
        let mut worst = (0, 0);
        for id in self.running() {
            let m = self.view(id, Some(&[TOPIC, OFFSETS_TOPIC]))?;
            let (s, u) = Soak::health(&m);
            worst = (worst.0.max(s), worst.1.max(u));
        }
        Some(worst)
    }

    /// `(topic, partition) -> log end offset` on broker `id` (from its metrics).
    fn log_ends(&self, id: i32) -> Option<BTreeMap<(String, i32), i64>> {
        let text = self.brokers.get(&id)?.metrics()?;
        Some(
            procs::partition_gauge(&text, "shardlog_log_end_offset")
                .into_iter()
                .map(|(t, p, v)| ((t, p), v))
                .collect(),
        )
    }

    /// Whether broker `id` has caught up: for every partition it replicates, its log end has
    /// reached the leader's log end as it was in `target`.
    fn caught_up(&self, id: i32, target: &BTreeMap<(String, i32), i64>) -> bool {
        let Some(mine) = self.log_ends(id) else {
            return false;
        };
        target
            .iter()
            .all(|(k, leo)| mine.get(k).is_some_and(|m| m >= leo))
    }

    /// The leaders' log ends, for the partitions broker `id` replicates (from metadata and
    /// the leaders' metrics).
    fn leader_log_ends_for(&self, id: i32) -> Option<BTreeMap<(String, i32), i64>> {
        let m = self.metadata(Some(&[TOPIC, OFFSETS_TOPIC]))?;
        let mut ends: BTreeMap<i32, BTreeMap<(String, i32), i64>> = BTreeMap::new();
        let mut target = BTreeMap::new();
        for t in m.topics.values() {
            for p in t.partitions.values() {
                if !p.replicas.contains(&id) || p.leader == id || p.leader < 0 {
                    continue;
                }
                let leader_ends = match ends.entry(p.leader) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(self.log_ends(p.leader)?)
                    }
                };
                let key = (t.name.clone(), p.partition);
                if let Some(leo) = leader_ends.get(&key) {
                    target.insert(key, *leo);
                }
            }
        }
        Some(target)
    }

    /// After an event: the `returned` brokers are back. Checks that every broker registers,
    /// each returned broker catches up, the ISRs are full within [`ISR_GRACE`] of that, and
    /// leadership goes back to the preferred replicas. Records the times.
    fn recover(&mut self, kind: &'static str, returned: &[i32]) -> Result<(), Abort> {
        let back = Instant::now();
        if !self.wait(Duration::from_secs(60), |s| s.all_registered())? {
            self.fail(format!(
                "after {kind}: brokers did not all see each other within 60 s"
            ));
        }
        let registered = Instant::now();
        let mut caught = registered;
        for &id in returned {
            let target = self
                .wait_value(Duration::from_secs(30), |s| s.leader_log_ends_for(id))?
                .unwrap_or_default();
            if !self.wait(Duration::from_secs(90), |s| s.caught_up(id, &target))? {
                self.fail(format!(
                    "after {kind}: broker {id} did not catch up with its leaders within 90 s"
                ));
            }
            caught = Instant::now();
        }
        let healthy = |s: &mut Soak| s.cluster_health().is_some_and(|(short, _)| short == 0);
        let mut full = self.wait(ISR_GRACE, healthy)?;
        // Past the grace: what each broker sees short, for the failure message.
        let late = (!full).then(|| self.short_isrs());
        if !full {
            full = self.wait(Duration::from_secs(60), healthy)?;
        }
        let isr_at = Instant::now();
        if !full {
            let h = self.cluster_health();
            self.fail(format!(
                "after {kind}: ISRs not full {:.0} s after the brokers were back and caught up \
                 (short ISRs, unpreferred leaders: {h:?}); short at the limit: {}",
                isr_at.duration_since(caught).as_secs_f64(),
                late.unwrap_or_default()
            ));
        } else {
            let restore = isr_at.duration_since(registered).as_secs_f64() * 1000.0;
            let after_caught = isr_at.saturating_duration_since(caught);
            self.isr_restore_ms.push((self.elapsed_s(), kind, restore));
            if after_caught > ISR_GRACE {
                self.fail(format!(
                    "after {kind}: ISRs full only {:.1} s after the brokers were back and \
                     caught up (limit {} s); short at the limit: {}",
                    after_caught.as_secs_f64(),
                    ISR_GRACE.as_secs(),
                    late.unwrap_or_default()
                ));
            }
        }
        let limit = Duration::from_secs(REBALANCE_INTERVAL_S * 3 + 30);
        let preferred = self.wait(limit, |s| {
            s.cluster_health()
                .is_some_and(|(short, u)| short == 0 && u == 0)
        })?;
        if preferred {
            let ms = back.elapsed().as_secs_f64() * 1000.0;
            self.events.push(EventRecord {
                kind: "rebalance",
                victim: returned.first().copied().filter(|_| returned.len() == 1),
                at_s: self.elapsed_s(),
                all_ack_ms: Some(ms),
                note: format!("after {kind}"),
                ..EventRecord::default()
            });
        } else {
            let h = self.cluster_health();
            self.fail(format!(
                "after {kind}: leadership not back on the preferred replicas within {} s \
                 (short ISRs, unpreferred leaders: {h:?})",
                limit.as_secs()
            ));
        }
        Ok(())
    }

    fn wait_value<T>(
        &mut self,
        within: Duration,
        mut f: impl FnMut(&mut Soak) -> Option<T>,
    ) -> Result<Option<T>, Abort> {
        let mut out = None;
        self.wait(within, |s| {
            out = f(s);
            out.is_some()
        })?;
        Ok(out)
    }

    /// Waits until every partition in `partitions` had an acknowledgement after `t` (at most
    /// `within`); returns (first, all) in ms after `t`.
    fn acks_resumed(
        &mut self,
        partitions: &[usize],
        t: Instant,
        within: Duration,
    ) -> Result<(Option<f64>, Option<f64>), Abort> {
        let tracker = self.tracker.clone();
        let done = self.wait(within, |_| {
            let tr = tracker.lock().unwrap();
            partitions
                .iter()
                .all(|p| tr.first_ack_after(*p, t).is_some())
        })?;
        let tr = tracker.lock().unwrap();
        let firsts: Vec<Instant> = partitions
            .iter()
            .filter_map(|p| tr.first_ack_after(*p, t))
            .collect();
        let ms = |i: &Instant| i.duration_since(t).as_secs_f64() * 1000.0;
        let first = firsts.iter().min().map(ms);
        let all = if done {
            firsts.iter().max().map(ms)
        } else {
            None
        };
        Ok((first, all))
    }

    fn record(
        &mut self,
        kind: &'static str,
        victim: Option<i32>,
        at: Instant,
        partitions: &[usize],
        acks: (Option<f64>, Option<f64>),
    ) {
        let rec = EventRecord {
            kind,
            victim,
            at_s: at.duration_since(self.start).as_secs_f64(),
            first_ack_ms: acks.0,
            all_ack_ms: acks.1,
            partitions: partitions.len(),
            note: String::new(),
        };
        self.say(&format!(
            "{kind} {}: first ack {} ms, all {} partitions acked {} ms",
            victim.map(|v| format!("broker {v}")).unwrap_or_default(),
            fmt_ms(rec.first_ack_ms),
            rec.partitions,
            fmt_ms(rec.all_ack_ms),
        ));
        if acks.1.is_none() && !partitions.is_empty() {
            self.fail(format!(
                "{kind}: acknowledgements did not resume on every affected partition"
            ));
        }
        self.events.push(rec);
    }

    fn session(&self) -> Duration {
        Duration::from_millis(self.opts.session_timeout_ms)
    }

    /// How long acknowledgements may take to resume after a fault.
    fn ack_limit(&self) -> Duration {
        self.session() * 2 + Duration::from_secs(30)
    }

    fn rounds(&mut self) -> Result<(), Abort> {
        let mut round = 0;
        loop {
            self.say(&format!("round {round}"));
            let k = RESTARTED[round % RESTARTED.len()];
            self.kill9(k)?;
            let s = RESTARTED[(round + 1) % RESTARTED.len()];
            self.sigterm(s)?;
            self.leader_sigstop(BROKERS[round % BROKERS.len()])?;
            self.zk_pause()?;
            self.leader_partition(BROKERS[(round + 1) % BROKERS.len()])?;
            self.idle_window()?;
            round += 1;
            if self.start.elapsed() >= self.opts.duration {
                return Ok(());
            }
        }
    }

    fn restart(&mut self, id: i32) -> Result<(), Abort> {
        let bin = self.bin.clone();
        let b = self.brokers.get_mut(&id).expect("broker");
        b.spawn(&bin);
        b.wait_ready(&bin, Duration::from_secs(90))
    }

    fn kill9(&mut self, id: i32) -> Result<(), Abort> {
        let led = self.led_by(id);
        let t = Instant::now();
        self.brokers.get_mut(&id).expect("broker").kill9();
        let limit = self.ack_limit();
        let acks = self.acks_resumed(&led, t, limit)?;
        self.record("kill9", Some(id), t, &led, acks);
        self.restart(id)?;
        self.recover("kill9", &[id])
    }

    fn sigterm(&mut self, id: i32) -> Result<(), Abort> {
        let led = self.led_by(id);
        let t = Instant::now();
        if let Err(e) = self
            .brokers
            .get_mut(&id)
            .expect("broker")
            .stop(Duration::from_secs(60))
        {
            self.fail(format!("sigterm: {e}"));
        }
        let limit = self.ack_limit();
        let acks = self.acks_resumed(&led, t, limit)?;
        self.record("sigterm", Some(id), t, &led, acks);
        self.restart(id)?;
        self.recover("sigterm", &[id])
    }

    fn leader_sigstop(&mut self, id: i32) -> Result<(), Abort> {
        let led = self.led_by(id);
        let t = Instant::now();
        self.brokers.get_mut(&id).expect("broker").sigstop();
        let past_session = self.session() + Duration::from_secs(3);
        let limit = self.ack_limit();
        let acks = self.acks_resumed(&led, t, limit)?;
        let rest = past_session.saturating_sub(t.elapsed());
        self.sleep(rest)?;
        self.brokers.get_mut(&id).expect("broker").sigcont();
        self.record("leader-sigstop", Some(id), t, &led, acks);
        self.recover("leader-sigstop", &[id])
    }

    fn zk_pause(&mut self) -> Result<(), Abort> {
        self.zk.sigstop();
        self.sleep(self.session() + Duration::from_secs(3))?;
        self.zk.sigcont();
        let t = Instant::now();
        let all: Vec<usize> = (0..self.opts.partitions as usize).collect();
        let limit = self.ack_limit();
        let acks = self.acks_resumed(&all, t, limit)?;
        self.record("zk-pause", None, t, &all, acks);
        self.recover("zk-pause", &BROKERS)
    }

    fn leader_partition(&mut self, id: i32) -> Result<(), Abort> {
        let led = self.led_by(id);
        let t = Instant::now();
        if let Err(e) = self.net.isolate(id) {
            let _ = self.net.heal();
            return Err(format!("cannot cut broker {id} off: {e}"));
        }
        // The soak's own view of the cut-off broker is gone too.
        self.brokers
            .get_mut(&id)
            .expect("broker")
            .set_unreachable(true);
        let past_session = self.session() + Duration::from_secs(5);
        let limit = self.ack_limit();
        let acks = self.acks_resumed(&led, t, limit)?;
        let rest = past_session.saturating_sub(t.elapsed());
        self.sleep(rest)?;
        let healed = self.net.heal();
        self.brokers
            .get_mut(&id)
            .expect("broker")
            .set_unreachable(false);
        if let Err(e) = healed {
            return Err(format!("cannot heal the partition of broker {id}: {e}"));
        }
        self.record("leader-partition", Some(id), t, &led, acks);
        self.recover("leader-partition", &[id])
    }

    /// No client traffic: each broker's CPU and Fetch request rate over `opts.idle`.
    fn idle_window(&mut self) -> Result<(), Abort> {
        self.control.idle.store(true, Ordering::SeqCst);
        let control = self.control.clone();
        let quiet = self.wait(Duration::from_secs(60), |_| {
            control.producers_quiet.load(Ordering::SeqCst) == u64::from(PRODUCERS)
                && control.consumer_quiet.load(Ordering::SeqCst)
        })?;
        if !quiet {
            self.fail("idle: the clients did not go quiet within 60 s".into());
        }
        // Let the last high watermarks reach the followers and the group's leave settle.
        self.sleep(Duration::from_secs(3))?;
        let before: Vec<(i32, Option<u64>, Option<f64>)> = self
            .brokers
            .values()
            .map(|b| (b.id, b.cpu_ticks(), b.metrics().map(|m| fetches(&m))))
            .collect();
        let t0 = Instant::now();
        self.sleep(self.opts.idle)?;
        let secs = t0.elapsed().as_secs_f64();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let connections_per_leader = ((BROKERS.len() - 1) * SHARDS) as f64;
        let limit = connections_per_leader * IDLE_FETCHES_PER_CONNECTION + 1.0;
        for (id, cpu0, f0) in before {
            let b = &self.brokers[&id];
            let (Some(c0), Some(c1)) = (cpu0, b.cpu_ticks()) else {
                self.fail(format!("idle: no CPU figures for broker {id}"));
                continue;
            };
            let (Some(f0), Some(f1)) = (f0, b.metrics().map(|m| fetches(&m))) else {
                self.fail(format!("idle: no metrics from broker {id}"));
                continue;
            };
            let cpu_share = (c1 - c0) as f64 / hz / secs;
            let fetches_per_s = (f1 - f0) / secs;
            let sample = IdleSample {
                at_s: self.elapsed_s(),
                broker: id,
                cpu_share,
                fetches_per_s,
                fetch_limit_per_s: limit,
            };
            self.say(&format!(
                "idle: broker {id} CPU {:.2} % of a core, {fetches_per_s:.1} Fetch requests/s \
                 (limit {limit:.1})",
                cpu_share * 100.0
            ));
            if cpu_share > IDLE_CPU_MAX {
                self.fail(format!(
                    "idle: broker {id} used {:.1} % of a core (limit {:.0} %)",
                    cpu_share * 100.0,
                    IDLE_CPU_MAX * 100.0
                ));
            }
            if fetches_per_s > limit {
                self.fail(format!(
                    "idle: broker {id} served {fetches_per_s:.1} Fetch requests/s with no \
                     traffic (long polling allows {limit:.1})"
                ));
            }
            self.idle_samples.push(sample);
        }
        self.control.idle.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Stops the load, checks records, stops the brokers, compares replicas, scans logs,
    /// checks RSS, writes the reports.
    fn finish(mut self) -> Outcome {
        let interrupted = INTERRUPTED.load(Ordering::SeqCst);
        self.control.idle.store(false, Ordering::SeqCst);
        self.control.stop_producers.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        let mut read_back = None;
        if !interrupted {
            let tracker = self.tracker.clone();
            let caught_up = self
                .wait(Duration::from_secs(90), |_| {
                    tracker.lock().unwrap().unconsumed().0 == 0
                })
                .unwrap_or(false);
            if !caught_up {
                let (n, examples) = tracker.lock().unwrap().unconsumed();
                self.fail(format!(
                    "the consumer group never delivered {n} acknowledged records (partition, \
                     offset: {examples:?})"
                ));
            }
        }
        self.control.stop.store(true, Ordering::SeqCst);
        if let Some(c) = self.consumer.take() {
            let _ = c.join();
        }
        {
            let tr = self.tracker.lock().unwrap();
            let fatal = tr.fatal_errors.clone();
            drop(tr);
            for f in fatal {
                self.fail(f);
            }
        }
        if !interrupted {
            let tr = self.tracker.clone();
            let rb =
                checks::read_back(&self.bootstrap(), self.opts.partitions, &tr.lock().unwrap());
            if rb.lost_count > 0 {
                self.fail(format!(
                    "{} acknowledged records lost, e.g. {:?}",
                    rb.lost_count, rb.lost
                ));
            }
            if rb.duplicated_count > 0 {
                self.fail(format!(
                    "{} records duplicated, e.g. {:?}",
                    rb.duplicated_count, rb.duplicated
                ));
            }
            for e in &rb.errors {
                self.fail(format!("read back: {e}"));
            }
            read_back = Some(rb);
        }
        // Stop every broker cleanly, then compare the replicas on disk.
        for id in BROKERS {
            let r = self
                .brokers
                .get_mut(&id)
                .expect("broker")
                .stop(Duration::from_secs(90));
            if let Err(e) = r {
                self.fail(format!("final stop: {e}"));
            }
        }
        // Keep every replica of a partition with a lost or duplicated record for a post-mortem
        // (`cargo cli segment` dumps them).
        if let Some(rb) = &read_back {
            for p in &rb.problem_partitions {
                for b in self.brokers.values() {
                    let from = b.data_dir.join(format!("{TOPIC}-{p}"));
                    let to = self
                        .opts
                        .out
                        .join(format!("raw/data/broker-{}/{TOPIC}-{p}", b.id));
                    copy_dir(&from, &to);
                }
            }
        }
        let mut compared = 0;
        if !interrupted {
            let dirs: Vec<(i32, PathBuf)> = self
                .brokers
                .values()
                .map(|b| (b.id, b.data_dir.clone()))
                .collect();
            let (n, problems) = checks::compare_replicas(&dirs);
            compared = n;
            let total = problems.len();
            for p in problems.into_iter().take(20) {
                self.fail(format!("replicas differ: {p}"));
            }
            if total > 20 {
                self.fail(format!("replicas differ in {} more partitions", total - 20));
            }
        }
        let mut scans = BTreeMap::new();
        for b in self.brokers.values() {
            scans.insert(b.id, checks::scan_log(&b.log_path));
        }
        for (id, scan) in &scans {
            let n = scan.unexpected.len();
            for l in scan.unexpected.iter().take(10) {
                let msg = format!("broker {id} log: unexpected {l}");
                self.fail(msg);
            }
            if n > 10 {
                self.fail(format!("broker {id} log: {} more unexpected lines", n - 10));
            }
        }
        let mut rss_lines = Vec::new();
        let rss: Vec<(i32, Vec<RssSeries>)> = self
            .brokers
            .values()
            .map(|b| {
                let mut lives = b.past_rss.clone();
                lives.push(b.rss_kib.clone());
                (b.id, lives)
            })
            .collect();
        for (id, lives) in rss {
            for (n, life) in lives.iter().enumerate() {
                match checks::rss_growth(life, RSS_MIN_LIFETIME_S) {
                    Ok(Some((second, last))) => rss_lines.push(format!(
                        "broker {id} process {n}: {:.0} s, RSS mean {} MiB (2nd quarter) -> {} \
                         MiB (last quarter), max {} MiB",
                        life.last().map(|l| l.0).unwrap_or(0.0),
                        second / 1024,
                        last / 1024,
                        life.iter().map(|l| l.1).max().unwrap_or(0) / 1024
                    )),
                    Ok(None) => {}
                    Err(e) => self.fail(format!("broker {id} process {n}: {e}")),
                }
            }
        }
        let summary = self.report(read_back.as_ref(), compared, &scans, &rss_lines);
        Outcome {
            failures: self.failures.clone(),
            summary,
            out_dir: self.opts.out.clone(),
        }
    }

    fn report(
        &mut self,
        read_back: Option<&checks::ReadBack>,
        compared: usize,
        scans: &BTreeMap<i32, checks::LogScan>,
        rss_lines: &[String],
    ) -> String {
        let out = self.opts.out.clone();
        let _ = std::fs::create_dir_all(out.join("raw/logs"));
        for b in self.brokers.values() {
            let _ = std::fs::copy(
                &b.log_path,
                out.join("raw/logs").join(format!("broker-{}.log", b.id)),
            );
        }
        let _ = std::fs::copy(self.zk.log_path(), out.join("raw/logs/zookeeper.log"));
        let tr = self.tracker.lock().unwrap();
        let mut s = String::new();
        let _ = writeln!(s, "# Shardlog soak");
        let _ = writeln!(
            s,
            "\n{} after {:.0} s (asked: {} s), session timeout {} ms, {} partitions (RF 3, \
             min.insync.replicas 2) + {} of {OFFSETS_TOPIC}, {} records/s offered, {} events\n",
            if self.failures.is_empty() {
                "PASSED"
            } else {
                "FAILED"
            },
            self.elapsed_s(),
            self.opts.duration.as_secs(),
            self.opts.session_timeout_ms,
            self.opts.partitions,
            self.opts.offsets_partitions,
            self.opts.rate,
            self.events.len()
        );
        let _ = writeln!(
            s,
            "records: {} sent, {} acknowledged, {} delivery errors {:?}; consumer group \
             received {}",
            tr.sent,
            tr.acked_total(),
            tr.delivery_errors.values().sum::<u64>(),
            tr.delivery_errors,
            tr.consumed_total
        );
        if let Some(rb) = read_back {
            let _ = writeln!(
                s,
                "read back: {} records below the high watermarks, {} acknowledged lost, {} \
                 duplicated",
                rb.records_read, rb.lost_count, rb.duplicated_count
            );
        }
        let _ = writeln!(s, "replicas compared byte for byte: {compared} partitions");
        let _ = writeln!(s, "\n## Failover (ms)\n");
        let _ = writeln!(
            s,
            "| event | count | first ack median | first ack max | all partitions median | all partitions max |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        let mut kinds: Vec<&'static str> = self.events.iter().map(|e| e.kind).collect();
        kinds.sort();
        kinds.dedup();
        let mut json_kinds = serde_json::Map::new();
        for k in &kinds {
            let evs: Vec<&EventRecord> = self.events.iter().filter(|e| e.kind == *k).collect();
            let first: Vec<f64> = evs.iter().filter_map(|e| e.first_ack_ms).collect();
            let all: Vec<f64> = evs.iter().filter_map(|e| e.all_ack_ms).collect();
            let _ = writeln!(
                s,
                "| {k} | {} | {} | {} | {} | {} |",
                evs.len(),
                fmt_ms(median(&first)),
                fmt_ms(max(&first)),
                fmt_ms(median(&all)),
                fmt_ms(max(&all))
            );
            json_kinds.insert(
                k.to_string(),
                serde_json::json!({
                    "count": evs.len(),
                    "first_ack_ms": {"median": median(&first), "max": max(&first)},
                    "all_ack_ms": {"median": median(&all), "max": max(&all)},
                }),
            );
        }
        let isr: Vec<f64> = self.isr_restore_ms.iter().map(|x| x.2).collect();
        let _ = writeln!(
            s,
            "| isr-restore | {} | | | {} | {} |",
            isr.len(),
            fmt_ms(median(&isr)),
            fmt_ms(max(&isr))
        );
        let _ = writeln!(
            s,
            "\nfirst ack: the event -> the first acknowledgement of a record sent after the event to \
             a partition the victim led (zk-pause: from SIGCONT, any partition); all partitions: \
             until every one of them had such an acknowledgement. rebalance: broker back -> every partition led by its \
             preferred replica. isr-restore: brokers back -> every ISR full in every broker's \
             view."
        );
        let _ = writeln!(s, "\n## Idle windows\n");
        for i in &self.idle_samples {
            let _ = writeln!(
                s,
                "- {:.0}s broker {}: CPU {:.2} % of a core, Fetch {:.1}/s (limit {:.1})",
                i.at_s,
                i.broker,
                i.cpu_share * 100.0,
                i.fetches_per_s,
                i.fetch_limit_per_s
            );
        }
        let _ = writeln!(s, "\n## RSS\n");
        for l in rss_lines {
            let _ = writeln!(s, "- {l}");
        }
        for b in self.brokers.values() {
            let max_kib = b
                .past_rss
                .iter()
                .flatten()
                .chain(&b.rss_kib)
                .map(|x| x.1)
                .max()
                .unwrap_or(0);
            let _ = writeln!(
                s,
                "- broker {}: {} processes started, max RSS {} MiB",
                b.id,
                b.starts,
                max_kib / 1024
            );
        }
        let _ = writeln!(s, "\n## Log lines (WARN / ERROR)\n");
        for (id, scan) in scans {
            let expected: Vec<String> = scan
                .expected
                .iter()
                .map(|(i, n)| format!("#{i}: {n}"))
                .collect();
            let _ = writeln!(
                s,
                "- broker {id}: {} WARN, {} ERROR; expected by allow-list entry {}; unexpected {}",
                scan.warn,
                scan.error,
                expected.join(", "),
                scan.unexpected.len()
            );
        }
        let _ = writeln!(s, "\n## Consumer errors (informational)\n");
        for e in tr.consumer_errors.iter().take(30) {
            let _ = writeln!(s, "- {e}");
        }
        let _ = writeln!(s, "\n## Failures\n");
        if self.failures.is_empty() {
            let _ = writeln!(s, "none");
        }
        for f in &self.failures {
            let _ = writeln!(s, "- {f}");
        }
        let _ = std::fs::write(out.join("summary.md"), &s);
        let mut csv = String::from("kind,victim,at_s,partitions,first_ack_ms,all_ack_ms,note\n");
        for e in &self.events {
            let _ = writeln!(
                csv,
                "{},{},{:.1},{},{},{},{}",
                e.kind,
                e.victim.map(|v| v.to_string()).unwrap_or_default(),
                e.at_s,
                e.partitions,
                e.first_ack_ms
                    .map(|v| format!("{v:.0}"))
                    .unwrap_or_default(),
                e.all_ack_ms.map(|v| format!("{v:.0}")).unwrap_or_default(),
                e.note
            );
        }
        for (at, kind, ms) in &self.isr_restore_ms {
            let _ = writeln!(csv, "isr-restore,,{at:.1},,,{ms:.0},after {kind}");
        }
        let _ = std::fs::write(out.join("events.csv"), csv);
        let json = serde_json::json!({
            "passed": self.failures.is_empty(),
            "duration_s": self.elapsed_s(),
            "session_timeout_ms": self.opts.session_timeout_ms,
            "partitions": self.opts.partitions,
            "rate": self.opts.rate,
            "sent": tr.sent,
            "acknowledged": tr.acked_total(),
            "consumed": tr.consumed_total,
            "lost": read_back.map(|r| r.lost_count),
            "duplicated": read_back.map(|r| r.duplicated_count),
            "replicas_compared": compared,
            "events": json_kinds,
            "isr_restore_ms": {"count": isr.len(), "median": median(&isr), "max": max(&isr)},
            "idle": self.idle_samples.iter().map(|i| serde_json::json!({
                "at_s": i.at_s, "broker": i.broker, "cpu_share": i.cpu_share,
                "fetches_per_s": i.fetches_per_s, "limit": i.fetch_limit_per_s})).collect::<Vec<_>>(),
            "failures": self.failures,
        });
        let _ = std::fs::write(
            out.join("summary.json"),
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        );
        s
    }
}

/// Copies the files of directory `from` (not recursively) into `to`, best effort.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::create_dir_all(to);
    if let Ok(entries) = std::fs::read_dir(from) {
        for e in entries.flatten() {
            let _ = std::fs::copy(e.path(), to.join(e.file_name()));
        }
    }
}

/// One process lifetime's RSS samples: (seconds since its start, KiB).
type RssSeries = Vec<(f64, u64)>;

/// Producer threads (each its own idempotent producer).
const PRODUCERS: u32 = 2;

/// Fetch requests served so far, over all versions.
fn fetches(metrics: &str) -> f64 {
    procs::metric_sum(metrics, "shardlog_requests_total", &[("api", "Fetch")])
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    Some(s[s.len() / 2])
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_options_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("60m").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("5x").is_err());
        let args: Vec<String> = [
            "--",
            "--duration",
            "3m",
            "--session-timeout-ms=6000",
            "--partitions",
            "30",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = Options::parse(&args).unwrap();
        assert_eq!(o.duration, Duration::from_secs(180));
        assert_eq!(o.session_timeout_ms, 6000);
        assert_eq!(o.partitions, 30);
        assert!(Options::parse(&["--bogus".to_string()]).is_err());
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(max(&[3.0, 1.0, 2.0]), Some(3.0));
    }
}
