//! `shardlog-cli` and other clients see the same broker state: a config change made with the
//! CLI takes effect for kcat without a restart.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shardlog_tests::{cli, run_ok, Broker};

#[test]
fn retention_set_with_the_cli_deletes_segments_kcat_no_longer_sees() {
    let broker = Broker::start_with(&[
        "--set",
        "log.retention.check.interval.ms=200",
        "--set",
        "log.segment.bytes=2048",
    ]);
    let b = broker.bootstrap();
    cli(&["-b", &b, "topic", "create", "shrinking", "-p", "1"]);
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            &b,
            "-P",
            "-t",
            "shrinking",
            "-p",
            "0",
            "-X",
            "linger.ms=0",
            "-X",
            "batch.num.messages=1",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat runs");
    {
        let stdin = kcat.stdin.as_mut().unwrap();
        for i in 0..300 {
            writeln!(stdin, "record-{i:04}-{}", "x".repeat(40)).unwrap();
        }
    }
    assert!(kcat.wait().unwrap().success());
    let first = || {
        run_ok(Command::new("kcat").args([
            "-b",
            &b,
            "-C",
            "-t",
            "shrinking",
            "-p",
            "0",
            "-o",
            "beginning",
            "-c",
            "1",
            "-q",
            "-f",
            "%o",
        ]))
    };
    assert_eq!(first().trim(), "0");
    cli(&[
        "-b",
        &b,
        "topic",
        "alter-config",
        "shrinking",
        "--set",
        "retention.ms=1",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let earliest: i64 = first().trim().parse().unwrap();
        if earliest > 0 {
            // Only whole old segments went; the newest records are still there.
            assert!(earliest < 300, "the active segment is never deleted");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention never deleted a segment; log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let offsets = cli(&["-b", &b, "--json", "offsets", "shrinking"]);
    assert!(
        offsets.contains("\"latest\":300") || offsets.contains("\"latest\": 300"),
        "{offsets}"
    );
}
