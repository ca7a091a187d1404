/**
 * The Forwarder (src/sfu/forwarder.ts) on packet sequences: what one subscriber receives of
 * a published track, as outgoing sequence numbers and timestamps. A subscriber must see one
 * continuous stream that starts on a keyframe: a gap it sees is loss it NACKs, a jump or a
 * repeat breaks its jitter buffer and decoder.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DROP, DROP_WANT_KEYFRAME, FORWARD, Forwarder, type ForwarderContinuation, type ForwarderPacket, type Verdict } from '../src/sfu/forwarder.ts';
import { PaddingRemover } from '../src/sfu/padding-remover.ts';

const SSRC = 0x11111111;

function pkt(sequenceNumber: number, timestamp: number, opts: Partial<ForwarderPacket> = {}): ForwarderPacket {
  return { ssrc: SSRC, layer: 0, sequenceNumber: sequenceNumber & 0xffff, timestamp: timestamp >>> 0, keyframe: false, arrivalMs: 0, ...opts };
}

const video = (from?: ForwarderContinuation) => new Forwarder('video', 90_000, from);
const audio = () => new Forwarder('audio', 48_000);

/** What the subscriber got: the verdict and, when forwarded, the outgoing numbers. */
interface Out {
  verdict: Verdict;
  seq?: number;
  ts?: number;
  index?: number;
}

function push(f: Forwarder, p: ForwarderPacket): Out {
  const verdict = f.push(p);
  return verdict === FORWARD ? { verdict, seq: f.sequenceNumber, ts: f.timestamp, index: f.index } : { verdict };
}

const seqDiff = (a: number, b: number) => (b - a + 0x10000) & 0xffff;
const tsDiff = (a: number, b: number) => (b - a) >>> 0;

test('video starts on a keyframe: packets before it are dropped with a keyframe request', () => {
  const f = video();
  assert.equal(push(f, pkt(100, 9000)).verdict, DROP_WANT_KEYFRAME);
  assert.equal(push(f, pkt(101, 9000)).verdict, DROP_WANT_KEYFRAME);
  const first = push(f, pkt(102, 12000, { keyframe: true }));
  assert.equal(first.verdict, FORWARD);
  const next = push(f, pkt(103, 12000));
  assert.equal(next.verdict, FORWARD);
  assert.equal(seqDiff(first.seq!, next.seq!), 1);
  assert.equal(next.ts, first.ts);
  const later = push(f, pkt(104, 15000));
  assert.equal(tsDiff(first.ts!, later.ts!), 3000, 'timestamps keep their spacing');
});

test('audio starts on its first packet', () => {
  const f = audio();
  assert.equal(f.push(pkt(7, 960)), FORWARD);
});

test('loss passes through as a gap of the same size', () => {
  const f = video();
  const a = push(f, pkt(10, 0, { keyframe: true }));
  push(f, pkt(11, 0));
  const c = push(f, pkt(14, 3000)); // 12 and 13 lost upstream
  assert.equal(seqDiff(a.seq!, c.seq!), 4);
});

test('a late packet keeps its place; one older than the start is dropped', () => {
  const f = video();
  push(f, pkt(50, 0)); // before the start: dropped
  const start = push(f, pkt(52, 3000, { keyframe: true }));
  const ahead = push(f, pkt(54, 3000));
  const late = push(f, pkt(53, 3000));
  assert.equal(late.verdict, FORWARD);
  assert.equal(seqDiff(start.seq!, late.seq!), 1);
  assert.equal(seqDiff(start.seq!, ahead.seq!), 2);
  assert.equal(push(f, pkt(51, 0)).verdict, DROP, 'its frame never reached the subscriber');
  // A late packet does not move the numbering back: the next rebase continues after the newest.
  assert.deepEqual(f.continuation()?.sequenceNumber, ahead.seq);
});

test('padding-only packets, closed up per incoming stream, leave no gap', () => {
  // What PublishedTrack does before handing packets to every subscriber's forwarder.
  const padding = new PaddingRemover();
  const f = video();
  const seqs: number[] = [];
  const feed = (seq: number, paddingOnly = false, keyframe = false) => {
    const mapped = padding.map(seq, paddingOnly);
    if (mapped !== undefined && f.push(pkt(mapped, 0, { keyframe })) === FORWARD) seqs.push(f.sequenceNumber);
  };
  feed(200, false, true);
  feed(201);
  feed(202, true);
  feed(203, true);
  feed(204);
  feed(205);
  assert.deepEqual(
    seqs.map((s) => seqDiff(seqs[0]!, s)),
    [0, 1, 2, 3],
  );
});

test('sequence numbers and timestamps wrap at 16 and 32 bits; the SRTP index counts on', () => {
  const f = video({ sequenceNumber: 65533, timestamp: 0xffffe000, index: 65533, arrivalMs: 0 });
  const outs: Out[] = [];
  for (let i = 0; i < 6; i++) outs.push(push(f, pkt(1000 + i, 5000 + i * 3000, { keyframe: i === 0 })));
  assert.deepEqual(
    outs.map((o) => o.seq),
    [65534, 65535, 0, 1, 2, 3],
  );
  assert.deepEqual(
    outs.map((o) => o.index),
    [65534, 65535, 65536, 65537, 65538, 65539],
  );
  // Rebased one frame after the last timestamp sent, then 3000 a frame, across 2^32.
  assert.equal(outs[0]!.ts, (0xffffe000 + 3000) >>> 0);
  assert.equal(outs[2]!.ts, (0xffffe000 + 9000) >>> 0);
  assert.ok(outs[2]!.ts! < outs[1]!.ts!, 'the timestamp wrapped');

  // The incoming side wraps too.
  const g = audio();
  const first = push(g, pkt(65535, 0xffffffff));
  const second = push(g, pkt(0, 959));
  assert.equal(seqDiff(first.seq!, second.seq!), 1);
  assert.equal(tsDiff(first.ts!, second.ts!), 960);
});

test('an SSRC change keeps the output continuous and waits for a keyframe', () => {
  const f = video();
  push(f, pkt(10, 90_000, { keyframe: true }));
  const last = push(f, pkt(11, 93_000));
  // The publisher restarts its encoder: new SSRC, numbering from elsewhere.
  assert.equal(f.push(pkt(40_000, 7, { ssrc: 0x2222 })), DROP_WANT_KEYFRAME);
  const resumed = push(f, pkt(40_001, 3007, { ssrc: 0x2222, keyframe: true }));
  assert.equal(resumed.verdict, FORWARD);
  assert.equal(seqDiff(last.seq!, resumed.seq!), 1, 'no gap: the subscriber lost nothing');
  assert.equal(tsDiff(last.ts!, resumed.ts!), 3000, 'one frame later');
  // Stragglers of the old SSRC are not the stream any more, and ask for nothing.
  assert.equal(f.push(pkt(12, 96_000)), DROP);
  const next = push(f, pkt(40_002, 6007, { ssrc: 0x2222 }));
  assert.equal(seqDiff(resumed.seq!, next.seq!), 1);
});

test('an interruption waits for a keyframe and resumes where the subscriber left off', () => {
  const f = video();
  push(f, pkt(1, 0, { keyframe: true }));
  const last = push(f, pkt(2, 3000));
  f.interrupt(); // e.g. shed under overload for packets 3..99
  assert.equal(f.push(pkt(100, 300_000)), DROP_WANT_KEYFRAME);
  const resumed = push(f, pkt(101, 303_000, { keyframe: true }));
  assert.equal(seqDiff(last.seq!, resumed.seq!), 1);
  assert.equal(tsDiff(last.ts!, resumed.ts!), 3000);
  assert.equal(f.push(pkt(99, 297_000)), DROP, 'from before the resume');

  const a = audio();
  push(a, pkt(1, 0));
  a.interrupt();
  assert.equal(a.push(pkt(5, 3840)), FORWARD, 'audio never waits');
});

test('after a long pause the timestamp advances by the time that passed', () => {
  const f = video();
  push(f, pkt(1, 0, { keyframe: true, arrivalMs: 1_000 }));
  const last = push(f, pkt(2, 3000, { arrivalMs: 1_033 }));
  f.interrupt();
  // 10 s later, a new source whose timestamps say nothing about that.
  const resumed = push(f, pkt(900, 55, { ssrc: 0x3333, keyframe: true, arrivalMs: 11_033 }));
  assert.equal(tsDiff(last.ts!, resumed.ts!), 900_000, '10 s of the 90 kHz clock');
  assert.equal(seqDiff(last.seq!, resumed.seq!), 1);

  // Across a reused transceiver, too.
  const c = f.continuation()!;
  const next = video(c);
  const out = push(next, pkt(7, 123, { keyframe: true, arrivalMs: c.arrivalMs + 2_000 }));
  assert.equal(tsDiff(c.timestamp, out.ts!), 180_000, '2 s');
});

test('a forwarder on a reused transceiver continues the previous numbering and SRTP index', () => {
  const first = video();
  push(first, pkt(500, 1000, { keyframe: true }));
  let last: Out = { verdict: FORWARD };
  for (let i = 1; i < 70_000; i++) last = push(first, pkt(500 + i, 1000 + i * 30));
  const c = first.continuation()!;
  assert.equal(c.sequenceNumber, last.seq);
  assert.equal(c.timestamp, last.ts);
  assert.equal(c.index, last.index);
  assert.ok(c.index >= 65536, 'past a rollover');

  // Another publisher's track on the same sender.
  const second = video(c);
  assert.equal(second.continuation()?.index, c.index, 'nothing sent yet: the same place');
  assert.equal(second.push(pkt(9, 77)), DROP_WANT_KEYFRAME);
  const out = push(second, pkt(10, 80, { keyframe: true }));
  assert.equal(seqDiff(c.sequenceNumber, out.seq!), 1);
  assert.equal(out.index, c.index + 1, 'the rollover counter goes on');
  assert.equal(tsDiff(c.timestamp, out.ts!), 3000);

  assert.equal(audio().continuation(), undefined, 'nothing sent: nothing to continue');
});

test('a layer switch happens at a keyframe of the target layer, with no gap', () => {
  const f = video();
  const low = (seq: number, ts: number, keyframe = false) => pkt(seq, ts, { ssrc: 0xa, layer: 0, keyframe });
  const high = (seq: number, ts: number, keyframe = false) => pkt(seq, ts, { ssrc: 0xb, layer: 1, keyframe });
  push(f, low(100, 0, true));
  assert.equal(f.push(high(5000, 70_000, true)), DROP, 'not the target layer');
  push(f, low(101, 3000));
  f.setTargetLayer(1);
  // Until the high layer's keyframe: low goes on, high deltas ask for a keyframe.
  assert.equal(f.push(high(5002, 73_000)), DROP_WANT_KEYFRAME);
  const lastLow = push(f, low(102, 6000));
  assert.equal(lastLow.verdict, FORWARD);
  assert.equal(f.currentLayer, 0);
  const switched = push(f, high(5003, 76_000, true));
  assert.equal(switched.verdict, FORWARD);
  assert.equal(f.currentLayer, 1);
  assert.equal(seqDiff(lastLow.seq!, switched.seq!), 1);
  assert.equal(tsDiff(lastLow.ts!, switched.ts!), 3000);
  assert.equal(f.push(low(103, 9000)), DROP, 'the old layer is no longer forwarded');
  const next = push(f, high(5004, 79_000));
  assert.equal(seqDiff(switched.seq!, next.seq!), 1);
  assert.equal(tsDiff(switched.ts!, next.ts!), 3000);
});

test('a late packet of the source left at an SSRC change does not switch the subscriber back', () => {
  const f = audio();
  for (let i = 0; i < 5; i++) assert.equal(f.push(pkt(10 + i, 960 * i, { arrivalMs: 20 * i })), FORWARD);
  const switched = push(f, pkt(500, 77_000, { ssrc: 0x2222, arrivalMs: 100 }));
  assert.equal(switched.verdict, FORWARD);
  // One packet of the old source arrives late, then the new one goes on.
  assert.equal(f.push(pkt(15, 960 * 5, { arrivalMs: 110 })), DROP);
  const next = push(f, pkt(501, 77_960, { ssrc: 0x2222, arrivalMs: 120 }));
  assert.equal(next.verdict, FORWARD);
  assert.equal(seqDiff(switched.seq!, next.seq!), 1, 'no rebase in between');
  assert.equal(tsDiff(switched.ts!, next.ts!), 960);
  // Long after, the old SSRC is a source like any other again.
  assert.equal(f.push(pkt(16, 960 * 6, { arrivalMs: 5_000 })), FORWARD);
});
