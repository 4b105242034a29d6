//! Replication rules as plain functions of state: a leader's view of its followers (their log
//! end offsets and when they last caught up), the high watermark over the ISR, ISR shrink and
//! expand decisions, the leader epoch cache and the follower's truncation steps (KIP-101/279).
//! No I/O, no clock: callers pass `now_ms`. `partition` holds the state and
//! `replication::fetcher` drives the follower side; both live on the partition's shard.

use std::collections::HashMap;
use std::time::Duration;

use crate::base::errors;
use crate::base::ids::{BrokerId, LeaderEpoch, Offset};

/// What the leader knows of one follower in the current leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerState {
    /// The follower's log end offset (its last fetch offset); `None` until it fetched in this
    /// epoch, so that a follower's state from an earlier epoch never counts.
    pub log_end_offset: Option<i64>,
    /// Last time the follower was known to have everything the leader had.
    pub last_caught_up_ms: i64,
    pub last_fetch_ms: i64,
    /// The leader's log end offset when that follower fetched last.
    pub leader_leo_at_last_fetch: i64,
    /// The follower's log start offset as its last fetch reported it (`None` until then).
    pub log_start_offset: Option<i64>,
}

impl FollowerState {
    /// A follower's state when this broker becomes leader. The caught-up time starts at
    /// `now_ms` (as Kafka does), so an ISR member gets `replica.lag.time.max.ms` to show up.
    pub fn new(now_ms: i64) -> FollowerState {
        FollowerState {
            log_end_offset: None,
            last_caught_up_ms: now_ms,
            last_fetch_ms: now_ms,
            leader_leo_at_last_fetch: -1,
            log_start_offset: None,
        }
    }

    /// Applies one follower fetch at `fetch_offset` (which proves the follower holds everything
    /// below it) when the leader's log ends at `leader_leo`. Kafka's caught-up rule: a fetch
    /// at the leader's end means caught up now; a fetch at or past where the leader's log ended
    /// at the follower's previous fetch means it was caught up at that previous fetch.
    pub fn on_fetch(&mut self, fetch_offset: i64, leader_leo: i64, now_ms: i64) {
        if fetch_offset >= leader_leo {
            self.last_caught_up_ms = self.last_caught_up_ms.max(now_ms);
        } else if self.leader_leo_at_last_fetch >= 0
            && fetch_offset >= self.leader_leo_at_last_fetch
        {
            self.last_caught_up_ms = self.last_caught_up_ms.max(self.last_fetch_ms);
        }
        self.log_end_offset = Some(fetch_offset);
        self.leader_leo_at_last_fetch = leader_leo;
        self.last_fetch_ms = now_ms;
    }

    /// Kafka's `isCaughtUp`: at the leader's end, or caught up within the allowed lag.
    pub fn is_caught_up(&self, leader_leo: i64, now_ms: i64, lag_time_max_ms: i64) -> bool {
        self.log_end_offset == Some(leader_leo)
            || now_ms.saturating_sub(self.last_caught_up_ms) <= lag_time_max_ms
    }
}

/// The high watermark the ISR allows: the smallest log end offset over the ISR (the leader's
/// own is `leader_leo`). `None` while an ISR member has not fetched in this epoch: then nothing
/// new is known to be committed and the high watermark stays where it is.
pub fn isr_high_watermark(
    local: BrokerId,
    leader_leo: i64,
    isr: &[BrokerId],
    followers: &HashMap<BrokerId, FollowerState>,
) -> Option<i64> {
    let mut hw = leader_leo;
    for id in isr.iter().filter(|id| **id != local) {
        hw = hw.min(followers.get(id)?.log_end_offset?);
    }
    Some(hw)
}

/// The next high watermark: it never moves backwards while this broker leads.
pub fn advance_high_watermark(current: i64, candidate: Option<i64>) -> i64 {
    candidate.map_or(current, |c| c.max(current))
}

/// A follower's high watermark after a fetch answered with the leader's `leader_hw`: the
/// leader's, within our log, and never lower than ours. A new leader may not yet know how far
/// the previous one had committed (it learns its high watermark from its own followers), so
/// its answer can be lower than what this follower already had; what was committed stays
/// committed, and a consumer of this replica must not see the high watermark go back. (The
/// simulator found this: Kafka's followers take the leader's value as it is.)
pub fn follower_high_watermark(current: i64, leader_hw: i64, log_end_offset: i64) -> i64 {
    leader_hw.max(current).min(log_end_offset)
}

/// What a produce with acks=all, appended but not yet below the high watermark, does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcksWait {
    /// Answer the client with this code now.
    Answer(i16),
    /// Keep waiting for the high watermark, at most this long before deciding again.
    AtMost(Duration),
}

/// The acks=all waiter's rule, given the time left before the request's timeout and the time
/// left on the leadership lease (`None`: ended). A leader whose lease ended may already have
/// been replaced (cut off from ZooKeeper, its session expires and another replica is elected),
/// so it answers NOT_LEADER_OR_FOLLOWER at once and the client moves to the new leader, rather
/// than holding the request until its timeout (REQUEST_TIMED_OUT). A lease renewed meanwhile
/// just moves the next decision.
pub fn acks_wait(time_left: Duration, lease_left: Option<Duration>) -> AcksWait {
    match lease_left {
        None => AcksWait::Answer(errors::NOT_LEADER_OR_FOLLOWER),
        _ if time_left.is_zero() => AcksWait::Answer(errors::REQUEST_TIMED_OUT),
        Some(lease) => AcksWait::AtMost(time_left.min(lease)),
    }
}

/// The answer to an acks=all produce once the high watermark has passed its records, with
/// `isr_len` replicas in the (maximal) ISR holding them: NONE, or NOT_ENOUGH_REPLICAS_AFTER_APPEND
/// when the ISR shrank below `min.insync.replicas` after the append (Kafka's rule). The records
/// are committed, but on fewer replicas than the producer asked for; acknowledging them would
/// promise a durability that one failure can take away. (The simulator found this once it
/// could cut power.)
pub fn acks_committed(isr_len: usize, min_insync: usize) -> i16 {
    if isr_len >= min_insync {
        errors::NONE
    } else {
        errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND
    }
}

/// The ISR a leader counts on (Kafka's "maximal ISR", KIP-497): the ISR it knows and every
/// broker it has asked to add since. Between the ZooKeeper write of an expansion and the
/// snapshot that brings it back, ZooKeeper already names the new member in sync; were the
/// high watermark still computed over the old ISR, it could pass the new member's log end, and
/// if the leader then failed, the new member could be elected without records acknowledged
/// with acks=all. (The simulator found this.) A shrink counts the old, larger ISR until it
/// lands, which the current ISR already is.
pub fn maximal_isr(isr: &[BrokerId], proposed: &[BrokerId]) -> Vec<BrokerId> {
    let mut all = isr.to_vec();
    all.extend(proposed.iter().filter(|b| !isr.contains(b)));
    all
}

/// A leader's replication state, as the ISR decisions need it.
#[derive(Clone, Copy)]
pub struct LeaderView<'a> {
    pub local: BrokerId,
    pub replicas: &'a [BrokerId],
    pub isr: &'a [BrokerId],
    pub followers: &'a HashMap<BrokerId, FollowerState>,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    /// Where the current leader epoch started in the leader's log.
    pub epoch_start_offset: i64,
}

/// The ISR change a leader should ask for, if any. Shrinking comes first: ISR members (other
/// than the leader) not caught up for `lag_time_max_ms` go. Otherwise replicas outside the ISR
/// whose log end offset reached the high watermark and the start of the current epoch come in
/// (the latter so that a follower that has not yet truncated to this epoch cannot join), if
/// `is_alive` says they are registered: the controller refuses a dead broker, and asking again
/// and again until its last fetch is `lag_time_max_ms` old only floods the logs.
pub fn isr_change(
    v: &LeaderView<'_>,
    now_ms: i64,
    lag_time_max_ms: i64,
    is_alive: impl Fn(BrokerId) -> bool,
) -> Option<Vec<BrokerId>> {
    let lagging = |id: &BrokerId| {
        *id != v.local
            && !v
                .followers
                .get(id)
                .is_some_and(|f| f.is_caught_up(v.log_end_offset, now_ms, lag_time_max_ms))
    };
    if v.isr.iter().any(lagging) {
        return Some(v.isr.iter().copied().filter(|id| !lagging(id)).collect());
    }
    let joining: Vec<BrokerId> = v
        .replicas
        .iter()
        .copied()
        .filter(|id| *id != v.local && !v.isr.contains(id) && is_alive(*id))
        .filter(|id| {
            // A follower that stopped fetching (dead, paused) keeps its last offset here; it
            // must be fetching now to rejoin, or the leader and the controller (which drops
            // dead brokers from the ISR) would undo each other's change forever.
            v.followers.get(id).is_some_and(|f| {
                f.log_end_offset
                    .is_some_and(|leo| leo >= v.high_watermark && leo >= v.epoch_start_offset)
                    && now_ms - f.last_fetch_ms <= lag_time_max_ms
            })
        })
        .collect();
    if joining.is_empty() {
        return None;
    }
    let mut next = v.isr.to_vec();
    next.extend(joining);
    Some(next)
}

/// The ISR change a leader asks for, given the brokers it already asked to add at this version
/// (`proposed`, see `maximal_isr`): `isr_change` over the maximal ISR; or, when that needs no
/// change but an earlier proposal's outcome is unknown (the write failed without saying
/// whether it happened), the maximal ISR again, so that it lands or is refused for certain.
pub fn leader_isr_proposal(
    v: &LeaderView<'_>,
    proposed: &[BrokerId],
    now_ms: i64,
    lag_time_max_ms: i64,
    is_alive: impl Fn(BrokerId) -> bool,
) -> Option<Vec<BrokerId>> {
    let maximal = maximal_isr(v.isr, proposed);
    let over_maximal = LeaderView {
        isr: &maximal,
        ..*v
    };
    match isr_change(&over_maximal, now_ms, lag_time_max_ms, is_alive) {
        Some(next) => Some(next),
        None if maximal.len() != v.isr.len() => Some(maximal),
        None => None,
    }
}

/// A leader's bookkeeping of the ISR changes it asks for: at most one in flight (asked against
/// a znode version), the brokers it proposed to add at the current version (`maximal_isr`),
/// and the back-off after a refusal. The partition keeps one; so does the simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IsrChanges {
    pending: Option<i32>,
    proposed: Vec<BrokerId>,
    not_before_ms: i64,
}

impl IsrChanges {
    /// A new partition state arrived, at `new_version` (the one known before: `old_version`).
    /// A change in flight against another version is settled (it is in this state or never
    /// will be); a new version, role or epoch also ends a refusal's back-off and the proposed
    /// members.
    pub fn on_state(&mut self, old_version: i32, new_version: i32, role_or_epoch_changed: bool) {
        if self.pending.is_some_and(|v| v != new_version) || role_or_epoch_changed {
            self.pending = None;
        }
        if old_version != new_version || role_or_epoch_changed {
            self.not_before_ms = 0;
            self.proposed.clear();
        }
    }

    /// The ISR the high watermark is computed over (no copy when nothing is proposed, the
    /// usual case: this runs on every follower fetch and append).
    pub fn maximal<'a>(&self, isr: &'a [BrokerId]) -> std::borrow::Cow<'a, [BrokerId]> {
        if self.proposed.is_empty() {
            std::borrow::Cow::Borrowed(isr)
        } else {
            std::borrow::Cow::Owned(maximal_isr(isr, &self.proposed))
        }
    }

    /// The change to ask for now, if any (none while one is in flight or backing off); marks
    /// it in flight against `v`'s version `zk_version`, and counts its new members at once.
    pub fn next(
        &mut self,
        v: &LeaderView<'_>,
        zk_version: i32,
        now_ms: i64,
        lag_time_max_ms: i64,
        is_alive: impl Fn(BrokerId) -> bool,
    ) -> Option<Vec<BrokerId>> {
        if self.pending.is_some() || now_ms < self.not_before_ms {
            return None;
        }
        let isr = leader_isr_proposal(v, &self.proposed, now_ms, lag_time_max_ms, is_alive)?;
        self.pending = Some(zk_version);
        for &b in &isr {
            if !v.isr.contains(&b) && !self.proposed.contains(&b) {
                self.proposed.push(b);
            }
        }
        Some(isr)
    }

    /// The change asked against `zk_version` failed with `code` (`None`: no answer): another
    /// may be asked from `not_before_ms`. The proposed members stop counting only when the
    /// refusal proves that nothing was written (`nothing_written`).
    pub fn failed(&mut self, zk_version: i32, code: Option<i16>, not_before_ms: i64) {
        if self.pending != Some(zk_version) {
            return;
        }
        self.pending = None;
        self.not_before_ms = not_before_ms;
        if code.is_some_and(nothing_written) {
            self.proposed.clear();
        }
    }
}

/// Whether an ISR change's refusal proves that ZooKeeper was not changed: the control thread
/// found another leader or epoch, a newer version (INVALID_UPDATE_VERSION, also a lost
/// compare-and-swap), an unregistered joiner (INELIGIBLE_REPLICA) or an invalid ISR before
/// writing. REQUEST_TIMED_OUT (a ZooKeeper error on the write) leaves the outcome unknown.
pub fn nothing_written(code: i16) -> bool {
    matches!(
        code,
        errors::NOT_LEADER_OR_FOLLOWER
            | errors::INVALID_UPDATE_VERSION
            | errors::INELIGIBLE_REPLICA
            | errors::INVALID_REQUEST
            | errors::UNKNOWN_TOPIC_OR_PARTITION
    )
}

/// Where an epoch starts in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    pub start_offset: Offset,
}

/// The leader epoch cache: for each leader epoch that wrote to this log, the offset of its
/// first batch. Rebuilt from batch headers at open; epochs and start offsets both increase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` (a leader's first append or election, or a
    /// batch header read back). Only a newer epoch is recorded; entries that it contradicts
    /// (starting at or after it) go, as in Kafka's `LeaderEpochFileCache.assign`.
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) {
        if epoch.0 < 0 || self.latest_epoch().is_some_and(|e| e >= epoch) {
            return;
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }

    /// The end offset of `epoch` in this log: the start of the first later epoch, or the log
    /// end offset when no later epoch wrote here.
    pub fn end_of(&self, epoch: LeaderEpoch, log_end_offset: Offset) -> Offset {
        self.entries
            .iter()
            .find(|e| e.epoch > epoch)
            .map_or(log_end_offset, |e| e.start_offset)
    }

    /// The OffsetForLeaderEpoch answer for `requested`: the largest epoch at or below it and
    /// that epoch's end offset; `(LeaderEpoch::NONE, Offset::NONE)` when this log has no such
    /// epoch.
    pub fn end_offset_for(
        &self,
        requested: LeaderEpoch,
        log_end_offset: Offset,
    ) -> (LeaderEpoch, Offset) {
        match self.entries.iter().rev().find(|e| e.epoch <= requested) {
            Some(e) => (e.epoch, self.end_of(e.epoch, log_end_offset)),
            None => (LeaderEpoch::NONE, Offset::NONE),
        }
    }

    /// After truncating the log to `log_end_offset`: epochs that started at or after it are
    /// gone from the log.
    pub fn truncate_from_end(&mut self, log_end_offset: Offset) {
        self.entries.retain(|e| e.start_offset < log_end_offset);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// After a truncation step to `offset` left the log ending at `log_end_offset`: epochs that
    /// start at or after the point are gone, whether or not a batch was cut. An epoch this
    /// broker led without writing sits here at the log end with no batch behind it; truncating
    /// to the log end cuts nothing, and unless the entry goes, the next step asks about the
    /// same epoch again, forever.
    pub fn forget_from(&mut self, offset: Offset, log_end_offset: Offset) {
        self.truncate_from_end(offset.min(log_end_offset));
    }
}

/// One step of a follower's truncation by leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationStep {
    /// Truncate to this offset; the log then agrees with the leader's.
    Done(Offset),
    /// Truncate to this offset and ask again for the (older) latest epoch that is left.
    Again(Offset),
    /// The leader has none of our epochs: discard the log and restart at the leader's log
    /// start offset.
    Restart,
}

/// The leader's answer to OffsetForLeaderEpoch: the largest epoch it has at or below the one
/// asked about, and where that epoch ends in its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderAnswer {
    pub epoch: LeaderEpoch,
    pub end_offset: Offset,
}

/// Decides what to do with the leader's answer to the question "where does epoch `our_latest`
/// end?" (KIP-279). `our` is the follower's cache, `our_leo` its log end offset.
pub fn truncation_step(
    our: &EpochCache,
    our_latest: LeaderEpoch,
    our_leo: Offset,
    leader: LeaderAnswer,
) -> TruncationStep {
    let LeaderAnswer {
        epoch: leader_epoch,
        end_offset: leader_end,
    } = leader;
    if leader_epoch.0 < 0 || leader_end.0 < 0 {
        return TruncationStep::Restart;
    }
    if leader_epoch >= our_latest {
        return TruncationStep::Done(leader_end.min(our_leo));
    }
    // The leader never wrote in our latest epoch. Our log diverges after the end of the epoch
    // it answered with, wherever either side ended it first.
    let ours = our.end_of(leader_epoch, our_leo).min(our_leo);
    if our.entries().iter().any(|e| e.epoch == leader_epoch) {
        // We know that epoch too, so both logs agree up to that point: done (Kafka's rule).
        // This also ends the case of an epoch we led without writing anything: it sits in our
        // cache at our log end, the leader never saw it and answers with the epoch before.
        TruncationStep::Done(leader_end.min(ours))
    } else {
        // An epoch we never saw: cut where our latest older epoch ends and ask again.
        TruncationStep::Again(leader_end.min(ours))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[i32]) -> Vec<BrokerId> {
        BrokerId::list(ids)
    }

    fn follower(leo: Option<i64>, caught_up: i64) -> FollowerState {
        FollowerState {
            log_end_offset: leo,
            last_caught_up_ms: caught_up,
            last_fetch_ms: caught_up,
            leader_leo_at_last_fetch: leo.unwrap_or(-1),
            log_start_offset: None,
        }
    }

    #[test]
    fn high_watermark_is_the_smallest_isr_log_end() {
        let mut f = HashMap::new();
        f.insert(BrokerId(2), follower(Some(7), 0));
        f.insert(BrokerId(3), follower(Some(4), 0));
        assert_eq!(
            isr_high_watermark(BrokerId(1), 10, &ids(&[1, 2, 3]), &f),
            Some(4)
        );
        // A lagging replica outside the ISR does not hold it back.
        assert_eq!(
            isr_high_watermark(BrokerId(1), 10, &ids(&[1, 2]), &f),
            Some(7)
        );
        // Alone in the ISR: everything appended is committed (standalone).
        assert_eq!(
            isr_high_watermark(BrokerId(1), 10, &ids(&[1]), &HashMap::new()),
            Some(10)
        );
        // An ISR member that has not fetched in this epoch blocks any advance.
        f.insert(BrokerId(3), FollowerState::new(0));
        assert_eq!(
            isr_high_watermark(BrokerId(1), 10, &ids(&[1, 2, 3]), &f),
            None
        );
        assert_eq!(advance_high_watermark(5, None), 5);
        assert_eq!(advance_high_watermark(5, Some(3)), 5);
        assert_eq!(advance_high_watermark(5, Some(8)), 8);
    }

    #[test]
    fn follower_high_watermark_never_goes_back() {
        assert_eq!(follower_high_watermark(5, 8, 10), 8);
        assert_eq!(follower_high_watermark(5, 12, 10), 10);
        // A new leader that knows less: ours stays.
        assert_eq!(follower_high_watermark(76, 75, 76), 76);
        // Never past our log end (after a truncation the caller already lowered it).
        assert_eq!(follower_high_watermark(9, 3, 7), 7);
    }

    #[test]
    fn an_isr_expansion_counts_before_it_is_known() {
        let mut f = HashMap::new();
        f.insert(BrokerId(2), follower(Some(47), 0));
        f.insert(BrokerId(3), follower(Some(46), 0));
        // Broker 3 was asked into the ISR [1, 2]: the high watermark waits for it at once.
        let maximal = maximal_isr(&ids(&[1, 2]), &ids(&[1, 2, 3]));
        assert_eq!(maximal, ids(&[1, 2, 3]));
        assert_eq!(isr_high_watermark(BrokerId(1), 47, &maximal, &f), Some(46));
        assert_eq!(
            isr_high_watermark(BrokerId(1), 47, &ids(&[1, 2]), &f),
            Some(47)
        );
        assert_eq!(
            maximal_isr(&ids(&[1, 2, 3]), &ids(&[1, 3])),
            ids(&[1, 2, 3])
        );
        // The expansion's outcome is unknown and nothing else is due: ask for it again.
        let (all, two) = (ids(&[1, 2, 3]), ids(&[1, 2]));
        let v = view(&all, &two, &f, 47, 46, 0);
        assert_eq!(
            leader_isr_proposal(&v, &ids(&[3]), 0, 10_000, |_| true),
            Some(ids(&[1, 2, 3]))
        );
        // Broker 3 lags beyond the allowed time (2 is at the leader's end): the proposal
        // drops it (counted until now).
        assert_eq!(
            leader_isr_proposal(&v, &ids(&[3]), 20_000, 10_000, |_| true),
            Some(ids(&[1, 2]))
        );
        // Nothing proposed: the plain ISR decision.
        assert_eq!(
            leader_isr_proposal(&v, &[], 0, 10_000, |_| true),
            isr_change(&v, 0, 10_000, |_| true)
        );
        let full = view(&all, &all, &f, 47, 46, 0);
        assert_eq!(leader_isr_proposal(&full, &[], 0, 10_000, |_| true), None);
    }

    #[test]
    fn acks_need_min_insync_copies() {
        assert_eq!(acks_committed(2, 2), errors::NONE);
        assert_eq!(acks_committed(3, 2), errors::NONE);
        assert_eq!(
            acks_committed(1, 2),
            errors::NOT_ENOUGH_REPLICAS_AFTER_APPEND
        );
        assert_eq!(acks_committed(1, 1), errors::NONE);
    }

    #[test]
    fn acks_wait_rule() {
        let s = Duration::from_secs;
        assert_eq!(acks_wait(s(30), Some(s(4))), AcksWait::AtMost(s(4)));
        assert_eq!(acks_wait(s(3), Some(s(4))), AcksWait::AtMost(s(3)));
        // The lease ended: the client must move to the new leader now.
        assert_eq!(
            acks_wait(s(30), None),
            AcksWait::Answer(errors::NOT_LEADER_OR_FOLLOWER)
        );
        assert_eq!(
            acks_wait(Duration::ZERO, Some(s(4))),
            AcksWait::Answer(errors::REQUEST_TIMED_OUT)
        );
    }

    #[test]
    fn caught_up_rule() {
        let mut f = FollowerState::new(1_000);
        // At the leader's end: caught up now.
        f.on_fetch(10, 10, 2_000);
        assert_eq!(f.last_caught_up_ms, 2_000);
        // Behind now (leader at 15) but reached where the leader was at the previous fetch
        // (10): caught up as of that previous fetch.
        f.on_fetch(12, 15, 3_000);
        assert_eq!(f.last_caught_up_ms, 2_000);
        f.on_fetch(15, 20, 4_000);
        assert_eq!(f.last_caught_up_ms, 3_000);
        // Falling further behind moves nothing.
        f.on_fetch(16, 30, 5_000);
        assert_eq!(f.last_caught_up_ms, 3_000);
        assert_eq!(f.log_end_offset, Some(16));
        assert!(f.is_caught_up(30, 5_000, 2_000));
        assert!(!f.is_caught_up(30, 5_001, 2_000));
        assert!(f.is_caught_up(16, 99_999, 2_000));
    }

    fn view<'a>(
        replicas: &'a [BrokerId],
        isr: &'a [BrokerId],
        followers: &'a HashMap<BrokerId, FollowerState>,
        log_end_offset: i64,
        high_watermark: i64,
        epoch_start_offset: i64,
    ) -> LeaderView<'a> {
        LeaderView {
            local: BrokerId(1),
            replicas,
            isr,
            followers,
            log_end_offset,
            high_watermark,
            epoch_start_offset,
        }
    }

    #[test]
    fn isr_shrinks_lagging_members_and_expands_caught_up_ones() {
        let lag = 10_000;
        let mut f = HashMap::new();
        f.insert(BrokerId(2), follower(Some(50), 1_000));
        f.insert(BrokerId(3), follower(Some(100), 20_000));
        // Replica 2 last caught up at 1 s; at 20 s it lags beyond 10 s.
        assert_eq!(
            isr_change(
                &view(&ids(&[1, 2, 3]), &ids(&[1, 2, 3]), &f, 100, 50, 0),
                20_000,
                lag,
                |_| true
            ),
            Some(ids(&[1, 3]))
        );
        // Within the allowed lag: nothing changes.
        assert_eq!(
            isr_change(
                &view(&ids(&[1, 2, 3]), &ids(&[1, 2, 3]), &f, 100, 50, 0),
                11_000,
                lag,
                |_| true
            ),
            None
        );
        // Replica 3 outside the ISR, at the high watermark: it joins.
        assert_eq!(
            isr_change(
                &view(&ids(&[1, 2, 3]), &ids(&[1, 2]), &f, 100, 50, 0),
                11_000,
                lag,
                |_| true
            ),
            Some(ids(&[1, 2, 3]))
        );
        // ...but not before reaching the start of the current epoch.
        assert_eq!(
            isr_change(
                &view(&ids(&[1, 2, 3]), &ids(&[1, 2]), &f, 100, 50, 120),
                11_000,
                lag,
                |_| true
            ),
            None
        );
        // At the high watermark but silent for longer than the lag (dead, paused): stays out.
        assert_eq!(
            isr_change(
                &view(&ids(&[1, 2, 3]), &ids(&[1, 2]), &f, 100, 50, 0),
                30_001,
                lag,
                |_| true
            ),
            Some(ids(&[1]))
        );
        f.insert(BrokerId(2), follower(Some(50), 29_000));
        assert_eq!(
            isr_change(
                &view(&ids(&[1, 2, 3]), &ids(&[1, 2]), &f, 100, 50, 0),
                30_001,
                lag,
                |_| true
            ),
            None
        );
        f.insert(BrokerId(2), follower(Some(50), 1_000));
        // Below the high watermark: stays out.
        f.insert(BrokerId(3), follower(Some(40), 20_000));
        assert_eq!(
            isr_change(
                &view(&ids(&[1, 2, 3]), &ids(&[1, 2]), &f, 100, 50, 0),
                11_000,
                lag,
                |_| true
            ),
            None
        );
        // An ISR member that never fetched in this epoch goes after the lag time.
        let mut g = HashMap::new();
        g.insert(BrokerId(2), FollowerState::new(0));
        assert_eq!(
            isr_change(
                &view(&ids(&[1, 2]), &ids(&[1, 2]), &g, 0, 0, 0),
                5_000,
                lag,
                |_| true
            ),
            None
        );
        assert_eq!(
            isr_change(
                &view(&ids(&[1, 2]), &ids(&[1, 2]), &g, 5, 0, 0),
                10_001,
                lag,
                |_| true
            ),
            Some(ids(&[1]))
        );
        // A caught-up replica that is not registered (dead, shutting down) is not proposed.
        f.insert(BrokerId(3), follower(Some(100), 10_500));
        assert_eq!(
            isr_change(
                &view(&ids(&[1, 2, 3]), &ids(&[1, 2]), &f, 100, 50, 0),
                11_000,
                lag,
                |_| true
            ),
            Some(ids(&[1, 2, 3]))
        );
        assert_eq!(
            isr_change(
                &view(&ids(&[1, 2, 3]), &ids(&[1, 2]), &f, 100, 50, 0),
                11_000,
                lag,
                |id| id != BrokerId(3)
            ),
            None
        );
        // The leader itself never leaves.
        assert_eq!(
            isr_change(
                &view(&ids(&[1]), &ids(&[1]), &g, 5, 0, 0),
                99_999,
                lag,
                |_| true
            ),
            None
        );
    }

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        let mut c = EpochCache::default();
        for (e, s) in entries {
            c.assign(LeaderEpoch(*e), Offset(*s));
        }
        c
    }

    fn end_for(c: &EpochCache, requested: i32, leo: i64) -> (i32, i64) {
        let (epoch, end) = c.end_offset_for(LeaderEpoch(requested), Offset(leo));
        (epoch.0, end.0)
    }

    fn step(c: &EpochCache, latest: i32, leo: i64, epoch: i32, end: i64) -> TruncationStep {
        let leader = LeaderAnswer {
            epoch: LeaderEpoch(epoch),
            end_offset: Offset(end),
        };
        truncation_step(c, LeaderEpoch(latest), Offset(leo), leader)
    }

    #[test]
    fn epoch_cache_end_offsets() {
        let c = cache(&[(0, 0), (2, 10), (5, 30)]);
        assert_eq!(end_for(&c, 0, 40), (0, 10));
        // Epoch 1 never wrote here: the largest epoch below it, ending where epoch 2 starts.
        assert_eq!(end_for(&c, 1, 40), (0, 10));
        assert_eq!(end_for(&c, 2, 40), (2, 30));
        assert_eq!(end_for(&c, 4, 40), (2, 30));
        // The latest epoch ends at the log end.
        assert_eq!(end_for(&c, 5, 40), (5, 40));
        assert_eq!(end_for(&c, 9, 40), (5, 40));
        assert_eq!(end_for(&c, -1, 40), (-1, -1));
        assert_eq!(end_for(&cache(&[(3, 7)]), 2, 9), (-1, -1));
        assert_eq!(c.end_of(LeaderEpoch(1), Offset(40)), Offset(10));
        assert_eq!(c.end_of(LeaderEpoch(7), Offset(40)), Offset(40));
    }

    #[test]
    fn epoch_cache_assign_and_truncate() {
        let mut c = cache(&[(0, 0), (2, 10), (5, 30)]);
        // Older or equal epochs are ignored (batch headers read back repeat the latest).
        c.assign(LeaderEpoch(5), Offset(35));
        c.assign(LeaderEpoch(4), Offset(50));
        assert_eq!(c.latest_epoch(), Some(LeaderEpoch(5)));
        assert_eq!(c.entries().len(), 3);
        // A newer epoch starting below a recorded one replaces it.
        c.assign(LeaderEpoch(6), Offset(20));
        assert_eq!(
            c.entries(),
            &[
                EpochEntry {
                    epoch: LeaderEpoch(0),
                    start_offset: Offset(0)
                },
                EpochEntry {
                    epoch: LeaderEpoch(2),
                    start_offset: Offset(10)
                },
                EpochEntry {
                    epoch: LeaderEpoch(6),
                    start_offset: Offset(20)
                }
            ]
        );
        c.truncate_from_end(Offset(20));
        assert_eq!(c.latest_epoch(), Some(LeaderEpoch(2)));
        c.truncate_from_end(Offset(10));
        assert_eq!(c.latest_epoch(), Some(LeaderEpoch(0)));
        c.assign(LeaderEpoch(-1), Offset(0));
        assert_eq!(c.entries().len(), 1);
        c.clear();
        assert_eq!(c.latest_epoch(), None);
    }

    #[test]
    fn truncation_steps() {
        // Follower: epoch 1 from 0, epoch 3 from 20, log end 40.
        let ours = cache(&[(1, 0), (3, 20)]);
        // The leader knows epoch 3 and it ended at 25 there: cut at 25.
        assert_eq!(step(&ours, 3, 40, 3, 25), TruncationStep::Done(Offset(25)));
        // The leader has more of epoch 3 than we do: keep everything.
        assert_eq!(step(&ours, 3, 40, 3, 60), TruncationStep::Done(Offset(40)));
        // The leader never had epoch 3; its epoch 1 ended at 30, ours at 20: both logs agree
        // below 20, cut there and fetch.
        assert_eq!(step(&ours, 3, 40, 1, 30), TruncationStep::Done(Offset(20)));
        // Its epoch 2 (which we never saw) ended at 15: cut at 15.
        assert_eq!(step(&ours, 3, 40, 2, 15), TruncationStep::Again(Offset(15)));
        // It has none of our epochs.
        assert_eq!(step(&ours, 3, 40, -1, -1), TruncationStep::Restart);
        // Second round after cutting at 20: our latest is epoch 1, the leader agrees it ends
        // at 30, and our log ends at 20.
        let mut after = ours.clone();
        after.truncate_from_end(Offset(20));
        assert_eq!(after.latest_epoch(), Some(LeaderEpoch(1)));
        assert_eq!(step(&after, 1, 20, 1, 30), TruncationStep::Done(Offset(20)));
    }

    /// The rebalance collapse: a broker led epoch 5 without writing (the epoch sits in its
    /// cache at its log end, 100), then followed the new leader of epoch 6, which never saw
    /// epoch 5 and answers "epoch 0 ends at 100". The follower must be done at 100, not told to
    /// cut at its own log end and ask about epoch 5 again, forever.
    #[test]
    fn an_epoch_led_without_writes_ends_truncation() {
        let ours = cache(&[(0, 0), (5, 100)]);
        assert_eq!(
            step(&ours, 5, 100, 0, 100),
            TruncationStep::Done(Offset(100))
        );
        // Same when the leader has more of epoch 0 than we do.
        assert_eq!(
            step(&ours, 5, 100, 0, 130),
            TruncationStep::Done(Offset(100))
        );
    }
}
