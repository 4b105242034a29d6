//! A partition on a real log: transactional produce, markers, the last stable offset, what
//! read-committed fetches see, and the state rebuilt by reopening and by truncation.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shardlog_protocol::batch;
use shardlog_protocol::fetch_encode::AbortedTxn as WireAborted;
use shardlog_protocol::records::BatchBuilder;
use shardlog_storage::AbortedTxn;

use super::*;
use crate::cluster::control_api::Lease;

fn txn_batch(pid: i64, epoch: i16, seq: i32, records: usize, transactional: bool) -> IncomingBatch {
    // Timestamps of now: markers carry the wall clock, and an old first timestamp would roll
    // the segment by `segment.ms` (reads stop at a segment's end).
    let now = now_ms();
    let mut b = BatchBuilder::new(batch::Compression::None, now)
        .producer(pid, epoch, seq)
        .transactional(transactional);
    for i in 0..records {
        b.push(now, None, Some(format!("v{i}").as_bytes()), &[])
            .unwrap();
    }
    let bytes = b.build().unwrap();
    let header = batch::validate(&bytes).unwrap();
    IncomingBatch {
        bytes: Bytes::from(bytes),
        header,
    }
}

async fn produce(p: &Rc<Partition>, b: IncomingBatch) -> AppendOutcome {
    p.produce(vec![b], 1, Duration::from_secs(5), || {}).await
}

const COMMITTED: FetchFrom = FetchFrom {
    read_committed: true,
    ..FetchFrom::CONSUMER
};

/// (first offset, last offset) of a read's slice, and its aborted list.
async fn read(p: &Partition, offset: i64, from: FetchFrom) -> (Option<(i64, i64)>, PartitionRead) {
    let r = p.read(offset, 1 << 20, None, from).await;
    assert_eq!(r.error_code, errors::NONE);
    (
        r.slice
            .as_ref()
            .map(|s| (s.first_batch_offset, s.last_offset)),
        r,
    )
}

fn wire(pid: i64, first: i64) -> WireAborted {
    WireAborted {
        producer_id: pid,
        first_offset: first,
    }
}

async fn open(dir: &std::path::Path) -> Rc<Partition> {
    let p = Partition::open(
        Arc::from("t"),
        0,
        dir.to_path_buf(),
        TopicConfig::default(),
        true,
        Lease::standalone(),
    )
    .await
    .unwrap();
    let p = Rc::new(p);
    let me = BrokerId(0);
    p.apply_state(me, &PartitionState::standalone(me));
    p
}

async fn scenario(dir: std::path::PathBuf) {
    let p = open(&dir).await;
    // Producer 1 opens a transaction at 0 (0..=1), producer 2 at 2; a plain batch at 3.
    assert_eq!(
        produce(&p, txn_batch(1, 0, 0, 2, true)).await.base_offset,
        0
    );
    assert_eq!(
        produce(&p, txn_batch(2, 0, 0, 1, true)).await.base_offset,
        2
    );
    assert_eq!(
        produce(&p, txn_batch(-1, -1, -1, 1, false))
            .await
            .base_offset,
        3
    );
    assert_eq!(p.high_watermark(), 4);
    assert_eq!(p.last_stable_offset(), 0);
    assert_eq!(p.ongoing_transactions(), vec![(0, 1), (2, 2)]);

    // Read committed stops at the LSO; read uncommitted at the high watermark.
    let (slice, r) = read(&p, 0, COMMITTED).await;
    assert_eq!(slice, None);
    assert_eq!((r.last_stable_offset, r.high_watermark), (0, 4));
    assert_eq!(r.aborted_transactions, Some(vec![]));
    let (slice, r) = read(&p, 0, FetchFrom::CONSUMER).await;
    assert_eq!(slice, Some((0, 3)));
    assert_eq!(r.aborted_transactions, None);

    // Inside its transaction producer 1 may not write non-transactionally.
    let o = produce(&p, txn_batch(1, 0, 2, 1, false)).await;
    assert_eq!(o.error_code, errors::INVALID_TXN_STATE);

    // A read-committed fetch waiting at the LSO is woken by the marker that moves it.
    let (tx, rx) = flume::bounded(1);
    let r = p.read(0, 1 << 20, Some(&tx), COMMITTED).await;
    assert!(r.slice.is_none());
    assert!(rx.try_recv().is_err());

    // Producer 1 commits (marker at 4): the LSO moves to producer 2's first offset.
    let o = p.write_marker(1, 0, true, 5).await;
    assert_eq!(
        (o.error_code, o.base_offset, o.last_offset),
        (errors::NONE, 4, 4)
    );
    assert_eq!(rx.try_recv(), Ok(FetchWake::Data));
    assert_eq!(p.last_stable_offset(), 2);
    let (slice, r) = read(&p, 0, COMMITTED).await;
    assert_eq!(slice, Some((0, 1)));
    assert_eq!(r.last_stable_offset, 2);
    assert_eq!(r.aborted_transactions, Some(vec![]));

    // Producer 2 aborts (marker at 5): nothing open, LSO = high watermark.
    let o = p.write_marker(2, 0, false, 5).await;
    assert_eq!((o.error_code, o.base_offset), (errors::NONE, 5));
    assert_eq!(p.high_watermark(), 6);
    assert_eq!(p.last_stable_offset(), 6);
    let aborted = AbortedTxn {
        producer_id: 2,
        first_offset: 2,
        last_offset: 5,
        last_stable_offset: 6,
    };
    assert_eq!(p.log().aborted_txns(), vec![aborted]);
    let (slice, r) = read(&p, 0, COMMITTED).await;
    assert_eq!(slice, Some((0, 5)));
    assert_eq!(r.aborted_transactions, Some(vec![wire(2, 2)]));
    let (_, r) = read(&p, 3, COMMITTED).await;
    assert_eq!(r.aborted_transactions, Some(vec![wire(2, 2)]));

    // Stale producer epoch and stale coordinator epoch are refused; a marker with no open
    // transaction (bumped epoch) is written and completes nothing.
    let o = p.write_marker(2, 1, false, 5).await;
    assert_eq!((o.error_code, o.base_offset), (errors::NONE, 6));
    assert_eq!(p.log().aborted_txns(), vec![aborted]);
    assert_eq!(
        p.write_marker(2, 0, true, 5).await.error_code,
        errors::INVALID_PRODUCER_EPOCH
    );
    assert_eq!(
        p.write_marker(1, 0, true, 4).await.error_code,
        errors::TRANSACTION_COORDINATOR_FENCED
    );
    // Producer 2 (epoch 1) opens a new transaction at 7, still open at close.
    assert_eq!(
        produce(&p, txn_batch(2, 1, 0, 1, true)).await.base_offset,
        7
    );
    assert_eq!(p.last_stable_offset(), 7);
    p.close().await.unwrap();

    // Reopened: the same open transaction, LSO and aborted list, rebuilt from the log.
    let p = open(&dir).await;
    assert_eq!(p.log_end_offset(), 8);
    assert_eq!(p.ongoing_transactions(), vec![(7, 2)]);
    assert_eq!(p.last_stable_offset(), 7);
    assert_eq!(p.log().aborted_txns(), vec![aborted]);
    let (slice, r) = read(&p, 2, COMMITTED).await;
    assert_eq!(slice, Some((2, 6)));
    assert_eq!(r.aborted_transactions, Some(vec![wire(2, 2)]));

    // Truncating the abort marker away reopens producer 2's first transaction and forgets the
    // abort (rebuilt from the log).
    p.truncate_to(5).await.unwrap();
    assert_eq!(p.ongoing_transactions(), vec![(2, 2)]);
    assert_eq!(p.last_stable_offset(), 2);
    assert!(p.log().aborted_txns().is_empty());
    p.close().await.unwrap();
}

#[test]
fn transactions_commit_abort_lso_and_read_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t-0");
    crate::runtime::rt::start_executor(move || scenario(dir))
        .unwrap()
        .join()
        .unwrap();
}
