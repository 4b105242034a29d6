//! Kafka error codes: the project's one table. Numbers, names and whether a client retries come
//! from `kafka_protocol::ResponseError` (which follows Kafka's `Errors.java`), so they cannot
//! drift from the protocol. Handlers write the bare `i16` constants into wire structs;
//! `ErrorCode` gives a code its name and retriability for messages, logs and client decisions.

use kafka_protocol::ResponseError as E;

/// A Kafka error code, with its name and whether Kafka's clients retry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    pub const NONE: ErrorCode = ErrorCode(NONE);

    /// The number on the wire.
    pub const fn code(self) -> i16 {
        self.0
    }

    /// Whether this is an error at all (not `NONE`).
    pub const fn is_error(self) -> bool {
        self.0 != NONE
    }

    /// Whether Kafka's clients retry a request that got this error (NOT_LEADER_OR_FOLLOWER
    /// yes, TOPIC_ALREADY_EXISTS no). Codes Kafka does not define are not retriable.
    pub const fn is_retriable(self) -> bool {
        match E::try_from_code(self.0) {
            Some(e) => e.is_retriable(),
            None => false,
        }
    }

    /// Kafka's upper-case name (`UNKNOWN_TOPIC_OR_PARTITION`); codes Kafka does not define are
    /// named `UNKNOWN_ERROR_CODE_<n>`.
    pub fn name(self) -> String {
        match E::try_from_code(self.0) {
            None => "NONE".to_string(),
            Some(E::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
            Some(e) => camel_to_upper_snake(&e.to_string()),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// Kafka's upper-case name for `code` (`ErrorCode::name`).
pub fn name(code: i16) -> String {
    ErrorCode(code).name()
}

/// Whether Kafka's clients retry `code` (`ErrorCode::is_retriable`).
pub const fn is_retriable(code: i16) -> bool {
    ErrorCode(code).is_retriable()
}

fn camel_to_upper_snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for (i, ch) in s.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

pub const NONE: i16 = 0;
pub const UNKNOWN_SERVER_ERROR: i16 = E::UnknownServerError.code();
pub const OFFSET_OUT_OF_RANGE: i16 = E::OffsetOutOfRange.code();
pub const CORRUPT_MESSAGE: i16 = E::CorruptMessage.code();
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = E::UnknownTopicOrPartition.code();
pub const INVALID_FETCH_SIZE: i16 = E::InvalidFetchSize.code();
pub const LEADER_NOT_AVAILABLE: i16 = E::LeaderNotAvailable.code();
pub const NOT_LEADER_OR_FOLLOWER: i16 = E::NotLeaderOrFollower.code();
pub const REQUEST_TIMED_OUT: i16 = E::RequestTimedOut.code();
pub const INVALID_UPDATE_VERSION: i16 = E::InvalidUpdateVersion.code();
pub const INELIGIBLE_REPLICA: i16 = E::IneligibleReplica.code();
pub const MESSAGE_TOO_LARGE: i16 = E::MessageTooLarge.code();
pub const OFFSET_METADATA_TOO_LARGE: i16 = E::OffsetMetadataTooLarge.code();
pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = E::CoordinatorLoadInProgress.code();
pub const COORDINATOR_NOT_AVAILABLE: i16 = E::CoordinatorNotAvailable.code();
pub const NOT_COORDINATOR: i16 = E::NotCoordinator.code();
pub const INVALID_TOPIC_EXCEPTION: i16 = E::InvalidTopicException.code();
pub const RECORD_LIST_TOO_LARGE: i16 = E::RecordListTooLarge.code();
pub const NOT_ENOUGH_REPLICAS: i16 = E::NotEnoughReplicas.code();
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = E::NotEnoughReplicasAfterAppend.code();
pub const INVALID_REQUIRED_ACKS: i16 = E::InvalidRequiredAcks.code();
pub const ILLEGAL_GENERATION: i16 = E::IllegalGeneration.code();
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = E::InconsistentGroupProtocol.code();
pub const INVALID_GROUP_ID: i16 = E::InvalidGroupId.code();
pub const UNKNOWN_MEMBER_ID: i16 = E::UnknownMemberId.code();
pub const INVALID_SESSION_TIMEOUT: i16 = E::InvalidSessionTimeout.code();
pub const REBALANCE_IN_PROGRESS: i16 = E::RebalanceInProgress.code();
pub const INVALID_COMMIT_OFFSET_SIZE: i16 = E::InvalidCommitOffsetSize.code();
pub const UNSUPPORTED_VERSION: i16 = E::UnsupportedVersion.code();
pub const TOPIC_ALREADY_EXISTS: i16 = E::TopicAlreadyExists.code();
pub const INVALID_PARTITIONS: i16 = E::InvalidPartitions.code();
pub const INVALID_REPLICATION_FACTOR: i16 = E::InvalidReplicationFactor.code();
pub const INVALID_REPLICA_ASSIGNMENT: i16 = E::InvalidReplicaAssignment.code();
pub const INVALID_CONFIG: i16 = E::InvalidConfig.code();
pub const NOT_CONTROLLER: i16 = E::NotController.code();
pub const INVALID_REQUEST: i16 = E::InvalidRequest.code();
pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = E::UnsupportedForMessageFormat.code();
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = E::OutOfOrderSequenceNumber.code();
pub const INVALID_PRODUCER_EPOCH: i16 = E::InvalidProducerEpoch.code();
pub const INVALID_TXN_STATE: i16 = E::InvalidTxnState.code();
pub const TRANSACTION_COORDINATOR_FENCED: i16 = E::TransactionCoordinatorFenced.code();
pub const KAFKA_STORAGE_ERROR: i16 = E::KafkaStorageError.code();
pub const UNKNOWN_PRODUCER_ID: i16 = E::UnknownProducerId.code();
pub const NON_EMPTY_GROUP: i16 = E::NonEmptyGroup.code();
pub const GROUP_ID_NOT_FOUND: i16 = E::GroupIdNotFound.code();
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = E::FetchSessionIdNotFound.code();
pub const FENCED_LEADER_EPOCH: i16 = E::FencedLeaderEpoch.code();
pub const UNKNOWN_LEADER_EPOCH: i16 = E::UnknownLeaderEpoch.code();
pub const MEMBER_ID_REQUIRED: i16 = E::MemberIdRequired.code();
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = E::PreferredLeaderNotAvailable.code();
pub const GROUP_MAX_SIZE_REACHED: i16 = E::GroupMaxSizeReached.code();
pub const FENCED_INSTANCE_ID: i16 = E::FencedInstanceId.code();
pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = E::EligibleLeadersNotAvailable.code();
pub const ELECTION_NOT_NEEDED: i16 = E::ElectionNotNeeded.code();
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = E::GroupSubscribedToTopic.code();
pub const INVALID_RECORD: i16 = E::InvalidRecord.code();
pub const UNKNOWN_TOPIC_ID: i16 = E::UnknownTopicId.code();
pub const MISMATCHED_ENDPOINT_TYPE: i16 = E::MismatchedEndpointType.code();
pub const INVALID_PRODUCER_ID_MAPPING: i16 = E::InvalidProducerIdMapping.code();
pub const INVALID_TRANSACTION_TIMEOUT: i16 = E::InvalidTransactionTimeout.code();
pub const CONCURRENT_TRANSACTIONS: i16 = E::ConcurrentTransactions.code();
pub const PRODUCER_FENCED: i16 = E::ProducerFenced.code();
pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = E::TransactionalIdNotFound.code();
pub const UNSTABLE_OFFSET_COMMIT: i16 = E::UnstableOffsetCommit.code();
pub const OPERATION_NOT_ATTEMPTED: i16 = E::OperationNotAttempted.code();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_names_and_retriability_follow_kafka() {
        assert_eq!(NOT_LEADER_OR_FOLLOWER, 6);
        assert_eq!(UNKNOWN_SERVER_ERROR, -1);
        assert_eq!(KAFKA_STORAGE_ERROR, 56);
        assert_eq!(name(NOT_LEADER_OR_FOLLOWER), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(name(NONE), "NONE");
        assert_eq!(name(9999), "UNKNOWN_ERROR_CODE_9999");
        assert!(is_retriable(NOT_LEADER_OR_FOLLOWER));
        assert!(!is_retriable(TOPIC_ALREADY_EXISTS));
        assert!(!is_retriable(9999));
        assert_eq!(
            ErrorCode(UNKNOWN_TOPIC_OR_PARTITION).to_string(),
            "UNKNOWN_TOPIC_OR_PARTITION (3)"
        );
    }
}
