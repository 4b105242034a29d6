//! Group membership lifecycles: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, timeouts and
//! static membership, driven by simulated time.

mod common;

use bytes::Bytes;
use common::*;
use shardlog_coordinator::records::{decode_key, GroupMetadataValue, RecordKey};
use shardlog_coordinator::{codes, GroupConfig, GroupState, LeavingMember, TimerKey};

fn last_group_metadata(sim: &Sim) -> GroupMetadataValue {
    let r = sim
        .log
        .iter()
        .rev()
        .find(|r| {
            matches!(
                decode_key(&r.key),
                Ok(Some(RecordKey::GroupMetadata { .. }))
            )
        })
        .expect("a group metadata record");
    GroupMetadataValue::decode(r.value.clone().expect("not a tombstone")).unwrap()
}

#[test]
fn one_member_full_lifecycle() {
    let mut sim = Sim::new(test_config());
    // v4+ two-step join: the first JoinGroup only hands out a member id.
    let t = sim.join(join_req("client", "", &[("range", "meta")]));
    let r = sim.join_reply(t).unwrap().clone();
    assert_eq!(r.error_code, codes::MEMBER_ID_REQUIRED);
    assert_eq!(r.generation_id, -1);
    let id = r.member_id.clone();
    assert!(
        id.starts_with("client-") && id.len() == "client-".len() + 36,
        "{id}"
    );
    assert_eq!(
        sim.state(),
        Some(GroupState::Empty),
        "a pending member does not rebalance"
    );

    let t = sim.join(join_req("client", &id, &[("range", "meta")]));
    let r = sim.join_reply(t).unwrap().clone();
    assert_eq!(r.error_code, codes::NONE);
    assert_eq!(r.generation_id, 1);
    assert_eq!(r.leader, id);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(r.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.members[0].metadata, Bytes::from_static(b"meta"));
    assert_eq!(sim.state(), Some(GroupState::CompletingRebalance));
    assert!(
        sim.log.is_empty(),
        "nothing is persisted before the assignment"
    );

    let s = sim.sync(sync_req(&id, 1, &[(&id, "p0,p1")]));
    let sr = sim.sync_reply(s).unwrap();
    assert_eq!(sr.error_code, codes::NONE);
    assert_eq!(sr.assignment, Bytes::from_static(b"p0,p1"));
    assert_eq!(sr.protocol_name.as_deref(), Some("range"));
    assert_eq!(sim.state(), Some(GroupState::Stable));
    let meta = last_group_metadata(&sim);
    assert_eq!(meta.generation, 1);
    assert_eq!(meta.leader.as_deref(), Some(id.as_str()));
    assert_eq!(meta.members[0].assignment, Bytes::from_static(b"p0,p1"));
    assert_eq!(meta.members[0].subscription, Bytes::from_static(b"meta"));

    // Heartbeats keep the member alive well past its session timeout.
    for _ in 0..10 {
        sim.advance(i64::from(SESSION_MS) / 2);
        assert_eq!(sim.heartbeat(&id, 1), codes::NONE);
    }
    assert_eq!(sim.state(), Some(GroupState::Stable));

    // A follower-less group: syncing again in Stable returns the assignment.
    let s = sim.sync(sync_req(&id, 1, &[]));
    assert_eq!(
        sim.sync_reply(s).unwrap().assignment,
        Bytes::from_static(b"p0,p1")
    );

    let lr = sim.leave(&id);
    assert_eq!(lr.error_code, codes::NONE);
    assert_eq!(lr.members[0].1, codes::NONE);
    assert_eq!(sim.state(), Some(GroupState::Empty));
    assert_eq!(sim.mgr.generation_id(GROUP), Some(2));
    let meta = last_group_metadata(&sim);
    assert_eq!((meta.generation, meta.members.len()), (2, 0));
    assert_eq!(
        (meta.protocol.as_deref(), meta.leader.as_deref()),
        (None, None)
    );
    assert_eq!(sim.heartbeat(&id, 2), codes::UNKNOWN_MEMBER_ID);
}

#[test]
fn heartbeats_do_not_churn_timers() {
    let mut sim = Sim::new(test_config());
    let (id, gen) = sim.single_stable_member("c");
    let before = sim.timer_effects;
    for _ in 0..100 {
        sim.advance(100);
        assert_eq!(sim.heartbeat(&id, gen), codes::NONE);
    }
    // 10 s of heartbeats with a 10 s session: the session timer re-arms about once.
    assert!(
        sim.timer_effects - before <= 2,
        "{}",
        sim.timer_effects - before
    );
}

#[test]
fn initial_rebalance_delay_waits_and_extends() {
    let mut sim = Sim::new(GroupConfig {
        group_initial_rebalance_delay_ms: 3_000,
        ..test_config()
    });
    let (ta, a) = sim.join_new("a", &[("range", "")]);
    assert!(
        sim.join_reply(ta).is_none(),
        "the first join waits for the initial delay"
    );
    assert_eq!(sim.state(), Some(GroupState::PreparingRebalance));
    sim.advance(1_000);
    let (tb, b) = sim.join_new("b", &[("range", "")]);
    sim.advance(1_999);
    assert!(sim.join_reply(ta).is_none() && sim.join_reply(tb).is_none());
    // At 3 s the delay would end, but b arrived during it: one more delay.
    sim.advance(1);
    assert!(sim.join_reply(ta).is_none());
    sim.advance(2_999);
    assert!(sim.join_reply(ta).is_none());
    sim.advance(1);
    let ra = sim.join_reply(ta).unwrap();
    let rb = sim.join_reply(tb).unwrap();
    assert_eq!((ra.error_code, rb.error_code), (codes::NONE, codes::NONE));
    assert_eq!((ra.generation_id, rb.generation_id), (1, 1));
    assert_eq!(ra.leader, a, "the first member leads");
    assert_eq!(ra.members.len(), 2);
    assert!(rb.members.is_empty(), "followers do not see the members");
    assert_eq!(rb.member_id, b);
}

#[test]
fn second_member_triggers_rebalance_and_follower_waits_for_leader() {
    let mut sim = Sim::new(test_config());
    let (a, g1) = sim.single_stable_member("a");
    let (tb, b) = sim.join_new("b", &[("range", "mb")]);
    assert!(sim.join_reply(tb).is_none());
    assert_eq!(sim.state(), Some(GroupState::PreparingRebalance));
    // The old generation learns about the rebalance from heartbeat and sync.
    assert_eq!(sim.heartbeat(&a, g1), codes::REBALANCE_IN_PROGRESS);
    let s = sim.sync(sync_req(&a, g1, &[]));
    assert_eq!(
        sim.sync_reply(s).unwrap().error_code,
        codes::REBALANCE_IN_PROGRESS
    );
    // Commits are still accepted while PreparingRebalance, as Kafka does.
    assert_eq!(sim.commit(&a, g1, "t", 0, 10), codes::NONE);

    let ta = sim.join(join_req("a", &a, &[("range", "ma")]));
    let ra = sim.join_reply(ta).unwrap().clone();
    let rb = sim.join_reply(tb).unwrap().clone();
    assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
    assert_eq!(
        (ra.leader.as_str(), rb.leader.as_str()),
        (a.as_str(), a.as_str())
    );
    let seen: Vec<&str> = ra.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(seen, [a.as_str(), b.as_str()]);

    // The follower syncs first and waits; commits during CompletingRebalance are refused.
    let sb = sim.sync(sync_req(&b, 2, &[]));
    assert!(sim.sync_reply(sb).is_none());
    assert_eq!(sim.commit(&b, 2, "t", 0, 11), codes::REBALANCE_IN_PROGRESS);
    assert_eq!(sim.heartbeat(&b, 2), codes::NONE);
    // Wrong generation.
    let bad = sim.sync(sync_req(&a, 1, &[]));
    assert_eq!(
        sim.sync_reply(bad).unwrap().error_code,
        codes::ILLEGAL_GENERATION
    );
    assert_eq!(sim.heartbeat(&a, 1), codes::ILLEGAL_GENERATION);

    let sa = sim.sync(sync_req(&a, 2, &[(&a, "A"), (&b, "B")]));
    assert_eq!(
        sim.sync_reply(sa).unwrap().assignment,
        Bytes::from_static(b"A")
    );
    assert_eq!(
        sim.sync_reply(sb).unwrap().assignment,
        Bytes::from_static(b"B")
    );
    assert_eq!(sim.state(), Some(GroupState::Stable));
    assert_eq!(sim.commit(&b, 2, "t", 0, 11), codes::NONE);
}

#[test]
fn rebalance_timeout_drops_members_that_do_not_rejoin() {
    let mut sim = Sim::new(test_config());
    let (a, _) = sim.single_stable_member("a");
    // b joins; a does not rejoin but keeps heartbeating (it would rejoin after its poll).
    let (tb, b) = sim.join_new("b", &[("range", "")]);
    for _ in 0..5 {
        sim.advance(5_000);
        assert_eq!(sim.heartbeat(&a, 1), codes::REBALANCE_IN_PROGRESS);
    }
    sim.advance(i64::from(REBALANCE_MS));
    let rb = sim.join_reply(tb).unwrap();
    assert_eq!((rb.error_code, rb.generation_id), (codes::NONE, 2));
    assert_eq!(rb.leader, b, "the old leader did not rejoin, so b leads");
    assert_eq!(rb.members.len(), 1);
    assert_eq!(sim.heartbeat(&a, 1), codes::UNKNOWN_MEMBER_ID);
    let t = sim.join(join_req("a", &a, &[("range", "")]));
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn session_expiry_removes_member_and_rebalances() {
    let mut sim = Sim::new(test_config());
    let (ta, a) = sim.join_new("a", &[("range", "")]);
    let g = sim.join_reply(ta).unwrap().generation_id;
    sim.sync(sync_req(&a, g, &[(&a, "x")]));
    let (tb, b) = sim.join_new("b", &[("range", "")]);
    let ta = sim.join(join_req("a", &a, &[("range", "")]));
    assert_eq!(sim.join_reply(ta).unwrap().generation_id, 2);
    assert_eq!(sim.join_reply(tb).unwrap().generation_id, 2);
    sim.sync(sync_req(&b, 2, &[]));
    sim.sync(sync_req(&a, 2, &[(&a, "x"), (&b, "y")]));
    assert_eq!(sim.state(), Some(GroupState::Stable));
    // Only a heartbeats; b's session runs out.
    for _ in 0..3 {
        sim.advance(3_000);
        assert_eq!(sim.heartbeat(&a, 2), codes::NONE);
    }
    sim.advance(3_000);
    assert_eq!(sim.state(), Some(GroupState::PreparingRebalance));
    assert_eq!(sim.heartbeat(&b, 2), codes::UNKNOWN_MEMBER_ID);
    assert_eq!(sim.heartbeat(&a, 2), codes::REBALANCE_IN_PROGRESS);
    let ta = sim.join(join_req("a", &a, &[("range", "")]));
    let ra = sim.join_reply(ta).unwrap();
    assert_eq!((ra.generation_id, ra.members.len()), (3, 1));
}

#[test]
fn pending_sync_expiry_removes_members_that_never_sync() {
    let mut sim = Sim::new(test_config());
    let (ta, a) = sim.join_new("a", &[("range", "")]);
    let g = sim.join_reply(ta).unwrap().generation_id;
    sim.sync(sync_req(&a, g, &[(&a, "x")]));
    let (tb, b) = sim.join_new("b", &[("range", "")]);
    let ta = sim.join(join_req("a", &a, &[("range", "")]));
    assert_eq!(sim.join_reply(tb).unwrap().generation_id, 2);
    assert_eq!(sim.join_reply(ta).unwrap().generation_id, 2);
    sim.sync(sync_req(&a, 2, &[(&a, "x"), (&b, "y")]));
    assert_eq!(sim.state(), Some(GroupState::Stable));
    // b heartbeats but never sends SyncGroup: after the rebalance timeout it is removed.
    for _ in 0..(REBALANCE_MS / 3_000 + 1) {
        sim.advance(3_000);
        sim.heartbeat(&a, 2);
        sim.heartbeat(&b, 2);
    }
    assert_eq!(sim.heartbeat(&b, 2), codes::UNKNOWN_MEMBER_ID);
    assert_eq!(sim.state(), Some(GroupState::PreparingRebalance));
}

#[test]
fn leader_leaving_mid_rebalance_answers_everyone() {
    let mut sim = Sim::new(test_config());
    let (a, _) = sim.single_stable_member("a");
    let (tb, b) = sim.join_new("b", &[("range", "")]);
    let ta = sim.join(join_req("a", &a, &[("range", "")]));
    assert!(sim.join_reply(ta).is_some() && sim.join_reply(tb).is_some());
    let sb = sim.sync(sync_req(&b, 2, &[]));
    assert!(sim.sync_reply(sb).is_none());
    // The leader leaves before syncing: b's SyncGroup is told to rejoin.
    let lr = sim.leave(&a);
    assert_eq!(lr.members[0].1, codes::NONE);
    assert_eq!(
        sim.sync_reply(sb).unwrap().error_code,
        codes::REBALANCE_IN_PROGRESS
    );
    assert_eq!(sim.state(), Some(GroupState::PreparingRebalance));
    assert_eq!(sim.mgr.leader_id(GROUP), Some(b.as_str()));
    let tb = sim.join(join_req("b", &b, &[("range", "")]));
    let rb = sim.join_reply(tb).unwrap();
    assert_eq!((rb.generation_id, rb.leader.as_str()), (3, b.as_str()));
}

#[test]
fn rejoin_with_same_metadata_in_completing_rebalance_repeats_the_generation() {
    let mut sim = Sim::new(test_config());
    let (a, _) = sim.single_stable_member("a");
    let (tb, b) = sim.join_new("b", &[("range", "mb")]);
    sim.join(join_req("a", &a, &[("range", "m")]));
    assert_eq!(sim.state(), Some(GroupState::CompletingRebalance));
    // b lost its response and asks again with the same metadata: same generation, no rebalance.
    let again = sim.join(join_req("b", &b, &[("range", "mb")]));
    let r = sim.join_reply(again).unwrap();
    assert_eq!((r.error_code, r.generation_id), (codes::NONE, 2));
    assert_eq!(sim.join_reply(tb).unwrap().generation_id, 2);
    assert_eq!(sim.state(), Some(GroupState::CompletingRebalance));
    // With different metadata it forces a rebalance.
    let changed = sim.join(join_req("b", &b, &[("range", "other")]));
    assert!(sim.join_reply(changed).is_none());
    assert_eq!(sim.state(), Some(GroupState::PreparingRebalance));
}

#[test]
fn follower_rejoin_in_stable_is_cheap_leader_rejoin_rebalances() {
    let mut sim = Sim::new(test_config());
    let (a, _) = sim.single_stable_member("a");
    let (tb, b) = sim.join_new("b", &[("range", "")]);
    sim.join(join_req("a", &a, &[("range", "m")]));
    assert!(sim.join_reply(tb).is_some());
    sim.sync(sync_req(&a, 2, &[(&a, "x"), (&b, "y")]));
    let t = sim.join(join_req("b", &b, &[("range", "")]));
    let r = sim.join_reply(t).unwrap();
    assert_eq!(
        (r.error_code, r.generation_id, r.members.len()),
        (codes::NONE, 2, 0)
    );
    assert_eq!(sim.state(), Some(GroupState::Stable));
    let t = sim.join(join_req("a", &a, &[("range", "m")]));
    assert!(sim.join_reply(t).is_none());
    assert_eq!(sim.state(), Some(GroupState::PreparingRebalance));
}

#[test]
fn pending_member_holds_the_join_phase_until_it_expires() {
    let mut sim = Sim::new(test_config());
    let (a, _) = sim.single_stable_member("a");
    // c got a member id but never comes back.
    let tc = sim.join(join_req("c", "", &[("range", "")]));
    assert_eq!(
        sim.join_reply(tc).unwrap().error_code,
        codes::MEMBER_ID_REQUIRED
    );
    let c = sim.join_reply(tc).unwrap().member_id.clone();
    let ta = sim.join(join_req("a", &a, &[("range", "")]));
    assert!(sim.join_reply(ta).is_none(), "waits for the pending member");
    sim.advance(i64::from(SESSION_MS));
    assert_eq!(sim.join_reply(ta).unwrap().generation_id, 2);
    let late = sim.join(join_req("c", &c, &[("range", "")]));
    assert_eq!(
        sim.join_reply(late).unwrap().error_code,
        codes::UNKNOWN_MEMBER_ID,
        "an expired pending id is unknown; the client starts over with an empty id"
    );
}

#[test]
fn leaving_pending_member_and_unknown_members() {
    let mut sim = Sim::new(test_config());
    let t = sim.join(join_req("c", "", &[("range", "")]));
    let pending = sim.join_reply(t).unwrap().member_id.clone();
    let (r, effects) = sim.mgr.leave(
        sim.now,
        GROUP,
        vec![
            LeavingMember {
                member_id: pending,
                group_instance_id: None,
            },
            LeavingMember {
                member_id: "nobody".into(),
                group_instance_id: None,
            },
            LeavingMember {
                member_id: String::new(),
                group_instance_id: Some("no-such-instance".into()),
            },
        ],
    );
    sim.apply(effects);
    let codes_seen: Vec<i16> = r.members.iter().map(|(_, c)| *c).collect();
    assert_eq!(
        codes_seen,
        [
            codes::NONE,
            codes::UNKNOWN_MEMBER_ID,
            codes::UNKNOWN_MEMBER_ID
        ]
    );
    // The group existed only for the pending member.
    assert_eq!(sim.state(), None);
    let r = sim.leave("x");
    assert_eq!(
        (r.error_code, r.members[0].1),
        (codes::NONE, codes::UNKNOWN_MEMBER_ID)
    );
}

#[test]
fn old_join_protocol_without_member_id_required() {
    let mut sim = Sim::new(test_config());
    let mut req = join_req("old", "", &[("range", "")]);
    req.require_known_member_id = false;
    let t = sim.join(req);
    let r = sim.join_reply(t).unwrap();
    assert_eq!((r.error_code, r.generation_id), (codes::NONE, 1));
    assert!(r.member_id.starts_with("old-"));
}

#[test]
fn protocol_selection_by_votes_among_common_protocols() {
    fn select(members: &[&[(&str, &str)]]) -> String {
        let mut sim = Sim::new(GroupConfig {
            group_initial_rebalance_delay_ms: 1_000,
            ..test_config()
        });
        let tokens: Vec<_> = members
            .iter()
            .enumerate()
            .map(|(i, p)| sim.join_new(&format!("c{i}"), p).0)
            .collect();
        sim.advance(10_000);
        let names: Vec<String> = tokens
            .iter()
            .map(|t| sim.join_reply(*t).unwrap().protocol_name.clone().unwrap())
            .collect();
        assert!(names.iter().all(|n| *n == names[0]));
        names[0].clone()
    }
    // Only roundrobin is supported by everyone.
    assert_eq!(
        select(&[&[("range", ""), ("roundrobin", "")], &[("roundrobin", "")]]),
        "roundrobin"
    );
    // Both common; roundrobin has two first-choice votes.
    assert_eq!(
        select(&[
            &[("range", ""), ("roundrobin", "")],
            &[("roundrobin", ""), ("range", "")],
            &[("roundrobin", ""), ("range", "")],
        ]),
        "roundrobin"
    );
    // A tie goes to the earliest member's choice.
    assert_eq!(
        select(&[
            &[("cooperative-sticky", ""), ("range", "")],
            &[("range", ""), ("cooperative-sticky", "")],
        ]),
        "cooperative-sticky"
    );
}

#[test]
fn inconsistent_group_protocol() {
    let mut sim = Sim::new(test_config());
    let (_a, _) = sim.single_stable_member("a");
    // No protocol in common.
    let t = sim.join(join_req("b", "", &[("roundrobin", "")]));
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );
    // Different protocol type.
    let mut req = join_req("b", "", &[("range", "")]);
    req.protocol_type = "connect".into();
    let t = sim.join(req);
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );
    // Sync naming another protocol.
    let mut s = sync_req(&_a, 1, &[]);
    s.protocol_name = Some("roundrobin".into());
    let t = sim.sync(s);
    assert_eq!(
        sim.sync_reply(t).unwrap().error_code,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );

    // An empty group needs a protocol type and at least one protocol.
    let mut fresh = Sim::new(test_config());
    let mut req = join_req("x", "", &[("range", "")]);
    req.protocol_type = String::new();
    let t = fresh.join(req);
    assert_eq!(
        fresh.join_reply(t).unwrap().error_code,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );
    let t = fresh.join(join_req("x", "", &[]));
    assert_eq!(
        fresh.join_reply(t).unwrap().error_code,
        codes::INCONSISTENT_GROUP_PROTOCOL
    );
    assert_eq!(
        fresh.state(),
        None,
        "a failed first join leaves no group behind"
    );
}

/// Two static members, stable with assignments. Returns (a id, b id).
fn static_pair(sim: &mut Sim) -> (String, String) {
    let ta = sim.join(static_join_req("ia", "", &[("range", "ma")]));
    let a = sim.join_reply(ta).unwrap().member_id.clone();
    assert!(
        a.starts_with("ia-"),
        "static ids are prefixed by the instance id: {a}"
    );
    let tb = sim.join(static_join_req("ib", "", &[("range", "mb")]));
    assert!(sim.join_reply(tb).is_none());
    assert_eq!(sim.state(), Some(GroupState::PreparingRebalance));
    let ta = sim.join(static_join_req("ia", &a, &[("range", "ma")]));
    let ra = sim.join_reply(ta).unwrap().clone();
    let b = sim.join_reply(tb).unwrap().member_id.clone();
    assert_eq!((ra.generation_id, ra.leader.as_str()), (2, a.as_str()));
    let mut sb = sync_req(&b, 2, &[]);
    sb.group_instance_id = Some("ib".into());
    sim.sync(sb);
    let mut sa = sync_req(&a, 2, &[(&a, "A"), (&b, "B")]);
    sa.group_instance_id = Some("ia".into());
    let t = sim.sync(sa);
    assert_eq!(sim.sync_reply(t).unwrap().error_code, codes::NONE);
    assert_eq!(sim.state(), Some(GroupState::Stable));
    (a, b)
}

#[test]
fn static_member_restart_keeps_assignment_without_rebalance() {
    let mut sim = Sim::new(test_config());
    let (a, b) = static_pair(&mut sim);
    // b restarts: unknown member id, same instance id, same protocols.
    let t = sim.join(static_join_req("ib", "", &[("range", "mb")]));
    let r = sim.join_reply(t).unwrap().clone();
    assert_eq!(r.error_code, codes::NONE);
    assert_eq!(r.generation_id, 2, "no new generation");
    assert_ne!(r.member_id, b);
    assert_eq!(r.leader, a);
    assert_eq!(sim.state(), Some(GroupState::Stable));
    let new_b = r.member_id;
    let meta = last_group_metadata(&sim);
    assert!(meta.members.iter().any(|m| m.member_id == new_b));
    let mut s = sync_req(&new_b, 2, &[]);
    s.group_instance_id = Some("ib".into());
    let t = sim.sync(s);
    assert_eq!(
        sim.sync_reply(t).unwrap().assignment,
        Bytes::from_static(b"B")
    );
    // The old incarnation is fenced.
    assert_eq!(
        sim.heartbeat_static(&b, Some("ib"), 2),
        codes::FENCED_INSTANCE_ID
    );
    assert_eq!(sim.heartbeat(&b, 2), codes::UNKNOWN_MEMBER_ID);
    assert_eq!(sim.heartbeat_static(&new_b, Some("ib"), 2), codes::NONE);
    let t = sim.join(static_join_req("ib", &b, &[("range", "mb")]));
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::FENCED_INSTANCE_ID
    );
    assert_eq!(sim.state(), Some(GroupState::Stable));
}

#[test]
fn static_leader_restart_reports_old_leader_or_skips_assignment() {
    let mut sim = Sim::new(test_config());
    let (a, _b) = static_pair(&mut sim);
    let t = sim.join(static_join_req("ia", "", &[("range", "ma")]));
    let r = sim.join_reply(t).unwrap().clone();
    assert_eq!(r.leader, a, "old clients see the previous leader id");
    assert!(r.members.is_empty() && !r.skip_assignment);
    assert_eq!(sim.mgr.leader_id(GROUP), Some(r.member_id.as_str()));

    let mut req = static_join_req("ia", "", &[("range", "ma")]);
    req.supports_skip_assignment = true;
    let t = sim.join(req);
    let r2 = sim.join_reply(t).unwrap().clone();
    assert_eq!(
        r2.leader, r2.member_id,
        "KIP-814: the leader knows it leads"
    );
    assert!(r2.skip_assignment);
    assert_eq!(r2.members.len(), 2);
    assert_eq!(sim.state(), Some(GroupState::Stable));
}

#[test]
fn static_restart_rebalances_only_if_the_selected_protocol_changes() {
    let mut sim = Sim::new(test_config());
    let (_a, _b) = static_pair(&mut sim);
    // b now prefers roundrobin, but a only has range: range stays selected, no rebalance.
    let t = sim.join(static_join_req(
        "ib",
        "",
        &[("roundrobin", ""), ("range", "mb")],
    ));
    let r = sim.join_reply(t).unwrap();
    assert_eq!((r.error_code, r.generation_id), (codes::NONE, 2));
    assert_eq!(sim.state(), Some(GroupState::Stable));

    // Alone in its group, a static member that now prefers roundrobin moves the selection:
    // that needs a new generation.
    let mut solo = Sim::new(test_config());
    let t = solo.join(static_join_req("solo", "", &[("range", "")]));
    let first = solo.join_reply(t).unwrap().clone();
    assert_eq!(first.generation_id, 1);
    let mut s = sync_req(&first.member_id, 1, &[(&first.member_id, "x")]);
    s.group_instance_id = Some("solo".into());
    solo.sync(s);
    assert_eq!(solo.state(), Some(GroupState::Stable));
    let t = solo.join(static_join_req(
        "solo",
        "",
        &[("roundrobin", ""), ("range", "")],
    ));
    let r = solo.join_reply(t).unwrap();
    assert_eq!(r.generation_id, 2);
    assert_eq!(r.protocol_name.as_deref(), Some("roundrobin"));
}

#[test]
fn static_restart_during_completing_rebalance_fences_the_waiting_sync() {
    let mut sim = Sim::new(test_config());
    let (a, b) = static_pair(&mut sim);
    // A new dynamic member forces a rebalance; everyone rejoins.
    let (tc, _c) = sim.join_new("c", &[("range", "")]);
    sim.join(static_join_req("ia", &a, &[("range", "ma")]));
    let tb = sim.join(static_join_req("ib", &b, &[("range", "mb")]));
    assert!(sim.join_reply(tc).is_some() && sim.join_reply(tb).is_some());
    assert_eq!(sim.state(), Some(GroupState::CompletingRebalance));
    let mut s = sync_req(&b, 3, &[]);
    s.group_instance_id = Some("ib".into());
    let sb = sim.sync(s);
    assert!(sim.sync_reply(sb).is_none());
    // b restarts while its old incarnation waits for the assignment.
    let t = sim.join(static_join_req("ib", "", &[("range", "mb")]));
    assert_eq!(
        sim.sync_reply(sb).unwrap().error_code,
        codes::FENCED_INSTANCE_ID
    );
    assert!(sim.join_reply(t).is_none());
    assert_eq!(sim.state(), Some(GroupState::PreparingRebalance));
}

#[test]
fn static_members_survive_a_rebalance_they_miss() {
    let mut sim = Sim::new(test_config());
    let (a, b) = static_pair(&mut sim);
    // a rejoins (rebalance); b keeps its session but misses the join phase.
    let ta = sim.join(static_join_req("ia", &a, &[("range", "ma")]));
    for _ in 0..(REBALANCE_MS / 5_000 - 1) {
        sim.advance(5_000);
        assert_eq!(
            sim.heartbeat_static(&b, Some("ib"), 2),
            codes::REBALANCE_IN_PROGRESS
        );
    }
    sim.advance(5_000);
    assert_eq!(
        sim.heartbeat_static(&b, Some("ib"), 2),
        codes::ILLEGAL_GENERATION
    );
    let r = sim.join_reply(ta).unwrap();
    assert_eq!(r.generation_id, 3);
    assert_eq!(
        r.members.len(),
        2,
        "a static member is kept through a missed rebalance"
    );
    // Removed by admin through its instance id.
    let (lr, effects) = sim.mgr.leave(
        sim.now,
        GROUP,
        vec![LeavingMember {
            member_id: String::new(),
            group_instance_id: Some("ib".into()),
        }],
    );
    sim.apply(effects);
    assert_eq!(lr.members[0].1, codes::NONE);
    assert_eq!(sim.state(), Some(GroupState::PreparingRebalance));
}

#[test]
fn group_max_size() {
    let mut sim = Sim::new(GroupConfig {
        group_max_size: 2,
        ..test_config()
    });
    let (a, _) = sim.single_stable_member("a");
    let (tb, _b) = sim.join_new("b", &[("range", "")]);
    sim.join(join_req("a", &a, &[("range", "")]));
    assert!(sim.join_reply(tb).is_some());
    let t = sim.join(join_req("c", "", &[("range", "")]));
    let r = sim.join_reply(t).unwrap();
    assert_eq!(
        (r.error_code, r.member_id.as_str()),
        (codes::GROUP_MAX_SIZE_REACHED, "")
    );
}

#[test]
fn request_validation_errors() {
    let mut sim = Sim::new(test_config());
    let mut req = join_req("c", "", &[("range", "")]);
    req.group_id = String::new();
    let t = sim.join(req);
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::INVALID_GROUP_ID
    );
    let (code, _) = sim.mgr.heartbeat(
        0,
        shardlog_coordinator::HeartbeatRequest {
            group_id: String::new(),
            generation_id: 1,
            member_id: "m".into(),
            group_instance_id: None,
        },
    );
    assert_eq!(code, codes::INVALID_GROUP_ID);
    for session in [999, 60_001, -1] {
        let mut req = join_req("c", "", &[("range", "")]);
        req.session_timeout_ms = session;
        let t = sim.join(req);
        assert_eq!(
            sim.join_reply(t).unwrap().error_code,
            codes::INVALID_SESSION_TIMEOUT
        );
    }
    // A member id on a group that does not exist.
    let t = sim.join(join_req("c", "c-123", &[("range", "")]));
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::UNKNOWN_MEMBER_ID
    );
    let t = sim.sync(sync_req("c-123", 1, &[]));
    assert_eq!(
        sim.sync_reply(t).unwrap().error_code,
        codes::UNKNOWN_MEMBER_ID
    );
    assert_eq!(sim.heartbeat("c-123", 1), codes::UNKNOWN_MEMBER_ID);
    assert_eq!(sim.mgr.group_count(), 0);
}

#[test]
fn groups_of_other_partitions_are_not_ours() {
    let config = GroupConfig {
        partition_index: 0,
        partition_count: 50,
        ..test_config()
    };
    let mut sim = Sim::new(config);
    // "my-group" belongs to partition 12 of 50.
    let mut req = join_req("c", "", &[("range", "")]);
    req.group_id = "my-group".into();
    let t = sim.join(req);
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::NOT_COORDINATOR
    );
    // "" hashes to 0 and GROUP "g" (103) to 3: only offsets APIs accept "".
    let r = sim
        .mgr
        .fetch_offsets(&[shardlog_coordinator::OffsetFetchGroup {
            group_id: String::new(),
            topics: None,
        }]);
    assert_eq!(r[0].error_code, codes::NONE);
}

#[test]
fn unload_answers_waiting_requests_and_stops_serving() {
    let mut sim = Sim::new(test_config());
    let (a, _) = sim.single_stable_member("a");
    let (tb, _b) = sim.join_new("b", &[("range", "")]);
    assert!(sim.join_reply(tb).is_none());
    let effects = sim.mgr.unload();
    sim.apply(effects);
    let r = sim.join_reply(tb).unwrap();
    assert_eq!(r.error_code, codes::NOT_COORDINATOR);
    assert_eq!(sim.heartbeat(&a, 1), codes::NOT_COORDINATOR);
    assert_eq!(
        sim.mgr.list_groups(&[], &[]).error_code,
        codes::NOT_COORDINATOR
    );
    // Timers still pending in the glue are harmless.
    let keys: Vec<TimerKey> = sim.timers.keys().cloned().collect();
    for k in keys {
        assert!(sim.mgr.on_timer(i64::MAX, &k).is_empty());
    }
}

#[test]
fn colliding_member_ids_are_a_retriable_error() {
    struct Constant;
    impl shardlog_coordinator::MemberIdGenerator for Constant {
        fn next_suffix(&mut self) -> String {
            "same".into()
        }
    }
    let mgr = shardlog_coordinator::GroupManager::new(test_config(), Box::new(Constant)).unwrap();
    let mut sim = Sim::with_manager(mgr);
    let t = sim.join(join_req("c", "", &[("range", "")]));
    assert_eq!(sim.join_reply(t).unwrap().member_id, "c-same");
    let t = sim.join(join_req("c", "", &[("range", "")]));
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::COORDINATOR_NOT_AVAILABLE
    );
}

#[test]
fn stale_and_early_timers_are_harmless() {
    let mut sim = Sim::new(test_config());
    let (a, g) = sim.single_stable_member("a");
    let keys = [
        TimerKey::Member {
            group_id: GROUP.into(),
            member_id: a.clone(),
        },
        TimerKey::Member {
            group_id: GROUP.into(),
            member_id: "gone".into(),
        },
        TimerKey::Join {
            group_id: GROUP.into(),
        },
        TimerKey::Sync {
            group_id: GROUP.into(),
        },
        TimerKey::Join {
            group_id: "other".into(),
        },
    ];
    for k in &keys {
        let effects = sim.mgr.on_timer(sim.now, k);
        sim.apply(effects);
    }
    assert_eq!(sim.state(), Some(GroupState::Stable));
    assert_eq!(sim.heartbeat(&a, g), codes::NONE);
    // The real session timer still works afterwards.
    sim.advance(i64::from(SESSION_MS) + 1);
    assert_eq!(sim.state(), Some(GroupState::Empty));
}
