//! The log cleaner of one partition (compaction, Kafka's `LogCleaner` for one log): keeps the
//! latest record of every key in the closed segments and drops the rest, without blocking the
//! partition's appends or reads.
//!
//! One cleaning (`PartitionLog::clean`):
//! 1. **Range.** Only closed segments wholly below the first uncleanable offset (the caller's
//!    last stable offset / high watermark, the recovery point, the active segment, and
//!    `min.compaction.lag.ms`) are touched. The part from the *first dirty offset* (the end of
//!    the previous cleaning, the `cleaner-checkpoint` file) on is dirty.
//! 2. **Offset map.** The dirty segments are read (ring reads) and the last offset of every
//!    key is put in a map of 128-bit key hashes, at most `max_map_entries` keys (the caller
//!    derives it from `log.cleaner.dedupe.buffer.size`). When it is full the round ends at the
//!    segment where it filled.
//! 3. **Rewrite.** Every cleanable segment from the log start to the end of the round, in
//!    groups whose total size fits `segment.bytes`, is copied into `<base>.log.cleaned` keeping
//!    a record when its key's latest offset is its own (or its key is not in the map), and
//!    dropping: older versions of a key, records without a key, tombstones (null values) of a
//!    segment last written more than `delete.retention.ms` ago, the batches of aborted
//!    transactions, and transaction markers past that time whose transaction kept no data.
//!    Batches keep their offsets and codec (`protocol::compaction`); the last batch of a group
//!    and each producer's last batch (`retain_last_batch_of`) stay, emptied if need be, so a
//!    group ends where its last source ended and producer state survives. Indexes are built
//!    as the batches are written.
//! 4. **Swap** (under the writer lock, only if the source segments are still the log's):
//!    the `.cleaned` files are fdatasync'ed and renamed to `.swap` (indexes first, the `.log`
//!    last: a `.log.swap` is the commit point), the source segments' files are deleted, the
//!    `.swap` files renamed to their final names, the segment loaded and put in place of its
//!    sources. Recovery (`complete_swaps`, at open) deletes `.cleaned` files and `.swap` files
//!    without a `.log.swap`, and finishes every `.log.swap`: it deletes the segments the swap
//!    covers (base offsets from the swap's base to its last offset) and renames.
//!
//! Readers are never blocked: a fetch holding a source segment keeps reading its open
//! descriptor after the swap.

use std::cell::Cell;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use shardlog_protocol::batch::{self, BatchHeader, BATCH_HEADER_LEN};
use shardlog_protocol::compaction::StoredBatch;
use shardlog_protocol::records;
use shardlog_runtime::fs::BufferedFile;

use super::PartitionLog;
use crate::error::StorageError;
use crate::index::{self, IndexBuilder, OffsetEntry, TimeEntry};
use crate::policy::MAX_RELATIVE_OFFSET;
use crate::segment::{
    self, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX,
};
use crate::txn_index::{self, AbortedTxn};

/// Suffix of a file the cleaner is writing (deleted at open: the cleaning is rolled back).
pub const CLEANED_SUFFIX: &str = "cleaned";
/// Suffix of a file of a finished cleaning being swapped in (finished at open).
pub const SWAP_SUFFIX: &str = "swap";
/// The first dirty offset of the partition, kept between cleanings.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-checkpoint";
const CLEANER_CHECKPOINT_TMP_FILE: &str = "cleaner-checkpoint.tmp";

/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 1 << 20;
/// Bytes of cleaned batches gathered before a write.
const WRITE_CHUNK: usize = 1 << 20;
/// The largest decompressed batch body the cleaner decodes; a bigger (or undecodable) batch is
/// kept as it is.
const MAX_DECOMPRESSED: usize = 64 << 20;

/// What one cleaning may do. The broker fills it from the topic's settings and the partition's
/// state.
#[derive(Debug, Clone, Default)]
pub struct CleanParams {
    pub now_ms: i64,
    /// `delete.retention.ms`: tombstones (and markers) of a segment last written longer ago
    /// than this are removed.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a segment holding a record newer than this is not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: dirty data older than this is cleaned whatever the ratio.
    pub max_compaction_lag_ms: i64,
    /// The first offset the cleaner must not touch: the last stable offset (and at most the
    /// high watermark). Uncommitted or undecided data is never cleaned.
    pub first_unstable_offset: i64,
    /// Keys the offset map may hold: its memory bound (about 32 bytes per key).
    pub max_map_entries: usize,
    /// Producer id → the last offset of its last batch: that batch stays (maybe emptied), so
    /// the producer's state can be rebuilt from the log.
    pub retain_last_batch_of: HashMap<i64, i64>,
    /// Clean even when the dirty ratio is below `min_cleanable_dirty_ratio`.
    pub force: bool,
    /// Set by the owner to stop the cleaning at the next segment or group (shutdown): what is
    /// swapped in stays, the rest is left for the next cleaning.
    pub stop: Rc<Cell<bool>>,
}

/// How much of the log is cleanable now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanable {
    pub first_dirty_offset: i64,
    /// Segments below this index (in the log's list) may be cleaned.
    pub cleanable_segments: usize,
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// `dirty / (clean + dirty)`, 0 when nothing is cleanable.
    pub dirty_ratio: f64,
    /// The ratio or `max.compaction.lag.ms` asks for a cleaning.
    pub due: bool,
}

/// What a cleaning did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// The first dirty offset after the cleaning.
    pub cleaned_to: i64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    pub batches_removed: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    /// Groups that were rewritten and swapped in (a group with nothing to remove is not).
    pub groups_swapped: usize,
}

/// The 128-bit hash of a key (two SipHash-1-3 with different prefixes): two keys that collide
/// would lose the older one's latest value, so the hash is wide enough to make that as
/// unlikely as Kafka's MD5 does.
fn key_hash(key: &[u8]) -> u128 {
    let half = |prefix: u8| {
        let mut h = DefaultHasher::new();
        prefix.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// The aborted transactions of a producer, as (first offset, marker offset) ranges.
fn aborted_ranges(aborted: &[AbortedTxn]) -> HashMap<i64, Vec<(i64, i64)>> {
    let mut out: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    for a in aborted {
        out.entry(a.producer_id)
            .or_default()
            .push((a.first_offset, a.last_offset));
    }
    out
}

fn is_aborted(h: &BatchHeader, ranges: &HashMap<i64, Vec<(i64, i64)>>) -> bool {
    h.is_transactional()
        && !h.is_control()
        && ranges.get(&h.producer_id).is_some_and(|rs| {
            rs.iter()
                .any(|&(first, last)| first <= h.base_offset && h.base_offset < last)
        })
}

/// Whole batches of `seg` from `position` (below `size`): about `READ_CHUNK` bytes, or one
/// bigger batch. Never empty before `size`.
async fn read_batches(seg: &Segment, position: u64, size: u64) -> Result<Vec<u8>, StorageError> {
    let len = ((size - position) as usize).min(READ_CHUNK);
    let chunk = seg.log.read_at(position, len).await?;
    if chunk.len() < len {
        return Err(seg.corrupt("segment shrank under the cleaner"));
    }
    let mut whole = 0usize;
    for item in records::batches(&chunk) {
        let (at, _, bytes) = item.map_err(|e| seg.corrupt(format!("cleaner: {e}")))?;
        whole = at + bytes.len();
    }
    if whole > 0 {
        return Ok(chunk[..whole].to_vec());
    }
    let total = match batch::peek_total_len(&chunk) {
        Some(Ok(total)) if position + total as u64 <= size => total,
        _ => return Err(seg.corrupt(format!("cleaner: torn batch at byte {position}"))),
    };
    let big = seg.log.read_at(position, total).await?;
    if big.len() < total {
        return Err(seg.corrupt("segment shrank under the cleaner"));
    }
    Ok(big.to_vec())
}

/// Calls `f` with every batch of `seg` (its first `size` bytes), in order, a chunk at a time.
async fn each_batch(
    seg: &Segment,
    size: u64,
    mut f: impl FnMut(&BatchHeader, &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut position = 0u64;
    while position < size {
        let chunk = read_batches(seg, position, size).await?;
        for item in records::batches(&chunk) {
            let (_, h, bytes) = item.map_err(|e| seg.corrupt(format!("cleaner: {e}")))?;
            f(&h, bytes)?;
        }
        position += chunk.len() as u64;
        shardlog_runtime::yield_if_needed().await;
    }
    Ok(())
}

/// A group of consecutive source segments rewritten into one.
struct Group {
    /// Indexes in the log's segment list (at planning time).
    first: usize,
    sources: Vec<Rc<Segment>>,
}

/// What the offset map pass learned.
struct OffsetMap {
    latest: HashMap<u128, i64>,
    /// Segments below this index were wholly read into the map (or are clean): they are the
    /// round's range.
    end_segment: usize,
    /// The first dirty offset after this round.
    cleaned_to: i64,
}

/// Tracks, per producer, whether the transaction since its last marker kept any data: a
/// marker whose transaction kept nothing may go once past `delete.retention.ms`.
#[derive(Default)]
struct TxnTracker {
    kept_data: HashMap<i64, bool>,
}

/// The cleaned copy of one group, before its swap.
struct Cleaned {
    base: i64,
    log_bytes: u64,
    changed: bool,
    records_removed: u64,
    batches_removed: u64,
    bytes_read: u64,
}

impl PartitionLog {
    /// After a truncation to `end`: what lies at or above it is new data, dirty again.
    pub(super) async fn lower_first_dirty(&self, end: i64) -> Result<(), StorageError> {
        let mut cp = self.cleaner_cp.get();
        if cp.first_dirty > end {
            cp.first_dirty = end;
            self.store_cleaner_checkpoint(cp).await?;
        }
        Ok(())
    }

    async fn store_cleaner_checkpoint(&self, cp: CleanerCheckpoint) -> Result<(), StorageError> {
        if cp != self.cleaner_cp.get() {
            write_cleaner_checkpoint(&self.dir, cp).await?;
            self.dir_handle.sync().await?;
            self.cleaner_cp.set(cp);
        }
        Ok(())
    }

    /// Offsets below `end` came from a log cleaned elsewhere (a follower appending its leader's
    /// cleaned range, with gaps): they count as cleaned, so recovery accepts their gaps.
    pub(super) async fn cleaned_elsewhere(&self, end: i64) -> Result<(), StorageError> {
        let mut cp = self.cleaner_cp.get();
        cp.sparse_below = cp.sparse_below.max(end);
        self.store_cleaner_checkpoint(cp).await
    }

    /// The first offset not yet cleaned (the log start when the partition was never cleaned).
    pub fn first_dirty_offset(&self) -> i64 {
        self.cleaner_cp
            .get()
            .first_dirty
            .clamp(self.log_start_offset.get(), self.log_end_offset.get())
    }

    /// How much is cleanable now, and whether a cleaning is due.
    pub fn cleanable(&self, p: &CleanParams) -> Cleanable {
        self.take_synced_progress();
        let segs = self.segments.borrow();
        let first_dirty = self.first_dirty_offset();
        let lag_bound = p.now_ms.saturating_sub(p.min_compaction_lag_ms);
        let limit = p
            .first_unstable_offset
            .min(self.recovery_point.get())
            .min(self.log_end_offset.get());
        let mut n = 0;
        for (i, s) in segs.iter().enumerate() {
            let st = s.state.borrow();
            let is_active = i + 1 == segs.len();
            let too_new = st.builder.max_timestamp() > lag_bound
                || (st.builder.max_timestamp() < 0 && st.last_modified_ms > lag_bound);
            if is_active || st.next_offset > limit || st.size == 0 || too_new {
                break;
            }
            n = i + 1;
        }
        let (mut clean_bytes, mut dirty_bytes, mut oldest_dirty) = (0u64, 0u64, None);
        for s in &segs[..n] {
            let st = s.state.borrow();
            if st.next_offset <= first_dirty {
                clean_bytes += st.size;
            } else {
                dirty_bytes += st.size;
                oldest_dirty = oldest_dirty.or(st.first_batch_timestamp);
            }
        }
        let total = clean_bytes + dirty_bytes;
        let dirty_ratio = if total == 0 {
            0.0
        } else {
            dirty_bytes as f64 / total as f64
        };
        let overdue = oldest_dirty
            .is_some_and(|t| t >= 0 && p.now_ms.saturating_sub(t) > p.max_compaction_lag_ms);
        Cleanable {
            first_dirty_offset: first_dirty,
            cleanable_segments: n,
            clean_bytes,
            dirty_bytes,
            dirty_ratio,
            due: dirty_bytes > 0
                && (p.force || dirty_ratio >= p.min_cleanable_dirty_ratio || overdue),
        }
    }

    /// Cleans the log if a cleaning is due (see the module documentation). `None` when
    /// nothing was due.
    pub async fn clean(&self, p: &CleanParams) -> Result<Option<CleanStats>, StorageError> {
        let plan = self.cleanable(p);
        if !plan.due {
            return Ok(None);
        }
        let segments: Vec<Rc<Segment>> = self.segments.borrow()[..plan.cleanable_segments].to_vec();
        let aborted = aborted_ranges(&self.aborted_txns());
        let map = build_offset_map(&segments, plan.first_dirty_offset, &aborted, p).await?;
        if map.end_segment == 0 {
            return Ok(None);
        }
        let mut stats = CleanStats {
            cleaned_to: map.cleaned_to,
            segments_before: self.segments.borrow().len(),
            ..CleanStats::default()
        };
        // Stored before any swap: recovery accepts offset gaps below it only.
        let mut cp = self.cleaner_cp.get();
        cp.sparse_below = cp.sparse_below.max(map.cleaned_to);
        self.store_cleaner_checkpoint(cp).await?;
        let cfg = self.cfg.get();
        let mut tracker = TxnTracker::default();
        // Each swap replaces a group's sources by one segment: later groups move down.
        let mut shift = 0;
        for mut group in plan_groups(&segments[..map.end_segment], cfg.segment_bytes) {
            if p.stop.get() {
                stats.segments_after = self.segments.borrow().len();
                return Ok(Some(stats));
            }
            group.first -= shift;
            let cleaned = self
                .write_cleaned(&group, &map, &aborted, &mut tracker, p)
                .await?;
            stats.bytes_read += cleaned.bytes_read;
            stats.records_removed += cleaned.records_removed;
            stats.batches_removed += cleaned.batches_removed;
            if !cleaned.changed {
                self.discard_cleaned(cleaned.base).await?;
                continue;
            }
            stats.bytes_written += cleaned.log_bytes;
            if self.swap_in(&group, &cleaned).await? {
                stats.groups_swapped += 1;
                shift += group.sources.len() - 1;
            } else {
                // The log changed under the cleaner (truncation, retention): stop this round.
                self.discard_cleaned(cleaned.base).await?;
                stats.segments_after = self.segments.borrow().len();
                return Ok(Some(stats));
            }
        }
        cp.first_dirty = map.cleaned_to;
        self.store_cleaner_checkpoint(cp).await?;
        stats.segments_after = self.segments.borrow().len();
        Ok(Some(stats))
    }

    /// Copies one group into `<base>.*.cleaned` files, fdatasync'ed.
    async fn write_cleaned(
        &self,
        group: &Group,
        map: &OffsetMap,
        aborted: &HashMap<i64, Vec<(i64, i64)>>,
        tracker: &mut TxnTracker,
        p: &CleanParams,
    ) -> Result<Cleaned, StorageError> {
        let base = group.sources[0].base_offset;
        let cfg = self.cfg.get();
        let log_path = cleaned_path(&self.dir, base, LOG_SUFFIX);
        let out = segment::open_rw(&log_path, true).await?;
        let mut w = CleanedWriter {
            file: &out,
            pending: Vec::with_capacity(WRITE_CHUNK),
            written: 0,
            builder: IndexBuilder::default(),
            offsets: Vec::new(),
            times: Vec::new(),
            base,
            interval: cfg.index_interval_bytes,
        };
        let mut c = Cleaned {
            base,
            log_bytes: 0,
            changed: false,
            records_removed: 0,
            batches_removed: 0,
            bytes_read: 0,
        };
        let mut kept_markers: Vec<i64> = Vec::new();
        let mut last_modified = i64::MIN;
        let horizon = p.now_ms.saturating_sub(p.delete_retention_ms);
        let n = group.sources.len();
        for (i, seg) in group.sources.iter().enumerate() {
            let (size, modified, seg_last) = {
                let st = seg.state.borrow();
                (st.size, st.last_modified_ms, st.next_offset - 1)
            };
            last_modified = last_modified.max(modified);
            let expired = modified <= horizon;
            let mut position = 0u64;
            while position < size {
                let chunk = read_batches(seg, position, size).await?;
                for item in records::batches(&chunk) {
                    let (_, h, bytes) = item.map_err(|e| seg.corrupt(format!("cleaner: {e}")))?;
                    let must_stay = (i + 1 == n && h.last_offset() == seg_last)
                        || p.retain_last_batch_of.get(&h.producer_id) == Some(&h.last_offset());
                    match clean_batch(&h, bytes, map, aborted, tracker, expired, must_stay)? {
                        BatchOutcome::Keep => {
                            if h.is_control() {
                                kept_markers.push(h.base_offset);
                            }
                            w.push(bytes.to_vec()).await?;
                        }
                        BatchOutcome::Rewritten { bytes: b, removed } => {
                            c.records_removed += removed;
                            w.push(b).await?;
                        }
                        BatchOutcome::Drop { records } => {
                            c.records_removed += records;
                            c.batches_removed += 1;
                        }
                    }
                }
                position += chunk.len() as u64;
                shardlog_runtime::yield_if_needed().await;
            }
            c.bytes_read += size;
        }
        w.flush().await?;
        c.log_bytes = w.written;
        c.changed = c.log_bytes != c.bytes_read || c.records_removed > 0;
        // Keep the mtime of the sources: the tombstone horizon counts from the last write.
        let modified = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(last_modified).unwrap_or(0));
        if c.changed {
            let last_time = w.builder.finalize();
            w.times.extend(last_time);
            out.fdatasync().await?;
            let mut bytes = Vec::new();
            index::encode_offset_entries(&w.offsets, &mut bytes);
            write_synced(&cleaned_path(&self.dir, base, INDEX_SUFFIX), bytes).await?;
            let mut bytes = Vec::new();
            index::encode_time_entries(&w.times, &mut bytes);
            write_synced(&cleaned_path(&self.dir, base, TIME_INDEX_SUFFIX), bytes).await?;
            let entries: Vec<AbortedTxn> = group
                .sources
                .iter()
                .flat_map(|s| s.aborted.borrow().clone())
                .filter(|a| kept_markers.contains(&a.last_offset))
                .collect();
            if !entries.is_empty() {
                let mut bytes = Vec::new();
                txn_index::encode_entries(&entries, &mut bytes);
                write_synced(&cleaned_path(&self.dir, base, TXN_INDEX_SUFFIX), bytes).await?;
            }
            let path = log_path.clone();
            shardlog_runtime::blocking(move || {
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(modified))
            })
            .await?;
        }
        out.close().await?;
        Ok(c)
    }

    async fn discard_cleaned(&self, base: i64) -> Result<(), StorageError> {
        for suffix in [
            LOG_SUFFIX,
            INDEX_SUFFIX,
            TIME_INDEX_SUFFIX,
            TXN_INDEX_SUFFIX,
        ] {
            segment::remove_if_exists(&cleaned_path(&self.dir, base, suffix)).await?;
        }
        Ok(())
    }

    /// Swaps a cleaned group in for its sources (see the module documentation). `false` when
    /// the sources are no longer the log's (nothing is changed then).
    async fn swap_in(&self, group: &Group, cleaned: &Cleaned) -> Result<bool, StorageError> {
        let _permit = self.lock().await;
        let still_there = {
            let segs = self.segments.borrow();
            group
                .sources
                .iter()
                .enumerate()
                .all(|(k, s)| segs.get(group.first + k).is_some_and(|t| Rc::ptr_eq(s, t)))
                && group.first + group.sources.len() < segs.len()
        };
        if !still_there {
            return Ok(false);
        }
        let base = cleaned.base;
        let dir = &self.dir;
        let indexes = [INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX];
        crash_point(0)?;
        for suffix in indexes {
            let from = cleaned_path(dir, base, suffix);
            if from.exists() {
                shardlog_runtime::fs::rename(&from, &swap_path(dir, base, suffix)).await?;
            }
        }
        crash_point(1)?;
        let (cleaned_log, swap_log) = (
            cleaned_path(dir, base, LOG_SUFFIX),
            swap_path(dir, base, LOG_SUFFIX),
        );
        shardlog_runtime::fs::rename(&cleaned_log, &swap_log).await?;
        self.dir_handle.sync().await?;
        crash_point(2)?;
        crate::stats::bump(&crate::stats::CLEANER_SWAPS);
        for s in &group.sources {
            s.delete_files().await?;
            crash_point(3)?;
        }
        crash_point(4)?;
        for suffix in indexes {
            let from = swap_path(dir, base, suffix);
            if from.exists() {
                shardlog_runtime::fs::rename(&from, &dir.join(segment::file_name(base, suffix)))
                    .await?;
            }
        }
        crash_point(5)?;
        shardlog_runtime::fs::rename(&swap_log, &dir.join(segment::file_name(base, LOG_SUFFIX)))
            .await?;
        self.dir_handle.sync().await?;
        crash_point(6)?;
        let seg = Rc::new(Segment::open(dir, base, super::now_ms()).await?);
        let outcome = seg
            .load(false, self.cfg.get().index_interval_bytes, false)
            .await?;
        if let Some(damage) = outcome.damage {
            return Err(seg.corrupt(format!("cleaned segment does not load: {damage}")));
        }
        // A closed segment: its index stays in the files, read page by page.
        seg.retire_index();
        let removed: Vec<Rc<Segment>> = {
            let mut segs = self.segments.borrow_mut();
            let range = group.first..group.first + group.sources.len();
            segs.splice(range, std::iter::once(seg.clone())).collect()
        };
        let freed: u64 = removed.iter().map(|s| s.size()).sum();
        self.size_bytes
            .set(self.size_bytes.get() - freed + seg.size());
        for s in removed {
            s.close().await?;
        }
        Ok(true)
    }
}

thread_local! {
    static CRASH_AT: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// The number of crash points in a swap (`crash_at_swap_step` takes `0..SWAP_STEPS`).
pub const SWAP_STEPS: u32 = 7;

/// Test hook: cleanings on this thread fail at `step` of their swap as if the process died
/// there (0: cleaned files written; 1: indexes renamed to `.swap`; 2: `.log.swap` made (the
/// commit point); 3: after each source deleted; 4: all sources deleted; 5: indexes renamed to
/// their names; 6: `.log` renamed). The log must then be dropped and opened again, as after a
/// crash. `None` turns it off.
#[doc(hidden)]
pub fn crash_at_swap_step(step: Option<u32>) {
    CRASH_AT.with(|c| c.set(step));
}

fn crash_point(step: u32) -> Result<(), StorageError> {
    if CRASH_AT.with(|c| c.get()) == Some(step) {
        return Err(StorageError::Io(std::io::Error::other(format!(
            "simulated crash at cleaner swap step {step}"
        ))));
    }
    Ok(())
}

/// What happens to one batch.
enum BatchOutcome {
    Keep,
    Rewritten { bytes: Vec<u8>, removed: u64 },
    Drop { records: u64 },
}

fn clean_batch(
    h: &BatchHeader,
    bytes: &[u8],
    map: &OffsetMap,
    aborted: &HashMap<i64, Vec<(i64, i64)>>,
    tracker: &mut TxnTracker,
    expired: bool,
    must_stay: bool,
) -> Result<BatchOutcome, StorageError> {
    let records = u64::try_from(h.records_count).unwrap_or(0);
    let empty = || -> Result<BatchOutcome, StorageError> {
        let parsed = StoredBatch::parse(bytes, MAX_DECOMPRESSED);
        match parsed {
            Ok(s) => {
                let b = s
                    .rebuild(&vec![false; s.records.len()])
                    .map_err(|e| StorageError::InvalidAppend(e.to_string()))?;
                Ok(BatchOutcome::Rewritten {
                    bytes: b,
                    removed: records,
                })
            }
            Err(_) => Ok(BatchOutcome::Keep),
        }
    };
    if h.is_control() {
        let kept_data = tracker.kept_data.remove(&h.producer_id).unwrap_or(false);
        if expired && !kept_data && !must_stay {
            return Ok(BatchOutcome::Drop { records });
        }
        return Ok(BatchOutcome::Keep);
    }
    if is_aborted(h, aborted) {
        return if must_stay {
            empty()
        } else {
            Ok(BatchOutcome::Drop { records })
        };
    }
    if records == 0 {
        return Ok(if must_stay {
            BatchOutcome::Keep
        } else {
            BatchOutcome::Drop { records: 0 }
        });
    }
    let Ok(stored) = StoredBatch::parse(bytes, MAX_DECOMPRESSED) else {
        log::warn!(
            "cleaner: keeping undecodable batch at offset {} as it is",
            h.base_offset
        );
        return Ok(BatchOutcome::Keep);
    };
    let keep: Vec<bool> = stored
        .records
        .iter()
        .map(|r| {
            let Some(key) = stored.key(r) else {
                return false;
            };
            let latest = map
                .latest
                .get(&key_hash(key))
                .is_none_or(|&o| r.offset >= o);
            latest && !(r.null_value && expired)
        })
        .collect();
    let kept = keep.iter().filter(|k| **k).count() as u64;
    if kept > 0 && h.is_transactional() {
        tracker.kept_data.insert(h.producer_id, true);
    }
    if kept == records {
        return Ok(BatchOutcome::Keep);
    }
    if kept == 0 && !must_stay {
        return Ok(BatchOutcome::Drop { records });
    }
    let rebuilt = stored
        .rebuild(&keep)
        .map_err(|e| StorageError::InvalidAppend(e.to_string()))?;
    Ok(BatchOutcome::Rewritten {
        bytes: rebuilt,
        removed: records - kept,
    })
}

/// Reads the dirty segments into the offset map, up to `max_map_entries` keys.
async fn build_offset_map(
    segments: &[Rc<Segment>],
    first_dirty: i64,
    aborted: &HashMap<i64, Vec<(i64, i64)>>,
    p: &CleanParams,
) -> Result<OffsetMap, StorageError> {
    let mut latest: HashMap<u128, i64> = HashMap::new();
    let mut end_segment = 0;
    let mut cleaned_to = first_dirty;
    for (i, seg) in segments.iter().enumerate() {
        let (size, next) = {
            let st = seg.state.borrow();
            (st.size, st.next_offset)
        };
        if next <= first_dirty {
            end_segment = i + 1;
            continue;
        }
        if p.stop.get() {
            break;
        }
        let mut full = false;
        each_batch(seg, size, |h, bytes| {
            if full || h.is_control() || h.last_offset() < first_dirty || is_aborted(h, aborted) {
                return Ok(());
            }
            let Ok(stored) = StoredBatch::parse(bytes, MAX_DECOMPRESSED) else {
                return Ok(());
            };
            for r in &stored.records {
                let Some(key) = stored.key(r) else { continue };
                let hash = key_hash(key);
                if latest.len() >= p.max_map_entries && !latest.contains_key(&hash) {
                    full = true;
                    return Ok(());
                }
                latest.insert(hash, r.offset);
            }
            Ok(())
        })
        .await?;
        if full {
            if end_segment == 0 || segments[end_segment - 1].next_offset() <= first_dirty {
                log::warn!(
                    "{}: the cleaner's offset map ({} keys) cannot hold one segment's keys; \
                     raise log.cleaner.dedupe.buffer.size",
                    seg.dir().display(),
                    p.max_map_entries
                );
            }
            break;
        }
        end_segment = i + 1;
        cleaned_to = next;
    }
    if cleaned_to <= first_dirty {
        end_segment = 0;
    }
    Ok(OffsetMap {
        latest,
        end_segment,
        cleaned_to,
    })
}

/// Consecutive non-empty segments in groups of at most `segment_bytes` bytes whose offsets fit
/// one segment's relative range.
fn plan_groups(segments: &[Rc<Segment>], segment_bytes: u64) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut current: Option<(Group, u64)> = None;
    for (i, s) in segments.iter().enumerate() {
        let (size, next) = (s.size(), s.next_offset());
        if size == 0 {
            groups.extend(current.take().map(|(g, _)| g));
            continue;
        }
        if let Some((g, bytes)) = &mut current {
            let fits = *bytes + size <= segment_bytes
                && next - 1 - g.sources[0].base_offset <= MAX_RELATIVE_OFFSET;
            if fits {
                g.sources.push(s.clone());
                *bytes += size;
                continue;
            }
        }
        groups.extend(current.take().map(|(g, _)| g));
        current = Some((
            Group {
                first: i,
                sources: vec![s.clone()],
            },
            size,
        ));
    }
    groups.extend(current.map(|(g, _)| g));
    groups
}

/// The cleaned `.log` being written, and its indexes built along.
struct CleanedWriter<'a> {
    file: &'a BufferedFile,
    pending: Vec<u8>,
    written: u64,
    builder: IndexBuilder,
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
    base: i64,
    interval: u32,
}

impl CleanedWriter<'_> {
    async fn push(&mut self, batch_bytes: Vec<u8>) -> Result<(), StorageError> {
        let h = BatchHeader::parse(&batch_bytes).expect("a whole batch");
        let position = self.written + self.pending.len() as u64;
        let (o, t) = self.builder.on_batch(
            (h.base_offset - self.base) as u32,
            position as u32,
            batch_bytes.len() as u64,
            h.max_timestamp,
            self.interval,
        );
        self.offsets.extend(o);
        self.times.extend(t);
        self.pending.extend_from_slice(&batch_bytes);
        if self.pending.len() >= WRITE_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StorageError> {
        let bytes = std::mem::take(&mut self.pending);
        let len = bytes.len() as u64;
        segment::write_all(self.file, bytes, self.written).await?;
        self.written += len;
        Ok(())
    }
}

async fn write_synced(path: &Path, bytes: Vec<u8>) -> Result<(), StorageError> {
    let file = segment::open_rw(path, true).await?;
    let r = segment::write_all(&file, bytes, 0).await;
    let synced = match r {
        Ok(()) => file.fdatasync().await.map_err(StorageError::from),
        Err(e) => Err(e),
    };
    file.close().await?;
    synced
}

fn cleaned_path(dir: &Path, base: i64, suffix: &str) -> PathBuf {
    dir.join(format!(
        "{}.{CLEANED_SUFFIX}",
        segment::file_name(base, suffix)
    ))
}

fn swap_path(dir: &Path, base: i64, suffix: &str) -> PathBuf {
    dir.join(format!(
        "{}.{SWAP_SUFFIX}",
        segment::file_name(base, suffix)
    ))
}

/// The cleaner's state of a partition (`cleaner-checkpoint`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanerCheckpoint {
    /// Offsets below it were cleaned (the log start when never cleaned).
    pub first_dirty: i64,
    /// Offsets below it may have gaps (a cleaning swapped segments in, or a follower copied its
    /// leader's cleaned range); recovery requires dense offsets at and above it.
    pub sparse_below: i64,
}

/// Reads the cleaner's checkpoint (zeros when missing or malformed).
pub fn read_cleaner_checkpoint(dir: &Path) -> CleanerCheckpoint {
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return CleanerCheckpoint::default();
    };
    let mut lines = text.lines();
    let header = lines.next();
    let mut value = |name: &str| {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v >= 0)
    };
    match (header, value("first_dirty"), value("sparse_below")) {
        (Some("shardlog-cleaner-checkpoint 1"), Some(first_dirty), Some(sparse_below)) => {
            CleanerCheckpoint {
                first_dirty,
                sparse_below,
            }
        }
        _ => {
            // Unknown: every offset may have gaps (the safe side), nothing counts as cleaned.
            log::warn!("ignoring malformed {}", path.display());
            CleanerCheckpoint {
                first_dirty: 0,
                sparse_below: i64::MAX,
            }
        }
    }
}

/// Stores the cleaner's checkpoint durably (temporary file, fdatasync, rename): `sparse_below`
/// must be on disk before the swaps it allows.
async fn write_cleaner_checkpoint(dir: &Path, cp: CleanerCheckpoint) -> Result<(), StorageError> {
    let tmp = dir.join(CLEANER_CHECKPOINT_TMP_FILE);
    let file = segment::open_rw(&tmp, true).await?;
    let text = format!(
        "shardlog-cleaner-checkpoint 1\nfirst_dirty {}\nsparse_below {}\n",
        cp.first_dirty, cp.sparse_below
    );
    let r = match segment::write_all(&file, text.into_bytes(), 0).await {
        Ok(()) => file.fdatasync().await.map_err(StorageError::from),
        Err(e) => Err(e),
    };
    file.close().await?;
    r?;
    shardlog_runtime::fs::rename(&tmp, &dir.join(CLEANER_CHECKPOINT_FILE)).await?;
    Ok(())
}

/// Whether `name` is one of the cleaner's files that `complete_swaps` handles.
pub fn is_cleaner_file(name: &str) -> bool {
    name.ends_with(&format!(".{CLEANED_SUFFIX}"))
        || name.ends_with(&format!(".{SWAP_SUFFIX}"))
        || name == CLEANER_CHECKPOINT_FILE
        || name == CLEANER_CHECKPOINT_TMP_FILE
}

/// Recovery of interrupted cleanings, before the segments are listed: `.cleaned` files are
/// deleted (rolled back); a `.log.swap` is finished (the segments it covers are deleted, its
/// files renamed); other `.swap` files without their `.log.swap` are deleted. Returns whether
/// the directory changed.
pub async fn complete_swaps(dir: &Path) -> Result<bool, StorageError> {
    let mut log_swaps = Vec::new();
    let mut other = Vec::new();
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == CLEANER_CHECKPOINT_TMP_FILE || name.ends_with(&format!(".{CLEANED_SUFFIX}")) {
            other.push((None, name.to_string()));
        } else if let Some(stem) = name.strip_suffix(&format!(".{SWAP_SUFFIX}")) {
            match segment::parse_file_name(stem) {
                Some((base, LOG_SUFFIX)) => log_swaps.push(base),
                Some((base, _)) => other.push((Some(base), name.to_string())),
                None => other.push((None, name.to_string())),
            }
        } else if let Some((base, LOG_SUFFIX)) = segment::parse_file_name(name) {
            logs.push(base);
        }
    }
    let changed = !log_swaps.is_empty() || !other.is_empty();
    for (base, name) in other {
        if base.is_some_and(|b| log_swaps.contains(&b)) {
            continue;
        }
        log::warn!("{}: removing unfinished cleaner file {name}", dir.display());
        segment::remove_if_exists(&dir.join(name)).await?;
    }
    for base in log_swaps {
        let swap = swap_path(dir, base, LOG_SUFFIX);
        let last = last_offset_of(&swap).await?;
        log::warn!(
            "{}: finishing the swap of cleaned segment {base} (offsets to {last})",
            dir.display()
        );
        for &old in logs.iter().filter(|&&b| b >= base && b <= last) {
            for suffix in [
                LOG_SUFFIX,
                INDEX_SUFFIX,
                TIME_INDEX_SUFFIX,
                TXN_INDEX_SUFFIX,
            ] {
                segment::remove_if_exists(&dir.join(segment::file_name(old, suffix))).await?;
            }
        }
        for suffix in [
            INDEX_SUFFIX,
            TIME_INDEX_SUFFIX,
            TXN_INDEX_SUFFIX,
            LOG_SUFFIX,
        ] {
            let from = swap_path(dir, base, suffix);
            if from.exists() {
                shardlog_runtime::fs::rename(&from, &dir.join(segment::file_name(base, suffix)))
                    .await?;
            }
        }
    }
    Ok(changed)
}

/// The last offset of the last batch of a (synced, whole) cleaned `.log`.
async fn last_offset_of(path: &Path) -> Result<i64, StorageError> {
    let file = shardlog_runtime::fs::OpenOptions::new()
        .read(true)
        .buffered_open(path)
        .await?;
    let size = file.file_size().await?;
    let mut position = 0u64;
    let mut last = -1i64;
    while position + BATCH_HEADER_LEN as u64 <= size {
        let head = file.read_at(position, BATCH_HEADER_LEN).await?;
        let Ok(h) = BatchHeader::parse(&head) else {
            break;
        };
        if h.batch_length <= 0 {
            break;
        }
        last = h.last_offset();
        position += h.total_len() as u64;
    }
    file.close().await?;
    Ok(last)
}
