//! One benchmark run from set-up to result: topic, payload pool, consumers (positioned first,
//! so end-to-end runs see every record), producers, and the sampler on the main thread that
//! builds the time series, prints progress and decides when to stop.
//!
//! A broker that goes away mid-run sets the shared failure; every thread stops, and the run
//! still returns what it gathered, marked as interrupted.

use crate::cli::{Mode, Options, StartFrom};
use crate::consume::{self, Assignment, ConsumeConfig, ConsumeTask};
use crate::payload::{PayloadPool, PoolSpec};
use crate::produce::{self, ProduceConfig, ProduceTask};
use crate::report::{self, Outcome, ProgressLine};
use crate::schedule::Clock;
use crate::stats::{self, summarize, take_interval, totals, Recorder, SeriesPoint};
use crate::txn::{self, TxnProducer};
use anyhow::{anyhow, bail, Context, Result};
use kafka_protocol::messages::{FetchRequest, ProduceRequest};
use shardlog_client::{codes, Client, ClientError, NewTopic};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long consumers may take to join and position themselves.
const CONSUMER_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// After producers finish, how long consumers may take to catch up in end-to-end mode.
const E2E_DRAIN_MAX: Duration = Duration::from_secs(15);
/// How long a new topic may take to get leaders for every partition.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Control-loop tick; series points are emitted every `--interval`.
const TICK: Duration = Duration::from_millis(20);

/// The run's clock readings, published once every consumer is ready.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub start_ns: u64,
    pub measure_start_ns: u64,
    /// Producers send nothing intended at or after this (`u64::MAX` without a duration).
    pub end_ns: u64,
}

/// State every worker thread sees.
pub struct Shared {
    pub clock: Clock,
    /// Everything stops (failure, or the run is over).
    pub stop: AtomicBool,
    /// Consumers stop (producers may be done already).
    pub consume_stop: AtomicBool,
    times: OnceLock<Times>,
    failure: Mutex<Option<String>>,
    /// Broker error codes and other non-fatal events, with counts.
    notes: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            clock: Clock::new(),
            stop: AtomicBool::new(false),
            consume_stop: AtomicBool::new(false),
            times: OnceLock::new(),
            failure: Mutex::new(None),
            notes: Mutex::new(BTreeMap::new()),
        }
    }

    /// The broker connection failed: record the first reason and stop everything.
    pub fn fail_broker(&self, msg: String) {
        let mut f = self.failure.lock().expect("failure lock");
        if f.is_none() && !self.stop.load(Ordering::Relaxed) {
            *f = Some(msg);
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("failure lock").clone()
    }

    pub fn note_error(&self, msg: String) {
        *self
            .notes
            .lock()
            .expect("notes lock")
            .entry(msg)
            .or_insert(0) += 1;
    }

    pub fn notes(&self) -> BTreeMap<String, u64> {
        self.notes.lock().expect("notes lock").clone()
    }

    pub fn times_published(&self) -> bool {
        self.times.get().is_some()
    }

    pub fn times(&self) -> Times {
        *self
            .times
            .get()
            .expect("times are published before workers need them")
    }

    /// Blocks until the run's times are published (or the run stops before it starts).
    pub fn wait_for_times(&self) -> Times {
        loop {
            if let Some(t) = self.times.get() {
                return *t;
            }
            if self.stop.load(Ordering::Relaxed) {
                return Times {
                    start_ns: 0,
                    measure_start_ns: 0,
                    end_ns: 0,
                };
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

/// Topic layout as found (or created) on the broker.
pub struct TopicLayout {
    pub partitions: i32,
    /// Leader broker id per partition.
    pub leaders: BTreeMap<i32, i32>,
    /// `host:port` per broker id.
    pub brokers: BTreeMap<i32, String>,
    pub created: bool,
}

fn connect_client(o: &Options) -> Result<Client> {
    let bootstrap = o.bootstrap.join(",");
    Client::connect(&bootstrap, &o.client_id, o.request_timeout)
        .with_context(|| format!("cannot reach a broker at {bootstrap}"))
}

/// Finds the topic, creating it when producing and it is missing, and waits for leaders.
pub fn ensure_topic(client: &mut Client, o: &Options) -> Result<TopicLayout> {
    let topic = o.topic.as_str();
    let mut created = false;
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        client.refresh_metadata(Some(&[topic]))?;
        let meta = client.metadata();
        match meta.topics.get(topic) {
            None => {
                if !o.mode.produces() {
                    bail!("topic {topic:?} does not exist (consume does not create topics)");
                }
                if !created {
                    let results = client.create_topics(
                        &[NewTopic {
                            name: topic.to_string(),
                            partitions: o.partitions,
                            replication_factor: o.replication_factor,
                            configs: Vec::new(),
                        }],
                        false,
                    )?;
                    for (_, r) in results {
                        match r {
                            Ok(()) => {}
                            Err(e) if e.code() == Some(codes::TOPIC_ALREADY_EXISTS) => {}
                            Err(e) => return Err(e).context(format!("creating topic {topic:?}")),
                        }
                    }
                    created = true;
                }
            }
            Some(t) if t.error_code != 0 && t.error_code != codes::LEADER_NOT_AVAILABLE => {
                return Err(ClientError::broker(
                    t.error_code,
                    format!("for topic {topic:?}"),
                    None,
                ))
                .context("reading topic metadata");
            }
            Some(t) => {
                let ready = !t.partitions.is_empty()
                    && t.partitions
                        .values()
                        .all(|p| p.leader >= 0 && meta.brokers.contains_key(&p.leader));
                if ready {
                    let leaders: BTreeMap<i32, i32> = t
                        .partitions
                        .values()
                        .map(|p| (p.partition, p.leader))
                        .collect();
                    let brokers = meta.brokers.iter().map(|(id, b)| (*id, b.addr())).collect();
                    let partitions = leaders.len() as i32;
                    if leaders.keys().copied().ne(0..partitions) {
                        bail!(
                            "topic {topic:?} has partitions {:?}, not 0..{partitions}",
                            leaders.keys()
                        );
                    }
                    return Ok(TopicLayout {
                        partitions,
                        leaders,
                        brokers,
                        created,
                    });
                }
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "topic {topic:?} has no leader for every partition after {TOPIC_READY_TIMEOUT:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Splits `total` into parts proportional to `weights` (largest remainder), summing exactly.
pub fn split_quota(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut parts: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let mut left = total - parts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.partial_cmp(&fa).expect("finite").then(a.cmp(&b))
    });
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
}

/// Runs the benchmark described by `o`. Set-up failures are errors; a broker lost mid-run is
/// an `Outcome` with `failure` set.
pub fn run(o: &Options) -> Result<Outcome> {
    let started_unix_s = report::unix_now_s();
    let mut client = connect_client(o)?;
    let layout = ensure_topic(&mut client, o)?;
    if layout.partitions != o.partitions && !layout.created && o.mode.produces() {
        eprintln!(
            "note: topic {:?} exists with {} partitions; using them (--partitions {} applies \
             only when creating)",
            o.topic, layout.partitions, o.partitions
        );
    }
    let mut versions = BTreeMap::new();
    let mut produce_version = BTreeMap::new();
    for id in layout
        .leaders
        .values()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
    {
        let conn = client.connection_to(id)?;
        if o.mode.produces() {
            let v = conn.version_for::<ProduceRequest>()?;
            produce_version.insert(id, v);
            versions.insert("produce".to_string(), v);
        }
        if o.mode.consumes() {
            let v = conn
                .version_for::<FetchRequest>()?
                .min(consume::FETCH_VERSION_MAX);
            versions.insert("fetch".to_string(), v);
        }
    }
    let partitions = layout.partitions;
    if o.mode.consumes() && o.group.is_none() && o.consumers > partitions as usize {
        bail!(
            "--consumers {} > {partitions} partitions of {:?}: without --group each consumer reads \
             its own partitions, so some would idle",
            o.consumers,
            o.topic
        );
    }

    let shared = Arc::new(Shared::new());
    let mut consumer_threads: Vec<JoinHandle<()>> = Vec::new();
    let mut consumer_recorders = Vec::new();
    if o.mode.consumes() {
        let cfg = Arc::new(ConsumeConfig {
            bootstrap: o.bootstrap.join(","),
            topic: o.topic.clone(),
            client_id: o.client_id.clone(),
            from_earliest: o.from == StartFrom::Earliest,
            until_end: o.mode == Mode::Consume && o.duration.is_none() && o.messages.is_none(),
            e2e: o.mode == Mode::EndToEnd,
            partitions,
            fetch_max_bytes: o.fetch_max_bytes,
            partition_max_bytes: o.partition_max_bytes,
            fetch_max_wait: o.fetch_max_wait,
            request_timeout: o.request_timeout,
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        for c in 0..o.consumers {
            let assignment = match &o.group {
                Some(g) => Assignment::Group(g.clone()),
                None => Assignment::Static(
                    (0..partitions)
                        .filter(|p| *p as usize % o.consumers == c)
                        .collect(),
                ),
            };
            let recorder = Arc::new(Recorder::default());
            consumer_recorders.push(recorder.clone());
            let task = ConsumeTask {
                name: format!("consumer-{c}"),
                assignment,
                recorder,
            };
            let (cfg, shared, tx) = (cfg.clone(), shared.clone(), ready_tx.clone());
            consumer_threads.push(
                std::thread::Builder::new()
                    .name(format!("consumer-{c}"))
                    .spawn(move || consume::run(task, cfg, shared, tx))?,
            );
        }
        drop(ready_tx);
        let deadline = Instant::now() + CONSUMER_READY_TIMEOUT;
        for _ in 0..o.consumers {
            let left = deadline.saturating_duration_since(Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    return Err(anyhow!("consumer set-up failed: {e}"));
                }
                Err(_) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    return Err(anyhow!(
                        "consumers not ready after {CONSUMER_READY_TIMEOUT:?}"
                    ));
                }
            }
        }
    }

    // Producers: one task per (producer, leader broker, connection).
    let mut producer_threads: Vec<JoinHandle<()>> = Vec::new();
    let mut producer_recorders = Vec::new();
    let mut tasks = Vec::new();
    let mut pool_bytes = 0;
    let mut produce_cfg = None;
    if o.mode.produces() {
        let pool = Arc::new(PayloadPool::build(PoolSpec {
            partitions,
            record_size: o.record_size,
            records_per_batch: o.records_per_batch(),
            keys: o.keys,
            payload: o.payload,
            codec: o.compression,
            seed: started_unix_s,
        })?);
        pool_bytes = pool.bytes_held();
        let cycle: Vec<i32> = (0..pool.cycle.len()).map(|i| pool.cycle.at(i)).collect();
        let mut by_broker: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in &cycle {
            by_broker.entry(layout.leaders[p]).or_default().push(*p);
        }
        let mut shapes = Vec::new();
        for producer in 0..o.producers {
            for (broker, seq) in &by_broker {
                for c in 0..o.connections {
                    let share = seq.len() as f64
                        / cycle.len() as f64
                        / (o.producers * o.connections) as f64;
                    let k = producer * o.connections + c;
                    let offset = k * seq.len() / (o.producers * o.connections).max(1);
                    shapes.push((producer, *broker, c, seq.clone(), offset, share));
                }
            }
        }
        let quotas = o
            .messages
            .map(|m| split_quota(m, &shapes.iter().map(|s| s.5).collect::<Vec<_>>()));
        for (i, (producer, broker, c, seq, offset, share)) in shapes.into_iter().enumerate() {
            let recorder = Arc::new(Recorder::default());
            producer_recorders.push(recorder.clone());
            let txn = if o.transactional {
                Some(TxnProducer::init(
                    o,
                    txn::transactional_id(i),
                    seq.clone(),
                    partitions as usize,
                )?)
            } else {
                None
            };
            tasks.push(ProduceTask {
                txn: Mutex::new(txn),
                name: format!("producer-{producer}-b{broker}-c{c}"),
                addr: layout.brokers[&broker].clone(),
                version: produce_version[&broker],
                cycle: seq,
                cycle_offset: offset,
                rate: o.rate.map(|r| r * share),
                quota: quotas.as_ref().map(|q| q[i]),
                recorder,
            });
        }
        produce_cfg = Some(Arc::new(ProduceConfig {
            topic: o.topic.clone(),
            client_id: o.client_id.clone(),
            acks: o.acks,
            codec: o.compression,
            max_in_flight: o.max_in_flight,
            linger: o.linger,
            request_timeout: o.request_timeout,
            pool,
            transaction_interval: o.transaction_interval,
        }));
    }

    // Go.
    let start_ns = shared.clock.now_ns();
    let times = Times {
        start_ns,
        measure_start_ns: start_ns + o.warmup.as_nanos() as u64,
        end_ns: o
            .duration
            .map_or(u64::MAX, |d| start_ns + d.as_nanos() as u64),
    };
    let _ = shared.times.set(times);
    if let Some(cfg) = &produce_cfg {
        for task in tasks {
            let name = task.addr.clone();
            match produce::spawn(task, cfg.clone(), shared.clone()) {
                Ok(h) => producer_threads.extend(h),
                Err(e) => shared.fail_broker(format!("connecting a producer to {name}: {e:#}")),
            }
        }
    }

    let series = sample(
        o,
        &shared,
        &times,
        &producer_threads,
        &consumer_threads,
        &producer_recorders,
        &consumer_recorders,
    );
    for h in producer_threads.into_iter().chain(consumer_threads) {
        let _ = h.join();
    }
    let end_ns = shared.clock.now_ns();

    let p_tot = totals(&producer_recorders);
    let c_tot = totals(&consumer_recorders);
    let window_s = |last_ns: u64| -> f64 {
        let end = if last_ns > times.measure_start_ns {
            last_ns
        } else {
            end_ns
        };
        (end.saturating_sub(times.measure_start_ns)) as f64 / 1e9
    };
    let produce = o.mode.produces().then(|| report::Side {
        totals: p_tot,
        seconds: window_s(p_tot.last_ns),
        latency: summarize(&stats::merge_total(&producer_recorders)),
    });
    let transactions = o.transactional.then(|| {
        let mut h = stats::new_histogram();
        for r in &producer_recorders {
            h.add(&r.commit_latency.lock().expect("latency lock").total)
                .expect("same bounds");
        }
        report::Transactions {
            committed: producer_recorders
                .iter()
                .map(|r| r.txn_commits.load(Ordering::Relaxed))
                .sum(),
            aborted: producer_recorders
                .iter()
                .map(|r| r.txn_aborts.load(Ordering::Relaxed))
                .sum(),
            commit_latency: summarize(&h),
        }
    });
    let consume = o.mode.consumes().then(|| report::Side {
        totals: c_tot,
        seconds: window_s(c_tot.last_ns),
        latency: summarize(&stats::merge_total(&consumer_recorders)),
    });
    Ok(Outcome {
        options: o.clone(),
        started_unix_s,
        partitions,
        versions,
        pool_bytes,
        elapsed_s: (end_ns - start_ns) as f64 / 1e9,
        produce,
        transactions,
        consume,
        series,
        failure: shared.failure(),
        notes: shared.notes(),
    })
}

/// The control loop: series points every interval, progress line, and stop decisions.
#[allow(clippy::too_many_arguments)]
fn sample(
    o: &Options,
    shared: &Shared,
    times: &Times,
    producers: &[JoinHandle<()>],
    consumers: &[JoinHandle<()>],
    p_rec: &[Arc<Recorder>],
    c_rec: &[Arc<Recorder>],
) -> Vec<SeriesPoint> {
    let mut series = Vec::new();
    let mut progress = ProgressLine::new(o.quiet);
    let interval_ns = o.interval.as_nanos() as u64;
    let mut next_point = times.start_ns + interval_ns;
    let mut last_t = times.start_ns;
    let mut last_p = totals(p_rec);
    let mut last_c = totals(c_rec);
    let mut producers_done_at: Option<u64> = None;
    loop {
        std::thread::sleep(TICK);
        let now = shared.clock.now_ns();
        let p_done = producers.iter().all(|h| h.is_finished());
        let c_done = consumers.iter().all(|h| h.is_finished());
        let p = totals(p_rec);
        let c = totals(c_rec);
        if o.mode.produces() && p_done && producers_done_at.is_none() {
            producers_done_at = Some(now);
        }
        // Stop decisions for consumers.
        match o.mode {
            Mode::Consume => {
                if o.messages.is_some_and(|m| c.records >= m) || now >= times.end_ns {
                    shared.consume_stop.store(true, Ordering::Relaxed);
                }
            }
            Mode::EndToEnd => {
                if let Some(t) = producers_done_at {
                    let caught_up = c.records >= p.records;
                    if caught_up || now - t >= E2E_DRAIN_MAX.as_nanos() as u64 {
                        shared.consume_stop.store(true, Ordering::Relaxed);
                    }
                }
            }
            Mode::Produce => {}
        }
        let finished = p_done && c_done;
        if now >= next_point || finished {
            let dt = (now - last_t) as f64 / 1e9;
            let pi = take_interval(p_rec);
            let ci = take_interval(c_rec);
            let p99 = |h: &hdrhistogram::Histogram<u64>| {
                if h.is_empty() {
                    f64::NAN
                } else {
                    h.value_at_quantile(0.99) as f64 / 1000.0
                }
            };
            if dt > 0.0 {
                let point = SeriesPoint {
                    t_s: (now - times.start_ns) as f64 / 1e9,
                    produce_rps: (p.records - last_p.records) as f64 / dt,
                    produce_mbps: stats::mb_per_s(p.bytes - last_p.bytes, dt),
                    consume_rps: (c.records - last_c.records) as f64 / dt,
                    consume_mbps: stats::mb_per_s(c.bytes - last_c.bytes, dt),
                    produce_p99_ms: p99(&pi),
                    e2e_p99_ms: p99(&ci),
                };
                progress.show(o, &point, p.errors + c.errors, now < times.measure_start_ns);
                series.push(point);
            }
            last_t = now;
            last_p = p;
            last_c = c;
            next_point += interval_ns;
            while next_point <= now {
                next_point += interval_ns;
            }
        }
        if finished {
            break;
        }
    }
    progress.finish();
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_sum_exactly() {
        assert_eq!(split_quota(10, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
        assert_eq!(
            split_quota(10_000, &[0.5, 0.25, 0.25]),
            vec![5000, 2500, 2500]
        );
        assert_eq!(split_quota(7, &[0.0, 1.0]), vec![0, 7]);
        assert_eq!(split_quota(5, &[]), Vec::<u64>::new());
        let q = split_quota(1_000_003, &[0.3, 0.3, 0.4]);
        assert_eq!(q.iter().sum::<u64>(), 1_000_003);
    }
}
