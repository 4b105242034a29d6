//! Behaviour of `PartitionLog` operations on small, hand-made logs.

mod common;

use std::os::unix::fs::FileExt;
use std::rc::Rc;

use common::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use shardlog_protocol::batch::{self, assign_offset, build_simple_batch};
use shardlog_storage::index::{
    decode_offset_index, decode_time_index, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN,
};
use shardlog_storage::{
    batch_metas, segment_file_name, BatchMeta, LogConfig, PartitionLog, ReadSlice, StorageError,
};

/// A batch of `n` records of `value_len` bytes at `base` with timestamp `ts`.
fn batch_of(base: i64, ts: i64, n: usize, value_len: usize) -> ModelBatch {
    let value = vec![b'x'; value_len];
    let records: Vec<Record> = (0..n).map(|_| (None, Some(value.as_slice()))).collect();
    let mut bytes = build_simple_batch(0, ts, &records);
    assign_offset(&mut bytes, base, 0);
    ModelBatch {
        base,
        last: base + n as i64 - 1,
        max_ts: ts,
        bytes,
    }
}

/// Appends `count` batches of `n` records, one per append; returns them.
async fn fill(
    log: &PartitionLog,
    count: usize,
    n: usize,
    value_len: usize,
    ts0: i64,
) -> Vec<ModelBatch> {
    let mut out = Vec::new();
    for i in 0..count {
        let b = batch_of(log.log_end_offset(), ts0 + i as i64, n, value_len);
        append(log, std::slice::from_ref(&b)).await.unwrap();
        out.push(b);
    }
    out
}

fn slice_batches(bytes: &[u8]) -> Vec<(i64, i64)> {
    batch::split_batches(bytes, usize::MAX)
        .unwrap()
        .iter()
        .map(|(_, h)| (h.base_offset, h.last_offset()))
        .collect()
}

#[test]
fn read_limits_kip74_high_watermark_and_segment_end() {
    run(|| async {
        let tmp = tempdir();
        let log = PartitionLog::open(tmp.path().join("t-0"), tiny_config(1 << 20, 100), true)
            .await
            .unwrap();
        // 10 batches of 3 records; each batch is a bit over 100 bytes.
        let batches = fill(&log, 10, 3, 20, 1_000).await;
        let len = batches[0].bytes.len();
        assert_eq!(log.log_end_offset(), 30);

        // From inside batch 1 (offset 4): the whole of batch 1 first.
        let r = log.read(4, 2 * len, 30).await.unwrap();
        let ReadSlice::File(fs) = &r else { panic!() };
        assert_eq!(
            (fs.first_batch_offset, fs.position, fs.len),
            (3, len as u64, 2 * len as u64)
        );
        assert_eq!(
            slice_batches(&log.read_bytes(&r).await.unwrap()),
            vec![(3, 5), (6, 8)]
        );
        // KIP-74: max_bytes smaller than the first batch still returns it.
        let r = log.read(0, 1, 30).await.unwrap();
        assert_eq!(r.len(), len as u64);
        // The high watermark cuts at whole batches; a batch straddling it is not returned.
        let r = log.read(0, 1 << 20, 7).await.unwrap();
        assert_eq!(
            slice_batches(&log.read_bytes(&r).await.unwrap()),
            vec![(0, 2), (3, 5)]
        );
        assert!(log.read(6, 1 << 20, 7).await.unwrap().is_empty());
        assert!(log.read(30, 1 << 20, 30).await.unwrap().is_empty());
        assert!(log.read(29, 1 << 20, 29).await.unwrap().is_empty());
        assert!(matches!(
            log.read(31, 1, 40).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));

        // A read never crosses a segment; at a segment's end it continues in the next one.
        log.roll().await.unwrap();
        let more = fill(&log, 2, 3, 20, 2_000).await;
        let r = log.read(27, 1 << 20, 36).await.unwrap();
        assert_eq!(
            slice_batches(&log.read_bytes(&r).await.unwrap()),
            vec![(27, 29)]
        );
        let r = log.read(30, 1 << 20, 36).await.unwrap();
        let ReadSlice::File(fs) = &r else { panic!() };
        assert_eq!(
            (fs.segment_base_offset, fs.position, fs.last_offset),
            (30, 0, 35)
        );
        assert_eq!(
            log.read_bytes(&r).await.unwrap(),
            [more[0].bytes.clone(), more[1].bytes.clone()].concat()
        );
        log.close().await.unwrap();
    });
}

#[test]
fn reads_running_during_appends_see_whole_batches_only() {
    run(|| async {
        let tmp = tempdir();
        let log = Rc::new(
            PartitionLog::open(tmp.path().join("t-0"), tiny_config(20_000, 300), true)
                .await
                .unwrap(),
        );
        let reader = {
            let log = log.clone();
            shardlog_runtime::spawn_background(async move {
                let mut reads = 0;
                let mut last_leo = 0;
                while last_leo < 2_000 {
                    let leo = log.log_end_offset();
                    assert!(leo >= last_leo);
                    last_leo = leo;
                    let from = leo / 2;
                    if let ReadSlice::File(fs) = log.read(from, 4_096, leo).await.unwrap() {
                        let bytes = log.read_bytes(&ReadSlice::File(fs.clone())).await.unwrap();
                        let parsed =
                            batch::split_batches(&bytes, usize::MAX).expect("whole, valid batches");
                        assert!(
                            parsed[0].1.base_offset <= from && parsed[0].1.last_offset() >= from
                        );
                        assert_eq!(parsed.last().unwrap().1.last_offset(), fs.last_offset);
                        reads += 1;
                    }
                    shardlog_runtime::yield_if_needed().await;
                    shardlog_runtime::sleep(std::time::Duration::from_micros(50)).await;
                }
                reads
            })
        };
        let mut rng = StdRng::seed_from_u64(3);
        while log.log_end_offset() < 2_000 {
            let b = random_batch(&mut rng, log.log_end_offset(), 1_000, 8, 200);
            append(&log, std::slice::from_ref(&b)).await.unwrap();
        }
        let reads = reader.await;
        assert!(reads > 10, "only {reads} concurrent reads");
        assert!(log.segments().len() > 5);
    });
}

#[test]
fn index_files_have_kafkas_shape_and_rebuild_identically() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = tiny_config(1 << 20, 4096);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        let mut batches = Vec::new();
        for i in 0..300 {
            let b = random_batch(
                &mut rng,
                log.log_end_offset(),
                1_000 + i * 3 - (i % 4) * 5,
                10,
                300,
            );
            append(&log, std::slice::from_ref(&b)).await.unwrap();
            batches.push(b);
        }
        log.close().await.unwrap();
        let index = std::fs::read(dir.join(segment_file_name(0, "index"))).unwrap();
        let time = std::fs::read(dir.join(segment_file_name(0, "timeindex"))).unwrap();
        let log_bytes = std::fs::read(dir.join(segment_file_name(0, "log"))).unwrap();
        assert_eq!(index.len() % OFFSET_ENTRY_LEN, 0);
        assert_eq!(time.len() % TIME_ENTRY_LEN, 0);
        let entries = decode_offset_index(&index, log_bytes.len() as u64);
        assert_eq!(
            entries.len() * OFFSET_ENTRY_LEN,
            index.len(),
            "every entry valid"
        );
        // One entry after each run of more than 4 KiB of log (Kafka's rule), each at the start of
        // the batch it names.
        let biggest = batches.iter().map(|b| b.bytes.len()).max().unwrap();
        let (most, least) = (log_bytes.len() / 4097, log_bytes.len() / (4097 + biggest));
        assert!(
            (least..=most).contains(&entries.len()),
            "{} entries, not in {least}..={most}",
            entries.len()
        );
        for e in &entries {
            let h = batch::BatchHeader::parse(&log_bytes[e.position as usize..]).unwrap();
            assert_eq!(h.base_offset, i64::from(e.relative_offset));
        }
        let times = decode_time_index(&time);
        assert_eq!(times.len() * TIME_ENTRY_LEN, time.len());
        let max = batches.iter().map(|b| b.max_ts).max().unwrap();
        assert_eq!(
            times.last().unwrap().timestamp,
            max,
            "the final entry holds the segment maximum"
        );
        for t in &times {
            let b = batches
                .iter()
                .find(|b| b.base == i64::from(t.relative_offset))
                .unwrap();
            assert_eq!(b.max_ts, t.timestamp);
            assert!(batches
                .iter()
                .take_while(|x| x.base < b.base)
                .all(|x| x.max_ts < t.timestamp));
        }
        // Recovery rebuilds exactly the same files.
        std::fs::remove_file(dir.join(segment_file_name(0, "index"))).unwrap();
        std::fs::remove_file(dir.join(segment_file_name(0, "timeindex"))).unwrap();
        let log = PartitionLog::open(dir.clone(), cfg, false).await.unwrap();
        log.close().await.unwrap();
        assert_eq!(
            std::fs::read(dir.join(segment_file_name(0, "index"))).unwrap(),
            index
        );
        assert_eq!(
            std::fs::read(dir.join(segment_file_name(0, "timeindex"))).unwrap(),
            time
        );
    });
}

#[test]
fn a_plausible_but_wrong_index_entry_is_not_trusted_by_reads() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = tiny_config(1 << 20, 200);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        let batches = fill(&log, 40, 2, 60, 1_000).await;
        log.close().await.unwrap();
        // Shift every entry's position by one byte but keep them increasing: the entries stay
        // plausible, only reading the log shows they are wrong. The last entry is left intact
        // so the open-time tail check passes and the file is trusted.
        let path = dir.join(segment_file_name(0, "index"));
        let mut index = std::fs::read(&path).unwrap();
        let n = index.len() / 8;
        assert!(n > 4);
        for i in 0..n - 1 {
            let p = u32::from_be_bytes(index[i * 8 + 4..i * 8 + 8].try_into().unwrap()) + 1;
            index[i * 8 + 4..i * 8 + 8].copy_from_slice(&p.to_be_bytes());
        }
        std::fs::write(&path, &index).unwrap();
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        let bases = vec![0];
        for b in &batches {
            check_read(&log, &batches, &bases, b.base, 500, 80).await;
            check_read(&log, &batches, &bases, b.last, 1 << 20, 80).await;
        }
        assert_eq!(
            log.offset_for_timestamp(1_020).await.unwrap(),
            Some((40, 1_020))
        );
    });
}

#[test]
fn retention_by_time_and_size_deletes_whole_old_segments() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = tiny_config(1 << 20, 4096);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        // Four segments with timestamps 1000.., 2000.., 3000.., 4000.. (the last is active).
        for s in 0..4 {
            fill(&log, 5, 2, 50, 1_000 * (s + 1)).await;
            if s < 3 {
                log.roll().await.unwrap();
            }
        }
        let seg_size = log.segments()[0].size_bytes;
        assert_eq!(log.segments().len(), 4);
        log.set_config(LogConfig {
            retention_ms: 1_000,
            ..cfg
        })
        .unwrap();
        // Segment 0's largest timestamp is 1004: 2004 is not older than retention.
        assert_eq!(log.enforce_retention(2_004).await.unwrap(), 0);
        assert_eq!(log.enforce_retention(2_005).await.unwrap(), 1);
        assert_eq!(log.log_start_offset(), 10);
        assert!(!dir.join(segment_file_name(0, "log")).exists());
        assert!(matches!(
            log.read(9, 100, 40).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // The active segment is never deleted, however old.
        assert_eq!(log.enforce_retention(1 << 40).await.unwrap(), 2);
        assert_eq!(log.segments().len(), 1);
        assert_eq!(log.log_start_offset(), 30);
        // By size: keep at least retention.bytes.
        for _ in 0..3 {
            log.roll().await.unwrap();
            fill(&log, 5, 2, 50, 9_000).await;
        }
        log.set_config(LogConfig {
            retention_ms: -1,
            retention_bytes: 2 * seg_size as i64,
            ..cfg
        })
        .unwrap();
        assert_eq!(log.enforce_retention(0).await.unwrap(), 2);
        assert_eq!(log.size_bytes(), 2 * seg_size);
        // The log start offset survives a restart.
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (50, 70));
    });
}

#[test]
fn a_file_slice_outlives_its_deleted_segment() {
    run(|| async {
        let tmp = tempdir();
        let log = PartitionLog::open(tmp.path().join("t-0"), tiny_config(1 << 20, 4096), true)
            .await
            .unwrap();
        let batches = fill(&log, 3, 2, 40, 1_000).await;
        let slice = log.read(0, 1 << 20, 6).await.unwrap();
        log.roll().await.unwrap();
        fill(&log, 1, 1, 1, 1_000).await;
        assert_eq!(log.delete_records_before(6).await.unwrap(), 6);
        assert_eq!(log.segments().len(), 1);
        // Through the shard (the segment is gone: the descriptor is read directly)...
        let want: Vec<u8> = batches.iter().flat_map(|b| b.bytes.clone()).collect();
        assert_eq!(log.read_bytes(&slice).await.unwrap(), want);
        // ...and from another thread, as sendfile would.
        let ReadSlice::File(fs) = slice else { panic!() };
        let got = std::thread::spawn(move || {
            let mut buf = vec![0u8; fs.len as usize];
            fs.file.read_exact_at(&mut buf, fs.position).unwrap();
            buf
        })
        .join()
        .unwrap();
        assert_eq!(got, want);
    });
}

#[test]
fn delete_records_before_moves_the_start_and_persists_it() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = tiny_config(1 << 20, 4096);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        fill(&log, 4, 5, 10, 1_000).await;
        log.roll().await.unwrap();
        fill(&log, 4, 5, 10, 2_000).await;
        // Inside a batch of the first segment: nothing deleted yet, reads start at that batch.
        assert_eq!(log.delete_records_before(7).await.unwrap(), 7);
        assert_eq!(log.segments().len(), 2);
        let r = log.read(7, 1, 40).await.unwrap();
        let ReadSlice::File(fs) = r else { panic!() };
        assert_eq!(fs.first_batch_offset, 5);
        assert_eq!(log.offset_for_timestamp(0).await.unwrap(), Some((7, 1_001)));
        assert!(matches!(
            log.read(6, 1, 40).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // Moving backwards is a no-op; past the end is out of range.
        assert_eq!(log.delete_records_before(3).await.unwrap(), 7);
        assert!(log.delete_records_before(41).await.is_err());
        // Past the first segment: it goes.
        assert_eq!(log.delete_records_before(22).await.unwrap(), 22);
        assert_eq!(log.segments()[0].base_offset, 20);
        // Unclean restart keeps it too.
        drop(log);
        let log = PartitionLog::open(dir.clone(), cfg, false).await.unwrap();
        assert_eq!(log.log_start_offset(), 22);
        // Everything: the active segment is rolled so that it can go as well.
        assert_eq!(log.delete_records_before(40).await.unwrap(), 40);
        assert_eq!(log.size_bytes(), 0);
        assert_eq!(log.segments().len(), 1);
        fill(&log, 1, 1, 1, 3_000).await;
        assert_eq!(log.log_end_offset(), 41);
        log.delete().await.unwrap();
        assert!(!dir.exists());
    });
}

#[test]
fn truncate_to_drops_whole_batches() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = tiny_config(300, 50);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        let batches = fill(&log, 12, 3, 30, 1_000).await;
        let segments = log.segments().len();
        assert!(segments > 3);
        // Offset 13 is inside batch [12, 14]: the whole batch goes.
        assert_eq!(log.truncate_to(13).await.unwrap(), 12);
        assert_eq!(log.segments().last().unwrap().next_offset, 12);
        assert!(log.segments().len() < segments);
        let bases: Vec<i64> = log.segments().iter().map(|s| s.base_offset).collect();
        check_read(&log, &batches[..4], &bases, 9, 1 << 20, 12).await;
        assert_eq!(log.offset_for_timestamp(1_004).await.unwrap(), None);
        // Appends continue there; the files agree after an unclean restart.
        let b = batch_of(12, 5_000, 2, 10);
        append(&log, std::slice::from_ref(&b)).await.unwrap();
        drop(log);
        let log = PartitionLog::open(dir.clone(), cfg, false).await.unwrap();
        assert_eq!(log.log_end_offset(), 14);
        assert_eq!(
            log.offset_for_timestamp(1_004).await.unwrap(),
            Some((12, 5_000))
        );
        // Below the log start: the log restarts empty there (Kafka's truncateFullyAndStartAt).
        log.delete_records_before(6).await.unwrap();
        assert_eq!(log.truncate_to(2).await.unwrap(), 2);
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.size_bytes()
            ),
            (2, 2, 0)
        );
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 2));
    });
}

#[test]
fn unclean_open_replays_only_from_the_recovery_point() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = tiny_config(1 << 20, 100);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        let first = fill(&log, 20, 2, 40, 1_000).await;
        assert_eq!(log.recovery_point(), 0);
        log.roll().await.unwrap();
        // The roll makes segment 0 durable in the background; the recovery point moves past
        // it once that sync is done, and is persisted by the next roll (or flush, or close).
        fill(&log, 20, 2, 40, 2_000).await;
        log.roll().await.unwrap();
        assert_eq!(log.recovery_point(), 40);
        drop(log);
        // Damage the middle of both segments. Segment 0 is below the recovery point: only its
        // tail is re-validated, so this is not noticed (as in Kafka); segment 40 is replayed.
        let mid = first[..10].iter().map(|b| b.bytes.len()).sum::<usize>() as u64 + 70;
        for base in [0, 40] {
            let path = dir.join(segment_file_name(base, "log"));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let mut byte = [0u8];
            f.read_exact_at(&mut byte, mid).unwrap();
            f.write_all_at(&[byte[0] ^ 0x55], mid).unwrap();
        }
        let log = PartitionLog::open(dir.clone(), cfg, false).await.unwrap();
        assert_eq!(
            log.log_end_offset(),
            60,
            "segment 40 is cut at its damaged 11th batch"
        );
        assert_eq!(log.segments()[0].next_offset, 40);
        assert_eq!(log.recovery_point(), 60);
    });
}

#[test]
fn flush_policy_and_recovery_point() {
    run(|| async {
        let tmp = tempdir();
        let cfg = LogConfig {
            flush_messages: 5,
            ..tiny_config(1 << 20, 4096)
        };
        let log = PartitionLog::open(tmp.path().join("t-0"), cfg, true)
            .await
            .unwrap();
        fill(&log, 2, 2, 10, 1_000).await;
        assert_eq!(log.recovery_point(), 0);
        fill(&log, 1, 2, 10, 1_000).await;
        assert_eq!(
            log.recovery_point(),
            6,
            "6 unflushed records >= flush.messages"
        );
        let cfg = LogConfig {
            flush_messages: u64::MAX,
            flush_ms: 100,
            ..cfg
        };
        log.set_config(cfg).unwrap();
        fill(&log, 1, 1, 10, 1_000).await;
        assert!(log.maybe_flush(i64::MAX).await.unwrap());
        assert_eq!(log.recovery_point(), 7);
        assert!(
            !log.maybe_flush(i64::MAX).await.unwrap(),
            "nothing left to flush"
        );
        log.flush().await.unwrap();
    });
}

#[test]
fn rolls_by_size_time_and_explicitly() {
    run(|| async {
        let tmp = tempdir();
        let cfg = LogConfig {
            segment_ms: 1_000,
            ..tiny_config(1_000, 4096)
        };
        let log = PartitionLog::open(tmp.path().join("t-0"), cfg, true)
            .await
            .unwrap();
        // An empty active segment never rolls.
        log.roll().await.unwrap();
        assert!(!log.maybe_roll_by_time(i64::MAX).await.unwrap());
        assert_eq!(log.segments().len(), 1);
        let b = fill(&log, 1, 2, 100, 10_000).await;
        let len = b[0].bytes.len() as u64;
        // By record time: a batch 1001 ms after the segment's first one rolls.
        append(&log, &[batch_of(2, 11_000, 1, 10)]).await.unwrap();
        assert_eq!(log.segments().len(), 1);
        append(&log, &[batch_of(3, 11_001, 1, 10)]).await.unwrap();
        assert_eq!(log.segments().len(), 2);
        assert_eq!(log.segments()[1].base_offset, 3);
        // By a timer.
        assert!(!log.maybe_roll_by_time(12_001).await.unwrap());
        assert!(log.maybe_roll_by_time(12_002).await.unwrap());
        // By size: segments stay at or below segment.bytes (unless one append is bigger).
        fill(&log, 30, 2, 100, 12_002).await;
        for s in &log.segments() {
            assert!(s.size_bytes <= 1_000, "{s:?} (batches of {len} bytes)");
        }
        let big = batch_of(log.log_end_offset(), 12_002, 1, 5_000);
        append(&log, std::slice::from_ref(&big)).await.unwrap();
        assert_eq!(
            log.segments().last().unwrap().size_bytes,
            big.bytes.len() as u64
        );
    });
}

#[test]
fn append_contract_violations_are_refused() {
    run(|| async {
        let tmp = tempdir();
        let log = PartitionLog::open(tmp.path().join("t-0"), tiny_config(1 << 20, 4096), true)
            .await
            .unwrap();
        fill(&log, 1, 3, 10, 1_000).await;
        let wrong_offset = batch_of(2, 1_000, 1, 1);
        let metas = batch_metas(&wrong_offset.bytes).unwrap();
        let r = log.append(wrong_offset.bytes.clone(), &metas).await;
        assert!(matches!(r, Err(StorageError::InvalidAppend(_))));
        let ok = batch_of(3, 1_000, 1, 1);
        let lying = [BatchMeta {
            max_timestamp: 5,
            ..batch_metas(&ok.bytes).unwrap()[0]
        }];
        assert!(log.append(ok.bytes.clone(), &lying).await.is_err());
        assert_eq!(log.log_end_offset(), 3);
        assert!(log
            .set_config(LogConfig {
                segment_bytes: 1,
                ..log.config()
            })
            .is_err());
        append(&log, &[ok]).await.unwrap();
        assert_eq!(log.log_end_offset(), 4);
    });
}

#[test]
fn batches_larger_than_the_read_chunks() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = tiny_config(2 << 20, 4096);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        let sizes = [100, 9_000, 20_000, 300_000, 50, 600_000, 8_200, 70];
        let mut batches = Vec::new();
        for i in 0..24 {
            let b = batch_of(
                log.log_end_offset(),
                1_000 + i as i64,
                1 + i % 3,
                sizes[i % sizes.len()],
            );
            append(&log, std::slice::from_ref(&b)).await.unwrap();
            batches.push(b);
        }
        // Unclean: every segment is replayed, big batches are read whole.
        drop(log);
        let log = PartitionLog::open(dir.clone(), cfg, false).await.unwrap();
        assert_eq!(log.log_end_offset(), batches.last().unwrap().last + 1);
        let bases: Vec<i64> = log.segments().iter().map(|s| s.base_offset).collect();
        assert!(bases.len() > 2);
        let leo = log.log_end_offset();
        for b in &batches {
            for max_bytes in [0, 10_000, 400_000, 2 << 20] {
                check_read(&log, &batches, &bases, b.last, max_bytes, leo).await;
            }
        }
        for ts in [0, 1_005, 1_023, 1_024] {
            let got = log.offset_for_timestamp(ts).await.unwrap();
            assert_eq!(got, brute_offset_for_timestamp(&batches, 0, ts));
        }
        assert_eq!(headers_from(&log, 0).await.len(), batches.len());
        // A cut inside a big batch of the last segment loses that batch and what follows.
        let last_seg = *log.segments().last().unwrap();
        drop(log);
        let first_in_last = batches
            .iter()
            .position(|b| b.base == last_seg.base_offset)
            .unwrap();
        let big = (first_in_last..batches.len())
            .find(|&i| batches[i].bytes.len() > 250_000)
            .unwrap();
        let pos: usize = batches[first_in_last..big]
            .iter()
            .map(|b| b.bytes.len())
            .sum();
        let path = dir.join(segment_file_name(last_seg.base_offset, "log"));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(pos as u64 + 200_000)
            .unwrap();
        let log = PartitionLog::open(dir.clone(), cfg, false).await.unwrap();
        assert_eq!(log.log_end_offset(), batches[big].base);
        check_read(
            &log,
            &batches[..big],
            &bases,
            batches[big - 1].base,
            1 << 20,
            batches[big].base,
        )
        .await;
        log.close().await.unwrap();
    });
}

#[test]
fn restart_at_discards_everything_and_continues_at_any_offset() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = tiny_config(300, 50);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        fill(&log, 6, 2, 30, 1_000).await;
        assert_eq!(log.log_end_offset(), 12);
        // Above the log end: a follower jumping to its leader's log start.
        assert_eq!(log.restart_at(40).await.unwrap(), 40);
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.size_bytes()
            ),
            (40, 40, 0)
        );
        assert_eq!(log.segments().len(), 1);
        assert!(log.read(40, 1 << 20, 41).await.unwrap().is_empty());
        let b = batch_of(40, 2_000, 3, 10);
        append(&log, std::slice::from_ref(&b)).await.unwrap();
        assert_eq!(log.log_end_offset(), 43);
        assert!(log.restart_at(-1).await.is_err());
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 43));
        // Below the log start works the same way.
        assert_eq!(log.restart_at(5).await.unwrap(), 5);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 5));
        drop(log);
        let log = PartitionLog::open(dir, cfg, false).await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 5));
    });
}

#[test]
fn stored_high_watermark_survives_reopen_and_a_torn_write_is_cleaned_up() {
    use shardlog_storage::checkpoint::{read_high_watermark, write_high_watermark};
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let log = PartitionLog::open(dir.clone(), tiny_config(1 << 20, 100), true)
            .await
            .unwrap();
        fill(&log, 4, 3, 20, 1_000).await;
        assert_eq!(read_high_watermark(&dir), None);
        write_high_watermark(&dir, 9).await.unwrap();
        write_high_watermark(&dir, 12).await.unwrap();
        assert_eq!(read_high_watermark(&dir), Some(12));
        log.close().await.unwrap();
        // A crash while replacing it leaves the temporary file: removed at open, and the last
        // complete value still reads back.
        std::fs::write(
            dir.join("high-watermark.tmp"),
            "shardlog-high-watermark 1\n1",
        )
        .unwrap();
        let log = PartitionLog::open(dir.clone(), tiny_config(1 << 20, 100), false)
            .await
            .unwrap();
        assert!(!dir.join("high-watermark.tmp").exists());
        assert_eq!(read_high_watermark(&dir), Some(12));
        assert_eq!(log.log_end_offset(), 12);
        // Garbage is ignored, not trusted.
        std::fs::write(
            dir.join("high-watermark"),
            "shardlog-high-watermark 1\n99x\n",
        )
        .unwrap();
        assert_eq!(read_high_watermark(&dir), None);
    });
}

#[test]
fn index_entries_reach_the_files_in_page_sized_writes_and_a_crash_loses_none() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        // An interval of 1 byte: one offset entry per batch after the first.
        let cfg = tiny_config(1 << 30, 1);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        let batches = fill(&log, 700, 1, 10, 1_000).await;
        let index_path = dir.join(segment_file_name(0, "index"));
        // 512 entries are one 4 KiB write; the other 187 wait in memory.
        assert_eq!(
            std::fs::metadata(&index_path).unwrap().len(),
            512 * OFFSET_ENTRY_LEN as u64
        );
        // Reads use the in-memory index, so they find every batch.
        for b in [&batches[0], &batches[600], &batches[699]] {
            let slice = log.read(b.base, 1 << 20, i64::MAX).await.unwrap();
            let got = log.read_bytes(&slice).await.unwrap();
            assert_eq!(slice_batches(&got)[0], (b.base, b.last));
        }
        // A crash (no close): the reopened log replays past the last entry on disk.
        drop(log);
        let log = PartitionLog::open(dir.clone(), cfg, false).await.unwrap();
        assert_eq!(log.log_end_offset(), 700);
        let b = &batches[650];
        let slice = log.read(b.base, 1 << 20, i64::MAX).await.unwrap();
        let got = log.read_bytes(&slice).await.unwrap();
        assert_eq!(slice_batches(&got)[0], (b.base, b.last));
        log.close().await.unwrap();
        let index = std::fs::read(&index_path).unwrap();
        let log_len = std::fs::metadata(dir.join(segment_file_name(0, "log")))
            .unwrap()
            .len();
        assert_eq!(decode_offset_index(&index, log_len).len(), 699);
    });
}

#[test]
fn disk_is_reserved_ahead_of_appends_and_given_back_at_roll() {
    use std::os::unix::fs::MetadataExt;
    const AHEAD: u64 = 1 << 20;
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = LogConfig {
            preallocate_bytes: AHEAD,
            ..tiny_config(1 << 30, 4096)
        };
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        fill(&log, 20, 10, 1_000, 1_000).await;
        let path = dir.join(segment_file_name(0, "log"));
        let meta = std::fs::metadata(&path).unwrap();
        let size = meta.len();
        assert!(size > 100_000, "the file size is that of its data: {size}");
        assert!(
            meta.blocks() * 512 >= size + AHEAD / 2,
            "{} bytes allocated for {size} of data",
            meta.blocks() * 512
        );
        // The roll gives the rest back (in the background sync that `flush` waits for).
        log.roll().await.unwrap();
        log.flush().await.unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), size);
        assert!(
            meta.blocks() * 512 < size + 64 * 1024,
            "{} bytes still allocated for {size} of data",
            meta.blocks() * 512
        );
        // Everything written before the roll reads back.
        let slice = log.read(0, 1 << 20, i64::MAX).await.unwrap();
        assert_eq!(
            slice_batches(&log.read_bytes(&slice).await.unwrap())[0],
            (0, 9)
        );
        log.close().await.unwrap();
    });
}

/// Descriptors of this process open on files under `root` (other tests of this binary run
/// at the same time and open their own files).
fn open_fds_under(root: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(root))
        .count()
}

/// A partition holds one descriptor while idle (its active `.log`): index files and the
/// directory are opened only for a write or a sync, the plain read descriptor at the first
/// read. With thousands of partitions under one descriptor limit, each one counts.
#[test]
fn an_idle_partition_holds_one_descriptor() {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    run(move || async move {
        const N: usize = 20;
        let cfg = tiny_config(64 * 1024, 256);
        for i in 0..N {
            let log = PartitionLog::open(root.join(format!("t-{i}")), cfg, true)
                .await
                .unwrap();
            fill(&log, 50, 4, 100, 1_000).await;
            log.close().await.unwrap();
        }
        let before = open_fds_under(&root);
        let mut logs = Vec::new();
        for i in 0..N {
            logs.push(
                PartitionLog::open(root.join(format!("t-{i}")), cfg, true)
                    .await
                    .unwrap(),
            );
        }
        assert!(logs[0].log_end_offset() == 200);
        let opened = open_fds_under(&root) - before;
        assert!(opened == N, "{opened} descriptors for {N} idle partitions");
        // Appends write index pages through descriptors opened for that write only.
        for log in &logs {
            fill(log, 50, 4, 100, 2_000).await;
        }
        let appended = open_fds_under(&root) - before;
        assert!(appended <= N, "{appended} descriptors after appends");
        // A read opens the active segment's plain descriptor, once.
        for log in &logs {
            for _ in 0..3 {
                let slice = log.read(0, 1 << 20, log.log_end_offset()).await.unwrap();
                assert!(matches!(slice, ReadSlice::File(_)));
            }
        }
        let read = open_fds_under(&root) - before;
        assert!(read <= 2 * N, "{read} descriptors after reads");
        for log in logs {
            log.close().await.unwrap();
        }
        assert!(
            open_fds_under(&root) <= before,
            "close leaves no descriptor behind"
        );
    });
}
