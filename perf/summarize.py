#!/usr/bin/env python3
"""Summarises a perf/matrix.sh results directory into summary.md and summary.json.

Every throughput is also given as a fraction of the machine's physical limits (limits.json:
loopback TCP, buffered sequential disk write), and every figure of a peer broker as a ratio
to Shardlog's measured in the same run. Standard library only.

Usage: perf/summarize.py RESULTS_DIR
"""

import glob
import json
import os
import re
import sys

KINDS = ("max", "consume", "lat50", "e2e1k", "e2e1k5")


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def pct(v, limit):
    if v is None or not limit:
        return "-"
    return f"{100.0 * v / limit:.0f} %"


def ratio(a, b):
    if a is None or b is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def get(d, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p) if isinstance(d, dict) else None
    return d


# The reference points: Tansu 0.6 measured with rdkafka_performance on a machine with
# ~2.7 GB/s loopback; Shardlog's targets are at least 2x those, e2e p99 at 1,000 msg/s under 2 ms,
# and consume from page cache above half the loopback limit.
TANSU06 = {"produce_1k_mb": 300.0, "produce_100b_rps": 1.7e6, "consume_1k_mb": 395.0, "e2e1k_p99_ms": 490.0}


def targets_section(configs, targets, limits, r1k):
    loop = limits.get("loopback_tcp_mb_per_s")
    peers = [t for t in targets if t != "shardlog"]
    peer = peers[0] if peers else None
    md = ["\n## Targets from the issue\n"]
    md.append(
        "Reference: Tansu 0.6 with rdkafka_performance (other machine, ~2.7 GB/s loopback): produce "
        "1 KiB acks=1 ~300 MB/s, 100 B ~1.7 M msg/s, consume 1 KiB ~395 MB/s, e2e p99 at 1,000 "
        "msg/s ~490 ms. Targets for Shardlog: at least 2x each, e2e p99 at 1,000 msg/s under 2 ms, "
        "consume from page cache above half the loopback limit. Loopback here: "
        f"{fmt(loop)} MB/s.\n"
    )
    md.append(f"| metric | config | target | Shardlog | met | {peer or 'peer'} (this run) | Shardlog / {peer or 'peer'} |")
    md.append("|---|---|---:|---:|:-:|---:|---:|")

    def row(metric, cfg, key, target, better, scale=1.0, digits=1):
        s = get(configs, cfg, "shardlog", key)
        q = get(configs, cfg, peer, key) if peer else None
        if s is None:
            met = "-"
        else:
            met = "yes" if (s >= target if better == "higher" else s < target) else "**no**"
        sv = None if s is None else s / scale
        qv = None if q is None else q / scale
        tv = target / scale
        rat = ratio(s, q) if better == "higher" else (ratio(q, s) + " faster" if s and q else "-")
        op = ">=" if better == "higher" else "<"
        md.append(f"| {metric} | {cfg} | {op} {fmt(tv, digits)} | {fmt(sv, digits)} | {met} | {fmt(qv, digits)} | {rat} |")

    for p in ("p1", "p8"):
        row("produce 1 KiB acks=1, MB/s", f"1024b-{p}-acks1", "produce_mb_per_s", 2 * TANSU06["produce_1k_mb"], "higher")
    for p in ("p1", "p8"):
        row("produce 100 B acks=1, M msg/s", f"100b-{p}-acks1", "produce_records_per_s", 2 * TANSU06["produce_100b_rps"], "higher", 1e6, 2)
    for p in ("p1", "p8"):
        row("consume 1 KiB, MB/s (2x Tansu 0.6)", f"1024b-{p}-acks1", "consume_mb_per_s", 2 * TANSU06["consume_1k_mb"], "higher")
    if loop:
        for p in ("p1", "p8"):
            row("consume 1 KiB, MB/s (half loopback)", f"1024b-{p}-acks1", "consume_mb_per_s", loop / 2, "higher")
    for cfg in sorted(configs, key=lambda c: (-int(c.split("b-")[0]), c)):
        row(f"e2e p99 at {r1k} msg/s, ms", cfg, "e2e1k_p99_ms", 2.0, "lower", 1.0, 2)
    for cfg in configs:
        if get(configs, cfg, "shardlog", "e2e1k5_p99_ms") is not None:
            row(f"e2e p99 at {r1k} msg/s, default linger 5 ms, ms", cfg, "e2e1k5_p99_ms", 2.0, "lower", 1.0, 2)
    return md


def run_status(j):
    """ok, failed, interrupted, or 'errors' when the broker answered with errors."""
    if j is None:
        return "failed"
    st = j.get("status") or "failed"
    errs = sum((get(j, side, "error_records") or 0) + (get(j, side, "error_responses") or 0)
               for side in ("produce", "consume"))
    if st == "ok" and errs:
        return "errors"
    return st


def main():
    out = sys.argv[1]
    limits = load(os.path.join(out, "limits.json")) or {}
    run = load(os.path.join(out, "run.json")) or {}
    loop = limits.get("loopback_tcp_mb_per_s")
    disk = limits.get("disk_seq_write_buffered_mb_per_s")
    runs = {}
    pat = re.compile(r"^(?P<target>[A-Za-z0-9_.]+)-(?P<cfg>\d+b-p\d+-acks\w+)-(?P<kind>max|consume|lat50|e2e1k5|e2e1k)$")
    for path in sorted(glob.glob(os.path.join(out, "runs", "*.json"))):
        name = os.path.basename(path)[:-5]
        m = pat.match(name)
        if not m:
            continue
        runs.setdefault(m["cfg"], {}).setdefault(m["target"], {})[m["kind"]] = (name, load(path))
    failures = {}
    for path in sorted(glob.glob(os.path.join(out, "runs", "*.failed"))):
        name = os.path.basename(path)[: -len(".failed")]
        m = pat.match(name)
        if not m:
            continue
        reason = open(path).read().strip()
        failures[name] = reason
        runs.setdefault(m["cfg"], {}).setdefault(m["target"], {}).setdefault(m["kind"], (name, None))

    targets = []
    for cfg in runs.values():
        for t in cfg:
            if t not in targets:
                targets.append(t)
    targets.sort(key=lambda t: (t != "shardlog", t))

    rows = []
    summary = {"limits": limits, "run": run, "configs": {}}
    for cfg in sorted(runs, key=lambda c: (-int(c.split("b-")[0]), c)):
        summary["configs"][cfg] = {}
        for t in targets:
            r = runs[cfg].get(t, {})
            mx = r.get("max", (None, None))[1]
            co = r.get("consume", (None, None))[1]
            la = r.get("lat50", (None, None))[1]
            lo = r.get("e2e1k", (None, None))[1]
            l5 = r.get("e2e1k5", (None, None))[1]
            fig = {
                "produce_mb_per_s": get(mx, "produce", "mb_per_s"),
                "produce_records_per_s": get(mx, "produce", "records_per_s"),
                "produce_status": get(mx, "status"),
                "statuses": {k: run_status(v[1]) for k, v in r.items()},
                "consume_mb_per_s": get(co, "consume", "mb_per_s"),
                "consume_records_per_s": get(co, "consume", "records_per_s"),
                "rate_at_50": get(la, "params", "rate"),
                "ack_p99_ms": get(la, "produce", "ack_latency_ms", "p99"),
                "e2e_p50_ms": get(la, "consume", "e2e_latency_ms", "p50"),
                "e2e_p99_ms": get(la, "consume", "e2e_latency_ms", "p99"),
                "e2e_p999_ms": get(la, "consume", "e2e_latency_ms", "p99.9"),
                "e2e1k_rate": get(lo, "params", "rate"),
                "e2e1k_p50_ms": get(lo, "consume", "e2e_latency_ms", "p50"),
                "e2e1k_p99_ms": get(lo, "consume", "e2e_latency_ms", "p99"),
                "e2e1k_p999_ms": get(lo, "consume", "e2e_latency_ms", "p99.9"),
                "e2e1k_max_ms": get(lo, "consume", "e2e_latency_ms", "max"),
                "e2e1k5_p50_ms": get(l5, "consume", "e2e_latency_ms", "p50"),
                "e2e1k5_p99_ms": get(l5, "consume", "e2e_latency_ms", "p99"),
                "e2e1k5_p999_ms": get(l5, "consume", "e2e_latency_ms", "p99.9"),
                "plots": [n for n, _ in r.values()],
            }
            summary["configs"][cfg][t] = fig
            rows.append((cfg, t, fig))

    md = []
    md.append(f"# Performance matrix {run.get('date', '')} (commit {run.get('commit', '?')})\n")
    md.append(
        f"Each produce and latency run: {run.get('duration', '?')} in total, of which the first "
        f"{run.get('warmup', '?')} (warm-up) are excluded from the figures. Targets: {run.get('targets', '?')}. Shardlog shards: {run.get('shards', '?')}.\n"
    )
    if run.get("peer_note"):
        md.append(f"Peer: {run['peer_note']}.\n")
    mach = run.get("machine") or {}
    if mach:
        md.append(
            f"Machine: nproc {mach.get('nproc', '?')}, memory {mach.get('memory', '?')}, kernel "
            f"{mach.get('kernel', '?')}; brokers and load generator share these CPUs over loopback. "
            f"Load average (1/5/15 min) at start {run.get('load_start', '?')}, at end "
            f"{run.get('load_end', '?')}.\n"
        )
    if run.get("commit_at_end") and run.get("commit_at_end") not in run.get("commit", ""):
        md.append(f"HEAD at the end of the run: {run['commit_at_end']}.\n")
    if run.get("broker_binary"):
        md.append(f"Broker binary: {run['broker_binary']}.\n")
    if run.get("command"):
        md.append(f"Command: `{run['command'].strip()}`\n")
    if os.path.exists(os.path.join(out, "commands.md")):
        md.append(open(os.path.join(out, "commands.md")).read())
    md.append(
        "MB/s counts record batch bytes (10^6 bytes/s) as sent or fetched. Latency at 50 % is an "
        "open-loop run at half the maximum produce rate, measured from each record's intended send "
        "time (coordinated omission corrected). Consume reads back the maximum run's topic from "
        "earliest, i.e. from the page cache.\n"
    )
    if os.path.exists(os.path.join(out, "limits.md")):
        md.append(open(os.path.join(out, "limits.md")).read())
    r1k = run.get("e2e_rate", "1000")
    md.append("\n## Results\n")
    md.append(
        f"e2e p99 @{r1k}: a separate open-loop end-to-end run at {r1k} records/s with producer "
        f"linger {run.get('e2e_linger', '0')} (so it shows broker latency, not client batching "
        "delay).\n"
    )
    md.append(
        f"| workload | broker | produce MB/s | of loopback | of disk (buffered) | produce rec/s "
        f"| consume MB/s | of loopback | rate @50 % | ack p99 ms | e2e p50 ms | e2e p99 ms | e2e p99.9 ms | e2e p99 @{r1k} ms |"
    )
    md.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cfg, t, f in rows:
        bad = [k for k, st in f["statuses"].items() if st != "ok"]
        sts = f["statuses"]
        failed = " (" + ", ".join(f"{k}: {sts[k]}" for k in bad) + ")" if bad else ""
        md.append(
            f"| {cfg} | {t}{failed} | {fmt(f['produce_mb_per_s'])} | {pct(f['produce_mb_per_s'], loop)} "
            f"| {pct(f['produce_mb_per_s'], disk)} | {fmt(f['produce_records_per_s'], 0)} "
            f"| {fmt(f['consume_mb_per_s'])} | {pct(f['consume_mb_per_s'], loop)} "
            f"| {fmt(f['rate_at_50'], 0)} | {fmt(f['ack_p99_ms'], 2)} | {fmt(f['e2e_p50_ms'], 2)} "
            f"| {fmt(f['e2e_p99_ms'], 2)} | {fmt(f['e2e_p999_ms'], 2)} | {fmt(f['e2e1k_p99_ms'], 2)} |"
        )
    peers = [t for t in targets if t != "shardlog"]
    if "shardlog" in targets and peers:
        md.append("\n## Shardlog relative to each peer, same run\n")
        md.append(
            "Throughput: Shardlog / peer (above 1 is better). Latency: peer / Shardlog (above 1 "
            "means Shardlog is faster).\n"
        )
        md.append(f"| workload | peer | produce MB/s | consume MB/s | ack p99 @50 % | e2e p99 @50 % | e2e p99 @{r1k} |")
        md.append("|---|---|---:|---:|---:|---:|---:|")
        for cfg in summary["configs"]:
            s = summary["configs"][cfg].get("shardlog")
            for p in peers:
                q = summary["configs"][cfg].get(p)
                if not s or not q:
                    continue
                md.append(
                    f"| {cfg} | {p} | {ratio(s['produce_mb_per_s'], q['produce_mb_per_s'])} "
                    f"| {ratio(s['consume_mb_per_s'], q['consume_mb_per_s'])} "
                    f"| {ratio(q['ack_p99_ms'], s['ack_p99_ms'])} | {ratio(q['e2e_p99_ms'], s['e2e_p99_ms'])} "
                    f"| {ratio(q['e2e1k_p99_ms'], s['e2e1k_p99_ms'])} |"
                )
        md.append(
            "\nNote: the peer's rate @50 % is half of the peer's own maximum, so ack/e2e p99 @50 % "
            "ratios compare different offered loads; the fixed-rate column compares equal loads.\n"
        )
    md.extend(targets_section(summary["configs"], targets, limits, r1k))
    if failures:
        md.append("\n## Failed runs\n")
        for name, reason in failures.items():
            md.append(f"- {name}: {reason}")
    profiles = sorted(glob.glob(os.path.join(out, "profile-*", "flamegraph.svg")))
    if profiles:
        md.append("\n## Flame graphs\n")
        for pth in profiles:
            rel = os.path.relpath(pth, out)
            md.append(f"- [{os.path.dirname(rel)}]({rel})")
    md.append("\n## Plots\n")
    for cfg, t, f in rows:
        links = []
        for n in f["plots"]:
            for suffix in ("latency", "throughput"):
                p = os.path.join("runs", f"{n}-{suffix}.svg")
                if os.path.exists(os.path.join(out, p)):
                    links.append(f"[{n.split('-')[-1]} {suffix}]({p})")
        if links:
            md.append(f"- {cfg} {t}: " + ", ".join(links))
    notes = os.path.join(out, "notes.md")
    if os.path.exists(notes):
        md.append("")
        md.append(open(notes).read())
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    print(text)


if __name__ == "__main__":
    main()
