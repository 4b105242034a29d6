//! What a connection may hold: admission at accept (`max.connections`,
//! `max.connections.per.ip`), the shard's request-byte budget (`queued.max.request.bytes`), and
//! reading one request frame without ever allocating more than has arrived.
//!
//! Lives on: `ConnectionLimiter` is shared by all shards (touched at accept and close only);
//! `RequestBudget`, `BufferPool` and everything else belong to one shard.
//!
//! Reading a frame: the 4-byte size prefix goes into a 4-byte array (an idle connection owns no
//! read buffer), then the frame's bytes are reserved from the shard's budget, waiting while it is
//! used up, and only then is the body read, into a buffer that grows in steps of at most
//! `FRAME_READ_STEP_BYTES` as bytes arrive. The reservation lives until the request is answered.
//! `server::serve_connection` reads and handles requests larger than `BULK_REQUEST_BYTES` in
//! the shard's bulk task queue.

use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_lite::AsyncReadExt;
use shardlog_protocol::frame;

use crate::config::{limits, BrokerConfig};
use crate::rt::{BudgetPermit, ByteBudget, TcpStream};
use crate::shard::Shard;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes refused")]
    FrameTooLarge(i64),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unsupported api {api_key} version {api_version}")]
    Unsupported { api_key: i16, api_version: i16 },
}

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

/// One shard's share of `queued.max.request.bytes`, split in two: frames up to
/// `SMALL_FRAME_BYTES` reserve from `small`, larger ones from `large`. Each budget serves its
/// waiters in order, so with one budget a large frame waiting for memory (or a client that
/// announced 100 MiB and sends a byte a second, holding its reservation) would stop every
/// ordinary request on the shard behind it. With two, ordinary requests only ever wait for
/// other ordinary requests.
pub struct RequestBudget {
    small: ByteBudget,
    large: ByteBudget,
}

impl RequestBudget {
    pub fn new(shard_bytes: usize) -> RequestBudget {
        let small = (shard_bytes * limits::SMALL_FRAME_BUDGET_PERCENT / 100).max(1);
        RequestBudget {
            small: ByteBudget::new(small),
            large: ByteBudget::new(shard_bytes.saturating_sub(small).max(1)),
        }
    }

    fn for_frame(&self, len: usize) -> &ByteBudget {
        if len <= limits::SMALL_FRAME_BYTES {
            &self.small
        } else {
            &self.large
        }
    }

    /// Reserves a frame of `len` bytes (at most the whole of its budget: a frame larger than
    /// that waits until it has the budget to itself).
    async fn reserve(&self, len: usize, shard: &Rc<Shard>) -> Option<Reservation> {
        let metrics = &shard.metrics;
        let budget = self.for_frame(len);
        let permit = match budget.try_reserve(len) {
            Some(p) => p,
            None => {
                metrics.count(&metrics.request_budget_waits, 1);
                budget.reserve(len).await?
            }
        };
        Some(Reservation::new(permit, shard))
    }

    /// Bytes of the budget not reserved now (both parts).
    pub fn available(&self) -> usize {
        self.small.available() + self.large.available()
    }
}

/// A frame's bytes, reserved from the shard's budget until dropped.
pub struct Reservation {
    permit: BudgetPermit,
    shard: Rc<Shard>,
}

impl Reservation {
    fn new(permit: BudgetPermit, shard: &Rc<Shard>) -> Reservation {
        let held = &shard.metrics.request_bytes_held;
        held.set(held.get() + permit.bytes() as u64);
        Reservation {
            permit,
            shard: shard.clone(),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let held = &self.shard.metrics.request_bytes_held;
        held.set(held.get().saturating_sub(self.permit.bytes() as u64));
    }
}

/// Reads a frame's 4-byte size prefix: the frame's length, or `None` on a clean end of stream.
/// Nothing is allocated: an idle connection waits here.
pub async fn read_prefix(stream: &mut TcpStream, max: usize) -> Result<Option<usize>, ConnError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        let n = stream.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()))
            };
        }
        got += n;
    }
    match frame::frame_len(&prefix, max) {
        Ok(Some(len)) => Ok(Some(len)),
        // `frame_len` answers `None` only for fewer than 4 bytes.
        Ok(None) => Err(ConnError::Malformed("short size prefix".into())),
        Err(e) => {
            log::debug!("refusing frame: {e}");
            Err(ConnError::FrameTooLarge(i32::from_be_bytes(prefix) as i64))
        }
    }
}

/// Reserves a frame of `len` bytes from `budget` (waiting while it is used up), then reads its
/// body. The bytes stay reserved while the returned `Reservation` lives.
pub async fn read_body(
    stream: &mut TcpStream,
    len: usize,
    budget: &RequestBudget,
    shard: &Rc<Shard>,
) -> Result<(Bytes, Reservation), ConnError> {
    let Some(reservation) = budget.reserve(len, shard).await else {
        return Err(ConnError::Io(std::io::Error::other(
            "the request budget is closed",
        )));
    };
    let mut body: Vec<u8> = Vec::new();
    while body.len() < len {
        let want = (len - body.len()).min(limits::FRAME_READ_STEP_BYTES);
        if body.capacity() - body.len() < want {
            // Doubling keeps copies amortised; never past the frame's size.
            let target = (body.capacity() * 2).max(body.len() + want).min(len);
            body.reserve_exact(target - body.len());
        }
        let start = body.len();
        body.resize(start + want, 0);
        let n = stream.read(&mut body[start..]).await?;
        body.truncate(start + n);
        if n == 0 {
            return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        // A read that finds its bytes waiting does not yield: let other connections run
        // between steps of a large frame.
        crate::rt::yield_if_needed().await;
    }
    Ok((Bytes::from(body), reservation))
}

/// Response buffers kept for reuse by a shard's connections, so that a connection owns no
/// write buffer between requests: an idle connection costs no buffer at all.
#[derive(Default)]
pub struct BufferPool {
    free: std::cell::RefCell<Vec<BytesMut>>,
}

impl BufferPool {
    pub fn take(&self) -> BytesMut {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(16 * 1024))
    }

    /// Keeps `buf` for the next request unless it grew large or enough are kept.
    pub fn give_back(&self, mut buf: BytesMut) {
        let mut free = self.free.borrow_mut();
        if buf.capacity() <= limits::RESPONSE_BUFFER_KEPT_BYTES
            && free.len() < limits::RESPONSE_BUFFERS_KEPT
        {
            buf.clear();
            free.push(buf);
        }
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
