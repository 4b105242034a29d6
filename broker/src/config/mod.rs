//! Broker and topic settings, named as Kafka names them, with Kafka's defaults.
//!
//! Broker settings come from (later wins) built-in defaults, a properties file (`--config`),
//! `--set` and command-line flags; `BrokerConfig::finalize` then derives what depends on the
//! others (the advertised address). Kafka settings Shardlog has no use for are accepted and
//! collected (`ignored_kafka_keys`, names in `kafka_keys`); any other unknown key is an error.
//! Topic settings are a topic's overrides on top of the broker's `log.*` defaults; they are
//! validated here (unknown key or bad value -> INVALID_CONFIG) and persisted by `metadata`.
//! Every accepted key is described in `reference` (type, default, meaning), which also renders
//! docs/configuration.md. This module does no I/O except reading the properties file, resolving
//! host names and reading this machine's host name.

mod kafka_keys;
pub mod reference;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use shardlog_storage::LogConfig;

use crate::base::limits;

pub use kafka_keys::{is_kafka_broker_key, KAFKA_BROKER_KEYS};
pub use reference::{reference_markdown, Setting, BROKER_SETTINGS, TOPIC_SETTINGS};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config key {0:?}")]
    UnknownKey(String),
    /// A broker key that is neither Shardlog's nor Kafka's, with the closest known key.
    #[error("unknown config key {key:?}{}", did_you_mean(.suggestion))]
    UnknownBrokerKey {
        key: String,
        suggestion: Option<String>,
    },
    #[error("invalid value {value:?} for {key}: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An error in one line of a properties file.
    #[error("{}:{line}: {source}", .path.display())]
    Line {
        path: PathBuf,
        line: usize,
        source: Box<ConfigError>,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s:?}?)"),
        None => ": neither a Shardlog nor a Kafka broker setting (see docs/configuration.md)"
            .to_string(),
    }
}

/// Kafka's `max.connections.per.ip.overrides`: `host:count[,host:count]`, where host is an
/// address (IPv6 in brackets or bare) or a name resolved once, here.
fn parse_ip_overrides(key: &str, value: &str) -> Result<BTreeMap<IpAddr, usize>, ConfigError> {
    let mut out = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((host, count)) = entry.rsplit_once(':') else {
            return Err(bad(key, value, "expected host:count[,host:count]"));
        };
        let count: usize = count
            .trim()
            .parse()
            .map_err(|_| bad(key, value, "a count must be a non-negative integer"))?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => (host, 0)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .map(|a| a.ip())
                .ok_or_else(|| bad(key, value, &format!("cannot resolve {host:?}")))?,
        };
        out.insert(ip, count);
    }
    Ok(out)
}

fn bad(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::BadValue {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| bad(key, value, "not a number"))
}

/// `segment.bytes` of an internal topic, within the topic setting's range.
fn internal_segment_bytes(key: &str, value: &str) -> Result<u64, ConfigError> {
    let v: u64 = parse_num(key, value)?;
    if !(14..=i32::MAX as u64).contains(&v) {
        return Err(bad(key, value, "must be between 14 and 2147483647"));
    }
    Ok(v)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(key, value, "expected true or false")),
    }
}

/// Topic-level keys this broker understands, with the broker key that supplies the default.
pub const TOPIC_KEYS: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("compression.type", "compression.type"),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"),
    ("max.message.bytes", "message.max.bytes"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("retention.bytes", "log.retention.bytes"),
    ("retention.ms", "log.retention.ms"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.ms", "log.roll.ms"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
];

/// Broker-level keys `BrokerConfig::get` answers, in the order DescribeConfigs lists them: the
/// broker's own settings, then the broker keys that supply topic defaults (`TOPIC_KEYS`).
pub const BROKER_KEYS: &[&str] = &[
    "advertised.listeners",
    "auto.create.topics.enable",
    "auto.leader.rebalance.enable",
    "broker.id",
    "controlled.shutdown.enable",
    "default.replication.factor",
    "group.initial.rebalance.delay.ms",
    "group.max.session.timeout.ms",
    "group.min.session.timeout.ms",
    "leader.imbalance.check.interval.seconds",
    "leader.imbalance.per.broker.percentage",
    "listeners",
    "log.cleaner.backoff.ms",
    "log.cleaner.dedupe.buffer.size",
    "log.cleaner.enable",
    "log.cleaner.io.buffer.size",
    "log.cleaner.threads",
    "log.dirs",
    "log.retention.check.interval.ms",
    "max.connections",
    "max.connections.per.ip",
    "max.connections.per.ip.overrides",
    "num.partitions",
    "num.shards",
    "offsets.retention.check.interval.ms",
    "offsets.retention.minutes",
    "offsets.topic.num.partitions",
    "offsets.topic.replication.factor",
    "offsets.topic.segment.bytes",
    "producer.id.expiration.check.interval.ms",
    "producer.id.expiration.ms",
    "queued.max.request.bytes",
    "quota.window.num",
    "quota.window.size.seconds",
    "replica.fetch.backoff.ms",
    "replica.fetch.max.bytes",
    "replica.fetch.min.bytes",
    "replica.fetch.wait.max.ms",
    "replica.lag.time.max.ms",
    "replica.socket.timeout.ms",
    "socket.request.max.bytes",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
    "transaction.max.timeout.ms",
    "transaction.partition.verification.enable",
    "transaction.remove.expired.transaction.cleanup.interval.ms",
    "transaction.state.log.min.isr",
    "transaction.state.log.num.partitions",
    "transaction.state.log.replication.factor",
    "transaction.state.log.segment.bytes",
    "transactional.id.expiration.ms",
    "zookeeper.connect",
    "zookeeper.session.timeout.ms",
    "compression.type",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.max.compaction.lag.ms",
    "log.cleaner.min.cleanable.ratio",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleanup.policy",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.index.interval.bytes",
    "log.message.timestamp.type",
    "log.retention.bytes",
    "log.retention.ms",
    "log.roll.ms",
    "log.segment.bytes",
    "message.max.bytes",
    "min.insync.replicas",
    "unclean.leader.election.enable",
];

/// Resolved settings of one topic (broker defaults + the topic's overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    /// `cleanup.policy` includes `compact`: the log cleaner keeps the latest record per key.
    pub cleanup_policy_compact: bool,
    /// `cleanup.policy` includes `delete`: `retention.ms` and `retention.bytes` apply.
    pub cleanup_policy_delete: bool,
    /// `delete.retention.ms`: how long the cleaner keeps tombstones (and transaction markers)
    /// of a compacted topic once they are in the cleaned part of the log.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: a compacted log is cleaned once its dirty part is at least
    /// this share of it, in [0, 1].
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record is eligible for compaction at the latest this long
    /// after it was written, whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    pub flush_messages: u64,
    pub flush_ms: u64,
    pub index_interval_bytes: u32,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    pub min_insync_replicas: i32,
    pub retention_bytes: i64,
    pub retention_ms: i64,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub unclean_leader_election: bool,
    /// Broker-wide (`log.preallocate.ahead.bytes`), not a topic key: see `LogConfig`.
    pub preallocate_bytes: u64,
}

impl TopicConfig {
    /// Resolves `overrides` on top of the broker defaults. Errors name the offending key.
    pub fn resolve(
        broker: &BrokerConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, ConfigError> {
        let mut c = broker.topic_defaults.clone();
        for (k, v) in overrides {
            c.set(k, v)?;
        }
        c.check()?;
        Ok(c)
    }

    /// The rules between keys, which `set` cannot check one key at a time (Kafka's
    /// `LogConfig.validateValues`): `min.compaction.lag.ms` <= `max.compaction.lag.ms`.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.min_compaction_lag_ms > self.max_compaction_lag_ms {
            return Err(bad(
                "min.compaction.lag.ms",
                &self.min_compaction_lag_ms.to_string(),
                &format!(
                    "must not be greater than max.compaction.lag.ms ({})",
                    self.max_compaction_lag_ms
                ),
            ));
        }
        Ok(())
    }

    /// Applies one topic-level key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "cleanup.policy" => {
                let (mut compact, mut delete) = (false, false);
                for p in value.split(',').map(str::trim) {
                    match p {
                        "delete" => delete = true,
                        "compact" => compact = true,
                        _ => return Err(bad(key, value, "expected delete and/or compact")),
                    }
                }
                self.cleanup_policy_compact = compact;
                self.cleanup_policy_delete = delete;
            }
            "compression.type" => {
                // Batches are stored as produced; recompressing on the broker is not done.
                if value.trim() != "producer" {
                    return Err(bad(
                        key,
                        value,
                        "only 'producer' is supported (stored as sent)",
                    ));
                }
            }
            "delete.retention.ms" => {
                let v: i64 = parse_num(key, value)?;
                if v < 0 {
                    return Err(bad(key, value, "must be >= 0"));
                }
                self.delete_retention_ms = v;
            }
            "flush.messages" => self.flush_messages = positive_or_never(key, value)?,
            "flush.ms" => self.flush_ms = positive_or_never(key, value)?,
            "index.interval.bytes" => {
                let v: u32 = parse_num(key, value)?;
                if v == 0 {
                    return Err(bad(key, value, "must be > 0"));
                }
                self.index_interval_bytes = v;
            }
            "max.compaction.lag.ms" => {
                let v: i64 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.max_compaction_lag_ms = v;
            }
            "max.message.bytes" => {
                let v: i64 = parse_num(key, value)?;
                if !(0..=limits::REQUEST_BYTES_MAX as i64).contains(&v) {
                    return Err(bad(key, value, "must be between 0 and 104857600"));
                }
                self.max_message_bytes = v as usize;
            }
            "message.timestamp.type" => {
                self.log_append_time = match value.trim() {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => return Err(bad(key, value, "expected CreateTime or LogAppendTime")),
                }
            }
            "min.cleanable.dirty.ratio" => {
                let v: f64 = parse_num(key, value)?;
                // NaN is not in the range either.
                if !(0.0..=1.0).contains(&v) {
                    return Err(bad(key, value, "must be between 0 and 1"));
                }
                self.min_cleanable_dirty_ratio = v;
            }
            "min.compaction.lag.ms" => {
                let v: i64 = parse_num(key, value)?;
                if v < 0 {
                    return Err(bad(key, value, "must be >= 0"));
                }
                self.min_compaction_lag_ms = v;
            }
            "min.insync.replicas" => {
                let v: i32 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.min_insync_replicas = v;
            }
            "retention.bytes" => self.retention_bytes = minus_one_or_positive(key, value)?,
            "retention.ms" => self.retention_ms = minus_one_or_positive(key, value)?,
            "segment.bytes" => {
                let v: u64 = parse_num(key, value)?;
                if !(14..=i32::MAX as u64).contains(&v) {
                    return Err(bad(key, value, "must be between 14 and 2147483647"));
                }
                self.segment_bytes = v;
            }
            "segment.ms" => {
                let v: u64 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.segment_ms = v;
            }
            "unclean.leader.election.enable" => {
                self.unclean_leader_election = parse_bool(key, value)?
            }
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }

    /// The storage layer's view of these settings.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            // Segments are deleted by age or size only when the policy includes `delete`
            // (`compact,delete` does both); compaction is the log cleaner's.
            retention_ms: if self.cleanup_policy_delete {
                self.retention_ms
            } else {
                -1
            },
            retention_bytes: if self.cleanup_policy_delete {
                self.retention_bytes
            } else {
                -1
            },
            index_interval_bytes: self.index_interval_bytes,
            flush_messages: self.flush_messages,
            flush_ms: self.flush_ms,
            preallocate_bytes: self.preallocate_bytes,
        }
    }

    /// The value of a topic key as Kafka would print it.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "cleanup.policy" => match (self.cleanup_policy_compact, self.cleanup_policy_delete) {
                (true, true) => "compact,delete",
                (true, false) => "compact",
                // `set` always leaves one of the two.
                (false, _) => "delete",
            }
            .to_string(),
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "compression.type" => "producer".to_string(),
            "flush.messages" => never_as_max(self.flush_messages),
            "flush.ms" => never_as_max(self.flush_ms),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => if self.log_append_time {
                "LogAppendTime"
            } else {
                "CreateTime"
            }
            .to_string(),
            "min.cleanable.dirty.ratio" => java_double(self.min_cleanable_dirty_ratio),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "unclean.leader.election.enable" => self.unclean_leader_election.to_string(),
            _ => return None,
        })
    }
}

/// A double as Java's `Double.toString` prints the values Kafka's ratios take ("0.5", "1.0").
fn java_double(v: f64) -> String {
    // Debug keeps the ".0" of whole numbers, as Java does.
    format!("{v:?}")
}

fn never_as_max(v: u64) -> String {
    if v == u64::MAX {
        i64::MAX.to_string()
    } else {
        v.to_string()
    }
}

/// Kafka writes "never flush" as Long.MAX_VALUE.
fn positive_or_never(key: &str, value: &str) -> Result<u64, ConfigError> {
    let v: i64 = parse_num(key, value)?;
    match v {
        i64::MAX => Ok(u64::MAX),
        v if v >= 1 => Ok(v as u64),
        _ => Err(bad(key, value, "must be >= 1")),
    }
}

fn minus_one_or_positive(key: &str, value: &str) -> Result<i64, ConfigError> {
    let v: i64 = parse_num(key, value)?;
    if v < -1 {
        return Err(bad(key, value, "must be -1 (unlimited) or >= 0"));
    }
    Ok(v)
}

/// The least `log.cleaner.dedupe.buffer.size`, and the least a shard's cleaner gets: Kafka's
/// least per cleaner thread.
pub const LOG_CLEANER_DEDUPE_BUFFER_MIN: u64 = 1024 * 1024;

/// `log.preallocate.ahead.bytes` unless set: 8 MiB per active segment, refilled when half is
/// used (one `fallocate` per 4 MiB appended).
pub const PREALLOCATE_BYTES_DEFAULT: u64 = 8 << 20;

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            cleanup_policy_compact: false,
            cleanup_policy_delete: true,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            flush_messages: u64::MAX,
            flush_ms: u64::MAX,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            min_insync_replicas: 1,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 3600 * 1000,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            unclean_leader_election: false,
            preallocate_bytes: PREALLOCATE_BYTES_DEFAULT,
        }
    }
}

/// Everything the broker process is started with.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub broker_id: i32,
    pub listen: SocketAddr,
    /// Host and port written into Metadata responses.
    pub advertised_host: String,
    pub advertised_port: u16,
    pub data_dir: PathBuf,
    pub shards: usize,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    pub request_bytes_max: usize,
    /// Connections the broker keeps open at once (all shards); more are closed at accept.
    pub max_connections: usize,
    /// Connections from one client address at once (all shards).
    pub max_connections_per_ip: usize,
    /// Per-address exceptions to `max_connections_per_ip`.
    pub max_connections_per_ip_overrides: BTreeMap<IpAddr, usize>,
    /// Bytes of request frames held by the broker at once, over all connections; each shard
    /// gets an equal share (`request_budget_per_shard`).
    pub queued_max_request_bytes: usize,
    pub retention_check_interval_ms: u64,
    /// Compacted topics are cleaned (`log.cleaner.enable`); each shard runs one cleaner for
    /// its partitions.
    pub log_cleaner_enable: bool,
    /// Memory for the cleaners' key maps, over all shards (`log.cleaner.dedupe.buffer.size`);
    /// each shard gets `log_cleaner_dedupe_buffer_per_shard`.
    pub log_cleaner_dedupe_buffer_size: u64,
    /// A cleaner with nothing to clean looks again after this long (`log.cleaner.backoff.ms`).
    pub log_cleaner_backoff_ms: u64,
    /// Bytes of read and write buffer a cleaner uses (`log.cleaner.io.buffer.size`).
    pub log_cleaner_io_buffer_size: u64,
    /// `log.cleaner.threads`: accepted for compatibility only; the cleaners are one per shard.
    pub log_cleaner_threads: u32,
    pub offsets_topic_num_partitions: i32,
    /// `segment.bytes` of `__consumer_offsets` when this broker creates it.
    pub offsets_topic_segment_bytes: u64,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: u64,
    pub group_initial_rebalance_delay_ms: i32,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// ZooKeeper connect string (`host:port[,host:port][/chroot]`); `None` = standalone.
    pub zookeeper_connect: Option<String>,
    pub zookeeper_session_timeout_ms: u64,
    /// A follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// How long a follower's fetch waits at the leader when there is less than
    /// `replica_fetch_min_bytes` to send.
    pub replica_fetch_wait_max_ms: i32,
    pub replica_fetch_min_bytes: i32,
    pub replica_fetch_max_bytes: i32,
    /// A follower waits this long before fetching a partition again after an error.
    pub replica_fetch_backoff_ms: u64,
    /// A follower's request to its leader unanswered for its fetch wait plus this long means
    /// the connection is dead: reconnect.
    pub replica_socket_timeout_ms: u64,
    /// Client quotas are measured over this many samples (`quota.window.num`) ...
    pub quota_window_num: u32,
    /// ... of this many seconds each (`quota.window.size.seconds`).
    pub quota_window_size_seconds: u32,
    /// Replication factor of topics created without one (auto-creation, -1 in CreateTopics).
    pub default_replication_factor: i16,
    /// Replication factor of `__consumer_offsets` in cluster mode (standalone: 1).
    pub offsets_topic_replication_factor: i16,
    /// Partitions of `__transaction_state`.
    pub transaction_state_log_num_partitions: i32,
    /// `segment.bytes` of `__transaction_state` when this broker creates it.
    pub transaction_state_log_segment_bytes: u64,
    /// Replication factor of `__transaction_state` in cluster mode (standalone: 1).
    pub transaction_state_log_replication_factor: i16,
    /// `min.insync.replicas` of `__transaction_state` in cluster mode.
    pub transaction_state_log_min_isr: i32,
    /// Largest transaction timeout a producer may ask for.
    pub transaction_max_timeout_ms: i32,
    /// A partition leader asks the transaction coordinator before appending the first
    /// transactional batch of a transaction (KIP-890).
    pub transaction_partition_verification_enable: bool,
    /// A transactional id unused for this long is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// How often coordinators look for transactions past their timeout.
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    /// How often coordinators look for expired transactional ids.
    pub transaction_remove_expired_transaction_cleanup_interval_ms: u64,
    /// A partition forgets a producer idle for this long without an open transaction.
    pub producer_id_expiration_ms: i64,
    /// How often each shard looks for such producers.
    pub producer_id_expiration_check_interval_ms: u64,
    /// On SIGTERM, move leadership to other ISR members before stopping (cluster mode).
    pub controlled_shutdown_enable: bool,
    /// The controller moves leadership back to preferred replicas (cluster mode).
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_ms: u64,
    /// A broker whose share of not-led preferred partitions exceeds this gets them back.
    pub leader_imbalance_per_broker_percentage: u32,
    /// The HTTP metrics and health listener (`metrics.listen`); `None` = disabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Above this many partitions on the broker, per-partition log metrics are summed per topic.
    pub metrics_partition_labels_max: usize,
    /// `text` or `json` (`log.format`).
    pub log_format: String,
    /// RUST_LOG-style filter (`log.level`); RUST_LOG in the environment overrides it.
    pub log_level: String,
    /// Kafka settings that were given but that Shardlog does not use, sorted, without repeats.
    pub ignored_kafka_keys: Vec<String>,
    pub topic_defaults: TopicConfig,
    /// Every key given explicitly, for DescribeConfigs (source = static broker config).
    pub explicit: BTreeMap<String, String>,
}

/// Kafka's quota window: `samples` windows of `sample` each (`quota.window.num`,
/// `quota.window.size.seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaWindow {
    pub samples: u32,
    pub sample_ms: u64,
}

impl QuotaWindow {
    /// The longest throttle: the whole window. After it, everything measured has aged out.
    pub fn max_throttle_ms(&self) -> u64 {
        self.sample_ms * u64::from(self.samples)
    }
}

impl BrokerConfig {
    /// The topic settings `__consumer_offsets` is created with: compacted, as in Kafka (the log
    /// cleaner keeps each group's latest metadata and latest commit per partition), with
    /// `offsets.topic.segment.bytes` segments.
    pub fn offsets_topic_configs(&self) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                self.offsets_topic_segment_bytes.to_string(),
            ),
        ])
    }

    /// `broker.id` as the broker's rules take it.
    pub fn id(&self) -> crate::base::ids::BrokerId {
        crate::base::ids::BrokerId(self.broker_id)
    }

    /// The client quota window (`quota.window.num` x `quota.window.size.seconds`).
    pub fn quota_window(&self) -> QuotaWindow {
        QuotaWindow {
            samples: self.quota_window_num,
            sample_ms: u64::from(self.quota_window_size_seconds) * 1000,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            broker_id: 0,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9092)),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            data_dir: PathBuf::from("./data"),
            shards: 0,
            auto_create_topics: true,
            num_partitions: 1,
            request_bytes_max: limits::REQUEST_BYTES_MAX,
            max_connections: 65_536,
            max_connections_per_ip: i32::MAX as usize,
            max_connections_per_ip_overrides: BTreeMap::new(),
            queued_max_request_bytes: 256 * 1024 * 1024,
            retention_check_interval_ms: 300_000,
            log_cleaner_enable: true,
            log_cleaner_dedupe_buffer_size: 128 * 1024 * 1024,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_io_buffer_size: 512 * 1024,
            log_cleaner_threads: 1,
            offsets_topic_num_partitions: 50,
            offsets_topic_segment_bytes: 100 * 1024 * 1024,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            zookeeper_connect: None,
            zookeeper_session_timeout_ms: 18_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_min_bytes: 1,
            replica_fetch_max_bytes: 1024 * 1024,
            replica_fetch_backoff_ms: 1000,
            replica_socket_timeout_ms: 5000,
            quota_window_num: 11,
            quota_window_size_seconds: 1,
            default_replication_factor: 1,
            offsets_topic_replication_factor: 3,
            transaction_state_log_num_partitions: 50,
            transaction_state_log_segment_bytes: 100 * 1024 * 1024,
            transaction_state_log_replication_factor: 3,
            transaction_state_log_min_isr: 2,
            transaction_max_timeout_ms: 900_000,
            transaction_partition_verification_enable: true,
            transactional_id_expiration_ms: 604_800_000,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: 10_000,
            transaction_remove_expired_transaction_cleanup_interval_ms: 3_600_000,
            producer_id_expiration_ms: 86_400_000,
            producer_id_expiration_check_interval_ms: 600_000,
            controlled_shutdown_enable: true,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
            leader_imbalance_per_broker_percentage: 10,
            // Loopback only: the endpoint has no authentication. 9644 is Redpanda's admin port.
            metrics_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9644))),
            metrics_partition_labels_max: 1000,
            log_format: "text".into(),
            log_level: "info".into(),
            ignored_kafka_keys: Vec::new(),
            topic_defaults: TopicConfig::default(),
            explicit: BTreeMap::new(),
        }
    }
}

impl BrokerConfig {
    /// Applies one broker-level key (Kafka name). A Kafka setting Shardlog does not use is
    /// accepted and remembered in `ignored_kafka_keys`; a key neither knows is refused with the
    /// closest known key as a hint.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        if reference::broker_setting(key).is_none() {
            if is_kafka_broker_key(key) {
                if let Err(at) = self
                    .ignored_kafka_keys
                    .binary_search_by(|k| k.as_str().cmp(key))
                {
                    self.ignored_kafka_keys.insert(at, key.to_string());
                }
                return Ok(());
            }
            return Err(ConfigError::UnknownBrokerKey {
                key: key.to_string(),
                suggestion: suggest_broker_key(key),
            });
        }
        self.apply(key, value)?;
        self.explicit.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// The setting itself; `set` has checked that `key` is in `BROKER_SETTINGS`.
    fn apply(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let t = &mut self.topic_defaults;
        match key {
            "broker.id" | "node.id" => self.broker_id = parse_num(key, value)?,
            "listeners" => {
                let (host, port) = plaintext_endpoint(key, value)?;
                self.listen = resolve(key, value, &host, port)?;
            }
            "advertised.listeners" => {
                let (host, port) = plaintext_endpoint(key, value)?;
                if host.is_empty() || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
                    return Err(bad(
                        key,
                        value,
                        "a wildcard address cannot be advertised: give a host name or address \
                         that clients can reach",
                    ));
                }
                if port == 0 {
                    return Err(bad(key, value, "port 0 cannot be advertised"));
                }
                self.advertised_host = host;
                self.advertised_port = port;
            }
            "log.dirs" | "log.dir" => {
                let v = value.trim();
                if v.is_empty() {
                    return Err(bad(key, value, "expected a directory"));
                }
                if v.contains(',') {
                    return Err(bad(
                        key,
                        value,
                        "one directory only: several log directories are not supported",
                    ));
                }
                self.data_dir = PathBuf::from(v);
            }
            "num.shards" => self.shards = parse_num(key, value)?,
            "auto.create.topics.enable" => self.auto_create_topics = parse_bool(key, value)?,
            "num.partitions" => {
                let v: i32 = parse_num(key, value)?;
                if !(1..=limits::PARTITIONS_PER_TOPIC_MAX).contains(&v) {
                    return Err(bad(key, value, "must be between 1 and 10000"));
                }
                self.num_partitions = v;
            }
            "socket.request.max.bytes" => {
                let v: usize = parse_num(key, value)?;
                if !(1024..=limits::REQUEST_BYTES_MAX).contains(&v) {
                    return Err(bad(key, value, "must be between 1024 and 104857600"));
                }
                self.request_bytes_max = v;
            }
            "max.connections" => {
                let v: usize = parse_num(key, value)?;
                if !(1..=i32::MAX as usize).contains(&v) {
                    return Err(bad(key, value, "must be between 1 and 2147483647"));
                }
                self.max_connections = v;
            }
            "max.connections.per.ip" => {
                let v: usize = parse_num(key, value)?;
                if !(1..=i32::MAX as usize).contains(&v) {
                    return Err(bad(key, value, "must be between 1 and 2147483647"));
                }
                self.max_connections_per_ip = v;
            }
            "max.connections.per.ip.overrides" => {
                self.max_connections_per_ip_overrides = parse_ip_overrides(key, value)?;
            }
            "queued.max.request.bytes" => {
                let v: i64 = parse_num(key, value)?;
                // Kafka's -1 (unbounded) is refused: a flood of large requests would end in
                // running out of memory.
                if v < 1024 * 1024 {
                    return Err(bad(
                        key,
                        value,
                        "must be at least 1048576 (an unbounded -1 is not supported)",
                    ));
                }
                self.queued_max_request_bytes = usize::try_from(v).unwrap_or(usize::MAX);
            }
            "log.retention.check.interval.ms" => {
                let v: u64 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.retention_check_interval_ms = v;
            }
            "log.cleaner.enable" => self.log_cleaner_enable = parse_bool(key, value)?,
            "log.cleaner.dedupe.buffer.size" => {
                let v: u64 = parse_num(key, value)?;
                if v < LOG_CLEANER_DEDUPE_BUFFER_MIN {
                    return Err(bad(key, value, "must be >= 1048576"));
                }
                self.log_cleaner_dedupe_buffer_size = v;
            }
            "log.cleaner.backoff.ms" => {
                let v: u64 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.log_cleaner_backoff_ms = v;
            }
            "log.cleaner.io.buffer.size" => {
                let v: u64 = parse_num(key, value)?;
                if !(4096..=i32::MAX as u64).contains(&v) {
                    return Err(bad(key, value, "must be between 4096 and 2147483647"));
                }
                self.log_cleaner_io_buffer_size = v;
            }
            "log.cleaner.threads" => {
                let v: u32 = parse_num(key, value)?;
                if !(1..=i32::MAX as u32).contains(&v) {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.log_cleaner_threads = v;
            }
            "transaction.state.log.num.partitions" => {
                let v: i32 = parse_num(key, value)?;
                if !(1..=1000).contains(&v) {
                    return Err(bad(key, value, "must be between 1 and 1000"));
                }
                self.transaction_state_log_num_partitions = v;
            }
            "transaction.state.log.replication.factor" => {
                let v: i16 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.transaction_state_log_replication_factor = v;
            }
            "transaction.state.log.min.isr" => {
                let v: i32 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.transaction_state_log_min_isr = v;
            }
            "transaction.max.timeout.ms" => {
                let v: i32 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.transaction_max_timeout_ms = v;
            }
            "transaction.partition.verification.enable" => {
                self.transaction_partition_verification_enable = parse_bool(key, value)?;
            }
            "transactional.id.expiration.ms" => {
                let v: i64 = parse_num(key, value)?;
                if !(1..=i32::MAX as i64).contains(&v) {
                    return Err(bad(key, value, "must be between 1 and 2147483647"));
                }
                self.transactional_id_expiration_ms = v;
            }
            "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                let v: u64 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.transaction_abort_timed_out_transaction_cleanup_interval_ms = v;
            }
            "transaction.remove.expired.transaction.cleanup.interval.ms" => {
                let v: u64 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.transaction_remove_expired_transaction_cleanup_interval_ms = v;
            }
            "producer.id.expiration.ms" => {
                let v: i64 = parse_num(key, value)?;
                if !(1..=i32::MAX as i64).contains(&v) {
                    return Err(bad(key, value, "must be between 1 and 2147483647"));
                }
                self.producer_id_expiration_ms = v;
            }
            "producer.id.expiration.check.interval.ms" => {
                let v: u64 = parse_num(key, value)?;
                if !(1..=i32::MAX as u64).contains(&v) {
                    return Err(bad(key, value, "must be between 1 and 2147483647"));
                }
                self.producer_id_expiration_check_interval_ms = v;
            }
            "offsets.topic.segment.bytes" => {
                self.offsets_topic_segment_bytes = internal_segment_bytes(key, value)?;
            }
            "transaction.state.log.segment.bytes" => {
                self.transaction_state_log_segment_bytes = internal_segment_bytes(key, value)?;
            }
            "offsets.topic.num.partitions" => {
                let v: i32 = parse_num(key, value)?;
                if !(1..=1000).contains(&v) {
                    return Err(bad(key, value, "must be between 1 and 1000"));
                }
                self.offsets_topic_num_partitions = v;
            }
            "offsets.retention.minutes" => {
                let m: i64 = parse_num(key, value)?;
                if !(1..=i64::MAX / 60_000).contains(&m) {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.offsets_retention_ms = m * 60_000;
            }
            "offsets.retention.check.interval.ms" => {
                let v: u64 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.offsets_retention_check_interval_ms = v;
            }
            "group.initial.rebalance.delay.ms" => {
                let v: i32 = parse_num(key, value)?;
                if v < 0 {
                    return Err(bad(key, value, "must be >= 0"));
                }
                self.group_initial_rebalance_delay_ms = v;
            }
            "group.min.session.timeout.ms" => {
                let v: i32 = parse_num(key, value)?;
                if v < 1 || v > self.group_max_session_timeout_ms {
                    return Err(bad(
                        key,
                        value,
                        "must be >= 1 and <= group.max.session.timeout.ms",
                    ));
                }
                self.group_min_session_timeout_ms = v;
            }
            "group.max.session.timeout.ms" => {
                let v: i32 = parse_num(key, value)?;
                if v < self.group_min_session_timeout_ms {
                    return Err(bad(key, value, "must be >= group.min.session.timeout.ms"));
                }
                self.group_max_session_timeout_ms = v;
            }
            "zookeeper.connect" => {
                let v = value.trim();
                // Empty means standalone, as when the key is absent.
                self.zookeeper_connect = (!v.is_empty()).then(|| v.to_string());
            }
            "zookeeper.session.timeout.ms" => {
                let v: u64 = parse_num(key, value)?;
                if !(1000..=600_000).contains(&v) {
                    return Err(bad(key, value, "must be between 1000 and 600000"));
                }
                self.zookeeper_session_timeout_ms = v;
            }
            "replica.lag.time.max.ms" => {
                let v: u64 = parse_num(key, value)?;
                if v < 100 {
                    return Err(bad(key, value, "must be >= 100"));
                }
                self.replica_lag_time_max_ms = v;
            }
            "replica.fetch.wait.max.ms" => {
                let v: i32 = parse_num(key, value)?;
                if !(0..=60_000).contains(&v) {
                    return Err(bad(key, value, "must be between 0 and 60000"));
                }
                self.replica_fetch_wait_max_ms = v;
            }
            "replica.fetch.max.bytes" => {
                let v: i32 = parse_num(key, value)?;
                if v < 1024 {
                    return Err(bad(key, value, "must be >= 1024"));
                }
                self.replica_fetch_max_bytes = v;
            }
            "replica.fetch.min.bytes" => {
                let v: i32 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.replica_fetch_min_bytes = v;
            }
            "replica.fetch.backoff.ms" => {
                let v: u64 = parse_num(key, value)?;
                if v > 60_000 {
                    return Err(bad(key, value, "must be between 0 and 60000"));
                }
                self.replica_fetch_backoff_ms = v;
            }
            "quota.window.num" => {
                let v: u32 = parse_num(key, value)?;
                if !(2..=1000).contains(&v) {
                    return Err(bad(key, value, "must be between 2 and 1000"));
                }
                self.quota_window_num = v;
            }
            "quota.window.size.seconds" => {
                let v: u32 = parse_num(key, value)?;
                if !(1..=3600).contains(&v) {
                    return Err(bad(key, value, "must be between 1 and 3600"));
                }
                self.quota_window_size_seconds = v;
            }
            "replica.socket.timeout.ms" => {
                let v: u64 = parse_num(key, value)?;
                if !(100..=300_000).contains(&v) {
                    return Err(bad(key, value, "must be between 100 and 300000"));
                }
                self.replica_socket_timeout_ms = v;
            }
            "default.replication.factor" => {
                let v: i16 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.default_replication_factor = v;
            }
            "offsets.topic.replication.factor" => {
                let v: i16 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.offsets_topic_replication_factor = v;
            }
            "controlled.shutdown.enable" => {
                self.controlled_shutdown_enable = parse_bool(key, value)?
            }
            "auto.leader.rebalance.enable" => {
                self.auto_leader_rebalance_enable = parse_bool(key, value)?
            }
            "leader.imbalance.check.interval.seconds" => {
                let v: u64 = parse_num(key, value)?;
                if !(1..=86_400).contains(&v) {
                    return Err(bad(key, value, "must be between 1 and 86400"));
                }
                self.leader_imbalance_check_interval_ms = v * 1000;
            }
            "leader.imbalance.per.broker.percentage" => {
                let v: u32 = parse_num(key, value)?;
                if v > 100 {
                    return Err(bad(key, value, "must be between 0 and 100"));
                }
                self.leader_imbalance_per_broker_percentage = v;
            }
            "metrics.listen" => {
                let v = value.trim();
                self.metrics_listen = if v.is_empty() {
                    None
                } else {
                    let (host, port) = split_host_port(key, value, v)?;
                    Some(resolve(key, value, &host, port)?)
                };
            }
            "metrics.partition.labels.max" => {
                self.metrics_partition_labels_max = parse_num(key, value)?
            }
            "log.format" => {
                let v = value.trim();
                if v != "text" && v != "json" {
                    return Err(bad(key, value, "expected text or json"));
                }
                self.log_format = v.to_string();
            }
            "log.level" => {
                let v = value.trim();
                check_log_filter(v).map_err(|reason| bad(key, value, &reason))?;
                self.log_level = v.to_string();
            }
            // Kafka's precedence, whatever the order in the file: log.retention.ms over
            // log.retention.minutes over log.retention.hours, log.roll.ms over log.roll.hours.
            // A value that loses is still validated.
            "log.retention.hours" => {
                let ms = hours(key, value)?;
                if !self.explicit.contains_key("log.retention.ms")
                    && !self.explicit.contains_key("log.retention.minutes")
                {
                    t.set("retention.ms", &ms.to_string())?
                }
            }
            "log.retention.minutes" => {
                let m: i64 = parse_num(key, value)?;
                let ms = if m < 0 {
                    -1
                } else {
                    m.checked_mul(60_000)
                        .ok_or_else(|| bad(key, value, "too large"))?
                };
                if !self.explicit.contains_key("log.retention.ms") {
                    t.set("retention.ms", &ms.to_string())?
                }
            }
            "log.roll.hours" => {
                let ms = hours(key, value)?;
                if !self.explicit.contains_key("log.roll.ms") {
                    t.set("segment.ms", &ms.to_string())?
                }
            }
            "message.max.bytes" => t.set("max.message.bytes", value)?,
            "log.cleanup.policy" => t.set("cleanup.policy", value)?,
            "log.cleaner.delete.retention.ms" => t.set("delete.retention.ms", value)?,
            "log.cleaner.min.cleanable.ratio" => t.set("min.cleanable.dirty.ratio", value)?,
            "log.cleaner.min.compaction.lag.ms" => t.set("min.compaction.lag.ms", value)?,
            "log.cleaner.max.compaction.lag.ms" => t.set("max.compaction.lag.ms", value)?,
            "log.message.timestamp.type" => t.set("message.timestamp.type", value)?,
            "log.flush.interval.messages" => t.set("flush.messages", value)?,
            "log.flush.interval.ms" => t.set("flush.ms", value)?,
            "log.index.interval.bytes" => t.set("index.interval.bytes", value)?,
            "log.preallocate.ahead.bytes" => {
                let v: u64 = parse_num(key, value)?;
                if v > shardlog_storage::policy::MAX_SEGMENT_BYTES {
                    return Err(bad(key, value, "must be between 0 and 2147483647"));
                }
                t.preallocate_bytes = v;
            }
            "log.retention.bytes" => t.set("retention.bytes", value)?,
            "log.retention.ms" => t.set("retention.ms", value)?,
            "log.segment.bytes" => t.set("segment.bytes", value)?,
            "log.roll.ms" => t.set("segment.ms", value)?,
            "min.insync.replicas" | "unclean.leader.election.enable" | "compression.type" => {
                t.set(key, value)?
            }
            // A key in the reference table that this match forgot; the table's tests catch it.
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }

    /// Reads a Java-style properties file (`key=value`, `key: value` or `key value`; `#` and `!`
    /// comments; a trailing backslash continues the line). Errors name the file and line.
    pub fn load_properties(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
            path: path.to_path_buf(),
            source,
        })?;
        for (line, key, value) in parse_properties(&text) {
            self.set(&key, &value).map_err(|e| ConfigError::Line {
                path: path.to_path_buf(),
                line,
                source: Box::new(e),
            })?;
        }
        Ok(())
    }

    /// Completes the settings that depend on others; call once every source has been applied.
    /// Without `advertised.listeners`, clients are given the listener as written (host name or
    /// address), or this machine's host name when the broker listens on a wildcard address
    /// (which no client can connect to), as Kafka does.
    pub fn finalize(&mut self) -> Result<(), ConfigError> {
        self.finalize_with(local_host_name)
    }

    /// `finalize` with the host name lookup supplied, so that tests do not depend on the machine.
    pub fn finalize_with(
        &mut self,
        host_name: impl FnOnce() -> Option<String>,
    ) -> Result<(), ConfigError> {
        if self.topic_defaults.check().is_err() {
            let t = &self.topic_defaults;
            return Err(bad(
                "log.cleaner.min.compaction.lag.ms",
                &t.min_compaction_lag_ms.to_string(),
                &format!(
                    "must not be greater than log.cleaner.max.compaction.lag.ms ({})",
                    t.max_compaction_lag_ms
                ),
            ));
        }
        if !self.explicit.contains_key("advertised.listeners") {
            self.advertised_port = self.listen.port();
            self.advertised_host = if self.listen.ip().is_unspecified() {
                host_name().filter(|h| !h.is_empty()).ok_or_else(|| {
                    bad(
                        "advertised.listeners",
                        "",
                        "the broker listens on a wildcard address and this machine's host name \
                         cannot be read: set advertised.listeners",
                    )
                })?
            } else {
                // A listener given by host name is advertised by that name, as Kafka does: the
                // name may resolve differently for clients than it did here.
                self.explicit
                    .get("listeners")
                    .and_then(|v| plaintext_endpoint("listeners", v).ok())
                    .map(|(host, _)| host)
                    .filter(|host| !host.is_empty() && host.parse::<IpAddr>().is_err())
                    .unwrap_or_else(|| self.listen.ip().to_string())
            };
        }
        Ok(())
    }

    /// This shard's part of `queued.max.request.bytes` when the broker runs `shards` shards:
    /// an equal share, so that each shard accounts on its own, without locks or atomics.
    pub fn request_budget_per_shard(&self, shards: usize) -> usize {
        (self.queued_max_request_bytes / shards.max(1)).max(64 * 1024)
    }

    /// This shard's part of `log.cleaner.dedupe.buffer.size` when the broker runs `shards`
    /// shards (one cleaner each): an equal share, at least 1 MiB (Kafka's least per cleaner).
    pub fn log_cleaner_dedupe_buffer_per_shard(&self, shards: usize) -> u64 {
        (self.log_cleaner_dedupe_buffer_size / shards.max(1) as u64)
            .max(LOG_CLEANER_DEDUPE_BUFFER_MIN)
    }

    /// The connection limit for one client address.
    pub fn max_connections_for(&self, ip: IpAddr) -> usize {
        self.max_connections_per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.max_connections_per_ip)
    }

    /// The one warning line naming the accepted Kafka settings Shardlog does not use, if any.
    pub fn ignored_keys_warning(&self) -> Option<String> {
        if self.ignored_kafka_keys.is_empty() {
            return None;
        }
        Some(format!(
            "accepted but not used by Shardlog: {}",
            self.ignored_kafka_keys.join(", ")
        ))
    }

    /// The value of a broker key, for DescribeConfigs and the configuration reference.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "broker.id" | "node.id" => self.broker_id.to_string(),
            "listeners" => format!("PLAINTEXT://{}", self.listen),
            "advertised.listeners" => {
                if self.advertised_host.contains(':') {
                    format!(
                        "PLAINTEXT://[{}]:{}",
                        self.advertised_host, self.advertised_port
                    )
                } else {
                    format!(
                        "PLAINTEXT://{}:{}",
                        self.advertised_host, self.advertised_port
                    )
                }
            }
            "log.dirs" | "log.dir" => self.data_dir.display().to_string(),
            "num.shards" => self.shards.to_string(),
            "auto.create.topics.enable" => self.auto_create_topics.to_string(),
            "num.partitions" => self.num_partitions.to_string(),
            "socket.request.max.bytes" => self.request_bytes_max.to_string(),
            "max.connections" => self.max_connections.to_string(),
            "max.connections.per.ip" => self.max_connections_per_ip.to_string(),
            "max.connections.per.ip.overrides" => self
                .max_connections_per_ip_overrides
                .iter()
                .map(|(ip, n)| format!("{ip}:{n}"))
                .collect::<Vec<_>>()
                .join(","),
            "queued.max.request.bytes" => self.queued_max_request_bytes.to_string(),
            "log.retention.check.interval.ms" => self.retention_check_interval_ms.to_string(),
            "log.cleaner.enable" => self.log_cleaner_enable.to_string(),
            "log.cleaner.dedupe.buffer.size" => self.log_cleaner_dedupe_buffer_size.to_string(),
            "log.cleaner.backoff.ms" => self.log_cleaner_backoff_ms.to_string(),
            "log.cleaner.io.buffer.size" => self.log_cleaner_io_buffer_size.to_string(),
            "log.cleaner.threads" => self.log_cleaner_threads.to_string(),
            "log.preallocate.ahead.bytes" => self.topic_defaults.preallocate_bytes.to_string(),
            "offsets.topic.num.partitions" => self.offsets_topic_num_partitions.to_string(),
            "offsets.topic.segment.bytes" => self.offsets_topic_segment_bytes.to_string(),
            "transaction.state.log.segment.bytes" => {
                self.transaction_state_log_segment_bytes.to_string()
            }
            "transaction.state.log.num.partitions" => {
                self.transaction_state_log_num_partitions.to_string()
            }
            "transaction.state.log.replication.factor" => {
                self.transaction_state_log_replication_factor.to_string()
            }
            "transaction.state.log.min.isr" => self.transaction_state_log_min_isr.to_string(),
            "transaction.max.timeout.ms" => self.transaction_max_timeout_ms.to_string(),
            "transaction.partition.verification.enable" => {
                self.transaction_partition_verification_enable.to_string()
            }
            "transactional.id.expiration.ms" => self.transactional_id_expiration_ms.to_string(),
            "transaction.abort.timed.out.transaction.cleanup.interval.ms" => self
                .transaction_abort_timed_out_transaction_cleanup_interval_ms
                .to_string(),
            "transaction.remove.expired.transaction.cleanup.interval.ms" => self
                .transaction_remove_expired_transaction_cleanup_interval_ms
                .to_string(),
            "producer.id.expiration.ms" => self.producer_id_expiration_ms.to_string(),
            "producer.id.expiration.check.interval.ms" => {
                self.producer_id_expiration_check_interval_ms.to_string()
            }
            "offsets.retention.minutes" => (self.offsets_retention_ms / 60_000).to_string(),
            "offsets.retention.check.interval.ms" => {
                self.offsets_retention_check_interval_ms.to_string()
            }
            "group.initial.rebalance.delay.ms" => self.group_initial_rebalance_delay_ms.to_string(),
            "group.min.session.timeout.ms" => self.group_min_session_timeout_ms.to_string(),
            "group.max.session.timeout.ms" => self.group_max_session_timeout_ms.to_string(),
            "zookeeper.connect" => self.zookeeper_connect.clone().unwrap_or_default(),
            "zookeeper.session.timeout.ms" => self.zookeeper_session_timeout_ms.to_string(),
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms.to_string(),
            "replica.fetch.wait.max.ms" => self.replica_fetch_wait_max_ms.to_string(),
            "replica.fetch.max.bytes" => self.replica_fetch_max_bytes.to_string(),
            "replica.fetch.min.bytes" => self.replica_fetch_min_bytes.to_string(),
            "replica.fetch.backoff.ms" => self.replica_fetch_backoff_ms.to_string(),
            "replica.socket.timeout.ms" => self.replica_socket_timeout_ms.to_string(),
            "quota.window.num" => self.quota_window_num.to_string(),
            "quota.window.size.seconds" => self.quota_window_size_seconds.to_string(),
            "default.replication.factor" => self.default_replication_factor.to_string(),
            "offsets.topic.replication.factor" => self.offsets_topic_replication_factor.to_string(),
            "controlled.shutdown.enable" => self.controlled_shutdown_enable.to_string(),
            "auto.leader.rebalance.enable" => self.auto_leader_rebalance_enable.to_string(),
            "leader.imbalance.check.interval.seconds" => {
                (self.leader_imbalance_check_interval_ms / 1000).to_string()
            }
            "leader.imbalance.per.broker.percentage" => {
                self.leader_imbalance_per_broker_percentage.to_string()
            }
            "metrics.listen" => self
                .metrics_listen
                .map(|a| a.to_string())
                .unwrap_or_default(),
            "metrics.partition.labels.max" => self.metrics_partition_labels_max.to_string(),
            "log.format" => self.log_format.clone(),
            "log.level" => self.log_level.clone(),
            // The coarser aliases: the value given, or the effective value in their unit.
            "log.retention.hours" | "log.retention.minutes" | "log.roll.hours" => {
                if let Some(v) = self.explicit.get(key) {
                    return Some(v.trim().to_string());
                }
                let (ms, unit) = match key {
                    "log.retention.hours" => (self.topic_defaults.retention_ms, 3_600_000),
                    "log.retention.minutes" => (self.topic_defaults.retention_ms, 60_000),
                    _ => (self.topic_defaults.segment_ms as i64, 3_600_000),
                };
                if ms < 0 {
                    "-1".to_string()
                } else {
                    (ms / unit).to_string()
                }
            }
            _ => {
                let topic_key = TOPIC_KEYS.iter().find(|(_, b)| *b == key)?.0;
                return self.topic_defaults.get(topic_key);
            }
        })
    }
}

fn hours(key: &str, value: &str) -> Result<i64, ConfigError> {
    let h: i64 = parse_num(key, value)?;
    if h < 0 {
        return Ok(-1);
    }
    h.checked_mul(3_600_000)
        .ok_or_else(|| bad(key, value, "too large"))
}

/// The closest known broker key to a mistyped one, if one is close enough to be the intent.
fn suggest_broker_key(key: &str) -> Option<String> {
    // A topic-level name given to the broker: its broker-level name sets the default.
    if let Some((_, broker_key)) = TOPIC_KEYS.iter().find(|(t, _)| *t == key) {
        return Some(broker_key.to_string());
    }
    let wanted = key.to_ascii_lowercase();
    // Roughly one edit per five characters, between 1 and 3: "num.partiton" is a typo of
    // "num.partitions", "log.x" is not a typo of "log.dir".
    let max = (key.len() / 5).clamp(1, 3);
    BROKER_SETTINGS
        .iter()
        .map(|s| s.name)
        .chain(KAFKA_BROKER_KEYS.iter().copied())
        .map(|k| (edit_distance(&wanted, &k.to_ascii_lowercase()), k))
        .filter(|(d, _)| *d <= max)
        .min()
        .map(|(_, k)| k.to_string())
}

/// Levenshtein distance (insertions, deletions and substitutions each cost 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The one PLAINTEXT endpoint of a `listeners`/`advertised.listeners` value, as (host, port)
/// with IPv6 brackets removed; the host is empty for `PLAINTEXT://:9092`. A bare `host:port`
/// counts as PLAINTEXT (the form `--listen` has always taken).
fn plaintext_endpoint(key: &str, value: &str) -> Result<(String, u16), ConfigError> {
    let mut found = None;
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, address) = entry.split_once("://").unwrap_or(("PLAINTEXT", entry));
        match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => {}
            "SSL" | "SASL_PLAINTEXT" | "SASL_SSL" => {
                return Err(bad(
                    key,
                    value,
                    &format!(
                    "{entry}: TLS/SASL listeners are not supported yet; only PLAINTEXT is served"
                ),
                ))
            }
            _ => {
                return Err(bad(
                    key,
                    value,
                    &format!(
                        "{entry}: only PLAINTEXT listeners are supported (listener names mapped \
                         by listener.security.protocol.map are not)"
                    ),
                ))
            }
        }
        if found.is_some() {
            return Err(bad(key, value, "more than one PLAINTEXT listener"));
        }
        found = Some(split_host_port(key, value, address)?);
    }
    found.ok_or_else(|| bad(key, value, "expected PLAINTEXT://host:port"))
}

/// Splits `host:port`, `[v6]:port` or `:port` (empty host).
fn split_host_port(key: &str, value: &str, s: &str) -> Result<(String, u16), ConfigError> {
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| bad(key, value, "missing ] after an IPv6 address"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| bad(key, value, "expected [address]:port"))?;
            (host, port)
        }
        None => {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| bad(key, value, "expected host:port"))?;
            if host.contains(':') {
                return Err(bad(
                    key,
                    value,
                    "write an IPv6 address in brackets: [::1]:9092",
                ));
            }
            (host, port)
        }
    };
    let port = port
        .trim()
        .parse()
        .map_err(|_| bad(key, value, "the port must be a number from 0 to 65535"))?;
    Ok((host.trim().to_string(), port))
}

/// The address to bind for `host`: every interface when empty, else the address itself, else
/// the host name resolved (the first IPv4 address, or the first address if there is none).
fn resolve(key: &str, value: &str, host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(key, value, &format!("cannot resolve {host}: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| bad(key, value, &format!("{host} has no address")))
}

/// This machine's host name, as `hostname` prints it.
fn local_host_name() -> Option<String> {
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            return Some(name.to_string());
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes at most that much.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// Checks a RUST_LOG-style filter: comma-separated `level`, `target` or `target=level`
/// directives, optionally followed by `/regex`.
fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |s: &str| LEVELS.contains(&s.to_ascii_lowercase().as_str());
    let is_target = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-')
    };
    let directives = filter.split_once('/').map_or(filter, |(d, _)| d);
    if directives.trim().is_empty() {
        return Err("expected a level such as info, or target=level directives".into());
    }
    for d in directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        let ok = match d.split_once('=') {
            Some((target, level)) => is_target(target.trim()) && is_level(level.trim()),
            None => is_level(d) || is_target(d),
        };
        if !ok {
            return Err(format!(
                "{d:?}: expected a level (off, error, warn, info, debug, trace), a target, or \
                 target=level"
            ));
        }
    }
    Ok(())
}

/// Splits a Java properties text into (line number, key, value), following
/// `java.util.Properties`: the key ends at the first unescaped `=`, `:` or white space; a line
/// ending in an odd number of backslashes continues on the next one; `\t`, `\n`, `\uXXXX` and
/// `\x` (= x) escapes are decoded.
fn parse_properties(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let first = line.trim_start();
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = first.to_string();
        while logical.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1 {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_property(&logical);
        out.push((
            index + 1,
            unescape(key),
            unescape(value).trim_end().to_string(),
        ));
    }
    out
}

fn split_property(line: &str) -> (&str, &str) {
    let mut escaped = false;
    let mut key_end = line.len();
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || c.is_whitespace() {
            key_end = i;
            break;
        }
    }
    let key = &line[..key_end];
    let rest = line[key_end..].trim_start();
    let rest = rest
        .strip_prefix('=')
        .or_else(|| rest.strip_prefix(':'))
        .unwrap_or(rest);
    (key, rest.trim_start())
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(decoded) if hex.len() == 4 => {
                        out.push(decoded);
                        chars.nth(3);
                    }
                    // Java refuses a malformed \u escape; keeping it literally makes the
                    // resulting key or value fail validation with the text visible.
                    _ => out.push_str("\\u"),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Kafka's topic name rule: 1..=249 chars of `[a-zA-Z0-9._-]`, not "." or "..".
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= limits::TOPIC_NAME_LEN_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_overrides_resolve_and_validate() {
        let mut broker = BrokerConfig::default();
        broker.set("log.retention.hours", "1").unwrap();
        let mut o = BTreeMap::new();
        o.insert("segment.bytes".to_string(), "1024".to_string());
        let t = TopicConfig::resolve(&broker, &o).unwrap();
        assert_eq!(t.retention_ms, 3_600_000);
        assert_eq!(t.segment_bytes, 1024);
        o.insert("retention.ms".into(), "-5".into());
        assert!(matches!(
            TopicConfig::resolve(&broker, &o),
            Err(ConfigError::BadValue { .. })
        ));
        o.remove("retention.ms");
        o.insert("nope".into(), "1".into());
        assert!(matches!(
            TopicConfig::resolve(&broker, &o),
            Err(ConfigError::UnknownKey(_))
        ));
        assert_eq!(broker.get("log.retention.ms").as_deref(), Some("3600000"));
    }

    #[test]
    fn cleanup_policy_is_compact_delete_or_both() {
        let policy = |v: &str| {
            let mut t = TopicConfig::default();
            t.set("cleanup.policy", v).map(|()| t)
        };
        let d = TopicConfig::default();
        assert!(d.cleanup_policy_delete && !d.cleanup_policy_compact);
        assert_eq!(d.get("cleanup.policy").as_deref(), Some("delete"));
        assert_eq!(d.log_config().retention_ms, 7 * 24 * 3600 * 1000);

        let mut c = policy("compact").unwrap();
        assert!(c.cleanup_policy_compact && !c.cleanup_policy_delete);
        assert_eq!(c.get("cleanup.policy").as_deref(), Some("compact"));
        c.set("retention.bytes", "1000").unwrap();
        // Retention does not apply without `delete`.
        assert_eq!(
            (c.log_config().retention_ms, c.log_config().retention_bytes),
            (-1, -1)
        );

        for v in ["compact,delete", "delete,compact", " delete , compact "] {
            let mut b = policy(v).unwrap();
            assert!(b.cleanup_policy_compact && b.cleanup_policy_delete, "{v}");
            assert_eq!(b.get("cleanup.policy").as_deref(), Some("compact,delete"));
            b.set("retention.bytes", "1000").unwrap();
            b.set("retention.ms", "5000").unwrap();
            // Both: retention applies as with `delete`.
            assert_eq!(
                (b.log_config().retention_ms, b.log_config().retention_bytes),
                (5000, 1000)
            );
        }
        let back = policy("delete").unwrap();
        assert!(!back.cleanup_policy_compact && back.cleanup_policy_delete);
        for v in ["", "compact,", "compacted", "delete;compact"] {
            let e = policy(v).expect_err(v).to_string();
            assert!(e.contains("cleanup.policy"), "{e}");
        }
        let mut broker = BrokerConfig::default();
        broker.set("log.cleanup.policy", "compact,delete").unwrap();
        assert_eq!(
            broker.get("log.cleanup.policy").as_deref(),
            Some("compact,delete")
        );
        assert!(broker.topic_defaults.cleanup_policy_delete);
    }

    #[test]
    fn cleaner_topic_settings_parse_validate_and_render() {
        let d = TopicConfig::default();
        assert_eq!(d.delete_retention_ms, 86_400_000);
        assert_eq!(d.min_cleanable_dirty_ratio, 0.5);
        assert_eq!(d.min_compaction_lag_ms, 0);
        assert_eq!(d.max_compaction_lag_ms, i64::MAX);
        for (k, v) in [
            ("delete.retention.ms", "86400000"),
            ("min.cleanable.dirty.ratio", "0.5"),
            ("min.compaction.lag.ms", "0"),
            ("max.compaction.lag.ms", "9223372036854775807"),
        ] {
            assert_eq!(d.get(k).as_deref(), Some(v), "{k}");
        }

        let mut t = TopicConfig::default();
        t.set("delete.retention.ms", "0").unwrap();
        t.set("min.compaction.lag.ms", "60000").unwrap();
        t.set("max.compaction.lag.ms", "60000").unwrap();
        assert_eq!(
            (
                t.delete_retention_ms,
                t.min_compaction_lag_ms,
                t.max_compaction_lag_ms
            ),
            (0, 60_000, 60_000)
        );
        assert!(t.check().is_ok());
        for (v, shown) in [
            ("0", "0.0"),
            ("1", "1.0"),
            (" 0.25 ", "0.25"),
            ("0.5", "0.5"),
        ] {
            t.set("min.cleanable.dirty.ratio", v).unwrap();
            assert_eq!(t.get("min.cleanable.dirty.ratio").as_deref(), Some(shown));
            // What `get` prints is accepted back with the same value.
            let again = t.min_cleanable_dirty_ratio;
            t.set("min.cleanable.dirty.ratio", shown).unwrap();
            assert_eq!(t.min_cleanable_dirty_ratio, again);
        }
        for (k, v) in [
            ("delete.retention.ms", "-1"),
            ("delete.retention.ms", "x"),
            ("min.cleanable.dirty.ratio", "1.01"),
            ("min.cleanable.dirty.ratio", "-0.1"),
            ("min.cleanable.dirty.ratio", "NaN"),
            ("min.cleanable.dirty.ratio", "inf"),
            ("min.cleanable.dirty.ratio", ""),
            ("min.compaction.lag.ms", "-1"),
            ("max.compaction.lag.ms", "0"),
            ("max.compaction.lag.ms", "9223372036854775808"),
        ] {
            let before = t.clone();
            let e = t.set(k, v).expect_err(v);
            assert!(
                matches!(&e, ConfigError::BadValue { key, .. } if key == k),
                "{k}={v}: {e}"
            );
            assert_eq!(t, before, "{k}={v} changed the config");
        }

        // min.compaction.lag.ms <= max.compaction.lag.ms, whatever the order of the keys.
        let broker = BrokerConfig::default();
        let mut o = BTreeMap::new();
        o.insert("max.compaction.lag.ms".to_string(), "1000".to_string());
        o.insert("min.compaction.lag.ms".to_string(), "2000".to_string());
        let e = TopicConfig::resolve(&broker, &o).unwrap_err().to_string();
        assert!(
            e.contains("min.compaction.lag.ms") && e.contains("max.compaction.lag.ms (1000)"),
            "{e}"
        );
        o.insert("min.compaction.lag.ms".to_string(), "1000".to_string());
        let t = TopicConfig::resolve(&broker, &o).unwrap();
        assert_eq!(
            (t.min_compaction_lag_ms, t.max_compaction_lag_ms),
            (1000, 1000)
        );
    }

    #[test]
    fn cleaner_broker_settings_parse_validate_and_supply_topic_defaults() {
        let d = BrokerConfig::default();
        assert!(d.log_cleaner_enable);
        assert_eq!(d.log_cleaner_dedupe_buffer_size, 134_217_728);
        assert_eq!(d.log_cleaner_backoff_ms, 15_000);
        assert_eq!(d.log_cleaner_io_buffer_size, 524_288);
        assert_eq!(d.log_cleaner_threads, 1);

        let mut c = BrokerConfig::default();
        for (k, v) in [
            ("log.cleaner.enable", "false"),
            ("log.cleaner.dedupe.buffer.size", "1048576"),
            ("log.cleaner.backoff.ms", "1"),
            ("log.cleaner.io.buffer.size", "4096"),
            ("log.cleaner.threads", "8"),
            ("log.cleaner.delete.retention.ms", "1000"),
            ("log.cleaner.min.cleanable.ratio", "0.1"),
            ("log.cleaner.min.compaction.lag.ms", "5"),
            ("log.cleaner.max.compaction.lag.ms", "6"),
        ] {
            c.set(k, v).unwrap_or_else(|e| panic!("{k}={v}: {e}"));
            assert_eq!(c.get(k).as_deref(), Some(v), "{k}");
            assert_eq!(c.explicit.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(
            c.ignored_kafka_keys.is_empty(),
            "{:?}",
            c.ignored_kafka_keys
        );
        assert!(!c.log_cleaner_enable);
        assert_eq!(c.log_cleaner_dedupe_buffer_size, 1 << 20);
        assert_eq!(c.log_cleaner_backoff_ms, 1);
        assert_eq!(c.log_cleaner_io_buffer_size, 4096);
        assert_eq!(c.log_cleaner_threads, 8);
        let t = &c.topic_defaults;
        assert_eq!(t.delete_retention_ms, 1000);
        assert_eq!(t.min_cleanable_dirty_ratio, 0.1);
        assert_eq!((t.min_compaction_lag_ms, t.max_compaction_lag_ms), (5, 6));
        // A topic without overrides gets them.
        let topic = TopicConfig::resolve(&c, &BTreeMap::new()).unwrap();
        assert_eq!(topic.min_cleanable_dirty_ratio, 0.1);

        for (k, v) in [
            ("log.cleaner.enable", "yes"),
            ("log.cleaner.dedupe.buffer.size", "1048575"),
            ("log.cleaner.dedupe.buffer.size", "-1"),
            ("log.cleaner.backoff.ms", "0"),
            ("log.cleaner.io.buffer.size", "4095"),
            ("log.cleaner.io.buffer.size", "2147483648"),
            ("log.cleaner.threads", "0"),
            ("log.cleaner.delete.retention.ms", "-1"),
            ("log.cleaner.min.cleanable.ratio", "2"),
            ("log.cleaner.min.compaction.lag.ms", "-5"),
            ("log.cleaner.max.compaction.lag.ms", "0"),
        ] {
            let e = c.set(k, v).expect_err(v).to_string();
            // The error names the key that was given (or the topic key it sets).
            let topic_key = TOPIC_KEYS.iter().find(|(_, b)| *b == k).map(|(t, _)| *t);
            assert!(
                e.contains(k) || topic_key.is_some_and(|t| e.contains(t)),
                "{k}={v}: {e}"
            );
        }

        // The dedupe buffer is shared by the shards' cleaners, at least 1 MiB each.
        let d = BrokerConfig::default();
        assert_eq!(d.log_cleaner_dedupe_buffer_per_shard(1), 134_217_728);
        assert_eq!(d.log_cleaner_dedupe_buffer_per_shard(4), 33_554_432);
        assert_eq!(d.log_cleaner_dedupe_buffer_per_shard(0), 134_217_728);
        assert_eq!(d.log_cleaner_dedupe_buffer_per_shard(1000), 1 << 20);

        // Broker defaults that conflict stop the broker at start, naming the broker keys.
        let mut c = BrokerConfig::default();
        c.set("log.cleaner.max.compaction.lag.ms", "10").unwrap();
        c.set("log.cleaner.min.compaction.lag.ms", "20").unwrap();
        let e = c
            .finalize_with(|| Some("h".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("log.cleaner.min.compaction.lag.ms")
                && e.contains("log.cleaner.max.compaction.lag.ms (10)"),
            "{e}"
        );
        c.set("log.cleaner.min.compaction.lag.ms", "10").unwrap();
        c.finalize_with(|| Some("h".into())).unwrap();
    }

    #[test]
    fn cleaner_keys_are_used_and_the_rest_of_the_cleaner_is_still_ignored() {
        for k in [
            "log.cleaner.backoff.ms",
            "log.cleaner.dedupe.buffer.size",
            "log.cleaner.delete.retention.ms",
            "log.cleaner.enable",
            "log.cleaner.io.buffer.size",
            "log.cleaner.max.compaction.lag.ms",
            "log.cleaner.min.cleanable.ratio",
            "log.cleaner.min.compaction.lag.ms",
            "log.cleaner.threads",
        ] {
            assert!(is_kafka_broker_key(k), "{k}");
            assert!(reference::broker_setting(k).is_some(), "{k}");
            assert!(reference::ignored_kafka_keys().all(|i| i != k), "{k}");
        }
        let mut c = BrokerConfig::default();
        c.set("log.cleaner.io.max.bytes.per.second", "1e6").unwrap();
        c.set("log.cleaner.io.buffer.load.factor", "0.9").unwrap();
        assert_eq!(
            c.ignored_kafka_keys,
            [
                "log.cleaner.io.buffer.load.factor",
                "log.cleaner.io.max.bytes.per.second"
            ]
        );
    }

    #[test]
    fn every_listed_key_has_a_value() {
        let broker = BrokerConfig::default();
        for k in BROKER_KEYS {
            assert!(broker.get(k).is_some(), "broker key {k}");
        }
        for (topic_key, broker_key) in TOPIC_KEYS {
            assert!(BROKER_KEYS.contains(broker_key), "{broker_key} not listed");
            assert!(
                broker.topic_defaults.get(topic_key).is_some(),
                "topic key {topic_key}"
            );
        }
    }

    #[test]
    fn tables_cover_every_key_and_are_sorted() {
        for k in BROKER_KEYS {
            assert!(reference::broker_setting(k).is_some(), "{k} not documented");
        }
        for (topic_key, broker_key) in TOPIC_KEYS {
            assert!(reference::topic_setting(topic_key).is_some(), "{topic_key}");
            assert!(
                reference::broker_setting(broker_key).is_some(),
                "{broker_key}"
            );
        }
        assert_eq!(TOPIC_SETTINGS.len(), TOPIC_KEYS.len());
        for table in [BROKER_SETTINGS, TOPIC_SETTINGS] {
            for pair in table.windows(2) {
                assert!(
                    pair[0].name < pair[1].name,
                    "{} / {}",
                    pair[0].name,
                    pair[1].name
                );
            }
            for s in table {
                assert!(!s.kind.is_empty() && !s.doc.is_empty(), "{}", s.name);
            }
        }
        assert!(BROKER_SETTINGS.iter().all(|s| !s.dynamic));
        assert!(TOPIC_SETTINGS.iter().all(|s| s.dynamic));
    }

    #[test]
    fn every_documented_key_is_accepted_with_its_default() {
        for s in BROKER_SETTINGS {
            let mut c = BrokerConfig::default();
            c.set(s.name, s.default)
                .unwrap_or_else(|e| panic!("{}={:?}: {e}", s.name, s.default));
            assert_eq!(c.get(s.name).as_deref(), Some(s.default), "{}", s.name);
            assert!(c.ignored_kafka_keys.is_empty(), "{}", s.name);
        }
        for s in TOPIC_SETTINGS {
            let mut t = TopicConfig::default();
            t.set(s.name, s.default)
                .unwrap_or_else(|e| panic!("{}={:?}: {e}", s.name, s.default));
            assert_eq!(t.get(s.name).as_deref(), Some(s.default), "{}", s.name);
        }
    }

    #[test]
    fn kafka_key_list_is_sorted_and_holds_the_shared_settings() {
        for pair in KAFKA_BROKER_KEYS.windows(2) {
            assert!(pair[0] < pair[1], "{} / {}", pair[0], pair[1]);
        }
        // Shardlog's own settings are not Kafka's; every other documented key is a Kafka name.
        let own = [
            "log.format",
            "log.level",
            "log.preallocate.ahead.bytes",
            "metrics.listen",
            "metrics.partition.labels.max",
            "num.shards",
        ];
        for s in BROKER_SETTINGS {
            assert_eq!(
                is_kafka_broker_key(s.name),
                !own.contains(&s.name),
                "{}",
                s.name
            );
        }
        assert!(is_kafka_broker_key(
            "listener.name.internal.ssl.keystore.location"
        ));
        assert!(!is_kafka_broker_key("listener.name."));
    }

    #[test]
    fn unused_kafka_keys_are_collected_once_and_sorted() {
        let mut c = BrokerConfig::default();
        for k in ["ssl.keystore.location", "num.io.threads", "broker.rack"] {
            c.set(k, "x").unwrap();
        }
        c.set("num.io.threads", "16").unwrap();
        assert_eq!(
            c.ignored_kafka_keys,
            ["broker.rack", "num.io.threads", "ssl.keystore.location"]
        );
        assert!(!c.explicit.contains_key("num.io.threads"));
        assert_eq!(
            c.ignored_keys_warning().as_deref(),
            Some("accepted but not used by Shardlog: broker.rack, num.io.threads, ssl.keystore.location")
        );
        assert_eq!(BrokerConfig::default().ignored_keys_warning(), None);
    }

    #[test]
    fn unknown_keys_are_refused_with_a_hint_when_one_is_close() {
        let mut c = BrokerConfig::default();
        let hint = |c: &mut BrokerConfig, k: &str| match c.set(k, "1") {
            Err(ConfigError::UnknownBrokerKey { suggestion, .. }) => suggestion,
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(
            hint(&mut c, "log.retension.hours").as_deref(),
            Some("log.retention.hours")
        );
        assert_eq!(
            hint(&mut c, "num.partiton").as_deref(),
            Some("num.partitions")
        );
        assert_eq!(
            hint(&mut c, "zookeper.connect").as_deref(),
            Some("zookeeper.connect")
        );
        assert_eq!(hint(&mut c, "Broker.Id").as_deref(), Some("broker.id"));
        assert_eq!(
            hint(&mut c, "metrics.listn").as_deref(),
            Some("metrics.listen")
        );
        // A topic-level name at broker level: the broker name of that default.
        assert_eq!(
            hint(&mut c, "retention.ms").as_deref(),
            Some("log.retention.ms")
        );
        assert_eq!(hint(&mut c, "no.such.setting.at.all"), None);
        assert_eq!(hint(&mut c, "x"), None);
        let msg = c.set("num.partiton", "1").unwrap_err().to_string();
        assert_eq!(
            msg,
            "unknown config key \"num.partiton\" (did you mean \"num.partitions\"?)"
        );
        let msg = c.set("bogus", "1").unwrap_err().to_string();
        assert!(
            msg.contains("neither a Shardlog nor a Kafka broker setting"),
            "{msg}"
        );
        assert!(c.ignored_kafka_keys.is_empty());
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "abd"), 1);
        assert_eq!(edit_distance("abc", "ab"), 1);
        assert_eq!(edit_distance("ab", "abc"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn listeners_take_kafka_syntax() {
        let listen = |v: &str| {
            let mut c = BrokerConfig::default();
            c.set("listeners", v).map(|()| c.listen)
        };
        assert_eq!(
            listen("PLAINTEXT://:9092").unwrap(),
            "0.0.0.0:9092".parse().unwrap()
        );
        assert_eq!(
            listen("PLAINTEXT://127.0.0.1:9093").unwrap(),
            "127.0.0.1:9093".parse().unwrap()
        );
        assert_eq!(
            listen("plaintext://[::1]:9094").unwrap(),
            "[::1]:9094".parse().unwrap()
        );
        assert_eq!(
            listen("10.1.2.3:9092").unwrap(),
            "10.1.2.3:9092".parse().unwrap()
        );
        assert_eq!(
            listen(" PLAINTEXT://0.0.0.0:0 ").unwrap(),
            "0.0.0.0:0".parse().unwrap()
        );
        // Host names are resolved, IPv4 first.
        let local = listen("PLAINTEXT://localhost:9095").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 9095, "{local}");
        for (v, reason) in [
            ("SSL://:9093", "TLS/SASL listeners are not supported yet"),
            ("PLAINTEXT://:9092,SASL_SSL://:9093", "TLS/SASL"),
            ("INTERNAL://:9092", "only PLAINTEXT listeners"),
            ("PLAINTEXT://:9092,PLAINTEXT://:9093", "more than one"),
            ("PLAINTEXT://:99999", "port"),
            ("PLAINTEXT://::1:9092", "brackets"),
            ("", "expected PLAINTEXT://host:port"),
            ("localhost", "host:port"),
        ] {
            let e = listen(v).expect_err(v).to_string();
            assert!(e.contains(reason), "{v}: {e}");
        }
    }

    #[test]
    fn a_wildcard_address_is_never_advertised() {
        let mut c = BrokerConfig::default();
        for v in ["PLAINTEXT://:9092", "PLAINTEXT://0.0.0.0:9092", "[::]:9092"] {
            let e = c.set("advertised.listeners", v).expect_err(v).to_string();
            assert!(e.contains("wildcard"), "{e}");
        }
        assert!(c.set("advertised.listeners", "broker-1:0").is_err());

        // Listening on every interface: the host name is advertised, with the listen port.
        let mut c = BrokerConfig::default();
        c.set("listeners", "PLAINTEXT://:19092").unwrap();
        c.finalize_with(|| Some("box-7".into())).unwrap();
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("box-7", 19092)
        );
        let mut no_name = c.clone();
        no_name.explicit.remove("advertised.listeners");
        assert!(no_name.finalize_with(|| None).is_err());

        // A host name is advertised as written, not as it resolved here.
        let mut c = BrokerConfig::default();
        c.set("listeners", "PLAINTEXT://localhost:9096").unwrap();
        c.finalize_with(|| panic!("not asked")).unwrap();
        assert_eq!(
            c.get("advertised.listeners").unwrap(),
            "PLAINTEXT://localhost:9096"
        );

        // A specific address is advertised as it is.
        let mut c = BrokerConfig::default();
        c.set("listeners", "10.0.0.5:9093").unwrap();
        c.finalize_with(|| panic!("not asked")).unwrap();
        assert_eq!(
            c.get("advertised.listeners").unwrap(),
            "PLAINTEXT://10.0.0.5:9093"
        );
        let mut c = BrokerConfig::default();
        c.set("listeners", "[::1]:9093").unwrap();
        c.finalize_with(|| None).unwrap();
        assert_eq!(
            c.get("advertised.listeners").unwrap(),
            "PLAINTEXT://[::1]:9093"
        );

        // Given explicitly, it wins whatever the listener.
        let mut c = BrokerConfig::default();
        c.set("advertised.listeners", "PLAINTEXT://kafka.example:9092")
            .unwrap();
        c.set("listeners", "PLAINTEXT://:9092").unwrap();
        c.finalize_with(|| Some("box-7".into())).unwrap();
        assert_eq!(c.advertised_host, "kafka.example");
        c.finalize_with(|| Some("other".into())).unwrap();
        assert_eq!(
            c.get("advertised.listeners").unwrap(),
            "PLAINTEXT://kafka.example:9092"
        );
    }

    #[test]
    fn new_settings_validate() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9644".parse().unwrap()));
        c.set("metrics.listen", "").unwrap();
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.get("metrics.listen").unwrap(), "");
        c.set("metrics.listen", ":0").unwrap();
        assert_eq!(c.metrics_listen, Some("0.0.0.0:0".parse().unwrap()));
        c.set("metrics.listen", "localhost:9700").unwrap();
        assert!(c.metrics_listen.unwrap().ip().is_loopback());
        assert!(c.set("metrics.listen", "9644").is_err());

        c.set("metrics.partition.labels.max", "0").unwrap();
        assert_eq!(c.metrics_partition_labels_max, 0);
        assert!(c.set("metrics.partition.labels.max", "-1").is_err());

        c.set("log.format", "json").unwrap();
        assert_eq!(c.log_format, "json");
        assert!(c.set("log.format", "xml").is_err());

        for ok in [
            "debug",
            "warn,shardlog_broker::server=debug",
            "off",
            "info/ready",
            "TRACE",
        ] {
            c.set("log.level", ok)
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(c.log_level, ok);
        }
        for bad in ["", " ", "shardlog=loud", "a b", "=info"] {
            assert!(c.set("log.level", bad).is_err(), "{bad:?}");
        }

        c.set("producer.id.expiration.ms", "1000").unwrap();
        assert_eq!(c.producer_id_expiration_ms, 1000);
        c.set("producer.id.expiration.check.interval.ms", "50")
            .unwrap();
        assert_eq!(c.producer_id_expiration_check_interval_ms, 50);
        assert!(c.ignored_kafka_keys.is_empty());
        for bad in ["0", "-1", "2147483648", "x"] {
            assert!(c.set("producer.id.expiration.ms", bad).is_err(), "{bad}");
            assert!(
                c.set("producer.id.expiration.check.interval.ms", bad)
                    .is_err(),
                "{bad}"
            );
        }

        c.set("zookeeper.connect", "").unwrap();
        assert_eq!(c.zookeeper_connect, None);
        assert!(c.set("log.dirs", "/a,/b").is_err());
        assert!(c.set("log.dirs", " ").is_err());
    }

    #[test]
    fn retention_aliases_follow_kafka_precedence_in_any_order() {
        let mut c = BrokerConfig::default();
        c.set("log.retention.ms", "5000").unwrap();
        c.set("log.retention.hours", "1").unwrap();
        c.set("log.retention.minutes", "2").unwrap();
        assert_eq!(c.topic_defaults.retention_ms, 5000);
        assert_eq!(c.get("log.retention.hours").unwrap(), "1");

        let mut c = BrokerConfig::default();
        c.set("log.retention.minutes", "2").unwrap();
        c.set("log.retention.hours", "1").unwrap();
        assert_eq!(c.topic_defaults.retention_ms, 120_000);
        assert!(c.set("log.retention.hours", "x").is_err());

        let mut c = BrokerConfig::default();
        c.set("log.roll.ms", "7000").unwrap();
        c.set("log.roll.hours", "1").unwrap();
        assert_eq!(c.topic_defaults.segment_ms, 7000);
        c.set("log.retention.hours", "-1").unwrap();
        assert_eq!(c.get("log.retention.minutes").unwrap(), "-1");
        assert!(c.set("log.retention.hours", &i64::MAX.to_string()).is_err());
    }

    #[test]
    fn properties_follow_java_syntax() {
        let text = "# comment\n\
                    ! also a comment\n\
                    \n\
                    a=1\n\
                    b : 2\n\
                    c 3\n\
                    \x20  d=x=y\n\
                    e=long \\\n\
                    \x20   value\n\
                    f\\:g=h\n\
                    i=\\u0041\\tB\n\
                    j\n\
                    k=trailing   \n";
        let got: Vec<(usize, String, String)> = parse_properties(text);
        let want = [
            (4, "a", "1"),
            (5, "b", "2"),
            (6, "c", "3"),
            (7, "d", "x=y"),
            (8, "e", "long value"),
            (10, "f:g", "h"),
            (11, "i", "A\tB"),
            (12, "j", ""),
            (13, "k", "trailing"),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0, g.1.as_str(), g.2.as_str()), w);
        }
    }

    #[test]
    fn a_bad_line_in_a_file_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.properties");
        std::fs::write(&path, "broker.id=1\n\nnum.partitons=3\n").unwrap();
        let e = BrokerConfig::default()
            .load_properties(&path)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(
                ":3: unknown config key \"num.partitons\" (did you mean \"num.partitions\"?)"
            ),
            "{e}"
        );
        assert!(e.starts_with(&path.display().to_string()), "{e}");
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(valid_topic_name("orders.v1_x-2"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name("a b"));
        assert!(!valid_topic_name(&"x".repeat(250)));
    }
}
