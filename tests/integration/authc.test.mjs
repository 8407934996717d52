// The auth client every service links (common/src/authc.c), driven through authc_probe against
// a real auth service: allowed answers are cached (the second round makes no NATS request),
// denials are not, and a revocation reaches the client's cache within 1 s.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  BIN_DIR, DOWN_TIMEOUT_MS, Stack, UP_TIMEOUT_MS, pidAlive, pollUntil, rfc3339, run, sleep, uniqueSlug,
} from './harness.mjs';

const stack = new Stack('authc');
const PROBE = path.join(BIN_DIR, 'authc_probe');
const T = { timeout: 60_000 };

function lines(text) {
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

describe('the auth client (eb_authc) with its cache', () => {
  let owner;

  before(async () => {
    await stack.up();
    owner = await stack.bootstrap(uniqueSlug('authc'));
    await stack.setTier(owner.team, 'enterprise', owner.key);
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('verifies over NATS once, then answers from its cache; denials are not cached', stack.wrap(async () => {
    const bogus = 'eb_aaaaaaaaaa_' + 'A'.repeat(43);
    const res = await run(PROBE, ['--nats', stack.env.EVALBUS_NATS_URL, 'verify', owner.key, bogus]);
    assert.equal(res.code, 0, res.stderr);
    const out = lines(res.stdout);
    assert.equal(out.length, 4, res.stdout);
    const [k1, b1, k2, b2] = out;
    assert.equal(k1.status, 'ok');
    assert.equal(k1.team, owner.team);
    assert.equal(k1.role, 'owner');
    assert.equal(k1.misses, 1, 'first answer came over NATS');
    assert.equal(b1.status, 'unauthenticated');
    assert.equal(b1.reason, 'unknown_key');
    assert.equal(k2.status, 'ok');
    assert.equal(k2.hits, 1, 'second answer for the key came from the cache');
    assert.equal(k2.misses, 2, 'no NATS request for the cached key');
    assert.equal(b2.status, 'unauthenticated', 'a denial is asked again, not cached');
    assert.equal(b2.misses, 3);
  }), T);

  it('drops a revoked key from its cache within 1 s', stack.wrap(async () => {
    const k = await stack.createKey(owner.key, { name: 'authc-watch', scopes: ['traces:read'] });
    const spawnedAt = Date.now();
    const child = spawn(PROBE, ['--nats', stack.env.EVALBUS_NATS_URL, '--ttl', '60000', 'watch', k.key, '6']);
    let out = '';
    let okSeenAt = 0;
    child.stdout.on('data', (d) => {
      out += d;
      if (!okSeenAt && out.includes('"ok"')) okSeenAt = Date.now();
    });
    const exited = new Promise((resolve) => child.once('close', resolve));
    // wait until the probe has the key cached and allowed
    for (let i = 0; i < 100 && !out.includes('"ok"'); i++) await sleep(50);
    assert.ok(out.includes('"ok"'), `probe saw the key allowed first: ${out}`);
    await sleep(300);
    const revokeStart = Date.now();
    await stack.revokeKey(owner.key, k.id);
    await exited;
    const events = lines(out);
    const denied = events.find((e) => e.status === 'unauthenticated');
    assert.ok(denied, `the probe saw the key denied: ${out}`);
    assert.equal(denied.reason, 'revoked');
    // t_ms counts from the probe's start, which came at most okSeenAt - (t_ms of the first ok
    // line): so this is an upper bound of the real lag
    const probeStartAtMost = okSeenAt - events[0].t_ms;
    assert.ok(probeStartAtMost >= spawnedAt - 5);
    const lag = probeStartAtMost + denied.t_ms - revokeStart;
    assert.ok(lag < 1000, `the cache let go ${lag} ms after the revocation was asked for`);
  }), T);

  it('does not cache an answer that was read before a revocation it saw', stack.wrap(async () => {
    const k = await stack.createKey(owner.key, { name: 'authc-race', scopes: ['traces:read'] });
    // The revocation holds the key's row while the audit log is locked; the probe's first
    // requests read the key as not revoked and wait on that row, so their answers (allowed)
    // arrive just after the revocation broadcast.
    const lock = await stack.lockTable('auth.audit_log', 1500);
    const revoke = stack.api('DELETE', `/api/v1/keys/${k.id}`, { key: owner.key, base: stack.authUrl });
    await sleep(300);
    const child = spawn(PROBE, ['--nats', stack.env.EVALBUS_NATS_URL, '--ttl', '60000', '--timeout', '5000', 'watch', k.key, '4']);
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    const exited = new Promise((resolve) => child.once('close', resolve));
    await lock.released;
    const r = await revoke;
    assert.equal(r.status, 200, r.text);
    await exited;
    const events = lines(out);
    assert.ok(events.length > 0, 'the probe answered');
    assert.equal(events[events.length - 1].status, 'unauthenticated', `the revoked key stayed cached: ${out}`);
  }), T);

  it('while the auth service is down, no cached answer outlives its key\'s expires_at', stack.wrap(async () => {
    const expiresAt = Math.ceil((Date.now() + 3000) / 1000) * 1000;
    const k = await stack.createKey(owner.key, { name: 'authc-expiring', scopes: ['traces:read'], expires_at: rfc3339(expiresAt) });
    const child = spawn(PROBE, ['--nats', stack.env.EVALBUS_NATS_URL, '--ttl', '60000', '--timeout', '300', 'watch', k.key, '8']);
    const spawnedAt = Date.now();
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    const exited = new Promise((resolve) => child.once('close', resolve));
    for (let i = 0; i < 100 && !out.includes('"ok"'); i++) await sleep(50);
    assert.ok(out.includes('"ok"'), `probe saw the key allowed first: ${out}`);

    const pid = stack.readPid('auth');
    assert.ok(pid, 'the auth service has a pid');
    process.kill(pid, 'SIGTERM');
    try {
      const gone = await pollUntil(() => !pidAlive(pid), { timeoutMs: 15_000, intervalMs: 50 });
      assert.ok(gone.value, 'the auth service stopped');
      assert.ok(Date.now() < expiresAt, 'the auth service stopped before the key expired');
      await exited;
      const events = lines(out);
      const after = events.find((e) => e.status !== 'ok' && spawnedAt + e.t_ms >= expiresAt - 100);
      assert.ok(after, `the key was still allowed after its expires_at while auth was down: ${out}`);
      assert.equal(after.status, 'unavailable', out);
    } finally {
      child.kill();
      const res = await stack.stackCmd('up', 120_000);
      assert.equal(res.code, 0, `scripts/stack up (again) exited ${res.code}: ${res.stdout}${res.stderr}`);
    }
  }), T);
});
