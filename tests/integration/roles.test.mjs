// Roles and scopes: viewer < member < admin < owner; admin routes need role >= admin AND the
// admin scope; a key's role and scopes are bounded by its creator's; the invitation flow.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  DOWN_TIMEOUT_MS,
  RFC3339_RE,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  assertStatus,
  randomPassword,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('roles');
const T = { timeout: 60_000 };

describe('roles, scopes and invitations', () => {
  let owner;
  let teamId;

  before(async () => {
    await stack.up();
    owner = await stack.bootstrap(uniqueSlug('roles'));
    teamId = (await stack.whoami(owner.key)).team.id;
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  const newKeyBody = () => ({ name: `k-${Date.now()}`, scopes: ['traces:read'] });

  it('a viewer key cannot create keys (403) but can list users', T, stack.wrap(async () => {
    const v = await stack.createKey(owner.key, {
      name: 'viewer', role: 'viewer', scopes: ['traces:read', 'exports:read', 'analytics:read'],
    });
    assert.equal(v.role, 'viewer');
    assertError(await stack.api('POST', '/api/v1/keys', { key: v.key, body: newKeyBody() }), 'forbidden', 'viewer key creates a key');
    assertError(await stack.api('GET', '/api/v1/keys', { key: v.key }), 'forbidden', 'viewer key lists keys');
    assertError(await stack.api('GET', '/api/v1/audit?limit=5', { key: v.key }), 'forbidden', 'viewer key reads audit');
    const users = await stack.api('GET', '/api/v1/users', { key: v.key });
    assertStatus(users, 200, 'viewer lists users');
    assert.ok(users.body.users.some((u) => u.email === owner.email));
  }));

  it('a viewer session cannot create keys, invite, change roles or read the audit log', T, stack.wrap(async () => {
    const viewer = await stack.addMember(owner.key, 'viewer');
    assert.equal(viewer.accepted.role, 'viewer');
    const s = await stack.login(viewer.email, viewer.password);
    assert.equal(s.role, 'viewer');
    const me = await stack.whoami(s.token);
    assert.equal(me.role, 'viewer');
    assert.ok(!me.scopes.includes('admin') && !me.scopes.includes('traces:write'), `viewer scopes: ${me.scopes}`);

    assertError(await stack.api('POST', '/api/v1/keys', { key: s.token, body: newKeyBody() }), 'forbidden', 'viewer session creates a key');
    assertError(
      await stack.api('POST', '/api/v1/invitations', { key: s.token, body: { email: 'x@example.com', role: 'viewer' } }),
      'forbidden', 'viewer session invites',
    );
    assertError(
      await stack.api('PATCH', `/api/v1/users/${viewer.user_id}`, { key: s.token, body: { role: 'owner' } }),
      'forbidden', 'viewer promotes itself',
    );
    assertError(await stack.api('GET', '/api/v1/audit?limit=5', { key: s.token }), 'forbidden', 'viewer session reads audit');
    assertStatus(await stack.api('GET', '/api/v1/users', { key: s.token }), 200, 'viewer session lists users');
  }));

  it('a member (key or session) cannot read the audit log or manage keys', T, stack.wrap(async () => {
    const mk = await stack.createKey(owner.key, { name: 'member', scopes: ['traces:read', 'traces:write', 'exports:write'] });
    assertError(await stack.api('GET', '/api/v1/audit?limit=5', { key: mk.key }), 'forbidden', 'member key reads audit');
    assertError(await stack.api('GET', '/api/v1/keys', { key: mk.key }), 'forbidden', 'member key lists keys');

    const m = await stack.addMember(owner.key, 'member');
    const s = await stack.login(m.email, m.password);
    assert.equal(s.role, 'member');
    assertError(await stack.api('GET', '/api/v1/audit?limit=5', { key: s.token }), 'forbidden', 'member session reads audit');
    assertError(await stack.api('POST', '/api/v1/keys', { key: s.token, body: newKeyBody() }), 'forbidden', 'member session creates a key');
    assertError(await stack.api('DELETE', `/api/v1/users/${m.user_id}`, { key: s.token }), 'forbidden', 'member removes a member');
  }));

  it('admin routes need role >= admin AND the admin scope', T, stack.wrap(async () => {
    const noScope = await stack.createKey(owner.key, { name: 'admin-no-scope', role: 'admin', scopes: ['traces:read'] });
    assertError(await stack.api('GET', '/api/v1/keys', { key: noScope.key }), 'forbidden', 'admin role without admin scope lists keys');
    assertError(await stack.api('POST', '/api/v1/keys', { key: noScope.key, body: newKeyBody() }), 'forbidden', 'admin role without admin scope creates a key');
    assertError(await stack.api('GET', '/api/v1/audit?limit=5', { key: noScope.key }), 'forbidden', 'admin role without admin scope reads audit');

    const admin = await stack.createKey(owner.key, { name: 'admin', role: 'admin', scopes: ['admin', 'traces:read'] });
    assertStatus(await stack.api('GET', '/api/v1/keys', { key: admin.key }), 200, 'admin key lists keys');
    assertStatus(await stack.api('GET', '/api/v1/audit?limit=5', { key: admin.key }), 200, 'admin key reads audit');
    const made = await stack.createKey(admin.key, newKeyBody());
    assert.equal(made.role, 'member', 'role defaults to member');
  }));

  it('a project-restricted key cannot administer the team or export: team-wide routes answer 403', T, stack.wrap(async () => {
    const restricted = await stack.createKey(owner.key, {
      name: 'web-admin', role: 'admin', scopes: ['admin', 'traces:read', 'exports:read', 'exports:write'], project: 'web',
    });
    const denied = async (method, p, body, what) => {
      const r = await stack.api(method, p, { base: stack.url, key: restricted.key, ...(body ? { body } : {}) }); // through the edge
      assertError(r, 'forbidden', what);
      assert.match(r.body.error.message, /restricted to project 'web'/, `${what}: says why`);
    };
    // it could otherwise make itself an unrestricted key
    await denied('POST', '/api/v1/keys', newKeyBody(), 'create a key');
    await denied('GET', '/api/v1/keys', null, 'list keys');
    await denied('GET', '/api/v1/audit?limit=5', null, 'read the audit log');
    await denied('GET', '/api/v1/users', null, "list the team's members (their e-mail addresses)");
    await denied('POST', '/api/v1/invitations', { email: 'x@example.com', role: 'member' }, 'invite');
    await denied('GET', '/api/v1/exports', null, 'list exports');
    await denied('POST', '/api/v1/exports', { format: 'jsonl' }, 'create an export');
    await denied('GET', '/api/v1/datasets/statistics', null, 'dataset statistics');
    await denied('GET', '/api/v1/export-schedules', null, 'list export schedules');
    // the traces API knows projects: the key reads its own
    assertStatus(await stack.api('GET', '/api/v1/traces?limit=1', { base: stack.url, key: restricted.key }), 200, 'traces of its project');
    assertStatus(await stack.api('GET', '/api/v1/keys', { key: owner.key }), 200, 'an unrestricted key administers');
  }));

  it('a key\'s role may not exceed its creator\'s, and scopes must fit the role', T, stack.wrap(async () => {
    const admin = await stack.createKey(owner.key, { name: 'admin2', role: 'admin', scopes: ['admin'] });
    const tooHigh = await stack.api('POST', '/api/v1/keys', { key: admin.key, body: { name: 'x', role: 'owner', scopes: ['admin'] } });
    assertError(tooHigh, ['forbidden', 'invalid_argument'], 'admin creates an owner key');
    const okAdmin = await stack.createKey(admin.key, { name: 'peer', role: 'admin', scopes: ['admin'] });
    assert.equal(okAdmin.role, 'admin');
    const ownerKey = await stack.createKey(owner.key, { name: 'owner2', role: 'owner', scopes: ['admin'] });
    assert.equal(ownerKey.role, 'owner');

    const cases = [
      { role: 'viewer', scopes: ['traces:write'] },
      { role: 'viewer', scopes: ['exports:write'] },
      { role: 'viewer', scopes: ['admin'] },
      { role: 'member', scopes: ['admin'] },
      { scopes: ['admin'] }, // role defaults to member
    ];
    for (const c of cases) {
      const r = await stack.api('POST', '/api/v1/keys', { key: owner.key, body: { name: 'x', ...c } });
      assertError(r, ['invalid_argument', 'forbidden'], `scopes ${c.scopes} for role ${c.role ?? '(default member)'}`);
    }
    assertError(
      await stack.api('POST', '/api/v1/keys', { key: owner.key, body: { name: 'x', scopes: ['traces:read', 'root'] } }),
      'invalid_argument', 'unknown scope',
    );
  }));

  it('only an owner grants or takes owner; the last owner cannot be demoted', T, stack.wrap(async () => {
    const a = await stack.addMember(owner.key, 'admin');
    const m = await stack.addMember(owner.key, 'member');
    const adminSession = await stack.login(a.email, a.password);
    assert.equal(adminSession.role, 'admin');
    const users = (await stack.api('GET', '/api/v1/users', { key: owner.key })).body.users;
    const ownerUser = users.find((u) => u.email === owner.email);

    assertError(
      await stack.api('PATCH', `/api/v1/users/${m.user_id}`, { key: adminSession.token, body: { role: 'owner' } }),
      'forbidden', 'admin grants owner',
    );
    assertError(
      await stack.api('PATCH', `/api/v1/users/${ownerUser.id}`, { key: adminSession.token, body: { role: 'member' } }),
      'forbidden', 'admin takes owner',
    );
    const toViewer = await stack.api('PATCH', `/api/v1/users/${m.user_id}`, { key: adminSession.token, body: { role: 'viewer' } });
    assertStatus(toViewer, 200, 'admin changes a member to viewer');
    assert.equal(toViewer.body.role, 'viewer');

    const promote = await stack.api('PATCH', `/api/v1/users/${m.user_id}`, { key: owner.key, body: { role: 'owner' } });
    assertStatus(promote, 200, 'owner grants owner');
    assert.equal(promote.body.role, 'owner');
    const demote = await stack.api('PATCH', `/api/v1/users/${m.user_id}`, { key: owner.key, body: { role: 'member' } });
    assertStatus(demote, 200, 'owner takes owner from a second owner');
    assertError(
      await stack.api('PATCH', `/api/v1/users/${ownerUser.id}`, { key: owner.key, body: { role: 'admin' } }),
      'conflict', 'demote the last owner',
    );
    const removeLast = await stack.api('DELETE', `/api/v1/users/${ownerUser.id}`, { key: owner.key });
    assertError(removeLast, ['conflict', 'forbidden'], 'remove the last owner');
  }));

  it('two owners demoting each other at the same time leave the team one owner', T, stack.wrap(async () => {
    const o = await stack.bootstrap(uniqueSlug('owners'));
    const second = await stack.addMember(o.key, 'owner');
    const s1 = await stack.login(o.email, o.password);
    const s2 = await stack.login(second.email, second.password);
    const first = (await stack.api('GET', '/api/v1/users', { key: o.key })).body.users.find((u) => u.email === o.email);
    assert.equal((await stack.whoami(s1.token)).role, 'owner');
    assert.equal((await stack.whoami(s2.token)).role, 'owner');

    // Both changes read the owner count before either commits: the audit row (written last, in
    // the same transaction) waits for the lock.
    const lock = await stack.lockTable('auth.audit_log', 2000);
    const [a, b] = await Promise.all([
      stack.api('PATCH', `/api/v1/users/${second.user_id}`, { key: s1.token, body: { role: 'member' } }),
      stack.api('PATCH', `/api/v1/users/${first.id}`, { key: s2.token, body: { role: 'member' } }),
    ]);
    await lock.released;
    const statuses = [a.status, b.status].sort();
    assert.deepEqual(statuses, [200, 409], `one demotion succeeds, the other is refused: ${a.text} ${b.text}`);
    const owners = (await stack.api('GET', '/api/v1/users', { key: o.key })).body.users.filter((u) => u.role === 'owner');
    assert.equal(owners.length, 1, `owners left: ${JSON.stringify(owners)}`);
  }));

  it('invitation flow: create, list without tokens, accept, login; used/unknown/deleted tokens fail', T, stack.wrap(async () => {
    const email = `invitee-${Date.now()}@example.com`;
    const inv = await stack.api('POST', '/api/v1/invitations', { key: owner.key, body: { email, role: 'member' } });
    assertStatus(inv, 201, 'create invitation');
    for (const f of ['id', 'token', 'email', 'role', 'expires_at']) assert.ok(inv.body[f], `invitation has ${f}`);
    assert.equal(inv.body.email, email);
    assert.equal(inv.body.role, 'member');
    assert.match(inv.body.expires_at, RFC3339_RE);
    assert.ok(Date.parse(inv.body.expires_at) > Date.now(), 'expires in the future');

    const list = await stack.api('GET', '/api/v1/invitations', { key: owner.key });
    assertStatus(list, 200);
    const row = list.body.invitations.find((i) => i.id === inv.body.id);
    assert.ok(row, 'the invitation is listed');
    assert.equal(row.email, email);
    assert.ok(!('token' in row), 'the list has no token field');
    assert.ok(!list.text.includes(inv.body.token), 'the list never shows a token');

    const password = randomPassword();
    const shortPw = await stack.api('POST', '/api/v1/invitations/accept', { body: { token: inv.body.token, password: 'short' } });
    assertError(shortPw, 'invalid_argument', 'password shorter than 8');
    const acc = await stack.api('POST', '/api/v1/invitations/accept', { body: { token: inv.body.token, password } });
    assertStatus(acc, 200, 'accept');
    assert.ok(acc.body.user_id);
    assert.equal(acc.body.team.id, teamId);
    assert.equal(acc.body.team.slug, owner.team);
    assert.equal(acc.body.role, 'member');

    const s = await stack.login(email, password);
    assert.equal(s.user_id, acc.body.user_id);
    assert.equal(s.role, 'member');
    assert.equal(s.team.id, teamId);
    const users = await stack.api('GET', '/api/v1/users', { key: owner.key });
    const u = users.body.users.find((x) => x.id === acc.body.user_id);
    assert.ok(u, 'the new user is listed');
    assert.equal(u.email, email);
    assert.equal(u.role, 'member');

    const used = await stack.api('POST', '/api/v1/invitations/accept', { body: { token: inv.body.token, password } });
    assertError(used, ['not_found', 'invalid_argument'], 'a used token');
    const unknown = await stack.api('POST', '/api/v1/invitations/accept', { body: { token: 'no-such-token-0123456789', password } });
    assertError(unknown, ['not_found', 'invalid_argument'], 'an unknown token');

    const inv2 = await stack.api('POST', '/api/v1/invitations', { key: owner.key, body: { email: `gone-${Date.now()}@example.com`, role: 'viewer' } });
    assertStatus(inv2, 201);
    const del = await stack.api('DELETE', `/api/v1/invitations/${inv2.body.id}`, { key: owner.key });
    assertStatus(del, 200, 'delete invitation');
    const list2 = await stack.api('GET', '/api/v1/invitations', { key: owner.key });
    assert.ok(!list2.body.invitations.some((i) => i.id === inv2.body.id), 'a deleted invitation is not listed');
    const accDeleted = await stack.api('POST', '/api/v1/invitations/accept', { body: { token: inv2.body.token, password } });
    assertError(accDeleted, ['not_found', 'invalid_argument'], 'a deleted invitation\'s token');
    assertError(
      await stack.api('DELETE', '/api/v1/invitations/00000000-0000-4000-8000-000000000000', { key: owner.key }),
      'not_found', 'delete an unknown invitation',
    );
  }));

  it('invitations: role and e-mail are checked, members cannot invite, only owners invite owners', T, stack.wrap(async () => {
    assertError(
      await stack.api('POST', '/api/v1/invitations', { key: owner.key, body: { email: 'x@example.com', role: 'emperor' } }),
      'invalid_argument', 'unknown role',
    );
    assertError(
      await stack.api('POST', '/api/v1/invitations', { key: owner.key, body: { email: 'not-an-email', role: 'member' } }),
      'invalid_argument', 'not an e-mail address',
    );
    const a = await stack.addMember(owner.key, 'admin');
    const as = await stack.login(a.email, a.password);
    assertStatus(
      await stack.api('POST', '/api/v1/invitations', { key: as.token, body: { email: `by-admin-${Date.now()}@example.com`, role: 'member' } }),
      201, 'an admin invites a member',
    );
    assertError(
      await stack.api('POST', '/api/v1/invitations', { key: as.token, body: { email: `o-${Date.now()}@example.com`, role: 'owner' } }),
      'forbidden', 'an admin invites an owner',
    );
    const m = await stack.addMember(owner.key, 'member');
    const ms = await stack.login(m.email, m.password);
    assertError(
      await stack.api('POST', '/api/v1/invitations', { key: ms.token, body: { email: 'y@example.com', role: 'viewer' } }),
      'forbidden', 'a member invites',
    );
    assertError(await stack.api('GET', '/api/v1/invitations', { key: ms.token }), 'forbidden', 'a member lists invitations');
  }));
});
