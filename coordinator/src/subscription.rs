//! Just enough of the consumer protocol to learn which topics a `"consumer"` group subscribes to.
//!
//! Kafka uses the subscribed topics for two decisions: OffsetDelete refuses topics the group still
//! consumes (`GROUP_SUBSCRIBED_TO_TOPIC`), and offset expiry may drop offsets of topics a Stable
//! group no longer consumes. Every version of `ConsumerProtocolSubscription` starts with the
//! version-0 prefix `version:i16, topics:ARRAY(i32) of STRING(i16)`, so that prefix is all we read.

/// The protocol type of Kafka consumers.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// The topics of one member's subscription metadata, or `None` if the bytes do not parse (Kafka
/// then treats the group's subscription as unknown).
pub fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut pos = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let end = pos.checked_add(n)?;
        let slice = metadata.get(pos..end)?;
        pos = end;
        Some(slice)
    };
    let version = i16::from_be_bytes(take(2)?.try_into().ok()?);
    if version < 0 {
        return None;
    }
    let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let count = usize::try_from(count).ok()?;
    let mut topics = Vec::with_capacity(count.min(metadata.len() / 2));
    for _ in 0..count {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        let name = std::str::from_utf8(take(len)?).ok()?;
        topics.push(name.to_owned());
    }
    Some(topics)
}

/// Encodes a version-0 subscription (topics, no user data). For tests and tools.
pub fn encode_subscription(topics: &[&str]) -> bytes::Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        out.extend_from_slice(&(t.len() as i16).to_be_bytes());
        out.extend_from_slice(t.as_bytes());
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    bytes::Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_v0_prefix() {
        let b = encode_subscription(&["orders", "payments"]);
        assert_eq!(
            subscribed_topics(&b),
            Some(vec!["orders".to_string(), "payments".to_string()])
        );
        // Trailing fields of newer versions (owned partitions, generation, rack) are ignored.
        let mut v3 = b.to_vec();
        v3[1] = 3;
        v3.extend_from_slice(&[0, 0, 0, 0, 255, 255, 255, 255, 255, 255]);
        assert_eq!(subscribed_topics(&v3).map(|t| t.len()), Some(2));
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(subscribed_topics(b""), None);
        assert_eq!(subscribed_topics(&[0, 0, 0x7F, 0xFF, 0xFF, 0xFF]), None);
        assert_eq!(subscribed_topics(&[0xFF, 0xFF, 0, 0, 0, 0]), None);
        assert_eq!(subscribed_topics(&[0, 0, 0, 0, 0, 1, 0, 1, 0xFF]), None);
    }
}
