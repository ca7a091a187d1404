/**
 * Slice 2 of issue 10, item 3: any node answers any request. Three edge nodes (one media
 * worker each) and one real redis-server; a request or a join for a room hosted elsewhere
 * is relayed node to node with a credential derived from SCV_CLUSTER_SECRET, and the
 * hosting node checks it (and the client's token) as always. Media goes straight to the
 * hosting node's worker.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import { NODE_AUTH_HEADER, NODE_AUTH_WINDOW_MS, NodeAuth } from '../src/cluster/node-auth.ts';
import { rendezvousOrder } from '../src/cluster/rendezvous.ts';
import type { EdgeService } from '../src/edge/edge-service.ts';
import { someOffer } from './helpers/client.ts';
import { RedisServer } from './helpers/redis-server.ts';
import { startCluster, TestService } from './helpers/service.ts';

const API = { SCV_API_KEY: 'relay-test', SCV_API_SECRET: 'relay-test-secret-of-at-least-32-chars!' };
const SECRET = 'cluster-secret-for-relay-tests';
const IDS = ['ra', 'rb', 'rc'];
/** Per client IP and 10 s window; every request of this file comes from 127.0.0.1. */
const RATE_LIMIT = 60;

let redis: RedisServer;
let probe: Redis;
let nodes: TestService<EdgeService>[];

before(async () => {
  redis = await RedisServer.start();
  probe = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  nodes = await startCluster(redis.url, SECRET, IDS, () => ({ ...API, SCV_RECONNECT_GRACE: '0', SCV_HTTP_RATE_LIMIT: String(RATE_LIMIT) }));
});

after(async () => {
  await Promise.all((nodes ?? []).map((n) => n.close()));
  probe?.disconnect();
  await redis?.close();
});

/** The first room `<prefix>-<i>` whose rendezvous order starts with `host`. */
function roomHostedBy(host: string, prefix: string): string {
  for (let i = 0; ; i++) {
    const room = `${prefix}-${i}`;
    if (rendezvousOrder(room, IDS)[0] === host) return room;
  }
}

const node = (id: string) => nodes[IDS.indexOf(id)]!;

test('three participants joining one room through three different nodes all receive each other\'s media', async () => {
  const room = roomHostedBy('ra', 'call');
  // The first join arrives at a node that does not host the room.
  const clients = [await node('rb').join('bob', room), await node('ra').join('alice', room), await node('rc').join('carol', room)];
  assert.equal(await probe.get(`scv:room:${room}`), 'ra', 'the room is hosted by its rendezvous winner');
  await Promise.all(clients.map((c) => c.publishTracks([{ kind: 'audio' }, { kind: 'video' }])));
  const names = ['bob', 'alice', 'carol'];
  await Promise.all(
    clients.flatMap((c, i) =>
      names.filter((_, j) => j !== i).map((from) => c.waitForTrackFrom(from, 'video', { minPackets: 30, minVerified: 30, minKeyframes: 1 })),
    ),
  );
  // Only the host has the room: the other nodes relayed signaling, they host no media.
  const rooms = await Promise.all(IDS.map(async (id) => (await node(id).fetch('/healthz')).body.rooms));
  assert.deepEqual(rooms, [1, 0, 0]);
  await Promise.all(clients.map((c) => c.close({ leave: true })));
});

test('a WHIP publish, its PATCH and DELETE and GET /video/rooms/:room through nodes that do not host the room', async () => {
  const room = roomHostedBy('rb', 'whip');
  const publish = await node('rc').token('encoder', room, ['publish']);
  const res = await fetch(`${node('ra').httpUrl}/whip/${room}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${publish}`, 'content-type': 'application/sdp' },
    body: await someOffer('sendonly'),
  });
  const answer = await res.text();
  assert.equal(res.status, 201, answer);
  assert.match(answer, /^v=0/);
  assert.match(answer, /a=candidate:/, "the host's ICE candidates are in the answer");
  const location = res.headers.get('location')!;
  assert.ok(location.startsWith(`/whip/${room}/`), location);
  assert.equal(await probe.get(`scv:room:${room}`), 'rb');

  const admin = await node('ra').token('ops', undefined, ['admin']);
  const info = await node('rc').fetch(`/video/rooms/${room}`, { headers: { authorization: `Bearer ${admin}` } });
  assert.equal(info.status, 200, JSON.stringify(info.body));
  assert.ok(JSON.stringify(info.body).includes('encoder'), JSON.stringify(info.body));

  const patch = await node('rc').fetch(location, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${publish}`, 'content-type': 'application/trickle-ice-sdpfrag' },
    body: 'a=ice-ufrag:xxxx\r\na=ice-pwd:yyyyyyyyyyyyyyyyyyyyyy\r\na=mid:0\r\na=end-of-candidates\r\n',
  });
  assert.ok(patch.status < 500 && patch.status !== 421, `PATCH through rc: ${patch.status} ${JSON.stringify(patch.body)}`);
  const del = await node('ra').fetch(location, { method: 'DELETE', headers: { authorization: `Bearer ${publish}` } });
  assert.equal(del.status, 200, JSON.stringify(del.body));
  const gone = await node('rb').fetch(`/video/rooms/${room}`, { headers: { authorization: `Bearer ${admin}` } });
  assert.ok(!JSON.stringify(gone.body).includes('encoder'), JSON.stringify(gone.body));
});

test('a forged node-to-node request is refused with CLUSTER_AUTH_FAILED: bad, foreign, expired or for another path', async () => {
  const room = roomHostedBy('rb', 'forged');
  const path = `/whip/${room}`;
  const publish = await node('rb').token('mallory', room, ['publish']);
  const offer = await someOffer('sendonly');
  const now = Date.now();
  const attempts: Record<string, string> = {
    garbage: 'not-a-credential',
    'wrong secret': new NodeAuth('some-other-secret-entirely', 'ra').sign('POST', path, now),
    expired: new NodeAuth(SECRET, 'ra').sign('POST', path, now - NODE_AUTH_WINDOW_MS - 5000),
    'other path': new NodeAuth(SECRET, 'ra').sign('POST', '/whip/elsewhere', now),
    'other method': new NodeAuth(SECRET, 'ra').sign('DELETE', path, now),
  };
  for (const [what, credential] of Object.entries(attempts)) {
    const res = await node('rb').fetch(path, {
      method: 'POST',
      headers: { authorization: `Bearer ${publish}`, 'content-type': 'application/sdp', [NODE_AUTH_HEADER]: credential },
      body: offer,
    });
    assert.equal(res.status, 401, `${what}: ${JSON.stringify(res.body)}`);
    assert.equal(res.body.error.code, 'CLUSTER_AUTH_FAILED', what);
  }
  // The WebSocket hop is checked on its upgrade: an expired credential is refused, a valid one opens.
  const upgrade = (credential: string) =>
    new Promise<string>((resolve) => {
      const ws = new WebSocket(node('rb').service.wsUrl, { headers: { [NODE_AUTH_HEADER]: credential } });
      ws.addEventListener('open', () => (resolve('open'), ws.close()));
      ws.addEventListener('error', () => resolve('refused'));
    });
  assert.equal(await upgrade(new NodeAuth(SECRET, 'ra').sign('GET', '/video/ws', now - NODE_AUTH_WINDOW_MS - 5000)), 'refused');
  assert.equal(await upgrade(new NodeAuth(SECRET, 'ra').sign('GET', '/video/ws')), 'open');
  assert.equal(await probe.exists(`scv:room:${room}`), 0, 'nothing was created');
});

test('a relayed request with an expired client token gets TOKEN_EXPIRED from the hosting node', async () => {
  const room = roomHostedBy('rc', 'late');
  const now = Math.floor(Date.now() / 1000);
  const expired = await new SignJWT({ room, grants: ['publish', 'subscribe'] })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(API.SCV_API_KEY)
    .setSubject('late')
    .setIssuedAt(now - 120)
    .setExpirationTime(now - 60)
    .sign(new TextEncoder().encode(API.SCV_API_SECRET));
  const path = `/whip/${room}`;
  const offer = await someOffer('sendonly');
  // A valid hop (as node ra would sign it) straight to the host: the host still checks the token.
  const hop = await node('rc').fetch(path, {
    method: 'POST',
    headers: { authorization: `Bearer ${expired}`, 'content-type': 'application/sdp', [NODE_AUTH_HEADER]: new NodeAuth(SECRET, 'ra').sign('POST', path) },
    body: offer,
  });
  assert.equal(hop.status, 401, JSON.stringify(hop.body));
  assert.equal(hop.body.error.code, 'TOKEN_EXPIRED');
  // Through a non-hosting node the answer is the same.
  const through = await node('ra').fetch(path, { method: 'POST', headers: { authorization: `Bearer ${expired}`, 'content-type': 'application/sdp' }, body: offer });
  assert.equal(through.status, 401);
  assert.equal(through.body.error.code, 'TOKEN_EXPIRED');
  assert.equal(await probe.exists(`scv:room:${room}`), 0);
});

// Last: it spends 127.0.0.1's rate limit at rc.
test("a node's hops are exempt from the host's per-IP rate limit; forged ones and plain clients are not", async () => {
  const room = roomHostedBy('rc', 'rate');
  const admin = await node('rc').token('ops', undefined, ['admin']);
  const path = `/video/rooms/${room}`;
  const get = (headers: Record<string, string>) => node('rc').fetch(path, { headers: { authorization: `Bearer ${admin}`, ...headers } });
  const hops = await Promise.all(Array.from({ length: RATE_LIMIT + 20 }, () => get({ [NODE_AUTH_HEADER]: new NodeAuth(SECRET, 'ra').sign('GET', path) })));
  assert.deepEqual([...new Set(hops.map((r) => r.status))], [404], 'every hop reaches the host (the room does not exist)');
  const forged = await Promise.all(Array.from({ length: RATE_LIMIT + 20 }, () => get({ [NODE_AUTH_HEADER]: 'v1:0:forged:ra' })));
  assert.ok(forged.some((r) => r.status === 429), 'forged hops are counted against the address');
  assert.equal((await get({})).body.error.code, 'RATE_LIMITED');
});
