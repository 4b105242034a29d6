//! The Kafka error codes the coordinator answers with: the project's one table,
//! `shardlog_protocol::errors`. The coordinator's API uses bare `i16` so that results can be
//! copied into any wire version's response struct without conversion.

pub use shardlog_protocol::errors::*;
