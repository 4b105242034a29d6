//! Transactions with real clients: librdkafka's transactional producer (through the rdkafka
//! crate) and read_committed / read_uncommitted consumers, kafka-python and aiokafka.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use shardlog_client::{Client, CoordinatorKey};
use shardlog_tests::{cli, run_ok, workspace_root, Broker, Cluster, ZooKeeper};

const T: Duration = Duration::from_secs(30);

fn txn_producer(bootstrap: &str, id: &str, extra: &[(&str, &str)]) -> BaseProducer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("linger.ms", "5");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    let p: BaseProducer = c.create().expect("producer");
    p.init_transactions(T).expect("init_transactions");
    p
}

/// Sends `value` to `topic`-`partition` and waits until it is acknowledged.
fn send(p: &BaseProducer, topic: &str, partition: i32, value: &str) {
    loop {
        match p.send(
            BaseRecord::<str, str>::to(topic)
                .partition(partition)
                .key(value)
                .payload(value),
        ) {
            Ok(()) => break,
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                _,
            )) => {
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("send {value}: {e}"),
        }
    }
}

/// Every record in `topics` (all partitions, from the start to the end seen now) as read
/// with `isolation`: (topic, partition) -> [(offset, value)]. One consumer per topic, since
/// librdkafka's end-of-partition event names the partition only.
fn read_all(
    bootstrap: &str,
    topics: &[(&str, i32)],
    isolation: &str,
) -> BTreeMap<(String, i32), Vec<(i64, String)>> {
    let mut out: BTreeMap<(String, i32), Vec<(i64, String)>> = BTreeMap::new();
    for (topic, partitions) in topics {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("reader-{isolation}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", isolation)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..*partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        let mut at_end = BTreeSet::new();
        let deadline = Instant::now() + T;
        while at_end.len() < *partitions as usize {
            assert!(
                Instant::now() < deadline,
                "{isolation} read of {topic} did not reach the end: {out:?}"
            );
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => {
                    let v = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
                    at_end.remove(&m.partition());
                    out.entry((m.topic().to_string(), m.partition()))
                        .or_default()
                        .push((m.offset(), v));
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(e)) => panic!("consume: {e}"),
            }
        }
    }
    out
}

fn values(read: &BTreeMap<(String, i32), Vec<(i64, String)>>) -> BTreeSet<String> {
    read.values().flatten().map(|(_, v)| v.clone()).collect()
}

/// Commits and aborts interleaved over two topics and several partitions: read_committed
/// sees exactly the committed records, read_uncommitted sees every record, and the control
/// batches take offsets that consumers skip.
#[test]
fn read_committed_sees_committed_transactions_only() {
    let broker = Broker::start_with(&["--set", "num.partitions=3"]);
    let b = broker.bootstrap();
    let p = txn_producer(&b, "interleaved", &[]);
    let mut committed = BTreeSet::new();
    let mut aborted = BTreeSet::new();
    for i in 0..12 {
        p.begin_transaction().expect("begin");
        let mut these = Vec::new();
        for j in 0..9 {
            let topic = if j % 2 == 0 { "txn-a" } else { "txn-b" };
            let v = format!("t{i}-r{j}");
            send(&p, topic, j % 3, &v);
            these.push(v);
        }
        // A BaseProducer's delivery reports must be polled before an abort.
        p.flush(T).expect("flush");
        if i % 3 == 1 {
            p.abort_transaction(T).expect("abort");
            aborted.extend(these);
        } else {
            p.commit_transaction(T).expect("commit");
            committed.extend(these);
        }
    }
    let topics = [("txn-a", 3), ("txn-b", 3)];
    let rc = read_all(&b, &topics, "read_committed");
    assert_eq!(
        values(&rc),
        committed,
        "read_committed sees the committed records only"
    );
    let ru = read_all(&b, &topics, "read_uncommitted");
    let all: BTreeSet<String> = committed.union(&aborted).cloned().collect();
    assert_eq!(values(&ru), all, "read_uncommitted sees every record");
    // Each transaction wrote one marker on each partition it touched, so offsets have gaps.
    let max_offset = ru
        .values()
        .flatten()
        .map(|(o, _)| *o)
        .max()
        .expect("records");
    let per_partition_max = ru.values().map(|v| v.len()).max().unwrap() as i64;
    assert!(
        max_offset >= per_partition_max,
        "markers take offsets: max offset {max_offset} with {per_partition_max} records"
    );
    assert!(broker.is_running());
}

/// A second producer with the same transactional id fences the first: its next transaction
/// fails and nothing it sends becomes visible to read_committed.
#[test]
fn a_zombie_producer_is_fenced() {
    let broker = Broker::start_with(&["--set", "num.partitions=1"]);
    let b = broker.bootstrap();
    let old = txn_producer(&b, "fenced-id", &[]);
    old.begin_transaction().expect("begin");
    send(&old, "fence", 0, "zombie-1");
    let new = txn_producer(&b, "fenced-id", &[]);
    new.begin_transaction().expect("begin");
    send(&new, "fence", 0, "fresh-1");
    new.commit_transaction(T).expect("commit");
    // The zombie's transaction was aborted when the new producer initialised; its commit
    // must fail with a fencing error.
    let err = old
        .commit_transaction(T)
        .expect_err("the zombie's commit must fail");
    let text = err.to_string();
    assert!(
        text.contains("fenced") || text.contains("Fenced") || text.contains("EPOCH"),
        "fencing error expected, got {text}"
    );
    let rc = read_all(&b, &[("fence", 1)], "read_committed");
    assert_eq!(
        values(&rc),
        BTreeSet::from(["fresh-1".to_string()]),
        "only the new producer's record is visible"
    );
}

/// A transaction left open past its timeout is aborted by the coordinator: its record never
/// becomes visible, and records after it are not held back (the LSO moves on).
#[test]
fn an_open_transaction_past_its_timeout_is_aborted() {
    let broker = Broker::start_with(&[
        "--set",
        "num.partitions=1",
        "--set",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=500",
    ]);
    let b = broker.bootstrap();
    let stuck = txn_producer(&b, "stuck", &[("transaction.timeout.ms", "2000")]);
    stuck.begin_transaction().expect("begin");
    send(&stuck, "timeout", 0, "never-visible");
    stuck.flush(T).expect("flush");
    // Another producer's committed record after the open transaction.
    let other = txn_producer(&b, "other", &[]);
    other.begin_transaction().expect("begin");
    send(&other, "timeout", 0, "visible");
    other.commit_transaction(T).expect("commit");
    std::thread::sleep(Duration::from_secs(4));
    let rc = read_all(&b, &[("timeout", 1)], "read_committed");
    assert_eq!(
        values(&rc),
        BTreeSet::from(["visible".to_string()]),
        "the timed-out transaction is aborted and does not hold back later records"
    );
    drop(stuck);
}

/// A consume-transform-produce step: reads what the group has not processed, writes each
/// input value to `out` and the consumer's positions to the transaction, and commits. Stops
/// after `transactions` commits or when `input` is drained; returns the values processed.
struct Pipeline {
    consumer: BaseConsumer,
    producer: BaseProducer,
}

impl Pipeline {
    fn start(bootstrap: &str) -> Pipeline {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "ctp")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("consumer");
        consumer.subscribe(&["ctp-in"]).expect("subscribe");
        let producer = txn_producer(bootstrap, "ctp-pipeline", &[]);
        Pipeline { consumer, producer }
    }

    /// Polls up to 50 records, or until `idle` passes without one.
    fn poll_some(&self, idle: Duration) -> Vec<String> {
        let mut got = Vec::new();
        let mut last = Instant::now();
        while got.len() < 50 && last.elapsed() < idle {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    got.push(String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap());
                    last = Instant::now();
                }
                // Transport errors while a broker is down are reported and retried.
                Some(Err(e)) => eprintln!("consume: {e}"),
                None => {}
            }
        }
        got
    }

    /// One transaction over what `poll_some` found; false when nothing was left.
    fn step(&self, commit: bool) -> Option<Vec<String>> {
        // Long enough for the group to (re)assign the partitions.
        let got = self.poll_some(Duration::from_secs(10));
        if got.is_empty() {
            return None;
        }
        self.producer.begin_transaction().expect("begin");
        for (i, v) in got.iter().enumerate() {
            send(&self.producer, "ctp-out", (i % 2) as i32, v);
        }
        let positions = self.consumer.position().expect("position");
        let meta = self.consumer.group_metadata().expect("group metadata");
        self.producer
            .send_offsets_to_transaction(&positions, &meta, T)
            .expect("send_offsets_to_transaction");
        if commit {
            self.producer.commit_transaction(T).expect("commit");
        } else {
            self.producer.flush(T).expect("flush");
        }
        Some(got)
    }
}

/// Consume-transform-produce with the offsets sent to the transaction, and the broker killed
/// with SIGKILL while a transaction is open: after the restart a new pipeline instance with the
/// same transactional id fences the old one (its open transaction is aborted), resumes from
/// the offsets committed with the last transaction, and every input record appears in the
/// output exactly once for read_committed.
#[test]
fn consume_transform_produce_is_exactly_once_across_kill_9() {
    let mut broker = Broker::start_with(&[
        "--set",
        "num.partitions=2",
        "--set",
        "group.initial.rebalance.delay.ms=0",
    ]);
    let b = broker.bootstrap();
    let n = 600;
    let input = load_input(&b, n);
    let first = Pipeline::start(&b);
    let mut done = 0;
    for _ in 0..4 {
        done += first.step(true).expect("input left").len();
    }
    // A transaction in flight, its records in the log, when the broker dies.
    let open = first.step(false).expect("input left");
    assert!(!open.is_empty());
    broker.kill9();
    broker.restart();
    // The old instance leaves the group (so the new one is assigned at once) and disappears
    // with its transaction open.
    drop(first);
    let second = Pipeline::start(&b);
    while let Some(got) = second.step(true) {
        done += got.len();
    }
    drop(second);
    assert_exactly_once(&b, &input);
    assert!(done >= n, "the pipelines processed {done} of {n}");
}

/// `shardlog-cli transactions` against the broker: an open transaction is listed, described
/// with its partition, and its producer shows the transaction's first offset; once committed,
/// the id is CompleteCommit and the producer has no open transaction.
#[test]
fn the_cli_shows_transactions_and_producers() {
    let broker = Broker::start_with(&["--set", "num.partitions=1"]);
    let b = broker.bootstrap();
    let p = txn_producer(&b, "cli-shown", &[]);
    p.begin_transaction().expect("begin");
    send(&p, "cli-txn", 0, "x");
    p.flush(T).expect("flush");
    let list = cli(&["-b", &b, "transactions", "list", "--state", "Ongoing"]);
    assert!(list.contains("cli-shown"), "{list}");
    let described = cli(&[
        "-b",
        &b,
        "--json",
        "transactions",
        "describe",
        "--transactional-id",
        "cli-shown",
    ]);
    assert!(described.contains("\"Ongoing\""), "{described}");
    assert!(described.contains("cli-txn"), "{described}");
    let producers = cli(&[
        "-b",
        &b,
        "--json",
        "transactions",
        "producers",
        "--topic",
        "cli-txn",
        "--partition",
        "0",
    ]);
    let v: serde_json::Value = serde_json::from_str(&producers).expect(&producers);
    assert_eq!(
        v["producers"][0]["current_txn_start_offset"],
        serde_json::json!(0),
        "{producers}"
    );
    p.commit_transaction(T).expect("commit");
    let described = cli(&[
        "-b",
        &b,
        "transactions",
        "describe",
        "--transactional-id",
        "cli-shown",
    ]);
    assert!(described.contains("CompleteCommit"), "{described}");
}

/// The input of the consume-transform-produce tests, committed by a transactional loader.
fn load_input(bootstrap: &str, n: usize) -> Vec<String> {
    let input: Vec<String> = (0..n).map(|i| format!("in-{i}")).collect();
    let p = txn_producer(bootstrap, "ctp-loader", &[]);
    p.begin_transaction().expect("begin");
    for (i, v) in input.iter().enumerate() {
        send(&p, "ctp-in", (i % 2) as i32, v);
    }
    p.commit_transaction(T).expect("commit");
    input
}

/// Every input value appears in `ctp-out` exactly once for read_committed.
fn assert_exactly_once(bootstrap: &str, input: &[String]) {
    let out = read_all(bootstrap, &[("ctp-out", 2)], "read_committed");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for v in out.values().flatten().map(|(_, v)| v.clone()) {
        *seen.entry(v).or_default() += 1;
    }
    let dup: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dup.is_empty(), "records written twice: {dup:?}");
    let missing: Vec<_> = input.iter().filter(|v| !seen.contains_key(*v)).collect();
    assert!(missing.is_empty(), "records never written: {missing:?}");
    assert_eq!(seen.len(), input.len());
}

/// Cluster mode: the pipeline's transaction coordinator's broker is killed with SIGKILL while
/// a transaction is open, then (with it back) the leader of an output partition: each time a
/// new pipeline instance fences the old one and resumes, and every input record appears in the
/// output exactly once.
#[test]
fn in_cluster_mode_consume_transform_produce_survives_killing_the_coordinator_and_a_leader() {
    let zk = ZooKeeper::start();
    let mut cluster = Cluster::start(&zk, 3, &["--set", "transaction.state.log.num.partitions=3"]);
    cluster.create_topic("ctp-in", 2, 3, &[]);
    cluster.create_topic("ctp-out", 2, 3, &[]);
    let input = load_input(&cluster.bootstrap(), 300);

    let first = Pipeline::start(&cluster.bootstrap());
    for _ in 0..2 {
        first.step(true).expect("input left");
    }
    first.step(false).expect("input left");
    let coordinator = Client::connect(&cluster.bootstrap(), "txn-test", T)
        .and_then(|mut c| c.coordinator_of(CoordinatorKey::transaction("ctp-pipeline")))
        .expect("the pipeline's coordinator");
    cluster.kill9(coordinator);
    drop(first);

    let second = Pipeline::start(&cluster.bootstrap_running());
    for _ in 0..2 {
        second.step(true).expect("input left");
    }
    cluster.restart(coordinator);
    cluster.wait_registered(Duration::from_secs(60));
    cluster.wait_topic_ready("ctp-out", 2, 3, Duration::from_secs(60));
    second.step(false).expect("input left");
    let leader = cluster.leader_of("ctp-out", 0).expect("a leader");
    cluster.kill9(leader);
    drop(second);

    let third = Pipeline::start(&cluster.bootstrap_running());
    while third.step(true).is_some() {}
    drop(third);
    assert_exactly_once(&cluster.bootstrap_running(), &input);
}

/// KIP-890: a transactional batch for a partition the producer never added to its transaction
/// is refused (INVALID_TXN_STATE) by the partition leader, which asks the coordinator; the
/// partition that was added accepts the same batch.
#[test]
fn a_transactional_batch_for_a_partition_outside_the_transaction_is_refused() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName, TransactionalId};
    use kafka_protocol::protocol::StrBytes;
    use shardlog_client::NewTopic;
    use shardlog_protocol::batch::Compression;
    use shardlog_protocol::records::BatchBuilder;

    let broker = Broker::start();
    let b = broker.bootstrap();
    let mut client = Client::connect(&b, "verify-test", T).expect("connect");
    let topic = NewTopic {
        name: "verified".into(),
        partitions: 2,
        replication_factor: -1,
        configs: Vec::new(),
    };
    for (_, r) in client.create_topics(&[topic], false).expect("create") {
        r.expect("created");
    }
    let id = "verify-id";
    let producer =
        shardlog_tests::wait_for(T, || client.init_transactional_producer(id, 60_000).ok())
            .expect("InitProducerId");
    client
        .add_partitions_to_txn(id, producer, "verified", &[0])
        .expect("AddPartitionsToTxn");
    let mut produce = |partition: i32| -> i16 {
        let mut batch = BatchBuilder::new(Compression::None, 0)
            .producer(producer.producer_id, producer.epoch, 0)
            .transactional(true);
        batch.push(0, None, Some(b"v"), &[]).expect("record");
        let req = ProduceRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(id))))
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("verified")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch.build().expect("batch").into()))])]);
        let leader = client.leader_of("verified", partition).expect("leader");
        let resp = client
            .connection_to(leader)
            .expect("connection")
            .call(&req)
            .expect("produce");
        resp.responses[0].partition_responses[0].error_code
    };
    assert_eq!(
        produce(0),
        0,
        "the partition in the transaction takes the batch"
    );
    assert_eq!(
        produce(1),
        shardlog_client::codes::INVALID_TXN_STATE,
        "a partition outside the transaction refuses it"
    );
}

fn python_script(name: &str, broker: &Broker, marker: &str) {
    let script = workspace_root().join("tests/python").join(name);
    let python = std::env::var("SHARDLOG_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = run_ok(Command::new(python).arg(script).arg(broker.bootstrap()));
    assert!(out.contains(marker), "{out}\nbroker log:\n{}", broker.log());
}

/// kafka-python's transactional producer with read_committed and read_uncommitted consumers.
#[test]
fn kafka_python_transactions() {
    let broker = Broker::start();
    python_script(
        "kafka_python_transactions.py",
        &broker,
        "kafka-python transactions ok",
    );
}

/// confluent-kafka (Python): interleaved commits and aborts, and consume-transform-produce with
/// the offsets sent to the transaction.
#[test]
fn confluent_kafka_transactions() {
    let broker = Broker::start_with(&["--set", "group.initial.rebalance.delay.ms=0"]);
    python_script(
        "confluent_kafka_transactions.py",
        &broker,
        "confluent-kafka transactions ok",
    );
}

/// aiokafka's transactional producer against the same broker.
#[test]
fn aiokafka_transactions() {
    let broker = Broker::start();
    python_script(
        "aiokafka_transactions.py",
        &broker,
        "aiokafka transactions ok",
    );
}
