//! The properties every seed checks.
//!
//! While it runs (the first failure ends the run):
//! - **No acknowledged record lost**: a record acknowledged at an offset is what every broker
//!   holds there below its high watermark, and no broker ever truncates it.
//! - **Acknowledged means on `min.insync.replicas` replicas** when it is acknowledged (a
//!   broker that lost power and has not registered again counts: it may have had the record
//!   when the leader counted it, and the controller takes it out of the ISR when it returns).
//! - **One leader per epoch** for each partition.
//! - **High watermarks never go back** on any broker (leader or follower).
//! - **Leader epochs never go back** on any broker.
//! - **Every produce is answered in bounded time** once a broker has it
//!   (`timing::PRODUCE_ANSWER_BOUND`, well under the request timeout): a leader cut off from
//!   ZooKeeper must give up the writes it holds when its lease ends.
//!
//! At the end, after the network healed, every broker ran and the load stopped:
//! - every partition has a leader and **a full ISR**;
//! - **replicas converge**: every replica's log is the leader's, and it holds every
//!   acknowledged record;
//! - nothing is left waiting;
//! - **the cluster is quiet**: followers' requests stay at long-polling rates.

use std::collections::{BTreeMap, BTreeSet};

use crate::{timing, Time, World};

pub(crate) struct State {
    /// (partition, epoch) -> the broker that became leader in it.
    leaders: BTreeMap<(usize, i32), i32>,
    /// Per partition: offset -> record id, for every record a leader acknowledged.
    committed: Vec<BTreeMap<i64, u64>>,
    pub(crate) idle_from: Option<Time>,
    /// Broker-to-broker and broker-to-ZooKeeper requests since the cluster went idle (after a
    /// grace period), heartbeats aside.
    idle_requests: u64,
}

/// How long after the load stops the cluster may take to go quiet.
const QUIET_GRACE: Time = 10_000;
/// Requests per second per follower replica when idle: long polling gives 2.
const QUIET_RATE: u64 = 3;

impl State {
    pub(crate) fn new(partitions: usize) -> State {
        State {
            leaders: BTreeMap::new(),
            committed: vec![BTreeMap::new(); partitions],
            idle_from: None,
            idle_requests: 0,
        }
    }

    pub(crate) fn count_request(&mut self, now: Time) {
        if self.idle_from.is_some_and(|t| now >= t + QUIET_GRACE) {
            self.idle_requests += 1;
        }
    }
}

impl World {
    pub(crate) fn check_one_leader_per_epoch(&mut self, part: usize, epoch: i32, id: i32) {
        if let Some(&other) = self.checks.leaders.get(&(part, epoch)) {
            if other != id {
                self.fail(format!(
                    "p{part}: two leaders in epoch {epoch}: broker {other} and broker {id}"
                ));
            }
            return;
        }
        self.checks.leaders.insert((part, epoch), id);
    }

    pub(crate) fn record_commit(&mut self, part: usize, offset: i64, id: u64) {
        match self.checks.committed[part].insert(offset, id) {
            Some(other) if other != id => self.fail(format!(
                "p{part}: offset {offset} acknowledged for record {other} and later for record \
                 {id}: the first is lost"
            )),
            _ => {}
        }
        // A broker down after a power loss may have had it when the leader counted it.
        let copies = self
            .brokers
            .values()
            .filter(|b| b.log(part).get(offset as usize).map(|x| x.id) == Some(id) || b.lost_power)
            .count();
        if copies < timing::MIN_INSYNC {
            return self.fail(format!(
                "p{part}: record {id} at {offset} acknowledged with {copies} copies \
                 (min.insync.replicas {})",
                timing::MIN_INSYNC
            ));
        }
        for (&b, broker) in &self.brokers {
            let log = broker.log(part);
            if offset < broker.hw(part) && log.get(offset as usize).map(|x| x.id) != Some(id) {
                let have = log.get(offset as usize).map(|x| x.id);
                self.fail(format!(
                    "p{part}: record {id} acknowledged at {offset}, but broker {b} has {have:?} \
                     there below its high watermark"
                ));
                return;
            }
        }
    }

    /// Every broker's records below its high watermark agree with what was acknowledged.
    pub(crate) fn check_committed(&mut self, id: i32, part: usize) {
        let broker = &self.brokers[&id];
        let (log, hw) = (broker.log(part), broker.hw(part));
        let bad = self.checks.committed[part]
            .range(..hw)
            .find(|(o, rec)| log.get(**o as usize).map(|b| b.id) != Some(**rec))
            .map(|(o, rec)| (*o, *rec));
        if let Some((o, rec)) = bad {
            self.fail(format!(
                "broker {id} p{part}: high watermark {hw} covers offset {o}, which holds {:?}, \
                 not the acknowledged record {rec}",
                log.get(o as usize).map(|b| b.id)
            ));
        }
    }

    pub(crate) fn check_truncation(&mut self, id: i32, part: usize, cut: &[crate::Batch]) {
        let lost = cut
            .iter()
            .find(|b| self.checks.committed[part].get(&b.offset) == Some(&b.id));
        if let Some(b) = lost {
            let (o, rec) = (b.offset, b.id);
            self.fail(format!(
                "broker {id} p{part}: truncated the acknowledged record {rec} at offset {o}"
            ));
        }
    }

    pub(crate) fn final_checks(&mut self) {
        let now = self.now;
        let partitions = self.zk.states.len();
        for part in 0..partitions {
            let state = self.zk.states[part].clone();
            let replicas: BTreeSet<_> = state.replicas.iter().copied().collect();
            let isr: BTreeSet<_> = state.isr.iter().copied().collect();
            if state.leader.0 < 0 {
                return self.fail(format!("p{part}: no leader after healing ({state:?})"));
            }
            if isr != replicas {
                return self.fail(format!(
                    "p{part}: ISR {:?} not full (replicas {:?}) {} s after healing",
                    state.isr,
                    state.replicas,
                    (now - self.opts.fault_ms) / 1000
                ));
            }
            let leader = &self.brokers[&state.leader.0];
            if !leader.leader_of(part) {
                return self.fail(format!(
                    "p{part}: broker {} is the leader in ZooKeeper but does not lead",
                    state.leader
                ));
            }
            let log = leader.log(part).to_vec();
            for (&o, &rec) in &self.checks.committed[part] {
                if log.get(o as usize).map(|b| b.id) != Some(rec) {
                    return self.fail(format!(
                        "p{part}: acknowledged record {rec} at offset {o} is not in the \
                         leader's log"
                    ));
                }
            }
            for (&b, broker) in &self.brokers {
                if broker.log(part) != log.as_slice() {
                    return self.fail(format!(
                        "p{part}: broker {b}'s log ({} batches) differs from the leader {}'s ({})",
                        broker.log(part).len(),
                        state.leader,
                        log.len()
                    ));
                }
            }
        }
        if let Some(id) = self
            .brokers
            .values()
            .find(|b| b.holds_waiters())
            .map(|b| b.id)
        {
            return self.fail(format!(
                "broker {id} still holds produce requests when idle"
            ));
        }
        if let Some(from) = self.checks.idle_from {
            let seconds = (now.saturating_sub(from + QUIET_GRACE) / 1000).max(1);
            let limit = seconds * partitions as u64 * 2 * QUIET_RATE;
            let sent = self.checks.idle_requests;
            if sent > limit {
                self.fail(format!(
                    "not quiet when idle: {sent} replica requests in {seconds} s (limit {limit})"
                ));
            }
        }
    }
}
