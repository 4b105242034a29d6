//! The Kafka error codes the coordinator answers with, as plain `i16` values.
//!
//! The numbers come from `kafka_protocol::ResponseError` so they cannot drift from the protocol;
//! the coordinator's API uses bare `i16` so that results can be copied into any wire version's
//! response struct without conversion.

use kafka_protocol::ResponseError as E;

/// No error.
pub const NONE: i16 = 0;
/// Catch-all; used only when a generated member id keeps colliding (a broken id generator).
pub const UNKNOWN_SERVER_ERROR: i16 = E::UnknownServerError.code();
/// An OffsetCommit metadata string is longer than `offset.metadata.max.bytes`.
pub const OFFSET_METADATA_TOO_LARGE: i16 = E::OffsetMetadataTooLarge.code();
/// The coordinator partition is still being replayed from `__consumer_offsets` (retriable).
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = E::CoordinatorLoadInProgress.code();
/// The coordinator cannot serve the group right now; the client rediscovers it (retriable).
pub const COORDINATOR_NOT_AVAILABLE: i16 = E::CoordinatorNotAvailable.code();
/// The group maps to another `__consumer_offsets` partition, or this one was unloaded (retriable).
pub const NOT_COORDINATOR: i16 = E::NotCoordinator.code();
/// A topic name too long to be stored in a `__consumer_offsets` key.
pub const INVALID_TOPIC_EXCEPTION: i16 = E::InvalidTopicException.code();
/// The request names a generation that is not the group's current one.
pub const ILLEGAL_GENERATION: i16 = E::IllegalGeneration.code();
/// Protocol type differs from the group's, or no protocol is shared with every member.
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = E::InconsistentGroupProtocol.code();
/// Empty (or unencodably long) group id on an API that needs a real group.
pub const INVALID_GROUP_ID: i16 = E::InvalidGroupId.code();
/// The member id is not (or no longer) part of the group.
pub const UNKNOWN_MEMBER_ID: i16 = E::UnknownMemberId.code();
/// Session timeout outside `[group.min.session.timeout.ms, group.max.session.timeout.ms]`.
pub const INVALID_SESSION_TIMEOUT: i16 = E::InvalidSessionTimeout.code();
/// The group is rebalancing; the member must (re)join.
pub const REBALANCE_IN_PROGRESS: i16 = E::RebalanceInProgress.code();
/// Input the coordinator refuses to store (oversized member metadata, overlong strings).
pub const INVALID_REQUEST: i16 = E::InvalidRequest.code();
/// DeleteGroups / OffsetDelete on a group that still has members.
pub const NON_EMPTY_GROUP: i16 = E::NonEmptyGroup.code();
/// DeleteGroups / OffsetDelete (and DescribeGroups v6+) on a group that does not exist.
pub const GROUP_ID_NOT_FOUND: i16 = E::GroupIdNotFound.code();
/// JoinGroup v4+: the new member must rejoin with the member id carried in the response.
pub const MEMBER_ID_REQUIRED: i16 = E::MemberIdRequired.code();
/// The group already has `group.max.size` members.
pub const GROUP_MAX_SIZE_REACHED: i16 = E::GroupMaxSizeReached.code();
/// Another member id now owns this `group.instance.id`.
pub const FENCED_INSTANCE_ID: i16 = E::FencedInstanceId.code();
/// OffsetDelete on a topic the (consumer) group is still subscribed to.
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = E::GroupSubscribedToTopic.code();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_kafkas_numbers() {
        assert_eq!(UNKNOWN_SERVER_ERROR, -1);
        assert_eq!(OFFSET_METADATA_TOO_LARGE, 12);
        assert_eq!(COORDINATOR_LOAD_IN_PROGRESS, 14);
        assert_eq!(COORDINATOR_NOT_AVAILABLE, 15);
        assert_eq!(NOT_COORDINATOR, 16);
        assert_eq!(INVALID_TOPIC_EXCEPTION, 17);
        assert_eq!(ILLEGAL_GENERATION, 22);
        assert_eq!(INCONSISTENT_GROUP_PROTOCOL, 23);
        assert_eq!(INVALID_GROUP_ID, 24);
        assert_eq!(UNKNOWN_MEMBER_ID, 25);
        assert_eq!(INVALID_SESSION_TIMEOUT, 26);
        assert_eq!(REBALANCE_IN_PROGRESS, 27);
        assert_eq!(INVALID_REQUEST, 42);
        assert_eq!(NON_EMPTY_GROUP, 68);
        assert_eq!(GROUP_ID_NOT_FOUND, 69);
        assert_eq!(MEMBER_ID_REQUIRED, 79);
        assert_eq!(GROUP_MAX_SIZE_REACHED, 81);
        assert_eq!(FENCED_INSTANCE_ID, 82);
        assert_eq!(GROUP_SUBSCRIBED_TO_TOPIC, 86);
    }
}
