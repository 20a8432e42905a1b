// Idle connections with permessage-deflate negotiated, for the memory figures:
//
//   node benches/compress/idle.mjs HOST:PORT N HOLD_S
//
// Opens N raw TCP connections (no zlib on this side, so the client stays small), each
// offering "permessage-deflate; client_max_window_bits", sending one compressed ~4 KiB
// JSON text message (made once, 12-bit window, so every agreement accepts it) and
// reading its echo; then holds them all. Prints
//   READY established=N negotiated=N compressed_echoes=N
// once every echo is in, and RESULT ... after HOLD_S seconds (or sooner: the caller
// stops it by its PID once it has measured).
import net from "node:net";
import zlib from "node:zlib";
import { jsonMessage } from "./common.mjs";

const [hostport, n, hold] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
if (!hostport || !n || !hold) {
  console.error("usage: idle.mjs HOST:PORT N HOLD_S");
  process.exit(2);
}
const [host, port] = hostport.split(":");
const text = Buffer.from(jsonMessage(1, 43));
let payload = zlib.deflateRawSync(text, { windowBits: 12, level: 6, finishFlush: zlib.constants.Z_SYNC_FLUSH });
payload = payload.subarray(0, payload.length - 4); // RFC 7692 §7.2.1: drop 00 00 ff ff
// A masked text frame (16-bit length): compressed (RSV1) when negotiated, else plain.
function frameOf(data, rsv1) {
  const mask = Buffer.from([1, 2, 3, 4]);
  const head = Buffer.from([rsv1 ? 0xc1 : 0x81, 0x80 | 126, data.length >> 8, data.length & 0xff]);
  return Buffer.concat([head, mask, Buffer.from(data.map((b, i) => b ^ mask[i % 4]))]);
}
const compressedFrame = frameOf(payload, true);
const plainFrame = frameOf(text, false);
const request = `GET /ws HTTP/1.1\r\nHost: ${hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
  "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
  "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

let established = 0, negotiated = 0, compressed = 0, echoed = 0, failed = 0, closed = 0;
const sockets = [];
let ready = false;
function settle() {
  if (ready || echoed + failed < n) return;
  ready = true;
  console.log(`READY established=${established} negotiated=${negotiated} compressed_echoes=${compressed} failed=${failed}`);
}
function connectOne(i) {
  const s = net.connect({ host, port: Number(port) });
  sockets.push(s);
  let buf = Buffer.alloc(0), upgraded = false, done = false;
  s.on("connect", () => s.write(request));
  s.on("data", d => {
    if (done) return;
    buf = Buffer.concat([buf, d]);
    if (!upgraded) {
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const headText = buf.subarray(0, end).toString();
      if (!headText.startsWith("HTTP/1.1 101")) { failed++; done = true; settle(); s.destroy(); return; }
      upgraded = true;
      established++;
      const deflate = /\r\nSec-WebSocket-Extensions: permessage-deflate/i.test(headText);
      if (deflate) negotiated++;
      buf = buf.subarray(end + 4);
      s.write(deflate ? compressedFrame : plainFrame);
    }
    // The echo: one unmasked frame (a 7- or 16-bit length: the message is 4 KiB).
    if (buf.length < 2) return;
    const len7 = buf[1] & 0x7f;
    const [hl, len] = len7 === 126 ? [4, buf.length >= 4 ? buf.readUInt16BE(2) : 1 << 30] : [2, len7];
    if (buf.length >= hl + len) {
      if ((buf[0] & 0x0f) !== 1) failed++;
      else echoed++;
      if (buf[0] === 0xc1) compressed++;
      done = true;
      settle();
    }
  });
  s.on("error", () => { if (!done) { failed++; done = true; settle(); } });
  s.on("close", () => { closed++; });
}
// In batches, so the listen backlog is never the limit.
let next = 0;
function batch() {
  for (let k = 0; k < 200 && next < n; k++) connectOne(next++);
  if (next < n) setTimeout(batch, 20);
}
batch();
function end() {
  console.log(`RESULT established=${established} negotiated=${negotiated} compressed_echoes=${compressed} failed=${failed} closed_by_server=${closed}`);
  for (const s of sockets) s.destroy();
  process.exit(0);
}
setTimeout(end, hold * 1000);
process.on("SIGTERM", end);
