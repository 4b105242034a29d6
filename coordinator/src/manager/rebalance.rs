//! The rebalance protocol's transitions, shared by every input: preparing a rebalance,
//! completing the join phase into a new generation, propagating the leader's assignment,
//! removing members, and the timer deadlines (session, join phase, pending sync).
//!
//! These follow Kafka's `GroupCoordinator` (`prepareRebalance`, `onCompleteJoin`,
//! `InitialDelayedJoin`, `DelayedSync`, `removeMemberAndUpdateGroup`, ...) with Kafka's delayed
//! operations replaced by deadlines and [`Timer`](crate::group::Timer)s.

use crate::api::{GroupState, JoinResult, SyncResult, TimerKey};
use crate::codes;
use crate::group::Group;
use crate::records::group_metadata_key;
use crate::{Effect, Record};

use super::Cx;

/// When a join phase ends and only static members that did not rejoin are left, wait at least
/// this long before looking again, so a zero rebalance timeout cannot spin the shard.
const MIN_REJOIN_WAIT_MS: i64 = 1_000;

fn member_key(group_id: &str, member_id: &str) -> TimerKey {
    TimerKey::Member {
        group_id: group_id.to_owned(),
        member_id: member_id.to_owned(),
    }
}

impl Group {
    /// Kafka's `completeAndScheduleNextExpiration`: the member's session now ends `timeout_ms`
    /// from now.
    pub(crate) fn schedule_session(&mut self, cx: &mut Cx<'_>, member_id: &str, timeout_ms: i64) {
        let Group { id, members, .. } = self;
        if let Some(m) = members.get_mut(member_id) {
            m.session.set(
                cx.now.saturating_add(timeout_ms),
                || member_key(id, member_id),
                cx.out,
            );
        }
    }

    /// Refreshes the session with the member's own session timeout.
    pub(crate) fn refresh_session(&mut self, cx: &mut Cx<'_>, member_id: &str) {
        if let Some(timeout) = self
            .members
            .get(member_id)
            .map(|m| i64::from(m.session_timeout_ms))
        {
            self.schedule_session(cx, member_id, timeout);
        }
    }

    pub(crate) fn persist_metadata(&self, cx: &mut Cx<'_>) {
        cx.out.push(Effect::Persist(Record {
            key: group_metadata_key(&self.id),
            value: Some(self.metadata_value().encode()),
        }));
    }

    /// Kafka's `maybePrepareRebalance`.
    pub(crate) fn maybe_prepare_rebalance(&mut self, cx: &mut Cx<'_>) {
        if GroupState::PreparingRebalance.can_follow(self.state) {
            self.prepare_rebalance(cx);
        }
    }

    /// Kafka's `prepareRebalance`: cancel waiting syncs, open a join phase. From Empty the phase
    /// is the initial delay (`group.initial.rebalance.delay.ms`, extended while members keep
    /// arriving, bounded by the rebalance timeout); otherwise it is the rebalance timeout and
    /// ends early once every member has rejoined.
    pub(crate) fn prepare_rebalance(&mut self, cx: &mut Cx<'_>) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_and_propagate_assignment_error(cx, codes::REBALANCE_IN_PROGRESS);
        }
        self.pending_sync.clear();
        self.sync_timer.clear();
        let rebalance_timeout = self.rebalance_timeout_ms();
        let from_empty = self.state == GroupState::Empty;
        self.transition_to(GroupState::PreparingRebalance, cx.now);
        self.new_member_added = false;
        if from_empty {
            let delay = i64::from(cx.config.group_initial_rebalance_delay_ms);
            self.initial_delay_remaining_ms = Some((rebalance_timeout - delay).max(0));
            let key = self.join_key();
            self.join_timer
                .set(cx.now.saturating_add(delay), || key, cx.out);
            if delay == 0 {
                // Kafka's zero-delay InitialDelayedJoin expires on the next purgatory tick;
                // doing it now is the same without a round trip through the glue.
                self.join_timer.clear();
                self.join_deadline_reached(cx);
            }
        } else {
            self.initial_delay_remaining_ms = None;
            let key = self.join_key();
            self.join_timer
                .set(cx.now.saturating_add(rebalance_timeout), || key, cx.out);
            self.try_complete_join(cx);
        }
    }

    /// Kafka's `tryCompleteJoin` (the initial delay never completes early).
    pub(crate) fn try_complete_join(&mut self, cx: &mut Cx<'_>) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay_remaining_ms.is_none()
            && self.has_all_members_joined()
        {
            self.complete_join(cx);
        }
    }

    /// The join phase's deadline passed (Kafka's `InitialDelayedJoin.onComplete` /
    /// `DelayedJoin.onExpiration`).
    pub(crate) fn join_deadline_reached(&mut self, cx: &mut Cx<'_>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(remaining) = self.initial_delay_remaining_ms {
            let delay = i64::from(cx.config.group_initial_rebalance_delay_ms).min(remaining);
            if self.new_member_added && delay > 0 {
                self.new_member_added = false;
                self.initial_delay_remaining_ms = Some((remaining - delay).max(0));
                let key = self.join_key();
                self.join_timer
                    .set(cx.now.saturating_add(delay), || key, cx.out);
                return;
            }
        }
        self.complete_join(cx);
    }

    /// Kafka's `onCompleteJoin`: drop dynamic members that did not rejoin, pick the leader,
    /// start the next generation and answer every waiting JoinGroup.
    pub(crate) fn complete_join(&mut self, cx: &mut Cx<'_>) {
        let not_rejoined: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.is_awaiting_join() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in not_rejoined {
            if let Some(m) = self.remove_member(&member_id) {
                if let Some(token) = m.sync_token {
                    cx.sync_reply(token, SyncResult::error(codes::UNKNOWN_MEMBER_ID));
                }
            }
        }
        self.join_timer.clear();
        self.initial_delay_remaining_ms = None;
        self.new_member_added = false;

        if !self.members.is_empty() && !self.maybe_elect_new_joined_leader() {
            // Only static members that have not rejoined are left: give them another
            // rebalance timeout; their sessions expire them if they never come back.
            let wait = self.rebalance_timeout_ms().max(MIN_REJOIN_WAIT_MS);
            let key = self.join_key();
            self.join_timer
                .set(cx.now.saturating_add(wait), || key, cx.out);
            return;
        }

        self.init_next_generation(cx);
        if self.state == GroupState::Empty {
            self.persist_metadata(cx);
            return;
        }
        let leader = self.leader_id.clone().unwrap_or_default();
        let leader_view = self.joined_members();
        let ids: Vec<String> = self
            .members_in_join_order()
            .into_iter()
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in &ids {
            if let Some(token) = self.take_join_token(member_id) {
                let members = if *member_id == leader {
                    leader_view.clone()
                } else {
                    Vec::new()
                };
                let result = JoinResult {
                    error_code: codes::NONE,
                    generation_id: self.generation_id,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    leader: leader.clone(),
                    skip_assignment: false,
                    member_id: member_id.clone(),
                    members,
                };
                cx.join_reply(token, result);
            }
            self.refresh_session(cx, member_id);
            if let Some(m) = self.members.get_mut(member_id) {
                m.is_new = false;
            }
            self.pending_sync.insert(member_id.clone());
        }
        self.sync_generation = self.generation_id;
        let deadline = cx.now.saturating_add(self.rebalance_timeout_ms());
        let key = self.sync_key();
        self.sync_timer.set(deadline, || key, cx.out);
    }

    /// Kafka's `initNextGeneration`.
    fn init_next_generation(&mut self, cx: &mut Cx<'_>) {
        self.generation_id = self.generation_id.saturating_add(1);
        self.pending_sync.clear();
        if self.members.is_empty() {
            self.protocol_name = None;
            self.subscribed_topics = None;
            self.transition_to(GroupState::Empty, cx.now);
        } else {
            // Every member was admitted only if it shared a protocol with all others, so a
            // candidate exists; the fallback keeps the group usable if that ever breaks.
            let selected = self.select_protocol().or_else(|| {
                debug_assert!(false, "group {}: no common protocol", self.id);
                self.members_in_join_order()
                    .first()
                    .and_then(|m| m.protocols.first())
                    .map(|(name, _)| name.clone())
            });
            self.protocol_name = selected;
            self.subscribed_topics = self.compute_subscribed_topics();
            self.transition_to(GroupState::CompletingRebalance, cx.now);
        }
    }

    /// Kafka's `resetAndPropagateAssignmentError`.
    pub(crate) fn reset_and_propagate_assignment_error(&mut self, cx: &mut Cx<'_>, error: i16) {
        for m in self.members.values_mut() {
            m.assignment = bytes::Bytes::new();
        }
        self.propagate_assignment(cx, error);
    }

    /// Kafka's `propagateAssignment`: answer every waiting SyncGroup and restart those members'
    /// sessions (their expiry was ignored while they waited).
    pub(crate) fn propagate_assignment(&mut self, cx: &mut Cx<'_>, error: i16) {
        let ids: Vec<String> = self
            .members_in_join_order()
            .into_iter()
            .filter(|m| m.sync_token.is_some())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in ids {
            let Some(m) = self.members.get_mut(&member_id) else {
                continue;
            };
            let Some(token) = m.sync_token.take() else {
                continue;
            };
            let result = if error == codes::NONE {
                SyncResult {
                    error_code: codes::NONE,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment: m.assignment.clone(),
                }
            } else {
                SyncResult::error(error)
            };
            cx.sync_reply(token, result);
            self.refresh_session(cx, &member_id);
        }
    }

    /// Kafka's `removeMemberAndUpdateGroup`: a waiting JoinGroup or SyncGroup of the member is
    /// answered with UNKNOWN_MEMBER_ID, then the group rebalances (or completes its join phase).
    pub(crate) fn remove_member_and_update(&mut self, cx: &mut Cx<'_>, member_id: &str) {
        let Some(m) = self.remove_member(member_id) else {
            return;
        };
        if let Some(token) = m.join_token {
            cx.join_reply(token, JoinResult::error(codes::UNKNOWN_MEMBER_ID, ""));
        }
        if let Some(token) = m.sync_token {
            cx.sync_reply(token, SyncResult::error(codes::UNKNOWN_MEMBER_ID));
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {}
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(cx)
            }
            GroupState::PreparingRebalance => self.try_complete_join(cx),
        }
    }

    /// Removes a pending (MEMBER_ID_REQUIRED) member; the join phase may now be complete.
    pub(crate) fn remove_pending_member(&mut self, cx: &mut Cx<'_>, member_id: &str) {
        self.pending_members.remove(member_id);
        if self.state == GroupState::PreparingRebalance {
            self.try_complete_join(cx);
        }
    }

    /// A member timer fired: a session (or new-member join timeout) or a pending member's expiry.
    pub(crate) fn on_member_timer(&mut self, cx: &mut Cx<'_>, member_id: &str) {
        let Group {
            id,
            members,
            pending_members,
            ..
        } = self;
        if let Some(m) = members.get_mut(member_id) {
            if !m.session.fire(cx.now, || member_key(id, member_id), cx.out) {
                return;
            }
            // Kafka's `hasSatisfiedHeartbeat`: members waiting for a JoinGroup or SyncGroup
            // answer are not expired (their session restarts when answered) unless they are
            // new, in which case the deadline is the new-member join timeout.
            let satisfied = !m.is_new && (m.join_token.is_some() || m.sync_token.is_some());
            if !satisfied {
                self.remove_member_and_update(cx, member_id);
            }
        } else if let Some(timer) = pending_members.get_mut(member_id) {
            if timer.fire(cx.now, || member_key(id, member_id), cx.out) {
                self.remove_pending_member(cx, member_id);
            }
        }
    }

    /// Kafka's `onExpirePendingSync`: members of the generation that never sent SyncGroup
    /// within the rebalance timeout are removed and the group rebalances.
    pub(crate) fn sync_deadline_reached(&mut self, cx: &mut Cx<'_>) {
        if self.sync_generation != self.generation_id
            || !matches!(
                self.state,
                GroupState::CompletingRebalance | GroupState::Stable
            )
            || self.pending_sync.is_empty()
        {
            return;
        }
        let missing: Vec<String> = self.pending_sync.iter().cloned().collect();
        for member_id in missing {
            if let Some(m) = self.remove_member(&member_id) {
                if let Some(token) = m.join_token {
                    cx.join_reply(token, JoinResult::error(codes::UNKNOWN_MEMBER_ID, ""));
                }
                if let Some(token) = m.sync_token {
                    cx.sync_reply(token, SyncResult::error(codes::UNKNOWN_MEMBER_ID));
                }
            }
        }
        self.prepare_rebalance(cx);
    }
}
