//! What opening a partition with many closed segments costs in memory and time: a measurement,
//! not a check (ignored by default). It uses only `PartitionLog`'s long-standing API, so the
//! same file runs against older code for a before/after comparison.
//!
//! `cargo test --release -p shardlog-storage --test index_memory -- --ignored --nocapture`
//! `SHARDLOG_INDEX_MEM_MIB` (default 2048) sets the log size, `SHARDLOG_INDEX_MEM_SEGMENT_MIB`
//! (default 16) the segment size. The log goes to a temporary directory (tmpfs when there is
//! one). Batches are 1 KiB (10 records of 80 bytes) with growing timestamps, so the offset
//! and time indexes get an entry about every 5 KiB of log (`index.interval.bytes` 4096).

mod common;

use std::time::Instant;

use common::*;
use shardlog_protocol::batch::{assign_offset, build_simple_batch};
use shardlog_storage::{batch_metas, LogConfig, PartitionLog};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's resident set, KiB, after giving freed heap back to the kernel.
fn rss_kib() -> u64 {
    // SAFETY: malloc_trim only releases free memory of the allocator; always safe to call.
    unsafe {
        libc::malloc_trim(0);
    }
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

fn mib(kib: i64) -> f64 {
    kib as f64 / 1024.0
}

/// Reads at a few offsets of every segment and a few ListOffsets by timestamp: the lookups a
/// broker serving old data makes.
async fn lookups(log: &PartitionLog, leo: i64, ts0: i64) -> usize {
    let mut n = 0;
    for i in 0..2_000i64 {
        let offset = leo / 2_000 * i + 7;
        let slice = log.read(offset, 1 << 20, leo).await.expect("read");
        assert!(!slice.is_empty());
        n += 1;
    }
    for i in 0..200i64 {
        let ts = ts0 + leo / 10 / 200 * i;
        assert!(log.offset_for_timestamp(ts).await.expect("ts").is_some());
        n += 1;
    }
    n
}

#[test]
#[ignore]
fn index_memory_and_open_time_of_a_log_with_many_segments() {
    run(|| async {
        let total = env_u64("SHARDLOG_INDEX_MEM_MIB", 2048) << 20;
        let segment = env_u64("SHARDLOG_INDEX_MEM_SEGMENT_MIB", 16) << 20;
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = LogConfig {
            segment_bytes: segment,
            index_interval_bytes: 4096,
            segment_ms: u64::MAX / 2,
            retention_ms: -1,
            retention_bytes: -1,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        let value = [b'v'; 80];
        let records: Vec<Record> = (0..10).map(|_| (None, Some(&value[..]))).collect();
        let ts0 = 1_700_000_000_000i64;
        let (mut written, mut offset) = (0u64, 0i64);
        while written < total {
            // About 1 MiB per append, 1 KiB batches.
            let mut buf = Vec::with_capacity(1 << 20);
            for _ in 0..1_000 {
                let mut b = build_simple_batch(0, ts0 + offset / 10, &records);
                assign_offset(&mut b, offset, 0);
                offset += 10;
                buf.extend_from_slice(&b);
            }
            written += buf.len() as u64;
            let metas = batch_metas(&buf).unwrap();
            log.append(buf, &metas).await.unwrap();
        }
        let segments = log.segments().len();
        log.close().await.unwrap();
        let index_bytes: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".index") || name.ends_with(".timeindex")
            })
            .map(|e| e.metadata().unwrap().len())
            .sum();
        println!(
            "log: {:.0} MiB in {segments} segments of {} MiB, {:.1} MiB of index files",
            written as f64 / 1048576.0,
            segment >> 20,
            index_bytes as f64 / 1048576.0
        );

        for clean in [true, false] {
            let before = rss_kib() as i64;
            let t = Instant::now();
            let log = PartitionLog::open(dir.clone(), cfg, clean).await.unwrap();
            let open_ms = t.elapsed().as_secs_f64() * 1e3;
            let opened = rss_kib() as i64;
            // The same lookups twice: the first pass reads index pages, the second finds
            // them in the page cache of the shard (where there is one).
            let mut us = [0.0; 2];
            let mut n = 0;
            for pass in &mut us {
                let t = Instant::now();
                n = lookups(&log, log.log_end_offset(), ts0).await;
                *pass = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            }
            let used = rss_kib() as i64;
            println!(
                "open(clean_shutdown={clean}): {open_ms:.0} ms; RSS +{:.1} MiB after open \
                 (+{:.2} MiB per GiB of log), +{:.1} MiB after 2 x {n} lookups ({:.0} us \
                 each the first time, {:.0} us the second)",
                mib(opened - before),
                mib(opened - before) / (written as f64 / (1u64 << 30) as f64),
                mib(used - before),
                us[0],
                us[1],
            );
            if clean {
                log.close().await.unwrap();
            } else {
                drop(log);
            }
        }
    });
}
