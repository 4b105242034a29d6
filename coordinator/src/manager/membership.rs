//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup: Kafka's `handleJoinGroup`, `handleSyncGroup`,
//! `handleHeartbeat` and `handleLeaveGroup`, in the same order of checks so clients see the
//! same error for the same situation.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::api::{
    Effect, GroupState, HeartbeatRequest, JoinRequest, JoinResult, LeaveResult, LeavingMember,
    ReplyToken, SyncRequest, SyncResult,
};
use crate::codes;
use crate::config::{MAX_STRING_BYTES, MEMBER_ID_PREFIX_MAX_BYTES};
use crate::group::{Group, Member, Timer};
use crate::records::truncate_to;

use super::{remove_if_trivially_empty, Api, Cx, GroupManager};

/// How many generated member ids may collide with existing ones before giving up.
const MEMBER_ID_ATTEMPTS: usize = 8;

impl GroupManager {
    /// JoinGroup. The reply comes back as an [`Effect::JoinReply`] with `token`, either in the
    /// returned effects or from a later call (when the rebalance completes).
    pub fn join(&mut self, now_ms: i64, token: ReplyToken, req: JoinRequest) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(result) = self.join_inner(now_ms, token, &req, &mut out) {
            out.push(Effect::JoinReply(token, result));
        }
        out
    }

    fn join_inner(
        &mut self,
        now_ms: i64,
        token: ReplyToken,
        req: &JoinRequest,
        out: &mut Vec<Effect>,
    ) -> Option<JoinResult> {
        if let Some(code) = self.group_status_error(&req.group_id, Api::Join) {
            return Some(JoinResult::error(code, req.member_id.clone()));
        }
        if req.session_timeout_ms < self.config.group_min_session_timeout_ms
            || req.session_timeout_ms > self.config.group_max_session_timeout_ms
        {
            return Some(JoinResult::error(
                codes::INVALID_SESSION_TIMEOUT,
                req.member_id.clone(),
            ));
        }
        let protocols = match self.checked_protocols(req) {
            Ok(p) => p,
            Err(code) => return Some(JoinResult::error(code, req.member_id.clone())),
        };
        let is_unknown = req.member_id.is_empty();
        let GroupManager {
            config,
            member_ids,
            groups,
            next_join_seq,
            ..
        } = self;
        let mut cx = Cx {
            now: now_ms,
            config,
            out,
            member_ids: member_ids.as_mut(),
            next_join_seq,
        };
        if !groups.contains_key(&req.group_id) {
            // Kafka creates the group for a member without id; a member with an id cannot be
            // part of a group that does not exist.
            if !is_unknown {
                return Some(JoinResult::error(
                    codes::UNKNOWN_MEMBER_ID,
                    req.member_id.clone(),
                ));
            }
            groups.insert(
                req.group_id.clone(),
                Group::new(req.group_id.clone(), now_ms),
            );
        }
        let group = groups.get_mut(&req.group_id)?;
        let result = if !accept_joining_member(group, &cx, req) {
            if let Some(m) = group.remove_member(&req.member_id) {
                answer_removed(&mut cx, m, codes::UNKNOWN_MEMBER_ID);
            }
            Some(JoinResult::error(codes::GROUP_MAX_SIZE_REACHED, ""))
        } else if is_unknown {
            new_member_join(group, &mut cx, token, req, protocols)
        } else {
            current_member_join(group, &mut cx, token, req, protocols)
        };
        if group.state == GroupState::PreparingRebalance {
            group.try_complete_join(&mut cx);
        }
        remove_if_trivially_empty(groups, &req.group_id);
        result
    }

    /// Protocols without duplicate names (the first occurrence wins), within the size limits.
    fn checked_protocols(&self, req: &JoinRequest) -> Result<Vec<(String, Bytes)>, i16> {
        let too_long = |s: &str| s.len() > MAX_STRING_BYTES;
        if too_long(&req.protocol_type)
            || too_long(&req.client_id)
            || too_long(&req.client_host)
            || req.group_instance_id.as_deref().is_some_and(too_long)
            || req.protocols.len() > self.config.member_max_protocols
        {
            return Err(codes::INVALID_REQUEST);
        }
        let mut total = 0usize;
        let mut protocols: Vec<(String, Bytes)> = Vec::with_capacity(req.protocols.len());
        for (name, metadata) in &req.protocols {
            if too_long(name) {
                return Err(codes::INVALID_REQUEST);
            }
            total = total
                .saturating_add(name.len())
                .saturating_add(metadata.len());
            if !protocols.iter().any(|(n, _)| n == name) {
                protocols.push((name.clone(), metadata.clone()));
            }
        }
        if total > self.config.member_metadata_max_bytes {
            return Err(codes::INVALID_REQUEST);
        }
        Ok(protocols)
    }

    /// SyncGroup. The reply comes back as an [`Effect::SyncReply`] with `token`; followers wait
    /// for the leader's assignment.
    pub fn sync(&mut self, now_ms: i64, token: ReplyToken, req: SyncRequest) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(result) = self.sync_inner(now_ms, token, req, &mut out) {
            out.push(Effect::SyncReply(token, result));
        }
        out
    }

    fn sync_inner(
        &mut self,
        now_ms: i64,
        token: ReplyToken,
        req: SyncRequest,
        out: &mut Vec<Effect>,
    ) -> Option<SyncResult> {
        if let Some(code) = self.group_status_error(&req.group_id, Api::Sync) {
            // While loading, the rebalance in flight is lost; REBALANCE_IN_PROGRESS makes the
            // member rejoin without rediscovering the coordinator (older clients do not know
            // COORDINATOR_LOAD_IN_PROGRESS here).
            let code = if code == codes::COORDINATOR_LOAD_IN_PROGRESS {
                codes::REBALANCE_IN_PROGRESS
            } else {
                code
            };
            return Some(SyncResult::error(code));
        }
        let max_assignment = self.config.member_metadata_max_bytes;
        let GroupManager {
            config,
            member_ids,
            groups,
            next_join_seq,
            ..
        } = self;
        let mut cx = Cx {
            now: now_ms,
            config,
            out,
            member_ids: member_ids.as_mut(),
            next_join_seq,
        };
        let Some(group) = groups.get_mut(&req.group_id) else {
            return Some(SyncResult::error(codes::UNKNOWN_MEMBER_ID));
        };
        if let Some(code) =
            validate_current_member(group, &req.member_id, req.group_instance_id.as_deref())
        {
            return Some(SyncResult::error(code));
        }
        if req.generation_id != group.generation_id {
            return Some(SyncResult::error(codes::ILLEGAL_GENERATION));
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| group.protocol_type.as_ref() != Some(t))
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| group.protocol_name.as_ref() != Some(n))
        {
            return Some(SyncResult::error(codes::INCONSISTENT_GROUP_PROTOCOL));
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                Some(SyncResult::error(codes::UNKNOWN_MEMBER_ID))
            }
            GroupState::PreparingRebalance => Some(SyncResult::error(codes::REBALANCE_IN_PROGRESS)),
            GroupState::Stable => {
                group.pending_sync.remove(&req.member_id);
                let result = group.members.get(&req.member_id).map(|m| SyncResult {
                    error_code: codes::NONE,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    assignment: m.assignment.clone(),
                });
                group.refresh_session(&mut cx, &req.member_id);
                result
            }
            GroupState::CompletingRebalance => {
                let is_leader = group.is_leader(&req.member_id);
                if is_leader
                    && req
                        .assignments
                        .iter()
                        .any(|(id, a)| a.len() > max_assignment || id.len() > MAX_STRING_BYTES)
                {
                    return Some(SyncResult::error(codes::INVALID_REQUEST));
                }
                let member = group.members.get_mut(&req.member_id)?;
                if let Some(superseded) = member.sync_token.replace(token) {
                    cx.sync_reply(superseded, SyncResult::error(codes::REBALANCE_IN_PROGRESS));
                }
                group.pending_sync.remove(&req.member_id);
                if group.pending_sync.is_empty() {
                    group.sync_timer.clear();
                }
                if is_leader {
                    // Members the leader left out get an empty assignment, as in Kafka; for a
                    // member id listed twice the last entry wins.
                    let assignments: BTreeMap<String, Bytes> =
                        req.assignments.into_iter().collect();
                    for m in group.members.values_mut() {
                        m.assignment = assignments.get(&m.member_id).cloned().unwrap_or_default();
                    }
                    group.transition_to(GroupState::Stable, now_ms);
                    group.persist_metadata(&mut cx);
                    group.propagate_assignment(&mut cx, codes::NONE);
                }
                None
            }
        }
    }

    /// Heartbeat; returns the error code.
    pub fn heartbeat(&mut self, now_ms: i64, req: HeartbeatRequest) -> (i16, Vec<Effect>) {
        let mut out = Vec::new();
        if let Some(code) = self.group_status_error(&req.group_id, Api::Heartbeat) {
            // Kafka answers heartbeats blindly while loading: the member keeps its session
            // and learns about any rebalance once the group is loaded.
            let code = if code == codes::COORDINATOR_LOAD_IN_PROGRESS {
                codes::NONE
            } else {
                code
            };
            return (code, out);
        }
        let GroupManager {
            config,
            member_ids,
            groups,
            next_join_seq,
            ..
        } = self;
        let mut cx = Cx {
            now: now_ms,
            config,
            out: &mut out,
            member_ids: member_ids.as_mut(),
            next_join_seq,
        };
        let Some(group) = groups.get_mut(&req.group_id) else {
            return (codes::UNKNOWN_MEMBER_ID, out);
        };
        let code = if let Some(code) =
            validate_current_member(group, &req.member_id, req.group_instance_id.as_deref())
        {
            code
        } else if req.generation_id != group.generation_id {
            codes::ILLEGAL_GENERATION
        } else {
            match group.state {
                GroupState::Empty | GroupState::Dead => codes::UNKNOWN_MEMBER_ID,
                GroupState::CompletingRebalance | GroupState::Stable => {
                    group.refresh_session(&mut cx, &req.member_id);
                    codes::NONE
                }
                GroupState::PreparingRebalance => {
                    group.refresh_session(&mut cx, &req.member_id);
                    codes::REBALANCE_IN_PROGRESS
                }
            }
        };
        (code, out)
    }

    /// LeaveGroup (v3+ batch; v0-2 pass one member). Members may be named by member id, or by
    /// instance id alone (an admin removing a static member).
    pub fn leave(
        &mut self,
        now_ms: i64,
        group_id: &str,
        members: Vec<LeavingMember>,
    ) -> (LeaveResult, Vec<Effect>) {
        let mut out = Vec::new();
        if let Some(code) = self.group_status_error(group_id, Api::Leave) {
            let result = LeaveResult {
                error_code: code,
                members: Vec::new(),
            };
            return (result, out);
        }
        let GroupManager {
            config,
            member_ids,
            groups,
            next_join_seq,
            ..
        } = self;
        let mut cx = Cx {
            now: now_ms,
            config,
            out: &mut out,
            member_ids: member_ids.as_mut(),
            next_join_seq,
        };
        let Some(group) = groups.get_mut(group_id) else {
            let members = members
                .into_iter()
                .map(|m| (m, codes::UNKNOWN_MEMBER_ID))
                .collect();
            let result = LeaveResult {
                error_code: codes::NONE,
                members,
            };
            return (result, out);
        };
        let mut results = Vec::with_capacity(members.len());
        for leaving in members {
            let code = if leaving.member_id.is_empty() {
                match leaving
                    .group_instance_id
                    .as_ref()
                    .and_then(|i| group.static_members.get(i))
                    .cloned()
                {
                    Some(current) => {
                        group.remove_member_and_update(&mut cx, &current);
                        codes::NONE
                    }
                    None => codes::UNKNOWN_MEMBER_ID,
                }
            } else if group.pending_members.contains_key(&leaving.member_id) {
                group.remove_pending_member(&mut cx, &leaving.member_id);
                codes::NONE
            } else {
                match validate_current_member(
                    group,
                    &leaving.member_id,
                    leaving.group_instance_id.as_deref(),
                ) {
                    Some(code) => code,
                    None => {
                        group.remove_member_and_update(&mut cx, &leaving.member_id);
                        codes::NONE
                    }
                }
            };
            results.push((leaving, code));
        }
        remove_if_trivially_empty(groups, group_id);
        let result = LeaveResult {
            error_code: codes::NONE,
            members: results,
        };
        (result, out)
    }
}

/// Kafka's `validateCurrentMember`: a given instance id must map to this member id
/// (FENCED_INSTANCE_ID if it maps to another), and the member must exist.
pub(crate) fn validate_current_member(
    group: &Group,
    member_id: &str,
    group_instance_id: Option<&str>,
) -> Option<i16> {
    if let Some(instance) = group_instance_id {
        match group.static_members.get(instance) {
            Some(current) if current != member_id => return Some(codes::FENCED_INSTANCE_ID),
            Some(_) => {}
            None => return Some(codes::UNKNOWN_MEMBER_ID),
        }
    }
    if group.members.contains_key(member_id) {
        None
    } else {
        Some(codes::UNKNOWN_MEMBER_ID)
    }
}

/// Kafka's `acceptJoiningMember`. While rebalancing, the number of members that have rejoined is
/// what counts (so a lowered `group.max.size` shrinks the group); otherwise the group size. A
/// static member replacing its own previous incarnation does not grow the group and is always
/// accepted (Kafka counts it as new, which can refuse a restart at exactly the limit).
fn accept_joining_member(group: &Group, cx: &Cx<'_>, req: &JoinRequest) -> bool {
    let max = cx.config.group_max_size;
    let static_rejoin = req.member_id.is_empty()
        && req
            .group_instance_id
            .as_ref()
            .is_some_and(|i| group.static_members.contains_key(i));
    match group.state {
        GroupState::Empty | GroupState::Dead => true,
        GroupState::PreparingRebalance => {
            group
                .members
                .get(&req.member_id)
                .is_some_and(Member::is_awaiting_join)
                || group.num_awaiting_join < max
                || static_rejoin
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            group.members.contains_key(&req.member_id) || group.members.len() < max || static_rejoin
        }
    }
}

/// Answers the tokens of a member removed without the usual bookkeeping.
fn answer_removed(cx: &mut Cx<'_>, member: Member, code: i16) {
    if let Some(token) = member.join_token {
        cx.join_reply(token, JoinResult::error(code, ""));
    }
    if let Some(token) = member.sync_token {
        cx.sync_reply(token, SyncResult::error(code));
    }
}

/// Kafka's `doNewMemberJoinGroup`: a member without id.
fn new_member_join(
    group: &mut Group,
    cx: &mut Cx<'_>,
    token: ReplyToken,
    req: &JoinRequest,
    protocols: Vec<(String, Bytes)>,
) -> Option<JoinResult> {
    if !group.supports_protocols(&req.protocol_type, &protocols) {
        return Some(JoinResult::error(codes::INCONSISTENT_GROUP_PROTOCOL, ""));
    }
    let prefix = truncate_to(
        req.group_instance_id.as_deref().unwrap_or(&req.client_id),
        MEMBER_ID_PREFIX_MAX_BYTES,
    );
    let mut new_id = None;
    for _ in 0..MEMBER_ID_ATTEMPTS {
        let candidate = format!("{prefix}-{}", cx.member_ids.next_suffix());
        let candidate = truncate_to(&candidate, MAX_STRING_BYTES).to_owned();
        if !group.members.contains_key(&candidate)
            && !group.pending_members.contains_key(&candidate)
        {
            new_id = Some(candidate);
            break;
        }
    }
    let Some(new_id) = new_id else {
        // Only a broken id generator gets here; the client retries after rediscovery.
        return Some(JoinResult::error(codes::COORDINATOR_NOT_AVAILABLE, ""));
    };
    match &req.group_instance_id {
        Some(instance) => match group.static_members.get(instance).cloned() {
            Some(old_id) => {
                update_static_member_and_rebalance(group, cx, token, req, protocols, old_id, new_id)
            }
            None => {
                add_member_and_rebalance(group, cx, token, req, protocols, new_id);
                None
            }
        },
        None if req.require_known_member_id => {
            if group.pending_members.len() >= cx.config.group_max_pending_members {
                return Some(JoinResult::error(codes::GROUP_MAX_SIZE_REACHED, ""));
            }
            // The member must come back with this id; until then it holds up the join phase,
            // for at most its session timeout.
            let mut timer = Timer::default();
            let key = group.member_key(&new_id);
            timer.set(
                cx.now.saturating_add(i64::from(req.session_timeout_ms)),
                || key,
                cx.out,
            );
            group.pending_members.insert(new_id.clone(), timer);
            Some(JoinResult::error(codes::MEMBER_ID_REQUIRED, new_id))
        }
        None => {
            add_member_and_rebalance(group, cx, token, req, protocols, new_id);
            None
        }
    }
}

/// Kafka's `doCurrentMemberJoinGroup`: a member with an id (pending or known).
fn current_member_join(
    group: &mut Group,
    cx: &mut Cx<'_>,
    token: ReplyToken,
    req: &JoinRequest,
    protocols: Vec<(String, Bytes)>,
) -> Option<JoinResult> {
    let member_id = &req.member_id;
    if !group.supports_protocols(&req.protocol_type, &protocols) {
        return Some(JoinResult::error(
            codes::INCONSISTENT_GROUP_PROTOCOL,
            member_id.clone(),
        ));
    }
    if group.pending_members.contains_key(member_id) {
        if req.group_instance_id.is_some() {
            // Pending ids are only handed to dynamic members. Kafka fails the request with an
            // internal error; UNKNOWN_MEMBER_ID makes the client start over cleanly.
            return Some(JoinResult::error(
                codes::UNKNOWN_MEMBER_ID,
                member_id.clone(),
            ));
        }
        add_member_and_rebalance(group, cx, token, req, protocols, member_id.clone());
        return None;
    }
    if let Some(code) = validate_current_member(group, member_id, req.group_instance_id.as_deref())
    {
        return Some(JoinResult::error(code, member_id.clone()));
    }
    let matches = group
        .members
        .get(member_id)
        .is_some_and(|m| m.matches(&protocols));
    match group.state {
        GroupState::PreparingRebalance => {
            update_member_and_rebalance(group, cx, token, req, protocols);
            None
        }
        GroupState::CompletingRebalance if matches => {
            // The member lost its JoinGroup response: repeat the current generation.
            Some(current_generation(
                group,
                member_id,
                group.is_leader(member_id),
            ))
        }
        GroupState::Stable if matches && !group.is_leader(member_id) => {
            // A follower with unchanged metadata just syncs again.
            Some(current_generation(group, member_id, false))
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            // Changed metadata, or the leader asking for a rebalance (e.g. topic metadata
            // changed in a way the member metadata does not show).
            update_member_and_rebalance(group, cx, token, req, protocols);
            None
        }
        GroupState::Empty | GroupState::Dead => Some(JoinResult::error(
            codes::UNKNOWN_MEMBER_ID,
            member_id.clone(),
        )),
    }
}

/// The JoinGroup answer for the current generation.
fn current_generation(group: &Group, member_id: &str, with_members: bool) -> JoinResult {
    JoinResult {
        error_code: codes::NONE,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader: group.leader_id.clone().unwrap_or_default(),
        skip_assignment: false,
        member_id: member_id.to_owned(),
        members: if with_members {
            group.joined_members()
        } else {
            Vec::new()
        },
    }
}

/// Kafka's `addMemberAndRebalance`.
fn add_member_and_rebalance(
    group: &mut Group,
    cx: &mut Cx<'_>,
    token: ReplyToken,
    req: &JoinRequest,
    protocols: Vec<(String, Bytes)>,
    member_id: String,
) {
    let join_seq = *cx.next_join_seq;
    *cx.next_join_seq += 1;
    let member = Member {
        member_id: member_id.clone(),
        group_instance_id: req.group_instance_id.clone(),
        client_id: req.client_id.clone(),
        client_host: req.client_host.clone(),
        rebalance_timeout_ms: req.rebalance_timeout_ms.max(0),
        session_timeout_ms: req.session_timeout_ms,
        protocols,
        assignment: Bytes::new(),
        join_token: Some(token),
        sync_token: None,
        is_new: true,
        session: Timer::default(),
        join_seq,
    };
    // A member arriving during the very first initial delay extends it once more.
    if group.state == GroupState::PreparingRebalance && group.generation_id == 0 {
        group.new_member_added = true;
    }
    group.add_member(member, &req.protocol_type);
    // A new member cannot heartbeat before it has a generation; bound its wait instead.
    group.schedule_session(cx, &member_id, cx.config.new_member_join_timeout_ms);
    group.maybe_prepare_rebalance(cx);
}

/// Kafka's `updateMemberAndRebalance`. A JoinGroup the member already had waiting is
/// superseded and answered with REBALANCE_IN_PROGRESS (Kafka silently drops it).
fn update_member_and_rebalance(
    group: &mut Group,
    cx: &mut Cx<'_>,
    token: ReplyToken,
    req: &JoinRequest,
    protocols: Vec<(String, Bytes)>,
) {
    let superseded = group.update_member(
        &req.member_id,
        protocols,
        req.rebalance_timeout_ms.max(0),
        req.session_timeout_ms,
        Some(token),
    );
    if let Some(old) = superseded {
        cx.join_reply(
            old,
            JoinResult::error(codes::REBALANCE_IN_PROGRESS, req.member_id.clone()),
        );
    }
    group.maybe_prepare_rebalance(cx);
}

/// Kafka's `updateStaticMemberAndRebalance`: a static member restarted (new member id, same
/// instance id). The old id is fenced. In a Stable group whose selected protocol would not
/// change, the member takes over the old one's assignment without a rebalance.
fn update_static_member_and_rebalance(
    group: &mut Group,
    cx: &mut Cx<'_>,
    token: ReplyToken,
    req: &JoinRequest,
    protocols: Vec<(String, Bytes)>,
    old_id: String,
    new_id: String,
) -> Option<JoinResult> {
    let leader_before = group.leader_id.clone();
    replace_static_member(group, cx, &old_id, &new_id);
    group.refresh_session(cx, &new_id);
    group.update_member(
        &new_id,
        protocols,
        req.rebalance_timeout_ms.max(0),
        req.session_timeout_ms,
        Some(token),
    );
    match group.state {
        GroupState::Stable => {
            if group.select_protocol() == group.protocol_name {
                group.take_join_token(&new_id);
                group.persist_metadata(cx);
                let is_leader = group.is_leader(&new_id);
                let mut result = current_generation(group, &new_id, false);
                if req.supports_skip_assignment {
                    // KIP-814: tell a returning leader it leads, but that the group is stable
                    // and it must not compute a new assignment.
                    if is_leader {
                        result.members = group.joined_members();
                        result.skip_assignment = true;
                    }
                } else {
                    // Older clients: report the previous leader id, which cannot match the
                    // new member id, so a returning leader does not reassign a stable group.
                    result.leader = leader_before.unwrap_or_default();
                }
                Some(result)
            } else {
                group.maybe_prepare_rebalance(cx);
                None
            }
        }
        GroupState::CompletingRebalance => {
            // The leader may already be assigning to the old member id: start over.
            group.prepare_rebalance(cx);
            None
        }
        GroupState::PreparingRebalance => None,
        GroupState::Empty | GroupState::Dead => {
            // A static member exists only in a group with members; never reached.
            debug_assert!(false, "static member in an empty group");
            group.take_join_token(&new_id);
            Some(JoinResult::error(codes::UNKNOWN_SERVER_ERROR, ""))
        }
    }
}

/// Kafka's `replaceStaticMember`: the old incarnation's waiting requests are fenced, the member
/// keeps its place (join order, leadership, pending sync) under its new id.
fn replace_static_member(group: &mut Group, cx: &mut Cx<'_>, old_id: &str, new_id: &str) {
    let Some(mut member) = group.members.remove(old_id) else {
        return;
    };
    if let Some(token) = member.join_token.take() {
        group.num_awaiting_join -= 1;
        cx.join_reply(token, JoinResult::error(codes::FENCED_INSTANCE_ID, old_id));
    }
    if let Some(token) = member.sync_token.take() {
        cx.sync_reply(token, SyncResult::error(codes::FENCED_INSTANCE_ID));
    }
    member.member_id = new_id.to_owned();
    member.session = Timer::default();
    if let Some(instance) = &member.group_instance_id {
        group
            .static_members
            .insert(instance.clone(), new_id.to_owned());
    }
    group.members.insert(new_id.to_owned(), member);
    if group.is_leader(old_id) {
        group.leader_id = Some(new_id.to_owned());
    }
    if group.pending_sync.remove(old_id) {
        group.pending_sync.insert(new_id.to_owned());
    }
}
