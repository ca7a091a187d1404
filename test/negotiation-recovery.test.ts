/**
 * A subscriber whose answer fails, or who never answers, is not frozen: the offer is
 * withdrawn, counted in scv_negotiation_failures_total{reason}, and a fresh one follows;
 * three failures in a row remove the participant (`negotiation_failed`). The subscriber
 * here is a werift PeerConnection driven by hand over a raw socket, so it can answer
 * wrongly, late, or not at all; the publisher is a TestClient.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { RTCPeerConnection, type RTCRtpTransceiver } from 'werift';
import { peerConfig, LOOPBACK_ICE } from '../src/node-client/peer-config.ts';
import { rawSocket, type RawSocket } from './helpers/client.ts';
import { eventually, TestService } from './helpers/service.ts';

const NEGOTIATION_TIMEOUT_S = 2;

let svc: TestService;
before(async () => {
  svc = await TestService.start({ SCV_NEGOTIATION_TIMEOUT: String(NEGOTIATION_TIMEOUT_S) });
});
after(async () => {
  await svc.close();
});

interface Msg {
  type: string;
  id?: string | number;
  [k: string]: unknown;
}
type Offer = Msg & { sdp: string; tracks: Record<string, { identity: string; kind: string; trackSid: string }> };

/** A subscriber spoken by hand: every server message recorded, answers only when told. */
class ManualSubscriber {
  readonly messages: Msg[] = [];
  readonly pc = new RTCPeerConnection(peerConfig('subscriber', LOOPBACK_ICE));
  /** RTP packets received, by mid. */
  readonly packets = new Map<string, number>();
  private readonly sock: RawSocket;
  private nextId = 1;
  private remoteCandidates: Msg[] = [];

  private constructor(sock: RawSocket) {
    this.sock = sock;
    sock.ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as Msg;
      this.messages.push(m);
      if (m.type === 'candidate' && m.target === 'subscriber') void this.onCandidate(m);
    });
    this.pc.onIceCandidate.subscribe((c) => {
      if (c !== undefined && !this.sock.closed) this.sock.send({ type: 'candidate', target: 'subscriber', candidate: { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } });
    });
    this.pc.onRemoteTransceiverAdded.subscribe((t) => this.count(t));
  }

  static async join(identity: string, room: string): Promise<ManualSubscriber> {
    const sock = await rawSocket(svc.service.wsUrl);
    const sub = new ManualSubscriber(sock);
    const token = await svc.token(identity, room, ['subscribe']);
    const joined = await sub.request({ type: 'join', protocol: 1, token });
    assert.equal(joined.type, 'joined');
    return sub;
  }

  private count(t: RTCRtpTransceiver): void {
    t.onTrack.subscribe((track) => {
      track.onReceiveRtp.subscribe(() => {
        const mid = t.mid ?? '?';
        this.packets.set(mid, (this.packets.get(mid) ?? 0) + 1);
      });
    });
  }

  private async onCandidate(m: Msg): Promise<void> {
    const c = m.candidate as { candidate: string; sdpMid?: string; sdpMLineIndex?: number } | null;
    if (c === null || c.candidate === '') return;
    if (this.pc.remoteDescription === null) {
      this.remoteCandidates.push(m);
      return;
    }
    await this.pc.addIceCandidate({ candidate: c.candidate, sdpMid: c.sdpMid ?? undefined, sdpMLineIndex: c.sdpMLineIndex ?? undefined }).catch(() => {});
  }

  /** Sends a request and resolves with the reply that carries its id. */
  async request(msg: Msg): Promise<Msg> {
    const id = `m${this.nextId++}`;
    this.sock.send({ ...msg, id });
    let reply: Msg | undefined;
    await eventually(() => (reply = this.messages.find((m) => m.id === id)) !== undefined, `a reply to ${msg.type}`, 15_000);
    return reply!;
  }

  offers(): Offer[] {
    return this.messages.filter((m): m is Offer => m.type === 'offer');
  }

  /** Waits for the `n`th subscriber offer (1-based). */
  async offer(n: number, timeoutMs = 15_000): Promise<Offer> {
    await eventually(() => this.offers().length >= n, `subscriber offer #${n}`, timeoutMs);
    return this.offers()[n - 1]!;
  }

  answer(sdp: string): Promise<Msg> {
    return this.request({ type: 'answer', target: 'subscriber', sdp });
  }

  /** Applies `offer` to the PeerConnection and sends werift's answer. */
  async answerProperly(offer: Offer): Promise<Msg> {
    await this.pc.setRemoteDescription({ type: 'offer', sdp: offer.sdp });
    const pending = this.remoteCandidates;
    this.remoteCandidates = [];
    for (const m of pending) await this.onCandidate(m);
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    return this.answer(this.pc.localDescription!.sdp);
  }

  /** Packets received on the m-lines `offer` says carry `identity`'s `kind`. */
  packetsFrom(offer: Offer, identity: string, kind: string): number {
    let n = 0;
    for (const [mid, t] of Object.entries(offer.tracks)) if (t.identity === identity && t.kind === kind) n += this.packets.get(mid) ?? 0;
    return n;
  }

  async close(): Promise<void> {
    this.sock.terminate();
    await this.pc.close().catch(() => {});
  }
}

const failures = () => ({ ...svc.service.sfu.stats.negotiationFailures });

async function exported(reason: string): Promise<number> {
  const { body } = await svc.fetch('/metrics');
  const line = String(body)
    .split('\n')
    .find((l) => l.startsWith(`scv_negotiation_failures_total{reason="${reason}"}`));
  return line === undefined ? Number.NaN : Number(line.split(' ').pop());
}

test('answers the server cannot apply get INVALID_SDP, each then a fresh offer; answered, it brings media', async () => {
  const room = 'recover-garbage';
  const pub = await svc.join('pub', room);
  await pub.publishTracks([{ kind: 'audio' }, { kind: 'video', bitrateKbps: 100, fps: 15 }]);
  const before = failures();
  const sub = await ManualSubscriber.join('sub', room);
  try {
    const first = await sub.offer(1);
    // No subscriber candidate before the first offer it belongs to.
    const firstCandidate = sub.messages.findIndex((m) => m.type === 'candidate' && m.target === 'subscriber');
    assert.ok(firstCandidate === -1 || firstCandidate > sub.messages.indexOf(first), 'a subscriber candidate came before the first offer');
    const garbage = `v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 00\r\na=ice-ufrag:x\r\na=ice-pwd:y\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n`;
    const reply = await sub.answer(garbage);
    assert.equal(reply.type, 'error');
    assert.equal(reply.code, 'INVALID_SDP');
    const second = await sub.offer(2);
    // A real answer without all of the offer's m-sections: refused too, a third offer follows.
    await sub.pc.setRemoteDescription({ type: 'offer', sdp: second.sdp });
    await sub.pc.setLocalDescription(await sub.pc.createAnswer());
    const firstSectionOnly = sub.pc.localDescription!.sdp.split(/\r\nm=/).slice(0, 2).join('\r\nm=');
    const short = await sub.answer(`${firstSectionOnly}\r\n`);
    assert.equal(short.code, 'INVALID_SDP');
    assert.match(String(short.message), /offer's 2 media sections/);
    const fresh = await sub.offer(3);
    assert.deepEqual(Object.values(fresh.tracks).map((t) => t.kind).sort(), ['audio', 'video']);
    assert.equal((await sub.answerProperly(fresh)).type, 'ack');
    await eventually(() => sub.packetsFrom(fresh, 'pub', 'video') >= 20 && sub.packetsFrom(fresh, 'pub', 'audio') >= 20, 'media on the fresh offer', 20_000);
    assert.equal(failures().invalid_answer - before.invalid_answer, 2);
    assert.equal(failures().timeout, before.timeout);
    assert.ok((await exported('invalid_answer')) >= 2);
    // The answer was applied: no fourth offer, and no further failure.
    assert.equal(sub.offers().length, 3);
  } finally {
    await sub.close();
    await pub.close({ leave: true });
  }
});

test('an offer left unanswered is replaced after the timeout; the late answer to it gets CONFLICT and the newer offer still works', async () => {
  const room = 'recover-timeout';
  const pub = await svc.join('pub', room);
  await pub.publish('audio');
  const before = failures();
  const sub = await ManualSubscriber.join('sub', room);
  try {
    const stale = await sub.offer(1);
    const sentAt = Date.now();
    // While the first offer waits, a video track comes: the next offer has one m-line more.
    await pub.publish('video', { bitrateKbps: 100, fps: 15 });
    const fresh = await sub.offer(2, NEGOTIATION_TIMEOUT_S * 1000 + 10_000);
    const waited = Date.now() - sentAt;
    assert.ok(waited >= NEGOTIATION_TIMEOUT_S * 1000 - 100, `the fresh offer came after ${waited} ms, before the timeout`);
    assert.equal(failures().timeout - before.timeout, 1);
    assert.deepEqual(Object.values(fresh.tracks).map((t) => t.kind).sort(), ['audio', 'video']);
    // The client answers the offer it had, too late.
    const late = await sub.answerProperly(stale);
    assert.equal(late.type, 'error');
    assert.equal(late.code, 'CONFLICT');
    assert.match(String(late.message), /earlier subscriber offer/);
    // The newer offer was not disturbed: answered now, media flows on it.
    assert.equal((await sub.answerProperly(fresh)).type, 'ack');
    await eventually(() => sub.packetsFrom(fresh, 'pub', 'video') >= 20 && sub.packetsFrom(fresh, 'pub', 'audio') >= 20, 'media on the newer offer', 20_000);
    assert.equal(failures().invalid_answer, before.invalid_answer, 'the late answer is not a failure');
    assert.equal(sub.offers().length, 2);
    assert.ok((await exported('timeout')) >= 1);
  } finally {
    await sub.close();
    await pub.close({ leave: true });
  }
});

test('a subscriber that keeps failing is removed with negotiation_failed', async () => {
  const room = 'recover-removed';
  const pub = await svc.join('pub', room);
  await pub.publish('audio');
  const before = failures();
  const sub = await ManualSubscriber.join('sub', room);
  try {
    // Answers each offer with an offer of its own (a=setup:actpass): never an answer.
    for (let n = 1; n <= 3; n++) {
      await sub.offer(n);
      const reply = await sub.answer(sub.offers()[n - 1]!.sdp);
      assert.equal(reply.code, 'INVALID_SDP', `answer #${n}`);
    }
    let left: Msg | undefined;
    await eventually(() => (left = sub.messages.find((m) => m.type === 'left')) !== undefined, '"left"', 10_000);
    assert.equal(left!.reason, 'negotiation_failed');
    assert.equal(sub.offers().length, 3, 'no offer after the third failure');
    assert.equal(failures().invalid_answer - before.invalid_answer, 3);
    const gone = await pub.waitForEvent('participant_left', (m) => m.identity === 'sub');
    assert.equal(gone.reason, 'negotiation_failed');
    assert.equal(svc.service.sfu.findRoom(room)?.byIdentity('sub'), undefined);
  } finally {
    await sub.close();
    await pub.close({ leave: true });
  }
});
