//! Requests from this broker to another one, on the shard runtime: one TCP connection, one
//! request at a time, a bounded answer, given up at a timeout or at shutdown. The replica
//! fetcher keeps a connection per leader; a transaction coordinator sends WriteTxnMarkers to
//! a partition's leader over a connection of its own (`call_once`).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::protocol::{Request, StrBytes};
use shardlog_protocol::request;

use crate::cluster::metadata::BrokerInfo;
use crate::runtime::rt::TcpStream;
use crate::shard::Shard;

/// Largest response accepted from another broker (a follower's Fetch asks for less).
const RESPONSE_BYTES_MAX: usize = 128 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("shutting down")]
    Shutdown,
}

/// One connection to another broker, used for one request at a time.
pub struct BrokerConnection {
    stream: TcpStream,
    correlation_id: i32,
    buf: BytesMut,
}

impl BrokerConnection {
    pub async fn connect(broker: &BrokerInfo, timeout: Duration) -> Result<Self, CallError> {
        let stream = crate::runtime::rt::connect(&broker.host, broker.port, timeout).await?;
        Ok(BrokerConnection {
            stream,
            correlation_id: 0,
            buf: BytesMut::new(),
        })
    }

    /// Sends `req` and reads its answer; fails after `timeout` or when the shard shuts down.
    pub async fn call<R: Request>(
        &mut self,
        shard: &Shard,
        req: &R,
        version: i16,
        timeout: Duration,
        client_id: &'static str,
    ) -> Result<R::Response, CallError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let frame = request::encode_request(
            req,
            version,
            self.correlation_id,
            Some(StrBytes::from_static_str(client_id)),
        )
        .map_err(CallError::Protocol)?;
        let io = async {
            self.stream.write_all(&frame).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = i32::from_be_bytes(len);
            if len < 0 || len as usize > RESPONSE_BYTES_MAX {
                return Err(CallError::Protocol(format!(
                    "response of {len} bytes refused"
                )));
            }
            self.buf.clear();
            self.buf.resize(len as usize, 0);
            self.stream.read_exact(&mut self.buf[..]).await?;
            Ok(self.buf.split().freeze())
        };
        let body: Bytes = futures_lite::future::or(io, async {
            futures_lite::future::or(
                async {
                    crate::runtime::rt::sleep(timeout).await;
                    Err(CallError::Io(std::io::ErrorKind::TimedOut.into()))
                },
                async {
                    let _ = shard.shutdown.recv_async().await;
                    Err(CallError::Shutdown)
                },
            )
            .await
        })
        .await?;
        request::decode_response::<R>(body, version).map_err(CallError::Protocol)
    }
}

/// Connects to `broker`, sends one request, reads its answer and closes; `timeout` bounds the
/// connect and the answer each.
pub async fn call_once<R: Request>(
    shard: &Shard,
    broker: &BrokerInfo,
    req: &R,
    version: i16,
    timeout: Duration,
    client_id: &'static str,
) -> Result<R::Response, CallError> {
    let mut conn = BrokerConnection::connect(broker, timeout).await?;
    conn.call(shard, req, version, timeout, client_id).await
}
