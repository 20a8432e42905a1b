#!/usr/bin/env bash
# Syscalls per echoed message and a CPU profile of a server under the small
# (32 B, 64 x 16) and large (1 MiB, 8 x 2) echo loads:
#
#   benches/profile.sh                 # wsloop (built with --profile profiling)
#   SERVERS="wsloop tokio" benches/profile.sh
#
# For each server and load: a SECS-long loadgen run; after 2 s,
# `perf record -e cpu-clock` (software sampling; hardware counters are not
# available on every VM) for 3 s, with DWARF call graphs when CALLGRAPH=dwarf,
# then `perf stat -e 'syscalls:sys_enter_*'` on the server for 2 s.
# Needs Debian's linux-perf. PRIO defaults to rt here (see BENCHMARKS.md).
set -euo pipefail
PRIO=${PRIO:-rt}
SERVERS=${SERVERS:-wsloop}
source "$(dirname "$0")/lib.sh"
CALLGRAPH=${CALLGRAPH:-fp}
SECS=${SECS:-9}
OUT=${OUT:-$BENCH_DIR/results/profile-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
trap 'stop_server' EXIT
command -v perf >/dev/null || { log "perf not found (apt-get install linux-perf)"; exit 1; }

build_all
if [[ " $AVAILABLE " == *" wsloop "* ]]; then
    log "building wsloop with --profile profiling (release code with symbols)"
    (cd "$ROOT" && cargo build --profile profiling 2>&1 | tail -n 1) >&2
    WSLOOP_BIN=$ROOT/target/profiling/wsloop
fi
PERF_PRE=()
[ "$PRIO" = rt ] && PERF_PRE=(chrt -f 20)
if [ "$CALLGRAPH" = dwarf ]; then CG=(--call-graph dwarf,16384); else CG=(-g); fi

for name in $AVAILABLE; do
    for load in small large; do
        tag=$name.$load
        start_server "$name" "$OUT/$tag.server.log" || continue
        if [ $load = small ]; then la=(--connections 64 --inflight 16 --size 32); else la=(--connections 8 --inflight 2 --size 1048576); fi
        "${RUNPRE[@]}" taskset -c "$CLIENT_CPU" "$LOADGEN" echo --url "$URL" "${la[@]}" --duration "$SECS" --warmup 0.5 \
            --server-pid "$SERVER_PID" --quiet >"$OUT/$tag.out" 2>"$OUT/$tag.err" &
        lpid=$!
        sleep 2
        # record before stat: here a perf record started right after a perf
        # stat on the syscall tracepoints got no samples
        "${PERF_PRE[@]}" perf record -F 2000 -e cpu-clock "${CG[@]}" -p "$SERVER_PID" -o "$OUT/$tag.perf.data" -- sleep 3 2>/dev/null
        # the load generator's rate over its whole window is the divisor
        "${PERF_PRE[@]}" perf stat -e 'syscalls:sys_enter_*' -p "$SERVER_PID" -o "$OUT/$tag.syscalls.txt" -- sleep 2
        wait $lpid || true
        stop_server
        rate=$(kv "$(grep '^RESULT' "$OUT/$tag.out")" msgs_per_s)
        secs=$(awk '/seconds time elapsed/ { print $1 }' "$OUT/$tag.syscalls.txt")
        {
            echo "## $name $load: $rate msgs/s (loadgen window), perf stat over ${secs}s"
            awk -v r="$rate" -v s="$secs" '/syscalls:sys_enter_/ { gsub(/,/, "", $1); if ($1 > 0) printf "%-40s %10d  %.4f per msg\n", $2, $1, $1 / (r * s) }' "$OUT/$tag.syscalls.txt" | sort -k2 -nr || true
            echo "## top of the profile (self time)"
            perf report -i "$OUT/$tag.perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -n 25 || true
            echo
        } | tee "$OUT/$tag.summary.txt"
    done
done
log "perf data and summaries in $OUT"
