/**
 * The layers of docs/architecture.md, checked on the source: each module of src/ (and the
 * browser SDK, the call page) imports only from the modules below it. Above all, the media
 * core (src/sfu) knows no wire protocol: nothing in it imports src/signaling or src/http.
 */
import assert from 'node:assert/strict';
import { readFileSync, globSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * Module → the modules it may import (besides itself and npm packages). A module is a
 * folder of src/ (or src/<file>.ts, client/, web/); docs/architecture.md draws the same table.
 */
const ALLOWED: Record<string, readonly string[]> = {
  'src/common': [],
  'src/config.ts': ['src/common'],
  'src/auth': ['src/common', 'src/config.ts'],
  'src/sfu': ['src/common', 'src/config.ts', 'src/auth'],
  'src/recording': ['src/sfu', 'src/common', 'src/config.ts'],
  'src/signaling': ['src/sfu', 'src/recording', 'src/auth', 'src/common', 'src/config.ts'],
  // scripts: the call page's bundle is built on first request (src/http/routes/web.ts).
  // The cluster node (issue 10): registry, claims, placement; it sees the media core's types only.
  'src/cluster': ['src/common', 'src/config.ts', 'src/auth'],
  'src/http': ['src/sfu', 'src/recording', 'src/signaling', 'src/auth', 'src/common', 'src/config.ts', 'scripts'],
  'src/service.ts': ['src/http', 'src/signaling', 'src/recording', 'src/sfu', 'src/auth', 'src/common', 'src/config.ts'],
  'src/media-worker': ['src/service.ts', 'src/common', 'src/config.ts'],
  'src/edge': ['src/http', 'src/signaling', 'src/media-worker', 'src/cluster', 'src/auth', 'src/common', 'src/config.ts'],
  'src/main.ts': ['src/edge', 'src/service.ts', 'src/common', 'src/config.ts'],
  'src/cli': ['src/auth', 'src/common', 'src/config.ts'],
  // Clients speak the protocol: its messages, never the server's insides.
  'src/node-client': ['src/signaling', 'src/common'],
  'src/loadtest': ['src/node-client', 'src/signaling', 'src/auth', 'src/service.ts', 'src/common', 'src/config.ts', 'scripts'],
  client: ['src/signaling'],
  web: ['client'],
};

function moduleOf(file: string): string | undefined {
  const parts = file.split('/');
  if (parts[0] === 'client' || parts[0] === 'web' || parts[0] === 'scripts') return parts[0];
  if (parts[0] !== 'src') return undefined;
  return parts.length === 2 ? file : `src/${parts[1]}`;
}

/** Every relative import (static, re-export or dynamic) of a file, resolved to a path from the root. */
function importsOf(file: string): string[] {
  const text = readFileSync(path.join(root, file), 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
    out.push(path.relative(root, path.resolve(root, path.dirname(file), m[1]!)));
  }
  return out;
}

const files = globSync(['src/**/*.ts', 'client/**/*.ts', 'web/**/*.ts'], { cwd: root }).filter((f) => !f.includes('/dist/'));

test('every module of src/, client/ and web/ imports only the modules below it', () => {
  assert.ok(files.length > 50, `found ${files.length} source files`);
  const violations: string[] = [];
  for (const file of files) {
    const from = moduleOf(file)!;
    const allowed = ALLOWED[from];
    if (allowed === undefined) {
      violations.push(`${file}: module ${from} is not in the layer table (add it here and to docs/architecture.md)`);
      continue;
    }
    for (const target of importsOf(file)) {
      const to = moduleOf(target);
      if (to === undefined || to === from || allowed.includes(to)) continue;
      violations.push(`${file} imports ${target} (${from} may import: ${allowed.join(', ') || 'nothing'})`);
    }
  }
  assert.deepEqual(violations, []);
});

test('the media core imports no wire protocol', () => {
  const sfu = files.filter((f) => f.startsWith('src/sfu/'));
  assert.ok(sfu.length > 10);
  for (const file of sfu) {
    for (const target of importsOf(file)) {
      assert.ok(!/^src\/(signaling|http|edge)\//.test(target), `${file} imports ${target}`);
    }
  }
});
