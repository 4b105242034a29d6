//! A partition on its owning shard: the log, idempotent producer state, the append queue and the
//! fetch waiters. Never touched from another shard: other shards send `shard::ShardMsg`s.
//!
//! Appends are group-committed: a produce handler pushes its batches on `pending` and, if no
//! append is running, becomes the writer and drains the queue (every batch waiting at that moment
//! goes into one `write_at`). This keeps appends to one partition serial, in arrival order,
//! without a lock, and lets concurrent producers share one I/O.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use shardlog_protocol::batch::{self, BatchHeader};
use shardlog_storage::{BatchMeta, FileSlice, PartitionLog, ReadSlice, StorageError};

use crate::config::TopicConfig;
use crate::errors;
use crate::producer_state::{ProducerStateTable, SequenceCheck};

/// One batch of a produce request, validated, with its bytes still in the request frame.
pub struct IncomingBatch {
    pub bytes: Bytes,
    pub header: BatchHeader,
}

/// Result of appending the batches of one produce request to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub error_code: i16,
    pub base_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

struct PendingAppend {
    batches: Vec<IncomingBatch>,
    reply: flume::Sender<AppendOutcome>,
}

/// What a fetch of one partition found.
#[derive(Debug)]
pub struct PartitionRead {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub slice: Option<FileSlice>,
}

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    log: PartitionLog,
    config: RefCell<TopicConfig>,
    producers: RefCell<ProducerStateTable>,
    pending: RefCell<VecDeque<PendingAppend>>,
    writing: Cell<bool>,
    /// Fetches waiting for data past the high watermark. Each is woken once, then drops out.
    waiters: RefCell<Vec<flume::Sender<()>>>,
    leader_epoch: Cell<i32>,
}

/// Suffix of partition directories being deleted.
pub const DELETED_SUFFIX: &str = "-delete";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Partition {
    /// Opens the log (recovering it after an unclean stop) and rebuilds producer state.
    pub async fn open(
        topic: Arc<str>,
        index: i32,
        dir: std::path::PathBuf,
        config: TopicConfig,
        clean_shutdown: bool,
    ) -> Result<Partition, StorageError> {
        let log = PartitionLog::open(dir, config.log_config(), clean_shutdown).await?;
        let mut producers = ProducerStateTable::default();
        let start = log.log_start_offset();
        log.scan_headers(start, &mut |h| producers.observe(h))
            .await?;
        Ok(Partition {
            topic,
            index,
            log,
            config: RefCell::new(config),
            producers: RefCell::new(producers),
            pending: RefCell::new(VecDeque::new()),
            writing: Cell::new(false),
            waiters: RefCell::new(Vec::new()),
            leader_epoch: Cell::new(0),
        })
    }

    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    pub fn config(&self) -> TopicConfig {
        self.config.borrow().clone()
    }

    pub fn set_config(&self, config: TopicConfig) {
        if let Err(e) = self.log.set_config(config.log_config()) {
            // Topic configs are validated before they are stored; this would be a bug.
            log::error!("{}-{}: storage refused config: {e}", self.topic, self.index);
            return;
        }
        *self.config.borrow_mut() = config;
    }

    /// In standalone mode every appended offset is committed at once.
    pub fn high_watermark(&self) -> i64 {
        self.log.log_end_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    /// Appends the batches of one produce request and waits until they are in the page cache
    /// (or were recognised as duplicates). Safe to call concurrently: appends are queued.
    pub async fn append(self: &Rc<Self>, batches: Vec<IncomingBatch>) -> AppendOutcome {
        let (tx, rx) = flume::bounded(1);
        self.pending
            .borrow_mut()
            .push_back(PendingAppend { batches, reply: tx });
        if !self.writing.get() {
            self.writing.set(true);
            // The writer is a detached task so that a producer disconnecting mid-request cannot
            // cancel a write that other requests' batches share.
            let this = self.clone();
            crate::rt::spawn_detached(async move {
                while let Some(group) = this.take_pending() {
                    this.write_group(group).await;
                }
                this.writing.set(false);
            });
        }
        rx.recv_async().await.unwrap_or(AppendOutcome {
            error_code: errors::KAFKA_STORAGE_ERROR,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        })
    }

    fn take_pending(&self) -> Option<Vec<PendingAppend>> {
        let mut q = self.pending.borrow_mut();
        if q.is_empty() {
            None
        } else {
            Some(q.drain(..).collect())
        }
    }

    async fn write_group(&self, group: Vec<PendingAppend>) {
        let config = self.config();
        let append_time = if config.log_append_time { now_ms() } else { -1 };
        let epoch = self.leader_epoch.get();
        let mut next_offset = self.log.log_end_offset();
        let total: usize = group
            .iter()
            .flat_map(|p| &p.batches)
            .map(|b| b.bytes.len())
            .sum();
        let mut buf = Vec::with_capacity(total);
        let mut metas = Vec::new();
        let mut pending_state = ProducerStateTable::default();
        // Per request: Ok(base offset to report) or Err(code); None until decided.
        let mut outcomes: Vec<Result<i64, i16>> = Vec::with_capacity(group.len());
        {
            let producers = self.producers.borrow();
            for p in &group {
                let mut first: Option<i64> = None;
                let mut error = None;
                // A request's batches are all-or-nothing; check them all before taking any.
                let mark = (buf.len(), metas.len(), next_offset, pending_state.clone());
                for b in &p.batches {
                    producers.fork_entry(&mut pending_state, b.header.producer_id);
                    match producers.check(&b.header, &pending_state) {
                        SequenceCheck::Reject(code) => {
                            error = Some(code);
                            break;
                        }
                        SequenceCheck::Duplicate { base_offset } => {
                            first.get_or_insert(base_offset);
                        }
                        SequenceCheck::Append => {
                            let start = buf.len();
                            buf.extend_from_slice(&b.bytes);
                            let bytes = &mut buf[start..];
                            batch::assign_offset(bytes, next_offset, epoch);
                            if append_time >= 0 {
                                batch::set_log_append_time(bytes, append_time);
                            }
                            let mut h = b.header;
                            h.base_offset = next_offset;
                            pending_state.observe(&h);
                            metas.push(BatchMeta {
                                position: start,
                                base_offset: next_offset,
                                last_offset: h.last_offset(),
                                max_timestamp: if append_time >= 0 {
                                    append_time
                                } else {
                                    h.max_timestamp
                                },
                            });
                            first.get_or_insert(next_offset);
                            next_offset = h.last_offset() + 1;
                        }
                    }
                }
                match error {
                    Some(code) => {
                        let (len, n, off, state) = mark;
                        buf.truncate(len);
                        metas.truncate(n);
                        next_offset = off;
                        pending_state = state;
                        outcomes.push(Err(code));
                    }
                    None => outcomes.push(Ok(first.unwrap_or(next_offset))),
                }
            }
        }
        let write_result = if metas.is_empty() {
            Ok(())
        } else {
            self.log.append(buf, &metas).await.map(|_| ())
        };
        let log_start = self.log.log_start_offset();
        match write_result {
            Ok(()) => {
                self.producers.borrow_mut().commit(pending_state);
                if !metas.is_empty() {
                    self.wake_waiters();
                }
                for (p, outcome) in group.into_iter().zip(outcomes) {
                    let o = match outcome {
                        Ok(base) => AppendOutcome {
                            error_code: errors::NONE,
                            base_offset: base,
                            log_append_time_ms: append_time,
                            log_start_offset: log_start,
                        },
                        Err(code) => AppendOutcome {
                            error_code: code,
                            base_offset: -1,
                            log_append_time_ms: -1,
                            log_start_offset: log_start,
                        },
                    };
                    let _ = p.reply.send(o);
                }
            }
            Err(e) => {
                log::error!("append to {}-{} failed: {e}", self.topic, self.index);
                for p in group {
                    let _ = p.reply.send(AppendOutcome {
                        error_code: errors::KAFKA_STORAGE_ERROR,
                        base_offset: -1,
                        log_append_time_ms: -1,
                        log_start_offset: log_start,
                    });
                }
            }
        }
    }

    fn wake_waiters(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            let _ = w.try_send(());
        }
    }

    /// Reads for a fetch. When `waiter` is given it is registered so the next append wakes it
    /// (read and registration are one step on this shard, so no append can slip between them
    /// unnoticed); the fetch handler passes one only when it may have to wait for more data.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        waiter: Option<&flume::Sender<()>>,
    ) -> PartitionRead {
        let hw = self.high_watermark();
        let log_start = self.log_start_offset();
        if let Some(w) = waiter {
            let mut ws = self.waiters.borrow_mut();
            ws.retain(|w| !w.is_disconnected());
            ws.push(w.clone());
        }
        if offset == hw {
            return PartitionRead {
                error_code: errors::NONE,
                high_watermark: hw,
                log_start_offset: log_start,
                slice: None,
            };
        }
        match self.log.read(offset, max_bytes, hw).await {
            Ok(slice) => PartitionRead {
                error_code: errors::NONE,
                high_watermark: hw,
                log_start_offset: self.log_start_offset(),
                slice: match slice {
                    ReadSlice::File(f) if f.len > 0 => Some(f),
                    _ => None,
                },
            },
            Err(StorageError::OffsetOutOfRange { .. }) => PartitionRead {
                error_code: errors::OFFSET_OUT_OF_RANGE,
                high_watermark: hw,
                log_start_offset: log_start,
                slice: None,
            },
            Err(e) => {
                log::error!(
                    "read of {}-{} at {offset} failed: {e}",
                    self.topic,
                    self.index
                );
                PartitionRead {
                    error_code: errors::KAFKA_STORAGE_ERROR,
                    high_watermark: hw,
                    log_start_offset: log_start,
                    slice: None,
                }
            }
        }
    }

    /// Wakes every waiting fetch, e.g. before the partition is closed.
    pub fn release_waiters(&self) {
        self.wake_waiters();
    }

    /// Waits (bounded) until no other task holds this partition, then hands it over.
    async fn into_unique(self: Rc<Self>) -> Result<Partition, Rc<Partition>> {
        let mut this = self;
        for _ in 0..500 {
            match Rc::try_unwrap(this) {
                Ok(p) => return Ok(p),
                Err(rc) => this = rc,
            }
            crate::rt::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(this)
    }

    /// Flushes and closes the log (clean shutdown).
    pub async fn close(self: Rc<Self>) -> Result<(), StorageError> {
        self.release_waiters();
        match self.into_unique().await {
            Ok(p) => p.log.close().await,
            // Still referenced by a stuck task: flush at least, and let recovery check the tail.
            Err(p) => p.log.flush().await,
        }
    }

    /// Deletes the partition's data (DeleteTopics). The directory is first renamed out of the
    /// way, so a topic re-created under the same name starts empty whatever happens next; the
    /// renamed directory is removed once the files are closed (or on the next start).
    pub async fn delete(self: Rc<Self>) -> Result<(), StorageError> {
        self.release_waiters();
        let dir = self.log.dir().to_path_buf();
        let doomed = dir.with_file_name(format!(
            "{}.{}{DELETED_SUFFIX}",
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("partition"),
            now_ms()
        ));
        std::fs::rename(&dir, &doomed).map_err(StorageError::from)?;
        if let Ok(p) = self.into_unique().await {
            drop(p);
        }
        crate::rt::remove_dir_all(doomed)
            .await
            .map_err(StorageError::from)
    }
}
