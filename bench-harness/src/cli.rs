//! Command line: parsing, units and validation of every parameter, and the help text.
//!
//! Parsing is hand-written (no argument crate) so every refusal says exactly which parameter is
//! wrong and why; `main` turns a [`CliError`] into exit code 2. Relations between parameters
//! (warm-up shorter than the run, consumers versus partitions, record size versus batch size) are
//! checked here, before any connection is opened.

use std::fmt;
use std::time::Duration;

/// Largest record value the harness builds (a Kafka broker's default `max.message.bytes` is 1 MiB).
pub const RECORD_SIZE_MAX: usize = 16 << 20;
/// The value carries the intended send time (ns since the shared epoch) in its first 8 bytes.
pub const RECORD_SIZE_MIN: usize = 8;
/// Upper bound for one batch; brokers refuse larger batches by default anyway.
pub const BATCH_BYTES_MAX: usize = 64 << 20;
pub const PRODUCERS_MAX: usize = 256;
pub const CONSUMERS_MAX: usize = 256;
pub const CONNECTIONS_MAX: usize = 64;
pub const IN_FLIGHT_MAX: usize = 128;
pub const PARTITIONS_MAX: i32 = 10_000;
/// Default run length when neither `--duration` nor `--messages` is given.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Produce only; latency is the produce acknowledgement.
    Produce,
    /// Consume only, from earliest or tailing.
    Consume,
    /// Produce and consume together; adds end-to-end latency.
    EndToEnd,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::EndToEnd => "e2e",
        }
    }
    pub fn produces(self) -> bool {
        matches!(self, Mode::Produce | Mode::EndToEnd)
    }
    pub fn consumes(self) -> bool {
        matches!(self, Mode::Consume | Mode::EndToEnd)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Lz4,
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
    /// Record batch attribute bits 0-2.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }
}

/// How record keys are chosen; keys also choose the partition (Kafka's murmur2 partitioner).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    /// Null keys; batches go to partitions in turn (sticky, like Kafka's default partitioner).
    None,
    /// Keys `0..n` drawn uniformly.
    Uniform { n: u64 },
    /// Keys `0..n` drawn with probability proportional to `1 / (k + 1)^s`.
    Zipf { n: u64, s: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// Random bytes: incompressible, the worst case for compression and the honest one for I/O.
    Random,
    /// Lower-case words: compresses about like log lines (2-4x).
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
}

/// Every parameter of one run, validated.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub bootstrap: Vec<String>,
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub record_size: usize,
    pub keys: KeyDist,
    pub payload: PayloadKind,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub acks: Acks,
    pub compression: Codec,
    pub producers: usize,
    pub consumers: usize,
    pub group: Option<String>,
    pub connections: usize,
    pub max_in_flight: usize,
    pub duration: Option<Duration>,
    pub messages: Option<u64>,
    pub warmup: Duration,
    /// Records per second over all producers; `None` is unlimited (closed loop).
    pub rate: Option<f64>,
    pub from: StartFrom,
    pub fetch_max_bytes: i32,
    pub partition_max_bytes: i32,
    pub fetch_max_wait: Duration,
    pub request_timeout: Duration,
    pub interval: Duration,
    pub out_dir: String,
    pub name: Option<String>,
    pub client_id: String,
    pub quiet: bool,
    /// `--transactional`: every producer connection produces in transactions.
    pub transactional: bool,
    /// How long each transaction stays open before it is committed.
    pub transaction_interval: Duration,
}

impl Options {
    /// Defaults for `mode`, before any flag is applied.
    pub fn defaults(mode: Mode) -> Options {
        Options {
            mode,
            bootstrap: vec!["127.0.0.1:9092".to_string()],
            topic: "shardlog-bench".to_string(),
            partitions: 1,
            replication_factor: 1,
            record_size: 1024,
            keys: KeyDist::None,
            payload: PayloadKind::Random,
            batch_bytes: 64 * 1024,
            linger: Duration::from_millis(5),
            acks: Acks::Leader,
            compression: Codec::None,
            producers: 1,
            consumers: 1,
            group: None,
            connections: 1,
            max_in_flight: 5,
            duration: None,
            messages: None,
            warmup: Duration::ZERO,
            rate: None,
            from: if mode == Mode::Consume {
                StartFrom::Earliest
            } else {
                StartFrom::Latest
            },
            fetch_max_bytes: 50 << 20,
            partition_max_bytes: 8 << 20,
            fetch_max_wait: Duration::from_millis(100),
            request_timeout: Duration::from_secs(30),
            interval: Duration::from_secs(1),
            out_dir: "shardlog-bench-results".to_string(),
            name: None,
            client_id: "shardlog-bench".to_string(),
            quiet: false,
            transactional: false,
            transaction_interval: Duration::from_millis(100),
        }
    }

    /// Records in one full batch: as many as fit in `batch_bytes`, at least one.
    pub fn records_per_batch(&self) -> usize {
        (self.batch_bytes / (self.record_size + self.key_len() + RECORD_OVERHEAD_ESTIMATE)).max(1)
    }

    /// Bytes of every key (keys are fixed width so all records are the same size).
    pub fn key_len(&self) -> usize {
        match self.keys {
            KeyDist::None => 0,
            _ => KEY_LEN,
        }
    }

    /// A one-line description of the workload for captions, file names and the table.
    pub fn describe(&self) -> String {
        if self.mode == Mode::Consume {
            return format!(
                "consume {} from {}, {} consumer{}{}, fetch max {} wait {} ms",
                self.topic,
                if self.from == StartFrom::Earliest {
                    "earliest"
                } else {
                    "latest"
                },
                self.consumers,
                if self.consumers == 1 { "" } else { "s" },
                match &self.group {
                    Some(g) => format!(" in group {g}"),
                    None => String::new(),
                },
                human_bytes(self.fetch_max_bytes as f64),
                self.fetch_max_wait.as_millis()
            );
        }
        let mut s = format!(
            "{} {} x {} partition{}, acks={}, batch {} linger {} ms, {}",
            self.mode.name(),
            human_bytes(self.record_size as f64),
            self.partitions,
            if self.partitions == 1 { "" } else { "s" },
            self.acks.name(),
            human_bytes(self.batch_bytes as f64),
            self.linger.as_millis(),
            self.compression.name(),
        );
        if self.mode.produces() {
            s.push_str(&format!(
                ", {} producer{} x {} conn, in-flight {}",
                self.producers,
                if self.producers == 1 { "" } else { "s" },
                self.connections,
                self.max_in_flight
            ));
            match self.rate {
                Some(r) => s.push_str(&format!(", rate {}/s", human_count(r))),
                None => s.push_str(", unlimited rate"),
            }
            if self.transactional {
                s.push_str(&format!(
                    ", transactions of {} ms",
                    self.transaction_interval.as_millis()
                ));
            }
        }
        if self.mode.consumes() {
            s.push_str(&format!(
                ", {} consumer{}{}",
                self.consumers,
                if self.consumers == 1 { "" } else { "s" },
                match &self.group {
                    Some(g) => format!(" in group {g}"),
                    None => String::new(),
                }
            ));
        }
        match self.keys {
            KeyDist::None => {}
            KeyDist::Uniform { n } => s.push_str(&format!(", keys uniform over {n}")),
            KeyDist::Zipf { n, s: e } => s.push_str(&format!(", keys zipf({e}) over {n}")),
        }
        s
    }

    /// File-name-safe label for this run.
    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        if self.mode == Mode::Consume {
            return format!("consume-{}", self.topic);
        }
        let mut s = format!(
            "{}-{}b-p{}-acks{}-{}",
            self.mode.name(),
            self.record_size,
            self.partitions,
            self.acks.name(),
            self.compression.name()
        );
        if let Some(r) = self.rate {
            s.push_str(&format!("-r{}", r as u64));
        }
        if self.transactional {
            s.push_str(&format!("-txn{}", self.transaction_interval.as_millis()));
        }
        s
    }
}

/// Parameters of a `commit-offsets` run: OffsetCommit requests for one simple group
/// (generation -1, empty member id, as an admin tool commits), each committing `partitions`
/// offsets of `topic`, so each request appends `partitions` records to the group's
/// `__consumer_offsets` partition; `commits` records in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOptions {
    pub bootstrap: Vec<String>,
    pub client_id: String,
    pub request_timeout: Duration,
    pub group: String,
    pub topic: String,
    pub partitions: i32,
    /// Offsets committed in all (records appended to `__consumer_offsets`).
    pub commits: u64,
    /// OffsetCommit requests in flight on the coordinator connection.
    pub max_in_flight: usize,
    pub interval: Duration,
    /// Where `LABEL.json` goes; no file without it.
    pub out_dir: Option<String>,
    pub name: Option<String>,
    pub quiet: bool,
}

/// Largest `--commits` (10^12 records would be about 100 TB of `__consumer_offsets`).
pub const COMMITS_MAX: u64 = 1_000_000_000_000;

impl CommitOptions {
    pub fn defaults() -> CommitOptions {
        CommitOptions {
            bootstrap: vec!["127.0.0.1:9092".to_string()],
            client_id: "shardlog-bench".to_string(),
            request_timeout: Duration::from_secs(30),
            group: String::new(),
            topic: "shardlog-bench".to_string(),
            partitions: 1,
            commits: 0,
            max_in_flight: 5,
            interval: Duration::from_secs(1),
            out_dir: None,
            name: None,
            quiet: false,
        }
    }

    /// OffsetCommit requests the run sends: every one commits `--partitions` offsets except
    /// the last, which commits what is left (partitions 0..rest).
    pub fn requests(&self) -> u64 {
        self.commits.div_ceil(self.partitions as u64)
    }

    /// Offsets committed by request `index` (0-based).
    pub fn partitions_in_request(&self, index: u64) -> i32 {
        let before = index * self.partitions as u64;
        (self.commits - before).min(self.partitions as u64) as i32
    }

    pub fn describe(&self) -> String {
        format!(
            "commit-offsets group {} over {} x {} partition{}, {} commits in {} request{}, \
             in-flight {}",
            self.group,
            self.topic,
            self.partitions,
            if self.partitions == 1 { "" } else { "s" },
            self.commits,
            self.requests(),
            if self.requests() == 1 { "" } else { "s" },
            self.max_in_flight
        )
    }

    /// File-name-safe label for this run.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("commit-offsets-p{}-n{}", self.partitions, self.commits),
        }
    }
}

/// Fixed key width: `key-` and twelve digits.
pub const KEY_LEN: usize = 16;
/// Per-record framing in a v2 batch for small records (length, attributes, deltas, lengths).
pub const RECORD_OVERHEAD_ESTIMATE: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Box<Options>),
    /// `commit-offsets`: OffsetCommit load for one simple group.
    CommitOffsets(Box<CommitOptions>),
    Help,
    Version,
}

/// A refused command line; `main` prints it and exits with status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

fn err<T>(msg: impl Into<String>) -> Result<T, CliError> {
    Err(CliError(msg.into()))
}

// Options is only compared in tests; floats make a derived Eq impossible, so compare by Debug.
impl PartialEq for Options {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}
impl Eq for Options {}

pub const USAGE: &str = "\
shardlog-bench: a Kafka-protocol load generator (produce, consume, end-to-end latency)

USAGE:
    shardlog-bench <produce|consume|e2e> [OPTIONS]
    shardlog-bench commit-offsets --group ID --commits N [OPTIONS]

MODES:
    produce     produce only; latency = produce acknowledgement
    consume     consume only, from earliest (default) or tailing (--from latest)
    e2e         produce and consume together; adds end-to-end latency
    commit-offsets
                OffsetCommit requests for one simple group (generation -1, no
                member id), each committing --partitions offsets of --topic
                (one __consumer_offsets record each), --commits records in
                all, as fast as possible; reports commits/s. Takes
                --bootstrap, --client-id, --request-timeout, --topic (not
                created, need not exist), --partitions (offsets per request),
                --max-in-flight (requests in flight) [5], --interval, --out
                (LABEL.json only when given), --name, --quiet, and:
    --group ID                  the group committing (required)
    --commits N                 offsets committed in all (10k, 10M, ..)
                                (required)

CONNECTION:
    --bootstrap HOST:PORT[,..]  broker(s) to bootstrap from            [127.0.0.1:9092]
    --client-id ID              Kafka client id                         [shardlog-bench]
    --request-timeout DUR       a request without answer for this long  [30s]
                                means the broker is gone
TOPIC:
    --topic NAME                created if missing                      [shardlog-bench]
    --partitions N              partition count when creating           [1]
    --replication-factor N      replication factor when creating        [1]
PRODUCE:
    --record-size BYTES         value size, at least 8 (1KiB, 100, ..)  [1KiB]
    --keys DIST                 none | uniform:N | zipf:N[:S]           [none]
    --payload KIND              random | text                           [random]
    --batch-bytes BYTES         batch size                              [64KiB]
    --linger DUR                wait for a batch to fill (5ms, 0, ..)   [5ms]
                                (open loop only: unlimited runs always
                                have records ready and send full batches)
    --acks 0|1|all                                                      [1]
    --compression CODEC         none | lz4 | zstd                       [none]
    --producers N               independent producer clients            [1]
    --connections N             connections per producer and broker     [1]
    --max-in-flight N           produce requests in flight per conn     [5]
    --rate R                    records/s over all producers, open loop [unlimited]
                                (50k, 1.5M, unlimited); latency counts
                                from the intended send time
    --transactional             each producer connection is a transactional
                                producer (id shardlog-bench-<pid>-<n>);
                                needs --acks all
    --transaction-interval-ms N commit every N ms                       [100]
CONSUME:
    --consumers N               consumers                               [1]
    --group ID                  join consumer group ID (classic protocol)
                                instead of splitting partitions directly
    --from earliest|latest      start offset                            [earliest for
                                                                        consume, latest e2e]
    --fetch-max-bytes BYTES                                             [50MiB]
    --partition-max-bytes BYTES                                         [8MiB]
    --fetch-max-wait DUR                                                [100ms]
RUN:
    --duration DUR              run length (30s, 2m, ..)                [30s unless
                                                                        --messages]
    --messages N                records to produce (or consume) in all
    --warmup DUR                excluded from latency and totals        [0s]
    --interval DUR              progress and time series step           [1s]
OUTPUT:
    --out DIR                   JSON and SVG go here                    [shardlog-bench-results]
    --name LABEL                file name stem                          [from the workload]
    --quiet                     no live progress line
    -h, --help                  this text
    -V, --version

EXIT STATUS:
    0 success, 1 set-up or I/O failure, 2 bad parameters,
    3 the broker went away mid-run (results so far are still written)
";

const FLAGS_WITH_VALUE: &[&str] = &[
    "--bootstrap",
    "--client-id",
    "--request-timeout",
    "--topic",
    "--partitions",
    "--replication-factor",
    "--record-size",
    "--keys",
    "--payload",
    "--batch-bytes",
    "--linger",
    "--acks",
    "--compression",
    "--producers",
    "--connections",
    "--max-in-flight",
    "--rate",
    "--consumers",
    "--group",
    "--from",
    "--fetch-max-bytes",
    "--partition-max-bytes",
    "--fetch-max-wait",
    "--duration",
    "--messages",
    "--warmup",
    "--interval",
    "--transaction-interval-ms",
    "--out",
    "--name",
];

/// Parses the arguments after the program name.
pub fn parse<I, S>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let mut it = args.iter().peekable();
    let mode =
        match it.next().map(String::as_str) {
            None => return err(
                "no mode given: expected one of produce, consume, e2e, commit-offsets (see --help)",
            ),
            Some("-h") | Some("--help") | Some("help") => return Ok(Command::Help),
            Some("-V") | Some("--version") => return Ok(Command::Version),
            Some("produce") => Mode::Produce,
            Some("consume") => Mode::Consume,
            Some("e2e") | Some("produce-consume") => Mode::EndToEnd,
            Some("commit-offsets") => return parse_commit_offsets(it),
            Some(other) => {
                return err(format!(
                "unknown mode '{other}': expected one of produce, consume, e2e, commit-offsets \
                 (see --help)"
            ))
            }
        };
    let mut o = Options::defaults(mode);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--quiet" | "-q" => {
                o.quiet = true;
                continue;
            }
            "--transactional" => {
                o.transactional = true;
                continue;
            }
            _ => {}
        }
        if !FLAGS_WITH_VALUE.contains(&flag.as_str()) {
            let hint = suggest(&flag)
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            return err(format!("unknown option '{flag}'{hint}; see --help"));
        }
        let value = match inline {
            Some(v) => v,
            None => match it.next() {
                Some(v) => v.clone(),
                None => return err(format!("{flag} needs a value")),
            },
        };
        let v = value.as_str();
        let ctx = |e: String| CliError(format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--bootstrap" => o.bootstrap = parse_bootstrap(v).map_err(ctx)?,
            "--client-id" => o.client_id = nonempty(v).map_err(ctx)?,
            "--request-timeout" => o.request_timeout = parse_duration(v).map_err(ctx)?,
            "--topic" => o.topic = parse_topic(v).map_err(ctx)?,
            "--partitions" => {
                o.partitions = parse_int(v, 1, PARTITIONS_MAX as u64).map_err(ctx)? as i32
            }
            "--replication-factor" => {
                o.replication_factor = parse_int(v, 1, i16::MAX as u64).map_err(ctx)? as i16
            }
            "--record-size" => o.record_size = parse_size(v).map_err(ctx)? as usize,
            "--keys" => o.keys = parse_keys(v).map_err(ctx)?,
            "--payload" => {
                o.payload = match v {
                    "random" => PayloadKind::Random,
                    "text" => PayloadKind::Text,
                    _ => return Err(ctx("expected random or text".into())),
                }
            }
            "--batch-bytes" => o.batch_bytes = parse_size(v).map_err(ctx)? as usize,
            "--linger" => o.linger = parse_duration(v).map_err(ctx)?,
            "--acks" => {
                o.acks = match v {
                    "0" => Acks::None,
                    "1" => Acks::Leader,
                    "all" | "-1" => Acks::All,
                    _ => return Err(ctx("expected 0, 1 or all".into())),
                }
            }
            "--compression" => {
                o.compression = match v {
                    "none" => Codec::None,
                    "lz4" => Codec::Lz4,
                    "zstd" => Codec::Zstd,
                    _ => return Err(ctx("expected none, lz4 or zstd".into())),
                }
            }
            "--producers" => {
                o.producers = parse_int(v, 1, PRODUCERS_MAX as u64).map_err(ctx)? as usize
            }
            "--connections" => {
                o.connections = parse_int(v, 1, CONNECTIONS_MAX as u64).map_err(ctx)? as usize
            }
            "--max-in-flight" => {
                o.max_in_flight = parse_int(v, 1, IN_FLIGHT_MAX as u64).map_err(ctx)? as usize
            }
            "--rate" => o.rate = parse_rate(v).map_err(ctx)?,
            "--consumers" => {
                o.consumers = parse_int(v, 1, CONSUMERS_MAX as u64).map_err(ctx)? as usize
            }
            "--group" => o.group = Some(nonempty(v).map_err(ctx)?),
            "--from" => {
                o.from = match v {
                    "earliest" => StartFrom::Earliest,
                    "latest" => StartFrom::Latest,
                    _ => return Err(ctx("expected earliest or latest".into())),
                }
            }
            "--fetch-max-bytes" => {
                o.fetch_max_bytes = parse_size_i32(v).map_err(ctx)?;
            }
            "--partition-max-bytes" => {
                o.partition_max_bytes = parse_size_i32(v).map_err(ctx)?;
            }
            "--fetch-max-wait" => o.fetch_max_wait = parse_duration(v).map_err(ctx)?,
            "--duration" => o.duration = Some(parse_duration(v).map_err(ctx)?),
            "--messages" => o.messages = Some(parse_count(v).map_err(ctx)?),
            "--warmup" => o.warmup = parse_duration(v).map_err(ctx)?,
            "--interval" => o.interval = parse_duration(v).map_err(ctx)?,
            "--transaction-interval-ms" => {
                o.transaction_interval =
                    Duration::from_millis(parse_int(v, 1, 3_600_000).map_err(ctx)?)
            }
            "--out" => o.out_dir = nonempty(v).map_err(ctx)?,
            "--name" => o.name = Some(parse_label(v).map_err(ctx)?),
            _ => unreachable!("flag list and match arms agree"),
        }
    }
    validate(&mut o)?;
    Ok(Command::Run(Box::new(o)))
}

/// The flags `commit-offsets` takes a value for.
const COMMIT_FLAGS_WITH_VALUE: &[&str] = &[
    "--bootstrap",
    "--client-id",
    "--request-timeout",
    "--group",
    "--topic",
    "--partitions",
    "--commits",
    "--max-in-flight",
    "--interval",
    "--out",
    "--name",
];

/// The arguments of `commit-offsets` (after the mode).
fn parse_commit_offsets<'a>(mut it: impl Iterator<Item = &'a String>) -> Result<Command, CliError> {
    let mut o = CommitOptions::defaults();
    let mut commits = None;
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--quiet" | "-q" => {
                o.quiet = true;
                continue;
            }
            _ => {}
        }
        if !COMMIT_FLAGS_WITH_VALUE.contains(&flag.as_str()) {
            if FLAGS_WITH_VALUE.contains(&flag.as_str()) || flag == "--transactional" {
                return err(format!(
                    "{flag} does not apply to commit-offsets; see --help"
                ));
            }
            let hint = suggest_from(&flag, COMMIT_FLAGS_WITH_VALUE, &["--quiet", "--help"])
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            return err(format!("unknown option '{flag}'{hint}; see --help"));
        }
        let value = match inline {
            Some(v) => v,
            None => match it.next() {
                Some(v) => v.clone(),
                None => return err(format!("{flag} needs a value")),
            },
        };
        let v = value.as_str();
        let ctx = |e: String| CliError(format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--bootstrap" => o.bootstrap = parse_bootstrap(v).map_err(ctx)?,
            "--client-id" => o.client_id = nonempty(v).map_err(ctx)?,
            "--request-timeout" => o.request_timeout = parse_duration(v).map_err(ctx)?,
            "--group" => o.group = parse_group(v).map_err(ctx)?,
            "--topic" => o.topic = parse_topic(v).map_err(ctx)?,
            "--partitions" => {
                o.partitions = parse_int(v, 1, PARTITIONS_MAX as u64).map_err(ctx)? as i32
            }
            "--commits" => {
                let n = parse_count(v).map_err(ctx)?;
                if n > COMMITS_MAX {
                    return Err(ctx(format!("at most {COMMITS_MAX}")));
                }
                commits = Some(n);
            }
            "--max-in-flight" => {
                o.max_in_flight = parse_int(v, 1, IN_FLIGHT_MAX as u64).map_err(ctx)? as usize
            }
            "--interval" => o.interval = parse_duration(v).map_err(ctx)?,
            "--out" => o.out_dir = Some(nonempty(v).map_err(ctx)?),
            "--name" => o.name = Some(parse_label(v).map_err(ctx)?),
            _ => unreachable!("flag list and match arms agree"),
        }
    }
    if o.group.is_empty() {
        return err("commit-offsets needs --group ID (the group whose offsets are committed)");
    }
    o.commits = match commits {
        Some(n) => n,
        None => return err("commit-offsets needs --commits N (offsets to commit in all)"),
    };
    if o.request_timeout < Duration::from_millis(100) {
        return err("--request-timeout must be at least 100ms");
    }
    if o.interval < Duration::from_millis(10) {
        return err("--interval must be at least 10ms");
    }
    Ok(Command::CommitOffsets(Box::new(o)))
}

/// A group id: 1 to 255 bytes (Kafka accepts any non-empty string; this keeps it printable).
fn parse_group(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 255 {
        return Err("a group id has 1 to 255 bytes".into());
    }
    if v.chars().any(char::is_control) {
        return Err("a group id must not contain control characters".into());
    }
    Ok(v.to_string())
}

/// Relations between parameters; fills in the default run length.
pub fn validate(o: &mut Options) -> Result<(), CliError> {
    if o.record_size < RECORD_SIZE_MIN {
        return err(format!(
            "--record-size {} is too small: each value carries an 8-byte send timestamp, so at \
             least {RECORD_SIZE_MIN} bytes",
            o.record_size
        ));
    }
    if o.record_size > RECORD_SIZE_MAX {
        return err(format!(
            "--record-size {} exceeds the harness limit of {}",
            o.record_size,
            human_bytes(RECORD_SIZE_MAX as f64)
        ));
    }
    if o.batch_bytes == 0 || o.batch_bytes > BATCH_BYTES_MAX {
        return err(format!(
            "--batch-bytes must be between 1 and {}",
            human_bytes(BATCH_BYTES_MAX as f64)
        ));
    }
    if o.record_size + o.key_len() + 80 > BATCH_BYTES_MAX {
        return err("--record-size does not fit in a batch".to_string());
    }
    if o.interval < Duration::from_millis(10) {
        return err("--interval must be at least 10ms");
    }
    if o.request_timeout < Duration::from_millis(100) {
        return err("--request-timeout must be at least 100ms");
    }
    if o.fetch_max_wait >= o.request_timeout {
        return err("--fetch-max-wait must be shorter than --request-timeout");
    }
    if o.partition_max_bytes > o.fetch_max_bytes {
        return err("--partition-max-bytes must not exceed --fetch-max-bytes");
    }
    if let Some(d) = o.duration {
        if d.is_zero() {
            return err("--duration must be positive");
        }
        if o.warmup >= d {
            return err(format!(
                "--warmup {:?} must be shorter than --duration {:?}",
                o.warmup, d
            ));
        }
    }
    if o.messages == Some(0) {
        return err("--messages must be positive");
    }
    if o.duration.is_none() && o.messages.is_none() {
        // Consuming from earliest stops by itself at the end offsets seen at start.
        let stops_by_itself = o.mode == Mode::Consume && o.from == StartFrom::Earliest;
        if !stops_by_itself {
            o.duration = Some(DURATION_DEFAULT);
            if o.warmup >= DURATION_DEFAULT {
                return err("--warmup must be shorter than the default --duration 30s");
            }
        }
    }
    if let (Some(r), Some(d)) = (o.rate, o.duration) {
        if r * d.as_secs_f64() < 1.0 {
            return err("--rate x --duration is less than one record");
        }
    }
    if o.mode == Mode::Consume && o.rate.is_some() {
        return err("--rate applies to producers; consume reads as fast as it can");
    }
    if o.mode.produces() {
        let parallel = (o.producers * o.connections) as f64;
        if let Some(r) = o.rate {
            if r < parallel / 3600.0 {
                return err("--rate is below one record per hour per connection");
            }
        }
    }
    // Consume-only runs learn the partition count from the broker; `run` checks them there.
    if o.mode == Mode::EndToEnd && o.group.is_none() && o.consumers > o.partitions as usize {
        return err(format!(
            "--consumers {} > --partitions {}: without --group each consumer reads its own \
             partitions, so {} would idle",
            o.consumers,
            o.partitions,
            o.consumers - o.partitions as usize
        ));
    }
    if o.transactional {
        if o.mode != Mode::Produce {
            return err("--transactional applies to produce runs");
        }
        if o.acks != Acks::All {
            return err("--transactional needs --acks all (transactions are idempotent)");
        }
    }
    if let KeyDist::Zipf { s, .. } = o.keys {
        if !(s > 0.0 && s <= 10.0) {
            return err("--keys zipf exponent must be in (0, 10]");
        }
    }
    Ok(())
}

fn nonempty(v: &str) -> Result<String, String> {
    if v.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(v.to_string())
    }
}

fn parse_label(v: &str) -> Result<String, String> {
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err("use letters, digits, '.', '_' or '-'".into());
    }
    Ok(v.to_string())
}

pub fn parse_topic(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 249 {
        return Err("a topic name has 1 to 249 characters".into());
    }
    if v == "." || v == ".." {
        return Err("'.' and '..' are not topic names".into());
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err("a topic name uses only letters, digits, '.', '_' and '-'".into());
    }
    Ok(v.to_string())
}

pub fn parse_bootstrap(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (host, port) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("'{part}' is not HOST:PORT"))?;
        if host.is_empty() {
            return Err(format!("'{part}' has no host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("'{part}' has no valid port (1-65535)")),
        }
        out.push(part.to_string());
    }
    if out.is_empty() {
        return Err("no address given".into());
    }
    Ok(out)
}

pub fn parse_int(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v
        .trim()
        .parse()
        .map_err(|_| "not a whole number".to_string())?;
    if n < min || n > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(n)
}

/// Counts with optional k/M/G (decimal) suffix: `10000`, `10k`, `1.5M`.
pub fn parse_count(v: &str) -> Result<u64, String> {
    let x = parse_scaled(
        v,
        &[("k", 1e3), ("K", 1e3), ("m", 1e6), ("M", 1e6), ("G", 1e9)],
    )?;
    if x < 1.0 || x.fract() != 0.0 || x > 1e15 {
        return Err("must be a whole number of at least 1".into());
    }
    Ok(x as u64)
}

/// Records per second, or `unlimited`.
pub fn parse_rate(v: &str) -> Result<Option<f64>, String> {
    if v == "unlimited" || v == "max" {
        return Ok(None);
    }
    let x = parse_scaled(
        v,
        &[("k", 1e3), ("K", 1e3), ("m", 1e6), ("M", 1e6), ("G", 1e9)],
    )?;
    if !(x > 0.0 && x <= 1e10) {
        return Err("must be a positive rate in records per second, or unlimited".into());
    }
    Ok(Some(x))
}

/// Sizes: plain bytes, or with B, k/KB (1000), KiB, M/MB, MiB, G/GB, GiB.
pub fn parse_size(v: &str) -> Result<u64, String> {
    let x = parse_scaled(
        v,
        &[
            ("KiB", 1024.0),
            ("MiB", 1048576.0),
            ("GiB", 1073741824.0),
            ("KB", 1e3),
            ("kB", 1e3),
            ("MB", 1e6),
            ("GB", 1e9),
            ("k", 1e3),
            ("K", 1e3),
            ("M", 1e6),
            ("G", 1e9),
            ("B", 1.0),
        ],
    )?;
    if x < 1.0 || x.fract() != 0.0 || x > 1e12 {
        return Err("must be a whole number of bytes, at least 1".into());
    }
    Ok(x as u64)
}

fn parse_size_i32(v: &str) -> Result<i32, String> {
    let n = parse_size(v)?;
    if n > i32::MAX as u64 {
        return Err("must be below 2 GiB".into());
    }
    Ok(n as i32)
}

/// Durations: `30s`, `500ms`, `2m`, `1h`, `250us`; a bare number is seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let x = parse_scaled(
        v,
        &[
            ("ms", 1e-3),
            ("us", 1e-6),
            ("ns", 1e-9),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
        ],
    )?;
    if !(0.0..=30.0 * 86400.0).contains(&x) {
        return Err("must be between 0 and 30 days".into());
    }
    Ok(Duration::from_secs_f64(x))
}

fn parse_scaled(v: &str, units: &[(&str, f64)]) -> Result<f64, String> {
    let v = v.trim();
    let (num, scale) = units
        .iter()
        .find_map(|(suffix, scale)| v.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((v, 1.0));
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{v}' is not a number (units: {})", unit_list(units)))?;
    if !x.is_finite() || x < 0.0 {
        return Err("must be a non-negative number".into());
    }
    Ok(x * scale)
}

fn unit_list(units: &[(&str, f64)]) -> String {
    units.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
}

pub fn parse_keys(v: &str) -> Result<KeyDist, String> {
    let mut parts = v.split(':');
    let kind = parts.next().unwrap_or("");
    let n = parts.next();
    let s = parts.next();
    if parts.next().is_some() {
        return Err("expected none, uniform:N or zipf:N[:S]".into());
    }
    let key_count = |n: Option<&str>| -> Result<u64, String> {
        let n = n.ok_or("needs a key count, e.g. uniform:10000")?;
        let n = parse_count(n)?;
        if n > 100_000_000 {
            return Err("at most 100M distinct keys".into());
        }
        Ok(n)
    };
    match kind {
        "none" if n.is_none() => Ok(KeyDist::None),
        "uniform" if s.is_none() => Ok(KeyDist::Uniform { n: key_count(n)? }),
        "zipf" => {
            let n = key_count(n)?;
            let s = match s {
                None => 1.0,
                Some(s) => s
                    .parse::<f64>()
                    .map_err(|_| "zipf exponent is not a number")?,
            };
            Ok(KeyDist::Zipf { n, s })
        }
        _ => Err("expected none, uniform:N or zipf:N[:S]".into()),
    }
}

fn suggest(flag: &str) -> Option<&'static str> {
    suggest_from(
        flag,
        FLAGS_WITH_VALUE,
        &["--quiet", "--help", "--transactional"],
    )
}

fn suggest_from(
    flag: &str,
    with_value: &[&'static str],
    switches: &[&'static str],
) -> Option<&'static str> {
    let f = flag.trim_start_matches('-');
    with_value
        .iter()
        .chain(switches)
        .copied()
        .map(|c| (edit_distance(f, c.trim_start_matches('-')), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `1.5 KiB`, `64 KiB`, `2.0 MiB`, `100 B`.
pub fn human_bytes(x: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = x;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || v.fract() == 0.0 {
        format!("{} {}", v.round() as u64, UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// `950`, `12.5k`, `1.70M`.
pub fn human_count(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{}", x.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, CliError> {
        match parse(args.iter().copied())? {
            Command::Run(o) => Ok(*o),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_get_a_duration() {
        let o = run(&["produce"]).unwrap();
        assert_eq!(o.duration, Some(DURATION_DEFAULT));
        assert_eq!(o.acks, Acks::Leader);
        assert_eq!(o.bootstrap, vec!["127.0.0.1:9092"]);
        let c = run(&["consume"]).unwrap();
        assert_eq!(c.from, StartFrom::Earliest);
        assert_eq!(
            c.duration, None,
            "consume from earliest stops at the end offsets"
        );
        let e = run(&["e2e"]).unwrap();
        assert_eq!(e.from, StartFrom::Latest);
    }

    #[test]
    fn full_command_line_parses() {
        let o = run(&[
            "e2e",
            "--bootstrap",
            "127.0.0.1:9093,localhost:9094",
            "--topic=t1",
            "--partitions",
            "8",
            "--record-size",
            "1KiB",
            "--keys",
            "zipf:1000:1.2",
            "--batch-bytes",
            "1MiB",
            "--linger",
            "2ms",
            "--acks",
            "all",
            "--compression",
            "zstd",
            "--producers",
            "2",
            "--consumers",
            "4",
            "--connections",
            "3",
            "--max-in-flight",
            "8",
            "--duration",
            "2m",
            "--warmup",
            "10s",
            "--rate",
            "50k",
            "--name",
            "x",
            "--quiet",
        ])
        .unwrap();
        assert_eq!(o.mode, Mode::EndToEnd);
        assert_eq!(o.bootstrap.len(), 2);
        assert_eq!(o.topic, "t1");
        assert_eq!(o.partitions, 8);
        assert_eq!(o.record_size, 1024);
        assert_eq!(o.keys, KeyDist::Zipf { n: 1000, s: 1.2 });
        assert_eq!(o.batch_bytes, 1 << 20);
        assert_eq!(o.linger, Duration::from_millis(2));
        assert_eq!(o.acks, Acks::All);
        assert_eq!(o.compression, Codec::Zstd);
        assert_eq!(o.connections, 3);
        assert_eq!(o.max_in_flight, 8);
        assert_eq!(o.duration, Some(Duration::from_secs(120)));
        assert_eq!(o.warmup, Duration::from_secs(10));
        assert_eq!(o.rate, Some(50_000.0));
        assert!(o.quiet);
        assert_eq!(o.label(), "x");
    }

    #[test]
    fn bad_parameters_are_refused_with_the_reason() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "no mode"),
            (&["bogus"], "unknown mode"),
            (&["produce", "--record-size", "4"], "at least 8"),
            (&["produce", "--acks", "2"], "expected 0, 1 or all"),
            (&["produce", "--compression", "brotli"], "none, lz4 or zstd"),
            (&["produce", "--partitions", "0"], "between 1"),
            (&["produce", "--partitions", "x"], "not a whole number"),
            (&["produce", "--bootstrap", "localhost"], "not HOST:PORT"),
            (&["produce", "--bootstrap", "h:99999"], "valid port"),
            (
                &["produce", "--duration", "10s", "--warmup", "10s"],
                "shorter than --duration",
            ),
            (&["produce", "--rate", "-5"], "non-negative"),
            (&["produce", "--rate", "0"], "positive rate"),
            (&["produce", "--messages", "0"], "at least 1"),
            (&["produce", "--topic", "a/b"], "topic name"),
            (&["produce", "--keys", "zipf"], "key count"),
            (&["produce", "--keys", "gauss:5"], "expected none"),
            (&["produce", "--max-in-flight", "0"], "between 1"),
            (&["produce", "--linger"], "needs a value"),
            (
                &["produce", "--paritions", "3"],
                "did you mean --partitions",
            ),
            (&["consume", "--rate", "100"], "applies to producers"),
            (
                &["e2e", "--consumers", "3", "--partitions", "2"],
                "would idle",
            ),
            (&["produce", "--batch-bytes", "1GiB"], "--batch-bytes"),
            (&["produce", "--interval", "1ms"], "--interval"),
        ];
        for (args, needle) in cases {
            let e = run(args).expect_err(&format!("{args:?} should be refused"));
            assert!(e.0.contains(needle), "{args:?}: '{}' lacks '{needle}'", e.0);
        }
    }

    #[test]
    fn units() {
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert_eq!(parse_size("1k").unwrap(), 1000);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert!(parse_size("1.5").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_rate("1.5M").unwrap(), Some(1.5e6));
        assert_eq!(parse_rate("unlimited").unwrap(), None);
        assert_eq!(parse_count("10k").unwrap(), 10_000);
        assert_eq!(human_bytes(1024.0), "1 KiB");
        assert_eq!(human_bytes(100.0), "100 B");
        assert_eq!(human_count(1_700_000.0), "1.70M");
    }

    fn commit(args: &[&str]) -> Result<CommitOptions, CliError> {
        match parse(args.iter().copied())? {
            Command::CommitOffsets(o) => Ok(*o),
            other => panic!("expected commit-offsets, got {other:?}"),
        }
    }

    #[test]
    fn commit_offsets_parses() {
        let o = commit(&[
            "commit-offsets",
            "--bootstrap",
            "127.0.0.1:9093",
            "--group=g1",
            "--topic",
            "t1",
            "--partitions",
            "1000",
            "--commits",
            "10M",
            "--max-in-flight",
            "8",
            "--request-timeout",
            "10s",
            "--client-id",
            "c",
            "--interval",
            "5s",
            "--out",
            "/tmp/x",
            "--name",
            "h10m",
            "-q",
        ])
        .unwrap();
        assert_eq!(o.bootstrap, vec!["127.0.0.1:9093"]);
        assert_eq!(o.group, "g1");
        assert_eq!(o.topic, "t1");
        assert_eq!(o.partitions, 1000);
        assert_eq!(o.commits, 10_000_000);
        assert_eq!(o.max_in_flight, 8);
        assert_eq!(o.request_timeout, Duration::from_secs(10));
        assert_eq!(o.client_id, "c");
        assert_eq!(o.interval, Duration::from_secs(5));
        assert_eq!(o.out_dir.as_deref(), Some("/tmp/x"));
        assert_eq!(o.label(), "h10m");
        assert!(o.quiet);
        assert_eq!(o.requests(), 10_000);
    }

    #[test]
    fn commit_offsets_defaults_and_request_split() {
        let o = commit(&["commit-offsets", "--group", "g", "--commits", "2500"]).unwrap();
        assert_eq!(o.bootstrap, vec!["127.0.0.1:9092"]);
        assert_eq!(o.topic, "shardlog-bench");
        assert_eq!(o.partitions, 1);
        assert_eq!(o.max_in_flight, 5);
        assert_eq!(o.out_dir, None);
        assert!(!o.quiet);
        assert_eq!(o.requests(), 2500);
        assert_eq!(o.label(), "commit-offsets-p1-n2500");

        let o = commit(&[
            "commit-offsets",
            "--group",
            "g",
            "--commits",
            "2500",
            "--partitions",
            "1000",
        ])
        .unwrap();
        assert_eq!(o.requests(), 3);
        assert_eq!(o.partitions_in_request(0), 1000);
        assert_eq!(o.partitions_in_request(1), 1000);
        assert_eq!(
            o.partitions_in_request(2),
            500,
            "the last request commits the rest"
        );
        let total: u64 = (0..o.requests())
            .map(|i| o.partitions_in_request(i) as u64)
            .sum();
        assert_eq!(total, 2500);

        let o = commit(&[
            "commit-offsets",
            "--group",
            "g",
            "--commits",
            "10",
            "--partitions",
            "1000",
        ])
        .unwrap();
        assert_eq!(o.requests(), 1);
        assert_eq!(o.partitions_in_request(0), 10);
        assert_eq!(parse(["commit-offsets", "--help"]).unwrap(), Command::Help);
    }

    #[test]
    fn commit_offsets_refuses_bad_parameters() {
        let cases: &[(&[&str], &str)] = &[
            (&["commit-offsets", "--commits", "10"], "needs --group"),
            (&["commit-offsets", "--group", "g"], "needs --commits"),
            (
                &["commit-offsets", "--group", "", "--commits", "1"],
                "1 to 255 bytes",
            ),
            (
                &["commit-offsets", "--group", "g", "--commits", "0"],
                "at least 1",
            ),
            (
                &["commit-offsets", "--group", "g", "--commits", "1.5"],
                "whole number",
            ),
            (
                &["commit-offsets", "--group", "g", "--commits", "2000G"],
                "at most",
            ),
            (
                &[
                    "commit-offsets",
                    "--group",
                    "g",
                    "--commits",
                    "1",
                    "--partitions",
                    "0",
                ],
                "between 1",
            ),
            (
                &[
                    "commit-offsets",
                    "--group",
                    "g",
                    "--commits",
                    "1",
                    "--max-in-flight",
                    "0",
                ],
                "between 1",
            ),
            (
                &[
                    "commit-offsets",
                    "--group",
                    "g",
                    "--commits",
                    "1",
                    "--acks",
                    "all",
                ],
                "does not apply to commit-offsets",
            ),
            (
                &["commit-offsets", "--group", "g", "--comits", "1"],
                "did you mean --commits",
            ),
            (
                &[
                    "commit-offsets",
                    "--group",
                    "g",
                    "--commits",
                    "1",
                    "--bootstrap",
                    "h",
                ],
                "not HOST:PORT",
            ),
            (
                &[
                    "commit-offsets",
                    "--group",
                    "g",
                    "--commits",
                    "1",
                    "--topic",
                    "a/b",
                ],
                "topic name",
            ),
            (&["commit-offsets", "--group"], "needs a value"),
            (
                &[
                    "commit-offsets",
                    "--group",
                    "g",
                    "--commits",
                    "1",
                    "--request-timeout",
                    "1ms",
                ],
                "--request-timeout",
            ),
        ];
        for (args, needle) in cases {
            let e = commit(args).expect_err(&format!("{args:?} should be refused"));
            assert!(e.0.contains(needle), "{args:?}: '{}' lacks '{needle}'", e.0);
        }
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(["--help"]).unwrap(), Command::Help);
        assert_eq!(parse(["produce", "-h"]).unwrap(), Command::Help);
        assert_eq!(parse(["-V"]).unwrap(), Command::Version);
    }

    #[test]
    fn batch_record_count() {
        let mut o = Options::defaults(Mode::Produce);
        o.record_size = 1024;
        o.batch_bytes = 16 * 1024;
        assert_eq!(o.records_per_batch(), 15);
        o.batch_bytes = 10;
        assert_eq!(o.records_per_batch(), 1);
    }
}
