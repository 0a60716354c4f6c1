// A Socket.IO client that stops reading must not slow the gateway or the other clients:
// its events are dropped (with a log line) once its bounded buffer is full.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { io } from 'socket.io-client';
import { Sandbox, API_KEY, waitFor } from './harness.js';

let sb;

before(async () => {
  sb = await Sandbox.start();
});

after(async () => {
  await sb?.stop();
});

/** A WebSocket Socket.IO client by hand, so it can connect and then never read again. */
async function stalledClient(url) {
  const { port, hostname } = new URL(url);
  const sock = net.connect(Number(port), hostname);
  await new Promise((r) => sock.once('connect', r));
  let seen = '';
  sock.on('data', (d) => { seen += d.toString('latin1'); });
  sock.write([
    `GET /socket.io/?EIO=4&transport=websocket&apiKey=${encodeURIComponent(API_KEY)} HTTP/1.1`,
    `Host: ${hostname}:${port}`, 'Upgrade: websocket', 'Connection: Upgrade',
    `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}`, 'Sec-WebSocket-Version: 13', '', '',
  ].join('\r\n'));
  await waitFor('the engine.io open packet', () => seen.includes('101') && seen.includes('"sid"'));
  // Socket.IO CONNECT to "/": a masked text frame "40".
  const payload = Buffer.from('40');
  const mask = crypto.randomBytes(4);
  const frame = Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask,
    Buffer.from(payload.map((b, i) => b ^ mask[i % 4]))]);
  sock.write(frame);
  await waitFor('the namespace connect ack', () => /40\{"sid"/.test(seen));
  sock.pause(); // from here on the kernel buffers fill and the server's writes stall
  return sock;
}

test('a client that stops reading is dropped from, not waited for', async () => {
  await sb.phone('15550003001', 'Shop');
  await sb.phone('15550003002', 'Customer');
  await sb.linkedSession('busy', '15550003001');

  const stalled = await stalledClient(sb.url);
  const healthy = io(sb.url, { auth: { apiKey: API_KEY }, transports: ['websocket'], reconnection: false });
  await new Promise((r, j) => { healthy.once('connect', r); healthy.once('connect_error', j); });
  const got = new Set();
  healthy.on('message-sent', (b) => got.add(b.data.id));
  healthy.on('message-from-me', (b) => got.add(b.data.id));

  // More events than a client's buffer holds (512 packets), with text large enough to fill
  // the TCP buffers first.
  const N = 750;
  const text = 'x'.repeat(30000);
  const ids = [];
  const started = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < N) {
      const i = next++;
      const r = await sb.api('POST', '/api/send-message', { sessionId: 'busy', to: '15550003002', text: `${i} ${text}` });
      ids.push(r.messageId);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  const elapsed = Date.now() - started;

  await waitFor('the healthy client to see every message', () => ids.every((id) => got.has(id)), { timeout: 60000 });
  await waitFor('the drop to be logged', () => /too slow; event dropped/.test(fs.readFileSync(sb.logPath, 'utf8')), { timeout: 10000 });
  assert.ok(elapsed < 45000, `sending ${N} messages took ${elapsed} ms`);
  healthy.disconnect();
  stalled.destroy();
});
