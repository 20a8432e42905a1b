#!/usr/bin/env bash
# One command for the wsloop benchmark suite:
#
#   benches/run.sh
#
# Builds everything (release), then runs each scenario against each server,
# servers pinned to core $SERVER_CPU (1) and the load generator to core
# $CLIENT_CPU (0), alternating the servers A B C D A B C D ... for $ROUNDS
# rounds, each run on a freshly started server, and prints a table of medians
# and ratios to rawecho (the raw TCP echo limit) and to tokio-tungstenite.
#
# Environment (defaults in brackets):
#   ROUNDS [3]          rounds per scenario (each round runs every server once)
#   DURATION [5]        measured seconds per echo/connect run
#   WARMUP [1]          warm-up seconds before each measured window
#   SCENARIOS ["small small-text 16k 64k large connect idle"]
#   SERVERS ["wsloop rawecho tokio gorilla uws"] (uws: optional, skipped
#                       with a message unless built; see BENCHMARKS.md)
#   BASE []             a commit: also build wsloop at that commit and run it
#                       as "wsloop-base" right next to "wsloop" in every round
#                       (same args, same pinning; the pair swaps order every
#                       round so neither always runs first); the table then
#                       adds current/base ratios of the medians, flagged
#                       within or outside +-5 %
#   IDLE_CONNS [10000]  idle connections in the "idle" scenario
#   WSLOOP_ARGS []      extra wsloop arguments
#   PRIO [none]         "rt": run servers and loadgen under SCHED_FIFO (chrt),
#                       for a machine shared with other CPU-heavy jobs
#   OUT [benches/results/run-DATE]  where raw results and logs go
# Scenarios (echo loads in echo_args below): small = 32-byte binary messages,
# 64 connections x 16 in flight; small-text = the same as text frames;
# 16k / 64k = 16 KiB / 64 KiB binary; large = 1 MiB binary, 8 connections x 2
# in flight; connect = 64 sessions at a time (connect, upgrade, one 32-byte
# echo, Close 1000); idle = IDLE_CONNS idle connections after one 4 KiB echo
# each (RSS/Pss growth per connection).
# With defaults the whole run takes about 10-12 minutes (+ a third with BASE).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
SCENARIOS=${SCENARIOS:-"small small-text 16k 64k large connect idle"}
IDLE_CONNS=${IDLE_CONNS:-10000}
for sc in $SCENARIOS; do
    case $sc in
    small | small-text | 16k | 64k | large | connect | idle) ;;
    *) log "unknown scenario $sc (known: small small-text 16k 64k large connect idle)"; exit 2 ;;
    esac
done
OUT=${OUT:-$BENCH_DIR/results/run-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RESULTS=$OUT/results.txt
: >"$RESULTS"

trap 'stop_server' EXIT
build_all
[ -n "$AVAILABLE" ] || { log "no server available"; exit 1; }
log "servers: $AVAILABLE; scenarios: $SCENARIOS; rounds: $ROUNDS; duration: ${DURATION}s (+${WARMUP}s warm-up)"
log "results in $OUT"
BUSY_BEFORE=$(warn_if_busy)

{
    echo "# date: $(date -Is)"
    echo "# nproc: $(nproc); kernel: $(uname -r)"
    echo "# cpu: $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }')"
    echo "# rounds=$ROUNDS duration=$DURATION warmup=$WARMUP idle_conns=$IDLE_CONNS servers=$AVAILABLE prio=$PRIO"
    echo "# machine busy before the run: ${BUSY_BEFORE}% of one core"
    describe_wsloop
} >>"$RESULTS"

# echo_args SCENARIO: loadgen echo options of an echo scenario (empty if not one)
echo_args() {
    case $1 in
    small) echo "--connections 64 --inflight 16 --size 32" ;;
    small-text) echo "--connections 64 --inflight 16 --size 32 --text" ;;
    # 16k and 64k: a few connections with 4 messages each in flight, so the
    # server never waits for input and every read and write moves tens of
    # KiB (loadgen sends up to 256 KiB of these frames per writev). Chosen
    # from a sweep under PRIO=rt (2 rounds x 3 s per setting, machine shared):
    # at 16 KiB, 8-64 connections x 2-8 in flight gave the same msgs/s within
    # noise, with wsloop's and tokio-tungstenite's servers at the 95 % RT
    # ceiling and loadgen at 89-92 %; 16 x 4 (p99 ~0.35 ms; 8 x 4: ~0.2 ms,
    # 16 x 8: ~0.7 ms) keeps more connections for the server to switch
    # between at the same queue depth per connection as 64k. At
    # 64 KiB, 8 x 4 leaves loadgen at ~90 % against the server's 95 %, while
    # 8 x 2 and 16 x 2 put both at 94-95 % (co-saturated). Over loopback the
    # sender pays the receiver's softirq work, so client and server cost about
    # the same per byte; against rawecho, which does less per byte than
    # loadgen, the client is the limit at every setting, as in small and large.
    16k) echo "--connections 16 --inflight 4 --size 16384" ;;
    64k) echo "--connections 8 --inflight 4 --size 65536" ;;
    large) echo "--connections 8 --inflight 2 --size 1048576" ;;
    esac
}

# round_servers ROUND: the order of servers in that round; wsloop and
# wsloop-base swap places every other round, so that neither is always the
# one that runs right after another server's load (ABBA cancels a linear drift
# of the machine between the two)
round_servers() {
    local round=$1 out="" s
    if [ $((round % 2)) = 0 ] && [[ " $AVAILABLE " == *" wsloop-base "* ]]; then
        for s in $AVAILABLE; do
            case $s in
            wsloop) out="$out wsloop-base" ;;
            wsloop-base) out="$out wsloop" ;;
            *) out="$out $s" ;;
            esac
        done
        echo "${out# }"
    else
        echo "$AVAILABLE"
    fi
}

# a fresh set of 8 source addresses per connect run, so TIME_WAIT sockets left
# by earlier runs never collide with the next run's 4-tuples
SRC_OCTET=$((20 + $$ % 200))
RUN_NO=0
# sets SOURCES; not called in a subshell, so the run counter really advances
fresh_sources() {
    RUN_NO=$((RUN_NO + 1))
    local a=$SRC_OCTET b=$((RUN_NO % 250)) s="" i
    for i in 1 2 3 4 5 6 7 8; do s="$s,127.$a.$b.$i"; done
    SOURCES=${s#,}
}

run_one() { # scenario server round
    local sc=$1 name=$2 round=$3
    local tag=$sc.$name.r$round
    if ! start_server "$name" "$OUT/$tag.server.log"; then
        echo "$sc $name $round RESULT error=server_start_failed" >>"$RESULTS"
        return
    fi
    local lg=("${RUNPRE[@]}" taskset -c "$CLIENT_CPU" "$LOADGEN")
    local line rc=0 ea
    ea=$(echo_args "$sc")
    case $sc in
    small | small-text | 16k | 64k | large)
        # shellcheck disable=SC2086 # ea is a list of options
        "${lg[@]}" echo --url "$URL" $ea \
            --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" \
            >"$OUT/$tag.out" 2>"$OUT/$tag.err" || rc=$?
        ;;
    connect)
        fresh_sources
        "${lg[@]}" connect --url "$URL" --concurrency 64 --sources "$SOURCES" \
            --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER_PID" \
            >"$OUT/$tag.out" 2>"$OUT/$tag.err" || rc=$?
        ;;
    idle)
        sleep 0.5
        local rss0 pss0 rss1 pss1
        rss0=$(rss_kb "$SERVER_PID")
        pss0=$(pss_kb "$SERVER_PID")
        "${lg[@]}" idle --url "$URL" --connections "$IDLE_CONNS" --echo-first 4096 --hold 6 \
            --sources 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 \
            >"$OUT/$tag.out" 2>"$OUT/$tag.err" &
        local lpid=$!
        READY_PIDS=("$lpid")
        if wait_ready "$OUT/$tag.out"; then
            sleep 1
            rss1=$(rss_kb "$SERVER_PID")
            pss1=$(pss_kb "$SERVER_PID")
        fi
        wait $lpid || rc=$?
        line=$(grep '^RESULT' "$OUT/$tag.out" | tail -n 1 || true)
        local est
        est=$(kv "$line" established)
        line="$line rss_before_kb=$rss0 rss_after_kb=${rss1:-na} pss_before_kb=$pss0 pss_after_kb=${pss1:-na}"
        if [ -n "${rss1:-}" ] && [ "${est:-0}" -gt 0 ]; then
            line="$line rss_bytes_per_conn=$(((rss1 - rss0) * 1024 / est)) pss_bytes_per_conn=$(((pss1 - pss0) * 1024 / est))"
        fi
        ;;
    esac
    [ -n "${line:-}" ] || line=$(grep '^RESULT' "$OUT/$tag.out" | tail -n 1 || true)
    [ -n "$line" ] || line="RESULT error=no_result"
    if [ $rc != 0 ]; then line="$line exit=$rc"; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then line="$line server_died=1"; fi
    echo "$sc $name $round $line" >>"$RESULTS"
    stop_server
    log "$sc $name r$round: $(tr ' ' '\n' <<<"$line" | grep -E '^(msgs_per_s|mib_per_s|sessions_per_s|p99_us|client_cpu_pct|server_cpu_pct|established|rss_bytes_per_conn|failed|exit|server_died)=' | tr '\n' ' ')"
}

for sc in $SCENARIOS; do
    for round in $(seq 1 "$ROUNDS"); do
        for name in $(round_servers "$round"); do
            run_one "$sc" "$name" "$round"
        done
    done
done

python3 "$BENCH_DIR/report.py" "$RESULTS" | tee "$OUT/table.md"
