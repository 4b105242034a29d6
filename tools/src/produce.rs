//! `produce`: lines from stdin or a file become records. Each line is a value, or `key SEP
//! value` with `--key-separator`. Records are batched per partition with the project's batch
//! builder (any compression) and sent with one Produce request per batch.
//!
//! Partitioning follows Kafka's default partitioner so keys land where a Java or librdkafka
//! producer would put them: murmur2 of the key, positive, modulo the partition count.
//! Records without a key go to one partition per batch, rotating (the "sticky" partitioner).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;
use shardlog_client::{codes, Client, ClientError};
use shardlog_protocol::batch::Compression;
use shardlog_protocol::records::BatchBuilder;

use crate::cli::ProduceArgs;
use crate::codec;
use crate::output::{print_json, Table};
use crate::Ctx;

/// Batches are cut before their uncompressed records exceed this, to stay below Kafka's
/// default `max.message.bytes` (1 MiB) even without compression.
pub const BATCH_BODY_BYTES_MAX: usize = 900 * 1024;

pub use shardlog_protocol::partitioner::murmur2;

/// The partition Kafka's default partitioner picks for a key.
pub fn partition_for_key(key: &[u8], partitions: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as usize % partitions) as i32
}

/// One input line split into key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Splits a line (without its line ending) at the first separator, if one is configured.
pub fn split_line(line: &[u8], separator: Option<&[u8]>, line_no: usize) -> anyhow::Result<Line> {
    let Some(sep) = separator else {
        return Ok(Line {
            key: None,
            value: line.to_vec(),
        });
    };
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(i) => Ok(Line {
            key: Some(line[..i].to_vec()),
            value: line[i + sep.len()..].to_vec(),
        }),
        None => anyhow::bail!(
            "line {line_no} has no key separator {:?}; every line must be KEY{}VALUE",
            String::from_utf8_lossy(sep),
            String::from_utf8_lossy(sep)
        ),
    }
}

/// Records produced to one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionResult {
    pub records: u64,
    /// `None` with acks=0 (the broker does not answer).
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
}

struct Pending {
    builder: BatchBuilder,
}

/// Batches records per partition and sends each batch when it is full.
struct Producer<'a> {
    client: &'a mut Client,
    topic: String,
    acks: i16,
    compression: Compression,
    batch_records: usize,
    pending: BTreeMap<i32, Pending>,
    results: BTreeMap<i32, PartitionResult>,
}

impl Producer<'_> {
    fn add(
        &mut self,
        partition: i32,
        timestamp: i64,
        line: &Line,
        headers: &[(&str, Option<&[u8]>)],
    ) -> anyhow::Result<()> {
        let compression = self.compression;
        let pending = self.pending.entry(partition).or_insert_with(|| Pending {
            builder: BatchBuilder::new(compression, timestamp),
        });
        pending
            .builder
            .push(timestamp, line.key.as_deref(), Some(&line.value), headers)
            .context("encoding a record")?;
        if pending.builder.len() >= self.batch_records
            || pending.builder.body_len() >= BATCH_BODY_BYTES_MAX
        {
            self.flush(partition)?;
        }
        Ok(())
    }

    fn flush(&mut self, partition: i32) -> anyhow::Result<()> {
        let Some(p) = self.pending.remove(&partition) else {
            return Ok(());
        };
        if p.builder.is_empty() {
            return Ok(());
        }
        let count = p.builder.len() as u64;
        let batch = Bytes::from(p.builder.build().context("building a record batch")?);
        let base = self
            .client
            .produce(&self.topic, partition, batch, self.acks)
            .with_context(|| format!("producing to {}-{partition}", self.topic))?;
        let r = self.results.entry(partition).or_default();
        r.records += count;
        if let Some(base) = base {
            r.first_offset.get_or_insert(base);
            r.last_offset = Some(base + count as i64 - 1);
        }
        Ok(())
    }

    fn flush_all(&mut self) -> anyhow::Result<()> {
        let partitions: Vec<i32> = self.pending.keys().copied().collect();
        for p in partitions {
            self.flush(p)?;
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn run(ctx: &Ctx, a: &ProduceArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let input: Box<dyn BufRead> = match &a.file {
        Some(path) => Box::new(BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(BufReader::new(std::io::stdin().lock())),
    };
    let mut client = ctx.connect()?;
    let partitions = client
        .partitions_of(&a.topic)
        .with_context(|| format!("looking up topic {:?}", a.topic))?;
    if partitions.is_empty() {
        anyhow::bail!("topic {:?} has no partitions", a.topic);
    }
    if let Some(p) = a.partition {
        if !partitions.contains(&p) {
            return Err(ClientError::broker(
                codes::UNKNOWN_TOPIC_OR_PARTITION,
                format!(
                    "topic {:?} has no partition {p} (it has {})",
                    a.topic,
                    partitions.len()
                ),
                None,
            )
            .into());
        }
    }
    let headers: Vec<(&str, Option<&[u8]>)> = a
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_bytes())))
        .collect();
    let mut producer = Producer {
        client: &mut client,
        topic: a.topic.clone(),
        acks: a.acks,
        compression: codec::compression(a.compression),
        batch_records: a.batch_records as usize,
        pending: BTreeMap::new(),
        results: BTreeMap::new(),
    };
    let separator = a.key_separator.as_deref().map(str::as_bytes);
    let mut sticky = 0usize;
    let mut in_sticky_batch = 0usize;
    let mut total = 0u64;
    for (i, line) in input.split(b'\n').enumerate() {
        let mut line = line.context("reading input")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let line = split_line(&line, separator, i + 1)?;
        let partition = match (a.partition, &line.key) {
            (Some(p), _) => p,
            (None, Some(k)) => partitions[partition_for_key(k, partitions.len()) as usize],
            (None, None) => {
                if in_sticky_batch >= a.batch_records as usize {
                    sticky += 1;
                    in_sticky_batch = 0;
                }
                in_sticky_batch += 1;
                partitions[sticky % partitions.len()]
            }
        };
        producer.add(partition, now_ms(), &line, &headers)?;
        total += 1;
    }
    producer.flush_all()?;
    let results = std::mem::take(&mut producer.results);
    render(&a.topic, total, &results, ctx.json, out)
}

pub fn render(
    topic: &str,
    total: u64,
    results: &BTreeMap<i32, PartitionResult>,
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json_out {
        return print_json(
            out,
            &json!({
                "topic": topic,
                "records": total,
                "partitions": results.iter().map(|(p, r)| json!({
                    "partition": p,
                    "records": r.records,
                    "first_offset": r.first_offset,
                    "last_offset": r.last_offset,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    if total == 0 {
        writeln!(out, "no input lines: nothing produced")?;
        return Ok(());
    }
    writeln!(out, "produced {total} record(s) to {topic}")?;
    let mut table = Table::new(&["PARTITION", "RECORDS", "FIRST OFFSET", "LAST OFFSET"]);
    let opt = |o: Option<i64>| o.map_or("-".to_string(), |o| o.to_string());
    for (p, r) in results {
        table.row(vec![
            p.to_string(),
            r.records.to_string(),
            opt(r.first_offset),
            opt(r.last_offset),
        ]);
    }
    write!(out, "{}", table.render())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        assert_eq!(
            split_line(b"k:v:w", Some(b":"), 1).unwrap(),
            Line {
                key: Some(b"k".to_vec()),
                value: b"v:w".to_vec()
            }
        );
        assert_eq!(
            split_line(b"::x", Some(b"::"), 1).unwrap(),
            Line {
                key: Some(vec![]),
                value: b"x".to_vec()
            }
        );
        assert_eq!(
            split_line(b"plain", None, 1).unwrap(),
            Line {
                key: None,
                value: b"plain".to_vec()
            }
        );
        let e = split_line(b"nokey", Some(b"\t"), 7)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 7 has no key separator"), "{e}");
    }

    #[test]
    fn summary_table_and_json() {
        let mut results = BTreeMap::new();
        results.insert(
            0,
            PartitionResult {
                records: 2,
                first_offset: Some(10),
                last_offset: Some(11),
            },
        );
        results.insert(
            1,
            PartitionResult {
                records: 1,
                first_offset: None,
                last_offset: None,
            },
        );
        let mut out = Vec::new();
        render("t", 3, &results, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "produced 3 record(s) to t\n\
             PARTITION  RECORDS  FIRST OFFSET  LAST OFFSET\n\
             0          2        10            11\n\
             1          1        -             -\n"
        );
        let mut out = Vec::new();
        render("t", 3, &results, true, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["records"], 3);
        assert_eq!(v["partitions"][0]["last_offset"], 11);
        assert_eq!(v["partitions"][1]["first_offset"], serde_json::Value::Null);
    }
}
