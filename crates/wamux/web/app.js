// wamux management UI. Plain ES modules, no build step: the gateway serves these files from
// its binary. State lives in `state`; the live Socket.IO feed and user actions change it and
// call the render functions of the parts they touch, so forms keep what the user typed.

import { Api, ApiError } from './api.js';
import { io } from './vendor/socket.io.esm.min.js';

const KEY_STORAGE = 'wamux.apiKey';
const EVENT_KINDS = [
  'message-received', 'message-from-me', 'message-sent', 'message-delivered', 'message-read',
  'message-failed', 'message-reaction', 'message-revoked', 'message-edited', 'session-status', 'qr', 'call',
  'passkey-required', 'passkey-confirmation', 'passkey-failed', 'presence', 'poll-vote', 'message-undecryptable',
  'group-joined', 'group-updated', 'group-participants', 'chat-updated', 'message-deleted',
  'message-starred',
];
// A tab is there only for a key that may use it (`shown`).
const TABS = [
  { id: 'link', label: 'Link' },
  { id: 'messages', label: 'Messages', shown: () => can('read') || can('send') },
  { id: 'groups', label: 'Groups', shown: () => can('read') },
  { id: 'webhook', label: 'Webhook', shown: () => can('webhooks') },
  { id: 'phones', label: 'Virtual phones', shown: () => isAdmin() && !!state.sandbox },
];
// The scopes a key can have, as the Keys page offers them.
const SCOPES = [
  { id: 'read', hint: 'status, history, events, the live feed' },
  { id: 'send', hint: 'send messages and files, check numbers' },
  { id: 'manage', hint: 'create, link, log out, restart, delete sessions' },
  { id: 'webhooks', hint: 'the webhook and its deliveries' },
];
const LINKED = new Set(['connected', 'connecting']);
// The statuses of a link that waits for the account owner's passkey, then for the code check.
const PASSKEY = new Set(['passkey_required', 'passkey_confirmation']);

const state = {
  api: null,
  // Who the key is, from GET /api/me: {admin, keyId, sessions, scopes}.
  me: null,
  page: 'sessions', // or 'keys', the admin key's page of scoped keys
  socket: null,
  sessions: new Map(), // id -> status object from the API
  selected: null,
  tab: 'link',
  qr: new Map(), // id -> {qr, qrImage, expiresAt}
  messages: new Map(), // id -> {items: [], nextCursor, loaded}
  sandbox: null, // {adminUrl, ...} when the gateway runs in sandbox mode
  phones: [],
  // What was typed in a virtual phone's card, so a redraw of the list (new data, a status
  // change) does not wipe it: phone -> {to, text}.
  phoneDrafts: new Map(),
  // The virtual phone chosen to scan the QR code: the QR box is redrawn with every new code.
  scanPhone: null,
  deliveryPoll: null, // the timer that reloads the deliveries while some are pending
  statusHeard: new Map(), // id -> how many live status changes came in, to spot stale answers
  // id -> the passkey step as GET /api/sessions/:id/passkey has it ({stage, options, code,
  // skipHandoffUx, expiresAt, error}), kept current by the passkey events.
  passkey: new Map(),
  passkeyLoading: new Set(), // ids whose passkey step is being fetched
  passkeyDrafts: new Map(), // id -> what was pasted into the result box, kept across redraws
  sendKind: 'text', // what the send form sends: 'text' (or a file), 'location', 'poll'
  reactOpen: null, // the id of the message whose reaction menu is open
  groups: new Map(), // id -> {items: [GroupInfo], loaded}, the session's groups as WhatsApp lists them
  group: null, // the JID of the group open on the Groups tab
  groupChat: null, // the open group's history: {sessionId, groupId, items, nextCursor, loaded, early}
  // The answer to the last group created here, shown under the form: {sessionId, subject, results}.
  groupCreated: null,
  groupReload: null, // the timer that reloads the groups after group events
};

const $ = (sel, root = document) => root.querySelector(sel);

// What the signed-in key may do. The admin key may do everything; a scoped key has its
// scopes on every session the API lists to it (only those its patterns name). The page
// leaves out what the key may not use, rather than offering it to be refused.
function can(scope) {
  return !!state.me && (state.me.admin || state.me.scopes.includes(scope));
}

function isAdmin() {
  return !!state.me?.admin;
}

// Builds an element: h('button', {class: 'btn', onclick: f}, 'Text', child...).
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// replaceChildren, skipping the null/false of conditional parts (the DOM would print "null").
function put(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

// ---------- feedback ----------

function toast(message, kind = 'error') {
  const t = h('div', { class: `toast toast-${kind}` }, message,
    h('button', { class: 'toast-close', 'aria-label': 'Dismiss', onclick: () => t.remove() }, '×'));
  $('#toasts').append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 10000 : 4000);
}

function describe(err) {
  if (err instanceof ApiError) return err.code && !err.code.startsWith('http_') && err.code !== 'network' ? `${err.message} (${err.code})` : err.message;
  return err?.message ?? String(err);
}

// Runs an action for a button: disables it meanwhile, shows errors inline (or as a toast).
async function act(button, errorEl, fn) {
  if (errorEl) errorEl.hidden = true;
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return signOut('The API key was refused. Sign in again.');
    if (errorEl) {
      errorEl.textContent = describe(err);
      errorEl.hidden = false;
    } else {
      toast(describe(err));
    }
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

function confirmDialog(title, text, okLabel) {
  const dlg = $('#confirm');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = okLabel;
  dlg.returnValue = '';
  dlg.showModal();
  return new Promise((resolve) => dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true }));
}

// ---------- formatting ----------

function toDate(t) {
  if (t === undefined || t === null || t === '') return null;
  if (typeof t === 'number') return new Date(t < 1e12 ? t * 1000 : t);
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? null : d;
}

function ago(t) {
  const d = toDate(t);
  if (!d) return '';
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 10) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return d.toLocaleDateString();
}

function clock(t) {
  const d = toDate(t);
  if (!d) return '';
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' }) : d.toLocaleString();
}

function timeEl(t, text) {
  const d = toDate(t);
  return d ? h('time', { datetime: d.toISOString(), title: d.toLocaleString() }, text ?? ago(t)) : '';
}

const phoneOf = (jid) => (jid ? String(jid).split('@')[0].split(':')[0] : '');
const fmtPhone = (p) => (p ? `+${String(p).replace(/^\+/, '')}` : '');
const statusLabel = (s) => (s ?? 'unknown').replace('_', ' ');

function sessionSince(s) { return s.since ?? s.statusSince ?? s.statusChangedAt ?? s.updatedAt ?? s.createdAt; }
function sessionError(s) { return s.lastError ?? s.error ?? s.statusReason ?? s.reason ?? null; }
function sessionPhone(s) { return s.me?.phone ?? phoneOf(s.me?.jid) ?? s.phone; }
function sessionName(s) { return s.me?.pushName ?? s.pushName ?? s.name; }

// ---------- sign in / out ----------

async function signIn(key, { silent } = {}) {
  const api = new Api(key);
  try {
    const me = await api.me();
    const list = await api.sessions();
    state.api = api;
    state.me = me;
    sessionStorage.setItem(KEY_STORAGE, key);
    setSessions(list);
    return true;
  } catch (err) {
    if (!silent) {
      const el = $('#login-error');
      el.textContent = err instanceof ApiError && err.status === 401 ? 'That API key was refused.' : describe(err);
      el.hidden = false;
    }
    return false;
  }
}

function signOut(reason) {
  sessionStorage.removeItem(KEY_STORAGE);
  state.socket?.disconnect();
  state.socket = null;
  state.api = null;
  state.me = null;
  state.sandbox = null;
  state.phones = [];
  state.page = 'sessions';
  state.sessions.clear();
  state.messages.clear();
  state.qr.clear();
  state.passkey.clear();
  state.passkeyDrafts.clear();
  state.groups.clear();
  state.group = null;
  state.groupChat = null;
  state.groupCreated = null;
  state.selected = null;
  state.tab = 'link';
  // The next key starts from the start, not on a page of the last one's.
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  // What the last key was offered goes with it.
  put($('#nav'));
  put($('#create-slot'));
  put($('#keys'));
  renderDetail();
  showLogin();
  if (reason) {
    const el = $('#login-error');
    el.textContent = reason;
    el.hidden = false;
  }
}

function showLogin() {
  $('#app').hidden = true;
  $('#keys').hidden = true;
  $('#signout').hidden = true;
  $('#feed').hidden = true;
  $('#whoami').hidden = true;
  $('#sandbox-badge').hidden = true;
  $('#login').hidden = false;
  $('#login-key').value = '';
  $('#login-key').focus();
}

async function showApp() {
  $('#login').hidden = true;
  $('#login-error').hidden = true;
  $('#signout').hidden = false;
  renderWhoami();
  renderCreateForm();
  // The feed is the read scope's; without it the status is polled (see boot).
  $('#feed').hidden = !can('read');
  if (can('read')) connectFeed();
  // The virtual phones are the admin key's only.
  if (isAdmin()) detectSandbox();
  applyRoute();
  renderSessions();
}

function renderWhoami() {
  const el = $('#whoami');
  const me = state.me;
  el.hidden = false;
  if (me.admin) {
    el.textContent = 'admin key';
    el.title = 'The admin key (WAMUX_API_KEY) may do everything';
    return;
  }
  el.textContent = `${me.keyId} · ${me.scopes.join(', ')}`;
  el.title = `A scoped key for the sessions ${me.sessions.join(', ')}`;
}

// Sessions and Keys, for the admin key; a scoped key has the sessions page only.
function renderNav() {
  const nav = $('#nav');
  if (!isAdmin()) return put(nav);
  const back = state.selected ? `#/sessions/${encodeURIComponent(state.selected)}/${state.tab}` : '#/';
  const link = (page, href, label) => h('a', {
    id: `nav-${page}`, class: 'nav-link', href, 'aria-current': state.page === page ? 'page' : null,
  }, label);
  put(nav, link('sessions', back, 'Sessions'), link('keys', '#/keys', 'Keys'));
}

// The new-session form, for a key that may create sessions (manage).
function renderCreateForm() {
  const slot = $('#create-slot');
  if (!can('manage')) return put(slot);
  const error = h('p', { id: 'create-error', class: 'form-error', role: 'alert', hidden: true });
  const input = h('input', {
    id: 'create-id', name: 'sessionId', placeholder: 'new session id', pattern: '[A-Za-z0-9_\\-]{1,64}', maxlength: '64',
    required: true, autocomplete: 'off',
  });
  const form = h('form', { id: 'create-form', class: 'create-form', novalidate: true, onsubmit: (e) => {
    e.preventDefault();
    const id = input.value.trim();
    act(e.submitter, error, async () => {
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new Error('A session id has 1 to 64 letters, digits, "_" or "-".');
      const r = await state.api.startSession(id);
      state.sessions.set(id, { ...state.sessions.get(id), sessionId: id, status: r?.status ?? 'starting', ...r });
      input.value = '';
      location.hash = `#/sessions/${encodeURIComponent(id)}/link`;
      await refreshSession(id);
    });
  } },
  h('label', { for: 'create-id', class: 'sr-only' }, 'New session id'),
  input,
  h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create'));
  const patterns = state.me.sessions;
  put(slot, form, error,
    patterns.includes('*') ? null : h('p', { class: 'muted small' }, `This key may create sessions named ${patterns.join(', ')}.`));
}

// ---------- sessions ----------

function setSessions(list) {
  const arr = Array.isArray(list) ? list : (list?.sessions ?? []);
  state.sessions = new Map(arr.map((s) => [s.sessionId ?? s.id, s]));
}

async function refreshSessions() {
  const list = await state.api.sessions();
  setSessions(list);
  renderSessions();
  renderDetailHeader();
}

async function refreshSession(id) {
  // The status route is the read scope's; the list has the status too.
  if (!can('read')) {
    await refreshSessions();
    if (state.selected === id && !state.sessions.has(id)) location.hash = '';
    else if (state.selected === id) renderLink();
    return;
  }
  const heard = state.statusHeard.get(id) ?? 0;
  try {
    const s = await state.api.status(id);
    // A live status change that came in meanwhile is newer than this answer (which would put
    // e.g. "connecting" back over "connected"): keep the event's status; a session-status
    // event starts a refresh of its own for the rest.
    if ((state.statusHeard.get(id) ?? 0) !== heard) return;
    state.sessions.set(id, { ...state.sessions.get(id), ...s });
  } catch (err) {
    // 403: a session this key may not see (a link from another key's page).
    if (err instanceof ApiError && (err.status === 404 || err.status === 403)) {
      state.sessions.delete(id);
      if (state.selected === id) select(null);
    } else {
      throw err;
    }
  }
  renderSessions();
  if (state.selected === id) {
    renderDetailHeader();
    renderLink();
    groupsTabFollowStatus(id);
  }
}

function renderSessions() {
  const list = $('#session-list');
  const ids = [...state.sessions.keys()].sort();
  $('#session-count').textContent = ids.length ? `(${ids.length})` : '';
  $('#session-empty').hidden = ids.length > 0;
  $('#session-empty').textContent = can('manage')
    ? 'No sessions yet. Create one above, then scan its QR code with WhatsApp.'
    : 'This key has no sessions to show yet.';
  put(list, ...ids.map((id) => {
    const s = state.sessions.get(id);
    const err = sessionError(s);
    const phone = sessionPhone(s);
    const name = sessionName(s);
    return h('li', {},
      h('a', {
        class: `session-item${state.selected === id ? ' selected' : ''}`,
        href: `#/sessions/${encodeURIComponent(id)}/${state.tab}`,
        'aria-current': state.selected === id ? 'page' : null,
        dataset: { sessionId: id },
      },
      h('span', { class: 'session-line' },
        h('strong', { class: 'session-id' }, id),
        h('span', { class: `badge status status-${s.status}`, dataset: { status: s.status } }, statusLabel(s.status))),
      (phone || name) ? h('span', { class: 'session-me' }, [fmtPhone(phone), name].filter(Boolean).join(' · ')) : null,
      h('span', { class: 'session-since muted' }, 'since ', timeEl(sessionSince(s))),
      err ? h('span', { class: 'session-error' }, err) : null));
  }));
}

// `group`: the group open on the Groups tab (its JID), or null for none.
function select(id, tab, group = null) {
  const changed = id !== state.selected || (tab && tab !== state.tab) || group !== state.group;
  if (id !== state.selected) state.groupCreated = null;
  state.selected = id;
  state.group = group;
  if (tab && TABS.some((t) => t.id === tab)) state.tab = tab;
  if (changed) renderDetail();
  renderSessions();
}

function applyRoute() {
  const keys = location.hash === '#/keys' && isAdmin();
  state.page = keys ? 'keys' : 'sessions';
  $('#app').hidden = keys;
  $('#keys').hidden = !keys;
  if (keys) {
    renderKeysPage();
  } else {
    // The secret of a key just created is shown once: leaving the page takes it away.
    put($('#keys'));
    // `#/sessions/<id>/<tab>`, and for the Groups tab `/<group JID>` after it: a group opened.
    const m = location.hash.match(/^#\/sessions\/([^/]+)(?:\/([a-z]+)(?:\/([^/]+))?)?/);
    if (m) select(decodeURIComponent(m[1]), m[2] ?? state.tab, m[2] === 'groups' && m[3] ? groupJid(decodeURIComponent(m[3])) : null);
    else select(null);
  }
  renderNav();
}

// ---------- the session panel ----------

function renderDetail() {
  const body = $('#detail-body');
  const id = state.selected;
  $('#detail-empty').hidden = !!id;
  body.hidden = !id;
  if (!id) return put(body);
  if (!state.sessions.has(id)) {
    put(body, h('p', { class: 'muted' }, `Loading session ${id}…`));
    refreshSession(id).catch((e) => toast(describe(e)));
    return;
  }
  // A tab chosen from the keyboard is redrawn with the panel: give it the focus back, or the
  // next arrow key would go nowhere.
  const tabFocused = document.activeElement?.getAttribute('role') === 'tab';
  const tabs = TABS.filter((t) => !t.shown || t.shown());
  if (!tabs.some((t) => t.id === state.tab)) state.tab = 'link';
  const tablist = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Session views', onkeydown: tabKeys },
    tabs.map((t) => h('a', {
      role: 'tab', id: `tab-${t.id}`, href: `#/sessions/${encodeURIComponent(id)}/${t.id}`,
      'aria-selected': String(state.tab === t.id), tabindex: state.tab === t.id ? '0' : '-1',
      'aria-controls': 'tabpanel', class: 'tab',
    }, t.label)));
  put(body,
    h('div', { id: 'detail-header', class: 'detail-header' }),
    tablist,
    h('div', { id: 'tabpanel', role: 'tabpanel', 'aria-labelledby': `tab-${state.tab}`, class: 'tabpanel' }),
  );
  renderDetailHeader();
  if (tabFocused) $(`#tab-${state.tab}`).focus();
  const panel = $('#tabpanel');
  if (state.tab === 'link') renderLinkTab(panel, id);
  else if (state.tab === 'messages') renderMessagesTab(panel, id);
  else if (state.tab === 'groups') renderGroupsTab(panel, id);
  else if (state.tab === 'webhook') renderWebhookTab(panel, id);
  else if (state.tab === 'phones') renderPhonesTab(panel, id);
}

function tabKeys(e) {
  if (!['ArrowLeft', 'ArrowRight', 'Home', 'End'].includes(e.key)) return;
  const tabs = [...e.currentTarget.querySelectorAll('[role=tab]')];
  const i = tabs.indexOf(document.activeElement);
  if (i < 0) return;
  const next = e.key === 'Home' ? 0 : e.key === 'End' ? tabs.length - 1 : (i + (e.key === 'ArrowRight' ? 1 : -1) + tabs.length) % tabs.length;
  e.preventDefault();
  tabs[next].focus();
  tabs[next].click();
}

function renderDetailHeader() {
  const el = $('#detail-header');
  const id = state.selected;
  const s = id && state.sessions.get(id);
  if (!el || !s) return;
  const phone = sessionPhone(s);
  const name = sessionName(s);
  const err = sessionError(s);
  put(el,
    h('div', { class: 'detail-title' },
      h('h2', {}, id),
      h('span', { class: `badge status status-${s.status}`, id: 'detail-status', dataset: { status: s.status } }, statusLabel(s.status)),
      h('span', { class: 'muted' }, 'since ', timeEl(sessionSince(s)))),
    (phone || name) ? h('p', { class: 'detail-me' }, [fmtPhone(phone), name].filter(Boolean).join(' · ')) : null,
    err ? h('p', { class: 'session-error' }, 'Last error: ', err) : null,
    sessionActions(id, s, phone),
  );
}

// Restart, log out and delete: the manage scope's.
function sessionActions(id, s, phone) {
  if (!can('manage')) return null;
  const restart = h('button', { class: 'btn', type: 'button', onclick: async (e) => {
    const btn = e.currentTarget;
    const what = s.status === 'logged_out' ? 'It starts again with a new QR code to scan.'
      : 'The connection to WhatsApp is dropped and opened again; a linked phone stays linked.';
    if (!await confirmDialog(`Restart ${id}?`, what, 'Restart')) return;
    await act(btn, null, async () => {
      await state.api.restart(id);
      toast(`Session ${id} restarting`, 'info');
      await refreshSession(id);
    });
  } }, 'Restart');
  const logout = h('button', { class: 'btn', type: 'button', disabled: !s.loggedIn && !LINKED.has(s.status) && !phone, onclick: async (e) => {
    const btn = e.currentTarget;
    if (!await confirmDialog(`Log out ${id}?`, 'The phone will unlink this device. Linking again needs a new QR scan.', 'Log out')) return;
    await act(btn, null, async () => {
      await state.api.logout(id);
      toast(`Session ${id} logged out`, 'info');
      await refreshSession(id);
    });
  } }, 'Log out');
  const del = h('button', { class: 'btn btn-danger', type: 'button', onclick: async (e) => {
    const btn = e.currentTarget;
    if (!await confirmDialog(`Delete ${id}?`, 'The session, its link to the phone and its webhook are removed. This cannot be undone.', 'Delete')) return;
    await act(btn, null, async () => {
      await state.api.deleteSession(id);
      state.sessions.delete(id);
      state.messages.delete(id);
      toast(`Session ${id} deleted`, 'info');
      location.hash = '';
      renderSessions();
    });
  } }, 'Delete');
  return h('div', { class: 'row actions' }, restart, logout, del);
}

// ---------- link: QR and pairing code ----------

function renderLinkTab(panel, id) {
  // Linking (the QR code, a pairing code, the passkey steps) is the manage scope's.
  if (!can('manage')) {
    put(panel, h('div', { class: 'link-grid single' }, h('div', { class: 'card', id: 'link-box' })));
    renderLink();
    return;
  }
  const pairError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const pairResult = h('p', { class: 'pair-code', hidden: true, 'aria-live': 'polite' });
  const pairForm = h('form', { class: 'stack', novalidate: true, onsubmit: (e) => {
    e.preventDefault();
    const phone = e.currentTarget.elements.phone.value.trim();
    act(e.submitter, pairError, async () => {
      if (!phone) throw new Error('Enter the phone number that will link, with its country code.');
      const r = await state.api.pairingCode(id, phone);
      const code = r?.code ?? r?.pairingCode ?? '';
      put(pairResult, 'Code: ', h('strong', {}, code.length === 8 ? `${code.slice(0, 4)}-${code.slice(4)}` : code),
        h('span', { class: 'muted' }, ' — on the phone: Linked devices › Link with phone number instead.'));
      pairResult.hidden = false;
    });
  } },
  h('label', { for: 'pair-phone' }, 'Phone number (with country code)'),
  h('div', { class: 'row' },
    h('input', { id: 'pair-phone', name: 'phone', inputmode: 'tel', placeholder: '15551234567', autocomplete: 'tel' }),
    h('button', { class: 'btn', type: 'submit' }, 'Get pairing code')),
  pairError, pairResult);

  put(panel,
    h('div', { class: 'link-grid' },
      h('div', { class: 'card', id: 'link-box' }),
      h('div', { class: 'card', id: 'pair-card' },
        h('h3', {}, 'Link with a code instead'),
        h('p', { class: 'muted' }, 'For a phone that cannot scan this screen: enter its number, then type the code on the phone.'),
        pairForm)));
  renderLink();
}

function renderLink() {
  const box = $('#link-box');
  const id = state.selected;
  const s = id && state.sessions.get(id);
  if (!box || !s) return;
  if (!can('manage')) return renderLinkStatus(box, s);
  if (!PASSKEY.has(s.status) && s.status !== 'failed') forgetPasskey(id);
  if (needsPasskeyFetch(id, s)) loadPasskey(id);
  const view = passkeyView(id, s);
  // The passkey steps take the whole width: linking with a code instead is no way around them.
  $('#pair-card').hidden = !!view;
  box.closest('.link-grid').classList.toggle('single', !!view);
  box.classList.toggle('passkey', !!view);
  if (view) return renderPasskey(box, id, s, view);
  delete box.dataset.view;
  if (s.status === 'connected') return put(box, ...linkedView(s));
  if (s.status === 'qr' || s.status === 'starting') {
    const qr = state.qr.get(id);
    const img = qr?.qrImage
      ? h('img', { id: 'qr-image', class: 'qr', src: qr.qrImage, alt: 'QR code to scan with WhatsApp', width: 264, height: 264 })
      : h('div', { class: 'qr qr-wait' }, 'Waiting for a QR code…');
    const scanBtn = state.sandbox && qr?.qr ? sandboxScanButton(id) : null;
    put(box,
      h('h3', {}, 'Scan to link'),
      h('p', { class: 'muted' }, 'On the phone: WhatsApp › Settings › Linked devices › Link a device. The code renews itself until it is scanned.'),
      img,
      qr?.expiresAt ? h('p', { class: 'muted small' }, 'Renews ', timeEl(qr.expiresAt, clock(qr.expiresAt))) : null,
      scanBtn);
    if (!qr) loadQr(id);
    return;
  }
  const canStart = ['disconnected', 'logged_out', 'failed'].includes(s.status);
  put(box,
    h('h3', {}, s.status === 'connecting' ? 'Connecting…' : `Session is ${statusLabel(s.status)}`),
    h('p', { class: 'muted' }, canStart ? 'Start it again to get a new QR code.' : 'Waiting for WhatsApp.'),
    canStart ? h('button', { class: 'btn btn-primary', type: 'button', onclick: (e) => act(e.currentTarget, null, async () => {
      await state.api.startSession(id);
      await refreshSession(id);
    }) }, 'Start session') : null);
}

function linkedView(s) {
  const phone = sessionPhone(s);
  return [
    h('h3', {}, 'Linked'),
    h('p', { class: 'linked', id: 'linked' }, '✓ Connected', phone ? ` as ${fmtPhone(phone)}` : '', sessionName(s) ? ` (${sessionName(s)})` : ''),
    h('p', { class: 'muted' }, 'Messages to and from this number now reach the API, its webhook and the live feed.'),
  ];
}

// The Link tab of a key without the manage scope: where the link is, and nothing to do.
function renderLinkStatus(box, s) {
  if (s.status === 'connected') return put(box, ...linkedView(s));
  const waiting = s.status === 'qr' || s.status === 'starting';
  put(box,
    h('h3', {}, waiting ? 'Not linked yet' : s.status === 'connecting' ? 'Connecting…' : `Session is ${statusLabel(s.status)}`),
    h('p', { class: 'muted' }, waiting ? 'It waits for a phone to scan its QR code. ' : '',
      'Linking a phone to it takes a key with the manage scope.'));
}

// ---------- link: the account owner's passkey ----------
//
// Some accounts make WhatsApp ask for the owner's passkey before it links a device. The
// passkey is for whatsapp.com, so only a page on https://web.whatsapp.com can use it; and
// that page's content security policy forbids it to call the gateway. So the operator
// carries the request there and the answer back: a helper script (with the request in it)
// for that page's console, and a box here for what it copies. Then WhatsApp shows a code on
// the phone and here, and the operator confirms that they are the same.

// Which passkey screen the Link tab shows, or null for the usual ones.
function passkeyView(id, s) {
  const p = state.passkey.get(id);
  if (s.status === 'passkey_required') return ['confirming', 'confirmation_required'].includes(p?.stage) ? 'sent' : 'assertion';
  if (s.status === 'passkey_confirmation') return p?.confirmed || (p?.stage === 'confirming' && p.code) ? 'confirmed' : 'code';
  if (s.status === 'failed' && passkeyFailure(id, s)) return 'failed';
  return null;
}

function passkeyFailure(id, s) {
  const p = state.passkey.get(id);
  if (p?.error) return p.error;
  const err = sessionError(s);
  return err && /passkey/i.test(err) ? err : null;
}

// Whether the Link tab lacks what it needs to draw this status (an event carries it, the
// passkey route has it). Once per status: an answer without it is not asked for again.
function needsPasskeyFetch(id, s) {
  const p = state.passkey.get(id);
  if (p && p.fetchedFor === s.status) return false;
  if (s.status === 'passkey_required') return !p?.options && p?.stage !== 'confirming';
  if (s.status === 'passkey_confirmation') return !p?.code;
  // Whether a failure was the passkey's: the route keeps the last attempt's error.
  if (s.status === 'failed') return !p?.error;
  return false;
}

async function loadPasskey(id) {
  if (state.passkeyLoading.has(id)) return;
  state.passkeyLoading.add(id);
  const asked = state.sessions.get(id)?.status;
  const heard = state.statusHeard.get(id) ?? 0;
  try {
    const p = await state.api.passkey(id);
    // A passkey event that came in meanwhile is newer than this answer.
    if ((state.statusHeard.get(id) ?? 0) === heard) setPasskey(id, { ...p, fetchedFor: asked });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return signOut('The API key was refused. Sign in again.');
    // 404: no such session, or a gateway without passkey linking; there is nothing to show.
    if (!(err instanceof ApiError) || err.status !== 404) toast(describe(err));
    setPasskey(id, { stage: 'none', fetchedFor: asked });
  } finally {
    state.passkeyLoading.delete(id);
  }
  if (state.selected === id) renderLink();
}

function setPasskey(id, p) {
  state.passkey.set(id, { ...state.passkey.get(id), ...p });
}

function forgetPasskey(id) {
  state.passkey.delete(id);
  state.passkeyDrafts.delete(id);
}

function renderPasskey(box, id, s, view) {
  const p = state.passkey.get(id) ?? {};
  // Redrawn only when what it shows changes (a status event repeats itself, a refresh
  // answers the same): a redraw would drop the error under the form and the focus.
  const key = [view, p.options?.challenge, p.code, p.expiresAt, view === 'failed' ? passkeyFailure(id, s) : ''].join('|');
  if (box.dataset.view === key) return;
  box.dataset.view = key;
  if (view === 'assertion') put(box, ...passkeyAssertionView(id, p));
  else if (view === 'sent') {
    put(box,
      h('h3', {}, 'Passkey sent'),
      h('p', { class: 'muted' }, 'Waiting for WhatsApp to check it. Then the phone shows a code to compare with this screen; keep WhatsApp open on the phone.'),
      countdown(p.expiresAt));
  } else if (view === 'code') put(box, ...passkeyCodeView(id, p));
  else if (view === 'confirmed') {
    put(box,
      h('h3', {}, 'Code confirmed'),
      p.code ? h('p', { class: 'passkey-code small-code', 'aria-label': 'Linking code' }, p.code) : null,
      h('p', { class: 'muted' }, 'Waiting for WhatsApp to finish linking this device…'));
  } else {
    put(box,
      h('h3', {}, 'Linking with the passkey failed'),
      h('p', { class: 'session-error', id: 'passkey-reason' }, passkeyFailure(id, s)),
      h('p', { class: 'muted' }, 'Nothing was linked. Start again for a new QR code; WhatsApp will ask for the passkey again after the scan.'),
      h('div', { class: 'row' }, h('button', { class: 'btn btn-primary', type: 'button', id: 'passkey-restart', onclick: (e) => act(e.currentTarget, null, async () => {
        await state.api.startSession(id);
        forgetPasskey(id);
        await refreshSession(id);
      }) }, 'Start linking again')));
  }
}

function passkeyAssertionView(id, p) {
  const intro = [
    h('h3', {}, 'Passkey required'),
    h('p', {}, 'WhatsApp asks for the account owner\'s passkey before it links this device. Keep WhatsApp open on the phone meanwhile.'),
  ];
  if (!p.options) return [...intro, h('p', { class: 'muted' }, 'Loading the passkey request…')];
  const script = helperScript(p.options);
  const scriptBox = h('textarea', { id: 'passkey-script', class: 'mono', rows: 6, readonly: true, spellcheck: 'false', 'aria-label': 'Helper script' });
  scriptBox.value = script;
  const shown = h('details', { class: 'passkey-script' }, h('summary', {}, 'Show the script'), scriptBox);
  const copyError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const copy = h('button', { id: 'passkey-copy', class: 'btn btn-primary', type: 'button', onclick: (e) => act(e.currentTarget, copyError, async () => {
    if (await copyText(script)) return toast('Helper script copied', 'info');
    shown.open = true;
    scriptBox.focus();
    scriptBox.select();
    throw new Error('This browser did not let the page copy. The script is selected below: copy it with Ctrl+C (⌘C on a Mac).');
  }) }, 'Copy helper script');

  const input = h('textarea', {
    id: 'passkey-input', name: 'assertion', class: 'mono', rows: 4, spellcheck: 'false', autocomplete: 'off',
    placeholder: '{"id":"…","rawId":"…","type":"public-key","response":{…}}', 'aria-describedby': 'passkey-input-hint',
    oninput: (e) => state.passkeyDrafts.set(id, e.currentTarget.value),
  });
  input.value = state.passkeyDrafts.get(id) ?? '';
  const error = h('p', { id: 'passkey-error', class: 'form-error', role: 'alert', hidden: true });
  const form = h('form', { id: 'passkey-form', class: 'stack', novalidate: true, onsubmit: (e) => {
    e.preventDefault();
    act(e.submitter, error, () => submitPasskey(id, input.value));
  } },
  h('label', { for: 'passkey-input' }, 'Result from WhatsApp Web'),
  h('p', { id: 'passkey-input-hint', class: 'muted small' }, 'What the helper script copied: one line of JSON.'),
  input,
  h('div', { class: 'row' }, h('button', { id: 'passkey-submit', class: 'btn btn-primary', type: 'submit' }, 'Submit'), countdown(p.expiresAt)),
  error);

  return [...intro,
    h('ol', { class: 'steps' },
      h('li', {}, 'On a desktop browser that has the owner\'s passkey (or can reach it on the phone with "Use a phone or tablet"), open ',
        h('a', { href: 'https://web.whatsapp.com', target: '_blank', rel: 'noopener noreferrer' }, 'web.whatsapp.com'), '. It need not be logged in.'),
      h('li', {}, 'Copy the helper script, open that page\'s console (F12 › Console), paste it and press Enter. Chrome may ask you to type ',
        h('code', {}, 'allow pasting'), ' first.',
        h('div', { class: 'row' }, copy), copyError, shown),
      h('li', {}, 'Click "Use my passkey" in the box the script shows there, and confirm with the passkey. The result is copied.'),
      h('li', {}, 'Paste it here and submit.')),
    form,
    state.sandbox ? sandboxPasskeySigner(id, p.options, input) : null];
}

// Sandbox: a virtual phone's owner makes the assertion (the simulator plays their browser
// on web.whatsapp.com) and it lands in the result box, to submit as a real one would.
function sandboxPasskeySigner(id, options, input) {
  const gated = state.phones.filter((p) => p.phone && p.passkey);
  if (!gated.length) return null;
  const errorEl = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const chosen = gated.some((p) => p.phone === state.scanPhone) ? state.scanPhone : gated[0].phone;
  const sel = h('select', { id: 'passkey-sandbox-phone', 'aria-label': 'Virtual phone whose owner signs' },
    gated.map((p) => h('option', { value: p.phone, selected: p.phone === chosen }, `${fmtPhone(p.phone)}${p.name ? ` ${p.name}` : ''}`)));
  return h('div', { class: 'sandbox-scan' },
    h('p', { class: 'muted small' }, 'Sandbox: the simulator can play the owner\'s browser.'),
    h('div', { class: 'row' },
      sel,
      h('button', { class: 'btn', type: 'button', id: 'passkey-sandbox-sign', onclick: (e) => act(e.currentTarget, errorEl, async () => {
        const credential = await state.api.phonePasskeyAssert(sel.value, options);
        input.value = JSON.stringify(credential);
        state.passkeyDrafts.set(id, input.value);
        input.focus();
      }) }, 'Sign as the owner of this virtual phone')),
    errorEl);
}

async function submitPasskey(id, text) {
  const pasted = text.trim();
  if (!pasted) throw new Error('Paste what the helper script copied on WhatsApp Web.');
  let credential;
  try {
    credential = JSON.parse(pasted);
  } catch {
    throw new Error('That is not what the helper script copies: it copies one line of JSON that starts with {"id":');
  }
  if (!credential || typeof credential !== 'object' || Array.isArray(credential)) {
    throw new Error('That is not what the helper script copies: it copies a JSON object, {"id": …}.');
  }
  // The answer comes once WhatsApp took the passkey; its next step (the code) may be heard
  // from the live feed before that, and is newer than the answer.
  const heard = state.statusHeard.get(id) ?? 0;
  let r;
  try {
    r = await state.api.passkeySubmit(id, credential);
  } catch (err) {
    if (err instanceof ApiError && err.status === 422) {
      // WhatsApp refused the passkey: the session has failed, and its screen says why.
      setPasskey(id, { stage: 'none', error: err.message });
      renderLink();
    }
    if (err instanceof ApiError && err.status === 409) loadPasskey(id);
    throw err;
  }
  state.passkeyDrafts.delete(id);
  if ((state.statusHeard.get(id) ?? 0) === heard) setPasskey(id, { ...r, stage: r?.stage ?? 'confirming' });
  renderLink();
}

function passkeyCodeView(id, p) {
  const title = h('h3', {}, 'Compare the code');
  if (!p.code) return [title, h('p', { class: 'muted' }, 'Loading the code…')];
  const error = h('p', { id: 'passkey-confirm-error', class: 'form-error', role: 'alert', hidden: true });
  return [title,
    h('p', {}, 'WhatsApp on the phone now shows a code. Link this device only if the phone shows the same one:'),
    h('p', { id: 'passkey-code', class: 'passkey-code', 'aria-label': 'Linking code' }, p.code),
    h('div', { class: 'row' },
      h('button', { id: 'passkey-confirm', class: 'btn btn-primary', type: 'button', onclick: (e) => act(e.currentTarget, error, async () => {
        try {
          await state.api.passkeyConfirm(id);
        } catch (err) {
          if (err instanceof ApiError && err.status === 409) loadPasskey(id);
          throw err;
        }
        setPasskey(id, { confirmed: true });
        renderLink();
      }) }, 'The phone shows the same code'),
      countdown(p.expiresAt)),
    error,
    h('p', { class: 'muted small' }, p.skipHandoffUx
      ? 'WhatsApp may finish this step by itself; the code is shown so you can check it.'
      : 'Compare every character. If the codes differ, do not confirm: another device may be trying to link. Restart the session instead.')];
}

// "Time left 9:58", kept current by the clock in boot().
function countdown(expiresAt) {
  const d = toDate(expiresAt);
  if (!d) return null;
  return h('span', { id: 'passkey-expires', class: 'muted small', role: 'timer', dataset: { expiresAt: String(d.getTime()) } }, timeLeft(d.getTime()));
}

function timeLeft(ms) {
  const s = Math.round((ms - Date.now()) / 1000);
  if (s <= 0) return 'Expired: restart the session to link again.';
  return `Time left ${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

// Copies to the clipboard: the Clipboard API where the page may use it (HTTPS or loopback),
// else the older selection copy (a gateway served over plain HTTP on the network).
async function copyText(text) {
  if (window.isSecureContext && navigator.clipboard?.writeText) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch { /* refused (no permission, no focus): try the selection copy */ }
  }
  const active = document.activeElement;
  const ta = h('textarea', { class: 'sr-only', readonly: true, 'aria-hidden': 'true' });
  ta.value = text;
  document.body.append(ta);
  ta.select();
  let ok = false;
  try { ok = document.execCommand('copy'); } catch { ok = false; }
  ta.remove();
  active?.focus?.();
  return ok;
}

// The script the operator pastes into the console of https://web.whatsapp.com. It cannot
// reach the gateway from there, so the request is written into it. It asks for the passkey
// from a button it shows (some browsers want a click for that), then copies the answer,
// `PublicKeyCredential.toJSON()`, for the operator to paste back. The parts that browsers
// without the JSON helpers (parseRequestOptionsFromJSON, toJSON) need are done by hand.
function helperScript(options) {
  return `// wamux: use the WhatsApp account owner's passkey to link a device.
// Paste this into the console of https://web.whatsapp.com, press Enter, then click
// "Use my passkey" in the box it shows. It sends nothing anywhere: it copies the result.
(() => {
  const options = ${JSON.stringify(options)};
  const fromB64 = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
  const toB64 = (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
  const request = () => (typeof PublicKeyCredential.parseRequestOptionsFromJSON === 'function'
    ? PublicKeyCredential.parseRequestOptionsFromJSON(options)
    : { ...options, challenge: fromB64(options.challenge),
        allowCredentials: (options.allowCredentials || []).map((c) => ({ ...c, id: fromB64(c.id) })) });
  const asJSON = (c) => (typeof c.toJSON === 'function' ? c.toJSON() : {
    id: c.id, rawId: toB64(c.rawId), type: c.type, authenticatorAttachment: c.authenticatorAttachment,
    clientExtensionResults: c.getClientExtensionResults(),
    response: {
      clientDataJSON: toB64(c.response.clientDataJSON), authenticatorData: toB64(c.response.authenticatorData),
      signature: toB64(c.response.signature), userHandle: c.response.userHandle ? toB64(c.response.userHandle) : null,
    },
  });
  const el = (tag, text, css) => {
    const e = document.createElement(tag);
    if (text) e.textContent = text;
    if (css) e.style.cssText = css;
    return e;
  };
  const btn = 'font:600 15px system-ui,sans-serif;padding:8px 14px;border-radius:8px;cursor:pointer;margin:8px 8px 0 0;';
  document.getElementById('wamux-passkey')?.remove();
  const box = el('div', '', 'position:fixed;top:16px;right:16px;z-index:2147483647;width:min(380px,calc(100vw - 32px));'
    + 'padding:16px;background:#fff;color:#18211d;border-radius:10px;box-shadow:0 10px 40px rgba(0,0,0,.3);font:15px/1.45 system-ui,sans-serif;');
  box.id = 'wamux-passkey';
  box.setAttribute('role', 'dialog');
  box.setAttribute('aria-label', 'wamux passkey helper');
  const use = el('button', 'Use my passkey', btn + 'background:#128c5e;color:#fff;border:1px solid #128c5e;');
  const again = el('button', 'Copy the result again', btn + 'background:#fff;color:#18211d;border:1px solid #c5cec9;');
  const close = el('button', 'Close', btn + 'background:#fff;color:#18211d;border:1px solid #c5cec9;');
  const status = el('p', 'Click "Use my passkey" and confirm with the passkey of the account that is linking.', 'margin:8px 0 0;');
  status.setAttribute('role', 'status');
  const out = el('textarea', '', 'display:none;width:100%;height:5em;margin-top:8px;font:12px monospace;');
  out.readOnly = true;
  again.hidden = true;
  let result = '';
  const copy = async () => {
    again.hidden = false;
    try {
      await navigator.clipboard.writeText(result);
      status.textContent = 'Copied. Go back to wamux and paste it into the box there.';
    } catch {
      out.style.display = 'block';
      out.focus();
      out.select();
      status.textContent = 'The browser did not let the page copy: the text below is selected; copy it (Ctrl+C or \u2318C) and paste it into wamux.';
    }
  };
  use.onclick = async () => {
    use.disabled = true;
    status.textContent = 'Waiting for the passkey\u2026';
    try {
      const cred = await navigator.credentials.get({ publicKey: request() });
      result = JSON.stringify(asJSON(cred));
      out.value = result;
      await copy();
    } catch (e) {
      status.textContent = 'The passkey was not used (' + e.name + ': ' + e.message + ').'
        + (location.hostname === 'web.whatsapp.com' ? ' Click to try again.' : ' This page is not https://web.whatsapp.com: run the script there.');
    } finally {
      use.disabled = false;
    }
  };
  again.onclick = copy;
  close.onclick = () => box.remove();
  box.append(el('strong', 'wamux: link a device with your passkey'), status, out, use, again, close);
  document.body.append(box);
  use.focus();
  return 'wamux: click "Use my passkey" at the top right of the page.';
})();
`;
}

async function loadQr(id) {
  try {
    const qr = await state.api.qr(id);
    if (qr?.qrImage || qr?.qr) state.qr.set(id, qr);
  } catch (err) {
    // 404/409 here only means no QR right now (already linked, or not yet generated).
    if (!(err instanceof ApiError) || (err.status !== 404 && err.status !== 409)) toast(describe(err));
    return;
  }
  if (state.selected === id) renderLink();
}

// ---------- messages ----------

// What the send form sends.
const SEND_KINDS = [
  { id: 'text', label: 'Message' },
  { id: 'location', label: 'Location' },
  { id: 'poll', label: 'Poll' },
];
const POLL_MAX_OPTIONS = 12;
const QUICK_REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
// Messages that act on another one: the history shows what they did to it (its reactions,
// its new text, its deletion, the poll's count), not a bubble of their own.
const ACTIONS = new Set(['reaction', 'edited', 'revoked', 'poll_vote']);
// The events that carry such an action. Their status events (message-sent, ...) carry it
// again, and must not apply it again: a later reaction may have replaced it meanwhile.
const ACTION_EVENTS = new Set(['message-reaction', 'message-edited', 'message-revoked', 'poll-vote']);
// Protocol messages (key shares, history-sync notices) are WhatsApp's plumbing, not chat.
const UNSHOWN = new Set([...ACTIONS, 'protocol']);

// The send form is the send scope's, the history the read scope's.
function renderMessagesTab(panel, id) {
  const history = can('read') ? historyCard(id) : null;
  put(panel, can('send') ? sendForm(id) : null, history);
  if (!history) return;
  const cached = state.messages.get(id);
  if (cached?.loaded) renderMessages();
  else loadMessages(id, { reset: true }).catch((e) => toast(describe(e)));
}

// One form for every kind: the number, then the fields of the chosen kind. With `chat`
// ({id, label}: the open group on the Groups tab) it sends to that chat, and has no number.
function sendForm(id, chat) {
  const sendError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const form = h('form', { id: 'send-form', class: 'card send-form', novalidate: true, onsubmit: (e) => {
    e.preventDefault();
    const f = e.currentTarget;
    const send = SENDERS[state.sendKind];
    act(e.submitter, sendError, async () => {
      const to = f.elements.to.value.trim();
      if (!to) throw new Error('Enter the number to send to, with its country code.');
      const r = await send(id, to, f);
      // The live feed may have brought the message first, and is newer than this answer.
      if (r?.id) mergeMessage(id, r, { onlyNew: true });
      else if (chat) loadGroupChat(id, chat.id, { reset: true });
      else if (can('read')) loadMessages(id, { reset: true });
      toast('Sent', 'info');
    });
  } },
  h('div', { class: 'row send-head' }, h('h3', {}, 'Send'), kindSwitch()),
  chat
    ? h('div', { class: 'send-grid' },
      h('span', { class: 'grid-label' }, 'To'),
      h('span', { id: 'send-to-chat', class: 'send-chat' }, chat.label),
      h('input', { type: 'hidden', id: 'send-to', name: 'to', value: chat.id }))
    : h('div', { class: 'send-grid' },
      h('label', { for: 'send-to' }, 'To'),
      h('input', { id: 'send-to', name: 'to', inputmode: 'tel', placeholder: '15551234567', autocomplete: 'off' })),
  textFields(), locationFields(), pollFields(),
  h('div', { class: 'row' }, attachField(), h('span', { class: 'spacer' }), h('button', { class: 'btn btn-primary', type: 'submit' }, 'Send')),
  sendError);
  showSendKind(form, state.sendKind);
  return form;
}

function kindSwitch() {
  return h('div', { class: 'kinds', role: 'radiogroup', 'aria-label': 'What to send' },
    SEND_KINDS.map((k) => h('label', { class: 'kind' },
      h('input', {
        type: 'radio', name: 'kind', value: k.id, id: `send-kind-${k.id}`, checked: state.sendKind === k.id,
        onchange: (e) => showSendKind(e.currentTarget.form, k.id),
      }),
      h('span', {}, k.label))));
}

// Shows the fields of `kind` only; the others are disabled, out of the Tab order.
function showSendKind(form, kind) {
  state.sendKind = kind;
  form.dataset.kind = kind;
  for (const panel of form.querySelectorAll('[data-kind-panel]')) {
    const on = panel.dataset.kindPanel === kind;
    panel.hidden = !on;
    panel.disabled = !on;
  }
  $('.form-error', form).hidden = true;
}

function textFields() {
  return h('fieldset', { class: 'send-panel', dataset: { kindPanel: 'text' } },
    h('legend', { class: 'sr-only' }, 'Message'),
    h('div', { class: 'send-grid' },
      h('label', { for: 'send-text' }, 'Message'),
      h('textarea', { id: 'send-text', name: 'text', rows: 2, placeholder: 'Text, or the caption of a file', onkeydown: (e) => {
        if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) e.currentTarget.form.requestSubmit();
      } })));
}

// Next to the Send button: a file to send, with the text as its caption.
function attachField() {
  return h('fieldset', { class: 'send-panel send-attach', dataset: { kindPanel: 'text' } },
    h('legend', { class: 'sr-only' }, 'File'),
    h('label', { class: 'btn file-btn' }, 'Attach file…',
      h('input', { type: 'file', name: 'file', id: 'send-file', class: 'sr-only', onchange: (e) => {
        $('#file-name').textContent = e.currentTarget.files[0]?.name ?? '';
      } })),
    h('span', { id: 'file-name', class: 'muted small' }));
}

function locationFields() {
  const field = (name, label, attrs) => [
    h('label', { for: `location-${name}` }, label),
    h('input', { id: `location-${name}`, name: `location-${name}`, autocomplete: 'off', ...attrs }),
  ];
  return h('fieldset', { class: 'send-panel', dataset: { kindPanel: 'location' } },
    h('legend', { class: 'sr-only' }, 'Location'),
    h('div', { class: 'send-grid' },
      field('latitude', 'Latitude', { inputmode: 'decimal', placeholder: '52.5163 (degrees, -90 to 90)' }),
      field('longitude', 'Longitude', { inputmode: 'decimal', placeholder: '13.3777 (degrees, -180 to 180)' }),
      field('name', 'Name', { placeholder: 'optional, e.g. Brandenburger Tor' }),
      field('address', 'Address', { placeholder: 'optional, e.g. Pariser Platz, Berlin' })));
}

function pollFields() {
  const list = h('ol', { id: 'poll-options', class: 'poll-inputs' });
  const add = h('button', { type: 'button', id: 'poll-add', class: 'btn btn-small', onclick: () => {
    addPollOption(list, add);
    list.lastElementChild.querySelector('input').focus();
  } }, '+ Add option');
  addPollOption(list, add);
  addPollOption(list, add);
  return h('fieldset', { class: 'send-panel', dataset: { kindPanel: 'poll' } },
    h('legend', { class: 'sr-only' }, 'Poll'),
    h('div', { class: 'send-grid' },
      h('label', { for: 'poll-question' }, 'Question'),
      h('input', { id: 'poll-question', name: 'question', maxlength: '255', placeholder: 'e.g. Which day suits you?', autocomplete: 'off' }),
      h('span', { class: 'grid-label' }, 'Options'),
      h('div', { class: 'stack' },
        list,
        h('div', { class: 'row' }, add,
          h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'multiple', id: 'poll-multiple' }), 'Multiple answers')))));
}

function addPollOption(list, add) {
  const item = h('li', { class: 'row' },
    h('input', { name: 'option', class: 'grow', maxlength: '100', autocomplete: 'off' }),
    h('button', { type: 'button', class: 'btn btn-ghost btn-small', onclick: () => {
      item.remove();
      numberPollOptions(list, add);
    } }, '×'));
  list.append(item);
  numberPollOptions(list, add);
}

// WhatsApp's limits: 2 to 12 options.
function numberPollOptions(list, add) {
  const items = [...list.children];
  items.forEach((li, i) => {
    const input = li.querySelector('input');
    input.placeholder = `Option ${i + 1}`;
    input.setAttribute('aria-label', `Option ${i + 1}`);
    const remove = li.querySelector('button');
    remove.setAttribute('aria-label', `Remove option ${i + 1}`);
    remove.hidden = items.length <= 2;
  });
  add.disabled = items.length >= POLL_MAX_OPTIONS;
}

// Each sends what its fields hold, and empties them once the gateway took it (what was
// typed stays when it refused, to be corrected).
const SENDERS = { text: sendTextOrFile, location: sendLocation, poll: sendPoll };

async function sendTextOrFile(id, to, f) {
  const text = f.elements.text.value;
  const file = f.elements.file.files[0];
  if (!file && !text.trim()) throw new Error('Write a message or choose a file.');
  const r = file ? await state.api.sendFile(id, to, file, text) : await state.api.sendText(id, to, text);
  f.elements.text.value = '';
  f.elements.file.value = '';
  $('#file-name').textContent = '';
  return r;
}

async function sendLocation(id, to, f) {
  const el = f.elements;
  const location = {
    latitude: degrees(el['location-latitude'].value, 'latitude', '52.5163'),
    longitude: degrees(el['location-longitude'].value, 'longitude', '13.3777'),
  };
  const name = el['location-name'].value.trim();
  const address = el['location-address'].value.trim();
  if (name) location.name = name;
  if (address) location.address = address;
  const r = await state.api.sendLocation(id, to, location);
  for (const n of ['latitude', 'longitude', 'name', 'address']) el[`location-${n}`].value = '';
  return r;
}

// A number of degrees as typed (a decimal comma too); the gateway checks the range.
function degrees(typed, what, example) {
  const s = typed.trim().replace(',', '.');
  const n = Number(s);
  if (!s || !Number.isFinite(n)) throw new Error(`Enter the ${what} in degrees, e.g. ${example}.`);
  return n;
}

async function sendPoll(id, to, f) {
  const question = f.elements.question.value.trim();
  const inputs = [...f.querySelectorAll('#poll-options input')];
  const options = inputs.map((i) => i.value.trim()).filter(Boolean);
  if (!question) throw new Error('Write the question of the poll.');
  if (options.length < 2) throw new Error('A poll needs at least 2 options.');
  const r = await state.api.sendPoll(id, to, { question, options, multiple: f.elements.multiple.checked });
  f.elements.question.value = '';
  f.elements.multiple.checked = false;
  const list = $('#poll-options');
  while (list.children.length > 2) list.lastElementChild.remove();
  for (const i of list.querySelectorAll('input')) i.value = '';
  numberPollOptions(list, $('#poll-add'));
  return r;
}

function historyCard(id) {
  return h('div', { class: 'card' },
    h('div', { class: 'row' }, h('h3', {}, 'History'), h('span', { class: 'spacer' }),
      h('button', { class: 'btn btn-ghost', type: 'button', onclick: (e) => act(e.currentTarget, null, () => loadMessages(id, { reset: true })) }, 'Refresh')),
    h('ol', { id: 'message-list', class: 'message-list', 'aria-live': 'polite' }),
    h('p', { id: 'message-empty', class: 'muted empty', hidden: true }, 'No messages yet.'),
    h('button', { id: 'message-more', class: 'btn btn-ghost', type: 'button', hidden: true, onclick: (e) => act(e.currentTarget, null, () => loadMessages(id)) }, 'Older messages'));
}

async function loadMessages(id, { reset } = {}) {
  let m = state.messages.get(id);
  if (!m || reset) {
    // Live events that arrive while the first page loads wait in `early`, so none is lost
    // between the request and its answer.
    m = { items: [], nextCursor: null, loaded: false, early: [] };
    state.messages.set(id, m);
  }
  const r = await state.api.messages(id, reset ? undefined : m.nextCursor);
  const items = Array.isArray(r) ? r : (r?.messages ?? []);
  for (const msg of items) upsert(m, msg, false);
  m.nextCursor = r?.nextCursor ?? null;
  if (!m.loaded) {
    m.loaded = true;
    for (const e of m.early.splice(0)) take(m, e.msg, e);
    sortByTime(m);
  }
  if (state.selected === id) renderMessages();
}

function indexOf(m, id, chatId) {
  return m.items.findIndex((x) => x.id === id && (!chatId || !x.chatId || x.chatId === chatId));
}

function upsert(m, msg, live) {
  // Actions show on their targets (see applyAction), not in the list.
  if (UNSHOWN.has(msg.type)) return;
  const i = indexOf(m, msg.id, msg.chatId);
  if (i >= 0) m.items[i] = { ...m.items[i], ...msg, media: msg.media ?? m.items[i].media };
  else if (live) m.items.unshift(msg);
  else m.items.push(msg);
}

function sortByTime(m) {
  m.items.sort((a, b) => (toDate(b.timestamp)?.getTime() ?? 0) - (toDate(a.timestamp)?.getTime() ?? 0));
}

// A live message: from the feed, or the answer to a send. `apply`: it is an action to apply
// to its target; `onlyNew`: it is kept only if the feed did not bring it first.
function mergeMessage(sessionId, msg, { apply = false, onlyNew = false } = {}) {
  mergeGroupMessage(sessionId, msg, { apply, onlyNew });
  const m = state.messages.get(sessionId);
  if (!m || !msg?.id) return;
  if (!m.loaded) {
    m.early.push({ msg, apply, onlyNew });
    return;
  }
  take(m, msg, { apply, onlyNew });
  sortByTime(m);
  if (state.selected === sessionId && state.tab === 'messages') renderMessages();
}

function take(m, msg, { apply, onlyNew }) {
  if (apply && ACTIONS.has(msg.type)) applyAction(m, msg);
  if (!onlyNew || indexOf(m, msg.id, msg.chatId) < 0) upsert(m, msg, true);
}

// What a reaction, an edit, a deletion or a vote does to the message it is about, as the
// gateway does it to the history: anyone in the chat reacts and votes (one reaction and one
// vote per sender, the latest); only a message's sender edits or deletes it.
const APPLY = {
  reaction: (t, a) => ({ ...t, reactions: withReaction(t.reactions, a) }),
  poll_vote: (t, a) => (t.poll && Array.isArray(a.vote?.options) ? { ...t, poll: withVote(t.poll, a) } : t),
  edited: (t, a) => (bySender(t, a) && !t.revoked
    ? { ...t, [t.caption != null ? 'caption' : 'text']: a.text ?? '', editedAt: a.timestamp } : t),
  revoked: (t, a) => (bySender(t, a)
    ? { ...t, revoked: true, text: null, caption: null, media: null, location: null, contacts: null } : t),
};

function applyAction(m, msg) {
  const targetId = msg.reaction?.messageId ?? msg.vote?.pollId ?? msg.targetId;
  const i = targetId ? indexOf(m, targetId, msg.chatId) : -1;
  if (i >= 0) m.items[i] = APPLY[msg.type](m.items[i], msg);
}

function bySender(target, action) {
  if (target.fromMe !== action.fromMe) return false;
  if (action.fromMe || target.from === action.from) return true;
  return ['fromPn', 'fromLid'].some((k) => target[k] && target[k] === action[k]);
}

function withReaction(reactions = [], a) {
  const others = reactions.filter((r) => r.from !== a.from);
  return a.reaction?.emoji ? [...others, { from: a.from, emoji: a.reaction.emoji, timestamp: a.timestamp }] : others;
}

function withVote(poll, a) {
  const votes = (poll.votes ?? []).filter((v) => v.voter !== a.from);
  if (a.vote.options.length) votes.push({ voter: a.from, options: a.vote.options, timestamp: a.timestamp });
  const tally = a.vote.tally ?? poll.options.map((option) => ({ option, votes: votes.filter((v) => v.options.includes(option)).length }));
  return { ...poll, votes, tally };
}

function renderMessages() {
  const list = $('#message-list');
  const id = state.selected;
  const m = state.messages.get(id);
  if (!list || !m) return;
  const shown = m.items.filter((msg) => !UNSHOWN.has(msg.type));
  const me = sessionPhone(state.sessions.get(id) ?? {});
  put(list, ...shown.map((msg) => messageEl(id, msg, me)));
  $('#message-empty').hidden = shown.length > 0;
  $('#message-more').hidden = !m.nextCursor;
}

const STATUS_MARK = { pending: '🕓', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '⚠', played: '✓✓' };

// Whether `jid` is this session's own account (`me`: its phone number).
const isMe = (jid, me) => !!me && phoneOf(jid) === String(me);

// `inChat`: it is shown in its chat's own history (a group's), which need not name the chat.
function messageEl(sessionId, msg, me, { inChat = false } = {}) {
  const who = messageWho(sessionId, msg, inChat);
  return h('li', {
    class: `message ${msg.fromMe ? 'out' : 'in'}${msg.revoked ? ' revoked' : ''}`,
    dataset: { messageId: msg.id, status: msg.status ?? '', type: msg.type ?? '' },
  },
  h('div', { class: 'message-meta' },
    h('span', { class: 'message-who' }, msg.fromMe ? '↗ ' : '↙ ', who),
    h('span', { class: 'muted' }, timeEl(msg.timestamp, clock(msg.timestamp))),
    msg.type && msg.type !== 'text' ? h('span', { class: 'badge' }, msg.type) : null,
    msg.editedAt && !msg.revoked ? h('span', { class: 'badge mark-edited', title: `Edited ${clock(msg.editedAt)}` }, 'edited') : null,
    msg.revoked ? h('span', { class: 'badge mark-deleted' }, 'deleted') : null,
    canReact(msg) ? reactControl(sessionId, msg, me) : null),
  msg.revoked ? h('p', { class: 'message-deleted' }, 'This message was deleted.') : messageContent(msg),
  messageFoot(msg, me));
}

// Who wrote it, or to whom we did. In a group the sender is the participant (its phone
// number where WhatsApp gave it), and the group is named by its subject.
function messageWho(sessionId, msg, inChat) {
  if (isGroup(msg.chatId)) {
    const group = groupLabel(sessionId, msg.chatId);
    if (msg.fromMe) return inChat ? 'You' : `To ${group}`;
    const sender = fmtPhone(phoneOf(msg.fromPn ?? msg.participant ?? msg.from));
    return `${msg.pushName ? `${msg.pushName} · ` : ''}${sender}${inChat ? '' : ` in ${group}`}`;
  }
  const peer = msg.fromMe ? (msg.to ?? msg.chatId) : (msg.from ?? msg.chatId);
  return msg.fromMe ? `To ${fmtPhone(phoneOf(peer))}` : `${msg.pushName ? `${msg.pushName} · ` : ''}${fmtPhone(phoneOf(peer))}`;
}

// Under the message: its reactions, and the delivery status of ours.
function messageFoot(msg, me) {
  const reactions = reactionsEl(msg.reactions, me);
  const delivery = msg.fromMe && msg.status
    ? h('span', { class: `delivery delivery-${msg.status}`, title: msg.status }, `${STATUS_MARK[msg.status] ?? ''} ${msg.status}`) : null;
  if (!reactions && !delivery) return null;
  return h('div', { class: 'message-foot' }, reactions, h('span', { class: 'spacer' }), delivery);
}

function messageContent(msg) {
  const text = msg.text ?? msg.caption ?? '';
  return [
    msg.media ? mediaEl(msg.media) : null,
    msg.location ? locationEl(msg.location) : null,
    msg.contacts?.length ? contactsEl(msg.contacts) : null,
    // A poll's text, where there is one, is its question.
    msg.poll ? pollEl(msg.poll) : null,
    text && !msg.poll ? h('p', { class: 'message-text' }, text) : null,
  ];
}

function locationEl(loc) {
  const lat = Number(loc.latitude);
  const lon = Number(loc.longitude);
  const map = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=16/${lat}/${lon}`;
  return h('div', { class: 'location' },
    h('p', { class: 'location-name' }, loc.name || 'Location'),
    loc.address ? h('p', { class: 'muted small' }, loc.address) : null,
    h('a', { href: map, target: '_blank', rel: 'noopener noreferrer', class: 'small location-coords' }, `${lat.toFixed(5)}, ${lon.toFixed(5)}`));
}

function contactsEl(cards) {
  return h('ul', { class: 'contacts' }, cards.map((c) => {
    const phone = vcardPhone(c.vcard);
    return h('li', { class: 'contact' }, h('strong', {}, c.name || 'Contact'),
      phone ? h('span', { class: 'muted small' }, ` ${phone}`) : null);
  }));
}

// The number a vCard gives: its WhatsApp id where it has one, else its first TEL.
function vcardPhone(vcard) {
  const text = String(vcard ?? '');
  const waid = /waid=(\d+)/.exec(text);
  if (waid) return fmtPhone(waid[1]);
  return /^TEL[^:\r\n]*:(.+)$/m.exec(text)?.[1].trim() ?? '';
}

function pollEl(poll) {
  const counts = new Map((poll.tally ?? []).map((t) => [t.option, t.votes]));
  const votes = poll.votes ?? [];
  return h('div', { class: 'poll' },
    h('p', { class: 'poll-question' }, poll.question),
    h('ul', { class: 'poll-options' }, poll.options.map((option) => pollOptionEl(option, counts.get(option) ?? 0, votes))),
    h('p', { class: 'muted small' }, `${poll.multiple ? 'Multiple answers' : 'One answer'} · ${votes.length} ${votes.length === 1 ? 'voter' : 'voters'}`));
}

function pollOptionEl(option, count, votes) {
  const bar = h('span', { class: 'poll-bar' });
  // Set through the CSSOM: the page's content security policy refuses style attributes.
  bar.style.width = `${votes.length ? Math.round((count / votes.length) * 100) : 0}%`;
  const voters = votes.filter((v) => v.options.includes(option)).map((v) => fmtPhone(phoneOf(v.voter)));
  return h('li', { class: 'poll-option', dataset: { option, votes: String(count) }, title: voters.join(', ') || null },
    h('span', { class: 'poll-label' }, option),
    h('span', { class: 'poll-count', 'aria-label': `${count} ${count === 1 ? 'vote' : 'votes'}` }, String(count)),
    h('span', { class: 'poll-track', 'aria-hidden': 'true' }, bar));
}

// The reactions under a message: one badge per emoji, with how many chose it.
function reactionsEl(reactions, me) {
  if (!reactions?.length) return null;
  const by = new Map();
  for (const r of reactions) by.set(r.emoji, [...(by.get(r.emoji) ?? []), r.from]);
  return h('span', { class: 'reactions', role: 'list', 'aria-label': 'Reactions' }, [...by].map(([emoji, from]) => {
    const mine = from.some((f) => isMe(f, me));
    const names = from.map((f) => (isMe(f, me) ? 'you' : fmtPhone(phoneOf(f))));
    return h('span', {
      class: `reaction${mine ? ' mine' : ''}`, role: 'listitem', dataset: { emoji, count: String(from.length) },
      title: names.join(', '), 'aria-label': `${emoji} from ${names.join(', ')}`,
    }, emoji, from.length > 1 ? h('span', { class: 'reaction-count' }, String(from.length)) : null);
  }));
}

// Reacting takes the send scope, and a message that reached WhatsApp.
function canReact(msg) {
  return can('send') && !msg.revoked && !(msg.fromMe && ['queued', 'pending', 'failed'].includes(msg.status));
}

// A small menu of emoji; with ours on the message, a way to take it back (an empty emoji).
// Which menu is open is kept in the state: the list is redrawn by every live event.
function reactControl(sessionId, msg, me) {
  const mine = msg.reactions?.find((r) => isMe(r.from, me));
  const react = (emoji) => (e) => {
    const btn = e.currentTarget;
    state.reactOpen = null;
    btn.closest('details').open = false;
    act(btn, null, async () => {
      const r = await state.api.sendReaction(sessionId, msg.id, emoji);
      mergeMessage(sessionId, r, { apply: true });
    });
  };
  return h('details', { class: 'react', open: state.reactOpen === msg.id, ontoggle: (e) => {
    if (e.currentTarget.open) state.reactOpen = msg.id;
    else if (state.reactOpen === msg.id) state.reactOpen = null;
  } },
  h('summary', { class: 'react-toggle', title: 'React', 'aria-label': 'React to this message' }, '☺'),
  h('div', { class: 'react-menu', role: 'group', 'aria-label': 'Choose a reaction' },
    QUICK_REACTIONS.map((emoji) => h('button', {
      type: 'button', class: 'react-emoji', dataset: { emoji }, 'aria-label': `React with ${emoji}`,
      'aria-pressed': String(mine?.emoji === emoji), onclick: react(emoji),
    }, emoji)),
    mine ? h('button', { type: 'button', class: 'btn btn-ghost btn-small react-remove', onclick: react('') }, 'Remove mine') : null));
}

function mediaEl(media) {
  if (media.error) return h('p', { class: 'session-error small' }, `Media unavailable: ${media.error}`);
  const url = media.fileUrl;
  const type = media.mimetype ?? '';
  const name = media.originalName ?? media.fileName ?? 'file';
  if (!url) return h('p', { class: 'muted small' }, `📎 ${name}`);
  let preview;
  if (type.startsWith('image/')) preview = h('img', { src: url, alt: name, class: 'media-img', loading: 'lazy' });
  else if (type.startsWith('video/')) preview = h('video', { src: url, controls: true, preload: 'metadata', class: 'media-img' });
  else if (type.startsWith('audio/')) preview = h('audio', { src: url, controls: true, preload: 'none' });
  const size = media.fileSize ? ` · ${(media.fileSize / 1024).toFixed(media.fileSize < 10240 ? 1 : 0)} KB` : '';
  return h('div', { class: 'media' }, preview,
    h('a', { href: url, target: '_blank', rel: 'noopener noreferrer', class: 'small' }, `📎 ${name}`), h('span', { class: 'muted small' }, size));
}

// ---------- groups ----------
//
// The session's groups as WhatsApp has them: the list, one group's participants and
// settings, a new group, adding and removing people, and the group's chat (the send form of
// the Messages tab, with the group as the chat). Every call asks WhatsApp through the
// session, so the tab needs it connected. Listing and reading take the read scope; creating,
// changing and writing take send.

const isGroup = (jid) => String(jid ?? '').endsWith('@g.us');
// A group id as typed or linked: the bare digits are the same group.
const groupJid = (raw) => (String(raw).includes('@') ? String(raw) : `${raw}@g.us`);
const groupHref = (id, gid) => `#/sessions/${encodeURIComponent(id)}/groups${gid ? `/${encodeURIComponent(gid)}` : ''}`;

function groupOf(id, gid) {
  return state.groups.get(id)?.items.find((g) => g.id === gid) ?? null;
}

function groupLabel(id, gid) {
  return groupOf(id, gid)?.subject ?? `group ${phoneOf(gid)}`;
}

// Keeps a group's latest answer in the session's list (a new one goes in).
function keepGroup(id, g) {
  if (!state.groups.has(id)) state.groups.set(id, { items: [], loaded: false });
  const list = state.groups.get(id);
  const i = list.items.findIndex((x) => x.id === g.id);
  if (i >= 0) list.items[i] = g;
  else list.items.push(g);
}

// Whether `p` (a participant) is this session's own account.
function isMyParticipant(p, me) {
  return !!me && (p.phone === String(me) || phoneOf(p.jid) === String(me));
}

// What one participant's add (remove, promote, demote) came to, from WhatsApp's status.
const OUTCOME_OK = { add: 'added', remove: 'removed', promote: 'made an admin', demote: 'no longer an admin' };
const OUTCOME_ERRORS = { 403: 'privacy', 404: 'not_found', 406: 'not_allowed', 409: 'already_participant' };

function outcomeText(r, action) {
  if (r.ok) return OUTCOME_OK[action] ?? 'done';
  switch (r.error ?? OUTCOME_ERRORS[r.status]) {
    case 'privacy': return 'refuses to be added (their privacy settings); send them the invite link';
    case 'not_found': return action === 'add' ? 'not on WhatsApp' : 'not in the group';
    case 'not_allowed': return 'not allowed: the group\'s creator cannot be removed or demoted';
    case 'already_participant': return 'already in the group';
    default: return `refused by WhatsApp (${r.status})`;
  }
}

function outcomesEl(results, action) {
  return h('ul', { class: 'outcomes', 'aria-label': 'How it went for each participant' }, results.map((r) => h('li', {
    class: `outcome ${r.ok ? 'ok' : 'refused'}`, dataset: { phone: r.phone ?? '', status: String(r.status) },
  },
  h('span', { class: 'outcome-mark', 'aria-hidden': 'true' }, r.ok ? '✓' : '✕'),
  h('span', { class: 'outcome-text' }, `${r.phone ? fmtPhone(r.phone) : r.participant}: ${outcomeText(r, action)}`))));
}

// Phone numbers as typed: one a line, or separated by commas; "+", spaces, dashes and
// brackets inside a number are dropped.
function typedPhones(text) {
  return String(text).split(/[,;\n]+/).map((p) => p.replace(/[\s()+-]/g, '')).filter(Boolean);
}

function renderGroupsTab(panel, id) {
  const s = state.sessions.get(id);
  const connected = s?.status === 'connected';
  panel.dataset.connected = String(connected);
  if (!connected) {
    put(panel, h('div', { class: 'card', id: 'groups-offline' },
      h('h3', {}, 'Groups'),
      h('p', { class: 'muted' }, 'The groups are read from WhatsApp: they show here once this session is connected.')));
    return;
  }
  put(panel, h('div', { class: 'groups-grid' },
    h('div', { class: 'groups-side' }, groupListCard(id), can('send') ? newGroupCard(id) : null),
    h('div', { id: 'group-pane', class: 'group-pane' })));
  renderGroupList();
  renderGroupPane(id);
  loadGroups(id).catch((e) => groupListError(e));
}

// A status change of the open session: the tab follows it (connected or not).
function groupsTabFollowStatus(id) {
  const panel = $('#tabpanel');
  if (state.tab !== 'groups' || !panel) return;
  const connected = state.sessions.get(id)?.status === 'connected';
  if (panel.dataset.connected !== String(connected)) renderGroupsTab(panel, id);
}

function groupListCard(id) {
  return h('div', { class: 'card' },
    h('div', { class: 'row' }, h('h3', {}, 'Groups ', h('span', { id: 'group-count', class: 'count' })), h('span', { class: 'spacer' }),
      h('button', { class: 'btn btn-ghost', type: 'button', id: 'groups-refresh', onclick: (e) => act(e.currentTarget, $('#group-list-error'), () => loadGroups(id)) }, 'Refresh')),
    h('p', { id: 'group-list-error', class: 'form-error', role: 'alert', hidden: true }),
    h('ul', { id: 'group-list', class: 'group-list' }),
    h('p', { id: 'group-empty', class: 'muted empty', hidden: true }, 'This account is in no groups yet.'));
}

function groupListError(err) {
  if (err instanceof ApiError && err.status === 401) return signOut('The API key was refused. Sign in again.');
  const el = $('#group-list-error');
  if (!el) return toast(describe(err));
  el.textContent = describe(err);
  el.hidden = false;
}

async function loadGroups(id) {
  const r = await state.api.groups(id);
  const items = Array.isArray(r) ? r : (r?.groups ?? []);
  state.groups.set(id, { items, loaded: true });
  if (state.selected !== id || state.tab !== 'groups') return;
  const err = $('#group-list-error');
  if (err) err.hidden = true;
  renderGroupList();
  // The list has every group in full: the open one is current too.
  if (state.group && groupOf(id, state.group)) drawGroupInfo(id);
}

function renderGroupList() {
  const list = $('#group-list');
  const id = state.selected;
  const cached = state.groups.get(id);
  if (!list) return;
  const items = [...(cached?.items ?? [])].sort((a, b) => a.subject.localeCompare(b.subject));
  $('#group-count').textContent = cached?.loaded ? `(${items.length})` : '';
  $('#group-empty').hidden = !cached?.loaded || items.length > 0;
  put(list, ...(cached?.loaded || items.length ? items : []).map((g) => h('li', {},
    h('a', {
      class: `group-item${state.group === g.id ? ' selected' : ''}`, href: groupHref(id, g.id),
      'aria-current': state.group === g.id ? 'page' : null, dataset: { groupId: g.id },
    },
    h('strong', { class: 'group-subject' }, g.subject),
    h('span', { class: 'group-size muted small' }, `${g.size} ${g.size === 1 ? 'participant' : 'participants'}`)))));
  if (!cached?.loaded && !items.length) put(list, h('li', { class: 'muted small' }, 'Loading the groups…'));
}

function newGroupCard(id) {
  const error = h('p', { id: 'group-create-error', class: 'form-error', role: 'alert', hidden: true });
  const done = state.groupCreated?.sessionId === id ? state.groupCreated : null;
  const results = h('div', { id: 'group-create-results', 'aria-live': 'polite' },
    done ? [h('p', { class: 'small' }, `Created “${done.subject}”.`), done.results.length ? outcomesEl(done.results, 'add') : null] : null);
  return h('form', { id: 'group-create', class: 'card stack', novalidate: true, onsubmit: (e) => {
    e.preventDefault();
    const f = e.currentTarget.elements;
    act(e.submitter, error, async () => {
      const subject = f.subject.value.trim();
      if (!subject) throw new Error('Give the group a subject.');
      const r = await state.api.createGroup(id, subject, typedPhones(f.participants.value), f.description.value.trim());
      keepGroup(id, r.group);
      state.groupCreated = { sessionId: id, subject: r.group.subject, results: r.results ?? [] };
      f.subject.value = '';
      f.participants.value = '';
      f.description.value = '';
      toast(`Group ${r.group.subject} created`, 'info');
      // Opens it: the form is drawn again with the outcome under it.
      location.hash = groupHref(id, r.group.id);
    });
  } },
  h('h3', {}, 'New group'),
  h('label', { for: 'group-subject' }, 'Subject'),
  h('input', { id: 'group-subject', name: 'subject', maxlength: '100', autocomplete: 'off', placeholder: 'e.g. Book club' }),
  h('label', { for: 'group-members' }, 'Participants'),
  h('textarea', { id: 'group-members', name: 'participants', rows: 3, 'aria-describedby': 'group-members-hint', placeholder: '15551234567\n15557654321' }),
  h('p', { id: 'group-members-hint', class: 'muted small' }, 'Phone numbers with their country code, one a line or separated by commas. This session\'s account creates the group and is its admin.'),
  h('label', { for: 'group-description' }, 'Description (optional)'),
  h('textarea', { id: 'group-description', name: 'description', rows: 2, maxlength: '2048' }),
  h('div', { class: 'row end' }, h('button', { class: 'btn btn-primary', type: 'submit' }, 'Create group')),
  error, results);
}

// The open group: its info and settings, its participants, the send form and its chat.
function renderGroupPane(id) {
  const pane = $('#group-pane');
  if (!pane) return;
  const gid = state.group;
  if (!gid) {
    put(pane, h('div', { class: 'card detail-empty' }, h('p', { class: 'muted' }, 'Open a group to see its participants, its settings and its chat.')));
    return;
  }
  const membersError = h('p', { id: 'group-members-error', class: 'form-error', role: 'alert', hidden: true });
  const addForm = can('send') ? h('form', { id: 'group-add', class: 'row', novalidate: true, onsubmit: (e) => {
    e.preventDefault();
    const input = e.currentTarget.elements.phone;
    act(e.submitter, membersError, async () => {
      const phones = typedPhones(input.value);
      if (!phones.length) throw new Error('Enter the phone number to add, with its country code.');
      await changeParticipants(id, gid, 'add', phones);
      input.value = '';
    });
  } },
  h('label', { for: 'group-add-phone', class: 'sr-only' }, 'Phone number to add'),
  h('input', { id: 'group-add-phone', name: 'phone', inputmode: 'tel', placeholder: 'phone number to add', autocomplete: 'off', class: 'grow' }),
  h('button', { class: 'btn', type: 'submit' }, 'Add participant')) : null;
  put(pane,
    h('div', { class: 'card', id: 'group-info', dataset: { groupId: gid } },
      h('div', { id: 'group-info-body' }, h('p', { class: 'muted' }, 'Loading the group…')),
      h('p', { id: 'group-info-error', class: 'form-error', role: 'alert', hidden: true })),
    h('div', { class: 'card', id: 'group-members-card' },
      h('h3', {}, 'Participants ', h('span', { id: 'group-member-count', class: 'count' })),
      h('ul', { id: 'group-participants', class: 'participants' }),
      addForm, membersError,
      h('div', { id: 'group-member-results', 'aria-live': 'polite' })),
    can('send') ? sendForm(id, { id: gid, label: groupLabel(id, gid) }) : null,
    groupChatCard(id, gid));
  drawGroupInfo(id);
  loadGroup(id, gid);
  const chat = state.groupChat;
  if (chat?.sessionId === id && chat.groupId === gid && chat.loaded) renderGroupChat();
  else loadGroupChat(id, gid, { reset: true }).catch((e) => toast(describe(e)));
}

async function loadGroup(id, gid) {
  try {
    keepGroup(id, await state.api.group(id, gid));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return signOut('The API key was refused. Sign in again.');
    const el = $('#group-info-error');
    if (state.group !== gid || !el) return;
    el.textContent = describe(err);
    el.hidden = false;
    if (!groupOf(id, gid)) put($('#group-info-body'), h('h3', {}, gid));
    return;
  }
  if (state.selected === id && state.group === gid) {
    const el = $('#group-info-error');
    if (el) el.hidden = true;
    drawGroupInfo(id);
    renderGroupList();
  }
}

const EPHEMERAL = { 0: 'off', 86400: '24 hours', 604800: '7 days', 7776000: '90 days' };

// Draws what the group's latest answer says; the forms around it keep what was typed.
function drawGroupInfo(id) {
  const gid = state.group;
  const g = gid && groupOf(id, gid);
  const body = $('#group-info-body');
  if (!body || !g) return;
  const me = sessionPhone(state.sessions.get(id) ?? {});
  const mine = g.participants.find((p) => isMyParticipant(p, me));
  // Where WhatsApp hides who we are (a LID group), the API says whether we may.
  const admin = mine ? mine.admin || mine.superAdmin : true;
  const st = g.settings ?? {};
  const setting = (key, label, value) => [h('dt', {}, label), h('dd', { dataset: { setting: key } }, value)];
  const label = $('#send-to-chat');
  if (label) label.textContent = g.subject;
  put(body,
    h('div', { class: 'row' },
      h('h3', { id: 'group-title' }, g.subject),
      g.community ? h('span', { class: 'badge' }, 'community') : null,
      g.announcementGroup ? h('span', { class: 'badge' }, 'announcements') : null,
      h('span', { class: 'spacer' }),
      h('code', { class: 'muted small', title: 'The group\'s id: send to it like to a number' }, g.id)),
    g.description ? h('p', { class: 'group-description' }, g.description) : null,
    h('dl', { id: 'group-settings', class: 'settings' },
      setting('announce', 'Who sends messages', st.announce ? 'only admins' : 'everyone'),
      setting('locked', 'Who edits the info', st.locked ? 'only admins' : 'everyone'),
      setting('membersCanAdd', 'Who adds people', st.membersCanAdd ? 'everyone' : 'only admins'),
      setting('membershipApproval', 'Joining by link', st.membershipApproval ? 'an admin approves each request' : 'anyone with the link'),
      setting('ephemeral', 'Disappearing messages', EPHEMERAL[st.ephemeral] ?? `after ${st.ephemeral} s`),
      setting('addressing', 'Participants are named by', g.addressing === 'lid' ? 'LID (their numbers are hidden)' : 'phone number'),
      g.owner ? setting('owner', 'Created by', [fmtPhone(phoneOf(g.owner)), g.createdAt ? ' ' : '', g.createdAt ? timeEl(g.createdAt) : '']) : null),
    admin && can('send') ? groupSettingsForm(id, g) : null,
    h('div', { class: 'row actions' },
      admin ? h('button', { class: 'btn', type: 'button', id: 'group-invite', onclick: (e) => act(e.currentTarget, $('#group-info-error'), async () => {
        const r = await state.api.groupInviteLink(id, g.id);
        const out = $('#group-invite-link');
        put(out, h('code', { class: 'secret-value' }, r.link),
          h('button', { class: 'btn btn-small', type: 'button', onclick: () => copyText(r.link) }, 'Copy'));
        out.hidden = false;
      }) }, 'Invite link') : null,
      can('send') ? h('button', { class: 'btn btn-danger', type: 'button', id: 'group-leave', onclick: async (e) => {
        const btn = e.currentTarget;
        if (!await confirmDialog(`Leave ${g.subject}?`, 'This account leaves the group; joining again needs an invite from an admin.', 'Leave')) return;
        await act(btn, $('#group-info-error'), async () => {
          await state.api.leaveGroup(id, g.id);
          const list = state.groups.get(id);
          if (list) list.items = list.items.filter((x) => x.id !== g.id);
          toast(`Left ${g.subject}`, 'info');
          location.hash = groupHref(id);
        });
      } }, 'Leave group') : null),
    h('p', { id: 'group-invite-link', class: 'row', hidden: true }));

  $('#group-member-count').textContent = `(${g.participants.length})`;
  const people = [...g.participants].sort((a, b) => Number(b.superAdmin) - Number(a.superAdmin) || Number(b.admin) - Number(a.admin)
    || String(a.phone ?? a.lid).localeCompare(String(b.phone ?? b.lid)));
  put($('#group-participants'), ...people.map((p) => participantEl(id, g, p, isMyParticipant(p, me), admin)));
}

function participantEl(id, g, p, isMine, admin) {
  const who = p.phone ? fmtPhone(p.phone) : (p.lid ?? p.jid);
  const target = p.phone ?? p.jid ?? p.lid;
  const change = (action, question) => async (e) => {
    const btn = e.currentTarget;
    if (question && !await confirmDialog(question[0], question[1], question[2])) return;
    await act(btn, $('#group-members-error'), () => changeParticipants(id, g.id, action, [target]));
  };
  return h('li', { class: 'participant', dataset: { phone: p.phone ?? '', admin: String(!!(p.admin || p.superAdmin)) } },
    h('span', { class: 'participant-phone' }, who),
    isMine ? h('span', { class: 'badge status-connected' }, 'you') : null,
    p.superAdmin ? h('span', { class: 'badge badge-admin', title: 'Created the group; an admin who cannot be removed' }, 'owner')
      : p.admin ? h('span', { class: 'badge badge-admin' }, 'admin') : null,
    h('span', { class: 'spacer' }),
    admin && can('send') && !isMine && !p.superAdmin ? [
      h('button', { class: 'btn btn-ghost btn-small', type: 'button', 'aria-label': p.admin ? `Dismiss ${who} as admin` : `Make ${who} an admin`,
        onclick: change(p.admin ? 'demote' : 'promote') }, p.admin ? 'Dismiss as admin' : 'Make admin'),
      h('button', { class: 'btn btn-danger btn-small', type: 'button', 'aria-label': `Remove ${who}`,
        onclick: change('remove', [`Remove ${who}?`, `They leave ${g.subject} and no longer get its messages.`, 'Remove']) }, 'Remove'),
    ] : null);
}

// Adds (removes, ...) people, shows how it went for each, and reads the group again.
async function changeParticipants(id, gid, action, phones) {
  const r = await state.api.groupParticipants(id, gid, action, phones);
  const out = $('#group-member-results');
  if (out && state.group === gid) put(out, outcomesEl(r.results ?? [], action));
  await loadGroup(id, gid);
}

// Who may write and who may edit the info: the admins' to change.
function groupSettingsForm(id, g) {
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const box = (name, label, checked) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', name, id: `group-${name}`, checked }), label);
  return h('form', { id: 'group-settings-form', class: 'row', novalidate: true, onsubmit: (e) => {
    e.preventDefault();
    const f = e.currentTarget.elements;
    act(e.submitter, error, async () => {
      const edit = {};
      if (f.announce.checked !== g.settings.announce) edit.announce = f.announce.checked;
      if (f.locked.checked !== g.settings.locked) edit.locked = f.locked.checked;
      if (!Object.keys(edit).length) throw new Error('Nothing changed.');
      keepGroup(id, await state.api.updateGroup(id, g.id, edit));
      toast('Group settings saved', 'info');
      drawGroupInfo(id);
    });
  } },
  box('announce', 'Only admins send messages', g.settings.announce),
  box('locked', 'Only admins edit the info', g.settings.locked),
  h('button', { class: 'btn btn-small', type: 'submit' }, 'Save settings'),
  error);
}

function groupChatCard(id, gid) {
  return h('div', { class: 'card', id: 'group-chat' },
    h('div', { class: 'row' }, h('h3', {}, 'Chat'), h('span', { class: 'spacer' }),
      h('button', { class: 'btn btn-ghost', type: 'button', onclick: (e) => act(e.currentTarget, null, () => loadGroupChat(id, gid, { reset: true })) }, 'Refresh')),
    h('ol', { id: 'group-message-list', class: 'message-list', 'aria-live': 'polite' }),
    h('p', { id: 'group-message-empty', class: 'muted empty', hidden: true }, 'No messages in this group yet.'),
    h('button', { id: 'group-message-more', class: 'btn btn-ghost', type: 'button', hidden: true, onclick: (e) => act(e.currentTarget, null, () => loadGroupChat(id, gid)) }, 'Older messages'));
}

// The group's history, like the Messages tab's (live events wait in `early` meanwhile).
async function loadGroupChat(id, gid, { reset } = {}) {
  let c = state.groupChat;
  if (!c || reset || c.sessionId !== id || c.groupId !== gid) {
    c = { sessionId: id, groupId: gid, items: [], nextCursor: null, loaded: false, early: [] };
    state.groupChat = c;
  }
  const r = await state.api.chatMessages(id, gid, reset ? undefined : c.nextCursor);
  if (state.groupChat !== c) return;
  for (const msg of Array.isArray(r) ? r : (r?.messages ?? [])) upsert(c, msg, false);
  c.nextCursor = r?.nextCursor ?? null;
  if (!c.loaded) {
    c.loaded = true;
    for (const e of c.early.splice(0)) take(c, e.msg, e);
    sortByTime(c);
  }
  renderGroupChat();
}

function mergeGroupMessage(sessionId, msg, opts) {
  const c = state.groupChat;
  if (!c || c.sessionId !== sessionId || !msg?.id || msg.chatId !== c.groupId) return;
  if (!c.loaded) {
    c.early.push({ msg, ...opts });
    return;
  }
  take(c, msg, opts);
  sortByTime(c);
  renderGroupChat();
}

function renderGroupChat() {
  const list = $('#group-message-list');
  const c = state.groupChat;
  if (!list || !c || state.selected !== c.sessionId || state.group !== c.groupId) return;
  const shown = c.items.filter((msg) => !UNSHOWN.has(msg.type));
  const me = sessionPhone(state.sessions.get(c.sessionId) ?? {});
  put(list, ...shown.map((msg) => messageEl(c.sessionId, msg, me, { inChat: true })));
  $('#group-message-empty').hidden = shown.length > 0;
  $('#group-message-more').hidden = !c.nextCursor;
}

// group-joined, group-updated, group-participants: the list (and the open group) are read
// again, once for a burst of them. Elsewhere the tab reads them when it is opened.
function onGroupEvent(id, data) {
  if (state.selected !== id || state.tab !== 'groups') return;
  clearTimeout(state.groupReload);
  state.groupReload = setTimeout(() => {
    if (state.selected !== id || state.tab !== 'groups' || !$('#group-list')) return;
    loadGroups(id).catch((e) => groupListError(e));
    if (state.group && data.groupId === state.group) loadGroup(id, state.group);
  }, 300);
}

// ---------- webhook ----------

function renderWebhookTab(panel, id) {
  const formError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const secretBox = h('div', { id: 'secret-box', class: 'secret', hidden: true });
  const events = h('fieldset', { class: 'events' },
    h('legend', {}, 'Events'),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'event', value: 'all', onchange: syncAll }), h('strong', {}, 'all')),
    EVENT_KINDS.map((k) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'event', value: k }), k)));
  function syncAll() {
    const all = events.querySelector('input[value=all]').checked;
    for (const c of events.querySelectorAll('input[name=event]:not([value=all])')) c.disabled = all;
  }
  const form = h('form', { id: 'webhook-form', class: 'card stack', novalidate: true, onsubmit: (e) => {
    e.preventDefault();
    const f = e.currentTarget;
    act(e.submitter, formError, async () => {
      const url = f.elements.url.value.trim();
      if (!url) throw new Error('Enter the URL that will receive the events.');
      const chosen = [...f.querySelectorAll('input[name=event]:checked')].map((c) => c.value);
      const body = { url, events: chosen.includes('all') || !chosen.length ? ['all'] : chosen };
      const headers = parseHeaders(f.elements.headers.value);
      if (Object.keys(headers).length) body.headers = headers;
      const secret = f.elements.secret.value.trim();
      if (secret) body.secret = secret;
      const r = await state.api.setWebhook(id, body);
      const shown = r?.secret ?? r?.webhook?.secret;
      f.elements.secret.value = '';
      if (shown) {
        put(secretBox,
          h('p', {}, h('strong', {}, 'Signing secret — copy it now, it is not shown again:')),
          h('code', { class: 'secret-value', id: 'secret-value' }, shown),
          h('button', { type: 'button', class: 'btn btn-ghost', onclick: () => navigator.clipboard?.writeText(shown).then(() => toast('Copied', 'info'), () => toast('Copy failed: select the text instead')) }, 'Copy'));
        secretBox.hidden = false;
      }
      toast('Webhook saved', 'info');
      fillWebhook(f, r?.webhook ?? r);
      loadDeliveries(id);
    });
  } },
  h('h3', {}, 'Webhook'),
  h('label', { for: 'webhook-url' }, 'URL'),
  h('input', { id: 'webhook-url', name: 'url', type: 'url', placeholder: 'https://example.com/whatsapp-hook', autocomplete: 'url' }),
  events,
  h('label', { for: 'webhook-headers' }, 'Extra headers (one "Name: value" per line)'),
  h('textarea', { id: 'webhook-headers', name: 'headers', rows: 2, placeholder: 'Authorization: Bearer …', spellcheck: 'false' }),
  h('label', { for: 'webhook-secret' }, 'Signing secret (leave empty to keep it, or to have one generated)'),
  h('input', { id: 'webhook-secret', name: 'secret', type: 'password', placeholder: 'whsec_…', autocomplete: 'off' }),
  h('p', { id: 'webhook-secret-state', class: 'muted small' }),
  secretBox,
  formError,
  h('div', { class: 'row' },
    h('button', { class: 'btn btn-primary', type: 'submit' }, 'Save webhook'),
    h('button', { class: 'btn', type: 'button', id: 'webhook-test', onclick: (e) => act(e.currentTarget, formError, async () => {
      const r = await state.api.testWebhook(id);
      const how = r.status ? `HTTP ${r.status}` : 'no answer';
      const detail = r.error ? ` (${r.error})` : '';
      if (!r.ok) throw new Error(`Test event sent; the receiver answered ${how}${detail} after ${r.elapsedMs} ms.`);
      toast(`Test event delivered: the receiver answered ${how} in ${r.elapsedMs} ms`, 'info');
    }) }, 'Send test event'),
    h('span', { class: 'spacer' }),
    h('button', { class: 'btn btn-danger', type: 'button', onclick: async (e) => {
      const btn = e.currentTarget;
      if (!await confirmDialog('Remove the webhook?', `Session ${id} stops posting events to this URL.`, 'Remove')) return;
      act(btn, formError, async () => {
        await state.api.deleteWebhook(id);
        toast('Webhook removed', 'info');
        fillWebhook(form, null);
      });
    } }, 'Remove')));

  put(panel, form,
    h('div', { class: 'card' },
      h('div', { class: 'row' }, h('h3', {}, 'Recent deliveries'), h('span', { class: 'spacer' }),
        h('button', { class: 'btn btn-ghost', type: 'button', onclick: (e) => act(e.currentTarget, null, () => loadDeliveries(id)) }, 'Refresh')),
      h('div', { class: 'table-wrap' },
        h('table', { class: 'deliveries' },
          h('thead', {}, h('tr', {}, ['When', 'Event', 'Status', 'Attempts', 'Response', ''].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', { id: 'delivery-rows' }))),
      h('p', { id: 'delivery-empty', class: 'muted empty', hidden: true }, 'Nothing delivered yet.')));
  syncAll();
  // The form stays off until the saved webhook is in: filling it in would wipe what was
  // typed meanwhile.
  for (const el of form.elements) el.disabled = true;
  act(null, formError, async () => {
    let cfg = null;
    try {
      cfg = await state.api.webhook(id);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
    } finally {
      for (const el of form.elements) el.disabled = false;
      syncAll();
    }
    fillWebhook(form, cfg);
  });
  loadDeliveries(id);
}

function parseHeaders(text) {
  const out = {};
  for (const [n, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf(':');
    if (i <= 0) throw new Error(`Header line ${n + 1} must look like "Name: value".`);
    out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

function fillWebhook(form, cfg) {
  const w = cfg?.webhook ?? cfg;
  form.elements.url.value = w?.url ?? '';
  const events = new Set(w?.events ?? ['all']);
  for (const c of form.querySelectorAll('input[name=event]')) c.checked = events.has(c.value);
  form.querySelector('input[value=all]').dispatchEvent(new Event('change'));
  // The API never echoes header values (they are often credentials): list the names only.
  const names = Object.keys(w?.headers ?? {});
  form.elements.headers.value = '';
  const notes = [];
  if (!w) notes.push('No webhook configured yet.');
  else {
    if (w.status === 'disabled') notes.push(`Disabled: ${w.disabledReason ?? 'by the receiver'}. Save it again to re-enable.`);
    if (names.length) notes.push(`Saved headers: ${names.join(', ')} (values hidden; saving replaces them, so enter them again to keep them).`);
    notes.push('Deliveries are signed (Standard Webhooks, webhook-signature header). The secret is shown once, when it is generated.');
  }
  $('#webhook-secret-state').textContent = notes.join(' ');
}

async function loadDeliveries(id) {
  let r;
  try {
    r = await state.api.deliveries(id);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) r = [];
    else return toast(describe(err));
  }
  if (state.selected !== id) return;
  const rows = $('#delivery-rows');
  if (!rows) return;
  const list = Array.isArray(r) ? r : (r?.deliveries ?? []);
  $('#delivery-empty').hidden = list.length > 0;
  put(rows, ...list.map((d) => {
    const status = d.status ?? 'pending';
    const retryable = ['failed', 'dead', 'cancelled'].includes(status);
    const when = d.deliveredAt ?? d.updatedAt ?? d.createdAt;
    return h('tr', { dataset: { deliveryId: d.id, status } },
      h('td', {}, timeEl(when, clock(when))),
      h('td', {}, d.event ?? ''),
      h('td', {}, h('span', { class: `badge delivery-status-${status}` }, status)),
      h('td', {}, String(d.attempts ?? '')),
      h('td', { class: 'small' }, d.lastStatusCode ? `HTTP ${d.lastStatusCode}` : '',
        d.lastError ? h('span', { class: 'session-error' }, ` ${d.lastError}`) : '',
        status === 'pending' && d.nextAttemptAt ? h('span', { class: 'muted' }, ' next try ', timeEl(d.nextAttemptAt, clock(d.nextAttemptAt))) : ''),
      h('td', {}, retryable ? h('button', { class: 'btn btn-small', type: 'button', onclick: (e) => act(e.currentTarget, null, async () => {
        await state.api.retryDelivery(id, d.id);
        toast('Retry queued', 'info');
        setTimeout(() => loadDeliveries(id), 700);
      }) }, 'Retry') : ''));
  }));
  // A pending delivery moves on (retried, delivered, dead) without a live event to say so:
  // look again while one is on screen.
  clearTimeout(state.deliveryPoll);
  if (list.some((d) => (d.status ?? 'pending') === 'pending')) {
    state.deliveryPoll = setTimeout(() => {
      if (state.selected === id && state.tab === 'webhook' && $('#delivery-rows')) loadDeliveries(id);
    }, 2000);
  }
}

// ---------- sandbox: virtual phones ----------

async function detectSandbox() {
  try {
    const r = await state.api.sandbox();
    state.sandbox = r && r.enabled !== false ? r : null;
  } catch {
    state.sandbox = null; // a production gateway has no sandbox routes
  }
  $('#sandbox-badge').hidden = !state.sandbox;
  if (state.sandbox) {
    await loadPhones().catch((e) => toast(describe(e)));
    if (state.selected) renderDetail();
  }
}

async function loadPhones() {
  const r = await state.api.phones();
  state.phones = Array.isArray(r) ? r : (r?.phones ?? []);
}

function sandboxScanButton(id) {
  const phones = state.phones.filter((p) => p.phone);
  const errorEl = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const chosen = state.scanPhone;
  const sel = h('select', { id: 'scan-phone', 'aria-label': 'Virtual phone', onchange: (e) => { state.scanPhone = e.currentTarget.value; } },
    phones.map((p) => h('option', { value: p.phone, selected: p.phone === chosen }, `${fmtPhone(p.phone)}${p.name ? ` ${p.name}` : ''}${p.passkey ? ' (asks for a passkey)' : ''}`)),
    h('option', { value: '', selected: chosen === '' }, 'a new virtual phone'));
  return h('div', { class: 'sandbox-scan' },
    h('div', { class: 'row' },
      sel,
      h('button', { class: 'btn btn-primary', type: 'button', id: 'scan-qr', onclick: (e) => act(e.currentTarget, errorEl, async () => {
        const qr = state.qr.get(id);
        if (!qr?.qr) throw new Error('No QR code to scan yet.');
        let phone = sel.value;
        if (!phone) phone = await newPhone();
        await state.api.phoneScan(phone, qr.qr);
        toast(`Scanned by virtual phone ${fmtPhone(phone)}`, 'info');
      }) }, 'Scan with virtual phone')),
    errorEl);
}

async function newPhone(name, passkey) {
  const used = new Set(state.phones.map((p) => p.phone));
  let n = 15550000001;
  while (used.has(String(n))) n += 1;
  const phone = String(n);
  await state.api.createPhone(phone, name || `Phone ${phone.slice(-4)}`, passkey);
  await loadPhones();
  return phone;
}

function renderPhonesTab(panel, id) {
  const s = state.sessions.get(id);
  const myPhone = sessionPhone(s);
  const createError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const list = h('div', { id: 'phone-list', class: 'phone-list' });
  const draw = () => put(list, ...(state.phones.length ? state.phones.map((p) => phoneCard(p, id, myPhone)) : [h('p', { class: 'muted' }, 'No virtual phones yet.')]));
  put(panel,
    h('div', { class: 'card' },
      h('h3', {}, 'Virtual phones'),
      h('p', { class: 'muted' }, 'Accounts on the built-in WhatsApp simulator. They can scan this session\'s QR code and message it.'),
      h('form', { class: 'row', novalidate: true, onsubmit: (e) => {
        e.preventDefault();
        const f = e.currentTarget.elements;
        act(e.submitter, createError, async () => {
          const phone = f.phone.value.trim().replace(/^\+/, '');
          if (phone) {
            await state.api.createPhone(phone, f.name.value.trim() || undefined, f.passkey.checked);
            await loadPhones();
          } else {
            await newPhone(f.name.value.trim(), f.passkey.checked);
          }
          f.phone.value = '';
          f.name.value = '';
          f.passkey.checked = false;
          draw();
        });
      } },
      h('input', { name: 'phone', inputmode: 'tel', placeholder: 'number (optional)', 'aria-label': 'New phone number', class: 'grow' }),
      h('input', { name: 'name', placeholder: 'name', 'aria-label': 'New phone name', class: 'grow' }),
      h('label', { class: 'check', title: 'WhatsApp asks for the account owner\'s passkey before it links a device' },
        h('input', { type: 'checkbox', name: 'passkey', id: 'new-phone-passkey' }), 'asks for a passkey'),
      h('button', { class: 'btn', type: 'submit' }, 'Add phone')),
      createError),
    list);
  draw();
  loadPhones().then(draw, (e) => toast(describe(e)));
}

function phoneCard(p, sessionId, myPhone) {
  const errorEl = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const inbox = h('ol', { class: 'message-list compact' });
  const showInbox = async () => {
    const r = await state.api.phoneMessages(p.phone);
    const items = (Array.isArray(r) ? r : (r?.messages ?? [])).slice(-5).reverse();
    put(inbox, ...items.map((m) => h('li', { class: `message ${m.fromMe ? 'out' : 'in'}` },
      h('div', { class: 'message-meta' }, h('span', {}, m.fromMe ? `↗ to ${fmtPhone(phoneOf(m.to))}` : `↙ from ${fmtPhone(phoneOf(m.from))}`), h('span', { class: 'muted' }, timeEl(m.timestamp, clock(m.timestamp)))),
      m.text || m.caption ? h('p', { class: 'message-text' }, m.text ?? m.caption) : null,
      m.media ? h('p', { class: 'muted small' }, `📎 ${m.media.fileName ?? m.media.mimetype}`) : null)));
  };
  const devices = p.devices ?? p.linkedDevices ?? [];
  if (!state.phoneDrafts.has(p.phone)) state.phoneDrafts.set(p.phone, {});
  const draft = state.phoneDrafts.get(p.phone);
  return h('div', { class: 'card phone', dataset: { phone: p.phone } },
    h('div', { class: 'row' }, h('strong', {}, fmtPhone(p.phone)), p.name ? h('span', { class: 'muted' }, p.name) : null,
      p.phone === myPhone ? h('span', { class: 'badge status-connected' }, `${sessionId}'s phone`) : null,
      p.passkey ? h('span', { class: 'badge', title: 'Linking a device to this account needs its owner\'s passkey' }, 'passkey') : null,
      h('span', { class: 'spacer' }), h('span', { class: 'muted small' }, `${Array.isArray(devices) ? devices.length : devices} linked device(s)`)),
    h('form', { class: 'row', novalidate: true, onsubmit: (e) => {
      e.preventDefault();
      const f = e.currentTarget.elements;
      act(e.submitter, errorEl, async () => {
        const to = f.to.value.trim().replace(/^\+/, '');
        if (!to) throw new Error('This session has no phone number yet: link it first.');
        if (!f.text.value.trim()) throw new Error('Write a message.');
        await state.api.phoneSend(p.phone, to, f.text.value);
        f.text.value = '';
        draft.text = '';
        toast(`Sent from ${fmtPhone(p.phone)}`, 'info');
        showInbox();
      });
    } },
    h('span', { class: 'muted small' }, 'to'),
    h('input', { name: 'to', value: draft.to ?? myPhone ?? '', inputmode: 'tel', 'aria-label': `Send from ${p.phone} to`, class: 'to-input',
      oninput: (e) => { draft.to = e.currentTarget.value; } }),
    h('input', { name: 'text', value: draft.text ?? '', placeholder: 'Message from this phone', 'aria-label': `Message from ${p.phone}`, class: 'grow',
      oninput: (e) => { draft.text = e.currentTarget.value; } }),
    h('button', { class: 'btn btn-primary', type: 'submit' }, 'Send')),
    errorEl,
    h('details', { ontoggle: (e) => e.currentTarget.open && showInbox().catch((err) => toast(describe(err))) },
      h('summary', {}, 'Recent messages on this phone'), inbox));
}

// ---------- keys (the admin key only) ----------
//
// Scoped keys give a tenant or a service some sessions (ids and prefixes) with some rights
// (scopes). The secret is in the answer that creates a key and nowhere else: the page shows
// it once, and forgets it when the page is left.

function renderKeysPage() {
  const page = $('#keys');
  const formError = h('p', { id: 'key-error', class: 'form-error', role: 'alert', hidden: true });
  const secretBox = h('div', { id: 'key-secret', class: 'secret', hidden: true });
  const listError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const form = h('form', { id: 'key-form', class: 'card stack', novalidate: true, onsubmit: (e) => {
    e.preventDefault();
    const f = e.currentTarget;
    act(e.submitter, formError, async () => {
      const created = await state.api.createKey(keySpec(f));
      f.reset();
      showSecret(secretBox, created);
      toast(`Key ${created.name} created`, 'info');
      await loadKeys(listError);
    });
  } },
  h('h3', {}, 'New key'),
  h('div', { class: 'key-grid' },
    h('label', { for: 'key-name' }, 'Name'),
    h('input', { id: 'key-name', name: 'name', maxlength: '100', placeholder: 'who or what uses it, e.g. tenant A\'s CRM', autocomplete: 'off' }),
    h('label', { for: 'key-sessions' }, 'Sessions'),
    h('div', { class: 'stack' },
      h('input', { id: 'key-sessions', name: 'sessions', placeholder: 'tenant-a-*, support', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'key-sessions-hint' }),
      h('p', { id: 'key-sessions-hint', class: 'muted small' }, 'Session ids, or prefixes ending in *, separated by commas; * alone is every session, also those created later.')),
    h('label', { for: 'key-expires' }, 'Expires'),
    h('div', { class: 'row' },
      h('input', { id: 'key-expires', name: 'expires', type: 'datetime-local', class: 'auto' }),
      h('span', { class: 'muted small' }, 'optional; without it the key works until it is revoked'))),
  h('fieldset', { class: 'events scopes' },
    h('legend', {}, 'Scopes'),
    SCOPES.map((sc) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', name: 'scope', value: sc.id, id: `key-scope-${sc.id}`, checked: sc.id === 'read' }),
      h('span', {}, h('strong', {}, sc.id), h('span', { class: 'muted small' }, ` ${sc.hint}`))))),
  formError,
  h('div', { class: 'row' }, h('button', { class: 'btn btn-primary', type: 'submit' }, 'Create key')),
  secretBox);

  put(page,
    h('div', { class: 'keys-head' },
      h('h2', { id: 'keys-title' }, 'API keys'),
      h('p', { class: 'muted' }, 'A scoped key may use only the sessions it names, and only for its scopes. The admin key (',
        h('code', {}, 'WAMUX_API_KEY'), ') is not listed here: it may do everything, including this page.')),
    form,
    h('div', { class: 'card' },
      h('div', { class: 'row' }, h('h3', {}, 'Keys'), h('span', { class: 'spacer' }),
        h('button', { class: 'btn btn-ghost', type: 'button', onclick: (e) => act(e.currentTarget, listError, () => loadKeys(listError)) }, 'Refresh')),
      listError,
      h('div', { class: 'table-wrap' },
        h('table', { class: 'deliveries keys-table' },
          h('thead', {}, h('tr', {}, ['Name', 'Id', 'Sessions', 'Scopes', 'Created', 'Last used', 'Expires', ''].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', { id: 'key-rows' }))),
      h('p', { id: 'key-empty', class: 'muted empty', hidden: true }, 'No scoped keys yet.')));
  act(null, listError, () => loadKeys(listError));
}

// POST /api/keys's body from the form; what is plainly missing is said before asking.
function keySpec(f) {
  const name = f.elements.name.value.trim();
  if (!name) throw new Error('Give the key a name: who or what will use it.');
  const sessions = f.elements.sessions.value.split(',').map((p) => p.trim()).filter(Boolean);
  if (!sessions.length) throw new Error('Name the sessions the key may use: ids, prefixes like tenant-a-*, or * for every session.');
  const scopes = [...f.querySelectorAll('input[name=scope]:checked')].map((c) => c.value);
  if (!scopes.length) throw new Error('Choose at least one scope.');
  const spec = { name, sessions: sessions.length === 1 && sessions[0] === '*' ? '*' : sessions, scopes };
  const expires = f.elements.expires.value;
  if (expires) {
    const t = new Date(expires).getTime();
    if (Number.isNaN(t)) throw new Error('The expiry is not a date and time.');
    spec.expiresAt = Math.floor(t / 1000);
  }
  return spec;
}

function showSecret(box, created) {
  const copyError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const value = h('code', { class: 'secret-value', id: 'key-secret-value' }, created.key);
  put(box,
    h('p', {}, h('strong', {}, `The key for ${created.name}: copy it now, it is not shown again.`)),
    value,
    h('button', { type: 'button', id: 'key-copy', class: 'btn', onclick: (e) => act(e.currentTarget, copyError, async () => {
      if (await copyText(created.key)) return toast('Key copied', 'info');
      getSelection().selectAllChildren(value);
      throw new Error('This browser did not let the page copy. The key is selected: copy it with Ctrl+C (⌘C on a Mac).');
    }) }, 'Copy'),
    h('button', { type: 'button', class: 'btn btn-ghost', onclick: () => {
      put(box);
      box.hidden = true;
    } }, 'Done'),
    copyError);
  box.hidden = false;
}

async function loadKeys(errorEl) {
  const r = await state.api.keys();
  const rows = $('#key-rows');
  if (!rows) return;
  errorEl.hidden = true;
  const keys = r?.keys ?? [];
  $('#key-empty').hidden = keys.length > 0;
  put(rows, ...keys.map((k) => keyRow(k, errorEl)));
}

function keyRow(k, errorEl) {
  const expired = k.expiresAt && toDate(k.expiresAt).getTime() <= Date.now();
  const never = () => h('span', { class: 'muted' }, 'never');
  return h('tr', { dataset: { keyId: k.id } },
    h('td', { class: 'key-name' }, k.name),
    h('td', {}, h('code', {}, k.id)),
    h('td', { class: 'key-sessions' }, k.sessions.join(', ')),
    h('td', {}, h('span', { class: 'key-scopes' }, k.scopes.map((sc) => h('span', { class: 'badge', dataset: { scope: sc } }, sc)))),
    h('td', { class: 'key-created' }, timeEl(k.createdAt, clock(k.createdAt))),
    h('td', { class: 'key-used' }, k.lastUsedAt ? timeEl(k.lastUsedAt) : never()),
    h('td', { class: 'key-expires' }, k.expiresAt ? [timeEl(k.expiresAt, clock(k.expiresAt)), expired ? [' ', h('span', { class: 'badge status-failed' }, 'expired')] : null] : never()),
    h('td', {}, h('button', { class: 'btn btn-danger btn-small', type: 'button', onclick: async (e) => {
      const btn = e.currentTarget;
      if (!await confirmDialog(`Revoke ${k.name}?`, 'Calls with this key are refused from now on, and its live feed is closed. This cannot be undone.', 'Revoke')) return;
      await act(btn, errorEl, async () => {
        await state.api.revokeKey(k.id);
        toast(`Key ${k.name} revoked`, 'info');
        await loadKeys(errorEl);
      });
    } }, 'Revoke')));
}

// ---------- live feed ----------

function connectFeed() {
  state.socket?.disconnect();
  const socket = io({ auth: { apiKey: state.api.key }, transports: ['websocket', 'polling'] });
  state.socket = socket;
  const feed = $('#feed');
  const set = (cls, text) => {
    feed.className = `feed ${cls}`;
    $('.feed-text', feed).textContent = text;
  };
  set('connecting', 'connecting…');
  socket.on('connect', () => {
    set('live', 'live');
    // Anything that happened while the feed was down.
    refreshSessions().catch((e) => toast(describe(e)));
    const shown = state.selected && state.messages.get(state.selected);
    if (shown?.loaded) loadMessages(state.selected, { reset: true }).catch((e) => toast(describe(e)));
    const chat = state.groupChat;
    if (chat?.loaded) loadGroupChat(chat.sessionId, chat.groupId, { reset: true }).catch((e) => toast(describe(e)));
  });
  socket.on('disconnect', (reason) => {
    set('offline', 'offline');
    // The server closes the feed of a key that was revoked or expired, and the client does
    // not reconnect by itself after that: ask whether the key still works.
    if (reason === 'io server disconnect' && state.socket === socket) checkKey(socket);
  });
  socket.on('connect_error', (err) => {
    set('offline', 'offline');
    if (/API key/i.test(err.message)) toast(`Live feed refused: ${err.message}`);
  });
  socket.onAny((name, body) => onEvent(name, body));
}

async function checkKey(socket) {
  try {
    await state.api.me();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut('The API key was refused. Sign in again.');
    return;
  }
  if (state.socket === socket) socket.connect();
}

function onEvent(name, body) {
  const id = body?.sessionId;
  if (!id) return;
  const data = body.data ?? {};
  if (name === 'session-status' || name === 'qr' || name.startsWith('passkey-')) state.statusHeard.set(id, (state.statusHeard.get(id) ?? 0) + 1);
  if (name === 'session-status') {
    const cur = state.sessions.get(id) ?? { sessionId: id };
    const next = { ...cur, ...data, sessionId: id };
    if (!data.since && !data.statusSince) next.since = body.timestamp;
    state.sessions.set(id, next);
    if (next.status !== 'qr') state.qr.delete(id);
    if (!PASSKEY.has(next.status) && next.status !== 'failed') forgetPasskey(id);
    renderSessions();
    if (state.selected === id) {
      renderDetailHeader();
      renderLink();
      groupsTabFollowStatus(id);
    }
    // The event carries the status; the status route has the full picture (me, errors).
    refreshSession(id).catch(() => {});
    if (state.sandbox) loadPhones().catch(() => {});
    return;
  }
  if (name === 'qr') {
    if (data.qrImage) state.qr.set(id, data);
    else {
      // The event has the raw code; the picture comes from the QR route. The old picture
      // stays until the new one is in, so the box does not flicker.
      const old = state.qr.get(id);
      if (old) state.qr.set(id, { ...old, qr: data.qr ?? old.qr, expiresAt: data.expiresAt ?? old.expiresAt });
      if (state.selected === id && can('manage')) loadQr(id);
      else state.qr.delete(id);
    }
    const cur = state.sessions.get(id);
    // While the passkey is asked for, WhatsApp's library still renews the QR code it no
    // longer shows: the session stays where it is.
    if (cur && cur.status !== 'qr' && !PASSKEY.has(cur.status)) state.sessions.set(id, { ...cur, status: 'qr' });
    renderSessions();
    if (state.selected === id) {
      renderDetailHeader();
      renderLink();
    }
    return;
  }
  if (name.startsWith('passkey-')) {
    onPasskeyEvent(id, name, data, body.timestamp);
    return;
  }
  if (name.startsWith('group-')) {
    onGroupEvent(id, data);
    return;
  }
  if (name.startsWith('message-') || name === 'poll-vote') {
    if (data.id) mergeMessage(id, data, { apply: ACTION_EVENTS.has(name) });
    if (state.selected === id && state.tab === 'webhook') setTimeout(() => loadDeliveries(id), 800);
  }
}

// The passkey events carry what the Link tab shows; the status they imply is set here too,
// in case its session-status event comes after them.
function onPasskeyEvent(id, name, data, timestamp) {
  let status = null;
  if (name === 'passkey-required') {
    status = 'passkey_required';
    setPasskey(id, { stage: 'assertion_required', options: data.options ?? null, expiresAt: data.expiresAt ?? null, code: null, error: null, confirmed: false });
  } else if (name === 'passkey-confirmation') {
    status = 'passkey_confirmation';
    setPasskey(id, { stage: 'confirmation_required', code: data.code ?? null, skipHandoffUx: !!data.skipHandoffUx, expiresAt: data.expiresAt ?? null, error: null, confirmed: false });
  } else if (name === 'passkey-failed') {
    setPasskey(id, { stage: 'none', error: data.reason ?? 'WhatsApp did not accept the passkey.' });
  } else {
    return;
  }
  const cur = state.sessions.get(id);
  if (status && cur && cur.status !== status) state.sessions.set(id, { ...cur, status, since: timestamp });
  state.qr.delete(id);
  renderSessions();
  if (state.selected === id) {
    renderDetailHeader();
    renderLink();
  }
}

// ---------- start ----------

function boot() {
  $('#login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const key = $('#login-key').value.trim();
    const err = $('#login-error');
    if (!key) {
      err.textContent = 'Enter the API key.';
      err.hidden = false;
      return;
    }
    const btn = e.submitter;
    btn.disabled = true;
    const ok = await signIn(key);
    btn.disabled = false;
    if (ok) showApp();
  });
  $('#signout').addEventListener('click', () => signOut());
  window.addEventListener('hashchange', () => state.api && applyRoute());
  // Relative times ("2 min ago") stay true without a reload.
  setInterval(() => {
    for (const t of document.querySelectorAll('.session-since time, .detail-title time')) {
      const d = new Date(t.getAttribute('datetime'));
      t.textContent = ago(d.getTime());
    }
  }, 15000);
  // The passkey step's countdown.
  setInterval(() => {
    for (const el of document.querySelectorAll('[data-expires-at]')) el.textContent = timeLeft(Number(el.dataset.expiresAt));
  }, 1000);
  // A safety net for a feed that cannot connect (e.g. a proxy without WebSocket support):
  // the QR and the status still move, just less promptly.
  setInterval(() => {
    if (!state.api || state.socket?.connected) return;
    const id = state.selected;
    if (id) refreshSession(id).catch(() => {});
    if (id && state.sessions.get(id)?.status === 'qr' && can('manage')) loadQr(id);
  }, 5000);

  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) {
    signIn(key, { silent: true }).then((ok) => (ok ? showApp() : signOut('Your saved API key no longer works. Sign in again.')));
  } else {
    showLogin();
  }
}

boot();
