//! Pure controller decisions: where replicas go, who leads after a broker is lost, how the ISR
//! shrinks, and how a stopping broker hands its leaderships over. Plain functions of the
//! current `PartitionState` and the set of live brokers; the control thread carries them out
//! with version-checked ZooKeeper writes.
//!
//! A returned state keeps the input's `zk_version`: it is the version the write must expect.

use std::collections::{BTreeMap, BTreeSet};

use crate::base::errors;
use crate::base::ids::{BrokerId, PartitionId};
use crate::cluster::metadata::{PartitionState, NO_LEADER};

/// Replicas of partitions `first..first + count` over `sorted_brokers` (ascending ids): replica
/// `j` of partition `i` on `sorted_brokers[(i + j) mod n]`, so partition `i` is first led by
/// `sorted_brokers[i mod n]`. The caller checks `replication_factor <= n`.
pub fn place(
    sorted_brokers: &[BrokerId],
    first: PartitionId,
    count: i32,
    replication_factor: usize,
) -> Vec<Vec<BrokerId>> {
    let first = first.0;
    let n = sorted_brokers.len();
    if n == 0 {
        return Vec::new();
    }
    (first..first + count)
        .map(|i| {
            (0..replication_factor.min(n))
                .map(|j| sorted_brokers[(i.max(0) as usize + j) % n])
                .collect()
        })
        .collect()
}

/// A new partition: led by its first replica, every replica in sync, epoch 0.
pub fn initial_state(replicas: &[BrokerId]) -> PartitionState {
    PartitionState {
        replicas: replicas.to_vec(),
        leader: replicas.first().copied().unwrap_or(NO_LEADER),
        leader_epoch: 0,
        isr: replicas.to_vec(),
        zk_version: -1,
    }
}

/// The state for a partition whose state znode is missing (a creation cut short): led by its
/// first live replica with the live replicas in sync, or offline.
pub fn missing_state(replicas: &[BrokerId], alive: &BTreeSet<BrokerId>) -> PartitionState {
    let live: Vec<BrokerId> = replicas
        .iter()
        .copied()
        .filter(|r| alive.contains(r))
        .collect();
    PartitionState {
        replicas: replicas.to_vec(),
        leader: live.first().copied().unwrap_or(NO_LEADER),
        leader_epoch: 0,
        isr: if live.is_empty() {
            replicas.to_vec()
        } else {
            live
        },
        zk_version: -1,
    }
}

/// What the controller changes for one partition given the live brokers, or `None`.
///
/// - Leader dead or none: the first replica, in assignment order, that is alive and in the ISR
///   leads; ISR = ISR ∩ alive; epoch + 1. If no ISR member is alive the partition goes offline
///   (leader `NO_LEADER`, epoch + 1 if it had a leader) and keeps its ISR, so that a returning
///   ISR member is elected; with `unclean` the first live replica leads instead, alone in the ISR.
/// - Leader alive: dead brokers leave the ISR; the epoch stays.
pub fn reconcile(
    state: &PartitionState,
    alive: &BTreeSet<BrokerId>,
    unclean: bool,
) -> Option<PartitionState> {
    let live_isr: Vec<BrokerId> = state
        .isr
        .iter()
        .copied()
        .filter(|b| alive.contains(b))
        .collect();
    if state.leader != NO_LEADER && alive.contains(&state.leader) {
        if live_isr.len() == state.isr.len() {
            return None;
        }
        return Some(PartitionState {
            isr: live_isr,
            ..state.clone()
        });
    }
    let clean = state
        .replicas
        .iter()
        .copied()
        .find(|r| live_isr.contains(r));
    if let Some(leader) = clean {
        return Some(PartitionState {
            leader,
            leader_epoch: state.leader_epoch + 1,
            isr: live_isr,
            ..state.clone()
        });
    }
    if unclean {
        if let Some(leader) = state.replicas.iter().copied().find(|r| alive.contains(r)) {
            return Some(PartitionState {
                leader,
                leader_epoch: state.leader_epoch + 1,
                isr: vec![leader],
                ..state.clone()
            });
        }
    }
    if state.leader == NO_LEADER {
        return None;
    }
    Some(PartitionState {
        leader: NO_LEADER,
        leader_epoch: state.leader_epoch + 1,
        ..state.clone()
    })
}

/// The brokers named in `state` (leader or ISR) that registered after the state was written
/// (`written_zxid`, the state znode's mzxid, against each registration znode's czxid): they
/// restarted, or lost their session, since the state was decided, and may have lost what their
/// page cache held (a power loss). Kafka tells this from broker epochs (KIP-380).
pub fn restarted_since(
    state: &PartitionState,
    written_zxid: i64,
    registrations: &BTreeMap<BrokerId, i64>,
) -> BTreeSet<BrokerId> {
    state
        .isr
        .iter()
        .chain(std::iter::once(&state.leader))
        .filter(|b| {
            registrations
                .get(b)
                .is_some_and(|czxid| *czxid > written_zxid)
        })
        .copied()
        .collect()
}

/// Whether a broker registered at `own_registration_zxid` may lead by a state written at
/// `written_zxid`: only if the state was written after it registered, so that the controller
/// has seen this registration (a restart moves the leadership first, `reconcile_with_restarts`).
/// A broker back from a power loss must not lead by the state it left: its followers would
/// cut the acknowledged records it lost.
pub fn may_lead_by(written_zxid: i64, own_registration_zxid: Option<i64>) -> bool {
    own_registration_zxid.is_some_and(|own| written_zxid > own)
}

/// A state the controller is about to write (`next`, replacing `current`), settled for the
/// brokers that `restarted` since `current` was written (`restarted_since`): they leave the
/// ISR (if nothing would be left, the members of the current ISR that did not restart, alive
/// or not, are the ISR: better offline until one returns than led by a broker that may have
/// lost records; only when every member restarted do they stay) and a leadership one would
/// hold ends (new epoch), then the usual election among the rest (`reconcile`). Left in the ISR, a restarted broker that
/// lost records in a power loss could be elected without them; left leading, it would make its
/// followers cut them. Every controller write goes through this, so that no write (a
/// controlled shutdown's, a preferred election's) makes a restart look older than the state
/// while keeping the restarted broker in. The simulator found this.
pub fn settle_restarts(
    current: &PartitionState,
    next: PartitionState,
    restarted: &BTreeSet<BrokerId>,
    alive: &BTreeSet<BrokerId>,
    unclean: bool,
) -> PartitionState {
    if restarted.is_empty() {
        return next;
    }
    let mut s = next;
    let without = |isr: &[BrokerId]| -> Vec<BrokerId> {
        isr.iter()
            .copied()
            .filter(|b| !restarted.contains(b))
            .collect()
    };
    let kept = without(&s.isr);
    let kept = if kept.is_empty() {
        without(&current.isr)
    } else {
        kept
    };
    if !kept.is_empty() {
        s.isr = kept;
    }
    if restarted.contains(&s.leader) || (s.leader != NO_LEADER && !s.isr.contains(&s.leader)) {
        s.leader = NO_LEADER;
        s.leader_epoch = s.leader_epoch.max(current.leader_epoch) + 1;
    }
    reconcile(&s, alive, unclean).unwrap_or(s)
}

/// The controller's change for a partition after brokers came or went: `reconcile`, or the
/// state as it is when only restarts need settling (`settle_restarts` then does the work).
pub fn reconcile_or_settle(
    state: &PartitionState,
    alive: &BTreeSet<BrokerId>,
    restarted: &BTreeSet<BrokerId>,
    unclean: bool,
) -> Option<PartitionState> {
    reconcile(state, alive, unclean).or_else(|| (!restarted.is_empty()).then(|| state.clone()))
}

/// Controlled shutdown of `leaving`: a leadership it holds moves to the first other replica that
/// is alive and in the ISR (epoch + 1, ISR without `leaving`); where it follows in the ISR it
/// leaves the ISR. `None` when nothing can or needs to change (it leads with no other ISR
/// member alive, or it is not in the ISR).
pub fn shutdown_move(
    state: &PartitionState,
    leaving: BrokerId,
    alive: &BTreeSet<BrokerId>,
) -> Option<PartitionState> {
    let isr_without: Vec<BrokerId> = state
        .isr
        .iter()
        .copied()
        .filter(|&b| b != leaving)
        .collect();
    if state.leader == leaving {
        let successor = state
            .replicas
            .iter()
            .copied()
            .find(|&r| r != leaving && alive.contains(&r) && isr_without.contains(&r))?;
        return Some(PartitionState {
            leader: successor,
            leader_epoch: state.leader_epoch + 1,
            isr: isr_without,
            ..state.clone()
        });
    }
    if state.isr.contains(&leaving) && !isr_without.is_empty() {
        return Some(PartitionState {
            isr: isr_without,
            ..state.clone()
        });
    }
    None
}

/// Preferred leader election: the partition's first replica takes over (epoch + 1, ISR
/// unchanged) if it is alive and in the ISR. It holds everything committed, so nothing
/// acknowledged with acks=all is lost; the old leader becomes a follower and truncates what
/// was never committed. `Err` is the ElectLeaders error code: `ELECTION_NOT_NEEDED` when it
/// already leads, `PREFERRED_LEADER_NOT_AVAILABLE` when it is dead or out of sync.
pub fn preferred(
    state: &PartitionState,
    alive: &BTreeSet<BrokerId>,
) -> Result<PartitionState, i16> {
    let Some(&preferred) = state.replicas.first() else {
        return Err(errors::PREFERRED_LEADER_NOT_AVAILABLE);
    };
    if state.leader == preferred {
        return Err(errors::ELECTION_NOT_NEEDED);
    }
    if !alive.contains(&preferred) || !state.isr.contains(&preferred) {
        return Err(errors::PREFERRED_LEADER_NOT_AVAILABLE);
    }
    Ok(PartitionState {
        leader: preferred,
        leader_epoch: state.leader_epoch + 1,
        ..state.clone()
    })
}

/// Unclean election asked for by an operator: only for a partition without a live leader;
/// like `reconcile` with unclean election allowed (a live ISR member first, else any live
/// replica). `ELECTION_NOT_NEEDED` when a live leader exists, `ELIGIBLE_LEADERS_NOT_AVAILABLE`
/// when no replica is alive.
pub fn unclean(state: &PartitionState, alive: &BTreeSet<BrokerId>) -> Result<PartitionState, i16> {
    if state.leader != NO_LEADER && alive.contains(&state.leader) {
        return Err(errors::ELECTION_NOT_NEEDED);
    }
    match reconcile(state, alive, true) {
        Some(next) if next.leader != NO_LEADER => Ok(next),
        _ => Err(errors::ELIGIBLE_LEADERS_NOT_AVAILABLE),
    }
}

/// Automatic leader rebalance (Kafka's `auto.leader.rebalance.enable`): for every broker whose
/// share of preferred partitions led elsewhere is above `percentage`, the elections that give
/// those partitions back (where `preferred` allows it). Input and output are keyed by `K`
/// (topic and partition).
pub fn rebalance<K: Clone + Ord>(
    partitions: &[(K, PartitionState)],
    alive: &BTreeSet<BrokerId>,
    percentage: u32,
) -> Vec<(K, PartitionState)> {
    // preferred broker -> (partitions it prefers, those led elsewhere)
    let mut per_broker: BTreeMap<BrokerId, (u64, Vec<usize>)> = BTreeMap::new();
    for (i, (_, s)) in partitions.iter().enumerate() {
        let Some(&preferred) = s.replicas.first() else {
            continue;
        };
        let e = per_broker.entry(preferred).or_default();
        e.0 += 1;
        if s.leader != preferred {
            e.1.push(i);
        }
    }
    let mut moves = Vec::new();
    for (total, elsewhere) in per_broker.values() {
        if elsewhere.is_empty() || elsewhere.len() as u64 * 100 <= *total * percentage as u64 {
            continue;
        }
        for &i in elsewhere {
            let (k, s) = &partitions[i];
            if let Ok(next) = preferred(s, alive) {
                moves.push((k.clone(), next));
            }
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(ids: &[i32]) -> BTreeSet<BrokerId> {
        ids.iter().copied().map(BrokerId).collect()
    }

    fn ids(ids: &[i32]) -> Vec<BrokerId> {
        BrokerId::list(ids)
    }

    fn raw(ids: &[BrokerId]) -> Vec<i32> {
        BrokerId::raw_list(ids)
    }

    fn state(replicas: &[i32], leader: i32, epoch: i32, isr: &[i32]) -> PartitionState {
        PartitionState {
            replicas: ids(replicas),
            leader: BrokerId(leader),
            leader_epoch: epoch,
            isr: ids(isr),
            zk_version: 5,
        }
    }

    #[test]
    fn a_restarted_broker_leaves_the_isr_and_its_leaderships() {
        let settle = |s: &PartitionState, alive_ids: &[i32], restarted: &[i32]| {
            let restarted = alive(restarted);
            let next = reconcile_or_settle(s, &alive(alive_ids), &restarted, false)?;
            Some(settle_restarts(
                s,
                next,
                &restarted,
                &alive(alive_ids),
                false,
            ))
        };
        let s = state(&[1, 2, 3], 1, 4, &[1, 2, 3]);
        // Broker 1 restarted (its registration is new) and is alive again: broker 2 leads
        // (the epoch moves past the ended leadership and the election: two steps).
        let next = settle(&s, &[1, 2, 3], &[1]).unwrap();
        assert_eq!((next.leader.0, next.leader_epoch), (2, 6));
        assert_eq!(raw(&next.isr), vec![2, 3]);
        // A restarted follower leaves the ISR; the epoch stays.
        let next = settle(&s, &[1, 2, 3], &[3]).unwrap();
        assert_eq!(
            (next.leader.0, next.leader_epoch, raw(&next.isr)),
            (1, 4, vec![1, 2])
        );
        // The only ISR member restarted: it leads again (nobody else can), in a new epoch.
        let alone = state(&[1, 2, 3], 1, 4, &[1]);
        let next = settle(&alone, &[1, 2, 3], &[1]).unwrap();
        assert_eq!(
            (next.leader.0, next.leader_epoch, raw(&next.isr)),
            (1, 6, vec![1])
        );
        // The leader is dead and the only other ISR member restarted: offline, waiting for
        // the leader, rather than electing a broker that may have lost records.
        let two = state(&[1, 2, 3], 1, 4, &[1, 3]);
        let next = settle(&two, &[2, 3], &[3]).unwrap();
        assert_eq!(
            (next.leader.0, next.leader_epoch, raw(&next.isr)),
            (NO_LEADER.0, 6, vec![1])
        );
        // Another decision (a controlled shutdown handing the leadership to a restarted
        // broker) is settled too.
        let moved = shutdown_move(&s, BrokerId(1), &alive(&[1, 2, 3])).unwrap();
        assert_eq!(moved.leader.0, 2);
        let next = settle_restarts(&s, moved, &alive(&[2]), &alive(&[1, 2, 3]), false);
        assert_eq!((next.leader.0, raw(&next.isr)), (3, vec![3]));
        // Who restarted since a state was written (registration zxids against the state's).
        let regs: BTreeMap<BrokerId, i64> = [(1, 50), (2, 10), (3, 70)]
            .into_iter()
            .map(|(b, z)| (BrokerId(b), z))
            .collect();
        assert_eq!(restarted_since(&s, 60, &regs), alive(&[3]));
        assert_eq!(restarted_since(&s, 40, &regs), alive(&[1, 3]));
        assert_eq!(restarted_since(&s, 80, &regs), alive(&[]));
        assert!(may_lead_by(80, Some(50)));
        assert!(!may_lead_by(40, Some(50)));
        assert!(!may_lead_by(80, None));
        // No restart: plain reconcile.
        assert_eq!(settle(&s, &[1, 2, 3], &[]), None);
    }

    #[test]
    fn placement_three_brokers_six_partitions() {
        let place = |brokers: &[i32], first, count, rf| -> Vec<Vec<i32>> {
            place(&ids(brokers), PartitionId(first), count, rf)
                .iter()
                .map(|r| raw(r))
                .collect()
        };
        let p = place(&[1, 2, 3], 0, 6, 3);
        assert_eq!(
            p,
            vec![
                vec![1, 2, 3],
                vec![2, 3, 1],
                vec![3, 1, 2],
                vec![1, 2, 3],
                vec![2, 3, 1],
                vec![3, 1, 2],
            ]
        );
        // Grown partitions continue the rule from their own index.
        assert_eq!(place(&[1, 2, 3], 6, 2, 2), vec![vec![1, 2], vec![2, 3]]);
        assert_eq!(place(&[4, 9], 0, 3, 1), vec![vec![4], vec![9], vec![4]]);
        assert!(place(&[], 0, 3, 1).is_empty());
    }

    #[test]
    fn initial_state_leads_on_first_replica() {
        let s = initial_state(&ids(&[2, 3, 1]));
        assert_eq!(
            (s.leader.0, s.leader_epoch, raw(&s.isr)),
            (2, 0, vec![2, 3, 1])
        );
    }

    #[test]
    fn healthy_partition_unchanged() {
        let s = state(&[1, 2, 3], 1, 3, &[1, 2, 3]);
        assert_eq!(reconcile(&s, &alive(&[1, 2, 3]), false), None);
    }

    #[test]
    fn dead_leader_replaced_from_isr_only() {
        // Replica 2 is alive but out of the ISR: it must not lead; 3 is next in the ISR.
        let s = state(&[1, 2, 3], 1, 3, &[1, 3]);
        let n = reconcile(&s, &alive(&[2, 3]), false).unwrap();
        assert_eq!((n.leader.0, n.leader_epoch, raw(&n.isr)), (3, 4, vec![3]));
        assert_eq!(n.zk_version, 5);
        // Assignment order decides among ISR members, not ISR order.
        let s = state(&[1, 2, 3], 1, 0, &[1, 3, 2]);
        let n = reconcile(&s, &alive(&[2, 3]), false).unwrap();
        assert_eq!((n.leader.0, raw(&n.isr)), (2, vec![3, 2]));
    }

    #[test]
    fn no_isr_member_alive_goes_offline_and_keeps_isr() {
        let s = state(&[1, 2, 3], 1, 3, &[1]);
        let n = reconcile(&s, &alive(&[2, 3]), false).unwrap();
        assert_eq!(
            (n.leader.0, n.leader_epoch, raw(&n.isr)),
            (NO_LEADER.0, 4, vec![1])
        );
        // Still nobody: no further change.
        assert_eq!(reconcile(&n, &alive(&[2, 3]), false), None);
        // The ISR member returns and is elected.
        let back = reconcile(&n, &alive(&[1, 2, 3]), false).unwrap();
        assert_eq!(
            (back.leader.0, back.leader_epoch, raw(&back.isr)),
            (1, 5, vec![1])
        );
    }

    #[test]
    fn unclean_election_takes_first_live_replica() {
        let s = state(&[1, 2, 3], 1, 3, &[1]);
        let n = reconcile(&s, &alive(&[3, 2]), true).unwrap();
        assert_eq!((n.leader.0, n.leader_epoch, raw(&n.isr)), (2, 4, vec![2]));
        // Nobody alive at all: offline even when unclean.
        let n = reconcile(&s, &alive(&[]), true).unwrap();
        assert_eq!(n.leader, NO_LEADER);
    }

    #[test]
    fn dead_followers_leave_isr_without_epoch_change() {
        let s = state(&[1, 2, 3], 1, 3, &[1, 2, 3]);
        let n = reconcile(&s, &alive(&[1, 3]), false).unwrap();
        assert_eq!(
            (n.leader.0, n.leader_epoch, raw(&n.isr)),
            (1, 3, vec![1, 3])
        );
    }

    #[test]
    fn missing_state_uses_live_replicas() {
        let s = missing_state(&ids(&[1, 2, 3]), &alive(&[2, 3]));
        assert_eq!((s.leader.0, raw(&s.isr)), (2, vec![2, 3]));
        let s = missing_state(&ids(&[1, 2]), &alive(&[]));
        assert_eq!((s.leader.0, raw(&s.isr)), (NO_LEADER.0, vec![1, 2]));
    }

    #[test]
    fn controlled_shutdown_moves_leadership_and_leaves_isr() {
        let all = alive(&[1, 2, 3]);
        // Leader 1 stops: 2 is next in the ISR (assignment order).
        let s = state(&[1, 2, 3], 1, 7, &[1, 3, 2]);
        let n = shutdown_move(&s, BrokerId(1), &all).unwrap();
        assert_eq!(
            (n.leader.0, n.leader_epoch, raw(&n.isr)),
            (2, 8, vec![3, 2])
        );
        // A successor must be in the ISR.
        let s = state(&[1, 2, 3], 1, 7, &[1, 3]);
        assert_eq!(shutdown_move(&s, BrokerId(1), &all).unwrap().leader.0, 3);
        // And alive.
        assert_eq!(shutdown_move(&s, BrokerId(1), &alive(&[1, 2])), None);
        // Follower in the ISR leaves it; epoch unchanged.
        let s = state(&[1, 2, 3], 2, 7, &[2, 1, 3]);
        let n = shutdown_move(&s, BrokerId(1), &all).unwrap();
        assert_eq!(
            (n.leader.0, n.leader_epoch, raw(&n.isr)),
            (2, 7, vec![2, 3])
        );
        // Not in the ISR: nothing to do.
        let s = state(&[1, 2, 3], 2, 7, &[2, 3]);
        assert_eq!(shutdown_move(&s, BrokerId(1), &all), None);
    }

    #[test]
    fn preferred_election_needs_the_first_replica_alive_and_in_sync() {
        let all = alive(&[1, 2, 3]);
        // Failover put 2 in charge; 1 is back in the ISR: it takes over, epoch + 1.
        let s = state(&[1, 2, 3], 2, 4, &[2, 3, 1]);
        let next = preferred(&s, &all).unwrap();
        assert_eq!((next.leader.0, next.leader_epoch), (1, 5));
        assert_eq!(next.isr, s.isr);
        assert_eq!(next.zk_version, s.zk_version);
        // Already the leader.
        assert_eq!(
            preferred(&state(&[1, 2, 3], 1, 4, &[1, 2]), &all),
            Err(errors::ELECTION_NOT_NEEDED)
        );
        // Alive but not caught up, or in the ISR but dead: not eligible.
        assert_eq!(
            preferred(&state(&[1, 2, 3], 2, 4, &[2, 3]), &all),
            Err(errors::PREFERRED_LEADER_NOT_AVAILABLE)
        );
        assert_eq!(
            preferred(&state(&[1, 2, 3], 2, 4, &[2, 3, 1]), &alive(&[2, 3])),
            Err(errors::PREFERRED_LEADER_NOT_AVAILABLE)
        );
    }

    #[test]
    fn unclean_election_only_without_a_live_leader() {
        assert_eq!(
            unclean(&state(&[1, 2, 3], 2, 4, &[2]), &alive(&[1, 2, 3])),
            Err(errors::ELECTION_NOT_NEEDED)
        );
        // Offline with its last ISR member dead: a live out-of-sync replica takes over alone.
        let next = unclean(&state(&[1, 2, 3], NO_LEADER.0, 5, &[2]), &alive(&[3])).unwrap();
        assert_eq!(
            (next.leader.0, next.leader_epoch, raw(&next.isr)),
            (3, 6, vec![3])
        );
        // A live ISR member is still preferred over an out-of-sync one.
        let next = unclean(&state(&[1, 2, 3], 1, 5, &[1, 3]), &alive(&[2, 3])).unwrap();
        assert_eq!(next.leader.0, 3);
        assert_eq!(
            unclean(&state(&[1, 2, 3], NO_LEADER.0, 5, &[2]), &alive(&[])),
            Err(errors::ELIGIBLE_LEADERS_NOT_AVAILABLE)
        );
    }

    #[test]
    fn rebalance_moves_leadership_back_past_the_imbalance_threshold() {
        let all = alive(&[1, 2, 3]);
        // Broker 1 prefers partitions 0 and 3 and leads neither (100 % > 10 %); broker 2
        // prefers 1 and 4 and leads both; broker 3 prefers 2 and 5 and leads 2 only (50 %).
        let parts = vec![
            (0, state(&[1, 2, 3], 2, 1, &[1, 2, 3])),
            (1, state(&[2, 3, 1], 2, 0, &[1, 2, 3])),
            (2, state(&[3, 1, 2], 3, 0, &[1, 2, 3])),
            (3, state(&[1, 2, 3], 2, 1, &[2, 3])),
            (4, state(&[2, 3, 1], 2, 0, &[1, 2, 3])),
            (5, state(&[3, 1, 2], 1, 1, &[1, 2, 3])),
        ];
        let moves = rebalance(&parts, &all, 10);
        let moved: Vec<(i32, i32)> = moves.iter().map(|(k, s)| (*k, s.leader.0)).collect();
        // Partition 3's preferred replica is out of the ISR: it stays where it is.
        assert_eq!(moved, vec![(0, 1), (5, 3)]);
        // With a 50 % threshold broker 3 (exactly 50 %) is left alone.
        let moved: Vec<i32> = rebalance(&parts, &all, 50)
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(moved, vec![0]);
        // Balanced: nothing to do.
        let balanced = vec![(0, state(&[1, 2], 1, 0, &[1, 2]))];
        assert!(rebalance(&balanced, &all, 0).is_empty());
    }
}
