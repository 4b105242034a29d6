//! One shard: the state a glommio executor owns (its partitions, its copy of the metadata
//! snapshot) and the way other shards reach it.
//!
//! Cross-shard calls are closures: `invoke_on(target, f)` sends `f` to the target shard's inbox,
//! where it runs with that shard's `Rc<Shard>` and sends its result back. A request handler sends
//! at most one such call per owning shard per request. Everything in `Shard` is `!Send` and stays
//! on its thread; only the closures and their results cross.

pub mod admission;
pub mod cleaner;
pub mod report;
pub mod scatter;
pub mod topics;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::base::errors;
use crate::base::ids::{BrokerId, PartitionId};
use crate::base::limits::PARTITION_OPENS_IN_FLIGHT;
use crate::cluster::control_api::{ControlHandle, ControlRequest, Lease};
use crate::cluster::metadata::{
    MetadataDelta, MetadataSnapshot, PartitionState, TopicMeta, TopicRegistry,
    CONSUMER_OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC,
};
use crate::config::BrokerConfig;
use crate::groups::coordinator::GroupCoordinator;
use crate::groups::txn::{MarkerWriter, TxnCoordinator};
use crate::partition::{Partition, Transition};
use crate::runtime::shard_table::{shard_for, ShardId};

/// A unit of work sent to another shard.
pub type ShardTask = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Process-wide counters (relaxed atomics: statistics, not synchronisation).
#[derive(Default)]
pub struct Counters {
    pub fetch_bytes_sendfile: AtomicU64,
    pub fetch_bytes_copied: AtomicU64,
    /// Fetch bytes read through the ring because they were not in the page cache.
    pub fetch_bytes_cold: AtomicU64,
    pub produce_bytes: AtomicU64,
    pub requests: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// What every shard is started with; shared read-only across shards.
pub struct ShardSetup {
    pub config: Arc<BrokerConfig>,
    pub inboxes: Vec<flume::Sender<ShardTask>>,
    pub initial: Arc<MetadataSnapshot>,
    pub clean_start: bool,
    pub counters: Arc<Counters>,
    /// Set by the signal thread; each shard also gets a message on its shutdown channel.
    pub shutdown: flume::Receiver<()>,
    /// The control thread (cluster mode only).
    pub control: Option<ControlHandle>,
    /// Leadership lease: leaders accept writes only while it is valid.
    pub lease: Arc<Lease>,
    /// Client quotas at start: standalone from `<data>/__meta/quotas.json`; in cluster mode
    /// empty until the control thread delivers ZooKeeper's.
    pub quotas: Arc<crate::cluster::quota::QuotaTable>,
    /// Client quota measurements, shared by every shard.
    pub quota_sensors: Arc<crate::cluster::quota::QuotaSensors>,
    /// Open client connections of the whole broker, against `max.connections`.
    pub connections: Arc<admission::ConnectionLimiter>,
    /// Starts the fetch loop that copies from leader broker `leader` into this shard's
    /// follower partitions (`replication::fetcher::run`; given here because replication sits
    /// above the shard layer).
    pub follower_fetcher: FollowerFetcher,
    /// Writes a transaction's markers on its partitions' leaders (`server::txn::write_markers`;
    /// given here because it sends requests to other brokers, above the shard layer).
    pub txn_marker_writer: TxnMarkerWriter,
}

/// How a transaction coordinator on this shard has its markers written.
pub type TxnMarkerWriter =
    fn(Rc<Shard>, crate::groups::txn::MarkerJob) -> Pin<Box<dyn Future<Output = bool>>>;

/// How a shard starts its fetch loop for one leader broker.
pub type FollowerFetcher = fn(Rc<Shard>, BrokerId) -> Pin<Box<dyn Future<Output = ()>>>;

pub type PartitionKey = (Arc<str>, i32);

pub struct Shard {
    pub id: ShardId,
    pub config: Arc<BrokerConfig>,
    pub counters: Arc<Counters>,
    pub clean_start: bool,
    inboxes: Vec<flume::Sender<ShardTask>>,
    metadata: RefCell<Arc<MetadataSnapshot>>,
    partitions: RefCell<HashMap<PartitionKey, Rc<Partition>>>,
    /// Group coordinators of the `__consumer_offsets` partitions this shard owns.
    groups: RefCell<HashMap<i32, Rc<GroupCoordinator>>>,
    /// Transaction coordinators of the `__transaction_state` partitions this shard leads.
    txns: RefCell<HashMap<i32, Rc<TxnCoordinator>>>,
    txn_marker_writer: TxnMarkerWriter,
    /// Serialises `apply_metadata`, so two snapshots never open the same partition twice.
    apply_gate: crate::runtime::rt::Semaphore,
    /// The single metadata writer; only on shard 0 in standalone mode.
    pub registry: Option<RefCell<TopicRegistry>>,
    /// Serialises registry changes and their broadcast, so snapshots reach shards in order.
    pub registry_gate: crate::runtime::rt::Semaphore,
    pub shutdown: flume::Receiver<()>,
    /// The control thread (cluster mode only); `None` standalone.
    pub control: Option<ControlHandle>,
    /// Leadership lease shared with the control thread (never ends standalone).
    pub lease: Arc<Lease>,
    /// Leaders this shard runs a replica fetcher for (one task per leader).
    follower_fetcher: FollowerFetcher,
    fetchers: RefCell<HashSet<BrokerId>>,
    /// Whether the ISR maintenance task runs (cluster mode, started with the first snapshot).
    isr_task_started: Cell<bool>,
    /// Whether the producer expiry task runs (started with the first snapshot).
    producer_expiry_started: Cell<bool>,
    /// This shard's request-path counters (read by the metrics endpoint via `invoke_on`).
    pub metrics: crate::metrics::ShardMetrics,
    /// Client quotas this shard enforces on its connections, and its measurements.
    pub quotas: crate::cluster::quota::ShardQuotas,
    /// During start-up, the first partition that could not be opened (`None` afterwards too:
    /// then failures are logged and the partition stays closed).
    open_failure: RefCell<Option<String>>,
    starting: Cell<bool>,
    /// Set when `close_all` begins: later snapshots open and delete nothing.
    closing: Cell<bool>,
    /// Set when a partition could not be opened: the next snapshot walks every partition
    /// (retrying it) even if it comes with a delta.
    full_apply_due: Cell<bool>,
}

/// How often a leader checks its ISR for lagging or caught-up followers.
const ISR_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
/// How often moved high watermarks are stored (Kafka's
/// `replica.high.watermark.checkpoint.interval.ms` default).
const HW_STORE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// An ISR change asked for but never seen in a snapshot is retried after this long.
const ISR_CHANGE_STALE: std::time::Duration = std::time::Duration::from_secs(5);
/// A refused ISR change is asked again no sooner than this, unless a snapshot changes the
/// partition first (so a refusal on a stale znode version is retried as soon as the new
/// version arrives, and a refusal that stands is not repeated four times a second).
const ISR_CHANGE_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

impl Shard {
    pub fn new(id: ShardId, setup: &ShardSetup, registry: Option<TopicRegistry>) -> Shard {
        Shard {
            id,
            config: setup.config.clone(),
            counters: setup.counters.clone(),
            clean_start: setup.clean_start,
            inboxes: setup.inboxes.clone(),
            metadata: RefCell::new(setup.initial.clone()),
            partitions: RefCell::new(HashMap::new()),
            groups: RefCell::new(HashMap::new()),
            txns: RefCell::new(HashMap::new()),
            txn_marker_writer: setup.txn_marker_writer,
            apply_gate: crate::runtime::rt::Semaphore::new(1),
            registry: registry.map(RefCell::new),
            registry_gate: crate::runtime::rt::Semaphore::new(1),
            shutdown: setup.shutdown.clone(),
            control: setup.control.clone(),
            lease: setup.lease.clone(),
            fetchers: RefCell::new(HashSet::new()),
            follower_fetcher: setup.follower_fetcher,
            isr_task_started: Cell::new(false),
            producer_expiry_started: Cell::new(false),
            metrics: crate::metrics::ShardMetrics::new(setup.config.metrics_listen.is_some()),
            quotas: crate::cluster::quota::ShardQuotas::new(
                setup.quotas.clone(),
                setup.config.quota_window(),
                setup.quota_sensors.clone(),
            ),
            open_failure: RefCell::new(None),
            starting: Cell::new(true),
            closing: Cell::new(false),
            full_apply_due: Cell::new(false),
        }
    }

    /// True on the shard that turns topic changes into snapshots: shard 0, which holds the
    /// registry (standalone) or hands changes to the control thread (cluster mode).
    pub fn is_metadata_writer(&self) -> bool {
        self.registry.is_some() || (self.control.is_some() && self.id == ShardId(0))
    }

    pub fn shard_count(&self) -> usize {
        self.inboxes.len()
    }

    pub fn owner(&self, topic: &str, partition: i32) -> ShardId {
        shard_for(topic, partition, self.shard_count())
    }

    pub fn metadata(&self) -> Arc<MetadataSnapshot> {
        self.metadata.borrow().clone()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        // Keyed by Arc<str>; a lookup by &str needs the Borrow impl on the tuple, which tuples
        // lack, so look the topic name up in the snapshot first to get the shared Arc.
        let name = self.metadata.borrow().topic(topic)?.name.clone();
        self.partitions.borrow().get(&(name, index)).cloned()
    }

    /// Sleeps for `d`; true when the broker began shutting down meanwhile (then at once).
    pub async fn sleep_unless_shutdown(&self, d: std::time::Duration) -> bool {
        futures_lite::future::or(
            async {
                crate::runtime::rt::sleep(d).await;
                false
            },
            async {
                let _ = self.shutdown.recv_async().await;
                true
            },
        )
        .await
    }

    pub fn partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// Runs `f` on shard `target` and returns its result. Runs inline when `target` is this
    /// shard. If the target shard has stopped, returns `None`.
    pub async fn invoke_on<R, F, Fut>(self: &Rc<Self>, target: ShardId, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if target == self.id {
            return Some(f(self.clone()).await);
        }
        self.metrics.add(&self.metrics.cross_shard_messages, 1);
        let (tx, rx) = flume::bounded(1);
        let task: ShardTask = Box::new(move |shard| {
            Box::pin(async move {
                let r = f(shard).await;
                let _ = tx.send(r);
            })
        });
        self.inboxes[target.0].send_async(task).await.ok()?;
        crate::runtime::rt::recv_cross(&rx).await.ok()
    }

    /// Runs the same closure on every shard concurrently; results in shard order.
    pub async fn invoke_on_all<R, F, Fut>(self: &Rc<Self>, f: F) -> Vec<Option<R>>
    where
        R: Send + 'static,
        F: Fn(Rc<Shard>) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let calls: Vec<_> = (0..self.shard_count())
            .map(|i| {
                let f = f.clone();
                let me = self.clone();
                crate::runtime::rt::spawn(async move { me.invoke_on(ShardId(i), f).await })
            })
            .collect();
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            out.push(c.await);
        }
        out
    }

    /// Serves the inbox: each task runs as its own local task so a slow one never blocks others.
    pub async fn run_inbox(self: Rc<Self>, inbox: flume::Receiver<ShardTask>) {
        while let Ok(task) = crate::runtime::rt::recv_cross(&inbox).await {
            crate::runtime::rt::spawn_detached(task(self.clone()));
        }
    }

    /// Makes `snapshot` current by walking every partition of it (see
    /// `apply_metadata_delta`).
    pub async fn apply_metadata(self: &Rc<Self>, snapshot: Arc<MetadataSnapshot>) {
        self.apply_metadata_delta(snapshot, None).await
    }

    /// Makes `snapshot` current: opens the partitions this shard owns and this broker
    /// replicates, applies changed topic configs and each partition's replication state
    /// (leader, follower, offline; see `on_transition`), closes and deletes partitions of topics
    /// that are gone. Older snapshots are ignored, so a late message cannot roll metadata back.
    ///
    /// With a `delta` from exactly the version this shard holds, only the topics and partitions
    /// it names are applied (work proportional to the change); otherwise (a version was missed
    /// or skipped, no delta, or an earlier open failed and must be retried) every partition of
    /// the snapshot is walked.
    pub async fn apply_metadata_delta(
        self: &Rc<Self>,
        snapshot: Arc<MetadataSnapshot>,
        delta: Option<Arc<MetadataDelta>>,
    ) {
        log::debug!(
            "shard {}: applying metadata version {}",
            self.id.0,
            snapshot.version
        );
        let _permit = self.apply_gate.acquire_permit(1).await;
        log::debug!(
            "shard {}: gate taken for version {}",
            self.id.0,
            snapshot.version
        );
        if snapshot.version < self.metadata.borrow().version || self.closing.get() {
            return;
        }
        let previous = std::mem::replace(&mut *self.metadata.borrow_mut(), snapshot.clone());
        let delta = delta.filter(|d| {
            d.base_version == previous.version
                && snapshot.version > previous.version
                && !self.full_apply_due.get()
        });
        self.full_apply_due.set(false);
        let m = &self.metrics;
        m.add(
            if delta.is_some() {
                &m.metadata_delta_applies
            } else {
                &m.metadata_full_applies
            },
            1,
        );
        // Partitions to remove: topic gone, or (after re-creation) a different topic id.
        let doomed_if =
            |topic: &str, index: i32| match (snapshot.topic(topic), previous.topic(topic)) {
                (Some(now), Some(before)) => now.id != before.id || index >= now.partitions,
                (Some(now), None) => index >= now.partitions,
                (None, _) => true,
            };
        let doomed: Vec<(PartitionKey, Rc<Partition>)> = match &delta {
            None => self
                .partitions
                .borrow()
                .iter()
                .filter(|((topic, index), _)| doomed_if(topic, *index))
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect(),
            // Only a topic named in the delta can have lost partitions.
            Some(d) => {
                let partitions = self.partitions.borrow();
                d.topics
                    .iter()
                    .flat_map(|name| {
                        let held = previous.topic(name).map_or(0, |t| t.partitions);
                        (0..held).map(move |i| (name.clone(), i))
                    })
                    .filter(|(topic, index)| doomed_if(topic, *index))
                    .filter_map(|k| partitions.get(&k).map(|p| (k, p.clone())))
                    .collect()
            }
        };
        for (key, _) in &doomed {
            self.partitions.borrow_mut().remove(key);
            self.stop_coordinator(&key.0, key.1);
        }
        for (_, p) in doomed {
            let dir = self.partition_dir(&p.topic, p.index);
            if let Err(e) = p.delete().await {
                log::error!("deleting {}: {e}", dir.display());
            }
        }
        let todo: Vec<(Arc<TopicMeta>, i32)> = match &delta {
            Some(d) => d.partitions_in(&snapshot),
            None => snapshot
                .topics
                .values()
                .flat_map(|t| (0..t.partitions).map(move |i| (t.clone(), i)))
                .collect(),
        };
        // Partitions are applied (opened) up to PARTITION_OPENS_IN_FLIGHT at a time: opening
        // one is a dozen small ring operations (directory listing, checkpoint and snapshot
        // reads, index tails), each a round trip; overlapping them is what makes a shard with
        // thousands of partitions start in seconds.
        let owned = todo
            .into_iter()
            .filter(|(topic, index)| self.owner(&topic.name, *index) == self.id);
        crate::runtime::rt::run_in_flight(owned, PARTITION_OPENS_IN_FLIGHT, |(topic, index)| {
            let (shard, snapshot) = (self.clone(), snapshot.clone());
            async move { shard.apply_partition(&snapshot, &topic, index).await }
        })
        .await;
        if !self.producer_expiry_started.replace(true) {
            crate::runtime::rt::spawn_detached(producer_expiry_loop(Rc::downgrade(self)));
        }
        if snapshot.cluster_mode && self.control.is_some() && !self.isr_task_started.get() {
            self.isr_task_started.set(true);
            crate::runtime::rt::spawn_detached(isr_loop(Rc::downgrade(self)));
            crate::runtime::rt::spawn_detached(hw_store_loop(Rc::downgrade(self)));
        }
    }

    /// Applies one partition of `snapshot` that this shard owns: opens it if this broker holds
    /// a replica, updates its config, and acts on its change of role.
    async fn apply_partition(
        self: &Rc<Self>,
        snapshot: &MetadataSnapshot,
        topic: &TopicMeta,
        index: i32,
    ) {
        self.metrics
            .add(&self.metrics.metadata_partitions_applied, 1);
        let local = snapshot.local_broker;
        // Standalone every partition has its single-replica state; in cluster mode a
        // partition not placed yet, or placed elsewhere, is not opened here.
        let state = match topic.state(index) {
            Some(s) => s.clone(),
            None if !snapshot.cluster_mode => PartitionState::standalone(local),
            None => return,
        };
        let key = (topic.name.clone(), index);
        let existing = self.partitions.borrow().get(&key).cloned();
        let partition = match existing {
            Some(p) => {
                if p.config() != topic.config {
                    p.set_config(topic.config.clone());
                }
                p
            }
            None if state.replicas.contains(&local) => {
                match self.open_partition(topic, index).await {
                    Some(p) => p,
                    // Retried by the next snapshot, which must then walk everything.
                    None => {
                        self.full_apply_due.set(true);
                        return;
                    }
                }
            }
            None => return,
        };
        let transition = partition.apply_state(local, &state);
        self.on_transition(&partition, transition);
    }

    async fn open_partition(&self, topic: &TopicMeta, index: i32) -> Option<Rc<Partition>> {
        let dir = self.partition_dir(&topic.name, index);
        log::debug!("shard {}: opening {}", self.id.0, dir.display());
        match Partition::open(
            topic.name.clone(),
            index,
            dir.clone(),
            topic.config.clone(),
            self.clean_start,
            self.lease.clone(),
        )
        .await
        {
            Ok(p) => {
                let p = Rc::new(p);
                self.partitions
                    .borrow_mut()
                    .insert((topic.name.clone(), index), p.clone());
                Some(p)
            }
            Err(e) => {
                let msg = format!("cannot open partition {}: {e}", dir.display());
                if self.starting.get() {
                    self.open_failure.borrow_mut().get_or_insert(msg);
                } else {
                    log::error!("{msg}");
                }
                None
            }
        }
    }

    /// Acts on a partition's change of role: the group coordinator of a `__consumer_offsets`
    /// partition runs only where it is led; a follower is fed by this shard's replica fetcher
    /// for its leader.
    fn on_transition(self: &Rc<Self>, p: &Rc<Partition>, transition: Transition) {
        let offsets = &*p.topic == CONSUMER_OFFSETS_TOPIC;
        let txn_state = &*p.topic == TRANSACTION_STATE_TOPIC;
        match transition {
            Transition::Unchanged => {}
            Transition::BecameLeader => {
                log::info!(
                    "{}-{}: leader in epoch {} (ISR {:?})",
                    p.topic,
                    p.index,
                    p.leader_epoch(),
                    p.isr()
                );
                if offsets && self.group_coordinator(p.index).is_none() {
                    if let Some(gc) = GroupCoordinator::start(p.clone(), &self.config) {
                        self.groups.borrow_mut().insert(p.index, gc);
                    }
                }
                if txn_state && self.txn_coordinator(p.index).is_none() {
                    let count = self
                        .metadata()
                        .topic(TRANSACTION_STATE_TOPIC)
                        .map_or(self.config.transaction_state_log_num_partitions, |t| {
                            t.partitions
                        });
                    if let Some(tc) =
                        TxnCoordinator::start(p.clone(), &self.config, count, self.marker_writer())
                    {
                        self.txns.borrow_mut().insert(p.index, tc);
                    }
                }
            }
            Transition::BecameFollower { leader } => {
                log::info!(
                    "{}-{}: follower of broker {leader} in epoch {}",
                    p.topic,
                    p.index,
                    p.leader_epoch()
                );
                self.stop_coordinator(&p.topic, p.index);
                if self.fetchers.borrow_mut().insert(leader) {
                    crate::runtime::rt::spawn_detached((self.follower_fetcher)(
                        self.clone(),
                        leader,
                    ));
                }
            }
            Transition::WentOffline => {
                log::info!(
                    "{}-{}: offline in epoch {}",
                    p.topic,
                    p.index,
                    p.leader_epoch()
                );
                self.stop_coordinator(&p.topic, p.index);
            }
        }
    }

    /// Stops the group or transaction coordinator of internal partition `topic`-`index`.
    fn stop_coordinator(&self, topic: &str, index: i32) {
        if topic == CONSUMER_OFFSETS_TOPIC {
            let gc = self.groups.borrow_mut().remove(&index);
            if let Some(gc) = gc {
                gc.shutdown();
            }
        } else if topic == TRANSACTION_STATE_TOPIC {
            let tc = self.txns.borrow_mut().remove(&index);
            if let Some(tc) = tc {
                tc.shutdown();
            }
        }
    }

    /// What a transaction coordinator of this shard calls to write markers. Holds the shard
    /// weakly: the coordinator lives in the shard.
    fn marker_writer(self: &Rc<Self>) -> MarkerWriter {
        let weak = Rc::downgrade(self);
        let write = self.txn_marker_writer;
        Rc::new(move |job| match weak.upgrade() {
            Some(shard) => write(shard, job),
            None => Box::pin(async { false }),
        })
    }

    /// Called by a replica fetcher that found no partition left to follow from `leader`:
    /// it stops, and the next partition to follow that leader starts a new one.
    pub fn fetcher_stopped(&self, leader: BrokerId) {
        self.fetchers.borrow_mut().remove(&leader);
    }

    /// Ends start-up: returns the first partition that could not be opened meanwhile, if any;
    /// later failures are logged instead.
    pub fn finish_starting(&self) -> Option<String> {
        self.starting.set(false);
        self.open_failure.borrow_mut().take()
    }

    pub fn partition_dir(&self, topic: &str, index: i32) -> std::path::PathBuf {
        self.config.data_dir.join(format!("{topic}-{index}"))
    }

    /// The coordinator of `__consumer_offsets` partition `index`, if this shard owns it.
    pub fn group_coordinator(&self, index: i32) -> Option<Rc<GroupCoordinator>> {
        self.groups.borrow().get(&index).cloned()
    }

    pub fn group_coordinators(&self) -> Vec<Rc<GroupCoordinator>> {
        self.groups.borrow().values().cloned().collect()
    }

    /// The coordinator of `__transaction_state` partition `index`, if this shard leads it.
    pub fn txn_coordinator(&self, index: i32) -> Option<Rc<TxnCoordinator>> {
        self.txns.borrow().get(&index).cloned()
    }

    pub fn txn_coordinators(&self) -> Vec<Rc<TxnCoordinator>> {
        self.txns.borrow().values().cloned().collect()
    }

    /// Closes every partition this shard owns (flush + checkpoints). False if any failed to
    /// close: then the broker must not mark the shutdown clean, so that the next start recovers.
    /// A snapshot being applied is let finish first (it may be opening or deleting partitions),
    /// and later ones change nothing.
    pub async fn close_all(&self) -> bool {
        self.closing.set(true);
        let _permit = self.apply_gate.acquire_permit(1).await;
        self.fetchers.borrow_mut().clear();
        let groups: Vec<_> = self.groups.borrow_mut().drain().map(|(_, g)| g).collect();
        for g in groups {
            g.shutdown();
        }
        let txns: Vec<_> = self.txns.borrow_mut().drain().map(|(_, t)| t).collect();
        for t in txns {
            t.shutdown();
        }
        let parts: Vec<_> = self
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, p)| p)
            .collect();
        // Closed like they were opened, many at a time: each close is a few syncs.
        let cluster = self.control.is_some();
        let closed =
            crate::runtime::rt::run_in_flight(parts, PARTITION_OPENS_IN_FLIGHT, |p| async move {
                if cluster {
                    p.store_high_watermark().await;
                }
                let name = format!("{}-{}", p.topic, p.index);
                match p.close().await {
                    Ok(()) => true,
                    Err(e) => {
                        log::error!("closing {name}: {e}");
                        false
                    }
                }
            })
            .await;
        closed.iter().all(|ok| *ok)
    }
}

/// Cluster mode: stores every partition's high watermark that moved, every `HW_STORE_INTERVAL`.
async fn hw_store_loop(shard: std::rc::Weak<Shard>) {
    loop {
        crate::runtime::rt::sleep(HW_STORE_INTERVAL).await;
        let Some(shard) = shard.upgrade() else { return };
        if shard.shutdown.is_disconnected() {
            return;
        }
        for p in shard.partitions() {
            p.store_high_watermark().await;
        }
    }
}

/// Every `producer.id.expiration.check.interval.ms`, each partition of this shard forgets the
/// producers idle for `producer.id.expiration.ms` without an open transaction, and removes its
/// producer state snapshots below the log start offset (retention moved it).
async fn producer_expiry_loop(shard: std::rc::Weak<Shard>) {
    let Some(config) = shard.upgrade().map(|s| s.config.clone()) else {
        return;
    };
    let every = std::time::Duration::from_millis(config.producer_id_expiration_check_interval_ms);
    loop {
        crate::runtime::rt::sleep(every).await;
        let Some(shard) = shard.upgrade() else { return };
        if shard.shutdown.is_disconnected() || shard.closing.get() {
            return;
        }
        let now = crate::base::clock::now_ms();
        for p in shard.partitions() {
            let expired = p.expire_producers(now, config.producer_id_expiration_ms);
            if expired > 0 {
                log::debug!(
                    "{}-{}: {expired} idle producer(s) expired",
                    p.topic,
                    p.index
                );
            }
            p.maintain_snapshots().await;
            crate::runtime::rt::yield_if_needed().await;
        }
    }
}

/// The leaders' ISR maintenance (cluster mode): every `ISR_CHECK_INTERVAL`, each partition this
/// shard leads may ask the control thread to drop lagging followers or add caught-up ones. The
/// new ISR applies only when the control thread's next snapshot arrives.
async fn isr_loop(shard: std::rc::Weak<Shard>) {
    loop {
        crate::runtime::rt::sleep(ISR_CHECK_INTERVAL).await;
        let Some(shard) = shard.upgrade() else { return };
        if shard.shutdown.is_disconnected() {
            return;
        }
        let Some(control) = shard.control.clone() else {
            return;
        };
        let lag = shard.config.replica_lag_time_max_ms.min(i64::MAX as u64) as i64;
        // Only registered brokers may join an ISR: the controller refuses the others.
        let metadata = shard.metadata();
        let is_alive = |id: BrokerId| metadata.brokers.contains_key(&id);
        for p in shard.partitions() {
            let Some(change) = p.isr_change_due(lag, is_alive) else {
                continue;
            };
            let grows = change.isr.len() > p.isr().len();
            log::info!(
                "{}-{}: asking to change the ISR from {:?} to {:?} (epoch {}, version {})",
                p.topic,
                p.index,
                p.isr(),
                change.isr,
                change.leader_epoch,
                change.zk_version
            );
            let (tx, rx) = flume::bounded(1);
            let request = ControlRequest::AlterIsr {
                topic: p.topic.clone(),
                partition: PartitionId(p.index),
                leader_epoch: change.leader_epoch,
                zk_version: change.zk_version,
                isr: change.isr,
                reply: tx,
            };
            if control.tx.send_async(request).await.is_err() {
                p.isr_change_failed(
                    change.zk_version,
                    Some(errors::NOT_LEADER_OR_FOLLOWER),
                    ISR_CHANGE_RETRY_BACKOFF,
                );
                continue;
            }
            let version = change.zk_version;
            // Weak: a pending answer must not keep a deleted or closing partition alive.
            let p = Rc::downgrade(&p);
            let shard_weak = Rc::downgrade(&shard);
            crate::runtime::rt::spawn_detached(async move {
                let code = futures_lite::future::or(
                    async { crate::runtime::rt::recv_cross(&rx).await.ok() },
                    async {
                        crate::runtime::rt::sleep(ISR_CHANGE_STALE).await;
                        None
                    },
                )
                .await;
                if code == Some(errors::NONE) {
                    if let Some(s) = shard_weak.upgrade() {
                        let c = if grows {
                            &s.metrics.isr_expands
                        } else {
                            &s.metrics.isr_shrinks
                        };
                        s.metrics.add(c, 1);
                    }
                    // Written: the snapshot carrying it clears the in-flight mark. If it never
                    // comes (the control thread lost it), allow a retry later.
                    crate::runtime::rt::sleep(ISR_CHANGE_STALE).await;
                }
                let Some(p) = p.upgrade() else { return };
                let retry_after = match code {
                    Some(errors::NONE) => std::time::Duration::ZERO,
                    Some(code) => {
                        log::info!("{}-{}: ISR change refused: error {code}", p.topic, p.index);
                        ISR_CHANGE_RETRY_BACKOFF
                    }
                    // No answer within ISR_CHANGE_STALE: already waited long enough.
                    None => std::time::Duration::ZERO,
                };
                // After a write, or without an answer, the outcome is not known to be a
                // refusal: what it proposed keeps counting until a snapshot settles it.
                let refusal = code.filter(|c| *c != errors::NONE);
                p.isr_change_failed(version, refusal, retry_after);
            });
        }
    }
}
