//! The control thread's view of ZooKeeper: whole reads (`read_view`), the znodes named by watch
//! events (`Dirty`) read again after a burst (`read_dirty`), and the client quota tree.

use super::*;

/// ZooKeeper's state as last read.
#[derive(Default)]
pub(super) struct ZkView {
    pub(super) brokers: BTreeMap<BrokerId, BrokerInfo>,
    /// The creation zxid of each broker's registration znode (Kafka's broker epoch): a new one
    /// means the broker restarted, even if the controller never saw it gone.
    pub(super) registrations: BTreeMap<BrokerId, i64>,
    pub(super) controller_id: BrokerId,
    /// Session owning `/controller` (0 when there is none).
    pub(super) controller_owner: i64,
    pub(super) controller_epoch: i32,
    pub(super) topics: BTreeMap<String, TopicView>,
}

#[derive(Default, Clone)]
pub(super) struct TopicView {
    pub(super) assignment: TopicAssignment,
    pub(super) assignment_version: i32,
    pub(super) config: BTreeMap<String, String>,
    /// Per assigned partition: the state znode, its version and the zxid of its last write
    /// (mzxid), `None` when it is missing.
    pub(super) states: BTreeMap<PartitionId, Option<(StateZnode, i32, i64)>>,
}

impl TopicView {
    /// The zxid of the last write of a partition's state znode (-1 when it is missing).
    pub(super) fn written_zxid(&self, partition: PartitionId) -> i64 {
        match self.states.get(&partition) {
            Some(Some((_, _, zxid))) => *zxid,
            _ => -1,
        }
    }

    pub(super) fn state(&self, partition: PartitionId) -> Option<PartitionState> {
        let replicas = self.assignment.partitions.get(&partition)?.clone();
        let (s, version, _) = self.states.get(&partition)?.as_ref()?;
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
pub(super) async fn read_view(client: &zk::Client) -> Result<ZkView, zk::Error> {
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
        .filter_map(|s| s.parse::<i32>().ok().map(BrokerId))
        .map(|id| (id, client.get_data(&layout::broker_path(id))))
        .collect();
    let topic_reads = topic_reads(client, topics);
    for (id, read) in broker_reads {
        // None: gone between the listing and the read, or undecodable.
        if let Some((b, czxid)) = broker_of(id, read.await)? {
            view.brokers.insert(id, b);
            view.registrations.insert(id, czxid);
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
        let state = decode_state_read(read.await, &name, p)?;
        if let Some(t) = view.topics.get_mut(&name) {
            t.states.insert(p, state);
        }
    }
    MetadataWork::add(&METADATA_WORK.full_reads, 1);
    MetadataWork::add(&METADATA_WORK.znode_reads_full, reads);
    Ok(view)
}

/// A `get_data` answer.
pub(super) type ZnodeRead = Result<(Vec<u8>, zk::Stat), zk::Error>;

/// Sends the reads of `names`' assignment and config znodes at once; the caller awaits them.
pub(super) fn topic_reads(
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
pub(super) fn read_controller(
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
/// A broker's registration and its creation zxid.
pub(super) fn broker_of(
    id: BrokerId,
    read: ZnodeRead,
) -> Result<Option<(BrokerInfo, i64)>, zk::Error> {
    match read {
        Ok((data, stat)) => match layout::decode_broker(id, &data) {
            Ok(b) => Ok(Some((b, stat.czxid))),
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
pub(super) fn decode_config(
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
pub(super) struct Dirty {
    /// Everything: a new session, a reconnect, the safety net, or a read that failed.
    pub(super) all: bool,
    /// `/controller` and `/controller_epoch`.
    pub(super) controller: bool,
    /// `/brokers/ids/<id>` (registered, changed or gone).
    pub(super) brokers: BTreeSet<BrokerId>,
    /// `/brokers/topics/<t>` and `/config/topics/<t>`: a topic created, deleted or grown.
    /// Partitions new to the view get their state read too.
    pub(super) topics: BTreeSet<String>,
    /// `/config/topics/<t>` alone.
    pub(super) configs: BTreeSet<String>,
    /// `/brokers/topics/<t>/partitions/<p>/state`.
    pub(super) states: BTreeSet<(String, PartitionId)>,
    /// A client quota znode under `/config/clients` or `/config/users`: the (small) quota
    /// tree is read again as a whole.
    pub(super) quotas: bool,
}

impl Dirty {
    pub(super) fn is_empty(&self) -> bool {
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
    pub(super) fn note(&mut self, e: &zk::WatchedEvent) {
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
    pub(super) fn note_path(&mut self, path: &str) {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["controller"] => self.controller = true,
            ["brokers", "ids", id] => {
                if let Ok(id) = id.parse() {
                    self.brokers.insert(BrokerId(id));
                }
            }
            ["brokers", "topics", topic] => {
                self.topics.insert((*topic).to_string());
            }
            ["brokers", "topics", topic, "partitions", p, "state"] => {
                if let Ok(p) = p.parse() {
                    self.states.insert(((*topic).to_string(), PartitionId(p)));
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
pub(super) struct ReadOutcome {
    /// Topics whose assignment, config or partition states were read (or that disappeared).
    pub(super) topics: BTreeSet<String>,
    pub(super) brokers_changed: bool,
    pub(super) znodes_read: u64,
}

/// Reads again the znodes `dirty` names (not `dirty.all`) and updates `view`. Two round trips
/// at most: controller, brokers, topics and configs first, then the partition states (those
/// named, and those of partitions new to the view).
pub(super) async fn read_dirty(
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
        let before = view
            .brokers
            .get(&id)
            .cloned()
            .zip(view.registrations.get(&id).copied());
        if before != now {
            out.brokers_changed = true;
            match now {
                Some((b, czxid)) => {
                    view.brokers.insert(id, b);
                    view.registrations.insert(id, czxid);
                }
                None => {
                    view.brokers.remove(&id);
                    view.registrations.remove(&id);
                }
            };
        }
    }
    let mut states: BTreeSet<(String, PartitionId)> = dirty.states.clone();
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
        let state = decode_state_read(read.await, &name, p)?;
        if let Some(t) = view.topics.get_mut(&name) {
            t.states.insert(p, state);
            out.topics.insert(name);
        }
    }
    Ok(out)
}

/// A znode read, decoded with its version: `None` when it is gone (deleted between the listing
/// and the read) or undecodable (logged with `what`); other ZooKeeper errors end the refresh.
pub(super) fn decode_versioned<T, E: std::fmt::Display>(
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

/// A partition's state znode read: the state, its version and its mzxid.
fn decode_state_read(
    read: Result<(Vec<u8>, zk::Stat), zk::Error>,
    name: &str,
    p: PartitionId,
) -> Result<Option<(StateZnode, i32, i64)>, zk::Error> {
    let mzxid = read.as_ref().map_or(-1, |(_, stat)| stat.mzxid);
    Ok(
        decode_versioned(read, layout::decode_state, || format!("{name}-{p}"))?
            .map(|(s, version)| (s, version, mzxid)),
    )
}

/// A topic id for a topic created without one (by an older tool): derived from the name, so
/// every broker agrees on it.
pub(super) fn derived_topic_id(name: &str) -> [u8; 16] {
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
pub(super) async fn children_or_none(
    client: &zk::Client,
    path: &str,
) -> Result<Vec<String>, zk::Error> {
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
pub(super) async fn read_quotas(client: &zk::Client) -> Result<(QuotaTable, u64), zk::Error> {
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

impl Control {
    /// Reads what changed in ZooKeeper; as controller, elects leaders and shrinks ISRs;
    /// creates the offsets topic when possible. Does not publish. False when ZooKeeper could
    /// not be read.
    pub(super) async fn refresh(&mut self) -> bool {
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
    pub(super) async fn drain_watch_events(&mut self) {
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
    pub(super) async fn read(&mut self, client: &zk::Client) -> bool {
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
                brokers: [BrokerId(3)].into(),
                topics: ["new".to_string()].into(),
                configs: ["orders".to_string()].into(),
                states: [("orders".to_string(), PartitionId(7))].into(),
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
