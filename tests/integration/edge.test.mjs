// Through the nginx edge (EVALBUS_URL) the auth routes behave as they do on the service itself:
// same status codes, JSON error bodies, X-Request-Id, Retry-After, body limit.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  DOWN_TIMEOUT_MS,
  KEY_RE,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  assertStatus,
  mapLimit,
  pollUntil,
  randomPassword,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('edge');
const T = { timeout: 60_000 };

describe('through the nginx edge', () => {
  let owner;
  let edge;
  const api = (m, p, o = {}) => stack.api(m, p, { ...o, base: edge });

  before(async () => {
    await stack.up();
    edge = stack.url;
    assert.notEqual(new URL(edge).port, new URL(stack.authUrl).port, 'EVALBUS_URL is the edge, not auth itself');
    owner = await stack.bootstrap(uniqueSlug('edge'));
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('healthz, login and whoami work through the edge', T, stack.wrap(async () => {
    assert.equal((await api('GET', '/healthz')).status, 200);
    const s = await stack.login(owner.email, owner.password, undefined, edge);
    assert.equal(s.role, 'owner');
    assert.equal(s.team.slug, owner.team);
    const k = await stack.whoami(owner.key, edge);
    assert.equal(k.team.slug, owner.team);
    const j = await stack.whoami(s.token, edge);
    assert.equal(j.user_id, s.user_id);
    const cur = await api('GET', '/api/v1/teams/current', { key: owner.key });
    assertStatus(cur, 200);
    assert.equal(cur.body.slug, owner.team);
  }));

  it('keys, users, invitations and audit work through the edge', T, stack.wrap(async () => {
    const created = await stack.createKey(owner.key, { name: 'edge-key', scopes: ['traces:read'] }, edge);
    assert.match(created.key, KEY_RE);
    const list = await api('GET', '/api/v1/keys', { key: owner.key });
    assertStatus(list, 200);
    assert.ok(list.body.keys.some((k) => k.id === created.id));
    assertStatus(await api('GET', '/api/v1/users', { key: owner.key }), 200);

    const email = `edge-${Date.now()}@example.com`;
    const inv = await api('POST', '/api/v1/invitations', { key: owner.key, body: { email, role: 'member' } });
    assertStatus(inv, 201);
    const password = randomPassword();
    const acc = await api('POST', '/api/v1/invitations/accept', { body: { token: inv.body.token, password } });
    assertStatus(acc, 200);
    const ms = await stack.login(email, password, undefined, edge);
    assert.equal(ms.role, 'member');
    const p = await api('PATCH', `/api/v1/users/${acc.body.user_id}`, { key: owner.key, body: { role: 'viewer' } });
    assertStatus(p, 200);
    assert.equal(p.body.role, 'viewer');

    await stack.whoami(created.key, edge);
    const rev = await api('DELETE', `/api/v1/keys/${created.id}`, { key: owner.key });
    assertStatus(rev, 200);
    const denied = await pollUntil(async () => (await api('GET', '/api/v1/auth/whoami', { key: created.key })).status === 401, {
      timeoutMs: 1000, intervalMs: 50,
    });
    assert.ok(denied.value, 'a key revoked through the edge is denied through the edge within 1 s');

    const audit = await api('GET', '/api/v1/audit?limit=50', { key: owner.key });
    assertStatus(audit, 200);
    assert.ok(audit.body.events.some((e) => e.action === 'key_revoked'), 'the audit log is readable through the edge');
  }));

  it('errors through the edge keep the JSON body and X-Request-Id', T, stack.wrap(async () => {
    assertError(await api('GET', '/api/v1/auth/whoami'), 'unauthenticated', 'edge: no credential');
    assertError(await api('GET', '/api/v1/auth/whoami', { key: 'garbage' }), 'unauthenticated', 'edge: garbage credential');
    assertError(await api('POST', '/api/v1/auth/login', { raw: '{"email":' }), 'invalid_argument', 'edge: malformed JSON');
    const big = JSON.stringify({ email: 'a@example.com', password: 'p'.repeat(70 * 1024) });
    assertError(await api('POST', '/api/v1/auth/login', { raw: big }), 'too_large', 'edge: 70 KiB body');
    const longHeader = await api('GET', '/api/v1/auth/whoami', { key: owner.key, headers: { 'x-note': 'n'.repeat(9 * 1024) } });
    assertError(longHeader, 'invalid_argument', 'edge: 9 KiB header');
    assert.match(longHeader.body.error.message, /request headers are too large/);
    assertError(await api('DELETE', '/api/v1/keys/00000000-0000-4000-8000-000000000000', { key: owner.key }), 'not_found', 'edge: unknown key id');
    const viewer = await stack.createKey(owner.key, { name: 'edge-viewer', role: 'viewer', scopes: ['traces:read'] }, edge);
    assertError(await api('GET', '/api/v1/audit?limit=5', { key: viewer.key }), 'forbidden', 'edge: viewer reads audit');
    assertError(
      await api('POST', '/api/v1/teams', { key: (await stack.login(owner.email, owner.password, undefined, edge)).token, body: { slug: owner.team, name: 'dup' } }),
      'conflict', 'edge: taken slug',
    );
  }));

  it('429 with Retry-After comes through the edge', T, stack.wrap(async () => {
    const o = await stack.bootstrap(uniqueSlug('edge-rl'));
    const results = await mapLimit(150, 10, () => api('GET', '/api/v1/auth/whoami', { key: o.key }));
    const limited = results.filter((r) => r.status === 429);
    assert.ok(limited.length >= 1, 'a free team gets 429 through the edge');
    assertError(limited[0], 'rate_limited', 'edge 429');
    const ra = limited[0].headers.get('retry-after');
    assert.match(ra ?? '', /^\d+$/);
    assert.ok(Number(ra) >= 1);
    const other = results.filter((r) => r.status !== 200 && r.status !== 429);
    assert.equal(other.length, 0, `edge answered only 200/429: ${other.slice(0, 2).map((r) => `${r.status} ${r.text.slice(0, 200)}`)}`);
  }));
});
