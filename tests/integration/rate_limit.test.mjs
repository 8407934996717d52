// Rate limits per key and per team by tier: free 20 req/s burst 100, pro 200/s burst 1000,
// enterprise unlimited; new teams are free; `evalbus admin set-tier` changes it within ~1-2 s.
// An empty bucket answers 429 rate_limited with Retry-After in whole seconds >= 1.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  DOWN_TIMEOUT_MS,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  mapLimit,
  pollUntil,
  sleep,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('ratelimit');
const T = { timeout: 90_000 };
const N = 150;
const CONCURRENCY = 10;

async function burst(key) {
  return mapLimit(N, CONCURRENCY, () => stack.api('GET', '/api/v1/auth/whoami', { key }));
}

describe('rate limiting by tier', () => {
  before(() => stack.up(), { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('a fresh free team gets 429 with Retry-After; after set-tier enterprise it gets none', T, stack.wrap(async () => {
    const owner = await stack.bootstrap(uniqueSlug('rl'));
    const me = await stack.whoami(owner.key);
    assert.deepEqual(me.rate_limit, { tier: 'free', rate_per_sec: 20, burst: 100, unlimited: false });

    const t0 = performance.now();
    const results = await burst(owner.key);
    const took = performance.now() - t0;
    const limited = results.filter((r) => r.status === 429);
    const other = results.filter((r) => r.status !== 200 && r.status !== 429);
    assert.equal(other.length, 0, `only 200 and 429 expected: ${other.map((r) => `${r.status} ${r.text}`).slice(0, 3)}`);
    assert.ok(limited.length >= 1, `${N} requests in ${Math.round(took)} ms on the free tier got no 429`);
    // 100 burst + 20/s refill: at most 100 + 20 * seconds (+1 for rounding) can pass.
    const allowedMax = 100 + Math.ceil((20 * took) / 1000) + 1;
    assert.ok(N - limited.length <= allowedMax, `${N - limited.length} passed in ${Math.round(took)} ms; free allows <= ${allowedMax}`);
    for (const r of limited.slice(0, 5)) {
      assertError(r, 'rate_limited');
      const ra = r.headers.get('retry-after');
      assert.match(ra ?? '', /^\d+$/, `Retry-After is whole seconds: ${ra}`);
      assert.ok(Number(ra) >= 1, `Retry-After >= 1: ${ra}`);
    }

    const setTier = await stack.cli(['admin', 'set-tier', '--team', owner.team, '--tier', 'enterprise']);
    assert.equal(setTier.code, 0, `set-tier enterprise: ${setTier.stderr}`);
    await sleep(2000);
    const after2s = await stack.api('GET', '/api/v1/auth/whoami', { key: owner.key });
    assert.equal(after2s.status, 200, `whoami 2 s after set-tier: ${after2s.status} ${after2s.text}`);
    assert.equal(after2s.body.team.tier, 'enterprise');
    assert.equal(after2s.body.rate_limit.tier, 'enterprise');
    assert.equal(after2s.body.rate_limit.unlimited, true);

    const results2 = await burst(owner.key);
    const limited2 = results2.filter((r) => r.status === 429).length;
    assert.equal(limited2, 0, `enterprise: ${limited2} of ${N} got 429`);
    assert.ok(results2.every((r) => r.status === 200), 'enterprise: every request answered 200');
  }));

  it('the limit is per team: two keys of one team share its bucket, another team is not affected', T, stack.wrap(async () => {
    const a = await stack.bootstrap(uniqueSlug('rla'));
    const b = await stack.bootstrap(uniqueSlug('rlb'));
    const a2 = await stack.createKey(a.key, { name: 'second', scopes: ['traces:read'] });
    // Alternate the two keys: per-key buckets alone (100 each) would let all 150 through.
    const t0 = performance.now();
    const results = await mapLimit(N, CONCURRENCY, (i) =>
      stack.api('GET', '/api/v1/auth/whoami', { key: i % 2 ? a2.key : a.key }));
    const took = performance.now() - t0;
    const passed = results.filter((r) => r.status === 200).length;
    const allowedMax = 100 + Math.ceil((20 * took) / 1000) + 1;
    assert.ok(results.some((r) => r.status === 429), 'team A exhausted its bucket');
    assert.ok(passed <= allowedMax, `${passed} passed for one free team in ${Math.round(took)} ms; its bucket allows <= ${allowedMax}`);
    const otherTeam = await stack.api('GET', '/api/v1/auth/whoami', { key: b.key });
    assert.equal(otherTeam.status, 200, `team B is not limited by team A: ${otherTeam.text}`);
    // The bucket refills at 20/s: after 1.5 s a request passes again.
    await sleep(1500);
    const refilled = await stack.api('GET', '/api/v1/auth/whoami', { key: a.key });
    assert.equal(refilled.status, 200, `after 1.5 s the free bucket has refilled: ${refilled.status}`);
  }));

  it('set-tier pro shows pro limits in whoami and over NATS', T, stack.wrap(async () => {
    const o = await stack.bootstrap(uniqueSlug('rlp'));
    const res = await stack.cli(['admin', 'set-tier', '--team', o.team, '--tier', 'pro']);
    assert.equal(res.code, 0, res.stderr);
    const seen = await pollUntil(async () => (await stack.whoami(o.key)).rate_limit.tier === 'pro', { timeoutMs: 2500, intervalMs: 100 });
    assert.ok(seen.value, 'whoami shows pro within 2.5 s');
    assert.deepEqual((await stack.whoami(o.key)).rate_limit, { tier: 'pro', rate_per_sec: 200, burst: 1000, unlimited: false });
    const v = await stack.verifyOverNats(o.key);
    assert.equal(v.allowed, true);
    assert.deepEqual(v.principal.rate_limit, { tier: 'pro', rate_per_sec: 200, burst: 1000, unlimited: false });
    const results = await burst(o.key);
    assert.ok(results.every((r) => r.status === 200), 'pro: 150 quick requests are within burst 1000');
  }));
});
