#!/usr/bin/env bash
# Real (not simulated) costs of one server under wssbench, ws:// and wss:// side by
# side: perf stat's software counters (the server's CPU time, page faults, the
# syscalls that matter) over a window of the run, divided by the messages echoed in
# that window (messages_in_total before and after). Timing moves ±20 % on this
# machine; the counts per message (syscalls, faults) are the repeatable part.
#
#   benches/tls_perfstat.sh [BIN]
# Environment: SIZE [1048576], INFLIGHT [1], SECS [6, at least 3], ROUNDS [1],
# SCHEMES [ws wss], PRIO [none] (rt: SCHED_FIFO, as in benches/lib.sh). glibc's
# MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ reach the server: setting both
# (e.g. 33554432 and 268435456) shows what heap trimming costs (page faults, brk).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SERVER=${1:-$ROOT/target/release/wsloop}
SIZE=${SIZE:-1048576}
INFLIGHT=${INFLIGHT:-1}
SECS=${SECS:-6}
ROUNDS=${ROUNDS:-1}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
make_cert "$work"
events=task-clock,page-faults,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_mmap,syscalls:sys_enter_munmap,syscalls:sys_enter_brk,syscalls:sys_enter_madvise
port=$((BASE_PORT + 80))
for round in $(seq "$ROUNDS"); do
for scheme in ${SCHEMES:-ws wss}; do
    port=$((port + 1)); mport=$((port + 100))
    tls=(); [ "$scheme" = wss ] && tls=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
    "${RUNPRE[@]}" taskset -c "$SERVER_CPU" "$SERVER" --listen "127.0.0.1:$port" \
        --metrics-listen "127.0.0.1:$mport" "${tls[@]}" >/dev/null 2>"$work/server.log" &
    sp=$!; pids+=("$sp")
    for _ in $(seq 100); do grep -q "listening on" "$work/server.log" && break; sleep 0.05; done
    "${RUNPRE[@]}" taskset -c "$CLIENT_CPU" "$BIN/wssbench" "$scheme://127.0.0.1:$port/ws" \
        --ca "$work/cert.pem" --size "$SIZE" --inflight "$INFLIGHT" --seconds "$SECS" >"$work/client.out" &
    cp=$!
    sleep 1
    m0=$(scrape_metric "$mport" wsloop_messages_in_total)
    perf stat -x, -e "$events" -p "$sp" -- sleep $((SECS - 2)) 2>"$work/perf.csv"
    m1=$(scrape_metric "$mport" wsloop_messages_in_total)
    wait "$cp" || true
    kill "$sp"; wait "$sp" 2>/dev/null || true
    python3 - "$scheme" "$((m1 - m0))" "$work/perf.csv" "$(sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p' "$work/client.out")" <<'PY'
import sys
scheme, msgs, path, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = [f"{scheme}: msgs/s {rate} (client); per message over {msgs}:"]
for line in open(path):
    f = line.strip().split(",")
    if len(f) < 3 or not f[0].replace(".", "").isdigit():
        continue
    v, name = float(f[0]) / max(msgs, 1), f[2].replace("syscalls:sys_enter_", "")
    out.append(f"server_cpu_us={v * 1000:.0f}" if name == "task-clock" else f"{name}={v:.1f}")
print(" ".join(out))
PY
done
done
