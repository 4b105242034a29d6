//! Produce: validate batches on the accepting shard (CRC work spreads over whichever shards hold
//! connections), then send each owning shard its partitions' batches in one call. The owning
//! shard appends only where this broker leads; acks=all waits there for the ISR.
//!
//! A topic whose `cleanup.policy` includes `compact` takes only records with a key, as in
//! Kafka: a batch holding a record without one makes the partition's answer INVALID_RECORD,
//! with the records named (`record_errors`, Produce v8+), and nothing of that partition's
//! records is appended. Only such topics pay for the check, which reads each record's key
//! length (decompressing a compressed batch first).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use shardlog_protocol::batch;
use shardlog_protocol::compression::CompressionError;
use shardlog_protocol::records::{self, RecordsError};

use super::{RequestContext, Response};
use crate::base::errors;
use crate::config::TopicConfig;
use crate::partition::{AppendOutcome, IncomingBatch};
use crate::shard::scatter::scatter;
use crate::shard::{Counters, Shard};

/// The most a compressed batch of a compacted topic is inflated to for its key check, unless
/// `max.message.bytes` is larger: the bound the group coordinator's replay decodes with. Kafka
/// has no such bound; a batch beyond it is answered MESSAGE_TOO_LARGE (the Java producer then
/// splits it). Validation is synchronous, so a shard holds at most one inflated body at once.
const KEY_CHECK_DECOMPRESSED_MAX: usize = 64 << 20;

fn failed(code: i16) -> AppendOutcome {
    AppendOutcome::failed(code, -1)
}

/// A partition's records refused before they reach their shard.
#[derive(Debug, PartialEq)]
struct Refused {
    code: i16,
    /// Produce v8+: (index of the record in its batch, why), as Kafka's `RecordError`s.
    record_errors: Vec<(i32, String)>,
    /// Produce v8+: the partition's `error_message`.
    message: Option<String>,
}

impl From<i16> for Refused {
    fn from(code: i16) -> Self {
        Refused {
            code,
            record_errors: Vec::new(),
            message: None,
        }
    }
}

/// Splits and validates one partition's `records` for topic `topic` with settings `config`.
fn validate(
    records: &Option<Bytes>,
    topic: &str,
    partition: i32,
    config: &TopicConfig,
) -> Result<Vec<IncomingBatch>, Refused> {
    let Some(records) = records else {
        return Err(errors::INVALID_RECORD.into());
    };
    if records.is_empty() {
        return Err(errors::INVALID_RECORD.into());
    }
    let max_message_bytes = config.max_message_bytes;
    let batches = batch::split_batches(records, max_message_bytes).map_err(|e| e.kafka_code())?;
    let mut out = Vec::with_capacity(batches.len());
    for (pos, header) in batches {
        if header.records_count < 1 {
            return Err(errors::INVALID_RECORD.into());
        }
        if header.is_control() {
            // Only transaction coordinators write markers (`Partition::write_marker`), as in
            // Kafka, which refuses client-sent control batches as invalid records.
            return Err(errors::INVALID_RECORD.into());
        }
        if header.is_transactional() && (!header.has_producer_id() || header.base_sequence < 0) {
            // A transactional batch is idempotent: it needs a producer id and a sequence.
            return Err(errors::INVALID_RECORD.into());
        }
        let bytes = records.slice(pos..pos + header.total_len());
        if config.cleanup_policy_compact {
            let limit = KEY_CHECK_DECOMPRESSED_MAX.max(max_message_bytes);
            match records::keyless_records(&bytes, limit) {
                Ok(keyless) if keyless.is_empty() => {}
                Ok(keyless) => return Err(keyless_refusal(&keyless, topic, partition)),
                Err(e) => return Err(records_error_code(&e).into()),
            }
        }
        out.push(IncomingBatch { bytes, header });
    }
    Ok(out)
}

/// Kafka's answer to a batch of a compacted topic with records without a key
/// (`LogValidator.validateKey` and `processRecordErrors`).
fn keyless_refusal(keyless: &[i32], topic: &str, partition: i32) -> Refused {
    let why = format!(
        "Compacted topic cannot accept message without key in topic partition \
         {topic}-{partition}."
    );
    let shown: Vec<String> = keyless
        .iter()
        .take(3)
        .map(|i| format!("RecordError(batchIndex={i}, message='{why}')"))
        .collect();
    Refused {
        code: errors::INVALID_RECORD,
        message: Some(format!(
            "One or more records have been rejected due to {} record errors in total, and only \
             showing the first three errors at most: [{}]",
            keyless.len(),
            shown.join(", ")
        )),
        record_errors: keyless.iter().map(|&i| (i, why.clone())).collect(),
    }
}

/// One partition's answer from its shard's outcome.
fn answer(index: i32, version: i16, o: AppendOutcome) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(o.error_code)
        .with_base_offset(o.base_offset)
        .with_log_append_time_ms(o.log_append_time_ms)
        .with_log_start_offset(if version >= 5 { o.log_start_offset } else { -1 })
}

/// One partition's answer when its records were refused here; the record errors and message
/// only from v8, which has the fields (a version without them must keep the defaults, or
/// encoding fails).
fn refusal(index: i32, version: i16, r: Refused) -> PartitionProduceResponse {
    let a = answer(index, version, failed(r.code));
    if version < 8 {
        return a;
    }
    a.with_record_errors(
        r.record_errors
            .into_iter()
            .map(|(i, m)| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(i)
                    .with_batch_index_error_message(Some(StrBytes::from_string(m)))
            })
            .collect(),
    )
    .with_error_message(r.message.map(StrBytes::from_string))
}

/// The code for a batch whose records could not be walked: too large once inflated, or corrupt.
fn records_error_code(e: &RecordsError) -> i16 {
    match e {
        RecordsError::Batch { source, .. } => source.kafka_code(),
        RecordsError::Compression {
            source: CompressionError::TooLarge { .. },
            ..
        } => errors::MESSAGE_TOO_LARGE,
        _ => errors::CORRUPT_MESSAGE,
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    mut req: ProduceRequest,
    ctx: &RequestContext,
) -> Response {
    let acks = req.acks;
    let timeout = std::time::Duration::from_millis(req.timeout_ms.max(0) as u64);
    let snapshot = shard.metadata();
    // Per partition in request order: refused here, or Ok(()) sent to its shard.
    let mut decided: Vec<Result<(), Refused>> = Vec::new();
    let mut items = Vec::new();
    for t in &mut req.topic_data {
        let topic = snapshot.topic(t.name.0.as_str());
        for p in &mut t.partition_data {
            // Taken out of the request: once appended, the batches are the frame's only
            // holders, so its memory is freed while acks=all waits.
            let records = p.records.take();
            let check = if !matches!(acks, -1..=1) {
                Err(errors::INVALID_REQUIRED_ACKS.into())
            } else {
                match topic {
                    Some(meta) if p.index >= 0 && p.index < meta.partitions => {
                        validate(&records, &meta.name, p.index, &meta.config)
                            .map(|b| (meta.name.clone(), b))
                    }
                    _ => Err(errors::UNKNOWN_TOPIC_OR_PARTITION.into()),
                }
            };
            match check {
                Ok((name, batches)) => {
                    let bytes: usize = batches.iter().map(|b| b.bytes.len()).sum();
                    Counters::add(&shard.counters.produce_bytes, bytes as u64);
                    let owner = shard.owner(&name, p.index);
                    items.push((owner, (name, p.index, batches)));
                    decided.push(Ok(()));
                }
                Err(refused) => decided.push(Err(refused)),
            }
        }
    }
    // acks=all: every owning shard reports when its partitions have appended; from then on
    // the request's bytes are on disk (page cache), not in memory, and return to the budget
    // while the ISR catches up (a slow follower must not stop the shard reading requests).
    // acks=0/1 answer once appended anyway: no channel, nothing allocated for them.
    let sent = items.len();
    let txn_id: Option<String> = req.transactional_id.as_ref().map(|t| t.0.to_string());
    let (appended_tx, appended_rx) = match (acks == -1).then(flume::unbounded::<()>) {
        Some((tx, rx)) => (Some(tx), Some(rx)),
        None => (None, None),
    };
    let outcomes = scatter(
        shard,
        items,
        failed(errors::NOT_LEADER_OR_FOLLOWER),
        move |s: Rc<Shard>, parts| {
            let appended_tx = appended_tx.clone();
            let txn_id = txn_id.clone();
            async move {
                let tasks: Vec<_> = parts
                    .into_iter()
                    .map(
                        |(topic, index, batches): (
                            std::sync::Arc<str>,
                            i32,
                            Vec<IncomingBatch>,
                        )| {
                            let partition = s.partition(&topic, index);
                            // A topic this broker does not replicate (cluster mode): not ours to
                            // lead, the client should refresh its metadata.
                            let known = s.metadata().topic(&topic).is_some();
                            let here = s.clone();
                            let appended = appended_tx.clone();
                            let txn_id = txn_id.clone();
                            crate::runtime::rt::spawn(async move {
                                match partition {
                                    Some(p) => {
                                        let on_appended = move || {
                                            if let Some(a) = appended {
                                                let _ = a.send(());
                                            }
                                        };
                                        let verified = super::txn::verify_transactional_append(
                                            &here,
                                            &p,
                                            txn_id.as_deref(),
                                            &batches,
                                        )
                                        .await;
                                        let o = match verified {
                                            Ok(()) => {
                                                p.produce(batches, acks, timeout, on_appended).await
                                            }
                                            Err(code) => failed(code),
                                        };
                                        if o.queue_full {
                                            here.metrics.count(&here.metrics.produce_queue_full, 1);
                                        }
                                        o
                                    }
                                    None if known => failed(errors::NOT_LEADER_OR_FOLLOWER),
                                    None => failed(errors::UNKNOWN_TOPIC_OR_PARTITION),
                                }
                            })
                        },
                    )
                    .collect();
                let mut out = Vec::with_capacity(tasks.len());
                for t in tasks {
                    out.push(t.await);
                }
                out
            }
        },
    );
    let released = async {
        if let Some(rx) = appended_rx {
            // A partition that never appends (refused, its shard stopped) sends nothing; the
            // wait then ends when the scatter completes and drops the last sender.
            for _ in 0..sent {
                if rx.recv_async().await.is_err() {
                    break;
                }
            }
            ctx.release_request_bytes();
        }
    };
    let (outcomes, ()) = futures_lite::future::zip(outcomes, released).await;
    if acks == 0 {
        return Response::None;
    }
    let mut outcomes = outcomes.into_iter();
    let mut decided = decided.into_iter();
    let responses = req
        .topic_data
        .into_iter()
        .map(|t| {
            let partitions = t
                .partition_data
                .iter()
                .map(
                    |p| match decided.next().expect("one decision per partition") {
                        Ok(()) => answer(
                            p.index,
                            version,
                            outcomes.next().expect("one outcome per sent partition"),
                        ),
                        Err(r) => refusal(p.index, version, r),
                    },
                )
                .collect();
            TopicProduceResponse::default()
                .with_name(t.name)
                .with_partition_responses(partitions)
        })
        .collect();
    Response::Message(ResponseKind::Produce(
        ProduceResponse::default().with_responses(responses),
    ))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::protocol::Encodable;
    use shardlog_protocol::batch::Compression;
    use shardlog_protocol::records::BatchBuilder;

    use super::*;

    fn topic(policy: &str) -> TopicConfig {
        let mut c = TopicConfig::default();
        c.set("cleanup.policy", policy).expect("valid policy");
        c
    }

    fn batch(codec: Compression, keys: &[Option<&str>]) -> Vec<u8> {
        let mut b = BatchBuilder::new(codec, 1_000);
        for k in keys {
            b.push(1_000, k.map(str::as_bytes), Some(b"v"), &[])
                .expect("encodable");
        }
        b.build().expect("a record at least")
    }

    fn check(config: &TopicConfig, batches: &[&[u8]]) -> Result<usize, Refused> {
        let records = Some(Bytes::from(batches.concat()));
        validate(&records, "orders", 3, config).map(|b| b.len())
    }

    const WHY: &str =
        "Compacted topic cannot accept message without key in topic partition orders-3.";

    #[test]
    fn compacted_topics_refuse_records_without_a_key() {
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let keyed = batch(codec, &[Some("a"), Some("b")]);
            let keyless = batch(codec, &[Some("a"), None, Some("c"), None]);
            for policy in ["compact", "compact,delete"] {
                let c = topic(policy);
                assert_eq!(check(&c, &[&keyed]), Ok(1));
                assert_eq!(check(&c, &[&keyed, &keyed]), Ok(2));
                let refused = check(&c, &[&keyed, &keyless]).unwrap_err();
                assert_eq!(refused.code, errors::INVALID_RECORD, "{codec:?} {policy}");
                // Indexes within the batch that holds them.
                assert_eq!(
                    refused.record_errors,
                    [(1, WHY.to_string()), (3, WHY.to_string())]
                );
                assert_eq!(
                    refused.message.as_deref(),
                    Some(
                        format!(
                            "One or more records have been rejected due to 2 record errors in \
                             total, and only showing the first three errors at most: \
                             [RecordError(batchIndex=1, message='{WHY}'), \
                             RecordError(batchIndex=3, message='{WHY}')]"
                        )
                        .as_str()
                    )
                );
            }
            // Without `compact`, keys are not looked at.
            assert_eq!(check(&topic("delete"), &[&keyless]), Ok(1));
        }
        // Kafka's message shows three errors at most, and counts them all.
        let many = batch(Compression::None, &[None, None, None, None, None]);
        let refused = check(&topic("compact"), &[&many]).unwrap_err();
        assert_eq!(refused.record_errors.len(), 5);
        let message = refused.message.unwrap();
        assert!(message.contains("due to 5 record errors"), "{message}");
        assert_eq!(message.matches("RecordError(").count(), 3, "{message}");
    }

    #[test]
    fn broken_batches_keep_their_errors_on_compacted_topics() {
        let good = batch(Compression::None, &[Some("k")]);
        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        for policy in ["delete", "compact"] {
            let refused = check(&topic(policy), &[&bad_crc]).unwrap_err();
            assert_eq!(refused, Refused::from(errors::CORRUPT_MESSAGE), "{policy}");
        }
        // A batch whose CRC is right but whose record is not: stored as sent where keys do not
        // matter (the broker does not decode), CORRUPT_MESSAGE where they are checked.
        let mut bad_record = good.clone();
        bad_record[batch::BATCH_HEADER_LEN] = 0x7e; // record length past the batch
        let crc = crc32c::crc32c(&bad_record[21..]);
        bad_record[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(check(&topic("delete"), &[&bad_record]), Ok(1));
        assert_eq!(
            check(&topic("compact"), &[&bad_record]).unwrap_err(),
            Refused::from(errors::CORRUPT_MESSAGE)
        );
        // A body that inflates beyond the bound: MESSAGE_TOO_LARGE (the Java producer splits).
        let mut b = BatchBuilder::new(Compression::Zstd, 0);
        let big = vec![0u8; KEY_CHECK_DECOMPRESSED_MAX + 1];
        b.push(0, Some(b"k"), Some(&big), &[]).expect("encodable");
        let bomb = b.build().expect("built");
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        assert_eq!(check(&topic("delete"), &[&bomb]), Ok(1));
        assert_eq!(
            check(&topic("compact"), &[&bomb]).unwrap_err(),
            Refused::from(errors::MESSAGE_TOO_LARGE)
        );
    }

    #[test]
    fn record_errors_are_answered_from_v8_only() {
        let r = || keyless_refusal(&[0, 2], "orders", 3);
        for version in 3..=11 {
            let p = refusal(0, version, r());
            assert_eq!(p.error_code, errors::INVALID_RECORD);
            if version >= 8 {
                let got: Vec<(i32, String)> = p
                    .record_errors
                    .iter()
                    .map(|e| {
                        (
                            e.batch_index,
                            e.batch_index_error_message
                                .as_ref()
                                .map(|m| m.to_string())
                                .unwrap_or_default(),
                        )
                    })
                    .collect();
                assert_eq!(got, [(0, WHY.to_string()), (2, WHY.to_string())]);
                assert!(p.error_message.is_some());
            } else {
                assert!(p.record_errors.is_empty() && p.error_message.is_none());
            }
            // Every version encodes what it is given.
            let mut buf = bytes::BytesMut::new();
            ProduceResponse::default()
                .with_responses(vec![TopicProduceResponse::default()
                    .with_name(kafka_protocol::messages::TopicName(
                        StrBytes::from_static_str("orders"),
                    ))
                    .with_partition_responses(vec![p])])
                .encode(&mut buf, version)
                .unwrap_or_else(|e| panic!("v{version}: {e}"));
        }
        // Other refusals carry no record errors.
        let p = refusal(0, 9, Refused::from(errors::CORRUPT_MESSAGE));
        assert!(p.record_errors.is_empty() && p.error_message.is_none());
    }
}
