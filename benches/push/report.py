#!/usr/bin/env python3
"""Table of medians for benches/push/run.sh: reads its results.txt (lines
`LOAD.MODE.rROUND key=value ...`) and prints markdown: per load and mode the
median over rounds of deliveries/s, server CPU us per delivery and percent, p50/p99
latency (ms), Full back-offs and load average, then the ratios thread/loop, thread/loop4k, tokio/thread
and gorilla/thread of the medians (deliveries/s, and deliveries per server
CPU second: above 1 the first is the faster, the cheaper)."""
import statistics
import sys
from collections import defaultdict

MODES = ["thread", "alt", "loop", "loop4k", "tokio", "gorilla"]
KEYS = ["deliveries_per_s", "server_cpu_us_per_msg", "server_cpu_pct", "p50_us", "p99_us", "full",
        "echo_p50_us", "echo_p99_us", "secs", "loadavg"]


def main(path):
    runs = defaultdict(list)
    failed = defaultdict(int)
    for line in open(path):
        if line.startswith("#") or not line.strip():
            if line.startswith("#"):
                print(line.rstrip())
            continue
        tag, *kvs = line.split()
        load, mode, _ = tag.split(".")
        kv = dict(x.split("=", 1) for x in kvs if "=" in x)
        if "error" in kv or "exit" in kv or kv.get("delivered") != kv.get("messages"):
            failed[(load, mode)] += 1
            continue
        runs[(load, mode)].append({k: float(kv[k]) for k in KEYS if k in kv})

    def med(load, mode, key):
        v = [r[key] for r in runs.get((load, mode), []) if key in r]
        return statistics.median(v) if v else None

    def f(x, scale=1.0, nd=0):
        return "-" if x is None else f"{x / scale:,.{nd}f}"

    print()
    print("| load | server | runs | deliveries/s | server CPU µs/delivery | server CPU % | p50 ms | p99 ms "
          "| Full back-offs | echo p50/p99 ms | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    loads = sorted({k[0] for k in list(runs) + list(failed)},
                   key=lambda x: ["max", "rate", "flood"].index(x) if x in ["max", "rate", "flood"] else 9)
    for load in loads:
        for mode in MODES:
            n = len(runs.get((load, mode), []))
            if not n and not failed.get((load, mode)):
                continue
            e50, e99 = med(load, mode, "echo_p50_us"), med(load, mode, "echo_p99_us")
            echo = "-" if e50 is None else f"{e50 / 1000:.1f} / {e99 / 1000:.1f}"
            runs_s = f"{n}" + (f" (+{failed[(load, mode)]} failed)" if failed.get((load, mode)) else "")
            print(f"| {load} | {mode} | {runs_s} | {f(med(load, mode, 'deliveries_per_s'))} "
                  f"| {f(med(load, mode, 'server_cpu_us_per_msg'), 1, 3)} "
                  f"| {f(med(load, mode, 'server_cpu_pct'))} "
                  f"| {f(med(load, mode, 'p50_us'), 1000, 1)} | {f(med(load, mode, 'p99_us'), 1000, 1)} "
                  f"| {f(med(load, mode, 'full'))} | {echo} | {f(med(load, mode, 'loadavg'), 1, 1)} |")
    print()
    for load in loads:
        for a, b in [("thread", "loop"), ("thread", "loop4k"), ("alt", "thread"), ("alt", "loop"),
                     ("tokio", "thread"), ("gorilla", "thread")]:
            d = [med(load, m, "deliveries_per_s") for m in (a, b)]
            c = [med(load, m, "server_cpu_us_per_msg") for m in (a, b)]
            if None in d or None in c:
                continue
            # deliveries per CPU second, a against b: above 1, a is the cheaper
            print(f"- {load}: {a}/{b} deliveries/s {d[0] / d[1]:.2f}, "
                  f"deliveries per CPU second {c[1] / c[0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results.txt")
