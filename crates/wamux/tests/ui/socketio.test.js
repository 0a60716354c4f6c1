// The Socket.IO feed, seen through the official JavaScript client: with the admin key and
// with scoped keys, which hear only their own sessions and lose the feed when revoked.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { Sandbox, API_KEY, waitFor } from './harness.js';

let sb;
const sockets = [];

before(async () => {
  sb = await Sandbox.start();
});

after(async () => {
  for (const s of sockets) s.disconnect();
  await sb?.stop();
});

function connect(opts = {}) {
  const s = io(sb.url, { transports: ['websocket'], reconnection: false, forceNew: true, ...opts });
  sockets.push(s);
  return s;
}

/** Records every event the socket receives. */
function recorder(socket) {
  const events = [];
  socket.onAny((name, body) => events.push({ name, body }));
  return {
    events,
    waitFor: (what, pred, timeout = 30000) => waitFor(what, () => events.find((e) => pred(e)), { timeout }),
    sessions: () => new Set(events.map((e) => e.body?.sessionId)),
  };
}

function connected(socket) {
  return new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
}

function refused(socket) {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => reject(new Error('connected without a valid key')));
    socket.once('connect_error', resolve);
  });
}

test('a client without the API key is refused', async () => {
  const err = await refused(connect());
  assert.match(err.message, /API key/i);
  const wrong = await refused(connect({ auth: { apiKey: 'not-the-key' } }));
  assert.match(wrong.message, /invalid API key/i);
});

test('the key is accepted in the handshake auth or in the query', async () => {
  await connected(connect({ auth: { apiKey: API_KEY } }));
  await connected(connect({ query: { apiKey: API_KEY } }));
});

test('a client sees the QR, the session connect and a phone message arrive', async () => {
  const socket = connect({ auth: { apiKey: API_KEY } });
  const rec = recorder(socket);
  await connected(socket);

  await sb.phone('15550001001', 'Linked Phone');
  await sb.phone('15550001002', 'Bob');
  await sb.api('POST', '/api/start-session', { sessionId: 'live' });

  const qr = await rec.waitFor('a qr event', (e) => e.name === 'qr' && e.body.sessionId === 'live');
  assert.equal(qr.body.event, 'qr');
  assert.equal(typeof qr.body.timestamp, 'number');
  assert.ok(qr.body.data.qr, 'the qr event carries the raw QR string');

  await sb.admin('POST', '/phones/15550001001/scan', { qr: qr.body.data.qr });
  const status = await rec.waitFor('session-status connected', (e) => e.name === 'session-status'
    && e.body.sessionId === 'live' && e.body.data.status === 'connected');
  assert.deepEqual(Object.keys(status.body).sort(), ['data', 'event', 'sessionId', 'timestamp']);

  await sb.admin('POST', '/phones/15550001002/messages', { to: '15550001001', text: 'hello over socket.io' });
  const msg = await rec.waitFor('message-received', (e) => e.name === 'message-received'
    && e.body.data.text === 'hello over socket.io');
  assert.equal(msg.body.event, 'message-received');
  assert.equal(msg.body.sessionId, 'live');
  assert.equal(msg.body.data.fromMe, false);
  assert.match(msg.body.data.from, /^15550001002/);
});

test('subscriptions narrow what a client receives', async () => {
  const all = connect({ auth: { apiKey: API_KEY } });
  const byQuery = connect({ auth: { apiKey: API_KEY }, query: { sessionId: 'sub-a' } });
  const byEvent = connect({ auth: { apiKey: API_KEY } });
  const recAll = recorder(all);
  const recQuery = recorder(byQuery);
  const recEvent = recorder(byEvent);
  await Promise.all([connected(all), connected(byQuery), connected(byEvent)]);

  const ack = await byEvent.timeout(15000).emitWithAck('subscribe', { sessionIds: ['sub-b'] });
  assert.deepEqual(ack.sessionIds, ['sub-b']);

  await sb.api('POST', '/api/start-session', { sessionId: 'sub-a' });
  await sb.api('POST', '/api/start-session', { sessionId: 'sub-b' });

  // Both sessions produce a QR; everyone waits for the ones they should see.
  await recAll.waitFor('qr of sub-a (all)', (e) => e.name === 'qr' && e.body.sessionId === 'sub-a');
  await recAll.waitFor('qr of sub-b (all)', (e) => e.name === 'qr' && e.body.sessionId === 'sub-b');
  await recQuery.waitFor('qr of sub-a (query)', (e) => e.name === 'qr' && e.body.sessionId === 'sub-a');
  await recEvent.waitFor('qr of sub-b (subscribe)', (e) => e.name === 'qr' && e.body.sessionId === 'sub-b');

  // A restart of sub-a makes more events; the sub-b-only client still sees none of them.
  const mark = recAll.events.length;
  await sb.api('POST', '/api/sessions/sub-a/restart');
  await recAll.waitFor('sub-a status after restart', (e) => e.name === 'session-status'
    && e.body.sessionId === 'sub-a' && recAll.events.indexOf(e) >= mark);
  // The feed is ordered per client, so once `all` saw it, a short grace covers the others.
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual([...recQuery.sessions()].filter((s) => s !== 'live'), ['sub-a']);
  assert.deepEqual([...recEvent.sessions()].filter((s) => s !== 'live'), ['sub-b']);

  // Unsubscribing takes a session away; subscribing to "*" brings everything back.
  const un = await all.timeout(15000).emitWithAck('unsubscribe', { sessionIds: ['sub-a'] });
  assert.equal(un.all, true);
  assert.deepEqual(un.except, ['sub-a']);
  const before = recAll.events.length;
  await sb.api('POST', '/api/sessions/sub-a/restart');
  await sb.api('POST', '/api/sessions/sub-b/restart');
  await recAll.waitFor('sub-b status after the unsubscribe', (e) => recAll.events.indexOf(e) >= before
    && e.body.sessionId === 'sub-b' && e.name === 'session-status');
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(recAll.events.slice(before).every((e) => e.body.sessionId !== 'sub-a'),
    'no sub-a event after unsubscribing from it');

  const bad = await byEvent.timeout(15000).emitWithAck('subscribe', 'nonsense');
  assert.equal(bad.error.code, 'bad_request');
});

/** A scoped key, made with the admin key: {id, key, ...}. */
function scopedKey(name, sessions, scopes) {
  return sb.api('POST', '/api/keys', { name, sessions, scopes });
}

test('a scoped key hears only the sessions its patterns name', async () => {
  const { key } = await scopedKey('tenant A feed', ['key-a'], ['read']);
  const all = connect({ auth: { apiKey: API_KEY } });
  const scoped = connect({ auth: { apiKey: key } });
  const recAll = recorder(all);
  const recScoped = recorder(scoped);
  await Promise.all([connected(all), connected(scoped)]);
  // Asking for every session does not widen what the key may hear.
  await scoped.timeout(15000).emitWithAck('subscribe', { sessionIds: ['*'] });

  await sb.api('POST', '/api/start-session', { sessionId: 'key-a' });
  await sb.api('POST', '/api/start-session', { sessionId: 'key-b' });
  await recAll.waitFor('qr of key-a (admin)', (e) => e.name === 'qr' && e.body.sessionId === 'key-a');
  await recAll.waitFor('qr of key-b (admin)', (e) => e.name === 'qr' && e.body.sessionId === 'key-b');
  await recScoped.waitFor('qr of key-a (scoped)', (e) => e.name === 'qr' && e.body.sessionId === 'key-a');

  // key-b's events are out (the admin heard them); a later key-a event is the mark: the feed
  // is ordered per client, so once the scoped client has it, it would have had key-b's too.
  const mark = recScoped.events.length;
  await sb.api('POST', '/api/sessions/key-a/restart');
  await recScoped.waitFor('key-a status after the restart (scoped)', (e) => e.name === 'session-status'
    && e.body.sessionId === 'key-a' && recScoped.events.indexOf(e) >= mark);
  assert.deepEqual([...recScoped.sessions()], ['key-a'], 'the scoped key heard key-a only');
  assert.ok(recAll.sessions().has('key-b'));
});

test('a scoped key\'s connection is closed when the key is revoked', async () => {
  const { id, key } = await scopedKey('revoked feed', ['key-a'], ['read']);
  const socket = connect({ auth: { apiKey: key } });
  await connected(socket);
  const closed = new Promise((resolve) => socket.once('disconnect', resolve));

  const r = await sb.api('DELETE', `/api/keys/${id}`);
  assert.deepEqual(r, { id, revoked: true });
  assert.equal(await closed, 'io server disconnect', 'the server closed it');

  // And it cannot come back.
  const again = await refused(connect({ auth: { apiKey: key } }));
  assert.match(again.message, /invalid API key/i);
});

test('a key without the read scope is refused', async () => {
  const { key } = await scopedKey('sender only', '*', ['send', 'manage']);
  const err = await refused(connect({ auth: { apiKey: key } }));
  assert.equal(err.message, 'this key lacks the `read` scope');
  // The key itself works: it is the feed it may not have.
  const r = await fetch(`${sb.url}/api/sessions`, { headers: { 'X-API-Key': key } });
  assert.equal(r.status, 200);
});
