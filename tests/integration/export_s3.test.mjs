// The export service against a real S3-compatible store (OpenStack Swift with s3api, which
// verifies SigV4 signatures), started by scripts/stack with EVALBUS_OBJECT_STORE=s3: a
// 1,000,000-row export uploaded in many small parts and read back through a presigned URL; a
// worker killed with SIGKILL mid-export while a second replica stands by (the job still
// completes exactly, and no incomplete upload is left); a cancelled export leaves no object and
// no incomplete upload.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import zlib from 'node:zlib';

import {
  BIN_DIR,
  DOWN_TIMEOUT_MS,
  Stack,
  UP_TIMEOUT_MS,
  assertStatus,
  pidAlive,
  pollUntil,
  run,
  uniqueSlug,
} from './harness.mjs';

const ROWS = Number(process.env.EVALBUS_TEST_EXPORT_ROWS ?? 1_000_000);
const PART_SIZE = 1 << 20; // 1 MiB parts: many of them (the store's minimum is lowered to 64 KiB)
const stack = new Stack('export-s3', {
  env: {
    EVALBUS_OBJECT_STORE: 's3',
    S3_MIN_PART_SIZE: '65536',
    EVALBUS_EXPORT_PART_SIZE: String(PART_SIZE),
    EVALBUS_EXPORT_ACK_WAIT: '4s', // a dead worker's job moves on quickly
    EVALBUS_EXPORT_WORKERS: '1',
  },
});
const T = { timeout: 600_000 };

function api(method, p, key, opts = {}) {
  return stack.api(method, p, { base: stack.url, key, ...opts });
}

async function job(key, id) {
  const r = await api('GET', `/api/v1/exports/${id}`, key);
  assertStatus(r, 200, 'get export');
  return r.body;
}

async function waitJob(key, id, pred, timeoutMs) {
  let last;
  const res = await pollUntil(async () => {
    last = await job(key, id);
    return pred(last) ? last : null;
  }, { timeoutMs, intervalMs: 250 });
  assert.ok(res.value, `export ${id}: condition not met within ${timeoutMs} ms; last ${JSON.stringify(last)}`);
  return res.value;
}

/** Incomplete multipart uploads in the bucket (through store_probe, our client). */
async function incompleteUploads() {
  const res = await run(path.join(BIN_DIR, 'store_probe'), [stack.env.EVALBUS_OBJECT_STORE, stack.env.EVALBUS_S3_ENDPOINT, 'list-uploads'], {
    env: {
      ...process.env,
      STORE_ACCESS_KEY_ID: stack.env.EVALBUS_S3_ACCESS_KEY_ID,
      STORE_SECRET_ACCESS_KEY: stack.env.EVALBUS_S3_SECRET_ACCESS_KEY,
      STORE_REGION: stack.env.EVALBUS_S3_REGION,
    },
  });
  const lines = res.stdout.trim().split('\n').filter(Boolean);
  const last = JSON.parse(lines[lines.length - 1]);
  assert.equal(last.status, 'ok', `list-uploads: ${res.stdout} ${res.stderr}`);
  return last.uploads;
}

/** Downloads through the API's redirect to a presigned URL (no credential sent to the store);
 * streams, gunzips and counts lines; returns {lines, sha256, bytes, firstIds}. */
async function downloadCount(key, j) {
  const r = await fetch(`${stack.url}/api/v1/exports/${j.id}/download`, {
    headers: { authorization: `Bearer ${key}` },
    redirect: 'manual',
  });
  assert.equal(r.status, 302, 'S3 downloads are redirects to a presigned URL');
  const loc = r.headers.get('location');
  assert.match(loc, /X-Amz-Signature=[0-9a-f]{64}/);
  assert.ok(loc.startsWith(stack.env.EVALBUS_S3_ENDPOINT), 'the presigned URL points at the store');
  const obj = await fetch(loc);
  assert.equal(obj.status, 200, `presigned GET: ${obj.status}`);
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  const body = Readable.fromWeb(obj.body);
  body.on('data', (c) => {
    hash.update(c);
    bytes += c.length;
  });
  const rl = readline.createInterface({ input: body.pipe(zlib.createGunzip()), crlfDelay: Infinity });
  let lines = 0;
  const ids = new Set();
  for await (const line of rl) {
    if (!line) continue;
    lines++;
    if (lines <= 1000 || lines % 997 === 0) {
      const rec = JSON.parse(line);
      ids.add(rec.id);
      assert.ok(!/@example\.com/.test(line), 'no e-mail address survives');
    }
  }
  return { lines, bytes, sha256: hash.digest('hex'), ids };
}

describe('export to S3 (Swift s3api): scale, crash, cancel', () => {
  let A;
  let teamId;

  before(async () => {
    await stack.up();
    assert.equal(stack.env.EVALBUS_OBJECT_STORE, 's3://evalbus-exports');
    assert.ok(stack.env.EVALBUS_S3_ENDPOINT?.startsWith('http://127.0.0.1:'), 'the S3 endpoint is on loopback');
    A = await stack.bootstrap(uniqueSlug('xs'));
    await stack.setTier(A.team, 'enterprise', A.key);
    teamId = (await stack.whoami(A.key)).team.id;
    // One trace through the API makes today's partitions; the rest are written straight into
    // the tables (the export reads them like any other; ingest speed is tested elsewhere).
    const r = await api('POST', '/api/v1/traces', A.key, { body: { traces: [{ id: 'seed', project: 'p', input: 'hi', output: 'hello' }] } });
    assertStatus(r, 202);
    const seen = await pollUntil(async () => (await api('GET', '/api/v1/traces/seed', A.key)).status === 200, { timeoutMs: 10_000 });
    assert.ok(seen.value, 'seed trace stored');
    const [[pt]] = await stack.psql(`SELECT part_time FROM ingest.trace_keys WHERE team_id = '${teamId}' AND id = 'seed'`);
    await stack.psql(`
      INSERT INTO ingest.trace_keys (team_id, id, part_time)
        SELECT '${teamId}', 'r-' || lpad(g::text, 7, '0'), '${pt}' FROM generate_series(1, ${ROWS - 1}) g;
      INSERT INTO ingest.traces (team_id, part_time, id, project, name, model, provider, status,
        input, output, metadata, tags, source, stream_seq)
      SELECT '${teamId}', '${pt}', 'r-' || lpad(g::text, 7, '0'), 'p', 'answer', 'gpt-4o', 'openai', 'ok',
        jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'user',
          'content', 'I am user' || (g % 1000) || '@example.com, where is order #A-' || g || '?'))),
        jsonb_build_object('messages', jsonb_build_array(jsonb_build_object('role', 'assistant',
          'content', 'Order #A-' || g || ' ships tomorrow.'))),
        '{}', ARRAY['bulk'], 'api', g
      FROM generate_series(1, ${ROWS - 1}) g;
      ANALYZE ingest.traces;`, { timeoutMs: 300_000 });
  }, { timeout: UP_TIMEOUT_MS + 300_000 });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it(`a ${ROWS}-row export goes up in many parts and reads back exactly through a presigned URL`, T, stack.wrap(async () => {
    const r = await api('POST', '/api/v1/exports', A.key, { body: { format: 'jsonl', compression: 'gzip' } });
    assertStatus(r, 202);
    const running = await waitJob(A.key, r.body.id, (j) => j.state !== 'queued', 30_000);
    // While it runs on the only worker, two more wait in the queue: the team's limit of active
    // exports (max-active-jobs, 3) answers the next request with 429; cancelling a queued job
    // frees its place at once.
    const q1 = await api('POST', '/api/v1/exports', A.key, { body: { format: 'csv' } });
    const q2 = await api('POST', '/api/v1/exports', A.key, { body: { format: 'csv' } });
    assertStatus(q1, 202);
    assertStatus(q2, 202);
    const over = await api('POST', '/api/v1/exports', A.key, { body: { format: 'csv' } });
    assert.equal(over.status, 429, `limit of active exports: ${over.text}`);
    assert.equal(over.body.error.code, 'rate_limited');
    assert.match(over.body.error.message, /max-active-jobs/);
    assert.ok(over.headers.get('retry-after'));
    for (const q of [q1, q2]) {
      const c = await api('DELETE', `/api/v1/exports/${q.body.id}`, A.key);
      assertStatus(c, 200, 'cancel a queued export');
      assert.equal(c.body.state, 'cancelled');
    }
    const done = await waitJob(A.key, r.body.id, (j) => !['queued', 'running'].includes(j.state), 540_000);
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    assert.ok(running.progress.total_rows === ROWS || done.progress.total_rows === ROWS, 'total rows known');
    assert.equal(done.result.rows, ROWS);
    assert.ok(done.result.parts >= 5, `many parts (${done.result.parts})`);
    assert.equal(done.result.url, `s3://evalbus-exports/${done.result.key}`);
    const got = await downloadCount(A.key, done);
    assert.equal(got.lines, ROWS, 'every row, once');
    assert.equal(got.bytes, done.result.bytes);
    assert.equal(got.sha256, done.result.sha256, 'the object is exactly what the job says');
    assert.deepEqual(await incompleteUploads(), [], 'no incomplete upload left');
  }));

  it('a worker killed with SIGKILL mid-export: another replica restarts the job and it completes exactly', T, stack.wrap(async () => {
    // The job starts on the stack's own replica (the only worker so far) ...
    const r = await api('POST', '/api/v1/exports', A.key, { body: { format: 'jsonl', compression: 'gzip', filter: { tags: ['bulk'] } } });
    assertStatus(r, 202);
    await waitJob(A.key, r.body.id, (j) => j.state === 'running' && j.progress.bytes > 2 * PART_SIZE, 120_000);
    const [[parts]] = await stack.psql(`SELECT count(*) FROM export.job_parts WHERE job_id = '${r.body.id}'`);
    assert.ok(Number(parts) >= 1, 'parts were uploaded before the kill');
    // ... a second replica stands by, and the first one is killed in the middle of the upload.
    const standby = await stack.spawnService('export', {
      EVALBUS_S3_ENDPOINT: stack.env.EVALBUS_S3_ENDPOINT,
      EVALBUS_S3_REGION: stack.env.EVALBUS_S3_REGION,
      EVALBUS_S3_ACCESS_KEY_ID: stack.env.EVALBUS_S3_ACCESS_KEY_ID,
      EVALBUS_S3_SECRET_ACCESS_KEY: stack.env.EVALBUS_S3_SECRET_ACCESS_KEY,
      EVALBUS_EXPORT_PART_SIZE: String(PART_SIZE),
      EVALBUS_EXPORT_WORKERS: '1',
    });
    const victim = stack.readPid('export');
    process.kill(victim, 'SIGKILL');
    await pollUntil(() => !pidAlive(victim), { timeoutMs: 5000 });
    // The standby takes the job over once its message comes back (job-ack-wait). Progress is
    // read through the standby while the stack's replica is down.
    const viaStandby = async () => {
      const g = await stack.api('GET', `/api/v1/exports/${r.body.id}`, { base: standby.url, key: A.key });
      assertStatus(g, 200, 'get export from the standby');
      return g.body;
    };
    const taken = await pollUntil(async () => {
      const j = await viaStandby();
      return j.attempts >= 2 ? j : null;
    }, { timeoutMs: 60_000, intervalMs: 250 });
    assert.ok(taken.value, 'the standby started the job again');
    assert.ok(fs.readFileSync(standby.logFile, 'utf8').includes(`export ${r.body.id}: running`), 'on the standby');
    const up = await stack.stackCmd('up', 120_000); // the stack's replica back, for the edge
    assert.equal(up.code, 0, up.stderr);
    const done = await waitJob(A.key, r.body.id, (j) => !['queued', 'running'].includes(j.state), 540_000);
    assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.attempts, 2, 'the job ran a second time, and only once more');
    assert.equal(done.result.rows, ROWS - 1);
    const got = await downloadCount(A.key, done);
    assert.equal(got.lines, ROWS - 1, 'complete and exact after the crash');
    assert.equal(got.sha256, done.result.sha256);
    assert.deepEqual(await incompleteUploads(), [], "the dead attempt's upload was aborted");
  }));

  it('cancel: the running export stops, its upload is aborted, no object is left', T, stack.wrap(async () => {
    const r = await api('POST', '/api/v1/exports', A.key, { body: { format: 'jsonl', compression: 'none' } });
    assertStatus(r, 202);
    await waitJob(A.key, r.body.id, (j) => j.state === 'running' && j.progress.bytes > 0, 120_000);
    const c = await api('DELETE', `/api/v1/exports/${r.body.id}`, A.key);
    assertStatus(c, 200, 'cancel');
    assert.equal(c.body.cancel_requested, true);
    const done = await waitJob(A.key, r.body.id, (j) => j.state !== 'running', 30_000);
    assert.equal(done.state, 'cancelled');
    assert.equal(done.result, null);
    assert.deepEqual(await incompleteUploads(), [], 'no incomplete upload');
    const [[parts]] = await stack.psql(`SELECT count(*) FROM export.job_parts WHERE job_id = '${r.body.id}'`);
    assert.equal(Number(parts), 0);
    const [[key]] = await stack.psql(`SELECT coalesce(object_key, '') FROM export.jobs WHERE id = '${r.body.id}'`);
    const probe = await run(path.join(BIN_DIR, 'store_probe'), [stack.env.EVALBUS_OBJECT_STORE, stack.env.EVALBUS_S3_ENDPOINT, 'get', key, '/dev/null'], {
      env: { ...process.env, STORE_ACCESS_KEY_ID: stack.env.EVALBUS_S3_ACCESS_KEY_ID, STORE_SECRET_ACCESS_KEY: stack.env.EVALBUS_S3_SECRET_ACCESS_KEY },
    });
    assert.match(probe.stdout, /not_found/, `no object under ${key}: ${probe.stdout}`);
  }));
});
