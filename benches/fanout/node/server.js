// Node `ws` fan-out server for benches/fanout: a connection to /ws?topic=NAME is a
// subscriber; any other connection is a publisher whose every message goes to every
// subscriber with one send each (clients.forEach(send), the usual Node broadcast).
// Usage: node server.js 127.0.0.1:PORT
'use strict';
const { WebSocketServer } = require('ws');

const [host, port] = (process.argv[2] || '127.0.0.1:8080').split(':');
const subs = new Set();
const wss = new WebSocketServer({ host, port: Number(port), path: '/ws', perMessageDeflate: false });

wss.on('connection', (ws, req) => {
  if (req.url.includes('topic=')) {
    subs.add(ws);
    ws.on('close', () => subs.delete(ws));
    return;
  }
  ws.on('message', (data, isBinary) => {
    for (const s of subs) s.send(data, { binary: isBinary });
  });
});
wss.on('listening', () => console.error(`listening on ws://${host}:${port}/ws`));
