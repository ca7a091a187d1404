import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyframeRequestGate, MAX_INTERVAL_MS, MIN_INTERVAL_MS } from '../src/sfu/keyframe-request-gate.ts';

/** The times (ms) at which requests every `everyMs` until `untilMs` get through. */
function passed(gate: KeyframeRequestGate, everyMs: number, untilMs: number, startMs = 0): number[] {
  const out: number[] = [];
  for (let t = startMs; t < untilMs; t += everyMs) if (gate.pass(t)) out.push(t);
  return out;
}

test('requests that never stop pass at doubling intervals, up to the longest', () => {
  const times = passed(new KeyframeRequestGate(), 100, 40_000);
  assert.deepEqual(times.slice(0, 6), [0, 500, 1500, 3500, 5500, 7500]);
  const gaps = times.slice(1).map((t, i) => t - times[i]!);
  assert.ok(gaps.every((g) => g <= MAX_INTERVAL_MS));
  assert.equal(gaps.at(-1), MAX_INTERVAL_MS);
  // 40 s of 10 requests a second: 400 asked, 22 went upstream (0, 0.5, then every 2 s from 1.5 to 39.5).
  assert.equal(times.length, 22);
});

test('occasional requests always pass, and a quiet spell resets the backoff', () => {
  const gate = new KeyframeRequestGate();
  assert.deepEqual(passed(gate, 3_000, 30_000), [0, 3000, 6000, 9000, 12_000, 15_000, 18_000, 21_000, 24_000, 27_000]);
  const storm = new KeyframeRequestGate();
  passed(storm, 100, 10_000);
  // After 3 s of quiet, the next request passes and the one after waits only the shortest interval.
  assert.equal(storm.pass(20_000), true);
  assert.equal(storm.pass(20_000 + MIN_INTERVAL_MS - 1), false);
  assert.equal(storm.pass(20_000 + MIN_INTERVAL_MS), true);
});
