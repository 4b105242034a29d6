//! The aborted transaction index (`.txnindex`): Kafka's `TransactionIndex` layout, pure.
//!
//! One file per segment, named like the segment (`<base offset>.txnindex`), holding one entry
//! per transaction aborted by a marker in that segment, in marker order. Each entry is 34 bytes:
//! `int16 version (0), int64 producer_id, int64 first_offset, int64 last_offset (the ABORT
//! marker's offset), int64 last_stable_offset` (the LSO right after the marker: the first
//! offset of the earliest transaction still open, or the marker's offset + 1).
//!
//! The entries are derived from the log (`PartitionLog::replace_aborted_txns` rewrites them
//! from a scan); the files are written without sync and repaired at every open.

/// Bytes of one entry.
pub const TXN_ENTRY_LEN: usize = 34;
/// The only entry version.
pub const TXN_ENTRY_VERSION: i16 = 0;

/// A transaction that an ABORT marker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// The first offset of the transaction in this partition.
    pub first_offset: i64,
    /// The offset of the ABORT marker.
    pub last_offset: i64,
    /// The last stable offset once the marker was appended.
    pub last_stable_offset: i64,
}

pub fn encode_entries(entries: &[AbortedTxn], out: &mut Vec<u8>) {
    out.reserve(entries.len() * TXN_ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&TXN_ENTRY_VERSION.to_be_bytes());
        out.extend_from_slice(&e.producer_id.to_be_bytes());
        out.extend_from_slice(&e.first_offset.to_be_bytes());
        out.extend_from_slice(&e.last_offset.to_be_bytes());
        out.extend_from_slice(&e.last_stable_offset.to_be_bytes());
    }
}

/// Decodes the longest valid prefix of whole entries: a torn last entry, an unknown version or
/// an entry whose offsets are out of order (`first_offset > last_offset`, or a marker offset
/// not above the previous one) ends it.
pub fn decode_entries(bytes: &[u8]) -> Vec<AbortedTxn> {
    let i64_at = |b: &[u8], at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8"));
    let mut out: Vec<AbortedTxn> = Vec::with_capacity(bytes.len() / TXN_ENTRY_LEN);
    for e in bytes.chunks_exact(TXN_ENTRY_LEN) {
        if i16::from_be_bytes([e[0], e[1]]) != TXN_ENTRY_VERSION {
            break;
        }
        let entry = AbortedTxn {
            producer_id: i64_at(e, 2),
            first_offset: i64_at(e, 10),
            last_offset: i64_at(e, 18),
            last_stable_offset: i64_at(e, 26),
        };
        let ordered = entry.first_offset <= entry.last_offset
            && out.last().is_none_or(|p| p.last_offset < entry.last_offset);
        if !ordered {
            break;
        }
        out.push(entry);
    }
    out
}

/// Kafka's search of one segment's entries for a fetch of `[start, upper_exclusive)`: the
/// entries whose transaction overlaps the range, and whether the search is complete (an entry
/// whose last stable offset reaches `upper_exclusive` proves that no later marker can end a
/// transaction that began in the range).
pub fn collect(
    entries: &[AbortedTxn],
    start: i64,
    upper_exclusive: i64,
    out: &mut Vec<AbortedTxn>,
) -> bool {
    for e in entries {
        if e.last_offset >= start && e.first_offset < upper_exclusive {
            out.push(*e);
        }
        if e.last_stable_offset >= upper_exclusive {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn entries_round_trip_in_kafkas_layout() {
        let entries = vec![e(7, 10, 20, 21), e(-2, 15, 30, 15)];
        let mut bytes = Vec::new();
        encode_entries(&entries, &mut bytes);
        assert_eq!(bytes.len(), 2 * TXN_ENTRY_LEN);
        assert_eq!(&bytes[..2], &[0, 0], "version 0");
        assert_eq!(&bytes[2..10], &7i64.to_be_bytes());
        assert_eq!(&bytes[10..18], &10i64.to_be_bytes());
        assert_eq!(&bytes[18..26], &20i64.to_be_bytes());
        assert_eq!(&bytes[26..34], &21i64.to_be_bytes());
        assert_eq!(decode_entries(&bytes), entries);
        // A torn tail is dropped, whole entries kept.
        assert_eq!(decode_entries(&bytes[..50]), entries[..1]);
        // An unknown version or out-of-order entry ends the valid prefix.
        let mut bad = bytes.clone();
        bad[35] = 1;
        assert_eq!(decode_entries(&bad), entries[..1]);
        let mut back = Vec::new();
        encode_entries(&[e(1, 5, 9, 10), e(1, 1, 8, 9)], &mut back);
        assert_eq!(decode_entries(&back).len(), 1);
        assert!(decode_entries(&[]).is_empty());
    }

    #[test]
    fn collect_takes_overlapping_entries_and_stops_when_complete() {
        // Producer 1 aborted [10, 20]; producer 2 aborted [12, 25] while 1's was... done.
        let entries = [e(1, 10, 20, 12), e(2, 12, 25, 26), e(3, 30, 40, 41)];
        let mut out = Vec::new();
        assert!(collect(&entries, 0, 10, &mut out));
        assert!(out.is_empty(), "{out:?}");
        let mut out = Vec::new();
        assert!(collect(&entries, 18, 22, &mut out));
        assert_eq!(out, vec![entries[0], entries[1]]);
        let mut out = Vec::new();
        assert!(
            !collect(&entries, 21, 100, &mut out),
            "may continue in later segments"
        );
        assert_eq!(out, vec![entries[1], entries[2]]);
    }
}
