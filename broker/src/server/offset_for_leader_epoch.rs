//! OffsetForLeaderEpoch (KIP-101/279): where a leader epoch ends in the leader's log. Followers
//! ask it before fetching in a new epoch to find where their log diverges; clients may ask it
//! to detect truncation. Answered only by the leader, from its leader epoch cache.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ResponseKind,
};

use super::Response;
use crate::base::errors;
use crate::base::ids::LeaderEpoch;
use crate::shard::scatter::scatter_each;
use crate::shard::Shard;

/// (error, epoch, end offset) of one requested partition.
type Answer = (i16, i32, i64);

const UNKNOWN: Answer = (errors::UNKNOWN_TOPIC_OR_PARTITION, -1, -1);

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    req: OffsetForLeaderEpochRequest,
) -> Response {
    let snapshot = shard.metadata();
    // Per requested partition in order: Some(index in `items`) or None (unknown).
    let mut slots: Vec<Option<usize>> = Vec::new();
    let mut items = Vec::new();
    for t in &req.topics {
        let meta = snapshot.topic(t.topic.0.as_str());
        for p in &t.partitions {
            match meta {
                Some(m) if p.partition >= 0 && p.partition < m.partitions => {
                    slots.push(Some(items.len()));
                    let item: (Arc<str>, i32, i32, i32) = (
                        m.name.clone(),
                        p.partition,
                        p.current_leader_epoch,
                        p.leader_epoch,
                    );
                    items.push((shard.owner(&m.name, p.partition), item));
                }
                _ => slots.push(None),
            }
        }
    }
    let answers = scatter_each(
        shard,
        items,
        (errors::NOT_LEADER_OR_FOLLOWER, -1, -1),
        |s: Rc<Shard>, (topic, index, current, asked): (Arc<str>, i32, i32, i32)| async move {
            match s.partition(&topic, index) {
                Some(p) => {
                    let (code, epoch, end) =
                        p.end_offset_for_epoch(LeaderEpoch(current), LeaderEpoch(asked));
                    (code, epoch.0, end.0)
                }
                None if s.metadata().topic(&topic).is_some() => {
                    (errors::NOT_LEADER_OR_FOLLOWER, -1, -1)
                }
                None => UNKNOWN,
            }
        },
    )
    .await;
    let mut slots = slots.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let (code, epoch, end) = match slots.next().flatten() {
                        Some(i) => answers.get(i).copied().unwrap_or(UNKNOWN),
                        None => UNKNOWN,
                    };
                    EpochEndOffset::default()
                        .with_error_code(code)
                        .with_partition(p.partition)
                        .with_leader_epoch(epoch)
                        .with_end_offset(end)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    Response::Message(ResponseKind::OffsetForLeaderEpoch(
        OffsetForLeaderEpochResponse::default().with_topics(topics),
    ))
}
