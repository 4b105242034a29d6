//! A deterministic simulator of a Shardlog cluster, in the spirit of FoundationDB's simulation
//! tests and TigerBeetle's VOPR.
//!
//! Three brokers, a ZooKeeper, a producing client, a consumer group of three and the network
//! between them are one single-threaded world driven by an event queue and a clock that only moves when the next
//! event is taken; every random choice (delays, losses, faults, the client's load) comes from
//! one seeded generator, so a seed replays exactly. The decisions are the broker's own code:
//! the controller's (`control::election`: reconcile after a broker is lost, controlled
//! shutdown, preferred-leader rebalance), the replication rules (`partition::replication`:
//! follower progress, high watermark, ISR shrink and expand, epoch cache, truncation steps,
//! the acks=all waiter's lease rule) and the leader-epoch check of the request path
//! (`cluster::metadata::check_leader_epoch`). The glue around them (`replica`) follows the
//! broker's partition, replica fetcher and control thread step by step; `zk` plays ZooKeeper
//! (sessions, expiry, ephemeral registrations, compare-and-swap on state znodes, in-order
//! delivery of watch events) together with the controller; `group` runs the consumer group
//! coordinator (the `shardlog-coordinator` state machine) on the leader of a replicated
//! `__consumer_offsets` partition, as the broker's `groups/coordinator.rs` carries it, and the
//! consumers that use it.
//!
//! Faults: process crashes (the log survives, as with kill -9: the page cache keeps it) and
//! restarts, controlled shutdowns, network partitions (a broker cut from everyone, from
//! ZooKeeper only, from one peer, or from everyone but its clients), message loss, delay
//! spikes and reordering across connections; consumers crash, stall past their session
//! (zombies) and leave. After the faults the network heals and every
//! broker runs; the run then checks that the cluster recovers and goes quiet. `checks` lists
//! the properties; the first violation ends the run with the seed that replays it.

mod checks;
pub mod group;
mod replica;
pub mod rng;
mod zk;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use shardlog_broker::cluster::metadata::PartitionState;

use crate::replica::Broker;
use crate::rng::Rng;
use crate::zk::Zk;

/// Simulated milliseconds since the start of the run.
pub type Time = u64;

/// Timing of the simulated cluster, chosen like a test cluster's settings (scaled down so that
/// a seed covers many faults).
pub mod timing {
    use super::Time;
    pub const SESSION_TIMEOUT: Time = 6_000;
    /// The lease: 2/3 of the session from the heartbeat that proved it, renewed every 1/6.
    pub const LEASE: Time = SESSION_TIMEOUT * 2 / 3;
    pub const HEARTBEAT_EVERY: Time = SESSION_TIMEOUT / 6;
    pub const LAG_TIME_MAX: Time = 4_000;
    pub const REQUEST_TIMEOUT: Time = 30_000;
    pub const FETCH_WAIT_MAX: Time = 500;
    pub const FETCH_BACKOFF: Time = 1_000;
    pub const UNKNOWN_EPOCH_BACKOFF: Time = 100;
    pub const ISR_CHECK_EVERY: Time = 250;
    pub const ISR_RETRY_AFTER: Time = 1_000;
    pub const BROKER_TICK: Time = 50;
    /// A follower gives up on an unanswered request after this long (connection timeout).
    pub const PEER_REQUEST_TIMEOUT: Time = 3_000;
    pub const REBALANCE_EVERY: Time = 5_000;
    /// `min.insync.replicas` of the simulated topic (3 replicas).
    pub const MIN_INSYNC: usize = 2;
    /// The page cache reaches the disk this often (what was written before the previous
    /// writeback is durable).
    pub const WRITEBACK_EVERY: Time = 5_000;
    /// Two power losses at least this far apart: closer, both copies of an acknowledged record
    /// may still be in page caches, which no replication protocol survives.
    pub const POWER_LOSS_APART: Time = 30_000;
    /// The longest a broker may hold a produce it received: the ISR shrink after a follower
    /// is lost, or the end of the lease of a leader cut off from ZooKeeper, plus slack.
    pub const PRODUCE_ANSWER_BOUND: Time = LAG_TIME_MAX + SESSION_TIMEOUT + 2_000;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    Zk,
    Client,
    Broker(i32),
    Consumer(u8),
}

/// One record, as its own batch: where it is, the leader epoch that wrote it, and which of the
/// client's records it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub offset: i64,
    pub epoch: i32,
    pub id: u64,
}

#[derive(Debug, Clone)]
pub enum Msg {
    // broker -> ZooKeeper (its control thread's requests)
    Register,
    Heartbeat {
        session: u64,
        sent_at: Time,
    },
    AlterIsr {
        session: u64,
        part: usize,
        leader_epoch: i32,
        zk_version: i32,
        isr: Vec<shardlog_broker::base::ids::BrokerId>,
    },
    ControlledShutdown {
        session: u64,
    },
    CloseSession {
        session: u64,
    },
    // ZooKeeper -> broker (answers and watch events, in order per session)
    Registered {
        session: u64,
        czxid: i64,
    },
    RegisterRefused,
    HeartbeatOk {
        session: u64,
        sent_at: Time,
    },
    SessionExpired {
        session: u64,
    },
    State {
        session: u64,
        part: usize,
        state: PartitionState,
        /// The zxid of the state znode's last write.
        written: i64,
    },
    Brokers {
        session: u64,
        alive: BTreeSet<shardlog_broker::base::ids::BrokerId>,
    },
    AlterIsrDone {
        part: usize,
        zk_version: i32,
        code: i16,
    },
    ShutdownDone,
    // broker <-> broker (replication)
    EpochQuery {
        part: usize,
        current_epoch: i32,
        asked: i32,
    },
    EpochAnswer {
        part: usize,
        current_epoch: i32,
        asked: i32,
        code: i16,
        epoch: i32,
        end: i64,
    },
    Fetch {
        part: usize,
        epoch: i32,
        offset: i64,
    },
    FetchAnswer {
        part: usize,
        epoch: i32,
        offset: i64,
        code: i16,
        batches: Vec<Batch>,
        hw: i64,
    },
    // client <-> broker
    Produce {
        req: u64,
        part: usize,
        id: u64,
    },
    ProduceAnswer {
        req: u64,
        part: usize,
        id: u64,
        code: i16,
        offset: i64,
    },
    // consumer <-> the group coordinator
    GroupRequest {
        req: u64,
        call: group::GroupCall,
    },
    GroupAnswer {
        req: u64,
        reply: group::GroupReply,
    },
}

#[derive(Debug)]
enum Ev {
    Deliver {
        from: Node,
        to: Node,
        to_incarnation: u64,
        msg: Msg,
    },
    /// An answer a broker's control thread gives itself (a ZooKeeper request failed).
    Local {
        id: i32,
        incarnation: u64,
        msg: Msg,
    },
    BrokerTick {
        id: i32,
        incarnation: u64,
    },
    Heartbeat {
        id: i32,
        incarnation: u64,
    },
    ZkTick,
    ControllerAct,
    Rebalance,
    ClientTick,
    Fault,
    Restart {
        id: i32,
    },
    Heal {
        cut: Vec<(Node, Node)>,
    },
    LossEnds,
    EndFaults,
    EndLoad,
    GroupTimer {
        id: i32,
        serial: u64,
        key: shardlog_coordinator::TimerKey,
        deadline: i64,
    },
    ConsumerTick {
        k: u8,
        incarnation: u64,
    },
    ConsumerFault,
    ConsumerRestart {
        k: u8,
    },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub partitions: usize,
    /// How long faults are injected.
    pub fault_ms: Time,
    /// After the faults: produce on a healed cluster this long, then stay idle `idle_ms`.
    pub settle_ms: Time,
    pub idle_ms: Time,
    /// Keep a line per notable event (for replaying a failing seed).
    pub trace: bool,
}

impl Options {
    pub fn seed(seed: u64) -> Options {
        Options {
            seed,
            partitions: 4,
            fault_ms: 60_000,
            settle_ms: 10_000,
            idle_ms: 30_000,
            trace: false,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub events: u64,
    pub faults: u64,
    pub produced: u64,
    pub acked: u64,
    pub leader_changes: u64,
    pub truncations: u64,
    /// Assignments consumers received (SyncGroup answers).
    pub assignments: u64,
    pub commits_acked: u64,
}

#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    /// The first property that failed, with the simulated time; `None`: the seed passed.
    pub violation: Option<String>,
    pub stats: Stats,
    pub trace: Vec<String>,
}

/// Runs one seed to its end or to its first violation.
pub fn run(opts: &Options) -> Outcome {
    let mut w = World::new(opts.clone());
    w.run();
    Outcome {
        seed: opts.seed,
        violation: w.violation.take(),
        stats: w.stats.clone(),
        trace: std::mem::take(&mut w.trace),
    }
}

/// The producing client: acks=all, one record per request, to the leader ZooKeeper names
/// (its metadata), retried by the load rather than resent.
#[derive(Default)]
struct Client {
    next_req: u64,
    next_id: u64,
    /// Per partition: offset -> record id of every acknowledged record.
    acked: Vec<BTreeMap<i64, u64>>,
    producing: bool,
    burst_until: Time,
}

pub(crate) struct World {
    opts: Options,
    now: Time,
    seq: u64,
    queue: BinaryHeap<Reverse<(Time, u64)>>,
    events: BTreeMap<u64, Ev>,
    rng: Rng,
    zk: Zk,
    brokers: BTreeMap<i32, Broker>,
    client: Client,
    /// Pairs of nodes that cannot reach each other (both directions).
    cuts: BTreeSet<(Node, Node)>,
    /// Per connection, when its last message arrives: connections deliver in order.
    link_free_at: BTreeMap<(Node, Node), Time>,
    loss_per_mille: u64,
    faults_on: bool,
    last_power_loss: Option<Time>,
    /// Brokers stopped by a fault, waiting for their restart.
    down: BTreeSet<i32>,
    pub(crate) checks: checks::State,
    pub(crate) groups: group::Groups,
    violation: Option<String>,
    stats: Stats,
    trace: Vec<String>,
}

impl World {
    fn new(opts: Options) -> World {
        let ids = [1, 2, 3];
        let mut rng = Rng::new(opts.seed);
        // The topic's partitions, then `__consumer_offsets`.
        let all = opts.partitions + 1;
        let zk = Zk::new(&ids, all);
        let brokers = ids.iter().map(|&id| (id, Broker::new(id, all))).collect();
        let client = Client {
            acked: vec![BTreeMap::new(); opts.partitions],
            ..Client::default()
        };
        let checks = checks::State::new(all);
        let first_fault = rng.range(2_000, 5_000);
        let mut w = World {
            opts,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            rng,
            zk,
            brokers,
            client,
            cuts: BTreeSet::new(),
            link_free_at: BTreeMap::new(),
            loss_per_mille: 2,
            faults_on: true,
            last_power_loss: None,
            down: BTreeSet::new(),
            checks,
            groups: group::Groups::new(),
            violation: None,
            stats: Stats::default(),
            trace: Vec::new(),
        };
        for id in ids {
            w.start_broker(id);
        }
        w.at(100, Ev::ZkTick);
        w.at(timing::REBALANCE_EVERY, Ev::Rebalance);
        w.at(1_000, Ev::ClientTick);
        w.at(first_fault, Ev::Fault);
        for k in 0..group::CONSUMERS {
            w.at(500 + 300 * k as Time, Ev::ConsumerRestart { k });
        }
        let first_consumer_fault = w.rng.range(5_000, 10_000);
        w.at(first_consumer_fault, Ev::ConsumerFault);
        let end_faults = w.opts.fault_ms;
        w.at(end_faults, Ev::EndFaults);
        let end_load = end_faults + w.opts.settle_ms;
        w.at(end_load, Ev::EndLoad);
        w
    }

    fn end_time(&self) -> Time {
        self.opts.fault_ms + self.opts.settle_ms + self.opts.idle_ms
    }

    fn run(&mut self) {
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            if t > self.end_time() || self.violation.is_some() {
                break;
            }
            self.now = t;
            let ev = self.events.remove(&seq).expect("queued event");
            self.stats.events += 1;
            self.handle(ev);
        }
        if self.violation.is_none() {
            self.final_checks();
        }
        if self.violation.is_none() {
            self.final_group_checks();
        }
        self.stats.assignments = self.groups.rebalances;
        self.stats.commits_acked = self.groups.commits_acked;
    }

    fn at(&mut self, delay: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay, self.seq)));
        self.events.insert(self.seq, ev);
    }

    pub(crate) fn note(&mut self, line: impl FnOnce() -> String) {
        if self.opts.trace {
            let line = format!("{:>7} {}", self.now, line());
            self.trace.push(line);
        }
    }

    pub(crate) fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            let line = format!("at {} ms: {what}", self.now);
            self.note(|| format!("VIOLATION {line}"));
            self.violation = Some(line);
        }
    }

    fn is_cut(&self, a: Node, b: Node) -> bool {
        self.cuts.contains(&(a.min(b), a.max(b)))
    }

    pub(crate) fn zk_reachable(&self, id: i32) -> bool {
        !self.is_cut(Node::Broker(id), Node::Zk)
    }

    /// Sends `msg`: it arrives after a random delay, after everything sent earlier on the same
    /// connection, unless the two are cut apart when it would arrive, the receiver restarted
    /// meanwhile (the connection broke), or it is lost. ZooKeeper's connections are never
    /// lossy: a lost packet there is a lost session, which the cuts model.
    pub(crate) fn send(&mut self, from: Node, to: Node, msg: Msg) {
        if self.is_cut(from, to) {
            self.lost(from, to, msg);
            return;
        }
        let to_zk = from == Node::Zk || to == Node::Zk;
        if !to_zk && self.rng.chance(self.loss_per_mille) {
            return;
        }
        let delay = if self.rng.chance(30) {
            self.rng.range(20, 250)
        } else {
            self.rng.range(1, 6)
        };
        let link = (from, to);
        let arrive = (self.now + delay).max(self.link_free_at.get(&link).copied().unwrap_or(0));
        self.link_free_at.insert(link, arrive);
        let to_incarnation = match to {
            Node::Broker(id) => self.brokers[&id].incarnation,
            _ => 0,
        };
        let ev = Ev::Deliver {
            from,
            to,
            to_incarnation,
            msg,
        };
        self.at(arrive - self.now, ev);
    }

    /// A message that did not arrive. The control thread's ZooKeeper client reports a lost
    /// connection to the requests it had sent (after about the lease's length), so an ISR
    /// change always gets an answer; everything else is just gone.
    fn lost(&mut self, from: Node, to: Node, msg: Msg) {
        if let (
            Node::Broker(id),
            Node::Zk,
            Msg::AlterIsr {
                part, zk_version, ..
            },
        ) = (from, to, &msg)
        {
            let incarnation = self.brokers[&id].incarnation;
            let msg = Msg::AlterIsrDone {
                part: *part,
                zk_version: *zk_version,
                code: shardlog_broker::base::errors::REQUEST_TIMED_OUT,
            };
            self.at(
                timing::LEASE,
                Ev::Local {
                    id,
                    incarnation,
                    msg,
                },
            );
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                from,
                to,
                to_incarnation,
                msg,
            } => {
                if self.is_cut(from, to) {
                    self.lost(from, to, msg);
                    return;
                }
                match to {
                    Node::Zk => self.zk_receive(from, msg),
                    Node::Client => self.client_receive(msg),
                    Node::Consumer(k) => {
                        if let Msg::GroupAnswer { req, reply } = msg {
                            self.consumer_receive(k, req, reply);
                        }
                    }
                    Node::Broker(id) => {
                        let b = &self.brokers[&id];
                        if b.up && b.incarnation == to_incarnation {
                            self.broker_receive(id, from, msg);
                        }
                    }
                }
            }
            Ev::Local {
                id,
                incarnation,
                msg,
            } => {
                let b = &self.brokers[&id];
                if b.up && b.incarnation == incarnation {
                    self.broker_receive(id, Node::Zk, msg);
                }
            }
            Ev::BrokerTick { id, incarnation } => {
                let b = &self.brokers[&id];
                if b.up && b.incarnation == incarnation {
                    self.broker_tick(id);
                    self.at(timing::BROKER_TICK, Ev::BrokerTick { id, incarnation });
                }
            }
            Ev::Heartbeat { id, incarnation } => {
                let b = &self.brokers[&id];
                if b.up && b.incarnation == incarnation {
                    self.broker_heartbeat(id);
                    self.at(timing::HEARTBEAT_EVERY, Ev::Heartbeat { id, incarnation });
                }
            }
            Ev::ZkTick => {
                self.zk_expire_sessions();
                self.at(100, Ev::ZkTick);
            }
            Ev::ControllerAct => self.controller_act(),
            Ev::Rebalance => {
                self.controller_rebalance();
                self.at(timing::REBALANCE_EVERY, Ev::Rebalance);
            }
            Ev::ClientTick => self.client_tick(),
            Ev::Fault => self.inject_fault(),
            Ev::Restart { id } => {
                if self.down.remove(&id) {
                    self.start_broker(id);
                }
            }
            Ev::Heal { cut } => {
                for pair in cut {
                    self.heal(pair);
                }
            }
            Ev::LossEnds if self.faults_on => self.loss_per_mille = 2,
            Ev::LossEnds => {}
            Ev::GroupTimer {
                id,
                serial,
                key,
                deadline,
            } => {
                if self.brokers[&id].up {
                    self.group_timer(id, serial, key, deadline);
                }
            }
            Ev::ConsumerTick { k, incarnation } => self.consumer_tick(k, incarnation),
            Ev::ConsumerFault => self.consumer_fault(),
            Ev::ConsumerRestart { k } => self.consumer_restart(k),
            Ev::EndFaults => {
                self.faults_on = false;
                self.loss_per_mille = 0;
                for pair in self.cuts.clone() {
                    self.heal(pair);
                }
                for id in std::mem::take(&mut self.down) {
                    self.start_broker(id);
                }
                self.consumers_heal();
                self.note(|| "faults end; network healed, every broker running".into());
            }
            Ev::EndLoad => {
                self.client.producing = false;
                self.checks.idle_from = Some(self.now);
                self.note(|| "load ends; the cluster should go quiet".into());
            }
        }
    }

    fn heal(&mut self, pair: (Node, Node)) {
        if !self.cuts.remove(&pair) {
            return;
        }
        self.note(|| format!("heal {:?} <-> {:?}", pair.0, pair.1));
        // A broker back in touch with ZooKeeper re-reads what it missed (its watches fire on
        // reconnection), if its session is still alive.
        for (a, b) in [pair, (pair.1, pair.0)] {
            if let (Node::Zk, Node::Broker(id)) = (a, b) {
                self.zk_resync(id);
            }
        }
    }

    fn cut(&mut self, pairs: &[(Node, Node)], for_ms: Time) {
        let pairs: Vec<(Node, Node)> = pairs.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
        for &p in &pairs {
            self.cuts.insert(p);
        }
        self.note(|| format!("cut {pairs:?} for {for_ms} ms"));
        self.at(for_ms, Ev::Heal { cut: pairs });
    }

    fn start_broker(&mut self, id: i32) {
        let now = self.now;
        let b = self.brokers.get_mut(&id).expect("broker");
        b.start(now);
        let incarnation = b.incarnation;
        self.note(|| format!("broker {id} starts"));
        self.at(0, Ev::Heartbeat { id, incarnation });
        self.at(timing::BROKER_TICK, Ev::BrokerTick { id, incarnation });
    }

    /// The next fault, one at a time (a broker down or cut off, then everything healed before
    /// the next one), so that two of three replicas stay reachable most of the time. A broker
    /// that restarted counts as failed until it has registered again (the controller then
    /// knows it restarted): a power loss before that is a second failure, which three
    /// replicas with `min.insync.replicas` 2 do not promise to survive (a partition whose
    /// last in-sync replica lost unflushed records; Kafka's KIP-966 is about that case).
    fn inject_fault(&mut self) {
        if !self.faults_on {
            return;
        }
        let recovering = self.brokers.values().any(|b| b.recovering());
        if !self.cuts.is_empty() || !self.down.is_empty() || recovering {
            self.at(500, Ev::Fault);
            return;
        }
        self.stats.faults += 1;
        let id = self.rng.pick(&[1, 2, 3]);
        let me = Node::Broker(id);
        let peers: Vec<Node> = [1, 2, 3]
            .into_iter()
            .filter(|&p| p != id)
            .map(Node::Broker)
            .collect();
        let for_ms = self.rng.range(500, 12_000);
        // A power loss only with every ISR full: one that hits the last in-sync replica of a
        // partition loses what it had not flushed, in Kafka as here (KIP-966's case), and
        // that would be a second failure on top of whatever shrank the ISR.
        let power_loss_ok = self
            .last_power_loss
            .is_none_or(|t| self.now >= t + timing::POWER_LOSS_APART)
            && self
                .zk
                .states
                .iter()
                .all(|s| s.isr.len() == s.replicas.len());
        match self.rng.range(0, 8) {
            8 if power_loss_ok => {
                self.note(|| format!("power loss of broker {id} for {for_ms} ms"));
                self.last_power_loss = Some(self.now);
                let rng = &mut self.rng;
                self.brokers
                    .get_mut(&id)
                    .expect("broker")
                    .power_loss(|durable, len| rng.range(durable as u64, len as u64) as usize);
                self.coordinator_drop(id);
                self.down.insert(id);
                self.at(for_ms, Ev::Restart { id });
            }
            0 | 1 | 8 => {
                self.note(|| format!("crash broker {id} (kill -9) for {for_ms} ms"));
                self.brokers.get_mut(&id).expect("broker").crash();
                self.coordinator_drop(id);
                self.down.insert(id);
                self.at(for_ms, Ev::Restart { id });
            }
            2 => {
                self.note(|| format!("controlled shutdown of broker {id}"));
                self.broker_controlled_shutdown(id, for_ms);
            }
            3 => {
                let consumers = (0..group::CONSUMERS).map(Node::Consumer);
                let pairs: Vec<(Node, Node)> = peers
                    .iter()
                    .copied()
                    .chain([Node::Zk, Node::Client])
                    .chain(consumers)
                    .map(|p| (me, p))
                    .collect();
                self.cut(&pairs, for_ms);
            }
            4 => {
                // Cut from ZooKeeper and its peers, still reachable by clients: an isolated
                // leader that must stop accepting and answering writes.
                let pairs: Vec<(Node, Node)> = peers
                    .iter()
                    .chain([Node::Zk].iter())
                    .map(|&p| (me, p))
                    .collect();
                self.cut(&pairs, for_ms.max(timing::SESSION_TIMEOUT + 2_000));
            }
            5 => self.cut(&[(me, Node::Zk)], for_ms),
            6 => {
                let other = self.rng.pick(&peers);
                self.cut(&[(me, other)], for_ms);
            }
            _ => {
                self.loss_per_mille = 100;
                self.note(|| format!("10 % message loss for {for_ms} ms"));
                self.at(for_ms, Ev::LossEnds);
            }
        }
        let next = self.rng.range(1_000, 6_000);
        self.at(for_ms + next, Ev::Fault);
    }

    /// The load: bursts of produce requests with idle gaps (so that leaders are elected and
    /// moved while nothing is written, the case of the ISR collapse).
    fn client_tick(&mut self) {
        if self.now >= self.opts.fault_ms + self.opts.settle_ms {
            return;
        }
        if self.now >= self.client.burst_until {
            self.client.producing = !self.client.producing || self.now >= self.opts.fault_ms;
            let len = if self.client.producing {
                self.rng.range(500, 4_000)
            } else {
                self.rng.range(1_000, 8_000)
            };
            self.client.burst_until = self.now + len;
        }
        if self.client.producing {
            let part = self.rng.range(0, self.opts.partitions as u64 - 1) as usize;
            let leader = self.zk.states[part].leader;
            if leader.0 > 0 {
                self.client.next_req += 1;
                self.client.next_id += 1;
                self.stats.produced += 1;
                let msg = Msg::Produce {
                    req: self.client.next_req,
                    part,
                    id: self.client.next_id,
                };
                self.send(Node::Client, Node::Broker(leader.0), msg);
            }
        }
        let next = self.rng.range(10, 80);
        self.at(next, Ev::ClientTick);
    }

    fn client_receive(&mut self, msg: Msg) {
        if let Msg::ProduceAnswer {
            part,
            id,
            code,
            offset,
            ..
        } = msg
        {
            if code != 0 {
                return;
            }
            self.stats.acked += 1;
            if let Some(other) = self.client.acked[part].insert(offset, id) {
                self.fail(format!(
                    "partition {part}: offset {offset} acknowledged for record {other} and \
                     again for record {id}: one of them is lost"
                ));
            }
        }
    }
}
