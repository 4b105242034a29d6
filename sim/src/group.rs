//! The consumer group coordinator in the simulated cluster, and the consumers that use it.
//!
//! `__consumer_offsets` is one more replicated partition of the simulated cluster (the last
//! index), under the same replication, ISR and lease rules as the others. The broker leading it
//! runs the coordinator crate's `GroupManager` the way `broker/src/groups/coordinator.rs` and the
//! shard carry it: started, with the log replayed, when the broker becomes leader (and none
//! runs yet); unloaded when it stops leading; gone with the process. Each call's records are
//! one batch, appended as leader with acks=all and Kafka's 5 s commit timeout; the call's
//! replies go out once that batch is committed, NOT_COORDINATOR instead when it is not
//! (heartbeats excepted, as in `server/groups.rs`); one timer per key.
//!
//! The consumers are the classic Java consumer with the eager protocol, reduced to what the
//! coordinator sees: join (MEMBER_ID_REQUIRED first), the leader assigns the topic's partitions
//! round-robin, sync, fetch the committed offsets, then heartbeat every second and commit every
//! two while they consume; on REBALANCE_IN_PROGRESS they commit and give up their partitions
//! before joining again; on ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID they lose them. They find
//! the coordinator through the cluster's metadata (ZooKeeper's leader of the partition) and look
//! again after NOT_COORDINATOR or a timeout. Their faults, on top of the brokers': a crash (a
//! new member when it comes back), a stall longer than the session (a zombie that still
//! believes it owns its partitions when it wakes), and leaving the group.
//!
//! The properties (see `checks` for the rest):
//! - **One owner per partition and generation**: the assignments SyncGroup hands out in one
//!   generation are disjoint, across every coordinator that ever ran.
//! - **Acknowledged commits never go back**: in the log's order, every acknowledged commit of
//!   a partition is at least the one before it (a zombie's commit is fenced by its generation).
//! - **No acknowledged commit is lost**: a coordinator that loads the partition, and the
//!   current leader's answer to OffsetFetch, return at least the last acknowledged commit.
//! - The manager's own invariants hold after every call.
//! - At the end: one Stable generation holding every consumer, its assignment covering each
//!   partition exactly once.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use shardlog_coordinator::records::{self, OffsetCommitValue, RecordKey};
use shardlog_coordinator::{
    codes, Effect, GroupConfig, GroupManager, GroupState, HeartbeatRequest, JoinRequest,
    JoinResult, LeavingMember, OffsetCommitRequest, OffsetFetchGroup, Record, ReplyToken,
    SeededMemberIds, SyncRequest, SyncResult, TimerKey,
};

use crate::replica::Writer;
use crate::{Ev, Msg, Node, Time, World};

/// Consumers in the group.
pub const CONSUMERS: u8 = 3;
/// Partitions of the topic the group consumes (its data is not simulated: a consumer's
/// position is a number it advances).
pub const TOPIC_PARTITIONS: i32 = 6;
const GROUP: &str = "sim-group";
const TOPIC: &str = "events";
const SESSION_TIMEOUT: i32 = 6_000;
const REBALANCE_TIMEOUT: i32 = 10_000;
const HEARTBEAT_EVERY: Time = 1_000;
const COMMIT_EVERY: Time = 2_000;
/// The consumer's `request.timeout.ms`, scaled down like the session (Kafka's defaults: 30 s
/// against a 45 s session); JoinGroup waits the rebalance timeout more.
const REQUEST_TIMEOUT: Time = 4_000;
const CONSUMER_TICK: Time = 100;
/// Kafka's `offsets.commit.timeout.ms`: how long a group write waits for the ISR.
pub(crate) const COMMIT_TIMEOUT: Time = 5_000;
/// Record ids of the coordinator's batches (the producing client counts up from 1).
const FIRST_GROUP_RECORD: u64 = 1 << 40;

/// A group request, as the coordinator's API takes it.
#[derive(Debug, Clone)]
pub enum GroupCall {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(HeartbeatRequest),
    Commit(OffsetCommitRequest),
    /// OffsetFetch of every partition of the topic.
    Fetch,
    Leave {
        member_id: String,
    },
}

#[derive(Debug, Clone)]
pub enum GroupReply {
    Join(JoinResult),
    Sync(SyncResult),
    Heartbeat(i16),
    Commit(Vec<(i32, i16)>),
    Fetch(i16, Vec<(i32, i64)>),
    Leave(i16),
}

impl GroupReply {
    fn error(call: &GroupCall, code: i16) -> GroupReply {
        match call {
            GroupCall::Join(r) => GroupReply::Join(JoinResult::error(code, r.member_id.clone())),
            GroupCall::Sync(_) => GroupReply::Sync(SyncResult::error(code)),
            GroupCall::Heartbeat(_) => GroupReply::Heartbeat(code),
            GroupCall::Commit(r) => GroupReply::Commit(all_partitions(r, code)),
            GroupCall::Fetch => GroupReply::Fetch(code, Vec::new()),
            GroupCall::Leave { .. } => GroupReply::Leave(code),
        }
    }
}

fn all_partitions(r: &OffsetCommitRequest, code: i16) -> Vec<(i32, i16)> {
    r.topics
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(move |p| (p.partition, code)))
        .collect()
}

/// Replies of one call that wait for its batch.
#[derive(Default)]
struct Pending {
    /// The call's own answer (Heartbeat, OffsetCommit, LeaveGroup).
    direct: Option<(u8, u64, GroupReply, bool)>,
    joins: Vec<(ReplyToken, JoinResult)>,
    syncs: Vec<(ReplyToken, SyncResult)>,
}

/// The coordinator on the broker that leads `__consumer_offsets`.
pub(crate) struct Coordinator {
    serial: u64,
    manager: GroupManager,
    next_token: u64,
    /// Deferred JoinGroup / SyncGroup answers: token -> (consumer, request, member id,
    /// generation it asked in).
    tokens: BTreeMap<ReplyToken, (u8, u64, String, i32)>,
    /// Group batch id -> the replies waiting for it.
    pending: BTreeMap<u64, Pending>,
    /// One deadline per key; a firing with another deadline is a replaced timer.
    timers: BTreeMap<TimerKey, i64>,
    /// The last offset of the partition the manager's memory may reflect (the log end it
    /// loaded, then each batch appended): answers showing that memory wait for its commit.
    unsettled: i64,
}

impl Coordinator {
    fn token(&mut self, waiting: (u8, u64, String, i32)) -> ReplyToken {
        let token = ReplyToken(self.next_token);
        self.next_token += 1;
        self.tokens.insert(token, waiting);
        token
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Unjoined,
    /// Has an assignment, waits for the committed offsets.
    Fetching,
    Stable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Join,
    Sync,
    Fetch,
    Heartbeat,
    /// `then_rejoin`: the commit before giving up the partitions in a rebalance.
    Commit {
        then_rejoin: bool,
    },
    Leave,
}

pub(crate) struct Consumer {
    up: bool,
    /// Bumped at each start: a tick chain of an earlier process stops.
    incarnation: u64,
    paused_until: Time,
    /// Answers that arrived while stalled, handled when it wakes.
    held: Vec<(u64, GroupReply)>,
    member_id: String,
    generation: i32,
    phase: Phase,
    /// Owned partition -> position (meaningful once Stable).
    owned: BTreeMap<i32, i64>,
    coordinator: Option<i32>,
    /// The one request in flight: id, what, when sent, to whom.
    in_flight: Option<(u64, Asked, Time)>,
    next_req: u64,
    retry_at: Time,
    last_heartbeat: Time,
    last_commit: Time,
    /// Positions changed since the last commit.
    dirty: bool,
}

impl Consumer {
    fn new() -> Consumer {
        Consumer {
            up: false,
            incarnation: 0,
            paused_until: 0,
            held: Vec::new(),
            member_id: String::new(),
            generation: -1,
            phase: Phase::Unjoined,
            owned: BTreeMap::new(),
            coordinator: None,
            in_flight: None,
            next_req: 0,
            retry_at: 0,
            last_heartbeat: 0,
            last_commit: 0,
            dirty: false,
        }
    }

    /// A process start: a new member (the request counter goes on, so that answers meant for
    /// the previous process are recognised as stale).
    fn start(&mut self) {
        let (next_req, incarnation) = (self.next_req, self.incarnation);
        *self = Consumer::new();
        self.up = true;
        self.next_req = next_req;
        self.incarnation = incarnation + 1;
    }

    fn rejoin(&mut self, now: Time, backoff: Time) {
        self.phase = Phase::Unjoined;
        self.owned.clear();
        self.retry_at = now + backoff;
    }
}

/// The group side of the world: coordinators, consumers, the records of group batches and
/// what the properties need to remember.
pub(crate) struct Groups {
    pub(crate) coordinators: BTreeMap<i32, Coordinator>,
    pub(crate) consumers: Vec<Consumer>,
    /// Group batch id -> its records (the simulated log keeps only ids).
    records: BTreeMap<u64, Vec<Record>>,
    next_record: u64,
    next_serial: u64,
    /// Generation -> partition -> the member SyncGroup handed it to.
    handed: BTreeMap<i32, BTreeMap<i32, String>>,
    /// Partition -> (log offset, committed offset) of the acknowledged commit latest in the log.
    acked: BTreeMap<i32, (i64, i64)>,
    pub(crate) rebalances: u64,
    pub(crate) commits_acked: u64,
}

impl Groups {
    pub(crate) fn new() -> Groups {
        Groups {
            coordinators: BTreeMap::new(),
            consumers: (0..CONSUMERS).map(|_| Consumer::new()).collect(),
            records: BTreeMap::new(),
            next_record: FIRST_GROUP_RECORD,
            next_serial: 0,
            handed: BTreeMap::new(),
            acked: BTreeMap::new(),
            rebalances: 0,
            commits_acked: 0,
        }
    }
}

fn encode_assignment(parts: &[i32]) -> Bytes {
    Bytes::from(
        parts
            .iter()
            .flat_map(|p| p.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
}

fn decode_assignment(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl World {
    /// The index of `__consumer_offsets` among the simulated partitions: the last one.
    pub(crate) fn offsets_part(&self) -> usize {
        self.opts.partitions
    }

    // ---- the broker's side ------------------------------------------------------------------

    /// After a state change of `__consumer_offsets` on broker `id`: the shard's
    /// `on_transition` (a coordinator where it leads and none runs yet; none elsewhere).
    pub(crate) fn coordinator_follow_role(&mut self, id: i32) {
        let leads = self.brokers[&id].leader_of(self.offsets_part());
        let runs = self.groups.coordinators.contains_key(&id);
        if leads && !runs {
            self.coordinator_start(id);
        } else if !leads && runs {
            self.coordinator_stop(id);
        }
    }

    /// The process is gone: so is its coordinator, without a word to anyone.
    pub(crate) fn coordinator_drop(&mut self, id: i32) {
        self.groups.coordinators.remove(&id);
    }

    fn coordinator_start(&mut self, id: i32) {
        let now = self.now as i64;
        let part = self.offsets_part();
        self.groups.next_serial += 1;
        let serial = self.groups.next_serial;
        let ids = SeededMemberIds::new(self.opts.seed.rotate_left(17) ^ serial);
        let mut manager =
            GroupManager::new_loading(GroupConfig::default(), Box::new(ids)).expect("config");
        // As `GroupCoordinator::load`: the leader's whole log, records not yet on every ISR
        // member included.
        let batches: Vec<u64> = self.brokers[&id].log(part).iter().map(|b| b.id).collect();
        let unsettled = batches.len() as i64 - 1;
        for rid in &batches {
            for r in self.groups.records.get(rid).into_iter().flatten() {
                if let Err(e) = manager.replay(&r.key, r.value.clone()) {
                    return self.fail(format!("broker {id}: group record does not replay: {e}"));
                }
            }
        }
        let effects = manager.finish_loading(now);
        let batches = batches.len();
        self.note(|| format!("broker {id}: group coordinator loaded {batches} batches"));
        self.groups.coordinators.insert(
            id,
            Coordinator {
                serial,
                manager,
                next_token: 1,
                tokens: BTreeMap::new(),
                pending: BTreeMap::new(),
                timers: BTreeMap::new(),
                unsettled,
            },
        );
        self.check_loaded_offsets(id, "loaded");
        self.coordinator_apply(id, effects, None);
    }

    /// `GroupCoordinator::reload`, after a batch the partition refused: the manager is rebuilt
    /// from the log; waiting JoinGroup / SyncGroup get NOT_COORDINATOR,
    /// batches still in flight answer their own calls.
    fn coordinator_reload(&mut self, id: i32) {
        let Some(pending) = self
            .groups
            .coordinators
            .get_mut(&id)
            .map(|c| std::mem::take(&mut c.pending))
        else {
            return;
        };
        self.coordinator_stop(id);
        self.coordinator_start(id);
        if let Some(c) = self.groups.coordinators.get_mut(&id) {
            c.pending.extend(pending);
        }
    }

    /// `GroupCoordinator::shutdown`: waiting JoinGroup / SyncGroup get NOT_COORDINATOR.
    fn coordinator_stop(&mut self, id: i32) {
        let Some(mut c) = self.groups.coordinators.remove(&id) else {
            return;
        };
        self.note(|| format!("broker {id}: group coordinator unloaded"));
        for e in c.manager.unload() {
            let (token, reply) = match e {
                Effect::JoinReply(t, r) => (t, GroupReply::Join(r)),
                Effect::SyncReply(t, r) => (t, GroupReply::Sync(r)),
                _ => continue,
            };
            if let Some((k, req, _, _)) = c.tokens.remove(&token) {
                self.send(
                    Node::Broker(id),
                    Node::Consumer(k),
                    Msg::GroupAnswer { req, reply },
                );
            }
        }
    }

    /// A group request at broker `id`.
    pub(crate) fn group_request(&mut self, id: i32, k: u8, req: u64, call: GroupCall) {
        let now = self.now as i64;
        let Some(c) = self.groups.coordinators.get_mut(&id) else {
            let reply = GroupReply::error(&call, codes::NOT_COORDINATOR);
            self.send(
                Node::Broker(id),
                Node::Consumer(k),
                Msg::GroupAnswer { req, reply },
            );
            return;
        };
        let m = &mut c.manager;
        // The reply, and whether it must wait for the call's batch to be committed.
        let (direct, effects) = match call {
            GroupCall::Join(r) => {
                let token = c.token((k, req, r.member_id.clone(), -1));
                (None, c.manager.join(now, token, r))
            }
            GroupCall::Sync(r) => {
                let token = c.token((k, req, r.member_id.clone(), r.generation_id));
                (None, c.manager.sync(now, token, r))
            }
            GroupCall::Heartbeat(r) => {
                let (code, effects) = m.heartbeat(now, r);
                (Some((GroupReply::Heartbeat(code), false)), effects)
            }
            GroupCall::Commit(r) => {
                let (errs, effects) = m.commit_offsets(now, r);
                let codes = errs.into_iter().flat_map(|(_, ps)| ps).collect();
                (Some((GroupReply::Commit(codes), true)), effects)
            }
            GroupCall::Fetch => {
                let asked = OffsetFetchGroup {
                    group_id: GROUP.into(),
                    topics: Some(vec![(TOPIC.into(), (0..TOPIC_PARTITIONS).collect())]),
                };
                let g = m.fetch_offsets(&[asked]).remove(0);
                let offsets = g
                    .topics
                    .into_iter()
                    .flat_map(|(_, ps)| ps)
                    .map(|p| (p.partition, p.committed_offset))
                    .collect();
                (
                    Some((GroupReply::Fetch(g.error_code, offsets), true)),
                    Vec::new(),
                )
            }
            GroupCall::Leave { member_id } => {
                let leaving = LeavingMember {
                    member_id,
                    group_instance_id: None,
                };
                let (r, effects) = m.leave(now, GROUP, vec![leaving]);
                let code = match r.members.first() {
                    Some((_, code)) if r.error_code == codes::NONE => *code,
                    _ => r.error_code,
                };
                (Some((GroupReply::Leave(code), true)), effects)
            }
        };
        if let Err(e) = c.manager.check_invariants() {
            return self.fail(format!("broker {id}: group coordinator invariant: {e}"));
        }
        let direct = direct.map(|(reply, needs_durable)| (k, req, reply, needs_durable));
        self.coordinator_apply(id, effects, direct);
    }

    /// `GroupCoordinator::apply`: the records as one batch, the replies once it is committed
    /// (or at once without records), then the timers.
    fn coordinator_apply(
        &mut self,
        id: i32,
        effects: Vec<Effect>,
        direct: Option<(u8, u64, GroupReply, bool)>,
    ) {
        let mut records = Vec::new();
        let mut pending = Pending {
            direct,
            ..Pending::default()
        };
        let mut timers = Vec::new();
        for e in effects {
            match e {
                Effect::Persist(r) => records.push(r),
                Effect::JoinReply(t, r) => pending.joins.push((t, r)),
                Effect::SyncReply(t, r) => pending.syncs.push((t, r)),
                Effect::ScheduleTimer { key, deadline_ms } => timers.push((key, deadline_ms)),
            }
        }
        let (serial, unsettled) = match self.groups.coordinators.get_mut(&id) {
            Some(c) => {
                for (key, deadline) in &timers {
                    c.timers.insert(key.clone(), *deadline);
                }
                (c.serial, c.unsettled)
            }
            None => return,
        };
        for (key, deadline) in timers {
            let delay = (deadline - self.now as i64).max(0) as Time;
            let ev = Ev::GroupTimer {
                id,
                serial,
                key,
                deadline,
            };
            self.at(delay, ev);
        }
        let part = self.offsets_part();
        // Answers that show memory (JoinGroup, SyncGroup, OffsetFetch) wait for it to be
        // committed even when the call wrote nothing (`GroupCoordinator::settled`).
        let shows_memory = !pending.joins.is_empty()
            || !pending.syncs.is_empty()
            || matches!(pending.direct, Some((_, _, GroupReply::Fetch(..), _)));
        let settled = unsettled < 0 || self.brokers[&id].hw(part) > unsettled;
        if records.is_empty() && (settled || !shows_memory) {
            self.send_replies(id, pending, true);
            return;
        }
        let rid = self.groups.next_record;
        self.groups.next_record += 1;
        if let Some(c) = self.groups.coordinators.get_mut(&id) {
            c.pending.insert(rid, pending);
        }
        if records.is_empty() {
            self.leader_wait(id, part, unsettled, rid, COMMIT_TIMEOUT);
            return;
        }
        self.groups.records.insert(rid, records);
        let appended = self.leader_append(id, part, Writer::Group, rid, COMMIT_TIMEOUT);
        if let (Some(offset), Some(c)) = (appended, self.groups.coordinators.get_mut(&id)) {
            c.unsettled = c.unsettled.max(offset);
        }
    }

    /// The group batch `rid` was answered by the partition: committed, or not.
    pub(crate) fn group_write_done(&mut self, id: i32, rid: u64, log_offset: i64, code: i16) {
        // A batch of records the partition refused (not in the log): memory is ahead of it.
        let part = self.offsets_part();
        let refused = self.groups.records.contains_key(&rid)
            && !self.brokers[&id].log(part).iter().any(|b| b.id == rid);
        let Some(pending) = self
            .groups
            .coordinators
            .get_mut(&id)
            .and_then(|c| c.pending.remove(&rid))
        else {
            return;
        };
        let durable = code == codes::NONE;
        if durable {
            if let Some((_, _, GroupReply::Commit(results), _)) = &pending.direct {
                let committed = self.committed_in(rid, results);
                self.check_acked_commits(log_offset, &committed);
            }
        }
        self.send_replies(id, pending, durable);
        if refused {
            self.coordinator_reload(id);
        }
    }

    /// The offsets a commit batch wrote, for the partitions the coordinator accepted.
    fn committed_in(&self, rid: u64, results: &[(i32, i16)]) -> Vec<(i32, i64)> {
        let accepted: BTreeSet<i32> = results
            .iter()
            .filter(|(_, c)| *c == codes::NONE)
            .map(|(p, _)| *p)
            .collect();
        let Some(records) = self.groups.records.get(&rid) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for r in records {
            let Ok(Some(RecordKey::OffsetCommit { partition, .. })) = records::decode_key(&r.key)
            else {
                continue;
            };
            let Some(value) = &r.value else { continue };
            if let Ok(v) = OffsetCommitValue::decode(value) {
                if accepted.contains(&partition) {
                    out.push((partition, v.offset));
                }
            }
        }
        out
    }

    fn send_replies(&mut self, id: i32, p: Pending, durable: bool) {
        let from = Node::Broker(id);
        let mut out = Vec::new();
        for (t, mut r) in p.joins {
            if !durable {
                r = JoinResult::error(codes::NOT_COORDINATOR, r.member_id);
            }
            out.push((t, GroupReply::Join(r)));
        }
        for (t, mut r) in p.syncs {
            if !durable {
                r = SyncResult::error(codes::NOT_COORDINATOR);
            }
            out.push((t, GroupReply::Sync(r)));
        }
        for (t, reply) in out {
            let Some((k, req, member, generation)) = self
                .groups
                .coordinators
                .get_mut(&id)
                .and_then(|c| c.tokens.remove(&t))
            else {
                continue;
            };
            if let GroupReply::Sync(r) = &reply {
                if r.error_code == codes::NONE {
                    self.check_handed(id, &member, generation, r);
                }
            }
            self.send(from, Node::Consumer(k), Msg::GroupAnswer { req, reply });
        }
        if let Some((k, req, reply, needs_durable)) = p.direct {
            let reply = if needs_durable && !durable {
                match reply {
                    GroupReply::Commit(rs) => GroupReply::Commit(
                        rs.into_iter()
                            .map(|(p, _)| (p, codes::NOT_COORDINATOR))
                            .collect(),
                    ),
                    GroupReply::Leave(_) => GroupReply::Leave(codes::NOT_COORDINATOR),
                    GroupReply::Fetch(..) => GroupReply::Fetch(codes::NOT_COORDINATOR, Vec::new()),
                    other => other,
                }
            } else {
                reply
            };
            if let GroupReply::Commit(rs) = &reply {
                self.groups.commits_acked +=
                    rs.iter().filter(|r| r.1 == codes::NONE).count() as u64;
            }
            if let GroupReply::Fetch(codes::NONE, offsets) = &reply {
                self.check_fetched_offsets(id, offsets);
            }
            self.send(from, Node::Consumer(k), Msg::GroupAnswer { req, reply });
        }
    }

    pub(crate) fn group_timer(&mut self, id: i32, serial: u64, key: TimerKey, deadline: i64) {
        let now = self.now as i64;
        let Some(c) = self.groups.coordinators.get_mut(&id) else {
            return;
        };
        if c.serial != serial || c.timers.get(&key) != Some(&deadline) {
            return;
        }
        c.timers.remove(&key);
        let effects = c.manager.on_timer(now, &key);
        if let Err(e) = c.manager.check_invariants() {
            return self.fail(format!("broker {id}: group coordinator invariant: {e}"));
        }
        self.coordinator_apply(id, effects, None);
    }

    // ---- the properties -----------------------------------------------------------------

    /// One owner per partition and generation.
    fn check_handed(&mut self, id: i32, member: &str, generation: i32, r: &SyncResult) {
        let member = member.to_string();
        let handed = self.groups.handed.entry(generation).or_default();
        let mut clash = None;
        for p in decode_assignment(&r.assignment) {
            match handed.get(&p) {
                Some(other) if *other != member => clash = Some((p, other.clone())),
                Some(_) => {}
                None => {
                    handed.insert(p, member.clone());
                }
            }
        }
        if let Some((p, other)) = clash {
            self.fail(format!(
                "generation {generation}: partition {p} handed to {other} and to {member} \
                 (broker {id})"
            ));
        }
    }

    /// Acknowledged commits never go back, in the log's order.
    fn check_acked_commits(&mut self, log_offset: i64, committed: &[(i32, i64)]) {
        for &(p, offset) in committed {
            match self.groups.acked.get(&p).copied() {
                Some((at, before)) if at < log_offset && offset < before => {
                    return self.fail(format!(
                        "partition {p}: commit of {offset} acknowledged at log offset \
                         {log_offset}, after {before} at {at}: a stale member's commit went \
                         through"
                    ));
                }
                Some((at, _)) if at > log_offset => {}
                _ => {
                    self.groups.acked.insert(p, (log_offset, offset));
                }
            }
        }
    }

    /// No acknowledged commit lost: what the current leader's coordinator answers.
    /// Whether broker `id` leads `__consumer_offsets` in ZooKeeper's latest state. A deposed
    /// leader that has not heard yet may answer from old memory, as in Kafka: its writes
    /// cannot commit, and a consumer that reads an old offset reads again, it loses nothing.
    fn current_coordinator(&self, id: i32) -> bool {
        let part = self.offsets_part();
        let state = &self.zk.states[part];
        state.leader.0 == id && self.brokers[&id].leader_epoch(part) == state.leader_epoch
    }

    fn check_fetched_offsets(&mut self, id: i32, offsets: &[(i32, i64)]) {
        if !self.current_coordinator(id) {
            return;
        }
        for &(p, offset) in offsets {
            if let Some(&(at, acked)) = self.groups.acked.get(&p) {
                if offset < acked {
                    return self.fail(format!(
                        "broker {id}: OffsetFetch answers {offset} for partition {p}, below the \
                         commit of {acked} acknowledged at log offset {at}"
                    ));
                }
            }
        }
    }

    fn check_loaded_offsets(&mut self, id: i32, when: &str) {
        if !self.current_coordinator(id) {
            return;
        }
        let Some(c) = self.groups.coordinators.get(&id) else {
            return;
        };
        let asked = OffsetFetchGroup {
            group_id: GROUP.into(),
            topics: Some(vec![(TOPIC.into(), (0..TOPIC_PARTITIONS).collect())]),
        };
        let g = c.manager.fetch_offsets(&[asked]).remove(0);
        for (_, ps) in g.topics {
            for fp in ps {
                if let Some(&(at, acked)) = self.groups.acked.get(&fp.partition) {
                    if fp.committed_offset < acked {
                        let p = fp.partition;
                        let o = fp.committed_offset;
                        return self.fail(format!(
                            "broker {id}: coordinator {when} with offset {o} for partition {p}, \
                             below the commit of {acked} acknowledged at log offset {at}"
                        ));
                    }
                }
            }
        }
    }

    /// After healing and the idle period: one Stable generation with every consumer, each
    /// partition owned once, every acknowledged commit there.
    pub(crate) fn final_group_checks(&mut self) {
        let part = self.offsets_part();
        let leader = self.zk.states[part].leader.0;
        let Some(c) = self.groups.coordinators.get(&leader) else {
            return self.fail(format!(
                "no group coordinator on broker {leader}, the leader of __consumer_offsets"
            ));
        };
        let state = c.manager.group_state(GROUP);
        let generation = c.manager.generation_id(GROUP);
        if state != Some(GroupState::Stable) {
            return self.fail(format!(
                "group not Stable after healing: {state:?}, generation {generation:?}"
            ));
        }
        let generation = generation.unwrap_or(-1);
        let mut owners: BTreeMap<i32, u8> = BTreeMap::new();
        for (k, cons) in self.groups.consumers.iter().enumerate() {
            if !cons.up || cons.phase != Phase::Stable || cons.generation != generation {
                return self.fail(format!(
                    "consumer {k} is {:?} in generation {} (up {}), the group is Stable in \
                     generation {generation}",
                    cons.phase, cons.generation, cons.up
                ));
            }
            for &p in cons.owned.keys() {
                if let Some(other) = owners.insert(p, k as u8) {
                    return self.fail(format!(
                        "partition {p} owned by consumers {other} and {k} at the end"
                    ));
                }
            }
        }
        if owners.len() != TOPIC_PARTITIONS as usize {
            let owned: Vec<i32> = owners.keys().copied().collect();
            return self.fail(format!("at the end only partitions {owned:?} are owned"));
        }
        self.check_loaded_offsets(leader, "at the end");
    }

    // ---- the consumers ----------------------------------------------------------------------

    pub(crate) fn consumer_start(&mut self, k: u8) {
        let c = &mut self.groups.consumers[k as usize];
        c.start();
        let incarnation = c.incarnation;
        self.note(|| format!("consumer {k} starts"));
        self.consumer_tick(k, incarnation);
    }

    /// A consumer fault, one at a time, independent of the brokers'.
    pub(crate) fn consumer_fault(&mut self) {
        if !self.faults_on {
            return;
        }
        let k = self.rng.range(0, CONSUMERS as u64 - 1) as u8;
        let down_for = self.rng.range(1_000, 12_000);
        let c = &self.groups.consumers[k as usize];
        if c.up && self.now >= c.paused_until {
            let leave_ok = c.phase == Phase::Stable && c.in_flight.is_none();
            let member_id = c.member_id.clone();
            match self.rng.range(0, 2) {
                2 if leave_ok => {
                    self.note(|| format!("consumer {k} leaves the group"));
                    self.consumer_send(k, Asked::Leave, GroupCall::Leave { member_id });
                }
                1 => {
                    self.groups.consumers[k as usize].paused_until = self.now + down_for;
                    self.note(|| format!("consumer {k} stalls for {down_for} ms"));
                }
                _ => {
                    self.groups.consumers[k as usize].up = false;
                    self.note(|| format!("consumer {k} crashes for {down_for} ms"));
                    self.at(down_for, Ev::ConsumerRestart { k });
                }
            }
        }
        let next = self.rng.range(3_000, 15_000);
        self.at(next, Ev::ConsumerFault);
    }

    pub(crate) fn consumer_restart(&mut self, k: u8) {
        if !self.groups.consumers[k as usize].up {
            self.consumer_start(k);
        }
    }

    /// At the end of the faults: every consumer runs, none stalls.
    pub(crate) fn consumers_heal(&mut self) {
        for k in 0..CONSUMERS {
            let c = &mut self.groups.consumers[k as usize];
            c.paused_until = c.paused_until.min(self.now);
            if !c.up {
                self.consumer_start(k);
            }
        }
    }

    pub(crate) fn consumer_tick(&mut self, k: u8, incarnation: u64) {
        let now = self.now;
        let c = &mut self.groups.consumers[k as usize];
        if !c.up || c.incarnation != incarnation {
            return;
        }
        let paused = now < c.paused_until;
        self.at(CONSUMER_TICK, Ev::ConsumerTick { k, incarnation });
        if paused {
            return;
        }
        let c = &mut self.groups.consumers[k as usize];
        for (req, reply) in std::mem::take(&mut c.held) {
            self.consumer_answer(k, req, reply);
        }
        let c = &mut self.groups.consumers[k as usize];
        if let Some((_, asked, sent)) = c.in_flight {
            let limit = match asked {
                Asked::Join => REQUEST_TIMEOUT + REBALANCE_TIMEOUT as Time,
                _ => REQUEST_TIMEOUT,
            };
            if now < sent + limit {
                return;
            }
            c.in_flight = None;
            c.coordinator = None;
            self.consumer_failed(k, asked, codes::REQUEST_TIMED_OUT);
            return;
        }
        if now < c.retry_at {
            return;
        }
        match c.phase {
            Phase::Unjoined => {
                let req = JoinRequest {
                    group_id: GROUP.into(),
                    member_id: c.member_id.clone(),
                    group_instance_id: None,
                    client_id: format!("consumer-{k}"),
                    client_host: "sim".into(),
                    session_timeout_ms: SESSION_TIMEOUT,
                    rebalance_timeout_ms: REBALANCE_TIMEOUT,
                    protocol_type: "consumer".into(),
                    protocols: vec![("roundrobin".into(), Bytes::new())],
                    require_known_member_id: true,
                    supports_skip_assignment: false,
                };
                self.consumer_send(k, Asked::Join, GroupCall::Join(req));
            }
            Phase::Fetching => self.consumer_send(k, Asked::Fetch, GroupCall::Fetch),
            Phase::Stable => {
                // Consuming while the load lasts.
                if now < self.opts.fault_ms + self.opts.settle_ms {
                    let owned: Vec<i32> = c.owned.keys().copied().collect();
                    for p in owned {
                        let n = self.rng.range(0, 3) as i64;
                        let c = &mut self.groups.consumers[k as usize];
                        *c.owned.get_mut(&p).expect("owned") += n;
                        c.dirty |= n > 0;
                    }
                }
                let c = &mut self.groups.consumers[k as usize];
                if now >= c.last_heartbeat + HEARTBEAT_EVERY {
                    let hb = HeartbeatRequest {
                        group_id: GROUP.into(),
                        generation_id: c.generation,
                        member_id: c.member_id.clone(),
                        group_instance_id: None,
                    };
                    c.last_heartbeat = now;
                    self.consumer_send(k, Asked::Heartbeat, GroupCall::Heartbeat(hb));
                } else if c.dirty && now >= c.last_commit + COMMIT_EVERY {
                    self.consumer_commit(k, false);
                }
            }
        }
    }

    fn consumer_commit(&mut self, k: u8, then_rejoin: bool) {
        let now = self.now;
        let c = &mut self.groups.consumers[k as usize];
        c.last_commit = now;
        c.dirty = false;
        let parts = c
            .owned
            .iter()
            .map(
                |(&partition, &offset)| shardlog_coordinator::CommitPartition {
                    partition,
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                },
            )
            .collect();
        let req = OffsetCommitRequest {
            group_id: GROUP.into(),
            generation_id: c.generation,
            member_id: c.member_id.clone(),
            group_instance_id: None,
            topics: vec![(TOPIC.into(), parts)],
        };
        self.consumer_send(k, Asked::Commit { then_rejoin }, GroupCall::Commit(req));
    }

    fn consumer_send(&mut self, k: u8, asked: Asked, call: GroupCall) {
        let now = self.now;
        let part = self.offsets_part();
        let known = self.zk.states[part].leader.0;
        let c = &mut self.groups.consumers[k as usize];
        let to = match c.coordinator {
            Some(b) => b,
            None if known > 0 => {
                c.coordinator = Some(known);
                known
            }
            None => {
                c.retry_at = now + 500;
                return;
            }
        };
        c.next_req += 1;
        let req = c.next_req;
        c.in_flight = Some((req, asked, now));
        self.send(
            Node::Consumer(k),
            Node::Broker(to),
            Msg::GroupRequest { req, call },
        );
    }

    pub(crate) fn consumer_receive(&mut self, k: u8, req: u64, reply: GroupReply) {
        let c = &mut self.groups.consumers[k as usize];
        if !c.up {
            return;
        }
        if self.now < c.paused_until {
            c.held.push((req, reply));
            return;
        }
        self.consumer_answer(k, req, reply);
    }

    fn consumer_answer(&mut self, k: u8, req: u64, reply: GroupReply) {
        let now = self.now;
        let c = &mut self.groups.consumers[k as usize];
        let Some((expected, asked, _)) = c.in_flight else {
            return;
        };
        if expected != req {
            return;
        }
        c.in_flight = None;
        match reply {
            GroupReply::Join(r) if r.error_code == codes::NONE => {
                c.member_id = r.member_id.clone();
                c.generation = r.generation_id;
                let assignments = if r.leader == r.member_id {
                    let mut members: Vec<String> =
                        r.members.iter().map(|m| m.member_id.clone()).collect();
                    members.sort();
                    let n = members.len().max(1);
                    members
                        .iter()
                        .enumerate()
                        .map(|(i, m)| {
                            let mine: Vec<i32> = (0..TOPIC_PARTITIONS)
                                .filter(|p| *p as usize % n == i)
                                .collect();
                            (m.clone(), encode_assignment(&mine))
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let generation = r.generation_id;
                self.note(|| format!("consumer {k} joined generation {generation}"));
                let sync = SyncRequest {
                    group_id: GROUP.into(),
                    generation_id: r.generation_id,
                    member_id: r.member_id,
                    group_instance_id: None,
                    protocol_type: Some("consumer".into()),
                    protocol_name: r.protocol_name,
                    assignments,
                };
                self.consumer_send(k, Asked::Sync, GroupCall::Sync(sync));
            }
            GroupReply::Join(r) if r.error_code == codes::MEMBER_ID_REQUIRED => {
                c.member_id = r.member_id;
                c.rejoin(now, 0);
            }
            GroupReply::Sync(r) if r.error_code == codes::NONE => {
                let parts = decode_assignment(&r.assignment);
                c.owned = parts.iter().map(|&p| (p, 0)).collect();
                c.phase = Phase::Fetching;
                self.groups.rebalances += 1;
                let generation = c.generation;
                self.note(|| format!("consumer {k}: generation {generation}, owns {parts:?}"));
            }
            GroupReply::Fetch(code, offsets) if code == codes::NONE => {
                if c.phase == Phase::Fetching {
                    for (p, o) in offsets {
                        if let Some(pos) = c.owned.get_mut(&p) {
                            *pos = o.max(0);
                        }
                    }
                    c.phase = Phase::Stable;
                    c.last_heartbeat = now;
                    c.last_commit = now;
                }
            }
            GroupReply::Heartbeat(code) if code == codes::NONE => {}
            GroupReply::Heartbeat(code) if code == codes::REBALANCE_IN_PROGRESS => {
                // Eager: commit what it consumed, give everything up, join again.
                if c.phase == Phase::Stable && !c.owned.is_empty() {
                    self.consumer_commit(k, true);
                } else {
                    c.rejoin(now, 0);
                }
            }
            GroupReply::Commit(rs) if rs.iter().all(|r| r.1 == codes::NONE) => {
                if asked == (Asked::Commit { then_rejoin: true }) {
                    c.rejoin(now, 0);
                }
            }
            GroupReply::Commit(rs) => {
                let code = rs.iter().map(|r| r.1).find(|&c| c != codes::NONE);
                self.consumer_failed(k, asked, code.unwrap_or(codes::NONE));
            }
            GroupReply::Leave(_) => {
                let c = &mut self.groups.consumers[k as usize];
                c.up = false;
                let back = self.rng.range(500, 5_000);
                self.at(back, Ev::ConsumerRestart { k });
            }
            GroupReply::Join(r) => self.consumer_failed(k, asked, r.error_code),
            GroupReply::Sync(r) => self.consumer_failed(k, asked, r.error_code),
            GroupReply::Fetch(code, _) | GroupReply::Heartbeat(code) => {
                self.consumer_failed(k, asked, code)
            }
        }
    }

    /// An error answer, or no answer in time.
    fn consumer_failed(&mut self, k: u8, asked: Asked, code: i16) {
        let now = self.now;
        self.note(|| format!("consumer {k}: {asked:?} failed with {code}"));
        let c = &mut self.groups.consumers[k as usize];
        let backoff = self.rng.range(100, 500);
        let coordinator_gone = [
            codes::NOT_COORDINATOR,
            codes::COORDINATOR_NOT_AVAILABLE,
            codes::REQUEST_TIMED_OUT,
        ]
        .contains(&code);
        if coordinator_gone {
            c.coordinator = None;
        }
        match code {
            codes::UNKNOWN_MEMBER_ID => {
                c.member_id.clear();
                c.generation = -1;
                c.rejoin(now, 0);
            }
            codes::ILLEGAL_GENERATION | codes::REBALANCE_IN_PROGRESS => c.rejoin(now, 0),
            _ => match asked {
                // Lost with the coordinator or timed out: the rebalance starts over.
                Asked::Join | Asked::Sync => c.rejoin(now, backoff),
                Asked::Commit { then_rejoin: true } => c.rejoin(now, backoff),
                Asked::Leave => {
                    c.up = false;
                    self.at(backoff, Ev::ConsumerRestart { k });
                }
                Asked::Fetch | Asked::Heartbeat | Asked::Commit { .. } => {
                    c.retry_at = now + backoff
                }
            },
        }
    }
}
