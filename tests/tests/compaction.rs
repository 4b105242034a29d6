//! Compacted topics with real clients: librdkafka (rdkafka) and kafka-python read a topic while
//! the broker's log cleaner compacts it; tombstones disappear.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use shardlog_tests::{cli, run_ok, wait_until, workspace_root, Broker};

const T: Duration = Duration::from_secs(60);

/// A broker whose cleaner and retention checks run often, so that segments roll by age and
/// get cleaned within a test's time.
fn broker() -> Broker {
    Broker::start_with(&[
        "--set",
        "log.cleaner.backoff.ms=300",
        "--set",
        "log.retention.check.interval.ms=300",
    ])
}

/// A single-partition compacted topic with small segments that roll after a second.
fn create_compacted(b: &str, topic: &str, extra: &[&str]) {
    let mut args = vec![
        "-b",
        b,
        "topic",
        "create",
        topic,
        "-p",
        "1",
        "--config",
        "cleanup.policy=compact",
        "--config",
        "segment.bytes=1048576",
        "--config",
        "segment.ms=1000",
        "--config",
        "min.cleanable.dirty.ratio=0.01",
    ];
    for e in extra {
        args.extend(["--config", e]);
    }
    cli(&args);
}

fn producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, topic: &str, key: &[u8], value: Option<&[u8]>) {
    loop {
        let mut r = BaseRecord::<[u8], [u8]>::to(topic).partition(0).key(key);
        if let Some(v) = value {
            r = r.payload(v);
        }
        match p.send(r) {
            Ok(()) => return,
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                _,
            )) => {
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("send: {e}"),
        }
    }
}

/// Every record of partition 0 from the start to the end, as (offset, key, value).
type Read = Vec<(i64, Vec<u8>, Option<Vec<u8>>)>;

fn read_all(bootstrap: &str, topic: &str) -> Read {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "compaction-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + T;
    loop {
        assert!(
            Instant::now() < deadline,
            "read of {topic} did not reach the end"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => out.push((
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().map(|v| v.to_vec()),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("consume: {e}"),
        }
    }
}

/// The Done-when check: 1,000 keys updated 1,000 times read back as 1,000 records once
/// cleaned, through librdkafka, while kafka-python reads the topic over and over.
#[test]
fn a_thousand_keys_updated_a_thousand_times_read_back_as_a_thousand_records() {
    let broker = broker();
    let b = broker.bootstrap();
    create_compacted(&b, "compacted", &[]);
    let (keys, rounds) = (1_000i64, 1_000i64);
    let p = producer(&b);
    for round in 0..rounds {
        for k in 0..keys {
            send(
                &p,
                "compacted",
                format!("key-{k}").as_bytes(),
                Some(format!("value-{round}").as_bytes()),
            );
        }
        p.poll(Duration::ZERO);
    }
    p.flush(T).expect("flush");

    // kafka-python reads while the cleaner works, until it sees one record per key.
    let script = workspace_root().join("tests/python/kafka_python_compacted.py");
    let python = std::env::var("SHARDLOG_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut reader = Command::new(python);
    reader
        .arg(script)
        .arg(&b)
        .arg("compacted")
        .arg(keys.to_string())
        .arg(rounds.to_string());
    let python_reader = std::thread::spawn(move || run_ok(&mut reader));

    let mut last = Vec::new();
    let compacted = wait_until(Duration::from_secs(120), || {
        last = read_all(&b, "compacted");
        last.len() == keys as usize
    });
    assert!(
        compacted,
        "still {} records after 120 s\nbroker log:\n{}",
        last.len(),
        broker.log_tail(40)
    );
    for (offset, key, value) in &last {
        let k: i64 = std::str::from_utf8(&key[4..]).unwrap().parse().unwrap();
        assert_eq!(
            *offset,
            (rounds - 1) * keys + k,
            "the last round's offsets stay"
        );
        assert_eq!(
            value.as_deref(),
            Some(format!("value-{}", rounds - 1).as_bytes())
        );
    }
    let out = python_reader.join().expect("python reader");
    assert!(out.contains("kafka-python compacted read ok"), "{out}");
    // `topic describe` shows the cleaner's progress, from the broker's HTTP endpoint.
    let admin = format!("127.0.0.1:{}", broker.metrics_port);
    let described = cli(&[
        "-b",
        &b,
        "topic",
        "describe",
        "compacted",
        "--admin",
        &admin,
    ]);
    assert!(described.contains("log cleaner:"), "{described}");
    let described = cli(&[
        "-b",
        &b,
        "--json",
        "topic",
        "describe",
        "compacted",
        "--admin",
        &admin,
    ]);
    let v: serde_json::Value = serde_json::from_str(&described).expect("JSON");
    let cleaned_below = v[0]["cleaner"][0]["first_dirty_offset"].as_i64();
    assert!(
        cleaned_below.is_some_and(|o| o >= (rounds - 1) * keys),
        "{described}"
    );
    let (_, metrics) = broker.http_get("/metrics").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shardlog_log_cleaner_runs_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// Tombstones: a deleted key disappears once the cleaner ran past `delete.retention.ms`, its
/// other keys stay with their latest value.
#[test]
fn tombstones_remove_keys_after_delete_retention() {
    let broker = broker();
    let b = broker.bootstrap();
    create_compacted(&b, "tombstones", &["delete.retention.ms=100"]);
    let p = producer(&b);
    for round in 0..3 {
        for k in 0..100 {
            send(
                &p,
                "tombstones",
                format!("k{k}").as_bytes(),
                Some(format!("v{round}").as_bytes()),
            );
        }
    }
    for k in (0..100).step_by(2) {
        send(&p, "tombstones", format!("k{k}").as_bytes(), None);
    }
    p.flush(T).expect("flush");
    let mut last = Vec::new();
    let done = wait_until(Duration::from_secs(60), || {
        last = read_all(&b, "tombstones");
        last.len() == 50
    });
    assert!(
        done,
        "{} records: {:?}",
        last.len(),
        &last[..last.len().min(10)]
    );
    let by_key: BTreeMap<String, Option<Vec<u8>>> = last
        .into_iter()
        .map(|(_, k, v)| (String::from_utf8(k).unwrap(), v))
        .collect();
    for k in 0..100 {
        let v = by_key.get(&format!("k{k}"));
        if k % 2 == 0 {
            assert!(v.is_none(), "k{k} was deleted");
        } else {
            assert_eq!(v, Some(&Some(b"v2".to_vec())), "k{k}");
        }
    }
}

/// `__consumer_offsets` is compacted: a group that committed 2,000 times keeps its last commit
/// through a restart, and the restarted coordinator replays a few records instead of the whole
/// history.
#[test]
fn consumer_offsets_are_compacted_and_the_last_commit_survives_a_restart() {
    let mut broker = Broker::start_with(&[
        "--set",
        "log.cleaner.backoff.ms=300",
        "--set",
        "offsets.topic.num.partitions=1",
        "--set",
        "offsets.topic.segment.bytes=65536",
    ]);
    let b = broker.bootstrap();
    cli(&["-b", &b, "topic", "create", "t", "-p", "10"]);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", "committer")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let commits = 2_000i64;
    for i in 1..=commits {
        let mut tpl = TopicPartitionList::new();
        for p in 0..10 {
            tpl.add_partition_offset("t", p, Offset::Offset(i * 10 + i64::from(p)))
                .unwrap();
        }
        consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .expect("commit");
    }
    drop(consumer);
    let history = 10 * commits;
    // Cleaned as far as it can be: no dirty bytes left in closed segments (the active one is
    // never cleaned), most of the history below the cleaner's progress.
    let mut progress = String::new();
    let cleaned = wait_until(Duration::from_secs(60), || {
        progress = broker
            .http_get("/v1/partitions/__consumer_offsets")
            .map(|(_, body)| body)
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&progress).unwrap_or_default();
        let p0 = &v["partitions"][0]["cleaner"];
        p0["dirty_bytes"].as_u64() == Some(0)
            && p0["first_dirty_offset"]
                .as_i64()
                .is_some_and(|o| o >= history / 2)
    });
    assert!(cleaned, "not cleaned: {progress}\n{}", broker.log_tail(30));
    broker.stop();
    broker.restart();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", "committer")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..10 {
        tpl.add_partition("t", p);
    }
    let committed = consumer.committed_offsets(tpl, T).expect("committed");
    for p in 0..10 {
        let e = committed.find_partition("t", p).expect("partition");
        assert_eq!(
            e.offset(),
            Offset::Offset(commits * 10 + i64::from(p)),
            "partition {p}"
        );
    }
    // The restart's load line: "loaded N group record(s) of __consumer_offsets-0 in ...".
    let log = broker.log();
    let line = log
        .lines()
        .rfind(|l| l.contains("group record(s) of __consumer_offsets-0"))
        .expect("a load line");
    let loaded: i64 = line
        .split("loaded ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a record count");
    eprintln!("after the restart: {line}");
    // What is left: the active segment (at most 64 KiB of commits) plus one record per key
    // (about 630 of the 20,000 here).
    assert!(
        loaded < history / 10,
        "replayed {loaded} of {history} records: {line}"
    );
}
