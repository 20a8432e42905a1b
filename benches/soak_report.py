#!/usr/bin/env python3
"""Summary and PASS/FAIL verdicts of a benches/soak.sh run.

    python3 benches/soak_report.py benches/results/soak-DATE

Reads OUT/samples.csv (server fd count, VmRSS, CPU ticks and metrics gauges
over time) and OUT/facts.txt (loadgen READY/RESULT lines and other facts
written by soak.sh), prints the curves' key points and one verdict per part.
Exit status 1 when a part failed.
"""

import csv
import math
import sys
from collections import defaultdict

TOL = 0.05  # 5 %


def kvs(line):
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def num(v, default=None):
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def load(out):
    rows = defaultdict(list)
    with open(f"{out}/samples.csv") as f:
        for r in csv.DictReader(f):
            rows[r["part"]].append(r)
    facts = defaultdict(list)  # part -> list of dicts (one per line)
    header = []
    with open(f"{out}/facts.txt") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#"):
                header.append(line)
                continue
            if not line.strip():
                continue
            part, _, rest = line.partition(" ")
            facts[part].append(kvs(rest))
    return rows, facts, header


def merged(fs):
    m = {}
    for d in fs:
        m.update(d)
    return m


def pct(a, b):
    return 100.0 * (a - b) / b if b else float("nan")


def fmt_row(r):
    cols = [f"{r['phase']:>10}", f"t={float(r['t_s']):8.1f}s", f"fds={r['fds']:>6}"]
    if r["rss_kb"]:
        cols.append(f"rss={int(r['rss_kb']):>7} kB")
    if r["open_connections"]:
        cols.append(f"open={r['open_connections']:>6}")
        cols.append(f"pooled={r['pooled_contexts']:>4}")
        cols.append(f"pings={r['pings_sent']:>7}")
        cols.append(f"idle_closes={r['idle_closes']}")
        cols.append(f"1006={r['closes_1006']}")
        cols.append(f"hs_ok={r['handshakes_ok']}")
        cols.append(f"close1000={r.get('closes_1000')}")
    return "  " + " ".join(cols)


def first(rows, phase):
    for r in rows:
        if r["phase"] == phase:
            return r
    return None


def cycles(rows, fs):
    fails = []
    m = merged(fs)
    runs = [d for d in fs if "run" in d]
    print("== cycles: connect / upgrade / one echo / close, concurrency 64 ==")
    if "error" in m:
        print(f"  error: {m['error']}")
        return ["error " + m["error"]]
    print(f"  warm-up: {m.get('warmup_sessions')} sessions (failed={m.get('warmup_failed')}); 'before' is sampled 5 s after it")
    for d in runs:
        print(
            f"  run {d['run']}: sessions={d.get('sessions')} in {d.get('secs')} s = {d.get('sessions_per_s')}/s, "
            f"p99={d.get('p99_us')} us, server CPU {d.get('server_cpu_pct')}%, failed={d.get('failed')} "
            f"(timeout={d.get('fail_timeout')} connect={d.get('fail_connect')} handshake={d.get('fail_handshake')} protocol={d.get('fail_protocol')}) unfinished={d.get('unfinished')} rc={d.get('rc')}"
        )
    completed = int(m.get("completed", 0))
    target = int(m.get("target", 0))
    secs = num(m.get("secs"), 0)
    rate = f" = {completed / secs:.0f}/s" if secs else ""
    print(
        f"  completed {completed} of {target} sessions (server: clean Close 1000) in {m.get('secs')} s{rate} over {m.get('runs')} run(s); "
        f"server upgrades {m.get('handshakes')}, echoes {m.get('messages_in')}; loadgen window sessions {m.get('client_window_sessions')}, failed={m.get('failed')}"
    )
    print("  samples:")
    for r in rows:
        print(fmt_row(r))
    before, after = first(rows, "before"), first(rows, "after5")
    fresh = first(rows, "fresh")
    during = [r for r in rows if r["phase"] == "during" and r["fds"]]
    if not before or not after or not before["fds"] or not after["fds"]:
        print("  verdict: FAIL (missing before/after samples)")
        return ["missing samples"]
    fb, fa = int(before["fds"]), int(after["fds"])
    rb, ra = int(before["rss_kb"]), int(after["rss_kb"])
    if fresh and fresh["rss_kb"]:
        print(f"  fresh server: fds={fresh['fds']} rss={fresh['rss_kb']} kB (warm-up grew RSS by {int(before['rss_kb']) - int(fresh['rss_kb'])} kB)")
    if during:
        fmax = max(int(r["fds"]) for r in during)
        rmin = min(int(r["rss_kb"]) for r in during)
        rmax = max(int(r["rss_kb"]) for r in during)
        print(f"  during: {len(during)} samples, fds max {fmax}, rss {rmin}..{rmax} kB")
    print(f"  before: fds={fb} rss={rb} kB; 5 s after: fds={fa} rss={ra} kB (fds {fa - fb:+d}, rss {ra - rb:+d} kB = {pct(ra, rb):+.2f}%)")
    for k in ("after10", "after15", "after20"):
        r = first(rows, k)
        if r and r["fds"]:
            print(f"  {k[5:]} s after: fds={r['fds']} rss={r['rss_kb']} kB open={r['open_connections']}")
    if completed < target:
        fails.append(f"only {completed} of {target} sessions completed")
    if abs(fa - fb) > TOL * fb:
        fails.append(f"fds {fa} vs {fb} before")
    if abs(ra - rb) > TOL * rb:
        fails.append(f"rss {ra} kB vs {rb} kB before ({pct(ra, rb):+.2f}%)")
    if int(m.get("failed", 0) or 0):
        fails.append(f"{m.get('failed')} failed sessions")
    if m.get("server_died"):
        fails.append("server died")
    print(f"  verdict: {'PASS' if not fails else 'FAIL (' + '; '.join(fails) + ')'}")
    return fails


def idle(rows, fs):
    fails = []
    m = merged(fs)
    lgs = [d for d in fs if "lg" in d]
    print("== idle: idle connections held against --ping-interval 5s --idle-timeout 15s ==")
    if "error" in m:
        print(f"  error: {m['error']}")
        fails.append("error " + m["error"])
    est = closed = failed = pings = 0
    for d in lgs:
        print(
            f"  loadgen {d['lg']}: connections={d.get('connections')} established={d.get('established')} closed_by_server={d.get('closed_by_server')} "
            f"failed={d.get('failed')} still_open={d.get('still_open')} pings_answered={d.get('pings')} setup_secs={d.get('setup_secs')} hold_secs={d.get('hold_secs')} rc={d.get('rc')}"
        )
        if "established" not in d:
            fails.append(f"loadgen {d['lg']} printed no RESULT")
        est += int(d.get("established", 0))
        closed += int(d.get("closed_by_server", 0))
        failed += int(d.get("failed", 0))
        pings += int(d.get("pings", 0))
    want = sum(int(d.get("connections", 0)) for d in lgs)
    print(f"  total: established={est} of {want}, closed_by_server={closed}, failed={failed}, pings answered by the clients={pings}")
    print("  samples:")
    for r in rows:
        print(fmt_row(r))
    # samples of the hold: READY and "hold" rows, less any taken while the
    # clients were already leaving (fewer open connections than established)
    hold = [
        r
        for r in rows
        if r["phase"] in ("ready", "hold")
        and r["rss_kb"]
        and (not r["open_connections"] or int(r["open_connections"]) >= est)
    ]
    dropped = [r for r in rows if r["phase"] == "hold" and r not in hold]
    for r in dropped:
        print(f"  (the hold sample at t={float(r['t_s']):.0f}s is left out: taken while the clients were leaving, open={r['open_connections']})")
    before = first(rows, "before")
    after = first(rows, "after5")
    if hold:
        rss = [int(r["rss_kb"]) for r in hold]
        fds = [int(r["fds"]) for r in hold]
        rmin, rmax = min(rss), max(rss)
        spread = 100.0 * (rmax - rmin) / rmin
        last = hold[-1]
        print(
            f"  hold ({len(hold)} samples, READY to t={float(last['t_s']):.0f}s): rss min {rmin} kB max {rmax} kB (spread {spread:.2f}%), "
            f"first {rss[0]} kB last {rss[-1]} kB; fds {min(fds)}..{max(fds)}"
        )
        if len(hold) > 1:
            later = rss[1:]
            print(f"  without the READY sample: rss {min(later)}..{max(later)} kB (spread {100.0 * (max(later) - min(later)) / min(later):.2f}%)")
        if spread > 100 * TOL:
            fails.append(f"rss spread {spread:.2f}% over the hold")
        if last["pings_sent"]:
            f0 = hold[0]
            dt = float(last["t_s"]) - float(f0["t_s"])
            dp = int(last["pings_sent"]) - int(f0["pings_sent"])
            if dt > 0:
                print(f"  server pings over the hold: {dp} in {dt:.0f} s = {dp / dt:.0f}/s ({dp / dt / max(est, 1) * 5:.2f} per connection per 5 s); idle-timeout closes {last['idle_closes']}")
    else:
        fails.append("no hold samples")
    if before and after and before["fds"] and after["fds"]:
        print(f"  before: fds={before['fds']} rss={before['rss_kb']} kB; 5 s after the clients left: fds={after['fds']} rss={after['rss_kb']} kB open={after['open_connections']}")
    if want == 0 or est != want:
        fails.append(f"established {est} of {want}")
    if closed:
        fails.append(f"closed_by_server={closed}")
    if failed:
        fails.append(f"failed={failed}")
    if m.get("server_died"):
        fails.append("server died")
    print(f"  verdict: {'PASS' if not fails else 'FAIL (' + '; '.join(fails) + ')'}")
    return fails


def sigkill(rows, fs):
    fails = []
    m = merged(fs)
    print("== sigkill: client holding idle connections killed with SIGKILL ==")
    if "error" in m:
        print(f"  error: {m['error']}")
        fails.append("error " + m["error"])
    print(f"  READY established={m.get('established')} failed={m.get('failed')}; server fds: baseline {m.get('baseline_fds')}, loaded {m.get('loaded_fds')}")
    polls = [r for r in rows if r["phase"] == "after_kill"]
    for r in rows:
        if r["phase"] != "after_kill":
            print(fmt_row(r))
    if polls:
        t0 = float(polls[0]["t_s"])
        pts = [polls[0]] + polls[1:-1][:: max(1, len(polls) // 8)] + ([polls[-1]] if len(polls) > 1 else [])
        seen = set()
        curve = []
        for r in pts:
            if id(r) in seen:
                continue
            seen.add(id(r))
            curve.append(f"+{1000 * (float(r['t_s']) - t0):.0f}ms:{r['fds']}")
        print(f"  fd count after the kill ({len(polls)} polls, time from the first poll): " + " ".join(curve))
    back = m.get("back_to_baseline_s")
    limit = num(m.get("limit_s"), 5)
    print(f"  back to baseline {back} s after the SIGKILL (limit {limit:g} s); loadgen exit status {m.get('kill_rc')}")
    if back in (None, "never") or num(back, math.inf) > limit:
        fails.append(f"fds not back to baseline within {limit:g} s (last {m.get('last_fds')})")
    if m.get("server_died"):
        fails.append("server died")
    print(f"  verdict: {'PASS' if not fails else 'FAIL (' + '; '.join(fails) + ')'}")
    return fails


def main():
    out = sys.argv[1].rstrip("/")
    rows, facts, header = load(out)
    for h in header:
        print(h)
    verdicts = {}
    for part, fn in (("cycles", cycles), ("idle", idle), ("sigkill", sigkill)):
        if part in facts or part in rows:
            verdicts[part] = fn(rows.get(part, []), facts.get(part, []))
            print()
    print("verdicts: " + ", ".join(f"{p} {'PASS' if not v else 'FAIL'}" for p, v in verdicts.items()))
    sys.exit(1 if any(verdicts.values()) else 0)


if __name__ == "__main__":
    main()
