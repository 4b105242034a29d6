//! Broker and topic settings, named as Kafka names them, with Kafka's defaults.
//!
//! Broker settings come from (later wins) built-in defaults, a properties file (`--config`) and
//! command-line flags. Topic settings are a topic's overrides on top of the broker's `log.*`
//! defaults; they are validated here (unknown key or bad value -> INVALID_CONFIG) and persisted by
//! `metadata`. This module does no I/O except reading the properties file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use shardlog_storage::LogConfig;

/// Hard limits that hold whatever the configuration says.
pub mod limits {
    /// Largest request frame accepted (`socket.request.max.bytes` may lower it).
    pub const REQUEST_BYTES_MAX: usize = 100 * 1024 * 1024;
    /// Largest frame of any request but Produce (whose records are not decoded into objects).
    pub const NON_PRODUCE_REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;
    /// Partitions one topic may have.
    pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
    /// Topic name length (Kafka's limit).
    pub const TOPIC_NAME_LEN_MAX: usize = 249;
    /// Longest a fetch may wait.
    pub const FETCH_WAIT_MS_MAX: i32 = 60_000;
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config key {0:?}")]
    UnknownKey(String),
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
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("max.message.bytes", "message.max.bytes"),
    ("message.timestamp.type", "log.message.timestamp.type"),
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
    "log.dirs",
    "log.retention.check.interval.ms",
    "num.partitions",
    "num.shards",
    "offsets.retention.check.interval.ms",
    "offsets.retention.minutes",
    "offsets.topic.num.partitions",
    "offsets.topic.replication.factor",
    "replica.fetch.max.bytes",
    "replica.fetch.wait.max.ms",
    "replica.lag.time.max.ms",
    "socket.request.max.bytes",
    "zookeeper.connect",
    "zookeeper.session.timeout.ms",
    "compression.type",
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
    pub cleanup_policy_compact: bool,
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
        Ok(c)
    }

    /// Applies one topic-level key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "cleanup.policy" => {
                let mut compact = false;
                for p in value.split(',').map(str::trim) {
                    match p {
                        "delete" => {}
                        "compact" => compact = true,
                        _ => return Err(bad(key, value, "expected delete and/or compact")),
                    }
                }
                self.cleanup_policy_compact = compact;
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
            "flush.messages" => self.flush_messages = positive_or_never(key, value)?,
            "flush.ms" => self.flush_ms = positive_or_never(key, value)?,
            "index.interval.bytes" => {
                let v: u32 = parse_num(key, value)?;
                if v == 0 {
                    return Err(bad(key, value, "must be > 0"));
                }
                self.index_interval_bytes = v;
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
            // A compacted topic is never deleted by age or size; compaction itself is not
            // implemented yet, so such a topic simply keeps everything.
            retention_ms: if self.cleanup_policy_compact {
                -1
            } else {
                self.retention_ms
            },
            retention_bytes: if self.cleanup_policy_compact {
                -1
            } else {
                self.retention_bytes
            },
            index_interval_bytes: self.index_interval_bytes,
            flush_messages: self.flush_messages,
            flush_ms: self.flush_ms,
        }
    }

    /// The value of a topic key as Kafka would print it.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "cleanup.policy" => if self.cleanup_policy_compact {
                "compact"
            } else {
                "delete"
            }
            .to_string(),
            "compression.type" => "producer".to_string(),
            "flush.messages" => never_as_max(self.flush_messages),
            "flush.ms" => never_as_max(self.flush_ms),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => if self.log_append_time {
                "LogAppendTime"
            } else {
                "CreateTime"
            }
            .to_string(),
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

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            cleanup_policy_compact: false,
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
    pub retention_check_interval_ms: u64,
    pub offsets_topic_num_partitions: i32,
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
    pub replica_fetch_wait_max_ms: i32,
    pub replica_fetch_max_bytes: i32,
    /// Replication factor of topics created without one (auto-creation, -1 in CreateTopics).
    pub default_replication_factor: i16,
    /// Replication factor of `__consumer_offsets` in cluster mode (standalone: 1).
    pub offsets_topic_replication_factor: i16,
    /// On SIGTERM, move leadership to other ISR members before stopping (cluster mode).
    pub controlled_shutdown_enable: bool,
    /// The controller moves leadership back to preferred replicas (cluster mode).
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_ms: u64,
    /// A broker whose share of not-led preferred partitions exceeds this gets them back.
    pub leader_imbalance_per_broker_percentage: u32,
    pub topic_defaults: TopicConfig,
    /// HTTP listener for metrics and health (`metrics.listen`); `None` = off.
    pub metrics_listen: Option<SocketAddr>,
    /// Above this many partitions, log metrics are summed per topic.
    pub metrics_partition_labels_max: usize,
    /// Every key given explicitly, for DescribeConfigs (source = static broker config).
    pub explicit: BTreeMap<String, String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            broker_id: 0,
            listen: "127.0.0.1:9092".parse().expect("literal address"),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            data_dir: PathBuf::from("./data"),
            shards: 0,
            auto_create_topics: true,
            num_partitions: 1,
            request_bytes_max: limits::REQUEST_BYTES_MAX,
            retention_check_interval_ms: 300_000,
            offsets_topic_num_partitions: 50,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            zookeeper_connect: None,
            zookeeper_session_timeout_ms: 18_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1024 * 1024,
            default_replication_factor: 1,
            offsets_topic_replication_factor: 3,
            controlled_shutdown_enable: true,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
            leader_imbalance_per_broker_percentage: 10,
            topic_defaults: TopicConfig::default(),
            metrics_listen: Some("127.0.0.1:9644".parse().expect("literal address")),
            metrics_partition_labels_max: 1000,
            explicit: BTreeMap::new(),
        }
    }
}

impl BrokerConfig {
    /// Applies one broker-level key (Kafka name).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let t = &mut self.topic_defaults;
        match key {
            "broker.id" | "node.id" => self.broker_id = parse_num(key, value)?,
            "listeners" => {
                let addr = value.trim().trim_start_matches("PLAINTEXT://");
                self.listen = addr
                    .parse()
                    .map_err(|_| bad(key, value, "expected host:port"))?;
            }
            "advertised.listeners" => {
                let addr = value.trim().trim_start_matches("PLAINTEXT://");
                let (h, p) = addr
                    .rsplit_once(':')
                    .ok_or_else(|| bad(key, value, "host:port"))?;
                self.advertised_host = h.to_string();
                self.advertised_port = parse_num(key, p)?;
            }
            "log.dirs" | "log.dir" => self.data_dir = PathBuf::from(value.trim()),
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
            "log.retention.check.interval.ms" => {
                let v: u64 = parse_num(key, value)?;
                if v < 1 {
                    return Err(bad(key, value, "must be >= 1"));
                }
                self.retention_check_interval_ms = v;
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
                if m < 1 {
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
                if v.is_empty() {
                    return Err(bad(key, value, "expected host:port[,host:port]"));
                }
                self.zookeeper_connect = Some(v.to_string());
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
            "log.retention.hours" => t.set("retention.ms", &(hours(key, value)?).to_string())?,
            "log.retention.minutes" => {
                let m: i64 = parse_num(key, value)?;
                t.set(
                    "retention.ms",
                    &(if m < 0 { -1 } else { m * 60_000 }).to_string(),
                )?
            }
            "log.roll.hours" => t.set("segment.ms", &(hours(key, value)?).to_string())?,
            "message.max.bytes" => t.set("max.message.bytes", value)?,
            "log.cleanup.policy" => t.set("cleanup.policy", value)?,
            "log.message.timestamp.type" => t.set("message.timestamp.type", value)?,
            "log.flush.interval.messages" => t.set("flush.messages", value)?,
            "log.flush.interval.ms" => t.set("flush.ms", value)?,
            "log.index.interval.bytes" => t.set("index.interval.bytes", value)?,
            "log.retention.bytes" => t.set("retention.bytes", value)?,
            "log.retention.ms" => t.set("retention.ms", value)?,
            "log.segment.bytes" => t.set("segment.bytes", value)?,
            "log.roll.ms" => t.set("segment.ms", value)?,
            "min.insync.replicas" | "unclean.leader.election.enable" | "compression.type" => {
                t.set(key, value)?
            }
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        self.explicit.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Reads `key=value` lines (`#` and `!` comments) from a Java-style properties file.
    pub fn load_properties(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
            path: path.to_path_buf(),
            source,
        })?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .or_else(|| line.split_once(':'))
                .ok_or_else(|| bad(line, "", "expected key=value"))?;
            self.set(k.trim(), v.trim())?;
        }
        Ok(())
    }

    /// The value of a broker key, for DescribeConfigs.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "broker.id" => self.broker_id.to_string(),
            "listeners" => format!("PLAINTEXT://{}", self.listen),
            "advertised.listeners" => {
                format!(
                    "PLAINTEXT://{}:{}",
                    self.advertised_host, self.advertised_port
                )
            }
            "log.dirs" => self.data_dir.display().to_string(),
            "num.shards" => self.shards.to_string(),
            "auto.create.topics.enable" => self.auto_create_topics.to_string(),
            "num.partitions" => self.num_partitions.to_string(),
            "socket.request.max.bytes" => self.request_bytes_max.to_string(),
            "log.retention.check.interval.ms" => self.retention_check_interval_ms.to_string(),
            "offsets.topic.num.partitions" => self.offsets_topic_num_partitions.to_string(),
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
            _ => {
                let topic_key = TOPIC_KEYS.iter().find(|(_, b)| *b == key)?.0;
                return self.topic_defaults.get(topic_key);
            }
        })
    }
}

fn hours(key: &str, value: &str) -> Result<i64, ConfigError> {
    let h: i64 = parse_num(key, value)?;
    Ok(if h < 0 { -1 } else { h * 3_600_000 })
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
    fn topic_names_follow_kafka_rules() {
        assert!(valid_topic_name("orders.v1_x-2"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name("a b"));
        assert!(!valid_topic_name(&"x".repeat(250)));
    }
}
