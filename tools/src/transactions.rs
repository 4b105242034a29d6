//! `transactions list | describe | producers`: what the transaction coordinators and partition
//! leaders know about transactions, as kafka-transactions.sh shows it. ListTransactions goes to
//! every broker (each answers for the transactional ids it coordinates) and the answers are
//! merged; DescribeTransactions goes to the transactional id's coordinator (FindCoordinator
//! key type 1); DescribeProducers to the partition's leader.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use kafka_protocol::messages::{
    describe_producers_request::TopicRequest, DescribeProducersRequest,
    DescribeTransactionsRequest, ListTransactionsRequest, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};
use shardlog_client::{check_code, ClientError, CoordinatorKey};

use crate::cli::{TxnDescribeArgs, TxnListArgs, TxnProducersArgs};
use crate::output::{format_timestamp, print_json, Table};
use crate::Ctx;

/// A transaction as ListTransactions reports it, with the broker that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTxn {
    pub transactional_id: String,
    pub coordinator: i32,
    pub producer_id: i64,
    pub state: String,
}

pub fn list(ctx: &Ctx, a: &TxnListArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let req = ListTransactionsRequest::default()
        .with_state_filters(a.state.iter().cloned().map(StrBytes::from_string).collect())
        .with_producer_id_filters(a.producer_id.iter().map(|p| ProducerId(*p)).collect())
        .with_duration_filter(a.duration_ms.unwrap_or(-1));
    let mut txns: BTreeMap<String, ListedTxn> = BTreeMap::new();
    for id in client.broker_ids() {
        let conn = client.connection_to(id)?;
        let version = conn.version_for::<ListTransactionsRequest>()?;
        if a.duration_ms.is_some() && version < 1 {
            anyhow::bail!(
                "broker {id} speaks ListTransactions v0 only, which has no duration filter; \
                 leave out --duration-ms"
            );
        }
        let response = conn
            .call_at(&req, version)
            .with_context(|| format!("listing transactions on broker {id}"))?;
        check_code(response.error_code, None, || {
            format!("listing transactions on broker {id}")
        })?;
        if !response.unknown_state_filters.is_empty() {
            let unknown: Vec<String> = response
                .unknown_state_filters
                .iter()
                .map(|s| s.to_string())
                .collect();
            eprintln!(
                "note: broker {id} does not know the state(s) {}",
                unknown.join(", ")
            );
        }
        for t in response.transaction_states {
            let tid = t.transactional_id.0.to_string();
            txns.insert(
                tid.clone(),
                ListedTxn {
                    transactional_id: tid,
                    coordinator: id,
                    producer_id: t.producer_id.0,
                    state: t.transaction_state.to_string(),
                },
            );
        }
    }
    let txns: Vec<ListedTxn> = txns.into_values().collect();
    render_list(&txns, ctx.json, out)
}

pub fn render_list(txns: &[ListedTxn], json_out: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json_out {
        let v = txns
            .iter()
            .map(|t| {
                json!({
                    "transactional_id": t.transactional_id,
                    "coordinator": t.coordinator,
                    "producer_id": t.producer_id,
                    "state": t.state,
                })
            })
            .collect();
        return print_json(out, &Value::Array(v));
    }
    let mut table = Table::new(&["TRANSACTIONAL ID", "COORDINATOR", "PRODUCER ID", "STATE"]);
    for t in txns {
        table.row(vec![
            t.transactional_id.clone(),
            t.coordinator.to_string(),
            t.producer_id.to_string(),
            t.state.clone(),
        ]);
    }
    write!(out, "{}", table.render())?;
    Ok(())
}

/// One transactional id as DescribeTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnView {
    pub transactional_id: String,
    pub coordinator: i32,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// -1 when no transaction is open.
    pub start_time_ms: i64,
    /// The open transaction's partitions, (topic, partition), sorted.
    pub partitions: Vec<(String, i32)>,
}

pub fn describe(ctx: &Ctx, a: &TxnDescribeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let id = a.transactional_id.as_str();
    let key = CoordinatorKey::transaction(id);
    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id.to_string()))]);
    let state = client
        .with_coordinator(key, |conn| {
            let r = conn.call(&req)?;
            let t = r
                .transaction_states
                .into_iter()
                .find(|t| *t.transactional_id.0 == *id)
                .ok_or_else(|| ClientError::Protocol {
                    addr: conn.addr().to_string(),
                    detail: format!("DescribeTransactions response has no entry for {id:?}"),
                })?;
            // Per-entry coordinator codes go back to `with_coordinator`, which retries them.
            check_code(t.error_code, None, || {
                format!("describing transactional id {id:?}")
            })?;
            Ok(t)
        })
        .with_context(|| format!("describing transactional id {id:?}"))?;
    let coordinator = client.coordinator_of(key)?;
    let mut partitions: Vec<(String, i32)> = state
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
        .collect();
    partitions.sort();
    let view = TxnView {
        transactional_id: id.to_string(),
        coordinator,
        state: state.transaction_state.to_string(),
        producer_id: state.producer_id.0,
        producer_epoch: state.producer_epoch,
        timeout_ms: state.transaction_timeout_ms,
        start_time_ms: state.transaction_start_time_ms,
        partitions,
    };
    render_describe(&view, now_ms(), ctx.json, out)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How long the open transaction has run at `now_ms` (None when none is open).
fn duration_ms(start_time_ms: i64, now_ms: i64) -> Option<i64> {
    (start_time_ms >= 0).then(|| (now_ms - start_time_ms).max(0))
}

pub fn render_describe(
    t: &TxnView,
    now_ms: i64,
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let duration = duration_ms(t.start_time_ms, now_ms);
    if json_out {
        return print_json(
            out,
            &json!({
                "transactional_id": t.transactional_id,
                "coordinator": t.coordinator,
                "state": t.state,
                "producer_id": t.producer_id,
                "producer_epoch": t.producer_epoch,
                "timeout_ms": t.timeout_ms,
                "start_time_ms": (t.start_time_ms >= 0).then_some(t.start_time_ms),
                "duration_ms": duration,
                "partitions": t.partitions.iter().map(|(topic, p)| json!({
                    "topic": topic,
                    "partition": p,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    writeln!(
        out,
        "transactional id: {}  state: {}  coordinator: {}",
        t.transactional_id, t.state, t.coordinator
    )?;
    writeln!(
        out,
        "producer id: {}  epoch: {}  timeout: {} ms",
        t.producer_id, t.producer_epoch, t.timeout_ms
    )?;
    match duration {
        Some(d) => writeln!(
            out,
            "started: {} ({d} ms ago)",
            format_timestamp(t.start_time_ms)
        )?,
        None => writeln!(out, "started: - (no open transaction)")?,
    }
    if t.partitions.is_empty() {
        writeln!(out, "partitions: none")?;
    } else {
        let mut table = Table::new(&["TOPIC", "PARTITION"]);
        for (topic, p) in &t.partitions {
            table.row(vec![topic.clone(), p.to_string()]);
        }
        write!(out, "{}", table.render())?;
    }
    Ok(())
}

/// One active producer of a partition, as DescribeProducers reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: i64,
    pub epoch: i32,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// -1 when the producer has no open transaction on the partition.
    pub txn_start_offset: i64,
}

pub fn producers(ctx: &Ctx, a: &TxnProducersArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut client = ctx.connect()?;
    let (topic, partition) = (a.topic.as_str(), a.partition);
    let req = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_indexes(vec![partition])]);
    let found = client
        .with_leader(topic, partition, |conn| {
            let r = conn.call(&req)?;
            let p = r
                .topics
                .into_iter()
                .filter(|t| *t.name.0 == *topic)
                .flat_map(|t| t.partitions)
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| ClientError::Protocol {
                    addr: conn.addr().to_string(),
                    detail: format!(
                        "DescribeProducers response has no result for {topic}-{partition}"
                    ),
                })?;
            check_code(p.error_code, p.error_message.as_ref(), || {
                format!("describing the producers of {topic}-{partition}")
            })?;
            Ok(p)
        })
        .with_context(|| format!("describing the producers of {topic}-{partition}"))?;
    let views: Vec<ProducerView> = found
        .active_producers
        .iter()
        .map(|p| ProducerView {
            producer_id: p.producer_id.0,
            epoch: p.producer_epoch,
            last_sequence: p.last_sequence,
            last_timestamp: p.last_timestamp,
            coordinator_epoch: p.coordinator_epoch,
            txn_start_offset: p.current_txn_start_offset,
        })
        .collect();
    render_producers(topic, partition, &views, ctx.json, out)
}

pub fn render_producers(
    topic: &str,
    partition: i32,
    producers: &[ProducerView],
    json_out: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let opt = |v: i64| (v >= 0).then_some(v);
    if json_out {
        return print_json(
            out,
            &json!({
                "topic": topic,
                "partition": partition,
                "producers": producers.iter().map(|p| json!({
                    "producer_id": p.producer_id,
                    "producer_epoch": p.epoch,
                    "last_sequence": p.last_sequence,
                    "last_timestamp": opt(p.last_timestamp),
                    "coordinator_epoch": p.coordinator_epoch,
                    "current_txn_start_offset": opt(p.txn_start_offset),
                })).collect::<Vec<_>>(),
            }),
        );
    }
    if producers.is_empty() {
        writeln!(out, "{topic}-{partition}: no active producers")?;
        return Ok(());
    }
    let mut table = Table::new(&[
        "PRODUCER ID",
        "EPOCH",
        "LAST SEQUENCE",
        "LAST TIMESTAMP",
        "COORDINATOR EPOCH",
        "TXN START OFFSET",
    ]);
    for p in producers {
        table.row(vec![
            p.producer_id.to_string(),
            p.epoch.to_string(),
            p.last_sequence.to_string(),
            format_timestamp(p.last_timestamp),
            p.coordinator_epoch.to_string(),
            opt(p.txn_start_offset).map_or("-".to_string(), |o| o.to_string()),
        ]);
    }
    write!(out, "{}", table.render())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::RequestKind;
    use shardlog_client::fake_broker::FakeBroker;
    use shardlog_client::txn::TRANSACTIONAL_BIT;

    fn ctx(fake: &FakeBroker, json: bool) -> Ctx {
        Ctx {
            entity_client_id: None,
            bootstrap: fake.addr.clone(),
            timeout: std::time::Duration::from_secs(5),
            client_id: "test".into(),
            json,
        }
    }

    fn text(out: Vec<u8>) -> String {
        String::from_utf8(out).unwrap()
    }

    /// A batch of `n` records from `producer` at `sequence`, transactional or not.
    fn producer_batch(producer_id: i64, epoch: i16, sequence: i32, n: usize, txn: bool) -> Vec<u8> {
        let values: Vec<Vec<u8>> = (0..n).map(|i| format!("v{i}").into_bytes()).collect();
        let records: Vec<shardlog_protocol::batch::SimpleRecord> =
            values.iter().map(|v| (None, Some(v.as_slice()))).collect();
        let mut b = shardlog_protocol::batch::build_simple_batch(0, 1_700_000_000_000, &records);
        let attributes =
            i16::from_be_bytes([b[21], b[22]]) | if txn { TRANSACTIONAL_BIT } else { 0 };
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        b[43..51].copy_from_slice(&producer_id.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&sequence.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// `app-1` with an open transaction on t-0 and t-1 (records on t-1 from offset 3), and
    /// `app-2` committed.
    fn fake_with_transactions() -> FakeBroker {
        let fake = FakeBroker::with_topics(&[("t", 2)], 3);
        let mut client = ctx(&fake, false).connect().unwrap();
        let one = client.init_transactional_producer("app-1", 60_000).unwrap();
        client
            .add_partitions_to_txn("app-1", one, "t", &[1, 0])
            .unwrap();
        let batch = producer_batch(one.producer_id, one.epoch, 0, 2, true);
        // Transactional produce goes through the fake's own Produce handler via the request's
        // transactional id, which `Client::produce` does not set: build it here.
        let req = kafka_protocol::messages::ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("app-1"))))
            .with_topic_data(vec![
                kafka_protocol::messages::produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partition_data(vec![
                        kafka_protocol::messages::produce_request::PartitionProduceData::default()
                            .with_index(1)
                            .with_records(Some(batch.into())),
                    ]),
            ]);
        let leader = client.leader_of("t", 1).unwrap();
        let r = client.connection_to(leader).unwrap().call(&req).unwrap();
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        assert_eq!(r.responses[0].partition_responses[0].base_offset, 3);
        let two = client.init_transactional_producer("app-2", 30_000).unwrap();
        client
            .add_partitions_to_txn("app-2", two, "t", &[0])
            .unwrap();
        client.end_txn("app-2", two, true).unwrap();
        fake
    }

    #[test]
    fn list_merges_brokers_and_sends_the_filters() {
        let fake = fake_with_transactions();
        let mut out = Vec::new();
        list(&ctx(&fake, false), &TxnListArgs::default(), &mut out).unwrap();
        assert_eq!(
            text(out),
            "TRANSACTIONAL ID  COORDINATOR  PRODUCER ID  STATE\n\
             app-1             0            1001         Ongoing\n\
             app-2             0            1002         CompleteCommit\n"
        );
        let args = TxnListArgs {
            state: vec!["Ongoing".into()],
            producer_id: vec![1001],
            duration_ms: Some(0),
        };
        let mut out = Vec::new();
        list(&ctx(&fake, true), &args, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
        assert_eq!(v[0]["transactional_id"], "app-1");
        assert_eq!(v[0]["producer_id"], 1001);
        let st = fake.state.lock().unwrap();
        let (version, RequestKind::ListTransactions(req)) = st.txn_requests.last().unwrap() else {
            panic!("last request is not ListTransactions")
        };
        assert_eq!(*version, 1);
        assert_eq!(
            req.state_filters,
            vec![StrBytes::from_static_str("Ongoing")]
        );
        assert_eq!(req.producer_id_filters, vec![ProducerId(1001)]);
        assert_eq!(req.duration_filter, 0);
    }

    #[test]
    fn list_refuses_a_duration_filter_on_v0() {
        let fake = FakeBroker::with_topics(&[("t", 1)], 0);
        fake.state.lock().unwrap().max_versions.insert(66, 0);
        let args = TxnListArgs {
            duration_ms: Some(10),
            ..TxnListArgs::default()
        };
        let err = list(&ctx(&fake, false), &args, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("no duration filter"), "{err}");
    }

    #[test]
    fn describe_asks_the_transaction_coordinator() {
        let fake = fake_with_transactions();
        let args = TxnDescribeArgs {
            transactional_id: "app-1".into(),
        };
        let mut out = Vec::new();
        describe(&ctx(&fake, true), &args, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["state"], "Ongoing");
        assert_eq!(v["coordinator"], 0);
        assert_eq!(v["producer_id"], 1001);
        assert_eq!(v["producer_epoch"], 0);
        assert_eq!(v["timeout_ms"], 60_000);
        assert!(v["start_time_ms"].as_i64().unwrap() > 0);
        assert_eq!(v["partitions"][0], json!({"topic": "t", "partition": 0}));
        assert_eq!(v["partitions"][1], json!({"topic": "t", "partition": 1}));
        {
            let st = fake.state.lock().unwrap();
            let (version, RequestKind::DescribeTransactions(req)) = st.txn_requests.last().unwrap()
            else {
                panic!("last request is not DescribeTransactions")
            };
            assert_eq!(*version, 0);
            assert_eq!(&*req.transactional_ids[0].0, "app-1");
        }
        let err = describe(
            &ctx(&fake, false),
            &TxnDescribeArgs {
                transactional_id: "nope".into(),
            },
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("TRANSACTIONAL_ID_NOT_FOUND"),
            "{err:#}"
        );
    }

    #[test]
    fn describe_text_shows_state_producer_timeout_start_and_partitions() {
        let view = TxnView {
            transactional_id: "app-1".into(),
            coordinator: 2,
            state: "Ongoing".into(),
            producer_id: 7,
            producer_epoch: 3,
            timeout_ms: 60_000,
            start_time_ms: 1_714_564_800_000,
            partitions: vec![("t".into(), 0), ("t".into(), 5)],
        };
        let mut out = Vec::new();
        render_describe(&view, 1_714_564_801_500, false, &mut out).unwrap();
        assert_eq!(
            text(out),
            "transactional id: app-1  state: Ongoing  coordinator: 2\n\
             producer id: 7  epoch: 3  timeout: 60000 ms\n\
             started: 2024-05-01T12:00:00.000Z (1500 ms ago)\n\
             TOPIC  PARTITION\n\
             t      0\n\
             t      5\n"
        );
        let idle = TxnView {
            state: "Empty".into(),
            start_time_ms: -1,
            partitions: vec![],
            ..view
        };
        let mut out = Vec::new();
        render_describe(&idle, 0, false, &mut out).unwrap();
        let t = text(out);
        assert!(
            t.contains("started: - (no open transaction)\npartitions: none\n"),
            "{t}"
        );
        let mut out = Vec::new();
        render_describe(&idle, 0, true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["start_time_ms"], Value::Null);
        assert_eq!(v["duration_ms"], Value::Null);
    }

    #[test]
    fn producers_asks_the_leader_and_shows_the_open_transaction() {
        let fake = fake_with_transactions();
        let args = TxnProducersArgs {
            topic: "t".into(),
            partition: 1,
        };
        let mut out = Vec::new();
        producers(&ctx(&fake, false), &args, &mut out).unwrap();
        assert_eq!(
            text(out),
            "PRODUCER ID  EPOCH  LAST SEQUENCE  LAST TIMESTAMP            COORDINATOR EPOCH  TXN START OFFSET\n\
             1001         0      1              2023-11-14T22:13:20.000Z  0                  3\n"
        );
        {
            let st = fake.state.lock().unwrap();
            let (version, RequestKind::DescribeProducers(req)) = st.txn_requests.last().unwrap()
            else {
                panic!("last request is not DescribeProducers")
            };
            assert_eq!(*version, 0);
            assert_eq!(&*req.topics[0].name.0, "t");
            assert_eq!(req.topics[0].partition_indexes, vec![1]);
        }
        let mut out = Vec::new();
        let args = TxnProducersArgs {
            topic: "t".into(),
            partition: 0,
        };
        producers(&ctx(&fake, true), &args, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["producers"], json!([]));
        let mut out = Vec::new();
        producers(&ctx(&fake, false), &args, &mut out).unwrap();
        assert_eq!(text(out), "t-0: no active producers\n");
        let views = [ProducerView {
            producer_id: 9,
            epoch: 1,
            last_sequence: 41,
            last_timestamp: -1,
            coordinator_epoch: 4,
            txn_start_offset: -1,
        }];
        let mut out = Vec::new();
        render_producers("t", 0, &views, true, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["producers"][0]["current_txn_start_offset"], Value::Null);
        assert_eq!(v["producers"][0]["last_sequence"], 41);
        assert_eq!(v["producers"][0]["coordinator_epoch"], 4);
    }
}
