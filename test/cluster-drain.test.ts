/**
 * Issue 10, item 5: a node drains and loses no call. The draining node is a real child
 * process (`src/main.ts`, one media worker) so SIGTERM and its exit code are real; two
 * surviving edge nodes run in this process; one real redis-server. Participants are
 * Chromium call pages on the browser SDK, which rejoins by itself on `left room_moved`;
 * some reach the cluster through a surviving node, some straight through the draining one
 * (their rejoin goes through it and is relayed). Resume times are measured from the
 * draining node's own `room moved` log line to the first frame the page decodes again.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { after, afterEach, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Browser } from 'playwright-core';
import { buildWeb } from '../scripts/build-web.ts';
import { TokenService } from '../src/auth/tokens.ts';
import { rendezvousOrder } from '../src/cluster/rendezvous.ts';
import { loadConfig } from '../src/config.ts';
import type { EdgeService } from '../src/edge/edge-service.ts';
import { assertReceives, CallPage, launchChromium } from './browser/call-page.ts';
import { TestClient } from './helpers/client.ts';
import { RedisServer } from './helpers/redis-server.ts';
import { eventually, sleep, TestService } from './helpers/service.ts';

const API = { SCV_API_KEY: 'drain-test', SCV_API_SECRET: 'drain-test-secret-of-at-least-32-chars!!' };
const SECRET = 'cluster-secret-for-drain-tests';
const IDS = ['dn', 'sa', 'sb'];
const DRAIN_TIMEOUT_S = 20;
/**
 * Media resumes with no user action: bounded here and printed. Issue 10's 2 s is measured
 * where performance is, in `npm run bench:cluster` (part 5: 10 drains; docs/benchmarks.md);
 * here four Chromium pages and three nodes share 2 cores and resume in 0.8-1.8 s. The bound
 * catches a rejoin that waits for a backoff step or a record to expire, not a slow machine.
 */
const RESUME_BUDGET_MS = 5_000;

let redis: RedisServer;
let probe: Redis;
let survivors: TestService<EdgeService>[];
let browser: Browser;
const tokens = new TokenService(API.SCV_API_KEY, API.SCV_API_SECRET, loadConfig(API).auth.tokenLimits);
const pages = new Set<CallPage>();
const children = new Set<DrainingNode>();

/**
 * The pages share the machine's cores with the nodes, so event-loop utilization says nothing
 * about the SFU: overload shedding is off (a shedding node counts as full and takes no room).
 */
const clusterEnv = (redisUrl: string, id: string) => ({
  ...API,
  SCV_REDIS_URL: redisUrl,
  SCV_CLUSTER_SECRET: SECRET,
  SCV_NODE_ID: id,
  SCV_OVERLOAD_UTILIZATION: 'off',
});

before(async () => {
  await buildWeb();
  redis = await RedisServer.start();
  probe = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  // One after the other: a media worker's start is CPU-bound, and the machine is shared.
  survivors = [];
  for (const id of ['sa', 'sb']) survivors.push(await TestService.startEdge(1, clusterEnv(redis.url, id)));
  browser = await launchChromium();
});

afterEach(cleanUp);

after(async () => {
  await cleanUp();
  await browser?.close();
  await Promise.all((survivors ?? []).map((s) => s.close()));
  probe?.disconnect();
  await redis?.close();
});

const survivor = (id: string) => survivors[['sa', 'sb'].indexOf(id)]!;

/** The first room `<prefix>-<i>` whose rendezvous order over IDS starts with `first`. */
function roomOrdered(prefix: string, ...first: string[]): string {
  for (let i = 0; ; i++) {
    const room = `${prefix}-${i}`;
    if (first.every((id, k) => rendezvousOrder(room, IDS)[k] === id)) return room;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

interface LogLine {
  time: number;
  msg: string;
  [key: string]: unknown;
}

/** The node under test: `src/main.ts` in a child process, its JSON log lines kept. */
class DrainingNode {
  readonly id: string;
  readonly url: string;
  readonly child: ChildProcess;
  readonly log: LogLine[] = [];
  readonly exited: Promise<{ code: number | null; signal: string | null; at: number }>;

  private constructor(id: string, port: number, env: Record<string, string>) {
    this.id = id;
    this.url = `http://127.0.0.1:${port}`;
    this.child = spawn(process.execPath, ['src/main.ts'], {
      // Only the settings given here: the test's own SCV_* (SCV_TEST_LOG_LEVEL) are not the node's.
      env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SCV_'))), ...env, SCV_NODE_ID: id, SCV_MEDIA_WORKERS: '1', SCV_HTTP_PORT: String(port), SCV_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      let entry: LogLine;
      try {
        entry = JSON.parse(line) as LogLine;
      } catch {
        return;
      }
      this.log.push(entry);
      // Warnings and errors are shown as they come: they explain a failure.
      if ((entry.level as number) >= 40) process.stderr.write(`# ${id}: ${line}\n`);
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
    children.add(this);
  }

  static async start(id: string, env: Record<string, string>): Promise<DrainingNode> {
    const node = new DrainingNode(id, await freePort(), env);
    await eventually(
      async () => {
        if (node.child.exitCode !== null) throw new Error(`${id} exited with ${node.child.exitCode} before serving`);
        return (await fetch(`${node.url}/healthz`).catch(() => undefined))?.ok === true;
      },
      `${id} to serve`,
      60_000,
    );
    return node;
  }

  lines(msg: string): LogLine[] {
    return this.log.filter((l) => l.msg === msg);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

async function admin(): Promise<string> {
  return tokens.mint({ identity: 'ops', grants: ['admin'] });
}

async function openPage(baseUrl: string, room: string, name: string): Promise<CallPage> {
  const token = await tokens.mint({ identity: name, room, grants: ['publish', 'subscribe'] });
  const p = await CallPage.open(browser, { baseUrl, room, name, query: { token } });
  pages.add(p);
  await eventually(async () => (await p.state()) === 'connected', `${name} to connect`, 20_000);
  return p;
}

/** After each test, pass or fail: its pages closed, its node gone. */
async function cleanUp(): Promise<void> {
  await Promise.all([...pages].map((p) => p.close().catch(() => {})));
  pages.clear();
  for (const c of children) c.kill();
  await Promise.all([...children].map((c) => c.exited));
  children.clear();
}

/**
 * Waits until `p` is in the room again as a new participant (its sid changed: the SDK
 * rejoined) and decodes video from `from` again; returns when, in epoch ms.
 */
async function resumed(p: CallPage, from: string, oldSid: string, timeoutMs = 15_000): Promise<number> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const sid = await p.localSid();
    if (sid !== undefined && sid !== oldSid) {
      const r = await p.received(from);
      if ((r.video?.frames ?? 0) > 0 && (r.video?.frameWidth ?? 0) > 0 && (r.audio?.packets ?? 0) > 0) return Date.now();
    }
    await sleep(100);
  }
  throw new Error(`${p.name} did not decode ${from} again within ${timeoutMs} ms (state ${await p.state()})`);
}

async function roomInfo(via: { fetch: TestService['fetch'] }, room: string): Promise<{ status: number; body: any }> {
  return via.fetch(`/video/rooms/${room}`, { headers: { authorization: `Bearer ${await admin()}` } });
}

async function drainRequest(baseUrl: string, method: 'POST' | 'DELETE', node: string, token?: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${baseUrl}/video/nodes/${node}/drain`, {
    method,
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  return { status: res.status, body: await res.json() };
}

async function createRoom(baseUrl: string, name: string): Promise<number> {
  const res = await fetch(`${baseUrl}/video/rooms`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await admin()}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  await res.body?.cancel();
  return res.status;
}

const seenByAll = (id: string, draining?: boolean) =>
  survivors.every((s) => s.service.cluster!.nodes().some((n) => n.id === id && (draining === undefined || n.draining === draining)));

test('SIGTERM: both rooms move live to other nodes, every page decodes again with no user action, and the node exits 0', async () => {
  const dn = await DrainingNode.start('dn', { ...clusterEnv(redis.url, 'dn'), SCV_DRAIN_TIMEOUT: String(DRAIN_TIMEOUT_S) });
  await eventually(() => seenByAll('dn'), 'the survivors to see dn', 5000);
  // Both rooms are dn's; when it drains, one goes to sa, the other to sb.
  const roomA = roomOrdered('drain-a', 'dn', 'sa');
  const roomB = roomOrdered('drain-b', 'dn', 'sb');
  // In each room one page came through a surviving node, one straight to the draining node.
  const a1 = await openPage(survivor('sa').httpUrl, roomA, 'a1');
  const a2 = await openPage(dn.url, roomA, 'a2');
  const b1 = await openPage(survivor('sb').httpUrl, roomB, 'b1');
  const b2 = await openPage(dn.url, roomB, 'b2');
  const peers: [CallPage, string][] = [
    [a1, 'a2'],
    [a2, 'a1'],
    [b1, 'b2'],
    [b2, 'b1'],
  ];
  await Promise.all(peers.map(([p, from]) => assertReceives(p, from, 10, 60_000)));
  assert.equal(await probe.get(`scv:room:${roomA}`), 'dn');
  assert.equal(await probe.get(`scv:room:${roomB}`), 'dn');
  const sids = await Promise.all(peers.map(([p]) => p.localSid()));

  const signalledAt = Date.now();
  dn.child.kill('SIGTERM');
  const back = Promise.all(peers.map(([p, from], i) => resumed(p, from, sids[i]!)));
  // Its record says draining at once, not at the next heartbeat.
  await eventually(async () => JSON.parse((await probe.get('scv:node:dn')) ?? '{}').draining === true, "dn's record to say draining", 1000);
  const recordMs = Date.now() - signalledAt;
  const backAt = await back;
  const exit = await dn.exited;

  const moved = dn.lines('room moved');
  assert.deepEqual(moved.map((l) => [l.room, l.from, l.to]).sort(), [
    [roomA, 'dn', 'sa'],
    [roomB, 'dn', 'sb'],
  ]);
  const movedAt = (room: string) => moved.find((l) => l.room === room)!.time;
  const resumeMs = peers.map(([p], i) => ({ page: p.name, ms: backAt[i]! - movedAt(p.name.startsWith('a') ? roomA : roomB) }));
  const finished = dn.lines('drain finished: this node hosts nothing')[0];
  process.stdout.write(
    `# drain: record draining ${recordMs} ms after SIGTERM; resume after room_moved: ${resumeMs.map((r) => `${r.page} ${r.ms} ms`).join(', ')}; ` +
      `drain finished ${JSON.stringify(finished && { moved: finished.moved, left: finished.left, ms: finished.ms })}; exit ${exit.code} ${exit.at - signalledAt} ms after SIGTERM\n`,
  );
  for (const r of resumeMs) assert.ok(r.ms <= RESUME_BUDGET_MS, `${r.page} decoded again ${r.ms} ms after its room moved`);
  assert.equal(exit.code, 0);
  assert.ok(exit.at - signalledAt < (DRAIN_TIMEOUT_S * 1000) / 2, `exited ${exit.at - signalledAt} ms after SIGTERM`);
  assert.ok(finished !== undefined, 'the drain logged its end');
  assert.equal(finished.moved, 2);
  assert.equal(finished.left, 0);

  // Every participant is on the room's new node, the ones that came straight to dn included.
  assert.equal(await probe.get(`scv:room:${roomA}`), 'sa');
  assert.equal(await probe.get(`scv:room:${roomB}`), 'sb');
  for (const [room, via, names] of [
    [roomA, 'sb', ['a1', 'a2']],
    [roomB, 'sa', ['b1', 'b2']],
  ] as const) {
    const info = await roomInfo(survivor(via), room);
    assert.equal(info.status, 200, JSON.stringify(info.body));
    for (const name of names) assert.ok(JSON.stringify(info.body).includes(`"${name}"`), `${name} in ${room}: ${JSON.stringify(info.body)}`);
  }
  assert.deepEqual(
    await Promise.all(survivors.map(async (s) => (await s.fetch('/healthz')).body.rooms)),
    [1, 1],
    'each survivor hosts one of the moved rooms',
  );
  // Media goes straight to the new host: it keeps flowing after dn has gone, both ways.
  await Promise.all(peers.map(([p, from]) => assertReceives(p, from, 10, 15_000)));
});

test('admin drain through another node: the node empties and stays up taking no rooms; DELETE cancels it; a stopped empty node exits at once', async () => {
  const dn = await DrainingNode.start('dn', { ...clusterEnv(redis.url, 'dn'), SCV_DRAIN_TIMEOUT: String(DRAIN_TIMEOUT_S) });
  await eventually(() => seenByAll('dn', false), 'the survivors to see dn', 5000);
  const room = roomOrdered('admin', 'dn', 'sb');
  const p1 = await openPage(survivor('sa').httpUrl, room, 'p1');
  const p2 = await openPage(survivor('sb').httpUrl, room, 'p2');
  await Promise.all([assertReceives(p1, 'p2', 10, 60_000), assertReceives(p2, 'p1', 10, 60_000)]);
  assert.equal(await probe.get(`scv:room:${room}`), 'dn');
  const sids = await Promise.all([p1.localSid(), p2.localSid()]);

  // Bad requests first: nothing starts.
  assert.equal((await drainRequest(survivor('sa').httpUrl, 'POST', 'dn')).body.error.code, 'UNAUTHORIZED');
  const participantToken = await tokens.mint({ identity: 'p9', room, grants: ['publish', 'subscribe'] });
  const forbidden = await drainRequest(survivor('sa').httpUrl, 'POST', 'dn', participantToken);
  assert.equal(forbidden.status, 403);
  assert.equal(forbidden.body.error.code, 'FORBIDDEN');
  const unknown = await drainRequest(survivor('sa').httpUrl, 'POST', 'nope', await admin());
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.error.code, 'NODE_NOT_FOUND');
  assert.equal((await drainRequest(dn.url, 'DELETE', 'nope', await admin())).body.error.code, 'NODE_NOT_FOUND');
  assert.equal(JSON.parse((await probe.get('scv:node:dn'))!).draining, false);

  // Asked at sa, relayed to dn.
  const started = await drainRequest(survivor('sa').httpUrl, 'POST', 'dn', await admin());
  assert.equal(started.status, 202, JSON.stringify(started.body));
  assert.deepEqual(started.body, { node: 'dn', draining: true, rooms: 1 });
  const backAt = await Promise.all([resumed(p1, 'p2', sids[0]!), resumed(p2, 'p1', sids[1]!)]);
  const movedAt = dn.lines('room moved').find((l) => l.room === room)!.time;
  process.stdout.write(`# admin drain: resume after room_moved: p1 ${backAt[0]! - movedAt} ms, p2 ${backAt[1]! - movedAt} ms\n`);
  for (const t of backAt) assert.ok(t - movedAt <= RESUME_BUDGET_MS, `decoded again ${t - movedAt} ms after the move`);
  assert.equal(await probe.get(`scv:room:${room}`), 'sb');
  const movedSids = await Promise.all([p1.localSid(), p2.localSid()]);

  // dn stays up, empty, draining; a new room it would have won goes to the next node, whoever is asked.
  await eventually(async () => (await fetch(`${dn.url}/healthz`).then((r) => r.json()) as any).rooms === 0, 'dn to host nothing', 5000);
  const health = (await fetch(`${dn.url}/healthz`).then((r) => r.json())) as any;
  assert.equal(health.cluster.draining, true);
  await eventually(() => seenByAll('dn', true), 'the survivors to see dn draining', 2000);
  const fresh = roomOrdered('fresh', 'dn', 'sa');
  assert.equal(await createRoom(dn.url, fresh), 201);
  assert.equal(await probe.get(`scv:room:${fresh}`), 'sa', 'a room created at the draining node is placed elsewhere');
  const fresh2 = roomOrdered('fresh2', 'dn', 'sb');
  assert.equal(await createRoom(survivor('sa').httpUrl, fresh2), 201);
  assert.equal(await probe.get(`scv:room:${fresh2}`), 'sb');
  assert.equal(dn.child.exitCode, null, 'an admin drain does not stop the node');

  // Cancelled (asked at sb): dn takes rooms again; the moved room stays where it went.
  const cancelled = await drainRequest(survivor('sb').httpUrl, 'DELETE', 'dn', await admin());
  assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
  assert.deepEqual(cancelled.body, { node: 'dn', draining: false });
  assert.equal(JSON.parse((await probe.get('scv:node:dn'))!).draining, false, 'the record says so at once');
  await eventually(() => seenByAll('dn', false), 'the survivors to see dn take rooms again', 2000);
  const again = roomOrdered('again', 'dn');
  assert.equal(await createRoom(survivor('sa').httpUrl, again), 201);
  assert.equal(await probe.get(`scv:room:${again}`), 'dn');
  assert.equal(await probe.get(`scv:room:${room}`), 'sb');
  assert.deepEqual(await Promise.all([p1.localSid(), p2.localSid()]), movedSids, 'the cancel moved nobody');

  // Drained again (it hosts the empty room just created), then stopped: empty, it exits at once.
  const second = await drainRequest(dn.url, 'POST', 'dn', await admin());
  assert.equal(second.status, 202);
  assert.equal(second.body.rooms, 1);
  await eventually(async () => (await probe.get(`scv:room:${again}`)) !== 'dn', 'the empty room to be handed on', 5000);
  await eventually(async () => ((await fetch(`${dn.url}/healthz`).then((r) => r.json())) as any).rooms === 0, 'dn to host nothing', 5000);
  const signalledAt = Date.now();
  dn.child.kill('SIGTERM');
  const exit = await dn.exited;
  process.stdout.write(`# stopped while drained: exit ${exit.code} ${exit.at - signalledAt} ms after SIGTERM\n`);
  assert.equal(exit.code, 0);
  assert.ok(exit.at - signalledAt < 3000, `exited ${exit.at - signalledAt} ms after SIGTERM`);
  await Promise.all([assertReceives(p1, 'p2'), assertReceives(p2, 'p1')]);
});

test('a drain with nowhere to move a room ends at SCV_DRAIN_TIMEOUT: the room is closed as a shutdown and the node exits 0', async () => {
  // A cluster of its own: no other node can take the room.
  const alone = await RedisServer.start();
  try {
    const lone = await DrainingNode.start('lone', { ...clusterEnv(alone.url, 'lone'), SCV_DRAIN_TIMEOUT: '3' });
    const wsUrl = `${lone.url.replace(/^http/, 'ws')}/video/ws`;
    const client = await TestClient.join({ wsUrl, token: await tokens.mint({ identity: 'stay', room: 'stuck', grants: ['publish', 'subscribe'] }), name: 'stay' });
    try {
      const signalledAt = Date.now();
      lone.child.kill('SIGTERM');
      const left = await client.waitForEvent('left', () => true, 10_000);
      const leftAt = Date.now();
      const exit = await lone.exited;
      const deadline = lone.lines('drain deadline: the rooms left here are closed as a shutdown')[0];
      process.stdout.write(`# nowhere to go: left (${left.reason}) ${leftAt - signalledAt} ms after SIGTERM, exit ${exit.code} ${exit.at - signalledAt} ms\n`);
      assert.equal(left.reason, 'server_shutdown');
      assert.ok(leftAt - signalledAt >= 3000, `the room stayed until the deadline (${leftAt - signalledAt} ms)`);
      assert.equal(exit.code, 0);
      assert.ok(exit.at - signalledAt < 8000, `exited ${exit.at - signalledAt} ms after SIGTERM`);
      assert.ok(deadline !== undefined, 'the drain logged its deadline');
      assert.equal(deadline.moved, 0);
      assert.equal(deadline.left, 1);
      assert.equal(lone.lines('room moved').length, 0);
    } finally {
      await client.close();
    }
  } finally {
    await alone.close();
  }
});

test('a second SIGTERM during a drain stops the node at once, with exit 0', async () => {
  const alone = await RedisServer.start();
  try {
    const lone = await DrainingNode.start('lone2', { ...clusterEnv(alone.url, 'lone2'), SCV_DRAIN_TIMEOUT: '30' });
    const wsUrl = `${lone.url.replace(/^http/, 'ws')}/video/ws`;
    const client = await TestClient.join({ wsUrl, token: await tokens.mint({ identity: 'stay', room: 'stuck2', grants: ['publish', 'subscribe'] }), name: 'stay' });
    try {
      lone.child.kill('SIGTERM');
      await eventually(() => lone.lines("draining: moving this node's rooms to other nodes").length === 1, 'the drain to start', 5000);
      const secondAt = Date.now();
      lone.child.kill('SIGTERM');
      const left = await client.waitForEvent('left', () => true, 10_000);
      const exit = await lone.exited;
      assert.equal(left.reason, 'server_shutdown');
      assert.equal(exit.code, 0);
      assert.ok(exit.at - secondAt < 5000, `exited ${exit.at - secondAt} ms after the second SIGTERM`);
    } finally {
      await client.close();
    }
  } finally {
    await alone.close();
  }
});
