#!/usr/bin/env bash
# Cross-thread push benchmark (issue 10), one command:
#
#   benches/push/run.sh
#
# Builds benches/push (release), then for each load and round runs every mode
# on a fresh server pinned to core $SERVER_CPU (1), the client on $CLIENT_CPU
# (0), the modes' order rotating every round:
#   thread  a producer thread pushing through wsloop's Sender
#   loop    the same messages sent from an application timer via Ctx::send
#   loop4k  loop, but at most 4096 messages a timer: the batch the loop takes
#           from Senders in one turn, to tell batching from the queue's cost
#   tokio   tokio-tungstenite, current_thread runtime, an mpsc per client
#   gorilla gorilla/websocket's hub pattern (hub.go), GOMAXPROCS=1; skipped
#           with a message when Go or gorilla cannot be installed
#   alt     thread mode of another push-server binary, $ALT_BIN (e.g. built
#           against a modified wsloop), to try a change side by side
# Loads: "max" = MAX_MESSAGES as fast as accepted, "rate" = RATE_MESSAGES at
# RATE messages/s; both to CLIENTS clients, 64-byte binary messages, round
# robin. Then FLOOD_ROUNDS runs of the flood: 8 producer threads x 100,000
# messages to 100 clients, with an echo client's round trips alongside.
# Prints a table of medians (report.py); raw lines in $OUT/results.txt.
#
# Environment (defaults in brackets): ROUNDS [3], CLIENTS [1000],
# MAX_MESSAGES [2000000], RATE [100000], RATE_MESSAGES [300000],
# MODES ["thread loop loop4k tokio gorilla"], LOADS ["max rate"], FLOOD_ROUNDS [3],
# PRIO [none] (rt: SCHED_FIFO, see benches/lib.sh), OUT [benches/results/push-DATE],
# ALT_BIN [] (mode alt)
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
PUSH=$BENCH_DIR/push
PBIN=$PUSH/target/release
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-1000}
MAX_MESSAGES=${MAX_MESSAGES:-2000000}
RATE=${RATE:-100000}
RATE_MESSAGES=${RATE_MESSAGES:-300000}
MODES=${MODES:-"thread loop loop4k tokio gorilla"}
LOADS=${LOADS:-"max rate"}
FLOOD_ROUNDS=${FLOOD_ROUNDS:-3}
PORT=${PORT:-19310}
OUT=${OUT:-$BENCH_DIR/results/push-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RESULTS=$OUT/results.txt

log "building benches/push (release)"
(cd "$PUSH" && cargo build --release --locked 2>&1 | tail -n 3) >&2 || { log "build failed"; exit 1; }
# gorilla: lib.sh's build_gorilla installs Go and gorilla with apt-get when missing
HUB_BIN=$PBIN/push-hub
case " $MODES " in
*" gorilla "*)
    if build_gorilla && (cd "$PUSH" && GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= \
        GOCACHE="$KIT/target/gocache" go build -o "$HUB_BIN" hub.go) >&2; then
        :
    else
        log "SKIP gorilla: Go or gorilla/websocket missing, or hub.go did not build"
        MODES=$(tr ' ' '\n' <<<"$MODES" | grep -vx gorilla | tr '\n' ' ')
    fi
    ;;
esac
{
    echo "# push bench $(date -u +%FT%TZ) wsloop $(git -C "$ROOT" rev-parse --short HEAD) cpus server=$SERVER_CPU client=$CLIENT_CPU prio=$PRIO"
    echo "# busy before start: $(warn_if_busy)% of one core; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RESULTS"

SPID=
stop() {
    if [ -n "$SPID" ]; then
        kill "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
        SPID=
    fi
}
trap stop EXIT

# one_run TAG MODE MESSAGES RATE PRODUCERS CLIENTS [client options...]
one_run() {
    local tag=$1 mode=$2 msgs=$3 rate=$4 prod=$5 conns=$6 i rc=0 line
    shift 6
    PORT=$((PORT + 1)) # never a port left in TIME_WAIT by the last run
    local server=("$PBIN/push-server" --mode "$mode")
    case $mode in
    loop4k) server=("$PBIN/push-server" --mode loop --batch 4096) ;;
    gorilla) server=(env GOMAXPROCS=1 "$HUB_BIN") ;;
    alt) server=("${ALT_BIN:?set ALT_BIN to a push-server binary for mode alt}" --mode thread) ;;
    esac
    "${RUNPRE[@]}" taskset -c "$SERVER_CPU" "${server[@]}" \
        --listen "127.0.0.1:$PORT" --messages "$msgs" --rate "$rate" --producers "$prod" \
        2>"$OUT/$tag.server.log" &
    SPID=$!
    for i in $(seq 1 100); do
        grep -q "listening on" "$OUT/$tag.server.log" 2>/dev/null && break
        sleep 0.1
    done
    "${RUNPRE[@]}" taskset -c "$CLIENT_CPU" "$PBIN/push-client" --url "ws://127.0.0.1:$PORT/ws" \
        --connections "$conns" --messages "$msgs" --server-pid "$SPID" --timeout 120s "$@" \
        >"$OUT/$tag.out" 2>&1 || rc=$?
    sleep 0.2 # the PRODUCED line comes when the last producer returns
    line=$(grep '^RESULT' "$OUT/$tag.out" | tail -n 1 || true)
    [ -n "$line" ] || line="RESULT error=no_result"
    line="$line $(grep -o 'full=[0-9]*' "$OUT/$tag.server.log" | tail -n 1 || true)"
    [ $rc = 0 ] || line="$line exit=$rc"
    line="$line loadavg=$(cut -d' ' -f1 /proc/loadavg)"
    stop
    echo "$tag ${line#RESULT }" >>"$RESULTS"
    log "$tag: $(tr ' ' '\n' <<<"$line" | grep -E '^(delivered|deliveries_per_s|server_cpu_us_per_msg|p50_us|p99_us|echo_p99_us|full|exit|loadavg)=' | tr '\n' ' ')"
}

for load in $LOADS; do
    case $load in
    max) msgs=$MAX_MESSAGES rate=0 ;;
    rate) msgs=$RATE_MESSAGES rate=$RATE ;;
    *) log "unknown load $load (max rate)"; exit 2 ;;
    esac
    for round in $(seq 1 "$ROUNDS"); do
        # rotate the order so that no mode always runs first
        set -- $MODES
        for _ in $(seq 2 "$round"); do set -- "${@:2}" "$1"; done
        for mode in "$@"; do
            one_run "$load.$mode.r$round" "$mode" "$msgs" "$rate" 1 "$CLIENTS"
        done
    done
done
for round in $(seq 1 "$FLOOD_ROUNDS"); do
    for mode in thread tokio gorilla; do
        case " $MODES " in *" $mode "*) ;; *) continue ;; esac
        one_run "flood.$mode.r$round" "$mode" 800000 0 8 100 --echo
    done
done
echo "# loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS"
python3 "$PUSH/report.py" "$RESULTS" | tee "$OUT/table.md"
