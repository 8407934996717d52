// The evalbus CLI against a real stack: admin bootstrap, keys create/list/revoke, db health and
// migrate, set-tier, --help, and the documented exit codes (0 ok, 1 failure, 2 usage,
// 3 conflict, 4 not found, 5 unauthenticated/forbidden, 6 unavailable).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  DOWN_TIMEOUT_MS,
  KEY_RE,
  Stack,
  UP_TIMEOUT_MS,
  assertError,
  keySecret,
  findFreePortBase,
  pollUntil,
  uniqueSlug,
} from './harness.mjs';

const stack = new Stack('cli');
const T = { timeout: 90_000 };

describe('bootstrap and the evalbus CLI', () => {
  before(() => stack.up(), { timeout: UP_TIMEOUT_MS });
  after(() => stack.down(), { timeout: DOWN_TIMEOUT_MS });

  let owner; // {key, email, password, team}

  it('admin bootstrap prints a well-formed owner key (last line) that works', T, stack.wrap(async () => {
    const team = uniqueSlug('cli');
    owner = await stack.bootstrap(team);
    assert.match(owner.key, KEY_RE, `last line of bootstrap output is an API key:\n${owner.stdout}`);
    assert.ok(!owner.stdout.includes(owner.password), 'bootstrap never prints the password');
    assert.ok(!owner.stderr.includes(owner.password), 'bootstrap never prints the password (stderr)');

    const me = await stack.whoami(owner.key);
    assert.equal(me.team.slug, team);
    assert.equal(me.role, 'owner');
    assert.equal(me.team.tier, 'free', 'new teams are free');
    for (const s of ['traces:write', 'traces:read', 'exports:write', 'exports:read', 'analytics:read', 'admin']) {
      assert.ok(me.scopes.includes(s), `bootstrap owner key has scope ${s}: ${JSON.stringify(me.scopes)}`);
    }

    const session = await stack.login(owner.email, owner.password);
    assert.equal(session.role, 'owner');
    assert.equal(session.team.slug, team);
  }));

  it('admin bootstrap of an existing team exits 3 and changes nothing', T, stack.wrap(async () => {
    assert.ok(owner, 'needs the bootstrapped team');
    const pw = stack.passwordFile('another-password-123');
    const res = await stack.cli([
      'admin', 'bootstrap', '--team', owner.team, '--email', `second@${owner.team}.example.com`, '--password-file', pw,
    ]);
    assert.equal(res.code, 3, `second bootstrap of ${owner.team}: exit ${res.code}\n${res.stdout}\n${res.stderr}`);
    assert.doesNotMatch(res.stdout.trim().split('\n').pop() ?? '', KEY_RE, 'no key printed on conflict');
    const me = await stack.whoami(owner.key);
    assert.equal(me.team.slug, owner.team, 'the first owner key still works');
    const bad = await stack.api('POST', '/api/v1/auth/login', {
      body: { email: `second@${owner.team}.example.com`, password: 'another-password-123' },
    });
    assertError(bad, 'unauthenticated', 'no user was created by the failed bootstrap');
  }));

  it('--help exits 0 on every command', T, stack.wrap(async () => {
    const commands = [
      [],
      ['admin'],
      ['admin', 'bootstrap'],
      ['admin', 'set-tier'],
      ['keys'],
      ['keys', 'create'],
      ['keys', 'list'],
      ['keys', 'revoke'],
      ['db'],
      ['db', 'migrate'],
      ['db', 'health'],
    ];
    for (const cmd of commands) {
      const res = await stack.cli([...cmd, '--help']);
      assert.equal(res.code, 0, `evalbus ${[...cmd, '--help'].join(' ')} exited ${res.code}: ${res.stderr}`);
      assert.ok((res.stdout + res.stderr).trim().length > 0, `evalbus ${cmd.join(' ')} --help prints something`);
    }
  }));

  it('unknown commands, unknown flags and missing arguments exit 2', T, stack.wrap(async () => {
    const pw = stack.passwordFile('usage-password-123');
    const cases = [
      ['frobnicate'],
      ['keys', 'frobnicate'],
      ['admin', 'frobnicate'],
      ['db', 'frobnicate'],
      ['admin', 'bootstrap', '--email', 'x@example.com', '--password-file', pw], // no --team
      ['admin', 'bootstrap', '--team', uniqueSlug('u'), '--password-file', pw], // no --email
      ['admin', 'bootstrap', '--team', uniqueSlug('u'), '--email', 'x@example.com'], // no --password-file
      ['admin', 'bootstrap', '--team', uniqueSlug('u'), '--email', 'x@example.com', '--password-file', pw, '--no-such-flag'],
      ['admin', 'set-tier', '--team', 'whatever'], // no --tier
    ];
    for (const args of cases) {
      const res = await stack.cli(args);
      assert.equal(res.code, 2, `evalbus ${args.join(' ')} exited ${res.code}: ${res.stderr}`);
    }
  }));

  it('admin set-tier: 0 for a known team, 2 for a bad tier, 4 for an unknown team', T, stack.wrap(async () => {
    assert.ok(owner, 'needs the bootstrapped team');
    let res = await stack.cli(['admin', 'set-tier', '--team', owner.team, '--tier', 'platinum']);
    assert.equal(res.code, 2, `bad tier: exit ${res.code}: ${res.stderr}`);
    res = await stack.cli(['admin', 'set-tier', '--team', uniqueSlug('nobody'), '--tier', 'pro']);
    assert.equal(res.code, 4, `unknown team: exit ${res.code}: ${res.stderr}`);
    res = await stack.cli(['admin', 'set-tier', '--team', owner.team, '--tier', 'pro']);
    assert.equal(res.code, 0, `set-tier pro: exit ${res.code}: ${res.stderr}`);
    const seen = await pollUntil(async () => (await stack.whoami(owner.key)).team.tier === 'pro', {
      timeoutMs: 3000,
      intervalMs: 200,
    });
    assert.ok(seen.value, 'whoami shows tier pro within 3 s of set-tier');
    res = await stack.cli(['admin', 'set-tier', '--team', owner.team, '--tier', 'free']);
    assert.equal(res.code, 0, `set-tier free: exit ${res.code}: ${res.stderr}`);
  }));

  it('keys create, list and revoke through the CLI', T, stack.wrap(async () => {
    assert.ok(owner, 'needs the bootstrapped team');
    const env = { EVALBUS_API_KEY: owner.key };
    const name = `cli-key-${Date.now()}`;
    let res = await stack.cli(['keys', 'create', '--name', name, '--scopes', 'traces:read,traces:write'], { env });
    assert.equal(res.code, 0, `keys create: exit ${res.code}: ${res.stderr}`);
    const key = res.stdout.trim().split('\n').pop().trim();
    assert.match(key, KEY_RE, `keys create prints the key as the last line:\n${res.stdout}`);

    const me = await stack.whoami(key);
    assert.deepEqual([...me.scopes].sort(), ['traces:read', 'traces:write']);
    assert.equal(me.role, 'member', 'role defaults to member');
    assert.equal(me.team.slug, owner.team);

    res = await stack.cli(['keys', 'create', '--name', `${name}-v`, '--scopes', 'traces:read', '--role', 'viewer', '--project', 'proj-a'], { env });
    assert.equal(res.code, 0, `keys create --role --project: exit ${res.code}: ${res.stderr}`);
    const viewerKey = res.stdout.trim().split('\n').pop().trim();
    assert.match(viewerKey, KEY_RE);
    const vme = await stack.whoami(viewerKey);
    assert.equal(vme.role, 'viewer');
    assert.equal(vme.project, 'proj-a');

    res = await stack.cli(['keys', 'list'], { env });
    assert.equal(res.code, 0, `keys list: exit ${res.code}: ${res.stderr}`);
    assert.ok(res.stdout.includes(name), `keys list shows the key name ${name}:\n${res.stdout}`);
    const prefix = key.split('_')[1];
    assert.ok(res.stdout.includes(prefix), `keys list shows the key prefix ${prefix}`);
    for (const k of [key, viewerKey, owner.key]) {
      const secret = keySecret(k);
      assert.ok(!res.stdout.includes(secret), 'keys list never prints a key secret');
    }

    const list = await stack.api('GET', '/api/v1/keys', { key: owner.key });
    const row = list.body.keys.find((k) => k.name === name);
    assert.ok(row, `GET /api/v1/keys shows ${name}`);
    res = await stack.cli(['keys', 'revoke', row.id], { env });
    assert.equal(res.code, 0, `keys revoke: exit ${res.code}: ${res.stderr}`);
    const denied = await pollUntil(
      async () => (await stack.api('GET', '/api/v1/auth/whoami', { key })).status === 401,
      { timeoutMs: 1000, intervalMs: 50 },
    );
    assert.ok(denied.value, 'the revoked key is denied within 1 s');

    res = await stack.cli(['keys', 'revoke', '00000000-0000-4000-8000-000000000000'], { env });
    assert.equal(res.code, 4, `revoking an unknown key id: exit ${res.code}: ${res.stderr}`);
  }));

  it('keys commands exit 5 without a valid or sufficient credential', T, stack.wrap(async () => {
    assert.ok(owner, 'needs the bootstrapped team');
    const bogus = `eb_abcdefghij_${'A'.repeat(43)}`;
    let res = await stack.cli(['keys', 'list'], { env: { EVALBUS_API_KEY: bogus } });
    assert.equal(res.code, 5, `keys list with an unknown key: exit ${res.code}: ${res.stderr}`);

    const viewer = await stack.createKey(owner.key, { name: 'cli-viewer', scopes: ['traces:read'], role: 'viewer' });
    res = await stack.cli(['keys', 'create', '--name', 'nope', '--scopes', 'traces:read'], {
      env: { EVALBUS_API_KEY: viewer.key },
    });
    assert.equal(res.code, 5, `keys create with a viewer key: exit ${res.code}: ${res.stderr}`);
    assert.doesNotMatch(res.stdout.trim().split('\n').pop() ?? '', KEY_RE, 'no key printed when forbidden');
  }));

  it('db health and db migrate exit 0; unreachable servers exit 6', T, stack.wrap(async () => {
    let res = await stack.cli(['db', 'health']);
    assert.equal(res.code, 0, `db health: exit ${res.code}: ${res.stderr}`);
    res = await stack.cli(['db', 'migrate']);
    assert.equal(res.code, 0, `db migrate (already migrated): exit ${res.code}: ${res.stderr}`);
    res = await stack.cli(['db', 'migrate']);
    assert.equal(res.code, 0, `db migrate again: exit ${res.code}: ${res.stderr}`);

    const closed = await findFreePortBase(1, [[stack.portBase, stack.portBase + 10]]);
    const deadDb = `postgresql://evalbus@127.0.0.1:${closed}/evalbus?connect_timeout=5`;
    res = await stack.cli(['db', 'health'], { env: { EVALBUS_DATABASE_URL: deadDb }, timeoutMs: 30_000 });
    assert.equal(res.code, 6, `db health against a closed port: exit ${res.code}: ${res.stderr}`);

    res = await stack.cli(['keys', 'list'], {
      env: { EVALBUS_API_KEY: owner.key, EVALBUS_URL: `http://127.0.0.1:${closed}` },
      timeoutMs: 30_000,
    });
    assert.equal(res.code, 6, `keys list against a closed port: exit ${res.code}: ${res.stderr}`);
  }));
});
