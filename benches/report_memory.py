#!/usr/bin/env python3
"""Summarise benches/memory.sh output (memory.txt) as Markdown tables; with a
base build (BASE=<commit>), also wsloop against wsloop-base side by side."""
import sys

ORDER = ["wsloop", "wsloop-base", "rawecho", "tokio", "gorilla", "uws"]
TOLERANCE = 0.05
LABEL = {
    "wsloop": "wsloop",
    "wsloop-base": "wsloop-base",
    "rawecho": "rawecho (raw TCP echo)",
    "tokio": "tokio-tungstenite",
    "gorilla": "gorilla/websocket",
    "uws": "uWebSockets (C++)",
}


def parse(path):
    head, ctx, mem = [], {}, []
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            head.append(line.lstrip("# "))
            continue
        parts = line.split()
        kv = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        kv["server"] = parts[0]
        if parts[1] == "ctx":
            ctx[parts[0]] = kv
        else:
            mem.append(kv)
    return head, ctx, mem


def f(v, d=0):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return f"{x:,.{d}f}"


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def verdict(a, b):
    """current/base and whether it is within the tolerance (lower is better)."""
    if a is None or not b:
        return "n/a", "n/a"
    r = a / b
    if abs(r - 1) <= TOLERANCE:
        return f"{r:.3f}", "within ±5 %"
    return f"{r:.3f}", f"**outside ±5 %: {'better' if r < 1 else 'worse'}**"


def comparison(head, ctx, mem):
    cur = {r.get("n"): r for r in mem if r["server"] == "wsloop"}
    base = {r.get("n"): r for r in mem if r["server"] == "wsloop-base"}
    ns = [n for n in cur if n in base]
    if not ns:
        return
    desc = next((h.split(":", 1)[1].split(",")[0].strip() for h in head if h.startswith("wsloop-base:")), "base")
    print(f"### Current vs base: wsloop / wsloop-base ({desc})\n")
    print("| N | figure | wsloop | wsloop-base | current / base | verdict |")
    print("|---:|---|---:|---:|---:|---|")
    for n in sorted(ns, key=lambda x: num(x) or 0):
        for key, label in (("rss_bytes_per_conn", "RSS bytes/conn"), ("pss_bytes_per_conn", "Pss bytes/conn"),
                           ("idle_cpu_pct", "idle CPU % of a core"), ("idle_vctx", "idle voluntary ctx switches")):
            a, b = num(cur[n].get(key)), num(base[n].get(key))
            if a is None and b is None:
                continue
            r, v = verdict(a, b)
            print(f"| {f(n)} | {label} | {f(a, 2 if key == 'idle_cpu_pct' else 0)} "
                  f"| {f(b, 2 if key == 'idle_cpu_pct' else 0)} | {r} | {v} |")
    c, b = ctx.get("wsloop"), ctx.get("wsloop-base")
    if c and b:
        print(f"| 0 | wake-ups over {c.get('secs')} s (ctx switches / CPU ticks) "
              f"| {c.get('voluntary_ctxt_switches')} / {c.get('cpu_ticks')} "
              f"| {b.get('voluntary_ctxt_switches')} / {b.get('cpu_ticks')} | | |")
    print()
    print("One measurement per N and server; lower is better. Judge memory at the largest N: RSS grows in "
          "whole pages and in malloc's steps, and a step of 16 pages is 65 B per connection at 1,000 "
          "connections but 3 B at 19,000 (an A/A run gave 204 vs 135 B at 1,000 and 97 vs 97 B at 19,000). "
          "Idle CPU is counted in 10 ms ticks (one tick over 60 s is 0.017 % of a core), and the number "
          "of voluntary context switches depends on how the pings of the 19,000 connections bunch up "
          "and on the machine's other load (A/A: 2,412 vs 4,600), so neither means much on its own.")
    print()


def main(path):
    head, ctx, mem = parse(path)
    for h in head:
        print(h, " ")
    print()
    # one block per server, N ascending (memory.sh measures N by N)
    rank = {s: i for i, s in enumerate(ORDER)}
    mem.sort(key=lambda r: (rank.get(r["server"], len(ORDER)), num(r.get("n")) or 0))
    print("### Memory per idle connection (after one 4 KiB echo each)\n")
    print("| server | N | established | RSS before MiB | RSS after MiB | RSS bytes/conn | Pss bytes/conn | problems |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in mem:
        probs = [f"{k}={r[k]}" for k in ("failed", "closed_by_server", "server_died", "error") if r.get(k) not in (None, "0")]
        rb = float(r["rss_before_kb"]) / 1024 if "rss_before_kb" in r else None
        ra = float(r["rss_after_kb"]) / 1024 if "rss_after_kb" in r else None
        print(f"| {LABEL.get(r['server'], r['server'])} | {f(r.get('n'))} | {f(r.get('established'))} | {f(rb, 1)} "
              f"| {f(ra, 1)} | {f(r.get('rss_bytes_per_conn'))} | {f(r.get('pss_bytes_per_conn'))} "
              f"| {', '.join(probs) or 'none'} |")
    print()
    print("### Idle CPU and wake-ups\n")
    print("| server | idle connections | window s | server CPU ticks | % of one core | voluntary ctx switches "
          "| pings answered | no connections: ctx switches / CPU ticks over |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in mem:
        if "idle_cpu_pct" not in r:
            continue
        c = ctx.get(r["server"], {})
        cs = f"{c.get('voluntary_ctxt_switches', 'n/a')} / {c.get('cpu_ticks', 'n/a')} over {c.get('secs', '?')} s" if c else "n/a"
        print(f"| {LABEL.get(r['server'], r['server'])} | {f(r.get('established'))} | {r.get('idle_cpu_window_s')} "
              f"| {r.get('idle_cpu_ticks')} | {r.get('idle_cpu_pct')} | {r.get('idle_vctx')} | {r.get('pings')} | {cs} |")
    for s, c in ctx.items():
        if not any(r["server"] == s and "idle_cpu_pct" in r for r in mem):
            print(f"| {LABEL.get(s, s)} | 0 | {c.get('secs')} | {c.get('cpu_ticks')} | | {c.get('voluntary_ctxt_switches')} | | |")
    print()
    comparison(head, ctx, mem)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "memory.txt")
