//! Helpers shared by the storage integration tests: an executor per test, batch building, and an
//! in-memory model of a partition's batches.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use shardlog_protocol::batch::{assign_offset, build_simple_batch, BatchHeader};
use shardlog_storage::{batch_metas, LogConfig, PartitionLog, ReadSlice, StorageError};

/// How long one `run` may take before its executor counts as stalled. Every caller finishes
/// in a few seconds; this is far above that even on a loaded 2-core CI machine.
const STALL_LIMIT: Duration = Duration::from_secs(120);

/// Runs `f` on a fresh glommio executor (its own thread) and waits for it.
///
/// Guard against the rare glommio lost wake-up (issue 12: the executor sleeps in
/// `io_uring_enter` although work is ready, and never wakes): a run that has not finished
/// after `STALL_LIMIT` is reported on stderr, its thread abandoned, and `f` runs once more
/// on a new executor. A second stall fails the test, so a real deadlock still fails; without
/// the guard one stall hung the whole test suite.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    for attempt in 1..=2 {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let g = f.clone();
        let executor = shardlog_runtime::start_executor(move || async move {
            g().await;
            let _ = done_tx.send(());
        })
        .expect("spawn executor");
        match done_rx.recv_timeout(STALL_LIMIT) {
            // Finished, or panicked (the sender dropped): join reports which.
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                executor.join().expect("executor thread");
                return;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "STALL: the glommio executor made no progress for {STALL_LIMIT:?} (attempt \
                     {attempt}; known lost wake-up, issue 12); its thread is abandoned"
                );
            }
        }
    }
    panic!("the glommio executor stalled twice in a row: a deadlock, not a lost wake-up");
}

/// A temporary directory, on tmpfs when the machine has one: the tests fdatasync a lot and
/// their crash model (cut and flipped files) does not depend on the file system.
pub fn tempdir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("temporary directory")
}

/// A small config that makes many segments and many index entries.
pub fn tiny_config(segment_bytes: u64, index_interval_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes,
        segment_ms: u64::MAX / 2,
        retention_ms: -1,
        retention_bytes: -1,
        ..LogConfig::default()
    }
}

/// A record as `build_simple_batch` takes it: (key, value).
pub type Record<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

#[derive(Debug, Clone)]
pub struct ModelBatch {
    pub base: i64,
    pub last: i64,
    pub max_ts: i64,
    pub bytes: Vec<u8>,
}

/// Builds one batch of `records` random values with timestamp `ts`, at `base`.
pub fn random_batch(
    rng: &mut StdRng,
    base: i64,
    ts: i64,
    max_records: usize,
    max_value: usize,
) -> ModelBatch {
    let n = rng.gen_range(1..=max_records);
    let values: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let len = rng.gen_range(0..=max_value);
            (0..len).map(|_| rng.gen()).collect()
        })
        .collect();
    let records: Vec<Record> = values.iter().map(|v| (None, Some(v.as_slice()))).collect();
    let mut bytes = build_simple_batch(0, ts, &records);
    assign_offset(&mut bytes, base, rng.gen_range(0..3));
    ModelBatch {
        base,
        last: base + n as i64 - 1,
        max_ts: ts,
        bytes,
    }
}

/// Appends `batches` in one call and checks the returned offsets.
pub async fn append(log: &PartitionLog, batches: &[ModelBatch]) -> Result<(), StorageError> {
    let buf: Vec<u8> = batches
        .iter()
        .flat_map(|b| b.bytes.iter().copied())
        .collect();
    let metas = batch_metas(&buf)?;
    let info = log.append(buf, &metas).await?;
    assert_eq!(info.base_offset, batches[0].base);
    assert_eq!(info.last_offset, batches.last().unwrap().last);
    Ok(())
}

/// Index of the batch containing `offset` (first with last >= offset).
pub fn containing(batches: &[ModelBatch], offset: i64) -> Option<usize> {
    let i = batches.partition_point(|b| b.last < offset);
    (i < batches.len()).then_some(i)
}

/// Kafka ListOffsets by timestamp, brute force.
pub fn brute_offset_for_timestamp(batches: &[ModelBatch], lso: i64, ts: i64) -> Option<(i64, i64)> {
    batches
        .iter()
        .filter(|b| b.last >= lso)
        .find(|b| b.max_ts >= ts)
        .map(|b| (b.base.max(lso), b.max_ts))
}

/// Checks one `read` against the model. `segment_bases` lets it check that a read that stopped
/// early did so at a segment boundary.
pub async fn check_read(
    log: &PartitionLog,
    batches: &[ModelBatch],
    segment_bases: &[i64],
    offset: i64,
    max_bytes: usize,
    hw: i64,
) {
    let ctx = format!("read(offset {offset}, max_bytes {max_bytes}, hw {hw})");
    let slice = log
        .read(offset, max_bytes, hw)
        .await
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let leo = log.log_end_offset();
    let expect_empty =
        offset >= hw.min(leo) || containing(batches, offset).is_none_or(|c| batches[c].last >= hw);
    if expect_empty {
        assert!(
            matches!(slice, ReadSlice::Empty),
            "{ctx}: expected empty, got {slice:?}"
        );
        return;
    }
    let c = containing(batches, offset).unwrap();
    let ReadSlice::File(fs) = &slice else {
        panic!("{ctx}: unexpected empty read")
    };
    assert_eq!(fs.first_batch_offset, batches[c].base, "{ctx}");
    let bytes = log.read_bytes(&slice).await.unwrap();
    assert_eq!(bytes.len() as u64, fs.len, "{ctx}");
    let mut at = 0;
    let mut k = c;
    while at < bytes.len() {
        let b = &batches[k];
        assert!(b.last < hw, "{ctx}: batch {} at or past hw", b.base);
        assert!(
            bytes[at..].starts_with(&b.bytes),
            "{ctx}: bytes of batch {} differ",
            b.base
        );
        at += b.bytes.len();
        k += 1;
    }
    assert_eq!(fs.last_offset, batches[k - 1].last, "{ctx}");
    if k - c > 1 {
        assert!(
            bytes.len() <= max_bytes,
            "{ctx}: {} bytes > max_bytes",
            bytes.len()
        );
    }
    if let Some(next) = batches.get(k) {
        let fits = bytes.len() + next.bytes.len() <= max_bytes;
        if fits && next.last < hw {
            assert!(
                segment_bases.contains(&next.base),
                "{ctx}: stopped before batch {} that fits",
                next.base
            );
        }
    }
}

/// All headers `scan_headers` reports from `from`.
pub async fn headers_from(log: &PartitionLog, from: i64) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    log.scan_headers(from, &mut |h| out.push(*h)).await.unwrap();
    out
}
