//! Consumer group membership with Kafka's classic protocol: FindCoordinator, JoinGroup,
//! SyncGroup (the leader assigns partitions with the range strategy), Heartbeat and LeaveGroup.
//!
//! Scope, on purpose: one topic, no offset commits (positions start at `--from` on every
//! assignment), no static membership, no cooperative rebalancing. Heartbeats are sent between
//! fetches from the consumer's own thread, so `--fetch-max-wait` must stay well below the
//! session timeout (it is capped at seconds, the session is [`SESSION_TIMEOUT`]).

use anyhow::{anyhow, bail, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::{
    ConsumerProtocolAssignment, TopicPartition,
};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shardlog_client::{codes, error_name, Client};
use std::time::{Duration, Instant};

pub const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
pub const REBALANCE_TIMEOUT: Duration = Duration::from_secs(60);
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
const PROTOCOL_TYPE: &str = "consumer";
const ASSIGNOR: &str = "range";
/// Join attempts before giving up (each may wait for the whole group to gather).
const JOIN_ATTEMPTS: usize = 10;

/// This consumer's place in its group.
pub struct GroupMember {
    group: String,
    member_id: String,
    generation_id: i32,
    last_heartbeat: Instant,
}

/// Range assignment for one topic: members sorted by id, each gets a contiguous range, the
/// first `partitions % members` one partition more (Kafka's RangeAssignor).
pub fn range_assign(members: &[String], partitions: i32) -> Vec<(String, Vec<i32>)> {
    let mut sorted: Vec<String> = members.to_vec();
    sorted.sort();
    let n = sorted.len() as i32;
    if n == 0 {
        return Vec::new();
    }
    let per = partitions / n;
    let extra = partitions % n;
    let mut next = 0;
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let count = per + i32::from((i as i32) < extra);
            let parts: Vec<i32> = (next..next + count).collect();
            next += count;
            (m, parts)
        })
        .collect()
}

/// Embedded consumer-protocol payloads carry their own version as an i16 prefix.
fn encode_versioned<T: Encodable>(msg: &T, version: i16) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    msg.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

pub fn encode_subscription(topic: &str) -> Result<Bytes> {
    let sub = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_string(topic.to_string())]);
    encode_versioned(&sub, 0)
}

pub fn encode_assignment(topic: &str, partitions: &[i32]) -> Result<Bytes> {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
        TopicPartition::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(partitions.to_vec()),
    ]);
    encode_versioned(&a, 0)
}

pub fn decode_assignment(mut bytes: Bytes, topic: &str) -> Result<Vec<i32>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    if bytes.len() < 2 {
        bail!("assignment too short");
    }
    let version = bytes.get_i16().clamp(0, 3);
    let a = ConsumerProtocolAssignment::decode(&mut bytes, version)?;
    Ok(a.assigned_partitions
        .iter()
        .filter(|tp| &*tp.topic.0 == topic)
        .flat_map(|tp| tp.partitions.iter().copied())
        .collect())
}

impl GroupMember {
    /// Joins `group` and returns the partitions of `topic` assigned to this member.
    pub fn join(
        client: &mut Client,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> Result<(GroupMember, Vec<i32>)> {
        let mut m = GroupMember {
            group: group.to_string(),
            member_id: String::new(),
            generation_id: -1,
            last_heartbeat: Instant::now(),
        };
        let parts = m.rejoin(client, topic, partitions)?;
        Ok((m, parts))
    }

    fn rejoin(&mut self, client: &mut Client, topic: &str, partitions: i32) -> Result<Vec<i32>> {
        let coordinator = client.coordinator_of(&self.group)?;
        let conn = client.connection_to(coordinator)?;
        let saved = conn.timeout();
        conn.set_timeout(REBALANCE_TIMEOUT + Duration::from_secs(10))?;
        let result = (|| {
            for _ in 0..JOIN_ATTEMPTS {
                let req = JoinGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
                    .with_session_timeout_ms(SESSION_TIMEOUT.as_millis() as i32)
                    .with_rebalance_timeout_ms(REBALANCE_TIMEOUT.as_millis() as i32)
                    .with_member_id(StrBytes::from_string(self.member_id.clone()))
                    .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
                    .with_protocols(vec![JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str(ASSIGNOR))
                        .with_metadata(encode_subscription(topic)?)]);
                let join = conn.call(&req)?;
                match join.error_code {
                    0 => {}
                    codes::MEMBER_ID_REQUIRED => {
                        self.member_id = join.member_id.to_string();
                        continue;
                    }
                    codes::UNKNOWN_MEMBER_ID => {
                        self.member_id.clear();
                        continue;
                    }
                    codes::REBALANCE_IN_PROGRESS => continue,
                    c => bail!("JoinGroup {}: {} ({c})", self.group, error_name(c)),
                }
                self.member_id = join.member_id.to_string();
                self.generation_id = join.generation_id;
                let assignments = if join.leader == join.member_id {
                    let members: Vec<String> = join
                        .members
                        .iter()
                        .map(|m| m.member_id.to_string())
                        .collect();
                    range_assign(&members, partitions)
                        .into_iter()
                        .map(|(m, parts)| {
                            Ok(SyncGroupRequestAssignment::default()
                                .with_member_id(StrBytes::from_string(m))
                                .with_assignment(encode_assignment(topic, &parts)?))
                        })
                        .collect::<Result<Vec<_>>>()?
                } else {
                    Vec::new()
                };
                let sync = SyncGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
                    .with_generation_id(self.generation_id)
                    .with_member_id(StrBytes::from_string(self.member_id.clone()))
                    .with_protocol_type(Some(StrBytes::from_static_str(PROTOCOL_TYPE)))
                    .with_protocol_name(Some(StrBytes::from_static_str(ASSIGNOR)))
                    .with_assignments(assignments);
                let synced = conn.call(&sync)?;
                match synced.error_code {
                    0 => {
                        self.last_heartbeat = Instant::now();
                        return decode_assignment(synced.assignment, topic);
                    }
                    codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION => continue,
                    codes::UNKNOWN_MEMBER_ID => {
                        self.member_id.clear();
                        continue;
                    }
                    c => bail!("SyncGroup {}: {} ({c})", self.group, error_name(c)),
                }
            }
            Err(anyhow!(
                "could not join group {} after {JOIN_ATTEMPTS} attempts",
                self.group
            ))
        })();
        let _ = conn.set_timeout(saved);
        result
    }

    /// Heartbeats when due. Returns the new assignment if the group rebalanced.
    pub fn heartbeat(
        &mut self,
        client: &mut Client,
        topic: &str,
        partitions: i32,
    ) -> Result<Option<Vec<i32>>> {
        if self.last_heartbeat.elapsed() < HEARTBEAT_INTERVAL {
            return Ok(None);
        }
        let coordinator = client.coordinator_of(&self.group)?;
        let conn = client.connection_to(coordinator)?;
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_generation_id(self.generation_id)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let r = conn.call(&req)?;
        self.last_heartbeat = Instant::now();
        match r.error_code {
            0 => Ok(None),
            codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION | codes::UNKNOWN_MEMBER_ID => {
                if r.error_code == codes::UNKNOWN_MEMBER_ID {
                    self.member_id.clear();
                }
                Ok(Some(self.rejoin(client, topic, partitions)?))
            }
            c => bail!("Heartbeat {}: {} ({c})", self.group, error_name(c)),
        }
    }

    /// Leaves the group so the others rebalance at once; errors are irrelevant at the end.
    pub fn leave(self, client: &mut Client) {
        let Ok(coordinator) = client.coordinator_of(&self.group) else {
            return;
        };
        let Ok(conn) = client.connection_to(coordinator) else {
            return;
        };
        let Ok(version) = conn.version_for::<LeaveGroupRequest>() else {
            return;
        };
        let mut req = LeaveGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())));
        if version >= 3 {
            req.members = vec![MemberIdentity::default()
                .with_member_id(StrBytes::from_string(self.member_id.clone()))];
        } else {
            req.member_id = StrBytes::from_string(self.member_id.clone());
        }
        let _ = conn.call_at(&req, version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_like_kafka() {
        let members = vec!["c".to_string(), "a".to_string(), "b".to_string()];
        let a = range_assign(&members, 8);
        assert_eq!(
            a,
            vec![
                ("a".to_string(), vec![0, 1, 2]),
                ("b".to_string(), vec![3, 4, 5]),
                ("c".to_string(), vec![6, 7]),
            ]
        );
        let idle = range_assign(&members, 2);
        assert_eq!(idle[2].1, Vec::<i32>::new());
    }

    #[test]
    fn assignment_round_trips() {
        let b = encode_assignment("t", &[1, 4]).unwrap();
        assert_eq!(decode_assignment(b, "t").unwrap(), vec![1, 4]);
        assert_eq!(
            decode_assignment(Bytes::new(), "t").unwrap(),
            Vec::<i32>::new()
        );
        let sub = encode_subscription("t").unwrap();
        assert_eq!(&sub[..2], &[0, 0]);
    }
}
