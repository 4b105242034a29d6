//! `commit-offsets`: OffsetCommit load for one simple group, to fill a group coordinator's
//! `__consumer_offsets` partition with history (perf/coordinator-load.sh).
//!
//! The group commits as an admin tool does (generation -1, empty member id, no instance id), so
//! no membership is needed. Every request commits `--partitions` offsets of `--topic` (the last
//! one what is left), which the coordinator appends as one batch of that many records; request
//! `i` commits offset `i + 1` for each of its partitions, so the latest commit of each
//! partition is known from the command line alone. Requests are pipelined up to
//! `--max-in-flight` on one connection to the coordinator (the broker answers in order).
//!
//! Until the first request succeeds, coordinator errors (COORDINATOR_NOT_AVAILABLE while
//! `__consumer_offsets` is being created, COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR) are
//! retried for [`SETUP_TIMEOUT`]; after that any error code ends the run with status 1, since
//! the history it was to write would no longer be the one asked for.

use crate::cli::{human_count, CommitOptions};
use crate::stats::{new_histogram, PERCENTILES};
use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetCommitResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use shardlog_client::{codes, error_name, Client, ClientError};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the first commit may wait for the coordinator (creating `__consumer_offsets`,
/// loading its partition).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
const SETUP_RETRY: Duration = Duration::from_millis(100);

/// What a run did.
pub struct CommitOutcome {
    pub options: CommitOptions,
    /// The coordinator's broker id and address.
    pub coordinator: i32,
    pub coordinator_addr: String,
    /// OffsetCommit version used.
    pub version: i16,
    /// Requests answered without error, and the offsets they committed.
    pub requests: u64,
    pub commits: u64,
    /// From sending the first request after set-up to the last answer.
    pub elapsed: Duration,
    /// Attempts of the first request answered with a coordinator error before it succeeded.
    pub setup_retries: u64,
    /// Request latency (send to answer), µs, excluding the first request.
    pub latency: Histogram<u64>,
}

/// The request with `partitions` partitions of `topic`, all committing `offset`.
fn build_request(o: &CommitOptions, partitions: i32, offset: i64) -> OffsetCommitRequest {
    let parts = (0..partitions)
        .map(|p| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(offset)
        })
        .collect();
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(o.group.clone())))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::from_static_str(""))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(o.topic.clone())))
            .with_partitions(parts)])
}

/// Makes `req` request `index` of the run: its partition count and offset.
fn set_request(o: &CommitOptions, req: &mut OffsetCommitRequest, index: u64) {
    let parts = &mut req.topics[0].partitions;
    parts.truncate(o.partitions_in_request(index) as usize);
    for p in parts.iter_mut() {
        p.committed_offset = index as i64 + 1;
    }
}

/// The first error code of a response, with its partition.
fn first_error(r: &OffsetCommitResponse) -> Option<(i32, i16)> {
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.error_code != codes::NONE)
        .map(|p| (p.partition_index, p.error_code))
}

/// Offsets the response says were committed; it must answer every partition of the request.
fn committed_in(r: &OffsetCommitResponse, sent: i32) -> Result<u64> {
    let answered: usize = r.topics.iter().map(|t| t.partitions.len()).sum();
    if answered != sent as usize {
        bail!("OffsetCommit answer covers {answered} partitions, {sent} were sent");
    }
    Ok(answered as u64)
}

/// Whether the first request may be sent again after this error.
fn retriable_at_setup(e: &ClientError) -> bool {
    e.is_stale_coordinator()
        || e.is_unsent()
        || e.code() == Some(codes::COORDINATOR_LOAD_IN_PROGRESS)
}

pub fn run(o: &CommitOptions) -> Result<CommitOutcome> {
    let bootstrap = o.bootstrap.join(",");
    let mut client = Client::connect(&bootstrap, &o.client_id, o.request_timeout)
        .with_context(|| format!("cannot reach a broker at {bootstrap}"))?;

    // Request 0, synchronously, until the coordinator takes it.
    let mut req = build_request(o, o.partitions_in_request(0), 1);
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut setup_retries = 0u64;
    loop {
        let sent = client.with_coordinator(o.group.as_str(), |conn| {
            let r = conn.call(&req)?;
            if let Some((p, code)) = first_error(&r) {
                return Err(ClientError::broker(
                    code,
                    format!("committing the offset of {}-{p}", o.topic),
                    None,
                ));
            }
            Ok(r)
        });
        match sent {
            Ok(r) => {
                committed_in(&r, o.partitions_in_request(0))?;
                break;
            }
            Err(e) if retriable_at_setup(&e) && Instant::now() < deadline => {
                setup_retries += 1;
                std::thread::sleep(SETUP_RETRY);
            }
            Err(e) => {
                return Err(e).with_context(|| format!("first OffsetCommit of group {}", o.group))
            }
        }
    }
    let coordinator = client.coordinator_of(o.group.as_str())?;
    let conn = client.connection_to(coordinator)?;
    let coordinator_addr = conn.addr().to_string();
    let version = conn.version_for::<OffsetCommitRequest>()?;
    if !o.quiet {
        eprintln!(
            "shardlog-bench: coordinator of group {} is broker {coordinator} ({coordinator_addr}), \
             OffsetCommit v{version}",
            o.group
        );
    }

    let total = o.requests();
    let mut latency = new_histogram();
    let mut in_flight: VecDeque<(i32, Instant, i32, u64)> = VecDeque::new();
    let mut next = 1u64;
    let mut requests = 1u64;
    let mut commits = o.partitions_in_request(0) as u64;
    let started = Instant::now();
    let mut last_report = (started, commits);
    while requests < total {
        while in_flight.len() < o.max_in_flight && next < total {
            set_request(o, &mut req, next);
            let id = conn
                .send(&req, version)
                .with_context(|| format!("sending OffsetCommit {next} of {total}"))?;
            in_flight.push_back((id, Instant::now(), o.partitions_in_request(next), next));
            next += 1;
        }
        let (id, sent_at, sent, index) = in_flight
            .pop_front()
            .ok_or_else(|| anyhow!("no OffsetCommit in flight"))?;
        let r = conn
            .receive::<OffsetCommitRequest>(id, version)
            .with_context(|| format!("OffsetCommit {index} of {total}"))?;
        latency.saturating_record(sent_at.elapsed().as_micros().max(1) as u64);
        if let Some((p, code)) = first_error(&r) {
            bail!(
                "OffsetCommit {index} of {total}: {} ({code}) for {}-{p}, after {commits} \
                 offsets committed",
                error_name(code),
                o.topic
            );
        }
        commits +=
            committed_in(&r, sent).with_context(|| format!("OffsetCommit {index} of {total}"))?;
        requests += 1;
        if !o.quiet && last_report.0.elapsed() >= o.interval {
            let now = Instant::now();
            let rate = (commits - last_report.1) as f64 / (now - last_report.0).as_secs_f64();
            eprintln!(
                "[{:>6.1}s] {}/{} commits, {}/s",
                started.elapsed().as_secs_f64(),
                human_count(commits as f64),
                human_count(o.commits as f64),
                human_count(rate)
            );
            last_report = (now, commits);
        }
    }
    Ok(CommitOutcome {
        options: o.clone(),
        coordinator,
        coordinator_addr,
        version,
        requests,
        commits,
        elapsed: started.elapsed(),
        setup_retries,
        latency,
    })
}

impl CommitOutcome {
    /// Offsets committed per second after set-up (the first request is not timed).
    pub fn commits_per_sec(&self) -> f64 {
        let timed = self.commits - self.options.partitions_in_request(0) as u64;
        rate(timed, self.elapsed)
    }

    pub fn requests_per_sec(&self) -> f64 {
        rate(self.requests - 1, self.elapsed)
    }

    fn percentile_ms(&self, p: f64) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(p / 100.0) as f64 / 1e3)
    }

    pub fn table(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "\nshardlog-bench {} against {}\ncoordinator broker {} ({}), OffsetCommit v{}\n\n",
            o.describe(),
            o.bootstrap.join(","),
            self.coordinator,
            self.coordinator_addr,
            self.version
        );
        s.push_str(&format!("{:<22} {:>14}\n", "requests", self.requests));
        s.push_str(&format!(
            "{:<22} {:>14}\n",
            "commits (records)", self.commits
        ));
        s.push_str(&format!(
            "{:<22} {:>14.2}\n",
            "seconds",
            self.elapsed.as_secs_f64()
        ));
        s.push_str(&format!(
            "{:<22} {:>14}\n",
            "commits/s",
            human_count(self.commits_per_sec())
        ));
        s.push_str(&format!(
            "{:<22} {:>14.1}\n",
            "requests/s",
            self.requests_per_sec()
        ));
        if !self.latency.is_empty() {
            s.push_str("request latency ms   ");
            for p in PERCENTILES {
                if let Some(v) = self.percentile_ms(p) {
                    s.push_str(&format!(" p{p}={v:.2}"));
                }
            }
            s.push('\n');
        }
        if self.setup_retries > 0 {
            s.push_str(&format!(
                "first request retried {} time(s) while the coordinator was not ready\n",
                self.setup_retries
            ));
        }
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        let o = &self.options;
        let latency: serde_json::Map<String, serde_json::Value> = PERCENTILES
            .iter()
            .filter_map(|p| Some((format!("p{p}"), self.percentile_ms(*p)?.into())))
            .collect();
        serde_json::json!({
            "mode": "commit-offsets",
            "bootstrap": o.bootstrap,
            "group": o.group,
            "topic": o.topic,
            "partitions": o.partitions,
            "commits_asked": o.commits,
            "max_in_flight": o.max_in_flight,
            "coordinator": self.coordinator,
            "coordinator_addr": self.coordinator_addr,
            "offset_commit_version": self.version,
            "requests": self.requests,
            "commits": self.commits,
            "seconds": self.elapsed.as_secs_f64(),
            "commits_per_sec": self.commits_per_sec(),
            "requests_per_sec": self.requests_per_sec(),
            "request_latency_ms": latency,
            "setup_retries": self.setup_retries,
            // Request i commits offset i + 1, so partition 0 ends at the request count.
            "partition_0_committed_offset": o.requests(),
        })
    }

    /// Writes `LABEL.json` to `--out`, when given.
    pub fn write_files(&self) -> Result<Vec<PathBuf>> {
        let Some(dir) = &self.options.out_dir else {
            return Ok(Vec::new());
        };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.options.label()));
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(vec![path])
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, Command};
    use shardlog_client::fake_broker::FakeBroker;

    fn options(args: &[&str]) -> CommitOptions {
        match parse(args.iter().copied()).unwrap() {
            Command::CommitOffsets(o) => *o,
            other => panic!("expected commit-offsets, got {other:?}"),
        }
    }

    #[test]
    fn requests_commit_their_index_plus_one() {
        let o = options(&[
            "commit-offsets",
            "--group",
            "g",
            "--commits",
            "25",
            "--partitions",
            "10",
        ]);
        let mut req = build_request(&o, o.partitions_in_request(0), 1);
        assert_eq!(req.generation_id_or_member_epoch, -1);
        assert!(req.member_id.is_empty());
        assert_eq!(req.group_instance_id, None);
        set_request(&o, &mut req, 1);
        let parts = &req.topics[0].partitions;
        assert_eq!(parts.len(), 10);
        assert!(parts.iter().all(|p| p.committed_offset == 2));
        set_request(&o, &mut req, 2);
        let parts = &req.topics[0].partitions;
        assert_eq!(parts.len(), 5, "the last request commits the rest");
        assert_eq!(
            parts.iter().map(|p| p.partition_index).collect::<Vec<_>>(),
            (0..5).collect::<Vec<_>>()
        );
        assert!(parts.iter().all(|p| p.committed_offset == 3));
    }

    #[test]
    fn commits_every_offset_to_the_coordinator() {
        let fake = FakeBroker::start();
        let o = options(&[
            "commit-offsets",
            "--bootstrap",
            &fake.addr,
            "--group",
            "g",
            "--topic",
            "t",
            "--commits",
            "2500",
            "--partitions",
            "1000",
            "--max-in-flight",
            "2",
            "--quiet",
        ]);
        let outcome = run(&o).unwrap();
        assert_eq!(outcome.requests, 3);
        assert_eq!(outcome.commits, 2500);
        assert_eq!(outcome.setup_retries, 0);
        assert_eq!(outcome.latency.len(), 2, "the first request is not timed");
        let committed = fake.state.lock().unwrap().group("g").committed.clone();
        assert_eq!(committed.len(), 1000);
        assert_eq!(committed[&("t".to_string(), 0)], 3);
        assert_eq!(committed[&("t".to_string(), 499)], 3);
        assert_eq!(committed[&("t".to_string(), 500)], 2);
        assert_eq!(committed[&("t".to_string(), 999)], 2);
        let json = outcome.to_json();
        assert_eq!(json["commits"], 2500);
        assert_eq!(json["partition_0_committed_offset"], 3);
        assert!(outcome.table().contains("commits/s"));
        assert!(
            outcome.write_files().unwrap().is_empty(),
            "no --out, no file"
        );
    }
}
