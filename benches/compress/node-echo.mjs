// Node `ws` echo server for the compression bench:
//
//   node benches/compress/node-echo.mjs PORT MODE
//
// MODE nct: no context takeover either way (like wsloop --compression shared), level 6,
// threshold 128; w12: context takeover both ways with 4 KiB windows (like wsloop
// --compression window=12), threshold 32. Prints "listening PORT" when ready.
import { ws } from "./common.mjs";

const [port, mode] = [Number(process.argv[2]), process.argv[3]];
const modes = {
  nct: { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 128 },
  w12: { serverMaxWindowBits: 12, clientMaxWindowBits: 12, threshold: 32 },
};
if (!port || !modes[mode]) {
  console.error("usage: node-echo.mjs PORT nct|w12");
  process.exit(2);
}
const perMessageDeflate = { ...modes[mode], zlibDeflateOptions: { level: 6 } };
const server = new ws.WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate, maxPayload: 16 << 20 });
server.on("connection", c => c.on("message", (data, isBinary) => c.send(data, { binary: isBinary })));
server.on("listening", () => console.log(`listening ${port}`));
