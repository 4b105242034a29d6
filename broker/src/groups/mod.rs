//! Consumer groups on the broker: a `coordinator::GroupCoordinator` per `__consumer_offsets`
//! partition this shard leads, carrying out the pure state machine of the `coordinator` crate.

pub mod coordinator;
