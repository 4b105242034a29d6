//! Kafka error codes, by name: the project's one table, `shardlog_protocol::errors` (numbers,
//! names and retriability from the protocol definition), seen from the broker.

pub use shardlog_protocol::errors::*;
