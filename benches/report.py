#!/usr/bin/env python3
"""Summarise benches/run.sh results (results.txt) as Markdown tables of
medians over rounds, with ratios to rawecho and to tokio-tungstenite.

Line format: `SCENARIO SERVER ROUND RESULT key=value ...`; lines starting
with '#' are header comments and are printed as-is.
"""
import statistics
import sys
from collections import defaultdict

ORDER = ["wsloop", "rawecho", "tokio", "gorilla"]
LABEL = {
    "wsloop": "wsloop",
    "rawecho": "rawecho (raw TCP echo)",
    "tokio": "tokio-tungstenite",
    "gorilla": "gorilla/websocket",
}


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def med(runs, key):
    vals = [num(r.get(key)) for r in runs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def rng(runs, key):
    vals = [num(r.get(key)) for r in runs]
    vals = [v for v in vals if v is not None]
    return (min(vals), max(vals)) if vals else None


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return "n/a"
    r = a / b
    return f"{r:.3f}x" if r < 0.1 else f"{r:.2f}x"


def problems(runs):
    bad = []
    for r in runs:
        for k in ("failed", "exit", "server_died", "error", "undelivered", "closed_by_server", "unfinished"):
            v = r.get(k)
            if v not in (None, "0", "0.0"):
                bad.append(f"r{r['_round']}:{k}={v}")
    return ", ".join(bad) if bad else "none"


def main(path):
    data = defaultdict(lambda: defaultdict(list))
    header = []
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            header.append(line)
            continue
        parts = line.split()
        sc, srv, rnd = parts[0], parts[1], parts[2]
        kv = {"_round": rnd}
        for p in parts[3:]:
            if "=" in p:
                k, v = p.split("=", 1)
                kv[k] = v
        data[sc][srv].append(kv)

    for h in header:
        print(h.lstrip("# "), " ")
    print()
    servers_all = [s for s in ORDER if any(s in d for d in data.values())]

    for sc in ["small", "large"]:
        if sc not in data:
            continue
        d = data[sc]
        title = {
            "small": "small: 32-byte binary messages, 64 connections x 16 in flight",
            "large": "large: 1 MiB binary messages, 8 connections x 2 in flight",
        }[sc]
        print(f"### {title}\n")
        print("| server | msgs/s (median) | min-max | MiB/s | vs rawecho | vs tokio | p50 us | p99 us | p99.9 us "
              "| client CPU % | server CPU % | server CPU us/msg | other CPU % | runs | problems |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        raw = med(d.get("rawecho", []), "msgs_per_s")
        tok = med(d.get("tokio", []), "msgs_per_s")
        for s in servers_all:
            runs = d.get(s)
            if not runs:
                continue
            m = med(runs, "msgs_per_s")
            r = rng(runs, "msgs_per_s")
            print(f"| {LABEL[s]} | {fmt(m)} | {fmt(r[0]) if r else 'n/a'}-{fmt(r[1]) if r else 'n/a'} "
                  f"| {fmt(med(runs, 'mib_per_s'), 1)} | {ratio(m, raw)} | {ratio(m, tok)} "
                  f"| {fmt(med(runs, 'p50_us'))} | {fmt(med(runs, 'p99_us'))} | {fmt(med(runs, 'p999_us'))} "
                  f"| {fmt(med(runs, 'client_cpu_pct'))} | {fmt(med(runs, 'server_cpu_pct'))} "
                  f"| {fmt(med(runs, 'server_cpu_us_per_msg'), 3)} | {fmt(med(runs, 'other_cpu_pct'))} "
                  f"| {len(runs)} | {problems(runs)} |")
        print()

    if "connect" in data:
        d = data["connect"]
        print("### connect: 64 sessions at a time (connect, upgrade, one 32-byte echo, Close 1000)\n")
        print("| server | sessions/s (median) | min-max | vs rawecho | vs tokio | p50 us | p99 us "
              "| client CPU % | server CPU % | server CPU us/session | other CPU % | runs | problems |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        raw = med(d.get("rawecho", []), "sessions_per_s")
        tok = med(d.get("tokio", []), "sessions_per_s")
        for s in servers_all:
            runs = d.get(s)
            if not runs:
                continue
            m = med(runs, "sessions_per_s")
            r = rng(runs, "sessions_per_s")
            print(f"| {LABEL[s]} | {fmt(m)} | {fmt(r[0]) if r else 'n/a'}-{fmt(r[1]) if r else 'n/a'} "
                  f"| {ratio(m, raw)} | {ratio(m, tok)} | {fmt(med(runs, 'p50_us'))} | {fmt(med(runs, 'p99_us'))} "
                  f"| {fmt(med(runs, 'client_cpu_pct'))} | {fmt(med(runs, 'server_cpu_pct'))} "
                  f"| {fmt(med(runs, 'server_cpu_us_per_session'), 1)} | {fmt(med(runs, 'other_cpu_pct'))} "
                  f"| {len(runs)} | {problems(runs)} |")
        print()

    if "idle" in data:
        d = data["idle"]
        n = None
        for runs in d.values():
            for r in runs:
                n = r.get("connections", n)
        print(f"### idle: {n} idle connections after one 4 KiB echo each (server memory growth)\n")
        print("| server | established (median) | RSS bytes/conn | Pss bytes/conn | vs rawecho | vs tokio "
              "| RSS before MiB | RSS after MiB | runs | problems |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        raw = med(d.get("rawecho", []), "rss_bytes_per_conn")
        tok = med(d.get("tokio", []), "rss_bytes_per_conn")
        for s in servers_all:
            runs = d.get(s)
            if not runs:
                continue
            m = med(runs, "rss_bytes_per_conn")
            b = med(runs, "rss_before_kb")
            a = med(runs, "rss_after_kb")
            print(f"| {LABEL[s]} | {fmt(med(runs, 'established'))} | {fmt(m)} | {fmt(med(runs, 'pss_bytes_per_conn'))} "
                  f"| {ratio(m, raw)} | {ratio(m, tok)} | {fmt(b / 1024 if b else None, 1)} "
                  f"| {fmt(a / 1024 if a else None, 1)} | {len(runs)} | {problems(runs)} |")
        print()
    print("Medians over rounds; each run used a freshly started server. Ratios are median/median "
          "(for memory, lower is better). Client CPU near 100% means the load generator, not the "
          "server, limited that run. Other CPU % is the rest of the machine's busy time "
          "during the window (percent of one core; other users' builds, softirq work not charged to "
          "either process): a high value means the run was disturbed.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results.txt")
