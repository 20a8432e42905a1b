// wsloop's browser console (src/console.html) in Debian's headless Chromium, driven by
// playwright-core (no browser download: /usr/bin/chromium, or $CHROMIUM).
//
//   node tests/browser/console.test.mjs URL SCREENSHOT_PATH
//
// URL is the page (http://ADDR/ of a server started with --console). Prints one line per
// check, then "N passed, N failed"; exits 0 only if every check passed. The whole run is
// bounded by TIMEOUT_MS. tests/browser.rs starts the server and runs this.
import { chromium } from "playwright-core";
import { statSync } from "node:fs";

const TIMEOUT_MS = 30_000;
const STEP_MS = 10_000;
const EXE = process.env.CHROMIUM || "/usr/bin/chromium";
const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const [url, shot] = process.argv.slice(2);
if (!url || !shot) {
  console.error("usage: node console.test.mjs URL SCREENSHOT_PATH");
  process.exit(2);
}

let passed = 0, failed = 0, browser = null;
function check(name, ok, detail = "") {
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? ": " + detail : ""}`);
  if (ok) passed++; else failed++;
  return ok;
}
function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed || !passed ? 1 : 0);
}

// Whatever hangs, stop after TIMEOUT_MS (Playwright kills the browser on exit).
const guard = setTimeout(() => {
  check("overall", false, `timed out after ${TIMEOUT_MS / 1000} s`);
  finish();
}, TIMEOUT_MS);

// A failed step ends the run (the later ones depend on it) but still takes the screenshot.
class Stop extends Error {}
function must(name, ok, detail) {
  if (!check(name, ok, detail)) throw new Stop(name);
}

async function main() {
  // playwright's launch() gives the browser a fresh, temporary --user-data-dir.
  browser = await chromium.launch({ executablePath: EXE, headless: true, args: ARGS, timeout: 20_000 });
  const [w, h] = (process.env.WSLOOP_VIEWPORT || "900x820").split("x").map(Number);
  const page = await browser.newPage({ viewport: { width: w, height: h } });
  page.setDefaultTimeout(STEP_MS);
  const errors = [];
  page.on("pageerror", e => errors.push(`page error: ${e.message}`));
  page.on("console", m => { if (m.type() === "error") errors.push(`console error: ${m.text()}`); });
  const log = () => page.locator("#log li").allInnerTexts().then(t => t.join(" | "));

  try {
    const res = await page.goto(url);
    const type = res ? res.headers()["content-type"] || "" : "";
    must("page loads", res && res.status() === 200 && type.startsWith("text/html"),
      `${res && res.status()} ${type}`);
    const wsUrl = await page.inputValue("#url");
    must("url field prefilled", wsUrl.startsWith(`ws://${new URL(url).host}/`) && !wsUrl.includes("__WS_PATH__"), wsUrl);

    await page.click("#connect");
    await page.waitForFunction(() => document.getElementById("status").textContent === "open")
      .catch(() => {});
    must("connect: status open", (await page.textContent("#status")) === "open", await page.textContent("#status"));

    const text = "hello from Chromium ✓";
    await page.fill("#message", text);
    await page.click("#send-text");
    await page.locator("#log li.echo").nth(0).waitFor().catch(() => {});
    const e1 = await page.locator("#log li.echo").nth(0).innerText().catch(() => "");
    must("text echo with RTT", e1.includes(text) && /← text .* \d+(\.\d)? ms$/.test(e1), e1 || await log());

    await page.fill("#message", "bin ✓");
    await page.click("#send-binary");
    await page.locator("#log li.echo").nth(1).waitFor().catch(() => {});
    const e2 = await page.locator("#log li.echo").nth(1).innerText().catch(() => "");
    must("binary echo as hex with RTT", /← binary 62 69 6e 20 e2 9c 93 7 B, \d+(\.\d)? ms$/.test(e2), e2 || await log());
    const bad = await page.locator("#log li.bad").count();
    must("echoes match what was sent", bad === 0, bad ? await log() : "");

    await page.fill("#close-code", "4000");
    await page.fill("#close-reason", "bye");
    await page.click("#disconnect");
    await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("closed"))
      .catch(() => {});
    const st = await page.textContent("#status");
    must("close 4000 bye: status shows the code", st === "closed: 4000 bye", st);
    must("buttons after close", !(await page.isDisabled("#connect")) && (await page.isDisabled("#send-text")),
      "Connect enabled, Send disabled");
  } catch (e) {
    if (!(e instanceof Stop)) check("unexpected error", false, e.message.split("\n")[0]);
  }
  check("no page or console errors", errors.length === 0, errors.join("; "));
  await page.screenshot({ path: shot, fullPage: true });
  const size = statSync(shot, { throwIfNoEntry: false })?.size || 0;
  check("screenshot", size > 0, `${shot} (${size} bytes)`);
}

main()
  .catch(e => check("browser", false, e.message.split("\n")[0]))
  .finally(async () => {
    clearTimeout(guard);
    if (browser) await browser.close().catch(() => {});
    finish();
  });
