// The management UI in headless Chromium, walked through as an operator would, saving a
// screenshot of each main screen into docs/screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { Sandbox, API_KEY, receiver, waitFor, launchChromium } from './harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.resolve(here, '../../../../docs/screenshots');

const SESSION = 'sales';
const LINKED_PHONE = '15557770001';
const CUSTOMER = '15557770002';
// A second session, linked by pairing code, for the tests that change a session's state.
const DESK = 'frontdesk';
const DESK_PHONE = '15557770003';

let sb;
let browser;
let page;
let hook;
let down; // a webhook receiver that starts out failing
const pageErrors = [];

before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  // One retry, one second later: a delivery to a receiver that answers 500 is dead within
  // seconds instead of retrying for a day.
  sb = await Sandbox.start({ env: { WAMUX_WEBHOOK_RETRY_SCHEDULE: '1s' } });
  hook = await receiver();
  down = await receiver({ status: 500 });
  await sb.phone(LINKED_PHONE, 'Sales Desk');
  await sb.phone(CUSTOMER, 'Carla Customer');
  browser = await launchChromium();
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
  await down?.close();
  if (process.exitCode) sb?.dumpLog();
  await sb?.stop();
});

/** For a wait on the page's session status that timed out: what the page and the API say. */
async function statusDiagnosis(id, e) {
  const shown = await page.locator('#detail-status').getAttribute('data-status').catch(() => 'nothing');
  const api = await sb.api('GET', `/api/status/${id}`).catch((err) => err.message);
  process.stderr.write(`${id}: the page shows ${shown}; the API says ${JSON.stringify(api)}\n`);
  throw e;
}

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
    await page.locator('#detail-status[data-status=connected]').waitFor({ timeout: 30000 })
      .catch((e) => statusDiagnosis(SESSION, e));
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
    // The top bar holds more than fits in one line (the pages, the feed, Sign out): none of
    // it is cut off.
    for (const sel of ['#nav-keys', '#feed', '#signout']) {
      const box = await mobile.locator(sel).boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= 390, `${sel} is on the screen: ${JSON.stringify(box)}`);
    }
    await shot('08-phone-screen', mobile);
    await ctx.close();
  });

  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});

/** What the API answers with an error, for comparing with what the page shows. */
async function apiError(method, route, body) {
  const r = await fetch(`${sb.url}${route}`, {
    method,
    headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.ok(r.status >= 400 && r.status < 500, `${method} ${route} should fail, got HTTP ${r.status}`);
  return (await r.json()).error;
}

/** Waits until `tab` is the selected tab and has the keyboard focus. */
async function tabIsSelectedAndFocused(tab) {
  await page.locator(`#tab-${tab}[aria-selected=true]`).waitFor({ timeout: 15000 });
  await page.waitForFunction((id) => document.activeElement?.id === id, `tab-${tab}`, { timeout: 15000 })
    .catch(async () => {
      const now = await page.evaluate(() => document.activeElement?.outerHTML.slice(0, 120));
      assert.fail(`tab-${tab} should have the focus; it is on ${now}`);
    });
}

const headerButton = (label) => page.locator('#detail-header button', { hasText: label });

test('a session links with a pairing code typed on the phone', async () => {
  await sb.phone(DESK_PHONE, 'Front Desk');
  await page.fill('#create-id', DESK);
  await page.press('#create-id', 'Enter');
  await page.locator(`.session-item[data-session-id=${DESK}]`).waitFor();
  // A code can be asked for once the session is up and waiting for a login (showing a QR).
  await page.locator('#qr-image').waitFor({ timeout: 30000 });
  await page.evaluate(() => { window.__noReload = true; });

  await page.fill('#pair-phone', `+${DESK_PHONE}`);
  await page.getByRole('button', { name: 'Get pairing code' }).click();
  const shown = page.locator('.pair-code strong');
  await shown.waitFor({ timeout: 30000 });
  const text = await shown.textContent();
  assert.match(text, /^[0-9A-Z]{4}-[0-9A-Z]{4}$/, `an 8-character code, shown in two halves: ${text}`);

  // The phone's user types it into WhatsApp › Linked devices › Link with phone number.
  const linked = await sb.admin('POST', `/phones/${DESK_PHONE}/link-code`, { code: text.replace('-', '') });
  assert.equal(linked.phone, DESK_PHONE);
  await page.locator('#detail-status[data-status=connected]').waitFor({ timeout: 60000 })
    .catch((e) => statusDiagnosis(DESK, e));
  await page.locator('#linked', { hasText: `+${DESK_PHONE}` }).waitFor({ timeout: 30000 });
  assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
  const status = await sb.api('GET', `/api/status/${DESK}`);
  assert.equal(status.status, 'connected');
  assert.equal(status.me.phone, DESK_PHONE);
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});

test('a failed webhook delivery is shown with Retry, and the retry delivers it', async () => {
  await page.click('#tab-webhook');
  await page.locator('#webhook-form').waitFor();
  await page.fill('#webhook-url', down.url);
  await page.uncheck('#webhook-form input[value=all]');
  await page.check('#webhook-form input[value=message-received]');
  await page.click('#webhook-form button[type=submit]');
  await page.locator('#secret-value').waitFor();

  const text = 'Is anyone at the front desk?';
  await sb.admin('POST', `/phones/${CUSTOMER}/messages`, { to: DESK_PHONE, text });
  // The receiver answers 500 twice (the attempt and the one retry): the delivery is dead,
  // and the page says so without a click on Refresh.
  const dead = page.locator('#delivery-rows tr[data-status=dead]');
  await dead.waitFor({ timeout: 60000 });
  assert.match(await dead.textContent(), /HTTP 500/);
  const { deliveries } = await sb.api('GET', `/api/${DESK}/webhook/deliveries`);
  const d = deliveries.find((x) => x.status === 'dead');
  assert.ok(d, `a dead delivery in the API: ${JSON.stringify(deliveries)}`);
  assert.equal(d.event, 'message-received');
  assert.equal(d.attempts, 2);
  assert.equal(d.lastStatusCode, 500);
  assert.equal(down.received.filter((r) => r.body?.data?.text === text).length, 2, 'the receiver saw both attempts');

  // The receiver is back; the operator retries from the list.
  down.answerWith(200);
  const row = page.locator(`#delivery-rows tr[data-delivery-id="${d.id}"]`);
  await row.getByRole('button', { name: 'Retry' }).click();
  await page.locator('.toast', { hasText: 'Retry queued' }).waitFor();
  await page.locator(`#delivery-rows tr[data-delivery-id="${d.id}"][data-status=delivered]`).waitFor({ timeout: 60000 });
  assert.equal(await row.getByRole('button', { name: 'Retry' }).count(), 0, 'a delivered row has no Retry');
  const after = (await sb.api('GET', `/api/${DESK}/webhook/deliveries`)).deliveries.find((x) => x.id === d.id);
  assert.equal(after.status, 'delivered');
  assert.equal(down.received.filter((r) => r.body?.data?.text === text).length, 3, 'the retry reached the receiver');
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});

test('the keyboard is enough: arrow keys move between tabs, Escape closes a dialog, Enter submits', async (t) => {
  await t.test('the session tabs take the arrow keys, Home and End', async () => {
    await page.click('#tab-link');
    await page.locator('#tab-link[aria-selected=true]').waitFor();
    await page.focus('#tab-link');
    await page.keyboard.press('ArrowRight');
    await tabIsSelectedAndFocused('messages');
    await page.locator('#send-form').waitFor();
    assert.match(page.url(), new RegExp(`#/sessions/${DESK}/messages$`));
    await page.keyboard.press('ArrowRight');
    await tabIsSelectedAndFocused('groups');
    await page.keyboard.press('ArrowRight');
    await tabIsSelectedAndFocused('webhook');
    await page.locator('#webhook-form').waitFor();
    await page.keyboard.press('End');
    await tabIsSelectedAndFocused('phones');
    await page.keyboard.press('ArrowRight'); // wraps around
    await tabIsSelectedAndFocused('link');
    await page.keyboard.press('ArrowLeft');
    await tabIsSelectedAndFocused('phones');
    await page.keyboard.press('Home');
    await tabIsSelectedAndFocused('link');
    // Only the selected tab is in the Tab order.
    assert.deepEqual(await page.$$eval('[role=tab]', (tabs) => tabs.map((x) => x.tabIndex)), [0, -1, -1, -1, -1]);
  });

  await t.test('Escape closes the confirmation and nothing happens', async () => {
    await headerButton('Delete').focus();
    await page.keyboard.press('Enter');
    await page.locator('#confirm[open]').waitFor();
    // The safe choice has the focus.
    assert.equal(await page.evaluate(() => document.activeElement?.value), 'cancel');
    await page.keyboard.press('Escape');
    await page.locator('#confirm[open]').waitFor({ state: 'detached' });
    assert.equal(await page.locator(`.session-item[data-session-id=${DESK}]`).count(), 1);
    assert.equal((await sb.api('GET', `/api/status/${DESK}`)).status, 'connected');
  });

  await t.test('Enter in the message form sends it', async () => {
    await page.click('#tab-messages');
    await page.locator('#send-form').waitFor();
    await page.fill('#send-text', 'Your table is ready.');
    await page.fill('#send-to', CUSTOMER);
    await page.press('#send-to', 'Enter');
    await page.locator('.message.out', { hasText: 'Your table is ready.' }).waitFor({ timeout: 30000 });
    // The live feed may show the message before the send's answer is in; the answer clears
    // the box (and would clear whatever was typed before it came).
    await page.waitForFunction(() => document.querySelector('#send-text').value === '', null, { timeout: 30000 });
    // In the message box Enter is a new line; Ctrl+Enter sends.
    await page.fill('#send-text', 'Second line');
    await page.press('#send-text', 'Control+Enter');
    await page.locator('.message.out', { hasText: 'Second line' }).waitFor({ timeout: 30000 });
    await page.waitForFunction(() => document.querySelector('#send-text').value === '', null, { timeout: 30000 });
    const { messages } = await sb.api('GET', `/api/messages/${DESK}?direction=out`);
    for (const text of ['Your table is ready.', 'Second line']) {
      assert.ok(messages.some((m) => m.text === text && m.to.startsWith(CUSTOMER)), `"${text}" is in the history`);
    }
  });
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});

test('errors are shown next to the form that caused them', async (t) => {
  await t.test('a message to an invalid number shows the API\'s error', async () => {
    await page.click('#tab-messages');
    await page.locator('#send-form').waitFor();
    await page.fill('#send-to', '12345');
    await page.fill('#send-text', 'Does this number exist?');
    await page.click('#send-form button[type=submit]');
    const shown = page.locator('#send-form .form-error');
    await shown.waitFor({ timeout: 15000 });
    const err = await apiError('POST', '/api/send-message', { sessionId: DESK, to: '12345', text: 'Does this number exist?' });
    assert.equal(err.code, 'invalid_phone');
    assert.equal(await shown.textContent(), `${err.message} (${err.code})`);
    assert.equal(await page.inputValue('#send-text'), 'Does this number exist?', 'what was typed is kept');

    // Corrected, it goes out and the error is gone.
    await page.fill('#send-to', CUSTOMER);
    await page.click('#send-form button[type=submit]');
    await page.locator('.message.out', { hasText: 'Does this number exist?' }).waitFor({ timeout: 30000 });
    await page.waitForFunction(() => document.querySelector('#send-text').value === '', null, { timeout: 30000 });
    assert.equal(await shown.isHidden(), true);
  });

  await t.test('a pairing code for a linked session shows the API\'s refusal', async () => {
    await page.click('#tab-link');
    await page.fill('#pair-phone', DESK_PHONE);
    await page.press('#pair-phone', 'Enter');
    const shown = page.locator('#tabpanel .form-error:not([hidden])');
    await shown.waitFor({ timeout: 30000 });
    const err = await apiError('POST', `/api/sessions/${DESK}/pairing-code`, { phone: DESK_PHONE });
    assert.equal(err.code, 'wrong_state');
    assert.equal(await shown.textContent(), `${err.message} (${err.code})`);
  });

  await t.test('an invalid session id is refused with the rule it breaks', async () => {
    const before = (await sb.api('GET', '/api/sessions')).sessions.length;
    await page.fill('#create-id', 'front desk!');
    await page.press('#create-id', 'Enter');
    const shown = page.locator('#create-error');
    await shown.waitFor();
    assert.match(await shown.textContent(), /letters, digits, "_" or "-"/);
    assert.equal(await page.inputValue('#create-id'), 'front desk!', 'what was typed is kept');
    assert.equal((await sb.api('GET', '/api/sessions')).sessions.length, before, 'no session was created');
    await page.fill('#create-id', '');
  });
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});

test('restart and log out ask first, then do it', async (t) => {
  await t.test('after Restart the session comes back connected', async () => {
    // Every status the header shows, in order, so a short "connecting" is not missed.
    await page.evaluate(() => {
      window.__statuses = [];
      new MutationObserver(() => {
        const s = document.querySelector('#detail-status')?.dataset.status;
        if (s && window.__statuses.at(-1) !== s) window.__statuses.push(s);
      }).observe(document.querySelector('#detail-body'), { subtree: true, childList: true, attributes: true });
    });
    await headerButton('Restart').click();
    await page.locator('#confirm[open]').waitFor();
    assert.equal(await page.textContent('#confirm-title'), `Restart ${DESK}?`);
    assert.match(await page.textContent('#confirm-text'), /stays linked/);
    await page.click('#confirm button[value=cancel]');
    await page.locator('#confirm[open]').waitFor({ state: 'detached' });

    await headerButton('Restart').click();
    await page.locator('#confirm[open]').waitFor();
    await page.click('#confirm-ok');
    await page.locator('.toast', { hasText: `Session ${DESK} restarting` }).waitFor({ timeout: 30000 });
    await page.waitForFunction(() => window.__statuses.includes('connecting') && window.__statuses.at(-1) === 'connected', null, { timeout: 60000 })
      .catch(async (e) => {
        process.stderr.write(`statuses shown: ${JSON.stringify(await page.evaluate(() => window.__statuses))}\n`);
        throw e;
      });
    assert.equal((await sb.api('GET', `/api/status/${DESK}`)).status, 'connected');
    // Restarted once: the cancelled dialog did nothing.
    const { events } = await sb.api('GET', `/api/events?sessionId=${DESK}&limit=1000`);
    const restarts = events.filter((e) => e.event === 'session-status' && e.data.reason === 'restart requested');
    assert.equal(restarts.length, 1, JSON.stringify(restarts));
  });

  await t.test('after Log out the status is logged out', async () => {
    await headerButton('Log out').click();
    await page.locator('#confirm[open]').waitFor();
    assert.equal(await page.textContent('#confirm-title'), `Log out ${DESK}?`);
    await page.click('#confirm-ok');
    await page.locator('#detail-status[data-status=logged_out]').waitFor({ timeout: 30000 });
    assert.equal(await page.textContent('#detail-status'), 'logged out');
    await page.locator(`.session-item[data-session-id=${DESK}] .status[data-status=logged_out]`).waitFor();
    await page.locator('#link-box', { hasText: 'Session is logged out' }).waitFor();
    await page.locator('#link-box').getByRole('button', { name: 'Start session' }).waitFor();
    assert.equal((await sb.api('GET', `/api/status/${DESK}`)).status, 'logged_out');
  });
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});
