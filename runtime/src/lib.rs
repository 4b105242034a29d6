//! The shard runtime: every glommio call of Shardlog, for the broker and the storage crate, so
//! that a change of runtime stays in this crate (ARCHITECTURE.md, "Layers": no other crate
//! names glommio, a test checks it).
//!
//! Lives on: each shard thread (functions called from inside an executor) and the main thread
//! (`start_shards`).

use std::future::Future;
use std::time::Duration;

pub use glommio::net::{TcpListener, TcpStream};
pub use glommio::sync::{Permit, Semaphore};
pub use glommio::Task;

/// Files and directories on the shard's io_uring ring (what the storage crate opens).
pub mod fs {
    pub use glommio::io::{remove, rename, BufferedFile, Directory, OpenOptions};
}

/// The error of the runtime's file and task operations.
pub type Error = glommio::GlommioError<()>;

/// The operating system's error inside `e`, or `e` itself when it carries none.
pub fn os_error(e: Error) -> Result<std::io::Error, Error> {
    match e {
        glommio::GlommioError::IoError(os)
        | glommio::GlommioError::EnhancedIoError { source: os, .. } => Ok(os),
        other => Err(other),
    }
}

/// An executor started on its own thread by `start_executor`.
pub struct ExecutorThread<T: Send + 'static>(glommio::ExecutorJoinHandle<T>);

impl<T: Send + 'static> ExecutorThread<T> {
    /// Waits for the executor's future to finish and returns its output.
    pub fn join(self) -> std::io::Result<T> {
        self.0.join().map_err(std::io::Error::from)
    }
}

/// Runs `f` on a new single executor on a new, unpinned thread (tools and tests; shards are
/// started by `run_shards`).
pub fn start_executor<T, F, Fut>(f: F) -> std::io::Result<ExecutorThread<T>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(f)
        .map(ExecutorThread)
        .map_err(std::io::Error::from)
}

/// Spawns `future` into the executor's default queue, below request work: background work such
/// as the sync of a rolled segment.
pub fn spawn_background<T: 'static, F: Future<Output = T> + 'static>(future: F) -> Task<T> {
    glommio::spawn_local(future)
}

thread_local! {
    /// Cross-thread receives that the periodic re-check completed (see `recv_cross`).
    static LOST_WAKEUPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };

    /// The shard's task queue for request work. It is `Latency::Matters` because glommio only
    /// forces an eventfd notification for wake-ups from other threads into such queues; in the
    /// default queue a wake-up from another shard could sit unnoticed until some local event
    /// woke the executor (measured here: cross-shard produce requests stalled indefinitely).
    static REQUEST_QUEUE: std::cell::Cell<Option<glommio::TaskQueueHandle>> =
        const { std::cell::Cell::new(None) };

    /// The shard's task queue for large requests (see `spawn_bulk`).
    static BULK_QUEUE: std::cell::Cell<Option<glommio::TaskQueueHandle>> =
        const { std::cell::Cell::new(None) };
}

/// Creates this shard's request task queue. Call first thing on each shard.
pub fn init_shard() {
    let tq = glommio::executor().create_task_queue(
        glommio::Shares::default(),
        glommio::Latency::Matters(Duration::from_millis(1)),
        "requests",
    );
    REQUEST_QUEUE.with(|q| q.set(Some(tq)));
    // A tenth of the request queue's shares: when both have work, large requests get a tenth
    // of the CPU. Also `Latency::Matters`, for the cross-thread wake-ups (see above).
    let bulk = glommio::executor().create_task_queue(
        glommio::Shares::Static(100),
        glommio::Latency::Matters(Duration::from_millis(10)),
        "bulk-requests",
    );
    BULK_QUEUE.with(|q| q.set(Some(bulk)));
}

/// Runs `future` on the current shard in the bulk queue, which gets a tenth of the CPU the
/// request queue gets while both have work: large requests (a flood of big produce batches)
/// then cannot starve small ones. Dropping the handle cancels the task.
pub fn spawn_bulk<T: 'static, F: Future<Output = T> + 'static>(future: F) -> glommio::Task<T> {
    match BULK_QUEUE.with(|q| q.get()) {
        Some(tq) => glommio::spawn_local_into(future, tq).expect("the bulk queue exists"),
        None => spawn(future),
    }
}

/// Runs `future` on the current shard, in the request queue; the handle awaits its result.
pub fn spawn<T: 'static, F: Future<Output = T> + 'static>(future: F) -> glommio::Task<T> {
    match REQUEST_QUEUE.with(|q| q.get()) {
        Some(tq) => glommio::spawn_local_into(future, tq).expect("the request queue exists"),
        None => glommio::spawn_local(future),
    }
}

/// Runs `f(item)` for every item as tasks of the current shard (request queue), at most
/// `in_flight` at a time, and returns their results in item order. For many independent
/// pieces of I/O-bound work (opening or closing thousands of partitions) whose ring round trips
/// should overlap.
pub async fn run_in_flight<I, T, F, Fut>(items: I, in_flight: usize, mut f: F) -> Vec<T>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = T> + 'static,
    T: 'static,
{
    let mut running = std::collections::VecDeque::new();
    let mut out = Vec::new();
    for item in items {
        if running.len() >= in_flight.max(1) {
            if let Some(task) = running.pop_front() {
                out.push(task.await);
            }
        }
        running.push_back(spawn(f(item)));
    }
    for task in running {
        out.push(task.await);
    }
    out
}

/// Runs `future` on the current shard without waiting for it.
pub fn spawn_detached<F: Future<Output = ()> + 'static>(future: F) {
    spawn(future).detach();
}

pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await
}

/// Receives from a channel whose sender lives on another thread. Besides the channel's own
/// wake-up it re-checks every `CROSS_THREAD_RECHECK`, so a wake-up lost between threads costs
/// latency, never liveness.
pub async fn recv_cross<T>(rx: &flume::Receiver<T>) -> Result<T, flume::RecvError> {
    loop {
        let got = futures_lite::future::or(async { Some(rx.recv_async().await) }, async {
            glommio::timer::sleep(CROSS_THREAD_RECHECK).await;
            None
        })
        .await;
        match got {
            Some(r) => return r,
            None => match rx.try_recv() {
                Ok(v) => {
                    LOST_WAKEUPS.with(|c| c.set(c.get() + 1));
                    log::warn!("cross-thread wake-up was lost; recovered by re-check");
                    return Ok(v);
                }
                Err(flume::TryRecvError::Disconnected) => {
                    return Err(flume::RecvError::Disconnected)
                }
                Err(flume::TryRecvError::Empty) => {}
            },
        }
    }
}

/// How many receives on this thread were completed by the re-check, not their wake-up.
pub fn lost_wakeup_rechecks() -> u64 {
    LOST_WAKEUPS.with(|c| c.get())
}

/// Safety net only: with the request queue's forced notifications this should never matter.
const CROSS_THREAD_RECHECK: Duration = Duration::from_millis(100);

/// Lets other tasks of this shard run if this one has used its time slice.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
}

/// Starts one pinned executor per entry of `cpus`, each running `main(shard_index)`, and waits
/// for all of them to finish. Returns the first error an executor could not start with.
///
/// Executors start one after the other: each must have polled its main task before the next
/// is created. With stock glommio 0.9.0 a new executor sometimes never polled its main task
/// (the lost wake-up in `LocalExecutor::run`, fixed in `third_party/glommio`, see its
/// SHARDLOG.md). The retry stays as an alarm that counts in the metrics: an attempt that has
/// not polled after `SHARD_START_ATTEMPT` is abandoned and the shard started again on a fresh
/// executor. Whichever attempt polls first claims the shard; a late one finds it claimed and
/// ends without running `main`. After `SHARD_START_ATTEMPTS` the broker gives up with an error
/// instead of never listening.
pub fn run_shards<F, Fut>(cpus: &[usize], main: F) -> std::io::Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut handles = Vec::with_capacity(cpus.len());
    let (started_tx, started_rx) = std::sync::mpsc::channel::<(usize, usize)>();
    for (i, cpu) in cpus.iter().enumerate() {
        let claimed = Arc::new(AtomicBool::new(false));
        let mut attempts = Vec::new();
        let mut winner = None;
        for attempt in 0..SHARD_START_ATTEMPTS {
            let main = main.clone();
            let started = started_tx.clone();
            let claimed = claimed.clone();
            let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(*cpu))
                .name(&format!("shard-{i}"))
                .preempt_timer(Duration::from_micros(500))
                .spawn(move || async move {
                    // Runs at the first poll of the executor's main task.
                    if claimed.swap(true, Ordering::AcqRel) {
                        return;
                    }
                    let _ = started.send((i, attempt));
                    main(i).await
                })
                .map_err(|e| {
                    std::io::Error::other(format!("cannot start shard {i} on cpu {cpu}: {e}"))
                })?;
            attempts.push(Some(handle));
            match started_rx.recv_timeout(SHARD_START_ATTEMPT) {
                Ok((_, a)) => {
                    winner = Some(a);
                    break;
                }
                Err(_) => log::warn!(
                    "shard {i} on cpu {cpu}: executor did not start running within \
                     {SHARD_START_ATTEMPT:?} (attempt {}); starting it again",
                    attempt + 1
                ),
            }
        }
        let Some(a) = winner else {
            return Err(std::io::Error::other(format!(
                "shard {i} on cpu {cpu} did not start running in {SHARD_START_ATTEMPTS} attempts"
            )));
        };
        // Abandoned attempts are detached: if one ever runs, it ends at once.
        handles.push(attempts[a].take().expect("the winning attempt's handle"));
    }
    for h in handles {
        h.join()
            .map_err(|e| std::io::Error::other(format!("shard failed: {e}")))?;
    }
    Ok(())
}

/// How long one executor gets to poll its main task before it is abandoned.
const SHARD_START_ATTEMPT: Duration = Duration::from_secs(5);
const SHARD_START_ATTEMPTS: usize = 4;

/// Opens a TCP connection to `host:port` (name resolution runs off the shard), with a bound on
/// the whole attempt.
pub async fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let target = (host.to_string(), port);
    let addrs: Vec<std::net::SocketAddr> = glommio::executor()
        .spawn_blocking(move || target.to_socket_addrs().map(|a| a.collect()))
        .await?;
    let Some(addr) = addrs.first().copied() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host}:{port} resolves to no address"),
        ));
    };
    let stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(stream)
}

/// A file read through the shard's io_uring ring. A read of pages that are not in the page
/// cache is carried out by the kernel's io_uring workers, so the shard keeps serving while the
/// disk answers. Holds its own duplicate of the caller's descriptor.
pub struct RingFile(glommio::io::BufferedFile);

impl RingFile {
    pub fn dup(file: &std::fs::File) -> std::io::Result<RingFile> {
        use std::os::fd::{FromRawFd, IntoRawFd};
        let fd = file.try_clone()?.into_raw_fd();
        // SAFETY: `fd` is a fresh descriptor that nothing else owns; BufferedFile closes it.
        Ok(RingFile(unsafe {
            glommio::io::BufferedFile::from_raw_fd(fd)
        }))
    }

    /// Reads up to `len` bytes at `pos`; fewer only at the end of the file.
    pub async fn read_at(
        &self,
        pos: u64,
        len: usize,
    ) -> std::io::Result<impl std::ops::Deref<Target = [u8]>> {
        self.0
            .read_at(pos, len)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    pub async fn close(self) {
        if let Err(e) = self.0.close().await {
            log::debug!("closing a read descriptor: {e}");
        }
    }
}

/// Runs `f` on a blocking-work thread, off the shard: for syscalls that may wait for the disk
/// (fsync of metadata files, directory operations).
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// Removes a directory tree on a blocking-work thread, off the shard.
pub async fn remove_dir_all(path: std::path::PathBuf) -> std::io::Result<()> {
    blocking(move || std::fs::remove_dir_all(path)).await
}

/// Fails with a clear message when io_uring is unusable (seccomp profiles, or
/// `kernel.io_uring_disabled`), before any executor is started.
pub fn check_io_uring() -> Result<(), String> {
    match io_uring::IoUring::new(4) {
        Ok(_) => Ok(()),
        Err(e) => {
            let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            Err(format!(
                "io_uring is not available ({e}); kernel.io_uring_disabled={}. Shardlog needs \
                 io_uring: enable it (sysctl kernel.io_uring_disabled=0) or allow the io_uring \
                 syscalls in the container's seccomp profile.",
                if disabled.is_empty() {
                    "unknown".into()
                } else {
                    disabled
                }
            ))
        }
    }
}

/// A shard's budget of bytes (request frames held by its connections): an async semaphore
/// counting bytes. Waiters are served in the order they came; a permit gives its bytes back
/// when dropped. Lives on one shard.
pub struct ByteBudget {
    sem: std::rc::Rc<Semaphore>,
    total: usize,
}

/// Bytes reserved from a `ByteBudget`, returned on drop.
pub struct BudgetPermit {
    _permit: Option<glommio::sync::StaticPermit>,
    bytes: usize,
}

impl BudgetPermit {
    /// A permit for nothing (a frame without a body).
    pub fn empty() -> BudgetPermit {
        BudgetPermit {
            _permit: None,
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl ByteBudget {
    pub fn new(total: usize) -> ByteBudget {
        ByteBudget {
            sem: std::rc::Rc::new(Semaphore::new(total as u64)),
            total,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> usize {
        self.sem.available() as usize
    }

    /// Reserves `bytes` (capped at the whole budget, so any request can proceed once it has
    /// the budget to itself) without waiting; `None` when they are not free now or others
    /// are already waiting.
    pub fn try_reserve(&self, bytes: usize) -> Option<BudgetPermit> {
        let bytes = bytes.min(self.total);
        if bytes == 0 {
            return Some(BudgetPermit::empty());
        }
        self.sem
            .try_acquire_static_permit(bytes as u64)
            .ok()
            .map(|p| BudgetPermit {
                _permit: Some(p),
                bytes,
            })
    }

    /// Reserves `bytes` (capped at the whole budget), waiting until they are free; `None`
    /// only if the budget was closed.
    pub async fn reserve(&self, bytes: usize) -> Option<BudgetPermit> {
        let bytes = bytes.min(self.total);
        if bytes == 0 {
            return Some(BudgetPermit::empty());
        }
        self.sem
            .acquire_static_permit(bytes as u64)
            .await
            .ok()
            .map(|p| BudgetPermit {
                _permit: Some(p),
                bytes,
            })
    }
}
