//! The classic consumer group protocol, client side, for `consume --group`:
//! FindCoordinator (through `Client::with_coordinator`), JoinGroup with the MEMBER_ID_REQUIRED
//! two-step, SyncGroup (the leader computes a range assignment from the members'
//! `ConsumerProtocolSubscription`s), Heartbeat, OffsetCommit, OffsetFetch and LeaveGroup.
//!
//! The assignor and the subscription/assignment codecs are plain functions, tested without a
//! broker; [`GroupMember`] is the thin state machine that drives the requests.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    consumer_protocol_assignment::TopicPartition as AssignedPartitions,
    join_group_request::JoinGroupRequestProtocol,
    leave_group_request::MemberIdentity,
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    offset_fetch_request::OffsetFetchRequestTopic,
    sync_group_request::SyncGroupRequestAssignment,
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, GroupId, HeartbeatRequest,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use shardlog_client::{check_code, codes, Client, ClientError, Connection};

/// The group protocol type of Kafka consumers.
pub const PROTOCOL_TYPE: &str = "consumer";
/// The only assignor this client offers.
pub const ASSIGNOR: &str = "range";
/// Session timeout asked for (within Kafka's default broker bounds of 6 s..30 min).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the coordinator waits for every member to rejoin during a rebalance.
pub const REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeats go out at a third of the session timeout, as Kafka's consumers do.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(3_333);
/// Join attempts before giving up (each retriable error costs one).
const JOIN_ATTEMPTS: usize = 20;
/// Versions of the embedded consumer protocol structures this client writes.
const SUBSCRIPTION_VERSION: i16 = 0;
const ASSIGNMENT_VERSION: i16 = 0;

/// Partitions per topic.
pub type Assignment = BTreeMap<String, Vec<i32>>;

/// `ConsumerProtocolSubscription` bytes: version (i16) then the struct at that version.
pub fn encode_subscription(topics: &[String]) -> anyhow::Result<Bytes> {
    let sub = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.put_i16(SUBSCRIPTION_VERSION);
    sub.encode(&mut buf, SUBSCRIPTION_VERSION)
        .context("encoding the consumer subscription")?;
    Ok(buf.freeze())
}

/// The topics of a member's subscription. Every version starts with the topic list (the
/// format only appends fields and is never "flexible"), so any version decodes here.
///
/// Decoded by hand rather than with `kafka_protocol`, whose decoders reserve memory for an
/// array's claimed length before reading it: bytes from another member must not be able to
/// make this process allocate gigabytes.
pub fn decode_subscription(bytes: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut r = Reader::new(bytes, "subscription");
    r.version()?;
    let n = r.count(2)?;
    let mut topics = Vec::new();
    for _ in 0..n {
        topics.push(r.string()?);
    }
    Ok(topics)
}

/// `ConsumerProtocolAssignment` bytes for one member.
pub fn encode_assignment(assignment: &Assignment) -> anyhow::Result<Bytes> {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        assignment
            .iter()
            .map(|(t, ps)| {
                AssignedPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.put_i16(ASSIGNMENT_VERSION);
    a.encode(&mut buf, ASSIGNMENT_VERSION)
        .context("encoding a consumer assignment")?;
    Ok(buf.freeze())
}

/// A member's assignment; empty bytes mean no partitions (what a coordinator sends a member
/// the leader gave nothing). Any version: all start with the assigned partitions. Decoded by
/// hand for the reason given at [`decode_subscription`].
pub fn decode_assignment(bytes: &[u8]) -> anyhow::Result<Assignment> {
    let mut out = Assignment::new();
    if bytes.is_empty() {
        return Ok(out);
    }
    let mut r = Reader::new(bytes, "assignment");
    r.version()?;
    let topics = r.count(6)?;
    for _ in 0..topics {
        let topic = r.string()?;
        let n = r.count(4)?;
        let ps = out.entry(topic).or_default();
        for _ in 0..n {
            ps.push(r.i32()?);
        }
    }
    for ps in out.values_mut() {
        ps.sort_unstable();
        ps.dedup();
    }
    Ok(out)
}

/// A bounds-checked reader for the (non-flexible) consumer protocol structures.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, what }
    }

    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        if self.bytes.len() < n {
            bail!("consumer {} is truncated", self.what);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn version(&mut self) -> anyhow::Result<i16> {
        let v = self.take(2)?.get_i16();
        if v < 0 {
            bail!("consumer {} has negative version {v}", self.what);
        }
        Ok(v)
    }

    fn i32(&mut self) -> anyhow::Result<i32> {
        Ok(self.take(4)?.get_i32())
    }

    /// An array length, checked against the bytes left (each element needs `min_bytes`).
    fn count(&mut self, min_bytes: usize) -> anyhow::Result<usize> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(0);
        }
        let n = n as usize;
        if n.saturating_mul(min_bytes) > self.bytes.len() {
            bail!(
                "consumer {} claims {n} elements in {} bytes",
                self.what,
                self.bytes.len()
            );
        }
        Ok(n)
    }

    fn string(&mut self) -> anyhow::Result<String> {
        let len = self.take(2)?.get_i16();
        if len < 0 {
            bail!("consumer {} has a null topic name", self.what);
        }
        let b = self.take(len as usize)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| anyhow::anyhow!("consumer {} has a non-UTF-8 topic name", self.what))
    }
}

/// Kafka's range assignor: for each topic, the members subscribed to it in member id order
/// get consecutive ranges of its partitions, the first `partitions % members` one extra.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partitions: &BTreeMap<String, Vec<i32>>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    let topics: BTreeSet<&String> = subscriptions.values().flatten().collect();
    for topic in topics {
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        let mut ps = partitions.get(topic).cloned().unwrap_or_default();
        ps.sort_unstable();
        if members.is_empty() || ps.is_empty() {
            continue;
        }
        let per = ps.len() / members.len();
        let extra = ps.len() % members.len();
        let mut start = 0;
        for (i, m) in members.iter().enumerate() {
            let n = per + usize::from(i < extra);
            if n > 0 {
                if let Some(a) = out.get_mut(*m) {
                    a.insert(topic.clone(), ps[start..start + n].to_vec());
                }
            }
            start += n;
        }
    }
    out
}

/// Runs `f` with the connection's timeout raised to `at_least` (JoinGroup and SyncGroup block
/// on the broker for up to the rebalance timeout).
fn with_timeout<T>(
    conn: &mut Connection,
    at_least: Duration,
    f: impl FnOnce(&mut Connection) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    let saved = conn.timeout();
    if saved >= at_least {
        return f(conn);
    }
    conn.set_timeout(at_least)?;
    let r = f(conn);
    if conn.broken().is_none() {
        conn.set_timeout(saved)?;
    }
    r
}

/// Turns the coordinator-moved codes into errors so `with_coordinator` retries them.
fn coordinator_moved(code: i16, what: &str) -> Result<(), ClientError> {
    if code == codes::NOT_COORDINATOR || code == codes::COORDINATOR_NOT_AVAILABLE {
        return Err(ClientError::broker(code, what.to_string(), None));
    }
    Ok(())
}

/// What a heartbeat said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Not due yet, or acknowledged.
    Fine,
    /// The group is rebalancing (or forgot this member): commit, then join again.
    Rejoin,
}

/// One member of a consumer group. Lives on the consuming thread.
#[derive(Debug)]
pub struct GroupMember {
    pub group: String,
    pub topics: Vec<String>,
    pub member_id: String,
    pub generation: i32,
    pub leader: bool,
    pub assignment: Assignment,
    last_heartbeat: Instant,
}

impl GroupMember {
    pub fn new(group: &str, topics: &[String]) -> GroupMember {
        GroupMember {
            group: group.to_string(),
            topics: topics.to_vec(),
            member_id: String::new(),
            generation: -1,
            leader: false,
            assignment: Assignment::new(),
            last_heartbeat: Instant::now(),
        }
    }

    /// Joins (or rejoins) the group until it has an assignment for the current generation.
    pub fn join(&mut self, client: &mut Client) -> anyhow::Result<()> {
        let metadata = encode_subscription(&self.topics)?;
        for _ in 0..JOIN_ATTEMPTS {
            let response = self.join_once(client, &metadata)?;
            match response.error_code {
                codes::NONE => {}
                codes::MEMBER_ID_REQUIRED => {
                    // KIP-394: the coordinator hands out the id; join again with it.
                    self.member_id = response.member_id.to_string();
                    continue;
                }
                codes::UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                codes::REBALANCE_IN_PROGRESS | codes::COORDINATOR_LOAD_IN_PROGRESS => {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                code => {
                    return Err(ClientError::broker(
                        code,
                        format!("joining group {:?}", self.group),
                        None,
                    )
                    .into())
                }
            }
            self.member_id = response.member_id.to_string();
            self.generation = response.generation_id;
            self.leader = *response.leader == *self.member_id;
            let assignments = if self.leader {
                self.assign(client, &response)?
            } else {
                Vec::new()
            };
            let sync = self.sync(client, assignments)?;
            match sync.error_code {
                codes::NONE => {
                    self.assignment = decode_assignment(&sync.assignment)?;
                    self.assignment.retain(|t, _| self.topics.contains(t));
                    self.last_heartbeat = Instant::now();
                    return Ok(());
                }
                codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION => continue,
                codes::UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                code => {
                    return Err(ClientError::broker(
                        code,
                        format!("syncing group {:?}", self.group),
                        None,
                    )
                    .into())
                }
            }
        }
        bail!(
            "could not join group {:?} after {JOIN_ATTEMPTS} attempts; the group keeps rebalancing",
            self.group
        )
    }

    fn join_once(
        &self,
        client: &mut Client,
        metadata: &Bytes,
    ) -> anyhow::Result<JoinGroupResponse> {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_session_timeout_ms(SESSION_TIMEOUT.as_millis() as i32)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str(ASSIGNOR))
                .with_metadata(metadata.clone())]);
        let response = client
            .with_coordinator(&self.group, |conn| {
                let version = conn.version_for::<JoinGroupRequest>()?;
                let mut req = req.clone();
                if version >= 1 {
                    req.rebalance_timeout_ms = REBALANCE_TIMEOUT.as_millis() as i32;
                }
                let r = with_timeout(conn, REBALANCE_TIMEOUT + Duration::from_secs(5), |c| {
                    c.call_at(&req, version)
                })?;
                coordinator_moved(r.error_code, "joining the group")?;
                Ok(r)
            })
            .with_context(|| format!("joining group {:?}", self.group))?;
        Ok(response)
    }

    /// As the leader: a range assignment over every member's subscription.
    fn assign(
        &self,
        client: &mut Client,
        join: &JoinGroupResponse,
    ) -> anyhow::Result<Vec<SyncGroupRequestAssignment>> {
        let mut subscriptions = BTreeMap::new();
        for m in &join.members {
            let topics = decode_subscription(&m.metadata)
                .with_context(|| format!("member {}", m.member_id))?;
            subscriptions.insert(m.member_id.to_string(), topics);
        }
        let mut partitions = BTreeMap::new();
        for topic in subscriptions.values().flatten().collect::<BTreeSet<_>>() {
            match client.partitions_of(topic) {
                Ok(ps) => {
                    partitions.insert(topic.clone(), ps);
                }
                // A member subscribed to a topic that does not exist: it gets nothing of it.
                Err(e) if e.code() == Some(codes::UNKNOWN_TOPIC_OR_PARTITION) => {}
                Err(e) => return Err(e).context("looking up partitions to assign"),
            }
        }
        range_assign(&subscriptions, &partitions)
            .into_iter()
            .map(|(member, a)| {
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member))
                    .with_assignment(encode_assignment(&a)?))
            })
            .collect()
    }

    fn sync(
        &self,
        client: &mut Client,
        assignments: Vec<SyncGroupRequestAssignment>,
    ) -> anyhow::Result<SyncGroupResponse> {
        let response = client
            .with_coordinator(&self.group, |conn| {
                let version = conn.version_for::<SyncGroupRequest>()?;
                let mut req = SyncGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
                    .with_generation_id(self.generation)
                    .with_member_id(StrBytes::from_string(self.member_id.clone()))
                    .with_assignments(assignments.clone());
                if version >= 5 {
                    req.protocol_type = Some(StrBytes::from_static_str(PROTOCOL_TYPE));
                    req.protocol_name = Some(StrBytes::from_static_str(ASSIGNOR));
                }
                let r = with_timeout(conn, REBALANCE_TIMEOUT + Duration::from_secs(5), |c| {
                    c.call_at(&req, version)
                })?;
                coordinator_moved(r.error_code, "syncing the group")?;
                Ok(r)
            })
            .with_context(|| format!("syncing group {:?}", self.group))?;
        Ok(response)
    }

    /// Sends a heartbeat when one is due.
    pub fn heartbeat_if_due(&mut self, client: &mut Client) -> anyhow::Result<Heartbeat> {
        if self.last_heartbeat.elapsed() < HEARTBEAT_INTERVAL {
            return Ok(Heartbeat::Fine);
        }
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let response = client
            .with_coordinator(&self.group, |conn| {
                let r = conn.call(&req)?;
                coordinator_moved(r.error_code, "sending a heartbeat")?;
                Ok(r)
            })
            .with_context(|| format!("heartbeat in group {:?}", self.group))?;
        self.last_heartbeat = Instant::now();
        match response.error_code {
            codes::NONE => Ok(Heartbeat::Fine),
            codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION => Ok(Heartbeat::Rejoin),
            codes::UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                Ok(Heartbeat::Rejoin)
            }
            code => {
                Err(
                    ClientError::broker(code, format!("heartbeat in group {:?}", self.group), None)
                        .into(),
                )
            }
        }
    }

    /// Commits `offsets` (topic, partition) -> next offset to read, for this generation.
    pub fn commit(
        &self,
        client: &mut Client,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> anyhow::Result<()> {
        commit_offsets(
            client,
            &self.group,
            self.generation,
            &self.member_id,
            offsets,
        )
    }

    /// Leaves the group so the others rebalance at once instead of after the session timeout.
    pub fn leave(&mut self, client: &mut Client) -> anyhow::Result<()> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let member_id = StrBytes::from_string(self.member_id.clone());
        client
            .with_coordinator(&self.group, |conn| {
                let version = conn.version_for::<LeaveGroupRequest>()?;
                let mut req = LeaveGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(self.group.clone())));
                if version >= 3 {
                    req.members = vec![MemberIdentity::default().with_member_id(member_id.clone())];
                } else {
                    req.member_id = member_id.clone();
                }
                let r = conn.call_at(&req, version)?;
                coordinator_moved(r.error_code, "leaving the group")?;
                check_code(r.error_code, None, || "leaving the group".to_string())?;
                for m in &r.members {
                    check_code(m.error_code, None, || "leaving the group".to_string())?;
                }
                Ok(())
            })
            .with_context(|| format!("leaving group {:?}", self.group))?;
        self.member_id.clear();
        self.generation = -1;
        Ok(())
    }
}

/// OffsetCommit for a group: with `generation` -1 and an empty member id this is the
/// "simple" commit an admin tool does on a group without members.
pub fn commit_offsets(
    client: &mut Client,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &BTreeMap<(String, i32), i64>,
) -> anyhow::Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((t, p), o) in offsets {
        topics.entry(t).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o),
        );
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    client
        .with_coordinator(group, |conn| {
            let r = conn.call(&req)?;
            for t in &r.topics {
                for p in &t.partitions {
                    coordinator_moved(p.error_code, "committing offsets")?;
                    check_code(p.error_code, None, || {
                        format!(
                            "committing the offset of {}-{}",
                            t.name.0, p.partition_index
                        )
                    })?;
                }
            }
            Ok(())
        })
        .with_context(|| format!("committing offsets of group {group:?}"))
}

/// OffsetFetch: the committed offset of every (topic, partition) asked for, or of everything
/// the group has committed when `topics` is `None`. Partitions without a commit are left out.
pub fn committed_offsets(
    client: &mut Client,
    group: &str,
    topics: Option<&BTreeMap<String, Vec<i32>>>,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.clone())))
                        .with_partition_indexes(ps.clone())
                })
                .collect()
        }));
    let response = client
        .with_coordinator(group, |conn| {
            let r = conn.call(&req)?;
            coordinator_moved(r.error_code, "fetching committed offsets")?;
            check_code(r.error_code, None, || {
                "fetching committed offsets".to_string()
            })?;
            Ok(r)
        })
        .with_context(|| format!("fetching committed offsets of group {group:?}"))?;
    let mut out = BTreeMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            check_code(p.error_code, None, || {
                format!(
                    "fetching the committed offset of {}-{}",
                    t.name.0, p.partition_index
                )
            })?;
            if p.committed_offset >= 0 {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    fn parts(entries: &[(&str, i32)]) -> BTreeMap<String, Vec<i32>> {
        entries
            .iter()
            .map(|(t, n)| (t.to_string(), (0..*n).collect()))
            .collect()
    }

    #[test]
    fn range_gives_leading_members_the_remainder() {
        let a = range_assign(
            &subs(&[("m1", &["t"]), ("m2", &["t"]), ("m3", &["t"])]),
            &parts(&[("t", 7)]),
        );
        assert_eq!(a["m1"]["t"], vec![0, 1, 2]);
        assert_eq!(a["m2"]["t"], vec![3, 4]);
        assert_eq!(a["m3"]["t"], vec![5, 6]);
    }

    #[test]
    fn range_with_more_members_than_partitions_leaves_some_idle() {
        let a = range_assign(
            &subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]),
            &parts(&[("t", 2)]),
        );
        assert_eq!(a["a"]["t"], vec![0]);
        assert_eq!(a["b"]["t"], vec![1]);
        assert!(a["c"].is_empty());
    }

    #[test]
    fn range_works_per_topic_over_its_own_subscribers() {
        let a = range_assign(
            &subs(&[("a", &["x", "y"]), ("b", &["y"]), ("c", &["x", "missing"])]),
            &parts(&[("x", 4), ("y", 3)]),
        );
        assert_eq!(a["a"]["x"], vec![0, 1]);
        assert_eq!(a["c"]["x"], vec![2, 3]);
        assert_eq!(a["a"]["y"], vec![0, 1]);
        assert_eq!(a["b"]["y"], vec![2]);
        assert!(!a["c"].contains_key("missing"));
        // Every partition exactly once.
        let mut all: Vec<(String, i32)> = a
            .values()
            .flat_map(|m| {
                m.iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            })
            .collect();
        all.sort();
        assert_eq!(all.len(), 7);
        all.dedup();
        assert_eq!(all.len(), 7);
    }

    #[test]
    fn subscription_and_assignment_round_trip() {
        let bytes = encode_subscription(&["a".to_string(), "b".to_string()]).unwrap();
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(decode_subscription(&bytes).unwrap(), vec!["a", "b"]);
        let mut a = Assignment::new();
        a.insert("t".into(), vec![2, 0]);
        let bytes = encode_assignment(&a).unwrap();
        assert_eq!(decode_assignment(&bytes).unwrap()["t"], vec![0, 2]);
        assert!(decode_assignment(&[]).unwrap().is_empty());
    }

    #[test]
    fn newer_subscription_versions_decode_and_garbage_does_not_panic() {
        // A v3 subscription as a newer Java client writes it, read by this v0 client.
        let sub = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .with_generation_id(4)
            .with_rack_id(Some(StrBytes::from_static_str("r")));
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        sub.encode(&mut buf, 3).unwrap();
        assert_eq!(decode_subscription(&buf).unwrap(), vec!["t"]);
        assert!(decode_subscription(&[0]).is_err());
        assert!(decode_subscription(&[0xff, 0xff, 1, 2]).is_err());
        // Claims 2^31 topics in 4 bytes: refused without reserving memory for them.
        assert!(decode_assignment(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_subscription(&[0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 1, b'a']).is_err());
        // Assignment v1+ (user data after the partitions) decodes too.
        let mut a = Assignment::new();
        a.insert("t".into(), vec![1]);
        let mut bytes = encode_assignment(&a).unwrap().to_vec();
        bytes[1] = 3;
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode_assignment(&bytes).unwrap()["t"], vec![1]);
    }

    #[test]
    fn join_two_step_assign_commit_fetch_leave_against_a_fake_coordinator() {
        let fake =
            shardlog_client::fake_broker::FakeBroker::with_topics(&[("t", 3), ("other", 1)], 10);
        let mut client = Client::connect(&fake.addr, "test", Duration::from_secs(5)).unwrap();
        let mut m = GroupMember::new("g", &["t".to_string()]);
        m.join(&mut client).unwrap();
        // MEMBER_ID_REQUIRED first, then the join with the id the coordinator handed out.
        assert_eq!(fake.state.lock().unwrap().group("g").join_calls, 2);
        assert_eq!(m.member_id, "member-1");
        assert!(m.leader);
        assert_eq!(m.generation, 1);
        // As the only member and leader it assigned itself every partition of its topic.
        assert_eq!(m.assignment.len(), 1);
        assert_eq!(m.assignment["t"], vec![0, 1, 2]);

        let offsets: BTreeMap<(String, i32), i64> =
            [(("t".to_string(), 1), 7)].into_iter().collect();
        m.commit(&mut client, &offsets).unwrap();
        let wanted: BTreeMap<String, Vec<i32>> =
            [("t".to_string(), vec![0, 1])].into_iter().collect();
        assert_eq!(
            committed_offsets(&mut client, "g", Some(&wanted)).unwrap(),
            offsets
        );
        assert_eq!(committed_offsets(&mut client, "g", None).unwrap(), offsets);
        assert_eq!(m.heartbeat_if_due(&mut client).unwrap(), Heartbeat::Fine);

        m.leave(&mut client).unwrap();
        assert!(fake.state.lock().unwrap().group("g").members.is_empty());
        assert!(m.member_id.is_empty());
    }
}
