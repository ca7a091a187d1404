/**
 * Issue 10, item 7: one view of the cluster. Three edge nodes (one media worker each) and
 * one real redis-server: GET /video/rooms at any node lists every live node's rooms with
 * their node, bounded for a node that does not answer; GET /video/nodes is the live view;
 * /healthz says joined, draining and Redis; /metrics has the cluster gauges.
 */
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { NODE_AUTH_HEADER, NodeAuth } from '../src/cluster/node-auth.ts';
import { rendezvousOrder } from '../src/cluster/rendezvous.ts';
import type { EdgeService } from '../src/edge/edge-service.ts';
import { LISTING_TIMEOUT_MS } from '../src/edge/cluster-routes.ts';
import { RedisServer } from './helpers/redis-server.ts';
import { eventually, startCluster, TestService } from './helpers/service.ts';

const API = { SCV_API_KEY: 'view-test', SCV_API_SECRET: 'view-test-secret-of-at-least-32-chars!!' };
const SECRET = 'cluster-secret-for-view-tests';
const IDS = ['va', 'vb', 'vc'];

let redis: RedisServer;
let probe: Redis;
let nodes: TestService<EdgeService>[];

before(async () => {
  redis = await RedisServer.start();
  probe = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  nodes = await startCluster(redis.url, SECRET, IDS, () => ({ ...API, SCV_RECONNECT_GRACE: '0' }));
});

after(async () => {
  await Promise.all((nodes ?? []).map((n) => n.close()));
  probe?.disconnect();
  await redis?.close();
});

const node = (id: string) => nodes[IDS.indexOf(id)]!;

function roomHostedBy(host: string, prefix: string): string {
  for (let i = 0; ; i++) {
    const room = `${prefix}-${i}`;
    if (rendezvousOrder(room, IDS)[0] === host) return room;
  }
}

async function admin(n: TestService<EdgeService>, path: string, headers: Record<string, string> = {}) {
  return n.fetch(path, { headers: { authorization: `Bearer ${await n.token('ops', undefined, ['admin'])}`, ...headers } });
}

/** One sample of a Prometheus text exposition, labels written as in it (`direction="out"`). */
async function sample(n: TestService<EdgeService>, name: string, labels = ''): Promise<number | undefined> {
  const text = String((await n.fetch('/metrics')).body);
  const key = labels === '' ? `${name} ` : `${name}{${labels}} `;
  const line = text.split('\n').find((l) => l.startsWith(key));
  return line === undefined ? undefined : Number(line.slice(key.length));
}

test('GET /video/rooms at any node lists the rooms of every node with their node; a hop gets its node\'s own rooms only', async () => {
  const onA = roomHostedBy('va', 'list');
  const onB = roomHostedBy('vb', 'list');
  // alice reaches va's room through vc (relayed), bob reaches vb's room at vb itself.
  const alice = await node('vc').join('alice', onA);
  const bob = await node('vb').join('bob', onB);
  try {
    for (const id of IDS) {
      const res = await admin(node(id), '/video/rooms');
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(res.body.unreachable, [], `${id}: every node answered`);
      const byName = new Map<string, any>(res.body.rooms.map((r: any) => [r.name, r]));
      assert.equal(byName.get(onA)?.node, 'va', `${id}: ${JSON.stringify(res.body.rooms)}`);
      assert.equal(byName.get(onB)?.node, 'vb', `${id}: ${JSON.stringify(res.body.rooms)}`);
      assert.equal(byName.get(onA)?.participants, 1);
      assert.equal(res.body.rooms.filter((r: any) => r.name === onA).length, 1, 'listed once, by its host');
    }
    // What a node answers another node (the fan-out's own request): its own rooms, nothing fanned out again.
    const hop = await admin(node('vb'), '/video/rooms', { [NODE_AUTH_HEADER]: new NodeAuth(SECRET, 'va').sign('GET', '/video/rooms') });
    assert.equal(hop.status, 200);
    assert.deepEqual(hop.body.rooms.map((r: any) => [r.name, r.node]), [[onB, 'vb']]);
    assert.equal(hop.body.unreachable, undefined);
    // Admin only, at every node, as before.
    const plain = await node('vc').fetch('/video/rooms', { headers: { authorization: `Bearer ${await node('vc').token('eve', onA)}` } });
    assert.equal(plain.status, 403);
    assert.equal(plain.body.error.code, 'FORBIDDEN');
    assert.equal((await node('vc').fetch('/video/rooms')).body.error.code, 'UNAUTHORIZED');
  } finally {
    await Promise.all([alice.close({ leave: true }), bob.close({ leave: true })]);
  }
});

test('GET /video/nodes is the live view: every node with its URL, media, draining, load and start', async () => {
  const res = await admin(node('vb'), '/video/nodes');
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.node, 'vb');
  assert.deepEqual(res.body.nodes.map((n: any) => n.id), IDS);
  for (const [i, n] of (res.body.nodes as any[]).entries()) {
    assert.equal(n.url, nodes[i]!.httpUrl);
    assert.equal(n.draining, false);
    assert.equal(typeof n.media.address, 'string');
    assert.deepEqual(Object.keys(n.load).sort(), ['busiestUtilization', 'forwardedPacketsPerSecond', 'participants', 'rooms', 'shedding', 'tracks']);
    assert.ok(Date.parse(n.startedAt) <= Date.now(), n.startedAt);
  }
  const plain = await node('vb').fetch('/video/nodes', { headers: { authorization: `Bearer ${await node('vb').token('eve', 'x')}` } });
  assert.equal(plain.status, 403);
});

test('/healthz says joined, draining and Redis; /metrics has the cluster gauges, relayed sessions and requests counted each way', async () => {
  const health = (await node('va').fetch('/healthz')).body;
  assert.equal(health.status, 'ok');
  assert.deepEqual(health.cluster, { node: 'va', url: node('va').httpUrl, redis: 'up', joined: true, nodes: 3, draining: false });

  const room = roomHostedBy('va', 'gauges');
  const before = {
    outC: await sample(node('vc'), 'scv_cluster_relayed_requests_total', 'direction="out"'),
    inA: await sample(node('va'), 'scv_cluster_relayed_requests_total', 'direction="in"'),
  };
  // One HTTP request through vc for va's room, and one WebSocket session through vc.
  const create = await node('vc').fetch('/video/rooms', {
    method: 'POST',
    headers: { authorization: `Bearer ${await node('vc').token('ops', undefined, ['admin'])}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: room }),
  });
  assert.equal(create.status, 201, JSON.stringify(create.body));
  const carol = await node('vc').join('carol', room);
  try {
    assert.equal(await sample(node('vc'), 'scv_cluster_relayed_requests_total', 'direction="out"'), before.outC! + 1);
    assert.equal(await sample(node('va'), 'scv_cluster_relayed_requests_total', 'direction="in"'), before.inA! + 1);
    // The previous test's sessions may still be closing: the four settle on carol's alone.
    const connections = async () =>
      [
        await sample(node('vc'), 'scv_cluster_relayed_connections', 'direction="out"'),
        await sample(node('vc'), 'scv_cluster_relayed_connections', 'direction="in"'),
        await sample(node('va'), 'scv_cluster_relayed_connections', 'direction="in"'),
        await sample(node('va'), 'scv_cluster_relayed_connections', 'direction="out"'),
      ].join();
    await eventually(async () => (await connections()) === '1,0,1,0', `one session relayed vc → va (now ${await connections()})`, 3000);
    // Rooms of the first test may still be open (empty) on va: the gauge counts what va lists as its own.
    const hostedByVa = async () => ((await admin(node('vc'), '/video/rooms')).body.rooms as any[]).filter((r) => r.node === 'va').length;
    await eventually(async () => (await sample(node('va'), 'scv_cluster_rooms_hosted')) === (await hostedByVa()), "va's gauge to count va's rooms", 3000);
    assert.ok((await hostedByVa()) >= 1);
    assert.equal(await sample(node('vc'), 'scv_cluster_rooms_hosted'), 0, 'vc relays, it hosts nothing');
    for (const n of nodes) {
      assert.equal(await sample(n, 'scv_cluster_nodes'), 3);
      assert.equal(await sample(n, 'scv_cluster_redis_up'), 1);
      assert.equal(await sample(n, 'scv_cluster_draining'), 0);
    }
  } finally {
    await carol.close({ leave: true });
  }
  await eventually(async () => (await sample(node('vc'), 'scv_cluster_relayed_connections', 'direction="out"')) === 0, "vc's relayed session to end", 3000);
  await eventually(async () => (await sample(node('va'), 'scv_cluster_relayed_connections', 'direction="in"')) === 0, "va's relayed session to end", 3000);
});

test('outside a cluster: no cluster in /healthz, no cluster gauges, GET /video/nodes is NOT_FOUND, GET /video/rooms has no node', async () => {
  const alone = await TestService.startEdge(1, { ...API });
  try {
    assert.equal((await alone.fetch('/healthz')).body.cluster, undefined);
    assert.ok(!String((await alone.fetch('/metrics')).body).includes('scv_cluster_'));
    const nodesRes = await admin(alone, '/video/nodes');
    assert.equal(nodesRes.status, 404);
    assert.equal(nodesRes.body.error.code, 'NOT_FOUND');
    const c = await alone.join('dan', 'solo');
    const rooms = await admin(alone, '/video/rooms');
    assert.deepEqual(rooms.body.rooms.map((r: any) => r.name), ['solo']);
    assert.equal(rooms.body.rooms[0].node, undefined);
    assert.equal(rooms.body.unreachable, undefined);
    await c.close();
  } finally {
    await alone.close();
  }
});

// Last: it takes vb away.
test('a node that does not answer is listed as unreachable within the bound; a node closed drops out of the listing and the view', async () => {
  const onB = roomHostedBy('vb', 'gone');
  const bob = await node('vb').join('bob', onB);
  // A node in the registry whose port accepts connections and never answers (a hung process).
  const held = new Set<Socket>();
  const hung = createServer((s) => held.add(s));
  await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
  const port = (hung.address() as { port: number }).port;
  const record = { ...node('va').service.cluster!.nodes().find((n) => n.id === 'va')!, id: 'hung', url: `http://127.0.0.1:${port}`, limits: { maxRooms: 0 } };
  const keepAlive = setInterval(() => void probe.multi().set('scv:node:hung', JSON.stringify({ ...record, writtenAt: Date.now() }), 'PX', 3000).sadd('scv:nodes', 'hung').exec(), 500);
  try {
    await probe.multi().set('scv:node:hung', JSON.stringify(record), 'PX', 3000).sadd('scv:nodes', 'hung').exec();
    await eventually(() => node('vc').service.cluster!.nodes().some((n) => n.id === 'hung'), 'vc to see the hung node', 3000);
    const started = Date.now();
    const res = await admin(node('vc'), '/video/rooms');
    const took = Date.now() - started;
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.unreachable, ['hung']);
    assert.ok(res.body.rooms.some((r: any) => r.name === onB && r.node === 'vb'), 'the other nodes are listed');
    assert.ok(took >= LISTING_TIMEOUT_MS - 50 && took < LISTING_TIMEOUT_MS + 1500, `answered in ${took} ms`);
    process.stdout.write(`# listing with a hung node: ${took} ms\n`);
  } finally {
    clearInterval(keepAlive);
    await probe.multi().del('scv:node:hung').srem('scv:nodes', 'hung').exec();
    for (const s of held) s.destroy();
    hung.close();
  }

  await bob.close();
  const closedAt = Date.now();
  await node('vb').close();
  await eventually(
    async () => {
      const res = await admin(node('vc'), '/video/rooms');
      return res.body.unreachable.length === 0 && !res.body.rooms.some((r: any) => r.node === 'vb');
    },
    "vb's rooms to leave the listing",
    5000,
  );
  const listed = Date.now() - closedAt;
  await eventually(async () => (await admin(node('va'), '/video/nodes')).body.nodes.map((n: any) => n.id).join() === 'va,vc', "va's view to be va and vc", 3000);
  assert.equal((await node('va').fetch('/healthz')).body.cluster.nodes, 2);
  assert.equal(await sample(node('va'), 'scv_cluster_nodes'), 2);
  process.stdout.write(`# a closed node left the listing after ${listed} ms\n`);
});
