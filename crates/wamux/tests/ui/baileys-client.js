// A WhatsApp Web client built on Baileys (unmodified, from npm), run as its own process the
// way an app built on Baileys runs, and driven over JSON lines: commands on stdin, what the
// client sees on stdout. baileys.test.js starts it against the simulator.
//
// Environment: WA_WS_URL (the chat WebSocket), WA_NOISE_ROOT (hex: the key the server's
// certificate chain is rooted in, which Baileys pins; WhatsApp's by default), AUTH_DIR (the
// session's files), NODE_EXTRA_CA_CERTS (the simulator's CA, for TLS).
//
// Out (on fd 3): {"event":"qr","qr"}, {"event":"open","me"}, {"event":"close","code"},
//      {"event":"message","id","from","fromMe","text"?,"image"?:{"mimetype","caption","size","sha256"}},
//      {"event":"update","id","remoteJid","status"}, {"event":"chat","id","pinned"?,"archived"?,"muteEndTime"?},
//      {"reply":N,"id"} or {"reply":N,"error"}.
// In:  {"req":N,"cmd":"text","to","text"}, {"req":N,"cmd":"image","to","data":"<base64>","caption"?}.

import crypto from 'node:crypto';
import fs from 'node:fs';
import readline from 'node:readline';
import makeWASocket, {
  DisconnectReason, WA_CERT_DETAILS, downloadMediaMessage, useMultiFileAuthState,
} from 'baileys';
import pino from 'pino';

if (process.env.WA_NOISE_ROOT) {
  // The trust anchor: a client pins WhatsApp's root key; pointed at another server it pins
  // that server's, as whatsapp-rust's own tests do with the simulator.
  WA_CERT_DETAILS.PUBLIC_KEY = Buffer.from(process.env.WA_NOISE_ROOT, 'hex');
}

const logger = pino({ level: process.env.BAILEYS_LOG ?? 'warn' }, pino.destination(2));
// What the client sees goes to fd 3: its libraries print to stdout (libsignal's "Closing
// session" and the like).
const events = fs.createWriteStream(null, { fd: 3 });
const out = (obj) => events.write(`${JSON.stringify(obj)}\n`);
const sent = new Map();
let sock;
let saving = Promise.resolve();
let stopping = false;

async function connect() {
  const { state, saveCreds } = await useMultiFileAuthState(process.env.AUTH_DIR);
  sock = makeWASocket({
    auth: state,
    logger,
    waWebSocketUrl: process.env.WA_WS_URL,
    markOnlineOnConnect: false,
    getMessage: async (key) => sent.get(key.id),
  });
  // Writes in order, and a stop waits for the last one (an app that exits mid-write
  // loses its login).
  sock.ev.on('creds.update', () => {
    saving = saving.then(saveCreds).catch(fail);
  });
  sock.ev.on('connection.update', ({ connection, lastDisconnect, qr }) => {
    if (qr) out({ event: 'qr', qr });
    if (connection === 'open') out({ event: 'open', me: sock.user });
    if (connection === 'close') {
      const code = lastDisconnect?.error?.output?.statusCode;
      out({ event: 'close', code: code ?? null, reason: lastDisconnect?.error?.message ?? null });
      if (code === DisconnectReason.loggedOut) process.exit(3);
      if (stopping) return;
      // 515 (restart required, after pairing) and drops: a new socket, as Baileys' docs say.
      setTimeout(() => connect().catch(fail), code === DisconnectReason.restartRequired ? 0 : 500);
    }
  });
  sock.ev.on('messages.upsert', async ({ messages }) => {
    for (const m of messages) {
      // Baileys folds a receipt that comes before it reported our own message into that
      // message's status: an app's store reads it there.
      if (m.key.fromMe && m.status > 2) out({ event: 'update', id: m.key.id, remoteJid: m.key.remoteJid, status: m.status });
      if (!m.message) continue;
      const msg = m.message;
      const entry = { event: 'message', id: m.key.id, from: m.key.remoteJid, fromMe: !!m.key.fromMe };
      const text = msg.conversation ?? msg.extendedTextMessage?.text;
      if (text) entry.text = text;
      if (msg.imageMessage) {
        try {
          const data = await downloadMediaMessage(m, 'buffer', {}, { logger, reuploadRequest: sock.updateMediaMessage });
          entry.image = {
            mimetype: msg.imageMessage.mimetype,
            caption: msg.imageMessage.caption ?? null,
            size: data.length,
            sha256: crypto.createHash('sha256').update(data).digest('hex'),
          };
        } catch (e) {
          entry.image = { error: String(e?.message ?? e) };
        }
      }
      if (entry.text === undefined && entry.image === undefined) continue;
      out(entry);
    }
  });
  // App state the account's devices synced (pins, archives, mutes), as Baileys reports it.
  sock.ev.on('chats.update', (updates) => {
    for (const u of updates) {
      const entry = { event: 'chat', id: u.id };
      for (const k of ['pinned', 'archived', 'muteEndTime', 'unreadCount']) if (k in u) entry[k] = u[k];
      out(entry);
    }
  });
  sock.ev.on('messages.update', (updates) => {
    for (const { key, update } of updates) {
      if (update.status !== undefined && update.status !== null) {
        out({ event: 'update', id: key.id, remoteJid: key.remoteJid, status: update.status });
      }
    }
  });
}

function fail(e) {
  process.stderr.write(`baileys client: ${e?.stack ?? e}\n`);
  process.exit(1);
}

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  let req;
  try {
    req = JSON.parse(line);
    let content;
    if (req.cmd === 'text') content = { text: req.text };
    else if (req.cmd === 'image') content = { image: Buffer.from(req.data, 'base64'), caption: req.caption };
    else throw new Error(`unknown command ${req.cmd}`);
    const msg = await sock.sendMessage(req.to, content);
    sent.set(msg.key.id, msg.message);
    out({ reply: req.req, id: msg.key.id });
  } catch (e) {
    out({ reply: req?.req ?? null, error: String(e?.message ?? e) });
  }
});
// End of input is the app being stopped: close the socket, let the last writes land, exit.
// End of input is the app being stopped: close the socket and let the last writes land
// (the process ends when nothing is left to do, or after 5 s).
process.stdin.on('end', async () => {
  stopping = true;
  sock?.end(undefined);
  await saving;
  setTimeout(() => process.exit(0), 5000).unref();
});

connect().catch(fail);
