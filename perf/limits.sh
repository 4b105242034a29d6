#!/usr/bin/env bash
# Measures this machine's physical limits, to put every benchmark figure next to them:
#   - loopback TCP throughput (iperf3, one stream, 127.0.0.1)
#   - sequential disk write with fio: buffered (page cache, like acks=1 without flush), and
#     with fdatasync after every 256 KiB write (durable)
#   - memory copy bandwidth (dd from /dev/zero to /dev/null, 1 MiB blocks)
# Writes limits.json and limits.md into the output directory.
#
# Usage: perf/limits.sh [--out DIR] [--seconds N] [--disk-dir DIR] [--size SIZE]
source "$(dirname "$0")/lib.sh"

OUT="$(default_results_dir)"
SECONDS_PER_TEST=5
DISK_DIR=""
FIO_SIZE=2G
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --seconds) SECONDS_PER_TEST="$2"; shift 2 ;;
        --disk-dir) DISK_DIR="$2"; shift 2 ;;
        --size) FIO_SIZE="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
OUT="$(abs_path "$OUT")"
[[ "$SECONDS_PER_TEST" =~ ^[0-9]+$ ]] && [ "$SECONDS_PER_TEST" -ge 1 ] || die "--seconds must be a positive whole number"
mkdir -p "$OUT/raw"
DISK_DIR="${DISK_DIR:-$OUT/raw/fio}"
mkdir -p "$DISK_DIR"
ensure_cmd iperf3 iperf3
ensure_cmd fio fio
ensure_cmd python3 python3
trap 'stop_started; rm -f "$DISK_DIR"/limits-fio.*' EXIT

# Loopback TCP.
PORT="$(free_port)"
iperf3 -s -B 127.0.0.1 -p "$PORT" -1 >/dev/null 2>&1 &
STARTED_PIDS+=("$!")
sleep 0.5
log "loopback TCP: iperf3 for ${SECONDS_PER_TEST}s"
iperf3 -c 127.0.0.1 -p "$PORT" -t "$SECONDS_PER_TEST" -J >"$OUT/raw/iperf3.json" \
    || die "iperf3 client failed"

# Sequential writes.
log "disk: fio sequential write, buffered (${FIO_SIZE} in $DISK_DIR)"
fio --name=seq-buffered --directory="$DISK_DIR" --filename=limits-fio.buffered --rw=write \
    --bs=1M --size="$FIO_SIZE" --ioengine=psync --runtime="$SECONDS_PER_TEST" --time_based=0 \
    --output-format=json >"$OUT/raw/fio-buffered.json" || die "fio (buffered) failed"
rm -f "$DISK_DIR/limits-fio.buffered"
log "disk: fio sequential write, fdatasync after every 256 KiB"
fio --name=seq-fdatasync --directory="$DISK_DIR" --filename=limits-fio.sync --rw=write \
    --bs=256k --size="$FIO_SIZE" --ioengine=psync --fdatasync=1 --runtime="$SECONDS_PER_TEST" \
    --time_based=0 --output-format=json >"$OUT/raw/fio-fdatasync.json" || die "fio (fdatasync) failed"
rm -f "$DISK_DIR/limits-fio.sync"

# Memory copy.
log "memory: dd /dev/zero -> /dev/null"
dd if=/dev/zero of=/dev/null bs=1M count=20000 2>"$OUT/raw/dd.txt" || die "dd failed"

python3 - "$OUT" <<'PY'
import json, re, sys, os, platform
out = sys.argv[1]
raw = os.path.join(out, "raw")
ip = json.load(open(os.path.join(raw, "iperf3.json")))
loop = ip["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
def fio_mbps(name):
    j = json.load(open(os.path.join(raw, name)))
    return j["jobs"][0]["write"]["bw_bytes"] / 1e6
buffered = fio_mbps("fio-buffered.json")
synced = fio_mbps("fio-fdatasync.json")
dd = open(os.path.join(raw, "dd.txt")).read()
m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", dd)
memcpy = int(m.group(1)) / float(m.group(2)) / 1e6 if m else None
cpus = os.cpu_count()
model = ""
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip(); break
except OSError:
    pass
limits = {
    "unit": "MB/s (10^6 bytes per second)",
    "loopback_tcp_mb_per_s": round(loop, 1),
    "disk_seq_write_buffered_mb_per_s": round(buffered, 1),
    "disk_seq_write_fdatasync_mb_per_s": round(synced, 1),
    "memcpy_mb_per_s": round(memcpy, 1) if memcpy else None,
    "cpus": cpus,
    "cpu_model": model,
    "kernel": platform.release(),
}
json.dump(limits, open(os.path.join(out, "limits.json"), "w"), indent=2)
with open(os.path.join(out, "limits.md"), "w") as f:
    f.write("## Physical limits of this machine\n\n")
    f.write(f"{cpus} CPUs ({model}), kernel {platform.release()}\n\n")
    f.write("| limit | MB/s | how |\n|---|---:|---|\n")
    f.write(f"| loopback TCP | {loop:,.0f} | iperf3, one stream, 127.0.0.1 |\n")
    f.write(f"| sequential write, buffered | {buffered:,.0f} | fio, 1 MiB writes, page cache |\n")
    f.write(f"| sequential write, fdatasync | {synced:,.0f} | fio, fdatasync after each 256 KiB |\n")
    if memcpy:
        f.write(f"| memory copy | {memcpy:,.0f} | dd /dev/zero to /dev/null, 1 MiB blocks |\n")
print(open(os.path.join(out, "limits.md")).read())
PY
log "wrote $OUT/limits.json and $OUT/limits.md"
