//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.
//!
//! Topic configs are read from this shard's snapshot and changed only through the metadata
//! writer on shard 0: the new override set is resolved against the broker defaults
//! (`TopicConfig::resolve`, so an unknown key or a bad value is INVALID_CONFIG), persisted in the
//! registry and applied on every shard before the answer. A shard applying the snapshot hands
//! the new settings to its partitions (`Partition::set_config`): retention and segment settings
//! take effect at the next retention check, roll or append, `max.message.bytes` at once
//! (Produce reads it from the snapshot).
//!
//! Broker configs are static (properties file and flags): they can be described, not altered.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

use super::cluster_admin::Failure;
use super::Response;
use crate::base::errors;
use crate::base::errors::NOT_CONTROLLER;
use crate::cluster::metadata::TopicMeta;
use crate::config::{
    reference, valid_topic_name, BrokerConfig, ConfigError, TopicConfig, BROKER_KEYS, TOPIC_KEYS,
};
use crate::runtime::shard_table::ShardId;
use crate::shard::topics::publish_topics;
use crate::shard::Shard;

/// ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// DescribeConfigs `config_source` values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// DescribeConfigs `config_type` values (Kafka's ConfigDef types).
const TYPE_UNKNOWN: i8 = 0;
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_SHORT: i8 = 4;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

const BROKER_CONFIGS_ARE_STATIC: &str = "dynamic broker configs are not supported: broker \
     settings are static (set them in the properties file or with --set, then restart)";

/// Kafka's type of a topic or broker key and its documentation, from the configuration
/// reference (`config::reference`, which docs/configuration.md is rendered from).
fn key_info(key: &str) -> (i8, &'static str) {
    // A broker key that supplies a topic default is documented as that topic key.
    let key = TOPIC_KEYS
        .iter()
        .find(|(_, b)| *b == key)
        .map_or(key, |(t, _)| *t);
    let Some(setting) = reference::topic_setting(key).or_else(|| reference::broker_setting(key))
    else {
        return (TYPE_UNKNOWN, "");
    };
    let kind = match setting.kind {
        "boolean" => TYPE_BOOLEAN,
        "string" | "host:port" => TYPE_STRING,
        "int" => TYPE_INT,
        "short" => TYPE_SHORT,
        "long" => TYPE_LONG,
        "double" => TYPE_DOUBLE,
        "list" => TYPE_LIST,
        _ => TYPE_UNKNOWN,
    };
    (kind, setting.doc)
}

/// The broker keys that set `key` (the first is `key` itself), as Kafka lists synonyms.
fn broker_synonyms(key: &str) -> Vec<&str> {
    match key {
        "log.retention.ms" => vec![
            "log.retention.ms",
            "log.retention.minutes",
            "log.retention.hours",
        ],
        "log.roll.ms" => vec!["log.roll.ms", "log.roll.hours"],
        "broker.id" => vec!["broker.id", "node.id"],
        "log.dirs" => vec!["log.dirs", "log.dir"],
        "listeners" => vec!["listeners"],
        k => vec![k],
    }
}

/// One described config, before it is shaped for the negotiated version.
struct Described {
    name: String,
    value: String,
    read_only: bool,
    /// Highest precedence first; the first one's source is the entry's source.
    synonyms: Vec<(String, String, i8)>,
}

/// What the request asked to see.
struct Shape {
    version: i16,
    synonyms: bool,
    documentation: bool,
}

fn wire_entry(d: Described, shape: &Shape) -> DescribeConfigsResourceResult {
    let source = d.synonyms.first().map_or(SOURCE_DEFAULT, |s| s.2);
    let (config_type, doc) = key_info(&d.name);
    let synonyms = if shape.synonyms {
        d.synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(name))
                    .with_value(Some(StrBytes::from_string(value)))
                    .with_source(source)
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(d.name))
        .with_value(Some(StrBytes::from_string(d.value)))
        .with_read_only(d.read_only)
        .with_config_source(source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms);
    // Fields a version lacks must keep their defaults, or encoding fails.
    if shape.version >= 3 {
        e = e.with_config_type(config_type);
        if shape.documentation && !doc.is_empty() {
            e = e.with_documentation(Some(StrBytes::from_static_str(doc)));
        }
    }
    e
}

fn topic_configs(
    broker: &BrokerConfig,
    t: &TopicMeta,
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<Described> {
    let builtin = TopicConfig::default();
    TOPIC_KEYS
        .iter()
        .filter(|(k, _)| wanted(k))
        .map(|(key, broker_key)| {
            let mut synonyms = Vec::new();
            let over = t.overrides.get(*key);
            if let Some(v) = over {
                synonyms.push((key.to_string(), v.clone(), SOURCE_TOPIC));
            }
            for b in broker_synonyms(broker_key) {
                if let Some(v) = broker.explicit.get(b) {
                    synonyms.push((b.to_string(), v.clone(), SOURCE_STATIC_BROKER));
                }
            }
            if let Some(v) = builtin.get(key) {
                synonyms.push((broker_key.to_string(), v, SOURCE_DEFAULT));
            }
            // An override is shown as stored; otherwise the resolved default.
            let value = over
                .cloned()
                .or_else(|| t.config.get(key))
                .unwrap_or_default();
            Described {
                name: key.to_string(),
                value,
                read_only: false,
                synonyms,
            }
        })
        .collect()
}

fn broker_configs(broker: &BrokerConfig, wanted: &dyn Fn(&str) -> bool) -> Vec<Described> {
    let builtin = BrokerConfig::default();
    BROKER_KEYS
        .iter()
        .filter(|k| wanted(k))
        .map(|key| {
            let value = broker.get(key).unwrap_or_default();
            let default = builtin.get(key).unwrap_or_default();
            let mut synonyms = Vec::new();
            for b in broker_synonyms(key) {
                if let Some(v) = broker.explicit.get(b) {
                    synonyms.push((b.to_string(), v.clone(), SOURCE_STATIC_BROKER));
                }
            }
            // --broker-id and --data-dir set these without going through `explicit`.
            if synonyms.is_empty() && matches!(*key, "broker.id" | "log.dirs") && value != default {
                synonyms.push((key.to_string(), value.clone(), SOURCE_STATIC_BROKER));
            }
            synonyms.push((key.to_string(), default, SOURCE_DEFAULT));
            Described {
                name: key.to_string(),
                value,
                // Not changeable at run time (no dynamic broker configs).
                read_only: true,
                synonyms,
            }
        })
        .collect()
}

fn describe_one(
    shard: &Shard,
    resource_type: i8,
    name: &str,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<Described>, Failure> {
    match resource_type {
        RESOURCE_TOPIC => {
            if !valid_topic_name(name) {
                return Err((
                    errors::INVALID_TOPIC_EXCEPTION,
                    format!("invalid topic name {name:?}"),
                ));
            }
            let snapshot = shard.metadata();
            let t = snapshot.topic(name).ok_or_else(|| {
                (
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {name:?} does not exist"),
                )
            })?;
            Ok(topic_configs(&shard.config, t, wanted))
        }
        RESOURCE_BROKER => {
            let me = shard.config.broker_id;
            if name.is_empty() {
                // The cluster-wide dynamic broker defaults: there are none.
                return Ok(Vec::new());
            }
            match name.trim().parse::<i32>() {
                Ok(id) if id == me => Ok(broker_configs(&shard.config, wanted)),
                _ => Err((
                    errors::INVALID_REQUEST,
                    format!(
                        "Unexpected broker id, expected {me} or empty string, but received {name}"
                    ),
                )),
            }
        }
        other => Err((
            errors::INVALID_REQUEST,
            format!("resource type {other} is not supported (only topics (2) and brokers (4))"),
        )),
    }
}

pub async fn describe_configs(
    shard: &Rc<Shard>,
    version: i16,
    req: DescribeConfigsRequest,
) -> Response {
    let shape = Shape {
        version,
        synonyms: req.include_synonyms,
        documentation: version >= 3 && req.include_documentation,
    };
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            // Null or empty: every key. Requested keys this broker does not know are left out.
            let keys: Option<HashSet<String>> = r
                .configuration_keys
                .as_ref()
                .filter(|ks| !ks.is_empty())
                .map(|ks| ks.iter().map(|k| k.as_str().to_string()).collect());
            let wanted = |k: &str| keys.as_ref().is_none_or(|ks| ks.contains(k));
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match describe_one(shard, r.resource_type, r.resource_name.as_str(), &wanted) {
                Ok(configs) => base
                    .with_error_code(errors::NONE)
                    .with_configs(configs.into_iter().map(|d| wire_entry(d, &shape)).collect()),
                Err((code, msg)) => base
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(msg))),
            }
        })
        .collect();
    Response::Message(ResponseKind::DescribeConfigs(
        DescribeConfigsResponse::default().with_results(results),
    ))
}

/// A change to one topic's overrides, as shard 0 applies it.
enum Edit {
    /// AlterConfigs: the complete new override set.
    Replace(Vec<(String, Option<String>)>),
    /// IncrementalAlterConfigs: (key, operation, value), checked for shape already.
    Incremental(Vec<(String, i8, Option<String>)>),
}

/// A resource of an alter request: its answer decided here, or a topic edit for shard 0.
enum Planned {
    Decided(Failure),
    Topic(String, Edit),
}

/// Answers for the resources of an alter request, in order: decided ones as they are, topic
/// edits by the metadata writer.
async fn alter(
    shard: &Rc<Shard>,
    plans: Vec<Planned>,
    validate_only: bool,
) -> Vec<Result<(), Failure>> {
    let mut edits = Vec::new();
    let mut order = Vec::with_capacity(plans.len());
    for p in plans {
        match p {
            Planned::Decided(f) => order.push(Some(f)),
            Planned::Topic(name, edit) => {
                order.push(None);
                edits.push((name, edit));
            }
        }
    }
    let n = edits.len();
    let answers = if n == 0 {
        Vec::new()
    } else {
        shard
            .invoke_on(ShardId(0), move |s0| async move {
                registry_alter(s0, edits, validate_only).await
            })
            .await
            .unwrap_or_else(|| {
                vec![Err((errors::UNKNOWN_SERVER_ERROR, "shard 0 is gone".into())); n]
            })
    };
    let mut answers = answers.into_iter();
    order
        .into_iter()
        .map(|o| match o {
            Some(f) => Err(f),
            None => answers.next().unwrap_or(Err((
                errors::UNKNOWN_SERVER_ERROR,
                "no answer for this resource".into(),
            ))),
        })
        .collect()
}

/// The checks every alter request shares: each resource at most once, topics only.
fn plan_resource(
    resource_type: i8,
    name: &str,
    duplicated: bool,
    edit: impl FnOnce() -> Result<Edit, Failure>,
) -> Planned {
    if duplicated {
        return Planned::Decided((
            errors::INVALID_REQUEST,
            "Each resource must appear at most once.".into(),
        ));
    }
    match resource_type {
        RESOURCE_TOPIC if name.is_empty() => Planned::Decided((
            errors::INVALID_REQUEST,
            "Default topic resources are not allowed.".into(),
        )),
        RESOURCE_TOPIC if !valid_topic_name(name) => Planned::Decided((
            errors::INVALID_TOPIC_EXCEPTION,
            format!("invalid topic name {name:?}"),
        )),
        RESOURCE_TOPIC => match edit() {
            Ok(e) => Planned::Topic(name.to_string(), e),
            Err(f) => Planned::Decided(f),
        },
        RESOURCE_BROKER => {
            Planned::Decided((errors::INVALID_REQUEST, BROKER_CONFIGS_ARE_STATIC.into()))
        }
        other => Planned::Decided((
            errors::INVALID_REQUEST,
            format!("resource type {other} cannot be altered (only topics (2))"),
        )),
    }
}

/// How often each (type, name) occurs.
fn occurrences<'a>(
    resources: impl Iterator<Item = (i8, &'a str)>,
) -> HashMap<(i8, &'a str), usize> {
    let mut m = HashMap::new();
    for r in resources {
        *m.entry(r).or_default() += 1;
    }
    m
}

pub async fn alter_configs(shard: &Rc<Shard>, _version: i16, req: AlterConfigsRequest) -> Response {
    let counts = occurrences(
        req.resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let plans = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.as_str();
            let dup = counts.get(&(r.resource_type, name)).copied().unwrap_or(0) > 1;
            plan_resource(r.resource_type, name, dup, || {
                Ok(Edit::Replace(
                    r.configs
                        .iter()
                        .map(|c| {
                            (
                                c.name.as_str().to_string(),
                                c.value.as_ref().map(|v| v.as_str().to_string()),
                            )
                        })
                        .collect(),
                ))
            })
        })
        .collect();
    let answers = alter(shard, plans, req.validate_only).await;
    let responses = req
        .resources
        .into_iter()
        .zip(answers)
        .map(|(r, a)| {
            let base = alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            match a {
                Ok(()) => base.with_error_code(errors::NONE),
                Err((code, msg)) => base
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(msg))),
            }
        })
        .collect();
    Response::Message(ResponseKind::AlterConfigs(
        AlterConfigsResponse::default().with_responses(responses),
    ))
}

/// Request-shape checks of one IncrementalAlterConfigs resource (INVALID_REQUEST, as Kafka).
fn incremental_edit(
    configs: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<Edit, Failure> {
    let mut seen = HashSet::new();
    let mut dups = Vec::new();
    let mut nulls = Vec::new();
    let mut ops = Vec::with_capacity(configs.len());
    for c in configs {
        let name = c.name.as_str();
        if !seen.insert(name) {
            dups.push(name);
        }
        if !(OP_SET..=OP_SUBTRACT).contains(&c.config_operation) {
            return Err((
                errors::INVALID_REQUEST,
                format!("Unknown config operation {} for {name}", c.config_operation),
            ));
        }
        if c.config_operation != OP_DELETE && c.value.is_none() {
            nulls.push(name);
        }
        ops.push((
            name.to_string(),
            c.config_operation,
            c.value.as_ref().map(|v| v.as_str().to_string()),
        ));
    }
    if !dups.is_empty() {
        return Err((
            errors::INVALID_REQUEST,
            format!("Error due to duplicate config keys : {}", dups.join(",")),
        ));
    }
    if !nulls.is_empty() {
        return Err((
            errors::INVALID_REQUEST,
            format!("Null value not supported for : {}", nulls.join(",")),
        ));
    }
    Ok(Edit::Incremental(ops))
}

pub async fn incremental_alter_configs(
    shard: &Rc<Shard>,
    _version: i16,
    req: IncrementalAlterConfigsRequest,
) -> Response {
    let counts = occurrences(
        req.resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let plans = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.as_str();
            let dup = counts.get(&(r.resource_type, name)).copied().unwrap_or(0) > 1;
            plan_resource(r.resource_type, name, dup, || incremental_edit(&r.configs))
        })
        .collect();
    let answers = alter(shard, plans, req.validate_only).await;
    let responses = req
        .resources
        .into_iter()
        .zip(answers)
        .map(|(r, a)| {
            let base = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name);
            match a {
                Ok(()) => base.with_error_code(errors::NONE),
                Err((code, msg)) => base
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(msg))),
            }
        })
        .collect();
    Response::Message(ResponseKind::IncrementalAlterConfigs(
        IncrementalAlterConfigsResponse::default().with_responses(responses),
    ))
}

fn is_list_key(key: &str) -> bool {
    key_info(key).0 == TYPE_LIST
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The override set `edit` gives topic `t` (not yet validated against the values' rules).
fn new_overrides(t: &TopicMeta, edit: Edit) -> Result<BTreeMap<String, String>, Failure> {
    let invalid = |m: String| Err((errors::INVALID_CONFIG, m));
    match edit {
        Edit::Replace(list) => {
            let mut m = BTreeMap::new();
            for (k, v) in list {
                match v {
                    Some(v) => {
                        m.insert(k, v);
                    }
                    None => {
                        return invalid(format!("Null value not supported for topic configs: {k}"))
                    }
                }
            }
            Ok(m)
        }
        Edit::Incremental(ops) => {
            let mut m = t.overrides.clone();
            for (k, op, v) in ops {
                if !TOPIC_KEYS.iter().any(|(tk, _)| *tk == k) {
                    return invalid(ConfigError::UnknownKey(k).to_string());
                }
                let v = v.unwrap_or_default();
                match op {
                    OP_SET => {
                        m.insert(k, v);
                    }
                    OP_DELETE => {
                        m.remove(&k);
                    }
                    _ => {
                        let verb = if op == OP_APPEND {
                            "append"
                        } else {
                            "subtract"
                        };
                        if !is_list_key(&k) {
                            return invalid(format!(
                                "Config value {verb} is not allowed for config key: {k}"
                            ));
                        }
                        let current = m
                            .get(&k)
                            .cloned()
                            .or_else(|| t.config.get(&k))
                            .unwrap_or_default();
                        let mut list = split_list(&current);
                        let items = split_list(&v);
                        if op == OP_APPEND {
                            for i in items {
                                if !list.contains(&i) {
                                    list.push(i);
                                }
                            }
                        } else {
                            list.retain(|x| !items.contains(x));
                        }
                        m.insert(k, list.join(","));
                    }
                }
            }
            Ok(m)
        }
    }
}

/// On shard 0, under the registry gate: computes, validates and (unless `validate_only`)
/// persists and broadcasts each topic's new overrides. One answer per edit.
async fn registry_alter(
    s0: Rc<Shard>,
    edits: Vec<(String, Edit)>,
    validate_only: bool,
) -> Vec<Result<(), Failure>> {
    if !s0.is_metadata_writer() {
        return vec![Err((NOT_CONTROLLER, "not the metadata writer".into())); edits.len()];
    }
    let _permit = s0.registry_gate.acquire_permit(1).await;
    let snapshot = s0.metadata();
    let mut changed: Vec<Arc<TopicMeta>> = Vec::new();
    let mut results = Vec::with_capacity(edits.len());
    for (name, edit) in edits {
        let r = match snapshot.topic(&name) {
            None => Err((
                errors::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {name:?} does not exist"),
            )),
            Some(t) => new_overrides(t, edit).and_then(|overrides| {
                let config = TopicConfig::resolve(&s0.config, &overrides)
                    .map_err(|e| (errors::INVALID_CONFIG, e.to_string()))?;
                if overrides != t.overrides {
                    changed.push(Arc::new(TopicMeta {
                        overrides,
                        config,
                        ..(**t).clone()
                    }));
                }
                Ok(())
            }),
        };
        results.push(r);
    }
    if validate_only || changed.is_empty() {
        return results;
    }
    for t in &changed {
        log::info!("topic {} configs now {:?}", t.name, t.overrides);
    }
    publish_topics(&s0, &changed, results).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(overrides: &[(&str, &str)]) -> TopicMeta {
        let o: BTreeMap<String, String> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::cluster::metadata::new_topic(&BrokerConfig::default(), "t", 1, o)
            .expect("valid topic")
    }

    fn inc(ops: &[(&str, i8, Option<&str>)]) -> Edit {
        Edit::Incremental(
            ops.iter()
                .map(|(k, op, v)| (k.to_string(), *op, v.map(str::to_string)))
                .collect(),
        )
    }

    #[test]
    fn incremental_ops_edit_the_override_set() {
        let t = topic(&[("retention.ms", "1000"), ("segment.bytes", "2048")]);
        let m = new_overrides(
            &t,
            inc(&[
                ("retention.ms", OP_DELETE, None),
                ("max.message.bytes", OP_SET, Some("100")),
                ("cleanup.policy", OP_APPEND, Some("compact")),
            ]),
        )
        .expect("valid edit");
        assert_eq!(m.get("retention.ms"), None);
        assert_eq!(m.get("segment.bytes").map(String::as_str), Some("2048"));
        assert_eq!(m.get("max.message.bytes").map(String::as_str), Some("100"));
        assert_eq!(
            m.get("cleanup.policy").map(String::as_str),
            Some("delete,compact")
        );
        let t = topic(&[("cleanup.policy", "delete,compact")]);
        let m = new_overrides(&t, inc(&[("cleanup.policy", OP_SUBTRACT, Some("delete"))]))
            .expect("valid edit");
        assert_eq!(m.get("cleanup.policy").map(String::as_str), Some("compact"));
    }

    #[test]
    fn append_to_a_scalar_or_an_unknown_key_is_invalid_config() {
        let t = topic(&[]);
        for edit in [
            inc(&[("retention.ms", OP_APPEND, Some("5"))]),
            inc(&[("segment.bytes", OP_SUBTRACT, Some("5"))]),
            inc(&[("no.such.key", OP_DELETE, None)]),
            Edit::Replace(vec![("retention.ms".into(), None)]),
        ] {
            let e = new_overrides(&t, edit).expect_err("refused");
            assert_eq!(e.0, errors::INVALID_CONFIG, "{}", e.1);
        }
    }

    #[test]
    fn every_described_key_has_a_type_and_documentation() {
        for k in BROKER_KEYS
            .iter()
            .copied()
            .chain(TOPIC_KEYS.iter().map(|(t, _)| *t))
        {
            let (ty, doc) = key_info(k);
            assert_ne!(ty, TYPE_UNKNOWN, "{k}");
            assert!(!doc.is_empty(), "{k}");
        }
    }

    #[test]
    fn cleaner_settings_are_described_and_alterable() {
        let mut broker = BrokerConfig::default();
        broker
            .set("log.cleaner.min.cleanable.ratio", "0.25")
            .expect("valid");
        let t = crate::cluster::metadata::new_topic(
            &broker,
            "t",
            1,
            [("cleanup.policy".to_string(), "compact,delete".to_string())].into(),
        )
        .expect("valid");
        let all = topic_configs(&broker, &t, &|_| true);
        let get = |k: &str| all.iter().find(|d| d.name == k).expect("listed");
        let policy = get("cleanup.policy");
        assert_eq!(policy.value, "compact,delete");
        assert_eq!(policy.synonyms[0].2, SOURCE_TOPIC);
        let ratio = get("min.cleanable.dirty.ratio");
        assert_eq!(ratio.value, "0.25");
        assert_eq!(
            ratio.synonyms,
            [
                (
                    "log.cleaner.min.cleanable.ratio".to_string(),
                    "0.25".to_string(),
                    SOURCE_STATIC_BROKER
                ),
                (
                    "log.cleaner.min.cleanable.ratio".to_string(),
                    "0.5".to_string(),
                    SOURCE_DEFAULT
                ),
            ]
        );
        for (k, v, ty) in [
            ("delete.retention.ms", "86400000", TYPE_LONG),
            ("min.cleanable.dirty.ratio", "0.25", TYPE_DOUBLE),
            ("min.compaction.lag.ms", "0", TYPE_LONG),
            ("max.compaction.lag.ms", "9223372036854775807", TYPE_LONG),
        ] {
            let d = get(k);
            assert_eq!(d.value, v, "{k}");
            assert_eq!(key_info(k).0, ty, "{k}");
            if k != "min.cleanable.dirty.ratio" {
                assert_eq!(d.synonyms[0].2, SOURCE_DEFAULT, "{k}");
            }
        }
        let described = broker_configs(&broker, &|k| k.starts_with("log.cleaner."));
        let names: Vec<&str> = described.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "log.cleaner.backoff.ms",
                "log.cleaner.dedupe.buffer.size",
                "log.cleaner.enable",
                "log.cleaner.io.buffer.size",
                "log.cleaner.threads",
                "log.cleaner.delete.retention.ms",
                "log.cleaner.max.compaction.lag.ms",
                "log.cleaner.min.cleanable.ratio",
                "log.cleaner.min.compaction.lag.ms",
            ]
        );
        assert_eq!(key_info("log.cleaner.min.cleanable.ratio").0, TYPE_DOUBLE);

        // IncrementalAlterConfigs: set, subtract from the policy, and the checks of resolve.
        let m = new_overrides(
            &t,
            inc(&[
                ("min.cleanable.dirty.ratio", OP_SET, Some("0.9")),
                ("delete.retention.ms", OP_SET, Some("1000")),
                ("min.compaction.lag.ms", OP_SET, Some("10")),
                ("max.compaction.lag.ms", OP_SET, Some("20")),
                ("cleanup.policy", OP_SUBTRACT, Some("delete")),
            ]),
        )
        .expect("valid edit");
        let c = TopicConfig::resolve(&broker, &m).expect("valid values");
        assert_eq!(c.min_cleanable_dirty_ratio, 0.9);
        assert_eq!(c.delete_retention_ms, 1000);
        assert_eq!((c.min_compaction_lag_ms, c.max_compaction_lag_ms), (10, 20));
        assert!(c.cleanup_policy_compact && !c.cleanup_policy_delete);
        for bad in [
            inc(&[("min.cleanable.dirty.ratio", OP_SET, Some("1.5"))]),
            inc(&[("max.compaction.lag.ms", OP_SET, Some("0"))]),
            inc(&[("min.compaction.lag.ms", OP_SET, Some("30"))]),
            inc(&[("delete.retention.ms", OP_APPEND, Some("1"))]),
        ] {
            let t2 =
                crate::cluster::metadata::new_topic(&broker, "t", 1, m.clone()).expect("valid");
            let refused = new_overrides(&t2, bad)
                .and_then(|o| {
                    TopicConfig::resolve(&broker, &o)
                        .map_err(|e| (errors::INVALID_CONFIG, e.to_string()))
                })
                .expect_err("refused");
            assert_eq!(refused.0, errors::INVALID_CONFIG, "{}", refused.1);
        }
    }

    #[test]
    fn topic_sources_follow_precedence() {
        let mut broker = BrokerConfig::default();
        broker.set("log.retention.hours", "1").expect("valid");
        let mut o = BTreeMap::new();
        o.insert("segment.bytes".to_string(), "4096".to_string());
        let t = crate::cluster::metadata::new_topic(&broker, "t", 1, o).expect("valid");
        let all = topic_configs(&broker, &t, &|_| true);
        let get = |k: &str| all.iter().find(|d| d.name == k).expect("listed");
        let seg = get("segment.bytes");
        assert_eq!(seg.value, "4096");
        assert_eq!(seg.synonyms[0].2, SOURCE_TOPIC);
        let ret = get("retention.ms");
        assert_eq!(ret.value, "3600000");
        assert_eq!(
            ret.synonyms[0],
            (
                "log.retention.hours".into(),
                "1".into(),
                SOURCE_STATIC_BROKER
            )
        );
        assert_eq!(get("flush.ms").synonyms[0].2, SOURCE_DEFAULT);
        assert_eq!(all.len(), TOPIC_KEYS.len());
    }
}
