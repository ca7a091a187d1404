import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { loadConfig } from '../src/config.ts';
import { startEdge, type EdgeService } from '../src/edge/edge-service.ts';
import { EDGE_LOCAL, preflights, ROUTES, type WorkerRoute } from '../src/http/route-table.ts';
import { startService, type Service } from '../src/service.ts';

/**
 * The edge relays what src/http/route-table.ts declares; a media process registers its
 * routes there too. These tests fail when the two drift apart: a route a media process
 * has under /video, /whip or /whep that the table does not know (the edge would answer
 * it 404), or a declared route nobody serves.
 */

const config = (env: Record<string, string> = {}) => loadConfig({ SCV_HTTP_PORT: '0', SCV_LOG_LEVEL: 'silent', ...env });
const RELAYED_PREFIXES = ['/video/', '/whip/', '/whep/'];

let worker: Service;
let edge: EdgeService;

before(async () => {
  worker = await startService(config(), { web: false });
  edge = await startEdge(config({ SCV_MEDIA_WORKERS: '1' }));
});

after(async () => {
  await edge?.close();
  await worker?.close();
});

/** Every `METHOD url` fastify's router holds, from its printed tree (one node a line, four columns a level). */
function registered(printed: string): Set<string> {
  const routes = new Set<string>();
  const stack: string[] = [];
  for (const line of printed.split('\n')) {
    const m = /^((?:[│ ] {3})*)[├└]── (\S+)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (m === null) continue;
    const depth = m[1]!.length / 4;
    stack.length = depth;
    stack.push(m[2]!);
    const url = stack.join('');
    for (const method of m[3]?.split(', ') ?? []) routes.add(`${method} ${url}`);
  }
  return routes;
}

const key = (r: { method: string; url: string }) => `${r.method} ${r.url}`;
const declared = new Set((Object.values(ROUTES) as WorkerRoute[]).map(key));
const edgeLocal = new Set(EDGE_LOCAL.map(key));
const preflighted = new Set(preflights().map((p) => `OPTIONS ${p.url}`));

function workerRoutes(): string[] {
  const all = registered(worker.app.printRoutes({ commonPrefix: false }));
  // The parser must see the tree at all, or every check below would pass on nothing.
  assert.ok(all.has('POST /video/signal') && all.has('GET /healthz'), `could not read the router's tree:\n${worker.app.printRoutes({ commonPrefix: false })}`);
  return [...all].filter((r) => RELAYED_PREFIXES.some((p) => r.split(' ')[1]!.startsWith(p)));
}

test('every route a media process registers under /video, /whip and /whep is declared, or answered by the edge itself', () => {
  const gets = new Set(workerRoutes().filter((r) => r.startsWith('GET ')).map((r) => r.slice(4)));
  const unknown = workerRoutes().filter((r) => {
    // Fastify adds HEAD to every GET route, at the edge as in a media process.
    if (r.startsWith('HEAD ') && gets.has(r.slice(5))) return false;
    return !declared.has(r) && !edgeLocal.has(r) && !preflighted.has(r);
  });
  assert.deepEqual(unknown, [], 'add these to ROUTES (or EDGE_LOCAL) in src/http/route-table.ts, and register them at ROUTES.<name>');
});

test('every declared route and preflight is served by a media process', () => {
  const served = new Set(workerRoutes());
  const stale = [...declared, ...edgeLocal, ...preflighted].filter((r) => !served.has(r));
  assert.deepEqual(stale, []);
});

test('the edge answers every declared route as a media process does: a request without a token is 401, a preflight 204', async () => {
  const sample = (url: string) => url.replace(/:[a-z]+/g, 'x');
  for (const r of [...(Object.values(ROUTES) as WorkerRoute[]), ...preflights().map((p) => ({ method: 'OPTIONS', url: p.url }))]) {
    const path = sample(r.url);
    const at = async (base: string) => {
      const res = await fetch(`${base}${path}`, { method: r.method });
      const body = await res.text();
      return { status: res.status, code: body === '' ? undefined : (JSON.parse(body) as { error?: { code: string } }).error?.code };
    };
    const want = r.method === 'OPTIONS' ? { status: 204, code: undefined } : { status: 401, code: 'UNAUTHORIZED' };
    assert.deepEqual(await at(worker.httpUrl), want, `${r.method} ${path} at a media process`);
    assert.deepEqual(await at(edge.httpUrl), want, `${r.method} ${path} at the edge`);
  }
});

test('a route the table does not declare is not relayed: the edge answers 404 itself', async () => {
  const res = await fetch(`${edge.httpUrl}/video/rooms/x/recordings`, { method: 'GET' });
  assert.equal(res.status, 404);
  assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'NOT_FOUND');
});
