#!/usr/bin/env bash
# A quick look at one server binary under one echo load, for trying variants
# of a change side by side: page faults and the syscalls that matter per 2 s
# (perf stat on software events, which work on this VM) and loadgen's msgs/s,
# p99 and server CPU per message. Pinned and under SCHED_FIFO like
# `PRIO=rt benches/run.sh`; one 5 s run, so run the variants alternately.
#
#   benches/pagefaults.sh BIN PORT SIZE CONNECTIONS INFLIGHT
#   benches/pagefaults.sh target/release/wsloop 19501 1048576 8 2
set -u
BIN=$1; PORT=$2
chrt -f 10 taskset -c 1 $BIN --listen 127.0.0.1:$PORT 2>"${TMPDIR:-/tmp}/pagefaults.$PORT.log" >/dev/null &
SP=$!
sleep 0.5
chrt -f 10 taskset -c 0 "$(dirname "$0")/kit/target/release/loadgen" echo --url ws://127.0.0.1:$PORT/ws --connections $4 --inflight $5 --size $3 --duration 5 --warmup 1 --server-pid $SP --quiet > "${TMPDIR:-/tmp}/pagefaults.$PORT.out" 2>&1 &
LP=$!
sleep 2
perf stat -e 'page-faults,syscalls:sys_enter_mmap,syscalls:sys_enter_munmap,syscalls:sys_enter_brk,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_madvise' -p $SP -- sleep 2 2>&1 | grep -E "^ +[0-9,]+" 
wait $LP
kill $SP
grep RESULT "${TMPDIR:-/tmp}/pagefaults.$PORT.out" | tr ' ' '\n' | grep -E "^(msgs_per_s|server_cpu_us_per_msg|p99_us)="
