// docs/api/openapi.yaml against the code: it must parse as YAML (a description holding ': '
// unquoted once broke it), and every route a service serves (the route tables in
// services/*/*.c) must be documented there with its method, and nothing documented that no
// service serves. No stack: the files only.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import YAML from 'yaml';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

/** {method path} of every route in the services' route tables ({"GET", "/api/v1/...", ...}). */
function servedRoutes() {
  const routes = new Set();
  for (const service of fs.readdirSync(path.join(REPO, 'services'))) {
    const dir = path.join(REPO, 'services', service);
    if (!fs.statSync(dir).isDirectory()) continue;
    for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.c'))) {
      const text = fs.readFileSync(path.join(dir, file), 'utf8');
      for (const m of text.matchAll(/\{"(GET|POST|PUT|PATCH|DELETE)",\s*"(\/[^"]*)"/g)) routes.add(`${m[1]} ${m[2]}`);
    }
  }
  return routes;
}

describe('openapi.yaml', () => {
  const text = fs.readFileSync(path.join(REPO, 'docs/api/openapi.yaml'), 'utf8');

  it('parses as YAML, as an OpenAPI 3 document', () => {
    const doc = YAML.parse(text, { uniqueKeys: true });
    assert.match(String(doc.openapi), /^3\./, 'openapi: 3.x');
    assert.ok(doc.paths && Object.keys(doc.paths).length > 0, 'it has paths');
  });

  it('documents every route the services serve, and only those', () => {
    const doc = YAML.parse(text);
    const documented = new Set();
    for (const [p, item] of Object.entries(doc.paths)) {
      for (const m of METHODS) if (item[m]) documented.add(`${m.toUpperCase()} ${p}`);
    }
    const served = servedRoutes();
    assert.ok(served.size >= 30, `the route tables were found (${served.size} routes)`);
    const undocumented = [...served].filter((r) => !documented.has(r)).sort();
    assert.deepEqual(undocumented, [], 'routes served but not in openapi.yaml');
    // documented API routes that no table serves (the shared /healthz, /readyz and /metrics
    // are served by the HTTP layer itself)
    const shared = new Set(['GET /healthz', 'GET /readyz', 'GET /metrics']);
    const unserved = [...documented].filter((r) => !served.has(r) && !shared.has(r)).sort();
    assert.deepEqual(unserved, [], 'routes in openapi.yaml that no service serves');
  });
});
