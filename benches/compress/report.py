#!/usr/bin/env python3
"""Tables (Markdown) from benches/compress/run.sh's compress.txt: medians over rounds."""
import statistics
import sys
from collections import defaultdict


def fields(line):
    return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)


def main(path):
    echo = defaultdict(list)
    idle = []
    order = []
    for line in open(path):
        if line.startswith("#"):
            print(line.rstrip())
            continue
        f = fields(line)
        if line.startswith("echo ") and "error" not in f:
            key = (f["size"], f["server"])
            if key not in order:
                order.append(key)
            echo[key].append(f)
        elif line.startswith("idle ") and "error" not in f:
            idle.append(f)
    if echo:
        print()
        print("| size | server | msgs/s | server CPU µs/msg | wire bytes/msg server→client | client→server | JSON bytes/msg | rounds |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for key in sorted(order, key=lambda k: (k[0] != "1k", order.index(k))):
            runs = echo[key]
            med = lambda k: statistics.median(float(r[k]) for r in runs)  # noqa: E731
            bad = "" if all(r.get("echo_ok") == "1" for r in runs) else " (echo length mismatch!)"
            print(f"| {key[0]} | {key[1]}{bad} | {med('msgs_per_s'):.0f} | {med('cpu_us_per_msg'):.1f} "
                  f"| {med('wire_in_per_msg'):.0f} | {med('wire_out_per_msg'):.0f} "
                  f"| {med('plain_per_msg'):.0f} | {len(runs)} |")
    if idle:
        print()
        print("| server | N | RSS bytes/conn | Pss bytes/conn | negotiated | compressed echoes |")
        print("|---|---:|---:|---:|---:|---:|")
        for f in idle:
            print(f"| {f['server']} | {f['n']} | {f['rss_bytes_per_conn']} | {f['pss_bytes_per_conn']} "
                  f"| {f.get('negotiated', '?')} | {f.get('compressed_echoes', '?')} |")


if __name__ == "__main__":
    main(sys.argv[1])
