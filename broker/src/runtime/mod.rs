//! The shard runtime as the broker sees it: `rt` is the `shardlog-runtime` crate (every glommio
//! call: executors, pinning, files, sockets, timers, spawning, blocking-work threads,
//! cross-shard receives), and `shard_table` the rule that places a partition on a shard.

pub use shardlog_runtime as rt;
pub mod shard_table;
