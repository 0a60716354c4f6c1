// The Messages tab beyond text: polls (and their votes, live), reactions, locations, and
// the edits and deletions of the other side, in headless Chromium against a real
// `wamux sandbox`. A simulated phone plays the customer through the simulator's admin API.
// Saves docs/screenshots/10-messaging.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Sandbox, API_KEY, waitFor, launchChromium } from './harness.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.resolve(here, '../../../../docs/screenshots');

const SESSION = 'shop';
const LINKED_PHONE = '15558880001';
const CUSTOMER = '15558880002';

let sb;
let browser;
let page;
const pageErrors = [];

before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  sb = await Sandbox.start();
  await sb.phone(LINKED_PHONE, 'Corner Shop');
  await sb.phone(CUSTOMER, 'Dana Customer');
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
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

/** What the customer's phone sent and received, decrypted. */
async function phoneMessages() {
  const r = await sb.admin('GET', `/phones/${CUSTOMER}/messages`);
  return Array.isArray(r) ? r : (r?.messages ?? []);
}

/** Waits for the phone to have a message matching `pred`, and says what it has if not. */
async function phoneHas(what, pred) {
  return waitFor(what, async () => (await phoneMessages()).find(pred), { timeout: 30000 })
    .catch(async (e) => {
      process.stderr.write(`${CUSTOMER} has: ${JSON.stringify(await phoneMessages().catch((err) => err.message))}\n`);
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

/** The customer sends `text` to the shop; returns the message as the page shows it. */
async function customerSays(text) {
  await sb.admin('POST', `/phones/${CUSTOMER}/messages`, { to: LINKED_PHONE, text });
  const el = page.locator('.message.in', { hasText: text });
  await el.waitFor({ timeout: 30000 });
  return el;
}

const bubble = (id) => page.locator(`.message[data-message-id="${id}"]`);
const option = (id, name) => bubble(id).locator(`.poll-option[data-option="${name}"]`);
const chooseKind = (kind) => page.click(`#send-form .kind:has(#send-kind-${kind})`);
const sendError = () => page.locator('#send-form .form-error');

test('polls, reactions, locations, edits and deletions on the Messages tab', async (t) => {
  let pollId;

  await t.test('signs in and links a session with a virtual phone', async () => {
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
    await page.click('#tab-messages');
    await page.locator('#send-form').waitFor();
    await page.locator('#message-empty:not([hidden])').waitFor();
  });

  await t.test('sends a poll; the customer\'s vote shows in the tally live', async () => {
    await chooseKind('poll');
    await page.locator('#poll-question').waitFor();
    assert.equal(await page.locator('#send-text').isVisible(), false, 'the message box is hidden');
    await page.fill('#send-to', CUSTOMER);
    await page.fill('#poll-question', 'Which day suits you for pick-up?');
    const options = page.locator('#poll-options input');
    await options.nth(0).fill('Tuesday');
    await options.nth(1).fill('Wednesday');
    await page.click('#poll-add');
    await options.nth(2).fill('Friday');
    await page.click('#send-form button[type=submit]');

    const shown = page.locator('.message.out[data-type=poll]', { hasText: 'Which day suits you for pick-up?' });
    await shown.waitFor({ timeout: 30000 });
    pollId = await shown.getAttribute('data-message-id');
    assert.ok(pollId);
    assert.deepEqual(await shown.locator('.poll-option').evaluateAll((els) => els.map((e) => [e.dataset.option, e.dataset.votes])),
      [['Tuesday', '0'], ['Wednesday', '0'], ['Friday', '0']]);
    // The form is ready for the next poll once the API has answered (the poll itself can
    // show first, from the live feed).
    await page.waitForFunction(() => document.querySelector('#poll-question').value === ''
      && document.querySelectorAll('#poll-options input').length === 2, null, { timeout: 30000 });

    const got = await phoneHas('the phone to get the poll', (m) => m.id === pollId && m.poll);
    assert.equal(got.poll.question, 'Which day suits you for pick-up?');
    assert.deepEqual(got.poll.options.map((o) => o.name ?? o), ['Tuesday', 'Wednesday', 'Friday']);

    await page.evaluate(() => { window.__noReload = true; });
    await sb.admin('POST', `/phones/${CUSTOMER}/messages`, { to: LINKED_PHONE, vote: { messageId: pollId, options: ['Tuesday'] } });
    await option(pollId, 'Tuesday').and(page.locator('[data-votes="1"]')).waitFor({ timeout: 30000 })
      .catch(async (e) => {
        const { messages } = await sb.api('GET', `/api/messages/${SESSION}`);
        process.stderr.write(`the poll in history: ${JSON.stringify(messages.find((m) => m.id === pollId))}\n`);
        throw e;
      });
    assert.equal(await option(pollId, 'Wednesday').getAttribute('data-votes'), '0');
    assert.match(await bubble(pollId).textContent(), /One answer · 1 voter/);

    // The customer changes their mind: the count moves, still without a reload.
    await sb.admin('POST', `/phones/${CUSTOMER}/messages`, { to: LINKED_PHONE, vote: { messageId: pollId, options: ['Friday'] } });
    await option(pollId, 'Friday').and(page.locator('[data-votes="1"]')).waitFor({ timeout: 30000 });
    assert.equal(await option(pollId, 'Tuesday').getAttribute('data-votes'), '0');
    assert.equal(await page.evaluate(() => window.__noReload), true, 'the page was not reloaded');
    // Votes are no bubbles of their own.
    assert.equal(await page.locator('.message[data-type=poll_vote]').count(), 0);
    const { messages } = await sb.api('GET', `/api/messages/${SESSION}`);
    const tally = messages.find((m) => m.id === pollId).poll.tally;
    assert.deepEqual(tally, [{ option: 'Tuesday', votes: 0 }, { option: 'Wednesday', votes: 0 }, { option: 'Friday', votes: 1 }]);
  });

  await t.test('a poll the gateway refuses shows its error, and keeps what was typed', async () => {
    await page.fill('#poll-question', 'Tea or coffee?');
    const options = page.locator('#poll-options input');
    await options.nth(0).fill('Tea');
    await page.click('#send-form button[type=submit]');
    await sendError().waitFor();
    assert.equal(await sendError().textContent(), 'A poll needs at least 2 options.');

    await options.nth(1).fill('Tea');
    await page.click('#send-form button[type=submit]');
    const err = await apiError('/api/send-poll', { sessionId: SESSION, to: CUSTOMER, question: 'Tea or coffee?', options: ['Tea', 'Tea'], multiple: false });
    assert.equal(err.code, 'invalid_field');
    await page.waitForFunction((text) => document.querySelector('#send-form .form-error')?.textContent === text,
      `${err.message} (${err.code})`, { timeout: 15000 });
    assert.equal(await page.inputValue('#poll-question'), 'Tea or coffee?', 'what was typed is kept');
    await options.nth(1).fill('');
    await page.fill('#poll-question', '');
    await options.nth(0).fill('');
  });

  await t.test('reacts to the customer\'s message, then takes the reaction back', async () => {
    const msg = await customerSays('Friday works. Can I pay at the counter?');
    const id = await msg.getAttribute('data-message-id');
    await msg.locator('.react-toggle').click();
    await msg.locator('.react-emoji[data-emoji="👍"]').click();
    await bubble(id).locator('.reaction.mine[data-emoji="👍"]').waitFor({ timeout: 30000 });

    const reaction = await phoneHas('the phone to get the reaction', (m) => m.reaction?.messageId === id && m.reaction.emoji === '👍');
    assert.equal(reaction.fromMe, false);
    const target = await phoneHas('the reaction to show on the phone\'s message', (m) => m.id === id && m.reactions?.[LINKED_PHONE] === '👍');
    assert.deepEqual(target.reactions, { [LINKED_PHONE]: '👍' });

    // Ours is marked in the menu, which offers to take it back.
    await bubble(id).locator('.react-toggle').click();
    assert.equal(await bubble(id).locator('.react-emoji[data-emoji="👍"]').getAttribute('aria-pressed'), 'true');
    await bubble(id).locator('.react-remove').click();
    await waitFor('the badge to go', async () => (await bubble(id).locator('.reaction').count()) === 0);
    await phoneHas('the reaction to be taken back on the phone', (m) => m.id === id && !m.reactions?.[LINKED_PHONE]);
  });

  await t.test('a reaction from the customer shows under our poll, live', async () => {
    await sb.admin('POST', `/phones/${CUSTOMER}/messages`, { to: LINKED_PHONE, reaction: { messageId: pollId, emoji: '❤️' } });
    const badge = bubble(pollId).locator('.reaction[data-emoji="❤️"]');
    await badge.waitFor({ timeout: 30000 });
    assert.equal(await badge.getAttribute('title'), `+${CUSTOMER}`);
    assert.equal(await page.locator('.message[data-type=reaction]').count(), 0, 'a reaction is no bubble of its own');
  });

  await t.test('the customer\'s edit and deletion show on their messages, live', async () => {
    const typo = await customerSays('See you at 3');
    const typoId = await typo.getAttribute('data-message-id');
    await sb.admin('POST', `/phones/${CUSTOMER}/messages`, { to: LINKED_PHONE, edit: { messageId: typoId, text: 'See you at 4' } });
    await bubble(typoId).locator('.mark-edited').waitFor({ timeout: 30000 });
    assert.equal(await bubble(typoId).locator('.message-text').textContent(), 'See you at 4');

    const wrong = await customerSays('Wrong chat, sorry');
    const wrongId = await wrong.getAttribute('data-message-id');
    await sb.admin('POST', `/phones/${CUSTOMER}/messages`, { to: LINKED_PHONE, revoke: { messageId: wrongId } });
    await bubble(wrongId).locator('.mark-deleted').waitFor({ timeout: 30000 });
    assert.equal(await bubble(wrongId).locator('.message-text').count(), 0, 'the text is gone');
    assert.match(await bubble(wrongId).textContent(), /This message was deleted/);
    assert.equal(await bubble(wrongId).locator('.react-toggle').count(), 0, 'a deleted message takes no reactions');
    assert.equal(await page.locator('.message[data-type=edited], .message[data-type=revoked]').count(), 0);
  });

  await t.test('contact cards from the customer show their names', async () => {
    const vcard = (name, phone) => `BEGIN:VCARD\nVERSION:3.0\nN:;${name};;;\nFN:${name}\nTEL;type=CELL;waid=${phone}:+${phone}\nEND:VCARD`;
    await sb.admin('POST', `/phones/${CUSTOMER}/messages`, {
      to: LINKED_PHONE,
      contacts: [{ name: 'Ana Ruiz', vcard: vcard('Ana Ruiz', '15550000009') }, { name: 'Dan Ode', vcard: vcard('Dan Ode', '15550000010') }],
    });
    const shown = page.locator('.message.in[data-type=contact]');
    await shown.waitFor({ timeout: 30000 });
    assert.deepEqual(await shown.locator('.contact').allTextContents(), ['Ana Ruiz +15550000009', 'Dan Ode +15550000010']);
  });

  await t.test('sends a location; a coordinate off the globe shows the API\'s error', async () => {
    await chooseKind('location');
    await page.locator('#location-latitude').waitFor();
    await page.fill('#send-to', CUSTOMER);
    await page.fill('#location-latitude', '95');
    await page.fill('#location-longitude', '13.3777');
    await page.click('#send-form button[type=submit]');
    const err = await apiError('/api/send-location', { sessionId: SESSION, to: CUSTOMER, latitude: 95, longitude: 13.3777 });
    assert.equal(err.code, 'invalid_field');
    await page.waitForFunction((text) => document.querySelector('#send-form .form-error')?.textContent === text,
      `${err.message} (${err.code})`, { timeout: 15000 });

    await page.fill('#location-latitude', '52.5163');
    await page.fill('#location-name', 'Corner Shop');
    await page.fill('#location-address', 'Pariser Platz 1, Berlin');
    await page.click('#send-form button[type=submit]');
    const shown = page.locator('.message.out[data-type=location]', { hasText: 'Corner Shop' });
    await shown.waitFor({ timeout: 30000 });
    assert.equal(await sendError().isHidden(), true);
    assert.match(await shown.textContent(), /Pariser Platz 1, Berlin/);
    const link = shown.locator('a.location-coords');
    assert.equal(await link.textContent(), '52.51630, 13.37770');
    assert.match(await link.getAttribute('href'), /^https:\/\/www\.openstreetmap\.org\/\?mlat=52\.5163&mlon=13\.3777/);
    const id = await shown.getAttribute('data-message-id');

    const got = await phoneHas('the phone to get the location', (m) => m.id === id && m.location);
    assert.equal(got.location.latitude, 52.5163);
    assert.equal(got.location.longitude, 13.3777);
    assert.equal(got.location.name, 'Corner Shop');
    assert.equal(await page.inputValue('#location-latitude'), '', 'the form is emptied once sent');
  });

  await t.test('the history after a reload shows the same', async () => {
    await page.reload();
    await page.locator(`.message[data-message-id="${pollId}"]`).waitFor({ timeout: 30000 });
    assert.equal(await option(pollId, 'Friday').getAttribute('data-votes'), '1');
    await bubble(pollId).locator('.reaction[data-emoji="❤️"]').waitFor();
    await page.locator('.message .mark-edited').waitFor();
    await page.locator('.message .mark-deleted').waitFor();
    // A reload starts the form from a plain message.
    assert.equal(await page.isChecked('#send-kind-text'), true);
    await chooseKind('poll');
    await page.evaluate(() => document.querySelectorAll('.toast').forEach((x) => x.remove()));
    await page.screenshot({ path: path.join(shots, '10-messaging.png'), fullPage: true });
  });

  await t.test('fits a phone-sized screen, with a reaction menu open', async () => {
    const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    const mobile = await ctx.newPage();
    await mobile.goto(`${sb.url}/#/sessions/${SESSION}/messages`);
    await mobile.fill('#login-key', API_KEY);
    await mobile.press('#login-key', 'Enter');
    const poll = mobile.locator(`.message[data-message-id="${pollId}"]`);
    await poll.waitFor({ timeout: 30000 });
    for (const sel of ['.message.in[data-type=text] .react-toggle', `.message[data-message-id="${pollId}"] .react-toggle`]) {
      await mobile.locator(sel).first().click();
      const overflow = await mobile.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 1, `no horizontal scrolling on a phone (overflow ${overflow}px, ${sel})`);
      await mobile.locator(sel).first().click();
    }
    await ctx.close();
  });

  assert.deepEqual(pageErrors.map((e) => e.message), [], 'no script errors in the page');
});
