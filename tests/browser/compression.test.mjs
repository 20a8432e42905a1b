// permessage-deflate in headless Chromium: from the console page's origin, a WebSocket
// to the server (`--compression shared`) must report permessage-deflate in
// `ws.extensions`, and a ~200 KB JSON text message must echo intact.
//
//   node tests/browser/compression.test.mjs '{"page":"http://ADDR/"}'
//
// Prints one line per check, then "N passed, N failed"; exits 0 only if all passed.
import { check, launch, run } from "./harness.mjs";

const TIMEOUT_MS = 120_000;

const { page: url } = JSON.parse(process.argv[2] || "{}");
if (!url) {
  console.error(`usage: node compression.test.mjs '{"page":"http://ADDR/"}'`);
  process.exit(2);
}


async function main() {
  const browser = await launch();
  const page = await browser.newPage();
  const res = await page.goto(url);
  check("page loads", res && res.status() === 200, `${res && res.status()}`);
  const wsUrl = await page.inputValue("#url");
  const r = await page.evaluate(u => new Promise(resolve => {
    // The same chat-like JSON as tests/py/compression.py's json_message(0, 2150).
    const rows = [];
    for (let k = 0; k < 2150; k++) {
      rows.push({ id: k, user: `user${k % 7}`, text: `message ${k} of batch 0`,
        tags: ["alpha", "beta", "gamma"].slice(0, 1 + (k % 3)), ok: k % 2 === 0 });
    }
    const msg = JSON.stringify({ seq: 0, kind: "batch", rows });
    const w = new WebSocket(u);
    const t = setTimeout(() => resolve({ error: "no echo in 60 s" }), 60_000);
    w.onopen = () => w.send(msg);
    w.onmessage = e => {
      clearTimeout(t);
      resolve({ extensions: w.extensions, sent: msg.length, got: e.data.length, same: e.data === msg });
      w.close(1000);
    };
    w.onclose = e => { clearTimeout(t); resolve({ error: `closed ${e.code} before the echo` }); };
  }), wsUrl);
  if (r.error) {
    check("echo", false, r.error);
    return;
  }
  check("ws.extensions", r.extensions.includes("permessage-deflate"), JSON.stringify(r.extensions));
  check("200 KB JSON echo", r.same && r.sent > 190_000, `${r.sent} chars sent, ${r.got} back`);
}

run(main, TIMEOUT_MS);
