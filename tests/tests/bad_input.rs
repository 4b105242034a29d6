//! Hostile and malformed input over raw TCP: the right Kafka error code or a closed connection,
//! never a crash, and the broker keeps serving everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use shardlog_protocol::batch::build_simple_batch;
use shardlog_protocol::frame;
use shardlog_tests::Broker;

struct Raw {
    s: TcpStream,
    next_id: i32,
}

impl Raw {
    fn connect(b: &Broker) -> Raw {
        let s = TcpStream::connect(b.bootstrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw { s, next_id: 1 }
    }

    fn send_bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        if self.s.read_exact(&mut len).is_err() {
            return None;
        }
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).ok()?;
        Some(body.into())
    }

    fn call(&mut self, key: ApiKey, version: i16, body: RequestKind) -> ResponseKind {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.next_id)
            .with_client_id(Some(StrBytes::from_static_str("bad-input-test")));
        self.next_id += 1;
        let mut out = BytesMut::new();
        frame::encode_request(&header, &body, &mut out).unwrap();
        self.send_bytes(&out);
        let f = self.read_frame().expect("a response");
        frame::decode_response(key, version, f).unwrap().1
    }

    fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

fn produce_raw(raw: &mut Raw, topic: &str, records: Bytes) -> i16 {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    match raw.call(ApiKey::Produce, 9, RequestKind::Produce(req)) {
        ResponseKind::Produce(r) => r.responses[0].partition_responses[0].error_code,
        other => panic!("{other:?}"),
    }
}

fn create(raw: &mut Raw, name: &str, configs: &[(&str, &str)]) -> i16 {
    let t = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.into())))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        );
    match raw.call(
        ApiKey::CreateTopics,
        5,
        RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![t])),
    ) {
        ResponseKind::CreateTopics(r) => r.topics[0].error_code,
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_frames_close_only_that_connection() {
    let broker = Broker::start_with(&["--set", "socket.request.max.bytes=1048576"]);
    // Oversized frame: refused before allocation, connection closed.
    let mut a = Raw::connect(&broker);
    a.send_bytes(&(512 * 1024 * 1024i32).to_be_bytes());
    assert!(a.is_closed());
    // Negative size.
    let mut b = Raw::connect(&broker);
    b.send_bytes(&(-5i32).to_be_bytes());
    assert!(b.is_closed());
    // Garbage body.
    let mut c = Raw::connect(&broker);
    c.send_bytes(&[0, 0, 0, 10, 0xff, 0xff, 0, 1, 2, 3, 4, 5, 6, 7]);
    assert!(c.is_closed());
    // Unknown API key 999.
    let mut d = Raw::connect(&broker);
    d.send_bytes(&[0, 0, 0, 10, 0x03, 0xe7, 0, 0, 0, 0, 0, 7, 0, 0]);
    assert!(d.is_closed());
    // Truncated header (size says 2).
    let mut e = Raw::connect(&broker);
    e.send_bytes(&[0, 0, 0, 2, 0, 18]);
    assert!(e.is_closed());
    // The broker still serves a well-behaved client.
    let mut ok = Raw::connect(&broker);
    match ok.call(
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(ApiVersionsRequest::default()),
    ) {
        ResponseKind::ApiVersions(r) => assert_eq!(r.error_code, 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_api_versions_version_gets_v0_unsupported_version() {
    let broker = Broker::start();
    let mut raw = Raw::connect(&broker);
    // ApiVersions v99: header v1 (key, version, correlation id, client id), empty body.
    let mut f = Vec::new();
    f.extend_from_slice(&18i16.to_be_bytes());
    f.extend_from_slice(&99i16.to_be_bytes());
    f.extend_from_slice(&42i32.to_be_bytes());
    f.extend_from_slice(&(-1i16).to_be_bytes());
    let mut framed = (f.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&f);
    raw.send_bytes(&framed);
    let resp = raw.read_frame().expect("an answer");
    let (header, body) = frame::decode_response(ApiKey::ApiVersions, 0, resp).unwrap();
    assert_eq!(header.correlation_id, 42);
    match body {
        ResponseKind::ApiVersions(r) => {
            assert_eq!(r.error_code, 35);
            assert!(r.api_keys.iter().any(|k| k.api_key == ApiKey::Fetch as i16));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_batches_and_names_get_kafka_error_codes() {
    let broker = Broker::start_with(&["--set", "auto.create.topics.enable=false"]);
    let mut raw = Raw::connect(&broker);
    assert_eq!(
        create(&mut raw, "good", &[("max.message.bytes", "2000")]),
        0
    );
    assert_eq!(create(&mut raw, "good", &[]), 36, "TOPIC_ALREADY_EXISTS");
    assert_eq!(
        create(&mut raw, "bad name!", &[]),
        17,
        "INVALID_TOPIC_EXCEPTION"
    );
    assert_eq!(
        create(&mut raw, "cfg", &[("retention.ms", "soon")]),
        40,
        "INVALID_CONFIG"
    );
    assert_eq!(
        create(&mut raw, "cfg", &[("no.such.key", "1")]),
        40,
        "INVALID_CONFIG"
    );

    let good = build_simple_batch(0, 1_700_000_000_000, &[(Some(b"k"), Some(b"v"))]);
    assert_eq!(produce_raw(&mut raw, "good", good.clone().into()), 0);
    let mut corrupt = good.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    assert_eq!(
        produce_raw(&mut raw, "good", corrupt.into()),
        2,
        "CORRUPT_MESSAGE"
    );
    let big_value = vec![7u8; 5000];
    let big = build_simple_batch(0, 1, &[(None, Some(&big_value))]);
    assert_eq!(
        produce_raw(&mut raw, "good", big.into()),
        10,
        "MESSAGE_TOO_LARGE"
    );
    assert_eq!(
        produce_raw(&mut raw, "good", good[..good.len() - 3].to_vec().into()),
        2,
        "truncated"
    );
    assert_eq!(
        produce_raw(&mut raw, "missing", good.clone().into()),
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );

    // Metadata for an unknown topic with auto-creation off, and for an invalid name.
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("nope")))),
            metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("no way")))),
        ]));
    match raw.call(ApiKey::Metadata, 9, RequestKind::Metadata(req)) {
        ResponseKind::Metadata(r) => {
            assert_eq!(r.topics[0].error_code, 3);
            assert_eq!(r.topics[1].error_code, 17);
        }
        other => panic!("{other:?}"),
    }
    // Only the one good batch was stored: offset 0, and the next append gets offset 1.
    let second = build_simple_batch(0, 1_700_000_000_001, &[(None, Some(b"w"))]);
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("good")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(second.into()))])]);
    match raw.call(ApiKey::Produce, 9, RequestKind::Produce(req)) {
        ResponseKind::Produce(r) => {
            assert_eq!(r.responses[0].partition_responses[0].base_offset, 1)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_group_requests_get_errors() {
    let broker = Broker::start_with(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let mut raw = Raw::connect(&broker);
    let join = |raw: &mut Raw,
                member: &str,
                protocol_type: &str,
                metadata: Vec<u8>|
     -> JoinGroupResponse {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("hostile")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(StrBytes::from_string(member.into()))
            .with_protocol_type(StrBytes::from_string(protocol_type.into()))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(metadata.into())]);
        match raw.call(ApiKey::JoinGroup, 7, RequestKind::JoinGroup(req)) {
            ResponseKind::JoinGroup(r) => r,
            other => panic!("{other:?}"),
        }
    };
    // Huge member metadata (2 MiB, over the 1 MiB limit): an error, not a crash.
    let r = join(&mut raw, "", "consumer", vec![0u8; 2 << 20]);
    assert_ne!(r.error_code, 0);
    // The two-step join, then a real member.
    let r = join(&mut raw, "", "consumer", vec![1, 2, 3]);
    assert_eq!(r.error_code, 79, "MEMBER_ID_REQUIRED");
    let member = r.member_id.to_string();
    let r = join(&mut raw, &member, "consumer", vec![1, 2, 3]);
    assert_eq!(r.error_code, 0);
    let generation = r.generation_id;
    // A different protocol type than the group's.
    let r = join(&mut raw, "", "connect", vec![1]);
    assert!(
        r.error_code == 23 || r.error_code == 79,
        "INCONSISTENT_GROUP_PROTOCOL, got {}",
        r.error_code
    );
    // Heartbeats with a wrong generation or an unknown member.
    let hb = |raw: &mut Raw, member: &str, generation: i32| -> i16 {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("hostile")))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member.into()));
        match raw.call(ApiKey::Heartbeat, 4, RequestKind::Heartbeat(req)) {
            ResponseKind::Heartbeat(r) => r.error_code,
            other => panic!("{other:?}"),
        }
    };
    let code = hb(&mut raw, &member, generation + 7);
    assert!(
        code == 22 || code == 27,
        "ILLEGAL_GENERATION or REBALANCE_IN_PROGRESS, got {code}"
    );
    assert_eq!(hb(&mut raw, "nobody", generation), 25, "UNKNOWN_MEMBER_ID");
    // Deleting a group that has members.
    let req = DeleteGroupsRequest::default()
        .with_groups_names(vec![GroupId(StrBytes::from_static_str("hostile"))]);
    match raw.call(ApiKey::DeleteGroups, 2, RequestKind::DeleteGroups(req)) {
        ResponseKind::DeleteGroups(r) => assert_eq!(r.results[0].error_code, 68, "NON_EMPTY_GROUP"),
        other => panic!("{other:?}"),
    }
    // The broker is still fine.
    match raw.call(
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(ApiVersionsRequest::default()),
    ) {
        ResponseKind::ApiVersions(r) => assert_eq!(r.error_code, 0),
        other => panic!("{other:?}"),
    }
}
