/** Our TWCC feedback, read back by an independent decoder and by werift's parser. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RtcpPacketConverter, RtcpTransportLayerFeedback, RunLengthChunk, TransportWideCC } from 'werift';
import { TwccFeedback, type TwccFeedbackOptions } from '../src/sfu/twcc-feedback.ts';

const SENDER_SSRC = 0x11223344;
const MEDIA_SSRC = 0xabcdef01;

interface Feedback {
  senderSsrc: number;
  mediaSsrc: number;
  baseSeq: number;
  count: number;
  /** The 24-bit field as sent. */
  referenceTime: number;
  fbCount: number;
  statuses: number[];
  /** Arrival (µs) per reported 16-bit sequence number; undefined when reported lost. */
  arrivals: Map<number, number | undefined>;
}

const signed24 = (v: number) => (v & 0x800000 ? v - 0x1000000 : v);

function arrivalsFrom(baseSeq: number, referenceTime: number, statuses: number[], deltasUs: number[]) {
  const arrivals = new Map<number, number | undefined>();
  let t = signed24(referenceTime) * 64_000;
  let k = 0;
  statuses.forEach((s, i) => {
    const seq = (baseSeq + i) & 0xffff;
    if (s === 0) return arrivals.set(seq, undefined);
    t += deltasUs[k++]!;
    arrivals.set(seq, t);
  });
  assert.equal(k, deltasUs.length, 'one delta per received packet');
  return arrivals;
}

/** Written from the draft and RFC 3550, independent of the encoder; `kinds` collects chunk types. */
function decode(buf: Buffer, kinds: string[] = []): Feedback {
  assert.equal(buf.length % 4, 0, 'padded to 32 bits');
  assert.equal(buf[0]! >> 6, 2, 'version');
  assert.equal(buf[0]! & 0x1f, 15, 'FMT');
  assert.equal(buf[1], 205, 'PT');
  assert.equal((buf.readUInt16BE(2) + 1) * 4, buf.length, 'length field');
  let end = buf.length;
  if (buf[0]! & 0x20) {
    const padding = buf[buf.length - 1]!;
    assert.ok(padding >= 1 && padding <= 3, `padding ${padding}`);
    for (let i = 2; i <= padding; i++) assert.equal(buf[buf.length - i], 0, 'padding bytes are zero');
    end -= padding;
  }
  const baseSeq = buf.readUInt16BE(12);
  const count = buf.readUInt16BE(14);
  assert.ok(count > 0, 'libwebrtc rejects empty feedback');
  const statuses: number[] = [];
  let o = 20;
  while (statuses.length < count) {
    const c = buf.readUInt16BE(o);
    o += 2;
    if ((c & 0x8000) === 0) {
      kinds.push('run');
      for (let k = 0; k < (c & 0x1fff); k++) statuses.push((c >> 13) & 3);
    } else if ((c & 0x4000) === 0) {
      kinds.push('1-bit');
      for (let k = 0; k < 14; k++) statuses.push((c >> (13 - k)) & 1);
    } else {
      kinds.push('2-bit');
      for (let k = 0; k < 7; k++) statuses.push((c >> (12 - 2 * k)) & 3);
    }
  }
  assert.ok(statuses.slice(count).every((s) => s === 0), 'unused symbols are zero');
  statuses.length = count;
  const deltasUs: number[] = [];
  for (const s of statuses) {
    assert.notEqual(s, 3, 'no "received without delta"');
    if (s === 1) deltasUs.push(buf.readUInt8(o++) * 250);
    if (s === 2) {
      deltasUs.push(buf.readInt16BE(o) * 250);
      o += 2;
    }
  }
  assert.equal(o, end, 'deltas end where padding starts');
  const referenceTime = buf.readUIntBE(16, 3);
  return {
    senderSsrc: buf.readUInt32BE(4),
    mediaSsrc: buf.readUInt32BE(8),
    baseSeq,
    count,
    referenceTime,
    fbCount: buf[19]!,
    statuses,
    arrivals: arrivalsFrom(baseSeq, referenceTime, statuses, deltasUs),
  };
}

function decodeWithWerift(buf: Buffer): Feedback {
  const packets = RtcpPacketConverter.deSerialize(buf);
  assert.equal(packets.length, 1);
  const rtpfb = packets[0];
  assert.ok(rtpfb instanceof RtcpTransportLayerFeedback);
  const twcc = rtpfb.feedback;
  assert.ok(twcc instanceof TransportWideCC);
  const statuses: number[] = [];
  for (const c of twcc.packetChunks) {
    if (c instanceof RunLengthChunk) for (let k = 0; k < c.runLength; k++) statuses.push(c.packetStatus);
    else statuses.push(...c.symbolList);
  }
  statuses.length = twcc.packetStatusCount;
  return {
    senderSsrc: twcc.senderSsrc,
    mediaSsrc: twcc.mediaSourceSsrc,
    baseSeq: twcc.baseSequenceNumber,
    count: twcc.packetStatusCount,
    referenceTime: twcc.referenceTime,
    fbCount: twcc.fbPktCount,
    statuses,
    arrivals: arrivalsFrom(
      twcc.baseSequenceNumber,
      twcc.referenceTime,
      statuses,
      twcc.recvDeltas.map((d) => d.delta),
    ),
  };
}

/** Both decoders, which must agree. */
function parse(buf: Buffer): Feedback {
  const ours = decode(buf);
  assert.deepEqual(decodeWithWerift(buf), ours);
  return ours;
}

function harness(opts: Partial<TwccFeedbackOptions> = {}) {
  let clock = 0;
  const sent: Buffer[] = [];
  /** First arrival time per 16-bit sequence number, as injected. */
  const truth = new Map<number, number>();
  const fb = new TwccFeedback({
    senderSsrc: SENDER_SSRC,
    send: (b) => sent.push(b),
    intervalMs: 3_600_000, // tests flush by hand unless they test the timer
    now: () => clock,
    ...opts,
  });
  fb.setMediaSsrc(MEDIA_SSRC);
  return {
    fb,
    sent,
    arrive(seq: number, atUs: number) {
      clock = atUs;
      fb.handleTWCC(seq);
      if (!truth.has(seq)) truth.set(seq, atUs);
    },
    /** Flushes, parses everything sent so far and clears it. */
    drain(): Feedback[] {
      fb.flush();
      const out = sent.map(parse);
      sent.length = 0;
      return out;
    },
    /** Every reported arrival within half a 250 µs tick of the truth; losses were not received. */
    check(f: Feedback) {
      for (const [seq, got] of f.arrivals) {
        const want = truth.get(seq);
        if (want === undefined) assert.equal(got, undefined, `seq ${seq} reported lost`);
        else assert.ok(got !== undefined && Math.abs(got - want) <= 125, `seq ${seq}: ${got} vs ${want}`);
      }
    },
  };
}

/** Consecutive packets cover consecutive sequence numbers, their counts increment. */
function assertContiguous(fbs: Feedback[]) {
  for (let i = 1; i < fbs.length; i++) {
    assert.equal(fbs[i]!.baseSeq, (fbs[i - 1]!.baseSeq + fbs[i - 1]!.count) & 0xffff, `packet ${i} base`);
    assert.equal(fbs[i]!.fbCount, (fbs[i - 1]!.fbCount + 1) & 0xff, `packet ${i} count`);
  }
}

test('arrivals, a gap of losses and exact times round-trip', () => {
  const h = harness();
  const lost = new Set([104, 117, 118, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146]);
  let t = 7_123_456; // not a multiple of 64 ms: the reference is floored
  let first: number | undefined;
  for (let seq = 100; seq < 170; seq++) {
    t += 400 + (seq % 5) * 333;
    if (lost.has(seq)) continue;
    first ??= t;
    h.arrive(seq, t);
  }
  const [f, ...rest] = h.drain();
  assert.equal(rest.length, 0);
  assert.equal(f!.senderSsrc, SENDER_SSRC);
  assert.equal(f!.mediaSsrc, MEDIA_SSRC);
  assert.equal(f!.baseSeq, 100);
  assert.equal(f!.count, 70);
  assert.equal(f!.referenceTime, Math.floor(first! / 64_000));
  for (let seq = 100; seq < 170; seq++) assert.equal(f!.arrivals.get(seq) === undefined, lost.has(seq), `seq ${seq}`);
  h.check(f!);
});

test('every length pads correctly, with and without the P bit', () => {
  const h = harness();
  let seq = 0;
  let t = 1_000_000;
  const paddings = new Set<number>();
  for (let n = 1; n <= 16; n++) {
    // Some large deltas, so both one- and two-byte deltas make up the lengths.
    for (let i = 0; i < n; i++, seq++) h.arrive(seq, (t += seq % 3 === 0 ? 70_000 : 1_000));
    h.fb.flush();
    const b = h.sent[0]!;
    paddings.add(b[0]! & 0x20 ? b[b.length - 1]! : 0);
    const fbs = h.drain();
    assert.equal(fbs.length, 1);
    assert.equal(fbs[0]!.count, n);
    h.check(fbs[0]!);
  }
  assert.deepEqual([...paddings].sort(), [0, 1, 2, 3]);
});

test('uses run-length, one-bit and two-bit chunks where each fits', () => {
  const h = harness();
  let t = 1_000_000;
  // 30 in a row; then alternately received and lost; then large deltas among small ones.
  for (let seq = 0; seq < 30; seq++) h.arrive(seq, (t += 1_000));
  for (let seq = 30; seq < 60; seq += 2) h.arrive(seq, (t += 1_000));
  for (let seq = 60; seq < 75; seq++) h.arrive(seq, (t += seq % 4 === 0 ? 80_000 : 1_000));
  h.fb.flush();
  const kinds: string[] = [];
  const f = decode(h.sent[0]!, kinds);
  assert.deepEqual(parse(h.sent[0]!), f);
  assert.deepEqual(new Set(kinds), new Set(['run', '1-bit', '2-bit']));
  assert.equal(f.count, 75);
  h.check(f);
});

test('wraps from 65535 to 0', () => {
  const h = harness();
  for (let i = 0; i < 12; i++) h.arrive((65530 + i) & 0xffff, 3_000_000 + i * 1_000);
  const [a] = h.drain();
  assert.equal(a!.baseSeq, 65530);
  assert.equal(a!.count, 12);
  assert.deepEqual([...a!.arrivals.keys()], [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5]);
  h.check(a!);
  h.arrive(6, 3_020_000);
  const [b] = h.drain();
  assert.equal(b!.baseSeq, 6);
  assertContiguous([a!, b!]);
  h.check(b!);
});

test('large and negative deltas, duplicates and late packets', () => {
  const h = harness();
  const t = 5_000_000;
  h.arrive(10, t);
  h.arrive(11, t + 100_000); // 100 ms later: beyond a one-byte delta
  h.arrive(13, t + 100_500);
  h.arrive(12, t + 101_000); // reordered behind 13
  h.arrive(11, t + 102_000); // duplicate: ignored
  const [f, ...rest] = h.drain();
  assert.equal(rest.length, 0);
  // 13 is reported after 12 although it arrived first: a negative (large) delta.
  assert.deepEqual(f!.statuses, [1, 2, 1, 2]);
  h.check(f!);
  h.arrive(9, t + 103_000); // belongs to an already reported range
  h.arrive(12, t + 103_000);
  assert.equal(h.drain().length, 0);
});

test('a delta too large for 16 bits starts a new packet; losses before it wait for it', () => {
  const h = harness();
  h.arrive(10, 1_000_000);
  h.arrive(12, 10_000_000); // 9 s later, 11 lost
  const fbs = h.drain();
  assert.equal(fbs.length, 2);
  assert.deepEqual([fbs[0]!.baseSeq, fbs[0]!.count], [10, 1]);
  assert.deepEqual([fbs[1]!.baseSeq, fbs[1]!.count], [11, 2]);
  assert.deepEqual(fbs[1]!.statuses.map((s) => s !== 0), [false, true]);
  assertContiguous(fbs);
  fbs.forEach(h.check);
});

test('more than 100 pending flush without the timer, every packet under 1200 bytes', () => {
  const h = harness();
  for (let seq = 0; seq < 100; seq++) h.arrive(seq, 1_000_000 + seq * 900);
  assert.equal(h.sent.length, 0);
  h.arrive(100, 1_100_000);
  assert.equal(h.sent.length, 1);
  for (let seq = 101; seq <= 3003; seq++) if (seq % 13 !== 0) h.arrive(seq, 1_100_000 + seq * 900);
  h.fb.flush();
  for (const b of h.sent) assert.ok(b.length <= 1200, `${b.length} bytes`);
  const fbs = h.drain();
  assert.ok(fbs.length >= 28);
  assertContiguous(fbs);
  assert.equal(fbs.reduce((n, f) => n + f.count, 0), 3003); // 3003 is lost: not reported yet
  fbs.forEach(h.check);
});

test('splits across packets to stay within maxPacketBytes', () => {
  const h = harness({ maxPacketBytes: 64 });
  for (let seq = 0; seq < 80; seq++) if (seq % 7 !== 3) h.arrive(seq, 2_000_000 + seq * 70_000);
  h.fb.flush();
  assert.ok(h.sent.length >= 4);
  for (const b of h.sent) assert.ok(b.length <= 64, `${b.length} bytes`);
  const fbs = h.drain();
  assertContiguous(fbs);
  assert.equal(fbs[0]!.baseSeq, 0);
  assert.equal(fbs.reduce((n, f) => n + f.count, 0), 80);
  fbs.forEach(h.check);
});

test('a long loss burst is one run-length chunk and does not stall', () => {
  const h = harness();
  h.arrive(0, 1_000_000);
  h.drain();
  h.arrive(3000, 1_500_000);
  h.arrive(3001, 1_500_100);
  const [f, ...rest] = h.drain();
  assert.equal(rest.length, 0);
  assert.deepEqual([f!.baseSeq, f!.count], [1, 3001]);
  assert.equal(f!.statuses.filter((s) => s === 0).length, 2999);
  assert.ok(f!.arrivals.get(3000) !== undefined);
  h.check(f!);
});

test('a jump of more than 4096 drops the oldest pending entries', () => {
  const h = harness();
  for (let seq = 0; seq < 50; seq++) h.arrive(seq, 1_000_000 + seq * 1000);
  h.arrive(10_000, 1_100_000);
  const [f, ...rest] = h.drain();
  assert.equal(rest.length, 0);
  assert.deepEqual([f!.baseSeq, f!.count], [10_000 - 4095, 4096]);
  assert.equal(f!.arrivals.get(10_000), 1_100_000);
});

test('reference time is signed and wraps at 24 bits', () => {
  const h = harness();
  h.arrive(1, -1_000); // a clock below zero: reference -1
  const [a] = h.drain();
  assert.equal(a!.referenceTime, 0xffffff);
  h.check(a!);
  const period = 2 ** 24 * 64_000;
  h.arrive(2, period + 130_000);
  const [b] = h.drain();
  assert.equal(b!.referenceTime, 2);
  assert.equal(b!.arrivals.get(2), 130_000);
});

test('feedback packet count wraps after 255; the latest media SSRC is used', () => {
  const h = harness();
  const counts: number[] = [];
  for (let seq = 0; seq < 300; seq++) {
    h.arrive(seq, 1_000_000 + seq * 1000);
    counts.push(h.drain()[0]!.fbCount);
  }
  assert.deepEqual(counts, counts.map((_, i) => i & 0xff));
  h.fb.setMediaSsrc(7);
  h.arrive(300, 2_000_000);
  assert.equal(h.drain()[0]!.mediaSsrc, 7);
});

test('random loss, reordering, duplicates and pauses across a wrap', () => {
  let state = 12345;
  const random = () => (state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  let clock = 0;
  const sent: { at: number; f: Feedback }[] = [];
  const fb = new TwccFeedback({ senderSsrc: 1, send: (b) => sent.push({ at: clock, f: parse(b) }), intervalMs: 3_600_000, now: () => clock });
  const firstArrival = new Map<number, number>();
  const order: number[] = [];
  for (let i = 0; i < 20_000; i++) {
    if (random() < 0.05) continue; // lost
    order.push((60_000 + i) & 0xffff);
    if (random() < 0.02) order.push((60_000 + i) & 0xffff); // duplicate
  }
  for (let i = 0; i + 1 < order.length; i++) {
    if (random() < 0.05) [order[i], order[i + 1]] = [order[i + 1]!, order[i]!];
  }
  clock = 5_000_000;
  for (const seq of order) {
    clock += random() < 0.001 ? 300_000 : Math.floor(random() * 3_000);
    if (!firstArrival.has(seq)) firstArrival.set(seq, clock);
    fb.handleTWCC(seq);
    if (random() < 0.01) fb.flush();
  }
  fb.flush();
  fb.close();
  assertContiguous(sent.map((s) => s.f));
  assert.equal(sent[0]!.f.baseSeq, 60_000);
  let reported = 0;
  for (const { at, f } of sent) {
    reported += f.count;
    for (const [seq, got] of f.arrivals) {
      const want = firstArrival.get(seq);
      // Reported lost only if it had not arrived by then (a late one is ignored afterwards).
      if (got === undefined) assert.ok(want === undefined || want > at, `seq ${seq} reported lost`);
      else assert.ok(want !== undefined && Math.abs(got - want) <= 125, `seq ${seq}: ${got} vs ${want}`);
    }
  }
  assert.ok(reported >= 19_990, `${reported} reported`);
});

test('the timer sends every intervalMs; close() stops it, drops state and is idempotent', (t) => {
  t.mock.timers.enable({ apis: ['setInterval'] });
  const h = harness({ intervalMs: 50 });
  const flush = t.mock.method(h.fb, 'flush');
  h.arrive(1, 1_000_000);
  h.arrive(2, 1_001_000);
  t.mock.timers.tick(49);
  assert.equal(h.sent.length, 0);
  t.mock.timers.tick(1);
  assert.equal(h.sent.length, 1);
  assert.equal(parse(h.sent[0]!).count, 2);
  h.arrive(3, 1_002_000);
  h.fb.close();
  h.fb.close();
  const calls = flush.mock.callCount();
  h.arrive(4, 1_003_000);
  t.mock.timers.tick(500);
  assert.equal(flush.mock.callCount(), calls, 'the interval is cleared');
  h.fb.flush();
  assert.equal(h.sent.length, 1, 'nothing pending survives close()');
});

test('the default clock works', () => {
  const sent: Buffer[] = [];
  const fb = new TwccFeedback({ senderSsrc: 1, send: (b) => sent.push(b) });
  fb.handleTWCC(40);
  fb.handleTWCC(41);
  fb.flush();
  fb.close();
  assert.equal(sent.length, 1);
  const f = parse(sent[0]!);
  assert.deepEqual([f.baseSeq, f.count], [40, 2]);
  assert.ok(f.arrivals.get(41)! >= f.arrivals.get(40)!);
});
