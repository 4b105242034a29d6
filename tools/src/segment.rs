//! `segment dump` and `segment verify`: offline inspection of a broker's data directory, for
//! operators. Works on the files alone (no broker, no storage crate), so it is an independent
//! second reading of the on-disk format (`storage/FORMAT.md`), in Kafka's layout:
//!
//! - partition directory `<data>/<topic>-<partition>/`;
//! - `<20-digit base offset>.log`: record batches (magic v2) back to back;
//! - `.index`: 8-byte entries (offset relative to the segment's base offset, u32 BE; byte
//!   position of that batch in the `.log`, u32 BE), both strictly increasing, each pointing at
//!   the first byte of a batch whose base offset it names;
//! - `.timeindex`: 12-byte entries (timestamp i64 BE, relative offset u32 BE), timestamps
//!   strictly increasing.
//!
//! Index files may be preallocated: a tail of all-zero entries after the real ones is unused
//! space, not damage. Logs are read as a stream, one batch at a time, so a 1 GiB segment does
//! not need 1 GiB of memory.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};
use shardlog_protocol::batch::{BatchHeader, BATCH_HEADER_LEN, LOG_OVERHEAD, MAGIC_V2};

use crate::codec;
use crate::exit::{usage, DamageFound};
use crate::output::{format_timestamp, json_bytes, Table};
use crate::template::RecordView;

pub const INDEX_ENTRY_BYTES: usize = 8;
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;
/// Larger batches are taken as a corrupt length field (Kafka's `message.max.bytes` tops out
/// far below this).
const BATCH_BYTES_MAX: usize = 1 << 30;
/// Offset of the first byte covered by the batch CRC.
const CRC_START: usize = 21;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The data is not what the broker should have written; `verify` exits with status 5.
    Damage,
    /// Worth knowing, harmless to the data (e.g. a missing index Kafka would rebuild).
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// File name the problem is in.
    pub file: String,
    pub message: String,
}

impl Problem {
    fn damage(file: &str, message: String) -> Problem {
        Problem {
            severity: Severity::Damage,
            file: file.to_string(),
            message,
        }
    }

    fn warning(file: &str, message: String) -> Problem {
        Problem {
            severity: Severity::Warning,
            file: file.to_string(),
            message,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "severity": match self.severity { Severity::Damage => "damage", Severity::Warning => "warning" },
            "file": self.file,
            "message": self.message,
        })
    }
}

/// One batch found in a log.
#[derive(Debug, Clone)]
pub struct BatchInfo {
    pub position: u64,
    pub size: usize,
    pub header: BatchHeader,
    pub crc_ok: bool,
}

impl BatchInfo {
    fn to_json(&self) -> Value {
        let h = &self.header;
        json!({
            "position": self.position,
            "base_offset": h.base_offset,
            "last_offset": h.last_offset(),
            "count": h.records_count,
            "size": self.size,
            "magic": h.magic,
            "crc": format!("{:08x}", h.crc),
            "crc_ok": self.crc_ok,
            "compression": compression_name(h),
            "timestamp_type": if h.is_log_append_time() { "log_append" } else { "create" },
            "base_timestamp": h.base_timestamp,
            "max_timestamp": h.max_timestamp,
            "partition_leader_epoch": h.partition_leader_epoch,
            "producer_id": h.producer_id,
            "producer_epoch": h.producer_epoch,
            "base_sequence": h.base_sequence,
            "transactional": h.is_transactional(),
            "control": h.is_control(),
        })
    }

    fn describe(&self) -> String {
        let h = &self.header;
        format!(
            "position: {} base_offset: {} last_offset: {} count: {} size: {} magic: {} \
             compression: {} crc: {:08x} ({}) timestamp_type: {} base_timestamp: {} \
             max_timestamp: {} ({}) leader_epoch: {} producer_id: {} producer_epoch: {} \
             base_sequence: {} transactional: {} control: {}",
            self.position,
            h.base_offset,
            h.last_offset(),
            h.records_count,
            self.size,
            h.magic,
            compression_name(h),
            h.crc,
            if self.crc_ok { "ok" } else { "BAD" },
            if h.is_log_append_time() {
                "log_append"
            } else {
                "create"
            },
            h.base_timestamp,
            h.max_timestamp,
            format_timestamp(h.max_timestamp),
            h.partition_leader_epoch,
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.is_transactional(),
            h.is_control(),
        )
    }
}

fn compression_name(h: &BatchHeader) -> String {
    match h.compression() {
        Some(c) => c.name().to_string(),
        None => format!("unknown({})", h.attributes & 0x7),
    }
}

/// What the index checks need of a batch; kept for every batch of a segment.
#[derive(Debug, Clone, Copy)]
struct BatchSpan {
    position: u64,
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
}

/// The result of reading a `.log` file from start to end.
#[derive(Debug, Default)]
pub struct LogScan {
    spans: Vec<BatchSpan>,
    pub batches: usize,
    pub records: u64,
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
    /// Bytes up to the end of the last whole batch.
    pub valid_bytes: u64,
    pub file_bytes: u64,
    pub problems: Vec<Problem>,
}

/// Reads all of `reader` as a segment log, calling `on_batch` with each whole batch (including
/// damaged ones whose length is plausible). Stops at the first byte that cannot start a batch.
fn scan_log(
    mut reader: impl Read,
    segment_base: Option<i64>,
    file: &str,
    mut on_batch: impl FnMut(&BatchInfo, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<LogScan> {
    let mut scan = LogScan::default();
    let mut pos = 0u64;
    let mut buf = Vec::new();
    let mut prev_last: Option<i64> = None;
    loop {
        let mut prefix = [0u8; LOG_OVERHEAD];
        let n = read_up_to(&mut reader, &mut prefix)?;
        if n == 0 {
            break;
        }
        scan.file_bytes = pos + n as u64;
        if n < LOG_OVERHEAD {
            scan.problems.push(Problem::damage(
                file,
                format!("truncated: {n} byte(s) at position {pos} are not a whole batch header"),
            ));
            break;
        }
        let batch_length = i32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
        if batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32
            || batch_length as usize > BATCH_BYTES_MAX
        {
            let tail = if batch_length == 0 && prefix.iter().all(|b| *b == 0) {
                " (zero-filled from here: preallocated or never written)"
            } else {
                ""
            };
            scan.problems.push(Problem::damage(
                file,
                format!("invalid batch length {batch_length} at position {pos}{tail}; the rest of the file cannot be read"),
            ));
            scan.file_bytes += drain(&mut reader)?;
            break;
        }
        let total = LOG_OVERHEAD + batch_length as usize;
        buf.clear();
        buf.extend_from_slice(&prefix);
        buf.resize(total, 0);
        let got = read_up_to(&mut reader, &mut buf[LOG_OVERHEAD..])?;
        scan.file_bytes += got as u64;
        if got < total - LOG_OVERHEAD {
            scan.problems.push(Problem::damage(
                file,
                format!(
                    "truncated: the batch at position {pos} needs {total} bytes, only {} remain",
                    LOG_OVERHEAD + got
                ),
            ));
            break;
        }
        let header =
            BatchHeader::parse(&buf).map_err(|e| anyhow::anyhow!("batch header at {pos}: {e}"))?;
        let crc_ok = header.magic == MAGIC_V2 && crc32c::crc32c(&buf[CRC_START..]) == header.crc;
        let info = BatchInfo {
            position: pos,
            size: total,
            header,
            crc_ok,
        };
        check_batch(&info, segment_base, prev_last, file, &mut scan.problems);
        on_batch(&info, &buf)?;
        if header.magic == MAGIC_V2 {
            prev_last =
                Some(prev_last.map_or(header.last_offset(), |p| p.max(header.last_offset())));
            scan.first_offset.get_or_insert(header.base_offset);
            scan.last_offset = prev_last;
            scan.records += header.records_count.max(0) as u64;
        }
        scan.spans.push(BatchSpan {
            position: pos,
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        });
        scan.batches += 1;
        pos += total as u64;
        scan.valid_bytes = pos;
    }
    Ok(scan)
}

fn check_batch(
    info: &BatchInfo,
    segment_base: Option<i64>,
    prev_last: Option<i64>,
    file: &str,
    problems: &mut Vec<Problem>,
) {
    let h = &info.header;
    let at = info.position;
    if h.magic != MAGIC_V2 {
        problems.push(Problem::damage(
            file,
            format!(
                "batch at position {at} has magic {} (only v2 is written by Shardlog)",
                h.magic
            ),
        ));
        return;
    }
    if !info.crc_ok {
        problems.push(Problem::damage(
            file,
            format!(
                "CRC mismatch in the batch at position {at} (offsets {}..{}): stored {:08x}, computed from the bytes differs",
                h.base_offset,
                h.last_offset(),
                h.crc
            ),
        ));
    }
    if h.records_count < 0
        || h.last_offset_delta < 0
        || (h.records_count > 0 && h.last_offset_delta < h.records_count - 1)
    {
        problems.push(Problem::damage(
            file,
            format!(
                "batch at position {at} has record count {} inconsistent with last offset delta {}",
                h.records_count, h.last_offset_delta
            ),
        ));
    }
    if h.compression().is_none() {
        problems.push(Problem::damage(
            file,
            format!(
                "batch at position {at} names unknown compression {}",
                h.attributes & 0x7
            ),
        ));
    }
    if let Some(base) = segment_base {
        if h.base_offset < base {
            problems.push(Problem::damage(
                file,
                format!(
                    "batch at position {at} starts at offset {} below the segment's base offset {base}",
                    h.base_offset
                ),
            ));
        } else if h.last_offset() - base > u32::MAX as i64 {
            problems.push(Problem::damage(
                file,
                format!(
                    "batch at position {at} ends at offset {}, too far from the base offset {base} for a 32-bit relative offset",
                    h.last_offset()
                ),
            ));
        }
    }
    if let Some(prev) = prev_last {
        if h.base_offset <= prev {
            problems.push(Problem::damage(
                file,
                format!(
                    "offsets do not increase: the batch at position {at} starts at {} but the previous batch ended at {prev}",
                    h.base_offset
                ),
            ));
        }
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn drain(reader: &mut impl Read) -> std::io::Result<u64> {
    std::io::copy(reader, &mut std::io::sink())
}

/// Index entries and how many all-zero slots follow them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IndexFile<E> {
    pub entries: Vec<E>,
    pub preallocated_slots: usize,
    pub trailing_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// Splits an index file into entries; a run of all-zero entries at the end (after at least
/// one entry, or the whole file) is preallocated space. A lone all-zero first entry counts
/// as an entry only when `zero_first_is_real` (the log has a batch at offset base, position 0).
fn parse_index<E>(
    bytes: &[u8],
    entry_bytes: usize,
    zero_first_is_real: bool,
    decode: impl Fn(&[u8]) -> E,
) -> IndexFile<E> {
    let whole = bytes.len() / entry_bytes;
    let trailing_bytes = bytes.len() % entry_bytes;
    let chunks: Vec<&[u8]> = bytes[..whole * entry_bytes].chunks(entry_bytes).collect();
    let mut used = chunks.len();
    while used > 0 && chunks[used - 1].iter().all(|b| *b == 0) {
        if used == 1 && zero_first_is_real {
            break;
        }
        used -= 1;
    }
    IndexFile {
        entries: chunks[..used].iter().map(|c| decode(c)).collect(),
        preallocated_slots: chunks.len() - used,
        trailing_bytes,
    }
}

fn decode_offset_entry(c: &[u8]) -> OffsetEntry {
    OffsetEntry {
        relative_offset: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
        position: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
    }
}

fn decode_time_entry(c: &[u8]) -> TimeEntry {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&c[..8]);
    TimeEntry {
        timestamp: i64::from_be_bytes(ts),
        relative_offset: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
    }
}

fn first_batch_at_base(scan: &LogScan, base: i64) -> bool {
    scan.spans
        .first()
        .is_some_and(|s| s.position == 0 && s.base_offset == base)
}

/// Checks a `.index` against the log it indexes.
fn check_offset_index(
    bytes: &[u8],
    base: i64,
    scan: &LogScan,
    file: &str,
) -> (IndexFile<OffsetEntry>, Vec<Problem>) {
    let index = parse_index(
        bytes,
        INDEX_ENTRY_BYTES,
        first_batch_at_base(scan, base),
        decode_offset_entry,
    );
    let mut problems = Vec::new();
    if index.trailing_bytes != 0 {
        problems.push(Problem::damage(
            file,
            format!(
                "truncated: {} byte(s) after the last whole 8-byte entry",
                index.trailing_bytes
            ),
        ));
    }
    let mut prev: Option<OffsetEntry> = None;
    for (i, e) in index.entries.iter().enumerate() {
        if let Some(p) = prev {
            if e.relative_offset <= p.relative_offset || e.position <= p.position {
                problems.push(Problem::damage(
                    file,
                    format!(
                        "entry {i} ({}, position {}) does not increase over entry {} ({}, position {})",
                        base + e.relative_offset as i64,
                        e.position,
                        i - 1,
                        base + p.relative_offset as i64,
                        p.position
                    ),
                ));
            }
        }
        prev = Some(*e);
        let offset = base + e.relative_offset as i64;
        match scan.spans.binary_search_by_key(&(e.position as u64), |s| s.position) {
            Ok(k) => {
                let span = scan.spans[k];
                if span.base_offset != offset {
                    problems.push(Problem::damage(
                        file,
                        format!(
                            "entry {i} says offset {offset} is at position {}, but the batch there starts at offset {}",
                            e.position, span.base_offset
                        ),
                    ));
                }
            }
            Err(_) if e.position as u64 >= scan.valid_bytes => problems.push(Problem::damage(
                file,
                format!(
                    "entry {i} (offset {offset}) points at position {}, past the end of the log's {} valid bytes",
                    e.position, scan.valid_bytes
                ),
            )),
            Err(_) => problems.push(Problem::damage(
                file,
                format!(
                    "entry {i} (offset {offset}) points at position {}, which is inside a batch, not at its start",
                    e.position
                ),
            )),
        }
    }
    (index, problems)
}

/// Checks a `.timeindex` against the log.
fn check_time_index(
    bytes: &[u8],
    base: i64,
    scan: &LogScan,
    file: &str,
) -> (IndexFile<TimeEntry>, Vec<Problem>) {
    let index = parse_index(bytes, TIME_INDEX_ENTRY_BYTES, false, decode_time_entry);
    let mut problems = Vec::new();
    if index.trailing_bytes != 0 {
        problems.push(Problem::damage(
            file,
            format!(
                "truncated: {} byte(s) after the last whole 12-byte entry",
                index.trailing_bytes
            ),
        ));
    }
    // Largest batch max timestamp up to and including each batch.
    let mut max_so_far = Vec::with_capacity(scan.spans.len());
    let mut m = i64::MIN;
    for s in &scan.spans {
        m = m.max(s.max_timestamp);
        max_so_far.push(m);
    }
    let mut prev: Option<TimeEntry> = None;
    for (i, e) in index.entries.iter().enumerate() {
        if let Some(p) = prev {
            if e.timestamp <= p.timestamp {
                problems.push(Problem::damage(
                    file,
                    format!(
                        "entry {i}: timestamp {} does not increase over the previous entry's {}",
                        e.timestamp, p.timestamp
                    ),
                ));
            }
            if e.relative_offset < p.relative_offset {
                problems.push(Problem::damage(
                    file,
                    format!(
                        "entry {i}: offset {} is below the previous entry's {}",
                        base + e.relative_offset as i64,
                        base + p.relative_offset as i64
                    ),
                ));
            }
        }
        prev = Some(*e);
        let offset = base + e.relative_offset as i64;
        let containing = scan
            .spans
            .partition_point(|s| s.base_offset <= offset)
            .checked_sub(1)
            .filter(|&k| scan.spans[k].last_offset >= offset);
        match containing {
            None => problems.push(Problem::damage(
                file,
                format!("entry {i} names offset {offset}, which no batch of the log contains"),
            )),
            Some(k) if e.timestamp > max_so_far[k] => problems.push(Problem::damage(
                file,
                format!(
                    "entry {i} says timestamp {} is reached by offset {offset}, but the log's largest timestamp up to there is {}",
                    e.timestamp, max_so_far[k]
                ),
            )),
            Some(_) => {}
        }
    }
    (index, problems)
}

/// The files of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFiles {
    pub log: PathBuf,
    /// From the file name; `None` when the name is not a 20-digit offset.
    pub base_offset: Option<i64>,
}

impl SegmentFiles {
    fn from_log(log: PathBuf) -> SegmentFiles {
        let base_offset = log
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i64>().ok());
        SegmentFiles { log, base_offset }
    }

    fn sibling(&self, ext: &str) -> PathBuf {
        self.log.with_extension(ext)
    }

    fn display(&self) -> String {
        display_path(&self.log)
    }
}

/// `<partition dir>/<file>` for messages.
fn display_path(p: &Path) -> String {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match p.parent().and_then(|d| d.file_name()) {
        Some(dir) => format!("{}/{name}", dir.to_string_lossy()),
        None => name,
    }
}

/// The `.log` files directly in `dir`, ordered by base offset (then name).
pub fn segments_in(dir: &Path) -> anyhow::Result<Vec<SegmentFiles>> {
    let mut logs: Vec<SegmentFiles> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "log"))
        .map(SegmentFiles::from_log)
        .collect();
    logs.sort_by(|a, b| (a.base_offset, &a.log).cmp(&(b.base_offset, &b.log)));
    Ok(logs)
}

/// Partition directories to check for `path`: a `.log` file (just that segment), a partition
/// directory, or a data directory (every subdirectory holding `.log` files).
pub fn partitions_at(path: &Path) -> anyhow::Result<Vec<(PathBuf, Vec<SegmentFiles>)>> {
    if path.is_file() {
        let log = match path.extension().and_then(|x| x.to_str()) {
            Some("log") => path.to_path_buf(),
            Some("index") | Some("timeindex") => path.with_extension("log"),
            _ => {
                return Err(usage(format!(
                    "{} is not a segment file (.log, .index or .timeindex)",
                    path.display()
                )))
            }
        };
        let dir = log.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok(vec![(dir, vec![SegmentFiles::from_log(log)])]);
    }
    if !path.is_dir() {
        return Err(usage(format!("{} does not exist", path.display())));
    }
    let here = segments_in(path)?;
    if !here.is_empty() {
        return Ok(vec![(path.to_path_buf(), here)]);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut out = Vec::new();
    for d in dirs {
        let segs = segments_in(&d)?;
        if !segs.is_empty() {
            out.push((d, segs));
        }
    }
    if out.is_empty() {
        return Err(usage(format!(
            "no segment (.log) files under {}; give a data directory, a partition directory \
             (<topic>-<partition>) or a .log file",
            path.display()
        )));
    }
    Ok(out)
}

/// Everything `verify` found about one segment.
#[derive(Debug)]
pub struct SegmentReport {
    pub files: SegmentFiles,
    pub scan: LogScan,
    pub index_entries: Option<usize>,
    pub timeindex_entries: Option<usize>,
    pub problems: Vec<Problem>,
}

impl SegmentReport {
    pub fn damaged(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Damage)
    }

    fn to_json(&self) -> Value {
        json!({
            "file": self.files.log.display().to_string(),
            "base_offset": self.files.base_offset,
            "batches": self.scan.batches,
            "records": self.scan.records,
            "first_offset": self.scan.first_offset,
            "last_offset": self.scan.last_offset,
            "bytes": self.scan.file_bytes,
            "valid_bytes": self.scan.valid_bytes,
            "index_entries": self.index_entries,
            "timeindex_entries": self.timeindex_entries,
            "damaged": self.damaged(),
            "problems": self.problems.iter().map(Problem::to_json).collect::<Vec<_>>(),
        })
    }
}

/// Verifies one segment: the log (lengths, magic, CRC, counts, offsets, and that every batch's
/// records decode to the count its header claims), then its two indexes against the log.
pub fn verify_segment(files: &SegmentFiles) -> anyhow::Result<SegmentReport> {
    let log_name = files.display();
    let mut problems = Vec::new();
    if files.base_offset.is_none() {
        problems.push(Problem::damage(
            &log_name,
            "file name is not a 20-digit base offset".to_string(),
        ));
    }
    let reader = BufReader::with_capacity(
        1 << 20,
        File::open(&files.log).with_context(|| format!("cannot open {}", files.log.display()))?,
    );
    let mut record_problems = Vec::new();
    let scan = scan_log(reader, files.base_offset, &log_name, |info, bytes| {
        if info.crc_ok && info.header.records_count > 0 {
            match codec::decode_batch_records(bytes) {
                Ok(records) if records.len() != info.header.records_count as usize => {
                    record_problems.push(Problem::damage(
                        &log_name,
                        format!(
                            "batch at position {} claims {} records but holds {}",
                            info.position,
                            info.header.records_count,
                            records.len()
                        ),
                    ))
                }
                Ok(_) => {}
                Err(e) => record_problems.push(Problem::damage(
                    &log_name,
                    format!(
                        "records of the batch at position {} do not decode: {e:#}",
                        info.position
                    ),
                )),
            }
        }
        Ok(())
    })
    .with_context(|| format!("cannot read {}", files.log.display()))?;
    problems.extend(scan.problems.iter().cloned());
    problems.extend(record_problems);
    let base = files
        .base_offset
        .unwrap_or_else(|| scan.first_offset.unwrap_or(0));

    let mut index_entries = None;
    let index_path = files.sibling("index");
    match std::fs::read(&index_path) {
        Ok(bytes) => {
            let (index, p) = check_offset_index(&bytes, base, &scan, &display_path(&index_path));
            index_entries = Some(index.entries.len());
            problems.extend(p);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => problems.push(Problem::warning(
            &display_path(&index_path),
            "missing (the broker rebuilds it from the log on recovery)".to_string(),
        )),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", index_path.display())),
    }
    let mut timeindex_entries = None;
    let time_path = files.sibling("timeindex");
    match std::fs::read(&time_path) {
        Ok(bytes) => {
            let (index, p) = check_time_index(&bytes, base, &scan, &display_path(&time_path));
            timeindex_entries = Some(index.entries.len());
            problems.extend(p);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => problems.push(Problem::warning(
            &display_path(&time_path),
            "missing (the broker rebuilds it from the log on recovery)".to_string(),
        )),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", time_path.display())),
    }
    Ok(SegmentReport {
        files: files.clone(),
        scan,
        index_entries,
        timeindex_entries,
        problems,
    })
}

/// Problems between the segments of one partition: overlapping offset ranges.
fn check_partition(segments: &[SegmentReport]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut prev: Option<(&SegmentReport, i64)> = None;
    for s in segments {
        if let (Some((p, prev_last)), Some(base)) = (prev, s.files.base_offset) {
            if base <= prev_last {
                problems.push(Problem::damage(
                    &s.files.display(),
                    format!(
                        "segment base offset {base} overlaps the previous segment {}, which ends at offset {prev_last}",
                        p.files.display()
                    ),
                ));
            }
        }
        if let Some(last) = s.scan.last_offset {
            prev = Some((s, last));
        }
    }
    problems
}

/// `segment verify`: prints the report and fails with [`DamageFound`] when anything is damaged.
pub fn verify(path: &Path, json_out: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let partitions = partitions_at(path)?;
    let mut reports = Vec::new();
    let mut partition_problems = Vec::new();
    for (_, segments) in &partitions {
        let mut these = Vec::new();
        for files in segments {
            these.push(verify_segment(files)?);
        }
        partition_problems.extend(check_partition(&these));
        reports.extend(these);
    }
    let damaged_segments = reports.iter().filter(|r| r.damaged()).count()
        + partition_problems
            .iter()
            .filter(|p| p.severity == Severity::Damage)
            .count();
    if json_out {
        crate::output::print_json(
            out,
            &json!({
                "segments": reports.iter().map(SegmentReport::to_json).collect::<Vec<_>>(),
                "partition_problems": partition_problems.iter().map(Problem::to_json).collect::<Vec<_>>(),
                "damaged": damaged_segments,
                "ok": damaged_segments == 0,
            }),
        )?;
    } else {
        let mut table = Table::new(&[
            "SEGMENT", "BATCHES", "RECORDS", "OFFSETS", "BYTES", "STATUS",
        ]);
        for r in &reports {
            table.row(vec![
                r.files.display(),
                r.scan.batches.to_string(),
                r.scan.records.to_string(),
                match (r.scan.first_offset, r.scan.last_offset) {
                    (Some(a), Some(b)) => format!("{a}..{b}"),
                    _ => "-".to_string(),
                },
                r.scan.file_bytes.to_string(),
                if r.damaged() { "DAMAGED" } else { "ok" }.to_string(),
            ]);
        }
        write!(out, "{}", table.render())?;
        let all = reports
            .iter()
            .flat_map(|r| r.problems.iter())
            .chain(&partition_problems);
        for p in all {
            let tag = match p.severity {
                Severity::Damage => "damage",
                Severity::Warning => "warning",
            };
            writeln!(out, "{tag}: {}: {}", p.file, p.message)?;
        }
        writeln!(
            out,
            "{} segment(s) in {} partition(s) checked: {}",
            reports.len(),
            partitions.len(),
            if damaged_segments == 0 {
                "no damage found".to_string()
            } else {
                format!("{damaged_segments} damaged; the broker truncates a damaged log at the first bad batch on recovery")
            }
        )?;
    }
    if damaged_segments > 0 {
        return Err(DamageFound { damaged_segments }.into());
    }
    Ok(())
}

/// `segment dump`: batches (and optionally records) of a log, or the entries of an index.
pub fn dump(
    path: &Path,
    with_records: bool,
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if path.is_file() {
        match path.extension().and_then(|x| x.to_str()) {
            Some("index") => return dump_index(path, false, json_out, out),
            Some("timeindex") => return dump_index(path, true, json_out, out),
            Some("log") => {}
            _ => {
                return Err(usage(format!(
                    "{} is not a segment file (.log, .index or .timeindex)",
                    path.display()
                )))
            }
        }
        let files = SegmentFiles::from_log(path.to_path_buf());
        let v = dump_log(&files, with_records, json_out, out)?;
        if json_out {
            crate::output::print_json(out, &v)?;
        }
        return Ok(());
    }
    let partitions = partitions_at(path)?;
    let mut all = Vec::new();
    for (_, segments) in partitions {
        for files in segments {
            all.push(dump_log(&files, with_records, json_out, out)?);
        }
    }
    if json_out {
        crate::output::print_json(out, &json!({ "segments": all }))?;
    }
    Ok(())
}

/// Dumps one log; prints text as it goes, or returns the JSON value to print.
fn dump_log(
    files: &SegmentFiles,
    with_records: bool,
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Value> {
    let name = files.display();
    let reader = BufReader::with_capacity(
        1 << 20,
        File::open(&files.log).with_context(|| format!("cannot open {}", files.log.display()))?,
    );
    if !json_out {
        writeln!(
            out,
            "segment {} (base offset {})",
            files.log.display(),
            files
                .base_offset
                .map_or("unknown".to_string(), |b| b.to_string())
        )?;
    }
    let mut batches = Vec::new();
    let mut extra = Vec::new();
    let topic = partition_topic(&files.log);
    let scan = scan_log(reader, files.base_offset, &name, |info, bytes| {
        let mut record_values = Vec::new();
        if !json_out {
            writeln!(out, "{}", info.describe())?;
        }
        if with_records {
            match codec::decode_batch_records(bytes) {
                Ok(records) => {
                    for r in &records {
                        let view = RecordView {
                            topic: &topic.0,
                            partition: topic.1,
                            offset: r.offset,
                            timestamp: r.timestamp,
                            key: r.key.as_deref(),
                            value: r.value.as_deref(),
                            headers: &r.headers,
                        };
                        if json_out {
                            record_values.push(record_json(&view));
                        } else {
                            writeln!(out, "{}", RECORD_LINE.render(&view))?;
                        }
                    }
                }
                Err(e) => {
                    let p = Problem::damage(
                        &name,
                        format!(
                            "records of the batch at position {} do not decode: {e:#}",
                            info.position
                        ),
                    );
                    if !json_out {
                        writeln!(out, "| {}", p.message)?;
                    }
                    extra.push(p);
                }
            }
        }
        if json_out {
            let mut v = info.to_json();
            if with_records {
                v["records"] = Value::Array(record_values);
            }
            batches.push(v);
        }
        Ok(())
    })
    .with_context(|| format!("cannot read {}", files.log.display()))?;
    let problems: Vec<Problem> = scan.problems.iter().cloned().chain(extra).collect();
    if !json_out {
        for p in &problems {
            writeln!(out, "damage: {}", p.message)?;
        }
        writeln!(
            out,
            "{} batch(es), {} record(s), {} of {} bytes valid",
            scan.batches, scan.records, scan.valid_bytes, scan.file_bytes
        )?;
    }
    Ok(json!({
        "file": files.log.display().to_string(),
        "base_offset": files.base_offset,
        "bytes": scan.file_bytes,
        "valid_bytes": scan.valid_bytes,
        "batches": batches,
        "problems": problems.iter().map(Problem::to_json).collect::<Vec<_>>(),
    }))
}

static RECORD_LINE: std::sync::LazyLock<crate::template::Template> =
    std::sync::LazyLock::new(|| {
        crate::template::Template::parse(
        "| offset: {offset} timestamp: {timestamp} key: {key} value: {value} headers: {headers}",
    )
    .expect("built-in template is valid")
    });

/// A record as JSON, as `consume --json` and `segment dump --json --records` print it.
pub fn record_json(r: &RecordView<'_>) -> Value {
    json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": json_bytes(r.key),
        "value": json_bytes(r.value),
        "headers": r.headers.iter().map(|(k, v)| json!({"key": k, "value": json_bytes(v.as_deref())})).collect::<Vec<_>>(),
    })
}

/// Topic and partition from a partition directory name `<topic>-<partition>`.
fn partition_topic(log: &Path) -> (String, i32) {
    let dir = log
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match dir.rsplit_once('-') {
        Some((t, p)) => match p.parse() {
            Ok(p) => (t.to_string(), p),
            Err(_) => (dir.clone(), -1),
        },
        None => (dir, -1),
    }
}

fn dump_index(path: &Path, time: bool, json_out: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = SegmentFiles::from_log(path.with_extension("log"))
        .base_offset
        .unwrap_or(0);
    let mut rows = Vec::new();
    let (slots, trailing) = if time {
        let idx = parse_index(&bytes, TIME_INDEX_ENTRY_BYTES, false, decode_time_entry);
        for e in &idx.entries {
            rows.push(json!({
                "timestamp": e.timestamp,
                "relative_offset": e.relative_offset,
                "offset": base + e.relative_offset as i64,
            }));
        }
        (idx.preallocated_slots, idx.trailing_bytes)
    } else {
        // A lone zero entry is real when the log starts at the base offset; without reading
        // the log we cannot tell, so the dump shows it.
        let idx = parse_index(&bytes, INDEX_ENTRY_BYTES, true, decode_offset_entry);
        for e in &idx.entries {
            rows.push(json!({
                "relative_offset": e.relative_offset,
                "offset": base + e.relative_offset as i64,
                "position": e.position,
            }));
        }
        (idx.preallocated_slots, idx.trailing_bytes)
    };
    if json_out {
        return crate::output::print_json(
            out,
            &json!({
                "file": path.display().to_string(),
                "kind": if time { "timeindex" } else { "index" },
                "base_offset": base,
                "entries": rows,
                "preallocated_slots": slots,
                "trailing_bytes": trailing,
            }),
        );
    }
    writeln!(out, "{} (base offset {base})", path.display())?;
    for r in &rows {
        if time {
            writeln!(
                out,
                "timestamp: {} ({}) offset: {} relative_offset: {}",
                r["timestamp"],
                format_timestamp(r["timestamp"].as_i64().unwrap_or(-1)),
                r["offset"],
                r["relative_offset"]
            )?;
        } else {
            writeln!(
                out,
                "offset: {} relative_offset: {} position: {}",
                r["offset"], r["relative_offset"], r["position"]
            )?;
        }
    }
    writeln!(out, "{} entries, {slots} preallocated slot(s)", rows.len())?;
    if trailing > 0 {
        writeln!(
            out,
            "damage: {trailing} byte(s) after the last whole entry (truncated)"
        )?;
    }
    Ok(())
}

/// Groups problems by file, for tests and summaries.
#[cfg(test)]
fn by_file(problems: &[Problem]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut m = std::collections::BTreeMap::<String, Vec<String>>::new();
    for p in problems {
        m.entry(p.file.clone()).or_default().push(p.message.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardlog_protocol::batch::{build_simple_batch, SimpleRecord};

    /// Writes a segment with `batches` batches of `per_batch` records starting at `base`,
    /// and Kafka-style indexes with one entry per batch. Returns the log bytes.
    fn write_segment(dir: &Path, base: i64, batches: usize, per_batch: usize) -> Vec<u8> {
        let mut log = Vec::new();
        let mut index = Vec::new();
        let mut timeindex = Vec::new();
        let mut offset = base;
        for b in 0..batches {
            let values: Vec<Vec<u8>> = (0..per_batch)
                .map(|i| format!("v{b}-{i}").into_bytes())
                .collect();
            let records: Vec<SimpleRecord> = values
                .iter()
                .map(|v| (Some(&b"k"[..]), Some(v.as_slice())))
                .collect();
            let ts = 1_000 + b as i64 * 10;
            let batch = build_simple_batch(offset, ts, &records);
            index.extend_from_slice(&((offset - base) as u32).to_be_bytes());
            index.extend_from_slice(&(log.len() as u32).to_be_bytes());
            timeindex.extend_from_slice(&ts.to_be_bytes());
            timeindex.extend_from_slice(&((offset - base) as u32).to_be_bytes());
            log.extend_from_slice(&batch);
            offset += per_batch as i64;
        }
        let name = format!("{base:020}");
        std::fs::write(dir.join(format!("{name}.log")), &log).unwrap();
        std::fs::write(dir.join(format!("{name}.index")), &index).unwrap();
        std::fs::write(dir.join(format!("{name}.timeindex")), &timeindex).unwrap();
        log
    }

    fn partition_dir(root: &Path) -> PathBuf {
        let d = root.join("orders-0");
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn verify_text(path: &Path) -> (Result<(), anyhow::Error>, String) {
        let mut out = Vec::new();
        let r = verify(path, false, &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn healthy_partition_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let d = partition_dir(tmp.path());
        write_segment(&d, 0, 3, 4);
        write_segment(&d, 12, 2, 5);
        let (r, text) = verify_text(tmp.path());
        assert!(r.is_ok(), "{text}");
        assert!(
            text.contains("orders-0/00000000000000000000.log  3        12       0..11"),
            "{text}"
        );
        assert!(
            text.contains("orders-0/00000000000000000012.log  2        10       12..21"),
            "{text}"
        );
        assert!(text.contains("no damage found"), "{text}");
        // The partition directory and a single file work too.
        assert!(verify_text(&d).0.is_ok());
        assert!(verify_text(&d.join("00000000000000000012.log")).0.is_ok());
    }

    #[test]
    fn corrupted_byte_is_a_crc_failure_with_status_5() {
        let tmp = tempfile::tempdir().unwrap();
        let d = partition_dir(tmp.path());
        let mut log = write_segment(&d, 0, 3, 2);
        let second = BatchHeader::parse(&log).unwrap().total_len();
        log[second + 70] ^= 0x40; // inside the second batch's records
        std::fs::write(d.join("00000000000000000000.log"), &log).unwrap();
        let (r, text) = verify_text(tmp.path());
        let err = r.unwrap_err();
        assert_eq!(crate::exit::status_of(&err), crate::exit::DAMAGE);
        assert!(
            text.contains(&format!(
                "CRC mismatch in the batch at position {second} (offsets 2..3)"
            )),
            "{text}"
        );
        assert!(text.contains("DAMAGED"), "{text}");
        // The batches after the damaged one are still read.
        assert!(text.contains("0..5"), "{text}");
    }

    #[test]
    fn truncated_index_and_log_are_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let d = partition_dir(tmp.path());
        let log = write_segment(&d, 0, 3, 2);
        // Index cut in the middle of its last entry.
        let index_path = d.join("00000000000000000000.index");
        let index = std::fs::read(&index_path).unwrap();
        std::fs::write(&index_path, &index[..index.len() - 3]).unwrap();
        let (r, text) = verify_text(&d);
        assert!(r.is_err());
        assert!(text.contains("00000000000000000000.index: truncated: 5 byte(s) after the last whole 8-byte entry"), "{text}");

        // Restore the index, cut the log inside its last batch: the index now points past it.
        std::fs::write(&index_path, &index).unwrap();
        std::fs::write(d.join("00000000000000000000.log"), &log[..log.len() - 10]).unwrap();
        let (r, text) = verify_text(&d);
        assert!(r.is_err());
        assert!(text.contains("truncated: the batch at position"), "{text}");
        assert!(text.contains("past the end of the log's"), "{text}");
        assert!(
            text.contains("which no batch of the log contains"),
            "{text}"
        );
    }

    #[test]
    fn index_pointing_inside_a_batch_or_at_the_wrong_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let d = partition_dir(tmp.path());
        let log = write_segment(&d, 100, 2, 3);
        let first_len = BatchHeader::parse(&log).unwrap().total_len() as u32;
        let mut index = Vec::new();
        index.extend_from_slice(&0u32.to_be_bytes());
        index.extend_from_slice(&0u32.to_be_bytes());
        index.extend_from_slice(&4u32.to_be_bytes()); // should be 3
        index.extend_from_slice(&first_len.to_be_bytes());
        index.extend_from_slice(&5u32.to_be_bytes());
        index.extend_from_slice(&(first_len + 1).to_be_bytes()); // inside the batch
        std::fs::write(d.join("00000000000000000100.index"), &index).unwrap();
        let (r, text) = verify_text(&d);
        assert!(r.is_err());
        assert!(text.contains("says offset 104 is at position"), "{text}");
        assert!(text.contains("which is inside a batch"), "{text}");
    }

    #[test]
    fn preallocated_zero_tails_are_not_damage_but_missing_indexes_warn() {
        let tmp = tempfile::tempdir().unwrap();
        let d = partition_dir(tmp.path());
        write_segment(&d, 0, 2, 2);
        for (ext, slot) in [("index", 8), ("timeindex", 12)] {
            let p = d.join(format!("00000000000000000000.{ext}"));
            let mut bytes = std::fs::read(&p).unwrap();
            bytes.extend_from_slice(&vec![0u8; slot * 10]);
            std::fs::write(&p, bytes).unwrap();
        }
        let report = verify_segment(&segments_in(&d).unwrap()[0]).unwrap();
        assert!(!report.damaged(), "{:?}", report.problems);
        assert_eq!(report.index_entries, Some(2));
        assert_eq!(report.timeindex_entries, Some(2));

        std::fs::remove_file(d.join("00000000000000000000.timeindex")).unwrap();
        let (r, text) = verify_text(&d);
        assert!(r.is_ok(), "{text}");
        assert!(
            text.contains("warning: orders-0/00000000000000000000.timeindex: missing"),
            "{text}"
        );
    }

    #[test]
    fn time_index_must_increase_and_match_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let d = partition_dir(tmp.path());
        write_segment(&d, 0, 2, 2);
        let mut t = Vec::new();
        for (ts, rel) in [(1_010i64, 0u32), (1_005, 2), (9_999, 3)] {
            t.extend_from_slice(&ts.to_be_bytes());
            t.extend_from_slice(&rel.to_be_bytes());
        }
        std::fs::write(d.join("00000000000000000000.timeindex"), &t).unwrap();
        let report = verify_segment(&segments_in(&d).unwrap()[0]).unwrap();
        let problems = by_file(&report.problems);
        let msgs = &problems["orders-0/00000000000000000000.timeindex"];
        assert!(
            msgs.iter()
                .any(|m| m.contains("timestamp 1005 does not increase")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("largest timestamp up to there is 1010")),
            "{msgs:?}"
        );
    }

    #[test]
    fn overlapping_segments_and_backward_offsets() {
        let tmp = tempfile::tempdir().unwrap();
        let d = partition_dir(tmp.path());
        write_segment(&d, 0, 2, 5); // 0..9
        write_segment(&d, 5, 1, 1); // overlaps
        let (r, text) = verify_text(&d);
        assert!(r.is_err());
        assert!(
            text.contains("segment base offset 5 overlaps the previous segment"),
            "{text}"
        );

        let a = build_simple_batch(10, 1, &[(None, Some(b"a"))]);
        let b = build_simple_batch(10, 1, &[(None, Some(b"b"))]);
        let scan = scan_log(&[a, b].concat()[..], Some(10), "x.log", |_, _| Ok(())).unwrap();
        assert_eq!(scan.batches, 2);
        assert!(
            scan.problems[0].message.contains("offsets do not increase"),
            "{:?}",
            scan.problems
        );
    }

    #[test]
    fn garbage_and_zero_tails_in_logs_stop_the_scan_without_panicking() {
        let good = build_simple_batch(0, 1, &[(None, Some(b"x"))]);
        let mut zeros = good.clone();
        zeros.extend_from_slice(&[0u8; 100]);
        let scan = scan_log(&zeros[..], Some(0), "x.log", |_, _| Ok(())).unwrap();
        assert_eq!(scan.batches, 1);
        assert_eq!(scan.valid_bytes, good.len() as u64);
        assert_eq!(scan.file_bytes, good.len() as u64 + 100);
        assert!(
            scan.problems[0].message.contains("zero-filled"),
            "{:?}",
            scan.problems
        );
        // Random bytes: never a panic.
        let mut seed = 0x9e3779b97f4a7c15u64;
        for round in 0..2_000 {
            let mut bytes = good.clone();
            for _ in 0..(round % 5) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % bytes.len();
                bytes[i] = (seed >> 32) as u8;
            }
            let cut = (seed as usize >> 3) % (bytes.len() + 1);
            let _ = scan_log(&bytes[..cut], Some(0), "x.log", |_, b| {
                let _ = codec::decode_batch_records(b);
                Ok(())
            });
        }
    }

    #[test]
    fn dump_prints_batches_records_and_index_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let d = partition_dir(tmp.path());
        write_segment(&d, 0, 2, 2);
        let mut out = Vec::new();
        dump(&d.join("00000000000000000000.log"), true, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("position: 0 base_offset: 0 last_offset: 1 count: 2"),
            "{text}"
        );
        assert!(text.contains("compression: none"), "{text}");
        assert!(text.contains("(ok)"), "{text}");
        assert!(
            text.contains("| offset: 3 timestamp: 1010 key: k value: v1-1 headers: "),
            "{text}"
        );
        assert!(text.contains("2 batch(es), 4 record(s)"), "{text}");

        let mut out = Vec::new();
        dump(&d, false, true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let batches = &v["segments"][0]["batches"];
        assert_eq!(batches.as_array().unwrap().len(), 2);
        assert_eq!(batches[1]["base_offset"], 2);
        assert_eq!(batches[1]["crc_ok"], true);

        let mut out = Vec::new();
        dump(
            &d.join("00000000000000000000.index"),
            false,
            false,
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("offset: 2 relative_offset: 2 position: "),
            "{text}"
        );
        assert!(text.contains("2 entries, 0 preallocated"), "{text}");

        let mut out = Vec::new();
        dump(
            &d.join("00000000000000000000.timeindex"),
            false,
            true,
            &mut out,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["entries"][1]["timestamp"], 1010);
        assert_eq!(v["entries"][1]["offset"], 2);
    }

    #[test]
    fn verify_json_reports_problems_per_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let d = partition_dir(tmp.path());
        let mut log = write_segment(&d, 0, 1, 1);
        let last = log.len() - 1;
        log[last] ^= 1;
        std::fs::write(d.join("00000000000000000000.log"), &log).unwrap();
        let mut out = Vec::new();
        let err = verify(tmp.path(), true, &mut out).unwrap_err();
        assert_eq!(crate::exit::status_of(&err), crate::exit::DAMAGE);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["segments"][0]["damaged"], true);
        assert_eq!(v["segments"][0]["problems"][0]["severity"], "damage");
    }

    #[test]
    fn paths_without_segments_are_usage_errors() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("__meta")).unwrap();
        let err = verify_text(tmp.path()).0.unwrap_err();
        assert_eq!(crate::exit::status_of(&err), crate::exit::USAGE);
        let err = verify_text(&tmp.path().join("missing")).0.unwrap_err();
        assert_eq!(crate::exit::status_of(&err), crate::exit::USAGE);
        assert_eq!(
            partition_topic(Path::new("/d/my-topic-7/0.log")),
            ("my-topic".to_string(), 7)
        );
    }
}
