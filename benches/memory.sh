#!/usr/bin/env bash
# Memory and idle-CPU benchmark for wsloop and the comparison servers:
#
#   benches/memory.sh
#
# For each server (pinned to core $SERVER_CPU, load generators to $CLIENT_CPU):
#  1. wake-ups of an idle server with no connections: voluntary context
#     switches (all threads, /proc/PID/task/*/status) and CPU ticks over
#     CTX_SECS seconds;
#  2. for each N in NS, every server in turn (all servers at one N before
#     the next N), on a freshly started server: VmRSS (/proc/PID/status)
#     and Pss (/proc/PID/smaps_rollup) before and after N idle connections,
#     each of which first echoed one 4 KiB binary message; bytes per
#     connection = (after - before) / N. N above PER_PROC connections is
#     spread over several loadgen processes (20,000 open files per process),
#     each bound to its own source addresses 127.0.K.1, 127.0.K.2;
#  3. at the largest N: the server's CPU over CPU_WINDOW seconds of holding
#     the idle connections (utime+stime ticks from /proc/PID/stat, as percent
#     of one core), while the clients answer pings with pongs. wsloop (and
#     wsloop-base) run with --ping-interval 30s --idle-timeout 60s.
#
# Environment (defaults in brackets): SERVERS ["wsloop rawecho tokio gorilla uws"]
# (uws optional: skipped unless built, see BENCHMARKS.md),
# NS ["1000 10000 19000"], PER_PROC [9500], CTX_SECS [10], CPU_WINDOW [60],
# WSLOOP_ARGS ["--ping-interval 30s --idle-timeout 60s"], PRIO [none], OUT,
# BASE [] (a commit: also measure wsloop built at that commit as "wsloop-base",
# right after wsloop at every N, and add a current/base table; see run.sh).
# Takes about 2 minutes per server with the defaults.
set -euo pipefail
WSLOOP_ARGS=${WSLOOP_ARGS:-"--ping-interval 30s --idle-timeout 60s"}
source "$(dirname "$0")/lib.sh"

NS=${NS:-"1000 10000 19000"}
PER_PROC=${PER_PROC:-9500}
CTX_SECS=${CTX_SECS:-10}
CPU_WINDOW=${CPU_WINDOW:-60}
OUT=${OUT:-$BENCH_DIR/results/memory-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
SUMMARY=$OUT/memory.txt
: >"$SUMMARY"
LG_PIDS=()
cleanup() {
    local p
    for p in "${LG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    stop_server
}
trap cleanup EXIT

build_all
[ -n "$AVAILABLE" ] || { log "no server available"; exit 1; }
MAXN=0
for n in $NS; do [ "$n" -gt "$MAXN" ] && MAXN=$n; done
TCK=$(getconf CLK_TCK)
log "servers: $AVAILABLE; N: $NS; idle CPU window ${CPU_WINDOW}s at N=$MAXN; results in $OUT"
BUSY_BEFORE=$(warn_if_busy)
{
    echo "# date: $(date -Is); nproc: $(nproc); kernel: $(uname -r); clk_tck: $TCK; prio: $PRIO; machine busy before: ${BUSY_BEFORE}% of one core"
    echo "# wsloop args: $WSLOOP_ARGS"
    describe_wsloop
} >>"$SUMMARY"

# ---- 1. every server idle with no connections: does it wake up?
for name in $AVAILABLE; do
    if start_server "$name" "$OUT/$name.ctx.server.log"; then
        sleep 1
        c0=$(vctx "$SERVER_PID")
        t0=$(proc_ticks "$SERVER_PID")
        sleep "$CTX_SECS"
        c1=$(vctx "$SERVER_PID")
        t1=$(proc_ticks "$SERVER_PID")
        echo "$name ctx secs=$CTX_SECS voluntary_ctxt_switches=$((c1 - c0)) cpu_ticks=$((t1 - t0)) threads=$(nthreads "$SERVER_PID")" | tee -a "$SUMMARY" >&2
        stop_server
    fi
done

# ---- 2./3. N idle connections, every server at one N before the next N, so
# that wsloop and wsloop-base (BASE=...) run back to back at each N
for n in $NS; do
    for name in $AVAILABLE; do
        tag=$name.n$n
        start_server "$name" "$OUT/$tag.server.log" || { echo "$name mem n=$n error=server_start_failed" >>"$SUMMARY"; continue; }
        sleep 1
        rss0=$(rss_kb "$SERVER_PID")
        pss0=$(pss_kb "$SERVER_PID")
        procs=$(((n + PER_PROC - 1) / PER_PROC))
        if [ "$n" = "$MAXN" ]; then hold=$((CPU_WINDOW + 20)); else hold=6; fi
        LG_PIDS=()
        outs=()
        left=$n
        for i in $(seq 1 "$procs"); do
            share=$((left / (procs - i + 1)))
            left=$((left - share))
            o=$OUT/$tag.lg$i.out
            outs+=("$o")
            "${RUNPRE[@]}" taskset -c "$CLIENT_CPU" "$LOADGEN" idle --url "$URL" --connections "$share" --echo-first 4096 \
                --hold "$hold" --sources "127.0.$((10 + i)).1,127.0.$((10 + i)).2" --quiet \
                >"$o" 2>"$OUT/$tag.lg$i.err" &
            LG_PIDS+=($!)
        done
        line="$name mem n=$n loadgen_procs=$procs"
        READY_PIDS=("${LG_PIDS[@]}")
        if wait_ready "${outs[@]}"; then
            sleep 1
            rss1=$(rss_kb "$SERVER_PID")
            pss1=$(pss_kb "$SERVER_PID")
            line="$line rss_before_kb=$rss0 rss_after_kb=$rss1 pss_before_kb=$pss0 pss_after_kb=$pss1"
            line="$line rss_bytes_per_conn=$(((rss1 - rss0) * 1024 / n)) pss_bytes_per_conn=$(((pss1 - pss0) * 1024 / n))"
            if [ "$n" = "$MAXN" ]; then
                t0=$(proc_ticks "$SERVER_PID")
                c0=$(vctx "$SERVER_PID")
                sleep "$CPU_WINDOW"
                t1=$(proc_ticks "$SERVER_PID")
                c1=$(vctx "$SERVER_PID")
                pct=$(awk -v t=$((t1 - t0)) -v hz="$TCK" -v s="$CPU_WINDOW" 'BEGIN { printf "%.2f", 100 * t / hz / s }')
                line="$line idle_cpu_window_s=$CPU_WINDOW idle_cpu_ticks=$((t1 - t0)) idle_cpu_pct=$pct idle_vctx=$((c1 - c0)) rss_end_kb=$(rss_kb "$SERVER_PID")"
            fi
        else
            line="$line error=not_ready"
        fi
        est=0 closed=0 failed=0 pings=0
        for i in "${!LG_PIDS[@]}"; do
            wait "${LG_PIDS[$i]}" || true
            r=$(grep '^RESULT' "${outs[$i]}" | tail -n 1 || true)
            v=$(kv "$r" established); est=$((est + ${v:-0}))
            v=$(kv "$r" closed_by_server); closed=$((closed + ${v:-0}))
            v=$(kv "$r" failed); failed=$((failed + ${v:-0}))
            v=$(kv "$r" pings); pings=$((pings + ${v:-0}))
        done
        LG_PIDS=()
        line="$line established=$est failed=$failed closed_by_server=$closed pings=$pings"
        kill -0 "$SERVER_PID" 2>/dev/null || line="$line server_died=1"
        echo "$line" | tee -a "$SUMMARY" >&2
        stop_server
    done
done

python3 "$BENCH_DIR/report_memory.py" "$SUMMARY" | tee "$OUT/table.md"
