// The audit log: security-relevant actions are recorded for the team, with actor, target and
// request id, never with a secret; only the team's admins can read it.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  DOWN_TIMEOUT_MS,
  RFC3339_RE,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  keySecret,
  assertStatus,
  pollUntil,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('audit');
const T = { timeout: 60_000 };

async function auditEvents(key, limit = 200) {
  const r = await stack.api('GET', `/api/v1/audit?limit=${limit}`, { key });
  assertStatus(r, 200, 'read audit');
  assert.ok(Array.isArray(r.body.events), 'events is an array');
  return r;
}

/** Waits (<= 3 s) until the audit log holds an event matching pred; returns it. */
async function waitForEvent(key, pred, what) {
  const found = await pollUntil(async () => (await auditEvents(key)).body.events.find(pred), { timeoutMs: 3000, intervalMs: 150 });
  assert.ok(found.value, `audit event ${what} recorded within 3 s`);
  return found.value;
}

describe('audit log', () => {
  let owner;
  let ownerWho;
  let secrets;

  before(async () => {
    await stack.up();
    owner = await stack.bootstrap(uniqueSlug('audit'));
    ownerWho = await stack.whoami(owner.key);
    secrets = [owner.password];
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('records login, login_failed, key_created, key_revoked and denied with actor, target and request id', T, stack.wrap(async () => {
    const session = await stack.login(owner.email, owner.password);
    const wrongPassword = 'wrong-password-XYZ-123';
    secrets.push(wrongPassword);
    const failed = await stack.api('POST', '/api/v1/auth/login', { body: { email: owner.email, password: wrongPassword } });
    assertError(failed, 'unauthenticated');

    const create = await stack.api('POST', '/api/v1/keys', { key: owner.key, body: { name: 'audited', scopes: ['traces:read'], role: 'viewer' } });
    assertStatus(create, 201);
    const viewer = create.body;
    secrets.push(keySecret(viewer.key), keySecret(owner.key));
    const createRid = create.headers.get('x-request-id');

    const deniedRes = await stack.api('POST', '/api/v1/keys', { key: viewer.key, body: { name: 'nope', scopes: ['traces:read'] } });
    assertError(deniedRes, 'forbidden');

    const revoke = await stack.api('DELETE', `/api/v1/keys/${viewer.id}`, { key: owner.key });
    assertStatus(revoke, 200);

    const created = await waitForEvent(owner.key, (e) => e.action === 'key_created' && JSON.stringify(e).includes(viewer.id), 'key_created');
    assert.equal(created.request_id, createRid, 'key_created carries the request id of the call that made it');
    assert.equal(created.actor?.key_id, ownerWho.key_id, 'key_created names the acting key');
    const revoked = await waitForEvent(owner.key, (e) => e.action === 'key_revoked' && JSON.stringify(e).includes(viewer.id), 'key_revoked');
    assert.equal(revoked.request_id, revoke.headers.get('x-request-id'));
    const login = await waitForEvent(owner.key, (e) => e.action === 'login' && e.actor?.user_id === session.user_id, 'login');
    assert.ok(login);
    await waitForEvent(owner.key, (e) => e.action === 'login_failed', 'login_failed');
    const denied = await waitForEvent(owner.key, (e) => e.action === 'denied' && e.actor?.key_id === viewer.id, 'denied (viewer creating a key)');
    assert.equal(denied.request_id, deniedRes.headers.get('x-request-id'));

    const all = await auditEvents(owner.key);
    for (const e of all.body.events) {
      assert.ok(e.id, 'event id');
      assert.match(e.at, RFC3339_RE, `event at: ${e.at}`);
      assert.equal(typeof e.action, 'string');
      assert.ok(e.actor && typeof e.actor === 'object', 'event actor is an object');
      assert.ok('user_id' in e.actor && 'key_id' in e.actor, `actor has user_id and key_id: ${JSON.stringify(e.actor)}`);
      assert.ok('target' in e, 'event has target');
      assert.ok(e.detail && typeof e.detail === 'object' && !Array.isArray(e.detail), 'detail is an object');
      assert.ok('request_id' in e, 'event has request_id');
    }
    for (const s of secrets) assert.ok(!all.text.includes(s), 'no password or key secret in the audit log');
  }));

  it('records invitation_created, invitation_accepted, role_changed and member_removed', T, stack.wrap(async () => {
    const m = await stack.addMember(owner.key, 'member');
    secrets.push(m.password, m.token);
    await waitForEvent(owner.key, (e) => e.action === 'invitation_created' && JSON.stringify(e).includes(m.invitation.id), 'invitation_created');
    await waitForEvent(owner.key, (e) => e.action === 'invitation_accepted' && JSON.stringify(e).includes(m.user_id), 'invitation_accepted');
    assertStatus(await stack.api('PATCH', `/api/v1/users/${m.user_id}`, { key: owner.key, body: { role: 'viewer' } }), 200);
    const rc = await waitForEvent(owner.key, (e) => e.action === 'role_changed' && JSON.stringify(e).includes(m.user_id), 'role_changed');
    assert.ok(JSON.stringify(rc.detail).includes('viewer'), `role_changed detail names the new role: ${JSON.stringify(rc.detail)}`);
    assertStatus(await stack.api('DELETE', `/api/v1/users/${m.user_id}`, { key: owner.key }), 200);
    await waitForEvent(owner.key, (e) => e.action === 'member_removed' && JSON.stringify(e).includes(m.user_id), 'member_removed');
    const all = await auditEvents(owner.key);
    for (const s of secrets) assert.ok(!all.text.includes(s), 'no password, invitation token or key secret in the audit log');
  }));

  it('limit is honoured and a cursor is offered when more events exist', T, stack.wrap(async () => {
    const r = await stack.api('GET', '/api/v1/audit?limit=2', { key: owner.key });
    assertStatus(r, 200);
    assert.equal(r.body.events.length, 2, 'limit=2 gives two events (more exist)');
    assert.ok(r.body.next_cursor, 'next_cursor is set when more events exist');
    assertError(await stack.api('GET', '/api/v1/audit?limit=abc', { key: owner.key }), 'invalid_argument', 'limit=abc');
    assertError(await stack.api('GET', '/api/v1/audit?limit=-1', { key: owner.key }), 'invalid_argument', 'limit=-1');
  }));

  it('only the team\'s admins can read it', T, stack.wrap(async () => {
    const viewer = await stack.createKey(owner.key, { name: 'v', role: 'viewer', scopes: ['traces:read', 'analytics:read'] });
    const member = await stack.createKey(owner.key, { name: 'm', scopes: ['traces:read', 'traces:write'] });
    const adminNoScope = await stack.createKey(owner.key, { name: 'a0', role: 'admin', scopes: ['traces:read'] });
    const admin = await stack.createKey(owner.key, { name: 'a', role: 'admin', scopes: ['admin'] });
    assertError(await stack.api('GET', '/api/v1/audit?limit=5', { key: viewer.key }), 'forbidden', 'viewer');
    assertError(await stack.api('GET', '/api/v1/audit?limit=5', { key: member.key }), 'forbidden', 'member');
    assertError(await stack.api('GET', '/api/v1/audit?limit=5', { key: adminNoScope.key }), 'forbidden', 'admin role without the admin scope');
    assertError(await stack.api('GET', '/api/v1/audit?limit=5'), 'unauthenticated', 'no credential');
    const ok = await auditEvents(admin.key);
    assert.ok(ok.body.events.length > 0, 'an admin key reads the team\'s events');
    const adminUser = await stack.addMember(owner.key, 'admin');
    const s = await stack.login(adminUser.email, adminUser.password);
    assert.ok((await auditEvents(s.token)).body.events.length > 0, 'an admin session reads the team\'s events');

    // Another team's owner sees none of this team's events.
    const other = await stack.bootstrap(uniqueSlug('audit-b'));
    const theirs = await auditEvents(other.key);
    for (const id of [ownerWho.team.id, ownerWho.key_id, viewer.id, member.id, admin.id, owner.email]) {
      assert.ok(!theirs.text.includes(id), `team B's audit log mentions team A's ${id}`);
    }
  }));

  it('a path segment that is not UTF-8 is refused as bad input before a role check, whose audit row could not hold it', T, stack.wrap(async () => {
    const member = await stack.createKey(owner.key, { name: 'm-utf8', scopes: ['traces:read'] });
    const r = await stack.api('DELETE', '/api/v1/users/%FF', { key: member.key });
    assertError(r, 'invalid_argument', 'a member deleting a user named by bytes that are not UTF-8');
    assert.match(r.body.error.message, /path segment \{id\} is not valid UTF-8/);
    // a denial with a well-formed id is still a 403 and audited
    const id = crypto.randomUUID();
    assertError(await stack.api('DELETE', `/api/v1/users/${id}`, { key: member.key }), 'forbidden', 'a member deleting a user');
    await waitForEvent(owner.key, (e) => e.action === 'denied' && JSON.stringify(e).includes(id), 'the denial');
    const log = fs.readFileSync(path.join(stack.state, 'logs', 'auth.log'), 'utf8');
    assert.doesNotMatch(log, /invalid byte sequence/, 'no audit row failed on the bytes of a path');
  }));
});
