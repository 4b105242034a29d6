//! The configuration reference: every setting Shardlog accepts, with its type, default, whether
//! it changes without a restart, and its meaning. `BrokerConfig::set` accepts exactly the broker
//! keys listed here, and docs/configuration.md is rendered from these tables
//! (`reference_markdown`, printed by `shardlog --print-config-reference`); tests check that the
//! document is current and that every documented default is the one the code uses.

use super::kafka_keys::{KAFKA_BROKER_KEYS, KAFKA_BROKER_KEY_PREFIXES};
use super::TOPIC_KEYS;

/// One documented setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Kafka's name for it (or Shardlog's, for settings Kafka does not have).
    pub name: &'static str,
    /// The value's type, as text (Kafka's type names where Kafka has the setting).
    pub kind: &'static str,
    /// The default, exactly as `BrokerConfig::get` / `TopicConfig::get` print it.
    pub default: &'static str,
    /// Whether a change takes effect without restarting the broker.
    pub dynamic: bool,
    pub doc: &'static str,
}

const fn broker(
    name: &'static str,
    kind: &'static str,
    default: &'static str,
    doc: &'static str,
) -> Setting {
    // Broker settings are static: read at start from the file and flags (no dynamic broker
    // configs; AlterConfigs on a broker is refused).
    Setting {
        name,
        kind,
        default,
        dynamic: false,
        doc,
    }
}

const fn topic(
    name: &'static str,
    kind: &'static str,
    default: &'static str,
    doc: &'static str,
) -> Setting {
    // Topic settings change live through AlterConfigs / IncrementalAlterConfigs.
    Setting {
        name,
        kind,
        default,
        dynamic: true,
        doc,
    }
}

/// Broker settings, sorted by name.
pub const BROKER_SETTINGS: &[Setting] = &[
    broker(
        "advertised.listeners",
        "string",
        "PLAINTEXT://127.0.0.1:9092",
        "The address given to clients in Metadata responses, `PLAINTEXT://host:port`. When not \
         set: the listener as written (host name or address), or this machine's host name when \
         the broker listens on a wildcard address (0.0.0.0 or ::), as Kafka does; a wildcard \
         address is never advertised. Flag `--advertised-listener`.",
    ),
    broker(
        "auto.create.topics.enable",
        "boolean",
        "true",
        "Create a topic when a client asks for metadata of a topic that does not exist.",
    ),
    broker(
        "auto.leader.rebalance.enable",
        "boolean",
        "true",
        "The controller moves leadership back to each partition's preferred (first) replica \
         once it is in sync (cluster mode).",
    ),
    broker(
        "broker.id",
        "int",
        "0",
        "This broker's id. Flag `--broker-id`.",
    ),
    broker(
        "compression.type",
        "string",
        "producer",
        "Default of the topic setting `compression.type`; only `producer` (batches are stored \
         as the producer sent them).",
    ),
    broker(
        "controlled.shutdown.enable",
        "boolean",
        "true",
        "On SIGTERM, move this broker's leaderships to other in-sync replicas before stopping \
         (cluster mode).",
    ),
    broker(
        "default.replication.factor",
        "int",
        "1",
        "Replicas per partition of topics created without a replication factor.",
    ),
    broker(
        "group.initial.rebalance.delay.ms",
        "int",
        "3000",
        "How long the first rebalance of an empty group waits for more members to join.",
    ),
    broker(
        "group.max.session.timeout.ms",
        "int",
        "1800000",
        "The longest session timeout a group member may ask for.",
    ),
    broker(
        "group.min.session.timeout.ms",
        "int",
        "6000",
        "The shortest session timeout a group member may ask for.",
    ),
    broker(
        "leader.imbalance.check.interval.seconds",
        "long",
        "300",
        "How often the controller looks for leadership that is not on preferred replicas.",
    ),
    broker(
        "leader.imbalance.per.broker.percentage",
        "int",
        "10",
        "Share of a broker's preferred partitions led elsewhere that triggers moving them back.",
    ),
    broker(
        "listeners",
        "string",
        "PLAINTEXT://127.0.0.1:9092",
        "The address the broker listens on, in Kafka's syntax `PLAINTEXT://host:port` (a bare \
         `host:port` is accepted too). An empty host (`PLAINTEXT://:9092`) listens on every \
         interface; a host name is resolved at start (IPv4 preferred); IPv6 addresses go in \
         brackets. A comma-separated list may hold one PLAINTEXT listener and nothing else: TLS \
         and SASL listeners are not supported yet. Flag `--listen`, environment \
         `SHARDLOG_LISTEN`.",
    ),
    broker(
        "log.cleaner.backoff.ms",
        "long",
        "15000",
        "How long a shard's log cleaner waits, when none of the shard's compacted partitions \
         needs cleaning, before it looks again; at least 1.",
    ),
    broker(
        "log.cleaner.dedupe.buffer.size",
        "long",
        "134217728",
        "Memory for the log cleaners' maps of keys to offsets, over the whole broker. Each shard \
         runs one cleaner for its own partitions and gets an equal share of this, at least \
         1 MiB (Kafka's least per cleaner thread); the value must be at least 1048576. A \
         larger share cleans more of a dirty log in one pass.",
    ),
    broker(
        "log.cleaner.delete.retention.ms",
        "long",
        "86400000",
        "Default of the topic setting `delete.retention.ms`.",
    ),
    broker(
        "log.cleaner.enable",
        "boolean",
        "true",
        "Run the log cleaners, which compact the topics whose `cleanup.policy` includes \
         `compact` (among them `__consumer_offsets` and `__transaction_state`). When false, \
         nothing is compacted; retention still deletes segments where the policy includes \
         `delete`.",
    ),
    broker(
        "log.cleaner.io.buffer.size",
        "int",
        "524288",
        "Bytes of I/O buffer each shard's cleaner uses to read and write segments; at least \
         4096. (Kafka divides it among its cleaner threads; Shardlog's cleaners are one per \
         shard, each with this much.)",
    ),
    broker(
        "log.cleaner.max.compaction.lag.ms",
        "long",
        "9223372036854775807",
        "Default of the topic setting `max.compaction.lag.ms`.",
    ),
    broker(
        "log.cleaner.min.cleanable.ratio",
        "double",
        "0.5",
        "Default of the topic setting `min.cleanable.dirty.ratio`.",
    ),
    broker(
        "log.cleaner.min.compaction.lag.ms",
        "long",
        "0",
        "Default of the topic setting `min.compaction.lag.ms`.",
    ),
    broker(
        "log.cleaner.threads",
        "int",
        "1",
        "Accepted for compatibility with Kafka only (at least 1); it has no effect. Each shard \
         runs one cleaner for its own partitions, so there are as many cleaners as shards, and \
         `log.cleaner.dedupe.buffer.size` is divided among them.",
    ),
    broker(
        "log.cleanup.policy",
        "list",
        "delete",
        "Default of the topic setting `cleanup.policy`.",
    ),
    broker("log.dir", "string", "./data", "Alias of `log.dirs`."),
    broker(
        "log.dirs",
        "string",
        "./data",
        "The directory holding the partition logs and the metadata. One directory: a \
         comma-separated list of several is refused. A relative path is resolved against the \
         working directory at start. Flag `--data-dir`.",
    ),
    broker(
        "log.flush.interval.messages",
        "long",
        "9223372036854775807",
        "Default of the topic setting `flush.messages`.",
    ),
    broker(
        "log.flush.interval.ms",
        "long",
        "9223372036854775807",
        "Default of the topic setting `flush.ms`.",
    ),
    broker(
        "log.format",
        "string",
        "text",
        "Format of the broker's log messages: `text` (one line per message) or `json` \
         (one JSON object per line).",
    ),
    broker(
        "log.index.interval.bytes",
        "int",
        "4096",
        "Default of the topic setting `index.interval.bytes`.",
    ),
    broker(
        "log.level",
        "string",
        "info",
        "Which log messages are written, in RUST_LOG syntax: a level (`error`, `warn`, `info`, \
         `debug`, `trace`, `off`) and/or `target=level` directives, comma-separated, e.g. \
         `warn,shardlog_broker::server=debug`. The RUST_LOG environment variable, when set, \
         overrides it.",
    ),
    broker(
        "log.message.timestamp.type",
        "string",
        "CreateTime",
        "Default of the topic setting `message.timestamp.type`.",
    ),
    broker(
        "log.preallocate.ahead.bytes",
        "long",
        "8388608",
        "Disk reserved ahead of each active segment's write position (`fallocate` keeping the \
         file size), topped up in the background when half is used; 0 turns it off. On a \
         filesystem with non-blocking buffered writes (XFS) an append into reserved space \
         completes when io_uring submits it; without the reservation, or on ext4, which has \
         no such writes, each append waits for an io_uring worker thread on the shard's core. \
         The broker probes the data directory at start and skips reservations where they \
         cannot help (logged). A rolled segment gives its unused reservation back.",
    ),
    broker(
        "log.retention.bytes",
        "long",
        "-1",
        "Default of the topic setting `retention.bytes`.",
    ),
    broker(
        "log.retention.check.interval.ms",
        "long",
        "300000",
        "How often segments are checked for deletion and for rolling by age.",
    ),
    broker(
        "log.retention.hours",
        "int",
        "168",
        "Default of the topic setting `retention.ms`, in hours; -1 = no limit. \
         `log.retention.minutes` and `log.retention.ms` take precedence, whatever the order.",
    ),
    broker(
        "log.retention.minutes",
        "int",
        "10080",
        "Default of the topic setting `retention.ms`, in minutes; -1 = no limit. \
         `log.retention.ms` takes precedence, whatever the order.",
    ),
    broker(
        "log.retention.ms",
        "long",
        "604800000",
        "Default of the topic setting `retention.ms`.",
    ),
    broker(
        "log.roll.hours",
        "int",
        "168",
        "Default of the topic setting `segment.ms`, in hours. `log.roll.ms` takes precedence, \
         whatever the order.",
    ),
    broker(
        "log.roll.ms",
        "long",
        "604800000",
        "Default of the topic setting `segment.ms`.",
    ),
    broker(
        "log.segment.bytes",
        "int",
        "1073741824",
        "Default of the topic setting `segment.bytes`.",
    ),
    broker(
        "max.connections",
        "int",
        "65536",
        "Connections the broker keeps open at once, over all shards; a connection over the \
         limit is closed right after accept and counted in \
         `shardlog_connections_refused_total{reason=\"max.connections\"}`. Kafka's default \
         is unbounded; an idle connection costs about 2 KB of broker memory (ARCHITECTURE.md, \
         \"Limits\") plus kernel socket buffers.",
    ),
    broker(
        "max.connections.per.ip",
        "int",
        "2147483647",
        "Connections from one client address at once, over all shards; more are closed right \
         after accept (`reason=\"max.connections.per.ip\"`).",
    ),
    broker(
        "max.connections.per.ip.overrides",
        "string",
        "",
        "Per-address exceptions to `max.connections.per.ip`: `host:count[,host:count]` \
         (names are resolved once, at start).",
    ),
    broker(
        "message.max.bytes",
        "int",
        "1048588",
        "Default of the topic setting `max.message.bytes`.",
    ),
    broker(
        "metrics.listen",
        "host:port",
        "127.0.0.1:9644",
        "Address of the HTTP endpoint serving Prometheus metrics and the health checks; empty \
         = disabled, port 0 = any free port. Loopback by default because the endpoint has no \
         authentication; 9644 is the port Redpanda uses for the same purpose. Flag \
         `--metrics-listen`, environment `SHARDLOG_METRICS_LISTEN`.",
    ),
    broker(
        "metrics.partition.labels.max",
        "int",
        "1000",
        "With more partitions than this on the broker, the per-partition log metrics (log \
         start, log end, size) are summed per topic, to bound the number of series.",
    ),
    broker(
        "min.insync.replicas",
        "int",
        "1",
        "Default of the topic setting `min.insync.replicas`.",
    ),
    broker(
        "node.id",
        "int",
        "0",
        "Alias of `broker.id` (KRaft's name).",
    ),
    broker(
        "num.partitions",
        "int",
        "1",
        "Partitions of a topic created automatically or without a partition count.",
    ),
    broker(
        "num.shards",
        "int",
        "0",
        "Executors (one per core) the broker runs; 0 = one per usable core. Flag `--shards`.",
    ),
    broker(
        "offsets.retention.check.interval.ms",
        "long",
        "600000",
        "How often expired committed offsets are looked for.",
    ),
    broker(
        "offsets.retention.minutes",
        "int",
        "10080",
        "How long committed offsets of a group without members are kept.",
    ),
    broker(
        "offsets.topic.num.partitions",
        "int",
        "50",
        "Partitions of `__consumer_offsets`.",
    ),
    broker(
        "offsets.topic.replication.factor",
        "short",
        "3",
        "Replicas per partition of `__consumer_offsets` (cluster mode; it is created once this \
         many brokers are alive). A standalone broker uses 1.",
    ),
    broker(
        "offsets.topic.segment.bytes",
        "int",
        "104857600",
        "`segment.bytes` of `__consumer_offsets` when it is created (the log cleaner compacts \
         closed segments only, so smaller segments are compacted sooner).",
    ),
    broker(
        "producer.id.expiration.check.interval.ms",
        "int",
        "600000",
        "How often each shard forgets, in every partition it holds, the producers idle for \
         `producer.id.expiration.ms`, and removes producer state snapshots below the log start \
         offset.",
    ),
    broker(
        "producer.id.expiration.ms",
        "int",
        "86400000",
        "A producer that has not written to a partition for this long and has no transaction \
         open there is forgotten by that partition (its sequence numbers, for duplicate \
         detection). A producer a partition does not know is accepted at any sequence number \
         (KIP-360), so an idle producer that comes back carries on.",
    ),
    broker(
        "queued.max.request.bytes",
        "long",
        "268435456",
        "Bytes of request frames the broker holds at once, over all connections (Kafka's \
         memory pool). Each shard gets an equal share; a frame reserves its size (at most the \
         share) from its shard's share as soon as its 4-byte size has arrived, before its body \
         is read, and releases it once answered (an acks=all produce once appended, while it \
         waits for the in-sync replicas). While a share is used up, that shard reads no more request bodies until memory is released. A quarter of each share is kept for \
         frames up to 1 MiB, so large frames never hold up ordinary requests. Kafka's default \
         -1 (unbounded) is refused: 200 clients announcing 100 MiB frames would ask for 20 GB.",
    ),
    broker(
        "quota.window.num",
        "int",
        "11",
        "Client quotas (producer_byte_rate, consumer_byte_rate, request_percentage) are \
         measured over this many samples, each `quota.window.size.seconds` long, as in Kafka; \
         between 2 and 1000. A throttle never exceeds the whole window.",
    ),
    broker(
        "quota.window.size.seconds",
        "int",
        "1",
        "The length of one client quota sample, in seconds (between 1 and 3600). See \
         docs/quotas.md.",
    ),
    broker(
        "replica.fetch.backoff.ms",
        "int",
        "1000",
        "How long a follower waits before fetching a partition again after an error from its \
         leader (a lost connection, a leader epoch mismatch); at least 10 ms. A leader that has \
         not yet heard of its new epoch (UNKNOWN_LEADER_EPOCH) is asked again after at most \
         100 ms.",
    ),
    broker(
        "replica.fetch.max.bytes",
        "int",
        "1048576",
        "Bytes a follower asks for per partition in one fetch from its leader.",
    ),
    broker(
        "replica.fetch.min.bytes",
        "int",
        "1",
        "Bytes a follower's fetch waits for at the leader (at most `replica.fetch.wait.max.ms`) \
         before it is answered, so an idle follower asks about twice a second.",
    ),
    broker(
        "replica.fetch.wait.max.ms",
        "int",
        "500",
        "How long a follower's fetch waits at the leader for new data (long polling).",
    ),
    broker(
        "replica.lag.time.max.ms",
        "long",
        "30000",
        "A follower that has not caught up with the leader for this long leaves the ISR.",
    ),
    broker(
        "replica.socket.timeout.ms",
        "int",
        "5000",
        "How long a follower waits for its leader to answer a request beyond the fetch's own \
         wait (`replica.fetch.wait.max.ms`), before it treats the connection as dead and \
         reconnects. Kafka's default is 30000; a shorter one brings a follower back into the \
         ISR within seconds after a network partition heals, instead of after the old \
         connection's timeout.",
    ),
    broker(
        "socket.request.max.bytes",
        "int",
        "104857600",
        "The largest request accepted, in bytes (at most 104857600).",
    ),
    broker(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "int",
        "10000",
        "How often each transaction coordinator aborts transactions open longer than their \
         timeout.",
    ),
    broker(
        "transaction.max.timeout.ms",
        "int",
        "900000",
        "Largest `transaction.timeout.ms` a producer may ask for; above it InitProducerId \
         answers INVALID_TRANSACTION_TIMEOUT.",
    ),
    broker(
        "transaction.partition.verification.enable",
        "boolean",
        "true",
        "Before a partition appends the first transactional batch of a producer's transaction, \
         its leader asks the transaction coordinator whether the partition is in that \
         transaction (KIP-890), so a late or stray batch cannot leave a transaction open on it.",
    ),
    broker(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        "int",
        "3600000",
        "How often each transaction coordinator forgets expired transactional ids.",
    ),
    broker(
        "transaction.state.log.min.isr",
        "int",
        "2",
        "`min.insync.replicas` of `__transaction_state` (cluster mode).",
    ),
    broker(
        "transaction.state.log.num.partitions",
        "int",
        "50",
        "Partitions of `__transaction_state`, created at the first FindCoordinator for a \
         transactional id.",
    ),
    broker(
        "transaction.state.log.replication.factor",
        "short",
        "3",
        "Replicas per partition of `__transaction_state` (cluster mode). A standalone broker \
         uses 1.",
    ),
    broker(
        "transaction.state.log.segment.bytes",
        "int",
        "104857600",
        "`segment.bytes` of `__transaction_state` when it is created.",
    ),
    broker(
        "transactional.id.expiration.ms",
        "int",
        "604800000",
        "A transactional id without a transaction for this long is forgotten.",
    ),
    broker(
        "unclean.leader.election.enable",
        "boolean",
        "false",
        "Default of the topic setting `unclean.leader.election.enable`.",
    ),
    broker(
        "zookeeper.connect",
        "string",
        "",
        "ZooKeeper connect string `host:port[,host:port][/chroot]`; set, the broker runs in \
         cluster mode; empty = standalone. Flag `--zookeeper`.",
    ),
    broker(
        "zookeeper.session.timeout.ms",
        "int",
        "18000",
        "ZooKeeper session timeout; a broker silent this long loses its leaderships.",
    ),
];

/// Topic settings (overrides per topic; the broker setting named in `TOPIC_KEYS` supplies the
/// default), sorted by name.
pub const TOPIC_SETTINGS: &[Setting] = &[
    topic(
        "cleanup.policy",
        "list",
        "delete",
        "Policy for old records: `delete` (segments past `retention.ms` or `retention.bytes` \
         are deleted), `compact` (the log cleaner keeps the latest record of each key; a \
         produce holding a record without a key is refused with INVALID_RECORD), or \
         `compact,delete` (both).",
    ),
    topic(
        "compression.type",
        "string",
        "producer",
        "Compression of stored batches; only `producer` (kept as the producer sent them).",
    ),
    topic(
        "delete.retention.ms",
        "long",
        "86400000",
        "On a compacted topic, how long the cleaner keeps a tombstone (a record with a null \
         value) once it has cleaned past it: a consumer reading from the start must reach it \
         within this time to see the deletion.",
    ),
    topic(
        "flush.messages",
        "long",
        "9223372036854775807",
        "Records appended between two fsyncs of the log; 9223372036854775807 leaves flushing \
         to the OS.",
    ),
    topic(
        "flush.ms",
        "long",
        "9223372036854775807",
        "Longest time in ms between two fsyncs of the log; 9223372036854775807 = never.",
    ),
    topic(
        "index.interval.bytes",
        "int",
        "4096",
        "Bytes of log between two entries of the sparse offset index.",
    ),
    topic(
        "max.compaction.lag.ms",
        "long",
        "9223372036854775807",
        "On a compacted topic, the longest a record stays ineligible for compaction: a log \
         holding a record older than this is cleaned whatever its dirty ratio. At least 1 and \
         at least `min.compaction.lag.ms`.",
    ),
    topic(
        "max.message.bytes",
        "int",
        "1048588",
        "Largest record batch accepted, in bytes. A change applies to the next produce.",
    ),
    topic(
        "message.timestamp.type",
        "string",
        "CreateTime",
        "`CreateTime` (the producer's timestamp) or `LogAppendTime` (the broker's clock).",
    ),
    topic(
        "min.cleanable.dirty.ratio",
        "double",
        "0.5",
        "On a compacted topic, the cleaner cleans a log once the part it has not cleaned yet \
         is at least this share of the log, between 0 and 1.",
    ),
    topic(
        "min.compaction.lag.ms",
        "long",
        "0",
        "On a compacted topic, the least time a record stays uncompacted after it was \
         written.",
    ),
    topic(
        "min.insync.replicas",
        "int",
        "1",
        "In-sync replicas that must have a write for acks=all; with fewer in the ISR such \
         produces are refused (NOT_ENOUGH_REPLICAS). A standalone broker has one.",
    ),
    topic(
        "retention.bytes",
        "long",
        "-1",
        "Log size per partition above which the oldest segments are deleted; -1 = no limit. \
         Only when `cleanup.policy` includes `delete`. Applied at the next retention check.",
    ),
    topic(
        "retention.ms",
        "long",
        "604800000",
        "Age after which a closed segment is deleted; -1 = no limit. Only when \
         `cleanup.policy` includes `delete`. Applied at the next retention check \
         (`log.retention.check.interval.ms`).",
    ),
    topic(
        "segment.bytes",
        "int",
        "1073741824",
        "Size at which the active segment is rolled. Applied at the next append.",
    ),
    topic(
        "segment.ms",
        "long",
        "604800000",
        "Age (by record time) at which the active segment is rolled, so that retention can \
         delete it. Applied at the next roll check.",
    ),
    topic(
        "unclean.leader.election.enable",
        "boolean",
        "false",
        "Whether an out-of-sync replica may become leader (no effect with one replica).",
    ),
];

/// The broker setting named `name`, if Shardlog has it.
pub fn broker_setting(name: &str) -> Option<&'static Setting> {
    BROKER_SETTINGS.iter().find(|s| s.name == name)
}

/// The topic setting named `name`, if Shardlog has it.
pub fn topic_setting(name: &str) -> Option<&'static Setting> {
    TOPIC_SETTINGS.iter().find(|s| s.name == name)
}

/// Kafka broker settings that Shardlog accepts and does not use, sorted.
pub fn ignored_kafka_keys() -> impl Iterator<Item = &'static str> {
    KAFKA_BROKER_KEYS
        .iter()
        .copied()
        .filter(|k| broker_setting(k).is_none())
}

/// A table cell: code-formatted, `|` escaped.
fn code(s: &str) -> String {
    if s.is_empty() {
        "(empty)".to_string()
    } else {
        format!("`{}`", s.replace('|', "\\|"))
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// docs/configuration.md.
pub fn reference_markdown() -> String {
    let mut md = String::new();
    md.push_str(
        "# Configuration reference\n\
         \n\
         <!-- Generated from broker/src/config/reference.rs; do not edit. Regenerate with:\n\
         \x20    cargo run -p shardlog-broker --bin shardlog -- --print-config-reference > docs/configuration.md -->\n\
         \n\
         Shardlog uses Kafka's names, units and defaults for the settings it shares with Kafka, \
         so a Kafka `server.properties` can be given as it is (see \
         [Kafka settings Shardlog does not use](#kafka-settings-shardlog-does-not-use)).\n\
         \n\
         ## Where settings come from\n\
         \n\
         Later sources win:\n\
         \n\
         1. the built-in defaults below;\n\
         2. the properties file given with `--config FILE` (Java properties syntax: `key=value` \
         lines, `#` comments, as Kafka's `server.properties`);\n\
         3. `--set KEY=VALUE`, repeatable, in order;\n\
         4. the flags `--listen` (or the environment variable `SHARDLOG_LISTEN`), \
         `--advertised-listener`, `--data-dir`, `--shards`, `--broker-id`, `--zookeeper` and \
         `--metrics-listen` (or `SHARDLOG_METRICS_LISTEN`); a flag beats its environment \
         variable.\n\
         \n\
         The `RUST_LOG` environment variable, when set, overrides `log.level`. A key that is \
         neither a Shardlog setting nor a Kafka broker setting stops the broker with an error \
         naming the closest known key.\n\
         \n\
         Broker settings are read at start: changing one takes a restart (DescribeConfigs shows \
         them, AlterConfigs on a broker is refused). Topic settings change without a restart, \
         through AlterConfigs or IncrementalAlterConfigs (e.g. `shardlog-cli` or \
         `kafka-configs.sh`).\n\
         \n\
         ## Broker settings\n\
         \n\
         | Name | Type | Default | Changes without restart | Meaning |\n\
         |---|---|---|---|---|\n",
    );
    for s in BROKER_SETTINGS {
        md.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            s.name,
            s.kind,
            code(s.default),
            yes_no(s.dynamic),
            cell(s.doc)
        ));
    }
    md.push_str(
        "\n\
         ## Topic settings\n\
         \n\
         A topic's own value (set at creation or with AlterConfigs) overrides the broker setting \
         that supplies its default.\n\
         \n\
         | Name | Type | Default | Broker default from | Changes without restart | Meaning |\n\
         |---|---|---|---|---|---|\n",
    );
    for s in TOPIC_SETTINGS {
        let from = TOPIC_KEYS
            .iter()
            .find(|(t, _)| *t == s.name)
            .map_or(String::new(), |(_, b)| format!("`{b}`"));
        md.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            s.name,
            s.kind,
            code(s.default),
            from,
            yes_no(s.dynamic),
            cell(s.doc)
        ));
    }
    md.push_str(
        "\n\
         ## Kafka settings Shardlog does not use\n\
         \n\
         These Kafka 3.x broker settings are accepted so that a Kafka configuration file works \
         unchanged, and have no effect. At start, the broker names the ones it was given in one \
         warning: `accepted but not used by Shardlog: ...`. Thread pools and socket buffers are \
         sized by Shardlog itself (one shard per core); TLS, SASL, ACLs, connection and replication quotas, \
         tiered storage and KRaft are not implemented. Settings starting with ",
    );
    let prefixes: Vec<String> = KAFKA_BROKER_KEY_PREFIXES
        .iter()
        .map(|p| format!("`{p}`"))
        .collect();
    md.push_str(&prefixes.join(", "));
    md.push_str(" are accepted too.\n\n");
    let names: Vec<String> = ignored_kafka_keys().map(|k| format!("`{k}`")).collect();
    md.push_str(&names.join(", "));
    md.push_str(".\n");
    md
}
