// Load for the compression bench: CONNS connections of Node `ws` (perMessageDeflate
// on, its default offer), each sending one JSON text message and waiting for its echo,
// until COUNT echoes in all or LIMIT_S seconds.
//
//   node benches/compress/client.mjs URL SIZE COUNT CONNS LIMIT_S
//
// SIZE is 1k or 16k (common.mjs). 64 different messages go round, so a compressor
// with context sees similar, not identical, messages. Prints one line:
//   RESULT msgs=N secs=S extensions=... wire_in=B wire_out=B plain=B echo_ok=0|1
// wire_in/wire_out: bytes the client's sockets read/wrote (frames and the handshake).
import { ws, jsonMessage, SIZES } from "./common.mjs";

const [url, size, count, conns, limit] = [process.argv[2], process.argv[3],
  Number(process.argv[4]), Number(process.argv[5]), Number(process.argv[6])];
if (!url || !SIZES[size] || !count || !conns || !limit) {
  console.error("usage: client.mjs URL 1k|16k COUNT CONNS LIMIT_S");
  process.exit(2);
}
const pool = Array.from({ length: 64 }, (_, i) => jsonMessage(i, SIZES[size]));
let sent = 0, done = 0, plain = 0, ok = 1, extensions = "", finished = false;
const sockets = [];
let start = 0;

function finish() {
  if (finished) return;
  finished = true;
  const secs = (performance.now() - start) / 1000;
  let wireIn = 0, wireOut = 0;
  for (const c of sockets) { wireIn += c._socket.bytesRead; wireOut += c._socket.bytesWritten; }
  console.log(`RESULT msgs=${done} secs=${secs.toFixed(3)} extensions=${JSON.stringify(extensions)} wire_in=${wireIn} wire_out=${wireOut} plain=${plain} echo_ok=${ok}`);
  for (const c of sockets) c.terminate();
  process.exit(0);
}

let open = 0;
for (let i = 0; i < conns; i++) {
  const c = new ws.WebSocket(url, { perMessageDeflate: true });
  sockets.push(c);
  let expect = null;
  const next = () => {
    if (sent >= count) return;
    expect = pool[sent % pool.length];
    sent++;
    plain += expect.length;
    c.send(expect);
  };
  c.on("message", data => {
    // A length check keeps the client's share of the CPU small; the tests check content.
    if (data.length !== expect.length) ok = 0;
    done++;
    if (done >= count) finish(); else next();
  });
  c.on("error", e => { console.error(`connection ${i}: ${e.message}`); process.exit(1); });
  c.on("open", () => {
    extensions = c.extensions;
    if (++open === conns) {
      start = performance.now();
      setTimeout(finish, limit * 1000);
      for (const s of sockets) s.emit("go");
    }
  });
  c.on("go", next);
}
