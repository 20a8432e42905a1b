#!/usr/bin/env bash
# Fan-out benchmark (issue 11, topics):
#
#   benches/fanout/run.sh
#
# For each server in turn (server on core $SERVER_CPU, every client process on
# core $CLIENT_CPU), ROUNDS rounds, each on a freshly started server:
#  1. SUBS subscribers to one topic, spread over SUB_PROCS `fanout sub`
#     processes, each bound to its own source address (fresh per run, so
#     TIME_WAIT sockets of earlier runs never collide);
#  2. one publisher (`fanout pub`) sends 64-byte text messages carrying their
#     send time (CLOCK_MONOTONIC) at each rate of RATES for STEP seconds,
#     waits for the deliveries, and prints per step: deliveries/s, % delivered,
#     server CPU us per delivery (utime+stime of the server from
#     /proc/PID/stat over the step and its drain), p50/p99 publish-to-receive
#     latency. A step fails with p99 > 500 ms or < 90 % delivered; the run
#     stops after two failed steps in a row. Sustained rate: the last rate
#     before the first failed step; also reported, the highest rate passed.
# Servers: wsloop (examples/fanout.rs: topics, publish once), raw (the
# physical limit: `fanout raw`, the same pre-built frame written to every
# socket, one write each per message), raw-cork (`fanout raw --cork`: the
# frames of all messages read in one loop turn joined, one write per socket
# per turn: the limit for a server that corks, as wsloop does), raw-cork-iov
# (not run by default: as raw-cork, but one writev with each frame's header
# and payload as iovecs of their own, the layout of wsloop's queue), node (Node `ws`, clients.forEach(send), pinned in
# benches/fanout/node, installed with `npm ci`), tokio (tokio-tungstenite +
# tokio::sync::broadcast, current_thread), gorilla (benches/fanout/hub.go: the hub
# pattern of gorilla's chat example, GOMAXPROCS=1; Go from apt-get when missing).
# A server whose toolchain is missing is skipped with a message.
# Then (MEMORY=1) idle memory per subscription: wsloop's fanout server with
# MEM_N idle connections (benches/memory.sh's method: VmRSS and Pss before and
# after, loadgen idle processes of at most 9,500 connections) each subscribed
# to 0, 1 and 10 topics (the same topics for every connection).
#
# Then (PROFILE=1, needs perf) where the server's time goes: PROFILE_SERVERS
# (wsloop, built with --profile profiling, and raw-cork) at PROFILE_RATE msgs/s for
# PROFILE_SECS: `perf record -e cpu-clock -g` on the server for 3 s, then
# `perf stat` of its task-clock and write/writev/sendto/epoll syscalls for 3 s.
# Environment (defaults in brackets): SERVERS ["wsloop raw raw-cork node tokio gorilla"],
# ROUNDS [3], SUBS [10000], SUB_PROCS [4], RATES [2,5,10,20,50,100,200,400,800,1600],
# STEP [5] (seconds per rate), MEMORY [1], MEM_N [19000], MEM_TOPICS ["0 1 10"],
# PRIO [none] (rt: SCHED_FIFO, see lib.sh), OUT [benches/results/fanout-DATE],
# PROFILE [0], PROFILE_SERVERS ["wsloop raw-cork"], PROFILE_RATE [200],
# PROFILE_SECS [12].
# Takes about 11 minutes with the defaults (3 rounds of 5 servers, then memory).
set -euo pipefail
SERVERS=${SERVERS:-"wsloop raw raw-cork node tokio gorilla"}
PROFILE_SERVERS=${PROFILE_SERVERS:-"wsloop raw-cork"}
source "$(dirname "$0")/../lib.sh"

FAN_DIR=$BENCH_DIR/fanout
FANOUT=$BIN/fanout
FAN_EXAMPLE=$ROOT/target/release/examples/fanout
ROUNDS=${ROUNDS:-3}
SUBS=${SUBS:-10000}
SUB_PROCS=${SUB_PROCS:-4}
RATES=${RATES:-2,5,10,20,50,100,200,400,800,1600}
STEP=${STEP:-5}
MEMORY=${MEMORY:-1}
PROFILE=${PROFILE:-0}
PROFILE_RATE=${PROFILE_RATE:-200}
PROFILE_SECS=${PROFILE_SECS:-12}
# set by the profile pass: run_fan then runs perf on the server during the step
PERF_TAG=
MEM_N=${MEM_N:-19000}
MEM_TOPICS=${MEM_TOPICS:-"0 1 10"}
OUT=${OUT:-$BENCH_DIR/results/fanout-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RESULTS=$OUT/results.txt
: >"$RESULTS"

CLIENT_PIDS=()
cleanup() {
    local p
    for p in "${CLIENT_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    stop_server
}
trap cleanup EXIT

# ---- build what can be built; AVAILABLE is what will run
log "building benches/kit (release)"
(cd "$KIT" && cargo build --release --locked 2>&1 | tail -n 3) >&2 || { log "kit build failed"; exit 1; }
AVAILABLE=""
for s in $SERVERS; do
    case $s in
    wsloop)
        log "building wsloop's examples/fanout.rs (release)"
        if (cd "$ROOT" && cargo build --release --example fanout 2>&1 | tail -n 3) >&2 && [ -x "$FAN_EXAMPLE" ]; then
            AVAILABLE="$AVAILABLE wsloop"
        else
            log "SKIP wsloop: build of examples/fanout.rs failed"
        fi
        ;;
    raw | raw-cork | raw-cork-iov | tokio) AVAILABLE="$AVAILABLE $s" ;;
    node)
        if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
            log "SKIP node: node and npm are not installed"
        elif (cd "$FAN_DIR/node" && npm ci --silent --no-audit --no-fund) >&2; then
            AVAILABLE="$AVAILABLE node"
        else
            log "SKIP node: npm ci failed"
        fi
        ;;
    gorilla)
        # lib.sh's build_gorilla installs Go and gorilla/websocket with apt-get when missing.
        if build_gorilla && (cd "$FAN_DIR" && GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= \
            GOCACHE="$KIT/target/gocache" go build -o "$KIT/target/fanout-hub" hub.go) >&2; then
            AVAILABLE="$AVAILABLE gorilla"
        else
            log "SKIP gorilla: Go or gorilla/websocket missing, or hub.go did not build"
        fi
        ;;
    *) log "unknown server $s (known: wsloop raw raw-cork raw-cork-iov node tokio gorilla)" ;;
    esac
done
AVAILABLE=${AVAILABLE# }
[ -n "$AVAILABLE" ] || { log "no server available"; exit 1; }

fan_port() {
    case $1 in
    wsloop) echo $((BASE_PORT + 21)) ;;
    raw) echo $((BASE_PORT + 22)) ;;
    node) echo $((BASE_PORT + 23)) ;;
    tokio) echo $((BASE_PORT + 24)) ;;
    raw-cork) echo $((BASE_PORT + 25)) ;;
    raw-cork-iov) echo $((BASE_PORT + 26)) ;;
    gorilla) echo $((BASE_PORT + 27)) ;;
    esac
}

# start_fan NAME LOGFILE: sets SERVER_PID and ADDR (stop_server from lib.sh stops it)
start_fan() {
    local name=$1 logf=$2 pin=("${RUNPRE[@]}" taskset -c "$SERVER_CPU")
    ADDR=127.0.0.1:$(fan_port "$name")
    case $name in
    wsloop) "${pin[@]}" "$FAN_EXAMPLE" "$ADDR" 2>"$logf" >/dev/null & ;;
    raw) "${pin[@]}" "$FANOUT" raw --listen "$ADDR" 2>"$logf" >/dev/null & ;;
    raw-cork) "${pin[@]}" "$FANOUT" raw --cork --listen "$ADDR" 2>"$logf" >/dev/null & ;;
    raw-cork-iov) "${pin[@]}" "$FANOUT" raw --cork-iov --listen "$ADDR" 2>"$logf" >/dev/null & ;;
    node) "${pin[@]}" node "$FAN_DIR/node/server.js" "$ADDR" 2>"$logf" >/dev/null & ;;
    tokio) "${pin[@]}" "$BIN/tokio-fanout" --listen "$ADDR" 2>"$logf" >/dev/null & ;;
    gorilla) GOMAXPROCS=1 "${pin[@]}" "$KIT/target/fanout-hub" "$ADDR" 2>"$logf" >/dev/null & ;;
    esac
    SERVER_PID=$!
    local i
    for i in $(seq 1 100); do
        grep -q "listening on" "$logf" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "$name did not start (see $logf)"
    stop_server
    return 1
}

# fresh source addresses per run: 127.X.RUN.1..K
SRC_OCTET=$((40 + $$ % 150))
RUN_NO=0
fresh_sources() { # count -> SOURCES (one per line)
    RUN_NO=$((RUN_NO + 1))
    SOURCES=()
    local i
    for i in $(seq 1 "$1"); do SOURCES+=("127.$SRC_OCTET.$((RUN_NO % 250)).$i"); done
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

run_fan() { # name round
    local name=$1 round=$2 tag=$1.r$2 i share left=$SUBS
    if ! start_fan "$name" "$OUT/$tag.server.log"; then
        echo "$name $round RESULT error=server_start_failed" >>"$RESULTS"
        return
    fi
    fresh_sources "$SUB_PROCS"
    local outs=() stats=() hold=$((STEP * 40 + 120))
    CLIENT_PIDS=()
    for i in $(seq 1 "$SUB_PROCS"); do
        share=$((left / (SUB_PROCS - i + 1)))
        left=$((left - share))
        outs+=("$OUT/$tag.sub$i.out")
        stats+=("$OUT/$tag.sub$i.stats")
        "${RUNPRE[@]}" taskset -c "$CLIENT_CPU" "$FANOUT" sub --url "ws://$ADDR/ws?topic=bench" \
            --connections "$share" --sources "${SOURCES[$((i - 1))]}" --stats "${stats[$((i - 1))]}" \
            --hold "${hold}s" >"${outs[$((i - 1))]}" 2>"$OUT/$tag.sub$i.err" &
        CLIENT_PIDS+=($!)
    done
    READY_PIDS=("${CLIENT_PIDS[@]}")
    local est=0 r v
    if wait_ready "${outs[@]}"; then
        for i in "${!outs[@]}"; do
            r=$(grep '^READY' "${outs[$i]}" | tail -n 1)
            v=$(kv "$r" established)
            est=$((est + ${v:-0}))
        done
    fi
    log "$name r$round: $est of $SUBS subscribers connected; load average $(loadavg)"
    if [ "$est" -gt 0 ]; then
        sleep 1
        local files
        files=$(IFS=,; echo "${stats[*]}")
        local perf_pid=
        if [ -n "$PERF_TAG" ]; then
            # record before stat (see benches/profile.sh); chrt so that perf runs
            # at all beside SCHED_FIFO clients
            (
                sleep 3
                "${PERF_PRE[@]}" perf record -F 2000 -e cpu-clock -g -p "$SERVER_PID" -o "$OUT/$PERF_TAG.perf.data" -- sleep 3 2>/dev/null
                "${PERF_PRE[@]}" perf stat -e task-clock,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom \
                    -p "$SERVER_PID" -o "$OUT/$PERF_TAG.syscalls.txt" -- sleep 3
            ) &
            perf_pid=$!
        fi
        "${RUNPRE[@]}" taskset -c "$CLIENT_CPU" "$FANOUT" pub --url "ws://$ADDR/ws?publish=bench" \
            --subs "$est" --stats "$files" --rates "$RATES" --step "${STEP}s" --server-pid "$SERVER_PID" \
            >"$OUT/$tag.pub.out" 2>"$OUT/$tag.pub.err" || true
        [ -z "$perf_pid" ] || wait "$perf_pid" || true
        grep -E '^(STEP|RESULT)' "$OUT/$tag.pub.out" | while read -r line; do
            echo "$name $round $line subscribers=$est loadavg=$(loadavg | tr ' ' '/')" >>"$RESULTS"
            log "$name r$round: $(tr ' ' '\n' <<<"$line" | grep -E '^(rate|delivered_pct|deliveries_per_s|cpu_us_per_delivery|client_cpu_pct|p50_ms|p99_ms|sustained_rate)=' | tr '\n' ' ')"
        done
    else
        echo "$name $round RESULT error=no_subscribers" >>"$RESULTS"
    fi
    for i in "${!CLIENT_PIDS[@]}"; do
        # the subscribers leave 3 s after END; --hold bounds them anyway
        wait "${CLIENT_PIDS[$i]}" || true
    done
    CLIENT_PIDS=()
    kill -0 "$SERVER_PID" 2>/dev/null || echo "$name $round RESULT server_died=1" >>"$RESULTS"
    stop_server
}

BUSY_BEFORE=$(warn_if_busy)
{
    echo "# date: $(date -Is); nproc: $(nproc); kernel: $(uname -r); prio: $PRIO"
    echo "# servers=$AVAILABLE rounds=$ROUNDS subs=$SUBS sub_procs=$SUB_PROCS rates=$RATES step=${STEP}s"
    echo "# machine busy before the run: ${BUSY_BEFORE}% of one core; load average $(loadavg)"
    describe_wsloop
} >>"$RESULTS"
log "servers: $AVAILABLE; $SUBS subscribers in $SUB_PROCS processes; rates $RATES, ${STEP}s each; $ROUNDS rounds; results in $OUT"

for round in $(seq 1 "$ROUNDS"); do
    for name in $AVAILABLE; do
        run_fan "$name" "$round"
    done
done

# ---- memory per subscription (wsloop only: the others have no topics)
if [ "$MEMORY" = 1 ] && [[ " $AVAILABLE " == *" wsloop "* ]]; then
    PER_PROC=9500
    for t in $MEM_TOPICS; do
        topics=""
        for j in $(seq 1 "$t"); do topics="$topics,t$j"; done
        topics=${topics#,}
        tag=mem.t$t
        start_fan wsloop "$OUT/$tag.server.log" || continue
        sleep 1
        rss0=$(rss_kb "$SERVER_PID")
        pss0=$(pss_kb "$SERVER_PID")
        procs=$(((MEM_N + PER_PROC - 1) / PER_PROC))
        fresh_sources "$((procs * 2))"
        outs=()
        CLIENT_PIDS=()
        left=$MEM_N
        for i in $(seq 1 "$procs"); do
            share=$((left / (procs - i + 1)))
            left=$((left - share))
            o=$OUT/$tag.lg$i.out
            outs+=("$o")
            "${RUNPRE[@]}" taskset -c "$CLIENT_CPU" "$LOADGEN" idle --url "ws://$ADDR/ws?topic=$topics" \
                --connections "$share" --hold 8 --quiet \
                --sources "${SOURCES[$((2 * i - 2))]},${SOURCES[$((2 * i - 1))]}" \
                >"$o" 2>"$OUT/$tag.lg$i.err" &
            CLIENT_PIDS+=($!)
        done
        READY_PIDS=("${CLIENT_PIDS[@]}")
        line="wsloop mem topics=$t n=$MEM_N"
        if wait_ready "${outs[@]}"; then
            sleep 1
            rss1=$(rss_kb "$SERVER_PID")
            pss1=$(pss_kb "$SERVER_PID")
            line="$line rss_before_kb=$rss0 rss_after_kb=$rss1 pss_before_kb=$pss0 pss_after_kb=$pss1"
            line="$line rss_bytes_per_conn=$(((rss1 - rss0) * 1024 / MEM_N)) pss_bytes_per_conn=$(((pss1 - pss0) * 1024 / MEM_N))"
        else
            line="$line error=not_ready"
        fi
        est=0
        for i in "${!CLIENT_PIDS[@]}"; do
            wait "${CLIENT_PIDS[$i]}" || true
            r=$(grep '^RESULT' "${outs[$i]}" | tail -n 1 || true)
            v=$(kv "$r" established)
            est=$((est + ${v:-0}))
        done
        CLIENT_PIDS=()
        echo "$line established=$est loadavg=$(loadavg | tr ' ' '/')" | tee -a "$RESULTS" >&2
        stop_server
    done
fi

# ---- where the time goes (PROFILE=1)
if [ "$PROFILE" = 1 ]; then
    PERF_PRE=()
    [ "$PRIO" = rt ] && PERF_PRE=(chrt -f 20)
    if ! command -v perf >/dev/null; then
        log "SKIP profile: perf not found (apt-get install linux-perf)"
    else
        log "building examples/fanout.rs with --profile profiling (release code with symbols)"
        (cd "$ROOT" && cargo build --profile profiling --example fanout 2>&1 | tail -n 1) >&2
        FAN_EXAMPLE=$ROOT/target/profiling/examples/fanout
        RATES=$PROFILE_RATE
        STEP=$PROFILE_SECS
        for name in $PROFILE_SERVERS; do
            [[ " $AVAILABLE " == *" $name "* ]] || continue
            PERF_TAG=profile.$name
            run_fan "$name" profile
            PERF_TAG=
            {
                echo "## $name at $PROFILE_RATE msgs/s to $SUBS subscribers: perf stat over 3 s"
                awk '/task-clock/ { gsub(/,/, "", $1); printf "task-clock %.0f ms\n", $1 }
                    /syscalls:sys_enter_/ { gsub(/,/, "", $1); if ($1 > 0) printf "%-36s %10d\n", $2, $1 }' \
                    "$OUT/profile.$name.syscalls.txt" 2>/dev/null || true
                echo "## top of the profile (self time)"
                perf report -i "$OUT/profile.$name.perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -n 30 || true
                echo
            } | tee "$OUT/profile.$name.summary.txt"
        done
    fi
fi

python3 "$FAN_DIR/report.py" "$RESULTS" | tee "$OUT/table.md"
