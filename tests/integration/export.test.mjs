// The export service against a real stack (file object store): each format against its
// contract, pseudonymization (tokens stable within a team, different across teams, look-alikes
// kept), statistics, the file beside its manifest, downloads with their SHA-256, streamed exports
// and statistics without exporting (and their stop at SIGTERM), progress as server-sent events
// (and their end at SIGTERM), downloads of a file changed in the store (JSON errors, never
// attachments), cross-team 404s, roles, the audit log and bad requests.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';

import { parse as parseCsv } from 'csv-parse/sync';

import {
  BIN_DIR,
  DOWN_TIMEOUT_MS,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  assertStatus,
  pidAlive,
  pollUntil,
  sleep,
  uniqueSlug,
} from './harness.mjs';

const STUCK_AFTER_MS = 4000;
const stack = new Stack('export', {
  // schedules looked for every second; a job that meets a store error fails at once; an ingest
  // transaction open 4 s is named in a warning
  env: { EVALBUS_EXPORT_SCHEDULE_INTERVAL: '1s', EVALBUS_EXPORT_MAX_ATTEMPTS: '1', EVALBUS_EXPORT_SCHEDULE_STUCK_AFTER: `${STUCK_AFTER_MS}ms` },
});
const T = { timeout: 120_000 };
// a scheduled run takes the traces stored until 2 s before it (scheduler.c SETTLE_MARGIN)
const SETTLE_MS = 2100;
const PG_TIME = (expr) => `to_char(${expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
const JOB_TIMEOUT_MS = 60_000;

const iso = (ms) => new Date(ms).toISOString();
const MODELS = [
  ['gpt-4o', 'openai'],
  ['claude-sonnet-4', 'anthropic'],
  ['gpt-4o-mini', 'openai'],
];

function api(method, p, key, opts = {}) {
  return stack.api(method, p, { base: stack.url, key, ...opts });
}

/** The sample: 60 chat traces with PII, 10 preference pairs, 12 NL-to-SQL traces. */
function sample(tag) {
  const t0 = Date.now() - 3_600_000;
  const traces = [];
  for (let i = 0; i < 60; i++) {
    const [model, provider] = MODELS[i % 3];
    const t = {
      id: `${tag}-chat-${i}`,
      project: 'support',
      name: i === 7 ? '=HYPERLINK("http://evil.test","x")' : 'answer',
      model,
      provider,
      status: i % 10 === 9 ? 'error' : 'ok',
      start_time: iso(t0 + i * 1000),
      end_time: iso(t0 + i * 1000 + 800),
      usage: { input_tokens: 100 + i, output_tokens: 20 + i },
      cost_usd: 0.001,
      input: {
        messages: [
          { role: 'system', content: 'You are a support agent.' },
          { role: 'user', content: `I am ann${i % 7}@example.com, call me at +1 415 555 0${100 + (i % 50)}. Where is order #A-10023?` },
        ],
      },
      output: { messages: [{ role: 'assistant', content: `Order #A-10023 shipped with release 2.3.1 on 2026-11-20 (case ${i}).` }] },
      tags: i % 2 ? ['prod'] : ['beta'],
      metadata: { customer_tier: i % 4 ? 'gold' : 'silver' },
    };
    if (i % 5 === 0) {
      t.output.messages[0] = {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: `c${i}`, type: 'function', function: { name: 'lookup_order', arguments: '{"order":"A-10023"}' } }],
      };
    }
    traces.push(t);
  }
  for (let k = 0; k < 10; k++) {
    const input = { messages: [{ role: 'user', content: `Summarize ticket ${k} in one line.` }] };
    for (const good of [true, false]) {
      traces.push({
        id: `${tag}-pref-${k}-${good ? 'a' : 'r'}`,
        project: 'summaries',
        model: 'gpt-4o',
        provider: 'openai',
        status: 'ok',
        start_time: iso(t0 + 100_000 + k * 1000 + (good ? 0 : 500)),
        input,
        output: { messages: [{ role: 'assistant', content: good ? `Ticket ${k}: refund approved.` : `I cannot help with ticket ${k}.` }] },
      });
    }
  }
  const queries = [
    ['How many customers signed up last week?', 'SELECT count(*) FROM customers WHERE created_at > now() - interval \'7 days\''],
    ['Top products by revenue', 'SELECT p.name, sum(o.total) FROM orders o JOIN products p ON p.id = o.product_id GROUP BY 1'],
    ['Mark order 5 shipped', 'UPDATE orders SET status = \'shipped\' WHERE id = 5'],
  ];
  for (let i = 0; i < 12; i++) {
    const [q, sql] = queries[i % 3];
    traces.push({
      id: `${tag}-sql-${i}`,
      project: 'sql-bot',
      model: 'gpt-4o',
      provider: 'openai',
      status: i === 11 ? 'error' : 'ok',
      start_time: iso(t0 + 200_000 + i * 1000),
      input: { messages: [{ role: 'user', content: q }] },
      output: { messages: [{ role: 'assistant', content: sql }] },
      metadata: { sql, question: q, database_type: 'postgresql', database: 'shopdb' },
    });
  }
  return traces;
}

async function ingest(key, traces) {
  for (let i = 0; i < traces.length; i += 50) {
    const r = await api('POST', '/api/v1/traces', key, { body: { traces: traces.slice(i, i + 50) } });
    assertStatus(r, 202, 'ingest sample');
  }
  // every one: a batch can be committed by the writers in more than one transaction
  const team = (await stack.whoami(key)).team.id;
  const ids = traces.map((t) => `'${t.id}'`).join(', ');
  const count = async () => Number((await stack.psql(`SELECT count(*) FROM ingest.traces WHERE team_id = '${team}' AND id IN (${ids})`))[0][0]);
  const seen = await pollUntil(async () => (await count()) === traces.length, { timeoutMs: 20_000, intervalMs: 200 });
  assert.ok(seen.value, `sample stored (${await count()} of ${traces.length})`);
}

async function review(key, id, decision) {
  const r = await api('POST', `/api/v1/traces/${id}/review`, key, {
    body: decision === 'reject' ? { decision, reason: 'incorrect' } : { decision },
  });
  assertStatus(r, 201, `review ${id}`);
}

/** Stores one trace and waits until a scheduled run started now would take it: readable, and
 * SETTLE_MS old. */
async function storeForRun(key, id, project, fields = { input: 'q', output: 'a' }) {
  assertStatus(await api('POST', '/api/v1/traces', key, { body: { traces: [{ id, project, ...fields }] } }), 202);
  const stored = await pollUntil(async () => (await api('GET', `/api/v1/traces/${id}`, key)).status === 200, { timeoutMs: 10_000 });
  assert.ok(stored.value, `${id} stored`);
  await sleep(SETTLE_MS);
}

/** POST /api/v1/export-schedules; resolves the schedule's id. */
async function createSchedule(key, body) {
  const c = await api('POST', '/api/v1/export-schedules', key, { body });
  assertStatus(c, 201, 'create schedule');
  return c.body.id;
}

/** Makes schedule sid due now. */
const makeDue = (sid) => stack.psql(`UPDATE export.schedules SET next_run_at = now() WHERE id = '${sid}'`);

/** Waits for a job of schedule sid in `state` that is not one of `seen` (ids); resolves it. */
async function scheduledRun(key, sid, { state = 'succeeded', seen = [], timeoutMs = 30_000 } = {}) {
  const run = await pollUntil(async () => (await api('GET', '/api/v1/exports?limit=200', key)).body.exports
    .find((e) => e.schedule_id === sid && e.state === state && !seen.includes(e.id)), { timeoutMs, intervalMs: 300 });
  assert.ok(run.value, `a ${state} run of schedule ${sid} after ${seen.length}`);
  return run.value;
}

/** POST /api/v1/exports, then polls until the job is no longer queued or running. */
async function runExport(key, body) {
  const r = await api('POST', '/api/v1/exports', key, { body });
  assertStatus(r, 202, `create export ${JSON.stringify(body)}`);
  assert.equal(r.body.state, 'queued');
  assert.match(r.body.id, /^[0-9a-f-]{36}$/);
  assert.equal(r.headers.get('location'), `/api/v1/exports/${r.body.id}`);
  let job;
  const done = await pollUntil(async () => {
    const g = await api('GET', `/api/v1/exports/${r.body.id}`, key);
    assertStatus(g, 200, 'get export');
    job = g.body;
    return !['queued', 'running'].includes(job.state) ? job : null;
  }, { timeoutMs: JOB_TIMEOUT_MS, intervalMs: 200 });
  assert.ok(done.value, `export finished within ${JOB_TIMEOUT_MS} ms; last: ${JSON.stringify(job)}`);
  return job;
}

/** Downloads a finished job; checks the SHA-256 against the result; returns the bytes,
 * decompressed. */
async function download(key, job) {
  const r = await fetch(`${stack.url}/api/v1/exports/${job.id}/download`, {
    headers: { authorization: `Bearer ${key}` },
    redirect: 'manual',
  });
  assert.equal(r.status, 200, `download ${job.id}: ${r.status}`);
  assert.match(r.headers.get('content-disposition') ?? '', new RegExp(job.result.file_name.replace(/\./g, '\\.')));
  const raw = Buffer.from(await r.arrayBuffer());
  assert.equal(raw.length, job.result.bytes, 'downloaded size = result.bytes');
  assert.equal(crypto.createHash('sha256').update(raw).digest('hex'), job.result.sha256, 'SHA-256 matches');
  if (job.compression === 'gzip') return zlib.gunzipSync(raw).toString('utf8');
  if (job.compression === 'zstd') return zlib.zstdDecompressSync ? zlib.zstdDecompressSync(raw).toString('utf8') : null;
  return raw.toString('utf8');
}

/** Stores n traces of project 'bulk' for the team of key straight into ingest's tables (today's
 * partitions), each with an e-mail address to pseudonymize: enough rows that a stream of them
 * is still running a moment after its first bytes. */
async function bulkTraces(key, n) {
  const teamId = (await stack.whoami(key)).team.id;
  const day = new Date().toISOString().slice(0, 10);
  const ymd = day.replace(/-/g, '');
  const next = new Date(Date.parse(day) + 86_400_000).toISOString().slice(0, 10);
  await stack.psql(`SELECT pg_advisory_lock(7236002, 1);
    CREATE TABLE IF NOT EXISTS ingest.traces_p${ymd} PARTITION OF ingest.traces FOR VALUES FROM ('${day} 00:00:00+00') TO ('${next} 00:00:00+00');
    CREATE TABLE IF NOT EXISTS ingest.observations_p${ymd} PARTITION OF ingest.observations FOR VALUES FROM ('${day} 00:00:00+00') TO ('${next} 00:00:00+00');
    SELECT pg_advisory_unlock(7236002, 1);
    INSERT INTO ingest.trace_keys (team_id, id, part_time)
      SELECT '${teamId}', 'bulk-' || g, '${day} 00:00:00+00'::timestamptz + g * interval '1 ms' FROM generate_series(1, ${n}) g;
    INSERT INTO ingest.traces (team_id, part_time, id, project, source, stream_seq, input)
      SELECT '${teamId}', '${day} 00:00:00+00'::timestamptz + g * interval '1 ms', 'bulk-' || g, 'bulk', 'api', g,
        jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user',
          'content', 'write to me at user' || g || '@example.com about order ' || g)))
      FROM generate_series(1, ${n}) g;`);
}

/** Reads an event stream's body as it comes: `text` grows; `end` resolves {clean: true} when
 * the body ends as complete, {clean: false, error} when it is cut short, with `at` (ms). */
function follow(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const s = { text: '' };
  s.end = (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return { clean: true, at: performance.now() };
        s.text += decoder.decode(value, { stream: true });
      }
    } catch (error) {
      return { clean: false, error, at: performance.now() };
    }
  })();
  return s;
}

const jsonLines = (text) => text.split('\n').filter((l) => l.length > 0).map((l, i) => {
  try {
    return JSON.parse(l);
  } catch (e) {
    throw new Error(`line ${i + 1} is not JSON: ${e.message}: ${l.slice(0, 200)}`);
  }
});

describe('export: jobs, formats, privacy', () => {
  let A; // owner of team A: {key, team, ...}
  let B;
  let traces;
  let storeRoot;

  before(async () => {
    assert.ok(fs.existsSync(path.join(BIN_DIR, 'evalbus-export')), `${BIN_DIR}/evalbus-export must exist`);
    await stack.up();
    assert.ok(stack.env.EVALBUS_EXPORT_URL, 'stack.env names EVALBUS_EXPORT_URL (export was started)');
    storeRoot = new URL(stack.env.EVALBUS_OBJECT_STORE).pathname;
    A = await stack.bootstrap(uniqueSlug('ea'));
    B = await stack.bootstrap(uniqueSlug('eb'));
    await stack.setTier(A.team, 'enterprise', A.key);
    await stack.setTier(B.team, 'enterprise', B.key);
    traces = sample('a');
    await ingest(A.key, traces);
    for (let k = 0; k < 10; k++) {
      await review(A.key, `a-pref-${k}-a`, 'accept');
      await review(A.key, `a-pref-${k}-r`, 'reject');
    }
    await ingest(B.key, sample('b').slice(0, 5));
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  // A listing, a download and an event stream read their job on an API thread: one waiting on a
  // lock holds up only itself.
  const finishedJob = async () => {
    const job = await runExport(A.key, { format: 'json', compression: 'none', filter: { projects: ['summaries'] } });
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    return job;
  };
  for (const [what, path, check] of [
    ['a listing', async () => '/api/v1/exports?limit=1', (r) => assertStatus(r, 200)],
    ['a download', async () => `/api/v1/exports/${(await finishedJob()).id}/download`,
      (r) => { assertStatus(r, 200); assert.equal(JSON.parse(r.text).records.length, 20, 'the whole file'); }],
    ['an event stream', async () => `/api/v1/exports/${(await finishedJob()).id}/events`,
      (r) => { assertStatus(r, 200); assert.match(r.text, /event: done\ndata: \{.*"state":"succeeded"/); }],
  ]) {
    it(`${what} waiting on a lock holds up only itself: health checks and settings are answered meanwhile`, T, stack.wrap(async () => {
      const exp = (p, key) => stack.api('GET', p, { base: stack.env.EVALBUS_EXPORT_URL, key });
      assertStatus(await exp('/api/v1/export-settings', A.key), 200, 'the key is verified (and cached)');
      const target = await path();
      const order = [];
      const { released } = await stack.lockTable('export.jobs', 3000);
      const locker = released.then(() => order.push('lock released'));
      const blocked = exp(target, A.key).then((r) => { order.push('blocked'); return r; });
      await sleep(200); // it waits on the lock now
      assertStatus(await exp('/healthz'), 200, 'healthz answers');
      order.push('healthz');
      assertStatus(await exp('/api/v1/export-settings', A.key), 200, 'the settings answer');
      order.push('settings');
      check(await blocked);
      await locker;
      assert.deepEqual(order.slice(0, 2), ['healthz', 'settings'],
        `the health check and the settings were answered while ${what} waited (order: ${order.join(', ')})`);
    }));
  }

  it('a client that leaves while its download or event stream waits for its job harms nothing', T, stack.wrap(async () => {
    const job = await finishedJob();
    const base = stack.env.EVALBUS_EXPORT_URL;
    const { released } = await stack.lockTable('export.jobs', 2000);
    const left = [];
    for (const what of ['download', 'events', 'events']) {
      const ac = new AbortController();
      left.push(fetch(`${base}/api/v1/exports/${job.id}/${what}`, { headers: { authorization: `Bearer ${A.key}` }, signal: ac.signal })
        .then(() => 'answered', () => 'left'));
      await sleep(200); // its job lookup waits on the lock
      ac.abort();
    }
    assert.deepEqual(await Promise.all(left), ['left', 'left', 'left'], 'the clients left before any answer');
    await released;
    await sleep(500); // the lookups go on and find their clients gone
    assertStatus(await stack.api('GET', '/healthz', { base }), 200, 'the replica still answers');
    const r = await stack.api('GET', `/api/v1/exports/${job.id}/events`, { base, key: A.key });
    assertStatus(r, 200, 'an event stream still works');
    assert.match(r.text, /event: done/);
  }));

  it('a schedule pass waiting on a lock holds up nothing else: health checks and settings are answered meanwhile', T, stack.wrap(async () => {
    const exp = (p, key) => stack.api('GET', p, { base: stack.env.EVALBUS_EXPORT_URL, key });
    assertStatus(await exp('/api/v1/export-settings', A.key), 200, 'the key is verified (and cached)');
    const order = [];
    const { released } = await stack.lockTable('export.schedules', 3000);
    const locker = released.then(() => order.push('lock released'));
    await sleep(1500); // a pass (every second here) waits on the lock now
    assertStatus(await exp('/healthz'), 200, 'healthz answers');
    order.push('healthz');
    assertStatus(await exp('/api/v1/export-settings', A.key), 200, 'the settings answer');
    order.push('settings');
    await locker;
    assert.deepEqual(order.slice(0, 2), ['healthz', 'settings'],
      `the health check and the settings were answered while the pass waited (order: ${order.join(', ')})`);
    const waited = await stack.psql(`SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%FROM export.schedules%' AND wait_event_type = 'Lock'`);
    assert.equal(waited[0][0], '0', 'no pass waits any more once the lock is gone');
  }));

  it('jsonl + gzip: every trace once, PII replaced by tokens, look-alikes kept, file and manifest in the store', T, stack.wrap(async () => {
    const job = await runExport(A.key, { format: 'jsonl' });
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    assert.equal(job.compression, 'gzip');
    assert.equal(job.anonymize, true);
    assert.equal(job.progress.percent, 100);
    assert.equal(job.progress.total_rows, traces.length, 'the total is exact once done');
    assert.equal(job.progress.rows, traces.length);
    assert.equal(job.result.rows, traces.length);
    const text = await download(A.key, job);
    const recs = jsonLines(text);
    assert.equal(recs.length, traces.length, 'one line per trace');
    assert.deepEqual(recs.map((r) => r.id).sort(), traces.map((t) => t.id).sort(), 'every trace exactly once');
    assert.ok(!/ann\d@example\.com/.test(text), 'no e-mail address survives');
    assert.ok(!/415 555/.test(text), 'no phone number survives');
    assert.match(text, /<EMAIL_[0-9a-f]{8}>/);
    assert.match(text, /<PHONE_[0-9a-f]{8}>/);
    assert.match(text, /order #A-10023/, 'order numbers stay');
    assert.match(text, /release 2\.3\.1 on 2026-11-20/, 'versions and dates stay');
    const rec = recs.find((r) => r.id === 'a-pref-0-a');
    assert.equal(rec.review_state, 'accepted');
    assert.equal(rec.reviews[0].decision, 'accept');
    assert.ok(Array.isArray(rec.observations) && Array.isArray(rec.scores));
    // the file and its manifest, side by side under the team's folder
    const file = path.join(storeRoot, job.result.key);
    assert.ok(fs.existsSync(file), `${file} exists`);
    const manifest = JSON.parse(fs.readFileSync(path.join(storeRoot, job.result.manifest_key), 'utf8'));
    assert.equal(manifest.job_id, job.id);
    assert.equal(manifest.result.sha256, job.result.sha256);
    assert.equal(manifest.result.statistics.records ?? manifest.result.rows, traces.length);
    assert.ok(!fs.readdirSync(path.dirname(file)).some((f) => f.includes('.partial')), 'no partial file left');
    // statistics
    const st = job.result.statistics;
    assert.ok(st, 'statistics stored with the job');
    assert.equal(JSON.stringify(st).includes('example.com'), false, 'statistics hold no PII');
  }));

  it('records built from the view\'s columns equal the view\'s record, key for key (observations, reviews, scores)', T, stack.wrap(async () => {
    // a team of its own, so the shared sample's counts stay as they are
    const C = await stack.bootstrap(uniqueSlug('ec'));
    const t0 = Date.now() - 1_800_000;
    const rich = [
      {
        id: 'c-rich-1', project: 'agents', name: 'plan', model: 'gpt-4o', provider: 'openai', status: 'error',
        status_message: 'tool failed: "timeout"', start_time: iso(t0), end_time: iso(t0 + 1234),
        usage: { input_tokens: 9007199254740991, output_tokens: 0 }, cost_usd: 0.000125,
        input: { messages: [{ role: 'system', content: 'Ünïcödé ✓ and "quotes" \\ back\nslash' }, { role: 'user', content: [{ type: 'text', text: 'part' }] }] },
        output: { messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'k1', type: 'function', function: { name: 'f', arguments: '{"a":[1,2.5,null]}' } }] }] },
        metadata: { nested: { deep: [true, false, null, -1.5e-7] }, emoji: '😀' },
        tags: ['x', 'y z'], session_id: 's-1', user_id: 'u-1', environment: 'prod', release: '9.9.9',
        observations: [
          { id: 'o2', type: 'span', name: 'retrieve', start_time: iso(t0 + 10), end_time: iso(t0 + 20) },
          { id: 'o1', type: 'generation', name: 'llm', start_time: iso(t0 + 5), model: 'gpt-4o', usage: { input_tokens: 3, output_tokens: 4 }, cost_usd: 0.5, input: 'hi', output: 'hello', metadata: { k: 1 } },
        ],
      },
      { id: 'c-bare-2', project: 'agents', start_time: iso(t0 + 5000) },
    ];
    // a 64-bit id in metadata, sent as raw text (JSON.stringify would round it first)
    const bigMember = '"snowflake":1234567890123456789';
    assertStatus(await api('POST', '/api/v1/traces', C.key, {
      raw: `{"traces":[{"id":"c-big-3","project":"agents","start_time":"${iso(t0 + 6000)}","metadata":{${bigMember}}}]}`,
    }), 202);
    await ingest(C.key, rich);
    const stored = await pollUntil(async () => (await stack.psql("SELECT count(*) FROM ingest.traces WHERE id = 'c-big-3'"))[0][0] === '1', { timeoutMs: 20_000, intervalMs: 200 });
    assert.ok(stored.value, 'c-big-3 stored');
    await review(C.key, 'c-rich-1', 'reject');
    await review(C.key, 'c-rich-1', 'accept');
    for (const body of [
      { trace_id: 'c-rich-1', name: 'quality', value: 0.75, source: 'llm_judge', comment: 'judge' },
      { trace_id: 'c-rich-1', name: 'helpful', value: true },
      { trace_id: 'c-rich-1', observation_id: 'o1', name: 'tone', value: 'dry' },
    ]) assertStatus(await api('POST', '/api/v1/scores', C.key, { body }), 201, 'score');
    const job = await runExport(C.key, { format: 'jsonl', anonymize: false, compression: 'none' });
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    const text = await download(C.key, job);
    const got = jsonLines(text);
    assert.ok(text.includes(bigMember), 'a 64-bit id in metadata is written exactly');
    const teamId = (await stack.whoami(C.key)).team.id;
    assert.match(teamId, /^[0-9a-f-]{36}$/);
    const rows = await stack.psql(`SELECT v.record::text FROM ingest.export_traces v
      WHERE v.team_id = '${teamId}' ORDER BY v.part_time, v.id`);
    const want = rows.map((r) => JSON.parse(r[0]));
    assert.equal(want.length, 3);
    assert.deepEqual(got, want, 'the export writes exactly the view\'s record, in the view\'s order');
    assert.deepEqual(Object.keys(got[0]), Object.keys(want[0]), 'keys in the documented order');
    const r1 = got.find((r) => r.id === 'c-rich-1');
    assert.equal(r1.observations.length, 2);
    assert.equal(r1.reviews.length, 2);
    assert.equal(r1.reviews[0].decision, 'accept', 'newest review first');
    assert.equal(r1.scores.length, 3);
    assert.deepEqual(r1.tags, ['x', 'y z']);
    assert.match(r1.start_time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    const bare = got.find((r) => r.id === 'c-bare-2');
    assert.deepEqual([bare.observations, bare.reviews, bare.scores, bare.end_time], [[], [], [], null]);
  }));

  it('filters select exactly the matching traces (model, status, project, tags, time)', T, stack.wrap(async () => {
    const want = traces.filter((t) => t.model === 'gpt-4o' && t.status === 'ok' && t.project === 'support' && (t.tags ?? []).includes('prod'));
    const job = await runExport(A.key, {
      format: 'jsonl',
      compression: 'none',
      filter: { models: ['gpt-4o'], statuses: ['ok'], projects: ['support'], tags: ['prod'], since: iso(Date.now() - 7_200_000) },
    });
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    const recs = jsonLines(await download(A.key, job));
    assert.deepEqual(recs.map((r) => r.id).sort(), want.map((t) => t.id).sort());
    const none = await runExport(A.key, { format: 'jsonl', compression: 'none', filter: { until: iso(Date.now() - 86_400_000 * 30) } });
    assert.equal(none.state, 'succeeded');
    assert.equal(none.result.rows, 0);
  }));

  it('openai-chat: the fine-tuning contract holds on every line; skipped records are counted by reason', T, stack.wrap(async () => {
    const job = await runExport(A.key, { format: 'openai-chat', compression: 'zstd', filter: { projects: ['support'] } });
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    assert.equal(job.result.file_name.endsWith('.jsonl.zst'), true);
    const text = await download(A.key, job);
    if (text === null) return; // this Node has no zstd; the SHA-256 was checked
    const lines = jsonLines(text);
    const roles = new Set(['system', 'user', 'assistant', 'tool']);
    for (const l of lines) {
      assert.ok(Array.isArray(l.messages) && l.messages.length > 0);
      assert.ok(l.messages.some((m) => m.role === 'assistant'), 'an assistant message');
      for (const m of l.messages) {
        assert.ok(roles.has(m.role), `role ${m.role}`);
        if (m.tool_calls) {
          for (const c of m.tool_calls) {
            assert.equal(c.type, 'function');
            assert.equal(typeof c.function.arguments, 'string');
          }
        }
      }
    }
    const skipped = job.result.statistics.skipped ?? {};
    const nSkipped = Object.values(skipped).reduce((a, b) => a + b, 0);
    assert.equal(lines.length + nSkipped, 60, `written + skipped = selected (${JSON.stringify(skipped)})`);
    assert.equal(lines.length, job.result.rows);
  }));

  it('openai-preference: one pair per input from its accepted and rejected answers', T, stack.wrap(async () => {
    const job = await runExport(A.key, { format: 'openai-preference', compression: 'none' });
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    const lines = jsonLines(await download(A.key, job));
    assert.equal(lines.length, 10);
    for (const l of lines) {
      const k = /ticket (\d+)/.exec(l.input.messages[0].content)[1];
      assert.equal(l.preferred_output[0].role, 'assistant');
      assert.equal(l.preferred_output[0].content, `Ticket ${k}: refund approved.`);
      assert.equal(l.non_preferred_output[0].content, `I cannot help with ticket ${k}.`);
    }
  }));

  it('anthropic (Bedrock): system apart, user / assistant alternating, starting with user and ending with assistant', T, stack.wrap(async () => {
    const job = await runExport(A.key, { format: 'anthropic', compression: 'gzip', filter: { projects: ['support'] } });
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    const lines = jsonLines(await download(A.key, job));
    assert.ok(lines.length > 0);
    for (const l of lines) {
      assert.equal(typeof l.system, 'string');
      assert.equal(l.messages[0].role, 'user');
      assert.equal(l.messages[l.messages.length - 1].role, 'assistant');
      l.messages.forEach((m, i) => assert.equal(m.role, i % 2 ? 'assistant' : 'user'));
    }
  }));

  it('csv: read back with a real CSV reader; formulas neutralized', T, stack.wrap(async () => {
    const job = await runExport(A.key, { format: 'csv', compression: 'none', filter: { projects: ['support'] } });
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    const text = await download(A.key, job);
    const rows = parseCsv(text, { columns: true, relax_column_count: false });
    assert.equal(rows.length, 60);
    assert.ok('id' in rows[0] && 'model' in rows[0] && 'input_text' in rows[0]);
    const evil = rows.find((r) => r.id === 'a-chat-7');
    assert.ok(evil.name.startsWith("'="), `formula neutralized: ${evil.name}`);
    assert.ok(!text.includes('example.com'));
    const pick = await runExport(A.key, { format: 'csv', compression: 'none', fields: { include: ['id', 'model', 'metadata.customer_tier'] }, filter: { projects: ['support'] } });
    assert.equal(pick.state, 'succeeded', JSON.stringify(pick.error));
    const p = parseCsv(await download(A.key, pick), { columns: true });
    assert.deepEqual(Object.keys(p[0]), ['id', 'model', 'metadata.customer_tier']);
    assert.ok(['gold', 'silver'].includes(p[0]['metadata.customer_tier']));
  }));

  it('sql-pairs: question, SQL, query type, tables, hashed database name', T, stack.wrap(async () => {
    const job = await runExport(A.key, { format: 'sql-pairs', compression: 'none', filter: { projects: ['sql-bot'] } });
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    const lines = jsonLines(await download(A.key, job));
    assert.equal(lines.length, 12);
    const upd = lines.find((l) => l.query_type === 'UPDATE');
    assert.ok(upd, 'an UPDATE');
    assert.deepEqual(upd.tables, ['orders']);
    const join = lines.find((l) => l.sql.includes('JOIN'));
    assert.deepEqual([...join.tables].sort(), ['orders', 'products']);
    for (const l of lines) {
      assert.equal(l.database_type, 'postgresql');
      assert.notEqual(l.database_hash, 'shopdb');
      assert.match(l.database_hash, /^[0-9a-f]{16}$/);
    }
    assert.equal(lines.filter((l) => l.success === false).length, 1);
    const qt = job.result.statistics;
    assert.ok(JSON.stringify(qt).includes('SELECT'), 'query types in the statistics');
  }));

  it('tokens are equal within a team and differ across teams', T, stack.wrap(async () => {
    const tokens = async (key, filter) => {
      const job = await runExport(key, { format: 'jsonl', compression: 'none', filter });
      assert.equal(job.state, 'succeeded');
      const text = await download(key, job);
      const rec = jsonLines(text).find((r) => r.id.endsWith('-chat-0'));
      return /<EMAIL_[0-9a-f]{8}>/.exec(JSON.stringify(rec.input))[0];
    };
    const a1 = await tokens(A.key, { projects: ['support'] });
    const a2 = await tokens(A.key, { models: ['gpt-4o'] });
    const b1 = await tokens(B.key, {});
    assert.equal(a1, a2, 'same value, same team, same token');
    assert.notEqual(a1, b1, 'same value, other team, other token');
  }));

  it('anonymize=false needs the admin role and is audited', T, stack.wrap(async () => {
    const member = await stack.createKey(A.key, { name: 'exporter', role: 'member', scopes: ['exports:read', 'exports:write'] });
    const denied = await api('POST', '/api/v1/exports', member.key, { body: { format: 'jsonl', anonymize: false } });
    assertError(denied, 'forbidden', 'member without anonymization');
    const job = await runExport(A.key, { format: 'jsonl', compression: 'none', anonymize: false, filter: { projects: ['support'] } });
    assert.equal(job.state, 'succeeded');
    assert.match(await download(A.key, job), /ann0@example\.com/, 'raw values without anonymization');
    const seen = await pollUntil(async () => {
      const r = await stack.api('GET', '/api/v1/audit?limit=100', { key: A.key });
      return r.body?.events?.find((e) => e.action === 'export_requested' && e.target === job.id);
    }, { timeoutMs: 5000, intervalMs: 200 });
    assert.ok(seen.value, 'export_requested in the audit log');
    const dl = await pollUntil(async () => {
      const r = await stack.api('GET', '/api/v1/audit?limit=100', { key: A.key });
      return r.body?.events?.find((e) => e.action === 'export_downloaded' && e.target === job.id);
    }, { timeoutMs: 5000, intervalMs: 200 });
    assert.ok(dl.value, 'export_downloaded in the audit log');
  }));

  it("another team's export answers 404 everywhere; lists are per team", T, stack.wrap(async () => {
    const job = await runExport(A.key, { format: 'jsonl', compression: 'none', filter: { projects: ['summaries'] } });
    for (const [m, p] of [['GET', ''], ['GET', '/download'], ['GET', '/events'], ['DELETE', '']]) {
      const r = await api(m, `/api/v1/exports/${job.id}${p}`, B.key);
      assertError(r, 'not_found', `${m} ${p} of another team's export`);
    }
    const list = await api('GET', '/api/v1/exports?limit=200', B.key);
    assertStatus(list, 200);
    assert.ok(!list.body.exports.some((e) => e.id === job.id));
    const mine = await api('GET', '/api/v1/exports?limit=2', A.key);
    assertStatus(mine, 200);
    assert.equal(mine.body.exports.length, 2);
    assert.ok(mine.body.next_cursor, 'a cursor to the next page');
    const next = await api('GET', `/api/v1/exports?limit=2&cursor=${mine.body.next_cursor}`, A.key);
    assertStatus(next, 200);
    assert.ok(!next.body.exports.some((e) => mine.body.exports.some((m) => m.id === e.id)), 'pages do not overlap');
    const done = await api('DELETE', `/api/v1/exports/${job.id}`, A.key);
    assertError(done, 'conflict', 'cancelling a finished export');
  }));

  it('streamed export and statistics without exporting', T, stack.wrap(async () => {
    const r = await api('GET', '/api/v1/exports/stream?format=jsonl&model=gpt-4o&project=support', A.key);
    assertStatus(r, 200, 'stream');
    const lines = jsonLines(r.text);
    assert.equal(lines.length, traces.filter((t) => t.model === 'gpt-4o' && t.project === 'support').length);
    assert.ok(!r.text.includes('example.com'));
    const s = await api('GET', '/api/v1/datasets/statistics?project=sql-bot&format=sql-pairs', A.key);
    assertStatus(s, 200, 'statistics');
    assert.equal(s.body.rows, 12);
    assert.ok(s.body.statistics);
    const bad = await api('GET', '/api/v1/exports/stream?format=parquet', A.key);
    assertError(bad, 'invalid_argument', 'unknown format');
    // a misspelt filter never widens an export to everything; the filter's lists repeat
    const typo = await api('GET', '/api/v1/exports/stream?format=jsonl&modle=gpt-4o', A.key);
    assertError(typo, 'invalid_argument', 'a misspelt filter parameter');
    assert.match(typo.body.error.message, /unknown query parameter 'modle'/);
    assertError(await api('GET', '/api/v1/datasets/statistics?limit=5', A.key), 'invalid_argument', 'statistics take no limit');
    assertError(await api('GET', '/api/v1/datasets/statistics?compression=gzip', A.key), 'invalid_argument', 'statistics take no compression');
    assertError(await api('GET', '/api/v1/exports/stream?format=jsonl&format=csv', A.key), 'invalid_argument', 'format given twice');
    const both = await api('GET', '/api/v1/exports/stream?format=jsonl&model=gpt-4o&model=gpt-4o-mini&project=support', A.key);
    assertStatus(both, 200, 'a repeated model');
    assert.equal(jsonLines(both.text).length, traces.filter((t) => ['gpt-4o', 'gpt-4o-mini'].includes(t.model) && t.project === 'support').length);
  }));

  it('a streamed export that fails after its first bytes is cut short, never ended like a complete body', T, stack.wrap(async () => {
    // a team of its own with enough rows that the stream is still running when its database
    // session is ended from outside (as a failover or an operator would)
    const D = await stack.bootstrap(uniqueSlug('ed'));
    await bulkTraces(D.key, 60000);
    const res = await fetch(`${stack.url}/api/v1/exports/stream?format=jsonl&limit=60000`, {
      headers: { authorization: `Bearer ${D.key}` },
      signal: AbortSignal.timeout(60_000),
    });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    const first = await reader.read();
    assert.ok(!first.done && first.value.length > 0, 'the first bytes arrive');
    const killed = await stack.psql(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
      WHERE query LIKE 'COPY (SELECT v.id::text%' AND pid <> pg_backend_pid()`);
    assert.equal(killed[0][0], '1', 'the stream\'s COPY was running and is ended');
    let received = first.value.length;
    let error = null;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        received += value.length;
      }
    } catch (e) {
      error = e;
    }
    assert.ok(error, `the body must end in an error, not as complete (${received} bytes received)`);
    // the service goes on answering
    const ok = await api('GET', '/api/v1/exports/stream?format=jsonl&project=bulk&limit=5', D.key);
    assertStatus(ok, 200, 'a later stream');
    assert.equal(jsonLines(ok.text).length, 5);
  }));

  it('progress as server-sent events ends with the finished job', T, stack.wrap(async () => {
    const job = await runExport(A.key, { format: 'json', compression: 'none', filter: { projects: ['summaries'] } });
    assert.equal(job.state, 'succeeded');
    const doc = JSON.parse(await download(A.key, job));
    assert.equal(doc.format_version, 1);
    assert.equal(doc.records.length, 20);
    assert.ok(doc.statistics && doc.exported_at);
    const r = await fetch(`${stack.url}/api/v1/exports/${job.id}/events`, { headers: { authorization: `Bearer ${A.key}` }, signal: AbortSignal.timeout(10_000) });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /text\/event-stream/);
    const text = await r.text();
    assert.match(text, /event: done\ndata: \{.*"state":"succeeded"/);
  }));

  it('a download whose file in the store is gone, shortened, emptied or replaced answers a JSON error, never as an attachment', T, stack.wrap(async () => {
    const cases = [
      ['shortened', (f) => fs.truncateSync(f, 10), 'io_error'],
      ['emptied', (f) => fs.truncateSync(f, 0), 'io_error'],
      ['replaced by a folder', (f) => { fs.rmSync(f); fs.mkdirSync(f); }, 'io_error'],
      ['removed', (f) => fs.rmSync(f), 'not_found'],
    ];
    for (const [what, change, code] of cases) {
      const job = await runExport(A.key, { format: 'jsonl', compression: 'none', filter: { projects: ['sql-bot'] } });
      assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
      assert.ok(job.result.bytes > 10, `the file has ${job.result.bytes} bytes`);
      change(path.join(storeRoot, job.result.key));
      const r = await api('GET', `/api/v1/exports/${job.id}/download`, A.key);
      assertError(r, code, `the file ${what}`);
      assert.match(r.headers.get('content-type') ?? '', /^application\/json\b/, `the file ${what}: a JSON answer`);
      assert.equal(r.headers.get('content-disposition'), null, `the file ${what}: the error is not an attachment`);
    }
  }));

  it('an export without rows downloads as an empty file', T, stack.wrap(async () => {
    const job = await runExport(A.key, { format: 'jsonl', compression: 'none', filter: { projects: ['no-such-project'] } });
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    assert.equal(job.result.rows, 0);
    assert.equal(job.result.bytes, 0, 'an empty object in the store');
    assert.equal(await download(A.key, job), '', 'an empty file, as an attachment');
  }));

  it('bad requests get clear errors and create nothing', T, stack.wrap(async () => {
    const before = (await stack.psql(`SELECT count(*) FROM export.jobs`))[0][0];
    const cases = [
      [{ format: 'parquet' }, /format/],
      [{}, /format/],
      [{ format: 'jsonl', compression: 'brotli' }, /compression/],
      [{ format: 'jsonl', filter: { modle: ['x'] } }, /modle/],
      [{ format: 'jsonl', filter: { since: 'yesterday' } }, /since/],
      [{ format: 'jsonl', filter: { statuses: ['fine'] } }, /statuses/],
      [{ format: 'jsonl', destination: 'file:///etc' }, /destination/],
      [{ format: 'jsonl', destination: `${stack.env.EVALBUS_OBJECT_STORE}/../x` }, /destination/],
      [{ format: 'jsonl', anonymize: 'yes' }, /anonymize/],
      [{ format: 'jsonl', extra: 1 }, /extra/],
      [{ format: 'csv', fields: { exclude: ['no_such_column'] } }, /no_such_column/],
    ];
    for (const [body, re] of cases) {
      const r = await api('POST', '/api/v1/exports', A.key, { body });
      assertError(r, 'invalid_argument', JSON.stringify(body));
      assert.match(r.body.error.message, re, JSON.stringify(body));
    }
    const notJson = await api('POST', '/api/v1/exports', A.key, { raw: '{"format": ' });
    assert.equal(notJson.status, 400);
    assertError(await api('GET', '/api/v1/exports/not-a-uuid', A.key), 'not_found');
    assertError(await api('GET', `/api/v1/exports/${crypto.randomUUID()}`, A.key), 'not_found');
    const after = (await stack.psql(`SELECT count(*) FROM export.jobs`))[0][0];
    assert.equal(after, before, 'no job was created');
  }));

  it('scheduled exports: each run is an ordinary job, incremental since the last successful run', T, stack.wrap(async () => {
    const sid = await createSchedule(A.key, { every: 'hourly', export: { format: 'jsonl', compression: 'none', filter: { projects: ['summaries'] } } });
    const first = await scheduledRun(A.key, sid);
    assert.equal(first.result.rows, 20);
    assert.equal(first.filter.stored_since, undefined, 'the first run has no lower bound');
    assert.ok(first.filter.stored_until);
    // one new trace, then make the schedule due again
    await storeForRun(A.key, 'a-late', 'summaries', { input: 'late question', output: 'late answer' });
    await makeDue(sid);
    const second = await scheduledRun(A.key, sid, { seen: [first.id] });
    assert.equal(second.filter.stored_since, first.filter.stored_until, 'it starts where the last successful run ended');
    assert.equal(second.result.rows, 1, 'only what is new');
    const list = await api('GET', '/api/v1/export-schedules', A.key);
    assertStatus(list, 200);
    assert.ok(list.body.schedules.some((x) => x.id === sid));
    assertError(await api('DELETE', `/api/v1/export-schedules/${sid}`, B.key), 'not_found', "another team's schedule");
    assertStatus(await api('DELETE', `/api/v1/export-schedules/${sid}`, A.key), 204, 'delete schedule');
    assert.ok(!(await api('GET', '/api/v1/export-schedules', A.key)).body.schedules.some((x) => x.id === sid));
    assertError(await api('POST', '/api/v1/export-schedules', A.key, { body: { every: 'minutely', export: { format: 'jsonl' } } }), 'invalid_argument');
  }));

  it('the CLI: evalbus export downloads and checks the file; list, status and stats', T, stack.wrap(async () => {
    const dir = fs.mkdtempSync(path.join(stack.state, 'cli-out-'));
    const env = { EVALBUS_API_KEY: A.key, EVALBUS_URL: stack.url };
    const r = await stack.cli(['export', '--format', 'openai-chat', '--review', 'accepted', '--compression', 'none', '--out', `${dir}/`], { env, timeoutMs: 90_000 });
    assert.equal(r.code, 0, `evalbus export exited ${r.code}: ${r.stderr}`);
    const files = fs.readdirSync(dir);
    assert.equal(files.length, 1, `one file in ${dir}: ${files}`);
    assert.match(files[0], /^openai-chat-[0-9a-f-]{36}\.jsonl$/);
    const lines = jsonLines(fs.readFileSync(path.join(dir, files[0]), 'utf8'));
    assert.equal(lines.length, 10, 'the ten accepted answers');
    assert.match(r.stdout, /sha256: +[0-9a-f]{64}/);
    assert.match(r.stdout, /records: +10/);
    const id = /id: +([0-9a-f-]{36})/.exec(r.stdout)[1];
    const st = await stack.cli(['--json', 'export', 'status', id], { env });
    assert.equal(st.code, 0, st.stderr);
    assert.equal(JSON.parse(st.stdout).state, 'succeeded');
    const ls = await stack.cli(['export', 'list', '--limit', '5'], { env });
    assert.equal(ls.code, 0, ls.stderr);
    assert.ok(ls.stdout.includes(id), 'the job is listed');
    const stats = await stack.cli(['--json', 'stats', '--project', 'sql-bot', '--format', 'sql-pairs'], { env });
    assert.equal(stats.code, 0, stats.stderr);
    assert.equal(JSON.parse(stats.stdout).rows, 12);
    const bad = await stack.cli(['export', '--format', 'parquet'], { env });
    assert.equal(bad.code, 2, 'usage error for an unknown format');
    const other = await stack.cli(['export', 'status', id], { env: { ...env, EVALBUS_API_KEY: B.key } });
    assert.equal(other.code, 4, "another team's export: not found");
  }));

  it('a failed scheduled run is covered by the next one (the watermark stays)', T, stack.wrap(async () => {
    const dest = `${stack.env.EVALBUS_OBJECT_STORE}/sched`;
    const root = path.join(storeRoot, 'sched');
    // stored before the schedule exists: a new schedule runs at once
    await storeForRun(A.key, 'late-1', 'late');
    const sid = await createSchedule(A.key, { every: 'daily', export: { format: 'jsonl', compression: 'none', destination: dest, filter: { projects: ['late'] } } });
    const first = await scheduledRun(A.key, sid);
    assert.equal(first.result.rows, 1);
    // the destination folder becomes a file: the second run fails
    fs.renameSync(root, `${root}.saved`);
    fs.writeFileSync(root, 'not a folder');
    await storeForRun(A.key, 'late-2', 'late');
    await makeDue(sid);
    await scheduledRun(A.key, sid, { state: 'failed', timeoutMs: 60_000 });
    fs.rmSync(root);
    fs.renameSync(`${root}.saved`, root);
    await storeForRun(A.key, 'late-3', 'late');
    await makeDue(sid);
    // (succeeded: the schedule was not disabled)
    const third = await scheduledRun(A.key, sid, { seen: [first.id] });
    assert.equal(third.filter.stored_since, first.filter.stored_until, 'from the last successful run');
    assert.equal(third.result.rows, 2, "the failed run's trace and the new one");
    const list = await api('GET', '/api/v1/export-schedules', A.key);
    assert.ok(list.body.schedules.find((x) => x.id === sid).enabled);
    assertStatus(await api('DELETE', `/api/v1/export-schedules/${sid}`, A.key), 204);
  }));

  it('a trace whose storing transaction is still open when a run starts is taken by the next run', T, stack.wrap(async () => {
    const teamId = (await stack.whoami(A.key)).team.id;
    await storeForRun(A.key, 'open-0', 'open-txn');
    const sid = await createSchedule(A.key, { every: 'daily', export: { format: 'jsonl', compression: 'none', filter: { projects: ['open-txn'] } } });
    const first = await scheduledRun(A.key, sid);
    assert.equal(first.result.rows, 1);
    // a session named as ingest's stores a trace the way ingest's writer does (created_at is the
    // start of its transaction) and holds the transaction open while the next run starts
    const holder = stack.psql(`BEGIN;
      INSERT INTO ingest.trace_keys (team_id, id, part_time)
        SELECT team_id, 'open-1', part_time FROM ingest.traces WHERE team_id = '${teamId}' AND id = 'open-0';
      INSERT INTO ingest.traces (team_id, part_time, id, project, source, stream_seq, input)
        SELECT team_id, part_time, 'open-1', 'open-txn', 'api', 1, '"q"' FROM ingest.traces WHERE team_id = '${teamId}' AND id = 'open-0';
      SELECT pg_sleep(10); SELECT ${PG_TIME('clock_timestamp()')}; COMMIT;`, { appName: 'ingest' });
    const started = await pollUntil(async () => (await stack.psql(`SELECT ${PG_TIME('xact_start')}
      FROM pg_stat_activity WHERE application_name = 'ingest' AND query LIKE '%pg_sleep(10)%' AND pid <> pg_backend_pid()`))[0]?.[0], { timeoutMs: 10_000, intervalMs: 100 });
    assert.ok(started.value, 'the storing transaction is open');
    await sleep(SETTLE_MS); // the clock alone would now give a bound after its start
    await makeDue(sid);
    const second = await scheduledRun(A.key, sid, { seen: [first.id] });
    const ended = (await holder).at(-1)[0];
    assert.ok(second.created_at < ended, `the second run started while the transaction was open (${second.created_at}, ${ended})`);
    assert.ok(second.filter.stored_until <= started.value, `the run stops at the open transaction: ${second.filter.stored_until} > ${started.value}`);
    assert.equal(second.result.rows, 0);
    await makeDue(sid);
    const third = await scheduledRun(A.key, sid, { seen: [first.id, second.id] });
    assert.equal(third.filter.stored_since, second.filter.stored_until);
    assert.equal(third.result.rows, 1, 'the trace stored by the transaction that was open');
    assertStatus(await api('DELETE', `/api/v1/export-schedules/${sid}`, A.key), 204);
  }));

  it("when ingest's sessions cannot be seen, runs stop a minute back and the export log says why", T, stack.wrap(async () => {
    await storeForRun(A.key, 'blind-0', 'blind');
    // a session of another role (the superuser), named as ingest's: its transaction start is
    // hidden from the services' role
    const holder = stack.psqlSuperuser(`BEGIN; SELECT pg_sleep(8); SELECT ${PG_TIME('clock_timestamp()')}; COMMIT;`, { appName: 'ingest' });
    const seen = await pollUntil(async () => (await stack.psql(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ingest' AND query = '<insufficient privilege>'`))[0][0] === '1', { timeoutMs: 10_000, intervalMs: 100 });
    assert.ok(seen.value, 'the hidden session is there');
    const sid = await createSchedule(A.key, { every: 'daily', export: { format: 'jsonl', compression: 'none', filter: { projects: ['blind'] } } });
    const first = await scheduledRun(A.key, sid);
    const ended = (await holder).at(-1)[0];
    assert.ok(first.created_at < ended, `the run started while the hidden transaction was open (${first.created_at}, ${ended})`);
    // the job's created_at is PostgreSQL's clock at its insert, just after the run read the clock
    const lagMs = Date.parse(first.created_at) - Date.parse(first.filter.stored_until);
    assert.ok(lagMs >= 60_000 && lagMs < 61_000, `stored_until is a minute before the run: ${first.filter.stored_until}, created ${first.created_at}`);
    assert.equal(first.result.rows, 0, 'the trace stored just now is left to the next run');
    const log = fs.readFileSync(path.join(stack.state, 'logs', 'export.log'), 'utf8');
    assert.equal(log.split('\n').filter((l) => l.includes("ingest's sessions are not visible")).length, 1, 'one warning');
    await makeDue(sid);
    const second = await scheduledRun(A.key, sid, { seen: [first.id] });
    assert.equal(second.filter.stored_since, first.filter.stored_until);
    assert.equal(second.result.rows, 1, 'the trace the first run left');
    assertStatus(await api('DELETE', `/api/v1/export-schedules/${sid}`, A.key), 204);
  }));

  it('an ingest transaction open longer than schedule-stuck-after is named in the export log', T, stack.wrap(async () => {
    const exportLog = () => fs.readFileSync(path.join(stack.state, 'logs', 'export.log'), 'utf8');
    const holder = stack.psql(`BEGIN; SELECT pg_sleep(12); COMMIT;`, { appName: 'ingest' });
    const open = await pollUntil(async () => (await stack.psql(`SELECT pid, ${PG_TIME('xact_start')}
      FROM pg_stat_activity WHERE application_name = 'ingest' AND query LIKE '%pg_sleep(12)%' AND pid <> pg_backend_pid()`))[0], { timeoutMs: 10_000, intervalMs: 100 });
    assert.ok(open.value, 'the transaction is open');
    const [pid, since] = open.value;
    const named = () => exportLog().split('\n').filter((l) => l.includes(`ingest session ${pid} (`) && l.includes(`open since ${since};`));
    const sid = await createSchedule(A.key, { every: 'daily', export: { format: 'jsonl', compression: 'none', filter: { projects: ['stuck'] } } });
    // a run while the transaction is younger than the setting: no warning
    const first = await scheduledRun(A.key, sid);
    const youngMs = Date.parse(first.created_at) - Date.parse(since);
    assert.ok(youngMs < STUCK_AFTER_MS, `the first run came ${youngMs} ms into the transaction`);
    assert.deepEqual(named(), [], 'no warning while the transaction is young');
    assert.ok(first.filter.stored_until <= since, 'the open transaction holds the bound');
    // a run once it is older
    await sleep(Math.max(0, Date.parse(since) + STUCK_AFTER_MS + 500 - Date.now()));
    await makeDue(sid);
    const second = await scheduledRun(A.key, sid, { seen: [first.id] });
    assert.ok(Date.parse(second.created_at) - Date.parse(since) > STUCK_AFTER_MS, 'the second run came after the setting');
    assert.ok(second.filter.stored_until <= since, 'the open transaction still holds the bound');
    assert.ok((await pollUntil(() => named().length > 0, { timeoutMs: 5000, intervalMs: 100 })).value, `a warning names session ${pid}: ${exportLog().slice(-2000)}`);
    await holder;
    assertStatus(await api('DELETE', `/api/v1/export-schedules/${sid}`, A.key), 204);
  }));

  it('SIGTERM while a request waits for its credential (auth hung): it is answered 503, and the replica exits 0', T, stack.wrap(async () => {
    // the replica has no cached credential: its request waits for the auth service
    const replica = await stack.spawnService('export', {
      EVALBUS_EXPORT_WORKERS: '0', EVALBUS_SHUTDOWN_DELAY: '0s', EVALBUS_SHUTDOWN_GRACE: '200ms', EVALBUS_AUTH_TIMEOUT: '20s',
    });
    const authPid = stack.readPid('auth');
    assert.ok(authPid && pidAlive(authPid), 'the auth service runs');
    let answer;
    let exit;
    process.kill(authPid, 'SIGSTOP');
    try {
      const pending = stack.api('GET', '/api/v1/exports', { base: replica.url, key: A.key, timeoutMs: 10_000 })
        .catch((err) => ({ failed: err }));
      await sleep(500);
      replica.proc.kill('SIGTERM');
      answer = await pending;
      exit = await Promise.race([replica.exited, sleep(15_000, 'timeout')]);
    } finally {
      process.kill(authPid, 'SIGCONT');
    }
    assert.ok(!answer.failed, `the request was answered, not left with a closed connection: ${answer.failed?.message} ${answer.failed?.cause?.code ?? ''}`);
    assert.equal(answer.status, 503, answer.text);
    assert.equal(answer.body?.error?.code, 'unavailable', answer.text);
    assert.equal(answer.headers.get('retry-after'), '1', answer.text);
    assert.deepEqual(exit, { code: 0, signal: null }, `the replica exits 0 (log: ${fs.readFileSync(replica.logFile, 'utf8').slice(-3000)})`);
  }));

  // An event stream of a job that keeps running lasts up to an hour: at SIGTERM it is ended (the
  // client sees a complete body and may reconnect, to another replica), not held until the drain's
  // grace runs out and then cut off, and its watch is freed. One stream is idle between two reads
  // of its job, the other's read waits on a lock (the watch is the API thread's until it returns).
  // A stream asked for during the shutdown delay (the replica still accepts) ends at once.
  for (const [what, locked] of [['between two reads', false], ['while its read waits on a lock', true]]) {
    it(`SIGTERM with an event stream open ${what}: the stream ends as complete, the replica exits 0 at once, nothing leaks`, T, stack.wrap(async (t) => {
      const job = await finishedJob();
      // a job that stays running: its message was acknowledged, so no worker changes it again
      await stack.psql(`UPDATE export.jobs SET state = 'running' WHERE id = '${job.id}'`);
      try {
        // the default shutdown-grace (10 s): a stream held by the drain would show in the time
        const replica = await stack.spawnService('export', { EVALBUS_EXPORT_WORKERS: '0', EVALBUS_SHUTDOWN_DELAY: '1s' });
        const events = () => fetch(`${replica.url}/api/v1/exports/${job.id}/events`, {
          headers: { authorization: `Bearer ${A.key}` }, signal: AbortSignal.timeout(60_000),
        });
        const res = await events();
        assert.equal(res.status, 200);
        const stream = follow(res);
        const first = await pollUntil(() => /event: progress\ndata: \{.*"state":"running"/.test(stream.text), { timeoutMs: 5000 });
        assert.ok(first.value, `the first event arrives: ${stream.text}`);
        let lock = null;
        if (locked) {
          lock = await stack.lockTable('export.jobs', 2500);
          const waiting = await pollUntil(async () => (await stack.psql(`SELECT count(*) FROM pg_stat_activity
            WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT id, state, format%FROM export.jobs WHERE%'`))[0][0] !== '0', { timeoutMs: 3000 });
          assert.ok(waiting.value, 'the stream\'s read of its job waits on the lock');
        }
        const tSignal = performance.now();
        replica.proc.kill('SIGTERM');
        const end = await Promise.race([stream.end, sleep(8000, 'timeout')]);
        assert.notEqual(end, 'timeout', 'the stream ended within 8 s of SIGTERM');
        let late = null;
        if (!locked) {
          const r = await events(); // within the shutdown delay
          const text = await Promise.race([r.text(), sleep(3000, null)]);
          late = { status: r.status, type: r.headers.get('content-type'), text, at: performance.now() - tSignal };
        }
        const exit = await Promise.race([replica.exited, sleep(8000, 'timeout')]);
        const tExit = performance.now() - tSignal;
        if (lock) await lock.released;
        const log = fs.readFileSync(replica.logFile, 'utf8');
        t.diagnostic(`stream ended ${Math.round(end.at - tSignal)} ms, replica exited ${Math.round(tExit)} ms after SIGTERM`);
        assert.ok(end.clean, `the stream ends as a complete body, not cut off: ${end.error?.message} ${end.error?.cause?.code ?? ''}`);
        assert.ok(end.at - tSignal < (locked ? 4000 : 800), `the stream ended ${Math.round(end.at - tSignal)} ms after SIGTERM`);
        assert.ok(!/event: done/.test(stream.text), 'no done event: the job has not finished');
        if (late) {
          assert.ok(late.at < 1000, `the late stream was asked for and ended within the shutdown delay (${Math.round(late.at)} ms)`);
          assert.equal(late.status, 200, late.text);
          assert.match(late.type ?? '', /text\/event-stream/);
          assert.equal(late.text, '', 'a stream asked for during the shutdown ends at once (within 3 s), without an event');
        }
        assert.notEqual(exit, 'timeout', `the replica exits within 8 s of SIGTERM (log: ${log.slice(-3000)})`);
        assert.deepEqual(exit, { code: 0, signal: null }, `the replica exits 0 (log: ${log.slice(-3000)})`);
        assert.ok(tExit < (locked ? 5000 : 3000), `the replica exited ${Math.round(tExit)} ms after SIGTERM`);
        assert.ok(!log.includes('grace period over'), 'the drain did not wait for the stream until its grace ran out');
        assert.ok(!/LeakSanitizer|AddressSanitizer/.test(log), `no sanitizer report: ${log.slice(-3000)}`);
      } finally {
        await stack.psql(`UPDATE export.jobs SET state = 'succeeded' WHERE id = '${job.id}'`);
      }
    }));
  }

  // A streamed export is produced by a thread of its own; at SIGTERM it is stopped (its
  // producer's next write fails, a statement it waits on is cancelled) instead of holding the
  // drain until the grace runs out, and its thread is joined before the loop is freed. A stream
  // under way is cut short (no terminating chunk: never taken for a complete export); one that
  // has sent nothing yet, and a statistics request, get 503 unavailable (ask again elsewhere).
  const assertPromptExit = (replica, exit, tExit) => {
    const log = fs.readFileSync(replica.logFile, 'utf8');
    assert.notEqual(exit, 'timeout', `the replica exits within 8 s of SIGTERM (log: ${log.slice(-3000)})`);
    assert.deepEqual(exit, { code: 0, signal: null }, `the replica exits 0 (log: ${log.slice(-3000)})`);
    assert.ok(tExit < 4000, `the replica exited ${Math.round(tExit)} ms after SIGTERM`);
    assert.ok(!log.includes('grace period over'), 'the drain did not wait for the export until its grace ran out');
    assert.ok(!/LeakSanitizer|AddressSanitizer|runtime error/.test(log), `no sanitizer report: ${log.slice(-3000)}`);
  };

  it('SIGTERM during a streamed export: the stream is cut short, never complete, and the replica exits 0 at once', T, stack.wrap(async (t) => {
    const E = await stack.bootstrap(uniqueSlug('es'));
    await bulkTraces(E.key, 60000);
    // zstd at its slowest level: the export takes many seconds to produce, far beyond SIGTERM
    const replica = await stack.spawnService('export', {
      EVALBUS_EXPORT_WORKERS: '0', EVALBUS_SHUTDOWN_DELAY: '1s', EVALBUS_EXPORT_ZSTD_LEVEL: '19',
    });
    const res = await fetch(`${replica.url}/api/v1/exports/stream?format=jsonl&compression=zstd&limit=60000`, {
      headers: { authorization: `Bearer ${E.key}` }, signal: AbortSignal.timeout(60_000),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/zstd');
    const stream = follow(res);
    const first = await pollUntil(() => stream.text.length > 0, { timeoutMs: 20_000, intervalMs: 20 });
    assert.ok(first.value, 'the first bytes arrive');
    const tSignal = performance.now();
    replica.proc.kill('SIGTERM');
    const end = await Promise.race([stream.end, sleep(8000, 'timeout')]);
    const exit = await Promise.race([replica.exited, sleep(8000, 'timeout')]);
    const tExit = performance.now() - tSignal;
    assert.notEqual(end, 'timeout', 'the stream ended within 8 s of SIGTERM');
    t.diagnostic(`stream ended ${Math.round(end.at - tSignal)} ms, replica exited ${Math.round(tExit)} ms after SIGTERM`);
    assert.ok(!end.clean, 'the body ends in an error (no terminating chunk), not as a complete export');
    assert.ok(end.at - tSignal < 3000, `the stream was cut ${Math.round(end.at - tSignal)} ms after SIGTERM`);
    assertPromptExit(replica, exit, tExit);
  }));

  it('SIGTERM while a streamed export and a statistics request wait on a lock: both answer 503, the replica exits 0 at once', T, stack.wrap(async () => {
    const replica = await stack.spawnService('export', { EVALBUS_EXPORT_WORKERS: '0', EVALBUS_SHUTDOWN_DELAY: '1s' });
    const lock = await stack.lockTable('ingest.traces', 8000);
    const get = (p) => stack.api('GET', p, { base: replica.url, key: A.key, timeoutMs: 30_000 }).catch((failed) => ({ failed }));
    const pending = [get('/api/v1/exports/stream?format=jsonl'), get('/api/v1/datasets/statistics')];
    const waiting = await pollUntil(async () => Number((await stack.psql(`SELECT count(*) FROM pg_stat_activity
      WHERE wait_event_type = 'Lock' AND query LIKE 'COPY (SELECT %' AND pid <> pg_backend_pid()`))[0][0]) === 2, { timeoutMs: 10_000 });
    assert.ok(waiting.value, 'both COPYs wait on the lock');
    const tSignal = performance.now();
    replica.proc.kill('SIGTERM');
    const answers = await Promise.all(pending);
    const tAnswered = performance.now() - tSignal;
    const exit = await Promise.race([replica.exited, sleep(8000, 'timeout')]);
    const tExit = performance.now() - tSignal;
    await lock.released;
    for (const [what, answer] of [['the streamed export', answers[0]], ['the statistics', answers[1]]]) {
      assert.ok(!answer.failed, `${what}: answered, not a closed connection: ${answer.failed?.message}`);
      assert.equal(answer.status, 503, `${what}: ${answer.text}`);
      assert.equal(answer.body?.error?.code, 'unavailable', `${what}: ${answer.text}`);
      assert.equal(answer.headers.get('retry-after'), '1', `${what}: ${answer.text}`);
    }
    assert.ok(tAnswered < 3000, `both answered ${Math.round(tAnswered)} ms after SIGTERM, before the lock was released`);
    assertPromptExit(replica, exit, tExit);
  }));
});
