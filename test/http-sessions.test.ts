import assert from 'node:assert/strict';
import { afterEach, beforeEach, test } from 'node:test';
import { RTCPeerConnection, RTCRtpCodecParameters } from 'werift';
import type { AccessToken, Grant } from '../src/auth/tokens.ts';
import { AppError } from '../src/common/errors.ts';
import { createLogger } from '../src/common/logger.ts';
import { loadConfig } from '../src/config.ts';
import { HttpSessions } from '../src/http/http-sessions.ts';
import { Sfu } from '../src/sfu/sfu.ts';

/**
 * The HTTP session registry against the real media core: what the seed API, WHIP and
 * WHEP routes find again, for whom, and that nothing stays once a participant is gone,
 * whoever ends it.
 */

const config = loadConfig({ SCV_LOG_LEVEL: 'silent' });
let sfu: Sfu;
let sessions: HttpSessions;

beforeEach(() => {
  sfu = new Sfu(config, createLogger('silent'));
  sessions = new HttpSessions(sfu);
});

afterEach(() => {
  sessions.close();
  sfu.close();
});

function token(identity: string, room: string | undefined, grants: Grant[] = ['publish', 'subscribe']): AccessToken {
  return { identity, room, name: undefined, grants: new Set(grants), e2ee: undefined };
}

/** A client's offer, made by a werift peer that is closed again (nothing needs to connect here). */
async function offer(direction: 'sendonly' | 'recvonly'): Promise<string> {
  const pc = new RTCPeerConnection({
    codecs: {
      audio: [new RTCRtpCodecParameters({ mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 111 })],
      video: [new RTCRtpCodecParameters({ mimeType: 'video/VP8', clockRate: 90000, payloadType: 96 })],
    },
    bundlePolicy: 'max-bundle',
    iceServers: [],
    iceAdditionalHostAddresses: ['127.0.0.1'],
    iceUseIpv6: false,
    iceInterfaceAddresses: { udp4: '127.0.0.1' },
  });
  try {
    pc.addTransceiver('audio', { direction });
    pc.addTransceiver('video', { direction });
    await pc.setLocalDescription(await pc.createOffer());
    return pc.localDescription!.sdp;
  } finally {
    await pc.close().catch(() => {});
  }
}

function rejects(fn: () => unknown, code: string): Promise<void> {
  return assert.rejects(async () => fn(), (err: unknown) => err instanceof AppError && err.code === code);
}

test('a WHIP session is found by its sid for its owner and an admin only, and in its own room and kind only', async () => {
  const alice = token('alice', 'r');
  const { session, answer } = await sessions.openWhip('r', alice, await offer('sendonly'));
  assert.match(answer, /^v=0/);
  assert.equal(session.kind, 'whip');
  assert.equal(session.etag, `"${session.participant.sid}"`);
  assert.equal(session.participant.joinedVia, 'whip');
  assert.equal(sessions.size, 1);
  const sid = session.participant.sid;
  assert.equal(sessions.resource(alice, 'whip', 'r', sid), session);
  assert.equal(sessions.resource(token('ops', undefined, ['admin']), 'whip', 'r', sid), session);
  await rejects(() => sessions.resource(token('mallory', 'r'), 'whip', 'r', sid), 'FORBIDDEN');
  await rejects(() => sessions.resource(alice, 'whep', 'r', sid), 'PEER_NOT_FOUND');
  await rejects(() => sessions.resource(alice, 'whip', 'other', sid), 'PEER_NOT_FOUND');
  await rejects(() => sessions.resource(alice, 'whip', 'r', 'PA_000000000000'), 'PEER_NOT_FOUND');
  // Not a seed-API session, though the identity is in the room.
  await rejects(() => sessions.seedSession(alice, 'r', 'alice'), 'PEER_NOT_FOUND');

  session.participant.close('client_left');
  assert.equal(sessions.size, 0);
  await rejects(() => sessions.resource(alice, 'whip', 'r', sid), 'PEER_NOT_FOUND');
});

test('a seed-API session is found by identity; a second one for that identity is CONFLICT and leaves the first as it was', async () => {
  const bob = token('bob', 'r');
  const { session } = await sessions.openSeed('r', 'bob', bob, await offer('sendonly'));
  assert.equal(sessions.seedSession(bob, 'r', 'bob'), session);
  await rejects(async () => sessions.openSeed('r', 'bob', bob, await offer('sendonly')), 'CONFLICT');
  await rejects(async () => sessions.openWhip('r', bob, await offer('sendonly')), 'CONFLICT');
  assert.equal(sessions.size, 1);
  assert.equal(sfu.getRoom('r').size, 1);
  assert.equal(sessions.seedSession(bob, 'r', 'bob'), session);
  await rejects(() => sessions.seedSession(token('eve', 'r'), 'r', 'bob'), 'FORBIDDEN');
  await rejects(() => sessions.seedSession(bob, 'nowhere', 'bob'), 'ROOM_NOT_FOUND');
  await rejects(() => sessions.seedSession(bob, 'r', 'carol'), 'PEER_NOT_FOUND');
});

test('a session ends with its participant, whoever closes it: a join that replaces it, the room, the server', async () => {
  const { session } = await sessions.openSeed('r', 'bob', token('bob', 'r'), await offer('sendonly'));
  // A WebSocket client with the same identity replaces it (what the signaling layer asks for).
  sfu.join('r', { identity: 'bob', name: 'bob', grants: new Set(['subscribe']), capabilities: { renegotiates: true, hidden: false, receives: { from: 'all' }, resumable: true }, joinedVia: 'ws' });
  assert.ok(session.participant.closed);
  assert.equal(sessions.size, 0);
  await rejects(() => sessions.seedSession(token('bob', 'r'), 'r', 'bob'), 'PEER_NOT_FOUND');

  await sessions.openWhip('r2', token('carol', 'r2'), await offer('sendonly'));
  await sessions.openWhip('r3', token('dave', 'r3'), await offer('sendonly'));
  assert.equal(sessions.size, 2);
  sfu.getRoom('r2').close('room_closed');
  assert.equal(sessions.size, 1);
  sfu.close();
  assert.equal(sessions.size, 0);
});

test('a refused offer leaves no session and no participant behind', async () => {
  await rejects(() => sessions.openWhip('r', token('alice', 'r'), 'v=0\r\ngarbage'), 'INVALID_SDP');
  assert.equal(sessions.size, 0);
  assert.equal(sfu.findRoom('r')?.size ?? 0, 0);
  // Sending needs the publish grant.
  await rejects(async () => sessions.openSeed('r', 'viewer', token('viewer', 'r', ['subscribe']), await offer('sendonly')), 'FORBIDDEN');
  assert.equal(sessions.size, 0);
  assert.equal(sfu.findRoom('r')?.size ?? 0, 0);
});

test('a WHEP player plays one participant, is its viewer\'s, and ends when the played participant leaves', async () => {
  const alice = token('alice', 'r');
  const viewer = token('viewer', 'r', ['subscribe']);
  await rejects(async () => sessions.openWhep('r', 'alice', viewer, await offer('recvonly')), 'ROOM_NOT_FOUND');
  const publisher = await sessions.openWhip('r', alice, await offer('sendonly'));
  await rejects(async () => sessions.openWhep('r', 'nobody', viewer, await offer('recvonly')), 'PEER_NOT_FOUND');

  const { session: player, answer } = await sessions.openWhep('r', 'alice', viewer, await offer('recvonly'));
  assert.match(answer, /a=sendonly/);
  assert.equal(player.target, 'alice');
  assert.equal(player.participant.owner, 'viewer');
  assert.ok(player.participant.hidden);
  assert.equal(sessions.size, 2);
  const sid = player.participant.sid;
  assert.equal(sessions.resource(viewer, 'whep', 'r', sid, 'alice'), player);
  await rejects(() => sessions.resource(viewer, 'whep', 'r', sid, 'someone-else'), 'PEER_NOT_FOUND');
  await rejects(() => sessions.resource(alice, 'whep', 'r', sid, 'alice'), 'FORBIDDEN');
  // Two players of one viewer: its own identity never conflicts.
  const second = await sessions.openWhep('r', 'alice', viewer, await offer('recvonly'));
  assert.notEqual(second.session.participant.identity, player.participant.identity);
  assert.equal(sessions.size, 3);

  publisher.session.participant.close('client_left');
  assert.ok(player.participant.closed && second.session.participant.closed);
  assert.equal(sessions.size, 0);
});

test('a trickle with other ICE credentials, or a restart asked for, is refused; end of candidates is applied', async () => {
  const alice = token('alice', 'r');
  const sdp = await offer('sendonly');
  const { session } = await sessions.openWhip('r', alice, sdp);
  const frag = (ufrag: string | undefined) => ({ ufrag, pwd: undefined, candidates: [], endOfCandidates: false });
  await rejects(() => sessions.trickle(session, frag('not-the-offers'), false), 'BAD_REQUEST');
  await rejects(() => sessions.trickle(session, frag(undefined), true), 'BAD_REQUEST');
  // A candidate the connection cannot use is discarded, the rest of the fragment still applies.
  await sessions.trickle(session, { ufrag: session.ufrag, pwd: undefined, candidates: ['candidate:1 1 udp 1 192.0.2.1 9 typ relay'], endOfCandidates: true }, false);
  assert.ok(!session.participant.closed);
});

test('close() lets go of every participant it listened to and refuses new sessions', async () => {
  const { session } = await sessions.openWhip('r', token('alice', 'r'), await offer('sendonly'));
  const listening = session.participant.listenerCount('closed');
  sessions.close();
  sessions.close();
  assert.equal(session.participant.listenerCount('closed'), listening - 1);
  assert.equal(sessions.size, 0);
  await rejects(async () => sessions.openWhip('r', token('bob', 'r'), await offer('sendonly')), 'SHUTTING_DOWN');
  assert.ok(!session.participant.closed, 'the room, not the registry, owns the participant');
});
