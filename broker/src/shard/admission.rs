//! Admission at accept (`max.connections`, `max.connections.per.ip` and its overrides): one
//! counter for the whole broker, shared by every shard, touched once at accept and once at close.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::BrokerConfig;

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    MaxConnections,
    MaxConnectionsPerIp,
}

/// Open connections of the whole broker, against `max.connections` and the per-address
/// limits. Shared by every shard: it is touched once at accept and once at close (a relaxed
/// atomic for the total, a mutex over the per-address counts only when a per-address limit is
/// configured), never per request.
pub struct ConnectionLimiter {
    max: usize,
    open: AtomicUsize,
    /// `None` when no per-address limit is set (Kafka's default): nothing to count.
    per_ip: Option<Mutex<HashMap<IpAddr, usize>>>,
    per_ip_max: usize,
    overrides: std::collections::BTreeMap<IpAddr, usize>,
}

/// One admitted connection; gives its place back when dropped.
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    ip: Option<IpAddr>,
}

impl ConnectionLimiter {
    pub fn new(config: &BrokerConfig) -> ConnectionLimiter {
        let per_ip_limited = config.max_connections_per_ip < i32::MAX as usize
            || !config.max_connections_per_ip_overrides.is_empty();
        ConnectionLimiter {
            max: config.max_connections,
            open: AtomicUsize::new(0),
            per_ip: per_ip_limited.then(|| Mutex::new(HashMap::new())),
            per_ip_max: config.max_connections_per_ip,
            overrides: config.max_connections_per_ip_overrides.clone(),
        }
    }

    /// Admits a connection from `ip`, or says which limit it is over.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnectionSlot, Refused> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::MaxConnections);
        }
        let mut slot = ConnectionSlot {
            limiter: self.clone(),
            ip: None,
        };
        if let (Some(per_ip), Some(ip)) = (&self.per_ip, ip) {
            let limit = self.overrides.get(&ip).copied().unwrap_or(self.per_ip_max);
            // A poisoned lock only means another shard panicked, which aborts the process.
            let mut counts = per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = counts.entry(ip).or_insert(0);
            if *n >= limit {
                if *n == 0 {
                    counts.remove(&ip);
                }
                return Err(Refused::MaxConnectionsPerIp);
            }
            *n += 1;
            slot.ip = Some(ip);
        }
        Ok(slot)
    }

    /// Connections open now (all shards).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let (Some(per_ip), Some(ip)) = (&self.limiter.per_ip, self.ip) {
            let mut counts = per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&ip);
                }
            }
        }
        self.limiter.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max: usize, per_ip: usize) -> BrokerConfig {
        BrokerConfig {
            max_connections: max,
            max_connections_per_ip: per_ip,
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn total_limit_refuses_and_slots_give_back() {
        let l = Arc::new(ConnectionLimiter::new(&config(2, i32::MAX as usize)));
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        let a = l.admit(ip).unwrap();
        let _b = l.admit(ip).unwrap();
        assert_eq!(l.admit(ip).err(), Some(Refused::MaxConnections));
        assert_eq!(l.open(), 2);
        drop(a);
        assert!(l.admit(ip).is_ok());
    }

    #[test]
    fn per_ip_limit_and_overrides() {
        let mut c = config(100, 1);
        let special = IpAddr::from([10, 0, 0, 9]);
        c.max_connections_per_ip_overrides.insert(special, 3);
        let l = Arc::new(ConnectionLimiter::new(&c));
        let one = Some(IpAddr::from([10, 0, 0, 1]));
        let a = l.admit(one).unwrap();
        assert_eq!(l.admit(one).err(), Some(Refused::MaxConnectionsPerIp));
        // The refused attempt gave its place in the total back.
        assert_eq!(l.open(), 1);
        let held: Vec<_> = (0..3).map(|_| l.admit(Some(special)).unwrap()).collect();
        assert_eq!(
            l.admit(Some(special)).err(),
            Some(Refused::MaxConnectionsPerIp)
        );
        drop(a);
        assert!(l.admit(one).is_ok());
        drop(held);
        assert_eq!(l.open(), 0);
    }
}
