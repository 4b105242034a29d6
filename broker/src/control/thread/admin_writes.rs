//! Writes done for shards' requests: topics created, deleted, grown and reconfigured, client
//! quotas, and producer-id blocks.

use super::*;

impl Control {
    pub(super) fn topic_config(
        &self,
        name: &str,
        overrides: &BTreeMap<String, String>,
    ) -> TopicConfig {
        TopicConfig::resolve(&self.config, overrides).unwrap_or_else(|e| {
            log::debug!("topic {name}: {e}");
            self.config.topic_defaults.clone()
        })
    }

    pub(super) async fn create_offsets_topic(&mut self, client: &zk::Client) {
        if self.view.topics.contains_key(CONSUMER_OFFSETS_TOPIC) {
            return;
        }
        let rf = self.config.offsets_topic_replication_factor;
        if self.view.brokers.len() < rf.max(1) as usize {
            return;
        }
        let configs = self.config.offsets_topic_configs();
        let id = crate::base::random::random_bytes::<16>();
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
    pub(super) async fn create_topic(
        &mut self,
        client: &zk::Client,
        name: &str,
        id: [u8; 16],
        partitions: i32,
        replication_factor: i16,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(), (i16, String)> {
        let sorted: Vec<BrokerId> = self.view.brokers.keys().copied().collect();
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
        let placed = election::place(
            &sorted,
            PartitionId(0),
            partitions,
            replication_factor as usize,
        );
        let assignment = TopicAssignment {
            partitions: placed
                .iter()
                .cloned()
                .enumerate()
                .map(|(p, r)| (PartitionId(p as i32), r))
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
                self.add_new_partition(&mut multi, name, PartitionId(p as i32), replicas)?;
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

    pub(super) fn zk_error(&mut self, what: &str, e: zk::Error) -> (i16, String) {
        self.failed(what, &e);
        (errors::REQUEST_TIMED_OUT, format!("ZooKeeper {what}: {e}"))
    }

    /// Deletes a topic's znodes, deepest first, in one multi-op.
    pub(super) async fn delete_topic(
        &mut self,
        client: &zk::Client,
        name: &str,
    ) -> Result<(), (i16, String)> {
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
    pub(super) async fn grow_topic(
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
            let rf = t
                .assignment
                .partitions
                .get(&PartitionId(0))
                .map_or(1, |r| r.len());
            let sorted: Vec<BrokerId> = self.view.brokers.keys().copied().collect();
            if rf > sorted.len() {
                return Err((
                    errors::INVALID_REPLICATION_FACTOR,
                    format!(
                        "replication factor {rf} needs as many live brokers; {} are alive",
                        sorted.len()
                    ),
                ));
            }
            let placed = election::place(&sorted, PartitionId(current), target - current, rf);
            let mut assignment = t.assignment.clone();
            let mut multi = client.new_multi_writer();
            let ops = (|| -> Result<(), zk::Error> {
                for (k, replicas) in placed.iter().enumerate() {
                    let p = PartitionId(current + k as i32);
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

    pub(super) async fn set_topic_config(
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
    pub(super) async fn refresh_quotas(&mut self, client: &zk::Client) {
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
    pub(super) async fn alter_client_quotas(
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

    pub(super) async fn apply_topics(
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

    pub(super) async fn producer_id_block(&mut self, count: i64) -> Result<ProducerId, String> {
        let Some(client) = self.client() else {
            return Err("not connected to ZooKeeper".into());
        };
        let count = count.max(1);
        loop {
            let (start, version) = match client.get_data(layout::LATEST_PRODUCER_ID_BLOCK).await {
                Ok((data, stat)) => {
                    let last =
                        layout::decode_producer_id_block(&data).map_err(|e| e.to_string())?;
                    (last.block_end.0 + 1, Some(stat.version))
                }
                Err(zk::Error::NoNode) => (0, None),
                Err(e) => return Err(self.zk_error("read producer id block", e).1),
            };
            let block = layout::ProducerIdBlock {
                broker: self.local,
                block_start: ProducerId(start),
                block_end: ProducerId(start + count - 1),
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
                Ok(()) => return Ok(ProducerId(start)),
                Err(zk::Error::BadVersion | zk::Error::NodeExists) => continue,
                Err(e) => return Err(self.zk_error("write producer id block", e).1),
            }
        }
    }
}
