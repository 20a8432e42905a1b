// Defect test: messages over the server's limit, sent from the console page in headless
// Chromium, must end in the server's close 1009 every time.
//
//   node tests/browser/oversize.test.mjs '{"page":"http://ADDR/"}'
//
// The server runs with --console --max-message 64KiB --max-frame 64KiB. From the served
// page (its origin, its WebSocket URL), for 100 KB, 1 MB and 16 MB binary messages, ten
// times each, a fresh WebSocket sends one message as soon as it opens; `onclose` must
// report 1009. A server that drops the socket while the browser is still sending resets
// the connection, and the browser, losing the close frame, reports 1006. Prints the codes
// seen per size, then "N passed, N failed"; exits 0 only if every attempt saw 1009.
import { check, launch, run } from "./harness.mjs";

const TIMEOUT_MS = 240_000;
const ATTEMPT_MS = 15_000;
const ROUNDS = 10;
const SIZES = [["100 KB", 100_000], ["1 MB", 1_000_000], ["16 MB", 16_000_000]];

const { page: url } = JSON.parse(process.argv[2] || "{}");
if (!url) {
  console.error(`usage: node oversize.test.mjs '{"page":"http://ADDR/"}'`);
  process.exit(2);
}


async function main() {
  const browser = await launch();
  const page = await browser.newPage();
  const res = await page.goto(url);
  check("page loads", res && res.status() === 200, `${res && res.status()}`);
  const wsUrl = await page.inputValue("#url");
  for (const [name, size] of SIZES) {
    const seen = {};
    for (let i = 0; i < ROUNDS; i++) {
      // One fresh connection: open, send one binary message, wait for the close.
      const r = await page.evaluate(([u, n, limit]) => new Promise(resolve => {
        const w = new WebSocket(u);
        const t = setTimeout(() => { w.close(); resolve("no close in " + limit / 1000 + " s"); }, limit);
        w.onopen = () => w.send(new Uint8Array(n));
        w.onclose = e => { clearTimeout(t); resolve(e.code + (e.wasClean ? " clean" : " not clean")); };
      }), [wsUrl, size, ATTEMPT_MS]);
      seen[r] = (seen[r] || 0) + 1;
    }
    // The code is what must be 1009; cleanliness is reported alongside.
    const codes = Object.entries(seen).filter(([k]) => k.startsWith("1009 ")).reduce((a, [, v]) => a + v, 0);
    const counts = Object.entries(seen).map(([k, v]) => `${k} ×${v}`).join(", ");
    check(`${name} binary message, ${ROUNDS} connections: close 1009 every time`, codes === ROUNDS, `saw ${counts}`);
  }
}

run(main, TIMEOUT_MS);
