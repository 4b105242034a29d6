//! librdkafka helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// Per partition, the (offset, key, value) of every message read, in order.
pub type Consumed = HashMap<i32, Vec<(i64, Vec<u8>, Vec<u8>)>>;

pub fn payload(i: usize, size: usize) -> Vec<u8> {
    let mut v = format!("{i:010}|").into_bytes();
    let mut x = i as u64 ^ 0x9e37_79b9_7f4a_7c15;
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Compressible but not trivially: a few distinct bytes.
        v.push(b'a' + (x % 6) as u8);
    }
    v
}

pub fn produce(bootstrap: &str, topic: &str, compression: &str, n: usize, partitions: i32) {
    produce_with(
        bootstrap,
        topic,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("compression.type", compression),
        ],
        n,
        partitions,
        |i| payload(i, 10 + (i * 37) % 900),
    );
}

/// Produces `n` messages (key `k{i}`, value `value(i)`, partition i mod `partitions`) and waits
/// until every one is acknowledged.
pub fn produce_with(
    bootstrap: &str,
    topic: &str,
    settings: &[(&str, &str)],
    n: usize,
    partitions: i32,
    value: impl Fn(usize) -> Vec<u8>,
) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().expect("producer");
    for i in 0..n {
        let value = value(i);
        let key = format!("k{i}");
        let mut record = BaseRecord::to(topic)
            .key(&key)
            .payload(&value)
            .partition((i % partitions as usize) as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    // Queue full: wait for deliveries.
                    assert!(
                        matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "{e}"
                    );
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("all delivered");
    assert_eq!(producer.in_flight_count(), 0);
}

pub fn consume_all(bootstrap: &str, topic: &str, partitions: i32, expect: usize) -> Consumed {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "shardlog-tests-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut got: Consumed = HashMap::new();
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while count < expect {
        assert!(
            Instant::now() < deadline,
            "only {count} of {expect} consumed"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m.expect("no consume error");
            got.entry(m.partition()).or_default().push((
                m.offset(),
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
            count += 1;
        }
    }
    got
}
