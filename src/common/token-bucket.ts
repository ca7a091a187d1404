/** How many events a limiter lets through: `ratePerSecond` sustained, up to `burst` at once. */
export interface RateLimit {
  ratePerSecond: number;
  burst: number;
}

/**
 * A token bucket: starts full with `burst` tokens, refills at `ratePerSecond`, and each
 * event takes one. Time comes from `now` (milliseconds) so callers and tests can share a clock.
 */
export class TokenBucket {
  private readonly limit: RateLimit;
  private readonly now: () => number;
  private tokens: number;
  private last: number;

  constructor(limit: RateLimit, now: () => number = performance.now.bind(performance)) {
    this.limit = limit;
    this.now = now;
    this.tokens = limit.burst;
    this.last = now();
  }

  /** Takes one token if there is one; false means the event is over the limit. */
  take(): boolean {
    const t = this.now();
    this.tokens = Math.min(this.limit.burst, this.tokens + ((t - this.last) / 1000) * this.limit.ratePerSecond);
    this.last = t;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
