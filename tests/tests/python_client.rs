//! kafka-python, an independent client implementation, against a real broker.

use std::process::Command;

use shardlog_tests::{run_ok, workspace_root, Broker};

#[test]
fn kafka_python_roundtrip() {
    let broker = Broker::start();
    let script = workspace_root().join("tests/python/kafka_python_roundtrip.py");
    let python = std::env::var("SHARDLOG_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = run_ok(Command::new(python).arg(script).arg(broker.bootstrap()));
    assert!(
        out.contains("kafka-python roundtrip ok"),
        "{out}\nbroker log:\n{}",
        broker.log()
    );
}

/// aiokafka (asyncio, its own protocol code): produce, a two-member consumer group, commits.
#[test]
fn aiokafka_roundtrip_with_a_consumer_group() {
    let broker = Broker::start_with(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let script = workspace_root().join("tests/python/aiokafka_roundtrip.py");
    let python = std::env::var("SHARDLOG_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = run_ok(Command::new(python).arg(script).arg(broker.bootstrap()));
    assert!(
        out.contains("aiokafka roundtrip ok"),
        "{out}\nbroker log:\n{}",
        broker.log()
    );
}
