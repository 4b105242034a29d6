//! The Kafka error codes the coordinator answers with: the project's one table,
//! `shardlog_protocol::errors`. The coordinator's API uses bare `i16` so that results can be
//! copied into any wire version's response struct without conversion.
//!
//! The transaction coordinator's codes that the project table does not list yet are taken from
//! the same source (`kafka_protocol::ResponseError`), so they cannot drift either.

pub use shardlog_protocol::errors::*;

use kafka_protocol::ResponseError as E;

/// The producer id is not the one assigned to the transactional id (49).
pub const INVALID_PRODUCER_ID_MAPPING: i16 = E::InvalidProducerIdMapping.code();
/// The transaction timeout is not positive or exceeds `transaction.max.timeout.ms` (50).
pub const INVALID_TRANSACTION_TIMEOUT: i16 = E::InvalidTransactionTimeout.code();
/// Another operation on the same transaction is in progress; the client retries (51).
pub const CONCURRENT_TRANSACTIONS: i16 = E::ConcurrentTransactions.code();
/// OffsetFetch with `require_stable`: a transactional commit is pending (88).
pub const UNSTABLE_OFFSET_COMMIT: i16 = E::UnstableOffsetCommit.code();
/// A newer producer with the same transactional id fenced this one (90).
pub const PRODUCER_FENCED: i16 = E::ProducerFenced.code();
/// DescribeTransactions for an unknown transactional id (105).
pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = E::TransactionalIdNotFound.code();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_codes_have_kafkas_numbers() {
        assert_eq!(INVALID_PRODUCER_ID_MAPPING, 49);
        assert_eq!(INVALID_TRANSACTION_TIMEOUT, 50);
        assert_eq!(CONCURRENT_TRANSACTIONS, 51);
        assert_eq!(UNSTABLE_OFFSET_COMMIT, 88);
        assert_eq!(PRODUCER_FENCED, 90);
        assert_eq!(TRANSACTIONAL_ID_NOT_FOUND, 105);
        assert_eq!(INVALID_TXN_STATE, 48);
        assert_eq!(INVALID_PRODUCER_EPOCH, 47);
    }
}
