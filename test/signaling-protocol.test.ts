/**
 * docs/signaling.md, taken at its word: a client written only from that document (Node's own
 * WebSocket and werift PeerConnections, no project client code) gets what the document
 * promises, in the order it promises. Each check here is a sentence of the document:
 * the development token's body, grants and lifetime; `answer` before the publisher's
 * candidates and its own `track_published`; `TrackInfo.mid` naming the publisher's own
 * m-line (two video tracks of the same source told apart); `track_info` sent before the
 * offer announced with it; subscriber offers whose `tracks` carry `source` and `name`; no
 * subscriber candidate before the first subscriber offer; `left` echoing the `leave`'s
 * `id` as the last message; and a leave seen by the others as `track_unpublished` for each
 * track, then `participant_left`, then an offer without those tracks.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { RTCPeerConnection } from 'werift';
import { loadConfig } from '../src/config.ts';
import { startService, type Service } from '../src/service.ts';

type Msg = { type: string; id?: string | number; [k: string]: any };

/** werift kept on loopback (the tests run in a loopback-only namespace). */
const ICE = { iceAdditionalHostAddresses: ['127.0.0.1'], iceUseIpv6: false, iceInterfaceAddresses: { udp4: '127.0.0.1' }, bundlePolicy: 'max-bundle' as const };

/** A signaling socket that keeps every server message, in arrival order. */
class DocClient {
  readonly log: Msg[] = [];
  readonly ws: WebSocket;
  private readonly waiters = new Set<() => void>();
  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.addEventListener('message', (ev) => {
      this.log.push(JSON.parse(String(ev.data)) as Msg);
      for (const w of this.waiters) w();
    });
  }

  static async open(url: string): Promise<DocClient> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener('open', () => resolve(), { once: true });
      ws.addEventListener('error', () => reject(new Error(`cannot open ${url}`)), { once: true });
    });
    return new DocClient(ws);
  }

  send(msg: Msg): void {
    this.ws.send(JSON.stringify(msg));
  }

  /** Waits until `pick` finds something in the log (checked on every message), or fails saying what it waited for. */
  until<T>(what: string, pick: (log: Msg[]) => T | undefined, timeoutMs = 15_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const got = pick(this.log);
        if (got === undefined) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(got);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}; got: ${this.log.map((m) => m.type).join(', ')}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  index(pred: (m: Msg) => boolean): number {
    return this.log.findIndex(pred);
  }

  close(): void {
    this.ws.close();
  }
}

let svc: Service;
const pcs: RTCPeerConnection[] = [];
const sockets: DocClient[] = [];

before(async () => {
  svc = await startService(loadConfig({ SCV_HTTP_PORT: '0', SCV_LOG_LEVEL: process.env.SCV_TEST_LOG_LEVEL ?? 'silent' }));
});
after(async () => {
  for (const s of sockets) s.close();
  await Promise.all(pcs.map((pc) => pc.close()));
  await svc.close();
});

async function devToken(room: string, identity: string): Promise<string> {
  const res = await fetch(`${svc.httpUrl}/dev/token?room=${room}&identity=${identity}`);
  assert.equal(res.status, 200);
  const body = (await res.json()) as Record<string, unknown>;
  assert.deepEqual(Object.keys(body), ['token'], 'the reply body is {"token": …}');
  return body.token as string;
}

async function joined(room: string, identity: string): Promise<DocClient> {
  const c = await DocClient.open(svc.wsUrl);
  sockets.push(c);
  c.send({ type: 'join', id: `join-${identity}`, protocol: 1, token: await devToken(room, identity), name: identity });
  const first = await c.until('joined', (log) => log[0]);
  assert.equal(first.type, 'joined', `the first message after join is joined, got ${JSON.stringify(first)}`);
  assert.equal(first.id, `join-${identity}`);
  return c;
}

test('the development token: body {token}, grants publish and subscribe, valid 6 hours', async () => {
  const token = await devToken('docs', 'someone');
  const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
  assert.deepEqual(claims.grants, ['publish', 'subscribe']);
  assert.equal(claims.sub, 'someone');
  assert.equal(claims.room, 'docs');
  assert.equal((claims.exp as number) - (claims.iat as number), 6 * 3600);
});

test('a client written from docs/signaling.md sees what it promises, in order', async () => {
  const room = 'docs-order';
  const alice = await joined(room, 'alice');

  // Publish: two video tracks of the same source and one audio track; track_info for one of them first.
  const pub = new RTCPeerConnection(ICE);
  pcs.push(pub);
  // Trickled as gathered: the server keeps those that come before the offer.
  pub.onIceCandidate.subscribe((c) => alice.send({ type: 'candidate', target: 'publisher', candidate: c?.toJSON() ?? null }));
  pub.addTransceiver('video', { direction: 'sendonly' });
  pub.addTransceiver('video', { direction: 'sendonly' });
  pub.addTransceiver('audio', { direction: 'sendonly' });
  await pub.setLocalDescription(await pub.createOffer());
  const mids = pub.getTransceivers().map((t) => t.mid);
  assert.deepEqual(mids, ['0', '1', '2']);
  alice.send({ type: 'track_info', id: 'ti', mid: '1', source: 'screen', name: 'slides' });
  alice.send({ type: 'offer', id: 'pub', target: 'publisher', sdp: pub.localDescription!.sdp });
  const own = await alice.until('three own track_published', (log) => {
    const mine = log.filter((m) => m.type === 'track_published' && m.identity === 'alice');
    return mine.length === 3 ? mine : undefined;
  });
  const answerAt = alice.index((m) => m.type === 'answer' && m.id === 'pub');
  assert.ok(answerAt >= 0, `the offer is answered: ${JSON.stringify(alice.log.map((m) => [m.type, m.id, m.code, m.message, m.reason]))}`);
  for (const m of alice.log.slice(0, answerAt)) {
    assert.ok(!(m.type === 'candidate' && m.target === 'publisher'), 'no publisher candidate before the answer');
    assert.ok(m.type !== 'track_published', 'no own track_published before the answer');
  }
  await pub.setRemoteDescription({ type: 'answer', sdp: alice.log[answerAt]!.sdp });

  // track.mid ties each sid to the transceiver; the track_info sent first is in the announcement.
  const byMid = new Map(own.map((m) => [m.track.mid as string, m.track]));
  assert.deepEqual([...byMid.keys()].sort(), ['0', '1', '2']);
  assert.equal(byMid.get('0').kind, 'video');
  assert.equal(byMid.get('0').source, 'camera');
  assert.equal(byMid.get('1').kind, 'video');
  assert.equal(byMid.get('1').source, 'screen');
  assert.equal(byMid.get('1').name, 'slides');
  assert.equal(byMid.get('2').kind, 'audio');
  assert.equal(new Set(own.map((m) => m.track.sid)).size, 3);

  // A subscriber: its first offer names whose track each m-line carries, with source and name.
  const bob = await joined(room, 'bob');
  const offer = await bob.until('a subscriber offer', (log) => log.find((m) => m.type === 'offer'));
  assert.equal(offer.target, 'subscriber');
  const offered = Object.values(offer.tracks as Record<string, any>);
  assert.equal(offered.length, 3);
  const slides = offered.find((t) => t.trackSid === byMid.get('1').sid);
  assert.deepEqual(
    { identity: slides.identity, kind: slides.kind, source: slides.source, name: slides.name },
    { identity: 'alice', kind: 'video', source: 'screen', name: 'slides' },
  );
  const sub = new RTCPeerConnection(ICE);
  pcs.push(sub);
  sub.onIceCandidate.subscribe((c) => bob.send({ type: 'candidate', target: 'subscriber', candidate: c?.toJSON() ?? null }));
  await sub.setRemoteDescription({ type: 'offer', sdp: offer.sdp });
  await sub.setLocalDescription(await sub.createAnswer());
  bob.send({ type: 'answer', id: 'sub', target: 'subscriber', sdp: sub.localDescription!.sdp });
  await bob.until('ack of the answer', (log) => log.find((m) => (m.type === 'ack' || m.type === 'error') && m.id === 'sub'));
  assert.equal(bob.log.find((m) => m.id === 'sub')!.type, 'ack');

  // Alice leaves: her last message is left with the leave's id; Bob hears each track end, then her leaving, then an offer without her.
  alice.send({ type: 'leave', id: 'bye' });
  const left = await alice.until('left', (log) => log.find((m) => m.type === 'left'));
  assert.deepEqual({ id: left.id, reason: left.reason }, { id: 'bye', reason: 'client_left' });
  await new Promise<void>((resolve) => (alice.ws.readyState === WebSocket.CLOSED ? resolve() : alice.ws.addEventListener('close', () => resolve(), { once: true })));
  assert.equal(alice.log.at(-1)!.type, 'left', 'left is the last message');

  const reoffer = await bob.until('an offer after alice left', (log) => {
    const goneAt = log.findIndex((m) => m.type === 'participant_left');
    return goneAt === -1 ? undefined : log.slice(goneAt).find((m) => m.type === 'offer');
  });
  const goneAt = bob.index((m) => m.type === 'participant_left');
  assert.equal(bob.log[goneAt]!.identity, 'alice');
  const unpublished = bob.log.filter((m) => m.type === 'track_unpublished');
  assert.deepEqual(unpublished.map((m) => m.trackSid).sort(), own.map((m) => m.track.sid).sort());
  for (const m of unpublished) assert.ok(bob.log.indexOf(m) < goneAt, 'track_unpublished before participant_left');
  assert.deepEqual(Object.keys(reoffer.tracks), [], 'the offer after she left carries nothing of hers');

  const offerAt = bob.index((m) => m.type === 'offer');
  const firstSubscriberCandidate = bob.index((m) => m.type === 'candidate' && m.target === 'subscriber');
  assert.ok(firstSubscriberCandidate !== -1, 'the server trickles its subscriber candidates');
  assert.ok(firstSubscriberCandidate > offerAt, 'no subscriber candidate before the first subscriber offer');
});
