//! Walking the batches of a `.log` file: header-only walks for reads (a few KiB per read, record
//! bytes are never needed) and validating replays for recovery (whole batches, CRC checked).

use std::io;
use std::ops::ControlFlow;

use shardlog_protocol::batch::{self, BatchHeader, BATCH_HEADER_LEN};
use shardlog_runtime::fs::BufferedFile;

use crate::policy::MAX_RELATIVE_OFFSET;

/// Bytes read per header-walk step: enough for several small batches' headers.
pub const HEADER_CHUNK: usize = 8 * 1024;
/// Bytes read per replay step (batches larger than this are read whole).
pub const REPLAY_CHUNK: usize = 256 * 1024;

#[derive(Debug)]
pub enum WalkError {
    Io(io::Error),
    /// The batch chain is broken at `position`: a torn or inconsistent header, or an offset that
    /// does not continue the previous batch.
    Corrupt {
        position: u64,
        reason: String,
    },
}

impl From<shardlog_runtime::Error> for WalkError {
    fn from(e: shardlog_runtime::Error) -> Self {
        WalkError::Io(e.into())
    }
}

/// Calls `visit(position, header)` for each batch from `position` (whose base offset must be
/// `expected_base`) up to `end`, until `visit` breaks or `end` is reached. Checks only that
/// headers chain: lengths, offsets continuing densely. Bytes at and past `end` are never read.
pub async fn walk_headers<F>(
    file: &BufferedFile,
    position: u64,
    end: u64,
    expected_base: i64,
    mut visit: F,
) -> Result<(), WalkError>
where
    F: FnMut(u64, &BatchHeader) -> ControlFlow<()>,
{
    walk_batches(file, position, end, expected_base, false, |pos, h, _| {
        visit(pos, h)
    })
    .await
}

/// Control batches larger than this (a transaction marker is about 80 bytes) are not read
/// whole by `walk_batches`: their records are reported missing.
pub const CONTROL_BATCH_READ_MAX: usize = 64 * 1024;

/// `walk_headers`, and with `with_control` the whole bytes of each control batch (up to
/// `CONTROL_BATCH_READ_MAX`) as the third argument of `visit`, so that its control record can
/// be parsed; `None` for other batches.
pub async fn walk_batches<F>(
    file: &BufferedFile,
    mut position: u64,
    end: u64,
    mut expected_base: i64,
    with_control: bool,
    mut visit: F,
) -> Result<(), WalkError>
where
    F: FnMut(u64, &BatchHeader, Option<&[u8]>) -> ControlFlow<()>,
{
    let mut want = HEADER_CHUNK;
    while position < end {
        if end - position < BATCH_HEADER_LEN as u64 {
            return Err(corrupt(position, "torn batch header"));
        }
        let want_now = (end - position).min(want as u64) as usize;
        want = HEADER_CHUNK;
        let chunk = file.read_at(position, want_now).await?;
        if chunk.len() < BATCH_HEADER_LEN {
            return Err(WalkError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment shrank during a read (concurrent truncation)",
            )));
        }
        let mut at = 0usize;
        while chunk.len().saturating_sub(at) >= BATCH_HEADER_LEN {
            let pos = position + at as u64;
            let header = BatchHeader::parse(&chunk[at..]).expect("61 bytes present");
            check_chain(pos, &header, expected_base, end)?;
            let total = header.total_len();
            let control = with_control && header.is_control();
            let bytes = if control && at + total <= chunk.len() {
                Some(&chunk[at..at + total])
            } else if control && total <= CONTROL_BATCH_READ_MAX && (at > 0 || want_now < total) {
                // Read again from this batch's start, the whole batch at least.
                want = total.max(HEADER_CHUNK);
                break;
            } else {
                None
            };
            if visit(pos, &header, bytes).is_break() {
                return Ok(());
            }
            expected_base = header.last_offset() + 1;
            at += total;
            if position + at as u64 >= end {
                return Ok(());
            }
        }
        position += at as u64;
    }
    Ok(())
}

fn corrupt(position: u64, reason: impl Into<String>) -> WalkError {
    WalkError::Corrupt {
        position,
        reason: reason.into(),
    }
}

fn check_chain(pos: u64, h: &BatchHeader, expected_base: i64, end: u64) -> Result<(), WalkError> {
    if h.batch_length < (BATCH_HEADER_LEN - batch::LOG_OVERHEAD) as i32 || h.last_offset_delta < 0 {
        return Err(corrupt(
            pos,
            format!("bad batch length {} or offset delta", h.batch_length),
        ));
    }
    if h.base_offset < expected_base {
        return Err(corrupt(
            pos,
            format!(
                "batch base offset {} where {expected_base} was expected",
                h.base_offset
            ),
        ));
    }
    if pos + h.total_len() as u64 > end {
        return Err(corrupt(pos, "batch extends past the end of the segment"));
    }
    Ok(())
}

/// Where a validating replay stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayEnd {
    /// End of the last valid batch: the segment's size after recovery.
    pub valid_end: u64,
    /// One past the last offset of the last valid batch.
    pub next_offset: i64,
    /// Why the replay stopped before the end of the file, if it did.
    pub damage: Option<String>,
}

/// Replays whole batches from `position` to `file_size`, validating each one (length, magic,
/// record count, CRC-32C via `protocol::batch::validate`), that offsets continue from
/// `expected_base` (densely when `dense`; else strictly increasing: a cleaned segment has gaps),
/// and that they fit relative offsets of a segment based at `segment_base`.
/// Stops at the first bad batch; `visit(position, header)` sees each good one.
pub async fn replay<F>(
    file: &BufferedFile,
    mut position: u64,
    file_size: u64,
    mut expected_base: i64,
    segment_base: i64,
    dense: bool,
    mut visit: F,
) -> io::Result<ReplayEnd>
where
    F: FnMut(u64, &BatchHeader),
{
    let mut want = REPLAY_CHUNK;
    let stop = |position: u64, next_offset: i64, why: String| ReplayEnd {
        valid_end: position,
        next_offset,
        damage: Some(format!("at byte {position}: {why}")),
    };
    while position < file_size {
        let len = (file_size - position).min(want as u64) as usize;
        let chunk = file.read_at(position, len).await.map_err(io::Error::from)?;
        if chunk.len() < len {
            return Ok(stop(
                position + chunk.len() as u64,
                expected_base,
                "file shorter than its size".into(),
            ));
        }
        want = REPLAY_CHUNK;
        let mut at = 0usize;
        loop {
            let rest = &chunk[at..];
            let pos = position + at as u64;
            if rest.is_empty() {
                break;
            }
            let total = match batch::peek_total_len(rest) {
                None if pos + rest.len() as u64 >= file_size => {
                    return Ok(stop(pos, expected_base, "torn batch header".into()));
                }
                None => break,
                Some(Err(e)) => return Ok(stop(pos, expected_base, e.to_string())),
                Some(Ok(total)) => total,
            };
            if pos + total as u64 > file_size {
                return Ok(stop(
                    pos,
                    expected_base,
                    "torn batch (file ends inside it)".into(),
                ));
            }
            if total > rest.len() {
                // Re-read from this batch's start, at least the whole batch.
                want = want.max(total);
                break;
            }
            let header = match batch::validate(&rest[..total]) {
                Ok(h) => h,
                Err(e) => return Ok(stop(pos, expected_base, e.to_string())),
            };
            if header.base_offset < expected_base || (dense && header.base_offset != expected_base)
            {
                let why = format!(
                    "batch base offset {} where {}{expected_base} was expected",
                    header.base_offset,
                    if dense { "" } else { "at least " }
                );
                return Ok(stop(pos, expected_base, why));
            }
            if header.last_offset() - segment_base > MAX_RELATIVE_OFFSET {
                return Ok(stop(
                    pos,
                    expected_base,
                    "offset beyond the segment's relative range".into(),
                ));
            }
            visit(pos, &header);
            expected_base = header.last_offset() + 1;
            at += total;
        }
        position += at as u64;
    }
    Ok(ReplayEnd {
        valid_end: position,
        next_offset: expected_base,
        damage: None,
    })
}

/// `replay` without reading the batches' bodies: from `position` to `file_size`, checks what
/// the headers say (lengths chain, magic 2, offsets continue from `expected_base`, densely when
/// `dense`, within the segment's relative range) and not the CRC. For bytes known to be
/// synced (below the recovery point, or after a clean shutdown), where a torn write cannot
/// be; it reads a few KiB per batch instead of every byte, which decides how fast thousands
/// of partitions open when their tails are no longer in the page cache. Stops without damage
/// before the first batch holding an offset at or past `synced_below` (`valid_end` is then
/// that batch's position): the caller replays from there with `replay`.
#[allow(clippy::too_many_arguments)]
pub async fn replay_headers<F>(
    file: &BufferedFile,
    position: u64,
    file_size: u64,
    expected_base: i64,
    segment_base: i64,
    dense: bool,
    synced_below: i64,
    mut visit: F,
) -> io::Result<ReplayEnd>
where
    F: FnMut(u64, &BatchHeader),
{
    let (mut valid_end, mut next_offset) = (position, expected_base);
    let mut damage = None;
    let walked = walk_headers(file, position, file_size, expected_base, |pos, h| {
        if h.last_offset() >= synced_below {
            return ControlFlow::Break(());
        }
        let why = if h.magic != 2 {
            Some(format!("magic {} is not 2", h.magic))
        } else if dense && h.base_offset != next_offset {
            Some(format!(
                "batch base offset {} where {next_offset} was expected",
                h.base_offset
            ))
        } else if h.last_offset() - segment_base > MAX_RELATIVE_OFFSET {
            Some("offset beyond the segment's relative range".into())
        } else {
            None
        };
        if let Some(why) = why {
            damage = Some(format!("at byte {pos}: {why}"));
            return ControlFlow::Break(());
        }
        visit(pos, h);
        valid_end = pos + h.total_len() as u64;
        next_offset = h.last_offset() + 1;
        ControlFlow::Continue(())
    })
    .await;
    match walked {
        Ok(()) => {}
        Err(WalkError::Io(e)) => return Err(e),
        Err(WalkError::Corrupt { position, reason }) => {
            damage = Some(format!("at byte {position}: {reason}"));
        }
    }
    Ok(ReplayEnd {
        valid_end,
        next_offset,
        damage,
    })
}
