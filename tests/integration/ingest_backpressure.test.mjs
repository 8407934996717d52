// The INGEST stream keeps records by limits and refuses new ones when full; the ingest service
// refuses new batches itself before that, once the records not yet stored pass the high water,
// and never lets a record it acknowledged go unstored. Here no
// writer runs at first (writer-threads 0, as when every writer or PostgreSQL is down), the
// stream is small (1 MiB, high water 50 %), and traces arrive at a steady pace:
//   - once records not yet stored pass the mark, new batches are refused with 503
//     `unavailable` and Retry-After (nothing acknowledged beyond what the stream can hold);
//   - a replica with writers then stores every acknowledged trace, exactly once, none lost;
//   - with the backlog gone, batches are accepted again.
// And JetStream's own refusals reach the caller at once, not after the publish timeout: a record
// over the stream's message size limit, and records whose subject no stream takes.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { headers as natsHeaders } from 'nats';

import { DOWN_TIMEOUT_MS, Stack, UP_TIMEOUT_MS, pollUntil, protoRoot, sleep, uniqueSlug } from './harness.mjs';

const LIMITS = { EVALBUS_STREAM_MAX_BYTES: '1MiB', EVALBUS_STREAM_HIGH_WATER: '50' };
const stack = new Stack('ingest-backpressure', { env: { ...LIMITS, EVALBUS_WRITER_THREADS: '0' } });
const T = { timeout: 180_000 };

/** n traces of about 8 KB each (about 40 KB a batch of 5). */
function batch(prefix, from, n) {
  const filler = 'lorem ipsum dolor sit amet '.repeat(300);
  return Array.from({ length: n }, (_, k) => ({
    id: `${prefix}-${String(from + k).padStart(5, '0')}`,
    project: 'backpressure',
    name: 'paced',
    start_time: new Date(Date.now() - 60_000).toISOString(),
    input: { messages: [{ role: 'user', content: `${from + k} ${filler}` }] },
    output: 'ok',
  }));
}

const metric = (name) => stack.metric(name);

describe('ingest: records not yet stored are never pushed out of a full stream', () => {
  let A;

  before(async () => {
    await stack.up();
    A = await stack.bootstrap(uniqueSlug('bp'));
    await stack.setTier(A.team, 'enterprise', A.key); // no request rate limit in the way
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('refuses new batches with 503 once the backlog passes the high water, then stores every acknowledged trace once a writer runs', T, stack.wrap(async () => {
    const accepted = [];
    let refused = null;
    let next = 0;
    const deadline = Date.now() + 60_000;
    // about 200 KB/s: the watch (once a second) sees the mark passed long before the stream is full
    while (!refused) {
      assert.ok(Date.now() < deadline, `no refusal within 60 s; ${accepted.length} traces accepted`);
      const traces = batch('bp', next, 5);
      next += 5;
      const r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces } });
      if (r.status === 202) {
        accepted.push(...r.body.accepted);
      } else {
        assert.equal(r.status, 503, `a batch is accepted whole or refused whole: ${r.status} ${r.text.slice(0, 300)}`);
        refused = r;
      }
      await sleep(200);
    }
    // the answer says why: the stream is full of traces not yet stored (not that it is down)
    const FULL = 'the ingest stream is full of traces not yet stored; retry in a few seconds';
    assert.equal(refused.body.error.code, 'unavailable');
    assert.equal(refused.body.error.message, FULL);
    assert.equal(refused.headers.get('retry-after'), '5');
    assert.ok(refused.body.rejected.every((x) => x.error.code === 'unavailable' && x.error.message === FULL), refused.text.slice(0, 300));
    assert.ok(accepted.length >= 40, `about half of 1 MiB was accepted first (${accepted.length} traces)`);
    assert.equal(await metric('evalbus_ingest_stream_full'), 1, 'the refusal shows in /metrics');
    assert.ok((await metric('evalbus_ingest_refused_stream_full_total')) >= 5);
    // refused for as long as nothing is stored
    await sleep(1500);
    const again = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: batch('bp', next, 5) } });
    assert.equal(again.status, 503, 'still refused while the backlog stays');
    // over OTLP too (the exporter retries the whole request)
    const now = BigInt(Date.now()) * 1000000n;
    const otlp = await stack.api('POST', '/otlp/v1/traces', { base: stack.url, key: A.key, body: { resourceSpans: [{ scopeSpans: [{ spans: [
      { traceId: crypto.randomBytes(16).toString('hex'), spanId: crypto.randomBytes(8).toString('hex'), name: 'bp-otlp', startTimeUnixNano: String(now), endTimeUnixNano: String(now + 1000n) }] }] }] } });
    assert.equal(otlp.status, 503, otlp.text);
    assert.equal(otlp.headers.get('retry-after'), '5');
    assert.equal(otlp.body.code, 14, 'UNAVAILABLE');
    assert.match(otlp.body.message, /^the ingest stream is full of traces not yet stored and did not take 1 of 1 traces; retry in a few seconds$/);
    // and over NATS, in the IngestAck
    const root = await protoRoot('evalbus/v1/trace.proto');
    const [TraceBatch, IngestAck] = ['TraceBatch', 'IngestAck'].map((n) => root.lookupType(`evalbus.v1.${n}`));
    const h = natsHeaders();
    h.set('Evalbus-Api-Key', A.key);
    const reply = await (await stack.nats()).request(`evalbus.v1.ingest.traces.${A.team}`,
      TraceBatch.encode(TraceBatch.fromObject({ traces: [{ id: 'bp-nats-1', project: 'backpressure' }] })).finish(),
      { timeout: 10_000, headers: h, noMux: true });
    const ack = IngestAck.toObject(IngestAck.decode(reply.data), { defaults: true, arrays: true });
    assert.deepEqual(ack.accepted_ids, []);
    assert.deepEqual(ack.rejected.map((x) => [x.index, x.id, x.code, x.message]), [[0, 'bp-nats-1', 'unavailable', FULL]]);

    // a replica with writers stores the backlog: every acknowledged trace, once
    await stack.spawnService('ingest', { ...LIMITS, EVALBUS_WRITER_THREADS: '2' });
    const teamId = (await stack.whoami(A.key)).team.id;
    const stored = await pollUntil(async () => {
      const rows = await stack.psql(`SELECT count(*), count(DISTINCT id) FROM ingest.traces WHERE team_id = '${teamId}'`);
      return Number(rows[0][0]) >= accepted.length ? rows[0] : null;
    }, { timeoutMs: 60_000, intervalMs: 300 });
    assert.ok(stored.value, `all ${accepted.length} acknowledged traces stored`);
    const ids = (await stack.psql(`SELECT id FROM ingest.traces WHERE team_id = '${teamId}' ORDER BY id`)).map((r) => r[0]);
    assert.deepEqual(ids, [...accepted].sort(), 'exactly the acknowledged traces, each once: none pushed out, none refused stored');

    // the backlog is gone: accepted again within a few seconds
    const open = await pollUntil(async () => {
      const r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: batch('bp-late', next, 1) } });
      next += 1;
      return r.status === 202 ? r : null;
    }, { timeoutMs: 15_000, intervalMs: 500 });
    assert.ok(open.value, 'batches are accepted again once the writer has caught up');
    assert.equal(await metric('evalbus_ingest_stream_full'), 0);
  }));

  it('a record JetStream refuses, or that no stream takes, is answered 503 at once and never stored', T, stack.wrap(async () => {
    const jsm = await (await stack.nats()).jetstreamManager();
    const config = (await jsm.streams.info('INGEST')).config;
    const log = path.join(stack.state, 'logs', 'ingest.log');
    const teamId = (await stack.whoami(A.key)).team.id;
    const send = async (id) => {
      const t = Date.now();
      const r = await stack.api('POST', '/api/v1/traces', { base: stack.env.EVALBUS_INGEST_URL, key: A.key, timeoutMs: 20_000, body: { traces: batch(id, 0, 2) } });
      return { r, ms: Date.now() - t };
    };
    const refusedAtOnce = ({ r, ms }, what) => {
      assert.equal(r.status, 503, `${what}: ${r.status} ${r.text.slice(0, 300)}`);
      assert.deepEqual(r.body.accepted, [], what);
      for (const x of r.body.rejected) {
        assert.equal(x.error.code, 'unavailable', `${what}: ${r.text.slice(0, 300)}`);
        // refused, so not "it may still be stored"
        assert.equal(x.error.message, 'the ingest stream did not take it; retry', what);
      }
      // the publish timeout is 5 s: the answer did not wait for it
      assert.ok(ms < 3000, `${what}: answered after ${ms} ms`);
    };
    const logBefore = fs.readFileSync(log, 'utf8').length;
    try {
      // each record (about 8 KB) is over the stream's limit: JetStream answers with an error
      await jsm.streams.update('INGEST', { ...config, max_msg_size: 1024 });
      refusedAtOnce(await send('too-big'), 'over max_msg_size');
      assert.match(fs.readFileSync(log, 'utf8').slice(logBefore), /JetStream refused the record: message size exceeds maximum allowed/);
      // no stream takes the subject: the server answers "no responders"
      await jsm.streams.update('INGEST', { ...config, subjects: ['evalbus.v1.ingest.nothing.>'] });
      refusedAtOnce(await send('no-stream'), 'no stream for the subject');
    } finally {
      await jsm.streams.update('INGEST', config);
    }
    const ok = await send('bp-back');
    assert.equal(ok.r.status, 202, `with the stream as it was: ${ok.r.status} ${ok.r.text.slice(0, 300)}`);
    const stored = await pollUntil(async () => {
      const rows = await stack.psql(`SELECT count(*) FROM ingest.traces WHERE team_id = '${teamId}' AND id LIKE 'bp-back-%'`);
      return Number(rows[0][0]) === 2;
    }, { timeoutMs: 30_000, intervalMs: 300 });
    assert.ok(stored.value, 'the batch sent afterwards is stored');
    const refused = await stack.psql(`SELECT count(*) FROM ingest.traces WHERE team_id = '${teamId}' AND (id LIKE 'too-big-%' OR id LIKE 'no-stream-%')`);
    assert.equal(Number(refused[0][0]), 0, 'nothing refused was stored');
  }));
});
