//! Snapshot publishing: the next `MetadataSnapshot` (and its delta) built from the view, and its
//! delivery to every shard's inbox (`deliver`, `broadcast`).

use super::*;

/// What a shard runs for a broadcast.
pub(super) type ShardJob =
    Arc<dyn Fn(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

/// Runs `job` on every shard and waits (at most `wait`) until each has finished it. False
/// when some shard had not finished in time.
pub(super) async fn broadcast(
    inboxes: &[flume::Sender<ShardTask>],
    job: ShardJob,
    wait: Duration,
) -> bool {
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
pub(super) async fn deliver_quotas(
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
pub(super) async fn deliver(
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

impl Control {
    /// Topic `name` as shards see it, from the view; `None` when it has no partitions (or is
    /// not in the view).
    pub(super) fn topic_meta(&mut self, name: &str) -> Option<Arc<TopicMeta>> {
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
            .map(PartitionId)
            .map(|p| {
                let mut s = t.state(p).unwrap_or_else(|| PartitionState {
                    replicas: t.assignment.partitions.get(&p).cloned().unwrap_or_default(),
                    leader: NO_LEADER,
                    leader_epoch: 0,
                    isr: Vec::new(),
                    zk_version: -1,
                });
                // Fenced, or registered after this state was written (restarted, or a new
                // session): not leading until the controller has taken the restart in.
                let own = self.view.registrations.get(&self.local).copied();
                if s.leader == self.local
                    && (self.fenced || !election::may_lead_by(t.written_zxid(p), own))
                {
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
    pub(super) fn next_snapshot(&mut self) -> (MetadataSnapshot, Option<MetadataDelta>) {
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
    pub(super) async fn publish(&mut self) {
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
