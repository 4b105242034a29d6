//! OffsetCommit / OffsetFetch / OffsetDelete / DeleteGroups / expiry, the admin APIs, and the
//! persist → load round trip.

mod common;

use bytes::Bytes;
use common::*;
use shardlog_coordinator::records::{decode_key, RecordKey};
use shardlog_coordinator::subscription::encode_subscription;
use shardlog_coordinator::{
    codes, CommitPartition, Effect, GroupConfig, GroupManager, GroupState, LoadError,
    OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchGroup, ReplayOutcome, SeededMemberIds,
};

fn fetch(sim: &Sim, group: &str, topic: &str, partition: i32) -> (i64, i32, String) {
    let r = sim.mgr.fetch_offsets(&[OffsetFetchGroup {
        group_id: group.into(),
        topics: Some(vec![(topic.into(), vec![partition])]),
    }]);
    assert_eq!(r[0].error_code, codes::NONE);
    let p = &r[0].topics[0].1[0];
    (
        p.committed_offset,
        p.committed_leader_epoch,
        p.metadata.clone(),
    )
}

fn simple_commit(sim: &mut Sim, group: &str, topic: &str, partition: i32, offset: i64) -> i16 {
    let (r, effects) = sim.mgr.commit_offsets(
        sim.now,
        OffsetCommitRequest {
            group_id: group.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            topics: vec![(
                topic.into(),
                vec![CommitPartition {
                    partition,
                    offset,
                    leader_epoch: 7,
                    metadata: Some("meta".into()),
                }],
            )],
        },
    );
    sim.apply(effects);
    r[0].1[0].1
}

fn tombstones(effects: &[Effect]) -> Vec<RecordKey> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist(r) if r.value.is_none() => decode_key(&r.key).unwrap(),
            _ => None,
        })
        .collect()
}

#[test]
fn simple_consumer_commit_and_fetch() {
    let mut sim = Sim::new(test_config());
    assert_eq!(
        fetch(&sim, GROUP, "t", 0),
        (-1, -1, String::new()),
        "unknown group"
    );
    assert_eq!(simple_commit(&mut sim, GROUP, "t", 0, 42), codes::NONE);
    assert_eq!(simple_commit(&mut sim, GROUP, "t", 1, 43), codes::NONE);
    assert_eq!(simple_commit(&mut sim, GROUP, "u", 0, 44), codes::NONE);
    assert_eq!(fetch(&sim, GROUP, "t", 0), (42, 7, "meta".into()));
    assert_eq!(
        fetch(&sim, GROUP, "t", 9),
        (-1, -1, String::new()),
        "unknown partition"
    );
    assert_eq!(sim.state(), Some(GroupState::Empty));
    assert_eq!(sim.mgr.generation_id(GROUP), Some(0));
    // Fetch everything, and several groups at once (OffsetFetch v8).
    let r = sim.mgr.fetch_offsets(&[
        OffsetFetchGroup {
            group_id: GROUP.into(),
            topics: None,
        },
        OffsetFetchGroup {
            group_id: "other".into(),
            topics: Some(vec![("t".into(), vec![0])]),
        },
    ]);
    let all: Vec<(String, Vec<(i32, i64)>)> = r[0]
        .topics
        .iter()
        .map(|(t, ps)| {
            (
                t.clone(),
                ps.iter()
                    .map(|p| (p.partition, p.committed_offset))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        all,
        [
            ("t".to_string(), vec![(0, 42), (1, 43)]),
            ("u".to_string(), vec![(0, 44)])
        ]
    );
    assert_eq!(r[1].topics[0].1[0].committed_offset, -1);
    // The records are Kafka's: key v1 with group/topic/partition.
    let keys: Vec<_> = sim
        .log
        .iter()
        .map(|r| decode_key(&r.key).unwrap().unwrap())
        .collect();
    assert_eq!(
        keys[0],
        RecordKey::OffsetCommit {
            group: GROUP.into(),
            topic: "t".into(),
            partition: 0
        }
    );
}

#[test]
fn member_commit_rules() {
    let mut sim = Sim::new(test_config());
    let (a, g) = sim.single_stable_member("a");
    assert_eq!(sim.commit(&a, g, "t", 0, 5), codes::NONE);
    assert_eq!(sim.commit(&a, g + 1, "t", 0, 5), codes::ILLEGAL_GENERATION);
    assert_eq!(
        sim.commit("stranger", g, "t", 0, 5),
        codes::UNKNOWN_MEMBER_ID
    );
    // A simple-consumer commit is refused once the group has members.
    assert_eq!(sim.commit("", -1, "t", 0, 5), codes::UNKNOWN_MEMBER_ID);
    // A generation on a group the coordinator does not know.
    let (r, _) = sim.mgr.commit_offsets(
        sim.now,
        OffsetCommitRequest {
            group_id: "unknown".into(),
            generation_id: 3,
            member_id: "m".into(),
            group_instance_id: None,
            topics: vec![("t".into(), vec![])],
        },
    );
    assert_eq!(r[0].0, "t");
    let (r, _) = sim.mgr.commit_offsets(
        sim.now,
        OffsetCommitRequest {
            group_id: "unknown".into(),
            generation_id: 3,
            member_id: "m".into(),
            group_instance_id: None,
            topics: vec![(
                "t".into(),
                vec![CommitPartition {
                    partition: 0,
                    offset: 1,
                    leader_epoch: -1,
                    metadata: None,
                }],
            )],
        },
    );
    assert_eq!(r[0].1[0].1, codes::ILLEGAL_GENERATION);
    assert_eq!(sim.mgr.group_state("unknown"), None);
    // Commits refresh the member's session like heartbeats.
    for _ in 0..5 {
        sim.advance(i64::from(SESSION_MS) / 2);
        assert_eq!(sim.commit(&a, g, "t", 0, 6), codes::NONE);
    }
    assert_eq!(sim.state(), Some(GroupState::Stable));
}

#[test]
fn oversized_offset_metadata_is_refused_per_partition() {
    let mut sim = Sim::new(GroupConfig {
        offset_metadata_max_bytes: 10,
        ..test_config()
    });
    let (r, effects) = sim.mgr.commit_offsets(
        sim.now,
        OffsetCommitRequest {
            group_id: GROUP.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            topics: vec![(
                "t".into(),
                vec![
                    CommitPartition {
                        partition: 0,
                        offset: 1,
                        leader_epoch: -1,
                        metadata: Some("x".repeat(11)),
                    },
                    CommitPartition {
                        partition: 1,
                        offset: 1,
                        leader_epoch: -1,
                        metadata: Some("x".repeat(10)),
                    },
                ],
            )],
        },
    );
    sim.apply(effects);
    assert_eq!(
        r[0].1,
        [(0, codes::OFFSET_METADATA_TOO_LARGE), (1, codes::NONE)]
    );
    assert_eq!(sim.log.len(), 1);
}

#[test]
fn offsets_of_simple_consumers_expire_and_the_group_dies() {
    let mut sim = Sim::new(test_config());
    simple_commit(&mut sim, GROUP, "t", 0, 1);
    sim.advance(1_000);
    simple_commit(&mut sim, GROUP, "t", 1, 1);
    let retention = 10_000;
    sim.advance(9_000);
    let effects = sim.mgr.expire_offsets(sim.now, retention);
    assert_eq!(
        tombstones(&effects),
        [RecordKey::OffsetCommit {
            group: GROUP.into(),
            topic: "t".into(),
            partition: 0
        }]
    );
    sim.apply(effects);
    assert_eq!(fetch(&sim, GROUP, "t", 0).0, -1);
    assert_eq!(fetch(&sim, GROUP, "t", 1).0, 1);
    sim.advance(1_000);
    let effects = sim.mgr.expire_offsets(sim.now, retention);
    // Generation 0 was never written, so no group tombstone.
    assert_eq!(tombstones(&effects).len(), 1);
    sim.apply(effects);
    assert_eq!(sim.state(), None, "an Empty group without offsets is dead");
}

#[test]
fn empty_consumer_group_offsets_expire_from_when_it_became_empty() {
    let mut sim = Sim::new(test_config());
    let (a, g) = sim.single_stable_member("a");
    sim.commit(&a, g, "t", 0, 5);
    for _ in 0..20 {
        sim.advance(5_000);
        assert_eq!(sim.heartbeat(&a, g), codes::NONE);
    }
    // 100 s after the commit, but the group has members: nothing expires (the member's
    // metadata is not a consumer subscription, so topics are unknown and all are kept).
    assert!(
        sim.mgr.expire_offsets(sim.now, 1_000).is_empty(),
        "Stable: kept"
    );
    sim.leave(&a);
    assert_eq!(sim.state(), Some(GroupState::Empty));
    sim.advance(999);
    assert!(sim.mgr.expire_offsets(sim.now, 1_000).is_empty());
    sim.advance(1);
    let effects = sim.mgr.expire_offsets(sim.now, 1_000);
    let t = tombstones(&effects);
    assert_eq!(
        t.len(),
        2,
        "the offset and, generation > 0, the group: {t:?}"
    );
    assert!(t.contains(&RecordKey::GroupMetadata {
        group: GROUP.into()
    }));
    sim.apply(effects);
    assert_eq!(sim.state(), None);
}

#[test]
fn stable_consumer_group_expires_only_unsubscribed_topics() {
    let mut sim = Sim::new(test_config());
    let sub = encode_subscription(&["orders"]);
    let mut req = join_req("a", "", &[]);
    req.protocols = vec![("range".into(), sub.clone())];
    let t = sim.join(req.clone());
    let id = sim.join_reply(t).unwrap().member_id.clone();
    req.member_id = id.clone();
    let t = sim.join(req);
    let g = sim.join_reply(t).unwrap().generation_id;
    sim.sync(sync_req(&id, g, &[(&id, "x")]));
    assert_eq!(sim.commit(&id, g, "orders", 0, 1), codes::NONE);
    assert_eq!(sim.commit(&id, g, "old-topic", 0, 1), codes::NONE);
    sim.advance(5_000);
    sim.heartbeat(&id, g);
    let effects = sim.mgr.expire_offsets(sim.now, 5_000);
    assert_eq!(
        tombstones(&effects),
        [RecordKey::OffsetCommit {
            group: GROUP.into(),
            topic: "old-topic".into(),
            partition: 0
        }]
    );
    sim.apply(effects);
    // OffsetDelete refuses a subscribed topic and accepts an unsubscribed one.
    let (r, effects) = sim.mgr.delete_offsets(
        sim.now,
        OffsetDeleteRequest {
            group_id: GROUP.into(),
            topics: vec![("orders".into(), vec![0]), ("other".into(), vec![0])],
        },
    );
    sim.apply(effects);
    assert_eq!(r.error_code, codes::NONE);
    assert_eq!(r.topics[0].1, [(0, codes::GROUP_SUBSCRIBED_TO_TOPIC)]);
    assert_eq!(r.topics[1].1, [(0, codes::NONE)]);
    assert_eq!(fetch(&sim, GROUP, "orders", 0).0, 1);
}

#[test]
fn bounded_expiry_steps_cover_every_group() {
    let mut sim = Sim::new(test_config());
    for i in 0..10 {
        simple_commit(&mut sim, &format!("group-{i}"), "t", 0, 1);
    }
    sim.advance(10);
    let mut rounds = 0;
    let mut expired = 0;
    loop {
        rounds += 1;
        let (effects, done) = sim.mgr.expire_offsets_step(sim.now, 0, 3);
        expired += tombstones(&effects).len();
        sim.apply(effects);
        if done {
            break;
        }
    }
    assert_eq!((rounds, expired), (4, 10));
    assert_eq!(sim.mgr.group_count(), 0);
}

#[test]
fn delete_offsets_and_groups() {
    let mut sim = Sim::new(test_config());
    let (r, _) = sim.mgr.delete_offsets(
        sim.now,
        OffsetDeleteRequest {
            group_id: "nope".into(),
            topics: vec![],
        },
    );
    assert_eq!(r.error_code, codes::GROUP_ID_NOT_FOUND);

    // A non-consumer group with members refuses OffsetDelete and DeleteGroups.
    let mut req = join_req("w", "", &[("sessioned", "")]);
    req.protocol_type = "connect".into();
    req.require_known_member_id = false;
    let t = sim.join(req);
    let w = sim.join_reply(t).unwrap().member_id.clone();
    let mut s = sync_req(&w, 1, &[(&w, "x")]);
    s.protocol_type = Some("connect".into());
    sim.sync(s);
    assert_eq!(sim.commit(&w, 1, "t", 0, 9), codes::NONE);
    let (r, _) = sim.mgr.delete_offsets(
        sim.now,
        OffsetDeleteRequest {
            group_id: GROUP.into(),
            topics: vec![("t".into(), vec![0])],
        },
    );
    assert_eq!(r.error_code, codes::NON_EMPTY_GROUP);
    let (r, _) = sim
        .mgr
        .delete_groups(sim.now, &[GROUP.into(), "nope".into(), GROUP.into()]);
    assert_eq!(
        r,
        [
            (GROUP.to_string(), codes::NON_EMPTY_GROUP),
            ("nope".to_string(), codes::GROUP_ID_NOT_FOUND)
        ]
    );

    // Once Empty, the group goes, with tombstones for its offsets and metadata.
    sim.leave(&w);
    let (r, effects) = sim.mgr.delete_groups(sim.now, &[GROUP.into()]);
    assert_eq!(r, [(GROUP.to_string(), codes::NONE)]);
    let t = tombstones(&effects);
    assert!(t.contains(&RecordKey::GroupMetadata {
        group: GROUP.into()
    }));
    assert!(t.contains(&RecordKey::OffsetCommit {
        group: GROUP.into(),
        topic: "t".into(),
        partition: 0
    }));
    sim.apply(effects);
    assert_eq!(sim.state(), None);

    // OffsetDelete on an Empty group removes the offsets; the last one takes the group along.
    simple_commit(&mut sim, "simple", "t", 0, 1);
    let (r, effects) = sim.mgr.delete_offsets(
        sim.now,
        OffsetDeleteRequest {
            group_id: "simple".into(),
            topics: vec![("t".into(), vec![0, 5])],
        },
    );
    assert_eq!(r.topics[0].1, [(0, codes::NONE), (5, codes::NONE)]);
    assert_eq!(tombstones(&effects).len(), 1);
    sim.apply(effects);
    assert_eq!(sim.mgr.group_state("simple"), None);
}

#[test]
fn list_and_describe() {
    let mut sim = Sim::new(test_config());
    let (a, _) = sim.single_stable_member("a");
    simple_commit(&mut sim, "simple", "t", 0, 1);
    let all = sim.mgr.list_groups(&[], &[]);
    assert_eq!(all.error_code, codes::NONE);
    let rows: Vec<(&str, &str, GroupState)> = all
        .groups
        .iter()
        .map(|g| (g.group_id.as_str(), g.protocol_type.as_str(), g.state))
        .collect();
    assert_eq!(
        rows,
        [
            ("g", "consumer", GroupState::Stable),
            ("simple", "", GroupState::Empty)
        ]
    );
    assert_eq!(sim.mgr.list_groups(&["stable".into()], &[]).groups.len(), 1);
    assert_eq!(
        sim.mgr.list_groups(&[], &["Classic".into()]).groups.len(),
        2
    );
    assert_eq!(
        sim.mgr.list_groups(&[], &["consumer".into()]).groups.len(),
        0
    );

    let d = sim
        .mgr
        .describe_groups(&[GROUP.into(), "missing".into()], false);
    assert_eq!(
        (d[0].state, d[0].protocol_data.as_str()),
        ("Stable", "range")
    );
    assert_eq!(d[0].members[0].member_id, a);
    assert_eq!(d[0].members[0].assignment, Bytes::from_static(b"a"));
    assert_eq!(d[0].members[0].metadata, Bytes::from_static(b"m"));
    assert_eq!((d[1].error_code, d[1].state), (codes::NONE, "Dead"));
    let d = sim.mgr.describe_groups(&["missing".into()], true);
    assert_eq!(d[0].error_code, codes::GROUP_ID_NOT_FOUND);
    // Outside Stable, no metadata or assignments are shown.
    sim.join_new("b", &[("range", "")]);
    let d = sim.mgr.describe_groups(&[GROUP.into()], false);
    assert_eq!(d[0].state, "PreparingRebalance");
    assert!(d[0]
        .members
        .iter()
        .all(|m| m.assignment.is_empty() && m.metadata.is_empty()));
}

fn reload(sim: &Sim, config: GroupConfig) -> (GroupManager, Vec<Effect>) {
    let records = sim.log.iter().map(|r| (r.key.clone(), r.value.clone()));
    GroupManager::load(config, Box::new(SeededMemberIds::new(99)), records, sim.now).unwrap()
}

#[test]
fn persist_then_load_round_trip() {
    let mut sim = Sim::new(test_config());
    let (ta, a) = sim.join_new("a", &[("range", "ma")]);
    let _ = ta;
    sim.sync(sync_req(&a, 1, &[(&a, "A1")]));
    let (tb, b) = sim.join_new("b", &[("range", "mb")]);
    sim.join(join_req("a", &a, &[("range", "ma")]));
    assert_eq!(sim.join_reply(tb).unwrap().generation_id, 2);
    sim.sync(sync_req(&b, 2, &[]));
    sim.sync(sync_req(&a, 2, &[(&a, "A2"), (&b, "B2")]));
    sim.commit(&a, 2, "t", 0, 100);
    sim.commit(&b, 2, "t", 1, 200);
    sim.commit(&b, 2, "t", 1, 201);
    simple_commit(&mut sim, "simple", "x", 3, 33);
    simple_commit(&mut sim, "deleted", "x", 0, 1);
    let (_, effects) = sim.mgr.delete_groups(sim.now, &["deleted".into()]);
    sim.apply(effects);
    // A third member joins: the generation that is forming is not persisted yet.
    sim.join_new("c", &[("range", "")]);

    let before_fetch = sim.mgr.fetch_offsets(&[
        OffsetFetchGroup {
            group_id: GROUP.into(),
            topics: None,
        },
        OffsetFetchGroup {
            group_id: "simple".into(),
            topics: None,
        },
    ]);
    let (loaded, effects) = reload(&sim, test_config());
    loaded.check_invariants().unwrap();
    assert_eq!(
        loaded.fetch_offsets(&[
            OffsetFetchGroup {
                group_id: GROUP.into(),
                topics: None,
            },
            OffsetFetchGroup {
                group_id: "simple".into(),
                topics: None,
            },
        ]),
        before_fetch
    );
    assert_eq!(loaded.group_state("deleted"), None);
    assert_eq!(loaded.group_state("simple"), Some(GroupState::Empty));
    // The group comes back Stable with the last persisted generation, members and assignments.
    assert_eq!(loaded.group_state(GROUP), Some(GroupState::Stable));
    assert_eq!(loaded.generation_id(GROUP), Some(2));
    assert_eq!(loaded.leader_id(GROUP), Some(a.as_str()));
    let d = loaded.describe_groups(&[GROUP.into()], false);
    let members: Vec<(&str, &[u8], &[u8])> = d[0]
        .members
        .iter()
        .map(|m| (m.member_id.as_str(), &m.metadata[..], &m.assignment[..]))
        .collect();
    assert_eq!(
        members,
        [
            (a.as_str(), &b"ma"[..], &b"A2"[..]),
            (b.as_str(), &b"mb"[..], &b"B2"[..])
        ]
    );
    // Each restored member got a fresh session.
    let sessions = effects
        .iter()
        .filter(|e| matches!(e, Effect::ScheduleTimer { deadline_ms, .. } if *deadline_ms == sim.now + i64::from(SESSION_MS)))
        .count();
    assert_eq!(sessions, 2);

    // Members that keep heartbeating carry on; one that does not expires.
    let mut after = Sim::with_manager(loaded);
    after.now = sim.now;
    after.apply(effects);
    for _ in 0..3 {
        after.advance(3_000);
        assert_eq!(after.heartbeat(&a, 2), codes::NONE);
    }
    after.advance(3_000);
    assert_eq!(after.heartbeat(&b, 2), codes::UNKNOWN_MEMBER_ID);
    assert_eq!(after.state(), Some(GroupState::PreparingRebalance));
}

#[test]
fn loading_answers_like_kafka() {
    let mut mgr =
        GroupManager::new_loading(test_config(), Box::new(SeededMemberIds::new(5))).unwrap();
    assert!(mgr.is_loading());
    let mut sim = Sim::with_manager(mgr);
    let t = sim.join(join_req("c", "", &[("range", "")]));
    assert_eq!(
        sim.join_reply(t).unwrap().error_code,
        codes::COORDINATOR_LOAD_IN_PROGRESS
    );
    let t = sim.sync(sync_req("m", 1, &[]));
    assert_eq!(
        sim.sync_reply(t).unwrap().error_code,
        codes::REBALANCE_IN_PROGRESS
    );
    assert_eq!(
        sim.heartbeat("m", 1),
        codes::NONE,
        "heartbeats are answered blindly"
    );
    assert_eq!(
        sim.commit("", -1, "t", 0, 1),
        codes::COORDINATOR_LOAD_IN_PROGRESS
    );
    assert_eq!(
        sim.mgr.list_groups(&[], &[]).error_code,
        codes::COORDINATOR_LOAD_IN_PROGRESS
    );
    let r = sim.mgr.fetch_offsets(&[OffsetFetchGroup {
        group_id: GROUP.into(),
        topics: None,
    }]);
    assert_eq!(r[0].error_code, codes::COORDINATOR_LOAD_IN_PROGRESS);
    mgr = sim.mgr;
    // Records of other coordinators are skipped; ours are applied.
    assert_eq!(mgr.replay(&[0, 9, 0, 0], None), Ok(ReplayOutcome::Skipped));
    let key = shardlog_coordinator::records::offset_commit_key(GROUP, "t", 0);
    let value = shardlog_coordinator::records::OffsetCommitValue {
        offset: 5,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp: 0,
        expire_timestamp: None,
    }
    .encode();
    assert_eq!(mgr.replay(&key, Some(value)), Ok(ReplayOutcome::Applied));
    assert!(mgr
        .replay(&key, Some(Bytes::from_static(&[0, 3, 1])))
        .is_err());
    let effects = mgr.finish_loading(0);
    assert!(effects.is_empty());
    let mut sim = Sim::with_manager(mgr);
    assert_eq!(fetch(&sim, GROUP, "t", 0).0, 5);
    assert_eq!(sim.commit("", -1, "t", 0, 6), codes::NONE);
}

#[test]
fn load_reports_corrupt_records() {
    let records = vec![(
        shardlog_coordinator::records::group_metadata_key("g"),
        Some(Bytes::from_static(&[0, 3, 0, 5])),
    )];
    let err = GroupManager::load(test_config(), Box::new(SeededMemberIds::new(1)), records, 0)
        .err()
        .unwrap();
    assert!(matches!(err, LoadError::Record { index: 0, .. }), "{err}");
}

#[test]
fn loaded_group_over_capacity_rebalances() {
    let mut sim = Sim::new(test_config());
    let (a, _) = sim.single_stable_member("a");
    let (tb, b) = sim.join_new("b", &[("range", "m")]);
    sim.join(join_req("a", &a, &[("range", "m")]));
    assert!(sim.join_reply(tb).is_some());
    sim.sync(sync_req(&a, 2, &[(&a, "x"), (&b, "y")]));
    let (loaded, effects) = reload(
        &sim,
        GroupConfig {
            group_max_size: 1,
            ..test_config()
        },
    );
    let mut after = Sim::with_manager(loaded);
    after.now = sim.now;
    after.apply(effects);
    assert_eq!(after.state(), Some(GroupState::PreparingRebalance));
    let ta = after.join(join_req("a", &a, &[("range", "m")]));
    let tb = after.join(join_req("b", &b, &[("range", "m")]));
    assert_eq!(
        after.join_reply(tb).unwrap().error_code,
        codes::GROUP_MAX_SIZE_REACHED
    );
    let r = after.join_reply(ta).unwrap();
    assert_eq!((r.generation_id, r.members.len()), (3, 1));
}
