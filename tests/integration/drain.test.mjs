// Graceful shutdown: SIGTERM to an auth replica while logins (scrypt, tens of ms each) are in
// flight. Every request already sent gets its 200, the process exits 0 within 10 s, and the
// port refuses new connections afterwards.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';

import {
  DOWN_TIMEOUT_MS,
  Stack,
  UP_TIMEOUT_MS,
  connectionRefused,
  sleep,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('drain');
const LOGINS = 8;

/** POSTs a login on its own connection. Resolves {sent} once the request is flushed to the
 * socket, and `done` with {status, body, ms} or {error}. */
function loginRequest(port, email, password) {
  const payload = JSON.stringify({ email, password });
  let onSent;
  const sent = new Promise((r) => (onSent = r));
  const started = performance.now();
  const done = new Promise((resolve) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/api/v1/auth/login',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        timeout: 20_000,
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body = null;
          try {
            body = JSON.parse(text);
          } catch {}
          resolve({ status: res.statusCode, body, text, ms: performance.now() - started, at: performance.now() });
        });
        res.on('error', (error) => resolve({ error }));
      },
    );
    req.on('finish', () => onSent());
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (error) => {
      onSent();
      resolve({ error });
    });
    req.end(payload);
  });
  return { sent, done };
}

describe('SIGTERM drains in-flight requests', () => {
  let owner;

  before(async () => {
    await stack.up();
    owner = await stack.bootstrap(uniqueSlug('drain'));
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('in-flight logins all get 200, the replica exits 0 within 10 s, then refuses connections', { timeout: 90_000 }, stack.wrap(async (t) => {
    const replica = await stack.spawnAuth();
    // One login first, to know it works on this replica and how long one takes.
    const first = await loginRequest(replica.port, owner.email, owner.password).done;
    assert.equal(first.status, 200, `a login on the replica: ${first.error?.message ?? first.text}`);

    const reqs = Array.from({ length: LOGINS }, () => loginRequest(replica.port, owner.email, owner.password));
    await Promise.all(reqs.map((r) => r.sent));
    await sleep(30); // sent and on the server's side of the socket
    const tSignal = performance.now();
    replica.proc.kill('SIGTERM');

    const results = await Promise.all(reqs.map((r) => r.done));
    const finishedBeforeSignal = results.filter((r) => r.at !== undefined && r.at < tSignal).length;
    for (const [i, r] of results.entries()) {
      assert.ok(!r.error, `login #${i} sent before SIGTERM failed: ${r.error?.message}`);
      assert.equal(r.status, 200, `login #${i} sent before SIGTERM: ${r.status} ${r.text}`);
      assert.equal(typeof r.body?.token, 'string', `login #${i} has a token`);
    }
    t.diagnostic(`one login took ${Math.round(first.ms)} ms; ${LOGINS - finishedBeforeSignal} of ${LOGINS} were in flight at SIGTERM`);
    assert.ok(
      finishedBeforeSignal < LOGINS,
      `all ${LOGINS} logins finished before SIGTERM (first one took ${Math.round(first.ms)} ms): the test proved nothing`,
    );

    const exit = await Promise.race([replica.exited, sleep(10_000, 'timeout')]);
    assert.notEqual(exit, 'timeout', 'the replica did not exit within 10 s of SIGTERM');
    const tExit = performance.now() - tSignal;
    assert.equal(exit.signal, null, `exited by signal ${exit.signal}`);
    assert.equal(exit.code, 0, `exit code after SIGTERM: ${exit.code}`);
    assert.ok(tExit < 10_000, `exit took ${Math.round(tExit)} ms`);
    assert.ok(await connectionRefused(replica.port), `port ${replica.port} refuses connections after exit`);

    // The rest of the stack is unaffected.
    const s = await stack.login(owner.email, owner.password);
    assert.equal(s.role, 'owner');
    const v = await stack.verifyOverNats(owner.key);
    assert.equal(v.allowed, true, 'NATS verify still answered by the stack\'s auth');
  }));

  it('SIGTERM on an idle replica exits 0 promptly and leaves NATS verify working', { timeout: 60_000 }, stack.wrap(async () => {
    const replica = await stack.spawnAuth();
    const t0 = performance.now();
    replica.proc.kill('SIGTERM');
    const exit = await Promise.race([replica.exited, sleep(10_000, 'timeout')]);
    assert.notEqual(exit, 'timeout', 'an idle replica did not exit within 10 s');
    assert.equal(exit.code, 0);
    assert.ok(performance.now() - t0 < 10_000);
    for (let i = 0; i < 6; i++) {
      const v = await stack.verifyOverNats(owner.key, { timeoutMs: 2000 });
      assert.equal(v.allowed, true, `verify #${i} after the replica left the queue group`);
    }
  }));
});
