#!/usr/bin/env python3
"""permessage-deflate against a running wsloop echo server, with Python `websockets`.

Usage: compression.py URL MODE

MODE says what the client offers and what the server must have answered:
  shared   default compression ("permessage-deflate; client_max_window_bits") against
           `--compression shared`: the answer is no context takeover both ways
  none     compression=None: nothing offered, nothing answered
  window   default compression against `--compression window=12`: context takeover
           both ways with 4 KiB windows, over many similar messages on one connection
  window8  offers server_max_window_bits=8 to `--compression window=12`: websockets
           inflates with a 256-byte window (zlib wbits=-8) kept across messages, so a
           back-reference into an earlier message further than 256 bytes fails the echo
           ("invalid distance too far back"; within one message zlib checks against
           the output so far, not the window)
  topics   URL joins a topic (tests/compression.rs's handler): publishes JSON to it
           with "pub:feed:" and must receive each message intact

tests/compression.rs runs it in the venv tests/common/python.rs bootstraps. Prints
`PASS name: detail` or `FAIL name: error` per check, then
`compression: N passed, N failed`; exit status 0 only if every check passed.
"""

import asyncio
import json
import random
import sys

import websockets
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

import runner

CHECK_TIMEOUT = 60.0
SHARED = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
WINDOW12 = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
WINDOW8 = "permessage-deflate; server_max_window_bits=8; client_max_window_bits=12"


def json_message(i, items=20):
    """Chat-like JSON: the same keys in every object, a few varying values. The same
    generator is in tests/compression.rs (`json_message`) and benches/compress."""
    rows = [
        {"id": i * 1000 + k, "user": f"user{k % 7}", "text": f"message {k} of batch {i}",
         "tags": ["alpha", "beta", "gamma"][: 1 + k % 3], "ok": k % 2 == 0}
        for k in range(items)
    ]
    return json.dumps({"seq": i, "kind": "batch", "rows": rows}, separators=(",", ":"))


def client(url, **kw):
    kw.setdefault("max_size", 16 << 20)
    kw.setdefault("proxy", None)
    kw.setdefault("open_timeout", 10)
    return connect(url, **kw)


async def recv(ws, timeout=20.0):
    async with asyncio.timeout(timeout):
        return await ws.recv()


def answered(ws):
    return ws.response.headers.get("Sec-WebSocket-Extensions")


async def echo_all(ws, messages):
    for m in messages:
        await ws.send(m)
        got = await recv(ws)
        assert type(got) is type(m), f"sent {type(m).__name__}, got {type(got).__name__}"
        assert got == m, f"echo of a {len(m)}-unit message differs"


async def check_negotiated(url, mode):
    kw = {"compression": None} if mode == "none" else {}
    want = {"shared": SHARED, "none": None, "window": WINDOW12}[mode]
    async with client(url, **kw) as ws:
        got = answered(ws)
        assert got == want, f"Sec-WebSocket-Extensions: {got!r}, want {want!r}"
        names = [e.name for e in ws.protocol.extensions]
        assert names == ([] if want is None else ["permessage-deflate"]), names
    return f"answer {got!r}"


async def check_text_echo(url, mode):
    kw = {"compression": None} if mode == "none" else {}
    # Repetitive JSON of several sizes, a short one under the server's threshold,
    # multi-byte UTF-8, and an empty message.
    msgs = [json_message(i, items) for i, items in enumerate((1, 5, 20, 200, 2000))]
    msgs += ["short", "", "wsloop é ✓ 🚀 " * 500]
    async with client(url, **kw) as ws:
        await echo_all(ws, msgs)
    return f"{len(msgs)} messages, {sum(len(m.encode()) for m in msgs)} bytes"


async def check_binary_echo(url, mode):
    kw = {"compression": None} if mode == "none" else {}
    rng = random.Random(7692)
    # Incompressible random bytes, zeros, and JSON as bytes.
    msgs = [rng.randbytes(n) for n in (0, 1, 200, 65536)]
    msgs += [bytes(100_000), json_message(3, 100).encode()]
    async with client(url, **kw) as ws:
        await echo_all(ws, msgs)
    return f"{len(msgs)} messages, {sum(map(len, msgs))} bytes"


async def check_context_takeover(url, mode):
    # 100 similar messages on one connection: each side's compressor refers back into
    # the previous messages (the client keeps context: websockets' default).
    msgs = [json_message(i, 10) for i in range(100)]
    async with client(url) as ws:
        assert answered(ws) == WINDOW12, answered(ws)
        await echo_all(ws, msgs)
        # Interleaved with binary, and with messages under the threshold (sent plain,
        # outside both windows).
        await echo_all(ws, [b"\x00" * 5000, "tiny", json_message(101, 10), b"x", json_message(102, 10)])
    return f"{len(msgs) + 5} messages on one connection"


async def check_window8(url, mode):
    # Each message ends in JSON much like the previous message's, which is more than
    # 1,800 bytes back: a server keeping more than 256 bytes of history refers to it,
    # and websockets' 256-byte window (kept across messages) refuses that.
    rng = random.Random(8)
    msgs = []
    for i in range(30):
        block = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(300))
        msgs.append(f"{i}:" + block * 6 + json_message(i, 3))
    ext = ClientPerMessageDeflateFactory(server_max_window_bits=8, client_max_window_bits=True)
    async with client(url, extensions=[ext]) as ws:
        assert answered(ws) == WINDOW8, answered(ws)
        await echo_all(ws, msgs)
    return f"{len(msgs)} messages inflated with a 256-byte window"


async def check_topics(url, mode):
    async with client(url) as ws:
        assert answered(ws) == SHARED, answered(ws)
        assert await recv(ws) == "joined"
        for i in range(20):
            await ws.send("pub:feed:" + json_message(i, 20))
        for i in range(20):
            got = await recv(ws)
            assert got == json_message(i, 20), f"published message {i} differs"
    return "20 published JSON messages received intact"


CHECKS = {
    "shared": [("negotiated", check_negotiated), ("text-echo", check_text_echo),
               ("binary-echo", check_binary_echo)],
    "none": [("negotiated", check_negotiated), ("text-echo", check_text_echo),
             ("binary-echo", check_binary_echo)],
    "window": [("negotiated", check_negotiated), ("text-echo", check_text_echo),
               ("binary-echo", check_binary_echo), ("context-takeover", check_context_takeover)],
    "window8": [("window8", check_window8)],
    "topics": [("topics", check_topics)],
}


async def main(url, mode):
    print(f"python {sys.version.split()[0]}, websockets {websockets.__version__}, "
          f"url {url}, mode {mode}", flush=True)
    return await runner.run("compression", CHECKS[mode], lambda check: check(url, mode), CHECK_TIMEOUT)

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in CHECKS:
        sys.exit(__doc__)
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
