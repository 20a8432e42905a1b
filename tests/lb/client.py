#!/usr/bin/env python3
"""WebSocket checks through a load balancer in front of wsloop (used by tests/lb/run.sh).

Usage: client.py NAME HOST:PORT CONNS HOLD_SECONDS

Against ws://HOST:PORT/ws (the proxy), with the Python `websockets` client:
  http-426      a plain GET /ws (no Upgrade) is answered 426 by wsloop through the proxy
  http-404      a GET of another path is answered 404
  origin-403    a handshake whose Origin differs from Host is refused with 403 (the proxy
                passes Host through, so wsloop's same-origin check still works)
  open          CONNS connections opened at once, each with Origin http://HOST:PORT
                (accepted only if the proxy kept the client's Host, port included)
  echo          each echoes a text and a binary message of its own
  idle-hold     all stay open and idle for HOLD_SECONDS (run.sh makes that longer than
                the backends' --idle-timeout): wsloop's pings and the client's pongs must
                cross the proxy, and the proxy must not cut idle WebSockets
  echo-after    each echoes again after the idle period
  close         each closes cleanly (1000 both ways)

Prints `PASS name: detail` / `FAIL name: detail` lines and exits 0 only if all passed.
"""

import asyncio
import os
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

STEP_TIMEOUT = 20.0

results = []


def report(name, ok, detail):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {NAME} {name}: {detail}", flush=True)


async def http_status(host, port, path):
    """Status code of a plain HTTP/1.1 GET (no Upgrade)."""
    async with asyncio.timeout(STEP_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            line = await reader.readline()
            return int(line.split()[1])
        finally:
            writer.close()


def client(url, origin):
    # No client-side pings: only wsloop's pings may keep the connections alive.
    return connect(
        url,
        origin=origin,
        proxy=None,
        open_timeout=10,
        close_timeout=5,
        ping_interval=None,
    )


async def echo(ws, i, round_):
    text = f"lb {NAME} conn {i} round {round_} " + "x" * (i * 7 % 300)
    data = os.urandom(16 + i) + bytes([round_])
    await ws.send(text)
    got_text = await ws.recv()
    await ws.send(data)
    got_data = await ws.recv()
    if got_text != text or got_data != data:
        raise AssertionError(f"conn {i}: echo differs")


async def main():
    host, port = ADDR.rsplit(":", 1)
    port = int(port)
    url = f"ws://{host}:{port}/ws"
    origin = f"http://{host}:{port}"

    for name, path, want in (("http-426", "/ws", 426), ("http-404", "/lb-not-here", 404)):
        try:
            got = await http_status(host, port, path)
            report(name, got == want, f"GET {path} -> {got} (want {want})")
        except Exception as e:  # noqa: BLE001
            report(name, False, f"GET {path}: {type(e).__name__}: {e}")

    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            async with client(url, "http://elsewhere.example"):
                pass
        report("origin-403", False, "handshake with a foreign Origin was accepted")
    except InvalidStatus as e:
        code = e.response.status_code
        report("origin-403", code == 403, f"foreign Origin -> {code} (want 403)")
    except Exception as e:  # noqa: BLE001
        report("origin-403", False, f"{type(e).__name__}: {e}")

    t0 = time.monotonic()
    opened = await asyncio.gather(
        *(client(url, origin).__aenter__() for _ in range(CONNS)), return_exceptions=True
    )
    conns = [c for c in opened if not isinstance(c, BaseException)]
    errors = [c for c in opened if isinstance(c, BaseException)]
    detail = f"{len(conns)}/{CONNS} opened in {time.monotonic() - t0:.2f}s"
    if errors:
        detail += f"; first error: {type(errors[0]).__name__}: {errors[0]}"
    report("open", not errors, detail)
    if not conns:
        return

    async def round_all(name, round_):
        async with asyncio.timeout(STEP_TIMEOUT):
            res = await asyncio.gather(
                *(echo(ws, i, round_) for i, ws in enumerate(conns)), return_exceptions=True
            )
        bad = [r for r in res if isinstance(r, BaseException)]
        detail = f"{len(conns) - len(bad)}/{len(conns)} echoed text+binary"
        if bad:
            detail += f"; first error: {type(bad[0]).__name__}: {bad[0]}"
        report(name, not bad, detail)

    await round_all("echo", 1)

    await asyncio.sleep(HOLD)
    still = sum(1 for ws in conns if ws.state.name == "OPEN")
    report("idle-hold", still == len(conns), f"{still}/{len(conns)} still open after {HOLD:g}s idle")
    await round_all("echo-after", 2)

    async with asyncio.timeout(STEP_TIMEOUT):
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)
    clean = sum(
        1 for ws in conns
        if ws.protocol.close_sent is not None and ws.protocol.close_sent.code == 1000
        and ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
    )
    report("close", clean == len(conns), f"{clean}/{len(conns)} closed with 1000 both ways")


if __name__ == "__main__":
    NAME, ADDR, CONNS, HOLD = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001
        report("client", False, f"{type(e).__name__}: {e}")
    passed = sum(results)
    print(f"client {NAME}: {passed}/{len(results)} checks passed", flush=True)
    sys.exit(0 if results and all(results) else 1)
