//! What the data directory's filesystem can do for the write path, probed once at start.
//!
//! io_uring completes a buffered write in its submission only when the filesystem can do it
//! without blocking (`IOCB_NOWAIT`); otherwise it hands the write to an io-wq worker thread,
//! which runs on the submitting shard's core and waits for CPU there. XFS has non-blocking
//! buffered writes (into blocks already allocated, hence `LogConfig::preallocate_bytes`);
//! ext4 has none, so every append there takes the worker path.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

const PROBE_FILE: &str = ".shardlog-write-probe";

/// Whether a buffered write into reserved space of a file under `dir` can complete without
/// blocking (`pwritev2` with `RWF_NOWAIT` succeeds or asks to retry, rather than answering
/// `EOPNOTSUPP`). Creates and removes a small file.
pub fn nonblocking_buffered_writes(dir: &Path) -> io::Result<bool> {
    let path = dir.join(PROBE_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let result = probe(&file);
    drop(file);
    let _ = std::fs::remove_file(&path);
    result
}

fn probe(file: &std::fs::File) -> io::Result<bool> {
    const LEN: usize = 4096;
    // SAFETY: fallocate on an open descriptor with constant flags and in-range lengths.
    if unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            0,
            4 * LEN as i64,
        )
    } != 0
    {
        return Ok(false);
    }
    file.write_all_at(&[0u8; LEN], 0)?;
    let buf = [0u8; LEN];
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: LEN,
    };
    // SAFETY: one iovec over a live stack buffer of LEN bytes.
    let n = unsafe { libc::pwritev2(file.as_raw_fd(), &iov, 1, LEN as i64, libc::RWF_NOWAIT) };
    if n >= 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // Supported; this write would have blocked (a page to allocate, a lock held).
        Some(libc::EAGAIN) => Ok(true),
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_answers_and_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("shardlog-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let answer = nonblocking_buffered_writes(&dir).unwrap();
        // tmpfs and XFS have non-blocking buffered writes, ext4 has none: either answer is
        // legitimate, but it must match what statfs says for the two well-known cases.
        let fs = filesystem_magic(&dir);
        if fs == Some(0xEF53) {
            assert!(!answer, "ext4 has no non-blocking buffered writes");
        }
        if fs == Some(0x5846_5342) {
            assert!(answer, "XFS has non-blocking buffered writes");
        }
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn filesystem_magic(dir: &Path) -> Option<i64> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statfs into a zeroed struct with a NUL-terminated path.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
    }
}
