/**
 * Bad input on the signaling socket and on the media ports: every case gets its stable
 * error code, the process stays up, and a call in another room keeps forwarding.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { after, before, test } from 'node:test';
import { SignJWT } from 'jose';
import type { RemoteTrack, TestClient } from './helpers/client.ts';
import { rawSocket } from './helpers/client.ts';
import { sleep, TestService } from './helpers/service.ts';

let svc: TestService;
let watcher: TestClient;
let watched: RemoteTrack;

before(async () => {
  svc = await TestService.start({ SCV_MAX_MESSAGE_BYTES: '65536', SCV_MAX_PARTICIPANTS: '3' });
  // A healthy call in its own room, watched throughout.
  const pub = await svc.join('healthy-pub', 'healthy');
  watcher = await svc.join('healthy-sub', 'healthy');
  await pub.publishTracks([{ kind: 'video' }]);
  watched = await watcher.waitForTrackFrom('healthy-pub', 'video', { minPackets: 20 });
});

after(async () => {
  // Whatever happened above, the healthy room still forwards.
  await watcher.waitForMorePackets(watched, 30, 5_000);
  assert.equal(watched.corrupt, 0);
  await svc.close();
});

async function expectError(frames: (string | Buffer | object)[], code: string): Promise<Record<string, unknown>> {
  const s = await rawSocket(svc.service.wsUrl);
  try {
    for (const f of frames.slice(0, -1)) {
      s.send(f);
      await s.nextJson();
    }
    s.send(frames[frames.length - 1]!);
    const reply = await s.nextJson();
    assert.equal(reply.type, 'error', JSON.stringify(reply));
    assert.equal(reply.code, code, JSON.stringify(reply));
    assert.equal(typeof reply.message, 'string');
    // The socket survives an error: it still answers.
    s.send({ type: 'ping', id: 'after' });
    assert.equal((await s.nextJson()).type, 'pong');
    return reply;
  } finally {
    s.close();
  }
}

let roomSeq = 0;
/** A join message; each call gets a fresh room unless one is named, so limits never interfere. */
const join = async (room: string | undefined, identity: string, extra: object = {}) => ({
  type: 'join',
  id: 1,
  protocol: 1,
  token: await svc.token(identity, room ?? `room-${++roomSeq}`),
  ...extra,
});

test('malformed, wrong-typed, unknown and oversized messages get their codes', async () => {
  await expectError(['{not json'], 'MALFORMED_JSON');
  await expectError(['[1,2,3]'], 'VALIDATION_FAILED');
  await expectError(['"just a string"'], 'VALIDATION_FAILED');
  await expectError([{ type: 42 }], 'VALIDATION_FAILED');
  await expectError([{ type: 'dance' }], 'UNKNOWN_MESSAGE_TYPE');
  const wrongType = await expectError([{ type: 'join', id: 7, protocol: '1', token: 'x' }], 'VALIDATION_FAILED');
  assert.equal(wrongType.id, 7, 'the request id is echoed');
  assert.match(String(wrongType.message), /protocol/);
  await expectError([Buffer.from([1, 2, 3])], 'BAD_REQUEST');
  await expectError([JSON.stringify({ type: 'ping', pad: 'x'.repeat(70_000) })], 'MESSAGE_TOO_LARGE');
});

test('a frame far over the limit closes the socket with 1009, nothing else', async () => {
  const s = await rawSocket(svc.service.wsUrl);
  s.send('x'.repeat(65536 * 4 + 1));
  const closed = await s.waitClose(5_000);
  assert.equal(closed.code, 1009);
});

test('tokens: missing, forged, expired, without room, wrong protocol, joined twice', async () => {
  await expectError([{ type: 'join', protocol: 1, token: 'garbage' }], 'UNAUTHORIZED');
  const forged = await new SignJWT({ room: 'x', grants: ['publish'] })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(svc.service.config.auth.apiKey)
    .setSubject('mallory')
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode('not-the-secret-not-the-secret-not-the-secret'));
  await expectError([{ type: 'join', protocol: 1, token: forged }], 'UNAUTHORIZED');
  const expired = await svc.token('late', 'x', ['subscribe'], -10).catch(() => undefined);
  if (expired !== undefined) await expectError([{ type: 'join', protocol: 1, token: expired }], 'TOKEN_EXPIRED');
  await expectError([{ type: 'join', protocol: 1, token: await svc.token('admin', undefined, ['admin']) }], 'FORBIDDEN');
  await expectError([await join('x', 'v2', { protocol: 2 })], 'UNSUPPORTED_PROTOCOL');
  await expectError([await join('twice', 'a'), await join('twice', 'a')], 'ALREADY_JOINED');
});

test('requests before join, and for things that do not exist', async () => {
  await expectError([{ type: 'offer', target: 'publisher', sdp: 'v=0' }], 'NOT_JOINED');
  await expectError([await join(undefined, 'g'), { type: 'mute', trackSid: 'TR_nope', muted: true }], 'TRACK_NOT_FOUND');
  await expectError([await join(undefined, 'h'), { type: 'answer', target: 'subscriber', sdp: 'v=0\r\n' }], 'CONFLICT');
  await expectError([await join(undefined, 'i'), { type: 'candidate', target: 'subscriber', candidate: { candidate: 'candidate:1 1 udp 1 1.2.3.4 5 typ host' } }], 'CONFLICT');
});

test('bogus SDP and candidates', async () => {
  await expectError([await join(undefined, 'a'), { type: 'offer', target: 'publisher', sdp: 'v=0 garbage' }], 'INVALID_SDP');
  const noMedia = 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 00\r\na=ice-ufrag:x\r\na=ice-pwd:y\r\n';
  await expectError([await join(undefined, 'b'), { type: 'offer', target: 'publisher', sdp: noMedia }], 'INVALID_SDP');
  const brokenMedia = `${noMedia}m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\na=setup:actpass\r\n`;
  const reply = await rawSocket(svc.service.wsUrl);
  reply.send(await join(undefined, 'c'));
  await reply.nextJson();
  reply.send({ type: 'offer', id: 2, target: 'publisher', sdp: brokenMedia });
  let r = await reply.nextJson();
  while (r.type === 'candidate') r = await reply.nextJson();
  // werift may accept or refuse it; either way an answer or a coded error, never silence.
  assert.ok(r.type === 'answer' || (r.type === 'error' && typeof r.code === 'string'), JSON.stringify(r).slice(0, 200));
  reply.close();
  await expectError([await join(undefined, 'd'), { type: 'candidate', target: 'publisher', candidate: { candidate: 'hello world' } }], 'INVALID_CANDIDATE');
});

test('room limits', async () => {
  const sockets = await Promise.all([1, 2, 3].map(() => rawSocket(svc.service.wsUrl)));
  for (const [i, s] of sockets.entries()) {
    s.send(await join('small', `p${i}`));
    assert.equal((await s.nextJson()).type, 'joined');
  }
  await expectError([await join('small', 'one-too-many')], 'ROOM_FULL');
  for (const s of sockets) s.close();
});

test('a client that vanishes mid-negotiation waits out the reconnect grace without disturbing others', async () => {
  const s = await rawSocket(svc.service.wsUrl);
  s.send(await join('healthy', 'vanisher'));
  await s.nextJson();
  // It has subscriber tracks waiting, gets an offer, and disappears without answering.
  s.terminate();
  await sleep(200);
  assert.equal(svc.service.sfu.getRoom('healthy').byIdentity('vanisher')?.awaitingReconnect, true);
});

test('garbage datagrams on the media ports are ignored', async () => {
  // The server's media port, as its subscriber client was told it (in an offer, or trickled).
  const ports = watcher.events
    .flatMap((m) => (m.type === 'offer' ? [m.sdp] : m.type === 'candidate' && m.target === 'subscriber' && m.candidate !== null ? [m.candidate.candidate] : []))
    .flatMap((c) => [...c.matchAll(/candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 (\d+) typ host/gi)].map((m) => Number(m[1])));
  assert.ok(ports.length > 0, 'found the media port');
  const sock = createSocket('udp4');
  const junk = [Buffer.alloc(0), Buffer.from([0x80]), Buffer.alloc(1500, 0xff), Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.concat([Buffer.from([0x80, 0x60]), Buffer.alloc(200, 7)]), Buffer.from([0x16, 0xfe, 0xfd, 0, 0, 0])];
  for (let i = 0; i < 200; i++) {
    for (const port of ports) sock.send(junk[i % junk.length]!, port, '127.0.0.1');
  }
  await sleep(500);
  sock.close();
  await watcher.waitForMorePackets(watched, 30, 5_000);
});
