#!/usr/bin/env bash
# Cold reads must not stall a shard (issue 12): produce at a fixed rate and measure its ack
# latency alone, then again while one consumer reads data that is not in the page cache.
#
#   1. fill a topic spread over every shard with COLD_GB of 1 KiB records;
#   2. fio: buffered sequential read of a file of the same data directory's disk, caches dropped
#      first (the physical limit the cold reader is compared with);
#   3. "alone": produce --rate RATE --linger 0 --acks 1 on another topic spread over every shard;
#   4. drop the page cache (sync; echo 3 > /proc/sys/vm/drop_caches), then the same produce run
#      while one consumer reads the whole cold topic from the start.
# Goal: ack p99 under the cold reader at most 1.5x the p99 alone, and the cold reader at least
# 80 % of fio's rate. Needs root (drop_caches). Writes summary.md and summary.json.
#
# --reader-priority idle runs the cold reader under SCHED_IDLE (chrt --idle 0): on a machine
# where the clients share the broker's cores, the reader's client alone needs most of a core
# for its receive copies (perf: 45 % of 2 CPUs at ~330 MB/s); at idle priority it takes only
# what the broker and the producer leave, as a consumer on another machine would.
#
# --scratch DIR puts the broker's data directory and fio's file under DIR instead of under --out
# (to measure another filesystem; both always share one disk, so fio's rate is that disk's).
#
# Usage: perf/cold-read.sh [--out DIR] [--cold-gb N] [--rate R] [--seconds S] [--shards N]
#                          [--reader-priority normal|idle] [--scratch DIR]
source "$(dirname "$0")/lib.sh"

OUT="$(default_results_dir)-cold-read"
COLD_GB=8.5
RATE=20000
RUN_SECONDS=12
SHARDS=2
READER_PRIORITY=normal
SCRATCH=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --cold-gb) COLD_GB="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --seconds) RUN_SECONDS="$2"; shift 2 ;;
        --shards) SHARDS="$2"; shift 2 ;;
        --reader-priority) READER_PRIORITY="$2"; shift 2 ;;
        --scratch) SCRATCH="$2"; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "needs root to drop the page cache"
case "$READER_PRIORITY" in
    normal) READER_PREFIX=() ;;
    idle) READER_PREFIX=(chrt --idle 0) ;;
    *) die "--reader-priority is normal or idle" ;;
esac
ensure_cmd fio fio
ensure_cmd python3 python3
OUT="$(abs_path "$OUT")"
mkdir -p "$OUT/raw" "$OUT/runs"
SCRATCH="$(abs_path "${SCRATCH:-$OUT/raw}")"
mkdir -p "$SCRATCH"
DATA="$SCRATCH/data"
FIO_DIR="$SCRATCH/fio"
rm -rf "$DATA"
trap 'stop_started; rm -rf "$DATA" "$FIO_DIR"' EXIT
FS_TYPE="$(stat -f -c %T "$SCRATCH")"
log "data directory $DATA on a $FS_TYPE filesystem"

B="$(bench_bin)"
start_shardlog "$DATA" "$SHARDS" "$OUT/raw/broker.log"
PARTITIONS=$((SHARDS * 2))
RECORDS=$(python3 -c "print(int($COLD_GB * 1e9 / 1024))")

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

log "filling topic cold with $RECORDS records of 1 KiB ($COLD_GB GB) over $PARTITIONS partitions"
"$B" produce --bootstrap "$SHARDLOG_ADDR" --topic cold --partitions "$PARTITIONS" \
    --record-size 1KiB --messages "$RECORDS" --acks 1 --quiet \
    --out "$OUT/runs" --name fill >"$OUT/raw/fill.txt"
# The produce topic exists before the runs, so no creation lands inside them.
"$B" produce --bootstrap "$SHARDLOG_ADDR" --topic hot --partitions "$PARTITIONS" \
    --record-size 1KiB --messages 1000 --acks 1 --quiet \
    --out "$OUT/raw" --name create-hot >/dev/null

log "fio: buffered sequential read, 1 MiB blocks, caches dropped"
mkdir -p "$FIO_DIR"
fio --name=prep --filename="$FIO_DIR/f" --rw=write --bs=1M --size=4G --ioengine=psync \
    --end_fsync=1 >/dev/null
drop_caches
fio --name=seqread --filename="$FIO_DIR/f" --rw=read --bs=1M --size=4G --ioengine=psync \
    --output-format=json >"$OUT/raw/fio-read.json"
rm -rf "$FIO_DIR"

produce_run() { # NAME
    "$B" produce --bootstrap "$SHARDLOG_ADDR" --topic hot --record-size 1KiB --rate "$RATE" \
        --linger 0 --acks 1 --duration "${RUN_SECONDS}s" --warmup 2s --quiet \
        --out "$OUT/runs" --name "$1" >"$OUT/raw/$1.txt"
}

drop_caches
log "produce alone: $RATE records/s for ${RUN_SECONDS}s"
produce_run alone

drop_caches
log "produce while one consumer reads the cold topic"
METRICS_URL="$(grep -o 'metrics and health on http://[0-9.:]*/metrics' "$OUT/raw/broker.log" | head -1 | awk '{print $5}')"
metric() { curl -s "$METRICS_URL" 2>/dev/null | grep "^shardlog_fetch_bytes_total" || true; }
metric >"$OUT/raw/fetch-paths-before.txt"
"${READER_PREFIX[@]}" "$B" consume --bootstrap "$SHARDLOG_ADDR" --topic cold --from earliest \
    --messages "$RECORDS" --quiet --out "$OUT/runs" --name cold-reader >"$OUT/raw/cold-reader.txt" &
CONSUMER=$!
sleep 1
produce_run with-cold-reader
wait "$CONSUMER" || die "the cold reader failed (see $OUT/raw/cold-reader.txt)"
metric >"$OUT/raw/fetch-paths-after.txt"

python3 - "$OUT" "$RATE" "$COLD_GB" "$SHARDS" "$(commit_id)" "$RUN_SECONDS" "$READER_PRIORITY" "$FS_TYPE" <<'EOF'
import json, sys, os
out, rate, cold_gb, shards, commit, run_s, reader_priority, fs_type = sys.argv[1:]
runs = os.path.join(out, "runs")
alone = json.load(open(os.path.join(runs, "alone.json")))["produce"]["ack_latency_ms"]
loaded = json.load(open(os.path.join(runs, "with-cold-reader.json")))["produce"]["ack_latency_ms"]
reader = json.load(open(os.path.join(runs, "cold-reader.json")))
fio = json.load(open(os.path.join(out, "raw", "fio-read.json")))
fio_mb = fio["jobs"][0]["read"]["bw_bytes"] / 1e6
reader_mb = reader["consume"]["mb_per_s"]
ratio_p99 = loaded["p99"] / alone["p99"]
ratio_read = reader_mb / fio_mb
def paths(name):
    d = {}
    for line in open(os.path.join(out, "raw", name)):
        k, v = line.rsplit(" ", 1)
        d[k.split('path="')[1].split('"')[0]] = float(v)
    return d
try:
    before, after = paths("fetch-paths-before.txt"), paths("fetch-paths-after.txt")
    moved = {k: (after[k] - before.get(k, 0)) / 1e6 for k in after}
except (OSError, IndexError, ValueError):
    moved = {}
summary = {
    "commit": commit, "shards": int(shards), "rate": int(rate), "cold_gb": float(cold_gb),
    "reader_priority": reader_priority, "filesystem": fs_type,
    "ack_ms_alone": alone, "ack_ms_with_cold_reader": loaded,
    "p99_ratio": round(ratio_p99, 3), "p99_goal": 1.5,
    "cold_reader_mb_per_s": reader_mb, "cold_reader_seconds": reader["consume"]["seconds"],
    "fio_buffered_seq_read_mb_per_s": round(fio_mb, 1),
    "read_ratio": round(ratio_read, 3), "read_goal": 0.8,
    "fetch_mb_by_path_during_run": moved,
}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
ok = lambda b: "met" if b else "NOT met"
md = f"""# Cold reads vs produce latency ({commit}, {shards} shards, data on {fs_type})

| | p50 ms | p99 ms | p99.9 ms | max ms |
|---|---|---|---|---|
| produce {rate}/s alone | {alone['p50']} | {alone['p99']} | {alone['p99.9']} | {alone['max']} |
| same, one consumer reading {cold_gb} GB cold (reader priority {reader_priority}) | {loaded['p50']} | {loaded['p99']} | {loaded['p99.9']} | {loaded['max']} |

- p99 ratio {ratio_p99:.2f} (goal at most 1.5: {ok(ratio_p99 <= 1.5)})
- cold reader {reader_mb:.1f} MB/s over {reader['consume']['seconds']:.1f} s; fio buffered sequential
  read on the same disk {fio_mb:.1f} MB/s; ratio {ratio_read:.2f} (goal at least 0.8: {ok(ratio_read >= 0.8)})
- the reader ran {reader['consume']['seconds']:.1f} s, the produce run {float(run_s) + 3:.0f} s from its start
  ({'covered' if reader['consume']['seconds'] >= float(run_s) + 3 else 'NOT covered: raise --cold-gb'})
- fetch MB by path while it ran: {', '.join(f'{k} {v:.0f}' for k, v in sorted(moved.items())) or 'n/a'}
"""
open(os.path.join(out, "summary.md"), "w").write(md)
print(md)
EOF
