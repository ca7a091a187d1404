import { performance, type EventLoopUtilization } from 'node:perf_hooks';

/** How often the event loop is judged. */
const INTERVAL_MS = 1000;
/** Share of video subscriptions shed per overloaded interval, and restored per interval that is not. */
const STEP = 0.25;
/**
 * Overloaded intervals in a row before anything is shed. A one-second burst (a wave of
 * joins: DTLS handshakes and renegotiations) is absorbed by the socket buffers; shedding
 * for it would only cost every paused subscriber a keyframe.
 */
const SUSTAINED_INTERVALS = 2;

/**
 * Decides how much forwarding this process sheds when it cannot keep up. Saturated, Node
 * falls behind on every socket at once and the kernel drops whatever overflows, the
 * publishers' ingest included: every subscriber then loses packets, NACKs make it worse,
 * and keyframes and RTCP go missing too. Instead, while the event loop is saturated, a
 * growing share of video subscriptions (each DownTrack has a fixed random rank, so the same
 * ones pause and the rest stay whole) stops being forwarded; ingest, RTCP, keyframe
 * requests and audio are never shed. A paused video subscription resumes at a keyframe.
 *
 * The threshold is the share of an interval the event loop spent running (not waiting for
 * I/O) from which the process is not keeping up (SCV_OVERLOAD_UTILIZATION). Event-loop
 * delay percentiles were tried first: a saturated loop has few timer samples, so their
 * mean stays low while packets already queue up. The Sfu owns one; it measures the
 * process's event loop, so it means something only where the SFU has the loop to itself.
 */
export class OverloadGuard {
  /** Video DownTracks whose rank is below this are shed; 0 = forward everything. */
  private level = 0;
  private overloadedRun = 0;
  private last: EventLoopUtilization = performance.eventLoopUtilization();
  private readonly threshold: number;
  private readonly timer: NodeJS.Timeout | undefined;

  /** `threshold` undefined: never shed. */
  constructor(threshold: number | undefined) {
    this.threshold = threshold ?? Infinity;
    if (threshold !== undefined) this.timer = setInterval(() => this.judge(), INTERVAL_MS).unref();
  }

  /** Share of video subscriptions being shed now, 0 to 1. */
  get shedRatio(): number {
    return this.level;
  }

  /** Whether video for a DownTrack of this rank ([0, 1)) is being shed now. */
  sheds(rank: number): boolean {
    return rank < this.level;
  }

  private judge(): void {
    const now = performance.eventLoopUtilization();
    const { utilization } = performance.eventLoopUtilization(now, this.last);
    this.last = now;
    this.overloadedRun = utilization >= this.threshold ? this.overloadedRun + 1 : 0;
    // No dead band on the way down: a level that could only fall below some lower mark might never come back.
    if (this.overloadedRun >= SUSTAINED_INTERVALS) this.level = Math.min(1, this.level + STEP);
    else if (this.overloadedRun === 0) this.level = Math.max(0, this.level - STEP);
  }

  close(): void {
    clearInterval(this.timer);
    this.level = 0;
    this.overloadedRun = 0;
  }
}
