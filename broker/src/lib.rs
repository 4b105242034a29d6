//! The Shardlog broker: a Kafka-wire-compatible log, thread-per-core on glommio.
//!
//! A guided tour, in the order a request meets the code:
//! - `main.rs` parses flags and settings (`config`), takes the data directory lock, loads the
//!   topic registry (`metadata`) and starts one executor per core (`rt`).
//! - `shard` is what each executor owns: its partitions and its copy of the metadata snapshot;
//!   other shards reach it only through `Shard::invoke_on`.
//! - `server` accepts connections on every shard, decodes frames with `shardlog_protocol` and
//!   dispatches to one handler per API; handlers split work by owning shard (`shard_table`).
//! - `partition` is a partition on its shard: the `shardlog_storage` log, the idempotent
//!   producer state (`producer_state`) and the fetch waiters; in cluster mode also its
//!   replication state (rules in `replication`), with followers fed by `replica_fetcher`.
//! - `metrics` counts on each shard without locks and serves Prometheus metrics and the
//!   health probes over HTTP (`metrics.listen`).
//! - `logging` is the process's logger: text or JSON lines on stderr, the `log.level`/`RUST_LOG`
//!   filter, and per-call-site summaries in place of floods of repeated messages.

pub mod config;
pub mod control;
pub mod errors;
pub mod group_coordinator;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod partition;
pub mod producer_state;
pub mod quota;
pub mod replica_fetcher;
pub mod replication;
pub mod rt;
pub mod server;
pub mod shard;
pub mod shard_table;
pub mod startup;
