// Linking an account that WhatsApp guards with its owner's passkey, in headless Chromium,
// as an operator does it: the Link tab asks for the passkey instead of showing the QR
// code; the helper script it copies runs on "web.whatsapp.com" (a second tab, served by
// the test, whose passkey is the simulator's: `POST /admin/phones/:phone/passkey/assert`
// plays the owner's authenticator); its result is pasted back; the code is compared with
// the phone's and confirmed. And what the operator sees when WhatsApp refuses the passkey.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Sandbox, API_KEY, waitFor, launchChromium } from './harness.js';

// Where to save pictures of the passkey screens, if anywhere (to look at them).
const SHOTS = process.env.WAMUX_UI_SHOTS;

const OWNER = 'owner';
const OWNER_PHONE = '15558880001';
const REFUSED = 'refused';
const REFUSED_PHONE = '15558880002';
const SIGNED = 'signed';
const SIGNED_PHONE = '15558880003';
const WA_WEB = 'https://web.whatsapp.com';

let sb;
let browser;
let context;
let page;
const pageErrors = [];

before(async () => {
  sb = await Sandbox.start();
  await sb.admin('POST', '/phones', { phone: OWNER_PHONE, name: 'Owner Olga', passkey: true });
  await sb.admin('POST', '/phones', { phone: REFUSED_PHONE, name: 'Refused Rui', passkey: true });
  await sb.admin('POST', '/phones', { phone: SIGNED_PHONE, name: 'Sandbox Sam', passkey: true });
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  for (const origin of [new URL(sb.url).origin, WA_WEB]) {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  }
  // The owner's browser goes to web.whatsapp.com; the test serves it an empty page there
  // (a secure context on that origin, with nothing of WhatsApp's in it). Nothing else leaves.
  await context.route(`${WA_WEB}/**`, (route) => route.fulfill({
    contentType: 'text/html',
    body: '<!doctype html><html lang="en"><head><title>WhatsApp</title></head><body><p>WhatsApp Web</p></body></html>',
  }));
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(new Error(m.text()));
  });
  await page.goto(sb.url);
  await page.fill('#login-key', API_KEY);
  await page.press('#login-key', 'Enter');
  await page.locator('#feed.live').waitFor();
});

after(async () => {
  await browser?.close();
  if (process.exitCode) sb?.dumpLog();
  await sb?.stop();
});

async function shot(name) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.evaluate(() => document.querySelectorAll('.toast').forEach((t) => t.remove()));
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** For a wait on the page that timed out: what the page and the API say. */
async function diagnosis(id, e) {
  const shown = await page.locator('#detail-status').getAttribute('data-status').catch(() => 'nothing');
  const status = await sb.api('GET', `/api/status/${id}`).catch((err) => err.message);
  const passkey = await sb.api('GET', `/api/sessions/${id}/passkey`).catch((err) => err.message);
  process.stderr.write(`${id}: the page shows ${shown}; the API says ${JSON.stringify(status)}, passkey ${JSON.stringify(passkey)}\n`);
  throw e;
}

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

/** Creates a session in the UI and has `phone` scan its QR code with the sandbox button. */
async function createAndScan(id, phone) {
  await page.fill('#create-id', id);
  await page.press('#create-id', 'Enter');
  await page.locator(`.session-item[data-session-id=${id}]`).waitFor();
  await page.locator('#qr-image').waitFor({ timeout: 30000 });
  await page.locator('#scan-qr').waitFor();
  const label = await page.locator(`#scan-phone option[value="${phone}"]`).textContent();
  assert.match(label, /asks for a passkey/, 'the gated phone is marked in the list');
  await page.selectOption('#scan-phone', phone);
  await page.click('#scan-qr');
  await page.locator('#detail-status[data-status=passkey_required]').waitFor({ timeout: 30000 })
    .catch((e) => diagnosis(id, e));
  await page.locator('#passkey-copy').waitFor({ timeout: 15000 });
}

/**
 * The owner's browser: a tab on web.whatsapp.com where the helper script is pasted into the
 * console and its button clicked. The browser's `navigator.credentials.get` is the
 * simulator's passkey (`credential`, a `toJSON()` the simulator made) and records what it
 * was asked. `jsonHelpers: false` plays a browser without parseRequestOptionsFromJSON and
 * PublicKeyCredential.toJSON, so the script's own decoding and encoding are used.
 * Returns what it was asked and what the script copied.
 */
async function ownerBrowser(script, credential, { jsonHelpers = true } = {}) {
  const tab = await context.newPage();
  const errors = [];
  tab.on('pageerror', (e) => errors.push(e));
  await tab.goto(`${WA_WEB}/`);
  await tab.evaluate(({ credential, jsonHelpers }) => {
    const b64 = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
    const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    window.__asked = [];
    if (!jsonHelpers) delete PublicKeyCredential.parseRequestOptionsFromJSON;
    Object.defineProperty(navigator.credentials, 'get', {
      configurable: true,
      value: async ({ publicKey }) => {
        window.__asked.push({
          challenge: b64url(publicKey.challenge),
          rpId: publicKey.rpId,
          userVerification: publicKey.userVerification,
          allowCredentials: (publicKey.allowCredentials ?? []).length,
          bytes: publicKey.challenge instanceof ArrayBuffer || ArrayBuffer.isView(publicKey.challenge),
        });
        if (jsonHelpers) return { toJSON: () => credential };
        const r = credential.response;
        return {
          id: credential.id,
          rawId: b64(credential.rawId).buffer,
          type: credential.type,
          authenticatorAttachment: credential.authenticatorAttachment ?? null,
          getClientExtensionResults: () => credential.clientExtensionResults ?? {},
          response: {
            clientDataJSON: b64(r.clientDataJSON).buffer,
            authenticatorData: b64(r.authenticatorData).buffer,
            signature: b64(r.signature).buffer,
            userHandle: r.userHandle ? b64(r.userHandle).buffer : null,
          },
        };
      },
    });
  }, { credential, jsonHelpers });
  // Pasted into the console: evaluated as a script in the page.
  const said = await tab.evaluate(script);
  assert.match(said, /Use my passkey/, 'the console says what to do next');
  await tab.getByRole('button', { name: 'Use my passkey' }).click();
  await tab.locator('#wamux-passkey [role=status]', { hasText: 'Copied' }).waitFor({ timeout: 15000 });
  if (SHOTS && jsonHelpers) await tab.screenshot({ path: path.join(SHOTS, 'passkey-helper-on-web-whatsapp.png') });
  const copied = await tab.evaluate(() => navigator.clipboard.readText());
  const asked = await tab.evaluate(() => window.__asked);
  await tab.close();
  assert.deepEqual(errors.map((e) => e.message), [], 'no script errors on web.whatsapp.com');
  return { asked, copied };
}

test('a phone that asks for a passkey links after the owner\'s passkey and the code check', async (t) => {
  let options;
  let script;
  await t.test('the Link tab asks for the passkey instead of showing the QR code', async () => {
    await createAndScan(OWNER, OWNER_PHONE);
    await page.evaluate(() => { window.__noReload = true; });
    assert.equal(await page.locator('#qr-image').count(), 0, 'no QR code');
    assert.match(await page.textContent('#link-box'), /asks for the account owner's passkey/);
    assert.match(await page.textContent('#link-box'), /Keep WhatsApp open on the phone/);
    assert.match(await page.textContent('#passkey-expires'), /^Time left \d+:\d\d$/);
    assert.equal(await page.locator('#pair-card').isHidden(), true, 'no pairing code form');
    const pending = await sb.api('GET', `/api/sessions/${OWNER}/passkey`);
    assert.equal(pending.stage, 'assertion_required');
    assert.equal(pending.options.rpId, 'whatsapp.com');
    options = pending.options;
    await shot('passkey-required');
  });

  await t.test('"Copy helper script" copies a script with the request in it', async () => {
    await page.click('#passkey-copy');
    await page.locator('.toast', { hasText: 'Helper script copied' }).waitFor();
    script = await page.evaluate(() => navigator.clipboard.readText());
    assert.ok(script.includes(options.challenge), 'the script holds the challenge');
    assert.ok(script.includes(JSON.stringify(options)), 'the script holds the request as the API gave it');
    assert.equal(await page.inputValue('#passkey-script'), script, 'the script is also on the page');
  });

  await t.test('a paste that is not the helper\'s result is refused next to the box', async () => {
    const error = page.locator('#passkey-error');
    await page.fill('#passkey-input', 'the passkey was accepted');
    await page.click('#passkey-submit');
    await error.waitFor();
    assert.match(await error.textContent(), /not what the helper script copies/);

    const wrong = { id: 'AAAA', type: 'public-key' };
    await page.fill('#passkey-input', JSON.stringify(wrong));
    await page.click('#passkey-submit');
    await page.locator('#passkey-error', { hasText: 'invalid_assertion' }).waitFor({ timeout: 15000 });
    const err = await apiError('POST', `/api/sessions/${OWNER}/passkey`, wrong);
    assert.equal(err.code, 'invalid_assertion');
    assert.equal(await error.textContent(), `${err.message} (${err.code})`);
    assert.equal(await page.inputValue('#passkey-input'), JSON.stringify(wrong), 'what was pasted is kept');
    assert.equal((await sb.api('GET', `/api/sessions/${OWNER}/passkey`)).stage, 'assertion_required', 'still waiting for the passkey');
  });

  let result;
  await t.test('the script, run on web.whatsapp.com, asks for the passkey and copies the answer', async () => {
    const credential = await sb.admin('POST', `/phones/${OWNER_PHONE}/passkey/assert`, { options });
    // A browser without the WebAuthn JSON helpers: the script decodes and encodes by hand.
    const old = await ownerBrowser(script, credential, { jsonHelpers: false });
    assert.deepEqual(old.asked, [{
      challenge: options.challenge, rpId: options.rpId, userVerification: options.userVerification,
      allowCredentials: options.allowCredentials?.length ?? 0, bytes: true,
    }]);
    const copiedOld = JSON.parse(old.copied);
    for (const k of ['id', 'rawId', 'type']) assert.equal(copiedOld[k], credential[k], k);
    assert.deepEqual(copiedOld.response, credential.response);

    const now = await ownerBrowser(script, credential);
    assert.deepEqual(now.asked, old.asked);
    assert.equal(now.copied, JSON.stringify(credential));
    result = now.copied;
  });

  await t.test('the pasted answer brings the code the phone shows', async () => {
    await page.bringToFront();
    await page.fill('#passkey-input', result);
    await page.click('#passkey-submit');
    const code = page.locator('#passkey-code');
    await code.waitFor({ timeout: 30000 }).catch((e) => diagnosis(OWNER, e));
    await page.locator('#detail-status[data-status=passkey_confirmation]').waitFor();
    const shown = await code.textContent();
    assert.match(shown, /^[0-9A-Z]{4}-[0-9A-Z]{4}$/, `the code, in two halves: ${shown}`);
    const phone = await waitFor('the phone to show a code', async () => {
      const screen = await sb.admin('GET', `/phones/${OWNER_PHONE}/passkey`);
      return screen.code && screen;
    });
    assert.equal(shown, phone.code, 'the page and the phone show the same code');
    assert.equal((await sb.api('GET', `/api/sessions/${OWNER}/passkey`)).code, shown);
    assert.match(await page.textContent('#link-box'), /same/);
    await shot('passkey-confirmation');
  });

  await t.test('a tab opened now shows the same code, from the passkey route', async () => {
    const other = await context.newPage();
    await other.goto(sb.url);
    await other.fill('#login-key', API_KEY);
    await other.press('#login-key', 'Enter');
    await other.locator(`.session-item[data-session-id=${OWNER}]`).click();
    await other.locator('#passkey-code').waitFor({ timeout: 15000 });
    assert.equal(await other.textContent('#passkey-code'), await page.textContent('#passkey-code'));
    assert.match(await other.textContent('#passkey-expires'), /^Time left \d+:\d\d$/);
    await other.close();
    await page.bringToFront();
  });

  await t.test('confirming links the phone, without a reload', async () => {
    await page.getByRole('button', { name: 'The phone shows the same code' }).click();
    await page.locator('#detail-status[data-status=connected]').waitFor({ timeout: 60000 })
      .catch((e) => diagnosis(OWNER, e));
    await page.locator('#linked', { hasText: `+${OWNER_PHONE}` }).waitFor({ timeout: 30000 });
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
    assert.equal(await page.locator('#pair-card').isHidden(), false, 'the usual Link tab is back');
    const status = await sb.api('GET', `/api/status/${OWNER}`);
    assert.equal(status.status, 'connected');
    assert.equal(status.me.phone, OWNER_PHONE);
  });

  await t.test('the webhook can be told to send the passkey events', async () => {
    await page.click('#tab-webhook');
    await page.locator('#webhook-form').waitFor();
    for (const name of ['passkey-required', 'passkey-confirmation', 'passkey-failed']) {
      assert.equal(await page.locator(`#webhook-form input[value=${name}]`).count(), 1, name);
    }
    await page.click('#tab-link');
  });
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});

test('a passkey WhatsApp refuses fails the link, and "Start linking again" shows a new QR code', async () => {
  await createAndScan(REFUSED, REFUSED_PHONE);
  const { options } = await sb.api('GET', `/api/sessions/${REFUSED}/passkey`);
  // The signature does not verify: only WhatsApp can tell, so the gateway passes it on.
  const forged = await sb.admin('POST', `/phones/${REFUSED_PHONE}/passkey/assert`, { options, tamper: 'signature' });
  await page.fill('#passkey-input', JSON.stringify(forged));
  await page.click('#passkey-submit');
  const restart = page.locator('#passkey-restart');
  await restart.waitFor({ timeout: 30000 }).catch((e) => diagnosis(REFUSED, e));
  await page.locator('#detail-status[data-status=failed]').waitFor({ timeout: 15000 });
  const status = await sb.api('GET', `/api/status/${REFUSED}`);
  assert.equal(status.status, 'failed');
  const reason = await page.textContent('#passkey-reason');
  assert.ok(reason.trim().length > 0, 'the reason is shown');
  await shot('passkey-failed');

  await restart.click();
  await page.locator('#qr-image').waitFor({ timeout: 30000 }).catch((e) => diagnosis(REFUSED, e));
  assert.equal(await page.locator('#passkey-restart').count(), 0);
  assert.equal((await sb.api('GET', `/api/status/${REFUSED}`)).status, 'qr');
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});

test('in the sandbox, a virtual phone\'s owner signs with one click, and the session links', async () => {
  await createAndScan(SIGNED, SIGNED_PHONE);
  await page.locator('#passkey-sandbox-sign').waitFor();
  await page.selectOption('#passkey-sandbox-phone', SIGNED_PHONE);
  await page.click('#passkey-sandbox-sign');
  await waitFor('the assertion in the result box', async () => (await page.inputValue('#passkey-input')).includes('"type":"public-key"'));
  await page.click('#passkey-submit');
  await page.locator('#passkey-code').waitFor({ timeout: 30000 }).catch((e) => diagnosis(SIGNED, e));
  const screen = await sb.admin('GET', `/phones/${SIGNED_PHONE}/passkey`);
  assert.equal((await page.textContent('#passkey-code')).trim(), screen.code, 'the phone shows the same code');
  await page.click('#passkey-confirm');
  await page.locator('#detail-status[data-status=connected]').waitFor({ timeout: 30000 }).catch((e) => diagnosis(SIGNED, e));
  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});
