//! The log cleaner against a model: random keys, updates and tombstones, cleanings, clean and
//! unclean reopens, and a crash at every step of a swap. What a reader sees must be, per key,
//! the model's latest value (tombstones gone once past `delete.retention.ms`), at the offset
//! the model gave it, in offset order.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardlog_protocol::batch::{assign_offset, build_simple_batch};
use shardlog_protocol::records::decode_batches;
use shardlog_storage::partition_log::cleaner::{crash_at_swap_step, SWAP_STEPS};
use shardlog_storage::{batch_metas, CleanParams, LogConfig, PartitionLog, ReadSlice};

/// Per key, its latest version: offset, value (None: a tombstone).
type Versions = BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)>;
/// A record as a reader sees it: offset, key, value.
type Seen = (i64, Vec<u8>, Option<Vec<u8>>);

fn params(now_ms: i64, delete_retention_ms: i64, leo: i64) -> CleanParams {
    CleanParams {
        now_ms,
        delete_retention_ms,
        min_cleanable_dirty_ratio: 0.5,
        min_compaction_lag_ms: 0,
        max_compaction_lag_ms: i64::MAX,
        first_unstable_offset: leo,
        max_map_entries: 1 << 20,
        retain_last_batch_of: HashMap::new(),
        force: true,
        stop: Default::default(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Every record a reader sees from the log start, as (offset, key, value), in order.
async fn read_all(log: &PartitionLog) -> Vec<Seen> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let leo = log.log_end_offset();
    while offset < leo {
        let slice = log.read(offset, 1 << 20, leo).await.unwrap();
        if matches!(slice, ReadSlice::Empty) {
            break;
        }
        let bytes = log.read_bytes(&slice).await.unwrap();
        let batches = decode_batches(&bytes, 1 << 24).unwrap();
        assert!(!batches.is_empty());
        for b in &batches {
            assert!(
                b.header.last_offset() >= offset,
                "a batch below the fetch offset"
            );
            for r in &b.records {
                if let Some((last, _, _)) = out.last() {
                    assert!(r.offset > *last, "offsets must increase");
                }
                out.push((
                    r.offset,
                    r.key.as_ref().expect("keyed").to_vec(),
                    r.value.as_ref().map(|v| v.to_vec()),
                ));
            }
            offset = b.header.last_offset() + 1;
        }
    }
    out
}

/// Appends one batch of `records` (key, value) at the log end.
async fn append_records(log: &PartitionLog, records: &[(Vec<u8>, Option<Vec<u8>>)], ts: i64) {
    let refs: Vec<Record> = records
        .iter()
        .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
        .collect();
    let mut bytes = build_simple_batch(0, ts, &refs);
    assign_offset(&mut bytes, log.log_end_offset(), 0);
    let metas = batch_metas(&bytes).unwrap();
    log.append(bytes, &metas).await.unwrap();
}

/// Checks what a reader sees against `history` (every record ever appended, by offset) and
/// `latest` (per key). `cleaned_below`: records below it must be their key's latest version;
/// `tombstones_gone`: tombstones below it are expired and must be gone.
fn check(
    seen: &[Seen],
    history: &BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)>,
    latest: &Versions,
    cleaned_below: i64,
    tombstones_gone: bool,
) {
    for (offset, key, value) in seen {
        let (k, v) = history.get(offset).expect("a record the model never wrote");
        assert_eq!((k, v), (key, value), "record at {offset} changed");
        if *offset < cleaned_below {
            // The latest version below the cleaned offset (a later one may be in the dirty part).
            let newest_cleaned = history
                .range(..cleaned_below)
                .filter(|(_, (k, _))| k == key)
                .map(|(o, _)| *o)
                .max();
            assert_eq!(
                newest_cleaned,
                Some(*offset),
                "offset {offset} is not the latest cleaned version of its key"
            );
            if tombstones_gone {
                assert!(value.is_some(), "expired tombstone at {offset} kept");
            }
        }
    }
    // Every key's latest version is still visible, unless it is an expired tombstone.
    for (key, (offset, value)) in latest {
        let visible = seen.iter().any(|(o, _, _)| o == offset);
        let expired = tombstones_gone && value.is_none() && *offset < cleaned_below;
        assert_eq!(
            visible, !expired,
            "latest version of key {key:?} at {offset}: visible {visible}"
        );
    }
}

#[test]
fn compaction_matches_the_model() {
    for seed in 0..12u64 {
        let dir = tempdir();
        let path: PathBuf = dir.path().join("t-0");
        run(move || async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let cfg = LogConfig {
                segment_bytes: rng.gen_range(400..4_000),
                index_interval_bytes: rng.gen_range(0..300),
                ..tiny_config(1_000, 100)
            };
            let mut log = PartitionLog::open(path.clone(), cfg, true).await.unwrap();
            let mut history = BTreeMap::new();
            let mut latest: Versions = BTreeMap::new();
            let keys = rng.gen_range(3..40);
            for step in 0..120 {
                match rng.gen_range(0..10) {
                    0..=6 => {
                        let n = rng.gen_range(1..6);
                        let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..n)
                            .map(|_| {
                                let k = format!("k{}", rng.gen_range(0..keys)).into_bytes();
                                let v = (!rng.gen_bool(0.15))
                                    .then(|| format!("v{step}-{}", rng.gen::<u16>()).into_bytes());
                                (k, v)
                            })
                            .collect();
                        let base = log.log_end_offset();
                        append_records(&log, &records, 1_000 + step).await;
                        for (i, (k, v)) in records.into_iter().enumerate() {
                            let o = base + i as i64;
                            history.insert(o, (k.clone(), v.clone()));
                            latest.insert(k, (o, v));
                        }
                    }
                    7 => {
                        let before = log.first_dirty_offset();
                        let stats = log
                            .clean(&params(now_ms(), i64::MAX / 4, log.log_end_offset()))
                            .await
                            .unwrap();
                        let cleaned_to = stats.map_or(before, |s| s.cleaned_to);
                        assert_eq!(log.first_dirty_offset(), cleaned_to);
                        let seen = read_all(&log).await;
                        check(&seen, &history, &latest, cleaned_to, false);
                    }
                    8 => {
                        log.close().await.unwrap();
                        log = PartitionLog::open(path.clone(), cfg, true).await.unwrap();
                    }
                    _ => {
                        // Unclean: dropped without close.
                        drop(log);
                        log = PartitionLog::open(path.clone(), cfg, false).await.unwrap();
                    }
                }
            }
            // Everything closed and cleaned, tombstones past their time.
            log.roll().await.unwrap();
            log.flush().await.unwrap();
            let leo = log.log_end_offset();
            let far = now_ms() + 10 * 86_400_000;
            log.clean(&params(far, 1, leo)).await.unwrap();
            let seen = read_all(&log).await;
            check(&seen, &history, &latest, leo, true);
            let live = latest.values().filter(|(_, v)| v.is_some()).count();
            assert_eq!(seen.len(), live, "seed {seed}: one record per live key");
            // The same after a reopen.
            log.close().await.unwrap();
            let log = PartitionLog::open(path.clone(), cfg, false).await.unwrap();
            assert_eq!(read_all(&log).await, seen);
            assert_eq!(log.log_end_offset(), leo);
            log.close().await.unwrap();
        });
    }
}

#[test]
fn a_thousand_keys_updated_a_thousand_times_read_back_as_a_thousand_records() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let cfg = tiny_config(1 << 20, 4096);
        let log = PartitionLog::open(path.clone(), cfg, true).await.unwrap();
        for round in 0..1_000 {
            let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..1_000)
                .map(|k| {
                    (
                        format!("key-{k}").into_bytes(),
                        Some(format!("value-{round}").into_bytes()),
                    )
                })
                .collect();
            append_records(&log, &records, 1_000 + round).await;
        }
        log.roll().await.unwrap();
        log.flush().await.unwrap();
        let before = log.size_bytes();
        let stats = log
            .clean(&params(now_ms(), 86_400_000, log.log_end_offset()))
            .await
            .unwrap()
            .expect("due");
        assert_eq!(stats.records_removed, 999_000);
        let seen = read_all(&log).await;
        assert_eq!(seen.len(), 1_000);
        for (offset, key, value) in &seen {
            let k: i64 = std::str::from_utf8(&key[4..]).unwrap().parse().unwrap();
            assert_eq!(*offset, 999_000 + k, "the last round's offsets stay");
            assert_eq!(value.as_deref(), Some(&b"value-999"[..]));
        }
        assert!(
            log.size_bytes() * 100 < before,
            "{} of {before}",
            log.size_bytes()
        );
        assert_eq!(log.log_end_offset(), 1_000_000);
        log.close().await.unwrap();
    });
}

/// An idle log is cleaned without a flush: the recovery point (which bounds the cleaner) moves
/// past a rolled segment once its background sync is done, not only at the next roll or flush.
#[test]
fn a_rolled_segment_of_an_idle_log_becomes_cleanable_without_a_flush() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = PartitionLog::open(path.clone(), tiny_config(1 << 20, 4096), true)
            .await
            .unwrap();
        for round in 0..3 {
            let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..10)
                .map(|k| (vec![b'k', k], Some(vec![b'v', round])))
                .collect();
            append_records(&log, &records, 1_000 + i64::from(round)).await;
        }
        log.roll().await.unwrap();
        let p = params(now_ms(), 86_400_000, log.log_end_offset());
        let mut waited = 0;
        while log.cleanable(&p).cleanable_segments == 0 {
            assert!(waited < 100, "the rolled segment never became cleanable");
            shardlog_runtime::sleep(std::time::Duration::from_millis(10)).await;
            waited += 1;
        }
        let stats = log.clean(&p).await.unwrap().expect("due");
        assert_eq!(stats.records_removed, 20);
        assert_eq!(read_all(&log).await.len(), 10);
        log.close().await.unwrap();
    });
}

#[test]
fn a_crash_at_every_swap_step_recovers_either_side_of_the_swap() {
    for step in 0..SWAP_STEPS {
        for clean_reopen in [false, true] {
            let dir = tempdir();
            let path = dir.path().join("t-0");
            run(move || async move {
                let cfg = tiny_config(600, 100);
                let log = PartitionLog::open(path.clone(), cfg, true).await.unwrap();
                let mut history = BTreeMap::new();
                let mut latest: Versions = BTreeMap::new();
                for i in 0..60i64 {
                    let k = format!("k{}", i % 7).into_bytes();
                    let v = (i % 11 != 3).then(|| format!("v{i}").into_bytes());
                    let o = log.log_end_offset();
                    append_records(&log, &[(k.clone(), v.clone())], 1_000 + i).await;
                    history.insert(o, (k.clone(), v.clone()));
                    latest.insert(k, (o, v));
                }
                log.roll().await.unwrap();
                log.flush().await.unwrap();
                let leo = log.log_end_offset();
                let segments_before = log.segments().len();
                crash_at_swap_step(Some(step));
                let crashed = log.clean(&params(now_ms(), i64::MAX / 4, leo)).await;
                crash_at_swap_step(None);
                assert!(crashed.is_err(), "step {step}: the crash hook fired");
                drop(log);
                let log = PartitionLog::open(path.clone(), cfg, clean_reopen)
                    .await
                    .unwrap();
                assert_eq!(log.log_end_offset(), leo, "step {step}");
                let seen = read_all(&log).await;
                // Before the commit point the old segments are back; after it, the cleaned one.
                check(&seen, &history, &latest, 0, false);
                if step < 2 {
                    assert_eq!(seen.len(), 60, "step {step}: rolled back, nothing removed");
                    assert_eq!(log.segments().len(), segments_before);
                } else {
                    assert!(seen.len() < 60, "step {step}: the swap was finished");
                }
                let names: Vec<String> = std::fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                assert!(
                    !names
                        .iter()
                        .any(|n| n.ends_with(".cleaned") || n.ends_with(".swap")),
                    "step {step}: leftovers {names:?}"
                );
                // A full cleaning afterwards gives one record per live key.
                log.clean(&params(now_ms(), i64::MAX / 4, leo))
                    .await
                    .unwrap();
                let seen = read_all(&log).await;
                check(&seen, &history, &latest, leo, false);
                assert_eq!(seen.len(), latest.len(), "step {step}");
                log.close().await.unwrap();
            });
        }
    }
}
