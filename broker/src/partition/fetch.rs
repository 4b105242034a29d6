//! Reads for Fetch and the fetch waiters (long polls) woken when the log, the high watermark
//! or the last stable offset moves. Read-committed consumers read below the last stable offset
//! and are told the aborted transactions of what they read (from the in-memory `.txnindex`).

use super::*;

impl Partition {
    pub(super) fn wake_waiters(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            let _ = w.try_send(FetchWake::Data);
        }
    }

    /// Reads for a fetch. When `waiter` is given it is registered so the next append or high
    /// watermark move wakes it (read and registration are one step on this shard, so nothing
    /// can slip between them unnoticed); the fetch handler passes one only when it may have to
    /// wait for more data.
    ///
    /// Only the leader serves fetches. A consumer reads below the high watermark (below the last
    /// stable offset with `from.read_committed`); a follower
    /// (`from.replica_id >= 0`) reads to the log end, and its fetch offset is its log end
    /// offset, which may move the high watermark.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        waiter: Option<&flume::Sender<FetchWake>>,
        from: FetchFrom,
    ) -> PartitionRead {
        let (role, epoch) = {
            let r = self.replica.borrow();
            (r.role, r.leader_epoch)
        };
        let refuse = |code| PartitionRead {
            error_code: code,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            slice: None,
            aborted_transactions: None,
        };
        let code = check_leader_epoch(epoch, from.current_leader_epoch);
        if code != errors::NONE {
            return refuse(code);
        }
        if role != Role::Leader {
            return refuse(errors::NOT_LEADER_OR_FOLLOWER);
        }
        let leo = self.log.log_end_offset();
        let log_start = self.log_start_offset();
        let is_follower = from.replica_id.0 >= 0;
        if is_follower && offset <= leo && offset >= log_start {
            self.on_follower_fetch(from.replica_id, offset, from.log_start_offset);
        }
        let hw = self.high_watermark();
        let lso = self.last_stable_offset();
        let committed = from.read_committed && !is_follower;
        let limit = if is_follower {
            leo
        } else if committed {
            lso
        } else {
            hw
        };
        let none_aborted = committed.then(Vec::new);
        if let Some(w) = waiter {
            let mut ws = self.waiters.borrow_mut();
            ws.retain(|w| !w.is_disconnected());
            if ws.len() < limits::PARTITION_FETCH_WAITERS_MAX {
                ws.push(w.clone());
            } else {
                let _ = w.try_send(FetchWake::Full);
            }
        }
        if offset == limit && offset >= log_start {
            return PartitionRead {
                error_code: errors::NONE,
                high_watermark: hw,
                last_stable_offset: lso,
                log_start_offset: log_start,
                slice: None,
                aborted_transactions: none_aborted.clone(),
            };
        }
        if offset > leo {
            return PartitionRead {
                error_code: errors::OFFSET_OUT_OF_RANGE,
                high_watermark: hw,
                last_stable_offset: lso,
                log_start_offset: log_start,
                slice: None,
                aborted_transactions: none_aborted.clone(),
            };
        }
        match self.log.read(offset, max_bytes, limit).await {
            Ok(slice) => {
                if let (ReadSlice::File(f), false) = (&slice, is_follower) {
                    let c = &self.counters;
                    PartitionCounters::add(&c.bytes_out, f.len);
                    let from = offset.max(f.first_batch_offset);
                    PartitionCounters::add(
                        &c.records_out,
                        (f.last_offset + 1 - from).max(0) as u64,
                    );
                }
                let slice = match slice {
                    ReadSlice::File(f) if f.len > 0 => Some(f),
                    _ => None,
                };
                let aborted_transactions = match (&slice, committed) {
                    (_, false) => None,
                    (None, true) => Some(Vec::new()),
                    (Some(f), true) => Some(
                        self.log
                            .collect_aborted_txns(offset, f.last_offset + 1)
                            .into_iter()
                            .map(|t| shardlog_protocol::fetch_encode::AbortedTxn {
                                producer_id: t.producer_id,
                                first_offset: t.first_offset,
                            })
                            .collect(),
                    ),
                };
                PartitionRead {
                    error_code: errors::NONE,
                    high_watermark: hw,
                    last_stable_offset: lso,
                    log_start_offset: self.log_start_offset(),
                    slice,
                    aborted_transactions,
                }
            }
            Err(StorageError::OffsetOutOfRange { .. }) => PartitionRead {
                error_code: errors::OFFSET_OUT_OF_RANGE,
                high_watermark: hw,
                last_stable_offset: lso,
                log_start_offset: log_start,
                slice: None,
                aborted_transactions: none_aborted.clone(),
            },
            Err(e) => {
                log::error!(
                    "read of {}-{} at {offset} failed: {e}",
                    self.topic,
                    self.index
                );
                PartitionRead {
                    error_code: errors::KAFKA_STORAGE_ERROR,
                    high_watermark: hw,
                    last_stable_offset: lso,
                    log_start_offset: log_start,
                    slice: None,
                    aborted_transactions: none_aborted.clone(),
                }
            }
        }
    }

    /// Wakes every waiting fetch and fails acks=all waits, e.g. before the partition is closed.
    pub fn release_waiters(&self) {
        self.fail_ack_waiters(errors::NOT_LEADER_OR_FOLLOWER);
        self.wake_waiters();
    }
}
