/**
 * Our werift patch (patches/werift+0.25.2.patch, docs/werift.md) against the upstream bugs
 * of issue 8, each reproduced the way an attacker on the same host would: two werift
 * PeerConnections connected over 127.0.0.1 with media flowing both ways, and datagrams
 * from foreign addresses (all of 127/8 is on `lo`). Every test here fails on pristine
 * werift 0.25.2.
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { after, before, describe, mock, test } from 'node:test';
import { DtlsServer, Message, RTCPeerConnection, RTCRtpCodecParameters, RtpHeader, RtpPacket, type PeerConfig, type RTCRtpTransceiver } from 'werift';
import { CLOSE_NOTIFY, clientHello, dtlsFragment, forgedStun } from './helpers/datagram-flood.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const STUN_BINDING = 0x0001;
const STUN_REQUEST = 0x0000;

/** The parts of werift's ICE agent the tests look at. */
interface IceAgent {
  localUsername: string;
  localPassword: string;
  remoteUsername: string;
  remoteCandidates: { type: string; host: string; port: number }[];
  nominated: { localCandidate: { host: string; port: number } } | undefined;
  protocols: { type: string; onRequestReceived: { subscribe(f: (msg: Message) => void): { unSubscribe(): void } } }[];
}

interface Peer {
  pc: RTCPeerConnection;
  transceiver: RTCRtpTransceiver;
  /** RTP packets this peer has decrypted. */
  received: number;
  drops: string[];
  ice(): IceAgent;
  /** Where a datagram must go to reach this peer's ICE socket. */
  address(): { host: string; port: number };
}

function newPeer(): Peer {
  const drops: string[] = [];
  const config: Partial<PeerConfig> = {
    codecs: { audio: [], video: [new RTCRtpCodecParameters({ mimeType: 'video/VP8', clockRate: 90000, payloadType: 96 })] },
    iceServers: [],
    iceAdditionalHostAddresses: ['127.0.0.1'],
    iceUseIpv6: false,
    iceInterfaceAddresses: { udp4: '127.0.0.1' },
    bundlePolicy: 'max-bundle',
    onPacketDropped: (reason) => drops.push(reason),
  };
  const pc = new RTCPeerConnection(config);
  const peer: Peer = {
    pc,
    transceiver: undefined as never,
    received: 0,
    drops,
    ice: () => (pc.iceTransports[0]!.connection as unknown as IceAgent),
    address: () => {
      const local = peer.ice().nominated!.localCandidate;
      return { host: local.host, port: local.port };
    },
  };
  return peer;
}

/** a offers, b answers; both send and receive one video track; resolves once both have media. */
async function connectedPair(): Promise<{ a: Peer; b: Peer; stop: () => Promise<void> }> {
  const a = newPeer();
  const b = newPeer();
  a.transceiver = a.pc.addTransceiver('video', { direction: 'sendrecv' });
  await a.pc.setLocalDescription(await a.pc.createOffer());
  await b.pc.setRemoteDescription(a.pc.localDescription!);
  b.transceiver = b.pc.getTransceivers()[0]!;
  b.transceiver.setDirection('sendrecv');
  await b.pc.setLocalDescription(await b.pc.createAnswer());
  await a.pc.setRemoteDescription(b.pc.localDescription!);
  const deadline = Date.now() + 10_000;
  while ((a.pc.connectionState !== 'connected' || b.pc.connectionState !== 'connected') && Date.now() < deadline) await sleep(20);
  assert.equal(a.pc.connectionState, 'connected');
  assert.equal(b.pc.connectionState, 'connected');
  for (const p of [a, b]) p.pc.dtlsTransports[0]!.onRtp.subscribe(() => p.received++);
  let seq = 0;
  const timer = setInterval(() => {
    seq++;
    for (const p of [a, b]) {
      const header = new RtpHeader({ payloadType: 96, sequenceNumber: seq & 0xffff, timestamp: seq * 3000, marker: true });
      void p.transceiver.sender.sendRtp(new RtpPacket(header, Buffer.alloc(200, seq & 0xff)));
    }
  }, 10);
  await waitForMedia([a, b], 20);
  return {
    a,
    b,
    stop: async () => {
      clearInterval(timer);
      await Promise.allSettled([a.pc.close(), b.pc.close()]);
    },
  };
}

/** Resolves once every peer has received `count` more packets; fails after `ms`. */
async function waitForMedia(peers: Peer[], count: number, ms = 5_000): Promise<void> {
  const targets = peers.map((p) => p.received + count);
  const deadline = Date.now() + ms;
  while (peers.some((p, i) => p.received < targets[i]!)) {
    if (Date.now() > deadline) {
      throw new Error(`media stopped: received ${peers.map((p, i) => `${p.received}/${targets[i]}`).join(', ')}`);
    }
    await sleep(20);
  }
}

/** A UDP socket on a foreign loopback address that records every datagram sent back to it. */
async function foreignSocket(host = '127.0.0.2'): Promise<{ socket: Socket; replies: Buffer[]; send: (data: Buffer, to: { host: string; port: number }) => Promise<void> }> {
  const socket = createSocket('udp4');
  const replies: Buffer[] = [];
  socket.on('message', (m) => replies.push(m));
  socket.bind(0, host);
  await once(socket, 'listening');
  return {
    socket,
    replies,
    send: (data, to) => new Promise((resolve, reject) => socket.send(data, to.port, to.host, (err) => (err ? reject(err) : resolve()))),
  };
}

/** A Binding request as the legitimate remote would send it: right USERNAME, integrity with `password`. */
function bindingRequest(username: string, password: string): Buffer {
  const request = new Message(STUN_BINDING, STUN_REQUEST);
  request.setAttribute('USERNAME', username).setAttribute('PRIORITY', 0x6e7f1eff).setAttribute('ICE-CONTROLLING', 1n);
  request.addMessageIntegrity(Buffer.from(password, 'utf8')).addFingerprint();
  return request.bytes;
}

describe('werift patch: the media plane trusts only what ICE validated', () => {
  let pair: Awaited<ReturnType<typeof connectedPair>>;
  before(async () => {
    pair = await connectedPair();
  });
  after(async () => {
    await pair.stop();
  });

  test('a Binding request with a wrong MESSAGE-INTEGRITY gets no answer, no checks and adds no candidate', async () => {
    const { b } = pair;
    const ice = b.ice();
    const candidatesBefore = ice.remoteCandidates.length;
    const attacker = await foreignSocket('127.0.0.2');
    // USERNAME and FINGERPRINT right, integrity wrong: upstream answered with a success and
    // then sent five connectivity checks of its own to the sender.
    for (let i = 0; i < 20; i++) await attacker.send(forgedStun(`${ice.localUsername}:${ice.remoteUsername}`), b.address());
    await sleep(1500);
    assert.equal(attacker.replies.length, 0, `datagrams sent back to a forger: ${attacker.replies.length}`);
    assert.equal(ice.remoteCandidates.length, candidatesBefore, 'no peer-reflexive candidate learned from a forged request');
    assert.ok(b.drops.filter((r) => r === 'stun_auth').length >= 20, `drops: ${b.drops.join(',')}`);
    // The same request with the right password from the same address is answered: the
    // silence above is the check, not a deaf socket.
    await attacker.send(bindingRequest(`${ice.localUsername}:${ice.remoteUsername}`, ice.localPassword), b.address());
    const deadline = Date.now() + 2000;
    while (attacker.replies.length === 0 && Date.now() < deadline) await sleep(20);
    assert.ok(attacker.replies.length >= 1, 'an authenticated request is answered');
    attacker.socket.close();
  });

  test('an unauthenticated request is dropped on its raw bytes: no Message is built or handed on', async () => {
    const { b } = pair;
    const ice = b.ice();
    // Every Message werift's STUN socket builds from a request reaches this event; before the
    // raw check each forged request became one (with its attribute values and a promise per
    // subscriber) before the integrity check could reject it.
    const seen: string[] = [];
    const protocol = ice.protocols.find((p) => p.type === 'stun')!;
    const { unSubscribe } = protocol.onRequestReceived.subscribe((msg: Message) => seen.push(String(msg.getAttributeValue('USERNAME'))));
    const username = `${ice.localUsername}:${ice.remoteUsername}`;
    const unsigned = new Message(STUN_BINDING, STUN_REQUEST);
    unsigned.setAttribute('USERNAME', username).setAttribute('PRIORITY', 1).addFingerprint();
    const forged = [
      forgedStun(username), // integrity wrong
      forgedStun(`nobody:${ice.remoteUsername}`), // USERNAME names no ufrag of ours
      forgedStun(`${ice.localUsername}`), // no ':' after our ufrag
      unsigned.bytes, // no MESSAGE-INTEGRITY
    ];
    const dropsBefore = b.drops.filter((r) => r === 'stun_auth').length;
    const attackers = await Promise.all(forged.map((_, i) => foreignSocket(`127.0.2.${i + 1}`)));
    for (const [i, data] of forged.entries()) for (let n = 0; n < 5; n++) await attackers[i]!.send(data, b.address());
    await sleep(500);
    assert.deepEqual(seen, [], 'no Message built from an unauthenticated request');
    assert.equal(b.drops.filter((r) => r === 'stun_auth').length - dropsBefore, forged.length * 5, 'each one counted as stun_auth');
    assert.ok(attackers.every((a) => a.replies.length === 0), 'nothing sent back');
    // The check passes what it must: the same session's authenticated request is built and answered.
    await attackers[0]!.send(bindingRequest(username, ice.localPassword), b.address());
    const deadline = Date.now() + 2000;
    while (attackers[0]!.replies.length === 0 && Date.now() < deadline) await sleep(20);
    assert.deepEqual(seen, [username]);
    assert.ok(attackers[0]!.replies.length >= 1, 'an authenticated request is answered');
    unSubscribe();
    for (const a of attackers) a.socket.close();
  });

  test('remote candidates learned from requests are capped per session', async () => {
    const { b } = pair;
    const ice = b.ice();
    const sockets = await Promise.all(Array.from({ length: 20 }, (_, i) => foreignSocket(`127.0.1.${i + 1}`)));
    for (const s of sockets) await s.send(bindingRequest(`${ice.localUsername}:${ice.remoteUsername}`, ice.localPassword), b.address());
    await sleep(1500);
    const learned = ice.remoteCandidates.filter((c) => c.type === 'prflx').length;
    assert.ok(learned <= 8, `peer-reflexive candidates: ${learned}`);
    const answered = sockets.filter((s) => s.replies.length > 0).length;
    assert.ok(answered <= 8, `sources answered: ${answered}`);
    assert.ok(b.drops.includes('candidate_limit'));
    for (const s of sockets) s.socket.close();
    await waitForMedia([pair.a, b], 20);
  });

  test('a plaintext close_notify and ClientHello from another address do not end the session', async () => {
    const { a, b } = pair;
    const attacker = await foreignSocket('127.0.0.3');
    // Both ends: one is the DTLS server (where a ClientHello restarted the handshake), the other the client.
    for (const target of [a.address(), b.address()]) {
      await attacker.send(CLOSE_NOTIFY, target);
      await attacker.send(clientHello(), target);
    }
    await sleep(500);
    assert.equal(a.pc.dtlsTransports[0]!.state, 'connected');
    assert.equal(b.pc.dtlsTransports[0]!.state, 'connected');
    await waitForMedia([a, b], 50);
    assert.ok(b.drops.includes('unvalidated_source'));
    attacker.socket.close();
  });

  test('50,000 handshake fragments from another address are dropped, not buffered', async () => {
    const { a, b } = pair;
    const attacker = await foreignSocket('127.0.0.4');
    const dtls = b.pc.dtlsTransports[0]!.dtls as unknown as { bufferFragmentedHandshakes: unknown[] };
    const external = process.memoryUsage().arrayBuffers;
    const target = b.address();
    for (let i = 0; i < 50_000; i++) {
      attacker.socket.send(dtlsFragment(), target.port, target.host);
      if (i % 500 === 0) await sleep(1);
    }
    await sleep(500);
    assert.equal(dtls.bufferFragmentedHandshakes.length, 0);
    const grown = (process.memoryUsage().arrayBuffers - external) / 2 ** 20;
    assert.ok(grown < 20, `external memory grew ${grown.toFixed(1)} MiB`);
    await waitForMedia([a, b], 20);
    attacker.socket.close();
  });
});

describe('werift patch: plaintext DTLS after the handshake, as if from the peer’s own address', () => {
  let pair: Awaited<ReturnType<typeof connectedPair>>;
  before(async () => {
    pair = await connectedPair();
  });
  after(async () => {
    await pair.stop();
  });

  /** A datagram handed to the DTLS session as ICE would after its source check (a spoofer of the peer's address). */
  function deliver(p: Peer, datagram: Buffer): void {
    (p.pc.dtlsTransports[0]!.dtls as unknown as { udpOnMessage: (d: Buffer) => void }).udpOnMessage(datagram);
  }

  test('close_notify, ClientHello and records of unknown content type end nothing', async () => {
    const { a, b } = pair;
    const unknownType = Buffer.from('18fefd000000000000000100020100', 'hex');
    for (const p of [a, b]) {
      deliver(p, CLOSE_NOTIFY);
      deliver(p, clientHello());
      deliver(p, unknownType);
    }
    await sleep(300);
    for (const p of [a, b]) {
      assert.equal(p.pc.dtlsTransports[0]!.state, 'connected');
      assert.equal((p.pc.dtlsTransports[0]!.dtls as unknown as { connected: boolean }).connected, true, 'no handshake restarted');
    }
    await waitForMedia([a, b], 50);
    assert.ok(a.drops.includes('dtls_plaintext') && b.drops.includes('dtls_plaintext'));
  });
});

describe('werift patch: DTLS handshake buffers are bounded and expire', () => {
  /** A DTLS server socket fed directly, as if every datagram came from the validated peer. */
  function server(): { feed: (d: Buffer) => void; buffered: () => number; close: () => void } {
    const transport = { onData: (_: Buffer) => {}, send: async () => {}, close: () => {} };
    const s = new DtlsServer({ transport: transport as never, srtpProfiles: [], certificateRequest: false });
    const internals = s as unknown as { bufferFragmentedHandshakes: unknown[] };
    return { feed: (d) => transport.onData(d), buffered: () => internals.bufferFragmentedHandshakes.length, close: () => {} };
  }

  test('fragments of messages that never complete: at most 64 kept', () => {
    const s = server();
    for (let i = 0; i < 50_000; i++) s.feed(dtlsFragment());
    assert.ok(s.buffered() <= 64, `buffered fragments: ${s.buffered()}`);
  });

  test('an incomplete message is forgotten after 10 s', () => {
    mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
    try {
      const s = server();
      // Small enough to be buffered (a 4 KiB message in 200-byte pieces), never completed.
      const fragment = (offset: number) => {
        const body = Buffer.alloc(200, 7);
        const hs = Buffer.alloc(12);
        hs[0] = 11;
        hs.writeUIntBE(4096, 1, 3);
        hs.writeUInt16BE(1, 4);
        hs.writeUIntBE(offset, 6, 3);
        hs.writeUIntBE(body.length, 9, 3);
        const record = Buffer.alloc(13);
        record[0] = 22;
        record.writeUInt16BE(0xfefd, 1);
        record.writeUInt16BE(hs.length + body.length, 11);
        return Buffer.concat([record, hs, body]);
      };
      for (let i = 0; i < 10; i++) s.feed(fragment(i * 200));
      assert.equal(s.buffered(), 10);
      mock.timers.tick(10_001);
      s.feed(fragment(2000));
      assert.equal(s.buffered(), 1, 'the stale fragments were dropped');
    } finally {
      mock.timers.reset();
    }
  });
});
