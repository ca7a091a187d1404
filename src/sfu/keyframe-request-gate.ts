/** The shortest spacing of one subscriber's keyframe requests that reach the publisher. */
export const MIN_INTERVAL_MS = 500;
/**
 * The longest it backs off to. Longer would also hold back a subscriber on a lossy link
 * that really needs keyframes (and the recorder, which gets the same keyframes).
 */
export const MAX_INTERVAL_MS = 2_000;
/** A subscriber quiet this long after its spacing is back to the shortest. */
const QUIET_MS = 2_000;

/**
 * One subscriber's PLI/FIR gate. A subscriber that cannot decode what it gets (an E2EE
 * participant with the wrong key; Chromium then asks ~10 times a second) would otherwise
 * make every publisher it watches send a keyframe twice a second, which costs everyone
 * bandwidth and picture quality. Requests that keep coming back-to-back pass at doubling
 * intervals, up to MAX_INTERVAL_MS (a quarter of what it would be otherwise); an occasional
 * request (real loss) always passes within MIN_INTERVAL_MS.
 */
export class KeyframeRequestGate {
  private lastPassed = -Infinity;
  private interval = MIN_INTERVAL_MS;

  /** Whether a request at `now` (ms) goes upstream. */
  pass(now: number): boolean {
    const since = now - this.lastPassed;
    if (since < this.interval) return false;
    this.interval = since < this.interval + QUIET_MS ? Math.min(this.interval * 2, MAX_INTERVAL_MS) : MIN_INTERVAL_MS;
    this.lastPassed = now;
    return true;
  }
}
