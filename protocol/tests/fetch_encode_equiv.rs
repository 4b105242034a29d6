//! Byte equality of `fetch_encode` with `kafka-protocol`'s own FetchResponse encoder (framed by
//! `frame::encode_response`: size prefix + response header + body) for every version 4..=12,
//! on random but valid responses with file ranges materialised.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
    SnapshotId as KpSnapshotId,
};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchResponse, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardlog_protocol::fetch_encode::{
    chunks_len, encode_fetch_response, AbortedTxn, Chunk, CurrentLeader, DivergingEpoch,
    FetchEncodeError, FetchPartitionDesc, FetchResponseDesc, FetchTopicDesc, RecordsPart,
    SnapshotId, MAX_VERSION, MIN_VERSION,
};
use shardlog_protocol::frame;

/// A generated response in both shapes, plus the bytes behind each file token.
struct Case {
    desc: FetchResponseDesc,
    crate_resp: FetchResponse,
    files: Vec<Bytes>,
}

fn random_bytes(rng: &mut StdRng, lens: std::ops::Range<usize>) -> Bytes {
    let len = rng.gen_range(lens);
    (0..len)
        .map(|_| rng.gen::<u8>())
        .collect::<Vec<u8>>()
        .into()
}

fn name(rng: &mut StdRng) -> String {
    // Mostly short; sometimes long enough for a 2-byte compact length.
    let len = if rng.gen_bool(0.1) {
        rng.gen_range(127..300)
    } else {
        rng.gen_range(0..20)
    };
    (0..len)
        .map(|_| rng.gen_range(b'a'..=b'z') as char)
        .collect()
}

/// How many elements: usually few, sometimes past 127 (multi-byte compact counts).
fn count(rng: &mut StdRng, few: usize) -> usize {
    if rng.gen_bool(0.03) {
        rng.gen_range(127..140)
    } else {
        rng.gen_range(0..=few)
    }
}

fn gen_case(rng: &mut StdRng, version: i16) -> Case {
    let mut files = Vec::new();
    let throttle_time_ms = rng.gen();
    let error_code = rng.gen();
    let session_id = if version >= 7 { rng.gen() } else { 0 };
    let mut desc = FetchResponseDesc {
        throttle_time_ms,
        error_code,
        session_id,
        topics: vec![],
    };
    let mut crate_resp = FetchResponse::default()
        .with_throttle_time_ms(throttle_time_ms)
        .with_error_code(error_code)
        .with_session_id(session_id);

    for _ in 0..count(rng, 3) {
        let topic = name(rng);
        let mut t = FetchTopicDesc {
            name: StrBytes::from_string(topic.clone()),
            partitions: vec![],
        };
        let mut kt =
            FetchableTopicResponse::default().with_topic(TopicName(StrBytes::from_string(topic)));
        for _ in 0..count(rng, 4) {
            let (records, crate_records) = match rng.gen_range(0..6) {
                0 => (RecordsPart::None, None),
                1 => (RecordsPart::Bytes(Bytes::new()), Some(Bytes::new())),
                2 => {
                    let b = random_bytes(rng, 1..300);
                    (RecordsPart::Bytes(b.clone()), Some(b))
                }
                3 => {
                    // Larger than the inline threshold: becomes its own chunk.
                    let b = random_bytes(rng, 4097..9000);
                    (RecordsPart::Bytes(b.clone()), Some(b))
                }
                4 => {
                    files.push(Bytes::new());
                    (
                        RecordsPart::File {
                            len: 0,
                            token: files.len() - 1,
                        },
                        Some(Bytes::new()),
                    )
                }
                _ => {
                    let b = random_bytes(rng, 1..5000);
                    files.push(b.clone());
                    (
                        RecordsPart::File {
                            len: b.len() as u32,
                            token: files.len() - 1,
                        },
                        Some(b),
                    )
                }
            };
            let aborted: Option<Vec<AbortedTxn>> = match rng.gen_range(0..4) {
                0 => None,
                1 => Some(vec![]),
                _ => Some(
                    (0..count(rng, 3))
                        .map(|_| AbortedTxn {
                            producer_id: rng.gen(),
                            first_offset: rng.gen(),
                        })
                        .collect(),
                ),
            };
            let preferred_read_replica = if version >= 11 && rng.gen_bool(0.5) {
                rng.gen()
            } else {
                -1
            };
            // Tagged fields: absent, explicitly default (must be left out), or set. Before
            // v12 both encoders drop them.
            let diverging_epoch = match rng.gen_range(0..3) {
                0 => None,
                1 => Some(DivergingEpoch {
                    epoch: -1,
                    end_offset: -1,
                }),
                _ => Some(DivergingEpoch {
                    epoch: rng.gen(),
                    end_offset: rng.gen(),
                }),
            };
            let current_leader = match rng.gen_range(0..3) {
                0 => None,
                1 => Some(CurrentLeader {
                    leader_id: -1,
                    leader_epoch: -1,
                }),
                _ => Some(CurrentLeader {
                    leader_id: rng.gen(),
                    leader_epoch: rng.gen(),
                }),
            };
            let snapshot_id = match rng.gen_range(0..3) {
                0 => None,
                1 => Some(SnapshotId {
                    end_offset: -1,
                    epoch: -1,
                }),
                _ => Some(SnapshotId {
                    end_offset: rng.gen(),
                    epoch: rng.gen(),
                }),
            };
            let p = FetchPartitionDesc {
                partition_index: rng.gen(),
                error_code: rng.gen(),
                high_watermark: rng.gen(),
                last_stable_offset: rng.gen(),
                log_start_offset: rng.gen(),
                aborted_transactions: aborted,
                preferred_read_replica,
                diverging_epoch,
                current_leader,
                snapshot_id,
                records,
            };
            let mut kp = PartitionData::default()
                .with_partition_index(p.partition_index)
                .with_error_code(p.error_code)
                .with_high_watermark(p.high_watermark)
                .with_last_stable_offset(p.last_stable_offset)
                .with_log_start_offset(p.log_start_offset)
                .with_aborted_transactions(p.aborted_transactions.as_ref().map(|txns| {
                    txns.iter()
                        .map(|t| {
                            AbortedTransaction::default()
                                .with_producer_id(t.producer_id.into())
                                .with_first_offset(t.first_offset)
                        })
                        .collect()
                }))
                .with_preferred_read_replica(BrokerId(p.preferred_read_replica))
                .with_records(crate_records);
            if version >= 12 {
                if let Some(d) = p.diverging_epoch {
                    kp = kp.with_diverging_epoch(
                        EpochEndOffset::default()
                            .with_epoch(d.epoch)
                            .with_end_offset(d.end_offset),
                    );
                }
                if let Some(l) = p.current_leader {
                    kp = kp.with_current_leader(
                        LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(l.leader_id))
                            .with_leader_epoch(l.leader_epoch),
                    );
                }
                if let Some(s) = p.snapshot_id {
                    kp = kp.with_snapshot_id(
                        KpSnapshotId::default()
                            .with_end_offset(s.end_offset)
                            .with_epoch(s.epoch),
                    );
                }
            }
            t.partitions.push(p);
            kt.partitions.push(kp);
        }
        desc.topics.push(t);
        crate_resp.responses.push(kt);
    }
    Case {
        desc,
        crate_resp,
        files,
    }
}

/// Concatenates the chunks, reading file ranges from `files`.
fn materialise(chunks: &[Chunk], files: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks_len(chunks));
    for c in chunks {
        match c {
            Chunk::Bytes(b) => out.extend_from_slice(b),
            Chunk::File { token, len } => {
                let f = &files[*token];
                assert_eq!(f.len(), *len as usize, "file chunk length");
                assert!(*len > 0, "empty file ranges need no chunk");
                out.extend_from_slice(f);
            }
        }
    }
    out
}

fn crate_bytes(correlation_id: i32, version: i16, resp: FetchResponse) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame::encode_response(
        correlation_id,
        ApiKey::Fetch,
        version,
        &ResponseKind::Fetch(resp),
        &mut out,
    )
    .expect("kafka-protocol encodes the generated response");
    out.to_vec()
}

#[test]
fn every_version_matches_kafka_protocol_byte_for_byte() {
    let mut rng = StdRng::seed_from_u64(0x5eed_f37c);
    for version in MIN_VERSION..=MAX_VERSION {
        let mut file_chunks = 0;
        let mut byte_chunks = 0;
        for _ in 0..400 {
            let case = gen_case(&mut rng, version);
            let correlation_id = rng.gen();
            let chunks = encode_fetch_response(correlation_id, version, &case.desc).unwrap();
            file_chunks += chunks
                .iter()
                .filter(|c| matches!(c, Chunk::File { .. }))
                .count();
            byte_chunks += chunks.len();
            let ours = materialise(&chunks, &case.files);
            let theirs = crate_bytes(correlation_id, version, case.crate_resp);
            assert_eq!(ours.len(), theirs.len(), "v{version}: length");
            assert_eq!(ours, theirs, "v{version}: bytes");
        }
        assert!(file_chunks > 100, "v{version}: file ranges were exercised");
        assert!(byte_chunks > 400, "v{version}: several chunks per response");
    }
}

#[test]
fn empty_response_matches_for_every_version() {
    for version in MIN_VERSION..=MAX_VERSION {
        let chunks = encode_fetch_response(7, version, &FetchResponseDesc::default()).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            materialise(&chunks, &[]),
            crate_bytes(7, version, FetchResponse::default())
        );
    }
}

#[test]
fn version_restrictions_match_kafka_protocol() {
    // Fields a version cannot carry: both encoders refuse.
    for version in MIN_VERSION..=MAX_VERSION {
        let desc = FetchResponseDesc {
            session_id: 1,
            ..Default::default()
        };
        let ours = encode_fetch_response(0, version, &desc);
        let mut out = BytesMut::new();
        let theirs = frame::encode_response(
            0,
            ApiKey::Fetch,
            version,
            &ResponseKind::Fetch(FetchResponse::default().with_session_id(1)),
            &mut out,
        );
        assert_eq!(ours.is_err(), theirs.is_err(), "v{version} session_id");
        if version < 7 {
            assert_eq!(ours, Err(FetchEncodeError::SessionIdNeedsV7(1)));
        }

        let mut p = FetchPartitionDesc::new(0, 0, RecordsPart::None);
        p.preferred_read_replica = 3;
        let desc = FetchResponseDesc {
            topics: vec![FetchTopicDesc {
                name: StrBytes::from_static_str("t"),
                partitions: vec![p],
            }],
            ..Default::default()
        };
        let crate_resp =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![PartitionData::default()
                    .with_records(None)
                    .with_preferred_read_replica(BrokerId(3))])]);
        let ours = encode_fetch_response(0, version, &desc);
        let theirs = frame::encode_response(
            0,
            ApiKey::Fetch,
            version,
            &ResponseKind::Fetch(crate_resp),
            &mut out,
        );
        assert_eq!(
            ours.is_err(),
            theirs.is_err(),
            "v{version} preferred_read_replica"
        );
    }
}

#[test]
fn partition_defaults_match_kafka_protocol_defaults() {
    let ours = FetchPartitionDesc::new(0, 0, RecordsPart::Bytes(Bytes::new()));
    let theirs = PartitionData::default();
    assert_eq!(ours.last_stable_offset, theirs.last_stable_offset);
    assert_eq!(ours.log_start_offset, theirs.log_start_offset);
    assert_eq!(ours.preferred_read_replica, theirs.preferred_read_replica.0);
    assert_eq!(
        ours.aborted_transactions.as_ref().map(Vec::len),
        theirs.aborted_transactions.as_ref().map(Vec::len)
    );
}
