import { Histogram } from './report.ts';

/** One-way delay samples: `window` since the measured window began, `tick` since the last progress line. */
export class LatencyRecorder {
  readonly window = new Histogram();
  readonly tick = new Histogram();
  /** Video packets whose payload held no plausible send time. */
  invalid = 0;
  record(ms: number): void {
    this.window.record(ms);
    this.tick.record(ms);
  }
}
