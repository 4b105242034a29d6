//! The control thread: one per broker in cluster mode, a tokio current-thread runtime holding
//! the ZooKeeper session (zookeeper-client).
//!
//! It registers the broker (`/brokers/ids/<id>`), competes for `/controller`, keeps a view of
//! ZooKeeper current, turns it into `MetadataSnapshot`s for every shard of this broker, and
//! carries out the `ControlRequest`s shards send. The view is a cache kept current
//! incrementally: persistent recursive watches name each changed znode, and after a burst of
//! events (debounced) only those znodes are read again (`Dirty`, `read_dirty`); the next
//! snapshot rebuilds only the topics that changed and carries a `MetadataDelta`, so one leader
//! change costs a few reads here and one partition applied on its shard. Whole reads are kept
//! for the start of a session, after a reconnect (events may be lost, ZOOKEEPER-4698) and as a
//! slow safety net (`FULL_READ_EVERY`). While it holds `/controller` it also elects leaders and
//! shrinks ISRs when brokers go away (`election`). Nothing here runs on a shard: shards only see
//! the snapshots, delivered through their inboxes, and the lease.
//!
//! Fencing: a separate task renews the lease after each ZooKeeper round trip and revokes it the
//! moment the session is reported expired, even while the main loop waits for shards. The main
//! loop then publishes a snapshot in which this broker leads nothing, drops controller duties,
//! and only then opens a new session. zookeeper-client reports expiry as terminal, so no request
//! of the old session can succeed afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::election;
use super::zk_layout::{self as layout, StateZnode, TopicAssignment};
use super::{ControlRequest, Lease};
use crate::config::{BrokerConfig, TopicConfig};
use crate::errors;
use crate::metadata::{
    diff_snapshots, BrokerInfo, MetadataDelta, MetadataSnapshot, PartitionState, TopicMeta,
    CONSUMER_OFFSETS_TOPIC, NO_LEADER,
};
use crate::metrics::{MetadataWork, METADATA_WORK};
use crate::quota::{self, QuotaEntity, QuotaOp, QuotaTable};
use crate::shard::{Shard, ShardTask};

/// How long startup keeps trying to reach ZooKeeper before giving up.
const STARTUP_CONNECT_MAX: Duration = Duration::from_secs(60);
/// Pause between connection attempts.
const CONNECT_RETRY: Duration = Duration::from_secs(1);
/// Watch events arrive in bursts (a topic creation is dozens of znodes): re-read once after
/// the burst.
const DEBOUNCE: Duration = Duration::from_millis(15);
/// A failed read of the view is tried again after this.
const READ_RETRY: Duration = Duration::from_secs(1);
/// Whole re-read even without events: a safety net only. While connected, persistent watches
/// report every change in order, and each reconnect (where events can be lost, ZOOKEEPER-4698)
/// already forces a whole read; this bounds how long a bug in the incremental bookkeeping
/// could leave the view stale.
const FULL_READ_EVERY: Duration = Duration::from_secs(60);
/// The controller retries failed elections and ISR removals on this beat, from the view it has
/// (no reads).
const CONTROLLER_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Longest wait for the shards to apply a snapshot before the control thread moves on (it must
/// stay responsive as controller; snapshots are applied in version order regardless).
const PUBLISH_WAIT_MAX: Duration = Duration::from_secs(10);
/// Bound on the whole controlled shutdown (moving leaderships, publishing).
const CONTROLLED_SHUTDOWN_MAX: Duration = Duration::from_secs(10);
/// Bound on unregistering at exit (ZooKeeper may be unreachable).
const CLOSE_MAX: Duration = Duration::from_secs(3);
/// Attempts of a version-checked write that lost a race before giving up for this round.
const CAS_ATTEMPTS: usize = 5;

/// What `start` needs; see `startup.rs` for who holds the other ends.
pub struct ControlSetup {
    pub config: Arc<BrokerConfig>,
    pub inboxes: Vec<flume::Sender<ShardTask>>,
    pub lease: Arc<Lease>,
    pub requests: flume::Receiver<ControlRequest>,
    /// Closed (or sent to) by the signal thread on the first SIGTERM/SIGINT.
    pub stop: flume::Receiver<()>,
    /// Dropped by the control thread after the controlled shutdown: the shards then drain.
    pub shards_shutdown: flume::Sender<()>,
    /// Closed by startup once every shard has stopped: the session is then closed.
    pub shards_done: flume::Receiver<()>,
}

/// Starts the control thread and waits until it has joined the cluster: connected, registered
/// and read the state. Returns the first snapshot (version 1), to start the shards with.
pub fn start(
    setup: ControlSetup,
) -> Result<(Arc<MetadataSnapshot>, std::thread::JoinHandle<()>), String> {
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = first_tx.send(Err(format!("cannot start the control runtime: {e}")));
                    return;
                }
            };
            // zookeeper-client spawns its session task through `spawns`; route it to this
            // runtime (the thread-local scope covers every task, as they all run here).
            let _spawner = spawns_core::enter(&TokioSpawner);
            rt.block_on(Control::new(setup).run(first_tx));
        })
        .map_err(|e| format!("cannot start the control thread: {e}"))?;
    match first_rx.recv() {
        Ok(Ok(snapshot)) => Ok((snapshot, handle)),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err("the control thread stopped during startup".into())
        }
    }
}

struct TokioSpawner;

impl spawns_core::Spawn for TokioSpawner {
    fn spawn(&self, task: spawns_core::Task) {
        tokio::spawn(Box::into_pin(task.future));
    }
}

fn now_ms() -> i64 {
    crate::partition::now_ms()
}

/// Errors after which this session can do nothing more.
fn is_terminal(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::AuthFailed
    )
}

fn is_terminal_state(s: zk::SessionState) -> bool {
    matches!(
        s,
        zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
    )
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

/// ZooKeeper's state as last read.
#[derive(Default)]
struct ZkView {
    brokers: BTreeMap<i32, BrokerInfo>,
    controller_id: i32,
    /// Session owning `/controller` (0 when there is none).
    controller_owner: i64,
    controller_epoch: i32,
    topics: BTreeMap<String, TopicView>,
}

#[derive(Default, Clone)]
struct TopicView {
    assignment: TopicAssignment,
    assignment_version: i32,
    config: BTreeMap<String, String>,
    /// Per assigned partition: the state znode and its version, `None` when it is missing.
    states: BTreeMap<i32, Option<(StateZnode, i32)>>,
}

impl TopicView {
    fn state(&self, partition: i32) -> Option<PartitionState> {
        let replicas = self.assignment.partitions.get(&partition)?.clone();
        let (s, version) = self.states.get(&partition)?.as_ref()?;
        Some(PartitionState {
            replicas,
            leader: s.leader,
            leader_epoch: s.leader_epoch,
            isr: s.isr.clone(),
            zk_version: *version,
        })
    }
}

/// Reads everything a snapshot needs. Requests are sent as they are created and awaited
/// afterwards, so each stage costs one round trip however many znodes it reads.
async fn read_view(client: &zk::Client) -> Result<ZkView, zk::Error> {
    let ids = client.list_children(layout::BROKER_IDS);
    let topics = client.list_children(layout::BROKER_TOPICS);
    let controller = client.get_data(layout::CONTROLLER);
    let epoch = client.get_data(layout::CONTROLLER_EPOCH);
    let ids = ids.await?;
    let topics = topics.await?;
    let mut reads = 4 + ids.len() as u64 + 2 * topics.len() as u64;
    let mut view = ZkView {
        controller_id: NO_LEADER,
        ..Default::default()
    };
    read_controller(&mut view, controller.await, epoch.await)?;

    let broker_reads: Vec<_> = ids
        .iter()
        .filter_map(|s| s.parse::<i32>().ok())
        .map(|id| (id, client.get_data(&layout::broker_path(id))))
        .collect();
    let topic_reads = topic_reads(client, topics);
    for (id, read) in broker_reads {
        // None: gone between the listing and the read, or undecodable.
        if let Some(b) = broker_of(id, read.await)? {
            view.brokers.insert(id, b);
        }
    }
    for (name, assignment, config) in topic_reads {
        let assignment = decode_versioned(assignment.await, layout::decode_topic, || {
            format!("topic {name}")
        })?;
        let config = decode_config(config.await, &name)?;
        if let Some((assignment, assignment_version)) = assignment {
            view.topics.insert(
                name,
                TopicView {
                    assignment,
                    assignment_version,
                    config,
                    states: BTreeMap::new(),
                },
            );
        }
    }

    let state_reads: Vec<_> = view
        .topics
        .iter()
        .flat_map(|(name, t)| {
            t.assignment.partitions.keys().map(move |&p| {
                (
                    name.clone(),
                    p,
                    client.get_data(&layout::state_path(name, p)),
                )
            })
        })
        .collect();
    reads += state_reads.len() as u64;
    for (name, p, read) in state_reads {
        let state = decode_versioned(read.await, layout::decode_state, || format!("{name}-{p}"))?;
        if let Some(t) = view.topics.get_mut(&name) {
            t.states.insert(p, state);
        }
    }
    MetadataWork::add(&METADATA_WORK.full_reads, 1);
    MetadataWork::add(&METADATA_WORK.znode_reads_full, reads);
    Ok(view)
}

/// A `get_data` answer.
type ZnodeRead = Result<(Vec<u8>, zk::Stat), zk::Error>;

/// Sends the reads of `names`' assignment and config znodes at once; the caller awaits them.
fn topic_reads(
    client: &zk::Client,
    names: impl IntoIterator<Item = String>,
) -> Vec<(
    String,
    impl std::future::Future<Output = ZnodeRead> + '_,
    impl std::future::Future<Output = ZnodeRead> + '_,
)> {
    names
        .into_iter()
        .map(|t| {
            let assignment = client.get_data(&layout::topic_path(&t));
            let config = client.get_data(&layout::topic_config_path(&t));
            (t, assignment, config)
        })
        .collect()
}

/// Sets the view's controller (none when `/controller` is missing or undecodable) and, when
/// `/controller_epoch` exists, its epoch.
fn read_controller(
    view: &mut ZkView,
    controller: ZnodeRead,
    epoch: ZnodeRead,
) -> Result<(), zk::Error> {
    (view.controller_id, view.controller_owner) = match controller {
        Ok((data, stat)) => match layout::decode_controller(&data) {
            Ok(id) => (id, stat.ephemeral_owner),
            Err(e) => {
                log::warn!("{e}");
                (NO_LEADER, 0)
            }
        },
        Err(zk::Error::NoNode) => (NO_LEADER, 0),
        Err(e) => return Err(e),
    };
    match epoch {
        Ok((data, _)) => {
            view.controller_epoch = layout::decode_controller_epoch(&data).unwrap_or(0)
        }
        Err(zk::Error::NoNode) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// A broker's registration: None when it is gone or undecodable (logged).
fn broker_of(id: i32, read: ZnodeRead) -> Result<Option<BrokerInfo>, zk::Error> {
    match read {
        Ok((data, _)) => match layout::decode_broker(id, &data) {
            Ok(b) => Ok(Some(b)),
            Err(e) => {
                log::warn!("broker {id}: {e}");
                Ok(None)
            }
        },
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A topic's config znode: empty when it is missing or undecodable (logged).
fn decode_config(
    read: Result<(Vec<u8>, zk::Stat), zk::Error>,
    name: &str,
) -> Result<BTreeMap<String, String>, zk::Error> {
    match read {
        Ok((data, _)) => Ok(layout::decode_topic_config(&data).unwrap_or_else(|e| {
            log::warn!("topic {name}: {e}");
            BTreeMap::new()
        })),
        Err(zk::Error::NoNode) => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// Znodes to read again, collected from watch events (and from writes that lost a race)
/// between two reads of the view.
#[derive(Debug, Default, PartialEq, Eq)]
struct Dirty {
    /// Everything: a new session, a reconnect, the safety net, or a read that failed.
    all: bool,
    /// `/controller` and `/controller_epoch`.
    controller: bool,
    /// `/brokers/ids/<id>` (registered, changed or gone).
    brokers: BTreeSet<i32>,
    /// `/brokers/topics/<t>` and `/config/topics/<t>`: a topic created, deleted or grown.
    /// Partitions new to the view get their state read too.
    topics: BTreeSet<String>,
    /// `/config/topics/<t>` alone.
    configs: BTreeSet<String>,
    /// `/brokers/topics/<t>/partitions/<p>/state`.
    states: BTreeSet<(String, i32)>,
    /// A client quota znode under `/config/clients` or `/config/users`: the (small) quota
    /// tree is read again as a whole.
    quotas: bool,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        !self.all
            && !self.controller
            && self.brokers.is_empty()
            && self.topics.is_empty()
            && self.configs.is_empty()
            && self.states.is_empty()
            && !self.quotas
    }

    /// Notes what a watch event says changed. A session event (the connection came back)
    /// means events may have been lost: everything is read again.
    fn note(&mut self, e: &zk::WatchedEvent) {
        if e.event_type == zk::EventType::Session {
            self.all = true;
        } else {
            self.note_path(&e.path);
        }
    }

    /// Notes the znode at `path` (created, changed or deleted). The watches are recursive and
    /// report every descendant's own creation and deletion, so no children list is needed:
    /// parents (`/brokers/ids`, `/brokers/topics`, a topic's `partitions/<p>`) carry nothing
    /// a snapshot uses and are ignored.
    fn note_path(&mut self, path: &str) {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["controller"] => self.controller = true,
            ["brokers", "ids", id] => {
                if let Ok(id) = id.parse() {
                    self.brokers.insert(id);
                }
            }
            ["brokers", "topics", topic] => {
                self.topics.insert((*topic).to_string());
            }
            ["brokers", "topics", topic, "partitions", p, "state"] => {
                if let Ok(p) = p.parse() {
                    self.states.insert(((*topic).to_string(), p));
                }
            }
            ["config", "topics", topic] => {
                self.configs.insert((*topic).to_string());
            }
            ["config", "clients", ..] | ["config", "users", ..] => self.quotas = true,
            _ => {}
        }
    }
}

/// What `read_dirty` changed in the view.
#[derive(Debug, Default)]
struct ReadOutcome {
    /// Topics whose assignment, config or partition states were read (or that disappeared).
    topics: BTreeSet<String>,
    brokers_changed: bool,
    znodes_read: u64,
}

/// Reads again the znodes `dirty` names (not `dirty.all`) and updates `view`. Two round trips
/// at most: controller, brokers, topics and configs first, then the partition states (those
/// named, and those of partitions new to the view).
async fn read_dirty(
    client: &zk::Client,
    view: &mut ZkView,
    dirty: &Dirty,
) -> Result<ReadOutcome, zk::Error> {
    let mut out = ReadOutcome::default();
    let controller = dirty.controller.then(|| {
        (
            client.get_data(layout::CONTROLLER),
            client.get_data(layout::CONTROLLER_EPOCH),
        )
    });
    let brokers: Vec<_> = dirty
        .brokers
        .iter()
        .map(|&id| (id, client.get_data(&layout::broker_path(id))))
        .collect();
    let topics = topic_reads(client, dirty.topics.iter().cloned());
    let configs: Vec<_> = dirty
        .configs
        .iter()
        .filter(|t| !dirty.topics.contains(*t))
        .map(|t| (t.clone(), client.get_data(&layout::topic_config_path(t))))
        .collect();
    out.znodes_read = 2 * u64::from(controller.is_some())
        + brokers.len() as u64
        + 2 * topics.len() as u64
        + configs.len() as u64;

    if let Some((controller, epoch)) = controller {
        read_controller(view, controller.await, epoch.await)?;
    }
    for (id, read) in brokers {
        let now = broker_of(id, read.await)?;
        if view.brokers.get(&id) != now.as_ref() {
            out.brokers_changed = true;
            match now {
                Some(b) => view.brokers.insert(id, b),
                None => view.brokers.remove(&id),
            };
        }
    }
    let mut states: BTreeSet<(String, i32)> = dirty.states.clone();
    for (name, assignment, config) in topics {
        let assignment = decode_versioned(assignment.await, layout::decode_topic, || {
            format!("topic {name}")
        })?;
        let config = decode_config(config.await, &name)?;
        match assignment {
            None => {
                view.topics.remove(&name);
            }
            Some((assignment, assignment_version)) => {
                let t = view.topics.entry(name.clone()).or_default();
                t.states
                    .retain(|p, _| assignment.partitions.contains_key(p));
                for p in assignment.partitions.keys() {
                    if !t.states.contains_key(p) {
                        states.insert((name.clone(), *p));
                    }
                }
                t.assignment = assignment;
                t.assignment_version = assignment_version;
                t.config = config;
            }
        }
        out.topics.insert(name);
    }
    for (name, read) in configs {
        let config = decode_config(read.await, &name)?;
        if let Some(t) = view.topics.get_mut(&name) {
            t.config = config;
            out.topics.insert(name);
        }
    }
    // A state of a topic or partition the view does not know (deleted, or its topic's
    // assignment not seen yet) is read when its topic is.
    let state_reads: Vec<_> = states
        .into_iter()
        .filter(|(t, p)| {
            view.topics
                .get(t)
                .is_some_and(|t| t.assignment.partitions.contains_key(p))
        })
        .map(|(t, p)| {
            let read = client.get_data(&layout::state_path(&t, p));
            (t, p, read)
        })
        .collect();
    out.znodes_read += state_reads.len() as u64;
    for (name, p, read) in state_reads {
        let state = decode_versioned(read.await, layout::decode_state, || format!("{name}-{p}"))?;
        if let Some(t) = view.topics.get_mut(&name) {
            t.states.insert(p, state);
            out.topics.insert(name);
        }
    }
    Ok(out)
}

/// A znode read, decoded with its version: `None` when it is gone (deleted between the listing
/// and the read) or undecodable (logged with `what`); other ZooKeeper errors end the refresh.
fn decode_versioned<T, E: std::fmt::Display>(
    read: Result<(Vec<u8>, zk::Stat), zk::Error>,
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
    what: impl FnOnce() -> String,
) -> Result<Option<(T, i32)>, zk::Error> {
    match read {
        Ok((data, stat)) => match decode(&data) {
            Ok(v) => Ok(Some((v, stat.version))),
            Err(e) => {
                log::warn!("{}: {e}", what());
                Ok(None)
            }
        },
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A topic id for a topic created without one (by an older tool): derived from the name, so
/// every broker agrees on it.
fn derived_topic_id(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (half, seed) in [0xcbf2_9ce4_8422_2325u64, 0x8422_2325_cbf2_9ce4]
        .iter()
        .enumerate()
    {
        let mut h = *seed;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out[half * 8..half * 8 + 8].copy_from_slice(&h.to_be_bytes());
    }
    out
}

/// Children of `path`, none when it does not exist.
async fn children_or_none(client: &zk::Client, path: &str) -> Result<Vec<String>, zk::Error> {
    match client.list_children(path).await {
        Ok(c) => Ok(c),
        Err(zk::Error::NoNode) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Reads every client quota: `/config/clients/*`, `/config/users/*` and
/// `/config/users/*/clients/*`. The tree is small (one znode per entity with a quota), so it
/// is read whole: three round trips. A znode that cannot be understood is skipped with a
/// warning (another tool may have written it).
async fn read_quotas(client: &zk::Client) -> Result<(QuotaTable, u64), zk::Error> {
    let clients = children_or_none(client, layout::CONFIG_CLIENTS).await?;
    let users = children_or_none(client, layout::CONFIG_USERS).await?;
    let mut paths: Vec<String> = clients
        .iter()
        .map(|c| format!("{}/{c}", layout::CONFIG_CLIENTS))
        .collect();
    let user_clients: Vec<_> = users
        .iter()
        .map(|u| format!("{}/{u}/clients", layout::CONFIG_USERS))
        .collect();
    let listed: Vec<_> = user_clients
        .iter()
        .map(|p| children_or_none(client, p))
        .collect();
    for (u, list) in users.iter().zip(listed) {
        paths.push(format!("{}/{u}", layout::CONFIG_USERS));
        for c in list.await? {
            paths.push(format!("{}/{u}/clients/{c}", layout::CONFIG_USERS));
        }
    }
    let reads: Vec<_> = paths.iter().map(|p| client.get_data(p)).collect();
    let mut table = QuotaTable::default();
    let mut znodes = 2 + users.len() as u64;
    for (path, read) in paths.iter().zip(reads) {
        znodes += 1;
        let data = match read.await {
            Ok((data, _)) => data,
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(e),
        };
        let Some(entity) = QuotaEntity::from_zk_path(path) else {
            log::warn!("{path}: not a client quota entity; ignored");
            continue;
        };
        if data.is_empty() {
            // A parent created only to hold `clients/` below it.
            continue;
        }
        match layout::decode_topic_config(&data) {
            Ok(config) => {
                let values = quota::values_from_config(&entity, &config);
                if !values.is_empty() {
                    table.entries.insert(entity, values);
                }
            }
            Err(e) => log::warn!("{path}: {e}; ignored"),
        }
    }
    Ok((table, znodes))
}

/// What a shard runs for a broadcast.
type ShardJob = Arc<dyn Fn(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

/// Runs `job` on every shard and waits (at most `wait`) until each has finished it. False
/// when some shard had not finished in time.
async fn broadcast(inboxes: &[flume::Sender<ShardTask>], job: ShardJob, wait: Duration) -> bool {
    let (done_tx, done_rx) = flume::unbounded::<()>();
    let mut expected = 0;
    for inbox in inboxes {
        let job = job.clone();
        let done = done_tx.clone();
        let task: ShardTask = Box::new(move |shard| {
            Box::pin(async move {
                job(shard).await;
                let _ = done.send(());
            })
        });
        // Inboxes are bounded: wait for room without blocking the runtime's thread.
        if inbox.send_async(task).await.is_ok() {
            expected += 1;
        }
    }
    // A shard that stopped drops its task and with it the sender, which ends the wait below.
    drop(done_tx);
    let all = async {
        for _ in 0..expected {
            if done_rx.recv_async().await.is_err() {
                break;
            }
        }
    };
    wait.is_zero() || tokio::time::timeout(wait, all).await.is_ok()
}

/// Installs `table` on every shard and waits (at most `wait`) until each has it.
async fn deliver_quotas(
    inboxes: &[flume::Sender<ShardTask>],
    table: Arc<QuotaTable>,
    wait: Duration,
) {
    let job: ShardJob = Arc::new(move |shard| {
        let t = table.clone();
        Box::pin(async move { shard.quotas.set_table(t) })
    });
    if !broadcast(inboxes, job, wait).await {
        log::warn!("shards have not installed the new client quotas after {wait:?}");
    }
}

/// Sends `snapshot` (with its `delta` from the previous version) to every shard and waits (at
/// most `wait`) until each has applied it.
async fn deliver(
    inboxes: &[flume::Sender<ShardTask>],
    snapshot: Arc<MetadataSnapshot>,
    delta: Option<Arc<MetadataDelta>>,
    wait: Duration,
) {
    let version = snapshot.version;
    let job: ShardJob = Arc::new(move |shard| {
        let (snap, delta) = (snapshot.clone(), delta.clone());
        Box::pin(async move { shard.apply_metadata_delta(snap, delta).await })
    });
    if !broadcast(inboxes, job, wait).await {
        log::warn!("shards have not applied metadata version {version} after {wait:?}; continuing");
    }
}

/// Keeps the lease while the session lives: one cheap request every `every`, renewing for
/// `length` from when it was sent if it proves our registration is still ours; revokes at once
/// when the session ends.
async fn keep_lease(
    client: zk::Client,
    lease: Arc<Lease>,
    registration: String,
    length: Duration,
    every: Duration,
) {
    let session_id = client.session_id().0;
    let mut state = client.state_watcher();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let started = Instant::now();
                match client.check_stat(&registration).await {
                    Ok(Some(stat)) if stat.ephemeral_owner == session_id => {
                        lease.renew(started, length)
                    }
                    Ok(_) => {}
                    Err(e) if is_terminal(&e) => {
                        lease.revoke();
                        return;
                    }
                    Err(_) => {}
                }
            }
            s = state.changed() => {
                if is_terminal_state(s) {
                    lease.revoke();
                    return;
                }
            }
        }
    }
}

struct Session {
    client: zk::Client,
    watches: Watches,
    /// The connection came back within the session: the watches must be added again before
    /// the next read (see `Watches`).
    rewatch: bool,
    state: zk::StateWatcher,
    keeper: tokio::task::JoinHandle<()>,
}

/// The three persistent recursive watches the view is kept by.
///
/// zookeeper-client 0.11.2 does not re-register persistent watches when it reconnects within
/// a session (its `resend_watches` only ever sends the standard watch lists), while the
/// watchers it handed out stay open and silent. ZooKeeper forgets a connection's watches when
/// the connection ends, so after any reconnect (a network blip, a ZooKeeper restart or pause
/// shorter than the session) they are added again here, before the whole read that follows.
/// Adding a watch on a path this client already watches in the same mode replaces nothing
/// server-side; dropping the old watcher afterwards removes it only locally.
struct Watches {
    brokers: zk::PersistentWatcher,
    config: zk::PersistentWatcher,
    controller: zk::PersistentWatcher,
    /// Client quotas: `/config/clients` and `/config/users`.
    quota_clients: zk::PersistentWatcher,
    quota_users: zk::PersistentWatcher,
}

impl Watches {
    async fn add(client: &zk::Client) -> Result<Watches, (&'static str, zk::Error)> {
        let recursive = zk::AddWatchMode::PersistentRecursive;
        let watch = |path: &'static str| async move {
            client.watch(path, recursive).await.map_err(|e| (path, e))
        };
        Ok(Watches {
            brokers: watch(layout::BROKERS).await?,
            config: watch(layout::CONFIG_TOPICS).await?,
            controller: watch(layout::CONTROLLER).await?,
            quota_clients: watch(layout::CONFIG_CLIENTS).await?,
            quota_users: watch(layout::CONFIG_USERS).await?,
        })
    }
}

enum OpenError {
    Stopped,
    Failed(String),
}

enum Event {
    Stop,
    ShardsDone,
    Request(ControlRequest),
    RequestsClosed,
    /// A watched znode changed (or the connection came back): read it after the burst.
    Watched(zk::WatchedEvent),
    /// The session's state changed without ending: read everything after the burst.
    ReadAll,
    /// The burst is over: read what changed.
    Refresh,
    /// Controller checks on the view, without reading.
    ControllerCheck,
    /// The safety net: read everything.
    FullRead,
    SessionEnded,
    /// Controller: time to look for leadership away from preferred replicas.
    Rebalance,
}

/// What became of one partition state write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteOutcome {
    Written,
    /// Someone else changed the partition first (version check failed).
    Conflict,
    Failed,
}

/// What changed in the view since the last snapshot: the next one rebuilds only these topics
/// (brokers and controller are compared whole, they are small).
#[derive(Debug, Default)]
struct Changed {
    /// Rebuild every topic (a whole read replaced the view).
    all: bool,
    topics: BTreeSet<String>,
}

struct Control {
    config: Arc<BrokerConfig>,
    local: i32,
    inboxes: Vec<flume::Sender<ShardTask>>,
    lease: Arc<Lease>,
    requests: flume::Receiver<ControlRequest>,
    requests_open: bool,
    stop: flume::Receiver<()>,
    shards_shutdown: Option<flume::Sender<()>>,
    shards_done: flume::Receiver<()>,
    session: Option<Session>,
    /// Set when a request saw the session end; handled by the main loop.
    session_lost: bool,
    /// No session: the published view leads nothing.
    fenced: bool,
    stopping: bool,
    cluster_id: String,
    view: ZkView,
    is_controller: bool,
    /// Our controller epoch while controller.
    controller_epoch: i32,
    version: u64,
    last: Option<Arc<MetadataSnapshot>>,
    /// Whether `last` was built fenced (then every partition this broker leads was hidden).
    last_fenced: bool,
    /// Znodes to read at the next refresh.
    dirty: Dirty,
    /// View changes not published yet.
    changed: Changed,
    /// Controller: topics whose partitions `reconcile` must look at; all of them when
    /// `reconcile_all` (brokers changed, a whole read, a write that did not go through).
    reconcile_topics: BTreeSet<String>,
    reconcile_all: bool,
    refresh_at: Option<tokio::time::Instant>,
    /// Controller: next automatic leader rebalance check.
    next_rebalance: tokio::time::Instant,
    warned_configs: BTreeSet<String>,
    /// Sessions this process held and lost. ZooKeeper keeps a lost session (and its ephemeral
    /// znodes: our registration, maybe `/controller`) until it expires it, up to a session
    /// timeout after ZooKeeper is reachable again; ours are deleted at once instead.
    lost_sessions: BTreeSet<i64>,
    /// The client quotas last installed on the shards.
    quotas: Arc<QuotaTable>,
    /// The quota tree must be read again (a watch event, a whole read, our own write).
    quotas_due: bool,
}

impl Control {
    fn new(s: ControlSetup) -> Control {
        let first_rebalance = tokio::time::Instant::now()
            + Duration::from_millis(s.config.leader_imbalance_check_interval_ms);
        Control {
            local: s.config.broker_id,
            config: s.config,
            inboxes: s.inboxes,
            lease: s.lease,
            requests: s.requests,
            requests_open: true,
            stop: s.stop,
            shards_shutdown: Some(s.shards_shutdown),
            shards_done: s.shards_done,
            session: None,
            session_lost: false,
            fenced: true,
            stopping: false,
            cluster_id: String::new(),
            view: ZkView::default(),
            is_controller: false,
            controller_epoch: 0,
            version: 0,
            last: None,
            last_fenced: false,
            dirty: Dirty {
                all: true,
                ..Dirty::default()
            },
            changed: Changed::default(),
            reconcile_topics: BTreeSet::new(),
            reconcile_all: true,
            refresh_at: None,
            next_rebalance: first_rebalance,
            warned_configs: BTreeSet::new(),
            lost_sessions: BTreeSet::new(),
            quotas: Arc::new(QuotaTable::default()),
            quotas_due: true,
        }
    }

    fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.config.zookeeper_session_timeout_ms.max(1))
    }

    fn client(&self) -> Option<zk::Client> {
        self.session.as_ref().map(|s| s.client.clone())
    }

    /// A read of the view (or the re-adding of its watches) failed: everything is read again,
    /// and not only when the next event comes (a quiet cluster may send none).
    fn read_failed(&mut self, what: &str, e: &zk::Error) {
        self.failed(what, e);
        let at = tokio::time::Instant::now() + READ_RETRY;
        self.refresh_at = Some(self.refresh_at.map_or(at, |t| t.min(at)));
    }

    /// Notes a failed ZooKeeper call; a terminal one ends the session.
    fn failed(&mut self, what: &str, e: &zk::Error) {
        if is_terminal(e) {
            self.lease.revoke();
            self.session_lost = true;
        } else {
            log::warn!("ZooKeeper {what}: {e}");
        }
    }

    async fn run(mut self, first: std::sync::mpsc::Sender<Result<Arc<MetadataSnapshot>, String>>) {
        let deadline = Instant::now() + STARTUP_CONNECT_MAX;
        match self.open_session(Some(deadline)).await {
            Ok(session) => self.session = Some(session),
            Err(OpenError::Stopped) => {
                let _ = first.send(Err("stopped by a signal before joining the cluster".into()));
                return;
            }
            Err(OpenError::Failed(msg)) => {
                let _ = first.send(Err(msg));
                return;
            }
        }
        // The shards start with this view: it must be a complete read, not an empty default.
        while !self.refresh().await {
            if self.session_lost || Instant::now() >= deadline {
                let _ = first.send(Err("cannot read the cluster state from ZooKeeper".into()));
                return;
            }
            tokio::time::sleep(CONNECT_RETRY).await;
        }
        let (snapshot, _) = self.next_snapshot();
        let snapshot = Arc::new(snapshot);
        self.version = snapshot.version;
        self.last = Some(snapshot.clone());
        self.last_fenced = self.fenced;
        if first.send(Ok(snapshot)).is_err() {
            return;
        }
        self.event_loop().await;
        if tokio::time::timeout(CLOSE_MAX, self.close_session())
            .await
            .is_err()
        {
            log::warn!("ZooKeeper did not answer while unregistering; its session timeout will");
        }
    }

    async fn event_loop(&mut self) {
        let mut tick = tokio::time::interval(CONTROLLER_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut full = tokio::time::interval_at(
            tokio::time::Instant::now() + FULL_READ_EVERY,
            FULL_READ_EVERY,
        );
        full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.session_lost {
                self.lose_session().await;
            }
            if self.session.is_none() && !self.stopping {
                match self.open_session(None).await {
                    Ok(session) => {
                        self.session = Some(session);
                        // Events of the old session are gone: read everything.
                        self.dirty.all = true;
                        self.refresh().await;
                        self.publish().await;
                    }
                    Err(OpenError::Stopped) => self.begin_stop().await,
                    Err(OpenError::Failed(msg)) => {
                        log::error!("{msg}");
                        tokio::time::sleep(CONNECT_RETRY).await;
                    }
                }
                continue;
            }
            match self.next_event(&mut tick, &mut full).await {
                Event::ShardsDone => return,
                Event::Stop => self.begin_stop().await,
                Event::Request(r) => self.handle(r).await,
                Event::RequestsClosed => self.requests_open = false,
                Event::Watched(e) => {
                    self.dirty.note(&e);
                    self.refresh_soon();
                }
                Event::ReadAll => {
                    if let Some(s) = self.session.as_mut() {
                        s.rewatch = true;
                    }
                    self.dirty.all = true;
                    self.refresh_soon();
                }
                Event::Refresh => {
                    self.refresh_at = None;
                    self.refresh().await;
                    self.publish().await;
                }
                Event::ControllerCheck => {
                    if let Some(client) = self.client() {
                        self.controller_duties(&client).await;
                        self.publish().await;
                    }
                }
                Event::FullRead => {
                    self.dirty.all = true;
                    self.refresh().await;
                    self.publish().await;
                }
                Event::SessionEnded => self.session_lost = true,
                Event::Rebalance => {
                    self.next_rebalance = tokio::time::Instant::now() + self.rebalance_interval();
                    self.auto_rebalance().await;
                }
            }
        }
    }

    /// Refreshes after `DEBOUNCE`, unless a refresh is already due sooner.
    fn refresh_soon(&mut self) {
        let at = tokio::time::Instant::now() + DEBOUNCE;
        self.refresh_at = Some(self.refresh_at.map_or(at, |t| t.min(at)));
    }

    async fn next_event(
        &mut self,
        tick: &mut tokio::time::Interval,
        full: &mut tokio::time::Interval,
    ) -> Event {
        let refresh_at = self.refresh_at;
        let debounce = async move {
            match refresh_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let stopping = self.stopping;
        let rebalance_due =
            self.is_controller && self.config.auto_leader_rebalance_enable && !stopping;
        let next_rebalance = self.next_rebalance;
        let requests_open = self.requests_open;
        let requests = &self.requests;
        let stop = &self.stop;
        let shards_done = &self.shards_done;
        let Some(session) = self.session.as_mut() else {
            // Stopping without a session: only the shards' end and their requests matter.
            return tokio::select! {
                _ = shards_done.recv_async() => Event::ShardsDone,
                r = requests.recv_async(), if requests_open => match r {
                    Ok(r) => Event::Request(r),
                    Err(_) => Event::RequestsClosed,
                },
            };
        };
        let watch_event = |e: zk::WatchedEvent| {
            if e.event_type == zk::EventType::Session {
                if is_terminal_state(e.session_state) {
                    return Event::SessionEnded;
                }
                // After a reconnect events may have been lost: re-read.
                return Event::ReadAll;
            }
            Event::Watched(e)
        };
        tokio::select! {
            _ = stop.recv_async(), if !stopping => Event::Stop,
            _ = shards_done.recv_async(), if stopping => Event::ShardsDone,
            r = requests.recv_async(), if requests_open => match r {
                Ok(r) => Event::Request(r),
                Err(_) => Event::RequestsClosed,
            },
            s = session.state.changed() => {
                if is_terminal_state(s) { Event::SessionEnded } else { Event::ReadAll }
            }
            e = session.watches.brokers.changed() => watch_event(e),
            e = session.watches.config.changed() => watch_event(e),
            e = session.watches.controller.changed() => watch_event(e),
            e = session.watches.quota_clients.changed() => watch_event(e),
            e = session.watches.quota_users.changed() => watch_event(e),
            _ = tick.tick() => Event::ControllerCheck,
            _ = full.tick() => Event::FullRead,
            _ = debounce => Event::Refresh,
            _ = tokio::time::sleep_until(next_rebalance), if rebalance_due => Event::Rebalance,
        }
    }

    /// Connects, makes sure the tree exists, registers this broker, sets the watches and starts
    /// the lease keeper. With a deadline (startup) connecting gives up after it.
    async fn open_session(&mut self, deadline: Option<Instant>) -> Result<Session, OpenError> {
        let connect = self
            .config
            .zookeeper_connect
            .clone()
            .ok_or_else(|| OpenError::Failed("zookeeper.connect is not set".into()))?;
        let timeout = self.session_timeout();
        let mut attempts = 0u32;
        let client = loop {
            let attempt = zk::Client::connector()
                .with_session_timeout(timeout)
                .with_fail_eagerly()
                .connect(&connect);
            let result = tokio::select! {
                r = attempt => r,
                _ = self.stop.recv_async() => return Err(OpenError::Stopped),
            };
            match result {
                Ok(c) => break c,
                Err(e) => {
                    attempts += 1;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(OpenError::Failed(format!(
                            "cannot reach ZooKeeper at {connect} within {} s: {e}",
                            STARTUP_CONNECT_MAX.as_secs()
                        )));
                    }
                    if attempts == 1 || attempts.is_multiple_of(10) {
                        log::warn!("cannot connect to ZooKeeper at {connect}: {e}; retrying");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(CONNECT_RETRY) => {}
                        _ = self.stop.recv_async() => return Err(OpenError::Stopped),
                    }
                }
            }
        };
        log::info!(
            "ZooKeeper session {} established with {connect} (timeout {:?})",
            client.session_id(),
            client.session_timeout()
        );
        let failed = |what: &str, e: zk::Error| OpenError::Failed(format!("ZooKeeper {what}: {e}"));
        for path in layout::PERSISTENT_PATHS {
            client
                .mkdir(path, &persistent())
                .await
                .map_err(|e| failed(path, e))?;
        }
        self.cluster_id = self
            .cluster_id_of(&client)
            .await
            .map_err(|e| failed("cluster id", e))?;
        self.register(&client, deadline.is_some()).await?;
        self.release_lost_controller(&client)
            .await
            .map_err(|e| failed("/controller", e))?;
        // Watches go in before the first read so that no change between the two is missed.
        let watches = Watches::add(&client)
            .await
            .map_err(|(path, e)| failed(&format!("watch {path}"), e))?;
        // The session is negotiated; the lease must end well before the server may expire it.
        let negotiated = client.session_timeout();
        let keeper = tokio::spawn(keep_lease(
            client.clone(),
            self.lease.clone(),
            layout::broker_path(self.local),
            negotiated * 2 / 3,
            negotiated / 6,
        ));
        let state = client.state_watcher();
        self.fenced = false;
        self.session_lost = false;
        Ok(Session {
            client,
            watches,
            rewatch: false,
            state,
            keeper,
        })
    }

    async fn cluster_id_of(&self, client: &zk::Client) -> Result<String, zk::Error> {
        loop {
            match client.get_data(layout::CLUSTER_ID).await {
                Ok((data, _)) => {
                    return Ok(layout::decode_cluster_id(&data).unwrap_or_else(|e| {
                        log::warn!("{e}; using its raw content as the cluster id");
                        String::from_utf8_lossy(&data).into_owned()
                    }))
                }
                Err(zk::Error::NoNode) => {
                    let id = layout::kafka_uuid_string(&crate::metadata::random_bytes::<16>());
                    match client
                        .create(
                            layout::CLUSTER_ID,
                            &layout::encode_cluster_id(&id),
                            &persistent(),
                        )
                        .await
                    {
                        Ok(_) => {
                            log::info!("new cluster id {id}");
                            return Ok(id);
                        }
                        Err(zk::Error::NodeExists) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates `/brokers/ids/<id>`. If it exists, a previous process with this id (killed
    /// without closing its session) or another live broker holds it: wait for it to go.
    async fn register(&self, client: &zk::Client, at_startup: bool) -> Result<(), OpenError> {
        let path = layout::broker_path(self.local);
        let data = layout::encode_broker(
            &self.config.advertised_host,
            self.config.advertised_port,
            now_ms(),
        );
        // A stale registration disappears within one session timeout of its process dying;
        // one still there much later is another broker using our id.
        let give_up = Instant::now() + self.session_timeout() * 2 + Duration::from_secs(10);
        let mut logged = None::<Instant>;
        loop {
            match client.create(&path, &data, &ephemeral()).await {
                Ok(_) => {
                    log::info!(
                        "registered as broker {} ({}:{})",
                        self.local,
                        self.config.advertised_host,
                        self.config.advertised_port
                    );
                    return Ok(());
                }
                Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(OpenError::Failed(format!("ZooKeeper register {path}: {e}"))),
            }
            let watched = client.check_and_watch_stat(&path).await;
            let watcher = match watched {
                Ok((None, _)) => continue,
                Ok((Some(stat), _)) if stat.ephemeral_owner == client.session_id().0 => {
                    return Ok(())
                }
                Ok((Some(stat), _)) if self.lost_sessions.contains(&stat.ephemeral_owner) => {
                    // Our own registration from a session we already gave up: nobody else
                    // may hold it, so there is nothing to wait for.
                    log::info!(
                        "removing the registration of our lost ZooKeeper session {:#x}",
                        stat.ephemeral_owner
                    );
                    match client.delete(&path, Some(stat.version)).await {
                        Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => continue,
                        Err(e) => {
                            return Err(OpenError::Failed(format!("ZooKeeper delete {path}: {e}")))
                        }
                    }
                }
                Ok((Some(stat), w)) => {
                    if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                        log::warn!(
                            "broker id {} is still registered by ZooKeeper session {:#x} (a \
                             previous process that did not stop cleanly, or another broker \
                             with the same id); waiting for it to go away",
                            self.local,
                            stat.ephemeral_owner
                        );
                        logged = Some(Instant::now());
                    }
                    w
                }
                Err(e) => return Err(OpenError::Failed(format!("ZooKeeper watch {path}: {e}"))),
            };
            if at_startup && Instant::now() >= give_up {
                return Err(OpenError::Failed(format!(
                    "broker id {} is registered in ZooKeeper by another live session; is \
                     another broker running with this id?",
                    self.local
                )));
            }
            tokio::select! {
                _ = watcher.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.stop.recv_async() => return Err(OpenError::Stopped),
            }
        }
    }

    /// Deletes `/controller` when a session we lost still holds it, so that an election runs
    /// now rather than when ZooKeeper expires that session. Not atomic with the check: if the
    /// old session expires in between and another broker is elected at once, its znode is
    /// deleted and one more election follows (controller epochs keep the writes safe).
    async fn release_lost_controller(&self, client: &zk::Client) -> Result<(), zk::Error> {
        if self.lost_sessions.is_empty() {
            return Ok(());
        }
        match client.check_stat(layout::CONTROLLER).await? {
            Some(stat) if self.lost_sessions.contains(&stat.ephemeral_owner) => {
                log::info!(
                    "removing /controller of our lost ZooKeeper session {:#x}",
                    stat.ephemeral_owner
                );
                match client.delete(layout::CONTROLLER, Some(stat.version)).await {
                    Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            _ => Ok(()),
        }
    }

    /// Session gone for good: stop leading at once, tell the shards, forget controller duty.
    async fn lose_session(&mut self) {
        self.lease.revoke();
        super::SESSION_ENDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.session_lost = false;
        if let Some(s) = self.session.take() {
            s.keeper.abort();
            self.lost_sessions.insert(s.client.session_id().0);
        }
        let was_controller = std::mem::replace(&mut self.is_controller, false);
        self.fenced = true;
        log::warn!(
            "ZooKeeper session ended: no longer leading any partition{}; {}",
            if was_controller {
                " and no longer controller"
            } else {
                ""
            },
            if self.stopping {
                "stopping"
            } else {
                "reconnecting"
            }
        );
        self.publish().await;
    }

    /// Reads what changed in ZooKeeper; as controller, elects leaders and shrinks ISRs;
    /// creates the offsets topic when possible. Does not publish. False when ZooKeeper could
    /// not be read.
    async fn refresh(&mut self) -> bool {
        let Some(client) = self.client() else {
            return false;
        };
        if !self.read(&client).await {
            return false;
        }
        self.refresh_quotas(&client).await;
        self.controller_duties(&client).await;
        true
    }

    /// Moves the watch events already received into `dirty`, without waiting, so that a
    /// request deciding on the view (ElectLeaders, topic changes) sees every change the
    /// client has been told about. (A write that lost a race also marks its znode itself.)
    async fn drain_watch_events(&mut self) {
        if self.session_lost {
            // A watcher panics when polled after its session's terminal event.
            return;
        }
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let mut events = Vec::new();
        for w in [
            &mut s.watches.brokers,
            &mut s.watches.config,
            &mut s.watches.controller,
            &mut s.watches.quota_clients,
            &mut s.watches.quota_users,
        ] {
            while let Some(e) = futures_lite::future::poll_once(w.changed()).await {
                let terminal =
                    e.event_type == zk::EventType::Session && is_terminal_state(e.session_state);
                events.push(e);
                if terminal {
                    break;
                }
            }
        }
        for e in events {
            if e.event_type == zk::EventType::Session {
                if is_terminal_state(e.session_state) {
                    self.lease.revoke();
                    self.session_lost = true;
                    return;
                }
                s.rewatch = true;
            }
            self.dirty.note(&e);
        }
    }

    /// Brings the view up to date: everything when `dirty.all`, else only the znodes named
    /// since the last read. Notes what changed for the next snapshot and for `reconcile`.
    /// False when ZooKeeper could not be read; then the next read is a whole one.
    async fn read(&mut self, client: &zk::Client) -> bool {
        self.drain_watch_events().await;
        if self.session.as_ref().is_some_and(|s| s.rewatch) {
            match Watches::add(client).await {
                Ok(watches) => {
                    log::info!("ZooKeeper connection back within the session: watches added again");
                    if let Some(s) = self.session.as_mut() {
                        s.watches = watches;
                        s.rewatch = false;
                    }
                    self.dirty.all = true;
                }
                Err((path, e)) => {
                    self.dirty.all = true;
                    self.read_failed(&format!("watch {path}"), &e);
                    return false;
                }
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        self.quotas_due |= dirty.all || dirty.quotas;
        if dirty.all {
            match read_view(client).await {
                Ok(v) => {
                    self.view = v;
                    self.changed.all = true;
                    self.reconcile_all = true;
                    true
                }
                Err(e) => {
                    self.dirty.all = true;
                    self.read_failed("read", &e);
                    false
                }
            }
        } else if dirty.is_empty() {
            true
        } else {
            match read_dirty(client, &mut self.view, &dirty).await {
                Ok(out) => {
                    MetadataWork::add(&METADATA_WORK.znode_reads_incremental, out.znodes_read);
                    log::debug!(
                        "read {} znodes ({} topics changed, brokers changed: {})",
                        out.znodes_read,
                        out.topics.len(),
                        out.brokers_changed
                    );
                    self.reconcile_all |= out.brokers_changed;
                    self.reconcile_topics.extend(out.topics.iter().cloned());
                    self.changed.topics.extend(out.topics);
                    true
                }
                Err(e) => {
                    self.dirty.all = true;
                    self.read_failed("read", &e);
                    false
                }
            }
        }
    }

    /// What the view asks of this broker: becoming controller when there is none; as
    /// controller, elections and ISR removals (`reconcile`) and the offsets topic.
    async fn controller_duties(&mut self, client: &zk::Client) {
        let session_id = client.session_id().0;
        self.is_controller = self.view.controller_owner == session_id;
        if self.stopping {
            return;
        }
        if self.view.controller_id == NO_LEADER {
            self.try_become_controller(client).await;
        }
        if self.is_controller {
            self.reconcile(client).await;
            self.create_offsets_topic(client).await;
        } else {
            self.reconcile_topics.clear();
            self.reconcile_all = true;
        }
    }

    async fn try_become_controller(&mut self, client: &zk::Client) {
        let data = layout::encode_controller(self.local, now_ms());
        match client.create(layout::CONTROLLER, &data, &ephemeral()).await {
            Ok(_) => {}
            Err(zk::Error::NodeExists) => return,
            Err(e) => return self.failed("create /controller", &e),
        }
        match self.bump_controller_epoch(client).await {
            Ok(epoch) => {
                self.controller_epoch = epoch;
                self.is_controller = true;
                self.view.controller_id = self.local;
                self.view.controller_owner = client.session_id().0;
                self.view.controller_epoch = epoch;
                self.next_rebalance = tokio::time::Instant::now() + self.rebalance_interval();
                self.reconcile_all = true;
                log::info!("broker {} is the controller (epoch {epoch})", self.local);
                // The other brokers read `/controller_epoch` when `/controller` changes, and it
                // was created before the epoch moved: change it again so they see the new one.
                if let Err(e) = client.set_data(layout::CONTROLLER, &data, None).await {
                    self.failed("touch /controller", &e);
                }
            }
            Err(e) => {
                // Without a new epoch we must not act as controller; give the role back.
                self.failed("controller epoch", &e);
                let _ = client.delete(layout::CONTROLLER, None).await;
            }
        }
    }

    async fn bump_controller_epoch(&self, client: &zk::Client) -> Result<i32, zk::Error> {
        loop {
            match client.get_data(layout::CONTROLLER_EPOCH).await {
                Ok((data, stat)) => {
                    let next = layout::decode_controller_epoch(&data).unwrap_or(0) + 1;
                    let bytes = layout::encode_controller_epoch(next);
                    match client
                        .set_data(layout::CONTROLLER_EPOCH, &bytes, Some(stat.version))
                        .await
                    {
                        Ok(_) => return Ok(next),
                        Err(zk::Error::BadVersion) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(zk::Error::NoNode) => {
                    let bytes = layout::encode_controller_epoch(1);
                    match client
                        .create(layout::CONTROLLER_EPOCH, &bytes, &persistent())
                        .await
                    {
                        Ok(_) => return Ok(1),
                        Err(zk::Error::NodeExists) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn alive(&self) -> BTreeSet<i32> {
        self.view.brokers.keys().copied().collect()
    }

    fn writer_epoch(&self) -> i32 {
        if self.is_controller {
            self.controller_epoch
        } else {
            self.view.controller_epoch
        }
    }

    /// Adds the creation of a new partition's znode and its initial state (led by its first
    /// replica, every replica in sync, epoch 0) to `multi`.
    fn add_new_partition(
        &self,
        multi: &mut zk::MultiWriter,
        topic: &str,
        partition: i32,
        replicas: &[i32],
    ) -> Result<(), zk::Error> {
        let state = self.state_znode(&election::initial_state(replicas));
        multi.add_create(
            &layout::partition_path(topic, partition),
            &[],
            &persistent(),
        )?;
        multi.add_create(
            &layout::state_path(topic, partition),
            &layout::encode_state(&state),
            &persistent(),
        )
    }

    fn state_znode(&self, s: &PartitionState) -> StateZnode {
        StateZnode {
            leader: s.leader,
            leader_epoch: s.leader_epoch,
            isr: s.isr.clone(),
            controller_epoch: self.writer_epoch(),
        }
    }

    /// Writes `changes` with version checks (a create where the state znode is missing) and
    /// records the results in the view. Returns what became of each change, in order.
    async fn write_states(
        &mut self,
        client: &zk::Client,
        changes: Vec<(String, i32, PartitionState)>,
        why: &str,
    ) -> Vec<WriteOutcome> {
        enum Pending<A> {
            Sent(A),
            Done(Result<zk::Stat, zk::Error>),
        }
        let mut pending = Vec::with_capacity(changes.len());
        for (topic, p, s) in changes {
            let path = layout::state_path(&topic, p);
            let bytes = layout::encode_state(&self.state_znode(&s));
            let op = if s.zk_version < 0 {
                // A state znode missing (a creation cut short) is rare: create it, and its
                // parent if needed, in line.
                let parent = layout::partition_path(&topic, p);
                let _ = client.mkdir(&parent, &persistent()).await;
                let created = client.create(&path, &bytes, &persistent()).await;
                Pending::Done(created.map(|(stat, _)| stat))
            } else {
                Pending::Sent(client.set_data(&path, &bytes, Some(s.zk_version)))
            };
            pending.push((topic, p, s, op));
        }
        let mut conflicts = 0;
        let mut outcomes = Vec::with_capacity(pending.len());
        for (topic, p, s, op) in pending {
            let result = match op {
                Pending::Sent(f) => f.await,
                Pending::Done(r) => r,
            };
            match result {
                Ok(stat) => {
                    let old = self.view.topics.get(&topic).and_then(|t| t.state(p));
                    if old.as_ref().map(|o| o.leader) != Some(s.leader) {
                        log::info!(
                            "{topic}-{p}: leader {} -> {} (epoch {}), isr {:?} ({why})",
                            old.map_or(NO_LEADER, |o| o.leader),
                            s.leader,
                            s.leader_epoch,
                            s.isr
                        );
                    } else {
                        log::info!("{topic}-{p}: isr {:?} ({why})", s.isr);
                    }
                    let znode = self.state_znode(&s);
                    if let Some(t) = self.view.topics.get_mut(&topic) {
                        t.states.insert(p, Some((znode, stat.version)));
                        self.changed.topics.insert(topic);
                    }
                    outcomes.push(WriteOutcome::Written);
                }
                Err(zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode) => {
                    conflicts += 1;
                    self.dirty.states.insert((topic, p));
                    outcomes.push(WriteOutcome::Conflict);
                }
                Err(e) => {
                    self.failed(&format!("write {topic}-{p} state"), &e);
                    outcomes.push(WriteOutcome::Failed);
                }
            }
        }
        if conflicts > 0 {
            // Someone else changed these partitions: re-read soon and decide again.
            self.refresh_at = Some(tokio::time::Instant::now() + DEBOUNCE);
        }
        outcomes
    }

    /// Controller duty: every partition led by a live ISR member, ISRs without dead brokers.
    /// Looks at the topics read since the last time, or at all of them when brokers changed,
    /// after a whole read, or when an earlier write did not go through (retried here on the
    /// `CONTROLLER_CHECK_EVERY` beat).
    async fn reconcile(&mut self, client: &zk::Client) {
        let alive = self.alive();
        let all = std::mem::take(&mut self.reconcile_all);
        let scope = std::mem::take(&mut self.reconcile_topics);
        let mut changes = Vec::new();
        let topics: Vec<(&String, &TopicView)> = if all {
            self.view.topics.iter().collect()
        } else {
            scope
                .iter()
                .filter_map(|n| self.view.topics.get_key_value(n))
                .collect()
        };
        for (name, t) in topics {
            let unclean = self.topic_config(name, &t.config).unclean_leader_election;
            for (&p, replicas) in &t.assignment.partitions {
                match t.state(p) {
                    Some(s) => {
                        if let Some(next) = election::reconcile(&s, &alive, unclean) {
                            changes.push((name.clone(), p, next));
                        }
                    }
                    None => {
                        changes.push((name.clone(), p, election::missing_state(replicas, &alive)))
                    }
                }
            }
        }
        if !changes.is_empty() {
            let outcomes = self.write_states(client, changes, "controller").await;
            if outcomes.iter().any(|o| *o != WriteOutcome::Written) {
                self.reconcile_all = true;
            }
        }
    }

    fn rebalance_interval(&self) -> Duration {
        Duration::from_millis(self.config.leader_imbalance_check_interval_ms.max(1000))
    }

    /// Every partition with a state, keyed by topic and partition.
    fn partition_states(&self) -> Vec<((String, i32), PartitionState)> {
        self.view
            .topics
            .iter()
            .flat_map(|(name, t)| {
                t.assignment
                    .partitions
                    .keys()
                    .filter_map(move |&p| Some(((name.clone(), p), t.state(p)?)))
            })
            .collect()
    }

    /// Controller duty (`auto.leader.rebalance.enable`): gives leadership back to preferred
    /// replicas on brokers over `leader.imbalance.per.broker.percentage`.
    async fn auto_rebalance(&mut self) {
        if !self.refresh().await || !self.is_controller || self.stopping {
            return;
        }
        let Some(client) = self.client() else {
            return;
        };
        let moves = election::rebalance(
            &self.partition_states(),
            &self.alive(),
            self.config.leader_imbalance_per_broker_percentage,
        );
        if moves.is_empty() {
            return;
        }
        log::info!(
            "leader rebalance: {} partition(s) back to their preferred replica",
            moves.len()
        );
        let changes = moves.into_iter().map(|((t, p), s)| (t, p, s)).collect();
        self.write_states(&client, changes, "preferred replica")
            .await;
        self.publish().await;
    }

    /// ElectLeaders: preferred (or unclean) election for `asked` partitions, or for every
    /// partition when `None` (then only partitions where an election was needed are reported).
    /// Any broker's control thread may do it: every write is version-checked, and a lost race
    /// is re-read and decided again.
    async fn elect_leaders(
        &mut self,
        unclean: bool,
        asked: Option<Vec<(Arc<str>, i32)>>,
    ) -> Vec<(Arc<str>, i32, i16)> {
        let all = asked.is_none();
        let mut results: BTreeMap<(Arc<str>, i32), i16> = BTreeMap::new();
        let mut pending: Option<Vec<(Arc<str>, i32)>> = asked.map(|mut a| {
            a.sort();
            a.dedup();
            a
        });
        for _ in 0..CAS_ATTEMPTS {
            if !self.refresh().await {
                break;
            }
            let Some(client) = self.client() else {
                break;
            };
            let wanted: Vec<(Arc<str>, i32)> = match pending.take() {
                Some(p) => p,
                None => self
                    .partition_states()
                    .into_iter()
                    .map(|((t, p), _)| (Arc::from(t.as_str()), p))
                    .collect(),
            };
            let alive = self.alive();
            let mut changes = Vec::new();
            for (topic, p) in wanted {
                let state = self.view.topics.get(&*topic).and_then(|t| t.state(p));
                let decided = match state {
                    None => Err(errors::UNKNOWN_TOPIC_OR_PARTITION),
                    Some(s) if unclean => election::unclean(&s, &alive),
                    Some(s) => election::preferred(&s, &alive),
                };
                match decided {
                    Ok(next) => changes.push((topic, p, next)),
                    Err(code) => {
                        results.insert((topic, p), code);
                    }
                }
            }
            if changes.is_empty() {
                break;
            }
            let keys: Vec<(Arc<str>, i32)> =
                changes.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
            let writes = changes
                .into_iter()
                .map(|(t, p, s)| (t.to_string(), p, s))
                .collect();
            let why = if unclean {
                "unclean election"
            } else {
                "preferred replica"
            };
            let outcomes = self.write_states(&client, writes, why).await;
            let mut retry = Vec::new();
            for (key, outcome) in keys.into_iter().zip(outcomes) {
                match outcome {
                    WriteOutcome::Written => {
                        results.insert(key, errors::NONE);
                    }
                    WriteOutcome::Conflict => retry.push(key),
                    WriteOutcome::Failed => {
                        results.insert(key, errors::REQUEST_TIMED_OUT);
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            pending = Some(retry);
        }
        for key in pending.into_iter().flatten() {
            results.entry(key).or_insert(errors::REQUEST_TIMED_OUT);
        }
        self.publish().await;
        results
            .into_iter()
            .filter(|(_, code)| !(all && *code == errors::ELECTION_NOT_NEEDED))
            .map(|((t, p), code)| (t, p, code))
            .collect()
    }

    fn topic_config(&self, name: &str, overrides: &BTreeMap<String, String>) -> TopicConfig {
        TopicConfig::resolve(&self.config, overrides).unwrap_or_else(|e| {
            log::debug!("topic {name}: {e}");
            self.config.topic_defaults.clone()
        })
    }

    async fn create_offsets_topic(&mut self, client: &zk::Client) {
        if self.view.topics.contains_key(CONSUMER_OFFSETS_TOPIC) {
            return;
        }
        let rf = self.config.offsets_topic_replication_factor;
        if self.view.brokers.len() < rf.max(1) as usize {
            return;
        }
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert("segment.bytes".to_string(), (100 * 1024 * 1024).to_string());
        let id = crate::metadata::random_bytes::<16>();
        let partitions = self.config.offsets_topic_num_partitions;
        match self
            .create_topic(client, CONSUMER_OFFSETS_TOPIC, id, partitions, rf, &configs)
            .await
        {
            Ok(()) => log::info!(
                "created {CONSUMER_OFFSETS_TOPIC} ({partitions} partitions, replication factor {rf})"
            ),
            Err((errors::TOPIC_ALREADY_EXISTS, _)) => {}
            Err((code, msg)) => log::error!("cannot create {CONSUMER_OFFSETS_TOPIC}: error {code}: {msg}"),
        }
        self.dirty.topics.insert(CONSUMER_OFFSETS_TOPIC.to_string());
        self.read(client).await;
    }

    /// Creates a topic in one multi-op so that it appears whole: assignment, partition states,
    /// config. Placement over the live brokers, sorted.
    async fn create_topic(
        &mut self,
        client: &zk::Client,
        name: &str,
        id: [u8; 16],
        partitions: i32,
        replication_factor: i16,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(), (i16, String)> {
        let sorted: Vec<i32> = self.view.brokers.keys().copied().collect();
        if replication_factor < 1 || replication_factor as usize > sorted.len() {
            return Err((
                errors::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {replication_factor} needs as many live brokers; {} \
                     are alive",
                    sorted.len()
                ),
            ));
        }
        let placed = election::place(&sorted, 0, partitions, replication_factor as usize);
        let assignment = TopicAssignment {
            partitions: placed
                .iter()
                .cloned()
                .enumerate()
                .map(|(p, r)| (p as i32, r))
                .collect(),
            topic_id: Some(id),
        };
        let config_exists = client
            .check_stat(&layout::topic_config_path(name))
            .await
            .map_err(|e| self.zk_error("check topic config", e))?
            .is_some();
        let mut multi = client.new_multi_writer();
        let ops = (|| -> Result<(), zk::Error> {
            multi.add_create(
                &layout::topic_path(name),
                &layout::encode_topic(&assignment),
                &persistent(),
            )?;
            multi.add_create(&layout::partitions_path(name), &[], &persistent())?;
            for (p, replicas) in placed.iter().enumerate() {
                self.add_new_partition(&mut multi, name, p as i32, replicas)?;
            }
            let config = layout::encode_topic_config(overrides);
            let config_path = layout::topic_config_path(name);
            if config_exists {
                multi.add_set_data(&config_path, &config, None)
            } else {
                multi.add_create(&config_path, &config, &persistent())
            }
        })();
        ops.map_err(|e| (errors::INVALID_REQUEST, format!("topic {name}: {e}")))?;
        // Read back whatever happened (the watch events name the same znodes).
        self.dirty.topics.insert(name.to_string());
        match multi.commit().await {
            Ok(_) => Ok(()),
            Err(zk::MultiWriteError::OperationFailed {
                index: 0,
                source: zk::Error::NodeExists,
            }) => Err((
                errors::TOPIC_ALREADY_EXISTS,
                format!("topic '{name}' already exists"),
            )),
            Err(e) => Err(self.zk_error("create topic", e.into())),
        }
    }

    fn zk_error(&mut self, what: &str, e: zk::Error) -> (i16, String) {
        self.failed(what, &e);
        (errors::REQUEST_TIMED_OUT, format!("ZooKeeper {what}: {e}"))
    }

    /// Deletes a topic's znodes, deepest first, in one multi-op.
    async fn delete_topic(&mut self, client: &zk::Client, name: &str) -> Result<(), (i16, String)> {
        self.dirty.topics.insert(name.to_string());
        for _ in 0..CAS_ATTEMPTS {
            let partitions = match client.list_children(&layout::partitions_path(name)).await {
                Ok(c) => c,
                Err(zk::Error::NoNode) => Vec::new(),
                Err(e) => return Err(self.zk_error("list partitions", e)),
            };
            let listings: Vec<_> = partitions
                .iter()
                .map(|p| {
                    let path = format!("{}/{p}", layout::partitions_path(name));
                    let children = client.list_children(&path);
                    (path, children)
                })
                .collect();
            let mut deletes = Vec::new();
            for (path, children) in listings {
                match children.await {
                    Ok(c) => deletes.extend(c.into_iter().map(|c| format!("{path}/{c}"))),
                    Err(zk::Error::NoNode) => continue,
                    Err(e) => return Err(self.zk_error("list partition", e)),
                }
                deletes.push(path);
            }
            if !partitions.is_empty()
                || client
                    .check_stat(&layout::partitions_path(name))
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            {
                deletes.push(layout::partitions_path(name));
            }
            let topic_exists = matches!(
                client.check_stat(&layout::topic_path(name)).await,
                Ok(Some(_))
            );
            if topic_exists {
                deletes.push(layout::topic_path(name));
            }
            if matches!(
                client.check_stat(&layout::topic_config_path(name)).await,
                Ok(Some(_))
            ) {
                deletes.push(layout::topic_config_path(name));
            }
            if deletes.is_empty() {
                return Ok(());
            }
            let mut multi = client.new_multi_writer();
            for d in &deletes {
                multi
                    .add_delete(d, None)
                    .map_err(|e| (errors::INVALID_REQUEST, format!("delete {d}: {e}")))?;
            }
            match multi.commit().await {
                Ok(_) => return Ok(()),
                // The tree changed while we listed it: list again.
                Err(zk::MultiWriteError::OperationFailed {
                    source: zk::Error::NoNode | zk::Error::NotEmpty,
                    ..
                }) => continue,
                Err(e) => return Err(self.zk_error("delete topic", e.into())),
            }
        }
        Err((
            errors::REQUEST_TIMED_OUT,
            format!("topic {name} kept changing while being deleted"),
        ))
    }

    /// Adds partitions up to `target`, placed by the same rule from their own index.
    async fn grow_topic(
        &mut self,
        client: &zk::Client,
        name: &str,
        target: i32,
    ) -> Result<(), (i16, String)> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(t) = self.view.topics.get(name).cloned() else {
                return Err((
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {name} does not exist"),
                ));
            };
            let current = t.assignment.partition_count();
            if target <= current {
                return Ok(());
            }
            let rf = t.assignment.partitions.get(&0).map_or(1, |r| r.len());
            let sorted: Vec<i32> = self.view.brokers.keys().copied().collect();
            if rf > sorted.len() {
                return Err((
                    errors::INVALID_REPLICATION_FACTOR,
                    format!(
                        "replication factor {rf} needs as many live brokers; {} are alive",
                        sorted.len()
                    ),
                ));
            }
            let placed = election::place(&sorted, current, target - current, rf);
            let mut assignment = t.assignment.clone();
            let mut multi = client.new_multi_writer();
            let ops = (|| -> Result<(), zk::Error> {
                for (k, replicas) in placed.iter().enumerate() {
                    let p = current + k as i32;
                    assignment.partitions.insert(p, replicas.clone());
                    self.add_new_partition(&mut multi, name, p, replicas)?;
                }
                multi.add_set_data(
                    &layout::topic_path(name),
                    &layout::encode_topic(&assignment),
                    Some(t.assignment_version),
                )
            })();
            ops.map_err(|e| (errors::INVALID_REQUEST, format!("topic {name}: {e}")))?;
            self.dirty.topics.insert(name.to_string());
            match multi.commit().await {
                Ok(_) => return Ok(()),
                Err(zk::MultiWriteError::OperationFailed {
                    source: zk::Error::BadVersion | zk::Error::NodeExists,
                    ..
                }) => {
                    if !self.read(client).await {
                        return Err((errors::REQUEST_TIMED_OUT, "cannot read ZooKeeper".into()));
                    }
                }
                Err(e) => return Err(self.zk_error("add partitions", e.into())),
            }
        }
        Err((
            errors::REQUEST_TIMED_OUT,
            format!("topic {name} kept changing while adding partitions"),
        ))
    }

    async fn set_topic_config(
        &mut self,
        client: &zk::Client,
        name: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(), (i16, String)> {
        let path = layout::topic_config_path(name);
        let bytes = layout::encode_topic_config(overrides);
        self.dirty.configs.insert(name.to_string());
        match client.set_data(&path, &bytes, None).await {
            Ok(_) => Ok(()),
            Err(zk::Error::NoNode) => match client.create(&path, &bytes, &persistent()).await {
                Ok(_) | Err(zk::Error::NodeExists) => client
                    .set_data(&path, &bytes, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.zk_error("set topic config", e)),
                Err(e) => Err(self.zk_error("create topic config", e)),
            },
            Err(e) => Err(self.zk_error("set topic config", e)),
        }
    }

    /// Reads the quota tree again if a watch event, a whole read or a write of ours asked for
    /// it, and installs it on the shards when it changed. A failed read is retried like any
    /// other (`READ_RETRY`).
    async fn refresh_quotas(&mut self, client: &zk::Client) {
        if !self.quotas_due {
            return;
        }
        match read_quotas(client).await {
            Ok((table, znodes)) => {
                self.quotas_due = false;
                MetadataWork::add(&METADATA_WORK.znode_reads_incremental, znodes);
                if *self.quotas != table {
                    log::info!("client quotas: {} entities", table.entries.len());
                    self.quotas = Arc::new(table);
                    deliver_quotas(&self.inboxes, self.quotas.clone(), PUBLISH_WAIT_MAX).await;
                }
            }
            Err(e) => {
                self.dirty.quotas = true;
                self.read_failed("read client quotas", &e);
            }
        }
    }

    /// AlterClientQuotas: for each entity, reads its znode, applies the operations and writes
    /// it back (version-checked, retried on a lost race), creating it and its parents when
    /// new; an entity left without quotas keeps an empty config, as Kafka leaves it. Then the
    /// quota tree is read back and installed on every shard before the reply.
    async fn alter_client_quotas(
        &mut self,
        changes: Vec<(QuotaEntity, Vec<QuotaOp>)>,
    ) -> Result<(), (i16, String)> {
        let Some(client) = self.client() else {
            return Err((
                errors::REQUEST_TIMED_OUT,
                "no ZooKeeper session; try again".into(),
            ));
        };
        for (entity, ops) in &changes {
            let path = entity.zk_path();
            let mut attempts = 0;
            loop {
                attempts += 1;
                let (current, version) = match client.get_data(&path).await {
                    Ok((data, stat)) => {
                        let config = if data.is_empty() {
                            BTreeMap::new()
                        } else {
                            layout::decode_topic_config(&data).unwrap_or_default()
                        };
                        (config, Some(stat.version))
                    }
                    Err(zk::Error::NoNode) => (BTreeMap::new(), None),
                    Err(e) => return Err(self.zk_error("read client quota", e)),
                };
                let mut values = quota::values_from_config(entity, &current);
                quota::apply_ops(&mut values, ops);
                // Keys this broker does not know (another tool's) are kept as they were.
                let mut config: BTreeMap<String, String> = current
                    .into_iter()
                    .filter(|(k, _)| quota::QuotaKind::from_key(k).is_none())
                    .collect();
                config.extend(quota::config_from_values(&values));
                let bytes = layout::encode_topic_config(&config);
                let written = match version {
                    Some(v) => client.set_data(&path, &bytes, Some(v)).await.map(|_| ()),
                    None => {
                        if let Some((parent, _)) = path.rsplit_once('/') {
                            if let Err(e) = client.mkdir(parent, &persistent()).await {
                                if e != zk::Error::NodeExists {
                                    return Err(self.zk_error("create client quota parent", e));
                                }
                            }
                        }
                        client
                            .create(&path, &bytes, &persistent())
                            .await
                            .map(|_| ())
                    }
                };
                match written {
                    Ok(()) => break,
                    Err(zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode)
                        if attempts < 5 =>
                    {
                        continue
                    }
                    Err(e) => return Err(self.zk_error("write client quota", e)),
                }
            }
        }
        self.quotas_due = true;
        self.refresh_quotas(&client).await;
        if self.quotas_due {
            return Err((
                errors::REQUEST_TIMED_OUT,
                "client quotas written, but reading them back failed; they apply once read".into(),
            ));
        }
        Ok(())
    }

    async fn apply_topics(
        &mut self,
        before: BTreeMap<Arc<str>, Arc<TopicMeta>>,
        after: BTreeMap<Arc<str>, Arc<TopicMeta>>,
    ) -> Result<(), (i16, String)> {
        let Some(client) = self.client() else {
            return Err((
                errors::REQUEST_TIMED_OUT,
                "not connected to ZooKeeper".into(),
            ));
        };
        // Decide on the freshest state: live brokers for placement, current assignments.
        if !self.read(&client).await {
            return Err((
                errors::REQUEST_TIMED_OUT,
                "cannot read the cluster state from ZooKeeper".into(),
            ));
        }
        let mut first_error = None;
        let mut note = |r: Result<(), (i16, String)>| {
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        };
        for (name, old) in &before {
            let gone = after.get(name).is_none_or(|new| new.id != old.id);
            if gone {
                note(self.delete_topic(&client, name).await);
            }
        }
        if before
            .keys()
            .any(|n| after.get(n).is_none_or(|t| t.id != before[n].id))
            && !self.read(&client).await
        {
            note(Err((
                errors::REQUEST_TIMED_OUT,
                "cannot read the cluster state from ZooKeeper".into(),
            )));
        }
        for (name, new) in &after {
            match before.get(name).filter(|old| old.id == new.id) {
                None => {
                    let rf = if new.replication_factor > 0 {
                        new.replication_factor
                    } else {
                        self.config.default_replication_factor
                    };
                    let r = self
                        .create_topic(&client, name, new.id, new.partitions, rf, &new.overrides)
                        .await;
                    if r.is_ok() {
                        log::info!(
                            "created topic {name} ({} partitions, replication factor {rf})",
                            new.partitions
                        );
                    }
                    note(r);
                }
                Some(old) => {
                    if new.partitions > old.partitions {
                        note(self.grow_topic(&client, name, new.partitions).await);
                    }
                    if new.overrides != old.overrides {
                        note(self.set_topic_config(&client, name, &new.overrides).await);
                    }
                }
            }
        }
        self.refresh().await;
        self.publish().await;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn alter_isr(
        &mut self,
        topic: &str,
        partition: i32,
        leader_epoch: i32,
        zk_version: i32,
        isr: Vec<i32>,
    ) -> i16 {
        let Some(client) = self.client() else {
            return errors::NOT_LEADER_OR_FOLLOWER;
        };
        let path = layout::state_path(topic, partition);
        let current = match client.get_data(&path).await {
            Ok((data, stat)) => match layout::decode_state(&data) {
                Ok(s) => (s, stat.version),
                Err(e) => {
                    log::warn!("{topic}-{partition}: {e}");
                    return errors::UNKNOWN_SERVER_ERROR;
                }
            },
            Err(zk::Error::NoNode) => return errors::UNKNOWN_TOPIC_OR_PARTITION,
            Err(e) => return self.zk_error("read state", e).0,
        };
        let replicas = self
            .view
            .topics
            .get(topic)
            .and_then(|t| t.assignment.partitions.get(&partition))
            .cloned()
            .unwrap_or_default();
        let (state, version) = current;
        if state.leader != self.local || state.leader_epoch != leader_epoch || self.fenced {
            self.note_state(topic, partition, state, version).await;
            return errors::NOT_LEADER_OR_FOLLOWER;
        }
        if version != zk_version {
            // The ISR changed under the leader (controller removed a dead broker, a follower
            // left in a controlled shutdown): it must decide again on the new state.
            self.note_state(topic, partition, state, version).await;
            return errors::REQUEST_TIMED_OUT;
        }
        if !isr.contains(&self.local) || isr.iter().any(|b| !replicas.contains(b)) {
            return errors::INVALID_REQUEST;
        }
        // Only a registered broker may join the ISR: the controller would remove a dead one
        // at once, and the two would undo each other forever (Kafka: INELIGIBLE_REPLICA).
        if let Some(dead) = isr
            .iter()
            .find(|b| !state.isr.contains(b) && !self.view.brokers.contains_key(b))
        {
            log::info!("{topic}-{partition}: broker {dead} is not alive; it cannot join the ISR");
            return errors::INVALID_REQUEST;
        }
        let next = StateZnode {
            isr,
            controller_epoch: self.writer_epoch(),
            ..state
        };
        match client
            .set_data(&path, &layout::encode_state(&next), Some(zk_version))
            .await
        {
            Ok(stat) => {
                log::info!("{topic}-{partition}: isr {:?} (leader)", next.isr);
                self.note_state(topic, partition, next, stat.version).await;
                errors::NONE
            }
            Err(zk::Error::BadVersion) => {
                self.dirty.states.insert((topic.to_string(), partition));
                self.refresh_at = Some(tokio::time::Instant::now());
                errors::REQUEST_TIMED_OUT
            }
            Err(e) => self.zk_error("write state", e).0,
        }
    }

    /// Records a partition state just read or written and publishes it.
    async fn note_state(&mut self, topic: &str, partition: i32, state: StateZnode, version: i32) {
        if let Some(t) = self.view.topics.get_mut(topic) {
            t.states.insert(partition, Some((state, version)));
            self.changed.topics.insert(topic.to_string());
        }
        self.publish().await;
    }

    async fn producer_id_block(&mut self, count: i64) -> Result<i64, String> {
        let Some(client) = self.client() else {
            return Err("not connected to ZooKeeper".into());
        };
        let count = count.max(1);
        loop {
            let (start, version) = match client.get_data(layout::LATEST_PRODUCER_ID_BLOCK).await {
                Ok((data, stat)) => {
                    let last =
                        layout::decode_producer_id_block(&data).map_err(|e| e.to_string())?;
                    (last.block_end + 1, Some(stat.version))
                }
                Err(zk::Error::NoNode) => (0, None),
                Err(e) => return Err(self.zk_error("read producer id block", e).1),
            };
            let block = layout::ProducerIdBlock {
                broker: self.local,
                block_start: start,
                block_end: start + count - 1,
            };
            let bytes = layout::encode_producer_id_block(&block);
            let written = match version {
                Some(v) => client
                    .set_data(layout::LATEST_PRODUCER_ID_BLOCK, &bytes, Some(v))
                    .await
                    .map(|_| ()),
                None => client
                    .create(layout::LATEST_PRODUCER_ID_BLOCK, &bytes, &persistent())
                    .await
                    .map(|_| ()),
            };
            match written {
                Ok(()) => return Ok(start),
                Err(zk::Error::BadVersion | zk::Error::NodeExists) => continue,
                Err(e) => return Err(self.zk_error("write producer id block", e).1),
            }
        }
    }

    async fn handle(&mut self, request: ControlRequest) {
        match request {
            ControlRequest::ApplyTopics {
                before,
                after,
                reply,
            } => {
                let r = self.apply_topics(before, after).await;
                let _ = reply.send(r);
            }
            ControlRequest::AlterIsr {
                topic,
                partition,
                leader_epoch,
                zk_version,
                isr,
                reply,
            } => {
                let code = self
                    .alter_isr(&topic, partition, leader_epoch, zk_version, isr)
                    .await;
                let _ = reply.send(code);
            }
            ControlRequest::ProducerIdBlock { count, reply } => {
                let r = self.producer_id_block(count).await;
                let _ = reply.send(r);
            }
            ControlRequest::ElectLeaders {
                unclean,
                partitions,
                reply,
            } => {
                let r = self.elect_leaders(unclean, partitions).await;
                let _ = reply.send(r);
            }
            ControlRequest::AlterClientQuotas { changes, reply } => {
                let r = self.alter_client_quotas(changes).await;
                let _ = reply.send(r);
            }
        }
    }

    /// First signal: hand leaderships over (if enabled), then let the shards drain.
    async fn begin_stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        if self.config.controlled_shutdown_enable && self.session.is_some() {
            log::info!("controlled shutdown: moving leaderships to other in-sync replicas");
            if tokio::time::timeout(CONTROLLED_SHUTDOWN_MAX, self.controlled_shutdown())
                .await
                .is_err()
            {
                log::warn!("controlled shutdown did not finish within {CONTROLLED_SHUTDOWN_MAX:?}; stopping anyway");
            }
        }
        // Dropping the sender is what the shards wait for.
        self.shards_shutdown.take();
    }

    async fn controlled_shutdown(&mut self) {
        let Some(client) = self.client() else {
            return;
        };
        for _ in 0..CAS_ATTEMPTS {
            // The view is current but for pending events (and the races lost last round).
            if !self.read(&client).await {
                return;
            }
            let alive = self.alive();
            let local = self.local;
            let changes: Vec<_> = self
                .view
                .topics
                .iter()
                .flat_map(|(name, t)| {
                    let alive = &alive;
                    t.assignment.partitions.keys().filter_map(move |&p| {
                        let s = t.state(p)?;
                        election::shutdown_move(&s, local, alive).map(|n| (name.clone(), p, n))
                    })
                })
                .collect();
            if changes.is_empty()
                || !self
                    .write_states(&client, changes, "controlled shutdown")
                    .await
                    .contains(&WriteOutcome::Conflict)
            {
                break;
            }
            if self.session_lost {
                return;
            }
        }
        if self.view.controller_owner == client.session_id().0 {
            match client.delete(layout::CONTROLLER, None).await {
                Ok(()) | Err(zk::Error::NoNode) => log::info!("resigned as controller"),
                Err(e) => self.failed("resign controller", &e),
            }
        }
        self.is_controller = false;
        self.publish().await;
    }

    /// After the shards stopped: remove our ephemeral znodes and close the session.
    async fn close_session(&mut self) {
        self.lease.revoke();
        let Some(s) = self.session.take() else {
            return;
        };
        s.keeper.abort();
        // Deleted explicitly: the session close runs in a background task that the end of this
        // runtime could cut short, and the others should see us gone at once.
        if self.view.controller_owner == s.client.session_id().0 {
            let _ = s.client.delete(layout::CONTROLLER, None).await;
        }
        match s
            .client
            .delete(&layout::broker_path(self.local), None)
            .await
        {
            Ok(()) | Err(zk::Error::NoNode) => log::info!("unregistered broker {}", self.local),
            Err(e) => log::warn!("cannot unregister broker {}: {e}", self.local),
        }
        drop(s);
        // Let the session task send its close request before the runtime goes away.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Topic `name` as shards see it, from the view; `None` when it has no partitions (or is
    /// not in the view).
    fn topic_meta(&mut self, name: &str) -> Option<Arc<TopicMeta>> {
        let t = self.view.topics.get(name)?;
        let n = t.assignment.partition_count();
        if n == 0 {
            return None;
        }
        let config = match TopicConfig::resolve(&self.config, &t.config) {
            Ok(c) => c,
            Err(e) => {
                if self.warned_configs.insert(name.to_string()) {
                    log::warn!("topic {name}: bad config in ZooKeeper ({e}); using defaults");
                }
                self.config.topic_defaults.clone()
            }
        };
        let states = (0..n)
            .map(|p| {
                let mut s = t.state(p).unwrap_or_else(|| PartitionState {
                    replicas: t.assignment.partitions.get(&p).cloned().unwrap_or_default(),
                    leader: NO_LEADER,
                    leader_epoch: 0,
                    isr: Vec::new(),
                    zk_version: -1,
                });
                if self.fenced && s.leader == self.local {
                    s.leader = NO_LEADER;
                }
                s
            })
            .collect::<Vec<_>>();
        let name: Arc<str> = name.into();
        Some(Arc::new(TopicMeta {
            name: name.clone(),
            id: t
                .assignment
                .topic_id
                .unwrap_or_else(|| derived_topic_id(&name)),
            partitions: n,
            replication_factor: states[0].replicas.len() as i16,
            overrides: t.config.clone(),
            config,
            states,
        }))
    }

    /// The next snapshot of the view (version one past the last) and what changed since the
    /// last one (`None` for the first). Only the topics changed since then are rebuilt; every
    /// topic when the view was read whole or the fencing changed (it hides our leaderships).
    fn next_snapshot(&mut self) -> (MetadataSnapshot, Option<MetadataDelta>) {
        let changed = std::mem::take(&mut self.changed);
        let whole = changed.all || self.fenced != self.last_fenced;
        let last = self.last.clone();
        let (mut topics, names): (BTreeMap<Arc<str>, Arc<TopicMeta>>, Vec<String>) = match &last {
            Some(last) if !whole => (last.topics.clone(), changed.topics.into_iter().collect()),
            _ => (BTreeMap::new(), self.view.topics.keys().cloned().collect()),
        };
        let mut candidates = BTreeSet::new();
        for name in names {
            match self.topic_meta(&name) {
                Some(t) => {
                    topics.insert(t.name.clone(), t);
                }
                None => {
                    topics.remove(name.as_str());
                }
            }
            candidates.insert(Arc::<str>::from(name.as_str()));
        }
        let mut next = MetadataSnapshot {
            version: self.version + 1,
            cluster_id: self.cluster_id.clone(),
            topics,
            brokers: self.view.brokers.clone(),
            controller_id: self.view.controller_id,
            local_broker: self.local,
            cluster_mode: true,
        };
        let delta =
            last.map(|last| diff_snapshots(&last, &mut next, (!whole).then_some(&candidates)));
        (next, delta)
    }

    /// Publishes the current view to every shard if it differs from the last one, with what
    /// changed, and waits until they applied it.
    async fn publish(&mut self) {
        let (next, delta) = self.next_snapshot();
        if delta.as_ref().is_some_and(|d| d.is_empty()) {
            self.last_fenced = self.fenced;
            return;
        }
        if let Some(d) = &delta {
            log::debug!(
                "metadata version {}: {} topics, {} partitions changed",
                next.version,
                d.topics.len(),
                d.partitions.len()
            );
        }
        self.version = next.version;
        self.last_fenced = self.fenced;
        crate::metrics::STATUS.published(next.version);
        MetadataWork::add(&METADATA_WORK.snapshots_published, 1);
        let snapshot = Arc::new(next);
        self.last = Some(snapshot.clone());
        // Once the shards are draining, waiting for them only delays the exit.
        let wait = if self.shards_shutdown.is_some() {
            PUBLISH_WAIT_MAX
        } else {
            Duration::ZERO
        };
        deliver(&self.inboxes, snapshot, delta.map(Arc::new), wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: zk::EventType, path: &str) -> zk::WatchedEvent {
        zk::WatchedEvent::new(event_type, path)
    }

    #[test]
    fn watch_events_name_the_znodes_to_read_again() {
        let mut d = Dirty::default();
        assert!(d.is_empty());
        d.note(&event(
            zk::EventType::NodeDataChanged,
            "/brokers/topics/orders/partitions/7/state",
        ));
        d.note(&event(zk::EventType::NodeDeleted, "/brokers/ids/3"));
        d.note(&event(zk::EventType::NodeCreated, "/brokers/topics/new"));
        d.note(&event(
            zk::EventType::NodeDataChanged,
            "/config/topics/orders",
        ));
        d.note(&event(zk::EventType::NodeCreated, "/controller"));
        // Parents and znodes no snapshot uses: nothing to read.
        for ignored in [
            "/brokers",
            "/brokers/ids",
            "/brokers/topics",
            "/brokers/topics/new/partitions",
            "/brokers/topics/new/partitions/0",
            "/brokers/ids/not-a-number",
            "/brokers/topics/orders/partitions/x/state",
            "/config/topics",
            "/brokers/seqid",
        ] {
            let before = format!("{d:?}");
            d.note(&event(zk::EventType::NodeCreated, ignored));
            assert_eq!(format!("{d:?}"), before, "{ignored}");
        }
        assert_eq!(
            d,
            Dirty {
                all: false,
                controller: true,
                brokers: [3].into(),
                topics: ["new".to_string()].into(),
                configs: ["orders".to_string()].into(),
                states: [("orders".to_string(), 7)].into(),
                quotas: false,
            }
        );
        // Any client quota znode marks the quota tree.
        for path in ["/config/clients/app", "/config/users/u/clients/<default>"] {
            let mut d = Dirty::default();
            d.note(&event(zk::EventType::NodeDataChanged, path));
            assert!(d.quotas && !d.is_empty(), "{path}");
        }
        // A session event (reconnected): events may have been lost, read everything.
        let mut d = Dirty::default();
        d.note(&zk::WatchedEvent::new_session(
            zk::SessionState::SyncConnected,
        ));
        assert!(d.all && !d.is_empty());
    }
}
