#!/usr/bin/env bash
# What recording metrics costs: produce throughput and broker CPU per GB with metrics on
# (metrics.listen set, scraped every second as Prometheus would) and off (metrics.listen empty:
# nothing is recorded), alternated so that the disk's state (writeback of earlier runs) falls
# on both sides alike.
#
#   perf/metrics-overhead.sh [--rounds 3] [--duration 10s] [--record-size 1KiB]
#
# Writes perf/results/<date>-<commit>-metrics-overhead/{summary.md,raw/}.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS=3
DURATION=10s
SIZE=1KiB
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --record-size) SIZE="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
cd "$REPO_ROOT"
cargo build --release -q -p shardlog-broker --bin shardlog -p shardlog-bench
commit="$(git rev-parse --short HEAD)"
OUT="perf/results/$(date -u +%Y-%m-%d)-$commit-metrics-overhead"
mkdir -p "$OUT/raw"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ="$(getconf CLK_TCK)"

# run LABEL METRICS_LISTEN: prints "records/s MB/s cpu_seconds_per_GB"
run() {
    local label="$1" metrics="$2" dir port pid scraper="" bench cpu
    dir="$(mktemp -d)"
    port="$(free_port)"
    target/release/shardlog --listen "127.0.0.1:$port" --data-dir "$dir/data" --shards 1 \
        --set "metrics.listen=$metrics" >"$OUT/raw/broker-$label.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    if [ -n "$metrics" ]; then
        ( while sleep 1; do curl -s "http://$metrics/metrics" >"$OUT/raw/metrics-$label.txt"; done ) &
        scraper=$!
    fi
    local before; before="$(ticks "$pid")"
    target/release/shardlog-bench produce --bootstrap "127.0.0.1:$port" --topic ov \
        --record-size "$SIZE" --acks 1 --duration "$DURATION" >"$OUT/raw/bench-$label.txt" 2>&1
    cpu=$(( $(ticks "$pid") - before ))
    [ -n "$scraper" ] && kill "$scraper" 2>/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir" shardlog-bench-results
    bench="$(grep -A1 'records/s' "$OUT/raw/bench-$label.txt" | tail -1)"
    # produce RECORDS RATE MB/s ERRORS
    awk -v cpu="$cpu" -v hz="$HZ" -v size="$SIZE" '{
        mb=$4; secs=$2/($3 ~ /k$/ ? substr($3,1,length($3)-1)*1000 : ($3 ~ /M$/ ? substr($3,1,length($3)-1)*1e6 : $3));
        gb=mb*secs/1000; printf "%s %s %.2f\n", $3, mb, (cpu/hz)/gb }' <<<"$bench"
}

{
    echo "# Metrics recording overhead"
    echo
    echo "Command: \`perf/metrics-overhead.sh --rounds $ROUNDS --duration $DURATION --record-size $SIZE\`"
    echo "Commit: $commit. Machine: $(nproc) CPUs, $(uname -r), $(date -u +%FT%TZ)."
    echo "One broker with one shard (with two, the producer's connection lands on the partition's"
    echo "shard or not at random, ~650k vs ~370k rec/s, which hides everything else), one"
    echo "shardlog-bench producer, 1 partition, acks=1; 'on' is scraped every second during the run."
    echo "Limits on this machine (perf/limits.sh): loopback 1.69 GB/s, disk 476 MB/s buffered."
    echo
    echo "| round | order | on rec/s | on MB/s | on CPU-s/GB | off rec/s | off MB/s | off CPU-s/GB |"
    echo "|---|---|---|---|---|---|---|---|"
} >"$OUT/summary.md"
for r in $(seq "$ROUNDS"); do
    sync; sleep 3
    if [ $((r % 2)) -eq 1 ]; then
        on="$(run "on$r" "127.0.0.1:$(free_port)")"; sync; sleep 3; off="$(run "off$r" "")"; order="on,off"
    else
        off="$(run "off$r" "")"; sync; sleep 3; on="$(run "on$r" "127.0.0.1:$(free_port)")"; order="off,on"
    fi
    read -r on_rate on_mb on_cpu <<<"$on"
    read -r off_rate off_mb off_cpu <<<"$off"
    echo "| $r | $order | $on_rate | $on_mb | $on_cpu | $off_rate | $off_mb | $off_cpu |" >>"$OUT/summary.md"
done
cat "$OUT/summary.md"
