//! A simulated broker: its ZooKeeper session and lease (the control thread's `keep_lease`), and
//! per partition the replica the broker's `partition` module keeps (role, epoch cache, high
//! watermark, the leader's view of its followers, acks=all waiters, parked follower fetches)
//! with the replica fetcher's steps (truncation by leader epoch, then fetching). Every decision
//! is a call to the broker's `partition::replication` rules; the code here only moves state
//! and messages the way `partition/{mod,isr,follower}.rs` and `replication/fetcher.rs` do.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use shardlog_broker::base::errors;
use shardlog_broker::base::ids::{BrokerId, LeaderEpoch, Offset};
use shardlog_broker::cluster::metadata::{check_leader_epoch, PartitionState, NO_LEADER};
use shardlog_broker::control::election;
use shardlog_broker::partition::replication::{
    self, AcksWait, EpochCache, FollowerState, LeaderAnswer, LeaderView, TruncationStep,
};
use shardlog_broker::partition::Role;

use crate::{timing, Batch, Msg, Node, Time, World};

/// Batches a follower gets in one fetch.
const FETCH_MAX_BATCHES: usize = 8;

/// Who waits for a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// The client's produce request.
    Client(u64),
    /// The group coordinator's batch.
    Group,
    /// The group coordinator, for what it appended or loaded earlier
    /// (`GroupCoordinator::settled`).
    GroupSettle,
}

struct Waiter {
    writer: Writer,
    id: u64,
    last_offset: i64,
    received: Time,
    deadline: Time,
}

struct Parked {
    from: i32,
    epoch: i32,
    offset: i64,
    until: Time,
}

#[derive(Default)]
struct FetchState {
    needs_truncation: bool,
    retry_at: Time,
    /// When the request in flight was sent.
    in_flight: Option<Time>,
}

pub(crate) struct Replica {
    /// Kept across crashes (the page cache keeps it); offsets start at 0.
    log: Vec<Batch>,
    /// Kept across crashes (the checkpoint).
    hw: i64,
    /// Batches on disk for sure (the kernel's writeback of the page cache): what a power loss
    /// keeps at least. `written` is what the next writeback makes durable.
    durable: usize,
    written: usize,
    cache: EpochCache,
    role: Role,
    leader_epoch: i32,
    zk_version: i32,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    followers: HashMap<BrokerId, FollowerState>,
    epoch_start: i64,
    isr_changes: replication::IsrChanges,
    waiters: Vec<Waiter>,
    parked: Vec<Parked>,
    fetch: FetchState,
}

impl Replica {
    fn new() -> Replica {
        Replica {
            log: Vec::new(),
            hw: 0,
            durable: 0,
            written: 0,
            cache: EpochCache::default(),
            role: Role::Offline,
            leader_epoch: -1,
            zk_version: -1,
            replicas: Vec::new(),
            isr: Vec::new(),
            followers: HashMap::new(),
            epoch_start: 0,
            isr_changes: replication::IsrChanges::default(),
            waiters: Vec::new(),
            parked: Vec::new(),
            fetch: FetchState::default(),
        }
    }

    fn leo(&self) -> i64 {
        self.log.len() as i64
    }

    /// The epoch cache as opening the log rebuilds it: from the batch headers.
    fn rebuild_cache(&mut self) {
        self.cache.clear();
        for b in &self.log {
            self.cache.assign(LeaderEpoch(b.epoch), Offset(b.offset));
        }
    }
}

pub(crate) struct Broker {
    pub(crate) id: i32,
    pub(crate) up: bool,
    /// Lost power and not registered again since: leaders may still count what it had.
    pub(crate) lost_power: bool,
    /// Bumped at each start: messages to an earlier process are dropped.
    pub(crate) incarnation: u64,
    session: Option<u64>,
    /// The creation zxid of this process's registration.
    registration: Option<i64>,
    lease_until: Time,
    alive_view: BTreeSet<BrokerId>,
    pub(crate) parts: Vec<Replica>,
    ticks: u64,
    stopping: Option<Time>,
}

impl Broker {
    pub(crate) fn new(id: i32, partitions: usize) -> Broker {
        Broker {
            id,
            up: false,
            lost_power: false,
            incarnation: 0,
            session: None,
            registration: None,
            lease_until: 0,
            alive_view: BTreeSet::new(),
            parts: (0..partitions).map(|_| Replica::new()).collect(),
            ticks: 0,
            stopping: None,
        }
    }

    /// A process start: everything but the log and the high watermark checkpoint is new.
    pub(crate) fn start(&mut self, _now: Time) {
        self.up = true;
        self.incarnation += 1;
        self.session = None;
        self.registration = None;
        self.lease_until = 0;
        self.alive_view.clear();
        self.stopping = None;
        for r in &mut self.parts {
            let (log, hw, durable) = (std::mem::take(&mut r.log), r.hw, r.durable);
            *r = Replica::new();
            r.log = log;
            r.hw = hw.min(r.leo());
            r.durable = durable.min(r.log.len());
            r.written = r.durable;
            r.rebuild_cache();
        }
    }

    pub(crate) fn crash(&mut self) {
        self.up = false;
    }

    /// A power loss: the process dies and each log keeps what was durable plus some of what was
    /// not (`keep` picks how much; a torn batch is cut by recovery, so whole batches).
    pub(crate) fn power_loss(&mut self, mut keep: impl FnMut(usize, usize) -> usize) {
        self.up = false;
        self.lost_power = true;
        for r in &mut self.parts {
            let len = keep(r.durable.min(r.log.len()), r.log.len());
            r.log.truncate(len);
        }
    }

    /// The kernel's periodic writeback: what was written before the previous one is durable.
    fn writeback(&mut self) {
        for r in &mut self.parts {
            r.durable = r.written.min(r.log.len());
            r.written = r.log.len();
        }
    }

    fn lease_left(&self, now: Time) -> Option<Duration> {
        (now < self.lease_until).then(|| Duration::from_millis(self.lease_until - now))
    }

    pub(crate) fn leader_of(&self, part: usize) -> bool {
        self.parts[part].role == Role::Leader
    }

    pub(crate) fn log(&self, part: usize) -> &[Batch] {
        &self.parts[part].log
    }

    pub(crate) fn hw(&self, part: usize) -> i64 {
        self.parts[part].hw
    }

    pub(crate) fn leader_epoch(&self, part: usize) -> i32 {
        self.parts[part].leader_epoch
    }
}

impl World {
    fn broker(&mut self, id: i32) -> &mut Broker {
        self.brokers.get_mut(&id).expect("broker")
    }

    pub(crate) fn broker_heartbeat(&mut self, id: i32) {
        let now = self.now;
        let b = self.broker(id);
        let msg = match b.session {
            Some(session) => Msg::Heartbeat {
                session,
                sent_at: now,
            },
            None => Msg::Register,
        };
        self.send(Node::Broker(id), Node::Zk, msg);
    }

    pub(crate) fn broker_controlled_shutdown(&mut self, id: i32, down_for: Time) {
        let now = self.now;
        let b = self.broker(id);
        b.stopping = Some(now + 5_000);
        if let Some(session) = b.session {
            self.send(
                Node::Broker(id),
                Node::Zk,
                Msg::ControlledShutdown { session },
            );
        }
        self.down.insert(id);
        self.at(5_000 + down_for, crate::Ev::Restart { id });
    }

    /// The process stops (after a controlled shutdown, or when it gave up waiting for it): it
    /// closes its session so that ZooKeeper drops its registration at once.
    fn broker_stop(&mut self, id: i32) {
        let b = self.broker(id);
        let session = b.session.take();
        b.up = false;
        self.coordinator_drop(id);
        if let Some(session) = session {
            self.send(Node::Broker(id), Node::Zk, Msg::CloseSession { session });
        }
        self.note(|| format!("broker {id} stops"));
    }

    pub(crate) fn broker_receive(&mut self, id: i32, from: Node, msg: Msg) {
        let now = self.now;
        match msg {
            Msg::Registered { session, czxid } => {
                let b = self.broker(id);
                b.session = Some(session);
                b.registration = Some(czxid);
                b.lost_power = false;
            }
            Msg::RegisterRefused => {}
            Msg::HeartbeatOk { session, sent_at } => {
                let b = self.broker(id);
                if b.session == Some(session) {
                    b.lease_until = b.lease_until.max(sent_at + timing::LEASE);
                }
            }
            Msg::SessionExpired { session } => {
                let b = self.broker(id);
                if b.session == Some(session) {
                    b.session = None;
                    b.lease_until = 0;
                    self.note(|| {
                        format!("broker {id}: session {session} expired; registering again")
                    });
                }
            }
            Msg::Brokers { session, alive } => {
                let b = self.broker(id);
                if b.session == Some(session) {
                    b.alive_view = alive;
                }
            }
            Msg::State {
                session,
                part,
                mut state,
                written,
            } if self.broker(id).session == Some(session) => {
                // As the publisher: not leading by a state written before this registration.
                let own = self.broker(id).registration;
                if state.leader == BrokerId(id) && !election::may_lead_by(written, own) {
                    state.leader = NO_LEADER;
                }
                self.apply_state(id, part, &state);
                if part == self.offsets_part() {
                    self.coordinator_follow_role(id);
                }
            }
            Msg::AlterIsrDone {
                part,
                zk_version,
                code,
            } => {
                self.note(|| format!("broker {id}: p{part} isr change at v{zk_version}: {code}"));
                // As the shard's ISR loop: a written change waits for its snapshot.
                if code != errors::NONE {
                    let not_before = (now + timing::ISR_RETRY_AFTER) as i64;
                    let r = &mut self.broker(id).parts[part];
                    r.isr_changes.failed(zk_version, Some(code), not_before);
                }
            }
            Msg::ShutdownDone if self.broker(id).stopping.is_some() => self.broker_stop(id),
            Msg::Produce { req, part, id: rec } => {
                self.leader_append(id, part, Writer::Client(req), rec, timing::REQUEST_TIMEOUT);
            }
            Msg::GroupRequest { req, call } => {
                if let Node::Consumer(k) = from {
                    self.group_request(id, k, req, call);
                }
            }
            Msg::Fetch {
                part,
                epoch,
                offset,
            } => {
                if let Node::Broker(from) = from {
                    self.leader_fetch(id, from, part, epoch, offset);
                }
            }
            Msg::EpochQuery {
                part,
                current_epoch,
                asked,
            } => {
                let r = &self.broker(id).parts[part];
                let mut code = check_leader_epoch(r.leader_epoch, current_epoch);
                if code == errors::NONE && r.role != Role::Leader {
                    code = errors::NOT_LEADER_OR_FOLLOWER;
                }
                let (epoch, end) = if code == errors::NONE {
                    r.cache.end_offset_for(LeaderEpoch(asked), Offset(r.leo()))
                } else {
                    (LeaderEpoch::NONE, Offset::NONE)
                };
                let msg = Msg::EpochAnswer {
                    part,
                    current_epoch,
                    asked,
                    code,
                    epoch: epoch.0,
                    end: end.0,
                };
                self.send(Node::Broker(id), from, msg);
            }
            answer @ Msg::EpochAnswer { .. } => {
                if let Node::Broker(leader) = from {
                    self.follower_truncate(id, leader, answer);
                }
            }
            answer @ Msg::FetchAnswer { .. } => {
                if let Node::Broker(leader) = from {
                    self.follower_append(id, leader, answer);
                }
            }
            _ => {}
        }
    }

    /// `Partition::apply_state`: the role in the new state, and what a change of role or epoch
    /// resets.
    fn apply_state(&mut self, id: i32, part: usize, state: &PartitionState) {
        let now = self.now as i64;
        let r = &mut self.broker(id).parts[part];
        let role = Role::in_state(BrokerId(id), state);
        if state.leader_epoch < r.leader_epoch && state.leader != NO_LEADER {
            let (ours, theirs) = (r.leader_epoch, state.leader_epoch);
            self.fail(format!(
                "broker {id} p{part}: leader epoch would go back from {ours} to {theirs}"
            ));
            return;
        }
        let changed = r.role != role || r.leader_epoch != state.leader_epoch;
        let old_version = r.zk_version;
        r.isr_changes
            .on_state(old_version, state.zk_version, changed);
        r.replicas = state.replicas.clone();
        r.isr = state.isr.clone();
        r.zk_version = state.zk_version;
        r.leader_epoch = r.leader_epoch.max(state.leader_epoch);
        r.role = role;
        if !changed {
            if role == Role::Leader {
                self.advance_hw(id, part);
            }
            return;
        }
        r.followers.clear();
        let leo = r.leo();
        match role {
            Role::Leader => {
                for &f in &state.replicas {
                    if f != BrokerId(id) {
                        r.followers.insert(f, FollowerState::new(now));
                    }
                }
                r.epoch_start = leo;
                r.cache.assign(LeaderEpoch(state.leader_epoch), Offset(leo));
                let epoch = state.leader_epoch;
                self.note(|| format!("broker {id}: p{part} leader in epoch {epoch} at {leo}"));
                self.check_one_leader_per_epoch(part, epoch, id);
                self.advance_hw(id, part);
            }
            Role::Follower { .. } | Role::Offline => {
                let waiters = std::mem::take(&mut r.waiters);
                let parked = std::mem::take(&mut r.parked);
                r.fetch = FetchState {
                    needs_truncation: true,
                    ..FetchState::default()
                };
                for w in waiters {
                    self.answer_produce(id, part, w, errors::NOT_LEADER_OR_FOLLOWER);
                }
                for p in parked {
                    self.answer_fetch(id, part, p.from, p.epoch, p.offset);
                }
            }
        }
    }

    fn answer_produce(&mut self, id: i32, part: usize, w: Waiter, code: i16) {
        let held = self.now - w.received;
        if held > timing::PRODUCE_ANSWER_BOUND {
            self.fail(format!(
                "broker {id} p{part}: held a produce for {held} ms (answered {code}); the bound \
                 is {} ms",
                timing::PRODUCE_ANSWER_BOUND
            ));
        }
        if code == errors::NONE && w.writer != Writer::GroupSettle {
            let (o, rec) = (w.last_offset, w.id);
            self.note(|| format!("broker {id}: p{part} acknowledges record {rec} at {o}"));
            self.record_commit(part, w.last_offset, w.id);
        }
        let Writer::Client(req) = w.writer else {
            return self.group_write_done(id, w.id, w.last_offset, code);
        };
        let msg = Msg::ProduceAnswer {
            req,
            part,
            id: w.id,
            code,
            offset: w.last_offset,
        };
        self.send(Node::Broker(id), Node::Client, msg);
    }

    /// The produce path (and the group coordinator's appends, `req` `None`): refused unless
    /// this broker leads with a valid lease; appended in the current epoch; answered when the
    /// high watermark passes it, or after `timeout`.
    /// Returns the offset of the appended batch, `None` if it was refused (and answered).
    pub(crate) fn leader_append(
        &mut self,
        id: i32,
        part: usize,
        writer: Writer,
        rec: u64,
        timeout: Time,
    ) -> Option<i64> {
        let now = self.now;
        let b = self.broker(id);
        let may_write = b.parts[part].role == Role::Leader && b.lease_left(now).is_some();
        let r = &mut b.parts[part];
        let w = Waiter {
            writer,
            id: rec,
            last_offset: r.leo(),
            received: now,
            deadline: now + timeout,
        };
        if !may_write {
            self.answer_produce(id, part, w, errors::NOT_LEADER_OR_FOLLOWER);
            return None;
        }
        // `Partition::check_min_isr`, before appending.
        if r.isr.len() < timing::MIN_INSYNC {
            self.answer_produce(id, part, w, errors::NOT_ENOUGH_REPLICAS);
            return None;
        }
        let batch = Batch {
            offset: r.leo(),
            epoch: r.leader_epoch,
            id: rec,
        };
        r.log.push(batch);
        r.cache
            .assign(LeaderEpoch(batch.epoch), Offset(batch.offset));
        r.waiters.push(w);
        self.advance_hw(id, part);
        let parked = std::mem::take(&mut self.broker(id).parts[part].parked);
        for p in parked {
            self.answer_fetch(id, part, p.from, p.epoch, p.offset);
        }
        Some(batch.offset)
    }

    /// `Partition::wait_committed` for an offset already in the log: answered at once if the
    /// high watermark is past it, else when it gets there (or the acks=all rule gives up).
    pub(crate) fn leader_wait(
        &mut self,
        id: i32,
        part: usize,
        last_offset: i64,
        rid: u64,
        timeout: Time,
    ) {
        let now = self.now;
        let r = &mut self.broker(id).parts[part];
        let w = Waiter {
            writer: Writer::GroupSettle,
            id: rid,
            last_offset,
            received: now,
            deadline: now + timeout,
        };
        if r.hw > last_offset {
            let isr = r.isr_changes.maximal(&r.isr).len();
            let code = replication::acks_committed(isr, timing::MIN_INSYNC);
            return self.answer_produce(id, part, w, code);
        }
        if r.role != Role::Leader {
            return self.answer_produce(id, part, w, errors::NOT_LEADER_OR_FOLLOWER);
        }
        r.waiters.push(w);
    }

    /// `Partition::maybe_advance_hw`: the ISR's high watermark, never backwards; waiters below
    /// it are answered.
    fn advance_hw(&mut self, id: i32, part: usize) {
        let r = &mut self.broker(id).parts[part];
        if r.role != Role::Leader {
            return;
        }
        let isr = r.isr_changes.maximal(&r.isr);
        let candidate = replication::isr_high_watermark(BrokerId(id), r.leo(), &isr, &r.followers);
        let answer = replication::acks_committed(isr.len(), timing::MIN_INSYNC);
        let hw = replication::advance_high_watermark(r.hw, candidate);
        self.set_hw(id, part, hw);
        let r = &mut self.broker(id).parts[part];
        let (done, waiting): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut r.waiters)
            .into_iter()
            .partition(|w| w.last_offset < hw);
        r.waiters = waiting;
        for w in done {
            self.answer_produce(id, part, w, answer);
        }
    }

    fn set_hw(&mut self, id: i32, part: usize, hw: i64) {
        let r = &mut self.broker(id).parts[part];
        let old = r.hw;
        r.hw = hw;
        if hw < old {
            self.fail(format!(
                "broker {id} p{part}: high watermark went back from {old} to {hw}"
            ));
        }
        self.check_committed(id, part);
    }

    /// A follower's fetch at the leader: epoch check, the follower's progress, then batches
    /// from `offset` or, with nothing to send, parked until data comes or the wait ends.
    fn leader_fetch(&mut self, id: i32, from: i32, part: usize, epoch: i32, offset: i64) {
        let now = self.now;
        let r = &mut self.broker(id).parts[part];
        let known = r.role == Role::Leader
            && check_leader_epoch(r.leader_epoch, epoch) == errors::NONE
            && offset <= r.leo();
        if known && offset == r.leo() {
            if let Some(f) = r.followers.get_mut(&BrokerId(from)) {
                f.on_fetch(offset, r.log.len() as i64, now as i64);
            }
            r.parked.push(Parked {
                from,
                epoch,
                offset,
                until: now + timing::FETCH_WAIT_MAX,
            });
            self.advance_hw(id, part);
            return;
        }
        if known {
            if let Some(f) = r.followers.get_mut(&BrokerId(from)) {
                f.on_fetch(offset, r.log.len() as i64, now as i64);
            }
            self.advance_hw(id, part);
        }
        self.answer_fetch(id, part, from, epoch, offset);
    }

    fn answer_fetch(&mut self, id: i32, part: usize, to: i32, epoch: i32, offset: i64) {
        let r = &self.broker(id).parts[part];
        let mut code = check_leader_epoch(r.leader_epoch, epoch);
        if code == errors::NONE && r.role != Role::Leader {
            code = errors::NOT_LEADER_OR_FOLLOWER;
        }
        if code == errors::NONE && offset > r.leo() {
            code = errors::OFFSET_OUT_OF_RANGE;
        }
        let batches = if code == errors::NONE {
            let end = (offset as usize + FETCH_MAX_BATCHES).min(r.log.len());
            r.log[offset as usize..end].to_vec()
        } else {
            Vec::new()
        };
        let msg = Msg::FetchAnswer {
            part,
            epoch,
            offset,
            code,
            batches,
            hw: r.hw,
        };
        self.send(Node::Broker(id), Node::Broker(to), msg);
    }

    /// Every `BROKER_TICK`: the acks=all waiters' rule, parked fetches whose wait ended, the
    /// leader's ISR check, and the replica fetcher's next request.
    pub(crate) fn broker_tick(&mut self, id: i32) {
        let now = self.now;
        let b = self.broker(id);
        if let Some(at) = b.stopping {
            if now >= at {
                self.broker_stop(id);
                return;
            }
        }
        b.ticks += 1;
        if b.ticks
            .is_multiple_of(timing::WRITEBACK_EVERY / timing::BROKER_TICK)
        {
            b.writeback();
        }
        let isr_check = b
            .ticks
            .is_multiple_of(timing::ISR_CHECK_EVERY / timing::BROKER_TICK);
        for part in 0..self.broker(id).parts.len() {
            self.tick_waiters(id, part);
            let r = &mut self.broker(id).parts[part];
            let (due, parked): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut r.parked)
                .into_iter()
                .partition(|p| p.until <= now);
            r.parked = parked;
            for p in due {
                self.answer_fetch(id, part, p.from, p.epoch, p.offset);
            }
            if isr_check {
                self.isr_check(id, part);
            }
            self.fetcher_step(id, part);
        }
    }

    /// `replication::acks_wait` for each acks=all waiter: keep waiting, or answer now (the
    /// request timed out, or the lease ended).
    fn tick_waiters(&mut self, id: i32, part: usize) {
        let now = self.now;
        let b = self.broker(id);
        let lease_left = b.lease_left(now);
        let r = &mut b.parts[part];
        let mut answers = Vec::new();
        let mut kept = Vec::new();
        for w in std::mem::take(&mut r.waiters) {
            let time_left = Duration::from_millis(w.deadline.saturating_sub(now));
            match replication::acks_wait(time_left, lease_left) {
                AcksWait::Answer(code) => answers.push((w, code)),
                AcksWait::AtMost(_) => kept.push(w),
            }
        }
        r.waiters = kept;
        for (w, code) in answers {
            self.answer_produce(id, part, w, code);
        }
    }

    /// The shard's ISR maintenance (`Partition::isr_change_due`).
    fn isr_check(&mut self, id: i32, part: usize) {
        let now = self.now;
        let b = self.broker(id);
        let Some(session) = b.session else { return };
        let alive = b.alive_view.clone();
        let r = &mut b.parts[part];
        if r.role != Role::Leader {
            return;
        }
        let view = LeaderView {
            local: BrokerId(id),
            replicas: &r.replicas,
            isr: &r.isr,
            followers: &r.followers,
            log_end_offset: r.leo(),
            high_watermark: r.hw,
            epoch_start_offset: r.epoch_start,
        };
        let Some(isr) = r.isr_changes.next(
            &view,
            r.zk_version,
            now as i64,
            timing::LAG_TIME_MAX as i64,
            |b| alive.contains(&b),
        ) else {
            return;
        };
        let (epoch, version) = (r.leader_epoch, r.zk_version);
        self.note(|| format!("broker {id}: p{part} asks isr {isr:?} (epoch {epoch}, v{version})"));
        let r = &mut self.broker(id).parts[part];
        let msg = Msg::AlterIsr {
            session,
            part,
            leader_epoch: r.leader_epoch,
            zk_version: r.zk_version,
            isr,
        };
        self.checks.count_request(self.now);
        self.send(Node::Broker(id), Node::Zk, msg);
    }

    /// The replica fetcher, for one partition: truncation by leader epoch first, then fetches
    /// from the log end, one request at a time.
    fn fetcher_step(&mut self, id: i32, part: usize) {
        let now = self.now;
        let r = &mut self.broker(id).parts[part];
        let Role::Follower { leader } = r.role else {
            return;
        };
        if let Some(sent) = r.fetch.in_flight {
            if now - sent < timing::PEER_REQUEST_TIMEOUT {
                return;
            }
            r.fetch.in_flight = None;
            r.fetch.retry_at = now + timing::FETCH_BACKOFF;
        }
        if now < r.fetch.retry_at {
            return;
        }
        let msg = if r.fetch.needs_truncation {
            match r.cache.latest_epoch() {
                Some(latest) => Msg::EpochQuery {
                    part,
                    current_epoch: r.leader_epoch,
                    asked: latest.0,
                },
                None => {
                    r.fetch.needs_truncation = false;
                    Msg::Fetch {
                        part,
                        epoch: r.leader_epoch,
                        offset: r.leo(),
                    }
                }
            }
        } else {
            Msg::Fetch {
                part,
                epoch: r.leader_epoch,
                offset: r.leo(),
            }
        };
        r.fetch.in_flight = Some(now);
        self.checks.count_request(now);
        self.send(Node::Broker(id), Node::Broker(leader.0), msg);
    }

    fn backoff_after(code: i16) -> Time {
        if code == errors::UNKNOWN_LEADER_EPOCH {
            timing::UNKNOWN_EPOCH_BACKOFF
        } else {
            timing::FETCH_BACKOFF
        }
    }

    /// Whether this answer is for the partition as it is now followed.
    fn still_follows(&mut self, id: i32, leader: i32, part: usize, epoch: i32) -> bool {
        let r = &mut self.broker(id).parts[part];
        let leader = BrokerId(leader);
        let current = r.role == Role::Follower { leader } && r.leader_epoch == epoch;
        if current {
            r.fetch.in_flight = None;
        }
        current
    }

    /// `Partition::truncate_to`: whole batches at or after `offset` go; the epoch cache is
    /// rebuilt from what is left; the high watermark is kept within the log.
    fn truncate_to(&mut self, id: i32, part: usize, offset: i64) {
        let r = &mut self.broker(id).parts[part];
        if offset >= r.leo() {
            return;
        }
        let cut: Vec<Batch> = r.log.split_off(offset.max(0) as usize);
        r.durable = r.durable.min(r.log.len());
        r.written = r.written.min(r.log.len());
        r.rebuild_cache();
        if r.hw > r.leo() {
            r.hw = r.leo();
        }
        self.stats.truncations += 1;
        self.note(|| {
            format!(
                "broker {id}: p{part} truncated to {offset} ({} batches)",
                cut.len()
            )
        });
        self.check_truncation(id, part, &cut);
    }

    /// The answer to OffsetForLeaderEpoch: `Partition::truncate_by_epoch` and what the fetcher
    /// does after it.
    fn follower_truncate(&mut self, id: i32, leader: i32, answer: Msg) {
        let Msg::EpochAnswer {
            part,
            current_epoch,
            asked,
            code,
            epoch,
            end,
        } = answer
        else {
            return;
        };
        if !self.still_follows(id, leader, part, current_epoch) {
            return;
        }
        let now = self.now;
        if code != errors::NONE {
            self.broker(id).parts[part].fetch.retry_at = now + Self::backoff_after(code);
            return;
        }
        let r = &self.broker(id).parts[part];
        let answer = LeaderAnswer {
            epoch: LeaderEpoch(epoch),
            end_offset: Offset(end),
        };
        let step =
            replication::truncation_step(&r.cache, LeaderEpoch(asked), Offset(r.leo()), answer);
        let done = match step {
            TruncationStep::Done(o) | TruncationStep::Again(o) => {
                self.truncate_to(id, part, o.0);
                let r = &mut self.broker(id).parts[part];
                let leo = Offset(r.leo());
                r.cache.forget_from(o, leo);
                matches!(step, TruncationStep::Done(_))
            }
            TruncationStep::Restart => {
                self.truncate_to(id, part, 0);
                true
            }
        };
        let r = &mut self.broker(id).parts[part];
        if done {
            r.fetch = FetchState::default();
        } else if r.cache.latest_epoch().is_some_and(|e| e.0 >= asked) {
            // No progress: the fetcher backs off rather than spin.
            r.fetch.retry_at = now + timing::FETCH_BACKOFF;
        }
    }

    /// The answer to a follower's fetch: append, or what each error makes the fetcher do.
    fn follower_append(&mut self, id: i32, leader: i32, answer: Msg) {
        let Msg::FetchAnswer {
            part,
            epoch,
            offset,
            code,
            batches,
            hw,
        } = answer
        else {
            return;
        };
        if !self.still_follows(id, leader, part, epoch) {
            return;
        }
        let now = self.now;
        if self.broker(id).parts[part].leo() != offset {
            return;
        }
        match code {
            errors::NONE => {
                let r = &mut self.broker(id).parts[part];
                if batches.first().is_some_and(|b| b.offset != r.leo()) {
                    r.fetch = FetchState {
                        needs_truncation: true,
                        retry_at: now + timing::FETCH_BACKOFF,
                        in_flight: None,
                    };
                    return;
                }
                for b in batches {
                    r.cache.assign(LeaderEpoch(b.epoch), Offset(b.offset));
                    r.log.push(b);
                }
                let hw = replication::follower_high_watermark(r.hw, hw, r.leo());
                if hw >= 0 {
                    self.set_hw(id, part, hw);
                }
            }
            errors::OFFSET_OUT_OF_RANGE => {
                self.truncate_to(id, part, hw.max(0));
                let r = &mut self.broker(id).parts[part];
                if r.leo() == offset {
                    r.fetch.retry_at = now + timing::FETCH_BACKOFF;
                }
            }
            code => {
                self.broker(id).parts[part].fetch.retry_at = now + Self::backoff_after(code);
            }
        }
    }
}

impl Broker {
    /// Restarted and not registered again yet, or lost power and not back.
    pub(crate) fn recovering(&self) -> bool {
        self.lost_power || (self.up && self.registration.is_none())
    }

    pub(crate) fn holds_waiters(&self) -> bool {
        self.parts.iter().any(|r| !r.waiters.is_empty())
    }
}
