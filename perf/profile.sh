#!/usr/bin/env bash
# Flame graph of the Shardlog broker under a chosen shardlog-bench workload.
#
# Starts the broker built with `cargo build --profile profiling` (release code plus line
# tables; the release profile ships without debug info) on loopback, or profiles an already
# running one with --pid and --bootstrap (build it with --profile profiling as well, else its
# frames have names but no source lines or inlined functions). Runs the workload, samples the
# broker with `perf record` (Debian's linux-perf) for the workload's duration, and folds the
# stacks into an SVG flame graph with inferno (`cargo install inferno` when missing). If perf
# cannot sample on this machine (no PMU access, kernel.perf_event_paranoid too high, no
# permission), it says so and exits with status 4.
#
# Usage: perf/profile.sh [--out DIR] [--shards N] [--frequency HZ] [--call-graph dwarf|fp]
#                        [--pid PID --bootstrap ADDR] [--setup "BENCH ARGS"] [-- BENCH ARGS...]
# --setup runs one shardlog-bench workload before sampling starts (e.g. fill a topic that the
# profiled workload then consumes: --setup "produce --topic t --partitions 8 --duration 10s").
# --call-graph dwarf (default) unwinds Rust code built without frame pointers; fp is cheaper.
# The bench args default to: produce --duration 20s --record-size 1KiB --partitions 8
# (--bootstrap is added). Output: DIR/flamegraph.svg, DIR/bench/*.json; large or raw files
# (perf.data, folded stacks, broker data and logs) go to DIR/raw/ (git-ignored).
source "$(dirname "$0")/lib.sh"

OUT="$(default_results_dir)/profile-$(date +%H%M%S)"
SHARDS="$(nproc)"
FREQ=499
CALL_GRAPH=dwarf
PID=""
BOOTSTRAP=""
BENCH_ARGS=()
SETUP=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --shards) SHARDS="$2"; shift 2 ;;
        --frequency) FREQ="$2"; shift 2 ;;
        --call-graph) CALL_GRAPH="$2"; shift 2 ;;
        --pid) PID="$2"; shift 2 ;;
        --bootstrap) BOOTSTRAP="$2"; shift 2 ;;
        --setup) SETUP="$2"; shift 2 ;;
        --) shift; BENCH_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
OUT="$(abs_path "$OUT")"
if [ ${#BENCH_ARGS[@]} -eq 0 ]; then
    BENCH_ARGS=(produce --duration 20s --record-size 1KiB --partitions 8 --topic profile)
fi
if [ -n "$PID" ] && [ -z "$BOOTSTRAP" ]; then die "--pid needs --bootstrap ADDR of that broker"; fi
case "$CALL_GRAPH" in dwarf|fp) ;; *) die "--call-graph must be dwarf or fp" ;; esac
TARGET_NAME=shardlog
[ -n "$PID" ] && TARGET_NAME="$(ps -o comm= -p "$PID" 2>/dev/null || echo "pid $PID")"
[ -n "$BOOTSTRAP" ] && require_loopback "$BOOTSTRAP"
mkdir -p "$OUT/bench" "$OUT/raw"
RAW="$OUT/raw"
trap stop_started EXIT

ensure_cmd perf linux-perf
# Can perf sample here at all? A VM without PMU passthrough still allows the cpu-clock
# software event, so try that; report clearly if even that is refused.
paranoid="$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo '?')"
if ! probe="$(perf record -e cpu-clock -F 99 -g -o "$RAW/probe.data" -- sleep 0.2 2>&1)"; then
    echo "perf cannot sample on this machine (kernel.perf_event_paranoid=$paranoid, user $(id -un))." >&2
    echo "perf said: $probe" >&2
    echo "Fixes: run as root, or sysctl kernel.perf_event_paranoid=1, or use a machine with perf access." >&2
    exit 4
fi
rm -f "$RAW/probe.data"
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
    PATH="$HOME/.cargo/bin:$PATH"
    if ! command -v inferno-flamegraph >/dev/null 2>&1; then
        log "installing inferno (flame graph tools): cargo install inferno --locked"
        cargo install inferno --locked >&2 || die "cargo install inferno failed"
    fi
fi

BENCH="$(bench_bin)"
if [ -z "$PID" ]; then
    SHARDLOG_CARGO_PROFILE=profiling
    start_shardlog "$RAW/data" "$SHARDS" "$RAW/shardlog.log"
    PID="$SHARDLOG_PID"
    BOOTSTRAP="$SHARDLOG_ADDR"
fi

if [ -n "$SETUP" ]; then
    log "setup (not sampled): shardlog-bench $SETUP --bootstrap $BOOTSTRAP"
    # shellcheck disable=SC2086
    "$BENCH" $SETUP --bootstrap "$BOOTSTRAP" --out "$OUT/bench" --name setup --quiet \
        >"$OUT/bench/setup.txt" 2>&1 || die "setup workload failed: $(tail -1 "$OUT/bench/setup.txt")"
fi

# perf starts first so that short workloads (a consume that reads to the end) are sampled from
# their beginning; the broker is idle until the workload connects, which adds few samples.
log "perf record -F $FREQ --call-graph $CALL_GRAPH on $TARGET_NAME (pid $PID) until the workload ends"
perf record -e cpu-clock -F "$FREQ" --call-graph "$CALL_GRAPH" -p "$PID" -o "$RAW/perf.data" \
    2>"$RAW/perf-record.log" &
PERF_PID=$!
sleep 0.5
log "workload: shardlog-bench ${BENCH_ARGS[*]} --bootstrap $BOOTSTRAP"
"$BENCH" "${BENCH_ARGS[@]}" --bootstrap "$BOOTSTRAP" --out "$OUT/bench" --quiet \
    >"$OUT/bench/output.txt" 2>&1 || log "the workload exited with $? (see $OUT/bench/output.txt)"
kill -INT "$PERF_PID" 2>/dev/null || true
wait "$PERF_PID" 2>/dev/null || true
[ -s "$RAW/perf.data" ] || die "perf recorded nothing (see $RAW/perf-record.log)"

log "folding stacks (perf script | inferno-collapse-perf)"
perf script -i "$RAW/perf.data" 2>/dev/null | inferno-collapse-perf >"$RAW/stacks.folded"
if [ ! -s "$RAW/stacks.folded" ]; then
    cat "$OUT/bench/output.txt" >&2
    die "perf recorded no samples of pid $PID: the broker was idle during the workload (stalled?)"
fi
inferno-flamegraph --title "$TARGET_NAME: ${BENCH_ARGS[*]}" --countname samples \
    <"$RAW/stacks.folded" >"$OUT/flamegraph.svg"
cat "$OUT/bench/output.txt"
log "flame graph: $OUT/flamegraph.svg ($(wc -l <"$RAW/stacks.folded") distinct stacks)"
