//! `PartitionLog`: one partition's segmented log on its shard.
//!
//! Lives on one glommio executor and is not `Send`: state sits in `Cell`/`RefCell` and methods
//! take `&self`, so reads can run while an append is in flight. No `RefCell` borrow is ever held
//! across an `.await`.
//!
//! Concurrency contract:
//! - Mutations (append, roll, retention, DeleteRecords, truncation, flush) are serialized by an
//!   internal writer lock; the caller additionally guarantees a single appender (offsets were
//!   assigned from `log_end_offset()`), which `append` debug-asserts.
//! - Reads (`read`, `read_bytes`, `offset_for_timestamp`, `scan_headers`) take no lock. They copy
//!   a segment's published size and index lookups before their first `.await`, and an append
//!   publishes size, indexes and then the log end offset only after its writes completed, so a
//!   read only ever sees whole batches.

use std::cell::{Cell, RefCell};
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::future::zip;
use shardlog_protocol::batch::{self, BatchHeader, BATCH_HEADER_LEN, LOG_OVERHEAD};
use shardlog_runtime::{Permit, Semaphore};

use crate::checkpoint::{
    self, Checkpoint, DirHandle, CHECKPOINT_FILE, CHECKPOINT_TMP_FILE, HIGH_WATERMARK_FILE,
    HIGH_WATERMARK_TMP_FILE,
};
use crate::config::LogConfig;
use crate::error::StorageError;
use crate::index::{self, NO_TIMESTAMP};
use crate::index_cache::IndexKind;
use crate::policy::{self, IncomingAppend, MAX_SEGMENT_BYTES};
use crate::scan::{self, WalkError};
use crate::segment::{
    self, Segment, SegmentFiles, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX,
};
use crate::txn_index::{self, AbortedTxn};
use shardlog_protocol::batch::ControlRecord;

pub mod cleaner;

/// One batch of an append buffer, as the produce path parsed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// Byte position of the batch in the append buffer.
    pub position: usize,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

impl BatchMeta {
    pub fn from_header(position: usize, header: &BatchHeader) -> BatchMeta {
        BatchMeta {
            position,
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        }
    }
}

/// Describes every batch of a buffer of whole batches (headers only, no CRC check).
pub fn batch_metas(buf: &[u8]) -> Result<Vec<BatchMeta>, StorageError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let bad = |why: String| StorageError::InvalidAppend(format!("batch at byte {pos}: {why}"));
        let total = match batch::peek_total_len(&buf[pos..]) {
            None => return Err(bad("truncated".into())),
            Some(r) => r.map_err(|e| bad(e.to_string()))?,
        };
        if pos + total > buf.len() {
            return Err(bad("truncated".into()));
        }
        let header = BatchHeader::parse(&buf[pos..pos + total]).map_err(|e| bad(e.to_string()))?;
        out.push(BatchMeta::from_header(pos, &header));
        pos += total;
    }
    Ok(out)
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Wall clock of the append (the LogAppendTime a produce response reports).
    pub append_time_ms: i64,
    pub log_start_offset: i64,
}

/// Whole batches of one segment file, for a Fetch response (`sendfile`) or `read_bytes`.
#[derive(Debug, Clone)]
pub struct FileSlice {
    /// Read-only descriptor of the segment's `.log`. Shareable across threads; it stays valid
    /// even if retention deletes the segment meanwhile.
    pub file: Arc<std::fs::File>,
    pub segment_base_offset: i64,
    pub position: u64,
    pub len: u64,
    /// Base offset of the first batch (at or below the requested offset).
    pub first_batch_offset: i64,
    /// Last offset of the last batch.
    pub last_offset: i64,
}

/// What `read` found.
#[derive(Debug, Clone)]
pub enum ReadSlice {
    /// Nothing to return yet (at the end of the log or of what `max_offset_exclusive` allows).
    Empty,
    File(FileSlice),
}

impl ReadSlice {
    pub fn len(&self) -> u64 {
        match self {
            ReadSlice::Empty => 0,
            ReadSlice::File(f) => f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A segment as seen from outside (tools, tests, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: i64,
    pub next_offset: i64,
    pub size_bytes: u64,
    pub max_timestamp: i64,
}

/// One partition's log. See the module documentation for the concurrency contract.
pub struct PartitionLog {
    dir: PathBuf,
    dir_handle: DirHandle,
    cfg: Cell<LogConfig>,
    /// Sorted by base offset; contiguous (each base is the previous segment's next offset);
    /// the last one is the active segment. Never empty outside `truncate_fully`.
    segments: RefCell<Vec<Rc<Segment>>>,
    log_start_offset: Cell<i64>,
    log_end_offset: Cell<i64>,
    size_bytes: Cell<u64>,
    /// Every offset below it is fdatasync'ed (persisted in the checkpoint at roll and close).
    recovery_point: Cell<i64>,
    unflushed_messages: Cell<u64>,
    last_flush_ms: Cell<i64>,
    writer: Semaphore,
    appending: Cell<bool>,
    /// The fdatasync of the last rolled segment, running in the background so that appends
    /// to the new segment never wait for it (Kafka flushes rolled segments asynchronously
    /// too). It sets `recovery_point` past that segment when done. Awaited before anything
    /// that moves the recovery point itself (flush, close, truncation) and at the next roll.
    pending_sync: RefCell<Option<shardlog_runtime::Task<()>>>,
    /// Shared with `pending_sync`'s task, which may only advance the recovery point.
    recovery_point_shared: Rc<Cell<i64>>,
    /// The log cleaner's progress and where offsets may have gaps (`cleaner-checkpoint`).
    cleaner_cp: Cell<cleaner::CleanerCheckpoint>,
}

struct ResetOnDrop<'a>(&'a Cell<bool>);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    /// Opens the partition directory, creating it if needed. With `clean_shutdown == false`
    /// every segment from the one holding the recovery point on is replayed and validated,
    /// and the closed segments below it have the tail after their last index entries
    /// validated; after a clean shutdown the closed segments are not read at all (only their
    /// largest timestamp, the last time index entry), and the active one has its tail
    /// validated. The log is cut at the first bad batch and every later segment is deleted,
    /// so offsets stay dense. Closed segments keep no index entries in memory. See
    /// `FORMAT.md`, "Recovery".
    pub async fn open(
        dir: PathBuf,
        cfg: LogConfig,
        clean_shutdown: bool,
    ) -> Result<PartitionLog, StorageError> {
        cfg.validate()?;
        std::fs::create_dir_all(&dir)?;
        let dir_handle = DirHandle::new(&dir);
        let now = now_ms();
        let swapped = cleaner::complete_swaps(&dir).await?;
        let cleaner_cp = cleaner::read_cleaner_checkpoint(&dir);
        let (listing, mut dir_changed) = scan_directory(&dir).await?;
        dir_changed |= swapped;
        let bases: Vec<i64> = listing.iter().map(|(base, _)| *base).collect();
        let cp = checkpoint::read(&dir)?;
        let recovery_point = cp.map_or(i64::MIN, |c| c.recovery_point);
        // Segments at or after this base are replayed in full (None = after a clean shutdown),
        // the one holding the recovery point only from there.
        let recover_from = if clean_shutdown {
            None
        } else {
            let rp = cp.map_or(i64::MIN, |c| c.recovery_point);
            Some(
                bases
                    .iter()
                    .copied()
                    .filter(|b| *b <= rp)
                    .max()
                    .unwrap_or(i64::MIN),
            )
        };

        let mut segments: Vec<Rc<Segment>> = Vec::with_capacity(bases.len());
        let mut replayed = Vec::new();
        let mut keep = bases.len();
        for (i, &base) in bases.iter().enumerate() {
            if let Some(prev) = segments.last() {
                if prev.next_offset() != base {
                    log::warn!(
                        "{}: segment {base} does not continue the previous one (ends at {}); dropping it and all later segments",
                        dir.display(),
                        prev.next_offset()
                    );
                    keep = i;
                    crate::stats::bump(&crate::stats::RECOVERY_TRUNCATIONS);
                    break;
                }
            }
            let seg = Rc::new(Segment::open(&dir, base, now).await?);
            let full = recover_from.is_some_and(|r| base >= r);
            // Below the cleaner's progress offsets may have gaps; elsewhere they are dense,
            // which also catches a damaged base offset (outside the CRC).
            let dense = base >= cleaner_cp.sparse_below;
            let outcome = match bases.get(i + 1) {
                // A closed segment: its index files are not read whole, nor kept.
                Some(&next_base) if !full => {
                    seg.load_closed(
                        next_base,
                        !clean_shutdown,
                        listing[i].1,
                        cfg.index_interval_bytes,
                        dense,
                    )
                    .await?
                }
                // The segment holding the recovery point: synced below it.
                _ if full && base == recover_from.unwrap_or(i64::MIN) && base < recovery_point => {
                    seg.load_synced_below(recovery_point, cfg.index_interval_bytes, dense)
                        .await?
                }
                _ => seg.load(full, cfg.index_interval_bytes, dense).await?,
            };
            if outcome.replayed_from_start {
                replayed.push(seg.clone());
            }
            if outcome.damage.is_none() && i + 1 < bases.len() {
                seg.retire_index();
            }
            segments.push(seg);
            if let Some(damage) = outcome.damage {
                log::warn!(
                    "{}: log cut in segment {base} ({damage}); later segments are dropped",
                    dir.display()
                );
                keep = i + 1;
                crate::stats::bump(&crate::stats::RECOVERY_TRUNCATIONS);
                break;
            }
        }
        for &base in bases[keep..].iter().rev() {
            for suffix in [
                LOG_SUFFIX,
                INDEX_SUFFIX,
                TIME_INDEX_SUFFIX,
                TXN_INDEX_SUFFIX,
            ] {
                segment::remove_if_exists(&dir.join(segment::file_name(base, suffix))).await?;
            }
            dir_changed = true;
        }
        match segments.last() {
            Some(active) => {
                // The last segment kept (after a cut, maybe one loaded as closed) is the active
                // one: its entries are in memory.
                if active.is_closed() {
                    let dense = active.base_offset >= cleaner_cp.sparse_below;
                    let outcome = active.load(false, cfg.index_interval_bytes, dense).await?;
                    if outcome.replayed_from_start {
                        replayed.push(active.clone());
                    }
                }
            }
            None => {
                let base = cp.map_or(0, |c| c.log_start_offset);
                segments.push(Rc::new(Segment::create(&dir, base, now).await?));
                dir_changed = true;
            }
        }
        // What recovery kept is made durable, so the recovery point can move to the log end.
        for seg in &replayed {
            seg.sync().await?;
        }
        if dir_changed {
            dir_handle.sync().await?;
        }

        let first_base = segments[0].base_offset;
        let log_end_offset = segments.last().expect("at least one segment").next_offset();
        let log_start_offset = cp
            .map_or(first_base, |c| c.log_start_offset)
            .clamp(first_base, log_end_offset);
        let size_bytes = segments.iter().map(|s| s.size()).sum();
        let log = PartitionLog {
            dir,
            dir_handle,
            cfg: Cell::new(cfg),
            segments: RefCell::new(segments),
            log_start_offset: Cell::new(log_start_offset),
            log_end_offset: Cell::new(log_end_offset),
            size_bytes: Cell::new(size_bytes),
            recovery_point: Cell::new(log_end_offset),
            unflushed_messages: Cell::new(0),
            last_flush_ms: Cell::new(now),
            writer: Semaphore::new(1),
            appending: Cell::new(false),
            pending_sync: RefCell::new(None),
            recovery_point_shared: Rc::new(Cell::new(i64::MIN)),
            cleaner_cp: Cell::new(cleaner_cp),
        };
        // After a clean shutdown that changed nothing the file already says this. Rewriting it
        // anyway cost a write, two syncs and a rename per partition, most of a start.
        let now_checkpoint = Checkpoint {
            recovery_point: log_end_offset,
            log_start_offset,
        };
        if cp != Some(now_checkpoint) {
            log.write_checkpoint().await?;
        }
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.cfg.get()
    }

    /// Replaces the settings; they apply from the next append, roll or retention check.
    pub fn set_config(&self, cfg: LogConfig) -> Result<(), StorageError> {
        cfg.validate()?;
        self.cfg.set(cfg);
        Ok(())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.get()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.get()
    }

    /// Bytes of all segments (including batches below the log start offset still on disk).
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.get()
    }

    /// Offsets below this are fdatasync'ed.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point.get()
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .borrow()
            .iter()
            .map(|s| {
                let st = s.state.borrow();
                SegmentInfo {
                    base_offset: s.base_offset,
                    next_offset: st.next_offset,
                    size_bytes: st.size,
                    max_timestamp: st.max_timestamp(),
                }
            })
            .collect()
    }

    /// Closed segments whose index files were found not to match the log since they were
    /// opened (their lookups walk from the segment start; a recovery rebuilds the files).
    pub fn untrusted_index_segments(&self) -> usize {
        self.segments
            .borrow()
            .iter()
            .filter(|s| s.index_untrusted())
            .count()
    }

    /// Index entries held in memory: the active segment's only (closed segments read theirs
    /// from the files), so this stays below `segment.bytes / index.interval.bytes` twice over.
    pub fn index_entries_in_memory(&self) -> usize {
        self.segments
            .borrow()
            .iter()
            .map(|s| s.entries_in_memory())
            .sum()
    }

    async fn lock(&self) -> Permit<'_> {
        self.writer
            .acquire_permit(1)
            .await
            .expect("the writer semaphore is never closed")
    }

    fn active(&self) -> Rc<Segment> {
        self.segments
            .borrow()
            .last()
            .cloned()
            .expect("a log always has an active segment")
    }

    fn segment_at(&self, i: usize) -> Option<Rc<Segment>> {
        self.segments.borrow().get(i).cloned()
    }

    /// Index of the segment whose base offset is the largest `<= offset`.
    fn floor_segment_index(&self, offset: i64) -> Option<usize> {
        self.segments
            .borrow()
            .partition_point(|s| s.base_offset <= offset)
            .checked_sub(1)
    }

    async fn write_checkpoint(&self) -> Result<(), StorageError> {
        let cp = Checkpoint {
            recovery_point: self.recovery_point.get(),
            log_start_offset: self.log_start_offset.get(),
        };
        checkpoint::write(&self.dir, &self.dir_handle, cp).await
    }

    /// Appends whole, validated batches whose offsets the caller assigned from
    /// `log_end_offset()`. Rolls first if needed; the log end offset moves only after the bytes
    /// and index entries are written. Applies `flush.messages` / `flush.ms`.
    pub async fn append(
        &self,
        buf: Vec<u8>,
        batches: &[BatchMeta],
    ) -> Result<AppendInfo, StorageError> {
        assert!(
            !self.appending.get(),
            "PartitionLog::append called while another append is in flight"
        );
        self.appending.set(true);
        let _appending = ResetOnDrop(&self.appending);
        let _permit = self.lock().await;
        let leo = self.log_end_offset.get();
        let incoming = check_append(&buf, batches, leo)?;
        if incoming.size_bytes > MAX_SEGMENT_BYTES {
            return Err(StorageError::RecordSetTooLarge(buf.len()));
        }
        let gapped = batches[0].base_offset != leo
            || batches
                .windows(2)
                .any(|w| w[1].base_offset != w[0].last_offset + 1);
        if gapped {
            // A follower copying a range its leader cleaned: recovery must accept the gaps.
            self.cleaned_elsewhere(incoming.last_offset + 1).await?;
        }
        let cfg = self.cfg.get();
        let now = now_ms();
        if let Some(reason) = policy::roll_reason(&self.active().roll_stats(), &incoming, &cfg, now)
        {
            log::debug!(
                "{}: rolling at offset {leo}: {reason:?}",
                self.dir.display()
            );
            self.roll_locked(now).await?;
        }

        let seg = self.active();
        let (position, builder, new_offsets, new_times, mut offset_write, mut time_write) = {
            let st = seg.state.borrow();
            let mut builder = st.builder;
            let (mut new_offsets, mut new_times) = (Vec::new(), Vec::new());
            for (i, b) in batches.iter().enumerate() {
                let end = batches.get(i + 1).map_or(buf.len(), |n| n.position);
                let (o, t) = builder.on_batch(
                    (b.base_offset - seg.base_offset) as u32,
                    (st.size + b.position as u64) as u32,
                    (end - b.position) as u64,
                    b.max_timestamp,
                    cfg.index_interval_bytes,
                );
                new_offsets.extend(o);
                new_times.extend(t);
            }
            let offset_write = segment::index_write_due(
                &st.offset_index,
                st.offset_index_persisted,
                &new_offsets,
                index::OFFSET_ENTRY_LEN,
                index::encode_offset_entries,
            );
            let time_write = segment::index_write_due(
                &st.time_index,
                st.time_index_persisted,
                &new_times,
                index::TIME_ENTRY_LEN,
                index::encode_time_entries,
            );
            (
                st.size,
                builder,
                new_offsets,
                new_times,
                offset_write,
                time_write,
            )
        };
        let appended = buf.len() as u64;
        let reserve = seg.reservation_due(
            position + appended,
            cfg.preallocate_bytes,
            cfg.segment_bytes,
        );
        let write_index = |kind, w: &mut Option<segment::IndexWrite>| {
            let w = w.as_mut().map(|w| (std::mem::take(&mut w.bytes), w.at));
            let seg = &seg;
            async move {
                match w {
                    Some((bytes, at)) => seg.write_index(kind, bytes, at).await,
                    None => Ok(()),
                }
            }
        };
        let (log_w, (offset_w, (time_w, ()))) = zip(
            segment::write_all(&seg.log, buf, position),
            zip(
                write_index(IndexKind::Offset, &mut offset_write),
                zip(write_index(IndexKind::Time, &mut time_write), async {
                    if let Some(to) = reserve {
                        seg.reserve(to).await;
                    }
                }),
            ),
        )
        .await;
        if let Err(e) = log_w.and(offset_w).and(time_w) {
            // Put the files back to what memory describes, so that the next append overwrites
            // cleanly. If this fails too, recovery at the next open cuts the tail.
            let _ = seg.log.truncate(position).await;
            let (offset_at, time_at) = {
                let st = seg.state.borrow();
                (
                    (st.offset_index_persisted * index::OFFSET_ENTRY_LEN) as u64,
                    (st.time_index_persisted * index::TIME_ENTRY_LEN) as u64,
                )
            };
            if offset_write.is_some() {
                let _ = seg.truncate_index(IndexKind::Offset, offset_at).await;
            }
            if time_write.is_some() {
                let _ = seg.truncate_index(IndexKind::Time, time_at).await;
            }
            return Err(e);
        }
        {
            let mut st = seg.state.borrow_mut();
            st.size += appended;
            st.next_offset = incoming.last_offset + 1;
            st.offset_index.extend(new_offsets);
            st.time_index.extend(new_times);
            if let Some(w) = offset_write {
                st.offset_index_persisted = w.persisted;
            }
            if let Some(w) = time_write {
                st.time_index_persisted = w.persisted;
            }
            st.builder = builder;
            if position == 0 {
                st.first_batch_timestamp = Some(incoming.max_timestamp);
            }
            st.last_modified_ms = now;
        }
        self.size_bytes.set(self.size_bytes.get() + appended);
        // Offsets only grow on append (check_append refused anything else); a violation would
        // hand out an offset twice, so it stops the process in release builds too.
        assert!(
            incoming.last_offset >= leo,
            "{}: append would move the log end from {leo} back to {}",
            self.dir.display(),
            incoming.last_offset + 1
        );
        self.log_end_offset.set(incoming.last_offset + 1);

        let unflushed = self.unflushed_messages.get() + (incoming.last_offset + 1 - leo) as u64;
        self.unflushed_messages.set(unflushed);
        if policy::flush_due(unflushed, self.last_flush_ms.get(), now, &cfg) {
            self.flush_locked(now).await?;
        }
        Ok(AppendInfo {
            base_offset: leo,
            last_offset: incoming.last_offset,
            append_time_ms: now,
            log_start_offset: self.log_start_offset.get(),
        })
    }

    /// Whole batches of one segment starting with the batch that contains `offset`: at most
    /// `max_bytes` but always that first batch (KIP-74), only batches whose last offset is below
    /// `max_offset_exclusive`. Record bytes are not read, only a few headers.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<ReadSlice, StorageError> {
        let (lso, leo) = (self.log_start_offset.get(), self.log_end_offset.get());
        if offset < lso || offset > leo {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: lso,
                log_end_offset: leo,
            });
        }
        let limit_offset = max_offset_exclusive.min(leo);
        if offset >= limit_offset {
            return Ok(ReadSlice::Empty);
        }
        let Some(mut idx) = self.floor_segment_index(offset) else {
            return Ok(ReadSlice::Empty);
        };
        loop {
            let Some(seg) = self.segment_at(idx) else {
                return Ok(ReadSlice::Empty);
            };
            let (size, next) = {
                let st = seg.state.borrow();
                (st.size, st.next_offset)
            };
            if offset >= next {
                // At the end of this segment: the data continues in the next one.
                idx += 1;
                continue;
            }
            return self
                .read_in_segment(
                    &seg,
                    offset.max(seg.base_offset),
                    size,
                    max_bytes,
                    limit_offset,
                )
                .await;
        }
    }

    async fn read_in_segment(
        &self,
        seg: &Segment,
        offset: i64,
        size: u64,
        max_bytes: usize,
        limit_offset: i64,
    ) -> Result<ReadSlice, StorageError> {
        let Some((start, first)) = seg.find_batch(offset, size).await? else {
            return Err(seg.corrupt(format!(
                "no batch holds offset {offset} below the segment end"
            )));
        };
        if first.last_offset() >= limit_offset {
            return Ok(ReadSlice::Empty);
        }
        let first_end = start + first.total_len() as u64;
        let byte_limit = start.saturating_add(max_bytes as u64).min(size);
        let (mut end, mut last) = (first_end, first.last_offset());
        if first_end < byte_limit && last + 1 < limit_offset {
            // Every batch before an index entry that is within both limits can be taken without
            // looking at it; only the few batches after that entry are walked.
            let skip = seg
                .offset_entry_within(byte_limit, limit_offset - seg.base_offset)
                .await
                .filter(|e| u64::from(e.position) > first_end)
                .map(|e| {
                    (
                        u64::from(e.position),
                        seg.base_offset + i64::from(e.relative_offset),
                    )
                });
            // `exact`: `from` is an index entry, whose batch must carry exactly its offset
            // (else `from.1` is only a lower bound: a cleaned segment has offset gaps).
            let extend = |from: (u64, i64), exact: bool| {
                let (mut end, mut last) = (end, last);
                if from.0 > end {
                    (end, last) = (from.0, from.1 - 1);
                }
                async move {
                    let mut misplaced = false;
                    let r = scan::walk_headers(&seg.log, from.0, size, from.1, |pos, h| {
                        if exact && pos == from.0 && h.base_offset != from.1 {
                            misplaced = true;
                            return ControlFlow::Break(());
                        }
                        let batch_end = pos + h.total_len() as u64;
                        if h.last_offset() >= limit_offset || batch_end > byte_limit {
                            return ControlFlow::Break(());
                        }
                        (end, last) = (batch_end, h.last_offset());
                        ControlFlow::Continue(())
                    })
                    .await;
                    match r {
                        Ok(()) if misplaced => Err(WalkError::Corrupt {
                            position: from.0,
                            reason: format!("no batch with base offset {} here", from.1),
                        }),
                        r => r.map(|()| (end, last)),
                    }
                }
            };
            let walked = match skip {
                Some(from) => match extend(from, true).await {
                    Err(WalkError::Corrupt { position, .. }) if position == from.0 => {
                        log::warn!(
                            "{}: index entry at byte {position} does not match the log",
                            seg.log_path.display()
                        );
                        seg.distrust_offset_index(&format!(
                            "entry at byte {position} names no batch"
                        ));
                        extend((first_end, last + 1), false).await
                    }
                    r => r,
                },
                None => extend((first_end, last + 1), false).await,
            };
            (end, last) = walked.map_err(|e| seg.walk_error(e))?;
        }
        Ok(ReadSlice::File(FileSlice {
            file: seg.read_fd()?,
            segment_base_offset: seg.base_offset,
            position: start,
            len: end - start,
            first_batch_offset: first.base_offset,
            last_offset: last,
        }))
    }

    /// The bytes of a `read` result (replication, tests). Copies; the fetch path uses the fd.
    pub async fn read_bytes(&self, slice: &ReadSlice) -> Result<Vec<u8>, StorageError> {
        let ReadSlice::File(fs) = slice else {
            return Ok(Vec::new());
        };
        let seg = self
            .floor_segment_index(fs.segment_base_offset)
            .and_then(|i| self.segment_at(i));
        let len = usize::try_from(fs.len)
            .map_err(|_| StorageError::InvalidAppend("slice too large".into()))?;
        if let Some(seg) = seg.filter(|s| s.is_read_fd(&fs.file)) {
            let bytes = seg.log.read_at(fs.position, len).await?;
            if bytes.len() != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment shrank under a read",
                )
                .into());
            }
            return Ok(bytes.to_vec());
        }
        // The segment was deleted (or replaced) since the read: its descriptor still works.
        let (file, position) = (fs.file.clone(), fs.position);
        let bytes = shardlog_runtime::blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, position).map(|()| buf)
        })
        .await?;
        Ok(bytes)
    }

    /// Kafka ListOffsets by timestamp: the first batch (at or after the log start) whose
    /// `max_timestamp >= timestamp`, as (its base offset clamped to the log start, its max
    /// timestamp). `None` if there is none.
    pub async fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let lso = self.log_start_offset.get();
        let segments = self.segments.borrow().clone();
        for seg in segments {
            let size = {
                let st = seg.state.borrow();
                if st.next_offset <= lso || st.max_timestamp() < timestamp {
                    continue;
                }
                st.size
            };
            let entry = seg.time_floor_below(timestamp).await;
            let from = entry.map_or(seg.base_offset, |e| {
                seg.base_offset + i64::from(e.relative_offset)
            });
            // The batch a time entry names starts at its offset and has its timestamp; a
            // closed segment's entry that does not is not trusted (nor the rest of its file).
            let expect = entry.filter(|_| from >= lso).map(|e| (from, e.timestamp));
            let mut first = true;
            let mut misplaced = false;
            let found = seg
                .find_batch_where(from.max(lso), size, |h| {
                    if std::mem::take(&mut first)
                        && expect.is_some_and(|(o, t)| h.base_offset != o || h.max_timestamp != t)
                    {
                        misplaced = true;
                        return true;
                    }
                    h.max_timestamp >= timestamp
                })
                .await?;
            // A genuine time entry names a batch of this segment: the search meets it first.
            let found = if misplaced || (first && expect.is_some()) {
                seg.distrust_time_index(&format!(
                    "the entry for offset {from} does not match its batch"
                ));
                seg.find_batch_where(seg.base_offset.max(lso), size, |h| {
                    h.max_timestamp >= timestamp
                })
                .await?
            } else {
                found
            };
            if let Some((_, h)) = found {
                return Ok(Some((h.base_offset.max(lso), h.max_timestamp)));
            }
        }
        Ok(None)
    }

    /// Calls `f` with the header of every batch from the one containing `from_offset` (or the
    /// log start) to the log end, in order (to rebuild producer state at start-up).
    pub async fn scan_headers(
        &self,
        from_offset: i64,
        f: &mut dyn FnMut(&BatchHeader),
    ) -> Result<(), StorageError> {
        let from = from_offset.max(self.log_start_offset.get());
        let segments = self.segments.borrow().clone();
        for seg in segments {
            let size = {
                let st = seg.state.borrow();
                if st.next_offset <= from {
                    continue;
                }
                st.size
            };
            let Some((pos, first)) = seg.find_batch(from.max(seg.base_offset), size).await? else {
                continue;
            };
            scan::walk_headers(&seg.log, pos, size, first.base_offset, |_, h| {
                f(h);
                ControlFlow::Continue(())
            })
            .await
            .map_err(|e| seg.walk_error(e))?;
        }
        Ok(())
    }

    /// `scan_headers`, also handing over the first record of every control batch (`None` for
    /// other batches, or a control batch whose record cannot be read): how the broker rebuilds
    /// its transaction state at open.
    pub async fn scan_batches(
        &self,
        from_offset: i64,
        f: &mut dyn FnMut(&BatchHeader, Option<ControlRecord>),
    ) -> Result<(), StorageError> {
        let from = from_offset.max(self.log_start_offset.get());
        let segments = self.segments.borrow().clone();
        for seg in segments {
            let size = {
                let st = seg.state.borrow();
                if st.next_offset <= from {
                    continue;
                }
                st.size
            };
            let Some((pos, first)) = seg.find_batch(from.max(seg.base_offset), size).await? else {
                continue;
            };
            scan::walk_batches(
                &seg.log,
                pos,
                size,
                first.base_offset,
                true,
                |_, h, bytes| {
                    f(h, bytes.and_then(batch::control_record));
                    ControlFlow::Continue(())
                },
            )
            .await
            .map_err(|e| seg.walk_error(e))?;
        }
        Ok(())
    }

    /// Records aborted transactions whose ABORT markers were just appended (each goes to the
    /// `.txnindex` of the segment holding its marker). The caller appends them in marker order,
    /// right after the append of their markers.
    pub async fn add_aborted_txns(&self, entries: &[AbortedTxn]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _permit = self.lock().await;
        let mut rest = entries;
        while let Some(first) = rest.first() {
            let Some(seg) = self
                .floor_segment_index(first.last_offset)
                .and_then(|i| self.segment_at(i))
            else {
                return Err(StorageError::InvalidAppend(format!(
                    "aborted transaction {first:?} below the first segment"
                )));
            };
            let next = seg.next_offset();
            let n = rest
                .iter()
                .take_while(|e| e.last_offset < next)
                .count()
                .max(1);
            seg.append_aborted(&rest[..n]).await?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Replaces the aborted transactions of every segment holding offsets at or above the log
    /// start with `entries` (all of them for that range, in marker order, e.g. rebuilt from the
    /// log's control batches); `.txnindex` files that differ are rewritten. Segments wholly
    /// below the log start keep theirs (no fetch reads them).
    pub async fn replace_aborted_txns(&self, entries: &[AbortedTxn]) -> Result<(), StorageError> {
        let _permit = self.lock().await;
        let lso = self.log_start_offset.get();
        let segments = self.segments.borrow().clone();
        for seg in segments {
            let next = seg.next_offset();
            if next <= lso && seg.size() > 0 {
                continue;
            }
            let mine: Vec<AbortedTxn> = entries
                .iter()
                .filter(|e| e.last_offset >= seg.base_offset && e.last_offset < next)
                .copied()
                .collect();
            let on_disk = seg.aborted_bytes();
            seg.set_aborted(mine, &on_disk).await?;
        }
        Ok(())
    }

    /// The aborted transactions a fetch returning `[start, upper_exclusive)` must report (Kafka's
    /// `collectAbortedTransactions`): every entry whose transaction overlaps the range, from the
    /// segment holding `start` on, until an entry's last stable offset reaches `upper_exclusive`.
    /// From memory; no I/O.
    pub fn collect_aborted_txns(&self, start: i64, upper_exclusive: i64) -> Vec<AbortedTxn> {
        let mut out = Vec::new();
        let segs = self.segments.borrow();
        let from = segs
            .partition_point(|s| s.base_offset <= start)
            .saturating_sub(1);
        for seg in &segs[from..] {
            if txn_index::collect(&seg.aborted.borrow(), start, upper_exclusive, &mut out) {
                break;
            }
        }
        out
    }

    /// Every aborted transaction the segments hold, in order (tests, tools).
    pub fn aborted_txns(&self) -> Vec<AbortedTxn> {
        self.segments
            .borrow()
            .iter()
            .flat_map(|s| s.aborted.borrow().clone())
            .collect()
    }

    /// Closes the active segment and starts a new one at the log end offset (no-op when the
    /// active segment is empty).
    pub async fn roll(&self) -> Result<(), StorageError> {
        let _permit = self.lock().await;
        self.roll_locked(now_ms()).await?;
        Ok(())
    }

    async fn roll_locked(&self, now: i64) -> Result<bool, StorageError> {
        let old = self.active();
        if old.size() == 0 {
            return Ok(false);
        }
        old.finalize_time_index();
        old.persist_index_tail().await?;
        let new_base = self.log_end_offset.get();
        assert_eq!(
            new_base,
            old.next_offset(),
            "a new segment starts at the log end"
        );
        let new = Rc::new(Segment::create(&self.dir, new_base, now).await?);
        self.segments.borrow_mut().push(new);
        // Closed from here: its entries are all in the files (written just now, in the page
        // cache if not yet synced), and lookups read them from there.
        old.retire_index();
        // The new segment takes appends from here. The finished one is made durable in the
        // background; only then does the recovery point move past it (until then, recovery
        // would simply scan it again). A previous roll's sync is normally long done; if not,
        // waiting for it here is the back-pressure of rolling faster than the disk syncs.
        self.await_pending_sync().await;
        self.dir_handle.sync().await?;
        let shared = self.recovery_point_shared.clone();
        let dir = self.dir.clone();
        let task = shardlog_runtime::spawn_background(async move {
            match old.sync().await {
                Ok(()) => shared.set(shared.get().max(new_base)),
                Err(e) => log::error!("{}: sync of a rolled segment failed: {e}", dir.display()),
            }
            if let Err(e) = old.release_reservation().await {
                log::warn!(
                    "{}: giving back the disk reserved past a rolled segment: {e}",
                    dir.display()
                );
            }
            if let Err(e) = old.close_index_files().await {
                log::warn!(
                    "{}: closing index files of a rolled segment: {e}",
                    dir.display()
                );
            }
        });
        *self.pending_sync.borrow_mut() = Some(task);
        crate::stats::bump(&crate::stats::SEGMENT_ROLLS);
        self.write_checkpoint().await?;
        Ok(true)
    }

    /// Rolls the active segment if it is older than `segment.ms` (for a periodic timer, so that
    /// time retention can delete data of partitions that stopped receiving appends).
    pub async fn maybe_roll_by_time(&self, now_ms: i64) -> Result<bool, StorageError> {
        let _permit = self.lock().await;
        let stats = self.active().roll_stats();
        if policy::time_roll_due(&stats, now_ms, now_ms, self.cfg.get().segment_ms) {
            return self.roll_locked(now_ms).await;
        }
        Ok(false)
    }

    /// Deletes the oldest segments that `retention.ms`, `retention.bytes` or the log start offset
    /// allow (never the active one) and moves the log start offset. Returns how many.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        let _permit = self.lock().await;
        let summaries: Vec<_> = self.segments.borrow().iter().map(|s| s.summary()).collect();
        let n = policy::retention_plan(
            &summaries,
            &self.cfg.get(),
            self.log_start_offset.get(),
            now_ms,
        );
        self.delete_oldest_segments(n).await?;
        Ok(n)
    }

    async fn delete_oldest_segments(&self, n: usize) -> Result<(), StorageError> {
        if n == 0 {
            return Ok(());
        }
        let (removed, new_first) = {
            let mut segs = self.segments.borrow_mut();
            assert!(n < segs.len(), "the active segment is never deleted");
            let removed: Vec<_> = segs.drain(..n).collect();
            (removed, segs[0].base_offset)
        };
        let freed: u64 = removed.iter().map(|s| s.size()).sum();
        self.size_bytes.set(self.size_bytes.get() - freed);
        self.log_start_offset
            .set(self.log_start_offset.get().max(new_first));
        self.recovery_point
            .set(self.recovery_point.get().max(new_first));
        // The new log start is durable before the files go.
        self.write_checkpoint().await?;
        for seg in &removed {
            seg.delete_files().await?;
        }
        self.dir_handle.sync().await?;
        for seg in removed {
            seg.close().await?;
        }
        Ok(())
    }

    /// DeleteRecords: moves the log start offset to `offset` (persisted; never backwards) and
    /// deletes the segments wholly below it, rolling first if that includes the active one.
    /// Returns the log start offset. The caller checks `offset` against the high watermark.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        let _permit = self.lock().await;
        let (lso, leo) = (self.log_start_offset.get(), self.log_end_offset.get());
        if offset > leo || offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: lso,
                log_end_offset: leo,
            });
        }
        // Moving backwards is a no-op, but segments wholly below the log start (which a
        // truncation can leave behind) are still removed.
        let offset = offset.max(lso);
        if offset > lso {
            self.log_start_offset.set(offset);
            self.write_checkpoint().await?;
        }
        let active = self.active();
        if active.next_offset() <= offset && active.size() > 0 {
            self.roll_locked(now_ms()).await?;
        }
        let n = {
            let segs = self.segments.borrow();
            segs[..segs.len() - 1]
                .iter()
                .take_while(|s| s.next_offset() <= offset)
                .count()
        };
        self.delete_oldest_segments(n).await?;
        Ok(offset)
    }

    /// Removes every batch holding an offset `>= offset` (whole batches: a batch containing
    /// `offset` goes entirely). If that leaves nothing at or above the log start offset the log
    /// restarts empty (see `policy::full_truncation_start`). Returns the new log end offset.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, StorageError> {
        let _permit = self.lock().await;
        self.await_pending_sync().await;
        let (lso, leo) = (self.log_start_offset.get(), self.log_end_offset.get());
        if offset >= leo {
            return Ok(leo);
        }
        let mut cut = None;
        if offset >= lso {
            let idx = self
                .floor_segment_index(offset)
                .expect("offsets at or above the log start are in a segment");
            let seg = self
                .segment_at(idx)
                .expect("index from floor_segment_index");
            let size = seg.size();
            let (pos, h) = seg
                .find_batch(offset, size)
                .await?
                .ok_or_else(|| seg.corrupt(format!("no batch holds offset {offset}")))?;
            cut = Some((idx, pos, h.base_offset));
        }
        match (
            policy::full_truncation_start(offset, lso, cut.map(|c| c.2)),
            cut,
        ) {
            (Some(start), _) => self.truncate_fully(start).await?,
            (None, Some((idx, pos, base))) => self.truncate_partially(idx, pos, base).await?,
            (None, None) => unreachable!("offsets below the log start truncate fully"),
        }
        Ok(self.log_end_offset.get())
    }

    /// Discards the whole log and restarts it empty at `offset`, which may lie anywhere (above
    /// the log end too): a follower whose log shares nothing with its leader's starts again at
    /// the leader's log start offset (Kafka's `truncateFullyAndStartAt`). Returns `offset`.
    pub async fn restart_at(&self, offset: i64) -> Result<i64, StorageError> {
        if offset < 0 {
            return Err(StorageError::InvalidAppend(format!(
                "cannot restart the log at negative offset {offset}"
            )));
        }
        let _permit = self.lock().await;
        self.await_pending_sync().await;
        self.truncate_fully(offset).await?;
        Ok(offset)
    }

    async fn truncate_partially(
        &self,
        idx: usize,
        position: u64,
        base: i64,
    ) -> Result<(), StorageError> {
        // Readers stop at the new end before any byte goes.
        self.log_end_offset.set(base);
        let later: Vec<_> = self.segments.borrow_mut().drain(idx + 1..).collect();
        for seg in later.iter().rev() {
            seg.delete_files().await?;
        }
        for seg in later {
            seg.close().await?;
        }
        let seg = self.active();
        seg.truncate_at(position, base, self.cfg.get().index_interval_bytes)
            .await?;
        self.size_bytes
            .set(self.segments.borrow().iter().map(|s| s.size()).sum());
        self.recovery_point.set(self.recovery_point.get().min(base));
        self.write_checkpoint().await?;
        self.dir_handle.sync().await?;
        self.lower_first_dirty(base).await
    }

    async fn truncate_fully(&self, start: i64) -> Result<(), StorageError> {
        self.log_start_offset.set(start);
        self.log_end_offset.set(start);
        self.recovery_point.set(start);
        self.write_checkpoint().await?;
        let old = std::mem::take(&mut *self.segments.borrow_mut());
        self.size_bytes.set(0);
        for seg in old.iter().rev() {
            seg.delete_files().await?;
        }
        for seg in old {
            seg.close().await?;
        }
        let new = Rc::new(Segment::create(&self.dir, start, now_ms()).await?);
        self.segments.borrow_mut().push(new);
        self.dir_handle.sync().await?;
        self.lower_first_dirty(start).await
    }

    /// fdatasync of the active segment; the recovery point moves to the log end offset.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let _permit = self.lock().await;
        self.flush_locked(now_ms()).await
    }

    /// Flushes if `flush.ms` has passed with unflushed records (for a periodic timer).
    pub async fn maybe_flush(&self, now_ms: i64) -> Result<bool, StorageError> {
        let _permit = self.lock().await;
        if policy::flush_due(
            self.unflushed_messages.get(),
            self.last_flush_ms.get(),
            now_ms,
            &self.cfg.get(),
        ) {
            self.flush_locked(now_ms).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Waits for the background sync of the last rolled segment, and takes its progress.
    async fn await_pending_sync(&self) {
        let task = self.pending_sync.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
        self.take_synced_progress();
    }

    /// Moves the recovery point past a rolled segment whose background sync has finished,
    /// without waiting for one that has not. Without it the recovery point would stay behind
    /// the last rolled segment until the next roll or flush, however long ago its sync ended
    /// (and the log cleaner, bounded by it, would never reach that segment of an idle log).
    pub(crate) fn take_synced_progress(&self) {
        let synced = self.recovery_point_shared.replace(i64::MIN);
        if synced > self.recovery_point.get() && synced <= self.log_end_offset.get() {
            self.recovery_point.set(synced);
        }
    }

    async fn flush_locked(&self, now: i64) -> Result<(), StorageError> {
        self.await_pending_sync().await;
        let leo = self.log_end_offset.get();
        // The `.log` only: the active segment's indexes are derived data that `load` repairs
        // from the `.log` (they are synced once final, at roll and close).
        self.active().sync_log().await?;
        self.recovery_point.set(self.recovery_point.get().max(leo));
        self.unflushed_messages.set(0);
        self.last_flush_ms.set(now);
        Ok(())
    }

    /// Flushes, records the final time index entry and the recovery point, closes the files.
    /// Reopen with `clean_shutdown = true` afterwards.
    pub async fn close(self) -> Result<(), StorageError> {
        let active = self.active();
        active.finalize_time_index();
        active.persist_index_tail().await?;
        // Final indexes: synced with the `.log`, as at a roll.
        active.sync().await?;
        drop(active);
        self.flush_locked(now_ms()).await?;
        self.write_checkpoint().await?;
        let segments = std::mem::take(&mut *self.segments.borrow_mut());
        for seg in segments {
            seg.close().await?;
        }
        Ok(())
    }

    /// Closes the files and removes the partition directory (DeleteTopics). Outstanding
    /// `FileSlice`s keep working until dropped.
    pub async fn delete(self) -> Result<(), StorageError> {
        let segments = std::mem::take(&mut *self.segments.borrow_mut());
        for seg in segments {
            seg.close().await?;
        }
        let dir = self.dir;
        shardlog_runtime::blocking(move || std::fs::remove_dir_all(&dir)).await?;
        Ok(())
    }

    /// The base offset of the active segment: it changes when the log rolls (the broker takes
    /// a producer state snapshot then) and after a truncation.
    pub fn active_base_offset(&self) -> i64 {
        self.active().base_offset
    }

    /// The `.txnindex` files holding aborted transactions whose markers lie in
    /// `[from_offset, to_offset)`. They are written without sync; the broker syncs them before
    /// a producer state snapshot at `to_offset` makes it trust them instead of the log.
    pub fn aborted_txn_index_paths(&self, from_offset: i64, to_offset: i64) -> Vec<PathBuf> {
        self.segments
            .borrow()
            .iter()
            .filter(|s| {
                s.aborted
                    .borrow()
                    .iter()
                    .any(|e| (from_offset..to_offset).contains(&e.last_offset))
            })
            .map(|s| s.txn_index_path())
            .collect()
    }
}

/// Checks the append contract: `batches` tile `buf` exactly, each matches the header in the
/// bytes, and offsets continue densely from `log_end_offset`.
fn check_append(
    buf: &[u8],
    batches: &[BatchMeta],
    log_end_offset: i64,
) -> Result<IncomingAppend, StorageError> {
    let bad = |why: String| Err(StorageError::InvalidAppend(why));
    if batches.is_empty() || buf.is_empty() {
        return bad("empty append".into());
    }
    let (mut expected_pos, mut expected_base, mut max_timestamp) =
        (0usize, log_end_offset, NO_TIMESTAMP);
    for (i, b) in batches.iter().enumerate() {
        let end = batches.get(i + 1).map_or(buf.len(), |n| n.position);
        if b.position != expected_pos || end > buf.len() || end < b.position + BATCH_HEADER_LEN {
            return bad(format!(
                "batch {i} at byte {} does not tile the buffer",
                b.position
            ));
        }
        let h = BatchHeader::parse(&buf[b.position..end]).expect("length checked");
        if i64::from(h.batch_length) + LOG_OVERHEAD as i64 != (end - b.position) as i64 {
            return bad(format!(
                "batch {i}: length field {} does not match its {} bytes",
                h.batch_length,
                end - b.position
            ));
        }
        if h.base_offset != b.base_offset
            || h.last_offset() != b.last_offset
            || h.max_timestamp != b.max_timestamp
            || h.last_offset_delta < 0
        {
            return bad(format!(
                "batch {i}: description {b:?} does not match its header"
            ));
        }
        if b.base_offset < expected_base {
            return bad(format!(
                "batch {i}: base offset {} where at least {expected_base} was expected",
                b.base_offset
            ));
        }
        expected_pos = end;
        expected_base = b.last_offset + 1;
        max_timestamp = max_timestamp.max(b.max_timestamp);
    }
    if expected_base - 1 - log_end_offset > policy::MAX_RELATIVE_OFFSET {
        return bad("one append spans more offsets than a segment can index".into());
    }
    Ok(IncomingAppend {
        size_bytes: buf.len() as u64,
        last_offset: expected_base - 1,
        max_timestamp,
    })
}

/// Lists a partition directory: the base offsets of the `.log` files (sorted) with the index
/// files each has, after removing leftovers (index files without a `.log`, an unfinished
/// checkpoint). Unknown files are left alone. Returns whether anything was removed.
async fn scan_directory(dir: &Path) -> Result<(Vec<(i64, SegmentFiles)>, bool), StorageError> {
    let mut logs = Vec::new();
    let mut indexes: Vec<(i64, &'static str, PathBuf)> = Vec::new();
    let mut stray = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            log::warn!("{}: ignoring file with a non-UTF-8 name", dir.display());
            continue;
        };
        match segment::parse_file_name(name) {
            Some((base, LOG_SUFFIX)) => logs.push(base),
            Some((base, suffix)) => {
                let suffix = [INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX]
                    .into_iter()
                    .find(|s| *s == suffix)
                    .expect("parse_file_name knows only segment suffixes");
                indexes.push((base, suffix, entry.path()))
            }
            None if name == CHECKPOINT_FILE || name == HIGH_WATERMARK_FILE => {}
            None if cleaner::is_cleaner_file(name) => {}
            // Producer state snapshots: listed and cleaned up by `producer_snapshot`.
            None if crate::producer_snapshot::is_snapshot_file(name) => {}
            None if name == CHECKPOINT_TMP_FILE || name == HIGH_WATERMARK_TMP_FILE => {
                stray.push(entry.path())
            }
            None => log::warn!("{}: ignoring unknown file {name}", dir.display()),
        }
    }
    logs.sort_unstable();
    let mut listing: Vec<(i64, SegmentFiles)> =
        logs.iter().map(|&b| (b, SegmentFiles::default())).collect();
    for (base, suffix, path) in indexes {
        match logs.binary_search(&base) {
            Ok(i) => {
                let files = &mut listing[i].1;
                match suffix {
                    INDEX_SUFFIX => files.index = true,
                    TIME_INDEX_SUFFIX => files.time_index = true,
                    _ => files.txn_index = true,
                }
            }
            Err(_) => stray.push(path),
        }
    }
    let removed = !stray.is_empty();
    for path in stray {
        log::warn!("removing stray file {}", path.display());
        segment::remove_if_exists(&path).await?;
    }
    Ok((listing, removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog_protocol::batch::{assign_offset, build_simple_batch};

    fn two_batches(base: i64) -> (Vec<u8>, Vec<BatchMeta>) {
        let mut a = build_simple_batch(0, 100, &[(None, Some(b"a")), (None, Some(b"b"))]);
        assign_offset(&mut a, base, 0);
        let mut b = build_simple_batch(0, 50, &[(None, Some(b"c"))]);
        assign_offset(&mut b, base + 2, 0);
        let buf = [a, b].concat();
        let metas = batch_metas(&buf).unwrap();
        (buf, metas)
    }

    #[test]
    fn append_contract_is_checked() {
        let (buf, metas) = two_batches(10);
        assert_eq!(metas.len(), 2);
        assert_eq!((metas[1].base_offset, metas[1].last_offset), (12, 12));
        let inc = check_append(&buf, &metas, 10).unwrap();
        assert_eq!(
            (inc.last_offset, inc.max_timestamp, inc.size_bytes),
            (12, 100, buf.len() as u64)
        );
        assert!(check_append(&buf, &metas, 11).is_err());
        assert!(
            check_append(&buf, &metas[..1], 10).is_err(),
            "batches must cover the buffer"
        );
        assert!(check_append(&buf, &[], 10).is_err());
        let mut wrong = metas.clone();
        wrong[1].max_timestamp = 7;
        assert!(check_append(&buf, &wrong, 10).is_err());
        let mut wrong = metas.clone();
        wrong[1].position += 1;
        assert!(check_append(&buf, &wrong, 10).is_err());
        assert!(batch_metas(&buf[..buf.len() - 1]).is_err());
    }
}
