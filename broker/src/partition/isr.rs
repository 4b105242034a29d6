//! A leader's replication state: followers' fetch positions, the high watermark, ISR changes to
//! ask the controller for, and the acks=all waiters.

use super::*;

impl Partition {
    /// Leader: moves the high watermark to what the ISR allows (never backwards), then
    /// completes the acks=all waits it passed (`replication::acks_committed`) and wakes
    /// fetches (data became visible).
    pub(super) fn maybe_advance_hw(&self) {
        let (candidate, answer) = {
            let r = self.replica.borrow();
            if r.role != Role::Leader {
                return;
            }
            let maximal = r.isr_changes.maximal(&r.isr);
            (
                replication::isr_high_watermark(
                    r.local,
                    self.log.log_end_offset(),
                    &maximal,
                    &r.followers,
                ),
                replication::acks_committed(maximal.len(), self.min_insync()),
            )
        };
        let old = self.high_watermark.get();
        let hw = replication::advance_high_watermark(old, candidate);
        if hw <= old {
            return;
        }
        self.set_high_watermark(hw);
        {
            let mut waiters = self.ack_waiters.borrow_mut();
            let mut i = 0;
            while i < waiters.len() {
                if waiters[i].last_offset < hw {
                    let w = waiters.swap_remove(i);
                    let _ = w.reply.try_send(answer);
                } else {
                    i += 1;
                }
            }
        }
        self.wake_waiters();
    }

    pub(super) fn fail_ack_waiters(&self, code: i16) {
        for w in self.ack_waiters.borrow_mut().drain(..) {
            let _ = w.reply.try_send(code);
        }
    }

    fn min_insync(&self) -> usize {
        self.config.borrow().min_insync_replicas.max(1) as usize
    }

    /// acks=all, before appending: refuses when the ISR is smaller than `min.insync.replicas`.
    pub fn check_min_isr(&self) -> i16 {
        let min = self.min_insync();
        if self.replica.borrow().isr.len() < min {
            errors::NOT_ENOUGH_REPLICAS
        } else {
            errors::NONE
        }
    }

    /// acks=all, after appending: waits until the high watermark passes `last_offset`, at most
    /// `timeout` (REQUEST_TIMED_OUT); NOT_LEADER_OR_FOLLOWER if leadership is lost meanwhile,
    /// including when the leadership lease ends (cut off from ZooKeeper, another broker may be
    /// elected: the client must move to it now, not after its request timeout). The decision is
    /// `replication::acks_wait`, which the simulator (`sim/`) runs too.
    pub async fn wait_committed(&self, last_offset: i64, timeout: Duration) -> i16 {
        if self.high_watermark.get() > last_offset {
            let r = self.replica.borrow();
            let isr_len = r.isr_changes.maximal(&r.isr).len();
            return replication::acks_committed(isr_len, self.min_insync());
        }
        if self.role() != Role::Leader {
            return errors::NOT_LEADER_OR_FOLLOWER;
        }
        let (tx, rx) = flume::bounded(1);
        {
            let mut waiters = self.ack_waiters.borrow_mut();
            waiters.retain(|w| !w.reply.is_disconnected());
            waiters.push(AckWaiter {
                last_offset,
                reply: tx,
            });
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let time_left = deadline.saturating_duration_since(std::time::Instant::now());
            let wait = match replication::acks_wait(time_left, self.lease.remaining()) {
                replication::AcksWait::Answer(code) => return code,
                replication::AcksWait::AtMost(wait) => wait,
            };
            let answered = futures_lite::future::or(
                async {
                    Some(
                        rx.recv_async()
                            .await
                            .unwrap_or(errors::NOT_LEADER_OR_FOLLOWER),
                    )
                },
                async {
                    crate::runtime::rt::sleep(wait).await;
                    None
                },
            )
            .await;
            if let Some(code) = answered {
                return code;
            }
        }
    }

    /// Leader: a follower fetched at `fetch_offset`, so it holds everything below, and its log
    /// starts at `log_start_offset` (-1 unknown). Updates its progress and the high watermark.
    /// Unknown replicas are ignored.
    pub fn on_follower_fetch(
        &self,
        replica_id: BrokerId,
        fetch_offset: i64,
        log_start_offset: i64,
    ) {
        {
            let mut r = self.replica.borrow_mut();
            if r.role != Role::Leader {
                return;
            }
            let leo = self.log.log_end_offset();
            let Some(f) = r.followers.get_mut(&replica_id) else {
                return;
            };
            f.on_fetch(fetch_offset, leo, now_ms());
            if log_start_offset >= 0 {
                f.log_start_offset = Some(log_start_offset);
            }
        }
        self.maybe_advance_hw();
    }

    /// Leader: the low watermark DeleteRecords reports, the smallest log start offset over this
    /// log and the in-sync followers that reported theirs. Records below it are gone from
    /// every replica that could lead next.
    pub fn low_watermark(&self) -> i64 {
        let r = self.replica.borrow();
        r.isr
            .iter()
            .filter_map(|b| r.followers.get(b)?.log_start_offset)
            .fold(self.log.log_start_offset(), i64::min)
    }

    /// Leader: the ISR change to ask the control thread for now, if any (at most one in
    /// flight; it takes effect when the control thread's next snapshot is applied). Marks it
    /// in flight. Only brokers for which `is_alive` holds are proposed to join.
    pub fn isr_change_due(
        &self,
        lag_time_max_ms: i64,
        is_alive: impl Fn(BrokerId) -> bool,
    ) -> Option<IsrChange> {
        let now = now_ms();
        let mut guard = self.replica.borrow_mut();
        let r = &mut *guard;
        if r.role != Role::Leader {
            return None;
        }
        let isr = r.isr_changes.next(
            &LeaderView {
                local: r.local,
                replicas: &r.replicas,
                isr: &r.isr,
                followers: &r.followers,
                log_end_offset: self.log.log_end_offset(),
                high_watermark: self.high_watermark.get(),
                epoch_start_offset: r.epoch_start_offset,
            },
            r.zk_version,
            now,
            lag_time_max_ms,
            is_alive,
        )?;
        Some(IsrChange {
            isr,
            leader_epoch: r.leader_epoch,
            zk_version: r.zk_version,
        })
    }

    /// The control thread refused (or could not make) the ISR change asked at `zk_version`,
    /// answering `code` (`None`: no answer): allow another attempt, not before `retry_after`
    /// unless a new snapshot changes the partition's state first (then the next check decides
    /// afresh). Members it proposed keep counting unless the code proves nothing was written.
    pub fn isr_change_failed(&self, zk_version: i32, code: Option<i16>, retry_after: Duration) {
        let not_before =
            now_ms().saturating_add(retry_after.as_millis().min(i64::MAX as u128) as i64);
        self.replica
            .borrow_mut()
            .isr_changes
            .failed(zk_version, code, not_before);
    }
}
