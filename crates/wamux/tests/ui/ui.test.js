// The management UI in headless Chromium, walked through as an operator would, saving a
// screenshot of each main screen into docs/screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';
import { Sandbox, API_KEY, receiver, waitFor } from './harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.resolve(here, '../../../../docs/screenshots');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const SESSION = 'sales';
const LINKED_PHONE = '15557770001';
const CUSTOMER = '15557770002';

let sb;
let browser;
let page;
let hook;
const pageErrors = [];

before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  sb = await Sandbox.start();
  hook = await receiver();
  await sb.phone(LINKED_PHONE, 'Sales Desk');
  await sb.phone(CUSTOMER, 'Carla Customer');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e));
  // Failed requests are logged by the browser itself; the UI shows those to the user, and
  // some (no QR yet, no webhook yet) are expected. Anything else is a bug in the page.
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(new Error(m.text()));
  });
});

after(async () => {
  await browser?.close();
  await hook?.close();
  if (process.exitCode) sb?.dumpLog();
  await sb?.stop();
});

async function shot(name, target = page, { fullPage = false } = {}) {
  // Toasts come and go; they would make the pictures differ from run to run.
  await target.evaluate(() => document.querySelectorAll('.toast').forEach((t) => t.remove()));
  await target.screenshot({ path: path.join(shots, `${name}.png`), fullPage });
}

// A small real PNG (a 48x48 green square), so the media preview has something to show.
function tinyPng() {
  const w = 48;
  const h = 48;
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; ihdr[9] = 2; // 8-bit RGB
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = y * (w * 3 + 1) + 1 + x * 3;
      raw[o] = 18; raw[o + 1] = 140 + ((x + y) % 40); raw[o + 2] = 94;
    }
  }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

test('an operator links a phone, chats and sets a webhook from the UI', async (t) => {
  await t.test('signs in with the API key', async () => {
    await page.goto(sb.url);
    await page.locator('#login-key').waitFor();
    await shot('01-sign-in');
    await page.fill('#login-key', 'wrong-key');
    await page.click('#login-form button[type=submit]');
    await page.locator('#login-error', { hasText: 'refused' }).waitFor();
    await page.fill('#login-key', API_KEY);
    await page.click('#login-form button[type=submit]');
    await page.locator('#app').waitFor();
    await page.locator('#feed.live').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('wamux.apiKey')), API_KEY);
  });

  await t.test('creates a session and sees its QR code', async () => {
    await page.fill('#create-id', SESSION);
    await page.press('#create-id', 'Enter');
    await page.locator(`.session-item[data-session-id=${SESSION}]`).waitFor();
    await page.locator('#qr-image').waitFor({ timeout: 30000 });
    const src = await page.getAttribute('#qr-image', 'src');
    assert.match(src, /^data:image\/png;base64,/);
    await shot('02-session-qr');
  });

  await t.test('the status turns connected without a reload once the phone scans', async () => {
    await page.evaluate(() => { window.__noReload = true; });
    const { qr } = await sb.api('GET', `/api/qr/${SESSION}`);
    await sb.admin('POST', `/phones/${LINKED_PHONE}/scan`, { qr });
    await page.locator('#detail-status[data-status=connected]').waitFor({ timeout: 30000 });
    await page.locator('#linked').waitFor();
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
    const item = page.locator(`.session-item[data-session-id=${SESSION}] .status`);
    assert.equal(await item.getAttribute('data-status'), 'connected');
    await shot('03-session-connected');
  });

  await t.test('sends a message and sees it and the reply in the history, live', async () => {
    await page.click('#tab-messages');
    await page.locator('#send-form').waitFor();
    await page.fill('#send-to', CUSTOMER);
    await page.fill('#send-text', 'Hello Carla, your order has shipped.');
    await page.click('#send-form button[type=submit]');
    await page.locator('.message.out', { hasText: 'your order has shipped' }).waitFor();

    // The customer answers from the phone: it appears live.
    await sb.admin('POST', `/phones/${CUSTOMER}/messages`, { to: LINKED_PHONE, text: 'Thanks! When will it arrive?' });
    await page.locator('.message.in', { hasText: 'When will it arrive?' }).waitFor({ timeout: 30000 })
      .catch(async (e) => {
        // Say where the message got stuck: not at the gateway at all, or not shown by the page.
        const history = await sb.api('GET', `/api/messages/${SESSION}`).catch((err) => err.message);
        process.stderr.write(`history of ${SESSION}: ${JSON.stringify(history)}\n`);
        throw e;
      });
    // The customer's phone acknowledges; the delivery status moves on without a reload.
    await page.locator('.message.out[data-status=delivered], .message.out[data-status=read]').first()
      .waitFor({ timeout: 30000 });
  });

  await t.test('sends a file and sees its preview', async () => {
    await page.setInputFiles('#send-file', { name: 'receipt.png', mimeType: 'image/png', buffer: tinyPng() });
    await page.fill('#send-text', 'Your receipt');
    await page.click('#send-form button[type=submit]');
    await page.locator('.message.out', { hasText: 'Your receipt' }).waitFor({ timeout: 30000 });
    await page.locator('.message.out img.media-img').first().waitFor({ timeout: 15000 });
  });
  await shot('04-messages', page, { fullPage: true });

  await t.test('configures a webhook and sees a delivery', async () => {
    await page.click('#tab-webhook');
    await page.locator('#webhook-form').waitFor();
    await page.fill('#webhook-url', hook.url);
    await page.uncheck('#webhook-form input[value=all]');
    await page.check('#webhook-form input[value=message-received]');
    await page.check('#webhook-form input[value=message-from-me]');
    await page.fill('#webhook-headers', 'X-Team: sales');
    await page.click('#webhook-form button[type=submit]');
    await page.locator('#secret-value').waitFor();
    assert.match(await page.textContent('#secret-value'), /^whsec_/);

    // "Send test event" posts a signed sample straight to the receiver.
    await page.click('#webhook-test');
    await page.locator('.toast', { hasText: 'Test event delivered' }).waitFor({ timeout: 15000 });
    const sample = hook.received.find((r) => r.body?.data?.text === 'Hello from wamux webhook test');
    assert.ok(sample, 'the receiver got the test event');
    assert.equal(sample.body.sessionId, SESSION);
    assert.equal(sample.headers['x-team'], 'sales');

    await sb.admin('POST', `/phones/${CUSTOMER}/messages`, { to: LINKED_PHONE, text: 'Webhook, are you there?' });
    await waitFor('the receiver to get the message', () => hook.received.find((r) => r.body?.data?.text === 'Webhook, are you there?'));
    const got = hook.received.find((r) => r.body?.data?.text === 'Webhook, are you there?');
    assert.equal(got.headers['x-team'], 'sales');
    assert.ok(got.headers['webhook-signature']);

    await page.locator('#delivery-rows tr[data-status=delivered]').first().waitFor({ timeout: 30000 });
    await shot('05-webhook', page, { fullPage: true });
  });

  await t.test('the virtual phones tab sends a message from a phone', async () => {
    await page.click('#tab-phones');
    const card = page.locator(`.phone[data-phone="${CUSTOMER}"]`);
    await card.waitFor();
    await card.locator('input[name=text]').fill('Sent from the sandbox phone');
    await card.locator('button[type=submit]').click();
    await page.locator('.toast', { hasText: 'Sent from' }).waitFor();
    await shot('06-virtual-phones', page, { fullPage: true });
    await page.click('#tab-messages');
    await page.locator('.message.in', { hasText: 'Sent from the sandbox phone' }).waitFor({ timeout: 30000 });
  });

  await t.test('a second session links with one click on a virtual phone', async () => {
    await page.fill('#create-id', 'support');
    await page.click('#create-form button[type=submit]');
    await page.locator('#qr-image').waitFor({ timeout: 30000 });
    await page.locator('#scan-qr').waitFor();
    await page.selectOption('#scan-phone', '');
    await page.click('#scan-qr');
    await page.locator('#detail-status[data-status=connected]').waitFor({ timeout: 30000 });
  });

  await t.test('delete asks for confirmation', async () => {
    await page.click('#detail-header .btn-danger');
    await page.locator('#confirm[open]').waitFor();
    await shot('07-confirm-delete');
    await page.click('#confirm button[value=cancel]');
    assert.equal(await page.locator('.session-item[data-session-id=support]').count(), 1);
    await page.click('#detail-header .btn-danger');
    await page.click('#confirm-ok');
    await waitFor('support to disappear', async () => (await page.locator('.session-item[data-session-id=support]').count()) === 0);
  });

  await t.test('works on a phone-sized screen', async () => {
    const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    const mobile = await ctx.newPage();
    await mobile.goto(sb.url);
    await mobile.fill('#login-key', API_KEY);
    await mobile.press('#login-key', 'Enter');
    await mobile.locator(`.session-item[data-session-id=${SESSION}]`).click();
    await mobile.locator('#detail-status').waitFor();
    const overflow = await mobile.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `no horizontal scrolling on a phone (overflow ${overflow}px)`);
    await shot('08-phone-screen', mobile);
    await ctx.close();
  });

  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});
