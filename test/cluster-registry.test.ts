/**
 * The first slice of issue 10 against a real redis-server: nodes find each other in the
 * registry, a node that stops heartbeating is gone within 5 s and its claims with it, a
 * room is claimed by exactly one node however the first joins race, its claim lives as long
 * as the room, and a join for a room hosted elsewhere is refused naming that node. Without
 * SCV_REDIS_URL nothing touches Redis; with it but without a cluster secret the service
 * does not start.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { TokenService } from '../src/auth/tokens.ts';
import { NODE_TTL_MS } from '../src/cluster/cluster.ts';
import { rendezvousOrder } from '../src/cluster/rendezvous.ts';
import { RoomClaims } from '../src/cluster/room-claims.ts';
import { ConfigError, loadConfig } from '../src/config.ts';
import type { EdgeService } from '../src/edge/edge-service.ts';
import { ServerError } from '../src/node-client/server-error.ts';
import { someOffer } from './helpers/client.ts';
import { RedisServer } from './helpers/redis-server.ts';
import { eventually, sleep, TestService } from './helpers/service.ts';

const API = { SCV_API_KEY: 'cluster-test', SCV_API_SECRET: 'cluster-test-secret-of-at-least-32-chars' };
const SECRET = 'cluster-secret-for-tests';

let redis: RedisServer;
let probe: Redis;

before(async () => {
  redis = await RedisServer.start();
  probe = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  // The outage test stops the server under it; it reconnects by itself.
  probe.on('error', () => {});
});

after(async () => {
  probe?.disconnect();
  await redis?.close();
});

function clusterEnv(nodeId: string, extra: Record<string, string> = {}): Record<string, string> {
  return { ...API, SCV_REDIS_URL: redis.url, SCV_CLUSTER_SECRET: SECRET, SCV_MEDIA_WORKERS: '0', SCV_NODE_ID: nodeId, ...extra };
}

async function startNodes(ids: string[], extra: Record<string, string> = {}): Promise<TestService[]> {
  return Promise.all(ids.map((id) => TestService.start(clusterEnv(id, extra))));
}

const viewOf = (n: TestService) => n.service.cluster!.nodes().map((r) => r.id).sort();

/** The first room name `room-<i>` whose rendezvous order over `ids` starts with `host`. */
function roomHostedBy(host: string, ids: string[], prefix = 'room'): string {
  for (let i = 0; ; i++) {
    const room = `${prefix}-${i}`;
    if (rendezvousOrder(room, ids)[0] === host) return room;
  }
}

async function createRoom(n: Pick<TestService, 'token' | 'fetch'>, name: string): Promise<{ status: number; body: any }> {
  const token = await n.token('admin', undefined, ['admin']);
  return n.fetch('/video/rooms', { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ name }) });
}

test('three nodes see each other within a heartbeat of the last one starting, and /healthz says so', async () => {
  const nodes = await startNodes(['a', 'b', 'c']);
  // Every node has written its record by now; the others read it at their next heartbeat (1 s) at the latest.
  const started = Date.now();
  try {
    await eventually(() => nodes.every((n) => viewOf(n).join() === 'a,b,c'), 'every node to see all three', 1250);
    const took = Date.now() - started;
    const { body } = await nodes[0]!.fetch('/healthz');
    assert.equal(body.status, 'ok');
    assert.deepEqual(body.cluster, { node: 'a', url: nodes[0]!.httpUrl, redis: 'up', nodes: 3, draining: false });
    const record = JSON.parse((await probe.get('scv:node:b'))!);
    assert.equal(record.url, nodes[1]!.httpUrl);
    assert.equal(record.mediaWorkers, 0);
    assert.deepEqual(Object.keys(record.load).sort(), ['busiestUtilization', 'forwardedPacketsPerSecond', 'participants', 'rooms', 'shedding', 'tracks']);
    const ttl = await probe.pttl('scv:node:b');
    assert.ok(ttl > 0 && ttl <= NODE_TTL_MS, `record expiry ${ttl} ms`);
    process.stdout.write(`# three nodes saw each other ${took} ms after the last one started\n`);
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
  // Leaving on purpose takes the record and the claims at once.
  assert.deepEqual(await probe.smembers('scv:nodes'), []);
  assert.equal(await probe.exists('scv:node:a'), 0);
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

test('a node killed with SIGKILL is gone for the others within 5 s, and so are its claims', async () => {
  const nodes = await startNodes(['a', 'b']);
  const port = await freePort();
  const victim: ChildProcess = spawn(process.execPath, ['src/main.ts'], {
    env: { ...process.env, ...clusterEnv('victim', { SCV_HTTP_PORT: String(port), SCV_LOG_LEVEL: 'warn' }) },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    await eventually(() => nodes.every((n) => viewOf(n).join() === 'a,b,victim'), 'both nodes to see the victim', 15_000);
    const room = roomHostedBy('victim', ['a', 'b', 'victim']);
    const tokens = new TokenService(API.SCV_API_KEY, API.SCV_API_SECRET, loadConfig(API).auth.tokenLimits);
    const token = await tokens.mint({ identity: 'admin', grants: ['admin'] });
    const res = await fetch(`http://127.0.0.1:${port}/video/rooms`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: room }),
    });
    assert.equal(res.status, 201, await res.text());
    assert.equal(await probe.get(`scv:room:${room}`), 'victim');

    const killedAt = Date.now();
    victim.kill('SIGKILL');
    await eventually(() => nodes.every((n) => !viewOf(n).includes('victim')), 'the victim to leave every view', 5000);
    const gone = Date.now() - killedAt;
    await eventually(async () => (await probe.exists(`scv:room:${room}`)) === 0, "the victim's claim to expire", 5000 - gone);
    const freed = Date.now() - killedAt;
    // Its room goes to the runner-up now.
    const runnerUp = rendezvousOrder(room, ['a', 'b'])[0]!;
    const host = nodes.find((n) => n.service.cluster!.node === runnerUp)!;
    assert.equal((await createRoom(host, room)).status, 201);
    assert.equal(await probe.get(`scv:room:${room}`), runnerUp);
    process.stdout.write(`# after SIGKILL: gone from the views in ${gone} ms, claim freed in ${freed} ms\n`);
  } finally {
    victim.kill('SIGKILL');
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('two nodes claiming one room in the same tick: exactly one wins, 50 races', async () => {
  const clients = [new Redis(redis.url), new Redis(redis.url)];
  try {
    await Promise.all(clients.map((c) => c.ping()));
    const claims = [new RoomClaims(clients[0]!, 'scv:', 'x', NODE_TTL_MS), new RoomClaims(clients[1]!, 'scv:', 'y', NODE_TTL_MS)];
    for (let i = 0; i < 50; i++) {
      const room = `race-${i}`;
      // Who writes first alternates, so each side wins some and loses some.
      const order = i % 2 === 0 ? claims : [...claims].reverse();
      const owners = await Promise.all(order.map((c) => c.claim(room)));
      assert.equal(owners[0], owners[1], `${room}: both learn the same owner`);
      assert.equal(claims.filter((c) => c.held.has(room)).length, 1, `${room}: exactly one holds it`);
      assert.equal(await probe.get(`scv:room:${room}`), owners[0]);
    }
    const wins = claims.map((c) => c.held.size);
    assert.ok(wins[0]! > 0 && wins[1]! > 0, `both sides won races: ${wins.join(' / ')}`);
    process.stdout.write(`# 50 races: x won ${wins[0]}, y won ${wins[1]}\n`);
    // The loser cannot release the winner's claim.
    for (let i = 0; i < 50; i++) {
      const loser = claims.find((c) => !c.held.has(`race-${i}`))!;
      await loser.release(`race-${i}`);
    }
    assert.equal((await probe.keys('scv:room:race-*')).length, 50);
  } finally {
    for (const c of clients) c.disconnect();
  }
});

test('first joins of 50 new rooms at two nodes at once: each room is hosted once, the other node names its host', async () => {
  const nodes = await startNodes(['a', 'b']);
  try {
    await eventually(() => nodes.every((n) => viewOf(n).join() === 'a,b'), 'both nodes to see each other', 3000);
    for (let i = 0; i < 50; i++) {
      const room = `together-${i}`;
      const answers = await Promise.all(nodes.map((n) => createRoom(n, room)));
      const hosts = nodes.filter((n) => n.service.sfu.findRoom(room) !== undefined);
      assert.equal(hosts.length, 1, `${room} hosted by exactly one node`);
      const host = hosts[0]!;
      const other = nodes.find((n) => n !== host)!;
      assert.equal(answers[nodes.indexOf(host)]!.status, 201);
      const refused = answers[nodes.indexOf(other)]!;
      assert.equal(refused.status, 421);
      assert.equal(refused.body.error.code, 'ROOM_ON_OTHER_NODE');
      assert.ok(refused.body.error.message.includes(host.httpUrl), refused.body.error.message);
      assert.equal(await probe.get(`scv:room:${room}`), host.service.cluster!.node);
    }
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('a WebSocket join or a WHIP offer for a room hosted on another node gets ROOM_ON_OTHER_NODE with its URL', async () => {
  const nodes = await startNodes(['a', 'b']);
  try {
    await eventually(() => nodes.every((n) => viewOf(n).join() === 'a,b'), 'both nodes to see each other', 3000);
    const [a, b] = nodes as [TestService, TestService];
    const room = roomHostedBy('b', ['a', 'b'], 'ws');
    const alice = await b.join('alice', room);
    assert.equal(await probe.get(`scv:room:${room}`), 'b');
    const err = await a.join('bob', room).then(
      () => assert.fail('the join at the other node must be refused'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ServerError, String(err));
    assert.equal(err.code, 'ROOM_ON_OTHER_NODE');
    assert.ok(err.message.includes(b.httpUrl), err.message);
    assert.equal(a.service.sfu.findRoom(room), undefined);
    // WHIP (an HTTP session) is placed the same way.
    const whip = await a.fetch(`/whip/${room}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await a.token('carol', room)}`, 'content-type': 'application/sdp' },
      body: await someOffer('sendonly'),
    });
    assert.equal(whip.status, 421);
    assert.equal(whip.body.error.code, 'ROOM_ON_OTHER_NODE');
    assert.equal(a.service.sfu.findRoom(room), undefined);
    // A room whose hash says "a" but that b already hosts stays on b: the claim decides, not the hash.
    const onA = roomHostedBy('a', ['a', 'b'], 'claimed');
    await probe.set(`scv:room:${onA}`, 'b', 'PX', NODE_TTL_MS);
    const refused = await createRoom(a, onA);
    assert.equal(refused.status, 421);
    assert.deepEqual(refused.body.error.details, { node: 'b', url: b.httpUrl });
    await alice.close();
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
});

test('a claim is refreshed while its room lives and released when it closes', async () => {
  const [a] = await startNodes(['a'], { SCV_EMPTY_ROOM_TIMEOUT: '4.5' });
  try {
    assert.equal((await createRoom(a!, 'lives')).status, 201);
    assert.equal(await probe.get('scv:room:lives'), 'a');
    // Past the claim's own expiry: only the heartbeat keeps it.
    await sleep(NODE_TTL_MS + 500);
    assert.ok(a!.service.sfu.findRoom('lives') !== undefined);
    assert.equal(await probe.get('scv:room:lives'), 'a');
    const ttl = await probe.pttl('scv:room:lives');
    assert.ok(ttl > NODE_TTL_MS - 1500, `claim expiry ${ttl} ms is being refreshed`);
    await eventually(() => a!.service.sfu.findRoom('lives') === undefined, 'the empty room to close', 5000);
    await eventually(async () => (await probe.exists('scv:room:lives')) === 0, 'the claim to be released', 1000);
  } finally {
    await a!.close();
  }
});

test('Redis killed and started again: the node keeps its room, places new ones here, and re-registers and re-claims them', async () => {
  const [a] = await startNodes(['a']);
  try {
    assert.equal((await createRoom(a!, 'before')).status, 201);
    const alice = await a!.join('alice', 'before');
    await redis.stop();
    await eventually(async () => (await a!.fetch('/healthz')).body.cluster.redis === 'down', '/healthz to say redis is down', 3000);
    assert.equal((await createRoom(a!, 'during')).status, 201, 'a new room during the outage is placed here');
    assert.ok(alice.socketOpen && a!.service.sfu.findRoom('before')!.size === 1, 'the running room keeps its participant');
    await redis.start();
    await eventually(async () => (await a!.fetch('/healthz')).body.cluster.redis === 'up', '/healthz to say redis is up again', 5000);
    // Nothing was persisted: the record and both claims are written again from the node.
    await eventually(async () => (await probe.get('scv:room:during')) === 'a' && (await probe.get('scv:room:before')) === 'a', 'both claims to be taken again', 3000);
    assert.equal(await probe.exists('scv:node:a'), 1);
    await alice.close();
  } finally {
    await a!.close();
  }
});

test('a node started while Redis is down runs alone, then joins when Redis answers', async () => {
  await redis.stop();
  let a: TestService | undefined;
  try {
    a = await TestService.start(clusterEnv('late'));
    assert.equal((await a.fetch('/healthz')).body.cluster.redis, 'down');
    assert.equal((await createRoom(a, 'early')).status, 201);
  } finally {
    await redis.start();
  }
  try {
    await eventually(async () => (await a.fetch('/healthz')).body.cluster.redis === 'up', '/healthz to say redis is up', 5000);
    await eventually(async () => (await probe.get('scv:room:early')) === 'late' && (await probe.exists('scv:node:late')) === 1, 'the record and the claim', 3000);
  } finally {
    await a.close();
  }
});

test('with media workers the edge is the node: it places, claims, counts its workers\' load and releases', async () => {
  const nodes = await Promise.all(['ea', 'eb'].map((id) => TestService.startEdge(1, clusterEnv(id, { SCV_EMPTY_ROOM_TIMEOUT: '1', SCV_RECONNECT_GRACE: '0' }))));
  try {
    const [ea, eb] = nodes as [TestService<EdgeService>, TestService<EdgeService>];
    await eventually(() => nodes.every((n) => n.service.cluster!.nodes().length === 2), 'both edges to see each other', 3000);
    const room = roomHostedBy('eb', ['ea', 'eb'], 'edge');
    const alice = await eb.join('alice', room);
    assert.equal(await probe.get(`scv:room:${room}`), 'eb');
    // A join at the other edge is relayed to eb (test/cluster-relay.test.ts): the room stays on eb.
    const bob = await ea.join('bob', room);
    assert.equal(await probe.get(`scv:room:${room}`), 'eb');
    await eventually(async () => JSON.parse((await probe.get('scv:node:eb'))!).load.participants === 2, "eb's record to count the worker's participants", 3000);
    const record = JSON.parse((await probe.get('scv:node:eb'))!);
    assert.equal(record.mediaWorkers, 1);
    assert.equal(record.load.rooms, 1);
    const { body } = await eb.fetch('/healthz');
    assert.equal(body.cluster.node, 'eb');
    assert.equal(body.cluster.redis, 'up');
    await Promise.all([alice.close(), bob.close()]);
    // The worker closes the empty room after 1 s and reports it; the edge releases the claim once
    // the pool lets the room's assignment go (at most ASSIGNMENT_GRACE_MS, 10 s, after it was assigned).
    await eventually(async () => (await probe.exists(`scv:room:${room}`)) === 0, "the edge to release the room's claim", 12_000);
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
  assert.deepEqual(await probe.smembers('scv:nodes'), []);
});

test('without SCV_REDIS_URL nothing touches Redis', async () => {
  const connectionsBefore = Number(/total_connections_received:(\d+)/.exec(await probe.info('stats'))![1]);
  const keysBefore = await probe.dbsize();
  const n = await TestService.start({ ...API });
  try {
    assert.equal(n.service.cluster, undefined);
    const { body } = await n.fetch('/healthz');
    assert.equal(body.cluster, undefined);
    assert.equal((await createRoom(n, 'alone')).status, 201);
    const c = await n.join('carol', 'alone');
    await c.close();
  } finally {
    await n.close();
  }
  assert.equal(Number(/total_connections_received:(\d+)/.exec(await probe.info('stats'))![1]), connectionsBefore);
  assert.equal(await probe.dbsize(), keysBefore);
});

test('SCV_REDIS_URL without SCV_CLUSTER_SECRET refuses to start, and says why', () => {
  assert.throws(
    () => loadConfig({ SCV_REDIS_URL: redis.url, SCV_MEDIA_WORKERS: '0' }),
    (err: unknown) => err instanceof ConfigError && /SCV_CLUSTER_SECRET is required when SCV_REDIS_URL is set/.test(err.message),
  );
  assert.throws(() => loadConfig({ SCV_REDIS_URL: 'http://x', SCV_CLUSTER_SECRET: SECRET, SCV_MEDIA_WORKERS: '0' }), /SCV_REDIS_URL/);
  assert.throws(() => loadConfig({ SCV_REDIS_URL: redis.url, SCV_CLUSTER_SECRET: 'short', SCV_MEDIA_WORKERS: '0' }), /SCV_CLUSTER_SECRET.*16/);
  const ok = loadConfig({ SCV_REDIS_URL: redis.url, SCV_CLUSTER_SECRET: SECRET, SCV_MEDIA_WORKERS: '0', SCV_PUBLIC_URL: 'https://n1.example.com/' });
  assert.deepEqual(ok.cluster, { redisUrl: redis.url, nodeId: undefined, publicUrl: 'https://n1.example.com', secret: SECRET, keyPrefix: 'scv:' });
  const r = spawnSync(process.execPath, ['src/main.ts'], {
    env: { ...process.env, SCV_REDIS_URL: redis.url, SCV_MEDIA_WORKERS: '0', SCV_HTTP_PORT: '0' },
    encoding: 'utf8',
    timeout: 20_000,
  });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /SCV_CLUSTER_SECRET is required when SCV_REDIS_URL is set/);
});
