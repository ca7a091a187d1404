/**
 * The media plane against spoofed datagrams, and transports that stop (issue 8): the real
 * server, werift clients joined over the WebSocket protocol, and datagrams from foreign
 * loopback addresses (all of 127/8 is on `lo`) at the server's ICE ports. What a user
 * sees: media keeps flowing, nobody answers a forger, every drop is counted in /metrics;
 * a participant whose DTLS closes or whose consent expires is removed and everyone is told.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import type { RTCPeerConnection } from 'werift';
import { CLOSE_NOTIFY, clientHello, dtlsFragment, forgedStun, junk } from './helpers/datagram-flood.ts';
import type { TestClient } from './helpers/client.ts';
import { sleep, TestService } from './helpers/service.ts';
import { MAX_REMOTE_CANDIDATES } from '../src/sfu/rtc-transport.ts';

/** The parts of werift's ICE agent a client's test looks at. */
interface IceAgent {
  localUsername: string;
  remoteUsername: string;
  nominated: { remoteCandidate: { host: string; port: number } } | undefined;
}

/** The server's end of one of the client's connections, and the ICE USERNAME a request to it carries. */
function serverEnd(pc: RTCPeerConnection): { host: string; port: number; username: string } {
  const ice = pc.iceTransports[0]!.connection as unknown as IceAgent;
  const remote = ice.nominated!.remoteCandidate;
  return { host: remote.host, port: remote.port, username: `${ice.remoteUsername}:${ice.localUsername}` };
}

async function foreignSockets(count: number, prefix: string): Promise<{ sockets: Socket[]; replies: () => number }> {
  let replies = 0;
  const sockets = await Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const s = createSocket('udp4');
      s.on('message', () => replies++);
      s.bind(0, `${prefix}.${i + 1}`);
      await once(s, 'listening');
      return s;
    }),
  );
  return { sockets, replies: () => replies };
}

async function droppedByReason(svc: Pick<TestService, 'fetch'>): Promise<Record<string, number>> {
  const r = await svc.fetch('/metrics');
  const out: Record<string, number> = {};
  for (const m of String(r.body).matchAll(/^scv_media_packets_dropped_total\{reason="(\w+)"\} (\d+)/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

/**
 * Sends the datagrams of issue 8 at `target` from `sockets`: forged STUN (right USERNAME,
 * wrong integrity), plaintext close_notify and ClientHello, handshake fragments, junk.
 * Returns how many of each went out.
 */
async function attack(sockets: Socket[], target: { host: string; port: number; username: string }): Promise<{ stun: number; other: number }> {
  let stun = 0;
  let other = 0;
  const send = (s: Socket, d: Buffer) => new Promise<void>((resolve) => s.send(d, target.port, target.host, () => resolve()));
  for (const s of sockets) {
    // Paced, so the server's socket buffer never overflows and every datagram reaches it.
    await sleep(20);
    for (let i = 0; i < 20; i++, stun++) await send(s, forgedStun(target.username));
    for (const d of [CLOSE_NOTIFY, clientHello(), junk('dtls', 300), junk('rtp', 300), junk('rtcp', 100), Buffer.alloc(0)]) {
      await send(s, d);
      other++;
    }
    for (let i = 0; i < 100; i++, other++) {
      if (i % 25 === 0) await sleep(5);
      await send(s, dtlsFragment());
    }
  }
  return { stun, other };
}

/** An alert on the client's own DTLS session, encrypted as its peer (the server) expects it. */
function sendDtlsAlert(pc: RTCPeerConnection, level: 1 | 2, description: number): Promise<void> {
  const socket = pc.dtlsTransports[0]!.dtls as unknown as {
    dtls: { version: { major: number; minor: number }; epoch: number; recordSequenceNumber: number };
    cipher: { encryptPacket(p: object): { fragment: Buffer } };
    transport: { send(b: Buffer): Promise<void> };
  };
  const header = { contentType: 21, protocolVersion: socket.dtls.version, epoch: socket.dtls.epoch, sequenceNumber: ++socket.dtls.recordSequenceNumber, contentLen: 2 };
  const { fragment } = socket.cipher.encryptPacket({ recordLayerHeader: header, fragment: Buffer.from([level, description]) });
  const record = Buffer.alloc(13);
  record[0] = 21;
  record[1] = header.protocolVersion.major;
  record[2] = header.protocolVersion.minor;
  record.writeUInt16BE(header.epoch, 3);
  record.writeUIntBE(header.sequenceNumber, 5, 6);
  record.writeUInt16BE(fragment.length, 11);
  return socket.transport.send(Buffer.concat([record, fragment]));
}

async function spoofedAtLiveRoom(svc: Pick<TestService, 'fetch' | 'join'>, room: string): Promise<void> {
  const pub = await svc.join('pub', room);
  const sub = await svc.join('sub', room);
  await pub.publishTracks([{ kind: 'audio' }, { kind: 'video' }]);
  const video = await sub.waitForTrackFrom('pub', 'video', { minPackets: 30 });
  const audio = await sub.waitForTrackFrom('pub', 'audio', { minPackets: 20 });
  const before = await droppedByReason(svc);
  // Legitimate traffic is never dropped: two clients joined, published and subscribed.
  assert.ok(Object.keys(before).length >= 6 && Object.values(before).every((n) => n === 0), `drops before the attack: ${JSON.stringify(before)}`);
  const { sockets, replies } = await foreignSockets(8, '127.0.2');
  let stun = 0;
  let other = 0;
  for (const target of [serverEnd(sub.subscriberPc!), serverEnd(pub.publisherPc!)]) {
    const sent = await attack(sockets, target);
    stun += sent.stun;
    other += sent.other;
  }
  // Media keeps flowing to the subscriber whose port took the spoofed close_notify and ClientHello…
  await sub.waitForMorePackets(video, 60, 5_000);
  await sub.waitForMorePackets(audio, 40, 5_000);
  // …nobody was answered (upstream: a success and five checks for each forged request)…
  assert.equal(replies(), 0, `datagrams sent back to the forgers: ${replies()}`);
  // …nobody left, and every datagram is counted.
  assert.equal(pub.eventsOf('participant_left').length, 0);
  assert.equal(sub.eventsOf('participant_left').length, 0);
  // UDP may lose a few datagrams even on loopback (a busy machine, a full socket buffer).
  let now = before;
  const grew = (reason: string) => (now[reason] ?? 0) - (before[reason] ?? 0);
  const counted = () => grew('stun_auth') >= stun * 0.98 && grew('unvalidated_source') >= other * 0.98;
  for (const end = Date.now() + 5_000; Date.now() < end && !counted(); await sleep(200)) now = await droppedByReason(svc);
  assert.ok(counted(), `stun_auth +${grew('stun_auth')} of ${stun} forged requests, unvalidated_source +${grew('unvalidated_source')} of ${other} other datagrams (${JSON.stringify(now)})`);
  for (const s of sockets) s.close();
  await Promise.all([pub.close({ leave: true }), sub.close({ leave: true })]);
}

describe('spoofed datagrams at a live room', () => {
  test('media in one process: media keeps flowing, nothing is answered, drops are counted', async () => {
    const svc = await TestService.start();
    try {
      await spoofedAtLiveRoom(svc, 'spoofed-local');
    } finally {
      await svc.close();
    }
  });

  test('behind the edge: the drop counter of the media worker shows in the edge /metrics', async () => {
    const svc = await TestService.startEdge(1);
    try {
      await spoofedAtLiveRoom(svc, 'spoofed-edge');
    } finally {
      await svc.close();
    }
  });
});

test('a connection accepts at most 32 distinct trickled candidates; the next one is a coded error, a repeat is not counted', async () => {
  const svc = await TestService.start();
  try {
    const c = await svc.join('trickler', 'trickle');
    await c.publishTracks([{ kind: 'audio' }]);
    const replies: string[] = [];
    for (let i = 0; i < 40; i++) {
      const candidate = { candidate: `candidate:${i} 1 udp 2122260223 127.0.3.${i + 1} ${40_000 + i} typ host`, sdpMid: '0', sdpMLineIndex: 0 };
      const reply = await c.request({ type: 'candidate', target: 'publisher', candidate });
      replies.push(reply.type === 'error' ? reply.code : reply.type);
    }
    const acked = replies.filter((r) => r === 'ack').length;
    assert.ok(acked <= MAX_REMOTE_CANDIDATES && acked >= MAX_REMOTE_CANDIDATES - 4, `acked ${acked}: ${replies.join(',')}`);
    assert.deepEqual(replies.slice(acked), Array(40 - acked).fill('INVALID_CANDIDATE'));
    const refused = await c.request({ type: 'candidate', target: 'publisher', candidate: { candidate: 'candidate:99 1 udp 1 127.0.3.99 49999 typ host', sdpMid: '0' } });
    assert.equal(refused.type, 'error');
    assert.match((refused as { message: string }).message, /too many ICE candidates/);
    // A candidate sent again is not a new one: trickling it twice never uses up the cap.
    const again = await c.request({ type: 'candidate', target: 'publisher', candidate: { candidate: 'candidate:0 1 udp 2122260223 127.0.3.1 40000 typ host', sdpMid: '0', sdpMLineIndex: 0 } });
    assert.equal(again.type, 'ack', JSON.stringify(again));
    await c.close({ leave: true });
  } finally {
    await svc.close();
  }
});

describe('a transport that stops is never a zombie', () => {
  let svc: TestService;
  before(async () => {
    svc = await TestService.start({ SCV_RTC_CONSENT_TIMEOUT: '8' });
  });
  after(async () => {
    await svc.close();
  });

  async function stays(c: TestClient, identity: string): Promise<void> {
    await sleep(1500);
    assert.equal(c.eventsOf('participant_left').filter((m) => m.identity === identity).length, 0, `${identity} is still in the room`);
  }

  test('a close_notify from the participant’s own peer removes it, and everyone is told', async () => {
    const room = 'dtls-close';
    const stay = await svc.join('stay', room);
    const go = await svc.join('go', room);
    await stay.publishTracks([{ kind: 'video' }]);
    await go.waitForTrackFrom('stay', 'video', { minPackets: 20 });
    await sendDtlsAlert(go.subscriberPc!, 1, 0);
    const left = await go.waitForEvent('left', () => true, 5_000);
    assert.equal(left.reason, 'connection_failed');
    const seen = await stay.waitForEvent('participant_left', (m) => m.identity === 'go', 5_000);
    assert.equal(seen.reason, 'connection_failed');
    await Promise.all([stay.close({ leave: true }), go.close()]);
  });

  test('a fatal alert on a publisher connection removes the participant', async () => {
    const room = 'dtls-fatal';
    const stay = await svc.join('stay', room);
    const go = await svc.join('go', room);
    await go.publishTracks([{ kind: 'audio' }]);
    await stay.waitForTrackFrom('go', 'audio', { minPackets: 20 });
    // A warning other than close_notify ends nothing (upstream closed on every warning).
    await sendDtlsAlert(go.publisherPc!, 1, 90 /* user_canceled */);
    await stays(stay, 'go');
    await sendDtlsAlert(go.publisherPc!, 2, 80 /* internal_error */);
    const seen = await stay.waitForEvent('participant_left', (m) => m.identity === 'go', 5_000);
    assert.equal(seen.reason, 'connection_failed');
    await stay.waitForEvent('track_unpublished', () => true, 5_000);
    await Promise.all([stay.close({ leave: true }), go.close()]);
  });

  test('no consent for SCV_RTC_CONSENT_TIMEOUT seconds: removed, and everyone is told', async () => {
    const room = 'consent';
    const stay = await svc.join('stay', room);
    const go = await svc.join('go', room);
    await go.publishTracks([{ kind: 'audio' }]);
    await stay.waitForTrackFrom('go', 'audio', { minPackets: 20 });
    // Media and ICE gone, socket still up: only the consent clock can notice.
    const t0 = Date.now();
    await go.closePeerConnections();
    const seen = await stay.waitForEvent('participant_left', (m) => m.identity === 'go', 20_000);
    const after = (Date.now() - t0) / 1000;
    assert.equal(seen.reason, 'connection_failed');
    // The clock runs from the last answered check (one every 4-6 s): at most 8 s after that.
    assert.ok(after < 15, `removed after ${after.toFixed(1)} s (consent timeout 8 s)`);
    const left = await go.waitForEvent('left', () => true, 5_000);
    assert.equal(left.reason, 'connection_failed');
    await Promise.all([stay.close({ leave: true }), go.close()]);
  });
});
