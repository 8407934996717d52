// Dependency outages. Redis holds only what can be lost: killed mid-test (SIGKILL), auth keeps
// serving with a local rate limit and reports "degraded"; `scripts/stack up` brings Redis back
// and auth is "ready" again within a few seconds. PostgreSQL is the system of record: stopped,
// auth reports "not_ready" (503) and answers what needs it with 503 unavailable, then recovers.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';

import {
  DOWN_TIMEOUT_MS,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  assertStatus,
  connectionRefused,
  pidAlive,
  mapLimit,
  pollUntil,
  rfc3339,
  sleep,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('outages');
const T = { timeout: 90_000 };

describe('dependency outages', () => {
  let owner;
  let other; // a second team, for the local rate-limit burst
  let session;

  before(async () => {
    await stack.up();
    owner = await stack.bootstrap(uniqueSlug('redis'));
    other = await stack.bootstrap(uniqueSlug('redis2'));
    session = await stack.login(owner.email, owner.password);
    await stack.whoami(owner.key); // cached while Redis is up
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('after SIGKILL of Redis, requests still answer 200 and /readyz says degraded', T, stack.wrap(async () => {
    const ready = await stack.api('GET', '/readyz');
    assert.equal(ready.body?.status, 'ready', 'ready before Redis is killed');

    const pid = stack.readPid('redis');
    assert.ok(pid, `${stack.pidFile('redis')} names Redis's pid`);
    process.kill(pid, 'SIGKILL');
    const redisPort = Number(new URL(stack.env.EVALBUS_REDIS_URL).port);
    const gone = await pollUntil(() => connectionRefused(redisPort, 500), { timeoutMs: 5000, intervalMs: 100 });
    assert.ok(gone.value, `Redis (port ${redisPort}) still accepts connections after SIGKILL`);

    for (let i = 0; i < 10; i++) {
      const r = await stack.api('GET', '/api/v1/auth/whoami', { key: owner.key });
      assertStatus(r, 200, `whoami #${i} with Redis down`);
    }
    assertStatus(await stack.api('GET', '/api/v1/auth/whoami', { key: session.token }), 200, 'session with Redis down');
    const s2 = await stack.login(owner.email, owner.password);
    assert.equal(s2.role, 'owner', 'login works with Redis down');
    const k = await stack.createKey(owner.key, { name: 'made-while-redis-down', scopes: ['traces:read'] });
    assert.equal((await stack.whoami(k.key)).team.slug, owner.team, 'a key made with Redis down works');
    const v = await stack.verifyOverNats(k.key);
    assert.equal(v.allowed, true, 'NATS verify works with Redis down');

    const degraded = await pollUntil(async () => {
      const r = await stack.api('GET', '/readyz');
      return r.body?.status === 'degraded' ? r : null;
    }, { timeoutMs: 10_000, intervalMs: 200 });
    assert.ok(degraded.value, 'readyz reports degraded within 10 s of Redis dying');
    const r = degraded.value;
    assertStatus(r, 200, '/readyz degraded answers 200');
    assert.equal(r.body.checks.redis.ok, false);
    assert.match(String(r.body.checks.redis.detail ?? ''), /local/i, `checks.redis.detail mentions the local limit: ${r.text}`);
    assert.equal(r.body.checks.postgres.ok, true);
    assert.equal(r.body.checks.nats.ok, true);
    assertStatus(await stack.api('GET', '/healthz'), 200, 'healthz with Redis down');
  }));

  it('with Redis down a revoked key is still denied within 1 s', T, stack.wrap(async () => {
    const k = await stack.createKey(owner.key, { name: 'revoke-while-down', scopes: ['traces:read'] });
    await stack.whoami(k.key);
    assert.equal((await stack.verifyOverNats(k.key)).allowed, true);
    await stack.revokeKey(owner.key, k.id);
    const denied = await pollUntil(
      async () => (await stack.api('GET', '/api/v1/auth/whoami', { key: k.key })).status === 401,
      { timeoutMs: 3000, intervalMs: 50 },
    );
    assert.ok(denied.value && denied.elapsedMs < 1000, `revoked key denied after ${Math.round(denied.elapsedMs)} ms`);
    const v = await stack.verifyOverNats(k.key);
    assert.equal(v.allowed, false);
    assert.equal(v.reason, 'revoked');
  }));

  it('with Redis down the local rate limit still answers 429 to a burst', T, stack.wrap(async () => {
    const results = await mapLimit(150, 10, () => stack.api('GET', '/api/v1/auth/whoami', { key: other.key }));
    const bad = results.filter((r) => r.status !== 200 && r.status !== 429);
    assert.equal(bad.length, 0, `only 200/429: ${bad.slice(0, 3).map((r) => `${r.status} ${r.text}`)}`);
    const limited = results.filter((r) => r.status === 429);
    assert.ok(limited.length >= 1, '150 quick requests on the free tier got no 429 from the local limiter');
    assertError(limited[0], 'rate_limited');
    assert.ok(Number(limited[0].headers.get('retry-after')) >= 1, 'Retry-After >= 1');
    assert.ok(results.filter((r) => r.status === 200).length >= 20, 'the local limiter still lets a free team through');
  }));

  it('scripts/stack up brings Redis back and /readyz returns to ready within a few seconds', T, stack.wrap(async () => {
    const res = await stack.stackCmd('up', 120_000);
    assert.equal(res.code, 0, `scripts/stack up (again) exited ${res.code}: ${res.stdout}${res.stderr}`);
    const pid = stack.readPid('redis');
    assert.ok(pid, 'Redis has a pid file again');
    const back = await pollUntil(async () => {
      const r = await stack.api('GET', '/readyz');
      return r.body?.status === 'ready' ? r : null;
    }, { timeoutMs: 10_000, intervalMs: 200 });
    assert.ok(back.value, 'readyz is ready again within 10 s of Redis coming back');
    assert.equal(back.value.status, 200);
    assert.equal(back.value.body.checks.redis.ok, true);
    assertStatus(await stack.api('GET', '/api/v1/auth/whoami', { key: owner.key }), 200, 'whoami after Redis is back');
    const v = await stack.verifyOverNats(owner.key);
    assert.equal(v.allowed, true);
  }));

  it('with PostgreSQL stopped /readyz is 503 not_ready and a login is 503 unavailable; it recovers', T, stack.wrap(async () => {
    const pid = stack.readPid('postgres');
    assert.ok(pid, `${stack.pidFile('postgres')} names the postmaster`);
    process.kill(pid, 'SIGINT'); // fast shutdown
    const stopped = await pollUntil(() => !pidAlive(pid), { timeoutMs: 15_000, intervalMs: 100 });
    assert.ok(stopped.value, 'PostgreSQL stopped within 15 s of SIGINT');

    const notReady = await pollUntil(async () => {
      const r = await stack.api('GET', '/readyz');
      return r.body?.status === 'not_ready' ? r : null;
    }, { timeoutMs: 10_000, intervalMs: 200 });
    assert.ok(notReady.value, 'readyz reports not_ready within 10 s of PostgreSQL stopping');
    assert.equal(notReady.value.status, 503, '/readyz not_ready answers 503');
    assert.equal(notReady.value.body.checks.postgres.ok, false);
    assertStatus(await stack.api('GET', '/healthz'), 200, 'healthz (liveness) does not depend on PostgreSQL');

    const login = await stack.api('POST', '/api/v1/auth/login', { body: { email: owner.email, password: owner.password } });
    assertError(login, 'unavailable', 'login with PostgreSQL down');
    const create = await stack.api('POST', '/api/v1/keys', { key: owner.key, body: { name: 'no-db', scopes: ['traces:read'] } });
    assertError(create, 'unavailable', 'key create with PostgreSQL down (a valid key is never 401 because the database is away)');
    assert.notEqual(create.status, 201);

    const res = await stack.stackCmd('up', 120_000);
    assert.equal(res.code, 0, `scripts/stack up (again) exited ${res.code}: ${res.stdout}${res.stderr}`);
    const back = await pollUntil(async () => {
      const r = await stack.api('GET', '/readyz');
      return r.body?.status === 'ready' ? r : null;
    }, { timeoutMs: 15_000, intervalMs: 200 });
    assert.ok(back.value, 'readyz is ready again within 15 s of PostgreSQL coming back');
    const s = await stack.login(owner.email, owner.password);
    assert.equal(s.role, 'owner', 'login works again');
    const k = await stack.createKey(owner.key, { name: 'after-db-back', scopes: ['traces:read'] });
    assert.equal((await stack.whoami(k.key)).team.slug, owner.team);
  }));

  it('with PostgreSQL stopped a key past its expires_at is refused, not served from the cache', T, stack.wrap(async () => {
    const expiresAt = Math.ceil((Date.now() + 4000) / 1000) * 1000;
    const k = await stack.createKey(owner.key, { name: 'expiring', scopes: ['traces:read'], expires_at: rfc3339(expiresAt) });
    assert.equal((await stack.whoami(k.key)).team.slug, owner.team, 'the key works before it expires');
    assert.equal((await stack.verifyOverNats(k.key)).allowed, true, 'over NATS too');
    await sleep(expiresAt - Date.now() + 1000);

    const pid = stack.readPid('postgres');
    process.kill(pid, 'SIGINT');
    const stopped = await pollUntil(() => !pidAlive(pid), { timeoutMs: 15_000, intervalMs: 100 });
    assert.ok(stopped.value, 'PostgreSQL stopped within 15 s of SIGINT');
    try {
      const r = await stack.api('GET', '/api/v1/auth/whoami', { key: k.key });
      assert.notEqual(r.status, 200, `an expired key was accepted while PostgreSQL was down: ${r.text}`);
      const v = await stack.verifyOverNats(k.key);
      assert.equal(v.allowed, false, `an expired key was allowed over NATS: ${JSON.stringify(v)}`);
    } finally {
      const res = await stack.stackCmd('up', 120_000);
      assert.equal(res.code, 0, `scripts/stack up (again) exited ${res.code}: ${res.stdout}${res.stderr}`);
    }
  }));

  it('with PostgreSQL taking connections but not answering, /readyz answers at once and says so; /healthz, /metrics and intake go on', T, stack.wrap(async () => {
    // a hung server (here: its processes stopped), or one cut off without a reset: readiness
    // is checked on a thread of its own, never on the loop that answers every request
    const ingest = stack.env.EVALBUS_INGEST_URL;
    const services = [['ingest', ingest, 200, 'degraded'], ['auth', stack.env.EVALBUS_AUTH_URL, 503, 'not_ready']];
    const NO_ANSWER = 'no answer within 3 s';
    const get = async (url, opts = {}) => {
      try {
        const r = await fetch(url, { ...opts, signal: AbortSignal.timeout(3000) });
        return { status: r.status, text: await r.text() };
      } catch {
        return { status: NO_ANSWER };
      }
    };
    const post = (id) => get(`${ingest}/api/v1/traces`, { method: 'POST', body: JSON.stringify({ traces: [{ id, project: 'hung' }] }),
      headers: { authorization: `Bearer ${owner.key}`, 'content-type': 'application/json' } });
    const sfx = uniqueSlug('h');
    assert.equal((await post(`warm-${sfx}`)).status, 202, 'the key is checked (and cached) while PostgreSQL answers');
    // a replica whose pool (2) the two API threads' queries fill: stuck on PostgreSQL, they do
    // not hide its silence from the check (which has a connection of its own)
    const small = await stack.spawnService('ingest', { EVALBUS_DB_POOL: '2', EVALBUS_API_THREADS: '2', EVALBUS_WRITER_THREADS: '0' });
    services.push(['ingest with a full pool', small.url, 200, 'degraded']);
    const lookup = () => get(`${small.url}/api/v1/traces/warm-${sfx}`, { headers: { authorization: `Bearer ${owner.key}` } });
    assert.ok((await pollUntil(async () => (await lookup()).status === 200, { timeoutMs: 10_000, intervalMs: 200 })).value,
      'the replica reads the trace (its key cached)');
    const postgresOk = async (base) => {
      const r = await get(`${base}/readyz`);
      return r.status === 200 && JSON.parse(r.text).checks.postgres.ok === true;
    };
    for (const [name, base] of services) {
      assert.ok((await pollUntil(() => postgresOk(base), { timeoutMs: 10_000, intervalMs: 200 })).value, `${name} is ready`);
    }
    const pg = stack.readPid('postgres');
    const children = execFileSync('pgrep', ['-P', String(pg)]).toString().trim().split('\n').map(Number);
    const pids = [pg, ...children];
    for (const p of pids) process.kill(p, 'SIGSTOP');
    const stuck = [lookup(), lookup()];
    try {
      for (const [name, base, status, word] of services) {
        const seen = await pollUntil(async () => {
          const r = await get(`${base}/readyz`);
          assert.notEqual(r.status, NO_ANSWER, `${name} /readyz answers while PostgreSQL does not`);
          const body = JSON.parse(r.text);
          return body.checks.postgres.ok === false ? { status: r.status, body } : null;
        }, { timeoutMs: 8000, intervalMs: 200 });
        assert.ok(seen.value, `${name} /readyz reports the postgres check failing`);
        assert.equal(seen.value.status, status, `${name} /readyz status`);
        assert.equal(seen.value.body.status, word);
        assert.match(seen.value.body.checks.postgres.detail, /not answer/);
        assert.equal((await get(`${base}/healthz`)).status, 200, `${name} /healthz answers`);
        assert.equal((await get(`${base}/metrics`)).status, 200, `${name} /metrics answers`);
      }
      assert.equal((await post(`during-${sfx}`)).status, 202, 'intake goes on (the stream buffers) after the probes');
    } finally {
      for (const p of pids) process.kill(p, 'SIGCONT');
    }
    await Promise.all(stuck);
    for (const [name, base] of services) {
      const back = await pollUntil(async () => (await get(`${base}/readyz`)).status === 200, { timeoutMs: 10_000, intervalMs: 200 });
      assert.ok(back.value, `${name} is ready again once PostgreSQL answers`);
    }
    const stored = await pollUntil(async () => (await stack.api('GET', `/api/v1/traces/during-${sfx}`, { base: stack.url, key: owner.key })).status === 200,
      { timeoutMs: 10_000, intervalMs: 200 });
    assert.ok(stored.value, 'the trace taken meanwhile is stored');
    small.proc.kill('SIGTERM');
    await small.exited;
  }));

  it('a service whose PostgreSQL completes new connections and then answers nothing still stops on SIGTERM', T, stack.wrap(async () => {
    // a proxy in front of PostgreSQL that, once frozen, lets a new connection's start-up through
    // up to its first ReadyForQuery and holds back everything after (as a pooler in front of a
    // hung server would): the readiness check's new connection then waits in its first
    // statements, which must be bounded, or SIGTERM would wait for it for ever
    const READY = Buffer.from([0x5a, 0, 0, 0, 5]);
    const url = new URL(stack.env.EVALBUS_DATABASE_URL);
    let frozen = false;
    const sockets = [];
    const proxy = net.createServer((client) => {
      const server = net.connect(Number(url.port), url.hostname);
      let started = false;
      sockets.push(client, server);
      client.on('data', (d) => server.write(d));
      server.on('data', (d) => {
        if (started && frozen) return;
        const at = d.indexOf(READY);
        if (at >= 0) started = true;
        client.write(frozen && at >= 0 ? d.subarray(0, at + READY.length + 1) : d);
      });
      for (const sock of [client, server]) sock.on('error', () => {});
      client.on('close', () => server.destroy());
      server.on('close', () => client.destroy());
    });
    await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const viaProxy = new URL(url);
    viaProxy.port = String(proxy.address().port);
    let replica;
    try {
      replica = await stack.spawnService('auth', { EVALBUS_DATABASE_URL: viaProxy.toString() });
      const ready = async () => (await (await fetch(`${replica.url}/readyz`, { signal: AbortSignal.timeout(3000) })).json());
      assert.equal((await ready()).checks.postgres.ok, true, 'ready through the proxy');
      frozen = true;
      for (const sock of sockets) sock.destroy(); // every connection made again, through the frozen proxy
      const failing = await pollUntil(async () => (await ready()).checks.postgres.ok === false, { timeoutMs: 10_000, intervalMs: 250 });
      assert.ok(failing.value, 'the postgres check fails');
      replica.proc.kill('SIGTERM');
      const exited = await Promise.race([replica.exited.then(() => true), sleep(20_000).then(() => false)]);
      assert.ok(exited, 'the service exits on SIGTERM');
    } finally {
      if (replica && replica.exitCode === null) {
        replica.proc.kill('SIGKILL');
        await replica.exited;
      }
      frozen = false;
      for (const sock of sockets) sock.destroy();
      proxy.close();
    }
  }));
});
