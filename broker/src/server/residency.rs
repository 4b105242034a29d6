//! Whether a file range is in the page cache, learned without blocking and without reading it.
//!
//! `cachestat(2)` (Linux 6.5) counts the cached pages of a range by walking the page cache; it
//! never starts I/O. Where it is missing (older kernels, seccomp filters that do not know it),
//! `mincore(2)` on a fresh `PROT_READ` mapping of the range answers the same question: mapping
//! a file faults nothing in, and `mincore` reports page-cache residency of a shared file mapping.
//! Both answers can be stale a moment later (the kernel may evict); a range that became cold
//! in between costs one blocking `sendfile` of at most `RESIDENCY_STEP_BYTES`, as before.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, Ordering};

/// `cachestat` is syscall 451 on every architecture (numbers above 424 are shared).
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

const UNKNOWN: u8 = 0;
const CACHESTAT: u8 = 1;
const MINCORE: u8 = 2;

/// Which of the two calls this kernel answers (probed at the first use).
static METHOD: AtomicU8 = AtomicU8::new(UNKNOWN);

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Pages that `[pos, pos + len)` touches.
fn pages_of(pos: u64, len: u64, page: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    (pos + len - 1) / page - pos / page + 1
}

/// `Some(cached pages)`, or `None` when the call is not available here.
fn cachestat(fd: RawFd, pos: u64, len: u64) -> Option<u64> {
    let range = CachestatRange { off: pos, len };
    let mut stat = Cachestat::default();
    // SAFETY: both pointers are to live, properly laid out locals for the whole call.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd as libc::c_uint,
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    if r == 0 {
        Some(stat.nr_cache)
    } else {
        None
    }
}

/// `Some(cached pages)` by mapping the range and asking `mincore`; `None` if it cannot map.
fn mincore(fd: RawFd, pos: u64, len: u64) -> Option<u64> {
    let page = page_size();
    let start = pos / page * page;
    let map_len = (pos + len - start) as usize;
    // SAFETY: a fresh read-only shared mapping of our own descriptor; it is only inspected with
    // mincore (never dereferenced) and unmapped before returning.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            start as libc::off_t,
        );
        if addr == libc::MAP_FAILED {
            return None;
        }
        let mut vec = vec![0u8; map_len.div_ceil(page as usize)];
        let r = libc::mincore(addr, map_len, vec.as_mut_ptr());
        libc::munmap(addr, map_len);
        if r != 0 {
            return None;
        }
        Some(vec.iter().filter(|v| **v & 1 == 1).count() as u64)
    }
}

/// True when every page of `[pos, pos + len)` of `fd` is in the page cache, so that reading it
/// (or `sendfile` from it) does not wait for the disk. False when unsure.
pub fn is_resident(fd: RawFd, pos: u64, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let want = pages_of(pos, len, page_size());
    let method = METHOD.load(Ordering::Relaxed);
    if method != MINCORE {
        match cachestat(fd, pos, len) {
            Some(n) => {
                METHOD.store(CACHESTAT, Ordering::Relaxed);
                return n >= want;
            }
            None => {
                let e = std::io::Error::last_os_error().raw_os_error();
                if method == UNKNOWN && matches!(e, Some(libc::ENOSYS) | Some(libc::EPERM)) {
                    METHOD.store(MINCORE, Ordering::Relaxed);
                } else {
                    return false;
                }
            }
        }
    }
    mincore(fd, pos, len).is_some_and(|n| n >= want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn pages_of_counts_touched_pages() {
        assert_eq!(pages_of(0, 0, 4096), 0);
        assert_eq!(pages_of(0, 1, 4096), 1);
        assert_eq!(pages_of(0, 4096, 4096), 1);
        assert_eq!(pages_of(4095, 2, 4096), 2);
        assert_eq!(pages_of(100, 8192, 4096), 3);
    }

    fn written_file(name: &str, len: usize) -> std::fs::File {
        let dir = std::env::temp_dir().join(format!("residency-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; len]).unwrap();
        drop(f);
        let f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    /// Just-written pages are in the page cache; both methods must say so.
    #[test]
    fn written_pages_are_resident_by_both_methods() {
        let f = written_file("resident", 256 * 1024);
        let fd = f.as_raw_fd();
        let want = pages_of(0, 256 * 1024, page_size());
        assert_eq!(mincore(fd, 0, 256 * 1024), Some(want));
        if let Some(n) = cachestat(fd, 0, 256 * 1024) {
            assert_eq!(n, want);
        }
        assert!(is_resident(fd, 4000, 100_000));
    }

    /// Pages dropped with POSIX_FADV_DONTNEED (clean, so the kernel drops them) are not.
    #[test]
    fn dropped_pages_are_not_resident() {
        let f = written_file("dropped", 256 * 1024);
        let fd = f.as_raw_fd();
        f.sync_all().unwrap();
        // SAFETY: advice on our own descriptor.
        unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert!(!is_resident(fd, 0, 256 * 1024));
        assert_eq!(mincore(fd, 0, 256 * 1024), Some(0));
    }

    #[test]
    fn a_range_past_the_end_is_not_resident() {
        let f = written_file("short", 4096);
        assert!(!is_resident(f.as_raw_fd(), 1 << 20, 4096));
    }
}
