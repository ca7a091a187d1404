import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PaddingRemover, SeqUnwrapper } from '../src/sfu/sequence.ts';

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
