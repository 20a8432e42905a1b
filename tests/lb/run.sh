#!/usr/bin/env bash
# WebSocket load balancing through contrib/haproxy.cfg and contrib/nginx.conf.
#
#   bash tests/lb/run.sh            (as root: it may apt-get install haproxy and nginx)
#
# 1. installs Debian's haproxy and nginx-light (or nginx) if missing, a Python venv
#    with `websockets` under target/lbvenv, and builds target/release/wsloop if missing;
# 2. starts two wsloop backends on free loopback ports (--log-level debug, and a short
#    --ping-interval/--idle-timeout so that keepalive through the proxy is exercised);
# 3. generates configs from the contrib/ files with only the addresses (and, for nginx,
#    pid/log/temp paths) substituted, checks them (haproxy -c, nginx -t), and starts
#    haproxy and nginx in the foreground on free loopback ports;
# 4. for each proxy runs tests/lb/client.py (LB_CONNS connections held open at once,
#    echo, idle hold past --idle-timeout, echo again, clean close; plain HTTP 426/404;
#    /healthz and /readyz on each backend (--ws-probes), HAProxy checking /readyz;
#    Origin/Host check) and checks in the backends' logs that both received connections
#    (and, for haproxy, its health checks);
#    then a third backend with --proxy-from behind haproxy with send-proxy-v2: wsloop
#    must see the client's own address (127.0.0.2);
# 5. validates contrib/wsloop@.service with systemd-analyze verify when available;
# 6. stops everything it started, by PID (also on failure or interrupt), and checks that
#    the backends exit 0 on SIGTERM.
# Logs and generated configs stay in target/lb/. Network: 127.0.0.1 only.
# Ends with `lb: N passed, N failed`; exit status 0 only if every check passed.
#
# Environment: LB_CONNS (default 40), LB_HOLD seconds idle (default 3.5, must exceed the
# backends' idle timeout of 2s), WSLOOP (default target/release/wsloop).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

CONNS="${LB_CONNS:-40}"
HOLD="${LB_HOLD:-3.5}"
WSLOOP="${WSLOOP:-$ROOT/target/release/wsloop}"
OUT="$ROOT/target/lb"
VENV="$ROOT/target/lbvenv"
WEBSOCKETS_VERSION="17.4"   # the pin tests/python_client.rs uses
CLIENT_CHECKS=8             # PASS lines tests/lb/client.py prints when all is well
# Backends: pings after 1 s of silence, closes after 2 s; the client holds longer.
BACKEND_ARGS=(--log-level debug --ping-interval 1s --idle-timeout 2s --ws-probes)
T0=$SECONDS

say() { echo "lb: [$((SECONDS - T0))s] $*"; }
die() {
    echo "lb: FAILED: $*" >&2
    exit 1
}

PASSED=0
FAILED=0
FAILURES=()
# check NAME OK DETAIL: records one result (OK is 0 for pass, anything else for fail).
check() {
    if [ "$2" = 0 ]; then
        PASSED=$((PASSED + 1))
        echo "PASS $1: $3"
    else
        FAILED=$((FAILED + 1))
        FAILURES+=("$1")
        echo "FAIL $1: $3"
    fi
}

# --- cleanup: everything this script started, by PID ----------------------------------
PIDS=()
TMPD=""
POLICY_RC_D=""
stop_pid() {  # stop_pid PID SIGNAL: signal, wait up to 10 s, then SIGKILL
    local pid="$1" sig="$2"
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    echo "lb: pid $pid ignored SIG$sig for 10 s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}" TERM; done
    for i in "${PIDS[@]}"; do wait "$i" 2>/dev/null || true; done
    [ -n "$POLICY_RC_D" ] && rm -f "$POLICY_RC_D"
    [ -n "$TMPD" ] && rm -rf "$TMPD"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_port PORT PID WHAT LOG: until 127.0.0.1:PORT accepts (10 s at most).
wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$4" >&2; die "$3 exited at start"; }
        sleep 0.1
    done
    tail -n 20 "$4" >&2
    die "$3 is not listening on 127.0.0.1:$1 after 10 s"
}

free_ports() {  # free_ports N: N loopback TCP ports free right now
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# --- 1. tools -------------------------------------------------------------------------
say "tools"
rm -rf "$OUT"
mkdir -p "$OUT"
TMPD="$(mktemp -d /tmp/wsloop-lb.XXXXXX)"
chmod 755 "$TMPD"   # nginx's workers (www-data) use temp dirs below it

apt_install() {  # apt_install PKG...: with `apt-get update` first if the lists lack them
    local p need_update=0
    for p in "$@"; do
        apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]' || need_update=1
    done
    if [ "$need_update" = 1 ]; then
        say "apt-get update"
        timeout 300 apt-get update -q || die "apt-get update failed"
    fi
    # Keep the packages' maintainer scripts from starting system services (nginx on :80):
    # the standard policy-rc.d mechanism, only if the machine has none, removed at once.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        POLICY_RC_D=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# tests/lb/run.sh: no service starts during its install\nexit 101\n' \
            > "$POLICY_RC_D"
        chmod 755 "$POLICY_RC_D"
    fi
    say "apt-get install $*"
    local rc=0
    timeout 600 apt-get install -y -q --no-install-recommends "$@" || rc=$?
    if [ "$rc" != 0 ] && [ "$need_update" = 0 ]; then
        say "apt-get install failed ($rc): apt-get update and retry"
        timeout 300 apt-get update -q || die "apt-get update failed"
        rc=0
        timeout 600 apt-get install -y -q --no-install-recommends "$@" || rc=$?
    fi
    if [ -n "$POLICY_RC_D" ]; then rm -f "$POLICY_RC_D"; POLICY_RC_D=""; fi
    [ "$rc" = 0 ] || die "apt-get install -y $* failed (exit $rc)"
}

need=()
command -v haproxy >/dev/null || need+=(haproxy)
if ! command -v nginx >/dev/null; then
    # nginx-light is the smallest build with what contrib/nginx.conf uses (map,
    # upstream least_conn/zone, proxy); later Debian releases only have `nginx`.
    if apt-cache policy nginx-light 2>/dev/null | grep -q 'Candidate: [0-9]' ||
        ! apt-cache policy nginx 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        need+=(nginx-light)
    else
        need+=(nginx)
    fi
fi
if [ "${#need[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "${need[*]} missing and not root: apt-get install ${need[*]}"
    apt_install "${need[@]}"
    # nginx-light may be gone from newer lists: fall back to nginx.
    command -v nginx >/dev/null || apt_install nginx
fi
command -v haproxy >/dev/null || die "haproxy not found after install"
command -v nginx >/dev/null || die "nginx not found after install"
echo "haproxy: $(haproxy -v | head -n 1)"
echo "nginx:   $(nginx -v 2>&1)"

command -v python3 >/dev/null || apt_install python3 python3-venv
if ! "$VENV/bin/python" -c "import sys, websockets.version as v; sys.exit(v.version != '$WEBSOCKETS_VERSION')" \
    2>/dev/null; then
    say "creating $VENV with websockets==$WEBSOCKETS_VERSION"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    fi
    timeout 300 "$VENV/bin/pip" install -q --disable-pip-version-check \
        "websockets==$WEBSOCKETS_VERSION" || die "pip install websockets==$WEBSOCKETS_VERSION failed"
fi
echo "python:  $("$VENV/bin/python" --version), websockets $WEBSOCKETS_VERSION ($VENV)"

if [ ! -x "$WSLOOP" ]; then
    say "$WSLOOP missing: cargo build --release"
    cargo build --release || die "cargo build --release failed"
fi
echo "wsloop:  $WSLOOP ($("$WSLOOP" --version))"

# --- 2. backends ----------------------------------------------------------------------
say "backends"
BACKEND_PIDS=()
BACKEND_PORTS=()
for n in 1 2; do
    log="$OUT/wsloop$n.log"
    "$WSLOOP" --listen 127.0.0.1:0 "${BACKEND_ARGS[@]}" </dev/null >"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    BACKEND_PIDS+=("$pid")
    url=""
    for _ in $(seq 100); do
        url="$(grep -o -m1 'listening on ws://[^ ]*' "$log" | sed 's/^listening on //' || true)"
        [ -n "$url" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "wsloop $n exited at start"; }
        sleep 0.1
    done
    [ -n "$url" ] || { cat "$log" >&2; die "wsloop $n did not report its address in 10 s"; }
    port="${url#ws://127.0.0.1:}"
    port="${port%%/*}"
    BACKEND_PORTS+=("$port")
    echo "wsloop $n: pid $pid, $url ($log)"
done
P1="${BACKEND_PORTS[0]}"
P2="${BACKEND_PORTS[1]}"

# probe PORT PATH: the status line of wsloop's answer to GET PATH (bash's /dev/tcp).
probe() {
    local line
    exec 7<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: lb-test\r\n\r\n' "$2" >&7
    IFS= read -r -t 5 line <&7 || true
    exec 7<&- 7>&-
    echo "${line%$'\r'}"
}
for n in 1 2; do
    port="${BACKEND_PORTS[n - 1]}"
    for path in /healthz /readyz; do
        got="$(probe "$port" "$path")"
        ok=1
        [ "$got" = "HTTP/1.1 200 OK" ] && ok=0
        check "wsloop$n-probe${path//\//-}" "$ok" "GET $path on 127.0.0.1:$port (--ws-probes): $got"
    done
done

# count_in LOG PATTERN: lines of LOG with PATTERN (fixed string).
count_in() { grep -c -F -- "$2" "$1" || true; }
opens() { count_in "$OUT/wsloop$1.log" ": open /ws subprotocol="; }

# --- 3. proxies -----------------------------------------------------------------------
read -r HP NP <<<"$(free_ports 2)"

# haproxy: backends and bind address substituted, nothing else.
sed -e "s/127\.0\.0\.1:9001/127.0.0.1:$P1/" \
    -e "s/127\.0\.0\.1:9002/127.0.0.1:$P2/" \
    -e "s/^\([[:space:]]*bind\) :80\$/\1 127.0.0.1:$HP/" \
    contrib/haproxy.cfg >"$OUT/haproxy.cfg"
for want in "bind 127.0.0.1:$HP" "server ws1 127.0.0.1:$P1 check" "server ws2 127.0.0.1:$P2 check"; do
    grep -q -F "$want" "$OUT/haproxy.cfg" ||
        die "contrib/haproxy.cfg changed shape: no '$want' after substitution (fix tests/lb/run.sh)"
done

# nginx: backends, listen address, pid/log/temp paths substituted.
mkdir -p "$OUT/nginx"
sed -e "s/127\.0\.0\.1:9001/127.0.0.1:$P1/" \
    -e "s/127\.0\.0\.1:9002/127.0.0.1:$P2/" \
    -e "s/^\([[:space:]]*listen\) 80;/\1 127.0.0.1:$NP;/" \
    -e "/^[[:space:]]*listen \[::\]:80;/d" \
    -e "s|^pid .*;|pid $OUT/nginx/nginx.pid;|" \
    -e "s|^error_log [^ ;]*|error_log $OUT/nginx/error.log|" \
    -e "s|^\([[:space:]]*access_log\) [^ ;]*|\1 $OUT/nginx/access.log|" \
    -e "/^http {/a\\
    client_body_temp_path $TMPD/body;\\
    proxy_temp_path $TMPD/proxy;\\
    fastcgi_temp_path $TMPD/fastcgi;\\
    uwsgi_temp_path $TMPD/uwsgi;\\
    scgi_temp_path $TMPD/scgi;" \
    contrib/nginx.conf >"$OUT/nginx.conf"
for want in "listen 127.0.0.1:$NP;" "server 127.0.0.1:$P1 " "server 127.0.0.1:$P2 " \
    "pid $OUT/nginx/nginx.pid;" "proxy_temp_path $TMPD/proxy;"; do
    grep -q -F -- "$want" "$OUT/nginx.conf" ||
        die "contrib/nginx.conf changed shape: no '$want' after substitution (fix tests/lb/run.sh)"
done
if grep -n -E ':80;|/var/log|/run/' "$OUT/nginx.conf" | grep -v '^[0-9]*:[[:space:]]*#'; then
    die "system paths or :80 left in the generated nginx.conf (fix tests/lb/run.sh)"
fi

say "haproxy -c; nginx -t"
rc=0
out="$(haproxy -c -f "$OUT/haproxy.cfg" 2>&1)" || rc=$?
check "haproxy-config" "$rc" "haproxy -c -f (contrib/haproxy.cfg, ports substituted): exit $rc"
[ "$rc" = 0 ] || { echo "$out" >&2; die "haproxy rejects the config"; }
rc=0
out="$(nginx -t -e "$OUT/nginx/error.log" -c "$OUT/nginx.conf" 2>&1)" || rc=$?
check "nginx-config" "$rc" "nginx -t -c (contrib/nginx.conf, ports and paths substituted): exit $rc"
[ "$rc" = 0 ] || { echo "$out" >&2; die "nginx rejects the config"; }

say "starting haproxy on 127.0.0.1:$HP, nginx on 127.0.0.1:$NP"
haproxy -db -f "$OUT/haproxy.cfg" </dev/null >"$OUT/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
nginx -e "$OUT/nginx/error.log" -c "$OUT/nginx.conf" -g 'daemon off;' </dev/null \
    >"$OUT/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$HP" "$HAPROXY_PID" haproxy "$OUT/haproxy.log"
wait_port "$NP" "$NGINX_PID" nginx "$OUT/nginx/error.log"
# nginx's workers are the master's children: ours too, so stop them by PID if the
# master ever has to be killed (cleanup stops later entries first: workers, then master).
NGINX_WORKERS=()
for _ in $(seq 50); do
    mapfile -t NGINX_WORKERS < <(pgrep -P "$NGINX_PID" || true)
    [ "${#NGINX_WORKERS[@]}" -gt 0 ] && break
    sleep 0.1
done
echo "haproxy: pid $HAPROXY_PID; nginx: master pid $NGINX_PID, workers ${NGINX_WORKERS[*]:-none}"

# haproxy's health checks (GET /readyz, expect 200) must reach both backends.
hc=(0 0)
for _ in $(seq 100); do
    hc=("$(count_in "$OUT/wsloop1.log" "answered over HTTP with 200")"
        "$(count_in "$OUT/wsloop2.log" "answered over HTTP with 200")")
    [ "${hc[0]}" -gt 0 ] && [ "${hc[1]}" -gt 0 ] && break
    sleep 0.1
done
ok=1
[ "${hc[0]}" -gt 0 ] && [ "${hc[1]}" -gt 0 ] && ok=0
check "haproxy-health-check" "$ok" "200 answers to /readyz health checks: wsloop1 ${hc[0]}, wsloop2 ${hc[1]}"
if grep -q -E 'is DOWN|no server available' "$OUT/haproxy.log"; then
    check "haproxy-servers-up" 1 "$(grep -m1 -E 'is DOWN|no server available' "$OUT/haproxy.log")"
else
    check "haproxy-servers-up" 0 "no server marked DOWN"
fi

# --- 4. WebSockets through each proxy -------------------------------------------------
SUMMARY=()
for proxy in haproxy nginx; do
    if [ "$proxy" = haproxy ]; then port="$HP"; else port="$NP"; fi
    say "$proxy: $CONNS WebSockets via ws://127.0.0.1:$port/ws"
    before=("$(opens 1)" "$(opens 2)")
    rc=0
    # In the background so that a signal to this script (trap: exit, cleanup) is handled
    # at once rather than after the client; cleanup stops it by PID.
    timeout 60 "$VENV/bin/python" tests/lb/client.py "$proxy" "127.0.0.1:$port" "$CONNS" "$HOLD" \
        </dev/null >"$OUT/client-$proxy.log" 2>&1 &
    PIDS+=("$!")
    wait "$!" || rc=$?
    cat "$OUT/client-$proxy.log"
    # Each PASS/FAIL line of the client is one check here too.
    cp=$(grep -c '^PASS ' "$OUT/client-$proxy.log" || true)
    cf=$(grep -c '^FAIL ' "$OUT/client-$proxy.log" || true)
    PASSED=$((PASSED + cp))
    FAILED=$((FAILED + cf))
    mapfile -t -O "${#FAILURES[@]}" FAILURES < <(grep '^FAIL ' "$OUT/client-$proxy.log" |
        sed -E 's/^FAIL ([^ ]+) ([^:]+):.*/\1-\2/')
    if [ "$rc" != 0 ] && [ "$cf" = 0 ]; then
        check "$proxy-client" 1 "tests/lb/client.py exit $rc without a FAIL line (124 = 60 s timeout)"
    elif [ "$cp" -lt "$CLIENT_CHECKS" ] && [ "$cf" = 0 ]; then
        check "$proxy-client" 1 "tests/lb/client.py reported $cp checks, expected $CLIENT_CHECKS"
    fi
    got=($(($(opens 1) - before[0])) $(($(opens 2) - before[1])))
    total=$((got[0] + got[1]))
    # leastconn with all connections open at once: close to half each; demand a quarter.
    min=$((CONNS / 4))
    [ "$min" -ge 1 ] || min=1
    ok=1
    [ "$total" = "$CONNS" ] && [ "${got[0]}" -ge "$min" ] && [ "${got[1]}" -ge "$min" ] && ok=0
    check "$proxy-spread" "$ok" \
        "backend opens: wsloop1 ${got[0]}, wsloop2 ${got[1]} (total $total of $CONNS, each >= $min)"
    SUMMARY+=("$proxy: client checks $cp passed, $cf failed; connections per backend ${got[0]}/${got[1]}")
    for pid in "${BACKEND_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "wsloop (pid $pid) died during the $proxy run"
    done
done
if grep -q -E '\[(alert|crit|emerg)\]' "$OUT/nginx/error.log"; then
    check "nginx-error-log" 1 "$(grep -m1 -E '\[(alert|crit|emerg)\]' "$OUT/nginx/error.log")"
else
    check "nginx-error-log" 0 "no alert/crit/emerg in $OUT/nginx/error.log"
fi

# --- 4b. the PROXY protocol through haproxy -------------------------------------------
# A third backend takes PROXY headers from haproxy (--proxy-from 127.0.0.1), behind the
# recipe with its send-proxy-v2 line uncommented. A client connecting from 127.0.0.2
# must be seen by wsloop as 127.0.0.2 (without the header it sees haproxy, 127.0.0.1),
# and haproxy's health checks, which carry the header too, must be answered.
say "PROXY protocol through haproxy"
PPLOG="$OUT/wsloop-pp.log"
"$WSLOOP" --listen 127.0.0.1:0 "${BACKEND_ARGS[@]}" --proxy-from 127.0.0.1 </dev/null >"$PPLOG" 2>&1 &
PP_PID=$!
PIDS+=("$PP_PID")
url=""
for _ in $(seq 100); do
    url="$(grep -o -m1 'listening on ws://[^ ]*' "$PPLOG" | sed 's/^listening on //' || true)"
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { cat "$PPLOG" >&2; die "the PROXY-protocol backend did not start"; }
PPP="${url#ws://127.0.0.1:}"
PPP="${PPP%%/*}"
read -r PPH <<<"$(free_ports 1)"
sed -e "s/127\.0\.0\.1:9001/127.0.0.1:$PPP/" \
    -e "/server ws2 /d" \
    -e "s/^\([[:space:]]*bind\) :80\$/\1 127.0.0.1:$PPH/" \
    -e "s/^\([[:space:]]*\)#\(default-server send-proxy-v2.*\)/\1\2/" \
    contrib/haproxy.cfg >"$OUT/haproxy-pp.cfg"
grep -q -E "^[[:space:]]*default-server send-proxy-v2 check-send-proxy" "$OUT/haproxy-pp.cfg" ||
    die "contrib/haproxy.cfg changed shape: no send-proxy-v2 line to uncomment (fix tests/lb/run.sh)"
haproxy -db -f "$OUT/haproxy-pp.cfg" </dev/null >"$OUT/haproxy-pp.log" 2>&1 &
HAPROXY_PP_PID=$!
PIDS+=("$HAPROXY_PP_PID")
wait_port "$PPH" "$HAPROXY_PP_PID" haproxy "$OUT/haproxy-pp.log"
rc=0
timeout 30 "$VENV/bin/python" - "$PPH" >"$OUT/client-pp.log" 2>&1 <<'PY' || rc=$?
import socket, sys
from websockets.sync.client import connect
port = int(sys.argv[1])
for i in range(3):
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))
    with connect(f"ws://127.0.0.1:{port}/ws", sock=s) as ws:
        ws.send(f"from 127.0.0.2, {i}")
        assert ws.recv(timeout=10) == f"from 127.0.0.2, {i}"
PY
[ "$rc" = 0 ] || cat "$OUT/client-pp.log"
check "pp-echo" "$rc" "3 echoes from 127.0.0.2 through haproxy with send-proxy-v2: exit $rc"
seen="$(count_in "$PPLOG" "PROXY header: client 127.0.0.2:")"
opened="$(grep -c -E '127\.0\.0\.2:[0-9]+: open /ws' "$PPLOG" || true)"
ok=1
[ "$seen" -ge 3 ] && [ "$opened" -ge 3 ] && ok=0
check "pp-client-address" "$ok" "wsloop saw the client 127.0.0.2: $seen headers, $opened opens"
hc=0
for _ in $(seq 50); do
    hc="$(count_in "$PPLOG" "answered over HTTP with 200")"
    [ "$hc" -gt 0 ] && break
    sleep 0.1
done
ok=1
[ "$hc" -gt 0 ] && ! grep -q -F "no valid PROXY header" "$PPLOG" && ok=0
check "pp-health-check" "$ok" "haproxy's /readyz checks, with a PROXY header, answered 200: $hc"
stop_pid "$HAPROXY_PP_PID" TERM
kill -TERM "$PP_PID"
rc=0
wait "$PP_PID" || rc=$?
check "wsloop-pp-sigterm" "$rc" "exit status on SIGTERM: $rc"

# --- 5. the systemd unit --------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
    # A copy whose ExecStart names the binary built here (verify wants it to exist).
    mkdir -p "$TMPD/unit"
    sed "s|/usr/local/bin/wsloop|$WSLOOP|" contrib/wsloop@.service >"$TMPD/unit/wsloop@.service"
    cp contrib/wsloop.socket "$TMPD/unit/"
    rc=0
    out="$(cd "$TMPD/unit" && timeout 30 systemd-analyze verify --man=no "$TMPD/unit/wsloop@0.service" "$TMPD/unit/wsloop.socket" 2>&1)" || rc=$?
    if [ -n "$out" ]; then
        echo "$out"
        [ "$rc" != 0 ] || rc=1   # any complaint fails, not only a non-zero exit
    fi
    check "systemd-unit" "$rc" "systemd-analyze verify wsloop@0.service wsloop.socket: exit $rc, $(echo -n "$out" | grep -c '' || true) lines of complaints"
else
    echo "SKIP systemd-unit: systemd-analyze not installed"
fi

# --- 6. stop: proxies first, then the backends (which must exit 0 on SIGTERM) ---------
say "stopping"
stop_pid "$HAPROXY_PID" TERM
stop_pid "$NGINX_PID" QUIT   # graceful: workers finish, then the master exits
for pid in "${NGINX_WORKERS[@]}"; do stop_pid "$pid" TERM; done
for n in 0 1; do
    pid="${BACKEND_PIDS[n]}"
    kill -TERM "$pid"
    rc=0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        rc=timeout
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    check "wsloop$((n + 1))-sigterm" "$rc" "exit status on SIGTERM: $rc"
done
left=()
for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
check "cleanup" "${#left[@]}" "processes left running: ${left[*]:-none}"

echo
for s in "${SUMMARY[@]}"; do echo "lb: $s"; done
[ "$FAILED" = 0 ] || echo "lb: failed checks: ${FAILURES[*]} (logs in $OUT)"
echo "lb: total time $((SECONDS - T0))s"
echo "lb: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
