import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import { AppError } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { TypedEmitter } from '../common/typed-emitter.ts';
import type { Config } from '../config.ts';
import type { EdgeToWorker, WorkerToEdge } from '../media-worker/ipc.ts';

const ENTRY = fileURLToPath(new URL('../media-worker/main.ts', import.meta.url));
/** A worker that is not serving by then is killed and counts as failed. */
const START_TIMEOUT_MS = 20_000;
/** A stop that takes longer than this ends in SIGKILL. */
const STOP_TIMEOUT_MS = 10_000;
const METRICS_TIMEOUT_MS = 3_000;

type Metrics = MetricObjectWithValues<MetricValue<string>>[];

export type WorkerState = 'starting' | 'ready' | 'stopping' | 'exited';

/**
 * The edge's handle on one media worker process: starts it, learns its loopback URLs and
 * load, asks it for metrics, and tells whoever listens when it exits. `exit` fires once,
 * whether the worker was stopped or died.
 */
export class MediaWorker extends TypedEmitter<{ load: []; exit: [expected: boolean] }> {
  readonly index: number;
  private readonly child: ChildProcess;
  private readonly log: Logger;
  state: WorkerState = 'starting';
  httpUrl = '';
  wsUrl = '';
  rooms: ReadonlySet<string> = new Set();
  participants = 0;
  tracks = 0;
  packetsForwarded = 0;
  /** Event-loop utilization over the worker's last report interval. */
  utilization = 0;
  shedding = false;
  private nextId = 1;
  private readonly pending = new Map<number, (m: Metrics) => void>();
  private readonly exited: Promise<void>;

  private constructor(index: number, log: Logger) {
    super();
    this.index = index;
    this.log = log;
    // The worker's logs go to our stdout/stderr; IPC carries only pool messages.
    this.child = fork(ENTRY, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'json' });
    this.child.on('message', (msg: WorkerToEdge) => this.onMessage(msg));
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        const expected = this.state === 'stopping';
        this.state = 'exited';
        for (const done of this.pending.values()) done([]);
        this.pending.clear();
        if (!expected) this.log.error({ worker: index, pid: this.child.pid, code, signal }, 'media worker exited');
        this.emit('exit', expected);
        resolve();
      });
    });
    this.child.on('error', (err) => this.log.error({ worker: index, err: err.message }, 'media worker process error'));
  }

  /** Forks a worker and resolves once it serves; rejects if it exits or hangs first. */
  static start(index: number, config: Config, portRange: [number, number] | undefined, log: Logger): Promise<MediaWorker> {
    const w = new MediaWorker(index, log);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        w.child.kill('SIGKILL');
        reject(new Error(`media worker ${index} did not start within ${START_TIMEOUT_MS} ms`));
      }, START_TIMEOUT_MS);
      const onExit = () => {
        clearTimeout(timer);
        reject(new Error(`media worker ${index} exited while starting`));
      };
      w.once('exit', onExit);
      w.readyHook = () => {
        clearTimeout(timer);
        w.off('exit', onExit);
        resolve(w);
      };
      // Every request a worker serves comes from the edge's address: the edge limits per client IP.
      const workerConfig: Config = { ...config, limits: { ...config.limits, httpRate: undefined } };
      w.post({ type: 'start', index, config: workerConfig, portRange });
    });
  }

  private readyHook: (() => void) | undefined;

  get pid(): number | undefined {
    return this.child.pid;
  }

  private post(msg: EdgeToWorker): void {
    if (this.child.connected) this.child.send(msg);
  }

  private onMessage(msg: WorkerToEdge): void {
    switch (msg.type) {
      case 'ready':
        this.httpUrl = msg.httpUrl;
        this.wsUrl = msg.wsUrl;
        this.state = 'ready';
        this.readyHook?.();
        this.readyHook = undefined;
        return;
      case 'load':
        this.rooms = new Set(msg.rooms);
        this.participants = msg.participants;
        this.tracks = msg.tracks;
        this.packetsForwarded = msg.packetsForwarded;
        this.utilization = msg.utilization;
        this.shedding = msg.shedding;
        this.emit('load');
        return;
      case 'metrics':
        this.pending.get(msg.id)?.(msg.metrics);
        this.pending.delete(msg.id);
        return;
    }
  }

  /** The worker's Prometheus metrics as JSON; empty if it does not answer in time. */
  metrics(): Promise<Metrics> {
    if (this.state !== 'ready') return Promise.resolve([]);
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve([]);
      }, METRICS_TIMEOUT_MS);
      this.pending.set(id, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      this.post({ type: 'metrics', id });
    });
  }

  /** The loopback URL of this worker for `path`; refuses when it is not serving. */
  url(path: string): string {
    if (this.state !== 'ready') throw new AppError('MEDIA_UNAVAILABLE', 'the media worker for this room is not available');
    return `${this.httpUrl}${path}`;
  }

  /** Closes one room in the worker; its participants are told `left` with `reason`. */
  closeRoom(room: string, reason: 'room_moved'): void {
    this.post({ type: 'closeRoom', room, reason });
  }

  /** Kills the process outright, as a crash would (tests, and a stop that hangs). */
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    this.child.kill(signal);
  }

  /** Asks the worker to close its rooms and exit; idempotent. */
  close(): Promise<void> {
    if (this.state === 'exited') return this.exited;
    if (this.state !== 'stopping') {
      this.state = 'stopping';
      this.post({ type: 'stop' });
      const timer = setTimeout(() => this.kill(), STOP_TIMEOUT_MS);
      void this.exited.then(() => clearTimeout(timer));
    }
    return this.exited;
  }
}
