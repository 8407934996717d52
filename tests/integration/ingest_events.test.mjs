// Messages the ingest service sends on a NATS server with a small max_payload (64 KiB,
// EVALBUS_NATS_MAX_PAYLOAD):
//   - the writer's evalbus.v1.traces.stored.<team> events: the ids of one writer batch that do
//     not fit one message go out as several events, each under the limit, and every stored trace
//     is announced once; a batch of two teams announces each team's traces on its own subject;
//   - an IngestAck of many rejections with messages, which would exceed the limit, leaves out the
//     messages of its last rejections: it is sent, complete in what was accepted.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { headers as natsHeaders } from 'nats';

import { DOWN_TIMEOUT_MS, Stack, UP_TIMEOUT_MS, pollUntil, protoRoot, sleep, uniqueSlug } from './harness.mjs';

const MAX_PAYLOAD = 65536;
const MAX_TRACE_BYTES = '32KiB';
const stack = new Stack('ingest-events', {
  env: { EVALBUS_NATS_MAX_PAYLOAD: String(MAX_PAYLOAD), EVALBUS_MAX_TRACE_BYTES: MAX_TRACE_BYTES },
});
const T = { timeout: 90_000 };

async function protoTypes() {
  const root = await protoRoot('evalbus/v1/trace.proto');
  return Object.fromEntries(['TracesStored', 'TraceBatch', 'IngestAck'].map((n) => [n, root.lookupType(`evalbus.v1.${n}`)]));
}

describe('ingest: stored events and IngestAcks on a server with a small max_payload', () => {
  let A;

  before(async () => {
    await stack.up();
    A = await stack.bootstrap(uniqueSlug('ev'));
    await stack.setTier(A.team, 'enterprise', A.key); // not about rate limits
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('scripts/stack starts nats-server with the max_payload asked for, scheduling on half the cores (GOMAXPROCS)', T, stack.wrap(async () => {
    const nc = await stack.nats();
    assert.equal(nc.info.max_payload, MAX_PAYLOAD);
    const environ = fs.readFileSync(`/proc/${stack.readPid('nats')}/environ`, 'utf8').split('\0');
    assert.ok(environ.includes(`GOMAXPROCS=${Math.max(1, Math.floor(os.availableParallelism() / 2))}`), `nats-server's GOMAXPROCS: ${environ.filter((e) => e.startsWith('GOMAX'))}`);
  }));

  it('the ids of a writer batch larger than max_payload go out as several events under it, each stored trace announced once', T, stack.wrap(async () => {
    const { TracesStored } = await protoTypes();
    const tag = crypto.randomBytes(3).toString('hex');
    // 1000 ids of 200 bytes: a writer batch (up to 500 records) holds about 100 KB of ids, more
    // than one 64 KiB message takes
    const ids = Array.from({ length: 1000 }, (_, i) => `split-${tag}-${String(i).padStart(4, '0')}-`.padEnd(200, 'x'));
    const nc = await stack.nats();
    const sub = nc.subscribe(`evalbus.v1.traces.stored.${A.team}`);
    const events = [];
    (async () => {
      for await (const m of sub) events.push({ bytes: m.data.length, ids: TracesStored.decode(m.data).trace_ids });
    })();
    await nc.flush();

    // The stack's ingest (its writers) paused while a replica without writers takes every trace
    // into the stream; the writers then fetch them in full batches.
    const intake = await stack.spawnService('ingest', { EVALBUS_WRITER_THREADS: '0', EVALBUS_MAX_TRACE_BYTES: MAX_TRACE_BYTES });
    const main = stack.readPid('ingest');
    process.kill(main, 'SIGSTOP');
    try {
      await sleep(600); // the paused writers' pull requests (250 ms) run out: nothing goes to them
      for (let from = 0; from < ids.length; from += 500) {
        const r = await stack.api('POST', '/api/v1/traces', { base: intake.url, key: A.key,
          body: { traces: ids.slice(from, from + 500).map((id) => ({ id, project: 'split', name: 'n' })) } });
        assert.equal(r.status, 202, r.text.slice(0, 300));
      }
    } finally {
      process.kill(main, 'SIGCONT');
    }
    const mine = () => events.flatMap((e) => e.ids).filter((id) => id.startsWith(`split-${tag}-`));
    const all = await pollUntil(async () => mine().length >= ids.length, { timeoutMs: 30_000, intervalMs: 200 });
    assert.ok(all.value, `every trace announced within 30 s: ${mine().length} of ${ids.length}`);
    await sleep(500); // a late duplicate would show up now
    sub.unsubscribe();
    intake.proc.kill('SIGTERM');
    await intake.exited;

    const announced = mine();
    assert.equal(announced.length, ids.length, 'each trace announced once');
    assert.deepEqual([...announced].sort(), [...ids].sort(), 'exactly the traces sent');
    const [[stored]] = await stack.psql(`SELECT count(*) FROM ingest.traces WHERE id LIKE 'split-${tag}-%'`);
    assert.equal(stored, String(ids.length), 'and stored');
    const biggest = Math.max(...events.map((e) => e.bytes));
    assert.ok(biggest <= MAX_PAYLOAD - 400, `every event is under max_payload with room for its envelope: ${biggest} bytes`);
    assert.ok(events.length >= Math.ceil((ids.length * 204) / MAX_PAYLOAD),
      `the ids went out in several events: ${events.length} (${events.map((e) => e.ids.length).join(', ')})`);
    const log = fs.readFileSync(path.join(stack.state, 'logs', 'ingest.log'), 'utf8');
    assert.doesNotMatch(log, /stored event of \d+ traces on .* not sent/, 'no event refused by the server');
  }));

  it('a writer batch of two teams announces each team\'s traces on its own subject, each once, a trace sent twice included', T, stack.wrap(async () => {
    const { TracesStored } = await protoTypes();
    const tag = crypto.randomBytes(3).toString('hex');
    const B = await stack.bootstrap(uniqueSlug('ev2'));
    await stack.setTier(B.team, 'enterprise', B.key);
    const nc = await stack.nats();
    const heard = { [A.team]: [], [B.team]: [] };
    const subs = [A.team, B.team].map((team) => {
      const sub = nc.subscribe(`evalbus.v1.traces.stored.${team}`);
      (async () => {
        for await (const m of sub) heard[team].push(...TracesStored.decode(m.data).trace_ids);
      })();
      return sub;
    });
    await nc.flush();
    const idsA = Array.from({ length: 120 }, (_, i) => `mix-${tag}-a-${i}`);
    const idsB = Array.from({ length: 80 }, (_, i) => `mix-${tag}-b-${i}`);
    const mine = (team) => heard[team].filter((id) => id.startsWith(`mix-${tag}-`));

    // as above: the writers paused while a replica without writers fills the stream; then a
    // replica with one writer thread stores them, so one writer batch holds both teams'
    // records, A's first ten twice (two threads could split them between two batches, each of
    // which announces what it stored)
    const intake = await stack.spawnService('ingest', { EVALBUS_WRITER_THREADS: '0', EVALBUS_MAX_TRACE_BYTES: MAX_TRACE_BYTES });
    const main = stack.readPid('ingest');
    let writer = null;
    process.kill(main, 'SIGSTOP');
    try {
      await sleep(600);
      for (const [who, ids] of [[A, idsA.slice(0, 60)], [B, idsB.slice(0, 40)], [A, idsA.slice(60)],
        [B, idsB.slice(40)], [A, idsA.slice(0, 10)]]) {
        const r = await stack.api('POST', '/api/v1/traces', { base: intake.url, key: who.key,
          body: { traces: ids.map((id) => ({ id, project: 'mix', name: 'n' })) } });
        assert.equal(r.status, 202, r.text.slice(0, 300));
      }
      writer = await stack.spawnService('ingest', { EVALBUS_WRITER_THREADS: '1', EVALBUS_MAX_TRACE_BYTES: MAX_TRACE_BYTES });
      const all = await pollUntil(async () => mine(A.team).length >= idsA.length && mine(B.team).length >= idsB.length,
        { timeoutMs: 30_000, intervalMs: 200 });
      assert.ok(all.value, `every trace announced within 30 s: ${mine(A.team).length} of ${idsA.length}, ${mine(B.team).length} of ${idsB.length}`);
      await sleep(500); // a late duplicate would show up now
    } finally {
      process.kill(main, 'SIGCONT');
    }
    subs.forEach((s) => s.unsubscribe());
    for (const svc of [intake, writer]) {
      svc.proc.kill('SIGTERM');
      await svc.exited;
    }

    assert.deepEqual([...mine(A.team)].sort(), [...idsA].sort(), 'team A hears exactly its traces, each once');
    assert.deepEqual([...mine(B.team)].sort(), [...idsB].sort(), 'team B hears exactly its traces, each once');
  }));

  it('an IngestAck that would exceed max_payload leaves out the messages of its last rejections: it is sent, with every accepted id and every rejection by index and code', T, stack.wrap(async () => {
    const { TraceBatch, IngestAck } = await protoTypes();
    const tag = crypto.randomBytes(3).toString('hex');
    // 1000 traces (max-batch-items), 990 of them with an unknown status: about 35 KB of batch,
    // and about 100 KB of IngestAck with every rejection's message
    const traces = Array.from({ length: 1000 }, (_, i) => (i % 100 === 0
      ? { id: `ok-${tag}-${i}`, project: 'acks', name: 'n' }
      : { id: `bad-${tag}-${String(i).padStart(4, '0')}`, status: 'not-a-status' }));
    const data = TraceBatch.encode(TraceBatch.fromObject({ traces })).finish();
    assert.ok(data.length < MAX_PAYLOAD / 1.5, `the batch fits with room: ${data.length} bytes`);
    const nc = await stack.nats();
    const h = natsHeaders();
    h.set('Evalbus-Api-Key', A.key);
    const reply = await nc.request(`evalbus.v1.ingest.traces.${A.team}`, data, { timeout: 10_000, headers: h, noMux: true });
    assert.ok(reply.data.length <= MAX_PAYLOAD, `the IngestAck fits: ${reply.data.length} bytes`);
    const ack = IngestAck.toObject(IngestAck.decode(reply.data), { defaults: true, arrays: true });
    const ok = traces.filter((_, i) => i % 100 === 0).map((t) => t.id);
    assert.deepEqual(ack.accepted_ids, ok, 'every accepted id');
    assert.equal(ack.error, '', 'not a refusal of the whole batch');
    assert.deepEqual(ack.rejected.map((r) => r.index), traces.flatMap((_, i) => (i % 100 === 0 ? [] : [i])), 'every rejection, by index');
    assert.ok(ack.rejected.every((r) => r.code === 'invalid_argument'), 'each with its code');
    const full = ack.rejected.filter((r) => r.message);
    assert.ok(full.length > 100, `the first rejections keep their messages: ${full.length}`);
    assert.match(full[0].message, /status/);
    assert.equal(full[0].id, traces[1].id);
    assert.deepEqual(full, ack.rejected.slice(0, full.length), 'messages are left out from the last rejection backwards');
    assert.equal(ack.rejected.at(-1).message, '', 'the last rejection has none');
    const withAll = ack.rejected.map((r) => ({ ...r, message: full[0].message.replace(traces[1].id, r.id), id: r.id || traces[r.index].id }));
    assert.ok(IngestAck.encode(IngestAck.fromObject({ ...ack, rejected: withAll })).finish().length > MAX_PAYLOAD,
      'with every message it would not have fitted');
    const stored = await pollUntil(async () => (await stack.psql(
      `SELECT count(*) FROM ingest.traces WHERE id LIKE 'ok-${tag}-%'`))[0][0] === String(ok.length), { timeoutMs: 10_000, intervalMs: 100 });
    assert.ok(stored.value, 'the accepted traces are stored');
    const log = fs.readFileSync(path.join(stack.state, 'logs', 'ingest.log'), 'utf8');
    assert.match(log, /IngestAck to \S+ shortened from \d+ to \d+ bytes \(max_payload 65536\)/);
  }));
});
