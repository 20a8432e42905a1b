#!/usr/bin/env bash
# Compression benchmark: wsloop's permessage-deflate against Node `ws`'s, with one
# client for all (Node `ws`, perMessageDeflate on), on this machine:
#
#   benches/compress/run.sh
#
# 1. Echo: for ROUNDS rounds, each size (JSON of ~1 KiB and ~16 KiB, generator in
#    common.mjs) and each server in turn, on a freshly started server pinned to
#    SERVER_CPU (client on CLIENT_CPU): CONNS connections echo COUNT_<size> messages
#    in all, one in flight per connection (bounded by LIMIT seconds). Per run:
#    messages/s; the server's CPU per message, utime+stime of all its threads from
#    /proc/PID/stat (Node's zlib work runs on libuv's threads) over the run; bytes
#    on the wire per message each way, from the client's sockets. Medians of the
#    rounds in the table.
#    Servers: wsloop-off (--compression off: the plain baseline), wsloop-shared
#    (--compression shared), wsloop-w12 (--compression window=12), ws-nct (Node ws,
#    no context takeover either way, like shared), ws-w12 (Node ws, context takeover
#    with 12-bit windows, like window=12). Level 6 everywhere (both defaults).
# 2. Idle memory: for each server and each N in IDLE_NS, VmRSS and Pss of a fresh
#    server before and after N connections that each negotiated compression (offer:
#    "permessage-deflate; client_max_window_bits") and echoed one compressed 4 KiB
#    JSON message (idle.mjs, raw sockets, no zlib on the client side).
#
# Environment [defaults]: ROUNDS [3], CONNS [8], COUNT_1K [40000], COUNT_16K [6000],
# LIMIT [60], COMPRESS_SERVERS ["wsloop-off wsloop-shared wsloop-w12 ws-nct ws-w12"],
# IDLE_NS ["2000 4000"], IDLE_SERVERS [same as COMPRESS_SERVERS], SKIP_ECHO, SKIP_IDLE, OUT,
# and lib.sh's SERVER_CPU, CLIENT_CPU, PRIO. Needs node and npm (ws is installed from
# tests/node's lock file with npm ci when missing). About 8 minutes with the defaults.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
HERE=$BENCH_DIR/compress
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-8}
COUNT_1K=${COUNT_1K:-40000}
COUNT_16K=${COUNT_16K:-6000}
LIMIT=${LIMIT:-60}
CSERVERS=${COMPRESS_SERVERS:-"wsloop-off wsloop-shared wsloop-w12 ws-nct ws-w12"}
IDLE_NS=${IDLE_NS:-"2000 4000"}
IDLE_SERVERS=${IDLE_SERVERS:-$CSERVERS}
OUT=${OUT:-$BENCH_DIR/results/compress-$(date +%Y%m%d-%H%M%S)}
NODE_PORT=$((BASE_PORT + 7))
mkdir -p "$OUT"
SUMMARY=$OUT/compress.txt
: >"$SUMMARY"
CLIENT_PID=
cleanup() {
    [ -n "$CLIENT_PID" ] && kill "$CLIENT_PID" 2>/dev/null || true
    stop_server
}
trap cleanup EXIT

command -v node >/dev/null && command -v npm >/dev/null || { log "node and npm are needed"; exit 1; }
if [ ! -f "$ROOT/tests/node/node_modules/ws/package.json" ]; then
    log "npm ci --prefix tests/node (ws)"
    npm ci --no-audit --no-fund --prefix "$ROOT/tests/node" >&2
fi
log "building wsloop (release)"
(cd "$ROOT" && cargo build --release 2>&1 | tail -n 3) >&2
TCK=$(getconf CLK_TCK)

# start NAME LOGFILE: a fresh server; sets SERVER_PID, URL and HOSTPORT.
start() {
    local name=$1 logf=$2 i
    case $name in
    wsloop-off) start_server wsloop "$logf" --compression off ;;
    wsloop-shared) start_server wsloop "$logf" --compression shared ;;
    wsloop-w12) start_server wsloop "$logf" --compression window=12 ;;
    ws-nct | ws-w12)
        "${RUNPRE[@]}" taskset -c "$SERVER_CPU" node "$HERE/node-echo.mjs" "$NODE_PORT" "${name#ws-}" >"$logf" 2>&1 &
        SERVER_PID=$!
        URL=ws://127.0.0.1:$NODE_PORT/ws
        for i in $(seq 1 100); do
            grep -q '^listening' "$logf" && break
            kill -0 "$SERVER_PID" 2>/dev/null || { log "$name exited: $(tail -n 3 "$logf")"; return 1; }
            sleep 0.1
        done
        ;;
    *) log "unknown server $name"; return 1 ;;
    esac
    HOSTPORT=${URL#ws://}
    HOSTPORT=${HOSTPORT%%/*}
}

{
    echo "# date: $(date -Is); nproc: $(nproc); kernel: $(uname -r); clk_tck: $TCK; prio: $PRIO; node $(node --version); ws $(node -e "console.log(require('$ROOT/tests/node/node_modules/ws/package.json').version)")"
    echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg); machine busy before: $(warn_if_busy)% of one core"
    echo "# rounds=$ROUNDS conns=$CONNS count_1k=$COUNT_1K count_16k=$COUNT_16K"
    describe_wsloop
} >>"$SUMMARY"

if [ -z "${SKIP_ECHO:-}" ]; then
    for round in $(seq 1 "$ROUNDS"); do
        for size in 1k 16k; do
            if [ "$size" = 1k ]; then count=$COUNT_1K; else count=$COUNT_16K; fi
            for name in $CSERVERS; do
                tag=$name.$size.r$round
                start "$name" "$OUT/$tag.server.log" || { echo "echo server=$name size=$size round=$round error=start" >>"$SUMMARY"; continue; }
                sleep 0.5
                t0=$(proc_ticks "$SERVER_PID")
                r=$("${RUNPRE[@]}" taskset -c "$CLIENT_CPU" node "$HERE/client.mjs" "$URL" "$size" "$count" "$CONNS" "$LIMIT" 2>"$OUT/$tag.client.err" | grep '^RESULT' || true)
                t1=$(proc_ticks "$SERVER_PID")
                stop_server
                msgs=$(kv "$r" msgs)
                if [ -z "$msgs" ] || [ "$msgs" = 0 ]; then
                    echo "echo server=$name size=$size round=$round error=client $(tail -n 2 "$OUT/$tag.client.err" | tr '\n' ' ')" | tee -a "$SUMMARY" >&2
                    continue
                fi
                secs=$(kv "$r" secs)
                line=$(awk -v m="$msgs" -v s="$secs" -v t=$((t1 - t0)) -v hz="$TCK" -v wi="$(kv "$r" wire_in)" -v wo="$(kv "$r" wire_out)" -v p="$(kv "$r" plain)" \
                    'BEGIN { printf "msgs=%d secs=%s msgs_per_s=%.0f server_cpu_ticks=%d cpu_us_per_msg=%.1f wire_in_per_msg=%.0f wire_out_per_msg=%.0f plain_per_msg=%.0f", m, s, m / s, t, t * 1e6 / hz / m, wi / m, wo / m, p / m }')
                echo "echo server=$name size=$size round=$round $line echo_ok=$(kv "$r" echo_ok) extensions=$(kv "$r" extensions)" | tee -a "$SUMMARY" >&2
            done
        done
    done
fi

if [ -z "${SKIP_IDLE:-}" ]; then
    for n in $IDLE_NS; do
        for name in $IDLE_SERVERS; do
            tag=$name.idle$n
            start "$name" "$OUT/$tag.server.log" || continue
            sleep 1
            rss0=$(rss_kb "$SERVER_PID")
            pss0=$(pss_kb "$SERVER_PID")
            o=$OUT/$tag.client.out
            "${RUNPRE[@]}" taskset -c "$CLIENT_CPU" node "$HERE/idle.mjs" "$HOSTPORT" "$n" 300 >"$o" 2>"$OUT/$tag.client.err" &
            CLIENT_PID=$!
            READY_PIDS=("$CLIENT_PID")
            line="idle server=$name n=$n"
            if wait_ready "$o"; then
                sleep 2
                rss1=$(rss_kb "$SERVER_PID")
                pss1=$(pss_kb "$SERVER_PID")
                ready=$(grep '^READY' "$o" | tail -n 1)
                line="$line rss_before_kb=$rss0 rss_after_kb=$rss1 pss_before_kb=$pss0 pss_after_kb=$pss1"
                line="$line rss_bytes_per_conn=$(((rss1 - rss0) * 1024 / n)) pss_bytes_per_conn=$(((pss1 - pss0) * 1024 / n)) ${ready#READY }"
            else
                line="$line error=not_ready"
            fi
            kill "$CLIENT_PID" 2>/dev/null || true
            wait "$CLIENT_PID" 2>/dev/null || true
            CLIENT_PID=
            stop_server
            echo "$line" | tee -a "$SUMMARY" >&2
        done
    done
fi
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$SUMMARY"
python3 "$HERE/report.py" "$SUMMARY" | tee "$OUT/table.md"
