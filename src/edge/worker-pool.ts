import { AppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { TypedEmitter } from '../common/typed-emitter.ts';
import type { Config } from '../config.ts';
import { MediaWorker } from './media-worker.ts';

/** A room assigned to a worker that has not reported it yet keeps its place this long. */
const ASSIGNMENT_GRACE_MS = 10_000;
/** A room moved away that its worker still reports after this was opened there again (a join in flight). */
const MOVE_GRACE_MS = 2000;
/** Restart delays after a worker dies: doubling from the first to the last. */
const RESTART_DELAY_MS = [500, 30_000] as const;

interface Assignment {
  worker: MediaWorker;
  at: number;
}

/**
 * The media workers behind the edge, and which room lives in which. A room lives in one
 * worker for its whole life: the first request for it goes to the least-loaded worker
 * and every later one follows. A worker that dies loses only its rooms; the pool starts a
 * replacement and new rooms (including ones that were on the dead worker) go elsewhere.
 */
export class WorkerPool extends TypedEmitter<{ /** A worker reported its load, or exited. */ load: [] }> {
  private readonly slots: (MediaWorker | undefined)[];
  private readonly rooms = new Map<string, Assignment>();
  /** Rooms closed here to live on elsewhere, by the worker still reporting them: never adopted again from its reports. */
  private readonly movedAway = new Map<string, { worker: MediaWorker; at: number }>();
  /** Joins sent to a worker since its last load report, so a burst spreads out. */
  private readonly sentSinceReport = new Map<MediaWorker, number>();
  private readonly restartTimers = new Set<NodeJS.Timeout>();
  private readonly config: Config;
  private readonly log: Logger;
  private closed = false;
  restarts = 0;

  private constructor(config: Config, log: Logger) {
    super();
    this.config = config;
    this.log = log;
    this.slots = new Array<MediaWorker | undefined>(config.mediaWorkers).fill(undefined);
  }

  static async start(config: Config, log: Logger): Promise<WorkerPool> {
    const pool = new WorkerPool(config, log);
    try {
      await Promise.all(pool.slots.map((_, i) => pool.startSlot(i)));
    } catch (err) {
      await pool.close();
      throw err;
    }
    return pool;
  }

  /** Worker i's share of the configured UDP port range, so workers never compete for a port. */
  private portRange(i: number): [number, number] | undefined {
    const range = this.config.rtc.portRange;
    if (range === undefined) return undefined;
    const per = Math.floor((range[1] - range[0] + 1) / this.slots.length);
    if (per < 2) throw new Error(`SCV_RTC_PORT_MIN..MAX holds too few ports for ${this.slots.length} media workers`);
    return [range[0] + i * per, range[0] + (i + 1) * per - 1];
  }

  private async startSlot(i: number): Promise<void> {
    const w = await MediaWorker.start(i, this.config, this.portRange(i), this.log);
    if (this.closed) {
      await w.close();
      return;
    }
    this.slots[i] = w;
    w.on('load', () => this.onLoad(w));
    w.once('exit', (expected) => {
      if (this.slots[i] === w) this.slots[i] = undefined;
      this.sentSinceReport.delete(w);
      for (const [room, a] of this.rooms) if (a.worker === w) this.rooms.delete(room);
      for (const [room, m] of this.movedAway) if (m.worker === w) this.movedAway.delete(room);
      if (!expected && !this.closed) this.scheduleRestart(i, RESTART_DELAY_MS[0]);
      this.emit('load');
    });
    this.log.info({ worker: i, pid: w.pid, url: w.httpUrl }, 'media worker started');
  }

  private scheduleRestart(i: number, delayMs: number): void {
    const timer = setTimeout(() => {
      this.restartTimers.delete(timer);
      if (this.closed) return;
      this.restarts++;
      this.startSlot(i).catch((err: unknown) => {
        this.log.error({ worker: i, err: (err as Error).message }, 'media worker restart failed');
        this.scheduleRestart(i, Math.min(delayMs * 2, RESTART_DELAY_MS[1]));
      });
    }, delayMs);
    this.restartTimers.add(timer);
  }

  private onLoad(w: MediaWorker): void {
    this.sentSinceReport.delete(w);
    const now = Date.now();
    for (const [room, m] of this.movedAway) {
      if (m.worker !== w) continue;
      if (!w.rooms.has(room)) this.movedAway.delete(room);
      else if (now - m.at > MOVE_GRACE_MS) {
        // A join already on its way to the worker opened the room again after it closed: close it again, its joins go where the claim is.
        m.at = now;
        w.closeRoom(room, 'room_moved');
        this.log.warn({ room, worker: w.index }, 'a room moved away was opened here again: closing it again');
      }
    }
    for (const room of w.rooms) {
      if (this.movedAway.get(room)?.worker === w) continue;
      const a = this.rooms.get(room);
      if (a === undefined) this.rooms.set(room, { worker: w, at: now });
      else if (a.worker !== w) this.log.error({ room, worker: w.index, assigned: a.worker.index }, 'room open on two media workers');
    }
    for (const [room, a] of this.rooms) {
      if (a.worker === w && !w.rooms.has(room) && now - a.at > ASSIGNMENT_GRACE_MS) this.rooms.delete(room);
    }
    this.emit('load');
  }

  /** Serving workers. */
  workers(): MediaWorker[] {
    return this.slots.filter((w): w is MediaWorker => w?.state === 'ready');
  }

  /** Every slot, serving or not (health). */
  slotStates(): { index: number; state: string; pid: number | undefined; rooms: number; participants: number }[] {
    return this.slots.map((w, index) => ({
      index,
      state: w?.state ?? 'restarting',
      pid: w?.pid,
      rooms: w?.rooms.size ?? 0,
      participants: w?.participants ?? 0,
    }));
  }

  /** The worker that has `room`, if any. */
  find(room: string): MediaWorker | undefined {
    const a = this.rooms.get(room);
    return a?.worker.state === 'ready' ? a.worker : undefined;
  }

  /** The worker for a request that may create `room`: where it lives, else the least loaded. */
  assign(room: string): MediaWorker {
    const found = this.find(room);
    if (found !== undefined) return found;
    const w = this.leastLoaded();
    // Placed here again on purpose (the cluster says so): no longer a room that moved away.
    this.movedAway.delete(room);
    this.rooms.set(room, { worker: w, at: Date.now() });
    this.sentSinceReport.set(w, (this.sentSinceReport.get(w) ?? 0) + 1);
    this.log.info({ room, worker: w.index }, 'room assigned to media worker');
    return w;
  }

  /**
   * Closes `room` in its worker with `reason` (its participants are told and join again)
   * and forgets it at once, so their joins are not sent back to the closing room: the
   * caller has made sure they are placed elsewhere (the cluster moved the room's claim).
   */
  moveAway(room: string, reason: 'room_moved'): void {
    const a = this.rooms.get(room);
    if (a === undefined) return;
    this.rooms.delete(room);
    this.movedAway.set(room, { worker: a.worker, at: Date.now() });
    a.worker.closeRoom(room, reason);
    this.log.info({ room, worker: a.worker.index, reason }, 'room moved away from this node');
  }

  /** Any serving worker, for requests that name no room (they all share the recordings folder). */
  leastLoaded(): MediaWorker {
    let best: MediaWorker | undefined;
    let bestScore = Infinity;
    for (const w of this.workers()) {
      const score = w.participants + w.rooms.size + (this.sentSinceReport.get(w) ?? 0);
      if (score < bestScore) {
        best = w;
        bestScore = score;
      }
    }
    if (best === undefined) throw new AppError('MEDIA_UNAVAILABLE', 'no media worker is available; try again shortly');
    return best;
  }

  /** Stops every worker (their rooms close as on a server shutdown); idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.restartTimers) clearTimeout(t);
    this.restartTimers.clear();
    await Promise.all(this.slots.map((w) => w?.close()));
    this.removeAllListeners();
  }
}
