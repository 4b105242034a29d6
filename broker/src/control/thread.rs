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
//!
//! One `Control` value, its methods split by concern: this file holds the setup, the event
//! loop and the dispatch of shards' requests; `session` the ZooKeeper session, registration
//! and lease; `view` the reads that keep the view current; `controller` the controller's
//! duties (elections, ISR changes, rebalance, controlled shutdown); `admin_writes` topic,
//! quota and producer-id writes for shards; `publisher` the snapshots and their delivery.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::election;
use super::zk_layout::{self as layout, StateZnode, TopicAssignment};
use crate::base::clock::now_ms;
use crate::base::errors;
use crate::base::ids::{BrokerId, PartitionId, ProducerId};
use crate::cluster::control_api::{ControlRequest, Lease};
use crate::cluster::metadata::{
    diff_snapshots, BrokerInfo, MetadataDelta, MetadataSnapshot, PartitionState, TopicMeta,
    CONSUMER_OFFSETS_TOPIC, NO_LEADER,
};
use crate::cluster::quota::{self, QuotaEntity, QuotaOp, QuotaTable};
use crate::config::{BrokerConfig, TopicConfig};
use crate::metrics::{MetadataWork, METADATA_WORK};
use crate::shard::{Shard, ShardTask};

mod admin_writes;
mod controller;
mod publisher;
mod session;
mod view;

use publisher::*;
use session::*;
use view::*;

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
    local: BrokerId,
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
            local: s.config.id(),
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
}
