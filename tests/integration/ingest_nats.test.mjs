// The ingest service's NATS intake: protobuf evalbus.v1.TraceBatch published with the nats
// client to evalbus.v1.ingest.traces.<team> with the header Evalbus-Api-Key; the IngestAck
// reply; resends stored once; messages that cannot be decoded or are not authorized go to
// evalbus.v1.ingest.dead.<team> (or .dead._unverified when the key does not prove the team) with Evalbus-Reason, are counted in the ingest service's
// /metrics, and do not stop the intake.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { createInbox, headers as natsHeaders } from 'nats';

import {
  BIN_DIR,
  DOWN_TIMEOUT_MS,
  protoRoot,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  assertStatus,
  pidAlive,
  pollUntil,
  sleep,
  uniqueSlug,
} from './harness.mjs';

// one writer thread: the records of one TraceBatch are fetched together, in one writer batch
const stack = new Stack('ingest-nats', { env: { EVALBUS_WRITER_THREADS: '1' } });
const T = { timeout: 60_000 };
const SUBJECT = 'evalbus.v1.ingest.traces.';
const DEAD = 'evalbus.v1.ingest.dead.';
const ACK_TIMEOUT_MS = 5000;

const rid = (p = 'n') => `${p}-${crypto.randomBytes(5).toString('hex')}`;
const ns = (ms) => String(BigInt(ms) * 1_000_000n);

let types;
async function loadTypes() {
  if (!types) {
    const root = await protoRoot('evalbus/v1/trace.proto');
    types = {
      TraceBatch: root.lookupType('evalbus.v1.TraceBatch'),
      IngestAck: root.lookupType('evalbus.v1.IngestAck'),
      TracesStored: root.lookupType('evalbus.v1.TracesStored'),
    };
  }
  return types;
}

function encodeBatch(traces) {
  const { TraceBatch } = types;
  const msg = TraceBatch.fromObject({ traces });
  assert.equal(TraceBatch.verify(msg), null, 'the test builds a valid TraceBatch');
  return TraceBatch.encode(msg).finish();
}

function decodeAck(bytes) {
  const { IngestAck } = types;
  return IngestAck.toObject(IngestAck.decode(bytes), { defaults: true, arrays: true, longs: Number });
}

/** NATS request with optional API key header; resolves the decoded IngestAck. */
async function publishBatch(team, data, key, { timeoutMs = ACK_TIMEOUT_MS } = {}) {
  const nc = await stack.nats();
  const h = natsHeaders();
  if (key !== undefined) h.set('Evalbus-Api-Key', key);
  const reply = await nc.request(SUBJECT + team, data, { timeout: timeoutMs, headers: h, noMux: true });
  return decodeAck(reply.data);
}

function api(method, p, key, opts = {}) {
  return stack.api(method, p, { base: stack.url, key, ...opts });
}

async function waitTrace(key, id, timeoutMs = 3000) {
  let last;
  const res = await pollUntil(async () => {
    last = await api('GET', `/api/v1/traces/${encodeURIComponent(id)}`, key);
    return last.status === 200 ? last.body : null;
  }, { timeoutMs, intervalMs: 100 });
  assert.ok(res.value, `trace ${id} readable within ${timeoutMs} ms of the IngestAck; last ${last.status}: ${last.text.slice(0, 300)}`);
  return res.value;
}

/** evalbus_ingest_dead_letters_total summed over the series whose labels include `reason`
 * (all series when reason is null), from the ingest service's own /metrics. */
async function deadLetters(reason = null) {
  return metric('evalbus_ingest_dead_letters_total', reason && `reason="${reason}"`);
}

const metric = (name, label = null) => stack.metric(name, { label });

/** Subscribes to the team's dead-letter subject; next(timeoutMs) resolves the next message. */
async function deadLetterTap(team) {
  const nc = await stack.nats();
  const sub = nc.subscribe(DEAD + team);
  const queue = [];
  const waiters = [];
  (async () => {
    for await (const m of sub) {
      const w = waiters.shift();
      if (w) w(m);
      else queue.push(m);
    }
  })();
  await nc.flush();
  return {
    next(timeoutMs = 3000) {
      if (queue.length) return Promise.resolve(queue.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no dead letter on ${DEAD}${team} within ${timeoutMs} ms`)), timeoutMs);
        waiters.push((m) => {
          clearTimeout(timer);
          resolve(m);
        });
      });
    },
    pending: () => queue.length,
    close: () => sub.unsubscribe(),
  };
}

function trace(id, extra = {}) {
  const t0 = Date.now() - 30_000;
  return {
    id,
    project: 'nats-app',
    name: 'nats trace',
    model: 'gpt-4o-mini',
    provider: 'openai',
    status: 'ok',
    start_time_unix_nano: ns(t0),
    end_time_unix_nano: ns(t0 + 800),
    input_tokens: 12,
    output_tokens: 7,
    cost_usd: 0.0004,
    input_messages: [{ role: 'user', content: 'What is 2+2?' }],
    output_messages: [{
      role: 'assistant', content: '4',
      tool_calls: [{ id: 'c1', type: 'function', name: 'calc', arguments: '{"e":"2+2"}' }],
    }],
    metadata_json: JSON.stringify({ via: 'nats' }),
    tags: ['nats'],
    observations: [
      { id: 'g1', type: 'generation', name: 'llm', model: 'gpt-4o-mini', input_tokens: 12, output_tokens: 7, start_time_unix_nano: ns(t0 + 10), end_time_unix_nano: ns(t0 + 700) },
      { id: 't1', parent_id: 'g1', type: 'tool', name: 'calc', output_text: '4' },
    ],
    ...extra,
  };
}

describe('ingest: TraceBatch over NATS', () => {
  let A;
  let B;
  let viewerKey;

  before(async () => {
    assert.ok(fs.existsSync(path.join(BIN_DIR, 'evalbus-ingest')), `${BIN_DIR}/evalbus-ingest must exist`);
    await loadTypes();
    await stack.up();
    assert.ok(stack.env.EVALBUS_INGEST_URL, 'stack.env names EVALBUS_INGEST_URL');
    A = await stack.bootstrap(uniqueSlug('na'));
    B = await stack.bootstrap(uniqueSlug('nb'));
    await stack.setTier(A.team, 'enterprise', A.key);
    viewerKey = (await stack.createKey(A.key, { name: 'viewer', role: 'viewer', scopes: ['traces:read'] })).key;
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('a TraceBatch is acknowledged with IngestAck and stored with its fields', T, stack.wrap(async () => {
    const ids = [rid('a'), rid('b')];
    const ack = await publishBatch(A.team, encodeBatch(ids.map((id) => trace(id))), A.key);
    assert.deepEqual(ack.accepted_ids, ids, `IngestAck lists the accepted ids: ${JSON.stringify(ack)}`);
    assert.deepEqual(ack.rejected, []);
    assert.equal(ack.error, '', 'no error');
    const g = await waitTrace(A.key, ids[0]);
    assert.equal(g.source, 'nats');
    assert.equal(g.project, 'nats-app');
    assert.equal(g.model, 'gpt-4o-mini');
    assert.equal(g.status, 'ok');
    assert.deepEqual(g.usage, { input_tokens: 12, output_tokens: 7, total_tokens: 19 });
    assert.equal(g.cost_usd, 0.0004);
    assert.equal(g.latency_ms, 800, 'latency from the times');
    assert.deepEqual(g.metadata, { via: 'nats' });
    assert.deepEqual(g.tags, ['nats']);
    assert.deepEqual(g.input, { messages: [{ role: 'user', content: 'What is 2+2?' }] });
    assert.equal(g.output.messages[0].content, '4');
    assert.deepEqual(g.output.messages[0].tool_calls[0], { id: 'c1', type: 'function', function: { name: 'calc', arguments: '{"e":"2+2"}' } });
    assert.deepEqual(g.observations.map((o) => o.id).sort(), ['g1', 't1']);
    const t1 = g.observations.find((o) => o.id === 't1');
    assert.equal(t1.parent_id, 'g1');
    await waitTrace(A.key, ids[1]);
  }));

  it('invalid traces are rejected one by one in the IngestAck; the valid ones are stored', T, stack.wrap(async () => {
    const good = rid('good');
    const bad = rid('bad');
    const ack = await publishBatch(A.team, encodeBatch([
      trace(bad, { status: 'weird' }),
      trace(good),
      { name: 'no id' }, // over NATS the publisher must choose ids
    ]), A.key);
    assert.deepEqual(ack.accepted_ids, [good], JSON.stringify(ack));
    assert.deepEqual(ack.rejected.map((r) => [r.index, r.id, r.code]), [[0, bad, 'invalid_argument'], [2, '', 'invalid_argument']]);
    assert.match(ack.rejected[0].message, /status/);
    assert.match(ack.rejected[1].message, /id/);
    await waitTrace(A.key, good);
    assertError(await api('GET', `/api/v1/traces/${bad}`, A.key), 'not_found', 'the invalid trace is not stored');
  }));

  it('JSON texts that parse but that PostgreSQL would refuse are stored as the JSON API stores them, never acknowledged and lost', T, stack.wrap(async () => {
    // leading zeros, a trailing dot, a raw tab inside a string, a form feed as white space, and
    // the same in an observation: accepted in the IngestAck, so they must be stored
    const cases = [
      [{ metadata_json: '{"n":01}' }, (g) => assert.deepEqual(g.metadata, { n: 1 })],
      [{ metadata_json: '{"n":1.}' }, (g) => assert.deepEqual(g.metadata, { n: 1 })],
      [{ metadata_json: '{"s":"a\tb"}' }, (g) => assert.deepEqual(g.metadata, { s: 'a\tb' })],
      [{ metadata_json: '{\f"a":1}' }, (g) => assert.deepEqual(g.metadata, { a: 1 })],
      [{ observations: [{ id: 'o1', type: 'span', metadata_json: '{"n":-.5}' }] }, (g) => assert.deepEqual(g.observations[0].metadata, { n: -0.5 })],
    ];
    const ids = cases.map(() => rid('lenient'));
    const ack = await publishBatch(A.team, encodeBatch(cases.map(([extra], i) => trace(ids[i], extra))), A.key);
    assert.deepEqual(ack.accepted_ids, ids, JSON.stringify(ack));
    for (let i = 0; i < cases.length; i++) cases[i][1](await waitTrace(A.key, ids[i]));
  }));

  it('numbers in JSON texts that a double cannot hold are stored exactly', T, stack.wrap(async () => {
    const id = rid('exact');
    const members = ['"snowflake":1234567890123456789', '"pi":3.14159265358979323846'];
    const meta = `{${members.join(',')}}`;
    const ack = await publishBatch(A.team, encodeBatch([trace(id, { metadata_json: meta })]), A.key);
    assert.deepEqual(ack.accepted_ids, [id], JSON.stringify(ack));
    await waitTrace(A.key, id);
    const got = await api('GET', `/api/v1/traces/${id}`, A.key);
    for (const m of members) assert.ok(got.text.includes(m), `${m}: ${got.text.slice(0, 400)}`);
    // out of range: refused in the IngestAck with the reason
    const huge = rid('huge');
    const nack = await publishBatch(A.team, encodeBatch([trace(huge, { metadata_json: '{"n":1e-400}' })]), A.key);
    assert.deepEqual(nack.accepted_ids, [], JSON.stringify(nack));
    assert.equal(nack.rejected[0].code, 'invalid_argument');
    assert.match(nack.rejected[0].message, /metadata must be the text of a JSON object: the number at byte 5 is out of range/);
  }));

  it('a key restricted to a project: traces without a project get it, another project is refused', T, stack.wrap(async () => {
    const web = (await stack.createKey(A.key, { name: 'web', scopes: ['traces:write', 'traces:read'], project: 'web' })).key;
    const [noProject, other] = [rid('rp'), rid('ro')];
    const t = trace(noProject);
    delete t.project;
    const ack = await publishBatch(A.team, encodeBatch([t, trace(other, { project: 'elsewhere' })]), web);
    assert.deepEqual(ack.accepted_ids, [noProject], JSON.stringify(ack));
    assert.equal(ack.rejected.length, 1);
    assert.equal(ack.rejected[0].id, other);
    assert.equal(ack.rejected[0].code, 'forbidden');
    const g = await waitTrace(A.key, noProject);
    assert.equal(g.project, 'web', 'the key\'s project is filled in');
  }));

  it("a project-restricted key cannot replace or merge into another project's stored trace: refused at the door over JSON, NATS and OTLP", T, stack.wrap(async () => {
    const sfx = crypto.randomBytes(3).toString('hex');
    const key = (await stack.createKey(A.key, { name: `only-${sfx}`, scopes: ['traces:write', 'traces:read'], project: `only-${sfx}` })).key;
    const theirs = rid('theirs');
    const otelId = crypto.randomBytes(16).toString('hex'); // an OpenTelemetry trace id, stored by JSON
    let r = await api('POST', '/api/v1/traces', A.key, { body: { traces: [
      { id: theirs, project: `theirs-${sfx}`, name: 'original', observations: [{ id: 'o1', type: 'span' }] },
      { id: otelId, project: `theirs-${sfx}`, name: 'original' }] } });
    assertStatus(r, 202);
    await waitTrace(A.key, theirs);
    await waitTrace(A.key, otelId);
    const tap = await deadLetterTap(A.team);
    const storedBefore = await metric('evalbus_ingest_traces_stored_total');
    const refusal = new RegExp(`^trace ${theirs} is stored in project 'theirs-${sfx}'; the sending key may only write to project 'only-${sfx}'$`);
    try {
      // JSON: the taken id is refused with forbidden, its own trace in the same batch is accepted
      const mine = rid('mine');
      r = await api('POST', '/api/v1/traces', key, { body: { traces: [{ id: theirs, name: 'taken over' }, { id: mine, name: 'mine' }] } });
      assertStatus(r, 207);
      assert.deepEqual(r.body.accepted, [mine], r.text);
      assert.equal(r.body.rejected.length, 1, r.text);
      assert.deepEqual([r.body.rejected[0].index, r.body.rejected[0].id, r.body.rejected[0].error.code], [0, theirs, 'forbidden']);
      assert.match(r.body.rejected[0].error.message, refusal);
      // NATS: refused in the IngestAck, beside an invalid trace and an accepted one
      const mineN = rid('mine');
      const ack = await publishBatch(A.team, encodeBatch([trace(theirs, { project: undefined, name: 'taken over' }),
        trace(rid('bad'), { project: 'elsewhere' }), trace(mineN, { project: undefined })]), key);
      assert.deepEqual(ack.accepted_ids, [mineN], JSON.stringify(ack));
      const byIndex = Object.fromEntries(ack.rejected.map((x) => [x.index ?? 0, x]));
      assert.deepEqual([ack.rejected.length, byIndex[0]?.id, byIndex[0]?.code, byIndex[1]?.code], [2, theirs, 'forbidden', 'forbidden'], JSON.stringify(ack));
      assert.match(byIndex[0].message, refusal);
      assert.match(byIndex[1].message, /may only write to project/);
      // OTLP: a span of the stored trace is a rejected span of a partial success
      const now = BigInt(Date.now()) * 1_000_000n;
      r = await api('POST', '/otlp/v1/traces', key, { body: { resourceSpans: [{ resource: { attributes: [] }, scopeSpans: [{ spans: [
        { traceId: otelId, spanId: crypto.randomBytes(8).toString('hex'), name: 'merged in', startTimeUnixNano: String(now), endTimeUnixNano: String(now + 1000n) }] }] }] } });
      assertStatus(r, 200);
      assert.equal(Number(r.body?.partialSuccess?.rejectedSpans), 1, r.text);
      assert.match(r.body.partialSuccess.errorMessage, new RegExp(`trace ${otelId} is stored in project 'theirs-${sfx}'`));
      await waitTrace(A.key, mine);
      await waitTrace(A.key, mineN);
      assert.equal(await metric('evalbus_ingest_traces_stored_total') - storedBefore, 2, 'the two own traces are stored');
      await assert.rejects(tap.next(1500), /./, 'nothing reached the writer to be dead-lettered');
    } finally {
      tap.close();
    }
    const g = await waitTrace(A.key, theirs);
    assert.deepEqual([g.project, g.name, g.observations.length], [`theirs-${sfx}`, 'original', 1], 'the stored trace is untouched');
    const o = await waitTrace(A.key, otelId);
    assert.deepEqual([o.project, o.name, o.observations.length], [`theirs-${sfx}`, 'original', 0], 'the OpenTelemetry trace is untouched');
  }));

  it('a batch that fails, is retried one by one and meets a PostgreSQL error: what was stored is counted and announced', T, stack.wrap(async () => {
    // One TraceBatch, one writer batch: a record the writer's COPY fails on (a trigger made here
    // raises an invalid-value error for its id) makes the batch go one by one; the second record
    // is stored and acknowledged; the third finds its day's partitions dropped (as retention
    // does), which puts it back for later. The second must still be in TracesStored and in the
    // stored count.
    const sfx = crypto.randomBytes(3).toString('hex');
    const oldT0 = Date.now() - 5 * 86_400_000;
    const day = new Date(oldT0).toISOString().slice(0, 10).replaceAll('-', '');
    const old = rid('oldday');
    let ack = await publishBatch(A.team, encodeBatch([trace(old, { start_time_unix_nano: ns(oldT0), end_time_unix_nano: ns(oldT0 + 5) })]), A.key);
    assert.deepEqual(ack.accepted_ids, [old]);
    await waitTrace(A.key, old);
    const refused = rid('refused');
    await stack.psql(`DELETE FROM ingest.trace_keys WHERE team_id = (SELECT team_id FROM ingest.trace_keys WHERE id = '${old}')
      AND id = '${old}'; DROP TABLE ingest.observations_p${day}; DROP TABLE ingest.traces_p${day};
      CREATE FUNCTION public.refuse_${sfx}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.id = '${refused}' THEN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22023'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER refuse_${sfx} BEFORE INSERT ON ingest.traces FOR EACH ROW EXECUTE FUNCTION public.refuse_${sfx}()`);
    const nc = await stack.nats();
    const events = nc.subscribe(`evalbus.v1.traces.stored.${A.team}`);
    const announced = [];
    (async () => {
      for await (const m of events) announced.push(...types.TracesStored.decode(m.data).trace_ids);
    })();
    await nc.flush();
    const storedBefore = await metric('evalbus_ingest_traces_stored_total');
    const tap = await deadLetterTap(A.team);
    try {
      const [today, onDropped] = [rid('today'), rid('dropped')];
      ack = await publishBatch(A.team, encodeBatch([trace(refused), trace(today, { project: undefined }),
        trace(onDropped, { project: undefined, start_time_unix_nano: ns(oldT0 + 1000), end_time_unix_nano: ns(oldT0 + 1005) })]), A.key);
      assert.deepEqual(ack.accepted_ids, [refused, today, onDropped], JSON.stringify(ack));
      await waitTrace(A.key, onDropped, 15_000);
      await waitTrace(A.key, today);
      const dl = await tap.next(5000);
      assert.match(dl.headers?.get('Evalbus-Reason') ?? '', /refused by the test/, 'the refused record is dead-lettered with its reason');
      const done = await pollUntil(() => announced.includes(today) && announced.includes(onDropped), { timeoutMs: 5000 });
      assert.ok(done.value, `both stored traces are announced: ${JSON.stringify(announced)}`);
      assert.ok(!announced.includes(refused), 'the refused one is not announced');
      assert.equal(await metric('evalbus_ingest_traces_stored_total') - storedBefore, 2, 'both are counted, the refused one is not');
    } finally {
      events.unsubscribe();
      tap.close();
      await stack.psql(`DROP TRIGGER refuse_${sfx} ON ingest.traces; DROP FUNCTION public.refuse_${sfx}()`);
    }
  }));

  it('a batch that PostgreSQL rolls back (a deadlock) is stored again whole at once, not record by record nor later', T, stack.wrap(async () => {
    // a trigger made here raises deadlock_detected once, on one record's row, as PostgreSQL
    // does to the transaction it picks as a deadlock's victim
    const sfx = crypto.randomBytes(3).toString('hex');
    const victim = rid('victim');
    const others = [rid('other'), rid('other')];
    const logFile = path.join(stack.state, 'logs', 'ingest.log');
    const logFrom = fs.statSync(logFile).size;
    await stack.psql(`CREATE SEQUENCE public.once_${sfx};
      CREATE FUNCTION public.deadlock_${sfx}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.id = '${victim}' AND nextval('public.once_${sfx}') = 1 THEN
          RAISE EXCEPTION 'deadlock detected (made by the test)' USING ERRCODE = '40P01'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER deadlock_${sfx} BEFORE INSERT ON ingest.traces FOR EACH ROW EXECUTE FUNCTION public.deadlock_${sfx}()`);
    const retriesBefore = await metric('evalbus_ingest_writer_retries_total');
    const tap = await deadLetterTap(A.team);
    try {
      const ack = await publishBatch(A.team, encodeBatch([trace(others[0]), trace(victim), trace(others[1])]), A.key);
      assert.deepEqual(ack.accepted_ids, [others[0], victim, others[1]], JSON.stringify(ack));
      for (const id of [victim, ...others]) await waitTrace(A.key, id);
      const [[tries]] = await stack.psql(`SELECT last_value FROM public.once_${sfx}`);
      assert.ok(Number(tries) >= 2, `the victim's row was refused once and stored on a later try (${tries} tries)`);
      const log = fs.readFileSync(logFile, 'utf8').slice(logFrom);
      assert.match(log, /rolled back .*storing it again/, 'the writer stored the batch again');
      assert.doesNotMatch(log, /retrying one by one|wait for PostgreSQL/, 'not record by record, not put back for later');
      assert.equal(await metric('evalbus_ingest_writer_retries_total'), retriesBefore, 'nothing was put back');
      assert.equal(tap.pending(), 0, 'nothing was dead-lettered');
    } finally {
      tap.close();
      await stack.psql(`DROP TRIGGER deadlock_${sfx} ON ingest.traces; DROP FUNCTION public.deadlock_${sfx}(); DROP SEQUENCE public.once_${sfx}`);
    }
  }));

  it('a record whose transaction keeps being rolled back (deadlocks) is put back and stored later, never dead-lettered', T, stack.wrap(async () => {
    // five deadlocks in a row on one record: more than the batch's tries at once, so it is put
    // back; a rollback for another's sake is never the record's fault
    const sfx = crypto.randomBytes(3).toString('hex');
    const victim = rid('victim');
    const other = rid('other');
    const logFile = path.join(stack.state, 'logs', 'ingest.log');
    const logFrom = fs.statSync(logFile).size;
    await stack.psql(`CREATE SEQUENCE public.five_${sfx};
      CREATE FUNCTION public.deadlock_${sfx}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.id = '${victim}' AND nextval('public.five_${sfx}') <= 5 THEN
          RAISE EXCEPTION 'deadlock detected (made by the test)' USING ERRCODE = '40P01'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER deadlock_${sfx} BEFORE INSERT ON ingest.traces FOR EACH ROW EXECUTE FUNCTION public.deadlock_${sfx}()`);
    const tap = await deadLetterTap(A.team);
    try {
      const ack = await publishBatch(A.team, encodeBatch([trace(other), trace(victim)]), A.key);
      assert.deepEqual(ack.accepted_ids, [other, victim], JSON.stringify(ack));
      for (const id of [other, victim]) await waitTrace(A.key, id, 15_000);
      const [[tries]] = await stack.psql(`SELECT last_value FROM public.five_${sfx}`);
      assert.ok(Number(tries) >= 6, `stored on a try after the five refused (${tries} tries)`);
      const log = fs.readFileSync(logFile, 'utf8').slice(logFrom);
      assert.match(log, /records wait for PostgreSQL/, 'the batch was put back for later');
      assert.doesNotMatch(log, /cannot be stored/, 'no record was given up');
      assert.equal(tap.pending(), 0, 'nothing was dead-lettered');
    } finally {
      tap.close();
      await stack.psql(`DROP TRIGGER deadlock_${sfx} ON ingest.traces; DROP FUNCTION public.deadlock_${sfx}(); DROP SEQUENCE public.five_${sfx}`);
    }
  }));

  it('the same batch published twice is stored once', T, stack.wrap(async () => {
    const id = rid('twice');
    const data = encodeBatch([trace(id, { project: `nats-dup-${id}` })]);
    assert.deepEqual((await publishBatch(A.team, data, A.key)).accepted_ids, [id]);
    await waitTrace(A.key, id);
    assert.deepEqual((await publishBatch(A.team, data, A.key)).accepted_ids, [id], 'the resend is acknowledged too');
    // without a reply subject as well
    const nc = await stack.nats();
    const h = natsHeaders();
    h.set('Evalbus-Api-Key', A.key);
    nc.publish(SUBJECT + A.team, data, { headers: h });
    await nc.flush();
    await sleep(1500);
    const l = await api('GET', `/api/v1/traces?project=nats-dup-${id}`, A.key);
    assertStatus(l, 200);
    assert.deepEqual(l.body.traces.map((t) => t.id), [id], 'listed once');
    const g = await waitTrace(A.key, id);
    assert.equal(g.observations.length, 2, 'observations not doubled');
    const [[nt, no]] = await stack.psql(
      `SELECT (SELECT count(*) FROM ingest.traces WHERE id = '${id}'),` +
      ` (SELECT count(*) FROM ingest.observations WHERE trace_id = '${id}')`,
    );
    assert.deepEqual([nt, no], ['1', '2'], 'one trace row and two observation rows in PostgreSQL');
  }));

  it('garbage, a missing or wrong key, another team\'s key and a read-only key: IngestAck error, dead letter, counted; the intake goes on', T, stack.wrap(async () => {
    // Messages whose key is not verified for the subject's team go to the operators' subject
    // (the team named in the subject did not necessarily send them); the others to the team's.
    const tap = await deadLetterTap(A.team);
    const unverifiedTap = await deadLetterTap('_unverified');
    try {
      const valid = encodeBatch([trace(rid('never'))]);
      const cases = [
        // [what, data, key, reason label, code, header pattern, tap]
        ['garbage bytes', Buffer.alloc(64, 0xff), A.key, 'undecodable', 'invalid_argument', /TraceBatch/, tap],
        ['no API key', valid, undefined, 'no_key', 'unauthenticated', /Evalbus-Api-Key/, unverifiedTap],
        ['a wrong API key', valid, `eb_aaaaaaaaaa_${'A'.repeat(43)}`, 'unauthenticated', 'unauthenticated', /credential/, unverifiedTap],
        ["another team's key", valid, B.key, 'wrong_team', 'forbidden', /another team/, unverifiedTap],
        ['a key without traces:write', valid, viewerKey, 'forbidden', 'forbidden', /traces:write/, tap],
      ];
      for (const [what, data, key, reason, code, why, where] of cases) {
        const before = await deadLetters(reason);
        const beforeAll = await deadLetters();
        const ack = await publishBatch(A.team, data, key);
        assert.equal(ack.code, code, `${what}: IngestAck.code (${JSON.stringify(ack)})`);
        assert.ok(ack.error.length > 0, `${what}: IngestAck.error says why`);
        assert.deepEqual(ack.accepted_ids, [], `${what}: nothing accepted`);
        const dl = await where.next(3000);
        const hdr = dl.headers?.get('Evalbus-Reason') ?? '';
        assert.match(hdr, why, `${what}: Evalbus-Reason header (${hdr})`);
        assert.ok(Buffer.from(dl.data).equals(Buffer.from(data)), `${what}: the dead letter carries the original bytes`);
        const counted = await pollUntil(async () => (await deadLetters(reason)) === before + 1, { timeoutMs: 2000 });
        assert.ok(counted.value, `${what}: evalbus_ingest_dead_letters_total{reason="${reason}"} went from ${before} to ${before + 1}`);
        assert.equal(await deadLetters(), beforeAll + 1, `${what}: counted once`);
      }
      assert.equal(tap.pending() + unverifiedTap.pending(), 0, 'one dead letter per refused message');
      // nothing of the refused messages was stored, and the intake still works
      const id = rid('after');
      const ack = await publishBatch(A.team, encodeBatch([trace(id)]), A.key);
      assert.deepEqual(ack.accepted_ids, [id], 'the intake works after the refused messages');
      await waitTrace(A.key, id);
      const l = await api('GET', '/api/v1/traces?project=nats-app&limit=500', A.key);
      assertStatus(l, 200);
      assert.ok(!l.body.traces.some((t) => t.id.startsWith('never-')), 'no refused trace was stored');
    } finally {
      tap.close();
      unverifiedTap.close();
    }
  }));

  it('what protobuf-c would cut or blow up is refused, and JSON texts and totals hold the JSON API\'s rules', T, stack.wrap(async () => {
    // 8 MB of empty traces (2 bytes each on the wire, hundreds decoded): refused before it can
    // cost gigabytes, and the intake goes on
    const empties = Buffer.alloc(8_000_000);
    for (let i = 0; i < empties.length; i += 2) empties[i] = 0x0a;
    let ack = await publishBatch(A.team, empties, A.key);
    assert.equal(ack.code, 'too_large', JSON.stringify(ack));
    assert.match(ack.error, /40 times its size/);
    const pid = stack.readPid('ingest');
    const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
    assert.ok(hwm < 600, `ingest's peak memory stayed bounded: ${hwm.toFixed(0)} MiB (the batch would decode to about 1.5 GB)`);
    // a NUL byte inside a string: protobuf-c would cut it there (two ids would become one)
    ack = await publishBatch(A.team, encodeBatch([trace(`${rid('nul')}\u0000first`)]), A.key);
    assert.equal(ack.code, 'invalid_argument', JSON.stringify(ack));
    assert.match(ack.error, /NUL/);
    // per trace: a member twice in a JSON text, and a derived total beyond 2^53
    const [dup, sum, ok] = [rid('dup'), rid('sum'), rid('ok')];
    ack = await publishBatch(A.team, encodeBatch([
      trace(dup, { metadata_json: '{"a":1,"a":2}' }),
      trace(sum, { input_tokens: 9007199254740991, output_tokens: 2, total_tokens: undefined }),
      trace(ok),
    ]), A.key);
    assert.deepEqual(ack.accepted_ids, [ok], JSON.stringify(ack));
    assert.deepEqual(ack.rejected.map((r) => [r.id, r.code]), [[dup, 'invalid_argument'], [sum, 'invalid_argument']]);
    assert.match(ack.rejected[0].message, /'a' appears twice/);
    assert.match(ack.rejected[1].message, /2\^53/);
    await waitTrace(A.key, ok);
  }));

  it('SIGTERM while batches wait for their credential (auth hung): NATS batches are answered unavailable, not dead-lettered, an HTTP batch 503, and the replica exits 0', { timeout: 120_000 }, stack.wrap(async () => {
    // the replica must be the only subscriber of the queue group: the stack's ingest stops
    const stackPid = stack.readPid('ingest');
    process.kill(stackPid, 'SIGTERM');
    assert.ok((await pollUntil(() => !pidAlive(stackPid), { timeoutMs: 20_000, intervalMs: 50 })).value, 'the stack\'s ingest stopped');
    const replica = await stack.spawnService('ingest', {
      EVALBUS_WRITER_THREADS: '0', EVALBUS_SHUTDOWN_DELAY: '0s', EVALBUS_SHUTDOWN_GRACE: '200ms', EVALBUS_AUTH_TIMEOUT: '20s',
    });
    const authPid = stack.readPid('auth');
    const tap = await deadLetterTap(A.team);
    const unverified = await deadLetterTap('_unverified');
    const ids = [rid('term'), rid('term')];
    const httpId = rid('term-http');
    let acks;
    let answer;
    let exit;
    try {
      // the replica's credential cache is empty: each batch waits for the auth service
      process.kill(authPid, 'SIGSTOP');
      const sends = ids.map((id) => publishBatch(A.team, encodeBatch([trace(id)]), A.key, { timeoutMs: 10_000 })
        .catch((err) => ({ failed: err })));
      const post = stack.api('POST', '/api/v1/traces', {
        base: replica.url, key: A.key, timeoutMs: 10_000, body: { traces: [{ id: httpId, project: 'nats-app', name: 'http' }] },
      }).catch((err) => ({ failed: err }));
      await sleep(500);
      replica.proc.kill('SIGTERM');
      acks = await Promise.all(sends);
      answer = await post;
      exit = await Promise.race([replica.exited, sleep(15_000, 'timeout')]);
    } finally {
      process.kill(authPid, 'SIGCONT');
    }
    for (const [i, ack] of acks.entries()) {
      assert.ok(!ack.failed, `batch ${i} was answered: ${ack.failed?.message}`);
      assert.equal(ack.code, 'unavailable', JSON.stringify(ack));
      assert.match(ack.error, /shutting down .*send it again/);
      assert.deepEqual(ack.accepted_ids, []);
    }
    // an HTTP request waiting for its credential gets its answer too, not a closed connection
    assert.ok(!answer.failed, `the HTTP request was answered: ${answer.failed?.message}`);
    assert.equal(answer.status, 503, answer.text);
    await sleep(300);
    assert.equal(tap.pending() + unverified.pending(), 0, 'nothing was dead-lettered: the batches were not at fault');
    tap.close();
    unverified.close();
    const log = fs.readFileSync(replica.logFile, 'utf8');
    assert.deepEqual(exit, { code: 0, signal: null }, `the replica exits 0 (log: ${log.slice(-3000)})`);
    // the stack's ingest comes back; nothing of the refused batches was stored
    const up = await stack.stackCmd('up', 90_000);
    assert.equal(up.code, 0, `${up.stdout}${up.stderr}`);
    const ack = await publishBatch(A.team, encodeBatch([trace(ids[0])]), A.key, { timeoutMs: 10_000 });
    assert.deepEqual(ack.accepted_ids, [ids[0]], 'sent again, the batch is taken');
    await waitTrace(A.key, ids[0]);
    assertStatus(await api('GET', `/api/v1/traces/${ids[1]}`, A.key), 404);
    assertStatus(await api('GET', `/api/v1/traces/${httpId}`, A.key), 404);
  }));

  it('a refused message near max_payload is still dead-lettered: cut to fit with its headers, Evalbus-Payload-Cut giving its length', T, stack.wrap(async () => {
    const nc = await stack.nats();
    const max = nc.info.max_payload;
    const tap = await deadLetterTap(A.team);
    try {
      for (const room of [100, 20_000]) {
        const body = crypto.randomBytes(max - room);
        body[0] = 0xff; // not a TraceBatch
        const before = await deadLetters('undecodable');
        const ack = await publishBatch(A.team, body, A.key);
        assert.equal(ack.code, 'invalid_argument', JSON.stringify(ack));
        const dl = await tap.next(5000);
        const data = Buffer.from(dl.data);
        assert.equal(dl.headers?.get('Evalbus-Stage'), 'nats-intake');
        assert.match(dl.headers?.get('Evalbus-Reason') ?? '', /TraceBatch/);
        if (room === 100) {
          assert.equal(dl.headers?.get('Evalbus-Payload-Cut'), String(body.length), 'the whole length is given');
          assert.ok(data.length > 0 && data.length < body.length, `cut: ${data.length} of ${body.length} bytes`);
        } else {
          assert.equal(dl.headers?.get('Evalbus-Payload-Cut') ?? '', '', 'a dead letter that fits is not cut');
          assert.equal(data.length, body.length);
        }
        assert.ok(data.equals(body.subarray(0, data.length)), 'the payload, unchanged up to the cut');
        assert.equal(await deadLetters('undecodable'), before + 1, 'counted once');
      }
    } finally {
      tap.close();
    }
  }));

  it('an Evalbus-Api-Key header given twice is refused whole, whichever value comes first', T, stack.wrap(async () => {
    // the first value was taken: a valid key followed by another value was accepted, the same
    // two values the other way round refused
    const nc = await stack.nats();
    const unverifiedTap = await deadLetterTap('_unverified');
    try {
      for (const keys of [[A.key, 'eb_aaaaaaaaaa_' + 'A'.repeat(43)], [A.key, A.key], [B.key, A.key]]) {
        const h = natsHeaders();
        for (const k of keys) h.append('Evalbus-Api-Key', k);
        const before = await deadLetters('unauthenticated');
        const id = rid('twice');
        const data = encodeBatch([trace(id)]);
        const reply = await nc.request(SUBJECT + A.team, data, { timeout: ACK_TIMEOUT_MS, headers: h, noMux: true });
        const ack = decodeAck(reply.data);
        assert.equal(ack.code, 'unauthenticated', `${keys.length} keys: ${JSON.stringify(ack)}`);
        assert.match(ack.error, /more than once/);
        assert.deepEqual(ack.accepted_ids, [], 'nothing accepted');
        const dl = await unverifiedTap.next(3000);
        assert.match(dl.headers?.get('Evalbus-Reason') ?? '', /Evalbus-Api-Key given more than once/);
        const counted = await pollUntil(async () => (await deadLetters('unauthenticated')) === before + 1, { timeoutMs: 2000 });
        assert.ok(counted.value, 'counted as unauthenticated');
      }
    } finally {
      unverifiedTap.close();
    }
  }));

  it("the service's own inboxes cannot be named as a reply subject: a message aimed at the auth client's inbox is refused and a key check in flight is not answered by it", T, stack.wrap(async () => {
    // The auth client's inbox shows in its requests on evalbus.v1.auth.verify; a message that
    // named it as its reply subject had its IngestAck read as the answer to another team's key
    // check, which was then refused.
    const nc = await stack.nats();
    const unverifiedTap = await deadLetterTap('_unverified');
    try {
      const verify = nc.subscribe('evalbus.v1.auth.verify', { max: 1 });
      await nc.flush();
      const h = natsHeaders();
      h.set('Evalbus-Api-Key', 'eb_zzzzzzzzzz_' + 'Z'.repeat(43)); // unknown: asked of auth
      nc.publish(SUBJECT + A.team, encodeBatch([]), { headers: h });
      let inbox = null;
      for await (const m of verify) inbox = m.reply;
      assert.match(inbox ?? '', /^_INBOX\.evalbus\./, `the key check's reply subject is under the service's inbox prefix: ${inbox}`);
      const prefix = inbox.slice(0, inbox.lastIndexOf('.'));
      // the probe's own refusal comes first
      assert.match((await unverifiedTap.next(3000)).headers?.get('Evalbus-Reason') ?? '', /credential rejected/);
      const before = await deadLetters('bad_reply');
      const key = (await stack.createKey(A.key, { name: `victim-${crypto.randomBytes(3).toString('hex')}`, scopes: ['traces:write'] })).key;
      const victim = rid('victim');
      // the victim's key check goes out, and messages aimed at the next tokens of the inbox
      const pending = publishBatch(A.team, encodeBatch([trace(victim)]), key);
      for (let n = 0; n < 20; n++) nc.publish(SUBJECT + B.team, encodeBatch([]), { reply: `${prefix}.${n}` });
      const ack = await pending;
      assert.deepEqual(ack.accepted_ids, [victim], `the victim's batch is taken: ${JSON.stringify(ack)}`);
      const counted = await pollUntil(async () => (await deadLetters('bad_reply')) === before + 20, { timeoutMs: 3000 });
      assert.ok(counted.value, 'each message naming the inbox is refused as bad_reply');
      const dl = await unverifiedTap.next(3000);
      assert.match(dl.headers?.get('Evalbus-Reason') ?? '', /reply subject/);
      await waitTrace(A.key, victim);
    } finally {
      unverifiedTap.close();
    }
  }));

  it("a reply subject of the NATS server's own or of evalbus is never published to: such a message is dead-lettered (bad_reply), nothing taken", T, stack.wrap(async () => {
    // The publisher chooses the reply subject and the service publishes there with its own
    // NATS permissions: an empty batch answered on $JS.API.STREAM.PURGE.INGEST purged every
    // team's records, an IngestAck on another team's evalbus.v1.traces.stored was an event of
    // that team.
    const nc = await stack.nats();
    const jsm = await nc.jetstreamManager();
    const unverifiedTap = await deadLetterTap('_unverified');
    const stored = nc.subscribe(`evalbus.v1.traces.stored.${B.team}`);
    const forged = [];
    (async () => {
      for await (const m of stored) forged.push(m);
    })();
    try {
      await nc.flush();
      const kept = rid('kept');
      assert.deepEqual((await publishBatch(A.team, encodeBatch([trace(kept)]), A.key)).accepted_ids, [kept]);
      const inStream = (await jsm.streams.info('INGEST')).state.messages;
      assert.ok(inStream > 0, 'INGEST holds records');
      const h = natsHeaders();
      h.set('Evalbus-Api-Key', A.key);
      const never = rid('never');
      const cases = [
        ['$JS.API.STREAM.PURGE.INGEST', encodeBatch([])],
        [`evalbus.v1.traces.stored.${B.team}`, encodeBatch([trace(never)])],
        ['answers.*', encodeBatch([trace(never)])],
        ['answers.>', encodeBatch([trace(never)])],
        ['answers..x', encodeBatch([trace(never)])],
        // the service's own inboxes: an IngestAck there was read as the answer to another
        // request (a key check, a record's acknowledgement)
        [`_INBOX.evalbus.authc.${crypto.randomBytes(8).toString('hex')}.1`, encodeBatch([])],
        [`_INBOX.evalbus.acks.${crypto.randomBytes(8).toString('hex')}.7`, encodeBatch([trace(never)])],
      ];
      const before = await deadLetters('bad_reply');
      for (const [reply, data] of cases) {
        nc.publish(SUBJECT + A.team, data, { headers: h, reply });
        const dl = await unverifiedTap.next(3000);
        assert.match(dl.headers?.get('Evalbus-Reason') ?? '', /reply subject/, `${reply}: Evalbus-Reason`);
        assert.ok(Buffer.from(dl.data).equals(Buffer.from(data)), `${reply}: the dead letter carries the original bytes`);
      }
      const counted = await pollUntil(async () => (await deadLetters('bad_reply')) === before + cases.length, { timeoutMs: 2000 });
      assert.ok(counted.value, `evalbus_ingest_dead_letters_total{reason="bad_reply"} went up by ${cases.length}`);
      await sleep(300);
      assert.equal(forged.length, 0, "nothing was published on the other team's subject");
      assert.ok((await jsm.streams.info('INGEST')).state.messages >= inStream, 'INGEST was not purged');
      // a reply subject of the publisher's own choosing outside those works
      const inbox = `answers.${crypto.randomBytes(4).toString('hex')}`;
      const sub = nc.subscribe(inbox, { max: 1 });
      const id = rid('custom');
      nc.publish(SUBJECT + A.team, encodeBatch([trace(id)]), { headers: h, reply: inbox });
      for await (const m of sub) assert.deepEqual(decodeAck(m.data).accepted_ids, [id], 'a custom reply subject is answered');
      await waitTrace(A.key, id);
      await waitTrace(A.key, kept);
      const g = await api('GET', `/api/v1/traces/${never}`, A.key);
      assert.equal(g.status, 404, 'nothing of the refused messages was stored');
    } finally {
      unverifiedTap.close();
      stored.unsubscribe();
    }
  }));

  it('a burst of garbage does not stall the intake', T, stack.wrap(async () => {
    const nc = await stack.nats();
    const before = await deadLetters('undecodable');
    const h = natsHeaders();
    h.set('Evalbus-Api-Key', A.key);
    for (let i = 0; i < 200; i++) nc.publish(SUBJECT + A.team, crypto.randomBytes(8).fill(0xff, 0, 1).fill(0x0f, 1, 2), { headers: h });
    await nc.flush();
    const id = rid('burst');
    const ack = await publishBatch(A.team, encodeBatch([trace(id)]), A.key, { timeoutMs: 10_000 });
    assert.deepEqual(ack.accepted_ids, [id], 'a valid batch behind 200 bad ones is acknowledged');
    await waitTrace(A.key, id);
    const counted = await pollUntil(async () => (await deadLetters('undecodable')) >= before + 200, { timeoutMs: 5000 });
    assert.ok(counted.value, `200 undecodable messages counted (before ${before}, now ${await deadLetters('undecodable')})`);
  }));
  it('a batch refused whole lets the batches decoded behind it go on: they are answered without waiting for more traffic', { timeout: 120_000 }, stack.wrap(async () => {
    // Batches go to the stream in the order their credentials were verified, each once every
    // batch before it is decoded. A batch of more than max-batch-items traces is refused only
    // once it is unpacked; a small batch right behind it is decoded first, on the other decode
    // thread, and waits for it. When the large one is refused, the small one must go on then,
    // not when some later batch happens to be decoded.
    const warm = rid('warm');
    assert.deepEqual((await publishBatch(A.team, encodeBatch([trace(warm)]), A.key)).accepted_ids, [warm]);
    const steps = (i) => Array.from({ length: 20 }, (_, j) => ({
      id: `s${j}`, type: 'span', name: `step ${j}`, metadata_json: JSON.stringify({ i, j, note: 'x'.repeat(60) }),
    }));
    const big = encodeBatch(Array.from({ length: 1001 }, (_, i) => trace(rid('over'), { observations: steps(i) })));
    const nc = await stack.nats();
    const h = natsHeaders();
    h.set('Evalbus-Api-Key', A.key);
    const order = [];
    const refused = nc.request(SUBJECT + A.team, big, { timeout: 30_000, headers: h, noMux: true })
      .then((m) => { order.push('refused'); return decodeAck(m.data); });
    const small = rid('behind');
    const behind = nc.request(SUBJECT + A.team, encodeBatch([trace(small)]), { timeout: 10_000, headers: h, noMux: true })
      .then((m) => { order.push('behind'); return decodeAck(m.data); });
    const [r, b] = await Promise.all([refused, behind]);
    assert.equal(r.code, 'too_large', JSON.stringify(r).slice(0, 300));
    assert.deepEqual(b.accepted_ids, [small], 'the batch behind it is acknowledged, with nothing sent after it');
    assert.deepEqual(order, ['refused', 'behind'], 'it waited for the batch before it');
    await waitTrace(A.key, small);
  }));
  it('a large TraceBatch is decoded off the loop: a message behind it and /healthz are answered before its records go to the stream', { timeout: 120_000 }, stack.wrap(async () => {
    // Decoding, checking and packing a batch of 1000 traces runs on a decode thread; the loop
    // thread meanwhile answers what comes after it. Seen from one NATS connection, whatever the
    // loop published before the batch's records arrives before them: when the batch was decoded
    // on the loop, a message sent right behind it was answered only after all its records.
    const nc = await stack.nats();
    // the key's credential is cached: the batch is taken the moment it arrives
    const warm = rid('warm');
    assert.deepEqual((await publishBatch(A.team, encodeBatch([trace(warm)]), A.key)).accepted_ids, [warm]);
    // callback subscriptions: they run as the client reads each message, in the order sent
    const events = [];
    nc.subscribe(`evalbus.v1.ingest.records.${A.team}`, { max: 1, callback: () => events.push('record') });
    let probeAnswered;
    const probeAnswer = new Promise((resolve) => {
      probeAnswered = resolve;
    });
    const inbox = createInbox();
    nc.subscribe(inbox, { max: 1, callback: (_err, m) => {
      events.push('probe');
      probeAnswered(m);
    } });
    await nc.flush();
    const ids = Array.from({ length: 1000 }, () => rid('big'));
    const steps = (i) => Array.from({ length: 20 }, (_, j) => ({
      id: `s${j}`, type: 'span', name: `step ${j}`, metadata_json: JSON.stringify({ i, j, note: 'x'.repeat(60) }),
    }));
    const big = encodeBatch(ids.map((id, i) => trace(id, { project: 'nats-big', observations: steps(i) })));
    const h = natsHeaders();
    h.set('Evalbus-Api-Key', A.key);
    const bigAck = nc.request(SUBJECT + A.team, big, { timeout: 60_000, headers: h, noMux: true })
      .then((m) => {
        events.push('ack');
        return decodeAck(m.data);
      });
    // right behind it, on the same connection: a message without a key (refused on the loop)
    nc.publish(SUBJECT + A.team, encodeBatch([trace(rid('probe'))]), { reply: inbox });
    const probe = await Promise.race([probeAnswer, sleep(60_000, null)]);
    assert.ok(probe, 'the message behind the batch is answered');
    assert.equal(decodeAck(probe.data).code, 'unauthenticated');
    const health = await stack.api('GET', '/healthz', { base: stack.env.EVALBUS_INGEST_URL, timeoutMs: 60_000 });
    events.push('healthz');
    assert.equal(health.status, 200, health.text);
    const ack = await bigAck;
    assert.deepEqual([ack.accepted_ids.length, ack.rejected.length, ack.error], [ids.length, 0, ''], JSON.stringify(ack).slice(0, 500));
    assert.deepEqual(ack.accepted_ids, ids, 'accepted in the batch\'s order');
    await pollUntil(() => events.includes('record'), { timeoutMs: 5000 });
    assert.ok(events.indexOf('probe') < events.indexOf('record'),
      `the message behind the batch is answered before the batch's first record reaches the stream: ${events.join(', ')}`);
    assert.ok(events.indexOf('healthz') < events.indexOf('ack'),
      `/healthz is answered before the batch's IngestAck: ${events.join(', ')}`);
    const g = await waitTrace(A.key, ids[ids.length - 1], 30_000);
    assert.equal(g.observations.length, 20);
  }));
  it('two TraceBatches sent one after the other reach the stream in that order, also when the first goes out in several slices', { timeout: 120_000 }, stack.wrap(async () => {
    // The loop hands a batch's records to the NATS client 256 per turn. A batch verified after
    // it must not go out between its slices: the later version of a trace (in the second batch)
    // would become the earlier record in the stream, and the stored trace the older version.
    const warm = rid('warm');
    assert.deepEqual((await publishBatch(A.team, encodeBatch([trace(warm)]), A.key)).accepted_ids, [warm]);
    const nc = await stack.nats();
    const x = rid('order');
    const seen = [];
    const tap = nc.subscribe(`evalbus.v1.ingest.records.${A.team}`, { callback: (_err, m) => {
      const text = Buffer.from(m.data).toString('latin1');
      if (text.includes(x)) seen.push(text.includes('first version') ? 'first' : 'second');
    } });
    await nc.flush();
    const steps = (i) => Array.from({ length: 10 }, (_, j) => ({
      id: `s${j}`, type: 'span', name: `step ${j}`, metadata_json: JSON.stringify({ i, j, note: 'x'.repeat(60) }),
    }));
    const first = Array.from({ length: 600 }, (_, i) => (i === 599
      ? trace(x, { name: 'first version' })
      : trace(rid('fill'), { observations: steps(i) })));
    const h = natsHeaders();
    h.set('Evalbus-Api-Key', A.key);
    const a1 = nc.request(SUBJECT + A.team, encodeBatch(first), { timeout: 60_000, headers: h, noMux: true });
    const a2 = nc.request(SUBJECT + A.team, encodeBatch([trace(x, { name: 'second version' })]), { timeout: 60_000, headers: h, noMux: true });
    const [r1, r2] = (await Promise.all([a1, a2])).map((m) => decodeAck(m.data));
    assert.equal(r1.accepted_ids.length, 600, JSON.stringify(r1).slice(0, 300));
    assert.deepEqual(r2.accepted_ids, [x], JSON.stringify(r2));
    await pollUntil(() => seen.length >= 2, { timeoutMs: 5000 });
    tap.unsubscribe();
    assert.deepEqual(seen, ['first', 'second'], 'the second batch\'s record comes after the first batch\'s');
    const stored = await pollUntil(async () => {
      const g = await waitTrace(A.key, x, 30_000);
      return g.name === 'second version' ? g : null;
    }, { timeoutMs: 10_000 });
    assert.ok(stored.value, 'the stored trace is the version sent last');
  }));

  it('a publisher faster than the intake fills the subscription\'s pending limits, not the replica\'s memory', { timeout: 180_000 }, stack.wrap(async () => {
    // The NATS callback took every message off the client at once, so the subscription's
    // pending limits never applied: batches waiting for their credential, the decode threads or
    // the stream piled up in the replica (200,000 small batches: 1.6 GB more in an ASan build).
    // Now at most 10,000 batches (64 MiB) are held; the rest wait in the client, which drops
    // what is over its pending limits (a publisher asking for a reply times out and resends).
    const nc = await stack.nats();
    const pid = stack.readPid('ingest');
    assert.ok(pid, 'the ingest pid');
    const status = (field) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
    const h = natsHeaders();
    h.set('Evalbus-Api-Key', A.key);
    // the key is cached, and the replica has made its pools and buffers
    assert.equal((await publishBatch(A.team, encodeBatch([trace(rid('warm'))]), A.key)).accepted_ids.length, 1);
    const before = status('VmRSS');
    const name = 'x'.repeat(100);
    const n = 200_000;
    for (let i = 0; i < n; i++) {
      nc.publish(SUBJECT + A.team, encodeBatch([{ id: `flood-${i}`, project: 'flood', name }]), { headers: h });
      if (i % 5000 === 4999) await nc.flush();
    }
    await nc.flush();
    // the intake is still answering once the flood has passed
    const settled = await pollUntil(async () => {
      try {
        return (await publishBatch(A.team, encodeBatch([trace(rid('after'))]), A.key, { timeoutMs: 2000 })).accepted_ids.length === 1;
      } catch {
        return false;
      }
    }, { timeoutMs: 120_000, intervalMs: 500 });
    assert.ok(settled.value, 'the intake answers after the flood');
    const grew = status('VmHWM') - before;
    assert.ok(grew < 768, `the replica's peak memory grew by ${grew.toFixed(0)} MiB for ${n} small batches (at most 768)`);
  }));
});
