//! Consumer groups with real clients: librdkafka members (range, roundrobin, cooperative-sticky),
//! kcat -G, and shardlog-cli as a member that gets killed.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{payload, produce_with};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::ClientContext;
use shardlog_tests::{cli, run_ok, workspace_root, Broker};

const GROUP_SETTINGS: &[&str] = &[
    "--set",
    "num.partitions=6",
    "--set",
    "group.initial.rebalance.delay.ms=0",
    "--set",
    "group.min.session.timeout.ms=1000",
];

/// Records revocations so a test can see what a rebalance moved.
#[derive(Default)]
struct Tracker {
    revoked: Mutex<Vec<(String, i32)>>,
}

impl ClientContext for Tracker {}

impl ConsumerContext for Tracker {
    fn pre_rebalance(&self, _c: &BaseConsumer<Tracker>, rebalance: &Rebalance) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut r = self.revoked.lock().unwrap();
            for e in tpl.elements() {
                r.push((e.topic().to_string(), e.partition()));
            }
        }
    }
}

fn member(bootstrap: &str, group: &str, strategy: &str) -> BaseConsumer<Tracker> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("partition.assignment.strategy", strategy)
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "300")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create_with_context(Tracker::default())
        .expect("consumer")
}

/// Polls once; transport errors (a broker restarting) are transient and skipped, anything else
/// fails the test.
fn poll_msg(
    c: &BaseConsumer<Tracker>,
    wait: Duration,
) -> Option<rdkafka::message::BorrowedMessage<'_>> {
    match c.poll(wait)? {
        Ok(m) => Some(m),
        Err(rdkafka::error::KafkaError::MessageConsumption(
            rdkafka::types::RDKafkaErrorCode::AllBrokersDown
            | rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
        )) => None,
        Err(e) => panic!("consume error: {e}"),
    }
}

fn assigned(c: &BaseConsumer<Tracker>) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

fn disjoint_cover(a: &[BTreeSet<i32>], partitions: i32) -> bool {
    let total: usize = a.iter().map(|s| s.len()).sum();
    let union: BTreeSet<i32> = a.iter().flatten().copied().collect();
    a.iter().all(|s| !s.is_empty())
        && total == partitions as usize
        && union.len() == partitions as usize
}

#[test]
fn three_members_split_partitions_and_consume_exactly_once_across_a_leave() {
    let broker = Broker::start_with(GROUP_SETTINGS);
    cli(&[
        "-b",
        &broker.bootstrap(),
        "topic",
        "create",
        "g-topic",
        "-p",
        "6",
    ]);
    let n = 1200;
    let seen: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let current: Arc<Mutex<Vec<BTreeSet<i32>>>> = Arc::new(Mutex::new(vec![BTreeSet::new(); 3]));
    let done = Arc::new(AtomicBool::new(false));
    let left_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let started = Instant::now();
    let mut threads = Vec::new();
    for idx in 0..3 {
        let left_at = left_at.clone();
        let (bootstrap, seen, done, current) = (
            broker.bootstrap(),
            seen.clone(),
            done.clone(),
            current.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let c = member(&bootstrap, "three", "range");
            c.subscribe(&["g-topic"]).unwrap();
            let mut mine = 0;
            while !done.load(Ordering::SeqCst) {
                current.lock().unwrap()[idx] = assigned(&c);
                // Member 2 leaves (closes) after 100 messages; the others take its partitions.
                if idx == 2 && mine >= 100 {
                    current.lock().unwrap()[idx].clear();
                    drop(c);
                    *left_at.lock().unwrap() = Some(Instant::now());
                    break;
                }
                if let Some(m) = poll_msg(&c, Duration::from_millis(50)) {
                    c.commit_message(&m, CommitMode::Sync).expect("commit");
                    let mut s = seen.lock().unwrap();
                    s.push((m.partition(), m.offset()));
                    mine += 1;
                    if s.len() >= n {
                        done.store(true, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    // Every partition assigned to exactly one member once the group is stable.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = current.lock().unwrap().clone();
        if disjoint_cover(&a, 6) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the three members never split the partitions: {a:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "3 members joined and split 6 partitions in {:?}",
        started.elapsed()
    );
    produce_with(
        &broker.bootstrap(),
        "g-topic",
        &[("acks", "all")],
        n,
        6,
        |i| payload(i, 64),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut rebalanced = false;
    while !done.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} consumed",
            seen.lock().unwrap().len()
        );
        let left = *left_at.lock().unwrap();
        if let (Some(t), false) = (left, rebalanced) {
            let a = current.lock().unwrap().clone();
            if disjoint_cover(&a[..2], 6) {
                eprintln!(
                    "after a member left, the other two covered all partitions in {:?}",
                    t.elapsed()
                );
                rebalanced = true;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for t in threads {
        t.join().unwrap();
    }
    // Exactly once across the rebalance.
    let seen = seen.lock().unwrap();
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in seen.iter() {
        by_partition.entry(*p).or_default().push(*o);
    }
    assert_eq!(by_partition.len(), 6);
    for (p, offsets) in &mut by_partition {
        offsets.sort();
        let expected: Vec<i64> = (0..(n / 6) as i64).collect();
        assert_eq!(
            offsets, &expected,
            "partition {p}: every offset exactly once"
        );
    }
    assert_eq!(seen.len(), n);
}

#[test]
fn two_groups_each_get_every_message() {
    let broker = Broker::start_with(GROUP_SETTINGS);
    let n = 600;
    produce_with(
        &broker.bootstrap(),
        "fanout",
        &[("acks", "all")],
        n,
        6,
        |i| payload(i, 32),
    );
    for group in ["ga", "gb"] {
        let c = member(&broker.bootstrap(), group, "roundrobin");
        c.subscribe(&["fanout"]).unwrap();
        let mut got = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < n {
            assert!(Instant::now() < deadline, "{group}: {} of {n}", got.len());
            if let Some(m) = poll_msg(&c, Duration::from_millis(100)) {
                got.insert((m.partition(), m.offset()));
            }
        }
        c.commit_consumer_state(CommitMode::Sync).unwrap();
    }
    // The CLI lists both groups.
    let out = cli(&["-b", &broker.bootstrap(), "group", "list"]);
    assert!(out.contains("ga") && out.contains("gb"), "{out}");
}

#[test]
fn committed_offsets_survive_broker_kill_9() {
    let mut broker = Broker::start_with(GROUP_SETTINGS);
    let n = 600;
    produce_with(
        &broker.bootstrap(),
        "durable",
        &[("acks", "all")],
        n,
        6,
        |i| payload(i, 32),
    );
    let mut committed: HashMap<i32, i64> = HashMap::new();
    {
        let c = member(&broker.bootstrap(), "keeper", "range");
        c.subscribe(&["durable"]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut count = 0;
        while count < n / 2 {
            assert!(Instant::now() < deadline);
            if let Some(m) = poll_msg(&c, Duration::from_millis(100)) {
                c.commit_message(&m, CommitMode::Sync).expect("commit");
                committed.insert(m.partition(), m.offset() + 1);
                count += 1;
            }
        }
    }
    broker.kill9();
    broker.restart();
    let c = member(&broker.bootstrap(), "keeper", "range");
    c.subscribe(&["durable"]).unwrap();
    let mut first: HashMap<i32, i64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut count = 0;
    while count < n - n / 2 {
        assert!(Instant::now() < deadline, "resumed {count}");
        if let Some(m) = poll_msg(&c, Duration::from_millis(100)) {
            first.entry(m.partition()).or_insert(m.offset());
            count += 1;
        }
    }
    for (p, off) in &first {
        assert_eq!(
            Some(off),
            committed.get(p).or(Some(&0)),
            "partition {p} resumed at its committed offset"
        );
    }
}

#[test]
fn cooperative_sticky_moves_only_what_the_new_member_takes() {
    let broker = Broker::start_with(GROUP_SETTINGS);
    produce_with(
        &broker.bootstrap(),
        "sticky",
        &[("acks", "1")],
        60,
        6,
        |i| payload(i, 16),
    );
    let a = member(&broker.bootstrap(), "coop", "cooperative-sticky");
    let b = member(&broker.bootstrap(), "coop", "cooperative-sticky");
    a.subscribe(&["sticky"]).unwrap();
    b.subscribe(&["sticky"]).unwrap();
    // Drain messages while waiting, so polls do not stop early.
    let drain = |cs: &[&BaseConsumer<Tracker>],
                 within: Duration,
                 cond: &dyn Fn(&[BTreeSet<i32>]) -> bool| {
        let deadline = Instant::now() + within;
        loop {
            for c in cs {
                let _ = c.poll(Duration::from_millis(20));
            }
            let s: Vec<_> = cs.iter().map(|c| assigned(c)).collect();
            if cond(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "never settled: {s:?}");
        }
    };
    let before = drain(&[&a, &b], Duration::from_secs(30), &|s| {
        disjoint_cover(s, 6)
    });
    let revoked_before =
        a.context().revoked.lock().unwrap().len() + b.context().revoked.lock().unwrap().len();
    let c = member(&broker.bootstrap(), "coop", "cooperative-sticky");
    c.subscribe(&["sticky"]).unwrap();
    let after = drain(&[&a, &b, &c], Duration::from_secs(30), &|s| {
        disjoint_cover(s, 6)
    });
    let revoked = a.context().revoked.lock().unwrap().len()
        + b.context().revoked.lock().unwrap().len()
        - revoked_before;
    assert_eq!(
        revoked,
        after[2].len(),
        "only the partitions the new member took were revoked"
    );
    assert!(
        before[0].is_superset(&after[0]) && before[1].is_superset(&after[1]),
        "{before:?} -> {after:?}"
    );
}

#[test]
fn kcat_consumes_as_a_group_member_and_a_killed_cli_member_is_replaced() {
    let broker = Broker::start_with(GROUP_SETTINGS);
    produce_with(&broker.bootstrap(), "kg", &[("acks", "all")], 300, 6, |i| {
        payload(i, 16)
    });
    // kcat -G: a balanced consumer; it reads all 300 and exits at the end (-e).
    let out = run_ok(Command::new("kcat").args([
        "-b",
        &broker.bootstrap(),
        "-G",
        "kgroup",
        "-X",
        "auto.offset.reset=earliest",
        "-e",
        "-q",
        "-f",
        "%p %o\n",
        "kg",
    ]));
    assert_eq!(out.lines().count(), 300, "{out}");

    // A shardlog-cli member that is killed: its partitions go to the survivor within the
    // session timeout.
    cli(&["--version"]);
    let mut victim = Command::new(workspace_root().join("target/debug/shardlog-cli"))
        .args([
            "-b",
            &broker.bootstrap(),
            "consume",
            "kg",
            "-g",
            "shared",
            "-F",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let survivor = member(&broker.bootstrap(), "shared", "range");
    survivor.subscribe(&["kg"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = survivor.poll(Duration::from_millis(50));
        let a = assigned(&survivor);
        if !a.is_empty() && a.len() < 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the two members never shared the partitions: {a:?}"
        );
    }
    let _ = victim.kill();
    let _ = victim.wait();
    let killed_at = Instant::now();
    loop {
        let _ = survivor.poll(Duration::from_millis(50));
        if assigned(&survivor).len() == 6 {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "partitions not reassigned after the kill"
        );
    }
    eprintln!(
        "reassigned {:?} after the member was killed",
        killed_at.elapsed()
    );
}
