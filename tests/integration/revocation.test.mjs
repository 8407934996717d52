// Revocation and expiry across replicas: a revoked key is denied everywhere within 1 s (every
// auth replica and every cache, over HTTP and NATS); an expired key is denied.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { createInbox } from 'nats';

import {
  DOWN_TIMEOUT_MS,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  assertStatus,
  decodeVerifyResponse,
  pollUntil,
  protoRoot,
  rfc3339,
  sleep,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('revoke');
const T = { timeout: 90_000 };
const LIMIT_MS = 1000;
const POLL_MS = 50;

describe('revocation and expiry across auth replicas', () => {
  let owner;
  let replica;

  before(async () => {
    await stack.up();
    owner = await stack.bootstrap(uniqueSlug('rev'));
    // This file polls fast; keep the free tier's 20 req/s out of the way (rate_limit.test.mjs
    // tests limits).
    await stack.setTier(owner.team, 'enterprise', owner.key);
    replica = await stack.spawnAuth();
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  /** Uses key on both replicas over HTTP and a few times over NATS so every cache holds it. */
  async function warm(key) {
    for (const base of [stack.authUrl, replica.url]) {
      for (let i = 0; i < 2; i++) {
        const me = await stack.whoami(key, base);
        assert.equal(me.team.slug, owner.team);
      }
    }
    for (let i = 0; i < 8; i++) {
      const r = await stack.verifyOverNats(key);
      assert.equal(r.allowed, true, `NATS verify before revocation: ${JSON.stringify(r)}`);
    }
  }

  async function deniedOverHttp(base, key) {
    const r = await stack.api('GET', '/api/v1/auth/whoami', { key, base });
    if (r.status === 200) return false;
    assertError(r, 'unauthenticated', 'a revoked key');
    return true;
  }

  /** Revokes through `via`, then polls `other` over HTTP and NATS every 50 ms. */
  async function revokeAndWatch(via, other) {
    const k = await stack.createKey(owner.key, { name: `rev-${Date.now()}`, scopes: ['traces:read'] }, via);
    await warm(k.key);

    const r = await stack.api('DELETE', `/api/v1/keys/${k.id}`, { key: owner.key, base: via });
    assert.equal(r.status, 200, `revoke: ${r.text}`);
    assert.equal(r.body.id, k.id);
    assert.ok(r.body.revoked_at, 'revoked_at set');

    const [http, nats] = await Promise.all([
      pollUntil(() => deniedOverHttp(other, k.key), { timeoutMs: 3000, intervalMs: POLL_MS }),
      pollUntil(async () => {
        const v = await stack.verifyOverNats(k.key);
        return v.allowed ? false : v;
      }, { timeoutMs: 3000, intervalMs: POLL_MS }),
    ]);
    assert.ok(http.value, `the other replica (${other}) never denied the revoked key in 3 s`);
    assert.ok(http.elapsedMs < LIMIT_MS, `the other replica denied after ${Math.round(http.elapsedMs)} ms (limit ${LIMIT_MS})`);
    assert.ok(nats.value, 'NATS verify never denied the revoked key in 3 s');
    assert.ok(nats.elapsedMs < LIMIT_MS, `NATS denied after ${Math.round(nats.elapsedMs)} ms (limit ${LIMIT_MS})`);
    assert.equal(nats.value.reason, 'revoked', JSON.stringify(nats.value));

    // Once past the limit, nobody anywhere may still accept it: both HTTP replicas, and NATS
    // (queue group "auth" spreads these over both replicas).
    for (const base of [stack.authUrl, replica.url]) {
      assert.ok(await deniedOverHttp(base, k.key), `${base} denies the revoked key`);
    }
    for (let i = 0; i < 10; i++) {
      const v = await stack.verifyOverNats(k.key);
      assert.equal(v.allowed, false, `NATS verify #${i} after revocation: ${JSON.stringify(v)}`);
      assert.equal(v.reason, 'revoked');
    }
    return k;
  }

  it('revoked through the stack\'s auth: the second replica and NATS deny it within 1 s', T, stack.wrap(async () => {
    await revokeAndWatch(stack.authUrl, replica.url);
  }));

  it('revoked through the second replica: the stack\'s auth and NATS deny it within 1 s', T, stack.wrap(async () => {
    await revokeAndWatch(replica.url, stack.authUrl);
  }));

  it('a lookup that read the key before its revocation committed does not cache it', T, stack.wrap(async () => {
    const k = await stack.createKey(owner.key, { name: `race-${Date.now()}`, scopes: ['traces:read'] });
    const base = stack.authUrl;
    // The revocation waits on the audit log with the key's row locked; a first use of the key
    // reads it as not revoked and waits on that row (last_used_at), so it ends just after the
    // revocation commits.
    const lock = await stack.lockTable('auth.audit_log', 1500);
    const revoke = stack.api('DELETE', `/api/v1/keys/${k.id}`, { key: owner.key, base });
    await sleep(300);
    const use = stack.api('GET', '/api/v1/auth/whoami', { key: k.key, base });
    await lock.released;
    assertStatus(await revoke, 200, 'revoke');
    await use;
    await sleep(200);
    for (let i = 0; i < 3; i++) {
      assert.ok(await deniedOverHttp(base, k.key), 'the revoked key is denied after the revocation answered');
      await sleep(100);
    }
  }));

  it('a revoked key stays revoked: revoking again is harmless and it is still listed as revoked', T, stack.wrap(async () => {
    const k = await revokeAndWatch(stack.authUrl, replica.url);
    const again = await stack.api('DELETE', `/api/v1/keys/${k.id}`, { key: owner.key });
    assert.ok([200, 404].includes(again.status), `revoking twice: ${again.status} ${again.text}`);
    const still = await stack.verifyOverNats(k.key);
    assert.equal(still.allowed, false);
    const list = await stack.api('GET', '/api/v1/keys', { key: owner.key });
    const row = list.body.keys.find((x) => x.id === k.id);
    assert.ok(row, 'a revoked key is still listed');
    assert.ok(row.revoked_at, `a revoked key is listed with revoked_at: ${JSON.stringify(row)}`);
  }));

  it('both replicas serve evalbus.v1.auth.verify as one queue group: one reply per request', T, stack.wrap(async () => {
    const root = await protoRoot();
    const Req = root.lookupType('evalbus.v1.VerifyRequest');
    const nc = await stack.nats();
    const inbox = createInbox();
    const replies = [];
    const sub = nc.subscribe(inbox);
    const done = (async () => {
      for await (const m of sub) replies.push(decodeVerifyResponse(root, m.data));
    })();
    const n = 10;
    for (let i = 0; i < n; i++) {
      nc.publish('evalbus.v1.auth.verify', Req.encode(Req.create({ credential: owner.key, request_id: `qg-${i}`, source: 'test' })).finish(), { reply: inbox });
    }
    await nc.flush();
    await sleep(1000);
    sub.unsubscribe();
    await done;
    assert.equal(replies.length, n, `${n} requests with two replicas running got ${replies.length} replies`);
    assert.ok(replies.every((r) => r.allowed), 'every reply allows the owner key');
  }));

  it('an expired key is denied on every replica and over NATS', T, stack.wrap(async () => {
    const expiresMs = (Math.floor(Date.now() / 1000) + 4) * 1000;
    const k = await stack.createKey(owner.key, { name: 'short-lived', scopes: ['traces:read'], expires_at: rfc3339(expiresMs) });
    await warm(k.key);
    await sleep(Math.max(0, expiresMs - Date.now()) + 1100);
    for (const base of [stack.authUrl, replica.url]) {
      assert.ok(await deniedOverHttp(base, k.key), `${base} denies the expired key`);
    }
    for (let i = 0; i < 6; i++) {
      const v = await stack.verifyOverNats(k.key);
      assert.equal(v.allowed, false, `NATS verify of an expired key: ${JSON.stringify(v)}`);
      assert.equal(v.reason, 'expired');
    }
  }));

  it('a key created with an expiry in the past is refused or immediately expired', T, stack.wrap(async () => {
    const r = await stack.api('POST', '/api/v1/keys', {
      key: owner.key,
      body: { name: 'already-expired', scopes: ['traces:read'], expires_at: rfc3339(Date.now() - 60_000) },
    });
    if (r.status === 201) {
      const v = await stack.verifyOverNats(r.body.key);
      assert.equal(v.allowed, false, 'a key that expired before it was made is never allowed');
    } else {
      assertError(r, 'invalid_argument', 'expires_at in the past');
    }
  }));
});
