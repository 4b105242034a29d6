//! Every limit and timing the coordinator applies, in one place, with Kafka's names and defaults.
//!
//! The broker fills a [`GroupConfig`] from its properties (`group.min.session.timeout.ms`, ...);
//! tests shrink the timeouts. [`GroupConfig::validate`] checks the relations between the values.

use thiserror::Error;

/// Longest string a `__consumer_offsets` record (or a non-flexible Kafka message) can carry.
pub const MAX_STRING_BYTES: usize = i16::MAX as usize;

/// Longest client id / group instance id kept as the prefix of a generated member id. Kafka has
/// no such limit; we cap it so a generated id always fits a Kafka string.
pub const MEMBER_ID_PREFIX_MAX_BYTES: usize = 1024;

/// Limits and timings of one coordinator partition. Values are copied into the
/// [`GroupManager`](crate::GroupManager) at construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// The `__consumer_offsets` partition this manager serves. Requests for groups that hash to
    /// another partition are answered with `NOT_COORDINATOR`.
    pub partition_index: i32,
    /// Number of partitions of `__consumer_offsets` (`offsets.topic.num.partitions`).
    pub partition_count: i32,
    /// `group.min.session.timeout.ms` (Kafka default 6000).
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms` (Kafka default 1800000).
    pub group_max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms` (Kafka default 3000): how long the first rebalance of an
    /// Empty group waits for more members, extended while members keep arriving.
    pub group_initial_rebalance_delay_ms: i32,
    /// `group.max.size` (Kafka default `i32::MAX`).
    pub group_max_size: usize,
    /// Cap on members waiting for their second JoinGroup (MEMBER_ID_REQUIRED) per group. Kafka has
    /// no cap; without one a client looping on empty-id joins grows the group without bound.
    pub group_max_pending_members: usize,
    /// Largest total protocol metadata (names + bytes) one member may send; larger joins get
    /// `INVALID_REQUEST`. Kafka relies on the request size limit only.
    pub member_metadata_max_bytes: usize,
    /// Most protocols (assignors) one member may list.
    pub member_max_protocols: usize,
    /// `offset.metadata.max.bytes` (Kafka default 4096).
    pub offset_metadata_max_bytes: usize,
    /// How long a member added during a rebalance may wait for its JoinGroup response before it
    /// is dropped (Kafka's fixed `NewMemberJoinTimeoutMs`, 5 minutes).
    pub new_member_join_timeout_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            partition_index: 0,
            partition_count: 1,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: i32::MAX as usize,
            group_max_pending_members: 65_536,
            member_metadata_max_bytes: 1 << 20,
            member_max_protocols: 64,
            offset_metadata_max_bytes: 4096,
            new_member_join_timeout_ms: 5 * 60 * 1000,
        }
    }
}

/// A [`GroupConfig`] whose values contradict each other.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `partition_count` must be positive and `partition_index` inside `0..partition_count`.
    #[error("partition index {index} is outside 0..{count}")]
    Partition {
        /// Configured index.
        index: i32,
        /// Configured count.
        count: i32,
    },
    /// Session timeout bounds are non-positive or inverted.
    #[error("session timeout bounds [{min}, {max}] are invalid")]
    SessionTimeoutBounds {
        /// `group.min.session.timeout.ms`.
        min: i32,
        /// `group.max.session.timeout.ms`.
        max: i32,
    },
    /// A value that must be at least zero (or at least one) is not.
    #[error("{name} must be at least {min}")]
    TooSmall {
        /// Field name.
        name: &'static str,
        /// Lowest allowed value.
        min: i64,
    },
    /// A value too large to be stored in a Kafka string.
    #[error("{name} must be at most {max}")]
    TooLarge {
        /// Field name.
        name: &'static str,
        /// Highest allowed value.
        max: i64,
    },
}

impl GroupConfig {
    /// Checks the relations between the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.partition_count <= 0
            || self.partition_index < 0
            || self.partition_index >= self.partition_count
        {
            return Err(ConfigError::Partition {
                index: self.partition_index,
                count: self.partition_count,
            });
        }
        if self.group_min_session_timeout_ms <= 0
            || self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
        {
            return Err(ConfigError::SessionTimeoutBounds {
                min: self.group_min_session_timeout_ms,
                max: self.group_max_session_timeout_ms,
            });
        }
        let at_least = |name, value: i64, min| {
            if value < min {
                Err(ConfigError::TooSmall { name, min })
            } else {
                Ok(())
            }
        };
        at_least(
            "group_initial_rebalance_delay_ms",
            i64::from(self.group_initial_rebalance_delay_ms),
            0,
        )?;
        at_least("group_max_size", self.group_max_size as i64, 1)?;
        at_least(
            "group_max_pending_members",
            self.group_max_pending_members as i64,
            1,
        )?;
        at_least("member_max_protocols", self.member_max_protocols as i64, 1)?;
        at_least(
            "new_member_join_timeout_ms",
            self.new_member_join_timeout_ms,
            1,
        )?;
        if self.offset_metadata_max_bytes > MAX_STRING_BYTES {
            return Err(ConfigError::TooLarge {
                name: "offset_metadata_max_bytes",
                max: MAX_STRING_BYTES as i64,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_kafkas() {
        let c = GroupConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.group_min_session_timeout_ms, 6000);
        assert_eq!(c.group_max_session_timeout_ms, 1_800_000);
        assert_eq!(c.group_initial_rebalance_delay_ms, 3000);
    }

    #[test]
    fn contradictions_are_reported() {
        let mut c = GroupConfig {
            partition_index: 3,
            partition_count: 3,
            ..GroupConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Partition { .. })));
        c.partition_index = 0;
        c.group_min_session_timeout_ms = 10;
        c.group_max_session_timeout_ms = 5;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SessionTimeoutBounds { .. })
        ));
        c.group_max_session_timeout_ms = 50;
        c.group_max_size = 0;
        assert!(matches!(c.validate(), Err(ConfigError::TooSmall { .. })));
        c.group_max_size = 1;
        c.offset_metadata_max_bytes = 1 << 20;
        assert!(matches!(c.validate(), Err(ConfigError::TooLarge { .. })));
    }
}
