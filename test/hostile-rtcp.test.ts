/**
 * What an authenticated peer can make the media process do with RTCP (issue 8, point 9: a
 * media process once stalled for ~14 s and peaked at 801 MiB in a fuzz run). werift gave
 * every packet of a compound the rest of the datagram to parse, so one 1,200-byte datagram
 * of empty NACKs named ~100,000 packets, each of them answered; transport-cc feedback made
 * an object per claimed packet however short the datagram. Each test reproduces one of
 * these with werift's own parser or a real session (patches/werift+0.25.2.patch,
 * src/sfu/down-track.ts).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { GenericNack, RtcpPacketConverter, RtcpTransportLayerFeedback, RtpHeader, SrtpSession, TransportWideCC } from 'werift';
import { SRTP_AEAD_AES_128_GCM } from '../src/sfu/srtp-encryptor.ts';
import { RETRANSMIT_REPEAT_MS } from '../src/sfu/down-track.ts';
import { rtcp, u32 } from './helpers/hostile-peer.ts';
import { sleep, TestService } from './helpers/service.ts';

/** One RTCP transport-layer feedback packet (PT 205) of `fmt`, `body` after the header. */
const rtpfb = (fmt: number, body: Buffer): Buffer => rtcp(205, fmt, body);

const nacksOf = (data: Buffer) =>
  RtcpPacketConverter.deSerialize(data).flatMap((p) =>
    p instanceof RtcpTransportLayerFeedback && p.feedback instanceof GenericNack ? [p.feedback.lost] : [],
  );

test('each packet of a compound RTCP datagram is parsed from its own length only', () => {
  // A NACK without FCI, then one for 100 and 101: upstream read the second packet's bytes
  // as FCI of the first (its header 0x81cd0003 became "lost 0x81cd, bitmask 3").
  const compound = Buffer.concat([rtpfb(1, u32(1, 2)), rtpfb(1, u32(1, 2, (100 << 16) | 1))]);
  assert.deepEqual(nacksOf(compound), [[], [100, 101]]);
  // A length beyond the datagram ends parsing there instead of reading what follows.
  const overlong = rtpfb(1, u32(1, 2, (7 << 16) | 0));
  overlong.writeUInt16BE(40, 2);
  assert.deepEqual(nacksOf(Buffer.concat([rtpfb(1, u32(1, 2, 5 << 16)), overlong])), [[5]]);
});

test('NACKed sequence numbers wrap at 65536', () => {
  assert.deepEqual(nacksOf(rtpfb(1, u32(1, 2, (65535 << 16) | 0b11))), [[65535, 0, 1]]);
});

/** transport-cc feedback (RTCP PT 205 FMT 15) with the given status count and chunks, no deltas unless given. */
function twcc(statusCount: number, chunks: number[], deltas: Buffer = Buffer.alloc(0)): Buffer {
  const fixed = Buffer.alloc(16);
  fixed.writeUInt32BE(1, 0);
  fixed.writeUInt32BE(2, 4);
  fixed.writeUInt16BE(1000, 8); // base sequence number
  fixed.writeUInt16BE(statusCount, 10);
  const c = Buffer.alloc(chunks.length * 2);
  chunks.forEach((v, i) => c.writeUInt16BE(v, i * 2));
  const body = Buffer.concat([fixed, c, deltas]);
  return rtpfb(15, Buffer.concat([body, Buffer.alloc((4 - (body.length % 4)) % 4)]));
}
const runLength = (status: number, length: number) => (status << 13) | length;
const twccOf = (data: Buffer) => RtcpPacketConverter.deSerialize(data).flatMap((p) => (p instanceof RtcpTransportLayerFeedback && p.feedback instanceof TransportWideCC ? [p.feedback] : []));

test('transport-cc feedback: no more results than its status count, and no arrivals without delta bytes', () => {
  // 65,535 packets claimed received (small deltas) in a 28-byte packet: upstream made a
  // RecvDelta for each and read them from beyond the packet.
  assert.deepEqual(twccOf(twcc(65535, [runLength(1, 8191), runLength(1, 8191), runLength(1, 8191), runLength(1, 8191)])), []);

  // Runs of 3 lost, 2 received, 4 lost: 9 results numbered on from the base sequence number.
  // Upstream made length + 1 results per run, each run numbered from the base again.
  const [fb] = twccOf(twcc(9, [runLength(0, 3), runLength(1, 2), runLength(0, 4)], Buffer.from([4, 4])));
  assert.ok(fb !== undefined, 'a well-formed feedback parses');
  const results = fb.packetResults;
  assert.deepEqual(
    results.map((r) => [r.sequenceNumber, r.received]),
    [1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008].map((s) => [s, s === 1003 || s === 1004]),
  );
  // A status count far below what the runs say bounds the results.
  const [short] = twccOf(twcc(5, [runLength(0, 8191), runLength(0, 8191)]));
  assert.equal(short!.packetResults.length, 5);
});

test('an SRTP session keeps rollover state for at most 256 SSRCs', () => {
  const a = { key: randomBytes(16), salt: randomBytes(12) };
  const b = { key: randomBytes(16), salt: randomBytes(12) };
  const profile = SRTP_AEAD_AES_128_GCM as never;
  const sender = new SrtpSession({ profile, keys: { localMasterKey: a.key, localMasterSalt: a.salt, remoteMasterKey: b.key, remoteMasterSalt: b.salt } });
  const receiver = new SrtpSession({ profile, keys: { localMasterKey: b.key, localMasterSalt: b.salt, remoteMasterKey: a.key, remoteMasterSalt: a.salt } });
  const packet = (ssrc: number) => sender.encrypt(randomBytes(100), new RtpHeader({ ssrc, sequenceNumber: 1, timestamp: 1, payloadType: 96 }));
  const accepted = (ssrc: number) => {
    try {
      receiver.decrypt(packet(ssrc));
      return true;
    } catch (err) {
      assert.equal((err as Error).name, 'SrtpAuthenticationError');
      return false;
    }
  };
  // Upstream kept state for every one of these (a packet under a new SSRC each: ~100 bytes each, forever).
  const results = Array.from({ length: 300 }, (_, i) => accepted(1000 + i));
  assert.equal(results.filter(Boolean).length, 256);
  assert.ok(results.slice(0, 256).every(Boolean), 'the first 256 SSRCs are accepted');
  assert.ok(accepted(1000), 'a known SSRC still decrypts');
});

let svc: TestService;
before(async () => {
  svc = await TestService.start();
});
after(async () => {
  await svc.close();
});

test('a subscriber cannot make the server resend a packet more than once per NACK interval', async () => {
  const pub = await svc.join('pub', 'nack-storm');
  const sub = await svc.join('sub', 'nack-storm');
  await pub.publishTracks([{ kind: 'video' }]);
  const rec = await sub.waitForTrackFrom('pub', 'video', { minPackets: 60, minKeyframes: 1 });
  const receiver = rec.transceiver.receiver;
  const dtls = receiver.dtlsTransport;
  const send = (datagram: Buffer) => dtls.sendRtcp([{ serialize: () => datagram } as never]);
  await sleep(RETRANSMIT_REPEAT_MS * 2);

  // 80 NACKs without FCI whose sender-SSRC words read as "the 17 packets up to the newest":
  // upstream parsed each with the rest of the datagram as its FCI and resent ~20,000 packets.
  const newest = rec.highestSeq!;
  const name17 = (((newest - 16) & 0xffff) << 16) | 0xffff;
  const before1 = rec.duplicates;
  await send(Buffer.concat(Array.from({ length: 80 }, () => rtpfb(1, u32(name17, rec.ssrc!)))));
  await sleep(500);
  assert.equal(rec.duplicates - before1, 0, 'NACKs that name nothing get nothing resent');

  // 80 real NACKs, each naming the same 17 held packets: each is resent once.
  const newest2 = rec.highestSeq!;
  const fci = (((newest2 - 16) & 0xffff) << 16) | 0xffff;
  const before2 = rec.duplicates;
  await send(Buffer.concat(Array.from({ length: 80 }, () => rtpfb(1, u32(receiver.rtcpSsrc, rec.ssrc!, fci)))));
  await sleep(500);
  const resent = rec.duplicates - before2;
  assert.ok(resent >= 1 && resent <= 17, `each of the 17 named packets is resent at most once (got ${resent} duplicates)`);

  // The same NACK again after the interval is answered again: a lost retransmission can be asked for anew.
  const before3 = rec.duplicates;
  await send(rtpfb(1, u32(receiver.rtcpSsrc, rec.ssrc!, ((rec.highestSeq! & 0xffff) << 16) | 0)));
  await sub.waitUntil(() => rec.duplicates > before3 || undefined, 5_000, () => 'a retransmission of the newest packet');
  await Promise.all([pub.close({ leave: true }), sub.close({ leave: true })]);
});
