# Shared helpers for the scripts in benches/ (sourced, not run).
# Servers are pinned to SERVER_CPU (default core 1), load generators to
# CLIENT_CPU (default core 0). All traffic stays on 127.0.0.0/8.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
KIT=$BENCH_DIR/kit
BIN=$KIT/target/release
LOADGEN=$BIN/loadgen
GORILLA_BIN=$KIT/target/gorilla-echo
# optional "uws": a uWebSockets (C++) echo server built by the user from
# benches/uws/echo.cpp and uWS's own source, which this repository does not
# hold (see "uWebSockets C++ (optional)" in BENCHMARKS.md); skipped when absent
UWS_BIN=${UWS_BIN:-$BENCH_DIR/uws/build/echo}
WSLOOP_BIN=${WSLOOP_BIN:-$ROOT/target/release/wsloop}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
BASE_PORT=${BASE_PORT:-19200}
SERVERS=${SERVERS:-"wsloop rawecho tokio gorilla uws"}
# PRIO=rt runs servers and load generators under SCHED_FIFO (chrt -f 10) so
# that background jobs of other users on a shared machine cannot take the two
# cores away from the measurement; PRIO=none (default) uses normal priority.
PRIO=${PRIO:-none}
case $PRIO in
none) RUNPRE=() ;;
rt) RUNPRE=(chrt -f 10) ;;
*) echo "PRIO must be none or rt" >&2; exit 2 ;;
esac
# extra arguments for wsloop (e.g. WSLOOP_ARGS="--ping-interval 30s --idle-timeout 60s")
WSLOOP_ARGS=${WSLOOP_ARGS:-}
# BASE=<commit>: also build wsloop at that commit and run it as the extra
# server "wsloop-base" next to the current "wsloop" (same WSLOOP_ARGS, same
# pinning), so a change is judged against its base within one run: on this
# shared machine single runs move by +-20 %, same-run ratios by a few %.
# Builds are cached per commit and compiler under BASE_DIR (ignored by git).
BASE=${BASE:-}
BASE_DIR=$ROOT/target/bench-base
WSLOOP_BASE_BIN=
BASE_SHA=

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# scrape_metric PORT NAME: the value of NAME at wsloop's metrics endpoint
# 127.0.0.1:PORT (nothing printed when absent)
scrape_metric() {
    python3 - "$1" "$2" <<'PY'
import sys, urllib.request
port, name = sys.argv[1], sys.argv[2]
body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read().decode()
for line in body.splitlines():
    if line.startswith(name + " ") or line.startswith(name + "{"):
        print(int(float(line.split()[-1]))); break
PY
}

# make_cert DIR: a throwaway self-signed certificate for localhost, valid one day:
# DIR/cert.pem and DIR/key.pem
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
}

# callgrind_total FILE: the instructions a callgrind dump counted in all
callgrind_total() {
    callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(/,/, "", $1); print $1; done = 1 }'
}

# build_all: builds wsloop (repo root), the kit, and gorilla if possible;
# takes uws if its binary is there (it is never built here).
# Sets AVAILABLE to the servers that can actually be run.
build_all() {
    local want s
    want=$(servers_wanted)
    AVAILABLE=""
    log "building benches/kit (release)"
    (cd "$KIT" && cargo build --release --locked 2>&1 | tail -n 3) >&2 || { log "kit build failed"; exit 1; }
    for s in $want; do
        case $s in
        wsloop)
            log "building wsloop (release) at the repo root"
            if (cd "$ROOT" && cargo build --release 2>&1 | tail -n 3) >&2 && [ -x "$WSLOOP_BIN" ]; then
                AVAILABLE="$AVAILABLE wsloop"
            else
                log "SKIP wsloop: release build failed"
            fi
            ;;
        wsloop-base)
            if [ -z "$BASE" ]; then
                log "SKIP wsloop-base: set BASE=<commit> to say which commit to build"
            elif build_base; then
                AVAILABLE="$AVAILABLE wsloop-base"
            else
                # asked for a comparison: a run without its base would be no use
                log "BASE=$BASE: wsloop could not be built at that commit; stopping"
                exit 1
            fi
            ;;
        rawecho | tokio) AVAILABLE="$AVAILABLE $s" ;;
        gorilla)
            if build_gorilla; then AVAILABLE="$AVAILABLE gorilla"; fi
            ;;
        uws)
            if [ -x "$UWS_BIN" ]; then
                AVAILABLE="$AVAILABLE uws"
            else
                log "SKIP uws: no $UWS_BIN (optional; build it from uWebSockets' source, see 'uWebSockets C++ (optional)' in BENCHMARKS.md, or set UWS_BIN)"
            fi
            ;;
        *) log "unknown server $s (known: wsloop wsloop-base rawecho tokio gorilla uws)" ;;
        esac
    done
    AVAILABLE=${AVAILABLE# }
}

# servers_wanted: SERVERS, with wsloop-base right after wsloop when BASE is
# set (wsloop added in front when SERVERS lacks it), so that the two always
# run back to back under the same conditions.
servers_wanted() {
    local list=$SERVERS out="" s
    if [ -z "$BASE" ]; then
        echo "$SERVERS"
        return
    fi
    case " $list " in *" wsloop "*) ;; *) list="wsloop $list" ;; esac
    for s in $list; do
        [ "$s" = wsloop-base ] && continue
        out="$out $s"
        [ "$s" = wsloop ] && out="$out wsloop-base"
    done
    echo "${out# }"
}

# build_base: wsloop at commit $BASE, built like the current one (cargo build
# --release) in a temporary git worktree under BASE_DIR with its own target
# directory (so neither build invalidates the other), then copied to
# BASE_DIR/wsloop-<commit>-rustc-<compiler> and reused by later runs. The
# worktree and its registration are removed again whatever happens.
# Sets WSLOOP_BASE_BIN and BASE_SHA.
build_base() {
    local sha rv bin wt
    if ! sha=$(git -C "$ROOT" rev-parse --verify --quiet "$BASE^{commit}"); then
        log "BASE=$BASE is not a commit of this repository"
        return 1
    fi
    rv=$(cd "$ROOT" && rustc -vV | awk '/^commit-hash:/ { print substr($2, 1, 9) }')
    bin=$BASE_DIR/wsloop-${sha:0:12}-rustc-${rv:-unknown}
    BASE_SHA=$sha
    if [ -x "$bin" ]; then
        log "wsloop-base: reusing $bin (built before)"
        WSLOOP_BASE_BIN=$bin
        return 0
    fi
    mkdir -p "$BASE_DIR"
    wt=$BASE_DIR/src-${sha:0:12}
    log "building wsloop-base (release) at ${sha:0:12} in a temporary worktree $wt"
    # every step checked by hand: set -e does not act inside a subshell
    # whose status is tested, and a failed build must never pass off an
    # older binary left in the shared target directory as this commit's
    (
        set -o pipefail
        # one base build at a time (two runs started together would share the worktree path)
        exec 9>"$BASE_DIR/lock" || exit 1
        flock 9 || exit 1
        [ -x "$bin" ] && exit 0 # built by the run we waited for
        trap 'git -C "$ROOT" worktree remove --force "$wt" >/dev/null 2>&1 || true; rm -rf "$wt"' EXIT
        # a leftover of an interrupted build (only ours: this exact path)
        git -C "$ROOT" worktree remove --force "$wt" >/dev/null 2>&1 || true
        rm -rf "$wt"
        git -C "$ROOT" worktree add --detach --quiet "$wt" "$sha" || exit 1
        cd "$wt" || exit 1
        CARGO_TARGET_DIR=$BASE_DIR/target cargo build --release 2>&1 | tail -n 3 || exit 1
        cp "$BASE_DIR/target/release/wsloop" "$bin.tmp" || exit 1
        mv "$bin.tmp" "$bin" || exit 1
    ) >&2 || return 1
    WSLOOP_BASE_BIN=$bin
}

# describe_wsloop: commit of the current tree (and whether src is modified),
# and of the base; for the header of the results
describe_wsloop() {
    echo "# wsloop: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'no commit') $(cd "$ROOT" && git status --porcelain src Cargo.toml Cargo.lock 2>/dev/null | grep -q . && echo '(dirty tree)')"
    if [ -n "$BASE_SHA" ]; then
        echo "# wsloop-base: ${BASE_SHA:0:12} (BASE=$BASE), binary $WSLOOP_BASE_BIN"
        # same source and compiler give the same bytes: then the comparison
        # is an A/A run and its ratios are the noise of the method
        if cmp -s "$WSLOOP_BIN" "$WSLOOP_BASE_BIN"; then
            echo "# wsloop-base binary is byte-identical to wsloop's: an A/A run, the ratios show the noise"
        fi
    fi
}

build_gorilla() {
    local gopath=/usr/share/gocode
    if ! command -v go >/dev/null || [ ! -d $gopath/src/github.com/gorilla/websocket ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            log "installing golang-go and golang-github-gorilla-websocket-dev with apt-get"
            (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                golang-go golang-github-gorilla-websocket-dev) >/dev/null 2>&1 || true
        fi
    fi
    if ! command -v go >/dev/null || [ ! -d $gopath/src/github.com/gorilla/websocket ]; then
        log "SKIP gorilla: needs Debian's golang-go and golang-github-gorilla-websocket-dev (apt-get failed or not root)"
        return 1
    fi
    mkdir -p "$KIT/target"
    if ! (cd "$BENCH_DIR/gorilla" && GOPATH=$gopath GO111MODULE=off GOFLAGS= GOCACHE="$KIT/target/gocache" \
        go build -o "$GORILLA_BIN" echo.go) >&2; then
        log "SKIP gorilla: go build failed"
        return 1
    fi
    return 0
}

server_port() {
    case $1 in
    wsloop) echo $((BASE_PORT + 1)) ;;
    rawecho) echo $((BASE_PORT + 2)) ;;
    tokio) echo $((BASE_PORT + 3)) ;;
    gorilla) echo $((BASE_PORT + 4)) ;;
    wsloop-base) echo $((BASE_PORT + 5)) ;;
    uws) echo $((BASE_PORT + 6)) ;;
    esac
}

# start_server NAME LOGFILE [extra wsloop args...]: sets SERVER_PID and URL.
start_server() {
    local name=$1 logf=$2
    shift 2
    local port
    port=$(server_port "$name")
    local addr=127.0.0.1:$port
    case $name in
    wsloop) "${RUNPRE[@]}" taskset -c "$SERVER_CPU" "$WSLOOP_BIN" --listen "$addr" $WSLOOP_ARGS "$@" 2>"$logf" >/dev/null & ;;
    wsloop-base) "${RUNPRE[@]}" taskset -c "$SERVER_CPU" "$WSLOOP_BASE_BIN" --listen "$addr" $WSLOOP_ARGS "$@" 2>"$logf" >/dev/null & ;;
    rawecho) "${RUNPRE[@]}" taskset -c "$SERVER_CPU" "$BIN/rawecho" --listen "$addr" 2>"$logf" >/dev/null & ;;
    tokio) "${RUNPRE[@]}" taskset -c "$SERVER_CPU" "$BIN/tokio-echo" --listen "$addr" 2>"$logf" >/dev/null & ;;
    gorilla) env GOMAXPROCS=1 "${RUNPRE[@]}" taskset -c "$SERVER_CPU" "$GORILLA_BIN" --listen "$addr" 2>"$logf" >/dev/null & ;;
    uws) "${RUNPRE[@]}" taskset -c "$SERVER_CPU" "$UWS_BIN" --listen "$addr" 2>"$logf" >/dev/null & ;;
    esac
    SERVER_PID=$!
    URL=ws://$addr/ws
    local i
    for i in $(seq 1 100); do
        if grep -q "listening on" "$logf" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "$name exited at startup: $(tail -n 3 "$logf")"
            SERVER_PID=
            return 1
        fi
        sleep 0.1
    done
    log "$name did not print 'listening on' within 10 s"
    stop_server
    return 1
}

stop_server() {
    if [ -n "${SERVER_PID:-}" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

# cpu ticks (utime+stime) of a whole process (all threads)
proc_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
pss_kb() { awk '/^Pss:/ { print $2; exit }' "/proc/$1/smaps_rollup"; }
# voluntary context switches summed over all threads
vctx() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches:/ { s += $2 } END { print s + 0 }'; }
nthreads() { awk '/^Threads:/ { print $2 }' "/proc/$1/status"; }

# extract key=value from a RESULT/READY line
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }

# machine_busy_pct SECS: busy CPU of the whole machine (percent of one core)
machine_busy_pct() {
    local a b
    a=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6; exit }' /proc/stat)
    sleep "$1"
    b=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6; exit }' /proc/stat)
    awk -v a="$a" -v b="$b" -v s="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / hz / s }'
}

# warn_if_busy: report what else is running before measuring
warn_if_busy() {
    local busy
    busy=$(machine_busy_pct 2)
    if [ "$busy" -gt 20 ]; then
        log "WARNING: the machine is already ${busy}% busy (percent of one core) before the benchmark:"
        ps -eo pid,ni,pcpu,comm --sort=-pcpu | head -n 4 >&2
        log "results will be disturbed; PRIO=rt shields the measurement (see BENCHMARKS.md)"
    fi
    echo "$busy"
}

# wait_ready OUTFILE... : wait (max 300 s) until every file has a READY line;
# gives up early when a process listed in READY_PIDS exited without one
READY_PIDS=()
wait_ready() {
    local t f ok p
    for t in $(seq 1 3000); do
        ok=1
        for f in "$@"; do grep -q '^READY' "$f" 2>/dev/null || ok=0; done
        [ $ok = 1 ] && return 0
        for p in "${READY_PIDS[@]}"; do
            if ! kill -0 "$p" 2>/dev/null; then
                for f in "$@"; do grep -q '^READY' "$f" 2>/dev/null || { log "a load generator exited before READY"; return 1; }; done
            fi
        done
        sleep 0.1
    done
    return 1
}
