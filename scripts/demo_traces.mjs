#!/usr/bin/env node
// scripts/demo_traces.mjs -- sends a realistic sample of LLM traces to a running evalbus stack
// over all three ways in (JSON batch API, OTLP/HTTP with GenAI attributes, NATS TraceBatch),
// reviews and scores some of them, and prints counts from the query API.
//
// Usage: node scripts/demo_traces.mjs <api key> <team slug> [traces per way, default 1000]
// Environment: EVALBUS_URL (the edge), EVALBUS_NATS_URL (from stack.env).
// Uses the nats and protobufjs packages installed in tests/node_modules by scripts/deps.
// Deterministic: the same seed gives the same traces, so the numbers can be checked.

import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(repo, 'tests', 'package.json'));
const { connect, headers } = require('nats');
const protobuf = require('protobufjs');

const [key, team, perWayArg] = process.argv.slice(2);
if (!key || !team) {
  console.error('usage: demo_traces.mjs <api key> <team slug> [traces per way]');
  process.exit(2);
}
const PER_WAY = Number(perWayArg ?? 1000);
const URL = process.env.EVALBUS_URL ?? 'http://127.0.0.1:8080';
const AUTH = { Authorization: `Bearer ${key}` };

let seed = 42;
const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const pick = (a) => a[Math.floor(rnd() * a.length)];
const hex = (n) => Array.from({ length: n }, () => Math.floor(rnd() * 16).toString(16)).join('');

const PROJECTS = ['support-bot', 'sql-assistant', 'search-agent'];
const MODELS = [
  ['gpt-4o', 'openai'], ['gpt-4o-mini', 'openai'],
  ['claude-3-5-sonnet-20241022', 'anthropic'], ['llama-3.1-70b-instruct', 'meta'],
];
const CUSTOMERS = ['ana.silva@example.com', 'bo.chen@example.org', 'carla.ruiz@example.net'];
const PHONES = ['+1 415 555 0134', '(212) 555-0187', '+44 20 7946 0958'];
const QUESTIONS = {
  'support-bot': ['My order #48213 has not arrived, can you check?', 'How do I reset my password?',
    'I was charged twice this month.'],
  'sql-assistant': ['How many orders were shipped last week?', 'Top 10 customers by revenue in 2026',
    'Average delivery time per region'],
  'search-agent': ['Find the latest release notes for version 2.4.1', 'Who maintains the billing API?',
    'Summarize the incident report from Tuesday'],
};

function sample(i, way) {
  const project = PROJECTS[i % PROJECTS.length];
  const [model, provider] = pick(MODELS);
  const start = Date.UTC(2026, 10, 22, 8, 0, 0) + i * 1500 + Math.floor(rnd() * 1000);
  const latency = 300 + Math.floor(rnd() * 2500);
  const question = pick(QUESTIONS[project]);
  const who = pick(CUSTOMERS);
  const error = rnd() < 0.05;
  const inTok = 80 + Math.floor(rnd() * 900);
  const outTok = error ? 0 : 20 + Math.floor(rnd() * 400);
  const user = `${question} (customer ${who}, phone ${pick(PHONES)})`;
  const toolCall = project !== 'support-bot' && rnd() < 0.7;
  const sql = 'SELECT region, avg(delivered_at - shipped_at) FROM orders GROUP BY region';
  return {
    id: `demo-${way}-${i}`,
    project, model, provider, start, latency, question, user, error, inTok, outTok, toolCall, sql,
    answer: error ? '' : toolCall ? 'Here is what I found in the database.' : 'Happy to help: here is what I found.',
  };
}

function jsonTrace(s) {
  const t = {
    id: s.id, project: s.project, name: 'answer', model: s.model, provider: s.provider,
    status: s.error ? 'error' : 'ok',
    start_time: new Date(s.start).toISOString(), end_time: new Date(s.start + s.latency).toISOString(),
    usage: { input_tokens: s.inTok, output_tokens: s.outTok },
    cost_usd: Number(((s.inTok * 2.5 + s.outTok * 10) / 1e6).toFixed(6)),
    input: { messages: [{ role: 'system', content: `You are the ${s.project}. Be concise.` },
      { role: 'user', content: s.user }] },
    output: { messages: [s.toolCall
      ? { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function',
        function: { name: 'run_sql', arguments: JSON.stringify({ query: s.sql }) } }] }
      : { role: 'assistant', content: s.answer }] },
    metadata: { customer_tier: pick(['free', 'pro', 'gold']), channel: pick(['web', 'email', 'api']) },
    tags: [pick(['prod', 'staging']), s.project],
    observations: [{ id: 'gen-1', type: 'generation', name: 'llm', model: s.model, provider: s.provider,
      start_time: new Date(s.start).toISOString(), end_time: new Date(s.start + s.latency).toISOString(),
      usage: { input_tokens: s.inTok, output_tokens: s.outTok } }],
  };
  if (s.error) t.status_message = 'upstream timeout after 30 s';
  return t;
}

function otlpSpan(s) {
  const attr = (k, v) => ({ key: k, value: typeof v === 'number' ? { intValue: String(v) } : { stringValue: String(v) } });
  const msgs = [{ role: 'system', parts: [{ type: 'text', content: `You are the ${s.project}.` }] },
    { role: 'user', parts: [{ type: 'text', content: s.user }] }];
  const out = [{ role: 'assistant', parts: [{ type: 'text', content: s.answer }], finish_reason: 'stop' }];
  return {
    traceId: hex(32), spanId: hex(16), name: `chat ${s.model}`, kind: 3,
    startTimeUnixNano: String(BigInt(s.start) * 1000000n),
    endTimeUnixNano: String(BigInt(s.start + s.latency) * 1000000n),
    attributes: [attr('gen_ai.operation.name', 'chat'), attr('gen_ai.system', s.provider),
      attr('gen_ai.request.model', s.model), attr('gen_ai.usage.input_tokens', s.inTok),
      attr('gen_ai.usage.output_tokens', s.outTok), attr('gen_ai.input.messages', JSON.stringify(msgs)),
      attr('gen_ai.output.messages', JSON.stringify(out))],
    status: { code: s.error ? 2 : 1, message: s.error ? 'upstream timeout' : '' },
  };
}

async function post(p, body, headers = {}) {
  const res = await fetch(URL + p, { method: 'POST', headers: { ...AUTH, 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`POST ${p}: ${res.status} ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : {};
}

async function get(p) {
  const res = await fetch(URL + p, { headers: AUTH });
  if (res.status !== 200) throw new Error(`GET ${p}: ${res.status} ${await res.text()}`);
  return res.json();
}

async function count(query) {
  let n = 0;
  let cursor = null;
  do {
    const page = await get(`/api/v1/traces?limit=500${query}${cursor ? `&cursor=${cursor}` : ''}`);
    n += page.traces.length;
    cursor = page.next_cursor;
  } while (cursor);
  return n;
}

const before = await count('');
const t0 = Date.now();
// 1. JSON batch API
for (let b = 0; b < PER_WAY; b += 100) {
  const traces = [];
  for (let i = b; i < Math.min(b + 100, PER_WAY); i++) traces.push(jsonTrace(sample(i, 'json')));
  const r = await post('/api/v1/traces', { traces });
  if (r.rejected?.length) throw new Error(`JSON batch rejected items: ${JSON.stringify(r.rejected[0])}`);
}
console.log(`   JSON batch API:  ${PER_WAY} traces accepted (POST /api/v1/traces, batches of 100)`);

// 2. OTLP/HTTP with GenAI semantic conventions
const otlpIds = [];
for (let b = 0; b < PER_WAY; b += 100) {
  const spansByProject = {};
  for (let i = b; i < Math.min(b + 100, PER_WAY); i++) {
    const s = sample(i, 'otlp');
    const span = otlpSpan(s);
    otlpIds.push(span.traceId);
    (spansByProject[s.project] ??= []).push(span);
  }
  const resourceSpans = Object.entries(spansByProject).map(([project, spans]) => ({
    resource: { attributes: [{ key: 'service.name', value: { stringValue: project } }] },
    scopeSpans: [{ scope: { name: 'demo' }, spans }],
  }));
  const r = await post('/otlp/v1/traces', { resourceSpans });
  if (r.partialSuccess?.rejectedSpans) throw new Error(`OTLP rejected spans: ${JSON.stringify(r)}`);
}
console.log(`   OTLP/HTTP:       ${PER_WAY} spans accepted (POST /otlp/v1/traces, gen_ai.* attributes)`);

// 3. NATS TraceBatch (protobuf), as another system would publish it
const root = new protobuf.Root();
root.resolvePath = (_o, t) => path.join(repo, 'proto', t);
await root.load('evalbus/v1/trace.proto', { keepCase: true });
const TraceBatch = root.lookupType('evalbus.v1.TraceBatch');
const IngestAck = root.lookupType('evalbus.v1.IngestAck');
const nc = await connect({ servers: process.env.EVALBUS_NATS_URL ?? 'nats://127.0.0.1:8086' });
const hdr = headers();
hdr.set('Evalbus-Api-Key', key);
for (let b = 0; b < PER_WAY; b += 100) {
  const traces = [];
  for (let i = b; i < Math.min(b + 100, PER_WAY); i++) {
    const s = sample(i, 'nats');
    const ns = BigInt(s.start) * 1000000n;
    traces.push({
      id: s.id, project: s.project, name: 'answer', model: s.model, provider: s.provider,
      status: s.error ? 'error' : 'ok', start_time_unix_nano: String(ns),
      end_time_unix_nano: String(ns + BigInt(s.latency) * 1000000n),
      input_tokens: s.inTok, output_tokens: s.outTok,
      input_messages: [{ role: 'user', content: s.user }],
      output_messages: [{ role: 'assistant', content: s.answer }],
      tags: ['prod', 'nats'], metadata_json: JSON.stringify({ source_system: 'order-service' }),
    });
  }
  const reply = await nc.request(`evalbus.v1.ingest.traces.${team}`, TraceBatch.encode({ traces }).finish(), { headers: hdr, timeout: 10000 });
  const ack = IngestAck.decode(reply.data);
  if (ack.error || ack.rejected?.length) throw new Error(`NATS batch: ${JSON.stringify(ack)}`);
}
await nc.close();
console.log(`   NATS:            ${PER_WAY} traces acknowledged (evalbus.v1.ingest.traces.${team})`);

// Wait until everything is stored (the writer commits within about a second).
const total = before + 3 * PER_WAY;
let stored = 0;
for (let i = 0; i < 120 && stored < total; i++) {
  stored = await count('');
  if (stored < total) await new Promise((r) => setTimeout(r, 500));
}
if (stored !== total) throw new Error(`only ${stored} of ${total} traces are stored`);
console.log(`   stored:          ${stored - before} traces in PostgreSQL, ${((Date.now() - t0) / 1000).toFixed(1)} s after the first send`);

// 4. Reviews and scores
const reasons = ['hallucination', 'incomplete', 'incorrect', 'off_topic'];
let accepted = 0;
let rejected = 0;
for (let i = 0; i < Math.min(300, PER_WAY); i++) {
  const id = `demo-json-${i}`;
  const reject = i % 4 === 3;
  await post(`/api/v1/traces/${id}/review`, reject
    ? { decision: 'reject', reason: reasons[i % reasons.length], score: 0.2, notes: 'demo review' }
    : { decision: 'accept', score: 0.9 });
  if (reject) rejected++; else accepted++;
  await post('/api/v1/scores', { trace_id: id, name: 'helpfulness', value: reject ? 0.3 : 0.85, source: 'llm_judge' });
}
console.log(`   reviewed:        ${accepted} accepted, ${rejected} rejected (with reasons), ${accepted + rejected} scored`);

// 4b. Preference pairs: two answers to the same question, one accepted and one rejected (what
// the openai-preference export is built from).
const pairs = [];
for (let k = 0; k < 20; k++) {
  const question = `${pick(QUESTIONS['support-bot'])} (ticket ${1000 + k})`;
  const input = { messages: [{ role: 'system', content: 'You are a concise support agent.' }, { role: 'user', content: question }] };
  const t = Date.UTC(2026, 10, 22, 9, 0, 0) + k * 2000;
  for (const good of [true, false]) {
    pairs.push({
      id: `demo-pair-${k}-${good ? 'good' : 'bad'}`, project: 'support-bot', name: 'answer',
      model: 'gpt-4o', provider: 'openai', status: 'ok', start_time: new Date(t + (good ? 0 : 1000)).toISOString(),
      input,
      output: { messages: [{ role: 'assistant', content: good
        ? `I have checked ticket ${1000 + k}: it is resolved and you will get an e-mail confirmation today.`
        : 'Please contact support.' }] },
      tags: ['prod', 'pairs'],
    });
  }
}
{
  const r = await post('/api/v1/traces', { traces: pairs });
  if (r.rejected?.length) throw new Error(`pairs rejected: ${JSON.stringify(r.rejected[0])}`);
  for (let k = 0; k < 20; k++) {
    let ok = false;
    for (let i = 0; i < 50 && !ok; i++) {
      const g = await fetch(`${URL}/api/v1/traces/demo-pair-${k}-bad`, { headers: AUTH });
      ok = g.status === 200;
      if (!ok) await new Promise((res) => setTimeout(res, 100));
    }
    await post(`/api/v1/traces/demo-pair-${k}-good/review`, { decision: 'accept', score: 1 });
    await post(`/api/v1/traces/demo-pair-${k}-bad/review`, { decision: 'reject', reason: 'incomplete', score: 0.1 });
  }
  console.log('   preference:      20 questions answered twice, one answer accepted and one rejected');
}

// 5. Counts from the query API
const rows = [
  ['all traces', ''],
  ...PROJECTS.map((p) => [`project ${p}`, `&project=${p}`]),
  ['model gpt-4o', '&model=gpt-4o'],
  ['status error', '&status=error'],
  ['review accepted', '&review=accepted'],
  ['review rejected', '&review=rejected'],
  ['helpfulness >= 0.8', '&score=helpfulness&score_min=0.8'],
  ['metadata has "gold"', '&q=gold'],
];
for (const [label, q] of rows) console.log(`   ${label.padEnd(22)} ${String(await count(q)).padStart(6)}`);
