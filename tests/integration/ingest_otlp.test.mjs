// The ingest service's OTLP/HTTP endpoint through the nginx edge: POST /otlp/v1/traces with
// JSON and protobuf bodies (encoded here with protobufjs from proto/evalbus/otlp/v1/otlp.proto),
// gzip, spans mapped to traces with the OpenTelemetry GenAI conventions, resends stored once,
// a trace split across requests merged, bad spans reported in partial_success, and an end-to-end
// export with the real OpenTelemetry JS SDK and both of its OTLP/HTTP exporters.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';

import { SpanKind, SpanStatusCode, context as otelContext, trace as otelTrace } from '@opentelemetry/api';
import { OTLPTraceExporter as OTLPHttpExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OTLPProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';

import {
  BIN_DIR,
  DOWN_TIMEOUT_MS,
  protoRoot,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  assertStatus,
  pollUntil,
  sleep,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('ingest-otlp');
const T = { timeout: 60_000 };
const HEX32 = /^[0-9a-f]{32}$/;

const hex = (n) => crypto.randomBytes(n).toString('hex');
const nsStr = (ms) => String(BigInt(Math.round(ms * 1000)) * 1000n);

let types;
async function loadTypes() {
  if (!types) {
    const root = await protoRoot('evalbus/otlp/v1/otlp.proto', 'evalbus/v1/trace.proto');
    types = {
      TracesStored: root.lookupType('evalbus.v1.TracesStored'),
      Req: root.lookupType('evalbus.otlp.v1.ExportTraceServiceRequest'),
      Resp: root.lookupType('evalbus.otlp.v1.ExportTraceServiceResponse'),
      Status: root.lookupType('evalbus.otlp.v1.RpcStatus'),
    };
  }
  return types;
}

// --- building requests: one neutral description, two encodings ------------------------------

/** A span description: {traceId, spanId, parentSpanId?, name, startMs, endMs, attrs: {k: v},
 * status?: 0|1|2, kind?}. Attribute values: string, integer (as int), float, boolean, and
 * arrays of those. */
function anyValueJson(v) {
  if (Array.isArray(v)) return { arrayValue: { values: v.map(anyValueJson) } };
  if (typeof v === 'bigint') return { intValue: v.toString() };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Number.isInteger(v)) return { intValue: String(v) };
  return { doubleValue: v };
}

function anyValuePb(v) {
  if (Array.isArray(v)) return { array_value: { values: v.map(anyValuePb) } };
  if (typeof v === 'string') return { string_value: v };
  if (typeof v === 'boolean') return { bool_value: v };
  if (Number.isInteger(v)) return { int_value: v };
  return { double_value: v };
}

function otlpJson(service, spans, resource = {}) {
  return {
    resourceSpans: [{
      resource: { attributes: [{ key: 'service.name', value: { stringValue: service } },
        ...Object.entries(resource).map(([key, v]) => ({ key, value: anyValueJson(v) }))] },
      scopeSpans: [{
        scope: { name: 'evalbus-it', version: '1' },
        spans: spans.map((s) => ({
          traceId: s.traceId,
          spanId: s.spanId,
          ...(s.parentSpanId ? { parentSpanId: s.parentSpanId } : {}),
          name: s.name,
          kind: s.kind ?? 3,
          startTimeUnixNano: nsStr(s.startMs),
          endTimeUnixNano: nsStr(s.endMs),
          attributes: Object.entries(s.attrs ?? {}).map(([key, v]) => ({ key, value: anyValueJson(v) })),
          status: { code: s.status ?? 0 },
        })),
      }],
    }],
  };
}

function otlpProto(service, spans) {
  const { Req } = types;
  const obj = {
    resource_spans: [{
      resource: { attributes: [{ key: 'service.name', value: { string_value: service } }] },
      scope_spans: [{
        scope: { name: 'evalbus-it', version: '1' },
        spans: spans.map((s) => ({
          trace_id: Buffer.from(s.traceId, 'hex'),
          span_id: Buffer.from(s.spanId, 'hex'),
          parent_span_id: s.parentSpanId ? Buffer.from(s.parentSpanId, 'hex') : Buffer.alloc(0),
          name: s.name,
          kind: s.kind ?? 3,
          start_time_unix_nano: nsStr(s.startMs),
          end_time_unix_nano: nsStr(s.endMs),
          attributes: Object.entries(s.attrs ?? {}).map(([key, v]) => ({ key, value: anyValuePb(v) })),
          status: { code: s.status ?? 0 },
        })),
      }],
    }],
  };
  const msg = Req.fromObject(obj);
  assert.equal(Req.verify(msg), null, 'the test builds a valid ExportTraceServiceRequest');
  return Buffer.from(Req.encode(msg).finish());
}

/** POST /otlp/v1/traces; enc 'json' | 'proto'; gzip true|false. Returns the response with
 * `otlp` = the decoded ExportTraceServiceResponse as {rejected, message} (0/'' when none). */
async function postOtlp(key, enc, service, spans, { gzip = false, resource } = {}) {
  let raw = enc === 'json' ? Buffer.from(JSON.stringify(otlpJson(service, spans, resource))) : otlpProto(service, spans);
  const headers = {};
  if (gzip) {
    raw = zlib.gzipSync(raw);
    headers['content-encoding'] = 'gzip';
  }
  const res = await fetch(`${stack.url}/otlp/v1/traces`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${key}`,
      'content-type': enc === 'json' ? 'application/json' : 'application/x-protobuf',
      ...headers,
    },
    body: raw,
    signal: AbortSignal.timeout(15_000),
  });
  const buf = Buffer.from(await res.arrayBuffer());
  const out = { status: res.status, headers: res.headers, buf, text: buf.toString('utf8') };
  if (res.status === 200) {
    if (enc === 'json') {
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/, 'a JSON request gets a JSON answer');
      const b = JSON.parse(out.text);
      const ps = b.partialSuccess ?? b.partial_success;
      out.otlp = { rejected: Number(ps?.rejectedSpans ?? ps?.rejected_spans ?? 0), message: ps?.errorMessage ?? ps?.error_message ?? '' };
    } else {
      assert.match(res.headers.get('content-type') ?? '', /^application\/x-protobuf/, 'a protobuf request gets a protobuf answer');
      const { Resp } = types;
      const b = Resp.toObject(Resp.decode(buf), { longs: Number, defaults: false });
      out.otlp = { rejected: Number(b.partial_success?.rejected_spans ?? 0), message: b.partial_success?.error_message ?? '' };
    }
  }
  return out;
}

function api(method, p, key, opts = {}) {
  return stack.api(method, p, { base: stack.url, key, ...opts });
}

async function waitTrace(key, id, pred = () => true, timeoutMs = 3000) {
  let last;
  const res = await pollUntil(async () => {
    last = await api('GET', `/api/v1/traces/${encodeURIComponent(id)}`, key);
    return last.status === 200 && pred(last.body) ? last.body : null;
  }, { timeoutMs, intervalMs: 100 });
  assert.ok(res.value, `trace ${id} readable (as expected) within ${timeoutMs} ms; last ${last.status}: ${last.text.slice(0, 600)}`);
  return res.value;
}

/** A GenAI chat span with a tool span under it. */
function chatSpans(traceId, t0, { model = 'gpt-4o', input = 11, output = 4 } = {}) {
  const root = hex(8);
  return [
    {
      traceId, spanId: root, name: `chat ${model}`, startMs: t0, endMs: t0 + 900, status: 1,
      attrs: {
        'gen_ai.operation.name': 'chat',
        'gen_ai.system': 'openai',
        'gen_ai.request.model': model,
        'gen_ai.usage.input_tokens': input,
        'gen_ai.usage.output_tokens': output,
        'gen_ai.input.messages': JSON.stringify([{ role: 'user', parts: [{ type: 'text', content: 'What is the capital of France?' }] }]),
        'gen_ai.output.messages': JSON.stringify([{ role: 'assistant', parts: [{ type: 'text', content: 'Paris.' }], finish_reason: 'stop' }]),
        'gen_ai.request.temperature': 0.5,
        'app.custom_flag': true,
      },
    },
    {
      traceId, spanId: hex(8), parentSpanId: root, name: 'execute_tool lookup', startMs: t0 + 100, endMs: t0 + 200, kind: 1,
      attrs: { 'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'lookup', 'gen_ai.tool.call.id': 'call-1' },
    },
  ];
}

function checkChatTrace(g, traceId, service) {
  assert.equal(g.id, traceId, 'the OTLP trace id is the evalbus trace id');
  assert.match(g.id, HEX32);
  assert.equal(g.source, 'otlp');
  assert.equal(g.project, service, 'the project comes from service.name');
  assert.equal(g.name, 'chat gpt-4o', 'the root span names the trace');
  assert.equal(g.model, 'gpt-4o');
  assert.equal(g.provider, 'openai');
  assert.equal(g.status, 'ok');
  assert.deepEqual(g.usage, { input_tokens: 11, output_tokens: 4, total_tokens: 15 });
  assert.equal(g.latency_ms, 900);
  assert.deepEqual(g.input, { messages: [{ role: 'user', content: 'What is the capital of France?' }] }, 'input messages');
  assert.equal(g.output?.messages?.[0]?.role, 'assistant', `output messages: ${JSON.stringify(g.output)}`);
  assert.equal(g.output.messages[0].content, 'Paris.');
  assert.equal(g.observations.length, 2, 'two observations');
  const gen = g.observations.find((o) => o.type === 'generation');
  const tool = g.observations.find((o) => o.type === 'tool');
  assert.ok(gen && tool, `a generation and a tool: ${g.observations.map((o) => o.type)}`);
  assert.match(gen.id, /^[0-9a-f]{16}$/, 'observation ids are the span ids');
  assert.equal(tool.parent_id, gen.id, 'the tool span nests under the chat span');
  assert.deepEqual(gen.usage, { input_tokens: 11, output_tokens: 4 });
  assert.equal(gen.model, 'gpt-4o');
  assert.equal(gen.attributes?.['app.custom_flag'], true, `unknown attributes are kept: ${JSON.stringify(gen.attributes)}`);
  assert.equal(gen.attributes?.['gen_ai.request.temperature'], 0.5, 'unmapped gen_ai attributes are kept');
  assert.equal(tool.tool_calls?.[0]?.function?.name, 'lookup', `tool call: ${JSON.stringify(tool.tool_calls)}`);
}

describe('ingest: OTLP/HTTP traces', () => {
  let A;

  before(async () => {
    assert.ok(fs.existsSync(path.join(BIN_DIR, 'evalbus-ingest')), `${BIN_DIR}/evalbus-ingest must exist`);
    await loadTypes();
    await stack.up();
    A = await stack.bootstrap(uniqueSlug('oa'));
    await stack.setTier(A.team, 'enterprise', A.key);
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  for (const enc of ['json', 'proto']) {
    it(`OTLP ${enc} with gzip: GenAI spans become a trace with its model, tokens and messages`, T, stack.wrap(async () => {
      const traceId = hex(16);
      const service = `otel-${enc}-${hex(3)}`;
      const r = await postOtlp(A.key, enc, service, chatSpans(traceId, Date.now() - 5000), { gzip: true });
      assert.equal(r.status, 200, `export answered ${r.status}: ${r.text.slice(0, 300)}`);
      assert.deepEqual(r.otlp, { rejected: 0, message: '' }, 'no partial success: everything accepted');
      checkChatTrace(await waitTrace(A.key, traceId), traceId, service);
      const l = await api('GET', `/api/v1/traces?project=${service}`, A.key);
      assertStatus(l, 200);
      assert.deepEqual(l.body.traces.map((t) => t.id), [traceId], 'listed under its project');
    }));
  }

  it('spans whose attributes are arrays of small values (token ids, flags, short strings) are taken in protobuf as in JSON', T, stack.wrap(async () => {
    // on the wire such an element is 4-5 bytes, decoded some 30 times that: a request of them
    // is no "great many empty messages" to refuse, and an exporter would drop a refused batch
    const t0 = Date.now() - 5000;
    const ids = Array.from({ length: 500 }, (_, i) => i % 100);
    const flags = Array.from({ length: 500 }, (_, i) => i % 3 === 0);
    const words = Array.from({ length: 500 }, (_, i) => (i % 7 === 0 ? '' : 'abcdefg'[i % 7]));
    for (const enc of ['proto', 'json']) {
      const traceId = hex(16);
      const spans = Array.from({ length: 100 }, (_, i) => ({ traceId, spanId: hex(8), name: `step-${i}`,
        startMs: t0, endMs: t0 + 10, attrs: { 'llm.token_ids': ids, 'app.flags': flags, 'app.words': words } }));
      const r = await postOtlp(A.key, enc, `arrays-${enc}`, spans);
      assert.equal(r.status, 200, `${enc}: ${r.text.slice(0, 300)}`);
      assert.deepEqual(r.otlp, { rejected: 0, message: '' }, `${enc}: every span taken`);
      const g = await waitTrace(A.key, traceId, (b) => b.observations.length === 100, 10_000);
      const o = g.observations.find((x) => x.name === 'step-42');
      assert.deepEqual(o.attributes?.['llm.token_ids'], ids, `${enc}: the ints kept in order`);
      assert.deepEqual(o.attributes?.['app.flags'], flags, `${enc}: the booleans kept`);
      assert.deepEqual(o.attributes?.['app.words'], words, `${enc}: the strings kept, empty ones too`);
    }
  }));

  it('the same spans sent twice are stored once', T, stack.wrap(async () => {
    const traceId = hex(16);
    const service = `otel-dup-${hex(3)}`;
    const spans = chatSpans(traceId, Date.now() - 5000);
    let r = await postOtlp(A.key, 'proto', service, spans);
    assert.equal(r.status, 200);
    await waitTrace(A.key, traceId);
    r = await postOtlp(A.key, 'proto', service, spans);
    assert.equal(r.status, 200, 'the resend is accepted');
    r = await postOtlp(A.key, 'json', service, spans, { gzip: true });
    assert.equal(r.status, 200, 'the resend as JSON is accepted');
    await sleep(1500); // let the writer store the resends
    const g = await waitTrace(A.key, traceId);
    assert.equal(g.observations.length, 2, 'observations not doubled');
    assert.deepEqual(g.usage, { input_tokens: 11, output_tokens: 4, total_tokens: 15 }, 'tokens not doubled');
    const l = await api('GET', `/api/v1/traces?project=${service}`, A.key);
    assert.deepEqual(l.body.traces.map((t) => t.id), [traceId], 'listed once');
    const [[nt, no]] = await stack.psql(
      `SELECT (SELECT count(*) FROM ingest.traces WHERE id = '${traceId}'),` +
      ` (SELECT count(*) FROM ingest.observations WHERE trace_id = '${traceId}')`,
    );
    assert.deepEqual([nt, no], ['1', '2'], 'one trace row, two observation rows');
  }));

  it('a trace split across two requests is merged: all observations, totals summed', T, stack.wrap(async () => {
    const t0 = Date.now() - 10_000;
    const service = `otel-split-${hex(3)}`;
    const gen = (traceId, parent, startMs, model, i, o) => ({
      traceId, spanId: hex(8), parentSpanId: parent, name: `chat ${model}`, startMs, endMs: startMs + 300,
      attrs: { 'gen_ai.system': 'openai', 'gen_ai.request.model': model, 'gen_ai.usage.input_tokens': i, 'gen_ai.usage.output_tokens': o },
    });
    // root first, then a later request with another child
    const t1 = hex(16);
    const root1 = hex(8);
    let r = await postOtlp(A.key, 'proto', service, [
      { traceId: t1, spanId: root1, name: 'agent run', startMs: t0, endMs: t0 + 2000, kind: 1, attrs: {} },
      gen(t1, root1, t0 + 100, 'gpt-4o', 10, 5),
    ]);
    assert.equal(r.status, 200);
    await waitTrace(A.key, t1);
    r = await postOtlp(A.key, 'json', service, [gen(t1, root1, t0 + 1000, 'gpt-4o', 20, 7)]);
    assert.equal(r.status, 200);
    let g = await waitTrace(A.key, t1, (b) => b.observations.length === 3);
    assert.equal(g.name, 'agent run', 'the root span still names the trace');
    assert.deepEqual(g.usage, { input_tokens: 30, output_tokens: 12, total_tokens: 42 }, 'totals summed over both requests');
    assert.ok(Date.parse(g.start_time) === Math.round(t0) && g.latency_ms === 2000, `times span the trace: ${g.start_time} ${g.latency_ms}`);

    // children first (quickly, one after the other), the root last
    const t2 = hex(16);
    const root2 = hex(8);
    r = await postOtlp(A.key, 'json', service, [gen(t2, root2, t0 + 100, 'gpt-4o-mini', 1, 2)]);
    assert.equal(r.status, 200);
    r = await postOtlp(A.key, 'proto', service, [gen(t2, root2, t0 + 500, 'gpt-4o-mini', 3, 4)]);
    assert.equal(r.status, 200);
    r = await postOtlp(A.key, 'proto', service, [
      { traceId: t2, spanId: root2, name: 'late root', startMs: t0, endMs: t0 + 3000, status: 2, attrs: {} },
    ]);
    assert.equal(r.status, 200);
    g = await waitTrace(A.key, t2, (b) => b.observations.length === 3 && b.name === 'late root');
    assert.deepEqual(g.usage, { input_tokens: 4, output_tokens: 6, total_tokens: 10 }, 'totals of the children');
    assert.equal(g.model, 'gpt-4o-mini');
    assert.equal(g.status, 'error', 'the root span\'s error status wins');
    const [[nt, no]] = await stack.psql(
      `SELECT (SELECT count(*) FROM ingest.traces WHERE id IN ('${t1}', '${t2}')),` +
      ` (SELECT count(*) FROM ingest.observations WHERE trace_id IN ('${t1}', '${t2}'))`,
    );
    assert.deepEqual([nt, no], ['2', '6'], 'two trace rows, six observation rows');
  }));


  it('an agent span that reports the usage of the model calls under it is not counted twice in the trace totals', T, stack.wrap(async () => {
    const service = `agent-${hex(3)}`;
    const t0 = Date.now() - 60_000;
    const traceId = hex(16);
    const [agent, chain, llmA, llmB, other] = [hex(8), hex(8), hex(8), hex(8), hex(8)];
    const usage = (i, o) => ({ 'gen_ai.usage.input_tokens': i, 'gen_ai.usage.output_tokens': o });
    // the model calls and a step without usage first, the agent (root) last, in another request
    let r = await postOtlp(A.key, 'json', service, [
      { traceId, spanId: llmA, parentSpanId: agent, name: 'chat a', startMs: t0 + 10, endMs: t0 + 100,
        attrs: { 'gen_ai.operation.name': 'chat', 'gen_ai.request.model': 'gpt-4o', ...usage(100, 10) } },
      { traceId, spanId: chain, parentSpanId: agent, name: 'plan', startMs: t0 + 100, endMs: t0 + 400, attrs: {} },
      { traceId, spanId: llmB, parentSpanId: chain, name: 'chat b', startMs: t0 + 200, endMs: t0 + 300,
        attrs: { 'llm.model_name': 'gpt-4o-mini', 'llm.token_count.prompt': 200, 'llm.token_count.completion': 20 } },
    ]);
    assert.equal(r.status, 200, r.text);
    r = await postOtlp(A.key, 'proto', service, [
      { traceId, spanId: agent, name: 'invoke_agent helper', startMs: t0, endMs: t0 + 500,
        attrs: { 'gen_ai.operation.name': 'invoke_agent', 'gen_ai.request.model': 'gpt-4o', ...usage(300, 30) } },
      // a span with usage of its own and none below it counts
      { traceId, spanId: other, parentSpanId: agent, name: 'embed', startMs: t0 + 400, endMs: t0 + 450,
        attrs: { 'gen_ai.operation.name': 'embeddings', 'gen_ai.request.model': 'emb-3', ...usage(7, 0) } },
    ]);
    assert.equal(r.status, 200, r.text);
    const g = await waitTrace(A.key, traceId, (b) => b.observations.length === 5);
    assert.deepEqual(g.usage, { input_tokens: 307, output_tokens: 30, total_tokens: 337 },
      'the model calls and the embedding count, the agent\'s own report of them does not');
    // parent ids that go round (malformed): a span that names itself counts; two spans that name
    // each other and leave no other usage count too
    const [selfT, pairT] = [hex(16), hex(16)];
    const [self, x, y] = [hex(8), hex(8), hex(8)];
    r = await postOtlp(A.key, 'json', service, [
      { traceId: selfT, spanId: self, parentSpanId: self, name: 'self', startMs: t0, endMs: t0 + 10, attrs: usage(5, 1) },
      { traceId: pairT, spanId: x, parentSpanId: y, name: 'x', startMs: t0, endMs: t0 + 10, attrs: usage(10, 2) },
      { traceId: pairT, spanId: y, parentSpanId: x, name: 'y', startMs: t0, endMs: t0 + 10, attrs: usage(20, 3) },
    ]);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual((await waitTrace(A.key, selfT)).usage, { input_tokens: 5, output_tokens: 1, total_tokens: 6 }, 'a span that names itself');
    assert.deepEqual((await waitTrace(A.key, pairT, (b) => b.observations.length === 2)).usage,
      { input_tokens: 30, output_tokens: 5, total_tokens: 35 }, 'two spans that name each other');
    // a chain of 5000 spans (max-observations), each with usage: only the deepest counts, and
    // the walk up the chain is linear (a walk per span would take minutes here)
    const chainT = hex(16);
    const spans = [];
    for (let i = 0, parent = null; i < 5000; i++) {
      const id = hex(8);
      spans.push({ traceId: chainT, spanId: id, ...(parent ? { parentSpanId: parent } : {}), name: `step ${i}`,
        startMs: t0 + i, endMs: t0 + 10_000 - i, attrs: usage(1, 1) });
      parent = id;
    }
    r = await postOtlp(A.key, 'proto', service, spans);
    assert.equal(r.status, 200, r.text.slice(0, 300));
    assert.equal(r.otlp.rejected, 0, r.otlp.message);
    const c = await waitTrace(A.key, chainT, () => true, 30_000);
    assert.deepEqual(c.usage, { input_tokens: 1, output_tokens: 1, total_tokens: 2 }, 'only the deepest span of the chain counts');
    const byName = Object.fromEntries(g.observations.map((o) => [o.name, o]));
    assert.deepEqual(byName['invoke_agent helper'].usage?.input_tokens ?? byName['invoke_agent helper'].input_tokens, 300,
      'the agent span keeps the usage it reported');
  }));
  it('bad span ids are rejected in partial_success; the other spans are stored', T, stack.wrap(async () => {
    const t0 = Date.now() - 5000;
    const service = `otel-bad-${hex(3)}`;
    const traceId = hex(16);
    const okSpans = chatSpans(traceId, t0);
    const bad = [
      { traceId, spanId: 'abcd1234', name: 'short span id', startMs: t0, endMs: t0 + 1 },
      { traceId: '0'.repeat(32), spanId: hex(8), name: 'zero trace id', startMs: t0, endMs: t0 + 1 },
    ];
    let r = await postOtlp(A.key, 'proto', service, [okSpans[0], bad[0], okSpans[1], bad[1]], { gzip: true });
    assert.equal(r.status, 200, `partial success is 200: ${r.text}`);
    assert.equal(r.otlp.rejected, 2, 'two spans rejected');
    assert.match(r.otlp.message, /span id/, `the message says why: ${r.otlp.message}`);
    assert.match(r.otlp.message, /trace id/, `the message says why: ${r.otlp.message}`);
    const g = await waitTrace(A.key, traceId);
    assert.equal(g.observations.length, 2, 'the good spans are stored');
    assertError(await api('GET', `/api/v1/traces/${'0'.repeat(32)}`, A.key), 'not_found', 'nothing for the zero trace id');

    const t2 = hex(16);
    const s2 = chatSpans(t2, t0);
    r = await postOtlp(A.key, 'json', service, [...s2, { traceId: t2, spanId: 'zz'.repeat(8), name: 'not hex', startMs: t0, endMs: t0 + 1 }]);
    assert.equal(r.status, 200);
    assert.equal(r.otlp.rejected, 1, 'one span rejected (JSON)');
    assert.ok(r.otlp.message.length > 0, 'with a message');
    assert.equal((await waitTrace(A.key, t2)).observations.length, 2, 'the good spans of the trace are stored');

    // a NUL byte in a protobuf string would be cut there: that span is rejected, not shortened
    const t3 = hex(16);
    const s3 = chatSpans(t3, t0);
    const nul = { traceId: t3, spanId: hex(8), parentSpanId: s3[0].spanId, name: 'has a NUL', startMs: t0, endMs: t0 + 1, attrs: { note: 'before\u0000after' } };
    r = await postOtlp(A.key, 'proto', service, [s3[0], nul, s3[1]]);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.otlp.rejected, 1, 'the span with the NUL is rejected');
    assert.match(r.otlp.message, new RegExp(`span ${nul.spanId}: .*NUL byte`), r.otlp.message);
    const g3 = await waitTrace(A.key, t3, (b) => b.observations.length === 2);
    assert.deepEqual(g3.observations.map((o) => o.id).sort(), [s3[0].spanId, s3[1].spanId].sort(), 'the other spans are stored');
  }));

  it('credentials, content types and undecodable bodies', T, stack.wrap(async () => {
    const body = otlpProto('svc', chatSpans(hex(16), Date.now()));
    const post = (headers, b = body) => fetch(`${stack.url}/otlp/v1/traces`, { method: 'POST', headers, body: b });
    let r = await post({ 'content-type': 'application/x-protobuf' });
    assert.equal(r.status, 401, 'no credential');
    r = await post({ 'content-type': 'text/plain', authorization: `Bearer ${A.key}` });
    assert.equal(r.status, 415, 'unsupported content type');
    r = await post({ 'content-type': 'application/x-protobuf', authorization: `Bearer ${A.key}` }, Buffer.alloc(32, 0xff));
    assert.equal(r.status, 400, 'undecodable protobuf');
    r = await post({ 'content-type': 'application/json', authorization: `Bearer ${A.key}` }, '{"resourceSpans": [');
    assert.equal(r.status, 400, 'malformed JSON');
  }));

  it('errors carry a Status in the request encoding; media types are exact; gzip members are all read', T, stack.wrap(async () => {
    const { Status } = types;
    const post = (type, body, extra = {}) => fetch(`${stack.url}/otlp/v1/traces`, {
      method: 'POST', headers: { 'content-type': type, authorization: `Bearer ${A.key}`, ...extra }, body, signal: AbortSignal.timeout(15_000),
    });
    let r = await post('application/x-protobuf', Buffer.alloc(32, 0xff));
    assert.equal(r.status, 400);
    assert.match(r.headers.get('content-type') ?? '', /^application\/x-protobuf/, 'a protobuf error for a protobuf request');
    const st = Status.toObject(Status.decode(Buffer.from(await r.arrayBuffer())), { defaults: true });
    assert.equal(st.code, 3, 'INVALID_ARGUMENT');
    assert.ok(st.message.length > 0, 'with a message');
    r = await post('application/json', '{"resourceSpans": [');
    assert.equal(r.status, 400);
    const js = await r.json();
    assert.equal(js.code, 3, `a JSON Status: ${JSON.stringify(js)}`);
    assert.equal(typeof js.message, 'string');
    assert.equal((await post('application/jsonx', '{}')).status, 415, 'application/jsonx is not application/json');
    assert.equal((await post('application/x-protobufs', Buffer.alloc(0))).status, 415, 'nor is application/x-protobufs');
    const traceId = hex(16);
    const service = `otel-ct-${hex(3)}`;
    const body = JSON.stringify(otlpJson(service, chatSpans(traceId, Date.now() - 5000)));
    assert.equal((await post('application/json; charset=utf-8', body)).status, 200, 'parameters after the media type are fine');
    await waitTrace(A.key, traceId);
    // a body of two gzip members (RFC 1952): both are inflated
    const t2 = hex(16);
    const text = JSON.stringify(otlpJson(service, chatSpans(t2, Date.now() - 5000)));
    const half = Math.floor(text.length / 2);
    const two = Buffer.concat([zlib.gzipSync(text.slice(0, half)), zlib.gzipSync(text.slice(half))]);
    r = await post('application/json', two, { 'content-encoding': 'gzip' });
    assert.equal(r.status, 200, `two gzip members: ${r.status}`);
    assert.equal((await waitTrace(A.key, t2)).observations.length, 2);
    r = await post('application/json', Buffer.concat([zlib.gzipSync(text), Buffer.from('trailing junk')]), { 'content-encoding': 'gzip' });
    assert.equal(r.status, 400, 'bytes after the gzip data are not ignored');
  }));

  it('a token count beyond 2^53 stays an attribute and the trace is stored', T, stack.wrap(async () => {
    const traceId = hex(16);
    const spans = [{
      traceId, spanId: hex(8), name: 'chat huge', startMs: Date.now() - 2000, endMs: Date.now() - 1000,
      attrs: { 'gen_ai.request.model': 'gpt-4o', 'gen_ai.usage.input_tokens': 9223372036854775807n, 'gen_ai.usage.output_tokens': 1 },
    }];
    const r = await postOtlp(A.key, 'json', `otel-big-${hex(3)}`, spans);
    assert.equal(r.status, 200);
    const g = await waitTrace(A.key, traceId);
    const o = g.observations[0];
    assert.equal(o.usage?.output_tokens ?? o.output_tokens, 1, `the count that fits is taken: ${JSON.stringify(o)}`);
    assert.equal(String(o.attributes?.['gen_ai.usage.input_tokens']), '9223372036854775807', `the other stays an attribute: ${JSON.stringify(o.attributes)}`);
  }));

  it("a later fragment never moves a trace to another project; a key restricted to another project cannot add to it", T, stack.wrap(async () => {
    const traceId = hex(16);
    const t0 = Date.now() - 5000;
    const [svcA, svcB, projX] = [`svca-${hex(3)}`, `svcb-${hex(3)}`, `projx-${hex(3)}`];
    const root = hex(8);
    let r = await postOtlp(A.key, 'json', svcA, [{ traceId, spanId: root, name: 'root', startMs: t0, endMs: t0 + 1000 }]);
    assert.equal(r.status, 200);
    await waitTrace(A.key, traceId);
    r = await postOtlp(A.key, 'json', svcB, [{ traceId, spanId: hex(8), parentSpanId: root, name: 'b', startMs: t0 + 10, endMs: t0 + 20 }]);
    assert.equal(r.status, 200);
    await waitTrace(A.key, traceId, (b) => b.observations.length === 2);
    // a key restricted to another project: its spans are refused by the writer (dead-lettered),
    // so the trace neither moves nor changes
    const restricted = (await stack.createKey(A.key, { name: 'projx', scopes: ['traces:write', 'traces:read'], project: projX })).key;
    const x = hex(8);
    r = await postOtlp(restricted, 'json', projX, [{ traceId, spanId: x, parentSpanId: root, name: 'x', startMs: t0 + 30, endMs: t0 + 40 }]);
    assert.equal(r.status, 200);
    const y = hex(8);
    r = await postOtlp(A.key, 'json', svcB, [{ traceId, spanId: y, parentSpanId: root, name: 'y', startMs: t0 + 50, endMs: t0 + 60 }]);
    assert.equal(r.status, 200);
    const g = await waitTrace(A.key, traceId, (b) => b.observations.some((o) => o.id === y));
    assert.equal(g.project, svcA, 'the project of the first fragment stays');
    assert.deepEqual([g.usage, g.cost_usd], [{ input_tokens: null, output_tokens: null, total_tokens: null }, null],
      'spans without token counts or cost leave the totals empty');
    assert.ok(!g.observations.some((o) => o.id === x), "the restricted key's span was not merged");
    assert.equal(g.observations.length, 3);
    assertStatus(await api('GET', `/api/v1/traces/${traceId}`, restricted), 404, 'the restricted key still cannot read it');
  }));

  it("a project-restricted key's spans go to its project unless evalbus.project names another", T, stack.wrap(async () => {
    const proj = `only-${hex(3)}`;
    const key = (await stack.createKey(A.key, { name: proj, scopes: ['traces:write', 'traces:read'], project: proj })).key;
    const t0 = Date.now() - 5000;
    // service.name names a service: the spans go to the key's project, as a JSON trace without one
    const mine = hex(16);
    let r = await postOtlp(key, 'json', `svc-${hex(3)}`, [{ traceId: mine, spanId: hex(8), name: 'root', startMs: t0, endMs: t0 + 10 }]);
    assert.equal(r.status, 200);
    assert.equal(r.otlp.rejected, 0, r.otlp.message);
    assert.equal((await waitTrace(key, mine)).project, proj);
    // evalbus.project naming the key's own project is fine; naming another is refused, saying so
    const named = hex(16);
    r = await postOtlp(key, 'json', 'svc', [{ traceId: named, spanId: hex(8), name: 'root', startMs: t0, endMs: t0 + 10 }], { resource: { 'evalbus.project': proj } });
    assert.equal(r.otlp.rejected, 0, r.otlp.message);
    const other = hex(16);
    r = await postOtlp(key, 'json', 'svc', [{ traceId: other, spanId: hex(8), name: 'root', startMs: t0, endMs: t0 + 10 }], { resource: { 'evalbus.project': 'elsewhere' } });
    assert.equal(r.status, 200);
    assert.equal(r.otlp.rejected, 1);
    assert.match(r.otlp.message, new RegExp(`only write to project '${proj}'.*evalbus.project names 'elsewhere'`));
    await waitTrace(key, named);
    assertStatus(await api('GET', `/api/v1/traces/${other}`, A.key), 404, 'the refused span was not stored');
  }));

  it('children before their root: the trace takes input, output, model and provider from its generations', T, stack.wrap(async () => {
    const traceId = hex(16);
    const t0 = Date.now() - 5000;
    const root = hex(8);
    const service = `otel-late-${hex(3)}`;
    const gen = (model, system, question, answer, start, end) => ({
      traceId, spanId: hex(8), parentSpanId: root, name: `chat ${model}`, startMs: start, endMs: end,
      attrs: {
        'gen_ai.operation.name': 'chat', 'gen_ai.system': system, 'gen_ai.request.model': model,
        'gen_ai.input.messages': JSON.stringify([{ role: 'user', parts: [{ type: 'text', content: question }] }]),
        'gen_ai.output.messages': JSON.stringify([{ role: 'assistant', parts: [{ type: 'text', content: answer }] }]),
      },
    });
    // the later generation arrives first, then the earlier one, then the root (as SDKs export)
    let r = await postOtlp(A.key, 'json', service, [gen('claude-sonnet-4', 'anthropic', 'second question', 'final answer', t0 + 500, t0 + 900)]);
    assert.equal(r.status, 200);
    await waitTrace(A.key, traceId);
    r = await postOtlp(A.key, 'json', service, [gen('gpt-4o', 'openai', 'first question', 'draft', t0 + 100, t0 + 400)]);
    assert.equal(r.status, 200);
    await waitTrace(A.key, traceId, (b) => b.observations.length === 2);
    r = await postOtlp(A.key, 'json', service, [{ traceId, spanId: root, name: 'agent run', startMs: t0, endMs: t0 + 1000 }]);
    assert.equal(r.status, 200);
    const g = await waitTrace(A.key, traceId, (b) => b.observations.length === 3 && b.name === 'agent run');
    assert.equal(g.input?.messages?.[0]?.content, 'first question', `input of the earliest generation: ${JSON.stringify(g.input)}`);
    assert.equal(g.output?.messages?.[0]?.content, 'final answer', `output of the latest: ${JSON.stringify(g.output)}`);
    assert.deepEqual([g.model, g.provider], ['gpt-4o', 'openai'], 'model and provider of the earliest generation');
  }));

  it('spans added over OTLP to a trace sent as JSON keep the totals and messages its spans do not have', T, stack.wrap(async () => {
    // The trace-level usage, cost, model and messages of a JSON trace are the client's word;
    // a span without any of them must not blank them when the totals are taken again.
    const traceId = hex(16);
    const t0 = Date.now() - 5000;
    const project = `mixed-${hex(3)}`;
    const r0 = await api('POST', '/api/v1/traces', A.key, { body: { traces: [{
      id: traceId, project, name: 'answer', model: 'gpt-4o', provider: 'openai',
      start_time: new Date(t0).toISOString(), end_time: new Date(t0 + 1000).toISOString(),
      usage: { input_tokens: 120, output_tokens: 40 }, cost_usd: 0.0012,
      input: { messages: [{ role: 'user', content: 'where is my order?' }] },
      output: { messages: [{ role: 'assistant', content: 'on its way' }] },
    }] } });
    assert.equal(r0.status, 202, r0.text);
    await waitTrace(A.key, traceId);
    let r = await postOtlp(A.key, 'json', project, [{ traceId, spanId: hex(8), name: 'http.request', startMs: t0 + 10, endMs: t0 + 20 }]);
    assert.equal(r.status, 200);
    const g = await waitTrace(A.key, traceId, (b) => b.observations.length === 1);
    assert.deepEqual(g.usage, { input_tokens: 120, output_tokens: 40, total_tokens: 160 }, 'the usage stays');
    assert.equal(g.cost_usd, 0.0012, 'the cost stays');
    assert.deepEqual([g.model, g.provider, g.project], ['gpt-4o', 'openai', project]);
    assert.equal(g.input?.messages?.[0]?.content, 'where is my order?');
    assert.equal(g.output?.messages?.[0]?.content, 'on its way');
    // a span with one count: the other stays, and the total is their sum
    r = await postOtlp(A.key, 'json', project, [{ traceId, spanId: hex(8), name: 'llm', startMs: t0 + 30, endMs: t0 + 40,
      attrs: { 'gen_ai.usage.output_tokens': 7 } }]);
    assert.equal(r.status, 200);
    const g2 = await waitTrace(A.key, traceId, (b) => b.observations.length === 2);
    assert.deepEqual(g2.usage, { input_tokens: 120, output_tokens: 7, total_tokens: 127 }, 'the total agrees with its counts');
  }));

  it('a span merged into a trace whose observations cost more than a double holds in all is stored; the cost stops at the largest double', T, stack.wrap(async () => {
    // The totals are taken again when a span merges in; two costs near the largest double add
    // up to more than float8 holds. That must not make the span impossible to store.
    const t0 = Date.now() - 5000;
    const project = `costs-${hex(3)}`;
    const huge = hex(16), small = hex(16);
    const logFile = path.join(stack.state, 'logs', 'ingest.log');
    const logFrom = fs.statSync(logFile).size;
    const r0 = await api('POST', '/api/v1/traces', A.key, { body: { traces: [
      { id: huge, project, name: 'huge', start_time: new Date(t0).toISOString(),
        observations: [{ id: 'o1', cost_usd: 1.7e308 }, { id: 'o2', cost_usd: 1.7e308 }] },
      { id: small, project, name: 'small', start_time: new Date(t0).toISOString(),
        observations: [{ id: 'o1', cost_usd: 0.1 }, { id: 'o2', cost_usd: 0.2 }] },
    ] } });
    assert.equal(r0.status, 202, r0.text);
    await waitTrace(A.key, huge);
    await waitTrace(A.key, small);
    for (const traceId of [huge, small]) {
      const r = await postOtlp(A.key, 'json', project, [{ traceId, spanId: hex(8), name: 'http.request', startMs: t0 + 10, endMs: t0 + 20 }]);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, '{}', 'the span is accepted whole');
    }
    const g = await waitTrace(A.key, huge, (b) => b.observations.length === 3);
    assert.equal(g.cost_usd, Number.MAX_VALUE, 'a sum beyond the largest double is stored as it');
    const g2 = await waitTrace(A.key, small, (b) => b.observations.length === 3);
    assert.equal(g2.cost_usd, 0.1 + 0.2, 'other sums are the plain double sum, to the last bit');
    const log = fs.readFileSync(logFile, 'utf8').slice(logFrom);
    assert.doesNotMatch(log, /cannot be stored|one by one/, 'no record failed');
  }));

  it('a JSON trace with observations keeps its own input, output and model when spans merge in; its source stays', T, stack.wrap(async () => {
    // its top-level observations are not a root span: their messages must not replace the trace's
    const traceId = hex(16);
    const t0 = Date.now() - 60_000;
    const project = `mixed-obs-${hex(3)}`;
    const r0 = await api('POST', '/api/v1/traces', A.key, { body: { traces: [{
      id: traceId, project, name: 'answer', model: 'gpt-4o', provider: 'openai',
      start_time: new Date(t0).toISOString(), end_time: new Date(t0 + 1000).toISOString(),
      input: { messages: [{ role: 'user', content: 'where is my order?' }] },
      output: { messages: [{ role: 'assistant', content: 'on its way' }] },
      observations: [
        { id: 'o1', type: 'span', name: 'retrieve', start_time: new Date(t0 + 1).toISOString(), input: { text: 'order lookup query' }, output: { text: 'rows' } },
        { id: 'o2', type: 'generation', name: 'llm', model: 'claude-sonnet-4', provider: 'anthropic', start_time: new Date(t0 + 2).toISOString(),
          input: { messages: [{ role: 'user', content: 'inner prompt' }] } },
      ],
    }] } });
    assert.equal(r0.status, 202, r0.text);
    await waitTrace(A.key, traceId);
    const r = await postOtlp(A.key, 'json', project, [{ traceId, spanId: hex(8), name: 'http.request', startMs: t0 + 10, endMs: t0 + 20 }]);
    assert.equal(r.status, 200);
    const g = await waitTrace(A.key, traceId, (b) => b.observations.length === 3);
    assert.equal(g.input?.messages?.[0]?.content, 'where is my order?', `input: ${JSON.stringify(g.input)}`);
    assert.equal(g.output?.messages?.[0]?.content, 'on its way', `output: ${JSON.stringify(g.output)}`);
    assert.deepEqual([g.model, g.provider], ['gpt-4o', 'openai'], 'the model it was sent with');
    assert.equal(g.source, 'json', 'made by the JSON API, with spans merged in');
  }));

  it('a JSON trace keeps the model, provider, input and output it was sent with when a generation span or a root span merges in; a trace without them takes the span\'s', T, stack.wrap(async () => {
    const t0 = Date.now() - 60_000;
    const project = `mixed-gen-${hex(3)}`;
    const child = hex(16), root = hex(16), bare = hex(16);
    const full = (id) => ({
      id, project, name: 'answer', model: 'gpt-4o', provider: 'openai',
      start_time: new Date(t0).toISOString(), end_time: new Date(t0 + 1000).toISOString(),
      input: { messages: [{ role: 'user', content: 'where is my order?' }] },
      output: { messages: [{ role: 'assistant', content: 'on its way' }] },
      observations: [{ id: 'o1', type: 'span', name: 'retrieve', start_time: new Date(t0 + 1).toISOString() }],
    });
    const r0 = await api('POST', '/api/v1/traces', A.key, { body: { traces: [full(child), full(root),
      { id: bare, project, name: 'bare', start_time: new Date(t0).toISOString() }] } });
    assert.equal(r0.status, 202, r0.text);
    for (const id of [child, root, bare]) await waitTrace(A.key, id);
    const gen = { 'gen_ai.operation.name': 'chat', 'gen_ai.system': 'anthropic', 'gen_ai.request.model': 'claude-x',
      'gen_ai.prompt': 'inner prompt', 'gen_ai.completion': 'inner answer' };
    for (const [traceId, parentSpanId] of [[child, hex(8)], [root, undefined], [bare, undefined]]) {
      const r = await postOtlp(A.key, 'json', project, [{ traceId, spanId: hex(8), parentSpanId, name: 'chat', startMs: t0 + 10, endMs: t0 + 20, attrs: gen }]);
      assert.equal(r.status, 200, r.text);
    }
    for (const [id, n] of [[child, 2], [root, 2]]) {
      const g = await waitTrace(A.key, id, (b) => b.observations.length === n);
      assert.deepEqual([g.model, g.provider], ['gpt-4o', 'openai'], `${id === root ? 'root' : 'child'} span: the model it was sent with`);
      assert.equal(g.input?.messages?.[0]?.content, 'where is my order?', `input: ${JSON.stringify(g.input)}`);
      assert.equal(g.output?.messages?.[0]?.content, 'on its way', `output: ${JSON.stringify(g.output)}`);
      assert.equal(g.source, 'json');
    }
    const b = await waitTrace(A.key, bare, (x) => x.observations.length === 1);
    assert.deepEqual([b.model, b.provider], ['claude-x', 'anthropic'], 'what the trace lacks comes from its span');
    assert.ok(JSON.stringify(b.input).includes('inner prompt'), `input from the span: ${JSON.stringify(b.input)}`);
  }));

  // Two writers commit the records of one trace in any order. These make one record wait while a
  // later one is stored: the waiting record starts on a day without a partition yet, and the
  // test holds the advisory lock under which a writer makes partitions (writer.c
  // ensure_partition) for a few seconds.
  async function holdPartitionLock(seconds) {
    const hold = stack.psql(`SELECT pg_advisory_xact_lock(7236002, 1), pg_sleep(${seconds})`, { timeoutMs: (seconds + 20) * 1000 });
    const held = await pollUntil(async () => Number((await stack.psql(
      "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7236002 AND objid = 1 AND granted"))[0][0]) === 1,
    { timeoutMs: 5000, intervalMs: 50 });
    assert.ok(held.value, 'the test holds the lock');
    return { done: hold }; // (an async function returning the promise itself would wait for it)
  }
  async function writerWaits() {
    const r = await pollUntil(async () => Number((await stack.psql(
      "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7236002 AND objid = 1 AND NOT granted"))[0][0]) === 1,
    { timeoutMs: 5000, intervalMs: 50 });
    assert.ok(r.value, 'a writer waits for the partition lock');
  }

  // A JSON trace v1 with one observation, stored.
  async function storeV1(prefix) {
    const traceId = hex(16);
    const now = Date.now();
    const project = `${prefix}-${hex(3)}`;
    const r = await api('POST', '/api/v1/traces', A.key, { body: { traces: [{ id: traceId, project, name: 'v1',
      start_time: new Date(now - 60_000).toISOString(), observations: [{ id: 'old', type: 'span', name: 'old-obs' }] }] } });
    assert.equal(r.status, 202, r.text);
    await waitTrace(A.key, traceId, (b) => b.name === 'v1');
    return { traceId, now, project };
  }

  it('a JSON trace without input or output that a span merges into takes them from its generations, not from a top-level span', T, stack.wrap(async () => {
    const t0 = Date.now() - 60_000;
    const id = hex(16);
    const iso = (ms) => new Date(ms).toISOString();
    const r0 = await api('POST', '/api/v1/traces', A.key, { body: { traces: [{ id, name: 'no-io', start_time: iso(t0),
      observations: [
        { id: 'step', type: 'span', input: 'span in', output: 'span out', start_time: iso(t0 + 2), end_time: iso(t0 + 900) },
        { id: 'llm', type: 'generation', input: 'gen in', output: 'gen out', start_time: iso(t0 + 1), end_time: iso(t0 + 300) },
      ] }] } });
    assert.equal(r0.status, 202, r0.text);
    await waitTrace(A.key, id);
    const r = await postOtlp(A.key, 'json', 'no-io', [{ traceId: id, spanId: hex(8), parentSpanId: hex(8), name: 'child', startMs: t0 + 10, endMs: t0 + 20 }]);
    assert.equal(r.status, 200, r.text);
    const g = await waitTrace(A.key, id, (b) => b.observations.length === 3);
    assert.equal(g.source, 'json');
    assert.deepEqual([g.input, g.output], [{ text: 'gen in' }, { text: 'gen out' }], 'its top-level observations are not a root span');
  }));

  it('a JSON resend stored after a span sent later still replaces the trace, and keeps that span', T, stack.wrap(async () => {
    const { traceId, now, project } = await storeV1('order-a');
    let r;
    const { done: hold } = await holdPartitionLock(4);
    r = await api('POST', '/api/v1/traces', A.key, { body: { traces: [{ id: traceId, project, name: 'v2',
      start_time: new Date(now - 41 * 86_400_000).toISOString(), observations: [{ id: 'new', type: 'span', name: 'new-obs' }] }] } });
    assert.equal(r.status, 202, r.text);
    await writerWaits(); // v2 waits; the span goes to the other writer
    const o = await postOtlp(A.key, 'json', project, [{ traceId, spanId: hex(8), parentSpanId: hex(8), name: 'otel-span', startMs: now - 59_000, endMs: now - 58_000,
      status: 2, attrs: { 'gen_ai.usage.input_tokens': 5, 'gen_ai.usage.output_tokens': 2 } }]);
    assert.equal(o.status, 200, o.text);
    await waitTrace(A.key, traceId, (b) => b.observations.some((x) => x.name === 'otel-span'), 3000);
    await hold;
    const g = await waitTrace(A.key, traceId, (b) => b.name === 'v2', 10_000);
    assert.deepEqual(g.observations.map((x) => x.name).sort(), ['new-obs', 'otel-span'], 'v2\'s observations and the span sent after it; v1\'s are gone');
    // as if the span had merged into v2: its error and its usage count
    assert.equal(g.status, 'error', 'the span\'s error');
    assert.deepEqual(g.usage, { input_tokens: 5, output_tokens: 2, total_tokens: 7 }, 'the span\'s usage');
  }));

  it('a new JSON trace stored after a span of it sent later: the trace it was sent as, with that span and its totals', T, stack.wrap(async () => {
    const traceId = hex(16);
    const now = Date.now();
    const project = `order-c-${hex(3)}`;
    const { done: hold } = await holdPartitionLock(4);
    let r = await api('POST', '/api/v1/traces', A.key, { body: { traces: [{ id: traceId, project, name: 'sent', model: 'gpt-4o',
      start_time: new Date(now - 53 * 86_400_000).toISOString(), observations: [{ id: 'gen', type: 'generation', name: 'llm',
        usage: { input_tokens: 7, output_tokens: 1 } }] }] } });
    assert.equal(r.status, 202, r.text);
    await writerWaits();
    const o = await postOtlp(A.key, 'json', project, [{ traceId, spanId: hex(8), parentSpanId: hex(8), name: 'otel-span', startMs: now - 59_000, endMs: now - 58_000,
      status: 2, attrs: { 'gen_ai.usage.input_tokens': 5 } }]);
    assert.equal(o.status, 200, o.text);
    await waitTrace(A.key, traceId, (b) => b.source === 'otlp', 3000); // the span made the trace
    await hold;
    const g = await waitTrace(A.key, traceId, (b) => b.name === 'sent', 10_000);
    assert.equal(g.source, 'json');
    assert.equal(g.model, 'gpt-4o');
    assert.deepEqual(g.observations.map((x) => x.name).sort(), ['llm', 'otel-span']);
    assert.equal(g.status, 'error');
    assert.deepEqual(g.usage, { input_tokens: 12, output_tokens: 1, total_tokens: 13 }, 'the sums over both');
  }));

  it('a trace stored before replaced_seq existed: a span merges into it, and a JSON resend stored after a span sent later still replaces it', T, stack.wrap(async () => {
    const { traceId, now, project } = await storeV1('order-old');
    await stack.psql(`UPDATE ingest.traces SET replaced_seq = NULL WHERE id = '${traceId}'`); // as stored before 005
    const { done: hold } = await holdPartitionLock(4);
    const r = await api('POST', '/api/v1/traces', A.key, { body: { traces: [{ id: traceId, project, name: 'v2',
      start_time: new Date(now - 59 * 86_400_000).toISOString(), observations: [{ id: 'new', type: 'span', name: 'new-obs' }] }] } });
    assert.equal(r.status, 202, r.text);
    await writerWaits();
    const o = await postOtlp(A.key, 'json', project, [{ traceId, spanId: hex(8), parentSpanId: hex(8), name: 'otel-span', startMs: now - 59_000, endMs: now - 58_000 }]);
    assert.equal(o.status, 200, o.text);
    await waitTrace(A.key, traceId, (b) => b.observations.some((x) => x.name === 'otel-span'), 3000);
    await hold;
    const g = await waitTrace(A.key, traceId, (b) => b.name === 'v2', 10_000);
    assert.deepEqual(g.observations.map((x) => x.name).sort(), ['new-obs', 'otel-span']);
  }));

  it('a span sent before a JSON resend but stored after it merges nothing into the replaced trace', T, stack.wrap(async () => {
    const { traceId, now, project } = await storeV1('order-b');
    let r;
    const { done: hold } = await holdPartitionLock(4);
    const o = await postOtlp(A.key, 'json', project, [{ traceId, spanId: hex(8), parentSpanId: hex(8), name: 'otel-span',
      startMs: now - 47 * 86_400_000, endMs: now - 47 * 86_400_000 + 1000, attrs: { 'gen_ai.usage.input_tokens': 5 } }]);
    assert.equal(o.status, 200, o.text);
    await writerWaits(); // the span waits; v2 goes to the other writer
    r = await api('POST', '/api/v1/traces', A.key, { body: { traces: [{ id: traceId, project, name: 'v2',
      start_time: new Date(now - 60_000).toISOString(), usage: { input_tokens: 100, output_tokens: 10 },
      observations: [{ id: 'new', type: 'span', name: 'new-obs' }] }] } });
    assert.equal(r.status, 202, r.text);
    await waitTrace(A.key, traceId, (b) => b.name === 'v2', 3000);
    await hold;
    const stored = await pollUntil(async () => Number((await stack.psql(
      "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7236002 AND objid = 1"))[0][0]) === 0 ? true : null,
    { timeoutMs: 5000, intervalMs: 50 });
    assert.ok(stored.value, 'the waiting writer went on');
    await sleep(1000); // its batch commits
    const g = await waitTrace(A.key, traceId, (b) => b.name === 'v2');
    assert.deepEqual(g.observations.map((x) => x.name), ['new-obs'], 'only the observations of the record sent last');
    assert.deepEqual(g.usage, { input_tokens: 100, output_tokens: 10, total_tokens: 110 }, 'the totals it was sent with');
  }));

  it('a fragment without its root exported days later is filed under its spans\' start: a window around the start finds it', T, stack.wrap(async () => {
    const traceId = hex(16);
    const root = hex(8);
    const t0 = Date.now() - 3 * 86_400_000;
    const service = `late-root-${hex(3)}`;
    let r = await postOtlp(A.key, 'json', service, [{ traceId, spanId: hex(8), parentSpanId: root, name: 'child', startMs: t0 + 10, endMs: t0 + 20 }]);
    assert.equal(r.status, 200);
    await waitTrace(A.key, traceId);
    r = await postOtlp(A.key, 'json', service, [{ traceId, spanId: root, name: 'root', startMs: t0, endMs: t0 + 500 }]);
    assert.equal(r.status, 200);
    await waitTrace(A.key, traceId, (b) => b.name === 'root');
    const [[day]] = await stack.psql(`SELECT to_char(part_time AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM ingest.traces WHERE id = '${traceId}'`);
    assert.equal(day, new Date(t0 + 10).toISOString().slice(0, 10), 'filed under the day its spans started, not its arrival');
    const from = new Date(t0 - 3_600_000).toISOString();
    const to = new Date(t0 + 3_600_000).toISOString();
    const l = await api('GET', `/api/v1/traces?project=${service}&from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`, A.key);
    assert.equal(l.status, 200, l.text);
    assert.deepEqual(l.body.traces.map((t) => t.id), [traceId], 'listed in a window around its start');
  }));

  it('a JSON-text attribute with an escaped NUL stays as sent; equal counts under two keys are both used; a malformed link id rejects its span', T, stack.wrap(async () => {
    const traceId = hex(16);
    const t0 = Date.now() - 5000;
    const messages = '[{"role":"user","content":"abc\\u0000def"}]';
    let r = await postOtlp(A.key, 'json', 'nul-text', [{ traceId, spanId: hex(8), name: 'chat', startMs: t0, endMs: t0 + 100,
      attrs: { 'gen_ai.input.messages': messages, 'gen_ai.usage.input_tokens': 10, 'llm.token_count.prompt': 10,
        'gen_ai.usage.output_tokens': ' 7' } }]);
    assert.equal(r.status, 200);
    const g = await waitTrace(A.key, traceId);
    const attrs = g.observations[0].attributes;
    // cJSON would cut the text at the NUL: not read as messages, kept whole as the string it is
    assert.equal(attrs['gen_ai.input.messages'], messages, JSON.stringify(attrs));
    assert.equal(g.usage.input_tokens, 10);
    assert.equal(attrs['llm.token_count.prompt'], undefined, 'the same count under the OpenInference key is used up too');
    // a count written as a string is digits only: " 7" is not a count, and stays an attribute
    assert.equal(attrs['gen_ai.usage.output_tokens'], ' 7', JSON.stringify(attrs));
    assert.equal(g.usage.output_tokens ?? null, null, JSON.stringify(g.usage));
    // a link whose ids are not hex of the right length: the span is refused, not stored with "00"
    const bad = hex(16);
    const body = otlpJson('bad-link', [{ traceId: bad, spanId: hex(8), name: 's', startMs: t0, endMs: t0 + 100 }]);
    body.resourceSpans[0].scopeSpans[0].spans[0].links = [{ traceId: 'not-hex', spanId: 'AAECAwQFBgc=' }];
    const res = await api('POST', '/otlp/v1/traces', A.key, { body });
    assert.equal(res.status, 200, res.text);
    assert.equal(Number(res.body?.partialSuccess?.rejectedSpans), 1, res.text);
    assert.match(res.body.partialSuccess.errorMessage, /link/);
    await sleep(500);
    assertStatus(await api('GET', `/api/v1/traces/${bad}`, A.key), 404, 'the span with the bad link was not stored');
  }));

  it('a JSON-text attribute with a number beyond the JSON limits, or a member given twice, stays the string it was sent as, never stored changed', T, stack.wrap(async () => {
    const t0 = Date.now() - 5000;
    const metadata = '{"huge":1e400,"tiny":1e-400,"ok":1}';
    const messages = '[{"role":"assistant","parts":[{"type":"tool_call","id":"c1","name":"f","arguments":{"n":-1e999}}]}]';
    for (const enc of ['json', 'proto']) {
      const traceId = hex(16);
      const r = await postOtlp(A.key, enc, 'num-text', [{ traceId, spanId: hex(8), name: 'chat', startMs: t0, endMs: t0 + 100,
        attrs: { 'gen_ai.request.model': 'm', metadata, 'gen_ai.output.messages': messages } }]);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.otlp, { rejected: 0, message: '' }, `${enc}: the span is stored`);
      const g = await waitTrace(A.key, traceId);
      const o = g.observations[0];
      assert.equal(o.attributes?.metadata, metadata, `${enc}: metadata kept as sent: ${JSON.stringify(o)}`);
      assert.equal(o.metadata, null, `${enc}: not read as metadata with its numbers changed`);
      assert.equal(o.attributes?.['gen_ai.output.messages'], messages, `${enc}: messages kept as sent`);
      assert.equal(o.output, null, `${enc}: no tool call with its arguments changed: ${JSON.stringify(o.output)}`);
    }
    // an object that gives a member twice would lose one of the two: kept as sent too
    const traceId = hex(16);
    const twice = '{"a":1,"n":{"b":"first","b":"second"}}';
    const said = '[{"role":"user","content":"first","content":"second"}]';
    const r = await postOtlp(A.key, 'json', 'num-text', [{ traceId, spanId: hex(8), name: 'chat', startMs: t0, endMs: t0 + 100,
      attrs: { 'gen_ai.request.model': 'm', metadata: twice, 'gen_ai.input.messages': said } }]);
    assert.equal(r.status, 200, r.text);
    const o = (await waitTrace(A.key, traceId)).observations[0];
    assert.equal(o.attributes?.metadata, twice, JSON.stringify(o));
    assert.equal(o.metadata, null);
    assert.equal(o.attributes?.['gen_ai.input.messages'], said, JSON.stringify(o));
    assert.equal(o.input, null);
  }));

  it('a JSON body of millions of tiny values (in a member OTLP does not define) is 413 before it is parsed, with a Status', T, stack.wrap(async () => {
    const zeros = `{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":{"stringValue":"v"}}]},"scopeSpans":[{"spans":[{"traceId":"${hex(16)}","spanId":"${hex(8)}","name":"x","padding":[${new Array(2_000_000).fill('0').join(',')}]}]}]}]}`;
    const res = await fetch(`${stack.url}/otlp/v1/traces`, {
      method: 'POST',
      headers: { authorization: `Bearer ${A.key}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body: zlib.gzipSync(zeros),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    assert.equal(res.status, 413, text.slice(0, 300));
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    const st = JSON.parse(text);
    assert.equal(st.code, 8, 'RESOURCE_EXHAUSTED');
    assert.match(st.message, /16 times its size/);
  }));

  it('a JSON body that gives a member twice is 400, never answered as taken with the spans of one of the two dropped', T, stack.wrap(async () => {
    const [a, b] = [hex(16), hex(16)];
    const span = (traceId) => ({ traceId, spanId: hex(8), name: 's', startTimeUnixNano: nsStr(Date.now() - 5000) });
    const raw = `{"resourceSpans":[{"scopeSpans":[{"spans":[${JSON.stringify(span(a))}],"spans":[${JSON.stringify(span(b))}]}]}]}`;
    const r = await api('POST', '/otlp/v1/traces', A.key, { raw, headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.code, 3, r.text);
    assert.match(r.body.message, /'spans' twice/, r.text);
    await sleep(500);
    assertStatus(await api('GET', `/api/v1/traces/${a}`, A.key), 404, 'nothing of the request is stored');
  }));

  it('partial_success.error_message is valid UTF-8 when a reason quoting a long non-ASCII attribute key is cut short', T, stack.wrap(async () => {
    const { Req, Resp } = types;
    const traceId = hex(16);
    const msg = Req.fromObject({ resource_spans: [{ scope_spans: [{ spans: [{
      trace_id: Buffer.from(traceId, 'hex'), span_id: Buffer.from(hex(8), 'hex'), name: 's',
      attributes: [{ key: `x${'é'.repeat(100)}`, value: { string_value: 'QQ' } }],
    }] }] }] });
    const body = Buffer.from(Req.encode(msg).finish());
    const at = body.indexOf(Buffer.from('QQ'));
    body[at] = 0xff; // the value is not UTF-8: the span is rejected, its reason names the key
    body[at + 1] = 0xfe;
    const res = await fetch(`${stack.url}/otlp/v1/traces`, {
      method: 'POST', headers: { authorization: `Bearer ${A.key}`, 'content-type': 'application/x-protobuf' }, body,
      signal: AbortSignal.timeout(15_000),
    });
    const buf = Buffer.from(await res.arrayBuffer());
    assert.equal(res.status, 200, buf.toString());
    const ps = Resp.decode(buf).partial_success;
    assert.equal(Number(ps.rejected_spans), 1);
    const raw = buf.subarray(buf.indexOf(Buffer.from('span ')));
    assert.doesNotThrow(() => new TextDecoder('utf-8', { fatal: true }).decode(raw), `error_message is UTF-8: ${raw.toString('hex')}`);
    assert.match(ps.error_message, /attribute 'x/);
  }));

  it('GenAI events with JSON text are stored: the choice\'s message, tool calls; what filled nothing stays in otel.events', T, stack.wrap(async () => {
    const traceId = hex(16);
    const t0 = Date.now() - 5000;
    const span = hex(8);
    const calls = [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }];
    const ev = (name, ms, attrs) => ({ name, timeUnixNano: nsStr(ms),
      attributes: Object.entries(attrs).map(([key, v]) => ({ key, value: anyValueJson(v) })) });
    const body = otlpJson(`events-${hex(3)}`, [{ traceId, spanId: span, name: 'chat gpt-4o', startMs: t0, endMs: t0 + 100,
      attrs: { 'gen_ai.request.model': 'gpt-4o' } }]);
    body.resourceSpans[0].scopeSpans[0].spans[0].events = [
      ev('gen_ai.user.message', t0, { content: 'Weather in Paris?' }),
      ev('gen_ai.assistant.message', t0 + 1, { content: '', tool_calls: JSON.stringify(calls) }),
      ev('gen_ai.tool.message', t0 + 2, { id: 'call_1', content: 'rainy' }),
      ev('gen_ai.choice', t0 + 3, { index: 0, finish_reason: 'stop', message: JSON.stringify({ role: 'assistant', content: 'It is rainy' }) }),
    ];
    const res = await api('POST', '/otlp/v1/traces', A.key, { body });
    assert.equal(res.status, 200, res.text);
    const g = await waitTrace(A.key, traceId);
    assert.deepEqual(g.output?.messages, [{ role: 'assistant', content: 'It is rainy' }], `the choice's message: ${JSON.stringify(g.output)}`);
    const o = g.observations[0];
    assert.equal(o.input?.messages?.length, 3, JSON.stringify(o.input));
    assert.deepEqual(o.input.messages[1].tool_calls?.map((c) => [c.id, c.function?.name, c.function?.arguments]),
      [['call_1', 'get_weather', '{"city":"Paris"}']], `the tool calls sent as JSON text: ${JSON.stringify(o.input.messages[1])}`);
    assert.equal(o.input.messages[2].tool_call_id, 'call_1');
    assert.deepEqual(o.attributes?.['otel.events']?.map((e) => [e.name, e.attributes]),
      [['gen_ai.choice', { index: 0, finish_reason: 'stop' }]], `only what filled nothing is kept: ${JSON.stringify(o.attributes)}`);
  }));

  it('spans of a second resource keep it as otel.resource; scope attributes are kept; labels and roles are made valid', T, stack.wrap(async () => {
    const traceId = hex(16);
    const t0 = Date.now() - 5000;
    const [root, child] = [hex(8), hex(8)];
    const [svcFront, svcBack] = [`front-${hex(3)}`, `back-${hex(3)}`];
    const front = otlpJson(svcFront, [{ traceId, spanId: root, name: 'request\tin', startMs: t0, endMs: t0 + 100,
      attrs: { 'tag.tags': JSON.stringify(['a\nb']),
        'gen_ai.input.messages': JSON.stringify([{ role: 'model', content: 'hi' }, { role: 'critic', content: 'meh' }]) } }]);
    const back = otlpJson(svcBack, [{ traceId, spanId: child, parentSpanId: root, name: 'query', startMs: t0 + 10, endMs: t0 + 20 }],
      { 'host.name': 'db-1' });
    back.resourceSpans[0].scopeSpans[0].scope.attributes = [{ key: 'library.lang', value: { stringValue: 'python' } }];
    // a project no trace can have: that resource's span is refused, the others are stored
    const bad = otlpJson('bad\nproject', [{ traceId: hex(16), spanId: hex(8), name: 's', startMs: t0, endMs: t0 + 1 }]);
    const body = { resourceSpans: [...back.resourceSpans, ...front.resourceSpans, ...bad.resourceSpans] };
    const res = await api('POST', '/otlp/v1/traces', A.key, { body });
    assert.equal(res.status, 200, res.text);
    assert.equal(Number(res.body?.partialSuccess?.rejectedSpans), 1, res.text);
    assert.match(res.body.partialSuccess.errorMessage, /control characters/);
    const g = await waitTrace(A.key, traceId);
    assert.equal(g.project, svcFront, 'the root\'s resource names the project');
    assert.equal(g.name, 'request in');
    assert.deepEqual(g.tags, ['a b']);
    assert.deepEqual(g.input?.messages, [{ role: 'assistant', content: 'hi' }, { role: 'user', name: 'critic', content: 'meh' }], JSON.stringify(g.input));
    const c = g.observations.find((o) => o.id === child);
    assert.deepEqual(c.attributes?.['otel.resource'], { 'service.name': svcBack, 'host.name': 'db-1' }, JSON.stringify(c.attributes));
    assert.deepEqual(c.attributes?.['otel.scope.attributes'], { 'library.lang': 'python' }, JSON.stringify(c.attributes));
    const r0 = g.observations.find((o) => o.id === root);
    assert.equal(r0.attributes?.['otel.resource'], undefined, 'the trace keeps the root\'s resource');
  }));

  it('merging keeps the first fragment\'s resource and the tags\' order; an end before the start gives no latency', T, stack.wrap(async () => {
    const traceId = hex(16);
    const t0 = Date.now() - 5000;
    const root = hex(8);
    const [svcRoot, svcChild] = [`front-${hex(3)}`, `back-${hex(3)}`];
    // a root whose clock ran backwards (end before start), with tags in an order of its own
    let r = await postOtlp(A.key, 'json', svcRoot, [{ traceId, spanId: root, name: 'root', startMs: t0 + 1000, endMs: t0,
      attrs: { 'tag.tags': ['zeta', 'alpha', 'mid'] } }]);
    assert.equal(r.status, 200);
    await waitTrace(A.key, traceId);
    r = await postOtlp(A.key, 'json', svcChild, [{ traceId, spanId: hex(8), parentSpanId: root, name: 'child', startMs: t0 + 1100, endMs: t0 + 500 }]);
    assert.equal(r.status, 200);
    const g = await waitTrace(A.key, traceId, (b) => b.observations.length === 2);
    assert.deepEqual(g.tags, ['zeta', 'alpha', 'mid'], 'the tags keep their order');
    assert.equal(g.project, svcRoot);
    assert.equal(g.attributes?.resource?.['service.name'], svcRoot, `the resource of the fragment that names the project: ${JSON.stringify(g.attributes)}`);
    assert.equal(g.latency_ms, null, 'no negative latency');
    for (const o of g.observations) assert.equal(o.latency_ms ?? null, null, `no negative latency on ${o.name}`);
  }));

  it('a large OTLP request is decoded off the event loop: other requests are answered meanwhile', T, stack.wrap(async () => {
    // about 12 MB of OTLP/JSON (gzip): its inflating, decoding and mapping take a while, and
    // must not hold up /healthz (or any other caller) on the same service
    const attrs = Array.from({ length: 20 }, (_, i) => ({ key: `k${i}`, value: { arrayValue: { values: Array(50).fill({ intValue: '1' }) } } }));
    const one = JSON.stringify({ traceId: hex(16), spanId: hex(8), name: 's', attributes: attrs }).length;
    const n = Math.floor((12 * 1024 * 1024) / one);
    const t0 = Date.now() - 1000;
    const spans = Array.from({ length: n }, () => ({ traceId: hex(16), spanId: hex(8), name: 's', kind: 1,
      startTimeUnixNano: nsStr(t0), endTimeUnixNano: nsStr(t0 + 1), attributes: attrs }));
    const body = zlib.gzipSync(JSON.stringify({ resourceSpans: [{ resource: { attributes: [{ key: 'service.name', value: { stringValue: `big-${hex(3)}` } }] },
      scopeSpans: [{ scope: { name: 'big' }, spans }] }] }));
    const base = stack.env.EVALBUS_INGEST_URL;
    let stop = false;
    const pings = [];
    const pinger = (async () => {
      while (!stop) {
        const a = performance.now();
        const res = await fetch(`${base}/healthz`);
        await res.arrayBuffer();
        pings.push(performance.now() - a);
        await sleep(10);
      }
    })();
    await sleep(100);
    const a = performance.now();
    const res = await fetch(`${base}/otlp/v1/traces`, { method: 'POST', body,
      headers: { authorization: `Bearer ${A.key}`, 'content-type': 'application/json', 'content-encoding': 'gzip' } });
    const text = await res.text();
    const took = performance.now() - a;
    stop = true;
    await pinger;
    assert.equal(res.status, 200, text.slice(0, 300));
    assert.equal(text, '{}', `all ${n} spans accepted`);
    const worst = Math.max(...pings);
    assert.ok(took > 200, `the request took long enough to tell (${took.toFixed(0)} ms)`);
    assert.ok(worst < took / 3, `the slowest /healthz meanwhile took ${worst.toFixed(0)} ms, against ${took.toFixed(0)} ms for the request`);
  }));

  it('a trace larger than max-trace-bytes goes as several fragments, stored whole; only a span larger on its own is rejected (never a 503 to retry)', T, stack.wrap(async () => {
    const [big, huge, small] = [hex(16), hex(16), hex(16)];
    const t0 = Date.now() - 5000;
    const root = hex(8);
    const text = (i) => `${i}`.repeat(900_000);
    const spans = [
      // 6 spans, 4.5 MB together: more than max-trace-bytes (4 MiB) in one record
      { traceId: big, spanId: root, name: 'big root', startMs: t0, endMs: t0 + 1000, attrs: { 'gen_ai.request.model': 'gpt-4o' } },
      ...Array.from({ length: 5 }, (_, i) => ({ traceId: big, spanId: hex(8), parentSpanId: root, name: `part ${i}`, startMs: t0 + i, endMs: t0 + i + 1,
        attrs: { 'input.value': text(i), 'gen_ai.request.model': 'gpt-4o', 'gen_ai.usage.input_tokens': 10 } })),
      // one span of 4.5 MB on its own (five prompt messages of 900 KB), beside a small one
      { traceId: huge, spanId: hex(8), name: 'huge', startMs: t0, endMs: t0 + 10,
        attrs: Object.fromEntries(Array.from({ length: 5 }, (_, i) => [[`gen_ai.prompt.${i}.role`, 'user'], [`gen_ai.prompt.${i}.content`, text(i)]]).flat()) },
      { traceId: huge, spanId: hex(8), name: 'beside', startMs: t0, endMs: t0 + 10 },
      ...chatSpans(small, t0),
    ];
    const r = await postOtlp(A.key, 'json', `otel-size-${hex(3)}`, spans, { gzip: true });
    assert.equal(r.status, 200, `answered ${r.status}: ${r.text.slice(0, 300)}`);
    assert.equal(r.otlp.rejected, 1, `only the span too large on its own: ${r.otlp.message}`);
    assert.match(r.otlp.message, new RegExp(`trace ${huge}: 1 span\\(s\\) larger than max-trace-bytes`));
    await waitTrace(A.key, small);
    const g = await waitTrace(A.key, big, (b) => b.observations.length === 6, 10_000);
    assert.equal(g.name, 'big root', 'the trace-level fields of the first fragment');
    assert.equal(g.usage.input_tokens, 50, 'usage summed over the spans of every fragment');
    for (let i = 0; i < 5; i++) {
      const o = g.observations.find((x) => x.name === `part ${i}`);
      assert.ok(o, `part ${i} stored`);
      assert.equal(JSON.stringify(o.input).length >= 900_000, true, `part ${i} keeps its input whole`);
    }
    const h = await waitTrace(A.key, huge, (b) => b.observations.length === 1);
    assert.deepEqual(h.observations.map((o) => o.name), ['beside'], 'the span beside the huge one is stored');
  }));

  it('a split trace whose trace-level input is most of max-trace-bytes keeps its metadata and resource attributes', T, stack.wrap(async () => {
    // a replica with a 2 KiB limit: the root's 1,200-byte input (copied to the trace) leaves the
    // first fragment; its metadata and the resource's attributes must stay with it
    const replica = await stack.spawnService('ingest', { EVALBUS_MAX_TRACE_BYTES: '2KiB', EVALBUS_WRITER_THREADS: '0' });
    const id = hex(16);
    const root = hex(8);
    const t0 = Date.now() - 5000;
    const spans = [
      { traceId: id, spanId: root, name: 'agent', startMs: t0, endMs: t0 + 100,
        attrs: { 'input.value': 'q'.repeat(1200), metadata: JSON.stringify({ customer: 'acme' }) } },
      ...Array.from({ length: 4 }, (_, i) => ({ traceId: id, spanId: hex(8), parentSpanId: root, name: `step ${i}`, startMs: t0 + i, endMs: t0 + i + 1,
        attrs: { 'output.value': `${i}`.repeat(250) } })),
    ];
    const res = await fetch(`${replica.url}/otlp/v1/traces`, { method: 'POST', body: JSON.stringify(otlpJson(`split-${hex(3)}`, spans, { 'custom.res': 'keepme' })),
      headers: { authorization: `Bearer ${A.key}`, 'content-type': 'application/json' } });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.equal(text, '{}', 'every span taken');
    const g = await waitTrace(A.key, id, (b) => b.observations.length === 5, 10_000);
    assert.equal(g.metadata.customer, 'acme', 'the root span\'s metadata');
    assert.equal(g.attributes?.resource?.['custom.res'], 'keepme', `the resource's attributes: ${JSON.stringify(g.attributes)}`);
    assert.equal(g.name, 'agent');
    assert.ok(JSON.stringify(g.observations.find((o) => o.name === 'agent').input).includes('q'.repeat(1200)), 'the root span keeps its input');
  }));

  it('a trace stored from several fragments in one writer batch is announced once in its stored event', T, stack.wrap(async () => {
    // the stack's ingest is paused while a replica (no writers, a 2 KiB limit) takes the trace
    // as several fragments, and a second replica with one writer thread then fetches them at once
    const { TracesStored } = await loadTypes();
    const intake = await stack.spawnService('ingest', { EVALBUS_MAX_TRACE_BYTES: '2KiB', EVALBUS_WRITER_THREADS: '0' });
    const id = hex(16);
    const root = hex(8);
    const t0 = Date.now() - 5000;
    const spans = [
      { traceId: id, spanId: root, name: 'agent', startMs: t0, endMs: t0 + 100 },
      ...Array.from({ length: 4 }, (_, i) => ({ traceId: id, spanId: hex(8), parentSpanId: root, name: `step ${i}`, startMs: t0 + i, endMs: t0 + i + 1,
        attrs: { 'output.value': `${i}`.repeat(900) } })),
    ];
    const nc = await stack.nats();
    const events = nc.subscribe(`evalbus.v1.traces.stored.${A.team}`);
    const announced = [];
    (async () => {
      for await (const m of events) announced.push(TracesStored.decode(m.data).trace_ids);
    })();
    await nc.flush();
    const main = stack.readPid('ingest');
    let writer;
    process.kill(main, 'SIGSTOP');
    try {
      await sleep(600); // the paused writers' pull requests (250 ms) run out: nothing goes to them
      const res = await fetch(`${intake.url}/otlp/v1/traces`, { method: 'POST', body: JSON.stringify(otlpJson(`once-${hex(3)}`, spans)),
        headers: { authorization: `Bearer ${A.key}`, 'content-type': 'application/json' } });
      assert.equal(res.status, 200, await res.text());
      writer = await stack.spawnService('ingest', { EVALBUS_WRITER_THREADS: '1' });
      const stored = await pollUntil(async () => {
        const g = await stack.api('GET', `/api/v1/traces/${id}`, { base: writer.url, key: A.key });
        return g.status === 200 && g.body.observations.length === 5;
      }, { timeoutMs: 10_000, intervalMs: 100 });
      assert.ok(stored.value, 'the trace is stored whole');
      await sleep(300); // its event, published after the commit
    } finally {
      process.kill(main, 'SIGCONT');
      writer?.proc.kill('SIGTERM');
      await writer?.exited;
    }
    events.unsubscribe();
    const mine = announced.filter((ids) => ids.includes(id));
    assert.equal(mine.length, 1, `one event names the trace: ${JSON.stringify(announced)}`);
    assert.equal(mine[0].filter((x) => x === id).length, 1, `once: ${JSON.stringify(mine[0])}`);
  }));

  it('partial_success.error_message gives the first 3 reasons, then how many spans more, however many are refused', T, stack.wrap(async () => {
    // a replica with a 2 KiB limit: six traces whose one span is over it, and a decoder
    // rejection (an all-zero trace id) before them
    const replica = await stack.spawnService('ingest', { EVALBUS_MAX_TRACE_BYTES: '2KiB', EVALBUS_WRITER_THREADS: '0' });
    const t0 = Date.now() - 5000;
    const spans = [
      { traceId: '0'.repeat(32), spanId: hex(8), name: 'no trace', startMs: t0, endMs: t0 + 1 },
      ...Array.from({ length: 6 }, (_, i) => ({ traceId: hex(16), spanId: hex(8), name: `big ${i}`, startMs: t0, endMs: t0 + 1,
        attrs: { 'output.value': 'z'.repeat(3000) } })),
    ];
    const res = await fetch(`${replica.url}/otlp/v1/traces`, { method: 'POST', body: JSON.stringify(otlpJson(`why-${hex(3)}`, spans)),
      headers: { authorization: `Bearer ${A.key}`, 'content-type': 'application/json' } });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const ps = JSON.parse(text).partialSuccess;
    assert.equal(Number(ps.rejectedSpans), 7, text);
    const msg = ps.errorMessage;
    assert.equal(msg.split('; ').length, 3, `three reasons: ${msg}`);
    assert.match(msg, / \(and 4 more\)$/, `then the four spans no reason given accounts for: ${msg}`);
  }));

  it('fragments of the same traces in requests that two writers store at once: no deadlock, no batch retried one by one, every total right', T, stack.wrap(async () => {
    // 400 traces of 12 spans; request k holds span k of every trace, the traces in a random
    // order, and the 12 requests go at once: the writers' batches share traces in different
    // orders (each taking row locks as it goes)
    const NT = 400;
    const NS = 12;
    const t0 = Date.now() - 10_000;
    const service = `otel-frag-${hex(3)}`;
    const logFile = path.join(stack.state, 'logs', 'ingest.log');
    const logFrom = fs.statSync(logFile).size;
    const traces = Array.from({ length: NT }, () => ({ traceId: hex(16), root: hex(8) }));
    const requests = Array.from({ length: NS }, (_, k) => [...traces].sort(() => Math.random() - 0.5).map((t) => (k === 0
      ? { traceId: t.traceId, spanId: t.root, name: 'root', startMs: t0, endMs: t0 + 100 }
      : { traceId: t.traceId, spanId: hex(8), parentSpanId: t.root, name: `call ${k}`, startMs: t0 + k, endMs: t0 + 50 + k,
        attrs: { 'gen_ai.request.model': 'gpt-4o', 'gen_ai.usage.input_tokens': k } })));
    const answers = await Promise.all(requests.map((spans) => postOtlp(A.key, 'json', service, spans)));
    for (const r of answers) assert.equal(r.status, 200, r.text);
    const want = (NS * (NS - 1)) / 2;
    for (const t of traces) {
      const g = await waitTrace(A.key, t.traceId, (b) => b.observations.length === NS && b.usage?.input_tokens === want, 30_000);
      assert.equal(g.name, 'root');
    }
    const log = fs.readFileSync(logFile, 'utf8').slice(logFrom);
    assert.doesNotMatch(log, /deadlock|retrying one by one/, `the writers never failed a batch: ${log.split('\n').filter((l) => /deadlock|one by one/.test(l)).slice(0, 3).join('\n')}`);
  }));

  for (const kind of ['proto', 'http']) {
    it(`the OpenTelemetry JS SDK exports GenAI spans through the edge (exporter-trace-otlp-${kind})`, T, stack.wrap(async () => {
      const service = `sdk-${kind}-${hex(3)}`;
      const Exporter = kind === 'proto' ? OTLPProtoExporter : OTLPHttpExporter;
      const exporter = new Exporter({
        url: `${stack.url}/otlp/v1/traces`,
        headers: { Authorization: `Bearer ${A.key}` },
        ...(kind === 'proto' ? { compression: 'gzip' } : {}),
        timeoutMillis: 10_000,
      });
      const ended = [];
      const collector = { onStart() {}, onEnd(s) { ended.push(s); }, forceFlush: async () => {}, shutdown: async () => {} };
      const provider = new NodeTracerProvider({
        resource: resourceFromAttributes({ 'service.name': service }),
        spanProcessors: [collector],
      });
      const tracer = provider.getTracer('evalbus-it', '1.0.0');
      const root = tracer.startSpan('chat gpt-4o', {
        kind: SpanKind.CLIENT,
        attributes: {
          'gen_ai.operation.name': 'chat',
          'gen_ai.system': 'openai',
          'gen_ai.request.model': 'gpt-4o',
          'gen_ai.usage.input_tokens': 42,
          'gen_ai.usage.output_tokens': 17,
          'gen_ai.input.messages': JSON.stringify([
            { role: 'system', parts: [{ type: 'text', content: 'You are terse.' }] },
            { role: 'user', parts: [{ type: 'text', content: 'Name a prime.' }] },
          ]),
          'gen_ai.output.messages': JSON.stringify([{ role: 'assistant', parts: [{ type: 'text', content: '7' }], finish_reason: 'stop' }]),
        },
      });
      const ctx = otelTrace.setSpan(otelContext.active(), root);
      const tool = tracer.startSpan('execute_tool check_prime', {
        attributes: { 'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'check_prime' },
      }, ctx);
      await sleep(5);
      tool.end();
      root.setStatus({ code: SpanStatusCode.OK });
      root.end();
      await provider.forceFlush();
      assert.equal(ended.length, 2, 'two spans ended');
      const traceId = root.spanContext().traceId;
      assert.match(traceId, HEX32);

      const result = await new Promise((resolve) => exporter.export(ended, resolve));
      assert.equal(result.code, 0, `the exporter reports success (ExportResultCode.SUCCESS): ${result.error?.message ?? ''}`);
      await exporter.shutdown();
      await provider.shutdown();

      const g = await waitTrace(A.key, traceId);
      assert.equal(g.id, traceId);
      assert.equal(g.project, service);
      assert.equal(g.source, 'otlp');
      assert.equal(g.model, 'gpt-4o');
      assert.equal(g.provider, 'openai');
      assert.equal(g.status, 'ok');
      assert.deepEqual(g.usage, { input_tokens: 42, output_tokens: 17, total_tokens: 59 }, 'the stored tokens');
      assert.deepEqual(g.input?.messages, [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Name a prime.' }], 'the stored input messages');
      assert.equal(g.output?.messages?.[0]?.content, '7');
      assert.equal(g.observations.length, 2);
      const gen = g.observations.find((o) => o.id === root.spanContext().spanId);
      assert.ok(gen, 'the chat span is an observation with its span id');
      assert.equal(gen.type, 'generation');
      const t = g.observations.find((o) => o.id === tool.spanContext().spanId);
      assert.equal(t?.parent_id, gen.id, 'the tool span nests under the chat span');
      assert.equal(t?.type, 'tool');
    }));
  }
});
