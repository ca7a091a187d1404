/** A stall longer than this many frames is skipped over rather than caught up. */
const MAX_CATCH_UP_FRAMES = 10;
/** Frames emitted in one tick at most, so catching up never bursts. */
const MAX_FRAMES_PER_TICK = 3;

/** What a FrameClock drives: a synthetic media source. */
export interface FrameSink {
  /** Make and send the next frame. */
  emitFrame(): void;
  /** `n` frames were not made (a long stall): advance the frame counter, send nothing. */
  skipFrames(n: number): void;
}

/**
 * Runs a synthetic source at `fps` frames a second on the wall clock, as a capture device
 * would: each tick emits the frames that are due (a few at most, so a short stall catches
 * up without a burst), and after a long stall it skips ahead, so timestamps stay on the
 * clock. Paces every SyntheticSource (the load tool and the tests).
 */
export class FrameClock {
  readonly fps: number;
  private readonly sink: FrameSink;
  private timer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  /** Frames emitted or skipped since start(). */
  private done = 0;

  constructor(fps: number, sink: FrameSink) {
    this.fps = fps;
    this.sink = sink;
  }

  get running(): boolean {
    return this.timer !== undefined;
  }

  /** Starts ticking (the first frame at once); no-op while running. */
  start(): void {
    if (this.timer !== undefined) return;
    this.startedAt = performance.now();
    this.done = 0;
    this.timer = setInterval(() => this.tick(), Math.max(1, Math.floor(1000 / this.fps)));
    this.tick();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private tick(): void {
    const due = Math.floor(((performance.now() - this.startedAt) * this.fps) / 1000) + 1;
    let behind = due - this.done;
    if (behind > MAX_CATCH_UP_FRAMES) {
      this.sink.skipFrames(behind - 1);
      this.done += behind - 1;
      behind = 1;
    }
    // A frame's sink may stop the source; nothing more is sent after that.
    for (let i = 0; i < Math.min(behind, MAX_FRAMES_PER_TICK) && this.timer !== undefined; i++) {
      this.done++;
      this.sink.emitFrame();
    }
  }
}
