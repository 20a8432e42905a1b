#!/usr/bin/env python3
"""Summarise benches/run.sh results (results.txt) as Markdown tables of
medians over rounds, with ratios to rawecho and to tokio-tungstenite, and,
when the run had a base build (BASE=<commit>), a table of current/base
ratios flagged within or outside +-5 %.

Line format: `SCENARIO SERVER ROUND RESULT key=value ...`; lines starting
with '#' are header comments and are printed as-is.
"""
import statistics
import sys
from collections import defaultdict

ORDER = ["wsloop", "wsloop-base", "rawecho", "tokio", "gorilla", "uws"]
LABEL = {
    "wsloop": "wsloop",
    "wsloop-base": "wsloop-base",
    "rawecho": "rawecho (raw TCP echo)",
    "tokio": "tokio-tungstenite",
    "gorilla": "gorilla/websocket",
    "uws": "uWebSockets (C++)",
}
# scenarios in the order run.sh lists them; any other echo scenario follows
ECHO = ["small", "small-text", "16k", "64k", "large"]
# a same-run difference beyond this is reported as a change
TOLERANCE = 0.05
# client CPU (% of its core, median) from which the load generator, not the
# server, may have set the message rate (the RT ceiling is ~95 %)
CLIENT_BOUND = 90
# other CPU (% of one core, median) from which the run counts as disturbed:
# in A/A runs with 150-170 % of other load the servers got 15-30 % of their
# core and msgs/s and p99 moved by +-25 % per round, server CPU per message
# by +-7 %
DISTURBED = 50


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


def size_label(n):
    n = int(n)
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n}-byte"


def echo_title(sc, d):
    """Title from the RESULT lines themselves, so it cannot drift from run.sh."""
    r = next((r for runs in d.values() for r in runs if "size" in r), None)
    if r is None:
        return sc
    kind = r.get("payload", "binary")
    return (f"{sc}: {size_label(r['size'])} {kind} messages, {r.get('connections', '?')} connections "
            f"x {r.get('inflight', '?')} in flight")


def echo_table(sc, d, servers_all):
    print(f"### {echo_title(sc, d)}\n")
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


# figures compared between wsloop and wsloop-base: (key, label, digits, higher is better)
COMPARE = {
    "echo": [("msgs_per_s", "msgs/s", 0, True), ("server_cpu_us_per_msg", "server CPU us/msg", 3, False),
             ("p99_us", "p99 us", 0, False)],
    "connect": [("sessions_per_s", "sessions/s", 0, True),
                ("server_cpu_us_per_session", "server CPU us/session", 1, False), ("p99_us", "p99 us", 0, False)],
    "idle": [("rss_bytes_per_conn", "RSS bytes/conn", 0, False), ("pss_bytes_per_conn", "Pss bytes/conn", 0, False)],
}


def paired_ratios(cur, base, key):
    """current/base per round (the two ran back to back in the same round)."""
    b = {r["_round"]: num(r.get(key)) for r in base}
    out = []
    for r in sorted(cur, key=lambda r: int(r["_round"])):
        a, bb = num(r.get(key)), b.get(r["_round"])
        if a is not None and bb:
            out.append(a / bb)
    return out


def comparison(data, scenarios, base_desc):
    rows = []
    for sc in scenarios:
        d = data[sc]
        cur, base = d.get("wsloop"), d.get("wsloop-base")
        if not cur or not base:
            continue
        kind = "connect" if sc == "connect" else "idle" if sc == "idle" else "echo"
        client_bound = any((med(x, "client_cpu_pct") or 0) >= CLIENT_BOUND for x in (cur, base))
        other = max((med(x, "other_cpu_pct") or 0) for x in (cur, base))
        for key, label, digits, higher_better in COMPARE[kind]:
            a, b = med(cur, key), med(base, key)
            if a is None or not b:
                continue
            r = a / b
            per = paired_ratios(cur, base, key)
            per_s = " ".join(f"{x:.3f}" for x in per) if len(per) <= 5 else \
                f"{min(per):.3f}-{max(per):.3f} ({len(per)} rounds)"
            if abs(r - 1) <= TOLERANCE:
                verdict = "within ±5 %"
            else:
                better = (r > 1) == higher_better
                # rounds whose own ratio is beyond the tolerance on the same side
                agree = sum(1 for x in per if abs(x - 1) > TOLERANCE and (x > 1) == (r > 1))
                verdict = (f"**outside ±5 %: {'better' if better else 'worse'}** "
                           f"({agree}/{len(per)} rounds beyond ±5 % that way)")
            if client_bound and key in ("msgs_per_s", "sessions_per_s"):
                verdict += "; client-bound (client CPU ≥ 90 %): compare server CPU instead"
            if other >= DISTURBED and key in ("msgs_per_s", "sessions_per_s", "p99_us"):
                verdict += f"; disturbed (other CPU {other:.0f} %): try PRIO=rt"
            rows.append((sc, label, fmt(a, digits), fmt(b, digits), f"{r:.3f}", per_s, verdict))
    if not rows:
        return
    print(f"### Current vs base, same run: wsloop / wsloop-base ({base_desc})\n")
    print("| scenario | figure | wsloop (median) | wsloop-base (median) | current / base | per-round ratios "
          "| verdict |")
    print("|---|---|---:|---:|---:|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print("Ratios are median/median; per-round ratios pair the two runs of the same round (run back to "
          "back, order swapped every round) and show the spread. For msgs/s higher is better, for CPU per "
          "message, p99 and bytes per connection lower is better. Only a difference outside ±5 % that "
          "most rounds show on their own is worth a look; a single run on this shared machine moves by "
          "±20 %, and an A/A run (base = current code) shows the noise of the day.")
    print()


def main(path):
    data = defaultdict(lambda: defaultdict(list))
    header = []
    base_desc = "base"
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            header.append(line)
            if line.startswith("# wsloop-base:"):
                base_desc = line.split(":", 1)[1].split(",")[0].strip()
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
    for s in servers_all:
        LABEL.setdefault(s, s)

    # echo scenarios: the known ones in order, then any other with mode=echo
    echo = [sc for sc in ECHO if sc in data]
    echo += [sc for sc in data if sc not in echo and
             any(r.get("mode") == "echo" for runs in data[sc].values() for r in runs)]
    for sc in echo:
        echo_table(sc, data[sc], servers_all)

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

    comparison(data, echo + [sc for sc in ("connect", "idle") if sc in data], base_desc)

    print("Medians over rounds; each run used a freshly started server. Ratios are median/median "
          "(for memory, lower is better). Client CPU near 100% means the load generator, not the "
          "server, limited that run. Other CPU % is the rest of the machine's busy time "
          "during the window (percent of one core; other users' builds, softirq work not charged to "
          "either process): a high value means the run was disturbed.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results.txt")
