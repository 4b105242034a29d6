//! Member id generation, injectable so tests (and simulations) are deterministic.
//!
//! Kafka names members `{client_id}-{uuid}` (dynamic) or `{group_instance_id}-{uuid}` (static).
//! The manager builds the prefix; a [`MemberIdGenerator`] supplies the unique suffix.

/// Supplies the unique part of member ids. Lives on the coordinator's shard; need not be `Send`.
pub trait MemberIdGenerator {
    /// A fresh suffix, unique among the ids this generator has produced. The manager retries a
    /// few times if an id collides with an existing member.
    fn next_suffix(&mut self) -> String;
}

/// Formats pseudo-random 128-bit values like a version 4 UUID, from a splitmix64 stream.
///
/// Deterministic for a given seed; the broker seeds it from the OS (`getrandom`, the clock) at
/// start-up so ids differ across restarts. Member ids are identifiers, not secrets: a client that
/// guesses one can only do what the Kafka protocol already lets any client do to the group.
#[derive(Clone, Debug)]
pub struct SeededMemberIds {
    state: u64,
}

impl SeededMemberIds {
    /// A generator whose sequence is fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        SeededMemberIds { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl MemberIdGenerator for SeededMemberIds {
    fn next_suffix(&mut self) -> String {
        let hi = self.next_u64();
        let lo = self.next_u64();
        // Version 4 and the RFC 4122 variant, so the id looks like what Java's UUID prints.
        let hi = (hi & !0xF000) | 0x4000;
        let lo = (lo & !(0b11 << 62)) | (0b10 << 62);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xFFFF,
            hi & 0xFFFF,
            lo >> 48,
            lo & 0xFFFF_FFFF_FFFF
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_like_a_uuid_and_is_deterministic() {
        let mut a = SeededMemberIds::new(7);
        let mut b = SeededMemberIds::new(7);
        let x = a.next_suffix();
        assert_eq!(x, b.next_suffix());
        assert_ne!(x, a.next_suffix());
        let parts: Vec<&str> = x.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
    }
}
