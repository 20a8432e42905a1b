// Shared by the compression bench's scripts: `ws` from tests/node (one pin for tests
// and benches), and the JSON generator.
import { createRequire } from "node:module";

const require = createRequire(new URL("../../tests/node/package.json", import.meta.url));
export const ws = require("ws");
export const wsVersion = require("ws/package.json").version;

// Chat-like JSON: every row has the same keys (id, user, text, tags, ok) with a few
// varying values, as an API or chat feed sends; the same generator as
// tests/py/compression.py's json_message. items=11 gives about 1 KiB, 175 about 16 KiB.
export function jsonMessage(i, items) {
  const rows = [];
  for (let k = 0; k < items; k++) {
    rows.push({ id: i * 1000 + k, user: `user${k % 7}`, text: `message ${k} of batch ${i}`,
      tags: ["alpha", "beta", "gamma"].slice(0, 1 + (k % 3)), ok: k % 2 === 0 });
  }
  return JSON.stringify({ seq: i, kind: "batch", rows });
}

export const SIZES = { "1k": 11, "16k": 175 };
