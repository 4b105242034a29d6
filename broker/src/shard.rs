//! One shard: the state a glommio executor owns (its partitions, its copy of the metadata
//! snapshot) and the way other shards reach it.
//!
//! Cross-shard calls are closures: `invoke_on(target, f)` sends `f` to the target shard's inbox,
//! where it runs with that shard's `Rc<Shard>` and sends its result back. A request handler sends
//! at most one such call per owning shard per request. Everything in `Shard` is `!Send` and stays
//! on its thread; only the closures and their results cross.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::BrokerConfig;
use crate::control::{ControlHandle, Lease};
use crate::group_coordinator::GroupCoordinator;
use crate::metadata::{MetadataSnapshot, TopicRegistry, CONSUMER_OFFSETS_TOPIC};
use crate::partition::Partition;
use crate::shard_table::{shard_for, ShardId};

/// A unit of work sent to another shard.
pub type ShardTask = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Process-wide counters (relaxed atomics: statistics, not synchronisation).
#[derive(Default)]
pub struct Counters {
    pub fetch_bytes_sendfile: AtomicU64,
    pub fetch_bytes_copied: AtomicU64,
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
}

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
    /// Serialises `apply_metadata`, so two snapshots never open the same partition twice.
    apply_gate: crate::rt::Semaphore,
    /// The single metadata writer; only on shard 0 in standalone mode.
    pub registry: Option<RefCell<TopicRegistry>>,
    /// Serialises registry changes and their broadcast, so snapshots reach shards in order.
    pub registry_gate: crate::rt::Semaphore,
    pub shutdown: flume::Receiver<()>,
    /// The control thread (cluster mode only); `None` standalone.
    pub control: Option<ControlHandle>,
    /// Leadership lease shared with the control thread (never ends standalone).
    pub lease: Arc<Lease>,
}

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
            apply_gate: crate::rt::Semaphore::new(1),
            registry: registry.map(RefCell::new),
            registry_gate: crate::rt::Semaphore::new(1),
            shutdown: setup.shutdown.clone(),
            control: setup.control.clone(),
            lease: setup.lease.clone(),
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
        let (tx, rx) = flume::bounded(1);
        let task: ShardTask = Box::new(move |shard| {
            Box::pin(async move {
                let r = f(shard).await;
                let _ = tx.send(r);
            })
        });
        self.inboxes[target.0].send_async(task).await.ok()?;
        crate::rt::recv_cross(&rx).await.ok()
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
                crate::rt::spawn(async move { me.invoke_on(ShardId(i), f).await })
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
        while let Ok(task) = crate::rt::recv_cross(&inbox).await {
            crate::rt::spawn_detached(task(self.clone()));
        }
    }

    /// Makes `snapshot` current: opens partitions this shard now owns, applies changed topic
    /// configs, closes and deletes partitions of topics that are gone. Older snapshots are
    /// ignored, so a late message cannot roll metadata back.
    pub async fn apply_metadata(self: &Rc<Self>, snapshot: Arc<MetadataSnapshot>) {
        let _permit = self.apply_gate.acquire_permit(1).await;
        if snapshot.version < self.metadata.borrow().version {
            return;
        }
        let previous = std::mem::replace(&mut *self.metadata.borrow_mut(), snapshot.clone());
        // Partitions to remove: topic gone, or (after re-creation) a different topic id.
        let doomed: Vec<(PartitionKey, Rc<Partition>)> = self
            .partitions
            .borrow()
            .iter()
            .filter(
                |((topic, index), _)| match (snapshot.topic(topic), previous.topic(topic)) {
                    (Some(now), Some(before)) => now.id != before.id || *index >= now.partitions,
                    (Some(now), None) => *index >= now.partitions,
                    (None, _) => true,
                },
            )
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        for (key, _) in &doomed {
            self.partitions.borrow_mut().remove(key);
        }
        for (_, p) in doomed {
            let dir = self.partition_dir(&p.topic, p.index);
            if let Err(e) = p.delete().await {
                log::error!("deleting {}: {e}", dir.display());
            }
        }
        for topic in snapshot.topics.values() {
            for index in 0..topic.partitions {
                if self.owner(&topic.name, index) != self.id {
                    continue;
                }
                let key = (topic.name.clone(), index);
                let existing = self.partitions.borrow().get(&key).cloned();
                match existing {
                    Some(p) => {
                        if p.config() != topic.config {
                            p.set_config(topic.config.clone());
                        }
                    }
                    None => {
                        let dir = self.partition_dir(&topic.name, index);
                        match Partition::open(
                            topic.name.clone(),
                            index,
                            dir.clone(),
                            topic.config.clone(),
                            self.clean_start,
                        )
                        .await
                        {
                            Ok(p) => {
                                let p = Rc::new(p);
                                if &*topic.name == CONSUMER_OFFSETS_TOPIC {
                                    if let Some(gc) =
                                        GroupCoordinator::start(p.clone(), &self.config)
                                    {
                                        self.groups.borrow_mut().insert(index, gc);
                                    }
                                }
                                self.partitions.borrow_mut().insert(key, p);
                            }
                            Err(e) => log::error!("cannot open {}: {e}", dir.display()),
                        }
                    }
                }
            }
        }
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

    /// Closes every partition this shard owns (flush + checkpoints).
    pub async fn close_all(&self) {
        let groups: Vec<_> = self.groups.borrow_mut().drain().map(|(_, g)| g).collect();
        for g in groups {
            g.shutdown();
        }
        let parts: Vec<_> = self
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in parts {
            let name = format!("{}-{}", p.topic, p.index);
            if let Err(e) = p.close().await {
                log::error!("closing {name}: {e}");
            }
        }
    }
}
