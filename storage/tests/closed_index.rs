//! Index lookups in closed segments, whose entries are not held in memory: each lookup reads
//! the pages it needs from the index files through the shard's page cache (`index_cache`).
//! Checked against a model of the batches: live after rolls, after clean and unclean reopens,
//! with a cache too small for one page, after segments are deleted and recreated at the same
//! paths, and with index files that a validating open would have rewritten.

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardlog_storage::index::{decode_offset_index, OffsetEntry};
use shardlog_storage::{index_cache, segment_file_name, PartitionLog};

/// Appends `n` random batches one at a time with timestamps that mostly grow but jitter (so
/// the time index has entries of varying spacing and a segment's maximum is not always its last
/// batch), rolling with probability `roll_chance` after each besides the rolls by size.
async fn fill_random(
    log: &PartitionLog,
    rng: &mut StdRng,
    batches: &mut Vec<ModelBatch>,
    n: usize,
    clock: &mut i64,
    max_value: usize,
    roll_chance: f64,
) {
    for _ in 0..n {
        *clock += rng.gen_range(0..20);
        let ts = *clock + rng.gen_range(-40..40);
        let b = random_batch(rng, log.log_end_offset(), ts, 5, max_value);
        append(log, std::slice::from_ref(&b)).await.unwrap();
        batches.push(b);
        if rng.gen_bool(roll_chance) {
            log.roll().await.unwrap();
        }
    }
}

/// Every lookup against the model, for every `stride`-th batch: reads from its first and last
/// offset with several byte limits and high watermarks, ListOffsets by timestamp, header scans.
async fn check_all(
    log: &PartitionLog,
    batches: &[ModelBatch],
    rng: &mut StdRng,
    stride: usize,
    ctx: &str,
) {
    let (lso, leo) = (log.log_start_offset(), log.log_end_offset());
    assert_eq!(leo, batches.last().unwrap().last + 1, "{ctx}: log end");
    let bases: Vec<i64> = log.segments().iter().map(|s| s.base_offset).collect();
    for b in batches.iter().filter(|b| b.last >= lso).step_by(stride) {
        check_read(log, batches, &bases, b.base.max(lso), 1 << 20, leo).await;
        check_read(log, batches, &bases, b.last, rng.gen_range(0..3_000), leo).await;
        let hw = rng.gen_range(b.last..=leo);
        check_read(log, batches, &bases, b.last, 1 << 20, hw).await;
    }
    let lo = batches.iter().map(|b| b.max_ts).min().unwrap() - 10;
    let hi = batches.iter().map(|b| b.max_ts).max().unwrap() + 10;
    for _ in 0..150 {
        let ts = rng.gen_range(lo..=hi);
        assert_eq!(
            log.offset_for_timestamp(ts).await.unwrap(),
            brute_offset_for_timestamp(batches, lso, ts),
            "{ctx}: timestamp {ts}"
        );
    }
    for _ in 0..4 {
        let from = rng.gen_range(lso..=leo);
        let got: Vec<(i64, i64)> = headers_from(log, from)
            .await
            .iter()
            .map(|h| (h.base_offset, h.last_offset()))
            .collect();
        let want: Vec<(i64, i64)> = match containing(batches, from) {
            Some(c) => batches[c..].iter().map(|b| (b.base, b.last)).collect(),
            None => Vec::new(),
        };
        assert_eq!(got, want, "{ctx}: scan_headers({from})");
    }
}

/// At most the active segment's entries are in memory: one offset and one time entry per
/// `interval` bytes of a segment of `segment_bytes`, plus the final time entry.
fn assert_only_active_entries(log: &PartitionLog, segment_bytes: u64, interval: u64, ctx: &str) {
    let bound = 2 * (segment_bytes / interval.max(1) + 2) as usize;
    let held = log.index_entries_in_memory();
    assert!(held <= bound, "{ctx}: {held} entries in memory > {bound}");
}

#[test]
fn closed_segment_lookups_match_a_reference_live_and_after_reopen() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = tiny_config(6_000, 150);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        let (mut batches, mut clock) = (Vec::new(), 1_000_000i64);
        fill_random(&log, &mut rng, &mut batches, 700, &mut clock, 120, 0.02).await;
        let segments = log.segments();
        assert!(segments.len() > 15, "{} segments", segments.len());

        // Live: rolled segments are closed and hold no entries.
        assert_only_active_entries(&log, 6_000, 150, "live");
        check_all(&log, &batches, &mut rng, 1, "live").await;
        assert!(index_cache::stats().misses > 0, "closed lookups read pages");

        // Clean reopen: closed segments come back without reading their index files, with the
        // same ends, sizes and largest timestamps.
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        assert_eq!(log.segments(), segments);
        assert_only_active_entries(&log, 6_000, 150, "clean reopen");
        check_all(&log, &batches, &mut rng, 1, "clean reopen").await;
        assert_eq!(log.untrusted_index_segments(), 0);

        // DeleteRecords into a closed segment: lookups start at the new log start.
        let lso = batches[batches.len() / 3].base + 1;
        log.delete_records_before(lso).await.unwrap();
        check_all(&log, &batches, &mut rng, 1, "after DeleteRecords").await;

        // Unclean reopen: closed segments below the recovery point get their tails checked
        // from the entries they need, the others are replayed; closed ones still hold none.
        drop(log);
        let log = PartitionLog::open(dir.clone(), cfg, false).await.unwrap();
        assert_only_active_entries(&log, 6_000, 150, "unclean reopen");
        check_all(&log, &batches, &mut rng, 1, "unclean reopen").await;

        // Appends go on, and the segments they roll read back too.
        fill_random(&log, &mut rng, &mut batches, 150, &mut clock, 120, 0.02).await;
        check_all(&log, &batches, &mut rng, 2, "more appends").await;
        assert_eq!(log.untrusted_index_segments(), 0);
        log.close().await.unwrap();
    });
}

#[test]
fn a_tiny_page_cache_gives_the_same_answers() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        // An entry for every batch and segments of ~1,200 batches: each index file is several
        // pages long, so lookups binary-search across pages.
        let cfg = tiny_config(150_000, 1);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        let mut rng = StdRng::seed_from_u64(12);
        let (mut batches, mut clock) = (Vec::new(), 1_000_000i64);
        fill_random(&log, &mut rng, &mut batches, 5_000, &mut clock, 30, 0.0).await;
        log.close().await.unwrap();
        let index = std::fs::read(dir.join(segment_file_name(0, "index"))).unwrap();
        assert!(index.len() > 2 * 4096, "{} bytes of index", index.len());

        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        // Room for one page at most: nearly every page read evicts another.
        index_cache::set_capacity_bytes(5_000);
        check_all(&log, &batches, &mut rng, 7, "one page").await;
        let stats = index_cache::stats();
        assert!(stats.evictions > 100, "{stats:?}");
        assert!(stats.bytes <= 5_000 && stats.pages <= 1, "{stats:?}");
        assert!(stats.open_files > 0 && stats.open_files <= index_cache::MAX_OPEN_INDEX_FILES);
        // No room at all: every lookup reads its pages again.
        index_cache::set_capacity_bytes(0);
        check_all(&log, &batches, &mut rng, 13, "no cache").await;
        assert_eq!(index_cache::stats().pages, 0);
        // The default again: the same answers, now mostly from the cache.
        index_cache::set_capacity_bytes(index_cache::DEFAULT_CAPACITY_BYTES);
        check_all(&log, &batches, &mut rng, 13, "default cache").await;
        let before = index_cache::stats();
        check_all(&log, &batches, &mut rng, 13, "warm cache").await;
        let after = index_cache::stats();
        assert!(
            after.hits - before.hits > 10 * (after.misses - before.misses),
            "{after:?}"
        );
        assert_eq!(log.untrusted_index_segments(), 0);
        log.close().await.unwrap();
    });
}

#[test]
fn pages_of_a_deleted_segment_are_never_served_for_a_new_one() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = tiny_config(4_000, 100);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        let mut rng = StdRng::seed_from_u64(13);
        let (mut batches, mut clock) = (Vec::new(), 1_000_000i64);
        fill_random(&log, &mut rng, &mut batches, 300, &mut clock, 60, 0.02).await;
        log.roll().await.unwrap();
        check_all(&log, &batches, &mut rng, 1, "first life").await;
        assert!(index_cache::stats().pages > 0);

        // Everything goes; segments come back at the same base offsets (the same file names)
        // with other batches at other positions and other timestamps.
        log.truncate_to(0).await.unwrap();
        assert_eq!(
            index_cache::stats().pages,
            0,
            "deleted segments keep no pages"
        );
        assert_eq!(index_cache::stats().open_files, 0, "nor open index files");
        let (mut batches, mut clock) = (Vec::new(), 2_000_000i64);
        fill_random(&log, &mut rng, &mut batches, 300, &mut clock, 150, 0.02).await;
        log.roll().await.unwrap();
        let misses = index_cache::stats().misses;
        check_all(&log, &batches, &mut rng, 1, "second life").await;
        assert!(index_cache::stats().misses > misses);
        // A page of the old files would break the index rules for the new log or point at no
        // batch: the index would then be untrusted.
        assert_eq!(log.untrusted_index_segments(), 0);

        // Retention deletes closed segments: their pages go with them.
        let (cached, segments) = (index_cache::stats().pages, log.segments().len());
        log.delete_records_before(batches[batches.len() / 2].base)
            .await
            .unwrap();
        assert!(log.segments().len() < segments);
        assert!(index_cache::stats().pages < cached);

        // Truncation into a closed segment makes it the active one again (entries back in
        // memory, its pages dropped); closed again at the next roll, under a new cache id.
        let cut = batches[batches.len() * 3 / 4].base;
        log.truncate_to(cut).await.unwrap();
        let kept = batches.iter().position(|b| b.base == cut).unwrap();
        batches.truncate(kept);
        fill_random(&log, &mut rng, &mut batches, 80, &mut clock, 20, 0.02).await;
        log.roll().await.unwrap();
        check_all(&log, &batches, &mut rng, 1, "after truncation").await;
        assert_eq!(log.untrusted_index_segments(), 0);
        log.close().await.unwrap();
    });
}

#[test]
fn opening_leaves_closed_index_files_alone_and_lookups_survive_bad_ones() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let cfg = tiny_config(5_000, 120);
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        let mut rng = StdRng::seed_from_u64(14);
        let (mut batches, mut clock) = (Vec::new(), 1_000_000i64);
        fill_random(&log, &mut rng, &mut batches, 400, &mut clock, 100, 0.02).await;
        let segments = log.segments();
        log.close().await.unwrap();
        let closed = &segments[..segments.len() - 1];
        assert!(closed.len() > 5);

        // Replace every closed segment's `.index` by entries that break the rules (offsets
        // going down). A validating open would rewrite them; this one must not read them.
        let mut originals = Vec::new();
        for s in closed {
            let path = dir.join(segment_file_name(s.base_offset, "index"));
            let good = std::fs::read(&path).unwrap();
            let n = (good.len() / 8) as u32;
            let bad: Vec<u8> = (0..n)
                .flat_map(|i| {
                    let e = OffsetEntry {
                        relative_offset: (n - i) * 7,
                        position: 5,
                    };
                    [e.relative_offset.to_be_bytes(), e.position.to_be_bytes()].concat()
                })
                .collect();
            std::fs::write(&path, &bad).unwrap();
            originals.push((path, good, bad));
        }
        let log = PartitionLog::open(dir.clone(), cfg, true).await.unwrap();
        for (path, _, bad) in &originals {
            assert_eq!(&std::fs::read(path).unwrap(), bad, "{}", path.display());
        }
        // Lookups find out, stop trusting those files, and walk the segments instead.
        check_all(&log, &batches, &mut rng, 1, "bad index files").await;
        let untrusted = log.untrusted_index_segments();
        assert!(untrusted > 0 && untrusted <= closed.len(), "{untrusted}");

        // An unclean open checks the tails of closed segments: it finds the files wrong and
        // rebuilds them, identical to what was written live.
        drop(log);
        let log = PartitionLog::open(dir.clone(), cfg, false).await.unwrap();
        for (path, good, _) in &originals {
            assert_eq!(&std::fs::read(path).unwrap(), good, "{}", path.display());
            let log_len = std::fs::metadata(path.with_extension("log")).unwrap().len();
            assert_eq!(decode_offset_index(good, log_len).len() * 8, good.len());
        }
        check_all(&log, &batches, &mut rng, 1, "rebuilt").await;
        assert_eq!(log.untrusted_index_segments(), 0);
        log.close().await.unwrap();
    });
}
