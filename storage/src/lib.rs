//! Shardlog's storage crate: one partition's log, in Kafka's on-disk layout.
//!
//! A partition is a directory of segments (`<base offset>.log` with its sparse `.index`,
//! `.timeindex` and `.txnindex`) plus a `checkpoint` file; `FORMAT.md` documents every byte. The crate knows
//! nothing of Kafka requests, shards or producers: the broker's partition layer assigns offsets,
//! validates batches and turns errors into Kafka codes.
//!
//! - `partition_log`: `PartitionLog`, the public face: open/recover, append, read as file
//!   ranges, roll, retention, DeleteRecords, truncation, flush; its log cleaner
//!   (`partition_log::cleaner`: compaction, the crash-safe swap of cleaned segments).
//! - `segment`: one segment's files, its index (in memory while active, read from the files
//!   page by page once closed), loading and repairing it.
//! - `index`: index entry layout, lookups and the entry-placement rule (pure).
//! - `index_cache`: the per-shard LRU of index pages read for closed segments (bounded).
//! - `policy`: roll, retention, flush and truncation decisions (pure).
//! - `scan`: walking batch headers and validating replays over a `.log`.
//! - `txn_index`: the aborted transaction index (`.txnindex`) layout and its search (pure).
//! - `checkpoint`: the recovery point / log start offset file.
//! - `producer_snapshot`: `<offset>.snapshot` files, the broker's producer state as plain
//!   integer records (codec, durable write, list, read, remove).
//! - `probe`: whether the filesystem has non-blocking buffered writes (checked at start).
//! - `config`, `error`: `LogConfig` (Kafka topic settings) and `StorageError`.
//!
//! Everything here runs on the partition's glommio shard; only `FileSlice` (a file range with an
//! `Arc<std::fs::File>`) crosses threads.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod index;
pub mod index_cache;
pub mod partition_log;
pub mod policy;
pub mod probe;
pub mod producer_snapshot;
mod scan;
mod segment;
pub mod stats;
pub mod txn_index;

pub use crate::config::LogConfig;
pub use crate::error::StorageError;
pub use crate::partition_log::cleaner::{CleanParams, CleanStats, Cleanable};
pub use crate::partition_log::{
    batch_metas, AppendInfo, BatchMeta, FileSlice, PartitionLog, ReadSlice, SegmentInfo,
};
pub use crate::segment::{
    file_name as segment_file_name, parse_file_name as parse_segment_file_name,
};
pub use crate::txn_index::AbortedTxn;
pub use shardlog_protocol::batch::BatchHeader;
