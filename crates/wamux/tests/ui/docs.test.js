// The API docs page (/docs) in headless Chromium: it renders every operation of the
// OpenAPI document from the page alone, with every request to other origins blocked
// (offline), and its filter narrows the list. Saves docs/screenshots/api-docs.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Sandbox, API_KEY, launchChromium } from './harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.resolve(here, '../../../../docs/screenshots');

let sb;
let browser;
let page;
const pageErrors = [];
const foreign = [];

before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  sb = await Sandbox.start();
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(new Error(m.text())); });
  // Offline: anything not served by the gateway itself is refused and recorded.
  const origin = new URL(sb.url).origin;
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith('data:')) return route.continue();
    foreign.push(url);
    return route.abort();
  });
});

after(async () => {
  await browser?.close();
  if (process.exitCode) sb?.dumpLog();
  await sb?.stop();
});

test('/docs renders every documented operation without the network', async () => {
  const r = await fetch(`${sb.url}/api/openapi.json`, { headers: { 'X-API-Key': API_KEY } });
  assert.equal(r.status, 200);
  const doc = await r.json();
  let expected = 0;
  for (const item of Object.values(doc.paths)) {
    expected += Object.keys(item).filter((m) => ['get', 'post', 'put', 'patch', 'delete'].includes(m)).length;
  }
  assert.ok(expected >= 25, `only ${expected} operations in the document`);

  await page.goto(`${sb.url}/docs`);
  await page.waitForSelector('body[data-ready="true"]');
  assert.equal(await page.locator('#operations .op').count(), expected);
  assert.match(await page.locator('#version').textContent(), new RegExp(`OpenAPI ${doc.openapi.replace(/\./g, '\\.')}`));

  // One operation in full: its parameter, its body fields, its error answers, the key.
  const send = page.locator('#sendMessage');
  assert.match(await send.locator('h3').textContent(), /post\s*\/api\/send-message/i);
  assert.match(await send.textContent(), /API key/);
  const body = await send.textContent();
  for (const field of ['sessionId', 'to', 'text', 'quotedId']) assert.ok(body.includes(field), `${field} not shown`);
  for (const status of ['200', '400', '401', '404', '409']) {
    assert.ok(await send.locator('td.status', { hasText: status }).count() > 0, `${status} not shown`);
  }
  const status = page.locator('#getStatus');
  assert.match(await status.textContent(), /sessionId/);
  // The message shape is listed among the schemas with its fields.
  const message = await page.locator('#schema-Message').textContent();
  for (const field of ['chatId', 'fromMe', 'timestamp', 'media']) assert.ok(message.includes(field), `Message.${field}`);

  assert.deepEqual(foreign, [], 'the page asked for something outside the gateway');
  assert.deepEqual(pageErrors, []);
  await page.screenshot({ path: path.join(shots, 'api-docs.png') });
});

test('the filter narrows the operations and the table of contents', async () => {
  await page.fill('#filter', 'webhook');
  const visible = await page.locator('#operations .op:not([hidden])').count();
  assert.ok(visible >= 5 && visible < 15, `${visible} operations match "webhook"`);
  assert.equal(await page.locator('#sendMessage').isHidden(), true);
  assert.equal(await page.locator('#setWebhook').isVisible(), true);
  assert.equal(await page.locator('#toc a:not([hidden])').count(), visible);
  await page.fill('#filter', '');
  assert.equal(await page.locator('#sendMessage').isVisible(), true);
  assert.deepEqual(pageErrors, []);
});
