// Scoped API keys in headless Chromium: the admin makes a key on the Keys page and copies
// its secret; signed in with it, the page shows only that key's sessions and only the
// controls its scopes allow; the admin revokes it from the Keys page and the key is refused
// at once, also in the tab that was using it. Saves docs/screenshots/09-keys.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Sandbox, API_KEY, waitFor, launchChromium } from './harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.resolve(here, '../../../../docs/screenshots');

// Tenant A's session, which the keys name, and another tenant's, which they do not.
const MINE = 't-a-1';
const OTHERS = 't-b-1';

let sb;
let browser;
let context;
let page;
const pageErrors = [];

before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  sb = await Sandbox.start();
  await sb.api('POST', '/api/start-session', { sessionId: MINE });
  await sb.api('POST', '/api/start-session', { sessionId: OTHERS });
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(sb.url).origin });
  page = await newPage();
});

after(async () => {
  await browser?.close();
  if (process.exitCode) sb?.dumpLog();
  await sb?.stop();
});

async function newPage() {
  const p = await context.newPage();
  p.on('pageerror', (e) => pageErrors.push(e));
  // The refused calls of a revoked key are logged by the browser itself, and shown by the page.
  p.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(new Error(m.text()));
  });
  return p;
}

async function signIn(p, key) {
  await p.goto(sb.url);
  await p.fill('#login-key', key);
  await p.press('#login-key', 'Enter');
  await p.locator('#app').waitFor();
}

/** The calls a key makes, as a client with it would: the HTTP status and the body. */
async function callWith(key, method, route) {
  const r = await fetch(`${sb.url}${route}`, { method, headers: { 'X-API-Key': key } });
  return { status: r.status, body: await r.json().catch(() => null) };
}

const listed = (p) => p.$$eval('.session-item', (items) => items.map((i) => i.dataset.sessionId));

let reader; // {id, key} of the read-only key made on the Keys page

test('the admin creates a key on the Keys page, sees its secret once and copies it', async (t) => {
  await signIn(page, API_KEY);
  await page.locator('#whoami', { hasText: 'admin key' }).waitFor();
  await page.click('#nav-keys');
  await page.locator('#key-form').waitFor();
  await page.locator('#key-empty:not([hidden])').waitFor();

  await t.test('the API\'s refusal of a bad pattern is shown next to the form', async () => {
    await page.fill('#key-name', 'tenant A reader');
    await page.fill('#key-sessions', 't-a-*-x');
    await page.click('#key-form button[type=submit]');
    const shown = page.locator('#key-error');
    await shown.waitFor();
    const r = await fetch(`${sb.url}/api/keys`, {
      method: 'POST',
      headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'tenant A reader', sessions: ['t-a-*-x'], scopes: ['read'] }),
    });
    assert.equal(r.status, 400);
    const { error } = await r.json();
    assert.equal(error.code, 'invalid_field');
    assert.equal(await shown.textContent(), `${error.message} (${error.code})`);
    assert.equal(await page.inputValue('#key-name'), 'tenant A reader', 'what was typed is kept');
    assert.deepEqual((await sb.api('GET', '/api/keys')).keys, [], 'no key was made');
  });

  await t.test('a read-only key on one session is made, its secret shown with a Copy button', async () => {
    await page.fill('#key-sessions', MINE);
    // Read is ticked by default; the others stay off.
    assert.equal(await page.isChecked('#key-scope-read'), true);
    for (const s of ['send', 'manage', 'webhooks']) assert.equal(await page.isChecked(`#key-scope-${s}`), false);
    await page.click('#key-form button[type=submit]');
    const secret = page.locator('#key-secret-value');
    await secret.waitFor();
    const key = await secret.textContent();
    assert.match(key, /^wmx_/);
    assert.equal(await page.isHidden('#key-error'), true, 'the earlier error is gone');

    const { keys } = await sb.api('GET', '/api/keys');
    assert.equal(keys.length, 1);
    assert.equal(keys[0].name, 'tenant A reader');
    assert.deepEqual(keys[0].sessions, [MINE]);
    assert.deepEqual(keys[0].scopes, ['read']);
    assert.equal(keys[0].key, undefined, 'the list never holds the secret');
    reader = { id: keys[0].id, key };

    const row = page.locator(`#key-rows tr[data-key-id="${reader.id}"]`);
    await row.waitFor();
    assert.equal(await row.locator('.key-name').textContent(), 'tenant A reader');
    assert.equal(await row.locator('.key-sessions').textContent(), MINE);
    assert.deepEqual(await row.locator('.key-scopes .badge').allTextContents(), ['read']);
    assert.equal(await row.locator('.key-used').textContent(), 'never');
    assert.equal(await row.locator('.key-expires').textContent(), 'never');

    await page.click('#key-copy');
    await page.locator('.toast', { hasText: 'Key copied' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);
    await page.evaluate(() => document.querySelectorAll('.toast').forEach((x) => x.remove()));
    await page.screenshot({ path: path.join(shots, '09-keys.png'), fullPage: true });
  });

  await t.test('the secret is not shown again once the page is left', async () => {
    await page.click('#nav-sessions');
    await page.locator('#session-list').waitFor();
    await page.click('#nav-keys');
    await page.locator(`#key-rows tr[data-key-id="${reader.id}"]`).waitFor();
    assert.equal(await page.locator('#key-secret-value').count(), 0);
    assert.equal(await page.locator('#keys', { hasText: reader.key }).count(), 0);
  });
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});

test('signed in with the read-only key, the page shows its session and nothing it may not use', async () => {
  await page.click('#signout');
  await page.locator('#login').waitFor();
  await signIn(page, reader.key);
  await page.locator(`.session-item[data-session-id=${MINE}]`).waitFor();
  await page.locator('#feed.live').waitFor();
  assert.deepEqual(await listed(page), [MINE], 'only the session the key names is listed');
  assert.match(await page.textContent('#whoami'), new RegExp(`${reader.id} · read`));

  // Nothing the key may not use is on the page at all.
  assert.equal(await page.locator('#nav-keys').count(), 0, 'no Keys page');
  assert.equal(await page.locator('#create-form').count(), 0, 'no new-session form');
  await page.click(`.session-item[data-session-id=${MINE}]`);
  await page.locator(`#detail-header h2:text-is("${MINE}")`).waitFor();
  assert.equal(await page.locator('#detail-header button').count(), 0, 'no restart, log out or delete');
  assert.deepEqual(await page.$$eval('[role=tab]', (tabs) => tabs.map((x) => x.id)), ['tab-link', 'tab-messages', 'tab-groups'],
    'no webhook tab, no virtual phones');
  assert.equal(await page.locator('#qr-image, #pair-phone, #scan-qr').count(), 0, 'no QR code or pairing to link with');
  await page.locator('#link-box', { hasText: 'manage scope' }).waitFor();
  await page.click('#tab-messages');
  // The history is there (empty: nobody wrote yet).
  await page.locator('#message-empty').waitFor();
  assert.equal(await page.locator('#send-form').count(), 0, 'no send form');

  // The Keys page is not there by its address either.
  await page.evaluate(() => { location.hash = '#/keys'; });
  await page.locator('#app:not([hidden])').waitFor();
  assert.equal(await page.locator('#key-form, #key-rows').count(), 0);

  // What the page left out, the API refuses.
  assert.equal((await callWith(reader.key, 'GET', '/api/keys')).status, 403);
  assert.equal((await callWith(reader.key, 'GET', `/api/status/${OTHERS}`)).body.error.code, 'forbidden');
  assert.equal((await callWith(reader.key, 'DELETE', `/api/sessions/${MINE}`)).body.error.code, 'missing_scope');
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});

test('the admin revokes the key on the Keys page; it is refused at once, also in the tab using it', async () => {
  assert.equal((await callWith(reader.key, 'GET', '/api/sessions')).status, 200, 'the key works before');
  // The tab above has used the key; the gateway notes that a moment later.
  await waitFor('the key\'s use to be noted', async () => (await sb.api('GET', '/api/keys')).keys[0].lastUsedAt);
  const admin = await newPage();
  await signIn(admin, API_KEY);
  await admin.click('#nav-keys');
  const row = admin.locator(`#key-rows tr[data-key-id="${reader.id}"]`);
  await row.locator('.key-used time').waitFor();

  await row.getByRole('button', { name: 'Revoke' }).click();
  await admin.locator('#confirm[open]').waitFor();
  assert.equal(await admin.textContent('#confirm-title'), 'Revoke tenant A reader?');
  await admin.click('#confirm button[value=cancel]');
  await admin.locator('#confirm[open]').waitFor({ state: 'detached' });
  assert.equal((await callWith(reader.key, 'GET', '/api/sessions')).status, 200, 'cancelled: the key still works');

  await row.getByRole('button', { name: 'Revoke' }).click();
  await admin.click('#confirm-ok');
  await admin.locator('.toast', { hasText: 'Key tenant A reader revoked' }).waitFor();
  await waitFor('the row to go', async () => (await row.count()) === 0);
  await admin.locator('#key-empty:not([hidden])').waitFor();

  const next = await callWith(reader.key, 'GET', '/api/sessions');
  assert.equal(next.status, 401, `the key's next call is refused: ${JSON.stringify(next.body)}`);
  assert.deepEqual((await sb.api('GET', '/api/keys')).keys, []);

  // The server closed the key's live feed; the tab that used it is back at sign-in.
  await page.locator('#login:not([hidden])').waitFor();
  assert.match(await page.textContent('#login-error'), /refused/);
  await admin.close();
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});

test('a key that may manage t-a-* sees delete for its session, and creates and deletes only its own', async () => {
  const created = await sb.api('POST', '/api/keys', { name: 'tenant A ops', sessions: ['t-a-*'], scopes: ['read', 'manage'] });
  await signIn(page, created.key);
  await page.locator(`.session-item[data-session-id=${MINE}]`).waitFor();
  assert.deepEqual(await listed(page), [MINE]);
  assert.equal(await page.locator('#nav-keys').count(), 0, 'still no Keys page');

  await page.click(`.session-item[data-session-id=${MINE}]`);
  await page.locator('#detail-header .btn-danger', { hasText: 'Delete' }).waitFor();
  for (const label of ['Restart', 'Log out']) {
    assert.equal(await page.locator('#detail-header button', { hasText: label }).count(), 1, `${label} is there`);
  }
  // It may link the session: the QR code is shown.
  await page.locator('#qr-image').waitFor({ timeout: 30000 });
  assert.deepEqual(await page.$$eval('[role=tab]', (tabs) => tabs.map((x) => x.id)), ['tab-link', 'tab-messages', 'tab-groups']);
  await page.click('#tab-messages');
  // The history is there (empty: nobody wrote yet).
  await page.locator('#message-empty').waitFor();
  assert.equal(await page.locator('#send-form').count(), 0, 'no send scope, no send form');

  // A session outside its patterns is refused, with the API's reason next to the form.
  await page.fill('#create-id', 't-b-2');
  await page.press('#create-id', 'Enter');
  const shown = page.locator('#create-error');
  await shown.waitFor();
  const refused = await fetch(`${sb.url}/api/start-session`, {
    method: 'POST',
    headers: { 'X-API-Key': created.key, 'Content-Type': 'application/json' },
    body: JSON.stringify({ sessionId: 't-b-2' }),
  });
  assert.equal(refused.status, 403);
  const { error } = await refused.json();
  assert.equal(await shown.textContent(), `${error.message} (${error.code})`);
  assert.equal(error.code, 'forbidden');

  // One of its own is made, and deleted.
  await page.fill('#create-id', 't-a-2');
  await page.press('#create-id', 'Enter');
  await page.locator('.session-item[data-session-id=t-a-2]').waitFor();
  await page.locator('#detail-header h2:text-is("t-a-2")').waitFor();
  await page.click('#detail-header .btn-danger');
  await page.locator('#confirm[open]').waitFor();
  await page.click('#confirm-ok');
  await waitFor('t-a-2 to disappear', async () => (await page.locator('.session-item[data-session-id=t-a-2]').count()) === 0);
  const all = (await sb.api('GET', '/api/sessions')).sessions.map((s) => s.sessionId).sort();
  assert.deepEqual(all, [MINE, OTHERS]);
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});
