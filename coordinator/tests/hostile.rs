//! Hostile and degenerate inputs: every one gets an error code or a sane result, never a panic.

mod common;

use bytes::Bytes;
use common::*;
use shardlog_coordinator::{
    codes, GroupConfig, GroupManager, GroupState, OffsetFetchGroup, SeededMemberIds,
};

#[test]
fn oversized_member_metadata_and_protocol_lists() {
    let mut sim = Sim::new(test_config());
    let mut req = join_req("c", "", &[]);
    req.protocols = vec![("range".into(), Bytes::from(vec![0u8; 2 << 20]))];
    let t = sim.join(req);
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::INVALID_REQUEST
    );
    let mut req = join_req("c", "", &[]);
    req.protocols = (0..65).map(|i| (format!("p{i}"), Bytes::new())).collect();
    let t = sim.join(req);
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::INVALID_REQUEST
    );
    let mut req = join_req("c", "", &[("range", "")]);
    req.protocols[0].0 = "x".repeat(40_000);
    let t = sim.join(req);
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::INVALID_REQUEST
    );
    assert_eq!(sim.mgr.group_count(), 0);
}

#[test]
fn overlong_strings() {
    let mut sim = Sim::new(test_config());
    let mut req = join_req(&"c".repeat(40_000), "", &[("range", "")]);
    let t = sim.join(req.clone());
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::INVALID_REQUEST
    );
    req.client_id = "é".repeat(2_500);
    let t = sim.join(req.clone());
    let r = sim.join_reply(t).unwrap();
    assert_eq!(r.error_code, codes::MEMBER_ID_REQUIRED);
    assert!(r.member_id.len() <= 1024 + 1 + 36, "{}", r.member_id.len());
    req.group_id = "g".repeat(40_000);
    let t = sim.join(req);
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::INVALID_GROUP_ID
    );
    let (r, _) = sim.mgr.commit_offsets(
        sim.now,
        shardlog_coordinator::OffsetCommitRequest {
            group_id: "simple".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            topics: vec![(
                "t".repeat(40_000),
                vec![shardlog_coordinator::CommitPartition {
                    partition: 0,
                    offset: 0,
                    leader_epoch: -1,
                    metadata: None,
                }],
            )],
        },
    );
    assert_eq!(r[0].1[0].1, codes::INVALID_TOPIC_EXCEPTION);
    assert_eq!(sim.mgr.group_state("simple"), None);
}

#[test]
fn duplicate_protocol_names_keep_the_first() {
    let mut sim = Sim::new(test_config());
    let (t, _) = sim.join_new("c", &[("range", "first"), ("range", "second")]);
    let r = sim.join_reply(t).unwrap();
    assert_eq!(r.members[0].metadata, Bytes::from_static(b"first"));
}

#[test]
fn odd_timeouts_and_clock_values() {
    let mut sim = Sim::new(test_config());
    let mut req = join_req("c", "", &[("range", "")]);
    req.rebalance_timeout_ms = -5;
    req.require_known_member_id = false;
    let t = sim.join(req);
    assert_eq!(sim.join_reply(t).unwrap().generation_id, 1);
    // A clock near the end of time: deadlines saturate instead of overflowing.
    sim.now = i64::MAX - 10;
    let id = sim.join_reply(t).unwrap().member_id.clone();
    assert_eq!(sim.heartbeat(&id, 1), codes::NONE);
    let t = sim.join(join_req("d", "", &[("range", "")]));
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::MEMBER_ID_REQUIRED
    );
    let effects = sim.mgr.expire_offsets(i64::MIN, i64::MAX);
    sim.apply(effects);
    let effects = sim.mgr.expire_offsets(i64::MAX, i64::MIN);
    sim.apply(effects);
    sim.advance(5);
}

#[test]
fn leader_assignment_with_unknown_missing_and_oversized_entries() {
    let mut sim = Sim::new(GroupConfig {
        member_metadata_max_bytes: 100,
        ..test_config()
    });
    let (a, _) = sim.single_stable_member("a");
    let (tb, b) = sim.join_new("b", &[("range", "")]);
    sim.join(join_req("a", &a, &[("range", "m")]));
    assert!(sim.join_reply(tb).is_some());
    let sb = sim.sync(sync_req(&b, 2, &[]));
    let huge = "x".repeat(101);
    let t = sim.sync(sync_req(&a, 2, &[(&a, &huge)]));
    assert_eq!(
        sim.sync_reply(t).unwrap().error_code,
        codes::INVALID_REQUEST
    );
    assert!(sim.sync_reply(sb).is_none());
    // b is left out, a stranger is named: b gets an empty assignment, the stranger is ignored.
    let t = sim.sync(sync_req(&a, 2, &[(&a, "A"), ("stranger", "S"), (&a, "A2")]));
    assert_eq!(
        sim.sync_reply(t).unwrap().assignment,
        Bytes::from_static(b"A2")
    );
    let rb = sim.sync_reply(sb).unwrap();
    assert_eq!((rb.error_code, rb.assignment.len()), (codes::NONE, 0));
    assert_eq!(sim.state(), Some(GroupState::Stable));
}

#[test]
fn a_follower_cannot_assign() {
    let mut sim = Sim::new(test_config());
    let (a, _) = sim.single_stable_member("a");
    let (tb, b) = sim.join_new("b", &[("range", "")]);
    sim.join(join_req("a", &a, &[("range", "m")]));
    assert!(sim.join_reply(tb).is_some());
    let sb = sim.sync(sync_req(&b, 2, &[(&b, "mine"), (&a, "yours")]));
    assert!(sim.sync_reply(sb).is_none());
    assert_eq!(sim.state(), Some(GroupState::CompletingRebalance));
    // A repeated SyncGroup supersedes the first, which is answered.
    let sb2 = sim.sync(sync_req(&b, 2, &[]));
    assert_eq!(
        sim.sync_reply(sb).unwrap().error_code,
        codes::REBALANCE_IN_PROGRESS
    );
    sim.sync(sync_req(&a, 2, &[(&a, "A"), (&b, "B")]));
    assert_eq!(
        sim.sync_reply(sb2).unwrap().assignment,
        Bytes::from_static(b"B")
    );
}

#[test]
fn many_members_hit_the_size_limit() {
    let mut sim = Sim::new(GroupConfig {
        group_max_size: 100,
        group_initial_rebalance_delay_ms: 1_000,
        ..test_config()
    });
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..300 {
        let mut req = join_req(&format!("c{i}"), "", &[("range", "")]);
        req.require_known_member_id = false;
        let t = sim.join(req);
        match sim.join_reply(t).map(|r| r.error_code) {
            None => accepted += 1,
            Some(codes::GROUP_MAX_SIZE_REACHED) => refused += 1,
            Some(other) => panic!("unexpected {other}"),
        }
    }
    // The initial join phase is Empty -> PreparingRebalance: the cap counts awaiting members.
    assert_eq!((accepted, refused), (100, 200));
    sim.advance(100_000);
    let d = sim.mgr.describe_groups(&[GROUP.into()], false);
    assert!(d[0].members.len() <= 100);
}

#[test]
fn pending_members_are_capped() {
    let mut sim = Sim::new(GroupConfig {
        group_max_pending_members: 10,
        ..test_config()
    });
    let codes_seen: Vec<i16> = (0..12)
        .map(|_| {
            let t = sim.join(join_req("c", "", &[("range", "")]));
            sim.join_reply(t).unwrap().error_code
        })
        .collect();
    assert_eq!(codes_seen[..10], [codes::MEMBER_ID_REQUIRED; 10]);
    assert_eq!(codes_seen[10..], [codes::GROUP_MAX_SIZE_REACHED; 2]);
    // They all expire.
    sim.advance(i64::from(SESSION_MS));
    assert_eq!(sim.state(), None);
}

#[test]
fn empty_and_garbage_ids_everywhere() {
    let mut sim = Sim::new(test_config());
    let (a, g) = sim.single_stable_member("a");
    assert_eq!(sim.heartbeat("", g), codes::UNKNOWN_MEMBER_ID);
    assert_eq!(sim.heartbeat("\u{0}", g), codes::UNKNOWN_MEMBER_ID);
    let t = sim.sync(sync_req("", g, &[]));
    assert_eq!(
        sim.sync_reply(t).unwrap().error_code,
        codes::UNKNOWN_MEMBER_ID
    );
    let r = sim.leave("");
    assert_eq!(r.members[0].1, codes::UNKNOWN_MEMBER_ID);
    let t = sim.join(join_req("a", "not-a-member", &[("range", "m")]));
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::UNKNOWN_MEMBER_ID
    );
    assert_eq!(sim.heartbeat(&a, -1), codes::ILLEGAL_GENERATION);
    assert_eq!(sim.heartbeat(&a, i32::MAX), codes::ILLEGAL_GENERATION);
    let (r, _) = sim.mgr.delete_groups(sim.now, &[String::new()]);
    assert_eq!(r[0].1, codes::GROUP_ID_NOT_FOUND);
    let r = sim.mgr.fetch_offsets(&[OffsetFetchGroup {
        group_id: String::new(),
        topics: Some(vec![(String::new(), vec![-1, i32::MAX])]),
    }]);
    assert_eq!(r[0].topics[0].1.len(), 2);
    assert_eq!(sim.state(), Some(GroupState::Stable));
}

/// A splitmix64 stream, so the test needs no dependency and is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[test]
fn random_bytes_never_panic_the_loader() {
    let valid_key = shardlog_coordinator::records::group_metadata_key("g");
    let mut rng = Rng(42);
    for _ in 0..2_000 {
        let mut mgr =
            GroupManager::new_loading(test_config(), Box::new(SeededMemberIds::new(1))).unwrap();
        for _ in 0..8 {
            let key_len = (rng.next() % 24) as usize;
            let mut key: Vec<u8> = (0..key_len).map(|_| rng.next() as u8).collect();
            if rng.next() & 1 == 0 {
                key = valid_key.to_vec();
            } else if rng.next() & 1 == 0 && key.len() >= 2 {
                key[0] = 0;
                key[1] = (rng.next() % 3) as u8;
            }
            let value_len = (rng.next() % 64) as usize;
            let mut value: Vec<u8> = (0..value_len).map(|_| rng.next() as u8).collect();
            if value.len() >= 2 {
                value[0] = 0;
                value[1] = (rng.next() % 4) as u8;
            }
            let value = (rng.next() & 3 != 0).then(|| Bytes::from(value));
            let _ = mgr.replay(&key, value);
        }
        let _ = mgr.finish_loading(0);
        mgr.check_invariants().unwrap();
    }
}
