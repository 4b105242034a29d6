//! `cluster info`: cluster id, controller and brokers. Uses DescribeCluster when the broker
//! has it (what Kafka's admin client asks) and falls back to Metadata otherwise.

use std::io::Write;

use anyhow::Context;
use kafka_protocol::messages::DescribeClusterRequest;
use serde_json::json;
use shardlog_client::{check_code, BrokerMeta};

use crate::output::{print_json, Table};
use crate::Ctx;

/// The cluster as one command sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerMeta>,
    /// Which API answered: "DescribeCluster" or "Metadata".
    pub source: &'static str,
}

pub fn info(ctx: &Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let described = client
        .with_any(|conn| {
            if !conn.supports::<DescribeClusterRequest>() {
                return Ok(None);
            }
            let response = conn.call(&DescribeClusterRequest::default())?;
            check_code(response.error_code, response.error_message.as_ref(), || {
                "describing the cluster".to_string()
            })?;
            Ok(Some(response))
        })
        .context("describing the cluster")?;
    let view = match described {
        Some(r) => ClusterView {
            cluster_id: Some(r.cluster_id.to_string()),
            controller_id: r.controller_id.0,
            brokers: r
                .brokers
                .iter()
                .map(|b| BrokerMeta {
                    node_id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                })
                .collect(),
            source: "DescribeCluster",
        },
        None => {
            let md = client.metadata();
            ClusterView {
                cluster_id: md.cluster_id.clone(),
                controller_id: md.controller_id,
                brokers: md.brokers.values().cloned().collect(),
                source: "Metadata",
            }
        }
    };
    render(&view, ctx.json, out)
}

pub fn render(view: &ClusterView, json_out: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json_out {
        return print_json(
            out,
            &json!({
                "cluster_id": view.cluster_id,
                "controller_id": view.controller_id,
                "brokers": view.brokers.iter().map(|b| json!({
                    "id": b.node_id,
                    "host": b.host,
                    "port": b.port,
                    "rack": b.rack,
                    "controller": b.node_id == view.controller_id,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    writeln!(
        out,
        "cluster id: {}",
        view.cluster_id.as_deref().unwrap_or("(none)")
    )?;
    writeln!(
        out,
        "controller: {}",
        if view.controller_id >= 0 {
            view.controller_id.to_string()
        } else {
            "(none)".to_string()
        }
    )?;
    let mut table = Table::new(&["BROKER", "HOST", "PORT", "RACK", "ROLE"]);
    for b in &view.brokers {
        table.row(vec![
            b.node_id.to_string(),
            b.host.clone(),
            b.port.to_string(),
            b.rack.clone().unwrap_or_else(|| "-".to_string()),
            if b.node_id == view.controller_id {
                "controller"
            } else {
                ""
            }
            .to_string(),
        ]);
    }
    write!(out, "{}", table.render())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ClusterView {
        ClusterView {
            cluster_id: Some("abc".into()),
            controller_id: 1,
            brokers: vec![
                BrokerMeta {
                    node_id: 0,
                    host: "h0".into(),
                    port: 9092,
                    rack: None,
                },
                BrokerMeta {
                    node_id: 1,
                    host: "h1".into(),
                    port: 9093,
                    rack: Some("r1".into()),
                },
            ],
            source: "Metadata",
        }
    }

    #[test]
    fn table_marks_the_controller() {
        let mut out = Vec::new();
        render(&view(), false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "cluster id: abc\ncontroller: 1\n\
             BROKER  HOST  PORT  RACK  ROLE\n\
             0       h0    9092  -\n\
             1       h1    9093  r1    controller\n"
        );
    }

    #[test]
    fn json_lists_brokers() {
        let mut out = Vec::new();
        render(&view(), true, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cluster_id"], "abc");
        assert_eq!(v["brokers"][1]["controller"], true);
        assert_eq!(v["brokers"][0]["rack"], serde_json::Value::Null);
    }
}
