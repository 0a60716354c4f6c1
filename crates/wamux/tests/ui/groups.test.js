// The Groups tab in headless Chromium against a real `wamux sandbox`: create a group
// (with the outcome for each participant), read its participants and settings, write in it
// and read what its members write, add and remove people, and see a group another phone
// made. Simulated phones play the members through the simulator's admin API, which also
// says what the group server holds. Saves docs/screenshots/groups.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Sandbox, API_KEY, waitFor, launchChromium } from './harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.resolve(here, '../../../../docs/screenshots');

const SESSION = 'club';
const LINKED_PHONE = '15554440001';
const ANA = '15554440002';
const BEN = '15554440003';
// Lets nobody add her to groups (her privacy settings).
const CARA = '15554440004';
// Added later, from the participants list.
const DAN = '15554440005';
// No account on WhatsApp has this number.
const NOBODY = '15554449999';

let sb;
let browser;
let page;
let gid;
const pageErrors = [];

before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  sb = await Sandbox.start();
  await sb.phone(LINKED_PHONE, 'Book Club Desk');
  await sb.phone(ANA, 'Ana');
  await sb.phone(BEN, 'Ben');
  await sb.phone(CARA, 'Cara');
  await sb.phone(DAN, 'Dan');
  await sb.admin('POST', `/phones/${CARA}/profile`, { privacy: { groupadd: 'none' } });
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(new Error(m.text()));
  });
});

after(async () => {
  await browser?.close();
  if (process.exitCode) sb?.dumpLog();
  await sb?.stop();
});

/** The group as the simulator's group server has it. */
const serverGroup = (id) => sb.admin('GET', `/groups/${encodeURIComponent(id)}`);
const members = (g) => g.participants.map((p) => p.phone).sort();

/** What `phone` sent and received, decrypted. */
async function phoneMessages(phone) {
  const r = await sb.admin('GET', `/phones/${phone}/messages`);
  return Array.isArray(r) ? r : (r?.messages ?? []);
}

/** Waits for `phone` to have a message in the group with `text`, and says what it has if not. */
async function phoneGot(phone, text) {
  return waitFor(`${phone} to get "${text}" in the group`, async () => (await phoneMessages(phone)).find((m) => m.to === gid && m.text === text))
    .catch(async (e) => {
      process.stderr.write(`${phone} has: ${JSON.stringify(await phoneMessages(phone).catch((err) => err.message))}\n`);
      throw e;
    });
}

/** What the API answers with an error, for comparing with what the page shows. */
async function apiError(route, body) {
  const r = await fetch(`${sb.url}${route}`, {
    method: 'POST',
    headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.ok(r.status >= 400 && r.status < 500, `POST ${route} should fail, got HTTP ${r.status}`);
  return (await r.json()).error;
}

const outcomes = (sel) => page.locator(`${sel} .outcome`).evaluateAll((els) => els.map((e) => [e.dataset.phone, e.dataset.status, e.querySelector('.outcome-text').textContent]));
const shownParticipants = () => page.locator('#group-participants .participant').evaluateAll((els) => els.map((e) => [e.dataset.phone, e.dataset.admin]).sort());
const groupItem = (subject) => page.locator('#group-list .group-item', { hasText: subject });
// A form is emptied once the gateway answered, which may come after the live feed drew the
// result: wait for it.
const emptied = (sel, what) => waitFor(what, async () => (await page.inputValue(sel)) === '', { timeout: 15000 });

test('groups on the Groups tab: create, read, write, add and remove', async (t) => {
  await t.test('signs in, links a session and opens its Groups tab', async () => {
    await page.goto(sb.url);
    await page.fill('#login-key', API_KEY);
    await page.press('#login-key', 'Enter');
    await page.locator('#feed.live').waitFor();
    await page.fill('#create-id', SESSION);
    await page.press('#create-id', 'Enter');
    await page.locator('#qr-image').waitFor({ timeout: 30000 });
    const { qr } = await sb.api('GET', `/api/qr/${SESSION}`);
    await sb.admin('POST', `/phones/${LINKED_PHONE}/scan`, { qr });
    await page.locator('#detail-status[data-status=connected]').waitFor({ timeout: 30000 });
    await page.click('#tab-groups');
    await page.locator('#group-empty:not([hidden])').waitFor({ timeout: 30000 });
    assert.equal(await page.locator('#group-list .group-item').count(), 0);
  });

  await t.test('a group the gateway refuses shows the API\'s error, and keeps what was typed', async () => {
    await page.click('#group-create button[type=submit]');
    await page.locator('#group-create-error:not([hidden])').waitFor();
    assert.equal(await page.textContent('#group-create-error'), 'Give the group a subject.');

    await page.fill('#group-subject', 'Book club');
    await page.fill('#group-members', '12');
    await page.click('#group-create button[type=submit]');
    const err = await apiError(`/api/sessions/${SESSION}/groups`, { subject: 'Book club', participants: ['12'] });
    assert.equal(err.code, 'invalid_field');
    await page.waitForFunction((text) => document.querySelector('#group-create-error')?.textContent === text,
      `${err.message} (${err.code})`, { timeout: 15000 });
    assert.equal(await page.inputValue('#group-subject'), 'Book club', 'what was typed is kept');
  });

  await t.test('creates a group with two phones, one that refuses adds and an unknown number', async () => {
    await page.fill('#group-members', `${ANA}, +${BEN}\n${NOBODY}\n${CARA}`);
    await page.fill('#group-description', 'We read a book a month.');
    await page.click('#group-create button[type=submit]');

    // The new group opens; the outcome for each participant is under the form.
    await page.waitForURL(/#\/sessions\/club\/groups\/\d+%40g\.us$/, { timeout: 30000 });
    gid = decodeURIComponent(new URL(page.url()).hash.split('/').pop());
    await page.locator('#group-create-results .outcome').first().waitFor();
    assert.deepEqual((await outcomes('#group-create-results')).sort(), [
      [ANA, '200', `+${ANA}: added`],
      [BEN, '200', `+${BEN}: added`],
      [CARA, '403', `+${CARA}: refuses to be added (their privacy settings); send them the invite link`],
      [NOBODY, '404', `+${NOBODY}: not on WhatsApp`],
    ]);
    assert.equal(await page.locator('#group-create-results .outcome.refused').count(), 2);
    assert.equal(await page.inputValue('#group-subject'), '', 'the form is emptied once created');

    // The group server agrees on who is in it: us (who created it) and the two who accepted.
    const g = await serverGroup(gid);
    assert.equal(g.subject, 'Book club');
    assert.equal(g.description, 'We read a book a month.');
    assert.equal(g.creator, LINKED_PHONE);
    assert.deepEqual(members(g), [LINKED_PHONE, ANA, BEN].sort());
    assert.equal(g.participants.find((p) => p.phone === LINKED_PHONE).role, 'superadmin');
  });

  await t.test('the open group shows its participants, admins and settings', async () => {
    await page.locator('#group-title', { hasText: 'Book club' }).waitFor();
    assert.equal(await page.textContent('#group-info .group-description'), 'We read a book a month.');
    await waitFor('three participants', async () => (await shownParticipants()).length === 3);
    assert.deepEqual(await shownParticipants(), [[LINKED_PHONE, 'true'], [ANA, 'false'], [BEN, 'false']].sort());
    const mine = page.locator(`#group-participants .participant[data-phone="${LINKED_PHONE}"]`);
    assert.deepEqual(await mine.locator('.badge').allTextContents(), ['you', 'owner']);
    assert.equal(await page.locator(`#group-participants .participant[data-phone="${ANA}"] .badge`).count(), 0);
    assert.equal(await page.textContent('#group-member-count'), '(3)');
    assert.equal(await page.textContent('#group-settings [data-setting=announce]'), 'everyone');
    assert.equal(await page.textContent('#group-settings [data-setting=locked]'), 'everyone');
    assert.equal(await page.textContent('#group-settings [data-setting=addressing]'), 'phone number');
    assert.equal(await page.textContent('#group-settings [data-setting=ephemeral]'), 'off');
    // And in the list, with its size.
    const item = groupItem('Book club');
    assert.equal(await item.getAttribute('aria-current'), 'page');
    assert.equal(await item.locator('.group-size').textContent(), '3 participants');
    assert.equal(await page.textContent('#send-to-chat'), 'Book club');
  });

  await t.test('writes in the group; both members get it', async () => {
    await page.locator('#group-message-empty:not([hidden])').waitFor({ timeout: 30000 });
    await page.fill('#send-text', 'First pick: Middlemarch');
    await page.click('#send-form button[type=submit]');
    const shown = page.locator('#group-message-list .message.out', { hasText: 'First pick: Middlemarch' });
    await shown.waitFor({ timeout: 30000 });
    assert.equal(await shown.locator('.message-who').textContent(), '↗ You');
    await emptied('#send-text', 'the box to be emptied once sent');
    const id = await shown.getAttribute('data-message-id');
    const atAna = await phoneGot(ANA, 'First pick: Middlemarch');
    assert.equal(atAna.id, id);
    assert.equal(atAna.from, LINKED_PHONE);
    await phoneGot(BEN, 'First pick: Middlemarch');
    assert.equal((await phoneMessages(CARA)).some((m) => m.to === gid), false, 'Cara is not in the group');
  });

  await t.test('a member\'s message shows in the group\'s chat live, with its sender', async () => {
    await page.evaluate(() => { window.__noReload = true; });
    await sb.admin('POST', `/phones/${ANA}/messages`, { to: gid, text: 'Long, but worth it' });
    const shown = page.locator('#group-message-list .message.in', { hasText: 'Long, but worth it' });
    await shown.waitFor({ timeout: 30000 });
    assert.match(await shown.locator('.message-who').textContent(), new RegExp(`^↙ (Ana · )?\\+${ANA}$`));
    await sb.admin('POST', `/phones/${BEN}/messages`, { to: gid, text: 'Count me in' });
    const ben = page.locator('#group-message-list .message.in', { hasText: 'Count me in' });
    await ben.waitFor({ timeout: 30000 });
    assert.match(await ben.locator('.message-who').textContent(), new RegExp(`\\+${BEN}$`));
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
    // Ben got Ana's message too: it went to the group, not to us alone.
    await phoneGot(BEN, 'Long, but worth it');
    // The Messages tab names the group the message was written in.
    await page.click('#tab-messages');
    const inHistory = page.locator('#message-list .message.in', { hasText: 'Long, but worth it' });
    await inHistory.waitFor({ timeout: 30000 });
    assert.match(await inHistory.locator('.message-who').textContent(), new RegExp(`\\+${ANA} in Book club$`));
    await page.goto(`${sb.url}/#/sessions/${SESSION}/groups/${encodeURIComponent(gid)}`);
    await page.locator('#group-title', { hasText: 'Book club' }).waitFor({ timeout: 30000 });
  });

  await t.test('adds a participant, then removes one; the group server agrees', async () => {
    await page.fill('#group-add-phone', DAN);
    await page.click('#group-add button[type=submit]');
    await page.locator('#group-member-results .outcome').waitFor({ timeout: 30000 });
    assert.deepEqual(await outcomes('#group-member-results'), [[DAN, '200', `+${DAN}: added`]]);
    await page.locator(`#group-participants .participant[data-phone="${DAN}"]`).waitFor({ timeout: 30000 });
    await emptied('#group-add-phone', 'the number to be emptied once added');
    assert.deepEqual(members(await serverGroup(gid)), [LINKED_PHONE, ANA, BEN, DAN].sort());

    // Adding someone already in it says so.
    await page.fill('#group-add-phone', ANA);
    await page.click('#group-add button[type=submit]');
    await page.locator(`#group-member-results .outcome[data-phone="${ANA}"]`).waitFor({ timeout: 30000 });
    assert.deepEqual(await outcomes('#group-member-results'), [[ANA, '409', `+${ANA}: already in the group`]]);

    await page.click(`#group-participants .participant[data-phone="${BEN}"] button:has-text("Remove")`);
    assert.equal(await page.textContent('#confirm-title'), `Remove +${BEN}?`);
    await page.click('#confirm-ok');
    await page.locator(`#group-member-results .outcome[data-phone="${BEN}"]`).waitFor({ timeout: 30000 });
    assert.deepEqual(await outcomes('#group-member-results'), [[BEN, '200', `+${BEN}: removed`]]);
    await waitFor('Ben to leave the list', async () => (await page.locator(`#group-participants .participant[data-phone="${BEN}"]`).count()) === 0);
    assert.deepEqual(members(await serverGroup(gid)), [LINKED_PHONE, ANA, DAN].sort());
    assert.equal(await page.textContent('#group-member-count'), '(3)');

    // What we write now reaches Dan, and no longer Ben.
    await page.fill('#send-text', 'Welcome, Dan');
    await page.click('#send-form button[type=submit]');
    await page.locator('#group-message-list .message.out', { hasText: 'Welcome, Dan' }).waitFor({ timeout: 30000 });
    await phoneGot(DAN, 'Welcome, Dan');
    await phoneGot(ANA, 'Welcome, Dan');
    assert.equal((await phoneMessages(BEN)).some((m) => m.text === 'Welcome, Dan'), false, 'Ben was removed');
  });

  await t.test('only admins send: the setting is saved on the group server', async () => {
    await page.check('#group-announce');
    await page.click('#group-settings-form button[type=submit]');
    await page.waitForFunction(() => document.querySelector('#group-settings [data-setting=announce]')?.textContent === 'only admins', null, { timeout: 30000 });
    assert.equal((await serverGroup(gid)).announce, true);
    assert.equal(await page.isChecked('#group-announce'), true);
  });

  await t.test('a group another phone made with this account in it shows in the list, live', async () => {
    await page.evaluate(() => { window.__noReload = true; });
    const made = await sb.admin('POST', '/groups', { creator: ANA, subject: 'Neighbours', participants: [LINKED_PHONE, BEN] });
    assert.deepEqual(members(made), [LINKED_PHONE, ANA, BEN].sort());
    // The gateway's group-joined event has the page read the list again.
    const item = groupItem('Neighbours');
    await item.waitFor({ timeout: 30000 });
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
    assert.equal(await item.locator('.group-size').textContent(), '3 participants');
    assert.equal(await page.textContent('#group-count'), '(2)');
    // Refresh reads the same from WhatsApp.
    await page.click('#groups-refresh');
    await page.locator('#groups-refresh:enabled').waitFor();
    assert.deepEqual(await page.locator('#group-list .group-subject').allTextContents(), ['Book club', 'Neighbours']);
    await item.click();
    await page.locator('#group-title', { hasText: 'Neighbours' }).waitFor({ timeout: 30000 });
    await waitFor('its participants', async () => (await shownParticipants()).length === 3);
    assert.deepEqual(await shownParticipants(), [[LINKED_PHONE, 'false'], [ANA, 'true'], [BEN, 'false']].sort());
    // Not an admin here: nothing to change, only to read and write.
    assert.equal(await page.locator('#group-participants button').count(), 0);
    assert.equal(await page.locator('#group-settings-form').count(), 0);
  });

  await t.test('after a reload the open group shows its chat with the senders', async () => {
    await page.goto(`${sb.url}/#/sessions/${SESSION}/groups/${encodeURIComponent(gid)}`);
    await page.reload();
    await page.locator('#group-title', { hasText: 'Book club' }).waitFor({ timeout: 30000 });
    const ana = page.locator('#group-message-list .message.in', { hasText: 'Long, but worth it' });
    await ana.waitFor({ timeout: 30000 });
    assert.match(await ana.locator('.message-who').textContent(), new RegExp(`\\+${ANA}$`));
    const texts = await page.locator('#group-message-list .message-text').allTextContents();
    assert.deepEqual(texts.sort(), ['Count me in', 'First pick: Middlemarch', 'Long, but worth it', 'Welcome, Dan']);
    await page.evaluate(() => document.querySelectorAll('.toast').forEach((x) => x.remove()));
    await page.screenshot({ path: path.join(shots, 'groups.png'), fullPage: true });
  });

  await t.test('fits a phone-sized screen', async () => {
    const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    const mobile = await ctx.newPage();
    await mobile.goto(`${sb.url}/#/sessions/${SESSION}/groups/${encodeURIComponent(gid)}`);
    await mobile.fill('#login-key', API_KEY);
    await mobile.press('#login-key', 'Enter');
    await mobile.locator('#group-message-list .message').first().waitFor({ timeout: 30000 });
    const overflow = await mobile.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `no horizontal scrolling on a phone (overflow ${overflow}px)`);
    await ctx.close();
  });

  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});
