#!/usr/bin/env bash
# acks=all throughput and latency of a 3-broker Shardlog cluster on this machine, next to a
# single standalone broker with acks=1 and acks=all (same bench, same run), so the cost of
# replication reads as a ratio. Starts ZooKeeper (Debian package) and the brokers on loopback
# ports, each broker pinned by taskset to one CPU (round robin over the CPUs of this machine),
# one shard each.
#
# Usage: perf/cluster.sh [--duration 20s] [--warmup 5s] [--sizes "1024"] [--partitions "1 3"]
#                        [--acks "all 1"] [--broker-bin PATH] [--skip-standalone] [--out DIR]
# Results: DIR/summary.md and DIR/runs/*.json; broker and ZooKeeper logs in DIR/raw/ (the
# brokers' data directories are removed at the end: a run writes tens of GB).
# --broker-bin runs another build (an A/B comparison) instead of building this tree.
source "$(dirname "$0")/lib.sh"

OUT="$(default_results_dir)-cluster"
DURATION=20s
WARMUP=5s
SIZES="1024"
PARTITIONS="1 3"
ACKS="all 1"
BROKER=""
STANDALONE=1
COMMAND_LINE="perf/cluster.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --sizes) SIZES="$2"; shift 2 ;;
        --partitions) PARTITIONS="$2"; shift 2 ;;
        --acks) ACKS="$2"; shift 2 ;;
        --broker-bin) BROKER="$2"; shift 2 ;;
        --skip-standalone) STANDALONE=""; shift ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done

cleanup() {
    stop_started
    rm -rf "$OUT/raw"/data-* "$OUT/raw/standalone"
}
trap cleanup EXIT
mkdir -p "$OUT/runs" "$OUT/raw"
OUT="$(abs_path "$OUT")"
ensure_zookeeper
BENCH="$(bench_bin)"
if [ -z "$BROKER" ]; then
    log "building the shardlog broker (release)"
    (cd "$REPO_ROOT" && cargo build --release -q -p shardlog-broker --bin shardlog) >&2 \
        || die "cargo build --release -p shardlog-broker failed"
    BROKER="$REPO_ROOT/target/release/shardlog"
fi
[ -x "$BROKER" ] || die "no broker binary at $BROKER"
BROKER="$(realpath "$BROKER")"
NCPU="$(nproc)"

# start_broker ID CPU [--set k=v ..]: a cluster broker; appends its address to BROKERS.
start_broker() {
    local id="$1" cpu="$2" port logf; shift 2
    port="$(free_port)"
    logf="$OUT/raw/broker-$id.log"
    mkdir -p "$OUT/raw/data-$id"
    taskset -c "$cpu" "$BROKER" --broker-id "$id" --zookeeper "$ZK_ADDR" \
        --listen "127.0.0.1:$port" --data-dir "$OUT/raw/data-$id" --shards 1 --set metrics.listen=127.0.0.1:0 "$@" >"$logf" 2>&1 &
    STARTED_PIDS+=($!)
    wait_listen "127.0.0.1:$port" "$!" 60 || die "broker $id did not start (log: $logf)"
    BROKERS="${BROKERS:+$BROKERS,}127.0.0.1:$port"
}

bench() {
    local name="$1" bootstrap="$2"; shift 2
    log "run $name"
    "$BENCH" produce --bootstrap "$bootstrap" --duration "$DURATION" --warmup "$WARMUP" --quiet \
        --out "$OUT/runs" --name "$name" "$@" >"$OUT/raw/$name.txt" 2>&1 \
        || log "run $name failed (see raw/$name.txt)"
}

# Standalone baseline, one broker on one CPU with one shard, like each cluster member.
if [ -n "$STANDALONE" ]; then
    SA_PORT="$(free_port)"
    mkdir -p "$OUT/raw/standalone"
    taskset -c 0 "$BROKER" --listen "127.0.0.1:$SA_PORT" --set metrics.listen=127.0.0.1:0 --data-dir "$OUT/raw/standalone" \
        --shards 1 >"$OUT/raw/standalone.log" 2>&1 &
    SA_PID=$!
    STARTED_PIDS+=($SA_PID)
    wait_listen "127.0.0.1:$SA_PORT" "$SA_PID" 30 || die "standalone broker did not start"
    for size in $SIZES; do
        for p in $PARTITIONS; do
            for acks in $ACKS; do
                bench "standalone-${size}b-p$p-acks$acks" "127.0.0.1:$SA_PORT" \
                    --topic "sa-$size-$p" --partitions "$p" --record-size "$size" --acks "$acks"
            done
        done
    done
    kill "$SA_PID"; wait "$SA_PID" 2>/dev/null || true
fi

start_zookeeper "$OUT/raw/zk"
BROKERS=""
for id in 1 2 3; do
    start_broker "$id" $(( (id - 1) % NCPU )) --set min.insync.replicas=2 \
        --set offsets.topic.replication.factor=3
done
log "cluster: $BROKERS"
sleep 3
for size in $SIZES; do
    for p in $PARTITIONS; do
        for acks in $ACKS; do
            bench "cluster-rf3-${size}b-p$p-acks$acks" "$BROKERS" --topic "c$acks-$size-$p" \
                --partitions "$p" --replication-factor 3 --record-size "$size" --acks "$acks"
        done
    done
done

{
    echo "# Cluster produce: 3 brokers, RF 3, min.insync.replicas=2"
    echo
    echo "- command: \`$COMMAND_LINE\`"
    echo "- commit: $(commit_id), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)"
    echo "- brokers: one shard each, pinned round robin to CPUs 0..$((NCPU - 1)); standalone: one shard on CPU 0"
    echo "- each run: $DURATION ($WARMUP warm-up excluded), closed loop, one producer, 5 requests in flight"
    echo
    echo "| run | records/s | MB/s | p50 ms | p99 ms | max ms | error responses |"
    echo "|---|---|---|---|---|---|---|"
    for f in "$OUT"/runs/*.json; do
        python3 - "$f" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
name = sys.argv[1].rsplit('/', 1)[-1][:-5]
def get(*path):
    x = d
    for p in path:
        if not isinstance(x, dict) or p not in x:
            return None
        x = x[p]
    return x
prod = get('produce') or d
rps = prod.get('records_per_sec') or prod.get('records_per_s')
mbs = prod.get('mb_per_sec') or prod.get('mb_per_s')
lat = prod.get('latency_ms') or prod.get('ack_latency_ms') or {}
fmt = lambda v: '-' if v is None else (f'{v:,.0f}' if v > 100 else f'{v:.2f}')
print(f"| {name} | {fmt(rps)} | {fmt(mbs)} | {fmt(lat.get('p50'))} | {fmt(lat.get('p99'))} | {fmt(lat.get('max'))} | {prod.get('error_responses', '-')} |")
PY
    done
    echo
    echo "Physical limits on this machine (perf/limits.sh, perf/results/2026-11-21-4a71a50):"
    echo "loopback TCP 1.69 GB/s (iperf3, 128 KiB writes); disk 476 MB/s buffered, 75 MB/s with fdatasync."
    echo "Every record crosses loopback three times in a 3-broker cluster (producer to leader,"
    echo "leader to each of two followers), all on the same $(nproc) CPUs."
} >"$OUT/summary.md"
cat "$OUT/summary.md"
