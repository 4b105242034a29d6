//! Randomized operation sequences from several clients (dynamic and static), with time passing,
//! stale timers, offset traffic and coordinator failovers (unload + reload from the log),
//! checking invariants after every step:
//!
//! - the manager's internal consistency (`check_invariants`), and Kafka's legal state
//!   transitions (asserted inside the manager in debug builds);
//! - every reply token is answered at most once, and by the end exactly once;
//! - per generation, at most one client is told it leads;
//! - generations of a group never go down (within one coordinator incarnation);
//! - in Stable, every member has a non-empty assignment, and every successful SyncGroup returns
//!   what the leader assigned to one of that client's member ids.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use common::*;
use shardlog_coordinator::{
    codes, GroupConfig, GroupManager, GroupState, HeartbeatRequest, LeavingMember,
    OffsetFetchGroup, ReplyToken, SeededMemberIds, SyncRequest, TimerKey,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const PROTOCOL_SETS: &[&[(&str, &str)]] = &[
    &[("range", "")],
    &[("range", ""), ("roundrobin", "")],
    &[("roundrobin", ""), ("range", "")],
    &[("cooperative-sticky", ""), ("range", "")],
    &[("roundrobin", "")],
];

#[derive(Default)]
struct Client {
    instance: Option<String>,
    member_id: String,
    generation: i32,
    is_leader: bool,
    members_to_assign: Vec<String>,
    protocols: usize,
    pending_join: Option<ReplyToken>,
    pending_sync: Option<(ReplyToken, i32)>,
    ever_ids: BTreeSet<String>,
    needs_sync: bool,
}

struct World {
    sim: Sim,
    rng: Rng,
    clients: Vec<Client>,
    issued: BTreeSet<ReplyToken>,
    leaders: BTreeMap<i32, usize>,
    last_generation: Option<i32>,
    stats: BTreeMap<&'static str, u64>,
}

impl World {
    fn new(seed: u64) -> Self {
        let config = GroupConfig {
            group_initial_rebalance_delay_ms: if seed & 1 == 0 { 0 } else { 500 },
            group_max_size: 4,
            ..test_config()
        };
        let mut rng = Rng(seed);
        let clients = (0..5)
            .map(|i| Client {
                instance: (i < 2).then(|| format!("inst-{i}")),
                protocols: rng.below(4) as usize,
                generation: -1,
                ..Client::default()
            })
            .collect();
        World {
            sim: Sim::with_manager(
                GroupManager::new(config, Box::new(SeededMemberIds::new(seed))).unwrap(),
            ),
            rng,
            clients,
            issued: BTreeSet::new(),
            leaders: BTreeMap::new(),
            last_generation: None,
            stats: BTreeMap::new(),
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_insert(0) += 1;
    }

    fn protocols(&self, c: usize) -> Vec<(String, Bytes)> {
        protocols(PROTOCOL_SETS[self.clients[c].protocols])
    }

    fn join(&mut self, c: usize) {
        if self.clients[c].pending_join.is_some() && !self.rng.chance(10) {
            return;
        }
        let mut req = join_req(&format!("client{c}"), &self.clients[c].member_id, &[]);
        req.protocols = self.protocols(c);
        req.group_instance_id = self.clients[c].instance.clone();
        req.require_known_member_id = !self.rng.chance(10);
        req.supports_skip_assignment = self.rng.chance(50);
        req.session_timeout_ms = 6_000 + 1_000 * self.rng.below(6) as i32;
        req.rebalance_timeout_ms = 5_000 + 1_000 * self.rng.below(20) as i32;
        let t = self.sim.join(req);
        self.issued.insert(t);
        self.clients[c].pending_join = Some(t);
    }

    fn sync(&mut self, c: usize) {
        let client = &self.clients[c];
        if client.member_id.is_empty() || client.pending_sync.is_some() {
            return;
        }
        let generation = client.generation;
        let assignments = if client.is_leader {
            client
                .members_to_assign
                .iter()
                .map(|m| (m.clone(), Bytes::from(format!("{m}@{generation}"))))
                .collect()
        } else if self.rng.chance(10) {
            // A follower pretending to assign: must be ignored.
            vec![(client.member_id.clone(), Bytes::from_static(b"bogus@0"))]
        } else {
            Vec::new()
        };
        let req = SyncRequest {
            group_id: GROUP.into(),
            generation_id: generation,
            member_id: client.member_id.clone(),
            group_instance_id: client.instance.clone(),
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments,
        };
        let t = self.sim.sync(req);
        self.issued.insert(t);
        self.clients[c].pending_sync = Some((t, generation));
        self.clients[c].needs_sync = false;
    }

    fn heartbeat(&mut self, c: usize) {
        let client = &self.clients[c];
        let (code, effects) = self.sim.mgr.heartbeat(
            self.sim.now,
            HeartbeatRequest {
                group_id: GROUP.into(),
                generation_id: client.generation,
                member_id: client.member_id.clone(),
                group_instance_id: client.instance.clone(),
            },
        );
        self.sim.apply(effects);
        if code == codes::FENCED_INSTANCE_ID {
            self.count("fenced");
        }
        match code {
            codes::REBALANCE_IN_PROGRESS => self.join(c),
            codes::UNKNOWN_MEMBER_ID | codes::FENCED_INSTANCE_ID => self.reset(c),
            codes::ILLEGAL_GENERATION => self.join(c),
            _ => {}
        }
    }

    fn commit(&mut self, c: usize) {
        let (member, generation) = if self.rng.chance(20) {
            (String::new(), -1)
        } else {
            (
                self.clients[c].member_id.clone(),
                self.clients[c].generation,
            )
        };
        let code = self
            .sim
            .commit(&member, generation, "t", c as i32, self.sim.now);
        assert!(
            [
                codes::NONE,
                codes::UNKNOWN_MEMBER_ID,
                codes::ILLEGAL_GENERATION,
                codes::REBALANCE_IN_PROGRESS,
                codes::FENCED_INSTANCE_ID,
            ]
            .contains(&code),
            "commit answered {code}"
        );
    }

    fn leave(&mut self, c: usize) {
        if self.clients[c].member_id.is_empty() {
            return;
        }
        let (r, effects) = self.sim.mgr.leave(
            self.sim.now,
            GROUP,
            vec![LeavingMember {
                member_id: self.clients[c].member_id.clone(),
                group_instance_id: self.clients[c].instance.clone(),
            }],
        );
        self.sim.apply(effects);
        assert_eq!(r.error_code, codes::NONE);
        self.reset(c);
    }

    /// What the Java client does on UNKNOWN_MEMBER_ID: forget its id and generation.
    fn reset(&mut self, c: usize) {
        let client = &mut self.clients[c];
        client.member_id.clear();
        client.generation = -1;
        client.is_leader = false;
        client.needs_sync = false;
    }

    fn collect_replies(&mut self) {
        for c in 0..self.clients.len() {
            if let Some(t) = self.clients[c].pending_join {
                if let Some(r) = self.sim.join_reply(t).cloned() {
                    self.clients[c].pending_join = None;
                    self.count(match r.error_code {
                        codes::NONE if r.skip_assignment => "join skip_assignment",
                        codes::NONE => "join ok",
                        codes::MEMBER_ID_REQUIRED => "join member_id_required",
                        codes::FENCED_INSTANCE_ID => "fenced",
                        codes::INCONSISTENT_GROUP_PROTOCOL => "join inconsistent",
                        codes::GROUP_MAX_SIZE_REACHED => "join max size",
                        _ => "join other error",
                    });
                    match r.error_code {
                        codes::NONE => {
                            let client = &mut self.clients[c];
                            client.member_id = r.member_id.clone();
                            client.ever_ids.insert(r.member_id.clone());
                            client.generation = r.generation_id;
                            client.is_leader = r.leader == r.member_id && !r.skip_assignment;
                            client.members_to_assign =
                                r.members.iter().map(|m| m.member_id.clone()).collect();
                            client.needs_sync = true;
                            if r.leader == r.member_id {
                                let previous = self.leaders.insert(r.generation_id, c);
                                assert!(
                                    !matches!(previous, Some(p) if p != c),
                                    "two leaders in generation {}",
                                    r.generation_id
                                );
                            }
                            if client.is_leader {
                                assert!(!r.members.is_empty(), "a leader without members");
                            }
                        }
                        codes::MEMBER_ID_REQUIRED => {
                            self.clients[c].member_id = r.member_id.clone();
                            self.join(c);
                        }
                        codes::UNKNOWN_MEMBER_ID | codes::FENCED_INSTANCE_ID => self.reset(c),
                        codes::REBALANCE_IN_PROGRESS
                        | codes::INCONSISTENT_GROUP_PROTOCOL
                        | codes::GROUP_MAX_SIZE_REACHED
                        | codes::NOT_COORDINATOR
                        | codes::COORDINATOR_LOAD_IN_PROGRESS => {}
                        other => panic!("unexpected JoinGroup error {other}"),
                    }
                }
            }
            if let Some((t, generation)) = self.clients[c].pending_sync {
                if let Some(r) = self.sim.sync_reply(t).cloned() {
                    self.clients[c].pending_sync = None;
                    self.count(if r.error_code == codes::NONE {
                        "sync ok"
                    } else {
                        "sync error"
                    });
                    match r.error_code {
                        codes::NONE => {
                            let text = String::from_utf8(r.assignment.to_vec()).unwrap();
                            let (owner, g) = text.rsplit_once('@').expect("an assignment");
                            assert!(
                                self.clients[c].ever_ids.contains(owner),
                                "client {c} got {text}"
                            );
                            assert!(g.parse::<i32>().unwrap() <= generation);
                        }
                        codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION => self.join(c),
                        codes::UNKNOWN_MEMBER_ID | codes::FENCED_INSTANCE_ID => self.reset(c),
                        codes::INCONSISTENT_GROUP_PROTOCOL | codes::NOT_COORDINATOR => {}
                        other => panic!("unexpected SyncGroup error {other}"),
                    }
                }
            }
        }
    }

    fn failover(&mut self) {
        let effects = self.sim.mgr.unload();
        self.sim.apply(effects);
        self.collect_replies();
        let records: Vec<_> = self
            .sim
            .log
            .iter()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        let config = self.sim.mgr.config().clone();
        let (mgr, effects) = GroupManager::load(
            config,
            Box::new(SeededMemberIds::new(self.rng.next())),
            records,
            self.sim.now,
        )
        .unwrap();
        self.sim.mgr = mgr;
        self.sim.apply(effects);
        // Generations formed but never persisted are forgotten, and may be formed again.
        self.leaders.clear();
        self.last_generation = None;
    }

    fn step(&mut self) {
        let c = self.rng.below(self.clients.len() as u64) as usize;
        match self.rng.below(100) {
            0..=24 => {
                if self.clients[c].needs_sync {
                    self.sync(c)
                } else if self.clients[c].member_id.is_empty() || self.rng.chance(20) {
                    self.join(c)
                } else {
                    self.heartbeat(c)
                }
            }
            25..=34 => self.join(c),
            35..=44 => self.sync(c),
            45..=59 => self.heartbeat(c),
            60..=64 => self.commit(c),
            65..=67 => self.leave(c),
            68 => {
                // A zombie: an old incarnation of a static member wakes up.
                let c = c % 2;
                let old = self.clients[c]
                    .ever_ids
                    .iter()
                    .find(|id| **id != self.clients[c].member_id)
                    .cloned();
                if let Some(old) = old {
                    let generation = self.clients[c].generation;
                    let code = self.sim.heartbeat_static(
                        &old,
                        self.clients[c].instance.as_deref(),
                        generation,
                    );
                    // The old id may still be the current one if the restart's JoinGroup
                    // failed; then it is an ordinary (possibly stale-generation) heartbeat.
                    assert!(
                        [
                            codes::FENCED_INSTANCE_ID,
                            codes::UNKNOWN_MEMBER_ID,
                            codes::ILLEGAL_GENERATION,
                            codes::REBALANCE_IN_PROGRESS,
                            codes::NONE,
                        ]
                        .contains(&code),
                        "a zombie heartbeat got {code}"
                    );
                    if code == codes::FENCED_INSTANCE_ID {
                        self.count("fenced");
                    }
                }
            }
            69..=70 => {
                // A restart: static members come back with their instance id.
                let c = if self.rng.chance(70) { c % 2 } else { c };
                self.reset(c);
                if self.rng.chance(30) {
                    self.clients[c].protocols = self.rng.below(PROTOCOL_SETS.len() as u64) as usize;
                }
                self.join(c);
            }
            71..=85 => {
                let ms = match self.rng.below(10) {
                    0 => 20_000 + self.rng.below(40_000),
                    _ => self.rng.below(3_000),
                } as i64;
                self.sim.advance(ms);
            }
            86..=89 => {
                // The glue fires a timer early or for something long gone.
                let keys: Vec<TimerKey> = self.sim.timers.keys().cloned().collect();
                if !keys.is_empty() {
                    let key = keys[self.rng.below(keys.len() as u64) as usize].clone();
                    let effects = self.sim.mgr.on_timer(self.sim.now, &key);
                    self.sim.apply(effects);
                }
            }
            90..=93 => {
                let effects = self.sim.mgr.expire_offsets(self.sim.now, 30_000);
                self.sim.apply(effects);
            }
            94..=98 => {
                let _ = self.sim.mgr.list_groups(&[], &[]);
                let _ = self.sim.mgr.fetch_offsets(&[OffsetFetchGroup {
                    group_id: GROUP.into(),
                    topics: None,
                }]);
            }
            _ => {
                if self.rng.chance(30) {
                    self.count("failover");
                    self.failover();
                }
            }
        }
        self.collect_replies();
        self.check();
    }

    fn check(&mut self) {
        self.sim.mgr.check_invariants().unwrap();
        let generation = self.sim.mgr.generation_id(GROUP);
        // A group that died (or never existed) starts over: only compare live generations.
        if let (Some(before), Some(now)) = (self.last_generation, generation) {
            assert!(now >= before, "generation {before} -> {now}");
        }
        self.last_generation = generation;
        if generation.is_none() {
            self.leaders.clear();
        }
        if let Some(state) = self.sim.state() {
            self.count(state.as_str());
        }
        if self.sim.state() == Some(GroupState::Stable) {
            let d = self.sim.mgr.describe_groups(&[GROUP.into()], false);
            for m in &d[0].members {
                assert!(
                    !m.assignment.is_empty(),
                    "{} has no assignment in Stable",
                    m.member_id
                );
            }
        }
    }

    /// Stops all traffic and lets time run until every timer has fired.
    fn drain(&mut self) {
        for _ in 0..100 {
            if self.sim.timers.is_empty() {
                break;
            }
            self.sim.advance(400_000);
            self.collect_replies();
            self.check();
        }
        let answered: BTreeSet<ReplyToken> = self
            .sim
            .join_replies
            .keys()
            .chain(self.sim.sync_replies.keys())
            .copied()
            .collect();
        let missing: Vec<_> = self.issued.difference(&answered).collect();
        assert!(missing.is_empty(), "tokens never answered: {missing:?}");
    }
}

#[test]
fn random_operation_sequences_keep_the_invariants() {
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    for seed in 0..300 {
        let mut world = World::new(seed);
        for _ in 0..300 {
            world.step();
        }
        world.drain();
        for (k, v) in world.stats {
            *totals.entry(k).or_insert(0) += v;
        }
    }
    eprintln!("{totals:#?}");
    // The sequences must reach the interesting places, or the test proves little.
    for (what, at_least) in [
        ("join ok", 1_000),
        ("join member_id_required", 1_000),
        ("fenced", 100),
        ("join inconsistent", 100),
        ("join max size", 100),
        ("join skip_assignment", 10),
        ("sync ok", 1_000),
        ("sync error", 1_000),
        ("failover", 100),
        ("Stable", 1_000),
        ("CompletingRebalance", 1_000),
        ("PreparingRebalance", 1_000),
        ("Empty", 1_000),
    ] {
        let seen = totals.get(what).copied().unwrap_or(0);
        assert!(seen >= at_least, "saw {what} {seen} times: {totals:?}");
    }
}
