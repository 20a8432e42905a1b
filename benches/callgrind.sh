#!/usr/bin/env bash
# Instructions per echoed message, repeatable on a noisy shared machine: the server
# (wsloop's profiling build, or rawecho) runs under `valgrind --tool=callgrind`
# during a bounded loadgen echo run (no warm-up); its whole run's instructions are
# divided by the messages it echoed (wsloop's messages_in_total from its metrics
# endpoint; loadgen's count for rawecho). Start-up and the handshakes are included,
# a fixed cost spread over the run's messages. callgrind_control's zero/dump was
# tried for a warm-up window, but it missed whole runs of the large load.
#
#   benches/callgrind.sh                       # small, small-text, large against wsloop
#   LOADS="small" SERVERS="wsloop rawecho" benches/callgrind.sh
#   PROF=target/release/wsloop NO_BUILD=1 benches/callgrind.sh   # any wsloop binary
#
# Environment: SERVERS [wsloop], LOADS [small small-text large], SECS [6] seconds
# of load per run, PROF [target/profiling/wsloop, built first unless NO_BUILD is
# set] the wsloop binary (a stripped one gives the totals, not the per-function
# listing in OUT/*.annotate.txt), OUT [benches/results/callgrind-DATE].
# valgrind is installed with apt-get when missing (as root; about 30 s).
#
# Loads: small (32 B binary, 64 x 16), small-text (the same as text), 16k
# (16 x 4), 64k (8 x 4), large (1 MiB, 8 x 2). User-space instructions only:
# the kernel's share (the copies of send/recv) is not counted.
set -euo pipefail
SERVERS=${SERVERS:-wsloop}
LOADS=${LOADS:-"small small-text large"}
SECS=${SECS:-6}
source "$(dirname "$0")/lib.sh"
OUT=${OUT:-$BENCH_DIR/results/callgrind-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
if ! command -v valgrind >/dev/null && [ "$(id -u)" = 0 ]; then
    log "installing valgrind with apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind) >/dev/null 2>&1 || true
fi
command -v valgrind >/dev/null || { log "valgrind not found (apt-get install valgrind)"; exit 1; }
[ -x "$LOADGEN" ] || (cd "$KIT" && cargo build --release --locked 2>&1 | tail -n 1) >&2
PROF=${PROF:-$ROOT/target/profiling/wsloop}
if [ -z "${NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --profile profiling 2>&1 | tail -n 1) >&2
fi
VPID=
trap '[ -n "$VPID" ] && kill "$VPID" 2>/dev/null; true' EXIT


load_args() {
    case $1 in
    small) echo "--connections 64 --inflight 16 --size 32" ;;
    small-text) echo "--connections 64 --inflight 16 --size 32 --text" ;;
    16k) echo "--connections 16 --inflight 4 --size 16384" ;;
    64k) echo "--connections 8 --inflight 4 --size 65536" ;;
    large) echo "--connections 8 --inflight 2 --size 1048576" ;;
    esac
}

port=$((BASE_PORT + 40))
for name in $SERVERS; do
    for load in $LOADS; do
        port=$((port + 1))
        tag=$name.$load
        mport=$((port + 100))
        case $name in
        wsloop) cmd=("$PROF" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport") ;;
        rawecho) cmd=("$BIN/rawecho" --listen "127.0.0.1:$port") ;;
        *) log "unknown server $name"; exit 2 ;;
        esac
        taskset -c "$SERVER_CPU" valgrind --tool=callgrind --callgrind-out-file="$OUT/$tag.cg.%p" \
            "${cmd[@]}" >"$OUT/$tag.server.log" 2>&1 &
        VPID=$!
        for _ in $(seq 1 200); do grep -q "listening on" "$OUT/$tag.server.log" && break; sleep 0.1; done
        # shellcheck disable=SC2046 # a list of options
        taskset -c "$CLIENT_CPU" "$LOADGEN" echo --url "ws://127.0.0.1:$port/ws" $(load_args "$load") \
            --duration "$SECS" --warmup 0 --quiet >"$OUT/$tag.out" 2>"$OUT/$tag.err" &
        lpid=$!
        wait $lpid || true
        m1=0; [ $name = wsloop ] && m1=$(scrape_metric $mport wsloop_messages_in_total)
        kill "$VPID"; wait "$VPID" 2>/dev/null || true; VPID=
        msgs=$m1
        # rawecho has no counter: loadgen's messages (its whole run, no warm-up)
        if [ $name != wsloop ]; then msgs=$(grep '^RESULT' "$OUT/$tag.out" | tr ' ' '\n' | awk -F= '$1 == "msgs" { print $2 }'); fi
        dump=$(ls "$OUT"/$tag.cg.* 2>/dev/null | head -n 1)
        ir=$(callgrind_total "$dump")
        echo "$tag msgs=$msgs Ir=$ir Ir_per_msg=$(( ir / (msgs > 0 ? msgs : 1) ))" | tee -a "$OUT/summary.txt"
        callgrind_annotate --inclusive=no "$dump" 2>/dev/null >"$OUT/$tag.annotate.txt" || true
    done
done
log "results in $OUT"
