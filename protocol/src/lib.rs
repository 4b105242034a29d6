//! Shardlog's protocol crate: the Kafka wire pieces shared by the broker, `shardlog-cli` and
//! `shardlog-bench`. It does no I/O (no sockets, no files) and never depends on the broker's
//! runtime: callers own their sockets. The blocking client for tools, bench and tests is the
//! `shardlog-client` crate, built on these pieces.
//!
//! - `batch`: record batch v2 header parsing and validation (the broker's produce path).
//! - `frame`: length-prefixed request/response framing with limits.
//! - `request`: typed client-side framing (`encode_request`, `decode_response`), used by the
//!   broker's replica fetcher and by `shardlog-client`.
//! - `compaction`: a stored batch record by record, rebuilt with some records (the log cleaner).
//! - `compression`: gzip, snappy, lz4 (frame format), zstd for record bodies.
//! - `errors`: Kafka error codes, their names and retriability (the project's one table).
//! - `records`: client-side record batch building and decoding (tools, bench, tests); the
//!   keyless-record check of compacted topics' produce path.
//! - `fetch_encode`: Fetch responses whose record bytes stay in files (zero copy).
//! - `partitioner`: Kafka's murmur2 key partitioner.

pub mod batch;
pub mod compaction;
pub mod compression;
pub mod errors;
pub mod fetch_encode;
pub mod frame;
pub mod partitioner;
pub mod records;
pub mod request;
pub mod time;

pub use kafka_protocol;
