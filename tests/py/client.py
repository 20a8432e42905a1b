#!/usr/bin/env python3
"""Drive a running wsloop server with the Python `websockets` client (asyncio API).

Usage: client.py ws://HOST:PORT/PATH

The server must be started with `--subprotocol chat` and its default origin policy
(same origin as Host). tests/python_client.rs runs this script with the venv it
bootstraps under target/pyvenv (websockets pinned there).

Prints one line per check, `PASS name: detail` or `FAIL name: error`, then a closing
`python-websockets: N passed, N failed` line. Exit status 0 only if every check passed.
"""

import asyncio
import random
import sys
import time
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import runner

# Largest message we send is 1 MiB + 1; websockets' default max_size is exactly 1 MiB.
MAX_SIZE = 4 << 20
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20, (1 << 20) + 1]
CHECK_TIMEOUT = 60.0


def client(url, **kw):
    """connect() with the options every check uses: big enough max_size, no proxy
    from the environment (the server is on loopback)."""
    kw.setdefault("max_size", MAX_SIZE)
    kw.setdefault("proxy", None)
    kw.setdefault("open_timeout", 10)
    return connect(url, **kw)


async def recv_data(ws, timeout=20.0):
    """Next data message (websockets answers pings and hides pongs itself)."""
    async with asyncio.timeout(timeout):
        return await ws.recv()


def text_of(n):
    """A str of exactly n UTF-8 bytes mixing 1-, 2-, 3- and 4-byte characters,
    so many frame and read boundaries fall inside a character."""
    unit = "wsloop é ✓ 🚀 "  # 7 + 1 + 2 + 1 + 3 + 1 + 4 + 1 = 20 bytes
    s = unit * (n // 20)
    return s + "x" * (n - len(s.encode()))


def describe(data):
    kind = "text" if isinstance(data, str) else "binary"
    return f"{kind} {len(data.encode()) if isinstance(data, str) else len(data)} B"


async def check_text_echo(url):
    async with client(url) as ws:
        for n in SIZES:
            msg = text_of(n)
            assert len(msg.encode()) == n
            await ws.send(msg)
            got = await recv_data(ws)
            assert isinstance(got, str), f"size {n}: expected text back, got {describe(got)}"
            assert got == msg, f"size {n}: echo differs ({describe(got)})"
    return "sizes " + ",".join(map(str, SIZES)) + " bytes (multi-byte UTF-8 mixed in)"


async def check_binary_echo(url):
    rng = random.Random(6455)
    async with client(url) as ws:
        for n in SIZES:
            msg = rng.randbytes(n)
            await ws.send(msg)
            got = await recv_data(ws)
            assert isinstance(got, bytes), f"size {n}: expected binary back, got {describe(got)}"
            assert got == msg, f"size {n}: echo differs ({describe(got)})"
    return "sizes " + ",".join(map(str, SIZES)) + " bytes (random payloads)"


async def check_fragmented(url):
    async with client(url) as ws:
        # a list of str fragments: one text message in 4 frames
        parts = ["Hello, ", "frag", "mented ✓ ", "world 🚀"]
        await ws.send(parts)
        got = await recv_data(ws)
        assert got == "".join(parts), f"text fragments: got {got!r}"

        # UTF-8 characters split across fragments (bytes sent as text frames)
        whole = "café ✓ 🚀 done".encode()
        cuts = [4, 9, 12, 14]  # inside é, inside ✓, inside 🚀 (twice)
        frags = [whole[a:b] for a, b in zip([0] + cuts, cuts + [len(whole)])]
        await ws.send(frags, text=True)
        got = await recv_data(ws)
        assert got == whole.decode(), f"split UTF-8 fragments: got {got!r}"

        # an async iterator of binary fragments, 64 KiB + 3 bytes in uneven pieces
        rng = random.Random(7)
        chunks = [rng.randbytes(n) for n in (1, 1000, 0, 32768, 32768 - 1001, 3, 1)]

        async def gen():
            for c in chunks:
                await asyncio.sleep(0)  # let each fragment go out on its own
                yield c

        await ws.send(gen())
        got = await recv_data(ws)
        assert got == b"".join(chunks), f"binary fragments: got {describe(got)}"

        # the connection is still usable for a plain message afterwards
        await ws.send("after")
        assert await recv_data(ws) == "after"
    return (
        f"text in {len(parts)} frames, UTF-8 split across {len(frags)} frames, "
        f"binary async iterator in {len(chunks)} frames"
    )


async def check_ping_pong(url):
    async with client(url, ping_interval=None) as ws:
        latencies = []
        for payload in (b"", b"wsloop-ping", bytes(range(125))):
            waiter = await ws.ping(payload)
            async with asyncio.timeout(10):
                latencies.append(await waiter)
        # pings interleaved with data
        waiter = await ws.ping(b"between")
        await ws.send("data after ping")
        assert await recv_data(ws) == "data after ping"
        async with asyncio.timeout(10):
            await waiter
    return f"4 pings answered (0, 11, 125 B payloads), max {max(latencies) * 1000:.1f} ms"


async def check_close(url):
    reason = "python says bye ✓"
    ws = await client(url)
    await ws.send("before close")
    assert await recv_data(ws) == "before close"
    started = time.monotonic()
    async with asyncio.timeout(10):
        await ws.close(4000, reason)
    took = time.monotonic() - started
    assert ws.close_code == 4000, f"server closed with {ws.close_code}, expected 4000"
    assert ws.close_reason == reason, f"server close reason {ws.close_reason!r}"
    try:
        await ws.recv()
        raise AssertionError("recv() after close did not raise")
    except ConnectionClosed as e:
        # websockets raises ConnectionClosedOK only for 1000/1001: check the frames
        assert e.sent is not None and e.sent.code == 4000, f"sent {e.sent}"
        assert e.rcvd is not None, "no close frame received from the server"
        assert (e.rcvd.code, e.rcvd.reason) == (4000, reason), f"received {e.rcvd}"
        assert e.rcvd_then_sent is False, "the client closed first, so it sent first"
    assert took < 5, f"close handshake took {took:.1f} s"
    return f"code 4000 and reason {reason!r} echoed, clean closure in {took * 1000:.1f} ms"


async def check_subprotocol(url):
    async with client(url, subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "chat", f"negotiated {ws.subprotocol!r}, expected 'chat'"
        await ws.send("in chat")
        assert await recv_data(ws) == "in chat"
    async with client(url) as ws:
        assert ws.subprotocol is None, f"no subprotocol offered, got {ws.subprotocol!r}"
    try:
        async with client(url, subprotocols=["superchat"]) as ws:
            # RFC 6455: a server that speaks none of the offered ones answers without
            # the header; websockets then has no subprotocol
            assert ws.subprotocol is None, f"got {ws.subprotocol!r} for an unknown one"
            unknown = "none selected for an unknown offer"
    except InvalidStatus as e:
        unknown = f"unknown offer refused with HTTP {e.response.status_code}"
    return f"'chat' chosen from ['superchat', 'chat']; none when none offered; {unknown}"


async def check_concurrent(url, n=50, rounds=20):
    opened = 0
    all_open = asyncio.Event()

    async def one(i):
        nonlocal opened
        rng = random.Random(i)
        async with client(url) as ws:
            opened += 1
            if opened == n:
                all_open.set()
            # every client is connected before anyone sends: 50 live connections at once
            async with asyncio.timeout(20):
                await all_open.wait()
            for r in range(rounds):
                msg = f"client {i} round {r} " + "✓" * rng.randrange(0, 3000)
                if r % 2:
                    msg = msg.encode()
                await ws.send(msg)
                got = await recv_data(ws)
                assert got == msg, f"client {i} round {r}: wrong echo ({describe(got)})"
            await ws.close(1000, f"client {i} done")
            assert ws.close_code == 1000, f"client {i}: server closed with {ws.close_code}"
        return i

    started = time.monotonic()
    done = await asyncio.gather(*(one(i) for i in range(n)))
    assert sorted(done) == list(range(n))
    took = time.monotonic() - started
    return f"{n} clients open at once, {rounds} messages each echoed in order, {took:.2f} s"


async def check_origin(url):
    host = urlsplit(url).netloc
    try:
        async with client(url, origin="http://evil.example"):
            raise AssertionError("a foreign Origin was accepted")
    except InvalidStatus as e:
        status = e.response.status_code
        assert status == 403, f"foreign Origin got HTTP {status}, expected 403"
    # the same origin (host:port equal to Host) is accepted
    async with client(url, origin=f"http://{host}") as ws:
        await ws.send("same origin")
        assert await recv_data(ws) == "same origin"
    return f"Origin http://evil.example -> HTTP 403 (InvalidStatus); http://{host} accepted"


CHECKS = [
    ("text-echo", check_text_echo),
    ("binary-echo", check_binary_echo),
    ("fragmented", check_fragmented),
    ("ping-pong", check_ping_pong),
    ("close-4000", check_close),
    ("subprotocol", check_subprotocol),
    ("concurrent-50", check_concurrent),
    ("origin-403", check_origin),
]


async def main(url):
    print(f"python {sys.version.split()[0]}, websockets {websockets.__version__}, url {url}",
          flush=True)
    return await runner.run("python-websockets", CHECKS, lambda check: check(url), CHECK_TIMEOUT)

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(asyncio.run(main(sys.argv[1])))
