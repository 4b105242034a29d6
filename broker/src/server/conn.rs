//! What a connection may hold: admission at accept (`max.connections`,
//! `max.connections.per.ip`), the shard's request-byte budget (`queued.max.request.bytes`), and
//! reading one request frame without ever allocating more than has arrived.
//!
//! Lives on: one shard; the broker-wide admission counter is `shard::admission`.
//!
//! Reading a frame: the 4-byte size prefix goes into a 4-byte array (an idle connection owns no
//! read buffer), then the frame's bytes are reserved from the shard's budget, waiting while it is
//! used up, and only then is the body read, into a buffer that grows in steps of at most
//! `FRAME_READ_STEP_BYTES` as bytes arrive. The reservation lives until the request is answered.
//! `server::serve_connection` reads and handles requests larger than `BULK_REQUEST_BYTES` in
//! the shard's bulk task queue.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::AsyncReadExt;
use shardlog_protocol::frame;

use crate::base::limits;
use crate::runtime::rt::{BudgetPermit, ByteBudget, TcpStream};
pub use crate::shard::admission::{ConnectionLimiter, ConnectionSlot, Refused};
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
        crate::runtime::rt::yield_if_needed().await;
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
