# Shared helpers for the perf/ scripts; sourced, not run.
#
# Everything here targets 127.0.0.1 only. Brokers started by these scripts listen on loopback,
# use a temporary data directory and are stopped by an EXIT trap.

set -euo pipefail

PERF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$PERF_DIR/.." && pwd)"
STARTED_PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs Debian packages whose command is missing: ensure_cmd COMMAND PACKAGE.
ensure_cmd() {
    local cmd="$1" pkg="$2"
    command -v "$cmd" >/dev/null 2>&1 && return 0
    log "installing $pkg (for $cmd)"
    if [ "$(id -u)" -ne 0 ]; then
        die "$cmd is missing and installing $pkg needs root: apt-get install $pkg"
    fi
    if [ -z "${PERF_APT_UPDATED:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
        PERF_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2 \
        || die "apt-get install $pkg failed"
    command -v "$cmd" >/dev/null 2>&1 || die "$pkg installed but $cmd is still missing"
}

# Absolute form of a path (the broker and tools must not depend on the working directory: a
# relative --data-dir makes the broker's io_uring opens fail with EBADF).
abs_path() {
    mkdir -p "$1" && (cd "$1" && pwd)
}

# A loopback port nobody listens on.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until HOST:PORT accepts connections (or the given pid dies): wait_listen ADDR PID SECONDS.
wait_listen() {
    local addr="$1" pid="$2" secs="${3:-30}" host port i
    host="${addr%:*}"; port="${addr##*:}"
    for ((i = 0; i < secs * 10; i++)); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

commit_id() {
    git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo nocommit
}

# The default results directory: perf/results/<date>-<commit>.
default_results_dir() {
    echo "$PERF_DIR/results/$(date +%Y-%m-%d)-$(commit_id)"
}

# Builds the release load generator once and prints its path.
bench_bin() {
    local bin="$REPO_ROOT/target/release/shardlog-bench"
    if [ -z "${PERF_BENCH_BUILT:-}" ]; then
        log "building shardlog-bench (release)"
        (cd "$REPO_ROOT" && cargo build --release -q -p shardlog-bench) >&2 \
            || die "cargo build --release -p shardlog-bench failed"
        PERF_BENCH_BUILT=1
    fi
    echo "$bin"
}

# Starts the Shardlog broker on a free loopback port; sets SHARDLOG_ADDR and SHARDLOG_PID.
# Args: DATA_DIR SHARDS LOG_FILE. Built with the cargo profile in SHARDLOG_CARGO_PROFILE
# (default release; profile.sh sets `profiling`, release plus line tables).
start_shardlog() {
    local data="$1" shards="$2" logf="$3" port
    local profile="${SHARDLOG_CARGO_PROFILE:-release}"
    local bin="$REPO_ROOT/target/$profile/shardlog"
    log "building the shardlog broker (cargo profile $profile)"
    (cd "$REPO_ROOT" && cargo build --profile "$profile" -q -p shardlog-broker --bin shardlog) >&2 \
        || die "cargo build --profile $profile -p shardlog-broker failed"
    mkdir -p "$data"
    port="$(free_port)"
    SHARDLOG_ADDR="127.0.0.1:$port"
    # Metrics on an ephemeral port unless SHARDLOG_METRICS_LISTEN says otherwise (empty = off).
    "$bin" --listen "$SHARDLOG_ADDR" --data-dir "$data" --shards "$shards" \
        --set "metrics.listen=${SHARDLOG_METRICS_LISTEN-127.0.0.1:0}" >"$logf" 2>&1 &
    SHARDLOG_PID=$!
    STARTED_PIDS+=("$SHARDLOG_PID")
    wait_listen "$SHARDLOG_ADDR" "$SHARDLOG_PID" 30 \
        || die "shardlog did not start listening on $SHARDLOG_ADDR (log: $logf): $(tail -5 "$logf")"
    log "shardlog pid $SHARDLOG_PID listening on $SHARDLOG_ADDR"
}

# Makes sure the tansu binary exists, installing it with cargo when missing. Returns non-zero
# (with a message) when it cannot be had.
ensure_tansu() {
    command -v tansu >/dev/null 2>&1 && return 0
    [ -x "$HOME/.cargo/bin/tansu" ] && { PATH="$HOME/.cargo/bin:$PATH"; return 0; }
    log "installing tansu: cargo install tansu --locked --features dynostore,libsql (takes a while)"
    if ! cargo install tansu --locked --features dynostore,libsql >&2; then
        log "tansu could not be built here; pass --peer-bootstrap ADDR to compare with a running peer"
        return 1
    fi
}

# Starts Tansu on a free loopback port; sets PEER_ADDR and PEER_PID. Args: DATA_DIR STORAGE LOG.
# STORAGE is memory (Tansu's in-memory engine) or sqlite (a file in DATA_DIR).
start_tansu() {
    local data="$1" storage="$2" logf="$3" port url
    ensure_tansu || return 1
    mkdir -p "$data"
    case "$storage" in
        memory) url="memory://tansu/" ;;
        sqlite) url="sqlite://$data/tansu.db" ;;
        *) die "unknown tansu storage '$storage' (memory or sqlite)" ;;
    esac
    port="$(free_port)"
    PEER_ADDR="127.0.0.1:$port"
    tansu broker --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "$url" >"$logf" 2>&1 &
    PEER_PID=$!
    STARTED_PIDS+=("$PEER_PID")
    wait_listen "$PEER_ADDR" "$PEER_PID" 60 \
        || die "tansu did not start listening on $PEER_ADDR (log: $logf): $(tail -5 "$logf")"
    log "tansu ($storage) pid $PEER_PID listening on $PEER_ADDR"
}

stop_started() {
    local pid
    for pid in "${STARTED_PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        wait "$pid" 2>/dev/null || true
    done
    STARTED_PIDS=()
}

# Refuses non-loopback addresses unless PERF_ALLOW_REMOTE=1: the physical limits measured here
# are loopback limits, and loading another host by accident must not happen.
require_loopback() {
    local addr="$1" host a
    [ "${PERF_ALLOW_REMOTE:-}" = 1 ] && return 0
    for a in ${addr//,/ }; do
        host="${a%:*}"
        case "$host" in
            127.*|localhost|"[::1]") ;;
            *) die "$a is not a loopback address (set PERF_ALLOW_REMOTE=1 to allow it)" ;;
        esac
    done
}

ZK_JAR=/usr/share/java/zookeeper.jar

# Installs Debian's ZooKeeper when missing.
ensure_zookeeper() {
    [ -f "$ZK_JAR" ] && return 0
    [ "$(id -u)" -eq 0 ] || die "ZooKeeper is missing: apt-get install zookeeper"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >&2 \
        || die "apt-get install zookeeper failed"
}

# Starts a one-node ZooKeeper on a free loopback port with its files in DIR; sets ZK_ADDR.
start_zookeeper() {
    local dir="$1" port
    rm -rf "$dir"; mkdir -p "$dir/data"
    port="$(free_port)"
    cat >"$dir/zoo.cfg" <<CFG
tickTime=500
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=*
CFG
    java -cp "$dir:/etc/zookeeper/conf:$ZK_JAR" org.apache.zookeeper.server.quorum.QuorumPeerMain \
        "$dir/zoo.cfg" >"$dir/zk.log" 2>&1 &
    STARTED_PIDS+=($!)
    ZK_ADDR="127.0.0.1:$port"
    wait_listen "$ZK_ADDR" "$!" 60 || die "ZooKeeper did not start (log: $dir/zk.log)"
    log "ZooKeeper on $ZK_ADDR"
}
