//! Transactions, producer side: InitProducerId with a transactional id, AddPartitionsToTxn (the
//! v0-3 client form: one transaction per request), EndTxn. Each is a function on a
//! [`Connection`] (which should be the transactional id's coordinator) and a [`Client`] method
//! that finds the coordinator (FindCoordinator key type 1) and retries once when it moved.
//!
//! These are control requests, a few per transaction; the records themselves go out in Produce
//! requests carrying the transactional id and batches with the transactional attribute bit
//! (see [`TRANSACTIONAL_BIT`]).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    add_partitions_to_txn_request::AddPartitionsToTxnTopic, AddPartitionsToTxnRequest,
    EndTxnRequest, InitProducerIdRequest, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::{check_code, Client, ClientError, Connection, CoordinatorKey};

/// The record batch attribute bit of transactional batches (bit 4).
pub const TRANSACTIONAL_BIT: i16 = 0x10;
/// CONCURRENT_TRANSACTIONS: the coordinator is still completing the previous transaction of
/// this id (writing its markers); retry after a short pause.
pub const CONCURRENT_TRANSACTIONS: i16 = ResponseError::ConcurrentTransactions.code();
/// OPERATION_NOT_ATTEMPTED: another partition of the same AddPartitionsToTxn failed.
pub const OPERATION_NOT_ATTEMPTED: i16 = ResponseError::OperationNotAttempted.code();

/// A producer id and epoch, as InitProducerId hands them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub epoch: i16,
}

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(id.to_string()))
}

/// InitProducerId on `conn`: with `Some(id)` the coordinator of `id` fences earlier producers
/// of that id (bumps the epoch) and aborts their open transaction.
pub fn init_producer_id(
    conn: &mut Connection,
    transactional_id: Option<&str>,
    transaction_timeout_ms: i32,
) -> Result<ProducerIdentity, ClientError> {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(transactional_id.map(txn_id))
        .with_transaction_timeout_ms(transaction_timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let r = conn.call(&req)?;
    check_code(r.error_code, None, || match transactional_id {
        Some(id) => format!("initializing the producer id of transactional id {id:?}"),
        None => "initializing a producer id".to_string(),
    })?;
    Ok(ProducerIdentity {
        producer_id: r.producer_id.0,
        epoch: r.producer_epoch,
    })
}

/// AddPartitionsToTxn (v0-3) on `conn` for `partitions` of `topic`. The error of the first
/// partition that failed for its own reason (not OPERATION_NOT_ATTEMPTED) is returned.
pub fn add_partitions_to_txn(
    conn: &mut Connection,
    transactional_id: &str,
    producer: ProducerIdentity,
    topic: &str,
    partitions: &[i32],
) -> Result<(), ClientError> {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id(transactional_id))
        .with_v3_and_below_producer_id(ProducerId(producer.producer_id))
        .with_v3_and_below_producer_epoch(producer.epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(partitions.to_vec())]);
    let r = conn.call(&req)?;
    let results: Vec<(i32, i16)> = r
        .results_by_topic_v3_and_below
        .iter()
        .filter(|t| *t.name.0 == *topic)
        .flat_map(|t| t.results_by_partition.iter())
        .map(|p| (p.partition_index, p.partition_error_code))
        .collect();
    let failed = results
        .iter()
        .find(|(_, c)| *c != 0 && *c != OPERATION_NOT_ATTEMPTED)
        .or_else(|| results.iter().find(|(_, c)| *c != 0));
    if let Some(&(p, code)) = failed {
        return check_code(code, None, || {
            format!("adding {topic}-{p} to the transaction of {transactional_id:?}")
        });
    }
    if let Some(missing) = partitions
        .iter()
        .find(|p| !results.iter().any(|(q, _)| q == *p))
    {
        return Err(ClientError::Protocol {
            addr: conn.addr().to_string(),
            detail: format!("AddPartitionsToTxn response has no result for {topic}-{missing}"),
        });
    }
    Ok(())
}

/// EndTxn on `conn`: commits (`commit`) or aborts the open transaction of `transactional_id`.
pub fn end_txn(
    conn: &mut Connection,
    transactional_id: &str,
    producer: ProducerIdentity,
    commit: bool,
) -> Result<(), ClientError> {
    let req = EndTxnRequest::default()
        .with_transactional_id(txn_id(transactional_id))
        .with_producer_id(ProducerId(producer.producer_id))
        .with_producer_epoch(producer.epoch)
        .with_committed(commit);
    let r = conn.call(&req)?;
    check_code(r.error_code, None, || {
        format!(
            "{} the transaction of {transactional_id:?}",
            if commit { "committing" } else { "aborting" }
        )
    })
}

impl Client {
    /// InitProducerId for `transactional_id` at its coordinator.
    pub fn init_transactional_producer(
        &mut self,
        transactional_id: &str,
        transaction_timeout_ms: i32,
    ) -> Result<ProducerIdentity, ClientError> {
        self.with_coordinator(CoordinatorKey::transaction(transactional_id), |conn| {
            init_producer_id(conn, Some(transactional_id), transaction_timeout_ms)
        })
    }

    /// AddPartitionsToTxn at the coordinator of `transactional_id`.
    pub fn add_partitions_to_txn(
        &mut self,
        transactional_id: &str,
        producer: ProducerIdentity,
        topic: &str,
        partitions: &[i32],
    ) -> Result<(), ClientError> {
        self.with_coordinator(CoordinatorKey::transaction(transactional_id), |conn| {
            add_partitions_to_txn(conn, transactional_id, producer, topic, partitions)
        })
    }

    /// EndTxn at the coordinator of `transactional_id`.
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer: ProducerIdentity,
        commit: bool,
    ) -> Result<(), ClientError> {
        self.with_coordinator(CoordinatorKey::transaction(transactional_id), |conn| {
            end_txn(conn, transactional_id, producer, commit)
        })
    }
}
