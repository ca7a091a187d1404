/**
 * Three cluster nodes and their Redis on this machine, for a person to try with the call
 * page (docs/cluster.md, "Run it"):
 *
 *   npm run cluster:demo
 *
 * Starts redis-server (no persistence, a temporary folder) and three nodes (src/main.ts,
 * one media worker each) on 127.0.0.1:8081-8083, each with its own node id, public URL and
 * media port range, one shared API key and cluster secret. Prints each node's call-page
 * URL with a token, and how to mint more. Ctrl-C (SIGINT or SIGTERM) stops the nodes, then
 * Redis, and exits 0; if any of them dies, the demo says so, stops the rest and exits 1.
 *
 * Settings (environment): CLUSTER_DEMO_PORTS (three HTTP ports, default 8081,8082,8083),
 * CLUSTER_DEMO_REDIS_PORT (default: a free one), CLUSTER_DEMO_MEDIA_PORT (first UDP port of
 * the first node's media range, default 40000; each node gets 1000), CLUSTER_DEMO_HOST
 * (default 127.0.0.1), REDIS_SERVER (default /usr/bin/redis-server).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TokenService } from '../src/auth/tokens.ts';
import { loadConfig } from '../src/config.ts';
import { buildWeb } from './build-web.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MEDIA_PORTS_PER_NODE = 1000;
const STOP_TIMEOUT_MS = 10_000;

interface Child {
  name: string;
  proc: ChildProcess;
  exited: Promise<void>;
}

const env = process.env;
const host = env.CLUSTER_DEMO_HOST ?? '127.0.0.1';
const ports = (env.CLUSTER_DEMO_PORTS ?? '8081,8082,8083').split(',').map(Number);
if (ports.length !== 3 || ports.some((p) => !Number.isInteger(p) || p <= 0 || p > 65535)) fail('CLUSTER_DEMO_PORTS must be three ports, e.g. 8081,8082,8083');
const mediaBase = Number(env.CLUSTER_DEMO_MEDIA_PORT ?? 40000);
if (!Number.isInteger(mediaBase) || mediaBase < 1024 || mediaBase + 3 * MEDIA_PORTS_PER_NODE > 65536) fail('CLUSTER_DEMO_MEDIA_PORT must leave room for 3000 UDP ports');
const redisServer = env.REDIS_SERVER ?? '/usr/bin/redis-server';

// One key for the whole cluster: a token minted with it is valid at every node, as a relayed join needs.
const apiKey = 'cluster-demo';
const apiSecret = randomBytes(32).toString('base64url');
const clusterSecret = randomBytes(24).toString('base64url');

const children: Child[] = [];
let stopping = false;
const dir = mkdtempSync(path.join(tmpdir(), 'scv-cluster-demo-'));

function fail(message: string): never {
  process.stderr.write(`cluster-demo: ${message}\n`);
  process.exit(2);
}

function start(name: string, command: string, args: string[], childEnv: NodeJS.ProcessEnv): Child {
  // Their own process group: a terminal's Ctrl-C reaches the demo alone, which stops the nodes before Redis.
  const proc = spawn(command, args, { cwd: root, env: childEnv, stdio: ['ignore', 'inherit', 'inherit'], detached: true });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const child = { name, proc, exited };
  children.push(child);
  proc.once('error', (err) => process.stderr.write(`cluster-demo: ${name} could not start: ${err.message}\n`));
  proc.once('exit', (code, signal) => {
    if (stopping) return;
    process.stderr.write(`cluster-demo: ${name} exited (${signal ?? `code ${code}`}); stopping the others\n`);
    const log = path.join(dir, 'redis.log');
    if (name === 'redis' && existsSync(log)) process.stderr.write(readFileSync(log, 'utf8').split('\n').slice(-10).join('\n'));
    void stop(1);
  });
  return child;
}

/** Nodes first (they leave the registry while Redis still answers), then Redis. */
async function stop(code: number): Promise<never> {
  stopping = true;
  const nodes = children.filter((c) => c.name !== 'redis');
  await Promise.all(nodes.map(terminate));
  await Promise.all(children.filter((c) => c.name === 'redis').map(terminate));
  rmSync(dir, { recursive: true, force: true });
  process.exit(code);
}

/**
 * Stops a child and everything in its process group (a node's media workers). The whole
 * cluster stops, so no node has anywhere to drain its rooms to: a second SIGTERM makes a
 * draining node stop at once (src/main.ts).
 */
async function terminate(c: Child): Promise<void> {
  const pid = c.proc.pid;
  if (pid === undefined) return;
  if (c.proc.exitCode === null && c.proc.signalCode === null) {
    c.proc.kill('SIGTERM');
    const again = setTimeout(() => c.proc.kill('SIGTERM'), 200);
    const timer = setTimeout(() => c.proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await c.exited;
    clearTimeout(again);
    clearTimeout(timer);
  }
  // A worker still closing when its node exited stops on SIGTERM once it has no node to talk to.
  signalGroup(pid, 'SIGTERM');
  const end = Date.now() + STOP_TIMEOUT_MS;
  while (signalGroup(pid, 0) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  signalGroup(pid, 'SIGKILL');
}

/** Signals process group `pgid`; false when no process is left in it. */
function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function waitHealthy(url: string, child: Child): Promise<void> {
  const end = Date.now() + 30_000;
  while (Date.now() < end) {
    if (child.proc.exitCode !== null || child.proc.signalCode !== null) return;
    const res = await fetch(`${url}/healthz`).catch(() => undefined);
    if (res?.ok === true) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${child.name} did not answer /healthz within 30 s`);
}

// If the demo itself fails, nothing it started outlives it.
process.on('exit', () => {
  for (const c of children) if (c.proc.pid !== undefined) signalGroup(c.proc.pid, 'SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    process.stdout.write(`\ncluster-demo: ${signal}: stopping the nodes and redis\n`);
    void stop(0);
  });
}

// The nodes serve the call page from web/dist (npm start builds it first, so does the demo).
await buildWeb();
const redisPort = env.CLUSTER_DEMO_REDIS_PORT === undefined ? await freePort() : Number(env.CLUSTER_DEMO_REDIS_PORT);
start('redis', redisServer, ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning', '--logfile', path.join(dir, 'redis.log')], {
  PATH: env.PATH,
});

const nodes = ports.map((port, i) => {
  const id = `node-${i + 1}`;
  const url = `http://${host}:${port}`;
  const first = mediaBase + i * MEDIA_PORTS_PER_NODE;
  const child = start(id, process.execPath, ['src/main.ts'], {
    ...env,
    SCV_HTTP_HOST: host,
    SCV_HTTP_PORT: String(port),
    SCV_PUBLIC_URL: url,
    SCV_NODE_ID: id,
    SCV_REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    SCV_CLUSTER_SECRET: clusterSecret,
    SCV_API_KEY: apiKey,
    SCV_API_SECRET: apiSecret,
    SCV_MEDIA_WORKERS: '1',
    SCV_RTC_PORT_MIN: String(first),
    SCV_RTC_PORT_MAX: String(first + MEDIA_PORTS_PER_NODE - 1),
    SCV_LOG_LEVEL: env.SCV_LOG_LEVEL ?? 'warn',
  });
  return { id, url, child };
});

try {
  await Promise.all(nodes.map((n) => waitHealthy(n.url, n.child)));
} catch (err) {
  process.stderr.write(`cluster-demo: ${(err as Error).message}\n`);
  await stop(1);
}
if (!stopping) {
  const tokens = new TokenService(apiKey, apiSecret, loadConfig({ SCV_API_KEY: apiKey, SCV_API_SECRET: apiSecret }).auth.tokenLimits);
  const lines = ['', 'cluster-demo: three nodes and redis are up. Open each in a browser (one room "demo", through three different nodes):', ''];
  for (const [i, n] of nodes.entries()) {
    const token = await tokens.mint({ identity: `guest-${i + 1}`, room: 'demo', grants: ['publish', 'subscribe'] });
    lines.push(`  ${n.id}  ${n.url}/?room=demo&name=guest-${i + 1}&token=${token}`);
  }
  const admin = await tokens.mint({ identity: 'ops', grants: ['admin'] });
  lines.push(
    '',
    'More tokens (any node accepts them):',
    `  SCV_API_KEY=${apiKey} SCV_API_SECRET=${apiSecret} npm run token -- --room demo --identity someone`,
    'The cluster, as any node sees it:',
    `  curl -H 'authorization: Bearer ${admin}' ${nodes[0]!.url}/video/rooms`,
    `  curl -H 'authorization: Bearer ${admin}' ${nodes[0]!.url}/video/nodes`,
    `pids: redis ${children[0]!.proc.pid}, ${nodes.map((n) => `${n.id} ${n.child.proc.pid}`).join(', ')}`,
    'Ctrl-C stops everything.',
    '',
  );
  process.stdout.write(lines.join('\n'));
}
