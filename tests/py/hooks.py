#!/usr/bin/env python3
"""Heartbeat hooks seen from Python's `websockets` (asyncio API).

Usage: hooks.py ws://HOST:PORT/PATH

tests/hooks.rs runs this against a server in its own process whose handler records
every Ping and Pong it receives (on_ping, on_pong), skips the automatic Pong for pings
whose payload starts with `skip`, answers a text `ping-me X` with a Ping of payload X,
and answers each Pong with a text `pong-seen X`. The Rust side then checks what the
handler saw.

Prints one line per check, `PASS name: detail` or `FAIL name: error`, then a closing
`python-hooks: N passed, N failed` line. Exit status 0 only if every check passed.
"""

import asyncio
import sys

import websockets
from websockets.asyncio.client import connect

import runner

CHECK_TIMEOUT = 30.0


async def recv_data(ws, timeout=10.0):
    async with asyncio.timeout(timeout):
        return await ws.recv()


async def check_auto_pong(ws):
    # websockets' ping() returns a waiter that our Pong resolves; the handler's
    # on_ping saw the payload first and let the automatic Pong go out.
    waiter = await ws.ping(b"py-ping")
    async with asyncio.timeout(10):
        latency = await waiter
    return f"ping(b'py-ping') answered in {latency * 1000:.2f} ms"


async def check_server_ping(ws):
    # The handler sends a Ping with our payload; websockets answers it with a Pong
    # by itself, and the handler's on_pong reports the payload it got.
    await ws.send("ping-me py-ts-7")
    got = await recv_data(ws)
    assert got == "pong-seen py-ts-7", f"got {got!r}"
    return "server Ping b'py-ts-7' answered by websockets, seen by on_pong"


async def check_skip(ws):
    # AutoPong::Skip: no Pong. Ordering makes this certain without waiting: a Pong
    # would have been sent before the echo of the text sent after the ping, and
    # websockets handles frames in order.
    waiter = await ws.ping(b"skip-py")
    await ws.send("after skip")
    got = await recv_data(ws)
    assert got == "after skip", f"got {got!r}"
    assert not waiter.done(), "a Pong came although the handler skipped it"
    return "no Pong for ping(b'skip-py'); the echo sent after it arrived"


CHECKS = [
    ("auto-pong", check_auto_pong),
    ("server-ping", check_server_ping),
    # Last: a later Pong would resolve this ping's waiter too.
    ("skip", check_skip),
]


async def main(url):
    print(f"websockets {websockets.__version__}, url {url}", flush=True)
    # No keepalive pings of websockets' own: every ping here is a check's.
    async with connect(url, ping_interval=None, proxy=None, open_timeout=10) as ws:
        return await runner.run("python-hooks", CHECKS, lambda check: check(ws), CHECK_TIMEOUT)

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(asyncio.run(main(sys.argv[1])))
