//! Process start and stop: the data directory lock, the clean-shutdown marker, the signal thread,
//! and each shard's life (open partitions, serve, drain, close).
//!
//! Stop sequence on SIGINT/SIGTERM: the signal thread drops the shutdown sender, which every
//! shard observes at once; each shard stops accepting, lets in-flight requests finish, waits for
//! the other shards to get that far (they may still call into it), then flushes and closes its
//! partitions. When every shard has closed cleanly the marker `.clean_shutdown` is written, so
//! the next start skips log recovery.
//!
//! Cluster mode (`zookeeper.connect` set) starts the control thread first and starts the shards
//! with its first snapshot; there is no topic registry. The first signal goes to the control
//! thread, which hands this broker's leaderships over (controlled shutdown) before it drops
//! the shutdown sender; after the shards have stopped it unregisters the broker and closes the
//! ZooKeeper session.

pub mod metrics_http;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::base::clock::now_ms;
use crate::cluster::metadata::{TopicRegistry, CONSUMER_OFFSETS_TOPIC};
use crate::config::BrokerConfig;
use crate::runtime::shard_table::ShardId;
use crate::shard::{Counters, Shard, ShardSetup, ShardTask};

const CLEAN_SHUTDOWN_MARKER: &str = ".clean_shutdown";
const LOCK_FILE: &str = ".lock";

/// Holds an exclusive `flock` on `<data>/.lock` for the life of the process.
fn lock_data_dir(dir: &Path) -> Result<File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let f = File::create(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor owned by `f`, which outlives the call.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "{} is in use by another broker (lock {} is held); stop it or use another --data-dir",
            dir.display(),
            path.display()
        ));
    }
    Ok(f)
}

/// Waits (without blocking the executor) until all `n` shards have arrived.
async fn arrive_and_wait(counter: &AtomicUsize, n: usize) {
    counter.fetch_add(1, Ordering::AcqRel);
    while counter.load(Ordering::Acquire) < n {
        crate::runtime::rt::sleep(Duration::from_millis(1)).await;
    }
}

/// A shard whose heartbeat has not moved for this long during start-up has stalled.
const STALL_MAX: Duration = Duration::from_secs(10);
/// How often a starting shard's heartbeat ticks.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);

/// Fail-stop for a start-up that stalls. Rarely (about one cluster start in ten under test load,
/// cause inside glommio unknown) one executor stops making progress during start-up: its timers
/// no longer fire and its inbox is not read, while the other shards run. Such a broker would
/// never listen. Until every shard has bound its listener (the `listening` barrier: a stall was
/// also seen after the partitions were opened, before listening), each ticks a heartbeat from
/// a timer task; if a shard's heartbeat stands still for `STALL_MAX` (a slow recovery still
/// ticks: it yields to the timer), this logs what each thread is blocked in
/// (`/proc/self/task/*/{comm,wchan,syscall}`, for diagnosis) and exits with status 3. The data
/// is as safe as after kill -9; a supervisor (or the test harness) starts the broker again.
fn start_watchdog(barriers: Arc<Barriers>, shards: usize) {
    std::thread::Builder::new()
        .name("start-watchdog".into())
        .spawn(move || {
            let mut last: Vec<(u64, std::time::Instant)> =
                vec![(0, std::time::Instant::now()); shards];
            while barriers.starting(shards) {
                std::thread::sleep(Duration::from_millis(250));
                let now = std::time::Instant::now();
                for (i, seen) in last.iter_mut().enumerate() {
                    let beat = barriers.heartbeats[i].load(Ordering::Acquire);
                    if beat != seen.0 {
                        *seen = (beat, now);
                    } else if beat > 0 && now.duration_since(seen.1) > STALL_MAX {
                        log::error!(
                            "shard {i} stalled during start-up (no progress for {STALL_MAX:?}); \
                             exiting so that the broker can be started again. Threads: {}",
                            thread_states()
                        );
                        std::process::exit(3);
                    }
                }
            }
        })
        .expect("spawn the start-up watchdog");
}

/// Ticks shard `i`'s start-up heartbeat until every shard listens.
async fn heartbeat(i: usize, barriers: Arc<Barriers>, shards: usize) {
    while barriers.starting(shards) {
        barriers.heartbeats[i].fetch_add(1, Ordering::AcqRel);
        crate::runtime::rt::sleep(HEARTBEAT_EVERY).await;
    }
}

/// `name wchan syscall-number` of every thread of this process, for a stall report.
fn thread_states() -> String {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return "unavailable".into();
    };
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    tasks
        .flatten()
        .map(|t| {
            let dir = t.path();
            let syscall = read(dir.join("syscall"));
            format!(
                "[{} {} wchan={} syscall={}]",
                t.file_name().to_string_lossy(),
                read(dir.join("comm")),
                read(dir.join("wchan")),
                syscall.split(' ').next().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct Barriers {
    opened: AtomicUsize,
    /// Shards whose listener is bound; `ready` is announced when all are.
    listening: AtomicUsize,
    /// Per shard, ticks while starting (see `start_watchdog`).
    heartbeats: Vec<std::sync::atomic::AtomicU64>,
    drained: AtomicUsize,
    failed: AtomicBool,
}

impl Barriers {
    /// True until every shard listens (or start-up failed): the stall watchdog's watch.
    fn starting(&self, shards: usize) -> bool {
        self.listening.load(Ordering::Acquire) < shards && !self.failed.load(Ordering::Acquire)
    }
}

pub fn run(mut config: BrokerConfig, cpus: Vec<usize>) -> Result<(), String> {
    crate::runtime::rt::check_io_uring()?;
    if cpus.is_empty() {
        return Err("no usable CPU found in this process's affinity mask".into());
    }
    if config.shards == 0 {
        config.shards = cpus.len();
    }
    let shard_cpus: Vec<usize> = (0..config.shards).map(|i| cpus[i % cpus.len()]).collect();
    // A fresh data directory holds nothing but (maybe) the lock file.
    let fresh = std::fs::read_dir(&config.data_dir).map_or(true, |entries| {
        entries
            .flatten()
            .all(|e| e.file_name().to_str() == Some(LOCK_FILE))
    });
    let _lock = lock_data_dir(&config.data_dir)?;
    // Resolved once, here: the runtime opens partition directories relative to no working
    // directory (glommio's `open_at(-1, ..)`), so a relative path must never reach it.
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| format!("cannot resolve {}: {e}", config.data_dir.display()))?;
    check_listen_address(config.listen)?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(crate::startup::metrics_http::bind(addr)?),
        None => None,
    };
    let marker = config.data_dir.join(CLEAN_SHUTDOWN_MARKER);
    let clean_start = marker.exists();
    remove_deleted_partitions(&config.data_dir);
    check_write_path(&mut config);
    let cluster_mode = config.zookeeper_connect.is_some();
    log::info!(
        "shardlog starting: {} shard(s) on cpus {:?}, listening on {}, data in {} ({} start){}",
        config.shards,
        shard_cpus,
        config.listen,
        config.data_dir.display(),
        if fresh {
            "fresh"
        } else if clean_start {
            "clean"
        } else {
            "recovering"
        },
        match &config.zookeeper_connect {
            Some(zk) => format!(
                ", broker {} in cluster mode (ZooKeeper {zk})",
                config.broker_id
            ),
            None => String::new(),
        }
    );

    raise_open_files_limit();
    return_large_buffers_to_the_os();
    let (shutdown_tx, shutdown_rx) = flume::unbounded::<()>();
    let mut inbox_rx = Vec::new();
    let mut inbox_tx = Vec::new();
    for _ in 0..config.shards {
        // Bounded: a sender finding the inbox full waits (see ARCHITECTURE.md, "Limits", for
        // why this cannot deadlock).
        let (tx, rx) = flume::bounded::<ShardTask>(crate::base::limits::SHARD_INBOX_CAPACITY);
        inbox_tx.push(tx);
        inbox_rx.push(rx);
    }
    let config = Arc::new(config);
    // Standalone: shard 0 holds the registry and the signal thread stops the shards. Cluster
    // mode: the control thread is the metadata writer and gets the signal first, for the
    // controlled shutdown; it releases the shards afterwards.
    let (registry, initial, control, lease, cluster, quotas) = if cluster_mode {
        let (stop_tx, stop_rx) = flume::unbounded::<()>();
        let (request_tx, request_rx) = flume::unbounded();
        let (done_tx, done_rx) = flume::unbounded::<()>();
        let lease = crate::cluster::control_api::Lease::revoked();
        spawn_signal_thread(stop_tx)?;
        let (initial, thread) =
            crate::control::thread::start(crate::control::thread::ControlSetup {
                config: config.clone(),
                inboxes: inbox_tx.clone(),
                lease: lease.clone(),
                requests: request_rx,
                stop: stop_rx,
                shards_shutdown: shutdown_tx,
                shards_done: done_rx,
            })?;
        let handle = crate::cluster::control_api::ControlHandle { tx: request_tx };
        let quotas = Arc::new(crate::cluster::quota::QuotaTable::default());
        (
            None,
            initial,
            Some(handle),
            lease,
            Some((done_tx, thread)),
            quotas,
        )
    } else {
        let registry = TopicRegistry::load(&config.data_dir, &config).map_err(|e| e.to_string())?;
        spawn_signal_thread(shutdown_tx)?;
        let initial = registry.snapshot();
        let quotas = Arc::new(crate::cluster::quota::store_load(&config.data_dir)?);
        (
            Some(registry),
            initial,
            None,
            crate::cluster::control_api::Lease::standalone(),
            None,
            quotas,
        )
    };
    // Removed only once startup can no longer fail before the shards open their logs (cluster
    // mode may give up on ZooKeeper), so a failed start keeps the clean state.
    if clean_start {
        std::fs::remove_file(&marker)
            .map_err(|e| format!("cannot remove {}: {e}", marker.display()))?;
        File::open(&config.data_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| e.to_string())?;
    }
    let counters = Arc::new(Counters::default());
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        crate::startup::metrics_http::start(
            listener,
            crate::startup::metrics_http::Endpoint {
                inboxes: inbox_tx.clone(),
                counters: counters.clone(),
                lease: lease.clone(),
                config: config.clone(),
            },
        )?;
        log::info!(
            "metrics and health on http://{addr}/metrics, /v1/status/live, /v1/status/ready"
        );
    }
    let setup = Arc::new(ShardSetup {
        config: config.clone(),
        inboxes: inbox_tx,
        initial,
        clean_start,
        counters,
        shutdown: shutdown_rx,
        control,
        lease,
        quotas,
        quota_sensors: Arc::new(crate::cluster::quota::QuotaSensors::new()),
        connections: Arc::new(crate::shard::admission::ConnectionLimiter::new(&config)),
        follower_fetcher: |shard, leader| Box::pin(crate::replication::fetcher::run(shard, leader)),
        txn_marker_writer: crate::server::txn::write_markers,
    });
    let registry = Arc::new(std::sync::Mutex::new(registry));
    let inbox_rx = Arc::new(std::sync::Mutex::new(
        inbox_rx.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    let barriers = Arc::new(Barriers {
        opened: AtomicUsize::new(0),
        listening: AtomicUsize::new(0),
        heartbeats: (0..config.shards)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
        drained: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
    });

    start_watchdog(barriers.clone(), config.shards);
    let setup2 = setup.clone();
    let b2 = barriers.clone();
    crate::runtime::rt::run_shards(&shard_cpus, move |i| {
        let setup = setup2.clone();
        let barriers = b2.clone();
        // Startup hand-off: each shard takes its own inbox, shard 0 the registry.
        let inbox = inbox_rx.lock().expect("startup lock")[i]
            .take()
            .expect("one inbox per shard");
        let registry = if i == 0 {
            registry.lock().expect("startup lock").take()
        } else {
            None
        };
        async move { shard_main(i, setup, inbox, registry, barriers).await }
    })
    .map_err(|e| e.to_string())?;
    if let Some((done_tx, thread)) = cluster {
        // The control thread now unregisters this broker and closes its session.
        drop(done_tx);
        if thread.join().is_err() {
            log::error!("the control thread failed while closing the ZooKeeper session");
        }
    }

    let c = &setup.counters;
    log::info!(
        "stopped: fetch bytes by sendfile {}, copied {}, read from disk {}; produce bytes {}; \
         requests {}",
        c.fetch_bytes_sendfile.load(Ordering::Relaxed),
        c.fetch_bytes_copied.load(Ordering::Relaxed),
        c.fetch_bytes_cold.load(Ordering::Relaxed),
        c.produce_bytes.load(Ordering::Relaxed),
        c.requests.load(Ordering::Relaxed)
    );
    if barriers.failed.load(Ordering::Acquire) {
        return Err("some partitions failed to close; the next start will recover the logs".into());
    }
    File::create(&marker)
        .and_then(|f| f.sync_all())
        .map_err(|e| e.to_string())?;
    File::open(&config.data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Raises this process's soft limit on open files to its hard limit: every connection is a
/// descriptor, and the usual soft limit (1024) would refuse connections long before
/// `max.connections`. Logs the limit in force.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct passed, which lives on the stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    log::info!("open files limit: {}", lim.rlim_cur);
}

/// Makes every allocation of `FRAME_READ_STEP_BYTES` or more a mapping of its own, given back
/// to the kernel when freed. Request frames and the produce path's write buffers are such
/// allocations. glibc's default threshold adapts upwards (up to 32 MiB) once such a block
/// is freed, after which a flood's frames come from the shards' arenas and stay in the
/// broker's RSS after the flood (measured: 160 MiB of 190 MiB stayed after 50 producers'
/// flood, `tests/tests/hostile_load.rs`). The cost is page faults on each large frame.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_buffers_to_the_os() {
    let threshold = crate::base::limits::FRAME_READ_STEP_BYTES as libc::c_int;
    // SAFETY: mallopt only changes allocator parameters; called before the shards start.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) } != 1 {
        log::warn!("cannot set the allocator's mmap threshold");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_buffers_to_the_os() {}

/// One broker per address: every shard binds its listener with SO_REUSEPORT (the kernel then
/// spreads connections over them), which would also let a second process share a port in use
/// and silently take part of its clients. A probe bind without SO_REUSEPORT fails if anyone
/// listens there. (Rust's std sets SO_REUSEADDR, so sockets in TIME_WAIT after a restart do
/// not count as "in use".)
///
/// The probe can also fail without any listener: connections a previous run of this broker
/// accepted linger on the port (FIN_WAIT2 while a client keeps its end open) and, created
/// with SO_REUSEPORT but not SO_REUSEADDR, they block a plain bind while the shards' own
/// SO_REUSEPORT binds would succeed. So a refused probe is checked against the kernel's
/// socket table: only a listening socket that a live process holds means "in use". A listener
/// without a process (a broker that just exited: its sockets belong to io_uring rings the
/// kernel tears down asynchronously) is waited for, up to `ORPHAN_LISTENER_WAIT`.
fn check_listen_address(addr: std::net::SocketAddr) -> Result<(), String> {
    let deadline = std::time::Instant::now() + ORPHAN_LISTENER_WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(probe) => {
                drop(probe);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                match listener_state(addr.port()) {
                    PortListener::Owned => {
                        return Err(format!(
                            "cannot listen on {addr}: address already in use (is another \
                             broker running there?)"
                        ))
                    }
                    PortListener::None => return Ok(()),
                    PortListener::Orphaned if std::time::Instant::now() > deadline => {
                        log::warn!(
                            "{addr}: a listening socket without a process is still there after \
                             {ORPHAN_LISTENER_WAIT:?}; starting anyway"
                        );
                        return Ok(());
                    }
                    PortListener::Orphaned => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        }
    }
}

/// How long a start waits for listening sockets a just-exited process left behind.
const ORPHAN_LISTENER_WAIT: Duration = Duration::from_secs(5);

/// Who listens on a TCP port, as far as the kernel's tables tell.
#[derive(Debug, PartialEq, Eq)]
enum PortListener {
    /// No listening socket (only connections).
    None,
    /// Listening sockets that no process holds a descriptor of.
    Orphaned,
    /// A live process listens (or the tables could not be read: err towards refusing).
    Owned,
}

/// Who listens on `port` (any address), from `/proc/net/tcp{,6}` and the processes'
/// descriptors.
fn listener_state(port: u16) -> PortListener {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            return PortListener::Owned;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let listening = *state == "0A";
            let on_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening && on_port {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return PortListener::None;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return PortListener::Owned;
    };
    let owned = procs
        .flatten()
        .filter(|p| {
            p.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|p| std::fs::read_dir(p.path().join("fd")).ok())
        .flat_map(|fds| fds.flatten())
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| inodes.contains(target.to_string_lossy().as_ref()));
    if owned {
        PortListener::Owned
    } else {
        PortListener::Orphaned
    }
}

/// Finishes deletions a previous run started (directories renamed with `DELETED_SUFFIX`).
/// Probes whether appends can complete in io_uring's submission (non-blocking buffered writes
/// into reserved disk); where they cannot, reserving ahead is pointless and is turned off.
fn check_write_path(config: &mut BrokerConfig) {
    let dir = &config.data_dir;
    match shardlog_storage::probe::nonblocking_buffered_writes(dir) {
        Ok(true) => {
            if config.topic_defaults.preallocate_bytes > 0 {
                log::info!(
                    "{}: non-blocking buffered writes; reserving {} bytes of disk ahead of each \
                     active segment so appends complete without an io_uring worker thread",
                    dir.display(),
                    config.topic_defaults.preallocate_bytes
                );
            }
        }
        Ok(false) => {
            log::info!(
                "{}: the filesystem has no non-blocking buffered writes (ext4 has none), so \
                 every append runs on an io_uring worker thread on its shard's core; XFS \
                 avoids that. Not reserving disk ahead of appends.",
                dir.display()
            );
            config.topic_defaults.preallocate_bytes = 0;
        }
        Err(e) => log::warn!("{}: cannot probe the write path: {e}", dir.display()),
    }
}

fn remove_deleted_partitions(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_string_lossy()
            .ends_with(crate::partition::DELETED_SUFFIX)
        {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                log::warn!("cannot remove {}: {err}", e.path().display());
            }
        }
    }
}

fn spawn_signal_thread(shutdown_tx: flume::Sender<()>) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut tx = Some(shutdown_tx);
            for sig in signals.forever() {
                if tx.take().is_some() {
                    log::info!("signal {sig}: shutting down (again to exit at once)");
                } else {
                    log::warn!("second signal: exiting without a clean shutdown");
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn shard_main(
    i: usize,
    setup: Arc<ShardSetup>,
    inbox: flume::Receiver<ShardTask>,
    registry: Option<TopicRegistry>,
    barriers: Arc<Barriers>,
) {
    log::debug!("shard {i}: executor running");
    crate::runtime::rt::init_shard();
    crate::runtime::rt::spawn_detached(heartbeat(i, barriers.clone(), setup.config.shards));
    // The shard's whole life runs in the request queue, not the executor's default queue:
    // glommio forces a wake-up for completions arriving from other threads (its blocking pool
    // creates partition directories; other shards reply) only into `Latency::Matters` queues.
    // Opening new partitions from the default queue at startup stalled a shard for good about
    // once in ten cluster starts (the controller's shards open the just-created
    // `__consumer_offsets` from the initial snapshot).
    crate::runtime::rt::spawn(shard_life(i, setup, inbox, registry, barriers)).await
}

async fn shard_life(
    i: usize,
    setup: Arc<ShardSetup>,
    inbox: flume::Receiver<ShardTask>,
    registry: Option<TopicRegistry>,
    barriers: Arc<Barriers>,
) {
    let n = setup.config.shards;
    log::debug!("shard {i}: starting");
    let shard = Rc::new(Shard::new(ShardId(i), &setup, registry));
    crate::runtime::rt::spawn_detached(shard.clone().run_inbox(inbox));
    shard.apply_metadata(setup.initial.clone()).await;
    // In cluster mode the controller creates it, once enough brokers are alive.
    if i == 0 && setup.control.is_none() && shard.metadata().topic(CONSUMER_OFFSETS_TOPIC).is_none()
    {
        create_offsets_topic(&shard).await;
    }
    log::debug!("shard {i}: initial metadata applied");
    // Fail-stop: a broker that cannot open one of its partitions (or its metadata) must not
    // announce readiness and serve the rest as if nothing happened.
    if let Some(failure) = shard.finish_starting() {
        eprintln!("shardlog: {failure}");
        std::process::exit(1);
    }
    arrive_and_wait(&barriers.opened, n).await;
    match crate::runtime::rt::TcpListener::bind(setup.config.listen) {
        Ok(listener) => {
            arrive_and_wait(&barriers.listening, n).await;
            if i == 0 {
                crate::metrics::STATUS
                    .serving
                    .store(true, Ordering::Release);
                log::info!("ready on {}", setup.config.listen);
            }
            crate::runtime::rt::spawn_detached(retention_loop(shard.clone()));
            // A tenth of the CPU while requests are busy: cleaning is background work.
            crate::runtime::rt::spawn_bulk(crate::shard::cleaner::cleaner_loop(shard.clone()))
                .detach();
            crate::runtime::rt::spawn_detached(crate::shard::report::queue_probe_loop(
                Rc::downgrade(&shard),
            ));
            crate::server::serve(shard.clone(), listener, setup.connections.clone()).await;
        }
        Err(e) => {
            eprintln!("shardlog: cannot listen on {}: {e}", setup.config.listen);
            barriers.failed.store(true, Ordering::Release);
            std::process::exit(1);
        }
    }
    arrive_and_wait(&barriers.drained, n).await;
    if !shard.close_all().await {
        barriers.failed.store(true, Ordering::Release);
    }
}

/// Creates `__consumer_offsets` (compacted, as in Kafka: the log cleaner keeps the latest
/// commit of each group, partition and the latest group metadata) with
/// `offsets.topic.num.partitions` partitions.
async fn create_offsets_topic(shard: &Rc<Shard>) {
    let configs = shard.config.offsets_topic_configs();
    let spec = crate::shard::topics::TopicSpec {
        name: CONSUMER_OFFSETS_TOPIC.to_string(),
        partitions: shard.config.offsets_topic_num_partitions,
        configs,
    };
    for (name, result) in
        crate::shard::topics::create_topics_in_registry(shard, vec![spec], false).await
    {
        if let Err((code, msg)) = result {
            log::error!("cannot create {name}: error {code}: {msg}");
        }
    }
}

/// Rolls segments by age and deletes expired ones, for every partition of this shard.
async fn retention_loop(shard: Rc<Shard>) {
    let every = Duration::from_millis(shard.config.retention_check_interval_ms);
    loop {
        if shard.sleep_unless_shutdown(every).await {
            return;
        }
        let now = now_ms();
        for p in shard.partitions() {
            let log = p.log();
            if let Err(e) = log.maybe_roll_by_time(now).await {
                log::error!("roll of {}-{}: {e}", p.topic, p.index);
            }
            match log.enforce_retention(now).await {
                Ok(0) => {}
                Ok(n) => {
                    shard
                        .metrics
                        .add(&shard.metrics.retention_deleted_segments, n as u64);
                    log::info!(
                        "retention deleted {n} segment(s) of {}-{}",
                        p.topic,
                        p.index
                    )
                }
                Err(e) => log::error!("retention of {}-{}: {e}", p.topic, p.index),
            }
            crate::runtime::rt::yield_if_needed().await;
        }
    }
}
