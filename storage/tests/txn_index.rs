//! The aborted transaction index (`.txnindex`): written next to the segment of its marker,
//! searched from memory, cut with truncation, deleted with its segment, and checked against the
//! log at open (entries past the recovered log end are dropped).

mod common;

use common::{run, tempdir, tiny_config};
use shardlog_protocol::batch::{
    assign_offset, build_control_batch, build_simple_batch, ControlType,
};
use shardlog_storage::{batch_metas, AbortedTxn, PartitionLog};

async fn append_raw(log: &PartitionLog, mut bytes: Vec<u8>) -> i64 {
    let base = log.log_end_offset();
    assign_offset(&mut bytes, base, 0);
    let metas = batch_metas(&bytes).unwrap();
    log.append(bytes, &metas).await.unwrap();
    base
}

fn txn_file(dir: &std::path::Path, base: i64) -> std::path::PathBuf {
    dir.join(format!("{base:020}.txnindex"))
}

fn entry(pid: i64, first: i64, last: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id: pid,
        first_offset: first,
        last_offset: last,
        last_stable_offset: last + 1,
    }
}

#[test]
fn aborted_entries_follow_their_segments_and_the_log() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let log = PartitionLog::open(dir.clone(), tiny_config(1 << 20, 100), true)
            .await
            .unwrap();
        // 0..=1 data, 2 abort marker of producer 5, 3 data, 4 commit marker of producer 6.
        append_raw(
            &log,
            build_simple_batch(0, 1, &[(None, Some(b"a")), (None, Some(b"b"))]),
        )
        .await;
        let m1 = append_raw(&log, build_control_batch(5, 0, false, 3, 2)).await;
        assert_eq!(m1, 2);
        let a1 = entry(5, 0, m1);
        log.add_aborted_txns(&[a1]).await.unwrap();
        append_raw(&log, build_simple_batch(0, 1, &[(None, Some(b"c"))])).await;
        let m2 = append_raw(&log, build_control_batch(6, 0, true, 3, 2)).await;
        assert_eq!(m2, 4);
        log.roll().await.unwrap();
        append_raw(&log, build_simple_batch(0, 1, &[(None, Some(b"d"))])).await; // 5
        let m3 = append_raw(&log, build_control_batch(7, 1, false, 4, 3)).await; // 6
        let a2 = entry(7, 3, m3);
        log.add_aborted_txns(&[a2]).await.unwrap();
        assert_eq!(log.aborted_txns(), vec![a1, a2]);
        assert_eq!(std::fs::read(txn_file(&dir, 0)).unwrap().len(), 34);
        assert_eq!(std::fs::read(txn_file(&dir, 5)).unwrap().len(), 34);

        // Search from memory: overlapping entries only, across segments.
        assert_eq!(log.collect_aborted_txns(0, 2), vec![a1]);
        assert_eq!(log.collect_aborted_txns(3, 4), vec![a2]);
        assert_eq!(log.collect_aborted_txns(5, 7), vec![a2]);
        assert!(log.collect_aborted_txns(7, 8).is_empty());

        // The scan hands over control records in log order.
        let mut seen = Vec::new();
        log.scan_batches(0, &mut |h, c| {
            seen.push((h.base_offset, c.map(|c| (c.kind, c.coordinator_epoch))))
        })
        .await
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (0, None),
                (2, Some((ControlType::Abort, 3))),
                (3, None),
                (4, Some((ControlType::Commit, 3))),
                (5, None),
                (6, Some((ControlType::Abort, 4))),
            ]
        );

        // Truncation cuts the entries whose markers go.
        log.truncate_to(6).await.unwrap();
        assert_eq!(log.aborted_txns(), vec![a1]);
        assert!(!txn_file(&dir, 5).exists());
        let m3 = append_raw(&log, build_control_batch(7, 1, false, 4, 3)).await;
        log.add_aborted_txns(&[entry(7, 3, m3)]).await.unwrap();

        // Rebuilding from a scan replaces them (and rewrites the files).
        log.replace_aborted_txns(&[a1]).await.unwrap();
        assert_eq!(log.aborted_txns(), vec![a1]);
        assert!(!txn_file(&dir, 5).exists());
        log.add_aborted_txns(&[entry(7, 3, m3)]).await.unwrap();

        // Retention of the first segment deletes its `.txnindex`.
        log.delete_records_before(5).await.unwrap();
        assert!(!txn_file(&dir, 0).exists());
        assert_eq!(log.aborted_txns(), vec![entry(7, 3, m3)]);
        log.close().await.unwrap();
    });
}

#[test]
fn recovery_drops_entries_past_the_recovered_log_end() {
    run(|| async {
        let tmp = tempdir();
        let dir = tmp.path().join("t-0");
        let log = PartitionLog::open(dir.clone(), tiny_config(1 << 20, 100), true)
            .await
            .unwrap();
        append_raw(&log, build_simple_batch(0, 1, &[(None, Some(b"a"))])).await; // 0
        append_raw(&log, build_control_batch(5, 0, false, 0, 1)).await; // 1
        log.add_aborted_txns(&[entry(5, 0, 1)]).await.unwrap();
        append_raw(&log, build_simple_batch(0, 1, &[(None, Some(b"b"))])).await; // 2
        append_raw(&log, build_control_batch(6, 0, false, 0, 1)).await; // 3
        log.add_aborted_txns(&[entry(6, 2, 3)]).await.unwrap();
        let log_path = dir.join(format!("{:020}.log", 0));
        drop(log); // kill -9: nothing closed cleanly
                   // The last marker is torn: recovery cuts it, and its entry must go with it.
        let len = std::fs::metadata(&log_path).unwrap().len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&log_path)
            .unwrap();
        f.set_len(len - 5).unwrap();
        // A torn entry at the end of the file is dropped as well.
        let mut bytes = std::fs::read(txn_file(&dir, 0)).unwrap();
        bytes.extend_from_slice(&[0, 0, 1]);
        std::fs::write(txn_file(&dir, 0), &bytes).unwrap();
        let log = PartitionLog::open(dir.clone(), tiny_config(1 << 20, 100), false)
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 3);
        assert_eq!(log.aborted_txns(), vec![entry(5, 0, 1)]);
        assert_eq!(std::fs::read(txn_file(&dir, 0)).unwrap().len(), 34);
        log.close().await.unwrap();
    });
}
