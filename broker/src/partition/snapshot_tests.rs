//! Producer state snapshots on a real log: taken at rolls and at close, loaded at open (which
//! then reads nothing before them), dropped and rebuilt by truncation; producer expiry and the
//! KIP-360 rule for producers a partition no longer knows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shardlog_protocol::batch;
use shardlog_protocol::records::BatchBuilder;
use shardlog_storage::producer_snapshot;

use super::snapshots::SNAPSHOTS_KEPT;
use super::*;
use crate::cluster::control_api::Lease;

/// A batch of `records` records of producer `pid` (-1: none) at sequence `seq`, its timestamps
/// `ts` (increasing from batch to batch, so that each finished segment's time index names its
/// last data batch and a clean open replays only that segment's tail).
fn data(pid: i64, epoch: i16, seq: i32, records: usize, txn: bool, ts: i64) -> IncomingBatch {
    let mut b = BatchBuilder::new(batch::Compression::None, ts)
        .producer(pid, epoch, seq)
        .transactional(txn);
    for i in 0..records {
        b.push(ts, None, Some(format!("v{i}").as_bytes()), &[])
            .unwrap();
    }
    let bytes = b.build().unwrap();
    let header = batch::validate(&bytes).unwrap();
    IncomingBatch {
        bytes: Bytes::from(bytes),
        header,
    }
}

/// Hands out batches with increasing timestamps, all later than the markers' (which carry the
/// wall clock).
struct Producer {
    clock: i64,
}

impl Producer {
    fn new() -> Producer {
        Producer {
            clock: now_ms() + 60_000,
        }
    }

    fn batch(&mut self, pid: i64, epoch: i16, seq: i32, txn: bool) -> IncomingBatch {
        self.clock += 1;
        data(pid, epoch, seq, 1, txn, self.clock)
    }
}

async fn produce(p: &Rc<Partition>, b: IncomingBatch) -> AppendOutcome {
    p.produce(vec![b], 1, Duration::from_secs(5), || {}).await
}

/// Small segments (a roll every few batches) and an offset index entry at every batch.
fn small_segments() -> TopicConfig {
    let mut c = TopicConfig::default();
    c.set("segment.bytes", "400").unwrap();
    c.set("index.interval.bytes", "1").unwrap();
    c
}

async fn open(dir: &Path) -> Result<Rc<Partition>, StorageError> {
    let p = Partition::open(
        Arc::from("t"),
        0,
        dir.to_path_buf(),
        small_segments(),
        true,
        Lease::standalone(),
    )
    .await?;
    let p = Rc::new(p);
    let me = BrokerId(0);
    p.apply_state(me, &PartitionState::standalone(me));
    Ok(p)
}

fn snapshot_files(dir: &Path) -> Vec<i64> {
    let mut out: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| producer_snapshot::parse_file_name(e.unwrap().file_name().to_str()?))
        .collect();
    out.sort_unstable();
    out
}

/// Everything a client can tell about the producer state, plus the epoch cache.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    producers: Vec<producer_state::ProducerView>,
    ongoing: Vec<(i64, i64)>,
    last_stable_offset: i64,
    aborted: Vec<AbortedTxn>,
    epochs: Vec<replication::EpochEntry>,
}

fn observe(p: &Partition) -> Observed {
    Observed {
        producers: p.producers(),
        ongoing: p.ongoing_transactions(),
        last_stable_offset: p.last_stable_offset(),
        aborted: p.log().aborted_txns(),
        epochs: p.epoch_cache.borrow().entries().to_vec(),
    }
}

type Scenario = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

fn run(f: impl FnOnce(PathBuf) -> Scenario + Send + 'static) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    crate::runtime::rt::start_executor(move || f(dir))
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn state_survives_roll_and_close_and_reopen_reads_nothing_before_the_snapshot() {
    run(|dir| Box::pin(reopen_scenario(dir)));
}

async fn reopen_scenario(dir: PathBuf) {
    let p = open(&dir).await.unwrap();
    assert_eq!(p.state_load().snapshot, None);
    let mut c = Producer::new();
    // Producer 3 aborts a transaction (a `.txnindex` entry below the snapshots), producer 1
    // writes idempotent batches, producer 2 opens a transaction and leaves it open.
    assert_eq!(produce(&p, c.batch(3, 0, 0, true)).await.base_offset, 0);
    assert_eq!(p.write_marker(3, 0, false, 1).await.base_offset, 1);
    let mut last_of_1 = None;
    for seq in 0..12 {
        let o = produce(&p, c.batch(1, 0, seq, false)).await;
        assert_eq!(o.error_code, errors::NONE);
        last_of_1 = Some((seq, o.base_offset));
    }
    let txn_start = produce(&p, c.batch(2, 0, 0, true)).await.base_offset;
    for seq in 12..20 {
        produce(&p, c.batch(1, 0, seq, false)).await;
        last_of_1 = Some((seq, p.log_end_offset() - 1));
    }
    let (last_seq, last_offset) = last_of_1.unwrap();
    p.snapshots_settled().await;
    assert!(p.log().segments().len() >= 4, "{:?}", p.log().segments());
    // A snapshot was taken at each roll; two are kept, at offsets the log holds.
    let rolled = p.snapshot_offsets();
    assert_eq!(rolled.len(), SNAPSHOTS_KEPT, "{rolled:?}");
    assert_eq!(snapshot_files(&dir), rolled);
    assert!(rolled.iter().all(|o| *o > 0 && *o <= p.log_end_offset()));
    let before = observe(&p);
    assert_eq!(before.ongoing, vec![(txn_start, 2)]);
    assert_eq!(before.last_stable_offset, txn_start);
    assert_eq!(before.aborted.len(), 1);
    let leo = p.log_end_offset();
    p.close().await.unwrap();
    // Clean close: one at the log end (unless the last roll left one there); two are kept.
    let files = snapshot_files(&dir);
    assert_eq!(files.len(), SNAPSHOTS_KEPT);
    assert_eq!(files.last(), Some(&leo));

    // Make the first segment unreadable for a scan: its first batch claims another offset.
    // A clean open replays only a segment's tail (after its last index entries), so only a
    // scan from the log start would meet it.
    let first = dir.join(shardlog_storage::segment_file_name(0, "log"));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[..8].copy_from_slice(&1_000_000i64.to_be_bytes());
    std::fs::write(&first, &bytes).unwrap();

    let p = open(&dir).await.expect("opens from the snapshot");
    assert_eq!(
        p.state_load(),
        StateLoad {
            snapshot: Some(leo),
            scanned_from: leo,
            scanned_batches: 0
        }
    );
    assert_eq!(observe(&p), before);
    // A retried batch is still recognised: acknowledged at its offset, not appended again.
    let retry = produce(&p, c.batch(1, 0, last_seq, false)).await;
    assert_eq!(
        (retry.error_code, retry.base_offset),
        (errors::NONE, last_offset)
    );
    assert_eq!(p.log_end_offset(), leo);
    // The open transaction still holds the LSO; its COMMIT releases it.
    assert_eq!(p.last_stable_offset(), txn_start);
    assert_eq!(p.write_marker(2, 0, true, 1).await.base_offset, leo);
    assert_eq!(p.last_stable_offset(), leo + 1);
    p.close().await.unwrap();

    // Without snapshots the same open scans from the log start and meets the damage.
    for o in snapshot_files(&dir) {
        std::fs::remove_file(producer_snapshot::path(&dir, o)).unwrap();
    }
    match open(&dir).await {
        Err(StorageError::Corrupt { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a full scan read past a damaged first batch"),
    }
}

#[test]
fn a_damaged_snapshot_is_skipped_for_the_one_before() {
    run(|dir| Box::pin(damaged_scenario(dir)));
}

async fn damaged_scenario(dir: PathBuf) {
    let p = open(&dir).await.unwrap();
    let mut c = Producer::new();
    for seq in 0..20 {
        produce(&p, c.batch(1, 0, seq, false)).await;
    }
    p.snapshots_settled().await;
    let before = observe(&p);
    let leo = p.log_end_offset();
    p.close().await.unwrap();
    let files = snapshot_files(&dir);
    assert_eq!(files.len(), 2);
    assert_eq!(files[1], leo);
    // Damage the newest: the open falls back to the older one, scans from it, and removes
    // the damaged file.
    let newest = producer_snapshot::path(&dir, leo);
    let mut bytes = std::fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&newest, &bytes).unwrap();
    let p = open(&dir).await.unwrap();
    let load = p.state_load();
    assert_eq!(load.snapshot, Some(files[0]));
    assert_eq!(load.scanned_from, files[0]);
    assert!(load.scanned_batches > 0);
    assert_eq!(
        load.scanned_batches,
        (leo - files[0]) as u64,
        "one-record batches"
    );
    assert_eq!(observe(&p), before);
    assert_eq!(snapshot_files(&dir), vec![files[0]]);
    p.close().await.unwrap();
}

#[test]
fn truncation_below_a_snapshot_deletes_it_and_rebuilds_from_the_one_before() {
    run(|dir| Box::pin(truncation_scenario(dir)));
}

async fn truncation_scenario(dir: PathBuf) {
    let p = open(&dir).await.unwrap();
    let mut c = Producer::new();
    // What the state was at each log end, to compare with after truncating there.
    let mut at: BTreeMap<i64, Observed> = BTreeMap::new();
    at.insert(0, observe(&p));
    for seq in 0..30 {
        // Producer 2's transaction opens at seq 10 and is still open at the end.
        if seq == 10 {
            produce(&p, c.batch(2, 0, 0, true)).await;
            at.insert(p.log_end_offset(), observe(&p));
        }
        produce(&p, c.batch(1, 0, seq, false)).await;
        at.insert(p.log_end_offset(), observe(&p));
    }
    p.snapshots_settled().await;
    let snaps = p.snapshot_offsets();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let (older, newer) = (snaps[0], snaps[1]);
    assert!(newer - older >= 2, "{snaps:?}");
    let cut = older + 1;

    p.truncate_to(cut).await.unwrap();
    assert_eq!(p.log_end_offset(), cut);
    assert_eq!(p.snapshot_offsets(), vec![older]);
    assert_eq!(snapshot_files(&dir), vec![older]);
    assert_eq!(
        p.state_load(),
        StateLoad {
            snapshot: Some(older),
            scanned_from: older,
            scanned_batches: 1
        }
    );
    assert_eq!(observe(&p), at[&cut]);

    // The log goes on from there; a snapshot written before the truncation never comes back.
    for seq in 0..12 {
        produce(&p, c.batch(5, 0, seq, false)).await;
    }
    p.snapshots_settled().await;
    assert!(snapshot_files(&dir)
        .iter()
        .all(|o| *o <= p.log_end_offset()));
    let before = observe(&p);
    p.close().await.unwrap();
    let p = open(&dir).await.unwrap();
    assert_eq!(observe(&p), before);

    // Restarting the log elsewhere drops every snapshot and all producer state.
    p.restart_at(1_000).await.unwrap();
    assert!(snapshot_files(&dir).is_empty());
    assert!(p.producers().is_empty());
    assert_eq!(p.state_load().snapshot, None);
    p.close().await.unwrap();
    assert!(snapshot_files(&dir).is_empty(), "nothing to keep at close");
}

#[test]
fn an_idle_producer_expires_and_comes_back_at_any_sequence() {
    run(|dir| Box::pin(expiry_scenario(dir)));
}

async fn expiry_scenario(dir: PathBuf) {
    let p = open(&dir).await.unwrap();
    let mut c = Producer::new();
    for seq in 0..3 {
        produce(&p, c.batch(1, 0, seq, false)).await;
    }
    let txn_start = produce(&p, c.batch(2, 0, 0, true)).await.base_offset;
    p.close().await.unwrap();
    let p = open(&dir).await.unwrap();
    assert_eq!(p.producers().len(), 2);
    // An hour later with a 1 minute expiration: producer 1 goes, producer 2's open
    // transaction keeps it.
    let later = now_ms() + 3_600_000;
    assert_eq!(p.expire_producers(later, 60_000), 1);
    let left: Vec<i64> = p.producers().iter().map(|v| v.producer_id.0).collect();
    assert_eq!(left, vec![2]);
    assert_eq!(p.last_stable_offset(), txn_start);
    // Closing at an unchanged log end still writes the snapshot again: the expiry stays.
    let leo = p.log_end_offset();
    p.close().await.unwrap();
    let p = open(&dir).await.unwrap();
    assert_eq!(p.state_load().snapshot, Some(leo));
    assert_eq!(p.producers().len(), 1);

    // KIP-360: the producer it forgot carries on where it was (or anywhere).
    let o = produce(&p, c.batch(1, 0, 3, false)).await;
    assert_eq!((o.error_code, o.base_offset), (errors::NONE, leo));
    // Known again: a gap is refused (once the grace after becoming leader is over).
    p.last_refusal.set(None);
    let gap = produce(&p, c.batch(1, 0, 9, false)).await;
    assert_eq!(gap.error_code, errors::OUT_OF_ORDER_SEQUENCE_NUMBER);
    p.close().await.unwrap();
}
