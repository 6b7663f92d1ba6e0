#!/usr/bin/env node
// The benchmark peer: what hydra does in the benchmark scenarios, on node's http module and the npm `ws` package.
//
//   node node_peer.js --ws 127.0.0.1:PORT --api 127.0.0.1:PORT     (PORT 0 picks a free port)
//   node node_peer.js ... --tls-cert cert.pem --tls-key key.pem    (WebSocket over https.createServer: wss://)
//
// - WebSocket server, any path; on /echo every message is sent back unchanged (text or binary), other paths only
//   hold the connection. No per-message deflate, no heartbeat (hydra runs with ws.ping_interval_ms=0).
// - HTTP: POST /v1/exchange/broadcast {"data": <json>} sends {"service":"notify","code":200,"data":<json>} to every
//   open client (the JSON is encoded once; `ws` sends the same string to each) and answers
//   {"code":0,"msg":"success","connections":N}.
// - With --tls-cert and --tls-key the WebSocket server runs on https.createServer({cert, key}) (wss://, node's
//   default TLS settings); the HTTP API stays plain HTTP.
// Prints one line once both listen: "node ws peer ready: ws://HOST:PORT http://HOST:PORT pid PID" (wss:// with TLS).
// `ws` is resolved from NODE_PATH (tests/bench/run.sh installs it into build/bench/node).
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer, WebSocket } = require('ws');

function parseArgs(argv) {
  const opts = { ws: '127.0.0.1:0', api: '127.0.0.1:0', backlog: 4096, tlsCert: '', tlsKey: '' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--ws') opts.ws = v();
    else if (a === '--api') opts.api = v();
    else if (a === '--backlog') opts.backlog = Number(v());
    else if (a === '--tls-cert') opts.tlsCert = v();
    else if (a === '--tls-key') opts.tlsKey = v();
    else throw new Error(`unknown option ${a}`);
  }
  if (!opts.tlsCert !== !opts.tlsKey) throw new Error('--tls-cert and --tls-key go together');
  return opts;
}

function splitAddress(addr) {
  const i = addr.lastIndexOf(':');
  if (i < 0) throw new Error(`expected HOST:PORT, got ${addr}`);
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
}

function listen(server, addr, backlog) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: addr.host, port: addr.port, backlog }, () => {
      server.off('error', reject);
      resolve(server.address());
    });
  });
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));

  // ---- WebSocket server ----
  const tls = opts.tlsCert !== '';
  const upgradeOnly = (req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain' });
    res.end('WebSocket only\n');
  };
  const wsHttp = tls
    ? https.createServer({ cert: fs.readFileSync(opts.tlsCert), key: fs.readFileSync(opts.tlsKey) }, upgradeOnly)
    : http.createServer(upgradeOnly);
  const wss = new WebSocketServer({ server: wsHttp, perMessageDeflate: false, maxPayload: 1 << 20 });
  wss.on('connection', (ws, req) => {
    ws.on('error', () => {});
    const path = (req.url || '/').split('?')[0];
    if (path === '/echo') {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    }
  });
  wss.on('error', (err) => console.error(`ws server error: ${err.message}`));

  // ---- HTTP API ----
  const api = http.createServer((req, res) => {
    const path = (req.url || '/').split('?')[0];
    if (path !== '/v1/exchange/broadcast') return sendJson(res, 404, { code: 404, msg: `no route for ${path}` });
    if (req.method !== 'POST') return sendJson(res, 405, { code: 405, msg: 'method not allowed' });
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        return sendJson(res, 400, { code: 400, msg: `invalid JSON: ${e.message}` });
      }
      if (body === null || typeof body !== 'object' || body.data === undefined || body.data === null) {
        return sendJson(res, 400, { code: 400, msg: 'missing parameter data' });
      }
      const message = JSON.stringify({ service: 'notify', code: 200, data: body.data });
      let n = 0;
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) {
          client.send(message);
          n++;
        }
      }
      sendJson(res, 200, { code: 0, msg: 'success', connections: n });
    });
  });
  api.keepAliveTimeout = 60000;

  const wsAddr = await listen(wsHttp, splitAddress(opts.ws), opts.backlog);
  const apiAddr = await listen(api, splitAddress(opts.api), opts.backlog);
  console.log(
    `node ws peer ready: ${tls ? 'wss' : 'ws'}://${wsAddr.address}:${wsAddr.port} http://${apiAddr.address}:${apiAddr.port} ` +
      `pid ${process.pid}`,
  );

  const stop = () => {
    for (const client of wss.clients) client.terminate();
    wsHttp.close();
    api.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(`node_peer: ${err.message}`);
  process.exit(1);
});
