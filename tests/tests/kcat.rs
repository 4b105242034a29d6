//! Debian's kcat (librdkafka 2.0) against a real broker: metadata, produce, consume.

use std::io::Write;
use std::process::{Command, Stdio};

use shardlog_tests::{run_ok, Broker};

fn kcat(broker: &Broker) -> Command {
    let mut c = Command::new("kcat");
    c.arg("-b").arg(broker.bootstrap());
    c
}

#[test]
fn kcat_metadata_produce_consume() {
    let broker = Broker::start_with(&["--set", "num.partitions=3"]);
    // Producing auto-creates the topic.
    let mut child = kcat(&broker)
        .args(["-P", "-t", "kcat-topic", "-K:", "-p", "0"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat runs");
    {
        let stdin = child.stdin.as_mut().expect("stdin");
        for i in 0..500 {
            writeln!(stdin, "key{i}:value {i} {}", "x".repeat(i % 50)).unwrap();
        }
    }
    assert!(
        child.wait().unwrap().success(),
        "kcat -P failed; broker log:\n{}",
        broker.log()
    );

    let meta = run_ok(kcat(&broker).args(["-L", "-t", "kcat-topic"]));
    assert!(
        meta.contains("topic \"kcat-topic\" with 3 partitions"),
        "{meta}"
    );
    assert!(
        meta.contains("partition 0, leader 0, replicas: 0, isrs: 0"),
        "{meta}"
    );

    let out = run_ok(kcat(&broker).args([
        "-C",
        "-t",
        "kcat-topic",
        "-p",
        "0",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%k=%s@%o\n",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 500, "{out}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            *line,
            format!("key{i}=value {i} {}@{i}", "x".repeat(i % 50))
        );
    }
    // Offsets from the end and a precise offset.
    let tail = run_ok(kcat(&broker).args([
        "-C",
        "-t",
        "kcat-topic",
        "-p",
        "0",
        "-o",
        "-2",
        "-e",
        "-q",
        "-f",
        "%o\n",
    ]));
    assert_eq!(tail.trim(), "498\n499");
    let mid = run_ok(kcat(&broker).args([
        "-C",
        "-t",
        "kcat-topic",
        "-p",
        "0",
        "-o",
        "250",
        "-c",
        "1",
        "-q",
        "-f",
        "%k\n",
    ]));
    assert_eq!(mid.trim(), "key250");
}
