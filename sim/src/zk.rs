//! The simulated ZooKeeper, with the controller beside it.
//!
//! ZooKeeper: sessions that expire when not heard from for the session timeout, one ephemeral
//! registration per broker (a restarted broker is refused until its old session is gone, as
//! with `/brokers/ids/<id>`), state znodes written with compare-and-swap on their version, and
//! watch events sent in order on each session's connection (a broker cut off re-reads what it
//! missed when it reconnects, if its session survived).
//!
//! The controller is the broker holding the oldest live session. It acts only while it can
//! reach ZooKeeper, a short while after the set of live brokers changes, and its decisions are
//! the broker's own `control::election` functions. Simplification: its writes and ZooKeeper's
//! checks happen in one step (the real controller reads, decides and writes with a version
//! check; two controllers racing is not simulated).

use std::collections::{BTreeMap, BTreeSet};

use shardlog_broker::base::errors;
use shardlog_broker::base::ids::{BrokerId, PartitionId};
use shardlog_broker::cluster::metadata::PartitionState;
use shardlog_broker::control::election;

use crate::{timing, Ev, Msg, Node, Time, World};

struct Session {
    broker: i32,
    last_heard: Time,
}

pub(crate) struct Zk {
    sessions: BTreeMap<u64, Session>,
    /// broker -> the session owning its registration.
    registered: BTreeMap<i32, u64>,
    next_session: u64,
    pub(crate) states: Vec<PartitionState>,
    /// Per partition: the zxid of the state znode's last write (mzxid).
    written: Vec<i64>,
    /// Per registered broker: the zxid that created its registration (czxid).
    registrations: BTreeMap<BrokerId, i64>,
    zxid: i64,
    act_scheduled: bool,
}

impl Zk {
    pub(crate) fn new(ids: &[i32], partitions: usize) -> Zk {
        let states = election::place(&BrokerId::list(ids), PartitionId(0), partitions as i32, 3)
            .into_iter()
            .map(|replicas| PartitionState {
                zk_version: 0,
                ..election::initial_state(&replicas)
            })
            .collect();
        Zk {
            sessions: BTreeMap::new(),
            registered: BTreeMap::new(),
            next_session: 1,
            written: vec![0; partitions],
            states,
            registrations: BTreeMap::new(),
            zxid: 0,
            act_scheduled: false,
        }
    }

    pub(crate) fn alive(&self) -> BTreeSet<BrokerId> {
        self.registered.keys().copied().map(BrokerId).collect()
    }

    fn controller(&self) -> Option<i32> {
        self.sessions.values().next().map(|s| s.broker)
    }

    fn live(&self, session: u64) -> Option<i32> {
        self.sessions.get(&session).map(|s| s.broker)
    }
}

impl World {
    pub(crate) fn zk_receive(&mut self, from: Node, msg: Msg) {
        let Node::Broker(id) = from else { return };
        let now = self.now;
        match msg {
            Msg::Register => {
                if self.zk.registered.contains_key(&id) {
                    self.send(Node::Zk, from, Msg::RegisterRefused);
                    return;
                }
                let session = self.zk.next_session;
                self.zk.next_session += 1;
                self.zk.sessions.insert(
                    session,
                    Session {
                        broker: id,
                        last_heard: now,
                    },
                );
                self.zk.registered.insert(id, session);
                self.zk.zxid += 1;
                let czxid = self.zk.zxid;
                self.zk.registrations.insert(BrokerId(id), czxid);
                self.note(|| format!("zk: broker {id} registered (session {session})"));
                self.send(Node::Zk, from, Msg::Registered { session, czxid });
                self.membership_changed();
                self.zk_resync(id);
            }
            Msg::Heartbeat { session, sent_at } => {
                if let Some(s) = self.zk.sessions.get_mut(&session) {
                    s.last_heard = now;
                    self.send(Node::Zk, from, Msg::HeartbeatOk { session, sent_at });
                } else {
                    self.send(Node::Zk, from, Msg::SessionExpired { session });
                }
            }
            Msg::CloseSession { session } => self.end_session(session, "closed"),
            Msg::AlterIsr {
                session,
                part,
                leader_epoch,
                zk_version,
                isr,
            } => {
                let code = self.zk_alter_isr(session, part, leader_epoch, zk_version, isr);
                self.send(
                    Node::Zk,
                    from,
                    Msg::AlterIsrDone {
                        part,
                        zk_version,
                        code,
                    },
                );
            }
            Msg::ControlledShutdown { session } => {
                if self.zk.live(session) != Some(id) || !self.controller_reachable() {
                    return;
                }
                let alive = self.zk.alive();
                for part in 0..self.zk.states.len() {
                    if let Some(next) =
                        election::shutdown_move(&self.zk.states[part], BrokerId(id), &alive)
                    {
                        self.controller_write(part, next, "controlled shutdown");
                    }
                }
                self.send(Node::Zk, from, Msg::ShutdownDone);
            }
            _ => {}
        }
    }

    /// The leader's ISR change, as the control thread checks and writes it
    /// (`control::thread::controller::alter_isr`).
    fn zk_alter_isr(
        &mut self,
        session: u64,
        part: usize,
        leader_epoch: i32,
        zk_version: i32,
        isr: Vec<BrokerId>,
    ) -> i16 {
        let Some(id) = self.zk.live(session).map(BrokerId) else {
            return errors::NOT_LEADER_OR_FOLLOWER;
        };
        let state = self.zk.states[part].clone();
        if state.leader != id || state.leader_epoch != leader_epoch {
            return errors::NOT_LEADER_OR_FOLLOWER;
        }
        if state.zk_version != zk_version {
            return errors::INVALID_UPDATE_VERSION;
        }
        if !isr.contains(&id) || isr.iter().any(|b| !state.replicas.contains(b)) {
            return errors::INVALID_REQUEST;
        }
        if isr
            .iter()
            .any(|b| !state.isr.contains(b) && !self.zk.registered.contains_key(&b.0))
        {
            return errors::INELIGIBLE_REPLICA;
        }
        // As the control thread: members registered since the state was written stay out.
        let mut isr = isr;
        let proposed = PartitionState {
            isr: isr.clone(),
            ..state.clone()
        };
        let restarted =
            election::restarted_since(&proposed, self.zk.written[part], &self.zk.registrations);
        if restarted.contains(&id) {
            return errors::NOT_LEADER_OR_FOLLOWER;
        }
        isr.retain(|b| !restarted.contains(b));
        self.zk_write(part, PartitionState { isr, ..state }, "isr change (leader)");
        errors::NONE
    }

    /// Writes a state znode (the next version) and sends the watch event to every session.
    pub(crate) fn zk_write(&mut self, part: usize, state: PartitionState, why: &str) {
        let old = &self.zk.states[part];
        let next = PartitionState {
            zk_version: old.zk_version + 1,
            ..state
        };
        if next.leader != old.leader || next.leader_epoch != old.leader_epoch {
            self.stats.leader_changes += 1;
        }
        self.note(|| {
            format!(
                "zk: p{part} leader {} epoch {} isr {:?} v{} ({why})",
                next.leader, next.leader_epoch, next.isr, next.zk_version
            )
        });
        self.zk.states[part] = next.clone();
        self.zk.zxid += 1;
        self.zk.written[part] = self.zk.zxid;
        let written = self.zk.zxid;
        for (&id, &session) in &self.zk.registered.clone() {
            let msg = Msg::State {
                session,
                part,
                state: next.clone(),
                written,
            };
            self.send(Node::Zk, Node::Broker(id), msg);
        }
    }

    /// Everything a broker's session should know, sent again (after registration, or when its
    /// connection comes back).
    pub(crate) fn zk_resync(&mut self, id: i32) {
        let Some(&session) = self.zk.registered.get(&id) else {
            return;
        };
        let alive = self.zk.alive();
        self.send(Node::Zk, Node::Broker(id), Msg::Brokers { session, alive });
        for part in 0..self.zk.states.len() {
            let state = self.zk.states[part].clone();
            let written = self.zk.written[part];
            let msg = Msg::State {
                session,
                part,
                state,
                written,
            };
            self.send(Node::Zk, Node::Broker(id), msg);
        }
    }

    pub(crate) fn zk_expire_sessions(&mut self) {
        let now = self.now;
        let expired: Vec<u64> = self
            .zk
            .sessions
            .iter()
            .filter(|(_, s)| now - s.last_heard > timing::SESSION_TIMEOUT)
            .map(|(&id, _)| id)
            .collect();
        for session in expired {
            self.end_session(session, "expired");
        }
    }

    fn end_session(&mut self, session: u64, how: &str) {
        let Some(s) = self.zk.sessions.remove(&session) else {
            return;
        };
        if self.zk.registered.get(&s.broker) == Some(&session) {
            self.zk.registered.remove(&s.broker);
            self.zk.registrations.remove(&BrokerId(s.broker));
        }
        let broker = s.broker;
        self.note(|| format!("zk: session {session} of broker {broker} {how}"));
        self.membership_changed();
    }

    fn membership_changed(&mut self) {
        let alive = self.zk.alive();
        for (&id, &session) in &self.zk.registered.clone() {
            let msg = Msg::Brokers {
                session,
                alive: alive.clone(),
            };
            self.send(Node::Zk, Node::Broker(id), msg);
        }
        if !self.zk.act_scheduled {
            self.zk.act_scheduled = true;
            let delay = self.rng.range(20, 300);
            self.at(delay, Ev::ControllerAct);
        }
    }

    fn controller_reachable(&self) -> bool {
        self.zk.controller().is_some_and(|c| self.zk_reachable(c))
    }

    /// The controller's reaction to a change of live brokers: `election::reconcile` for every
    /// partition (a lost leader replaced from the ISR, dead brokers out of the ISR).
    pub(crate) fn controller_act(&mut self) {
        self.zk.act_scheduled = false;
        if !self.controller_reachable() {
            if self.zk.controller().is_some() {
                self.zk.act_scheduled = true;
                self.at(500, Ev::ControllerAct);
            }
            return;
        }
        let alive = self.zk.alive();
        for part in 0..self.zk.states.len() {
            let state = &self.zk.states[part];
            let restarted = self.restarted(part);
            if let Some(next) = election::reconcile_or_settle(state, &alive, &restarted, false) {
                self.controller_write(part, next, "controller");
            }
        }
    }

    fn restarted(&self, part: usize) -> BTreeSet<BrokerId> {
        let state = &self.zk.states[part];
        election::restarted_since(state, self.zk.written[part], &self.zk.registrations)
    }

    /// Every controller write, as `write_states` makes it: settled for the brokers that
    /// restarted since the current state was written, and skipped if that leaves nothing new.
    fn controller_write(&mut self, part: usize, next: PartitionState, why: &str) {
        let current = self.zk.states[part].clone();
        let restarted = self.restarted(part);
        let alive = self.zk.alive();
        let settled = election::settle_restarts(&current, next, &restarted, &alive, false);
        if settled != current {
            self.zk_write(part, settled, why);
        }
    }

    /// Automatic preferred-leader rebalance (`election::rebalance`).
    pub(crate) fn controller_rebalance(&mut self) {
        if !self.controller_reachable() {
            return;
        }
        let alive = self.zk.alive();
        let parts: Vec<(usize, PartitionState)> =
            self.zk.states.iter().cloned().enumerate().collect();
        for (part, next) in election::rebalance(&parts, &alive, 10) {
            self.controller_write(part, next, "preferred leader");
        }
    }
}
