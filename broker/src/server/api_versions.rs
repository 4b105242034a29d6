//! ApiVersions, and the table of what this broker supports. Only APIs with a working handler
//! are listed; clients pick the highest version both sides know.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, ResponseKind};

use super::Response;
use crate::base::errors;

/// (api, min version, max version) served by this broker.
const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // v0 and v1 are not in kafka-protocol's codec; clients of Kafka 2.1+ use v2 and later.
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    // Transactions. AddPartitionsToTxn v4+ (KIP-890) is for brokers; v5, AddOffsetsToTxn v4
    // and EndTxn v4+ belong to KIP-890's second part (epoch bump per transaction), not served.
    (ApiKey::AddPartitionsToTxn, 0, 4),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
];

/// The version range this broker serves for `api`, if any.
pub fn supported_range(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|(_, lo, hi)| (*lo, *hi))
}

fn table() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect()
}

pub fn handle(_version: i16, _req: ApiVersionsRequest) -> Response {
    Response::Message(ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(errors::NONE)
            .with_api_keys(table()),
    ))
}

/// The v0 answer to an ApiVersions request at a version we do not know (KIP-511).
pub fn unsupported_version_response() -> ResponseKind {
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(errors::UNSUPPORTED_VERSION)
            .with_api_keys(table()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Message;

    #[test]
    fn advertised_ranges_are_within_what_the_codec_knows() {
        for (k, lo, hi) in SUPPORTED {
            let known = shardlog_protocol::frame::supported_versions(*k);
            assert!(
                *lo >= known.min && *hi <= known.max,
                "{k:?} {lo}..{hi} outside {known}"
            );
            assert!(lo <= hi);
        }
        assert_eq!(kafka_protocol::messages::ProduceRequest::VERSIONS.min, 3);
    }
}
