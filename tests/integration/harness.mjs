// harness.mjs -- one real evalbus stack per test file, and the helpers the tests share.
//
// A Stack picks 10 consecutive free loopback ports, makes a temporary state folder and runs
// `scripts/stack up` with EVALBUS_STATE_DIR, EVALBUS_PORT_BASE and EVALBUS_BIN_DIR; the script
// writes $STATE/stack.env (KEY=value lines) that tells where each part listens. Tests then talk
// to those real servers over 127.0.0.1 only: HTTP with fetch, NATS with the nats client, the CLI
// as a child process. `down()` runs `scripts/stack down`, stops any auth replica a test spawned,
// checks that no process named in $STATE/run/*.pid is left, and removes the state folder.
//
// Use from a test file:
//   const stack = new Stack('cli');
//   before(() => stack.up(), { timeout: UP_TIMEOUT_MS });
//   after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });
//   it('does a thing', { timeout: 60_000 }, stack.wrap(async (t) => { ... }));
// stack.wrap() prints the tail of every service log ($STATE/logs/*.log) when the test fails,
// so a CI failure can be diagnosed from the test output alone.
//
// Environment: EVALBUS_BIN_DIR (default <repo>/build-test/bin) holds evalbus and evalbus-auth.
// EVALBUS_TEST_KEEP_STATE=1 keeps the state folder (its path is printed) for debugging.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { connect as natsConnect } from 'nats';
import protobuf from 'protobufjs';

export { sleep };

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN_DIR = process.env.EVALBUS_BIN_DIR
  ? path.resolve(process.env.EVALBUS_BIN_DIR)
  : path.join(REPO, 'build-test', 'bin');
export const STACK_SCRIPT = path.join(REPO, 'scripts', 'stack');
export const PROTO_ROOT = path.join(REPO, 'proto');

export const UP_TIMEOUT_MS = 240_000;
export const DOWN_TIMEOUT_MS = 120_000;

/** eb_ + 10 lowercase base32 + _ + 43 base64url. */
export const KEY_RE = /^eb_[a-z2-7]{10}_[A-Za-z0-9_-]{43}$/;
export const RFC3339_RE = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
export const ERROR_STATUS = {
  invalid_argument: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  rate_limited: 429,
  unavailable: 503,
  timeout: 504,
  io_error: 500,
  database_error: 500,
  internal: 500,
};
export const PID_PARTS = ['nats', 'postgres', 'redis', 'nginx', 'auth'];
const STACK_ENV_REQUIRED = [
  'EVALBUS_URL',
  'EVALBUS_NATS_URL',
  'EVALBUS_DATABASE_URL',
  'EVALBUS_REDIS_URL',
  'EVALBUS_AUTH_URL',
  'EVALBUS_JWT_SECRET_FILE',
];
const LOG_TAIL_LINES = 60;
const PORT_COUNT = 14; // base .. base+9, and +10..+13 for the S3 store's backends

// ---------------------------------------------------------------------------------------------
// small utilities

/** The secret part of an API key: the 43 characters after "eb_<prefix>_" (it may itself
 * contain "_"). */
export function keySecret(key) {
  return String(key).slice('eb_'.length + 10 + 1);
}

/** A slug that no other test (or earlier run) uses: lowercase letters, digits and '-'. */
export function uniqueSlug(prefix = 't') {
  return `${prefix}-${crypto.randomBytes(4).toString('hex')}`;
}

export function randomPassword() {
  return `pw-${crypto.randomBytes(12).toString('base64url')}`;
}

/** RFC 3339 in whole seconds (no fraction), UTC. */
export function rfc3339(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Decodes a compact JWS without verifying it: {header, payload, signingInput, signature}. */
export function decodeJwt(token) {
  const parts = String(token).split('.');
  assert.equal(parts.length, 3, `a JWT has three parts: ${token}`);
  const json = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
  return {
    header: json(parts[0]),
    payload: json(parts[1]),
    signingInput: `${parts[0]}.${parts[1]}`,
    signature: parts[2],
  };
}

/** Signs header and payload as an HS256 compact JWS under secret (Buffer). */
export function signJwtHs256(header, payload, secret) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${enc(header)}.${enc(payload)}`;
  const sig = crypto.createHmac('sha256', secret).update(input).digest('base64url');
  return `${input}.${sig}`;
}

/** psql's flags for machine-readable rows: no psqlrc, quiet, unaligned, tuples only, tabs. */
const PSQL_FLAGS = ['-X', '-q', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1'];

/** The rows a psql run printed with PSQL_FLAGS, as arrays of strings; throws when it failed. */
function psqlRows(res, what, sql) {
  if (res.code !== 0) throw new Error(`${what} exited ${res.code}: ${res.stderr.trim()}\n  sql: ${sql}`);
  return res.stdout.split('\n').filter((l) => l.length > 0).map((l) => l.split('\t'));
}

/** Calls fn every intervalMs until it returns a truthy value or timeoutMs passes; returns
 * {value, elapsedMs} of the first truthy result, or {value: last, elapsedMs, timedOut: true}. */
export async function pollUntil(fn, { timeoutMs = 5000, intervalMs = 100 } = {}) {
  const start = performance.now();
  let value;
  for (;;) {
    value = await fn();
    const elapsedMs = performance.now() - start;
    if (value) return { value, elapsedMs };
    if (elapsedMs >= timeoutMs) return { value, elapsedMs, timedOut: true };
    await sleep(intervalMs);
  }
}

/** Runs fn(i) for i in [0, count) with at most `concurrency` at a time; returns the results. */
export async function mapLimit(count, concurrency, fn) {
  const results = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      results[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return results;
}

/** Asserts that res is an evalbus error: the status that matches code, the JSON error body
 * {"error": {"code", "message", "request_id"}}, and an X-Request-Id header equal to the body's
 * request_id. `code` may be an array of acceptable codes. */
export function assertError(res, code, what = '') {
  const codes = Array.isArray(code) ? code : [code];
  const label = `${what ? what + ': ' : ''}${res.method} ${res.url}`;
  const statuses = codes.map((c) => ERROR_STATUS[c]);
  assert.ok(
    statuses.includes(res.status),
    `${label}: expected HTTP ${statuses.join('|')} (${codes.join('|')}), got ${res.status}: ${res.text.slice(0, 300)}`,
  );
  assert.ok(
    res.body && typeof res.body === 'object' && res.body.error && typeof res.body.error === 'object',
    `${label}: error body must be {"error": {...}}, got: ${res.text.slice(0, 300)}`,
  );
  const e = res.body.error;
  assert.equal(e.code, codes[statuses.indexOf(res.status)], `${label}: error.code`);
  assert.equal(typeof e.message, 'string', `${label}: error.message is a string`);
  assert.ok(e.message.length > 0, `${label}: error.message is not empty`);
  assert.equal(typeof e.request_id, 'string', `${label}: error.request_id is a string`);
  assert.ok(e.request_id.length > 0, `${label}: error.request_id is not empty`);
  const rid = res.headers.get('x-request-id');
  assert.ok(rid, `${label}: X-Request-Id header present`);
  assert.equal(e.request_id, rid, `${label}: error.request_id equals the X-Request-Id header`);
}

/** Asserts res has the given status (with the body in the message when it has not). */
export function assertStatus(res, status, what = '') {
  assert.equal(
    res.status,
    status,
    `${what ? what + ': ' : ''}${res.method} ${res.url} -> ${res.status}: ${res.text.slice(0, 400)}`,
  );
  assert.ok(res.headers.get('x-request-id'), `${res.method} ${res.url}: X-Request-Id header present`);
}

/** A loopback port nobody listens on right now (checked by binding it). */
export async function portIsFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

// Ports are chosen below the kernel's ephemeral range (ip_local_port_range, 32768-60999 on
// Debian): a port there can be taken at any moment as the local end of an outgoing connection,
// between the check below and the server's bind.
const PORT_LO = 20000;
const PORT_HI = ephemeralLow();

function ephemeralLow() {
  try {
    const lo = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(lo) && lo > PORT_LO + 1000 ? lo : 32768;
  } catch {
    return 32768;
  }
}

export async function findFreePortBase(count = PORT_COUNT, avoid = []) {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = PORT_LO + crypto.randomInt(0, PORT_HI - PORT_LO - count);
    if (avoid.some(([lo, hi]) => base + count > lo && base < hi)) continue;
    let ok = true;
    for (let p = base; p < base + count && ok; p++) ok = await portIsFree(p);
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free loopback ports found in ${PORT_LO}-${PORT_HI}`);
}

/** Resolves true when a TCP connection to 127.0.0.1:port is refused (ECONNREFUSED). */
export function connectionRefused(port, timeoutMs = 2000) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(false);
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(false);
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      resolve(err.code === 'ECONNREFUSED');
    });
  });
}

/** True if pid is a live process (a zombie is not: a daemon's parent may never reap it). */
export function pidAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (err.code !== 'EPERM') return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

function tail(text, lines) {
  const all = text.split('\n');
  return all.slice(Math.max(0, all.length - lines - 1)).join('\n');
}

/** Runs a program; resolves {code, signal, stdout, stderr}. Kills it (by its pid) on timeout. */
export function run(file, args, { env = process.env, input, timeoutMs = 60_000, cwd = REPO } = {}) {
  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(file, args, { env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (err) {
      reject(err);
      return;
    }
    const out = [];
    const errOut = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => errOut.push(d));
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${file}: ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const res = {
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(errOut).toString('utf8'),
      };
      if (timedOut) res.stderr += `\n[harness] killed after ${timeoutMs} ms`;
      resolve(res);
    });
    child.stdin.on('error', () => {});
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

// ---------------------------------------------------------------------------------------------
// protobuf

const protoRoots = new Map();

/** Loads files of proto/ (default evalbus/v1/auth.proto) and their imports into one root, once
 * for each list, with field names as written. */
export function protoRoot(...files) {
  if (files.length === 0) files = ['evalbus/v1/auth.proto'];
  const key = files.join(' ');
  if (!protoRoots.has(key)) {
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) =>
      path.isAbsolute(target) ? target : path.join(PROTO_ROOT, target);
    protoRoots.set(key, root.load(files, { keepCase: true }));
  }
  return protoRoots.get(key);
}

export function decodeVerifyResponse(root, bytes) {
  const T = root.lookupType('evalbus.v1.VerifyResponse');
  const msg = T.decode(bytes);
  return T.toObject(msg, { enums: String, longs: Number, defaults: true, arrays: true });
}

// ---------------------------------------------------------------------------------------------
// the stack

const liveStacks = new Set();

function cleanupOnSignal(sig) {
  for (const s of liveStacks) s.downSync();
  process.exit(sig === 'SIGINT' ? 130 : 143);
}
process.once('SIGINT', cleanupOnSignal);
process.once('SIGTERM', cleanupOnSignal);
process.once('exit', () => {
  for (const s of liveStacks) s.downSync();
});

export class Stack {
  /**
   * opts.env: extra environment for scripts/stack and the services it starts (for example
   * { EVALBUS_OBJECT_STORE: 's3', EVALBUS_EXPORT_PART_SIZE: '65536' }).
   */
  constructor(name, opts = {}) {
    this.name = name;
    this.opts = opts;
    this.state = null;
    this.portBase = null;
    this.env = {};
    this.replicas = [];
    this.replicaCount = 0;
    this.upOutput = '';
    this.natsConn = null;
  }

  /** Environment for scripts/stack. */
  scriptEnv() {
    return {
      ...process.env,
      ...(this.opts.env ?? {}),
      EVALBUS_STATE_DIR: this.state,
      EVALBUS_PORT_BASE: String(this.portBase),
      EVALBUS_BIN_DIR: BIN_DIR,
    };
  }

  get url() {
    return this.env.EVALBUS_URL;
  }

  get authUrl() {
    return this.env.EVALBUS_AUTH_URL;
  }

  pidFile(part) {
    return path.join(this.state, 'run', `${part}.pid`);
  }

  /** Parts with a pid file in $STATE/run (nats, postgres, redis, nginx, auth, ...). */
  pidParts() {
    try {
      const found = fs.readdirSync(path.join(this.state, 'run'))
        .filter((f) => f.endsWith('.pid'))
        .map((f) => f.slice(0, -4));
      return [...new Set([...PID_PARTS, ...found])];
    } catch {
      return PID_PARTS;
    }
  }

  readPid(part) {
    try {
      const pid = Number.parseInt(fs.readFileSync(this.pidFile(part), 'utf8').trim(), 10);
      return Number.isInteger(pid) && pid > 0 ? pid : null;
    } catch {
      return null;
    }
  }

  async up() {
    for (const exe of ['evalbus', 'evalbus-auth']) {
      assert.ok(
        fs.existsSync(path.join(BIN_DIR, exe)),
        `${path.join(BIN_DIR, exe)} does not exist: build first or set EVALBUS_BIN_DIR`,
      );
    }
    assert.ok(fs.existsSync(STACK_SCRIPT), `${STACK_SCRIPT} does not exist`);
    this.portBase = await findFreePortBase();
    this.state = fs.mkdtempSync(path.join(os.tmpdir(), `evalbus-it-${this.name}-`));
    liveStacks.add(this);
    const res = await this.stackCmd('up', 180_000);
    this.upOutput = res.stdout + res.stderr;
    if (res.code !== 0) {
      this.dumpLogs(`scripts/stack up exited ${res.code}`);
      throw new Error(`scripts/stack up exited ${res.code} ${res.signal ?? ''}:\n${tail(this.upOutput, 40)}`);
    }
    this.env = this.readStackEnv();
    for (const k of STACK_ENV_REQUIRED) {
      assert.ok(this.env[k], `${this.state}/stack.env lacks ${k}`);
    }
    for (const k of ['EVALBUS_URL', 'EVALBUS_AUTH_URL']) {
      const u = new URL(this.env[k]);
      assert.ok(['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname), `${k} is on loopback: ${this.env[k]}`);
    }
    // scripts/stack up should return once everything is ready; allow a little slack anyway.
    const ready = await pollUntil(
      async () => {
        const r = await this.api('GET', '/readyz').catch(() => null);
        return r && r.status === 200 && r.body?.status === 'ready';
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    if (!ready.value) {
      this.dumpLogs('auth /readyz never answered 200 ready');
      throw new Error(`${this.authUrl}/readyz did not report ready within 30 s after scripts/stack up`);
    }
  }

  stackCmd(verb, timeoutMs = 120_000) {
    return run(STACK_SCRIPT, [verb], { env: this.scriptEnv(), timeoutMs });
  }

  readStackEnv() {
    const file = path.join(this.state, 'stack.env');
    const env = {};
    for (const raw of fs.readFileSync(file, 'utf8').split('\n')) {
      const line = raw.trim();
      if (!line || line.startsWith('#')) continue;
      const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
      if (!m) continue;
      let v = m[2];
      if ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'"))) {
        v = v.slice(1, -1);
      }
      env[m[1]] = v;
    }
    return env;
  }

  /** The stack's environment for the CLI and for replicas: stack.env on top of ours. */
  childEnv(extra = {}) {
    const env = { ...process.env, ...this.env, ...extra };
    if (!('EVALBUS_API_KEY' in extra)) delete env.EVALBUS_API_KEY;
    for (const [k, v] of Object.entries(extra)) if (v === undefined) delete env[k];
    return env;
  }

  async down() {
    if (!this.state) return;
    const problems = [];
    if (this.natsConn) {
      await this.natsConn.close().catch(() => {});
      this.natsConn = null;
    }
    for (const r of this.replicas) {
      if (r.exitCode === null) {
        r.proc.kill('SIGTERM');
        const done = await Promise.race([r.exited, sleep(5000, 'timeout')]);
        if (done === 'timeout') {
          problems.push(`auth replica pid ${r.pid} ignored SIGTERM for 5 s`);
          r.proc.kill('SIGKILL');
          await r.exited;
        }
      }
    }
    // Pid files go away with `down`: note the pids first, then check that they are gone.
    const pids = this.pidParts().map((part) => [part, this.readPid(part)]).filter(([, pid]) => pid);
    const res = await this.stackCmd('down', 90_000);
    if (res.code !== 0) problems.push(`scripts/stack down exited ${res.code}: ${tail(res.stdout + res.stderr, 20)}`);
    for (const [part, pid] of pids) {
      if (pidAlive(pid)) {
        problems.push(`${part} (pid ${pid}) still running after scripts/stack down`);
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
      }
    }
    if (problems.length) this.dumpLogs('scripts/stack down did not stop everything');
    this.removeState();
    if (problems.length) throw new Error(problems.join('\n'));
  }

  /** Last-resort cleanup from a signal or exit handler: synchronous, best effort. */
  downSync() {
    if (!this.state) return;
    for (const r of this.replicas) if (r.exitCode === null) r.proc.kill('SIGKILL');
    const pids = this.pidParts().map((part) => this.readPid(part)).filter(Boolean);
    spawnSync(STACK_SCRIPT, ['down'], { env: this.scriptEnv(), timeout: 60_000, stdio: 'ignore' });
    for (const pid of pids) {
      if (pidAlive(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
      }
    }
    this.removeState();
  }

  removeState() {
    liveStacks.delete(this);
    if (process.env.EVALBUS_TEST_KEEP_STATE === '1') {
      process.stderr.write(`[harness] kept state folder ${this.state}\n`);
    } else {
      // scripts/stack may keep the PostgreSQL cluster outside the state folder (a symlink to
      // /var/tmp/evalbus-pg-*) and its socket under /tmp/.evalbus-pg-*: those are ours too.
      const extra = [];
      try {
        const pg = path.join(this.state, 'pg');
        if (fs.lstatSync(pg).isSymbolicLink()) extra.push(fs.readlinkSync(pg));
      } catch {}
      const sock = this.env.EVALBUS_STACK_PG_SOCKET_DIR;
      if (sock && !sock.startsWith(this.state)) extra.push(sock);
      for (const dir of extra) {
        if (/^\/(var\/)?tmp\/\.?evalbus-pg-[0-9a-f]+$/.test(dir)) fs.rmSync(dir, { recursive: true, force: true });
      }
      fs.rmSync(this.state, { recursive: true, force: true });
    }
    this.state = null;
  }

  /** Prints the tail of every log under $STATE/logs to stderr. */
  dumpLogs(why) {
    if (!this.state) return;
    const out = [`\n===== [harness ${this.name}] ${why}; state ${this.state}, port base ${this.portBase} =====\n`];
    if (this.upOutput) out.push(`--- scripts/stack up output (tail) ---\n${tail(this.upOutput, 20)}\n`);
    const dir = path.join(this.state, 'logs');
    let files = [];
    try {
      files = fs.readdirSync(dir).filter((f) => f.endsWith('.log')).sort();
    } catch {
      out.push(`(no ${dir})\n`);
    }
    for (const f of files) {
      let text = '';
      try {
        text = fs.readFileSync(path.join(dir, f), 'utf8');
      } catch (err) {
        text = `(unreadable: ${err.message})`;
      }
      // The services' own logs matter most; the servers' logs get a shorter tail.
      const n = /^(auth|ingest|export|analytics|webhook)/.test(f) ? LOG_TAIL_LINES
        : f === 'postgres-initdb.log' ? 3 : 15;
      out.push(`--- ${f} (last ${n} lines) ---\n${tail(text, n)}\n`);
    }
    out.push(`===== end of logs =====\n`);
    process.stderr.write(out.join(''));
  }

  /** Wraps a test function so that a failure prints the service logs. */
  wrap(fn) {
    return async (t) => {
      try {
        return await fn(t);
      } catch (err) {
        this.dumpLogs(`test "${t?.name ?? '?'}" failed: ${String(err?.message ?? err).split('\n')[0]}`);
        throw err;
      }
    };
  }

  // -------------------------------------------------------------------------------------------
  // HTTP

  /** fetch() against the auth service (or opts.base). Returns {status, headers, body, text,
   * method, url}; body is the parsed JSON or null. opts: key (Bearer credential), body (JSON
   * value), raw (string/Buffer sent as is), contentType, headers, base. */
  async api(method, p, opts = {}) {
    const base = opts.base ?? this.authUrl;
    const url = base.replace(/\/$/, '') + p;
    const headers = { ...(opts.headers ?? {}) };
    if (opts.key) headers.authorization = `Bearer ${opts.key}`;
    let body;
    if (opts.raw !== undefined) {
      body = opts.raw;
      headers['content-type'] = opts.contentType ?? 'application/json';
    } else if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] = 'application/json';
    }
    const res = await fetch(url, {
      method,
      headers,
      body,
      signal: AbortSignal.timeout(opts.timeoutMs ?? 15_000),
    });
    const text = await res.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {}
    return { status: res.status, headers: res.headers, body: json, text, method, url };
  }

  // -------------------------------------------------------------------------------------------
  // CLI

  cli(args, { env = {}, input, timeoutMs = 60_000 } = {}) {
    return run(path.join(BIN_DIR, 'evalbus'), args, { env: this.childEnv(env), input, timeoutMs });
  }

  /** `evalbus admin bootstrap` of a new team; returns {key, email, password, team, stdout}. */
  async bootstrap(team, { email, password } = {}) {
    email ??= `owner@${team}.example.com`;
    password ??= randomPassword();
    const pwFile = path.join(this.state, `pw-${crypto.randomBytes(6).toString('hex')}`);
    fs.writeFileSync(pwFile, password + '\n', { mode: 0o600 });
    const res = await this.cli([
      'admin', 'bootstrap', '--team', team, '--email', email, '--password-file', pwFile,
    ]);
    assert.equal(res.code, 0, `evalbus admin bootstrap --team ${team} exited ${res.code}: ${res.stderr}`);
    const lines = res.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
    const key = lines[lines.length - 1];
    return { key, email, password, team, stdout: res.stdout, stderr: res.stderr, pwFile };
  }

  /** `evalbus admin set-tier`, then waits until whoami with key shows the tier (<= 5 s). */
  async setTier(team, tier, key) {
    const res = await this.cli(['admin', 'set-tier', '--team', team, '--tier', tier]);
    assert.equal(res.code, 0, `evalbus admin set-tier --team ${team} --tier ${tier} exited ${res.code}: ${res.stderr}`);
    if (key) {
      const seen = await pollUntil(async () => (await this.whoami(key)).team.tier === tier, {
        timeoutMs: 5000,
        intervalMs: 200,
      });
      assert.ok(seen.value, `whoami shows tier ${tier} within 5 s of set-tier`);
    }
  }

  /** Writes a password file in the state folder and returns its path. */
  passwordFile(password) {
    const f = path.join(this.state, `pw-${crypto.randomBytes(6).toString('hex')}`);
    fs.writeFileSync(f, password + '\n', { mode: 0o600 });
    return f;
  }

  // -------------------------------------------------------------------------------------------
  // common API steps (each asserts success)

  async whoami(key, base) {
    const r = await this.api('GET', '/api/v1/auth/whoami', { key, base });
    assertStatus(r, 200, 'whoami');
    return r.body;
  }

  async login(email, password, team, base) {
    const body = { email, password };
    if (team !== undefined) body.team = team;
    const r = await this.api('POST', '/api/v1/auth/login', { body, base });
    assertStatus(r, 200, `login ${email}`);
    return r.body;
  }

  async createKey(key, spec, base) {
    const r = await this.api('POST', '/api/v1/keys', { key, body: spec, base });
    assertStatus(r, 201, `create key ${JSON.stringify(spec)}`);
    assert.match(r.body.key, KEY_RE, 'created key has the documented shape');
    return r.body;
  }

  async revokeKey(key, id, base) {
    const r = await this.api('DELETE', `/api/v1/keys/${id}`, { key, base });
    assertStatus(r, 200, `revoke key ${id}`);
    return r.body;
  }

  /** Invites email with role into the caller's team and accepts it; returns
   * {user_id, email, password, token, invitation, accepted}. */
  async addMember(adminKey, role, { email, password } = {}) {
    email ??= `${role}-${crypto.randomBytes(4).toString('hex')}@example.com`;
    password ??= randomPassword();
    const inv = await this.api('POST', '/api/v1/invitations', { key: adminKey, body: { email, role } });
    assertStatus(inv, 201, `invite ${email} as ${role}`);
    const acc = await this.api('POST', '/api/v1/invitations/accept', {
      body: { token: inv.body.token, password },
    });
    assertStatus(acc, 200, `accept invitation for ${email}`);
    return { user_id: acc.body.user_id, email, password, token: inv.body.token, invitation: inv.body, accepted: acc.body };
  }

  // -------------------------------------------------------------------------------------------
  // NATS

  async nats() {
    if (!this.natsConn) {
      this.natsConn = await natsConnect({
        servers: this.env.EVALBUS_NATS_URL,
        name: `evalbus-it-${this.name}`,
        timeout: 5000,
      });
    }
    return this.natsConn;
  }

  /** Sends raw bytes to evalbus.v1.auth.verify and resolves the reply message. */
  async natsRequestRaw(bytes, timeoutMs = 3000) {
    const nc = await this.nats();
    return nc.request('evalbus.v1.auth.verify', bytes, { timeout: timeoutMs, noMux: true });
  }

  /** VerifyRequest{credential} over NATS; resolves the decoded VerifyResponse (plain object,
   * enums as names, int64 as numbers, defaults filled in). */
  async verifyOverNats(credential, { requestId, source = 'integration-test', timeoutMs = 3000 } = {}) {
    const root = await protoRoot();
    const Req = root.lookupType('evalbus.v1.VerifyRequest');
    const req = Req.encode(
      Req.create({ credential, request_id: requestId ?? crypto.randomUUID(), source }),
    ).finish();
    const msg = await this.natsRequestRaw(req, timeoutMs);
    return decodeVerifyResponse(root, msg.data);
  }

  // -------------------------------------------------------------------------------------------
  // /metrics

  /** The value of the metric `name` on a service's /metrics (base: the stack's ingest by
   * default), summed over its series (those whose labels include `label` when given); 0 when
   * it has none. */
  async metric(name, { base = this.env.EVALBUS_INGEST_URL, label = null } = {}) {
    const r = await this.api('GET', '/metrics', { base });
    assertStatus(r, 200, `${base}/metrics`);
    let sum = 0;
    for (const line of r.text.split('\n')) {
      const m = /^([a-z_]+)(?:\{([^}]*)\})?\s+([0-9.eE+-]+)$/.exec(line.trim());
      if (!m || m[1] !== name) continue;
      if (label && !(m[2] ?? '').includes(label)) continue;
      sum += Number(m[3]);
    }
    return sum;
  }

  // -------------------------------------------------------------------------------------------
  // PostgreSQL

  /** Runs sql with psql against the stack's database (EVALBUS_DATABASE_URL, the services' own
   * role) with row-level security lifted for this session (evalbus.system=on); resolves the rows
   * as arrays of strings (unaligned, tab-separated). Throws when psql fails. appName: the
   * session's application_name (psql's own by default). */
  async psql(sql, { timeoutMs = 30_000, appName } = {}) {
    const env = { ...process.env, PGOPTIONS: '-c evalbus.system=on', PGCONNECT_TIMEOUT: '5' };
    if (appName) env.PGAPPNAME = appName;
    const res = await run('psql', [...PSQL_FLAGS, '-d', this.env.EVALBUS_DATABASE_URL, '-c', sql], { env, timeoutMs });
    return psqlRows(res, 'psql', sql);
  }

  /** Takes a lock on table (mode: 'ACCESS EXCLUSIVE' by default, or another LOCK TABLE mode) in
   * a psql session of its own and holds it for ms; resolves once the lock is granted, with
   * { released }: a promise of the session's end. */
  async lockTable(table, ms, { mode = 'ACCESS EXCLUSIVE' } = {}) {
    const app = `test-locker-${crypto.randomBytes(4).toString('hex')}`;
    const pgMode = `${mode.toLowerCase().replace(/(^| )(\w)/g, (_, _s, c) => c.toUpperCase())}Lock`; // AccessShareLock
    const released = this.psql(`BEGIN; LOCK TABLE ${table} IN ${mode} MODE; SELECT pg_sleep(${ms / 1000}); COMMIT`,
      { appName: app, timeoutMs: ms + 30_000 });
    released.catch(() => {}); // awaited by the caller; a failure before then is seen there
    const granted = await pollUntil(async () => (await this.psql('SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a' +
      ` USING (pid) WHERE a.application_name = '${app}' AND l.mode = '${pgMode}' AND l.granted`))[0][0] !== '0',
    { timeoutMs: 5000, intervalMs: 50 });
    assert.ok(granted.value, `the lock on ${table} is taken`);
    return { released };
  }

  /** Runs sql with psql as the cluster's superuser (EVALBUS_STACK_PG_SUPERUSER over the socket,
   * peer authentication, taking that user's identity first when we are root, as scripts/stack
   * does): a session the services' role cannot see into. Resolves like psql(). */
  async psqlSuperuser(sql, { timeoutMs = 30_000, appName } = {}) {
    const su = this.env.EVALBUS_STACK_PG_SUPERUSER;
    const { port, pathname } = new URL(this.env.EVALBUS_DATABASE_URL);
    const args = [...PSQL_FLAGS, '-h', this.env.EVALBUS_STACK_PG_SOCKET_DIR, '-p', port, '-U', su, '-d', pathname.slice(1), '-c', sql];
    const env = { PATH: process.env.PATH, PGCONNECT_TIMEOUT: '5', ...(appName ? { PGAPPNAME: appName } : {}) };
    const asSu = process.getuid() === 0 && su !== 'root';
    const res = asSu ? await run('runuser', ['-u', su, '--', 'env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), 'psql', ...args], { timeoutMs })
      : await run('psql', args, { env, timeoutMs });
    return psqlRows(res, 'psql (superuser)', sql);
  }

  // -------------------------------------------------------------------------------------------
  // auth replicas

  /** Starts another evalbus-<name> (a service binary in BIN_DIR) with the stack's settings as
   * scripts/stack gives them to services, extraEnv on top, on a free port, and waits for GET
   * /readyz to answer 200. Stopped by down() like auth replicas. Returns {proc, pid, port, url,
   * exited, exitCode, logFile}. */
  async spawnService(name, extraEnv = {}) {
    const avoid = [[this.portBase, this.portBase + PORT_COUNT]];
    const port = await findFreePortBase(1, avoid);
    const n = ++this.replicaCount;
    const logDir = path.join(this.state, 'logs');
    fs.mkdirSync(logDir, { recursive: true });
    const logFile = path.join(logDir, `${name}-replica-${n}.log`);
    const fd = fs.openSync(logFile, 'a');
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('EVALBUS_')));
    Object.assign(env, {
      EVALBUS_NATS_URL: this.env.EVALBUS_NATS_URL,
      EVALBUS_DATABASE_URL: this.env.EVALBUS_DATABASE_URL,
      EVALBUS_REDIS_URL: this.env.EVALBUS_REDIS_URL,
      EVALBUS_OBJECT_STORE: this.env.EVALBUS_OBJECT_STORE,
      EVALBUS_HTTP_ADDR: '127.0.0.1',
      EVALBUS_HTTP_PORT: String(port),
      EVALBUS_LOG_LEVEL: process.env.EVALBUS_LOG_LEVEL ?? 'info',
      ...(name === 'auth' ? { EVALBUS_JWT_SECRET_FILE: this.env.EVALBUS_JWT_SECRET_FILE } : {}),
      ...extraEnv,
    });
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
    const proc = spawn(path.join(BIN_DIR, `evalbus-${name}`), [], { env, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    const replica = { proc, pid: proc.pid, port, url: `http://127.0.0.1:${port}`, logFile, exitCode: null, signal: null };
    replica.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        replica.exitCode = code ?? -1;
        replica.signal = signal;
        resolve({ code, signal });
      });
      proc.once('error', (err) => {
        replica.exitCode = -1;
        resolve({ code: -1, signal: null, error: err });
      });
    });
    this.replicas.push(replica);
    const ready = await pollUntil(
      async () => {
        if (replica.exitCode !== null) return 'exited';
        const r = await this.api('GET', '/readyz', { base: replica.url, timeoutMs: 2000 }).catch(() => null);
        return r && r.status === 200 ? 'ready' : null;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    if (ready.value !== 'ready') {
      throw new Error(
        `${name} replica on port ${port} ${ready.value === 'exited' ? `exited with ${replica.exitCode}` : 'not ready in 30 s'}:\n` +
          tail(fs.readFileSync(logFile, 'utf8'), 30),
      );
    }
    return replica;
  }

  /** Starts another evalbus-auth with the stack's settings on a free port and waits for
   * GET /readyz to answer 200. Returns {proc, pid, port, url, exited, exitCode, logFile}. */
  async spawnAuth(extraEnv = {}) {
    const avoid = [[this.portBase, this.portBase + PORT_COUNT]];
    const port = await findFreePortBase(1, avoid);
    const n = ++this.replicaCount;
    const logDir = path.join(this.state, 'logs');
    fs.mkdirSync(logDir, { recursive: true });
    const logFile = path.join(logDir, `auth-replica-${n}.log`);
    const fd = fs.openSync(logFile, 'a');
    // Our environment (PATH, sanitizer options, ...) without any EVALBUS_* setting of the
    // caller's, then the stack's settings as scripts/stack gives them to auth.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('EVALBUS_')));
    Object.assign(env, {
      EVALBUS_NATS_URL: this.env.EVALBUS_NATS_URL,
      EVALBUS_DATABASE_URL: this.env.EVALBUS_DATABASE_URL,
      EVALBUS_REDIS_URL: this.env.EVALBUS_REDIS_URL,
      EVALBUS_JWT_SECRET_FILE: this.env.EVALBUS_JWT_SECRET_FILE,
      EVALBUS_HTTP_ADDR: '127.0.0.1',
      EVALBUS_HTTP_PORT: String(port),
      EVALBUS_LOG_LEVEL: process.env.EVALBUS_LOG_LEVEL ?? 'info',
      ...extraEnv,
    });
    const proc = spawn(path.join(BIN_DIR, 'evalbus-auth'), [], { env, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    const replica = { proc, pid: proc.pid, port, url: `http://127.0.0.1:${port}`, logFile, exitCode: null, signal: null };
    replica.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        replica.exitCode = code ?? -1;
        replica.signal = signal;
        resolve({ code, signal });
      });
      proc.once('error', (err) => {
        replica.exitCode = -1;
        resolve({ code: -1, signal: null, error: err });
      });
    });
    this.replicas.push(replica);
    const ready = await pollUntil(
      async () => {
        if (replica.exitCode !== null) return 'exited';
        const r = await this.api('GET', '/readyz', { base: replica.url, timeoutMs: 2000 }).catch(() => null);
        return r && r.status === 200 ? 'ready' : null;
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    );
    if (ready.value !== 'ready') {
      throw new Error(
        `auth replica on port ${port} ${ready.value === 'exited' ? `exited with ${replica.exitCode}` : 'not ready in 20 s'}:\n` +
          tail(fs.readFileSync(logFile, 'utf8'), 30),
      );
    }
    return replica;
  }
}
