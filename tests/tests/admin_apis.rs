//! Admin APIs over raw requests: CreatePartitions, DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, DeleteRecords, DescribeCluster and DescribeLogDirs, with their error
//! cases, persistence across a restart, and config changes taking effect without one (among
//! them a compacted topic refusing records without a key).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request as inc;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use shardlog_protocol::batch::{build_simple_batch, Compression};
use shardlog_protocol::frame;
use shardlog_protocol::records::BatchBuilder;
use shardlog_tests::Broker;

const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const INVALID_RECORD: i16 = 87;
const MISMATCHED_ENDPOINT_TYPE: i16 = 114;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// IncrementalAlterConfigs operations: (key, operation, value).
type Ops<'a> = &'a [(&'a str, i8, Option<&'a str>)];

struct Raw {
    s: TcpStream,
    next_id: i32,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn tn(v: &str) -> TopicName {
    TopicName(s(v))
}

impl Raw {
    fn connect(b: &Broker) -> Raw {
        let s = TcpStream::connect(b.bootstrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Raw { s, next_id: 1 }
    }

    fn call(&mut self, key: ApiKey, version: i16, body: RequestKind) -> ResponseKind {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.next_id)
            .with_client_id(Some(StrBytes::from_static_str("admin-apis-test")));
        self.next_id += 1;
        let mut out = BytesMut::new();
        frame::encode_request(&header, &body, &mut out).unwrap();
        self.s.write_all(&out).unwrap();
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).expect("a response");
        let mut f = vec![0u8; i32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut f).expect("a response body");
        frame::decode_response(key, version, Bytes::from(f))
            .expect("a response that decodes")
            .1
    }

    fn create(&mut self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let t = CreatableTopic::default()
            .with_name(tn(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(s(k))
                            .with_value(Some(s(v)))
                    })
                    .collect(),
            );
        let req = CreateTopicsRequest::default().with_topics(vec![t]);
        match self.call(ApiKey::CreateTopics, 5, RequestKind::CreateTopics(req)) {
            ResponseKind::CreateTopics(r) => assert_eq!(r.topics[0].error_code, NONE, "{r:?}"),
            other => panic!("{other:?}"),
        }
    }

    fn produce(&mut self, topic: &str, partition: i32, records: Vec<u8>) -> i16 {
        self.produce_answer(9, topic, partition, records).error_code
    }

    /// Produce (acks=all) of `records` to one partition: its whole answer.
    fn produce_answer(
        &mut self,
        version: i16,
        topic: &str,
        partition: i32,
        records: Vec<u8>,
    ) -> produce_response::PartitionProduceResponse {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(tn(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records.into()))])]);
        match self.call(ApiKey::Produce, version, RequestKind::Produce(req)) {
            ResponseKind::Produce(mut r) => r.responses[0].partition_responses.remove(0),
            other => panic!("{other:?}"),
        }
    }

    /// ListOffsets: (earliest, latest) of one partition.
    fn offsets(&mut self, topic: &str, partition: i32) -> (i64, i64) {
        let mut at = |ts: i64| {
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(tn(topic))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(ts)])]);
            match self.call(ApiKey::ListOffsets, 5, RequestKind::ListOffsets(req)) {
                ResponseKind::ListOffsets(r) => {
                    let p = &r.topics[0].partitions[0];
                    assert_eq!(p.error_code, NONE, "{r:?}");
                    p.offset
                }
                other => panic!("{other:?}"),
            }
        };
        (at(-2), at(-1))
    }

    fn partition_count(&mut self, topic: &str) -> usize {
        let req = MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(tn(topic))),
        ]));
        match self.call(ApiKey::Metadata, 9, RequestKind::Metadata(req)) {
            ResponseKind::Metadata(r) => {
                assert_eq!(r.topics[0].error_code, NONE, "{r:?}");
                r.topics[0].partitions.len()
            }
            other => panic!("{other:?}"),
        }
    }

    fn create_partitions(
        &mut self,
        version: i16,
        topics: Vec<CreatePartitionsTopic>,
        validate_only: bool,
    ) -> Vec<(i16, Option<String>)> {
        let req = CreatePartitionsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(10_000)
            .with_validate_only(validate_only);
        match self.call(
            ApiKey::CreatePartitions,
            version,
            RequestKind::CreatePartitions(req),
        ) {
            ResponseKind::CreatePartitions(r) => r
                .results
                .iter()
                .map(|x| {
                    (
                        x.error_code,
                        x.error_message.as_ref().map(|m| m.to_string()),
                    )
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    fn describe(
        &mut self,
        version: i16,
        resources: Vec<DescribeConfigsResource>,
        synonyms: bool,
        documentation: bool,
    ) -> Vec<DescribeConfigsResult> {
        let req = DescribeConfigsRequest::default()
            .with_resources(resources)
            .with_include_synonyms(synonyms)
            .with_include_documentation(documentation && version >= 3);
        match self.call(
            ApiKey::DescribeConfigs,
            version,
            RequestKind::DescribeConfigs(req),
        ) {
            ResponseKind::DescribeConfigs(r) => r.results,
            other => panic!("{other:?}"),
        }
    }

    /// The topic's overrides (entries whose source is the topic).
    fn overrides(&mut self, topic: &str) -> Vec<(String, String)> {
        let r = self.describe(4, vec![resource(TOPIC, topic, None)], false, false);
        assert_eq!(r[0].error_code, NONE, "{r:?}");
        r[0].configs
            .iter()
            .filter(|c| c.config_source == 1)
            .map(|c| {
                (
                    c.name.to_string(),
                    c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    }

    fn incremental(
        &mut self,
        version: i16,
        resource_type: i8,
        name: &str,
        ops: Ops,
        validate_only: bool,
    ) -> (i16, String) {
        let req = IncrementalAlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![inc::AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configs(
                    ops.iter()
                        .map(|(k, op, v)| {
                            inc::AlterableConfig::default()
                                .with_name(s(k))
                                .with_config_operation(*op)
                                .with_value(v.map(s))
                        })
                        .collect(),
                )]);
        match self.call(
            ApiKey::IncrementalAlterConfigs,
            version,
            RequestKind::IncrementalAlterConfigs(req),
        ) {
            ResponseKind::IncrementalAlterConfigs(r) => {
                assert_eq!(r.responses.len(), 1);
                let x = &r.responses[0];
                assert_eq!(x.resource_name.as_str(), name);
                (
                    x.error_code,
                    x.error_message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                )
            }
            other => panic!("{other:?}"),
        }
    }

    fn alter(
        &mut self,
        version: i16,
        resource_type: i8,
        name: &str,
        configs: &[(&str, Option<&str>)],
        validate_only: bool,
    ) -> (i16, String) {
        let req = AlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            alter_configs_request::AlterableConfig::default()
                                .with_name(s(k))
                                .with_value(v.map(s))
                        })
                        .collect(),
                )]);
        match self.call(
            ApiKey::AlterConfigs,
            version,
            RequestKind::AlterConfigs(req),
        ) {
            ResponseKind::AlterConfigs(r) => {
                let x = &r.responses[0];
                (
                    x.error_code,
                    x.error_message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                )
            }
            other => panic!("{other:?}"),
        }
    }

    /// DeleteRecords of one topic: per partition (error code, low watermark).
    fn delete_records(
        &mut self,
        version: i16,
        topic: &str,
        parts: &[(i32, i64)],
    ) -> Vec<(i16, i64)> {
        let req = DeleteRecordsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(tn(topic))
                .with_partitions(
                    parts
                        .iter()
                        .map(|(p, o)| {
                            DeleteRecordsPartition::default()
                                .with_partition_index(*p)
                                .with_offset(*o)
                        })
                        .collect(),
                )]);
        match self.call(
            ApiKey::DeleteRecords,
            version,
            RequestKind::DeleteRecords(req),
        ) {
            ResponseKind::DeleteRecords(r) => {
                let t = &r.topics[0];
                assert_eq!(t.name.0.as_str(), topic);
                t.partitions
                    .iter()
                    .zip(parts)
                    .map(|(x, (p, _))| {
                        assert_eq!(x.partition_index, *p);
                        (x.error_code, x.low_watermark)
                    })
                    .collect()
            }
            other => panic!("{other:?}"),
        }
    }
}

fn resource(resource_type: i8, name: &str, keys: Option<&[&str]>) -> DescribeConfigsResource {
    DescribeConfigsResource::default()
        .with_resource_type(resource_type)
        .with_resource_name(s(name))
        .with_configuration_keys(keys.map(|ks| ks.iter().map(|k| s(k)).collect()))
}

fn entry<'a>(r: &'a DescribeConfigsResult, name: &str) -> &'a DescribeConfigsResourceResult {
    r.configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} not described: {r:?}"))
}

fn value(e: &DescribeConfigsResourceResult) -> String {
    e.value.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A batch of `n` records of `size` bytes each, timestamped now.
fn batch(n: usize, size: usize) -> Vec<u8> {
    let v = vec![b'x'; size];
    let records: Vec<_> = (0..n).map(|_| (None, Some(&v[..]))).collect();
    build_simple_batch(0, now_ms(), &records)
}

/// A batch of records with these keys (`None`: no key), compressed with `codec`.
fn keyed_batch(codec: Compression, keys: &[Option<&str>]) -> Vec<u8> {
    let now = now_ms();
    let mut b = BatchBuilder::new(codec, now);
    for k in keys {
        b.push(now, k.map(str::as_bytes), Some(b"value"), &[])
            .unwrap();
    }
    b.build().unwrap()
}

/// The size DescribeLogDirs reports for partition 0 of `topic`.
fn size_of(r: &DescribeLogDirsResponse, topic: &str) -> i64 {
    r.results[0]
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == topic)
        .unwrap_or_else(|| panic!("{topic} not described: {r:?}"))
        .partitions[0]
        .partition_size
}

fn grow(name: &str, count: i32) -> CreatePartitionsTopic {
    CreatePartitionsTopic::default()
        .with_name(tn(name))
        .with_count(count)
        .with_assignments(None)
}

#[test]
fn api_versions_advertise_the_admin_apis() {
    let b = Broker::start();
    let mut raw = Raw::connect(&b);
    let r = match raw.call(
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(s("t"))
                .with_client_software_version(s("1")),
        ),
    ) {
        ResponseKind::ApiVersions(r) => r,
        other => panic!("{other:?}"),
    };
    for (key, lo, hi) in [
        (ApiKey::CreatePartitions, 0, 3),
        (ApiKey::DeleteRecords, 0, 2),
        (ApiKey::DescribeCluster, 0, 1),
        (ApiKey::DescribeLogDirs, 1, 4),
        (ApiKey::DescribeConfigs, 1, 4),
        (ApiKey::AlterConfigs, 0, 2),
        (ApiKey::IncrementalAlterConfigs, 0, 1),
    ] {
        let v = r
            .api_keys
            .iter()
            .find(|v| v.api_key == key as i16)
            .unwrap_or_else(|| panic!("{key:?} not advertised"));
        assert_eq!((v.min_version, v.max_version), (lo, hi), "{key:?}");
    }
}

#[test]
fn create_partitions_grows_a_topic_and_refuses_bad_requests() {
    let mut b = Broker::start();
    let mut raw = Raw::connect(&b);
    raw.create("grow", 2, &[]);

    assert_eq!(
        raw.create_partitions(3, vec![grow("grow", 4)], false)[0].0,
        NONE
    );
    assert_eq!(raw.partition_count("grow"), 4);
    // The new partitions are open at once.
    assert_eq!(raw.produce("grow", 3, batch(1, 10)), NONE);
    assert_eq!(raw.offsets("grow", 3), (0, 1));

    // validate_only checks but changes nothing.
    assert_eq!(
        raw.create_partitions(1, vec![grow("grow", 6)], true)[0].0,
        NONE
    );
    assert_eq!(raw.partition_count("grow"), 4);

    for (count, what) in [(3, "fewer"), (4, "the same"), (10_001, "too many")] {
        let r = raw.create_partitions(0, vec![grow("grow", count)], false);
        assert_eq!(r[0].0, INVALID_PARTITIONS, "{what}: {r:?}");
        assert!(r[0].1.is_some(), "{what}: a message");
    }
    let r = raw.create_partitions(2, vec![grow("nope", 3)], false);
    assert_eq!(r[0].0, UNKNOWN_TOPIC_OR_PARTITION);
    // Explicit assignments: only this broker (id 0), one list per new partition.
    let assigned = |ids: &[&[i32]]| {
        grow("grow", 4 + ids.len() as i32).with_assignments(Some(
            ids.iter()
                .map(|l| {
                    CreatePartitionsAssignment::default()
                        .with_broker_ids(l.iter().map(|i| BrokerId(*i)).collect())
                })
                .collect(),
        ))
    };
    let r = raw.create_partitions(3, vec![assigned(&[&[0], &[7]])], false);
    assert_eq!(r[0].0, INVALID_REPLICA_ASSIGNMENT, "{r:?}");
    let r = raw.create_partitions(
        3,
        vec![assigned(&[&[0]]).with_count(7)], // 3 new partitions, 1 assignment
        false,
    );
    assert_eq!(r[0].0, INVALID_REPLICA_ASSIGNMENT, "{r:?}");
    // A topic named twice: both refused.
    let r = raw.create_partitions(3, vec![grow("grow", 8), grow("grow", 9)], false);
    assert_eq!(
        r.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![INVALID_REQUEST; 2]
    );
    assert_eq!(raw.partition_count("grow"), 4);
    // A valid assignment and a failing topic in one request: each answered on its own.
    raw.create("other", 1, &[]);
    let r = raw.create_partitions(3, vec![assigned(&[&[0]]), grow("other", 0)], false);
    assert_eq!((r[0].0, r[1].0), (NONE, INVALID_PARTITIONS), "{r:?}");
    assert_eq!(raw.partition_count("grow"), 5);

    b.stop();
    b.restart();
    let mut raw = Raw::connect(&b);
    assert_eq!(raw.partition_count("grow"), 5);
    assert_eq!(raw.offsets("grow", 3), (0, 1));
    assert_eq!(raw.produce("grow", 4, batch(1, 10)), NONE);
}

#[test]
fn describe_configs_of_topics_and_the_broker() {
    let b = Broker::start_with(&["--set", "log.retention.hours=2"]);
    let mut raw = Raw::connect(&b);
    raw.create("conf", 1, &[("segment.bytes", "1048576")]);

    let r = raw.describe(4, vec![resource(TOPIC, "conf", None)], true, true);
    assert_eq!(r.len(), 1);
    let t = &r[0];
    assert_eq!(
        (t.error_code, t.resource_type, t.resource_name.as_str()),
        (NONE, TOPIC, "conf")
    );
    // An override: source DYNAMIC_TOPIC_CONFIG, then the broker default as a synonym.
    let seg = entry(t, "segment.bytes");
    assert_eq!(value(seg), "1048576");
    assert_eq!(seg.config_source, 1);
    assert!(!seg.read_only && !seg.is_sensitive);
    assert_eq!(seg.config_type, 3, "INT");
    assert!(seg.documentation.is_some());
    let syn: Vec<(&str, i8)> = seg
        .synonyms
        .iter()
        .map(|x| (x.name.as_str(), x.source))
        .collect();
    assert_eq!(syn, vec![("segment.bytes", 1), ("log.segment.bytes", 5)]);
    // A default the broker was given explicitly: STATIC_BROKER_CONFIG.
    let ret = entry(t, "retention.ms");
    assert_eq!((value(ret).as_str(), ret.config_source), ("7200000", 4));
    assert_eq!(ret.synonyms[0].name.as_str(), "log.retention.hours");
    assert_eq!(ret.synonyms[0].value.as_deref(), Some("2"));
    // A plain default.
    let flush = entry(t, "flush.ms");
    assert_eq!(flush.config_source, 5);
    assert_eq!(entry(t, "cleanup.policy").config_type, 7, "LIST");
    for key in [
        "max.message.bytes",
        "min.insync.replicas",
        "message.timestamp.type",
    ] {
        entry(t, key);
    }

    // v1: no synonyms unless asked for, no type or documentation.
    let r = raw.describe(1, vec![resource(TOPIC, "conf", None)], false, false);
    let seg = entry(&r[0], "segment.bytes");
    assert!(seg.synonyms.is_empty());
    // (The decoder fills the absent documentation with an empty string.)
    assert_eq!(seg.config_type, 0);
    assert_eq!(seg.documentation.as_deref().unwrap_or(""), "");

    // A subset of keys; keys the broker does not know are left out.
    let r = raw.describe(
        2,
        vec![resource(
            TOPIC,
            "conf",
            Some(&["retention.ms", "no.such.key"]),
        )],
        false,
        false,
    );
    let names: Vec<&str> = r[0].configs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["retention.ms"]);

    // Several resources, each answered on its own.
    let r = raw.describe(
        4,
        vec![
            resource(TOPIC, "missing", None),
            resource(TOPIC, "bad name!", None),
            resource(BROKER, "0", None),
            resource(BROKER, "", None),
            resource(BROKER, "5", None),
            resource(99, "x", None),
        ],
        true,
        false,
    );
    let codes: Vec<i16> = r.iter().map(|x| x.error_code).collect();
    assert_eq!(
        codes,
        vec![
            UNKNOWN_TOPIC_OR_PARTITION,
            INVALID_TOPIC_EXCEPTION,
            NONE,
            NONE,
            INVALID_REQUEST,
            INVALID_REQUEST
        ]
    );
    assert!(r[0].configs.is_empty() && r[0].error_message.is_some());
    let broker = &r[2];
    let listeners = entry(broker, "listeners");
    assert_eq!(value(listeners), format!("PLAINTEXT://{}", b.bootstrap()));
    assert_eq!(listeners.config_source, 4, "given with --listen");
    assert!(listeners.read_only);
    let hours = entry(broker, "log.retention.ms");
    assert_eq!((value(hours).as_str(), hours.config_source), ("7200000", 4));
    assert_eq!(entry(broker, "num.partitions").config_source, 5);
    assert_eq!(
        value(entry(broker, "log.dirs")),
        b.data_dir.display().to_string()
    );
    // The cluster-wide dynamic defaults: none.
    assert!(r[3].configs.is_empty());
}

#[test]
fn alter_configs_replace_and_incremental_edits_persist() {
    let mut b = Broker::start();
    let mut raw = Raw::connect(&b);
    raw.create("alt", 1, &[("retention.ms", "1000")]);
    let ok = (NONE, String::new());

    // AlterConfigs replaces the whole override set; max.message.bytes applies at once.
    assert_eq!(
        raw.alter(
            2,
            TOPIC,
            "alt",
            &[("max.message.bytes", Some("2000"))],
            false
        ),
        ok
    );
    assert_eq!(
        raw.overrides("alt"),
        vec![("max.message.bytes".to_string(), "2000".to_string())]
    );
    assert_eq!(raw.produce("alt", 0, batch(1, 3000)), MESSAGE_TOO_LARGE);
    assert_eq!(raw.produce("alt", 0, batch(1, 100)), NONE);
    let (code, msg) = raw.alter(0, TOPIC, "alt", &[("retention.ms", Some("-7"))], false);
    assert_eq!(code, INVALID_CONFIG);
    assert!(msg.contains("retention.ms"), "{msg}");
    let (code, _) = raw.alter(1, TOPIC, "alt", &[("retention.ms", None)], false);
    assert_eq!(code, INVALID_CONFIG, "null value");
    assert_eq!(
        raw.alter(1, TOPIC, "gone", &[], false).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    let (code, msg) = raw.alter(2, BROKER, "0", &[("num.partitions", Some("3"))], false);
    assert_eq!(code, INVALID_REQUEST);
    assert!(
        msg.contains("dynamic broker configs are not supported"),
        "{msg}"
    );
    // Validate only: nothing changes.
    assert_eq!(
        raw.alter(2, TOPIC, "alt", &[("segment.ms", Some("5000"))], true),
        ok
    );
    assert_eq!(raw.overrides("alt").len(), 1);

    // IncrementalAlterConfigs: set, delete, append to a list.
    assert_eq!(
        raw.incremental(
            1,
            TOPIC,
            "alt",
            &[
                ("retention.ms", SET, Some("60000")),
                ("max.message.bytes", DELETE, None),
                ("cleanup.policy", APPEND, Some("compact")),
            ],
            false
        ),
        ok
    );
    let mut o = raw.overrides("alt");
    o.sort();
    assert_eq!(
        o,
        vec![
            ("cleanup.policy".to_string(), "delete,compact".to_string()),
            ("retention.ms".to_string(), "60000".to_string()),
        ]
    );
    // The size limit is back to the default at once (with a key: "alt" is compacted now).
    let big = "k".repeat(3000);
    assert_eq!(
        raw.produce(
            "alt",
            0,
            keyed_batch(Compression::None, &[Some(big.as_str())])
        ),
        NONE
    );
    assert_eq!(
        raw.incremental(
            0,
            TOPIC,
            "alt",
            &[("cleanup.policy", SUBTRACT, Some("compact"))],
            false
        ),
        ok
    );
    let failures: [(Ops, i16, &str); 7] = [
        (
            &[("retention.ms", APPEND, Some("5"))],
            INVALID_CONFIG,
            "append",
        ),
        (
            &[("no.such.key", SET, Some("1"))],
            INVALID_CONFIG,
            "no.such.key",
        ),
        (
            &[("segment.bytes", SET, Some("1"))],
            INVALID_CONFIG,
            "segment.bytes",
        ),
        (
            &[("segment.bytes", SET, None)],
            INVALID_REQUEST,
            "Null value",
        ),
        (
            &[("flush.ms", SET, Some("1")), ("flush.ms", DELETE, None)],
            INVALID_REQUEST,
            "duplicate",
        ),
        (&[("flush.ms", 9, Some("1"))], INVALID_REQUEST, "operation"),
        (
            &[("cleanup.policy", SUBTRACT, Some("delete"))],
            INVALID_CONFIG,
            "cleanup.policy",
        ),
    ];
    for (ops, want, words) in failures {
        let (code, msg) = raw.incremental(1, TOPIC, "alt", ops, false);
        assert_eq!(code, want, "{ops:?}: {msg}");
        assert!(msg.contains(words), "{ops:?}: {msg}");
    }
    let (code, msg) = raw.incremental(1, BROKER, "0", &[("num.partitions", SET, Some("2"))], false);
    assert_eq!(code, INVALID_REQUEST);
    assert!(
        msg.contains("dynamic broker configs are not supported"),
        "{msg}"
    );
    assert_eq!(
        raw.incremental(1, TOPIC, "gone", &[("flush.ms", SET, Some("1"))], false)
            .0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        raw.incremental(1, TOPIC, "alt", &[("segment.ms", SET, Some("5000"))], true),
        ok
    );
    let mut before = raw.overrides("alt");
    before.sort();
    assert_eq!(
        before,
        vec![
            ("cleanup.policy".to_string(), "delete".to_string()),
            ("retention.ms".to_string(), "60000".to_string()),
        ]
    );

    b.stop();
    b.restart();
    let mut raw = Raw::connect(&b);
    let mut after = raw.overrides("alt");
    after.sort();
    assert_eq!(after, before);
}

#[test]
fn a_compacted_topic_refuses_records_without_a_key() {
    let b = Broker::start();
    let mut raw = Raw::connect(&b);
    raw.create("keys", 2, &[("cleanup.policy", "compact")]);

    // The cleaner's settings are described, with their defaults and Kafka's types.
    let r = raw.describe(4, vec![resource(TOPIC, "keys", None)], true, false);
    let t = &r[0];
    assert_eq!(value(entry(t, "cleanup.policy")), "compact");
    for (key, want, config_type) in [
        ("delete.retention.ms", "86400000", 5),
        ("min.cleanable.dirty.ratio", "0.5", 6),
        ("min.compaction.lag.ms", "0", 5),
        ("max.compaction.lag.ms", "9223372036854775807", 5),
    ] {
        let e = entry(t, key);
        assert_eq!(
            (value(e).as_str(), e.config_type),
            (want, config_type),
            "{key}"
        );
        assert_eq!(e.config_source, 5, "{key}");
    }

    // A record without a key: INVALID_RECORD naming it, and nothing appended.
    let why = "Compacted topic cannot accept message without key in topic partition keys-1.";
    let p = raw.produce_answer(
        9,
        "keys",
        1,
        keyed_batch(Compression::None, &[Some("a"), None]),
    );
    assert_eq!(p.error_code, INVALID_RECORD, "{p:?}");
    let errors: Vec<(i32, Option<String>)> = p
        .record_errors
        .iter()
        .map(|e| {
            (
                e.batch_index,
                e.batch_index_error_message.as_ref().map(|m| m.to_string()),
            )
        })
        .collect();
    assert_eq!(errors, [(1, Some(why.to_string()))]);
    assert_eq!(
        p.error_message.as_deref(),
        Some(
            format!(
                "One or more records have been rejected due to 1 record errors in total, and \
                 only showing the first three errors at most: [RecordError(batchIndex=1, \
                 message='{why}')]"
            )
            .as_str()
        )
    );
    assert_eq!(raw.offsets("keys", 1), (0, 0));
    // Compressed batches are looked into; Produce v7 has no record errors to carry.
    let p = raw.produce_answer(7, "keys", 1, keyed_batch(Compression::Lz4, &[None]));
    assert_eq!(p.error_code, INVALID_RECORD, "{p:?}");
    assert!(p.record_errors.is_empty(), "{p:?}");
    assert_eq!(raw.offsets("keys", 1), (0, 0));

    // With keys, in any codec: appended.
    for codec in [Compression::None, Compression::Zstd] {
        let p = raw.produce_answer(9, "keys", 1, keyed_batch(codec, &[Some("a"), Some("b")]));
        assert_eq!(p.error_code, NONE, "{p:?}");
    }
    assert_eq!(raw.offsets("keys", 1), (0, 4));

    // compact,delete still checks keys; delete alone does not, at once.
    assert_eq!(
        raw.incremental(
            1,
            TOPIC,
            "keys",
            &[("cleanup.policy", APPEND, Some("delete"))],
            false
        ),
        (NONE, String::new())
    );
    assert_eq!(raw.produce("keys", 0, batch(1, 10)), INVALID_RECORD);
    assert_eq!(
        raw.incremental(
            1,
            TOPIC,
            "keys",
            &[("cleanup.policy", SUBTRACT, Some("compact"))],
            false
        ),
        (NONE, String::new())
    );
    assert_eq!(raw.produce("keys", 0, batch(1, 10)), NONE);
    assert_eq!(raw.offsets("keys", 0), (0, 1));

    // The cleaner's topic settings are validated, and the lags checked against each other.
    for (ops, words) in [
        (
            &[("min.cleanable.dirty.ratio", SET, Some("1.5"))][..],
            "min.cleanable.dirty.ratio",
        ),
        (
            &[
                ("min.compaction.lag.ms", SET, Some("10")),
                ("max.compaction.lag.ms", SET, Some("5")),
            ][..],
            "max.compaction.lag.ms (5)",
        ),
    ] {
        let (code, msg) = raw.incremental(1, TOPIC, "keys", ops, false);
        assert_eq!(code, INVALID_CONFIG, "{ops:?}: {msg}");
        assert!(msg.contains(words), "{ops:?}: {msg}");
    }
    assert_eq!(
        raw.incremental(
            1,
            TOPIC,
            "keys",
            &[
                ("min.cleanable.dirty.ratio", SET, Some("0.1")),
                ("delete.retention.ms", SET, Some("1000")),
            ],
            false
        ),
        (NONE, String::new())
    );
    let r = raw.describe(4, vec![resource(TOPIC, "keys", None)], false, false);
    assert_eq!(value(entry(&r[0], "min.cleanable.dirty.ratio")), "0.1");
    assert_eq!(value(entry(&r[0], "cleanup.policy")), "delete");
}

#[test]
fn a_retention_change_deletes_old_segments_without_a_restart() {
    let b = Broker::start_with(&[
        "--set",
        "log.retention.check.interval.ms=200",
        "--set",
        "log.segment.bytes=1024",
    ]);
    let mut raw = Raw::connect(&b);
    raw.create("ret", 1, &[]);
    for _ in 0..10 {
        assert_eq!(raw.produce("ret", 0, batch(1, 400)), NONE);
    }
    // Several segments, all young enough for the default retention.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(raw.offsets("ret", 0), (0, 10));
    let before: i64 = match raw.call(
        ApiKey::DescribeLogDirs,
        4,
        RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None)),
    ) {
        ResponseKind::DescribeLogDirs(r) => size_of(&r, "ret"),
        other => panic!("{other:?}"),
    };

    assert_eq!(
        raw.incremental(1, TOPIC, "ret", &[("retention.ms", SET, Some("1"))], false),
        (NONE, String::new())
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (earliest, latest) = raw.offsets("ret", 0);
        assert_eq!(latest, 10);
        if earliest > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention.ms=1 deleted nothing; log:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let after: i64 = match raw.call(
        ApiKey::DescribeLogDirs,
        4,
        RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None)),
    ) {
        ResponseKind::DescribeLogDirs(r) => size_of(&r, "ret"),
        other => panic!("{other:?}"),
    };
    assert!(after < before, "{after} < {before}");
}

#[test]
fn delete_records_moves_the_log_start() {
    let mut b = Broker::start();
    let mut raw = Raw::connect(&b);
    raw.create("dr", 2, &[]);
    for _ in 0..5 {
        assert_eq!(raw.produce("dr", 0, batch(1, 20)), NONE);
    }
    assert_eq!(
        raw.delete_records(2, "dr", &[(0, 3), (1, -1)]),
        vec![(NONE, 3), (NONE, 0)]
    );
    assert_eq!(raw.offsets("dr", 0), (3, 5));
    // Past the high watermark, below -1, unknown partition; moving back is a no-op.
    assert_eq!(
        raw.delete_records(0, "dr", &[(0, 6), (0, -5), (7, 0), (0, 1)]),
        vec![
            (OFFSET_OUT_OF_RANGE, -1),
            (OFFSET_OUT_OF_RANGE, -1),
            (UNKNOWN_TOPIC_OR_PARTITION, -1),
            (NONE, 3)
        ]
    );
    assert_eq!(
        raw.delete_records(1, "nope", &[(0, 0)]),
        vec![(UNKNOWN_TOPIC_OR_PARTITION, -1)]
    );
    // -1: up to the high watermark.
    assert_eq!(raw.delete_records(2, "dr", &[(0, -1)]), vec![(NONE, 5)]);
    assert_eq!(raw.offsets("dr", 0), (5, 5));
    assert_eq!(raw.produce("dr", 0, batch(1, 20)), NONE);
    assert_eq!(raw.offsets("dr", 0), (5, 6));

    b.stop();
    b.restart();
    let mut raw = Raw::connect(&b);
    assert_eq!(raw.offsets("dr", 0), (5, 6));
}

#[test]
fn describe_cluster_and_log_dirs() {
    let b = Broker::start();
    let mut raw = Raw::connect(&b);
    raw.create("ld", 2, &[]);
    assert_eq!(raw.produce("ld", 1, batch(3, 100)), NONE);

    let cluster_id = match raw.call(
        ApiKey::Metadata,
        9,
        RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
    ) {
        ResponseKind::Metadata(r) => r.cluster_id.expect("a cluster id").to_string(),
        other => panic!("{other:?}"),
    };
    for version in [0, 1] {
        for ops in [false, true] {
            let req =
                DescribeClusterRequest::default().with_include_cluster_authorized_operations(ops);
            let r = match raw.call(
                ApiKey::DescribeCluster,
                version,
                RequestKind::DescribeCluster(req),
            ) {
                ResponseKind::DescribeCluster(r) => r,
                other => panic!("{other:?}"),
            };
            assert_eq!(r.error_code, NONE);
            assert_eq!(r.cluster_id.as_str(), cluster_id);
            assert_eq!(r.controller_id, BrokerId(0));
            assert_eq!(r.brokers.len(), 1);
            let me = &r.brokers[0];
            assert_eq!(
                (me.broker_id, me.host.as_str(), me.port),
                (BrokerId(0), "127.0.0.1", b.port as i32)
            );
            if ops {
                assert!(r.cluster_authorized_operations > 0);
            } else {
                assert_eq!(r.cluster_authorized_operations, i32::MIN);
            }
        }
    }
    let req = DescribeClusterRequest::default().with_endpoint_type(2);
    match raw.call(
        ApiKey::DescribeCluster,
        1,
        RequestKind::DescribeCluster(req),
    ) {
        ResponseKind::DescribeCluster(r) => assert_eq!(r.error_code, MISMATCHED_ENDPOINT_TYPE),
        other => panic!("{other:?}"),
    }

    let mut log_dirs = |version: i16, topics: Option<Vec<DescribableLogDirTopic>>| match raw.call(
        ApiKey::DescribeLogDirs,
        version,
        RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(topics)),
    ) {
        ResponseKind::DescribeLogDirs(r) => {
            assert_eq!(r.error_code, NONE);
            assert_eq!(r.results.len(), 1, "one log dir");
            r.results.into_iter().next().expect("one result")
        }
        other => panic!("{other:?}"),
    };
    let all = log_dirs(4, None);
    assert_eq!(all.error_code, NONE);
    assert_eq!(all.log_dir.as_str(), b.data_dir.display().to_string());
    assert!(all.total_bytes > 0 && all.usable_bytes >= 0 && all.usable_bytes <= all.total_bytes);
    let ld = all
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == "ld")
        .expect("ld described");
    let sizes: Vec<(i32, bool)> = ld
        .partitions
        .iter()
        .map(|p| {
            assert_eq!((p.offset_lag, p.is_future_key), (0, false));
            (p.partition_index, p.partition_size > 0)
        })
        .collect();
    assert_eq!(sizes, vec![(0, false), (1, true)]);
    // v1: no space figures; a filter keeps only existing requested partitions.
    let some = log_dirs(
        1,
        Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(tn("ld"))
                .with_partitions(vec![1, 7]),
            DescribableLogDirTopic::default()
                .with_topic(tn("missing"))
                .with_partitions(vec![0]),
        ]),
    );
    assert_eq!((some.total_bytes, some.usable_bytes), (-1, -1));
    assert_eq!(some.topics.len(), 1);
    assert_eq!(some.topics[0].partitions.len(), 1);
    assert_eq!(some.topics[0].partitions[0].partition_index, 1);
    assert!(log_dirs(3, Some(vec![])).topics.is_empty());
}
