//! Types for the numbers that are easy to mix up: an offset in a partition's log, a leader
//! epoch, a broker id, a partition's index, a producer id and epoch are all plain integers on
//! the wire, and the replication, controller and producer rules take several of each. Inside
//! the broker they are these types; they turn back into integers only at the wire. `BrokerId`
//! is `#[serde(transparent)]`: in znode JSON it is the same number as before.

use serde::{Deserialize, Serialize};

/// An offset in a partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub i64);

/// A partition's leader epoch: bumped by the controller at every change of leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderEpoch(pub i32);

/// A broker's id (`broker.id`): a replica, a leader, an ISR member, the controller.
/// (`Default` is broker 0, as an empty `MetadataSnapshot` always had.) `Debug` prints the bare
/// number, as the integer did: log lines such as `isr [1, 2]` read as before.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BrokerId(pub i32);

/// A partition's index within its topic. The controller's rules and the control thread's
/// per-partition maps use it (where it sits beside znode versions and leader epochs); the
/// shards and request handlers still carry the plain index. `Debug` prints the bare number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub i32);

/// A producer id, handed out in blocks (`/latest_producer_id_block` in cluster mode,
/// `__meta/producer-ids` standalone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProducerId(pub i64);

/// A producer's epoch, as its batches carry it. (`Default` is epoch 0, a new producer's.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProducerEpoch(pub i16);

impl Offset {
    /// "No offset" on the wire (an OffsetForLeaderEpoch answer for an unknown epoch).
    pub const NONE: Offset = Offset(-1);
}

impl LeaderEpoch {
    /// "No epoch" on the wire: unknown, or the client does not check it.
    pub const NONE: LeaderEpoch = LeaderEpoch(-1);
}

impl BrokerId {
    /// "No broker" on the wire and in a state znode: a partition without a leader (`NO_LEADER`).
    pub const NONE: BrokerId = BrokerId(-1);

    /// A list of ids from the wire (a request's ISR, a znode's replicas).
    pub fn list(raw: &[i32]) -> Vec<BrokerId> {
        raw.iter().copied().map(BrokerId).collect()
    }

    /// A list of ids for the wire.
    pub fn raw_list(ids: &[BrokerId]) -> Vec<i32> {
        ids.iter().map(|b| b.0).collect()
    }
}

impl From<BrokerId> for kafka_protocol::messages::BrokerId {
    fn from(id: BrokerId) -> Self {
        kafka_protocol::messages::BrokerId(id.0)
    }
}

impl From<kafka_protocol::messages::BrokerId> for BrokerId {
    fn from(id: kafka_protocol::messages::BrokerId) -> Self {
        BrokerId(id.0)
    }
}

impl From<ProducerId> for kafka_protocol::messages::ProducerId {
    fn from(id: ProducerId) -> Self {
        kafka_protocol::messages::ProducerId(id.0)
    }
}

/// Implements a formatting trait by printing the bare number inside the type.
macro_rules! fmt_as_number {
    ($trait:ident for $($t:ty),+) => {
        $(impl std::fmt::$trait for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        })+
    };
}

fmt_as_number!(Display for Offset, LeaderEpoch, BrokerId, PartitionId, ProducerId, ProducerEpoch);
// Log lines print ISR lists with `{:?}`: these read as bare numbers, as the integers did.
fmt_as_number!(Debug for BrokerId, PartitionId);
