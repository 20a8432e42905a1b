#!/usr/bin/env bash
# Instructions per echoed message over ws:// and wss://, repeatable on a noisy machine:
# wsloop's profiling build runs under `valgrind --tool=callgrind` while wssbench (the
# same blocking client for both schemes) echoes for SECS seconds; the server's whole
# run (start-up and handshake included) is divided by its messages_in_total.
#
#   benches/tls_callgrind.sh                      # 1 MiB, one in flight, ws and wss
#   SIZE=32 INFLIGHT=64 benches/tls_callgrind.sh
#   SCHEMES=wss SECS=20 NO_BUILD=1 benches/tls_callgrind.sh
#
# Environment: SCHEMES [ws wss], SIZE [1048576], INFLIGHT [1], SECS [15], PROF
# [target/profiling/wsloop, built first unless NO_BUILD is set], OUT
# [benches/results/tls-callgrind-DATE]; OUT/*.incl.txt and *.self.txt are
# callgrind_annotate's inclusive and exclusive listings. User-space instructions only.
set -euo pipefail
SCHEMES=${SCHEMES:-"ws wss"}
SIZE=${SIZE:-1048576}
INFLIGHT=${INFLIGHT:-1}
SECS=${SECS:-15}
source "$(dirname "$0")/lib.sh"
OUT=${OUT:-$BENCH_DIR/results/tls-callgrind-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
command -v valgrind >/dev/null || { log "valgrind not found (apt-get install valgrind)"; exit 1; }
WSSBENCH=$BIN/wssbench
[ -x "$WSSBENCH" ] || (cd "$KIT" && cargo build --release --locked 2>&1 | tail -n 1) >&2
PROF=${PROF:-$ROOT/target/profiling/wsloop}
[ -n "${NO_BUILD:-}" ] || (cd "$ROOT" && cargo build --profile profiling 2>&1 | tail -n 1) >&2
make_cert "$OUT"
VPID=
trap '[ -n "$VPID" ] && kill "$VPID" 2>/dev/null; true' EXIT


port=$((BASE_PORT + 70))
for scheme in $SCHEMES; do
    port=$((port + 1))
    mport=$((port + 100))
    tag=$scheme.$SIZE
    tls=()
    [ "$scheme" = wss ] && tls=(--tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem")
    taskset -c "$SERVER_CPU" valgrind --tool=callgrind --callgrind-out-file="$OUT/$tag.cg" \
        "$PROF" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" "${tls[@]}" \
        >"$OUT/$tag.server.log" 2>&1 &
    VPID=$!
    for _ in $(seq 1 300); do grep -q "listening on" "$OUT/$tag.server.log" && break; sleep 0.1; done
    taskset -c "$CLIENT_CPU" "$WSSBENCH" "$scheme://127.0.0.1:$port/ws" --ca "$OUT/cert.pem" \
        --size "$SIZE" --inflight "$INFLIGHT" --seconds "$SECS" >"$OUT/$tag.out" 2>&1 || true
    msgs=$(scrape_metric "$mport" wsloop_messages_in_total)
    kill "$VPID"; wait "$VPID" 2>/dev/null || true; VPID=
    ir=$(callgrind_total "$OUT/$tag.cg")
    echo "$tag msgs=$msgs Ir=$ir Ir_per_msg=$((ir / (msgs > 0 ? msgs : 1)))" | tee -a "$OUT/summary.txt"
    callgrind_annotate --inclusive=no "$OUT/$tag.cg" >"$OUT/$tag.self.txt" 2>/dev/null || true
    callgrind_annotate --inclusive=yes "$OUT/$tag.cg" >"$OUT/$tag.incl.txt" 2>/dev/null || true
done
log "results in $OUT"
