#!/usr/bin/env bash
# Start-up of a broker holding many partitions and much data: how long until it is ready after
# a clean stop and after kill -9, how much memory it holds then, and how fast it answers a
# Metadata request for every topic.
#
#   1. start a standalone release broker (target/release/shardlog; $CARGO_TARGET_DIR is
#      honoured) on a free loopback port with an empty data directory;
#   2. create P partitions (topics of --per-topic partitions, st-0000, st-0001, ...) and fill
#      them with G bytes in all: one shardlog-bench produce per topic, 1 MiB batches of 16 KiB
#      records, acks=1, spread round robin over the topic's partitions;
#   3. clean restart: SIGTERM, wait for the exit, start again; time from the start to ready
#      (`/v1/status/ready` answers 200, polled every 20 ms; the broker also logs `ready`);
#   4. RSS after that start (VmRSS of /proc/<pid>/status), then a Metadata request (v1, all
#      topics) repeated --metadata-requests times on one connection: p50/p99/max round trip;
#   5. kill -9, start again; time to ready, RSS, Metadata again.
# Goals (printed next to the numbers): ready under 5 s after a clean stop and under 15 s after
# kill -9, RSS at most 1 GiB, Metadata p99 under 50 ms.
#
# Usage: perf/startup.sh [--partitions P] [--gb G] [--per-topic N] [--shards N]
#                        [--metadata-requests N] [--set KEY=VALUE]... [--scratch DIR]
#                        [--out DIR] [--keep-data]
#   P and G may also come from STARTUP_PARTITIONS and STARTUP_GB (flags win). Defaults: the
#   target scale, 10,000 partitions and 40 GB (about 45 GB of disk with the indexes). Run it
#   small first, e.g. `perf/startup.sh --partitions 1000 --gb 2`.
#   --set passes a broker setting (e.g. --set log.segment.bytes=104857600 for closed segments).
#   --scratch puts the data directory there instead of under --out/raw (another disk);
#   the data directory is removed at the end unless --keep-data.
# Writes OUT/README.md (default perf/results/<date>-<commit>-startup, with -small appended
# below the target scale) and OUT/raw/ (git-ignored: broker logs, bench output).
source "$(dirname "$0")/lib.sh"

PARTITIONS="${STARTUP_PARTITIONS:-10000}"
GB="${STARTUP_GB:-40}"
PER_TOPIC=100
SHARDS=2
MD_REQUESTS=50
SETTINGS=()
SCRATCH=""
OUT=""
KEEP_DATA=0
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --partitions) PARTITIONS="$2"; shift 2 ;;
        --gb) GB="$2"; shift 2 ;;
        --per-topic) PER_TOPIC="$2"; shift 2 ;;
        --shards) SHARDS="$2"; shift 2 ;;
        --metadata-requests) MD_REQUESTS="$2"; shift 2 ;;
        --set) SETTINGS+=("$2"); shift 2 ;;
        --scratch) SCRATCH="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --keep-data) KEEP_DATA=1; shift ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "$PARTITIONS" =~ ^[1-9][0-9]*$ ]] || die "--partitions must be a positive integer"
[[ "$PER_TOPIC" =~ ^[1-9][0-9]*$ ]] || die "--per-topic must be a positive integer"
[[ "$MD_REQUESTS" =~ ^[1-9][0-9]*$ ]] || die "--metadata-requests must be a positive integer"
python3 -c "import sys; sys.exit(0 if float('$GB') > 0 else 1)" 2>/dev/null \
    || die "--gb must be a positive number"
# shardlog-bench holds every partition's batch templates: 1 MiB x partitions per run at most
# 512 MiB (POOL_BYTES_MAX in bench-harness/src/payload.rs).
[ "$PER_TOPIC" -le 500 ] || die "--per-topic is at most 500 with 1 MiB batches"
ensure_cmd curl curl
ensure_cmd python3 python3

TARGET_SCALE=0
[ "$PARTITIONS" -ge 10000 ] && python3 -c "import sys; sys.exit(0 if $GB >= 40 else 1)" \
    && TARGET_SCALE=1
if [ -z "$OUT" ]; then
    OUT="$(default_results_dir)-startup"
    [ "$TARGET_SCALE" = 1 ] || OUT="$OUT-small"
fi
OUT="$(abs_path "$OUT")"
mkdir -p "$OUT/raw/bench"
SCRATCH="$(abs_path "${SCRATCH:-$OUT/raw}")"
DATA="$SCRATCH/data"
rm -rf "$DATA"
cleanup() {
    stop_started
    [ "$KEEP_DATA" = 1 ] || rm -rf "$DATA"
}
trap cleanup EXIT

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
log "building shardlog and shardlog-bench (release, into $TARGET_DIR)"
# Two builds: `--bin shardlog` would also limit shardlog-bench to a binary of that name.
(cd "$REPO_ROOT" && cargo build --release -q -p shardlog-broker --bin shardlog \
    && cargo build --release -q -p shardlog-bench) >&2 || die "cargo build --release failed"
BROKER="$TARGET_DIR/release/shardlog"
BENCH="$TARGET_DIR/release/shardlog-bench"

PORT="$(free_port)"
MPORT="$(free_port)"
ADDR="127.0.0.1:$PORT"
READY_URL="http://127.0.0.1:$MPORT/v1/status/ready"
SET_ARGS=()
for s in "${SETTINGS[@]:-}"; do
    [ -n "$s" ] && SET_ARGS+=(--set "$s")
done
START_NO=0
now_ms() { date +%s%3N; }
# An idle partition holds one descriptor (its active .log), plus one per closed segment and
# one per segment read since the start. As packaging/shardlog.service does (LimitNOFILE), run
# the broker with 1,048,576 when this process may raise the hard limit; else with the limit
# it has (the README names it).
NOFILE=""
if prlimit --nofile=1048576:1048576 true 2>/dev/null; then
    NOFILE="prlimit --nofile=1048576:1048576"
fi
NOFILE_LIMIT="$(${NOFILE:-} bash -c 'ulimit -Hn')"

# Starts the broker on the same address, data directory and settings each time; sets
# BROKER_PID and READY_MS (milliseconds from the start to /v1/status/ready answering 200).
start_broker() {
    local label="$1" t0 deadline
    START_NO=$((START_NO + 1))
    t0="$(now_ms)"
    $NOFILE "$BROKER" --listen "$ADDR" --data-dir "$DATA" --shards "$SHARDS" \
        --set "metrics.listen=127.0.0.1:$MPORT" "${SET_ARGS[@]}" \
        >"$OUT/raw/broker-$START_NO-$label.log" 2>&1 &
    BROKER_PID=$!
    STARTED_PIDS+=("$BROKER_PID")
    deadline=$((t0 + 900000))
    until curl -sf -o /dev/null --max-time 1 "$READY_URL"; do
        kill -0 "$BROKER_PID" 2>/dev/null \
            || die "the broker exited while starting ($label): $(tail -5 "$OUT/raw/broker-$START_NO-$label.log")"
        [ "$(now_ms)" -lt "$deadline" ] || die "the broker was not ready within 900 s ($label)"
        sleep 0.02
    done
    READY_MS=$(($(now_ms) - t0))
    log "broker pid $BROKER_PID ready after $READY_MS ms ($label)"
}

# SIGTERM (clean stop) or SIGKILL; waits for the exit. Sets STOP_MS.
stop_broker() {
    local sig="$1" t0 i pid="$BROKER_PID"
    t0="$(now_ms)"
    kill "-$sig" "$pid"
    wait "$pid" 2>/dev/null || true
    STOP_MS=$(($(now_ms) - t0))
    for i in "${!STARTED_PIDS[@]}"; do
        [ "${STARTED_PIDS[$i]}" = "$pid" ] && unset 'STARTED_PIDS[i]'
    done
    STARTED_PIDS=("${STARTED_PIDS[@]:-}")
}

rss_mib() {
    awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$BROKER_PID/status"
}

# Metadata v1 for every topic (topics = null), N times on one connection after one untimed
# request that is parsed to count topics and partitions. Prints:
# "topics partitions response_bytes p50_ms p99_ms max_ms".
metadata_latency() {
    python3 - "$PORT" "$MD_REQUESTS" <<'PY'
import math, socket, struct, sys, time

port, n = int(sys.argv[1]), int(sys.argv[2])
client = b"perf-startup"


def request(corr):
    # Header v1: api_key 3 (Metadata), version 1, correlation id, client id; body: topics null.
    body = struct.pack(">hhih", 3, 1, corr, len(client)) + client + struct.pack(">i", -1)
    return struct.pack(">i", len(body)) + body


def read_exact(s, size):
    buf = bytearray()
    while len(buf) < size:
        chunk = s.recv(min(size - len(buf), 1 << 20))
        if not chunk:
            raise SystemExit("the broker closed the connection")
        buf += chunk
    return bytes(buf)


def round_trip(s, corr):
    s.sendall(request(corr))
    size = struct.unpack(">i", read_exact(s, 4))[0]
    data = read_exact(s, size)
    if struct.unpack(">i", data[:4])[0] != corr:
        raise SystemExit("correlation id mismatch")
    return data


class Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.i)
        self.i += struct.calcsize(fmt)
        return v[0]

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        v = self.d[self.i:self.i + n]
        self.i += n
        return v.decode()


s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
data = round_trip(s, 0)
r = Reader(data)
r.take(">i")  # correlation id
for _ in range(r.take(">i")):  # brokers
    r.take(">i"); r.string(); r.take(">i"); r.string()
r.take(">i")  # controller id
topics = partitions = 0
for _ in range(r.take(">i")):
    err = r.take(">h")
    name = r.string()
    r.take(">b")
    if err != 0:
        raise SystemExit(f"topic {name}: error {err}")
    topics += 1
    for _ in range(r.take(">i")):
        perr = r.take(">h")
        if perr != 0:
            raise SystemExit(f"{name}: partition error {perr}")
        r.take(">i"); r.take(">i")
        for _ in range(r.take(">i")):
            r.take(">i")
        for _ in range(r.take(">i")):
            r.take(">i")
        partitions += 1
times = []
for corr in range(1, n + 1):
    t = time.perf_counter()
    round_trip(s, corr)
    times.append((time.perf_counter() - t) * 1e3)
times.sort()
pct = lambda q: times[max(0, math.ceil(q * len(times)) - 1)]
print(topics, partitions, len(data) + 4, f"{pct(0.5):.2f}", f"{pct(0.99):.2f}", f"{times[-1]:.2f}")
PY
}

verdict() { # verdict VALUE OP LIMIT -> "yes"/"no"
    python3 -c "import sys; print('yes' if float('$1') $2 float('$3') else 'no')"
}

TOPICS=$(((PARTITIONS + PER_TOPIC - 1) / PER_TOPIC))
BYTES=$(python3 -c "print(int($GB * 1e9))")
RECORD=16384

log "results in $OUT; data directory $DATA ($(stat -f -c %T "$SCRATCH"))"
start_broker first
FIRST_READY_MS=$READY_MS
log "creating $PARTITIONS partitions in $TOPICS topics and writing $GB GB"
FILL_T0="$(now_ms)"
for ((t = 0; t < TOPICS; t++)); do
    parts=$PER_TOPIC
    [ $t -eq $((TOPICS - 1)) ] && parts=$((PARTITIONS - (TOPICS - 1) * PER_TOPIC))
    topic="$(printf 'st-%04d' "$t")"
    # This topic's share of the bytes, in whole records.
    records=$(((BYTES / PARTITIONS * parts + RECORD - 1) / RECORD))
    "$BENCH" produce --bootstrap "$ADDR" --topic "$topic" --partitions "$parts" \
        --record-size "$RECORD" --batch-bytes 1MiB --acks 1 --messages "$records" --quiet \
        --out "$OUT/raw/bench" --name "fill-$topic" >"$OUT/raw/bench/fill-$topic.txt" 2>&1 \
        || die "filling $topic failed: $(tail -3 "$OUT/raw/bench/fill-$topic.txt")"
    if [ $((t % 10)) -eq 9 ] || [ $t -eq $((TOPICS - 1)) ]; then
        log "filled $((t + 1)) of $TOPICS topics"
    fi
done
FILL_S=$(python3 -c "print(round(($(now_ms) - $FILL_T0) / 1000, 1))")
sync
DATA_BYTES="$(du -sb "$DATA" | cut -f1)"
SEGMENTS="$(find "$DATA" -name '*.log' | wc -l)"
log "data: $DATA_BYTES bytes in $SEGMENTS segment files, written in $FILL_S s"
# shardlog-bench reports refused records without failing; the data directory says what landed.
python3 -c "import sys; sys.exit(0 if $DATA_BYTES >= 0.98 * $BYTES else 1)" \
    || die "only $DATA_BYTES of $BYTES bytes landed (see $OUT/raw/bench and the broker log)"
RSS_FILLED="$(rss_mib)"

stop_broker TERM
CLEAN_STOP_MS=$STOP_MS
start_broker after-sigterm
CLEAN_READY_MS=$READY_MS
CLEAN_RSS="$(rss_mib)"
MD="$(metadata_latency)" || die "the Metadata measurement failed"
read -r MD_TOPICS MD_PARTS MD_BYTES CLEAN_P50 CLEAN_P99 CLEAN_MAX <<<"$MD"
CLEAN_RSS_MD="$(rss_mib)"
log "clean restart: ready in $CLEAN_READY_MS ms, RSS $CLEAN_RSS MiB, Metadata p50 $CLEAN_P50 ms p99 $CLEAN_P99 ms"

stop_broker KILL
start_broker after-kill9
KILL_READY_MS=$READY_MS
KILL_RSS="$(rss_mib)"
MD="$(metadata_latency)" || die "the Metadata measurement failed"
read -r _ _ _ KILL_P50 KILL_P99 KILL_MAX <<<"$MD"
log "after kill -9: ready in $KILL_READY_MS ms, RSS $KILL_RSS MiB, Metadata p50 $KILL_P50 ms p99 $KILL_P99 ms"
stop_broker TERM

ok_clean="$(verdict "$CLEAN_READY_MS" '<' 5000)"
ok_kill="$(verdict "$KILL_READY_MS" '<' 15000)"
ok_rss="$(verdict "$(python3 -c "print(max($CLEAN_RSS, $CLEAN_RSS_MD, $KILL_RSS))")" '<=' 1024)"
ok_md="$(verdict "$(python3 -c "print(max($CLEAN_P99, $KILL_P99))")" '<' 50)"
FS_TYPE="$(stat -f -c %T "$SCRATCH")"
CPU="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
MEM_GIB="$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)"
SETTINGS_TEXT="none"
[ ${#SET_ARGS[@]} -gt 0 ] && SETTINGS_TEXT="${SETTINGS[*]}"
if [ "$TARGET_SCALE" = 1 ]; then
    TITLE="Start-up with $PARTITIONS partitions and $GB GB"
    SCALE_NOTE="At the target scale (10,000 partitions, 40 GB)."
else
    TITLE="Start-up, SMALL CHECK ($PARTITIONS partitions, $GB GB): not the target scale"
    SCALE_NOTE="**A small check that the script works, not the target scale** (10,000 partitions, \
40 GB): the goals are written for the target scale, so meeting them here says little."
fi

{
    echo "# $TITLE"
    echo
    echo "$SCALE_NOTE"
    echo
    echo "Command: \`perf/startup.sh ${ARGS[*]}\`"
    echo
    echo "Commit: $(commit_id) ($(git -C "$REPO_ROOT" log -1 --format=%cd --date=short)). Machine: $(nproc) CPUs ($CPU), $MEM_GIB GiB RAM, Linux $(uname -r); data directory on $FS_TYPE. Run $(date -u +%FT%TZ)."
    echo
    echo "Broker: \`${NOFILE:+$NOFILE }shardlog --shards $SHARDS\` (open files limit $NOFILE_LIMIT), settings: $SETTINGS_TEXT. Data: $TOPICS topics (\`st-NNNN\`, $PER_TOPIC partitions each, the last $((PARTITIONS - (TOPICS - 1) * PER_TOPIC))) = $PARTITIONS partitions plus \`__consumer_offsets\` (50), filled by \`shardlog-bench produce --record-size 16KiB --batch-bytes 1MiB --acks 1\`, one run per topic, in $FILL_S s: $(python3 -c "print(round($DATA_BYTES / 1e9, 2))") GB on disk in $SEGMENTS segments."
    echo
    echo "| measure | value | goal | met |"
    echo "|---|---|---|---|"
    echo "| clean restart (SIGTERM, exit, start) to ready | $CLEAN_READY_MS ms (the stop took $CLEAN_STOP_MS ms) | < 5 s | $ok_clean |"
    echo "| kill -9, start to ready | $KILL_READY_MS ms | < 15 s | $ok_kill |"
    echo "| RSS after the clean restart | $CLEAN_RSS MiB ($CLEAN_RSS_MD MiB after the Metadata requests) | <= 1 GiB | $ok_rss |"
    echo "| RSS after the kill -9 restart | $KILL_RSS MiB | <= 1 GiB | $ok_rss |"
    echo "| Metadata (v1, all $MD_TOPICS topics, $MD_PARTS partitions, $MD_BYTES bytes), $MD_REQUESTS requests after the clean restart | p50 $CLEAN_P50 ms, p99 $CLEAN_P99 ms, max $CLEAN_MAX ms | p99 < 50 ms | $ok_md |"
    echo "| the same after the kill -9 restart | p50 $KILL_P50 ms, p99 $KILL_P99 ms, max $KILL_MAX ms | p99 < 50 ms | $ok_md |"
    echo
    echo "Also: the first start (empty data directory) was ready in $FIRST_READY_MS ms; RSS after the fill $RSS_FILLED MiB."
    echo
    echo "How: ready = \`/v1/status/ready\` on the metrics port answering 200, polled every 20 ms from the moment the process is started. RSS = VmRSS of /proc/<pid>/status right after ready. Metadata = a Metadata v1 request with topics = null on one TCP connection from Python (raw socket, the response read whole but not decoded: one untimed request before is decoded to count topics and partitions and check their error codes). Broker logs and bench output are in \`raw/\` (not committed)."
} >"$OUT/README.md"
cat "$OUT/README.md"
