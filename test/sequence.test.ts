/**
 * RTP sequence-number arithmetic: the unwrapper the SFU and the Node client share, the
 * SFU's padding remover, and the receive counting of the tests and the load tool.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SeqUnwrapper } from '../src/common/seq-unwrapper.ts';
import { ReceiveStats } from '../src/node-client/receive-stats.ts';
import { PaddingRemover } from '../src/sfu/padding-remover.ts';

test('unwrapping counts on across 65535 → 0 and keeps late packets below the highest', () => {
  const u = new SeqUnwrapper();
  assert.equal(u.unwrap(65534), 65534);
  assert.equal(u.unwrap(65535), 65535);
  assert.equal(u.unwrap(0), 65536);
  assert.equal(u.unwrap(65533), 65533);
  assert.equal(u.unwrap(5), 65541);
  // Far past the first wrap the order still holds.
  let last = 65541;
  for (let i = 0; i < 200_000; i += 100) last = u.unwrap((5 + i) & 0xffff);
  assert.equal(last, 65541 + 199_900);
});

test('padding-only packets leave no gap in what subscribers see', () => {
  const r = new PaddingRemover();
  const out: number[] = [];
  const feed = (seq: number, padding = false) => {
    const m = r.map(seq, padding);
    if (m !== undefined) out.push(m);
  };
  feed(100);
  feed(101);
  feed(102, true);
  feed(103, true);
  feed(104);
  feed(106); // 105 lost for real
  feed(105); // ... and arrives late
  feed(107, true);
  feed(108);
  assert.deepEqual(out, [100, 101, 102, 104, 103, 105]);
});

test('a late media packet keeps the numbering it had before later padding', () => {
  const r = new PaddingRemover();
  assert.equal(r.map(10, false), 10);
  assert.equal(r.map(12, false), 12); // 11 late
  assert.equal(r.map(13, true), undefined);
  assert.equal(r.map(14, false), 13);
  assert.equal(r.map(11, false), 11);
});

test('numbering wraps cleanly', () => {
  const r = new PaddingRemover();
  assert.equal(r.map(65534, false), 65534);
  assert.equal(r.map(65535, true), undefined);
  assert.equal(r.map(0, false), 65535);
  assert.equal(r.map(1, false), 0);
});

test('an unwrapper reset to a value unwraps on from it', () => {
  const u = new SeqUnwrapper();
  assert.equal(u.last, -1);
  u.reset(3 * 65536 + 65535);
  assert.equal(u.unwrap(0), 4 * 65536, 'the next rollover');
  assert.equal(u.last, 4 * 65536);
  u.reset();
  assert.equal(u.unwrap(9), 9, 'from scratch');
});

test('receive counting: gaps and the numbers they skip, late fills, duplicates, across a wrap', () => {
  const r = new ReceiveStats();
  assert.equal(r.highestSeq, undefined);
  assert.equal(r.highestExtended, -1);
  assert.equal(r.expected, 0);
  // 65533 [65534 65535 missing] 0 1 65535(late) 1(dup) [2 3 missing] 4 4(dup) 65534(late)
  const arrivals = [65533, 0, 1, 65535, 1, 4, 4, 65534].map((seq) => r.record(seq, 100));
  assert.deepEqual(arrivals, ['ahead', 'ahead', 'ahead', 'late', 'duplicate', 'ahead', 'duplicate', 'late']);
  assert.equal(r.packets, 8);
  assert.equal(r.bytes, 800);
  assert.equal(r.gaps, 2);
  assert.equal(r.skipped, 4, '65534, 65535, 2 and 3');
  assert.equal(r.late, 2);
  assert.equal(r.duplicates, 2);
  assert.equal(r.highestSeq, 4);
  assert.equal(r.highestExtended, 65536 + 4);
  assert.equal(r.expected, 8, '65533 … 4');
  assert.equal(r.expected - r.unique, 2, '2 and 3 never came');
});

test('receive counting: a packet from before the first is late, then a duplicate', () => {
  const r = new ReceiveStats();
  r.record(1, 10);
  assert.equal(r.record(65535, 10), 'late', 'sent before the first, across the wrap');
  assert.equal(r.record(65535, 10), 'duplicate');
  assert.equal(r.record(2, 10), 'ahead');
  assert.equal(r.expected, 2, 'counted from the first packet received');
  assert.equal(r.highestSeq, 2);
});

test('receive counting: duplicates are told apart over the last 1024 sequence numbers', () => {
  const r = new ReceiveStats();
  for (let seq = 0; seq < 3000; seq++) r.record(seq & 0xffff, 1);
  assert.equal(r.record(3000 - 1024, 1), 'duplicate', 'the oldest of the window');
  assert.equal(r.record(3000 - 1025, 1), 'late', 'beyond it: taken for a late fill');
  // A jump far past the window leaves no stale slot that could pass for a duplicate.
  assert.equal(r.record(3000 + 5000, 1), 'ahead');
  assert.equal(r.record(3000 + 5000 - 1024 * 4, 1), 'late');
  assert.equal(r.duplicates, 1);
  assert.equal(r.late, 2);
  assert.equal(r.skipped, 5000, '3000 … 7999');
});
