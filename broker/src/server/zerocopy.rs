//! Writes a response whose record bytes stay in segment files: header bytes through the ring,
//! file ranges with `sendfile(2)` from the page cache straight to the socket.
//!
//! Nothing here waits on the shard's thread:
//! - `sendfile` runs only on pieces that `residency` found in the page cache, so it never
//!   waits for the disk. A cold piece (a consumer far behind) is read through the ring, where
//!   the kernel's io_uring workers wait for the disk, and written from that buffer.
//! - The socket is switched to non-blocking only around `sendfile`, so a full socket buffer
//!   never blocks the shard. When the buffer is full (EAGAIN), a small piece of the range is
//!   read through the ring and written through the ring's write, which completes once the peer
//!   has drained some of the buffer; then `sendfile` resumes.
//!
//! The counters show how many bytes took each path.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use futures_lite::AsyncWriteExt;
use shardlog_protocol::fetch_encode::Chunk;
use shardlog_storage::FileSlice;

use super::residency;
use crate::runtime::rt::{RingFile, TcpStream};
use crate::shard::Counters;

/// Bytes copied through user space each time the socket buffer is full.
const COPY_STEP_BYTES: usize = 64 * 1024;
/// Piece of a range whose page-cache residency is checked at once; also the size of one read
/// of cold data through the ring (so at most this much is buffered per connection).
const RESIDENCY_STEP_BYTES: u64 = 1024 * 1024;
/// Largest single sendfile call.
const SENDFILE_STEP_BYTES: usize = 16 * 1024 * 1024;

fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own for the duration of the call; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let want = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if want != flags {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, want) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends as much of `[pos, pos + len)` as the socket takes without blocking.
/// Returns the bytes sent.
fn sendfile_nonblocking(sock: RawFd, file: RawFd, pos: u64, len: u64) -> io::Result<u64> {
    set_nonblocking(sock, true)?;
    let mut sent = 0u64;
    let result = loop {
        if sent == len {
            break Ok(());
        }
        let mut off = (pos + sent) as libc::off_t;
        let step = ((len - sent) as usize).min(SENDFILE_STEP_BYTES);
        // SAFETY: both descriptors are open for the duration of the call and `off` is a valid
        // local the kernel updates.
        let n = unsafe { libc::sendfile(sock, file, &mut off, step) };
        if n > 0 {
            sent += n as u64;
            continue;
        }
        if n == 0 {
            break Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment shorter than its range",
            ));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => break Ok(()),
            _ => break Err(e),
        }
    };
    set_nonblocking(sock, false)?;
    result.map(|()| sent)
}

/// Sends `[slice.position, + len)`: resident pieces with `sendfile`, cold pieces (not in the
/// page cache) read through the ring, so that no syscall on the shard waits for the disk.
async fn send_range(
    stream: &mut TcpStream,
    slice: &FileSlice,
    len: u64,
    counters: &Counters,
) -> io::Result<()> {
    let sock = stream.as_raw_fd();
    let fd = slice.file.as_raw_fd();
    // Opened at the first piece that needs the ring, closed at the end.
    let mut ring: Option<RingFile> = None;
    let mut done = 0u64;
    let result = async {
        while done < len {
            let pos = slice.position + done;
            let step = (len - done).min(RESIDENCY_STEP_BYTES);
            let (ring_len, cold) = if residency::is_resident(fd, pos, step) {
                let n = sendfile_nonblocking(sock, fd, pos, step)?;
                Counters::add(&counters.fetch_bytes_sendfile, n);
                done += n;
                if n == step {
                    // A socket with room never makes this loop wait: without a yield, one
                    // large response kept the shard for its whole length (tens of ms for
                    // 50 MiB), and every request on it waited.
                    crate::runtime::rt::yield_if_needed().await;
                    continue;
                }
                // Socket buffer full: this write waits (in the ring, not on the thread) until
                // the peer has read some; then sendfile has room again.
                (((len - done) as usize).min(COPY_STEP_BYTES), false)
            } else {
                (step as usize, true)
            };
            if ring.is_none() {
                ring = Some(RingFile::dup(&slice.file)?);
            }
            let reader = ring.as_ref().expect("opened above");
            let buf = reader.read_at(slice.position + done, ring_len).await?;
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment shorter than its range",
                ));
            }
            stream.write_all(&buf).await?;
            let counter = if cold {
                &counters.fetch_bytes_cold
            } else {
                &counters.fetch_bytes_copied
            };
            Counters::add(counter, buf.len() as u64);
            done += buf.len() as u64;
        }
        Ok(())
    }
    .await;
    if let Some(r) = ring {
        r.close().await;
    }
    result
}

/// Writes `chunks` in order; `Chunk::File { token, .. }` refers to `files[token]`.
pub async fn write_chunks(
    stream: &mut TcpStream,
    chunks: &[Chunk],
    files: &[FileSlice],
    counters: &Counters,
) -> io::Result<()> {
    for c in chunks {
        match c {
            Chunk::Bytes(b) => stream.write_all(b).await?,
            Chunk::File { token, len } => {
                let slice = files
                    .get(*token)
                    .ok_or_else(|| io::Error::other("fetch response names a missing file range"))?;
                send_range(stream, slice, *len as u64, counters).await?;
            }
        }
    }
    stream.flush().await
}
