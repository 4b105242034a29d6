//! `--transactional`: each producer connection is a transactional producer with its own
//! transactional id. Its writer thread opens a transaction before the first batch after a
//! commit (AddPartitionsToTxn for every partition the connection writes), stamps each batch
//! with the producer id, epoch, its next sequence and the transactional bit, and once
//! `--transaction-interval-ms` has passed waits for every produce acknowledgement and commits
//! (EndTxn). A transaction in which a produce request failed is aborted instead, and the
//! producer is initialised again (a new epoch, sequences from 0).
//!
//! Only the data path is hand-built; the control requests (a few per interval) go through the
//! blocking client, to the transactional id's coordinator (FindCoordinator key type 1).

use anyhow::{Context, Result};
use shardlog_client::txn::{ProducerIdentity, CONCURRENT_TRANSACTIONS};
use shardlog_client::{Client, ClientError};
use std::time::{Duration, Instant};

use crate::cli::Options;
use crate::payload::ProducerStamp;

/// The sequence numbers of one producer (id and epoch) per partition. Sequences go on across
/// transactions and start again at 0 with a new epoch; past `i32::MAX` they wrap to 0.
#[derive(Debug, Clone)]
pub struct Sequences {
    next: Vec<i32>,
}

impl Sequences {
    pub fn new(partitions: usize) -> Sequences {
        Sequences {
            next: vec![0; partitions],
        }
    }

    /// The base sequence of a batch of `count` records to `partition`; advances past it.
    pub fn take(&mut self, partition: i32, count: usize) -> i32 {
        let slot = &mut self.next[partition as usize];
        let base = *slot;
        *slot = ((i64::from(base) + count as i64) % (i64::from(i32::MAX) + 1)) as i32;
        base
    }

    /// A new epoch: every partition starts at 0 again.
    pub fn reset(&mut self) {
        self.next.iter_mut().for_each(|s| *s = 0);
    }
}

/// The transactional id of connection `n` of this process.
pub fn transactional_id(n: usize) -> String {
    format!("shardlog-bench-{}-{n}", std::process::id())
}

/// The transaction timeout asked for: generous next to the interval, at least a minute.
pub fn transaction_timeout_ms(interval: Duration) -> i32 {
    (interval.as_millis() * 10).clamp(60_000, 900_000) as i32
}

/// How long a control request may be retried while the coordinator answers
/// CONCURRENT_TRANSACTIONS (it is still writing the previous transaction's markers).
const CONCURRENT_RETRY_FOR: Duration = Duration::from_secs(10);
const CONCURRENT_BACKOFF: Duration = Duration::from_millis(5);

/// One connection's transactional producer: its control client, identity and sequences.
pub struct TxnProducer {
    pub id: String,
    pub client: Client,
    pub producer: ProducerIdentity,
    pub sequences: Sequences,
    timeout_ms: i32,
    /// The partitions every transaction adds (those the connection writes), sorted.
    partitions: Vec<i32>,
    topic: String,
}

impl TxnProducer {
    /// Connects the control client and initialises the producer id of `id` at its coordinator.
    /// `partitions` are those the connection writes, of `topic_partitions`.
    pub fn init(
        o: &Options,
        id: String,
        mut partitions: Vec<i32>,
        topic_partitions: usize,
    ) -> Result<TxnProducer> {
        let mut client = Client::connect(&o.bootstrap.join(","), &o.client_id, o.request_timeout)
            .with_context(|| format!("connecting the control client of {id:?}"))?;
        let timeout_ms = transaction_timeout_ms(o.transaction_interval);
        let producer = retry_concurrent(|| client.init_transactional_producer(&id, timeout_ms))
            .with_context(|| format!("InitProducerId for transactional id {id:?}"))?;
        partitions.sort_unstable();
        partitions.dedup();
        Ok(TxnProducer {
            id,
            client,
            producer,
            sequences: Sequences::new(topic_partitions),
            timeout_ms,
            partitions,
            topic: o.topic.clone(),
        })
    }

    /// The producer fields of the next batch of `count` records to `partition`.
    pub fn stamp(&mut self, partition: i32, count: usize) -> ProducerStamp {
        ProducerStamp {
            producer_id: self.producer.producer_id,
            epoch: self.producer.epoch,
            base_sequence: self.sequences.take(partition, count),
            transactional: true,
        }
    }

    /// Opens a transaction: AddPartitionsToTxn for the connection's partitions.
    pub fn begin(&mut self) -> Result<()> {
        let (id, producer, topic, partitions) =
            (&self.id, self.producer, &self.topic, &self.partitions);
        let client = &mut self.client;
        retry_concurrent(|| client.add_partitions_to_txn(id, producer, topic, partitions))
            .with_context(|| format!("AddPartitionsToTxn for {id:?}"))
    }

    /// EndTxn; returns its round trip.
    pub fn end(&mut self, commit: bool) -> Result<Duration> {
        let started = Instant::now();
        let (id, producer) = (&self.id, self.producer);
        let client = &mut self.client;
        retry_concurrent(|| client.end_txn(id, producer, commit))
            .with_context(|| format!("EndTxn for {id:?}"))?;
        Ok(started.elapsed())
    }

    /// InitProducerId again after an abort: a new epoch, sequences from 0.
    pub fn reinit(&mut self) -> Result<()> {
        let (id, timeout_ms) = (&self.id, self.timeout_ms);
        let client = &mut self.client;
        self.producer = retry_concurrent(|| client.init_transactional_producer(id, timeout_ms))
            .with_context(|| format!("InitProducerId for transactional id {id:?}"))?;
        self.sequences.reset();
        Ok(())
    }
}

/// Runs `f` again while it fails with CONCURRENT_TRANSACTIONS or COORDINATOR_LOAD_IN_PROGRESS,
/// for up to [`CONCURRENT_RETRY_FOR`].
fn retry_concurrent<T>(mut f: impl FnMut() -> Result<T, ClientError>) -> Result<T, ClientError> {
    let deadline = Instant::now() + CONCURRENT_RETRY_FOR;
    loop {
        match f() {
            Err(e)
                if (e.code() == Some(CONCURRENT_TRANSACTIONS)
                    || e.code() == Some(shardlog_client::codes::COORDINATOR_LOAD_IN_PROGRESS))
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(CONCURRENT_BACKOFF);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_go_on_across_transactions_and_restart_with_an_epoch() {
        let mut s = Sequences::new(3);
        assert_eq!(s.take(1, 10), 0);
        assert_eq!(s.take(1, 5), 10);
        assert_eq!(s.take(2, 1), 0);
        // A commit changes nothing: the next transaction goes on where the last ended.
        assert_eq!(s.take(1, 1), 15);
        s.reset();
        assert_eq!(s.take(1, 1), 0);
        assert_eq!(s.take(2, 1), 0);
    }

    #[test]
    fn sequences_wrap_past_i32_max() {
        let mut s = Sequences::new(1);
        s.next[0] = i32::MAX - 2;
        assert_eq!(s.take(0, 5), i32::MAX - 2);
        assert_eq!(s.take(0, 1), 2);
    }

    #[test]
    fn transactional_ids_are_per_process_and_connection() {
        let a = transactional_id(0);
        assert_eq!(a, format!("shardlog-bench-{}-0", std::process::id()));
        assert_ne!(a, transactional_id(1));
        assert_eq!(transaction_timeout_ms(Duration::from_millis(100)), 60_000);
        assert_eq!(transaction_timeout_ms(Duration::from_secs(30)), 300_000);
    }
}
