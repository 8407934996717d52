// Bad input gets a clear JSON error and harms nothing else: malformed JSON, invalid UTF-8,
// wrong types -> 400; bodies over 64 KiB -> 413; missing or garbage credentials -> 401.
// The service is still healthy afterwards.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';

import {
  DOWN_TIMEOUT_MS,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  assertStatus,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('badinput');
const T = { timeout: 60_000 };

/** Sends raw bytes on a fresh connection and resolves whatever comes back before it closes. */
function rawHttp(port, bytes, timeoutMs = 5000) {
  return new Promise((resolve) => {
    const chunks = [];
    const sock = net.connect({ host: '127.0.0.1', port }, () => sock.end(bytes));
    const timer = setTimeout(() => sock.destroy(), timeoutMs);
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', () => {});
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
  });
}

describe('bad input', () => {
  let owner;

  before(async () => {
    await stack.up();
    owner = await stack.bootstrap(uniqueSlug('bad'));
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  const login = (raw) => stack.api('POST', '/api/v1/auth/login', { raw });

  it('malformed JSON is 400 invalid_argument', T, stack.wrap(async () => {
    for (const raw of ['{"email":', '{email: "a"}', 'not json', '{"email":"a@b.c","password":"x",}', '', '\u0000\u0001', '{"a":1}{"b":2}']) {
      assertError(await login(raw), 'invalid_argument', `login body ${JSON.stringify(raw)}`);
    }
    assertError(
      await stack.api('POST', '/api/v1/keys', { key: owner.key, raw: '{"name": "x", "scopes": [' }),
      'invalid_argument', 'truncated key body',
    );
  }));

  it('invalid UTF-8 is 400', T, stack.wrap(async () => {
    const cases = [
      Buffer.concat([Buffer.from('{"email":"'), Buffer.from([0xff, 0xfe]), Buffer.from('@example.com","password":"passwordpassword"}')]),
      Buffer.concat([Buffer.from('{"email":"a@example.com","password":"'), Buffer.from([0xc3, 0x28]), Buffer.from('pppppppp"}')]),
      Buffer.concat([Buffer.from('{"email":"a@example.com","password":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('pppppppp"}')]), // UTF-16 surrogate
      Buffer.concat([Buffer.from('{"email":"a@example.com","password":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('pppppppp"}')]), // overlong "/"
    ];
    for (const raw of cases) assertError(await login(raw), 'invalid_argument', `login body ${raw.toString('hex').slice(0, 60)}`);
    const keyBody = Buffer.concat([Buffer.from('{"name":"'), Buffer.from([0xf8, 0x88, 0x80, 0x80, 0x80]), Buffer.from('","scopes":["traces:read"]}')]);
    assertError(await stack.api('POST', '/api/v1/keys', { key: owner.key, raw: keyBody }), 'invalid_argument', 'key name with invalid UTF-8');
  }));

  it('a 70 KiB body is 413 too_large; 64 KiB bodies are read', T, stack.wrap(async () => {
    const big = JSON.stringify({ email: 'a@example.com', password: 'p'.repeat(70 * 1024) });
    assertError(await login(big), 'too_large', '70 KiB login');
    const bigKey = JSON.stringify({ name: 'n'.repeat(70 * 1024), scopes: ['traces:read'] });
    assertError(await stack.api('POST', '/api/v1/keys', { key: owner.key, raw: bigKey }), 'too_large', '70 KiB key create');
    // Just under the limit is parsed (and then refused for what it says, not for its size).
    const under = JSON.stringify({ email: `x${'a'.repeat(60 * 1024)}@example.com`, password: 'wrong-password' });
    const r = await login(under);
    assert.notEqual(r.status, 413, 'a 60 KiB body is within the 64 KiB limit');
    assert.ok([400, 401].includes(r.status), `60 KiB login: ${r.status}`);
  }));

  it('wrong types are 400', T, stack.wrap(async () => {
    const logins = [
      { email: 5, password: 'passwordpassword' },
      { email: 'a@example.com', password: true },
      { email: ['a@example.com'], password: 'passwordpassword' },
      { email: 'a@example.com', password: 'passwordpassword', team: 7 },
      [],
      'just a string',
      42,
      null,
    ];
    for (const b of logins) assertError(await login(JSON.stringify(b)), 'invalid_argument', `login ${JSON.stringify(b)}`);
    const keys = [
      { name: 1, scopes: ['traces:read'] },
      { name: 'x', scopes: 'traces:read' },
      { name: 'x', scopes: [1, 2] },
      { name: 'x', scopes: ['traces:read'], role: 3 },
      { name: 'x', scopes: ['traces:read'], expires_at: 'tomorrow' },
      { name: 'x', scopes: ['traces:read'], expires_at: 12345 },
      { name: 'x', scopes: ['traces:read'], project: {} },
    ];
    for (const b of keys) {
      assertError(await stack.api('POST', '/api/v1/keys', { key: owner.key, body: b }), 'invalid_argument', `create key ${JSON.stringify(b)}`);
    }
    const me = await stack.whoami(owner.key);
    const users = await stack.api('GET', '/api/v1/users', { key: owner.key });
    const uid = users.body.users[0].id;
    assertError(await stack.api('PATCH', `/api/v1/users/${uid}`, { key: owner.key, body: { role: 4 } }), 'invalid_argument', 'role as a number');
    assertError(await stack.api('POST', '/api/v1/invitations', { key: owner.key, body: { email: 12, role: 'member' } }), 'invalid_argument', 'invitation email as a number');
    assertError(await stack.api('POST', '/api/v1/invitations/accept', { body: { token: 12, password: 'passwordpassword' } }), 'invalid_argument', 'invitation token as a number');
    assert.equal(me.team.slug, owner.team);
  }));

  it('a missing, empty or garbage credential is 401', T, stack.wrap(async () => {
    const routes = [
      ['GET', '/api/v1/auth/whoami'],
      ['GET', '/api/v1/teams/current'],
      ['GET', '/api/v1/users'],
      ['GET', '/api/v1/keys'],
      ['POST', '/api/v1/keys'],
      ['GET', '/api/v1/audit?limit=1'],
      ['GET', '/api/v1/invitations'],
    ];
    const headerSets = [
      {},
      { authorization: '' },
      { authorization: 'Bearer' },
      { authorization: 'Bearer ' },
      { authorization: 'Bearer garbage' },
      { authorization: `Bearer ${owner.key}x` },
      { authorization: `Bearer ${owner.key.slice(0, -1)}` },
      { authorization: `Basic ${Buffer.from(`${owner.email}:${owner.password}`).toString('base64')}` },
      { authorization: `Token ${owner.key}` },
      { authorization: 'Bearer eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo' },
      { authorization: `Bearer ${'A'.repeat(8000)}` },
    ];
    for (const [m, p] of routes) {
      for (const headers of headerSets) {
        const body = m === 'POST' ? { name: 'x', scopes: ['traces:read'] } : undefined;
        const r = await stack.api(m, p, { headers, body });
        assertError(r, 'unauthenticated', `${m} ${p} with ${JSON.stringify(headers).slice(0, 60)}`);
      }
    }
  }));

  it('broken HTTP on the wire does not hurt the service', T, stack.wrap(async () => {
    const port = Number(new URL(stack.authUrl).port);
    await rawHttp(port, Buffer.from('GARBAGE\r\n\r\n'));
    await rawHttp(port, Buffer.from('POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"email"'));
    await rawHttp(port, Buffer.from(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'h'.repeat(100_000)}\r\n\r\n`));
    await rawHttp(port, Buffer.from('POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n'));
    await rawHttp(port, Buffer.from('POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'));
    assertStatus(await stack.api('GET', '/healthz'), 200, 'healthz after wire garbage');
  }));

  it('the service is still healthy and correct after all of the above', T, stack.wrap(async () => {
    assertStatus(await stack.api('GET', '/healthz'), 200);
    const ready = await stack.api('GET', '/readyz');
    assertStatus(ready, 200);
    assert.equal(ready.body.status, 'ready');
    const s = await stack.login(owner.email, owner.password);
    assert.equal(s.role, 'owner');
    const k = await stack.createKey(owner.key, { name: 'after-bad-input', scopes: ['traces:read'] });
    assert.equal((await stack.whoami(k.key)).team.slug, owner.team);
    assert.equal((await stack.verifyOverNats(k.key)).allowed, true);
  }));
});
