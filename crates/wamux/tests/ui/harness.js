// Starts a real `wamux sandbox` (the gateway with its in-process WhatsApp simulator) for a
// test file, and gives the tests what a user has: the gateway's URL and key, and the
// simulator's admin API to act as the phones.
//
// The binary comes from WAMUX_BIN (the Rust test that runs this suite passes the one cargo
// built); without it, `cargo build -p wamux --features sandbox` builds it first.

import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../../../..');

export const API_KEY = 'ui-test-key-0123456789';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// Without the background-networking flags Chromium keeps trying hosts this machine
// cannot reach.
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// Debian's headless Chromium, driven by playwright-core.
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

function binary() {
  if (process.env.WAMUX_BIN) return process.env.WAMUX_BIN;
  execFileSync('cargo', ['build', '-p', 'wamux', '--features', 'sandbox'], { cwd: repo, stdio: 'inherit' });
  const target = process.env.CARGO_TARGET_DIR ?? path.join(repo, 'target');
  return path.join(target, 'debug', 'wamux');
}

async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

export async function waitFor(what, fn, { timeout = 30000, interval = 100 } = {}) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, interval));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

export class Sandbox {
  /** `env`: extra settings for the gateway (e.g. a shorter webhook retry schedule). */
  static async start({ env = {} } = {}) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wamux-ui-'));
    const port = await freePort();
    const logPath = path.join(dir, 'wamux.log');
    const log = fs.openSync(logPath, 'w');
    const child = spawn(binary(), ['sandbox'], {
      env: {
        ...process.env,
        WAMUX_HOST: '127.0.0.1',
        WAMUX_PORT: String(port),
        WAMUX_DATA_DIR: dir,
        WAMUX_API_KEY: API_KEY,
        WAMUX_LOG: process.env.WAMUX_LOG ?? 'info',
        // The tests' webhook receiver listens on loopback.
        WAMUX_WEBHOOK_ALLOW_PRIVATE: 'true',
        // Library warnings carry no backtraces: the log stays readable when a test fails.
        RUST_LIB_BACKTRACE: '0',
        ...env,
      },
      stdio: ['ignore', log, log],
    });
    const sb = new Sandbox(child, dir, `http://127.0.0.1:${port}`, logPath);
    try {
      await waitFor('the gateway to answer /api/health', async () => {
        if (child.exitCode !== null) throw new Error(`wamux exited with ${child.exitCode}`);
        const r = await fetch(`${sb.url}/api/health`, { headers: { 'X-API-Key': API_KEY } });
        return r.ok;
      }, { timeout: 60000 });
      const info = await waitFor('sandbox.json', () => {
        const p = path.join(dir, 'sandbox.json');
        return fs.existsSync(p) && JSON.parse(fs.readFileSync(p, 'utf8'));
      });
      sb.adminUrl = info.adminUrl.replace(/\/$/, '');
      sb.ca = fs.readFileSync(info.caFile);
      sb.caFile = info.caFile;
      sb.wsUrl = info.wsUrl;
      sb.noiseRootKey = info.noiseRootKey;
    } catch (e) {
      sb.dumpLog();
      await sb.stop();
      throw e;
    }
    return sb;
  }

  constructor(child, dir, url, logPath) {
    this.child = child;
    this.dir = dir;
    this.url = url;
    this.logPath = logPath;
  }

  dumpLog() {
    try {
      const lines = fs.readFileSync(this.logPath, 'utf8').split('\n');
      const problems = lines.filter((l) => / (WARN|ERROR) /.test(l)).slice(-80);
      process.stderr.write(`--- wamux log: warnings and errors (last 80) ---\n${problems.join('\n')}\n`);
      process.stderr.write(`--- wamux log (last 80 lines) ---\n${lines.slice(-80).join('\n')}\n`);
    } catch { /* no log yet */ }
  }

  async stop() {
    if (this.child.exitCode === null) {
      this.child.kill('SIGTERM');
      const exited = once(this.child, 'exit');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 10000);
      await exited;
      clearTimeout(t);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** The gateway's API, as a client with the key. Throws on non-2xx with the error body. */
  async api(method, route, body) {
    const r = await fetch(`${this.url}${route}`, {
      method,
      headers: { 'X-API-Key': API_KEY, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    const data = text ? JSON.parse(text) : null;
    if (!r.ok) throw new Error(`${method} ${route}: HTTP ${r.status} ${text}`);
    return data;
  }

  /** The simulator's admin API (HTTPS with the simulator's own CA). */
  admin(method, route, body) {
    const url = new URL(`${this.adminUrl}${route}`);
    const payload = body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = https.request(url, {
        method,
        ca: this.ca,
        headers: payload ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) } : {},
      }, (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c) => { data += c; });
        res.on('end', () => {
          if (res.statusCode >= 300) return reject(new Error(`${method} ${route}: HTTP ${res.statusCode} ${data}`));
          try { resolve(data ? JSON.parse(data) : null); } catch { resolve(data); }
        });
      });
      req.on('error', reject);
      if (payload) req.write(payload);
      req.end();
    });
  }

  phone(phone, name) {
    return this.admin('POST', '/phones', { phone, name });
  }

  /** Starts a session, has `phone` scan its QR, and waits until it is connected. */
  async linkedSession(id, phone) {
    await this.api('POST', '/api/start-session', { sessionId: id });
    const qr = await waitFor(`a QR code for ${id}`, async () => (await this.api('GET', `/api/qr/${id}`)).qr);
    await this.admin('POST', `/phones/${phone}/scan`, { qr });
    await waitFor(`${id} to connect`, async () => (await this.api('GET', `/api/status/${id}`)).status === 'connected');
  }
}

/**
 * A webhook receiver on loopback that collects what it is sent. It answers `status` (200
 * unless told); `answerWith(code)` changes that, e.g. to play a receiver that is down.
 */
export async function receiver({ status = 200 } = {}) {
  let answer = status;
  const received = [];
  const waiters = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      let json = null;
      try { json = JSON.parse(body); } catch { /* kept raw */ }
      received.push({ headers: req.headers, body: json ?? body });
      res.writeHead(answer, { 'Content-Type': 'application/json' }).end(JSON.stringify({ ok: answer < 300 }));
      for (const w of waiters.splice(0)) w();
    });
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  return {
    url: `http://127.0.0.1:${srv.address().port}/hook`,
    received,
    answerWith: (code) => { answer = code; },
    close: () => new Promise((r) => srv.close(r)),
  };
}
