//! The command line: every subcommand and flag of `shardlog-cli`, as clap derive types. Parsing
//! only; the commands live in their own modules.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// Administer, produce to, consume from and inspect the files of a Shardlog broker (or any
/// Kafka-compatible broker).
///
/// Exit status: 0 success, 1 other failure, 2 usage error, 3 broker unreachable, 4 broker
/// error, 5 damage found by `segment verify`, 6 `consume` fetched a batch that failed its CRC
/// check (corrupt data in the broker's log).
#[derive(Debug, Parser)]
#[command(name = "shardlog-cli", version, propagate_version = true)]
pub struct Cli {
    /// Broker address(es) to start from, comma-separated host:port.
    #[arg(
        long,
        short = 'b',
        global = true,
        env = "SHARDLOG_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        value_parser = parse_bootstrap
    )]
    pub bootstrap: String,

    /// Print JSON for scripts instead of tables (consume prints one JSON object per record).
    #[arg(long, global = true)]
    pub json: bool,

    /// Timeout for connecting and for each request, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,

    /// Client id sent to the broker (default: shardlog-cli). In `quota` commands it names the
    /// client-id entity instead (the CLI then connects as shardlog-cli).
    #[arg(long, global = true)]
    pub client_id: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The cluster: brokers, controller, cluster id; partition leader elections.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Create, list, describe, delete and change topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Send lines from stdin or a file as records.
    Produce(ProduceArgs),
    /// Print records of a topic.
    ///
    /// Exit status 6 when a fetched record batch fails its CRC check: the data in the
    /// partition's log is damaged (run `shardlog-cli segment verify` on the broker).
    Consume(ConsumeArgs),
    /// List, describe, delete consumer groups and reset their offsets.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Earliest and latest offset of each partition.
    Offsets(OffsetsArgs),
    /// Offline inspection of segment files in a data directory (no broker needed).
    #[command(subcommand)]
    Segment(SegmentCommand),
    /// Client quotas (byte rates, request percentage) by client id and user, as
    /// kafka-configs.sh sets them.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Transactions: list them, describe a transactional id, show a partition's producers
    /// (as kafka-transactions.sh does).
    #[command(subcommand, visible_alias = "txn")]
    Transactions(TransactionsCommand),
}

#[derive(Debug, Subcommand)]
pub enum TransactionsCommand {
    /// Transactions known to every broker's coordinator (ListTransactions), merged.
    List(TxnListArgs),
    /// One transactional id at its coordinator: state, producer id and epoch, timeout, start
    /// time and the open transaction's partitions (DescribeTransactions).
    Describe(TxnDescribeArgs),
    /// Active producers of one partition at its leader: epoch, last sequence and timestamp,
    /// coordinator epoch, open transaction's first offset (DescribeProducers).
    Producers(TxnProducersArgs),
}

#[derive(Debug, Args, Default)]
pub struct TxnListArgs {
    /// Only transactions in this state (repeatable): Empty, Ongoing, PrepareCommit,
    /// PrepareAbort, CompleteCommit, CompleteAbort, Dead, PrepareEpochFence.
    #[arg(long)]
    pub state: Vec<String>,
    /// Only transactions of this producer id (repeatable).
    #[arg(long, value_name = "ID")]
    pub producer_id: Vec<i64>,
    /// Only transactions open for at least this long (ListTransactions v1).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(i64).range(0..))]
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Args)]
pub struct TxnDescribeArgs {
    #[arg(long)]
    pub transactional_id: String,
}

#[derive(Debug, Args)]
pub struct TxnProducersArgs {
    #[arg(long, short = 't')]
    pub topic: String,
    #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: i32,
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Quotas set, all of them or those of one entity (`--client-id`, `--user`, defaults).
    Describe(QuotaDescribeArgs),
    /// Set quotas of an entity, e.g. `quota set --client-id app --producer-byte-rate 1048576`.
    Set(QuotaSetArgs),
    /// Remove quotas of an entity: the keys given with --key, or all of them.
    #[command(visible_alias = "unset")]
    Delete(QuotaDeleteArgs),
}

/// A quota entity: a client id, a user, or both (each possibly the default). The user is
/// always `ANONYMOUS` while Shardlog has no authentication.
#[derive(Debug, Args)]
pub struct QuotaEntityArgs {
    // The client id entity is the global `--client-id` (as sent in each request's header).
    /// The default client id entity (`<default>`): applies to each client id apart.
    #[arg(long)]
    pub client_default: bool,
    /// The user principal (`ANONYMOUS` for every connection until authentication exists).
    #[arg(long, conflicts_with = "user_default")]
    pub user: Option<String>,
    /// The default user entity (`<default>`).
    #[arg(long)]
    pub user_default: bool,
}

#[derive(Debug, Args)]
pub struct QuotaDescribeArgs {
    #[command(flatten)]
    pub entity: QuotaEntityArgs,
    /// Only entities with exactly the entity types given (not also user+client-id pairs).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("quota").required(true).multiple(true)
    .args(["producer_byte_rate", "consumer_byte_rate", "request_percentage"])))]
pub struct QuotaSetArgs {
    #[command(flatten)]
    pub entity: QuotaEntityArgs,
    /// Bytes per second the entity may produce to each broker (each shard, see docs/quotas.md).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub producer_byte_rate: Option<u64>,
    /// Bytes per second the entity may fetch from each broker.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub consumer_byte_rate: Option<u64>,
    /// Percentage of one shard's time the entity's requests may use.
    #[arg(long, value_name = "PERCENT")]
    pub request_percentage: Option<f64>,
    /// Ask the broker to check the change without applying it.
    #[arg(long)]
    pub validate_only: bool,
}

#[derive(Debug, Args)]
pub struct QuotaDeleteArgs {
    #[command(flatten)]
    pub entity: QuotaEntityArgs,
    /// A quota to remove (`producer_byte_rate`, `consumer_byte_rate`, `request_percentage`;
    /// repeatable). Default: all three.
    #[arg(long, value_name = "KEY")]
    pub key: Vec<String>,
    /// Ask the broker to check the change without applying it.
    #[arg(long)]
    pub validate_only: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Cluster id, controller and brokers.
    Info,
    /// Elect partition leaders: the preferred replica, or with --unclean any live replica.
    ///
    /// `cluster elect-leaders (--all | --topic T [--partition P]... | --partition T:P...)
    /// [--unclean]`: asks the controller (ElectLeaders) to move leadership back to each
    /// partition's preferred (first) replica, as Kafka's `kafka-leader-election.sh` does. Prints
    /// one row per partition: "elected", "not needed" (the preferred replica already leads), or
    /// the error; one sentence instead when no partition needed an election (with --json, the
    /// array, empty when the controller answered for no partition). Exit status 4 when any
    /// partition failed.
    ElectLeaders(ElectLeadersArgs),
}

/// A partition named on the command line: `P` (of the one `--topic`) or `TOPIC:P`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRef {
    pub topic: Option<String>,
    pub partition: i32,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).multiple(true)
    .args(["all", "topic", "partition"])))]
pub struct ElectLeadersArgs {
    /// Every partition of every topic.
    #[arg(long, conflicts_with_all = ["topic", "partition"])]
    pub all: bool,
    /// A topic whose partitions to elect: all of them unless --partition P names some
    /// (repeatable).
    #[arg(long, short = 't')]
    pub topic: Vec<String>,
    /// A partition: `TOPIC:P`, or `P` of the one --topic given (repeatable).
    #[arg(long, short = 'p', value_name = "[TOPIC:]P", value_parser = parse_partition_ref)]
    pub partition: Vec<PartitionRef>,
    /// Unclean election: when no in-sync replica is alive, let an out-of-sync one lead
    /// (acknowledged records may be lost). Default: preferred replica election.
    #[arg(long)]
    pub unclean: bool,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(TopicCreateArgs),
    /// List topics with their partition count and replication factor.
    List(TopicListArgs),
    /// Partitions (leader, replicas, ISR) and configuration of topics.
    Describe(TopicDescribeArgs),
    /// Delete topics.
    Delete(TopicDeleteArgs),
    /// Set or remove topic configuration entries.
    AlterConfig(TopicAlterConfigArgs),
    /// Raise a topic's partition count.
    AddPartitions(TopicAddPartitionsArgs),
}

#[derive(Debug, Args)]
pub struct TopicCreateArgs {
    pub topic: String,
    /// Number of partitions.
    #[arg(long, short = 'p', default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// Replicas per partition [default: the broker's default.replication.factor].
    #[arg(long, short = 'r', value_parser = clap::value_parser!(i16).range(1..))]
    pub replication_factor: Option<i16>,
    /// Topic configuration entry, e.g. `--config retention.ms=3600000` (repeatable).
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
    /// Succeed when the topic already exists.
    #[arg(long)]
    pub if_not_exists: bool,
    /// Ask the broker to check the request without creating anything.
    #[arg(long)]
    pub validate_only: bool,
}

#[derive(Debug, Args)]
pub struct TopicListArgs {
    /// Include internal topics.
    #[arg(long)]
    pub internal: bool,
}

#[derive(Debug, Args)]
pub struct TopicDescribeArgs {
    #[arg(required = true)]
    pub topics: Vec<String>,
    /// Show every configuration entry, including defaults (default: only overrides).
    #[arg(long)]
    pub all_configs: bool,
    /// The brokers' HTTP endpoints (`metrics.listen`, host:port, comma-separated) asked for
    /// the log cleaner's progress of compacted topics (the Kafka protocol has no request for
    /// it). Default: port 9644 of every broker's host in Metadata.
    #[arg(long, value_delimiter = ',', env = "SHARDLOG_ADMIN")]
    pub admin: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TopicDeleteArgs {
    #[arg(required = true)]
    pub topics: Vec<String>,
    /// Succeed when a topic does not exist.
    #[arg(long)]
    pub if_exists: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["set", "delete"])))]
pub struct TopicAlterConfigArgs {
    pub topic: String,
    /// Entry to set, e.g. `--set retention.ms=60000` (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Entry to remove, returning it to the default (repeatable).
    #[arg(long, value_name = "KEY")]
    pub delete: Vec<String>,
    /// Ask the broker to check the change without applying it.
    #[arg(long)]
    pub validate_only: bool,
}

#[derive(Debug, Args)]
pub struct TopicAddPartitionsArgs {
    pub topic: String,
    /// The new total number of partitions (must exceed the current count).
    #[arg(long, visible_alias = "partitions", value_name = "N",
          value_parser = clap::value_parser!(i32).range(1..))]
    pub total: i32,
    /// Ask the broker to check the change without applying it.
    #[arg(long)]
    pub validate_only: bool,
}

/// Compression codec for produced batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Read records from this file instead of stdin, one per line.
    #[arg(long, short = 'f', value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value (a line without SEP is an error).
    #[arg(long, short = 'k', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Header added to every record, e.g. `-H source=cli` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Send everything to this partition (default: by key hash as Kafka's default partitioner,
    /// round robin per batch for records without a key).
    #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    #[arg(long, short = 'z', value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// Acknowledgements: 0 (none), 1 (leader), all (in-sync replicas; also -1).
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    /// Records per batch (one Produce request per batch).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch_records: u64,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("start").args(["from_beginning", "from_end", "offset", "timestamp"])))]
pub struct ConsumeArgs {
    pub topic: String,
    /// Only these partitions (repeatable; default all). Not with --group.
    #[arg(long, short = 'p', conflicts_with = "group", value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Vec<i32>,
    /// Start at the earliest offset (the default without --group).
    #[arg(long)]
    pub from_beginning: bool,
    /// Start at the end: only records produced from now on.
    #[arg(long)]
    pub from_end: bool,
    /// Start at this offset in every partition read.
    #[arg(long, short = 'o', value_parser = clap::value_parser!(i64).range(0..))]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time (ms since the epoch).
    #[arg(long, value_name = "MS")]
    pub timestamp: Option<i64>,
    /// Consume as a member of this group: partitions are assigned by the group and offsets
    /// committed; starts at the committed offsets (or as the start flag says when none).
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Stop after this many records (waiting for new ones if needed).
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end of each partition.
    #[arg(long, short = 'F')]
    pub follow: bool,
    /// Stop when no record arrived for this long (with --follow or --count).
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Output template with {topic} {partition} {offset} {timestamp} {time} {key} {value}
    /// {headers} {header.NAME}; `\n`, `\t`, `\\` escapes and `{{`, `}}` for braces.
    #[arg(long, default_value = "{value}")]
    pub format: String,
    /// With --group: do not commit offsets.
    #[arg(long, requires = "group")]
    pub no_commit: bool,
    /// Largest Fetch response to ask for, in bytes.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(i32).range(1..))]
    pub max_bytes: i32,
    /// Longest time a Fetch waits for records on the broker, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub max_wait_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups on every broker.
    List,
    /// Members, their assignment, committed offsets and lag.
    Describe(GroupDescribeArgs),
    /// Delete groups (they must have no members).
    Delete(GroupDeleteArgs),
    /// Move a group's committed offsets (a dry run unless --execute).
    ResetOffsets(GroupResetArgs),
}

#[derive(Debug, Args)]
pub struct GroupDescribeArgs {
    #[arg(required = true)]
    pub groups: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GroupDeleteArgs {
    #[arg(required = true)]
    pub groups: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true)
    .args(["to_earliest", "to_latest", "to_offset", "to_timestamp", "shift_by"])))]
pub struct GroupResetArgs {
    pub group: String,
    /// Topic to reset (repeatable; default every topic the group has committed offsets for).
    #[arg(long, short = 't')]
    pub topic: Vec<String>,
    /// Only these partitions (repeatable; needs exactly one --topic).
    #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Vec<i32>,
    /// To the log start offset.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the high watermark (skip everything produced so far).
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (clamped to the valid range).
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// To the first offset at or after this time (ms since the epoch).
    #[arg(long, value_name = "MS")]
    pub to_timestamp: Option<i64>,
    /// Move by N (negative: back), clamped to the valid range.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
    /// Apply the change (without it, only show what would change).
    #[arg(long)]
    pub execute: bool,
}

#[derive(Debug, Args)]
pub struct OffsetsArgs {
    #[arg(required = true)]
    pub topics: Vec<String>,
    /// Only these partitions (repeatable).
    #[arg(long, short = 'p', value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Vec<i32>,
}

#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// Print the batches of a segment (`.log`), a partition directory, or an index file.
    Dump(SegmentDumpArgs),
    /// Check CRCs, offsets and indexes; exit status 5 when damage is found.
    Verify(SegmentVerifyArgs),
}

#[derive(Debug, Args)]
pub struct SegmentDumpArgs {
    /// A `.log`, `.index` or `.timeindex` file, or a partition directory.
    pub path: PathBuf,
    /// Also print every record (decompressing batches).
    #[arg(long)]
    pub records: bool,
}

#[derive(Debug, Args)]
pub struct SegmentVerifyArgs {
    /// A data directory, a partition directory (`<topic>-<partition>`) or a `.log` file.
    pub path: PathBuf,
}

/// Parses `KEY=VALUE` (the value may contain `=` and be empty; the key may not be empty).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Checks a bootstrap list: comma-separated `host:port` entries with a numeric port.
pub fn parse_bootstrap(s: &str) -> Result<String, String> {
    let entries: Vec<&str> = s.split(',').map(str::trim).collect();
    for e in &entries {
        match e.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => {
                return Err(format!(
                    "expected host:port[,host:port...], got {s:?} (from --bootstrap or SHARDLOG_BOOTSTRAP)"
                ))
            }
        }
    }
    Ok(entries.join(","))
}

/// Parses a partition reference: `P` or `TOPIC:P` with `P >= 0` (topic names cannot contain
/// `:`).
pub fn parse_partition_ref(s: &str) -> Result<PartitionRef, String> {
    let (topic, partition) = match s.rsplit_once(':') {
        Some((t, p)) if !t.is_empty() => (Some(t.to_string()), p),
        Some(_) => return Err(format!("expected P or TOPIC:P, got {s:?}")),
        None => (None, s),
    };
    match partition.parse::<i32>() {
        Ok(partition) if partition >= 0 => Ok(PartitionRef { topic, partition }),
        _ => Err(format!(
            "expected P or TOPIC:P with a partition number >= 0, got {s:?}"
        )),
    }
}

/// Parses acks: `0`, `1`, `all` or `-1`.
pub fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        _ => Err(format!("expected 0, 1 or all, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shardlog-cli").chain(args.iter().copied()))
    }

    #[test]
    fn global_flags_work_anywhere_and_have_defaults() {
        let cli = parse(&["topic", "list", "--json", "--bootstrap", "h:1"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.bootstrap, "h:1");
        assert_eq!(cli.timeout_ms, 10_000);
        assert!(matches!(
            cli.command,
            Command::Topic(TopicCommand::List(TopicListArgs { internal: false }))
        ));
        assert_eq!(
            parse(&["cluster", "info", "-b", "h:1, [::1]:2"])
                .unwrap()
                .bootstrap,
            "h:1,[::1]:2"
        );
        for bad in ["", "h", "h:x", ":9092", "h:1,"] {
            let e = parse(&["cluster", "info", "-b", bad]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad:?}");
        }
        // SHARDLOG_BOOTSTRAP is not set in the test environment (checked to keep it honest).
        if std::env::var_os("SHARDLOG_BOOTSTRAP").is_none() {
            assert_eq!(
                parse(&["cluster", "info"]).unwrap().bootstrap,
                "127.0.0.1:9092"
            );
        }
    }

    #[test]
    fn topic_create_parses_configs_and_rejects_zero_partitions() {
        let cli = parse(&[
            "topic",
            "create",
            "t",
            "-p",
            "3",
            "--config",
            "retention.ms=5",
            "-c",
            "a=b=c",
            "--if-not-exists",
        ])
        .unwrap();
        let Command::Topic(TopicCommand::Create(a)) = cli.command else {
            panic!("wrong command")
        };
        assert_eq!(a.partitions, 3);
        assert_eq!(a.replication_factor, None);
        assert_eq!(
            a.configs,
            vec![
                ("retention.ms".into(), "5".into()),
                ("a".into(), "b=c".into())
            ]
        );
        assert!(a.if_not_exists);
        let Command::Topic(TopicCommand::Create(a)) =
            parse(&["topic", "create", "t", "-r", "3"]).unwrap().command
        else {
            panic!("wrong command")
        };
        assert_eq!(a.replication_factor, Some(3));
        let e = parse(&["topic", "create", "t", "-r", "0"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        let e = parse(&["topic", "create", "t", "-p", "0"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["topic", "create", "t", "--config", "novalue"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn alter_config_needs_a_change() {
        let e = parse(&["topic", "alter-config", "t"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let cli = parse(&[
            "topic",
            "alter-config",
            "t",
            "--delete",
            "x",
            "--set",
            "y=1",
        ])
        .unwrap();
        let Command::Topic(TopicCommand::AlterConfig(a)) = cli.command else {
            panic!("wrong command")
        };
        assert_eq!(a.delete, vec!["x".to_string()]);
        assert_eq!(a.set, vec![("y".into(), "1".into())]);
    }

    #[test]
    fn add_partitions_takes_the_total() {
        let cli = parse(&["topic", "add-partitions", "t", "--partitions", "4"]).unwrap();
        let Command::Topic(TopicCommand::AddPartitions(a)) = cli.command else {
            panic!("wrong command")
        };
        assert_eq!(a.total, 4);
    }

    #[test]
    fn produce_flags() {
        let cli = parse(&[
            "produce", "t", "-k", ":", "-H", "a=1", "-z", "zstd", "--acks", "1", "-p", "2",
        ])
        .unwrap();
        let Command::Produce(a) = cli.command else {
            panic!("wrong command")
        };
        assert_eq!(a.key_separator.as_deref(), Some(":"));
        assert_eq!(a.headers, vec![("a".into(), "1".into())]);
        assert_eq!(a.compression, CompressionArg::Zstd);
        assert_eq!(a.acks, 1);
        assert_eq!(a.partition, Some(2));
        let Command::Produce(a) = parse(&["produce", "t"]).unwrap().command else {
            panic!("wrong command")
        };
        assert_eq!(a.acks, -1);
        assert_eq!(a.compression, CompressionArg::None);
        assert_eq!(
            parse(&["produce", "t", "--acks", "2"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn consume_start_flags_are_exclusive_and_partition_excludes_group() {
        assert_eq!(
            parse(&["consume", "t", "--from-beginning", "--offset", "3"])
                .unwrap_err()
                .kind(),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            parse(&["consume", "t", "-g", "g", "-p", "0"])
                .unwrap_err()
                .kind(),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            parse(&["consume", "t", "--no-commit"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        let Command::Consume(a) = parse(&["consume", "t", "--timestamp", "5", "-n", "10", "-F"])
            .unwrap()
            .command
        else {
            panic!("wrong command")
        };
        assert_eq!(a.timestamp, Some(5));
        assert_eq!(a.count, Some(10));
        assert!(a.follow);
        assert_eq!(a.format, "{value}");
    }

    #[test]
    fn reset_offsets_needs_exactly_one_target() {
        assert_eq!(
            parse(&["group", "reset-offsets", "g"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&[
                "group",
                "reset-offsets",
                "g",
                "--to-earliest",
                "--to-latest"
            ])
            .unwrap_err()
            .kind(),
            ErrorKind::ArgumentConflict
        );
        let Command::Group(GroupCommand::ResetOffsets(a)) =
            parse(&["group", "reset-offsets", "g", "--shift-by", "-5", "-t", "x"])
                .unwrap()
                .command
        else {
            panic!("wrong command")
        };
        assert_eq!(a.shift_by, Some(-5));
        assert!(!a.execute);
        assert_eq!(a.topic, vec!["x".to_string()]);
    }

    #[test]
    fn segment_commands_take_a_path() {
        let Command::Segment(SegmentCommand::Dump(a)) =
            parse(&["segment", "dump", "/d/t-0", "--records"])
                .unwrap()
                .command
        else {
            panic!("wrong command")
        };
        assert!(a.records);
        assert_eq!(a.path, PathBuf::from("/d/t-0"));
        assert_eq!(
            parse(&["segment", "verify"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn elect_leaders_needs_a_target_and_all_excludes_topics() {
        assert_eq!(
            parse(&["cluster", "elect-leaders"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["cluster", "elect-leaders", "--all", "-t", "x"])
                .unwrap_err()
                .kind(),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            parse(&["cluster", "elect-leaders", "--all", "-p", "x:1"])
                .unwrap_err()
                .kind(),
            ErrorKind::ArgumentConflict
        );
        let Command::Cluster(ClusterCommand::ElectLeaders(a)) =
            parse(&["cluster", "elect-leaders", "--all", "--unclean"])
                .unwrap()
                .command
        else {
            panic!("wrong command")
        };
        assert!(a.all && a.unclean);
        let Command::Cluster(ClusterCommand::ElectLeaders(a)) = parse(&[
            "cluster",
            "elect-leaders",
            "-t",
            "orders",
            "-p",
            "2",
            "--partition",
            "my.topic-1:0",
        ])
        .unwrap()
        .command
        else {
            panic!("wrong command")
        };
        assert!(!a.all && !a.unclean);
        assert_eq!(a.topic, vec!["orders".to_string()]);
        assert_eq!(
            a.partition,
            vec![
                PartitionRef {
                    topic: None,
                    partition: 2
                },
                PartitionRef {
                    topic: Some("my.topic-1".into()),
                    partition: 0
                },
            ]
        );
        for bad in ["-1", "x", ":1", "t:", "t:-1", "t:1.5"] {
            let flag = format!("--partition={bad}");
            let e = parse(&["cluster", "elect-leaders", &flag]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad:?}");
        }
    }

    #[test]
    fn transactions_commands_parse() {
        let Command::Transactions(TransactionsCommand::List(a)) = parse(&[
            "transactions",
            "list",
            "--state",
            "Ongoing",
            "--state",
            "PrepareCommit",
            "--producer-id",
            "7",
            "--duration-ms",
            "60000",
        ])
        .unwrap()
        .command
        else {
            panic!("wrong command")
        };
        assert_eq!(a.state, vec!["Ongoing".to_string(), "PrepareCommit".into()]);
        assert_eq!(a.producer_id, vec![7]);
        assert_eq!(a.duration_ms, Some(60_000));
        assert_eq!(
            parse(&["txn", "list", "--duration-ms=-1"])
                .unwrap_err()
                .kind(),
            ErrorKind::ValueValidation
        );
        let Command::Transactions(TransactionsCommand::Describe(a)) =
            parse(&["transactions", "describe", "--transactional-id", "app"])
                .unwrap()
                .command
        else {
            panic!("wrong command")
        };
        assert_eq!(a.transactional_id, "app");
        assert_eq!(
            parse(&["transactions", "describe"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        let Command::Transactions(TransactionsCommand::Producers(a)) = parse(&[
            "transactions",
            "producers",
            "--topic",
            "t",
            "--partition",
            "3",
        ])
        .unwrap()
        .command
        else {
            panic!("wrong command")
        };
        assert_eq!((a.topic.as_str(), a.partition), ("t", 3));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
