//! `topic create | list | describe | delete | alter-config | add-partitions`. Creation,
//! deletion and partition changes go to the controller; configuration reads and changes go to
//! any broker (as Kafka's admin client does for topic resources).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use kafka_protocol::messages::{
    alter_configs_request::{AlterConfigsResource, AlterableConfig},
    create_partitions_request::CreatePartitionsTopic,
    describe_configs_request::DescribeConfigsResource,
    incremental_alter_configs_request as incremental, AlterConfigsRequest, CreatePartitionsRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};
use shardlog_client::{check_code, codes, Client, ClientError, Connection, NewTopic, TopicMeta};

use crate::cli::{
    TopicAddPartitionsArgs, TopicAlterConfigArgs, TopicCreateArgs, TopicDeleteArgs,
    TopicDescribeArgs, TopicListArgs,
};
use crate::output::{ids, print_json, Table};
use crate::Ctx;

/// ConfigResource type for topics.
const RESOURCE_TOPIC: i8 = 2;
/// DescribeConfigs `config_source` of a topic override.
const SOURCE_TOPIC_OVERRIDE: i8 = 1;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

fn source_name(source: i8) -> &'static str {
    match source {
        1 => "topic",
        2 => "broker (dynamic)",
        3 => "cluster default (dynamic)",
        4 => "broker (static)",
        5 => "default",
        6 => "broker logger",
        7 => "controller",
        _ => "unknown",
    }
}

pub fn create(ctx: &Ctx, a: &TopicCreateArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let topic = NewTopic {
        name: a.topic.clone(),
        partitions: a.partitions,
        // -1: the broker's default.replication.factor.
        replication_factor: a.replication_factor.unwrap_or(-1),
        configs: a.configs.clone(),
    };
    let mut results = client
        .create_topics(&[topic], a.validate_only)
        .with_context(|| format!("creating topic {:?}", a.topic))?;
    let (_, result) = results.pop().context("no result for the topic")?;
    let created = match result {
        Ok(()) => true,
        Err(e) if e.code() == Some(codes::TOPIC_ALREADY_EXISTS) && a.if_not_exists => false,
        Err(e) => return Err(e.into()),
    };
    let replication_factor = match a.replication_factor {
        Some(r) => Some(usize::try_from(r).unwrap_or(0)),
        None if created && !a.validate_only => chosen_replication_factor(&mut client, &a.topic),
        None => None,
    };
    if ctx.json {
        return print_json(
            out,
            &json!({
                "topic": a.topic,
                "created": created && !a.validate_only,
                "already_existed": !created,
                "validate_only": a.validate_only,
                "partitions": a.partitions,
                "replication_factor": replication_factor,
            }),
        );
    }
    let rf_text =
        replication_factor.map_or_else(|| "the broker default".to_string(), |r| r.to_string());
    if !created {
        writeln!(out, "topic {:?} already exists", a.topic)?;
    } else if a.validate_only {
        writeln!(
            out,
            "topic {:?} can be created (validated only, nothing created)",
            a.topic
        )?;
    } else {
        writeln!(
            out,
            "created topic {:?} with {} partition(s), replication factor {}",
            a.topic, a.partitions, rf_text
        )?;
    }
    Ok(())
}

/// The replication factor the broker chose for a topic just created, from its metadata; `None`
/// if that does not show it soon. In a cluster the broker answering Metadata may learn of the
/// topic a moment after the controller created it, hence the short wait.
fn chosen_replication_factor(client: &mut Client, topic: &str) -> Option<usize> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let found = client
            .refresh_metadata(Some(&[topic]))
            .ok()
            .and_then(|md| md.topics.get(topic).map(replication_factor))
            .filter(|r| *r > 0);
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn replication_factor(t: &TopicMeta) -> usize {
    t.partitions
        .values()
        .map(|p| p.replicas.len())
        .max()
        .unwrap_or(0)
}

pub fn list(ctx: &Ctx, a: &TopicListArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let md = client.refresh_metadata(None).context("listing topics")?;
    let topics: Vec<&TopicMeta> = md
        .topics
        .values()
        .filter(|t| a.internal || !t.is_internal)
        .collect();
    render_list(&topics, ctx.json, out)
}

pub fn render_list(
    topics: &[&TopicMeta],
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json_out {
        let v: Vec<Value> = topics
            .iter()
            .map(|t| {
                json!({
                    "topic": t.name,
                    "partitions": t.partitions.len(),
                    "replication_factor": replication_factor(t),
                    "internal": t.is_internal,
                    "topic_id": t.topic_id,
                })
            })
            .collect();
        return print_json(out, &Value::Array(v));
    }
    let mut table = Table::new(&["TOPIC", "PARTITIONS", "REPLICATION"]);
    for t in topics {
        table.row(vec![
            t.name.clone(),
            t.partitions.len().to_string(),
            replication_factor(t).to_string(),
        ]);
    }
    write!(out, "{}", table.render())?;
    Ok(())
}

/// One configuration entry as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
}

/// DescribeConfigs for one topic on `conn`.
fn describe_configs(conn: &mut Connection, topic: &str) -> Result<Vec<ConfigEntry>, ClientError> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None)]);
    let response = conn.call(&req)?;
    let r = response
        .results
        .iter()
        .find(|r| r.resource_type == RESOURCE_TOPIC && *r.resource_name == *topic)
        .ok_or_else(|| ClientError::Protocol {
            addr: conn.addr().to_string(),
            detail: format!("DescribeConfigs response has no result for topic {topic:?}"),
        })?;
    check_code(r.error_code, r.error_message.as_ref(), || {
        format!("describing the configuration of topic {topic:?}")
    })?;
    Ok(r.configs
        .iter()
        .map(|c| ConfigEntry {
            name: c.name.to_string(),
            value: c.value.as_ref().map(|v| v.to_string()),
            source: c.config_source,
            read_only: c.read_only,
            sensitive: c.is_sensitive,
        })
        .collect())
}

pub fn describe(ctx: &Ctx, a: &TopicDescribeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let names: Vec<&str> = a.topics.iter().map(String::as_str).collect();
    client
        .refresh_metadata(Some(&names))
        .context("fetching topic metadata")?;
    let mut described = Vec::new();
    for name in &names {
        let meta = client
            .metadata()
            .topics
            .get(*name)
            .cloned()
            .ok_or_else(|| {
                ClientError::broker(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {name:?} does not exist"),
                    None,
                )
            })?;
        check_code(meta.error_code, None, || {
            format!("describing topic {name:?}")
        })?;
        let configs = client.with_any(|conn| {
            if !conn.supports::<DescribeConfigsRequest>() {
                return Ok(None);
            }
            describe_configs(conn, name).map(Some)
        })?;
        let compacted = configs.as_ref().is_some_and(|cs| {
            cs.iter().any(|c| {
                c.name == "cleanup.policy"
                    && c.value.as_deref().is_some_and(|v| v.contains("compact"))
            })
        });
        let cleaner = if compacted {
            let admin = admin_addresses(&a.admin, client.metadata());
            cleaner_progress(&admin, name, ctx.timeout)
        } else {
            CleanerView::NotCompacted
        };
        described.push((meta, configs, cleaner));
    }
    render_describe(&described, a.all_configs, ctx.json, out)
}

/// The log cleaner's progress of a compacted topic, from the brokers' HTTP endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum CleanerView {
    /// `cleanup.policy` has no `compact` (or the configs are unknown): nothing to show.
    NotCompacted,
    /// No endpoint answered; why.
    Unavailable(String),
    /// One row per partition that an endpoint reported (its leader's when several did).
    Progress(Vec<CleanerRow>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CleanerRow {
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
    /// Offsets below it are compacted.
    pub first_dirty_offset: i64,
    /// Bytes of closed segments the cleaner may clean now.
    pub dirty_bytes: u64,
}

/// `--admin` as given, else port 9644 of every broker's host in Metadata.
fn admin_addresses(given: &[String], metadata: &shardlog_client::ClusterMetadata) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let mut hosts: Vec<String> = metadata
        .brokers
        .values()
        .map(|b| format!("{}:{}", b.host, crate::admin_http::DEFAULT_ADMIN_PORT))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Asks each endpoint for `GET /v1/partitions/<topic>` and merges the answers.
fn cleaner_progress(admin: &[String], topic: &str, timeout: Duration) -> CleanerView {
    let mut rows: BTreeMap<i32, (bool, CleanerRow)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut answered = false;
    for addr in admin {
        let body = match crate::admin_http::get(addr, &format!("/v1/partitions/{topic}"), timeout) {
            Ok((200, body)) => body,
            // The broker answers but holds no partition of the topic.
            Ok((404, _)) => {
                answered = true;
                continue;
            }
            Ok((status, _)) => {
                failures.push(format!("{addr}: HTTP {status}"));
                continue;
            }
            Err(e) => {
                failures.push(format!("{addr}: {e}"));
                continue;
            }
        };
        let Ok(v) = serde_json::from_str::<Value>(&body) else {
            failures.push(format!("{addr}: not JSON"));
            continue;
        };
        answered = true;
        for p in v["partitions"].as_array().into_iter().flatten() {
            let (
                Some(partition),
                Some(start),
                Some(end),
                Some(size),
                Some(dirty_from),
                Some(dirty),
            ) = (
                p["partition"].as_i64(),
                p["log_start_offset"].as_i64(),
                p["log_end_offset"].as_i64(),
                p["size_bytes"].as_u64(),
                p["cleaner"]["first_dirty_offset"].as_i64(),
                p["cleaner"]["dirty_bytes"].as_u64(),
            )
            else {
                continue;
            };
            let leader = p["leader"].as_bool().unwrap_or(false);
            let row = CleanerRow {
                partition: partition as i32,
                log_start_offset: start,
                log_end_offset: end,
                size_bytes: size,
                first_dirty_offset: dirty_from,
                dirty_bytes: dirty,
            };
            match rows.get(&row.partition) {
                Some((true, _)) => {}
                Some(_) if !leader => {}
                _ => {
                    rows.insert(row.partition, (leader, row));
                }
            }
        }
    }
    if !answered {
        let why = if failures.is_empty() {
            "no broker address known".to_string()
        } else {
            failures.join("; ")
        };
        return CleanerView::Unavailable(why);
    }
    CleanerView::Progress(rows.into_values().map(|(_, r)| r).collect())
}

pub fn render_describe(
    topics: &[(TopicMeta, Option<Vec<ConfigEntry>>, CleanerView)],
    all_configs: bool,
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let shown = |c: &&ConfigEntry| all_configs || c.source == SOURCE_TOPIC_OVERRIDE;
    let value_of = |c: &ConfigEntry| {
        if c.sensitive {
            "(sensitive)".to_string()
        } else {
            c.value.clone().unwrap_or_else(|| "null".to_string())
        }
    };
    if json_out {
        let v: Vec<Value> = topics
            .iter()
            .map(|(t, configs, cleaner)| {
                json!({
                    "topic": t.name,
                    "topic_id": t.topic_id,
                    "internal": t.is_internal,
                    "partitions": t.partitions.values().map(|p| json!({
                        "partition": p.partition,
                        "leader": p.leader,
                        "leader_epoch": p.leader_epoch,
                        "replicas": p.replicas,
                        "isr": p.isr,
                        "offline_replicas": p.offline_replicas,
                        "error_code": p.error_code,
                    })).collect::<Vec<_>>(),
                    "configs": configs.as_ref().map(|cs| cs.iter().filter(shown).map(|c| json!({
                        "name": c.name,
                        "value": if c.sensitive { Value::Null } else { json!(c.value) },
                        "source": source_name(c.source),
                        "read_only": c.read_only,
                        "sensitive": c.sensitive,
                    })).collect::<Vec<_>>()),
                    "cleaner": match cleaner {
                        CleanerView::NotCompacted => Value::Null,
                        CleanerView::Unavailable(why) => json!({ "unavailable": why }),
                        CleanerView::Progress(rows) => json!(rows.iter().map(|r| json!({
                            "partition": r.partition,
                            "log_start_offset": r.log_start_offset,
                            "log_end_offset": r.log_end_offset,
                            "size_bytes": r.size_bytes,
                            "first_dirty_offset": r.first_dirty_offset,
                            "dirty_bytes": r.dirty_bytes,
                        })).collect::<Vec<_>>()),
                    },
                })
            })
            .collect();
        return print_json(out, &Value::Array(v));
    }
    for (i, (t, configs, cleaner)) in topics.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(
            out,
            "topic: {}  partitions: {}  replication: {}{}",
            t.name,
            t.partitions.len(),
            replication_factor(t),
            if t.is_internal { "  (internal)" } else { "" }
        )?;
        let mut table = Table::new(&["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "OFFLINE"]);
        for p in t.partitions.values() {
            table.row(vec![
                p.partition.to_string(),
                if p.leader >= 0 {
                    p.leader.to_string()
                } else {
                    "none".to_string()
                },
                p.leader_epoch.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                ids(&p.offline_replicas),
            ]);
        }
        write!(out, "{}", table.render())?;
        match configs {
            None => writeln!(
                out,
                "configs: not available (the broker does not implement DescribeConfigs)"
            )?,
            Some(cs) => {
                let cs: Vec<&ConfigEntry> = cs.iter().filter(shown).collect();
                if cs.is_empty() {
                    writeln!(
                        out,
                        "configs: no overrides (--all-configs shows the defaults)"
                    )?;
                } else {
                    let mut table = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
                    for c in cs {
                        table.row(vec![
                            c.name.clone(),
                            value_of(c),
                            source_name(c.source).to_string(),
                        ]);
                    }
                    write!(out, "{}", table.render())?;
                }
            }
        }
        render_cleaner(cleaner, t.partitions.len(), out)?;
    }
    Ok(())
}

fn render_cleaner(
    cleaner: &CleanerView,
    partitions: usize,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match cleaner {
        CleanerView::NotCompacted => {}
        CleanerView::Unavailable(why) => writeln!(
            out,
            "log cleaner: progress not available ({why}; --admin HOST:PORT names the brokers' metrics.listen)"
        )?,
        CleanerView::Progress(rows) => {
            writeln!(out, "log cleaner:")?;
            let mut table = Table::new(&[
                "PARTITION",
                "LOG START",
                "LOG END",
                "SIZE",
                "CLEANED BELOW",
                "DIRTY BYTES",
            ]);
            for r in rows {
                table.row(vec![
                    r.partition.to_string(),
                    r.log_start_offset.to_string(),
                    r.log_end_offset.to_string(),
                    r.size_bytes.to_string(),
                    r.first_dirty_offset.to_string(),
                    r.dirty_bytes.to_string(),
                ]);
            }
            write!(out, "{}", table.render())?;
            if rows.len() < partitions {
                writeln!(
                    out,
                    "({} of {partitions} partitions reported; --admin names the other brokers' metrics.listen)",
                    rows.len()
                )?;
            }
        }
    }
    Ok(())
}

pub fn delete(ctx: &Ctx, a: &TopicDeleteArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let names: Vec<&str> = a.topics.iter().map(String::as_str).collect();
    let results = client.delete_topics(&names).context("deleting topics")?;
    let mut rows = Vec::new();
    let mut first_error = None;
    for (name, result) in results {
        let status = match result {
            Ok(()) => "deleted",
            Err(e) if e.code() == Some(codes::UNKNOWN_TOPIC_OR_PARTITION) && a.if_exists => {
                "did not exist"
            }
            Err(e) => {
                if !ctx.json {
                    eprintln!("topic {name:?}: {e}");
                }
                first_error.get_or_insert(e);
                "failed"
            }
        };
        rows.push((name, status));
    }
    if ctx.json {
        print_json(
            out,
            &Value::Array(
                rows.iter()
                    .map(|(n, s)| json!({"topic": n, "status": s}))
                    .collect(),
            ),
        )?;
    } else {
        for (name, status) in &rows {
            if *status != "failed" {
                writeln!(out, "topic {name:?}: {status}")?;
            }
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The full set of overrides after applying `set` and `delete` to `current`, for brokers that
/// only have the non-incremental AlterConfigs (which replaces every override at once).
pub fn merged_overrides(
    current: &[ConfigEntry],
    set: &[(String, String)],
    delete: &[String],
) -> BTreeMap<String, Option<String>> {
    let mut m: BTreeMap<String, Option<String>> = current
        .iter()
        .filter(|c| c.source == SOURCE_TOPIC_OVERRIDE && !c.sensitive)
        .map(|c| (c.name.clone(), c.value.clone()))
        .collect();
    for k in delete {
        m.remove(k);
    }
    for (k, v) in set {
        m.insert(k.clone(), Some(v.clone()));
    }
    m
}

pub fn alter_config(
    ctx: &Ctx,
    a: &TopicAlterConfigArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let topic = a.topic.clone();
    let name = StrBytes::from_string(topic.clone());
    let used = client
        .with_any(|conn| {
            if conn.supports::<IncrementalAlterConfigsRequest>() {
                let configs = a
                    .set
                    .iter()
                    .map(|(k, v)| {
                        incremental::AlterableConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_config_operation(OP_SET)
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .chain(a.delete.iter().map(|k| {
                        incremental::AlterableConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_config_operation(OP_DELETE)
                            .with_value(None)
                    }))
                    .collect();
                let req = IncrementalAlterConfigsRequest::default()
                    .with_validate_only(a.validate_only)
                    .with_resources(vec![incremental::AlterConfigsResource::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(name.clone())
                        .with_configs(configs)]);
                let response = conn.call(&req)?;
                for r in &response.responses {
                    check_code(r.error_code, r.error_message.as_ref(), || {
                        format!("changing the configuration of topic {topic:?}")
                    })?;
                }
                return Ok("IncrementalAlterConfigs");
            }
            // AlterConfigs replaces all overrides: read them first and send the merged set.
            let current = describe_configs(conn, &topic)?;
            let merged = merged_overrides(&current, &a.set, &a.delete);
            let req = AlterConfigsRequest::default()
                .with_validate_only(a.validate_only)
                .with_resources(vec![AlterConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(name.clone())
                    .with_configs(
                        merged
                            .iter()
                            .map(|(k, v)| {
                                AlterableConfig::default()
                                    .with_name(StrBytes::from_string(k.clone()))
                                    .with_value(v.clone().map(StrBytes::from_string))
                            })
                            .collect(),
                    )]);
            let response = conn.call(&req)?;
            for r in &response.responses {
                check_code(r.error_code, r.error_message.as_ref(), || {
                    format!("changing the configuration of topic {topic:?}")
                })?;
            }
            Ok("AlterConfigs")
        })
        .with_context(|| format!("changing the configuration of topic {:?}", a.topic))?;
    if ctx.json {
        return print_json(
            out,
            &json!({
                "topic": a.topic,
                "set": a.set.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
                "deleted": a.delete,
                "validate_only": a.validate_only,
                "api": used,
            }),
        );
    }
    let mut changes: Vec<String> = a.set.iter().map(|(k, v)| format!("set {k}={v}")).collect();
    changes.extend(a.delete.iter().map(|k| format!("deleted {k}")));
    writeln!(
        out,
        "{} topic {:?}: {}",
        if a.validate_only {
            "validated (not applied) for"
        } else {
            "updated"
        },
        a.topic,
        changes.join(", ")
    )?;
    Ok(())
}

pub fn add_partitions(
    ctx: &Ctx,
    a: &TopicAddPartitionsArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let current = client
        .partitions_of(&a.topic)
        .with_context(|| format!("looking up topic {:?}", a.topic))?;
    if a.total as usize <= current.len() {
        return Err(crate::exit::usage(format!(
            "topic {:?} already has {} partition(s); --total must be larger (partitions cannot be removed)",
            a.topic,
            current.len()
        )));
    }
    let timeout_ms = i32::try_from(ctx.timeout.as_millis()).unwrap_or(i32::MAX);
    client
        .with_controller(|conn| {
            let req = CreatePartitionsRequest::default()
                .with_timeout_ms(timeout_ms)
                .with_validate_only(a.validate_only)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(a.topic.clone())))
                    .with_count(a.total)
                    .with_assignments(None)]);
            let response = conn.call(&req)?;
            let r = response
                .results
                .iter()
                .find(|r| *r.name.0 == *a.topic)
                .ok_or_else(|| ClientError::Protocol {
                    addr: conn.addr().to_string(),
                    detail: format!("CreatePartitions response has no result for {:?}", a.topic),
                })?;
            check_code(r.error_code, r.error_message.as_ref(), || {
                format!("adding partitions to topic {:?}", a.topic)
            })
        })
        .with_context(|| format!("adding partitions to topic {:?}", a.topic))?;
    if ctx.json {
        return print_json(
            out,
            &json!({
                "topic": a.topic,
                "previous_partitions": current.len(),
                "partitions": a.total,
                "validate_only": a.validate_only,
            }),
        );
    }
    writeln!(
        out,
        "topic {:?}: {} partition(s) -> {}{}",
        a.topic,
        current.len(),
        a.total,
        if a.validate_only {
            " (validated only, not applied)"
        } else {
            ""
        }
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog_client::PartitionMeta;

    fn topic(name: &str, partitions: i32, rf: usize) -> TopicMeta {
        TopicMeta {
            name: name.to_string(),
            error_code: 0,
            topic_id: "id".into(),
            is_internal: false,
            partitions: (0..partitions)
                .map(|p| {
                    (
                        p,
                        PartitionMeta {
                            partition: p,
                            error_code: 0,
                            leader: 0,
                            leader_epoch: 3,
                            replicas: (0..rf as i32).collect(),
                            isr: (0..rf as i32).collect(),
                            offline_replicas: vec![],
                        },
                    )
                })
                .collect(),
        }
    }

    fn entry(name: &str, value: &str, source: i8) -> ConfigEntry {
        ConfigEntry {
            name: name.into(),
            value: Some(value.into()),
            source,
            read_only: false,
            sensitive: false,
        }
    }

    #[test]
    fn list_table_and_json() {
        let a = topic("alpha", 3, 2);
        let b = topic("b", 1, 1);
        let mut out = Vec::new();
        render_list(&[&a, &b], false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TOPIC  PARTITIONS  REPLICATION\nalpha  3           2\nb      1           1\n"
        );
        let mut out = Vec::new();
        render_list(&[&a], true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["topic"], "alpha");
        assert_eq!(v[0]["partitions"], 3);
        assert_eq!(v[0]["replication_factor"], 2);
    }

    #[test]
    fn describe_shows_partitions_and_only_overrides_by_default() {
        let configs = vec![
            entry("retention.ms", "1000", 1),
            entry("segment.bytes", "1073741824", 5),
        ];
        let t = vec![(topic("t", 2, 1), Some(configs), CleanerView::NotCompacted)];
        let mut out = Vec::new();
        render_describe(&t, false, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("topic: t  partitions: 2  replication: 1\n"),
            "{text}"
        );
        assert!(text.contains("PARTITION  LEADER  EPOCH  REPLICAS  ISR  OFFLINE\n0          0       3      0         0\n"), "{text}");
        assert!(text.contains("retention.ms  1000   topic"), "{text}");
        assert!(!text.contains("segment.bytes"), "{text}");

        let mut out = Vec::new();
        render_describe(&t, true, true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["configs"].as_array().unwrap().len(), 2);
        assert_eq!(v[0]["configs"][1]["source"], "default");
        assert_eq!(v[0]["partitions"][1]["partition"], 1);

        assert!(v[0]["cleaner"].is_null());
        assert!(!text.contains("log cleaner"), "{text}");

        let t = vec![(topic("t", 1, 1), None, CleanerView::NotCompacted)];
        let mut out = Vec::new();
        render_describe(&t, false, false, &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("not available"));
    }

    #[test]
    fn describe_shows_the_cleaner_progress_of_a_compacted_topic() {
        let row = CleanerRow {
            partition: 0,
            log_start_offset: 0,
            log_end_offset: 1_000_000,
            size_bytes: 52_000,
            first_dirty_offset: 990_000,
            dirty_bytes: 0,
        };
        let configs = vec![entry("cleanup.policy", "compact", 1)];
        let t = vec![(
            topic("c", 2, 1),
            Some(configs.clone()),
            CleanerView::Progress(vec![row]),
        )];
        let mut out = Vec::new();
        render_describe(&t, false, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("log cleaner:\nPARTITION  LOG START  LOG END  SIZE   CLEANED BELOW  DIRTY BYTES\n0          0          1000000  52000  990000         0\n"), "{text}");
        assert!(text.contains("(1 of 2 partitions reported"), "{text}");
        let mut out = Vec::new();
        render_describe(&t, false, true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["cleaner"][0]["first_dirty_offset"], 990_000);

        let t = vec![(
            topic("c", 1, 1),
            Some(configs),
            CleanerView::Unavailable("127.0.0.1:9: connection refused".into()),
        )];
        let mut out = Vec::new();
        render_describe(&t, false, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("log cleaner: progress not available (127.0.0.1:9: connection refused;"),
            "{text}"
        );
    }

    #[test]
    fn cleaner_progress_without_an_endpoint_is_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let v = cleaner_progress(&[format!("127.0.0.1:{port}")], "c", Duration::from_secs(1));
        assert!(
            matches!(v, CleanerView::Unavailable(ref why) if why.contains(&port.to_string())),
            "{v:?}"
        );
    }

    #[test]
    fn non_incremental_alter_keeps_other_overrides() {
        let current = vec![
            entry("retention.ms", "1000", 1),
            entry("cleanup.policy", "delete", 1),
            entry("segment.bytes", "1", 5),
        ];
        let m = merged_overrides(
            &current,
            &[
                ("retention.ms".into(), "5".into()),
                ("max.message.bytes".into(), "9".into()),
            ],
            &["cleanup.policy".into()],
        );
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            vec![
                ("max.message.bytes".to_string(), Some("9".to_string())),
                ("retention.ms".to_string(), Some("5".to_string())),
            ]
        );
    }
}
