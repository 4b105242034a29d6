//! The coordinators on the broker: a `coordinator::GroupCoordinator` per `__consumer_offsets`
//! partition and a `txn::TxnCoordinator` per `__transaction_state` partition this shard leads,
//! each carrying out a pure state machine of the `coordinator` crate.

pub mod coordinator;
pub mod txn;

use shardlog_protocol::records::{decode_batches, DecodedBatch};
use shardlog_storage::ReadSlice;

use crate::partition::Partition;

/// Replays a coordinator's partition: every batch from the log start to the log end as it is
/// now (the coordinator runs on the leader, whose log is the partition's truth, so records not
/// yet on every ISR member count too), handed to `apply` with the offset below which its
/// records were already applied (a read may start inside a batch). Stops at the first error,
/// logged. Returns the log end it replayed to.
pub(crate) async fn replay_log(
    partition: &Partition,
    mut apply: impl FnMut(DecodedBatch, i64),
) -> i64 {
    let name = format!("{}-{}", partition.topic, partition.index);
    let log = partition.log();
    let end = partition.log_end_offset();
    let mut offset = partition.log_start_offset();
    while offset < end {
        let slice = match log.read(offset, 1 << 20, end).await {
            Ok(s) => s,
            Err(e) => {
                log::error!("loading {name}: {e}");
                break;
            }
        };
        let ReadSlice::File(file) = &slice else { break };
        let bytes = match log.read_bytes(&slice).await {
            Ok(b) => b,
            Err(e) => {
                log::error!("loading {name}: {e}");
                break;
            }
        };
        match decode_batches(&bytes, 64 << 20) {
            Ok(batches) => {
                for b in batches {
                    apply(b, offset);
                }
            }
            Err(e) => {
                log::error!("undecodable {name} batch: {e}");
                break;
            }
        }
        offset = file.last_offset + 1;
        crate::runtime::rt::yield_if_needed().await;
    }
    end
}
