//! The soak's clients (librdkafka through rdkafka): idempotent acks=all producers that record
//! every acknowledged record, and a consumer group member that records every record it sees
//! and commits. Each record's key is `<producer>-<sequence>`, unique over the run, and its value
//! starts with the key, so the final check can find every acknowledged record in the logs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message};

/// The topic the soak writes.
pub const TOPIC: &str = "soak";
/// The consumer group.
pub const GROUP: &str = "soak-consumers";
/// Bytes of each record's value.
const VALUE_BYTES: usize = 100;

/// A record's identity: producer index in the high 24 bits, sequence in the low 40.
pub fn record_id(producer: u32, seq: u64) -> u64 {
    (u64::from(producer) << 40) | seq
}

pub fn record_key(id: u64) -> String {
    format!("{}-{}", id >> 40, id & ((1 << 40) - 1))
}

pub fn parse_key(key: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(key).ok()?;
    let (p, seq) = s.split_once('-')?;
    Some(record_id(p.parse().ok()?, seq.parse().ok()?))
}

/// What the clients saw, shared by their threads.
#[derive(Default)]
pub struct Tracker {
    /// Per partition: offset -> record id, for every acknowledged record.
    pub acked: Vec<BTreeMap<i64, u64>>,
    /// Per partition: `(sent, acknowledged)` of each acknowledged record, in arrival order.
    pub ack_times: Vec<Vec<(Instant, Instant)>>,
    /// Delivery errors by message (records not acknowledged).
    pub delivery_errors: BTreeMap<String, u64>,
    /// Records sent (handed to librdkafka).
    pub sent: u64,
    /// Per partition: bitmap of offsets the consumer group delivered.
    pub consumed: Vec<Vec<u64>>,
    /// Records the consumer received in total (with re-deliveries).
    pub consumed_total: u64,
    /// Fatal producer errors, with when they happened (each one fails the soak).
    pub fatal_errors: Vec<String>,
    /// Consumer errors (transport errors during faults are expected), one per streak.
    pub consumer_errors: Vec<String>,
}

impl Tracker {
    pub fn new(partitions: usize) -> Tracker {
        Tracker {
            acked: vec![BTreeMap::new(); partitions],
            ack_times: vec![Vec::new(); partitions],
            consumed: vec![Vec::new(); partitions],
            ..Tracker::default()
        }
    }

    pub fn acked_total(&self) -> usize {
        self.acked.iter().map(|m| m.len()).sum()
    }

    fn mark_consumed(&mut self, partition: usize, offset: i64) {
        let Some(bits) = self.consumed.get_mut(partition) else {
            return;
        };
        let i = offset as usize;
        if bits.len() <= i / 64 {
            bits.resize(i / 64 + 1, 0);
        }
        bits[i / 64] |= 1 << (i % 64);
    }

    pub fn was_consumed(&self, partition: usize, offset: i64) -> bool {
        let i = offset as usize;
        self.consumed[partition]
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Acknowledged records the consumer group has not delivered yet: count and a few examples.
    pub fn unconsumed(&self) -> (usize, Vec<(usize, i64)>) {
        let mut n = 0;
        let mut examples = Vec::new();
        for (p, m) in self.acked.iter().enumerate() {
            for &off in m.keys() {
                if !self.was_consumed(p, off) {
                    n += 1;
                    if examples.len() < 5 {
                        examples.push((p, off));
                    }
                }
            }
        }
        (n, examples)
    }

    /// When the first record sent to `partition` after `t` was acknowledged. Records sent
    /// before `t` are left out: their answers may have been on the way when the event struck.
    pub fn first_ack_after(&self, partition: usize, t: Instant) -> Option<Instant> {
        let times = &self.ack_times[partition];
        // Arrival order is time order.
        let i = times.partition_point(|(_, acked)| *acked <= t);
        times[i..]
            .iter()
            .find(|(sent, _)| *sent > t)
            .map(|(_, acked)| *acked)
    }
}

/// Shared switches of the load.
pub struct LoadControl {
    /// Set: producers stop sending and the consumer leaves the group (an idle window).
    pub idle: AtomicBool,
    /// Set: the producers flush and finish.
    pub stop_producers: AtomicBool,
    /// Set: every thread finishes.
    pub stop: AtomicBool,
    /// Producer threads waiting idle with nothing in flight.
    pub producers_quiet: AtomicU64,
    /// Set by the consumer thread while it has no consumer (left the group).
    pub consumer_quiet: AtomicBool,
}

struct SoakProducerContext {
    tracker: Arc<Mutex<Tracker>>,
}

impl ClientContext for SoakProducerContext {
    /// librdkafka's own log (with `SOAK_RDKAFKA_DEBUG=eos,...`, its debug contexts) on stderr.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        eprintln!("rdkafka {level:?} {fac}: {message}");
    }
}

impl ProducerContext for SoakProducerContext {
    /// The record's id and when it was handed to librdkafka.
    type DeliveryOpaque = Box<(u64, Instant)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (id, sent) = *opaque;
        let now = Instant::now();
        let mut t = self.tracker.lock().unwrap();
        match result {
            Ok(m) => {
                let p = m.partition() as usize;
                if let Some(map) = t.acked.get_mut(p) {
                    map.insert(m.offset(), id);
                }
                if let Some(times) = t.ack_times.get_mut(p) {
                    times.push((sent, now));
                }
            }
            Err((e, _)) => {
                *t.delivery_errors.entry(e.to_string()).or_default() += 1;
            }
        }
    }
}

fn new_producer(
    bootstrap: &str,
    tracker: &Arc<Mutex<Tracker>>,
) -> rdkafka::producer::BaseProducer<SoakProducerContext> {
    let mut config = ClientConfig::new();
    // librdkafka refuses an empty `debug`: set it only when asked for.
    if let Some(contexts) = std::env::var("SOAK_RDKAFKA_DEBUG")
        .ok()
        .filter(|v| !v.is_empty())
    {
        config.set("debug", contexts);
    }
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        // A record is given up only after 10 minutes: failures to acknowledge during faults
        // are retried, as an application would want.
        .set("message.timeout.ms", "600000")
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug)
        .create_with_context(SoakProducerContext {
            tracker: tracker.clone(),
        })
        .expect("producer")
}

/// Starts `producers` producer threads sharing `rate` records/s over `partitions` partitions.
pub fn start_producers(
    bootstrap: &str,
    producers: u32,
    rate: u32,
    partitions: i32,
    tracker: Arc<Mutex<Tracker>>,
    control: Arc<LoadControl>,
    run_start: Instant,
) -> Vec<JoinHandle<()>> {
    (0..producers)
        .map(|index| {
            let bootstrap = bootstrap.to_string();
            let tracker = tracker.clone();
            let control = control.clone();
            let per_producer = f64::from(rate) / f64::from(producers);
            std::thread::Builder::new()
                .name(format!("soak-producer-{index}"))
                .spawn(move || {
                    produce_loop(
                        &bootstrap,
                        index,
                        per_producer,
                        partitions,
                        &tracker,
                        &control,
                        run_start,
                    )
                })
                .expect("producer thread")
        })
        .collect()
}

fn produce_loop(
    bootstrap: &str,
    index: u32,
    rate: f64,
    partitions: i32,
    tracker: &Arc<Mutex<Tracker>>,
    control: &LoadControl,
    run_start: Instant,
) {
    let mut producer = new_producer(bootstrap, tracker);
    let mut seq: u64 = 0;
    let mut budget = 0.0f64;
    let mut last = Instant::now();
    let mut quiet = false;
    let mut value = vec![b'.'; VALUE_BYTES];
    loop {
        producer.poll(Duration::from_millis(10));
        if let Some(fatal) = producer.client().fatal_error() {
            let msg = format!(
                "{:.1}s: producer {index} fatal error {fatal:?}; a new producer continues",
                run_start.elapsed().as_secs_f64()
            );
            tracker.lock().unwrap().fatal_errors.push(msg);
            // Whatever was in flight is reported failed by the flush or dropped with it.
            let _ = producer.flush(Duration::from_secs(5));
            producer = new_producer(bootstrap, tracker);
        }
        if control.stop.load(Ordering::Relaxed) || control.stop_producers.load(Ordering::Relaxed) {
            break;
        }
        let idle = control.idle.load(Ordering::Relaxed);
        if idle {
            if !quiet && producer.in_flight_count() == 0 {
                quiet = true;
                control.producers_quiet.fetch_add(1, Ordering::SeqCst);
            }
            last = Instant::now();
            continue;
        }
        if quiet {
            quiet = false;
            control.producers_quiet.fetch_sub(1, Ordering::SeqCst);
        }
        let now = Instant::now();
        budget += now.duration_since(last).as_secs_f64() * rate;
        last = now;
        // Never more than a second's worth at once (after a stall the backlog is dropped).
        budget = budget.min(rate.max(1.0));
        while budget >= 1.0 {
            let id = record_id(index, seq);
            let key = record_key(id);
            let n = key.len().min(VALUE_BYTES);
            value[..n].copy_from_slice(&key.as_bytes()[..n]);
            // Records go round the partitions, so every partition gets traffic.
            let partition = ((seq + u64::from(index) * 7) % partitions as u64) as i32;
            let record = BaseRecord::with_opaque_to(TOPIC, Box::new((id, Instant::now())))
                .key(&key)
                .payload(&value)
                .partition(partition);
            match producer.send(record) {
                Ok(()) => {
                    seq += 1;
                    budget -= 1.0;
                    tracker.lock().unwrap().sent += 1;
                }
                Err((_, _)) => {
                    // Queue full (the cluster is not acknowledging): wait, send later.
                    break;
                }
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(120));
    if quiet {
        control.producers_quiet.fetch_sub(1, Ordering::SeqCst);
    }
}

fn new_consumer(bootstrap: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", "500")
        .create()
        .expect("consumer");
    c.subscribe(&[TOPIC]).expect("subscribe");
    c
}

/// Starts the consumer group member; it leaves the group during idle windows (committing first)
/// and joins again after.
pub fn start_consumer(
    bootstrap: &str,
    tracker: Arc<Mutex<Tracker>>,
    control: Arc<LoadControl>,
    run_start: Instant,
) -> JoinHandle<()> {
    let bootstrap = bootstrap.to_string();
    std::thread::Builder::new()
        .name("soak-consumer".into())
        .spawn(move || {
            let mut consumer: Option<BaseConsumer> = None;
            let mut last_error: Option<String> = None;
            loop {
                let stop = control.stop.load(Ordering::Relaxed);
                let idle = control.idle.load(Ordering::Relaxed);
                if stop || idle {
                    if let Some(c) = consumer.take() {
                        let _ = c.commit_consumer_state(CommitMode::Sync);
                        c.unsubscribe();
                        drop(c);
                    }
                    control.consumer_quiet.store(true, Ordering::SeqCst);
                    if stop {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                control.consumer_quiet.store(false, Ordering::SeqCst);
                let c = consumer.get_or_insert_with(|| new_consumer(&bootstrap));
                match c.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Ok(m)) => {
                        let mut t = tracker.lock().unwrap();
                        t.consumed_total += 1;
                        t.mark_consumed(m.partition() as usize, m.offset());
                    }
                    Some(Err(e)) => {
                        // Transport errors during faults are expected; keep each distinct one
                        // once per streak so the summary shows them.
                        let text = e.to_string();
                        if last_error.as_deref() != Some(&text) {
                            tracker.lock().unwrap().consumer_errors.push(format!(
                                "{:.1}s: consumer: {text}",
                                run_start.elapsed().as_secs_f64()
                            ));
                            last_error = Some(text);
                        }
                    }
                }
            }
        })
        .expect("consumer thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let id = record_id(3, 123_456_789);
        assert_eq!(record_key(id), "3-123456789");
        assert_eq!(parse_key(record_key(id).as_bytes()), Some(id));
        assert_eq!(parse_key(b"x-1"), None);
    }

    #[test]
    fn first_ack_after_finds_the_next_arrival() {
        let mut t = Tracker::new(1);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // (sent, acknowledged)
        t.ack_times[0] = vec![(ms(0), ms(10)), (ms(2), ms(20)), (ms(12), ms(30))];
        // The answer at 10 ms is for a record sent before 5 ms: the first one sent after is
        // acknowledged at 30 ms.
        assert_eq!(t.first_ack_after(0, ms(5)), Some(ms(30)));
        assert_eq!(t.first_ack_after(0, ms(30)), None);
    }
}
