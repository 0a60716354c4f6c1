// The gateway's HTTP API as the UI uses it. Every call goes through `request`, which turns
// the gateway's `{"error":{"code","message"}}` bodies (and network failures) into an ApiError,
// so the caller can always show what went wrong.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(key) {
    this.key = key;
  }

  async request(method, path, { json, form, query } = {}) {
    const headers = { 'X-API-Key': this.key, Accept: 'application/json' };
    let body;
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form; // the browser sets the multipart boundary
    }
    let url = path;
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
      const s = q.toString();
      if (s) url += (url.includes('?') ? '&' : '?') + s;
    }
    let res;
    try {
      res = await fetch(url, { method, headers, body });
    } catch (e) {
      throw new ApiError(0, 'network', `The gateway did not answer (${e.message}).`);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = text; }
    }
    if (!res.ok) {
      const err = data && typeof data === 'object' ? data.error : null;
      const code = err?.code ?? `http_${res.status}`;
      const message = err?.message ?? (typeof data === 'string' && data ? data.slice(0, 300) : `${method} ${path} failed with HTTP ${res.status}`);
      throw new ApiError(res.status, code, message);
    }
    return data;
  }

  get(path, query) { return this.request('GET', path, { query }); }
  post(path, json) { return this.request('POST', path, { json: json ?? {} }); }
  patch(path, json) { return this.request('PATCH', path, { json: json ?? {} }); }
  del(path) { return this.request('DELETE', path); }

  // Sessions
  sessions() { return this.get('/api/sessions'); }
  status(id) { return this.get(`/api/status/${enc(id)}`); }
  startSession(id) { return this.post('/api/start-session', { sessionId: id }); }
  qr(id) { return this.get(`/api/qr/${enc(id)}`); }
  pairingCode(id, phone) { return this.post(`/api/sessions/${enc(id)}/pairing-code`, { phone }); }
  logout(id) { return this.post(`/api/sessions/${enc(id)}/logout`); }
  restart(id) { return this.post(`/api/sessions/${enc(id)}/restart`); }
  deleteSession(id) { return this.del(`/api/sessions/${enc(id)}`); }
  // The passkey step of linking: what is pending, the owner's assertion, the code check.
  passkey(id) { return this.get(`/api/sessions/${enc(id)}/passkey`); }
  passkeySubmit(id, credential) { return this.post(`/api/sessions/${enc(id)}/passkey`, credential); }
  passkeyConfirm(id) { return this.post(`/api/sessions/${enc(id)}/passkey/confirm`); }

  // Messages
  messages(id, cursor) { return this.get(`/api/messages/${enc(id)}`, { limit: 50, cursor }); }
  // One chat's history (a group's, here): `chat` is its JID.
  chatMessages(id, chat, cursor) { return this.get(`/api/messages/${enc(id)}`, { limit: 50, chat, cursor }); }
  sendText(sessionId, to, text) { return this.post('/api/send-message', { sessionId, to, text }); }
  sendFile(sessionId, to, file, caption) {
    const form = new FormData();
    form.set('sessionId', sessionId);
    form.set('to', to);
    if (caption) form.set('caption', caption);
    form.set('file', file, file.name);
    return this.request('POST', '/api/send-media', { form });
  }
  // location: {latitude, longitude, name?, address?}
  sendLocation(sessionId, to, location) { return this.post('/api/send-location', { sessionId, to, ...location }); }
  // poll: {question, options: [2 to 12], multiple}
  sendPoll(sessionId, to, poll) { return this.post('/api/send-poll', { sessionId, to, ...poll }); }
  // An empty emoji takes our reaction back.
  sendReaction(sessionId, messageId, emoji) { return this.post('/api/send-reaction', { sessionId, messageId, emoji }); }

  // Groups: WhatsApp is asked each time, so the session must be connected. Participants are
  // phone numbers; the answers to create and participants say how each one went.
  groups(id) { return this.get(`/api/sessions/${enc(id)}/groups`); }
  group(id, groupId) { return this.get(`/api/sessions/${enc(id)}/groups/${enc(groupId)}`); }
  createGroup(id, subject, participants, description) {
    return this.post(`/api/sessions/${enc(id)}/groups`, { subject, participants, description: description || undefined });
  }
  // action: add, remove, promote or demote
  groupParticipants(id, groupId, action, participants) {
    return this.post(`/api/sessions/${enc(id)}/groups/${enc(groupId)}/participants`, { action, participants });
  }
  // edit: {subject?, description?, announce?, locked?}
  updateGroup(id, groupId, edit) { return this.patch(`/api/sessions/${enc(id)}/groups/${enc(groupId)}`, edit); }
  groupInviteLink(id, groupId) { return this.get(`/api/sessions/${enc(id)}/groups/${enc(groupId)}/invite-link`); }
  leaveGroup(id, groupId) { return this.post(`/api/sessions/${enc(id)}/groups/${enc(groupId)}/leave`); }

  // Webhook
  webhook(id) { return this.get(`/api/${enc(id)}/webhook`); }
  setWebhook(id, cfg) { return this.post(`/api/${enc(id)}/webhook`, cfg); }
  deleteWebhook(id) { return this.del(`/api/${enc(id)}/webhook`); }
  testWebhook(id) { return this.post(`/api/${enc(id)}/webhook/test`); }
  deliveries(id) { return this.get(`/api/${enc(id)}/webhook/deliveries`); }
  retryDelivery(id, deliveryId) { return this.post(`/api/${enc(id)}/webhook/deliveries/${enc(deliveryId)}/retry`); }

  // Who this key is, and the scoped keys (the admin key only).
  me() { return this.get('/api/me'); }
  keys() { return this.get('/api/keys'); }
  createKey(spec) { return this.post('/api/keys', spec); }
  revokeKey(keyId) { return this.del(`/api/keys/${enc(keyId)}`); }

  // Sandbox: the simulator's virtual phones, through the gateway.
  sandbox() { return this.get('/api/sandbox'); }
  phones() { return this.get('/api/sandbox/phones'); }
  createPhone(phone, name, passkey) { return this.post('/api/sandbox/phones', { phone, name, passkey: passkey || undefined }); }
  phoneScan(phone, qr) { return this.post(`/api/sandbox/phones/${enc(phone)}/scan`, { qr }); }
  phoneSend(phone, to, text) { return this.post(`/api/sandbox/phones/${enc(phone)}/messages`, { to, text }); }
  phoneMessages(phone) { return this.get(`/api/sandbox/phones/${enc(phone)}/messages`); }
  // The owner's browser on web.whatsapp.com, as the simulator plays it for a gated phone.
  phonePasskeyAssert(phone, options) { return this.post(`/api/sandbox/phones/${enc(phone)}/passkey/assert`, { options }); }
}

const enc = encodeURIComponent;
