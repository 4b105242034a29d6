//! The Shardlog broker: a Kafka-wire-compatible log, thread-per-core on glommio.
//!
//! A guided tour, in the order a request meets the code:
//! - `main.rs` parses flags and settings (`config`), and `startup` takes the data directory
//!   lock, loads the topic registry (`cluster::metadata`) and starts one executor per core
//!   (`runtime::rt`, the `shardlog-runtime` crate).
//! - `shard` is what each executor owns: its partitions and its copy of the metadata snapshot;
//!   other shards reach it only through `Shard::invoke_on` (and `shard::scatter` for fan-out).
//! - `server` accepts connections on every shard, decodes frames with `shardlog_protocol` and
//!   dispatches to one handler per API; handlers split work by owning shard
//!   (`runtime::shard_table`).
//! - `partition` is a partition on its shard: the `shardlog_storage` log, the idempotent
//!   producer state and the fetch waiters; in cluster mode also its replication state (rules in
//!   `partition::replication`), with followers fed by `replication::fetcher`.
//! - `groups` runs the consumer group coordinators; `control` is cluster mode's control thread
//!   (ZooKeeper); `cluster` holds what they share with the shards.
//! - `metrics` counts on each shard without locks; `startup::metrics_http` serves Prometheus
//!   metrics and the health probes over HTTP (`metrics.listen`).
//! - `logging` is the process's logger: text or JSON lines on stderr, the `log.level`/`RUST_LOG`
//!   filter, and per-call-site summaries in place of floods of repeated messages.
//! - `base` is what everything may use: error codes, clocks, randomness, durable file writes.

// Layers, lowest first; a module may import only the ones above it in this list
// (ARCHITECTURE.md, "Layers"; checked by tests/layers.rs).
pub mod base;
pub mod cluster;
pub mod config;
pub mod control;
pub mod groups;
pub mod logging;
pub mod metrics;
pub mod partition;
pub mod replication;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod startup;
