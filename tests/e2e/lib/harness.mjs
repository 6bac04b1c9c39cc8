// Browser end-to-end harness: a fresh database on the test MariaDB, the real
// kefud on 127.0.0.1 (a free port), Debian's Chromium driven by
// playwright-core, and screenshots kept under KEFU_E2E_ARTIFACTS.
//
// Environment (set by tests/e2e/CMakeLists.txt, and by deploy/test.sh for the
// database):
//   KEFUD                  the kefud binary
//   KEFU_SOURCE_DIR        the source tree (migrations, web assets)
//   KEFU_TEST_DB_SOCKET    unix socket of a MariaDB where we may create databases
//   KEFU_TEST_DB_ROOT_USER administrative user there (default root, unix_socket auth)
//   KEFU_E2E_ARTIFACTS     where screenshots go (in the build tree)
//   KEFU_E2E_CHROMIUM      the browser (default /usr/bin/chromium)
//
// Anything missing, or a browser that does not start, is a failure, never a skip.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run',
];

export function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is not set (see tests/e2e/lib/harness.mjs)`);
  return v;
}

export function artifacts() {
  const dir = env('KEFU_E2E_ARTIFACTS');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** Run SQL as the administrative user; rows as arrays of strings. */
export function sql(query, database) {
  const args = ['--no-defaults', `--socket=${env('KEFU_TEST_DB_SOCKET')}`,
    '-u', process.env.KEFU_TEST_DB_ROOT_USER || 'root', '--batch', '--skip-column-names', '--raw',
    '-e', query];
  if (database) args.push(database);
  const r = spawnSync('mariadb', args, { encoding: 'utf8', timeout: 60000 });
  if (r.status !== 0) throw new Error(`mariadb failed (${r.status}) running ${query}: ${r.stderr || r.error}`);
  return r.stdout.split('\n').filter((l) => l !== '').map((l) => l.split('\t'));
}

function kefudSync(args, extraEnv) {
  const r = spawnSync(env('KEFUD'), args, {
    encoding: 'utf8', timeout: 120000, env: { PATH: process.env.PATH, ...extraEnv },
  });
  if (r.status !== 0) throw new Error(`kefud ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/**
 * A world: database (with queues "general" and "billing"), an admin API
 * token, kefud and a browser.  Call close() in after(): it stops kefud
 * (asserting a clean exit) and the browser, and drops the database.
 */
export class World {
  static async create(extraEnv = {}) {
    const w = new World();
    try {
      await w.start(extraEnv);
    } catch (e) {
      await w.close().catch(() => {}); // nothing left behind: kefud, database, files
      throw e;
    }
    return w;
  }

  async start(extraEnv) {
    this.suffix = randomBytes(6).toString('hex');
    this.dbName = `kefu_e2e_${this.suffix}`;
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kefu-e2e-'));
    const password = randomBytes(16).toString('hex');
    const pwfile = path.join(this.tmp, 'db_password');
    fs.writeFileSync(pwfile, password, { mode: 0o600 });
    sql(`CREATE DATABASE \`${this.dbName}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci; ` +
      `CREATE USER '${this.dbName}'@'localhost' IDENTIFIED BY '${password}'; ` +
      `GRANT ALL ON \`${this.dbName}\`.* TO '${this.dbName}'@'localhost'`);
    this.dbCreated = true;
    this.dbEnv = {
      KEFU_DB_SOCKET: env('KEFU_TEST_DB_SOCKET'), KEFU_DB_NAME: this.dbName,
      KEFU_DB_USER: this.dbName, KEFU_DB_PASSWORD_FILE: pwfile,
      KEFU_SQL_DIR: path.join(env('KEFU_SOURCE_DIR'), 'sql'),
      KEFU_WEB_DIR: path.join(env('KEFU_SOURCE_DIR'), 'server', 'web'),
    };
    kefudSync(['migrate'], this.dbEnv);
    sql("INSERT INTO queue (name, slug) VALUES ('General', 'general'), ('Billing', 'billing')",
      this.dbName);
    const out = kefudSync(['admin', 'create-token', '--role', 'admin', '--name', 'e2e'], this.dbEnv);
    this.token = out.trim().split('\n').pop().trim().split(/\s+/).pop();

    await this.startKefud(extraEnv);
    try {
      this.browser = await chromium.launch({
        executablePath: process.env.KEFU_E2E_CHROMIUM || '/usr/bin/chromium',
        args: CHROMIUM_ARGS, headless: true, timeout: 60000,
      });
    } catch (e) {
      throw new Error(`Chromium did not start (this is a failure, not a skip): ${e.message}`);
    }
  }

  async startKefud(extraEnv) {
    const envv = {
      PATH: process.env.PATH,
      ...this.dbEnv,
      KEFU_LISTEN: '127.0.0.1:0',
      KEFU_IO_THREADS: '1',
      KEFU_DB_WORKERS: '4',
      KEFU_WEBFORM_CATEGORIES: 'general:General support,billing:Billing',
      KEFU_WEBFORM_MIN_FILL: '0',        // a browser driven by a script fills forms in no time
      KEFU_WEBFORM_RATE_IP: '0',
      KEFU_WEBFORM_RATE_EMAIL: '0',
      KEFU_ATTACHMENT_MAX_BYTES: '1048576',
      KEFU_ATTACHMENT_MAX_COUNT: '3',
      ...extraEnv,
    };
    this.logPath = path.join(this.tmp, 'kefud.log');
    const log = fs.openSync(this.logPath, 'w');
    this.kefud = spawn(env('KEFUD'), [], { env: envv, stdio: ['ignore', log, log] });
    fs.closeSync(log);
    this.exited = new Promise((resolve) => this.kefud.on('exit', (code, sig) => resolve({ code, sig })));
    const deadline = Date.now() + 60000;
    for (;;) {
      const text = fs.readFileSync(this.logPath, 'utf8');
      const m = /event=listening addr=(\S+)/.exec(text);
      if (m) {
        this.base = `http://${m[1].replace(/"/g, '')}`;
        return;
      }
      if (this.kefud.exitCode !== null) throw new Error(`kefud exited early:\n${text}`);
      if (Date.now() > deadline) throw new Error(`kefud did not listen within 60 s:\n${text}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  logTail() {
    try { return fs.readFileSync(this.logPath, 'utf8').slice(-4000); } catch { return ''; }
  }

  /** The agent API with the admin token. */
  async api(method, p, body) {
    const res = await fetch(this.base + p, {
      method,
      headers: { Authorization: `Bearer ${this.token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: res.status, json, text };
  }

  query(q) {
    return sql(q, this.dbName);
  }

  async context(opts = {}) {
    const ctx = await this.browser.newContext({ viewport: { width: 1024, height: 800 }, ...opts });
    ctx.setDefaultTimeout(30000);
    return ctx;
  }

  /** Save a screenshot under the artefacts directory; its path. */
  async shot(page, name, opts = {}) {
    const file = path.join(artifacts(), name);
    await page.screenshot({ path: file, ...opts });
    return file;
  }

  async close() {
    let result = null;
    if (this.browser) await this.browser.close().catch(() => {});
    if (this.kefud && this.kefud.exitCode === null) {
      this.kefud.kill('SIGTERM');
      const timer = setTimeout(() => this.kefud.kill('SIGKILL'), 30000);
      result = await this.exited;
      clearTimeout(timer);
    }
    if (this.dbCreated) {
      try {
        sql(`DROP DATABASE IF EXISTS \`${this.dbName}\`; DROP USER IF EXISTS '${this.dbName}'@'localhost'`);
      } catch (e) { console.error(e.message); }
    }
    if (this.tmp) fs.rmSync(this.tmp, { recursive: true, force: true });
    if (result && (result.code !== 0 || result.sig)) {
      throw new Error(`kefud did not exit cleanly after SIGTERM (${JSON.stringify(result)}):\n${this.logTail()}`);
    }
  }
}

/** Width and height of a PNG file, from its IHDR chunk. */
export function pngSize(file) {
  const b = fs.readFileSync(file);
  if (b.toString('latin1', 1, 4) !== 'PNG') throw new Error(`${file} is not a PNG`);
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
}

/** A small PNG to upload (a valid header is enough for the type sniffer). */
export function pngBytes() {
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    Buffer.from('\x00\x00\x00\rIHDR', 'latin1'), randomBytes(64)]);
}
