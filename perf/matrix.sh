#!/usr/bin/env bash
# The standard matrix, against Shardlog and a peer broker side by side in the same run:
#   record size 1 KiB and 100 B  x  1 and 8 partitions  x  acks=1 and acks=all, each:
#     1. maximum produce throughput (closed loop, unlimited rate)
#     2. consume from page cache: read back what step 1 wrote, from earliest
#     3. fixed-rate end-to-end latency at 50 % of the maximum from step 1 (open loop)
# For every configuration the peer runs right after Shardlog, so both see the same machine.
# Physical limits (perf/limits.sh) are measured first; the summary gives each figure also as a
# fraction of them.
#
# Results: DIR/limits.{json,md}, DIR/runs/*.json and *.svg (one per bench run), DIR/summary.md
# and DIR/summary.json. DIR defaults to perf/results/<date>-<commit>.
#
# Usage: perf/matrix.sh [options]
#   --bootstrap ADDR        measure the broker at ADDR instead of starting Shardlog
#   --shards N              shards for the Shardlog started here            [nproc]
#   --peer tansu|none       peer started here for comparison                [tansu]
#   --peer-bootstrap ADDR   measure an already running peer instead (Kafka, Redpanda, ...)
#   --peer-name NAME        its name in the summary                        [tansu or peer]
#   --peer-storage S        tansu storage engine: memory or sqlite          [memory]
#   --duration DUR          length of each produce and latency run, warm-up
#                           included (shardlog-bench --duration)            [15s]
#   --warmup DUR            first part of each run, excluded from figures   [3s]
#   --sizes "1024 100"      record sizes    --partitions "1 8"    --acks "1 all"
#   --e2e-rate R            also an end-to-end run at this fixed rate per config, with
#                           --e2e-linger (0 = skip)                          [1000]
#   --e2e-linger DUR        producer linger for those runs (broker latency)  [0]
#   --e2e-default-linger-cfgs "CFG .."  configs (e.g. 1024b-p1-acks1) that also get the
#                           fixed-rate run with the bench's default linger (5 ms)  [1024b-p1-acks1]
#   --quick                 5 s runs, one size/partition/acks each (script check)
#   --no-limits             skip perf/limits.sh (reuse DIR/limits.json if present)
#   --out DIR
source "$(dirname "$0")/lib.sh"

OUT="$(default_results_dir)"
BOOTSTRAP=""
SHARDS="$(nproc)"
PEER=tansu
PEER_BOOTSTRAP=""
PEER_NAME=""
PEER_STORAGE=memory
DURATION=15s
WARMUP=3s
SIZES="1024 100"
PARTITIONS="1 8"
ACKS="1 all"
LIMITS=1
E2E_RATE=1000
E2E_LINGER=0
E2E_L5_CFGS="1024b-p1-acks1"
COMMAND_LINE="perf/matrix.sh $*"
while [ $# -gt 0 ]; do
    case "$1" in
        --bootstrap) BOOTSTRAP="$2"; shift 2 ;;
        --shards) SHARDS="$2"; shift 2 ;;
        --peer) PEER="$2"; shift 2 ;;
        --peer-bootstrap) PEER_BOOTSTRAP="$2"; shift 2 ;;
        --peer-name) PEER_NAME="$2"; shift 2 ;;
        --peer-storage) PEER_STORAGE="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --sizes) SIZES="$2"; shift 2 ;;
        --partitions) PARTITIONS="$2"; shift 2 ;;
        --acks) ACKS="$2"; shift 2 ;;
        --quick) DURATION=5s; WARMUP=1s; SIZES=1024; PARTITIONS=1; ACKS=1; shift ;;
        --no-limits) LIMITS=0; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --e2e-rate) E2E_RATE="$2"; shift 2 ;;
        --e2e-linger) E2E_LINGER="$2"; shift 2 ;;
        --e2e-default-linger-cfgs) E2E_L5_CFGS="$2"; shift 2 ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
OUT="$(abs_path "$OUT")"
case "$PEER" in tansu|none) ;; *) die "--peer must be tansu or none" ;; esac
[ -n "$BOOTSTRAP" ] && require_loopback "$BOOTSTRAP"
[ -n "$PEER_BOOTSTRAP" ] && require_loopback "$PEER_BOOTSTRAP"
ensure_cmd python3 python3
ensure_cmd jq jq
mkdir -p "$OUT/runs" "$OUT/raw"
trap stop_started EXIT
BENCH="$(bench_bin)"
RUN_ID="$(date +%H%M%S)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
# The commit the run started from (HEAD may move while a long run is under way).
COMMIT="$(commit_id)"
[ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] && COMMIT="$COMMIT + working tree"

if [ "$LIMITS" = 1 ]; then
    "$PERF_DIR/limits.sh" --out "$OUT" >/dev/null
fi

# Targets: name=addr pairs, Shardlog first.
TARGETS=()
if [ -n "$BOOTSTRAP" ]; then
    TARGETS+=("shardlog=$BOOTSTRAP")
else
    start_shardlog "$OUT/raw/shardlog-data" "$SHARDS" "$OUT/raw/shardlog.log"
    TARGETS+=("shardlog=$SHARDLOG_ADDR")
fi
PEER_NOTE=""
if [ -n "$PEER_BOOTSTRAP" ]; then
    TARGETS+=("${PEER_NAME:-peer}=$PEER_BOOTSTRAP")
    PEER_NOTE="${PEER_NAME:-peer} at $PEER_BOOTSTRAP (already running)"
elif [ "$PEER" = tansu ]; then
    if start_tansu "$OUT/raw/tansu-data" "$PEER_STORAGE" "$OUT/raw/tansu.log"; then
        TARGETS+=("${PEER_NAME:-tansu}=$PEER_ADDR")
        PEER_NOTE="$(tansu --version 2>/dev/null | head -1) with $PEER_STORAGE storage, started here"
    else
        PEER_NOTE="tansu could not be installed or started here: no peer in this run"
        log "$PEER_NOTE"
    fi
fi

write_run_json() {
    python3 - "$OUT/run.json" <<PY
import json, os, platform, sys
mem = ""
for line in open("/proc/meminfo"):
    if line.startswith("MemTotal:"):
        mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
json.dump({
    "commit": "$COMMIT", "commit_at_end": "$(commit_id)", "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "duration": "$DURATION",
    "warmup": "$WARMUP", "shards": "$SHARDS", "targets": "$(printf '%s ' "${TARGETS[@]}")",
    "peer_note": "$PEER_NOTE", "command": "$COMMAND_LINE",
    "e2e_rate": "$E2E_RATE", "e2e_linger": "$E2E_LINGER",
    "machine": {"nproc": os.cpu_count(), "memory": mem, "kernel": platform.release()},
    "load_start": "$LOAD_START", "load_end": "${LOAD_END:-}",
}, open(sys.argv[1], "w"), indent=1)
PY
}
write_run_json

# Runs one bench invocation; never aborts the matrix. Args: NAME BENCH-ARGS...
bench_run() {
    local name="$1"; shift
    log "run $name: $*"
    local rc=0
    "$BENCH" "$@" --out "$OUT/runs" --name "$name" --quiet >"$OUT/raw/$name.txt" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        log "run $name failed (exit $rc): $(tail -1 "$OUT/raw/$name.txt")"
        # The summary lists failed runs with their reason (exit 3 still wrote partial JSON).
        tail -1 "$OUT/raw/$name.txt" >"$OUT/runs/$name.failed"
        # Exit 3 (broker lost mid-run) still wrote partial results; the summary marks them.
        return 1
    fi
}

for size in $SIZES; do
    for parts in $PARTITIONS; do
        for acks in $ACKS; do
            cfg="${size}b-p${parts}-acks${acks}"
            for target in "${TARGETS[@]}"; do
                tname="${target%%=*}"; addr="${target#*=}"
                topic="matrix-${cfg}-${RUN_ID}"
                common=(--bootstrap "$addr" --record-size "$size" --partitions "$parts" --acks "$acks")
                if bench_run "$tname-$cfg-max" produce "${common[@]}" --topic "$topic" \
                    --duration "$DURATION" --warmup "$WARMUP"; then
                    bench_run "$tname-$cfg-consume" consume --bootstrap "$addr" --topic "$topic" \
                        --from earliest || true
                    rps="$(jq -r '.produce.records_per_s' "$OUT/runs/$tname-$cfg-max.json")"
                    rate="$(python3 -c "print(max(1, int(float('$rps') / 2)))")"
                    bench_run "$tname-$cfg-lat50" e2e "${common[@]}" --topic "$topic-lat" \
                        --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" || true
                fi
                # Fixed low rate: broker latency rather than queueing (runs even if max failed).
                if [ "$E2E_RATE" != 0 ]; then
                    bench_run "$tname-$cfg-e2e1k" e2e "${common[@]}" --topic "$topic-e2e" \
                        --rate "$E2E_RATE" --linger "$E2E_LINGER" --duration "$DURATION" \
                        --warmup "$WARMUP" || true
                    if [[ " $E2E_L5_CFGS " == *" $cfg "* ]]; then
                        bench_run "$tname-$cfg-e2e1k5" e2e "${common[@]}" --topic "$topic-e2e5" \
                            --rate "$E2E_RATE" --duration "$DURATION" --warmup "$WARMUP" || true
                    fi
                fi
            done
        done
    done
done

LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
write_run_json
python3 "$PERF_DIR/summarize.py" "$OUT" >/dev/null
log "summary: $OUT/summary.md"
