//! A follower's side: appends of the leader's batches (with the transaction state their
//! transactional and control batches carry, so a follower that becomes leader has the right
//! LSO and aborted list), the leader epoch cache, and truncation (by leader epoch, to an
//! offset, or a restart at the leader's log start).

use super::*;

impl Partition {
    /// OffsetForLeaderEpoch on the leader: `(error, epoch, end offset)` for `leader_epoch`.
    pub fn end_offset_for_epoch(
        &self,
        current_leader_epoch: LeaderEpoch,
        requested: LeaderEpoch,
    ) -> (i16, LeaderEpoch, Offset) {
        let (role, ours) = {
            let r = self.replica.borrow();
            (r.role, r.leader_epoch)
        };
        let code = check_leader_epoch(ours, current_leader_epoch.0);
        if code != errors::NONE {
            return (code, LeaderEpoch::NONE, Offset::NONE);
        }
        if role != Role::Leader {
            return (
                errors::NOT_LEADER_OR_FOLLOWER,
                LeaderEpoch::NONE,
                Offset::NONE,
            );
        }
        let (epoch, end) = self
            .epoch_cache
            .borrow()
            .end_offset_for(requested, Offset(self.log.log_end_offset()));
        (errors::NONE, epoch, end)
    }

    /// Follower: the latest epoch in the local epoch cache.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epoch_cache.borrow().latest_epoch()
    }

    /// Follower: one step of truncation by leader epoch, given the leader's answer for our
    /// `asked` epoch. Returns true when the log now agrees with the leader's (as far as epochs
    /// tell). When the leader has none of our epochs the log is emptied down to its own log
    /// start; the next fetch then finds where the leader's log starts (OFFSET_OUT_OF_RANGE
    /// carries it) and the replica fetcher restarts the log there.
    pub async fn truncate_by_epoch(
        &self,
        asked: LeaderEpoch,
        leader: LeaderAnswer,
    ) -> Result<bool, StorageError> {
        let step = {
            let cache = self.epoch_cache.borrow();
            replication::truncation_step(&cache, asked, Offset(self.log.log_end_offset()), leader)
        };
        match step {
            replication::TruncationStep::Done(offset) => {
                self.truncate_to(offset.0).await?;
                self.forget_epochs_from(offset);
                Ok(true)
            }
            replication::TruncationStep::Again(offset) => {
                self.truncate_to(offset.0).await?;
                // Whether or not a batch was cut, the epochs starting at `offset` or later are
                // gone, so the next question is about an older epoch: the steps always end.
                self.forget_epochs_from(offset);
                Ok(false)
            }
            replication::TruncationStep::Restart => {
                self.truncate_to(self.log.log_start_offset()).await?;
                Ok(true)
            }
        }
    }

    /// After truncating to `offset`: drops epoch cache entries that start at or after it.
    /// `truncate_to` rebuilds the cache only when it cut a batch; an epoch this broker led
    /// without writing sits in the cache at the log end with no batch behind it, and must go
    /// when the truncation point is the log end itself.
    pub(super) fn forget_epochs_from(&self, offset: Offset) {
        self.epoch_cache
            .borrow_mut()
            .forget_from(offset, Offset(self.log.log_end_offset()));
    }

    /// Removes every batch at or after `offset` (whole batches) and forgets what they carried:
    /// epochs in the epoch cache, producer state (rebuilt from the newest producer state
    /// snapshot at or below the new end and the batches after it; the snapshots above the new
    /// end are deleted).
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, StorageError> {
        let _gate = self.write_gate.acquire_permit(1).await;
        if offset >= self.log.log_end_offset() {
            return Ok(self.log.log_end_offset());
        }
        let leo = self.log.log_end_offset();
        let end = self.log.truncate_to(offset).await?;
        log::info!(
            "{}-{}: truncated from {leo} to {end}",
            self.topic,
            self.index
        );
        self.after_truncation().await?;
        Ok(end)
    }

    /// Discards the whole log and restarts it empty at `offset` (a follower that shares nothing
    /// with its leader starts at the leader's log start).
    pub async fn restart_at(&self, offset: i64) -> Result<(), StorageError> {
        let _gate = self.write_gate.acquire_permit(1).await;
        log::info!(
            "{}-{}: discarding the log (end {}) and restarting at {offset}",
            self.topic,
            self.index,
            self.log.log_end_offset()
        );
        self.log.restart_at(offset).await?;
        self.after_truncation().await?;
        Ok(())
    }

    /// Transaction state (open transactions, the aborted list) is rebuilt as at open, from the
    /// newest snapshot left and the log after it, never rolled back piecemeal: simplest, and
    /// right whatever the truncation cut (a marker, the start of a transaction, both). A log
    /// left with nothing at or above its start starts with no producer state (Kafka's
    /// `truncateFullyAndStartAt`).
    pub(super) async fn after_truncation(&self) -> Result<(), StorageError> {
        self.reload_after_truncation().await?;
        let end = self.log.log_end_offset();
        if self.high_watermark.get() > end {
            self.set_high_watermark(end);
        }
        if self.high_watermark.get() < self.log.log_start_offset() {
            self.set_high_watermark(self.log.log_start_offset());
        }
        Ok(())
    }

    /// Follower: moves the log start offset up to the leader's (which DeleteRecords or the
    /// leader's retention moved), never past what is committed here, so that records deleted
    /// on the leader do not come back when this replica leads. Errors are logged: the next
    /// fetch tries again.
    pub async fn follow_log_start(&self, leader_log_start: i64) {
        let target = leader_log_start
            .min(self.high_watermark.get())
            .min(self.log.log_end_offset());
        if target <= self.log.log_start_offset() {
            return;
        }
        let _gate = self.write_gate.acquire_permit(1).await;
        if !matches!(self.role(), Role::Follower { .. }) {
            return;
        }
        if let Err(e) = self.log.delete_records_before(target).await {
            log::warn!(
                "{}-{}: moving the log start to the leader's {target}: {e}",
                self.topic,
                self.index
            );
        }
    }

    /// Follower: appends the leader's batches as they are (offsets and epochs preserved, CRC
    /// checked), which must start at the log end; a partial batch at the end of `records` (a
    /// fetch cut at its byte limit) is left for the next fetch. Then takes the leader's high
    /// watermark, bounded by the local log end.
    pub async fn append_as_follower(
        &self,
        records: &[u8],
        leader_hw: i64,
    ) -> Result<(), FollowerAppendError> {
        let _gate = self.write_gate.acquire_permit(1).await;
        if !matches!(self.role(), Role::Follower { .. }) {
            return Err(FollowerAppendError::NotFollower);
        }
        let mut metas = Vec::new();
        let mut headers = Vec::new();
        let mut controls = Vec::new();
        let mut pos = 0;
        while pos < records.len() {
            let total = match batch::peek_total_len(&records[pos..]) {
                None => break,
                Some(Ok(n)) => n,
                Some(Err(e)) => return Err(FollowerAppendError::Corrupt(e.to_string())),
            };
            if pos + total > records.len() {
                break;
            }
            let h = batch::validate(&records[pos..pos + total])
                .map_err(|e| FollowerAppendError::Corrupt(e.to_string()))?;
            metas.push(BatchMeta::from_header(pos, &h));
            controls.push(if h.is_control() {
                batch::control_record(&records[pos..pos + total])
            } else {
                None
            });
            headers.push(h);
            pos += total;
        }
        if !metas.is_empty() {
            let leo = self.log.log_end_offset();
            // A batch past the log end is a gap the leader's log cleaner left (compaction keeps
            // offsets, not every batch); one before it means the logs diverged.
            if metas[0].base_offset < leo {
                return Err(FollowerAppendError::OffsetMismatch {
                    expected: leo,
                    got: metas[0].base_offset,
                });
            }
            self.log
                .append(records[..pos].to_vec(), &metas)
                .await
                .map_err(FollowerAppendError::Storage)?;
            let aborted: Vec<AbortedTxn> = {
                let mut producers = self.producers.borrow_mut();
                let mut epochs = self.epoch_cache.borrow_mut();
                let mut aborted = Vec::new();
                let now = now_ms();
                for (h, control) in headers.iter().zip(controls) {
                    if let Some(done) = producers.observe_batch(h, control, now) {
                        if done.aborted {
                            aborted.push(aborted_entry(&producers, &done));
                        }
                    }
                    epochs.assign(LeaderEpoch(h.partition_leader_epoch), Offset(h.base_offset));
                }
                aborted
            };
            // Derived data: a failure is repaired from the log at the next open, provided no
            // snapshot past these markers makes that open trust the file.
            if let Err(e) = self.log.add_aborted_txns(&aborted).await {
                log::error!(
                    "{}-{}: recording aborted transactions: {e}; no producer state snapshot \
                     until the partition is reopened",
                    self.topic,
                    self.index
                );
                self.snapshots.disable();
            }
            self.snapshot_if_rolled();
        }
        let hw = replication::follower_high_watermark(
            self.high_watermark.get(),
            leader_hw,
            self.log.log_end_offset(),
        );
        if hw >= self.log.log_start_offset() {
            self.set_high_watermark(hw);
        }
        if !metas.is_empty() {
            self.wake_waiters();
        }
        Ok(())
    }
}
