// Interop with an independent WhatsApp Web client: Baileys, unmodified and pinned from npm,
// against the simulator of a real `wamux sandbox`. It links to a simulated phone's account
// by QR, resumes without a new QR after a restart, exchanges text and an image with another
// phone and with a wamux session, sees delivery and read receipts and the phone's app state
// (pins, mutes, archives), over a network with
// the latency and jitter of a real one. What holds for
// whatsapp-rust (which wamux is built on) must hold for a client written elsewhere.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Sandbox, waitFor } from './harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));

const CAROL = '15557770001'; // the account Baileys is linked to
const DAVE = '15557770002'; // a phone Carol chats with
const SHOP = '15557770003'; // the account of the wamux session
const SESSION = 'shop';
const jid = (phone) => `${phone}@s.whatsapp.net`;

// Baileys' message statuses (proto.WebMessageInfo.Status; it reports no server ack).
const DELIVERY_ACK = 3;
const READ = 4;

// A 1×1 PNG, and a second one so the two directions are told apart.
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
const PNG2 = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');
const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

/** The Baileys app as a child process: what it printed, and commands to it. */
class Baileys {
  static start(authDir) {
    const child = spawn(process.execPath, [path.join(here, 'baileys-client.js')], {
      env: {
        ...process.env,
        WA_WS_URL: sb.wsUrl,
        WA_NOISE_ROOT: sb.noiseRootKey,
        AUTH_DIR: authDir,
        NODE_EXTRA_CA_CERTS: sb.caFile,
      },
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
    });
    return new Baileys(child);
  }

  constructor(child) {
    this.child = child;
    this.events = [];
    this.replies = new Map();
    this.nextReq = 1;
    this.stderr = '';
    for (const s of [child.stdout, child.stderr]) {
      s.setEncoding('utf8');
      s.on('data', (d) => { this.stderr = (this.stderr + d).slice(-2000000); });
    }
    readline.createInterface({ input: child.stdio[3] }).on('line', (line) => {
      const msg = JSON.parse(line);
      if (msg.reply !== undefined) this.replies.get(msg.reply)?.(msg);
      else this.events.push(msg);
    });
  }

  /** The first event (from the start) matching `pred`. */
  event(what, pred, timeout = 30000) {
    return waitFor(what, () => {
      if (this.child.exitCode !== null) throw new Error(`the Baileys client exited with ${this.child.exitCode}`);
      return this.events.find(pred);
    }, { timeout, interval: 50 }).catch((e) => {
      process.stderr.write(`Baileys saw: ${JSON.stringify(this.events)}\nits log:\n${this.stderr.slice(-(+process.env.BAILEYS_LOG_TAIL || 4000))}\n`);
      throw e;
    });
  }

  async send(cmd) {
    const req = this.nextReq++;
    const answer = new Promise((resolve) => this.replies.set(req, resolve));
    this.child.stdin.write(`${JSON.stringify({ req, ...cmd })}\n`);
    const r = await answer;
    if (r.error) throw new Error(`Baileys could not send: ${r.error}`);
    return r.id;
  }

  async stop() {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin.end();
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10000);
    await exited;
    clearTimeout(t);
  }
}

let sb;
let authDir;
let carol;

before(async () => {
  sb = await Sandbox.start();
  // Round trips as on a real network (tens of milliseconds, jittery), not loopback's.
  await sb.admin('POST', '/network', { latencyMs: 30, jitterMs: 20 });
  await sb.phone(CAROL, 'Carol');
  await sb.phone(DAVE, 'Dave');
  await sb.phone(SHOP, 'Corner Shop');
  authDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wamux-baileys-'));
});

after(async () => {
  await carol?.stop();
  if (process.exitCode) sb?.dumpLog();
  await sb?.stop();
  fs.rmSync(authDir, { recursive: true, force: true });
});

const phoneMessages = async (phone) => {
  const r = await sb.admin('GET', `/phones/${phone}/messages`);
  return Array.isArray(r) ? r : (r?.messages ?? []);
};
const phoneHas = (phone, what, pred) => waitFor(what, async () => (await phoneMessages(phone)).find(pred), { timeout: 30000 });

test('Baileys links to an account by scanning its QR code', async () => {
  carol = Baileys.start(authDir);
  const { qr } = await carol.event('a QR code', (e) => e.event === 'qr');
  assert.match(qr, /^https:\/\/wa\.me\/settings\/linked_devices#/);
  const linked = await sb.admin('POST', `/phones/${CAROL}/scan`, { qr });
  assert.equal(linked.phone, CAROL);
  const open = await carol.event('the linked client to open', (e) => e.event === 'open', 60000);
  assert.match(open.me.id, new RegExp(`^${CAROL}:${linked.device}@s\\.whatsapp\\.net$`));
  const account = await sb.admin('GET', `/phones/${CAROL}`);
  assert.ok(account.devices.some((d) => d.id === linked.device), 'the simulator lists the new device');
});

test('Baileys logs in again after a restart without a new QR code', async () => {
  await carol.stop();
  carol = Baileys.start(authDir);
  const open = await carol.event('the restarted client to open', (e) => e.event === 'open', 60000);
  assert.match(open.me.id, new RegExp(`^${CAROL}:`));
  assert.equal(carol.events.filter((e) => e.event === 'qr').length, 0, 'no QR code after a restart');
});

test('Baileys and a phone exchange text and images, with receipts', async () => {
  // The phone writes first.
  await sb.admin('POST', `/phones/${DAVE}/messages`, { to: CAROL, text: 'hi Carol, Dave here' });
  const got = await carol.event('Dave\'s text', (e) => e.event === 'message' && e.text === 'hi Carol, Dave here');
  assert.equal(got.from, jid(DAVE));
  assert.equal(got.fromMe, false);

  // Baileys answers; the phone decrypts it, and its delivery and read receipts come back.
  const id = await carol.send({ cmd: 'text', to: jid(DAVE), text: 'hello Dave' });
  await phoneHas(DAVE, 'Dave to have Carol\'s answer', (m) => m.id === id && m.text === 'hello Dave' && !m.fromMe);
  await carol.event('the delivery receipt', (e) => e.event === 'update' && e.id === id && e.status >= DELIVERY_ACK);
  assert.deepEqual(await sb.admin('POST', `/phones/${DAVE}/read`, { ids: [id] }), { read: 1 });
  await carol.event('the read receipt', (e) => e.event === 'update' && e.id === id && e.status === READ);

  // An image each way: uploaded encrypted to the media host, downloaded and decrypted by the other side.
  await sb.admin('POST', `/phones/${DAVE}/messages`, {
    to: CAROL, caption: 'from Dave', media: { mimetype: 'image/png', data: PNG.toString('base64') },
  });
  const img = await carol.event('Dave\'s image', (e) => e.event === 'message' && e.image && e.from === jid(DAVE));
  assert.deepEqual(img.image, { mimetype: 'image/png', caption: 'from Dave', size: PNG.length, sha256: sha256(PNG) });

  const imgId = await carol.send({ cmd: 'image', to: jid(DAVE), data: PNG2.toString('base64'), caption: 'from Carol' });
  const onPhone = await phoneHas(DAVE, 'Dave to have Carol\'s image', (m) => m.id === imgId);
  assert.equal(onPhone.caption, 'from Carol');
  assert.equal(onPhone.media.kind, 'image');
  assert.equal(onPhone.media.sha256, sha256(PNG2));
});

test('What the phone pins, archives and mutes reaches Baileys as app state it verifies', async () => {
  // Baileys checks the patches' MACs and the collection's LTHash with its own code.
  const pin = await sb.admin('POST', `/phones/${CAROL}/chats/${DAVE}`, { pin: true, mute: true });
  assert.equal(pin.state.pinned, true);
  const pinned = await carol.event('the pin', (e) => e.event === 'chat' && e.id === jid(DAVE) && e.pinned);
  assert.ok(pinned.pinned > 0, 'pinned carries the time it was pinned');
  await carol.event('the mute', (e) => e.event === 'chat' && e.id === jid(DAVE) && e.muteEndTime !== undefined && e.muteEndTime !== null);
  await sb.admin('POST', `/phones/${CAROL}/chats/${DAVE}`, { archive: true });
  await carol.event('the archive', (e) => e.event === 'chat' && e.id === jid(DAVE) && e.archived === true);
});

test('Baileys and a wamux session exchange text and images, with receipts', async () => {
  await sb.linkedSession(SESSION, SHOP);

  // wamux writes to the Baileys account and sees it delivered.
  const sent = await sb.api('POST', '/api/send-message', { sessionId: SESSION, to: CAROL, text: 'your order is ready' });
  const got = await carol.event('the shop\'s text', (e) => e.event === 'message' && e.text === 'your order is ready');
  assert.equal(got.from, jid(SHOP));
  assert.equal(got.id, sent.messageId);
  await waitFor('the shop\'s message to be delivered', async () => {
    const { messages } = await sb.api('GET', `/api/messages/${SESSION}?chat=${CAROL}&direction=out`);
    const m = messages.find((x) => x.id === sent.messageId);
    return m && ['delivered', 'read'].includes(m.status);
  });

  const media = await sb.api('POST', '/api/send-media', {
    sessionId: SESSION, to: CAROL, base64: `data:image/png;base64,${PNG.toString('base64')}`, caption: 'the receipt',
  });
  const img = await carol.event('the shop\'s image', (e) => e.event === 'message' && e.id === media.messageId);
  assert.deepEqual(img.image, { mimetype: 'image/png', caption: 'the receipt', size: PNG.length, sha256: sha256(PNG) });

  // Baileys writes to the wamux session: text and an image reach its history, and the
  // session's delivery receipt reaches Baileys.
  const id = await carol.send({ cmd: 'text', to: jid(SHOP), text: 'thanks, on my way' });
  await carol.event('the session\'s delivery receipt', (e) => e.event === 'update' && e.id === id && e.status >= DELIVERY_ACK);
  const imgId = await carol.send({ cmd: 'image', to: jid(SHOP), data: PNG2.toString('base64'), caption: 'my ticket' });
  const inbound = await waitFor('the session to have both', async () => {
    const { messages } = await sb.api('GET', `/api/messages/${SESSION}?chat=${CAROL}&direction=in`);
    const text = messages.find((m) => m.id === id);
    const image = messages.find((m) => m.id === imgId && m.media && !m.media.pending);
    return text && image && { text, image };
  });
  assert.equal(inbound.text.text, 'thanks, on my way');
  assert.equal(inbound.image.caption, 'my ticket');
  assert.equal(inbound.image.media.sha256, sha256(PNG2));
});
