//! One group's data (Kafka's `GroupMetadata` / `MemberMetadata`) and the bookkeeping that keeps
//! its derived fields consistent: protocol vote counts, the awaiting-join count, the static
//! member map, the leader. The rebalance rules that move a group between states live in
//! `manager::rebalance`; this module only changes data.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::api::{Effect, GroupState, JoinedMember, ReplyToken, TimerKey};
use crate::records::{GroupMetadataValue, MemberMetadataValue};
use crate::subscription::{subscribed_topics, CONSUMER_PROTOCOL_TYPE};

/// A deadline plus what the glue's timer for it is armed at.
///
/// Timers are lazy: moving a deadline later (every heartbeat does) emits nothing; the armed timer
/// fires at the old deadline and [`Timer::fire`] re-arms it at the new one. Only a deadline
/// earlier than the armed timer emits a new `ScheduleTimer`. So a member heartbeating every 3 s
/// with a 45 s session costs one timer per 45 s, not one per heartbeat.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timer {
    deadline: Option<i64>,
    armed: Option<i64>,
}

impl Timer {
    pub(crate) fn deadline(&self) -> Option<i64> {
        self.deadline
    }

    pub(crate) fn set(
        &mut self,
        deadline: i64,
        key: impl FnOnce() -> TimerKey,
        out: &mut Vec<Effect>,
    ) {
        self.deadline = Some(deadline);
        if !matches!(self.armed, Some(armed) if armed <= deadline) {
            self.armed = Some(deadline);
            out.push(Effect::ScheduleTimer {
                key: key(),
                deadline_ms: deadline,
            });
        }
    }

    /// Forgets the deadline; an armed timer still fires, harmlessly.
    pub(crate) fn clear(&mut self) {
        self.deadline = None;
    }

    /// The glue fired this timer at `now`. Returns true (and clears the deadline) if the
    /// deadline has passed; otherwise re-arms the timer if needed and returns false.
    pub(crate) fn fire(
        &mut self,
        now: i64,
        key: impl FnOnce() -> TimerKey,
        out: &mut Vec<Effect>,
    ) -> bool {
        if self.armed.is_some_and(|armed| armed <= now) {
            self.armed = None;
        }
        match self.deadline {
            None => false,
            Some(deadline) if deadline <= now => {
                self.deadline = None;
                true
            }
            Some(deadline) => {
                if self.armed.is_none() {
                    self.armed = Some(deadline);
                    out.push(Effect::ScheduleTimer {
                        key: key(),
                        deadline_ms: deadline,
                    });
                }
                false
            }
        }
    }
}

/// One member of a group.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// Assignor names with metadata, preference order, names unique.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// The JoinGroup waiting for the rebalance to complete ("awaiting join").
    pub join_token: Option<ReplyToken>,
    /// The SyncGroup waiting for the leader's assignment ("awaiting sync").
    pub sync_token: Option<ReplyToken>,
    /// Added in the current rebalance and not yet told its generation: its session timer is the
    /// new-member join timeout and it can expire while awaiting join.
    pub is_new: bool,
    pub session: Timer,
    /// Order of arrival in the group: Kafka picks "the first member" as leader.
    pub join_seq: u64,
}

impl Member {
    pub(crate) fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Same protocols, same order, same bytes (Kafka's `MemberMetadata.matches`).
    pub(crate) fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols.as_slice() == protocols
    }

    /// The member's most preferred protocol among `candidates`.
    fn vote<'a>(&'a self, candidates: &BTreeSet<&str>) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .find(|name| candidates.contains(name))
    }

    pub(crate) fn is_awaiting_join(&self) -> bool {
        self.join_token.is_some()
    }
}

/// A committed offset (Kafka's `OffsetAndMetadata`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Only from value-v1 records written by old clients' explicit retention.
    pub expire_timestamp_ms: Option<i64>,
}

/// One group: membership, generation, offsets, and its timers.
#[derive(Debug)]
pub(crate) struct Group {
    pub id: String,
    pub state: GroupState,
    /// When the group entered `state` (Kafka's `currentStateTimestamp`); unknown after loading a
    /// pre-v2 record.
    pub state_since_ms: Option<i64>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id -> member id.
    pub static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pub pending_members: BTreeMap<String, Timer>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pub pending_sync: BTreeSet<String>,
    /// Protocol name -> number of members listing it.
    pub supported_protocols: BTreeMap<String, usize>,
    pub num_awaiting_join: usize,
    /// A member arrived during the initial delay, which therefore extends once more.
    pub new_member_added: bool,
    pub join_timer: Timer,
    /// Some while the join phase is Kafka's `InitialDelayedJoin`: the rebalance time left after
    /// the current delay.
    pub initial_delay_remaining_ms: Option<i64>,
    pub sync_timer: Timer,
    pub sync_generation: i32,
    pub subscribed_topics: Option<BTreeSet<String>>,
    /// topic -> partition -> offset.
    pub offsets: BTreeMap<String, BTreeMap<i32, CommittedOffset>>,
}

impl Group {
    pub(crate) fn new(id: String, now_ms: i64) -> Self {
        Group {
            id,
            state: GroupState::Empty,
            state_since_ms: Some(now_ms),
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            supported_protocols: BTreeMap::new(),
            num_awaiting_join: 0,
            new_member_added: false,
            join_timer: Timer::default(),
            initial_delay_remaining_ms: None,
            sync_timer: Timer::default(),
            sync_generation: -1,
            subscribed_topics: None,
            offsets: BTreeMap::new(),
        }
    }

    pub(crate) fn member_key(&self, member_id: &str) -> TimerKey {
        TimerKey::Member {
            group_id: self.id.clone(),
            member_id: member_id.to_owned(),
        }
    }

    pub(crate) fn join_key(&self) -> TimerKey {
        TimerKey::Join {
            group_id: self.id.clone(),
        }
    }

    pub(crate) fn sync_key(&self) -> TimerKey {
        TimerKey::Sync {
            group_id: self.id.clone(),
        }
    }

    pub(crate) fn transition_to(&mut self, state: GroupState, now_ms: i64) {
        debug_assert!(
            state.can_follow(self.state),
            "group {}: illegal transition {:?} -> {:?}",
            self.id,
            self.state,
            state
        );
        self.state = state;
        self.state_since_ms = Some(now_ms);
    }

    pub(crate) fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    pub(crate) fn has_offsets(&self) -> bool {
        !self.offsets.is_empty()
    }

    /// A group that exists only because a request created it, and was never written to the log.
    pub(crate) fn is_trivially_empty(&self) -> bool {
        self.state == GroupState::Empty
            && self.generation_id == 0
            && self.members.is_empty()
            && self.pending_members.is_empty()
            && self.offsets.is_empty()
    }

    pub(crate) fn members_in_join_order(&self) -> Vec<&Member> {
        let mut v: Vec<&Member> = self.members.values().collect();
        v.sort_by_key(|m| m.join_seq);
        v
    }

    /// Adds a member; the first member of a group sets its protocol type, as in Kafka.
    pub(crate) fn add_member(&mut self, member: Member, protocol_type: &str) {
        if self.members.is_empty() {
            self.protocol_type = Some(protocol_type.to_owned());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        for (name, _) in &member.protocols {
            *self.supported_protocols.entry(name.clone()).or_insert(0) += 1;
        }
        if member.is_awaiting_join() {
            self.num_awaiting_join += 1;
        }
        if let Some(instance) = &member.group_instance_id {
            self.static_members
                .insert(instance.clone(), member.member_id.clone());
        }
        self.pending_members.remove(&member.member_id);
        self.members.insert(member.member_id.clone(), member);
    }

    /// Removes a member and fixes every derived field. The caller answers its tokens.
    pub(crate) fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let removed = self.members.remove(member_id);
        if let Some(m) = &removed {
            self.dec_protocols(&m.protocols);
            if m.is_awaiting_join() {
                self.num_awaiting_join -= 1;
            }
            if let Some(instance) = &m.group_instance_id {
                if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                    self.static_members.remove(instance);
                }
            }
        }
        if self.is_leader(member_id) {
            self.leader_id = self
                .members
                .values()
                .min_by_key(|m| m.join_seq)
                .map(|m| m.member_id.clone());
        }
        self.pending_members.remove(member_id);
        self.pending_sync.remove(member_id);
        removed
    }

    fn dec_protocols(&mut self, protocols: &[(String, Bytes)]) {
        for (name, _) in protocols {
            if let Some(count) = self.supported_protocols.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    self.supported_protocols.remove(name);
                }
            }
        }
    }

    /// Replaces a member's protocols and timeouts; sets or clears its awaiting-join token.
    /// Returns the token it replaces, which the caller must answer.
    pub(crate) fn update_member(
        &mut self,
        member_id: &str,
        protocols: Vec<(String, Bytes)>,
        rebalance_timeout_ms: i32,
        session_timeout_ms: i32,
        join_token: Option<ReplyToken>,
    ) -> Option<ReplyToken> {
        let m = self.members.get_mut(member_id)?;
        let old = std::mem::replace(&mut m.protocols, protocols);
        m.rebalance_timeout_ms = rebalance_timeout_ms;
        m.session_timeout_ms = session_timeout_ms;
        let was_awaiting = m.join_token.is_some();
        let replaced = std::mem::replace(&mut m.join_token, join_token);
        let now_awaiting = m.join_token.is_some();
        let new_names: Vec<String> = m.protocols.iter().map(|(n, _)| n.clone()).collect();
        self.dec_protocols(&old);
        for name in new_names {
            *self.supported_protocols.entry(name).or_insert(0) += 1;
        }
        match (was_awaiting, now_awaiting) {
            (false, true) => self.num_awaiting_join += 1,
            (true, false) => self.num_awaiting_join -= 1,
            _ => {}
        }
        replaced
    }

    /// Takes a member's awaiting-join token (to answer it), keeping the count right.
    pub(crate) fn take_join_token(&mut self, member_id: &str) -> Option<ReplyToken> {
        let token = self.members.get_mut(member_id)?.join_token.take();
        if token.is_some() {
            self.num_awaiting_join -= 1;
        }
        token
    }

    /// Kafka's `supportsProtocols`: an Empty group takes any non-empty protocol type and list;
    /// otherwise the type must match and one of the member's protocols must be supported by
    /// every current member.
    pub(crate) fn supports_protocols(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        if self.state == GroupState::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                self.supported_protocols.get(name).copied().unwrap_or(0) == self.members.len()
            })
    }

    /// Kafka's `selectProtocol`: among protocols every member supports, each member votes for
    /// its most preferred; most votes wins. Ties (Kafka leaves them to hash order) go to the
    /// protocol whose first vote came from the earliest-joined member.
    pub(crate) fn select_protocol(&self) -> Option<String> {
        let n = self.members.len();
        let candidates: BTreeSet<&str> = self
            .supported_protocols
            .iter()
            .filter(|&(_, &count)| count == n)
            .map(|(name, _)| name.as_str())
            .collect();
        let mut tally: Vec<(&str, usize)> = Vec::new();
        for m in self.members_in_join_order() {
            if let Some(vote) = m.vote(&candidates) {
                match tally.iter_mut().find(|(name, _)| *name == vote) {
                    Some((_, count)) => *count += 1,
                    None => tally.push((vote, 1)),
                }
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, count) in tally {
            if !matches!(best, Some((_, c)) if c >= count) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_owned())
    }

    /// Kafka's `hasAllMembersJoined`.
    pub(crate) fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.num_awaiting_join && self.pending_members.is_empty()
    }

    /// The longest rebalance timeout among members (Kafka's `rebalanceTimeoutMs`).
    pub(crate) fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms.max(0)))
            .max()
            .unwrap_or(0)
    }

    /// Kafka's `maybeElectNewJoinedLeader`: keep the leader if it rejoined, else pick the first
    /// member that did. False if nobody rejoined (or there is no leader).
    pub(crate) fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader_id.as_deref() else {
            return false;
        };
        if self
            .members
            .get(leader)
            .is_some_and(Member::is_awaiting_join)
        {
            return true;
        }
        let joined = self
            .members
            .values()
            .filter(|m| m.is_awaiting_join())
            .min_by_key(|m| m.join_seq)
            .map(|m| m.member_id.clone());
        match joined {
            Some(id) => {
                self.leader_id = Some(id);
                true
            }
            None => false,
        }
    }

    /// Kafka's `computeSubscribedTopics`: the union of every member's consumer subscription, or
    /// None if the group is not a consumer group or any subscription does not parse.
    pub(crate) fn compute_subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) || self.members.is_empty()
        {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            topics.extend(subscribed_topics(&m.metadata(protocol))?);
        }
        Some(topics)
    }

    /// Unknown subscriptions count as subscribed to everything, as in Kafka.
    pub(crate) fn is_subscribed_to(&self, topic: &str) -> bool {
        match &self.subscribed_topics {
            Some(topics) => topics.contains(topic),
            None => true,
        }
    }

    /// The leader's view of the members in a JoinGroup response.
    pub(crate) fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        self.members_in_join_order()
            .into_iter()
            .map(|m| JoinedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    /// The group metadata record of the current generation.
    pub(crate) fn metadata_value(&self) -> GroupMetadataValue {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            current_state_timestamp: self.state_since_ms.unwrap_or(-1),
            members: self
                .members_in_join_order()
                .into_iter()
                .map(|m| MemberMetadataValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout: m.rebalance_timeout_ms,
                    session_timeout: m.session_timeout_ms,
                    subscription: m.metadata(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Checks that derived fields agree with the members; `Err` names the first violation.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let fail = |what: String| Err(format!("group {}: {what}", self.id));
        use GroupState::*;
        if self.state == Dead {
            return fail("a Dead group is still registered".into());
        }
        match &self.leader_id {
            None if !self.members.is_empty() => return fail("members but no leader".into()),
            Some(l) if !self.members.contains_key(l) => {
                return fail(format!("leader {l} is not a member"))
            }
            _ => {}
        }
        let awaiting = self
            .members
            .values()
            .filter(|m| m.is_awaiting_join())
            .count();
        if awaiting != self.num_awaiting_join {
            return fail(format!(
                "awaiting-join count {} but {awaiting} members await",
                self.num_awaiting_join
            ));
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for m in self.members.values() {
            for (name, _) in &m.protocols {
                *counts.entry(name.clone()).or_insert(0) += 1;
            }
        }
        if counts != self.supported_protocols {
            return fail("protocol counts disagree with members".into());
        }
        let statics: BTreeMap<String, String> = self
            .members
            .values()
            .filter_map(|m| {
                m.group_instance_id
                    .clone()
                    .map(|i| (i, m.member_id.clone()))
            })
            .collect();
        if statics != self.static_members {
            return fail("static member map disagrees with members".into());
        }
        if let Some(id) = self
            .pending_members
            .keys()
            .find(|id| self.members.contains_key(*id))
        {
            return fail(format!("{id} is both pending and a member"));
        }
        if let Some(id) = self
            .pending_sync
            .iter()
            .find(|id| !self.members.contains_key(*id))
        {
            return fail(format!("{id} awaits sync but is not a member"));
        }
        let has_sync = self.members.values().any(|m| m.sync_token.is_some());
        match self.state {
            Empty => {
                if !self.members.is_empty() {
                    return fail("Empty with members".into());
                }
                if self.join_timer.deadline().is_some() {
                    return fail("Empty with a join deadline".into());
                }
            }
            PreparingRebalance => {
                if has_sync {
                    return fail("PreparingRebalance with a member awaiting sync".into());
                }
                if self.join_timer.deadline().is_none() {
                    return fail("PreparingRebalance without a join deadline".into());
                }
            }
            CompletingRebalance | Stable => {
                if self.members.is_empty() || self.protocol_name.is_none() {
                    return fail(format!("{:?} without members or protocol", self.state));
                }
                if self.num_awaiting_join != 0 {
                    return fail(format!("{:?} with a member awaiting join", self.state));
                }
                if self.state == Stable && has_sync {
                    return fail("Stable with a member awaiting sync".into());
                }
                let protocol = self.protocol_name.as_deref().unwrap_or_default();
                if let Some(m) = self
                    .members
                    .values()
                    .find(|m| !m.protocols.iter().any(|(n, _)| n == protocol))
                {
                    return fail(format!("{} does not support {protocol}", m.member_id));
                }
            }
            Dead => {}
        }
        if self.generation_id < 0 {
            return fail("negative generation".into());
        }
        Ok(())
    }
}
