//! Topic registry: the single writer of topic metadata and the immutable snapshots it publishes.
//!
//! In standalone mode the registry lives on shard 0. Every change is persisted to
//! `<data>/__meta/topics.json` (write to a temporary file, fsync, rename, fsync the directory)
//! before it is published, then the new `Arc<MetadataSnapshot>` is sent to every shard, which
//! opens or closes the partitions it owns. Shards only ever read snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::base::ids::{BrokerId, ProducerId};
use crate::base::random::random_bytes;
use crate::config::{BrokerConfig, ConfigError, TopicConfig};

/// The internal topic holding consumer group offsets and metadata.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The internal topic holding the transaction coordinators' state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// `PartitionState::leader` when no replica may lead (every ISR member is down).
pub const NO_LEADER: BrokerId = BrokerId::NONE;

/// A live broker, as registered in ZooKeeper (`/brokers/ids/<id>`) or, standalone, this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: BrokerId,
    pub host: String,
    pub port: u16,
}

/// Replication state of one partition: its assignment (`/brokers/topics/<t>`) and its state
/// znode (`/brokers/topics/<t>/partitions/<p>/state`). Standalone: one replica, this broker,
/// leader epoch 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// Assigned replicas in placement order; the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// Leading broker, or `NO_LEADER`.
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub isr: Vec<BrokerId>,
    /// Version of the state znode: the compare-and-swap token for ISR changes (0 standalone).
    pub zk_version: i32,
}

impl PartitionState {
    /// A single-replica partition led by `broker` (standalone mode).
    pub fn standalone(broker: BrokerId) -> PartitionState {
        PartitionState {
            replicas: vec![broker],
            leader: broker,
            leader_epoch: 0,
            isr: vec![broker],
            zk_version: 0,
        }
    }

    /// Checks a client's `current_leader_epoch` against this state, as Kafka does for
    /// ListOffsets, Fetch and OffsetForLeaderEpoch: -1 (unknown to the client) always passes,
    /// an older epoch is fenced (the client must refresh metadata), a newer one means this
    /// broker has not caught up with the controller yet.
    pub fn check_leader_epoch(&self, requested: i32) -> Result<(), i16> {
        match check_leader_epoch(self.leader_epoch, requested) {
            crate::base::errors::NONE => Ok(()),
            code => Err(code),
        }
    }
}

/// One topic as every shard sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: Arc<str>,
    pub id: [u8; 16],
    pub partitions: i32,
    /// Requested replicas per partition (1 standalone).
    pub replication_factor: i16,
    /// Only the keys set on this topic; `config` is the resolved view.
    pub overrides: BTreeMap<String, String>,
    pub config: TopicConfig,
    /// One per partition (index = partition), once the metadata writer has placed them. A topic
    /// built by a request handler (new, or grown) may have fewer; the writer fills them in.
    pub states: Vec<PartitionState>,
}

impl TopicMeta {
    pub fn is_internal(&self) -> bool {
        &*self.name == CONSUMER_OFFSETS_TOPIC || &*self.name == TRANSACTION_STATE_TOPIC
    }

    pub fn state(&self, partition: i32) -> Option<&PartitionState> {
        usize::try_from(partition)
            .ok()
            .and_then(|i| self.states.get(i))
    }
}

/// An immutable view of the cluster: topics with their partitions' replication state, live
/// brokers, the controller. Cheap to share (`Arc`) and never mutated in place.
#[derive(Debug, Clone, Default)]
pub struct MetadataSnapshot {
    pub version: u64,
    pub cluster_id: String,
    pub topics: BTreeMap<Arc<str>, Arc<TopicMeta>>,
    /// Live brokers by id (standalone: this one).
    pub brokers: BTreeMap<BrokerId, BrokerInfo>,
    /// The controller's broker id, or `BrokerId::NONE` while there is none.
    pub controller_id: BrokerId,
    /// This broker's id.
    pub local_broker: BrokerId,
    /// True when ZooKeeper coordinates several brokers.
    pub cluster_mode: bool,
}

impl MetadataSnapshot {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn partition_state(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.topic(topic)?.state(partition)
    }

    /// True when this broker leads `topic`-`partition` in this snapshot.
    pub fn leads(&self, topic: &str, partition: i32) -> bool {
        self.partition_state(topic, partition)
            .is_some_and(|s| s.leader == self.local_broker)
    }

    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&Arc<TopicMeta>> {
        self.topics.values().find(|t| &t.id == id)
    }

    pub fn is_live(&self, broker: BrokerId) -> bool {
        self.brokers.contains_key(&broker)
    }

    /// The live broker leading `topic`-`partition`: `None` when the topic or its state is
    /// unknown (a topic just created has no states until the metadata writer placed it), the
    /// partition has no leader, or the leader is not registered as alive.
    pub fn leader_broker(&self, topic: &str, partition: i32) -> Option<&BrokerInfo> {
        let leader = self.partition_state(topic, partition)?.leader;
        if leader == NO_LEADER {
            return None;
        }
        self.brokers.get(&leader)
    }

    /// The assigned replicas of `state` on brokers that are not alive, in assignment order.
    pub fn offline_replicas(&self, state: &PartitionState) -> Vec<BrokerId> {
        state
            .replicas
            .iter()
            .copied()
            .filter(|b| !self.is_live(*b))
            .collect()
    }

    /// True when this broker stores a replica of `topic`-`partition` (leader or follower).
    pub fn hosts_replica(&self, topic: &str, partition: i32) -> bool {
        self.partition_state(topic, partition)
            .is_some_and(|s| s.replicas.contains(&self.local_broker))
    }

    /// The replication factor a new topic gets when the request leaves it to the broker (-1):
    /// standalone always 1; in cluster mode `offsets.topic.replication.factor` for the offsets
    /// topic, `transaction.state.log.replication.factor` for the transaction state topic and
    /// `default.replication.factor` for any other.
    pub fn default_replication_factor(&self, broker: &BrokerConfig, topic: &str) -> i16 {
        if !self.cluster_mode {
            1
        } else if topic == CONSUMER_OFFSETS_TOPIC {
            broker.offsets_topic_replication_factor
        } else if topic == TRANSACTION_STATE_TOPIC {
            broker.transaction_state_log_replication_factor
        } else {
            broker.default_replication_factor
        }
    }

    /// Checks a new topic's replication factor: standalone only 1; in cluster mode between 1
    /// and the number of live brokers (Kafka's messages).
    pub fn check_replication_factor(&self, factor: i16) -> Result<(), String> {
        if !self.cluster_mode {
            return if factor == 1 {
                Ok(())
            } else {
                Err("a standalone broker has one replica per partition".into())
            };
        }
        if factor < 1 {
            return Err("Replication factor must be larger than 0.".into());
        }
        let live = self.brokers.len();
        if factor as usize > live {
            return Err(format!(
                "Replication factor: {factor} larger than available brokers: {live}."
            ));
        }
        Ok(())
    }
}

/// What changed from the snapshot of version `base_version` to the next one the same writer
/// published (the control thread in cluster mode). A shard that applied exactly
/// `base_version` applies only these; any other shard walks the whole snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataDelta {
    pub base_version: u64,
    /// Topics added, removed, or changed as a whole (id, partition count, replication factor,
    /// config): every partition of them is applied, and a removed one's partitions deleted.
    pub topics: BTreeSet<Arc<str>>,
    /// Partitions whose replication state changed, in topics otherwise unchanged.
    pub partitions: BTreeSet<(Arc<str>, i32)>,
    pub brokers_changed: bool,
    pub controller_changed: bool,
}

impl MetadataDelta {
    /// True when nothing a shard or a client could see changed.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
            && self.partitions.is_empty()
            && !self.brokers_changed
            && !self.controller_changed
    }

    /// The partitions of `next` (the snapshot this delta leads to) a shard must apply, with
    /// their topic: every partition of a changed topic still present, then each changed
    /// partition. No duplicates (a partition is listed under its topic or alone, not both).
    pub fn partitions_in(&self, next: &MetadataSnapshot) -> Vec<(Arc<TopicMeta>, i32)> {
        let mut out = Vec::new();
        for name in &self.topics {
            if let Some(t) = next.topic(name) {
                out.extend((0..t.partitions).map(|i| (t.clone(), i)));
            }
        }
        for (name, index) in &self.partitions {
            if self.topics.contains(name) {
                continue;
            }
            if let Some(t) = next.topic(name).filter(|t| *index < t.partitions) {
                out.push((t.clone(), *index));
            }
        }
        out
    }
}

/// Two versions of a topic differ only in partition states (which `diff_snapshots` then
/// compares one by one).
fn same_topic_shape(a: &TopicMeta, b: &TopicMeta) -> bool {
    a.id == b.id
        && a.partitions == b.partitions
        && a.replication_factor == b.replication_factor
        && a.overrides == b.overrides
        && a.config == b.config
        && a.states.len() == b.states.len()
}

/// What changed from `prev` to `next`, looking only at the topics in `candidates` (every
/// topic of either when `None`): the caller vouches that no other topic changed. Each
/// candidate topic of `next` equal to `prev`'s gets `prev`'s `Arc`, so unchanged topics stay
/// shared from one snapshot to the next. The work is proportional to the candidates' partitions.
pub fn diff_snapshots(
    prev: &MetadataSnapshot,
    next: &mut MetadataSnapshot,
    candidates: Option<&BTreeSet<Arc<str>>>,
) -> MetadataDelta {
    let mut delta = MetadataDelta {
        base_version: prev.version,
        brokers_changed: prev.brokers != next.brokers || prev.local_broker != next.local_broker,
        controller_changed: prev.controller_id != next.controller_id
            || prev.cluster_id != next.cluster_id,
        ..Default::default()
    };
    let names: BTreeSet<Arc<str>> = match candidates {
        Some(c) => c.clone(),
        None => prev
            .topics
            .keys()
            .chain(next.topics.keys())
            .cloned()
            .collect(),
    };
    for name in names {
        let before = prev.topics.get(&name);
        let Some(after) = next.topics.get_mut(&name) else {
            if before.is_some() {
                delta.topics.insert(name);
            }
            continue;
        };
        let Some(before) = before else {
            delta.topics.insert(name);
            continue;
        };
        if Arc::ptr_eq(before, after) {
            continue;
        }
        if !same_topic_shape(before, after) {
            delta.topics.insert(name);
            continue;
        }
        let mut changed = false;
        for (i, (a, b)) in before.states.iter().zip(&after.states).enumerate() {
            if a != b {
                changed = true;
                delta.partitions.insert((name.clone(), i as i32));
            }
        }
        if !changed {
            *after = before.clone();
        }
    }
    delta
}

#[derive(Serialize, Deserialize)]
struct TopicRecord {
    name: String,
    id: String,
    partitions: i32,
    configs: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct RegistryFile {
    format_version: u32,
    cluster_id: String,
    topics: Vec<TopicRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The single writer. Lives on shard 0 (standalone).
pub struct TopicRegistry {
    path: PathBuf,
    broker: BrokerInfo,
    snapshot: Arc<MetadataSnapshot>,
    /// Next producer id to hand out, and the end of the block reserved on disk. Ids are
    /// reserved in blocks so that a restart never reuses one.
    next_producer_id: i64,
    producer_id_block_end: i64,
}

/// Producer ids reserved per write of `producer-ids`.
const PRODUCER_ID_BLOCK: i64 = 1000;

impl TopicRegistry {
    /// Loads `<data>/__meta/topics.json`, or starts empty with a new cluster id.
    pub fn load(data_dir: &Path, broker: &BrokerConfig) -> Result<TopicRegistry, MetadataError> {
        let dir = data_dir.join("__meta");
        let path = dir.join("topics.json");
        std::fs::create_dir_all(&dir).map_err(|source| MetadataError::Io {
            path: dir.clone(),
            source,
        })?;
        let snapshot = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: RegistryFile =
                    serde_json::from_slice(&bytes).map_err(|e| MetadataError::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                let mut topics = BTreeMap::new();
                for t in file.topics {
                    let id = unhex16(&t.id).ok_or_else(|| MetadataError::Corrupt {
                        path: path.clone(),
                        reason: format!("bad topic id for {}", t.name),
                    })?;
                    let config = TopicConfig::resolve(broker, &t.configs)?;
                    let name: Arc<str> = t.name.into();
                    topics.insert(
                        name.clone(),
                        Arc::new(TopicMeta {
                            name,
                            id,
                            partitions: t.partitions,
                            replication_factor: 1,
                            overrides: t.configs,
                            config,
                            states: Vec::new(),
                        }),
                    );
                }
                MetadataSnapshot {
                    version: 1,
                    cluster_id: file.cluster_id,
                    topics,
                    ..Default::default()
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Kafka cluster ids are 22 characters of URL-safe base64 of 16 bytes; hex of
                // 11 random bytes is as unique for one broker and easy to read.
                MetadataSnapshot {
                    version: 1,
                    cluster_id: format!("shardlog-{}", hex(&random_bytes::<8>())),
                    ..Default::default()
                }
            }
            Err(source) => return Err(MetadataError::Io { path, source }),
        };
        let pid_path = dir.join("producer-ids");
        let reserved = match std::fs::read_to_string(&pid_path) {
            Ok(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|e| MetadataError::Corrupt {
                    path: pid_path.clone(),
                    reason: e.to_string(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(MetadataError::Io {
                    path: pid_path,
                    source,
                })
            }
        };
        let mut snapshot = snapshot;
        standalone_view(&mut snapshot, broker);
        let reg = TopicRegistry {
            path,
            broker: BrokerInfo {
                id: broker.id(),
                host: broker.advertised_host.clone(),
                port: broker.advertised_port,
            },
            snapshot: Arc::new(snapshot),
            next_producer_id: reserved,
            producer_id_block_end: reserved,
        };
        reg.persist()?;
        Ok(reg)
    }

    pub fn snapshot(&self) -> Arc<MetadataSnapshot> {
        self.snapshot.clone()
    }

    fn persist(&self) -> Result<(), MetadataError> {
        write_durably(&self.path, &self.file_bytes(&self.snapshot))
    }

    fn file_bytes(&self, snapshot: &MetadataSnapshot) -> Vec<u8> {
        let file = RegistryFile {
            format_version: 1,
            cluster_id: snapshot.cluster_id.clone(),
            topics: snapshot
                .topics
                .values()
                .map(|t| TopicRecord {
                    name: t.name.to_string(),
                    id: hex(&t.id),
                    partitions: t.partitions,
                    configs: t.overrides.clone(),
                })
                .collect(),
        };
        serde_json::to_vec_pretty(&file).expect("registry serializes")
    }

    /// A producer id from the block already reserved on disk, if any is left.
    pub fn take_producer_id(&mut self) -> Option<ProducerId> {
        if self.next_producer_id >= self.producer_id_block_end {
            return None;
        }
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        Some(ProducerId(id))
    }

    /// The write that reserves the next block of producer ids: store it with
    /// `write_durably`, then pass it to `producer_ids_reserved`.
    pub fn producer_id_reservation(&self) -> FileWrite {
        let end = self.next_producer_id.max(self.producer_id_block_end) + PRODUCER_ID_BLOCK;
        FileWrite {
            path: self.path.with_file_name("producer-ids"),
            bytes: end.to_string().into_bytes(),
            producer_id_block_end: end,
        }
    }

    /// Records a reservation that is now durable.
    pub fn producer_ids_reserved(&mut self, write: &FileWrite) {
        self.producer_id_block_end = self.producer_id_block_end.max(write.producer_id_block_end);
    }

    /// Hands out a producer id never given before, also across restarts (writes inline).
    #[cfg(test)]
    pub fn next_producer_id(&mut self) -> Result<ProducerId, MetadataError> {
        if let Some(id) = self.take_producer_id() {
            return Ok(id);
        }
        let write = self.producer_id_reservation();
        write.store()?;
        self.producer_ids_reserved(&write);
        Ok(self.take_producer_id().expect("a block was just reserved"))
    }

    /// Applies `change` to a copy of the topic map; the result becomes current only once
    /// `commit` is called after its file write is durable. Callers serialize prepare/commit
    /// pairs (shard 0's registry gate).
    pub fn prepare(
        &self,
        change: impl FnOnce(&mut BTreeMap<Arc<str>, Arc<TopicMeta>>),
    ) -> PendingUpdate {
        let mut next = (*self.snapshot).clone();
        change(&mut next.topics);
        fill_standalone_states(&mut next.topics, self.broker.id);
        next.version += 1;
        PendingUpdate {
            write: FileWrite {
                path: self.path.clone(),
                bytes: self.file_bytes(&next),
                producer_id_block_end: 0,
            },
            next,
        }
    }

    /// Makes a prepared update current once its file is durable.
    pub fn commit(&mut self, update: PendingUpdate) -> Arc<MetadataSnapshot> {
        self.snapshot = Arc::new(update.next);
        self.snapshot.clone()
    }

    /// Applies `change`, persists it (inline), and makes it current.
    #[cfg(test)]
    pub fn update(
        &mut self,
        change: impl FnOnce(&mut BTreeMap<Arc<str>, Arc<TopicMeta>>),
    ) -> Result<Arc<MetadataSnapshot>, MetadataError> {
        let update = self.prepare(change);
        update.write.store()?;
        Ok(self.commit(update))
    }
}

/// A registry file's new contents, to be made durable off the shard (`store` fsyncs).
#[derive(Clone)]
pub struct FileWrite {
    path: PathBuf,
    bytes: Vec<u8>,
    producer_id_block_end: i64,
}

impl FileWrite {
    /// Writes the file durably; blocks on the disk, so shards call it through `rt::blocking`.
    pub fn store(&self) -> Result<(), MetadataError> {
        write_durably(&self.path, &self.bytes)
    }
}

/// A topic change computed by `TopicRegistry::prepare`, not yet durable.
pub struct PendingUpdate {
    pub write: FileWrite,
    next: MetadataSnapshot,
}

/// Standalone: this broker is the only one, the controller, and leads every partition.
fn standalone_view(snapshot: &mut MetadataSnapshot, broker: &BrokerConfig) {
    snapshot.local_broker = broker.id();
    snapshot.controller_id = broker.id();
    snapshot.cluster_mode = false;
    snapshot.brokers.insert(
        broker.id(),
        BrokerInfo {
            id: broker.id(),
            host: broker.advertised_host.clone(),
            port: broker.advertised_port,
        },
    );
    fill_standalone_states(&mut snapshot.topics, broker.id());
}

/// Gives every partition without a state the standalone one (single replica on `broker`).
fn fill_standalone_states(topics: &mut BTreeMap<Arc<str>, Arc<TopicMeta>>, broker: BrokerId) {
    for t in topics.values_mut() {
        if t.states.len() != t.partitions.max(0) as usize {
            let t = Arc::make_mut(t);
            t.states.truncate(t.partitions.max(0) as usize);
            while t.states.len() < t.partitions.max(0) as usize {
                t.states.push(PartitionState::standalone(broker));
            }
        }
    }
}

/// Checks the `current_leader_epoch` of a Fetch or OffsetForLeaderEpoch request against ours
/// (-1 = the client does not know it and skips the check).
pub fn check_leader_epoch(ours: i32, requested: i32) -> i16 {
    if requested < 0 || requested == ours {
        crate::base::errors::NONE
    } else if requested > ours {
        // We have not heard of that epoch yet: our metadata is behind, retry later.
        crate::base::errors::UNKNOWN_LEADER_EPOCH
    } else {
        crate::base::errors::FENCED_LEADER_EPOCH
    }
}

/// `base::durable::write_durably`, with the path in the error.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), MetadataError> {
    crate::base::durable::write_durably(path, bytes).map_err(|source| MetadataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A new topic's metadata, with a fresh id.
pub fn new_topic(
    broker: &BrokerConfig,
    name: &str,
    partitions: i32,
    overrides: BTreeMap<String, String>,
) -> Result<TopicMeta, ConfigError> {
    let config = TopicConfig::resolve(broker, &overrides)?;
    Ok(TopicMeta {
        name: name.into(),
        id: random_bytes::<16>(),
        partitions,
        replication_factor: 1,
        overrides,
        config,
        states: Vec::new(),
    })
}

/// Tests: broker 1's view of a cluster whose live brokers are `live` (broker `id` at `h<id>`,
/// port 9000 + id), controller 2, no topics.
#[cfg(test)]
pub(crate) fn cluster_view(live: &[i32]) -> MetadataSnapshot {
    let mut s = MetadataSnapshot {
        cluster_mode: true,
        local_broker: BrokerId(1),
        controller_id: BrokerId(2),
        ..Default::default()
    };
    for &id in live {
        s.brokers.insert(
            BrokerId(id),
            BrokerInfo {
                id: BrokerId(id),
                host: format!("h{id}"),
                port: 9000 + id as u16,
            },
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::errors;

    #[test]
    fn leader_epoch_checks() {
        assert_eq!(check_leader_epoch(5, -1), errors::NONE);
        assert_eq!(check_leader_epoch(5, 5), errors::NONE);
        assert_eq!(check_leader_epoch(5, 6), errors::UNKNOWN_LEADER_EPOCH);
        assert_eq!(check_leader_epoch(5, 4), errors::FENCED_LEADER_EPOCH);
    }

    fn cluster(live: &[i32]) -> MetadataSnapshot {
        cluster_view(live)
    }

    fn with_topic(mut s: MetadataSnapshot, states: Vec<PartitionState>) -> MetadataSnapshot {
        let mut t = new_topic(&BrokerConfig::default(), "t", 2, BTreeMap::new()).unwrap();
        t.states = states;
        s.topics.insert(t.name.clone(), Arc::new(t));
        s
    }

    fn state(replicas: &[i32], leader: i32, isr: &[i32]) -> PartitionState {
        PartitionState {
            replicas: BrokerId::list(replicas),
            leader: BrokerId(leader),
            leader_epoch: 3,
            isr: BrokerId::list(isr),
            zk_version: 7,
        }
    }

    #[test]
    fn leader_broker_needs_a_live_leader_and_a_state() {
        let s = with_topic(
            cluster(&[1, 2]),
            vec![state(&[2, 3], 2, &[2]), state(&[3, 1], 3, &[3, 1])],
        );
        assert_eq!(s.leader_broker("t", 0).map(|b| b.port), Some(9002));
        // Partition 1's leader (3) is not registered: no usable leader.
        assert!(s.leader_broker("t", 1).is_none());
        // States not filled in yet (fresh topic) or unknown topic: no leader, no panic.
        assert!(s.leader_broker("t", 5).is_none());
        assert!(s.leader_broker("nope", 0).is_none());
        let s = with_topic(cluster(&[1]), vec![state(&[1], NO_LEADER.0, &[])]);
        assert!(s.leader_broker("t", 0).is_none());
    }

    #[test]
    fn offline_replicas_are_assigned_but_not_live() {
        let s = cluster(&[1, 2]);
        assert_eq!(
            s.offline_replicas(&state(&[3, 1, 4, 2], 1, &[1])),
            BrokerId::list(&[3, 4])
        );
        assert!(s.offline_replicas(&state(&[1, 2], 1, &[1, 2])).is_empty());
    }

    #[test]
    fn hosts_replica_follows_the_assignment() {
        let s = with_topic(
            cluster(&[1, 2, 3]),
            vec![state(&[2, 3], 2, &[2, 3]), state(&[3, 1], 3, &[3])],
        );
        assert!(!s.hosts_replica("t", 0));
        assert!(s.hosts_replica("t", 1));
        assert!(!s.leads("t", 1));
    }

    #[test]
    fn replication_factor_defaults_and_limits() {
        let broker = BrokerConfig {
            default_replication_factor: 2,
            offsets_topic_replication_factor: 3,
            ..Default::default()
        };
        let standalone = MetadataSnapshot::default();
        assert_eq!(standalone.default_replication_factor(&broker, "t"), 1);
        assert!(standalone.check_replication_factor(1).is_ok());
        assert!(standalone.check_replication_factor(2).is_err());
        let c = cluster(&[1, 2]);
        assert_eq!(c.default_replication_factor(&broker, "t"), 2);
        assert_eq!(
            c.default_replication_factor(&broker, CONSUMER_OFFSETS_TOPIC),
            3
        );
        assert!(c.check_replication_factor(2).is_ok());
        assert_eq!(
            c.check_replication_factor(3).unwrap_err(),
            "Replication factor: 3 larger than available brokers: 2."
        );
        assert!(c.check_replication_factor(0).is_err());
    }

    #[test]
    fn leader_epoch_check() {
        let s = state(&[1], 1, &[1]);
        assert_eq!(s.check_leader_epoch(-1), Ok(()));
        assert_eq!(s.check_leader_epoch(3), Ok(()));
        assert_eq!(
            s.check_leader_epoch(2),
            Err(crate::base::errors::FENCED_LEADER_EPOCH)
        );
        assert_eq!(
            s.check_leader_epoch(4),
            Err(crate::base::errors::UNKNOWN_LEADER_EPOCH)
        );
    }

    fn topic(name: &str, states: Vec<PartitionState>) -> Arc<TopicMeta> {
        let mut t = new_topic(
            &BrokerConfig::default(),
            name,
            states.len() as i32,
            BTreeMap::new(),
        )
        .unwrap();
        t.id = [name.len() as u8; 16];
        t.states = states;
        Arc::new(t)
    }

    fn snapshot_with(version: u64, topics: &[Arc<TopicMeta>]) -> MetadataSnapshot {
        let mut s = cluster(&[1, 2, 3]);
        s.version = version;
        for t in topics {
            s.topics.insert(t.name.clone(), t.clone());
        }
        s
    }

    fn states(n: usize) -> Vec<PartitionState> {
        (0..n).map(|_| state(&[1, 2, 3], 1, &[1, 2, 3])).collect()
    }

    #[test]
    fn diff_finds_the_changed_partition_and_shares_unchanged_topics() {
        let a = topic("a", states(300));
        let b = topic("bb", states(300));
        let prev = snapshot_with(7, &[a.clone(), b.clone()]);
        // Both topics rebuilt from scratch (new Arcs), one partition of "bb" changed leader.
        let mut moved = states(300);
        moved[42] = PartitionState {
            leader: BrokerId(2),
            leader_epoch: 4,
            ..moved[42].clone()
        };
        let mut next = snapshot_with(8, &[topic("a", states(300)), topic("bb", moved)]);
        let delta = diff_snapshots(&prev, &mut next, None);
        assert_eq!(delta.base_version, 7);
        assert!(delta.topics.is_empty());
        assert_eq!(
            delta.partitions.iter().collect::<Vec<_>>(),
            vec![&(Arc::<str>::from("bb"), 42)]
        );
        assert!(!delta.brokers_changed && !delta.controller_changed);
        assert!(Arc::ptr_eq(&next.topics["a"], &a), "unchanged topic shared");
        assert!(!Arc::ptr_eq(&next.topics["bb"], &b));
        // A shard holding version 7 applies exactly that partition.
        let todo = delta.partitions_in(&next);
        assert_eq!(todo.len(), 1);
        assert_eq!((&*todo[0].0.name, todo[0].1), ("bb", 42));
    }

    #[test]
    fn diff_of_equal_snapshots_is_empty() {
        let prev = snapshot_with(3, &[topic("a", states(5))]);
        let mut next = snapshot_with(4, &[topic("a", states(5))]);
        let delta = diff_snapshots(&prev, &mut next, None);
        assert!(delta.is_empty(), "{delta:?}");
        assert!(Arc::ptr_eq(&next.topics["a"], &prev.topics["a"]));
    }

    #[test]
    fn diff_reports_whole_topics_brokers_and_controller() {
        let prev = snapshot_with(1, &[topic("gone", states(2)), topic("grows", states(2))]);
        let mut next = snapshot_with(2, &[topic("grows", states(4)), topic("new", states(3))]);
        next.brokers.remove(&BrokerId(3));
        next.controller_id = BrokerId(1);
        let delta = diff_snapshots(&prev, &mut next, None);
        let names: Vec<&str> = delta.topics.iter().map(|t| &**t).collect();
        assert_eq!(names, vec!["gone", "grows", "new"]);
        assert!(delta.partitions.is_empty());
        assert!(delta.brokers_changed && delta.controller_changed);
        // Every partition of the topics still there, each once.
        let mut todo: Vec<(String, i32)> = delta
            .partitions_in(&next)
            .into_iter()
            .map(|(t, i)| (t.name.to_string(), i))
            .collect();
        todo.sort();
        assert_eq!(todo.len(), 7);
        todo.dedup();
        assert_eq!(todo.len(), 7);
    }

    #[test]
    fn diff_looks_only_at_the_candidates() {
        let prev = snapshot_with(1, &[topic("a", states(2)), topic("b", states(2))]);
        let mut changed = states(2);
        changed[1].isr = vec![BrokerId(1)];
        let mut next = snapshot_with(2, &[topic("a", states(2)), topic("b", changed)]);
        let only_a: BTreeSet<Arc<str>> = [Arc::from("a")].into();
        // The caller vouches that only "a" may have changed: "b" is not compared.
        assert!(diff_snapshots(&prev, &mut next, Some(&only_a)).is_empty());
        let only_b: BTreeSet<Arc<str>> = [Arc::from("b")].into();
        let delta = diff_snapshots(&prev, &mut next, Some(&only_b));
        assert_eq!(delta.partitions.len(), 1);
        // A candidate named in the delta both as a whole topic and a partition is listed once.
        let both = MetadataDelta {
            base_version: 1,
            topics: [Arc::from("b")].into(),
            partitions: [(Arc::from("b"), 1), (Arc::from("a"), 9)].into(),
            ..Default::default()
        };
        assert_eq!(
            both.partitions_in(&next).len(),
            2,
            "b-0, b-1; a-9 does not exist"
        );
    }

    #[test]
    fn registry_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let broker = BrokerConfig::default();
        let mut reg = TopicRegistry::load(dir.path(), &broker).unwrap();
        let cluster = reg.snapshot().cluster_id.clone();
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "1000".to_string());
        let t = new_topic(&broker, "a", 3, o).unwrap();
        reg.update(|m| {
            m.insert(t.name.clone(), Arc::new(t.clone()));
        })
        .unwrap();
        let again = TopicRegistry::load(dir.path(), &broker).unwrap().snapshot();
        assert_eq!(again.cluster_id, cluster);
        let a = again.topic("a").unwrap();
        assert_eq!(a.partitions, 3);
        assert_eq!(a.config.retention_ms, 1000);
        assert_eq!(a.id, t.id);
    }
}
