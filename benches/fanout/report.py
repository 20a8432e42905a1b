#!/usr/bin/env python3
"""Tables (markdown) of benches/fanout/run.sh's results.txt: medians over rounds
per server and rate, the sustained rate and its ratio to the raw limit, and
idle memory per subscription."""
import statistics
import sys
from collections import defaultdict


def kv(words):
    out = {}
    for w in words:
        if "=" in w:
            k, v = w.split("=", 1)
            out[k] = v
    return out


def num(d, k):
    try:
        return float(d[k])
    except (KeyError, ValueError):
        return None


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, nd=0):
    if v is None:
        return "–"
    if nd == 0:
        return f"{v:,.0f}"
    return f"{v:,.{nd}f}"


def main(path):
    steps = defaultdict(list)  # (server, rate) -> [dict]
    results = defaultdict(list)  # server -> [dict]
    mem = []
    order = []
    rounds = set()
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        w = line.split()
        if len(w) >= 3 and w[1] == "mem":
            mem.append(kv(w[2:]))
            continue
        if len(w) < 3:
            continue
        name, rnd, kind = w[0], w[1], w[2]
        if rnd == "profile":  # the PROFILE=1 pass runs under perf: not a measurement
            continue
        if name not in order:
            order.append(name)
        rounds.add(rnd)
        d = kv(w[3:])
        if kind == "STEP":
            steps[(name, int(d["rate"]))].append(d)
        elif kind == "RESULT":
            results[name].append(d)

    print(f"Medians over {len(rounds)} round(s); a step's row counts the rounds that reached it.\n")
    print("| server | rate (msgs/s) | rounds | passed | delivered | deliveries/s | server CPU µs/delivery | server CPU % | p50 ms | p99 ms | client CPU % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in order:
        for rate in sorted(r for (n, r) in steps if n == name):
            ds = steps[(name, rate)]
            passed = sum(1 for d in ds if d.get("ok") == "1")
            print(
                f"| {name} | {rate} | {len(ds)} | {passed} | {fmt(med(num(d, 'delivered_pct') for d in ds), 1)} % "
                f"| {fmt(med(num(d, 'deliveries_per_s') for d in ds))} "
                f"| {fmt(med(num(d, 'cpu_us_per_delivery') for d in ds), 3)} "
                f"| {fmt(med(num(d, 'server_cpu_pct') for d in ds))} "
                f"| {fmt(med(num(d, 'p50_ms') for d in ds), 1)} | {fmt(med(num(d, 'p99_ms') for d in ds), 1)} "
                f"| {fmt(med(num(d, 'client_cpu_pct') for d in ds))} |"
            )

    print("\n| server | sustained rate: last before the first failed step (median; per round) | highest rate passed (median; per round) | deliveries/s at the sustained rate | server CPU µs/delivery at it | vs raw (sustained deliveries/s) | vs raw-cork |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for name in order:
        rates = [num(d, "sustained_rate") for d in results[name] if "sustained_rate" in d]
        sustained = med(rates)
        dps = cpu = None
        if sustained:
            ds = steps.get((name, int(sustained)), [])
            dps = med(num(d, "deliveries_per_s") for d in ds)
            cpu = med(num(d, "cpu_us_per_delivery") for d in ds)
        summary[name] = dps
        per_round = ", ".join(fmt(r) for r in rates) or "–"
        high = [num(d, "highest_passed") for d in results[name] if "highest_passed" in d]
        high_s = f"{fmt(med(high))} ({', '.join(fmt(r) for r in high)})" if high else "–"
        summary_line = f"| {name} | {fmt(sustained)} ({per_round}) | {high_s} | {fmt(dps)} | {fmt(cpu, 3)} |"
        summary[name + ":line"] = summary_line
    raw = summary.get("raw")
    cork = summary.get("raw-cork")
    for name in order:
        ratio = []
        for ref in (raw, cork):
            ratio.append(f"{summary[name] / ref:.2f}" if ref and summary.get(name) else "–")
        print(summary[name + ":line"] + f" {ratio[0]} | {ratio[1]} |")

    # CPU per delivery against the raw limits at the same rate
    for ref in ("raw", "raw-cork"):
        both = sorted({r for (n, r) in steps if n == ref} & {r for (n, r) in steps if n == "wsloop"})
        if not both:
            continue
        print(f"\n| rate | wsloop CPU µs/delivery | {ref} CPU µs/delivery | wsloop / {ref} |")
        print("|---|---|---|---|")
        for rate in both:
            a = med(num(d, "cpu_us_per_delivery") for d in steps[("wsloop", rate)])
            b = med(num(d, "cpu_us_per_delivery") for d in steps[(ref, rate)])
            ratio = f"{a / b:.2f}" if a and b else "–"
            print(f"| {rate} | {fmt(a, 3)} | {fmt(b, 3)} | {ratio} |")

    if mem:
        print("\n| topics per connection | connections | RSS B/conn | Pss B/conn | RSS B per subscription (vs 0 topics) |")
        print("|---|---|---|---|---|")
        base = next((num(m, "rss_bytes_per_conn") for m in mem if m.get("topics") == "0"), None)
        for m in mem:
            t = int(m.get("topics", "0"))
            r = num(m, "rss_bytes_per_conn")
            per = (r - base) / t if (t and r is not None and base is not None) else None
            print(
                f"| {t} | {m.get('established', '–')} | {fmt(r)} | {fmt(num(m, 'pss_bytes_per_conn'))} | {fmt(per)} |"
            )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results.txt")
