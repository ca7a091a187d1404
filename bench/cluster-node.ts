/**
 * One SecureConnect Video node for bench/cluster.ts: `src/main.ts` as a child process (an
 * edge and its media workers), on a fixed port inside the bench's private namespace.
 * `kill9()` takes the whole node away at once, edge and workers, as a lost machine would;
 * `start()` brings it back with the same id and port.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Lines of the node's output kept for the message when it fails. */
const TAIL_LINES = 30;
const STOP_TIMEOUT_MS = 8_000;

export interface NodeHealth {
  status: string;
  rooms: number;
  participants: number;
  workers: { pid: number | undefined; state: string; rooms: number }[];
  cluster?: { node: string; nodes: number; redis: string };
}

export class ClusterNode {
  readonly id: string;
  readonly port: number;
  private readonly env: NodeJS.ProcessEnv;
  private child: ChildProcess | undefined;
  /** The node's last lines of output (logs), for the message when something fails. */
  readonly tail: string[] = [];
  /** Media worker pids as of the last `ready()`. */
  workerPids: number[] = [];

  /** `env`: the SCV_* settings of this node (SCV_HTTP_PORT is added); the rest of process.env minus SCV_* is passed on. */
  constructor(id: string, port: number, env: Record<string, string>) {
    this.id = id;
    this.port = port;
    const base: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SCV_') && k !== 'BENCH_NETNS') base[k] = v;
    this.env = { ...base, ...env, SCV_HTTP_PORT: String(port) };
  }

  get httpUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/video/ws`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Every pid of the node: the edge and its media workers. */
  get pids(): number[] {
    return this.child?.pid === undefined ? [] : [this.child.pid, ...this.workerPids];
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  start(): void {
    if (this.running) return;
    const child = spawn(process.execPath, ['src/main.ts'], { cwd: ROOT, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d: Buffer) => {
      for (const line of d.toString().split('\n')) if (line !== '') this.tail.push(line);
      this.tail.splice(0, Math.max(0, this.tail.length - TAIL_LINES));
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    this.child = child;
  }

  async health(): Promise<NodeHealth> {
    return (await (await fetch(`${this.httpUrl}/healthz`)).json()) as NodeHealth;
  }

  /** Resolves once /healthz says ok (and, in a cluster, this node sees `clusterSize` nodes). */
  async ready(clusterSize?: number, timeoutMs = 90_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      if (!this.running) throw new Error(`node ${this.id} exited (${this.child?.exitCode ?? this.child?.signalCode}):\n${this.tail.join('\n')}`);
      try {
        const h = await this.health();
        if (h.status === 'ok' && (clusterSize === undefined || h.cluster?.nodes === clusterSize)) {
          this.workerPids = h.workers.flatMap((w) => (w.pid === undefined ? [] : [w.pid]));
          return;
        }
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    throw new Error(`node ${this.id} was not ready within ${timeoutMs / 1000} s:\n${this.tail.join('\n')}`);
  }

  /** One Prometheus sample of the node's merged /metrics. */
  async metric(name: string): Promise<number> {
    const text = await (await fetch(`${this.httpUrl}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? Number.NaN : Number(line.split(' ').pop());
  }

  /** SIGKILL to the edge and its workers in the same instant; resolves when the edge is gone. */
  async kill9(): Promise<void> {
    const child = this.child;
    if (child === undefined || !this.running) return;
    const gone = new Promise<void>((r) => child.once('exit', () => r()));
    for (const pid of this.workerPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    child.kill('SIGKILL');
    await gone;
    this.child = undefined;
  }

  /** SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_MS. Idempotent. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child === undefined) return;
    this.child = undefined;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await gone;
    clearTimeout(timer);
  }
}
