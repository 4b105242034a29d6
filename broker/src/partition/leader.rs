//! A leader's appends: produce with the idempotence and transaction checks, group commit
//! (appends queued while a write is in flight go to the log together in one write), and
//! transaction markers (`write_marker`: each written alone, in queue order, so markers and
//! produce keep one writer and one order).

use super::*;
use crate::base::ids::{ProducerEpoch, ProducerId};

impl Partition {
    /// Remembers a retriable refusal of a produce (nothing appended), see `gap_answer`.
    pub(super) fn note_refusal(&self, code: i16) {
        self.last_refusal.set(Some(Refusal {
            at_ms: now_ms(),
            code,
        }));
    }

    /// Produce: acks=all checks the ISR size first and waits for the ISR after appending;
    /// acks=0/1 answer once the batches are in the log.
    pub async fn produce(
        self: &Rc<Self>,
        batches: Vec<IncomingBatch>,
        acks: i16,
        timeout: Duration,
        on_appended: impl FnOnce(),
    ) -> AppendOutcome {
        if acks == -1 {
            let code = self.check_min_isr();
            if code != errors::NONE {
                self.note_refusal(code);
                return AppendOutcome::failed(code, self.log.log_start_offset());
            }
            // Bounded waiters: refused before appending (retriable, nothing written). Requests
            // already appending may still add theirs, so the list holds at most the bound plus
            // the append queue's.
            let full = {
                let mut waiters = self.ack_waiters.borrow_mut();
                if waiters.len() >= limits::PARTITION_ACK_WAITERS_MAX {
                    waiters.retain(|w| !w.reply.is_disconnected());
                }
                waiters.len() >= limits::PARTITION_ACK_WAITERS_MAX
            };
            if full {
                self.note_refusal(errors::REQUEST_TIMED_OUT);
                return AppendOutcome::queue_full(self.log.log_start_offset());
            }
        }
        let mut outcome = self.append(batches).await;
        on_appended();
        if acks == -1 && outcome.error_code == errors::NONE {
            let code = self.wait_committed(outcome.last_offset, timeout).await;
            if code != errors::NONE {
                outcome = AppendOutcome::failed(code, outcome.log_start_offset);
            }
        }
        outcome
    }

    /// Appends the batches of one produce request and waits until they are in the page cache
    /// (or were recognised as duplicates). Safe to call concurrently: appends are queued.
    /// Refused with NOT_LEADER_OR_FOLLOWER unless this broker leads and its lease is valid.
    pub async fn append(self: &Rc<Self>, batches: Vec<IncomingBatch>) -> AppendOutcome {
        self.enqueue(batches, None).await
    }

    /// Transaction coordinator: ends `producer_id`'s transaction on this partition with a
    /// COMMIT (`commit`) or ABORT marker, appended through the produce queue (leader only,
    /// NOT_LEADER_OR_FOLLOWER otherwise). Refused with INVALID_PRODUCER_EPOCH when the
    /// producer has a newer epoch here, TRANSACTION_COORDINATOR_FENCED when a newer coordinator
    /// epoch wrote a marker. A marker for a producer without an open transaction here is
    /// written all the same (it completes nothing). Answers once the marker is in the log;
    /// `base_offset` = `last_offset` = its offset. Like produce with acks=all, a caller that
    /// needs it replicated waits with `wait_committed(last_offset, timeout)`.
    pub async fn write_marker(
        self: &Rc<Self>,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> AppendOutcome {
        let marker = MarkerRequest {
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
        };
        self.enqueue(Vec::new(), Some(marker)).await
    }

    async fn enqueue(
        self: &Rc<Self>,
        batches: Vec<IncomingBatch>,
        marker: Option<MarkerRequest>,
    ) -> AppendOutcome {
        if !self.can_write() {
            self.note_refusal(errors::NOT_LEADER_OR_FOLLOWER);
            return AppendOutcome::failed(
                errors::NOT_LEADER_OR_FOLLOWER,
                self.log.log_start_offset(),
            );
        }
        let bytes: usize = batches.iter().map(|b| b.bytes.len()).sum();
        let records: i64 = batches
            .iter()
            .map(|b| i64::from(b.header.records_count))
            .sum();
        if self.pending.borrow().len() >= limits::PARTITION_APPEND_QUEUE_MAX {
            // Bounded queue: refused before appending (retriable, nothing written).
            self.note_refusal(errors::REQUEST_TIMED_OUT);
            return AppendOutcome::queue_full(self.log.log_start_offset());
        }
        let (tx, rx) = flume::bounded(1);
        self.pending.borrow_mut().push_back(PendingAppend {
            batches,
            marker,
            reply: tx,
        });
        if !self.writing.get() {
            self.writing.set(true);
            // The writer is a detached task so that a producer disconnecting mid-request cannot
            // cancel a write that other requests' batches share.
            let this = self.clone();
            crate::runtime::rt::spawn_detached(async move {
                while let Some(group) = this.take_pending() {
                    this.write_group(group).await;
                }
                this.writing.set(false);
            });
        }
        let outcome = rx
            .recv_async()
            .await
            .unwrap_or(AppendOutcome::failed(errors::KAFKA_STORAGE_ERROR, -1));
        if outcome.error_code == errors::NONE {
            let c = &self.counters;
            PartitionCounters::add(&c.bytes_in, bytes as u64);
            PartitionCounters::add(&c.records_in, records.max(0) as u64);
        }
        outcome
    }

    /// The next group to write: a marker alone, or every produce queued before the next marker.
    pub(super) fn take_pending(&self) -> Option<Vec<PendingAppend>> {
        let mut q = self.pending.borrow_mut();
        let n = match q.front()?.marker {
            Some(_) => 1,
            None => q.iter().take_while(|p| p.marker.is_none()).count(),
        };
        Some(q.drain(..n).collect())
    }

    /// Writes one marker (the write gate held, leadership checked). The producer state changes
    /// only once the marker is in the log; an ABORT's `.txnindex` entry follows it.
    async fn write_marker_locked(&self, p: PendingAppend, m: MarkerRequest) {
        let log_start = self.log.log_start_offset();
        let (id, epoch) = (ProducerId(m.producer_id), ProducerEpoch(m.producer_epoch));
        if let Err(code) = self
            .producers
            .borrow()
            .check_marker(id, epoch, m.coordinator_epoch)
        {
            let _ = p.reply.send(AppendOutcome::failed(code, log_start));
            return;
        }
        let append_time = if self.config().log_append_time {
            now_ms()
        } else {
            -1
        };
        let offset = self.log.log_end_offset();
        let mut bytes = batch::build_control_batch(
            m.producer_id,
            m.producer_epoch,
            m.commit,
            m.coordinator_epoch,
            now_ms(),
        );
        batch::assign_offset(&mut bytes, offset, self.leader_epoch());
        if append_time >= 0 {
            batch::set_log_append_time(&mut bytes, append_time);
        }
        let header = BatchHeader::parse(&bytes).expect("a built batch has a header");
        let metas = [BatchMeta::from_header(0, &header)];
        if let Err(e) = self.log.append(bytes, &metas).await {
            log::error!("marker append to {}-{} failed: {e}", self.topic, self.index);
            let _ = p.reply.send(AppendOutcome::failed(
                errors::KAFKA_STORAGE_ERROR,
                log_start,
            ));
            return;
        }
        let aborted = {
            let mut producers = self.producers.borrow_mut();
            producers
                .complete_txn(id, epoch, m.coordinator_epoch, m.commit, offset, now_ms())
                .filter(|done| done.aborted)
                .map(|done| aborted_entry(&producers, &done))
        };
        if let Some(entry) = aborted {
            // Derived data: a failure here is repaired from the log at the next open, provided
            // no snapshot past this marker makes that open trust the file.
            if let Err(e) = self.log.add_aborted_txns(&[entry]).await {
                log::error!(
                    "{}-{}: recording aborted transaction {entry:?}: {e}; no producer state \
                     snapshot until the partition is reopened",
                    self.topic,
                    self.index
                );
                self.snapshots.disable();
            }
        }
        self.snapshot_if_rolled();
        // The LSO may have moved (read-committed fetches wait on it) and followers have data.
        self.wake_waiters();
        self.maybe_advance_hw();
        let _ = p.reply.send(AppendOutcome {
            error_code: errors::NONE,
            base_offset: offset,
            last_offset: offset,
            log_append_time_ms: append_time,
            log_start_offset: self.log.log_start_offset(),
            queue_full: false,
        });
    }

    pub(super) async fn write_group(&self, mut group: Vec<PendingAppend>) {
        let _gate = self.write_gate.acquire_permit(1).await;
        // Leadership may have moved since these requests were queued: check where offsets are
        // assigned, and stamp the batches with the epoch checked here.
        if !self.can_write() {
            self.note_refusal(errors::NOT_LEADER_OR_FOLLOWER);
            let log_start = self.log.log_start_offset();
            for p in group {
                let _ = p.reply.send(AppendOutcome::failed(
                    errors::NOT_LEADER_OR_FOLLOWER,
                    log_start,
                ));
            }
            return;
        }
        if let Some(m) = group.first().and_then(|p| p.marker) {
            let p = group.pop().expect("a marker is written alone");
            return self.write_marker_locked(p, m).await;
        }
        let config = self.config();
        let append_time = if config.log_append_time { now_ms() } else { -1 };
        let epoch = self.leader_epoch();
        let now = now_ms();
        let mut next_offset = self.log.log_end_offset();
        let total: usize = group
            .iter()
            .flat_map(|p| &p.batches)
            .map(|b| b.bytes.len())
            .sum();
        let mut buf = Vec::with_capacity(total);
        let mut metas = Vec::new();
        let mut pending_state = ProducerStateTable::default();
        // Per request: Ok((base, last) offsets to report) or Err(code).
        let mut outcomes: Vec<Result<(i64, i64), i16>> = Vec::with_capacity(group.len());
        {
            let producers = self.producers.borrow();
            for p in &group {
                let mut first: Option<i64> = None;
                let mut last: i64 = -1;
                let mut error = None;
                // A request's batches are all-or-nothing; check them all before taking any.
                let mark = (buf.len(), metas.len(), next_offset, pending_state.clone());
                for b in &p.batches {
                    producers
                        .fork_entry(&mut pending_state, producer_state::producer_of(&b.header).0);
                    match producers.check(&b.header, &pending_state) {
                        SequenceCheck::Reject(code) => {
                            error = Some(producer_state::gap_answer(
                                code,
                                self.last_refusal.get(),
                                now,
                            ));
                            break;
                        }
                        SequenceCheck::Duplicate { base_offset } => {
                            first.get_or_insert(base_offset);
                            last = last.max(base_offset);
                        }
                        SequenceCheck::Append => {
                            let start = buf.len();
                            buf.extend_from_slice(&b.bytes);
                            let bytes = &mut buf[start..];
                            batch::assign_offset(bytes, next_offset, epoch);
                            if append_time >= 0 {
                                batch::set_log_append_time(bytes, append_time);
                            }
                            let mut h = b.header;
                            h.base_offset = next_offset;
                            pending_state.observe(&h, now);
                            metas.push(BatchMeta {
                                position: start,
                                base_offset: next_offset,
                                last_offset: h.last_offset(),
                                max_timestamp: if append_time >= 0 {
                                    append_time
                                } else {
                                    h.max_timestamp
                                },
                            });
                            first.get_or_insert(next_offset);
                            last = last.max(h.last_offset());
                            next_offset = h.last_offset() + 1;
                        }
                    }
                }
                match error {
                    Some(code) => {
                        let (len, n, off, state) = mark;
                        buf.truncate(len);
                        metas.truncate(n);
                        next_offset = off;
                        pending_state = state;
                        outcomes.push(Err(code));
                    }
                    None => outcomes.push(Ok((first.unwrap_or(next_offset), last))),
                }
            }
        }
        let write_result = if metas.is_empty() {
            Ok(())
        } else {
            self.log.append(buf, &metas).await.map(|_| ())
        };
        let log_start = self.log.log_start_offset();
        match write_result {
            Ok(()) => {
                self.producers.borrow_mut().commit(pending_state);
                self.snapshot_if_rolled();
                if !metas.is_empty() {
                    // Followers read to the log end: wake their fetches. Consumers are woken
                    // when the high watermark moves (at once when the ISR is just us).
                    self.wake_waiters();
                    self.maybe_advance_hw();
                }
                for (p, outcome) in group.into_iter().zip(outcomes) {
                    let o = match outcome {
                        Ok((base, last)) => AppendOutcome {
                            error_code: errors::NONE,
                            base_offset: base,
                            last_offset: last,
                            log_append_time_ms: append_time,
                            log_start_offset: log_start,
                            queue_full: false,
                        },
                        Err(code) => AppendOutcome::failed(code, log_start),
                    };
                    let _ = p.reply.send(o);
                }
            }
            Err(e) => {
                log::error!("append to {}-{} failed: {e}", self.topic, self.index);
                for p in group {
                    let _ = p.reply.send(AppendOutcome::failed(
                        errors::KAFKA_STORAGE_ERROR,
                        log_start,
                    ));
                }
            }
        }
    }
}
