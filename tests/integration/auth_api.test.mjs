// The auth service's HTTP API, straight to evalbus-auth: health, readiness, metrics, login and
// its JWT, whoami, teams, users and keys.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  BIN_DIR,
  DOWN_TIMEOUT_MS,
  RFC3339_RE,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  keySecret,
  assertStatus,
  decodeJwt,
  sleep,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('api');
const T = { timeout: 60_000 };
const ALL_SCOPES = ['traces:write', 'traces:read', 'exports:write', 'exports:read', 'analytics:read', 'admin'];

describe('auth HTTP API', () => {
  let owner; // bootstrap result
  let session; // login response of the owner

  before(async () => {
    await stack.up();
    owner = await stack.bootstrap(uniqueSlug('api'));
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('GET /healthz answers 200 {"status":"ok"} with a fresh X-Request-Id each time', T, stack.wrap(async () => {
    const a = await stack.api('GET', '/healthz');
    const b = await stack.api('GET', '/healthz');
    assertStatus(a, 200);
    assert.deepEqual(a.body, { status: 'ok' });
    assert.notEqual(a.headers.get('x-request-id'), b.headers.get('x-request-id'), 'request ids are unique');
  }));

  it('GET /readyz is ready with postgres, nats and redis all ok', T, stack.wrap(async () => {
    const r = await stack.api('GET', '/readyz');
    assertStatus(r, 200);
    assert.equal(r.body.status, 'ready');
    for (const dep of ['postgres', 'nats', 'redis']) {
      assert.equal(r.body.checks?.[dep]?.ok, true, `checks.${dep}.ok: ${r.text}`);
    }
  }));

  // What a login, a query or the audit row of a refused request waits on (the password hash, a
  // lock) holds up its own request only: the loop answers health checks and cached credentials
  // meanwhile.
  const viewerSends = async () => {
    const made = await stack.api('POST', '/api/v1/keys', { key: owner.key, body: { name: 'refused', scopes: ['traces:read'], role: 'viewer' } });
    assertStatus(made, 201);
    assertStatus(await stack.api('GET', '/api/v1/auth/whoami', { key: made.body.key }), 200, 'the viewer key is verified (and cached)');
    return () => stack.api('POST', '/api/v1/keys', { key: made.body.key, body: { name: 'nope', scopes: ['traces:read'] } });
  };
  for (const [what, table, prepare, status] of [
    ['a query', 'auth.audit_log', async () => () => stack.api('GET', '/api/v1/audit?limit=1', { key: owner.key }), 200],
    ['a login', 'auth.users', async () => () => stack.api('POST', '/api/v1/auth/login', { body: { email: owner.email, password: owner.password } }), 200],
    ['a request refused for its role (its audit row)', 'auth.audit_log', viewerSends, 403],
  ]) {
    it(`${what} waiting on a lock holds up only itself: health checks and other requests go on`, T, stack.wrap(async () => {
      assertStatus(await stack.api('GET', '/api/v1/auth/whoami', { key: owner.key }), 200, 'the key is verified (and cached)');
      const send = await prepare();
      const order = [];
      const { released } = await stack.lockTable(table, 3000);
      const locker = released.then(() => order.push('lock released'));
      const blocked = send().then((r) => { order.push('blocked'); return r; });
      await sleep(200); // it waits on the lock now
      assertStatus(await stack.api('GET', '/healthz'), 200, 'healthz answers');
      order.push('healthz');
      assertStatus(await stack.api('GET', '/api/v1/auth/whoami', { key: owner.key }), 200, 'whoami answers');
      order.push('whoami');
      const r = await blocked;
      assertStatus(r, status, `${what} answers once the lock is gone`);
      await locker;
      assert.deepEqual(order.slice(0, 2), ['healthz', 'whoami'],
        `the health check and whoami were answered while ${what} waited (order: ${order.join(', ')})`);
      if (status === 403) {
        // the refusal's audit row is written before its answer: listed at once
        const log = await stack.api('GET', '/api/v1/audit?action=denied&limit=20', { key: owner.key });
        assertStatus(log, 200);
        assert.ok(log.body.events.some((e) => e.request_id === r.headers.get('x-request-id')),
          'the denied row of the refused request is there when its 403 is');
      }
    }));
  }

  it('a credential looked up in PostgreSQL is verified off the loop: health checks and cached keys go on while the lookup waits', T, stack.wrap(async () => {
    const fresh = await stack.api('POST', '/api/v1/keys', { key: owner.key, body: { name: 'uncached', scopes: ['traces:read'] } });
    assertStatus(fresh, 201);
    assertStatus(await stack.api('GET', '/api/v1/auth/whoami', { key: owner.key }), 200, 'the owner key is cached');
    const order = [];
    const { released } = await stack.lockTable('auth.api_keys', 3000);
    const locker = released.then(() => order.push('lock released'));
    // never verified yet: its lookup waits for the lock
    const blocked = stack.api('GET', '/api/v1/auth/whoami', { key: fresh.body.key }).then((r) => { order.push('uncached'); return r; });
    await sleep(200);
    assertStatus(await stack.api('GET', '/healthz'), 200, 'healthz answers');
    order.push('healthz');
    assertStatus(await stack.api('GET', '/api/v1/auth/whoami', { key: owner.key }), 200, 'a cached key answers');
    order.push('cached');
    const r = await blocked;
    assertStatus(r, 200, 'the new key is verified once the lock is gone');
    assert.equal(r.body.key_id, fresh.body.id);
    await locker;
    assert.deepEqual(order.slice(0, 2), ['healthz', 'cached'],
      `the health check and the cached key were answered while the lookup waited (order: ${order.join(', ')})`);
  }));

  it('a query past query-timeout is stopped with 504 timeout and frees its API thread', T, stack.wrap(async () => {
    const replica = await stack.spawnService('auth', { EVALBUS_QUERY_TIMEOUT: '1s' });
    try {
      const { released } = await stack.lockTable('auth.audit_log', 3000);
      // a 504, not the 200 it would get once the lock is released after 3 s
      const r = await stack.api('GET', '/api/v1/audit?limit=1', { base: replica.url, key: owner.key });
      assertError(r, 'timeout', 'a listing waiting on the lock past 1 s');
      assert.match(r.body.error.message, /query-timeout/, 'the message names the setting');
      await released;
      assertStatus(await stack.api('GET', '/api/v1/audit?limit=1', { base: replica.url, key: owner.key }), 200, 'the same listing once the lock is gone');
    } finally {
      replica.proc.kill('SIGTERM');
      await replica.exited;
    }
  }));

  it('invitation acceptance waiting on a lock past query-timeout is stopped with 504 timeout', T, stack.wrap(async () => {
    const replica = await stack.spawnService('auth', { EVALBUS_QUERY_TIMEOUT: '1s' });
    try {
      const { released } = await stack.lockTable('auth.invitations', 3000);
      const t0 = Date.now();
      // a 504 after 1 s, not the 404 (no such invitation) it would get once the lock is released
      const r = await stack.api('POST', '/api/v1/invitations/accept', { base: replica.url, body: { token: 'no-such-token', password: 'correct horse battery' } });
      assertError(r, 'timeout', `an acceptance waiting on the lock past 1 s (${Date.now() - t0} ms)`);
      await released;
      assertError(await stack.api('POST', '/api/v1/invitations/accept', { base: replica.url, body: { token: 'no-such-token', password: 'correct horse battery' } }),
        'not_found', 'the same acceptance once the lock is gone');
    } finally {
      replica.proc.kill('SIGTERM');
      await replica.exited;
    }
  }));

  it('an answer finished after the loop ended (SIGTERM while its query waited) is written out whole before the process exits', T, stack.wrap(async () => {
    // about 12 MB of audit events for one listing: more than the sockets take at once
    const team = (await stack.whoami(owner.key)).team.id;
    await stack.psql(`INSERT INTO auth.audit_log (team_id, action, target, detail) SELECT '${team}', 'bulk_test', 't' || i,` +
      ` jsonb_build_object('pad', repeat('x', 12000)) FROM generate_series(1, 1000) i`);
    const replica = await stack.spawnService('auth', { EVALBUS_SHUTDOWN_GRACE: '1s' });
    const { released } = await stack.lockTable('auth.audit_log', 3000);
    const answer = stack.api('GET', '/api/v1/audit?limit=1000', { base: replica.url, key: owner.key, timeoutMs: 30_000 });
    await sleep(300); // the listing waits on the lock
    replica.proc.kill('SIGTERM'); // the drain gives up after 1 s; the answer comes after the lock
    const r = await answer;
    await released;
    const exit = await replica.exited;
    assert.equal(exit.code, 0, `the replica exits cleanly (${JSON.stringify(exit)})`);
    assertStatus(r, 200, 'the listing');
    assert.ok(r.text.length > 10_000_000, `the whole answer (${r.text.length} bytes)`);
    assert.equal(r.body.events.length, 1000, 'every event of the page');
  }));

  it('an answer its client cut off mid-write does not hold up a later shutdown', T, stack.wrap(async () => {
    // about 12 MB of audit events: more than the sockets take at once, so the client can go away
    // while the server still writes (the answer then never completes; the connection closes)
    const team = (await stack.whoami(owner.key)).team.id;
    await stack.psql(`INSERT INTO auth.audit_log (team_id, action, target, detail) SELECT '${team}', 'bulk_cut', 't' || i,` +
      ` jsonb_build_object('pad', repeat('x', 12000)) FROM generate_series(1, 1000) i`);
    const replica = await stack.spawnService('auth', { EVALBUS_SHUTDOWN_DELAY: '0s' });
    const sock = net.connect(replica.port, '127.0.0.1');
    sock.on('error', () => {});
    await new Promise((resolve) => sock.once('connect', resolve));
    let got = 0;
    const cut = new Promise((resolve) => sock.on('data', (d) => {
      got += d.length;
      if (got > 100_000) {
        sock.destroy();
        resolve();
      }
    }));
    sock.write(`GET /api/v1/audit?action=bulk_cut&limit=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${owner.key}\r\n\r\n`);
    await cut;
    // the server sees the connection reset once it writes again; then a kept-alive one is answered
    assertStatus(await stack.api('GET', '/api/v1/audit?limit=1', { base: replica.url, key: owner.key }), 200);
    await sleep(500);
    replica.proc.kill('SIGTERM');
    const exit = await replica.exited;
    assert.equal(exit.code, 0, `the replica exits cleanly (${JSON.stringify(exit)})`);
    const log = fs.readFileSync(replica.logFile, 'utf8');
    assert.doesNotMatch(log, /not written out whole/, 'the flush at shutdown waited for no answer: the cut one was not still counted');
  }));

  it('GET /metrics is Prometheus text with evalbus_http_requests_total', T, stack.wrap(async () => {
    await stack.api('GET', '/healthz');
    const r = await stack.api('GET', '/metrics');
    assertStatus(r, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain/);
    assert.match(r.text, /^# TYPE evalbus_http_requests_total counter$/m);
    assert.match(r.text, /^evalbus_http_requests_total(\{[^}]*\})? \d+(\.\d+)?(e[+-]?\d+)?$/m);
  }));

  it('login returns an HS256 JWT with the documented claims', T, stack.wrap(async () => {
    const before = Math.floor(Date.now() / 1000);
    session = await stack.login(owner.email, owner.password);
    assert.equal(typeof session.token, 'string');
    assert.equal(typeof session.user_id, 'string');
    assert.ok(session.user_id.length > 0);
    assert.equal(session.team.slug, owner.team);
    assert.equal(typeof session.team.id, 'string');
    assert.equal(session.role, 'owner');
    assert.match(session.expires_at, RFC3339_RE);

    const jwt = decodeJwt(session.token);
    assert.equal(jwt.header.alg, 'HS256');
    const c = jwt.payload;
    for (const claim of ['iss', 'aud', 'exp', 'iat', 'sub', 'team', 'role']) {
      assert.ok(c[claim] !== undefined && c[claim] !== '', `JWT claim ${claim} present: ${JSON.stringify(c)}`);
    }
    assert.equal(c.sub, session.user_id);
    assert.equal(c.team, session.team.id);
    assert.equal(c.role, 'owner');
    assert.ok(c.iat >= before - 5 && c.iat <= Math.ceil(Date.now() / 1000) + 5, `iat is now: ${c.iat}`);
    assert.ok(c.exp > c.iat, 'exp after iat');
    assert.ok(Math.abs(Date.parse(session.expires_at) / 1000 - c.exp) <= 1, 'expires_at matches exp');
  }));

  it('logins are limited per email and per client; behind the edge the client is the one X-Real-IP names', T, stack.wrap(async () => {
    // 20 attempts at once (a bucket of 20, one more every 2 s); the loopback peer is a trusted
    // proxy by default, so the X-Real-IP of each request is its client
    const tag = crypto.randomBytes(4).toString('hex');
    const ip = (n) => `198.51.100.${n}`;
    const login = (email, realIp, base) => stack.api('POST', '/api/v1/auth/login', {
      base, headers: { 'x-real-ip': realIp }, body: { email, password: 'definitely-not-it' },
    });
    for (let i = 0; i < 20; i++) assertError(await login(`ip-${tag}-${i}@example.com`, ip(7)), 'unauthenticated', `attempt ${i}`);
    const limited = await login(`ip-${tag}-x@example.com`, ip(7));
    assertError(limited, 'rate_limited', 'the 21st attempt of one client');
    assert.ok(Number(limited.headers.get('retry-after')) >= 1, 'Retry-After');
    assertError(await login(`ip-${tag}-y@example.com`, ip(8)), 'unauthenticated', 'another client goes on');
    for (let i = 0; i < 20; i++) assertError(await login(`one-${tag}@example.com`, ip(20 + i)), 'unauthenticated', `email attempt ${i}`);
    assertError(await login(`one-${tag}@example.com`, ip(60)), 'rate_limited', 'the 21st attempt for one email, from a new client');
    // a peer that is no trusted proxy: its X-Real-IP is its own word, ignored (the access log
    // names the peer)
    const replica = await stack.spawnService('auth', { EVALBUS_TRUSTED_PROXIES: '' });
    try {
      assertError(await login(`ip-${tag}-z@example.com`, ip(9), replica.url), 'unauthenticated');
      const line = fs.readFileSync(replica.logFile, 'utf8').split('\n').find((l) => l.includes('/api/v1/auth/login'));
      assert.match(line ?? '', /"remote":"127\.0\.0\.1"/, `the peer, not the header: ${line}`);
    } finally {
      replica.proc.kill('SIGTERM');
      await replica.exited;
    }
  }));

  it('trusted proxies: an IPv4 proxy reaching an IPv6 listener (::ffff:a.b.c.d) is trusted; a malformed entry stops start-up', T, stack.wrap(async () => {
    const tag = crypto.randomBytes(4).toString('hex');
    const remoteOf = async (env, realIp) => {
      const replica = await stack.spawnService('auth', env);
      try {
        const r = await stack.api('POST', '/api/v1/auth/login', {
          base: replica.url, headers: { 'x-real-ip': realIp }, body: { email: `tp-${tag}@example.com`, password: 'definitely-not-it' },
        });
        assertError(r, 'unauthenticated');
        const line = fs.readFileSync(replica.logFile, 'utf8').split('\n').find((l) => l.includes('/api/v1/auth/login'));
        return /"remote":"([^"]*)"/.exec(line ?? '')?.[1];
      } finally {
        replica.proc.kill('SIGTERM');
        await replica.exited;
      }
    };
    // on "::" (IPv4 too), the loopback peer 127.0.0.1 is ::ffff:127.0.0.1: the default list trusts it
    assert.equal(await remoteOf({ EVALBUS_HTTP_ADDR: '::' }, '198.51.100.31'), '198.51.100.31', 'an IPv4-mapped proxy');
    assert.equal(await remoteOf({ EVALBUS_HTTP_ADDR: '::', EVALBUS_TRUSTED_PROXIES: '127.0.0.0/8' }, '198.51.100.32'), '198.51.100.32', 'an IPv4-mapped proxy in a network');
    // a malformed entry (read as /0 it would trust everyone) stops start-up, naming the setting
    for (const list of ['10.0.0.0/', '10.0.0.0/x', '10.0.0.0/8x', '10.0.0.0/33', 'proxy.local']) {
      const res = spawnSync(path.join(BIN_DIR, 'evalbus-auth'), [], {
        env: { ...process.env, EVALBUS_JWT_SECRET: 'x'.repeat(40), EVALBUS_TRUSTED_PROXIES: list }, encoding: 'utf8', timeout: 10_000,
      });
      assert.equal(res.status, 1, `trusted-proxies ${list}: exit ${res.status}: ${res.stderr}`);
      assert.match(res.stderr, /trusted-proxies .*is neither an address nor a network/, `trusted-proxies ${list}`);
    }
    assert.equal(await remoteOf({ EVALBUS_TRUSTED_PROXIES: '10.0.0.0/8, 127.0.0.0/8' }, '198.51.100.34'), '198.51.100.34', 'a network that holds the peer');
  }));

  it('login with a wrong password or an unknown email is 401 with the same message', T, stack.wrap(async () => {
    const wrong = await stack.api('POST', '/api/v1/auth/login', {
      body: { email: owner.email, password: 'definitely-not-it' },
    });
    assertError(wrong, 'unauthenticated', 'wrong password');
    const unknown = await stack.api('POST', '/api/v1/auth/login', {
      body: { email: `nobody-${Date.now()}@example.com`, password: 'definitely-not-it' },
    });
    assertError(unknown, 'unauthenticated', 'unknown email');
    assert.equal(wrong.body.error.message, unknown.body.error.message, 'no user enumeration through the message');
    const missing = await stack.api('POST', '/api/v1/auth/login', { body: { email: owner.email } });
    assertError(missing, 'invalid_argument', 'missing password');
  }));

  it('whoami describes a key and a session', T, stack.wrap(async () => {
    const k = await stack.whoami(owner.key);
    assert.equal(k.team.slug, owner.team);
    assert.equal(k.team.tier, 'free');
    assert.equal(typeof k.team.id, 'string');
    assert.equal(k.role, 'owner');
    assert.ok(k.key_id, 'a key has a key_id');
    for (const s of ALL_SCOPES) assert.ok(k.scopes.includes(s), `owner key scope ${s}`);
    assert.deepEqual(k.rate_limit, { tier: 'free', rate_per_sec: 20, burst: 100, unlimited: false });
    assert.ok('project' in k, 'whoami has a project field');

    assert.ok(session, 'needs the login test');
    const s = await stack.whoami(session.token);
    assert.equal(s.user_id, session.user_id);
    assert.equal(s.team.id, session.team.id);
    assert.equal(s.role, 'owner');
    assert.ok(!s.key_id, `a session has no key_id: ${JSON.stringify(s.key_id)}`);
    assert.ok(Array.isArray(s.scopes));
  }));

  it('GET /api/v1/teams/current describes the credential\'s team', T, stack.wrap(async () => {
    const me = await stack.whoami(owner.key);
    const r = await stack.api('GET', '/api/v1/teams/current', { key: owner.key });
    assertStatus(r, 200);
    assert.equal(r.body.id, me.team.id);
    assert.equal(r.body.slug, owner.team);
    assert.equal(typeof r.body.name, 'string');
    assert.equal(r.body.tier, 'free');
    assert.match(r.body.created_at, RFC3339_RE);
  }));

  it('POST /api/v1/teams: a session creates a team and becomes its owner; keys may not', T, stack.wrap(async () => {
    assert.ok(session, 'needs the login test');
    const slug = uniqueSlug('new');
    const r = await stack.api('POST', '/api/v1/teams', { key: session.token, body: { slug, name: 'New Team' } });
    assertStatus(r, 201, 'create team');
    assert.equal(r.body.slug, slug);
    assert.equal(r.body.name, 'New Team');
    assert.equal(r.body.tier, 'free', 'new teams are free');
    assert.ok(r.body.id);
    assert.match(r.body.created_at, RFC3339_RE);

    const s2 = await stack.login(owner.email, owner.password, slug);
    assert.equal(s2.team.slug, slug);
    assert.equal(s2.team.id, r.body.id);
    assert.equal(s2.role, 'owner');
    const cur = await stack.api('GET', '/api/v1/teams/current', { key: s2.token });
    assert.equal(cur.body.id, r.body.id);
    const users = await stack.api('GET', '/api/v1/users', { key: s2.token });
    assertStatus(users, 200);
    assert.deepEqual(users.body.users.map((u) => [u.id, u.role]), [[session.user_id, 'owner']]);

    const byKey = await stack.api('POST', '/api/v1/teams', { key: owner.key, body: { slug: uniqueSlug('k'), name: 'x' } });
    assertError(byKey, 'forbidden', 'an API key cannot create teams');
    for (const bad of ['Bad Slug', 'UPPER', 'a_b', '', 'dots.not.ok']) {
      const b = await stack.api('POST', '/api/v1/teams', { key: session.token, body: { slug: bad, name: 'x' } });
      assertError(b, 'invalid_argument', `slug ${JSON.stringify(bad)}`);
    }
    const taken = await stack.api('POST', '/api/v1/teams', { key: session.token, body: { slug: owner.team, name: 'dup' } });
    assertError(taken, 'conflict', 'taken slug');
    const noAuth = await stack.api('POST', '/api/v1/teams', { body: { slug: uniqueSlug('n'), name: 'x' } });
    assertError(noAuth, 'unauthenticated');
  }));

  it('keys: create shows the key once, list never shows a secret, role defaults to member', T, stack.wrap(async () => {
    const created = await stack.createKey(owner.key, { name: 'ci', scopes: ['traces:write', 'traces:read'], project: 'web' });
    for (const f of ['id', 'key', 'prefix', 'name', 'scopes', 'role', 'project', 'expires_at', 'created_at']) {
      assert.ok(f in created, `create key response has ${f}: ${JSON.stringify(Object.keys(created))}`);
    }
    assert.equal(created.role, 'member');
    assert.equal(created.name, 'ci');
    assert.equal(created.project, 'web');
    assert.equal(created.prefix, created.key.split('_')[1]);
    assert.deepEqual([...created.scopes].sort(), ['traces:read', 'traces:write']);
    assert.match(created.created_at, RFC3339_RE);

    const list = await stack.api('GET', '/api/v1/keys', { key: owner.key });
    assertStatus(list, 200);
    const row = list.body.keys.find((k) => k.id === created.id);
    assert.ok(row, 'the new key is listed');
    assert.equal(row.prefix, created.prefix);
    assert.equal(row.name, 'ci');
    const secret = keySecret(created.key);
    const ownerSecret = keySecret(owner.key);
    assert.ok(!list.text.includes(secret) && !list.text.includes(ownerSecret), 'no key secret in GET /api/v1/keys');
    assert.ok(!list.text.includes(created.key), 'no full key in GET /api/v1/keys');
    assert.doesNotMatch(list.text, /[0-9a-fA-F]{64}/, 'no key hash in GET /api/v1/keys');

    const unknownScope = await stack.api('POST', '/api/v1/keys', { key: owner.key, body: { name: 'x', scopes: ['traces:delete'] } });
    assertError(unknownScope, 'invalid_argument', 'unknown scope');
    const badRole = await stack.api('POST', '/api/v1/keys', { key: owner.key, body: { name: 'x', scopes: ['traces:read'], role: 'emperor' } });
    assertError(badRole, 'invalid_argument', 'unknown role');
    const r2 = await stack.api('DELETE', '/api/v1/keys/00000000-0000-4000-8000-000000000000', { key: owner.key });
    assertError(r2, 'not_found', 'revoking an unknown key id');
  }));

  it('a query parameter a route does not take is 400 and changes nothing: DELETE /api/v1/keys/{id}?dry_run=true revokes no key', T, stack.wrap(async () => {
    const created = await stack.api('POST', '/api/v1/keys', { key: owner.key, body: { name: 'dry-run', scopes: ['traces:read'] } });
    assertStatus(created, 201);
    const r = await stack.api('DELETE', `/api/v1/keys/${created.body.id}?dry_run=true`, { key: owner.key });
    assertError(r, 'invalid_argument', 'DELETE ?dry_run');
    assert.match(r.body.error.message, /unknown query parameter 'dry_run'; this endpoint takes none/);
    assertStatus(await stack.api('GET', '/api/v1/auth/whoami', { key: created.body.key }), 200, 'the key still works');
    const audit = await stack.api('GET', '/api/v1/audit?limit=1&limt=5', { key: owner.key });
    assertError(audit, 'invalid_argument', 'a misspelt parameter next to a known one');
    assert.match(audit.body.error.message, /'limt'; this endpoint takes limit, cursor, action/);
    assertError(await stack.api('GET', '/api/v1/audit?limit=1&limit=2', { key: owner.key }), 'invalid_argument', 'limit given twice');
    assertStatus(await stack.api('GET', '/api/v1/audit?limit=1&action=key_created', { key: owner.key }), 200, 'the parameters it takes');
  }));

  it('users: list, change a role, the last owner stays, remove a member', T, stack.wrap(async () => {
    const m = await stack.addMember(owner.key, 'member');
    let list = await stack.api('GET', '/api/v1/users', { key: owner.key });
    assertStatus(list, 200);
    const mine = list.body.users.find((u) => u.email === owner.email);
    assert.ok(mine, 'the owner is listed');
    assert.equal(mine.role, 'owner');
    assert.match(mine.joined_at, RFC3339_RE);
    const row = list.body.users.find((u) => u.id === m.user_id);
    assert.ok(row, 'the new member is listed');
    assert.equal(row.email, m.email);
    assert.equal(row.role, 'member');

    const p = await stack.api('PATCH', `/api/v1/users/${m.user_id}`, { key: owner.key, body: { role: 'admin' } });
    assertStatus(p, 200, 'promote to admin');
    assert.equal(p.body.id, m.user_id);
    assert.equal(p.body.role, 'admin');
    const s = await stack.login(m.email, m.password);
    assert.equal(s.role, 'admin', 'the new role shows at login');

    const last = await stack.api('PATCH', `/api/v1/users/${mine.id}`, { key: owner.key, body: { role: 'admin' } });
    assertError(last, 'conflict', 'demoting the last owner');
    const badRole = await stack.api('PATCH', `/api/v1/users/${m.user_id}`, { key: owner.key, body: { role: 'god' } });
    assertError(badRole, 'invalid_argument', 'unknown role');

    const d = await stack.api('DELETE', `/api/v1/users/${m.user_id}`, { key: owner.key });
    assertStatus(d, 200, 'remove member');
    assert.equal(d.body.id, m.user_id);
    list = await stack.api('GET', '/api/v1/users', { key: owner.key });
    assert.ok(!list.body.users.some((u) => u.id === m.user_id), 'the removed member is gone');
    const again = await stack.api('DELETE', `/api/v1/users/${m.user_id}`, { key: owner.key });
    assertError(again, 'not_found', 'removing a removed member');
  }));

  it('every response carries X-Request-Id, errors included', T, stack.wrap(async () => {
    const cases = [
      ['GET', '/healthz', {}],
      ['GET', '/readyz', {}],
      ['GET', '/metrics', {}],
      ['GET', '/api/v1/auth/whoami', { key: owner.key }],
      ['GET', '/api/v1/auth/whoami', {}],
      ['GET', '/api/v1/no-such-route', { key: owner.key }],
      ['POST', '/api/v1/auth/login', { body: {} }],
    ];
    for (const [m, p, o] of cases) {
      const r = await stack.api(m, p, o);
      assert.ok(r.headers.get('x-request-id'), `${m} ${p} -> ${r.status} has X-Request-Id`);
    }
    const nf = await stack.api('GET', '/api/v1/no-such-route', { key: owner.key });
    assertError(nf, 'not_found', 'unknown route');
  }));
});
