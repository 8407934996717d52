// The stream watch purges the stored records from INGEST in slices (stream-purge-slice records;
// each holds the stream's publishes for a few milliseconds), 40 a check, and goes on at the next
// checks, also once the stream is below the mark again, until every record stored when the
// purge began is gone. Here the stream (8 MiB, high water 50 %, so the purge mark is 40 %) holds
// over 10,000 small stored records when it passes the mark, and a slice is 100 records: the
// purge takes several checks.
// (Publish latency during a purge is measured, not asserted: services/ingest/README.md.)

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { DOWN_TIMEOUT_MS, Stack, UP_TIMEOUT_MS, pollUntil, uniqueSlug } from './harness.mjs';

const MAX_BYTES = 8 * 1024 * 1024;
const SLICE = 100;
const PER_CHECK = 40; // PURGE_SLICES_PER_CHECK in stream_watch.c
const stack = new Stack('ingest-stream-purge', {
  env: { EVALBUS_STREAM_MAX_BYTES: '8MiB', EVALBUS_STREAM_HIGH_WATER: '50', EVALBUS_STREAM_PURGE_SLICE: String(SLICE) },
});
const T = { timeout: 180_000 };

describe('ingest: purging the stored records from INGEST', () => {
  let A;
  before(async () => {
    await stack.up();
    A = await stack.bootstrap(uniqueSlug('purge'));
    await stack.setTier(A.team, 'enterprise', A.key);
    A.id = (await stack.whoami(A.key)).team.id;
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('stored records are purged in slices over several checks, every one stored when the purge began, and nothing acknowledged is lost', T, stack.wrap(async () => {
    const jsm = await (await stack.nats()).jetstreamManager();
    const purges = await stack.metric('evalbus_ingest_stream_purges_total');
    const send = async (from, n) => {
      for (let b = from; b < from + n; b += 1000) {
        const traces = Array.from({ length: Math.min(1000, from + n - b) }, (_, k) => ({ id: `p-${b + k}`, project: 'purge' }));
        const r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces } });
        assert.equal(r.status, 202, r.text.slice(0, 200));
      }
    };
    const count = async () => Number((await stack.psql(
      `SELECT count(*) FROM ingest.traces WHERE team_id = '${A.id}' AND project = 'purge'`))[0][0]);

    // records until the stream is 3/8 full, all stored: the mark is not reached yet
    await send(0, 2000);
    let info = await jsm.streams.info('INGEST');
    const perRecord = info.state.bytes / info.state.messages;
    const below = Math.floor((0.375 * MAX_BYTES) / perRecord);
    assert.ok(below > 2 * SLICE * PER_CHECK, `records this small fill the stream with more than two checks' worth below the mark: ${below} of ${perRecord.toFixed(0)} bytes`);
    await send(2000, below - 2000);
    assert.ok((await pollUntil(async () => (await count()) === below, { timeoutMs: 60_000, intervalMs: 300 })).value, 'all stored');
    info = await jsm.streams.info('INGEST');
    assert.equal(info.state.messages, below, 'none purged below the mark');
    const lastBelow = info.state.last_seq;
    assert.equal(await stack.metric('evalbus_ingest_stream_purges_total'), purges);

    // past the mark: the stored ones go, in slices
    const more = Math.ceil((0.1 * MAX_BYTES) / perRecord);
    await send(below, more);
    const total = below + more;
    assert.ok((await pollUntil(async () => (await count()) === total, { timeoutMs: 60_000, intervalMs: 300 })).value, 'all stored');
    // every record stored when the stream passed the mark goes (those that came after it may
    // stay: the stream is below the mark again)
    const gone = await pollUntil(async () => (await jsm.streams.info('INGEST')).state.first_seq > lastBelow,
      { timeoutMs: 20_000, intervalMs: 300 });
    assert.ok(gone.value, 'every record stored before the mark was passed is purged');
    // counted once done: after its last slice, so a moment after the stream shows it
    const counted = await pollUntil(async () => (await stack.metric('evalbus_ingest_stream_purges_total')) === purges + 1,
      { timeoutMs: 5_000, intervalMs: 100 });
    assert.ok(counted.value, 'the purge is counted once, when done');
    const log = fs.readFileSync(path.join(stack.state, 'logs', 'ingest.log'), 'utf8');
    const checks = [...log.matchAll(/INGEST: the records stored from position (\d+) to (\d+) purged to make room, in (\d+) slices?(; the rest next)?/g)]
      .map((m) => ({ from: Number(m[1]), to: Number(m[2]), slices: Number(m[3]), rest: Boolean(m[4]) }));
    assert.ok(checks.length >= 3, `the purge took several checks: ${JSON.stringify(checks)}`);
    checks.forEach((c, i) => {
      assert.ok(c.slices <= PER_CHECK && c.to - c.from + 1 <= c.slices * SLICE, `check ${i}: in slices of at most ${SLICE}, ${PER_CHECK} a check: ${JSON.stringify(c)}`);
      if (i > 0) assert.equal(c.from, checks[i - 1].to + 1, `check ${i} goes on where the one before stopped`);
      assert.equal(c.rest, i < checks.length - 1, `check ${i}: "the rest next" on every check but the last`);
    });
    assert.ok(checks.at(-1).to >= lastBelow, 'the last check reached every record stored before the mark was passed');
    assert.equal(await count(), total, 'nothing acknowledged lost, nothing twice');
  }));
});
