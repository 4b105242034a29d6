//! `consume`: prints records of a topic, with or without a consumer group.
//!
//! Where to start: `--from-beginning` (the default), `--from-end`, `--offset N` or
//! `--timestamp MS`; with `--group`, the committed offsets win and the flag only applies to
//! partitions without one (Kafka's `auto.offset.reset`). When to stop: by default at the end
//! of each partition as it was when reading started; `--count N` after N records (waiting for
//! them); `--follow` never; `--idle-timeout-ms` when nothing arrived for that long.
//!
//! Fetches ask each partition leader for all its partitions at once. A record is "consumed"
//! once printed: positions (and, with a group, committed offsets) advance record by record, so
//! `--count` commits exactly what it printed.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use kafka_protocol::messages::{
    fetch_request::{FetchPartition, FetchTopic},
    BrokerId, FetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use shardlog_client::{
    check_code, codes, Client, ClientError, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use shardlog_protocol::batch::{BatchError, BatchHeader};
use shardlog_protocol::records::{self, Record, RecordsError};

use crate::cli::ConsumeArgs;
use crate::codec;
use crate::exit::{usage, CorruptBatch};
use crate::membership::{self, GroupMember, Heartbeat};
use crate::segment::record_json;
use crate::template::{RecordView, Template};
use crate::Ctx;

/// Rounds in a row in which some partition's leader was unknown before giving up.
const STALE_ROUNDS_MAX: usize = 20;

/// Where reading starts in a partition without a committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

impl Start {
    pub fn from_args(a: &ConsumeArgs) -> Start {
        if a.from_end {
            Start::Latest
        } else if let Some(o) = a.offset {
            Start::Offset(o)
        } else if let Some(t) = a.timestamp {
            Start::Timestamp(t)
        } else {
            Start::Earliest
        }
    }

    fn resolve(self, client: &mut Client, topic: &str, partition: i32) -> anyhow::Result<i64> {
        let list = |client: &mut Client, ts| {
            client
                .list_offset(topic, partition, ts)
                .with_context(|| format!("listing offsets of {topic}-{partition}"))
        };
        Ok(match self {
            Start::Earliest => list(client, EARLIEST_TIMESTAMP)?.offset,
            Start::Latest => list(client, LATEST_TIMESTAMP)?.offset,
            Start::Offset(o) => o,
            Start::Timestamp(ts) => match list(client, ts)?.offset {
                // No record at or after the time: start at the end.
                -1 => list(client, LATEST_TIMESTAMP)?.offset,
                o => o,
            },
        })
    }
}

/// Formats records and counts them against `--count`.
pub struct Printer<'a> {
    template: Template,
    json: bool,
    out: &'a mut dyn Write,
    pub printed: u64,
    limit: Option<u64>,
}

impl<'a> Printer<'a> {
    pub fn new(template: Template, json: bool, out: &'a mut dyn Write, limit: Option<u64>) -> Self {
        Printer {
            template,
            json,
            out,
            printed: 0,
            limit,
        }
    }

    pub fn done(&self) -> bool {
        self.limit.is_some_and(|l| self.printed >= l)
    }

    pub fn print(&mut self, topic: &str, partition: i32, r: &Record) -> anyhow::Result<()> {
        let view = RecordView {
            topic,
            partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: &r.headers,
        };
        if self.json {
            serde_json::to_writer(&mut *self.out, &record_json(&view))?;
            writeln!(self.out)?;
        } else {
            writeln!(self.out, "{}", self.template.render(&view))?;
        }
        self.printed += 1;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// Reading state over a set of partitions of one topic.
struct Reader {
    topic: String,
    /// Next offset to read per partition.
    positions: BTreeMap<i32, i64>,
    /// Where to stop per partition (`None`: never stop at the end).
    ends: Option<BTreeMap<i32, i64>>,
    max_bytes: i32,
    max_wait: Duration,
    stale_rounds: usize,
}

impl Reader {
    fn active(&self) -> Vec<i32> {
        self.positions
            .iter()
            .filter(|(p, pos)| match &self.ends {
                None => true,
                Some(ends) => ends.get(p).is_some_and(|end| **pos < *end),
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// One Fetch per leader over the active partitions; prints what arrives. Returns the
    /// number of records printed.
    fn round(&mut self, client: &mut Client, printer: &mut Printer<'_>) -> anyhow::Result<u64> {
        let before = printer.printed;
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        let mut stale = false;
        for p in self.active() {
            match client.leader_of(&self.topic, p) {
                Ok(leader) => by_leader.entry(leader).or_default().push(p),
                Err(e) if e.is_stale_metadata() => stale = true,
                Err(e) => return Err(e.into()),
            }
        }
        for (leader, partitions) in by_leader {
            if printer.done() {
                break;
            }
            stale |= self.fetch_from(client, leader, &partitions, printer)?;
        }
        if stale {
            self.stale_rounds += 1;
            if self.stale_rounds > STALE_ROUNDS_MAX {
                return Err(ClientError::broker(
                    codes::LEADER_NOT_AVAILABLE,
                    format!("partitions of {} have had no reachable leader for {STALE_ROUNDS_MAX} rounds", self.topic),
                    None,
                )
                .into());
            }
            client.refresh_metadata(Some(&[self.topic.as_str()]))?;
            std::thread::sleep(Duration::from_millis(100));
        } else {
            self.stale_rounds = 0;
        }
        printer.flush()?;
        Ok(printer.printed - before)
    }

    /// Fetches `partitions` from `leader`; returns whether some partition's metadata is stale.
    fn fetch_from(
        &mut self,
        client: &mut Client,
        leader: i32,
        partitions: &[i32],
        printer: &mut Printer<'_>,
    ) -> anyhow::Result<bool> {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(self.max_wait.as_millis() as i32)
            .with_min_bytes(1)
            .with_max_bytes(self.max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(self.topic.clone())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_fetch_offset(self.positions[p])
                                .with_partition_max_bytes(self.max_bytes)
                        })
                        .collect(),
                )]);
        let conn = client.connection_to(leader)?;
        let saved = conn.timeout();
        let needed = self.max_wait + Duration::from_secs(5);
        if needed > saved {
            conn.set_timeout(needed)?;
        }
        let response = conn.call(&req);
        if needed > saved && conn.broken().is_none() {
            conn.set_timeout(saved)?;
        }
        let response = response.with_context(|| format!("fetching from broker {leader}"))?;
        check_code(response.error_code, None, || {
            format!("fetching {}", self.topic)
        })?;
        let mut stale = false;
        let mut answered: BTreeMap<i32, _> = BTreeMap::new();
        for t in response
            .responses
            .iter()
            .filter(|t| *t.topic.0 == *self.topic)
        {
            for pd in &t.partitions {
                answered.insert(pd.partition_index, pd);
            }
        }
        for p in partitions {
            if printer.done() {
                break;
            }
            let Some(pd) = answered.get(p) else { continue };
            let pos = self.positions[p];
            match pd.error_code {
                codes::NONE => {}
                codes::OFFSET_OUT_OF_RANGE => {
                    let earliest = client
                        .list_offset(&self.topic, *p, EARLIEST_TIMESTAMP)?
                        .offset;
                    let reset = if pos < earliest {
                        earliest
                    } else {
                        client
                            .list_offset(&self.topic, *p, LATEST_TIMESTAMP)?
                            .offset
                    };
                    eprintln!(
                        "note: offset {pos} is out of range for {}-{p}; continuing at {reset}",
                        self.topic
                    );
                    self.positions.insert(*p, reset);
                    continue;
                }
                code => {
                    let e = ClientError::broker(
                        code,
                        format!("fetching {}-{p} at offset {pos}", self.topic),
                        None,
                    );
                    if e.is_stale_metadata() {
                        stale = true;
                        continue;
                    }
                    return Err(e.into());
                }
            }
            let blob = pd.records.clone().unwrap_or_default();
            if blob.is_empty() {
                continue;
            }
            let malformed = |detail: String| ClientError::Protocol {
                addr: format!("broker {leader}"),
                detail,
            };
            let summary = records::summarize(&blob).map_err(|e| {
                malformed(format!(
                    "records of {}-{p} at offset {pos}: {e}",
                    self.topic
                ))
            })?;
            if summary.batches == 0 {
                anyhow::bail!(
                    "the record batch at offset {pos} of {}-{p} is larger than --max-bytes {}; raise --max-bytes",
                    self.topic,
                    self.max_bytes
                );
            }
            let records =
                codec::decode_batch_records(&blob).map_err(|e| match corrupt_batch(&blob, &e) {
                    Some(header) => anyhow::Error::new(CorruptBatch {
                        topic: self.topic.clone(),
                        partition: *p,
                        broker: leader,
                        base_offset: header.base_offset,
                        last_offset: header.last_offset(),
                    }),
                    None => malformed(format!(
                        "records of {}-{p} at offset {pos} do not decode: {e}",
                        self.topic
                    ))
                    .into(),
                })?;
            let mut next = pos;
            for r in records.iter().filter(|r| r.offset >= pos) {
                if printer.done() {
                    break;
                }
                if let Some(end) = self.ends.as_ref().and_then(|e| e.get(p)) {
                    if r.offset >= *end {
                        break;
                    }
                }
                printer.print(&self.topic, *p, r)?;
                next = r.offset + 1;
            }
            if !printer.done() {
                // Skip what was not printed because it is not a record (control batches) or
                // lies past the stop point; the stop check uses the same position.
                if let Some(n) = summary.next_offset {
                    next = next.max(n);
                }
            }
            self.positions.insert(*p, next);
        }
        Ok(stale)
    }
}

/// The header of the batch in `blob` that failed its CRC check, when that is what `e` says.
/// The batch walk parsed that header before the CRC was checked, so it is there.
fn corrupt_batch(blob: &[u8], e: &RecordsError) -> Option<BatchHeader> {
    match e {
        RecordsError::Batch {
            at,
            source: BatchError::BadCrc,
        } => BatchHeader::parse(blob.get(*at..)?).ok(),
        _ => None,
    }
}

fn end_offsets(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let mut ends = BTreeMap::new();
    for p in partitions {
        let end = client
            .list_offset(topic, *p, LATEST_TIMESTAMP)
            .with_context(|| format!("listing the end offset of {topic}-{p}"))?
            .offset;
        ends.insert(*p, end);
    }
    Ok(ends)
}

/// Whether reading stops at the end of each partition.
fn stops_at_end(a: &ConsumeArgs) -> bool {
    !a.follow && a.count.is_none()
}

fn idle_expired(a: &ConsumeArgs, last_progress: Instant) -> bool {
    a.idle_timeout_ms
        .is_some_and(|ms| last_progress.elapsed() >= Duration::from_millis(ms))
}

pub fn run(ctx: &Ctx, a: &ConsumeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let template = Template::parse(&a.format).map_err(usage)?;
    let mut client = ctx.connect()?;
    let all = client
        .partitions_of(&a.topic)
        .with_context(|| format!("looking up topic {:?}", a.topic))?;
    let mut printer = Printer::new(template, ctx.json, out, a.count);
    match &a.group {
        None => {
            let chosen = if a.partition.is_empty() {
                all.clone()
            } else {
                a.partition.clone()
            };
            if let Some(p) = chosen.iter().find(|p| !all.contains(p)) {
                return Err(ClientError::broker(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    format!(
                        "topic {:?} has no partition {p} (it has {})",
                        a.topic,
                        all.len()
                    ),
                    None,
                )
                .into());
            }
            consume_plain(&mut client, a, &chosen, &mut printer)
        }
        Some(group) => consume_group(&mut client, a, group, &mut printer),
    }
}

fn reader_for(
    client: &mut Client,
    a: &ConsumeArgs,
    partitions: &[i32],
    committed: &BTreeMap<(String, i32), i64>,
) -> anyhow::Result<Reader> {
    let start = Start::from_args(a);
    let mut positions = BTreeMap::new();
    for p in partitions {
        let pos = match committed.get(&(a.topic.clone(), *p)) {
            Some(o) => *o,
            None => start.resolve(client, &a.topic, *p)?,
        };
        positions.insert(*p, pos);
    }
    let ends = if stops_at_end(a) {
        Some(end_offsets(client, &a.topic, partitions)?)
    } else {
        None
    };
    Ok(Reader {
        topic: a.topic.clone(),
        positions,
        ends,
        max_bytes: a.max_bytes,
        max_wait: Duration::from_millis(a.max_wait_ms),
        stale_rounds: 0,
    })
}

fn consume_plain(
    client: &mut Client,
    a: &ConsumeArgs,
    partitions: &[i32],
    printer: &mut Printer<'_>,
) -> anyhow::Result<()> {
    let mut reader = reader_for(client, a, partitions, &BTreeMap::new())?;
    let mut last_progress = Instant::now();
    loop {
        if printer.done() || reader.active().is_empty() || idle_expired(a, last_progress) {
            return Ok(());
        }
        if reader.round(client, printer)? > 0 {
            last_progress = Instant::now();
        }
    }
}

fn consume_group(
    client: &mut Client,
    a: &ConsumeArgs,
    group: &str,
    printer: &mut Printer<'_>,
) -> anyhow::Result<()> {
    let mut member = GroupMember::new(group, std::slice::from_ref(&a.topic));
    member.join(client)?;
    let result = group_loop(client, a, &mut member, printer);
    // Leave even after an error, so the group does not wait for the session to time out.
    let left = member.leave(client);
    result?;
    if let Err(e) = left {
        eprintln!("warning: {e:#}");
    }
    Ok(())
}

fn group_loop(
    client: &mut Client,
    a: &ConsumeArgs,
    member: &mut GroupMember,
    printer: &mut Printer<'_>,
) -> anyhow::Result<()> {
    let mut last_progress = Instant::now();
    'generation: loop {
        let assigned = member.assignment.get(&a.topic).cloned().unwrap_or_default();
        let mut wanted = BTreeMap::new();
        wanted.insert(a.topic.clone(), assigned.clone());
        let committed = if assigned.is_empty() {
            BTreeMap::new()
        } else {
            membership::committed_offsets(client, &member.group, Some(&wanted))?
        };
        let mut reader = reader_for(client, a, &assigned, &committed)?;
        if assigned.is_empty() {
            eprintln!(
                "note: group {:?} assigned no partition of {} to this member (generation {})",
                member.group, a.topic, member.generation
            );
        }
        let mut committed_positions = reader.positions.clone();
        loop {
            let finished = printer.done()
                || (reader.ends.is_some() && reader.active().is_empty())
                || idle_expired(a, last_progress);
            if finished {
                commit(a, member, client, &reader, &mut committed_positions)?;
                return Ok(());
            }
            if assigned.is_empty() {
                std::thread::sleep(reader.max_wait.max(Duration::from_millis(100)));
            } else if reader.round(client, printer)? > 0 {
                last_progress = Instant::now();
                commit(a, member, client, &reader, &mut committed_positions)?;
            }
            if member.heartbeat_if_due(client)? == Heartbeat::Rejoin {
                // Best effort: the generation may already be over.
                if let Err(e) = commit(a, member, client, &reader, &mut committed_positions) {
                    eprintln!("warning: could not commit before rejoining: {e:#}");
                }
                member.join(client)?;
                continue 'generation;
            }
        }
    }
}

/// Commits positions that moved since the last commit (unless --no-commit).
fn commit(
    a: &ConsumeArgs,
    member: &GroupMember,
    client: &mut Client,
    reader: &Reader,
    committed: &mut BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    if a.no_commit {
        return Ok(());
    }
    let moved: BTreeMap<(String, i32), i64> = reader
        .positions
        .iter()
        .filter(|(p, pos)| committed.get(p) != Some(pos))
        .map(|(p, pos)| ((a.topic.clone(), *p), *pos))
        .collect();
    member.commit(client, &moved)?;
    for ((_, p), pos) in moved {
        committed.insert(p, pos);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use clap::Parser;

    fn consume_args(args: &[&str]) -> ConsumeArgs {
        let cli = crate::cli::Cli::try_parse_from(
            ["shardlog-cli", "consume", "t"]
                .iter()
                .chain(args.iter())
                .copied(),
        )
        .unwrap();
        match cli.command {
            crate::cli::Command::Consume(a) => a,
            _ => unreachable!("parsed a consume command"),
        }
    }

    #[test]
    fn start_policy_follows_the_flags() {
        assert_eq!(Start::from_args(&consume_args(&[])), Start::Earliest);
        assert_eq!(
            Start::from_args(&consume_args(&["--from-end"])),
            Start::Latest
        );
        assert_eq!(
            Start::from_args(&consume_args(&["-o", "7"])),
            Start::Offset(7)
        );
        assert_eq!(
            Start::from_args(&consume_args(&["--timestamp", "9"])),
            Start::Timestamp(9)
        );
        assert!(stops_at_end(&consume_args(&[])));
        assert!(!stops_at_end(&consume_args(&["-F"])));
        assert!(!stops_at_end(&consume_args(&["-n", "3"])));
    }

    #[test]
    fn printer_counts_and_formats() {
        let mut out = Vec::new();
        {
            let t = Template::parse("{partition}:{offset}:{key}={value}").unwrap();
            let mut p = Printer::new(t, false, &mut out, Some(2));
            let r = Record {
                offset: 5,
                timestamp: 1,
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"v")),
                headers: vec![],
            };
            assert!(!p.done());
            p.print("t", 1, &r).unwrap();
            p.print("t", 1, &r).unwrap();
            assert!(p.done());
        }
        assert_eq!(String::from_utf8(out).unwrap(), "1:5:k=v\n1:5:k=v\n");

        let mut out = Vec::new();
        {
            let mut p = Printer::new(Template::parse("").unwrap(), true, &mut out, None);
            let r = Record {
                offset: 1,
                timestamp: 2,
                key: None,
                value: Some(Bytes::from_static(b"x")),
                headers: vec![("h".into(), None)],
            };
            p.print("t", 0, &r).unwrap();
        }
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["value"], "x");
        assert_eq!(v["key"], serde_json::Value::Null);
        assert_eq!(v["headers"][0]["key"], "h");
    }

    #[test]
    fn active_partitions_respect_stop_points() {
        let reader = Reader {
            topic: "t".into(),
            positions: [(0, 5), (1, 3), (2, 0)].into_iter().collect(),
            ends: Some([(0, 5), (1, 9), (2, 0)].into_iter().collect()),
            max_bytes: 1,
            max_wait: Duration::ZERO,
            stale_rounds: 0,
        };
        assert_eq!(reader.active(), vec![1]);
        let following = Reader {
            ends: None,
            ..reader
        };
        assert_eq!(following.active(), vec![0, 1, 2]);
    }

    #[test]
    fn group_consumption_prints_each_record_once_and_commits_what_it_printed() {
        let fake = shardlog_client::fake_broker::FakeBroker::with_topics(&[("t", 2)], 5);
        let ctx = Ctx {
            entity_client_id: None,
            bootstrap: fake.addr.clone(),
            timeout: Duration::from_secs(5),
            client_id: "test".into(),
            json: false,
        };
        let run_with = |args: &[&str]| {
            let mut out = Vec::new();
            run(&ctx, &consume_args(args), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        // Three records, then stop: exactly those are committed (partition 0 first).
        let text = run_with(&["-g", "g", "-n", "3", "--format", "{value}"]);
        assert_eq!(text, "p0-0\np0-1\np0-2\n");
        let committed = fake.state.lock().unwrap().group("g").committed.clone();
        assert_eq!(committed.get(&("t".to_string(), 0)), Some(&3));
        // The rest, resuming from the commits; the member left the group each time.
        let text = run_with(&["-g", "g", "--format", "{partition}:{offset}"]);
        assert_eq!(text, "0:3\n0:4\n1:0\n1:1\n1:2\n1:3\n1:4\n");
        assert!(fake.state.lock().unwrap().group("g").members.is_empty());
        let committed = fake.state.lock().unwrap().group("g").committed.clone();
        assert_eq!(committed.values().copied().collect::<Vec<_>>(), vec![5, 5]);
        assert_eq!(run_with(&["-g", "g"]), "");
        // Without a group: from an offset, one partition, nothing committed.
        assert_eq!(run_with(&["-p", "1", "-o", "3"]), "p1-3\np1-4\n");
    }

    #[test]
    fn a_batch_failing_its_crc_is_reported_as_corrupt_data_with_its_own_status() {
        let fake = shardlog_client::fake_broker::FakeBroker::with_topics(&[("t", 2)], 5);
        fake.state.lock().unwrap().corrupt_partitions.insert(1);
        let ctx = Ctx {
            entity_client_id: None,
            bootstrap: fake.addr.clone(),
            timeout: Duration::from_secs(5),
            client_id: "test".into(),
            json: false,
        };
        let mut out = Vec::new();
        let e = run(&ctx, &consume_args(&["-p", "1", "-o", "3"]), &mut out).unwrap_err();
        assert!(
            out.is_empty(),
            "printed {:?}",
            String::from_utf8_lossy(&out)
        );
        // The fake broker's batch starts one record before the fetch offset.
        let text = format!("{e:#}");
        assert!(
            text.contains(
                "topic \"t\" partition 1 at offset 2: the batch (offsets 2 to 4) failed its CRC \
                 check (corrupt data in the log of broker 0)"
            ),
            "{text}"
        );
        assert_eq!(crate::exit::status_of(&e), crate::exit::CORRUPT);
        let hint = crate::exit::hint(&e, &fake.addr).expect("a hint");
        assert!(
            hint.contains("shardlog-cli segment verify <data-dir>` on broker 0"),
            "{hint}"
        );
        assert!(hint.contains("--partition 1 --offset 5"), "{hint}");
        // The undamaged partition still reads.
        let mut out = Vec::new();
        run(
            &ctx,
            &consume_args(&["-p", "0", "--format", "{value}"]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "p0-0\np0-1\np0-2\np0-3\np0-4\n"
        );
    }
}
