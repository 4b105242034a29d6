//! A GET to a broker's HTTP endpoint (`metrics.listen`, default port 9644), for what the Kafka
//! protocol has no request for (the log cleaner's progress). One request per connection,
//! bounded in time and size.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The port of `metrics.listen` when a broker's was not given (`--admin`).
pub const DEFAULT_ADMIN_PORT: u16 = 9644;

/// Largest response read (a topic's partitions as JSON).
const RESPONSE_MAX: u64 = 16 << 20;

/// GETs `path` from `addr` (host:port): `(status, body)`.
pub fn get(addr: &str, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let target = addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{addr}: no address"))
    })?;
    let mut s = TcpStream::connect_timeout(&target, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(RESPONSE_MAX).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
