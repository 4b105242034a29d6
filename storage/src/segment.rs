//! One segment: its three files, its in-memory indexes, loading/recovering it from disk, and
//! finding batches in it. Lives on the partition's shard (not `Send`).
//!
//! Every segment keeps its `.log` open twice: a glommio `BufferedFile` (read/write, io_uring)
//! for appends and header reads, and a read-only `std::fs::File` shared with fetch responses
//! (`sendfile` from other threads). Index files are open only for the active segment.
//!
//! Index entries: the active segment holds all of its entries in memory (appends add to them
//! and write them out in 4 KiB pieces). A closed segment (every other one; a segment closes at
//! roll, or is found closed at open) holds none: its `ClosedIndex` says how to reach them, and
//! each lookup binary-searches its index files page by page, reading pages through the ring
//! (`BufferedFile::read_at`, never a blocking read or an mmap fault on the shard) into the
//! shard's bounded page cache (`index_cache`). So index memory does not grow with the log: a
//! few words per closed segment plus the fixed cache. Pages are checked as they are read (the
//! files of trusted segments are not checked at open); an entry that does not match the log
//! makes the segment's index untrusted, and its lookups then walk from the segment start.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use shardlog_protocol::batch::{BatchHeader, BATCH_HEADER_LEN};
use shardlog_runtime::fs::{BufferedFile, OpenOptions};

use crate::error::StorageError;
use crate::index::{
    self, IndexBuilder, OffsetEntry, PageSearch, TimeEntry, NO_TIMESTAMP, OFFSET_ENTRY_LEN,
    TIME_ENTRY_LEN,
};
use crate::index_cache::{self, IndexKind, Page, PageKey};
use crate::policy::{ActiveSegmentStats, SegmentSummary, MAX_SEGMENT_BYTES};
use crate::scan::{self, WalkError};
use crate::txn_index::{self, AbortedTxn, TXN_ENTRY_LEN};

pub const LOG_SUFFIX: &str = "log";
pub const INDEX_SUFFIX: &str = "index";
pub const TIME_INDEX_SUFFIX: &str = "timeindex";
pub const TXN_INDEX_SUFFIX: &str = "txnindex";

/// `00000000000000000042.log` for base offset 42.
pub fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}.{suffix}")
}

/// The base offset and suffix of a segment file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if ![
        LOG_SUFFIX,
        INDEX_SUFFIX,
        TIME_INDEX_SUFFIX,
        TXN_INDEX_SUFFIX,
    ]
    .contains(&suffix)
    {
        return None;
    }
    let base: i64 = stem.parse().ok()?;
    Some((base, suffix))
}

pub struct IndexFiles {
    pub offset: BufferedFile,
    pub time: BufferedFile,
}

/// Mutable state of a segment. Only the partition's writer changes it, and only after the bytes
/// it describes were written: readers that copy it see whole batches only.
#[derive(Debug)]
pub struct SegmentState {
    /// Bytes of whole batches in the `.log` (the published end; appends in flight are beyond it).
    /// Between `Segment::open` and the load, the size of the file.
    pub size: u64,
    /// One past the last offset in the segment (for a closed segment opened without a replay:
    /// the next segment's base offset); `base_offset` when empty.
    pub next_offset: i64,
    /// The entries of the active segment (and of a segment being loaded). Empty, with no heap,
    /// while `closed` is set.
    pub offset_index: Vec<OffsetEntry>,
    pub time_index: Vec<TimeEntry>,
    /// How many entries of each index are in the files (the active segment appends the rest).
    pub offset_index_persisted: usize,
    pub time_index_persisted: usize,
    pub builder: IndexBuilder,
    /// Set for a closed segment: its entries are only in the files.
    pub closed: Option<ClosedIndex>,
    /// `max_timestamp` of the first batch (roll by `segment.ms`).
    pub first_batch_timestamp: Option<i64>,
    pub created_ms: i64,
    pub last_modified_ms: i64,
    /// The `.log` has disk reserved up to here (`preallocate_bytes`); appends move it ahead.
    pub reserved_to: u64,
    /// The furthest reservation asked for (what a roll gives back past `size`).
    pub reserved_max: u64,
    /// A reservation failed (disk full, filesystem without `fallocate`): no more for this segment.
    pub reserve_failed: bool,
}

impl SegmentState {
    fn empty(base_offset: i64, now_ms: i64) -> Self {
        SegmentState {
            size: 0,
            next_offset: base_offset,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            offset_index_persisted: 0,
            time_index_persisted: 0,
            builder: IndexBuilder::default(),
            closed: None,
            first_batch_timestamp: None,
            created_ms: now_ms,
            last_modified_ms: now_ms,
            reserved_to: 0,
            reserved_max: 0,
            reserve_failed: false,
        }
    }
}

/// A segment dropped without `close` (a partition dropped on an error path, or in a test of a
/// crash) gives back its cached pages and open index files too.
impl Drop for SegmentState {
    fn drop(&mut self) {
        if let Some(closed) = self.closed {
            index_cache::forget(closed.cache_id);
        }
    }
}

impl SegmentState {
    /// The largest batch `max_timestamp` of the segment, or `NO_TIMESTAMP`.
    pub fn max_timestamp(&self) -> i64 {
        self.closed
            .map_or(self.builder.max_timestamp(), |c| c.max_timestamp)
    }
}

/// What a closed segment keeps about its index files instead of their entries: a few words,
/// whatever the segment's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedIndex {
    /// This segment's key in the shard's index page cache. New each time the segment becomes
    /// closed (never reused in the process), so pages read before a truncation, a deletion or
    /// a replacement of the segment are never served for what is there now.
    pub cache_id: u64,
    /// Whole entries in the `.index` file; `None` until the first lookup reads the file size.
    pub offset_entries: Option<u64>,
    /// Whole entries in the `.timeindex` file, likewise.
    pub time_entries: Option<u64>,
    /// The segment's largest batch `max_timestamp` (the last `.timeindex` entry, written at
    /// roll), or `NO_TIMESTAMP`.
    pub max_timestamp: i64,
    /// Cleared when a page read from the file broke the index rules or an entry did not match
    /// the log (or the file is missing): lookups then walk the segment from its start.
    pub offset_trusted: bool,
    pub time_trusted: bool,
}

impl ClosedIndex {
    fn entries(&self, kind: IndexKind) -> Option<u64> {
        match kind {
            IndexKind::Offset => self.offset_entries,
            IndexKind::Time => self.time_entries,
        }
    }

    fn trusted(&self, kind: IndexKind) -> bool {
        match kind {
            IndexKind::Offset => self.offset_trusted,
            IndexKind::Time => self.time_trusted,
        }
    }
}

/// Which of a segment's files the directory listing showed (at open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentFiles {
    pub index: bool,
    pub time_index: bool,
    pub txn_index: bool,
}

/// The two index file layouts, for the page-by-page lookups of closed segments.
trait IndexEntry: Copy + Sized + 'static {
    const KIND: IndexKind;
    const LEN: usize;
    const PER_PAGE: u64;
    const SUFFIX: &'static str;
    /// Whole entries of one page, if every one of them is valid.
    fn decode_page(bytes: &[u8], log_size: u64) -> Option<Vec<Self>>;
    fn decode(bytes: &[u8]) -> Self;
    fn wrap(entries: Rc<[Self]>) -> Page;
    fn unwrap(page: Page) -> Option<Rc<[Self]>>;
}

impl IndexEntry for OffsetEntry {
    const KIND: IndexKind = IndexKind::Offset;
    const LEN: usize = OFFSET_ENTRY_LEN;
    const PER_PAGE: u64 = index_cache::OFFSET_ENTRIES_PER_PAGE;
    const SUFFIX: &'static str = INDEX_SUFFIX;
    fn decode_page(bytes: &[u8], log_size: u64) -> Option<Vec<Self>> {
        index::decode_offset_page(bytes, log_size)
    }
    fn decode(bytes: &[u8]) -> Self {
        index::decode_offset_entry(bytes)
    }
    fn wrap(entries: Rc<[Self]>) -> Page {
        Page::Offset(entries)
    }
    fn unwrap(page: Page) -> Option<Rc<[Self]>> {
        match page {
            Page::Offset(e) => Some(e),
            Page::Time(_) => None,
        }
    }
}

impl IndexEntry for TimeEntry {
    const KIND: IndexKind = IndexKind::Time;
    const LEN: usize = TIME_ENTRY_LEN;
    const PER_PAGE: u64 = index_cache::TIME_ENTRIES_PER_PAGE;
    const SUFFIX: &'static str = TIME_INDEX_SUFFIX;
    fn decode_page(bytes: &[u8], _log_size: u64) -> Option<Vec<Self>> {
        index::decode_time_page(bytes)
    }
    fn decode(bytes: &[u8]) -> Self {
        index::decode_time_entry(bytes)
    }
    fn wrap(entries: Rc<[Self]>) -> Page {
        Page::Time(entries)
    }
    fn unwrap(page: Page) -> Option<Rc<[Self]>> {
        match page {
            Page::Time(e) => Some(e),
            Page::Offset(_) => None,
        }
    }
}

/// Why a lookup in a closed segment's index file gave up.
enum LookupFailure {
    /// The file breaks the index rules (or is missing): the index is untrusted from now on.
    Damaged(String),
    /// Reading failed: this lookup walks from the segment start, the next one tries again.
    Io(io::Error),
}

impl From<io::Error> for LookupFailure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound {
            LookupFailure::Damaged("the file is missing".into())
        } else {
            LookupFailure::Io(e)
        }
    }
}

impl From<shardlog_runtime::Error> for LookupFailure {
    fn from(e: shardlog_runtime::Error) -> Self {
        io::Error::from(e).into()
    }
}

/// A closed segment's index file for a lookup: the descriptor the shard keeps open for that
/// segment (`index_cache::open_file`), else opened at the first page that is not cached, and
/// kept for the next lookups.
struct LookupFile {
    path: PathBuf,
    cache_id: u64,
    kind: IndexKind,
    file: Option<Rc<BufferedFile>>,
}

impl LookupFile {
    fn new<E: IndexEntry>(seg: &Segment, cache_id: u64) -> Self {
        LookupFile {
            path: path_for(seg.dir(), seg.base_offset, E::SUFFIX),
            cache_id,
            kind: E::KIND,
            file: None,
        }
    }

    async fn get(&mut self) -> Result<&BufferedFile, LookupFailure> {
        if self.file.is_none() {
            let file = match index_cache::open_file(self.cache_id, self.kind) {
                Some(f) => f,
                None => {
                    let f = Rc::new(
                        OpenOptions::new()
                            .read(true)
                            .buffered_open(&self.path)
                            .await?,
                    );
                    index_cache::keep_open_file(self.cache_id, self.kind, f.clone());
                    f
                }
            };
            self.file = Some(file);
        }
        Ok(self.file.as_deref().expect("just set"))
    }
}

/// The size of an index file and its last whole entry (none when it holds no whole entry).
struct IndexTail<E> {
    len: u64,
    last: Option<E>,
}

/// Index entries gather in memory and go to the active segment's index files in writes of at
/// least this many bytes (and at roll, flush and close). The files are derived data: `load`
/// replays the `.log` from the last entry on disk, so a crash loses nothing but replay time
/// (at most this many bytes of entries, i.e. 512 offset entries = 2 MiB of log at the default
/// `index.interval.bytes`). Writing an 8-byte entry per append instead cost a write submission
/// per append, and on ext4 each one waits for an io_uring worker thread.
pub const INDEX_WRITE_BYTES: usize = 4096;

/// One write of an index file's unwritten entries.
pub struct IndexWrite {
    pub bytes: Vec<u8>,
    /// File position: where the written entries end.
    pub at: u64,
    /// Entries in the file once written.
    pub persisted: usize,
}

/// The write that `new` entries make due, if the unwritten entries (those of `entries` past
/// `persisted`, then `new`) reach `INDEX_WRITE_BYTES`; `None` keeps them in memory.
pub fn index_write_due<E: Copy>(
    entries: &[E],
    persisted: usize,
    new: &[E],
    entry_len: usize,
    encode: fn(&[E], &mut Vec<u8>),
) -> Option<IndexWrite> {
    let unwritten = entries.len() - persisted + new.len();
    if new.is_empty() || unwritten * entry_len < INDEX_WRITE_BYTES {
        return None;
    }
    let mut bytes = Vec::with_capacity(unwritten * entry_len);
    encode(&entries[persisted..], &mut bytes);
    encode(new, &mut bytes);
    Some(IndexWrite {
        bytes,
        at: (persisted * entry_len) as u64,
        persisted: entries.len() + new.len(),
    })
}

pub struct Segment {
    pub base_offset: i64,
    pub log_path: PathBuf,
    pub log: BufferedFile,
    /// A plain descriptor of the `.log` for `sendfile` and blocking reads, opened at the
    /// segment's first read (most segments of a broker with many partitions are never read
    /// between two starts; each open file counts against the process's descriptor limit).
    read_fd: RefCell<Option<Arc<File>>>,
    pub state: RefCell<SegmentState>,
    pub index_files: RefCell<Option<Rc<IndexFiles>>>,
    /// The transactions aborted by markers in this segment (its `.txnindex`), in marker order.
    /// Few: one per aborted transaction; dropped with the segment.
    pub aborted: RefCell<Vec<AbortedTxn>>,
}

/// What loading a segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOutcome {
    /// The `.log` was truncated at a bad batch: nothing after it may be kept.
    pub damage: Option<String>,
    /// The whole `.log` was replayed (recovery, or indexes unusable).
    pub replayed_from_start: bool,
}

fn path_for(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(file_name(base_offset, suffix))
}

pub(crate) async fn open_rw(path: &Path, truncate: bool) -> Result<BufferedFile, StorageError> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .buffered_open(path)
        .await?)
}

/// Writes all of `buf` at `pos`, or fails (glommio takes the buffer, a short write cannot be
/// resumed; it only happens when the disk is full).
pub async fn write_all(file: &BufferedFile, buf: Vec<u8>, pos: u64) -> Result<(), StorageError> {
    let len = buf.len();
    if len == 0 {
        return Ok(());
    }
    let written = file.write_at(buf, pos).await;
    let path = file.path().map(|p| p.to_path_buf());
    match written {
        Ok(n) if n == len => Ok(()),
        Ok(n) => Err(short_write_error(path.as_deref(), n, len).into()),
        Err(e) => Err(write_error("writing", path.as_deref(), e).into()),
    }
}

/// A write that failed, naming the file. The operating system's error, when there is one, is
/// the `source` (so `raw_os_error` can be found by walking the error chain) and gives the kind.
#[derive(Debug)]
struct FileWriteError {
    message: String,
    os: Option<io::Error>,
}

impl std::fmt::Display for FileWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FileWriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.os.as_ref().map(|e| e as _)
    }
}

fn display_path(path: Option<&Path>) -> String {
    path.map_or_else(|| "a file".to_string(), |p| p.display().to_string())
}

/// The error for a write to a regular file that returned fewer bytes than asked (`written`
/// of `len`). The kernel shortens a write to a regular file when the file system fills up (or
/// a quota or file size limit is reached) part way; the next write would fail with ENOSPC. No
/// errno was returned, so the error carries the kind of ENOSPC (`StorageFull`) but no raw OS
/// error.
pub(crate) fn short_write_error(path: Option<&Path>, written: usize, len: usize) -> io::Error {
    let kind = io::Error::from_raw_os_error(libc::ENOSPC).kind();
    io::Error::new(
        kind,
        FileWriteError {
            message: format!(
                "no space left on device (ENOSPC) writing {}: wrote {written} of {len} bytes \
                 (a short write: the file system is full or a quota is exhausted)",
                display_path(path)
            ),
            os: None,
        },
    )
}

/// The error for a failed write or sync of `path` (`doing`: "writing", "syncing"). The OS error
/// keeps its kind and stays reachable as the source; ENOSPC is named as such.
pub(crate) fn write_error(
    doing: &str,
    path: Option<&Path>,
    e: shardlog_runtime::Error,
) -> io::Error {
    let os = match shardlog_runtime::os_error(e) {
        Ok(os) => os,
        Err(other) => return other.into(),
    };
    let what = display_path(path);
    let message = match os.raw_os_error() {
        Some(libc::ENOSPC) => format!("no space left on device (ENOSPC) {doing} {what}"),
        Some(libc::EDQUOT) => format!("disk quota exceeded (EDQUOT) {doing} {what}"),
        _ => format!("{doing} {what}: {os}"),
    };
    io::Error::new(
        os.kind(),
        FileWriteError {
            message,
            os: Some(os),
        },
    )
}

/// Reads a whole (small) file; a missing one reads as empty.
async fn read_small_file(path: &Path) -> Result<Vec<u8>, StorageError> {
    let file = match OpenOptions::new().read(true).buffered_open(path).await {
        Ok(f) => f,
        Err(e) => {
            let e = io::Error::from(e);
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(Vec::new());
            }
            return Err(e.into());
        }
    };
    let size = file.file_size().await?;
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let chunk = file
            .read_at(out.len() as u64, (size - out.len() as u64) as usize)
            .await?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    file.close().await?;
    Ok(out)
}

impl Segment {
    /// Creates a new, empty, active segment (any stale files of that name are emptied).
    pub async fn create(
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
    ) -> Result<Segment, StorageError> {
        let log_path = path_for(dir, base_offset, LOG_SUFFIX);
        let log = open_rw(&log_path, true).await?;
        // Empty index files from the start (stale ones of that name emptied); they are opened
        // again only to write a page of entries, at a roll and at close.
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            open_rw(&path_for(dir, base_offset, suffix), true)
                .await?
                .close()
                .await?;
        }
        remove_if_exists(&path_for(dir, base_offset, TXN_INDEX_SUFFIX)).await?;
        Ok(Segment {
            base_offset,
            log_path,
            log,
            read_fd: RefCell::new(None),
            state: RefCell::new(SegmentState::empty(base_offset, now_ms)),
            index_files: RefCell::new(None),
            aborted: RefCell::new(Vec::new()),
        })
    }

    /// Opens an existing segment's `.log`; `load` then builds its state.
    pub async fn open(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Segment, StorageError> {
        let log_path = path_for(dir, base_offset, LOG_SUFFIX);
        let log = open_rw(&log_path, false).await?;
        let meta = std::fs::metadata(&log_path)?;
        let last_modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now_ms, |d| d.as_millis() as i64);
        let mut state = SegmentState::empty(base_offset, now_ms);
        state.last_modified_ms = last_modified_ms;
        // What a closed segment opened without a replay takes as its size.
        state.size = meta.len();
        Ok(Segment {
            base_offset,
            log_path,
            log,
            read_fd: RefCell::new(None),
            state: RefCell::new(state),
            index_files: RefCell::new(None),
            aborted: RefCell::new(Vec::new()),
        })
    }

    /// The `.log`'s plain descriptor (see `read_fd`), opened now if not yet.
    pub fn read_fd(&self) -> Result<Arc<File>, StorageError> {
        if let Some(f) = self.read_fd.borrow().as_ref() {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(&self.log_path)?);
        *self.read_fd.borrow_mut() = Some(f.clone());
        Ok(f)
    }

    /// Whether `file` is this segment's plain descriptor.
    pub fn is_read_fd(&self, file: &Arc<File>) -> bool {
        self.read_fd
            .borrow()
            .as_ref()
            .is_some_and(|f| Arc::ptr_eq(f, file))
    }

    /// Writes index bytes at `at` in the file of `kind`: through the open index files (at a
    /// roll or close), else opened for this write only. Entries reach the files a page at a
    /// time, so an active segment holds no index descriptor between writes.
    pub async fn write_index(
        &self,
        kind: IndexKind,
        bytes: Vec<u8>,
        at: u64,
    ) -> Result<(), StorageError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let open = self.index_files.borrow().clone();
        if let Some(files) = open {
            let file = match kind {
                IndexKind::Offset => &files.offset,
                IndexKind::Time => &files.time,
            };
            return write_all(file, bytes, at).await;
        }
        let file = open_rw(&self.index_path_of(kind), false).await?;
        let written = write_all(&file, bytes, at).await;
        let closed = file.close().await;
        written?;
        closed?;
        Ok(())
    }

    /// Cuts the index file of `kind` to `len` bytes (after a failed append; best effort).
    pub async fn truncate_index(&self, kind: IndexKind, len: u64) -> Result<(), StorageError> {
        let file = open_rw(&self.index_path_of(kind), false).await?;
        let cut = file.truncate(len).await;
        let closed = file.close().await;
        cut?;
        closed?;
        Ok(())
    }

    fn index_path_of(&self, kind: IndexKind) -> PathBuf {
        match kind {
            IndexKind::Offset => self.index_path(),
            IndexKind::Time => self.time_index_path(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.log_path
            .parent()
            .expect("segment files live in a directory")
    }

    pub fn index_path(&self) -> PathBuf {
        path_for(self.dir(), self.base_offset, INDEX_SUFFIX)
    }

    pub fn time_index_path(&self) -> PathBuf {
        path_for(self.dir(), self.base_offset, TIME_INDEX_SUFFIX)
    }

    pub fn txn_index_path(&self) -> PathBuf {
        path_for(self.dir(), self.base_offset, TXN_INDEX_SUFFIX)
    }

    /// Loads the `.txnindex` (whole, valid entries) keeping only the entries whose marker is
    /// in the segment as loaded (below `next_offset`); rewrites the file when that dropped
    /// anything (removes it when nothing is left).
    async fn load_txn_index(&self) -> Result<(), StorageError> {
        let bytes = read_small_file(&self.txn_index_path()).await?;
        let next = self.next_offset();
        let mut entries = txn_index::decode_entries(&bytes);
        entries.retain(|e| e.last_offset >= self.base_offset && e.last_offset < next);
        self.set_aborted(entries, &bytes).await
    }

    /// Replaces the aborted list with `entries` (markers in this segment, in order) and makes
    /// the file say the same (`on_disk`: what the file holds now).
    pub async fn set_aborted(
        &self,
        entries: Vec<AbortedTxn>,
        on_disk: &[u8],
    ) -> Result<(), StorageError> {
        let mut want = Vec::new();
        txn_index::encode_entries(&entries, &mut want);
        if want != on_disk {
            if want.is_empty() {
                remove_if_exists(&self.txn_index_path()).await?;
            } else {
                replace_file(&self.txn_index_path(), want).await?;
            }
        }
        *self.aborted.borrow_mut() = entries;
        Ok(())
    }

    /// The `.txnindex` bytes that memory describes (what the file holds).
    pub fn aborted_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        txn_index::encode_entries(&self.aborted.borrow(), &mut out);
        out
    }

    /// Appends entries (markers just appended to this segment) to memory and the `.txnindex`.
    /// Not synced: the file is derived from the log and checked at every open.
    pub async fn append_aborted(&self, entries: &[AbortedTxn]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let at = (self.aborted.borrow().len() * TXN_ENTRY_LEN) as u64;
        let mut bytes = Vec::new();
        txn_index::encode_entries(entries, &mut bytes);
        let file = open_rw(&self.txn_index_path(), false).await?;
        let written = write_all(&file, bytes, at).await;
        file.close().await?;
        written?;
        self.aborted.borrow_mut().extend_from_slice(entries);
        Ok(())
    }

    pub fn corrupt(&self, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: self.log_path.clone(),
            reason: reason.into(),
        }
    }

    pub fn size(&self) -> u64 {
        self.state.borrow().size
    }

    pub fn next_offset(&self) -> i64 {
        self.state.borrow().next_offset
    }

    pub fn roll_stats(&self) -> ActiveSegmentStats {
        let st = self.state.borrow();
        ActiveSegmentStats {
            base_offset: self.base_offset,
            size_bytes: st.size,
            first_batch_timestamp: st.first_batch_timestamp,
            created_ms: st.created_ms,
        }
    }

    pub fn summary(&self) -> SegmentSummary {
        let st = self.state.borrow();
        let max = st.max_timestamp();
        SegmentSummary {
            base_offset: self.base_offset,
            next_offset: st.next_offset,
            size_bytes: st.size,
            largest_timestamp: if max >= 0 { max } else { st.last_modified_ms },
        }
    }

    fn relative(&self, offset: i64) -> u32 {
        (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32
    }

    /// Builds the in-memory state from the files. `full` (recovery) replays the whole `.log`;
    /// otherwise the index files are trusted up to `index::replay_start` and the tail of the
    /// `.log` from there is replayed and validated. A bad batch truncates the `.log` there.
    /// Index files are rewritten when they differ from what the replay produced.
    pub async fn load(
        &self,
        full: bool,
        index_interval_bytes: u32,
        dense: bool,
    ) -> Result<LoadOutcome, StorageError> {
        let synced_below = if full { i64::MIN } else { i64::MAX };
        self.load_synced_below(synced_below, index_interval_bytes, dense)
            .await
    }

    /// `load` of a segment whose offsets below `synced_below` are known synced (the recovery
    /// point): its tail check reads headers only up to there and validates every batch (CRC
    /// included) from there on. At or below the base offset it is a full replay; `i64::MAX`
    /// trusts the whole segment (a clean shutdown).
    pub async fn load_synced_below(
        &self,
        synced_below: i64,
        index_interval_bytes: u32,
        dense: bool,
    ) -> Result<LoadOutcome, StorageError> {
        let full = synced_below <= self.base_offset;
        let file_size = self.log.file_size().await?;
        let log_size = file_size.min(MAX_SEGMENT_BYTES);
        let index_bytes = read_small_file(&self.index_path()).await?;
        let time_bytes = read_small_file(&self.time_index_path()).await?;
        let mut offset_index = Vec::new();
        let mut time_index = Vec::new();
        if !full {
            offset_index = index::decode_offset_index(&index_bytes, log_size);
            time_index = index::decode_time_index(&time_bytes);
        }
        let mut replayed_from_start = full;
        let anchor = time_index.last().copied();
        let (end, mut builder) = loop {
            let start = index::replay_start(&offset_index, &time_index, log_size);
            offset_index.truncate(start.keep_offset_entries);
            time_index.truncate(start.keep_time_entries);
            let mut builder = IndexBuilder::resume(time_index.last().copied());
            // A time entry names the batch where its timestamp was reached, so that batch's
            // max_timestamp equals it. The start is at or before the batch of the file's last
            // time entry, so a genuine last entry is met by the replay: check that it is.
            let anchor = anchor.filter(|_| start.position != 0);
            let mut anchor_ok = anchor.is_none();
            let (mut new_offsets, mut new_times) = (Vec::new(), Vec::new());
            let expected = self.base_offset + i64::from(start.relative_offset);
            let mut on_batch = |pos: u64, h: &BatchHeader| {
                let rel = (h.base_offset - self.base_offset) as u32;
                if let Some(a) = anchor.filter(|a| a.relative_offset == rel) {
                    anchor_ok = a.timestamp == h.max_timestamp;
                }
                let (o, t) = builder.on_batch(
                    rel,
                    pos as u32,
                    h.total_len() as u64,
                    h.max_timestamp,
                    index_interval_bytes,
                );
                new_offsets.extend(o);
                new_times.extend(t);
            };
            let (from, base) = (u64::from(start.position), self.base_offset);
            // Not a full replay: the bytes below `synced_below` were synced (a clean shutdown,
            // or below the recovery point), so the tail check reads their headers only, and
            // validates every batch from there. A full replay (an unclean stop past the
            // recovery point, or a tail that did not chain) checks every CRC.
            let mut end = if replayed_from_start {
                scan::replay(
                    &self.log,
                    from,
                    log_size,
                    expected,
                    base,
                    dense,
                    &mut on_batch,
                )
                .await?
            } else {
                scan::replay_headers(
                    &self.log,
                    from,
                    log_size,
                    expected,
                    base,
                    dense,
                    synced_below,
                    &mut on_batch,
                )
                .await?
            };
            if !replayed_from_start && end.damage.is_none() && end.valid_end < log_size {
                let (at, next) = (end.valid_end, end.next_offset);
                end =
                    scan::replay(&self.log, at, log_size, next, base, dense, &mut on_batch).await?;
            }
            let mismatch = match (&end.damage, anchor_ok) {
                _ if start.position == 0 => None,
                (Some(damage), _) => Some(damage.clone()),
                (None, false) => Some("the last time index entry does not match its batch".into()),
                (None, true) => None,
            };
            if let Some(why) = mismatch {
                // The tail did not chain from the trusted indexes: replay everything, so the
                // truncation point is found from the segment start whatever the indexes say.
                log::warn!(
                    "{}: index does not match the log ({why}); rebuilding from the start",
                    self.log_path.display(),
                );
                offset_index.clear();
                time_index.clear();
                replayed_from_start = true;
                continue;
            }
            offset_index.extend(new_offsets);
            time_index.extend(new_times);
            break (end, builder);
        };
        time_index.extend(builder.finalize());
        if end.valid_end < file_size {
            log::warn!(
                "{}: truncating from {} to {} bytes: {}",
                self.log_path.display(),
                file_size,
                end.valid_end,
                end.damage.as_deref().unwrap_or("segment larger than 2 GiB")
            );
            self.log.truncate(end.valid_end).await?;
        }
        let first_batch_timestamp = if end.valid_end == 0 {
            None
        } else {
            let head = self.log.read_at(0, BATCH_HEADER_LEN).await?;
            BatchHeader::parse(&head).ok().map(|h| h.max_timestamp)
        };

        let mut want = Vec::new();
        index::encode_offset_entries(&offset_index, &mut want);
        if want != index_bytes {
            replace_file(&self.index_path(), want).await?;
        }
        let mut want = Vec::new();
        index::encode_time_entries(&time_index, &mut want);
        if want != time_bytes {
            replace_file(&self.time_index_path(), want).await?;
        }

        {
            let mut st = self.state.borrow_mut();
            st.size = end.valid_end;
            st.next_offset = end.next_offset;
            st.offset_index_persisted = offset_index.len();
            st.time_index_persisted = time_index.len();
            st.offset_index = offset_index;
            st.time_index = time_index;
            st.builder = builder;
            st.first_batch_timestamp = first_batch_timestamp;
            if let Some(closed) = st.closed.take() {
                index_cache::forget(closed.cache_id);
            }
        }
        self.load_txn_index().await?;
        Ok(LoadOutcome {
            damage: end.damage,
            replayed_from_start,
        })
    }

    /// Loads a segment that is not the last one (`next_base`: the next segment's base offset)
    /// as a closed segment, without reading its index files whole and without keeping entries:
    ///
    /// - `check_tail == false` (after a clean shutdown): nothing but the last `.timeindex`
    ///   entry (the segment's largest timestamp) is read. The `.log` size comes from the
    ///   `fstat` of `open`, the segment is taken to end where the next one starts.
    /// - `check_tail == true` (below the recovery point after an unclean stop): what `load`
    ///   does without `full`, reading only the entries it needs (the last of each file, and
    ///   a page search when the last time entry is before the last offset entry): the `.log`
    ///   is replayed and validated from the offset entry at or before both, lost entries are
    ///   written back, and a tail that does not chain (or damage in it) replays the whole
    ///   segment (`load(true)`), which cuts the log at the first bad batch.
    ///
    /// Anything unusual (an index file missing, empty or with an invalid last entry, a `.log`
    /// too short or too long) falls back to `load(false)`, whose entries the caller drops
    /// (`retire_index`).
    pub async fn load_closed(
        &self,
        next_base: i64,
        check_tail: bool,
        files: SegmentFiles,
        index_interval_bytes: u32,
        dense: bool,
    ) -> Result<LoadOutcome, StorageError> {
        let size = self.size();
        let plausible = files.index
            && files.time_index
            && size >= BATCH_HEADER_LEN as u64
            && size <= MAX_SEGMENT_BYTES
            && next_base > self.base_offset;
        if !plausible {
            return self.load(false, index_interval_bytes, dense).await;
        }
        // The descriptors opened here stay in the shard's cache under this id for the
        // segment's lookups.
        let cache_id = index_cache::new_cache_id();
        let mut time_file = LookupFile::new::<TimeEntry>(self, cache_id);
        let time = self.read_index_tail::<TimeEntry>(&mut time_file).await?;
        let Some(last_time) = time.last.filter(|t| {
            t.timestamp > NO_TIMESTAMP
                && i64::from(t.relative_offset) < next_base - self.base_offset
        }) else {
            index_cache::forget(cache_id);
            return self.load(false, index_interval_bytes, dense).await;
        };
        let outcome = if check_tail {
            let tail = self
                .check_tail(
                    cache_id,
                    time_file,
                    time,
                    last_time,
                    index_interval_bytes,
                    dense,
                )
                .await?;
            match tail {
                Some(outcome) => outcome,
                None => {
                    index_cache::forget(cache_id);
                    return self.load(false, index_interval_bytes, dense).await;
                }
            }
        } else {
            let mut st = self.state.borrow_mut();
            st.next_offset = next_base;
            st.closed = Some(ClosedIndex {
                cache_id,
                offset_entries: None,
                time_entries: Some(time.len / TIME_ENTRY_LEN as u64),
                max_timestamp: last_time.timestamp,
                offset_trusted: true,
                time_trusted: true,
            });
            LoadOutcome {
                damage: None,
                replayed_from_start: false,
            }
        };
        if files.txn_index && self.state.borrow().closed.is_some() {
            self.load_txn_index().await?;
        }
        Ok(outcome)
    }

    /// `load_closed` with `check_tail`: `None` asks for `load(false)` instead.
    async fn check_tail(
        &self,
        cache_id: u64,
        mut time_file: LookupFile,
        time: IndexTail<TimeEntry>,
        last_time: TimeEntry,
        index_interval_bytes: u32,
        dense: bool,
    ) -> Result<Option<LoadOutcome>, StorageError> {
        let size = self.size();
        let mut offset_file = LookupFile::new::<OffsetEntry>(self, cache_id);
        let offsets = self
            .read_index_tail::<OffsetEntry>(&mut offset_file)
            .await?;
        let Some(last_offset) = offsets.last.filter(|e| u64::from(e.position) < size) else {
            return Ok(None);
        };
        let offset_count = offsets.len / OFFSET_ENTRY_LEN as u64;
        let time_count = time.len / TIME_ENTRY_LEN as u64;
        // The replay start, as `index::replay_start` chooses it from the whole files.
        let target = last_offset.relative_offset.min(last_time.relative_offset);
        let (keep_offsets, start) = if last_offset.relative_offset <= target {
            (offset_count, last_offset)
        } else {
            let found = self
                .search_file::<OffsetEntry>(
                    cache_id,
                    offset_count,
                    size,
                    &mut offset_file,
                    None,
                    |e| e.relative_offset <= target,
                )
                .await;
            match found {
                Ok(Some((i, e))) => (i + 1, e),
                _ => return Ok(None),
            }
        };
        if start.position == 0 {
            return Ok(None);
        }
        let (keep_times, resume) = if last_time.relative_offset <= start.relative_offset {
            (time_count, Some(last_time))
        } else {
            let found = self
                .search_file::<TimeEntry>(cache_id, time_count, size, &mut time_file, None, |e| {
                    e.relative_offset <= start.relative_offset
                })
                .await;
            match found {
                Ok(Some((i, e))) => (i + 1, Some(e)),
                Ok(None) => (0, None),
                Err(_) => return Ok(None),
            }
        };
        let mut builder = IndexBuilder::resume(resume);
        let mut anchor_ok = false;
        let (mut new_offsets, mut new_times) = (Vec::new(), Vec::new());
        let end = scan::replay(
            &self.log,
            u64::from(start.position),
            size,
            self.base_offset + i64::from(start.relative_offset),
            self.base_offset,
            dense,
            |pos, h| {
                let rel = (h.base_offset - self.base_offset) as u32;
                if rel == last_time.relative_offset {
                    anchor_ok = last_time.timestamp == h.max_timestamp;
                }
                let (o, t) = builder.on_batch(
                    rel,
                    pos as u32,
                    h.total_len() as u64,
                    h.max_timestamp,
                    index_interval_bytes,
                );
                new_offsets.extend(o);
                new_times.extend(t);
            },
        )
        .await?;
        if end.damage.is_some() || !anchor_ok {
            // As in `load`: the tail does not chain from the trusted entries, so the whole
            // segment is replayed and the truncation point found from its start.
            let why = end
                .damage
                .unwrap_or_else(|| "the last time index entry does not match its batch".into());
            log::warn!(
                "{}: index does not match the log ({why}); rebuilding from the start",
                self.log_path.display(),
            );
            drop((offset_file, time_file));
            index_cache::forget(cache_id);
            return Ok(Some(self.load(true, index_interval_bytes, dense).await?));
        }
        new_times.extend(builder.finalize());

        // The files must hold the kept entries followed by the ones the replay produced.
        let offset_at = keep_offsets * OFFSET_ENTRY_LEN as u64;
        let mut want_offsets = Vec::new();
        index::encode_offset_entries(&new_offsets, &mut want_offsets);
        let offsets_ok = offsets.len == offset_at + want_offsets.len() as u64
            && self
                .read_file_range(&mut offset_file, offset_at, want_offsets.len())
                .await?
                == want_offsets;
        let time_at = keep_times * TIME_ENTRY_LEN as u64;
        let mut want_times = Vec::new();
        index::encode_time_entries(&new_times, &mut want_times);
        let times_ok = time.len == time_at + want_times.len() as u64
            && self
                .read_file_range(&mut time_file, time_at, want_times.len())
                .await?
                == want_times;
        let mut cache_id = cache_id;
        if !offsets_ok || !times_ok {
            // Pages and descriptors of the files as they were go; a new id for the new ones.
            drop((offset_file, time_file));
            index_cache::forget(cache_id);
            cache_id = index_cache::new_cache_id();
            if !offsets_ok {
                rewrite_tail(&self.index_path(), offset_at, want_offsets).await?;
            }
            if !times_ok {
                rewrite_tail(&self.time_index_path(), time_at, want_times).await?;
            }
        }
        let mut st = self.state.borrow_mut();
        st.size = end.valid_end;
        st.next_offset = end.next_offset;
        st.closed = Some(ClosedIndex {
            cache_id,
            offset_entries: Some(keep_offsets + new_offsets.len() as u64),
            time_entries: Some(keep_times + new_times.len() as u64),
            max_timestamp: builder.max_timestamp(),
            offset_trusted: true,
            time_trusted: true,
        });
        Ok(Some(LoadOutcome {
            damage: None,
            replayed_from_start: false,
        }))
    }

    /// The size of one of the segment's index files and its last whole entry, read through
    /// the ring (a missing file reads as empty).
    async fn read_index_tail<E: IndexEntry>(
        &self,
        file: &mut LookupFile,
    ) -> Result<IndexTail<E>, StorageError> {
        let file = match file.get().await {
            Ok(f) => f,
            Err(LookupFailure::Damaged(_)) => return Ok(IndexTail { len: 0, last: None }),
            Err(LookupFailure::Io(e)) => return Err(e.into()),
        };
        let len = file.file_size().await?;
        let whole = len / E::LEN as u64 * E::LEN as u64;
        let last = if whole == 0 {
            None
        } else {
            let bytes = file.read_at(whole - E::LEN as u64, E::LEN).await?;
            (bytes.len() == E::LEN).then(|| E::decode(&bytes))
        };
        Ok(IndexTail { len, last })
    }

    /// Up to `len` bytes of an index file at `pos` (fewer if the file ends before).
    async fn read_file_range(
        &self,
        file: &mut LookupFile,
        pos: u64,
        len: usize,
    ) -> Result<Vec<u8>, StorageError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        match file.get().await {
            Ok(f) => Ok(f.read_at(pos, len).await?.to_vec()),
            Err(LookupFailure::Damaged(_)) => Ok(Vec::new()),
            Err(LookupFailure::Io(e)) => Err(e.into()),
        }
    }

    /// Whether the segment's entries are in its files only (a closed segment).
    pub fn is_closed(&self) -> bool {
        self.state.borrow().closed.is_some()
    }

    /// Makes this a closed segment: drops the in-memory entries, which must all be in the
    /// files (after a roll's `persist_index_tail`, or a load). No-op if already closed.
    pub fn retire_index(&self) {
        let mut st = self.state.borrow_mut();
        if st.closed.is_some() {
            return;
        }
        debug_assert_eq!(st.offset_index_persisted, st.offset_index.len());
        debug_assert_eq!(st.time_index_persisted, st.time_index.len());
        let closed = ClosedIndex {
            cache_id: index_cache::new_cache_id(),
            offset_entries: Some(st.offset_index_persisted as u64),
            time_entries: Some(st.time_index_persisted as u64),
            max_timestamp: st.builder.max_timestamp(),
            offset_trusted: true,
            time_trusted: true,
        };
        st.closed = Some(closed);
        st.offset_index = Vec::new();
        st.time_index = Vec::new();
        st.offset_index_persisted = 0;
        st.time_index_persisted = 0;
    }

    /// Whether this closed segment's offset or time index was found not to match the log.
    pub fn index_untrusted(&self) -> bool {
        self.state
            .borrow()
            .closed
            .is_some_and(|c| !c.offset_trusted || !c.time_trusted)
    }

    /// Index entries held in memory (the active segment's; none for a closed one).
    pub fn entries_in_memory(&self) -> usize {
        let st = self.state.borrow();
        st.offset_index.len() + st.time_index.len()
    }

    /// Reads a closed segment's index files whole back into memory (it becomes the active
    /// segment again: truncation).
    async fn reload_closed_entries(&self) -> Result<(), StorageError> {
        let Some(closed) = self.state.borrow().closed else {
            return Ok(());
        };
        let index_bytes = read_small_file(&self.index_path()).await?;
        let time_bytes = read_small_file(&self.time_index_path()).await?;
        let mut st = self.state.borrow_mut();
        st.offset_index = if closed.offset_trusted {
            index::decode_offset_index(&index_bytes, st.size)
        } else {
            Vec::new()
        };
        st.time_index = if closed.time_trusted {
            index::decode_time_index(&time_bytes)
        } else {
            Vec::new()
        };
        st.offset_index_persisted = st.offset_index.len();
        st.time_index_persisted = st.time_index.len();
        st.builder = IndexBuilder::resume(st.time_index.last().copied());
        st.closed = None;
        index_cache::forget(closed.cache_id);
        Ok(())
    }

    /// Marks a closed segment's index (of `kind`) untrusted, if it is still the one `cache_id`
    /// names; logs why once.
    fn distrust(&self, kind: IndexKind, cache_id: u64, why: &str) {
        let mut st = self.state.borrow_mut();
        let Some(closed) = st.closed.as_mut().filter(|c| c.cache_id == cache_id) else {
            return;
        };
        let flag = match kind {
            IndexKind::Offset => &mut closed.offset_trusted,
            IndexKind::Time => &mut closed.time_trusted,
        };
        if *flag {
            *flag = false;
            let file = match kind {
                IndexKind::Offset => INDEX_SUFFIX,
                IndexKind::Time => TIME_INDEX_SUFFIX,
            };
            log::warn!(
                "{}: the .{file} file does not match the log ({why}); lookups in this segment \
                 walk it from the start (a recovery rebuilds the file)",
                self.log_path.display()
            );
        }
    }

    /// One page of an index file: from the shard's cache, else read through the ring, checked
    /// and cached. `entries`: whole entries in the file.
    async fn index_page<E: IndexEntry>(
        &self,
        cache_id: u64,
        page: u64,
        entries: u64,
        log_size: u64,
        file: &mut LookupFile,
    ) -> Result<Rc<[E]>, LookupFailure> {
        let key = PageKey {
            cache_id,
            kind: E::KIND,
            page,
        };
        if let Some(cached) = index_cache::get(&key).and_then(E::unwrap) {
            return Ok(cached);
        }
        let first = page * E::PER_PAGE;
        let n = E::PER_PAGE.min(entries.saturating_sub(first)) as usize;
        let bytes = file
            .get()
            .await?
            .read_at(first * E::LEN as u64, n * E::LEN)
            .await?;
        if bytes.len() != n * E::LEN {
            return Err(LookupFailure::Damaged(format!(
                "the file ends inside page {page}"
            )));
        }
        let decoded: Rc<[E]> = E::decode_page(&bytes, log_size)
            .ok_or_else(|| LookupFailure::Damaged(format!("page {page} breaks the index rules")))?
            .into();
        index_cache::insert(key, E::wrap(decoded.clone()));
        Ok(decoded)
    }

    /// The last entry (and its number) of an index file of `entries` entries that satisfies
    /// `pred` (true for a prefix of a valid file), by `PageSearch`.
    async fn search_file<E: IndexEntry>(
        &self,
        cache_id: u64,
        entries: u64,
        log_size: u64,
        file: &mut LookupFile,
        guess: Option<f64>,
        mut pred: impl FnMut(&E) -> bool,
    ) -> Result<Option<(u64, E)>, LookupFailure> {
        let mut search = PageSearch::new(entries, E::PER_PAGE);
        if let Some(fraction) = guess {
            search = search.with_guess(entries, fraction);
        }
        while let Some(page) = search.next_page() {
            let p = self
                .index_page::<E>(cache_id, page, entries, log_size, file)
                .await?;
            search.feed(page, &p, &mut pred);
        }
        Ok(search.result())
    }

    /// A lookup in a closed segment's index: `None` when the index is untrusted, or turns out
    /// damaged now (it is then marked untrusted), or cannot be read: the caller then walks the
    /// segment from its start.
    async fn closed_lookup<E: IndexEntry>(
        &self,
        closed: ClosedIndex,
        log_size: u64,
        guess: Option<f64>,
        pred: impl FnMut(&E) -> bool,
    ) -> Option<E> {
        if !closed.trusted(E::KIND) {
            return None;
        }
        let mut file = LookupFile::new::<E>(self, closed.cache_id);
        let entries = match closed.entries(E::KIND) {
            Some(n) => Ok(n),
            None => self.count_entries::<E>(closed.cache_id, &mut file).await,
        };
        let found = match entries {
            Ok(n) => {
                self.search_file::<E>(closed.cache_id, n, log_size, &mut file, guess, pred)
                    .await
            }
            Err(e) => Err(e),
        };
        drop(file);
        match found {
            Ok(found) => found.map(|(_, e)| e),
            Err(LookupFailure::Damaged(why)) => {
                self.distrust(E::KIND, closed.cache_id, &why);
                index_cache::forget(closed.cache_id);
                None
            }
            Err(LookupFailure::Io(e)) => {
                log::warn!(
                    "{}: reading the .{} file: {e}; walking the segment instead",
                    self.log_path.display(),
                    E::SUFFIX
                );
                None
            }
        }
    }

    /// Reads the number of whole entries of a closed segment's index file from its size, and
    /// keeps it (while the segment is still closed under the same cache id).
    async fn count_entries<E: IndexEntry>(
        &self,
        cache_id: u64,
        file: &mut LookupFile,
    ) -> Result<u64, LookupFailure> {
        let n = file.get().await?.file_size().await? / E::LEN as u64;
        let mut st = self.state.borrow_mut();
        if let Some(closed) = st.closed.as_mut().filter(|c| c.cache_id == cache_id) {
            match E::KIND {
                IndexKind::Offset => closed.offset_entries = Some(n),
                IndexKind::Time => closed.time_entries = Some(n),
            }
        }
        Ok(n)
    }

    /// The last offset index entry at or before `offset`: where a walk for the batch holding
    /// it may start. `None`: from the segment start.
    pub async fn floor_offset_entry(&self, offset: i64) -> Option<OffsetEntry> {
        let rel = self.relative(offset);
        if rel == 0 {
            // The first batch never has an entry.
            return None;
        }
        let (closed, size, span) = {
            let st = self.state.borrow();
            match st.closed {
                None => return index::floor_by_offset(&st.offset_index, rel),
                Some(c) => (c, st.size, st.next_offset - self.base_offset),
            }
        };
        let guess = f64::from(rel) / span as f64;
        self.closed_lookup::<OffsetEntry>(closed, size, Some(guess), |e| e.relative_offset <= rel)
            .await
    }

    /// `index::last_entry_within` over this segment's offset index.
    pub async fn offset_entry_within(
        &self,
        max_position: u64,
        max_relative_offset: i64,
    ) -> Option<OffsetEntry> {
        let (closed, size, span) = {
            let st = self.state.borrow();
            match st.closed {
                None => {
                    return index::last_entry_within(
                        &st.offset_index,
                        max_position,
                        max_relative_offset,
                    )
                }
                Some(c) => (c, st.size, st.next_offset - self.base_offset),
            }
        };
        let guess =
            (max_position as f64 / size as f64).min(max_relative_offset as f64 / span as f64);
        self.closed_lookup::<OffsetEntry>(closed, size, Some(guess), |e| {
            u64::from(e.position) <= max_position
                && i64::from(e.relative_offset) <= max_relative_offset
        })
        .await
    }

    /// `index::time_floor_below` over this segment's time index.
    pub async fn time_floor_below(&self, timestamp: i64) -> Option<TimeEntry> {
        let (closed, size) = {
            let st = self.state.borrow();
            match st.closed {
                None => return index::time_floor_below(&st.time_index, timestamp),
                Some(c) => (c, st.size),
            }
        };
        self.closed_lookup::<TimeEntry>(closed, size, None, |e| e.timestamp < timestamp)
            .await
    }

    /// A time entry that did not match its batch: the time index of a closed segment is no
    /// longer used.
    pub fn distrust_time_index(&self, why: &str) {
        let id = self.state.borrow().closed.map(|c| c.cache_id);
        if let Some(id) = id {
            self.distrust(IndexKind::Time, id, why);
        }
    }

    pub fn distrust_offset_index(&self, why: &str) {
        let id = self.state.borrow().closed.map(|c| c.cache_id);
        if let Some(id) = id {
            self.distrust(IndexKind::Offset, id, why);
        }
    }

    /// Opens the index files (for a roll's or close's final write and sync).
    pub async fn open_index_files(&self) -> Result<(), StorageError> {
        if self.index_files.borrow().is_some() {
            return Ok(());
        }
        let offset = open_rw(&self.index_path(), false).await?;
        let time = open_rw(&self.time_index_path(), false).await?;
        *self.index_files.borrow_mut() = Some(Rc::new(IndexFiles { offset, time }));
        Ok(())
    }

    /// Closes the index files (the segment is no longer active).
    pub async fn close_index_files(&self) -> Result<(), StorageError> {
        let files = self.index_files.borrow_mut().take();
        if let Some(files) = files {
            if let Ok(files) = Rc::try_unwrap(files) {
                files.offset.close().await?;
                files.time.close().await?;
            }
        }
        Ok(())
    }

    /// Appends the segment's final time entry (largest timestamp) to the in-memory index.
    pub fn finalize_time_index(&self) {
        let mut st = self.state.borrow_mut();
        if let Some(e) = st.builder.finalize() {
            st.time_index.push(e);
        }
    }

    /// Writes index entries that are in memory but not yet in the (open) index files.
    /// Opens the index files for the sync that follows (a roll, a close); `close_index_files`
    /// closes them.
    pub async fn persist_index_tail(&self) -> Result<(), StorageError> {
        self.open_index_files().await?;
        let Some(files) = self.index_files.borrow().clone() else {
            return Ok(());
        };
        let (offset_bytes, offset_at, offset_n, time_bytes, time_at, time_n) = {
            let st = self.state.borrow();
            let mut ob = Vec::new();
            index::encode_offset_entries(&st.offset_index[st.offset_index_persisted..], &mut ob);
            let mut tb = Vec::new();
            index::encode_time_entries(&st.time_index[st.time_index_persisted..], &mut tb);
            (
                ob,
                (st.offset_index_persisted * OFFSET_ENTRY_LEN) as u64,
                st.offset_index.len(),
                tb,
                (st.time_index_persisted * TIME_ENTRY_LEN) as u64,
                st.time_index.len(),
            )
        };
        write_all(&files.offset, offset_bytes, offset_at).await?;
        write_all(&files.time, time_bytes, time_at).await?;
        let mut st = self.state.borrow_mut();
        st.offset_index_persisted = offset_n;
        st.time_index_persisted = time_n;
        Ok(())
    }

    /// fdatasync of the `.log` alone.
    pub async fn sync_log(&self) -> Result<(), StorageError> {
        self.log.fdatasync().await?;
        Ok(())
    }

    /// fdatasync of the `.log` and, when open, the index files.
    pub async fn sync(&self) -> Result<(), StorageError> {
        self.log.fdatasync().await?;
        let files = self.index_files.borrow().clone();
        if let Some(files) = files {
            files.offset.fdatasync().await?;
            files.time.fdatasync().await?;
        }
        Ok(())
    }

    /// Drops this segment's pages from the shard's index cache (they could never be asked
    /// for again: the cache id is not reused).
    fn forget_cached_pages(&self) {
        if let Some(closed) = self.state.borrow().closed {
            index_cache::forget(closed.cache_id);
        }
    }

    /// Removes the segment's files. Open descriptors (readers, fetch responses) stay valid.
    pub async fn delete_files(&self) -> Result<(), StorageError> {
        self.forget_cached_pages();
        self.close_index_files().await?;
        for path in [
            self.log_path.clone(),
            self.index_path(),
            self.time_index_path(),
            self.txn_index_path(),
        ] {
            remove_if_exists(&path).await?;
        }
        Ok(())
    }

    /// Cuts the segment at `position` (a batch boundary; `next_offset` is the base offset of the
    /// batch that was there) and rebuilds the index tail, which also makes it the active segment.
    pub async fn truncate_at(
        &self,
        position: u64,
        next_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<(), StorageError> {
        // A closed segment becomes the active one: its entries come back into memory.
        self.reload_closed_entries().await?;
        self.close_index_files().await?;
        self.log.truncate(position).await?;
        {
            let rel = self.relative(next_offset);
            let mut st = self.state.borrow_mut();
            // Truncation frees the blocks past the cut, reserved ones included.
            st.reserved_to = position;
            st.reserved_max = position;
            st.offset_index.retain(|e| u64::from(e.position) < position);
            st.time_index.retain(|e| e.relative_offset < rel);
        }
        // Write the kept index prefix out, then let `load` validate the tail and regenerate the
        // entries and the builder state for it exactly as recovery would.
        let (ob, tb) = {
            let st = self.state.borrow();
            let (mut ob, mut tb) = (Vec::new(), Vec::new());
            index::encode_offset_entries(&st.offset_index, &mut ob);
            index::encode_time_entries(&st.time_index, &mut tb);
            (ob, tb)
        };
        replace_file(&self.index_path(), ob).await?;
        replace_file(&self.time_index_path(), tb).await?;
        let outcome = self.load(false, index_interval_bytes, false).await?;
        if let Some(damage) = outcome.damage {
            return Err(self.corrupt(format!("while truncating: {damage}")));
        }
        if self.next_offset() != next_offset {
            return Err(self.corrupt(format!(
                "truncation ended at offset {} not {next_offset}",
                self.next_offset()
            )));
        }
        Ok(())
    }

    /// Finds the batch that contains `offset` (the first whose last offset is `>= offset`)
    /// among the first `size` bytes.
    pub async fn find_batch(
        &self,
        offset: i64,
        size: u64,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        self.find_batch_where(offset, size, |_| true).await
    }

    /// Finds the first batch at or after the one containing `offset` that matches `pred`.
    /// Starts at the closest index entry; if the entry does not match the log (a damaged index
    /// that passed the load checks), walks from the segment start instead.
    pub async fn find_batch_where(
        &self,
        offset: i64,
        size: u64,
        mut pred: impl FnMut(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let entry = self.floor_offset_entry(offset).await;
        let start = entry.map_or((0, self.base_offset), |e| {
            (
                u64::from(e.position),
                self.base_offset + i64::from(e.relative_offset),
            )
        });
        // The batch an entry names must start exactly there with exactly that base offset;
        // checked here whatever the walk itself checks about offsets.
        let mut first = start.0 != 0;
        let mut misplaced = false;
        let mut matches = |h: &BatchHeader| {
            if std::mem::take(&mut first) && h.base_offset != start.1 {
                misplaced = true;
                return true;
            }
            h.last_offset() >= offset && pred(h)
        };
        let walked = self
            .first_batch_where(start.0, size, start.1, &mut matches)
            .await;
        // A genuine entry names a batch inside the segment, so the walk from it sees one.
        let bad_entry = match &walked {
            _ if start.0 == 0 => false,
            Err(WalkError::Corrupt { position, .. }) => *position == start.0,
            _ => misplaced || first,
        };
        if !bad_entry {
            return walked.map_err(|e| self.walk_error(e));
        }
        log::warn!(
            "{}: index entry at byte {} does not match the log",
            self.log_path.display(),
            start.0
        );
        self.distrust_offset_index(&format!("entry at byte {} names no batch", start.0));
        let mut matches = |h: &BatchHeader| h.last_offset() >= offset && pred(h);
        self.first_batch_where(0, size, self.base_offset, &mut matches)
            .await
            .map_err(|e| self.walk_error(e))
    }

    /// Walks headers from `position` (base offset `expected_base`) to `end` and returns the
    /// first batch matching `pred`.
    pub async fn first_batch_where(
        &self,
        position: u64,
        end: u64,
        expected_base: i64,
        mut pred: impl FnMut(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader)>, WalkError> {
        let mut found = None;
        scan::walk_headers(&self.log, position, end, expected_base, |pos, h| {
            if pred(h) {
                found = Some((pos, *h));
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await?;
        Ok(found)
    }

    pub fn walk_error(&self, e: WalkError) -> StorageError {
        match e {
            WalkError::Io(e) => StorageError::Io(e),
            WalkError::Corrupt { position, reason } => {
                self.corrupt(format!("at byte {position}: {reason}"))
            }
        }
    }

    /// The reservation an append ending at `end` makes due: `Some(to)` when less than half of
    /// `ahead` is left reserved past `end` (never past `segment_bytes`, where the segment
    /// rolls). Records it as made; `reserve` then makes it.
    pub fn reservation_due(&self, end: u64, ahead: u64, segment_bytes: u64) -> Option<u64> {
        let mut st = self.state.borrow_mut();
        if ahead == 0 || st.reserve_failed || end + ahead / 2 <= st.reserved_to {
            return None;
        }
        let to = (end + ahead).min(segment_bytes.max(end));
        if to <= st.reserved_to {
            return None;
        }
        st.reserved_to = to;
        st.reserved_max = st.reserved_max.max(to);
        Some(to)
    }

    /// Reserves the `.log`'s disk up to `to` without changing its size. A failure only ends
    /// reservations for this segment: appends then allocate as they go (and report a full disk
    /// themselves).
    pub async fn reserve(&self, to: u64) {
        if let Err(e) = self.log.pre_allocate(to, true).await {
            self.state.borrow_mut().reserve_failed = true;
            log::warn!(
                "{}: cannot reserve disk ahead of appends ({e}); appending without",
                self.log_path.display()
            );
        }
    }

    /// Gives back the disk reserved past the data of a segment that takes no more appends.
    pub async fn release_reservation(&self) -> Result<(), StorageError> {
        let (size, max) = {
            let st = self.state.borrow();
            (st.size, st.reserved_max)
        };
        if max > size {
            self.log.deallocate(size, max - size).await?;
            self.state.borrow_mut().reserved_max = size;
        }
        Ok(())
    }

    /// Closes the files if no reader holds the segment any more (else they close when the last
    /// holder drops them).
    pub async fn close(self: Rc<Self>) -> Result<(), StorageError> {
        self.forget_cached_pages();
        self.close_index_files().await?;
        if let Ok(seg) = Rc::try_unwrap(self) {
            seg.log.close().await?;
        }
        Ok(())
    }
}

/// Replaces a small file's content in place. Index files are derived data (a torn rewrite is
/// repaired by the next load); the fdatasync keeps a recovered segment's indexes in step with
/// its log once the recovery point moves past it.
async fn replace_file(path: &Path, bytes: Vec<u8>) -> Result<(), StorageError> {
    let file = open_rw(path, false).await?;
    let len = bytes.len() as u64;
    write_all(&file, bytes, 0).await?;
    file.truncate(len).await?;
    file.fdatasync().await?;
    file.close().await?;
    Ok(())
}

/// Makes a (small) index file hold `bytes` from `at` on and nothing after: the tail that a
/// replay regenerated. Synced, like `replace_file`.
async fn rewrite_tail(path: &Path, at: u64, bytes: Vec<u8>) -> Result<(), StorageError> {
    let file = open_rw(path, false).await?;
    let end = at + bytes.len() as u64;
    write_all(&file, bytes, at).await?;
    file.truncate(end).await?;
    file.fdatasync().await?;
    file.close().await?;
    Ok(())
}

pub async fn remove_if_exists(path: &Path) -> Result<(), StorageError> {
    match shardlog_runtime::fs::remove(path).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = io::Error::from(e);
            if e.kind() == io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(file_name(0, LOG_SUFFIX), "00000000000000000000.log");
        assert_eq!(
            file_name(42, TIME_INDEX_SUFFIX),
            "00000000000000000042.timeindex"
        );
        assert_eq!(
            parse_file_name("00000000000000000042.index"),
            Some((42, INDEX_SUFFIX))
        );
        assert_eq!(
            parse_file_name("09223372036854775807.log"),
            Some((i64::MAX, LOG_SUFFIX))
        );
        assert_eq!(parse_file_name("09223372036854775808.log"), None);
        assert_eq!(parse_file_name("0000000000000000042.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.log.deleted"), None);
        assert_eq!(parse_file_name("0000000000000000004a.log"), None);
        assert_eq!(parse_file_name("checkpoint"), None);
    }

    /// The raw OS error (errno) of the first error in `err`'s chain that has one.
    fn os_error_in_chain(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(code) = e
                .downcast_ref::<io::Error>()
                .and_then(io::Error::raw_os_error)
            {
                return Some(code);
            }
            cur = e.source();
        }
        None
    }

    #[test]
    fn a_short_write_is_reported_as_a_full_disk() {
        let e = short_write_error(Some(Path::new("/data/t-0/00000000000000000000.log")), 3, 10);
        assert_eq!(e.kind(), io::Error::from_raw_os_error(libc::ENOSPC).kind());
        let text = StorageError::from(e).to_string();
        assert!(
            text.contains(
                "no space left on device (ENOSPC) writing \
                 /data/t-0/00000000000000000000.log: wrote 3 of 10 bytes"
            ),
            "{text}"
        );
        let e = short_write_error(None, 0, 10);
        assert!(
            e.to_string().contains("writing a file: wrote 0 of 10"),
            "{e}"
        );
    }

    /// `/dev/full` fails every write with ENOSPC: the error names the file and ENOSPC, has the
    /// kind of ENOSPC, and the errno stays in the chain.
    #[test]
    fn a_real_enospc_keeps_its_os_error_and_names_the_file() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            eprintln!("skipped: this machine has no /dev/full");
            return;
        }
        let err = shardlog_runtime::start_executor(|| async move {
            let file = OpenOptions::new()
                .write(true)
                .buffered_open("/dev/full")
                .await
                .expect("open /dev/full");
            let result = write_all(&file, vec![7; 100], 0).await;
            let _ = file.close().await;
            result.expect_err("a write to /dev/full fails")
        })
        .expect("spawn executor")
        .join()
        .expect("executor thread");
        let text = err.to_string();
        assert!(
            text.contains("no space left on device (ENOSPC) writing /dev/full"),
            "{text}"
        );
        assert_eq!(os_error_in_chain(&err), Some(libc::ENOSPC), "{err:?}");
        let StorageError::Io(io_err) = &err else {
            panic!("not an i/o error: {err:?}")
        };
        assert_eq!(
            io_err.kind(),
            io::Error::from_raw_os_error(libc::ENOSPC).kind()
        );
    }
}
