// wsloop's browser console (src/protocol/console.html) in Debian's headless Chromium, driven by
// playwright-core (no browser download: /usr/bin/chromium, or $CHROMIUM).
//
//   node tests/browser/console.test.mjs '{"main":URL,"forbidden":URL,"limited":URL,"down":ADDR,"shot":PATH,"shot390":PATH}'
//
// main: wsloop --console --subprotocol chat --subprotocol v2; forbidden: --console
// --allow-origin https://app.example; limited: --console --max-connections 1
// --max-message 64KiB; down: an address nothing listens on. tests/browser.rs starts them.
// Prints one line per check, then "N passed, N failed"; exits 0 only if every check
// passed. Each part stops at its first failed step (the next steps depend on it) and the
// next part runs; the whole run is bounded by TIMEOUT_MS.
import { check, launch, run } from "./harness.mjs";
import { readFileSync, statSync } from "node:fs";
import http from "node:http";
import crypto from "node:crypto";

// Guards against hangs, not speed checks: a busy 2-core machine is slow.
const TIMEOUT_MS = 300_000;
const STEP_MS = 30_000;
const PAGE_MAX = 30 * 1024;

const cfg = JSON.parse(process.argv[2] || "{}");
if (!cfg.main || !cfg.shot || !cfg.shot390) {
  console.error("usage: node console.test.mjs '{\"main\":URL,...}' (see the top of this file)");
  process.exit(2);
}

let browser = null;

class Stop extends Error {}
function must(name, ok, detail) {
  if (!check(name, ok, detail)) throw new Stop(name);
}
// Runs one part; a failed step ends that part only.
async function part(name, fn) {
  console.log(`-- ${name}`);
  try { await fn(); } catch (e) {
    if (!(e instanceof Stop)) check(`${name}: unexpected error`, false, e.message.split("\n")[0]);
  }
}

async function open(url, opts = {}) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 }, acceptDownloads: true, ...opts });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const p = { context, page, errors: [], requests: [] };
  page.on("pageerror", e => p.errors.push(`page error: ${e.message}`));
  page.on("console", m => { if (m.type() === "error") p.errors.push(`console error: ${m.text()}`); });
  page.on("request", r => p.requests.push(r.url()));
  page.on("websocket", w => p.requests.push(w.url()));
  const res = await page.goto(url);
  p.body = res ? await res.text() : "";
  p.status = res ? res.status() : 0;
  p.type = res ? res.headers()["content-type"] || "" : "";
  return p;
}
const logText = page => page.locator("#log li").allInnerTexts().then(t => t.join(" | "));
const lastLine = (page, sel) => page.locator(`#log li${sel}`).last().innerText().catch(() => "");
// Waits until the status starts with `prefix`; returns the status text.
async function statusBecomes(page, prefix, ms = STEP_MS) {
  await page.waitForFunction(p => document.getElementById("status").textContent.startsWith(p), prefix, { timeout: ms }).catch(() => {});
  return page.textContent("#status");
}
// Typing 100 KB into a textarea takes Chromium minutes, so large text is put in as a
// paste would: the value, then an input event.
async function setMessage(page, text) {
  if (text.length < 10_000) return page.fill("#message", text);
  await page.$eval("#message", (m, t) => { m.value = t; m.dispatchEvent(new Event("input", { bubbles: true })); }, text);
}
async function connect(page, url, protocols) {
  await page.fill("#url", url);
  if (protocols != null) await page.fill("#protocols", protocols);
  await page.click("#connect");
}
// The `why:` line of a failed connection.
async function why(page) {
  await page.locator("#log li.why").last().waitFor().catch(() => {});
  return lastLine(page, ".why");
}

// A fake server for what wsloop does not negotiate yet: it accepts every upgrade with
// permessage-deflate and parameters, so the page's extensions line can be checked.
function fakeDeflateServer() {
  const server = http.createServer((q, r) => { r.writeHead(404); r.end(); });
  server.on("upgrade", (req, sock) => {
    const accept = crypto.createHash("sha1")
      .update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
    sock.on("error", () => {});
    sock.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${accept}\r\n` +
      "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits=10\r\n\r\n");
    // Answer the client's Close (opcode 8) with an empty Close, then end.
    sock.on("data", b => { if ((b[0] & 0x0f) === 8) sock.end(Buffer.from([0x88, 0x00])); });
  });
  return new Promise(r => server.listen(0, "127.0.0.1", () => r(server)));
}

// Main controls inside the viewport (horizontally always; vertically the connect row at
// load, and the log when scrolled to); returns what is outside.
async function outside(page) {
  return page.evaluate(() => {
    const vw = document.documentElement.clientWidth, vh = innerHeight, bad = [];
    if (document.documentElement.scrollWidth > vw) bad.push(`page scrolls sideways (${document.documentElement.scrollWidth} > ${vw})`);
    const box = id => document.getElementById(id).getBoundingClientRect();
    scrollTo(0, 0);
    for (const id of ["url", "protocols", "connect"]) {
      const b = box(id);
      if (b.left < -1 || b.right > vw + 1 || b.top < -1 || b.bottom > vh + 1 || !b.width || !b.height) bad.push(`#${id} at ${JSON.stringify(b)}`);
    }
    for (const id of ["close-code", "close-reason", "disconnect", "message", "send-text", "send-binary", "count", "every", "filter", "export", "clear", "log"]) {
      document.getElementById(id).scrollIntoView({ block: "nearest" });
      const b = box(id);
      if (b.left < -1 || b.right > vw + 1 || b.top < -1 || b.bottom > vh + 1 || !b.width || !b.height) bad.push(`#${id} at ${JSON.stringify(b)}`);
    }
    scrollTo(0, 0);
    return bad;
  });
}

// Every input, select and textarea has a label, every button a name.
async function unlabelled(page) {
  return page.evaluate(() => {
    const bad = [];
    for (const e of document.querySelectorAll("input,select,textarea")) if (!e.labels.length && !e.getAttribute("aria-label")) bad.push(e.id || e.outerHTML);
    for (const e of document.querySelectorAll("button")) if (!e.textContent.trim() && !e.getAttribute("aria-label")) bad.push(e.id || e.outerHTML);
    return bad;
  });
}

async function main() {
  browser = await launch();
  const origin = new URL(cfg.main).origin, host = new URL(cfg.main).host;
  const fake = await fakeDeflateServer();
  const json = JSON.stringify({
    about: "a pretty-printed JSON message of about 100 KB",
    items: Array.from({ length: 700 }, (_, i) => ({ id: i, name: `item ${i}`, tags: ["a", "b"], note: "  leading spaces kept" })),
  }, null, 2);

  await part("desktop: handshake, log, editor", async () => {
    const { page, context, errors, requests, body, status, type } = await open(cfg.main);
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin });
    must("page loads", status === 200 && type.startsWith("text/html"), `${status} ${type}`);
    must("page under 30 KB", body.length < PAGE_MAX, `${body.length} bytes`);
    const missing = await unlabelled(page);
    must("every control labelled", missing.length === 0, missing.join(", "));
    must("url prefilled", (await page.inputValue("#url")) === `ws://${host}/ws`, await page.inputValue("#url"));
    must("subprotocols prefilled from --subprotocol", (await page.inputValue("#protocols")) === "chat, v2", await page.inputValue("#protocols"));

    // Keyboard: Enter in the URL field connects.
    await page.focus("#url");
    await page.keyboard.press("Enter");
    must("connect (Enter): status open", (await statusBecomes(page, "open")) === "open", await page.textContent("#status"));
    const ext = await page.evaluate(() => ws.extensions);
    const openLine = await lastLine(page, ".info");
    must("open line: subprotocol and extensions", openLine.includes("subprotocol: chat") && openLine.includes(`extensions: ${ext || "none"}`), openLine);
    must("timestamps on every line", (await page.locator("#log li time").allInnerTexts()).every(t => /^\d\d:\d\d:\d\d\.\d{3}$/.test(t)), await logText(page));

    const text = "hello from Chromium ✓";
    await page.fill("#message", text);
    await page.click("#send-text");
    await page.locator("#log li.echo").nth(0).waitFor();
    const e1 = await page.locator("#log li.echo").nth(0).innerText();
    must("text echo with RTT", e1.includes(text) && /← text \d+ B, \d+(\.\d)? ms/.test(e1), e1);

    await page.fill("#message", "bin ✓");
    await page.click("#send-binary");
    await page.locator("#log li.echo").nth(1).waitFor();
    const e2 = await page.locator("#log li.echo").nth(1).innerText();
    must("binary echo as hex with RTT", /← binary 7 B, \d+(\.\d)? ms\s+62 69 6e 20 e2 9c 93/.test(e2), e2);

    await page.check("#hex");
    await page.fill("#message", "0x00 ff,10\n7f");
    await page.click("#send-binary");
    await page.locator("#log li.echo").nth(2).waitFor();
    const e3 = await page.locator("#log li.echo").nth(2).innerText();
    must("binary from hex", /← binary 4 B, .*\s+00 ff 10 7f/.test(e3), e3);
    await page.uncheck("#hex");

    // File input: sent as binary, echoed.
    await page.setInputFiles("#file", { name: "f.bin", mimeType: "application/octet-stream", buffer: Buffer.from([1, 2, 3]) });
    await page.locator("#log li.echo").nth(3).waitFor();
    const e4 = await page.locator("#log li.echo").nth(3).innerText();
    must("file sent as binary", /← binary 3 B, .*\s+01 02 03/.test(e4), e4);

    // 100 KB of pretty-printed JSON: whitespace kept, preview clipped, expand and copy intact.
    await setMessage(page, json);
    await page.locator("#json-hint.ok").waitFor();
    must("JSON hint: valid", (await page.textContent("#json-hint")) === "valid JSON");
    await page.click("#send-text");
    const big = page.locator("#log li.echo").nth(4);
    await big.waitFor();
    const preview = await big.locator("pre").textContent();
    must("100 KB JSON: preview keeps line breaks and indentation, clipped", preview.startsWith('{\n  "about"') && preview.endsWith("…") && preview.length < 400, JSON.stringify(preview.slice(0, 80)));
    await big.getByRole("button", { name: "Show all" }).click();
    const full = await big.locator("pre").textContent();
    must("100 KB JSON: expanded in full, intact", full === json, `${full.length} of ${json.length} characters`);
    await big.getByRole("button", { name: "Copy" }).click();
    await big.getByRole("button", { name: "Copied" }).waitFor().catch(() => {});
    const clip = await page.evaluate(() => navigator.clipboard.readText());
    must("100 KB JSON: copied intact", clip === json, `${clip.length} of ${json.length} characters`);
    must("no message differs from what was sent", (await page.locator("#log li.bad").count()) === 0, await logText(page));

    // Pretty-printing on demand.
    await page.fill("#message", '{"a":[1,2]}');
    await page.click("#send-text");
    const small = page.locator("#log li.echo").nth(5);
    await small.waitFor();
    await small.getByRole("button", { name: "Pretty JSON" }).click();
    const pretty = await small.locator("pre").textContent();
    must("pretty JSON on demand", pretty === '{\n  "a": [\n    1,\n    2\n  ]\n}', JSON.stringify(pretty));
    await page.fill("#message", "{oops");
    await page.locator("#json-hint.bad").waitFor().catch(() => {});
    must("JSON hint: invalid", (await page.textContent("#json-hint")).startsWith("not valid JSON"), await page.textContent("#json-hint"));

    // History: ↑ recalls what was sent, newest first; ↓ goes back to the draft.
    await page.fill("#message", "draft");
    await page.focus("#message");
    await page.keyboard.press("ArrowUp");
    const h1 = await page.inputValue("#message");
    await page.keyboard.press("ArrowUp");
    const h2 = await page.inputValue("#message");
    must("history: ↑ recalls the last two sent", h1 === '{"a":[1,2]}' && h2 === json, `${JSON.stringify(h1)}, ${h2.length} chars`);
    await page.keyboard.press("ArrowDown");
    await page.keyboard.press("ArrowDown");
    must("history: ↓ returns to the draft", (await page.inputValue("#message")) === "draft", await page.inputValue("#message"));

    // Send N: at once, then every 20 ms; then a long run stopped.
    const before = await page.locator("#log li.echo").count();
    await page.fill("#message", "load");
    await page.fill("#count", "25");
    await page.fill("#every", "0");
    await page.click("#send-text");
    await page.locator("#log li.echo").nth(before + 24).waitFor().catch(() => {});
    must("send 25 times at once: 25 echoes", (await page.locator("#log li.echo").count()) === before + 25, await page.textContent("#stats"));
    await page.fill("#count", "5");
    await page.fill("#every", "20");
    await page.click("#send-text");
    await page.locator("#log li.echo").nth(before + 29).waitFor().catch(() => {});
    must("send 5 times every 20 ms: 5 echoes", (await page.locator("#log li.echo").count()) === before + 30, await page.textContent("#stats"));
    const sentBefore = +/sent (\d+)/.exec(await page.textContent("#stats"))[1];
    await page.fill("#count", "10000");
    await page.fill("#every", "50");
    await page.click("#send-text");
    await page.waitForFunction(() => !document.getElementById("stop").disabled);
    await page.click("#stop");
    await page.waitForFunction(() => !/awaiting echo [1-9]/.test(document.getElementById("stats").textContent)).catch(() => {});
    const stats = await page.textContent("#stats");
    const n = +/sent (\d+)/.exec(stats)[1];
    must("stop sending: the run ends early, everything echoed", n > sentBefore && n - sentBefore < 10000 && (await page.isDisabled("#stop")) && stats.includes("awaiting echo 0"), stats);

    // Filter and export.
    for (const [f, ok] of [["sent", "sent"], ["recv", "recv"], ["ev", null]]) {
      await page.selectOption("#filter", f);
      const shown = await page.$$eval("#log li", (lis, ok) => lis.filter(li => getComputedStyle(li).display !== "none")
        .map(li => ok ? li.classList.contains(ok) : !li.matches(".sent,.recv")), ok);
      must(`filter ${f}: only those shown`, shown.length > 0 && shown.every(Boolean), `${shown.filter(Boolean).length} of ${shown.length}`);
    }
    await page.selectOption("#filter", "");
    const entries = await page.locator("#log li").count();
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
    const lines = readFileSync(await download.path(), "utf8").trim().split("\n").map(l => JSON.parse(l));
    must("export: one JSON line per entry", lines.length === entries && download.suggestedFilename().endsWith(".jsonl"), `${lines.length} lines, ${entries} entries`);
    must("export: the 100 KB message intact, with time and type",
      lines.some(l => l.type === "received" && l.kind === "text" && l.data === json && !isNaN(Date.parse(l.time))), "");

    // Close codes: only the ones a browser may send; Enter in the reason field disconnects.
    await page.fill("#close-code", "1001");
    must("close code 1001 marked invalid", (await page.getAttribute("#close-code", "aria-invalid")) === "true" && await page.isVisible("#code-note"));
    await page.fill("#close-code", "4000");
    await page.fill("#close-reason", "bye");
    await page.focus("#close-reason");
    await page.keyboard.press("Enter");
    const st = await statusBecomes(page, "closed");
    must("Enter in close reason: status shows 4000 bye", st === "closed: 4000 bye", st);
    const closeLine = await lastLine(page, ".info");
    must("close line: who closed, clean", closeLine.includes("closed by you: 4000 bye, clean"), closeLine);
    must("buttons after close", !(await page.isDisabled("#connect")) && (await page.isDisabled("#send-text")));

    await page.screenshot({ path: cfg.shot, fullPage: true });
    const bad = await outside(page);
    must("desktop: main controls inside the viewport", bad.length === 0, bad.join("; "));
    await page.click("#clear");
    must("clear empties the log", (await page.locator("#log li").count()) === 0);
    must("no page or console errors", errors.length === 0, errors.join("; "));
    const off = requests.filter(u => new URL(u.replace(/^blob:/, "")).host !== host);
    must("no request outside the page's origin", off.length === 0 && requests.length > 0, off.join(", "));
    await context.close();
  });
  check("screenshot desktop", (statSync(cfg.shot, { throwIfNoEntry: false })?.size || 0) > 0, cfg.shot);

  await part("extensions: what the browser reports, with parameters", async () => {
    const { page, context } = await open(cfg.main);
    await connect(page, `ws://127.0.0.1:${fake.address().port}/`, "");
    must("open", (await statusBecomes(page, "open")) === "open", await logText(page));
    const ext = await page.evaluate(() => ws.extensions);
    const line = await lastLine(page, ".info");
    must("extensions line: permessage-deflate and its parameters",
      ext.includes("permessage-deflate") && ext.includes("client_max_window_bits=10") && line.includes(`extensions: ${ext}`) && line.includes("subprotocol: none"), line);
    await context.close();
  });

  await part("failures explained", async () => {
    const { page, context } = await open(cfg.main);
    await connect(page, `ws://${host}/nope`);
    let w = await why(page);
    must("404: wrong path, and the right one", w.includes("wrong path: /nope is not the upgrade path") && w.includes("the upgrade path is /ws"), w);
    must("404: status", (await page.textContent("#status")) === "failed: wrong path (404)", await page.textContent("#status"));

    await connect(page, `wss://${host}/ws`);
    await page.waitForFunction(() => document.querySelectorAll("#log li.why").length === 2).catch(() => {});
    w = await why(page);
    must("wss:// to a plain server: TLS mismatch", w.includes(`TLS mismatch: ${host} speaks plain ws://, not wss://: use ws://${host}/ws`), w);

    await connect(page, `ws://${host}/ws`, "nope");
    await page.waitForFunction(() => document.querySelectorAll("#log li.why").length === 3).catch(() => {});
    w = await why(page);
    must("subprotocol the server does not speak: explained", w.includes("subprotocol mismatch") && w.includes("it speaks: chat, v2"), w);

    // Server down, with reconnect on: backoff doubles; Disconnect cancels it.
    await page.check("#reconnect");
    await connect(page, `ws://${cfg.down}/ws`, "");
    await page.waitForFunction(() => document.querySelectorAll("#log li.why").length === 4).catch(() => {});
    w = await why(page);
    must("server down", w.includes(`server down: nothing answers at ${cfg.down}`), w);
    await page.getByText("reconnecting in 1 s (attempt 2)").waitFor().catch(() => {});
    const log = await logText(page);
    must("reconnect with backoff", log.includes("reconnecting in 0.5 s (attempt 1)") && log.includes("reconnecting in 1 s (attempt 2)"), log);
    await page.click("#disconnect");
    must("Disconnect cancels the reconnect", (await lastLine(page, ".info")).includes("reconnect cancelled") && (await page.textContent("#status")) === "not connected");
    await page.uncheck("#reconnect");
    await context.close();
  });

  if (cfg.tls) await part("wss:// (--tls-cert): served over https, and ws:// to it explained", async () => {
    // The certificate is self-signed: this context alone accepts it.
    const { page, context } = await open(`https://${cfg.tls}/`, { ignoreHTTPSErrors: true });
    must("https page: url prefilled with wss://", (await page.inputValue("#url")) === `wss://${cfg.tls}/ws`, await page.inputValue("#url"));
    await page.click("#connect");
    must("wss:// connects", (await statusBecomes(page, "open")) === "open", await logText(page));
    await page.click("#disconnect");
    await statusBecomes(page, "closed");
    // Another server (another origin): the page cannot read its verdict, only that it answers.
    await connect(page, `ws://${host}/ws`, "");
    const other = await why(page);
    must("another origin: cannot ask, likely causes with the flag", other.includes(`${host} answers, but from another origin than this page`) && other.includes(`--allow-origin https://${cfg.tls}`), other);
    await context.close();
    const plain = await open(cfg.main, { ignoreHTTPSErrors: true });
    await connect(plain.page, `ws://${cfg.tls}/ws`, "");
    const w = await why(plain.page);
    must("ws:// to a TLS server: TLS mismatch", w.includes(`TLS mismatch: ${cfg.tls} speaks wss:// (TLS), not ws://: use wss://${cfg.tls}/ws`), w);
    await plain.context.close();
  });

  await part("403: origin not allowed", async () => {
    const { page, context } = await open(cfg.forbidden);
    const own = new URL(cfg.forbidden).origin;
    await page.click("#connect");
    const w = await why(page);
    must("403: origin not allowed, with the flag", w.includes("origin not allowed (403)") && w.includes(`--allow-origin ${own}`), w);
    must("403: status", (await page.textContent("#status")) === "failed: origin not allowed (403)", await page.textContent("#status"));
    await context.close();
  });

  await part("503: connection limit, then reconnect after the server closes", async () => {
    const { page, context } = await open(cfg.limited);
    const url = await page.inputValue("#url");
    // Another client holds the only slot.
    await page.evaluate(u => new Promise((ok, fail) => { window.holder = new WebSocket(u); holder.onopen = ok; holder.onerror = fail; }), url);
    await page.click("#connect");
    let w = await why(page);
    must("503: connection limit, with the flag", w.includes("connection limit (503)") && w.includes("--max-connections 1"), w);
    await page.evaluate(() => new Promise(ok => { holder.onclose = ok; holder.close(); }));
    // A message over --max-message: the server closes; reconnect brings the console back.
    await page.check("#reconnect");
    await page.click("#connect");
    must("connect once the slot is free", (await statusBecomes(page, "open")) === "open", await logText(page));
    await setMessage(page, "x".repeat(100_000));
    await page.click("#send-text");
    await page.getByText("reconnecting in 0.5 s (attempt 1)").waitFor().catch(() => {});
    await page.waitForFunction(() => document.querySelectorAll("#log li.info").length && [...document.querySelectorAll("#log li.info")].filter(li => li.textContent.includes(" open ")).length === 2).catch(() => {});
    const log = await logText(page);
    must("server closed the connection: reconnected", /(closed by the server|connection lost)/.test(log) && log.includes("reconnecting in 0.5 s (attempt 1)") && (await page.textContent("#status")) === "open", log);
    await page.uncheck("#reconnect");
    await page.click("#disconnect");
    await context.close();
  });

  await part("390 px, touch, dark", async () => {
    const { page, context, errors } = await open(cfg.main, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2, colorScheme: "dark" });
    await page.click("#connect");
    must("connect", (await statusBecomes(page, "open")) === "open");
    await page.fill("#message", "{\n  \"on\": \"a phone\"\n}");
    await page.click("#send-text");
    await page.locator("#log li.echo").waitFor();
    const bad = await outside(page);
    // The viewport as a phone shows it (a full-page capture drops the touch emulation,
    // and with it the (pointer: coarse) styles).
    await page.screenshot({ path: cfg.shot390 });
    must("390 px: main controls inside the viewport", bad.length === 0, bad.join("; "));
    must("touch: keyboard hint hidden, touch hint shown", !(await page.isVisible(".kbd")) && await page.isVisible(".touch"));
    const h = await page.evaluate(() => document.getElementById("log").getBoundingClientRect().height / innerHeight);
    must("log uses the height available (more than half the screen)", h > 0.5, h.toFixed(2));
    must("no page or console errors", errors.length === 0, errors.join("; "));
    await context.close();
  });
  check("screenshot 390 px", (statSync(cfg.shot390, { throwIfNoEntry: false })?.size || 0) > 0, cfg.shot390);
  fake.close();
}

run(main, TIMEOUT_MS);
