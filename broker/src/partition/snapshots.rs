//! Producer state snapshots of a partition (the files are `storage::producer_snapshot`'s):
//! taking one when the log rolls (written in the background) and at clean close, loading the
//! newest usable one at open and after a truncation (then scanning only the batches after it),
//! and deleting those that can no longer be used.
//!
//! A snapshot at offset `N` holds the producer state and the leader epoch cache after every
//! batch below `N`. It is usable while `log start <= N <= log end`: below the log start the
//! batches between it and the log start may be gone; above the log end it describes batches
//! that a recovery cut or a truncation removed. The aborted transactions below `N` are not in
//! it: they stay in the `.txnindex` files, synced before the snapshot is written, and only the
//! entries of the markers at or after `N` are recomputed from the scan.

use std::collections::BTreeSet;
use std::path::PathBuf;

use shardlog_storage::producer_snapshot::{
    self, ProducerSnapshot, SnapshotEpoch, SnapshotReadError,
};

use super::*;

/// Snapshots a partition keeps: the newest and the one before (if the newest cannot be read,
/// the other saves most of the scan).
pub const SNAPSHOTS_KEPT: usize = 2;

/// Where the producer state came from at the last open or truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLoad {
    /// The offset of the snapshot loaded; `None` when the state was rebuilt from the log start.
    pub snapshot: Option<i64>,
    /// The offset the batch scan started at.
    pub scanned_from: i64,
    /// How many batches the scan read.
    pub scanned_batches: u64,
}

/// The snapshot files of one partition. Shared (`Rc`) with the background writes, so that they
/// hold no reference to the partition itself; lives on the partition's shard.
pub(super) struct SnapshotStore {
    dir: PathBuf,
    /// The offsets of the snapshot files on disk, as this store found, wrote or removed them.
    offsets: RefCell<BTreeSet<i64>>,
    /// One write or removal at a time, in the order they were asked for.
    gate: crate::runtime::rt::Semaphore,
    /// Bumped by every truncation: a snapshot taken before it is not written.
    generation: Cell<u64>,
    /// Set when an aborted transaction could not be recorded in its `.txnindex`: a snapshot
    /// past that marker would make the next open trust the incomplete file, so none is written
    /// until the partition is opened again (that open repairs the file from an older snapshot
    /// or the log).
    disabled: Cell<bool>,
}

/// A snapshot taken, waiting to be written.
pub(super) struct Capture {
    snapshot: ProducerSnapshot,
    generation: u64,
    /// `.txnindex` files the snapshot stands in for (markers since the newest snapshot).
    sync_first: Vec<PathBuf>,
    log_start_offset: i64,
}

impl SnapshotStore {
    /// Lists the snapshots of `dir` (removing unfinished ones).
    pub(super) async fn open(dir: PathBuf) -> Result<Rc<SnapshotStore>, StorageError> {
        let offsets = producer_snapshot::list(&dir).await?;
        Ok(Rc::new(SnapshotStore {
            dir,
            offsets: RefCell::new(offsets.into_iter().collect()),
            gate: crate::runtime::rt::Semaphore::new(1),
            generation: Cell::new(0),
            disabled: Cell::new(false),
        }))
    }

    /// The offsets of the snapshot files, ascending.
    pub(super) fn offsets(&self) -> Vec<i64> {
        self.offsets.borrow().iter().copied().collect()
    }

    pub(super) fn newest(&self) -> Option<i64> {
        self.offsets.borrow().last().copied()
    }

    /// Makes snapshots taken so far and not yet written never be written (a truncation).
    pub(super) fn invalidate(&self) {
        self.generation.set(self.generation.get() + 1);
    }

    pub(super) fn disable(&self) {
        self.disabled.set(true);
    }

    /// Removes the snapshots `doomed` selects. With `durable`, the directory is synced after,
    /// so that none of them reappears after a crash (those above the log end would describe
    /// batches that are gone). Returns how many were removed.
    pub(super) async fn remove_where(
        &self,
        doomed: impl Fn(i64) -> bool,
        durable: bool,
    ) -> Result<usize, StorageError> {
        let _gate = self.gate.acquire_permit(1).await;
        self.remove_locked(doomed, durable).await
    }

    async fn remove_locked(
        &self,
        doomed: impl Fn(i64) -> bool,
        durable: bool,
    ) -> Result<usize, StorageError> {
        let gone: Vec<i64> = self
            .offsets
            .borrow()
            .iter()
            .copied()
            .filter(|o| doomed(*o))
            .collect();
        for &o in &gone {
            producer_snapshot::remove(&self.dir, o).await?;
            self.offsets.borrow_mut().remove(&o);
        }
        if durable && !gone.is_empty() {
            producer_snapshot::sync_dir(&self.dir).await?;
        }
        Ok(gone.len())
    }

    /// Writes a captured snapshot unless a truncation came after it (or snapshots are
    /// disabled): first removes the snapshots it makes superfluous (all but the newest
    /// `SNAPSHOTS_KEPT`, counting the new one, and those below the log start), then syncs the
    /// `.txnindex` files it stands in for, then writes it (the directory sync at its end makes
    /// the removals durable too: a removed snapshot must not come back after a truncation made
    /// it wrong). Returns whether it was written.
    pub(super) async fn write(&self, c: Capture) -> Result<bool, StorageError> {
        let _gate = self.gate.acquire_permit(1).await;
        if c.generation != self.generation.get() || self.disabled.get() {
            return Ok(false);
        }
        let new = c.snapshot.offset;
        let keep: Vec<i64> = {
            let mut all = self.offsets.borrow().clone();
            all.insert(new);
            all.into_iter().rev().take(SNAPSHOTS_KEPT).collect()
        };
        self.remove_locked(|o| !keep.contains(&o) || o < c.log_start_offset, false)
            .await?;
        let written = async {
            producer_snapshot::sync_files(&c.sync_first).await?;
            producer_snapshot::write(&self.dir, &c.snapshot).await
        }
        .await;
        if let Err(e) = written {
            // Whatever is left under that name (a file renamed but not made durable, or the
            // older one it was meant to replace) is not kept track of: remove it.
            self.offsets.borrow_mut().remove(&new);
            let _ = producer_snapshot::remove(&self.dir, new).await;
            return Err(e);
        }
        self.offsets.borrow_mut().insert(new);
        Ok(true)
    }

    /// `write` in the background (the shard's default queue, below request work); failures are
    /// logged: the next open just scans more.
    pub(super) fn spawn_write(self: &Rc<Self>, c: Capture, name: String) {
        let store = self.clone();
        crate::runtime::rt::spawn_background(async move {
            let offset = c.snapshot.offset;
            if let Err(e) = store.write(c).await {
                log::warn!("{name}: writing the producer state snapshot at {offset}: {e}");
            }
        })
        .detach();
    }
}

/// What a load rebuilt.
pub(super) struct LoadedState {
    pub producers: ProducerStateTable,
    pub epochs: EpochCache,
    pub report: StateLoad,
}

/// What a scan of the batches from some offset to the log end found.
struct Scanned {
    producers: ProducerStateTable,
    epochs: EpochCache,
    aborted: Vec<AbortedTxn>,
    batches: u64,
    first_base_offset: Option<i64>,
}

/// Applies every batch from the one containing `from` to the log end (headers, and the record
/// of each control batch) to `producers` and `epochs`, collecting the aborted transactions
/// whose ABORT markers it meets.
async fn scan_from(
    log: &PartitionLog,
    from: i64,
    mut producers: ProducerStateTable,
    mut epochs: EpochCache,
) -> Result<Scanned, StorageError> {
    let now = now_ms();
    let mut aborted = Vec::new();
    let mut batches = 0u64;
    let mut first_base_offset = None;
    log.scan_batches(from, &mut |h, control| {
        batches += 1;
        first_base_offset.get_or_insert(h.base_offset);
        if let Some(done) = producers.observe_batch(h, control, now) {
            if done.aborted {
                aborted.push(aborted_entry(&producers, &done));
            }
        }
        epochs.assign(LeaderEpoch(h.partition_leader_epoch), Offset(h.base_offset));
    })
    .await?;
    Ok(Scanned {
        producers,
        epochs,
        aborted,
        batches,
        first_base_offset,
    })
}

/// The state a snapshot describes, or why it contradicts itself.
fn restore(s: &ProducerSnapshot) -> Result<(ProducerStateTable, EpochCache), String> {
    for p in &s.producers {
        let past =
            p.batches.iter().any(|b| b.base_offset >= s.offset) || p.txn_first_offset >= s.offset;
        if past {
            return Err(format!(
                "producer {} has offsets at or past the snapshot's",
                p.producer_id
            ));
        }
    }
    let producers = ProducerStateTable::from_snapshot(&s.producers)?;
    let mut epochs = EpochCache::default();
    for e in &s.epochs {
        if e.start_offset >= s.offset {
            return Err(format!("epoch {} starts past the snapshot", e.epoch));
        }
        epochs.assign(LeaderEpoch(e.epoch), Offset(e.start_offset));
    }
    if epochs.entries().len() != s.epochs.len() {
        return Err("leader epochs out of order".into());
    }
    Ok((producers, epochs))
}

/// Rebuilds producer state and the leader epoch cache from the newest usable snapshot and the
/// batches after it (from the log start when none is usable), and makes the `.txnindex`
/// entries of the markers the scan met agree with the log (`PartitionLog::replace_aborted_txns`
/// is given the entries below the scan's start as they are, and the scan's own after them).
/// A snapshot that cannot be decoded, contradicts itself or does not start at a batch boundary
/// is removed and the next older one tried; one that cannot be read is skipped.
pub(super) async fn load_state(
    log: &PartitionLog,
    store: &SnapshotStore,
    name: &str,
) -> Result<LoadedState, StorageError> {
    let (lso, leo) = (log.log_start_offset(), log.log_end_offset());
    let usable: Vec<i64> = store
        .offsets()
        .into_iter()
        .rev()
        .filter(|o| (lso..=leo).contains(o))
        .collect();
    let mut found = None;
    for offset in usable {
        let why = match producer_snapshot::read(log.dir(), offset).await {
            Ok(snapshot) => match restore(&snapshot) {
                Ok((producers, epochs)) => {
                    let scanned = scan_from(log, offset, producers, epochs).await?;
                    match scanned.first_base_offset {
                        Some(b) if b != offset => format!("offset {offset} is inside a batch"),
                        _ => {
                            found = Some((offset, scanned));
                            break;
                        }
                    }
                }
                Err(why) => why,
            },
            Err(SnapshotReadError::Invalid { reason, .. }) => reason.to_string(),
            Err(SnapshotReadError::Storage(e)) => {
                log::warn!("{name}: cannot read the producer state snapshot at {offset}: {e}");
                continue;
            }
        };
        log::warn!("{name}: removing the producer state snapshot at {offset}: {why}");
        store.remove_where(|o| o == offset, false).await?;
    }
    let (from, snapshot, scanned) = match found {
        Some((offset, scanned)) => (offset, Some(offset), scanned),
        None => (
            lso,
            None,
            scan_from(
                log,
                lso,
                ProducerStateTable::default(),
                EpochCache::default(),
            )
            .await?,
        ),
    };
    let mut aborted: Vec<AbortedTxn> = log
        .aborted_txns()
        .into_iter()
        .filter(|e| e.last_offset < from)
        .collect();
    aborted.extend(scanned.aborted);
    log.replace_aborted_txns(&aborted).await?;
    Ok(LoadedState {
        producers: scanned.producers,
        epochs: scanned.epochs,
        report: StateLoad {
            snapshot,
            scanned_from: from,
            scanned_batches: scanned.batches,
        },
    })
}

impl Partition {
    fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index)
    }

    /// The state now, as a snapshot at the log end offset, with the `.txnindex` files it
    /// stands in for.
    fn capture_snapshot(&self) -> Capture {
        let offset = self.log.log_end_offset();
        let epochs = self
            .epoch_cache
            .borrow()
            .entries()
            .iter()
            // An epoch this broker leads without a batch yet starts at the log end: it is not
            // part of the log below the snapshot (a scan would not find it either).
            .filter(|e| e.start_offset.0 < offset)
            .map(|e| SnapshotEpoch {
                epoch: e.epoch.0,
                start_offset: e.start_offset.0,
            })
            .collect();
        let since = self.snapshots.newest().unwrap_or(i64::MIN);
        self.snapshot_dirty.set(false);
        Capture {
            snapshot: ProducerSnapshot {
                offset,
                producers: self.producers.borrow().to_snapshot(),
                epochs,
            },
            generation: self.snapshots.generation.get(),
            sync_first: self.log.aborted_txn_index_paths(since, offset),
            log_start_offset: self.log.log_start_offset(),
        }
    }

    /// After an append (leader, marker or follower; the write gate held and the state already
    /// updated): when the log rolled to a new segment, a snapshot of the state at the log end
    /// is written in the background.
    pub(super) fn snapshot_if_rolled(&self) {
        let base = self.log.active_base_offset();
        if base == self.active_base.get() {
            return;
        }
        self.active_base.set(base);
        self.snapshots
            .spawn_write(self.capture_snapshot(), self.name());
    }

    /// At clean close: a snapshot of the state at the log end, unless the newest one already
    /// is (and no producer expired since). Waits for background writes. Errors are logged.
    pub(super) async fn snapshot_at_close(&self) {
        let leo = self.log.log_end_offset();
        let nothing_new = self.snapshots.newest() == Some(leo) && !self.snapshot_dirty.get();
        let nothing_at_all =
            leo == self.log.log_start_offset() && self.producers.borrow().is_empty();
        if nothing_new || nothing_at_all {
            return;
        }
        if let Err(e) = self.snapshots.write(self.capture_snapshot()).await {
            log::warn!(
                "{}: writing the producer state snapshot at {leo}: {e}",
                self.name()
            );
        }
    }

    /// After a truncation (the write gate held): drops the snapshots above the new log end
    /// (all of them when nothing is left at or above the log start), then rebuilds producer
    /// state and the epoch cache from the newest snapshot left and the batches after it.
    pub(super) async fn reload_after_truncation(&self) -> Result<(), StorageError> {
        self.snapshots.invalidate();
        let (lso, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        self.snapshots
            .remove_where(|o| o > end || lso == end, true)
            .await?;
        let loaded = load_state(&self.log, &self.snapshots, &self.name()).await?;
        *self.producers.borrow_mut() = loaded.producers;
        *self.epoch_cache.borrow_mut() = loaded.epochs;
        self.state_load.set(loaded.report);
        self.active_base.set(self.log.active_base_offset());
        Ok(())
    }

    /// Forgets the producers idle for `expiration_ms` (`producer.id.expiration.ms`) without an
    /// open transaction. Returns how many.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        let n = self.producers.borrow_mut().expire(now_ms, expiration_ms);
        if n > 0 {
            self.snapshot_dirty.set(true);
        }
        n
    }

    /// Periodic: removes the snapshots below the log start offset (retention or DeleteRecords
    /// moved it). If that left none, writes one at the log end, so that the next open neither
    /// scans the whole log nor loses the producers whose batches retention removed.
    pub async fn maintain_snapshots(&self) {
        let lso = self.log.log_start_offset();
        let removed = match self.snapshots.remove_where(|o| o < lso, false).await {
            Ok(n) => n,
            Err(e) => {
                log::warn!(
                    "{}: removing producer state snapshots below {lso}: {e}",
                    self.name()
                );
                return;
            }
        };
        if removed == 0 || self.snapshots.newest().is_some() {
            return;
        }
        // The write gate: the state and the log end must be taken between two appends.
        let capture = {
            let _gate = self.write_gate.acquire_permit(1).await;
            self.capture_snapshot()
        };
        if let Err(e) = self.snapshots.write(capture).await {
            log::warn!("{}: writing a producer state snapshot: {e}", self.name());
        }
    }

    /// Where the producer state came from at the last open or truncation.
    pub fn state_load(&self) -> StateLoad {
        self.state_load.get()
    }

    /// The offsets of this partition's producer state snapshots, ascending.
    pub fn snapshot_offsets(&self) -> Vec<i64> {
        self.snapshots.offsets()
    }

    /// Waits until the snapshot writes started so far are done (tests).
    #[cfg(test)]
    pub(super) async fn snapshots_settled(&self) {
        let _gate = self.snapshots.gate.acquire_permit(1).await;
    }
}
