// Credential verification over NATS: evalbus.v1.auth.verify, VerifyRequest -> VerifyResponse
// (proto/evalbus/v1/auth.proto), as every other service will call it.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';

import {
  DOWN_TIMEOUT_MS,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  decodeJwt,
  decodeVerifyResponse,
  protoRoot,
  rfc3339,
  signJwtHs256,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('nats');
const T = { timeout: 60_000 };

/** Changes the character at index i of s to a different base64url character. */
function flipChar(s, i) {
  const c = s[i] === 'A' ? 'B' : 'A';
  return s.slice(0, i) + c + s.slice(i + 1);
}

describe('key and session verification over NATS', () => {
  let owner;
  let team; // whoami of the owner key
  let session;

  before(async () => {
    await stack.up();
    owner = await stack.bootstrap(uniqueSlug('nats'));
    team = (await stack.whoami(owner.key)).team;
    session = await stack.login(owner.email, owner.password);
  }, { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  it('an allowed key yields its principal', T, stack.wrap(async () => {
    const k = await stack.createKey(owner.key, { name: 'nats-member', scopes: ['traces:read', 'traces:write'] });
    const r = await stack.verifyOverNats(k.key);
    assert.equal(r.allowed, true, `allowed: ${JSON.stringify(r)}`);
    assert.equal(r.reason, '');
    const p = r.principal;
    assert.ok(p, 'principal set');
    assert.equal(p.team_id, team.id);
    assert.equal(p.team_slug, owner.team);
    assert.equal(p.key_id, k.id);
    assert.equal(p.role, 'ROLE_MEMBER');
    assert.deepEqual([...p.scopes].sort(), ['traces:read', 'traces:write']);
    assert.equal(p.project, '');
    assert.equal(p.expires_at_unix_ms, 0, 'no expiry');
    assert.deepEqual(p.rate_limit, { tier: 'free', rate_per_sec: 20, burst: 100, unlimited: false });

    const o = await stack.verifyOverNats(owner.key);
    assert.equal(o.allowed, true);
    assert.equal(o.principal.role, 'ROLE_OWNER');
    assert.ok(o.principal.scopes.includes('admin'));
  }));

  it('a key restricted to a project and with an expiry carries both', T, stack.wrap(async () => {
    const exp = rfc3339(Date.now() + 3600_000);
    const k = await stack.createKey(owner.key, {
      name: 'nats-viewer', scopes: ['traces:read'], role: 'viewer', project: 'checkout', expires_at: exp,
    });
    const r = await stack.verifyOverNats(k.key);
    assert.equal(r.allowed, true, JSON.stringify(r));
    assert.equal(r.principal.role, 'ROLE_VIEWER');
    assert.equal(r.principal.project, 'checkout');
    assert.equal(r.principal.expires_at_unix_ms, Date.parse(exp));
  }));

  it('unknown, malformed and empty credentials are denied with a reason', T, stack.wrap(async () => {
    const unknown = await stack.verifyOverNats(`eb_abcdefghij_${crypto.randomBytes(32).toString('base64url')}`);
    assert.equal(unknown.allowed, false);
    assert.equal(unknown.reason, 'unknown_key', JSON.stringify(unknown));
    assert.ok(!unknown.principal || !unknown.principal.team_id, 'no principal on denial');

    for (const bad of ['not-a-key', 'eb_ABCDEFGHIJ_' + 'a'.repeat(43), 'eb_abcdefghij_short', 'a.b.c', 'x'.repeat(5000)]) {
      const r = await stack.verifyOverNats(bad);
      assert.equal(r.allowed, false, `${bad.slice(0, 40)} denied`);
      assert.ok(['malformed', 'bad_signature'].includes(r.reason), `${bad.slice(0, 40)}: reason ${r.reason}`);
    }
    const m = await stack.verifyOverNats('not-a-key');
    assert.equal(m.reason, 'malformed');
    const empty = await stack.verifyOverNats('');
    assert.equal(empty.allowed, false);
    assert.ok(empty.reason.length > 0, 'a denial always has a reason');
  }));

  it('an answer never goes to a reply subject of the NATS server or of evalbus', T, stack.wrap(async () => {
    const root = await protoRoot();
    const Req = root.lookupType('evalbus.v1.VerifyRequest');
    const req = Req.encode(Req.create({ credential: owner.key, request_id: crypto.randomUUID(), source: 'integration-test' })).finish();
    const nc = await stack.nats();
    const got = [];
    const subs = ['evalbus.v1.traces.stored.someteam', 'evalbus.it.reply.x', '$SYS.it.reply', 'plain.it.reply'].map((subj) => {
      const sub = nc.subscribe(subj);
      (async () => { for await (const m of sub) got.push(m.subject); })();
      return sub;
    });
    for (const reply of ['evalbus.v1.traces.stored.someteam', 'evalbus.it.reply.x', '$SYS.it.reply', 'plain.it.reply']) {
      nc.publish('evalbus.v1.auth.verify', req, { reply });
    }
    await nc.flush();
    await new Promise((r) => setTimeout(r, 500));
    for (const sub of subs) sub.unsubscribe();
    assert.deepEqual(got, ['plain.it.reply'], 'only the plain reply subject is answered');
    const r = await stack.verifyOverNats(owner.key);
    assert.equal(r.allowed, true, 'requests with an inbox are still answered');
  }));

  it('garbage bytes as the request get an error reply or a denial, and the service keeps answering', T, stack.wrap(async () => {
    const root = await protoRoot();
    const payloads = [
      Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), // bad varint / wire type
      Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f, 0x41]), // credential claims ~4 GB, 1 byte follows
      crypto.randomBytes(512),
      Buffer.from('{"credential":"' + owner.key + '"}'), // JSON is not protobuf
    ];
    for (const data of payloads) {
      let msg;
      try {
        msg = await stack.natsRequestRaw(data, 3000);
      } catch (err) {
        assert.fail(`no reply to ${data.length} garbage bytes: ${err.message}`);
      }
      let decoded = null;
      try {
        decoded = decodeVerifyResponse(root, msg.data);
      } catch {}
      assert.ok(!(decoded && decoded.allowed), `garbage must never be allowed: ${JSON.stringify(decoded)}`);
    }
    const ok = await stack.verifyOverNats(owner.key);
    assert.equal(ok.allowed, true, 'still answering after garbage');
    const h = await stack.api('GET', '/healthz');
    assert.equal(h.status, 200);
  }));

  it('a session JWT from login verifies to the user\'s principal', T, stack.wrap(async () => {
    const r = await stack.verifyOverNats(session.token);
    assert.equal(r.allowed, true, JSON.stringify(r));
    const p = r.principal;
    assert.equal(p.user_id, session.user_id);
    assert.equal(p.team_id, team.id);
    assert.equal(p.team_slug, owner.team);
    assert.equal(p.key_id, '');
    assert.equal(p.role, 'ROLE_OWNER');
    const exp = decodeJwt(session.token).payload.exp;
    assert.ok(Math.abs(p.expires_at_unix_ms - exp * 1000) <= 1000, `expires_at_unix_ms ${p.expires_at_unix_ms} vs exp ${exp}`);
  }));

  it('a tampered JWT is denied (bad_signature), over NATS and HTTP', T, stack.wrap(async () => {
    const [h, pl, sig] = session.token.split('.');
    const badSig = `${h}.${pl}.${flipChar(sig, 10)}`;
    const r1 = await stack.verifyOverNats(badSig);
    assert.equal(r1.allowed, false);
    assert.equal(r1.reason, 'bad_signature', JSON.stringify(r1));

    const payload = decodeJwt(session.token).payload;
    const other = Buffer.from(JSON.stringify({ ...payload, role: 'owner', team: crypto.randomUUID() })).toString('base64url');
    const badPayload = `${h}.${other}.${sig}`;
    const r2 = await stack.verifyOverNats(badPayload);
    assert.equal(r2.allowed, false);
    assert.equal(r2.reason, 'bad_signature', JSON.stringify(r2));

    const none = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${pl}.`;
    const r3 = await stack.verifyOverNats(none);
    assert.equal(r3.allowed, false, 'alg none is refused');

    for (const t of [badSig, badPayload, none]) {
      assertError(await stack.api('GET', '/api/v1/auth/whoami', { key: t }), 'unauthenticated', 'tampered JWT over HTTP');
    }
  }));

  it('a JWT signed with the real secret but expired is denied (expired); wrong algorithms are refused', T, stack.wrap(async () => {
    // Find how the service reads the secret file by reproducing the signature of a real token.
    const raw = fs.readFileSync(stack.env.EVALBUS_JWT_SECRET_FILE);
    const text = raw.toString('utf8');
    const candidates = [raw, Buffer.from(text.replace(/\r?\n$/, '')), Buffer.from(text.trim())];
    if (/^[0-9a-fA-F]+$/.test(text.trim())) candidates.push(Buffer.from(text.trim(), 'hex'));
    candidates.push(Buffer.from(text.trim(), 'base64'));
    const jwt = decodeJwt(session.token);
    const secret = candidates.find(
      (c) => crypto.createHmac('sha256', c).update(jwt.signingInput).digest('base64url') === jwt.signature,
    );
    assert.ok(secret, 'the session token\'s signature is HMAC-SHA256 of EVALBUS_JWT_SECRET_FILE (raw, trimmed, hex or base64)');

    const now = Math.floor(Date.now() / 1000);
    const fresh = signJwtHs256(jwt.header, { ...jwt.payload, iat: now, exp: now + 600 }, secret);
    const ok = await stack.verifyOverNats(fresh);
    assert.equal(ok.allowed, true, `control: a re-signed fresh token is allowed: ${JSON.stringify(ok)}`);

    const expired = signJwtHs256(jwt.header, { ...jwt.payload, iat: now - 7200, exp: now - 3600 }, secret);
    const r = await stack.verifyOverNats(expired);
    assert.equal(r.allowed, false);
    assert.equal(r.reason, 'expired', JSON.stringify(r));
    assertError(await stack.api('GET', '/api/v1/auth/whoami', { key: expired }), 'unauthenticated', 'expired JWT over HTTP');

    const hs512Header = { ...jwt.header, alg: 'HS512' };
    const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const input = `${enc(hs512Header)}.${enc({ ...jwt.payload, iat: now, exp: now + 600 })}`;
    const hs512 = `${input}.${crypto.createHmac('sha512', secret).update(input).digest('base64url')}`;
    const r512 = await stack.verifyOverNats(hs512);
    assert.equal(r512.allowed, false, 'only HS256 is accepted');

    const wrongAud = signJwtHs256(jwt.header, { ...jwt.payload, aud: 'someone-else', iat: now, exp: now + 600 }, secret);
    assert.equal((await stack.verifyOverNats(wrongAud)).allowed, false, 'a token for another audience is refused');
    const wrongIss = signJwtHs256(jwt.header, { ...jwt.payload, iss: 'https://evil.example', iat: now, exp: now + 600 }, secret);
    assert.equal((await stack.verifyOverNats(wrongIss)).allowed, false, 'a token from another issuer is refused');
  }));
});
