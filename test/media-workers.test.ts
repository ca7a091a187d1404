/**
 * Media worker processes behind the signaling edge (SCV_MEDIA_WORKERS=2), with real werift
 * peers: rooms spread over the workers and each works whole; signaling, errors, HTTP and
 * metrics go through the edge; a worker that dies takes only its rooms, whose clients are
 * told and can join again at once, while the other worker's rooms carry on.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { EdgeService } from '../src/edge/edge-service.ts';
import { rawSocket, type TestClient } from './helpers/client.ts';
import { eventually, TestService } from './helpers/service.ts';

let svc: TestService<EdgeService>;
before(async () => {
  svc = await TestService.startEdge(2);
});
after(async () => {
  await svc.close();
});

const workerOf = (room: string) => svc.service.pool.find(room);

/** Two participants in `room`: `pub` publishes audio and video, `sub` receives both. */
async function pair(room: string): Promise<{ pub: TestClient; sub: TestClient }> {
  const pub = await svc.join(`${room}-pub`, room);
  const sub = await svc.join(`${room}-sub`, room);
  await pub.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  await sub.waitForTrackFrom(`${room}-pub`, 'video', { minPackets: 30, minVerified: 30, minKeyframes: 1 });
  await sub.waitForTrackFrom(`${room}-pub`, 'audio', { minPackets: 20, minVerified: 20 });
  return { pub, sub };
}

test('two rooms land on different workers and each forwards media intact', async () => {
  const a = await pair('wa');
  const b = await pair('wb');
  const wa = workerOf('wa');
  const wb = workerOf('wb');
  assert.ok(wa !== undefined && wb !== undefined, 'both rooms are placed');
  assert.notEqual(wa.index, wb.index, 'the second room goes to the idle worker');
  await eventually(async () => {
    const h = (await svc.fetch('/healthz')).body;
    return h.status === 'ok' && h.rooms === 2 && h.participants === 4 && h.workers.every((w: { rooms: number }) => w.rooms === 1);
  }, 'health to show one room with two participants on each worker');
  // Every counter is the sum over both workers.
  assert.ok((await svc.metric('scv_rtp_packets_forwarded_total')) > 0);
  assert.equal(await svc.metric('scv_rooms'), 2);
  assert.equal(await svc.metric('scv_media_workers'), 2);
  const admin = await svc.token('ops', undefined, ['admin']);
  const listed = await svc.fetch('/video/rooms', { headers: { authorization: `Bearer ${admin}` } });
  assert.equal(listed.status, 200);
  assert.deepEqual(listed.body.rooms.map((r: { name: string }) => r.name).sort(), ['wa', 'wb']);
  const one = await svc.fetch('/video/rooms/wb', { headers: { authorization: `Bearer ${admin}` } });
  assert.equal(one.status, 200);
  assert.deepEqual(one.body.participants.map((p: { identity: string }) => p.identity).sort(), ['wb-pub', 'wb-sub']);
  await Promise.all([a.pub, a.sub, b.pub, b.sub].map((c) => c.close({ leave: true })));
});

test('a worker that dies takes only its rooms: their clients are told, the others carry on, and the room can be joined again', async () => {
  const doomed = await pair('dies');
  const other = await pair('lives');
  const victim = workerOf('dies')!;
  assert.notEqual(victim.index, workerOf('lives')!.index);
  const rec = other.sub.tracksFrom('lives-pub', 'video')[0]!;

  victim.kill('SIGKILL');
  for (const c of [doomed.pub, doomed.sub]) {
    const left = await c.waitForEvent('left', () => true, 5_000);
    assert.equal(left.reason, 'media_worker_failed');
    await eventually(() => !c.socketOpen, `${c.identity}'s socket to close`, 5_000);
  }
  // The other worker's room never noticed.
  await other.sub.waitForMorePackets(rec, 100, 5_000);
  assert.equal(other.sub.events.filter((m) => m.type === 'participant_left' || m.type === 'left').length, 0);

  // A replacement starts; joining the lost room works at once, on whichever worker serves.
  await eventually(async () => (await svc.fetch('/healthz')).body.status === 'ok', 'a replacement worker', 15_000);
  assert.equal(await svc.metric('scv_media_worker_restarts'), 1);
  const again = await pair('dies');
  await Promise.all([other.pub, other.sub, again.pub, again.sub].map((c) => c.close({ leave: true })));
  await Promise.all([doomed.pub, doomed.sub].map((c) => c.close()));
});

test('a dropped WebSocket resumes through the edge on the same worker', async () => {
  const { pub, sub } = await pair('edge-resume');
  const rec = sub.tracksFrom('edge-resume-pub', 'video')[0]!;
  pub.dropWebSocket();
  const joined = await pub.reconnect();
  assert.equal(joined.resumed, true);
  await sub.waitForMorePackets(rec, 30, 5_000);
  await Promise.all([pub.close({ leave: true }), sub.close({ leave: true })]);
});

test('bad input at the edge gets the same codes as from a worker, and the socket lives on', async () => {
  const s = await rawSocket(svc.service.wsUrl);
  const code = async (frame: string | Buffer | object) => {
    s.send(frame);
    return (await s.nextJson()).code;
  };
  try {
    assert.equal(await code('{not json'), 'MALFORMED_JSON');
    assert.equal(await code(Buffer.from([1, 2, 3])), 'BAD_REQUEST');
    assert.equal(await code({ type: 'nope' }), 'UNKNOWN_MESSAGE_TYPE');
    assert.equal(await code({ type: 'offer', id: 1 }), 'VALIDATION_FAILED');
    assert.equal(await code({ type: 'offer', id: 1, target: 'publisher', sdp: 'v=0' }), 'NOT_JOINED');
    assert.equal(await code({ type: 'join', id: 2, protocol: 1, token: 'forged' }), 'UNAUTHORIZED');
    assert.equal(await code({ type: 'join', id: 3, protocol: 9, token: await svc.token('x', 'edge-bad') }), 'UNSUPPORTED_PROTOCOL');
    assert.equal(await code({ type: 'join', id: 4, protocol: 1, token: await svc.token('x', undefined) }), 'FORBIDDEN');
    s.send({ type: 'ping', id: 5, t: 7 });
    assert.equal((await s.nextJson()).type, 'pong');
    // A good join on the same socket still works, and the worker answers what follows.
    s.send({ type: 'join', id: 6, protocol: 1, token: await svc.token('late', 'edge-bad') });
    assert.equal((await s.nextJson()).type, 'joined');
    assert.equal(await code({ type: 'join', id: 7, protocol: 1, token: await svc.token('late2', 'edge-bad') }), 'ALREADY_JOINED');
    assert.equal(await code({ type: 'mute', id: 8, trackSid: 'TR_nope', muted: true }), 'TRACK_NOT_FOUND');
  } finally {
    s.close();
  }

  const noRoute = await svc.fetch('/nowhere');
  assert.equal(noRoute.status, 404);
  assert.equal(noRoute.body.error.code, 'NOT_FOUND');
  assert.equal((await svc.fetch('/video/rooms')).status, 401);
  const badJson = await svc.fetch('/video/signal', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' });
  assert.equal(badJson.status, 400);
  assert.equal(badJson.body.error.code, 'MALFORMED_JSON');
  const unknownPeer = await svc.fetch('/whip/nowhere/PA_x', { method: 'DELETE', headers: { authorization: `Bearer ${await svc.token('x', 'nowhere')}` } });
  assert.equal(unknownPeer.status, 404);
});
