#!/usr/bin/env bash
# Soak and leak checks for wsloop:
#
#   benches/soak.sh [cycles] [idle] [sigkill]      (default: all three)
#
# Each part starts its own wsloop (core $SERVER_CPU; load generators on
# $CLIENT_CPU) with --ping-interval 5s --idle-timeout 15s --log-level warn and
# --metrics-listen on a second loopback port, and samples the server's open
# file descriptors (`ls /proc/PID/fd | wc -l`), VmRSS, CPU ticks and a few
# metrics gauges (open connections, pooled contexts, pings, idle/1006 closes)
# into OUT/samples.csv. The fd count is read before the metrics scrape, so
# the scraper's own socket is never counted.
#
#  cycles   CYCLES [1,000,000] connect / upgrade / one 32-byte echo / Close
#           sessions, `loadgen connect --concurrency 64`, repeated runs until
#           the server has counted CYCLES clean closes (its metrics endpoint;
#           at most 20 runs and CYCLES_TIME_LIMIT [600] seconds). The "before" figures are taken
#           after a warm-up of WARMUP_CYCLES [10,000] sessions (plus 5 s), so
#           the pool and the allocator's arenas already exist. Samples every
#           SAMPLE_SECS [5] s during the run and 5/10/15/20 s after it.
#           PASS: completed >= CYCLES, no failed session, and 5 s after the
#           run the fd count is within 5 % of "before" and RSS within 5 % of
#           "before".
#  idle     IDLE_CONNS [19,000] idle connections from IDLE_PROCS [2] loadgen
#           processes (sources 127.0.0.2, 127.0.0.3, ...; each first echoes
#           IDLE_ECHO_FIRST [4096] bytes), held IDLE_HOLD [600] s while the
#           server pings every 5 s and the clients answer. Samples every
#           IDLE_SAMPLE_SECS [30] s. PASS: established = IDLE_CONNS, failed = 0,
#           closed_by_server = 0 in every RESULT line, and RSS over the hold
#           (READY to the end) within 5 % ((max - min) / min).
#  sigkill  one loadgen holding SIGKILL_CONNS [5000] idle connections (source
#           127.0.0.4) is killed with SIGKILL; the fd count is polled every
#           ~20 ms. PASS: back to the pre-load baseline within SIGKILL_LIMIT
#           [5] s.
#
# Other environment: BASE_PORT [19500] (wsloop on BASE_PORT+1, metrics on
# BASE_PORT+9), PRIO [none] (see lib.sh), OUT [benches/results/soak-DATE].
# The summary (soak_report.py) goes to stdout and OUT/summary.txt; the exit
# status is 1 when a part failed. The parts may also be run by separate
# invocations sharing one OUT (samples and facts are appended; the summary
# covers every part found there). Time with the defaults: ~10.5 min for
# idle, ~1 min for cycles (at ~31,000 sessions/s), ~15 s for sigkill.
set -uo pipefail
BASE_PORT=${BASE_PORT:-19500}
source "$(dirname "$0")/lib.sh"

CYCLES=${CYCLES:-1000000}
WARMUP_CYCLES=${WARMUP_CYCLES:-10000}
CYCLES_TIME_LIMIT=${CYCLES_TIME_LIMIT:-600}
SAMPLE_SECS=${SAMPLE_SECS:-5}
IDLE_CONNS=${IDLE_CONNS:-19000}
IDLE_PROCS=${IDLE_PROCS:-2}
IDLE_HOLD=${IDLE_HOLD:-600}
IDLE_SAMPLE_SECS=${IDLE_SAMPLE_SECS:-30}
IDLE_ECHO_FIRST=${IDLE_ECHO_FIRST:-4096}
SIGKILL_CONNS=${SIGKILL_CONNS:-5000}
SIGKILL_LIMIT=${SIGKILL_LIMIT:-5}
SRV_ARGS=(--ping-interval 5s --idle-timeout 15s --log-level warn)
METRICS_ADDR=127.0.0.1:$((BASE_PORT + 9))
OUT=${OUT:-$BENCH_DIR/results/soak-$(date +%Y%m%d-%H%M%S)}

PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(cycles idle sigkill)
for p in "${PARTS[@]}"; do
    case $p in cycles | idle | sigkill) ;; *) echo "unknown part $p (cycles idle sigkill)" >&2; exit 2 ;; esac
done

mkdir -p "$OUT"
CSV=$OUT/samples.csv
FACTS=$OUT/facts.txt
# several invocations may share one OUT (e.g. `OUT=X soak.sh idle` then
# `OUT=X soak.sh cycles`): samples and facts are appended
[ -s "$CSV" ] || echo "part,phase,t_s,fds,rss_kb,cpu_ticks,open_connections,pooled_contexts,pings_sent,idle_closes,closes_1006,handshakes_ok,closes_1000,messages_in" >"$CSV"
touch "$FACTS"

LG_PIDS=()
cleanup() {
    local p
    for p in "${LG_PIDS[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            kill "$p" 2>/dev/null
            wait "$p" 2>/dev/null
        fi
    done
    stop_server
    rm -rf "$OUT/bin"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- binaries: build only what is missing
if [ ! -x "$WSLOOP_BIN" ]; then
    log "building wsloop (release)"
    (cd "$ROOT" && cargo build --release 2>&1 | tail -n 3) >&2 || { log "wsloop build failed"; exit 1; }
fi
if [ ! -x "$LOADGEN" ]; then
    log "building benches/kit (release)"
    (cd "$KIT" && cargo build --release --locked 2>&1 | tail -n 3) >&2 || { log "kit build failed"; exit 1; }
fi

# run copies of the binaries, so that a rebuild by someone else during the
# soak cannot swap them between runs
mkdir -p "$OUT/bin"
cp -p "$WSLOOP_BIN" "$OUT/bin/wsloop" && cp -p "$LOADGEN" "$OUT/bin/loadgen" || { log "cannot copy the binaries"; exit 1; }
WSLOOP_BIN=$OUT/bin/wsloop
LOADGEN=$OUT/bin/loadgen

{
    echo "# date: $(date -Is); nproc: $(nproc); kernel: $(uname -r); clk_tck: $(getconf CLK_TCK); prio: $PRIO; nofile: $(ulimit -n)"
    echo "# wsloop: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'no commit') $(cd "$ROOT" && git status --porcelain src Cargo.toml 2>/dev/null | grep -q . && echo '(dirty tree)') binary $(date -r "$WSLOOP_BIN" -Is) sha256 $(sha256sum "$WSLOOP_BIN" | cut -c1-12)"
    echo "# server args: ${SRV_ARGS[*]} --metrics-listen $METRICS_ADDR"
    echo "# parts: ${PARTS[*]}; machine busy before: $(machine_busy_pct 2)% of one core"
} >>"$FACTS"
tail -n 4 "$FACTS" >&2

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# sample PART PHASE: one CSV row (time relative to PART_T0)
PART_T0=0
sample() {
    local pid=${SERVER_PID:-} t fds rss ticks m
    t=$(elapsed "$PART_T0")
    if [ -z "$pid" ] || [ ! -d "/proc/$pid" ]; then
        echo "$1,$2,$t,,,,,,,,,,," >>"$CSV"
        return
    fi
    fds=$(ls "/proc/$pid/fd" | wc -l)
    rss=$(rss_kb "$pid")
    ticks=$(proc_ticks "$pid")
    m=$(curl -s --max-time 2 "http://$METRICS_ADDR/metrics" | awk '
        $1 == "wsloop_open_connections" { o = $2 }
        $1 == "wsloop_pooled_contexts" { p = $2 }
        $1 == "wsloop_pings_sent_total" { g = $2 }
        $1 == "wsloop_deadline_closes_total{kind=\"idle\"}" { i = $2 }
        $1 == "wsloop_closes_total{code=\"1006\"}" { c = $2 }
        $1 == "wsloop_handshakes_ok_total" { h = $2 }
        $1 == "wsloop_closes_total{code=\"1000\"}" { n = $2 }
        $1 == "wsloop_messages_in_total" { mi = $2 }
        END { if (o != "") printf "%s,%s,%s,%s,%s,%s,%s,%s", o, p, g, i, c + 0, h, n + 0, mi; else printf ",,,,,,," }')
    echo "$1,$2,$t,$fds,$rss,$ticks,$m" >>"$CSV"
    LAST_FDS=$fds LAST_RSS=$rss
}

fact() { echo "$*" >>"$FACTS"; }

# metric NAME: one value from the server's metrics endpoint (0 when absent)
metric() {
    curl -s --max-time 2 "http://$METRICS_ADDR/metrics" | awk -v k="$1" '$1 == k { v = $2 } END { print v + 0 }'
}

# listening PORT: a TCP socket in LISTEN state on 127.0.0.1:PORT (from
# /proc/net/tcp, so no connection is made to the server)
listening() {
    awk -v p="$(printf '0100007F:%04X' "$1")" '$2 == p && $4 == "0A" { f = 1 } END { exit !f }' /proc/net/tcp
}

# srv_start PART: wsloop with SRV_ARGS on core SERVER_CPU; sets SERVER_PID, URL.
# At --log-level warn wsloop does not print its "listening on" line (that is an
# info message), so readiness is both ports in LISTEN state.
srv_start() { # PART
    local port=$((BASE_PORT + 1)) i
    if listening "$port" || listening "$((BASE_PORT + 9))"; then
        log "$1: port $port or $((BASE_PORT + 9)) is already in use"
        return 1
    fi
    "${RUNPRE[@]}" taskset -c "$SERVER_CPU" "$WSLOOP_BIN" --listen "127.0.0.1:$port" "${SRV_ARGS[@]}" \
        --metrics-listen "$METRICS_ADDR" 2>"$OUT/$1.server.log" >/dev/null &
    SERVER_PID=$!
    URL=ws://127.0.0.1:$port/ws
    for i in $(seq 1 100); do
        if listening "$port" && listening "$((BASE_PORT + 9))"; then
            PART_T0=$(now)
            fact "$1 server_pid=$SERVER_PID url=$URL"
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "$1: wsloop exited at startup: $(tail -n 3 "$OUT/$1.server.log")"
            SERVER_PID=
            return 1
        fi
        sleep 0.1
    done
    log "$1: wsloop is not listening after 10 s"
    stop_server
    return 1
}

srv_stop() { # PART
    if [ -n "${SERVER_PID:-}" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
        fact "$1 server_died=1"
        log "$1: the server died: $(tail -n 3 "$OUT/$1.server.log")"
    fi
    stop_server
    fact "$1 server_log_lines=$(wc -l <"$OUT/$1.server.log")"
}

# fresh source addresses for each connect run (TIME_WAIT of earlier runs never
SRC_OCTET=$((100 + $$ % 100))
# collides with the next run's 4-tuples); sets SOURCES (not a subshell, so the
# run counter advances)
SRC_RUN=0
fresh_sources() {
    SRC_RUN=$((SRC_RUN + 1))
    local s="" i
    for i in $(seq 1 16); do s="$s,127.$SRC_OCTET.$((SRC_RUN % 250)).$i"; done
    SOURCES=${s#,}
}

# ------------------------------------------------------------------ cycles
part_cycles() {
    local P=cycles
    log "cycles: $CYCLES sessions at concurrency 64 (warm-up $WARMUP_CYCLES), limit ${CYCLES_TIME_LIMIT}s"
    srv_start $P || { fact "$P error=server_start_failed"; return; }
    sleep 1
    sample $P fresh
    # warm-up
    fresh_sources
    "${RUNPRE[@]}" taskset -c "$CLIENT_CPU" "$LOADGEN" connect --url "$URL" --concurrency 64 \
        --duration 60 --max-sessions "$WARMUP_CYCLES" --sources "$SOURCES" --quiet \
        >"$OUT/$P.warmup.out" 2>"$OUT/$P.warmup.err" &
    LG_PIDS=($!)
    wait "${LG_PIDS[0]}"
    LG_PIDS=()
    local r
    r=$(grep '^RESULT' "$OUT/$P.warmup.out" | tail -n 1)
    fact "$P warmup_sessions=$(kv "$r" sessions) warmup_failed=$(kv "$r" failed)"
    sleep 5
    sample $P before
    # main: repeated runs until the server has seen CYCLES sessions end with
    # a clean Close 1000 (its closes_total{code="1000"} metric). loadgen's own
    # `sessions` omits the <= 64 sessions still in flight when a run reaches
    # --max-sessions (they finish after its window closes), so it is only
    # summed for comparison.
    local total=0 failed=0 runs=0 t_start deadline left tl pid next o rc s f csum=0 c0 h0 m0
    local K1000='wsloop_closes_total{code="1000"}'
    c0=$(metric "$K1000")
    h0=$(metric wsloop_handshakes_ok_total)
    m0=$(metric wsloop_messages_in_total)
    t_start=$(now)
    deadline=$(awk -v a="$t_start" -v l="$CYCLES_TIME_LIMIT" 'BEGIN { printf "%.0f", a + l }')
    next=$(awk -v a="$t_start" -v s="$SAMPLE_SECS" 'BEGIN { printf "%.3f", a + s }')
    while [ "$total" -lt "$CYCLES" ] && [ "$runs" -lt 20 ]; do
        tl=$((deadline - ${EPOCHSECONDS}))
        [ "$tl" -ge 1 ] || break
        runs=$((runs + 1))
        left=$((CYCLES - total))
        o=$OUT/$P.run$runs.out
        fresh_sources
        "${RUNPRE[@]}" taskset -c "$CLIENT_CPU" "$LOADGEN" connect --url "$URL" --concurrency 64 \
            --duration "$tl" --max-sessions "$left" --sources "$SOURCES" --server-pid "$SERVER_PID" --quiet \
            >"$o" 2>"$OUT/$P.run$runs.err" &
        pid=$!
        LG_PIDS=($pid)
        # sample while it runs (bounded: the run's own limit plus 30 s)
        local i
        for i in $(seq 1 $(((tl + 30) * 5))); do
            kill -0 "$pid" 2>/dev/null || break
            if awk -v n="$next" -v t="$(now)" 'BEGIN { exit !(t >= n) }'; then
                sample $P during
                next=$(awk -v n="$next" -v s="$SAMPLE_SECS" 'BEGIN { printf "%.3f", n + s }')
            fi
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then kill "$pid"; fi
        wait "$pid"
        rc=$?
        LG_PIDS=()
        r=$(grep '^RESULT' "$o" | tail -n 1)
        s=$(kv "$r" sessions)
        f=$(kv "$r" failed)
        csum=$((csum + ${s:-0}))
        failed=$((failed + ${f:-0}))
        total=$(($(metric "$K1000") - c0))
        fact "$P run=$runs rc=$rc $r"
        log "cycles run $runs: ${s:-no} sessions (loadgen window), $(kv "$r" sessions_per_s)/s, failed=${f:-?}; server clean closes so far $total"
    done
    local secs
    secs=$(elapsed "$t_start")
    fact "$P completed=$total target=$CYCLES handshakes=$(($(metric wsloop_handshakes_ok_total) - h0)) messages_in=$(($(metric wsloop_messages_in_total) - m0)) client_window_sessions=$csum failed=$failed runs=$runs secs=$secs"
    local t_end k
    t_end=$(now)
    for k in 5 10 15 20; do
        sleep "$(awk -v a="$t_end" -v k="$k" -v t="$(now)" 'BEGIN { d = a + k - t; printf "%.2f", (d > 0 ? d : 0) }')"
        sample $P "after$k"
    done
    srv_stop $P
}

# ------------------------------------------------------------------ idle
part_idle() {
    local P=idle
    log "idle: $IDLE_CONNS connections from $IDLE_PROCS processes, held ${IDLE_HOLD}s"
    srv_start $P || { fact "$P error=server_start_failed"; return; }
    sleep 1
    sample $P before
    local outs=() left=$IDLE_CONNS i share o
    LG_PIDS=()
    for i in $(seq 1 "$IDLE_PROCS"); do
        share=$((left / (IDLE_PROCS - i + 1)))
        left=$((left - share))
        o=$OUT/$P.lg$i.out
        outs+=("$o")
        "${RUNPRE[@]}" taskset -c "$CLIENT_CPU" "$LOADGEN" idle --url "$URL" --connections "$share" \
            --echo-first "$IDLE_ECHO_FIRST" --hold "$IDLE_HOLD" --sources "127.0.0.$((1 + i))" --quiet \
            >"$o" 2>"$OUT/$P.lg$i.err" &
        LG_PIDS+=($!)
    done
    READY_PIDS=("${LG_PIDS[@]}")
    if ! wait_ready "${outs[@]}"; then
        fact "$P error=not_ready"
    fi
    sample $P ready
    fact "$P ready_at_s=$(elapsed "$PART_T0") $(for o in "${outs[@]}"; do grep '^READY' "$o" | tr ' ' '\n' | grep -E '^(established|failed)=' | tr '\n' ' '; done)"
    local t_ready next alive p rc
    t_ready=$(now)
    next=$(awk -v a="$t_ready" -v s="$IDLE_SAMPLE_SECS" 'BEGIN { printf "%.3f", a + s }')
    for i in $(seq 1 $(((IDLE_HOLD + 180) * 5))); do
        alive=0
        for p in "${LG_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
        [ "$alive" -gt 0 ] || break
        if awk -v n="$next" -v t="$(now)" 'BEGIN { exit !(t >= n) }'; then
            # "hold" only while every client is alive and inside its hold
            # (READY + IDLE_HOLD, less 2 s for the clients' own READY spread)
            if [ "$alive" = "${#LG_PIDS[@]}" ] && awk -v a="$t_ready" -v h="$IDLE_HOLD" -v t="$(now)" 'BEGIN { exit !(t < a + h - 2) }'; then
                sample $P hold
            else
                sample $P closing
            fi
            next=$(awk -v n="$next" -v s="$IDLE_SAMPLE_SECS" 'BEGIN { printf "%.3f", n + s }')
        fi
        sleep 0.2
    done
    for i in "${!LG_PIDS[@]}"; do
        p=${LG_PIDS[$i]}
        if kill -0 "$p" 2>/dev/null; then kill "$p"; fi
        wait "$p"
        rc=$?
        fact "$P lg=$((i + 1)) rc=$rc $(grep '^RESULT' "${outs[$i]}" | tail -n 1)"
    done
    LG_PIDS=()
    sleep 5
    sample $P after5
    srv_stop $P
}

# ------------------------------------------------------------------ sigkill
part_sigkill() {
    local P=sigkill
    log "sigkill: $SIGKILL_CONNS connections, then SIGKILL to the client"
    srv_start $P || { fact "$P error=server_start_failed"; return; }
    sleep 1
    sample $P before
    local base=$LAST_FDS o=$OUT/$P.lg.out pid
    "${RUNPRE[@]}" taskset -c "$CLIENT_CPU" "$LOADGEN" idle --url "$URL" --connections "$SIGKILL_CONNS" \
        --echo-first "$IDLE_ECHO_FIRST" --hold 300 --sources 127.0.0.4 --quiet >"$o" 2>"$OUT/$P.lg.err" &
    pid=$!
    LG_PIDS=($pid)
    READY_PIDS=($pid)
    wait_ready "$o" || fact "$P error=not_ready"
    sleep 2
    sample $P loaded
    fact "$P baseline_fds=$base loaded_fds=$LAST_FDS $(grep '^READY' "$o")"
    local t_kill n i t_back="" last_n rc
    t_kill=$(now)
    # (stderr of this block goes to the log: bash reports the killed job there)
    {
        kill -KILL "$pid"
        for i in $(seq 1 1500); do # ~30 s at most
            n=$(ls "/proc/$SERVER_PID/fd" | wc -l)
            echo "$P,after_kill,$(elapsed "$PART_T0"),$n,,,,,,,,,," >>"$CSV"
            last_n=$n
            if [ "$n" -le "$base" ]; then
                t_back=$(elapsed "$t_kill")
                break
            fi
            sleep 0.02
        done
        wait "$pid"
        rc=$?
    } 2>>"$OUT/$P.lg.err"
    fact "$P kill_rc=$rc back_to_baseline_s=${t_back:-never} last_fds=$last_n polls=$i limit_s=$SIGKILL_LIMIT"
    LG_PIDS=()
    sleep 5
    sample $P after5
    srv_stop $P
}

for p in "${PARTS[@]}"; do
    "part_$p"
done
trap - EXIT
cleanup
python3 "$BENCH_DIR/soak_report.py" "$OUT" | tee "$OUT/summary.txt"
exit "${PIPESTATUS[0]}"
