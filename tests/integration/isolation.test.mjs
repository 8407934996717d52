// Cross-team isolation: the team always comes from the credential, never from the body or the
// URL; another team's object id answers 404; lists show only the caller's team.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  DOWN_TIMEOUT_MS,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  assertStatus,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('isolation');
const T = { timeout: 60_000 };

async function makeTeam(prefix) {
  const o = await stack.bootstrap(uniqueSlug(prefix));
  await stack.setTier(o.team, 'enterprise', o.key); // this file is not about rate limits
  const me = await stack.whoami(o.key);
  const session = await stack.login(o.email, o.password);
  const key = await stack.createKey(o.key, { name: `${prefix}-key`, scopes: ['traces:read'] });
  const member = await stack.addMember(o.key, 'member');
  const inv = await stack.api('POST', '/api/v1/invitations', {
    key: o.key, body: { email: `pending-${prefix}-${Date.now()}@example.com`, role: 'viewer' },
  });
  assertStatus(inv, 201);
  return { ...o, id: me.team.id, ownerUserId: session.user_id, session, keyObj: key, member, inv: inv.body };
}

describe('cross-team isolation', () => {
  let A;
  let B;

  before(async () => {
    await stack.up();
    A = await makeTeam('ta');
    B = await makeTeam('tb');
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('team A\'s owner gets 404 on every route that names a team-B object', T, stack.wrap(async () => {
    for (const cred of [A.key, A.session.token]) {
      const cases = [
        ['DELETE', `/api/v1/users/${B.member.user_id}`, undefined],
        ['PATCH', `/api/v1/users/${B.member.user_id}`, { role: 'viewer' }],
        ['DELETE', `/api/v1/users/${B.ownerUserId}`, undefined],
        ['PATCH', `/api/v1/users/${B.ownerUserId}`, { role: 'member' }],
        ['DELETE', `/api/v1/keys/${B.keyObj.id}`, undefined],
        ['DELETE', `/api/v1/invitations/${B.inv.id}`, undefined],
      ];
      for (const [m, p, body] of cases) {
        const r = await stack.api(m, p, { key: cred, body });
        assertError(r, 'not_found', `${cred === A.key ? 'A key' : 'A session'}: ${m} ${p}`);
      }
    }
    // B's objects are untouched.
    const bme = await stack.whoami(B.keyObj.key);
    assert.equal(bme.team.id, B.id, 'B\'s key still works');
    const busers = (await stack.api('GET', '/api/v1/users', { key: B.key })).body.users;
    assert.equal(busers.find((u) => u.id === B.member.user_id)?.role, 'member', 'B\'s member keeps its role');
    assert.equal(busers.find((u) => u.id === B.ownerUserId)?.role, 'owner', 'B\'s owner keeps its role');
    const binv = (await stack.api('GET', '/api/v1/invitations', { key: B.key })).body.invitations;
    assert.ok(binv.some((i) => i.id === B.inv.id), 'B\'s invitation is still there');
    const bkeys = (await stack.api('GET', '/api/v1/keys', { key: B.key })).body.keys;
    const bk = bkeys.find((k) => k.id === B.keyObj.id);
    assert.ok(bk && !bk.revoked_at, 'B\'s key is not revoked');
  }));

  it('lists show only the caller\'s team', T, stack.wrap(async () => {
    const bIds = [B.id, B.member.user_id, B.ownerUserId, B.keyObj.id, B.inv.id, B.email, B.member.email, B.inv.email];
    for (const [p, field] of [['/api/v1/users', 'users'], ['/api/v1/keys', 'keys'], ['/api/v1/invitations', 'invitations'], ['/api/v1/audit?limit=200', 'events']]) {
      const r = await stack.api('GET', p, { key: A.key });
      assertStatus(r, 200, `A lists ${p}`);
      assert.ok(Array.isArray(r.body[field]) && r.body[field].length > 0, `${p} lists A's own ${field}`);
      // A's own audit log may name the B ids that A tried (and failed) to touch in the test
      // above; it must still not reveal B's team or B's people.
      const secret = field === 'events' ? [B.id, B.email, B.member.email, B.inv.email] : bIds;
      for (const id of secret) assert.ok(!r.text.includes(id), `${p} (A) mentions team B's ${id}`);
    }
    const users = (await stack.api('GET', '/api/v1/users', { key: A.key })).body.users;
    assert.deepEqual(
      users.map((u) => u.id).sort(),
      [A.ownerUserId, A.member.user_id].sort(),
      'A\'s users are exactly A\'s owner and member',
    );
    const cur = await stack.api('GET', '/api/v1/teams/current', { key: A.key });
    assert.equal(cur.body.id, A.id);
  }));

  it('a team id in the body is ignored, and one in the query string refused', T, stack.wrap(async () => {
    const body = { name: 'sneaky', scopes: ['traces:read'], team_id: B.id, team: B.id, team_slug: B.team };
    const refused = await stack.api('POST', `/api/v1/keys?team=${B.team}&team_id=${B.id}`, { key: A.key, body: { ...body, name: 'sneaky-query' } });
    assertError(refused, 'invalid_argument', 'a team in the query string');
    assert.match(refused.body.error.message, /unknown query parameter 'team'; this endpoint takes none/);
    const r = await stack.api('POST', '/api/v1/keys', { key: A.key, body });
    assertStatus(r, 201, 'create a key with B\'s team id in the body');
    const me = await stack.whoami(r.body.key);
    assert.equal(me.team.id, A.id, 'the key belongs to the caller\'s team');
    const bkeys = await stack.api('GET', '/api/v1/keys', { key: B.key });
    assert.ok(!bkeys.body.keys.some((k) => k.id === r.body.id), 'B does not see it');
    const akeys = await stack.api('GET', '/api/v1/keys', { key: A.key });
    assert.ok(!akeys.body.keys.some((k) => k.name === 'sneaky-query'), 'the refused request made no key');

    const email = `sneaky-${Date.now()}@example.com`;
    const inv = await stack.api('POST', '/api/v1/invitations', { key: A.key, body: { email, role: 'viewer', team_id: B.id, team: B.team } });
    assertStatus(inv, 201, 'invite with B\'s team id in the body');
    const binv = await stack.api('GET', '/api/v1/invitations', { key: B.key });
    assert.ok(!binv.body.invitations.some((i) => i.email === email), 'B does not see A\'s invitation');
    const acc = await stack.api('POST', '/api/v1/invitations/accept', { body: { token: inv.body.token, password: 'sneaky-password-1', team_id: B.id } });
    assertStatus(acc, 200);
    assert.equal(acc.body.team.id, A.id, 'accepting joins the inviting team');

    assertError(await stack.api('PATCH', `/api/v1/users/${A.member.user_id}?team_id=${B.id}`, { key: A.key, body: { role: 'viewer' } }),
      'invalid_argument', 'a team in the query string');
    const p = await stack.api('PATCH', `/api/v1/users/${A.member.user_id}`, { key: A.key, body: { role: 'viewer', team_id: B.id } });
    assertStatus(p, 200, 'A changes its own member');
    const busers = (await stack.api('GET', '/api/v1/users', { key: B.key })).body.users;
    assert.ok(!busers.some((u) => u.id === A.member.user_id), 'A\'s member did not land in B');

    const users = await stack.api('GET', `/api/v1/users?team=${B.team}&team_id=${B.id}`, { key: A.key });
    assertError(users, 'invalid_argument', 'a team in the query string does not switch teams');
    assert.ok(!users.text.includes(B.member.user_id));
    assertError(await stack.api('GET', `/api/v1/teams/current?team=${B.team}`, { key: A.key }), 'invalid_argument');
  }));

  it('a user cannot log in to a team it does not belong to', T, stack.wrap(async () => {
    const r = await stack.api('POST', '/api/v1/auth/login', { body: { email: B.email, password: B.password, team: A.team } });
    assert.ok(r.status !== 200 || r.body.team.id !== A.id, `B's owner got a session for team A: ${r.text}`);
    if (r.status !== 200) assert.ok([401, 403, 404].includes(r.status), `login to a foreign team: ${r.status} ${r.text}`);
  }));
});
