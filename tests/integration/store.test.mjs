// The object store client (common/src/store.c), driven through store_probe:
// - against a real S3 endpoint that verifies SigV4 -- OpenStack Swift with s3api, started by
//   scripts/objectstore on free loopback ports with a small minimum part size -- multipart
//   uploads of many parts read back through presigned URLs, abort, signature and ETag errors,
//   completion without overwriting, both addressing styles;
// - against a file:// folder: the object appears under its name only when complete;
// - against a scripted S3 double (a node:http server here) for what a healthy server does not
//   show: retries on 503, no retry on 400, an <Error> inside a 200, clock skew.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { BIN_DIR, REPO, findFreePortBase, run } from './harness.mjs';

const PROBE = path.join(BIN_DIR, 'store_probe');
const OBJECTSTORE = path.join(REPO, 'scripts', 'objectstore');
const MIN_PART = 64 * 1024;
const T = { timeout: 120_000 };
const CREDS = { STORE_ACCESS_KEY_ID: 'test:tester', STORE_SECRET_ACCESS_KEY: 'testing', STORE_REGION: 'us-east-1' };

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

let tmp;
function tmpFile(name, bytes) {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, bytes);
  return p;
}

/** Runs store_probe; resolves the parsed last JSON line (plus .code and .stderr). */
async function probe(url, endpoint, args, env = {}) {
  const res = await run(PROBE, [url, endpoint ?? '-', ...args], { env: { ...process.env, ...CREDS, ...env } });
  const lines = res.stdout.trim().split('\n').filter(Boolean);
  assert.ok(lines.length, `store_probe ${args.join(' ')} printed nothing; stderr: ${res.stderr}`);
  const out = JSON.parse(lines[lines.length - 1]);
  out.code = res.code;
  out.stderr = res.stderr;
  assert.equal(res.code, out.status === 'ok' ? 0 : 1, `exit code matches status: ${JSON.stringify(out)}`);
  return out;
}

function ok(out, what) {
  assert.equal(out.status, 'ok', `${what}: ${out.message}\n${out.stderr}`);
  return out;
}

/** Starts `store_probe ... upload KEY FILE PART --wait`; resolves {uploadId, finish(cmd)} once
 * every part is sent; finish('complete' | 'abort') resolves the final JSON line. */
function uploadWaiting(url, endpoint, key, file, partSize, env = {}) {
  const child = spawn(PROBE, [url, endpoint ?? '-', 'upload', key, file, String(partSize), '--wait'], {
    env: { ...process.env, ...CREDS, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const closed = new Promise((resolve) => child.once('close', resolve));
  const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      const first = out.split('\n')[0];
      if (out.includes('\n') && first.includes('parts_done')) {
        child.stdout.removeAllListeners('data');
        child.stdout.on('data', (more) => (out += more));
        resolve({
          uploadId: JSON.parse(first).upload_id,
          async finish(cmd) {
            child.stdin.end(`${cmd}\n`);
            await closed;
            clearTimeout(timer);
            const lines = out.trim().split('\n');
            return JSON.parse(lines[lines.length - 1]);
          },
        });
      }
    });
    closed.then(() => {
      clearTimeout(timer);
      reject(new Error(`probe ended before its parts were sent: ${out} ${err}`));
    });
  });
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'evalbus-store-'));
});
after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('the s3 store against Swift s3api', () => {
  let endpoint;
  let port;
  let dir;
  const bucket = `exports-${crypto.randomBytes(3).toString('hex')}`;
  const url = `s3://${bucket}/team-a/2026`;

  before(async () => {
    port = await findFreePortBase(5);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'evalbus-objectstore-'));
    const res = await run(OBJECTSTORE, [dir, 'start', String(port)], {
      env: { ...process.env, S3_MIN_PART_SIZE: String(MIN_PART) },
      timeoutMs: 90_000,
    });
    assert.equal(res.code, 0, `scripts/objectstore start: ${res.stdout}\n${res.stderr}`);
    endpoint = `http://127.0.0.1:${port}`;
    assert.match(res.stdout, new RegExp(`S3_ENDPOINT=${endpoint}`));
    ok(await probe(url, endpoint, ['ensure-bucket']), 'ensure-bucket');
    ok(await probe(url, endpoint, ['ensure-bucket']), 'ensure-bucket again (ours already)');
  }, { timeout: 120_000 });

  after(async () => {
    if (!dir) return;
    const res = await run(OBJECTSTORE, [dir, 'stop'], { timeoutMs: 60_000 });
    assert.equal(res.code, 0, `scripts/objectstore stop: ${res.stderr}`);
    for (const f of fs.readdirSync(path.join(dir, 'run'))) assert.fail(`pid file left: ${f}`);
    fs.rmSync(dir, { recursive: true, force: true });
  }, { timeout: 60_000 });

  it('uploads 26 parts and serves the object through a presigned URL', async () => {
    const data = crypto.randomBytes(25 * MIN_PART + 1234);
    const file = tmpFile('many.bin', data);
    const key = 'job 1/données+traces=v1.jsonl';
    const up = ok(await probe(url, endpoint, ['upload', key, file, String(MIN_PART)]), 'upload');
    assert.equal(up.parts, 26);
    assert.equal(new Set(up.etags).size, 26, 'one ETag per part');

    const signed = ok(await probe(url, endpoint, ['presign', key, '300']), 'presign');
    assert.ok(signed.url.startsWith(`${endpoint}/${bucket}/team-a/2026/job%201/donn%C3%A9es%2Btraces%3Dv1.jsonl?`), signed.url);
    assert.match(signed.url, /X-Amz-Expires=300&/);
    assert.ok(!signed.url.includes('testing'), 'the secret is not in the URL');
    const res = await fetch(signed.url);
    assert.equal(res.status, 200, await res.clone().text());
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(body.length, data.length);
    assert.equal(sha256(body), sha256(data));
    assert.ok(body.equals(data), 'same bytes');

    // the same through the client itself
    const got = ok(await probe(url, endpoint, ['get', key, path.join(tmp, 'many.out'), String(data.length)]), 'get');
    assert.equal(got.sha256, sha256(data));
    const small = await probe(url, endpoint, ['get', key, path.join(tmp, 'x'), '1000']);
    assert.equal(small.status, 'too_large');

    // a presigned URL is bound to its object and its signature
    const tampered = signed.url.replace('donn%C3%A9es', 'other');
    assert.equal((await fetch(tampered)).status, 403);
    const badSig = signed.url.replace(/X-Amz-Signature=([0-9a-f])/, (_, c) => `X-Amz-Signature=${c === '0' ? '1' : '0'}`);
    assert.equal((await fetch(badSig)).status, 403);
  }, T);

  it('abort leaves neither an unfinished upload nor an object', async () => {
    const data = crypto.randomBytes(3 * MIN_PART + 10);
    const file = tmpFile('abort.bin', data);
    const key = 'aborted/run.jsonl';
    const w = await uploadWaiting(url, endpoint, key, file, MIN_PART);

    const listed = ok(await probe(url, endpoint, ['list-uploads', 'aborted/']), 'list-uploads');
    assert.deepEqual(listed.uploads, [{ key, upload_id: w.uploadId }]);
    assert.equal((await probe(url, endpoint, ['get', key, path.join(tmp, 'x')])).status, 'not_found', 'nothing under the key before completion');

    const fin = await w.finish('abort');
    assert.equal(fin.status, 'ok', fin.message);
    assert.equal(fin.aborted, true);
    assert.deepEqual(ok(await probe(url, endpoint, ['list-uploads', 'aborted/']), 'list').uploads, []);
    const gone = await probe(url, endpoint, ['get', key, path.join(tmp, 'x')]);
    assert.equal(gone.status, 'not_found');
    assert.match(gone.message, /NoSuchKey/);
    // aborting again is fine (NoSuchUpload)
    ok(await probe(url, endpoint, ['abort', key, w.uploadId]), 'abort again');
  }, T);

  it('refuses a wrong secret with a signature error (the server verifies)', async () => {
    const file = tmpFile('sig.txt', 'signed');
    const bad = await probe(url, endpoint, ['put', 'sig.txt', file], { STORE_SECRET_ACCESS_KEY: 'not-the-secret' });
    assert.equal(bad.status, 'unauthenticated');
    assert.match(bad.message, /HTTP 403 SignatureDoesNotMatch/);
    assert.ok(!bad.message.includes('not-the-secret') && !bad.stderr.includes('not-the-secret'), 'secret not echoed');
    const listing = await probe(url, endpoint, ['list-uploads'], { STORE_SECRET_ACCESS_KEY: 'nope' });
    assert.equal(listing.status, 'unauthenticated');
    ok(await probe(url, endpoint, ['put', 'sig.txt', file, 'text/plain']), 'the right secret');
  }, T);

  it('fails CompleteMultipartUpload clearly on a wrong ETag or a too small part', async () => {
    const key = 'complete/parts.bin';
    const a = tmpFile('a.bin', crypto.randomBytes(MIN_PART));
    const b = tmpFile('b.bin', crypto.randomBytes(500));
    const begin = ok(await probe(url, endpoint, ['begin', key]), 'begin');
    const id = begin.upload_id;
    const p1 = ok(await probe(url, endpoint, ['part', key, id, '1', '0', a]), 'part 1');
    const p2 = ok(await probe(url, endpoint, ['part', key, id, '2', String(MIN_PART), b]), 'part 2');
    assert.match(p1.etag, /^[0-9a-f]{32}$/, 'Swift gives MD5 ETags, unquoted here');

    const wrong = await probe(url, endpoint, ['complete', key, id, `1:${'0'.repeat(32)}`, `2:${p2.etag}`]);
    assert.equal(wrong.status, 'invalid_argument');
    assert.match(wrong.message, /CompleteMultipartUpload s3:\/\/.*complete\/parts\.bin: HTTP 400 InvalidPart/);
    const order = await probe(url, endpoint, ['complete', key, id, `2:${p2.etag}`, `1:${p1.etag}`]);
    assert.equal(order.status, 'invalid_argument', 'refused before sending');
    assert.match(order.message, /ascending/);
    // the upload survives a failed completion
    ok(await probe(url, endpoint, ['complete', key, id, `1:${p1.etag}`, `"2:${p2.etag}"`.replace(/"/g, '')]), 'complete');
    const got = ok(await probe(url, endpoint, ['get', key, path.join(tmp, 'parts.out')]), 'get');
    assert.equal(got.size, MIN_PART + 500);

    // every part but the last must reach the minimum part size
    const tiny = ok(await probe(url, endpoint, ['begin', 'complete/tiny.bin']), 'begin');
    const t1 = ok(await probe(url, endpoint, ['part', 'complete/tiny.bin', tiny.upload_id, '1', '0', b]), 'part');
    const t2 = ok(await probe(url, endpoint, ['part', 'complete/tiny.bin', tiny.upload_id, '2', '500', b]), 'part');
    const small = await probe(url, endpoint, ['complete', 'complete/tiny.bin', tiny.upload_id, `1:${t1.etag}`, `2:${t2.etag}`]);
    assert.equal(small.status, 'invalid_argument');
    assert.match(small.message, /EntityTooSmall/);
    ok(await probe(url, endpoint, ['abort', 'complete/tiny.bin', tiny.upload_id]), 'abort');
    const gone = await probe(url, endpoint, ['complete', 'complete/tiny.bin', tiny.upload_id, `1:${t1.etag}`]);
    assert.equal(gone.status, 'not_found');
    assert.match(gone.message, /NoSuchUpload/);
  }, T);

  it('with no_overwrite, completion does not replace an existing object (If-None-Match: *)', async () => {
    const first = tmpFile('first.bin', crypto.randomBytes(MIN_PART + 5));
    const second = tmpFile('second.bin', crypto.randomBytes(MIN_PART + 9));
    const env = { STORE_NO_OVERWRITE: '1' };
    ok(await probe(url, endpoint, ['upload', 'once/x.bin', first, String(MIN_PART)], env), 'first upload');
    const again = await probe(url, endpoint, ['upload', 'once/x.bin', second, String(MIN_PART)], env);
    assert.equal(again.status, 'conflict');
    assert.match(again.message, /CompleteMultipartUpload .*HTTP 412/);
    const got = ok(await probe(url, endpoint, ['get', 'once/x.bin', path.join(tmp, 'once.out')]), 'get');
    assert.equal(got.sha256, sha256(fs.readFileSync(first)), 'the first object stays');
    assert.deepEqual(ok(await probe(url, endpoint, ['list-uploads', 'once/']), 'list').uploads, [], 'the refused upload was aborted');
    ok(await probe(url, endpoint, ['upload', 'once/x.bin', second, String(MIN_PART)]), 'without no_overwrite it replaces');
  }, T);

  it('refuses invalid keys before sending anything', async () => {
    const file = tmpFile('k.txt', 'k');
    for (const key of ['../escape', '/abs', 'a//b', 'a/./b', 'trailing/', 'ctl\x01x', '']) {
      const out = await probe(url, endpoint, ['put', key, file]);
      assert.equal(out.status, 'invalid_argument', JSON.stringify(key));
      assert.match(out.message, /^store: key/);
    }
    const long = await probe(url, endpoint, ['put', 'k'.repeat(1020), file]);
    assert.equal(long.status, 'invalid_argument', 'prefix + key over 1024 bytes');
  }, T);

  it('signs virtual-host requests too (Host: <bucket>.localhost)', async () => {
    const file = tmpFile('vh.txt', 'virtual host');
    const vh = `http://localhost:${port}`;
    ok(await probe(url, vh, ['put', 'vh/a b.txt', file], { STORE_PATH_STYLE: '0' }), 'put');
    const got = ok(await probe(url, endpoint, ['get', 'vh/a b.txt', path.join(tmp, 'vh.out')]), 'get path-style');
    assert.equal(got.sha256, sha256(Buffer.from('virtual host')));
    ok(await probe(url, vh, ['delete', 'vh/a b.txt'], { STORE_PATH_STYLE: '0' }), 'delete');
    ok(await probe(url, vh, ['delete', 'vh/a b.txt'], { STORE_PATH_STYLE: '0' }), 'delete again');
    assert.equal((await probe(url, endpoint, ['get', 'vh/a b.txt', path.join(tmp, 'x')])).status, 'not_found');
  }, T);
});

describe('the file store', () => {
  it('shows the object under its name only when complete', async () => {
    const root = path.join(tmp, 'files');
    const url = `file://${root}`;
    const data = crypto.randomBytes(10 * 1000 + 7);
    const file = tmpFile('f.bin', data);
    const key = 'team/exp 1/data.jsonl';
    const final = path.join(root, key);
    const w = await uploadWaiting(url, null, key, file, 1000);
    const partial = `${final}.${w.uploadId}.partial`;

    assert.ok(!fs.existsSync(final), 'nothing under the final name before completion');
    assert.equal(fs.statSync(partial).size, data.length, 'the parts sit in the partial file');
    assert.deepEqual(ok(await probe(url, null, ['list-uploads']), 'list').uploads, [{ key, upload_id: w.uploadId }]);

    const fin = await w.finish('complete');
    assert.equal(fin.status, 'ok', fin.message);
    assert.equal(fin.parts, 11);
    assert.equal(sha256(fs.readFileSync(final)), sha256(data));
    assert.deepEqual(fs.readdirSync(path.dirname(final)), ['data.jsonl'], 'no partial or record left');
    const lp = ok(await probe(url, null, ['local-path', key]), 'local-path');
    assert.equal(lp.path, final);
    const u = ok(await probe(url, null, ['url', key]), 'url');
    assert.equal(u.url, `file://${root}/team/exp%201/data.jsonl`);
    assert.equal((await probe(url, null, ['presign', key, '60'])).status, 'invalid_argument');

    // abort removes the partial file
    const w2 = await uploadWaiting(url, null, 'team/other.bin', file, 4000);
    assert.ok(fs.existsSync(path.join(root, `team/other.bin.${w2.uploadId}.partial`)));
    assert.equal((await w2.finish('abort')).status, 'ok');
    assert.deepEqual(fs.readdirSync(path.join(root, 'team')).sort(), ['exp 1']);

    // a wrong ETag is refused as on S3
    const b = ok(await probe(url, null, ['begin', 'team/wrong.bin']), 'begin');
    const p = ok(await probe(url, null, ['part', 'team/wrong.bin', b.upload_id, '1', '0', file]), 'part');
    assert.equal(p.etag, sha256(data));
    const bad = await probe(url, null, ['complete', 'team/wrong.bin', b.upload_id, `1:${'f'.repeat(64)}`]);
    assert.equal(bad.status, 'invalid_argument');
    assert.match(bad.message, /InvalidPart/);
    assert.ok(!fs.existsSync(path.join(root, 'team/wrong.bin')));

    for (const k of ['../escape', '/abs', 'a//b', 'x/..']) {
      assert.equal((await probe(url, null, ['put', k, file])).status, 'invalid_argument', k);
    }
    assert.ok(!fs.existsSync(path.join(tmp, 'escape')));
  }, T);
});

describe('the s3 store against a scripted S3 double', () => {
  let server;
  let endpoint;
  let handler;
  const seen = [];

  before(async () => {
    server = http.createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        seen.push({ method: req.method, url: req.url, headers: req.headers, body });
        handler(req, res, body);
      });
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${server.address().port}`;
  });
  after(() => new Promise((resolve) => server.close(resolve)));

  const xmlError = (code, message) =>
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>req-1</RequestId></Error>`;
  const url = 's3://double/p';
  const reset = (h) => {
    seen.length = 0;
    handler = h;
  };

  it('retries a 503 and signs each try with the payload hash', async () => {
    let n = 0;
    reset((req, res) => {
      n++;
      if (n < 3) {
        res.writeHead(503, { 'content-type': 'application/xml' });
        res.end(xmlError('SlowDown', 'Reduce your request rate.'));
      } else {
        res.writeHead(200, { etag: '"abc"' });
        res.end();
      }
    });
    const file = tmpFile('retry.txt', 'retry me');
    ok(await probe(url, endpoint, ['put', 'r.txt', file], { STORE_RETRIES: '3' }), 'put');
    assert.equal(seen.length, 3);
    for (const s of seen) {
      assert.equal(s.method, 'PUT');
      assert.equal(s.url, '/double/p/r.txt');
      assert.equal(s.headers['x-amz-content-sha256'], sha256(Buffer.from('retry me')));
      assert.match(s.headers.authorization, /^AWS4-HMAC-SHA256 Credential=test:tester\/\d{8}\/us-east-1\/s3\/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature=[0-9a-f]{64}$/);
      assert.equal(s.headers.host, endpoint.slice('http://'.length));
      assert.equal(s.headers.expect, undefined, 'no 100-continue');
      assert.equal(s.body.toString(), 'retry me');
    }
  }, T);

  it('gives up after its retries, and never retries a 400', async () => {
    reset((req, res) => {
      res.writeHead(503);
      res.end();
    });
    const file = tmpFile('r2.txt', 'x');
    const out = await probe(url, endpoint, ['put', 'r2.txt', file], { STORE_RETRIES: '1' });
    assert.equal(out.status, 'unavailable');
    assert.match(out.message, /HTTP 503/);
    assert.equal(seen.length, 2);

    reset((req, res) => {
      res.writeHead(400, { 'content-type': 'application/xml' });
      res.end(xmlError('InvalidArgument', 'no &amp; never'));
    });
    const bad = await probe(url, endpoint, ['put', 'r3.txt', file], { STORE_RETRIES: '3' });
    assert.equal(bad.status, 'invalid_argument');
    assert.match(bad.message, /HTTP 400 InvalidArgument: no & never \(request req-1\)/);
    assert.equal(seen.length, 1);
  }, T);

  it('treats an <Error> inside a 200 CompleteMultipartUpload as a failure', async () => {
    reset((req, res) => {
      res.writeHead(200, { 'content-type': 'application/xml' });
      res.write('<?xml version="1.0" encoding="UTF-8"?>\n');
      res.write('\n   \n   \n');
      res.end('<Error><Code>InvalidPart</Code><Message>late failure</Message></Error>');
    });
    const etag = 'a'.repeat(32);
    const out = await probe(url, endpoint, ['complete', 'c.bin', 'upload-id/with+odd=chars', `1:${etag}`, `2:"${etag}"`]);
    assert.equal(out.status, 'invalid_argument');
    assert.match(out.message, /HTTP 200 InvalidPart: late failure/);
    assert.equal(seen.length, 1, 'InvalidPart is not retried');
    const s = seen[0];
    assert.equal(s.method, 'POST');
    assert.equal(s.url, '/double/p/c.bin?uploadId=upload-id%2Fwith%2Bodd%3Dchars');
    assert.equal(s.headers['content-type'], 'application/xml');
    assert.equal(s.headers['x-amz-content-sha256'], sha256(s.body));
    assert.equal(
      s.body.toString(),
      '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
        `<Part><PartNumber>1</PartNumber><ETag>&quot;${etag}&quot;</ETag></Part>` +
        `<Part><PartNumber>2</PartNumber><ETag>&quot;${etag}&quot;</ETag></Part>` +
        '</CompleteMultipartUpload>',
    );

    // the retryable kind is retried
    let n = 0;
    reset((req, res) => {
      res.writeHead(200, { 'content-type': 'application/xml' });
      n++;
      res.end(n === 1 ? xmlError('InternalError', 'try again')
        : '<CompleteMultipartUploadResult><ETag>"x-1"</ETag></CompleteMultipartUploadResult>');
    });
    ok(await probe(url, endpoint, ['complete', 'c.bin', 'id', `1:${etag}`], { STORE_RETRIES: '2' }), 'complete');
    assert.equal(seen.length, 2);
  }, T);

  it('corrects its clock after RequestTimeTooSkewed', async () => {
    const skewMs = 3600_000; // the server is an hour ahead
    reset((req, res) => {
      const d = req.headers['x-amz-date'];
      const t = Date.UTC(+d.slice(0, 4), +d.slice(4, 6) - 1, +d.slice(6, 8), +d.slice(9, 11), +d.slice(11, 13), +d.slice(13, 15));
      const now = Date.now() + skewMs;
      const headers = { date: new Date(now).toUTCString(), 'content-type': 'application/xml' };
      if (Math.abs(t - now) > 15 * 60_000) {
        res.writeHead(403, headers);
        res.end(xmlError('RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.'));
      } else {
        res.writeHead(200, headers);
        res.end('<InitiateMultipartUploadResult><Bucket>double</Bucket><Key>p/k</Key><UploadId>u-1</UploadId></InitiateMultipartUploadResult>');
      }
    });
    const out = ok(await probe(url, endpoint, ['begin', 'k', 'application/x-ndjson']), 'begin');
    assert.equal(out.upload_id, 'u-1');
    assert.equal(seen.length, 2);
    assert.equal(seen[1].url, '/double/p/k?uploads');
    assert.equal(seen[1].headers['content-type'], 'application/x-ndjson');
  }, T);

  it('reports a server that is not there as unavailable', async () => {
    const port = await findFreePortBase(1);
    const out = await probe(url, `http://127.0.0.1:${port}`, ['get', 'k', path.join(tmp, 'x')], { STORE_RETRIES: '-1' });
    assert.equal(out.status, 'unavailable');
    assert.match(out.message, /s3 GetObject s3:\/\/double\/p\/k: .*(connect|Connection refused)/i);
  }, T);
});
