//! `quota describe | set | delete`: client quotas through DescribeClientQuotas and
//! AlterClientQuotas, with kafka-configs.sh's meaning (`--entity-type clients|users`,
//! `--entity-default`, `--add-config` / `--delete-config`). Any broker answers; in cluster
//! mode the change is stored in ZooKeeper and reaches every broker.

use std::io::Write;

use anyhow::Context;
use kafka_protocol::messages::{
    alter_client_quotas_request as alter, describe_client_quotas_request as describe,
    AlterClientQuotasRequest, DescribeClientQuotasRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};
use shardlog_client::check_code;

use crate::cli::{QuotaDeleteArgs, QuotaDescribeArgs, QuotaEntityArgs, QuotaSetArgs};
use crate::output::{print_json, Table};
use crate::Ctx;

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
const KEYS: [&str; 3] = [PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE];

/// DescribeClientQuotas match types.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;

/// The entity named on the command line as (entity type, name; `None` = default), user first.
fn entity(ctx: &Ctx, a: &QuotaEntityArgs) -> Vec<(&'static str, Option<String>)> {
    let mut out = Vec::new();
    if a.user_default {
        out.push(("user", None));
    } else if let Some(u) = &a.user {
        out.push(("user", Some(u.clone())));
    }
    if a.client_default {
        out.push(("client-id", None));
    } else if let Some(c) = &ctx.entity_client_id {
        out.push(("client-id", Some(c.clone())));
    }
    out
}

/// The entity of `set` and `delete`, which need one.
fn required_entity(
    ctx: &Ctx,
    a: &QuotaEntityArgs,
) -> anyhow::Result<Vec<(&'static str, Option<String>)>> {
    let parts = entity(ctx, a);
    if parts.is_empty() {
        return Err(crate::exit::usage(
            "name the entity: --client-id ID or --client-default, and/or --user USER or \
             --user-default",
        ));
    }
    if a.client_default && ctx.entity_client_id.is_some() {
        return Err(crate::exit::usage(
            "--client-id and --client-default cannot be used together",
        ));
    }
    Ok(parts)
}

fn entity_text(parts: &[(String, Option<String>)]) -> String {
    parts
        .iter()
        .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
        .collect::<Vec<_>>()
        .join(",")
}

/// A value as kafka-configs.sh prints it: byte rates as whole numbers.
fn value_text(key: &str, v: f64) -> String {
    if key != REQUEST_PERCENTAGE && v.fract() == 0.0 && v.abs() < 9e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// One described entity: its (type, name) parts and its (key, value) quotas.
pub type DescribedRow = (Vec<(String, Option<String>)>, Vec<(String, f64)>);

pub fn describe(ctx: &Ctx, a: &QuotaDescribeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let components: Vec<describe::ComponentData> = entity(ctx, &a.entity)
        .into_iter()
        .map(|(t, n)| {
            describe::ComponentData::default()
                .with_entity_type(StrBytes::from_static_str(t))
                .with_match_type(if n.is_some() {
                    MATCH_EXACT
                } else {
                    MATCH_DEFAULT
                })
                .with_match(n.map(StrBytes::from_string))
        })
        .collect();
    let req = DescribeClientQuotasRequest::default()
        .with_components(components)
        .with_strict(a.strict);
    let mut client = ctx.connect()?;
    let response = client
        .with_any(|conn| {
            let r = conn.call(&req)?;
            check_code(r.error_code, r.error_message.as_ref(), || {
                "describing client quotas".to_string()
            })?;
            Ok(r)
        })
        .context("describing client quotas")?;
    let mut rows: Vec<DescribedRow> = response
        .entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let parts = e
                .entity
                .iter()
                .map(|p| {
                    (
                        p.entity_type.to_string(),
                        p.entity_name.as_ref().map(|n| n.to_string()),
                    )
                })
                .collect();
            let values = e
                .values
                .iter()
                .map(|v| (v.key.to_string(), v.value))
                .collect();
            (parts, values)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    render_describe(&rows, ctx.json, out)
}

pub fn render_describe(
    rows: &[DescribedRow],
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json_out {
        let v: Vec<Value> = rows
            .iter()
            .map(|(parts, values)| {
                let mut entity = serde_json::Map::new();
                for (t, n) in parts {
                    entity.insert(t.clone(), n.clone().map_or(Value::Null, Value::String));
                }
                let mut quotas = serde_json::Map::new();
                for (k, v) in values {
                    quotas.insert(k.clone(), json!(v));
                }
                json!({"entity": entity, "quotas": quotas})
            })
            .collect();
        return print_json(out, &Value::Array(v));
    }
    if rows.is_empty() {
        writeln!(out, "no client quotas")?;
        return Ok(());
    }
    let mut table = Table::new(&["ENTITY", "QUOTAS"]);
    for (parts, values) in rows {
        let values: Vec<String> = values
            .iter()
            .map(|(k, v)| format!("{k}={}", value_text(k, *v)))
            .collect();
        table.row(vec![entity_text(parts), values.join(",")]);
    }
    write!(out, "{}", table.render())?;
    Ok(())
}

/// Sends `ops` for the entity `entity` names; returns the entity as (type, name) pairs.
fn alter(
    ctx: &Ctx,
    entity: &QuotaEntityArgs,
    ops: Vec<alter::OpData>,
    validate_only: bool,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let parts = required_entity(ctx, entity)?;
    let shown: Vec<(String, Option<String>)> = parts
        .iter()
        .map(|(t, n)| (t.to_string(), n.clone()))
        .collect();
    let what = entity_text(&shown);
    let req = AlterClientQuotasRequest::default()
        .with_validate_only(validate_only)
        .with_entries(vec![alter::EntryData::default()
            .with_entity(
                parts
                    .into_iter()
                    .map(|(t, n)| {
                        alter::EntityData::default()
                            .with_entity_type(StrBytes::from_static_str(t))
                            .with_entity_name(n.map(StrBytes::from_string))
                    })
                    .collect(),
            )
            .with_ops(ops)]);
    let mut client = ctx.connect()?;
    client
        .with_any(|conn| {
            let r = conn.call(&req)?;
            for e in &r.entries {
                check_code(e.error_code, e.error_message.as_ref(), || {
                    format!("changing the client quotas of {what}")
                })?;
            }
            Ok(())
        })
        .with_context(|| format!("changing the client quotas of {what}"))?;
    Ok(shown)
}

pub fn set(ctx: &Ctx, a: &QuotaSetArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut values: Vec<(&str, f64)> = Vec::new();
    if let Some(v) = a.producer_byte_rate {
        values.push((PRODUCER_BYTE_RATE, v as f64));
    }
    if let Some(v) = a.consumer_byte_rate {
        values.push((CONSUMER_BYTE_RATE, v as f64));
    }
    if let Some(v) = a.request_percentage {
        values.push((REQUEST_PERCENTAGE, v));
    }
    let ops = values
        .iter()
        .map(|(k, v)| {
            alter::OpData::default()
                .with_key(StrBytes::from_static_str(k))
                .with_value(*v)
                .with_remove(false)
        })
        .collect();
    let shown = alter(ctx, &a.entity, ops, a.validate_only)?;
    if ctx.json {
        let set: serde_json::Map<String, Value> = values
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        return print_json(
            out,
            &json!({"entity": entity_text(&shown), "set": set, "validate_only": a.validate_only}),
        );
    }
    let changes: Vec<String> = values
        .iter()
        .map(|(k, v)| format!("{k}={}", value_text(k, *v)))
        .collect();
    writeln!(
        out,
        "{} client quotas of {}: {}",
        if a.validate_only {
            "validated (not applied)"
        } else {
            "set"
        },
        entity_text(&shown),
        changes.join(", ")
    )?;
    Ok(())
}

pub fn delete(ctx: &Ctx, a: &QuotaDeleteArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let keys: Vec<String> = if a.key.is_empty() {
        KEYS.iter().map(|k| k.to_string()).collect()
    } else {
        a.key.clone()
    };
    let ops = keys
        .iter()
        .map(|k| {
            alter::OpData::default()
                .with_key(StrBytes::from_string(k.clone()))
                .with_value(0.0)
                .with_remove(true)
        })
        .collect();
    let shown = alter(ctx, &a.entity, ops, a.validate_only)?;
    if ctx.json {
        return print_json(
            out,
            &json!({"entity": entity_text(&shown), "deleted": keys, "validate_only": a.validate_only}),
        );
    }
    writeln!(
        out,
        "{} client quotas of {}: {}",
        if a.validate_only {
            "validated (not applied) deleting"
        } else {
            "deleted"
        },
        entity_text(&shown),
        keys.join(", ")
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_table_and_json() {
        let rows = vec![
            (
                vec![("client-id".to_string(), Some("app".to_string()))],
                vec![(PRODUCER_BYTE_RATE.to_string(), 1024.0)],
            ),
            (
                vec![("user".to_string(), None), ("client-id".to_string(), None)],
                vec![(REQUEST_PERCENTAGE.to_string(), 12.5)],
            ),
        ];
        let mut out = Vec::new();
        render_describe(&rows, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("client-id=app"), "{text}");
        assert!(text.contains("producer_byte_rate=1024"), "{text}");
        assert!(
            text.contains("user=<default>,client-id=<default>"),
            "{text}"
        );
        assert!(text.contains("request_percentage=12.5"), "{text}");
        let mut out = Vec::new();
        render_describe(&rows, true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["entity"]["client-id"], "app");
        assert_eq!(v[0]["quotas"][PRODUCER_BYTE_RATE], 1024.0);
        assert_eq!(v[1]["entity"]["user"], Value::Null);
    }
}
