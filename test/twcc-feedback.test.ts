/** Our TWCC feedback against an independent decoder and against werift's parser. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RtcpPacketConverter, RtcpTransportLayerFeedback, TransportWideCC } from 'werift';
import { TwccFeedback } from '../src/sfu/twcc-feedback.ts';

interface Decoded {
  baseSeq: number;
  count: number;
  referenceUs: number;
  fbCount: number;
  /** Arrival (µs) per sequence number, undefined when reported lost. */
  arrivals: Map<number, number | undefined>;
}

/** Written from the draft, independent of the encoder. */
function decode(buf: Buffer): Decoded {
  assert.equal(buf.length % 4, 0, 'padded to 32 bits');
  assert.equal(buf[0]! >> 6, 2);
  assert.equal(buf[0]! & 0x1f, 15);
  assert.equal(buf[1], 205);
  assert.equal((buf.readUInt16BE(2) + 1) * 4, buf.length, 'length field');
  const baseSeq = buf.readUInt16BE(12);
  const count = buf.readUInt16BE(14);
  const refRaw = buf.readUIntBE(16, 3);
  const referenceUs = (refRaw & 0x800000 ? refRaw - 0x1000000 : refRaw) * 64_000;
  const statuses: number[] = [];
  let o = 20;
  while (statuses.length < count) {
    const c = buf.readUInt16BE(o);
    o += 2;
    if ((c & 0x8000) === 0) {
      const s = (c >> 13) & 3;
      for (let k = 0; k < (c & 0x1fff); k++) statuses.push(s);
    } else if ((c & 0x4000) === 0) {
      for (let k = 0; k < 14; k++) statuses.push((c >> (13 - k)) & 1);
    } else {
      for (let k = 0; k < 7; k++) statuses.push((c >> (12 - 2 * k)) & 3);
    }
  }
  statuses.length = count;
  const arrivals = new Map<number, number | undefined>();
  let t = referenceUs;
  statuses.forEach((s, i) => {
    const seq = (baseSeq + i) & 0xffff;
    if (s === 0) return arrivals.set(seq, undefined);
    const d = s === 1 ? buf.readUInt8(o) : buf.readInt16BE(o);
    o += s === 1 ? 1 : 2;
    t += d * 250;
    arrivals.set(seq, t);
  });
  assert.ok(o <= buf.length && buf.length - o < 4, 'no trailing garbage beyond padding');
  return { baseSeq, count, referenceUs, fbCount: buf[19]!, arrivals };
}

function harness() {
  let now = 1_000_000_000;
  const sent: Buffer[] = [];
  const fb = new TwccFeedback({ senderSsrc: 1, send: (b) => sent.push(b), intervalMs: 3_600_000, now: () => now });
  fb.setMediaSsrc(0xabcdef01);
  return {
    fb,
    sent,
    arrive(seq: number, atUs: number) {
      now = atUs;
      fb.handleTWCC(seq);
    },
  };
}

test('arrivals and losses round-trip through the independent decoder and werift', () => {
  const h = harness();
  const truth = new Map<number, number>();
  let t = 5_000_000;
  for (let seq = 100; seq < 160; seq++) {
    t += 1_000 + (seq % 5) * 300;
    if (seq % 9 === 4) continue; // lost
    h.arrive(seq, t);
    truth.set(seq, t);
  }
  h.fb.flush();
  assert.equal(h.sent.length, 1);
  const d = decode(h.sent[0]!);
  assert.equal(d.baseSeq, 100);
  for (let seq = 100; seq < 100 + d.count; seq++) {
    const expected = truth.get(seq);
    const got = d.arrivals.get(seq);
    if (expected === undefined) assert.equal(got, undefined, `seq ${seq} reported lost`);
    else assert.ok(got !== undefined && Math.abs(got - expected) <= 250, `seq ${seq}: ${got} vs ${expected}`);
  }
  const [parsed] = RtcpPacketConverter.deSerialize(h.sent[0]!) as RtcpTransportLayerFeedback[];
  const twcc = parsed!.feedback as TransportWideCC;
  assert.ok(twcc instanceof TransportWideCC);
  assert.equal(twcc.baseSequenceNumber, 100);
  assert.equal(twcc.packetStatusCount, d.count);
  assert.equal(twcc.mediaSourceSsrc, 0xabcdef01);
  assert.equal(twcc.recvDeltas.length, truth.size);
});

test('wraparound, large and negative deltas, reordering, duplicates', () => {
  const h = harness();
  h.arrive(65534, 2_000_000);
  h.arrive(65535, 2_001_000);
  h.arrive(1, 2_100_000); // 99 ms later: a large delta; 0 is missing so far
  h.arrive(0, 2_100_500); // reordered: arrives after 1, negative delta relative to it
  h.arrive(1, 2_200_000); // duplicate, ignored
  h.fb.flush();
  const d = decode(h.sent[0]!);
  assert.equal(d.baseSeq, 65534);
  assert.equal(d.count, 4);
  const got = [65534, 65535, 0, 1].map((s) => d.arrivals.get(s));
  const want = [2_000_000, 2_001_000, 2_100_500, 2_100_000];
  got.forEach((g, i) => assert.ok(g !== undefined && Math.abs(g - want[i]!) <= 250, `${i}: ${g} vs ${want[i]}`));
});

test('a gap too long for a 16-bit delta starts a new packet; feedback count increments', () => {
  const h = harness();
  h.arrive(10, 1_000_000);
  h.arrive(11, 1_000_000 + 9_000_000); // 9 s later
  h.fb.flush();
  assert.equal(h.sent.length, 2);
  const [a, b] = h.sent.map(decode);
  assert.equal(a!.baseSeq, 10);
  assert.equal(a!.count, 1);
  assert.equal(b!.baseSeq, 11);
  assert.equal((a!.fbCount + 1) & 0xff, b!.fbCount);
});

test('many pending packets flush early and split under the MTU; trailing losses wait', () => {
  const h = harness();
  for (let seq = 0; seq < 1000; seq++) h.arrive(seq, 1_000_000 + seq * 100);
  assert.ok(h.sent.length >= 1, 'flushed without the timer');
  h.fb.flush();
  let covered = 0;
  for (const b of h.sent) {
    assert.ok(b.length <= 1200, `packet of ${b.length} bytes`);
    covered += decode(b).count;
  }
  assert.equal(covered, 1000);
  h.sent.length = 0;
  h.arrive(1005, 2_000_000); // 1000..1004 missing: reported once 1005 arrived
  h.fb.flush();
  const d = decode(h.sent[0]!);
  assert.equal(d.baseSeq, 1000);
  assert.equal(d.count, 6);
  assert.equal([...d.arrivals.values()].filter((v) => v === undefined).length, 5);
});

test('close() stops it and is idempotent', () => {
  const h = harness();
  h.fb.close();
  h.fb.close();
  h.arrive(1, 1);
  h.fb.flush();
  assert.equal(h.sent.length, 0);
});
