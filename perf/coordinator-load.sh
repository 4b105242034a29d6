#!/usr/bin/env bash
# How long a group coordinator takes to load its __consumer_offsets partition, by history size:
# one simple group commits H offsets over P partitions of one topic (H records in the group's
# __consumer_offsets partition, P live keys), the broker is restarted, and the coordinator's
# replay of that partition is timed (its log line "loaded N group record(s) of
# __consumer_offsets-K in X ms (...)").
#
# For each history H (default 1,000 and 10,000,000; P = 1,000):
#   1. a fresh broker (release build, 127.0.0.1, free ports, temporary data directory) started
#      with log.cleaner.enable=false, so the history stays uncompacted;
#   2. topic T created with P partitions, then `shardlog-bench commit-offsets` commits H offsets
#      of group G (each request commits all P partitions: one batch of P records);
#   3. restart (SIGTERM, wait for the exit, start): load time and records replayed, with the
#      page cache as the writes left it ("warm"); as root also after dropping the page cache
#      ("cold"; --no-cold skips it); each --repeat times (3). After each restart the committed
#      offset of T-0 is checked with `shardlog-cli group describe`;
#   4. compaction, when the broker has a log cleaner (it does unless its start-up warning lists
#      log.cleaner.enable as a key it accepts but does not use): restart with the cleaner on
#      (log.cleaner.backoff.ms=1000), set segment.bytes=1 MiB, segment.ms=1000 and
#      min.cleanable.dirty.ratio=0.01 on __consumer_offsets (shardlog-cli topic alter-config),
#      commit one more request of P offsets after segment.ms so the active segment rolls (the
#      cleaner never touches the active segment), wait until the partition's cleaner checkpoint
#      (`cleaner-checkpoint`, storage/FORMAT.md) reaches the active segment, then step 3 again.
#
# Writes DIR/README.md (commands, commit, machine, table), DIR/summary.json, DIR/runs/*.json
# (the commit runs), DIR/raw/ (broker logs; git-ignored). Default DIR:
# perf/results/<date>-<commit>-coordinator-load.
#
# Usage: perf/coordinator-load.sh [--histories "1000 10000000"] [--partitions 1000]
#            [--repeat 3] [--shards 2] [--max-in-flight 5] [--group G] [--topic T]
#            [--out DIR] [--scratch DIR] [--no-cold] [--no-compact] [--load-timeout SECONDS]
source "$(dirname "$0")/lib.sh"

HISTORIES="1000 10000000"
PARTITIONS=1000
REPEAT=3
SHARDS=2
IN_FLIGHT=5
GROUP=coordinator-load
TOPIC=coordinator-load
OUT=""
SCRATCH_PARENT="${TMPDIR:-/tmp}"
COLD=1
COMPACT=1
LOAD_TIMEOUT=1800
CLEAN_TIMEOUT=3600
CLEAN_STILL=30
COMMAND_LINE="perf/coordinator-load.sh${*:+ $*}"
while [ $# -gt 0 ]; do
    case "$1" in
        --histories) HISTORIES="$2"; shift 2 ;;
        --partitions) PARTITIONS="$2"; shift 2 ;;
        --repeat) REPEAT="$2"; shift 2 ;;
        --shards) SHARDS="$2"; shift 2 ;;
        --max-in-flight) IN_FLIGHT="$2"; shift 2 ;;
        --group) GROUP="$2"; shift 2 ;;
        --topic) TOPIC="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --scratch) SCRATCH_PARENT="$2"; shift 2 ;;
        --no-cold) COLD=0; shift ;;
        --no-compact) COMPACT=0; shift ;;
        --load-timeout) LOAD_TIMEOUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
for h in $HISTORIES; do
    [[ "$h" =~ ^[1-9][0-9]*$ ]] || die "--histories takes whole numbers, got '$h'"
done
[[ "$PARTITIONS" =~ ^[1-9][0-9]*$ ]] || die "--partitions takes a whole number"
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "--repeat takes a whole number"
if [ "$COLD" = 1 ] && [ "$(id -u)" -ne 0 ]; then
    log "not root: no cold-cache restarts (dropping the page cache needs root)"
    COLD=0
fi
ensure_cmd python3 python3

# Binaries: the release profile, in CARGO_TARGET_DIR when set (lib.sh's helpers assume
# target/). Each package is built on its own, as lib.sh does: built together their shared
# dependencies get other features, and the broker would be built (and linked) a second time.
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
log "building shardlog, shardlog-cli and shardlog-bench (release)"
for build in "-p shardlog-broker --bin shardlog" "-p shardlog-tools --bin shardlog-cli" \
    "-p shardlog-bench --bin shardlog-bench"; do
    # shellcheck disable=SC2086 # the package and binary flags are split on purpose
    (cd "$REPO_ROOT" && cargo build --release -q $build) >&2 || die "cargo build --release $build failed"
done
BROKER="$TARGET_DIR/release/shardlog"
CLI="$TARGET_DIR/release/shardlog-cli"
BENCH="$TARGET_DIR/release/shardlog-bench"

COMMIT="$(commit_id)"
[ -n "$OUT" ] || OUT="$(default_results_dir)-coordinator-load"
OUT="$(abs_path "$OUT")"
mkdir -p "$OUT/raw" "$OUT/runs"
SCRATCH="$(mktemp -d "$(abs_path "$SCRATCH_PARENT")/coordinator-load.XXXXXX")"
BROKER_PID=""
cleanup() {
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT
ROWS="$OUT/raw/rows.jsonl"
NOTES="$OUT/raw/notes.txt"
: >"$ROWS"; : >"$NOTES"
# note TEXT: logged, and listed in README.md.
note() { log "$*"; echo "$*" >>"$NOTES"; }

# The __consumer_offsets partition of a group: Kafka's abs(String.hashCode) % 50
# (coordinator/src/partition.rs; offsets.topic.num.partitions is left at its default).
OFFSETS_PARTITION="$(python3 - "$GROUP" <<'PY'
import sys
h = 0
data = sys.argv[1].encode("utf-16-be")
for i in range(0, len(data), 2):
    h = (h * 31 + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
if h >= 2**31:
    h -= 2**32
print(0 if h == -2**31 else abs(h) % 50)
PY
)"
log "group $GROUP lives in __consumer_offsets-$OFFSETS_PARTITION"

# start_broker DATA LOG ARGS...: starts the broker; sets BROKER_ADDR, BROKER_PID, START_NS.
start_broker() {
    local data="$1" logf="$2"; shift 2
    [ -n "${BROKER_PORT:-}" ] || BROKER_PORT="$(free_port)"
    BROKER_ADDR="127.0.0.1:$BROKER_PORT"
    START_NS="$(date +%s%N)"
    RUST_LOG=info "$BROKER" --listen "$BROKER_ADDR" --data-dir "$data" --shards "$SHARDS" \
        --set "metrics.listen=127.0.0.1:$(free_port)" "$@" >"$logf" 2>&1 &
    BROKER_PID=$!
    wait_listen "$BROKER_ADDR" "$BROKER_PID" 120 \
        || die "shardlog did not start listening on $BROKER_ADDR (log: $logf): $(tail -5 "$logf")"
}

# stop_broker: SIGTERM (clean shutdown) and wait for the exit; sets STOP_S to the seconds it
# took.
stop_broker() {
    local t0 rc=0
    t0="$(date +%s%N)"
    kill -TERM "$BROKER_PID"
    wait "$BROKER_PID" || rc=$?
    BROKER_PID=""
    [ "$rc" -eq 0 ] || log "broker exited with status $rc after SIGTERM"
    STOP_S="$(python3 -c "print(f'{($(date +%s%N) - $t0) / 1e9:.2f}')")"
}

# wait_loaded LOG: waits for the coordinator's load line of the group's partition; sets LOADED
# to "records batches load_ms start_to_loaded_ms" (the last from the log line's timestamp).
wait_loaded() {
    local logf="$1" i line
    for ((i = 0; i < LOAD_TIMEOUT * 10; i++)); do
        line="$(grep -m1 -E "loaded [0-9]+ group record\(s\) of __consumer_offsets-$OFFSETS_PARTITION in " "$logf" || true)"
        if [ -n "$line" ]; then
            LOADED="$(python3 - "$line" "$START_NS" <<'PY'
import datetime, re, sys
line, start_ns = sys.argv[1], int(sys.argv[2])
m = re.search(r"loaded (\d+) group record\(s\) of __consumer_offsets-\d+ in ([0-9.]+) ms "
              r"\((\d+) batch\(es\)", line)
ts = re.match(r"\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z", line)
since = "null"
if ts:
    t = datetime.datetime.fromisoformat(ts.group(1)).replace(tzinfo=datetime.timezone.utc)
    since = f"{t.timestamp() * 1000 - start_ns / 1e6:.0f}"
print(m.group(1), m.group(3), m.group(2), since)
PY
)" || die "cannot parse the load line: $line"
            return 0
        fi
        kill -0 "$BROKER_PID" 2>/dev/null || die "the broker exited while loading (log: $logf)"
        sleep 0.1
    done
    die "no load line for __consumer_offsets-$OFFSETS_PARTITION within ${LOAD_TIMEOUT}s (log: $logf)"
}

wait_ready() {
    local logf="$1" i
    for ((i = 0; i < 1200; i++)); do
        grep -q " ready on " "$logf" && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || die "the broker exited (log: $logf)"
        sleep 0.1
    done
    die "the broker did not log ready within 120 s (log: $logf)"
}

# The committed offset of TOPIC-0 for the group, as the coordinator answers it now.
committed_offset_0() {
    local i f="$SCRATCH/describe.json"
    for ((i = 0; i < 100; i++)); do
        if "$CLI" --bootstrap "$BROKER_ADDR" --json group describe "$GROUP" >"$f" 2>&1; then
            python3 - "$f" "$TOPIC" <<'PY' && return 0
import json, sys
doc, topic = json.load(open(sys.argv[1])), sys.argv[2]
def walk(x):
    if isinstance(x, dict):
        if x.get("topic") == topic and x.get("partition") == 0:
            for k in ("committed_offset", "offset", "committed"):
                if k in x:
                    yield x[k]
        for v in x.values():
            yield from walk(v)
    elif isinstance(x, list):
        for v in x:
            yield from walk(v)
found = list(walk(doc))
if not found:
    sys.exit(1)
print(found[0])
PY
        fi
        sleep 0.5
    done
    echo "unknown"
}

# Size in bytes and segment count of the group's partition directory, and its newest segment.
partition_dir() { echo "$1/__consumer_offsets-$OFFSETS_PARTITION"; }
log_bytes() { find "$(partition_dir "$1")" -name '*.log' -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
segments() { find "$(partition_dir "$1")" -name '*.log' | wc -l; }
active_base() { find "$(partition_dir "$1")" -name '*.log' -printf '%f\n' | sort | tail -1 | sed 's/\.log$//; s/^0*//; s/^$/0/'; }
first_dirty() {
    local f; f="$(partition_dir "$1")/cleaner-checkpoint"
    [ -f "$f" ] && awk '$1 == "first_dirty" {print $2}' "$f" || echo 0
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# measure H PHASE DATA LOGPREFIX EXPECTED_OFFSET ARGS...: REPEAT restarts per cache state
# (warm ones first: a cold start leaves part of the log in the page cache).
measure() {
    local h="$1" phase="$2" data="$3" prefix="$4" expected="$5"; shift 5
    local caches=(warm) cache run logf stop_s bytes segs records batches ms since got loadavg
    [ "$COLD" = 1 ] && caches+=(cold)
    for cache in "${caches[@]}"; do
        for ((run = 1; run <= REPEAT; run++)); do
            stop_broker; stop_s="$STOP_S"
            bytes="$(log_bytes "$data")"; segs="$(segments "$data")"
            loadavg="$(cut -d' ' -f1 /proc/loadavg)"
            [ "$cache" = cold ] && drop_caches
            logf="$OUT/raw/$prefix-$cache-$run.log"
            start_broker "$data" "$logf" "$@"
            wait_loaded "$logf"
            read -r records batches ms since <<<"$LOADED"
            wait_ready "$logf"
            got="$(committed_offset_0)"
            [ "$got" = "$expected" ] || log "WARNING: committed offset of $TOPIC-0 is $got, expected $expected"
            log "H=$h $phase $cache #$run: $records records ($batches batches, $bytes bytes in $segs segments) loaded in $ms ms; start -> loaded $since ms; shutdown took $stop_s s; load average $loadavg"
            printf '{"history": %s, "phase": "%s", "cache": "%s", "run": %s, "records": %s, "batches": %s, "log_bytes": %s, "segments": %s, "load_ms": %s, "start_to_loaded_ms": %s, "shutdown_s": %s, "loadavg_1m": %s, "offset_check": "%s", "expected_offset": %s}\n' \
                "$h" "$phase" "$cache" "$run" "$records" "$batches" "$bytes" "$segs" "$ms" "$since" "$stop_s" "$loadavg" "$got" "$expected" >>"$ROWS"
        done
    done
}

CLEANER_NOTE=""
COMPACTED_RUN=0
RUN_START="$(date +%s)"
for H in $HISTORIES; do
    log "=== history $H offsets over $PARTITIONS partitions"
    DATA="$SCRATCH/h$H"
    rm -rf "$DATA"; mkdir -p "$DATA"
    BROKER_PORT=""
    start_broker "$DATA" "$OUT/raw/h$H-fill.log" --set log.cleaner.enable=false
    wait_ready "$OUT/raw/h$H-fill.log"
    "$CLI" --bootstrap "$BROKER_ADDR" topic create "$TOPIC" -p "$PARTITIONS" >"$OUT/raw/h$H-create.txt" 2>&1 \
        || die "topic create failed: $(cat "$OUT/raw/h$H-create.txt")"
    t0="$(date +%s)"
    "$BENCH" commit-offsets --bootstrap "$BROKER_ADDR" --group "$GROUP" --topic "$TOPIC" \
        --partitions "$PARTITIONS" --commits "$H" --max-in-flight "$IN_FLIGHT" --interval 10s \
        --out "$OUT/runs" --name "commit-h$H" >"$OUT/raw/h$H-commit.txt" 2>&1 \
        || die "commit-offsets failed: $(tail -5 "$OUT/raw/h$H-commit.txt")"
    log "committed $H offsets in $(( $(date +%s) - t0 )) s: $(grep 'commits/s' "$OUT/raw/h$H-commit.txt" | tr -s ' ')"
    REQUESTS=$(( (H + PARTITIONS - 1) / PARTITIONS ))
    measure "$H" uncompacted "$DATA" "h$H-uncompacted" "$REQUESTS" --set log.cleaner.enable=false

    [ "$COMPACT" = 1 ] || continue
    if grep -q "accepted but not used by Shardlog:.*log\.cleaner\.enable" "$OUT/raw/h$H-fill.log"; then
        CLEANER_NOTE="This broker has no log cleaner (its start-up warning lists log.cleaner.enable among the Kafka keys it accepts but does not use), so there is no compacted measurement."
        log "no log cleaner in this broker: skipping the compacted measurement"
        continue
    fi
    COMPACTED_RUN=1
    log "compacting __consumer_offsets-$OFFSETS_PARTITION"
    CLEANER_ARGS=(--set log.cleaner.enable=true --set log.cleaner.backoff.ms=1000)
    stop_broker
    start_broker "$DATA" "$OUT/raw/h$H-compact.log" "${CLEANER_ARGS[@]}"
    wait_ready "$OUT/raw/h$H-compact.log"
    "$CLI" --bootstrap "$BROKER_ADDR" topic alter-config __consumer_offsets \
        --set segment.bytes=1048576 --set segment.ms=1000 --set min.cleanable.dirty.ratio=0.01 \
        >"$OUT/raw/h$H-alter.txt" 2>&1 || die "alter-config failed: $(cat "$OUT/raw/h$H-alter.txt")"
    sleep 2
    # One more request of every partition's offset (same keys) rolls the active segment.
    "$BENCH" commit-offsets --bootstrap "$BROKER_ADDR" --group "$GROUP" --topic "$TOPIC" \
        --partitions "$PARTITIONS" --commits "$PARTITIONS" --quiet >"$OUT/raw/h$H-roll.txt" 2>&1 \
        || die "commit-offsets (roll) failed: $(tail -5 "$OUT/raw/h$H-roll.txt")"
    # Done when the cleaner's checkpoint reaches the active segment, or when it has moved and
    # then stood still for CLEAN_STILL seconds (something else bounds it, e.g. the recovery
    # point: reported, not hidden).
    t0="$(date +%s)"
    active="$(active_base "$DATA")"
    dirty="$(first_dirty "$DATA")"; moved="$t0"
    while [ "$dirty" -lt "$active" ]; do
        kill -0 "$BROKER_PID" 2>/dev/null || die "the broker exited while compacting"
        [ $(( $(date +%s) - t0 )) -lt "$CLEAN_TIMEOUT" ] \
            || die "the cleaner did not reach offset $active within ${CLEAN_TIMEOUT}s (first dirty $dirty)"
        if [ "$dirty" -gt 0 ] && [ $(( $(date +%s) - moved )) -ge "$CLEAN_STILL" ]; then
            note "H=$H: the cleaner stopped at offset $dirty, below the active segment at $active (no progress for ${CLEAN_STILL}s)"
            break
        fi
        sleep 1
        now_dirty="$(first_dirty "$DATA")"
        if [ "$now_dirty" != "$dirty" ]; then dirty="$now_dirty"; moved="$(date +%s)"; fi
    done
    note "H=$H: compacted up to offset $dirty (active segment at $active) in about $(( moved - t0 )) s after the roll, cleaner checkpoint polled every second"
    # The cleaner's own account of each cleaning of the partition (it may have started before
    # the roll: the closed segments were dirty enough for the default ratio already).
    grep -E "cleaned __consumer_offsets-$OFFSETS_PARTITION " "$OUT/raw/h$H-compact.log" \
        | sed -E 's/^\[[^ ]+ +[A-Z]+ +[^]]+\] //' | while read -r line; do note "H=$H: cleaner log: $line"; done
    # The roll request committed offset 1 again (request index 0) for every partition.
    measure "$H" "compacted" "$DATA" "h$H-compacted" 1 "${CLEANER_ARGS[@]}"
    stop_broker
    rm -rf "$DATA"
done
[ -z "$BROKER_PID" ] || stop_broker
RUN_S=$(( $(date +%s) - RUN_START ))

# README.md and summary.json from the rows and the commit runs.
python3 - "$OUT" "$ROWS" "$COMMIT" "$COMMAND_LINE" "$SHARDS" "$PARTITIONS" "$IN_FLIGHT" \
    "$GROUP" "$TOPIC" "$OFFSETS_PARTITION" "$SCRATCH_PARENT" "$RUN_S" "$CLEANER_NOTE" \
    "$NOTES" "$COMPACTED_RUN" <<'PY'
import json, os, platform, subprocess, sys
(out, rows_path, commit, command, shards, partitions, in_flight, group, topic, cp, scratch,
 run_s, cleaner_note, notes_path, compacted_run) = sys.argv[1:]
rows = [json.loads(l) for l in open(rows_path) if l.strip()]
notes = [l.strip() for l in open(notes_path) if l.strip()]
commits = {}
for h in sorted({r["history"] for r in rows}):
    p = os.path.join(out, "runs", f"commit-h{h}.json")
    if os.path.exists(p):
        commits[h] = json.load(open(p))
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"
mem_gib = int(open("/proc/meminfo").read().split()[1]) / 2**20
fs = sh(f"df -T {scratch} | awk 'NR==2 {{print $1\" \"$2}}'")
dev = fs.split()[0].split("/")[-1] if fs else ""
disk = sh(f"lsblk -dno NAME,MODEL,SIZE,ROTA /dev/{dev} 2>/dev/null").split()
if len(disk) >= 3:
    model = " ".join(disk[1:-2]) or "no model name"
    disk = f"{disk[0]}, {model}, {disk[-2]}, rotational={disk[-1]}"
else:
    disk = dev
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
machine = (f"{os.cpu_count()} CPUs ({cpu}), {mem_gib:.0f} GiB RAM, data directory on {fs} "
           f"(lsblk: {disk}), Linux {platform.release()}")
summary = {"commit": commit, "command": command, "machine": machine, "shards": int(shards),
           "partitions": int(partitions), "group": group, "topic": topic,
           "offsets_partition": int(cp), "rows": rows,
           "commit_runs": commits, "cleaner_note": cleaner_note or None, "notes": notes,
           "run_seconds": int(run_s)}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
def n(x):
    return f"{x:,}" if isinstance(x, int) else str(x)
lines = [
    f"# Group coordinator load time by history size at {commit}",
    "",
    f"Command: `{command}` (whole run {int(run_s) // 60} min {int(run_s) % 60} s).",
    f"Commit: {commit}. Machine: {machine}.",
    f"Broker: release build, {shards} shards, standalone, 127.0.0.1; group `{group}` "
    f"(its offsets live in `__consumer_offsets-{cp}`) commits offsets of topic `{topic}` "
    f"({partitions} partitions) as a simple group (generation -1, no member id), "
    f"{partitions} offsets per OffsetCommit request, up to {in_flight} requests in flight: "
    f"each request appends one batch of {partitions} records, so the history has H records "
    f"and {partitions} live keys.",
    "",
    "load ms: the coordinator's own measure (broker/src/groups/coordinator.rs, the `loaded N "
    "group record(s) of __consumer_offsets-K in X ms` line): reading and replaying the "
    "partition from its log start to its end. start -> loaded: from starting the broker "
    "process to that line's timestamp (ms resolution), so it adds process start and opening "
    "every partition's log. warm: restarted right after the writes (page cache full); cold: "
    "page cache dropped before the start. The committed offset of partition 0 was read back "
    "after every restart and matched unless the table says otherwise. The machine is shared: "
    "other builds may have run during the measurement (see the load averages).",
    "",
]
if compacted_run == "1":
    lines += [
        "compacted: the same data after one more request of "
        f"{partitions} offsets (to roll the active segment; the history is then H + "
        f"{partitions} records) and the log cleaner's pass over `__consumer_offsets` "
        "(`log.cleaner.backoff.ms=1000`, `segment.bytes=1048576`, `segment.ms=1000`, "
        "`min.cleanable.dirty.ratio=0.01`); the broker runs with the cleaner enabled.",
        "",
    ]
def med(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2
def ms(x):
    return "-" if x is None else f"{x:,.1f}"
groups = {}
for r in rows:
    groups.setdefault((r["history"], r["phase"], r["cache"]), []).append(r)
lines += [
    f"Median of {max(len(g) for g in groups.values()) if groups else 0} restarts each "
    "(min - max in brackets; every restart is listed below):",
    "",
    "| history H | log | page cache | records replayed | log bytes | segments "
    "| load ms | start -> loaded ms | records/s in load |",
    "|---|---|---|---|---|---|---|---|---|",
]
for (h, phase, cache), g in groups.items():
    loads = [r["load_ms"] for r in g]
    since = [r["start_to_loaded_ms"] for r in g if r["start_to_loaded_ms"] is not None]
    recs = g[0]["records"]
    rate = recs / (med(loads) / 1000) if med(loads) else 0
    lines.append(
        f"| {n(h)} | {phase} | {cache} | {n(recs)} | {n(g[0]['log_bytes'])} "
        f"| {g[0]['segments']} | {ms(med(loads))} ({ms(min(loads))} - {ms(max(loads))}) "
        f"| {ms(med(since))} ({ms(min(since)) if since else '-'} - "
        f"{ms(max(since)) if since else '-'}) | {rate:,.0f} |")
lines += [
    "",
    "Every restart (load average: the 1-minute load average of the machine just before it):",
    "",
    "| history H | log | page cache | run | records replayed | batches | load ms "
    "| start -> loaded ms | shutdown s | load average | offset check |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    check = "ok" if str(r["offset_check"]) == str(r["expected_offset"]) else \
        f"got {r['offset_check']}, expected {r['expected_offset']}"
    lines.append(
        f"| {n(r['history'])} | {r['phase']} | {r['cache']} | {r['run']} | {n(r['records'])} "
        f"| {n(r['batches'])} | {r['load_ms']} | {r['start_to_loaded_ms']} "
        f"| {r['shutdown_s']} | {r['loadavg_1m']} | {check} |")
lines += ["", "Writing the history (`shardlog-bench commit-offsets`, runs/commit-h*.json):", "",
          "| history H | requests | seconds | commits/s | request p50 ms | request p99 ms |",
          "|---|---|---|---|---|---|"]
for h, c in commits.items():
    lat = c.get("request_latency_ms", {})
    if c["requests"] > 1:
        rate = f"{c['commits_per_sec']:,.0f}"
    else:
        rate = "- (one request, not timed)"
    lines.append(f"| {n(h)} | {n(c['requests'])} | {c['seconds']:.1f} | {rate} "
                 f"| {lat.get('p50', '-')} | {lat.get('p99', '-')} |")
if cleaner_note:
    lines += ["", cleaner_note]
if notes:
    lines += [""] + [f"- {x}" for x in notes]
lines += ["", "Files: `summary.json` (every row and the commit runs), `runs/` (shardlog-bench "
          "JSON), `raw/` (broker logs, git-ignored).", ""]
open(os.path.join(out, "README.md"), "w").write("\n".join(lines))
print("\n".join(lines))
PY
log "wrote $OUT/README.md"
