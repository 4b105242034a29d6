//! The sparse offset index (`.index`) and time index (`.timeindex`) of one segment: entry layout,
//! decoding what is on disk (keeping only the valid prefix), lookups, and the rule that decides
//! when an entry is added (`IndexBuilder`). Pure functions; the segment module does the I/O.
//!
//! Both indexes are derived data: the same `IndexBuilder` runs on append and when recovery
//! replays a `.log`, so a rebuilt index is identical to the one written live (for the same
//! `index_interval_bytes`).

/// Size of one `.index` entry: relative offset u32 BE, position u32 BE.
pub const OFFSET_ENTRY_LEN: usize = 8;
/// Size of one `.timeindex` entry: timestamp i64 BE, relative offset u32 BE.
pub const TIME_ENTRY_LEN: usize = 12;
/// Kafka's "no timestamp" value; timestamps at or below it are never indexed.
pub const NO_TIMESTAMP: i64 = -1;

/// One `.index` entry: the batch whose base offset is `segment base + relative_offset` starts at
/// byte `position` of the `.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One `.timeindex` entry: the largest `max_timestamp` of the segment up to and including the
/// batch at `segment base + relative_offset`, where it was first reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

pub fn encode_offset_entries(entries: &[OffsetEntry], out: &mut Vec<u8>) {
    out.reserve(entries.len() * OFFSET_ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&e.relative_offset.to_be_bytes());
        out.extend_from_slice(&e.position.to_be_bytes());
    }
}

pub fn encode_time_entries(entries: &[TimeEntry], out: &mut Vec<u8>) {
    out.reserve(entries.len() * TIME_ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&e.timestamp.to_be_bytes());
        out.extend_from_slice(&e.relative_offset.to_be_bytes());
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One `.index` entry from its 8 bytes.
pub fn decode_offset_entry(b: &[u8]) -> OffsetEntry {
    OffsetEntry {
        relative_offset: be_u32(&b[0..4]),
        position: be_u32(&b[4..8]),
    }
}

/// One `.timeindex` entry from its 12 bytes.
pub fn decode_time_entry(b: &[u8]) -> TimeEntry {
    TimeEntry {
        timestamp: i64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
        relative_offset: be_u32(&b[8..12]),
    }
}

/// Decodes the longest valid prefix of a `.index` file: whole entries, strictly increasing in
/// both fields, every position inside a log of `log_size` bytes. A torn tail (length not a
/// multiple of 8) or garbage after a crash ends the prefix.
pub fn decode_offset_index(bytes: &[u8], log_size: u64) -> Vec<OffsetEntry> {
    let mut out: Vec<OffsetEntry> = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_LEN);
    for chunk in bytes.chunks_exact(OFFSET_ENTRY_LEN) {
        let e = decode_offset_entry(chunk);
        let increasing = out
            .last()
            .is_none_or(|p| e.relative_offset > p.relative_offset && e.position > p.position);
        if !increasing || u64::from(e.position) >= log_size {
            break;
        }
        out.push(e);
    }
    out
}

/// Decodes the longest valid prefix of a `.timeindex` file: whole entries with non-negative,
/// strictly increasing timestamps and strictly increasing relative offsets.
pub fn decode_time_index(bytes: &[u8]) -> Vec<TimeEntry> {
    let mut out: Vec<TimeEntry> = Vec::with_capacity(bytes.len() / TIME_ENTRY_LEN);
    for chunk in bytes.chunks_exact(TIME_ENTRY_LEN) {
        let e = decode_time_entry(chunk);
        let increasing = out
            .last()
            .is_none_or(|p| e.timestamp > p.timestamp && e.relative_offset > p.relative_offset);
        if !increasing || e.timestamp <= NO_TIMESTAMP {
            break;
        }
        out.push(e);
    }
    out
}

/// A page of a closed segment's `.index` (whole entries read from the file), if every entry in
/// it passes `decode_offset_index`'s rules. Lookups in closed segments check each page they
/// read this way (the file is not checked at open); a page that fails makes the segment's index
/// untrusted.
pub fn decode_offset_page(bytes: &[u8], log_size: u64) -> Option<Vec<OffsetEntry>> {
    let entries = decode_offset_index(bytes, log_size);
    (entries.len() * OFFSET_ENTRY_LEN == bytes.len()).then_some(entries)
}

/// A page of a closed segment's `.timeindex`, if every entry in it passes
/// `decode_time_index`'s rules.
pub fn decode_time_page(bytes: &[u8]) -> Option<Vec<TimeEntry>> {
    let entries = decode_time_index(bytes);
    (entries.len() * TIME_ENTRY_LEN == bytes.len()).then_some(entries)
}

/// A binary search for the last entry of an index file that satisfies a predicate which holds
/// for a prefix of the entries (`relative_offset <= x`, `timestamp < t`, ...), reading one page
/// at a time: `next_page` says which page to read, `feed` takes its entries. A page whose first
/// entry fails moves the search left; a page where the predicate turns false ends it; a page
/// that passes all the way moves it right. At most `log2(pages) + 1` pages are read.
///
/// Whatever the file holds, the result is an entry that satisfies the predicate (or none): a
/// damaged file can make the search miss the best entry, never return a wrong one.
#[derive(Debug, Clone)]
pub struct PageSearch<E> {
    entries_per_page: u64,
    /// Pages `< lo` start with an entry that satisfies the predicate.
    lo: u64,
    /// Pages `>= hi` do not (or do not exist).
    hi: u64,
    best: Option<(u64, E)>,
    done: bool,
    /// A page to try before bisecting (`with_guess`), and whether its neighbour was tried.
    guess: Option<u64>,
    guessed_neighbour: bool,
}

impl<E: Copy> PageSearch<E> {
    /// A search over `entries` entries, `entries_per_page` to a page.
    pub fn new(entries: u64, entries_per_page: u64) -> Self {
        assert!(entries_per_page > 0);
        PageSearch {
            entries_per_page,
            lo: 0,
            hi: entries.div_ceil(entries_per_page),
            best: None,
            done: false,
            guess: None,
            guessed_neighbour: false,
        }
    }

    /// Starts at the page holding entry `fraction * entries` (an interpolated guess: offsets
    /// and positions grow about evenly through a segment), then its neighbour on the side the
    /// answer lies, then bisects what is left. A right guess reads one page, a near one two;
    /// the result is the same whatever the guess.
    pub fn with_guess(mut self, entries: u64, fraction: f64) -> Self {
        if self.hi > 0 && fraction.is_finite() {
            let entry = (fraction.clamp(0.0, 1.0) * entries as f64) as u64;
            self.guess = Some((entry / self.entries_per_page).min(self.hi - 1));
        }
        self
    }

    /// The page to read next, or `None` when the search is over.
    pub fn next_page(&self) -> Option<u64> {
        if self.done || self.lo >= self.hi {
            return None;
        }
        match self.guess {
            Some(g) if (self.lo..self.hi).contains(&g) => Some(g),
            _ => Some(self.lo + (self.hi - self.lo) / 2),
        }
    }

    /// Takes the entries of `page` (as named by `next_page`).
    pub fn feed(&mut self, page: u64, entries: &[E], mut pred: impl FnMut(&E) -> bool) {
        let mut n = entries.partition_point(|e| pred(e));
        // Pages are checked before they are fed, so this only matters for a damaged page that
        // got through: never return an entry that fails.
        while n > 0 && !pred(&entries[n - 1]) {
            n -= 1;
        }
        // After the guess, its neighbour towards the answer; after that, bisection.
        self.guess = match self.guess.take() {
            Some(g) if g == page && !self.guessed_neighbour => {
                self.guessed_neighbour = true;
                if n == 0 {
                    page.checked_sub(1)
                } else {
                    Some(page + 1)
                }
            }
            _ => None,
        };
        if n == 0 {
            self.hi = page;
            return;
        }
        self.best = Some((page * self.entries_per_page + n as u64 - 1, entries[n - 1]));
        if n < entries.len() {
            self.done = true;
        } else {
            self.lo = page + 1;
        }
    }

    /// The last entry that satisfies the predicate, with its index in the file.
    pub fn result(&self) -> Option<(u64, E)> {
        self.best
    }
}

/// The last entry whose relative offset is `<= relative_offset`: where to start scanning for the
/// batch that contains it. `None` means "from the start of the segment".
pub fn floor_by_offset(entries: &[OffsetEntry], relative_offset: u32) -> Option<OffsetEntry> {
    let i = entries.partition_point(|e| e.relative_offset <= relative_offset);
    i.checked_sub(1).map(|i| entries[i])
}

/// The last entry at or before byte `max_position` whose batch starts at or before
/// `max_relative_offset`. Every batch before such an entry ends at or before `max_position` and
/// holds only offsets below `max_relative_offset`, so a read may include them all unscanned.
pub fn last_entry_within(
    entries: &[OffsetEntry],
    max_position: u64,
    max_relative_offset: i64,
) -> Option<OffsetEntry> {
    let by_pos = entries.partition_point(|e| u64::from(e.position) <= max_position);
    let by_off = entries.partition_point(|e| i64::from(e.relative_offset) <= max_relative_offset);
    by_pos.min(by_off).checked_sub(1).map(|i| entries[i])
}

/// The last time entry with a timestamp `< timestamp`. No batch before its offset reaches
/// `timestamp`, so a search for the first batch with `max_timestamp >= timestamp` may start there.
pub fn time_floor_below(entries: &[TimeEntry], timestamp: i64) -> Option<TimeEntry> {
    let i = entries.partition_point(|e| e.timestamp < timestamp);
    i.checked_sub(1).map(|i| entries[i])
}

/// Decides index entries batch by batch, exactly as Kafka's `LogSegment.append` does:
/// an offset entry for a batch when more than `index_interval_bytes` of log were written since
/// the previous entry, and with it a time entry if the segment's largest timestamp grew since
/// the last time entry. `finalize` (at roll, close and after recovery) records the final maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexBuilder {
    bytes_since_entry: u64,
    max_timestamp: i64,
    offset_of_max: u32,
    last_time_entry: i64,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self::resume(None)
    }
}

impl IndexBuilder {
    /// A builder positioned right at an offset entry (or at the segment start), whose time index
    /// so far ends with `last_time_entry`.
    pub fn resume(last_time_entry: Option<TimeEntry>) -> Self {
        let (ts, rel) =
            last_time_entry.map_or((NO_TIMESTAMP, 0), |e| (e.timestamp, e.relative_offset));
        IndexBuilder {
            bytes_since_entry: 0,
            max_timestamp: ts,
            offset_of_max: rel,
            last_time_entry: ts,
        }
    }

    /// Accounts one batch of `len` bytes at `position`; returns the entries to append.
    pub fn on_batch(
        &mut self,
        relative_offset: u32,
        position: u32,
        len: u64,
        max_timestamp: i64,
        index_interval_bytes: u32,
    ) -> (Option<OffsetEntry>, Option<TimeEntry>) {
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.offset_of_max = relative_offset;
        }
        let mut entries = (None, None);
        if self.bytes_since_entry > u64::from(index_interval_bytes) {
            entries.0 = Some(OffsetEntry {
                relative_offset,
                position,
            });
            entries.1 = self.time_entry_if_grown();
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += len;
        entries
    }

    /// The final time entry of a segment (or of a run), if the maximum grew since the last one.
    pub fn finalize(&mut self) -> Option<TimeEntry> {
        self.time_entry_if_grown()
    }

    fn time_entry_if_grown(&mut self) -> Option<TimeEntry> {
        if self.max_timestamp > self.last_time_entry {
            self.last_time_entry = self.max_timestamp;
            return Some(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: self.offset_of_max,
            });
        }
        None
    }

    /// The largest batch `max_timestamp` seen, or `NO_TIMESTAMP`.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
}

/// Where a replay of a `.log` starts when the indexes read from disk are trusted up to a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayStart {
    /// Offset entries kept as they are (those at or before `position`).
    pub keep_offset_entries: usize,
    /// Time entries kept as they are (those up to and including `relative_offset`: an entry for
    /// the start batch itself was written when that batch was indexed, so it is exact).
    pub keep_time_entries: usize,
    /// The batch the replay starts with.
    pub relative_offset: u32,
    pub position: u32,
}

/// Chooses the replay start for a segment whose index files passed the prefix checks: the offset
/// entry at or before both the last offset entry and the batch of the last time entry. Replaying
/// from there re-validates the tail of the log (CRC, offsets) and regenerates any entries that
/// were lost, so the segment's largest timestamp is exact. An empty time index on a non-empty
/// segment gives no such anchor: the replay starts at the beginning.
pub fn replay_start(
    offset_index: &[OffsetEntry],
    time_index: &[TimeEntry],
    log_size: u64,
) -> ReplayStart {
    let from_start = ReplayStart {
        keep_offset_entries: 0,
        keep_time_entries: 0,
        relative_offset: 0,
        position: 0,
    };
    let Some(last_time) = time_index.last() else {
        return from_start;
    };
    if log_size == 0 {
        return from_start;
    }
    let last_offset_rel = offset_index.last().map_or(0, |e| e.relative_offset);
    let target = last_offset_rel.min(last_time.relative_offset);
    let keep_offset_entries = offset_index.partition_point(|e| e.relative_offset <= target);
    let Some(start) = keep_offset_entries.checked_sub(1).map(|i| offset_index[i]) else {
        return from_start;
    };
    let keep_time_entries =
        time_index.partition_point(|e| e.relative_offset <= start.relative_offset);
    ReplayStart {
        keep_offset_entries,
        keep_time_entries,
        relative_offset: start.relative_offset,
        position: start.position,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oe(r: u32, p: u32) -> OffsetEntry {
        OffsetEntry {
            relative_offset: r,
            position: p,
        }
    }
    fn te(t: i64, r: u32) -> TimeEntry {
        TimeEntry {
            timestamp: t,
            relative_offset: r,
        }
    }

    #[test]
    fn offset_index_round_trip_and_valid_prefix() {
        let entries = vec![oe(3, 100), oe(9, 300), oe(20, 900)];
        let mut bytes = Vec::new();
        encode_offset_entries(&entries, &mut bytes);
        assert_eq!(bytes.len(), 24);
        assert_eq!(&bytes[0..8], &[0, 0, 0, 3, 0, 0, 0, 100]);
        assert_eq!(decode_offset_index(&bytes, 1000), entries);
        // Torn tail: the partial entry is dropped.
        assert_eq!(decode_offset_index(&bytes[..21], 1000), entries[..2]);
        // An entry pointing at or beyond the end of the log ends the prefix.
        assert_eq!(decode_offset_index(&bytes, 900), entries[..2]);
        // Non-increasing entries end the prefix.
        let mut bad = bytes.clone();
        bad[16..20].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(decode_offset_index(&bad, 1000), entries[..2]);
        assert!(decode_offset_index(&[], 10).is_empty());
    }

    #[test]
    fn time_index_round_trip_and_valid_prefix() {
        let entries = vec![te(1_000, 0), te(1_500, 4), te(9_000, 7)];
        let mut bytes = Vec::new();
        encode_time_entries(&entries, &mut bytes);
        assert_eq!(bytes.len(), 36);
        assert_eq!(decode_time_index(&bytes), entries);
        assert_eq!(decode_time_index(&bytes[..35]), entries[..2]);
        let mut bad = bytes.clone();
        bad[12..20].copy_from_slice(&999i64.to_be_bytes());
        assert_eq!(decode_time_index(&bad), entries[..1]);
        let mut neg = Vec::new();
        encode_time_entries(&[te(-1, 0)], &mut neg);
        assert!(decode_time_index(&neg).is_empty());
    }

    #[test]
    fn lookups() {
        let idx = vec![oe(10, 100), oe(20, 200), oe(30, 300)];
        assert_eq!(floor_by_offset(&idx, 5), None);
        assert_eq!(floor_by_offset(&idx, 10), Some(oe(10, 100)));
        assert_eq!(floor_by_offset(&idx, 29), Some(oe(20, 200)));
        assert_eq!(floor_by_offset(&idx, 1_000), Some(oe(30, 300)));
        assert_eq!(last_entry_within(&idx, 99, 1_000), None);
        assert_eq!(last_entry_within(&idx, 250, 1_000), Some(oe(20, 200)));
        assert_eq!(last_entry_within(&idx, 1_000, 25), Some(oe(20, 200)));
        assert_eq!(last_entry_within(&idx, 1_000, 30), Some(oe(30, 300)));
        assert_eq!(last_entry_within(&idx, 300, 9), None);
        let t = vec![te(100, 0), te(200, 5), te(300, 9)];
        assert_eq!(time_floor_below(&t, 100), None);
        assert_eq!(time_floor_below(&t, 101), Some(te(100, 0)));
        assert_eq!(time_floor_below(&t, 300), Some(te(200, 5)));
        assert_eq!(time_floor_below(&t, 1_000), Some(te(300, 9)));
    }

    /// Runs a `PageSearch` over `entries` cut into pages of `per_page`; returns its result and
    /// how many pages it read.
    fn paged<E: Copy>(
        entries: &[E],
        per_page: usize,
        pred: impl Fn(&E) -> bool,
    ) -> (Option<(u64, E)>, usize) {
        paged_guess(entries, per_page, None, pred)
    }

    fn paged_guess<E: Copy>(
        entries: &[E],
        per_page: usize,
        guess: Option<f64>,
        pred: impl Fn(&E) -> bool,
    ) -> (Option<(u64, E)>, usize) {
        let n = entries.len() as u64;
        let mut s = PageSearch::new(n, per_page as u64);
        if let Some(f) = guess {
            s = s.with_guess(n, f);
        }
        let mut reads = 0;
        while let Some(p) = s.next_page() {
            reads += 1;
            let from = p as usize * per_page;
            let to = (from + per_page).min(entries.len());
            s.feed(p, &entries[from..to], &pred);
        }
        (s.result(), reads)
    }

    #[test]
    fn page_search_finds_what_a_search_of_the_whole_index_finds() {
        let idx: Vec<OffsetEntry> = (0..1_000u32).map(|i| oe(3 * i + 1, 10 * i + 5)).collect();
        for per_page in [1usize, 2, 7, 512] {
            let pages = idx.len().div_ceil(per_page);
            let max_reads = (usize::BITS - pages.leading_zeros()) as usize + 1;
            for target in [0u32, 1, 2, 3, 4, 500, 1_501, 2_998, 2_999, 3_000, u32::MAX] {
                let (got, reads) = paged(&idx, per_page, |e| e.relative_offset <= target);
                assert_eq!(
                    got.map(|(_, e)| e),
                    floor_by_offset(&idx, target),
                    "per page {per_page}, target {target}"
                );
                if let Some((i, e)) = got {
                    assert_eq!(idx[i as usize], e);
                }
                assert!(reads <= max_reads, "{reads} reads of {pages} pages");
            }
            for (pos, rel) in [(0u64, 1_000i64), (5, 1), (4_000, 1_000), (9_999, 2_000)] {
                let (got, _) = paged(&idx, per_page, |e| {
                    u64::from(e.position) <= pos && i64::from(e.relative_offset) <= rel
                });
                assert_eq!(got.map(|(_, e)| e), last_entry_within(&idx, pos, rel));
            }
        }
        assert_eq!(paged(&[] as &[OffsetEntry], 4, |_| true).0, None);
        // A damaged (non-monotone) file never yields an entry that fails the predicate.
        let mut bad = idx.clone();
        bad[600] = oe(1, 6_005);
        bad[200] = oe(u32::MAX, 2_005);
        for target in [0u32, 10, 700, 1_800, 2_500] {
            let (got, _) = paged(&bad, 16, |e| e.relative_offset <= target);
            assert!(got.is_none_or(|(_, e)| e.relative_offset <= target));
        }
    }

    #[test]
    fn a_guess_changes_how_many_pages_are_read_not_the_result() {
        let idx: Vec<OffsetEntry> = (0..5_000u32).map(|i| oe(2 * i + 1, 9 * i + 5)).collect();
        let pages = 5_000usize.div_ceil(64);
        for target in [0u32, 1, 77, 4_000, 6_401, 9_998, 9_999, 20_000] {
            let want = floor_by_offset(&idx, target);
            for guess in [0.0, 0.1, 0.5, 0.64, 0.99, 1.0, 7.0, -1.0, f64::NAN] {
                let (got, reads) =
                    paged_guess(&idx, 64, Some(guess), |e| e.relative_offset <= target);
                assert_eq!(got.map(|(_, e)| e), want, "target {target}, guess {guess}");
                assert!(reads <= 2 + (usize::BITS - pages.leading_zeros()) as usize + 1);
            }
            // The interpolated guess: one or two pages.
            let guess = f64::from(target) / 10_000.0;
            let (_, reads) = paged_guess(&idx, 64, Some(guess), |e| e.relative_offset <= target);
            assert!(reads <= 2, "target {target}: {reads} reads");
        }
    }

    #[test]
    fn pages_with_any_invalid_entry_are_refused() {
        let mut bytes = Vec::new();
        encode_offset_entries(&[oe(3, 100), oe(9, 300)], &mut bytes);
        assert_eq!(decode_offset_page(&bytes, 1_000).unwrap().len(), 2);
        assert!(decode_offset_page(&bytes, 300).is_none());
        let mut t = Vec::new();
        encode_time_entries(&[te(5, 1), te(4, 2)], &mut t);
        assert!(decode_time_page(&t).is_none());
        assert_eq!(decode_time_page(&t[..12]).unwrap(), vec![te(5, 1)]);
        assert_eq!(decode_time_entry(&t[12..]), te(4, 2));
        assert_eq!(decode_offset_entry(&bytes[8..]), oe(9, 300));
    }

    #[test]
    fn builder_adds_entries_after_interval_and_time_entries_when_max_grows() {
        let mut b = IndexBuilder::default();
        // Batches of 100 bytes, interval 250: entries at batches 3, 6, ... (after > 250 bytes).
        let mut offsets = Vec::new();
        let mut times = Vec::new();
        let ts = [10, 5, 30, 20, 20, 40, 40, 40, 35, 50];
        for (i, &t) in ts.iter().enumerate() {
            let (o, tt) = b.on_batch(i as u32, i as u32 * 100, 100, t, 250);
            offsets.extend(o);
            times.extend(tt);
        }
        assert_eq!(offsets, vec![oe(3, 300), oe(6, 600), oe(9, 900)]);
        assert_eq!(times, vec![te(30, 2), te(40, 5), te(50, 9)]);
        assert_eq!(b.finalize(), None);
        assert_eq!(b.max_timestamp(), 50);
        let (_, t) = b.on_batch(10, 1000, 100, 60, 250);
        assert_eq!(t, None);
        assert_eq!(b.finalize(), Some(te(60, 10)));
        assert_eq!(b.finalize(), None);
    }

    #[test]
    fn builder_ignores_missing_timestamps() {
        let mut b = IndexBuilder::default();
        for i in 0..5u32 {
            let (_, t) = b.on_batch(i, i * 100, 100, NO_TIMESTAMP, 0);
            assert_eq!(t, None);
        }
        assert_eq!(b.finalize(), None);
    }

    #[test]
    fn resuming_at_an_entry_reproduces_the_same_entries() {
        // Full replay.
        let lens = [120u64, 80, 300, 10, 90, 200, 50, 60, 70, 400, 30];
        let ts = [5i64, 7, 6, 9, 12, 11, 15, 14, 20, 19, 25];
        let run = |from: usize, mut b: IndexBuilder| {
            let mut pos: u64 = lens[..from].iter().sum();
            let (mut o, mut t) = (Vec::new(), Vec::new());
            for i in from..lens.len() {
                let (a, c) = b.on_batch(i as u32, pos as u32, lens[i], ts[i], 200);
                o.extend(a);
                t.extend(c);
                pos += lens[i];
            }
            t.extend(b.finalize());
            (o, t)
        };
        let (full_o, full_t) = run(0, IndexBuilder::default());
        let start = replay_start(&full_o, &full_t, 2_000);
        let kept_o = &full_o[..start.keep_offset_entries];
        let kept_t = &full_t[..start.keep_time_entries];
        let (o, t) = run(
            start.relative_offset as usize,
            IndexBuilder::resume(kept_t.last().copied()),
        );
        let mut all_o = kept_o.to_vec();
        // The start entry itself is kept, the replay does not add it again.
        all_o.extend(o);
        let mut all_t = kept_t.to_vec();
        all_t.extend(t);
        assert_eq!(all_o, full_o);
        assert_eq!(all_t, full_t);
    }

    #[test]
    fn replay_start_choices() {
        let o = vec![oe(10, 100), oe(20, 200), oe(30, 300)];
        // No time index: from the start.
        assert_eq!(replay_start(&o, &[], 400).position, 0);
        // Last time entry after the last offset entry: start at the last offset entry.
        let s = replay_start(&o, &[te(5, 2), te(9, 33)], 400);
        assert_eq!(
            (
                s.keep_offset_entries,
                s.keep_time_entries,
                s.relative_offset,
                s.position
            ),
            (3, 1, 30, 300)
        );
        // Last time entry earlier: start at the offset entry before its batch.
        let s = replay_start(&o, &[te(5, 2), te(9, 15)], 400);
        assert_eq!(
            (
                s.keep_offset_entries,
                s.keep_time_entries,
                s.relative_offset,
                s.position
            ),
            (1, 1, 10, 100)
        );
        // Time entry exactly at an offset entry: that entry is kept.
        let s = replay_start(&o, &[te(5, 2), te(9, 20)], 400);
        assert_eq!(
            (
                s.keep_offset_entries,
                s.keep_time_entries,
                s.relative_offset
            ),
            (2, 2, 20)
        );
        // Time entry before every offset entry: from the start.
        let s = replay_start(&o, &[te(5, 2)], 400);
        assert_eq!(
            (s.keep_offset_entries, s.keep_time_entries, s.position),
            (0, 0, 0)
        );
        // No offset entries but a time index: from the start too.
        assert_eq!(replay_start(&[], &[te(1, 0)], 400).position, 0);
    }
}
