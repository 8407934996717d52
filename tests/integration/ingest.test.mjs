// The ingest service's JSON batch API and trace query API, through the nginx edge of a real
// stack: a full trace round trip, per-item answers (202 / 207 / 400), limits (413), resends
// stored once, reviews and scores, cross-team 404s, deletion with its audit events, keyset
// pagination and the query filters. Some checks read PostgreSQL directly (stack.psql).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';

import {
  BIN_DIR,
  DOWN_TIMEOUT_MS,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  assertStatus,
  pollUntil,
  sleep,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('ingest');
const T = { timeout: 90_000 };
const STORE_TIMEOUT_MS = 3000; // "readable within a second" of the 2xx; ASan builds get slack
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const UTC_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6}|\.\d{9})?Z$/;

const rid = (p = 't') => `${p}-${crypto.randomBytes(5).toString('hex')}`;
const iso = (ms) => new Date(ms).toISOString();
const same = (a, b) => Date.parse(a) === Date.parse(b);
/** Text-only input / output: docs/api/traces.md says a string; the service also answers
 * {"text": "..."} (which it accepts back as the same input). */
const textOf = (v) => (typeof v === 'string' ? v : v && typeof v === 'object' && Object.keys(v).join() === 'text' ? v.text : v);

/** Edge request with the caller's key. */
function api(method, p, key, opts = {}) {
  return stack.api(method, p, { base: stack.url, key, ...opts });
}

async function postTraces(key, traces, opts = {}) {
  return api('POST', '/api/v1/traces', key, { body: { traces }, ...opts });
}

/** Posts and asserts 202 with every id accepted (in order); returns the accepted ids. */
async function ingestOk(key, traces, what = 'ingest') {
  const r = await postTraces(key, traces);
  assertStatus(r, 202, what);
  assert.deepEqual(r.body.rejected, [], `${what}: nothing rejected`);
  const sent = traces.map((t) => t.id).filter(Boolean);
  if (sent.length === traces.length) assert.deepEqual(r.body.accepted, sent, `${what}: accepted ids in order`);
  return r.body.accepted;
}

/** Polls GET /api/v1/traces/{id} until it answers 200 (and pred(body) holds). */
async function waitTrace(key, id, pred = () => true, timeoutMs = STORE_TIMEOUT_MS) {
  let last;
  const res = await pollUntil(async () => {
    last = await api('GET', `/api/v1/traces/${encodeURIComponent(id)}`, key);
    return last.status === 200 && pred(last.body) ? last.body : null;
  }, { timeoutMs, intervalMs: 100 });
  assert.ok(res.value, `trace ${id} readable within ${timeoutMs} ms of the 2xx; last answer ${last.status}: ${last.text.slice(0, 300)}`);
  return res.value;
}

/** GET /api/v1/traces with query params; asserts 200. */
async function list(key, params = {}) {
  const qs = new URLSearchParams(params).toString();
  const r = await api('GET', `/api/v1/traces${qs ? `?${qs}` : ''}`, key);
  assertStatus(r, 200, `list ${qs}`);
  assert.ok(Array.isArray(r.body.traces), 'traces is an array');
  return r.body;
}

async function listIds(key, params) {
  return (await list(key, { limit: '500', ...params })).traces.map((t) => t.id).sort();
}

/** Waits until every id is readable. */
async function waitAll(key, ids) {
  for (const id of ids) await waitTrace(key, id);
}

async function auditEvent(key, pred) {
  let events = [];
  const res = await pollUntil(async () => {
    const r = await stack.api('GET', '/api/v1/audit?limit=50', { key });
    assertStatus(r, 200, 'read audit');
    events = r.body.events;
    return events.find(pred);
  }, { timeoutMs: 3000, intervalMs: 150 });
  assert.ok(res.value, `audit event not found within 3 s; last events: ${JSON.stringify(events.slice(0, 5))}`);
  return res.value;
}

// The threads of process pid: id, name (as top -H shows it) and nice value, from /proc.
function threadsOf(pid) {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    // the fields after the parenthesized name: state is field 3, nice field 19
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { tid: Number(tid), name: fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(), nice: Number(rest[16]) };
  });
}

describe('ingest: JSON batch API and trace queries', () => {
  let A; // {key (owner), team, id, member, viewer}
  let B;

  async function makeTeam(prefix) {
    const o = await stack.bootstrap(uniqueSlug(prefix));
    await stack.setTier(o.team, 'enterprise', o.key); // this file is not about rate limits
    const me = await stack.whoami(o.key);
    const member = await stack.createKey(o.key, { name: 'member', role: 'member', scopes: ['traces:read', 'traces:write'] });
    const viewer = await stack.createKey(o.key, { name: 'viewer', role: 'viewer', scopes: ['traces:read'] });
    return { ...o, id: me.team.id, member: member.key, memberKeyId: member.id, viewer: viewer.key };
  }

  before(async () => {
    assert.ok(fs.existsSync(path.join(BIN_DIR, 'evalbus-ingest')), `${BIN_DIR}/evalbus-ingest must exist`);
    await stack.up();
    assert.ok(stack.env.EVALBUS_INGEST_URL, 'stack.env names EVALBUS_INGEST_URL (ingest was started)');
    A = await makeTeam('ia');
    B = await makeTeam('ib');
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('a full trace round-trips: every field sent comes back from GET /api/v1/traces/{id}', T, stack.wrap(async () => {
    const t0 = Date.now() - 60_000;
    const id = rid('full');
    const trace = {
      id,
      project: 'support-bot',
      name: 'answer',
      model: 'gpt-4o',
      provider: 'openai',
      status: 'error',
      status_message: 'tool timed out',
      start_time: iso(t0),
      end_time: iso(t0 + 1200),
      latency_ms: 1200,
      usage: { input_tokens: 120, output_tokens: 40 },
      cost_usd: 0.0012,
      input: {
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: [{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: 'https://x.test/a.png' } }], name: 'ann' },
        ],
      },
      output: {
        messages: [{
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'c1', type: 'function', function: { name: 'lookup', arguments: '{"q": 1}' } }],
        }],
      },
      tool_calls: [{
        id: 'c1', name: 'lookup', arguments: { q: 1 }, result: 'found',
        start_time: iso(t0 + 500), end_time: iso(t0 + 750),
      }],
      metadata: { customer_tier: 'gold', nested: { n: 1, ok: true }, price: 0.30000000000000004, big: 9007199254740991 },
      tags: ['prod', 'beta'],
      session_id: 's-9',
      user_id: 'u-7',
      environment: 'prod',
      release: '1.2.3',
      temperature: 0.2, // unknown member: kept in attributes
      observations: [
        {
          id: 'o1', type: 'generation', name: 'llm', start_time: iso(t0 + 100), end_time: iso(t0 + 1000),
          status: 'error', status_message: 'boom', model: 'gpt-4o', provider: 'openai',
          usage: { input_tokens: 100, output_tokens: 30 }, cost_usd: 0.001,
          input: { messages: [{ role: 'user', content: 'hi' }], text: 'raw: hi' }, output: 'hello',
          metadata: { k: 1 },
        },
        {
          id: 'o2', parent_id: 'o1', type: 'tool', name: 'lookup', start_time: iso(t0 + 500), end_time: iso(t0 + 750),
          status: 'ok', input: '{"q": 1}', output: 'found',
        },
        { id: 'o3', type: 'event', name: 'cache-miss', start_time: iso(t0 + 50), end_time: iso(t0 + 50) },
      ],
    };
    await ingestOk(A.member, [trace], 'full trace');
    const g = await waitTrace(A.key, id);

    // scalar fields
    for (const f of ['id', 'project', 'name', 'model', 'provider', 'status', 'status_message', 'session_id', 'user_id', 'environment', 'release']) {
      assert.equal(g[f], trace[f], `field ${f}`);
    }
    for (const f of ['start_time', 'end_time']) {
      assert.match(g[f], UTC_RE, `${f} is UTC with Z`);
      assert.ok(same(g[f], trace[f]), `${f}: ${g[f]} is ${trace[f]}`);
    }
    assert.equal(g.latency_ms, 1200, 'latency_ms');
    assert.deepEqual(g.usage, { input_tokens: 120, output_tokens: 40, total_tokens: 160 }, 'usage (total derived)');
    assert.equal(g.cost_usd, 0.0012, 'cost_usd');
    assert.deepEqual(g.metadata, trace.metadata, 'metadata');
    assert.deepEqual([...g.tags].sort(), ['beta', 'prod'], 'tags');
    assert.deepEqual(g.attributes, { temperature: 0.2 }, 'the unknown member is kept in attributes');
    assert.equal(g.review_state, 'unreviewed', 'review_state');
    assert.equal(g.source, 'json', 'source');
    assert.deepEqual(g.reviews, [], 'no reviews');
    assert.deepEqual(g.scores, [], 'no scores');

    // messages
    assert.deepEqual(g.input, {
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'text', text: 'What is this?' }, { type: 'image_url', image_url: { url: 'https://x.test/a.png' } }], name: 'ann' },
      ],
    }, 'input messages with content parts');
    assert.deepEqual(g.output, trace.output, 'output message with its tool call');
    assert.equal(g.tool_calls.length, 1, 'one trace-level tool call');
    const tc = g.tool_calls[0];
    assert.equal(tc.id, 'c1');
    assert.equal(tc.type, 'function', 'type defaults to function');
    assert.deepEqual(tc.function, { name: 'lookup', arguments: '{"q":1}' }, 'object arguments come back as compact JSON text');
    assert.equal(tc.result, 'found');
    assert.ok(same(tc.start_time, iso(t0 + 500)) && same(tc.end_time, iso(t0 + 750)), 'tool call timings');

    // observations
    assert.equal(g.observations.length, 3, 'three observations');
    const ob = Object.fromEntries(g.observations.map((o) => [o.id, o]));
    assert.deepEqual(Object.keys(ob).sort(), ['o1', 'o2', 'o3']);
    const o1 = ob.o1;
    assert.equal(o1.type, 'generation');
    assert.equal(o1.parent_id, null);
    assert.equal(o1.name, 'llm');
    assert.ok(same(o1.start_time, iso(t0 + 100)) && same(o1.end_time, iso(t0 + 1000)), 'o1 times');
    assert.equal(o1.status, 'error');
    assert.equal(o1.status_message, 'boom');
    assert.equal(o1.model, 'gpt-4o');
    assert.equal(o1.provider, 'openai');
    assert.deepEqual(o1.usage, { input_tokens: 100, output_tokens: 30 }, 'o1 usage');
    assert.equal(o1.cost_usd, 0.001);
    assert.deepEqual(o1.input, { messages: [{ role: 'user', content: 'hi' }], text: 'raw: hi' }, 'o1 input: messages and text');
    assert.equal(textOf(o1.output), 'hello', `o1 output text: ${JSON.stringify(o1.output)}`);
    assert.deepEqual(o1.metadata, { k: 1 }, 'o1 metadata');
    assert.equal(ob.o2.parent_id, 'o1', 'o2 nests under o1');
    assert.equal(ob.o2.type, 'tool');
    assert.equal(ob.o2.status, 'ok');
    assert.equal(textOf(ob.o2.input), '{"q": 1}', 'o2 input text');
    assert.equal(textOf(ob.o2.output), 'found', 'o2 output text');
    assert.equal(ob.o3.type, 'event');
    assert.equal(ob.o3.name, 'cache-miss');

    // the summary in the list
    const l = await list(A.key, { project: 'support-bot' });
    const s = l.traces.find((x) => x.id === id);
    assert.ok(s, 'the trace is in the list');
    assert.equal(s.model, 'gpt-4o');
    assert.deepEqual(s.usage, { input_tokens: 120, output_tokens: 40, total_tokens: 160 });
    assert.equal(s.review_state, 'unreviewed');
    assert.equal(s.input, undefined, 'the list holds summaries, not inputs');

    // a gzip body is accepted the same way
    const gz = { ...trace, id: rid('gz') };
    const r = await api('POST', '/api/v1/traces', A.member, {
      raw: zlib.gzipSync(JSON.stringify({ traces: [gz] })), headers: { 'content-encoding': 'gzip' },
    });
    assertStatus(r, 202, 'gzip body');
    assert.deepEqual(r.body.accepted, [gz.id]);
    const gg = await waitTrace(A.key, gz.id);
    assert.equal(gg.observations.length, 3, 'gzip trace stored whole');
    assert.deepEqual(gg.input, g.input, 'gzip trace input');
    // x-gzip, gzip's old name, is gzip too (RFC 9110); deflate is not taken
    const xg = { ...trace, id: rid('xgz') };
    const rx = await api('POST', '/api/v1/traces', A.member, {
      raw: zlib.gzipSync(JSON.stringify({ traces: [xg] })), headers: { 'content-encoding': 'X-Gzip' },
    });
    assertStatus(rx, 202, 'x-gzip body');
    assert.equal((await waitTrace(A.key, xg.id)).observations.length, 3, 'x-gzip trace stored whole');
    const rd = await api('POST', '/api/v1/traces', A.member, {
      raw: zlib.deflateSync(JSON.stringify({ traces: [{ ...trace, id: rid('dfl') }] })), headers: { 'content-encoding': 'deflate' },
    });
    assertError(rd, 'invalid_argument', 'deflate');
    assert.match(rd.body.error.message, /Content-Encoding deflate is not supported/);
  }));

  it('207: bad items are rejected one by one and the good ones are stored', T, stack.wrap(async () => {
    const t0 = Date.now() - 30_000;
    const good = (id) => ({ id, project: 'p207', name: 'ok', start_time: iso(t0) });
    const ids = [rid('g0'), rid('b1'), rid('g2'), rid('b3'), rid('b4'), rid('b5')];
    const batch = [
      good(ids[0]),
      { ...good(ids[1]), status: 'weird' },
      good(ids[2]),
      { ...good(ids[3]), start_time: iso(t0 + 1000), end_time: iso(t0) },
      { ...good(ids[4]), input: { messages: [{ role: 'wizard', content: 'x' }] } },
      { ...good(ids[5]), input: { messages: [{ role: 'user', content: 'x'.repeat(1024 * 1024 + 1) }] } },
      { project: 'p207', name: 'no id given' },
    ];
    const r = await postTraces(A.member, batch);
    assertStatus(r, 207, 'mixed batch');
    // the status line's reason phrase is the standard one (libevent's is per class: "Success")
    const raw = await fetch(`${stack.env.EVALBUS_INGEST_URL}/api/v1/traces`, {
      method: 'POST', headers: { authorization: `Bearer ${A.member}`, 'content-type': 'application/json' },
      body: JSON.stringify({ traces: [{ ...good(rid('g')), project: 'phrase' }, { ...good(rid('b')), status: 'weird' }] }),
    });
    assert.equal(`${raw.status} ${raw.statusText}`, '207 Multi-Status');
    await raw.arrayBuffer();
    assert.equal(r.body.accepted.length, 3, `three accepted: ${JSON.stringify(r.body.accepted)}`);
    assert.equal(r.body.accepted[0], ids[0]);
    assert.equal(r.body.accepted[1], ids[2]);
    const assigned = r.body.accepted[2];
    assert.match(assigned, UUID_RE, 'a trace sent without an id gets a UUID');
    const rej = r.body.rejected;
    assert.deepEqual(rej.map((x) => x.index), [1, 3, 4, 5], 'rejected indices');
    assert.deepEqual(rej.map((x) => x.id), [ids[1], ids[3], ids[4], ids[5]], 'rejected ids');
    assert.deepEqual(rej.map((x) => x.error.code), ['invalid_argument', 'invalid_argument', 'invalid_argument', 'too_large']);
    assert.match(rej[0].error.message, /status/, 'names the field');
    assert.match(rej[1].error.message, /end_time/, 'names the field');
    assert.match(rej[2].error.message, /input\.messages\[0\]\.role/, 'names the field path');
    assert.match(rej[3].error.message, /input\.messages\[0\]\.content.*max-field-bytes/, 'names the path and the limit');
    await waitAll(A.key, [ids[0], ids[2], assigned]);
    const a = await waitTrace(A.key, assigned);
    assert.equal(a.name, 'no id given');
    for (const bad of [ids[1], ids[3], ids[4], ids[5]]) {
      assertError(await api('GET', `/api/v1/traces/${bad}`, A.key), 'not_found', `rejected ${bad} is not stored`);
    }
    assert.deepEqual(await listIds(A.key, { project: 'p207' }), [ids[0], ids[2], assigned].sort(), 'only the good ones are listed');
  }));

  it('a string cut inside an emoji (an escaped lone surrogate) stores U+FFFD and drops nothing of the batch', T, stack.wrap(async () => {
    // JSON.stringify (and Python's json.dumps) write a lone surrogate as the escape \ud83d
    const cut = 'Sure! \u{1F600} here'.slice(0, 7);
    assert.equal(JSON.stringify(cut), '"Sure! \\ud83d"', 'the client sends the escape');
    const [good, bad] = [rid('whole'), rid('cut')];
    await ingestOk(A.member, [{ id: good, name: 'whole \u{1F600}' }, { id: bad, name: `n${cut}`, output: cut, metadata: { note: cut } }]);
    const g = await waitTrace(A.member, bad);
    assert.equal(g.name, 'nSure! \uFFFD');
    assert.equal(g.metadata.note, 'Sure! \uFFFD');
    assert.ok(JSON.stringify(g.output).includes('Sure! \uFFFD'), JSON.stringify(g.output));
    assert.equal((await waitTrace(A.member, good)).name, 'whole \u{1F600}', 'a pair stays the character it is');
  }));

  it('400 and 413: malformed JSON, invalid UTF-8, no traces array, nothing valid, too many items, too large a body', T, stack.wrap(async () => {
    const h = { 'content-type': 'application/json' };
    let r = await api('POST', '/api/v1/traces', A.member, { raw: '{"traces": [{"id": "x"', headers: h });
    assertError(r, 'invalid_argument', 'truncated JSON');
    r = await api('POST', '/api/v1/traces', A.member, { raw: Buffer.from([...Buffer.from('{"traces": [{"id": "'), 0xff, 0xfe, ...Buffer.from('"}]}')]) });
    assertError(r, 'invalid_argument', 'invalid UTF-8');
    assert.match(r.body.error.message, /UTF-8/i, 'the message says UTF-8');
    r = await api('POST', '/api/v1/traces', A.member, { body: { traces: { id: 'x' } } });
    assertError(r, 'invalid_argument', 'traces is not an array');
    r = await api('POST', '/api/v1/traces', A.member, { raw: `{"traces":[],"traces":[{"id":"${rid('twice')}"}]}`, headers: h });
    assertError(r, 'invalid_argument', 'traces given twice: never one of them silently');
    r = await api('POST', '/api/v1/traces', A.member, { raw: zlib.gzipSync('{"traces": []}').subarray(0, 12), headers: { 'content-encoding': 'gzip' } });
    assertError(r, 'invalid_argument', 'truncated gzip');

    const bad = [rid('n0'), rid('n1')];
    r = await postTraces(A.member, [{ id: bad[0], status: 'nope' }, { id: bad[1], tags: [''] }]);
    assertError(r, 'invalid_argument', 'no valid trace');
    assert.deepEqual(r.body.accepted, [], 'nothing accepted');
    assert.deepEqual(r.body.rejected.map((x) => x.index), [0, 1], 'each item has its error');

    // the default limit (1000 items) through the edge
    const many = Array.from({ length: 1001 }, (_, i) => ({ id: `over-${i}` }));
    r = await postTraces(A.member, many);
    assertError(r, 'too_large', '1001 items');
    assert.match(r.body.error.message, /max-batch-items/, 'the message names the limit');
    assertError(await api('GET', '/api/v1/traces/over-0', A.key), 'not_found', 'nothing of a refused batch is stored');

    // a small gzip body that inflates to millions of tiny values: parsed, it would take some 32
    // times its size (hundreds of MiB at max-body), so it is refused before it is parsed
    const dense = rid('dense');
    const zeros = `{"traces":[{"id":"${dense}","metadata":{"a":[${new Array(2_000_000).fill('0').join(',')}]}}]}`;
    r = await api('POST', '/api/v1/traces', A.member, { raw: zlib.gzipSync(zeros), headers: { ...h, 'content-encoding': 'gzip' } });
    assertError(r, 'too_large', '2,000,000 zeros');
    assert.match(r.body.error.message, /16 times its size/, r.text);
    assertError(await api('GET', `/api/v1/traces/${dense}`, A.key), 'not_found', 'nothing of it is stored');

    // a replica with small limits
    const rep = await stack.spawnService('ingest', {
      EVALBUS_MAX_BATCH_ITEMS: '5', EVALBUS_MAX_BODY: '64KiB', EVALBUS_WRITER_THREADS: '0',
    });
    const direct = (traces, opts = {}) => stack.api('POST', '/api/v1/traces', { base: rep.url, key: A.member, body: { traces }, ...opts });
    const t0 = Date.now() - 10_000;
    const six = Array.from({ length: 6 }, () => ({ id: rid('six'), project: 'plimit', start_time: iso(t0) }));
    r = await direct(six);
    assertError(r, 'too_large', '6 items, limit 5');
    assert.match(r.body.error.message, /max-batch-items/);
    assert.match(r.body.error.message, /\b5\b/, 'the message gives the limit 5');
    r = await direct(six.slice(0, 5));
    assertStatus(r, 202, '5 items, limit 5');
    assert.deepEqual(r.body.accepted, six.slice(0, 5).map((t) => t.id));
    await waitAll(A.key, six.slice(0, 5).map((t) => t.id)); // the stack's writer stores them
    assertError(await api('GET', `/api/v1/traces/${six[5].id}`, A.key), 'not_found');

    const big = JSON.stringify({ traces: [{ id: rid('big'), input: 'x'.repeat(70 * 1024) }] });
    r = await stack.api('POST', '/api/v1/traces', { base: rep.url, key: A.member, raw: big });
    assertError(r, 'too_large', 'a 70 KiB body, max-body 64 KiB');
    r = await stack.api('POST', '/api/v1/traces', {
      base: rep.url, key: A.member, raw: zlib.gzipSync(big), headers: { 'content-encoding': 'gzip' },
    });
    assertError(r, 'too_large', 'a small gzip body that inflates beyond max-body');
    assert.match(r.body.error.message, /max-body/);
  }));

  it('the same trace sent twice is stored once; a changed resend replaces it', T, stack.wrap(async () => {
    const t0 = Date.now() - 20_000;
    const project = `dup-${crypto.randomBytes(3).toString('hex')}`;
    const id = rid('dup');
    const trace = {
      id, project, name: 'v1', start_time: iso(t0), end_time: iso(t0 + 500),
      usage: { input_tokens: 10, output_tokens: 5 },
      observations: [
        { id: 'a', type: 'generation', usage: { input_tokens: 10, output_tokens: 5 } },
        { id: 'b', type: 'tool' },
        { type: 'event', name: 'derived-id' },
      ],
    };
    await ingestOk(A.member, [trace], 'first send');
    await waitTrace(A.key, id);
    await ingestOk(A.member, [trace], 'second send');
    await ingestOk(A.member, [trace, trace], 'twice in one batch');
    await new Promise((res) => setTimeout(res, 1500)); // let the writer store the resends
    const g = await waitTrace(A.key, id);
    assert.equal(g.observations.length, 3, `observations not doubled: ${g.observations.map((o) => o.id)}`);
    assert.equal(new Set(g.observations.map((o) => o.id)).size, 3, 'the derived observation id is stable');
    assert.deepEqual(g.usage, { input_tokens: 10, output_tokens: 5, total_tokens: 15 }, 'totals not summed');
    assert.deepEqual(await listIds(A.key, { project }), [id], 'listed once');
    const [[nt, no]] = await stack.psql(
      `SELECT (SELECT count(*) FROM ingest.traces WHERE team_id = '${A.id}' AND id = '${id}'),` +
      ` (SELECT count(*) FROM ingest.observations WHERE team_id = '${A.id}' AND trace_id = '${id}')`,
    );
    assert.equal(nt, '1', 'one row in ingest.traces');
    assert.equal(no, '3', 'three rows in ingest.observations');

    // newest wins: the trace's fields and its observations are those of the last version
    const v2 = { id, project, name: 'v2', start_time: iso(t0), status: 'ok', observations: [{ id: 'c', type: 'span' }] };
    await ingestOk(A.member, [v2], 'changed resend');
    const g2 = await waitTrace(A.key, id, (b) => b.name === 'v2');
    assert.equal(g2.status, 'ok');
    assert.equal(g2.usage.input_tokens, null, 'usage of the old version is gone');
    assert.deepEqual(g2.observations.map((o) => o.id), ['c'],
      'a replaced trace has only the observations of its newest version');
    assert.deepEqual(await listIds(A.key, { project }), [id], 'still listed once');
  }));

  it('reviews: accept / reject / needs_review set the review state, keep the history and drive the review filter', T, stack.wrap(async () => {
    const project = `rev-${crypto.randomBytes(3).toString('hex')}`;
    const t0 = Date.now() - 10_000;
    const [t1, t2] = [rid('r1'), rid('r2')];
    await ingestOk(A.member, [{ id: t1, project, start_time: iso(t0) }, { id: t2, project, start_time: iso(t0) }]);
    await waitAll(A.key, [t1, t2]);
    const review = (id, body, key = A.member) => api('POST', `/api/v1/traces/${id}/review`, key, { body });

    let r = await review(t1, { decision: 'accept', score: 4.5, notes: 'good answer' });
    assertStatus(r, 201, 'accept');
    assert.equal(r.body.decision, 'accept');
    assert.equal(r.body.review_state, 'accepted');
    assert.equal(r.body.score, 4.5);
    assert.equal(r.body.notes, 'good answer');
    assert.equal(r.body.reviewer_key_id, A.memberKeyId, 'the reviewer comes from the credential');
    let g = await waitTrace(A.key, t1);
    assert.equal(g.review_state, 'accepted');
    assert.equal(g.reviews.length, 1);
    assert.equal(g.reviews[0].decision, 'accept');
    assert.equal(g.reviews[0].score, 4.5);
    assert.equal(g.reviews[0].notes, 'good answer');
    assert.equal(g.reviews[0].reviewer_key_id, A.memberKeyId);

    assertError(await review(t1, { decision: 'reject' }), 'invalid_argument', 'reject without a reason');
    assertError(await review(t1, { decision: 'reject', reason: 'boring' }), 'invalid_argument', 'a reason not in the list');
    assertError(await review(t1, { decision: 'maybe' }), 'invalid_argument', 'an unknown decision');
    assertError(await review(t1, { decision: 'accept' }, A.viewer), 'forbidden', 'a viewer cannot review');
    assertError(await review(rid('nosuch'), { decision: 'accept' }), 'not_found', 'an unknown trace');

    r = await review(t1, { decision: 'reject', reason: 'hallucination', notes: 'made up a price' });
    assertStatus(r, 201, 'reject');
    assert.equal(r.body.review_state, 'rejected');
    g = await waitTrace(A.key, t1);
    assert.equal(g.review_state, 'rejected', 'the latest review is the state');
    assert.deepEqual(g.reviews.map((x) => x.decision), ['reject', 'accept'], 'history, newest first');
    assert.equal(g.reviews[0].reason, 'hallucination');
    r = await review(t2, { decision: 'needs_review' }, A.key);
    assertStatus(r, 201, 'needs_review');
    assert.equal((await waitTrace(A.key, t2)).review_state, 'needs_review');

    assert.deepEqual(await listIds(A.key, { project, review: 'rejected' }), [t1]);
    assert.deepEqual(await listIds(A.key, { project, review: 'needs_review' }), [t2]);
    assert.deepEqual(await listIds(A.key, { project, review: 'accepted' }), []);
    assert.deepEqual(await listIds(A.key, { project, review: 'unreviewed' }), []);
    r = await review(t1, { decision: 'accept' });
    assertStatus(r, 201, 'accept again');
    assert.deepEqual(await listIds(A.key, { project, review: 'accepted' }), [t1]);
    assert.equal((await waitTrace(A.key, t1)).reviews.length, 3, 'three reviews kept');
    assertError(await api('GET', '/api/v1/traces?review=maybe', A.key), 'invalid_argument', 'review filter value');
  }));

  it('review-reasons: spaces around the reasons are dropped; an empty reason, or a duplicate window shorter than publish-timeout, stops start-up', T, stack.wrap(async () => {
    for (const list of ['incorrect,,other', ',incorrect', 'incorrect,other,', 'incorrect, ']) {
      const bad = spawnSync(path.join(BIN_DIR, 'evalbus-ingest'), [], { env: { ...process.env, EVALBUS_REVIEW_REASONS: list }, encoding: 'utf8', timeout: 10_000 });
      assert.equal(bad.status, 2, `an empty reason in '${list}': exit ${bad.status}: ${bad.stderr}`);
      assert.match(bad.stderr, /review-reasons: an empty reason/);
    }
    // the duplicate window must hold a resend after a publish timeout
    const short = spawnSync(path.join(BIN_DIR, 'evalbus-ingest'), [], { env: { ...process.env, EVALBUS_STREAM_DUPE_WINDOW: '4s', EVALBUS_PUBLISH_TIMEOUT: '5s' }, encoding: 'utf8', timeout: 10_000 });
    assert.equal(short.status, 2, `a window shorter than publish-timeout: exit ${short.status}: ${short.stderr}`);
    assert.match(short.stderr, /stream-dupe-window \(4000 ms\) must be at least publish-timeout \(5000 ms\)/);
    const replica = await stack.spawnService('ingest', { EVALBUS_REVIEW_REASONS: 'incorrect, incomplete ,  other', EVALBUS_WRITER_THREADS: '0' });
    try {
      const id = rid('rr');
      await ingestOk(A.member, [{ id, project: 'reasons' }]);
      await waitAll(A.key, [id]);
      const review = (reason) => stack.api('POST', `/api/v1/traces/${id}/review`, { base: replica.url, key: A.member, body: { decision: 'reject', reason } });
      for (const reason of ['incorrect', 'incomplete', 'other']) {
        const r = await review(reason);
        assertStatus(r, 201, `reason '${reason}'`);
        assert.equal(r.body.reason, reason);
      }
      const r = await review(' incomplete ');
      assertError(r, 'invalid_argument', 'a reason given with its spaces is not in the list');
      assert.match(r.body.error.message, /incorrect,incomplete,other/, `the list as it is checked: ${r.body.error.message}`);
    } finally {
      replica.proc.kill('SIGTERM');
      await replica.exited;
    }
  }));

  it('scores: numeric, boolean and categorical on traces and observations, and the score filter', T, stack.wrap(async () => {
    const project = `sc-${crypto.randomBytes(3).toString('hex')}`;
    const t0 = Date.now() - 10_000;
    const [t1, t2] = [rid('s1'), rid('s2')];
    await ingestOk(A.member, [
      { id: t1, project, start_time: iso(t0), observations: [{ id: 'gen', type: 'generation' }] },
      { id: t2, project, start_time: iso(t0) },
    ]);
    await waitAll(A.key, [t1, t2]);
    const score = (body, key = A.member) => api('POST', '/api/v1/scores', key, { body });

    let r = await score({ trace_id: t1, name: 'quality', value: 0.8, source: 'llm_judge', comment: 'judge v1' });
    assertStatus(r, 201, 'numeric score');
    assert.equal(r.body.kind, 'numeric');
    assert.equal(r.body.value, 0.8);
    assert.equal(r.body.source, 'llm_judge');
    assertStatus(await score({ trace_id: t1, name: 'helpful', value: true, source: 'human' }), 201, 'boolean score');
    assertStatus(await score({ trace_id: t1, name: 'tone', value: 'friendly' }), 201, 'categorical score');
    r = await score({ trace_id: t1, observation_id: 'gen', name: 'latency_ok', value: false });
    assertStatus(r, 201, 'observation score');
    assert.equal(r.body.observation_id, 'gen');
    assertStatus(await score({ trace_id: t2, name: 'quality', value: 0.3 }), 201, 't2 score');

    assertError(await score({ trace_id: t1, name: 'q', value: 'x', kind: 'numeric' }), 'invalid_argument', 'kind does not match the value');
    assertError(await score({ trace_id: t1, name: 'q', value: 1, source: 'robot' }), 'invalid_argument', 'unknown source');
    assertError(await score({ trace_id: t1, name: 'q', value: null }), 'invalid_argument', 'no value');
    assertError(await score({ trace_id: t1, name: 'a\u0001b', value: 1 }), 'invalid_argument', 'a control character in the name');
    assertError(await score({ trace_id: t1, name: '', value: 1 }), 'invalid_argument', 'an empty name');
    assertError(await score({ trace_id: t1, observation_id: 'nope', name: 'q', value: 1 }), 'not_found', 'unknown observation');
    assertError(await score({ trace_id: rid('nosuch'), name: 'q', value: 1 }), 'not_found', 'unknown trace');
    assertError(await score({ trace_id: t1, name: 'q', value: 1 }, A.viewer), 'forbidden', 'a viewer cannot score');

    const g = await waitTrace(A.key, t1);
    const byName = Object.fromEntries(g.scores.map((s) => [s.name, s]));
    assert.deepEqual(Object.keys(byName).sort(), ['helpful', 'latency_ok', 'quality', 'tone']);
    assert.deepEqual([byName.quality.kind, byName.quality.value, byName.quality.source, byName.quality.comment], ['numeric', 0.8, 'llm_judge', 'judge v1']);
    assert.deepEqual([byName.helpful.kind, byName.helpful.value, byName.helpful.source], ['boolean', true, 'human']);
    assert.deepEqual([byName.tone.kind, byName.tone.value, byName.tone.source], ['categorical', 'friendly', 'api']);
    assert.deepEqual([byName.latency_ok.kind, byName.latency_ok.value, byName.latency_ok.observation_id], ['boolean', false, 'gen']);
    assert.equal(byName.quality.observation_id, null);

    assert.deepEqual(await listIds(A.key, { project, score: 'quality' }), [t1, t2].sort(), 'score name alone');
    assert.deepEqual(await listIds(A.key, { project, score: 'quality', score_min: '0.5' }), [t1], 'score_min');
    assert.deepEqual(await listIds(A.key, { project, score: 'quality', score_max: '0.5' }), [t2], 'score_max');
    assert.deepEqual(await listIds(A.key, { project, score: 'quality', score_min: '0.9' }), [], 'nothing above 0.9');
    assert.deepEqual(await listIds(A.key, { project, score: 'tone' }), [t1], 'categorical score name');
    assertError(await api('GET', `/api/v1/traces?score_min=0.5`, A.key), 'invalid_argument', 'score_min without score');
    assertError(await api('GET', `/api/v1/traces?score=quality&score_min=abc`, A.key), 'invalid_argument', 'score_min not a number');
    // the answer shows the value as stored (and as a later GET shows it); what a double holds
    // as 0 though written otherwise is refused, not stored as 0
    r = await score({ trace_id: t2, name: 'long', value: 0.12345678901234567890123 });
    assertStatus(r, 201, 'a long decimal');
    assert.equal(r.body.value, 0.12345678901234568);
    r = await api('POST', '/api/v1/scores', A.member, { raw: `{"trace_id":"${t2}","name":"big","value":123456789012345678901234567890}` });
    assertStatus(r, 201, 'a 30-digit number');
    assert.match(r.text, /"value":1\.2345678901234568e\+29/, `the stored double, not the digits sent: ${r.text}`);
    r = await api('POST', '/api/v1/scores', A.member, { raw: `{"trace_id":"${t2}","name":"tiny","value":1e-330}` });
    assertError(r, 'invalid_argument', 'a score a double holds as 0');
    assert.match(r.body.error.message, /too close to 0/);
    r = await api('POST', `/api/v1/traces/${t2}/review`, A.member, { raw: '{"decision":"accept","score":-1e-330}' });
    assertError(r, 'invalid_argument', 'a review score a double holds as 0');
    const g2 = await waitTrace(A.key, t2);
    const long = g2.scores.find((x) => x.name === 'long');
    assert.equal(long.value, 0.12345678901234568, 'GET shows what the 201 showed');
    assert.equal(g2.scores.find((x) => x.name === 'tiny'), undefined, 'nothing stored for the refused score');
    // a member given twice: which one counts would be a guess
    r = await api('POST', '/api/v1/scores', A.member, { raw: `{"trace_id":"${t2}","name":"dup","value":1,"value":"x"}` });
    assertError(r, 'invalid_argument', 'a repeated member in a score');
    assert.match(r.body.error.message, /'value' appears twice/);
    r = await api('POST', `/api/v1/traces/${t2}/review`, A.member, { raw: '{"decision":"accept","decision":"reject"}' });
    assertError(r, 'invalid_argument', 'a repeated member in a review');
    assert.match(r.body.error.message, /'decision' appears twice/);
  }));

  it('limits hold whatever the value is made of; numbers are stored as sent or refused', T, stack.wrap(async () => {
    const project = `lim-${crypto.randomBytes(3).toString('hex')}`;
    const good = () => ({ id: rid('ok'), project, name: 'fine' });
    const raw = (body) => api('POST', '/api/v1/traces', A.member, { raw: body, timeoutMs: 60_000 });
    const one = async (what, trace, code, pattern) => {
      const g = good();
      const r = await raw(`{"traces":[${JSON.stringify(g)},${trace}]}`);
      assertStatus(r, 207, what);
      assert.deepEqual(r.body.accepted, [g.id], `${what}: the good trace is accepted`);
      assert.equal(r.body.rejected.length, 1, `${what}: ${r.text.slice(0, 300)}`);
      assert.equal(r.body.rejected[0].error.code, code, `${what}: ${r.body.rejected[0].error.message}`);
      assert.match(r.body.rejected[0].error.message, pattern, what);
    };
    // a fraction a double cannot hold reads as an integer: refused, not rounded
    await one('fractional tokens', `{"id":"${rid('fr')}","usage":{"input_tokens":4503599627370496.5}}`, 'invalid_argument', /integer/);
    await one('tokens of 1.0000000000000001', `{"id":"${rid('fr')}","usage":{"output_tokens":1.0000000000000001}}`, 'invalid_argument', /integer/);
    // a derived total beyond 2^53 would not read back exactly
    await one('a total beyond 2^53', `{"id":"${rid('tot')}","usage":{"input_tokens":9007199254740991,"output_tokens":2}}`, 'invalid_argument', /2\^53/);
    // a cost a double holds as 0 is not stored as 0
    await one('a cost of 1e-330', `{"id":"${rid('c')}","cost_usd":1e-330}`, 'invalid_argument', /too close to 0/);
    // "." and ".." cannot be a path segment: no GET could read them
    await one('the id ..', '{"id":".."}', 'invalid_argument', /'\.' or '\.\.'/);
    // nor a segment of a path: the edge decodes %2F and resolves ../x to /api/v1/x
    await one('the id ../x', '{"id":"../x"}', 'invalid_argument', /segment between slashes/);
    await one('the id a/./b', '{"id":"a/./b"}', 'invalid_argument', /segment between slashes/);
    const slashed = rid('a/..b/.c');
    await ingestOk(A.member, [{ id: slashed, project }], 'an id with slashes and dots that are not whole segments');
    await waitTrace(A.key, slashed);
    // numbers count at their length toward max-trace-bytes (4 MiB): 4.6 MB of them is too large
    const numbers = Array.from({ length: 420_000 }, () => '1234567890').join(',');
    await one('4.6 MB of numbers', `{"id":"${rid('num')}","tool_calls":[{"id":"c","name":"f","result":[${numbers}]}]}`, 'too_large', /max-trace-bytes/);
    // 3 MB of JSON whose text parts (with a member besides type and text) count more than once
    // in the stream record: more than NATS takes (8 MiB here), so too_large now, not 503 forever
    const part = JSON.stringify({ role: 'user', content: [{ type: 'text', text: 'x'.repeat(1_000_000), cache_control: { type: 'ephemeral' } }] });
    await one('a record over max_payload', `{"id":"${rid('big')}","input":{"messages":[${part},${part},${part}]}}`, 'too_large', /max_payload/);
    // a key restricted to a project: "" is the same as absent, so the trace goes to its project
    const k = await stack.createKey(A.key, { name: `restricted-${project}`, role: 'member', scopes: ['traces:write', 'traces:read'], project });
    const id = rid('empty');
    const r = await api('POST', '/api/v1/traces', k.key, { body: { traces: [{ id, project: '' }] } });
    assertStatus(r, 202, `project "" with a restricted key: ${r.text}`);
    assert.equal((await waitTrace(A.key, id)).project, project);
  }));

  it('empty strings inside messages and tool calls are the same as absent, and the trace returned can be sent back', T, stack.wrap(async () => {
    const id = rid('empty');
    await ingestOk(A.member, [{ id, project: 'empties', input: { messages: [{ role: 'user', content: '', name: '' }] },
      output: { messages: [{ role: 'assistant', content: '', tool_calls: [{ id: 'c1', type: '', function: { name: '', arguments: '' } }] }] } }]);
    const g = await waitTrace(A.key, id);
    assert.deepEqual(g.input.messages, [{ role: 'user', content: null }], JSON.stringify(g.input));
    assert.deepEqual(g.output.messages[0].content, null);
    assert.deepEqual(g.output.messages[0].tool_calls[0], { id: 'c1', type: 'function', function: { name: null, arguments: null } },
      JSON.stringify(g.output.messages[0].tool_calls));
    // what GET returned goes back in as it is and is stored the same
    const back = { id, project: g.project, name: 'sent back', input: g.input, output: g.output };
    await ingestOk(A.member, [back]);
    const g2 = await waitTrace(A.key, id, (b) => b.name === 'sent back');
    assert.deepEqual([g2.input, g2.output], [g.input, g.output]);
  }));

  it('one GET /api/v1/traces/{id} shows one version of a trace, though it is replaced meanwhile', T, stack.wrap(async () => {
    // the trace and its observations are read by separate statements: they must share a
    // snapshot, or a replacement committed between them mixes two versions
    const id = rid('ver');
    const t0 = iso(Date.now() - 10_000);
    const version = (i) => ({ id, project: 'versions', name: `v${i}`, start_time: t0,
      observations: Array.from({ length: 20 }, (_, k) => ({ id: `o${i}-${k}`, type: 'span', start_time: t0 })) });
    await ingestOk(A.member, [version(0)]);
    await waitTrace(A.key, id);
    let done = false;
    let gets = 0;
    const mixed = [];
    const writer = (async () => {
      try {
        for (let i = 1; i <= 200; i++) assertStatus(await postTraces(A.member, [version(i)]), 202, `version ${i}`);
      } finally {
        done = true;
      }
    })();
    const readers = Array.from({ length: 4 }, async () => {
      while (!done) {
        const g = await api('GET', `/api/v1/traces/${id}`, A.key);
        assertStatus(g, 200, 'GET while the trace is replaced');
        gets++;
        const v = g.body.name.slice(1);
        const seen = [...new Set(g.body.observations.map((o) => o.id.split('-')[0].slice(1)))];
        if (seen.length !== 1 || seen[0] !== v || g.body.observations.length !== 20) mixed.push(`${g.body.name}: ${seen}`);
      }
    });
    await Promise.all([writer, ...readers]);
    assert.ok(gets >= 50, `the readers ran (${gets} GETs)`);
    assert.deepEqual(mixed.slice(0, 5), [], `${mixed.length} of ${gets} GETs mixed two versions`);
  }));

  it("another team's trace answers 404 everywhere and is left untouched", T, stack.wrap(async () => {
    const t0 = Date.now() - 10_000;
    const id = rid('iso');
    await ingestOk(A.member, [{ id, project: 'iso', name: 'team A', start_time: iso(t0), observations: [{ id: 'o', type: 'span' }] }]);
    await waitTrace(A.key, id);
    assertError(await api('GET', `/api/v1/traces/${id}`, B.key), 'not_found', 'GET');
    assertError(await api('POST', `/api/v1/traces/${id}/review`, B.key, { body: { decision: 'accept' } }), 'not_found', 'review');
    assertError(await api('POST', '/api/v1/scores', B.key, { body: { trace_id: id, name: 'q', value: 1 } }), 'not_found', 'score');
    assertError(await api('POST', '/api/v1/scores', B.key, { body: { trace_id: id, observation_id: 'o', name: 'q', value: 1 } }), 'not_found', 'observation score');
    assertError(await api('DELETE', `/api/v1/traces/${id}`, B.key), 'not_found', 'DELETE');
    assert.ok(!(await listIds(B.key, { project: 'iso' })).includes(id), "B's list does not show A's trace");
    let r = await api('POST', '/api/v1/traces/delete', B.key, { body: { filter: { project: 'iso' } } });
    assertStatus(r, 200, 'B deletes by filter');
    assert.equal(r.body.deleted, 0, "B's delete by filter does not reach A's trace");
    const g = await waitTrace(A.key, id);
    assert.equal(g.review_state, 'unreviewed', 'untouched review state');
    assert.deepEqual(g.reviews, []);
    assert.deepEqual(g.scores, []);

    // the same id in team B is B's own trace
    await ingestOk(B.key, [{ id, project: 'iso', name: 'team B', start_time: iso(t0) }]);
    assert.equal((await waitTrace(B.key, id)).name, 'team B');
    assert.equal((await waitTrace(A.key, id)).name, 'team A', "A's trace is not replaced by B's");
  }));

  it('deletion by id and by filter: admin only, gone from every query, recorded in the audit log', T, stack.wrap(async () => {
    const t0 = Date.now() - 10_000;
    const tag = `del-${crypto.randomBytes(3).toString('hex')}`;
    const project = `del-${crypto.randomBytes(3).toString('hex')}`;
    const one = rid('d1');
    const tagged = [rid('dt'), rid('dt'), rid('dt')];
    const keep = rid('dk');
    await ingestOk(A.member, [
      { id: one, project, start_time: iso(t0), observations: [{ id: 'o', type: 'span' }] },
      ...tagged.map((id) => ({ id, project, tags: [tag], start_time: iso(t0) })),
      { id: keep, project, tags: ['other'], start_time: iso(t0) },
    ]);
    await waitAll(A.key, [one, ...tagged, keep]);
    assertStatus(await api('POST', `/api/v1/traces/${one}/review`, A.member, { body: { decision: 'accept' } }), 201);
    assertStatus(await api('POST', '/api/v1/scores', A.member, { body: { trace_id: one, name: 'q', value: 1 } }), 201);

    assertError(await api('DELETE', `/api/v1/traces/${one}`, A.member), 'forbidden', 'a member cannot delete');
    assertError(await api('POST', '/api/v1/traces/delete', A.member, { body: { filter: { tag } } }), 'forbidden', 'a member cannot delete by filter');
    let r = await api('DELETE', `/api/v1/traces/${one}`, A.key);
    assertStatus(r, 200, 'admin deletes');
    assert.deepEqual(r.body, { id: one, deleted: true });
    assertError(await api('GET', `/api/v1/traces/${one}`, A.key), 'not_found', 'deleted trace');
    assertError(await api('DELETE', `/api/v1/traces/${one}`, A.key), 'not_found', 'delete twice');
    assertError(await api('POST', `/api/v1/traces/${one}/review`, A.member, { body: { decision: 'accept' } }), 'not_found', 'review a deleted trace');
    assert.ok(!(await listIds(A.key, { project })).includes(one), 'not listed');
    const [[n]] = await stack.psql(
      `SELECT (SELECT count(*) FROM ingest.observations WHERE team_id = '${A.id}' AND trace_id = '${one}')` +
      ` + (SELECT count(*) FROM ingest.reviews WHERE team_id = '${A.id}' AND trace_id = '${one}')` +
      ` + (SELECT count(*) FROM ingest.scores WHERE team_id = '${A.id}' AND trace_id = '${one}')`,
    );
    assert.equal(n, '0', 'observations, reviews and scores went with the trace');
    const ev = await auditEvent(A.key, (e) => e.action === 'trace_deleted' && e.target === one);
    assert.ok(ev.actor.user_id || ev.actor.key_id, `the audit event names the actor: ${JSON.stringify(ev)}`);

    assertError(await api('POST', '/api/v1/traces/delete', A.key, { body: { filter: {} } }), 'invalid_argument', 'an empty filter');
    assertError(await api('POST', '/api/v1/traces/delete', A.key, { body: { filter: { from: 'yesterday' } } }), 'invalid_argument', 'a bad time');
    r = await api('POST', '/api/v1/traces/delete', A.key, { body: { filter: { tag } } });
    assertStatus(r, 200, 'delete by filter');
    assert.equal(r.body.deleted, 3, 'three traces deleted');
    assert.deepEqual(await listIds(A.key, { tag }), [], 'gone from the tag filter');
    assert.deepEqual(await listIds(A.key, { project }), [keep], 'the others stay');
    for (const id of tagged) assertError(await api('GET', `/api/v1/traces/${id}`, A.key), 'not_found', `deleted ${id}`);
    const ev2 = await auditEvent(A.key, (e) => e.action === 'traces_deleted' && e.detail?.filter?.tag === tag);
    assert.equal(ev2.detail.deleted, 3, 'the audit event counts the deleted traces');

    // a later resend of a deleted id is a new trace, without the old reviews or scores
    await ingestOk(A.member, [{ id: one, project, start_time: iso(t0) }]);
    const g = await waitTrace(A.key, one);
    assert.deepEqual([g.reviews, g.scores, g.observations, g.review_state], [[], [], [], 'unreviewed']);
  }));

  it('a deleted trace sent again unchanged right away is stored again (not taken for a duplicate)', T, stack.wrap(async () => {
    // the stream drops a record whose message id it saw within its duplicate window (20 s):
    // a resend after a deletion must not be taken for the record that was deleted
    const project = `again-${crypto.randomBytes(3).toString('hex')}`;
    const [one, two] = [rid('again'), rid('again')];
    const traces = [one, two].map((id) => ({ id, project, name: 'same content', output: 'x' }));
    await ingestOk(A.member, traces);
    await waitAll(A.key, [one, two]);
    assertStatus(await api('DELETE', `/api/v1/traces/${one}`, A.key), 200, 'delete by id');
    await ingestOk(A.member, [traces[0]], 'the same trace again');
    await waitTrace(A.key, one);
    const byFilter = await api('POST', '/api/v1/traces/delete', A.key, { body: { filter: { project } } });
    assertStatus(byFilter, 200, 'delete by filter');
    assert.equal(byFilter.body.deleted, 2);
    await ingestOk(A.member, traces, 'both again');
    await waitAll(A.key, [one, two]);
    // a plain retry (no deletion in between) is still recognised: stored once
    await ingestOk(A.member, traces, 'a retry');
    await sleep(500);
    assert.deepEqual(await listIds(A.key, { project }), [one, two].sort());
  }));

  it('keyset pagination: 31 traces, limit 7, every trace exactly once in order', T, stack.wrap(async () => {
    const project = `page-${crypto.randomBytes(3).toString('hex')}`;
    const t0 = Date.now() - 120_000;
    // groups of three share a start time, so that the order needs the id as a tie-breaker
    const traces = Array.from({ length: 31 }, (_, i) => ({
      id: `pg-${String(i).padStart(2, '0')}-${crypto.randomBytes(2).toString('hex')}`,
      project, start_time: iso(t0 + Math.floor(i / 3) * 1000),
    }));
    await ingestOk(A.member, traces);
    const all = await pollUntil(async () => (await listIds(A.key, { project })).length === 31, { timeoutMs: 10_000 });
    assert.ok(all.value, 'the 31 traces were stored');
    const late = `pg-late-${crypto.randomBytes(2).toString('hex')}`;
    const seen = [];
    let cursor;
    let pages = 0;
    do {
      const body = await list(A.key, { project, limit: '7', ...(cursor ? { cursor } : {}) });
      pages++;
      assert.ok(body.traces.length <= 7, 'at most limit traces per page');
      if (body.next_cursor) assert.equal(body.traces.length, 7, 'a page with a next cursor is full');
      seen.push(...body.traces);
      cursor = body.next_cursor;
      assert.ok(pages <= 6, 'no more than 5 pages');
      if (pages === 1) {
        // a newer trace arriving between pages must not shift the later pages (keyset, not OFFSET)
        await ingestOk(A.member, [{ id: late, project, start_time: iso(Date.now()) }]);
        await waitTrace(A.key, late);
      }
    } while (cursor);
    assert.equal(pages, 5, '31 traces in pages of 7: 5 pages');
    const ids = seen.map((t) => t.id);
    assert.equal(new Set(ids).size, ids.length, `no trace twice: ${ids}`);
    assert.deepEqual([...ids].sort(), traces.map((t) => t.id).sort(), 'every trace once (the late one is newer than the cursor)');
    assert.equal((await list(A.key, { project, limit: '1' })).traces[0].id, late, 'the late trace heads a fresh first page');
    for (let i = 1; i < seen.length; i++) {
      const a = Date.parse(seen[i - 1].start_time);
      const b = Date.parse(seen[i].start_time);
      assert.ok(a > b || (a === b && seen[i - 1].id > seen[i].id), `newest first, then by id: ${seen[i - 1].id} before ${seen[i].id}`);
    }
    assertError(await api('GET', '/api/v1/traces?cursor=not-a-cursor', A.key), 'invalid_argument', 'a bad cursor');
    assertError(await api('GET', '/api/v1/traces?limit=0', A.key), 'invalid_argument', 'limit 0');
    assertError(await api('GET', '/api/v1/traces?limit=501', A.key), 'invalid_argument', 'limit 501');
  }));

  it('numbers a double cannot hold (64-bit ids, long decimals) come back exactly as sent', T, stack.wrap(async () => {
    const id = rid('exact');
    // raw text: JSON.stringify would round these before they leave; stored as jsonb, whose
    // members come back in its own order, so each is looked for on its own
    const members = ['"snowflake":1234567890123456789', '"neg":-9007199254740993',
      '"pi":3.14159265358979323846', '"list":[12345678901234567890,0.1,7]', '"small":123456789012345'];
    const raw = `{"traces":[{"id":"${id}","project":"exact","metadata":{${members.join(',')}},`
      + `"observations":[{"id":"o1","type":"span","metadata":{"n":9223372036854775807}}]}]}`;
    assertStatus(await api('POST', '/api/v1/traces', A.member, { raw }), 202);
    await waitTrace(A.key, id);
    const got = await api('GET', `/api/v1/traces/${id}`, A.key);
    const listed = await api('GET', '/api/v1/traces?project=exact', A.key);
    for (const m of members) {
      assert.ok(got.text.includes(m), `the trace has ${m}: ${got.text.slice(0, 500)}`);
      assert.ok(listed.text.includes(m), `the listing has ${m}`);
    }
    assert.ok(got.text.includes('"metadata":{"n":9223372036854775807}'), 'the observation\'s metadata as sent');
    const [[snowflake, pi]] = await stack.psql(
      `SELECT metadata->>'snowflake', metadata->>'pi' FROM ingest.traces WHERE id = '${id}'`);
    assert.deepEqual([snowflake, pi], ['1234567890123456789', '3.14159265358979323846'], 'stored exactly');
    // a magnitude PostgreSQL would print as thousands of digits is refused, naming its place
    const huge = `{"traces":[{"id":"${rid('huge')}","metadata":{"n":1e400}}]}`;
    const r = await api('POST', '/api/v1/traces', A.member, { raw: huge });
    assertError(r, 'invalid_argument', 'a number out of range');
    assert.match(r.body.error.message, new RegExp(`number at byte ${huge.indexOf('1e400')} is out of range`));
  }));

  it('query filters: project, time range, model, provider, status, tag, free text', T, stack.wrap(async () => {
    const sfx = crypto.randomBytes(3).toString('hex');
    const [p1, p2] = [`fa-${sfx}`, `fb-${sfx}`];
    const t0 = Date.now() - 3_600_000;
    const mk = (n, extra) => ({ id: `f${n}-${sfx}`, project: p1, start_time: iso(t0 + n * 60_000), ...extra });
    const traces = [
      mk(0, { model: 'gpt-4o', provider: 'openai', status: 'ok', tags: ['prod'], name: 'answer' }),
      mk(1, { model: 'gpt-4o', provider: 'openai', status: 'error', tags: ['prod', 'beta'], name: 'answer' }),
      mk(2, { model: 'claude-sonnet-4', provider: 'anthropic', status: 'ok', tags: ['beta'], name: `needle-${sfx} search` }),
      mk(3, { model: 'claude-sonnet-4', provider: 'anthropic', status: 'unset', metadata: { note: `has NEEDLE-${sfx} inside` } }),
      mk(4, { model: 'llama-3', provider: 'meta', status: 'ok', name: '100%_literal' }),
      { id: `f5-${sfx}`, project: p2, model: 'gpt-4o', provider: 'openai', status: 'ok', start_time: iso(t0 + 5 * 60_000) },
      { id: `f6-${sfx}`, project: p2, start_time: iso(t0 + 6 * 60_000),
        metadata: { path: 'C:\\temp\\x', quote: 'say "hi" now', lines: 'one\ntwo', bell: 'a\u0007b' } },
    ];
    await ingestOk(A.member, traces);
    await waitAll(A.key, traces.map((t) => t.id));
    const ids = (...ns) => ns.map((n) => `f${n}-${sfx}`).sort();
    const q = (params) => listIds(A.key, { project: p1, ...params });

    assert.deepEqual(await listIds(A.key, { project: p1 }), ids(0, 1, 2, 3, 4), 'project');
    assert.deepEqual(await listIds(A.key, { project: p2 }), ids(5, 6), 'other project');
    assert.deepEqual(await q({ model: 'gpt-4o' }), ids(0, 1), 'model');
    assert.deepEqual(await q({ provider: 'anthropic' }), ids(2, 3), 'provider');
    assert.deepEqual(await q({ status: 'ok' }), ids(0, 2, 4), 'status ok');
    assert.deepEqual(await q({ status: 'error' }), ids(1), 'status error');
    assert.deepEqual(await q({ status: 'unset' }), ids(3), 'status unset');
    assert.deepEqual(await q({ tag: 'prod' }), ids(0, 1), 'tag prod');
    assert.deepEqual(await q({ tag: 'beta' }), ids(1, 2), 'tag beta');
    assert.deepEqual(await q({ q: `needle-${sfx}` }), ids(2, 3), 'free text in name and metadata, any case');
    assert.deepEqual(await q({ q: '100%_' }), ids(4), '% and _ are literal in free text');
    assert.deepEqual(await q({ q: '1%0' }), [], '% is not a wildcard (it would match "100")');
    assert.deepEqual(await q({ q: '1_0' }), [], '_ is not a wildcard (it would match "100")');
    // metadata values are found as typed, though the JSON text escapes some of their characters
    const q2 = (text) => listIds(A.key, { project: p2, q: text });
    assert.deepEqual(await q2('SAY "hi"'), ids(6), 'a quote in a metadata value');
    assert.deepEqual(await q2('C:\\temp\\'), ids(6), 'backslashes in a metadata value');
    assert.deepEqual(await q2('one\ntwo'), ids(6), 'a newline in a metadata value');
    assert.deepEqual(await q2('a\u0007b'), ids(6), 'a control character in a metadata value');
    assert.deepEqual(await q2('"quote": "say'), ids(6), 'the JSON text itself still matches');
    assert.deepEqual(await q2('temp\\y'), [], 'no match is no match');
    assert.deepEqual(await q({ from: iso(t0 + 60_000), to: iso(t0 + 3 * 60_000) }), ids(1, 2), 'from inclusive, to exclusive');
    assert.deepEqual(await q({ from: iso(t0 + 4 * 60_000) }), ids(4), 'from only');
    assert.deepEqual(await q({ to: iso(t0 + 60_000) }), ids(0), 'to only');
    assert.deepEqual(await q({ model: 'gpt-4o', status: 'error', tag: 'beta' }), ids(1), 'filters combine');
    assert.deepEqual(await listIds(A.viewer, { project: p1, provider: 'meta' }), ids(4), 'a viewer key reads');
    assertError(await api('GET', '/api/v1/traces?status=weird', A.key), 'invalid_argument', 'status value');
    assertError(await api('GET', '/api/v1/traces?from=yesterday', A.key), 'invalid_argument', 'from value');
    assertError(await postTraces(A.viewer, [mk(9, {})]), 'forbidden', 'a viewer key cannot write');
    assertError(await api('GET', '/api/v1/traces'), 'unauthenticated', 'no credential');
  }));

  it('ids in paths are decoded once; malformed query strings and non-finite scores are 400', T, stack.wrap(async () => {
    const sfx = crypto.randomBytes(3).toString('hex');
    const pct = `pct%41-${sfx}`;
    const plain = `pctA-${sfx}`;
    const slash = `sl/ash-${sfx}`;
    const project = `dec-${sfx}`;
    await ingestOk(A.member, [pct, plain, slash].map((id) => ({ id, project, name: id })));
    await waitAll(A.key, [pct, plain, slash]);
    for (const id of [pct, plain, slash]) {
      const g = await api('GET', `/api/v1/traces/${encodeURIComponent(id)}`, A.key);
      assertStatus(g, 200, `GET ${id}`);
      assert.equal(g.body.id, id, `GET ${encodeURIComponent(id)} finds ${id}, no other`);
    }
    const rv = await api('POST', `/api/v1/traces/${encodeURIComponent(slash)}/review`, A.member, { body: { decision: 'accept' } });
    assertStatus(rv, 201, 'review of an id with a slash');
    assert.equal(rv.body.trace_id, slash);
    const d = await api('DELETE', `/api/v1/traces/${encodeURIComponent(pct)}`, A.key);
    assertStatus(d, 200, 'delete by id');
    assert.deepEqual(d.body, { id: pct, deleted: true }, 'the id asked for is deleted');
    assertStatus(await api('GET', `/api/v1/traces/${encodeURIComponent(plain)}`, A.key), 200, 'the look-alike is still there');
    assertError(await api('GET', `/api/v1/traces/${encodeURIComponent(pct)}`, A.key), 'not_found', 'the deleted one is gone');

    // a parameter without '=' or with %00 would drop or cut filters: refused, never widened
    assertError(await api('GET', `/api/v1/traces?project=${project}&junk`, A.key), 'invalid_argument', 'a parameter without a value');
    assertError(await api('GET', `/api/v1/traces?junk&project=${project}&limit=1`, A.key), 'invalid_argument', 'a parameter without a value, first');
    assertError(await api('GET', `/api/v1/traces?project=${project}%00x`, A.key), 'invalid_argument', '%00 in a value');
    // bytes that are not UTF-8 never reach PostgreSQL (whose error text would be the answer)
    for (const q of [`project=%FF${project}`, 'q=%C3%28', `project=${project}&model=%E2%82`]) {
      const e = await api('GET', `/api/v1/traces?${q}`, A.key);
      assertError(e, 'invalid_argument', `not UTF-8: ${q}`);
      assert.match(e.body.error.message, /malformed query string/, e.text);
    }
    const nu = await api('GET', '/api/v1/traces/%FF%FE', A.key);
    assertError(nu, 'invalid_argument', 'an id that is not UTF-8');
    assert.match(nu.body.error.message, /path segment \{id\} is not valid UTF-8/, nu.text);
    assertError(await api('PUT', '/api/v1/projects/%FF/settings', A.key, { body: { retention_days: 30 } }), 'invalid_argument', 'a project name that is not UTF-8');
    assertError(await api('PUT', '/api/v1/projects/%FF/settings', undefined, { body: { retention_days: 30 } }), 'unauthenticated', 'the caller is authenticated first');
    // a typo or a repeat must not widen the listing to everything
    let e = await api('GET', `/api/v1/traces?projct=${project}`, A.key);
    assertError(e, 'invalid_argument', 'an unknown parameter');
    assert.match(e.body.error.message, /unknown query parameter 'projct'.*project/, e.text);
    e = await api('GET', `/api/v1/traces?project=${project}&project=other`, A.key);
    assertError(e, 'invalid_argument', 'a parameter given twice');
    for (const l of ['%2B5', '%205', '5%20', '0x5']) {
      assertError(await api('GET', `/api/v1/traces?limit=${l}`, A.key), 'invalid_argument', `limit=${l}`);
    }
    assertError(await api('GET', `/api/v1/traces?from=${encodeURIComponent('2026-11-22T10:00:00+20:00')}`, A.key), 'invalid_argument', 'an offset PostgreSQL does not take');
    assert.deepEqual(await listIds(A.key, { project }), [plain, slash].sort(), 'well-formed queries still work');
    for (const v of ['nan', 'inf', '-infinity', ' 1', '1e999', '0x10', '0x1p3', '1e-400', '1e', '.', '']) {
      assertError(await api('GET', `/api/v1/traces?score=q&score_max=${encodeURIComponent(v)}`, A.key), 'invalid_argument', `score_max=${v}`);
    }
    for (const v of ['.5', '5.', '+1', '-2.5e-3', '1e308', '0e-99999', '4.9e-324']) {
      assertStatus(await api('GET', `/api/v1/traces?score=q&score_min=${encodeURIComponent(v)}`, A.key), 200, `score_min=${v}`);
    }
  }));

  it('deletion by filter: unknown members are refused, not ignored; the time window is the listing one', T, stack.wrap(async () => {
    const sfx = crypto.randomBytes(3).toString('hex');
    const project = `dw-${sfx}`;
    const now = Date.now();
    const threeDaysAgo = now - 3 * 86_400_000;
    // stored first without a start time (partition time: now), then resent with a start three
    // days back: its start is more than a day from its partition time
    const far = `far-${sfx}`;
    const near = `near-${sfx}`;
    await ingestOk(A.member, [{ id: far, project }, { id: near, project, start_time: iso(threeDaysAgo), provider: 'openai' }]);
    await waitAll(A.key, [far, near]);
    await ingestOk(A.member, [{ id: far, project, start_time: iso(threeDaysAgo), name: 'moved' }]);
    await waitTrace(A.key, far, (b) => b.name === 'moved');
    const del = (filter) => api('POST', '/api/v1/traces/delete', A.key, { body: { filter } });
    for (const filter of [{ project, provider: 'openai' }, { project, q: 'x' }, { project, satus: 'error' }, { project, review: 'rejected' }]) {
      const r = await del(filter);
      assertError(r, 'invalid_argument', `filter ${JSON.stringify(filter)}`);
      assert.match(r.body.error.message, /not known here/);
    }
    assertError(await del({ project, status: 'broken' }), 'invalid_argument', 'a status that does not exist');
    assertError(await api('POST', '/api/v1/traces/delete', A.key, { body: { filter: { project }, dry_run: true } }), 'invalid_argument', 'a member beside filter');
    assert.deepEqual(await listIds(A.key, { project }), [far, near].sort(), 'nothing was deleted by the refused filters');
    // what a list with the same members shows is what goes
    const window = { project, from: iso(threeDaysAgo - 3_600_000), to: iso(threeDaysAgo + 3_600_000) };
    const shown = await listIds(A.key, window);
    assert.deepEqual(shown, [near], 'the listing window');
    const r = await del(window);
    assertStatus(r, 200, 'delete the window');
    assert.equal(r.body.deleted, shown.length, 'deletes what the list showed');
    assert.deepEqual(await listIds(A.key, { project }), [far], 'the trace the list did not show stays');
  }));

  it('a project-restricted key reviews, scores, deletes and sets retention in its project only', T, stack.wrap(async () => {
    const sfx = crypto.randomBytes(3).toString('hex');
    const [mine, theirs] = [`pm-${sfx}`, `pt-${sfx}`];
    const admin = (await stack.createKey(A.key, { name: 'proj-admin', role: 'admin', scopes: ['traces:read', 'traces:write', 'admin'], project: mine })).key;
    const [a, b] = [`own-${sfx}`, `other-${sfx}`];
    await ingestOk(A.member, [{ id: a, project: mine }, { id: b, project: theirs, observations: [{ id: 'o1', type: 'span' }] }]);
    await waitAll(A.key, [a, b]);
    assertStatus(await api('POST', `/api/v1/traces/${a}/review`, admin, { body: { decision: 'accept' } }), 201, 'review in its project');
    assertError(await api('POST', `/api/v1/traces/${b}/review`, admin, { body: { decision: 'accept' } }), 'not_found', 'review in another project');
    assertStatus(await api('POST', '/api/v1/scores', admin, { body: { trace_id: a, name: 'q', value: 1 } }), 201, 'score in its project');
    assertError(await api('POST', '/api/v1/scores', admin, { body: { trace_id: b, name: 'q', value: 1 } }), 'not_found', 'score in another project');
    assertError(await api('POST', '/api/v1/scores', admin, { body: { trace_id: b, observation_id: 'o1', name: 'q', value: 1 } }), 'not_found', 'score of an observation in another project');
    assertError(await api('DELETE', `/api/v1/traces/${b}`, admin), 'not_found', 'delete in another project');
    assertError(await api('POST', '/api/v1/traces/delete', admin, { body: { filter: { project: theirs } } }), 'forbidden', 'delete by filter in another project');
    assertError(await api('PUT', `/api/v1/projects/${theirs}/settings`, admin, { body: { retention_days: 7 } }), 'forbidden', 'retention of another project');
    // a filter without a project stays in the key's project
    const r = await api('POST', '/api/v1/traces/delete', admin, { body: { filter: { to: iso(Date.now() + 60_000) } } });
    assertStatus(r, 200, 'delete by time');
    assert.equal(r.body.deleted, 1, 'only the trace of its project');
    const g = await waitTrace(A.key, b);
    assert.deepEqual([g.review_state, g.scores.length], ['unreviewed', 0], "the other project's trace is untouched");
    assertStatus(await api('PUT', `/api/v1/projects/${mine}/settings`, admin, { body: { retention_days: 30 } }), 200, 'retention of its project');
  }));

  it('a query waiting on a lock holds up only itself: traces, health checks and other queries go on', T, stack.wrap(async () => {
    const id = rid('lk');
    await ingestOk(A.key, [{ id, project: 'locks', name: 'before' }]);
    await waitTrace(A.key, id);
    // What retention takes to drop a day (ACCESS EXCLUSIVE on ingest.traces), held by another
    // session: a listing of every partition waits for it.
    const order = [];
    const { released } = await stack.lockTable('ingest.traces', 4000);
    const locker = released.then(() => order.push('lock released'));
    const blocked = api('GET', '/api/v1/traces?project=locks', A.key).then((r) => { order.push('blocked listing'); return r; });
    await sleep(200); // the listing is waiting on the lock now
    const health = await fetch(`${stack.env.EVALBUS_INGEST_URL}/healthz`);
    order.push('healthz');
    assert.equal(health.status, 200, 'healthz answers');
    const other = rid('lk');
    await ingestOk(B.key, [{ id: other, project: 'locks' }], 'another team sends a trace');
    order.push('trace accepted');
    const r = await blocked;
    assertStatus(r, 200, 'the blocked listing answers once the lock is gone');
    assert.deepEqual(r.body.traces.map((t) => t.id), [id], 'and lists the trace');
    await locker;
    assert.deepEqual(order.slice(0, 2), ['healthz', 'trace accepted'],
      `the health check and another team's trace were answered while the listing waited (order: ${order.join(', ')})`);
    await waitTrace(B.key, other);
  }));

  it('reviews and scores refuse members they do not know, and an empty observation_id, instead of dropping them', T, stack.wrap(async () => {
    const id = rid('um');
    await ingestOk(A.key, [{ id, project: 'members' }]);
    await waitTrace(A.key, id);
    let r = await api('POST', `/api/v1/traces/${id}/review`, A.key, { body: { decision: 'accept', note: 'typo of notes' } });
    assertError(r, 'invalid_argument', 'review with "note"');
    assert.match(r.body.error.message, /'note'.*notes/, 'the message names the member and the known ones');
    r = await api('POST', '/api/v1/scores', A.key, { body: { trace_id: id, name: 'q', value: 1, comments: 'x' } });
    assertError(r, 'invalid_argument', 'score with "comments"');
    assert.match(r.body.error.message, /'comments'/);
    assertError(await api('POST', '/api/v1/scores', A.key, { body: { trace_id: id, observation_id: '', name: 'q', value: 1 } }), 'invalid_argument', 'empty observation_id');
    const g = await waitTrace(A.key, id);
    assert.deepEqual([g.review_state, g.scores.length], ['unreviewed', 0], 'nothing was stored');
    assertStatus(await api('POST', `/api/v1/traces/${id}/review`, A.key, { body: { decision: 'accept', notes: 'ok' } }), 201, 'the same review spelt right');
  }));

  it('query parameters the endpoint does not take are 400, never ignored: DELETE ?dry_run=true deletes nothing', T, stack.wrap(async () => {
    const sfx = crypto.randomBytes(3).toString('hex');
    const project = `qp-${sfx}`;
    const [one, tagged] = [`qp1-${sfx}`, `qp2-${sfx}`];
    await ingestOk(A.member, [{ id: one, project, observations: [{ id: 'o', type: 'span' }] }, { id: tagged, project, tags: [sfx] }]);
    await waitAll(A.key, [one, tagged]);
    const unknown = (r, what) => {
      assertError(r, 'invalid_argument', what);
      assert.match(r.body.error.message, /unknown query parameter '(dry_run|fields|x)'/, `${what}: ${r.text}`);
    };
    const sent = `qp3-${sfx}`;
    unknown(await api('POST', `/api/v1/traces?x=${project}`, A.member, { body: { traces: [{ id: sent, project }] } }), 'POST traces ?x');
    unknown(await api('DELETE', `/api/v1/traces/${one}?dry_run=true`, A.key), 'DELETE ?dry_run');
    unknown(await api('POST', '/api/v1/traces/delete?dry_run=true', A.key, { body: { filter: { tag: sfx } } }), 'delete by filter ?dry_run');
    unknown(await api('GET', `/api/v1/traces/${one}?fields=id`, A.key), 'GET ?fields');
    unknown(await api('POST', `/api/v1/traces/${one}/review?x=1`, A.member, { body: { decision: 'accept' } }), 'review ?x');
    unknown(await api('POST', '/api/v1/scores?x=1', A.member, { body: { trace_id: one, name: 'q', value: 1 } }), 'score ?x');
    unknown(await api('PUT', `/api/v1/projects/${project}/settings?x=1`, A.key, { body: { retention_days: 5 } }), 'PUT settings ?x');
    unknown(await api('GET', `/api/v1/projects/${project}/settings?x=1`, A.key), 'GET settings ?x');
    // nothing happened
    assert.deepEqual(await listIds(A.key, { project }), [one, tagged].sort(), 'both traces are still there, and the refused batch was not stored');
    const g = await waitTrace(A.key, one);
    assert.deepEqual([g.review_state, g.reviews.length, g.scores.length], ['unreviewed', 0, 0], 'no review or score was written');
    assert.equal((await api('GET', `/api/v1/projects/${project}/settings`, A.key)).body.default, true, 'no retention was set');
  }));

  it('a window whose from is after its to, or a score_min above score_max, is 400 for listing and deletion, not an empty answer', T, stack.wrap(async () => {
    const sfx = crypto.randomBytes(3).toString('hex');
    const project = `rw-${sfx}`;
    const t0 = Date.UTC(2026, 0, 1, 8, 30);
    const id = `rw-${sfx}`;
    await ingestOk(A.member, [{ id, project, start_time: iso(t0) }]);
    await waitTrace(A.key, id);
    const qs = (p) => new URLSearchParams({ project, ...p }).toString();
    const swapped = { from: '2026-01-01T09:00:00Z', to: '2026-01-01T08:00:00Z' };
    let r = await api('GET', `/api/v1/traces?${qs(swapped)}`, A.key);
    assertError(r, 'invalid_argument', 'listing with from after to');
    assert.match(r.body.error.message, /from .* is after to/, r.text);
    // offsets are compared as the instants they name, not as text
    assertError(await api('GET', `/api/v1/traces?${qs({ from: '2026-01-01T10:00:00Z', to: '2026-01-01T11:00:00+02:00' })}`, A.key),
      'invalid_argument', '10:00Z is after 09:00Z');
    assert.deepEqual(await listIds(A.key, { project, from: '2026-01-01T10:00:00+02:00', to: '2026-01-01T09:00:00Z' }), [id], '08:00Z to 09:00Z');
    assert.deepEqual(await listIds(A.key, { project, from: '2026-01-01T08:00:00Z', to: '2026-01-01T08:00:00Z' }), [], 'equal bounds: an empty window, not an error');
    assert.deepEqual(await listIds(A.key, { project, from: '0001-01-01T00:00:00Z', to: '9999-12-31T23:59:59Z' }), [id], 'the widest window');
    r = await api('GET', `/api/v1/traces?${qs({ score: 'q', score_min: '0.9', score_max: '0.1' })}`, A.key);
    assertError(r, 'invalid_argument', 'score_min above score_max');
    assert.match(r.body.error.message, /score_min/, r.text);
    assertStatus(await api('GET', `/api/v1/traces?${qs({ score: 'q', score_min: '0.5', score_max: '5e-1' })}`, A.key), 200, 'equal bounds');
    r = await api('POST', '/api/v1/traces/delete', A.key, { body: { filter: { project, ...swapped } } });
    assertError(r, 'invalid_argument', 'deletion with from after to');
    assert.deepEqual(await listIds(A.key, { project }), [id], 'nothing was deleted');
  }));

  it('a query past query-timeout is stopped with 504 timeout, whatever it waits on', T, stack.wrap(async () => {
    const replica = await stack.spawnService('ingest', { EVALBUS_QUERY_TIMEOUT: '1s', EVALBUS_WRITER_THREADS: '0' });
    const { released: locker } = await stack.lockTable('ingest.traces', 3000);
    const r = await stack.api('GET', '/api/v1/traces', { base: replica.url, key: A.key });
    assertError(r, 'timeout', 'a listing waiting on the lock past 1 s');
    assert.match(r.body.error.message, /query-timeout/, 'the message names the setting');
    await locker;
    assertStatus(await stack.api('GET', '/api/v1/traces?limit=1', { base: replica.url, key: A.key }), 200, 'the same listing once the lock is gone');
  }));

  it('readiness never waits for a database connection: with every one held by waiting queries, /readyz still answers', T, stack.wrap(async () => {
    // two connections, both taken by listings that wait on a lock: a probe that waited for a
    // connection would hold up the loop, and with it every request
    const replica = await stack.spawnService('ingest', { EVALBUS_DB_POOL: '2', EVALBUS_API_THREADS: '2', EVALBUS_WRITER_THREADS: '0' });
    const order = [];
    const { released } = await stack.lockTable('ingest.traces', 5000);
    const locker = released.then(() => order.push('lock released'));
    const listings = [1, 2].map(() => stack.api('GET', '/api/v1/traces?limit=1', { base: replica.url, key: A.key }).then((r) => { order.push('listing'); return r; }));
    // both connections are waiting on the lock
    await pollUntil(async () => Number((await stack.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FROM ingest.traces t WHERE%'"))[0][0]) >= 2,
      { timeoutMs: 5000, intervalMs: 50 });
    // the check asks PostgreSQL on a connection of its own, outside the pool
    const ready = await stack.api('GET', '/readyz', { base: replica.url });
    order.push('readyz');
    assertStatus(ready, 200, 'readyz');
    assert.equal(ready.body.checks.postgres.ok, true, 'PostgreSQL answers');
    for (const r of await Promise.all(listings)) assertStatus(r, 200, 'the listings answer once the lock is gone');
    await locker;
    assert.equal(order[0], 'readyz', `readyz answered while the listings waited (order: ${order.join(', ')})`);
  }));

  it('project settings name a project as traces do: 400 for an overlong or control-character name', T, stack.wrap(async () => {
    for (const [name, what] of [['p'.repeat(257), '257 bytes'], ['a%01b', 'a control character'], ['a%7Fb', 'DEL']]) {
      assertError(await api('PUT', `/api/v1/projects/${name}/settings`, A.key, { body: { retention_days: 5 } }), 'invalid_argument', `PUT ${what}`);
      assertError(await api('GET', `/api/v1/projects/${name}/settings`, A.key), 'invalid_argument', `GET ${what}`);
    }
    // a member the settings do not have is refused, not dropped
    const members = `sm-${crypto.randomBytes(3).toString('hex')}`;
    for (const body of [{ retention_days: 5, retention_dayz: 1 }, { retention_days: 5, project: 'other' }]) {
      const r = await api('PUT', `/api/v1/projects/${members}/settings`, A.key, { body });
      assertError(r, 'invalid_argument', `PUT ${JSON.stringify(body)}`);
      assert.match(r.body.error.message, /not known here/, r.text);
    }
    assert.equal((await api('GET', `/api/v1/projects/${members}/settings`, A.key)).body.default, true, 'nothing was set');
    const ok = 'p'.repeat(256);
    assertStatus(await api('PUT', `/api/v1/projects/${ok}/settings`, A.key, { body: { retention_days: 5 } }), 200, '256 bytes');
    const g = await api('GET', `/api/v1/projects/${ok}/settings`, A.key);
    assertStatus(g, 200, 'read back');
    assert.equal(g.body.retention_days, 5);
  }));

  it('its threads are named for top -H and perf', T, async () => {
    const pid = stack.readPid('ingest');
    assert.ok(pid, 'ingest has a pid file');
    const names = threadsOf(pid).map((t) => t.name);
    for (const name of ['decode-0', 'decode-1', 'guard-0', 'api-0', 'api-1', 'writer-0', 'writer-1', 'retention', 'stream-watch']) {
      assert.ok(names.includes(name), `a thread named ${name} among ${names.join(', ')}`);
    }
    // the NATS connection threads of a writer take its name
    for (const name of ['writer-0', 'stream-watch']) {
      assert.ok(names.filter((n) => n === name).length >= 2, `${name} and its NATS threads among ${names.join(', ')}`);
    }
  });

  it("the NATS library's own threads run at nice 10, the intake's at 0", T, async () => {
    const pid = stack.readPid('ingest');
    const threads = threadsOf(pid);
    const show = JSON.stringify(threads);
    // timers, connection callbacks and the message collector (bus.c, lib_open)
    const lib = threads.filter((t) => t.name === 'nats-lib');
    assert.ok(lib.length >= 3, `three threads named nats-lib: ${show}`);
    for (const t of lib) assert.equal(t.nice, 10, `nats-lib thread ${t.tid}: ${show}`);
    for (const t of threads.filter((x) => x.name.startsWith('writer-') && x.name !== 'writer-beat')) {
      assert.equal(t.nice, 10, `writer thread ${t.tid}: ${show}`);
    }
    for (const t of threads.filter((x) => x.tid === pid || /^(decode|api|guard)-/.test(x.name))) {
      assert.equal(t.nice, 0, `intake thread ${t.name} ${t.tid}: ${show}`);
    }
  });

  it('every ingest metric family on /metrics carries # HELP and # TYPE', T, async () => {
    const text = await (await fetch(`${stack.env.EVALBUS_INGEST_URL}/metrics`)).text();
    const families = new Set(text.split('\n').filter((l) => l.startsWith('evalbus_ingest_')).map((l) => l.split(/[{ ]/)[0]));
    for (const name of ['evalbus_ingest_traces_accepted_total', 'evalbus_ingest_traces_stored_total', 'evalbus_ingest_reviews_total']) {
      assert.ok(families.has(name), `${name} is on /metrics after this file's traffic`);
    }
    for (const name of families) {
      assert.match(text, new RegExp(`^# HELP ${name} \\S`, 'm'), `# HELP ${name}`);
      assert.match(text, new RegExp(`^# TYPE ${name} (counter|gauge|histogram)$`, 'm'), `# TYPE ${name}`);
    }
  });
});
