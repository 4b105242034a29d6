//! A tiny simulated glue: a clock, one timer per key, and the replies and records a manager
//! emitted. Tests drive a `GroupManager` through it.

#![allow(dead_code)]

use std::collections::BTreeMap;

use bytes::Bytes;
use shardlog_coordinator::{
    codes, CommitPartition, Effect, GroupConfig, GroupManager, GroupState, HeartbeatRequest,
    JoinRequest, JoinResult, LeaveResult, LeavingMember, OffsetCommitRequest, Record, ReplyToken,
    SeededMemberIds, SyncRequest, SyncResult, TimerKey,
};

pub const GROUP: &str = "g";
pub const SESSION_MS: i32 = 10_000;
pub const REBALANCE_MS: i32 = 30_000;

/// Short timeouts, no initial delay.
pub fn test_config() -> GroupConfig {
    GroupConfig {
        group_min_session_timeout_ms: 1_000,
        group_max_session_timeout_ms: 60_000,
        group_initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    }
}

pub struct Sim {
    pub mgr: GroupManager,
    pub now: i64,
    /// One timer per key, as the contract says (scheduling replaces).
    pub timers: BTreeMap<TimerKey, i64>,
    pub join_replies: BTreeMap<ReplyToken, JoinResult>,
    pub sync_replies: BTreeMap<ReplyToken, SyncResult>,
    /// Every record persisted, in order.
    pub log: Vec<Record>,
    /// Number of ScheduleTimer effects seen.
    pub timer_effects: usize,
    next_token: u64,
}

impl Sim {
    pub fn new(config: GroupConfig) -> Self {
        Sim::with_manager(GroupManager::new(config, Box::new(SeededMemberIds::new(1))).unwrap())
    }

    pub fn with_manager(mgr: GroupManager) -> Self {
        Sim {
            mgr,
            now: 1_000_000,
            timers: BTreeMap::new(),
            join_replies: BTreeMap::new(),
            sync_replies: BTreeMap::new(),
            log: Vec::new(),
            timer_effects: 0,
            next_token: 1,
        }
    }

    pub fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Persist(r) => self.log.push(r),
                Effect::ScheduleTimer { key, deadline_ms } => {
                    self.timer_effects += 1;
                    self.timers.insert(key, deadline_ms);
                }
                Effect::JoinReply(t, r) => {
                    assert!(
                        self.join_replies.insert(t, r).is_none(),
                        "join token {t:?} answered twice"
                    );
                }
                Effect::SyncReply(t, r) => {
                    assert!(
                        self.sync_replies.insert(t, r).is_none(),
                        "sync token {t:?} answered twice"
                    );
                }
            }
        }
        self.mgr.check_invariants().unwrap();
    }

    pub fn token(&mut self) -> ReplyToken {
        self.next_token += 1;
        ReplyToken(self.next_token)
    }

    pub fn join(&mut self, req: JoinRequest) -> ReplyToken {
        let t = self.token();
        let effects = self.mgr.join(self.now, t, req);
        self.apply(effects);
        t
    }

    pub fn sync(&mut self, req: SyncRequest) -> ReplyToken {
        let t = self.token();
        let effects = self.mgr.sync(self.now, t, req);
        self.apply(effects);
        t
    }

    pub fn heartbeat(&mut self, member_id: &str, generation: i32) -> i16 {
        self.heartbeat_static(member_id, None, generation)
    }

    pub fn heartbeat_static(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> i16 {
        let (code, effects) = self.mgr.heartbeat(
            self.now,
            HeartbeatRequest {
                group_id: GROUP.into(),
                generation_id: generation,
                member_id: member_id.into(),
                group_instance_id: instance.map(Into::into),
            },
        );
        self.apply(effects);
        code
    }

    pub fn leave(&mut self, member_id: &str) -> LeaveResult {
        let (r, effects) = self.mgr.leave(
            self.now,
            GROUP,
            vec![LeavingMember {
                member_id: member_id.into(),
                group_instance_id: None,
            }],
        );
        self.apply(effects);
        r
    }

    pub fn commit(
        &mut self,
        member_id: &str,
        generation: i32,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> i16 {
        let (r, effects) = self.mgr.commit_offsets(
            self.now,
            OffsetCommitRequest {
                group_id: GROUP.into(),
                generation_id: generation,
                member_id: member_id.into(),
                group_instance_id: None,
                topics: vec![(
                    topic.into(),
                    vec![CommitPartition {
                        partition,
                        offset,
                        leader_epoch: 1,
                        metadata: None,
                    }],
                )],
            },
        );
        self.apply(effects);
        r[0].1[0].1
    }

    pub fn join_reply(&self, t: ReplyToken) -> Option<&JoinResult> {
        self.join_replies.get(&t)
    }

    pub fn sync_reply(&self, t: ReplyToken) -> Option<&SyncResult> {
        self.sync_replies.get(&t)
    }

    /// Moves the clock forward, firing due timers in deadline order.
    pub fn advance(&mut self, ms: i64) {
        let target = self.now + ms;
        loop {
            let next = self
                .timers
                .iter()
                .filter(|(_, &d)| d <= target)
                .min_by_key(|(_, &d)| d)
                .map(|(k, &d)| (k.clone(), d));
            let Some((key, deadline)) = next else {
                break;
            };
            self.timers.remove(&key);
            self.now = self.now.max(deadline);
            let effects = self.mgr.on_timer(self.now, &key);
            self.apply(effects);
        }
        self.now = target;
    }

    pub fn state(&self) -> Option<GroupState> {
        self.mgr.group_state(GROUP)
    }

    /// Two-step join of a new dynamic member; returns the token of the second JoinGroup and
    /// the member id.
    pub fn join_new(&mut self, client: &str, protocols: &[(&str, &str)]) -> (ReplyToken, String) {
        let t = self.join(join_req(client, "", protocols));
        let r = self
            .join_reply(t)
            .expect("MEMBER_ID_REQUIRED is immediate")
            .clone();
        assert_eq!(r.error_code, codes::MEMBER_ID_REQUIRED);
        assert!(r.member_id.starts_with(&format!("{client}-")));
        let t2 = self.join(join_req(client, &r.member_id, protocols));
        (t2, r.member_id)
    }

    /// Runs a whole rebalance for one member alone; returns (member id, generation).
    pub fn single_stable_member(&mut self, client: &str) -> (String, i32) {
        let (t, id) = self.join_new(client, &[("range", "m")]);
        let r = self.join_reply(t).unwrap().clone();
        assert_eq!(r.error_code, codes::NONE);
        let s = self.sync(sync_req(&id, r.generation_id, &[(&id, "a")]));
        assert_eq!(self.sync_reply(s).unwrap().error_code, codes::NONE);
        (id, r.generation_id)
    }
}

pub fn protocols(list: &[(&str, &str)]) -> Vec<(String, Bytes)> {
    list.iter()
        .map(|(n, m)| (n.to_string(), Bytes::copy_from_slice(m.as_bytes())))
        .collect()
}

pub fn join_req(client: &str, member_id: &str, list: &[(&str, &str)]) -> JoinRequest {
    JoinRequest {
        group_id: GROUP.into(),
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: client.into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: protocols(list),
        require_known_member_id: true,
        supports_skip_assignment: false,
    }
}

pub fn static_join_req(instance: &str, member_id: &str, list: &[(&str, &str)]) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance.into()),
        ..join_req("client", member_id, list)
    }
}

pub fn sync_req(member_id: &str, generation: i32, assignments: &[(&str, &str)]) -> SyncRequest {
    SyncRequest {
        group_id: GROUP.into(),
        generation_id: generation,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a.as_bytes())))
            .collect(),
    }
}
