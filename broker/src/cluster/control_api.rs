//! The interface between shards and the control thread (`crate::control`): the requests shards
//! send it (`ControlRequest` on `ControlHandle::tx`, answered on a channel, so a shard never
//! blocks on ZooKeeper) and the leadership lease it renews (`Lease`). Standalone brokers have no
//! control thread and a lease that never ends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::base::clock::{mono_ms, mono_ms_of};
use crate::base::ids::{BrokerId, PartitionId, ProducerId};
use crate::cluster::metadata::TopicMeta;

/// ZooKeeper sessions that ended while the broker ran (for the metrics endpoint).
pub static SESSION_ENDS: AtomicU64 = AtomicU64::new(0);

/// Leadership lease. A leader accepts writes only while its ZooKeeper session is known to be
/// alive: the control thread renews the lease after each successful round trip to ZooKeeper,
/// for less than the session timeout, so a broker that was paused (SIGSTOP) or cut off stops
/// accepting writes before ZooKeeper can expire its session and another broker is elected.
/// Standalone brokers hold a lease that never ends.
pub struct Lease {
    /// Monotonic milliseconds until which writes are allowed; `u64::MAX` standalone, 0 revoked.
    until_ms: AtomicU64,
}

impl Lease {
    pub fn standalone() -> Arc<Lease> {
        Arc::new(Lease {
            until_ms: AtomicU64::new(u64::MAX),
        })
    }

    /// Starts revoked (cluster mode, until the first successful ZooKeeper round trip).
    pub fn revoked() -> Arc<Lease> {
        Arc::new(Lease {
            until_ms: AtomicU64::new(0),
        })
    }

    pub fn valid(&self) -> bool {
        mono_ms() < self.until_ms.load(Ordering::Acquire)
    }

    /// How long writes stay allowed from now; `None` once the lease has ended. Standalone
    /// brokers get a day at a time (their lease never ends).
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.until_ms.load(Ordering::Acquire);
        let now = mono_ms();
        (now < until).then(|| Duration::from_millis((until - now).min(86_400_000)))
    }

    /// Allows writes until `started + length`, where `started` is when the ZooKeeper request
    /// that proved the session alive was sent.
    pub fn renew(&self, started: Instant, length: Duration) {
        let until = mono_ms_of(started).saturating_add(length.as_millis() as u64);
        self.until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// Stops writes at once (session expired, shutting down).
    pub fn revoke(&self) {
        self.until_ms.store(0, Ordering::Release);
    }
}

/// A change shards ask the control thread to make in ZooKeeper. Every request is answered
/// exactly once on its `reply` channel.
pub enum ControlRequest {
    /// A change of the topic map computed on shard 0 by an admin handler: topics created
    /// (states empty: the control thread places them with the product rule), deleted, grown
    /// (new partitions placed), or with changed configs. The control thread writes ZooKeeper,
    /// publishes the resulting snapshot to every shard of this broker, waits until they applied
    /// it, then replies. `TOPIC_ALREADY_EXISTS` if another broker created a topic first;
    /// `INVALID_REPLICATION_FACTOR` if fewer brokers are alive than a new topic needs.
    ApplyTopics {
        before: BTreeMap<Arc<str>, Arc<TopicMeta>>,
        after: BTreeMap<Arc<str>, Arc<TopicMeta>>,
        reply: flume::Sender<Result<(), (i16, String)>>,
    },
    /// The leader of a partition asks to change its ISR (shrink a lagging follower, add a
    /// caught-up one). Written with a version check against `zk_version`, and only if this
    /// broker is still the leader in `leader_epoch`. Replies `NONE` when written (the new state
    /// is then published to the shards), or the error (`NOT_LEADER_OR_FOLLOWER` when the
    /// partition moved on, `NOT_CONTROLLER`-style conflicts as `REQUEST_TIMED_OUT` to retry).
    AlterIsr {
        topic: Arc<str>,
        partition: PartitionId,
        leader_epoch: i32,
        zk_version: i32,
        isr: Vec<BrokerId>,
        reply: flume::Sender<i16>,
    },
    /// A block of `count` producer ids never handed out before, cluster-wide. Replies with the
    /// first id of the block.
    ProducerIdBlock {
        count: i64,
        reply: flume::Sender<Result<ProducerId, String>>,
    },
    /// ElectLeaders: preferred-replica election (or unclean, for partitions without a live
    /// leader) for these partitions, or every partition when `None`. Replies with a code per
    /// partition (for `None`, only partitions where an election was needed).
    ElectLeaders {
        unclean: bool,
        partitions: Option<Vec<(Arc<str>, PartitionId)>>,
        reply: flume::Sender<Vec<(Arc<str>, PartitionId, i16)>>,
    },
    /// AlterClientQuotas, validated on the shard: each entity's keys set or removed in its
    /// znode (Kafka's `/config/clients/<id>`, `/config/users/<user>[/clients/<id>]`, JSON
    /// `{"version":1,"config":{..}}`), then the quotas read back from ZooKeeper are installed on
    /// every shard of this broker before the reply.
    AlterClientQuotas {
        changes: Vec<(
            crate::cluster::quota::QuotaEntity,
            Vec<crate::cluster::quota::QuotaOp>,
        )>,
        reply: flume::Sender<Result<(), (i16, String)>>,
    },
}

/// What a shard holds to reach the control thread (cluster mode only).
#[derive(Clone)]
pub struct ControlHandle {
    pub tx: flume::Sender<ControlRequest>,
}
