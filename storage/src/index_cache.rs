//! The index pages of closed segments that a shard looked at recently: a bounded LRU cache,
//! one per thread (each shard is a thread, so no lock and no atomics on the lookup path).
//!
//! A closed segment keeps no index entries on the heap (`segment::ClosedIndex`); its lookups
//! binary-search the `.index` / `.timeindex` files page by page, reading pages through the
//! shard's io_uring ring, and keep the decoded pages here. Pages are keyed by the segment's
//! *cache id*, a number handed out once per process (`new_cache_id`) each time a segment
//! becomes closed, never by path: a segment that is deleted, truncated (it becomes active
//! again) or replaced by a new one (the log cleaner) has a new id, so its old pages can never
//! be served for it. `forget` drops them early to give the memory back.
//!
//! The index files themselves stay open for a while too: up to `MAX_OPEN_INDEX_FILES`
//! descriptors per shard, the least recently used closed first (asynchronously, through the
//! ring, when the last holder drops it), and those of a forgotten segment at once (so a
//! deleted file does not keep its disk space). Without them every lookup that misses a page
//! would open and close the file (two more ring operations, and a path lookup).
//!
//! Why a cache of 8 MiB per shard (`DEFAULT_CAPACITY_BYTES`): memory for indexes must not grow
//! with the size of the log, so the cache has a fixed size; the page cache of the kernel
//! still holds the files, and a miss costs one ring read of a (usually resident) 4 KiB page,
//! some microseconds. A lookup in a full 1 GiB segment (2 MiB of `.index` at the default
//! `index.interval.bytes`, 512 pages) reads at most 10 pages, and the upper levels of its
//! binary search are shared by every lookup of that segment; a consumer reading sequentially
//! needs one new page per 2 MiB of log. 8 MiB is 2,048 pages: the search paths of some hundreds
//! of segments read at the same time, per shard, for less than the index of 2 GiB of log held
//! the old way (about 5 MiB per GiB).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use shardlog_runtime::fs::BufferedFile;

use crate::index::{OffsetEntry, TimeEntry, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN};

/// Bytes of index file per page: one filesystem page.
pub const PAGE_BYTES: usize = 4096;
/// `.index` entries per page (4,096 bytes).
pub const OFFSET_ENTRIES_PER_PAGE: u64 = (PAGE_BYTES / OFFSET_ENTRY_LEN) as u64;
/// `.timeindex` entries per page (341 entries, 4,092 bytes: pages hold whole entries).
pub const TIME_ENTRIES_PER_PAGE: u64 = (PAGE_BYTES / TIME_ENTRY_LEN) as u64;
/// Memory the cache of one shard may hold (decoded entries plus `PAGE_OVERHEAD` per page).
pub const DEFAULT_CAPACITY_BYTES: usize = 8 << 20;
/// What a cached page costs besides its entries: key, links, map slot, `Rc` header.
const PAGE_OVERHEAD: usize = 96;
/// Index file descriptors a shard keeps open for closed segments: one per segment being read
/// at the same time is enough to avoid reopening; 256 per shard is small next to the
/// descriptors the segments' `.log` files already hold (two each).
pub const MAX_OPEN_INDEX_FILES: usize = 256;

/// Which index file of a segment a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexKind {
    Offset,
    Time,
}

/// A page of one segment's index file, by page number (page `p` holds entries
/// `p * entries_per_page ..`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub cache_id: u64,
    pub kind: IndexKind,
    pub page: u64,
}

/// The decoded, validated entries of one page (strictly increasing, as the index rules say).
#[derive(Debug, Clone)]
pub enum Page {
    Offset(Rc<[OffsetEntry]>),
    Time(Rc<[TimeEntry]>),
}

impl Page {
    fn bytes(&self) -> usize {
        PAGE_OVERHEAD
            + match self {
                Page::Offset(e) => std::mem::size_of_val(&e[..]),
                Page::Time(e) => std::mem::size_of_val(&e[..]),
            }
    }
}

static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

/// A cache id no segment had before in this process (ids are never reused).
pub fn new_cache_id() -> u64 {
    NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed)
}

/// Counters of this thread's cache (tests, diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub pages: usize,
    pub bytes: usize,
    pub capacity_bytes: usize,
    /// Index files held open (see `MAX_OPEN_INDEX_FILES`).
    pub open_files: usize,
}

const NIL: usize = usize::MAX;

struct Slot {
    key: PageKey,
    page: Page,
    /// Towards the most recently used end.
    newer: usize,
    /// Towards the least recently used end.
    older: usize,
}

/// An LRU of pages: a map from key to slot and a doubly linked list through the slots.
struct Lru {
    map: HashMap<PageKey, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
    bytes: usize,
    capacity: usize,
    stats: CacheStats,
}

impl Lru {
    fn new(capacity: usize) -> Lru {
        Lru {
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            bytes: 0,
            capacity,
            stats: CacheStats::default(),
        }
    }

    fn slot(&mut self, i: usize) -> &mut Slot {
        self.slots[i].as_mut().expect("linked slots are occupied")
    }

    fn unlink(&mut self, i: usize) {
        let (newer, older) = {
            let s = self.slot(i);
            (s.newer, s.older)
        };
        match newer {
            NIL => self.newest = older,
            n => self.slot(n).older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slot(o).newer = newer,
        }
    }

    fn push_newest(&mut self, i: usize) {
        let old_newest = self.newest;
        {
            let s = self.slot(i);
            s.newer = NIL;
            s.older = old_newest;
        }
        match old_newest {
            NIL => self.oldest = i,
            n => self.slot(n).newer = i,
        }
        self.newest = i;
    }

    fn remove(&mut self, i: usize) -> Slot {
        self.unlink(i);
        let slot = self.slots[i].take().expect("removing an occupied slot");
        self.map.remove(&slot.key);
        self.free.push(i);
        self.bytes -= slot.page.bytes();
        slot
    }

    fn get(&mut self, key: &PageKey) -> Option<Page> {
        let Some(&i) = self.map.get(key) else {
            self.stats.misses += 1;
            return None;
        };
        self.stats.hits += 1;
        self.unlink(i);
        self.push_newest(i);
        Some(self.slot(i).page.clone())
    }

    fn insert(&mut self, key: PageKey, page: Page) {
        if let Some(&i) = self.map.get(&key) {
            self.remove(i);
        }
        let bytes = page.bytes();
        if bytes > self.capacity {
            return;
        }
        while self.bytes + bytes > self.capacity && self.oldest != NIL {
            self.remove(self.oldest);
            self.stats.evictions += 1;
        }
        let slot = Slot {
            key,
            page,
            newer: NIL,
            older: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.map.insert(key, i);
        self.bytes += bytes;
        self.push_newest(i);
    }

    fn forget(&mut self, cache_id: u64) {
        let doomed: Vec<usize> = self
            .map
            .iter()
            .filter(|(k, _)| k.cache_id == cache_id)
            .map(|(_, &i)| i)
            .collect();
        for i in doomed {
            self.remove(i);
        }
    }

    fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        while self.bytes > self.capacity && self.oldest != NIL {
            self.remove(self.oldest);
            self.stats.evictions += 1;
        }
    }
}

/// Open index files by (cache id, kind), with the tick of their last use.
#[derive(Default)]
struct OpenFiles {
    files: Vec<(u64, IndexKind, Rc<BufferedFile>, u64)>,
    tick: u64,
}

impl OpenFiles {
    fn get(&mut self, cache_id: u64, kind: IndexKind) -> Option<Rc<BufferedFile>> {
        self.tick += 1;
        let tick = self.tick;
        self.files
            .iter_mut()
            .find(|f| f.0 == cache_id && f.1 == kind)
            .map(|f| {
                f.3 = tick;
                f.2.clone()
            })
    }

    /// Keeps `file`; returns the one it evicts (dropped by the caller, outside the borrow).
    fn insert(
        &mut self,
        cache_id: u64,
        kind: IndexKind,
        file: Rc<BufferedFile>,
    ) -> Option<Rc<BufferedFile>> {
        self.tick += 1;
        if let Some(f) = self
            .files
            .iter_mut()
            .find(|f| f.0 == cache_id && f.1 == kind)
        {
            f.3 = self.tick;
            return Some(std::mem::replace(&mut f.2, file));
        }
        let evicted = if self.files.len() >= MAX_OPEN_INDEX_FILES {
            let (i, _) = self
                .files
                .iter()
                .enumerate()
                .min_by_key(|(_, f)| f.3)
                .expect("a full list is not empty");
            Some(self.files.swap_remove(i).2)
        } else {
            None
        };
        self.files.push((cache_id, kind, file, self.tick));
        evicted
    }

    fn forget(&mut self, cache_id: u64) -> Vec<Rc<BufferedFile>> {
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.files.len() {
            if self.files[i].0 == cache_id {
                gone.push(self.files.swap_remove(i).2);
            } else {
                i += 1;
            }
        }
        gone
    }
}

thread_local! {
    static CACHE: RefCell<Lru> = RefCell::new(Lru::new(DEFAULT_CAPACITY_BYTES));
    static OPEN_FILES: RefCell<OpenFiles> = RefCell::new(OpenFiles::default());
}

/// The open index file of a closed segment, if this shard holds one.
pub fn open_file(cache_id: u64, kind: IndexKind) -> Option<Rc<BufferedFile>> {
    OPEN_FILES.with(|f| f.borrow_mut().get(cache_id, kind))
}

/// Keeps an index file open for the next lookups of its segment (closing the least recently
/// used one beyond `MAX_OPEN_INDEX_FILES`).
pub fn keep_open_file(cache_id: u64, kind: IndexKind, file: Rc<BufferedFile>) {
    let evicted = OPEN_FILES.with(|f| f.borrow_mut().insert(cache_id, kind, file));
    // Dropped here, with no borrow held: glommio closes a dropped file through the ring.
    drop(evicted);
}

/// The page, if this thread's cache holds it (and marks it most recently used).
pub fn get(key: &PageKey) -> Option<Page> {
    CACHE.with(|c| c.borrow_mut().get(key))
}

/// Keeps a page, evicting the least recently used ones beyond the capacity.
pub fn insert(key: PageKey, page: Page) {
    CACHE.with(|c| c.borrow_mut().insert(key, page));
}

/// Drops every page of a segment (deleted, truncated, closed): they could never be asked for
/// again, since a segment that becomes closed again gets a new cache id.
pub fn forget(cache_id: u64) {
    // `try_with`: also called when a segment is dropped, which may happen while the thread
    // is being torn down.
    let _ = CACHE.try_with(|c| c.borrow_mut().forget(cache_id));
    let files = OPEN_FILES.try_with(|f| f.borrow_mut().forget(cache_id));
    drop(files);
}

/// Changes this thread's capacity (tests use a tiny one); evicts down to it at once.
pub fn set_capacity_bytes(bytes: usize) {
    CACHE.with(|c| c.borrow_mut().set_capacity(bytes));
}

/// This thread's counters and occupancy.
pub fn stats() -> CacheStats {
    CACHE.with(|c| {
        let c = c.borrow();
        CacheStats {
            pages: c.map.len(),
            bytes: c.bytes,
            capacity_bytes: c.capacity,
            open_files: OPEN_FILES.with(|f| f.borrow().files.len()),
            ..c.stats
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cache_id: u64, page: u64) -> PageKey {
        PageKey {
            cache_id,
            kind: IndexKind::Offset,
            page,
        }
    }

    fn page(first: u32, n: u32) -> Page {
        Page::Offset(
            (0..n)
                .map(|i| OffsetEntry {
                    relative_offset: first + i,
                    position: (first + i) * 10,
                })
                .collect(),
        )
    }

    fn first_of(p: &Page) -> u32 {
        match p {
            Page::Offset(e) => e[0].relative_offset,
            Page::Time(_) => panic!("an offset page"),
        }
    }

    #[test]
    fn least_recently_used_pages_go_first_and_bytes_stay_bounded() {
        let one = page(0, 16).bytes();
        let mut lru = Lru::new(3 * one);
        for p in 0..3 {
            lru.insert(key(1, p), page(p as u32 * 100, 16));
        }
        // Touch page 0: page 1 is now the least recently used.
        assert_eq!(lru.get(&key(1, 0)).map(|p| first_of(&p)), Some(0));
        lru.insert(key(1, 3), page(300, 16));
        assert!(lru.get(&key(1, 1)).is_none());
        for p in [0, 2, 3] {
            assert_eq!(
                lru.get(&key(1, p)).map(|p| first_of(&p)),
                Some(p as u32 * 100)
            );
        }
        assert_eq!(lru.bytes, 3 * one);
        assert_eq!(lru.stats.evictions, 1);
        // Many more pages than fit: never above the capacity, the newest are kept.
        for p in 10..1_000 {
            lru.insert(key(2, p), page(p as u32, 16));
            assert!(lru.bytes <= lru.capacity);
        }
        assert_eq!(lru.map.len(), 3);
        assert!(lru.get(&key(2, 999)).is_some());
        assert!(lru.get(&key(2, 10)).is_none());
        // Replacing a page under the same key keeps one copy.
        lru.insert(key(2, 999), page(5, 16));
        assert_eq!(lru.map.len(), 3);
        assert_eq!(lru.get(&key(2, 999)).map(|p| first_of(&p)), Some(5));
        // A capacity too small for one page keeps nothing.
        lru.set_capacity(one - 1);
        assert_eq!((lru.map.len(), lru.bytes), (0, 0));
        lru.insert(key(3, 0), page(0, 16));
        assert_eq!(lru.map.len(), 0);
    }

    #[test]
    fn forget_drops_only_that_segment_and_ids_are_never_reused() {
        let mut lru = Lru::new(1 << 20);
        for p in 0..5 {
            lru.insert(key(7, p), page(0, 4));
            lru.insert(key(8, p), page(0, 4));
        }
        lru.forget(7);
        assert!((0..5).all(|p| lru.get(&key(7, p)).is_none()));
        assert!((0..5).all(|p| lru.get(&key(8, p)).is_some()));
        assert_eq!(lru.bytes, 5 * page(0, 4).bytes());
        // The freed slots are reused and the list stays consistent.
        for p in 0..5 {
            lru.insert(key(9, p), page(0, 4));
        }
        assert_eq!(lru.slots.len(), 10);
        let a = new_cache_id();
        let b = new_cache_id();
        assert!(b > a);
    }
}
