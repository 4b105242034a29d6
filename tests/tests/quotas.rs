//! Client quotas: a producer limited to 10 MB/s gets 10 MB/s (within 15 %) and throttle times
//! while another client id is unaffected, likewise a consumer and `request_percentage`; one
//! client id over both shards gets the quota once; quotas set with `shardlog-cli quota`
//! survive a restart; in cluster mode a quota set through one broker is seen by another.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use shardlog_tests::{cli, wait_until, Broker, Cluster, ZooKeeper};

mod common;

const LIMIT: u64 = 10 * 1024 * 1024;

/// Counts acknowledged bytes and remembers the largest throttle librdkafka reported.
#[derive(Default)]
struct Counting {
    delivered: AtomicU64,
    throttle_max_ms: AtomicI64,
}

#[derive(Clone, Default)]
struct Ctx(Arc<Counting>);

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        for b in stats.brokers.values() {
            if let Some(t) = &b.throttle {
                self.0.throttle_max_ms.fetch_max(t.max, Ordering::Relaxed);
            }
        }
    }
}

impl ConsumerContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(m) = result {
            let n = rdkafka::message::Message::payload(m).map_or(0, |p| p.len());
            self.0.delivered.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Produces 10 KiB records as fast as the broker lets it for `run`; returns (bytes per second
/// acknowledged, largest throttle time librdkafka saw).
fn produce_flat_out(bootstrap: &str, topic: &str, client_id: &str, run: Duration) -> (f64, i64) {
    let ctx = Ctx::default();
    let producer: ThreadedProducer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set("acks", "1")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "65536")
        .set("statistics.interval.ms", "500")
        .create_with_context(ctx.clone())
        .expect("producer");
    let value = vec![b'x'; 10 * 1024];
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < run {
        let key = i.to_string();
        let record = BaseRecord::to(topic).key(&key).payload(&value);
        if producer.send(record).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        i += 1;
    }
    let delivered = ctx.0.delivered.load(Ordering::Relaxed);
    let rate = delivered as f64 / start.elapsed().as_secs_f64();
    let _ = producer.flush(Duration::from_secs(30));
    // One more statistics round, so a throttle of the last seconds is counted too.
    std::thread::sleep(Duration::from_millis(700));
    (rate, ctx.0.throttle_max_ms.load(Ordering::Relaxed))
}

#[test]
fn producer_byte_rate_limits_one_client_id_and_not_another() {
    let broker = Broker::start_with(&["--set", "num.partitions=2"]);
    let b = broker.bootstrap();
    set_client_quota(&b, "limited", "producer_byte_rate", LIMIT);
    let run = Duration::from_secs(12);
    let (limited, unlimited) = std::thread::scope(|s| {
        let l = s.spawn(|| produce_flat_out(&b, "quota-a", "limited", run));
        let u = s.spawn(|| produce_flat_out(&b, "quota-b", "free", run));
        (l.join().unwrap(), u.join().unwrap())
    });
    check_limited("producer", limited, LIMIT, unlimited, 2.0);
}

/// Asks for the cluster's metadata back to back as `client_id` for `run`; returns (requests
/// per second, largest throttle time librdkafka saw).
fn metadata_flat_out(bootstrap: &str, client_id: &str, run: Duration) -> (f64, i64) {
    let ctx = Ctx::default();
    let consumer: BaseConsumer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set("statistics.interval.ms", "500")
        .create_with_context(ctx.clone())
        .expect("client");
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run {
        if consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .is_ok()
        {
            n += 1;
        }
        consumer.poll(Duration::ZERO);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < until {
        consumer.poll(Duration::from_millis(100));
    }
    (rate, ctx.0.throttle_max_ms.load(Ordering::Relaxed))
}

/// `request_percentage` limits the shard time a client's requests take, whatever they are:
/// here back-to-back Metadata requests, limited to 0.2 % of a shard, beside an unlimited
/// client.
#[test]
fn request_percentage_limits_one_client_id_and_not_another() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    cli(&["-b", &b, "topic", "create", "rq", "-p", "8"]);
    set_client_quota(&b, "chatty", "request_percentage", 0.2);
    let run = Duration::from_secs(8);
    let (limited, free) = std::thread::scope(|s| {
        let l = s.spawn(|| metadata_flat_out(&b, "chatty", run));
        let f = s.spawn(|| metadata_flat_out(&b, "calm", run));
        (l.join().unwrap(), f.join().unwrap())
    });
    eprintln!(
        "metadata requests/s: limited {:.0} (throttle max {} ms); free {:.0} (throttle max {} ms)",
        limited.0, limited.1, free.0, free.1
    );
    assert!(limited.1 > 0, "the limited client saw throttle_time_ms");
    assert_eq!(free.1, 0, "the other client id is never throttled");
    // A Metadata request takes 7-15 us of shard time here, so 0.2 % of a shard (2 ms per
    // second) allows 130-270 of them per second; the free client, bound by its own round
    // trips, made 2,600-3,200 (at 1 %, 654-1,357 against 2,627-3,208).
    assert!(
        limited.0 * 3.0 < free.0,
        "0.2 % of a shard should allow far fewer requests than the free client's {:.0}/s: {:.0}/s",
        free.0,
        limited.0
    );
}

/// Shards holding client connections now (`shardlog_connections{shard=".."}` above 0).
fn shards_with_connections(broker: &Broker) -> usize {
    let (_, body) = broker.http_get("/metrics").expect("metrics");
    body.lines()
        .filter(|l| l.starts_with("shardlog_connections{"))
        .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0))
        .count()
}

/// Many instances of one application usually share a client id; their connections land on
/// whichever shards accept them. The shards share the client's measured rate, so the broker
/// grants the quota once, as Kafka does, not once per shard.
#[test]
fn a_client_id_spread_over_both_shards_gets_the_quota_once() {
    const PRODUCERS: usize = 8;
    // SO_REUSEPORT picks the accepting shard from a hash of the client's port, so now and
    // then (about 1 run in 100) every producer lands on one shard and the test would measure
    // nothing it is about: it starts again with a fresh client id (a rate already measured
    // would throttle the next attempt's start).
    const ATTEMPTS: usize = 3;
    let broker = Broker::start_with(&["--shards", "2", "--set", "num.partitions=2"]);
    let b = broker.bootstrap();
    for attempt in 0..ATTEMPTS {
        let client = format!("fleet-{attempt}");
        set_client_quota(&b, &client, "producer_byte_rate", LIMIT);
        let run = Duration::from_secs(12);
        let (rates, spread) = std::thread::scope(|s| {
            let runs: Vec<_> = (0..PRODUCERS)
                .map(|_| s.spawn(|| produce_flat_out(&b, "quota-fleet", &client, run)))
                .collect();
            std::thread::sleep(Duration::from_secs(4));
            let spread = shards_with_connections(&broker);
            let rates: Vec<(f64, i64)> = runs.into_iter().map(|r| r.join().unwrap()).collect();
            (rates, spread)
        });
        let total: f64 = rates.iter().map(|r| r.0).sum();
        eprintln!(
            "{PRODUCERS} producers as one client id on {spread} shard(s): {:.2} MiB/s in all",
            mib(total)
        );
        if spread < 2 {
            eprintln!("attempt {attempt}: every connection landed on one shard; again");
            continue;
        }
        // Each producer learns of the throttle from its own next response, so what the
        // others have in flight then (up to 5 requests each) still lands, as in Kafka:
        // measured 11.8 MiB/s. With a rate per shard it was 21.6 MiB/s, twice the quota.
        assert!(
            total > 0.85 * LIMIT as f64 && total < 1.25 * LIMIT as f64,
            "{PRODUCERS} producers sharing a client id got {:.2} MiB/s against {:.2}",
            mib(total),
            mib(LIMIT as f64)
        );
        assert!(
            rates.iter().any(|r| r.1 > 0),
            "throttle_time_ms was reported"
        );
        return;
    }
    panic!("in {ATTEMPTS} attempts the producers' connections always landed on one shard");
}

/// Reads `topic`'s partition 0 from the beginning as `client_id` for `run`, fetching at most
/// 256 KiB at a time; returns (bytes per second read, largest throttle time librdkafka saw).
fn consume_flat_out(bootstrap: &str, topic: &str, client_id: &str, run: Duration) -> (f64, i64) {
    let ctx = Ctx::default();
    let consumer: BaseConsumer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", client_id)
        .set("group.id", client_id)
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "262144")
        .set("message.max.bytes", "262144")
        .set("max.partition.fetch.bytes", "262144")
        .set("statistics.interval.ms", "500")
        .create_with_context(ctx.clone())
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).expect("assign");
    let start = Instant::now();
    let mut read = 0u64;
    while start.elapsed() < run {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("no consume error");
            read += rdkafka::message::Message::payload(&m).map_or(0, |p| p.len()) as u64;
        }
    }
    let rate = read as f64 / start.elapsed().as_secs_f64();
    // One more statistics round, so a throttle of the last seconds is counted too.
    let until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < until {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    (rate, ctx.0.throttle_max_ms.load(Ordering::Relaxed))
}

/// `shardlog-cli quota set --client-id CLIENT --KEY VALUE` through `bootstrap`.
fn set_client_quota(bootstrap: &str, client: &str, key: &str, value: impl std::fmt::Display) {
    let flag = format!("--{}", key.replace('_', "-"));
    cli(&[
        "-b",
        bootstrap,
        "quota",
        "set",
        "--client-id",
        client,
        &flag,
        &value.to_string(),
    ]);
}

fn mib(rate: f64) -> f64 {
    rate / (1024.0 * 1024.0)
}

/// `limited` and `free` are (bytes per second, largest throttle time) of two clients run side
/// by side: the limited one within 15 % of `limit` and throttled, the other at more than
/// `free_factor` times the limit and never throttled.
fn check_limited(what: &str, limited: (f64, i64), limit: u64, free: (f64, i64), free_factor: f64) {
    eprintln!(
        "{what}s: limited {:.2} MiB/s (throttle max {} ms); free {:.2} MiB/s (throttle max {} ms)",
        mib(limited.0),
        limited.1,
        mib(free.0),
        free.1
    );
    let error = (limited.0 - limit as f64).abs() / limit as f64;
    assert!(
        error < 0.15,
        "limited {what} at {:.2} MiB/s, not within 15 % of {:.2}",
        mib(limited.0),
        mib(limit as f64)
    );
    assert!(limited.1 > 0, "the throttled {what} saw throttle_time_ms");
    assert!(
        free.0 > free_factor * limit as f64,
        "the other client id is held to the quota: {:.2} MiB/s",
        mib(free.0)
    );
    assert_eq!(free.1, 0, "the other client id is never throttled");
}

#[test]
fn consumer_byte_rate_limits_one_client_id_and_not_another() {
    const READ_LIMIT: u64 = 2 * 1024 * 1024;
    let broker = Broker::start();
    let b = broker.bootstrap();
    cli(&["-b", &b, "topic", "create", "cq", "-p", "1"]);
    // 60 MiB: more than either reader gets through in its run.
    common::produce_with(&b, "cq", &[("acks", "1")], 6 * 1024, 1, |i| {
        common::payload(i, 10 * 1024)
    });
    set_client_quota(&b, "slow-reader", "consumer_byte_rate", READ_LIMIT);
    let run = Duration::from_secs(12);
    let (limited, free) = std::thread::scope(|s| {
        let l = s.spawn(|| consume_flat_out(&b, "cq", "slow-reader", run));
        let f = s.spawn(|| consume_flat_out(&b, "cq", "fast-reader", Duration::from_secs(2)));
        (l.join().unwrap(), f.join().unwrap())
    });
    check_limited("consumer", limited, READ_LIMIT, free, 3.0);
}

/// Cluster mode: a quota set through one broker is stored in ZooKeeper
/// (`/config/clients/<id>`) and enforced by another, which learns it from its watch; a
/// deletion through that one reaches the first the same way.
#[test]
fn in_cluster_mode_a_quota_set_through_one_broker_holds_on_another() {
    let zk = ZooKeeper::start();
    let cluster = Cluster::start(&zk, 2, &[]);
    cluster.create_topic("cq", 1, 1, &[]);
    let leader = cluster.leader_of("cq", 0).expect("leader");
    let other = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a second broker");
    let (at_leader, at_other) = (
        cluster.broker(leader).bootstrap(),
        cluster.broker(other).bootstrap(),
    );
    set_client_quota(&at_other, "limited", "producer_byte_rate", LIMIT);
    let describe = |bootstrap: &str| cli(&["-b", bootstrap, "--json", "quota", "describe"]);
    assert!(
        wait_until(Duration::from_secs(10), || describe(&at_leader)
            .contains("limited")),
        "broker {leader} never saw the quota set through broker {other}: {}",
        describe(&at_leader)
    );
    // 15 s: longer than the quota window (11 s), when the first sample ages out.
    let (rate, throttle) = produce_flat_out(&at_leader, "cq", "limited", Duration::from_secs(15));
    eprintln!(
        "limited through broker {leader}: {:.2} MiB/s (throttle max {throttle} ms)",
        mib(rate)
    );
    let error = (rate - LIMIT as f64).abs() / LIMIT as f64;
    assert!(
        error < 0.15,
        "limited producer at {:.2} MiB/s on broker {leader}, not within 15 % of 10",
        mib(rate)
    );
    assert!(throttle > 0, "the throttled producer saw throttle_time_ms");
    cli(&[
        "-b",
        &at_leader,
        "quota",
        "delete",
        "--client-id",
        "limited",
        "--key",
        "producer_byte_rate",
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || !describe(&at_other)
            .contains("limited")),
        "broker {other} still has the quota deleted through broker {leader}: {}",
        describe(&at_other)
    );
}

#[test]
fn quotas_set_by_the_cli_survive_a_restart() {
    let mut broker = Broker::start();
    let b = broker.bootstrap();
    cli(&[
        "-b",
        &b,
        "quota",
        "set",
        "--client-id",
        "app",
        "--producer-byte-rate",
        "1048576",
    ]);
    cli(&[
        "-b",
        &b,
        "quota",
        "set",
        "--user-default",
        "--client-default",
        "--request-percentage",
        "12.5",
        "--consumer-byte-rate",
        "2000",
    ]);
    // validate_only changes nothing.
    cli(&[
        "-b",
        &b,
        "quota",
        "set",
        "--client-id",
        "x",
        "--producer-byte-rate",
        "5",
        "--validate-only",
    ]);
    cli(&[
        "-b",
        &b,
        "quota",
        "delete",
        "--user-default",
        "--client-default",
        "--key",
        "consumer_byte_rate",
    ]);
    let expect = |text: &str| {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let rows = v.as_array().unwrap();
        assert_eq!(rows.len(), 2, "{text}");
        assert_eq!(rows[0]["entity"]["client-id"], "app");
        assert_eq!(rows[0]["quotas"]["producer_byte_rate"], 1048576.0);
        assert_eq!(rows[1]["entity"]["user"], serde_json::Value::Null);
        assert_eq!(rows[1]["quotas"]["request_percentage"], 12.5);
        assert!(
            rows[1]["quotas"].get("consumer_byte_rate").is_none(),
            "{text}"
        );
    };
    expect(&cli(&["-b", &b, "--json", "quota", "describe"]));
    assert!(broker.stop().success());
    broker.restart();
    let b = broker.bootstrap();
    expect(&cli(&["-b", &b, "--json", "quota", "describe"]));
    let only = cli(&[
        "-b",
        &b,
        "--json",
        "quota",
        "describe",
        "--client-id",
        "app",
        "--strict",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&only)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn bad_quota_changes_are_refused_with_invalid_request() {
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    use kafka_protocol::messages::AlterClientQuotasRequest;
    use kafka_protocol::protocol::StrBytes;
    let broker = Broker::start();
    let mut client =
        shardlog_client::Client::connect(&broker.bootstrap(), "t", Duration::from_secs(5)).unwrap();
    let entry = |etype: &'static str, key: &'static str, value: f64| {
        EntryData::default()
            .with_entity(vec![EntityData::default()
                .with_entity_type(StrBytes::from_static_str(etype))
                .with_entity_name(Some(StrBytes::from_static_str("c")))])
            .with_ops(vec![OpData::default()
                .with_key(StrBytes::from_static_str(key))
                .with_value(value)])
    };
    let req = AlterClientQuotasRequest::default().with_entries(vec![
        entry("client-id", "bogus_key", 1.0),
        entry("client-id", "producer_byte_rate", -5.0),
        entry("client-id", "consumer_byte_rate", f64::NAN),
        entry("topic", "producer_byte_rate", 100.0),
        entry("user", "request_percentage", 50.0),
    ]);
    let r = client.with_any(|c| c.call(&req)).unwrap();
    let codes: Vec<i16> = r.entries.iter().map(|e| e.error_code).collect();
    assert_eq!(codes, vec![42, 42, 42, 42, 0], "{r:?}");
}
