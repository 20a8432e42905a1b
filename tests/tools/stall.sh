#!/bin/sh
# Runs the stalled-mid-frame fault test with many connections and prints the measured
# server memory per stalled connection.
#
#   tests/tools/stall.sh          # 10,000 connections
#   tests/tools/stall.sh 5000     # any other count
#
# The test process and the server each hold one descriptor per connection, so the
# count must stay below the open-file limit (ulimit -n) less a few dozen.
set -eu
n="${1:-10000}"
limit=$(ulimit -n)
if [ "$limit" != unlimited ] && [ "$n" -ge $((limit - 64)) ]; then
    echo "stall.sh: $n connections need ulimit -n above $((n + 64)) (now $limit)" >&2
    exit 2
fi
cd "$(dirname "$0")/../.."
STALL_CONNS="$n" exec cargo test --test faults stalled_mid_frame_10k_connections -- --ignored --nocapture
