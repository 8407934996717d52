// The ingest service's durability promise against a real stack: nothing acknowledged (2xx) is
// lost and nothing is stored twice when
//   - the ingest process (HTTP intake and writer in one) is killed with SIGKILL in the middle of
//     an ingestion of 2000 traces and restarted with `scripts/stack up`, and
//   - PostgreSQL is stopped for 10 s during ingestion (the INGEST stream buffers; HTTP goes on
//     answering 202) and started again with `scripts/stack up`, and
//   - nats-server is killed (ingest refuses at once with 503, and nothing it refused is stored
//     when NATS returns) and started again with `scripts/stack up`, and
//   - nats-server is killed while its INGEST stream holds acknowledged traces that no writer could
//     store (PostgreSQL down): the file store keeps them, and they are stored once both return.
// The client behaves like a real one: a batch that did not get a 2xx (the edge answers 502/503
// while ingest is down) is sent again with the same ids. PostgreSQL is checked directly.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  BIN_DIR,
  DOWN_TIMEOUT_MS,
  Stack,
  UP_TIMEOUT_MS,
  connectionRefused,
  pidAlive,
  pollUntil,
  run,
  sleep,
  uniqueSlug,
} from './harness.mjs';

// ingest's sessions end after 3 s idle inside a transaction (60 s by default)
const IDLE_TX_TIMEOUT_MS = 3000;
const stack = new Stack('ingest-durability', { env: { EVALBUS_DB_IDLE_TX_TIMEOUT: `${IDLE_TX_TIMEOUT_MS}ms` } });
const T = { timeout: 120_000 };
const PG_BIN = '/usr/lib/postgresql/15/bin';
const STORE_TIMEOUT_MS = 30_000; // after an outage: "every accepted trace is stored within ~30 s"
// After a SIGKILL, records the dead writer had fetched but not acknowledged come back only when
// the consumer's AckWait (10 s, services/ingest/streams.c) expires: allow that plus slack.
const STORE_AFTER_KILL_TIMEOUT_MS = 45_000;

/** One batch of small traces (one observation each) with ids `${prefix}-${i}`. */
function batch(prefix, from, count) {
  const t0 = Date.now() - 60_000;
  return Array.from({ length: count }, (_, k) => {
    const i = from + k;
    return {
      id: `${prefix}-${String(i).padStart(5, '0')}`,
      project: prefix,
      name: 'durable',
      model: 'gpt-4o-mini',
      start_time: new Date(t0 + i).toISOString(),
      usage: { input_tokens: 3, output_tokens: 2 },
      input: { messages: [{ role: 'user', content: `question ${i}` }] },
      output: `answer ${i}`,
      observations: [{ id: 'gen', type: 'generation', model: 'gpt-4o-mini' }],
    };
  });
}

/** Sends one batch that must be taken whole (202 listing every trace); returns its ids. */
async function sendAccepted(key, traces, what) {
  const res = await stack.api('POST', '/api/v1/traces', { base: stack.url, key, body: { traces }, timeoutMs: 20_000 });
  assert.equal(res.status, 202, `${what}: answered ${res.status}, not 202: ${res.text.slice(0, 300)}`);
  assert.deepEqual(res.body.accepted, traces.map((t) => t.id), `${what}: every trace accepted`);
  return res.body.accepted;
}

/** Sends one batch until every trace in it has been accepted (a 2xx listing it), retrying what
 * was not with the same ids. Records every answer in log; returns the ids accepted. */
async function sendUntilAccepted(key, traces, log, { deadline }) {
  let pending = traces;
  const accepted = [];
  while (pending.length) {
    assert.ok(Date.now() < deadline, `batch not accepted before the deadline; answers so far: ${summarize(log)}`);
    let res;
    try {
      res = await stack.api('POST', '/api/v1/traces', { base: stack.url, key, body: { traces: pending }, timeoutMs: 20_000 });
    } catch (err) {
      log.push({ at: Date.now(), status: `error ${err.cause?.code ?? err.name}` });
      await sleep(200);
      continue;
    }
    log.push({ at: Date.now(), status: res.status });
    if (res.status === 202 || res.status === 207) {
      accepted.push(...res.body.accepted);
      const ok = new Set(res.body.accepted);
      for (const r of res.body.rejected) {
        assert.equal(r.error.code, 'unavailable', `only 'unavailable' rejections are expected here: ${JSON.stringify(r)}`);
      }
      pending = pending.filter((t) => !ok.has(t.id));
    } else {
      assert.ok([502, 503, 504].includes(res.status), `a failed send answers 502/503/504, not ${res.status}: ${res.text.slice(0, 300)}`);
      await sleep(200);
    }
  }
  return accepted;
}

function summarize(log) {
  const counts = {};
  for (const e of log) counts[e.status] = (counts[e.status] ?? 0) + 1;
  return JSON.stringify(counts);
}

/** {rows, distinct, obs} for the team's traces of one project (prefix). */
async function stored(teamId, prefix) {
  const [[rows, distinct, obs]] = await stack.psql(
    `SELECT count(*), count(DISTINCT id), (SELECT count(*) FROM ingest.observations o WHERE o.team_id = '${teamId}'` +
    ` AND o.trace_id LIKE '${prefix}-%') FROM ingest.traces WHERE team_id = '${teamId}' AND project = '${prefix}'`,
  );
  return { rows: Number(rows), distinct: Number(distinct), obs: Number(obs) };
}

/** Waits until `expected` traces of the project are stored, then checks exactly once and that
 * no accepted id is missing. */
async function assertStoredExactlyOnce(teamId, prefix, acceptedIds, expected, timeoutMs = STORE_TIMEOUT_MS) {
  let last = null;
  const start = Date.now();
  const res = await pollUntil(async () => {
    last = await stored(teamId, prefix).catch((err) => ({ error: err.message }));
    return last.distinct >= expected;
  }, { timeoutMs, intervalMs: 500 });
  assert.ok(res.value, `all ${expected} traces stored within ${timeoutMs / 1000} s; last count ${JSON.stringify(last)}`);
  const storedAfterMs = Date.now() - start;
  await sleep(1000); // a late duplicate would show up now
  last = await stored(teamId, prefix);
  assert.equal(last.rows, last.distinct, `no trace stored twice: ${last.rows} rows for ${last.distinct} ids`);
  assert.equal(last.distinct, expected, `exactly the ${expected} traces sent`);
  assert.equal(last.obs, expected, `one observation per trace, none doubled: ${last.obs}`);
  const ids = (await stack.psql(
    `SELECT id FROM ingest.traces WHERE team_id = '${teamId}' AND project = '${prefix}'`,
  )).map(([id]) => id);
  const have = new Set(ids);
  const missing = [...new Set(acceptedIds)].filter((id) => !have.has(id));
  assert.deepEqual(missing.slice(0, 20), [], `${missing.length} acknowledged traces are missing from PostgreSQL`);
  return storedAfterMs;
}

/** True once the session named app is inside its pg_sleep (within 10 s). */
async function inPgSleep(app) {
  return (await pollUntil(async () => (await stack.psql(
    `SELECT count(*) FROM pg_stat_activity WHERE application_name = '${app}' AND query LIKE '%pg_sleep%'`))[0][0] === '1',
  { timeoutMs: 10_000, intervalMs: 50 })).value;
}

/** A request on agent's kept-alive connection: {status, headers, text} or {error}. */
function keptAlive(agent, url, key) {
  return new Promise((resolve) => {
    const u = new URL(url);
    const r = http.request({ agent, host: u.hostname, port: u.port, path: u.pathname + u.search, headers: { authorization: `Bearer ${key}` } },
      (res) => {
        let text = '';
        res.on('data', (c) => { text += c; });
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text, reused: r.reusedSocket }));
      });
    r.on('error', (err) => resolve({ error: err.code ?? err.message }));
    r.end();
  });
}

function asPostgres(file, args, timeoutMs) {
  const root = process.getuid?.() === 0;
  return root
    ? run('runuser', ['-u', stack.env.EVALBUS_STACK_PG_SUPERUSER || 'postgres', '--', file, ...args], { timeoutMs })
    : run(file, args, { timeoutMs });
}

describe('ingest: durability under SIGKILL and PostgreSQL and NATS outages', () => {
  let A;
  // true once GET /api/v1/traces/{id} answers 200 (and `also` holds for that answer), within 15 s
  const traceStored = async (id, also = () => true) => (await pollUntil(async () => {
    const g = await stack.api('GET', `/api/v1/traces/${id}`, { base: stack.url, key: A.key });
    return g.status === 200 && also(g);
  }, { timeoutMs: 15_000, intervalMs: 100 })).value;

  // The reasons of the team's dead letters from now on (filled as they come; stop() ends it).
  const deadLetterReasons = async () => {
    const nc = await stack.nats();
    const dead = nc.subscribe(`evalbus.v1.ingest.dead.${A.team}`);
    const reasons = [];
    (async () => {
      for await (const m of dead) reasons.push(m.headers?.get('Evalbus-Reason') ?? '');
    })();
    await nc.flush();
    Object.defineProperty(reasons, 'stop', { value: () => dead.unsubscribe() }); // not compared
    return reasons;
  };

  before(async () => {
    assert.ok(fs.existsSync(path.join(BIN_DIR, 'evalbus-ingest')), `${BIN_DIR}/evalbus-ingest must exist`);
    await stack.up();
    A = await stack.bootstrap(uniqueSlug('du'));
    await stack.setTier(A.team, 'enterprise', A.key); // not about rate limits
    A.id = (await stack.whoami(A.key)).team.id;
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('ingest killed with SIGKILL mid-ingestion and restarted: every acknowledged trace is stored exactly once', T, stack.wrap(async () => {
    const prefix = `kill-${crypto.randomBytes(3).toString('hex')}`;
    const N = 2000;
    const SIZE = 100;
    const nb = N / SIZE;
    const log = [];
    const accepted = [];
    const deadline = Date.now() + 90_000;
    const pid1 = stack.readPid('ingest');
    assert.ok(pid1 && pidAlive(pid1), `ingest runs (pid file ${stack.pidFile('ingest')})`);
    let killedAt = null;
    let restart = null;
    let next = 0;
    // two senders, like a client with two connections; the kill comes when half is acknowledged
    const sender = async () => {
      while (next < nb) {
        const b = next++;
        accepted.push(...await sendUntilAccepted(A.key, batch(prefix, b * SIZE, SIZE), log, { deadline }));
        if (killedAt === null && accepted.length >= N / 2) {
          killedAt = Date.now();
          process.kill(pid1, 'SIGKILL');
          restart = (async () => {
            await pollUntil(() => !pidAlive(pid1), { timeoutMs: 5000, intervalMs: 20 });
            return stack.stackCmd('up', 90_000);
          })();
        }
      }
    };
    await Promise.all([sender(), sender()]);
    assert.ok(killedAt !== null, 'the process was killed during the ingestion');
    const up = await restart;
    assert.equal(up.code, 0, `scripts/stack up restarted ingest: ${up.stdout}${up.stderr}`);
    const pid2 = stack.readPid('ingest');
    assert.ok(pid2 && pid2 !== pid1 && pidAlive(pid2), `a new ingest process runs (old ${pid1}, new ${pid2})`);
    assert.ok(!pidAlive(pid1), 'the killed process is gone');
    assert.equal(new Set(accepted).size, N, `every trace was accepted in the end (answers: ${summarize(log)})`);
    const afterKill = log.filter((e) => e.at >= killedAt);
    process.stderr.write(`[durability] SIGKILL once half was acknowledged; answers: ${summarize(log)}; after the kill: ${summarize(afterKill)}\n`);
    const ms = await assertStoredExactlyOnce(A.id, prefix, accepted, N, STORE_AFTER_KILL_TIMEOUT_MS);
    process.stderr.write(`[durability] all ${N} stored ${ms} ms after the last 2xx (${Date.now() - killedAt} ms after the kill)\n`);
  }));

  it('after a restart, a trace sent again with its start moved to another day is stored in the day it has', T, stack.wrap(async () => {
    // The writer knows which day partitions exist per process; a key stored before a restart
    // (or by another replica) names a day this process has not seen. It must be trusted, not
    // retried forever.
    const id = `moved-${crypto.randomBytes(3).toString('hex')}`;
    const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000).toISOString();
    const send = (name, start) => stack.api('POST', '/api/v1/traces', {
      base: stack.url, key: A.key, body: { traces: [{ id, project: 'moved', name, start_time: start }] },
    });
    let r = await send('first', twoDaysAgo);
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(id), 'the first version is stored');
    const pid1 = stack.readPid('ingest');
    process.kill(pid1, 'SIGTERM');
    await pollUntil(() => !pidAlive(pid1), { timeoutMs: 20_000, intervalMs: 50 });
    const up = await stack.stackCmd('up', 90_000);
    assert.equal(up.code, 0, `scripts/stack up restarted ingest: ${up.stdout}${up.stderr}`);
    r = await send('second', new Date().toISOString());
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(id, (g) => g.body.name === 'second'), 'the second version replaced the first');
    const rows = await stack.psql(`SELECT count(*), (min(part_time) AT TIME ZONE 'UTC')::date = '${twoDaysAgo.slice(0, 10)}'
      FROM ingest.traces WHERE team_id = '${A.id}' AND id = '${id}'`);
    assert.deepEqual(rows[0], ['1', 't'], 'one row, still in the day it was first stored in');
  }));

  it('a start time nanoseconds before midnight is stored in its own day', T, stack.wrap(async () => {
    // PostgreSQL keeps microseconds: the writer must not let it round 23:59:59.9999997 into the
    // next day while it picks the partition of the day the nanoseconds say
    const id = `midnight-${crypto.randomBytes(3).toString('hex')}`;
    const day = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    const r = await stack.api('POST', '/api/v1/traces', {
      base: stack.url, key: A.key, body: { traces: [{ id, project: 'edge', name: 'late', start_time: `${day}T23:59:59.999999700Z` }] },
    });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(id), 'the trace is stored');
    const rows = await stack.psql(`SELECT to_char(part_time AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM ingest.trace_keys
      WHERE team_id = '${A.id}' AND id = '${id}'`);
    assert.deepEqual(rows, [[day]], 'its key is in the day of its start');
  }));

  it('a review or a score racing a deletion of its trace waits for it and answers 404, leaving nothing behind', T, stack.wrap(async () => {
    // A deletion holds the trace's key locked until it commits. A review or score coming in
    // meanwhile must wait for it (and then find no trace), not write rows the deletion does not
    // see: those would stay behind, and attach to the trace if its id is sent again.
    const tag = crypto.randomBytes(3).toString('hex');
    const id = `judged-${tag}`;
    let r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key,
      body: { traces: [{ id, project: 'judged', name: 'n', observations: [{ id: 'gen', type: 'generation' }] }] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(id));
    const app = `deleting-${tag}`;
    const where = `team_id = '${A.id}' AND id = '${id}'`;
    const other = `team_id = '${A.id}' AND trace_id = '${id}'`;
    const deletion = stack.psql(`BEGIN;
      SELECT 1 FROM ingest.trace_keys WHERE ${where} FOR UPDATE;
      SELECT pg_sleep(2);
      DELETE FROM ingest.traces WHERE ${where}; DELETE FROM ingest.observations WHERE ${other};
      DELETE FROM ingest.reviews WHERE ${other}; DELETE FROM ingest.scores WHERE ${other};
      DELETE FROM ingest.trace_keys WHERE ${where};
      COMMIT`, { appName: app });
    assert.ok(await inPgSleep(app), 'the deletion holds the key');
    const started = Date.now();
    const [score, obsScore, review] = await Promise.all([
      stack.api('POST', '/api/v1/scores', { base: stack.url, key: A.key, body: { trace_id: id, name: 'q', value: 1 } }),
      stack.api('POST', '/api/v1/scores', { base: stack.url, key: A.key, body: { trace_id: id, observation_id: 'gen', name: 'q', value: 1 } }),
      stack.api('POST', `/api/v1/traces/${id}/review`, { base: stack.url, key: A.key, body: { decision: 'accept' } }),
      deletion,
    ]);
    assert.deepEqual([score.status, obsScore.status, review.status], [404, 404, 404],
      `the trace was being deleted: ${score.text} ${obsScore.text} ${review.text}`);
    assert.ok(Date.now() - started >= 1000, 'they waited for the deletion');
    const [[reviews, scores]] = await stack.psql(`SELECT (SELECT count(*) FROM ingest.reviews WHERE ${other}),
      (SELECT count(*) FROM ingest.scores WHERE ${other})`);
    assert.deepEqual([reviews, scores], ['0', '0'], 'no review or score is left behind');
  }));

  it('a deletion that PostgreSQL picks as a deadlock victim answers 503 with Retry-After, and the retry deletes', T, stack.wrap(async () => {
    const tag = crypto.randomBytes(3).toString('hex');
    const id = `deadlock-${tag}`;
    let r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key,
      body: { traces: [{ id, project: 'deadlock', name: 'n' }] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(id));
    const where = `team_id = '${A.id}' AND id = '${id}'`;
    // Another session holds the trace row; once the deletion (holding the key) waits for it,
    // that session asks for the key: a cycle, and the deletion, waiting longer, is the victim.
    const app = `deadlock-${tag}`;
    const other = stack.psql(`DO $$ BEGIN
      PERFORM 1 FROM ingest.traces WHERE ${where} FOR UPDATE;
      PERFORM pg_sleep(0.5);
      FOR i IN 1..1000 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid <> pg_backend_pid()
          AND wait_event_type = 'Lock' AND query LIKE '%DELETE FROM ingest.traces%');
        PERFORM pg_sleep(0.01);
      END LOOP;
      PERFORM 1 FROM ingest.trace_keys WHERE ${where} FOR UPDATE;
    END $$`, { appName: app });
    assert.ok(await inPgSleep(app), 'the other session holds the trace row');
    const del = await stack.api('DELETE', `/api/v1/traces/${id}`, { base: stack.url, key: A.key });
    await other;
    assert.equal(del.status, 503, `the deadlock victim: ${del.status} ${del.text}`);
    assert.equal(del.body?.error?.code, 'unavailable');
    assert.match(del.body.error.message, /deadlock/);
    assert.equal(del.headers.get('retry-after'), '1');
    r = await stack.api('DELETE', `/api/v1/traces/${id}`, { base: stack.url, key: A.key });
    assert.equal(r.status, 200, `the retry: ${r.status} ${r.text}`);
    assert.equal((await stack.api('GET', `/api/v1/traces/${id}`, { base: stack.url, key: A.key })).status, 404);
  }));

  it('day partitions are UTC days whatever time zone PostgreSQL gives the sessions', T, stack.wrap(async () => {
    // A role (or database, or server) time zone other than UTC must not shift the bounds of the
    // day partitions the writer makes: a trace early in a UTC day would not fit its own day's
    // partition (and be dead-lettered), and retention, which drops UTC days, would drop hours of
    // a day still kept.
    const role = decodeURIComponent(new URL(stack.env.EVALBUS_DATABASE_URL).username);
    const reconnect = () => stack.psqlSuperuser(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
      WHERE application_name = 'ingest' AND usename = '${role}'`);
    await stack.psqlSuperuser(`ALTER ROLE "${role}" SET timezone = 'Etc/GMT+12'`);
    try {
      await reconnect();
      const tag = crypto.randomBytes(3).toString('hex');
      const day = new Date(Date.now() - 20 * 86_400_000).toISOString().slice(0, 10);
      const next = new Date(Date.parse(day) + 86_400_000).toISOString().slice(0, 10);
      const traces = [['early', '05:00:00'], ['late', '23:30:00']].map(([k, time]) => (
        { id: `tz-${k}-${tag}`, project: 'tz', name: k, start_time: `${day}T${time}Z` }));
      let r;
      // until the writer's connections are new ones (a send into a dead connection is put back
      // and comes again: the trace is stored either way)
      r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces } });
      assert.equal(r.status, 202, r.text);
      for (const t of traces) assert.ok(await traceStored(t.id), `${t.id} (${t.start_time}) is stored`);
      const [[bound]] = await stack.psqlSuperuser(`SET TimeZone = 'UTC';
        SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'traces_p${day.replaceAll('-', '')}'`);
      assert.equal(bound, `FOR VALUES FROM ('${day} 00:00:00+00') TO ('${next} 00:00:00+00')`, 'the partition is the UTC day');
    } finally {
      await stack.psqlSuperuser(`ALTER ROLE "${role}" RESET timezone`);
      await reconnect();
    }
  }));

  it('a day partition dropped after the writer made it is made again for the next trace of that day', T, stack.wrap(async () => {
    // The writer remembers the days whose partitions it made; retention (or an operator) may
    // drop one meanwhile. The next trace of that day must be stored, not dead-lettered.
    const tag = crypto.randomBytes(3).toString('hex');
    const start = new Date(Date.now() - 5 * 86_400_000);
    const day = start.toISOString().slice(0, 10).replaceAll('-', '');
    const send = async (id) => {
      const r = await stack.api('POST', '/api/v1/traces', {
        base: stack.url, key: A.key, body: { traces: [{ id, project: 'dropped', name: 'n', start_time: start.toISOString() }] },
      });
      assert.equal(r.status, 202, r.text);
      return traceStored(id);
    };
    assert.ok(await send(`first-${tag}`), 'the first trace of the day is stored (its partitions made)');
    await stack.psql(`DELETE FROM ingest.trace_keys WHERE team_id = '${A.id}' AND id = 'first-${tag}';
      DROP TABLE ingest.observations_p${day}; DROP TABLE ingest.traces_p${day}`);
    assert.ok(await send(`second-${tag}`), 'the next trace of that day is stored too');
    const [[made]] = await stack.psql(`SELECT to_regclass('ingest.traces_p${day}') IS NOT NULL`);
    assert.equal(made, 't', 'the day partition was made again');
    // OTLP spans take the upsert path (INSERT into the parent table), where a missing partition
    // is a different error: the trace must be stored as well, not dead-lettered
    await stack.psql(`DELETE FROM ingest.trace_keys WHERE team_id = '${A.id}' AND id = 'second-${tag}';
      DROP TABLE ingest.observations_p${day}; DROP TABLE ingest.traces_p${day}`);
    const traceId = crypto.randomBytes(16).toString('hex');
    const ns = BigInt(start.getTime()) * 1_000_000n;
    const r = await stack.api('POST', '/otlp/v1/traces', { base: stack.url, key: A.key, body: { resourceSpans: [{
      resource: { attributes: [{ key: 'service.name', value: { stringValue: 'dropped' } }] },
      scopeSpans: [{ spans: [{ traceId, spanId: crypto.randomBytes(8).toString('hex'), name: 'n',
        startTimeUnixNano: String(ns), endTimeUnixNano: String(ns + 1_000_000n) }] }],
    }] } });
    assert.equal(r.status, 200, r.text);
    assert.ok(await traceStored(traceId), 'an OTLP trace of that day is stored after its partition was dropped');
    const [[otlpDay]] = await stack.psql(`SELECT to_char(part_time AT TIME ZONE 'UTC', 'YYYYMMDD') FROM ingest.traces
      WHERE team_id = '${A.id}' AND id = '${traceId}'`);
    assert.equal(otlpDay, day, 'in its own day, made again');
  }));

  it('a trace whose day partitions were dropped by hand, its key left behind, is stored in that day again when sent again', T, stack.wrap(async () => {
    // The stored key names the day; the writer must make that day again (as it does for a new
    // trace's day), not put the record back for ever.
    const tag = crypto.randomBytes(3).toString('hex');
    const id = `kept-key-${tag}`;
    const start = new Date(Date.now() - 7 * 86_400_000);
    const day = start.toISOString().slice(0, 10).replaceAll('-', '');
    const send = async (name, startTime) => {
      const r = await stack.api('POST', '/api/v1/traces', {
        base: stack.url, key: A.key, body: { traces: [{ id, project: 'kept', name, start_time: startTime.toISOString() }] },
      });
      assert.equal(r.status, 202, r.text);
    };
    await send('first', start);
    assert.ok(await traceStored(id), 'the first version is stored');
    await stack.psql(`DROP TABLE ingest.observations_p${day}; DROP TABLE ingest.traces_p${day}`);
    await send('second', new Date()); // its key keeps it in the day it was first stored in
    assert.ok(await traceStored(id, (g) => g.body.name === 'second'), 'the second version is stored');
    const rows = await stack.psql(`SELECT to_char(part_time AT TIME ZONE 'UTC', 'YYYYMMDD') FROM ingest.traces
      WHERE team_id = '${A.id}' AND id = '${id}'`);
    assert.deepEqual(rows, [[day]], 'one row, in the day its key names');
  }));

  it('making a new day partition while a long query reads traces holds up no other query', T, stack.wrap(async () => {
    // CREATE TABLE ... PARTITION OF takes ingest.traces' exclusive lock: behind a long reader
    // (an export) it would wait, and every query and writer queued behind it with it.
    const tag = crypto.randomBytes(3).toString('hex');
    const known = `part-lock-${tag}-a`;
    let r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [{ id: known, project: 'plock', name: 'n' }] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(known), 'a trace of today is stored');
    // a day without partitions, within retention (90 days) and not any other test's
    let day;
    for (let k = 20; k < 80; k++) {
      day = new Date(Date.now() - k * 86_400_000);
      const ymd = day.toISOString().slice(0, 10).replaceAll('-', '');
      const [[exists]] = await stack.psql(`SELECT to_regclass('ingest.traces_p${ymd}') IS NOT NULL`);
      if (exists === 'f') break;
    }
    assert.ok(day.getTime() > Date.now() - 80 * 86_400_000, 'a day without partitions');
    const reader = await stack.lockTable('ingest.traces', 6000, { mode: 'ACCESS SHARE' });
    const lockedAt = Date.now();
    const fresh = `part-lock-${tag}-b`;
    r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key,
      body: { traces: [{ id: fresh, project: 'plock', name: 'n', start_time: day.toISOString() }] } });
    assert.equal(r.status, 202, r.text);
    await sleep(1000); // the writer makes the day's partitions meanwhile
    const t0 = Date.now();
    const g = await stack.api('GET', `/api/v1/traces/${known}`, { base: stack.url, key: A.key });
    const took = Date.now() - t0;
    assert.equal(g.status, 200, g.text);
    assert.ok(took < 1500, `a query of the traces waited ${took} ms behind the new partition`);
    assert.ok(Date.now() - lockedAt < 5500, 'the long reader still reads');
    await reader.released;
    assert.ok(await traceStored(fresh), 'the trace of the new day is stored');
    const [[ymdStored]] = await stack.psql(`SELECT to_char(part_time AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM ingest.traces
      WHERE team_id = '${A.id}' AND id = '${fresh}'`);
    assert.equal(ymdStored, day.toISOString().slice(0, 10), 'in its own day');
  }));

  it('PostgreSQL refusing every write (read-only, as a standby or a full disk leaves it): records wait, none is dead-lettered, all are stored once it writes again', T, stack.wrap(async () => {
    // Such an error (SQLSTATE 25006, or one of class 53 for a full disk) says nothing about the records:
    // every one of them fails alone as well, so dead-lettering those that do would throw away
    // every accepted trace for as long as it lasts.
    const tag = crypto.randomBytes(3).toString('hex');
    const ids = [`ro-${tag}-a`, `ro-${tag}-b`];
    const send = (traces) => stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces } });
    const deadReasons = await deadLetterReasons();
    let r = await send([{ id: `ro-${tag}-warm`, project: 'ro', name: 'warm' }]); // the key is cached
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(`ro-${tag}-warm`), 'stored while PostgreSQL writes');
    const readOnly = async (on) => {
      await stack.psqlSuperuser(on ? 'ALTER SYSTEM SET default_transaction_read_only = on'
        : 'ALTER SYSTEM RESET default_transaction_read_only');
      await stack.psqlSuperuser('SELECT pg_reload_conf()');
      const seen = await pollUntil(async () => (await stack.psql('SHOW default_transaction_read_only'))[0][0] === (on ? 'on' : 'off'),
        { timeoutMs: 5000, intervalMs: 50 });
      assert.ok(seen.value, `default_transaction_read_only is ${on ? 'on' : 'off'}`);
    };
    await readOnly(true);
    try {
      r = await send(ids.map((id) => ({ id, project: 'ro', name: 'while read-only', start_time: new Date().toISOString() })));
      assert.equal(r.status, 202, `accepted while PostgreSQL refuses writes: ${r.text}`);
      await sleep(4000); // the writer tries, and fails, several times
      const [[n]] = await stack.psql(`SELECT count(*) FROM ingest.traces WHERE team_id = '${A.id}' AND id LIKE 'ro-${tag}-_'`);
      assert.equal(n, '0', 'nothing could be stored meanwhile');
      assert.deepEqual(deadReasons, [], 'no record was dead-lettered');
    } finally {
      await readOnly(false);
    }
    for (const id of ids) assert.ok(await traceStored(id), `${id} is stored once PostgreSQL writes again`);
    const [[n]] = await stack.psql(`SELECT count(*) FROM ingest.traces WHERE team_id = '${A.id}' AND id LIKE 'ro-${tag}-_'`);
    assert.equal(n, '2', 'each stored once');
    deadReasons.stop();
    assert.deepEqual(deadReasons, [], 'no record was dead-lettered');
  }));

  it('a resend racing a deletion of its trace is stored whole afterwards: no trace row is left without its key', T, stack.wrap(async () => {
    // A deletion locks the trace's key (FOR UPDATE), deletes the trace's rows, then the key, in
    // one transaction. A writer storing a resend of that trace meanwhile must not read the key
    // before the deletion commits and then write the trace into the day the key named: the
    // deletion would take the key away and leave the new trace row without it (unreachable, and
    // a second row once the trace is sent again). Here the deletion is stretched by a pg_sleep
    // between its statements, so that the writer is sure to come in the middle.
    const tag = crypto.randomBytes(3).toString('hex');
    const id = `race-${tag}`;
    const trace = (name) => ({ id, project: 'race', name, start_time: new Date(Date.now() - 3_600_000).toISOString(),
      observations: [{ id: 'gen', type: 'generation' }] });
    let r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [trace('first')] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(id), 'the first version is stored');

    const app = `racing-delete-${tag}`;
    const where = `team_id = '${A.id}' AND id = '${id}'`;
    const deletion = stack.psql(`BEGIN;
      SELECT 1 FROM ingest.trace_keys WHERE ${where} FOR UPDATE;
      DELETE FROM ingest.traces WHERE ${where};
      DELETE FROM ingest.observations WHERE team_id = '${A.id}' AND trace_id = '${id}';
      SELECT pg_sleep(3);
      DELETE FROM ingest.trace_keys WHERE ${where};
      COMMIT`, { appName: app });
    assert.ok(await inPgSleep(app), 'the deletion holds the key and sleeps');

    r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [trace('second')] } });
    assert.equal(r.status, 202, r.text);
    // the writer meets the deletion's lock (waiting, not writing around it)
    const waiting = await pollUntil(async () => Number((await stack.psql(
      `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name <> '${app}'
         AND backend_type = 'client backend'`))[0][0]) > 0, { timeoutMs: 10_000, intervalMs: 50 });
    assert.ok(waiting.value, 'the writer waits for the deletion');
    await deletion;

    assert.ok(await traceStored(id, (g) => g.body.name === 'second'), 'the resend is stored after the deletion');
    const [[rows, keys, orphans, obs]] = await stack.psql(`SELECT
      (SELECT count(*) FROM ingest.traces WHERE ${where}),
      (SELECT count(*) FROM ingest.trace_keys WHERE ${where}),
      (SELECT count(*) FROM ingest.traces t WHERE t.team_id = '${A.id}' AND NOT EXISTS (SELECT 1 FROM ingest.trace_keys k
         WHERE k.team_id = t.team_id AND k.id = t.id AND k.part_time = t.part_time)),
      (SELECT count(*) FROM ingest.observations WHERE team_id = '${A.id}' AND trace_id = '${id}')`);
    assert.deepEqual([rows, keys, orphans, obs], ['1', '1', '0', '1'],
      'one trace row, its key in the same day, no trace row without a key, one observation');
  }));

  it('a writer stopped inside its transaction loses the session after db-idle-tx-timeout, and every trace is still stored once', T, stack.wrap(async () => {
    // A writer that stops between the statements of its transaction (a stopped process, a
    // stalled thread) would hold its locks and snapshot, and the scheduled exports' bound,
    // for as long as it stays stopped. PostgreSQL must end the session; the writer, running
    // again, finds its connection gone and the batch is stored by a later attempt.
    const prefix = `idle-${crypto.randomBytes(3).toString('hex')}`;
    const SIZE = 100;
    const MAX_BATCHES = 400;
    const log = [];
    const accepted = [];
    const deadline = Date.now() + 100_000;
    const pid = stack.readPid('ingest');
    assert.ok(pid && pidAlive(pid), 'ingest runs');
    let next = 0;
    let stop = false;
    const sender = async () => {
      while (!stop && next < MAX_BATCHES) {
        const b = next++;
        accepted.push(...await sendUntilAccepted(A.key, batch(prefix, b * SIZE, SIZE), log, { deadline }));
      }
    };
    const senders = [sender(), sender()];
    let caught = null;
    let tries = 0;
    try {
      await pollUntil(() => accepted.length > 0, { timeoutMs: 20_000, intervalMs: 50 });
      // stop the process until one of its sessions is idle inside a transaction
      while (!caught && next < MAX_BATCHES && Date.now() < deadline - 40_000) {
        tries++;
        process.kill(pid, 'SIGSTOP');
        let rows = [];
        try {
          rows = await stack.psql(`SELECT pid, extract(epoch FROM clock_timestamp() - state_change) * 1000, left(query, 60)
            FROM pg_stat_activity WHERE application_name = 'ingest' AND state = 'idle in transaction'`);
        } finally {
          if (!rows.length) process.kill(pid, 'SIGCONT');
        }
        if (rows.length) caught = { backend: rows[0][0], idleMs: Number(rows[0][1]), query: rows[0][2], at: Date.now() };
        else await sleep(10 + Math.random() * 40);
      }
      assert.ok(caught, `ingest was never caught idle inside a transaction (${tries} tries)`);
      const gone = await pollUntil(async () => (await stack.psql(
        `SELECT count(*) FROM pg_stat_activity WHERE pid = ${caught.backend}`))[0][0] === '0',
      { timeoutMs: IDLE_TX_TIMEOUT_MS + 10_000, intervalMs: 100 });
      assert.ok(gone.value, `PostgreSQL ended backend ${caught.backend}, idle in a transaction of the stopped writer`);
      const endedAfterMs = Date.now() - caught.at + caught.idleMs;
      assert.ok(endedAfterMs >= IDLE_TX_TIMEOUT_MS - 200, `not before the timeout: ${endedAfterMs} ms`);
      process.stderr.write(`[durability] caught idle in a transaction (after: ${caught.query}) after ${tries} tries; session ended ${Math.round(endedAfterMs)} ms into the idle time\n`);
    } finally {
      stop = true;
      process.kill(pid, 'SIGCONT');
    }
    await Promise.all(senders);
    assert.ok(pidAlive(pid), 'the same ingest process runs on');
    assert.equal(new Set(accepted).size, next * SIZE, `every batch sent was accepted (answers: ${summarize(log)})`);
    await assertStoredExactlyOnce(A.id, prefix, accepted, next * SIZE, STORE_AFTER_KILL_TIMEOUT_MS);
    const ready = await pollUntil(async () => (await stack.api('GET', '/readyz', { base: stack.env.EVALBUS_INGEST_URL })).status === 200,
      { timeoutMs: 15_000, intervalMs: 200 });
    assert.ok(ready.value, 'ingest is ready again');
  }));

  it('PostgreSQL stopped for 10 s during ingestion: HTTP keeps answering 202 and every trace is stored exactly once afterwards', T, stack.wrap(async () => {
    const prefix = `pg-${crypto.randomBytes(3).toString('hex')}`;
    const SIZE = 50;
    assert.ok(stack.env.EVALBUS_STACK_PGDATA && fs.existsSync(stack.env.EVALBUS_STACK_PGDATA),
      `stack.env names the PostgreSQL data folder (${stack.env.EVALBUS_STACK_PGDATA})`);
    // the cluster may live outside the state folder (a symlink): the postgres user needs the real path
    const pgdata = fs.realpathSync(stack.env.EVALBUS_STACK_PGDATA);
    const accepted = [];
    const log = [];
    let b = 0;
    const sendOne = async (what) => {
      const at = Date.now();
      accepted.push(...await sendAccepted(A.key, batch(prefix, b * SIZE, SIZE), `${what}: batch ${b++}`));
      log.push({ at, what });
    };
    // before: two batches, stored
    await sendOne('before the outage');
    await sendOne('before the outage');
    const pre = await pollUntil(async () => (await stored(A.id, prefix)).distinct === 2 * SIZE, { timeoutMs: 5000, intervalMs: 200 });
    assert.ok(pre.value, 'the first batches are stored before PostgreSQL stops');

    // A project-restricted key's resend of another project's trace: refused at the door while
    // PostgreSQL answers, taken while it is down (the stream buffers), and then refused by the
    // writer (a dead letter), which leaves the stored trace as it was.
    const sfx = crypto.randomBytes(3).toString('hex');
    const only = (await stack.createKey(A.key, { name: `only-${sfx}`, scopes: ['traces:write'], project: `only-${sfx}` })).key;
    const theirs = `${prefix}-theirs`;
    const sendAs = (key, traces) => stack.api('POST', '/api/v1/traces', { base: stack.url, key, body: { traces }, timeoutMs: 20_000 });
    let r = await sendAs(A.key, [{ id: theirs, project: `theirs-${sfx}`, name: 'original' }]);
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(theirs), 'the other project\'s trace is stored');
    r = await sendAs(only, [{ id: theirs, name: 'taken over' }]);
    assert.equal(r.status, 400, `refused at the door while PostgreSQL answers: ${r.text}`);
    assert.equal(r.body.rejected[0].error.code, 'forbidden', r.text);
    const deadReasons = await deadLetterReasons();

    const stop = await asPostgres(`${PG_BIN}/pg_ctl`, ['-D', pgdata, 'stop', '-m', 'fast', '-w', '-t', '30'], 40_000);
    assert.equal(stop.code, 0, `pg_ctl stop: ${stop.stdout}${stop.stderr}`);
    const stoppedAt = Date.now();
    let down = true;
    try {
      r = await sendAs(only, [{ id: theirs, name: 'taken over' }]);
      assert.equal(r.status, 202, `taken while PostgreSQL is down (its credential is cached): ${r.text}`);
      // during the outage: a batch about every 700 ms for 10 s, each must be 202
      while (Date.now() - stoppedAt < 10_000) {
        const t = Date.now();
        await sendOne(`${((t - stoppedAt) / 1000).toFixed(1)} s into the outage`);
        await sleep(Math.max(0, 700 - (Date.now() - t)));
      }
      const st = await asPostgres(`${PG_BIN}/pg_ctl`, ['-D', pgdata, 'status'], 10_000);
      assert.notEqual(st.code, 0, 'PostgreSQL was really down during the outage');
    } finally {
      const up = await stack.stackCmd('up', 90_000);
      down = up.code !== 0;
      assert.equal(up.code, 0, `scripts/stack up started PostgreSQL again: ${up.stdout}${up.stderr}`);
    }
    assert.ok(!down);
    const during = log.filter((e) => e.at > stoppedAt).length;
    assert.ok(during >= 8, `batches were sent during the outage (${during})`);
    await sendOne('after the outage');
    process.stderr.write(`[durability] PostgreSQL outage: ${accepted.length} traces in ${b} batches, ${during} batches during the outage\n`);
    const ms = await assertStoredExactlyOnce(A.id, prefix, accepted, b * SIZE);
    process.stderr.write(`[durability] all ${b * SIZE} stored ${ms} ms after the last 2xx\n`);
    const refused = await pollUntil(() => deadReasons.some((x) => x.includes(`trace ${theirs} is stored in project 'theirs-${sfx}'`)),
      { timeoutMs: 15_000, intervalMs: 100 });
    deadReasons.stop();
    assert.ok(refused.value, `the writer dead-letters the restricted key's record: ${JSON.stringify(deadReasons)}`);
    assert.ok(await traceStored(theirs, (g) => g.body.project === `theirs-${sfx}` && g.body.name === 'original'),
      'the other project\'s trace is untouched');
  }));

  it('nats-server killed with SIGKILL while its stream holds acknowledged traces that PostgreSQL (down) has not stored: started again, every one is stored exactly once', T, stack.wrap(async () => {
    const prefix = `jsk-${crypto.randomBytes(3).toString('hex')}`;
    const SIZE = 50;
    const BATCHES = 6;
    const pgdata = fs.realpathSync(stack.env.EVALBUS_STACK_PGDATA);
    const natsPort = Number(new URL(stack.env.EVALBUS_NATS_URL).port);
    const natsPid = stack.readPid('nats');
    assert.ok(natsPid && pidAlive(natsPid), `nats-server runs (pid file ${stack.pidFile('nats')})`);
    const accepted = [];
    const send = async (from) => accepted.push(...await sendAccepted(A.key, batch(prefix, from, SIZE), `batch at ${from}`));
    // the first batch is stored, and its credential cached, before PostgreSQL stops
    await send(0);
    const pre = await pollUntil(async () => (await stored(A.id, prefix)).distinct === SIZE, { timeoutMs: 5000, intervalMs: 100 });
    assert.ok(pre.value, 'the first batch is stored before PostgreSQL stops');
    const stop = await asPostgres(`${PG_BIN}/pg_ctl`, ['-D', pgdata, 'stop', '-m', 'fast', '-w', '-t', '30'], 40_000);
    assert.equal(stop.code, 0, `pg_ctl stop: ${stop.stdout}${stop.stderr}`);
    let up = null;
    try {
      // acknowledged (202): from here on their only copy is the INGEST stream's
      for (let b = 1; b < BATCHES; b++) await send(b * SIZE);
      const st = await asPostgres(`${PG_BIN}/pg_ctl`, ['-D', pgdata, 'status'], 10_000);
      assert.notEqual(st.code, 0, 'PostgreSQL is down: nothing sent since is stored yet');
      process.kill(natsPid, 'SIGKILL');
      const gone = await pollUntil(() => connectionRefused(natsPort, 500), { timeoutMs: 5000, intervalMs: 50 });
      assert.ok(gone.value, `nats-server (port ${natsPort}) still accepts connections after SIGKILL`);
    } finally {
      up = await stack.stackCmd('up', 90_000);
    }
    assert.equal(up.code, 0, `scripts/stack up started nats-server and PostgreSQL again: ${up.stdout}${up.stderr}`);
    assert.notEqual(stack.readPid('nats'), natsPid, 'a new nats-server process runs');
    // what the writers had fetched when the server died comes back after the AckWait
    const ms = await assertStoredExactlyOnce(A.id, prefix, accepted, BATCHES * SIZE, STORE_AFTER_KILL_TIMEOUT_MS);
    process.stderr.write(`[durability] nats-server SIGKILL with ${(BATCHES - 1) * SIZE} traces unstored: all stored ${ms} ms after the restart\n`);
    // intake goes on as before
    await send(BATCHES * SIZE);
    await assertStoredExactlyOnce(A.id, prefix, accepted, (BATCHES + 1) * SIZE);
  }));

  it('PostgreSQL hung (SIGSTOP): the project check of a restricted key gives up within its limit, and no other batch waits for it', T, stack.wrap(async () => {
    const sfx = crypto.randomBytes(3).toString('hex');
    const only = (await stack.createKey(A.key, { name: `hung-${sfx}`, scopes: ['traces:write'], project: `hung-${sfx}` })).key;
    const send = (key, id) => stack.api('POST', '/api/v1/traces', { base: stack.url, key, body: { traces: [{ id, name: 'x' }] }, timeoutMs: 20_000 });
    const checks = async (result) => {
      const m = await stack.api('GET', '/metrics', { base: stack.env.EVALBUS_INGEST_URL });
      const line = m.text.split('\n').find((l) => l.startsWith(`evalbus_ingest_project_checks_total{result="${result}"}`));
      return line ? Number(line.split(' ').pop()) : 0;
    };
    // warm: both credentials cached, a pooled connection idle
    for (const [key, id] of [[only, `hung-${sfx}-w1`], [A.key, `hung-${sfx}-w2`]]) assert.equal((await send(key, id)).status, 202);
    const failedBefore = await checks('failed');
    const pm = stack.readPid('postgres');
    const pids = [pm, ...fs.readFileSync(`/proc/${pm}/task/${pm}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)];
    for (const p of pids) process.kill(p, 'SIGSTOP');
    try {
      const t0 = Date.now();
      const restricted = [send(only, `hung-${sfx}-r1`), send(only, `hung-${sfx}-r2`)];
      await sleep(200);
      const t1 = Date.now();
      const u = await send(A.key, `hung-${sfx}-u1`);
      const uMs = Date.now() - t1;
      assert.equal(u.status, 202, u.text);
      assert.ok(uMs < 1500, `another key's batch waits for nobody's check: answered after ${uMs} ms`);
      const rs = await Promise.all(restricted);
      const rMs = Date.now() - t0;
      assert.deepEqual(rs.map((r) => r.status), [202, 202], 'the restricted key\'s batches are taken when the check cannot answer');
      assert.ok(rMs < 8000, `the check gave up within its limit: both answered after ${rMs} ms`);
      assert.ok(await checks('failed') > failedBefore, 'the failed check is counted');
    } finally {
      for (const p of pids) {
        try { process.kill(p, 'SIGCONT'); } catch { /* gone */ }
      }
    }
    for (const id of ['r1', 'r2', 'u1']) assert.ok(await traceStored(`hung-${sfx}-${id}`), `${id} is stored once PostgreSQL runs again`);
  }));

  it('NATS killed: ingest refuses at once with 503, what it refused is never stored after NATS returns, and intake resumes', T, stack.wrap(async () => {
    const refusedProject = `natsdown-${crypto.randomBytes(3).toString('hex')}`;
    const afterProject = `natsback-${crypto.randomBytes(3).toString('hex')}`;
    const ingestUrl = stack.env.EVALBUS_INGEST_URL;
    const natsPort = Number(new URL(stack.env.EVALBUS_NATS_URL).port);
    const pid = stack.readPid('nats');
    assert.ok(pid && pidAlive(pid), `nats-server runs (pid file ${stack.pidFile('nats')})`);
    // id-less traces: a client sending one again after a 503 gets a new id for it, so a refused
    // trace that was stored anyway would be stored twice
    const idless = (project, i) => ({ project, name: `refused-${i}`, model: 'gpt-4o-mini', output: `answer ${i}` });
    // a stored trace to delete while NATS is away
    const kept = `natsdel-${crypto.randomBytes(3).toString('hex')}`;
    const k = await stack.api('POST', '/api/v1/traces', { base: ingestUrl, key: A.key, body: { traces: [{ id: kept, project: 'natsdel', name: 'n' }] } });
    assert.equal(k.status, 202, k.text);
    assert.ok(await traceStored(kept), 'the trace to delete is stored');
    // the key is verified (over NATS) and cached for auth-cache-ttl (10 s) before NATS goes
    assert.equal((await stack.api('GET', '/api/v1/traces?limit=1', { base: ingestUrl, key: A.key })).status, 200);
    process.kill(pid, 'SIGKILL');
    let restarted = false;
    try {
      const gone = await pollUntil(() => connectionRefused(natsPort, 500), { timeoutMs: 5000, intervalMs: 50 });
      assert.ok(gone.value, `nats-server (port ${natsPort}) still accepts connections after SIGKILL`);
      const notReady = await pollUntil(async () => {
        const r = await stack.api('GET', '/readyz', { base: ingestUrl });
        return r.status === 503 && r.body?.checks?.nats?.ok === false;
      }, { timeoutMs: 5000, intervalMs: 50 });
      assert.ok(notReady.value, 'ingest /readyz answers 503 with the nats check failing');
      for (let i = 0; i < 5; i++) {
        const t = Date.now();
        const res = await stack.api('POST', '/api/v1/traces', { base: ingestUrl, key: A.key, body: { traces: [idless(refusedProject, i)] }, timeoutMs: 20_000 });
        const ms = Date.now() - t;
        assert.equal(res.status, 503, `with NATS down a batch answers 503, not ${res.status}: ${res.text.slice(0, 300)}`);
        assert.equal(res.body?.error?.code, 'unavailable');
        assert.equal(res.headers.get('retry-after'), '1', `Retry-After: ${res.text}`);
        assert.deepEqual(res.body.accepted, []);
        assert.equal(res.body.rejected[0].error.message, 'the ingest stream did not take it; retry', 'never sent');
        // the refusal does not wait for the publish timeout (5 s): nothing was handed to NATS
        assert.ok(ms < 4000, `the refusal came after ${ms} ms, as if the record had been sent`);
      }
      // a credential not cached cannot be verified meanwhile: 503 with Retry-After too
      const other = await stack.api('POST', '/api/v1/traces', { base: ingestUrl, key: `${A.key.slice(0, -4)}AAAA`, body: { traces: [idless(refusedProject, 9)] } });
      assert.equal(other.status, 503, `an unverifiable key: ${other.status} ${other.text.slice(0, 300)}`);
      assert.equal(other.headers.get('retry-after'), '1', `Retry-After on ${other.text}`);
      const metrics = await stack.api('GET', '/metrics', { base: ingestUrl });
      const line = metrics.text.split('\n').find((l) => l.startsWith('evalbus_ingest_refused_nats_down_total '));
      assert.ok(line && Number(line.split(' ').pop()) >= 5, `evalbus_ingest_refused_nats_down_total counts the refusals: ${line}`);
      // a deletion needs the stream's position (its tombstone): 503, and nothing is deleted
      const del = await stack.api('DELETE', `/api/v1/traces/${kept}`, { base: ingestUrl, key: A.key, timeoutMs: 20_000 });
      assert.equal(del.status, 503, `a deletion with NATS down: ${del.status} ${del.text.slice(0, 300)}`);
      assert.match(del.body.error.message, /stream's position/);
      assert.equal((await stack.api('GET', `/api/v1/traces/${kept}`, { base: ingestUrl, key: A.key })).status, 200, 'the trace is still there');
    } finally {
      const up = await stack.stackCmd('up', 90_000);
      restarted = up.code === 0;
      assert.equal(up.code, 0, `scripts/stack up started nats-server again: ${up.stdout}${up.stderr}`);
    }
    assert.ok(restarted);
    const ready = await pollUntil(async () => (await stack.api('GET', '/readyz', { base: ingestUrl })).status === 200,
      { timeoutMs: 15_000, intervalMs: 100 });
    assert.ok(ready.value, 'ingest is ready again once NATS is back');
    // intake resumes; once this later trace is stored, anything the client library had kept
    // from the outage would have been sent before it
    const res = await stack.api('POST', '/api/v1/traces', { base: ingestUrl, key: A.key, body: { traces: [idless(afterProject, 0)] } });
    assert.equal(res.status, 202, `after NATS is back: ${res.status} ${res.text.slice(0, 300)}`);
    assert.ok(await traceStored(res.body.accepted[0]), 'the trace sent after the outage is stored');
    const del = await stack.api('DELETE', `/api/v1/traces/${kept}`, { base: ingestUrl, key: A.key });
    assert.equal(del.status, 200, `the deletion once NATS is back: ${del.text.slice(0, 300)}`);
    await sleep(1000);
    assert.deepEqual(await stored(A.id, refusedProject), { rows: 0, distinct: 0, obs: 0 },
      'no trace refused during the outage was stored');
  }));

  it('SIGTERM while batches wait for JetStream (NATS hung): each is answered 503 before the replica exits 0', T, stack.wrap(async () => {
    const project = `hung-${crypto.randomBytes(3).toString('hex')}`;
    // a drain shorter than the publish timeout: the batches outlive the HTTP drain
    const replica = await stack.spawnService('ingest', {
      EVALBUS_WRITER_THREADS: '0', EVALBUS_SHUTDOWN_DELAY: '0s', EVALBUS_SHUTDOWN_GRACE: '200ms', EVALBUS_PUBLISH_TIMEOUT: '2s',
    });
    assert.equal((await stack.api('GET', '/api/v1/traces?limit=1', { base: replica.url, key: A.key })).status, 200);
    // a kept-alive connection, open before the signal, used again after the drain
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    assert.equal((await keptAlive(agent, `${replica.url}/api/v1/traces?limit=1`, A.key)).status, 200);
    const natsPid = stack.readPid('nats');
    assert.ok(natsPid && pidAlive(natsPid), 'nats-server runs');
    process.kill(natsPid, 'SIGSTOP');
    let results;
    let exit;
    let late;
    try {
      const sends = Array.from({ length: 3 }, (_, i) => stack.api('POST', '/api/v1/traces', {
        base: replica.url, key: A.key, timeoutMs: 20_000,
        body: { traces: [{ id: `${project}-${i}`, project, name: 'hung', output: `answer ${i}` }] },
      }).catch((err) => ({ error: err })));
      await sleep(300); // handed to the library, waiting for acknowledgements
      replica.proc.kill('SIGTERM');
      const drained = await pollUntil(() => /drained; exiting/.test(fs.readFileSync(replica.logFile, 'utf8')),
        { timeoutMs: 5000, intervalMs: 20 });
      assert.ok(drained.value, 'the HTTP drain ended while the batches still wait');
      late = await keptAlive(agent, `${replica.url}/api/v1/traces?limit=1`, A.key);
      results = await Promise.all(sends);
      exit = await Promise.race([replica.exited, sleep(15_000, 'timeout')]);
    } finally {
      process.kill(natsPid, 'SIGCONT');
    }
    for (const [i, r] of results.entries()) {
      assert.ok(!r.error, `batch ${i} got no answer: ${r.error?.message} ${r.error?.cause?.code ?? ''}`);
      assert.equal(r.status, 503, `batch ${i}: ${r.status} ${r.text?.slice(0, 300)}`);
      assert.equal(r.body?.rejected?.[0]?.error?.code, 'unavailable', r.text);
      // sent, and not acknowledged: the caller is told it may still be stored
      assert.match(r.body.rejected[0].error.message, /may still be stored: send it again with the same id/);
    }
    // what comes in after the drain is not served: the process is on its way out
    assert.equal(late.status, 503, `a request on a kept-alive connection after the drain: ${JSON.stringify(late)}`);
    assert.equal(late.headers.connection, 'close');
    assert.match(late.text, /shutting down/);
    agent.destroy();
    assert.notEqual(exit, 'timeout', 'the replica exited within 15 s of SIGTERM');
    const log = fs.readFileSync(replica.logFile, 'utf8');
    assert.deepEqual(exit, { code: 0, signal: null }, `the replica exits 0 (log: ${log.slice(-3000)})`);
    assert.match(log, /waiting for JetStream to acknowledge \d+ batches/);
  }));
  // Last in this file: a consumer made again delivers the whole stream again.
  // evalbus_ingest_deleted_records_total of the stack's ingest
  const deletedRecords = async () => {
    const m = await stack.api('GET', '/metrics', { base: stack.env.EVALBUS_INGEST_URL });
    const line = m.text.split('\n').find((l) => l.startsWith('evalbus_ingest_deleted_records_total '));
    return line ? Number(line.split(' ').pop()) : 0;
  };
  // until the writer consumer has every record of the stream delivered and acknowledged
  const writersCaughtUp = async (jsm) => {
    let last = null;
    const done = (await pollUntil(async () => {
      const si = await jsm.streams.info('INGEST');
      const ci = await jsm.consumers.info('INGEST', 'ingest-writer').catch(() => null);
      last = { last_seq: si.state.last_seq, pending: ci?.num_pending, ack_pending: ci?.num_ack_pending, ack_floor: ci?.ack_floor };
      return ci && ci.num_pending === 0 && ci.num_ack_pending === 0 && ci.ack_floor.stream_seq >= si.state.last_seq;
    }, { timeoutMs: 30_000, intervalMs: 200 })).value;
    assert.ok(done, `the writers take every record of the stream within 30 s: ${JSON.stringify(last)}`);
  };

  it('a batch waiting longer than the AckWait (10 s) for a lock is kept in progress, not delivered again to another writer meanwhile', T, stack.wrap(async () => {
    const id = `slow-${crypto.randomBytes(3).toString('hex')}`;
    const jsm = await (await stack.nats()).jetstreamManager();
    await writersCaughtUp(jsm);
    // no writer can insert a key for 16 s
    const lock = await stack.lockTable('ingest.trace_keys', 16_000, { mode: 'SHARE' });
    const r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [{ id, project: 'slow', name: 'n' }] } });
    assert.equal(r.status, 202, r.text);
    const fetched = await pollUntil(async () => (await jsm.consumers.info('INGEST', 'ingest-writer')).num_ack_pending === 1,
      { timeoutMs: 5000, intervalMs: 50 });
    assert.ok(fetched.value, 'a writer has the record');
    await sleep(13_000); // past the AckWait, the lock still held
    const ci = await jsm.consumers.info('INGEST', 'ingest-writer');
    assert.equal(ci.num_redelivered, 0, `the record was not delivered again while its batch waited: ${JSON.stringify({ ack_pending: ci.num_ack_pending, redelivered: ci.num_redelivered })}`);
    assert.equal(ci.num_ack_pending, 1);
    await lock.released;
    assert.ok(await traceStored(id), 'stored once the lock is gone');
    await writersCaughtUp(jsm);
  }));

  /** Runs body(replica) with the stack's ingest (its writers) stopped and a replica without
   * writers to talk to; the writers go on (SIGCONT) when body calls resume(), or at the end. */
  const withWritersStopped = async (env, body) => {
    const replica = await stack.spawnService('ingest', { EVALBUS_WRITER_THREADS: '0', ...env });
    const pid = stack.readPid('ingest');
    let stopped = true;
    const resume = () => {
      if (stopped) process.kill(pid, 'SIGCONT');
      stopped = false;
    };
    process.kill(pid, 'SIGSTOP');
    try {
      await body(replica, resume);
    } finally {
      resume();
      replica.proc.kill('SIGTERM');
      await replica.exited;
    }
  };

  it('a record held up past the AckWait in the one-by-one retry of a failed batch is kept in progress too, not delivered again', T, stack.wrap(async () => {
    const sfx = crypto.randomBytes(3).toString('hex');
    const theirs = `theirs-${sfx}`; // sorts before good: the retry settles it first
    const good = `zz-good-${sfx}`;
    const only = (await stack.createKey(A.key, { name: `retry-${sfx}`, scopes: ['traces:write'], project: `only-${sfx}` })).key;
    const jsm = await (await stack.nats()).jetstreamManager();
    // today's partition exists (what the writer COPYs into below)
    let r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [{ id: `today-${sfx}`, project: 'retry', name: 'n', start_time: new Date().toISOString() }] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(`today-${sfx}`));
    await writersCaughtUp(jsm);
    const before = (await jsm.consumers.info('INGEST', 'ingest-writer')).num_redelivered;
    const deadReasons = await deadLetterReasons();
    let lock = null;
    await withWritersStopped({}, async (replica) => {
      // both go into the stream while no writer runs, after the stopped writers' last pull
      // requests have expired (250 ms): the first fetch takes them together
      await sleep(1000);
      const at = new Date().toISOString();
      r = await stack.api('POST', '/api/v1/traces', { base: replica.url, key: only, body: { traces: [
        { id: theirs, name: 'taken over', start_time: at }, { id: good, name: 'good', start_time: at }] } });
      assert.equal(r.status, 202, `the id is free when the intake looks: ${r.text}`);
      // then another project takes the id (as a writer of another replica could meanwhile): the
      // batch fails on the restricted key's record, and the writer retries it one by one
      await stack.psqlSuperuser(`INSERT INTO ingest.trace_keys (team_id, id, part_time) VALUES ('${A.id}', '${theirs}', now());
        INSERT INTO ingest.traces (team_id, part_time, id, project, name, source, stream_seq)
          SELECT team_id, part_time, id, 'theirs-${sfx}', 'original', 'json', 0 FROM ingest.trace_keys
          WHERE team_id = '${A.id}' AND id = '${theirs}'`);
      // no trace row can be written for 16 s; reading them (the batch's project check) can
      lock = await stack.lockTable('ingest.traces', 16_000, { mode: 'SHARE' });
    });
    // the batch failed on the taken id before writing a row; in the retry, the good record waits
    const waiting = await pollUntil(async () => (await stack.psql(
      "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name NOT LIKE 'test-%'" +
      " AND pid <> pg_backend_pid()"))[0][0] === '1',
    { timeoutMs: 10_000, intervalMs: 100 });
    assert.ok(waiting.value, 'the one-by-one retry of the good record waits for the lock');
    const refused = await pollUntil(() => deadReasons.some((x) => x.includes(`trace ${theirs} is stored in project 'theirs-${sfx}'`)),
      { timeoutMs: 5000, intervalMs: 100 });
    assert.ok(refused.value, `the taken id was dead-lettered first: ${JSON.stringify(deadReasons)}`);
    await sleep(12_000); // past the AckWait (10 s), the lock still held
    const ci = await jsm.consumers.info('INGEST', 'ingest-writer');
    assert.equal(ci.num_redelivered - before, 0, `the waiting record was not delivered again: ${JSON.stringify({ ack_pending: ci.num_ack_pending, redelivered: ci.num_redelivered })}`);
    assert.equal(ci.num_ack_pending, 1, 'only the waiting record is outstanding');
    await lock.released;
    deadReasons.stop();
    assert.ok(await traceStored(good, (g) => g.body.project === `only-${sfx}`), 'stored once the lock is gone');
    await writersCaughtUp(jsm);
    const [[n]] = await stack.psql(`SELECT count(*) FROM ingest.traces WHERE team_id = '${A.id}' AND id = '${good}'`);
    assert.equal(n, '1', 'stored once');
    assert.ok(await traceStored(theirs, (g) => g.body.project === `theirs-${sfx}` && g.body.name === 'original'), 'the taken trace is untouched');
  }));

  it('a deletion waits for the writers to store what was accepted before it: a version on its way is deleted with the trace; one sent after the deletion is stored', T, stack.wrap(async () => {
    const id = `gone-${crypto.randomBytes(3).toString('hex')}`;
    const trace = (name) => ({ id, project: 'gone', name, observations: [{ id: 'gen', type: 'generation' }] });
    const where = `team_id = '${A.id}' AND id = '${id}'`;
    let r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [trace('first')] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(id), 'the first version is stored');

    await withWritersStopped({}, async (replica, resume) => {
      r = await stack.api('POST', '/api/v1/traces', { base: replica.url, key: A.key, body: { traces: [trace('second')] } });
      assert.equal(r.status, 202, r.text);
      let answered = null;
      const deletion = stack.api('DELETE', `/api/v1/traces/${id}`, { base: replica.url, key: A.key })
        .then((res) => { answered = res; return res; });
      await sleep(1500);
      assert.equal(answered, null, `the deletion waits while the second version is not stored: ${answered?.status} ${answered?.text}`);
      resume();
      r = await deletion;
      assert.equal(r.status, 200, r.text);
    });
    r = await stack.api('GET', `/api/v1/traces/${id}`, { base: stack.url, key: A.key });
    assert.equal(r.status, 404, `the deleted trace stays deleted: ${r.text.slice(0, 200)}`);
    const [[rows, keys, obs, tombstones]] = await stack.psql(`SELECT (SELECT count(*) FROM ingest.traces WHERE ${where}),
      (SELECT count(*) FROM ingest.trace_keys WHERE ${where}),
      (SELECT count(*) FROM ingest.observations WHERE team_id = '${A.id}' AND trace_id = '${id}'),
      (SELECT count(*) FROM ingest.trace_tombstones WHERE ${where})`);
    assert.deepEqual([rows, keys, obs, tombstones], ['0', '0', '0', '1'], 'no trace row, key or observation left behind; its tombstone');

    // sent after the deletion: later in the stream, so stored
    r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [trace('third')] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(id, (g) => g.body.name === 'third'), 'the version sent after the deletion is stored');
  }));

  it('a trace accepted but not stored yet is found by a deletion by id and by filter, and does not come back', T, stack.wrap(async () => {
    const tag = crypto.randomBytes(3).toString('hex');
    const byId = `unstored-${tag}`;
    const project = `unstored-${tag}`;
    const inFilter = [`${project}-a`, `${project}-b`];
    const jsm = await (await stack.nats()).jetstreamManager();
    await writersCaughtUp(jsm);
    // two deletions wait at once: three API threads (api-threads - 1 may wait)
    await withWritersStopped({ EVALBUS_API_THREADS: '3' }, async (replica, resume) => {
      const r = await stack.api('POST', '/api/v1/traces', { base: replica.url, key: A.key, body: { traces: [
        { id: byId, project: 'unstored', name: 'n', observations: [{ id: 'gen', type: 'generation' }] },
        ...inFilter.map((id) => ({ id, project, name: 'n' }))] } });
      assert.equal(r.status, 202, r.text);
      const one = stack.api('DELETE', `/api/v1/traces/${byId}`, { base: replica.url, key: A.key });
      const many = stack.api('POST', '/api/v1/traces/delete', { base: replica.url, key: A.key, body: { filter: { project } } });
      await sleep(1000);
      resume();
      const [d1, d2] = await Promise.all([one, many]);
      assert.equal(d1.status, 200, `found though none of its records was stored when it was asked: ${d1.text}`);
      assert.deepEqual(d1.body, { id: byId, deleted: true });
      assert.equal(d2.status, 200, d2.text);
      assert.deepEqual(d2.body, { deleted: 2 }, 'the filter finds both');
    });
    await writersCaughtUp(jsm);
    for (const id of [byId, ...inFilter]) {
      const g = await stack.api('GET', `/api/v1/traces/${id}`, { base: stack.url, key: A.key });
      assert.equal(g.status, 404, `${id} stays deleted: ${g.text.slice(0, 200)}`);
    }
    const [[rows, keys]] = await stack.psql(`SELECT (SELECT count(*) FROM ingest.traces WHERE team_id = '${A.id}' AND id LIKE 'unstored-${tag}%'),
      (SELECT count(*) FROM ingest.trace_keys WHERE team_id = '${A.id}' AND id LIKE 'unstored-${tag}%')`);
    assert.deepEqual([rows, keys], ['0', '0'], 'no row and no key of them');
  }));

  it('a deletion the writers keep waiting past delete-wait answers 503 with Retry-After and deletes nothing, and leaves an API thread to other requests; the retry deletes', T, stack.wrap(async () => {
    const id = `behind-${crypto.randomBytes(3).toString('hex')}`;
    const trace = (name) => ({ id, project: 'behind', name });
    let r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [trace('first')] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(id), 'the first version is stored');
    await withWritersStopped({ EVALBUS_DELETE_WAIT: '1s' }, async (replica) => {
      r = await stack.api('POST', '/api/v1/traces', { base: replica.url, key: A.key, body: { traces: [trace('second')] } });
      assert.equal(r.status, 202, r.text);
      const started = Date.now();
      const waiting = stack.api('DELETE', `/api/v1/traces/${id}`, { base: replica.url, key: A.key });
      await sleep(300);
      // the replica's two API threads: one deletion may wait, a second is refused at once, and
      // queries are served meanwhile
      const asked = Date.now();
      const other = await stack.api('POST', '/api/v1/traces/delete', { base: replica.url, key: A.key, body: { filter: { project: 'behind' } } });
      assert.equal(other.status, 503, other.text);
      assert.match(other.body.error.message, /1 deletions are under way, as many as run at a time \(api-threads - 1\); nothing was deleted/);
      const list = await stack.api('GET', '/api/v1/traces?project=behind', { base: replica.url, key: A.key });
      assert.equal(list.status, 200, list.text);
      assert.ok(Date.now() - asked < 600, `neither waited for the deletion: ${Date.now() - asked} ms`);
      r = await waiting;
      assert.equal(r.status, 503, r.text);
      assert.ok(Date.now() - started >= 900, 'it waited delete-wait first');
      assert.equal(r.body.error.code, 'unavailable');
      assert.match(r.body.error.message, /delete-wait \(1000 ms; still to store: 1\); nothing was deleted/);
      assert.equal(r.headers.get('retry-after'), '1');
    });
    assert.ok(await traceStored(id, (g) => g.body.name === 'second'), 'nothing was deleted: the second version is stored');
    const [[tombstones]] = await stack.psql(`SELECT count(*) FROM ingest.trace_tombstones WHERE team_id = '${A.id}' AND id = '${id}'`);
    assert.equal(tombstones, '0', 'and no tombstone left');
    r = await stack.api('DELETE', `/api/v1/traces/${id}`, { base: stack.url, key: A.key });
    assert.equal(r.status, 200, `the retry: ${r.text}`);
    assert.equal((await stack.api('GET', `/api/v1/traces/${id}`, { base: stack.url, key: A.key })).status, 404);
  }));

  it('a deletion that waits for a lock keeps its API thread: a second deletion is 503 at once and queries are served meanwhile', T, stack.wrap(async () => {
    // The writers are caught up, so neither deletion waits for them; the first waits for a
    // trace key another session holds. It must count against api-threads - 1 as a deletion
    // waiting for the writers does, or two such deletions take both API threads and every
    // query waits for them.
    const tag = crypto.randomBytes(3).toString('hex');
    const [held, other] = [`held-${tag}`, `other-${tag}`];
    let r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key,
      body: { traces: [{ id: held, project: `held-${tag}`, name: 'n' }, { id: other, project: `held-${tag}`, name: 'n' }] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(held) && await traceStored(other));
    const app = `holding-${tag}`;
    const holder = stack.psql(`BEGIN; SELECT 1 FROM ingest.trace_keys WHERE team_id = '${A.id}' AND id = '${held}' FOR SHARE;
      SELECT pg_sleep(3); COMMIT`, { appName: app });
    assert.ok(await inPgSleep(app), 'the other session holds the key');
    let firstDone = false;
    const first = stack.api('DELETE', `/api/v1/traces/${held}`, { base: stack.url, key: A.key }).then((x) => { firstDone = true; return x; });
    assert.ok((await pollUntil(async () => (await stack.psql(
      `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%trace_keys%FOR UPDATE%'`))[0][0] === '1',
    { timeoutMs: 5000, intervalMs: 50 })).value, 'the first deletion waits for the key');
    const second = await stack.api('DELETE', `/api/v1/traces/${other}`, { base: stack.url, key: A.key });
    assert.equal(second.status, 503, second.text);
    assert.match(second.body.error.message, /deletions are under way/);
    assert.equal(second.headers.get('retry-after'), '1');
    const list = await stack.api('GET', `/api/v1/traces?project=held-${tag}`, { base: stack.url, key: A.key });
    assert.equal(list.status, 200, list.text);
    assert.equal(firstDone, false, 'the query was answered while the first deletion still waited');
    await holder;
    r = await first;
    assert.equal(r.status, 200, `the first deletion goes on once the key is free: ${r.text}`);
    r = await stack.api('DELETE', `/api/v1/traces/${other}`, { base: stack.url, key: A.key });
    assert.equal(r.status, 200, `the retry of the second: ${r.text}`);
  }));

  it('a version stored while a deletion of its trace waits for the key is not brought back when the stream is delivered again', T, stack.wrap(async () => {
    // The deletion's tombstone must cover every record whose content the deletion removed: a
    // version taken into the stream and stored while the deletion waited for the trace's key
    // (here held FOR KEY SHARE by another session, as a writer or a review holds it) is deleted
    // with the trace, and a consumer made again, delivering it again, must not store it again.
    const tag = crypto.randomBytes(3).toString('hex');
    const id = `waited-${tag}`;
    const trace = (name) => ({ id, project: 'waited', name, observations: [{ id: 'gen', type: 'generation' }] });
    let r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [trace('first')] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(id), 'the first version is stored');
    const app = `key-share-${tag}`;
    const where = `team_id = '${A.id}' AND id = '${id}'`;
    const holder = stack.psql(`BEGIN; SELECT 1 FROM ingest.trace_keys WHERE ${where} FOR KEY SHARE;
      SELECT pg_sleep(4); COMMIT`, { appName: app });
    assert.ok(await inPgSleep(app), 'the other session holds the key');
    const deletion = stack.api('DELETE', `/api/v1/traces/${id}`, { base: stack.url, key: A.key });
    const waits = await pollUntil(async () => Number((await stack.psql(`SELECT count(*) FROM pg_stat_activity
      WHERE wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%' AND application_name <> '${app}'`))[0][0]) > 0,
    { timeoutMs: 5000, intervalMs: 50 });
    assert.ok(waits.value, 'the deletion waits for the key');
    r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [trace('second')] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(id, (g) => g.body.name === 'second'), 'the second version is stored before the deletion');
    await holder;
    const del = await deletion;
    assert.equal(del.status, 200, del.text);
    assert.equal((await stack.api('GET', `/api/v1/traces/${id}`, { base: stack.url, key: A.key })).status, 404);

    const jsm = await (await stack.nats()).jetstreamManager();
    const droppedBefore = await deletedRecords();
    await jsm.consumers.delete('INGEST', 'ingest-writer');
    const remade = await pollUntil(async () => (await jsm.consumers.info('INGEST', 'ingest-writer').catch(() => null)) !== null,
      { timeoutMs: 20_000, intervalMs: 200 });
    assert.ok(remade.value, 'the consumer is made again');
    await writersCaughtUp(jsm); // the whole stream again, both versions among it
    r = await stack.api('GET', `/api/v1/traces/${id}`, { base: stack.url, key: A.key });
    assert.equal(r.status, 404, `the deleted trace stays deleted: ${r.text.slice(0, 200)}`);
    const dropped = await deletedRecords();
    assert.ok(dropped - droppedBefore >= 2, `the records left out are counted: ${droppedBefore} -> ${dropped}`);
  }));

  it('the writer consumer deleted by hand is made again by the running writers, and what was sent meanwhile is stored', T, stack.wrap(async () => {
    const jsm = await (await stack.nats()).jetstreamManager();
    // a trace deleted before: the consumer made again delivers its record again
    const deleted = `deleted-before-${crypto.randomBytes(3).toString('hex')}`;
    let d = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [{ id: deleted, project: 'rebind', name: 'n' }] } });
    assert.equal(d.status, 202, d.text);
    assert.ok(await traceStored(deleted), 'the trace to delete is stored');
    d = await stack.api('DELETE', `/api/v1/traces/${deleted}`, { base: stack.url, key: A.key });
    assert.equal(d.status, 200, d.text);
    await jsm.consumers.delete('INGEST', 'ingest-writer');
    const id = `after-consumer-${crypto.randomBytes(3).toString('hex')}`;
    const r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [{ id, project: 'rebind', name: 'n' }] } });
    assert.equal(r.status, 202, r.text);
    assert.ok(await traceStored(id), 'the trace sent while the consumer was missing is stored');
    const info = await jsm.consumers.info('INGEST', 'ingest-writer');
    assert.equal(info.config.durable_name, 'ingest-writer', 'the consumer is there again');
    assert.equal(info.config.ack_policy, 'explicit');
    await writersCaughtUp(jsm); // the new consumer delivers the whole stream again
    d = await stack.api('GET', `/api/v1/traces/${deleted}`, { base: stack.url, key: A.key });
    assert.equal(d.status, 404, `the trace deleted before is not brought back by the replay: ${d.text.slice(0, 200)}`);
  }));

  it('a resend of a trace backfilled over many days is stored touching only its own day\'s partitions', T, stack.wrap(async () => {
    // 300 traces, each on a day of its own (300 partition pairs); then one of them sent again
    // (the upsert path). Its statements must plan and lock that day's partitions only, not
    // every day's: the writer's DELETE of the replaced observations is held up on the old
    // observation's row, and the day partitions its session has locked by then are counted.
    const DAYS = 300;
    const tag = crypto.randomBytes(3).toString('hex');
    const project = `days-${tag}`;
    let r = await stack.api('PUT', `/api/v1/projects/${project}/settings`, { base: stack.url, key: A.key, body: { retention_days: 36500 } });
    assert.equal(r.status, 200, r.text);
    const startOf = (i) => new Date(Date.now() - (i + 2) * 86400e3).toISOString();
    r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: Array.from({ length: DAYS }, (_, i) => ({
      id: `day-${tag}-${i}`, project, name: 'v1', start_time: startOf(i), observations: [{ id: 'old', name: 'old' }] })) } });
    assert.equal(r.status, 202, r.text.slice(0, 300));
    const all = await pollUntil(async () => Number((await stack.psql(
      `SELECT count(*) FROM ingest.trace_keys WHERE team_id = '${A.id}' AND id LIKE 'day-${tag}-%'`))[0][0]) === DAYS,
    { timeoutMs: 60_000, intervalMs: 500 });
    assert.ok(all.value, `the ${DAYS} traces are stored`);
    assert.ok(await traceStored(`day-${tag}-${DAYS - 1}`));
    const id = `day-${tag}-5`;
    const [[partTime, day]] = await stack.psql(`SELECT part_time, to_char(part_time AT TIME ZONE 'UTC', 'YYYYMMDD')
      FROM ingest.trace_keys WHERE team_id = '${A.id}' AND id = '${id}'`);
    const [[days]] = await stack.psql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ingest.traces'::regclass");
    assert.ok(Number(days) >= DAYS, `a day partition each: ${days}`);
    const app = `holding-${tag}`;
    const holder = stack.psql(`BEGIN; SELECT 1 FROM ingest.observations WHERE team_id = '${A.id}' AND part_time = '${partTime}'
      AND trace_id = '${id}' AND id = 'old' FOR UPDATE; SELECT pg_sleep(8); COMMIT`, { appName: app, timeoutMs: 60_000 });
    assert.ok(await inPgSleep(app), 'the other session holds the old observation');
    r = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [
      { id, project, name: 'v2', start_time: startOf(5), observations: [{ id: 'new', name: 'new' }] }] } });
    assert.equal(r.status, 202, r.text);
    const waiting = await pollUntil(async () => (await stack.psql(`SELECT pid FROM pg_stat_activity
      WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM ingest.observations%' AND pid <> pg_backend_pid()`))[0]?.[0],
    { timeoutMs: 10_000, intervalMs: 50 });
    assert.ok(waiting.value, 'the writer\'s pass waits for the old observation');
    const locked = (await stack.psql(`SELECT DISTINCT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
      WHERE l.pid = ${waiting.value} AND c.relname ~ '^(traces|observations)_p[0-9]{8}$' ORDER BY 1`)).map(([n]) => n);
    assert.deepEqual(locked, [`observations_p${day}`, `traces_p${day}`],
      `the pass locks its own day's partitions only, not the other days' (${locked.length} locked)`);
    await holder;
    const stored = await pollUntil(async () => {
      const g = await stack.api('GET', `/api/v1/traces/${id}`, { base: stack.url, key: A.key });
      return g.status === 200 && g.body.name === 'v2' && g.body.observations.map((o) => o.id).join() === 'new';
    }, { timeoutMs: 60_000, intervalMs: 200 });
    assert.ok(stored.value, 'the resend is stored, with its own observation only');
  }));

  it('the INGEST stream deleted by hand is made again by the running writers, and intake resumes', T, stack.wrap(async () => {
    const jsm = await (await stack.nats()).jetstreamManager();
    const config = (await jsm.streams.info('INGEST')).config;
    await jsm.streams.delete('INGEST');
    // meanwhile a record has no stream to take it: refused (503), never acknowledged
    const id = `after-stream-${crypto.randomBytes(3).toString('hex')}`;
    let last;
    const taken = await pollUntil(async () => {
      last = await stack.api('POST', '/api/v1/traces', { base: stack.url, key: A.key, body: { traces: [{ id, project: 'rebind', name: 'n' }] } });
      assert.ok(last.status === 202 || last.status === 503, `202 or 503: ${last.status} ${last.text}`);
      return last.status === 202;
    }, { timeoutMs: 30_000, intervalMs: 500 });
    assert.ok(taken.value, `a trace is taken again once the writers made the stream again: ${last.status} ${last.text}`);
    assert.ok(await traceStored(id), 'the trace sent after the stream was made again is stored');
    const info = await jsm.streams.info('INGEST');
    assert.deepEqual(info.config.subjects, config.subjects, 'the stream takes the same subjects');
    assert.equal(info.config.max_bytes, config.max_bytes);
    assert.equal((await jsm.consumers.info('INGEST', 'ingest-writer')).config.ack_policy, 'explicit', 'with its writer consumer');
  }));
});
