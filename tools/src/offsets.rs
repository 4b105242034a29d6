//! `offsets`: the earliest (log start) and latest (high watermark) offset of each partition,
//! from ListOffsets at each partition's leader.

use std::io::Write;

use anyhow::Context;
use serde_json::{json, Value};
use shardlog_client::{codes, ClientError, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};

use crate::cli::OffsetsArgs;
use crate::output::{print_json, Table};
use crate::Ctx;

/// One partition's offset range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    pub earliest: i64,
    pub latest: i64,
}

pub fn run(ctx: &Ctx, a: &OffsetsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let mut rows = Vec::new();
    for topic in &a.topics {
        let all = client
            .partitions_of(topic)
            .with_context(|| format!("looking up topic {topic:?}"))?;
        let partitions = if a.partition.is_empty() {
            all.clone()
        } else {
            a.partition.clone()
        };
        for p in partitions {
            if !all.contains(&p) {
                return Err(ClientError::broker(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    format!(
                        "topic {topic:?} has no partition {p} (it has {})",
                        all.len()
                    ),
                    None,
                )
                .into());
            }
            let earliest = client
                .list_offset(topic, p, EARLIEST_TIMESTAMP)
                .with_context(|| format!("listing offsets of {topic}-{p}"))?
                .offset;
            let latest = client
                .list_offset(topic, p, LATEST_TIMESTAMP)
                .with_context(|| format!("listing offsets of {topic}-{p}"))?
                .offset;
            rows.push(PartitionOffsets {
                topic: topic.clone(),
                partition: p,
                earliest,
                latest,
            });
        }
    }
    render(&rows, ctx.json, out)
}

pub fn render(
    rows: &[PartitionOffsets],
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json_out {
        return print_json(
            out,
            &Value::Array(
                rows.iter()
                    .map(|r| {
                        json!({
                            "topic": r.topic,
                            "partition": r.partition,
                            "earliest": r.earliest,
                            "latest": r.latest,
                            "records": (r.latest - r.earliest).max(0),
                        })
                    })
                    .collect(),
            ),
        );
    }
    let mut t = Table::new(&["TOPIC", "PARTITION", "EARLIEST", "LATEST", "RECORDS"]);
    for r in rows {
        t.row(vec![
            r.topic.clone(),
            r.partition.to_string(),
            r.earliest.to_string(),
            r.latest.to_string(),
            (r.latest - r.earliest).max(0).to_string(),
        ]);
    }
    write!(out, "{}", t.render())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json() {
        let rows = vec![
            PartitionOffsets {
                topic: "t".into(),
                partition: 0,
                earliest: 0,
                latest: 10,
            },
            PartitionOffsets {
                topic: "t".into(),
                partition: 1,
                earliest: 5,
                latest: 5,
            },
        ];
        let mut out = Vec::new();
        render(&rows, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TOPIC  PARTITION  EARLIEST  LATEST  RECORDS\n\
             t      0          0         10      10\n\
             t      1          5         5       0\n"
        );
        let mut out = Vec::new();
        render(&rows, true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["records"], 10);
        assert_eq!(v[1]["earliest"], 5);
    }
}
