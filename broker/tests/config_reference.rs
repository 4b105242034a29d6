//! The configuration reference and Kafka compatibility, checked from outside the crate:
//! docs/configuration.md is the rendering of the code's tables, the documented defaults are the
//! defaults in force, and Kafka's stock ZooKeeper-mode server.properties is accepted once
//! `log.dirs` and `zookeeper.connect` are set.

use std::path::{Path, PathBuf};

use shardlog_broker::config::{
    reference_markdown, BrokerConfig, TopicConfig, BROKER_SETTINGS, TOPIC_SETTINGS,
};

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

#[test]
fn docs_configuration_md_is_current() {
    let path = repo_file("docs/configuration.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = reference_markdown();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "one is a prefix of the other".to_string(),
                |i| format!("first difference at line {}", i + 1),
            );
        panic!(
            "{} is stale ({first_difference}). Regenerate it with\n    \
             cargo run -p shardlog-broker --bin shardlog -- --print-config-reference > docs/configuration.md",
            path.display()
        );
    }
}

#[test]
fn documented_defaults_are_the_defaults_in_force() {
    let broker = BrokerConfig::default();
    for s in BROKER_SETTINGS {
        assert_eq!(broker.get(s.name).as_deref(), Some(s.default), "{}", s.name);
    }
    let topic = TopicConfig::default();
    for s in TOPIC_SETTINGS {
        assert_eq!(topic.get(s.name).as_deref(), Some(s.default), "{}", s.name);
        // A topic's default comes from the broker's settings, whose default is the same.
        assert_eq!(
            broker.topic_defaults.get(s.name).as_deref(),
            Some(s.default),
            "{}",
            s.name
        );
    }
}

#[test]
fn every_documented_setting_is_in_the_document() {
    let md = reference_markdown();
    for s in BROKER_SETTINGS.iter().chain(TOPIC_SETTINGS) {
        assert!(md.contains(&format!("| `{}` |", s.name)), "{}", s.name);
    }
    let unused = &md[md
        .find("## Kafka settings Shardlog does not use")
        .expect("section")..];
    for k in [
        "num.network.threads",
        "ssl.keystore.location",
        "log.cleaner.io.max.bytes.per.second",
    ] {
        assert!(unused.contains(&format!("`{k}`")), "{k}");
    }
    // A key Shardlog uses is not listed as unused.
    for k in ["log.retention.hours", "log.cleaner.enable"] {
        assert!(!unused.contains(&format!("`{k}`")), "{k}");
    }
}

/// Kafka 3.x's stock config/server.properties, with `log.dirs` and `zookeeper.connect` set the
/// way an operator would, loads, and the settings in force are the file's.
#[test]
fn kafka_stock_server_properties_is_accepted() {
    let stock = std::fs::read_to_string(repo_file("tests/fixtures/kafka-server.properties"))
        .expect("fixture");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let edited: String = stock
        .lines()
        .map(|line| {
            if line.starts_with("log.dirs=") {
                format!("log.dirs={}", data.display())
            } else if line.starts_with("zookeeper.connect=") {
                "zookeeper.connect=zk1:2181,zk2:2181/shardlog".to_string()
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(
        edited, stock,
        "the fixture has log.dirs and zookeeper.connect lines"
    );
    let path = dir.path().join("server.properties");
    std::fs::write(&path, &edited).unwrap();

    let mut c = BrokerConfig::default();
    c.load_properties(&path)
        .expect("Kafka's stock file is accepted");
    c.finalize_with(|| Some("this-host".into())).unwrap();
    assert_eq!(c.data_dir, data);
    assert_eq!(
        c.zookeeper_connect.as_deref(),
        Some("zk1:2181,zk2:2181/shardlog")
    );
    assert_eq!(c.broker_id, 0);
    assert_eq!(c.num_partitions, 1);
    assert_eq!(c.offsets_topic_replication_factor, 1);
    assert_eq!(c.group_initial_rebalance_delay_ms, 0);
    assert_eq!(c.topic_defaults.retention_ms, 168 * 3_600_000);
    assert_eq!(c.retention_check_interval_ms, 300_000);
    assert_eq!(c.request_bytes_max, 104_857_600);
    assert_eq!(
        c.ignored_kafka_keys,
        [
            "num.io.threads",
            "num.network.threads",
            "num.recovery.threads.per.data.dir",
            "socket.receive.buffer.bytes",
            "socket.send.buffer.bytes",
            "zookeeper.connection.timeout.ms",
        ]
    );
    // The stock file's transaction state settings are used now (a single-broker setup).
    assert_eq!(c.transaction_state_log_replication_factor, 1);
    assert_eq!(c.transaction_state_log_min_isr, 1);
    assert!(c
        .ignored_keys_warning()
        .unwrap()
        .starts_with("accepted but not used by Shardlog: num.io.threads, num.network.threads"));

    // Uncommenting the stock file's listener line listens everywhere and advertises the host
    // name instead of the wildcard address.
    std::fs::write(
        &path,
        edited.replace(
            "#listeners=PLAINTEXT://:9092",
            "listeners=PLAINTEXT://:9092",
        ),
    )
    .unwrap();
    let mut c = BrokerConfig::default();
    c.load_properties(&path).unwrap();
    c.finalize_with(|| Some("this-host".into())).unwrap();
    assert_eq!(c.listen, "0.0.0.0:9092".parse().unwrap());
    assert_eq!(
        c.get("advertised.listeners").unwrap(),
        "PLAINTEXT://this-host:9092"
    );
}
