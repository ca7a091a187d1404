/**
 * The first slice of issue 10 against a real redis-server: nodes (edges with one media
 * worker each) find each other in the registry, a node that stops heartbeating is gone
 * within 5 s and its claims with it, a room is claimed by exactly one node however the
 * first joins race, its claim lives as long as the room, and the claim, not the hash,
 * decides where a request is relayed; a relayed request for a room a third node holds is
 * refused naming that node, and a relayed first join is taken by its receiver. Without SCV_REDIS_URL nothing touches
 * Redis; with it but without a cluster secret, or with SCV_MEDIA_WORKERS=0, the service
 * does not start.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { TokenService } from '../src/auth/tokens.ts';
import { NODE_TTL_MS } from '../src/cluster/cluster.ts';
import { NODE_AUTH_HEADER, NodeAuth } from '../src/cluster/node-auth.ts';
import { rendezvousOrder } from '../src/cluster/rendezvous.ts';
import { RoomClaims } from '../src/cluster/room-claims.ts';
import { ConfigError, loadConfig } from '../src/config.ts';
import type { EdgeService } from '../src/edge/edge-service.ts';
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
  return { ...API, SCV_REDIS_URL: redis.url, SCV_CLUSTER_SECRET: SECRET, SCV_MEDIA_WORKERS: '1', SCV_NODE_ID: nodeId, ...extra };
}

type Node = TestService<EdgeService>;

/** Cluster nodes are edges: one media worker each, started one after the other (a worker's start is CPU-bound). */
async function startNodes(ids: string[], extra: Record<string, string> = {}): Promise<Node[]> {
  const nodes: Node[] = [];
  try {
    for (const id of ids) nodes.push(await TestService.startEdge(1, clusterEnv(id, extra)));
  } catch (err) {
    await Promise.all(nodes.map((n) => n.close()));
    throw err;
  }
  return nodes;
}

const viewOf = (n: Node) => n.service.cluster!.nodes().map((r) => r.id).sort();
/** Whether the node's media worker has (or was just given) the room. */
const hosts = (n: Node, room: string) => n.service.pool.find(room) !== undefined;

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
    assert.deepEqual(body.cluster, { node: 'a', url: nodes[0]!.httpUrl, redis: 'up', joined: true, nodes: 3, draining: false });
    const record = JSON.parse((await probe.get('scv:node:b'))!);
    assert.equal(record.url, nodes[1]!.httpUrl);
    assert.equal(record.mediaWorkers, 1);
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

test('first joins of 50 new rooms at two nodes at once: each room is hosted once, the other node relays to it', async () => {
  const nodes = await startNodes(['a', 'b']);
  try {
    await eventually(() => nodes.every((n) => viewOf(n).join() === 'a,b'), 'both nodes to see each other', 3000);
    for (let i = 0; i < 50; i++) {
      const room = `together-${i}`;
      const answers = await Promise.all(nodes.map((n) => createRoom(n, room)));
      const hosting = nodes.filter((n) => hosts(n, room));
      assert.equal(hosting.length, 1, `${room} hosted by exactly one node`);
      const host = hosting[0]!;
      // The host's worker created the room once: one of the two answers says created, the other found it.
      assert.deepEqual(answers.map((a) => a.status).sort(), [200, 201], `${room}: ${JSON.stringify(answers)}`);
      assert.ok(answers.every((a) => a.body.sid === answers[0]!.body.sid), `${room}: one room, one sid`);
      assert.equal(await probe.get(`scv:room:${room}`), host.service.cluster!.node);
    }
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
});

/** A relayed WebSocket join (the upgrade signed as by node `sender`): the first answer to it. */
function relayedJoin(n: Node, sender: string, token: string): Promise<{ type: string; code?: string; message?: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(n.service.wsUrl, { headers: { [NODE_AUTH_HEADER]: new NodeAuth(SECRET, sender).sign('GET', '/video/ws') } } as never);
    ws.addEventListener('open', () => ws.send(JSON.stringify({ type: 'join', id: 1, protocol: 1, token })));
    ws.addEventListener('message', (ev) => {
      resolve(JSON.parse(String(ev.data)));
      ws.close();
    });
    ws.addEventListener('error', () => reject(new Error('the relayed upgrade was refused')));
  });
}

test('at a node without the room, a join and a WHIP offer go to the claim holder; a relayed request for a room another node holds gets ROOM_ON_OTHER_NODE, for a free one is taken', async () => {
  const nodes = await startNodes(['a', 'b']);
  try {
    await eventually(() => nodes.every((n) => viewOf(n).join() === 'a,b'), 'both nodes to see each other', 3000);
    const [a, b] = nodes as [Node, Node];
    // The hash says "a", but b holds the claim (as after a failover): the claim decides.
    const room = roomHostedBy('a', ['a', 'b'], 'claimed');
    await probe.set(`scv:room:${room}`, 'b', 'PX', NODE_TTL_MS);
    const alice = await a.join('alice', room);
    assert.ok(hosts(b, room), 'b hosts the room');
    assert.ok(!hosts(a, room), 'a relayed the join and hosts nothing');
    const whip = await a.fetch(`/whip/${room}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await a.token('carol', room, ['publish'])}`, 'content-type': 'application/sdp' },
      body: await someOffer('sendonly'),
    });
    assert.equal(whip.status, 201, JSON.stringify(whip.body));
    assert.ok(!hosts(a, room));
    await eventually(async () => (await b.fetch('/healthz')).body.participants === 2, "b's worker to count alice and the WHIP publisher", 3000);
    assert.equal(await probe.get(`scv:room:${room}`), 'b');

    // A relayed request is placed on its receiver or refused: one hop at most. Here a third
    // node "c" relayed to a a room b holds the claim of.
    const elsewhere = roomHostedBy('b', ['a', 'b'], 'third');
    await probe.set(`scv:room:${elsewhere}`, 'b', 'PX', 60_000);
    const admin = await a.token('admin', undefined, ['admin']);
    const refused = await a.fetch('/video/rooms', {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json', [NODE_AUTH_HEADER]: new NodeAuth(SECRET, 'c').sign('POST', '/video/rooms') },
      body: JSON.stringify({ name: elsewhere }),
    });
    assert.equal(refused.status, 421, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, 'ROOM_ON_OTHER_NODE');
    assert.deepEqual(refused.body.error.details, { node: 'b', url: b.httpUrl });
    const wsRefused = await relayedJoin(a, 'c', await a.token('dave', elsewhere));
    assert.equal(wsRefused.type, 'error');
    assert.equal(wsRefused.code, 'ROOM_ON_OTHER_NODE');
    assert.ok(wsRefused.message!.includes(b.httpUrl), wsRefused.message);
    assert.ok(!hosts(a, elsewhere) && !hosts(b, elsewhere), 'nothing was created');
    assert.equal(await probe.get(`scv:room:${elsewhere}`), 'b');
    await probe.del(`scv:room:${elsewhere}`);

    // A relayed first join of an unclaimed room is taken by its receiver even if the
    // receiver's view puts it elsewhere: the sender chose it (it may just have found the
    // winner dead, which the receiver's view does not know yet).
    const chosen = roomHostedBy('b', ['a', 'b'], 'chosen');
    const taken = await a.fetch('/video/rooms', {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json', [NODE_AUTH_HEADER]: new NodeAuth(SECRET, 'c').sign('POST', '/video/rooms') },
      body: JSON.stringify({ name: chosen }),
    });
    assert.equal(taken.status, 201, JSON.stringify(taken.body));
    assert.equal(await probe.get(`scv:room:${chosen}`), 'a');
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
    const worker = () => a!.service.pool.workers()[0]!;
    assert.ok(worker().rooms.has('lives'), "the worker reports the room");
    assert.equal(await probe.get('scv:room:lives'), 'a');
    const ttl = await probe.pttl('scv:room:lives');
    assert.ok(ttl > NODE_TTL_MS - 1500, `claim expiry ${ttl} ms is being refreshed`);
    await eventually(() => !worker().rooms.has('lives'), 'the empty room to close', 5000);
    // The edge releases the claim once the pool lets the room's assignment go (at most
    // ASSIGNMENT_GRACE_MS, 10 s, after it was assigned: a report may lag an assignment).
    await eventually(async () => (await probe.exists('scv:room:lives')) === 0, 'the claim to be released', 8000);
  } finally {
    await a!.close();
  }
});

test('Redis killed and started again: the node keeps its room, places new ones here, and re-registers and re-claims them', async () => {
  const [a] = await startNodes(['a']);
  try {
    assert.equal((await createRoom(a!, 'before')).status, 201);
    const alice = await a!.join('alice', 'before');
    await eventually(async () => (await a!.fetch('/healthz')).body.participants === 1, "the worker's load report to count alice", 3000);
    await redis.stop();
    await eventually(async () => (await a!.fetch('/healthz')).body.cluster.redis === 'down', '/healthz to say redis is down', 3000);
    // Liveness never depends on Redis; the node says it is not in the registry now.
    const health = (await a!.fetch('/healthz')).body;
    assert.equal(health.status, 'ok');
    assert.equal(health.cluster.joined, false);
    assert.equal((await createRoom(a!, 'during')).status, 201, 'a new room during the outage is placed here');
    assert.ok(alice.socketOpen, "the running room's participant keeps its socket");
    assert.equal((await a!.fetch('/healthz')).body.participants, 1, 'the running room keeps its participant');
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
  let a: Node | undefined;
  try {
    a = await TestService.startEdge(1, clusterEnv('late'));
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

test("an edge's record counts its workers' load, and a join at another edge leaves the room where it is", async () => {
  const nodes = await startNodes(['ea', 'eb'], { SCV_RECONNECT_GRACE: '0' });
  try {
    const [ea, eb] = nodes as [Node, Node];
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
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
  }
  assert.deepEqual(await probe.smembers('scv:nodes'), []);
});

test('without SCV_REDIS_URL nothing touches Redis', async () => {
  const connectionsBefore = Number(/total_connections_received:(\d+)/.exec(await probe.info('stats'))![1]);
  const keysBefore = await probe.dbsize();
  const n = await TestService.startEdge(1, { ...API });
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

test('SCV_REDIS_URL without SCV_CLUSTER_SECRET, or with SCV_MEDIA_WORKERS=0, refuses to start, and says why', () => {
  assert.throws(
    () => loadConfig({ SCV_REDIS_URL: redis.url }),
    (err: unknown) => err instanceof ConfigError && /SCV_CLUSTER_SECRET is required when SCV_REDIS_URL is set/.test(err.message),
  );
  assert.throws(() => loadConfig({ SCV_REDIS_URL: 'http://x', SCV_CLUSTER_SECRET: SECRET }), /SCV_REDIS_URL/);
  assert.throws(() => loadConfig({ SCV_REDIS_URL: redis.url, SCV_CLUSTER_SECRET: 'short' }), /SCV_CLUSTER_SECRET.*16/);
  const ok = loadConfig({ SCV_REDIS_URL: redis.url, SCV_CLUSTER_SECRET: SECRET, SCV_MEDIA_WORKERS: '1', SCV_PUBLIC_URL: 'https://n1.example.com/' });
  assert.deepEqual(ok.cluster, { redisUrl: redis.url, nodeId: undefined, publicUrl: 'https://n1.example.com', secret: SECRET, keyPrefix: 'scv:' });
  assert.ok(loadConfig({ SCV_REDIS_URL: redis.url, SCV_CLUSTER_SECRET: SECRET }).mediaWorkers > 0, 'unset: one worker per core');
  // A cluster node is an edge: its one relay serves worker and node hops alike.
  assert.throws(
    () => loadConfig({ SCV_REDIS_URL: redis.url, SCV_CLUSTER_SECRET: SECRET, SCV_MEDIA_WORKERS: '0' }),
    (err: unknown) =>
      err instanceof ConfigError && /SCV_REDIS_URL: a cluster node runs its media in worker processes .*set SCV_MEDIA_WORKERS to 1 or more, or leave it unset/.test(err.message),
  );
  const r = spawnSync(process.execPath, ['src/main.ts'], {
    env: { ...process.env, SCV_REDIS_URL: redis.url, SCV_CLUSTER_SECRET: SECRET, SCV_MEDIA_WORKERS: '0', SCV_HTTP_PORT: '0' },
    encoding: 'utf8',
    timeout: 20_000,
  });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /SCV_REDIS_URL: a cluster node runs its media in worker processes/);
  assert.ok(!/SCV_CLUSTER_SECRET/.test(r.stderr), r.stderr);
});
