/**
 * The HTTP media API (src/http/routes/media.ts): the seed's /video/signal + /video/ice +
 * /video/leave, WHIP and WHEP. Real werift PeerConnections against the real service,
 * synthetic RTP with verifiable payloads; status codes and error bodies.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import {
  RTCPeerConnection,
  useAbsSendTime,
  useSdesMid,
  useTransportWideCC,
  type MediaStreamTrack,
  type RTCIceCandidate,
  type RTCRtpTransceiver,
} from 'werift';
import type { Grant } from '../src/auth/tokens.ts';
import { TokenService } from '../src/auth/tokens.ts';
import type { IceCandidateInit } from '../src/signaling/messages.ts';
import { codecParameters, LOOPBACK_ICE } from '../src/node-client/peer-config.ts';
import { verifyPayload } from '../src/node-client/payload-format.ts';
import { SyntheticSource } from '../src/node-client/synthetic-media.ts';
import type { EdgeService } from '../src/edge/edge-service.ts';
import type { Service } from '../src/service.ts';
import { TestService, eventually } from './helpers/service.ts';
import { someOffer } from './helpers/client.ts';

type Kind = 'audio' | 'video';

/** What one receiving m-line of an HttpPeer got. */
interface Received {
  kind: Kind;
  packets: number;
  verified: number;
  corrupt: number;
  lastCorrupt: string | undefined;
  sourceIds: Set<number>;
}

/**
 * A werift PeerConnection that negotiates once over HTTP (as a seed-API client, a WHIP
 * encoder or a WHEP player would): sends synthetic RTP on its sendonly m-lines, counts and
 * verifies what arrives on its recvonly ones.
 */
class HttpPeer {
  readonly pc: RTCPeerConnection;
  /** Local candidates, for trickling them over HTTP. */
  readonly candidates: IceCandidateInit[] = [];
  readonly sources: SyntheticSource[] = [];
  readonly received: Received[] = [];
  private static nextSourceId = 1000;

  constructor() {
    this.pc = new RTCPeerConnection({
      codecs: { audio: [codecParameters('opus')], video: [codecParameters('vp8')] },
      headerExtensions: {
        audio: [useSdesMid(), useTransportWideCC()],
        video: [useSdesMid(), useAbsSendTime(), useTransportWideCC()],
      },
      bundlePolicy: 'max-bundle',
      iceServers: [],
      ...LOOPBACK_ICE,
    });
    this.pc.onIceCandidate.subscribe((c: RTCIceCandidate | undefined) => {
      if (c !== undefined) this.candidates.push({ candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null });
    });
    this.pc.connectionStateChange.subscribe((s) => {
      // Packets sent before DTLS completes are dropped: start (again) with a keyframe.
      if (s === 'connected') for (const src of this.sources) src.forceKeyframe();
    });
  }

  /** A sendonly m-line fed by a synthetic source (started now; sent once connected). */
  send(kind: Kind): SyntheticSource {
    const t = this.pc.addTransceiver(kind, { direction: 'sendonly' });
    const source = new SyntheticSource({ codec: kind === 'audio' ? 'opus' : 'vp8', sourceId: HttpPeer.nextSourceId++, keyframeIntervalFrames: 30 });
    t.sender.onPictureLossIndication.subscribe(() => source.forceKeyframe());
    this.sources.push(source);
    source.start((p) => t.sender.sendRtp(p));
    return source;
  }

  /** A recvonly m-line; its packets are verified as `kind`'s synthetic payloads. */
  receive(kind: Kind): Received {
    const t = this.pc.addTransceiver(kind, { direction: 'recvonly' });
    const rec: Received = { kind, packets: 0, verified: 0, corrupt: 0, lastCorrupt: undefined, sourceIds: new Set() };
    this.received.push(rec);
    const hooked = new WeakSet<MediaStreamTrack>();
    const hook = (track: MediaStreamTrack) => {
      if (hooked.has(track)) return;
      hooked.add(track);
      track.onReceiveRtp.subscribe((rtp) => {
        rec.packets++;
        const v = verifyPayload(kind === 'audio' ? 'opus' : 'vp8', rtp.payload);
        if (v.ok) {
          rec.verified++;
          rec.sourceIds.add(v.sourceId!);
        } else {
          rec.corrupt++;
          rec.lastCorrupt = v.reason;
        }
      });
    };
    t.onTrack.subscribe((track) => hook(track));
    this.hooks.push(() => t.receiver.tracks.forEach(hook));
    return rec;
  }

  private readonly hooks: (() => void)[] = [];

  /** Creates and applies the offer; `trickle` strips its candidates (they go over HTTP instead). */
  async offer(opts: { trickle?: boolean } = {}): Promise<string> {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const sdp = this.pc.localDescription!.sdp;
    if (!opts.trickle) return sdp;
    return sdp
      .split('\r\n')
      .filter((l) => !l.startsWith('a=candidate:') && l !== 'a=end-of-candidates')
      .join('\r\n');
  }

  async answer(sdp: string): Promise<void> {
    await this.pc.setRemoteDescription({ type: 'answer', sdp });
    for (const h of this.hooks) h();
  }

  connected(timeoutMs = 15_000): Promise<void> {
    return eventually(() => this.pc.connectionState === 'connected', `HTTP peer connected (now ${this.pc.connectionState})`, timeoutMs);
  }

  async close(): Promise<void> {
    for (const s of this.sources) s.stop();
    await this.pc.close().catch(() => {});
  }
}

// ---- fixtures ------------------------------------------------------------------------------

let svc: TestService<Service | EdgeService>;
const peers: HttpPeer[] = [];
function peer(): HttpPeer {
  const p = new HttpPeer();
  peers.push(p);
  return p;
}

before(async () => {
  svc = await TestService.startEither();
});
after(async () => {
  await Promise.all(peers.map((p) => p.close()));
  await svc.close();
});

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

function token(identity: string, room: string | undefined, grants: Grant[] = ['publish', 'subscribe']): Promise<string> {
  return svc.token(identity, room, grants);
}

function postJson(path: string, body: unknown, tok?: string): ReturnType<TestService['fetch']> {
  return svc.fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(tok === undefined ? {} : bearer(tok)) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

function postSdp(path: string, sdp: string, tok: string, contentType = 'application/sdp'): ReturnType<TestService['fetch']> {
  return svc.fetch(path, { method: 'POST', headers: { 'content-type': contentType, ...bearer(tok) }, body: sdp });
}

async function listIdentities(room: string): Promise<string[]> {
  const r = await svc.fetch(`/video/rooms/${encodeURIComponent(room)}`, { headers: bearer(await token('ops', undefined, ['admin'])) });
  if (r.status === 404) return [];
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.participants.map((p: { identity: string }) => p.identity);
}

function assertError(r: { status: number; body: any }, status: number, code: string): void {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status} ${JSON.stringify(r.body)}`);
  assert.equal(typeof r.body, 'object', `error body is JSON: ${String(r.body)}`);
  assert.equal(r.body.error?.code, code, JSON.stringify(r.body));
  assert.equal(typeof r.body.error.message, 'string');
}

/** "a=candidate:..." lines of a trickle-ice-sdpfrag body for these candidates. */
function sdpFrag(offer: string, candidates: IceCandidateInit[]): string {
  const ufrag = /^a=ice-ufrag:(\S+)/m.exec(offer)![1];
  const pwd = /^a=ice-pwd:(\S+)/m.exec(offer)![1];
  const mid = /^a=mid:(\S+)/m.exec(offer)![1];
  return [`a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`, 'm=audio 9 UDP/TLS/RTP/SAVPF 0', `a=mid:${mid}`, ...candidates.map((c) => `a=${c.candidate}`), 'a=end-of-candidates', ''].join('\r\n');
}

// ---- media end to end ---------------------------------------------------------------------------

describe('seed API: POST /video/signal, /video/ice, /video/leave', () => {
  test('an HTTP publisher reaches an HTTP receiver and a WebSocket client, payloads intact', { timeout: 60_000 }, async () => {
    const room = 'seed-e2e';
    const watcher = await svc.join('ws-watcher', room);

    const pub = peer();
    const cam = pub.send('video');
    const pubOffer = await pub.offer({ trickle: true });
    assert.doesNotMatch(pubOffer, /a=candidate:/);
    const pubTok = await token('http-pub', room);
    // The seed sent a SessionDescription object.
    const signal = await postJson('/video/signal', { room_id: room, peer_id: 'http-pub', sdp: { type: 'offer', sdp: pubOffer }, type: 'offer' }, pubTok);
    assert.equal(signal.status, 200, JSON.stringify(signal.body));
    assert.equal(signal.body.sdp.type, 'answer');
    assert.match(signal.body.sdp.sdp, /^v=0/);
    assert.match(signal.body.sdp.sdp, /a=candidate:/, 'the answer carries the server candidates');
    assert.equal(signal.body.peer_id, 'http-pub');
    assert.match(signal.body.participant_sid, /^PA_/);
    await pub.answer(signal.body.sdp.sdp);
    assert.ok(pub.candidates.length > 0);
    for (const candidate of pub.candidates) {
      const r = await postJson('/video/ice', { room_id: room, peer_id: 'http-pub', candidate }, pubTok);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body, { status: 'ok' });
    }
    const eoc = await postJson('/video/ice', { room_id: room, peer_id: 'http-pub', candidate: null }, pubTok);
    assert.equal(eoc.status, 200, JSON.stringify(eoc.body));
    await pub.connected();

    // A second HTTP peer, receive-only: its answer already carries the first one's track.
    const sub = peer();
    const got = sub.receive('video');
    const subTok = await token('http-sub', room, ['subscribe']);
    const subSignal = await postJson('/video/signal', { room_id: room, peer_id: 'http-sub', sdp: await sub.offer(), type: 'offer' }, subTok);
    assert.equal(subSignal.status, 200, JSON.stringify(subSignal.body));
    assert.match(subSignal.body.sdp.sdp, /a=sendonly/);
    await sub.answer(subSignal.body.sdp.sdp);
    await sub.connected();
    await eventually(() => got.verified >= 30, `30 verified packets at the HTTP receiver (${JSON.stringify({ ...got, sourceIds: [...got.sourceIds] })})`, 20_000);
    assert.equal(got.corrupt, 0, got.lastCorrupt);
    assert.deepEqual([...got.sourceIds], [cam.sourceId]);

    const t = await watcher.waitForTrackFrom('http-pub', 'video', { minVerified: 30, timeoutMs: 20_000 });
    assert.equal(t.corrupt, 0, t.summary());
    assert.deepEqual([...t.sourceIds], [cam.sourceId]);

    // Leaving: the WebSocket client hears it, the room listing drops it, a second leave is a 404.
    assert.deepEqual((await listIdentities(room)).sort(), ['http-pub', 'http-sub', 'ws-watcher']);
    const leave = await postJson('/video/leave', { room_id: room, peer_id: 'http-pub' }, pubTok);
    assert.equal(leave.status, 200, JSON.stringify(leave.body));
    assert.deepEqual(leave.body, { status: 'ok' });
    await watcher.waitForNoTrackFrom('http-pub', 'video');
    await watcher.waitUntil(() => watcher.eventsOf('participant_left').find((e) => e.identity === 'http-pub'));
    assert.deepEqual((await listIdentities(room)).sort(), ['http-sub', 'ws-watcher']);
    assertError(await postJson('/video/leave', { room_id: room, peer_id: 'http-pub' }, pubTok), 404, 'PEER_NOT_FOUND');
    assert.equal((await postJson('/video/leave', { room_id: room, peer_id: 'http-sub' }, subTok)).status, 200);
    await watcher.close({ leave: true });
  });
});

describe('WHIP and WHEP', () => {
  test('a WHIP publisher is played by a WHEP player and a WebSocket client; DELETE ends both sessions', { timeout: 60_000 }, async () => {
    const room = 'whip-e2e';
    const watcher = await svc.join('ws-watcher', room);

    const enc = peer();
    const mic = enc.send('audio');
    const cam = enc.send('video');
    const offer = await enc.offer({ trickle: true });
    const encTok = await token('encoder', room, ['publish']);
    const created = await postSdp(`/whip/${room}`, offer, encTok);
    assert.equal(created.status, 201, String(created.body));
    assert.match(created.headers.get('content-type') ?? '', /^application\/sdp/);
    const location = created.headers.get('location') ?? '';
    assert.match(location, new RegExp(`^/whip/${room}/PA_[0-9a-f]+$`));
    assert.match(created.headers.get('etag') ?? '', /^"PA_[0-9a-f]+"$/);
    assert.equal(created.headers.get('access-control-allow-origin'), '*');
    assert.match(created.headers.get('access-control-expose-headers') ?? '', /Location/);
    await enc.answer(String(created.body));
    // Trickle the candidates the offer left out (RFC 9725 §4.3.1).
    const patch = await svc.fetch(location, {
      method: 'PATCH',
      headers: { 'content-type': 'application/trickle-ice-sdpfrag', 'if-match': created.headers.get('etag')!, ...bearer(encTok) },
      body: sdpFrag(offer, enc.candidates),
    });
    assert.equal(patch.status, 204, JSON.stringify(patch.body));
    await enc.connected();

    const t = await watcher.waitForTrackFrom('encoder', 'video', { minVerified: 30, timeoutMs: 20_000 });
    assert.equal(t.corrupt, 0, t.summary());
    assert.deepEqual([...t.sourceIds], [cam.sourceId]);
    const a = await watcher.waitForTrackFrom('encoder', 'audio', { minVerified: 20, timeoutMs: 20_000 });
    assert.equal(a.corrupt, 0, a.summary());
    assert.deepEqual([...a.sourceIds], [mic.sourceId]);

    // WHEP: the viewer's own identity is in the room too (the WebSocket watcher): no collision.
    const player = peer();
    const audio = player.receive('audio');
    const video = player.receive('video');
    const viewerTok = await token('ws-watcher', room, ['subscribe']);
    const playing = await postSdp(`/whep/${room}/encoder`, await player.offer(), viewerTok);
    assert.equal(playing.status, 201, String(playing.body));
    const playLocation = playing.headers.get('location') ?? '';
    assert.match(playLocation, new RegExp(`^/whep/${room}/encoder/PA_[0-9a-f]+$`));
    assert.equal(playing.headers.get('access-control-allow-origin'), '*');
    await player.answer(String(playing.body));
    await player.connected();
    await eventually(() => video.verified >= 30 && audio.verified >= 20, `WHEP media (audio ${audio.verified}, video ${video.verified})`, 20_000);
    assert.equal(video.corrupt, 0, video.lastCorrupt);
    assert.equal(audio.corrupt, 0, audio.lastCorrupt);
    assert.deepEqual([...video.sourceIds], [cam.sourceId]);
    assert.deepEqual([...audio.sourceIds], [mic.sourceId]);
    // The player is hidden: the room's clients were never told about it.
    assert.equal(watcher.eventsOf('participant_joined').filter((e) => e.participant.identity.startsWith('whep-')).length, 0);

    const identities = await listIdentities(room);
    assert.ok(identities.some((i) => i.startsWith('whep-')), identities.join());
    // Only the owner (or an admin) may end a session.
    const stranger = await token('stranger', room);
    assertError(await svc.fetch(playLocation, { method: 'DELETE', headers: bearer(stranger) }), 403, 'FORBIDDEN');
    assertError(await svc.fetch(location, { method: 'DELETE', headers: bearer(stranger) }), 403, 'FORBIDDEN');

    const stopPlay = await svc.fetch(playLocation, { method: 'DELETE', headers: bearer(viewerTok) });
    assert.equal(stopPlay.status, 200);
    assert.ok(!(await listIdentities(room)).some((i) => i.startsWith('whep-')));
    assertError(await svc.fetch(playLocation, { method: 'DELETE', headers: bearer(viewerTok) }), 404, 'PEER_NOT_FOUND');

    // A second player, to see that the publisher leaving ends it too.
    const player2 = peer();
    player2.receive('video');
    const playing2 = await postSdp(`/whep/${room}/encoder`, await player2.offer(), viewerTok);
    assert.equal(playing2.status, 201, String(playing2.body));

    const stop = await svc.fetch(location, { method: 'DELETE', headers: bearer(encTok) });
    assert.equal(stop.status, 200);
    assert.deepEqual(await listIdentities(room), ['ws-watcher']);
    await watcher.waitForNoTrackFrom('encoder');
    await watcher.waitUntil(() => watcher.eventsOf('participant_left').find((e) => e.identity === 'encoder'));
    assertError(await svc.fetch(location, { method: 'DELETE', headers: bearer(encTok) }), 404, 'PEER_NOT_FOUND');
    assertError(await svc.fetch(playing2.headers.get('location')!, { method: 'DELETE', headers: bearer(viewerTok) }), 404, 'PEER_NOT_FOUND');
    await watcher.close({ leave: true });
  });
});

// ---- status codes and error bodies ---------------------------------------------------------------

describe('errors', () => {
  test('401: missing, forged and expired tokens', async () => {
    const body = { room_id: 'errs', peer_id: 'alice', sdp: await someOffer(), type: 'offer' };
    assertError(await postJson('/video/signal', body), 401, 'UNAUTHORIZED');
    const forged = await new TokenService('devkey', 'not-the-secret-of-this-server-0123456789').mint({ identity: 'alice', room: 'errs' });
    assertError(await postJson('/video/signal', body, forged), 401, 'UNAUTHORIZED');
    const now = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({ room: 'errs', grants: ['publish', 'subscribe'] })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(svc.service.config.auth.apiKey)
      .setSubject('alice')
      .setIssuedAt(now - 120)
      .setExpirationTime(now - 60)
      .sign(new TextEncoder().encode(svc.service.config.auth.apiSecret));
    assertError(await postJson('/video/signal', body, expired), 401, 'TOKEN_EXPIRED');
    assertError(await postSdp('/whip/errs', body.sdp, expired), 401, 'TOKEN_EXPIRED');
    assertError(await svc.fetch('/whip/errs/PA_000000000000', { method: 'DELETE' }), 401, 'UNAUTHORIZED');
  });

  test('403: wrong room, missing grant, someone else\'s peer_id', async () => {
    const sdp = await someOffer();
    const other = await token('alice', 'other-room');
    assertError(await postJson('/video/signal', { room_id: 'errs', peer_id: 'alice', sdp, type: 'offer' }, other), 403, 'FORBIDDEN');
    assertError(await postSdp('/whip/errs', sdp, other), 403, 'FORBIDDEN');
    const viewer = await token('alice', 'errs', ['subscribe']);
    assertError(await postSdp('/whip/errs', sdp, viewer), 403, 'FORBIDDEN');
    // A sending offer without the publish grant: refused, and nothing is left in the room.
    assertError(await postJson('/video/signal', { room_id: 'errs', peer_id: 'alice', sdp, type: 'offer' }, viewer), 403, 'FORBIDDEN');
    assert.deepEqual(await listIdentities('errs'), []);
    const publisher = await token('alice', 'errs', ['publish']);
    assertError(await postSdp('/whep/errs/bob', await someOffer('recvonly'), publisher), 403, 'FORBIDDEN');
    assertError(await postJson('/video/signal', { room_id: 'errs', peer_id: 'bob', sdp, type: 'offer' }, publisher), 403, 'FORBIDDEN');
    assertError(await postJson('/video/ice', { room_id: 'errs', peer_id: 'bob', candidate: null }, publisher), 403, 'FORBIDDEN');
  });

  test('400: malformed JSON, wrong types, type "answer", bogus SDP', async () => {
    const tok = await token('alice', 'errs');
    assertError(await postJson('/video/signal', '{"room_id": "errs", ', tok), 400, 'MALFORMED_JSON');
    assertError(await postJson('/video/signal', { room_id: 5, peer_id: 'alice', sdp: 'v=0', type: 'offer' }, tok), 400, 'VALIDATION_FAILED');
    assertError(await postJson('/video/signal', { room_id: 'errs', peer_id: 'alice', type: 'offer' }, tok), 400, 'VALIDATION_FAILED');
    assertError(await postJson('/video/signal', { room_id: 'errs', peer_id: 'alice', sdp: { sdp: 1 }, type: 'offer' }, tok), 400, 'VALIDATION_FAILED');
    const answer = await postJson('/video/signal', { room_id: 'errs', peer_id: 'alice', sdp: await someOffer(), type: 'answer' }, tok);
    assertError(answer, 400, 'VALIDATION_FAILED');
    assert.match(answer.body.error.message, /offer/);
    assertError(await postJson('/video/signal', { room_id: 'errs', peer_id: 'alice', sdp: { type: 'answer', sdp: 'v=0' } }, tok), 400, 'VALIDATION_FAILED');
    assertError(await postJson('/video/signal', { room_id: 'errs', peer_id: 'alice', sdp: 'v=0 garbage', type: 'offer' }, tok), 400, 'INVALID_SDP');
    assertError(await postSdp('/whip/errs', 'v=0 garbage', tok), 400, 'INVALID_SDP');
    assertError(await postSdp('/whip/errs', await someOffer('recvonly'), tok), 400, 'INVALID_SDP');
    assertError(await postJson('/video/ice', { room_id: 'errs', peer_id: 'alice', candidate: 42 }, tok), 400, 'VALIDATION_FAILED');
    // Failed offers leave no participant behind.
    assert.deepEqual(await listIdentities('errs'), []);
  });

  test('404 and 400 on /video/ice, 409 for a duplicate peer', async () => {
    const tok = await token('carol', 'ice-room');
    assertError(await postJson('/video/ice', { room_id: 'no-such-room', peer_id: 'carol', candidate: null }, await token('carol', 'no-such-room')), 404, 'ROOM_NOT_FOUND');
    const first = await postJson('/video/signal', { room_id: 'ice-room', peer_id: 'carol', sdp: await someOffer(), type: 'offer' }, tok);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assertError(await postJson('/video/ice', { room_id: 'ice-room', peer_id: 'dave', candidate: null }, await token('dave', 'ice-room')), 404, 'PEER_NOT_FOUND');
    assertError(await postJson('/video/ice', { room_id: 'ice-room', peer_id: 'carol', candidate: { candidate: 'candidate:bogus' } }, tok), 400, 'INVALID_CANDIDATE');
    assertError(await postJson('/video/ice', { room_id: 'ice-room', peer_id: 'carol', candidate: 'not a candidate' }, tok), 400, 'INVALID_CANDIDATE');
    const ok = await postJson('/video/ice', { room_id: 'ice-room', peer_id: 'carol', candidate: 'candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host' }, tok);
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assertError(await postJson('/video/signal', { room_id: 'ice-room', peer_id: 'carol', sdp: await someOffer(), type: 'offer' }, tok), 409, 'CONFLICT');
    assertError(await postSdp('/whip/ice-room', await someOffer(), tok), 409, 'CONFLICT');
    assert.deepEqual(await listIdentities('ice-room'), ['carol']);
    // An admin may act for another peer.
    const admin = await token('ops', undefined, ['admin']);
    assert.equal((await postJson('/video/leave', { room_id: 'ice-room', peer_id: 'carol' }, admin)).status, 200);
    assert.deepEqual(await listIdentities('ice-room'), []);
  });

  test('WHIP/WHEP: 415, 404, 409, CORS preflight, PATCH', async () => {
    const tok = await token('erin', 'whip-errs');
    const offer = await someOffer();
    assertError(await postSdp('/whip/whip-errs', JSON.stringify({ sdp: offer }), tok, 'application/json'), 415, 'UNSUPPORTED_MEDIA_TYPE');
    assertError(await postSdp('/whip/whip-errs', offer, tok, 'text/plain'), 415, 'UNSUPPORTED_MEDIA_TYPE');
    assertError(await postSdp('/whip/whip-errs', offer, tok, 'application/x-foo'), 415, 'UNSUPPORTED_MEDIA_TYPE');
    assertError(await svc.fetch('/whip/whip-errs/PA_000000000000', { method: 'DELETE', headers: bearer(tok) }), 404, 'PEER_NOT_FOUND');
    const unknownPatch = await svc.fetch('/whip/whip-errs/PA_000000000000', {
      method: 'PATCH',
      headers: { 'content-type': 'application/trickle-ice-sdpfrag', ...bearer(tok) },
      body: 'a=end-of-candidates\r\n',
    });
    assertError(unknownPatch, 404, 'PEER_NOT_FOUND');

    const pre = await svc.fetch('/whip/whip-errs', {
      method: 'OPTIONS',
      headers: { origin: 'https://obs.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), '*');
    assert.match(pre.headers.get('access-control-allow-methods') ?? '', /POST/);
    assert.match(pre.headers.get('access-control-allow-headers') ?? '', /Authorization/i);
    assert.match(pre.headers.get('access-control-allow-headers') ?? '', /Content-Type/i);
    assert.match(pre.headers.get('access-control-expose-headers') ?? '', /Location/);
    const preRes = await svc.fetch('/whep/whip-errs/erin/PA_000000000000', { method: 'OPTIONS' });
    assert.equal(preRes.status, 204);
    assert.match(preRes.headers.get('access-control-allow-methods') ?? '', /PATCH/);
    assert.match(preRes.headers.get('access-control-allow-methods') ?? '', /DELETE/);

    // WHEP needs a room, a participant, and something it publishes.
    const viewer = await token('viewer', 'whep-errs', ['subscribe']);
    const recvOffer = await someOffer('recvonly');
    assertError(await postSdp('/whep/whep-errs/erin', recvOffer, viewer), 404, 'ROOM_NOT_FOUND');
    const idle = await svc.join('idle', 'whep-errs');
    assertError(await postSdp('/whep/whep-errs/erin', recvOffer, viewer), 404, 'PEER_NOT_FOUND');
    assertError(await postSdp('/whep/whep-errs/idle', recvOffer, viewer), 409, 'CONFLICT');
    assertError(await postSdp('/whep/whep-errs/idle', recvOffer, viewer, 'text/plain'), 415, 'UNSUPPORTED_MEDIA_TYPE');
    await idle.close({ leave: true });

    // A session that never connects can still be trickled into and deleted; CORS on errors too.
    const created = await postSdp('/whip/whip-errs', offer, tok);
    assert.equal(created.status, 201, String(created.body));
    const location = created.headers.get('location')!;
    const badFrag = await svc.fetch(location, { method: 'PATCH', headers: { 'content-type': 'application/json', ...bearer(tok) }, body: '{}' });
    assertError(badFrag, 415, 'UNSUPPORTED_MEDIA_TYPE');
    assert.equal(badFrag.headers.get('access-control-allow-origin'), '*');
    const bogus = await svc.fetch(location, {
      method: 'PATCH',
      headers: { 'content-type': 'application/trickle-ice-sdpfrag', ...bearer(tok) },
      body: 'a=candidate:garbage\r\n',
    });
    assertError(bogus, 400, 'INVALID_CANDIDATE');
    const restart = await svc.fetch(location, {
      method: 'PATCH',
      headers: { 'content-type': 'application/trickle-ice-sdpfrag', 'if-match': '*', ...bearer(tok) },
      body: 'a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n',
    });
    assertError(restart, 400, 'BAD_REQUEST');
    const fine = await svc.fetch(location, {
      method: 'PATCH',
      headers: { 'content-type': 'application/trickle-ice-sdpfrag', ...bearer(tok) },
      body: sdpFrag(offer, [{ candidate: 'candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host' }]),
    });
    assert.equal(fine.status, 204, JSON.stringify(fine.body));
    assert.deepEqual(await listIdentities('whip-errs'), ['erin']);
    assert.equal((await svc.fetch(location, { method: 'DELETE', headers: bearer(tok) })).status, 200);
    assert.deepEqual(await listIdentities('whip-errs'), []);
  });
});
