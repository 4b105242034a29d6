//! The partition -> shard rule. Every shard computes it locally from the same inputs, so the
//! "table" is a pure function: no state to copy, nothing to keep in sync.

/// Index of a shard (one glommio executor, one core) within this broker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

/// FNV-1a: stable across processes and releases (std's hasher is not).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The shard that owns `topic`/`partition` when the broker runs `shards` shards. Consecutive
/// partitions of a topic land on consecutive shards, so a topic spreads evenly.
pub fn shard_for(topic: &str, partition: i32, shards: usize) -> ShardId {
    debug_assert!(shards > 0);
    let start = fnv1a(topic.as_bytes()) % shards as u64;
    ShardId(((start + partition.max(0) as u64) % shards as u64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_evenly_and_deterministically() {
        let mut counts = [0usize; 4];
        for p in 0..40 {
            counts[shard_for("orders", p, 4).0] += 1;
        }
        assert_eq!(counts, [10, 10, 10, 10]);
        assert_eq!(shard_for("orders", 3, 4), shard_for("orders", 3, 4));
        assert_eq!(shard_for("x", 5, 1), ShardId(0));
    }
}
