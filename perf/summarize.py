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

KINDS = ("max", "consume", "lat50")


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


def main():
    out = sys.argv[1]
    limits = load(os.path.join(out, "limits.json")) or {}
    run = load(os.path.join(out, "run.json")) or {}
    loop = limits.get("loopback_tcp_mb_per_s")
    disk = limits.get("disk_seq_write_buffered_mb_per_s")
    runs = {}
    pat = re.compile(r"^(?P<target>[A-Za-z0-9_.]+)-(?P<cfg>\d+b-p\d+-acks\w+)-(?P<kind>max|consume|lat50)$")
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
            fig = {
                "produce_mb_per_s": get(mx, "produce", "mb_per_s"),
                "produce_records_per_s": get(mx, "produce", "records_per_s"),
                "produce_status": get(mx, "status"),
                "statuses": {k: get(v[1], "status") or "failed" for k, v in r.items()},
                "consume_mb_per_s": get(co, "consume", "mb_per_s"),
                "consume_records_per_s": get(co, "consume", "records_per_s"),
                "rate_at_50": get(la, "params", "rate"),
                "ack_p99_ms": get(la, "produce", "ack_latency_ms", "p99"),
                "e2e_p50_ms": get(la, "consume", "e2e_latency_ms", "p50"),
                "e2e_p99_ms": get(la, "consume", "e2e_latency_ms", "p99"),
                "e2e_p999_ms": get(la, "consume", "e2e_latency_ms", "p99.9"),
                "plots": [n for n, _ in r.values()],
            }
            summary["configs"][cfg][t] = fig
            rows.append((cfg, t, fig))

    md = []
    md.append(f"# Performance matrix {run.get('date', '')} (commit {run.get('commit', '?')})\n")
    md.append(
        f"Each produce and latency run: {run.get('duration', '?')} with {run.get('warmup', '?')} warm-up "
        f"excluded. Targets: {run.get('targets', '?')}. Shardlog shards: {run.get('shards', '?')}.\n"
    )
    if run.get("peer_note"):
        md.append(f"Peer: {run['peer_note']}.\n")
    md.append(
        "MB/s counts record batch bytes (10^6 bytes/s) as sent or fetched. Latency at 50 % is an "
        "open-loop run at half the maximum produce rate, measured from each record's intended send "
        "time (coordinated omission corrected). Consume reads back the maximum run's topic from "
        "earliest, i.e. from the page cache.\n"
    )
    if os.path.exists(os.path.join(out, "limits.md")):
        md.append(open(os.path.join(out, "limits.md")).read())
    md.append("\n## Results\n")
    md.append(
        "| workload | broker | produce MB/s | of loopback | of disk (buffered) | produce rec/s "
        "| consume MB/s | of loopback | rate @50 % | ack p99 ms | e2e p50 ms | e2e p99 ms | e2e p99.9 ms |"
    )
    md.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cfg, t, f in rows:
        bad = [k for k, st in f["statuses"].items() if st != "ok"]
        failed = f" ({', '.join(bad)} failed or interrupted)" if bad else ""
        md.append(
            f"| {cfg} | {t}{failed} | {fmt(f['produce_mb_per_s'])} | {pct(f['produce_mb_per_s'], loop)} "
            f"| {pct(f['produce_mb_per_s'], disk)} | {fmt(f['produce_records_per_s'], 0)} "
            f"| {fmt(f['consume_mb_per_s'])} | {pct(f['consume_mb_per_s'], loop)} "
            f"| {fmt(f['rate_at_50'], 0)} | {fmt(f['ack_p99_ms'], 2)} | {fmt(f['e2e_p50_ms'], 2)} "
            f"| {fmt(f['e2e_p99_ms'], 2)} | {fmt(f['e2e_p999_ms'], 2)} |"
        )
    peers = [t for t in targets if t != "shardlog"]
    if "shardlog" in targets and peers:
        md.append("\n## Shardlog relative to each peer, same run\n")
        md.append(
            "Throughput: Shardlog / peer (above 1 is better). Latency: peer / Shardlog (above 1 "
            "means Shardlog is faster).\n"
        )
        md.append("| workload | peer | produce MB/s | consume MB/s | ack p99 | e2e p99 |")
        md.append("|---|---|---:|---:|---:|---:|")
        for cfg in summary["configs"]:
            s = summary["configs"][cfg].get("shardlog")
            for p in peers:
                q = summary["configs"][cfg].get(p)
                if not s or not q:
                    continue
                md.append(
                    f"| {cfg} | {p} | {ratio(s['produce_mb_per_s'], q['produce_mb_per_s'])} "
                    f"| {ratio(s['consume_mb_per_s'], q['consume_mb_per_s'])} "
                    f"| {ratio(q['ack_p99_ms'], s['ack_p99_ms'])} | {ratio(q['e2e_p99_ms'], s['e2e_p99_ms'])} |"
                )
    if failures:
        md.append("\n## Failed runs\n")
        for name, reason in failures.items():
            md.append(f"- {name}: {reason}")
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
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    print(text)


if __name__ == "__main__":
    main()
