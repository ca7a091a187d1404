/**
 * SFU forwarding: CPU per forwarded packet, forwarded packets per second per core, the
 * largest fan-out one core carries with loss under 0.5 %, the latency added at half that
 * load, resident memory per participant, and the CPU of mesh rooms.
 *
 *   npm run bench                      the full run (about 7 minutes on a quiet machine)
 *   npm run bench -- --quick           short steps, fewer sizes (about 3 minutes)
 *   npm run bench -- --json out.json   also write every figure as JSON
 *   npm run bench -- --help
 *
 * The service runs as its own process (`node src/main.ts`, logging warn, an API key and
 * secret in its environment) pinned to core 0; the load tool (`src/loadtest/cli.ts`, real
 * werift peers) runs pinned to core 1, and so does this script. Each step gets a fresh
 * service: one warm-up run of the load tool (so V8 has compiled the forwarding path), then
 * the measured run. The service's CPU is the sum over its whole process tree (main pid and
 * descendants, from /proc), so it stays right when media runs in child worker processes.
 * The service is measured over `--step` seconds inside the load tool's measured window
 * (which starts once every participant joined and receives media): forwarded packets from
 * two reads of its GET /metrics counters, one at each end, since one read costs the
 * service ~15 ms of CPU with a media worker (prom-client's process metrics, merged over
 * IPC) and frequent reads would show up in the figures.
 *
 * Like the tests, it runs in a private loopback-only network namespace (it re-executes
 * itself under `unshare -n`, scripts/netns.ts): ICE gathers candidates on every interface,
 * and no WebRTC traffic may leave loopback.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { NetnsError, bringUpLoopback, reexecInNetns } from '../scripts/netns.ts';
import type { Summary } from '../src/loadtest/report.ts';
import { cpuBusy, loadAverage, pin, treeUsage, type TreeUsage } from './proc.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NETNS_MARKER = 'BENCH_NETNS';
/** Inside our own namespace nothing else listens, so a fixed port is safe. */
const PORT = 7880;
const SERVER_CORE = 0;
const TOOL_CORE = 1;
const LOSS_LIMIT_PCT = 0.5;
/** Opus-sized audio of the load tool: 80 payload bytes every 20 ms. */
const AUDIO_KBPS = 32;
/** /proc is read this often during a step (for resident memory); it costs the service nothing. */
const SAMPLE_INTERVAL_MS = 1000;
/**
 * The tool measures this much longer than `--step`, and the service's interval starts this
 * long after the tool's progress line first shows every track flowing: the tool's window
 * starts within ~1 s of that line, and the interval must lie inside it.
 */
const GUARD_S = 2;
/**
 * When the tool has not shown every track flowing this long after its last join started,
 * the step is overloaded: the service is then read every second instead (each read costs
 * it ~15 ms of CPU), so that it is measured anyway.
 */
const FLOWING_WITHIN_S = 10;
/** Reads this close to the tool's window edges are not used: its start and end are known to ~0.1 s. */
const READ_MARGIN_MS = 250;
const JOIN_RATE = 20;
const JOIN_TIMEOUT_S = 30;
const WARMUP_SUBSCRIBERS = 10;
/** Beyond the listed fan-outs the search goes up in these steps. */
const SEARCH_STEP = 40;
/** The tool counts as the bottleneck at this CPU (one core = 100) ... */
const TOOL_CPU_LIMIT_PCT = 90;
/** ... or when its timers run this late at p99 ... */
const TOOL_LOOP_LIMIT_MS = 50;
/** ... or when its publishers send less than this share of the configured bitrate. */
const SEND_RATIO_LIMIT = 0.95;
/** The service counts as saturated at this CPU (one core = 100), or when its overload guard sheds video. */
const SERVER_CPU_LIMIT_PCT = 95;
/** Other processes using more than this (one core = 100) make a step suspect. */
const OTHER_CPU_LIMIT_PCT = 20;
/**
 * How long the machine must stay quiet before a step: test suites run one file per
 * process, with short quiet gaps between files.
 */
const QUIET_PROBE_S = 5;

const USAGE = `Usage: npm run bench -- [options]

Options:
  --quick                  short steps and fewer sizes (to iterate): --step 6 --warmup 3
                           --fanout 5,20,40 --mesh 2,4 --no-search
  --step S                 measured seconds per step (default 15)
  --warmup S               seconds of the warm-up run before each step (default 5)
  --fanout LIST            subscribers of one publisher (default 5,10,20,40,80)
  --mesh LIST              publishers of one mesh room (default 2,4,8,16)
  --search / --no-search   look for the largest fan-out with loss under 0.5 % beyond and
                           between the listed ones (default on)
  --max-subscribers N      where the search stops (default 400)
  --video-bitrate KBPS     VP8 payload bitrate per publisher (default 1500)
  --media-workers N        SCV_MEDIA_WORKERS for the service (default 1; passed only when
                           the service's configuration knows the setting)
  --quiet-wait S           before each step, wait up to S seconds for other processes to
                           stop using the CPU (default 120)
  --retries N              measure a step again, up to N times, when other processes used
                           more than 20 % of a core during it (default 2)
  --service-env K=V        extra environment for the service (repeatable), e.g.
                           SCV_OVERLOAD_UTILIZATION=off
  --verbose                pass the load tool's output through
  --json PATH              also write every figure as JSON
  --help`;

interface BenchOptions {
  step: number;
  warmup: number;
  fanout: number[];
  mesh: number[];
  search: boolean;
  maxSubscribers: number;
  videoBitrate: number;
  mediaWorkers: number;
  quietWait: number;
  retries: number;
  serviceEnv: Record<string, string>;
  verbose: boolean;
  json: string | undefined;
}

function usageError(message: string): never {
  process.stderr.write(`bench: ${message}\n\n${USAGE}\n`);
  process.exit(2);
}

function parseOptions(): BenchOptions | undefined {
  let values;
  try {
    ({ values } = parseArgs({
      allowNegative: true,
      options: {
        quick: { type: 'boolean', default: false },
        step: { type: 'string' },
        warmup: { type: 'string' },
        fanout: { type: 'string' },
        mesh: { type: 'string' },
        search: { type: 'boolean' },
        'max-subscribers': { type: 'string', default: '400' },
        'video-bitrate': { type: 'string', default: '1500' },
        'media-workers': { type: 'string', default: '1' },
        'quiet-wait': { type: 'string', default: '120' },
        retries: { type: 'string', default: '2' },
        'service-env': { type: 'string', multiple: true, default: [] },
        verbose: { type: 'boolean', default: false },
        json: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    usageError((err as Error).message);
  }
  if (values.help) return undefined;
  const quick = values.quick;
  const num = (name: string, raw: string, min: number): number => {
    const v = Number(raw);
    if (!Number.isFinite(v) || v < min) usageError(`--${name} must be a number ≥ ${min}`);
    return v;
  };
  const list = (name: string, raw: string): number[] => {
    const l = raw.split(',').map((s) => Number(s.trim()));
    if (l.some((n) => !Number.isInteger(n) || n < 1)) usageError(`--${name} must be a comma list of positive integers`);
    return l;
  };
  return {
    step: num('step', values.step ?? (quick ? '6' : '15'), 2),
    warmup: num('warmup', values.warmup ?? (quick ? '3' : '5'), 1),
    fanout: list('fanout', values.fanout ?? (quick ? '5,20,40' : '5,10,20,40,80')),
    mesh: values.mesh === '' ? [] : list('mesh', values.mesh ?? (quick ? '2,4' : '2,4,8,16')),
    search: values.search ?? !quick,
    maxSubscribers: num('max-subscribers', values['max-subscribers'], 1),
    videoBitrate: num('video-bitrate', values['video-bitrate'], 10),
    mediaWorkers: num('media-workers', values['media-workers'], 0),
    quietWait: num('quiet-wait', values['quiet-wait'], 0),
    retries: num('retries', values.retries, 0),
    serviceEnv: Object.fromEntries(
      values['service-env'].map((kv) => {
        const eq = kv.indexOf('=');
        if (eq < 1) usageError(`--service-env ${kv}: expected KEY=VALUE`);
        return [kv.slice(0, eq), kv.slice(eq + 1)];
      }),
    ),
    verbose: values.verbose,
    json: values.json,
  };
}

const say = (line = '') => process.stdout.write(`${line}\n`);

// ---- the service ------------------------------------------------------------------------

interface Counters {
  forwarded: number;
  received: number;
  dropped: number;
  /** Video not forwarded by the overload guard (src/sfu/overload-guard.ts); null where the service has none. */
  shed: number | null;
}

/** Sums a counter over its label sets (per-worker series, if the service ever splits them); null when absent. */
function counter(text: string, name: string): number | null {
  let sum: number | null = null;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'gm'))) sum = (sum ?? 0) + Number(m[1]);
  return sum;
}

function requiredCounter(text: string, name: string): number {
  const v = counter(text, name);
  if (v === null) throw new Error(`GET /metrics has no ${name}`);
  return v;
}

class Server {
  readonly child: ChildProcess;
  readonly pid: number;
  private readonly tail: string[] = [];
  private readonly exit: Promise<void>;

  private constructor(child: ChildProcess) {
    this.child = child;
    this.pid = child.pid!;
    child.stderr!.setEncoding('utf8').on('data', (d: string) => this.keep(d));
    child.stdout!.setEncoding('utf8').on('data', (d: string) => this.keep(d));
    this.exit = new Promise((resolve) => child.once('close', () => resolve()));
  }

  private keep(chunk: string): void {
    this.tail.push(...chunk.split('\n').filter((l) => l !== ''));
    this.tail.splice(0, Math.max(0, this.tail.length - 20));
  }

  get log(): string {
    return this.tail.join('\n');
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** `taskset -c 0 node src/main.ts`; resolves once /healthz answers. */
  static async start(env: NodeJS.ProcessEnv): Promise<Server> {
    // taskset execs node, so the child's pid is the service's main pid, and whatever the
    // service forks inherits the core.
    const child = spawn('taskset', ['-c', String(SERVER_CORE), process.execPath, 'src/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const server = new Server(child);
    const deadline = performance.now() + 30_000;
    while (performance.now() < deadline) {
      if (!server.running) throw new Error(`the service exited at start:\n${server.log}`);
      try {
        if ((await fetch(`http://127.0.0.1:${PORT}/healthz`)).ok) return server;
      } catch {
        // not listening yet
      }
      await sleep(100);
    }
    await server.stop();
    throw new Error(`the service did not answer /healthz within 30 s:\n${server.log}`);
  }

  async counters(): Promise<Counters> {
    const text = await (await fetch(`http://127.0.0.1:${PORT}/metrics`)).text();
    return {
      forwarded: requiredCounter(text, 'scv_rtp_packets_forwarded_total'),
      received: requiredCounter(text, 'scv_rtp_packets_received_total'),
      dropped: requiredCounter(text, 'scv_rtp_packets_dropped_total'),
      shed: counter(text, 'scv_rtp_packets_shed_total'),
    };
  }

  async stop(): Promise<void> {
    if (this.running) this.child.kill('SIGTERM');
    const killed = await Promise.race([this.exit.then(() => false), sleep(10_000).then(() => true)]);
    if (killed) {
      this.child.kill('SIGKILL');
      await this.exit;
    }
  }
}

// ---- the load tool ------------------------------------------------------------------------

interface ToolRun {
  summary: Summary | undefined;
  code: number | null;
  /** The tool's start of run on this process's performance.now() clock. */
  origin: number;
  /** Its last output lines, for errors. */
  tail: string;
}

/**
 * Runs `taskset -c 1 node src/loadtest/cli.ts --url … args`; `onStart` gets its pid.
 * The tool prints `[ 12.3s] …` every second, its elapsed time since the start of its run;
 * the earliest arrival minus that elapsed time places its start on our clock (pipe delays
 * only make the estimate later, so the minimum is the best one).
 */
async function runTool(
  args: string[],
  auth: { key: string; secret: string },
  io: { verbose: boolean; onStart(child: ChildProcess): void; onLine?(line: string, elapsedS: number): void },
): Promise<ToolRun> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'scv-bench-'));
  const json = path.join(dir, 'summary.json');
  const argv = [
    '-c',
    String(TOOL_CORE),
    process.execPath,
    'src/loadtest/cli.ts',
    '--url',
    `ws://127.0.0.1:${PORT}/video/ws`,
    '--api-key',
    auth.key,
    '--api-secret',
    auth.secret,
    '--join-rate',
    String(JOIN_RATE),
    '--join-timeout',
    String(JOIN_TIMEOUT_S),
    '--json',
    json,
    ...args,
  ];
  const child = spawn('taskset', argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  io.onStart(child);
  let origin = Number.POSITIVE_INFINITY;
  const lines: string[] = [];
  let partial = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    const now = performance.now();
    const parts = (partial + d).split('\n');
    partial = parts.pop()!;
    for (const line of parts) {
      const m = /^\[\s*([0-9.]+)s\]/.exec(line);
      if (m !== null) {
        origin = Math.min(origin, now - Number(m[1]) * 1000);
        io.onLine?.(line, Number(m[1]));
      }
      lines.push(line);
      if (io.verbose) say(`    | ${line}`);
    }
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    lines.push(...d.split('\n').filter((l) => l !== ''));
    if (io.verbose) process.stderr.write(d);
  });
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  let summary: Summary | undefined;
  try {
    summary = JSON.parse(await readFile(json, 'utf8')) as Summary;
  } catch {
    // no summary: the tail says why
  }
  await rm(dir, { recursive: true, force: true });
  return { summary, code, origin, tail: lines.slice(-25).join('\n') };
}

// ---- one step -------------------------------------------------------------------------------

interface Sample {
  t: number;
  server: TreeUsage;
  tool: TreeUsage;
  /** This process's CPU seconds. */
  selfS: number;
  busy: { all: number; cores: number[] };
  /** The service's counters, when they were read with this sample. */
  counters?: Counters;
}

function sample(serverPid: number, toolPid: number): Sample {
  const [server, tool] = treeUsage([serverPid, toolPid]);
  const self = process.cpuUsage();
  return { t: performance.now(), server: server!, tool: tool!, selfS: (self.user + self.system) / 1e6, busy: cpuBusy() };
}

/** The two ends of the service's measured interval. */
interface Interval {
  a: Sample & { counters: Counters };
  b: Sample & { counters: Counters };
}

const hasCounters = (x: Sample): x is Sample & { counters: Counters } => x.counters !== undefined;

const PROGRESS = /participants (\d+)\/(\d+)(?: \((\d+) failed\))?\s+tracks (\d+)\/(\d+)/;

/** The service over the measured interval. */
interface ServerFigures {
  /** Seconds between the two reads. */
  measuredS: number;
  forwardedPerS: number;
  receivedPerS: number;
  droppedPerS: number;
  /** Video packets the overload guard did not forward, per second (null: the service has no guard). */
  shedPerS: number | null;
  /** The whole process tree; 100 = one core. */
  cpuPct: number;
  /** The main process's part of cpuPct (with media workers: signaling, the edge, metrics). */
  mainCpuPct: number;
  processes: number;
  /** Everything core 0 did (the service, kernel work on its behalf, anything else scheduled there). */
  core0BusyPct: number;
  usPerForwarded: number | null;
  forwardedPerCoreS: number | null;
  /** Mean resident memory of the tree over the interval. */
  rssMiB: number;
  /** Before the warm-up run, once the service answered. */
  idleRssMiB: number;
  rssPerParticipantMiB: number;
  /** CPU used by processes other than the service, the tool and this script; 100 = one core. */
  otherCpuPct: number;
}

interface StepResult {
  kind: 'fan-out' | 'mesh' | 'half load';
  publishers: number;
  subscribers: number;
  participants: number;
  /** Null when the interval could not be measured (the notes say why). */
  server: ServerFigures | null;
  /** From the load tool, over its measured window (`--step` + 4 s, around the service's interval). */
  lossPct: number;
  deliveredPct: number | null;
  latencyP50Ms: number | null;
  latencyP99Ms: number | null;
  sendRatio: number;
  toolCpuPct: number;
  toolLoopP99Ms: number | null;
  toolRssMiB: number;
  loadAverage: number;
  toolOk: boolean;
  /** Why the load tool, not the service, may be what limits this step (empty: it is not). */
  toolBound: string[];
  serverBound: boolean;
  /** Loss under the limit, every participant joined and received, the load fully sent. */
  pass: boolean;
  notes: string[];
}

interface StepSpec {
  kind: StepResult['kind'];
  publishers: number;
  subscribers: number;
}

class Bench {
  private readonly opts: BenchOptions;
  private readonly serverEnv: NodeJS.ProcessEnv;
  private readonly auth: { key: string; secret: string };
  /** Running children, killed on Ctrl-C. */
  readonly children = new Set<ChildProcess>();

  constructor(opts: BenchOptions, passMediaWorkers: boolean) {
    this.opts = opts;
    this.auth = { key: 'bench', secret: randomBytes(33).toString('base64') };
    // Nothing from our own environment's SCV_* reaches the service: the figures depend on
    // exactly this configuration.
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SCV_') && k !== NETNS_MARKER) env[k] = v;
    Object.assign(env, {
      SCV_HTTP_PORT: String(PORT),
      SCV_LOG_LEVEL: 'warn',
      SCV_API_KEY: this.auth.key,
      SCV_API_SECRET: this.auth.secret,
      SCV_MAX_PARTICIPANTS: String(Math.max(opts.maxSubscribers, ...opts.fanout, ...opts.mesh) + 10),
      SCV_RTC_INTERFACES: '127.0.0.1',
    });
    if (passMediaWorkers) env.SCV_MEDIA_WORKERS = String(opts.mediaWorkers);
    Object.assign(env, opts.serviceEnv);
    this.serverEnv = env;
  }

  private track(child: ChildProcess): void {
    this.children.add(child);
    child.once('close', () => this.children.delete(child));
  }

  /** Waits (up to --quiet-wait) until other processes use under OTHER_CPU_LIMIT_PCT of a core. */
  private async waitForQuiet(): Promise<void> {
    const deadline = performance.now() + this.opts.quietWait * 1000;
    for (let said = false; ; said = true) {
      const a = cpuBusy().all - treeUsage([process.pid])[0]!.cpuS;
      await sleep(QUIET_PROBE_S * 1000);
      const other = ((cpuBusy().all - treeUsage([process.pid])[0]!.cpuS - a) / QUIET_PROBE_S) * 100;
      if (other < OTHER_CPU_LIMIT_PCT) return;
      if (performance.now() >= deadline) {
        say(`  other processes still use ${other.toFixed(0)} % of a core; measuring anyway (see the "other CPU" column)`);
        return;
      }
      if (!said) say(`  other processes use ${other.toFixed(0)} % of a core (load average ${loadAverage()[0].toFixed(2)}); waiting for quiet…`);
      await sleep(3000);
    }
  }

  /** A step, measured again (up to --retries times) when other processes disturbed it. */
  async step(spec: StepSpec): Promise<StepResult> {
    for (let attempt = 0; ; attempt++) {
      const r = await this.measure(spec);
      const other = r.server?.otherCpuPct ?? 0;
      if (other <= OTHER_CPU_LIMIT_PCT || attempt >= this.opts.retries) return r;
      say(`  ${describe(r)}: other processes used ${other.toFixed(0)} % of a core meanwhile; measuring again`);
    }
  }

  private async measure(spec: StepSpec): Promise<StepResult> {
    await this.waitForQuiet();
    const server = await Server.start(this.serverEnv);
    this.track(server.child);
    try {
      // The service answers before a media worker has finished starting.
      await sleep(3000);
      const idleRssMiB = treeUsage([server.pid])[0]!.rssKiB / 1024;
      const warm = await runTool(
        ['--publishers', '1', '--subscribers', String(WARMUP_SUBSCRIBERS), '--duration', String(this.opts.warmup), '--video-bitrate', String(this.opts.videoBitrate), '--room-prefix', 'warmup'],
        this.auth,
        { verbose: false, onStart: (child) => this.track(child) },
      );
      if (warm.summary === undefined || !server.running) throw new Error(`the warm-up run failed (exit ${warm.code}):\n${warm.tail}\n${server.log}`);
      await sleep(1000);

      const samples: Sample[] = [];
      let toolPid = 0;
      let running = true;
      // Set while no interval is under way but the joins should be over: then the service
      // is read every second, and the figures come from the reads inside the tool's window.
      let readEverySample = false;
      const sampler = (async () => {
        while (running) {
          if (toolPid !== 0) {
            const x: Sample = sample(server.pid, toolPid);
            if (readEverySample) x.counters = await server.counters().catch(() => undefined);
            samples.push(x);
          }
          await sleep(SAMPLE_INTERVAL_MS);
        }
      })();
      // Starts once the tool shows every participant joined and every track flowing.
      const participants = spec.publishers + spec.subscribers;
      const joinsOverS = participants / JOIN_RATE + FLOWING_WITHIN_S;
      let interval: Promise<Interval | Error> | undefined;
      const measure = async (): Promise<Interval | Error> => {
        try {
          await sleep(GUARD_S * 1000);
          const a = { ...sample(server.pid, toolPid), counters: await server.counters() };
          await sleep(Math.max(0, this.opts.step * 1000 - (performance.now() - a.t)));
          const b = { ...sample(server.pid, toolPid), counters: await server.counters() };
          return { a, b };
        } catch (err) {
          return err as Error;
        }
      };
      const onLine = (line: string, elapsedS: number) => {
        if (interval !== undefined) return;
        const m = PROGRESS.exec(line);
        if (m !== null && m[1] === m[2] && m[3] === undefined && m[4] === m[5]) {
          readEverySample = false;
          interval = measure();
        } else if (elapsedS >= joinsOverS) {
          readEverySample = true;
        }
      };
      const args = [
        '--publishers',
        String(spec.publishers),
        '--subscribers',
        String(spec.subscribers),
        '--duration',
        String(this.opts.step + 2 * GUARD_S),
        '--video-bitrate',
        String(this.opts.videoBitrate),
        '--room-prefix',
        'bench',
      ];
      const run = await runTool(args, this.auth, {
        verbose: this.opts.verbose,
        onStart: (child) => {
          toolPid = child.pid!;
          this.track(child);
        },
        onLine,
      });
      running = false;
      await sampler;
      const measured = (await interval) ?? new Error('not every track was flowing at any time');
      if (!server.running) throw new Error(`the service exited during the step:\n${server.log}`);
      return this.evaluate(spec, run, measured, samples, idleRssMiB);
    } finally {
      await server.stop();
    }
  }

  private evaluate(spec: StepSpec, run: ToolRun, measured: Interval | Error, samples: Sample[], idleRssMiB: number): StepResult {
    const s = run.summary;
    if (s === undefined || !Number.isFinite(run.origin)) throw new Error(`the load tool gave no summary (exit ${run.code}):\n${run.tail}`);
    const participants = spec.publishers + spec.subscribers;
    const notes: string[] = [];
    const toolOk = s.ok && s.participants.joinFailures === 0;
    if (!toolOk) {
      notes.push(`${s.participants.joined}/${s.participants.expected} joined, ${s.tracks.subscribed}/${s.tracks.expected} tracks`);
      for (const [why, n] of Object.entries(s.joinFailureReasons)) notes.push(`${n}× ${why}`);
    }
    const windowStart = run.origin + s.setupS * 1000;
    const windowEnd = windowStart + s.windowS * 1000;
    let interval: Interval | undefined;
    if (!(measured instanceof Error) && measured.a.t >= windowStart && measured.b.t <= windowEnd) {
      interval = measured;
    } else {
      const why = measured instanceof Error ? measured.message : "the interval fell outside the tool's window";
      const reads = samples.filter(hasCounters).filter((x) => x.t >= windowStart + READ_MARGIN_MS && x.t <= windowEnd - READ_MARGIN_MS);
      if (reads.length >= 2) {
        interval = { a: reads[0]!, b: reads.at(-1)! };
        notes.push(`${why}: the service was read every second`);
      } else {
        notes.push(`no service figures: ${why}`);
      }
    }

    const expectedMbps = (spec.publishers * (this.opts.videoBitrate + AUDIO_KBPS)) / 1000;
    const sendRatio = expectedMbps > 0 ? s.send.bitrateMbps / expectedMbps : 1;
    const toolBound: string[] = [];
    // The tool's own CPU over its whole window (it is the same process all along).
    const toolCpuPct = s.tool.cpuPercent;
    if (toolCpuPct >= TOOL_CPU_LIMIT_PCT) toolBound.push(`tool CPU ${toolCpuPct.toFixed(0)} %`);
    if (s.tool.eventLoopDelayMs.p99 !== null && s.tool.eventLoopDelayMs.p99 > TOOL_LOOP_LIMIT_MS) {
      toolBound.push(`tool timers ${s.tool.eventLoopDelayMs.p99.toFixed(0)} ms late (p99)`);
    }
    if (sendRatio < SEND_RATIO_LIMIT) toolBound.push(`publishers sent ${(sendRatio * 100).toFixed(0)} % of the bitrate`);

    let server: ServerFigures | null = null;
    if (interval !== undefined) {
      const { a, b } = interval;
      const dt = (b.t - a.t) / 1000;
      const pct = (cpuS: number) => (cpuS / dt) * 100;
      const serverCpuS = b.server.cpuS - a.server.cpuS;
      const forwarded = b.counters.forwarded - a.counters.forwarded;
      const within = [a, ...samples.filter((x) => x.t > a.t && x.t < b.t), b];
      const rssMiB = within.reduce((sum, x) => sum + x.server.rssKiB, 0) / within.length / 1024;
      const otherCpuPct = pct(b.busy.all - a.busy.all - serverCpuS - (b.tool.cpuS - a.tool.cpuS) - (b.selfS - a.selfS));
      if (otherCpuPct > OTHER_CPU_LIMIT_PCT) notes.push(`other processes used ${otherCpuPct.toFixed(0)} % of a core`);
      server = {
        measuredS: round(dt, 2),
        forwardedPerS: Math.round(forwarded / dt),
        receivedPerS: Math.round((b.counters.received - a.counters.received) / dt),
        droppedPerS: Math.round((b.counters.dropped - a.counters.dropped) / dt),
        shedPerS: a.counters.shed === null || b.counters.shed === null ? null : Math.round((b.counters.shed - a.counters.shed) / dt),
        cpuPct: round(pct(serverCpuS), 1),
        mainCpuPct: round(pct(b.server.rootCpuS - a.server.rootCpuS), 1),
        processes: b.server.processes,
        core0BusyPct: round(pct((b.busy.cores[SERVER_CORE] ?? 0) - (a.busy.cores[SERVER_CORE] ?? 0)), 1),
        usPerForwarded: forwarded > 0 ? round((serverCpuS * 1e6) / forwarded, 2) : null,
        forwardedPerCoreS: serverCpuS > 0 ? Math.round(forwarded / serverCpuS) : null,
        rssMiB: round(rssMiB, 1),
        idleRssMiB: round(idleRssMiB, 1),
        rssPerParticipantMiB: round((rssMiB - idleRssMiB) / participants, 3),
        otherCpuPct: round(otherCpuPct, 1),
      };
    }
    return {
      kind: spec.kind,
      publishers: spec.publishers,
      subscribers: spec.subscribers,
      participants,
      server,
      lossPct: s.loss.percent,
      deliveredPct: s.receive.deliveredPercent,
      latencyP50Ms: s.latencyMs.p50,
      latencyP99Ms: s.latencyMs.p99,
      sendRatio: round(sendRatio, 3),
      toolCpuPct,
      toolLoopP99Ms: s.tool.eventLoopDelayMs.p99,
      toolRssMiB: s.tool.rssMiB,
      loadAverage: loadAverage()[0],
      toolOk,
      toolBound,
      serverBound: server !== null && (server.cpuPct >= SERVER_CPU_LIMIT_PCT || (server.shedPerS ?? 0) > 0),
      pass: toolOk && s.loss.percent < LOSS_LIMIT_PCT && sendRatio >= SEND_RATIO_LIMIT,
      notes,
    };
  }
}

const round = (v: number, digits: number) => Math.round(v * 10 ** digits) / 10 ** digits;

// ---- output ---------------------------------------------------------------------------------

function markdownTable(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  return [line(head), `|${widths.map((w, i) => (i === 0 ? `${'-'.repeat(w + 1)}-` : `${'-'.repeat(w + 1)}:`)).join('|')}|`, ...rows.map(line)].join('\n');
}

const fmt = (v: number | null | undefined, digits = 0) => (v === null || v === undefined ? '-' : v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }));

function describe(r: StepResult): string {
  return r.kind === 'mesh' ? `mesh ${r.publishers}` : `1 → ${r.subscribers}`;
}

function stepLine(r: StepResult): string {
  const who = describe(r);
  const flags = limitList(r);
  return (
    `  ${who.padEnd(10)} ${fmt(r.server?.forwardedPerS).padStart(7)} fwd/s  SFU ${fmt(r.server?.cpuPct, 1).padStart(5)} %  ${fmt(r.server?.usPerForwarded, 1).padStart(5)} µs/pkt  ` +
    `loss ${r.lossPct.toFixed(3)} %  p50/p99 ${fmt(r.latencyP50Ms, 1)}/${fmt(r.latencyP99Ms, 1)} ms  tool ${fmt(r.toolCpuPct)} %  ` +
    `${r.pass ? 'pass' : 'FAIL'}${flags.length > 0 ? `  (${flags.join('; ')})` : ''}`
  );
}

/** What may limit a step: the service, the tool, and anything else worth knowing. */
function limitList(r: StepResult): string[] {
  const l = [...r.toolBound, ...r.notes];
  if ((r.server?.shedPerS ?? 0) > 0) l.unshift(`SFU overloaded: shed ${fmt(r.server!.shedPerS)} video pkt/s`);
  else if (r.serverBound) l.unshift('SFU core saturated');
  return l;
}

const limits = (r: StepResult) => limitList(r).join('; ') || '-';

/**
 * One row per step: the fan-out table (1 → N, with packets/s per core) and the mesh table
 * (N publishers) share every other column.
 */
function stepTable(kind: 'fanout' | 'mesh', rows: StepResult[]): string {
  const fanout = kind === 'fanout';
  return markdownTable(
    [
      fanout ? 'subscribers' : 'publishers',
      'fwd pkt/s',
      fanout ? 'SFU CPU %' : 'SFU CPU % (room)',
      'µs/pkt',
      ...(fanout ? ['pkt/s per core'] : []),
      'loss %',
      'p50 / p99 ms',
      'RSS MiB',
      'MiB/participant',
      'tool CPU %',
      'other CPU %',
      'limits',
    ],
    rows.map((r) => [
      String(fanout ? r.subscribers : r.publishers),
      fmt(r.server?.forwardedPerS),
      fmt(r.server?.cpuPct, 1),
      fmt(r.server?.usPerForwarded, 1),
      ...(fanout ? [fmt(r.server?.forwardedPerCoreS)] : []),
      r.lossPct.toFixed(3),
      `${fmt(r.latencyP50Ms, 1)} / ${fmt(r.latencyP99Ms, 1)}`,
      fmt(r.server?.rssMiB),
      fmt(r.server?.rssPerParticipantMiB, 2),
      fmt(r.toolCpuPct),
      fmt(r.server?.otherCpuPct),
      limits(r),
    ]),
  );
}

// ---- the run --------------------------------------------------------------------------------

/** Least-squares slope of the service's RSS over participants; undefined with fewer than three steps. */
function rssSlope(steps: StepResult[]): { mibPerParticipant: number; steps: number } | undefined {
  if (steps.length < 3) return undefined;
  const xs = steps.map((r) => r.participants);
  const ys = steps.map((r) => r.server!.rssMiB);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < xs.length; i++) {
    sxy += (xs[i]! - mx) * (ys[i]! - my);
    sxx += (xs[i]! - mx) ** 2;
  }
  return sxx > 0 ? { mibPerParticipant: round(sxy / sxx, 3), steps: steps.length } : undefined;
}

async function configKnowsMediaWorkers(): Promise<boolean> {
  const { ConfigError, loadConfig } = await import('../src/config.ts');
  try {
    loadConfig({ SCV_MEDIA_WORKERS: '1' });
    return true;
  } catch (err) {
    if (err instanceof ConfigError && err.message.includes('unknown setting')) return false;
    throw err;
  }
}

async function main(opts: BenchOptions): Promise<void> {
  bringUpLoopback();
  // This script samples and parses; on core 1 it takes its share from the load tool, not
  // from the service being measured.
  pin(process.pid, TOOL_CORE);
  const passMediaWorkers = await configKnowsMediaWorkers();
  const bench = new Bench(opts, passMediaWorkers);
  const killAll = () => {
    for (const c of bench.children) c.kill('SIGKILL');
    process.exit(130);
  };
  process.on('SIGINT', killAll);
  process.on('SIGTERM', killAll);

  const started = new Date();
  const loadStart = loadAverage();
  const machine = {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    // Not availableParallelism(): this process is pinned to one core by now.
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
  };
  say(`SFU forwarding benchmark, ${started.toISOString()}`);
  say(`machine: ${machine.cores} × ${machine.cpu}, ${machine.memoryGiB} GiB, Linux ${machine.kernel}, Node ${machine.node}`);
  say(`load average at start: ${loadStart.map((v) => v.toFixed(2)).join(' ')}`);
  say(
    `service on core ${SERVER_CORE} (${passMediaWorkers ? `SCV_MEDIA_WORKERS=${opts.mediaWorkers}` : 'SCV_MEDIA_WORKERS not known to this version: media in the main process'}` +
      `${Object.entries(opts.serviceEnv)
        .map(([k, v]) => `, ${k}=${v}`)
        .join('')}), ` +
      `load tool and this script on core ${TOOL_CORE}; VP8 ${opts.videoBitrate} kbps @ 30 fps + Opus per publisher; ${opts.step} s per step after a ${opts.warmup} s warm-up run`,
  );

  const fanout: StepResult[] = [];
  const runFanout = async (n: number, kind: StepResult['kind'] = 'fan-out') => {
    const r = await bench.step({ kind, publishers: 1, subscribers: n });
    say(stepLine(r));
    if (kind === 'fan-out') fanout.push(r);
    return r;
  };

  say('\nfan-out: 1 publisher → N subscribers');
  for (const n of opts.fanout) await runFanout(n);

  // The largest fan-out with loss under the limit: go on past the list while it holds and
  // the tool keeps up, then narrow the gap between the last pass and the first failure.
  if (opts.search) {
    let last = fanout.at(-1);
    while (last !== undefined && last.pass && last.toolBound.length === 0 && last.subscribers + SEARCH_STEP <= opts.maxSubscribers) {
      last = await runFanout(last.subscribers + SEARCH_STEP);
    }
    for (let i = 0; i < 2; i++) {
      const passed = fanout.filter((r) => r.pass);
      const lo = passed.reduce((m, r) => Math.max(m, r.subscribers), 0);
      const hi = fanout.filter((r) => !r.pass && r.subscribers > lo).reduce((m, r) => Math.min(m, r.subscribers), Number.POSITIVE_INFINITY);
      if (!Number.isFinite(hi) || hi - lo <= Math.max(5, lo * 0.15)) break;
      if (fanout.some((r) => r.subscribers === lo && r.toolBound.length > 0)) break;
      await runFanout(Math.round((lo + hi) / 2));
    }
  }
  const byN = [...fanout].sort((a, b) => a.subscribers - b.subscribers);
  const best = byN.filter((r) => r.pass).at(-1);
  const firstFail = byN.find((r) => !r.pass && (best === undefined || r.subscribers > best.subscribers));
  // What ended the search: the first failure above the best size, or why none was tried.
  let limitedBy = 'the end of the list';
  if (firstFail !== undefined) {
    limitedBy =
      firstFail.toolBound.length > 0
        ? `the load tool at 1 → ${firstFail.subscribers}: ${firstFail.toolBound.join(', ')}`
        : `loss ${firstFail.lossPct.toFixed(2)} % at 1 → ${firstFail.subscribers}${firstFail.notes.length > 0 ? ` (${firstFail.notes.join(', ')})` : ''}`;
  } else if (best !== undefined && best.toolBound.length > 0) {
    limitedBy = `the load tool at 1 → ${best.subscribers}: ${best.toolBound.join(', ')}`;
  } else if (opts.search && best !== undefined && best.subscribers + SEARCH_STEP > opts.maxSubscribers) {
    limitedBy = `--max-subscribers ${opts.maxSubscribers}`;
  }

  let half: StepResult | undefined;
  if (best !== undefined) {
    const n = Math.max(1, Math.round(best.subscribers / 2));
    half = byN.find((r) => r.subscribers === n);
    if (half === undefined) {
      say('\nhalf load');
      half = await runFanout(n, 'half load');
    }
  }

  // The average over idle includes what the warm-up and the first participants cost once
  // (compiled code, heap growth); the slope of RSS over the fan-out sizes does not. Each
  // step is a fresh service caught at some point of its GC cycle, so two neighbouring
  // steps say little; a least-squares line over all of them does better.
  const marginal = rssSlope([...byN, ...(half === undefined || byN.includes(half) ? [] : [half])].filter((r) => r.server !== null));

  const mesh: StepResult[] = [];
  if (opts.mesh.length > 0) say('\nmesh: N publishers, each subscribed to all others');
  for (const p of opts.mesh) {
    const r = await bench.step({ kind: 'mesh', publishers: p, subscribers: 0 });
    say(stepLine(r));
    mesh.push(r);
  }

  const loadEnd = loadAverage();
  const minutes = (Date.now() - started.getTime()) / 60_000;
  say(`\n## Fan-out: 1 publisher (VP8 ${opts.videoBitrate} kbps + Opus) → N subscribers\n`);
  say(stepTable('fanout', byN));
  if (mesh.length > 0) {
    say('\n## Mesh: N publishers, each subscribed to all the others\n');
    say(stepTable('mesh', mesh));
  }
  say('\n## Summary\n');
  const summaryRows: string[][] = [];
  if (best !== undefined) {
    summaryRows.push(['largest fan-out with loss < 0.5 %', `1 → ${best.subscribers}; the search ended at ${limitedBy}`]);
    summaryRows.push(['SFU CPU per forwarded packet there', `${fmt(best.server?.usPerForwarded, 1)} µs (${fmt(best.server?.forwardedPerS)} pkt/s at ${fmt(best.server?.cpuPct, 1)} % of core ${SERVER_CORE})`]);
    summaryRows.push(['forwarded packets/s per core there', fmt(best.server?.forwardedPerCoreS)]);
    summaryRows.push(['resident memory per participant there', `${fmt(best.server?.rssPerParticipantMiB, 2)} MiB (${fmt(best.server?.rssMiB)} MiB with ${best.participants}, ${fmt(best.server?.idleRssMiB)} MiB idle)`]);
    if (marginal !== undefined) {
      summaryRows.push(['… marginal', `${fmt(marginal.mibPerParticipant, 2)} MiB per participant (slope over ${marginal.steps} fan-out steps)`]);
    }
  } else {
    summaryRows.push(['largest fan-out with loss < 0.5 %', `none of the sizes run; the search ended at ${limitedBy}`]);
  }
  if (half !== undefined) {
    summaryRows.push([`latency p50 / p99 at half load (1 → ${half.subscribers})`, `${fmt(half.latencyP50Ms, 1)} / ${fmt(half.latencyP99Ms, 1)} ms, publisher send → subscriber receive`]);
  }
  summaryRows.push(['load average start → end', `${loadStart[0].toFixed(2)} → ${loadEnd[0].toFixed(2)}`]);
  summaryRows.push(['duration', `${minutes.toFixed(1)} min`]);
  say(markdownTable(['', ''], summaryRows));

  if (opts.json !== undefined) {
    const result = {
      startedAt: started.toISOString(),
      machine,
      loadAverage: { start: loadStart, end: loadEnd },
      options: { ...opts, mediaWorkersPassed: passMediaWorkers },
      fanout: byN,
      largestFanout: best === undefined ? null : { subscribers: best.subscribers, limitedBy },
      marginalRssPerParticipant: marginal ?? null,
      halfLoad: half === undefined ? null : { subscribers: half.subscribers, latencyP50Ms: half.latencyP50Ms, latencyP99Ms: half.latencyP99Ms },
      mesh,
    };
    await writeFile(opts.json, `${JSON.stringify(result, null, 2)}\n`);
    say(`\nwrote ${opts.json}`);
  }
}

const opts = parseOptions();
if (opts === undefined) {
  say(USAGE);
} else if (process.env[NETNS_MARKER] === '1') {
  try {
    await main(opts);
  } catch (err) {
    process.stderr.write(`bench: ${err instanceof NetnsError ? err.message : ((err as Error).stack ?? String(err))}\n`);
    process.exit(1);
  }
} else {
  try {
    process.exitCode = await reexecInNetns({ marker: NETNS_MARKER });
  } catch (err) {
    if (!(err instanceof NetnsError)) throw err;
    process.stderr.write(`bench: ${err.message}\n`);
    process.exit(2);
  }
}
