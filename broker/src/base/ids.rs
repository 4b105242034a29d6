//! Types for the numbers that are easy to mix up: an offset in a partition's log and a leader
//! epoch are both plain integers on the wire, and the replication rules take several of each.
//! Inside the broker they are these types; they turn back into integers only at the wire.

/// An offset in a partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub i64);

/// A partition's leader epoch: bumped by the controller at every change of leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderEpoch(pub i32);

impl Offset {
    /// "No offset" on the wire (an OffsetForLeaderEpoch answer for an unknown epoch).
    pub const NONE: Offset = Offset(-1);
}

impl LeaderEpoch {
    /// "No epoch" on the wire: unknown, or the client does not check it.
    pub const NONE: LeaderEpoch = LeaderEpoch(-1);
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
