//! Produce: validate batches on the accepting shard (CRC work spreads over whichever shards hold
//! connections), then send each owning shard its partitions' batches in one call. The owning
//! shard appends only where this broker leads; acks=all waits there for the ISR.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use shardlog_protocol::batch;

use super::{RequestContext, Response};
use crate::base::errors;
use crate::partition::{AppendOutcome, IncomingBatch};
use crate::shard::scatter::scatter;
use crate::shard::{Counters, Shard};

fn failed(code: i16) -> AppendOutcome {
    AppendOutcome::failed(code, -1)
}

/// Splits and validates one partition's `records`.
fn validate(records: &Option<Bytes>, max_message_bytes: usize) -> Result<Vec<IncomingBatch>, i16> {
    let Some(records) = records else {
        return Err(errors::INVALID_RECORD);
    };
    if records.is_empty() {
        return Err(errors::INVALID_RECORD);
    }
    let batches = batch::split_batches(records, max_message_bytes).map_err(|e| e.kafka_code())?;
    let mut out = Vec::with_capacity(batches.len());
    for (pos, header) in batches {
        if header.records_count < 1 {
            return Err(errors::INVALID_RECORD);
        }
        if header.is_control() {
            // Only transaction coordinators write markers (`Partition::write_marker`), as in
            // Kafka, which refuses client-sent control batches as invalid records.
            return Err(errors::INVALID_RECORD);
        }
        if header.is_transactional() && (!header.has_producer_id() || header.base_sequence < 0) {
            // A transactional batch is idempotent: it needs a producer id and a sequence.
            return Err(errors::INVALID_RECORD);
        }
        out.push(IncomingBatch {
            bytes: records.slice(pos..pos + header.total_len()),
            header,
        });
    }
    Ok(out)
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
    // Per partition in request order: Err(code) decided here, or Ok(()) sent to its shard.
    let mut decided: Vec<Result<(), i16>> = Vec::new();
    let mut items = Vec::new();
    for t in &mut req.topic_data {
        let topic = snapshot.topic(t.name.0.as_str());
        for p in &mut t.partition_data {
            // Taken out of the request: once appended, the batches are the frame's only
            // holders, so its memory is freed while acks=all waits.
            let records = p.records.take();
            let check = if !matches!(acks, -1..=1) {
                Err(errors::INVALID_REQUIRED_ACKS)
            } else {
                match topic {
                    Some(meta) if p.index >= 0 && p.index < meta.partitions => {
                        validate(&records, meta.config.max_message_bytes)
                            .map(|b| (meta.name.clone(), b))
                    }
                    _ => Err(errors::UNKNOWN_TOPIC_OR_PARTITION),
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
                Err(code) => decided.push(Err(code)),
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
                .map(|p| {
                    let o = match decided.next().expect("one decision per partition") {
                        Ok(()) => outcomes.next().expect("one outcome per sent partition"),
                        Err(code) => failed(code),
                    };
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(o.error_code)
                        .with_base_offset(o.base_offset)
                        .with_log_append_time_ms(o.log_append_time_ms)
                        .with_log_start_offset(if version >= 5 { o.log_start_offset } else { -1 })
                })
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
