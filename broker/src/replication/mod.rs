//! Replication's moving part: the follower's fetch loop (`fetcher`) and requests to other
//! brokers (`broker_call`, also used for transaction markers), one per leader broker per
//! shard, on the shard runtime. The rules it applies (ISR changes, leader epochs, truncation
//! points) live beside the partition state they govern, in `partition::replication`.

pub mod broker_call;
pub mod fetcher;
