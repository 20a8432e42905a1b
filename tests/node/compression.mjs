// Node's `ws` client (perMessageDeflate on, its default offer) against a wsloop echo
// server with `--compression shared`; run by tests/compression.rs:
//
//   node tests/node/compression.mjs ws://ADDR/ws
//
// Checks: the answer and `ws.extensions` name permessage-deflate; a ~200 KB JSON text
// message, a 200 KB binary one and 50 small JSON messages echo intact. Prints
// `PASS name: detail` / `FAIL name: error`, then `node-ws: N passed, N failed`; exits 0
// only if every check passed.
import WebSocket from "ws";
import { createRequire } from "node:module";

const TIMEOUT_MS = 60_000;
const url = process.argv[2];
if (!url) {
  console.error("usage: node compression.mjs ws://ADDR/ws");
  process.exit(2);
}
const version = createRequire(import.meta.url)("ws/package.json").version;

// The same chat-like JSON as tests/py/compression.py's json_message.
function jsonMessage(i, items) {
  const rows = [];
  for (let k = 0; k < items; k++) {
    rows.push({ id: i * 1000 + k, user: `user${k % 7}`, text: `message ${k} of batch ${i}`,
      tags: ["alpha", "beta", "gamma"].slice(0, 1 + (k % 3)), ok: k % 2 === 0 });
  }
  return JSON.stringify({ seq: i, kind: "batch", rows });
}

let passed = 0, failed = 0;
function report(name, ok, detail) {
  console.log(`${ok ? "PASS" : "FAIL"} ${name}: ${detail}`);
  if (ok) passed++; else failed++;
}

const guard = setTimeout(() => {
  report("overall", false, `timed out after ${TIMEOUT_MS / 1000} s`);
  finish();
}, TIMEOUT_MS);

function finish() {
  console.log(`node-ws: ${passed} passed, ${failed} failed`);
  process.exit(failed || !passed ? 1 : 0);
}

const ws = new WebSocket(url, { perMessageDeflate: true });
let answer = null;
ws.on("upgrade", res => { answer = res.headers["sec-websocket-extensions"] ?? null; });
const inbox = [];
let waiting = null;
ws.on("message", (data, isBinary) => {
  const m = { data: isBinary ? data : data.toString("utf8"), isBinary };
  if (waiting) { const w = waiting; waiting = null; w(m); } else inbox.push(m);
});
const next = () => inbox.length ? Promise.resolve(inbox.shift()) : new Promise(r => { waiting = r; });

async function echo(msg, isBinary) {
  ws.send(msg, { binary: isBinary });
  const got = await next();
  if (got.isBinary !== isBinary) throw new Error(`sent ${isBinary ? "binary" : "text"}, got the other`);
  const same = isBinary ? Buffer.compare(got.data, msg) === 0 : got.data === msg;
  if (!same) throw new Error(`echo of ${msg.length} units differs`);
}

ws.on("error", e => { report("connect", false, e.message); finish(); });
ws.on("open", async () => {
  try {
    const ok = ws.extensions.includes("permessage-deflate")
      && answer === "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    report("extensions", ok, `ws ${version}: ws.extensions ${JSON.stringify(ws.extensions)}, answer ${JSON.stringify(answer)}`);
    let big = jsonMessage(0, 2150);
    if (big.length < 190_000 || big.length > 230_000) throw new Error(`JSON is ${big.length} bytes`);
    await echo(big, false);
    report("json-200k", true, `${big.length} bytes of JSON text`);
    const bin = Buffer.alloc(200_000);
    for (let i = 0; i < bin.length; i++) bin[i] = (i * 7 + (i >> 9)) & 0xff;
    await echo(bin, true);
    report("binary-200k", true, `${bin.length} bytes`);
    for (let i = 0; i < 50; i++) await echo(jsonMessage(i, 3), false);
    report("small-json", true, "50 messages of about 400 bytes");
  } catch (e) {
    report("echo", false, e.message);
  }
  clearTimeout(guard);
  ws.close(1000);
  ws.on("close", finish);
});
