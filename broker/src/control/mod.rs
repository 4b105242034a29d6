//! Cluster mode's control plane: one thread per broker (tokio, current-thread) that holds the
//! ZooKeeper session. It registers the broker, competes for `/controller`, turns ZooKeeper's
//! state into immutable `MetadataSnapshot`s published to every shard, and carries out the
//! changes shards ask for (`cluster::control_api::ControlRequest`). Shards never block on
//! ZooKeeper: they send a request on `ControlHandle::tx` and await the reply on a channel.
//!
//! `thread` is the thread itself, `election` the pure leader-election rules, `zk_layout` the
//! ZooKeeper paths and their JSON.

pub mod election;
pub mod thread;
pub mod zk_layout;
