//! Property/fuzz test: `frame::decode_request`, `frame::decode_response` and
//! `records::decode_batches` must never panic, abort or allocate absurdly on hostile input.
//!
//! Inputs: valid encodings of every API at every version `kafka-protocol` knows (default
//! bodies) plus richer bodies for the APIs Shardlog serves or clients send first (Produce,
//! Fetch, Metadata, ApiVersions, JoinGroup, SyncGroup, OffsetCommit, CreateTopics, ...), then
//! seeded random mutations of them, and plain random bytes. A watching global allocator fails
//! the run (the process aborts with "memory allocation of N bytes failed") on any single
//! allocation above 1 GiB, and the test asserts that the largest one stayed small: without the
//! guard in `frame`, a 20-byte request asks for ~150 GB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardlog_protocol::batch::Compression;
use shardlog_protocol::{frame, records};

// ---------------------------------------------------------------------------------------------
// Allocation watch

struct Watch;

static LARGEST_ALLOC: AtomicUsize = AtomicUsize::new(0);
const REFUSE_ABOVE: usize = 1 << 30;

impl Watch {
    fn note(size: usize) -> bool {
        LARGEST_ALLOC.fetch_max(size, Ordering::Relaxed);
        size <= REFUSE_ABOVE
    }
}

// SAFETY: forwards to the system allocator; only refuses (null) sizes above REFUSE_ABOVE,
// which makes std abort the process with a message naming the size.
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Watch::note(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Watch::note(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Watch::note(new_size) {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Watch = Watch;

/// The largest allocation any guarded decode of these small inputs may need.
const LARGEST_ALLOWED: usize = 16 << 20;

// ---------------------------------------------------------------------------------------------
// Corpus

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

fn topic(v: &'static str) -> TopicName {
    TopicName(s(v))
}

/// Default bodies of every API, so every message layout is in the corpus.
macro_rules! defaults {
    ($($key:ident => $req:ident, $resp:ident;)*) => {
        fn default_request(api_key: ApiKey) -> RequestKind {
            match api_key {
                $(ApiKey::$key => RequestKind::$key($req::default()),)*
            }
        }
        fn default_response(api_key: ApiKey) -> ResponseKind {
            match api_key {
                $(ApiKey::$key => ResponseKind::$key($resp::default()),)*
            }
        }
    };
}

defaults! {
            Produce => ProduceRequest, ProduceResponse;
            Fetch => FetchRequest, FetchResponse;
            ListOffsets => ListOffsetsRequest, ListOffsetsResponse;
            Metadata => MetadataRequest, MetadataResponse;
            OffsetCommit => OffsetCommitRequest, OffsetCommitResponse;
            OffsetFetch => OffsetFetchRequest, OffsetFetchResponse;
            FindCoordinator => FindCoordinatorRequest, FindCoordinatorResponse;
            JoinGroup => JoinGroupRequest, JoinGroupResponse;
            Heartbeat => HeartbeatRequest, HeartbeatResponse;
            LeaveGroup => LeaveGroupRequest, LeaveGroupResponse;
            SyncGroup => SyncGroupRequest, SyncGroupResponse;
            DescribeGroups => DescribeGroupsRequest, DescribeGroupsResponse;
            ListGroups => ListGroupsRequest, ListGroupsResponse;
            SaslHandshake => SaslHandshakeRequest, SaslHandshakeResponse;
            ApiVersions => ApiVersionsRequest, ApiVersionsResponse;
            CreateTopics => CreateTopicsRequest, CreateTopicsResponse;
            DeleteTopics => DeleteTopicsRequest, DeleteTopicsResponse;
            DeleteRecords => DeleteRecordsRequest, DeleteRecordsResponse;
            InitProducerId => InitProducerIdRequest, InitProducerIdResponse;
            OffsetForLeaderEpoch => OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse;
            AddPartitionsToTxn => AddPartitionsToTxnRequest, AddPartitionsToTxnResponse;
            AddOffsetsToTxn => AddOffsetsToTxnRequest, AddOffsetsToTxnResponse;
            EndTxn => EndTxnRequest, EndTxnResponse;
            WriteTxnMarkers => WriteTxnMarkersRequest, WriteTxnMarkersResponse;
            TxnOffsetCommit => TxnOffsetCommitRequest, TxnOffsetCommitResponse;
            DescribeAcls => DescribeAclsRequest, DescribeAclsResponse;
            CreateAcls => CreateAclsRequest, CreateAclsResponse;
            DeleteAcls => DeleteAclsRequest, DeleteAclsResponse;
            DescribeConfigs => DescribeConfigsRequest, DescribeConfigsResponse;
            AlterConfigs => AlterConfigsRequest, AlterConfigsResponse;
            AlterReplicaLogDirs => AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse;
            DescribeLogDirs => DescribeLogDirsRequest, DescribeLogDirsResponse;
            SaslAuthenticate => SaslAuthenticateRequest, SaslAuthenticateResponse;
            CreatePartitions => CreatePartitionsRequest, CreatePartitionsResponse;
            CreateDelegationToken => CreateDelegationTokenRequest, CreateDelegationTokenResponse;
            RenewDelegationToken => RenewDelegationTokenRequest, RenewDelegationTokenResponse;
            ExpireDelegationToken => ExpireDelegationTokenRequest, ExpireDelegationTokenResponse;
            DescribeDelegationToken => DescribeDelegationTokenRequest, DescribeDelegationTokenResponse;
            DeleteGroups => DeleteGroupsRequest, DeleteGroupsResponse;
            ElectLeaders => ElectLeadersRequest, ElectLeadersResponse;
            IncrementalAlterConfigs => IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse;
            AlterPartitionReassignments => AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse;
            ListPartitionReassignments => ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse;
            OffsetDelete => OffsetDeleteRequest, OffsetDeleteResponse;
            DescribeClientQuotas => DescribeClientQuotasRequest, DescribeClientQuotasResponse;
            AlterClientQuotas => AlterClientQuotasRequest, AlterClientQuotasResponse;
            DescribeUserScramCredentials => DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse;
            AlterUserScramCredentials => AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse;
            Vote => VoteRequest, VoteResponse;
            BeginQuorumEpoch => BeginQuorumEpochRequest, BeginQuorumEpochResponse;
            EndQuorumEpoch => EndQuorumEpochRequest, EndQuorumEpochResponse;
            DescribeQuorum => DescribeQuorumRequest, DescribeQuorumResponse;
            AlterPartition => AlterPartitionRequest, AlterPartitionResponse;
            UpdateFeatures => UpdateFeaturesRequest, UpdateFeaturesResponse;
            Envelope => EnvelopeRequest, EnvelopeResponse;
            FetchSnapshot => FetchSnapshotRequest, FetchSnapshotResponse;
            DescribeCluster => DescribeClusterRequest, DescribeClusterResponse;
            DescribeProducers => DescribeProducersRequest, DescribeProducersResponse;
            BrokerRegistration => BrokerRegistrationRequest, BrokerRegistrationResponse;
            BrokerHeartbeat => BrokerHeartbeatRequest, BrokerHeartbeatResponse;
            UnregisterBroker => UnregisterBrokerRequest, UnregisterBrokerResponse;
            DescribeTransactions => DescribeTransactionsRequest, DescribeTransactionsResponse;
            ListTransactions => ListTransactionsRequest, ListTransactionsResponse;
            AllocateProducerIds => AllocateProducerIdsRequest, AllocateProducerIdsResponse;
            ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse;
            ConsumerGroupDescribe => ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse;
            ControllerRegistration => ControllerRegistrationRequest, ControllerRegistrationResponse;
            GetTelemetrySubscriptions => GetTelemetrySubscriptionsRequest, GetTelemetrySubscriptionsResponse;
            PushTelemetry => PushTelemetryRequest, PushTelemetryResponse;
            AssignReplicasToDirs => AssignReplicasToDirsRequest, AssignReplicasToDirsResponse;
            ListConfigResources => ListConfigResourcesRequest, ListConfigResourcesResponse;
            DescribeTopicPartitions => DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse;
            ShareGroupHeartbeat => ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse;
            ShareGroupDescribe => ShareGroupDescribeRequest, ShareGroupDescribeResponse;
            ShareFetch => ShareFetchRequest, ShareFetchResponse;
            ShareAcknowledge => ShareAcknowledgeRequest, ShareAcknowledgeResponse;
            AddRaftVoter => AddRaftVoterRequest, AddRaftVoterResponse;
            RemoveRaftVoter => RemoveRaftVoterRequest, RemoveRaftVoterResponse;
            UpdateRaftVoter => UpdateRaftVoterRequest, UpdateRaftVoterResponse;
            InitializeShareGroupState => InitializeShareGroupStateRequest, InitializeShareGroupStateResponse;
            ReadShareGroupState => ReadShareGroupStateRequest, ReadShareGroupStateResponse;
            WriteShareGroupState => WriteShareGroupStateRequest, WriteShareGroupStateResponse;
            DeleteShareGroupState => DeleteShareGroupStateRequest, DeleteShareGroupStateResponse;
            ReadShareGroupStateSummary => ReadShareGroupStateSummaryRequest, ReadShareGroupStateSummaryResponse;
            DescribeShareGroupOffsets => DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse;
            AlterShareGroupOffsets => AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse;
            DeleteShareGroupOffsets => DeleteShareGroupOffsetsRequest, DeleteShareGroupOffsetsResponse;
}

fn record_batches() -> Vec<Bytes> {
    let recs: Vec<records::Record> = (0..5)
        .map(|i| records::Record {
            offset: 0,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(vec![b'v'; 20 + i as usize])),
            headers: vec![("h".to_string(), Some(Bytes::from_static(b"x")))],
        })
        .collect();
    [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .iter()
    .map(|&c| Bytes::from(records::build_batch(c, 1_700_000_000_000, &recs).unwrap()))
    .collect()
}

/// Richer bodies; each is kept for the versions at which `kafka-protocol` can encode it.
fn rich_requests(api_key: ApiKey, batches: &[Bytes]) -> Vec<RequestKind> {
    use kafka_protocol::messages::{
        create_topics_request as ct, describe_configs_request as dc, fetch_request as fr,
        join_group_request as jg, leave_group_request as lg, list_offsets_request as lo,
        metadata_request as mr, offset_commit_request as oc, produce_request as pr,
        sync_group_request as sg,
    };
    match api_key {
        ApiKey::Produce => {
            let topics = |named: bool| {
                (0..2)
                    .map(|t| {
                        pr::TopicProduceData::default()
                            .with_name(if named {
                                topic("orders")
                            } else {
                                TopicName::default()
                            })
                            .with_partition_data(
                                (0..2)
                                    .map(|p| {
                                        pr::PartitionProduceData::default()
                                            .with_index(p)
                                            .with_records(Some(
                                                batches[(t * 2 + p) as usize % batches.len()]
                                                    .clone(),
                                            ))
                                    })
                                    .collect(),
                            )
                    })
                    .collect()
            };
            vec![
                RequestKind::Produce(
                    ProduceRequest::default()
                        .with_acks(-1)
                        .with_timeout_ms(30_000)
                        .with_topic_data(topics(true)),
                ),
                RequestKind::Produce(
                    ProduceRequest::default()
                        .with_transactional_id(Some(TransactionalId(s("txn-1"))))
                        .with_acks(1)
                        .with_timeout_ms(1_000)
                        .with_topic_data(topics(false)),
                ),
            ]
        }
        ApiKey::Fetch => {
            let topics = |named: bool| {
                vec![fr::FetchTopic::default()
                    .with_topic(if named {
                        topic("orders")
                    } else {
                        TopicName::default()
                    })
                    .with_partitions(
                        (0..3)
                            .map(|p| {
                                fr::FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(1 << 33)
                                    .with_partition_max_bytes(1 << 20)
                            })
                            .collect(),
                    )]
            };
            let base = FetchRequest::default()
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(52_428_800);
            vec![
                RequestKind::Fetch(base.clone().with_topics(topics(true))),
                RequestKind::Fetch(base.clone().with_topics(topics(false))),
                RequestKind::Fetch(
                    base.with_isolation_level(1)
                        .with_session_id(12)
                        .with_session_epoch(3)
                        .with_topics(topics(true))
                        .with_forgotten_topics_data(vec![fr::ForgottenTopic::default()
                            .with_topic(topic("old"))
                            .with_partitions(vec![1, 2, 3])])
                        .with_rack_id(s("rack-a")),
                ),
            ]
        }
        ApiKey::Metadata => {
            let topics: Vec<mr::MetadataRequestTopic> = ["a", "orders", "payments"]
                .iter()
                .map(|t| mr::MetadataRequestTopic::default().with_name(Some(topic(t))))
                .collect();
            vec![
                RequestKind::Metadata(MetadataRequest::default().with_topics(Some(topics.clone()))),
                RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
                RequestKind::Metadata(
                    MetadataRequest::default()
                        .with_topics(Some(topics))
                        .with_allow_auto_topic_creation(false)
                        .with_include_topic_authorized_operations(true),
                ),
            ]
        }
        ApiKey::ApiVersions => vec![RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(s("librdkafka"))
                .with_client_software_version(s("2.0.2")),
        )],
        ApiKey::JoinGroup => {
            let protocols = vec![
                jg::JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 1, 0, 1, b'a'])),
                jg::JoinGroupRequestProtocol::default()
                    .with_name(s("roundrobin"))
                    .with_metadata(Bytes::from_static(&[0, 1])),
            ];
            let base = JoinGroupRequest::default()
                .with_group_id(GroupId(s("g1")))
                .with_session_timeout_ms(45_000)
                .with_member_id(s(""))
                .with_protocol_type(s("consumer"))
                .with_protocols(protocols);
            vec![
                RequestKind::JoinGroup(base.clone()),
                RequestKind::JoinGroup(base.clone().with_rebalance_timeout_ms(300_000)),
                RequestKind::JoinGroup(
                    base.with_rebalance_timeout_ms(300_000)
                        .with_group_instance_id(Some(s("i-1")))
                        .with_reason(Some(s("rejoin"))),
                ),
            ]
        }
        ApiKey::SyncGroup => {
            let base = SyncGroupRequest::default()
                .with_group_id(GroupId(s("g1")))
                .with_generation_id(7)
                .with_member_id(s("m-1"))
                .with_assignments(vec![
                    sg::SyncGroupRequestAssignment::default()
                        .with_member_id(s("m-1"))
                        .with_assignment(Bytes::from_static(&[0, 1, 0, 0, 0, 0])),
                    sg::SyncGroupRequestAssignment::default()
                        .with_member_id(s("m-2"))
                        .with_assignment(Bytes::new()),
                ]);
            vec![
                RequestKind::SyncGroup(base.clone()),
                RequestKind::SyncGroup(
                    base.with_protocol_type(Some(s("consumer")))
                        .with_protocol_name(Some(s("range"))),
                ),
            ]
        }
        ApiKey::OffsetCommit => {
            let topics = vec![oc::OffsetCommitRequestTopic::default()
                .with_name(topic("orders"))
                .with_partitions(
                    (0..3)
                        .map(|p| {
                            oc::OffsetCommitRequestPartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(1000 + i64::from(p))
                                .with_committed_metadata(Some(s("meta")))
                        })
                        .collect(),
                )];
            // v10 names topics by id only.
            let by_id: Vec<_> = topics
                .iter()
                .map(|t| t.clone().with_name(TopicName::default()))
                .collect();
            let base = OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g1")))
                .with_topics(topics);
            vec![
                RequestKind::OffsetCommit(base.clone()),
                RequestKind::OffsetCommit(base.clone().with_topics(by_id)),
                RequestKind::OffsetCommit(
                    base.with_generation_id_or_member_epoch(3)
                        .with_member_id(s("m-1")),
                ),
            ]
        }
        ApiKey::CreateTopics => vec![RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![
                    ct::CreatableTopic::default()
                        .with_name(topic("new"))
                        .with_num_partitions(6)
                        .with_replication_factor(1)
                        .with_configs(vec![
                            ct::CreatableTopicConfig::default()
                                .with_name(s("retention.ms"))
                                .with_value(Some(s("86400000"))),
                            ct::CreatableTopicConfig::default()
                                .with_name(s("cleanup.policy"))
                                .with_value(None),
                        ]),
                    ct::CreatableTopic::default()
                        .with_name(topic("assigned"))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_assignments(vec![ct::CreatableReplicaAssignment::default()
                            .with_partition_index(0)
                            .with_broker_ids(vec![BrokerId(1), BrokerId(2)])]),
                ]),
        )],
        ApiKey::ListOffsets => vec![RequestKind::ListOffsets(
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![lo::ListOffsetsTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![
                        lo::ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1),
                        lo::ListOffsetsPartition::default()
                            .with_partition_index(1)
                            .with_timestamp(-2),
                    ])]),
        )],
        ApiKey::FindCoordinator => vec![
            RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s("g1"))),
            RequestKind::FindCoordinator(
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g1"), s("g2")]),
            ),
        ],
        ApiKey::InitProducerId => vec![RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s("txn-1"))))
                .with_transaction_timeout_ms(60_000),
        )],
        ApiKey::DescribeConfigs => vec![RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default().with_resources(vec![
                dc::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("orders"))
                    .with_configuration_keys(Some(vec![s("retention.ms")])),
                dc::DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(s("1"))
                    .with_configuration_keys(None),
            ]),
        )],
        ApiKey::LeaveGroup => vec![
            RequestKind::LeaveGroup(
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(s("g1")))
                    .with_member_id(s("m-1")),
            ),
            RequestKind::LeaveGroup(
                LeaveGroupRequest::default()
                    .with_group_id(GroupId(s("g1")))
                    .with_members(vec![lg::MemberIdentity::default().with_member_id(s("m-1"))]),
            ),
        ],
        _ => vec![],
    }
}

fn rich_responses(api_key: ApiKey, batches: &[Bytes]) -> Vec<ResponseKind> {
    use kafka_protocol::messages::{
        api_versions_response as av, fetch_response as fr, metadata_response as mr,
        produce_response as pr,
    };
    match api_key {
        ApiKey::Metadata => vec![ResponseKind::Metadata(
            MetadataResponse::default()
                .with_brokers(vec![mr::MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(s("localhost"))
                    .with_port(9092)])
                .with_controller_id(BrokerId(1))
                .with_topics(vec![mr::MetadataResponseTopic::default()
                    .with_name(Some(topic("orders")))
                    .with_partitions(
                        (0..3)
                            .map(|p| {
                                mr::MetadataResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_leader_id(BrokerId(1))
                                    .with_replica_nodes(vec![BrokerId(1)])
                                    .with_isr_nodes(vec![BrokerId(1)])
                            })
                            .collect(),
                    )]),
        )],
        ApiKey::ApiVersions => vec![ResponseKind::ApiVersions(
            ApiVersionsResponse::default().with_api_keys(
                [(0, 3, 9), (1, 4, 12), (3, 0, 12), (18, 0, 4)]
                    .iter()
                    .map(|&(k, lo, hi)| {
                        av::ApiVersion::default()
                            .with_api_key(k)
                            .with_min_version(lo)
                            .with_max_version(hi)
                    })
                    .collect(),
            ),
        )],
        ApiKey::Produce => vec![ResponseKind::Produce(
            ProduceResponse::default().with_responses(vec![pr::TopicProduceResponse::default()
                .with_name(topic("orders"))
                .with_partition_responses(vec![pr::PartitionProduceResponse::default()
                    .with_index(0)
                    .with_base_offset(1 << 35)])]),
        )],
        ApiKey::Fetch => vec![ResponseKind::Fetch(
            FetchResponse::default().with_responses(vec![fr::FetchableTopicResponse::default()
                .with_topic(topic("orders"))
                .with_partitions(
                    batches
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            fr::PartitionData::default()
                                .with_partition_index(i as i32)
                                .with_high_watermark(99)
                                .with_records(Some(b.clone()))
                        })
                        .collect(),
                )]),
        )],
        _ => vec![],
    }
}

/// Encoded request frames (without the size prefix) and what they hold, according to
/// `kafka-protocol`'s own (unguarded) decoder: the encoder silently drops fields some versions
/// lack, so the decoded value, not the input, is the reference.
fn request_corpus(batches: &[Bytes]) -> Vec<(Bytes, RequestHeader, RequestKind)> {
    let mut out = Vec::new();
    for api_key in ApiKey::iter() {
        let versions = api_key.valid_versions();
        let mut bodies = rich_requests(api_key, batches);
        bodies.push(default_request(api_key));
        for version in versions.min..=versions.max {
            let header = RequestHeader::default()
                .with_request_api_key(api_key as i16)
                .with_request_api_version(version)
                .with_correlation_id(0x0102_0304 + i32::from(version))
                .with_client_id(Some(s("fuzz-client")));
            for body in &bodies {
                let mut buf = BytesMut::new();
                if frame::encode_request(&header, body, &mut buf).is_ok() {
                    let frame_bytes = buf.freeze().slice(4..);
                    let mut rest = frame_bytes.clone();
                    let header =
                        kafka_protocol::protocol::decode_request_header_from_buffer(&mut rest)
                            .expect("crate decodes its own header");
                    let expected = RequestKind::decode(api_key, &mut rest, version)
                        .expect("crate decodes its own encoding");
                    out.push((frame_bytes, header, expected));
                }
            }
        }
    }
    out
}

/// Encoded response frames (without the size prefix) with their API and version.
fn response_corpus(batches: &[Bytes]) -> Vec<(ApiKey, i16, Bytes)> {
    let mut out = Vec::new();
    for api_key in ApiKey::iter() {
        let versions = api_key.valid_versions();
        let mut bodies = rich_responses(api_key, batches);
        bodies.push(default_response(api_key));
        for version in versions.min..=versions.max {
            for body in &bodies {
                let mut buf = BytesMut::new();
                if frame::encode_response(77, api_key, version, body, &mut buf).is_ok() {
                    out.push((api_key, version, buf.freeze().slice(4..)));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Mutation

const INTERESTING_I32: [i32; 9] = [
    i32::MAX,
    -1,
    -2,
    i32::MIN,
    0x00ff_ffff,
    0x7fff,
    0x1_0000,
    1 << 24,
    127,
];
const VARINT_BOMBS: [&[u8]; 4] = [
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xfe, 0xff, 0xff, 0xff, 0x0f],
    &[0x80, 0x80, 0x80, 0x80, 0x08],
    &[0xff, 0xff, 0x7f],
];

/// Applies 1-4 random mutations; positions below `keep` are left alone.
fn mutate(rng: &mut StdRng, input: &[u8], keep: usize) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let lo = keep.min(b.len());
        let at = if b.len() > lo {
            rng.gen_range(lo..b.len())
        } else {
            b.len()
        };
        match rng.gen_range(0..9) {
            0 if at < b.len() => b[at] ^= 1 << rng.gen_range(0..8),
            1 if at < b.len() => b[at] = rng.gen(),
            2 if at + 4 <= b.len() => {
                let v = INTERESTING_I32[rng.gen_range(0..INTERESTING_I32.len())];
                b[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            3 if at + 2 <= b.len() => {
                let v: i16 = [i16::MAX, -1, -2, 0x7f00][rng.gen_range(0..4)];
                b[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
            4 => {
                let bomb = VARINT_BOMBS[rng.gen_range(0..VARINT_BOMBS.len())];
                if rng.gen_bool(0.5) {
                    b.splice(at..at, bomb.iter().copied());
                } else {
                    let end = (at + bomb.len()).min(b.len());
                    b.splice(at..end, bomb.iter().copied());
                }
            }
            5 => b.truncate(at),
            6 if at < b.len() => {
                let end = rng.gen_range(at..=b.len());
                b.drain(at..end);
            }
            7 if at < b.len() => {
                let end = rng.gen_range(at..=b.len().min(at + 64));
                let dup = b[at..end].to_vec();
                b.splice(at..at, dup);
            }
            _ => {
                let n = rng.gen_range(1..16);
                b.extend((0..n).map(|_| rng.gen::<u8>()));
            }
        }
    }
    b
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| rng.gen()).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn corpus_round_trips_through_guarded_decode() {
    let batches = record_batches();
    let corpus = request_corpus(&batches);
    let apis: std::collections::HashSet<i16> =
        corpus.iter().map(|(_, h, _)| h.request_api_key).collect();
    assert_eq!(
        apis.len(),
        ApiKey::iter().count(),
        "every API is in the corpus"
    );
    assert!(corpus.len() > 400, "corpus has {} frames", corpus.len());
    for (frame_bytes, header, body) in &corpus {
        let decoded = frame::decode_request(frame_bytes.clone()).unwrap_or_else(|e| {
            panic!(
                "api {} v{}: {e}",
                header.request_api_key, header.request_api_version
            )
        });
        assert_eq!(&decoded.header, header);
        assert_eq!(
            &decoded.body, body,
            "api {} v{}",
            header.request_api_key, header.request_api_version
        );
    }
    for (api_key, version, frame_bytes) in response_corpus(&batches) {
        let (h, _) = frame::decode_response(api_key, version, frame_bytes)
            .unwrap_or_else(|e| panic!("{api_key:?} v{version} response: {e}"));
        assert_eq!(h.correlation_id, 77);
    }
}

#[test]
fn hostile_requests_never_panic_or_allocate_absurdly() {
    let batches = record_batches();
    let corpus = request_corpus(&batches);
    let valid_prefixes: Vec<[u8; 4]> = corpus
        .iter()
        .map(|(f, _, _)| [f[0], f[1], f[2], f[3]])
        .collect();
    let mut rng = StdRng::seed_from_u64(0xdec0_de01);
    let (mut ok, mut malformed, mut other) = (0u32, 0u32, 0u32);
    for i in 0..150_000 {
        let input = if i % 10 == 0 {
            // Random bytes, usually behind a valid api key + version so the body is reached.
            let mut b = random_bytes(&mut rng, 200);
            if b.len() >= 4 && rng.gen_bool(0.8) {
                b[..4].copy_from_slice(&valid_prefixes[rng.gen_range(0..valid_prefixes.len())]);
            }
            b
        } else {
            let (f, _, _) = &corpus[rng.gen_range(0..corpus.len())];
            // Usually keep api key + version (and sometimes the whole fixed header) intact.
            let keep = [0, 4, 4, 4, 8][rng.gen_range(0..5)];
            mutate(&mut rng, f, keep)
        };
        match frame::decode_request(Bytes::from(input)) {
            Ok(req) => {
                ok += 1;
                assert_eq!(req.api_key as i16, req.header.request_api_key);
                assert_eq!(frame::request_api_key(&req.body), Some(req.api_key));
            }
            Err(frame::RequestError::Malformed(_)) => malformed += 1,
            Err(_) => other += 1,
        }
    }
    assert!(
        ok > 10_000 && malformed > 10_000 && other > 100,
        "ok {ok} malformed {malformed} other {other}"
    );
    let largest = LARGEST_ALLOC.load(Ordering::Relaxed);
    assert!(
        largest < LARGEST_ALLOWED,
        "largest allocation {largest} bytes"
    );
}

#[test]
fn hostile_responses_never_panic() {
    let batches = record_batches();
    let corpus = response_corpus(&batches);
    let mut rng = StdRng::seed_from_u64(0xdec0_de02);
    let (mut ok, mut err) = (0u32, 0u32);
    for _ in 0..30_000 {
        let (api_key, version, f) = &corpus[rng.gen_range(0..corpus.len())];
        let input = mutate(&mut rng, f, 0);
        match frame::decode_response(*api_key, *version, Bytes::from(input)) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    assert!(ok > 1_000 && err > 1_000, "ok {ok} err {err}");
    let largest = LARGEST_ALLOC.load(Ordering::Relaxed);
    assert!(
        largest < LARGEST_ALLOWED,
        "largest allocation {largest} bytes"
    );
}

#[test]
fn hostile_record_blobs_never_panic() {
    let batches = record_batches();
    let blob: Vec<u8> = batches.iter().flat_map(|b| b.iter().copied()).collect();
    let mut rng = StdRng::seed_from_u64(0xdec0_de03);
    let (mut ok, mut err) = (0u32, 0u32);
    for i in 0..20_000 {
        let input = if i % 10 == 0 {
            random_bytes(&mut rng, 300)
        } else if rng.gen_bool(0.7) {
            // One batch, mutated past its CRC field, with the CRC recomputed so that
            // decompression and record parsing see the damage (and sometimes its length too).
            let which = rng.gen_range(0..batches.len());
            let mut b = mutate(&mut rng, &batches[which], 21);
            if rng.gen_bool(0.5) && b.len() >= 12 {
                let len = (b.len() - 12) as i32;
                b[8..12].copy_from_slice(&len.to_be_bytes());
            }
            if b.len() >= 61 {
                let crc = crc32c::crc32c(&b[21..]);
                b[17..21].copy_from_slice(&crc.to_be_bytes());
            }
            b
        } else {
            mutate(&mut rng, &blob, 0)
        };
        match records::decode_batches(&input, 1 << 20) {
            Ok(decoded) => {
                ok += 1;
                for b in &decoded {
                    assert_eq!(b.records.len(), b.header.records_count as usize);
                }
            }
            Err(_) => err += 1,
        }
        // The header walk must not panic either, and agrees with full decoding when both pass.
        if let (Ok(summary), Ok(decoded)) = (
            records::summarize(&input),
            records::decode_batches(&input, 1 << 20),
        ) {
            assert_eq!(summary.batches, decoded.len());
        }
    }
    assert!(ok > 100 && err > 1_000, "ok {ok} err {err}");
    let largest = LARGEST_ALLOC.load(Ordering::Relaxed);
    assert!(
        largest < LARGEST_ALLOWED,
        "largest allocation {largest} bytes"
    );
}

#[test]
fn rich_bodies_cover_every_version_of_the_main_apis() {
    let batches = record_batches();
    let corpus = request_corpus(&batches);
    for api_key in [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::Metadata,
        ApiKey::ApiVersions,
        ApiKey::JoinGroup,
        ApiKey::SyncGroup,
        ApiKey::OffsetCommit,
        ApiKey::CreateTopics,
        ApiKey::ListOffsets,
        ApiKey::FindCoordinator,
        ApiKey::InitProducerId,
        ApiKey::DescribeConfigs,
        ApiKey::LeaveGroup,
    ] {
        let versions = frame::supported_versions(api_key);
        // ApiVersions v0-2 have an empty body: nothing but the default exists.
        let min = if api_key == ApiKey::ApiVersions {
            3
        } else {
            versions.min
        };
        for version in min..=versions.max {
            let rich = corpus.iter().any(|(_, h, body)| {
                h.request_api_key == api_key as i16
                    && h.request_api_version == version
                    && *body != default_request(api_key)
            });
            assert!(rich, "{api_key:?} v{version} has only the default body");
        }
    }
}

#[test]
fn hostile_compressed_bodies_never_panic_or_exceed_the_limit() {
    use shardlog_protocol::compression;
    let data: Vec<u8> = (0..20_000u32)
        .map(|i| (i % 97) as u8 ^ (i / 500) as u8)
        .collect();
    let codecs = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let packed: Vec<Vec<u8>> = codecs
        .iter()
        .map(|&c| compression::compress(c, &data).unwrap())
        .collect();
    let mut rng = StdRng::seed_from_u64(0xdec0_de04);
    let limit = 1 << 16;
    let (mut ok, mut err) = (0u32, 0u32);
    for i in 0..20_000 {
        let which = i % codecs.len();
        let input = mutate(&mut rng, &packed[which], 0);
        match compression::decompress(codecs[which], &input, limit) {
            Ok(out) => {
                ok += 1;
                assert!(out.len() <= limit);
            }
            Err(_) => err += 1,
        }
    }
    assert!(ok > 100 && err > 1_000, "ok {ok} err {err}");
    let largest = LARGEST_ALLOC.load(Ordering::Relaxed);
    assert!(
        largest < LARGEST_ALLOWED,
        "largest allocation {largest} bytes"
    );
}
