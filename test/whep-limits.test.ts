/**
 * WHEP players have their own limits, per room and per token identity, apart from the
 * room's participant limit: a subscribe-only token can no longer fill a room for its
 * members (issue 8). Real WHEP offers from werift against the real service (in one
 * process, or with TEST_EDGE_WORKERS through the edge).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { RTCPeerConnection } from 'werift';
import { codecParameters, LOOPBACK_ICE } from '../src/node-client/peer-config.ts';
import type { EdgeService } from '../src/edge/edge-service.ts';
import type { Service } from '../src/service.ts';
import { rawSocket } from './helpers/client.ts';
import { TestService } from './helpers/service.ts';

let svc: TestService<Service | EdgeService>;
const pcs: RTCPeerConnection[] = [];

before(async () => {
  svc = await TestService.startEither({ SCV_MAX_PARTICIPANTS: '2', SCV_MAX_WHEP_PLAYERS: '4', SCV_MAX_WHEP_PLAYERS_PER_IDENTITY: '2' });
});
after(async () => {
  await Promise.all(pcs.map((pc) => pc.close().catch(() => {})));
  await svc.close();
});

/** A WHEP player's offer (audio and video, receive only). */
async function playerOffer(): Promise<string> {
  const pc = new RTCPeerConnection({ codecs: { audio: [codecParameters('opus')], video: [codecParameters('vp8')] }, bundlePolicy: 'max-bundle', iceServers: [], ...LOOPBACK_ICE });
  pcs.push(pc);
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  await pc.setLocalDescription(await pc.createOffer());
  return pc.localDescription!.sdp;
}

async function play(room: string, target: string, viewer: string): Promise<{ status: number; body: any; location: string | null }> {
  const token = await svc.token(viewer, room, ['subscribe']);
  const r = await svc.fetch(`/whep/${room}/${target}`, {
    method: 'POST',
    headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
    body: await playerOffer(),
  });
  return { ...r, location: r.headers.get('location') };
}

function assertTooMany(r: { status: number; body: any }, message: RegExp): void {
  assert.equal(r.status, 429, JSON.stringify(r.body));
  assert.equal(r.body.error?.code, 'TOO_MANY_PLAYERS', JSON.stringify(r.body));
  assert.match(r.body.error.message, message);
}

test('one token opens at most its share of players, the room at most its limit, and members still join', async () => {
  const room = 'whep-limits';
  const pub = await svc.join('stage', room);
  await pub.publishTracks([{ kind: 'video' }]);

  // Per identity: two players, the third is refused.
  const mine = [await play(room, 'stage', 'viewer'), await play(room, 'stage', 'viewer')];
  for (const r of mine) assert.equal(r.status, 201, JSON.stringify(r.body));
  assertTooMany(await play(room, 'stage', 'viewer'), /"viewer" already has 2 WHEP players/);

  // Per room: four players in all, whoever opens them.
  for (const r of [await play(room, 'stage', 'other'), await play(room, 'stage', 'other')]) assert.equal(r.status, 201, JSON.stringify(r.body));
  assertTooMany(await play(room, 'stage', 'third'), /maximum of 4 WHEP players/);

  // Four players do not fill a room of two members: the second member joins, a third is ROOM_FULL.
  const member = await svc.join('member', room);
  assert.equal(member.joined?.room.participants.length, 1, 'players stay hidden');
  const s = await rawSocket(svc.service.wsUrl);
  s.send({ type: 'join', id: 1, protocol: 1, token: await svc.token('one-too-many', room) });
  const refused = await s.nextJson();
  assert.equal(refused.code, 'ROOM_FULL', JSON.stringify(refused));
  s.close();

  // Closing a player gives its slot back to its identity.
  const del = await svc.fetch(mine[0]!.location!, { method: 'DELETE', headers: { authorization: `Bearer ${await svc.token('viewer', room, ['subscribe'])}` } });
  assert.equal(del.status, 200);
  assert.equal((await play(room, 'stage', 'viewer')).status, 201);
  assertTooMany(await play(room, 'stage', 'viewer'), /already has 2/);
});
