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

    let out = read_partition0(&broker, "kcat-topic", "%k=%s@%o\n");
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

/// Drops `dir`'s `.log` files from the page cache (they are clean after fsync, so the kernel
/// really evicts them).
fn evict_segments(dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "log") {
            let f = std::fs::File::open(&path).unwrap();
            f.sync_all().unwrap();
            // SAFETY: advice on a descriptor this function owns.
            let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(r, 0, "fadvise {}", path.display());
        }
    }
}

/// A consumer far behind reads data that is no longer in the page cache: the broker reads it
/// through io_uring (metrics path "disk") instead of a sendfile that would block its shard, and
/// kcat gets every record intact.
#[test]
fn kcat_reads_records_evicted_from_the_page_cache() {
    let broker = Broker::start();
    let mut child = kcat(&broker)
        .args(["-P", "-t", "cold", "-p", "0", "-z", "none"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat runs");
    let value = |i: usize| format!("{i:06} {}", "v".repeat(900 + i % 100));
    {
        let stdin = child.stdin.as_mut().expect("stdin");
        for i in 0..8000 {
            writeln!(stdin, "{}", value(i)).unwrap();
        }
    }
    assert!(child.wait().unwrap().success(), "{}", broker.log());
    evict_segments(&broker.data_dir.join("cold-0"));
    let out = read_partition0(&broker, "cold", "%s\n");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8000);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, value(i));
    }
    let (_, text) = broker.http_get("/metrics").unwrap();
    let disk: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("shardlog_fetch_bytes_total{path=\"disk\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no disk path in\n{text}"));
    // At least the first piece was cold; the kernel's readahead behind that read usually
    // brings in what follows, which then goes out with sendfile again.
    assert!(
        disk >= 100_000.0,
        "cold bytes read through the ring: {disk}"
    );
}

/// kcat's output for partition 0 of `topic` from the beginning to its end, one `format` per
/// record.
fn read_partition0(broker: &Broker, topic: &str, format: &str) -> String {
    run_ok(kcat(broker).args([
        "-C",
        "-t",
        topic,
        "-p",
        "0",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        format,
    ]))
}
