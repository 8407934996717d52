// Retention: a project's retention period (PUT /api/v1/projects/{project}/settings, admins only)
// removes its older traces in the background, with their observations, reviews and scores;
// other projects keep theirs (the default retention is longer).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { DOWN_TIMEOUT_MS, Stack, UP_TIMEOUT_MS, assertError, pidAlive, pollUntil, sleep, uniqueSlug } from './harness.mjs';

const stack = new Stack('retention');
const api = (method, p, opts = {}) => stack.api(method, p, { base: stack.url, ...opts });
const DAY = 86_400_000;

function trace(id, project, ageDays) {
  const start = Date.now() - ageDays * DAY;
  return {
    id, project, name: 'answer', model: 'gpt-4o', status: 'ok',
    start_time: new Date(start).toISOString(), end_time: new Date(start + 500).toISOString(),
    observations: [{ id: 'gen', type: 'generation', name: 'llm', model: 'gpt-4o' }],
  };
}

/** Sends traces with key and waits until each is stored. */
async function sendStored(key, traces) {
  const r = await api('POST', '/api/v1/traces', { key, body: { traces } });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  for (const { id } of traces) {
    const stored = await pollUntil(async () => (await api('GET', `/api/v1/traces/${id}`, { key })).status === 200, { timeoutMs: 5000 });
    assert.ok(stored.value, `${id} was stored`);
  }
}

describe('retention per project', () => {
  let owner;
  let replica;
  let replicaStarted;

  /** Stops the 1 s replica and waits for the stack's own first pass: no pass runs until a test
   * starts a replica of its own. */
  async function noPasses() {
    if (replica.exitCode === null) {
      replica.proc.kill('SIGTERM');
      await replica.exited;
    }
    // the stack's own ingest ran its first pass 5 s after its start, and runs hourly since
    await sleep(Math.max(0, replicaStarted + 6000 - Date.now()));
  }

  before(async () => {
    await stack.up();
    owner = await stack.bootstrap(uniqueSlug('ret'));
    await stack.setTier(owner.team, 'enterprise', owner.key);
    // a replica that runs retention every second (the stack's own runs hourly)
    replica = await stack.spawnService('ingest', { EVALBUS_RETENTION_INTERVAL: '1s' });
    replicaStarted = Date.now();
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('only admins set it, and it must be 1..36500 days', stack.wrap(async () => {
    const member = await stack.createKey(owner.key, { name: 'm', scopes: ['traces:write', 'traces:read'], role: 'member' });
    assertError(await api('PUT', '/api/v1/projects/short/settings', { key: member.key, body: { retention_days: 1 } }), 'forbidden');
    assertError(await api('PUT', '/api/v1/projects/short/settings', { key: owner.key, body: { retention_days: 0 } }), 'invalid_argument');
    assertError(await api('PUT', '/api/v1/projects/short/settings', { key: owner.key, body: { retention_days: 'x' } }), 'invalid_argument');
    // anyone who reads traces reads it back; a project without its own has the default
    let g = await api('GET', '/api/v1/projects/readback/settings', { key: member.key });
    assert.equal(g.status, 200, g.text);
    assert.deepEqual(g.body, { project: 'readback', retention_days: 90, default: true });
    assert.equal((await api('PUT', '/api/v1/projects/readback/settings', { key: owner.key, body: { retention_days: 14 } })).status, 200);
    g = await api('GET', '/api/v1/projects/readback/settings', { key: member.key });
    assert.deepEqual(g.body, { project: 'readback', retention_days: 14, default: false });
  }), { timeout: 30_000 });

  it('removes a project\'s traces older than its retention, and nothing else', stack.wrap(async () => {
    const r = await api('POST', '/api/v1/traces', {
      key: owner.key,
      body: { traces: [trace('old-short', 'short', 3), trace('new-short', 'short', 0), trace('old-long', 'long', 3)] },
    });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const stored = await pollUntil(async () => (await api('GET', '/api/v1/traces/old-short', { key: owner.key })).status === 200, { timeoutMs: 5000 });
    assert.ok(stored.value, 'the old trace was stored first');
    const rev = await api('POST', '/api/v1/traces/old-short/review', { key: owner.key, body: { decision: 'accept' } });
    assert.equal(rev.status, 201);

    const set = await api('PUT', '/api/v1/projects/short/settings', { key: owner.key, body: { retention_days: 1 } });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    assert.equal(set.body.retention_days, 1);

    const gone = await pollUntil(async () => (await api('GET', '/api/v1/traces/old-short', { key: owner.key })).status === 404, { timeoutMs: 10_000, intervalMs: 250 });
    assert.ok(gone.value, 'the 3-day-old trace of a 1-day project is removed by retention');
    assert.equal((await api('GET', '/api/v1/traces/new-short', { key: owner.key })).status, 200, 'the new trace of that project stays');
    assert.equal((await api('GET', '/api/v1/traces/old-long', { key: owner.key })).status, 200, 'another project keeps its 3-day-old trace');
    const rows = await stack.psql(
      `SELECT (SELECT count(*) FROM ingest.observations WHERE trace_id = 'old-short'),` +
      ` (SELECT count(*) FROM ingest.reviews WHERE trace_id = 'old-short'),` +
      ` (SELECT count(*) FROM ingest.trace_keys WHERE id = 'old-short')`);
    assert.deepEqual(rows[0], ['0', '0', '0'], 'observations, reviews and the key went too');
    const audit = await api('GET', '/api/v1/audit?action=retention_changed', { key: owner.key });
    assert.ok(audit.body.events.some((e) => e.target === 'short'), 'the change is in the audit log');
    assert.ok(replica.pid > 0);
  }), { timeout: 60_000 });

  it('a pass sweeps reviews and scores whose trace is gone', stack.wrap(async () => {
    // rows left without a key (as a review or score written by hand, or before the key locks)
    const team = (await stack.whoami(owner.key)).team.id;
    const kept = (await stack.psql(`SELECT count(*) FROM ingest.reviews WHERE team_id = '${team}'`))[0][0];
    await stack.psql(`INSERT INTO ingest.reviews (team_id, trace_id, decision) VALUES ('${team}', 'no-such-trace', 'accept');` +
      ` INSERT INTO ingest.scores (team_id, trace_id, name, kind, value_number, source) VALUES ('${team}', 'no-such-trace', 'q', 'numeric', 1, 'api')`);
    const swept = await pollUntil(async () => (await stack.psql("SELECT (SELECT count(*) FROM ingest.reviews WHERE trace_id = 'no-such-trace') + (SELECT count(*) FROM ingest.scores WHERE trace_id = 'no-such-trace')"))[0][0] === '0',
      { timeoutMs: 10_000, intervalMs: 250 });
    assert.ok(swept.value, 'the orphaned review and score are gone after a pass');
    assert.equal((await stack.psql(`SELECT count(*) FROM ingest.reviews WHERE team_id = '${team}'`))[0][0], kept, 'the reviews of stored traces stay');
  }));

  it("a pass removes deletions' tombstones 8 days old (the stream keeps records 7), and keeps younger ones", stack.wrap(async () => {
    const team = (await stack.whoami(owner.key)).team.id;
    await stack.psql(`INSERT INTO ingest.trace_tombstones (team_id, id, deleted_seq, deleted_at) VALUES
      ('${team}', 'tomb-old', 1, now() - interval '8 days 1 minute'), ('${team}', 'tomb-young', 1, now() - interval '7 days 23 hours')`);
    const swept = await pollUntil(async () => (await stack.psql(
      `SELECT count(*) FROM ingest.trace_tombstones WHERE team_id = '${team}' AND id = 'tomb-old'`))[0][0] === '0',
    { timeoutMs: 10_000, intervalMs: 250 });
    assert.ok(swept.value, 'the 8-day-old tombstone is gone after a pass');
    assert.equal((await stack.psql(`SELECT count(*) FROM ingest.trace_tombstones WHERE team_id = '${team}' AND id = 'tomb-young'`))[0][0], '1',
      'the younger tombstone stays');
  }));

  it('drops the day partitions older than the longest retention, with their keys', stack.wrap(async () => {
    // 100 days old: past the default retention (90 days), and no project keeps more
    const old = trace('ancient', 'archive', 100);
    const day = old.start_time.slice(0, 10).replaceAll('-', '');
    const r = await api('POST', '/api/v1/traces', { key: owner.key, body: { traces: [old] } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    // The writer makes the day's partitions to store it; a retention pass then removes the trace
    // (or the day's partitions before the trace is in them: then the writer cannot store it).
    const dropped = await pollUntil(() => fs.readFileSync(replica.logFile, 'utf8').includes(`dropped the partitions of ${day}`),
      { timeoutMs: 15_000, intervalMs: 250 });
    assert.ok(dropped.value, `retention dropped the partitions of ${day}`);
    // A pass that dropped the partitions before the trace was in them makes the writer's COPY
    // fail; the writer makes them again to store the trace, and the next pass (a second later)
    // drops them with it: wait for that end state.
    const state = () => stack.psql(
      `SELECT to_regclass('ingest.traces_p${day}') IS NULL, to_regclass('ingest.observations_p${day}') IS NULL,` +
      ` (SELECT count(*) FROM ingest.trace_keys WHERE id = 'ancient')`);
    const gone = await pollUntil(async () => (await state())[0].join() === 't,t,0', { timeoutMs: 15_000, intervalMs: 250 });
    assert.ok(gone.value, `both partitions and the key are gone: ${(await state())[0]}`);
    assert.equal((await api('GET', '/api/v1/traces/ancient', { key: owner.key })).status, 404);
    assert.equal((await api('GET', '/api/v1/traces/new-short', { key: owner.key })).status, 200, 'today\'s traces stay');
    assert.ok(!fs.readFileSync(replica.logFile, 'utf8').includes('retention pass failed'), 'no retention pass failed');
  }), { timeout: 60_000 });

  it('a project kept longer than the default keeps the old days: the others lose their rows past the default', stack.wrap(async () => {
    // 365 days for one project keeps every day partition younger than that; the traces of
    // projects without a setting still go after the default 90 days, row by row
    assert.equal((await api('PUT', '/api/v1/projects/keep-long/settings', { key: owner.key, body: { retention_days: 365 } })).status, 200);
    const deleted = () => stack.metric('evalbus_ingest_retention_deleted_total', { base: replica.url });
    const before = await deleted();
    const r = await api('POST', '/api/v1/traces', { key: owner.key, body: { traces: [trace('dflt-old', 'nosetting', 95), trace('long-old', 'keep-long', 95), trace('dflt-new', 'nosetting', 80)] } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    // the three may be stored by different writer batches: wait for the end state
    const status = async (id) => (await api('GET', `/api/v1/traces/${id}`, { key: owner.key })).status;
    const gone = await pollUntil(async () => await status('dflt-old') === 404 && await status('long-old') === 200 &&
      await status('dflt-new') === 200 && await deleted() > before, { timeoutMs: 15_000, intervalMs: 250 });
    assert.ok(gone.value, 'the 95-day-old trace of a project without a setting is stored, then removed by a row delete; the one of the 365-day project and an 80-day-old one are stored and stay');
    await sleep(2500); // two more passes
    assert.equal((await api('GET', '/api/v1/traces/long-old', { key: owner.key })).status, 200, 'the 365-day project keeps its 95-day-old trace');
    const rows = await stack.psql("SELECT (SELECT count(*) FROM ingest.observations WHERE trace_id = 'dflt-old'), (SELECT count(*) FROM ingest.trace_keys WHERE id = 'dflt-old')");
    assert.deepEqual(rows[0], ['0', '0'], 'its observations and key went too');
    assert.ok(!fs.readFileSync(replica.logFile, 'utf8').includes('retention pass failed'), 'no retention pass failed');
    // back to the default, for what follows
    assert.equal((await api('PUT', '/api/v1/projects/keep-long/settings', { key: owner.key, body: { retention_days: 90 } })).status, 200);
  }), { timeout: 60_000 });

  it('a pass under way does not hold up shutdown: it is cancelled and rolls back', stack.wrap(async () => {
    // A transaction holds project_settings, which every pass reads first: the replica's next pass
    // waits for it (up to the pass's 5 s lock_timeout) when SIGTERM comes. Every service runs its
    // first pass 5 s after its start, and only the replica runs one every second after that:
    // from 6.5 s after the replica's start, a pass waiting for the lock is the replica's.
    await sleep(Math.max(0, replicaStarted + 6500 - Date.now()));
    const holder = stack.psql('BEGIN; LOCK TABLE ingest.project_settings IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(6); COMMIT;',
      { timeoutMs: 20_000 });
    try {
      // backends of passes waiting for the lock (this query's own excluded)
      const waitingPasses = async () => Number((await stack.psql("SELECT count(*) FROM pg_stat_activity" +
        " WHERE wait_event_type = 'Lock' AND query LIKE '%ingest.project_settings%' AND pid <> pg_backend_pid()"))[0][0]);
      const waiting = await pollUntil(async () => await waitingPasses() > 0, { timeoutMs: 10_000, intervalMs: 100 });
      assert.ok(waiting.value, 'a retention pass waits for the lock');
      const t0 = Date.now();
      replica.proc.kill('SIGTERM');
      const exit = await replica.exited;
      const ms = Date.now() - t0;
      assert.equal(exit.code, 0, `the replica exits cleanly (${JSON.stringify(exit)})`);
      // without the cancel, the pass would wait out its lock_timeout (5 s) before the exit
      assert.ok(ms < 3500, `the replica exited ${ms} ms after SIGTERM, without waiting for the pass`);
      const log = fs.readFileSync(replica.logFile, 'utf8');
      assert.match(log, /retention pass cancelled by shutdown/);
      assert.equal(await waitingPasses(), 0, 'the cancelled pass left no backend waiting');
    } finally {
      await holder;
    }
  }), { timeout: 60_000 });

  it('a review written while a pass waits for its trace goes with the trace, not left for the sweep', stack.wrap(async () => {
    await noPasses(); // this test starts its own replica, once the scene is set
    assert.equal((await api('PUT', '/api/v1/projects/racey/settings', { key: owner.key, body: { retention_days: 30 } })).status, 200);
    const w = trace('racey-reviewed', 'racey', 40); // step 1 deletes it (30 days)
    const y = trace('racey-held', 'racey-hold', 115); // step 2 would drop its day
    const dy = y.start_time.slice(0, 10).replaceAll('-', '');
    await sendStored(owner.key, [w, y]);
    // A reader holds y's day: every pass fails at its drop, so no pass gets to the sweep of
    // reviews left without their trace (step 3) while it stays.
    const { released: holder } = await stack.lockTable(`ingest.traces_p${dy}`, 25_000, { mode: 'ACCESS SHARE' });
    let replica2;
    try {
      // A review on its way, as the review endpoint writes one: w's key held FOR KEY SHARE and
      // the row inserted, committed only once a retention statement waits for that key.
      const team = (await stack.psql(`SELECT team_id FROM ingest.trace_keys WHERE id = '${w.id}'`))[0][0];
      const review = stack.psql(`DO $$ BEGIN
          PERFORM 1 FROM ingest.trace_keys WHERE team_id = '${team}' AND id = '${w.id}' FOR KEY SHARE;
          INSERT INTO ingest.reviews (team_id, trace_id, decision) VALUES ('${team}', '${w.id}', 'accept');
          FOR i IN 1..300 LOOP
            PERFORM pg_stat_clear_snapshot();
            EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'
              AND query LIKE '%trace_keys%' AND pid <> pg_backend_pid() AND application_name <> 'test-review');
            PERFORM pg_sleep(0.05);
          END LOOP;
        END $$`, { appName: 'test-review', timeoutMs: 40_000 });
      review.catch(() => {});
      await pollUntil(async () => (await stack.psql("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'test-review' AND l.granted AND l.relation = 'ingest.trace_keys'::regclass"))[0][0] !== '0',
        { timeoutMs: 5000, intervalMs: 50 });
      replica2 = await stack.spawnService('ingest', { EVALBUS_RETENTION_INTERVAL: '1s' });
      await review;
      const gone = await pollUntil(async () => (await api('GET', `/api/v1/traces/${w.id}`, { key: owner.key })).status === 404, { timeoutMs: 15_000, intervalMs: 250 });
      assert.ok(gone.value, 'w was deleted');
      const left = await stack.psql(`SELECT count(*) FROM ingest.reviews WHERE trace_id = '${w.id}'`);
      assert.equal(left[0][0], '0', 'the review committed while the pass waited went with w, in the same transaction');
    } finally {
      await holder;
      if (replica2) {
        replica2.proc.kill('SIGTERM');
        await replica2.exited;
      }
    }
  }), { timeout: 90_000 });

  it('a retention raised while a pass is under way keeps the days it now covers', stack.wrap(async () => {
    await noPasses(); // this test starts its own replica, once the scene is set
    const x = trace('raised-old', 'raised', 100); // past the default 90 days
    const today = trace('raised-today', 'raised-now', 0);
    const dx = x.start_time.slice(0, 10).replaceAll('-', '');
    const dt = today.start_time.slice(0, 10).replaceAll('-', '');
    await sendStored(owner.key, [x, today]);
    // A reader holds today's day in SHARE mode: a pass that has read the retention settings
    // waits in its row delete (step 1) until the reader is ended, before its drops (step 2).
    const holder = stack.psql(`BEGIN; LOCK TABLE ingest.traces_p${dt} IN SHARE MODE; SELECT pg_sleep(30); COMMIT`,
      { appName: 'test-raise-holder', timeoutMs: 40_000 });
    holder.catch(() => {});
    const held = await pollUntil(async () => (await stack.psql("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'test-raise-holder' AND l.granted AND l.mode = 'ShareLock'"))[0][0] !== '0',
      { timeoutMs: 5000, intervalMs: 50 });
    assert.ok(held.value, 'the reader holds the day');
    const replica2 = await stack.spawnService('ingest', { EVALBUS_RETENTION_INTERVAL: '1s' });
    try {
      const waiting = await pollUntil(async () => (await stack.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'" +
        " AND query LIKE '%WITH short AS%' AND pid <> pg_backend_pid()"))[0][0] !== '0', { timeoutMs: 15_000, intervalMs: 50 });
      assert.ok(waiting.value, 'a pass waits in its row delete');
      // the project is now kept a year: its 100-day-old day must stay (the setting may wait for
      // the pass's row delete, which goes on once the reader is ended)
      const setting = api('PUT', '/api/v1/projects/raised/settings', { key: owner.key, body: { retention_days: 365 } });
      await sleep(500);
      await stack.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'test-raise-holder'");
      await holder.catch(() => {});
      const set = await setting;
      assert.equal(set.status, 200, JSON.stringify(set.body));
      // the pass goes on, and two more after it
      await pollUntil(async () => (await stack.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'" +
        " AND query LIKE '%WITH short AS%' AND pid <> pg_backend_pid()"))[0][0] === '0', { timeoutMs: 5000, intervalMs: 50 });
      await sleep(2500);
      assert.equal((await stack.psql(`SELECT to_regclass('ingest.traces_p${dx}') IS NOT NULL`))[0][0], 't', `the partitions of ${dx} stay`);
      assert.equal((await api('GET', `/api/v1/traces/${x.id}`, { key: owner.key })).status, 200, 'the trace of the project kept a year stays');
    } finally {
      replica2.proc.kill('SIGTERM');
      await replica2.exited;
      await holder.catch(() => {});
    }
    // back to the default, for what follows
    assert.equal((await api('PUT', '/api/v1/projects/raised/settings', { key: owner.key, body: { retention_days: 90 } })).status, 200);
  }), { timeout: 90_000 });

  it("a day dropped whole takes its traces' reviews and scores with it: the same id sent again starts without them", stack.wrap(async () => {
    await noPasses(); // the 1 s replica would drop the old day before the review
    const x = trace('dropped-reviewed', 'archive2', 120);
    const y = trace('dropped-held', 'archive2', 110);
    const dy = y.start_time.slice(0, 10).replaceAll('-', '');
    await sendStored(owner.key, [x, y]);
    assert.equal((await api('POST', `/api/v1/traces/${x.id}/review`, { key: owner.key, body: { decision: 'accept' } })).status, 201);
    assert.equal((await api('POST', '/api/v1/scores', { key: owner.key, body: { trace_id: x.id, name: 'quality', value: 0.9 } })).status, 201);
    // A reader holds y's day: a pass drops x's day, then waits for y's (5 s) and gives up, and
    // so does every pass while the reader stays; what a pass does after the drops is not done.
    const { released: holder } = await stack.lockTable(`ingest.traces_p${dy}`, 20_000, { mode: 'ACCESS SHARE' });
    try {
      await stack.spawnService('ingest', { EVALBUS_RETENTION_INTERVAL: '1s' });
      const gone = await pollUntil(async () => (await api('GET', `/api/v1/traces/${x.id}`, { key: owner.key })).status === 404, { timeoutMs: 20_000, intervalMs: 250 });
      assert.ok(gone.value, "x's day was dropped");
      // x sent again, now: a new trace, with nothing of the one retention removed
      const again = await api('POST', '/api/v1/traces', { key: owner.key, body: { traces: [{ id: x.id, project: 'archive2', name: 'again' }] } });
      assert.equal(again.status, 202, JSON.stringify(again.body));
      const g = await pollUntil(async () => {
        const res = await api('GET', `/api/v1/traces/${x.id}`, { key: owner.key });
        return res.status === 200 && res.body.name === 'again' ? res.body : null;
      }, { timeoutMs: 10_000, intervalMs: 100 });
      assert.ok(g.value, 'x is stored again');
      assert.deepEqual([g.value.review_state, g.value.reviews, g.value.scores], ['unreviewed', [], []], 'without the reviews and scores of the trace retention removed');
      const listed = await api('GET', '/api/v1/traces?project=archive2&score=quality', { key: owner.key });
      assert.deepEqual(listed.body.traces.map((t) => t.id), [], 'the score filter does not find it');
    } finally {
      await holder;
    }
    const dropped = await pollUntil(async () => (await api('GET', `/api/v1/traces/${y.id}`, { key: owner.key })).status === 404, { timeoutMs: 15_000, intervalMs: 250 });
    assert.ok(dropped.value, "y's day goes once the reader is gone");
    const g = await api('GET', `/api/v1/traces/${x.id}`, { key: owner.key });
    assert.deepEqual([g.status, g.body.reviews, g.body.scores], [200, [], []], 'x stays, still without them');
  }), { timeout: 90_000 });
  it('a day with one of its two partitions dropped by hand is dropped whole, and the days after it still go', stack.wrap(async () => {
    await noPasses(); // the scene first; then a replica of its own runs the passes
    const [a, b, c] = [trace('half-a', 'half', 120), trace('half-b', 'half', 121), trace('half-c', 'half', 122)];
    const day = (t) => t.start_time.slice(0, 10).replaceAll('-', '');
    await sendStored(owner.key, [a, b, c]);
    // the oldest day loses its observations' partition, the next its traces' one (and with it
    // the trace: its key stays)
    await stack.psql(`DROP TABLE ingest.observations_p${day(c)}; DROP TABLE ingest.traces_p${day(b)}`);
    const replica3 = await stack.spawnService('ingest', { EVALBUS_RETENTION_INTERVAL: '1s' });
    try {
      const left = () => stack.psql(`SELECT count(*) FROM pg_class WHERE relname IN ('traces_p${day(a)}', 'observations_p${day(a)}',` +
        ` 'observations_p${day(b)}', 'traces_p${day(c)}')`);
      const gone = await pollUntil(async () => (await left())[0][0] === '0', { timeoutMs: 15_000, intervalMs: 250 });
      assert.ok(gone.value, `every partition of the three days is dropped: ${(await left())[0][0]} left`);
      assert.equal((await api('GET', '/api/v1/traces/half-a', { key: owner.key })).status, 404, 'the trace of the intact day is gone');
      assert.ok(!fs.readFileSync(replica3.logFile, 'utf8').includes('retention pass failed'), 'no pass failed');
    } finally {
      replica3.proc.kill('SIGTERM');
      await replica3.exited;
    }
  }), { timeout: 60_000 });
  it('a day dropped while a query reads traces and then that day\'s observations: no deadlock, both go through', stack.wrap(async () => {
    await noPasses();
    const old = trace('deadlock-old', 'deadlock', 130);
    const day = old.start_time.slice(0, 10).replaceAll('-', '');
    await sendStored(owner.key, [old]);
    // a reader holds the traces table (as every query takes it first) until a pass waits for
    // it, then reads the old day's observations: a pass that took the day's partitions first and
    // then waited for the table made the reader wait for it in turn
    const reader = stack.psql(`BEGIN; SELECT count(*) FROM ONLY ingest.traces;
      DO $$ BEGIN FOR i IN 1..150 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'
          AND query LIKE '%DROP TABLE ingest.traces_p${day}%' AND pid <> pg_backend_pid());
        PERFORM pg_sleep(0.1); PERFORM pg_stat_clear_snapshot(); END LOOP; END $$;
      SELECT count(*) FROM ingest.observations_p${day}; COMMIT`, { appName: 'test-deadlock-reader', timeoutMs: 40_000 });
    reader.catch(() => {});
    const replica4 = await stack.spawnService('ingest', { EVALBUS_RETENTION_INTERVAL: '1s' });
    try {
      await reader; // throws if PostgreSQL picked it as a deadlock victim
      const gone = await pollUntil(async () => (await stack.psql(`SELECT to_regclass('ingest.traces_p${day}') IS NULL`))[0][0] === 't',
        { timeoutMs: 15_000, intervalMs: 250 });
      assert.ok(gone.value, `the day ${day} is dropped once the reader is done`);
      assert.doesNotMatch(fs.readFileSync(replica4.logFile, 'utf8'), /deadlock/, 'no pass was a deadlock victim');
    } finally {
      replica4.proc.kill('SIGTERM');
      await replica4.exited;
    }
  }), { timeout: 60_000 });

  it('a day dropped while the writer copies a new trace into it: no deadlock', stack.wrap(async () => {
    // The writer COPYs a new trace straight into its day's partition, and PostgreSQL takes the
    // partition's lock before the parent table's. A drop of that day takes the parents first,
    // then the partition: a drop that got the parents between the writer's two locks waited for
    // the partition the writer held, while the writer waited for the parents. `reader` holds
    // the traces table until the writer, sent its trace once the pass waits for the parents
    // (behind the reader), waits for a table too.
    await noPasses();
    const old = trace('wdl-warm', 'wdl', 399);
    const D1 = old.start_time.slice(0, 10).replaceAll('-', '');
    const notTest = "a.application_name NOT LIKE 'test-%' AND a.pid <> pg_backend_pid()";
    const exists = async (cond) => (await stack.psql(`SELECT EXISTS (${cond})`))[0][0] === 't';
    const writerWaits = 'SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND' +
      ` l.locktype = 'relation' AND ${notTest} AND a.query NOT LIKE '%DROP TABLE%'`;
    const passWaits = 'SELECT 1 FROM pg_stat_activity a WHERE a.wait_event_type = \'Lock\'' +
      ` AND ${notTest} AND a.query LIKE '%DROP TABLE ingest.traces_p${D1}%'`;
    // the stack's ingest stops: the replica below is the only writer, with one thread
    const pid = stack.readPid('ingest');
    process.kill(pid, 'SIGTERM');
    assert.ok((await pollUntil(() => !pidAlive(pid), { timeoutMs: 20_000 })).value, 'the stack\'s ingest stopped');
    let replica5;
    try {
      const reader = stack.psql(`BEGIN; SELECT count(*) FROM ONLY ingest.traces;
        DO $$ BEGIN FOR i IN 1..300 LOOP EXIT WHEN EXISTS (${writerWaits});
          PERFORM pg_sleep(0.05); PERFORM pg_stat_clear_snapshot(); END LOOP; END $$; COMMIT`,
      { appName: 'test-wdl-reader', timeoutMs: 40_000 });
      reader.catch(() => {});
      replica5 = await stack.spawnService('ingest', { EVALBUS_RETENTION_INTERVAL: '1s', EVALBUS_WRITER_THREADS: '1' });
      const rapi = (method, p, opts = {}) => stack.api(method, p, { base: replica5.url, key: owner.key, ...opts });
      // a trace of the old day first: the replica's writer makes (and so knows) its partitions,
      // before the replica's first pass, 5 s after its start
      let r = await rapi('POST', '/api/v1/traces', { body: { traces: [old] } });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      assert.ok((await pollUntil(async () => (await rapi('GET', '/api/v1/traces/wdl-warm')).status === 200,
        { timeoutMs: 4000, intervalMs: 50 })).value, 'the old trace is stored before the first pass');
      assert.ok((await pollUntil(() => exists(passWaits), { timeoutMs: 10_000, intervalMs: 50 })).value,
        `the pass waits to drop ${D1}`);
      r = await rapi('POST', '/api/v1/traces', { body: { traces: [{ ...old, id: 'wdl-new' }] } });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      await reader;
      const state = async () => (await stack.psql(`SELECT to_regclass('ingest.traces_p${D1}') IS NULL,` +
        " (SELECT count(*) FROM ingest.trace_keys WHERE id IN ('wdl-warm', 'wdl-new'))"))[0].join();
      const gone = await pollUntil(async () => await state() === 't,0', { timeoutMs: 15_000, intervalMs: 250 });
      assert.ok(gone.value, `${D1} is dropped with both traces and their keys: ${await state()}`);
      assert.doesNotMatch(fs.readFileSync(replica5.logFile, 'utf8'), /deadlock/, 'neither the writer nor the pass was a deadlock victim');
    } finally {
      if (replica5) {
        replica5.proc.kill('SIGTERM');
        await replica5.exited;
      }
      const up = await stack.stackCmd('up', 90_000);
      assert.equal(up.code, 0, `scripts/stack up started ingest again: ${up.stdout}${up.stderr}`);
    }
  }), { timeout: 90_000 });
});
