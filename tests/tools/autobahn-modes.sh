#!/usr/bin/env bash
# The whole Autobahn|Testsuite (517 cases, permessage-deflate included) against the
# release binary in every compression mode: shared and window=9..15, two at a time
# (the fuzzingclient is single-threaded Python). CI runs shared and window=12 in full
# and window=9/15 on a subset; this is the full matrix (about an hour on 2 cores).
#
#   bash tests/tools/autobahn-modes.sh [MODE...]     (default: shared window=9 ... window=15)
#
# Reports: target/autobahn/modes/MODE/index.html; exit status 1 if any mode has a
# FAILED, NON-STRICT or UNIMPLEMENTED case. Network: 127.0.0.1 only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
AUTOBAHN="$(cd "$ROOT/.." && pwd)/shared/autobahn"
export AUTOBAHN_VENV="${AUTOBAHN_VENV:-$HOME/.cache/autobahn-py3-venv}"
export AUTOBAHN_DEFLATE=1 AUTOBAHN_TIMEOUT="${AUTOBAHN_TIMEOUT:-2400}"
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(shared window=9 window=10 window=11 window=12 window=13 window=14 window=15)

cargo build --release
"$AUTOBAHN/setup.sh" "$AUTOBAHN_VENV"
OUT=target/autobahn/modes
mkdir -p "$OUT"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

# one MODE: its own server on a free port, the suite, the verdict from index.json.
one() {
    local mode="$1" dir="$OUT/${1/=/}" log url pid
    mkdir -p "$dir"
    log="$dir/server.log"
    target/release/wsloop --listen 127.0.0.1:0 --compression "$mode" --log-level warn > "$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        url="$(grep -o -m1 'listening on ws://[^ ]*' "$log" | sed 's/^listening on //' || true)"
        [ -n "$url" ] && break
        sleep 0.1
    done
    AUTOBAHN_AGENT="wsloop-$mode" "$AUTOBAHN/run.sh" "$url" "$dir" > "$dir/run.out" 2>&1 || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    python3 - "$dir" "$mode" <<'PY'
import json, sys, collections
d, mode = sys.argv[1], sys.argv[2]
try:
    cases = next(iter(json.load(open(d + "/index.json")).values()))
except (OSError, StopIteration, ValueError):
    print(f"{mode}: no report"); sys.exit(1)
b = collections.Counter(c["behavior"] for c in cases.values())
bad = [k for k, c in cases.items()
       if c["behavior"] not in ("OK", "INFORMATIONAL") or c["behaviorClose"] not in ("OK", "INFORMATIONAL")]
secs = sum(c.get("duration", 0) for k, c in cases.items() if k.split(".")[0] in ("12", "13")) / 1000
print(f"{mode}: {len(cases)} cases {dict(b)}; sections 12-13 took {secs:.0f} s; not OK: {bad or 'none'}")
sys.exit(1 if bad or len(cases) < 517 else 0)
PY
}

rc=0
for ((i = 0; i < ${#MODES[@]}; i += 2)); do
    one "${MODES[$i]}" > "$OUT/verdict-$i" 2>&1 &
    PIDS+=($!)
    a=$!
    b=""
    if [ $((i + 1)) -lt ${#MODES[@]} ]; then
        one "${MODES[$((i + 1))]}" > "$OUT/verdict-$((i + 1))" 2>&1 &
        b=$!
        PIDS+=($b)
    fi
    wait "$a" || rc=1
    [ -z "$b" ] || wait "$b" || rc=1
    cat "$OUT/verdict-$i"
    [ -z "$b" ] || cat "$OUT/verdict-$((i + 1))"
done
exit $rc
