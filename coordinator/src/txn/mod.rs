//! Kafka's transaction coordinator as a deterministic state machine: InitProducerId (with a
//! transactional id), AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, DescribeTransactions,
//! ListTransactions, transaction timeouts and transactional-id expiry, and the
//! `__transaction_state` record format ([`records`]).
//!
//! Same rules as the group coordinator: no I/O, no clock, no runtime. Time is an input
//! (`now_ms`); log appends, transaction markers, producer-id allocation and replies are outputs
//! ([`TxnEffect`]). One [`TxnManager`] serves one `__transaction_state` partition.
//!
//! The difference with [`GroupManager`](crate::GroupManager) is Kafka's *pending transition*:
//! a state change is first written to the log and only applied once the caller reports the
//! write durable ([`TxnManager::on_persisted`]). While it is in flight, other requests for the
//! same transactional id get `CONCURRENT_TRANSACTIONS`; a failed write drops it, leaving the
//! state as it was. Everything the manager holds outside a pending transition is therefore
//! durable, and a reply it emits can be sent at once.

mod manager;
pub mod records;

pub use manager::TxnManager;
pub use records::{TxnLogValue, TxnState};

use crate::api::{Record, ReplyToken, TopicPartitionErrors};
use crate::config::ConfigError;
use crate::partition::coordinator_partition;

/// The topic AddOffsetsToTxn adds to a transaction.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Which `__transaction_state` partition owns a transactional id: Kafka's
/// `Utils.abs(transactionalId.hashCode) % partition_count`, the rule groups use too.
pub fn transaction_partition(transactional_id: &str, partition_count: i32) -> i32 {
    coordinator_partition(transactional_id, partition_count)
}

/// Limits of one transaction coordinator partition, with Kafka's names and defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnConfig {
    /// The `__transaction_state` partition this manager serves; other ids get NOT_COORDINATOR.
    pub partition_index: i32,
    /// `transaction.state.log.num.partitions` (Kafka default 50).
    pub partition_count: i32,
    /// `transaction.max.timeout.ms` (Kafka default 900000).
    pub transaction_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms` (Kafka default 604800000, 7 days).
    pub transactional_id_expiration_ms: i64,
    /// `offsets.topic.num.partitions` (Kafka default 50), for AddOffsetsToTxn.
    pub offsets_partition_count: i32,
    /// Leader epoch of this `__transaction_state` partition, sent with the markers so partition
    /// leaders can reject markers from a deposed coordinator.
    pub coordinator_epoch: i32,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            partition_index: 0,
            partition_count: 50,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            offsets_partition_count: 50,
            coordinator_epoch: 0,
        }
    }
}

impl TxnConfig {
    /// Checks that the partition index lies inside the partition count and the counts are
    /// positive.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.partition_count <= 0
            || !(0..self.partition_count).contains(&self.partition_index)
            || self.offsets_partition_count <= 0
        {
            return Err(ConfigError::Partition {
                index: self.partition_index,
                count: self.partition_count,
            });
        }
        Ok(())
    }
}

/// Names one append of records to `__transaction_state`; reported back through
/// [`TxnManager::on_persisted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId(pub u64);

/// The markers a decided transaction needs (WriteTxnMarkers to every partition leader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteMarkers {
    /// Transactional id.
    pub transactional_id: String,
    /// Producer id of the transaction.
    pub producer_id: i64,
    /// Epoch to write the markers with.
    pub producer_epoch: i16,
    /// COMMIT (true) or ABORT (false) markers.
    pub commit: bool,
    /// This coordinator's epoch ([`TxnConfig::coordinator_epoch`]).
    pub coordinator_epoch: i32,
    /// Partitions of the transaction, ordered.
    pub partitions: Vec<(String, i32)>,
}

/// InitProducerId response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitProducerIdResult {
    /// Kafka error code.
    pub error_code: i16,
    /// Producer id, -1 on error.
    pub producer_id: i64,
    /// Producer epoch, -1 on error.
    pub producer_epoch: i16,
}

impl InitProducerIdResult {
    /// An error response.
    pub fn error(error_code: i16) -> Self {
        InitProducerIdResult {
            error_code,
            producer_id: -1,
            producer_epoch: -1,
        }
    }
}

/// The answer to one request, for the token the caller gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnReply {
    /// InitProducerId.
    InitProducerId(InitProducerIdResult),
    /// AddPartitionsToTxn: one error per partition (all the same), in request order.
    AddPartitions(TopicPartitionErrors),
    /// AddOffsetsToTxn.
    AddOffsets(i16),
    /// EndTxn.
    EndTxn(i16),
}

/// Something the glue must do on the manager's behalf, in order.
///
/// Contract: append each `Persist` as one batch to this manager's `__transaction_state`
/// partition and report the outcome with [`TxnManager::on_persisted`] (a failed or abandoned
/// append must be reported as failed). `Reply` effects can be sent as they come: the manager
/// emits a reply only once everything it depends on is durable. Every token given to a request
/// is answered exactly once, except that [`TxnEffect::NeedsProducerId`] hands the request back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnEffect {
    /// Append these records as one batch, then call [`TxnManager::on_persisted`] with `write`.
    Persist {
        /// Names this append.
        write: WriteId,
        /// Records, in order.
        records: Vec<Record>,
    },
    /// The InitProducerId with this token needs a new producer id: allocate one (asynchronously)
    /// and call [`TxnManager::init_producer_id`] again with the same token and `Some(id)`.
    NeedsProducerId {
        /// The request's token (not answered yet).
        token: ReplyToken,
        /// Its transactional id.
        transactional_id: String,
    },
    /// Send these markers, then call [`TxnManager::markers_written`].
    WriteMarkers(WriteMarkers),
    /// Answer the request given this token.
    Reply(ReplyToken, TxnReply),
}

/// One transaction in DescribeTransactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedTxn {
    /// Transactional id.
    pub transactional_id: String,
    /// `NONE`, `TRANSACTIONAL_ID_NOT_FOUND`, `NOT_COORDINATOR`, ...
    pub error_code: i16,
    /// Kafka's state name ("" on error).
    pub state: &'static str,
    /// Transaction timeout, 0 on error.
    pub timeout_ms: i32,
    /// Start of the open transaction, -1 if none.
    pub start_timestamp_ms: i64,
    /// Producer id, -1 on error.
    pub producer_id: i64,
    /// Producer epoch, -1 on error.
    pub producer_epoch: i16,
    /// Partitions of the transaction by topic.
    pub topics: Vec<(String, Vec<i32>)>,
}

/// One row of ListTransactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedTxn {
    /// Transactional id.
    pub transactional_id: String,
    /// Producer id.
    pub producer_id: i64,
    /// Kafka's state name.
    pub state: &'static str,
}

/// ListTransactions response for this partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListTxnsResult {
    /// `COORDINATOR_LOAD_IN_PROGRESS` while loading, `NOT_COORDINATOR` once unloaded.
    pub error_code: i16,
    /// State filters that name no state.
    pub unknown_state_filters: Vec<String>,
    /// Matching transactions, ordered by transactional id.
    pub transactions: Vec<ListedTxn>,
}
