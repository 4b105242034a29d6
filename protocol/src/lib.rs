//! Shardlog's protocol crate: the Kafka wire pieces shared by the broker, `shardlog-cli` and
//! `shardlog-bench`. It does no I/O on its own (except `client`, a small blocking client for
//! tools and tests) and never depends on the broker's runtime.
//!
//! - `batch`: record batch v2 header parsing and validation (the broker's produce path).
//! - `frame`: length-prefixed request/response framing with limits.
//! - `compression`: gzip, snappy, lz4 (frame format), zstd for record bodies.
//! - `errors`: Kafka error codes, their names and retriability (the project's one table).
//! - `records`: client-side record batch building and decoding (tools, bench, tests).
//! - `fetch_encode`: Fetch responses whose record bytes stay in files (zero copy).
//! - `partitioner`: Kafka's murmur2 key partitioner.
//! - `client`: a blocking Kafka client over std TCP for tools, bench set-up and tests.

pub mod batch;
pub mod client;
pub mod compression;
pub mod errors;
pub mod fetch_encode;
pub mod frame;
pub mod partitioner;
pub mod records;
pub mod time;

pub use kafka_protocol;
