//! The ZooKeeper session: opening it, registering the broker, the lease kept alive by each round
//! trip (`keep_lease`), the persistent watches, and what happens when the session is lost or closed.

use super::*;

/// Keeps the lease while the session lives: one cheap request every `every`, renewing for
/// `length` from when it was sent if it proves our registration is still ours; revokes at once
/// when the session ends.
pub(super) async fn keep_lease(
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

pub(super) struct Session {
    pub(super) client: zk::Client,
    pub(super) watches: Watches,
    /// The connection came back within the session: the watches must be added again before
    /// the next read (see `Watches`).
    pub(super) rewatch: bool,
    pub(super) state: zk::StateWatcher,
    pub(super) keeper: tokio::task::JoinHandle<()>,
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
pub(super) struct Watches {
    pub(super) brokers: zk::PersistentWatcher,
    pub(super) config: zk::PersistentWatcher,
    pub(super) controller: zk::PersistentWatcher,
    /// Client quotas: `/config/clients` and `/config/users`.
    pub(super) quota_clients: zk::PersistentWatcher,
    pub(super) quota_users: zk::PersistentWatcher,
}

impl Watches {
    pub(super) async fn add(client: &zk::Client) -> Result<Watches, (&'static str, zk::Error)> {
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

pub(super) enum OpenError {
    Stopped,
    Failed(String),
}

impl Control {
    /// Connects, makes sure the tree exists, registers this broker, sets the watches and starts
    /// the lease keeper. With a deadline (startup) connecting gives up after it.
    pub(super) async fn open_session(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Session, OpenError> {
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

    pub(super) async fn cluster_id_of(&self, client: &zk::Client) -> Result<String, zk::Error> {
        loop {
            match client.get_data(layout::CLUSTER_ID).await {
                Ok((data, _)) => {
                    return Ok(layout::decode_cluster_id(&data).unwrap_or_else(|e| {
                        log::warn!("{e}; using its raw content as the cluster id");
                        String::from_utf8_lossy(&data).into_owned()
                    }))
                }
                Err(zk::Error::NoNode) => {
                    let id = layout::kafka_uuid_string(&crate::base::random::random_bytes::<16>());
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
    pub(super) async fn register(
        &self,
        client: &zk::Client,
        at_startup: bool,
    ) -> Result<(), OpenError> {
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
    pub(super) async fn release_lost_controller(
        &self,
        client: &zk::Client,
    ) -> Result<(), zk::Error> {
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
    pub(super) async fn lose_session(&mut self) {
        self.lease.revoke();
        crate::cluster::control_api::SESSION_ENDS
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

    /// After the shards stopped: remove our ephemeral znodes and close the session.
    pub(super) async fn close_session(&mut self) {
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
}
