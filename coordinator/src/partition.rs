//! Which `__consumer_offsets` partition (and so which coordinator) owns a group.
//!
//! FindCoordinator answers with the leader of this partition; with the same rule as Kafka, a
//! group's offsets land in the same partition index a Kafka cluster would use.

/// Kafka's `Utils.abs(groupId.hashCode) % partition_count`: Java's `String.hashCode` (over UTF-16
/// code units), made non-negative with `Utils.abs` (which maps `i32::MIN` to 0; note this is not
/// the `& 0x7fffffff` of `Utils.toPositive` used by the producer's partitioner).
///
/// A non-positive `partition_count` is treated as 1.
pub fn coordinator_partition(group_id: &str, partition_count: i32) -> i32 {
    let count = partition_count.max(1);
    let hash = java_string_hash(group_id);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % count
}

/// Java's `String.hashCode`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, wrapping.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values computed with Java's algorithm (UTF-16, wrapping 32-bit arithmetic).
    #[test]
    fn matches_java_hash_code() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(java_string_hash("groupé"), -1_237_460_406);
        assert_eq!(java_string_hash("😀grp"), 1_276_929_186);
    }

    #[test]
    fn partition_uses_kafkas_abs() {
        assert_eq!(coordinator_partition("", 50), 0);
        assert_eq!(coordinator_partition("a", 50), 47);
        assert_eq!(coordinator_partition("console-consumer-12345", 50), 6);
        // Negative hash: abs gives 12, `& 0x7fffffff` would give 36.
        assert_eq!(coordinator_partition("my-group", 50), 12);
        assert_eq!(coordinator_partition("test-consumer-group", 50), 31);
        assert_eq!(coordinator_partition("polygenelubricants", 50), 0);
        assert_eq!(coordinator_partition("groupé", 50), 6);
        assert_eq!(coordinator_partition("anything", 1), 0);
        assert_eq!(coordinator_partition("anything", 0), 0);
        assert_eq!(coordinator_partition("anything", -5), 0);
    }
}
