#!/usr/bin/env bash
# The runtime never loses a wake-up (issue 12): with every CPU oversubscribed (busy-loop hogs
# so that runnable threads = OVERSUBSCRIBE x CPUs), start and stop the broker STARTS times
# (every 5th in cluster mode against a local ZooKeeper), then run cross-shard produce and fetch
# for MINUTES on one broker. Counts what the broker's alarms report:
#   - executor restarts ("did not start running within" in the log: rt::run_shards),
#   - watchdog exits (exit status 3: a shard's start-up heartbeat stood still),
#   - lost-wake-up re-checks (rt::recv_cross; shardlog_lost_wakeup_rechecks_total and the log),
#   - starts that never became ready within 60 s, stops that did not exit 0.
# All must be 0. Writes summary.md and summary.json.
#
# Usage: perf/runtime-stress.sh [--out DIR] [--starts N] [--minutes M] [--oversubscribe X]
source "$(dirname "$0")/lib.sh"

OUT="$(default_results_dir)-runtime-stress"
STARTS=500
MINUTES=30
OVERSUBSCRIBE=3
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --starts) STARTS="$2"; shift 2 ;;
        --minutes) MINUTES="$2"; shift 2 ;;
        --oversubscribe) OVERSUBSCRIBE="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
for v in STARTS MINUTES OVERSUBSCRIBE; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "--${v,,} must be a whole number"
done
ensure_cmd python3 python3
ensure_cmd curl curl
ensure_zookeeper
OUT="$(abs_path "$OUT")"
mkdir -p "$OUT/raw" "$OUT/runs"
HOG_PIDS=()
cleanup() {
    local p
    for p in "${HOG_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    stop_started
    rm -rf "$OUT/raw/data" "$OUT/raw/zk/data"
}
trap cleanup EXIT

B="$(bench_bin)"
log "building the shardlog broker (release)"
(cd "$REPO_ROOT" && cargo build --release -q -p shardlog-broker --bin shardlog) >&2 \
    || die "cargo build --release -p shardlog-broker failed"
BROKER="$REPO_ROOT/target/release/shardlog"
NCPU="$(nproc)"
SHARDS="$NCPU"

# Busy loops pinned round-robin: with the broker's shards, OVERSUBSCRIBE runnable threads per CPU.
HOGS=$((NCPU * OVERSUBSCRIBE - SHARDS))
for ((h = 0; h < HOGS; h++)); do
    taskset -c $((h % NCPU)) sh -c 'while :; do :; done' &
    HOG_PIDS+=($!)
done
log "$HOGS CPU hogs on $NCPU CPUs (oversubscribed ${OVERSUBSCRIBE}x with $SHARDS shards)"

start_zookeeper "$OUT/raw/zk"

# The start/stop loop runs in Python: bash's `wait` lost the exit status of some brokers among
# the hog jobs ("No record of process"), which then read as failed stops.
read -r ready_starts never_ready bad_exits watchdog_exits cluster_starts < <(
python3 - "$BROKER" "$OUT/raw" "$STARTS" "$SHARDS" "$ZK_ADDR" <<'PY'
import os, shutil, signal, socket, subprocess, sys, time
broker, raw, starts, shards, zk = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
ready = never = bad = watchdog = cluster = 0
data, logf = os.path.join(raw, "data"), os.path.join(raw, "start.log")
with open(os.path.join(raw, "all-starts.log"), "w") as all_log, \
        open(os.path.join(raw, "starts.log"), "w") as failed_log:
    for i in range(1, starts + 1):
        extra = []
        if i % 5 == 0:
            extra = ["--broker-id", "1", "--zookeeper", zk]
            cluster += 1
        if i % 50 == 1:  # every 50 starts a fresh data directory, else a restart on the same data
            shutil.rmtree(data, ignore_errors=True)
        with open(logf, "w") as out:
            p = subprocess.Popen([broker, "--listen", f"127.0.0.1:{free_port()}", "--data-dir", data,
                                  "--shards", shards, "--set", "metrics.listen=",
                                  "--set", "zookeeper.session.timeout.ms=6000", *extra],
                                 stdout=out, stderr=subprocess.STDOUT)
            ok = False
            deadline = time.time() + 60
            while time.time() < deadline and p.poll() is None:
                if "ready on" in open(logf).read():
                    ok = True
                    break
                time.sleep(0.1)
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                status = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill(); status = p.wait()
        text = open(logf).read()
        all_log.write(text)
        ready += ok; never += not ok; bad += status != 0; watchdog += status == 3
        if not ok or status != 0 or "did not start running within" in text or "wake-up was lost" in text:
            failed_log.write(f"=== start {i} (ready={int(ok)} exit={status} {' '.join(extra)})\n{text}")
        if i % 50 == 0:
            print(f"starts: {i}/{starts} (never ready {never}, bad exits {bad})", file=sys.stderr)
print(ready, never, bad, watchdog, cluster)
PY
)
start_restarts=$(grep -c "did not start running within" "$OUT/raw/all-starts.log" || true)
start_rechecks=$(grep -c "wake-up was lost" "$OUT/raw/all-starts.log" || true)
rm -f "$OUT/raw/all-starts.log"

# Load: cross-shard produce and fetch on one broker whose partitions span every shard.
rm -rf "$OUT/raw/data"
SHARDLOG_METRICS_LISTEN=127.0.0.1:0 start_shardlog "$OUT/raw/data" "$SHARDS" "$OUT/raw/load-broker.log"
METRICS_URL="$(grep -o 'metrics and health on http://[0-9.:]*/metrics' "$OUT/raw/load-broker.log" | head -1 | awk '{print $5}')"
log "load: ${MINUTES} min of e2e produce and fetch, 8 partitions over $SHARDS shards"
load_status=0
"$B" e2e --bootstrap "$SHARDLOG_ADDR" --topic stress --partitions 8 --rate 20k --consumers 2 \
    --producers 2 --connections 2 --duration "${MINUTES}m" --interval 10s --quiet \
    --out "$OUT/runs" --name load >"$OUT/raw/load.txt" || load_status=$?
load_rechecks=$(curl -s "$METRICS_URL" | awk '/^shardlog_lost_wakeup_rechecks_total/ {s += $2} END {print s + 0}')
load_restarts=$(grep -c "did not start running within" "$OUT/raw/load-broker.log" || true)
kill -TERM "$SHARDLOG_PID"
load_exit=0
wait "$SHARDLOG_PID" || load_exit=$?
STARTED_PIDS=("${STARTED_PIDS[@]/$SHARDLOG_PID}")

python3 - "$OUT" "$(commit_id)" "$STARTS" "$cluster_starts" "$ready_starts" "$never_ready" \
    "$bad_exits" "$watchdog_exits" "$start_restarts" "$start_rechecks" "$MINUTES" \
    "$load_status" "$load_rechecks" "$load_restarts" "$load_exit" "$HOGS" "$NCPU" <<'EOF'
import json, os, sys
(out, commit, starts, cluster, ready, never, bad, watchdog, restarts, rechecks, minutes,
 load_status, load_rechecks, load_restarts, load_exit, hogs, ncpu) = sys.argv[1:]
n = lambda s: int(s or 0)
load = {}
try:
    load = json.load(open(os.path.join(out, "runs", "load.json")))
except OSError:
    pass
prod = (load.get("produce") or {})
cons = (load.get("consume") or {})
summary = {
    "commit": commit, "cpus": n(ncpu), "hogs": n(hogs),
    "starts": n(starts), "cluster_starts": n(cluster), "ready": n(ready),
    "never_ready": n(never), "stops_not_exit_0": n(bad), "watchdog_exits": n(watchdog),
    "executor_restarts": n(restarts) + n(load_restarts),
    "lost_wakeup_rechecks": n(rechecks) + n(load_rechecks),
    "load_minutes": n(minutes), "load_bench_status": n(load_status), "load_broker_exit": n(load_exit),
    "load_produce_records": prod.get("records"), "load_consume_records": cons.get("records"),
    "load_ack_ms": prod.get("ack_latency_ms"), "load_e2e_ms": cons.get("e2e_latency_ms"),
}
alarms = (summary["never_ready"] + summary["stops_not_exit_0"] + summary["watchdog_exits"]
          + summary["executor_restarts"] + summary["lost_wakeup_rechecks"]
          + summary["load_bench_status"] + summary["load_broker_exit"])
summary["passed"] = alarms == 0
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
md = f"""# Runtime stress ({commit}): {ncpu} CPUs, {hogs} busy-loop hogs

| | count |
|---|---|
| broker starts (cluster mode) | {starts} ({cluster}) |
| became ready within 60 s | {ready} |
| never ready | {never} |
| stops with a non-zero exit | {bad} |
| watchdog exits (status 3) | {watchdog} |
| executor restarts (start-up retry) | {summary['executor_restarts']} |
| lost-wake-up re-checks fired | {summary['lost_wakeup_rechecks']} |
| load: {minutes} min e2e, bench exit / broker exit | {load_status} / {load_exit} |
| load: records produced / consumed | {prod.get('records')} / {cons.get('records')} |

Result: {'PASSED (all alarms 0)' if summary['passed'] else 'FAILED'}
"""
open(os.path.join(out, "summary.md"), "w").write(md)
print(md)
sys.exit(0 if summary["passed"] else 1)
EOF
