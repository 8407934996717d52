// The INGEST stream refuses new records when full (discard new) and never pushes out old ones:
// the stream watch purges the records already stored to make room, and refuses new batches
// (503) once the records not yet stored pass the high water. Here the stream is small (2 MiB,
// high water 50 %) and holds many small stored records when the writers are held up and a burst
// of large records arrives, more than it can hold: the stream refuses what does not fit rather
// than push out records not yet stored, so no acknowledged record is lost.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { DOWN_TIMEOUT_MS, Stack, UP_TIMEOUT_MS, mapLimit, pollUntil, uniqueSlug } from './harness.mjs';

const LIMITS = { EVALBUS_STREAM_MAX_BYTES: '2MiB', EVALBUS_STREAM_HIGH_WATER: '50' };
const stack = new Stack('ingest-stream-room', { env: LIMITS });
const T = { timeout: 180_000 };

const metric = (name) => stack.metric(name);

describe('ingest: room in the INGEST stream', () => {
  let A;
  before(async () => {
    await stack.up();
    A = await stack.bootstrap(uniqueSlug('room'));
    await stack.setTier(A.team, 'enterprise', A.key);
    A.id = (await stack.whoami(A.key)).team.id;
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  const stored = async (project) => new Set((await stack.psql(
    `SELECT id FROM ingest.traces WHERE team_id = '${A.id}' AND project = '${project}'`)).map((r) => r[0]));

  it('a stream made by an earlier version (discard old, a 2 min duplicate window) is set to discard new and the window of the settings at start-up', T, stack.wrap(async () => {
    const jsm = await (await stack.nats()).jetstreamManager();
    const seconds = (ns) => ns / 1e9;
    let config = (await jsm.streams.info('INGEST')).config;
    assert.equal(config.discard, 'new');
    assert.equal(seconds(config.duplicate_window), 20, 'the default duplicate window');
    await jsm.streams.update('INGEST', { ...config, discard: 'old', duplicate_window: 120e9 });
    const replica = await stack.spawnService('ingest', { ...LIMITS, EVALBUS_WRITER_THREADS: '0', EVALBUS_STREAM_DUPE_WINDOW: '45s' });
    try {
      config = (await jsm.streams.info('INGEST')).config;
      assert.equal(config.discard, 'new');
      assert.equal(seconds(config.duplicate_window), 45, 'the replica\'s stream-dupe-window');
    } finally {
      replica.proc.kill('SIGTERM');
      await replica.exited;
    }
  }));

  it('large records held up behind many small stored ones are never pushed out: stored ones are purged, then new ones refused', T, stack.wrap(async () => {
    // 1. small traces, stored: most of the stream's bytes
    const SMALL = 3000;
    for (let b = 0; b < SMALL / 1000; b++) {
      const traces = Array.from({ length: 1000 }, (_, k) => ({ id: `s-${b * 1000 + k}`, project: 'small' }));
      const r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces } });
      assert.equal(r.status, 202, r.text.slice(0, 200));
    }
    assert.ok((await pollUntil(async () => (await stored('small')).size === SMALL, { timeoutMs: 30_000, intervalMs: 300 })).value,
      'the small traces are stored');
    const purgesBefore = await metric('evalbus_ingest_stream_purges_total');
    const fullBefore = await metric('evalbus_ingest_refused_stream_full_total');
    // 2. the writers are held up (as by a slow PostgreSQL) while a burst of large traces (40 KB
    // of text that does not compress each, 2.8 MB in all) arrives: more than the stream holds
    const lock = await stack.lockTable('ingest.trace_keys', 20_000);
    const answers = await mapLimit(70, 10, (i) => stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key,
      body: { traces: [{ id: `big-${i}`, project: 'big', input: crypto.randomBytes(30_000).toString('base64') }] } }));
    const accepted = [];
    const counts = {};
    for (const r of answers) {
      counts[r.status] = (counts[r.status] ?? 0) + 1;
      if (r.status === 202) accepted.push(...r.body.accepted);
      else assert.equal(r.status, 503, r.text.slice(0, 300));
    }
    assert.ok(counts[503] > 0, `the stream could not take them all: some were refused: ${JSON.stringify(counts)}`);
    assert.ok(accepted.length > 0, `some were taken: ${JSON.stringify(counts)}`);
    assert.equal(await metric('evalbus_ingest_refused_stream_full_total') - fullBefore, counts[503], 'each refusal is counted as the stream being full, once');
    await lock.released;
    // 3. every acknowledged large trace is stored
    const done = await pollUntil(async () => (await stored('big')).size === accepted.length, { timeoutMs: 30_000, intervalMs: 300 });
    const ids = await stored('big');
    const missing = accepted.filter((id) => !ids.has(id));
    assert.ok(done.value, `every acknowledged trace is stored: ${missing.length} of ${accepted.length} missing (${missing.slice(0, 10).join(', ')})`);
    assert.equal(ids.size, accepted.length, 'and nothing else');
    assert.ok(await metric('evalbus_ingest_stream_purges_total') > purgesBefore, 'the stored records were purged to make room');
    // 4. with the backlog stored, new traces are taken again
    const again = await pollUntil(async () => (await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key,
      body: { traces: [{ id: 'after', project: 'big' }] } })).status === 202, { timeoutMs: 10_000, intervalMs: 300 });
    assert.ok(again.value, 'taken again once the backlog is stored');
  }));
});
