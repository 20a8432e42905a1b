#!/usr/bin/env bash
# One wsloop process vs two sharing the port with --reuse-port, small-message echo
# (32 B, 64 connections x 16 in flight), alternating, ROUNDS rounds. On a 2-core
# machine the load generator shares the cores with the servers: see BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DUR=${DURATION:-4}
cargo build --release -q
(cd benches/kit && cargo build --release -q --locked)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run() { # run NPROC: prints msgs/s
    local n=$1 i
    pids=()
    for i in $(seq "$n"); do
        taskset -c $((i % 2)) target/release/wsloop --reuse-port --listen "127.0.0.1:$port" --log-level warn </dev/null >/dev/null 2>&1 &
        pids+=($!)
    done
    sleep 0.3
    benches/kit/target/release/loadgen echo --url "ws://127.0.0.1:$port/ws" --connections 64 --inflight 16 --size 32 \
        --duration "${DUR}s" --warmup 1s 2>/dev/null | sed -n 's/.*msgs_per_s=\([0-9.]*\).*/\1/p' | head -1
    cleanup
    wait 2>/dev/null || true
}
one=(); two=()
for _ in $(seq "$ROUNDS"); do one+=("$(run 1)"); two+=("$(run 2)"); done
python3 - "${one[*]}" "${two[*]}" <<'PY'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]; b = [float(x) for x in sys.argv[2].split()]
print(f"1 process: {statistics.median(a):,.0f} msgs/s {a}; 2 processes: {statistics.median(b):,.0f} msgs/s {b}; ratio {statistics.median(b)/statistics.median(a):.2f}")
PY
