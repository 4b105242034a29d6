//! librdkafka (2.12, built by the rdkafka crate) against a real broker: acks=all, lz4 and zstd,
//! idempotence on; everything read back byte-identical and in order.

mod common;

use common::{consume_all, payload, produce};
use shardlog_tests::Broker;

fn roundtrip(compression: &str) {
    let broker = Broker::start_with(&["--set", "num.partitions=4"]);
    let topic = format!("rd-{compression}");
    let n = 20_000;
    produce(&broker.bootstrap(), &topic, compression, n, 4);
    let got = consume_all(&broker.bootstrap(), &topic, 4, n);
    for p in 0..4 {
        let msgs = &got[&p];
        assert_eq!(msgs.len(), n / 4, "partition {p}");
        for (j, (offset, key, value)) in msgs.iter().enumerate() {
            let i = j * 4 + p as usize;
            assert_eq!(*offset, j as i64, "offsets are dense in partition {p}");
            assert_eq!(key, format!("k{i}").as_bytes());
            assert_eq!(
                value,
                &payload(i, 10 + (i * 37) % 900),
                "value of message {i}"
            );
        }
    }
}

#[test]
fn rdkafka_lz4_idempotent_acks_all() {
    roundtrip("lz4");
}

#[test]
fn rdkafka_zstd_idempotent_acks_all() {
    roundtrip("zstd");
}

#[test]
fn rdkafka_gzip_and_snappy_stored_as_sent() {
    roundtrip("gzip");
    roundtrip("snappy");
}
