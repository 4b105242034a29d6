//! What the whole broker agrees on, independent of any one shard: the topic registry and its
//! immutable snapshots (`metadata`), client quotas (`quota`), and the interface between shards and
//! the control thread (`control_api`: requests, the leadership lease).

pub mod control_api;
pub mod metadata;
pub mod quota;
