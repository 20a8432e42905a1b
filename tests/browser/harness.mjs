// What the browser tests share: Chromium and its flags, the lines tests/browser.rs
// reads (`ok`/`FAIL` per check, then "N passed, N failed"; exit 0 only if all passed),
// an overall time limit, and closing the browser however `main` ends.
import { chromium } from "playwright-core";

const EXE = process.env.CHROMIUM || "/usr/bin/chromium";
const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

let passed = 0, failed = 0, browser = null;

/** Prints one check's verdict and counts it; returns `ok`. */
export function check(name, ok, detail = "") {
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? ": " + detail : ""}`);
  if (ok) passed++; else failed++;
  return ok;
}

/** Starts headless Chromium; `run` closes it at the end. */
export async function launch() {
  browser = await chromium.launch({ executablePath: EXE, headless: true, args: ARGS, timeout: 20_000 });
  return browser;
}

function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed || !passed ? 1 : 0);
}

/** Runs `main`, failing the whole test if it takes over `timeoutMs` or throws. */
export function run(main, timeoutMs) {
  const guard = setTimeout(() => {
    check("overall", false, `timed out after ${timeoutMs / 1000} s`);
    finish();
  }, timeoutMs);
  main()
    .catch(e => check("browser", false, e.message.split("\n")[0]))
    .finally(async () => {
      clearTimeout(guard);
      if (browser) await browser.close().catch(() => {});
      finish();
    });
}
