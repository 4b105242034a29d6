//! Controller duties while this broker holds `/controller`: the controller epoch, partition
//! states written with compare-and-swap, reconciliation after broker changes, preferred-leader
//! rebalance, leader elections, ISR changes asked by leaders, and controlled shutdown.

use super::*;

impl Control {
    /// What the view asks of this broker: becoming controller when there is none; as
    /// controller, elections and ISR removals (`reconcile`) and the offsets topic.
    pub(super) async fn controller_duties(&mut self, client: &zk::Client) {
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

    pub(super) async fn try_become_controller(&mut self, client: &zk::Client) {
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

    pub(super) async fn bump_controller_epoch(
        &self,
        client: &zk::Client,
    ) -> Result<i32, zk::Error> {
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

    pub(super) fn alive(&self) -> BTreeSet<BrokerId> {
        self.view.brokers.keys().copied().collect()
    }

    pub(super) fn writer_epoch(&self) -> i32 {
        if self.is_controller {
            self.controller_epoch
        } else {
            self.view.controller_epoch
        }
    }

    /// Adds the creation of a new partition's znode and its initial state (led by its first
    /// replica, every replica in sync, epoch 0) to `multi`.
    pub(super) fn add_new_partition(
        &self,
        multi: &mut zk::MultiWriter,
        topic: &str,
        partition: PartitionId,
        replicas: &[BrokerId],
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

    pub(super) fn state_znode(&self, s: &PartitionState) -> StateZnode {
        StateZnode {
            leader: s.leader,
            leader_epoch: s.leader_epoch,
            isr: s.isr.clone(),
            controller_epoch: self.writer_epoch(),
        }
    }

    /// Writes `changes` with version checks (a create where the state znode is missing) and
    /// records the results in the view. Returns what became of each change, in order.
    pub(super) async fn write_states(
        &mut self,
        client: &zk::Client,
        changes: Vec<(String, PartitionId, PartitionState)>,
        why: &str,
    ) -> Vec<WriteOutcome> {
        enum Pending<A> {
            Sent(A),
            Done(Result<zk::Stat, zk::Error>),
            /// Settled to the current state: nothing to write.
            Nothing,
        }
        let mut pending = Vec::with_capacity(changes.len());
        let alive = self.alive();
        for (topic, p, s) in changes {
            // Brokers registered since the current state was written restarted: whatever
            // this write decided, they leave the ISR and lose a leadership
            // (`election::settle_restarts`).
            let s = match self.view.topics.get(&topic) {
                Some(t) => match t.state(p) {
                    Some(current) => {
                        let restarted = election::restarted_since(
                            &current,
                            t.written_zxid(p),
                            &self.view.registrations,
                        );
                        if !restarted.is_empty() {
                            log::info!(
                                "{topic}-{p}: brokers {restarted:?} restarted since the state \
                                 was written: out of the ISR, not leading"
                            );
                        }
                        let unclean = self.topic_config(&topic, &t.config).unclean_leader_election;
                        let settled =
                            election::settle_restarts(&current, s, &restarted, &alive, unclean);
                        if settled == current {
                            pending.push((topic, p, settled, Pending::Nothing));
                            continue;
                        }
                        settled
                    }
                    None => s,
                },
                None => s,
            };
            // One leader per epoch: a state naming another leader than the one it replaces
            // carries a newer epoch (every election bumps it). Checked in release builds: a
            // violation would let two brokers accept writes in the same epoch.
            if let Some(old) = self.view.topics.get(&topic).and_then(|t| t.state(p)) {
                assert!(
                    old.leader == s.leader || s.leader_epoch > old.leader_epoch,
                    "{topic}-{p}: leader {} -> {} without a new epoch ({} -> {})",
                    old.leader,
                    s.leader,
                    old.leader_epoch,
                    s.leader_epoch
                );
            }
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
                Pending::Nothing => {
                    outcomes.push(WriteOutcome::Written);
                    continue;
                }
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
                        t.states.insert(p, Some((znode, stat.version, stat.mzxid)));
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
    pub(super) async fn reconcile(&mut self, client: &zk::Client) {
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
                        let restarted = election::restarted_since(
                            &s,
                            t.written_zxid(p),
                            &self.view.registrations,
                        );
                        if let Some(next) =
                            election::reconcile_or_settle(&s, &alive, &restarted, unclean)
                        {
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

    pub(super) fn rebalance_interval(&self) -> Duration {
        Duration::from_millis(self.config.leader_imbalance_check_interval_ms.max(1000))
    }

    /// Every partition with a state, keyed by topic and partition.
    pub(super) fn partition_states(&self) -> Vec<((String, PartitionId), PartitionState)> {
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
    pub(super) async fn auto_rebalance(&mut self) {
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
    pub(super) async fn elect_leaders(
        &mut self,
        unclean: bool,
        asked: Option<Vec<(Arc<str>, PartitionId)>>,
    ) -> Vec<(Arc<str>, PartitionId, i16)> {
        let all = asked.is_none();
        let mut results: BTreeMap<(Arc<str>, PartitionId), i16> = BTreeMap::new();
        let mut pending: Option<Vec<(Arc<str>, PartitionId)>> = asked.map(|mut a| {
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
            let wanted: Vec<(Arc<str>, PartitionId)> = match pending.take() {
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
            let keys: Vec<(Arc<str>, PartitionId)> =
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

    pub(super) async fn alter_isr(
        &mut self,
        topic: &str,
        partition: PartitionId,
        leader_epoch: i32,
        zk_version: i32,
        isr: Vec<BrokerId>,
    ) -> i16 {
        let Some(client) = self.client() else {
            return errors::NOT_LEADER_OR_FOLLOWER;
        };
        let path = layout::state_path(topic, partition);
        let current = match client.get_data(&path).await {
            Ok((data, stat)) => match layout::decode_state(&data) {
                Ok(s) => (s, stat.version, stat.mzxid),
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
        let (state, version, written) = current;
        if state.leader != self.local || state.leader_epoch != leader_epoch || self.fenced {
            self.note_state(topic, partition, state, version, written)
                .await;
            return errors::NOT_LEADER_OR_FOLLOWER;
        }
        if version != zk_version {
            // The ISR changed under the leader (controller removed a dead broker, a follower
            // left in a controlled shutdown): it must decide again on the new state.
            self.note_state(topic, partition, state, version, written)
                .await;
            return errors::INVALID_UPDATE_VERSION;
        }
        // Members registered since the state was written restarted (or lost their session)
        // and may have lost records: the controller takes them out of the ISR
        // (`election::restarted_since`), and this write must not make the state look newer
        // than their restart while keeping them in. Their registrations are read now, not
        // taken from the view, which may not show a restart yet.
        let mut isr = isr;
        let registrations = self.registrations_of(&client, &isr).await;
        let as_state = PartitionState {
            replicas: replicas.clone(),
            leader: self.local,
            leader_epoch,
            isr: isr.clone(),
            zk_version,
        };
        let restarted = election::restarted_since(&as_state, written, &registrations);
        if restarted.contains(&self.local) {
            return errors::NOT_LEADER_OR_FOLLOWER;
        }
        if !restarted.is_empty() {
            log::info!(
                "{topic}-{partition}: brokers {restarted:?} restarted since the state was \
                 written; left out of the ISR"
            );
            isr.retain(|b| !restarted.contains(b));
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
            return errors::INELIGIBLE_REPLICA;
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
                self.note_state(topic, partition, next, stat.version, stat.mzxid)
                    .await;
                errors::NONE
            }
            Err(zk::Error::BadVersion) => {
                self.dirty.states.insert((topic.to_string(), partition));
                self.refresh_at = Some(tokio::time::Instant::now());
                errors::INVALID_UPDATE_VERSION
            }
            Err(e) => self.zk_error("write state", e).0,
        }
    }

    /// The creation zxids of the registrations of `brokers` (missing: not registered), read
    /// from ZooKeeper now. A broker whose read fails counts as registered just now, so that it
    /// is taken as restarted (the safe side).
    async fn registrations_of(
        &mut self,
        client: &zk::Client,
        brokers: &[BrokerId],
    ) -> BTreeMap<BrokerId, i64> {
        let reads: Vec<_> = brokers
            .iter()
            .map(|&b| (b, client.check_stat(&layout::broker_path(b))))
            .collect();
        let mut out = BTreeMap::new();
        for (b, read) in reads {
            match read.await {
                Ok(Some(stat)) => {
                    out.insert(b, stat.czxid);
                }
                Ok(None) => {}
                Err(_) => {
                    out.insert(b, i64::MAX);
                }
            }
        }
        out
    }

    /// Records a partition state just read or written and publishes it.
    pub(super) async fn note_state(
        &mut self,
        topic: &str,
        partition: PartitionId,
        state: StateZnode,
        version: i32,
        written_zxid: i64,
    ) {
        if let Some(t) = self.view.topics.get_mut(topic) {
            t.states
                .insert(partition, Some((state, version, written_zxid)));
            self.changed.topics.insert(topic.to_string());
        }
        self.publish().await;
    }

    pub(super) async fn controlled_shutdown(&mut self) {
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
}
