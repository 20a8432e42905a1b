#!/usr/bin/env python3
"""Summarise benches/memory.sh output (memory.txt) as Markdown tables."""
import sys

LABEL = {
    "wsloop": "wsloop",
    "rawecho": "rawecho (raw TCP echo)",
    "tokio": "tokio-tungstenite",
    "gorilla": "gorilla/websocket",
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


def main(path):
    head, ctx, mem = parse(path)
    for h in head:
        print(h, " ")
    print()
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


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "memory.txt")
