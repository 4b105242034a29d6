//! The Grafana dashboard shipped in `packaging/grafana/shardlog.json`: it must parse, import
//! with a Prometheus data source chosen at import time, and query only metrics the broker
//! exports. `EXPORTED` is the list of metric names the dashboard may use (histograms by their
//! `_bucket` series); renaming a metric in the broker means changing it here and in the
//! dashboard, and a typo in either fails this test.

use std::collections::BTreeSet;

use serde_json::Value;

/// Metric names the broker exports (see the metrics module of the broker), as the dashboard
/// queries them.
const EXPORTED: &[&str] = &[
    "shardlog_requests_total",
    "shardlog_request_duration_seconds_bucket",
    "shardlog_topic_bytes_in_total",
    "shardlog_topic_records_in_total",
    "shardlog_topic_bytes_out_total",
    "shardlog_partitions",
    "shardlog_partition_leaders",
    "shardlog_under_replicated_partitions",
    "shardlog_under_min_isr_partitions",
    "shardlog_offline_partitions",
    "shardlog_isr_shrinks_total",
    "shardlog_isr_expands_total",
    "shardlog_log_start_offset",
    "shardlog_log_end_offset",
    "shardlog_log_size_bytes",
    "shardlog_consumer_group_lag",
    "shardlog_connections",
    "shardlog_fetch_bytes_total",
    "shardlog_cross_shard_messages_total",
    "shardlog_lost_wakeup_rechecks_total",
    "shardlog_task_queue_latency_seconds_bucket",
    "shardlog_segment_rolls_total",
    "shardlog_retention_deleted_segments_total",
    "shardlog_recovery_truncations_total",
    "shardlog_zookeeper_session_state",
    "shardlog_zookeeper_session_expiries_total",
    "shardlog_controller",
    "shardlog_ready",
];

const DATASOURCE_UID: &str = "${DS_PROMETHEUS}";

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/grafana/shardlog.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// The `shardlog_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("shardlog_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every PromQL string of the dashboard: panel targets and template variable queries.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| queries(i, out)),
        _ => {}
    }
}

fn panels(d: &Value) -> Vec<&Value> {
    let top = d["panels"].as_array().expect("a panels array");
    top.iter()
        .chain(top.iter().filter_map(|p| p["panels"].as_array()).flatten())
        .collect()
}

#[test]
fn metric_names_extraction() {
    assert_eq!(
        metric_names("sum(rate(shardlog_a_total{x=\"1\"}[1m])) / shardlog_b"),
        vec!["shardlog_a_total", "shardlog_b"]
    );
    assert!(metric_names("up").is_empty());
}

#[test]
fn dashboard_uses_exactly_the_exported_metrics() {
    let d = dashboard();
    let mut exprs = Vec::new();
    queries(&d, &mut exprs);
    assert!(!exprs.is_empty(), "no queries in the dashboard");
    let exported: BTreeSet<&str> = EXPORTED.iter().copied().collect();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                exported.contains(name.as_str()),
                "the dashboard queries {name}, which the broker does not export (in {expr:?})"
            );
            if name.ends_with("_bucket") {
                assert!(
                    expr.contains("histogram_quantile(") && expr.contains(" le)"),
                    "{name} is a histogram: query it with histogram_quantile by le ({expr:?})"
                );
            }
            used.insert(name);
        }
    }
    let unused: Vec<&&str> = EXPORTED.iter().filter(|n| !used.contains(**n)).collect();
    assert!(unused.is_empty(), "no panel shows {unused:?}");
}

#[test]
fn dashboard_imports_with_a_chosen_prometheus() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_i64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    assert_eq!(d["uid"], "shardlog-overview");
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(inputs
        .iter()
        .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"));
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for p in panels(&d) {
        let title = p["title"].as_str().expect("every panel has a title");
        let id = p["id"].as_i64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} ({title}) is used twice");
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_i64().unwrap(), grid["w"].as_i64().unwrap());
        assert!(
            x >= 0 && w > 0 && x + w <= 24,
            "{title} does not fit the 24-column grid"
        );
        if p["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert_eq!(p["datasource"]["uid"], DATASOURCE_UID, "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], DATASOURCE_UID, "{title}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
        }
    }
    assert!(graphs >= 10, "only {graphs} panels");
}
