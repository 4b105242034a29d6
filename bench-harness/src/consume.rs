//! Consumers: one thread each, fetching its partitions from their leaders with the project's
//! blocking client, one Fetch in flight per broker (as Kafka consumers do).
//!
//! Throughput needs only batch headers. In end-to-end mode each record's value carries its
//! intended send time in the first 8 bytes; the consumer reads it back and records
//! `now - intended` (both on the shared epoch clock), skipping records written before this run.

use crate::group::GroupMember;
use crate::records::{Decoder, RecordVisitor};
use crate::run::{Shared, Times};
use crate::stats::{Latencies, Recorder};
use anyhow::{anyhow, Result};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use shardlog_client::{
    codes, error_name, Client, ClientError, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use shardlog_protocol::records::batches;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

/// Highest Fetch version used. v12 (flexible) adds only tagged fields the harness does not need,
/// and some brokers (Tansu 0.6) put tags in v12 responses that `kafka-protocol` refuses at that
/// version; v11 reads the same records from every broker.
pub const FETCH_VERSION_MAX: i16 = 11;

/// How a consumer learns its partitions.
#[derive(Debug, Clone)]
pub enum Assignment {
    /// Fixed partitions (plain consumers split the topic between them).
    Static(Vec<i32>),
    /// Join this consumer group; the group leader assigns partitions (range assignor).
    Group(String),
}

pub struct ConsumeConfig {
    pub bootstrap: String,
    pub topic: String,
    pub client_id: String,
    pub from_earliest: bool,
    /// Stop once every partition reaches the end offset it had when the consumer started.
    pub until_end: bool,
    /// Decode records for end-to-end latency.
    pub e2e: bool,
    pub partitions: i32,
    pub fetch_max_bytes: i32,
    pub partition_max_bytes: i32,
    pub fetch_max_wait: Duration,
    pub request_timeout: Duration,
}

pub struct ConsumeTask {
    pub name: String,
    pub assignment: Assignment,
    pub recorder: Arc<Recorder>,
}

struct PartitionState {
    offset: i64,
    /// For `until_end`: the log end offset when consumption started.
    end: i64,
}

/// Runs one consumer to completion. `ready` is signalled once its partitions are positioned;
/// the run's times are published after every consumer is ready.
pub fn run(
    task: ConsumeTask,
    cfg: Arc<ConsumeConfig>,
    shared: Arc<Shared>,
    ready: Sender<Result<usize, String>>,
) {
    let result = consume(&task, &cfg, &shared, &ready);
    if let Err(e) = result {
        let msg = format!("{}: {e:#}", task.name);
        // A consumer that fails before it is ready fails the set-up, not the run.
        if ready.send(Err(msg.clone())).is_err() || shared.times_published() {
            shared.fail_broker(msg);
        }
    }
}

fn consume(
    task: &ConsumeTask,
    cfg: &ConsumeConfig,
    shared: &Shared,
    ready: &Sender<Result<usize, String>>,
) -> Result<()> {
    let timeout = cfg
        .request_timeout
        .max(cfg.fetch_max_wait + Duration::from_secs(5));
    let mut client = Client::connect(&cfg.bootstrap, &cfg.client_id, timeout)?;
    client.refresh_metadata(Some(&[cfg.topic.as_str()]))?;
    let mut member = None;
    let partitions = match &task.assignment {
        Assignment::Static(p) => p.clone(),
        Assignment::Group(group) => {
            let (m, parts) = GroupMember::join(&mut client, group, &cfg.topic, cfg.partitions)?;
            member = Some(m);
            parts
        }
    };
    let mut states = position(&mut client, cfg, &partitions)?;
    let _ = ready.send(Ok(partitions.len()));
    let times = shared.wait_for_times();
    let mut decoder = Decoder::default();
    loop {
        if shared.stop.load(Ordering::Relaxed) || shared.consume_stop.load(Ordering::Relaxed) {
            break;
        }
        if cfg.until_end && states.values().all(|s| s.offset >= s.end) {
            break;
        }
        if let Some(m) = member.as_mut() {
            if let Some(new_parts) = m.heartbeat(&mut client, &cfg.topic, cfg.partitions)? {
                states = position(&mut client, cfg, &new_parts)?;
            }
        }
        if states.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        fetch_round(
            &mut client,
            cfg,
            shared,
            &times,
            task,
            &mut states,
            &mut decoder,
        )?;
    }
    if let Some(m) = member {
        m.leave(&mut client);
    }
    Ok(())
}

/// Start offsets (earliest or latest) and end offsets of `partitions`.
fn position(
    client: &mut Client,
    cfg: &ConsumeConfig,
    partitions: &[i32],
) -> Result<BTreeMap<i32, PartitionState>> {
    let mut out = BTreeMap::new();
    for &p in partitions {
        let end = client.list_offset(&cfg.topic, p, LATEST_TIMESTAMP)?.offset;
        let offset = if cfg.from_earliest {
            client
                .list_offset(&cfg.topic, p, EARLIEST_TIMESTAMP)?
                .offset
        } else {
            end
        };
        out.insert(p, PartitionState { offset, end });
    }
    Ok(out)
}

struct E2eVisitor<'a> {
    lat: &'a mut Latencies,
    now_ns: u64,
    run_start_ns: u64,
    measure_start_ns: u64,
    base_offset: i64,
    fetch_offset: i64,
}

impl RecordVisitor for E2eVisitor<'_> {
    fn record(&mut self, offset_delta: i64, _key: Option<&[u8]>, value: Option<&[u8]>) {
        if self.base_offset + offset_delta < self.fetch_offset {
            return;
        }
        let Some(v) = value.filter(|v| v.len() >= 8) else {
            return;
        };
        let sent = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
        // Records from before this run, or not written by the harness, carry no usable stamp.
        if sent < self.run_start_ns || sent > self.now_ns + 1_000_000_000 {
            return;
        }
        self.lat.record(
            self.now_ns.saturating_sub(sent),
            1,
            sent >= self.measure_start_ns,
        );
    }
}

fn fetch_round(
    client: &mut Client,
    cfg: &ConsumeConfig,
    shared: &Shared,
    times: &Times,
    task: &ConsumeTask,
    states: &mut BTreeMap<i32, PartitionState>,
    decoder: &mut Decoder,
) -> Result<()> {
    // Group partitions by leader; one Fetch per leader per round.
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (&p, s) in states.iter() {
        if cfg.until_end && s.offset >= s.end {
            continue;
        }
        by_leader
            .entry(client.leader_of(&cfg.topic, p)?)
            .or_default()
            .push(p);
    }
    for (leader, parts) in by_leader {
        let topic = TopicName(StrBytes::from_string(cfg.topic.clone()));
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(cfg.fetch_max_wait.as_millis() as i32)
            .with_min_bytes(1)
            .with_max_bytes(cfg.fetch_max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic)
                .with_partitions(
                    parts
                        .iter()
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_current_leader_epoch(-1)
                                .with_fetch_offset(states[p].offset)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(cfg.partition_max_bytes)
                        })
                        .collect(),
                )]);
        let conn = client.connection_to(leader)?;
        let version = conn.version_for::<FetchRequest>()?.min(FETCH_VERSION_MAX);
        let response = match conn.call_at(&req, version) {
            Ok(r) => r,
            Err(e @ ClientError::Unreachable { .. }) => {
                return Err(anyhow!("fetch from broker {leader} failed: {e}"))
            }
            Err(e) => return Err(e.into()),
        };
        if response.error_code != 0 {
            task.recorder.error(response.error_code, 0);
            shared.note_error(format!("fetch: {}", error_name(response.error_code)));
            continue;
        }
        let now = shared.clock.now_ns();
        let measured = now >= times.measure_start_ns;
        for t in &response.responses {
            for pd in &t.partitions {
                let Some(state) = states.get_mut(&pd.partition_index) else {
                    continue;
                };
                if pd.error_code == codes::OFFSET_OUT_OF_RANGE {
                    let ts = if cfg.from_earliest {
                        EARLIEST_TIMESTAMP
                    } else {
                        LATEST_TIMESTAMP
                    };
                    state.offset = client
                        .list_offset(&cfg.topic, pd.partition_index, ts)?
                        .offset;
                    shared.note_error("fetch: OFFSET_OUT_OF_RANGE (position reset)".to_string());
                    continue;
                }
                if pd.error_code != 0 {
                    task.recorder.error(pd.error_code, 0);
                    shared.note_error(format!("fetch: {}", error_name(pd.error_code)));
                    if matches!(
                        pd.error_code,
                        codes::NOT_LEADER_OR_FOLLOWER | codes::UNKNOWN_TOPIC_OR_PARTITION
                    ) {
                        client.refresh_metadata(Some(&[cfg.topic.as_str()]))?;
                    }
                    continue;
                }
                let Some(blob) = pd.records.as_ref() else {
                    continue;
                };
                let (mut records, mut bytes) = (0u64, 0u64);
                for b in batches(blob) {
                    let (_, header, batch) = b?;
                    let last = header.last_offset();
                    if last < state.offset {
                        continue; // an older batch a broker may return whole
                    }
                    if !header.is_control() {
                        let first = header.base_offset.max(state.offset);
                        records += (last - first + 1) as u64;
                        bytes += batch.len() as u64;
                        if cfg.e2e {
                            let mut lat = task.recorder.latency.lock().expect("latency lock");
                            let mut v = E2eVisitor {
                                lat: &mut lat,
                                now_ns: now,
                                run_start_ns: times.start_ns,
                                measure_start_ns: times.measure_start_ns,
                                base_offset: header.base_offset,
                                fetch_offset: state.offset,
                            };
                            decoder.visit_batch(batch, &mut v)?;
                        }
                    }
                    state.offset = last + 1;
                }
                if records > 0 {
                    task.recorder.count(records, bytes, measured, now);
                }
            }
        }
    }
    Ok(())
}
