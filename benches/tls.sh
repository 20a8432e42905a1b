#!/usr/bin/env bash
# TLS cost: the same pipelined echo from one client over ws:// and wss:// against
# wsloop (server on core 1, client on core 0), alternating, ROUNDS rounds; prints the
# medians and the TLS/plain ratio for small (32 B) and large (1 MiB) messages.
#   benches/tls.sh            ROUNDS=3 SECONDS_PER_RUN=5 by default
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-5}
cargo build --release -q
(cd benches/kit && cargo build --release -q --locked)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
make_cert "$work"

# start VAR LOGFILE ARGS...: starts a server (in this shell, so cleanup knows its PID)
# and sets VAR to its URL once it listens.
start() {
    local var=$1 log=$2 url=""
    shift 2
    taskset -c 1 target/release/wsloop --listen 127.0.0.1:0 "$@" </dev/null >/dev/null 2>"$log" &
    pids+=($!)
    for _ in $(seq 100); do
        url=$(grep -o -m1 'listening on wss\?://[^ ]*' "$log" | sed 's/^listening on //' || true)
        [ -n "$url" ] && break
        sleep 0.05
    done
    [ -n "$url" ] || { echo "server did not start: $(cat "$log")" >&2; exit 1; }
    printf -v "$var" '%s' "$url"
}
start plain "$work/plain.log"
start tls "$work/tls.log" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
echo "plain $plain, tls $tls; $ROUNDS rounds of ${SECS}s"
bench() { taskset -c 0 benches/kit/target/release/wssbench "$1" --ca "$work/cert.pem" --size "$2" --inflight "$3" --seconds "$SECS" | sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p'; }
# 1 MiB with one in flight: a blocking client with more could fill both directions
# socket buffers and stall against the server's backpressure.
for spec in "32 64" "1048576 1"; do
    set -- $spec
    p=(); t=()
    for _ in $(seq "$ROUNDS"); do p+=("$(bench "$plain" "$1" "$2")"); t+=("$(bench "$tls" "$1" "$2")"); done
    python3 - "$1" "${p[*]}" "${t[*]}" <<'PY'
import statistics, sys
size = int(sys.argv[1]); p = [int(x) for x in sys.argv[2].split()]; t = [int(x) for x in sys.argv[3].split()]
mp, mt = statistics.median(p), statistics.median(t)
mib = lambda r: r * size / 2**20
print(f"size {size} B: plain {mp:,.0f} msgs/s ({mib(mp):,.1f} MiB/s) runs {p}; "
      f"tls {mt:,.0f} msgs/s ({mib(mt):,.1f} MiB/s) runs {t}; tls/plain {mt/mp:.2f}")
PY
done
