//! Consumer group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.
//!
//! Each handler turns the wire request (any supported version) into the coordinator crate's
//! plain types, runs it on the shard that owns the group's `__consumer_offsets` partition, and
//! turns the answer back. Fields a version lacks keep their defaults (the codec refuses others).
//!
//! A group's coordinator is the broker leading its offsets partition in the snapshot; any other
//! broker answers NOT_COORDINATOR, so the client looks the coordinator up again.

use std::future::Future;
use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use shardlog_coordinator as gc;

use super::Response;
use crate::base::errors;
use crate::cluster::metadata::{BrokerInfo, MetadataSnapshot, CONSUMER_OFFSETS_TOPIC};
use crate::config::BrokerConfig;
use crate::groups::coordinator::GroupCoordinator;
use crate::shard::Shard;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The `__consumer_offsets` partition of `group`. The topic's own partition count decides (as
/// Kafka does), so every broker agrees even if their `offsets.topic.num.partitions` differ.
fn coordinator_partition(snapshot: &MetadataSnapshot, config: &BrokerConfig, group: &str) -> i32 {
    let count = snapshot
        .topic(CONSUMER_OFFSETS_TOPIC)
        .map_or(config.offsets_topic_num_partitions, |t| t.partitions);
    gc::coordinator_partition(group, count)
}

/// Whether this broker coordinates the groups of offsets partition `p`, by `snapshot`:
/// COORDINATOR_NOT_AVAILABLE while the offsets topic does not exist, NOT_COORDINATOR when
/// another broker leads the partition (the client looks the coordinator up again).
fn coordinates(snapshot: &MetadataSnapshot, p: i32) -> Result<(), i16> {
    if snapshot.topic(CONSUMER_OFFSETS_TOPIC).is_none() {
        Err(errors::COORDINATOR_NOT_AVAILABLE)
    } else if snapshot.leads(CONSUMER_OFFSETS_TOPIC, p) {
        Ok(())
    } else {
        Err(errors::NOT_COORDINATOR)
    }
}

/// Runs `f` with the coordinator of `group` on its shard, or says why it cannot: the error
/// code of `coordinates`, or COORDINATOR_NOT_AVAILABLE while the coordinator is not running.
/// Leadership is judged by the owning shard's snapshot, the one its coordinator follows.
async fn on_coordinator<R, F, Fut>(shard: &Rc<Shard>, group: &str, f: F) -> Result<R, i16>
where
    R: Send + 'static,
    F: FnOnce(Rc<GroupCoordinator>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let p = coordinator_partition(&shard.metadata(), &shard.config, group);
    let owner = shard.owner(CONSUMER_OFFSETS_TOPIC, p);
    shard
        .invoke_on(owner, move |s| async move {
            coordinates(&s.metadata(), p)?;
            match s.group_coordinator(p) {
                Some(c) => Ok(f(c).await),
                None => Err(errors::COORDINATOR_NOT_AVAILABLE),
            }
        })
        .await
        .unwrap_or(Err(errors::COORDINATOR_NOT_AVAILABLE))
}

/// Where the coordinator of a group runs: the live leader of its offsets partition.
fn find_one(snapshot: &MetadataSnapshot, config: &BrokerConfig, group: &str) -> Option<BrokerInfo> {
    snapshot.topic(CONSUMER_OFFSETS_TOPIC)?;
    let p = coordinator_partition(snapshot, config, group);
    snapshot.leader_broker(CONSUMER_OFFSETS_TOPIC, p).cloned()
}

pub async fn find_coordinator(
    shard: &Rc<Shard>,
    version: i16,
    req: FindCoordinatorRequest,
) -> Response {
    let keys: Vec<StrBytes> = if version >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    if req.key_type == 1 {
        // Kafka creates the transaction state topic at the first lookup of a transactional
        // id; until its partitions lead, the client is told to retry.
        super::txn::ensure_state_topic(shard).await;
    }
    let snapshot = shard.metadata();
    let answer = |key: &StrBytes| -> Result<BrokerInfo, (i16, Option<&'static str>)> {
        match req.key_type {
            0 if key.is_empty() && version < 4 => {
                Err((errors::INVALID_REQUEST, Some("empty group id")))
            }
            0 if snapshot.topic(CONSUMER_OFFSETS_TOPIC).is_none() => Err((
                errors::COORDINATOR_NOT_AVAILABLE,
                Some("the offsets topic does not exist yet"),
            )),
            0 => find_one(&snapshot, &shard.config, key).ok_or((
                errors::COORDINATOR_NOT_AVAILABLE,
                Some("the group's offsets partition has no live leader"),
            )),
            1 if key.is_empty() => Err((errors::INVALID_REQUEST, Some("empty transactional id"))),
            1 => super::txn::find_one(&snapshot, key).ok_or((
                errors::COORDINATOR_NOT_AVAILABLE,
                Some("the transactional id's state partition has no live leader"),
            )),
            _ => Err((
                errors::INVALID_REQUEST,
                Some("unknown coordinator key type"),
            )),
        }
    };
    let resp = if version >= 4 {
        let coordinators = keys
            .iter()
            .map(|k| {
                let c = Coordinator::default().with_key(k.clone());
                match answer(k) {
                    Ok(b) => c
                        .with_error_code(errors::NONE)
                        .with_node_id(b.id.into())
                        .with_host(s(&b.host))
                        .with_port(i32::from(b.port)),
                    Err((code, msg)) => c
                        .with_error_code(code)
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_message(msg.map(s)),
                }
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        // v0-v3 carry one key; a request without one is answered like an empty group id.
        let key = keys.first().cloned().unwrap_or_default();
        match answer(&key) {
            Ok(b) => FindCoordinatorResponse::default()
                .with_error_code(errors::NONE)
                .with_node_id(b.id.into())
                .with_host(s(&b.host))
                .with_port(i32::from(b.port)),
            Err((code, msg)) => {
                let r = FindCoordinatorResponse::default()
                    .with_error_code(code)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1);
                if version >= 1 {
                    r.with_error_message(msg.map(s))
                } else {
                    r
                }
            }
        }
    };
    Response::Message(ResponseKind::FindCoordinator(resp))
}

pub async fn join_group(
    shard: &Rc<Shard>,
    version: i16,
    req: JoinGroupRequest,
    ctx: &super::RequestContext,
) -> Response {
    let group = req.group_id.0.to_string();
    let join = gc::JoinRequest {
        group_id: group.clone(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|v| v.to_string()),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let member = join.member_id.clone();
    let r = on_coordinator(shard, &group, move |c| async move { c.join(join).await })
        .await
        .unwrap_or_else(|code| gc::JoinResult::error(code, member));
    let members = r
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(s(&m.member_id))
                .with_group_instance_id(if version >= 5 {
                    m.group_instance_id.as_deref().map(s)
                } else {
                    None
                })
                .with_metadata(m.metadata)
        })
        .collect();
    let mut resp = JoinGroupResponse::default()
        .with_error_code(r.error_code)
        .with_generation_id(r.generation_id)
        .with_leader(s(&r.leader))
        .with_member_id(s(&r.member_id))
        .with_members(members);
    // protocol_name is nullable only from v7; before, an unknown protocol is "".
    resp.protocol_name = match (r.protocol_name, version >= 7) {
        (Some(p), _) => Some(s(&p)),
        (None, true) => None,
        (None, false) => Some(StrBytes::default()),
    };
    if version >= 7 {
        resp.protocol_type = r.protocol_type.as_deref().map(s);
    }
    if version >= 9 {
        resp.skip_assignment = r.skip_assignment;
    }
    Response::Message(ResponseKind::JoinGroup(resp))
}

pub async fn sync_group(shard: &Rc<Shard>, version: i16, req: SyncGroupRequest) -> Response {
    let group = req.group_id.0.to_string();
    let sync = gc::SyncRequest {
        group_id: group.clone(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|v| v.to_string()),
        protocol_type: req.protocol_type.as_ref().map(|v| v.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|v| v.to_string()),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let r = on_coordinator(shard, &group, move |c| async move { c.sync(sync).await })
        .await
        .unwrap_or_else(gc::SyncResult::error);
    let mut resp = SyncGroupResponse::default()
        .with_error_code(r.error_code)
        .with_assignment(r.assignment);
    if version >= 5 {
        resp.protocol_type = r.protocol_type.as_deref().map(s);
        resp.protocol_name = r.protocol_name.as_deref().map(s);
    }
    Response::Message(ResponseKind::SyncGroup(resp))
}

pub async fn heartbeat(shard: &Rc<Shard>, _version: i16, req: HeartbeatRequest) -> Response {
    let group = req.group_id.0.to_string();
    let hb = gc::HeartbeatRequest {
        group_id: group.clone(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|v| v.to_string()),
    };
    let code = on_coordinator(shard, &group, move |c| async move {
        c.call(|m, now| m.heartbeat(now, hb)).await.0
    })
    .await
    .unwrap_or_else(|code| code);
    Response::Message(ResponseKind::Heartbeat(
        HeartbeatResponse::default().with_error_code(code),
    ))
}

pub async fn leave_group(shard: &Rc<Shard>, version: i16, req: LeaveGroupRequest) -> Response {
    let group = req.group_id.0.to_string();
    let members: Vec<gc::LeavingMember> = if version >= 3 {
        req.members
            .iter()
            .map(|m| gc::LeavingMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|v| v.to_string()),
            })
            .collect()
    } else {
        vec![gc::LeavingMember {
            member_id: req.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let g = group.clone();
    let r = on_coordinator(shard, &group, move |c| async move {
        let (r, durable) = c.call(|m, now| m.leave(now, &g, members)).await;
        if durable {
            r
        } else {
            gc::LeaveResult {
                error_code: errors::NOT_COORDINATOR,
                members: Vec::new(),
            }
        }
    })
    .await
    .unwrap_or_else(|code| gc::LeaveResult {
        error_code: code,
        members: Vec::new(),
    });
    let mut resp = LeaveGroupResponse::default();
    if version >= 3 {
        resp.error_code = r.error_code;
        resp.members = r
            .members
            .into_iter()
            .map(|(m, code)| {
                MemberResponse::default()
                    .with_member_id(s(&m.member_id))
                    .with_group_instance_id(m.group_instance_id.as_deref().map(s))
                    .with_error_code(code)
            })
            .collect();
    } else {
        // One member: its own error is the answer.
        resp.error_code = if r.error_code != errors::NONE {
            r.error_code
        } else {
            r.members.first().map(|(_, c)| *c).unwrap_or(errors::NONE)
        };
    }
    Response::Message(ResponseKind::LeaveGroup(resp))
}

/// A commit's partitions by topic, as the coordinator takes them.
fn commit_topics<'a, T: 'a, P: 'a>(
    topics: &'a [T],
    parts_of: impl Fn(&'a T) -> (&'a TopicName, &'a [P]),
    partition: impl Fn(&P) -> gc::CommitPartition,
) -> Vec<(String, Vec<gc::CommitPartition>)> {
    topics
        .iter()
        .map(|t| {
            let (name, parts) = parts_of(t);
            (name.0.to_string(), parts.iter().map(&partition).collect())
        })
        .collect()
}

/// `code` for every partition of a commit.
fn all_failed(
    topics: &[(String, Vec<gc::CommitPartition>)],
    code: i16,
) -> gc::TopicPartitionErrors {
    topics
        .iter()
        .map(|(t, ps)| (t.clone(), ps.iter().map(|p| (p.partition, code)).collect()))
        .collect()
}

/// The fields OffsetCommit and TxnOffsetCommit partitions share.
trait CommitFields {
    fn fields(&self) -> (i32, i64, i32, Option<&StrBytes>);
}

/// The two request partition types have the same field names.
macro_rules! commit_fields {
    ($($t:ty),*) => {$(
        impl CommitFields for $t {
            fn fields(&self) -> (i32, i64, i32, Option<&StrBytes>) {
                let meta = self.committed_metadata.as_ref();
                (self.partition_index, self.committed_offset, self.committed_leader_epoch, meta)
            }
        }
    )*};
}

commit_fields!(
    offset_commit_request::OffsetCommitRequestPartition,
    txn_offset_commit_request::TxnOffsetCommitRequestPartition
);

/// One partition of a commit; the leader epoch only where the version carries it.
fn commit_partition(p: &impl CommitFields, has_epoch: bool) -> gc::CommitPartition {
    let (partition, offset, epoch, metadata) = p.fields();
    gc::CommitPartition {
        partition,
        offset,
        leader_epoch: if has_epoch { epoch } else { -1 },
        metadata: metadata.map(|v| v.to_string()),
    }
}

pub async fn offset_commit(shard: &Rc<Shard>, version: i16, req: OffsetCommitRequest) -> Response {
    let group = req.group_id.0.to_string();
    let topics = commit_topics(
        &req.topics,
        |t| (&t.name, &t.partitions),
        |p| commit_partition(p, version >= 6),
    );
    let all_failed = |code| all_failed(&topics, code);
    let commit = gc::OffsetCommitRequest {
        group_id: group.clone(),
        generation_id: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|v| v.to_string()),
        topics: topics.clone(),
    };
    let result = on_coordinator(shard, &group, move |c| async move {
        let (errs, durable) = c.call(|m, now| m.commit_offsets(now, commit)).await;
        (errs, durable)
    })
    .await;
    let errs = match result {
        Ok((errs, true)) => errs,
        Ok((_, false)) => all_failed(errors::NOT_COORDINATOR),
        Err(code) => all_failed(code),
    };
    let topics = errs
        .into_iter()
        .map(|(name, parts)| {
            OffsetCommitResponseTopic::default()
                .with_name(TopicName(s(&name)))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, code)| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    Response::Message(ResponseKind::OffsetCommit(
        OffsetCommitResponse::default().with_topics(topics),
    ))
}

/// TxnOffsetCommit: offsets sent to a transaction; they count once its COMMIT marker lands
/// on the group's offsets partition.
pub async fn txn_offset_commit(
    shard: &Rc<Shard>,
    version: i16,
    req: TxnOffsetCommitRequest,
) -> Response {
    let group = req.group_id.0.to_string();
    let topics = commit_topics(
        &req.topics,
        |t| (&t.name, &t.partitions),
        |p| commit_partition(p, version >= 2),
    );
    let commit = gc::TxnOffsetCommitRequest {
        transactional_id: req.transactional_id.0.to_string(),
        group_id: group.clone(),
        producer_id: req.producer_id.0,
        producer_epoch: req.producer_epoch,
        generation_id: if version >= 3 { req.generation_id } else { -1 },
        member_id: if version >= 3 {
            req.member_id.to_string()
        } else {
            String::new()
        },
        group_instance_id: req.group_instance_id.as_ref().map(|v| v.to_string()),
        topics: topics.clone(),
    };
    let errs = on_coordinator(shard, &group, move |c| async move {
        c.txn_offset_commit(commit).await
    })
    .await
    .unwrap_or_else(|code| all_failed(&topics, code));
    // Clients before KIP-588 (v3) know INVALID_PRODUCER_EPOCH, not PRODUCER_FENCED.
    let fenced = |code: i16| {
        if code == errors::PRODUCER_FENCED && version < 3 {
            errors::INVALID_PRODUCER_EPOCH
        } else {
            code
        }
    };
    let topics = errs
        .into_iter()
        .map(|(name, parts)| {
            txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                .with_name(TopicName(s(&name)))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, code)| {
                            txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(fenced(code))
                        })
                        .collect(),
                )
        })
        .collect();
    Response::Message(ResponseKind::TxnOffsetCommit(
        TxnOffsetCommitResponse::default().with_topics(topics),
    ))
}

pub async fn offset_fetch(shard: &Rc<Shard>, version: i16, req: OffsetFetchRequest) -> Response {
    // v8+ carries several groups; earlier versions one, in the top-level fields.
    let groups: Vec<gc::OffsetFetchGroup> = if version >= 8 {
        req.groups
            .iter()
            .map(|g| gc::OffsetFetchGroup {
                group_id: g.group_id.0.to_string(),
                topics: g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                }),
            })
            .collect()
    } else {
        vec![gc::OffsetFetchGroup {
            group_id: req.group_id.0.to_string(),
            topics: req.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect()
            }),
        }]
    };
    let mut results = Vec::with_capacity(groups.len());
    for g in groups {
        let id = g.group_id.clone();
        let query = g.clone();
        // Only committed offsets: what the coordinator's memory holds may not be yet.
        // KIP-447: a consumer that asks for stable offsets waits for pending transactional
        // commits (UNSTABLE_OFFSET_COMMIT, retried by the client).
        let stable = version >= 7 && req.require_stable;
        let r = on_coordinator(shard, &id, move |c| async move {
            c.read_committed(|m| m.fetch_offsets_stable(&[query], stable))
                .await
        })
        .await
        .and_then(|v| v.ok_or(errors::NOT_COORDINATOR))
        .and_then(|mut v| v.pop().ok_or(errors::UNKNOWN_SERVER_ERROR))
        .unwrap_or_else(|code| gc::OffsetFetchGroupResult {
            group_id: id,
            error_code: code,
            topics: Vec::new(),
        });
        results.push(r);
    }
    let meta = |m: String| Some(s(&m));
    let resp = if version >= 8 {
        let groups = results
            .into_iter()
            .map(|g| {
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(s(&g.group_id)))
                    .with_error_code(g.error_code)
                    .with_topics(
                        g.topics
                            .into_iter()
                            .map(|(t, ps)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(s(&t)))
                                    .with_partitions(
                                        ps.into_iter()
                                            .map(|p| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p.partition)
                                                    .with_committed_offset(p.committed_offset)
                                                    .with_committed_leader_epoch(
                                                        p.committed_leader_epoch,
                                                    )
                                                    .with_metadata(meta(p.metadata))
                                                    .with_error_code(p.error_code)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetFetchResponse::default().with_groups(groups)
    } else {
        let g = results.pop().expect("one group");
        let topics = g
            .topics
            .into_iter()
            .map(|(t, ps)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(s(&t)))
                    .with_partitions(
                        ps.into_iter()
                            .map(|p| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p.partition)
                                    .with_committed_offset(p.committed_offset)
                                    .with_committed_leader_epoch(if version >= 5 {
                                        p.committed_leader_epoch
                                    } else {
                                        -1
                                    })
                                    .with_metadata(meta(p.metadata))
                                    .with_error_code(p.error_code)
                            })
                            .collect(),
                    )
            })
            .collect();
        let r = OffsetFetchResponse::default().with_topics(topics);
        if version >= 2 {
            r.with_error_code(g.error_code)
        } else {
            r
        }
    };
    Response::Message(ResponseKind::OffsetFetch(resp))
}

pub async fn list_groups(shard: &Rc<Shard>, version: i16, req: ListGroupsRequest) -> Response {
    let states: Vec<String> = if version >= 4 {
        req.states_filter.iter().map(|v| v.to_string()).collect()
    } else {
        vec![]
    };
    let types: Vec<String> = if version >= 5 {
        req.types_filter.iter().map(|v| v.to_string()).collect()
    } else {
        vec![]
    };
    let answers = shard
        .invoke_on_all(move |s| {
            let (states, types) = (states.clone(), types.clone());
            async move {
                // Only partitions this broker leads: a coordinator still winding down after
                // losing its partition no longer speaks for its groups.
                let snapshot = s.metadata();
                s.group_coordinators()
                    .iter()
                    .filter(|c| coordinates(&snapshot, c.partition.index).is_ok())
                    .map(|c| c.read(|m| m.list_groups(&states, &types)))
                    .collect::<Vec<_>>()
            }
        })
        .await;
    let mut error = errors::NONE;
    let mut groups = Vec::new();
    for r in answers.into_iter().flatten().flatten() {
        if r.error_code != errors::NONE {
            error = r.error_code;
        }
        for g in r.groups {
            let mut lg = kafka_protocol::messages::list_groups_response::ListedGroup::default()
                .with_group_id(GroupId(s(&g.group_id)))
                .with_protocol_type(s(&g.protocol_type));
            if version >= 4 {
                lg.group_state = s(g.state.as_str());
            }
            if version >= 5 {
                lg.group_type = s(g.group_type);
            }
            groups.push(lg);
        }
    }
    Response::Message(ResponseKind::ListGroups(
        ListGroupsResponse::default()
            .with_error_code(error)
            .with_groups(groups),
    ))
}

pub async fn describe_groups(
    shard: &Rc<Shard>,
    version: i16,
    req: DescribeGroupsRequest,
) -> Response {
    let mut out = Vec::with_capacity(req.groups.len());
    for g in &req.groups {
        let id = g.0.to_string();
        let q = vec![id.clone()];
        let d = on_coordinator(shard, &id, move |c| async move {
            c.read(|m| m.describe_groups(&q, false))
        })
        .await
        .and_then(|mut v| v.pop().ok_or(errors::UNKNOWN_SERVER_ERROR));
        let dg = match d {
            Ok(d) => kafka_protocol::messages::describe_groups_response::DescribedGroup::default()
                .with_error_code(d.error_code)
                .with_group_id(GroupId(s(&d.group_id)))
                .with_group_state(s(d.state))
                .with_protocol_type(s(&d.protocol_type))
                .with_protocol_data(s(&d.protocol_data))
                .with_authorized_operations(i32::MIN)
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            kafka_protocol::messages::describe_groups_response::DescribedGroupMember::default()
                                .with_member_id(s(&m.member_id))
                                .with_group_instance_id(if version >= 4 { m.group_instance_id.as_deref().map(s) } else { None })
                                .with_client_id(s(&m.client_id))
                                .with_client_host(s(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
            Err(code) => kafka_protocol::messages::describe_groups_response::DescribedGroup::default()
                .with_error_code(code)
                .with_group_id(g.clone())
                .with_authorized_operations(i32::MIN),
        };
        out.push(dg);
    }
    Response::Message(ResponseKind::DescribeGroups(
        DescribeGroupsResponse::default().with_groups(out),
    ))
}

pub async fn delete_groups(shard: &Rc<Shard>, _version: i16, req: DeleteGroupsRequest) -> Response {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in &req.groups_names {
        let id = g.0.to_string();
        let q = vec![id.clone()];
        let code = on_coordinator(shard, &id, move |c| async move {
            let (r, durable) = c.call(|m, now| m.delete_groups(now, &q)).await;
            match (r.first(), durable) {
                (Some((_, code)), true) => *code,
                (_, false) => errors::NOT_COORDINATOR,
                (None, true) => errors::NONE,
            }
        })
        .await
        .unwrap_or_else(|code| code);
        results.push(
            kafka_protocol::messages::delete_groups_response::DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(code),
        );
    }
    Response::Message(ResponseKind::DeleteGroups(
        DeleteGroupsResponse::default().with_results(results),
    ))
}

pub async fn offset_delete(shard: &Rc<Shard>, _version: i16, req: OffsetDeleteRequest) -> Response {
    let group = req.group_id.0.to_string();
    let del = gc::OffsetDeleteRequest {
        group_id: group.clone(),
        topics: req
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect(),
    };
    let r = on_coordinator(shard, &group, move |c| async move {
        let (r, durable) = c.call(|m, now| m.delete_offsets(now, del)).await;
        if durable {
            r
        } else {
            gc::OffsetDeleteResult {
                error_code: errors::NOT_COORDINATOR,
                topics: Vec::new(),
            }
        }
    })
    .await
    .unwrap_or_else(|code| gc::OffsetDeleteResult {
        error_code: code,
        topics: Vec::new(),
    });
    let topics = r
        .topics
        .into_iter()
        .map(|(t, ps)| {
            OffsetDeleteResponseTopic::default()
                .with_name(TopicName(s(&t)))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, code)| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    Response::Message(ResponseKind::OffsetDelete(
        OffsetDeleteResponse::default()
            .with_error_code(r.error_code)
            .with_topics(topics),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::cluster::metadata::{new_topic, PartitionState};

    /// Broker 1's view: brokers 1 and 2 alive, offsets topic with `leaders[i]` leading
    /// partition i (empty: the offsets topic does not exist).
    fn snapshot(leaders: &[i32]) -> MetadataSnapshot {
        let mut s = crate::cluster::metadata::cluster_view(&[1, 2]);
        if !leaders.is_empty() {
            let config = BrokerConfig::default();
            let mut t = new_topic(
                &config,
                CONSUMER_OFFSETS_TOPIC,
                leaders.len() as i32,
                BTreeMap::new(),
            )
            .unwrap();
            t.states = leaders
                .iter()
                .map(|&l| PartitionState {
                    replicas: crate::base::ids::BrokerId::list(&[1, 2, 3]),
                    leader: crate::base::ids::BrokerId(l),
                    leader_epoch: 1,
                    isr: vec![crate::base::ids::BrokerId(l)],
                    zk_version: 0,
                })
                .collect();
            s.topics.insert(t.name.clone(), Arc::new(t));
        }
        s
    }

    #[test]
    fn the_coordinator_is_the_live_leader_of_the_groups_partition() {
        let config = BrokerConfig::default();
        // Two partitions: "a" hashes to 47 % 2 = 1, "" to 0.
        let s = snapshot(&[1, 2]);
        assert_eq!(coordinator_partition(&s, &config, "a"), 1);
        assert_eq!(find_one(&s, &config, "a").map(|b| b.port), Some(9002));
        assert_eq!(find_one(&s, &config, "").map(|b| b.id.0), Some(1));
        // A leader that is not alive, or no leader: no coordinator.
        let s = snapshot(&[crate::cluster::metadata::NO_LEADER.0, 3]);
        assert!(find_one(&s, &config, "a").is_none());
        assert!(find_one(&s, &config, "").is_none());
        // No offsets topic: the configured partition count decides, and there is no coordinator.
        let s = snapshot(&[]);
        assert_eq!(
            coordinator_partition(&s, &config, "a"),
            gc::coordinator_partition("a", config.offsets_topic_num_partitions)
        );
        assert!(find_one(&s, &config, "a").is_none());
    }

    #[test]
    fn only_the_leader_coordinates() {
        let s = snapshot(&[1, 2]);
        assert_eq!(coordinates(&s, 0), Ok(()));
        assert_eq!(coordinates(&s, 1), Err(errors::NOT_COORDINATOR));
        // A partition whose state is not known yet is not led here either.
        assert_eq!(coordinates(&s, 7), Err(errors::NOT_COORDINATOR));
        assert_eq!(
            coordinates(&snapshot(&[]), 0),
            Err(errors::COORDINATOR_NOT_AVAILABLE)
        );
    }
}
